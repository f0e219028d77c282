//! The source contract: how the runtime pulls changes from a database and tells it what is safe.

use std::future::Future;

use bytes::Bytes;

use crate::checkpoint::Checkpoint;
use crate::event::{ChangeEvent, TxnBoundary};
use crate::retry::Classify;

/// A batch of changes that ends on a source transaction boundary.
#[derive(Debug, Clone)]
pub struct SourceBatch {
    /// Whole source transactions (or snapshot rows), in commit order.
    pub events: Vec<ChangeEvent>,
    /// Where the source stands after this batch; committed to the log with it. `None` when the
    /// batch is part of a transaction too large to hold in memory and more of it follows: such
    /// parts are written to the log but stay invisible until the batch that ends the
    /// transaction commits them, and are discarded if the source restarts before that.
    pub checkpoint: Option<Checkpoint>,
    /// Records the source keeps for itself (the MySQL schema history), appended to its history
    /// topic in the same log transaction as the events: they are durable exactly when the
    /// checkpoint is. Empty for most batches and for sources that keep no history.
    pub history: Vec<Bytes>,
    /// The batch's transaction boundary records (`BEGIN`/`END`), for the source's
    /// `<source>.transaction` topic in the same log transaction. Sources leave it empty: the
    /// runtime fills it from the events when the source's `transaction_metadata` is on.
    pub boundaries: Vec<TxnBoundary>,
}

impl SourceBatch {
    /// A batch of events with no history records.
    pub fn new(events: Vec<ChangeEvent>, checkpoint: Option<Checkpoint>) -> SourceBatch {
        SourceBatch {
            events,
            checkpoint,
            history: Vec::new(),
            boundaries: Vec::new(),
        }
    }
}

/// A change source (a database's replication stream), pulled by the runtime.
///
/// Contract:
/// - `start` is called once before anything else and again after each transient error, with
///   the checkpoint of the last batch that is durable in the log (`None` on a fresh start). The
///   source resumes right after that checkpoint: every transaction after it, none at or before it.
/// - `next_batch` returns whole source transactions in commit order, closing a batch on size or
///   time, whichever comes first; a transaction larger than a batch comes in parts, all but the
///   last without a checkpoint. It returns `Ok(None)` when nothing arrived within its idle
///   tick (about a second), so that the runtime can call `commit` regularly; it must keep the
///   server connection alive (keepalives, status updates) while it waits. It must be
///   cancel-safe to the extent that, after its future is dropped at shutdown, `commit` and
///   `shutdown` still work (the runtime stops waiting for it when the pipeline stops).
/// - `commit` is called, never overlapping `next_batch`, with the checkpoint of a batch once the
///   log holds that batch durably; only then may the source acknowledge it upstream (and never
///   beyond it).
/// - `shutdown` is called last, after the final `commit`: acknowledge that final position
///   upstream and close connections.
/// - A source with `KEEPS_HISTORY` gets, before every `start`, the history records committed
///   so far (oldest first, see [`SourceBatch::history`]): exactly those of the batches up to
///   the checkpoint `start` is given.
pub trait Source: Send {
    type Error: std::error::Error + Classify + Send + Sync + 'static;

    /// Whether the runtime keeps a history topic for this source.
    const KEEPS_HISTORY: bool = false;

    /// The committed history records, oldest first; called before every `start` when
    /// `KEEPS_HISTORY`. A record the source cannot read is a definite error.
    fn restore_history(&mut self, _records: Vec<Bytes>) -> Result<(), Self::Error> {
        Ok(())
    }

    fn start(
        &mut self,
        resume: Option<Checkpoint>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    fn next_batch(
        &mut self,
    ) -> impl Future<Output = Result<Option<SourceBatch>, Self::Error>> + Send;

    fn commit(
        &mut self,
        checkpoint: &Checkpoint,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    fn shutdown(&mut self) -> impl Future<Output = Result<(), Self::Error>> + Send;
}
