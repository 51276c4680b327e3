//! Client-key authentication.
//!
//! Keys are bucketed by the first 8 bytes of their SHA-256 digest, and the
//! presented key's full digest is compared with each candidate in constant
//! time. The lookup only ever sees digests, so its timing tells an attacker
//! nothing about how much of a real key they guessed.

use std::collections::HashMap;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use time::OffsetDateTime;

use crate::config::ClientKeyConfig;
use crate::error::AuthError;

type KeyDigest = [u8; 32];

#[derive(Debug, Default)]
pub struct KeyStore {
    /// Digest prefix → the keys whose digest starts with it (almost always one).
    by_prefix: HashMap<u64, Vec<(KeyDigest, Arc<ClientKeyConfig>)>>,
}

fn digest(key: &[u8]) -> KeyDigest {
    Sha256::digest(key).into()
}

fn prefix(digest: &KeyDigest) -> u64 {
    let mut bytes = [0; 8];
    bytes.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(bytes)
}

impl KeyStore {
    pub fn new(keys: &[ClientKeyConfig]) -> Self {
        let mut by_prefix: HashMap<u64, Vec<_>> = HashMap::new();
        for key in keys {
            let key_digest = digest(key.key.expose().as_bytes());
            by_prefix
                .entry(prefix(&key_digest))
                .or_default()
                .push((key_digest, Arc::new(key.clone())));
        }
        Self { by_prefix }
    }

    /// Every key, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &ClientKeyConfig> {
        self.by_prefix
            .values()
            .flatten()
            .map(|(_, key)| key.as_ref())
    }

    /// Authenticates an `Authorization` header value, as the seed does:
    /// `<scheme> <key>` where the scheme is `bearer` in any case and exactly one
    /// space separates them; otherwise the whole value is taken as the key.
    pub fn authenticate(
        &self,
        authorization: Option<&[u8]>,
        now: OffsetDateTime,
    ) -> Result<Arc<ClientKeyConfig>, AuthError> {
        let header = authorization.unwrap_or_default();
        if header.is_empty() {
            return Err(AuthError::Missing);
        }
        let presented = bearer_token(header);
        let presented_digest = digest(presented);
        let key = self
            .by_prefix
            .get(&prefix(&presented_digest))
            .into_iter()
            .flatten()
            .find(|(stored, _)| bool::from(stored.ct_eq(&presented_digest)))
            .map(|(_, key)| key)
            .ok_or(AuthError::Invalid)?;
        if !key.is_active {
            return Err(AuthError::Invalid);
        }
        if key.expires_at.is_some_and(|expires_at| expires_at < now) {
            return Err(AuthError::Expired);
        }
        Ok(Arc::clone(key))
    }
}

fn bearer_token(header: &[u8]) -> &[u8] {
    let mut parts = header.split(|byte| *byte == b' ');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(scheme), Some(token), None) if scheme.eq_ignore_ascii_case(b"bearer") => token,
        _ => header,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;
    use time::macros::datetime;

    fn key(
        index: usize,
        key: &str,
        is_active: bool,
        expires_at: Option<OffsetDateTime>,
    ) -> ClientKeyConfig {
        ClientKeyConfig {
            index,
            id: index as u64 + 1,
            is_active,
            expires_at,
            ..ClientKeyConfig::new(Secret::new(key))
        }
    }

    fn check(header: Option<&str>, expected: Result<u64, AuthError>) {
        let store = KeyStore::new(&[
            key(0, "sk-good", true, None),
            key(1, "sk-off", false, None),
            key(2, "sk-old", true, Some(datetime!(2020-01-01 0:00 UTC))),
            key(3, "sk-later", true, Some(datetime!(2099-01-01 0:00 UTC))),
        ]);
        let now = datetime!(2026-06-01 0:00 UTC);
        let got = store
            .authenticate(header.map(str::as_bytes), now)
            .map(|key| key.id);
        assert_eq!(got, expected, "{header:?}");
    }

    #[test]
    fn seed_rules() {
        check(None, Err(AuthError::Missing));
        check(Some(""), Err(AuthError::Missing));
        check(Some("Bearer sk-good"), Ok(1));
        check(Some("bEaReR sk-good"), Ok(1));
        check(Some("sk-good"), Ok(1));
        check(Some("Bearer  sk-good"), Err(AuthError::Invalid));
        check(Some("Basic sk-good"), Err(AuthError::Invalid));
        check(Some("Bearer sk-bad"), Err(AuthError::Invalid));
        check(Some("Bearer sk-off"), Err(AuthError::Invalid));
        check(Some("Bearer sk-old"), Err(AuthError::Expired));
        check(Some("Bearer sk-later"), Ok(4));
    }
}
