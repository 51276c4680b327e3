//! The only place that parses YAML.
//!
//! [`parse_document`] turns the text into a `serde_yaml::Value` tree (syntax,
//! duplicate keys, alias bombs and merge keys are settled here); the tree is
//! then walked field by field by `raw`, so that every problem is reported
//! rather than the first serde error. Because the tree carries no positions,
//! [`LineIndex`] scans the text once to find the line of a field path.

use serde_yaml::Value;

use super::error::Problem;

/// Parses one YAML document, applying `<<` merge keys like yaml.v3 did for
/// the seed. The error holds no text of the file beyond key names.
pub(super) fn parse_document(text: &str, lines: &LineIndex) -> Result<Value, Problem> {
    // serde_yaml refuses duplicate keys, nesting past its recursion limit and
    // alias expansion past its repetition limit (billion laughs), each with an
    // error rather than a hang; we only reword what it says.
    let mut value: Value = serde_yaml::from_str(text).map_err(|e| {
        let mut problem = syntax_problem(&e, lines);
        // libyaml reports an unexpected end of a file without a final newline
        // on the line after the last; point at the last line instead.
        // YAML breaks lines at LF, CRLF and a lone CR.
        let last_line = text.replace("\r\n", "\n").matches(['\n', '\r']).count() + 1;
        problem.line = problem.line.map(|line| line.min(last_line));
        problem
    })?;
    value.apply_merge().map_err(|e| Problem {
        path: String::new(),
        line: None,
        message: format!("invalid `<<` merge: {e}"),
    })?;
    Ok(value)
}

fn syntax_problem(error: &serde_yaml::Error, lines: &LineIndex) -> Problem {
    let mut message = error.to_string();
    let location = error.location();
    if let Some(location) = &location {
        let suffix = format!(" at line {} column {}", location.line(), location.column());
        if let Some(at) = message.find(&suffix) {
            message.replace_range(at..at + suffix.len(), "");
        }
    }
    // serde_yaml prefixes errors found while building the tree with the path
    // of the node (`models[1]: duplicate entry ...`), in our own path syntax.
    let (node_path, message) = match message.split_once(": ") {
        Some((prefix, rest)) if !prefix.is_empty() && !prefix.contains(char::is_whitespace) => {
            (prefix.to_owned(), rest.to_owned())
        }
        _ => (String::new(), message),
    };
    let line = location.as_ref().map(serde_yaml::Location::line);

    if let Some(key) = message.strip_prefix("duplicate entry with key ") {
        let key = key.trim_matches('"');
        let path = join_path(&node_path, key);
        let occurrences = lines.occurrences(&path);
        // serde_yaml points at the start of the mapping; the scanner finds
        // where the key is repeated.
        if let [first, second, ..] = occurrences.as_slice() {
            return Problem {
                path,
                line: Some(*second),
                message: format!("duplicate key (first defined at line {first})"),
            };
        }
        return Problem {
            path,
            line,
            message: "duplicate key".to_owned(),
        };
    }
    let message = match message.as_str() {
        "repetition limit exceeded" => {
            "too many alias expansions (repetition limit exceeded); aliases may not \
             multiply the document"
                .to_owned()
        }
        "recursion limit exceeded" => "nested too deeply (recursion limit exceeded)".to_owned(),
        _ => message,
    };
    Problem {
        path: node_path,
        line,
        message,
    }
}

/// `parent.key`, or `key` at the top level.
pub(super) fn join_path(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

/// Where each field path of a block-style YAML text sits.
///
/// Best effort by design: it follows indentation, `key:` lines and `- ` items,
/// skips block scalars and does not look inside flow collections (`[a, b]`),
/// so a path it cannot see resolves to its nearest visible ancestor, or to no
/// line at all. Misreading an odd file costs a line number, never a wrong
/// verdict: the tree from serde_yaml alone decides what is valid.
#[derive(Debug, Default)]
pub(super) struct LineIndex {
    /// Every key and sequence item seen, in file order (1-based lines).
    entries: Vec<(String, usize)>,
}

/// An open block collection while scanning.
enum Frame {
    Map {
        indent: usize,
        path: String,
        last_key: Option<String>,
    },
    Seq {
        indent: usize,
        path: String,
        next: usize,
    },
}

impl Frame {
    fn indent(&self) -> usize {
        match self {
            Frame::Map { indent, .. } | Frame::Seq { indent, .. } => *indent,
        }
    }

    /// The path of the node a deeper line belongs to.
    fn child_path(&self) -> String {
        match self {
            Frame::Map { path, last_key, .. } => last_key.clone().unwrap_or_else(|| path.clone()),
            Frame::Seq { path, next, .. } => format!("{path}[{}]", next.saturating_sub(1)),
        }
    }
}

impl LineIndex {
    pub(super) fn scan(text: &str) -> Self {
        let mut index = Self::default();
        let mut stack: Vec<Frame> = Vec::new();
        // Lines indented deeper than this belong to a block scalar (`key: |`).
        let mut block_scalar_indent: Option<usize> = None;
        // A byte order mark would otherwise become part of the first key.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);

        for (number, line) in text.lines().enumerate() {
            let number = number + 1;
            let content = line.trim_start_matches(' ');
            let column = line.len() - content.len();
            let content = content.trim_end();
            if let Some(indent) = block_scalar_indent {
                if content.is_empty() || column > indent {
                    continue;
                }
                block_scalar_indent = None;
            }
            if content.is_empty()
                || content.starts_with('#')
                || content.starts_with('%')
                || (column == 0 && (content.starts_with("---") || content.starts_with("...")))
            {
                continue;
            }

            let mut column = column;
            let mut rest = content;
            loop {
                if rest == "-" || rest.starts_with("- ") {
                    while stack.last().is_some_and(|frame| frame.indent() > column) {
                        stack.pop();
                    }
                    let continues = matches!(stack.last(), Some(Frame::Seq { indent, .. }) if *indent == column);
                    if !continues {
                        let path = stack.last().map(Frame::child_path).unwrap_or_default();
                        stack.push(Frame::Seq {
                            indent: column,
                            path,
                            next: 0,
                        });
                    }
                    if let Some(Frame::Seq { path, next, .. }) = stack.last_mut() {
                        index.entries.push((format!("{path}[{next}]"), number));
                        *next += 1;
                    }
                    let dash_column = column;
                    let after_dash = &rest[1..];
                    let item = after_dash.trim_start_matches(' ');
                    column += 1 + after_dash.len() - item.len();
                    rest = item;
                    if rest.starts_with('|') || rest.starts_with('>') {
                        block_scalar_indent = Some(dash_column);
                        break;
                    }
                    if rest.is_empty() || rest.starts_with('#') {
                        break;
                    }
                    continue;
                }
                let Some((key, value)) = split_key(rest) else {
                    break;
                };
                while stack.last().is_some_and(|frame| {
                    frame.indent() > column
                        || matches!(frame, Frame::Seq { indent, .. } if *indent == column)
                }) {
                    stack.pop();
                }
                let same_map =
                    matches!(stack.last(), Some(Frame::Map { indent, .. }) if *indent == column);
                if !same_map {
                    let path = stack.last().map(Frame::child_path).unwrap_or_default();
                    stack.push(Frame::Map {
                        indent: column,
                        path,
                        last_key: None,
                    });
                }
                if let Some(Frame::Map { path, last_key, .. }) = stack.last_mut() {
                    let key_path = join_path(path, key);
                    index.entries.push((key_path.clone(), number));
                    *last_key = Some(key_path);
                }
                if value.starts_with('|') || value.starts_with('>') {
                    block_scalar_indent = Some(column);
                }
                break;
            }
        }
        index
    }

    /// The line of `path`, or else of its nearest ancestor found in the text.
    pub(super) fn line_of(&self, path: &str) -> Option<usize> {
        let mut path = path;
        loop {
            if let Some((_, line)) = self.entries.iter().find(|(p, _)| p == path) {
                return Some(*line);
            }
            path = parent_path(path)?;
        }
    }

    /// Every line where exactly `path` appears.
    fn occurrences(&self, path: &str) -> Vec<usize> {
        self.entries
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, line)| *line)
            .collect()
    }
}

/// `models[2]` for `models[2].name`, `models` for `models[2]`, none for `models`.
fn parent_path(path: &str) -> Option<&str> {
    if let Some(open) = path.strip_suffix(']').and_then(|p| p.rfind('[')) {
        return Some(&path[..open]);
    }
    path.rfind('.').map(|dot| &path[..dot])
}

/// Splits `key: value` (or `key:`) into the key and the rest; `None` when the
/// line is not a block mapping entry.
fn split_key(line: &str) -> Option<(&str, &str)> {
    let (key, after) = match line.chars().next()? {
        quote @ ('"' | '\'') => {
            let close = line[1..].find(quote)? + 1;
            (&line[1..close], &line[close + 1..])
        }
        // Flow collections, anchors, aliases, tags, block scalars and
        // comments do not start a key we can name.
        '[' | '{' | '&' | '*' | '!' | '|' | '>' | '#' | '?' | '@' | '`' => return None,
        _ => {
            let colon = line
                .match_indices(':')
                .map(|(i, _)| i)
                .find(|&i| line[i + 1..].is_empty() || line[i + 1..].starts_with([' ', '\t']))?;
            (line[..colon].trim_end(), &line[colon..])
        }
    };
    let value = after.strip_prefix(':')?;
    if !(value.is_empty() || value.starts_with([' ', '\t'])) {
        return None;
    }
    Some((key, value.trim_start()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks that each `(path, line)` is found, from the path's own line or
    /// an ancestor's.
    fn check(text: &str, expected: &[(&str, Option<usize>)]) {
        let index = LineIndex::scan(text);
        for (path, line) in expected {
            assert_eq!(
                index.line_of(path),
                *line,
                "path {path}; index {:?}",
                index.entries
            );
        }
    }

    #[test]
    fn block_mappings_and_sequences() {
        let text = "\
# comment
server:
  port: \"8316\"   # trailing comment
  shutdown_timeout: 10s

models:
  - id: 1
    name: \"a\"
    provider_api_key:
      - \"k1\"
      - \"k2\"
    base_url: \"https://x/v1\"
  -
    id: 2
    bse_url: x
api_keys:
- id: 1
  key: k
- key: k2
";
        check(
            text,
            &[
                ("server", Some(2)),
                ("server.port", Some(3)),
                ("server.shutdown_timeout", Some(4)),
                ("models", Some(6)),
                ("models[0]", Some(7)),
                ("models[0].id", Some(7)),
                ("models[0].name", Some(8)),
                ("models[0].provider_api_key", Some(9)),
                ("models[0].provider_api_key[1]", Some(11)),
                ("models[0].base_url", Some(12)),
                ("models[1]", Some(13)),
                ("models[1].id", Some(14)),
                ("models[1].bse_url", Some(15)),
                ("api_keys", Some(16)),
                ("api_keys[0].key", Some(18)),
                ("api_keys[1].key", Some(19)),
                // Not in the text: the nearest ancestor, or nothing.
                ("models[1].name", Some(13)),
                ("server.host", Some(2)),
                ("nowhere", None),
            ],
        );
    }

    #[test]
    fn flow_collections_resolve_to_their_key() {
        let text = "\
models:
  - {id: 1, name: a}
  - supported_parameters: [\"tools\",
      \"seed\"]
    name: b
";
        check(
            text,
            &[
                ("models[0]", Some(2)),
                ("models[0].name", Some(2)),
                ("models[1].supported_parameters[1]", Some(3)),
                ("models[1].name", Some(5)),
            ],
        );
    }

    #[test]
    fn block_scalars_are_skipped() {
        let text = "\
models:
  - description: |
      looks: like a key
      - like an item
    name: a
  - |
    text: not a key
  - name: c
";
        check(
            text,
            &[
                ("models[0].description", Some(2)),
                ("models[0].looks", Some(2)),
                ("models[0].name", Some(5)),
                ("models[1]", Some(6)),
                ("models[2].name", Some(8)),
            ],
        );
    }

    #[test]
    fn quoted_keys_and_values_with_colons() {
        let text = "\
\"server\":
  'port': 1
  host: \"::1\"
models:
  - base_url: http://localhost:8080/v1
    description: a: b
";
        check(
            text,
            &[
                ("server.port", Some(2)),
                ("server.host", Some(3)),
                ("models[0].base_url", Some(5)),
                ("models[0].description", Some(6)),
            ],
        );
    }

    #[test]
    fn byte_order_mark_and_crlf() {
        check(
            "\u{feff}server:\r\n  port: 1\r\n",
            &[("server", Some(1)), ("server.port", Some(2))],
        );
    }

    #[test]
    fn nested_sequences() {
        let text = "\
a:
  - - x
    - y
  - - z
";
        check(
            text,
            &[
                ("a[0]", Some(2)),
                ("a[0][1]", Some(3)),
                ("a[1][0]", Some(4)),
            ],
        );
    }

    #[test]
    fn split_key_cases() {
        let cases: &[(&str, Option<(&str, &str)>)] = &[
            ("key: value", Some(("key", "value"))),
            ("key:", Some(("key", ""))),
            ("key:   # c", Some(("key", "# c"))),
            ("base_url: http://a:1/b", Some(("base_url", "http://a:1/b"))),
            ("\"quoted key\": 1", Some(("quoted key", "1"))),
            ("'k': |", Some(("k", "|"))),
            ("http://a", None),
            ("plain text", None),
            ("\"a: b\"", None),
            ("[a, b]", None),
            ("{a: 1}", None),
            ("*alias", None),
        ];
        for (line, expected) in cases {
            assert_eq!(split_key(line), *expected, "line {line:?}");
        }
    }

    fn check_error(text: &str, expected: Problem) {
        let lines = LineIndex::scan(text);
        assert_eq!(parse_document(text, &lines), Err(expected), "text:\n{text}");
    }

    fn problem(path: &str, line: Option<usize>, message: &str) -> Problem {
        Problem {
            path: path.to_owned(),
            line,
            message: message.to_owned(),
        }
    }

    #[test]
    fn duplicate_keys_name_the_path_and_both_lines() {
        check_error(
            "server:\n  port: 1\n  host: ::1\n  port: 2\n",
            problem(
                "server.port",
                Some(4),
                "duplicate key (first defined at line 2)",
            ),
        );
        check_error(
            "models:\n  - id: 1\n  - id: 2\n    name: a\n    name: b\n",
            problem(
                "models[1].name",
                Some(5),
                "duplicate key (first defined at line 4)",
            ),
        );
        check_error(
            "server: 1\nmodels: []\nserver: 2\n",
            problem("server", Some(3), "duplicate key (first defined at line 1)"),
        );
    }

    #[test]
    fn syntax_errors_keep_the_line() {
        check_error(
            "server:\n  port: [1\nmodels: []\n",
            problem(
                "",
                Some(3),
                "did not find expected ',' or ']', while parsing a flow sequence at line 2 \
                 column 9",
            ),
        );
        check_error(
            "server:\n\tport: 1\n",
            problem(
                "",
                Some(2),
                "found character that cannot start any token, while scanning for the next token",
            ),
        );
        check_error("a: *nope\n", problem("", Some(1), "unknown anchor"));
        check_error(
            "a: 1\n---\nb: 2\n",
            problem(
                "",
                None,
                "deserializing from YAML containing more than one document is not supported",
            ),
        );
    }

    #[test]
    fn alias_bombs_and_deep_nesting_are_refused() {
        let mut bomb = String::from("a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
        for (name, previous) in ["b", "c", "d", "e", "f", "g", "h", "i"]
            .iter()
            .zip("abcdefgh".chars())
        {
            let alias = format!("*{previous}");
            let items = [alias.as_str(); 9].join(", ");
            bomb.push_str(&format!("{name}: &{name} [{items}]\n"));
        }
        check_error(
            &bomb,
            problem(
                "",
                None,
                "too many alias expansions (repetition limit exceeded); aliases may not \
                 multiply the document",
            ),
        );
        check_error(
            &"[".repeat(10_000),
            problem("", Some(1), "nested too deeply (recursion limit exceeded)"),
        );
    }

    #[test]
    fn merge_keys_are_applied() {
        let text = "base: &base {enabled: true, rpm: 5}\nmodel:\n  <<: *base\n  rpm: 6\n";
        let value = parse_document(text, &LineIndex::scan(text));
        let expected: Value =
            serde_yaml::from_str("base: {enabled: true, rpm: 5}\nmodel: {rpm: 6, enabled: true}\n")
                .unwrap();
        assert_eq!(value, Ok(expected));
    }
}
