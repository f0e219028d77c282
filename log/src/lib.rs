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

mod batch;
mod commit;
mod compaction;
pub mod failpoint;
#[doc(hidden)]
pub mod fuzzing;
mod groups;
mod partition;
mod segment;

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use batch::{Header, Record, StoredRecord};
pub use commit::WriterState;
pub use compaction::CompactionStats;
use partition::parking::Guarded;
use partition::{Opening, Partition};
use serde::{Deserialize, Serialize};
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
}

impl LogOptions {
    fn settings(&self, compacted: bool) -> partition::Settings {
        partition::Settings {
            bytes: self.segment_bytes,
            max_age: self.segment_max_age,
            compacted,
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
    #[error("the log was opened read-only")]
    ReadOnly,
    #[error("an earlier write to the log failed; restart sluice so that the log recovers to what was committed")]
    Failed,
    #[error("a record is larger than the log's largest batch ({max} bytes)")]
    RecordTooLarge { max: usize },
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

/// One partition's slice of a transaction.
#[derive(Debug, Clone)]
pub struct PartitionBatch {
    pub topic: String,
    pub partition: u32,
    pub records: Vec<Record>,
}

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

    fn load(dir: PathBuf, options: LogOptions, lock: Option<File>) -> Result<Log, LogError> {
        let writable = lock.is_some();
        let marker = dir.join(CLEAN_SHUTDOWN_MARKER);
        let opening = match (writable, marker.exists()) {
            (false, _) => Opening::ReadOnly,
            (true, true) => Opening::AfterCleanStop,
            (true, false) => Opening::AfterCrash,
        };
        if writable && opening == Opening::AfterCleanStop {
            // From here until the next clean close, a stop is not clean.
            fs::remove_file(&marker)
                .map_err(|e| LogError::io("remove clean-shutdown marker", &marker, e))?;
            sync_dir(&dir)?;
        }
        let mut control_partition = Partition::open(
            dir.join("control"),
            partition::Settings {
                bytes: u64::MAX,
                max_age: None,
                compacted: false,
            },
            opening,
        )?;
        control_partition.stable_offset = control_partition.end_offset();
        let mut writers = BTreeMap::new();
        let control_guard = Guarded::new(control_partition);
        let mut offset = control_guard.lock().start_offset();
        loop {
            let records = partition::read(&control_guard, offset, 1 << 20)?;
            let Some(last) = records.last() else { break };
            offset = last.offset + 1;
            commit::replay(&records, &mut writers)?;
        }
        let control_partition = control_guard.into_inner();
        let control_end = control_partition.end_offset();

        let mut committed: BTreeMap<(String, u32), u64> = BTreeMap::new();
        for state in writers.values() {
            for (tp, end) in &state.ends {
                let entry = committed.entry(tp.clone()).or_default();
                *entry = (*entry).max(*end);
            }
        }

        let mut topics = BTreeMap::new();
        let topics_dir = dir.join("topics");
        let entries =
            fs::read_dir(&topics_dir).map_err(|e| LogError::io("list topics", &topics_dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| LogError::io("list topics", &topics_dir, e))?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let meta_path = entry.path().join("topic.json");
            let Ok(meta) = fs::read(&meta_path) else {
                // A topic whose creation never completed holds no committed data.
                continue;
            };
            let meta: TopicMeta = serde_json::from_slice(&meta).map_err(|e| {
                LogError::corrupt(format!("{} is unreadable: {e}", meta_path.display()))
            })?;
            let mut partitions = Vec::new();
            for p in 0..meta.partitions {
                let pdir = partition::partition_dir(&entry.path(), p);
                let mut part = if pdir.is_dir() || !writable {
                    Partition::open(pdir, options.settings(meta.compact), opening)?
                } else {
                    Partition::create(pdir, options.settings(meta.compact))?
                };
                let committed_end = committed.get(&(name.clone(), p)).copied().unwrap_or(0);
                let found = part.end_offset();
                if found < committed_end {
                    return Err(LogError::CommittedDataMissing {
                        topic: name,
                        partition: p,
                        found,
                        committed: committed_end,
                    });
                }
                if found > committed_end && writable {
                    tracing::info!(topic = %name, partition = p, from = found, to = committed_end,
                        "recovery: cutting uncommitted records");
                    part.truncate_to(committed_end)?;
                }
                part.stable_offset = committed_end;
                partitions.push(Guarded::new(part));
            }
            topics.insert(
                name,
                Arc::new(Topic {
                    partitions,
                    compact: meta.compact,
                }),
            );
        }

        let mut groups = groups::Groups::new();
        if let Some(topic) = topics.get(groups::TOPIC) {
            let mut offset = 0;
            loop {
                let records = partition::read(&topic.partitions[0], offset, 1 << 20)?;
                let Some(last) = records.last() else { break };
                offset = last.offset + 1;
                groups::fold(&records, &mut groups)?;
            }
        }
        let (commits, _) = watch::channel(0);
        let log = Log {
            dir,
            options,
            writable,
            _lock: lock,
            topics: RwLock::new(topics),
            control: Mutex::new(Control {
                partition: control_partition,
                writers,
            }),
            last_sync: Mutex::new(Instant::now()),
            commits,
            pending: Mutex::new(BTreeMap::new()),
            failed: std::sync::atomic::AtomicBool::new(false),
            control_sync: Mutex::new(ControlSync {
                durable_end: control_end,
                leader: false,
            }),
            control_synced: Condvar::new(),
            groups: Mutex::new(groups),
        };
        if writable {
            log.create_compacted_topic(groups::TOPIC, 1)?;
        }
        Ok(log)
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

    /// Appends a transaction: `batches` to their partitions, then `checkpoint` as the writer's
    /// commit. Returns when the transaction is committed under the fsync policy; then readers
    /// see all of it. On error nothing of it becomes visible (recovery cuts it off).
    pub fn append_txn(
        &self,
        writer: &str,
        batches: &[PartitionBatch],
        checkpoint: &str,
    ) -> Result<(), LogError> {
        self.append(writer, batches, Some(checkpoint))
    }

    /// Appends part of a transaction too large to hold in memory: written now, invisible until
    /// a later `append_txn` of the same writer commits it together with everything it appended
    /// since its last commit. `rollback` (or a crash) discards it.
    pub fn append_uncommitted(
        &self,
        writer: &str,
        batches: &[PartitionBatch],
    ) -> Result<(), LogError> {
        self.append(writer, batches, None)
    }

    fn append(
        &self,
        writer: &str,
        batches: &[PartitionBatch],
        checkpoint: Option<&str>,
    ) -> Result<(), LogError> {
        if !self.writable {
            return Err(LogError::ReadOnly);
        }
        self.check_not_failed()?;
        let mut ends = Vec::with_capacity(batches.len());
        for batch in batches.iter().filter(|b| !b.records.is_empty()) {
            let end = self.with_partition(&batch.topic, batch.partition, |guarded| {
                guarded.lock().append(&batch.records)
            })??;
            ends.push(((batch.topic.clone(), batch.partition), end));
        }
        let Some(checkpoint) = checkpoint else {
            let mut pending = self.lock_pending();
            pending.entry(writer.to_owned()).or_default().extend(ends);
            return Ok(());
        };
        // Everything the writer appended since its last commit is part of this commit.
        let mut ends: BTreeMap<(String, u32), u64> = ends.into_iter().collect();
        if let Some(earlier) = self.lock_pending().remove(writer) {
            for (tp, end) in earlier {
                ends.entry(tp).or_insert(end);
            }
        }
        let sync_now = self.sync_due();
        if sync_now {
            for (topic, partition) in ends.keys() {
                let (file, path) =
                    self.with_partition(topic, *partition, |guarded| guarded.lock().sync_handle())?;
                failpoint::hit("fsync-segment")
                    .and_then(|()| file.sync_data())
                    .map_err(|e| self.fail(LogError::io("fsync segment", &path, e)))?;
            }
        }
        failpoint::hit("before-commit-record")
            .map_err(|e| self.fail(LogError::io("append commit record", &self.dir, e)))?;
        let commit_end = {
            let mut control = self.lock_control();
            let state = control.writers.entry(writer.to_owned()).or_default();
            state.checkpoint = checkpoint.to_owned();
            state
                .ends
                .extend(ends.iter().map(|(tp, end)| (tp.clone(), *end)));
            let record = commit::encode(writer, state, now_ms());
            control.partition.append(std::slice::from_ref(&record))?;
            let end = control.partition.end_offset();
            control.partition.stable_offset = end;
            if self.control_needs_roll(&control) {
                self.roll_control(&mut control)?;
            }
            end
        };
        if sync_now {
            self.sync_control_through(commit_end)?;
        }
        for ((topic, partition), end) in &ends {
            self.with_partition(topic, *partition, |guarded| {
                guarded.lock().stable_offset = *end
            })?;
        }
        self.commits.send_modify(|generation| *generation += 1);
        Ok(())
    }

    /// Discards what `writer` appended with `append_uncommitted` since its last commit (a source
    /// restarting in the middle of a large transaction sends it again from its start).
    pub fn rollback(&self, writer: &str) -> Result<(), LogError> {
        self.check_not_failed()?;
        let Some(pending) = self.lock_pending().remove(writer) else {
            return Ok(());
        };
        let committed = self
            .lock_control()
            .writers
            .get(writer)
            .map(|state| state.ends.clone())
            .unwrap_or_default();
        for (tp, _) in pending {
            let end = committed.get(&tp).copied().unwrap_or(0);
            self.with_partition(&tp.0, tp.1, |guarded| guarded.lock().truncate_to(end))??;
        }
        Ok(())
    }

    fn lock_pending(&self) -> MutexGuard<'_, BTreeMap<String, PartitionEnds>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Group commit: makes the control partition durable through `end`. Concurrent committers
    /// share fsyncs: one of them (the leader) syncs everything appended so far while the others
    /// wait, and each returns as soon as a sync covered its commit record.
    fn sync_control_through(&self, end: u64) -> Result<(), LogError> {
        let mut state = self.control_sync.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if state.durable_end >= end {
                return Ok(());
            }
            if state.leader {
                state = self
                    .control_synced
                    .wait(state)
                    .unwrap_or_else(|p| p.into_inner());
                continue;
            }
            state.leader = true;
            drop(state);
            let (file, path, target) = {
                let control = self.lock_control();
                let (file, path) = control.partition.sync_handle();
                (file, path, control.partition.end_offset())
            };
            let result = failpoint::hit("fsync-control").and_then(|()| file.sync_data());
            state = self.control_sync.lock().unwrap_or_else(|p| p.into_inner());
            state.leader = false;
            if result.is_ok() {
                state.durable_end = state.durable_end.max(target);
            }
            self.control_synced.notify_all();
            result.map_err(|e| self.fail(LogError::io("fsync control segment", &path, e)))?;
        }
    }

    /// Records that a write or fsync failed midway through an append. After that the state of
    /// the files is unknown (a failed fsync may have dropped dirty pages), so the log takes no
    /// more writes: reopening it recovers exactly what was committed.
    fn fail(&self, error: LogError) -> LogError {
        self.failed.store(true, std::sync::atomic::Ordering::SeqCst);
        tracing::error!(error = %error, "log write failed; refusing further writes until reopened");
        error
    }

    fn check_not_failed(&self) -> Result<(), LogError> {
        if self.failed.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(LogError::Failed);
        }
        Ok(())
    }

    fn lock_control(&self) -> MutexGuard<'_, Control> {
        self.control.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn sync_due(&self) -> bool {
        match self.options.fsync {
            FsyncPolicy::Always => true,
            FsyncPolicy::Never => false,
            FsyncPolicy::Interval(every) => {
                let mut last = self.last_sync.lock().unwrap_or_else(|p| p.into_inner());
                if last.elapsed() >= every {
                    *last = Instant::now();
                    true
                } else {
                    false
                }
            }
        }
    }

    fn control_needs_roll(&self, control: &Control) -> bool {
        let (file, _) = control.partition.sync_handle();
        file.metadata()
            .map(|m| m.len() > commit::CONTROL_SEGMENT_BYTES)
            .unwrap_or(false)
    }

    /// Starts a new control segment that restates every writer's latest commit, then deletes
    /// the older control segments.
    fn roll_control(&self, control: &mut Control) -> Result<(), LogError> {
        let now = now_ms();
        let records: Vec<Record> = control
            .writers
            .iter()
            .map(|(writer, state)| commit::encode(writer, state, now))
            .collect();
        control.partition.roll()?;
        if !records.is_empty() {
            control.partition.append(&records)?;
        }
        let (file, path) = control.partition.sync_handle();
        file.sync_data()
            .map_err(|e| LogError::io("fsync control segment", &path, e))?;
        control.partition.stable_offset = control.partition.end_offset();
        control.partition.remove_older_segments()
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

    /// Deletes old segments as the retention options allow, in every partition; returns how
    /// many. Readers holding a deleted segment open finish reading it.
    pub fn enforce_retention(&self) -> Result<usize, LogError> {
        if !self.writable || self.options.retention == Retention::default() {
            return Ok(0);
        }
        let topics: Vec<Arc<Topic>> = self
            .topics
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        let now = SystemTime::now();
        let mut deleted = 0;
        for topic in topics {
            for guarded in &topic.partitions {
                deleted += guarded
                    .lock()
                    .enforce_retention(&self.options.retention, now)?;
            }
        }
        Ok(deleted)
    }

    /// Compacts every compacted topic: closed segments keep only the latest record per key, and
    /// tombstones older than `tombstone_retention`. Runs beside appends and reads.
    pub fn compact(&self, tombstone_retention: Duration) -> Result<CompactionStats, LogError> {
        if !self.writable {
            return Ok(CompactionStats::default());
        }
        self.check_not_failed()?;
        let topics: Vec<Arc<Topic>> = self
            .topics
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|t| t.compact)
            .cloned()
            .collect();
        let now = SystemTime::now();
        let mut total = CompactionStats::default();
        for topic in topics {
            for guarded in &topic.partitions {
                let stats = compaction::compact_partition(guarded, tombstone_retention, now)?;
                total.segments_rewritten += stats.segments_rewritten;
                total.records_removed += stats.records_removed;
            }
        }
        Ok(total)
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

    /// Stores a consumer group's offsets (the next offset to read) durably, merged with what
    /// the group had.
    pub fn commit_offsets(
        &self,
        group: &str,
        offsets: &[(String, u32, u64)],
    ) -> Result<(), LogError> {
        if !self.writable {
            return Err(LogError::ReadOnly);
        }
        validate_name("group", group)?;
        // Held across the append: the offsets topic has one writer, and commits must not overlap.
        let mut groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
        let now = now_ms();
        let records = offsets
            .iter()
            .map(|(topic, partition, offset)| {
                groups::record(group, topic, *partition, *offset, now)
            })
            .collect();
        let batch = PartitionBatch {
            topic: groups::TOPIC.to_owned(),
            partition: 0,
            records,
        };
        self.append_txn(groups::WRITER, std::slice::from_ref(&batch), "")?;
        let entry = groups.entry(group.to_owned()).or_default();
        for (topic, partition, offset) in offsets {
            entry.insert((topic.clone(), *partition), *offset);
        }
        Ok(())
    }

    /// A consumer group's committed offsets: `(topic, partition) → next offset`.
    pub fn group_offsets(&self, group: &str) -> Result<BTreeMap<(String, u32), u64>, LogError> {
        validate_name("group", group)?;
        Ok(self
            .groups
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(group)
            .cloned()
            .unwrap_or_default())
    }

    /// Fsyncs everything appended so far (used at shutdown under `interval` and `never`).
    pub fn flush(&self) -> Result<(), LogError> {
        if !self.writable {
            return Ok(());
        }
        let topics: Vec<Arc<Topic>> = self
            .topics
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
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
