//! Transaction metadata (a source's `transaction_metadata = true`, Debezium's
//! `provide.transaction.metadata`): each event's place among its table's events in its
//! transaction, and the `BEGIN`/`END` records of the source's transaction topic.
//!
//! Sources hand out whole transactions in commit order, a large one in parts of which only the
//! last carries a checkpoint; so a transaction begins where an event names a new transaction
//! id, and ends where the next one begins, where an event outside any transaction comes (a
//! snapshot row, a non-transactional message), or at the end of a batch with a checkpoint.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;

use super::super::PipelineError;
use crate::batch::{Header, PartitionBatch, Record, Records};
use crate::encode::{EncodedRecords, EventEncoder};
use crate::event::TxnBoundary;
use crate::event_log::EventLog;
use crate::source::SourceBatch;
use crate::topic;

/// The transaction whose events are passing.
struct Open {
    id: Arc<str>,
    commit_ts_us: i64,
    /// Events per table so far.
    tables: Vec<(String, u64)>,
}

/// Follows transactions across a source's batches.
#[derive(Default)]
pub(super) struct TxnTracker {
    open: Option<Open>,
}

impl TxnTracker {
    /// Forgets the open transaction: the source restarts from its last checkpoint, so the
    /// parts of it already handed out are discarded and it comes again whole.
    pub(super) fn reset(&mut self) {
        self.open = None;
    }

    /// Numbers `batch`'s events among their table's events in their transaction and adds the
    /// boundary records of the transactions that begin or end in it.
    pub(super) fn track(&mut self, batch: &mut SourceBatch) {
        for event in &mut batch.events {
            let Some(txn) = event.txn.as_mut() else {
                self.close(&mut batch.boundaries);
                continue;
            };
            if self.open.as_ref().is_none_or(|open| open.id != txn.id) {
                self.close(&mut batch.boundaries);
                batch.boundaries.push(TxnBoundary {
                    id: Arc::clone(&txn.id),
                    commit_ts_us: event.commit_ts_us,
                    end: None,
                });
                self.open = Some(Open {
                    id: Arc::clone(&txn.id),
                    commit_ts_us: event.commit_ts_us,
                    tables: Vec::new(),
                });
            }
            let open = self.open.as_mut().expect("opened above");
            // Logical messages belong to the transaction but to no table: not counted, as
            // Debezium counts data collection events only.
            let Some(table) = &event.table else { continue };
            let name = table.table.to_string();
            let count = match open.tables.iter_mut().find(|(t, _)| *t == name) {
                Some((_, count)) => count,
                None => {
                    open.tables.push((name, 0));
                    &mut open.tables.last_mut().expect("pushed").1
                }
            };
            *count += 1;
            txn.data_collection_order = *count;
        }
        if batch.checkpoint.is_some() {
            self.close(&mut batch.boundaries);
        }
    }

    fn close(&mut self, boundaries: &mut Vec<TxnBoundary>) {
        if let Some(mut open) = self.open.take() {
            // By name: the same list whatever order the tables came in.
            open.tables.sort_unstable();
            boundaries.push(TxnBoundary {
                id: open.id,
                commit_ts_us: open.commit_ts_us,
                end: Some(open.tables),
            });
        }
    }
}

/// The records of `boundaries` for source `name`'s transaction topic, per partition (by key),
/// each marked with BOUNDARY_HEADER and each partition's last with `stamp` (the commit's).
pub(super) async fn boundary_batches<E: EventEncoder, L: EventLog>(
    name: &str,
    encoder: &mut E,
    boundaries: &[TxnBoundary],
    log: &L,
    stamp: Header,
) -> Result<Vec<PartitionBatch>, PipelineError> {
    let topic = topic::transaction_topic(name);
    let count = log
        .ensure_topic(&topic)
        .await
        .map_err(|source| PipelineError::Log {
            name: name.to_owned(),
            source,
        })?;
    let mut out = EncodedRecords::with_capacity(boundaries.len() * 160);
    let mut by_partition: BTreeMap<u32, Vec<Record>> = BTreeMap::new();
    for boundary in boundaries {
        out.clear();
        encoder
            .encode_boundary(boundary, &mut out)
            .map_err(|source| PipelineError::Encode {
                name: name.to_owned(),
                source,
            })?;
        for i in 0..out.records().len() {
            let (key, value) = out.record(i);
            let partition = topic::partition_for(key, count);
            by_partition.entry(partition).or_default().push(Record {
                key: key.map(Bytes::copy_from_slice),
                value: value.map(Bytes::copy_from_slice),
                timestamp_ms: boundary.commit_ts_us.div_euclid(1000),
                headers: vec![Header {
                    key: topic::BOUNDARY_HEADER.to_owned(),
                    value: Some(Bytes::from_static(boundary.status().as_bytes())),
                }],
            });
        }
    }
    Ok(by_partition
        .into_iter()
        .map(|(partition, records)| {
            let mut records = Records::from(records);
            records.push_header_to_last(stamp.clone());
            PartitionBatch {
                topic: topic.clone(),
                partition,
                records,
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::{Checkpoint, SnapshotProgress};
    use crate::event::{ChangeEvent, Op, SnapshotMarker, TableId, TableSchema, TxnInfo};
    use crate::position::{Lsn, Position};

    fn event(table: &str, txn: Option<&str>, order: u64) -> ChangeEvent {
        ChangeEvent {
            op: Op::Create,
            table: Some(Arc::new(TableSchema {
                table: TableId {
                    namespace: "public".into(),
                    name: table.into(),
                },
                columns: Vec::new(),
                version: 1,
            })),
            before: None,
            before_is_key_only: false,
            after: Some(Vec::new()),
            snapshot: SnapshotMarker::No,
            commit_ts_us: 1_000_000 * order as i64,
            position: Position::PgLsn(Lsn(order)),
            xid: None,
            txn: txn.map(|id| TxnInfo {
                id: id.into(),
                total_order: order,
                data_collection_order: 0,
            }),
            message: None,
        }
    }

    fn batch(events: Vec<ChangeEvent>, checkpoint: bool) -> SourceBatch {
        SourceBatch::new(
            events,
            checkpoint.then(|| Checkpoint {
                position: Position::PgLsn(Lsn(1)),
                snapshot: SnapshotProgress::Done,
                snapshot_state: None,
            }),
        )
    }

    fn statuses(batch: &SourceBatch) -> Vec<String> {
        batch
            .boundaries
            .iter()
            .map(|b| match &b.end {
                None => format!("BEGIN {}", b.id),
                Some(tables) => format!("END {} {tables:?}", b.id),
            })
            .collect()
    }

    #[test]
    fn transactions_begin_and_end_around_their_events_across_parts_and_restarts() {
        let mut tracker = TxnTracker::default();
        // A snapshot row, then two whole transactions in one batch.
        let mut first = batch(
            vec![
                event("s", None, 0),
                event("a", Some("1:10"), 1),
                event("b", Some("1:10"), 2),
                event("a", Some("1:10"), 3),
                event("a", Some("2:20"), 1),
            ],
            true,
        );
        tracker.track(&mut first);
        assert_eq!(
            statuses(&first),
            [
                "BEGIN 1:10",
                "END 1:10 [(\"public.a\", 2), (\"public.b\", 1)]",
                "BEGIN 2:20",
                "END 2:20 [(\"public.a\", 1)]",
            ]
        );
        let orders: Vec<u64> = first
            .events
            .iter()
            .filter_map(|e| e.txn.as_ref().map(|t| t.data_collection_order))
            .collect();
        assert_eq!(orders, [1, 1, 2, 1]);
        assert_eq!(first.boundaries[1].event_count(), Some(3));

        // A large transaction in two parts: BEGIN with the first, END with the last.
        let mut part = batch(vec![event("a", Some("3:30"), 1)], false);
        tracker.track(&mut part);
        assert_eq!(statuses(&part), ["BEGIN 3:30"]);
        let mut last = batch(vec![event("a", Some("3:30"), 2)], true);
        tracker.track(&mut last);
        assert_eq!(statuses(&last), ["END 3:30 [(\"public.a\", 2)]"]);
        assert_eq!(
            last.events[0].txn.as_ref().unwrap().data_collection_order,
            2
        );

        // A restart in the middle of one: it comes again whole, counted from the start.
        let mut part = batch(vec![event("a", Some("4:40"), 1)], false);
        tracker.track(&mut part);
        tracker.reset();
        let mut again = batch(vec![event("a", Some("4:40"), 1)], true);
        tracker.track(&mut again);
        assert_eq!(
            statuses(&again),
            ["BEGIN 4:40", "END 4:40 [(\"public.a\", 1)]"]
        );
    }
}
