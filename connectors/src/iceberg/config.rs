//! Configuration of the Iceberg sink.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use sluice_core::redact::SecretUrl;
use sluice_core::transform::TransformConfig;

use crate::files::S3Config;
pub use crate::tables::Mode;
use crate::ConfigError;

/// `[[sinks]] kind = "iceberg"`: tables in an Apache Iceberg REST catalog, as their current
/// state (updates and deletes as position deletes), as every change (a changelog table), or
/// both.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IcebergSinkConfig {
    /// Sink name: the key of its offsets in each snapshot's summary. Required.
    pub name: String,
    /// The REST catalog, `http://host:8181` (the part before `/v1`). Required.
    pub catalog_url: SecretUrl,
    /// File whose content (trailing newline trimmed) is a bearer token for the catalog.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// PEM file of the CA that signed the catalog's certificate (https).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// The warehouse to ask the catalog's config for (catalogs that serve several).
    #[serde(default)]
    pub warehouse: Option<String>,
    /// Where tables the sink creates keep their files: `s3://bucket/prefix` or a directory,
    /// each table under `<location>/<namespace>/<table>`. Default: where the catalog's
    /// warehouse puts them.
    #[serde(default)]
    pub location: Option<String>,
    /// How to reach S3 for tables whose files are there (`endpoint`, `region`,
    /// `access_key_id`, `secret_access_key_file`, …); credentials a catalog vends win.
    #[serde(default)]
    pub s3: S3Config,
    /// Namespace of the tables (created if missing). Default `sluice`.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// Topics to deliver: names or `*` patterns (`shop.public.*`). Required.
    pub topics: Vec<String>,
    /// The table a topic's rows go to: `{topic}`, `{source}`, `{schema}` and `{table}` are
    /// replaced. Default `"{table}"`.
    #[serde(default = "default_table")]
    pub table: String,
    /// `current` (default), `changelog` or `both`. Tables without a key keep a changelog
    /// table whatever the mode.
    #[serde(default)]
    pub mode: Mode,
    /// The changelog table of a topic. Default `"{table}_changes"`.
    #[serde(default = "default_changelog_table")]
    pub changelog_table: String,
    /// Milliseconds changes may wait before they are committed (each commit is a snapshot
    /// with its own files: fewer commits, fewer small files). Default 60000.
    #[serde(default = "default_commit_interval_ms")]
    pub commit_interval_ms: u64,
    /// Memory of waiting rows that is committed without waiting for the interval (what
    /// bounds the sink's memory, with the index of each table's keys). Default 67108864
    /// (64 MiB).
    #[serde(default = "default_commit_bytes")]
    pub commit_bytes: usize,
    /// The size data files are cut at (of rows in memory, before encoding and compression,
    /// which make files several times smaller). Default 268435456 (256 MiB).
    #[serde(default = "default_target_file_bytes")]
    pub target_file_bytes: usize,
    /// Snapshots each table keeps (for time travel and readers mid-scan); older ones are
    /// expired after a commit, and the manifest lists sluice wrote for them removed, so the
    /// table's metadata does not grow with every commit. Default 100.
    #[serde(default = "default_keep_snapshots")]
    pub keep_snapshots: usize,
    /// Topic of the log that receives rows the table cannot hold (a value out of its
    /// column's range), with the reason in a header. Default none: such a row stops the sink.
    #[serde(default)]
    pub dead_letter_topic: Option<String>,
    /// What happens to changes between the log and the sink, in order (core's `transform`).
    #[serde(default)]
    pub transforms: Vec<TransformConfig>,
}

fn default_namespace() -> String {
    "sluice".into()
}

fn default_table() -> String {
    "{table}".into()
}

fn default_changelog_table() -> String {
    "{table}_changes".into()
}

fn default_commit_interval_ms() -> u64 {
    60_000
}

fn default_commit_bytes() -> usize {
    64 << 20
}

fn default_keep_snapshots() -> usize {
    100
}

fn default_target_file_bytes() -> usize {
    256 << 20
}

impl IcebergSinkConfig {
    pub fn commit_interval(&self) -> Duration {
        Duration::from_millis(self.commit_interval_ms)
    }

    pub fn validate(&self, key: &str) -> Result<(), ConfigError> {
        let err = crate::ConfigError::at(key);
        crate::validate_name(key, "sink", &self.name)?;
        let url = self.catalog_url.expose();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(err(
                "catalog_url",
                format!(
                    "{} is not an http:// or https:// URL of an Iceberg REST catalog",
                    self.catalog_url
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
        if self.namespace.is_empty() || self.namespace.contains('.') {
            return Err(err(
                "namespace",
                format!(
                    "{:?}: name one namespace level, e.g. \"sluice\"",
                    self.namespace
                ),
            ));
        }
        if !(100..=86_400_000).contains(&self.commit_interval_ms) {
            return Err(err(
                "commit_interval_ms",
                "must be between 100 and 86400000 (a day)".into(),
            ));
        }
        if let Some(location) = &self.location {
            let local = location.starts_with('/') || location.starts_with("file:");
            if !(local || crate::files::is_s3(location)) {
                return Err(err(
                    "location",
                    format!(
                        "{location:?}: give an S3 prefix (s3://bucket/warehouse) or an absolute \
                         directory (/var/lib/warehouse)"
                    ),
                ));
            }
        }
        if self.keep_snapshots < 1 {
            return Err(err("keep_snapshots", "must be at least 1".into()));
        }
        for (field, bytes) in [
            ("commit_bytes", self.commit_bytes),
            ("target_file_bytes", self.target_file_bytes),
        ] {
            if bytes < 65_536 {
                return Err(err(field, "must be at least 65536".into()));
            }
        }
        Ok(())
    }
}

sink_section!(IcebergSinkConfig, "iceberg", |c| c
    .token_file
    .iter_mut()
    .chain(c.ca_file.iter_mut())
    .chain(c.s3.paths_mut())
    .collect());
