//! The log as the runtime sees it: a trait, so that the embedded log and (later) Kafka are
//! interchangeable without touching sources, sinks, the registry or the CLI.
//!
//! The trait speaks core's own types: records and batches from [`crate::batch`] (Kafka's record
//! model), offsets from [`crate::sink`], and [`LogError`]. A backend keeps its own error detail
//! inside [`LogError::Backend`]. The embedded log implements it in sluice-log
//! (`sluice_log::EmbeddedLog`).

use std::collections::BTreeSet;
use std::future::Future;

use tokio::sync::{mpsc, oneshot, watch};

pub use crate::batch::{
    Compression, Header, PackedEntry, PackedRecords, PartitionBatch, PreparedBatches, Record,
    Records, StoredRecord,
};
use crate::sink::Offsets;

/// What can go wrong in a log backend, as the runtime needs to tell it apart.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("topic {0} does not exist")]
    UnknownTopic(String),
    /// The records asked for were deleted by retention (or lost to a repair): a reader resumes
    /// at `start`.
    #[error("offset {offset} of {topic}/{partition} is before the log start offset {start}")]
    OffsetOutOfRange {
        topic: String,
        partition: u32,
        offset: u64,
        start: u64,
    },
    /// Another process took the writer over (`claim`): this one may not write as it any more.
    #[error(transparent)]
    Fenced(Box<dyn std::error::Error + Send + Sync>),
    /// Anything else, with the backend's own error (and its message) as the source.
    #[error(transparent)]
    Backend(Box<dyn std::error::Error + Send + Sync>),
}

/// Offsets of a partition: readers see `[start, stable)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PartitionOffsets {
    pub start: u64,
    pub stable: u64,
}

/// What [`EventLog::read_from`] read: the records, and the offset the reader goes on from (at
/// least past the last record).
#[derive(Debug, Clone, Default)]
pub struct ReadBatch {
    pub records: Vec<StoredRecord>,
    pub next: u64,
}

/// What `sluice log describe` shows of a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionDescription {
    pub start: u64,
    /// Readers see offsets below this.
    pub stable: u64,
    /// Next offset to be written (past `stable` while a transaction is being appended).
    pub end: u64,
    /// Files and bytes the partition takes, where the backend knows them.
    pub storage: Option<(usize, u64)>,
}

/// A sink's share of its topics' partitions where several processes run the same sink (the log
/// on Kafka: a consumer group per sink). The embedded log has none: its one process owns
/// every partition.
pub struct Membership {
    /// The partitions this member owns now; changes as members join, leave or fail.
    pub owned: watch::Receiver<BTreeSet<(String, u32)>>,
    /// Partitions about to be taken away. The sink stops reading them, makes what it wrote of
    /// them durable and commits its offsets, then answers: only then may another member start
    /// on them, from where this one left off.
    pub revoked: mpsc::Receiver<Revocation>,
}

/// Partitions this member gives up, and where it says it is done with them.
#[derive(Debug)]
pub struct Revocation {
    pub partitions: Vec<(String, u32)>,
    pub done: oneshot::Sender<()>,
}

/// What the pipeline runtime needs from a log backend.
///
/// A committing `append` is atomic: after it returns `Ok` every batch is durable (under the
/// backend's policy) and visible to readers together with the writer's checkpoint; after a crash
/// either all of it or none of it is there. Readers see only committed records.
pub trait EventLog: Send + Sync + 'static {
    /// Creates `topic` when missing, with the backend's default partition count; returns its
    /// partition count.
    fn ensure_topic(&self, topic: &str) -> impl Future<Output = Result<u32, LogError>> + Send;

    /// Creates a compacted topic (the latest record per key is kept) when missing.
    fn ensure_compacted_topic(
        &self,
        topic: &str,
        partitions: u32,
    ) -> impl Future<Output = Result<u32, LogError>> + Send;

    /// Appends `batches`. With a checkpoint this commits a transaction: the batches and
    /// everything the writer appended uncommitted since its last commit become visible together
    /// with the checkpoint. Without one the batches stay invisible until such a commit.
    fn append(
        &self,
        writer: &str,
        batches: Vec<PartitionBatch>,
        checkpoint: Option<String>,
    ) -> impl Future<Output = Result<(), LogError>> + Send;

    /// Discards the writer's uncommitted appends.
    fn rollback(&self, writer: &str) -> impl Future<Output = Result<(), LogError>> + Send;

    /// The checkpoint of the writer's last committed transaction.
    fn checkpoint(
        &self,
        writer: &str,
    ) -> impl Future<Output = Result<Option<String>, LogError>> + Send;

    /// Takes `writer` over for this process and returns its last committed checkpoint: where a
    /// log is shared between processes, any other process still writing as `writer` is fenced
    /// first, so that the checkpoint returned is the last one ever committed. Default: the
    /// checkpoint (one process owns the log).
    fn claim(&self, writer: &str) -> impl Future<Output = Result<Option<String>, LogError>> + Send {
        self.checkpoint(writer)
    }

    /// Takes `writer` over as `claim` does, for a writer that needs no checkpoint back (the
    /// registry's): any other process still writing as `writer` is fenced, and nothing more is
    /// read, so that processes that take turns at a shared writer switch quickly. Default:
    /// `claim`.
    fn fence(&self, writer: &str) -> impl Future<Output = Result<(), LogError>> + Send {
        async move { self.claim(writer).await.map(|_| ()) }
    }

    fn topics(&self) -> Vec<String>;

    /// Changes when topics are created or deleted (cheap: sinks check it on every wake, to
    /// find a new topic's records at once instead of at their next periodic refresh).
    fn topics_version(&self) -> u64 {
        self.topics().len() as u64
    }

    fn partitions(&self, topic: &str) -> Option<u32>;

    /// When the backend takes whole prepared batches (`Records::Prepared`): the compression
    /// writers prepare them with, on their own threads. None: it takes records.
    fn prepared_batches(&self) -> Option<Compression> {
        None
    }

    /// The offset after the last committed record of a partition (0 when unknown). Cheap: the
    /// sink loop asks it on every read.
    fn stable_offset(&self, topic: &str, partition: u32) -> u64;

    /// Where a partition starts and ends for readers.
    fn offsets(
        &self,
        topic: &str,
        partition: u32,
    ) -> impl Future<Output = Result<PartitionOffsets, LogError>> + Send;

    /// The first offset whose timestamp is at or after `timestamp_ms` (None: past the end).
    fn offset_for_time(
        &self,
        topic: &str,
        partition: u32,
        timestamp_ms: i64,
    ) -> impl Future<Output = Result<Option<u64>, LogError>> + Send;

    /// Offsets and storage of a partition, for operators.
    fn describe(
        &self,
        topic: &str,
        partition: u32,
    ) -> impl Future<Output = Result<PartitionDescription, LogError>> + Send;

    fn read(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        max_bytes: usize,
    ) -> impl Future<Output = Result<Vec<StoredRecord>, LogError>> + Send;

    /// As [`read`](Self::read), with where the reader goes on. Offsets may hold no record for
    /// readers: Kafka's transaction markers and aborted records, a repaired log's lost range.
    /// A backend that has them says how far its read got past them, so that a reader neither
    /// reads them again nor waits for records there. Default: right after the last record.
    fn read_from(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        max_bytes: usize,
    ) -> impl Future<Output = Result<ReadBatch, LogError>> + Send {
        async move {
            let records = self.read(topic, partition, offset, max_bytes).await?;
            let next = records.last().map_or(offset, |last| last.offset + 1);
            Ok(ReadBatch { records, next })
        }
    }

    fn group_offsets(&self, group: &str) -> impl Future<Output = Result<Offsets, LogError>> + Send;

    fn commit_offsets(
        &self,
        group: &str,
        offsets: Offsets,
    ) -> impl Future<Output = Result<(), LogError>> + Send;

    /// Joins the sink consumer group `group` for the topics matching `patterns`, where the log
    /// shares a sink's partitions between processes. With `whole`, the members share no
    /// partitions: one of them owns a single token partition and runs the whole sink, the others
    /// wait to take over. `None`: this process owns everything.
    fn join_group(
        &self,
        group: &str,
        patterns: &[String],
        whole: bool,
    ) -> Result<Option<Membership>, LogError> {
        let _ = (group, patterns, whole);
        Ok(None)
    }

    /// Changes whenever a transaction commits.
    fn subscribe(&self) -> watch::Receiver<u64>;

    /// Makes everything appended so far durable (shutdown under relaxed fsync policies).
    fn flush(&self) -> impl Future<Output = Result<(), LogError>> + Send;
}

#[cfg(test)]
pub(crate) mod memory;
