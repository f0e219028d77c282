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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotProgress {
    /// An initial snapshot was being written; it must be redone from scratch on restart.
    InProgress,
    /// No snapshot is running: stream from `position`.
    Done,
}

#[derive(Serialize, Deserialize)]
struct Stored {
    position: String,
    snapshot: SnapshotProgress,
}

#[derive(Debug, thiserror::Error)]
#[error("checkpoint {text:?} in the log is unreadable: {reason}")]
pub struct CheckpointParseError {
    pub text: String,
    pub reason: String,
}

impl Checkpoint {
    pub fn to_json(&self) -> String {
        let stored = Stored {
            position: self.position.to_string(),
            snapshot: self.snapshot,
        };
        serde_json::to_string(&stored).expect("checkpoints serialize")
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
        };
        let json = checkpoint.to_json();
        assert_eq!(json, r#"{"position":"pg:1/10","snapshot":"done"}"#);
        assert_eq!(Checkpoint::from_json(&json).unwrap(), checkpoint);
        let err = Checkpoint::from_json(r#"{"position":"pg:xyz","snapshot":"done"}"#).unwrap_err();
        assert!(err.to_string().contains("LSN"), "{err}");
    }
}
