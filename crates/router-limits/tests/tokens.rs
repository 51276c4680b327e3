//! Token counts with the real OpenAI vocabularies, and the fallback.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use router_core::config::ModelEntry;
use router_core::estimate::{ByteCounter, TokenCounter};
use router_limits::tokens::{encoding_for_model, Encoding, TiktokenCounter};

fn entry(provider_model_name: &str) -> ModelEntry {
    ModelEntry {
        provider_model_name: provider_model_name.to_owned(),
        ..ModelEntry::new("client-name", "openai")
    }
}

#[test]
fn families_by_provider_model_name() {
    let check = |name: &str, want: Option<Encoding>| {
        assert_eq!(encoding_for_model(name), want, "{name}");
    };
    for name in [
        "gpt-4o",
        "gpt-4o-mini-2024-07-18",
        "gpt-4.1-nano",
        "gpt-4.5-preview",
        "gpt-5",
        "gpt-5-mini",
        "o1",
        "o1-mini",
        "o3-mini",
        "o4-mini",
        "chatgpt-4o-latest",
        "GPT-4O",
        "openai/gpt-4o",
        "ft:gpt-4o-2024-08-06:acme::abc123",
    ] {
        check(name, Some(Encoding::O200kBase));
    }
    for name in [
        "gpt-4",
        "gpt-4-turbo",
        "gpt-4-0613",
        "gpt-3.5-turbo",
        "gpt-35-turbo",
        "text-embedding-3-small",
        "text-embedding-ada-002",
        "ft:gpt-3.5-turbo-0125:acme::xyz",
    ] {
        check(name, Some(Encoding::Cl100kBase));
    }
    for name in [
        "gemini-2.5-pro",
        "claude-sonnet-4",
        "meta-llama/Llama-3.3-70B-Instruct",
        "mock",
        "gpt",
        "",
        "openai/",
        "o",
        "gpt-oss-120b",
    ] {
        check(name, None);
    }
}

#[test]
fn known_counts_in_each_encoding() {
    let counter = TiktokenCounter::new();
    let check = |encoding: Encoding, text: &str, want: u64| {
        assert_eq!(
            counter.count_with(encoding, text),
            Some(want),
            "{encoding:?} {text:?}"
        );
    };
    // Well-known values: "hello world" is two tokens in both; OpenAI's
    // cookbook counts "tiktoken is great!" as six in cl100k_base.
    check(Encoding::Cl100kBase, "hello world", 2);
    check(Encoding::O200kBase, "hello world", 2);
    check(Encoding::Cl100kBase, "tiktoken is great!", 6);
    // Computed with tiktoken-rs 0.12: where the vocabularies differ.
    check(Encoding::O200kBase, "tiktoken is great!", 6);
    check(Encoding::Cl100kBase, "こんにちは世界", 4);
    check(Encoding::O200kBase, "こんにちは世界", 2);
    check(
        Encoding::Cl100kBase,
        "The quick brown fox jumps over the lazy dog.",
        10,
    );
    check(Encoding::Cl100kBase, "", 0);
    // Special tokens are counted as the ordinary text they are.
    assert!(
        counter
            .count_with(Encoding::Cl100kBase, "<|endoftext|>")
            .unwrap()
            > 1
    );
}

#[test]
fn counts_through_the_port_by_entry() {
    let counter = TiktokenCounter::new();
    assert_eq!(counter.count(&entry("gpt-4o"), "こんにちは世界"), 2);
    assert_eq!(counter.count(&entry("gpt-4-turbo"), "こんにちは世界"), 4);
    // Anything else: one token per four bytes, rounded up (21 bytes).
    let claude = entry("claude-sonnet-4");
    assert_eq!(counter.count(&claude, "こんにちは世界"), 6);
    assert_eq!(
        counter.count(&claude, "hello world"),
        ByteCounter.count(&claude, "hello world")
    );
}

#[test]
fn loads_each_vocabulary_only_when_its_family_is_asked_about() {
    let counter = TiktokenCounter::new();
    counter.count(&entry("gemini-2.5-pro"), "hello");
    counter.count(&entry("mock"), "hello");
    assert!(!counter.is_loaded(Encoding::O200kBase));
    assert!(!counter.is_loaded(Encoding::Cl100kBase));
    counter.count(&entry("gpt-3.5-turbo"), "hello");
    assert!(counter.is_loaded(Encoding::Cl100kBase));
    assert!(!counter.is_loaded(Encoding::O200kBase));
    counter.warm_up([&entry("gpt-5"), &entry("claude")]);
    assert!(counter.is_loaded(Encoding::O200kBase));
}

#[test]
fn long_prose_counts_the_same_in_segments() {
    // Far longer than one counting segment; cut between words, the sum of
    // the segments must equal tiktoken's count of the whole.
    let paragraph = "It was the best of times, it was the worst of times; it was the age of \
                     wisdom (1859), it was the age of foolishness... \"Quoted\", don't stop.\n\n\
                     \tIndented line with  two spaces and numbers 12345 67.890!\n";
    let text = paragraph.repeat(400);
    assert!(text.len() > 50_000);
    let counter = TiktokenCounter::new();
    let cl100k = tiktoken_rs::cl100k_base().unwrap();
    let o200k = tiktoken_rs::o200k_base().unwrap();
    assert_eq!(
        counter.count_with(Encoding::Cl100kBase, &text),
        Some(cl100k.encode_ordinary(&text).len() as u64)
    );
    assert_eq!(
        counter.count_with(Encoding::O200kBase, &text),
        Some(o200k.encode_ordinary(&text).len() as u64)
    );
}

#[test]
fn pathological_input_neither_panics_nor_crawls() {
    // tiktoken's regex gives up (and tiktoken-rs 0.12 panics) on about a
    // million spaces in o200k_base, and long single pieces merge slowly;
    // segments keep both bounded.
    let counter = TiktokenCounter::new();
    let spaces = " ".repeat(1_100_000);
    let count = counter.count_with(Encoding::O200kBase, &spaces).unwrap();
    assert!(count > 0 && count < 10_000, "{count}");
    for text in ["\n".repeat(50_000), "a".repeat(50_000), "^".repeat(50_000)] {
        for encoding in [Encoding::Cl100kBase, Encoding::O200kBase] {
            let count = counter.count_with(encoding, &text).unwrap();
            assert!(count > 0 && count <= text.len() as u64, "{encoding:?}");
        }
    }
}

/// The prompt estimate against a count the OpenAI API itself reported: the
/// cookbook's "How to count tokens with tiktoken" example, for which the API
/// answered 129 prompt tokens on gpt-4-0613 (cl100k).
#[test]
fn prompt_estimate_matches_the_apis_count_on_the_cookbook_example() {
    use router_core::estimate::prompt_tokens;

    let body = serde_json::json!({"model": "gpt-4-0613", "messages": [
        {"role": "system", "content": "You are a helpful, pattern-following assistant that translates corporate jargon into plain English."},
        {"role": "system", "name": "example_user", "content": "New synergies will help drive top-line growth."},
        {"role": "system", "name": "example_assistant", "content": "Things working well together will increase revenue."},
        {"role": "system", "name": "example_user", "content": "Let's circle back when we have more bandwidth to touch base on opportunities for increased leverage."},
        {"role": "system", "name": "example_assistant", "content": "Let's talk later when we're less busy about how to do better."},
        {"role": "user", "content": "This late pivot means we don't have time to boil the ocean for the client deliverable."},
    ]});
    let entry = ModelEntry {
        provider_model_name: "gpt-4-0613".to_owned(),
        ..ModelEntry::new("gpt-4", "openai")
    };
    let counter = TiktokenCounter::new();
    assert_eq!(
        prompt_tokens(&counter, &entry, body.as_object().unwrap()),
        129
    );
}
