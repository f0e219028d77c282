//! Configuration of the Kafka source.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::{AvroDecimals, ConfigError, Encoding};

/// `[[sources]] kind = "kafka"`: Debezium change events already in Kafka topics (from an
/// existing Debezium deployment, say) read into the log, so that every sluice sink can be fed
/// from them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSourceConfig {
    /// Source name: the prefix of its log topics (`<name>.<schema>.<table>`). Required.
    pub name: String,
    /// Bootstrap brokers, `host:port,host:port`. Required.
    pub brokers: String,
    /// The Kafka topics to read: names (`dbserver1.public.orders`, which must exist) or
    /// patterns with `*` (`dbserver1.public.*`; topics created later are read too). Required.
    pub topics: Vec<String>,
    /// Where to begin in a topic the log has no position for: `earliest` (default: every
    /// event the topic still holds) or `latest` (only events written from now on).
    #[serde(default)]
    pub start: StartAt,
    /// The Confluent-compatible schema registry (`http://127.0.0.1:8081`) that Debezium's
    /// AvroConverter writes to: Avro keys and values (Confluent's wire format) are read with
    /// the writer schemas it holds. JSON (with or without schemas) needs none.
    #[serde(default)]
    pub registry_url: Option<String>,
    /// Follow each delete with a tombstone (same key, null value). Default true.
    #[serde(default = "default_true")]
    pub tombstones: bool,
    /// How events are written to the log: `json` (default) or `avro`.
    #[serde(default)]
    pub encoding: Encoding,
    /// With `encoding = "avro"`: `precise` or `string` decimals.
    #[serde(default)]
    pub avro_decimals: AvroDecimals,
    /// A batch closes after this many events (or a second without one). Default 5000.
    #[serde(default = "default_max_batch_events")]
    pub max_batch_events: usize,
    /// librdkafka consumer properties, passed as they are.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

/// Where a Kafka source begins in a topic it has no position for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartAt {
    #[default]
    Earliest,
    Latest,
}

fn default_true() -> bool {
    true
}

fn default_max_batch_events() -> usize {
    5_000
}

impl KafkaSourceConfig {
    pub fn validate(&self, key: &str) -> Result<(), ConfigError> {
        let err = crate::ConfigError::at(key);
        crate::validate_name(key, "source", &self.name)?;
        super::super::config::check_brokers(&self.brokers).map_err(|m| err("brokers", m))?;
        if self.topics.is_empty() || self.topics.iter().any(|t| t.trim().is_empty()) {
            return Err(err(
                "topics",
                "list the Kafka topics to read, e.g. [\"dbserver1.public.orders\"]".into(),
            ));
        }
        if let Some(url) = &self.registry_url {
            if !url.starts_with("http://") {
                return Err(err(
                    "registry_url",
                    format!("{url:?} is not an http:// URL, e.g. \"http://127.0.0.1:8081\""),
                ));
            }
        }
        if self.max_batch_events == 0 {
            return Err(err("max_batch_events", "must be at least 1".into()));
        }
        Ok(())
    }
}

impl crate::Section for KafkaSourceConfig {
    fn kind(&self) -> &'static str {
        "kafka"
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn validate(&self, key: &str) -> Result<(), ConfigError> {
        KafkaSourceConfig::validate(self, key)
    }

    fn paths_mut(&mut self) -> Vec<&mut std::path::PathBuf> {
        Vec::new()
    }
}
