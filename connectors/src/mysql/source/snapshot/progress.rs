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
