//! The HTTP sink (`kind = "http"`): changes POSTed in batches to a URL, one request at a time,
//! so events reach the receiver in log order (per key: source commit order).
//!
//! - Delivered means a 2xx answer; the runtime then commits the batch's offsets.
//! - 408, 429, 5xx and unreachable endpoints are retried with jittered backoff (honouring
//!   `Retry-After`) for `retry_ms`; then the sink reopens and sends again from its committed
//!   offsets, for as long as the endpoint stays down. Nothing is lost, and a receiver that
//!   de-duplicates on each event's `id` sees every change once.
//! - Another 4xx refuses the request: the batch is split in halves until the refused events
//!   are alone, and those go to the dead-letter topic with the endpoint's answer (without
//!   one, the sink stops with that answer).
//! - `X-Sluice-Signature: sha256=<hex>` (HMAC-SHA256 of the body, with `signing_secret_file`)
//!   lets the receiver check who sent it; `Idempotency-Key` names the request's first event
//!   and its count, the same on every retry of that request.
//!
//! Event shape: `http_sink/body.rs`.

pub mod config;

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::header::{
    HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER,
};
use sluice_core::pipeline::TypedSink;
use sluice_core::retry::{Backoff, Classify, ErrorKind};
use sluice_core::sink::{
    ChangeBatch, ChangeSink, DeadLetter, DeadLetterError, DeadLetterWriter, Offsets,
};
use sluice_schema_registry::changes::RecordDecoder;
use sluice_schema_registry::registry::Registry;

pub use config::{BodyFormat, HttpSinkConfig};

/// Metric names.
pub mod metric {
    /// Requests answered, by `status` (the HTTP status, or `unreachable`).
    pub const REQUESTS: &str = "sluice_http_sink_requests_total";
    /// Events delivered (2xx).
    pub const EVENTS: &str = "sluice_http_sink_events_total";
    /// Events the endpoint refused, put in the dead-letter topic.
    pub const REFUSED: &str = "sluice_http_sink_refused_events_total";
    /// Seconds per request, answer included (histogram).
    pub const REQUEST_SECONDS: &str = "sluice_http_sink_request_seconds";
}

/// Why the HTTP sink stopped or will retry.
#[derive(Debug, thiserror::Error)]
pub enum HttpSinkError {
    #[error("{0}")]
    Config(String),
    /// Retried for `retry_ms` without a 2xx: the sink reopens and sends again.
    #[error("{url} still failing after {seconds} s of retries: {last}")]
    Unavailable {
        url: String,
        seconds: u64,
        last: String,
    },
    #[error(
        "{url} refused event {id} with {status}: {answer}; set dead_letter_topic on the sink \
         to divert such events and go on"
    )]
    Refused {
        url: String,
        id: String,
        status: u16,
        answer: String,
    },
    #[error("{0}")]
    DeadLetter(DeadLetterError),
}

impl Classify for HttpSinkError {
    fn kind(&self) -> ErrorKind {
        match self {
            HttpSinkError::Unavailable { .. } => ErrorKind::Transient,
            HttpSinkError::DeadLetter(err) => err.kind(),
            HttpSinkError::Config(_) | HttpSinkError::Refused { .. } => ErrorKind::Definite,
        }
    }
}

pub type HttpSinkRuntime = TypedSink<HttpSink, RecordDecoder>;

/// The HTTP sink as the runtime runs it.
pub fn http_sink(
    config: HttpSinkConfig,
    registry: Arc<Registry>,
    dead_letters: Option<DeadLetterWriter>,
) -> HttpSinkRuntime {
    let sink = HttpSink {
        config,
        dead_letters,
        endpoint: None,
        events: crate::events::Events::default(),
    };
    TypedSink::new(sink, RecordDecoder::new(registry), false)
}

pub struct HttpSink {
    config: HttpSinkConfig,
    dead_letters: Option<DeadLetterWriter>,
    endpoint: Option<Endpoint>,
    events: crate::events::Events,
}

/// The client and what every request carries.
struct Endpoint {
    client: reqwest::Client,
    /// The URL without credentials (they went into `headers`).
    url: String,
    headers: HeaderMap,
    secret: Option<Vec<u8>>,
}

/// One request's answer, after retries.
enum Answer {
    Delivered,
    Refused { status: u16, answer: String },
}

impl HttpSink {
    fn connect(&self) -> Result<Endpoint, HttpSinkError> {
        let c = &self.config;
        let config = |reason: String| HttpSinkError::Config(format!("sink {}: {reason}", c.name));
        let (url, basic) = crate::http::without_credentials(&c.url, None)
            .map_err(|e| config(format!("url {}: {e}", c.url)))?;
        let mut headers = HeaderMap::new();
        if let Some(basic) = basic {
            headers.insert(AUTHORIZATION, basic);
        }
        if let Some(path) = &c.bearer_token_file {
            let token = crate::http::read_secret(path)
                .map_err(|e| config(format!("bearer_token_file {e}")))?;
            headers.insert(AUTHORIZATION, sensitive(&format!("Bearer {token}"))?);
        }
        for (name, value) in &c.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| config(format!("headers: {name:?} is not a header name")))?;
            let value = HeaderValue::from_str(value).map_err(|_| {
                config(format!(
                    "headers.{name}: the value holds characters a header cannot"
                ))
            })?;
            headers.insert(name, value);
        }
        let secret = match (&c.signing_secret_file, &c.signing_secret_env) {
            (Some(path), _) => Some(
                crate::http::read_secret(path)
                    .map_err(|e| config(format!("signing_secret_file {e}")))?,
            ),
            (None, Some(var)) => Some(std::env::var(var).map_err(|_| {
                config(format!(
                    "signing_secret_env: the environment variable {var} is not set"
                ))
            })?),
            (None, None) => None,
        };
        let client = crate::http::client(c.ca_file.as_deref()).map_err(&config)?;
        Ok(Endpoint {
            client,
            url: url.to_string(),
            headers,
            secret: secret.map(String::into_bytes),
        })
    }

    /// Delivers events `range` of `events` (each a JSON text and its record), splitting
    /// refused requests until the refused events are alone.
    async fn deliver(
        &mut self,
        events: &[(Vec<u8>, usize)],
        records: &[sluice_core::sink::SinkRecord],
    ) -> Result<(), HttpSinkError> {
        let mut todo: VecDeque<Range<usize>> = self.requests(events).into();
        while let Some(range) = todo.pop_front() {
            let endpoint = self.endpoint.as_ref().expect("opened before writes");
            let first = &records[events[range.start].1];
            let first_id = format!(
                "{}:{}:{}",
                first.topic, first.partition, first.record.offset
            );
            match post(endpoint, &self.config, &events[range.clone()], &first_id).await? {
                Answer::Delivered => {
                    ::metrics::counter!(metric::EVENTS, "sink" => self.config.name.clone())
                        .increment(range.len() as u64);
                }
                Answer::Refused { status, answer } if range.len() > 1 => {
                    tracing::info!(status, %answer, events = range.len(), "the endpoint refused a batch; sending it in halves to find the events it refuses");
                    let middle = range.start + range.len() / 2;
                    todo.push_front(middle..range.end);
                    todo.push_front(range.start..middle);
                }
                Answer::Refused { status, answer } => {
                    let (record, id) = (first, first_id);
                    let Some(writer) = &self.dead_letters else {
                        return Err(HttpSinkError::Refused {
                            url: endpoint.url.clone(),
                            id,
                            status,
                            answer,
                        });
                    };
                    tracing::warn!(event = %id, status, %answer, "the endpoint refused an event; it goes to the dead-letter topic");
                    ::metrics::counter!(metric::REFUSED, "sink" => self.config.name.clone())
                        .increment(1);
                    let letter = DeadLetter {
                        record: record.clone(),
                        error: format!("{} answered {status}: {answer}", endpoint.url),
                    };
                    writer(vec![letter])
                        .await
                        .map_err(HttpSinkError::DeadLetter)?;
                }
            }
        }
        Ok(())
    }

    /// The events cut into requests of at most `batch_events` and about `batch_bytes`.
    fn requests(&self, events: &[(Vec<u8>, usize)]) -> Vec<Range<usize>> {
        let mut out = Vec::new();
        let (mut start, mut bytes) = (0, 0);
        for (i, (json, _)) in events.iter().enumerate() {
            if i > start
                && (i - start >= self.config.batch_events
                    || bytes + json.len() > self.config.batch_bytes)
            {
                out.push(start..i);
                (start, bytes) = (i, 0);
            }
            bytes += json.len() + 1;
        }
        if start < events.len() {
            out.push(start..events.len());
        }
        out
    }
}

fn sensitive(text: &str) -> Result<HeaderValue, HttpSinkError> {
    let mut value = HeaderValue::from_str(text).map_err(|_| {
        HttpSinkError::Config("a credential holds characters a header cannot".into())
    })?;
    value.set_sensitive(true);
    Ok(value)
}

/// POSTs `events` as one request, retrying what may pass by waiting for `retry_ms`.
async fn post(
    endpoint: &Endpoint,
    config: &HttpSinkConfig,
    events: &[(Vec<u8>, usize)],
    first_id: &str,
) -> Result<Answer, HttpSinkError> {
    let body = Bytes::from(join(events, config.format));
    let mut headers = endpoint.headers.clone();
    let content_type = match config.format {
        BodyFormat::Array => "application/json",
        BodyFormat::Lines => "application/x-ndjson",
    };
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    // The same for every retry of this request: its first event and how many follow.
    if let Ok(key) = HeaderValue::from_str(&format!("{first_id}+{}", events.len())) {
        headers.insert(HeaderName::from_static("idempotency-key"), key);
    }
    if let Some(secret) = &endpoint.secret {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
        let tag = ring::hmac::sign(&key, &body);
        let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        headers.insert(
            HeaderName::from_static("x-sluice-signature"),
            HeaderValue::from_str(&format!("sha256={hex}")).expect("hex is a header value"),
        );
    }
    let started = Instant::now();
    let mut backoff = Backoff::new();
    loop {
        let sent = Instant::now();
        let result = endpoint
            .client
            .post(&endpoint.url)
            .timeout(config.timeout())
            .headers(headers.clone())
            .body(body.clone())
            .send()
            .await;
        let (last, wait) = match result {
            Ok(response) => {
                let status = response.status().as_u16();
                ::metrics::counter!(metric::REQUESTS, "sink" => config.name.clone(), "status" => status.to_string()).increment(1);
                ::metrics::histogram!(metric::REQUEST_SECONDS, "sink" => config.name.clone())
                    .record(sent.elapsed().as_secs_f64());
                let retry_after = response
                    .headers()
                    .get(RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(|s| Duration::from_secs(s.min(300)));
                let answer = response
                    .bytes()
                    .await
                    .map(|b| crate::http::shorten(&b))
                    .unwrap_or_default();
                if (200..300).contains(&status) {
                    return Ok(Answer::Delivered);
                }
                if !crate::http::retried_status(status) {
                    return Ok(Answer::Refused { status, answer });
                }
                (format!("{status}: {answer}"), retry_after)
            }
            Err(err) => {
                ::metrics::counter!(metric::REQUESTS, "sink" => config.name.clone(), "status" => "unreachable").increment(1);
                (crate::http::error_chain(&err), None)
            }
        };
        let delay = wait.unwrap_or_default().max(backoff.next_delay());
        if started.elapsed() + delay > config.retry_for() {
            return Err(HttpSinkError::Unavailable {
                url: endpoint.url.clone(),
                seconds: started.elapsed().as_secs(),
                last,
            });
        }
        tracing::warn!(url = %endpoint.url, error = %last, retry_in_ms = delay.as_millis() as u64, "HTTP sink request failed; retrying");
        tokio::time::sleep(delay).await;
    }
}

/// The request body: a JSON array, or one event per line.
fn join(events: &[(Vec<u8>, usize)], format: BodyFormat) -> Vec<u8> {
    let mut out = Vec::with_capacity(events.iter().map(|(e, _)| e.len() + 1).sum::<usize>() + 2);
    if format == BodyFormat::Array {
        out.push(b'[');
    }
    for (i, (event, _)) in events.iter().enumerate() {
        if i > 0 && format == BodyFormat::Array {
            out.push(b',');
        }
        out.extend_from_slice(event);
        if format == BodyFormat::Lines {
            out.push(b'\n');
        }
    }
    if format == BodyFormat::Array {
        out.push(b']');
    }
    out
}

impl ChangeSink for HttpSink {
    type Error = HttpSinkError;

    async fn open(&mut self) -> Result<Option<Offsets>, HttpSinkError> {
        if self.endpoint.is_none() {
            self.endpoint = Some(self.connect()?);
        }
        // Offsets live in the log's consumer group: delivery is at least once, and each
        // event's id lets the receiver drop what it already has.
        Ok(None)
    }

    async fn write(&mut self, batch: ChangeBatch<'_>) -> Result<(), HttpSinkError> {
        let mut events = Vec::with_capacity(batch.changes.len());
        for sourced in &batch.changes {
            let mut json = Vec::with_capacity(256);
            if self
                .events
                .write(&mut json, sourced, &batch.records[sourced.record])
            {
                events.push((json, sourced.record));
            }
        }
        if events.is_empty() {
            return Ok(());
        }
        self.deliver(&events, batch.records).await
    }

    async fn close(&mut self) -> Result<(), HttpSinkError> {
        Ok(())
    }
}

/// `check --connect`: the endpoint answers (any status: a webhook may refuse an empty POST).
pub async fn probe(config: &HttpSinkConfig) -> Result<String, HttpSinkError> {
    let sink = HttpSink {
        config: config.clone(),
        dead_letters: None,
        endpoint: None,
        events: crate::events::Events::default(),
    };
    let endpoint = sink.connect()?;
    let answer = endpoint
        .client
        .head(&endpoint.url)
        .timeout(config.timeout())
        .headers(endpoint.headers.clone())
        .send()
        .await
        .map_err(|e| HttpSinkError::Unavailable {
            url: endpoint.url.clone(),
            seconds: 0,
            last: crate::http::error_chain(&e),
        })?;
    Ok(format!(
        "{} answers ({})",
        endpoint.url,
        answer.status().as_u16()
    ))
}
