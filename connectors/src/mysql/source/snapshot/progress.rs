//! How far an initial snapshot got, committed with each of its units (the checkpoint's
//! `snapshot_state`), so that a restart resumes each slice after the last key in the log
//! instead of starting over.
//!
//! A slice is a table, or an integer-key range of one, read in key order: the key of the last
//! row in the log is where it resumes. Units of several slices reach the log in the order they
//! are sent, and each carries the state as of itself (updated and sent under one lock), so a
//! committed state never names a row the log does not hold.
//!
//! A resumed slice is read in a new snapshot, and streaming then starts from the original
//! snapshot's position: changes made between the two are in the rows read and are streamed
//! again after them. The end state is the same (row events carry whole rows); a reader of the
//! log sees such a row's newest version, then its older changes, then the newest again. A table
//! without a primary key cannot resume inside itself: it is read again whole.

use mysql_async::Value as My;
use serde::{Deserialize, Serialize};
use sluice_core::event::{ChangeEvent, SnapshotMarker};

/// The snapshot's progress as the checkpoint keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct SnapshotState {
    /// Slices in the log whole, and in all, for `sluice status`.
    pub chunks_done: u64,
    pub chunks_total: u64,
    /// Per table (`database.table`), slices in the log whole and in all, for `sluice status`.
    #[serde(default)]
    pub by_table: std::collections::BTreeMap<String, [u64; 2]>,
    pub slices: Vec<SliceProgress>,
    /// Tables (`database.table`) with a row in the log, whose first row was marked
    /// `first_in_data_collection` (or `first`, the snapshot's first).
    #[serde(default)]
    pub begun: std::collections::BTreeSet<String>,
}

/// One slice: a table (`database.table`), or a `[from, to)` range of its integer key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct SliceProgress {
    pub table: String,
    pub range: Option<(i64, Option<i64>)>,
    /// The key of the last row in the log; None before the first.
    pub after: Option<Vec<KeyValue>>,
    pub done: bool,
}

/// A key column's value as the protocol gave it, kept to restart a keyset read after it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum KeyValue {
    Null,
    Int(i64),
    Uint(u64),
    /// Hex, so that any bytes survive JSON.
    Bytes(String),
    Float(f32),
    Double(f64),
    Date(u16, u8, u8, u8, u8, u8, u32),
    Time(bool, u32, u8, u8, u8, u32),
}

impl KeyValue {
    pub(crate) fn of(value: &My) -> KeyValue {
        match value {
            My::NULL => KeyValue::Null,
            My::Int(i) => KeyValue::Int(*i),
            My::UInt(u) => KeyValue::Uint(*u),
            My::Bytes(b) => KeyValue::Bytes(b.iter().map(|byte| format!("{byte:02x}")).collect()),
            My::Float(f) => KeyValue::Float(*f),
            My::Double(f) => KeyValue::Double(*f),
            My::Date(y, mo, d, h, mi, s, us) => KeyValue::Date(*y, *mo, *d, *h, *mi, *s, *us),
            My::Time(neg, days, h, mi, s, us) => KeyValue::Time(*neg, *days, *h, *mi, *s, *us),
        }
    }

    pub(crate) fn to_value(&self) -> My {
        match self {
            KeyValue::Null => My::NULL,
            KeyValue::Int(i) => My::Int(*i),
            KeyValue::Uint(u) => My::UInt(*u),
            KeyValue::Bytes(hex) => My::Bytes(
                (0..hex.len() / 2)
                    .filter_map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok())
                    .collect(),
            ),
            KeyValue::Float(f) => My::Float(*f),
            KeyValue::Double(f) => My::Double(*f),
            KeyValue::Date(y, mo, d, h, mi, s, us) => My::Date(*y, *mo, *d, *h, *mi, *s, *us),
            KeyValue::Time(neg, days, h, mi, s, us) => My::Time(*neg, *days, *h, *mi, *s, *us),
        }
    }
}

impl SnapshotState {
    pub(crate) fn new(slices: Vec<SliceProgress>) -> SnapshotState {
        let mut state = SnapshotState {
            chunks_done: 0,
            chunks_total: 0,
            by_table: Default::default(),
            slices,
            begun: Default::default(),
        };
        state.recount();
        state
    }

    pub(crate) fn recount(&mut self) {
        self.chunks_total = self.slices.len() as u64;
        self.chunks_done = self.slices.iter().filter(|s| s.done).count() as u64;
        self.by_table.clear();
        for slice in &self.slices {
            let entry = self.by_table.entry(slice.table.clone()).or_default();
            entry[0] += u64::from(slice.done);
            entry[1] += 1;
        }
    }

    /// Marks a unit of `table`'s rows as Debezium does, as it goes to the log with this state
    /// (its slice's progress already recorded): the snapshot's first row `first`, each other
    /// table's first `first_in_data_collection`; when the unit ends its table, its last row
    /// `last_in_data_collection`, or `last` when it ends the snapshot. (A table whose last unit
    /// is empty, which happens when parallel slices of it end out of order, keeps its last row
    /// `true`: that row is in the log already.)
    pub(crate) fn mark(&mut self, table: &str, events: &mut [ChangeEvent]) {
        let Some(first) = events.first_mut() else {
            return;
        };
        if self.begun.is_empty() {
            first.snapshot = SnapshotMarker::First;
        } else if !self.begun.contains(table) {
            first.snapshot = SnapshotMarker::FirstInDataCollection;
        }
        self.begun.insert(table.to_string());
        let table_done = self
            .slices
            .iter()
            .filter(|s| s.table == table)
            .all(|s| s.done);
        if !table_done {
            return;
        }
        let last = events.last_mut().expect("not empty");
        last.snapshot = if self.slices.iter().all(|s| s.done) {
            SnapshotMarker::Last
        } else if last.snapshot == SnapshotMarker::Yes {
            SnapshotMarker::LastInDataCollection
        } else {
            // A table of one row keeps its first mark, as Debezium's does.
            last.snapshot
        };
    }

    pub(crate) fn to_value(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("the snapshot state serializes")
    }

    /// The state in a checkpoint; None when it holds none this version can read.
    pub(crate) fn from_value(value: &serde_json::Value) -> Option<SnapshotState> {
        serde_json::from_value(value.clone()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_events(n: usize) -> Vec<ChangeEvent> {
        (0..n)
            .map(|_| ChangeEvent {
                op: sluice_core::event::Op::Read,
                table: None,
                before: None,
                before_is_key_only: false,
                after: Some(Vec::new()),
                snapshot: SnapshotMarker::Yes,
                commit_ts_us: 0,
                position: sluice_core::position::Position::BinlogFile {
                    file: "b.000001".into(),
                    offset: 4,
                },
                xid: None,
                txn: None,
                message: None,
            })
            .collect()
    }

    fn marks(events: &[ChangeEvent]) -> Vec<&'static str> {
        events.iter().map(|e| e.snapshot.as_str()).collect()
    }

    #[test]
    fn units_are_marked_first_and_last_as_debezium_does() {
        let slice = |table: &str| SliceProgress {
            table: table.into(),
            range: None,
            after: None,
            done: false,
        };
        let mut state = SnapshotState::new(vec![slice("d.a"), slice("d.b"), slice("d.c")]);
        // `a` in two units, `b` one row, `c` in one unit.
        let mut unit = read_events(2);
        state.mark("d.a", &mut unit);
        assert_eq!(marks(&unit), ["first", "true"]);
        state.slices[0].done = true;
        let mut unit = read_events(2);
        state.mark("d.a", &mut unit);
        assert_eq!(marks(&unit), ["true", "last_in_data_collection"]);
        state.slices[1].done = true;
        let mut unit = read_events(1);
        state.mark("d.b", &mut unit);
        assert_eq!(marks(&unit), ["first_in_data_collection"]);
        state.slices[2].done = true;
        let mut unit = read_events(3);
        state.mark("d.c", &mut unit);
        assert_eq!(marks(&unit), ["first_in_data_collection", "true", "last"]);
        // A resumed snapshot remembers the tables begun.
        let resumed = SnapshotState::from_value(&state.to_value()).unwrap();
        assert_eq!(resumed.begun.len(), 3);
    }

    #[test]
    fn key_values_round_trip_through_the_checkpoint() {
        let values = [
            My::NULL,
            My::Int(-5),
            My::UInt(u64::MAX),
            My::Bytes(vec![0, 255, b'a']),
            My::Double(1.5),
            My::Date(2024, 2, 29, 23, 59, 58, 123_456),
            My::Time(true, 1, 2, 3, 4, 5),
        ];
        let state = SnapshotState::new(vec![SliceProgress {
            table: "d.t".into(),
            range: Some((0, None)),
            after: Some(values.iter().map(KeyValue::of).collect()),
            done: false,
        }]);
        let back = SnapshotState::from_value(&state.to_value()).expect("reads back");
        let keys: Vec<My> = back.slices[0]
            .after
            .as_ref()
            .expect("a key")
            .iter()
            .map(KeyValue::to_value)
            .collect();
        assert_eq!(keys, values);
        assert_eq!((back.chunks_done, back.chunks_total), (0, 1));
    }
}
