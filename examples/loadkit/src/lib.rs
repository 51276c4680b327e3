//! Load, soak and bench tooling for the router, shared by its binaries.
//!
//! `mock-upstream` is a fast OpenAI-compatible upstream whose behaviour is chosen per
//! request by words in the last user message (or the `x-mock` header): `fault:500`,
//! `delay:200`, `chunks:8`, … `soak` drives mixed traffic through the router by writing
//! those words into its requests. This crate owns that vocabulary, a small seeded
//! random generator and the loopback check; it knows nothing of the router's crates,
//! so it exercises the router only through its HTTP interface.

use std::net::IpAddr;
use std::time::Duration;

/// A fault the mock upstream injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// 500 with an OpenAI error body.
    Status500,
    /// 429 with `Retry-After: 1`.
    Status429,
    /// 400: the client's own mistake, never failed over.
    Status400,
    /// The body is cut off half way (the connection is dropped).
    Cut,
    /// The stream pauses half way for `stall:<ms>` (default 1500 ms).
    Stall,
    /// A 200 whose JSON (or one SSE event's JSON) is broken.
    MalformedJson,
    /// A stream that is not SSE: invalid UTF-8, no event terminator, no `[DONE]`.
    MalformedSse,
    /// One event (or the answer) carries 1 MiB of content.
    Huge,
    /// A stream with CRLF line endings.
    Crlf,
}

impl Fault {
    pub const ALL: [Fault; 9] = [
        Fault::Status500,
        Fault::Status429,
        Fault::Status400,
        Fault::Cut,
        Fault::Stall,
        Fault::MalformedJson,
        Fault::MalformedSse,
        Fault::Huge,
        Fault::Crlf,
    ];

    /// The word after `fault:`.
    pub fn name(self) -> &'static str {
        match self {
            Fault::Status500 => "500",
            Fault::Status429 => "429",
            Fault::Status400 => "400",
            Fault::Cut => "cut",
            Fault::Stall => "stall",
            Fault::MalformedJson => "malformed-json",
            Fault::MalformedSse => "malformed-sse",
            Fault::Huge => "huge",
            Fault::Crlf => "crlf",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|fault| fault.name() == name)
    }
}

/// How the mock answers one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Directives {
    pub fault: Option<Fault>,
    /// Before the response head.
    pub delay: Duration,
    /// Content chunks of a stream (and words of a plain answer).
    pub chunks: u32,
    /// Between two chunks of a stream.
    pub gap: Duration,
    /// How long `fault:stall` stalls.
    pub stall: Duration,
}

/// Caps that keep one request's cost bounded whatever a client writes.
const MAX_CHUNKS: u32 = 10_000;
const MAX_WAIT: Duration = Duration::from_secs(60);

impl Default for Directives {
    fn default() -> Self {
        Self {
            fault: None,
            delay: Duration::ZERO,
            chunks: 4,
            gap: Duration::ZERO,
            stall: Duration::from_millis(1500),
        }
    }
}

impl Directives {
    /// Applies every directive word found in `text`; other words are ignored, so a
    /// directive can sit inside an ordinary message.
    pub fn apply(&mut self, text: &str) {
        for word in text.split_whitespace() {
            let Some((name, value)) = word.split_once(':') else {
                continue;
            };
            let millis = || {
                value
                    .parse::<u64>()
                    .ok()
                    .map(|ms| Duration::from_millis(ms).min(MAX_WAIT))
            };
            match name {
                "fault" => {
                    if let Some(fault) = Fault::from_name(value) {
                        self.fault = Some(fault);
                    }
                }
                "delay" => self.delay = millis().unwrap_or(self.delay),
                "gap" => self.gap = millis().unwrap_or(self.gap),
                "stall" => self.stall = millis().unwrap_or(self.stall),
                "chunks" => {
                    if let Ok(chunks) = value.parse::<u32>() {
                        self.chunks = chunks.min(MAX_CHUNKS);
                    }
                }
                _ => {}
            }
        }
    }

    pub fn parse(text: &str) -> Self {
        let mut directives = Self::default();
        directives.apply(text);
        directives
    }
}

/// Exits the process (status 0) once stdin reaches end of file: a child started
/// with a pipe on stdin then cannot outlive the parent holding the other end. A
/// plain thread, as a blocking read is all it does.
pub fn exit_when_stdin_closes() {
    std::thread::spawn(|| {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        std::process::exit(0);
    });
}

/// Whether `url` is `http://` to a loopback address (`127.0.0.0/8`, `::1` or
/// `localhost`): the soak driver refuses anything else, so it cannot be pointed at
/// someone's server by mistake.
pub fn is_loopback_http_url(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return false;
    }
    let host = if let Some(bracketed) = authority.strip_prefix('[') {
        bracketed.split(']').next().unwrap_or_default()
    } else {
        authority
            .rsplit_once(':')
            .map_or(authority, |(host, _)| host)
    };
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// splitmix64: a tiny seeded generator, enough to pick traffic kinds, with runs that
/// repeat for a given seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..bound` (`bound` > 0); the modulo bias is irrelevant here.
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directives_are_read_from_words() {
        let check =
            |text: &str, expected: Directives| assert_eq!(Directives::parse(text), expected);
        check("hello", Directives::default());
        check(
            "say hi fault:cut chunks:9 gap:5 delay:20 stall:100",
            Directives {
                fault: Some(Fault::Cut),
                delay: Duration::from_millis(20),
                chunks: 9,
                gap: Duration::from_millis(5),
                stall: Duration::from_millis(100),
            },
        );
        check("fault:nonsense chunks:x", Directives::default());
        for fault in Fault::ALL {
            let parsed = Directives::parse(&format!("fault:{}", fault.name()));
            assert_eq!(parsed.fault, Some(fault));
        }
        assert_eq!(Directives::parse("chunks:99999999").chunks, MAX_CHUNKS);
    }

    #[test]
    fn only_loopback_urls_are_accepted() {
        for url in [
            "http://127.0.0.1:8316",
            "http://127.0.0.1:8316/v1",
            "http://127.9.9.9",
            "http://localhost:1",
            "http://[::1]:80/",
        ] {
            assert!(is_loopback_http_url(url), "{url}");
        }
        for url in [
            "https://127.0.0.1:8316",
            "http://10.0.0.1:8316",
            "http://example.com",
            "http://127.0.0.1.example.com",
            "http://user@127.0.0.1:1@evil.com",
            "http://[2001:db8::1]:80",
        ] {
            assert!(!is_loopback_http_url(url), "{url}");
        }
    }

    #[test]
    fn rng_is_seeded() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        assert_eq!(a.next_u64(), b.next_u64());
        assert!(a.below(10) < 10);
    }
}
