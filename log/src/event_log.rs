//! The embedded log behind core's [`EventLog`]: what the pipeline runtime, the registry store
//! and the CLI use, so that a second backend (Kafka) slots in beside it. Blocking file I/O runs
//! on tokio's blocking pool; reads, which hit the page cache almost always, run in place.

use std::sync::Arc;

use sluice_core::batch::{Compression, PartitionBatch, StoredRecord};
use sluice_core::event_log::{
    EventLog, LogError as CoreError, PartitionDescription, PartitionOffsets,
};
use sluice_core::sink::Offsets;
use tokio::sync::watch;

use crate::{Log, LogError};

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

    /// The log itself, for what only the embedded log does (retention, compaction, repair).
    pub fn log(&self) -> &Arc<Log> {
        &self.log
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Log) -> Result<T, LogError> + Send + 'static,
    ) -> Result<T, CoreError> {
        let log = Arc::clone(&self.log);
        match tokio::task::spawn_blocking(move || f(&log)).await {
            Ok(result) => result.map_err(CoreError::from),
            Err(join) => std::panic::resume_unwind(join.into_panic()),
        }
    }
}

impl EventLog for EmbeddedLog {
    fn prepared_batches(&self) -> Option<Compression> {
        Some(self.log.compression())
    }

    async fn ensure_topic(&self, topic: &str) -> Result<u32, CoreError> {
        if let Some(partitions) = self.log.topic_partitions(topic) {
            return Ok(partitions);
        }
        let (topic, partitions) = (topic.to_owned(), self.partitions);
        self.blocking(move |log| log.create_topic(&topic, partitions))
            .await
    }

    async fn ensure_compacted_topic(&self, topic: &str, partitions: u32) -> Result<u32, CoreError> {
        if let Some(partitions) = self.log.topic_partitions(topic) {
            return Ok(partitions);
        }
        let topic = topic.to_owned();
        self.blocking(move |log| log.create_compacted_topic(&topic, partitions))
            .await
    }

    async fn append(
        &self,
        writer: &str,
        batches: Vec<PartitionBatch>,
        checkpoint: Option<String>,
    ) -> Result<(), CoreError> {
        let writer = writer.to_owned();
        self.blocking(move |log| match checkpoint {
            Some(checkpoint) => log.append_txn(&writer, &batches, &checkpoint),
            None => log.append_uncommitted(&writer, &batches),
        })
        .await
    }

    async fn rollback(&self, writer: &str) -> Result<(), CoreError> {
        let writer = writer.to_owned();
        self.blocking(move |log| log.rollback(&writer)).await
    }

    async fn checkpoint(&self, writer: &str) -> Result<Option<String>, CoreError> {
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

    async fn offsets(&self, topic: &str, partition: u32) -> Result<PartitionOffsets, CoreError> {
        let offsets = self.log.offsets(topic, partition)?;
        Ok(PartitionOffsets {
            start: offsets.start,
            stable: offsets.stable,
        })
    }

    async fn offset_for_time(
        &self,
        topic: &str,
        partition: u32,
        timestamp_ms: i64,
    ) -> Result<Option<u64>, CoreError> {
        let (topic, partition) = (topic.to_owned(), partition);
        self.blocking(move |log| log.offset_for_time(&topic, partition, timestamp_ms))
            .await
    }

    async fn describe(
        &self,
        topic: &str,
        partition: u32,
    ) -> Result<PartitionDescription, CoreError> {
        let d = self.log.describe(topic, partition)?;
        Ok(PartitionDescription {
            start: d.start,
            stable: d.stable,
            end: d.end,
            storage: Some((d.segments, d.bytes)),
        })
    }

    async fn read(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        max_bytes: usize,
    ) -> Result<Vec<StoredRecord>, CoreError> {
        // Reads hit the page cache almost always; a blocking-pool hop would cost more than it saves.
        self.log
            .read(topic, partition, offset, max_bytes)
            .map_err(|err| match err {
                LogError::OffsetOutOfRange { offset, start, .. } => CoreError::OffsetOutOfRange {
                    topic: topic.to_owned(),
                    partition,
                    offset,
                    start,
                },
                other => other.into(),
            })
    }

    async fn group_offsets(&self, group: &str) -> Result<Offsets, CoreError> {
        Ok(self.log.group_offsets(group)?)
    }

    async fn commit_offsets(&self, group: &str, offsets: Offsets) -> Result<(), CoreError> {
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

    async fn flush(&self) -> Result<(), CoreError> {
        self.blocking(|log| log.flush()).await
    }
}
