//! The books of one request: its limiter permits and its usage record.
//!
//! Every authenticated request (chat, text completion, embeddings) ends in exactly one [`UsageRecord`] and
//! settles every permit it took, whichever way it ends: an error before any
//! upstream call, a complete answer, a stream that finishes, breaks, or is
//! dropped because the client went away. [`Books`] is that obligation as a
//! value: it is consumed by one of its `close_*` methods, or, for streams,
//! moved into [`AccountedStream`], whose `Drop` closes it if nothing else did.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_core::Stream;
use serde_json::Value;
use time::OffsetDateTime;

use crate::config::ModelEntry;
use crate::estimate::TokenCounter;
use crate::limits::{LimitName, Permit, RateInfo, Settlement};
use crate::provider::{Chunk, ChunkStream, Completion, ProviderError};
use crate::usage::{
    Outcome, RequestEnd, RequestObserver, Tokens, UsageRecord, UsageSink, UsageSource,
};

/// The permits and the record of one request, until it ends.
pub(crate) struct Books {
    sink: Arc<dyn UsageSink>,
    counter: Arc<dyn TokenCounter>,
    record: UsageRecord,
    started: Instant,
    /// The first admitted permit: it holds the client key's reservation (and
    /// the first entry's, settled apart if that attempt fails).
    key_permit: Option<Permit>,
    /// The permit of a later attempt (failover): model limits only.
    model_permit: Option<Permit>,
    /// The entry of the current attempt, for prices and token counting.
    entry: Option<Arc<ModelEntry>>,
    prompt_estimate: u64,
    attempt_started: Option<Instant>,
    /// Upstream attempts begun so far.
    attempts: u32,
    /// From `started` to the first chunk of a streamed answer.
    first_chunk: Option<Duration>,
    /// Told when the books close, before the sink (the edge's log line).
    observer: Option<Arc<dyn RequestObserver>>,
    /// Set once the permits are settled and the record handed over: the
    /// books close exactly once, by a `close_*` method or by `Drop`.
    closed: bool,
}

impl Books {
    pub(crate) fn new(
        sink: Arc<dyn UsageSink>,
        counter: Arc<dyn TokenCounter>,
        key_id: u64,
        key_name: &str,
        request_id: &str,
        started: Instant,
    ) -> Self {
        Self {
            sink,
            counter,
            record: UsageRecord {
                time: OffsetDateTime::now_utc(),
                request_id: request_id.to_owned(),
                key_id,
                key_name: key_name.to_owned(),
                ..empty_record()
            },
            started,
            key_permit: None,
            model_permit: None,
            entry: None,
            prompt_estimate: 0,
            attempt_started: None,
            attempts: 0,
            first_chunk: None,
            observer: None,
            closed: false,
        }
    }

    /// Tells `observer` how the request ended when the books close.
    pub(crate) fn observe(&mut self, observer: Option<Arc<dyn RequestObserver>>) {
        self.observer = observer;
    }

    pub(crate) fn set_request(&mut self, model: &str, stream: bool) {
        // The ledger keeps the name as asked, bounded like in messages.
        self.record.model = crate::error::shorten(model).into_owned();
        self.record.stream = stream;
    }

    pub(crate) fn has_key_permit(&self) -> bool {
        self.key_permit.is_some()
    }

    /// The tightest limits of the permits held, for the response headers.
    pub(crate) fn rate(&self) -> RateInfo {
        let key = self
            .key_permit
            .as_ref()
            .map(Permit::rate)
            .unwrap_or_default();
        match &self.model_permit {
            Some(model) => key.tightest(model.rate()),
            None => key,
        }
    }

    /// An admitted attempt begins against `entry` with provider key `provider_key`.
    pub(crate) fn begin_attempt(
        &mut self,
        entry: &Arc<ModelEntry>,
        provider_key: Option<usize>,
        permit: Permit,
        prompt_estimate: u64,
    ) {
        if self.key_permit.is_none() {
            self.key_permit = Some(permit);
        } else {
            self.model_permit = Some(permit);
        }
        self.record.entry_index = Some(entry.index);
        self.record.entry_id = Some(entry.id);
        self.record.provider_key_index = provider_key;
        self.entry = Some(Arc::clone(entry));
        self.prompt_estimate = prompt_estimate;
        self.attempts += 1;
        self.attempt_started = Some(Instant::now());
    }

    /// The attempt failed before anything reached the client: the entry's
    /// reservation is settled (its tokens handed back; the upstream did see
    /// the request, so it stays counted).
    pub(crate) fn fail_attempt(&mut self) {
        if let Some(permit) = self.model_permit.take() {
            permit.settle(Settlement::default());
        } else if let Some(permit) = self.key_permit.as_mut() {
            permit.settle_model(Settlement::default());
        }
    }

    /// The upstream answered: its latency is the attempt's so far. For a
    /// stream, whose first chunk has just arrived, that is also the
    /// request's time to first chunk.
    pub(crate) fn upstream_answered(&mut self, stream: bool) {
        self.record.upstream_latency = self.attempt_started.map(|started| started.elapsed());
        if stream {
            self.first_chunk = Some(self.started.elapsed());
        }
    }

    /// The request ends without an answer: nothing used, one record.
    pub(crate) fn close_failure(
        mut self,
        outcome: Outcome,
        error: &dyn std::fmt::Display,
        refused_by: Option<LimitName>,
    ) {
        self.record.outcome = outcome;
        self.record.error = Some(error.to_string());
        self.record.refused_by = refused_by;
        self.finish(Settlement::default());
    }

    /// A complete answer: its `usage` (or an estimate) settles the permits,
    /// and `usage.cost` is added for the client.
    pub(crate) fn close_completion(mut self, completion: &mut Completion) {
        let reported = completion.usage_tokens();
        let tokens = match reported {
            Some(tokens) => {
                self.record.source = UsageSource::Upstream;
                tokens
            }
            None => {
                self.record.source = UsageSource::Estimated;
                let text = completion_text(completion);
                self.estimate(&text)
            }
        };
        let cost = self.cost(&tokens);
        completion.set_usage_cost(cost);
        self.record.tokens = tokens;
        self.record.cost_usd = cost;
        self.finish(Settlement {
            tokens: tokens.total(),
            cost_usd: cost,
        });
    }

    /// Wraps a stream that already reached the client: the books close when
    /// it ends, breaks, or is dropped.
    pub(crate) fn account_stream(self, stream: ChunkStream) -> ChunkStream {
        Box::pin(AccountedStream {
            inner: stream,
            books: Some(self),
            usage: None,
            relayed: String::new(),
        })
    }

    fn estimate(&self, completion_text: &str) -> Tokens {
        let completion = match &self.entry {
            Some(entry) => self.counter.count(entry, completion_text),
            None => 0,
        };
        Tokens {
            prompt: self.prompt_estimate,
            completion,
            cached: 0,
            reasoning: 0,
        }
    }

    fn cost(&self, tokens: &Tokens) -> f64 {
        self.entry.as_ref().map_or(0.0, |entry| tokens.cost(entry))
    }

    fn finish(mut self, used: Settlement) {
        self.settle_and_record(used);
    }

    /// Settles the permits and hands the record over, once.
    fn settle_and_record(&mut self, used: Settlement) {
        if self.closed {
            return;
        }
        self.closed = true;
        if let Some(permit) = self.model_permit.take() {
            permit.settle(used);
        }
        if let Some(permit) = self.key_permit.take() {
            permit.settle(used);
        }
        self.record.latency = self.started.elapsed();
        let record = std::mem::replace(&mut self.record, empty_record());
        if let Some(observer) = self.observer.take() {
            observer.ended(&RequestEnd {
                record: &record,
                attempts: self.attempts,
                time_to_first_chunk: self.first_chunk,
            });
        }
        self.sink.record(record);
    }
}

impl Drop for Books {
    /// Books dropped open: the request's future was dropped before it ended —
    /// the client went away (or the server cut it off at shutdown) while the
    /// engine was still waiting for an upstream. The upstream of an attempt in
    /// flight did see the prompt, so that is what is charged.
    fn drop(&mut self) {
        if self.closed {
            return;
        }
        self.record.outcome = Outcome::ClientGone;
        self.record.error = Some("the client went away before the answer began".to_owned());
        let tokens = if self.attempt_started.is_some() {
            self.record.source = UsageSource::Estimated;
            Tokens {
                prompt: self.prompt_estimate,
                ..Tokens::default()
            }
        } else {
            Tokens::default()
        };
        let cost = self.cost(&tokens);
        self.record.tokens = tokens;
        self.record.cost_usd = cost;
        self.settle_and_record(Settlement {
            tokens: tokens.total(),
            cost_usd: cost,
        });
    }
}

/// A record with nothing in it yet.
fn empty_record() -> UsageRecord {
    UsageRecord {
        time: OffsetDateTime::UNIX_EPOCH,
        request_id: String::new(),
        key_id: 0,
        key_name: String::new(),
        model: String::new(),
        entry_index: None,
        entry_id: None,
        provider_key_index: None,
        tokens: Tokens::default(),
        cost_usd: 0.0,
        outcome: Outcome::Ok,
        error: None,
        latency: Duration::ZERO,
        upstream_latency: None,
        refused_by: None,
        source: UsageSource::None,
        stream: false,
    }
}

/// The text of every choice of a complete answer: a chat message's content
/// and reasoning, or a text completion's `text`. (Embeddings have no
/// choices: only their prompt is estimated.)
fn completion_text(completion: &Completion) -> String {
    let mut text = String::new();
    let choices = completion.get("choices");
    for choice in choices
        .as_deref()
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        push_choice_text(&mut text, choice, "message");
    }
    text
}

/// Appends what one choice carries: under `holder` (`message` or `delta`)
/// for chat, else its `text` (a text completion).
fn push_choice_text(text: &mut String, choice: &Value, holder: &str) {
    match choice.get(holder) {
        Some(message) => {
            for key in ["content", "reasoning_content"] {
                if let Some(part) = message.get(key).and_then(Value::as_str) {
                    text.push_str(part);
                }
            }
        }
        None => {
            if let Some(part) = choice.get("text").and_then(Value::as_str) {
                text.push_str(part);
            }
        }
    }
}

/// A relayed stream that keeps the books: it reads each chunk's usage, adds
/// `usage.cost`, remembers the relayed text for an estimate, and closes the
/// books exactly once.
struct AccountedStream {
    inner: ChunkStream,
    /// `None` once closed.
    books: Option<Books>,
    /// The upstream's usage, when a chunk carried it.
    usage: Option<Tokens>,
    /// What was relayed, to estimate the completion when no usage arrives.
    relayed: String,
}

impl AccountedStream {
    fn observe(&mut self, chunk: &mut Chunk) {
        if let Some(tokens) = chunk.0.get("usage").and_then(Tokens::from_usage) {
            if let Some(books) = &self.books {
                let cost = books.cost(&tokens);
                if let Some(usage) = chunk.0.get_mut("usage").and_then(Value::as_object_mut) {
                    usage.insert("cost".to_owned(), Value::from(cost));
                }
            }
            self.usage = Some(tokens);
        }
        if self.usage.is_none() {
            for choice in chunk
                .0
                .get("choices")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                push_choice_text(&mut self.relayed, choice, "delta");
            }
        }
    }

    fn close(&mut self, outcome: Outcome, error: Option<&ProviderError>) {
        let Some(mut books) = self.books.take() else {
            return;
        };
        let tokens = match self.usage {
            Some(tokens) => {
                books.record.source = UsageSource::Upstream;
                tokens
            }
            None => {
                books.record.source = UsageSource::Estimated;
                books.estimate(&std::mem::take(&mut self.relayed))
            }
        };
        let cost = books.cost(&tokens);
        books.record.tokens = tokens;
        books.record.cost_usd = cost;
        books.record.outcome = outcome;
        books.record.error = error.map(ToString::to_string);
        books.finish(Settlement {
            tokens: tokens.total(),
            cost_usd: cost,
        });
    }
}

impl Stream for AccountedStream {
    type Item = Result<Chunk, ProviderError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.books.is_none() {
            return Poll::Ready(None);
        }
        match this.inner.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(mut chunk))) => {
                this.observe(&mut chunk);
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(error))) => {
                this.close(Outcome::StreamFailed, Some(&error));
                Poll::Ready(Some(Err(error)))
            }
            Poll::Ready(None) => {
                this.close(Outcome::Ok, None);
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for AccountedStream {
    fn drop(&mut self) {
        // Still open: the client went away (or the server cut the stream at
        // shutdown) before the end.
        self.close(Outcome::ClientGone, None);
    }
}
