//! The log on Apache Kafka (`[log] kind = "kafka"`): core's `EventLog` over a Kafka cluster, so
//! that the same sources, sinks and registry run on topics of a cluster instead of files.
//!
//! - Appends: one transactional producer per writer. A writer a process takes over (`claim`:
//!   each source, the registry) has `transactional.id = sluice-log-<writer>`, so a second
//!   process that starts the same source fences the first; the others (a sink's dead letters,
//!   which every process running the sink writes) get ids of their own process. A writer's
//!   appends since its last commit are one Kafka transaction; its checkpoint goes into the
//!   compacted topic `_sluice_checkpoints` (key: the writer) in that same transaction, so
//!   records and checkpoint become visible together, exactly once. Checkpoints that other
//!   processes commit are followed (`refresh_loop`).
//! - Reads: `read_committed` consumers assigned to one partition each (no group), reused while
//!   a reader goes on where it stopped. Reads go on from the consumer's position, past the
//!   transaction markers (`EventLog::read_from`).
//! - Offsets readers see end at each partition's last stable offset, kept in memory and
//!   refreshed in the background (and at once after a commit of this process), since sinks ask
//!   for it on every read.
//! - Consumer groups (`group_offsets`, `commit_offsets`) are Kafka's own, and every process
//!   that runs a sink is a member of its group, sharing its partitions (`group.rs`).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header as KafkaHeader, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use serde::Deserialize;
use sluice_core::event_log::{EventLog, LogError, PartitionBatch, ReadBatch};
use tokio::sync::watch;

mod checkpoints;
mod clients;
mod event_log;
mod group;

use clients::{
    client, consumer_config, for_each_record, position, process_id, send, stored, transient,
    watermarks,
};

/// The compacted topic of the writers' checkpoints (key: writer).
pub const CHECKPOINTS_TOPIC: &str = "_sluice_checkpoints";

/// How long a call to the cluster may take.
const TIMEOUT: Duration = Duration::from_secs(30);
/// How often the stable offsets of the partitions this process reads are asked (other
/// processes' commits show within this).
const REFRESH: Duration = Duration::from_millis(250);
/// How long a read waits for records it knows are there.
const READ_WAIT: Duration = Duration::from_secs(10);

/// `[log] kind = "kafka"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaLogConfig {
    /// Bootstrap brokers, `host:port,host:port`.
    pub brokers: String,
    /// Partitions of the topics sluice creates. Default 1.
    #[serde(default = "one")]
    pub partitions: u32,
    /// Replication factor of the topics sluice creates. Default: the broker's.
    #[serde(default)]
    pub replication_factor: Option<i32>,
    /// `min.insync.replicas` of the topics sluice creates. Default: the broker's.
    #[serde(default)]
    pub min_insync_replicas: Option<u32>,
    /// librdkafka properties for every client (`"security.protocol" = "ssl"`, …).
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// Settings of the topics sluice creates whose names a pattern matches; the first match
    /// wins over the defaults above.
    #[serde(default)]
    pub topic_settings: Vec<TopicSettings>,
}

/// `[[log.topic_settings]]`: how the topics a pattern matches are created.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicSettings {
    /// Topic name or pattern with `*` wildcards (`shop.public.*`; `_schemas` for sluice's own).
    pub topics: String,
    pub partitions: Option<u32>,
    pub replication_factor: Option<i32>,
    pub min_insync_replicas: Option<u32>,
    /// Topic configs, as Kafka names them (`"retention.ms" = "604800000"`).
    #[serde(default)]
    pub config: BTreeMap<String, String>,
}

fn one() -> u32 {
    1
}

/// What went wrong, with the cluster and the step.
#[derive(Debug, thiserror::Error)]
#[error("the log on Kafka at {brokers}: {action}: {source}")]
pub struct KafkaLogError {
    brokers: String,
    action: String,
    source: KafkaError,
}

/// The log on a Kafka cluster. Clones share it.
#[derive(Clone)]
pub struct KafkaLog {
    inner: Arc<Inner>,
}

struct Inner {
    config: KafkaLogConfig,
    admin: AdminClient<DefaultClientContext>,
    /// Topics and their partition counts, as the cluster's metadata says.
    topics: RwLock<BTreeMap<String, u32>>,
    topics_version: AtomicU64,
    /// Topics whose stable offsets this process asked for: the ones refreshed in the
    /// background (not every topic of a shared cluster).
    watched: RwLock<std::collections::HashSet<String>>,
    /// Last stable offset per partition (what `read_committed` readers see).
    stable: RwLock<HashMap<(String, u32), u64>>,
    checkpoints: RwLock<HashMap<String, String>>,
    /// Follows the checkpoints topic past what `open` read: other processes' writers' commits.
    checkpoint_tail: Mutex<Option<BaseConsumer>>,
    writers: Mutex<HashMap<String, Arc<Mutex<Writer>>>>,
    /// Writers this process took over (`claim`: sources, the registry): their transactional
    /// id is the writer's, so that a process taking one over fences any other. The others
    /// (dead letters, failure notes of a sink that several processes run) get one of this
    /// process's own, and never fence each other.
    claimed: Mutex<std::collections::HashSet<String>>,
    /// What makes this process's own transactional ids unique.
    process: String,
    /// Idle readers per partition, with the offset each goes on from.
    readers: Mutex<HashMap<(String, u32), Vec<Reader>>>,
    /// A client for metadata and watermarks (`read_committed`: its high watermark is the last
    /// stable offset).
    probe: BaseConsumer,
    /// Watermarks as a `read_uncommitted` reader sees them: past every record produced.
    probe_uncommitted: BaseConsumer,
    /// Checkpoints other processes committed, shown at the next refresh (see `refresh_loop`).
    pending_checkpoints: Mutex<Vec<(String, Option<String>)>>,
    /// Per consumer group, the consumer that commits and reads its offsets: this process's
    /// member of the group while it runs the sink.
    groups: Mutex<HashMap<String, Arc<group::GroupConsumer>>>,
    /// Per group, offsets a commit could not take during a rebalance: sent with the next.
    pending_commits: Mutex<HashMap<String, sluice_core::sink::Offsets>>,
    commits: watch::Sender<u64>,
}

/// What a commit made visible: the partitions it wrote, and the writer's new checkpoint.
type Appended = (Vec<(String, u32)>, Option<(String, Option<String>)>);

/// A writer's transactional producer and whether a transaction is open.
struct Writer {
    producer: BaseProducer,
    open: bool,
}

struct Reader {
    consumer: BaseConsumer,
    next: u64,
}

impl KafkaLog {
    /// Connects, creates the checkpoints topic if missing, reads the writers' checkpoints and
    /// the topics, and starts the background refresh of stable offsets.
    pub async fn open(config: KafkaLogConfig) -> Result<KafkaLog, KafkaLogError> {
        let fail = |action: &str| {
            let brokers = config.brokers.clone();
            let action = action.to_owned();
            move |source| KafkaLogError {
                brokers,
                action,
                source,
            }
        };
        let admin = client(&config).create().map_err(fail("connecting"))?;
        let probe: BaseConsumer = consumer_config(&config)
            .create()
            .map_err(fail("connecting"))?;
        let probe_uncommitted: BaseConsumer = consumer_config(&config)
            .set("isolation.level", "read_uncommitted")
            .create()
            .map_err(fail("connecting"))?;
        let (commits, _) = watch::channel(0);
        let log = KafkaLog {
            inner: Arc::new(Inner {
                config: config.clone(),
                admin,
                topics: RwLock::default(),
                topics_version: AtomicU64::new(0),
                stable: RwLock::default(),
                watched: RwLock::default(),
                checkpoints: RwLock::default(),
                checkpoint_tail: Mutex::default(),
                writers: Mutex::default(),
                claimed: Mutex::default(),
                process: process_id(),
                readers: Mutex::default(),
                probe,
                probe_uncommitted,
                pending_checkpoints: Mutex::default(),
                groups: Mutex::default(),
                pending_commits: Mutex::default(),
                commits,
            }),
        };
        log.create_topic(CHECKPOINTS_TOPIC, 1, true).await?;
        let this = log.clone();
        tokio::task::spawn_blocking(move || {
            this.refresh_metadata()?;
            // Readers start from offsets that mean something: a partition's stable offset is
            // never 0 for lack of asking.
            this.refresh_stable(Some(this.every_partition()));
            Ok(())
        })
        .await
        .expect("metadata does not panic")
        .map_err(fail("reading the cluster's topics"))?;
        let this = log.clone();
        let (checkpoints, tail) = tokio::task::spawn_blocking(move || this.read_checkpoints())
            .await
            .expect("reading does not panic")
            .map_err(fail("reading the writers' checkpoints"))?;
        *log.inner.checkpoints.write().expect("not poisoned") = checkpoints;
        *log.inner.checkpoint_tail.lock().expect("not poisoned") = Some(tail);
        sluice_core::task::spawn_in_span(refresh_loop(Arc::downgrade(&log.inner)));
        Ok(log)
    }

    fn error(&self, action: impl Into<String>, source: KafkaError) -> LogError {
        let mut action = action.into();
        let fenced = matches!(
            source.rdkafka_error_code(),
            Some(RDKafkaErrorCode::Fenced | RDKafkaErrorCode::ProducerFenced)
        );
        if fenced {
            action.push_str(
                ": another sluice process started this writer on the cluster and fenced this \
                 one. A source runs in one process at a time, so this one stops; run the other \
                 processes with `--only sinks`, or give each process its own sources",
            );
        }
        let error = Box::new(KafkaLogError {
            brokers: self.inner.config.brokers.clone(),
            action,
            source,
        });
        if fenced {
            LogError::Fenced(error)
        } else {
            LogError::Backend(error)
        }
    }

    /// Reads the topics and partition counts from the cluster's metadata.
    fn refresh_metadata(&self) -> Result<(), KafkaError> {
        let metadata = self.inner.probe.fetch_metadata(None, TIMEOUT)?;
        let found: BTreeMap<String, u32> = metadata
            .topics()
            .iter()
            .filter(|t| !t.name().starts_with("__") && t.error().is_none())
            .map(|t| (t.name().to_owned(), t.partitions().len() as u32))
            .collect();
        let mut topics = self.inner.topics.write().expect("not poisoned");
        if *topics != found {
            *topics = found;
            self.inner.topics_version.fetch_add(1, Ordering::SeqCst);
        }
        Ok(())
    }

    /// Every partition of the cluster.
    fn every_partition(&self) -> Vec<(String, u32)> {
        let topics = self.inner.topics.read().expect("not poisoned");
        topics
            .iter()
            .flat_map(|(t, n)| (0..*n).map(move |p| (t.clone(), p)))
            .collect()
    }

    /// Notes that this process reads `topic`: the background refresh asks its offsets.
    fn watch(&self, topic: &str) {
        if !self
            .inner
            .watched
            .read()
            .expect("not poisoned")
            .contains(topic)
        {
            self.inner
                .watched
                .write()
                .expect("not poisoned")
                .insert(topic.to_owned());
        }
    }

    /// Asks the stable offsets of `partitions` (when None: those of the topics this process
    /// reads); true when any moved.
    fn refresh_stable(&self, partitions: Option<Vec<(String, u32)>>) -> bool {
        let partitions = partitions.unwrap_or_else(|| {
            let topics = self.inner.topics.read().expect("not poisoned");
            let watched = self.inner.watched.read().expect("not poisoned");
            topics
                .iter()
                .filter(|(t, _)| watched.contains(*t))
                .flat_map(|(t, n)| (0..*n).map(move |p| (t.clone(), p)))
                .collect()
        });
        let mut moved = false;
        for (topic, partition) in partitions {
            let Ok((_, high)) =
                self.inner
                    .probe
                    .fetch_watermarks(&topic, partition as i32, Duration::from_secs(5))
            else {
                continue;
            };
            let high = high.max(0) as u64;
            let mut stable = self.inner.stable.write().expect("not poisoned");
            let entry = stable.entry((topic, partition)).or_insert(0);
            if high > *entry {
                *entry = high;
                moved = true;
            }
        }
        moved
    }

    /// After a commit of this process to `partitions`: waits (up to a few seconds) until their
    /// stable offsets cover every record produced to them, which happens once the commit's
    /// markers are written, moments after the commit returns. Only then may the commit's
    /// checkpoint show (sinks that apply whole commits take a checkpoint as the promise that
    /// all of its records can be read).
    fn settle_stable(&self, partitions: Vec<(String, u32)>) {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        for (topic, partition) in partitions {
            let Ok((_, produced)) = self.inner.probe_uncommitted.fetch_watermarks(
                &topic,
                partition as i32,
                Duration::from_secs(5),
            ) else {
                continue;
            };
            loop {
                self.refresh_stable(Some(vec![(topic.clone(), partition)]));
                if self.stable_offset(&topic, partition) >= produced.max(0) as u64
                    || std::time::Instant::now() > deadline
                {
                    break;
                }
                #[allow(clippy::disallowed_methods)] // on the blocking pool (`append`)
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }

    async fn create_topic(
        &self,
        topic: &str,
        partitions: u32,
        compact: bool,
    ) -> Result<u32, KafkaLogError> {
        let config = &self.inner.config;
        let fail = |source| KafkaLogError {
            brokers: config.brokers.clone(),
            action: format!("creating topic {topic}"),
            source,
        };
        if let Some(n) = self.partitions(topic) {
            return Ok(n);
        }
        let settings = config
            .topic_settings
            .iter()
            .find(|s| sluice_core::topic::pattern_takes(&s.topics, topic))
            .cloned()
            .unwrap_or_default();
        // sluice's compacted topics keep the partitions they are made with (one for the
        // registry and the checkpoints).
        let partitions = match settings.partitions {
            Some(n) if !compact => n,
            _ => partitions,
        };
        let replication = settings
            .replication_factor
            .or(config.replication_factor)
            .unwrap_or(-1);
        let mut new = NewTopic::new(
            topic,
            partitions as i32,
            TopicReplication::Fixed(replication),
        );
        let min_insync = settings
            .min_insync_replicas
            .or(config.min_insync_replicas)
            .map(|n| n.to_string());
        if let Some(n) = &min_insync {
            new = new.set("min.insync.replicas", n);
        }
        for (key, value) in &settings.config {
            new = new.set(key, value);
        }
        if compact {
            new = new.set("cleanup.policy", "compact");
        }
        let options = AdminOptions::new().operation_timeout(Some(TIMEOUT));
        let results = self
            .inner
            .admin
            .create_topics([&new], &options)
            .await
            .map_err(fail)?;
        for result in results {
            match result {
                Ok(_) => tracing::info!(topic, partitions, "created topic in Kafka"),
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((_, code)) => return Err(fail(KafkaError::AdminOp(code))),
            }
        }
        let this = self.clone();
        let name = topic.to_owned();
        // The metadata lists a new topic once each partition has a leader: within moments
        // usually, seconds on a fresh cluster that is still electing them.
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        while tokio::time::Instant::now() < deadline {
            let this = this.clone();
            tokio::task::spawn_blocking(move || this.refresh_metadata())
                .await
                .expect("metadata does not panic")
                .map_err(fail)?;
            if let Some(n) = self.partitions(&name) {
                return Ok(n);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(KafkaLogError {
            brokers: config.brokers.clone(),
            action: format!(
                "creating topic {topic}: the brokers did not list it with a leader for each \
                 partition within {} s of its creation (a broker down or still starting? check \
                 the brokers' logs; sluice takes the topic as it is at its next start)",
                TIMEOUT.as_secs()
            ),
            source: KafkaError::AdminOp(RDKafkaErrorCode::UnknownTopic),
        })
    }

    /// The writer's producer, made (and its transactions initialised, fencing any other process
    /// of the same writer) the first time.
    fn writer(&self, writer: &str) -> Result<Arc<Mutex<Writer>>, LogError> {
        let mut writers = self.inner.writers.lock().expect("not poisoned");
        if let Some(found) = writers.get(writer) {
            return Ok(Arc::clone(found));
        }
        let claimed = self
            .inner
            .claimed
            .lock()
            .expect("not poisoned")
            .contains(writer);
        let id = if claimed {
            format!("sluice-log-{writer}")
        } else {
            format!("sluice-log-{writer}-{}", self.inner.process)
        };
        let mut config = client(&self.inner.config);
        config
            .set("transactional.id", id)
            .set("enable.idempotence", "true")
            .set("acks", "all");
        // A source's transaction may stay open as long as one transaction of its database
        // streams (a bulk load of minutes): up to the brokers' default maximum,
        // `transaction.max.timeout.ms`, 15 minutes. (A crashed writer's open transaction does
        // not wait that long: the process that takes the writer over aborts it at once.)
        for (key, value) in [("linger.ms", "5"), ("transaction.timeout.ms", "900000")] {
            if !self.inner.config.properties.contains_key(key) {
                config.set(key, value);
            }
        }
        let producer: BaseProducer = config
            .create()
            .map_err(|e| self.error(format!("starting writer {writer}"), e))?;
        producer
            .init_transactions(TIMEOUT)
            .map_err(|e| self.error(format!("starting the transactions of writer {writer}"), e))?;
        let made = Arc::new(Mutex::new(Writer {
            producer,
            open: false,
        }));
        writers.insert(writer.to_owned(), Arc::clone(&made));
        Ok(made)
    }

    /// Appends on the calling (blocking) thread.
    fn append_blocking(
        &self,
        writer: &str,
        batches: Vec<PartitionBatch>,
        checkpoint: Option<String>,
    ) -> Result<Appended, LogError> {
        let handle = self.writer(writer)?;
        let mut state = handle.lock().expect("not poisoned");
        let fail = |action: &str, e| self.error(format!("{action} (writer {writer})"), e);
        if !state.open {
            state
                .producer
                .begin_transaction()
                .map_err(|e| fail("beginning a transaction", e))?;
            state.open = true;
        }
        let mut touched = Vec::new();
        for batch in batches {
            let topic = batch.topic.clone();
            touched.push((topic.clone(), batch.partition));
            for_each_record(batch.records, |record| {
                let mut headers = OwnedHeaders::new_with_capacity(record.headers().len());
                for header in record.headers() {
                    headers = headers.insert(KafkaHeader {
                        key: &header.key,
                        value: header.value.as_deref(),
                    });
                }
                let mut out = BaseRecord::to(&topic)
                    .partition(batch.partition as i32)
                    .timestamp(record.timestamp_ms())
                    .headers(headers);
                if let Some(key) = record.key() {
                    out = out.key(key);
                }
                if let Some(value) = record.value() {
                    out = out.payload(value);
                }
                send(&state.producer, out).map_err(|e| fail("producing", e))
            })?;
        }
        let Some(checkpoint) = checkpoint else {
            return Ok((Vec::new(), None));
        };
        let record = BaseRecord::to(CHECKPOINTS_TOPIC)
            .partition(0)
            .key(writer.as_bytes())
            .payload(checkpoint.as_bytes());
        send(&state.producer, record).map_err(|e| fail("producing the checkpoint", e))?;
        let committed = state.producer.commit_transaction(TIMEOUT);
        state.open = false;
        if let Err(err) = committed {
            // A transaction that did not commit is aborted: nothing of it is visible.
            let _ = state.producer.abort_transaction(TIMEOUT);
            return Err(fail("committing", err));
        }
        touched.sort_unstable();
        touched.dedup();
        Ok((touched, Some((writer.to_owned(), Some(checkpoint)))))
    }

    /// A reader of the partition positioned at `offset`: an idle one already there, or one
    /// moved (assigned) there.
    fn reader(&self, topic: &str, partition: u32, offset: u64) -> Result<Reader, LogError> {
        let key = (topic.to_owned(), partition);
        let mut idle = self.inner.readers.lock().expect("not poisoned");
        let pool = idle.entry(key).or_default();
        if let Some(i) = pool.iter().position(|r| r.next == offset) {
            return Ok(pool.swap_remove(i));
        }
        let reader = match pool.pop() {
            Some(reader) => reader,
            None => Reader {
                consumer: consumer_config(&self.inner.config)
                    .create()
                    .map_err(|e| self.error("starting a reader", e))?,
                next: offset,
            },
        };
        let mut assignment = TopicPartitionList::new();
        assignment
            .add_partition_offset(topic, partition as i32, Offset::Offset(offset as i64))
            .and_then(|()| reader.consumer.assign(&assignment))
            .map_err(|e| self.error(format!("reading {topic}/{partition}"), e))?;
        Ok(Reader {
            consumer: reader.consumer,
            next: offset,
        })
    }

    fn read_blocking(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        max_bytes: usize,
    ) -> Result<ReadBatch, LogError> {
        let stable = self.stable_offset(topic, partition);
        if offset >= stable {
            return Ok(ReadBatch {
                records: Vec::new(),
                next: offset,
            });
        }
        let mut reader = self.reader(topic, partition, offset)?;
        let mut records = Vec::new();
        let mut bytes = 0;
        // Records are known to be there: wait for the first (a new reader connects and
        // fetches first), then take what has arrived.
        let deadline = std::time::Instant::now() + READ_WAIT;
        let mut next = offset;
        while next < stable && bytes < max_bytes && std::time::Instant::now() < deadline {
            let wait = if records.is_empty() { 100 } else { 5 };
            match reader.consumer.poll(Duration::from_millis(wait)) {
                Some(Ok(message)) => {
                    let at = message.offset() as u64;
                    bytes += message.payload_len() + message.key().map_or(0, <[u8]>::len);
                    records.push(stored(&message));
                    next = at + 1;
                }
                Some(Err(KafkaError::PartitionEOF(_))) => {}
                // A broker down or a leader moving: the consumer reconnects and fetches from
                // the new leader by itself. The read comes back short, and is asked again.
                Some(Err(err)) if transient(&err) => {
                    tracing::debug!(%topic, partition, error = %err, "reading the log on Kafka: retrying");
                    if !records.is_empty() {
                        break;
                    }
                }
                Some(Err(err)) => {
                    return Err(self.error(format!("reading {topic}/{partition}"), err));
                }
                None if !records.is_empty() => break,
                None => {}
            }
            // Past the transaction markers the consumer skipped.
            if let Some(position) = position(&reader.consumer, topic, partition) {
                next = next.max(position);
            }
        }
        // A read_committed reader never goes past the last stable offset: where it got is
        // stable, even if the cached offset has not caught up yet.
        if next > stable {
            let mut cached = self.inner.stable.write().expect("not poisoned");
            let entry = cached.entry((topic.to_owned(), partition)).or_insert(0);
            *entry = (*entry).max(next);
        }
        reader.next = next;
        self.inner
            .readers
            .lock()
            .expect("not poisoned")
            .entry((topic.to_owned(), partition))
            .or_default()
            .push(reader);
        Ok(ReadBatch { records, next })
    }

    /// The consumer that commits and reads `group`'s offsets.
    fn group(&self, group: &str) -> Result<Arc<group::GroupConsumer>, LogError> {
        let mut groups = self.inner.groups.lock().expect("not poisoned");
        if let Some(found) = groups.get(group) {
            return Ok(Arc::clone(found));
        }
        let consumer: group::GroupConsumer = consumer_config(&self.inner.config)
            .set("group.id", group)
            .create_with_context(group::MemberContext::default())
            .map_err(|e| self.error(format!("joining consumer group {group}"), e))?;
        let consumer = Arc::new(consumer);
        groups.insert(group.to_owned(), Arc::clone(&consumer));
        Ok(consumer)
    }

    fn all_partitions(&self) -> TopicPartitionList {
        let mut list = TopicPartitionList::new();
        for (topic, n) in self.inner.topics.read().expect("not poisoned").iter() {
            for partition in 0..*n {
                list.add_partition(topic, partition as i32);
            }
        }
        list
    }
}

/// Asks the cluster for new topics and the stable offsets of every partition until the log is
/// dropped; a change wakes the readers.
async fn refresh_loop(inner: std::sync::Weak<Inner>) {
    let mut tick = 0u64;
    loop {
        tokio::time::sleep(REFRESH).await;
        let Some(inner) = inner.upgrade() else { return };
        let log = KafkaLog { inner };
        let metadata = tick.is_multiple_of(8);
        let refreshed = tokio::task::spawn_blocking(move || {
            let before = log.inner.topics_version.load(Ordering::SeqCst);
            if metadata {
                let _ = log.refresh_metadata();
            }
            // Checkpoints read now show after the next refresh of the stable offsets: their
            // commits' markers (written moments after the checkpoint's) are in by then.
            let seen = log.newer_checkpoints();
            let moved = log.refresh_stable(None)
                || log.inner.topics_version.load(Ordering::SeqCst) != before;
            let ready = std::mem::replace(
                &mut *log.inner.pending_checkpoints.lock().expect("not poisoned"),
                seen,
            );
            let moved = moved || !ready.is_empty();
            log.publish_checkpoints(ready);
            if moved {
                log.inner.commits.send_modify(|n| *n += 1);
            }
        })
        .await;
        if refreshed.is_err() {
            return;
        }
        tick += 1;
    }
}
