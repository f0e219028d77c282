//! Configuration of the HTTP sink.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use sluice_core::redact::SecretUrl;
use sluice_core::transform::TransformConfig;

use crate::ConfigError;

/// `[[sinks]] kind = "http"`: changes POSTed in batches to a URL (a webhook, a service).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSinkConfig {
    /// Sink name. Required.
    pub name: String,
    /// Where batches are POSTed: `https://service.internal/events` (user and password in the
    /// URL are sent as basic auth). Required.
    pub url: SecretUrl,
    /// Topics to deliver: names or `*` patterns. Required.
    pub topics: Vec<String>,
    /// `array` (default): a batch is a JSON array of events (`application/json`); `lines`:
    /// one event per line (`application/x-ndjson`).
    #[serde(default)]
    pub format: BodyFormat,
    /// The most events per request. Default 500.
    #[serde(default = "default_batch_events")]
    pub batch_events: usize,
    /// The most bytes per request (a single larger event goes alone). Default 1048576.
    #[serde(default = "default_batch_bytes")]
    pub batch_bytes: usize,
    /// Headers sent with every request (`{ "X-Team" = "orders" }`).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// File holding a bearer token (`Authorization: Bearer …`; a trailing newline is not part
    /// of it).
    #[serde(default)]
    pub bearer_token_file: Option<PathBuf>,
    /// File holding the secret of the `X-Sluice-Signature: sha256=<hex>` header, an
    /// HMAC-SHA256 of the body the receiver checks (as GitHub's webhooks). Default: unsigned.
    #[serde(default)]
    pub signing_secret_file: Option<PathBuf>,
    /// …or the environment variable holding it.
    #[serde(default)]
    pub signing_secret_env: Option<String>,
    /// PEM file of the CA that signed the server's certificate (https). Default: the system's
    /// CA store.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Milliseconds a request may take. Default 30000.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Milliseconds a batch is retried (429, 408, 5xx, no connection; jittered backoff,
    /// `Retry-After` honoured) before the sink reopens and sends again from its committed
    /// offsets, which it does for as long as the endpoint stays down. Default 60000.
    #[serde(default = "default_retry_ms")]
    pub retry_ms: u64,
    /// Log topic for events the endpoint refuses with another 4xx (with its answer in a
    /// header). Default none: such an event stops the sink with the endpoint's answer.
    #[serde(default)]
    pub dead_letter_topic: Option<String>,
    /// What happens to changes between the log and the sink, in order (core's `transform`);
    /// `unwrap` sends rows instead of envelopes, `outbox` sends the outbox payload.
    #[serde(default)]
    pub transforms: Vec<TransformConfig>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BodyFormat {
    #[default]
    Array,
    Lines,
}

fn default_batch_events() -> usize {
    500
}

fn default_batch_bytes() -> usize {
    1 << 20
}

fn default_timeout_ms() -> u64 {
    30_000
}

fn default_retry_ms() -> u64 {
    60_000
}

impl HttpSinkConfig {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    pub fn retry_for(&self) -> Duration {
        Duration::from_millis(self.retry_ms)
    }

    pub fn validate(&self, key: &str) -> Result<(), ConfigError> {
        let err = crate::ConfigError::at(key);
        crate::validate_name(key, "sink", &self.name)?;
        let url = self.url.expose();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(err(
                "url",
                format!("{} is not an http:// or https:// URL", self.url),
            ));
        }
        if self.topics.is_empty() {
            return Err(err(
                "topics",
                "list at least one topic or pattern, e.g. [\"shop.public.*\"]".into(),
            ));
        }
        if !(1..=100_000).contains(&self.batch_events) {
            return Err(err("batch_events", "must be between 1 and 100000".into()));
        }
        if !(1024..=(256 << 20)).contains(&self.batch_bytes) {
            return Err(err(
                "batch_bytes",
                "must be between 1024 and 268435456 (256 MiB)".into(),
            ));
        }
        if !(100..=3_600_000).contains(&self.timeout_ms) {
            return Err(err(
                "timeout_ms",
                "must be between 100 and 3600000 (one hour)".into(),
            ));
        }
        if self.retry_ms > 86_400_000 {
            return Err(err("retry_ms", "must be at most 86400000 (a day)".into()));
        }
        if self.signing_secret_file.is_some() && self.signing_secret_env.is_some() {
            return Err(err(
                "signing_secret_env",
                "give signing_secret_file or signing_secret_env, not both".into(),
            ));
        }
        for name in self.headers.keys() {
            if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(err("headers", format!("{name:?} is not a header name")));
            }
        }
        Ok(())
    }
}

sink_section!(HttpSinkConfig, "http", |c| c
    .bearer_token_file
    .iter_mut()
    .chain(c.signing_secret_file.iter_mut())
    .chain(c.ca_file.iter_mut())
    .collect());
