//! Source checkpoints: what a source commits to the log with each batch, and resumes from.
//!
//! Stored in the log's commit record of each transaction as JSON, so that "the position of the
//! last transaction completely in the log" is read back from the log itself on restart.

use serde::{Deserialize, Serialize};

use crate::position::Position;

/// A source's progress, as committed with its last batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub position: Position,
    pub snapshot: SnapshotProgress,
    /// While a snapshot is in progress: what the source needs to resume it where it stopped
    /// (its own format, e.g. the chunks already in the log), instead of starting it over.
    pub snapshot_state: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotProgress {
    /// An initial snapshot was being written; on restart it resumes from the checkpoint's
    /// `snapshot_state` (or, without one, starts over).
    InProgress,
    /// No snapshot is running: stream from `position`.
    Done,
}

#[derive(Serialize, Deserialize)]
struct Stored {
    position: String,
    snapshot: SnapshotProgress,
    /// The log commit this checkpoint closed (see [`COMMIT_HEADER`]); absent in old logs.
    #[serde(default, skip_serializing_if = "is_zero")]
    commit: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    snapshot_state: Option<serde_json::Value>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The record header that numbers log commits: the last record a source appends to a partition
/// in an append carries the sequence number (8 bytes, big-endian) of the commit that makes it
/// visible, and the records before it in that partition belong to the same commit. Commits of
/// one source are numbered 1, 2, 3… across restarts, so a sink that must apply whole source
/// transactions can tell where each commit ends in every partition.
pub const COMMIT_HEADER: &str = "sluice.commit";

/// Like [`COMMIT_HEADER`], on the appends of a transaction too large for one batch that come
/// before its last: the records before it in that partition belong to that commit, and more of
/// the commit may follow in the partition (the appends before the last of a large transaction
/// are written uncommitted, then made visible with it).
pub const COMMIT_PART_HEADER: &str = "sluice.commit.part";

#[derive(Debug, thiserror::Error)]
#[error("checkpoint {text:?} in the log is unreadable: {reason}")]
pub struct CheckpointParseError {
    pub text: String,
    pub reason: String,
}

impl Checkpoint {
    /// A snapshot's progress as chunks in the log and chunks in all, from the two keys every
    /// source's `snapshot_state` carries for this (`chunks_done`, `chunks_total`).
    pub fn snapshot_chunks(&self) -> Option<(u64, u64)> {
        let state = self.snapshot_state.as_ref()?;
        Some((
            state.get("chunks_done")?.as_u64()?,
            state.get("chunks_total")?.as_u64()?,
        ))
    }

    /// A snapshot's progress per table (`by_table` in `snapshot_state`): name, chunks in the
    /// log, chunks in all.
    pub fn snapshot_tables(&self) -> Vec<(String, u64, u64)> {
        let Some(tables) = self
            .snapshot_state
            .as_ref()
            .and_then(|state| state.get("by_table"))
            .and_then(serde_json::Value::as_object)
        else {
            return Vec::new();
        };
        tables
            .iter()
            .filter_map(|(name, counts)| {
                Some((
                    name.clone(),
                    counts.get(0)?.as_u64()?,
                    counts.get(1)?.as_u64()?,
                ))
            })
            .collect()
    }

    pub fn to_json(&self) -> String {
        self.to_json_at(0)
    }

    /// The checkpoint as the log stores it, with the number of the commit it closes.
    pub fn to_json_at(&self, commit: u64) -> String {
        let stored = Stored {
            position: self.position.to_string(),
            snapshot: self.snapshot,
            commit,
            snapshot_state: self.snapshot_state.clone(),
        };
        serde_json::to_string(&stored).expect("checkpoints serialize")
    }

    /// The commit number a stored checkpoint closed (0 when it has none).
    pub fn commit_in(text: &str) -> u64 {
        serde_json::from_str::<Stored>(text).map_or(0, |stored| stored.commit)
    }

    pub fn from_json(text: &str) -> Result<Checkpoint, CheckpointParseError> {
        let error = |reason: String| CheckpointParseError {
            text: text.to_owned(),
            reason,
        };
        let stored: Stored = serde_json::from_str(text).map_err(|e| error(e.to_string()))?;
        let position = stored
            .position
            .parse()
            .map_err(|e: crate::position::PositionParseError| error(e.to_string()))?;
        Ok(Checkpoint {
            position,
            snapshot: stored.snapshot,
            snapshot_state: stored.snapshot_state,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::position::Lsn;

    #[test]
    fn checkpoints_round_trip_and_garbage_is_an_error() {
        let checkpoint = Checkpoint {
            position: Position::PgLsn(Lsn(0x1_0000_0010)),
            snapshot: SnapshotProgress::Done,
            snapshot_state: None,
        };
        let json = checkpoint.to_json();
        assert_eq!(json, r#"{"position":"pg:1/10","snapshot":"done"}"#);
        assert_eq!(Checkpoint::from_json(&json).unwrap(), checkpoint);
        let err = Checkpoint::from_json(r#"{"position":"pg:xyz","snapshot":"done"}"#).unwrap_err();
        assert!(err.to_string().contains("LSN"), "{err}");
    }
}
