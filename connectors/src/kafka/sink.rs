//! Produces the log's records to Kafka as they are stored: the key (the row's key struct), the
//! value (Debezium's JSON envelope, or Avro in Confluent's wire format against sluice's
//! registry; a tombstone after a delete), the timestamp and the headers. Keys are partitioned
//! with murmur2, as Kafka's Java producer does, so a key lands where a Java producer would put
//! it.
//!
//! Exactly once: Kafka transactions (each spanning rounds, see `produce.rs`) hold the records
//! and, in the sink's compacted offsets topic, the next log offset of every partition they
//! read. `open` fences any earlier producer of the sink (`init_transactions` aborts its open
//! transaction) and reads the offsets back, so the runtime resumes right after the last
//! commit: a `read_committed` consumer sees each record once, whatever crashed. At least once:
//! records are acknowledged by every in-sync replica before the log's offsets are committed.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::Producer;
use rdkafka::{Offset, TopicPartitionList};
use sluice_core::change::DecodeError;
use sluice_core::retry::{Classify, ErrorKind};
use sluice_core::sink::{DeadLetterError, DeadLetterWriter, Offsets, RecordSink, SinkRecord};
use sluice_schema_registry::json::debezium::DebeziumJson;
use sluice_schema_registry::registry::Registry;

use self::delivery::{Deliveries, SinkContext, SinkProducer};
use self::produce::InFlight;
use super::config::{Delivery, KafkaSinkConfig};

mod delivery;
mod produce;
mod rewrite;
mod topics;

/// How long a transaction's commit (or abort, or the fencing at start) may take.
const TXN_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum KafkaSinkError {
    // (The reason is in the message, not a `#[source]`: librdkafka's errors repeat their
    // cause in their own text, and a chain would say it three times.)
    #[error("Kafka at {brokers}: {action}: {source}")]
    Kafka {
        brokers: String,
        action: &'static str,
        source: KafkaError,
    },
    #[error("Kafka at {brokers}: producing to topic {topic}: {source}{}", topic_hint(.source))]
    Topic {
        brokers: String,
        topic: Box<str>,
        source: KafkaError,
    },
    #[error(
        "no Kafka broker answers at {brokers} ({reason}); check that the brokers run and that \
         `brokers` names their listeners (host:port)"
    )]
    Unreachable { brokers: String, reason: String },
    #[error(
        "Kafka at {brokers}: another process took over sink {sink}'s transactions (its \
         transactional id sluice-{sink}): two sluice processes run this sink; stop one"
    )]
    Fenced { brokers: String, sink: String },
    #[error(
        "the record at {topic}[{partition}] offset {offset} ({size} bytes, key {key}) is larger \
         than the broker or producer accepts (message.max.bytes); raise message.max.bytes on \
         the broker and in the sink's properties, set dead_letter_topic to divert such \
         records, or leave the table out (the dead-letter topic takes what the producer \
         refuses: keep the sink's message.max.bytes property at or below the broker's and \
         the topic's max.message.bytes)"
    )]
    TooLarge {
        topic: String,
        partition: u32,
        offset: u64,
        size: usize,
        key: String,
    },
    #[error("{0}; deliver the topic with format = \"sluice\" to pass records through as they are")]
    Transcode(DecodeError),
    #[error(transparent)]
    DeadLetter(DeadLetterError),
    #[error("Kafka at {brokers}: the offsets topic {topic} holds {found:?}, which is not the sink's; delete the topic (the sink then starts over) or rename the sink")]
    BadOffsets {
        brokers: String,
        topic: String,
        found: String,
    },
}

impl Classify for KafkaSinkError {
    fn kind(&self) -> ErrorKind {
        match self {
            KafkaSinkError::Kafka { source, .. } | KafkaSinkError::Topic { source, .. } => {
                let code = source.rdkafka_error_code();
                let refused = matches!(
                    code,
                    Some(
                        RDKafkaErrorCode::TopicAuthorizationFailed
                            | RDKafkaErrorCode::ClusterAuthorizationFailed
                            | RDKafkaErrorCode::TransactionalIdAuthorizationFailed
                            | RDKafkaErrorCode::InvalidConfig
                            | RDKafkaErrorCode::InvalidArgument
                            | RDKafkaErrorCode::InvalidTopic
                    )
                ) || matches!(source, KafkaError::ClientCreation(_));
                if refused {
                    ErrorKind::Definite
                } else {
                    ErrorKind::Transient
                }
            }
            KafkaSinkError::Unreachable { .. } => ErrorKind::Transient,
            KafkaSinkError::DeadLetter(err) => err.kind(),
            KafkaSinkError::Fenced { .. }
            | KafkaSinkError::TooLarge { .. }
            | KafkaSinkError::Transcode(_)
            | KafkaSinkError::BadOffsets { .. } => ErrorKind::Definite,
        }
    }
}

/// What to do about an error a topic gave.
fn topic_hint(source: &KafkaError) -> &'static str {
    match source.rdkafka_error_code() {
        Some(RDKafkaErrorCode::TopicAuthorizationFailed) => {
            "; grant the sink's principal WRITE and DESCRIBE on the topic (an ACL), or \
             route the table elsewhere with `topic`"
        }
        _ => "",
    }
}

/// The Kafka sink.
pub struct KafkaSink {
    config: KafkaSinkConfig,
    producer: Option<Arc<SinkProducer>>,
    /// The producer's delivery reports.
    deliveries: Arc<Deliveries>,
    /// Kafka topics known to exist (created by the sink or found).
    topics: HashSet<String>,
    /// Rewrites JSON values in Debezium's forms (`format = "debezium"`).
    transcoder: Option<DebeziumJson>,
    /// Where records Kafka refuses go (`dead_letter_topic`).
    dead_letters: Option<DeadLetterWriter>,
    /// What the producer holds uncommitted (the open transaction, or the round being
    /// acknowledged).
    in_flight: Option<InFlight>,
    /// Exactly once: what Kafka holds committed, the next log offset per partition.
    committed: Offsets,
}

impl KafkaSink {
    pub fn new(
        config: KafkaSinkConfig,
        registry: Arc<Registry>,
        dead_letters: Option<DeadLetterWriter>,
    ) -> KafkaSink {
        let transcoder = config
            .forms()
            .map(|forms| DebeziumJson::new(registry, forms));
        KafkaSink {
            config,
            producer: None,
            deliveries: Arc::default(),
            topics: HashSet::new(),
            transcoder,
            dead_letters,
            in_flight: None,
            committed: Offsets::new(),
        }
    }

    fn transactional(&self) -> bool {
        self.config.delivery == Delivery::ExactlyOnce
    }

    fn error(&self, action: &'static str) -> impl Fn(KafkaError) -> KafkaSinkError + '_ {
        move |source| {
            if source.rdkafka_error_code() == Some(RDKafkaErrorCode::Fenced)
                || source.rdkafka_error_code() == Some(RDKafkaErrorCode::ProducerFenced)
            {
                return KafkaSinkError::Fenced {
                    brokers: self.config.brokers.clone(),
                    sink: self.config.name.clone(),
                };
            }
            KafkaSinkError::Kafka {
                brokers: self.config.brokers.clone(),
                action,
                source,
            }
        }
    }

    fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.config.brokers)
            .set("client.id", format!("sluice-{}", self.config.name))
            // Unreachable brokers are reported, not retried forever inside librdkafka.
            .set("socket.connection.setup.timeout.ms", "10000");
        config
    }

    fn producer_config(&self) -> ClientConfig {
        let mut config = self.client_config();
        config
            // Java's default partitioner for keyed records (null keys: random).
            .set("partitioner", "murmur2_random")
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            // Records wait for room in the producer's queue instead of piling up in it
            // (librdkafka's default allows 1 GiB): memory stays bounded. 8 MiB is tens of
            // milliseconds of sending at full speed, and as fast as 16 MiB was.
            .set("queue.buffering.max.kbytes", "8192")
            // (No longer than a transaction may stay open.)
            .set("message.timeout.ms", "60000");
        if self.config.delivery == Delivery::ExactlyOnce {
            config
                .set("transactional.id", format!("sluice-{}", self.config.name))
                .set("transaction.timeout.ms", "60000");
        }
        for (key, value) in &self.config.properties {
            config.set(key, value);
        }
        config
    }

    /// Creates the topics of `names` that do not exist yet (with the configured partitions,
    /// replication factor and cleanup policy).
    async fn ensure_topics(
        &mut self,
        names: &[String],
        compact: bool,
    ) -> Result<(), KafkaSinkError> {
        let missing: Vec<&String> = names.iter().filter(|t| !self.topics.contains(*t)).collect();
        if missing.is_empty() {
            return Ok(());
        }
        let admin: AdminClient<DefaultClientContext> = self
            .client_config()
            .create()
            .map_err(self.error("connecting"))?;
        let replication = self.config.replication_factor.unwrap_or(-1);
        let policy = if compact {
            Some("compact")
        } else {
            self.config.cleanup_policy.as_deref()
        };
        let partitions = if compact {
            1
        } else {
            self.config.partitions.unwrap_or(-1)
        };
        let new: Vec<NewTopic<'_>> = missing
            .iter()
            .map(|name| {
                let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(replication));
                match policy {
                    Some(policy) => topic.set("cleanup.policy", policy),
                    None => topic,
                }
            })
            .collect();
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        let results = admin
            .create_topics(new.iter(), &options)
            .await
            .map_err(self.error("creating topics"))?;
        for result in results {
            match result {
                Ok(name) => {
                    tracing::info!(topic = %name, "Kafka topic created");
                    self.topics.insert(name);
                }
                Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => {
                    self.topics.insert(name);
                }
                Err((name, code)) => {
                    return Err(KafkaSinkError::Kafka {
                        brokers: self.config.brokers.clone(),
                        action: if name.is_empty() {
                            "creating topics"
                        } else {
                            "creating a topic"
                        },
                        source: KafkaError::AdminOp(code),
                    });
                }
            }
        }
        Ok(())
    }

    /// The offsets the sink committed in its transactions, read back from its offsets topic
    /// (committed records only).
    async fn read_offsets(&self) -> Result<Offsets, KafkaSinkError> {
        let topic = self.config.offsets_topic();
        let mut config = self.client_config();
        config
            .set("group.id", format!("sluice-{}-offsets", self.config.name))
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed");
        let consumer: BaseConsumer = config.create().map_err(self.error("connecting"))?;
        let brokers = self.config.brokers.clone();
        let read = tokio::task::spawn_blocking(
            move || -> Result<Offsets, (&'static str, KafkaError, Option<String>)> {
                let (_, high) = consumer
                    .fetch_watermarks(&topic, 0, Duration::from_secs(30))
                    .map_err(|e| ("reading the offsets topic", e, None))?;
                let mut offsets = Offsets::new();
                if high == 0 {
                    return Ok(offsets);
                }
                let mut assignment = TopicPartitionList::new();
                assignment
                    .add_partition_offset(&topic, 0, Offset::Beginning)
                    .map_err(|e| ("reading the offsets topic", e, None))?;
                consumer
                    .assign(&assignment)
                    .map_err(|e| ("reading the offsets topic", e, None))?;
                let deadline = std::time::Instant::now() + Duration::from_secs(60);
                loop {
                    let position = consumer
                        .position()
                        .ok()
                        .and_then(|list| list.find_partition(&topic, 0)?.offset().to_raw())
                        .unwrap_or(0);
                    if position >= high {
                        return Ok(offsets);
                    }
                    if std::time::Instant::now() > deadline {
                        return Err((
                            "reading the offsets topic (not to its end within 60 s)",
                            KafkaError::NoMessageReceived,
                            None,
                        ));
                    }
                    let Some(message) = consumer.poll(Duration::from_millis(500)) else {
                        continue;
                    };
                    let message = message.map_err(|e| ("reading the offsets topic", e, None))?;
                    let (Some(key), Some(value)) = (message.key(), message.payload()) else {
                        continue;
                    };
                    let key = String::from_utf8_lossy(key);
                    let value = String::from_utf8_lossy(value);
                    let parsed = key.rsplit_once(':').and_then(|(log_topic, partition)| {
                        Some((
                            log_topic.to_owned(),
                            partition.parse().ok()?,
                            value.parse().ok()?,
                        ))
                    });
                    match parsed {
                        Some((log_topic, partition, next)) => {
                            offsets.insert((log_topic, partition), next);
                        }
                        None => {
                            return Err((
                                "",
                                KafkaError::NoMessageReceived,
                                Some(format!("{key}={value}")),
                            ))
                        }
                    }
                }
            },
        )
        .await
        .expect("the offsets reader does not panic");
        read.map_err(|(action, source, bad)| match bad {
            Some(found) => KafkaSinkError::BadOffsets {
                brokers,
                topic: self.config.offsets_topic(),
                found,
            },
            None => self.error(action)(source),
        })
    }

    /// Runs a blocking transaction call of the producer off the async workers.
    async fn txn(
        &self,
        action: &'static str,
        call: impl FnOnce(&SinkProducer) -> Result<(), KafkaError> + Send + 'static,
    ) -> Result<(), KafkaSinkError> {
        let producer = self.producer.clone().expect("opened");
        tokio::task::spawn_blocking(move || call(&producer))
            .await
            .expect("a producer call does not panic")
            .map_err(self.error(action))
    }
}

/// No broker answered a metadata request: what librdkafka says, once.
pub(super) fn unreachable(brokers: &str, source: &KafkaError) -> KafkaSinkError {
    let reason = match source.rdkafka_error_code() {
        Some(code) => code.to_string(),
        None => source.to_string(),
    };
    KafkaSinkError::Unreachable {
        brokers: brokers.to_owned(),
        reason,
    }
}

impl RecordSink for KafkaSink {
    type Error = KafkaSinkError;

    async fn open(&mut self) -> Result<Option<Offsets>, KafkaSinkError> {
        self.producer = None;
        // Whatever the last producer held uncommitted is aborted when the new one starts
        // its transactions (or, at least once, is sent again by the runtime).
        self.in_flight = None;
        // A new producer reports into new counts: whatever the last one had in flight is
        // no longer waited for.
        self.deliveries = Arc::default();
        let producer: SinkProducer = self
            .producer_config()
            .create_with_context(SinkContext(Arc::clone(&self.deliveries)))
            .map_err(self.error("connecting"))?;
        self.producer = Some(Arc::new(producer));
        // The brokers answer (or the start fails, naming them).
        let probe = self.producer.clone().expect("set above");
        tokio::task::spawn_blocking(move || {
            probe
                .client()
                .fetch_metadata(None, Duration::from_secs(10))
                .map(drop)
        })
        .await
        .expect("a metadata request does not panic")
        .map_err(|source| unreachable(&self.config.brokers, &source))?;
        if self.config.delivery == Delivery::AtLeastOnce {
            // What Kafka acknowledged is in the log's offsets: start from those.
            self.committed = Offsets::new();
            tracing::info!("Kafka sink connected; at least once, resuming after the log's offsets");
            return Ok(None);
        }
        self.ensure_topics(&[self.config.offsets_topic()], true)
            .await?;
        // Fences an earlier producer of this sink and aborts its open transaction, so that
        // the offsets read next are final.
        self.txn("starting transactions", |p| {
            p.init_transactions(TXN_TIMEOUT)
        })
        .await?;
        let offsets = self.read_offsets().await?;
        self.committed = offsets.clone();
        // Where it resumes, per log partition (the first ten): what to compare with the log
        // when a record seems missing or doubled in Kafka.
        let mut next: Vec<String> = offsets
            .iter()
            .take(10)
            .map(|((topic, partition), next)| format!("{topic}[{partition}]={next}"))
            .collect();
        if offsets.is_empty() {
            next.push("none".into());
        } else if offsets.len() > 10 {
            next.push(format!("and {} more", offsets.len() - 10));
        }
        tracing::info!(
            partitions = offsets.len(),
            next = %next.join(", "),
            "resuming after the offsets committed in Kafka"
        );
        Ok((!offsets.is_empty()).then_some(offsets))
    }

    async fn write(&mut self, records: &[SinkRecord]) -> Result<(), KafkaSinkError> {
        if records.is_empty() {
            return Ok(());
        }
        self.produce_round(records, None).await
    }

    /// Commits the open transaction (exactly once; at least once, `write` waited already).
    async fn flush(&mut self) -> Result<(), KafkaSinkError> {
        self.commit().await
    }

    /// What Kafka holds: committed in transactions (exactly once), or acknowledged (at least
    /// once).
    fn applied(&self) -> Option<&Offsets> {
        Some(&self.committed)
    }

    fn resume_from(&mut self, offsets: &Offsets) {
        self.committed = offsets.clone();
    }

    async fn close(&mut self) -> Result<(), KafkaSinkError> {
        if self.producer.is_some() {
            self.commit().await?;
        }
        if let Some(producer) = self.producer.take() {
            let flushed =
                tokio::task::spawn_blocking(move || producer.flush(Duration::from_secs(30)))
                    .await
                    .expect("a flush does not panic");
            flushed.map_err(self.error("flushing"))?;
        }
        Ok(())
    }
}

impl crate::reshape::ReshapedSink for KafkaSink {
    async fn write_reshaped(
        &mut self,
        records: &[SinkRecord],
        to: &[crate::reshape::Destination],
    ) -> Result<(), KafkaSinkError> {
        if records.is_empty() {
            return Ok(());
        }
        self.produce_round(records, Some(to)).await
    }
}
