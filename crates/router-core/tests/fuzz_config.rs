//! Fuzz target `config`: the config loader against the checked-in corpus
//! (`fuzz/corpus/config/`: the seed config, the README and example configs,
//! typos, alias bombs, deep nesting), against inputs mutated from it and
//! against generated YAML.
//!
//! Properties: `config::parse` never panics and returns either a config whose
//! entries and keys are indexed by position (the limiter relies on it), or a
//! non-empty list of errors, each naming the file, with a non-empty message
//! and a line inside the file, in line order.
//!
//! `cargo test` runs a few hundred cases; `cargo xtask fuzz` runs it for a
//! bounded time (`ROUTER_FUZZ_SECONDS`, `ROUTER_FUZZ_CASES`, `ROUTER_FUZZ_SEED`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::path::Path;

use proptest::prelude::*;
use router_core::config;

const TARGET: &str = "config";
const FILE: &str = "fuzz.yaml";

#[test]
fn corpus_replays_cleanly() {
    harness::replay_corpus(TARGET, check);
}

#[test]
fn mutated_and_generated_configs_load_or_fail_cleanly() {
    let corpus = harness::corpus(TARGET);
    let strategy = prop_oneof![
        3 => harness::mutated(corpus, DICTIONARY),
        2 => generated_config(),
    ];
    harness::fuzz(TARGET, strategy, check);
}

/// YAML syntax and the config's field names, for mutations to insert.
const DICTIONARY: &[&[u8]] = &[
    b"\n",
    b"\n  - ",
    b"  ",
    b"\t",
    b": ",
    b"- ",
    b"&a ",
    b"*a",
    b"<<: ",
    b"!!str ",
    b"!!binary ",
    b"|\n",
    b">-\n",
    b"[",
    b"]",
    b"{",
    b"}",
    b"\"",
    b"'",
    b"#",
    b"---\n",
    b"...\n",
    b"~",
    b".inf",
    b".nan",
    b"-1",
    b"0",
    b"99999999999999999999",
    b"${OPENAI_API_KEY}",
    b"${MISSING}",
    b"$${",
    b"${",
    b"models:",
    b"api_keys:",
    b"server:",
    b"limits:",
    b"name: ",
    b"provider: ",
    b"base_url: ",
    b"provider_api_key: ",
    b"key: ",
    b"rpm: ",
    b"tpd: ",
    b"max_budget_usd: ",
    b"budget_period: ",
    b"\xef\xbb\xbf",
    b"\xff",
];

fn env(name: &str) -> Option<String> {
    match name {
        "OPENAI_API_KEY" => Some("sk-fuzz-env".to_owned()),
        "MODEL" => Some("gpt-4o-mini".to_owned()),
        "BASE_URL" => Some("https://api.example.com/v1".to_owned()),
        "EMPTY" => Some(String::new()),
        _ => None,
    }
}

fn check(input: &[u8]) -> Result<(), String> {
    // The loader reads text; bytes that are not UTF-8 fail in `load_file`
    // before parsing, so the parser sees them replaced.
    let text = String::from_utf8_lossy(input);
    let file = Path::new(FILE);
    match config::parse(file, &text, &env) {
        Ok(config) => {
            for (position, entry) in config.models.iter().enumerate() {
                if entry.index != position {
                    return Err(format!("models[{position}] has index {}", entry.index));
                }
            }
            for (position, key) in config.api_keys.iter().enumerate() {
                if key.index != position {
                    return Err(format!("api_keys[{position}] has index {}", key.index));
                }
            }
            // Debug must work on anything validation let through.
            let _ = format!("{config:?}");
            Ok(())
        }
        Err(errors) => {
            if errors.0.is_empty() {
                return Err("an error without any problem in it".to_owned());
            }
            // YAML ends lines with LF, CRLF or a lone CR; a file ending with
            // a break has an empty last line, which an error may point at.
            let line_count = text.replace("\r\n", "\n").matches(['\n', '\r']).count() + 1;
            let mut previous_line = 0;
            for error in &errors {
                if error.file != file {
                    return Err(format!("error names file {}", error.file.display()));
                }
                if error.message.trim().is_empty() {
                    return Err(format!(
                        "an error with an empty message at {:?}",
                        error.path
                    ));
                }
                let line = error.line.unwrap_or(usize::MAX);
                if error
                    .line
                    .is_some_and(|line| line == 0 || line > line_count)
                {
                    return Err(format!(
                        "error `{error}` points at line {line} of {line_count}"
                    ));
                }
                if line < previous_line {
                    return Err(format!("errors out of line order: {errors}"));
                }
                previous_line = line;
            }
            if errors.to_string().is_empty() {
                return Err("errors display as nothing".to_owned());
            }
            Ok(())
        }
    }
}

/// A YAML document built from the config's vocabulary: block mappings and
/// sequences, flow collections, anchors, aliases, merges and odd scalars.
fn generated_config() -> impl Strategy<Value = Vec<u8>> {
    const KEYS: &[&str] = &[
        "models",
        "api_keys",
        "server",
        "limits",
        "id",
        "name",
        "provider",
        "base_url",
        "provider_api_key",
        "provider_model_name",
        "key",
        "admin",
        "user_id",
        "rps",
        "rpm",
        "rph",
        "rpd",
        "tps",
        "tpm",
        "tph",
        "tpd",
        "max_budget_usd",
        "budget_period",
        "port",
        "host",
        "max_sse_event_bytes",
        "database",
        "flush_interval",
        "timeout",
        "retry",
        "cooldown",
        "<<",
        "nme",
    ];
    const SCALARS: &[&str] = &[
        "mock",
        "openai",
        "m",
        "gpt-4o",
        "http://localhost:8000/v1",
        "not a url",
        "sk-a",
        "${OPENAI_API_KEY}",
        "${MISSING}",
        "$${X}",
        "0",
        "1",
        "-1",
        "7",
        "1.5",
        "1e3",
        "0x10",
        "99999999999999999999",
        ".inf",
        ".nan",
        "true",
        "no",
        "null",
        "~",
        "''",
        "\"\"",
        "day",
        "month",
        "week",
        "10s",
        "[]",
        "{}",
        "*a",
        "&a x",
        "!!str 5",
        "[mock, m]",
        "{name: m, provider: mock}",
    ];
    #[derive(Debug, Clone)]
    enum Node {
        Scalar(&'static str),
        Map(Vec<(&'static str, Node)>),
        Seq(Vec<Node>),
    }
    fn render(node: &Node, indent: usize, out: &mut String) {
        let pad = " ".repeat(indent);
        match node {
            Node::Scalar(scalar) => {
                out.push(' ');
                out.push_str(scalar);
                out.push('\n');
            }
            Node::Map(fields) if fields.is_empty() => out.push_str(" {}\n"),
            Node::Seq(items) if items.is_empty() => out.push_str(" []\n"),
            Node::Map(fields) => {
                out.push('\n');
                for (key, value) in fields {
                    out.push_str(&format!("{pad}{key}:"));
                    render(value, indent + 2, out);
                }
            }
            Node::Seq(items) => {
                out.push('\n');
                for item in items {
                    out.push_str(&format!("{pad}-"));
                    render(item, indent + 2, out);
                }
            }
        }
    }
    let scalar = proptest::sample::select(SCALARS).prop_map(Node::Scalar);
    let node = scalar.prop_recursive(4, 64, 6, |inner| {
        prop_oneof![
            proptest::collection::vec((proptest::sample::select(KEYS), inner.clone()), 0..6)
                .prop_map(Node::Map),
            proptest::collection::vec(inner, 0..4).prop_map(Node::Seq),
        ]
    });
    proptest::collection::vec((proptest::sample::select(KEYS), node), 0..5).prop_map(|fields| {
        let mut out = String::new();
        for (key, value) in &fields {
            out.push_str(key);
            out.push(':');
            render(value, 2, &mut out);
        }
        out.into_bytes()
    })
}

#[path = "../../../fuzz/harness.rs"]
mod harness;
