//! How far an initial snapshot got: which chunks of which tables are in the log, committed
//! with each snapshot batch (the checkpoint's `snapshot_state`) so that a restart resumes at
//! the next unfinished chunk instead of starting over.
//!
//! A chunk is `chunk_blocks` heap blocks of a table (the last one open-ended), read by one
//! COPY; tables are cut so that a chunk holds about a source batch of rows. A batch carries whole chunks only, so a chunk is either entirely in the log and
//! marked done, or not in it at all: no row is written twice.
//!
//! Resuming cannot import the original snapshot (it died with the connection that exported
//! it), so the remaining chunks are read in a new one, keeping only the rows no transaction
//! has touched since the original snapshot (`xmin` visible in it): exactly what the original
//! would have read. Rows changed since reach the log from the stream, which starts at the
//! original snapshot's point and so carries every one of those changes after the rows.

use serde::{Deserialize, Serialize};

/// A chunk: the table's oid and the chunk's index in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct ChunkId {
    pub table: u32,
    pub index: u32,
}

/// The snapshot's progress as the checkpoint keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SnapshotState {
    /// `txid_current_snapshot()` of the original snapshot (`xmin:xmax:xip,…`).
    pub txid_snapshot: String,
    /// When the original snapshot was taken (the commit time of its rows).
    pub snapshot_ts_us: i64,
    /// Totals over every table, for `sluice status`.
    pub chunks_total: u64,
    pub chunks_done: u64,
    /// Per table (`schema.table`), chunks in the log and in all, for `sluice status`.
    #[serde(default)]
    pub by_table: std::collections::BTreeMap<String, [u64; 2]>,
    pub tables: Vec<TableProgress>,
}

/// One table's chunks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TableProgress {
    pub oid: u32,
    /// `schema.table`, for people reading the checkpoint.
    pub name: String,
    /// The table's file when the snapshot began: a rewrite since (VACUUM FULL, CLUSTER, a
    /// column type change) moves rows between chunks, so its chunks are read again.
    pub filenode: i64,
    pub chunk_blocks: u64,
    pub chunks: u32,
    /// The chunks in the log, as sorted, disjoint, inclusive ranges of chunk indexes.
    pub done: Vec<[u32; 2]>,
}

impl TableProgress {
    pub(crate) fn is_done(&self, index: u32) -> bool {
        self.done
            .iter()
            .any(|[first, last]| (*first..=*last).contains(&index))
    }

    pub(crate) fn done_count(&self) -> u64 {
        self.done
            .iter()
            .map(|[first, last]| u64::from(last - first) + 1)
            .sum()
    }

    /// Records `index` as done, merging it into its neighbouring ranges.
    fn mark(&mut self, index: u32) {
        if self.is_done(index) {
            return;
        }
        let at = self.done.partition_point(|[first, _]| *first < index);
        self.done.insert(at, [index, index]);
        let mut merged: Vec<[u32; 2]> = Vec::with_capacity(self.done.len());
        for range in self.done.drain(..) {
            match merged.last_mut() {
                Some(last) if last[1] + 1 >= range[0] => last[1] = last[1].max(range[1]),
                _ => merged.push(range),
            }
        }
        self.done = merged;
    }
}

impl SnapshotState {
    pub(crate) fn table(&self, oid: u32) -> Option<&TableProgress> {
        self.tables.iter().find(|t| t.oid == oid)
    }

    /// Records chunks as in the log (they are in the batch this state is committed with).
    pub(crate) fn mark(&mut self, chunks: impl IntoIterator<Item = ChunkId>) {
        for chunk in chunks {
            if let Some(table) = self.tables.iter_mut().find(|t| t.oid == chunk.table) {
                table.mark(chunk.index);
            }
        }
        self.recount();
    }

    /// Recomputes the totals after tables changed.
    pub(crate) fn recount(&mut self) {
        self.chunks_total = self.tables.iter().map(|t| u64::from(t.chunks)).sum();
        self.chunks_done = self.tables.iter().map(TableProgress::done_count).sum();
        self.by_table = self
            .tables
            .iter()
            .map(|t| (t.name.clone(), [t.done_count(), u64::from(t.chunks)]))
            .collect();
    }

    pub(crate) fn to_value(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("the snapshot state serializes")
    }

    /// The state in a checkpoint; None when it holds none or one this version cannot read
    /// (the snapshot then starts over).
    pub(crate) fn from_value(value: &serde_json::Value) -> Option<SnapshotState> {
        serde_json::from_value(value.clone()).ok()
    }

    /// The largest transaction id the original snapshot names (its `xmax`).
    pub(crate) fn xmax(&self) -> Option<u64> {
        self.txid_snapshot.split(':').nth(1)?.parse().ok()
    }
}

/// Blocks per chunk for a table averaging `rows_per_block` (its statistics; None before it
/// was ever analyzed): about `rows` rows a chunk.
pub(crate) fn auto_chunk_blocks(rows_per_block: Option<f64>, rows: usize) -> u64 {
    match rows_per_block {
        Some(per_block) if per_block >= 1.0 => {
            ((rows as f64 / per_block).ceil() as u64).clamp(1, 1 << 20)
        }
        // Unknown: 64 blocks (512 KiB) holds a batch of rows of about 100 bytes.
        _ => 64,
    }
}

/// How many chunks a table of `blocks` is read in: one when the server cannot scan ctid
/// ranges (before Postgres 14), or for small tables.
pub(crate) fn chunk_count(blocks: u64, chunk_blocks: u64, tid_range_scans: bool) -> u32 {
    if !tid_range_scans {
        return 1;
    }
    u32::try_from(blocks.div_ceil(chunk_blocks.max(1)).max(1)).unwrap_or(u32::MAX)
}

/// The blocks chunk `index` of `chunks` covers: all of them for a single chunk; the last one
/// is open-ended, as the table may have grown past its estimated size.
pub(crate) fn chunk_blocks(
    index: u32,
    chunks: u32,
    chunk_blocks: u64,
) -> Option<(u64, Option<u64>)> {
    if chunks <= 1 {
        return None;
    }
    let start = u64::from(index) * chunk_blocks;
    let end = (index + 1 < chunks).then(|| start + chunk_blocks);
    Some((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(chunks: u32) -> TableProgress {
        TableProgress {
            oid: 7,
            name: "s.t".into(),
            filenode: 1,
            chunk_blocks: 256,
            chunks,
            done: Vec::new(),
        }
    }

    #[test]
    fn done_chunks_merge_into_ranges_in_any_order() {
        let mut t = table(10);
        for i in [3, 0, 1, 5, 4, 9, 4] {
            t.mark(i);
        }
        assert_eq!(t.done, [[0, 1], [3, 5], [9, 9]]);
        assert!(t.is_done(4) && !t.is_done(2) && !t.is_done(8));
        t.mark(2);
        assert_eq!(t.done, [[0, 5], [9, 9]]);
        assert_eq!(t.done_count(), 7);
    }

    #[test]
    fn the_state_round_trips_and_counts() {
        let mut state = SnapshotState {
            txid_snapshot: "100:105:101,103".into(),
            snapshot_ts_us: 1,
            chunks_total: 0,
            chunks_done: 0,
            by_table: Default::default(),
            tables: vec![table(4)],
        };
        state.mark([
            ChunkId { table: 7, index: 2 },
            ChunkId { table: 8, index: 0 },
        ]);
        assert_eq!((state.chunks_done, state.chunks_total), (1, 4));
        assert_eq!(state.by_table["s.t"], [1, 4]);
        assert_eq!(
            SnapshotState::from_value(&state.to_value()),
            Some(state.clone())
        );
        assert_eq!(state.xmax(), Some(105));
        assert_eq!(
            SnapshotState::from_value(&serde_json::json!({"other": 1})),
            None
        );
    }

    #[test]
    fn chunks_cover_the_table_with_an_open_end() {
        assert_eq!(chunk_count(1000, 256, true), 4);
        assert_eq!(chunk_count(0, 256, true), 1);
        assert_eq!(chunk_count(1000, 256, false), 1);
        assert_eq!(chunk_blocks(0, 4, 256), Some((0, Some(256))));
        assert_eq!(chunk_blocks(3, 4, 256), Some((768, None)));
        assert_eq!(chunk_blocks(0, 1, 256), None);
        assert_eq!(auto_chunk_blocks(Some(70.0), 5_000), 72);
        assert_eq!(auto_chunk_blocks(Some(0.5), 5_000), 64);
        assert_eq!(auto_chunk_blocks(None, 5_000), 64);
    }
}
