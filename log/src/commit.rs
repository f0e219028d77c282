//! Commit records: what makes a multi-partition append atomic (item 1 of the delivery contract).
//!
//! A writer (a source) appends its batch to every partition it touches, fsyncs them, and then
//! appends one commit record to the control partition (`control/`): the writer's name, its
//! checkpoint (an opaque string, the source position), and the end offset of every partition it
//! has ever written. Only when that record is durable do readers see the new data. On open, the
//! last commit record of each writer says where each partition really ends; anything beyond was
//! never committed and is cut off.
//!
//! The control partition stays small: when its segment passes `CONTROL_SEGMENT_BYTES` a new
//! segment starts with a restatement of every writer's latest commit, and older control segments
//! are deleted once that restatement is durable.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::batch::{Record, StoredRecord};
use crate::LogError;

pub(crate) const CONTROL_SEGMENT_BYTES: u64 = 8 * 1024 * 1024;

/// The latest committed state of one writer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriterState {
    /// The writer's own checkpoint (for a source: the position of the last transaction in the log).
    pub checkpoint: String,
    /// End offset of every partition the writer has written: `(topic, partition) → end`.
    pub ends: BTreeMap<(String, u32), u64>,
}

#[derive(Serialize, Deserialize)]
struct CommitRecord {
    writer: String,
    checkpoint: String,
    ends: Vec<PartitionEnd>,
}

#[derive(Serialize, Deserialize)]
struct PartitionEnd {
    topic: String,
    partition: u32,
    end: u64,
}

pub(crate) fn encode(writer: &str, state: &WriterState, timestamp_ms: i64) -> Record {
    let record = CommitRecord {
        writer: writer.to_owned(),
        checkpoint: state.checkpoint.clone(),
        ends: state
            .ends
            .iter()
            .map(|((topic, partition), end)| PartitionEnd {
                topic: topic.clone(),
                partition: *partition,
                end: *end,
            })
            .collect(),
    };
    let value = serde_json::to_vec(&record).expect("commit records serialize");
    Record {
        key: Some(Bytes::copy_from_slice(writer.as_bytes())),
        value: Some(Bytes::from(value)),
        timestamp_ms,
        headers: Vec::new(),
    }
}

/// Folds control records, oldest first, into each writer's latest state.
pub(crate) fn replay(
    records: &[StoredRecord],
    writers: &mut BTreeMap<String, WriterState>,
) -> Result<(), LogError> {
    for stored in records {
        let value = stored
            .value
            .as_ref()
            .ok_or_else(|| LogError::corrupt("commit record without a value"))?;
        let record: CommitRecord = serde_json::from_slice(value).map_err(|e| {
            LogError::corrupt(format!(
                "commit record at offset {} is unreadable: {e}",
                stored.offset
            ))
        })?;
        let ends = record
            .ends
            .into_iter()
            .map(|e| ((e.topic, e.partition), e.end))
            .collect();
        writers.insert(
            record.writer,
            WriterState {
                checkpoint: record.checkpoint,
                ends,
            },
        );
    }
    Ok(())
}
