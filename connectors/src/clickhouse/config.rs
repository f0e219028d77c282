//! Configuration of the ClickHouse sink.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use sluice_core::redact::SecretUrl;
use sluice_core::transform::TransformConfig;

pub use crate::tables::Mode;
use crate::ConfigError;

/// `[[sinks]] kind = "clickhouse"`: tables kept in ClickHouse, as their current state
/// (ReplacingMergeTree), as every change (a changelog table), or both.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClickHouseSinkConfig {
    /// Sink name: its rows in the offsets table. Required.
    pub name: String,
    /// The server's HTTP interface, `http://host:8123` or `https://user:password@host:8443`.
    /// Required.
    pub url: SecretUrl,
    /// File whose content (trailing newline trimmed) is the password; overrides one in `url`.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// PEM file of the CA that signed the server's certificate (https). Default: the system's
    /// CA store.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Database of the tables (created if missing). Default `default`.
    #[serde(default = "default_database")]
    pub database: String,
    /// Topics to deliver: names or `*` patterns (`shop.public.*`). Required.
    pub topics: Vec<String>,
    /// The table a topic's rows go to: `{topic}`, `{source}`, `{schema}` and `{table}` are
    /// replaced. Default `"{table}"`.
    #[serde(default = "default_table")]
    pub table: String,
    /// `current` (default): each table's current state; `changelog`: every change as a row;
    /// `both`.
    #[serde(default)]
    pub mode: Mode,
    /// The changelog table of a topic (modes `changelog` and `both`). Default
    /// `"{table}_changes"`.
    #[serde(default = "default_changelog_table")]
    pub changelog_table: String,
    /// Milliseconds rows may wait to be inserted together (ClickHouse wants few, large
    /// inserts: each makes a part to merge). Default 1000.
    #[serde(default = "default_flush_interval_ms")]
    pub flush_interval_ms: u64,
    /// Bytes of rows (RowBinary) that are inserted without waiting for `flush_interval_ms`.
    /// Default 16777216 (16 MiB).
    #[serde(default = "default_batch_bytes")]
    pub batch_bytes: usize,
    /// Table of the sink's offsets, in `database`. Default `_sluice_offsets`.
    #[serde(default = "default_offsets_table")]
    pub offsets_table: String,
    /// Topic of the log that receives rows ClickHouse cannot hold as they are (a date before
    /// 1970 in a `Date` column, a number too large for its column), with the reason in a
    /// header. Default none: such a row stops the sink with that reason.
    #[serde(default)]
    pub dead_letter_topic: Option<String>,
    /// What happens to changes between the log and the sink, in order (core's `transform`).
    #[serde(default)]
    pub transforms: Vec<TransformConfig>,
}

fn default_database() -> String {
    "default".into()
}

fn default_table() -> String {
    "{table}".into()
}

fn default_changelog_table() -> String {
    "{table}_changes".into()
}

fn default_flush_interval_ms() -> u64 {
    1000
}

fn default_batch_bytes() -> usize {
    16 << 20
}

fn default_offsets_table() -> String {
    "_sluice_offsets".into()
}

impl ClickHouseSinkConfig {
    pub fn flush_interval(&self) -> Duration {
        Duration::from_millis(self.flush_interval_ms)
    }

    pub fn validate(&self, key: &str) -> Result<(), ConfigError> {
        let err = crate::ConfigError::at(key);
        crate::validate_name(key, "sink", &self.name)?;
        let url = self.url.expose();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(err(
                "url",
                format!(
                    "{} is not an http:// or https:// URL of ClickHouse's HTTP interface \
                     (port 8123, or 8443 with TLS)",
                    self.url
                ),
            ));
        }
        if self.topics.is_empty() {
            return Err(err(
                "topics",
                "list at least one topic or pattern, e.g. [\"shop.public.*\"]".into(),
            ));
        }
        crate::tables::check_templates(key, self.mode, &self.table, &self.changelog_table)?;
        for (field, name) in [
            ("database", &self.database),
            ("offsets_table", &self.offsets_table),
        ] {
            if name.is_empty() || name.contains('`') {
                return Err(err(
                    field,
                    format!("{name:?} is not a name sluice can quote"),
                ));
            }
        }
        if !(10..=3_600_000).contains(&self.flush_interval_ms) {
            return Err(err(
                "flush_interval_ms",
                "must be between 10 and 3600000 (one hour)".into(),
            ));
        }
        if self.batch_bytes < 4096 {
            return Err(err("batch_bytes", "must be at least 4096".into()));
        }
        Ok(())
    }
}

sink_section!(ClickHouseSinkConfig, "clickhouse", |c| c
    .password_file
    .iter_mut()
    .chain(c.ca_file.iter_mut())
    .collect());
