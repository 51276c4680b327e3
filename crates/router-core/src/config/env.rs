//! `${VAR}` references in string values, so secrets live in the environment
//! instead of the file.
//!
//! Every string scalar of the file is expanded once, at load: `${NAME}` is
//! replaced by the variable's value (`NAME` is letters, digits and `_`, not
//! starting with a digit), and `$${` stands for a literal `${`. A `$` not
//! followed by `{` is kept as is. Values are not expanded again, so a secret
//! that happens to contain `${` stays intact.

use std::borrow::Cow;

/// One thing wrong with the references in a string. Never carries a value:
/// the string may be a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum EnvError {
    #[error("environment variable `{0}` is not set")]
    Missing(String),
    #[error("`${{` without a closing `}}` (write `$${{` for a literal `${{`)")]
    Unterminated,
    #[error(
        "`${{...}}` must hold an environment variable name made of letters, digits and `_` \
         (write `$${{` for a literal `${{`)"
    )]
    BadName,
}

/// Expands the references in `text`, reporting every problem rather than
/// the first.
pub(super) fn expand<'t>(
    text: &'t str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Cow<'t, str>, Vec<EnvError>> {
    if !text.contains("${") {
        return Ok(Cow::Borrowed(text));
    }
    let mut out = String::with_capacity(text.len());
    let mut errors = Vec::new();
    let mut rest = text;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let from_dollar = &rest[dollar..];
        if let Some(after) = from_dollar.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
        } else if let Some(after) = from_dollar.strip_prefix("${") {
            let Some(close) = after.find('}') else {
                errors.push(EnvError::Unterminated);
                break;
            };
            let name = &after[..close];
            if is_variable_name(name) {
                match env(name) {
                    Some(value) => out.push_str(&value),
                    None => errors.push(EnvError::Missing(name.to_owned())),
                }
            } else {
                errors.push(EnvError::BadName);
            }
            rest = &after[close + 1..];
        } else {
            out.push('$');
            rest = &from_dollar[1..];
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    out.push_str(rest);
    Ok(Cow::Owned(out))
}

fn is_variable_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "KEY" => Some("sk-secret".to_owned()),
            "HOST" => Some("example.com".to_owned()),
            "EMPTY" => Some(String::new()),
            "TRICKY" => Some("a${KEY}b".to_owned()),
            _ => None,
        }
    }

    fn check(input: &str, expected: Result<&str, Vec<EnvError>>) {
        let actual = expand(input, &env);
        let actual = actual
            .as_ref()
            .map(|value| value.as_ref())
            .map_err(Clone::clone);
        assert_eq!(actual, expected, "input: {input:?}");
    }

    #[test]
    fn expands_references() {
        check("plain", Ok("plain"));
        check("${KEY}", Ok("sk-secret"));
        check("https://${HOST}/v1", Ok("https://example.com/v1"));
        check("${HOST}${HOST}", Ok("example.comexample.com"));
        check("x${EMPTY}y", Ok("xy"));
        check("${TRICKY}", Ok("a${KEY}b"));
    }

    #[test]
    fn dollars_and_escapes() {
        check("$", Ok("$"));
        check("cost: $5", Ok("cost: $5"));
        check("$$", Ok("$$"));
        check("$${KEY}", Ok("${KEY}"));
        // Read left to right: a `$`, then the escape.
        check("$$${KEY}", Ok("$${KEY}"));
        check("a$${b", Ok("a${b"));
        check("${KEY}$", Ok("sk-secret$"));
    }

    #[test]
    fn reports_every_problem() {
        check("${NOPE}", Err(vec![EnvError::Missing("NOPE".to_owned())]));
        check(
            "${A}:${KEY}:${B}",
            Err(vec![
                EnvError::Missing("A".to_owned()),
                EnvError::Missing("B".to_owned()),
            ]),
        );
        check("${KEY", Err(vec![EnvError::Unterminated]));
        check("${}", Err(vec![EnvError::BadName]));
        check("${1X}", Err(vec![EnvError::BadName]));
        check("${A-B}", Err(vec![EnvError::BadName]));
        check("${X:-default}", Err(vec![EnvError::BadName]));
        check(
            "${NOPE}${",
            Err(vec![
                EnvError::Missing("NOPE".to_owned()),
                EnvError::Unterminated,
            ]),
        );
    }

    #[test]
    fn messages_never_hold_a_value() {
        let messages: Vec<String> = [
            EnvError::Missing("NOPE".to_owned()),
            EnvError::Unterminated,
            EnvError::BadName,
        ]
        .iter()
        .map(ToString::to_string)
        .collect();
        assert_eq!(
            messages,
            [
                "environment variable `NOPE` is not set",
                "`${` without a closing `}` (write `$${` for a literal `${`)",
                "`${...}` must hold an environment variable name made of letters, digits and `_` \
                 (write `$${` for a literal `${`)",
            ]
        );
    }
}
