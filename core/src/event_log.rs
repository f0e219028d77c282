//! The log as the runtime sees it: a trait, so that the embedded log and (later) Kafka are
//! interchangeable without touching sources or sinks.
//!
//! [`EmbeddedLog`] adapts sluice-log, running its blocking file I/O on tokio's blocking pool.

use std::future::Future;
use std::sync::Arc;

use sluice_log::{Compression, Log, LogError, PartitionBatch, StoredRecord};
use tokio::sync::watch;

use crate::sink::Offsets;

/// What the pipeline runtime needs from a log backend.
///
/// A committing `append` is atomic: after it returns `Ok` every batch is durable (under the
/// backend's policy) and visible to readers together with the writer's checkpoint; after a crash
/// either all of it or none of it is there. Readers see only committed records.
pub trait EventLog: Send + Sync + 'static {
    /// Creates `topic` when missing; returns its partition count.
    fn ensure_topic(&self, topic: &str) -> impl Future<Output = Result<u32, LogError>> + Send;

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

    /// The offset after the last committed record of a partition (0 when unknown).
    fn stable_offset(&self, topic: &str, partition: u32) -> u64;

    fn read(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        max_bytes: usize,
    ) -> impl Future<Output = Result<Vec<StoredRecord>, LogError>> + Send;

    fn group_offsets(&self, group: &str) -> impl Future<Output = Result<Offsets, LogError>> + Send;

    fn commit_offsets(
        &self,
        group: &str,
        offsets: Offsets,
    ) -> impl Future<Output = Result<(), LogError>> + Send;

    /// Changes whenever a transaction commits.
    fn subscribe(&self) -> watch::Receiver<u64>;

    /// Makes everything appended so far durable (shutdown under relaxed fsync policies).
    fn flush(&self) -> impl Future<Output = Result<(), LogError>> + Send;
}

/// sluice-log behind [`EventLog`].
#[derive(Clone)]
pub struct EmbeddedLog {
    log: Arc<Log>,
    partitions: u32,
}

impl EmbeddedLog {
    /// `partitions` is the count new topics get.
    pub fn new(log: Arc<Log>, partitions: u32) -> EmbeddedLog {
        EmbeddedLog { log, partitions }
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Log) -> Result<T, LogError> + Send + 'static,
    ) -> Result<T, LogError> {
        let log = Arc::clone(&self.log);
        match tokio::task::spawn_blocking(move || f(&log)).await {
            Ok(result) => result,
            Err(join) => std::panic::resume_unwind(join.into_panic()),
        }
    }
}

impl EventLog for EmbeddedLog {
    fn prepared_batches(&self) -> Option<Compression> {
        Some(self.log.compression())
    }

    async fn ensure_topic(&self, topic: &str) -> Result<u32, LogError> {
        if let Some(partitions) = self.log.topic_partitions(topic) {
            return Ok(partitions);
        }
        let (topic, partitions) = (topic.to_owned(), self.partitions);
        self.blocking(move |log| log.create_topic(&topic, partitions))
            .await
    }

    async fn append(
        &self,
        writer: &str,
        batches: Vec<PartitionBatch>,
        checkpoint: Option<String>,
    ) -> Result<(), LogError> {
        let writer = writer.to_owned();
        self.blocking(move |log| match checkpoint {
            Some(checkpoint) => log.append_txn(&writer, &batches, &checkpoint),
            None => log.append_uncommitted(&writer, &batches),
        })
        .await
    }

    async fn rollback(&self, writer: &str) -> Result<(), LogError> {
        let writer = writer.to_owned();
        self.blocking(move |log| log.rollback(&writer)).await
    }

    async fn checkpoint(&self, writer: &str) -> Result<Option<String>, LogError> {
        Ok(self.log.checkpoint(writer))
    }

    fn topics(&self) -> Vec<String> {
        self.log.topics()
    }

    fn topics_version(&self) -> u64 {
        self.log.topics_version()
    }

    fn partitions(&self, topic: &str) -> Option<u32> {
        self.log.topic_partitions(topic)
    }

    fn stable_offset(&self, topic: &str, partition: u32) -> u64 {
        self.log
            .offsets(topic, partition)
            .map_or(0, |offsets| offsets.stable)
    }

    async fn read(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        max_bytes: usize,
    ) -> Result<Vec<StoredRecord>, LogError> {
        // Reads hit the page cache almost always; a blocking-pool hop would cost more than it saves.
        self.log.read(topic, partition, offset, max_bytes)
    }

    async fn group_offsets(&self, group: &str) -> Result<Offsets, LogError> {
        self.log.group_offsets(group)
    }

    async fn commit_offsets(&self, group: &str, offsets: Offsets) -> Result<(), LogError> {
        let group = group.to_owned();
        self.blocking(move |log| {
            let offsets: Vec<(String, u32, u64)> =
                offsets.into_iter().map(|((t, p), o)| (t, p, o)).collect();
            log.commit_offsets(&group, &offsets)
        })
        .await
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.log.subscribe()
    }

    async fn flush(&self) -> Result<(), LogError> {
        self.blocking(|log| log.flush()).await
    }
}
