//! Values as they may appear in a log line.
//!
//! tracing-subscriber writes a field recorded with `%` as its `Display`,
//! unescaped: a client's model name `"m\nINJECTED …"` would start a second,
//! forged line, and `\x1b[31m` would reach an operator's terminal raw. Every
//! value that a client or an upstream controls (model names, paths, header
//! values, error messages that quote them) is logged through [`Escaped`].

use std::fmt::{self, Write};

/// How many characters of a value a log line shows.
pub const MAX_LOGGED_CHARS: usize = 512;

/// A value written in double quotes, escaped the way Rust's `Debug` escapes
/// strings (`\n`, `\"`, `\u{1b}`: no control character, line separator or
/// ANSI sequence passes raw), and cut after [`MAX_LOGGED_CHARS`]
/// characters, with the full length noted: `"aaaa…" (1048576 chars)`.
///
/// Log with `%Escaped(value)`; it works for anything `Display`, so an error
/// that quotes client text is covered too.
#[derive(Clone, Copy)]
pub struct Escaped<T>(pub T);

/// The first [`MAX_LOGGED_CHARS`] characters of `text`, for a structured
/// field. Recorded as a plain value (`field = bounded(text)`, never with
/// `%`), a string is escaped by both of the binary's formatters: the
/// pretty one writes it as `Debug` (quoted, `\n`, `\u{1b}`), the JSON one as
/// a JSON string. Unlike [`Escaped`] it adds no quotes of its own, so a JSON
/// line carries the value itself.
pub fn bounded(text: &str) -> &str {
    match text.char_indices().nth(MAX_LOGGED_CHARS) {
        Some((cut, _)) => &text[..cut],
        None => text,
    }
}

impl<T: fmt::Display> fmt::Display for Escaped<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_char('"')?;
        let mut writer = EscapingWriter {
            out: f,
            shown: 0,
            total: 0,
        };
        write!(writer, "{}", self.0)?;
        let (shown, total) = (writer.shown, writer.total);
        if total > shown {
            write!(f, "…\" ({total} chars)")
        } else {
            f.write_char('"')
        }
    }
}

impl<T: fmt::Display> fmt::Debug for Escaped<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Escapes what passes through and drops what comes after the limit (while
/// still counting it).
struct EscapingWriter<'a, 'b> {
    out: &'a mut fmt::Formatter<'b>,
    shown: usize,
    total: usize,
}

impl Write for EscapingWriter<'_, '_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        for ch in text.chars() {
            self.total += 1;
            if self.shown >= MAX_LOGGED_CHARS {
                continue;
            }
            self.shown += 1;
            match ch {
                // Quotes inside error messages are common and harmless.
                '\'' => self.out.write_char(ch)?,
                // Everything else as `Debug` would: `\"`, `\\`, `\n`, `\t`,
                // and `\u{…}` for control, format and separator characters.
                _ => {
                    for escaped in ch.escape_debug() {
                        self.out.write_char(escaped)?;
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(value: &str, expected: &str) {
        assert_eq!(Escaped(value).to_string(), expected);
    }

    #[test]
    fn control_characters_are_escaped_and_the_value_quoted() {
        check("mock-gpt", r#""mock-gpt""#);
        check(
            "mock-gpt\nINJECTED log line",
            r#""mock-gpt\nINJECTED log line""#,
        );
        check("a\r\nb\tc", r#""a\r\nb\tc""#);
        check("\x1b[31mred\x1b[0m", r#""\u{1b}[31mred\u{1b}[0m""#);
        // C1 controls (CSI), NEL, line and paragraph separators, bidi overrides.
        check(
            "\u{9b}31m\u{85}\u{2028}\u{2029}\u{202e}",
            r#""\u{9b}31m\u{85}\u{2028}\u{2029}\u{202e}""#,
        );
        check(r#"say "hi" \ o'clock"#, r#""say \"hi\" \\ o'clock""#);
        check("ünïcödé ✓", r#""ünïcödé ✓""#);
        check("", r#""""#);
    }

    #[test]
    fn long_values_are_cut_with_their_length() {
        let long = "a".repeat(1 << 20);
        let shown = Escaped(&long).to_string();
        assert_eq!(
            shown,
            format!("\"{}…\" (1048576 chars)", "a".repeat(MAX_LOGGED_CHARS))
        );
        let exact = "b".repeat(MAX_LOGGED_CHARS);
        assert_eq!(Escaped(&exact).to_string(), format!("\"{exact}\""));
    }

    #[test]
    fn bounded_values_keep_their_first_characters() {
        assert_eq!(bounded("mock-gpt\nx"), "mock-gpt\nx");
        let long = "é".repeat(MAX_LOGGED_CHARS + 10);
        assert_eq!(bounded(&long).chars().count(), MAX_LOGGED_CHARS);
        assert_eq!(bounded(""), "");
    }

    #[test]
    fn any_display_is_escaped() {
        let error = crate::ChatError::ModelNotFound {
            model: "m\nINJECTED".to_owned(),
        };
        assert_eq!(
            Escaped(&error).to_string(),
            r#""Model m\nINJECTED not found or not available.""#
        );
    }
}
