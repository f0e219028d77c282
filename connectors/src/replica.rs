//! What the database sinks (Postgres, MySQL/MariaDB) share: records from the log decoded into
//! typed changes, and a batch turned into per-table work that a target applies in one
//! transaction together with the sink's offsets.
//!
//! Within a batch only the final state of each key matters, so keyed tables get one upsert or
//! one delete per key (applied as set operations), in table-version order; a truncate splits a
//! table's work in two. Tables without a key keep every operation in order, matching rows on
//! all columns (which needs the full old row: REPLICA IDENTITY FULL).

use std::collections::HashMap;
use std::sync::Arc;

use sluice_core::event::{Op, TableId, TableSchema};
use sluice_core::sink::{Offsets, SinkRecord};
use sluice_core::value::Value;
use sluice_schema_registry::avro::rows::{Change, ChangeDecoder};

/// A change and the index of the record it came from.
#[derive(Debug, Clone)]
pub struct Sourced {
    pub change: Change,
    pub record: usize,
}

/// Decodes the records' values (tombstones and messages are skipped). An undecodable record is
/// an error naming where it is.
pub fn decode(decoder: &mut ChangeDecoder, records: &[SinkRecord]) -> Result<Vec<Sourced>, String> {
    let mut out = Vec::with_capacity(records.len());
    for (index, record) in records.iter().enumerate() {
        let Some(value) = &record.record.value else {
            continue;
        };
        let change = decoder.decode(value).map_err(|e| {
            format!(
                "record {}[{}] offset {}: {e}",
                record.topic, record.partition, record.record.offset
            )
        })?;
        if let Some(change) = change {
            if change.op != Op::Message {
                out.push(Sourced {
                    change,
                    record: index,
                });
            }
        }
    }
    Ok(out)
}

/// The next offset of every partition the records came from.
pub fn next_offsets(records: &[SinkRecord]) -> Offsets {
    let mut offsets = Offsets::new();
    for record in records {
        offsets.insert(
            (record.topic.to_string(), record.partition),
            record.record.offset + 1,
        );
    }
    offsets
}

/// A row and the record it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub values: Vec<Value>,
    pub record: usize,
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
    Truncate,
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
}

#[derive(Default)]
struct KeyedState {
    /// key → index in upserts / deletes / partial (one of them).
    slots: HashMap<String, (u8, usize)>,
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

fn key_of(table: &TableSchema, row: &[Value]) -> String {
    let mut key = String::new();
    for (i, _) in table.key_columns() {
        use std::fmt::Write as _;
        let _ = write!(key, "{:?}\u{1f}", row[i]);
    }
    key
}

/// Turns decoded changes (in log order) into per-table work.
pub fn plan(changes: &[Sourced]) -> Result<Vec<TableWork>, PlanError> {
    let mut work: Vec<TableWork> = Vec::new();
    let mut keyed: HashMap<usize, KeyedState> = HashMap::new();
    // The open work item of each table (its newest version in the batch).
    let mut open: HashMap<TableId, usize> = HashMap::new();
    for sourced in changes {
        let change = &sourced.change;
        let table = &change.table;
        let index = match open.get(&table.table) {
            Some(&i) if work[i].table.columns == table.columns => i,
            previous => {
                if let Some(&i) = previous {
                    if let Some(state) = keyed.remove(&i) {
                        work[i].steps.push(state.finish());
                    }
                }
                work.push(TableWork {
                    table: table.clone(),
                    steps: Vec::new(),
                });
                open.insert(table.table.clone(), work.len() - 1);
                work.len() - 1
            }
        };
        let item = &mut work[index];
        if change.op == Op::Truncate {
            if let Some(state) = keyed.remove(&index) {
                item.steps.push(state.finish());
            }
            item.steps.push(Step::Truncate);
            continue;
        }
        let fail = |message: String| PlanError {
            record: sourced.record,
            message,
        };
        if table.has_key() {
            let state = keyed.entry(index).or_default();
            match change.op {
                Op::Create | Op::Read | Op::Update => {
                    let after = change.after.clone().ok_or_else(|| {
                        fail(format!(
                            "a {:?} event of {} has no row",
                            change.op, table.table
                        ))
                    })?;
                    let key = key_of(table, &after);
                    // A key change arrives as a delete of the old key and a create of the new
                    // one, so the key of an update's before image is the same as its after's.
                    let mut row = Row {
                        values: after,
                        record: sourced.record,
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
                    let before = change.before.clone().ok_or_else(|| {
                        fail(format!("a delete of {} has no old key", table.table))
                    })?;
                    let key = key_of(table, &before);
                    state.take(&key);
                    state.put(
                        key,
                        DELETE,
                        Row {
                            values: before,
                            record: sourced.record,
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
            let full_before = || {
                change
                    .before
                    .clone()
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
                record: sourced.record,
            };
            match change.op {
                Op::Create | Op::Read => {
                    let after = change
                        .after
                        .clone()
                        .ok_or_else(|| fail("an insert without a row".into()))?;
                    ops.push(KeylessOp::Insert(row(after)));
                }
                Op::Update => {
                    let before = full_before()?;
                    let after = change
                        .after
                        .clone()
                        .ok_or_else(|| fail("an update without a row".into()))?;
                    ops.push(KeylessOp::Delete(row(before)));
                    ops.push(KeylessOp::Insert(row(after)));
                }
                Op::Delete => ops.push(KeylessOp::Delete(row(full_before()?))),
                Op::Truncate | Op::Message => {}
            }
        }
    }
    for (index, state) in keyed {
        work[index].steps.push(state.finish());
    }
    Ok(work)
}
