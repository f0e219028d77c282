//! Apache Kafka, through librdkafka (rdkafka).
//!
//! - `config`: `[[sinks]] kind = "kafka"`;
//! - `sink`: the log's records produced to Kafka topics, exactly once in Kafka transactions
//!   that carry the sink's offsets, or at least once;
//! - `source`: `[[sources]] kind = "kafka"`, Debezium's change events in Kafka topics read
//!   into the log (`source/config.rs`, `source/decode.rs`).

pub mod config;
mod sink;
pub mod source;

pub use config::KafkaSinkConfig;
pub use sink::{KafkaSink, KafkaSinkError};
pub use source::config::KafkaSourceConfig;
pub use source::{KafkaSource, KafkaSourceError};

/// `check --connect` for a Kafka sink: the brokers answer, and say how many there are.
pub async fn probe(config: &KafkaSinkConfig) -> Result<String, KafkaSinkError> {
    probe_brokers(&config.brokers).await
}

/// The brokers at `brokers` answer: how many there are and how many topics they hold.
pub async fn probe_brokers(brokers: &str) -> Result<String, KafkaSinkError> {
    use rdkafka::producer::{BaseProducer, Producer};
    let producer: BaseProducer = rdkafka::config::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("socket.connection.setup.timeout.ms", "10000")
        .create()
        .map_err(|source| KafkaSinkError::Kafka {
            brokers: brokers.to_owned(),
            action: "connecting",
            source,
        })?;
    let metadata = tokio::task::spawn_blocking(move || {
        producer
            .client()
            .fetch_metadata(None, std::time::Duration::from_secs(10))
    })
    .await
    .expect("a metadata request does not panic")
    .map_err(|source| sink::unreachable(brokers, &source))?;
    Ok(format!(
        "{} broker(s) answer at {}; {} topic(s)",
        metadata.brokers().len(),
        brokers,
        metadata.topics().len()
    ))
}
