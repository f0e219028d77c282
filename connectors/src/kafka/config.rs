//! Configuration of the Kafka sink.

use std::collections::BTreeMap;

use serde::Deserialize;

pub use sluice_schema_registry::json::debezium::{
    DebeziumForms, DecimalHandling, IntervalHandling, TimeTzHandling,
};

use crate::ConfigError;

/// `[[sinks]] kind = "kafka"`: the log's topics delivered to Apache Kafka.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSinkConfig {
    /// Sink name; its consumer group in the log is `sink.<name>`, its transactional id in
    /// Kafka `sluice-<name>`. Required.
    pub name: String,
    /// Bootstrap brokers, `host:port,host:port`. Required.
    pub brokers: String,
    /// Log topics to deliver: names or `*` patterns (`shop.public.*`). Required.
    pub topics: Vec<String>,
    /// The Kafka topic each log topic goes to, `{topic}` standing for the log topic's name
    /// (`<source>.<schema>.<table>`, Debezium's naming with the source as prefix). Default
    /// `"{topic}"`.
    #[serde(default = "default_topic")]
    pub topic: String,
    /// `exactly_once` (default): each batch and the sink's offsets in one Kafka transaction,
    /// so a `read_committed` consumer sees every event once across crashes; `at_least_once`
    /// for brokers without transactions (a crash may repeat the last batch).
    #[serde(default)]
    pub delivery: Delivery,
    /// Partitions of the topics sluice creates. Default: the broker's `num.partitions`.
    #[serde(default)]
    pub partitions: Option<i32>,
    /// Replication factor of the topics sluice creates. Default: the broker's.
    #[serde(default)]
    pub replication_factor: Option<i32>,
    /// `cleanup.policy` of the topics sluice creates (`delete` or `compact`). Default: the
    /// broker's.
    #[serde(default)]
    pub cleanup_policy: Option<String>,
    /// librdkafka producer properties, passed as they are (`"compression.type" = "lz4"`,
    /// `"message.max.bytes" = "2000000"`).
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// `debezium` (default): JSON values in Debezium 3.6's forms, tuned by the four options
    /// below; `sluice`: the log's records as they are (sluice's exact forms). Avro records are
    /// delivered as the log holds them either way. docs/types.md lists every difference.
    #[serde(default)]
    pub format: ValueFormat,
    /// `precise` (Debezium's default: scaled bytes, base64), `string` (exact text) or
    /// `double`: decimals and `money` (Debezium's `decimal.handling.mode`).
    #[serde(default)]
    pub decimal_handling: DecimalHandling,
    /// `numeric` (Debezium's default: microseconds, 30.4375-day months) or `string` (exact
    /// ISO-8601): intervals (Debezium's `interval.handling.mode`).
    #[serde(default)]
    pub interval_handling: IntervalHandling,
    /// `utc` (Debezium's: `08:15:30Z`) or `offset` (the source's offset kept): `timetz`.
    #[serde(default)]
    pub timetz_handling: TimeTzHandling,
    /// Keep each event's `transaction` block (`id`, `total_order`; Debezium's
    /// `provide.transaction.metadata`). Default false: null, as Debezium writes it.
    #[serde(default)]
    pub transaction_metadata: bool,
    /// A log topic for records Kafka refuses (larger than `message.max.bytes`): each goes
    /// there with the broker's reason and the sink goes on. Unset, such a record stops the
    /// sink with an error naming it.
    #[serde(default)]
    pub dead_letter_topic: Option<String>,
    /// Transforms (`[[sinks.transforms]]`): the records produced are then the transformed
    /// changes as JSON (`reshape.rs`).
    #[serde(default)]
    pub transforms: Vec<sluice_core::transform::TransformConfig>,
}

/// What the sink writes as record values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueFormat {
    #[default]
    Debezium,
    Sluice,
}

fn default_topic() -> String {
    "{topic}".into()
}

/// How records reach Kafka.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    #[default]
    ExactlyOnce,
    AtLeastOnce,
}

impl KafkaSinkConfig {
    pub fn validate(&self, key: &str) -> Result<(), ConfigError> {
        let err = crate::ConfigError::at(key);
        crate::validate_name(key, "sink", &self.name)?;
        check_brokers(&self.brokers).map_err(|m| err("brokers", m))?;
        if self.topics.is_empty() {
            return Err(err(
                "topics",
                "list at least one topic or pattern, e.g. [\"shop.public.*\"]".into(),
            ));
        }
        if !self.topic.contains("{topic}") && self.topics.len() > 1 {
            return Err(err(
                "topic",
                format!(
                    "{:?} sends every topic to one Kafka topic; include {{topic}}",
                    self.topic
                ),
            ));
        }
        if let Some(partitions) = self.partitions.filter(|p| *p < 1) {
            return Err(err("partitions", format!("{partitions} is not at least 1")));
        }
        if let Some(policy) = &self.cleanup_policy {
            if !["delete", "compact", "compact,delete", "delete,compact"].contains(&policy.as_str())
            {
                return Err(err(
                    "cleanup_policy",
                    format!("{policy:?} is not delete, compact or compact,delete"),
                ));
            }
        }
        if let Some(topic) = &self.dead_letter_topic {
            if topic.is_empty() || topic.starts_with('_') {
                return Err(err(
                    "dead_letter_topic",
                    "name a log topic, e.g. \"kafka.dead_letters\"".into(),
                ));
            }
        }
        Ok(())
    }

    /// The value forms the sink writes; None: the log's as they are.
    pub fn forms(&self) -> Option<DebeziumForms> {
        (self.format == ValueFormat::Debezium).then_some(DebeziumForms {
            decimal: self.decimal_handling,
            interval: self.interval_handling,
            timetz: self.timetz_handling,
            transaction_metadata: self.transaction_metadata,
        })
    }

    /// The Kafka topic a log topic goes to.
    pub fn kafka_topic(&self, log_topic: &str) -> String {
        self.topic.replace("{topic}", log_topic)
    }

    /// The compacted topic that holds the sink's offsets (written in its transactions).
    pub fn offsets_topic(&self) -> String {
        format!("_sluice_offsets.{}", self.name)
    }
}

/// A `brokers` list: `host:port` entries, comma-separated.
pub fn check_brokers(brokers: &str) -> Result<(), String> {
    if brokers.split(',').all(|b| b.trim().is_empty()) {
        return Err("name at least one broker, e.g. \"127.0.0.1:9092\"".into());
    }
    for broker in brokers.split(',').map(str::trim) {
        let port = broker.rsplit_once(':').map(|(_, port)| port.parse::<u16>());
        if !matches!(port, Some(Ok(_))) {
            return Err(format!(
                "{broker:?} is not host:port, e.g. \"127.0.0.1:9092\""
            ));
        }
    }
    Ok(())
}

sink_section!(KafkaSinkConfig, "kafka", |c| Vec::new());

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Result<KafkaSinkConfig, String> {
        let text = format!(
            "name = \"k\"\nbrokers = \"127.0.0.1:9092\"\ntopics = [\"shop.public.*\"]\n{extra}"
        );
        let config: KafkaSinkConfig = toml_like(&text)?;
        config.validate("sinks[0]").map_err(|e| e.to_string())?;
        Ok(config)
    }

    /// The few keys these tests use, as the config loader would give them.
    fn toml_like(text: &str) -> Result<KafkaSinkConfig, String> {
        let mut object = serde_json::Map::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let (key, value) = line.split_once(" = ").expect("key = value");
            let value: serde_json::Value = serde_json::from_str(value).expect("a JSON value");
            object.insert(key.to_owned(), value);
        }
        serde_json::from_value(serde_json::Value::Object(object)).map_err(|e| e.to_string())
    }

    #[test]
    fn topics_keep_their_log_names_by_default_and_follow_the_template() {
        let plain = config("").unwrap();
        assert_eq!(
            plain.kafka_topic("shop.public.orders"),
            "shop.public.orders"
        );
        assert_eq!(plain.delivery, Delivery::ExactlyOnce);
        assert_eq!(plain.offsets_topic(), "_sluice_offsets.k");
        assert_eq!(plain.forms(), Some(DebeziumForms::default()));
        assert_eq!(config("format = \"sluice\"").unwrap().forms(), None);
        let templated = config("topic = \"cdc.{topic}\"").unwrap();
        assert_eq!(
            templated.kafka_topic("shop.public.orders"),
            "cdc.shop.public.orders"
        );
    }

    #[test]
    fn bad_values_are_refused_naming_the_key() {
        let err = config("brokers = \"localhost\"").unwrap_err();
        assert!(
            err.contains("sinks[0].brokers") && err.contains("host:port"),
            "{err}"
        );
        let err = config("partitions = 0").unwrap_err();
        assert!(err.contains("sinks[0].partitions"), "{err}");
        let err = config("cleanup_policy = \"forever\"").unwrap_err();
        assert!(err.contains("sinks[0].cleanup_policy"), "{err}");
        let err = config("delivery = \"maybe\"").unwrap_err();
        assert!(err.contains("maybe"), "{err}");
        let err = config("decimal_handling = \"exact\"").unwrap_err();
        assert!(err.contains("exact") && err.contains("precise"), "{err}");
        let err = config("dead_letter_topic = \"_x\"").unwrap_err();
        assert!(err.contains("sinks[0].dead_letter_topic"), "{err}");
    }
}
