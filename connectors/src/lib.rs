//! sluice-connectors: one module per external system, each behind a Cargo feature.
//!
//! - `postgres`: the Postgres source (logical replication, pgoutput) and sink;
//! - `mysql`: the MySQL/MariaDB source (row binlog) and sink;
//! - `replica`: what the database sinks share (decoding, planning, pipelining);
//! - `jsonl`: the JSON-lines file sink;
//! - `kafka`: the Kafka source and sink (rdkafka);
//! - `search`: the search index sinks, OpenSearch/Elasticsearch (`opensearch`) and Typesense
//!   (`typesense`), over HTTP;
//! - `clickhouse`: the ClickHouse sink (current-state and changelog tables), over HTTP;
//! - `iceberg`: the Apache Iceberg sink (REST catalog, Parquet files, row-level deletes);
//! - `parquet_sink`: every change as a row of Parquet files in a directory (`parquet`);
//! - `http_sink`: changes POSTed in batches to a URL (`http_sink`, kind `http`);
//! - `convert`: value conversions the typed-column sinks share;
//! - `files`: where the file sinks keep files (a directory or S3);
//! - `http`: the HTTP client those sinks share; `names`: destination names from templates;
//! - `incremental`: the queue of on-demand snapshots both database sources keep.
//!
//! [`SourceConfig`] and [`SinkConfig`] are the tagged enums of the config file's `[[sources]]`
//! and `[[sinks]]`; the binary maps each variant to its constructor in one `match`.

/// [`Section`] for a sink's config: its `kind`, the files its own fields name (`|c| …` collects
/// them; the transforms' files are added), and what every sink's config has (`name`, `topics`,
/// `dead_letter_topic`, `transforms`, an inherent `validate`).
macro_rules! sink_section {
    ($config:ty, $kind:literal, |$c:ident| $own_paths:expr) => {
        impl crate::Section for $config {
            fn kind(&self) -> &'static str {
                $kind
            }

            fn name(&self) -> &str {
                &self.name
            }

            fn validate(&self, key: &str) -> Result<(), crate::ConfigError> {
                <$config>::validate(self, key)
            }

            fn paths_mut(&mut self) -> Vec<&mut std::path::PathBuf> {
                let $c = self;
                let mut paths: Vec<&mut std::path::PathBuf> = $own_paths;
                paths.extend(
                    $c.transforms
                        .iter_mut()
                        .flat_map(sluice_core::transform::TransformConfig::paths_mut),
                );
                paths
            }

            fn topics(&self) -> &[String] {
                &self.topics
            }

            fn dead_letter_topic(&self) -> Option<&str> {
                self.dead_letter_topic.as_deref()
            }

            fn transforms(&self) -> &[sluice_core::transform::TransformConfig] {
                &self.transforms
            }
        }
    };
}

#[cfg(feature = "clickhouse")]
pub mod clickhouse;
#[cfg(any(feature = "clickhouse", feature = "iceberg"))]
pub mod convert;
#[cfg(feature = "events")]
pub mod events;
#[cfg(feature = "files")]
pub mod files;
#[cfg(feature = "http")]
pub mod http;
#[cfg(feature = "http_sink")]
pub mod http_sink;
#[cfg(feature = "iceberg")]
pub mod iceberg;
#[cfg(any(feature = "postgres", feature = "mysql"))]
mod incremental;
#[cfg(feature = "jsonl")]
pub mod jsonl;
#[cfg(feature = "kafka")]
pub mod kafka;
#[cfg(feature = "mysql")]
pub mod mysql;
pub mod names;
#[cfg(feature = "parquet")]
pub mod parquet_sink;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(any(
    feature = "postgres",
    feature = "mysql",
    feature = "search",
    feature = "clickhouse",
    feature = "iceberg"
))]
pub mod replica;
#[cfg(feature = "events")]
pub mod reshape;
#[cfg(feature = "search")]
pub mod search;
#[cfg(any(feature = "clickhouse", feature = "iceberg"))]
pub mod tables;
#[cfg(any(feature = "postgres", feature = "mysql"))]
pub mod tls;

use serde::Deserialize;

/// A config value that failed validation: where it is (`sources[0].url`) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl ConfigError {
    /// The errors of the fields of the section at `key`: `at(key)("url", why)` is the error of
    /// `<key>.url`.
    pub fn at(key: &str) -> impl Fn(&str, String) -> ConfigError + '_ {
        move |field, message| ConfigError {
            key: format!("{key}.{field}"),
            message,
        }
    }
}

sluice_core::reason_error!(
    /// A connection URL (or the password file beside it) that cannot be used as given.
    pub UrlError
);

/// Checks a source or sink name (`key.name` in messages): letters, digits, `_` and `-`.
pub fn validate_name(key: &str, kind: &str, name: &str) -> Result<(), ConfigError> {
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if valid {
        Ok(())
    } else {
        Err(ConfigError {
            key: format!("{key}.name"),
            message: format!(
                "{name:?} is not a valid {kind} name: use letters, digits, '_' and '-'"
            ),
        })
    }
}

/// How a source writes events to the log (`encoding` of every source).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// Debezium's JSON envelope.
    #[default]
    Json,
    /// Avro with Confluent's wire header; schemas in the registry.
    Avro,
}

/// How Avro carries decimals (`avro_decimals` of every source).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AvroDecimals {
    #[default]
    Precise,
    String,
}

/// What every `[[sources]]` and `[[sinks]]` section answers, whatever its kind: each
/// connector's config struct implements it, and the enums below reach it through one `match`.
pub trait Section {
    /// The section's `kind` (`postgres`, `mysql`, `jsonl`).
    fn kind(&self) -> &'static str;
    fn name(&self) -> &str;
    /// Checks the section (no I/O); `key` is where it is in the file (`sinks[0]`).
    fn validate(&self, key: &str) -> Result<(), ConfigError>;
    /// The section's file paths, to resolve relative to the config file.
    fn paths_mut(&mut self) -> Vec<&mut std::path::PathBuf>;
    /// Sinks: the topics (names or `*` patterns) they read.
    fn topics(&self) -> &[String] {
        &[]
    }
    /// Sinks: the log topic rejected events go to, if any.
    fn dead_letter_topic(&self) -> Option<&str> {
        None
    }
    /// Sinks of typed changes: their transforms, in order.
    fn transforms(&self) -> &[sluice_core::transform::TransformConfig] {
        &[]
    }
}

/// Every connector kind sluice has, in any build (a build without one says so instead of
/// calling the kind unknown).
pub const SOURCE_KINDS: [&str; 3] = ["postgres", "mysql", "kafka"];
pub const SINK_KINDS: [&str; 10] = [
    "jsonl",
    "postgres",
    "mysql",
    "kafka",
    "opensearch",
    "typesense",
    "clickhouse",
    "iceberg",
    "parquet",
    "http",
];

/// Whether this build has connector `kind` for `section` (`sources` or `sinks`).
pub fn compiled_in(section: &str, kind: &str) -> bool {
    // (In the default build every arm is true: one per feature all the same.)
    #[allow(clippy::match_like_matches_macro)]
    match (section, kind) {
        ("sources" | "sinks", "postgres") => cfg!(feature = "postgres"),
        ("sources" | "sinks", "mysql") => cfg!(feature = "mysql"),
        ("sources" | "sinks", "kafka") => cfg!(feature = "kafka"),
        ("sinks", "jsonl") => cfg!(feature = "jsonl"),
        ("sinks", "opensearch") => cfg!(feature = "opensearch"),
        ("sinks", "typesense") => cfg!(feature = "typesense"),
        ("sinks", "clickhouse") => cfg!(feature = "clickhouse"),
        ("sinks", "iceberg") => cfg!(feature = "iceberg"),
        ("sinks", "parquet") => cfg!(feature = "parquet"),
        ("sinks", "http") => cfg!(feature = "http_sink"),
        _ => false,
    }
}

/// One `[[sources]]` entry, chosen by `kind`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum SourceConfig {
    #[cfg(feature = "postgres")]
    Postgres(postgres::PostgresSourceConfig),
    #[cfg(feature = "mysql")]
    Mysql(mysql::source::config::MysqlSourceConfig),
    #[cfg(feature = "kafka")]
    Kafka(kafka::KafkaSourceConfig),
}

impl SourceConfig {
    /// The section behind the variant: the one place a new source kind is matched.
    pub fn section(&self) -> &dyn Section {
        match *self {
            #[cfg(feature = "postgres")]
            SourceConfig::Postgres(ref config) => config,
            #[cfg(feature = "mysql")]
            SourceConfig::Mysql(ref config) => config,
            #[cfg(feature = "kafka")]
            SourceConfig::Kafka(ref config) => config,
        }
    }

    pub fn name(&self) -> &str {
        self.section().name()
    }

    pub fn validate(&self, key: &str) -> Result<(), ConfigError> {
        self.section().validate(key)
    }

    /// Whether the source writes transaction metadata (`transaction_metadata`; database
    /// sources only: a Kafka source's transactions are the producer's).
    pub fn transaction_metadata(&self) -> bool {
        match *self {
            #[cfg(feature = "postgres")]
            SourceConfig::Postgres(ref config) => config.transaction_metadata,
            #[cfg(feature = "mysql")]
            SourceConfig::Mysql(ref config) => config.transaction_metadata,
            #[cfg(feature = "kafka")]
            SourceConfig::Kafka(_) => false,
        }
    }

    /// Applies `resolve` to every file path of the section (relative paths are relative to
    /// the config file).
    pub fn resolve_paths(&mut self, resolve: impl Fn(&mut std::path::PathBuf)) {
        // (A build without any connector of this side has no arm below.)
        let _ = &resolve;
        match *self {
            #[cfg(feature = "postgres")]
            SourceConfig::Postgres(ref mut config) => {
                config.paths_mut().into_iter().for_each(resolve)
            }
            #[cfg(feature = "mysql")]
            SourceConfig::Mysql(ref mut config) => config.paths_mut().into_iter().for_each(resolve),
            #[cfg(feature = "kafka")]
            SourceConfig::Kafka(ref mut config) => config.paths_mut().into_iter().for_each(resolve),
        }
    }
}

/// Where in one `[[sources]]`/`[[sinks]]` entry a deserialization error lies: serde reports
/// errors inside an internally tagged enum at the entry, not the field. Deserializes `entry`
/// again as the struct its `kind` names and returns `field: message` (None when that finds
/// nothing more precise).
pub fn locate_config_error(section: &str, entry: serde_json::Value) -> Option<String> {
    fn at<T: serde::de::DeserializeOwned>(mut entry: serde_json::Value) -> Option<String> {
        if let Some(object) = entry.as_object_mut() {
            object.remove("kind");
        }
        let err = serde_path_to_error::deserialize::<_, T>(entry).err()?;
        let path = err.path().to_string();
        (path != ".").then(|| format!("{path}: {}", err.inner()))
    }
    let kind = entry.get("kind")?.as_str()?.to_owned();
    match (section, kind.as_str()) {
        #[cfg(feature = "postgres")]
        ("sources", "postgres") => at::<postgres::PostgresSourceConfig>(entry),
        #[cfg(feature = "mysql")]
        ("sources", "mysql") => at::<mysql::source::config::MysqlSourceConfig>(entry),
        #[cfg(feature = "kafka")]
        ("sources", "kafka") => at::<kafka::KafkaSourceConfig>(entry),
        #[cfg(feature = "jsonl")]
        ("sinks", "jsonl") => at::<jsonl::JsonlSinkConfig>(entry),
        #[cfg(feature = "postgres")]
        ("sinks", "postgres") => at::<postgres::sink::PostgresSinkConfig>(entry),
        #[cfg(feature = "mysql")]
        ("sinks", "mysql") => at::<mysql::sink::MysqlSinkConfig>(entry),
        #[cfg(feature = "kafka")]
        ("sinks", "kafka") => at::<kafka::KafkaSinkConfig>(entry),
        #[cfg(feature = "opensearch")]
        ("sinks", "opensearch") => at::<search::opensearch::OpenSearchSinkConfig>(entry),
        #[cfg(feature = "typesense")]
        ("sinks", "typesense") => at::<search::typesense::TypesenseSinkConfig>(entry),
        #[cfg(feature = "clickhouse")]
        ("sinks", "clickhouse") => at::<clickhouse::ClickHouseSinkConfig>(entry),
        #[cfg(feature = "iceberg")]
        ("sinks", "iceberg") => at::<iceberg::IcebergSinkConfig>(entry),
        #[cfg(feature = "parquet")]
        ("sinks", "parquet") => at::<parquet_sink::ParquetSinkConfig>(entry),
        #[cfg(feature = "http_sink")]
        ("sinks", "http") => at::<http_sink::HttpSinkConfig>(entry),
        _ => None,
    }
}

/// One `[[sinks]]` entry, chosen by `kind`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum SinkConfig {
    #[cfg(feature = "jsonl")]
    Jsonl(jsonl::JsonlSinkConfig),
    #[cfg(feature = "postgres")]
    Postgres(postgres::sink::PostgresSinkConfig),
    #[cfg(feature = "mysql")]
    Mysql(mysql::sink::MysqlSinkConfig),
    #[cfg(feature = "kafka")]
    Kafka(kafka::KafkaSinkConfig),
    #[cfg(feature = "opensearch")]
    #[serde(rename = "opensearch")]
    OpenSearch(search::opensearch::OpenSearchSinkConfig),
    #[cfg(feature = "typesense")]
    Typesense(search::typesense::TypesenseSinkConfig),
    #[cfg(feature = "clickhouse")]
    #[serde(rename = "clickhouse")]
    ClickHouse(clickhouse::ClickHouseSinkConfig),
    #[cfg(feature = "iceberg")]
    #[serde(rename = "iceberg")]
    Iceberg(iceberg::IcebergSinkConfig),
    #[cfg(feature = "parquet")]
    #[serde(rename = "parquet")]
    Parquet(parquet_sink::ParquetSinkConfig),
    #[cfg(feature = "http_sink")]
    #[serde(rename = "http")]
    Http(http_sink::HttpSinkConfig),
}

impl SinkConfig {
    /// Whether processes that run this sink may share its partitions: the database sinks keep
    /// each partition's offsets in a row of their own in the target. The others run in one
    /// process at a time (see core's `SinkSettings::shared`).
    pub fn shares_partitions(&self) -> bool {
        match self {
            #[cfg(feature = "postgres")]
            SinkConfig::Postgres(_) => true,
            #[cfg(feature = "mysql")]
            SinkConfig::Mysql(_) => true,
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// The section behind the variant: the one place a new sink kind is matched.
    pub fn section(&self) -> &dyn Section {
        match *self {
            #[cfg(feature = "jsonl")]
            SinkConfig::Jsonl(ref config) => config,
            #[cfg(feature = "postgres")]
            SinkConfig::Postgres(ref config) => config,
            #[cfg(feature = "mysql")]
            SinkConfig::Mysql(ref config) => config,
            #[cfg(feature = "kafka")]
            SinkConfig::Kafka(ref config) => config,
            #[cfg(feature = "opensearch")]
            SinkConfig::OpenSearch(ref config) => config,
            #[cfg(feature = "typesense")]
            SinkConfig::Typesense(ref config) => config,
            #[cfg(feature = "clickhouse")]
            SinkConfig::ClickHouse(ref config) => config,
            #[cfg(feature = "iceberg")]
            SinkConfig::Iceberg(ref config) => config,
            #[cfg(feature = "parquet")]
            SinkConfig::Parquet(ref config) => config,
            #[cfg(feature = "http_sink")]
            SinkConfig::Http(ref config) => config,
        }
    }

    pub fn name(&self) -> &str {
        self.section().name()
    }

    pub fn topics(&self) -> &[String] {
        self.section().topics()
    }

    /// The sink's `kind` as the config spells it.
    pub fn kind(&self) -> &'static str {
        self.section().kind()
    }

    /// The log topic this sink diverts rejected events to, if any.
    pub fn dead_letter_topic(&self) -> Option<&str> {
        self.section().dead_letter_topic()
    }

    /// The sink's transforms, in order (none for sinks of stored records).
    pub fn transforms(&self) -> &[sluice_core::transform::TransformConfig] {
        self.section().transforms()
    }

    pub fn validate(&self, key: &str) -> Result<(), ConfigError> {
        self.section().validate(key)
    }

    /// Applies `resolve` to every file path of the section (relative paths are relative to
    /// the config file).
    pub fn resolve_paths(&mut self, resolve: impl Fn(&mut std::path::PathBuf)) {
        // (A build without any connector of this side has no arm below.)
        let _ = &resolve;
        match *self {
            #[cfg(feature = "jsonl")]
            SinkConfig::Jsonl(ref mut config) => config.paths_mut().into_iter().for_each(resolve),
            #[cfg(feature = "postgres")]
            SinkConfig::Postgres(ref mut config) => {
                config.paths_mut().into_iter().for_each(resolve)
            }
            #[cfg(feature = "mysql")]
            SinkConfig::Mysql(ref mut config) => config.paths_mut().into_iter().for_each(resolve),
            #[cfg(feature = "kafka")]
            SinkConfig::Kafka(ref mut config) => config.paths_mut().into_iter().for_each(resolve),
            #[cfg(feature = "opensearch")]
            SinkConfig::OpenSearch(ref mut config) => {
                config.paths_mut().into_iter().for_each(resolve)
            }
            #[cfg(feature = "typesense")]
            SinkConfig::Typesense(ref mut config) => {
                config.paths_mut().into_iter().for_each(resolve)
            }
            #[cfg(feature = "clickhouse")]
            SinkConfig::ClickHouse(ref mut config) => {
                config.paths_mut().into_iter().for_each(resolve)
            }
            #[cfg(feature = "iceberg")]
            SinkConfig::Iceberg(ref mut config) => config.paths_mut().into_iter().for_each(resolve),
            #[cfg(feature = "parquet")]
            SinkConfig::Parquet(ref mut config) => config.paths_mut().into_iter().for_each(resolve),
            #[cfg(feature = "http_sink")]
            SinkConfig::Http(ref mut config) => config.paths_mut().into_iter().for_each(resolve),
        }
    }
}
