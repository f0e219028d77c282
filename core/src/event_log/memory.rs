//! A log in memory, for core's own unit tests of what writers append (the embedded log and its
//! files are tested in sluice-log, which builds on core).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::watch;

use super::{
    EventLog, LogError, Membership, PartitionBatch, PartitionDescription, PartitionOffsets,
    ReadBatch, Records, StoredRecord,
};
use crate::batch::{self, Compression, RecordView, BATCH_HEADER_LEN};
use crate::sink::Offsets;

/// Committed records per partition; appends without a checkpoint wait per writer. Clones share
/// the log.
#[derive(Clone)]
pub(crate) struct MemoryLog {
    partitions: u32,
    prepared: Option<Compression>,
    /// Each commit takes one more offset in every partition it wrote, holding no record for
    /// readers, as Kafka's transaction markers do.
    markers: bool,
    /// What the first `join_group` answers: a membership the test drives.
    member: Arc<Mutex<Option<Membership>>>,
    state: Arc<Mutex<State>>,
    commits: Arc<watch::Sender<u64>>,
}

/// A partition's committed records and the offset after its last commit.
#[derive(Default, Clone)]
struct Partition {
    records: Vec<StoredRecord>,
    end: u64,
}

#[derive(Default)]
struct State {
    topics: BTreeMap<String, Vec<Partition>>,
    pending: BTreeMap<String, Vec<PartitionBatch>>,
    checkpoints: BTreeMap<String, String>,
    groups: BTreeMap<String, Offsets>,
}

impl MemoryLog {
    /// New topics get `partitions`; writers prepare batches with `prepared` when it is set.
    pub(crate) fn new(partitions: u32, prepared: Option<Compression>) -> MemoryLog {
        MemoryLog {
            partitions,
            prepared,
            markers: false,
            member: Arc::default(),
            state: Arc::default(),
            commits: Arc::new(watch::Sender::new(0)),
        }
    }

    /// A log whose commits leave a marker offset in each partition they wrote (Kafka's).
    pub(crate) fn with_markers(partitions: u32) -> MemoryLog {
        MemoryLog {
            markers: true,
            ..MemoryLog::new(partitions, None)
        }
    }

    /// A log whose sinks are members of a group the test drives through `membership`.
    pub(crate) fn with_member(partitions: u32, membership: Membership) -> MemoryLog {
        MemoryLog {
            member: Arc::new(Mutex::new(Some(membership))),
            ..MemoryLog::new(partitions, None)
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("not poisoned")
    }
}

/// The records of one partition's slice, offsets counted from `next`.
fn stored(records: Records, next: u64) -> Result<Vec<StoredRecord>, LogError> {
    let owned = |i: usize, r: &dyn RecordView| StoredRecord {
        offset: next + i as u64,
        timestamp_ms: r.timestamp_ms(),
        key: r.key().map(Bytes::copy_from_slice),
        value: r.value().map(Bytes::copy_from_slice),
        headers: r.headers().to_vec(),
    };
    Ok(match records {
        Records::Owned(records) => records
            .iter()
            .enumerate()
            .map(|(i, r)| owned(i, r))
            .collect(),
        Records::Packed(packed) => packed
            .views()
            .iter()
            .enumerate()
            .map(|(i, r)| owned(i, r))
            .collect(),
        Records::Prepared(prepared) => {
            let mut out = Vec::with_capacity(prepared.records);
            let mut at = 0;
            while at < prepared.data.len() {
                let header = batch::BatchHeader::parse(&prepared.data[at..])
                    .and_then(|h| {
                        batch::decode(&prepared.data.slice(at..at + h.total_len), &mut out)
                    })
                    .map_err(|e| LogError::Backend(e.into()))?;
                at += header.total_len.max(BATCH_HEADER_LEN);
            }
            for (i, record) in out.iter_mut().enumerate() {
                record.offset = next + i as u64;
            }
            out
        }
    })
}

impl EventLog for MemoryLog {
    fn join_group(&self, _: &str, _: &[String], _: bool) -> Result<Option<Membership>, LogError> {
        Ok(self.member.lock().expect("not poisoned").take())
    }

    async fn ensure_topic(&self, topic: &str) -> Result<u32, LogError> {
        let partitions = self.partitions as usize;
        let mut state = self.state();
        let topic = state
            .topics
            .entry(topic.to_owned())
            .or_insert_with(|| vec![Partition::default(); partitions]);
        Ok(topic.len() as u32)
    }

    async fn ensure_compacted_topic(&self, topic: &str, partitions: u32) -> Result<u32, LogError> {
        let mut state = self.state();
        let topic = state
            .topics
            .entry(topic.to_owned())
            .or_insert_with(|| vec![Partition::default(); partitions as usize]);
        Ok(topic.len() as u32)
    }

    async fn append(
        &self,
        writer: &str,
        batches: Vec<PartitionBatch>,
        checkpoint: Option<String>,
    ) -> Result<(), LogError> {
        let mut state = self.state();
        state
            .pending
            .entry(writer.to_owned())
            .or_default()
            .extend(batches);
        let Some(checkpoint) = checkpoint else {
            return Ok(());
        };
        let mut written = Vec::new();
        for batch in state.pending.remove(writer).unwrap_or_default() {
            let partition = state
                .topics
                .get_mut(&batch.topic)
                .and_then(|t| t.get_mut(batch.partition as usize))
                .ok_or_else(|| LogError::UnknownTopic(batch.topic.clone()))?;
            let records = stored(batch.records, partition.end)?;
            partition.end += records.len() as u64;
            partition.records.extend(records);
            written.push((batch.topic, batch.partition));
        }
        if self.markers {
            written.sort_unstable();
            written.dedup();
            for (topic, partition) in written {
                let partition =
                    &mut state.topics.get_mut(&topic).expect("written")[partition as usize];
                partition.end += 1;
            }
        }
        state.checkpoints.insert(writer.to_owned(), checkpoint);
        self.commits.send_modify(|n| *n += 1);
        Ok(())
    }

    async fn rollback(&self, writer: &str) -> Result<(), LogError> {
        self.state().pending.remove(writer);
        Ok(())
    }

    async fn checkpoint(&self, writer: &str) -> Result<Option<String>, LogError> {
        Ok(self.state().checkpoints.get(writer).cloned())
    }

    fn topics(&self) -> Vec<String> {
        self.state().topics.keys().cloned().collect()
    }

    fn partitions(&self, topic: &str) -> Option<u32> {
        self.state().topics.get(topic).map(|t| t.len() as u32)
    }

    fn prepared_batches(&self) -> Option<Compression> {
        self.prepared
    }

    fn stable_offset(&self, topic: &str, partition: u32) -> u64 {
        let state = self.state();
        let records = state
            .topics
            .get(topic)
            .and_then(|t| t.get(partition as usize));
        records.map_or(0, |r| r.end)
    }

    async fn offsets(&self, topic: &str, partition: u32) -> Result<PartitionOffsets, LogError> {
        Ok(PartitionOffsets {
            start: 0,
            stable: self.stable_offset(topic, partition),
        })
    }

    async fn offset_for_time(
        &self,
        topic: &str,
        partition: u32,
        timestamp_ms: i64,
    ) -> Result<Option<u64>, LogError> {
        let state = self.state();
        let records = state
            .topics
            .get(topic)
            .and_then(|t| t.get(partition as usize));
        Ok(records.and_then(|r| {
            r.records
                .iter()
                .find(|r| r.timestamp_ms >= timestamp_ms)
                .map(|r| r.offset)
        }))
    }

    async fn describe(
        &self,
        topic: &str,
        partition: u32,
    ) -> Result<PartitionDescription, LogError> {
        let stable = self.stable_offset(topic, partition);
        Ok(PartitionDescription {
            start: 0,
            stable,
            end: stable,
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
        let state = self.state();
        let partition = state
            .topics
            .get(topic)
            .and_then(|t| t.get(partition as usize))
            .ok_or_else(|| LogError::UnknownTopic(topic.to_owned()))?;
        let first = partition.records.partition_point(|r| r.offset < offset);
        let mut bytes = 0;
        let records: Vec<StoredRecord> = partition.records[first..]
            .iter()
            .take_while(|r| {
                let first = bytes == 0;
                bytes += r.value.as_ref().map_or(0, Bytes::len) + 1;
                first || bytes <= max_bytes
            })
            .cloned()
            .collect();
        // Read to the end: past the markers after the last record too.
        let next = if first + records.len() == partition.records.len() {
            partition.end.max(offset)
        } else {
            records.last().map_or(offset, |last| last.offset + 1)
        };
        Ok(ReadBatch { records, next })
    }

    async fn group_offsets(&self, group: &str) -> Result<Offsets, LogError> {
        Ok(self.state().groups.get(group).cloned().unwrap_or_default())
    }

    async fn commit_offsets(&self, group: &str, offsets: Offsets) -> Result<(), LogError> {
        let mut state = self.state();
        state
            .groups
            .entry(group.to_owned())
            .or_default()
            .extend(offsets);
        Ok(())
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.commits.subscribe()
    }

    async fn flush(&self) -> Result<(), LogError> {
        Ok(())
    }
}
