//! The source's side of a running snapshot: parts of chunks arrive from the readers in any
//! order; batches are made of whole chunks, each committed with the progress that names it.

use std::collections::{HashMap, HashSet, VecDeque};

use sluice_core::event::{ChangeEvent, SnapshotMarker};
use tokio::sync::mpsc;

use super::{ChunkId, Read, SnapshotState};
use crate::postgres::protocol::WireConnection;
use crate::postgres::PostgresError;

/// A snapshot being read.
pub(crate) struct SnapshotPhase {
    /// The replication connection that exported the snapshot (it must stay open while readers
    /// import it); it streams once the snapshot ends. None when resuming: streaming opens one.
    pub conn: Option<WireConnection>,
    pub rx: mpsc::Receiver<Result<Read, PostgresError>>,
    pub consistent_point: sluice_core::position::Lsn,
    /// What the log holds; each batch's checkpoint carries it, with the batch's chunks added.
    pub state: SnapshotState,
    /// Chunks partly read, by chunk.
    open: HashMap<ChunkId, Vec<ChangeEvent>>,
    /// Chunks read whole, oldest first, waiting for a batch (None: a part of a chunk too large
    /// to hold, see `next_batch`). The newest is held back until another arrives or reading
    /// ends, so that the snapshot's last event can be marked.
    ready: VecDeque<(Option<ChunkId>, Vec<ChangeEvent>)>,
    reading_done: bool,
    /// Whether the snapshot's first event has been emitted (marked `first`).
    first_emitted: bool,
    /// Tables (`schema.table`) whose first row has been emitted (marked
    /// `first_in_data_collection`, or `first`).
    tables_begun: HashSet<String>,
    /// Whether the log has been handed the checkpoint that records the slot as this source's
    /// (a snapshot begun at its consistent point), before any row.
    pub claimed: bool,
}

/// A batch of whole chunks.
pub(crate) struct ChunkBatch {
    pub events: Vec<ChangeEvent>,
    /// Every chunk has been read and this batch carries the last of them.
    pub finished: bool,
}

impl SnapshotPhase {
    pub(crate) fn new(
        conn: Option<WireConnection>,
        rx: mpsc::Receiver<Result<Read, PostgresError>>,
        consistent_point: sluice_core::position::Lsn,
        state: SnapshotState,
        resumed: bool,
    ) -> SnapshotPhase {
        // A resumed snapshot's tables with chunks in the log have had their first row.
        let tables_begun = state
            .tables
            .iter()
            .filter(|t| t.done_count() > 0)
            .map(|t| t.name.clone())
            .collect();
        SnapshotPhase {
            conn,
            rx,
            consistent_point,
            state,
            tables_begun,
            open: HashMap::new(),
            ready: VecDeque::new(),
            reading_done: false,
            // A resumed snapshot's first event is in the log already, and so is its claim.
            first_emitted: resumed,
            claimed: resumed,
        }
    }

    fn ready_events(&self) -> usize {
        self.ready.iter().map(|(_, events)| events.len()).sum()
    }

    /// Waits (up to about a second) for chunks of about `max_events` events in all, then
    /// returns them as a batch and records them in `state`; None when nothing is ready yet.
    pub(crate) async fn next_batch(
        &mut self,
        max_events: usize,
    ) -> Result<Option<ChunkBatch>, PostgresError> {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(1);
        while !self.reading_done {
            // Enough to send, counting all but the held-back newest chunk.
            let held = self.ready.back().map_or(0, |(_, events)| events.len());
            if self.ready.len() > 1 && self.ready_events() - held >= max_events {
                break;
            }
            let read = match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(read) => read,
                Err(_) => break,
            };
            match read {
                None => self.reading_done = true,
                Some(Err(err)) => return Err(err),
                Some(Ok(Read::Rows(chunk, mut events))) => {
                    let part = self.open.entry(chunk).or_default();
                    if part.is_empty() {
                        *part = events;
                    } else {
                        part.append(&mut events);
                    }
                }
                // A chunk that is a whole table too large to hold (see `Read::Part`).
                Some(Ok(Read::Part(events))) => self.ready.push_back((None, events)),
                Some(Ok(Read::Done(chunk))) => {
                    let events = self.open.remove(&chunk).unwrap_or_default();
                    self.ready.push_back((Some(chunk), events));
                }
            }
        }
        if self.reading_done && !self.open.is_empty() {
            return Err(PostgresError::protocol(
                "a snapshot reader stopped in the middle of a chunk",
            ));
        }
        let take = if self.reading_done {
            self.ready.len()
        } else {
            self.ready.len().saturating_sub(1)
        };
        if take == 0 && !self.reading_done {
            return Ok(None);
        }
        let mut events: Vec<ChangeEvent> = Vec::new();
        let mut chunks = Vec::with_capacity(take);
        for (chunk, mut part) in self.ready.drain(..take) {
            chunks.extend(chunk);
            if events.is_empty() {
                events = part;
            } else {
                events.append(&mut part);
            }
        }
        let complete = |state: &SnapshotState| -> HashSet<String> {
            state
                .tables
                .iter()
                .filter(|t| t.done_count() == u64::from(t.chunks))
                .map(|t| t.name.clone())
                .collect()
        };
        let complete_before = complete(&self.state);
        self.state.mark(chunks);
        let completed: Vec<String> = complete(&self.state)
            .into_iter()
            .filter(|name| !complete_before.contains(name))
            .collect();
        self.mark_tables(&mut events, completed);
        let finished = self.reading_done && self.ready.is_empty();
        if finished {
            if let Some(last) = events.last_mut() {
                last.snapshot = SnapshotMarker::Last;
            }
        }
        if !self.first_emitted {
            if let Some(first) = events.first_mut() {
                // A snapshot of one event: that event is its last.
                if first.snapshot != SnapshotMarker::Last {
                    first.snapshot = SnapshotMarker::First;
                }
                self.first_emitted = true;
            }
        }
        Ok(Some(ChunkBatch { events, finished }))
    }

    /// Marks each table's first row in the log `first_in_data_collection`, and the last row
    /// of each table in `completed` (its last chunk is in this batch) `last_in_data_collection`,
    /// as Debezium does. (A table whose last chunk to arrive is empty keeps its last row
    /// `true`: that row is in an earlier batch.)
    fn mark_tables(&mut self, events: &mut [ChangeEvent], completed: Vec<String>) {
        let mut last_rows: Vec<(String, Option<usize>)> =
            completed.into_iter().map(|name| (name, None)).collect();
        // The name of the last event's table: events come in runs of one table.
        let mut current: Option<(*const sluice_core::event::TableSchema, String)> = None;
        for (index, event) in events.iter_mut().enumerate() {
            let Some(table) = &event.table else {
                continue;
            };
            let pointer = std::sync::Arc::as_ptr(table);
            if current.as_ref().map(|(p, _)| *p) != Some(pointer) {
                current = Some((pointer, table.table.to_string()));
            }
            let name = &current.as_ref().expect("set above").1;
            if !self.tables_begun.contains(name) {
                self.tables_begun.insert(name.clone());
                event.snapshot = SnapshotMarker::FirstInDataCollection;
            }
            if let Some((_, last)) = last_rows.iter_mut().find(|(n, _)| n == name) {
                *last = Some(index);
            }
        }
        for index in last_rows.into_iter().filter_map(|(_, last)| last) {
            events[index].snapshot = SnapshotMarker::LastInDataCollection;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use sluice_core::event::{Op, TableId, TableSchema};
    use sluice_core::position::{Lsn, Position};

    use super::*;
    use crate::postgres::snapshot::TableProgress;

    fn event() -> ChangeEvent {
        ChangeEvent {
            op: Op::Read,
            table: Some(Arc::new(TableSchema {
                table: TableId {
                    namespace: "s".into(),
                    name: "t".into(),
                },
                columns: vec![],
                version: 1,
            })),
            before: None,
            before_is_key_only: false,
            after: Some(vec![]),
            snapshot: SnapshotMarker::Yes,
            commit_ts_us: 0,
            position: Position::PgLsn(Lsn(1)),
            xid: None,
            txn: None,
            message: None,
        }
    }

    #[tokio::test]
    async fn a_whole_table_chunk_goes_out_in_parts_and_counts_only_at_its_end() {
        let chunk = ChunkId { table: 7, index: 0 };
        let mut state = SnapshotState {
            txid_snapshot: "1:1:".into(),
            snapshot_ts_us: 0,
            chunks_total: 0,
            chunks_done: 0,
            by_table: Default::default(),
            tables: vec![TableProgress {
                oid: 7,
                name: "s.t".into(),
                filenode: 0,
                chunk_blocks: 1,
                chunks: 1,
                done: vec![],
            }],
        };
        state.recount();
        let (tx, rx) = mpsc::channel(16);
        let mut phase = SnapshotPhase::new(None, rx, Lsn(1), state, true);
        // A whole-table chunk's rows go out as parts; the chunk is not counted yet.
        for _ in 0..2 {
            tx.send(Ok(Read::Part(vec![event(), event(), event()])))
                .await
                .unwrap();
        }
        let first = phase.next_batch(2).await.unwrap().expect("a part");
        assert_eq!((first.events.len(), first.finished), (3, false));
        assert_eq!(
            phase.state.chunks_done, 0,
            "a part does not count the chunk"
        );
        // Its end counts it.
        tx.send(Ok(Read::Rows(chunk, vec![event()]))).await.unwrap();
        tx.send(Ok(Read::Done(chunk))).await.unwrap();
        drop(tx);
        let second = phase.next_batch(2).await.unwrap().expect("the second part");
        assert_eq!((second.events.len(), second.finished), (3, false));
        assert_eq!(phase.state.chunks_done, 0);
        let last = phase.next_batch(2).await.unwrap().expect("the rest");
        assert_eq!((last.events.len(), last.finished), (1, true));
        assert_eq!(phase.state.chunks_done, 1);
    }
}
