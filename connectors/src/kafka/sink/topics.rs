//! Where a batch's records go: the Kafka topic of each log topic, named once per batch.

use std::sync::Arc;

use sluice_core::sink::SinkRecord;

use crate::kafka::config::KafkaSinkConfig;

/// The Kafka topic of each log topic a batch holds.
pub(super) struct Destinations(Vec<(Arc<str>, String)>);

impl Destinations {
    pub(super) fn of(config: &KafkaSinkConfig, records: &[SinkRecord]) -> Destinations {
        let mut names: Vec<(Arc<str>, String)> = Vec::new();
        for record in records {
            let known = names
                .last()
                .is_some_and(|(t, _)| Arc::ptr_eq(t, &record.topic))
                || names.iter().any(|(t, _)| *t == record.topic);
            if !known {
                names.push((Arc::clone(&record.topic), config.kafka_topic(&record.topic)));
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
