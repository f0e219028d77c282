//! Commit records: what makes a multi-partition append atomic (item 1 of the delivery contract).
//!
//! A writer (a source) appends its batch to every partition it touches, fsyncs them, and then
//! appends one commit record to the control partition (`control/`): the writer's name, its
//! checkpoint (an opaque string, the source position), and the new end offset of each partition
//! this commit touched (`touched`: a source with a thousand tables fsyncs a few bytes per
//! commit, not a thousand ends). Only when that record is durable do readers see the new data.
//! On open, the commit records of each writer, folded in order, say where each partition
//! really ends; anything beyond was never committed and is cut off. Restatements and records of
//! logs written before `touched` carry every partition the writer ever wrote (`ends`). A sluice
//! that predates `touched` refuses such a log (the field it requires is missing) rather than
//! misread it.
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
    /// Every partition the writer has written: the writer's whole state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ends: Option<Vec<PartitionEnd>>,
    /// Only the partitions this commit touched: folded into the writer's state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    touched: Option<Vec<PartitionEnd>>,
}

#[derive(Serialize, Deserialize)]
struct PartitionEnd {
    topic: String,
    partition: u32,
    end: u64,
}

/// A commit record restating the writer's whole state (control segment rolls).
pub(crate) fn encode(writer: &str, state: &WriterState, timestamp_ms: i64) -> Record {
    record(
        CommitRecord {
            writer: writer.to_owned(),
            checkpoint: state.checkpoint.clone(),
            ends: Some(partition_ends(&state.ends)),
            touched: None,
        },
        timestamp_ms,
    )
}

/// The commit record of one append: the checkpoint and the ends of the partitions it touched.
pub(crate) fn encode_touched(
    writer: &str,
    checkpoint: &str,
    touched: &BTreeMap<(String, u32), u64>,
    timestamp_ms: i64,
) -> Record {
    record(
        CommitRecord {
            writer: writer.to_owned(),
            checkpoint: checkpoint.to_owned(),
            ends: None,
            touched: Some(partition_ends(touched)),
        },
        timestamp_ms,
    )
}

fn partition_ends(ends: &BTreeMap<(String, u32), u64>) -> Vec<PartitionEnd> {
    ends.iter()
        .map(|((topic, partition), end)| PartitionEnd {
            topic: topic.clone(),
            partition: *partition,
            end: *end,
        })
        .collect()
}

fn record(commit: CommitRecord, timestamp_ms: i64) -> Record {
    let value = serde_json::to_vec(&commit).expect("commit records serialize");
    Record {
        key: Some(Bytes::copy_from_slice(commit.writer.as_bytes())),
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
        let as_map = |ends: Vec<PartitionEnd>| {
            ends.into_iter()
                .map(|e| ((e.topic, e.partition), e.end))
                .collect::<BTreeMap<_, _>>()
        };
        match (record.ends, record.touched) {
            (Some(ends), _) => {
                writers.insert(
                    record.writer,
                    WriterState {
                        checkpoint: record.checkpoint,
                        ends: as_map(ends),
                    },
                );
            }
            (None, Some(touched)) => {
                let state = writers.entry(record.writer).or_default();
                state.checkpoint = record.checkpoint;
                state.ends.extend(as_map(touched));
            }
            (None, None) => {
                return Err(LogError::corrupt(format!(
                    "commit record at offset {} names no partitions",
                    stored.offset
                )))
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(offset: u64, record: Record) -> StoredRecord {
        StoredRecord {
            offset,
            timestamp_ms: record.timestamp_ms,
            key: record.key,
            value: record.value,
            headers: Vec::new(),
        }
    }

    #[test]
    fn a_commit_states_only_the_partitions_it_touched_and_replay_folds_them() {
        let tp = |t: &str| (t.to_owned(), 0u32);
        let first: BTreeMap<_, _> = [(tp("a"), 10), (tp("b"), 5)].into();
        let second: BTreeMap<_, _> = [(tp("b"), 7)].into();
        let records = [
            stored(0, encode_touched("w", "1", &first, 0)),
            stored(1, encode_touched("w", "2", &second, 0)),
        ];
        let text = String::from_utf8(records[1].value.as_ref().unwrap().to_vec()).unwrap();
        assert!(
            !text.contains("\"a\""),
            "untouched partitions are not restated: {text}"
        );
        let mut writers = BTreeMap::new();
        replay(&records, &mut writers).unwrap();
        let state = &writers["w"];
        assert_eq!(state.checkpoint, "2");
        assert_eq!(state.ends, [(tp("a"), 10), (tp("b"), 7)].into());
        // A restatement replaces the state whole, as records of older logs do.
        let restated = WriterState {
            checkpoint: "3".into(),
            ends: [(tp("c"), 1)].into(),
        };
        replay(&[stored(2, encode("w", &restated, 0))], &mut writers).unwrap();
        assert_eq!(writers["w"], restated);
    }
}
