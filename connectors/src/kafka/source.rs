//! The Kafka source: Debezium change events from Kafka topics into the log, so that every
//! sluice sink can be fed from a Debezium deployment that already runs (and a team can move
//! from it to sluice without taking a snapshot again: docs/migrating-from-debezium.md).
//!
//! Partitions are assigned, not subscribed: no consumer group decides what this source reads.
//! `topics` are names or `*` patterns; every few seconds the source looks for topics (and
//! partitions) that appeared since, and reads each new one from its beginning.
//! Where it stands is the next offset of every partition, committed to the log with each batch
//! (`Position::KafkaOffsets`), so a restart resumes right after the last batch in the log
//! whatever crashed. Transactional topics are read `read_committed`. Tombstones are dropped
//! (the source writes its own after each delete, as `tombstones` says).

mod avro;
pub mod config;
mod decode;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::metadata::Metadata;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value as Json;
use sluice_core::checkpoint::{Checkpoint, SnapshotProgress};
use sluice_core::position::Position;
use sluice_core::retry::{Classify, ErrorKind};
use sluice_core::source::{Source, SourceBatch};

use self::config::{KafkaSourceConfig, StartAt};
use self::decode::{At, Decoder};

#[derive(Debug, thiserror::Error)]
pub enum KafkaSourceError {
    #[error("Kafka at {brokers}: {action}: {source}")]
    Kafka {
        brokers: String,
        action: &'static str,
        source: KafkaError,
    },
    #[error(
        "no Kafka broker answers at {brokers} ({reason}); check that the brokers run and that \
         `brokers` names their listeners (host:port)"
    )]
    Unreachable { brokers: String, reason: String },
    #[error(
        "Kafka at {brokers}: topic {topic:?} does not exist; check `topics` (a name must exist at start; a pattern with `*` may match topics created later)"
    )]
    NoTopic { brokers: String, topic: String },
    #[error(
        "{topic}[{partition}] offset {offset}: {reason}; fix the producer, or move past the \
         record by removing this source's position from the log (a fresh [log] dir)"
    )]
    Record {
        topic: String,
        partition: i32,
        offset: i64,
        reason: String,
    },
    #[error("the log's checkpoint {0} is not a Kafka position; this source reads Kafka: use a fresh [log] dir or another source name")]
    ForeignCheckpoint(String),
    #[error("{0}; check registry_url and that the registry runs")]
    Registry(String),
}

impl Classify for KafkaSourceError {
    fn kind(&self) -> ErrorKind {
        match self {
            KafkaSourceError::Kafka { source, .. } => match source {
                KafkaError::ClientCreation(_) => ErrorKind::Definite,
                _ => ErrorKind::Transient,
            },
            KafkaSourceError::NoTopic { .. }
            | KafkaSourceError::Unreachable { .. }
            | KafkaSourceError::Registry(_) => ErrorKind::Transient,
            KafkaSourceError::Record { .. } | KafkaSourceError::ForeignCheckpoint(_) => {
                ErrorKind::Definite
            }
        }
    }
}

/// `topic/partition@offset,…` of every partition's next offset.
fn offsets_text(offsets: &BTreeMap<(String, i32), i64>) -> String {
    offsets
        .iter()
        .map(|((topic, partition), offset)| format!("{topic}/{partition}@{offset}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn parse_offsets(text: &str) -> Option<BTreeMap<(String, i32), i64>> {
    text.split(',')
        .filter(|part| !part.is_empty())
        .map(|part| {
            let (topic, rest) = part.rsplit_once('/')?;
            let (partition, offset) = rest.split_once('@')?;
            Some((
                (topic.to_owned(), partition.parse().ok()?),
                offset.parse().ok()?,
            ))
        })
        .collect()
}

/// How often the source looks for new topics and partitions that `topics` matches.
const TOPIC_SCAN: Duration = Duration::from_secs(5);

/// The topics of `metadata` that `patterns` take (names, or globs with `*`; topics starting
/// with `_`, such as Debezium's heartbeats, only when named so), with their partitions.
fn matching(metadata: &Metadata, patterns: &[String]) -> BTreeMap<String, Vec<i32>> {
    metadata
        .topics()
        .iter()
        .filter(|t| t.error().is_none() && !t.partitions().is_empty())
        .filter(|t| {
            patterns
                .iter()
                .any(|pattern| sluice_core::topic::pattern_takes(pattern, t.name()))
        })
        .map(|t| {
            let partitions = t.partitions().iter().map(|p| p.id()).collect();
            (t.name().to_owned(), partitions)
        })
        .collect()
}

/// The Kafka source.
pub struct KafkaSource {
    config: KafkaSourceConfig,
    consumer: Option<Arc<StreamConsumer>>,
    /// The partitions being read, and when the topics were last looked for.
    assigned: BTreeSet<(String, i32)>,
    scanned_at: tokio::time::Instant,
    /// The next offset of every assigned partition (what the next checkpoint says).
    offsets: BTreeMap<(String, i32), i64>,
    decoder: Decoder,
    /// Avro writer schemas from `registry_url`.
    registry: Option<avro::Registry>,
}

impl KafkaSource {
    pub fn new(config: KafkaSourceConfig) -> KafkaSource {
        let registry = config.registry_url.as_deref().map(avro::Registry::new);
        KafkaSource {
            config,
            consumer: None,
            assigned: BTreeSet::new(),
            scanned_at: tokio::time::Instant::now(),
            offsets: BTreeMap::new(),
            decoder: Decoder::default(),
            registry,
        }
    }

    fn error(&self, action: &'static str) -> impl Fn(KafkaError) -> KafkaSourceError + '_ {
        move |source| KafkaSourceError::Kafka {
            brokers: self.config.brokers.clone(),
            action,
            source,
        }
    }

    fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            position: Position::KafkaOffsets(offsets_text(&self.offsets).into()),
            snapshot: SnapshotProgress::Done,
            snapshot_state: None,
        }
    }

    /// Starts reading the topics and partitions `topics` matches that appeared since the last
    /// look, each from its beginning: whatever they hold was written after this source began
    /// reading the others. A broker that does not answer is asked again at the next look.
    async fn scan(&mut self) -> Result<(), KafkaSourceError> {
        self.scanned_at = tokio::time::Instant::now();
        let consumer = Arc::clone(self.consumer.as_ref().expect("started"));
        let metadata = match fetch_topics(&consumer).await {
            Ok(metadata) => metadata,
            Err(err) => {
                tracing::warn!(error = %err, "could not look for new Kafka topics; trying again shortly");
                return Ok(());
            }
        };
        let mut added = TopicPartitionList::new();
        for (topic, partitions) in matching(&metadata, &self.config.topics) {
            for partition in partitions {
                if self.assigned.insert((topic.clone(), partition)) {
                    tracing::info!(%topic, partition, "new Kafka partition matches `topics`: reading it from its beginning");
                    added
                        .add_partition_offset(&topic, partition, Offset::Beginning)
                        .map_err(self.error("assigning partitions"))?;
                }
            }
        }
        if added.count() > 0 {
            consumer
                .incremental_assign(&added)
                .map_err(self.error("assigning partitions"))?;
        }
        Ok(())
    }

    /// Decodes one record into `events`: JSON, or Avro with the registry at `registry_url`.
    async fn take(
        &mut self,
        message: &OwnedMessage,
        events: &mut Vec<sluice_core::event::ChangeEvent>,
    ) -> Result<(), KafkaSourceError> {
        let (topic, partition, offset) = (message.topic(), message.partition(), message.offset());
        let fail = |reason: String| KafkaSourceError::Record {
            topic: topic.to_owned(),
            partition,
            offset,
            reason,
        };
        self.offsets
            .insert((topic.to_owned(), partition), offset + 1);
        let Some(value) = message.payload() else {
            return Ok(()); // a tombstone
        };
        let avro = value.first() == Some(&0);
        let (key, value) = if avro {
            let Some(registry) = self.registry.as_mut() else {
                return Err(fail(
                    "an Avro record (Confluent's wire format) and no registry_url to read its \
                     schema from: set registry_url to the registry Debezium's AvroConverter uses"
                        .into(),
                ));
            };
            let avro_error = |e: avro::AvroError| match e {
                avro::AvroError::Registry(reason) => KafkaSourceError::Registry(reason),
                avro::AvroError::Record(reason) => fail(reason),
            };
            let value = registry.decode(value).await.map_err(avro_error)?;
            let key = match message.key() {
                Some(key) if key.first() == Some(&0) => {
                    Some(registry.decode(key).await.map_err(avro_error)?)
                }
                Some(key) => Some(
                    serde_json::from_slice(key)
                        .map_err(|e| fail(format!("the key is neither Avro nor JSON: {e}")))?,
                ),
                None => None,
            };
            (key, value)
        } else {
            let parse = |bytes: &[u8], what: &str| -> Result<Json, KafkaSourceError> {
                serde_json::from_slice(bytes)
                    .map_err(|e| fail(format!("the {what} is not JSON: {e}")))
            };
            let value = parse(value, "value")?;
            let key = message.key().map(|k| parse(k, "key")).transpose()?;
            (key, value)
        };
        let at = At {
            topic,
            partition,
            offset,
        };
        if let Some(event) = self
            .decoder
            .decode(&at, key.as_ref(), &value, avro)
            .map_err(fail)?
        {
            events.push(event);
        }
        Ok(())
    }
}

/// All topics' metadata, fetched off the async workers (the call blocks up to 10 s).
async fn fetch_topics(consumer: &Arc<StreamConsumer>) -> Result<Metadata, KafkaError> {
    let consumer = Arc::clone(consumer);
    tokio::task::spawn_blocking(move || consumer.fetch_metadata(None, Duration::from_secs(10)))
        .await
        .expect("a metadata request does not panic")
}

impl Source for KafkaSource {
    type Error = KafkaSourceError;

    async fn start(&mut self, resume: Option<Checkpoint>) -> Result<(), KafkaSourceError> {
        self.consumer = None;
        let resumed = match resume.as_ref().map(|c| &c.position) {
            Some(Position::KafkaOffsets(text)) => parse_offsets(text)
                .ok_or_else(|| KafkaSourceError::ForeignCheckpoint(text.to_string()))?,
            Some(other) => return Err(KafkaSourceError::ForeignCheckpoint(other.to_string())),
            None => BTreeMap::new(),
        };
        let mut client = ClientConfig::new();
        client
            .set("bootstrap.servers", &self.config.brokers)
            .set("client.id", format!("sluice-{}", self.config.name))
            .set("group.id", format!("sluice-source-{}", self.config.name))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("isolation.level", "read_committed")
            .set("socket.connection.setup.timeout.ms", "10000");
        for (key, value) in &self.config.properties {
            client.set(key, value);
        }
        let consumer: StreamConsumer = client.create().map_err(self.error("connecting"))?;
        let consumer = Arc::new(consumer);
        let metadata =
            fetch_topics(&consumer)
                .await
                .map_err(|source| KafkaSourceError::Unreachable {
                    brokers: self.config.brokers.clone(),
                    reason: source
                        .rdkafka_error_code()
                        .map_or_else(|| source.to_string(), |code| code.to_string()),
                })?;
        let found = matching(&metadata, &self.config.topics);
        // A topic named outright must exist; a pattern may match nothing yet.
        if let Some(missing) = self
            .config
            .topics
            .iter()
            .find(|t| !t.contains('*') && !found.contains_key(*t))
        {
            return Err(KafkaSourceError::NoTopic {
                brokers: self.config.brokers.clone(),
                topic: missing.clone(),
            });
        }
        let mut assignment = TopicPartitionList::new();
        let mut offsets = BTreeMap::new();
        self.assigned.clear();
        for (topic, partitions) in &found {
            for &partition in partitions {
                let at = match resumed.get(&(topic.clone(), partition)) {
                    Some(next) => {
                        offsets.insert((topic.clone(), partition), *next);
                        Offset::Offset(*next)
                    }
                    None => match self.config.start {
                        StartAt::Earliest => Offset::Beginning,
                        StartAt::Latest => Offset::End,
                    },
                };
                assignment
                    .add_partition_offset(topic, partition, at)
                    .map_err(self.error("assigning partitions"))?;
                self.assigned.insert((topic.clone(), partition));
            }
        }
        consumer
            .assign(&assignment)
            .map_err(self.error("assigning partitions"))?;
        if found.is_empty() {
            tracing::warn!(topics = ?self.config.topics, "no Kafka topic matches yet; looking again every few seconds");
        }
        tracing::info!(
            topics = found.len(),
            partitions = assignment.count(),
            resumed = !resumed.is_empty(),
            "reading Kafka"
        );
        self.scanned_at = tokio::time::Instant::now();
        self.offsets = offsets;
        self.consumer = Some(consumer);
        Ok(())
    }

    async fn next_batch(&mut self) -> Result<Option<SourceBatch>, KafkaSourceError> {
        if self.scanned_at.elapsed() >= TOPIC_SCAN {
            self.scan().await?;
        }
        // The records first (dropping this future loses none: they are read again from the
        // last checkpoint), then the events decoded from them.
        let consumer = self.consumer.as_ref().expect("started");
        let mut messages: Vec<OwnedMessage> = Vec::new();
        let mut deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        while messages.len() < self.config.max_batch_events {
            let message = match tokio::time::timeout_at(deadline, consumer.recv()).await {
                Err(_) => break,
                Ok(Err(err)) => return Err(self.error("reading")(err)),
                Ok(Ok(message)) => message.detach(),
            };
            if messages.is_empty() {
                // A batch closes 100 ms after its first record at the latest.
                deadline = tokio::time::Instant::now() + Duration::from_millis(100);
            }
            messages.push(message);
        }
        if messages.is_empty() {
            return Ok(None);
        }
        let mut events = Vec::with_capacity(messages.len());
        for message in &messages {
            self.take(message, &mut events).await?;
        }
        Ok(Some(SourceBatch::new(events, Some(self.checkpoint()))))
    }

    async fn commit(&mut self, _checkpoint: &Checkpoint) -> Result<(), KafkaSourceError> {
        // Positions live in the log; nothing to acknowledge upstream.
        Ok(())
    }

    async fn shutdown(&mut self) -> Result<(), KafkaSourceError> {
        self.consumer = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_round_trip_through_their_text() {
        let mut offsets = BTreeMap::new();
        offsets.insert(("dbserver1.public.t".to_owned(), 0), 42);
        offsets.insert(("dbserver1.public.t".to_owned(), 1), 7);
        offsets.insert(("a.b.c".to_owned(), 0), 0);
        let text = offsets_text(&offsets);
        assert_eq!(
            text,
            "a.b.c/0@0,dbserver1.public.t/0@42,dbserver1.public.t/1@7"
        );
        assert_eq!(parse_offsets(&text), Some(offsets));
        assert_eq!(parse_offsets("x"), None);
    }
}
