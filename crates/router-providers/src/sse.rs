//! An incremental parser for `text/event-stream` bodies (the WHATWG "server-sent
//! events" format), fed with network chunks as they arrive.
//!
//! What it does, following the spec's "interpreting an event stream":
//! - lines end with LF, CRLF or a lone CR; a CR that ends one chunk and the LF
//!   that starts the next are one line end;
//! - a leading UTF-8 byte order mark is skipped;
//! - `field:value` with at most one space after the colon removed; a line
//!   without a colon is a field with an empty value;
//! - `data` lines of one event are joined with `\n`; `event` sets the event
//!   type; `id` (unless it contains NUL) sets the last event id; `retry` with
//!   only digits sets the reconnection time; other fields and comment lines
//!   (starting with `:`) are ignored;
//! - a blank line dispatches the event, but only if it had a `data` line;
//! - an unfinished event at the end of the input is not an event (the caller
//!   decides what an early end means).
//!
//! Unlike the seed (which cut the stream every 4096 bytes), events may be as
//! large as the configured cap; one that grows beyond it is an error, never a
//! panic and never a silent truncation.
//!
//! Cost: each byte is scanned once (the parser remembers how far it scanned a
//! partial line), and an event with a single `data` line hands out a slice of
//! the receive buffer without copying it.

use bytes::{Buf, Bytes, BytesMut};

/// What a `field:` name and its separator may add to a line on top of the
/// event cap. A `data` line holding exactly the largest allowed payload must
/// still fit; anything longer than this cannot belong to a valid event.
const LINE_OVERHEAD: usize = 64;

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// The parser gave up on the stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    /// An event (its joined data, or one of its lines) grew beyond the cap.
    #[error("an event is larger than the limit of {limit} bytes")]
    EventTooLarge { limit: usize },
}

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, if the event had one (the spec's default is `message`).
    pub event: Option<String>,
    /// The `data` lines joined with `\n`. Raw bytes: the spec decodes them as
    /// UTF-8, and the JSON parser that reads them checks that anyway.
    pub data: Bytes,
}

/// The `data` of the event being assembled. Most events carry one line, which
/// stays a zero-copy slice of the receive buffer; only a second line makes us
/// copy into a joined buffer.
#[derive(Debug, Default)]
enum DataBuf {
    #[default]
    Empty,
    One(Bytes),
    Many(BytesMut),
}

impl DataBuf {
    fn len(&self) -> usize {
        match self {
            Self::Empty => 0,
            Self::One(bytes) => bytes.len(),
            Self::Many(bytes) => bytes.len(),
        }
    }

    fn push_line(&mut self, value: Bytes) {
        match std::mem::take(self) {
            Self::Empty => *self = Self::One(value),
            Self::One(first) => {
                let mut joined = BytesMut::with_capacity(first.len() + 1 + value.len());
                joined.extend_from_slice(&first);
                joined.extend_from_slice(b"\n");
                joined.extend_from_slice(&value);
                *self = Self::Many(joined);
            }
            Self::Many(mut joined) => {
                joined.extend_from_slice(b"\n");
                joined.extend_from_slice(&value);
                *self = Self::Many(joined);
            }
        }
    }

    fn take(&mut self) -> Option<Bytes> {
        match std::mem::take(self) {
            Self::Empty => None,
            Self::One(bytes) => Some(bytes),
            Self::Many(bytes) => Some(bytes.freeze()),
        }
    }
}

/// Feed it bytes with [`SseParser::feed`], take events with
/// [`SseParser::next_event`] until it returns `Ok(None)`, repeat.
#[derive(Debug)]
pub struct SseParser {
    /// Received bytes not yet consumed as lines.
    buf: BytesMut,
    /// How much of `buf` is known to hold no line end, so a partial line is
    /// not rescanned from its start on every chunk (that would be quadratic
    /// for a large event arriving in small pieces).
    scanned: usize,
    /// The previous line ended with a CR that was the last byte received; an
    /// LF at the start of the next chunk completes that CRLF, not a blank line.
    skip_lf: bool,
    /// Whether the start of the stream was checked for a byte order mark.
    bom_checked: bool,
    data: DataBuf,
    event: Option<String>,
    last_event_id: Option<String>,
    retry_ms: Option<u64>,
    max_event_bytes: usize,
    /// Set once the cap was exceeded: the stream is not resynchronised.
    failed: bool,
}

impl SseParser {
    /// A parser that refuses events whose data exceeds `max_event_bytes`
    /// (`ServerConfig::max_sse_event_bytes`).
    pub fn new(max_event_bytes: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            scanned: 0,
            skip_lf: false,
            bom_checked: false,
            data: DataBuf::Empty,
            event: None,
            last_event_id: None,
            retry_ms: None,
            max_event_bytes,
            failed: false,
        }
    }

    /// Appends received bytes. Nothing is parsed until [`Self::next_event`].
    pub fn feed(&mut self, chunk: &[u8]) {
        if !self.failed {
            self.buf.extend_from_slice(chunk);
        }
    }

    /// The next complete event, `Ok(None)` when more input is needed. After an
    /// error the parser keeps returning it.
    pub fn next_event(&mut self) -> Result<Option<SseEvent>, SseError> {
        if self.failed {
            return Err(self.too_large());
        }
        if !self.skip_bom() {
            return Ok(None);
        }
        loop {
            if self.skip_lf && !self.buf.is_empty() {
                self.skip_lf = false;
                if self.buf[0] == b'\n' {
                    self.buf.advance(1);
                }
            }
            let Some(offset) = memchr::memchr2(b'\n', b'\r', &self.buf[self.scanned..]) else {
                self.scanned = self.buf.len();
                if self.scanned > self.line_limit() {
                    return Err(self.fail());
                }
                return Ok(None);
            };
            let end = self.scanned + offset;
            self.scanned = 0;
            if end > self.line_limit() {
                return Err(self.fail());
            }
            let ended_with_cr = self.buf[end] == b'\r';
            let mut line = self.buf.split_to(end + 1);
            line.truncate(end);
            if ended_with_cr {
                match self.buf.first() {
                    Some(b'\n') => self.buf.advance(1),
                    Some(_) => {}
                    None => self.skip_lf = true,
                }
            }
            if line.is_empty() {
                if let Some(event) = self.dispatch() {
                    return Ok(Some(event));
                }
                continue;
            }
            self.process_line(line)?;
        }
    }

    /// The last `id:` seen (it persists across events, as in the spec).
    pub fn last_event_id(&self) -> Option<&str> {
        self.last_event_id.as_deref()
    }

    /// The last valid `retry:` seen, in milliseconds.
    pub fn retry_ms(&self) -> Option<u64> {
        self.retry_ms
    }

    /// Drops a leading byte order mark. Returns false while the first bytes
    /// could still be the start of one (then no line end can be among them).
    fn skip_bom(&mut self) -> bool {
        if self.bom_checked {
            return true;
        }
        if self.buf.len() < BOM.len() && BOM.starts_with(&self.buf) {
            return false;
        }
        if self.buf.starts_with(BOM) {
            self.buf.advance(BOM.len());
        }
        self.bom_checked = true;
        true
    }

    fn process_line(&mut self, line: BytesMut) -> Result<(), SseError> {
        if line[0] == b':' {
            return Ok(());
        }
        let (name_end, value_start) = match memchr::memchr(b':', &line) {
            Some(colon) if line.get(colon + 1) == Some(&b' ') => (colon, colon + 2),
            Some(colon) => (colon, colon + 1),
            None => (line.len(), line.len()),
        };
        match &line[..name_end] {
            b"data" => {
                let value = line.freeze().slice(value_start..);
                // The joined size: existing data, the `\n` separator, this line.
                let separator = usize::from(!matches!(self.data, DataBuf::Empty));
                if self.data.len() + separator + value.len() > self.max_event_bytes {
                    return Err(self.fail());
                }
                self.data.push_line(value);
            }
            b"event" => {
                self.event = Some(String::from_utf8_lossy(&line[value_start..]).into_owned());
            }
            b"id" => {
                let value = &line[value_start..];
                if !value.contains(&0) {
                    self.last_event_id = Some(String::from_utf8_lossy(value).into_owned());
                }
            }
            b"retry" => {
                let value = &line[value_start..];
                if !value.is_empty() && value.iter().all(u8::is_ascii_digit) {
                    // All digits but too large for u64: ignored like any invalid value.
                    self.retry_ms = std::str::from_utf8(value)
                        .ok()
                        .and_then(|text| text.parse().ok());
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn dispatch(&mut self) -> Option<SseEvent> {
        let event = self.event.take();
        let data = self.data.take()?;
        Some(SseEvent { event, data })
    }

    fn line_limit(&self) -> usize {
        self.max_event_bytes.saturating_add(LINE_OVERHEAD)
    }

    fn fail(&mut self) -> SseError {
        self.failed = true;
        self.buf = BytesMut::new();
        self.data = DataBuf::Empty;
        self.too_large()
    }

    fn too_large(&self) -> SseError {
        SseError::EventTooLarge {
            limit: self.max_event_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const CAP: usize = 1024;

    /// A readable rendering of what the parser produced: one string per
    /// event, `type|data` (type `-` when absent), or `error`.
    fn parse_all(chunks: &[&[u8]], cap: usize) -> Vec<String> {
        let mut parser = SseParser::new(cap);
        let mut out = Vec::new();
        for chunk in chunks {
            parser.feed(chunk);
            loop {
                match parser.next_event() {
                    Ok(Some(event)) => out.push(render(&event)),
                    Ok(None) => break,
                    Err(_) => {
                        out.push("error".to_owned());
                        return out;
                    }
                }
            }
        }
        out
    }

    fn render(event: &SseEvent) -> String {
        format!(
            "{}|{}",
            event.event.as_deref().unwrap_or("-"),
            String::from_utf8_lossy(&event.data)
        )
    }

    #[track_caller]
    fn check(input: &str, expected: &[&str]) {
        let whole = parse_all(&[input.as_bytes()], CAP);
        assert_eq!(whole, expected, "input {input:?} in one chunk");
        // Byte by byte is the harshest split; it must not change anything.
        let bytes: Vec<&[u8]> = input.as_bytes().chunks(1).collect();
        assert_eq!(
            parse_all(&bytes, CAP),
            expected,
            "input {input:?} byte by byte"
        );
    }

    #[test]
    fn basic_framing() {
        check("data: hello\n\n", &["-|hello"]);
        check("data:hello\n\n", &["-|hello"]);
        check("data:  two spaces\n\n", &["-| two spaces"]);
        check("data: a\n\ndata: b\n\n", &["-|a", "-|b"]);
        check(
            "data: {\"x\":1}\n\ndata: [DONE]\n\n",
            &["-|{\"x\":1}", "-|[DONE]"],
        );
    }

    #[test]
    fn line_ends() {
        check("data: a\r\n\r\ndata: b\r\n\r\n", &["-|a", "-|b"]);
        check("data: a\r\rdata: b\r\r", &["-|a", "-|b"]);
        check("data: a\r\n\ndata: b\n\r\n", &["-|a", "-|b"]);
        // CR then LF is one line end, so this is one line and no blank line yet.
        check("data: a\r\n", &[]);
    }

    #[test]
    fn multi_line_data_is_joined_with_lf() {
        check("data: a\ndata: b\ndata:\ndata: c\n\n", &["-|a\nb\n\nc"]);
        check("data\n\n", &["-|"]);
        check("data:\n\n", &["-|"]);
    }

    #[test]
    fn comments_and_other_fields() {
        check(": keep-alive\n\n", &[]);
        check(":\n: x\ndata: a\n: y\n\n", &["-|a"]);
        check("event: ping\n\n", &[]);
        check("event: delta\ndata: a\n\ndata: b\n\n", &["delta|a", "-|b"]);
        check("id: 7\nretry: 1000\nfoo: bar\ndata: a\n\n", &["-|a"]);
        check("DATA: a\n\n", &[]);
    }

    #[test]
    fn id_and_retry_are_recorded() {
        let mut parser = SseParser::new(CAP);
        parser.feed(b"id: 42\nretry: 1500\ndata: x\n\nid: a\0b\nretry: 1x\ndata: y\n\n");
        assert!(parser.next_event().unwrap().is_some());
        assert_eq!(parser.last_event_id(), Some("42"));
        assert_eq!(parser.retry_ms(), Some(1500));
        assert!(parser.next_event().unwrap().is_some());
        assert_eq!(parser.last_event_id(), Some("42"));
        assert_eq!(parser.retry_ms(), Some(1500));
    }

    #[test]
    fn byte_order_mark_is_skipped_once() {
        check("\u{feff}data: a\n\n", &["-|a"]);
        check("data: \u{feff}a\n\n", &["-|\u{feff}a"]);
    }

    #[test]
    fn unfinished_event_is_not_dispatched() {
        check("data: a\n", &[]);
        check("data: a", &[]);
        check("data: a\n\ndata: b", &["-|a"]);
    }

    #[test]
    fn cr_split_from_lf_across_chunks() {
        let out = parse_all(&[b"data: a\r", b"\n\r", b"\ndata: b\r", b"\r"], CAP);
        assert_eq!(out, ["-|a", "-|b"]);
    }

    #[test]
    fn event_at_the_cap_passes_whole() {
        let payload = "x".repeat(CAP);
        let out = parse_all(&[format!("data: {payload}\n\n").as_bytes()], CAP);
        assert_eq!(out, [format!("-|{payload}")]);
        // Joined lines count their separators: 2 + 1 + (CAP - 3) = CAP.
        let input = format!("data: ab\ndata: {}\n\n", "y".repeat(CAP - 3));
        assert_eq!(parse_all(&[input.as_bytes()], CAP).len(), 1);
    }

    #[test]
    fn event_over_the_cap_is_an_error() {
        let input = format!("data: {}\n\n", "x".repeat(CAP + 1));
        assert_eq!(parse_all(&[input.as_bytes()], CAP), ["error"]);
        let input = format!("data: ab\ndata: {}\n\n", "y".repeat(CAP - 2));
        assert_eq!(parse_all(&[input.as_bytes()], CAP), ["error"]);
        // A line that never ends is refused as soon as it cannot fit.
        let endless = vec![b'x'; CAP + LINE_OVERHEAD + 1];
        assert_eq!(
            parse_all(&[b"data: a\n\ndata: ", &endless], CAP),
            ["-|a", "error"]
        );
    }

    #[test]
    fn the_error_is_sticky() {
        let mut parser = SseParser::new(4);
        parser.feed(b"data: 12345\n\n");
        let error = SseError::EventTooLarge { limit: 4 };
        assert_eq!(parser.next_event(), Err(error.clone()));
        parser.feed(b"data: 1\n\n");
        assert_eq!(parser.next_event(), Err(error));
    }

    #[test]
    fn single_line_data_is_not_copied() {
        let mut parser = SseParser::new(CAP);
        parser.feed(b"data: 0123456789\n\n");
        let received = parser.buf.as_ptr() as usize;
        let event = parser.next_event().unwrap().unwrap();
        assert_eq!(&event.data[..], b"0123456789");
        // The data is a slice of the receive buffer, right after `data: `.
        assert_eq!(event.data.as_ptr() as usize, received + 6);
    }

    /// One generated event: optional type, data lines, comments before it.
    #[derive(Debug, Clone)]
    struct GenEvent {
        event: Option<String>,
        data: Vec<String>,
        comment: Option<String>,
    }

    fn text() -> impl Strategy<Value = String> {
        // No CR/LF inside values; colons, spaces and non-ASCII are welcome.
        proptest::string::string_regex("[a-zA-Z0-9 :{}\"\\[\\],é€]{0,24}").unwrap()
    }

    fn gen_event() -> impl Strategy<Value = GenEvent> {
        (
            proptest::option::of(proptest::string::string_regex("[a-z]{1,8}").unwrap()),
            proptest::collection::vec(text(), 1..4),
            proptest::option::of(text()),
        )
            .prop_map(|(event, data, comment)| GenEvent {
                event,
                data,
                comment,
            })
    }

    /// Serialises events, choosing each line end from `ends` (0 = LF, 1 = CRLF,
    /// 2 = CR), and returns the input with the expected rendering.
    fn serialise(events: &[GenEvent], ends: &[u8], space: &[bool]) -> (Vec<u8>, Vec<String>) {
        let mut out = Vec::new();
        let mut expected = Vec::new();
        let mut line = 0usize;
        let mut prev_cr = false;
        let mut push_line = |out: &mut Vec<u8>, content: &str| {
            out.extend_from_slice(content.as_bytes());
            let mut end = ends[line % ends.len()];
            line += 1;
            // After a lone CR, an LF would merge with it into one line end and
            // swallow an empty line; the spec reads it that way, so the
            // generator must not write it when the next line is empty.
            if prev_cr && content.is_empty() && end == 0 {
                end = 2;
            }
            out.extend_from_slice(match end {
                0 => b"\n".as_slice(),
                1 => b"\r\n",
                _ => b"\r",
            });
            prev_cr = end == 2;
        };
        for (index, event) in events.iter().enumerate() {
            let sep = if space[index % space.len()] { " " } else { "" };
            if let Some(comment) = &event.comment {
                push_line(&mut out, &format!(":{comment}"));
            }
            if let Some(kind) = &event.event {
                push_line(&mut out, &format!("event:{sep}{kind}"));
            }
            for data in &event.data {
                // Without the optional space, a value starting with a space
                // would lose it, so only drop the space when that is safe.
                let sep = if data.starts_with(' ') { " " } else { sep };
                push_line(&mut out, &format!("data:{sep}{data}"));
            }
            push_line(&mut out, "");
            expected.push(format!(
                "{}|{}",
                event.event.as_deref().unwrap_or("-"),
                event.data.join("\n")
            ));
        }
        (out, expected)
    }

    proptest! {
        #[test]
        fn any_split_gives_the_same_events(
            events in proptest::collection::vec(gen_event(), 0..8),
            ends in proptest::collection::vec(0u8..3, 1..8),
            space in proptest::collection::vec(any::<bool>(), 1..4),
            cuts in proptest::collection::vec(any::<proptest::sample::Index>(), 0..16),
        ) {
            let (input, expected) = serialise(&events, &ends, &space);
            let mut points: Vec<usize> = cuts.iter().map(|cut| cut.index(input.len() + 1)).collect();
            points.sort_unstable();
            points.dedup();
            let mut chunks = Vec::new();
            let mut start = 0;
            for point in points {
                chunks.push(&input[start..point]);
                start = point;
            }
            chunks.push(&input[start..]);
            prop_assert_eq!(parse_all(&[&input], CAP), expected.clone());
            prop_assert_eq!(parse_all(&chunks, CAP), expected);
        }

        #[test]
        fn crlf_split_between_chunks(events in proptest::collection::vec(gen_event(), 1..5)) {
            let (input, expected) = serialise(&events, &[1], &[true]);
            // Cut right after every CR: each CRLF straddles two chunks.
            let chunks: Vec<&[u8]> = input.split_inclusive(|&byte| byte == b'\r').collect();
            prop_assert_eq!(parse_all(&chunks, CAP), expected);
        }
    }
}
