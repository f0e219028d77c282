//! A batch of decoded changes turned into per-table work: the final state of each key as set
//! upserts and deletes, truncates splitting a table's work, table versions in order, unchanged
//! TOAST values filled in, and keyless tables keeping every operation in order.

use std::collections::HashMap;
use std::sync::Arc;

use sluice_core::change::{Change, SourcedChange};
use sluice_core::event::{Op, TableId, TableSchema};
use sluice_core::value::Value;

/// A row and the record it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub values: Vec<Value>,
    pub record: usize,
    /// From an insert or a snapshot read: the key is probably new to the target, so a plain
    /// insert is worth trying before an upsert.
    pub fresh: bool,
}

/// One step of a table's work.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// A keyed table: the final state of each key. `partial` rows are updates whose unchanged
    /// TOASTed columns the source did not send (`Value::Unavailable`): only their other
    /// columns are set.
    Keyed {
        upserts: Vec<Row>,
        deletes: Vec<Row>,
        partial: Vec<Row>,
    },
    /// A table without a key: operations in order.
    Keyless(Vec<KeylessOp>),
    /// The table emptied; `record` is the truncate's record.
    Truncate { record: usize },
}

#[derive(Debug, Clone, PartialEq)]
pub enum KeylessOp {
    Insert(Row),
    /// Delete one row equal to this one in every column.
    Delete(Row),
}

/// The work for one table version.
#[derive(Debug, Clone)]
pub struct TableWork {
    pub table: Arc<TableSchema>,
    pub steps: Vec<Step>,
    /// The record of the work's first change (its topic names the table's destination in
    /// sinks that route by topic).
    pub record: usize,
    /// Rows read by a snapshot among the work's changes (search sinks relax an index's
    /// refresh while a snapshot loads it).
    pub snapshot_rows: usize,
}

/// FxHash (as in rustc): keys here are short and not attacker-chosen within one batch, so a
/// fast hash beats SipHash's flooding resistance.
#[derive(Default, Clone, Copy)]
struct FxHasher(u64);

impl std::hash::Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(word))
                .wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type FastMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<FxHasher>>;

#[derive(Default)]
struct KeyedState {
    /// key → index in upserts / deletes / partial (one of them).
    slots: FastMap<String, (u8, usize)>,
    upserts: Vec<Option<Row>>,
    deletes: Vec<Option<Row>>,
    partial: Vec<Option<Row>>,
}

const UPSERT: u8 = 0;
const DELETE: u8 = 1;
const PARTIAL: u8 = 2;

impl KeyedState {
    fn take(&mut self, key: &str) -> Option<(u8, Row)> {
        let (kind, index) = self.slots.remove(key)?;
        let row = match kind {
            UPSERT => self.upserts[index].take(),
            DELETE => self.deletes[index].take(),
            _ => self.partial[index].take(),
        };
        row.map(|row| (kind, row))
    }

    fn put(&mut self, key: String, kind: u8, row: Row) {
        let list = match kind {
            UPSERT => &mut self.upserts,
            DELETE => &mut self.deletes,
            _ => &mut self.partial,
        };
        list.push(Some(row));
        self.slots.insert(key, (kind, list.len() - 1));
    }

    fn finish(self) -> Step {
        let flat = |list: Vec<Option<Row>>| list.into_iter().flatten().collect();
        Step::Keyed {
            upserts: flat(self.upserts),
            deletes: flat(self.deletes),
            partial: flat(self.partial),
        }
    }
}

/// An event the plan cannot turn into work, with the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanError {
    pub record: usize,
    pub message: String,
}

/// A key's values as one string, for finding the same key again within a batch.
fn key_of(key_columns: &[usize], row: &[Value]) -> String {
    use std::fmt::Write as _;
    let mut key = String::new();
    for &i in key_columns {
        match &row[i] {
            Value::Int16(v) => key.push_str(itoa::Buffer::new().format(*v)),
            Value::Int32(v) => key.push_str(itoa::Buffer::new().format(*v)),
            Value::Int64(v) => key.push_str(itoa::Buffer::new().format(*v)),
            Value::Text(v) => key.push_str(v),
            other => {
                let _ = write!(key, "{other:?}");
            }
        }
        key.push('\u{1f}');
    }
    key
}

/// Turns decoded changes (in log order) into per-table work.
pub fn plan(changes: Vec<SourcedChange>) -> Result<Vec<TableWork>, PlanError> {
    let mut work: Vec<TableWork> = Vec::new();
    let mut keyed: HashMap<usize, KeyedState> = HashMap::new();
    // The open work item of each table (its newest version in the batch).
    let mut open: HashMap<TableId, usize> = HashMap::new();
    let mut key_columns: Vec<usize> = Vec::new();
    for sourced in changes {
        let SourcedChange { change, record, .. } = sourced;
        let Change {
            table,
            op,
            before,
            after,
            ..
        } = change;
        let table = &table;
        let index = match open.get(&table.table) {
            Some(&i)
                if Arc::ptr_eq(&work[i].table, table) || work[i].table.columns == table.columns =>
            {
                i
            }
            previous => {
                if let Some(&i) = previous {
                    if let Some(state) = keyed.remove(&i) {
                        work[i].steps.push(state.finish());
                    }
                }
                work.push(TableWork {
                    table: Arc::clone(table),
                    steps: Vec::new(),
                    record,
                    snapshot_rows: 0,
                });
                open.insert(table.table.clone(), work.len() - 1);
                work.len() - 1
            }
        };
        let item = &mut work[index];
        if op == Op::Read {
            item.snapshot_rows += 1;
        }
        if op == Op::Truncate {
            if let Some(state) = keyed.remove(&index) {
                item.steps.push(state.finish());
            }
            item.steps.push(Step::Truncate { record });
            continue;
        }
        let fail = |message: String| PlanError { record, message };
        if table.has_key() {
            key_columns.clear();
            key_columns.extend(table.key_columns().map(|(i, _)| i));
            let state = keyed.entry(index).or_default();
            match op {
                Op::Create | Op::Read | Op::Update => {
                    let after = after.ok_or_else(|| {
                        fail(format!("a {op:?} event of {} has no row", table.table))
                    })?;
                    let key = key_of(&key_columns, &after);
                    // A key change arrives as a delete of the old key and a create of the new
                    // one, so the key of an update's before image is the same as its after's.
                    let mut row = Row {
                        values: after,
                        record,
                        fresh: matches!(op, Op::Create | Op::Read),
                    };
                    let previous = state.take(&key);
                    if row.values.iter().any(|v| matches!(v, Value::Unavailable)) {
                        if let Some((kind, earlier)) = &previous {
                            if *kind != DELETE {
                                for (value, old) in row.values.iter_mut().zip(&earlier.values) {
                                    if matches!(value, Value::Unavailable) {
                                        *value = old.clone();
                                    }
                                }
                            }
                        }
                    }
                    let kind = if row.values.iter().any(|v| matches!(v, Value::Unavailable)) {
                        PARTIAL
                    } else {
                        UPSERT
                    };
                    state.put(key, kind, row);
                }
                Op::Delete => {
                    let before = before.ok_or_else(|| {
                        fail(format!("a delete of {} has no old key", table.table))
                    })?;
                    let key = key_of(&key_columns, &before);
                    state.take(&key);
                    state.put(
                        key,
                        DELETE,
                        Row {
                            values: before,
                            record,
                            fresh: false,
                        },
                    );
                }
                Op::Truncate | Op::Message => {}
            }
        } else {
            let ops = match item.steps.last_mut() {
                Some(Step::Keyless(ops)) => ops,
                _ => {
                    item.steps.push(Step::Keyless(Vec::new()));
                    match item.steps.last_mut() {
                        Some(Step::Keyless(ops)) => ops,
                        _ => unreachable!("just pushed"),
                    }
                }
            };
            let full_before = |before: Option<Vec<Value>>| {
                before
                    .filter(|row| !row.iter().any(|v| matches!(v, Value::Unavailable)))
                    .ok_or_else(|| {
                        fail(format!(
                            "{} has no primary key, so its updates and deletes can only be matched \
                             on the whole old row, which the source sends only with REPLICA \
                             IDENTITY FULL: run ALTER TABLE {} REPLICA IDENTITY FULL on the \
                             source (or add a primary key)",
                            table.table, table.table
                        ))
                    })
            };
            let row = |values| Row {
                values,
                record,
                fresh: false,
            };
            match op {
                Op::Create | Op::Read => {
                    let after = after.ok_or_else(|| fail("an insert without a row".into()))?;
                    ops.push(KeylessOp::Insert(row(after)));
                }
                Op::Update => {
                    let before = full_before(before)?;
                    let after = after.ok_or_else(|| fail("an update without a row".into()))?;
                    ops.push(KeylessOp::Delete(row(before)));
                    ops.push(KeylessOp::Insert(row(after)));
                }
                Op::Delete => ops.push(KeylessOp::Delete(row(full_before(before)?))),
                Op::Truncate | Op::Message => {}
            }
        }
    }
    for (index, state) in keyed {
        work[index].steps.push(state.finish());
    }
    Ok(work)
}
