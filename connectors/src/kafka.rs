//! Apache Kafka, through librdkafka (rdkafka).
//!
//! - `config`: `[[sinks]] kind = "kafka"`;
//! - `sink`: the log's records produced to Kafka topics, exactly once in Kafka transactions
//!   that carry the sink's offsets, or at least once.

pub mod config;
mod sink;

pub use config::KafkaSinkConfig;
pub use sink::{KafkaSink, KafkaSinkError};

/// `check --connect` for a Kafka sink: the brokers answer, and say how many there are.
pub async fn probe(config: &KafkaSinkConfig) -> Result<String, KafkaSinkError> {
    use rdkafka::producer::{BaseProducer, Producer};
    let producer: BaseProducer = rdkafka::config::ClientConfig::new()
        .set("bootstrap.servers", &config.brokers)
        .set("socket.connection.setup.timeout.ms", "10000")
        .create()
        .map_err(|source| KafkaSinkError::Kafka {
            brokers: config.brokers.clone(),
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
    .map_err(|source| sink::unreachable(&config.brokers, &source))?;
    Ok(format!(
        "{} broker(s) answer at {}; {} topic(s)",
        metadata.brokers().len(),
        config.brokers,
        metadata.topics().len()
    ))
}
