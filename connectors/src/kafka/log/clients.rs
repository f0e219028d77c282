//! The clients' settings and the small pieces every part of the Kafka log shares: which
//! errors are passing, this process's id, producing one record, reading one back.

use std::time::Duration;

use bytes::Bytes;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseProducer, BaseRecord};
use rdkafka::Offset;
use sluice_core::batch::RecordView;
use sluice_core::event_log::{Header, LogError, Records, StoredRecord};

use super::{KafkaLogConfig, TIMEOUT};

/// Errors a reader outlives: the cluster's own failover deals with them.
pub(super) fn transient(err: &KafkaError) -> bool {
    matches!(
        err.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::BrokerTransportFailure
                | RDKafkaErrorCode::AllBrokersDown
                | RDKafkaErrorCode::NetworkException
                | RDKafkaErrorCode::NotLeaderForPartition
                | RDKafkaErrorCode::LeaderNotAvailable
                | RDKafkaErrorCode::RequestTimedOut
                | RDKafkaErrorCode::OperationTimedOut
                | RDKafkaErrorCode::BrokerNotAvailable
                | RDKafkaErrorCode::Resolve
        )
    )
}

/// This process on this host, unique across restarts: `<host>-<pid>-<start in ms>`.
pub(super) fn process_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "host".into());
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    format!("{host}-{}-{started}", std::process::id())
}

pub(super) fn client(config: &KafkaLogConfig) -> ClientConfig {
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &config.brokers)
        .set("socket.connection.setup.timeout.ms", "10000");
    for (key, value) in &config.properties {
        client.set(key, value);
    }
    client
}

pub(super) fn consumer_config(config: &KafkaLogConfig) -> ClientConfig {
    let mut consumer = client(config);
    consumer
        .set("group.id", "sluice-log-reader")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .set("fetch.wait.max.ms", "50");
    consumer
}

/// The consumer's position in the partition (the next offset it reads).
pub(super) fn position(consumer: &BaseConsumer, topic: &str, partition: u32) -> Option<u64> {
    let positions = consumer.position().ok()?;
    let element = positions.find_partition(topic, partition as i32)?;
    match element.offset() {
        Offset::Offset(n) if n >= 0 => Some(n as u64),
        _ => None,
    }
}

/// Produces `record`, waiting while the producer's queue is full.
pub(super) fn send(
    producer: &BaseProducer,
    mut record: BaseRecord<'_, [u8], [u8]>,
) -> Result<(), KafkaError> {
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                producer.poll(Duration::from_millis(10));
                record = back;
            }
            Err((err, _)) => return Err(err),
        }
    }
}

/// Calls `f` with each record of `records`.
pub(super) fn for_each_record(
    records: Records,
    mut f: impl FnMut(&dyn RecordView) -> Result<(), LogError>,
) -> Result<(), LogError> {
    match records {
        Records::Owned(records) => records.iter().try_for_each(|r| f(r)),
        Records::Packed(packed) => packed.views().iter().try_for_each(|r| f(r)),
        Records::Prepared(_) => Err(LogError::Backend(
            "the Kafka log takes records, not prepared batches".into(),
        )),
    }
}

pub(super) fn stored(message: &rdkafka::message::BorrowedMessage<'_>) -> StoredRecord {
    let headers = message
        .headers()
        .map(|headers| {
            headers
                .iter()
                .map(|h| Header {
                    key: h.key.to_owned(),
                    value: h.value.map(Bytes::copy_from_slice),
                })
                .collect()
        })
        .unwrap_or_default();
    StoredRecord {
        offset: message.offset() as u64,
        timestamp_ms: message.timestamp().to_millis().unwrap_or(0),
        key: message.key().map(Bytes::copy_from_slice),
        value: message.payload().map(Bytes::copy_from_slice),
        headers,
    }
}

/// A partition's low and high watermarks. A topic just made is not known to every broker at
/// once (on a cluster of three, the broker asked answered `UnknownPartition` for moments after
/// the creating one had it), so that answer, like the failover's, is asked again until
/// `TIMEOUT`.
pub(super) fn watermarks(
    consumer: &BaseConsumer,
    topic: &str,
    partition: u32,
) -> Result<(i64, i64), KafkaError> {
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        match consumer.fetch_watermarks(topic, partition as i32, TIMEOUT) {
            Err(err) if std::time::Instant::now() < deadline && not_yet_known(&err) => {
                // A synchronous helper of the blocking pool.
                #[allow(clippy::disallowed_methods)]
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            answer => return answer,
        }
    }
}

/// An error that a moment's wait cures: the cluster's failover, or a topic not yet known to the
/// broker asked.
fn not_yet_known(err: &KafkaError) -> bool {
    transient(err)
        || matches!(
            err.rdkafka_error_code(),
            Some(RDKafkaErrorCode::UnknownPartition | RDKafkaErrorCode::UnknownTopicOrPartition)
        )
}
