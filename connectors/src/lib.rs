//! sluice-connectors: one module per external system, each behind a Cargo feature.
//!
//! - `postgres`: the Postgres source (logical replication, pgoutput) and sink;
//! - `mysql`: the MySQL/MariaDB source (row binlog) and sink;
//! - `replica`: what the database sinks share (decoding, planning, pipelining);
//! - `jsonl`: the JSON-lines file sink.
//!
//! [`SourceConfig`] and [`SinkConfig`] are the tagged enums of the config file's `[[sources]]`
//! and `[[sinks]]`; the binary maps each variant to its constructor in one `match`.

#[cfg(feature = "jsonl")]
pub mod jsonl;
#[cfg(feature = "mysql")]
pub mod mysql;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(any(feature = "postgres", feature = "mysql"))]
pub mod replica;

use serde::Deserialize;

/// A config value that failed validation: where it is (`sources[0].url`) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

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

/// One `[[sources]]` entry, chosen by `kind`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum SourceConfig {
    #[cfg(feature = "postgres")]
    Postgres(postgres::PostgresSourceConfig),
    #[cfg(feature = "mysql")]
    Mysql(mysql::source::config::MysqlSourceConfig),
}

impl SourceConfig {
    pub fn name(&self) -> &str {
        match self {
            #[cfg(feature = "postgres")]
            SourceConfig::Postgres(config) => &config.name,
            #[cfg(feature = "mysql")]
            SourceConfig::Mysql(config) => &config.name,
        }
    }

    pub fn validate(&self, key: &str) -> Result<(), ConfigError> {
        match self {
            #[cfg(feature = "postgres")]
            SourceConfig::Postgres(config) => config.validate(key),
            #[cfg(feature = "mysql")]
            SourceConfig::Mysql(config) => config.validate(key),
        }
    }

    /// Applies `resolve` to every file path of the section (relative paths are relative to
    /// the config file).
    pub fn resolve_paths(&mut self, resolve: impl Fn(&mut std::path::PathBuf)) {
        let password_file = match self {
            #[cfg(feature = "postgres")]
            SourceConfig::Postgres(config) => &mut config.password_file,
            #[cfg(feature = "mysql")]
            SourceConfig::Mysql(config) => &mut config.password_file,
        };
        password_file.iter_mut().for_each(resolve);
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
        #[cfg(feature = "jsonl")]
        ("sinks", "jsonl") => at::<jsonl::JsonlSinkConfig>(entry),
        #[cfg(feature = "postgres")]
        ("sinks", "postgres") => at::<postgres::sink::PostgresSinkConfig>(entry),
        #[cfg(feature = "mysql")]
        ("sinks", "mysql") => at::<mysql::sink::MysqlSinkConfig>(entry),
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
}

impl SinkConfig {
    /// Applies `resolve` to every file path of the section (relative paths are relative to
    /// the config file).
    pub fn resolve_paths(&mut self, resolve: impl Fn(&mut std::path::PathBuf)) {
        match self {
            #[cfg(feature = "jsonl")]
            SinkConfig::Jsonl(config) => resolve(&mut config.path),
            #[cfg(feature = "postgres")]
            SinkConfig::Postgres(config) => config.password_file.iter_mut().for_each(resolve),
            #[cfg(feature = "mysql")]
            SinkConfig::Mysql(config) => config.password_file.iter_mut().for_each(resolve),
        }
    }

    pub fn name(&self) -> &str {
        match self {
            #[cfg(feature = "jsonl")]
            SinkConfig::Jsonl(config) => &config.name,
            #[cfg(feature = "postgres")]
            SinkConfig::Postgres(config) => &config.name,
            #[cfg(feature = "mysql")]
            SinkConfig::Mysql(config) => &config.name,
        }
    }

    pub fn topics(&self) -> &[String] {
        match self {
            #[cfg(feature = "jsonl")]
            SinkConfig::Jsonl(config) => &config.topics,
            #[cfg(feature = "postgres")]
            SinkConfig::Postgres(config) => &config.topics,
            #[cfg(feature = "mysql")]
            SinkConfig::Mysql(config) => &config.topics,
        }
    }

    /// The log topic this sink diverts rejected events to, if any.
    pub fn dead_letter_topic(&self) -> Option<&str> {
        match self {
            #[cfg(feature = "jsonl")]
            SinkConfig::Jsonl(_) => None,
            #[cfg(feature = "postgres")]
            SinkConfig::Postgres(config) => config.dead_letter_topic.as_deref(),
            #[cfg(feature = "mysql")]
            SinkConfig::Mysql(config) => config.dead_letter_topic.as_deref(),
        }
    }

    pub fn validate(&self, key: &str) -> Result<(), ConfigError> {
        match self {
            #[cfg(feature = "jsonl")]
            SinkConfig::Jsonl(config) => config.validate(key),
            #[cfg(feature = "postgres")]
            SinkConfig::Postgres(config) => config.validate(key),
            #[cfg(feature = "mysql")]
            SinkConfig::Mysql(config) => config.validate(key),
        }
    }
}
