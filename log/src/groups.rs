//! Consumer-group offsets, kept in the compacted topic `__consumer_offsets`: one record per
//! (group, topic, partition) with the next offset to read, written as a log transaction (so
//! durable under the fsync policy) and folded into memory when the log opens. Compaction keeps
//! the topic at about one record per key.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::batch::{Record, StoredRecord};
use crate::{now_ms, validate_name, Log, LogError, PartitionBatch};

/// The internal topic (names starting with `__` are not listed to sinks).
pub(crate) const TOPIC: &str = "__consumer_offsets";
/// The log writer that owns the topic.
pub(crate) const WRITER: &str = "__consumer_offsets";

/// Every group's offsets: `group → (topic, partition) → next offset`.
pub(crate) type Groups = BTreeMap<String, BTreeMap<(String, u32), u64>>;

#[derive(Serialize, Deserialize)]
struct Key {
    group: String,
    topic: String,
    partition: u32,
}

pub(crate) fn record(
    group: &str,
    topic: &str,
    partition: u32,
    offset: u64,
    timestamp_ms: i64,
) -> Record {
    let key = Key {
        group: group.to_owned(),
        topic: topic.to_owned(),
        partition,
    };
    Record {
        key: Some(Bytes::from(
            serde_json::to_vec(&key).expect("keys serialize"),
        )),
        value: Some(Bytes::from(offset.to_string())),
        timestamp_ms,
        headers: Vec::new(),
    }
}

/// Folds records, oldest first, into `groups`.
pub(crate) fn fold(records: &[StoredRecord], groups: &mut Groups) -> Result<(), LogError> {
    for stored in records {
        let bad = |what: &str| {
            LogError::corrupt(format!(
                "{TOPIC} record at offset {}: {what}",
                stored.offset
            ))
        };
        let key: Key = serde_json::from_slice(stored.key.as_deref().ok_or_else(|| bad("no key"))?)
            .map_err(|_| bad("unreadable key"))?;
        let entry = groups.entry(key.group).or_default();
        match &stored.value {
            // A tombstone forgets the offset.
            None => {
                entry.remove(&(key.topic, key.partition));
            }
            Some(value) => {
                let offset = std::str::from_utf8(value)
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| bad("unreadable offset"))?;
                entry.insert((key.topic, key.partition), offset);
            }
        }
    }
    Ok(())
}

impl Log {
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
            .map(|(topic, partition, offset)| record(group, topic, *partition, *offset, now))
            .collect();
        let batch = PartitionBatch {
            topic: TOPIC.to_owned(),
            partition: 0,
            records,
        };
        self.append_txn(WRITER, std::slice::from_ref(&batch), "")?;
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
}
