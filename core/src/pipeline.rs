//! The pipeline runtime: sources into the log, the log out to sinks.
//!
//! ```text
//!  source task ──bounded channel (batches)──► log writer task ──► EventLog::append_txn
//!       ▲                                            │
//!       └────── durable checkpoint (watch) ◄─────────┘   then Source::commit → upstream ack
//!
//!  log ──► sink task (one per sink): read committed records → RecordSink::write → commit offsets
//!                                     (change sinks: TypedSink decodes, assembles whole commits,
//!                                      splits at schema changes → ChangeSink::write)
//! ```
//! Decoding (source task) and encoding plus durable append (writer task) run on different
//! workers; a full channel blocks the source, which stops reading its socket, which makes the
//! database's sender wait: backpressure all the way up.
//!
//! Shutdown order, on SIGINT/SIGTERM or when any task fails:
//! 1. stop reading sources (the source task checks the cancel token between batches);
//! 2. drain in-flight batches: the writer appends everything already read, durably;
//! 3. sinks finish the write in progress and commit its offsets, then close (flush);
//! 4. persist checkpoints: each append already committed its checkpoint with the data;
//! 5. acknowledge upstream: the source commits the last durable checkpoint and shuts down
//!    (Postgres: a final standby status update with that flush LSN);
//! 6. after the deadline, whatever has not finished is abandoned; it acknowledged nothing it
//!    had not made durable, so a restart resumes without loss.

mod sink_task;
mod source_task;
mod typed_sink;

pub use sink_task::{reset_writer, run_sink, OffsetReset, PartitionReset, SinkSettings};
pub use source_task::{run_source, SourceSettings};
pub use typed_sink::{TypedSink, TypedSinkError, DEFAULT_MAX_PENDING_BYTES};

/// A pipeline-level failure, with the connector it came from.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("source {name}: {source}")]
    Source {
        name: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("sink {name}: {source}")]
    Sink {
        name: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("source {name}: log append failed: {source}")]
    Log {
        name: String,
        #[source]
        source: crate::event_log::LogError,
    },
    #[error("source {name}: {source}")]
    Encode {
        name: String,
        #[source]
        source: crate::encode::EncodeError,
    },
    #[error("source {name}: {source}")]
    Checkpoint {
        name: String,
        #[source]
        source: crate::checkpoint::CheckpointParseError,
    },
}
