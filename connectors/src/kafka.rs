//! Apache Kafka, through librdkafka (rdkafka).
//!
//! - `config`: `[[sinks]] kind = "kafka"`;
//! - `sink`: the log's records produced to Kafka topics, exactly once in Kafka transactions
//!   that carry the sink's offsets, or at least once;
//! - `source`: `[[sources]] kind = "kafka"`, Debezium's change events in Kafka topics read
//!   into the log (`source/config.rs`, `source/decode.rs`);
//! - `log`: `[log] kind = "kafka"`, the log itself on a Kafka cluster.

pub mod config;
pub mod log;
mod sink;
pub mod source;

pub use config::KafkaSinkConfig;
pub use sink::{KafkaSink, KafkaSinkError};
pub use source::config::KafkaSourceConfig;
pub use source::{KafkaSource, KafkaSourceError};

/// `check --connect` for a Kafka sink: the brokers answer (how many there are), and, for
/// exactly-once delivery, they grant transactions (a producer of a check-only transactional
/// id, `sluice-check-<sink>`, so that the running sink is not fenced).
pub async fn probe(config: &KafkaSinkConfig) -> Result<String, KafkaSinkError> {
    use rdkafka::producer::{BaseProducer, Producer};
    let brokers = probe_brokers(&config.brokers).await?;
    if config.delivery != config::Delivery::ExactlyOnce {
        return Ok(brokers);
    }
    let fail = |source| KafkaSinkError::Kafka {
        brokers: config.brokers.clone(),
        action: "starting transactions (delivery = \"exactly_once\"; a broker without \
                 transactions, or a user without transactional-id rights, needs \
                 delivery = \"at_least_once\")",
        source,
    };
    let mut client = rdkafka::config::ClientConfig::new();
    client
        .set("bootstrap.servers", &config.brokers)
        .set("transactional.id", format!("sluice-check-{}", config.name))
        .set("socket.connection.setup.timeout.ms", "10000");
    for (key, value) in &config.properties {
        client.set(key, value);
    }
    let producer: BaseProducer = client.create().map_err(fail)?;
    tokio::task::spawn_blocking(move || {
        producer.init_transactions(std::time::Duration::from_secs(15))
    })
    .await
    .expect("starting transactions does not panic")
    .map_err(fail)?;
    Ok(format!("{brokers}; transactions allowed"))
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
