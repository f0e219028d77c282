//! What the sources' on-demand snapshots share: the queue of tables (or `WHERE` slices of
//! them) waiting to be read, each with the key of its last row in the log, and the progress
//! `sluice status` and the metrics show. The queue is in every checkpoint the source commits
//! while it is not empty (`snapshot_state`, `kind = "incremental"`), so a restart resumes at
//! the next chunk. How a chunk is read and ordered against the stream is each source's own
//! (`postgres/snapshot/incremental.rs`, `mysql/source/snapshot/incremental.rs`).
//!
//! `K` is how a source keeps a key to read on after: Postgres keeps each column's text,
//! MySQL the protocol's values.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sluice_core::clock::now_us;
use sluice_core::event::{ChangeEvent, Op, SnapshotMarker, TableId, TableSchema};
use sluice_core::position::Position;
use sluice_core::value::Value;

/// A table waiting to be read, or being read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Pending<K> {
    pub namespace: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// The key of the last row read, once a chunk is in the log.
    #[serde(default = "none", skip_serializing_if = "Option::is_none")]
    pub after: Option<K>,
    pub chunks_done: u64,
    /// Estimated from the table's statistics when it was queued.
    pub chunks_total: u64,
}

fn none<K>() -> Option<K> {
    None
}

impl<K> Pending<K> {
    /// (The Postgres source's; a build with only MySQL has no use for it.)
    #[cfg(feature = "postgres")]
    pub(crate) fn id(&self) -> TableId {
        TableId {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        }
    }

    pub(crate) fn label(&self) -> String {
        format!("{}.{}", self.namespace, self.name)
    }
}

/// The queue of on-demand snapshots, front first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(bound(serialize = "K: Serialize", deserialize = "K: DeserializeOwned"))]
pub(crate) struct IncrementalState<K> {
    pub queue: VecDeque<Pending<K>>,
}

impl<K> Default for IncrementalState<K> {
    fn default() -> Self {
        IncrementalState {
            queue: VecDeque::new(),
        }
    }
}

impl<K: Serialize + DeserializeOwned> IncrementalState<K> {
    /// The state in a checkpoint's `snapshot_state`, if it is an on-demand snapshot's.
    pub(crate) fn from_value(value: &serde_json::Value) -> Option<IncrementalState<K>> {
        if value.get("kind")?.as_str()? != "incremental" {
            return None;
        }
        serde_json::from_value(value.get("state")?.clone()).ok()
    }

    /// As `snapshot_state`, with the keys `sluice status` and the metrics read (`chunks_done`,
    /// `chunks_total`, `by_table`).
    /// A table in the queue is still being read: its total (an estimate from the statistics)
    /// counts at least one chunk more than it has done.
    pub(crate) fn to_value(&self) -> serde_json::Value {
        let total_of = |p: &Pending<K>| p.chunks_total.max(p.chunks_done + 1);
        let done: u64 = self.queue.iter().map(|p| p.chunks_done).sum();
        let total: u64 = self.queue.iter().map(total_of).sum();
        let by_table: BTreeMap<String, [u64; 2]> = self
            .queue
            .iter()
            .map(|p| (p.label(), [p.chunks_done, total_of(p)]))
            .collect();
        serde_json::json!({
            "kind": "incremental",
            "chunks_done": done,
            "chunks_total": total,
            "by_table": by_table,
            "state": self,
        })
    }

    /// The checkpoint's `snapshot_state` (None when nothing is queued).
    pub(crate) fn checkpoint_state(&self) -> Option<serde_json::Value> {
        (!self.queue.is_empty()).then(|| self.to_value())
    }
}

impl<K> IncrementalState<K> {
    /// The table, or the same slice of it, is queued.
    pub(crate) fn is_queued(&self, table: &TableId, filter: Option<&str>) -> bool {
        self.queue.iter().any(|p| {
            p.namespace == table.namespace && p.name == table.name && p.filter.as_deref() == filter
        })
    }

    /// Queues a table, or a slice of it; false when the same is queued already.
    pub(crate) fn push(
        &mut self,
        table: &TableId,
        filter: Option<&str>,
        estimated_rows: f64,
        chunk_rows: usize,
    ) -> bool {
        if self.is_queued(table, filter) {
            return false;
        }
        let chunks_total = (estimated_rows / chunk_rows.max(1) as f64).ceil().max(1.0) as u64;
        tracing::info!(%table, filter, chunks = chunks_total, "on-demand snapshot queued");
        self.queue.push_back(Pending {
            namespace: table.namespace.clone(),
            name: table.name.clone(),
            filter: filter.map(str::to_owned),
            after: None,
            chunks_done: 0,
            chunks_total,
        });
        true
    }

    /// A chunk of the front table is in the log: it reads on after `last_key` (None: the
    /// chunk had no rows), or, after the `last` chunk, the queue moves to the next table.
    pub(crate) fn advance(&mut self, last_key: Option<K>, last: bool) {
        let Some(pending) = self.queue.front_mut() else {
            return;
        };
        if let Some(key) = last_key {
            pending.after = Some(key);
        }
        pending.chunks_done += 1;
        if last {
            tracing::info!(table = %pending.label(), chunks = pending.chunks_done, "on-demand snapshot of the table done");
            self.queue.pop_front();
        }
    }
}

/// A chunk's rows as `r` events marked `incremental`, at `position` (where the stream put
/// the chunk).
pub(crate) fn read_events(
    schema: &Arc<TableSchema>,
    rows: impl IntoIterator<Item = Vec<Value>>,
    position: &Position,
) -> Vec<ChangeEvent> {
    let now = now_us();
    rows.into_iter()
        .map(|values| ChangeEvent {
            op: Op::Read,
            table: Some(Arc::clone(schema)),
            before: None,
            before_is_key_only: false,
            after: Some(values),
            snapshot: SnapshotMarker::Incremental,
            commit_ts_us: now,
            position: position.clone(),
            xid: None,
            txn: None,
            message: None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(name: &str) -> TableId {
        TableId {
            namespace: "public".into(),
            name: name.into(),
        }
    }

    #[test]
    fn the_state_round_trips_through_a_checkpoint_with_its_progress() {
        let mut state = IncrementalState::<Vec<String>>::default();
        assert!(state.push(&table("t"), None, 95.0, 10));
        assert!(!state.push(&table("t"), None, 95.0, 10), "queued once");
        assert!(state.push(&table("t"), Some("v > 1"), 95.0, 10), "a slice");
        state.queue.pop_back();
        assert!(state.push(&table("u"), None, 3.0, 10));
        state.advance(Some(vec!["42".into()]), false);
        state.advance(Some(vec!["84".into()]), false);
        state.advance(None, false);
        let value = state.to_value();
        assert_eq!(value["chunks_done"], 3);
        assert_eq!(value["chunks_total"], 11);
        assert_eq!(value["by_table"]["public.t"], serde_json::json!([3, 10]));
        assert_eq!(value["by_table"]["public.u"], serde_json::json!([0, 1]));
        let back = IncrementalState::<Vec<String>>::from_value(&value).expect("reads back");
        assert_eq!(back, state);
        assert_eq!(back.queue[0].after, Some(vec!["84".to_owned()]));
        assert_eq!(
            IncrementalState::<Vec<String>>::from_value(&serde_json::json!({"chunks_done": 1})),
            None
        );
        state.advance(None, true);
        assert_eq!(state.queue.len(), 1, "the first table is done");
        state.advance(None, true);
        assert_eq!(state.checkpoint_state(), None, "nothing queued");
    }
}
