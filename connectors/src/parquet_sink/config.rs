//! Configuration of the Parquet changelog sink.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use sluice_core::transform::TransformConfig;

use crate::files::S3Config;
use crate::ConfigError;

/// `[[sinks]] kind = "parquet"`: every change as a row of Parquet files in a directory,
/// partitioned by table and date, readable by DuckDB, chdb, pyarrow or Spark as they are.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParquetSinkConfig {
    /// Sink name. Required.
    pub name: String,
    /// Where the files go: a directory (made if missing) or an S3 prefix
    /// (`s3://bucket/changes`); one sink per place. Required.
    pub path: PathBuf,
    /// How to reach S3 when `path` is `s3://` (`endpoint`, `region`, `access_key_id`,
    /// `secret_access_key_file`, …; else the AWS_* environment).
    #[serde(default)]
    pub s3: S3Config,
    /// Topics to deliver: names or `*` patterns (`shop.public.*`). Required.
    pub topics: Vec<String>,
    /// The directory of a topic's files under `path`: `{topic}`, `{source}`, `{schema}` and
    /// `{table}` are replaced. Default `"{table}"`.
    #[serde(default = "default_table")]
    pub table: String,
    /// Milliseconds changes may wait before their file is written (each write is one file
    /// per table: fewer writes, fewer small files). Default 60000.
    #[serde(default = "default_roll_interval_ms")]
    pub roll_interval_ms: u64,
    /// Memory of waiting rows that is written without waiting for the interval. Default
    /// 67108864 (64 MiB).
    #[serde(default = "default_roll_bytes")]
    pub roll_bytes: usize,
    /// Topic of the log that receives changes whose values a Parquet column cannot hold,
    /// with the reason in a header. Default none: such a change stops the sink.
    #[serde(default)]
    pub dead_letter_topic: Option<String>,
    /// What happens to changes between the log and the sink, in order (core's `transform`).
    #[serde(default)]
    pub transforms: Vec<TransformConfig>,
}

fn default_table() -> String {
    "{table}".into()
}

fn default_roll_interval_ms() -> u64 {
    60_000
}

fn default_roll_bytes() -> usize {
    64 << 20
}

impl ParquetSinkConfig {
    pub fn roll_interval(&self) -> Duration {
        Duration::from_millis(self.roll_interval_ms)
    }

    pub fn validate(&self, key: &str) -> Result<(), ConfigError> {
        let err = crate::ConfigError::at(key);
        crate::validate_name(key, "sink", &self.name)?;
        if self.path.as_os_str().is_empty() {
            return Err(err("path", "name the directory the files go to".into()));
        }
        if self.topics.is_empty() {
            return Err(err(
                "topics",
                "list at least one topic or pattern, e.g. [\"shop.public.*\"]".into(),
            ));
        }
        if let Some(problem) = crate::names::check_template(&self.table, "a directory") {
            return Err(err("table", problem));
        }
        if self.table.contains('/') || self.table.contains("..") {
            return Err(err(
                "table",
                format!("{:?}: one directory level, without '/' or '..'", self.table),
            ));
        }
        if !(100..=86_400_000).contains(&self.roll_interval_ms) {
            return Err(err(
                "roll_interval_ms",
                "must be between 100 and 86400000 (a day)".into(),
            ));
        }
        if self.roll_bytes < 65_536 {
            return Err(err("roll_bytes", "must be at least 65536".into()));
        }
        Ok(())
    }
}

sink_section!(ParquetSinkConfig, "parquet", |c| {
    let on_s3 = crate::files::is_s3(&c.path.to_string_lossy());
    (!on_s3)
        .then_some(&mut c.path)
        .into_iter()
        .chain(c.s3.paths_mut())
        .collect()
});
