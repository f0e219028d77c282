//! `EventLog` on Kafka: what the runtime asks of the log, answered by [`KafkaLog`]'s clients
//! (calls that wait on the cluster run on the blocking pool).

use std::sync::atomic::Ordering;

use rdkafka::consumer::Consumer;
use rdkafka::producer::Producer;
use rdkafka::{Offset, TopicPartitionList};
use sluice_core::event_log::{
    EventLog, LogError, Membership, PartitionBatch, PartitionDescription, PartitionOffsets,
    ReadBatch, StoredRecord,
};
use sluice_core::sink::Offsets;
use tokio::sync::watch;

use super::{watermarks, KafkaLog, CHECKPOINTS_TOPIC, TIMEOUT};

impl EventLog for KafkaLog {
    async fn ensure_topic(&self, topic: &str) -> Result<u32, LogError> {
        let partitions = self.inner.config.partitions;
        self.create_topic(topic, partitions, false)
            .await
            .map_err(|e| LogError::Backend(Box::new(e)))
    }

    async fn ensure_compacted_topic(&self, topic: &str, partitions: u32) -> Result<u32, LogError> {
        self.create_topic(topic, partitions, true)
            .await
            .map_err(|e| LogError::Backend(Box::new(e)))
    }

    async fn append(
        &self,
        writer: &str,
        batches: Vec<PartitionBatch>,
        checkpoint: Option<String>,
    ) -> Result<(), LogError> {
        let this = self.clone();
        let name = writer.to_owned();
        let (touched, checkpoint) =
            tokio::task::spawn_blocking(move || this.append_blocking(&name, batches, checkpoint))
                .await
                .expect("appending does not panic")?;
        if !touched.is_empty() {
            let this = self.clone();
            tokio::task::spawn_blocking(move || this.settle_stable(touched))
                .await
                .expect("watermarks do not panic");
        }
        // The checkpoint shows once the stable offsets cover the commit's records.
        if let Some(checkpoint) = checkpoint {
            self.publish_checkpoints(vec![checkpoint]);
            self.inner.commits.send_modify(|n| *n += 1);
        }
        Ok(())
    }

    async fn rollback(&self, writer: &str) -> Result<(), LogError> {
        let Some(handle) = self
            .inner
            .writers
            .lock()
            .expect("not poisoned")
            .get(writer)
            .cloned()
        else {
            return Ok(());
        };
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut state = handle.lock().expect("not poisoned");
            if state.open {
                state.open = false;
                state
                    .producer
                    .abort_transaction(TIMEOUT)
                    .map_err(|e| this.error("aborting a transaction", e))?;
            }
            Ok(())
        })
        .await
        .expect("aborting does not panic")
    }

    async fn checkpoint(&self, writer: &str) -> Result<Option<String>, LogError> {
        Ok(self
            .inner
            .checkpoints
            .read()
            .expect("not poisoned")
            .get(writer)
            .cloned())
    }

    async fn claim(&self, writer: &str) -> Result<Option<String>, LogError> {
        let this = self.clone();
        let writer = writer.to_owned();
        tokio::task::spawn_blocking(move || this.claim_blocking(&writer))
            .await
            .expect("claiming does not panic")
    }

    async fn fence(&self, writer: &str) -> Result<(), LogError> {
        let this = self.clone();
        let writer = writer.to_owned();
        tokio::task::spawn_blocking(move || this.fence_blocking(&writer))
            .await
            .expect("fencing does not panic")
    }

    fn topics(&self) -> Vec<String> {
        self.inner
            .topics
            .read()
            .expect("not poisoned")
            .keys()
            .filter(|t| *t != CHECKPOINTS_TOPIC)
            .cloned()
            .collect()
    }

    fn topics_version(&self) -> u64 {
        self.inner.topics_version.load(Ordering::SeqCst)
    }

    fn partitions(&self, topic: &str) -> Option<u32> {
        self.inner
            .topics
            .read()
            .expect("not poisoned")
            .get(topic)
            .copied()
    }

    fn stable_offset(&self, topic: &str, partition: u32) -> u64 {
        self.watch(topic);
        self.inner
            .stable
            .read()
            .expect("not poisoned")
            .get(&(topic.to_owned(), partition))
            .copied()
            .unwrap_or(0)
    }

    async fn offsets(&self, topic: &str, partition: u32) -> Result<PartitionOffsets, LogError> {
        if self.partitions(topic).is_none() {
            // Maybe created since the last look: ask once, rather than wait on a missing topic.
            let this = self.clone();
            let _ = tokio::task::spawn_blocking(move || this.refresh_metadata())
                .await
                .expect("metadata does not panic");
            if self.partitions(topic).is_none() {
                return Err(LogError::UnknownTopic(topic.to_owned()));
            }
        }
        let this = self.clone();
        let name = topic.to_owned();
        let (low, high) =
            tokio::task::spawn_blocking(move || watermarks(&this.inner.probe, &name, partition))
                .await
                .expect("watermarks do not panic")
                .map_err(|e| self.error(format!("asking the offsets of {topic}/{partition}"), e))?;
        // Fresher than the cached stable offset, which readers go by: raise it.
        {
            let mut stable = self.inner.stable.write().expect("not poisoned");
            let cached = stable.entry((topic.to_owned(), partition)).or_insert(0);
            *cached = (*cached).max(high.max(0) as u64);
        }
        Ok(PartitionOffsets {
            start: low.max(0) as u64,
            stable: high.max(0) as u64,
        })
    }

    async fn offset_for_time(
        &self,
        topic: &str,
        partition: u32,
        timestamp_ms: i64,
    ) -> Result<Option<u64>, LogError> {
        let this = self.clone();
        let name = topic.to_owned();
        let found = tokio::task::spawn_blocking(move || {
            let mut list = TopicPartitionList::new();
            list.add_partition_offset(&name, partition as i32, Offset::Offset(timestamp_ms))?;
            this.inner.probe.offsets_for_times(list, TIMEOUT)
        })
        .await
        .expect("offsets do not panic")
        .map_err(|e| self.error(format!("finding a time in {topic}/{partition}"), e))?;
        Ok(found
            .find_partition(topic, partition as i32)
            .and_then(|e| match e.offset() {
                Offset::Offset(n) if n >= 0 => Some(n as u64),
                _ => None,
            }))
    }

    async fn describe(
        &self,
        topic: &str,
        partition: u32,
    ) -> Result<PartitionDescription, LogError> {
        let offsets = self.offsets(topic, partition).await?;
        Ok(PartitionDescription {
            start: offsets.start,
            stable: offsets.stable,
            end: offsets.stable,
            storage: None,
        })
    }

    async fn read(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        max_bytes: usize,
    ) -> Result<Vec<StoredRecord>, LogError> {
        Ok(self
            .read_from(topic, partition, offset, max_bytes)
            .await?
            .records)
    }

    async fn read_from(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        max_bytes: usize,
    ) -> Result<ReadBatch, LogError> {
        if offset >= self.stable_offset(topic, partition) {
            return Ok(ReadBatch {
                records: Vec::new(),
                next: offset,
            });
        }
        let this = self.clone();
        let name = topic.to_owned();
        tokio::task::spawn_blocking(move || this.read_blocking(&name, partition, offset, max_bytes))
            .await
            .expect("reading does not panic")
    }

    async fn group_offsets(&self, group: &str) -> Result<Offsets, LogError> {
        let consumer = self.group(group)?;
        let list = self.all_partitions();
        let this = self.clone();
        let committed =
            tokio::task::spawn_blocking(move || consumer.committed_offsets(list, TIMEOUT))
                .await
                .expect("offsets do not panic")
                .map_err(|e| this.error(format!("reading consumer group {group}"), e))?;
        Ok(committed
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(n) if n >= 0 => {
                    Some(((e.topic().to_owned(), e.partition() as u32), n as u64))
                }
                _ => None,
            })
            .collect())
    }

    async fn commit_offsets(&self, group: &str, offsets: Offsets) -> Result<(), LogError> {
        if offsets.is_empty() {
            return Ok(());
        }
        let this = self.clone();
        let group = group.to_owned();
        tokio::task::spawn_blocking(move || this.commit_group(&group, offsets))
            .await
            .expect("committing does not panic")
    }

    fn join_group(
        &self,
        group: &str,
        patterns: &[String],
        whole: bool,
    ) -> Result<Option<Membership>, LogError> {
        if whole {
            // The token: the checkpoints topic's one partition (every process has it).
            return self.join(group, &[CHECKPOINTS_TOPIC.to_owned()]).map(Some);
        }
        self.join(group, patterns).map(Some)
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.commits.subscribe()
    }

    async fn flush(&self) -> Result<(), LogError> {
        Ok(())
    }
}
