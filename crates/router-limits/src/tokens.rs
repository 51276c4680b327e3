//! Token counts with OpenAI's own tokenizers, where they apply.
//!
//! [`TiktokenCounter`] counts with `o200k_base` or `cl100k_base` when the
//! entry's `provider_model_name` names an OpenAI family that uses it, and
//! falls back to router-core's [`ByteCounter`] (one token per four bytes,
//! rounded up) for everything else: Gemini, Claude, Llama and friends have
//! tokenizers of their own that are not public or not embeddable, and a
//! wrong vocabulary is no better than the byte rule.
//!
//! The vocabularies are compiled into the binary by tiktoken-rs (no
//! download, ever), but building one costs memory (tens of MB) and 50 to
//! 120 ms. Each is built once, the first time a model of its family is
//! counted, and only then; [`TiktokenCounter::warm_up`] builds the ones a
//! config needs before the first request pays for it.

use std::fmt;
use std::sync::OnceLock;

use router_core::config::ModelEntry;
use router_core::estimate::{ByteCounter, TokenCounter};
use tiktoken_rs::CoreBPE;

/// The tokenizers this counter knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// GPT-4o, GPT-4.1, GPT-4.5, GPT-5 and the o-series.
    O200kBase,
    /// GPT-4, GPT-3.5 and the `text-embedding-*` models.
    Cl100kBase,
}

/// Name prefixes of each family, first match wins: the longer `gpt-4o` and
/// `gpt-4.1` must be tried before `gpt-4`.
const FAMILIES: &[(&str, Encoding)] = &[
    ("gpt-4o", Encoding::O200kBase),
    ("gpt-4.1", Encoding::O200kBase),
    ("gpt-4.5", Encoding::O200kBase),
    ("gpt-5", Encoding::O200kBase),
    ("chatgpt-4o", Encoding::O200kBase),
    ("o1", Encoding::O200kBase),
    ("o3", Encoding::O200kBase),
    ("o4", Encoding::O200kBase),
    ("gpt-4", Encoding::Cl100kBase),
    ("gpt-3.5", Encoding::Cl100kBase),
    // Azure spells GPT-3.5 without the dot.
    ("gpt-35", Encoding::Cl100kBase),
    ("text-embedding-", Encoding::Cl100kBase),
];

/// The encoding for a provider model name, `None` when none applies.
///
/// The name is compared without case, after whatever precedes its last `/`
/// (`openai/gpt-4o` as gateways spell it) and a fine-tune's `ft:` prefix.
pub fn encoding_for_model(provider_model_name: &str) -> Option<Encoding> {
    let name = provider_model_name
        .rsplit('/')
        .next()
        .unwrap_or(provider_model_name);
    let name = strip_prefix_ignore_case(name, "ft:").unwrap_or(name);
    FAMILIES
        .iter()
        .find(|(prefix, _)| strip_prefix_ignore_case(name, prefix).is_some())
        .map(|(_, encoding)| *encoding)
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

/// Counts tokens with tiktoken for OpenAI families, by bytes otherwise.
#[derive(Default)]
pub struct TiktokenCounter {
    /// Built on first use. `None` inside means building failed (it cannot,
    /// with the vocabularies compiled in, but the fallback is the byte rule,
    /// not a panic on the request path).
    o200k_base: OnceLock<Option<CoreBPE>>,
    cl100k_base: OnceLock<Option<CoreBPE>>,
}

impl fmt::Debug for TiktokenCounter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TiktokenCounter")
            .field("o200k_base_loaded", &self.is_loaded(Encoding::O200kBase))
            .field("cl100k_base_loaded", &self.is_loaded(Encoding::Cl100kBase))
            .finish()
    }
}

impl TiktokenCounter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds the encodings `entries` need now, so that the first request
    /// to each family does not wait for it.
    pub fn warm_up<'a>(&self, entries: impl IntoIterator<Item = &'a ModelEntry>) {
        for entry in entries {
            if let Some(encoding) = encoding_for_model(&entry.provider_model_name) {
                self.bpe(encoding);
            }
        }
    }

    /// Whether `encoding` has been built.
    pub fn is_loaded(&self, encoding: Encoding) -> bool {
        self.cell(encoding).get().is_some()
    }

    /// Tokens of `text` in `encoding`; `None` when the encoding could not
    /// be built.
    pub fn count_with(&self, encoding: Encoding, text: &str) -> Option<u64> {
        let bpe = self.bpe(encoding)?;
        Some(
            segments(text)
                .map(|segment| bpe.count_ordinary(segment) as u64)
                .sum(),
        )
    }

    fn cell(&self, encoding: Encoding) -> &OnceLock<Option<CoreBPE>> {
        match encoding {
            Encoding::O200kBase => &self.o200k_base,
            Encoding::Cl100kBase => &self.cl100k_base,
        }
    }

    fn bpe(&self, encoding: Encoding) -> Option<&CoreBPE> {
        self.cell(encoding)
            .get_or_init(|| {
                let built = match encoding {
                    Encoding::O200kBase => tiktoken_rs::o200k_base(),
                    Encoding::Cl100kBase => tiktoken_rs::cl100k_base(),
                };
                built
                    .inspect_err(|error| {
                        tracing::error!(
                            ?encoding,
                            %error,
                            "cannot build the tokenizer; counting by bytes instead"
                        );
                    })
                    .ok()
            })
            .as_ref()
    }
}

impl TokenCounter for TiktokenCounter {
    fn count(&self, entry: &ModelEntry, text: &str) -> u64 {
        encoding_for_model(&entry.provider_model_name)
            .and_then(|encoding| self.count_with(encoding, text))
            .unwrap_or_else(|| ByteCounter.count(entry, text))
    }
}

/// The longest text handed to the tokenizer at once. Its regex backtracks
/// (and panics past a million steps, e.g. on a megabyte of spaces) and its
/// merge step grows faster than linearly with a piece's length, so a prompt
/// is counted in segments of at most this size.
const MAX_SEGMENT_BYTES: usize = 8 * 1024;

/// Splits `text` into segments of at most [`MAX_SEGMENT_BYTES`], cut where
/// the tokenizer would cut anyway when possible, so that the sum of the
/// segments' counts equals the whole text's count.
///
/// The cut goes before a space that sits between two non-space characters
/// (`word| next`): no tokenizer piece spans from a non-space into a space,
/// and a piece never looks back, so the pieces on both sides are the same as
/// in the whole text. A text without such a place (a megabyte of one letter,
/// a long base64 run) is cut at a character boundary: its count may then be
/// a token or so higher per segment, on input that is no prose anyway.
fn segments(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let cut = if rest.len() <= MAX_SEGMENT_BYTES {
            rest.len()
        } else {
            natural_cut(rest).unwrap_or_else(|| floor_char_boundary(rest, MAX_SEGMENT_BYTES))
        };
        let (segment, after) = rest.split_at(cut);
        rest = after;
        Some(segment)
    })
}

/// The last index in `1..=MAX_SEGMENT_BYTES` holding a space whose
/// neighbours are not whitespace.
fn natural_cut(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    (1..=MAX_SEGMENT_BYTES.min(bytes.len() - 2))
        .rev()
        .find(|&index| {
            bytes[index] == b' '
                && !is_whitespace_start(bytes[index - 1])
                && !is_whitespace_start(bytes[index + 1])
        })
}

/// Whether a byte may be (the first byte of) whitespace. ASCII whitespace,
/// plus every non-ASCII byte, as Unicode spaces are multi-byte: treating
/// them all as possible whitespace only makes a cut less likely, never wrong.
fn is_whitespace_start(byte: u8) -> bool {
    byte.is_ascii_whitespace() || !byte.is_ascii()
}

fn floor_char_boundary(text: &str, index: usize) -> usize {
    (0..=index.min(text.len()))
        .rev()
        .find(|&index| text.is_char_boundary(index))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_cover_the_text_and_stay_short() {
        let prose = "The quick brown fox jumps over the lazy dog. ".repeat(1000);
        let long_word = "é".repeat(20_000);
        for text in [prose.as_str(), long_word.as_str(), "", "short"] {
            let pieces: Vec<&str> = segments(text).collect();
            assert_eq!(pieces.concat(), text);
            assert!(pieces.iter().all(|piece| piece.len() <= MAX_SEGMENT_BYTES));
            assert!(pieces.iter().all(|piece| !piece.is_empty()));
        }
        // Prose is cut before a space that starts a word.
        for piece in segments(&prose).skip(1) {
            assert!(piece.starts_with(' '), "{:?}", &piece[..10]);
        }
    }
}
