//! sluice-log: the embedded, partitioned, durable log every event passes through.
//!
//! Layout of a log directory:
//! ```text
//! .lock                          held by the one process that writes this log
//! control/{base:020}.log         commit records (see `commit`)
//! topics/<topic>/topic.json      {"partitions": N, "compact": bool}
//! topics/<topic>/<p>/{base:020}.log   segments of Kafka v2 record batches (see `segment`)
//! topics/__consumer_offsets/0/   committed consumer offsets, compacted (see `groups`)
//! ```
//! A writer appends a transaction to several partitions with [`Log::append_txn`]; it becomes
//! visible to readers all at once, after it is durable under the fsync policy, and a crash in the
//! middle leaves none of it visible. Readers read committed records by offset and wait for new
//! ones on [`Log::subscribe`]. This crate knows nothing of sluice's events: keys, values and
//! checkpoints are bytes and strings.

mod append;
mod commit;
mod compaction;
mod event_log;
pub mod failpoint;
#[doc(hidden)]
pub mod fuzzing;
mod groups;
mod partition;
mod recovery;
mod repair;
mod retention;
mod segment;
pub mod storage;

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use commit::WriterState;
pub use compaction::CompactionStats;
pub use event_log::EmbeddedLog;
use partition::parking::Guarded;
use partition::Partition;
pub use repair::{LostRange, RepairReport};
use serde::{Deserialize, Serialize};
// The record model and batch codec are core's: every log backend speaks them.
use sluice_core::batch::{self, BatchError, PartitionBatch, StoredRecord};
use sluice_core::topic::glob_match;
use tokio::sync::watch;

/// Written on clean close, removed on open: without it the active segments are CRC-checked.
const CLEAN_SHUTDOWN_MARKER: &str = ".clean_shutdown";

/// When appended data is fsynced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Before a transaction is acknowledged (one fsync per touched file per transaction).
    Always,
    /// At most this long after an append; acknowledgements do not wait for it.
    Interval(Duration),
    /// Left to the operating system.
    Never,
}

#[derive(Debug, Clone)]
pub struct LogOptions {
    pub fsync: FsyncPolicy,
    /// A segment rolls when the next batch would take it past this size.
    pub segment_bytes: u64,
    /// A segment also rolls once it has been the active one this long. Default none.
    pub segment_max_age: Option<Duration>,
    /// Which old segments [`Log::enforce_retention`] deletes.
    pub retention: Retention,
    /// Per-topic fsync policies: the first pattern (`*` wildcards) matching a topic name wins
    /// over `fsync`.
    pub topic_fsync: Vec<(String, FsyncPolicy)>,
    /// Where segment files live: the file system, or a fault-injecting stand-in in tests.
    pub storage: Arc<dyn storage::Storage>,
    /// How data batches are compressed (the control partition's commit records never are).
    pub compression: batch::Compression,
}

impl LogOptions {
    /// The fsync policy of `topic`.
    pub fn fsync_for(&self, topic: &str) -> FsyncPolicy {
        self.topic_fsync
            .iter()
            .find(|(pattern, _)| glob_match(pattern, topic))
            .map_or(self.fsync, |(_, policy)| *policy)
    }

    fn shortest_interval(&self) -> Option<Duration> {
        std::iter::once(self.fsync)
            .chain(self.topic_fsync.iter().map(|(_, policy)| *policy))
            .filter_map(|policy| match policy {
                FsyncPolicy::Interval(every) => Some(every),
                _ => None,
            })
            .min()
    }

    fn settings(&self, compacted: bool) -> partition::Settings {
        partition::Settings {
            storage: Arc::clone(&self.storage),
            bytes: self.segment_bytes,
            max_age: self.segment_max_age,
            compacted,
            compression: self.compression,
        }
    }
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            fsync: FsyncPolicy::Always,
            segment_bytes: 128 * 1024 * 1024,
            segment_max_age: None,
            retention: Retention::default(),
            topic_fsync: Vec::new(),
            storage: Arc::new(storage::FileSystem),
            compression: batch::Compression::default(),
        }
    }
}

/// Retention per partition. Only whole, committed segments older than the active one are ever
/// deleted; a segment's age is the time of its last append (not its records' source times,
/// which can be old when a source catches up).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    pub max_age: Option<Duration>,
    pub max_bytes: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("could not {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("log data is corrupt: {0}")]
    Corrupt(String),
    #[error("topic {0} does not exist")]
    UnknownTopic(String),
    #[error("topic {topic} has {partitions} partitions; there is no partition {partition}")]
    UnknownPartition {
        topic: String,
        partition: u32,
        partitions: u32,
    },
    #[error("{kind} name {name:?} is invalid: use 1 to 249 characters of a-z, A-Z, 0-9, '.', '_' and '-'")]
    InvalidName { kind: &'static str, name: String },
    #[error("offset {offset} of {partition} is before the log start offset {start}")]
    OffsetOutOfRange {
        partition: String,
        offset: u64,
        start: u64,
    },
    #[error("the log at {} is in use by another process (another `sluice run` on the same [log] dir?)", .0.display())]
    Locked(PathBuf),
    #[error(
        "partition {topic}/{partition} ends at offset {found} but its last commit recorded {committed}: \
         acknowledged data is missing from disk (was fsync off when the machine crashed?)"
    )]
    CommittedDataMissing {
        topic: String,
        partition: u32,
        found: u64,
        committed: u64,
    },
    #[error(
        "{what}: committed data is damaged in {} at byte {position} (offset {offset}, committed up \
         to {committed}): {reason}. Nothing on disk was changed. Keep a copy of the log directory, \
         then run `sluice log repair -c FILE`: it moves the damaged bytes aside, keeps every \
         record it can still verify, and reports exactly which offsets are lost",
        segment.display()
    )]
    CommittedDataCorrupt {
        /// `topic/partition`, or the control partition.
        what: String,
        segment: PathBuf,
        position: u64,
        offset: u64,
        /// Where the commits say the partition ends (for the control partition: its file end).
        committed: u64,
        reason: String,
    },
    #[error("the log was opened read-only")]
    ReadOnly,
    #[error("an earlier write to the log failed; restart sluice so that the log recovers to what was committed")]
    Failed,
    #[error("a record is larger than the log's largest batch ({max} bytes)")]
    RecordTooLarge { max: usize },
}

impl From<BatchError> for LogError {
    fn from(err: BatchError) -> LogError {
        LogError::Corrupt(err.0)
    }
}

impl From<LogError> for sluice_core::event_log::LogError {
    fn from(err: LogError) -> Self {
        use sluice_core::event_log::LogError as Core;
        match err {
            LogError::UnknownTopic(topic) => Core::UnknownTopic(topic),
            other => Core::Backend(Box::new(other)),
        }
    }
}

impl LogError {
    pub(crate) fn io(action: &'static str, path: &Path, source: io::Error) -> LogError {
        LogError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn corrupt(message: impl Into<String>) -> LogError {
        LogError::Corrupt(message.into())
    }
}

/// End offset per `(topic, partition)`.
pub type PartitionEnds = BTreeMap<(String, u32), u64>;

/// What `sluice log describe` shows of a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionDescription {
    pub start: u64,
    /// Readers see offsets below this.
    pub stable: u64,
    /// Next offset to be written (past `stable` while a transaction is being appended).
    pub end: u64,
    pub segments: usize,
    pub bytes: u64,
}

/// Offsets of a partition: readers see `[start, stable)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionOffsets {
    pub start: u64,
    pub stable: u64,
}

struct Topic {
    partitions: Vec<Guarded>,
    compact: bool,
}

struct Control {
    partition: Partition,
    writers: BTreeMap<String, WriterState>,
}

/// The log. Share it as `Arc<Log>`: appends and reads take `&self`.
///
/// Concurrency: each partition has one writer; calls of `append_txn` for the same writer must
/// not overlap. Any number of readers read concurrently with the writer.
pub struct Log {
    dir: PathBuf,
    options: LogOptions,
    writable: bool,
    _lock: Option<File>,
    topics: RwLock<BTreeMap<String, Arc<Topic>>>,
    /// Bumped after each topic creation (`topics_version`).
    topics_version: std::sync::atomic::AtomicU64,
    control: Mutex<Control>,
    last_sync: Mutex<Instant>,
    commits: watch::Sender<u64>,
    /// Per writer, partitions with uncommitted appends and where those end.
    pending: Mutex<BTreeMap<String, PartitionEnds>>,
    /// Set when a write failed midway: no more writes (see `fail`).
    failed: std::sync::atomic::AtomicBool,
    /// Group commit of the control partition (see `sync_control_through`).
    control_sync: Mutex<ControlSync>,
    /// Consumer-group offsets (see `groups`); the lock also serializes their commits.
    groups: Mutex<groups::Groups>,
    control_synced: Condvar,
}

/// How far the control partition is known durable, and whether a sync is under way.
struct ControlSync {
    durable_end: u64,
    leader: bool,
}

#[derive(Serialize, Deserialize)]
struct TopicMeta {
    partitions: u32,
    /// Key-compacted (latest value per key) rather than deleted by retention.
    #[serde(default)]
    compact: bool,
}

impl Log {
    /// How data batches are compressed (`LogOptions::compression`).
    pub fn compression(&self) -> batch::Compression {
        self.options.compression
    }

    /// Opens (creating if needed) the log at `dir` for writing, recovering from any unclean stop.
    pub fn open(dir: impl AsRef<Path>, options: LogOptions) -> Result<Log, LogError> {
        let dir = dir.as_ref().to_path_buf();
        for sub in ["control", "topics"] {
            let path = dir.join(sub);
            fs::create_dir_all(&path)
                .map_err(|e| LogError::io("create log directory", &path, e))?;
        }
        let lock_path = dir.join(".lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| LogError::io("open lock file", &lock_path, e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Err(LogError::Locked(dir)),
            Err(fs::TryLockError::Error(e)) => return Err(LogError::io("lock", &lock_path, e)),
        }
        Log::load(dir, options, Some(lock))
    }

    /// Opens an existing log for reading while another process may be writing it. Shows what
    /// was committed when it was opened; nothing on disk changes.
    pub fn open_read_only(dir: impl AsRef<Path>) -> Result<Log, LogError> {
        let dir = dir.as_ref().to_path_buf();
        if !dir.join("control").is_dir() {
            return Err(LogError::io(
                "open log",
                &dir,
                io::Error::new(
                    io::ErrorKind::NotFound,
                    "no sluice log here (no control/ directory)",
                ),
            ));
        }
        Log::load(dir, LogOptions::default(), None)
    }

    /// Creates a topic if it does not exist; returns its partition count (an existing topic
    /// keeps the count it has).
    pub fn create_topic(&self, name: &str, partitions: u32) -> Result<u32, LogError> {
        self.create_topic_with(name, partitions, false)
    }

    /// Creates a key-compacted topic (see [`Log::compact`]) if it does not exist.
    pub fn create_compacted_topic(&self, name: &str, partitions: u32) -> Result<u32, LogError> {
        self.create_topic_with(name, partitions, true)
    }

    fn create_topic_with(
        &self,
        name: &str,
        partitions: u32,
        compact: bool,
    ) -> Result<u32, LogError> {
        if !self.writable {
            return Err(LogError::ReadOnly);
        }
        validate_name("topic", name)?;
        if let Some(existing) = self.topic_partitions(name) {
            return Ok(existing);
        }
        let mut topics = self.topics.write().unwrap_or_else(|p| p.into_inner());
        if let Some(topic) = topics.get(name) {
            return Ok(topic.partitions.len() as u32);
        }
        let partitions = partitions.max(1);
        let topic_dir = self.dir.join("topics").join(name);
        fs::create_dir_all(&topic_dir)
            .map_err(|e| LogError::io("create topic directory", &topic_dir, e))?;
        let mut parts = Vec::new();
        for p in 0..partitions {
            parts.push(Guarded::new(Partition::create(
                partition::partition_dir(&topic_dir, p),
                self.options.settings(compact),
            )?));
        }
        let meta = serde_json::to_vec(&TopicMeta {
            partitions,
            compact,
        })
        .expect("topic metadata serializes");
        write_atomically(&topic_dir.join("topic.json"), &meta)?;
        sync_dir(&self.dir.join("topics"))?;
        topics.insert(
            name.to_owned(),
            Arc::new(Topic {
                partitions: parts,
                compact,
            }),
        );
        self.topics_version
            .fetch_add(1, std::sync::atomic::Ordering::Release);
        Ok(partitions)
    }

    pub fn topic_partitions(&self, name: &str) -> Option<u32> {
        let topics = self.topics.read().unwrap_or_else(|p| p.into_inner());
        topics.get(name).map(|t| t.partitions.len() as u32)
    }

    /// The topics, without internal ones (names starting with `__`).
    pub fn topics(&self) -> Vec<String> {
        let topics = self.topics.read().unwrap_or_else(|p| p.into_inner());
        topics
            .keys()
            .filter(|name| !name.starts_with("__"))
            .cloned()
            .collect()
    }

    /// Changes whenever a topic is created or deleted.
    pub fn topics_version(&self) -> u64 {
        self.topics_version
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Every topic, internal ones included.
    pub(crate) fn all_topics(&self) -> Vec<Arc<Topic>> {
        self.topics
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    fn topic(&self, name: &str) -> Result<Arc<Topic>, LogError> {
        let topics = self.topics.read().unwrap_or_else(|p| p.into_inner());
        topics
            .get(name)
            .cloned()
            .ok_or_else(|| LogError::UnknownTopic(name.to_owned()))
    }

    fn with_partition<T>(
        &self,
        topic: &str,
        partition: u32,
        f: impl FnOnce(&Guarded) -> T,
    ) -> Result<T, LogError> {
        let t = self.topic(topic)?;
        let guarded = t
            .partitions
            .get(partition as usize)
            .ok_or(LogError::UnknownPartition {
                topic: topic.to_owned(),
                partition,
                partitions: t.partitions.len() as u32,
            })?;
        Ok(f(guarded))
    }

    fn lock_control(&self) -> MutexGuard<'_, Control> {
        self.control.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The last checkpoint committed by `writer`, if any.
    pub fn checkpoint(&self, writer: &str) -> Option<String> {
        self.lock_control()
            .writers
            .get(writer)
            .map(|s| s.checkpoint.clone())
    }

    /// Committed records of a partition from `offset` on, about `max_bytes` at most (at least
    /// one batch when any is available). Empty when the reader is caught up.
    pub fn read(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        max_bytes: usize,
    ) -> Result<Vec<StoredRecord>, LogError> {
        self.with_partition(topic, partition, |guarded| {
            partition::read(guarded, offset, max_bytes)
        })?
    }

    pub fn offsets(&self, topic: &str, partition: u32) -> Result<PartitionOffsets, LogError> {
        self.with_partition(topic, partition, |guarded| {
            let p = guarded.lock();
            PartitionOffsets {
                start: p.start_offset(),
                stable: p.stable_offset,
            }
        })
    }

    /// The first committed offset at or after `timestamp_ms`, or `None` when every record is older.
    pub fn offset_for_time(
        &self,
        topic: &str,
        partition: u32,
        timestamp_ms: i64,
    ) -> Result<Option<u64>, LogError> {
        self.with_partition(topic, partition, |guarded| {
            guarded.lock().offset_for_time(timestamp_ms)
        })?
    }

    /// Log end offset, segment count and bytes of a partition (for `sluice log describe`).
    pub fn describe(&self, topic: &str, partition: u32) -> Result<PartitionDescription, LogError> {
        self.with_partition(topic, partition, |guarded| {
            let p = guarded.lock();
            let (segments, bytes) = p.footprint();
            PartitionDescription {
                start: p.start_offset(),
                stable: p.stable_offset,
                end: p.end_offset(),
                segments,
                bytes,
            }
        })
    }

    /// A receiver that changes whenever a transaction commits: tailing readers wait on it.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.commits.subscribe()
    }

    /// Fsyncs everything appended so far (used at shutdown under `interval` and `never`).
    pub fn flush(&self) -> Result<(), LogError> {
        if !self.writable {
            return Ok(());
        }
        let topics = self.all_topics();
        for topic in topics {
            for guarded in &topic.partitions {
                let (file, path) = guarded.lock().sync_handle();
                file.sync_data()
                    .map_err(|e| LogError::io("fsync segment", &path, e))?;
            }
        }
        let (file, path) = self.lock_control().partition.sync_handle();
        file.sync_data()
            .map_err(|e| LogError::io("fsync control segment", &path, e))
    }
}

impl Drop for Log {
    /// A clean close: everything synced, then the marker that lets the next open skip CRC
    /// checks of the active segments. Any failure leaves the marker out (a crash recovery next).
    fn drop(&mut self) {
        if !self.writable {
            return;
        }
        let marker = self.dir.join(CLEAN_SHUTDOWN_MARKER);
        let result = self.flush().and_then(|()| {
            File::create(&marker)
                .and_then(|f| f.sync_all())
                .map_err(|e| LogError::io("write clean-shutdown marker", &marker, e))?;
            sync_dir(&self.dir)
        });
        if let Err(err) = result {
            tracing::warn!(error = %err, "log not closed cleanly; the next open will check it");
        }
    }
}

fn validate_name(kind: &'static str, name: &str) -> Result<(), LogError> {
    let ok = !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(LogError::InvalidName {
            kind,
            name: name.to_owned(),
        })
    }
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Fsyncs a directory so that entries created, renamed or removed in it survive a crash.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), LogError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| LogError::io("fsync directory", dir, e))
}

/// Replaces `path` with `bytes` crash-atomically: temp file, fsync, rename, fsync directory.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), LogError> {
    let tmp = path.with_extension("tmp");
    let write = || -> io::Result<()> {
        let mut file = File::create(&tmp)?;
        io::Write::write_all(&mut file, bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    };
    write().map_err(|e| LogError::io("write", path, e))?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}
