//! Where a batch's records go: the Kafka topic of each log topic, named once per batch.

use std::sync::Arc;

use sluice_core::sink::SinkRecord;

use crate::kafka::config::KafkaSinkConfig;
use crate::reshape::Destination;

/// The Kafka topic of each log topic a batch holds.
pub(super) struct Destinations(Vec<(Arc<str>, String)>);

impl Destinations {
    /// `to`: where transforms sent each record (its own topic when there are none).
    pub(super) fn of(
        config: &KafkaSinkConfig,
        records: &[SinkRecord],
        to: Option<&[Destination]>,
    ) -> Destinations {
        let mut names: Vec<(Arc<str>, String)> = Vec::new();
        for (i, record) in records.iter().enumerate() {
            let topic = match to.map(|to| &to[i]) {
                None => &record.topic,
                Some(Destination::Topic(topic)) => topic,
                Some(Destination::Dropped) => continue,
            };
            let known = names.last().is_some_and(|(t, _)| Arc::ptr_eq(t, topic))
                || names.iter().any(|(t, _)| t == topic);
            if !known {
                names.push((Arc::clone(topic), config.kafka_topic(topic)));
            }
        }
        Destinations(names)
    }

    pub(super) fn kafka_topics(&self) -> Vec<String> {
        let mut topics: Vec<String> = Vec::new();
        for (_, topic) in &self.0 {
            if !topics.contains(topic) {
                topics.push(topic.clone());
            }
        }
        topics
    }

    /// The Kafka topic of a log topic of the batch.
    pub(super) fn topic(&self, log_topic: &Arc<str>) -> &str {
        self.0
            .iter()
            .find(|(t, _)| Arc::ptr_eq(t, log_topic))
            .or_else(|| self.0.iter().find(|(t, _)| t == log_topic))
            .map(|(_, topic)| topic.as_str())
            .expect("every log topic of the batch has its Kafka topic")
    }
}
