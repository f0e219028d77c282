//! Unchanged TOASTed values, filled in. Under `REPLICA IDENTITY DEFAULT` an update that leaves
//! a large (out-of-line) value alone does not carry it: pgoutput sends "unchanged" instead.
//! Debezium emits a placeholder string there; sluice finds the exact value, in this order:
//!
//! 1. **From the batch itself**, free: an earlier event of the batch for the same key carried
//!    the value (an insert, or an update that changed it), and it is unchanged since.
//! 2. **From the table**, one query per table per batch for the keys still open
//!    (`SELECT xmin, … WHERE key IN …`, by the primary key's index): the row as it is now is
//!    the row as the batch left it exactly when its `xmin` is the transaction of the batch's
//!    last event for that key (nothing changed it since), and then the value holds for every
//!    open update of that key in the batch. The cost: one indexed read per such row, made only
//!    for updates that left a TOASTed value unchanged.
//! 3. Otherwise the row changed again after the batch (or was deleted, or the update ran in a
//!    subtransaction, whose xid pgoutput does not tell): the value at that commit is no longer
//!    readable anywhere, and the event keeps the placeholder, counted in
//!    `sluice_source_toast_unresolved_total` and logged. `REPLICA IDENTITY FULL` makes every
//!    value exact without reads (the server sends the old row), at the cost of more WAL.
//!
//! Database sinks never write the placeholder: they leave such columns as they are.
//! `toast = "placeholder"` turns the reads off.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Deserialize;
use sluice_core::event::{ChangeEvent, Op, TableSchema};
use sluice_core::value::Value;
use tokio_postgres::Client;

use super::rows::parse;
use super::Relation;
use crate::postgres::protocol::quote_ident;
use crate::postgres::snapshot::incremental::key_text;
use crate::postgres::PostgresError;

/// What a Postgres source does with unchanged TOASTed values (`toast` in the config).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToastMode {
    /// Fill them in from the batch or the table (see the module's text).
    #[default]
    Fetch,
    /// Leave Debezium's placeholder, reading nothing.
    Placeholder,
}

/// An update's column left open, by event index.
struct Open {
    event: usize,
    column: usize,
}

/// What is known about one key of one table, walking the batch forward.
#[derive(Default)]
struct KeyState {
    /// For each column: the event that carried its value last.
    carried: HashMap<usize, usize>,
    /// Updates whose value for a column is still unknown; unchanged up to the batch's end as
    /// long as they stay here.
    open: Vec<Open>,
    /// The transaction of the batch's last event for the key, and whether it deleted the row.
    last_xid: Option<u64>,
    deleted: bool,
}

/// Fills what it can of the batch's unchanged TOASTed values; returns how many stay
/// placeholders.
pub(super) async fn fill(
    client: &Client,
    relations: &HashMap<u32, Relation>,
    events: &mut [ChangeEvent],
) -> Result<u64, PostgresError> {
    // Most batches have none: one pass over updates' values to find out.
    let tables: Vec<Arc<TableSchema>> = {
        let mut tables: Vec<Arc<TableSchema>> = Vec::new();
        for event in events.iter() {
            if event.op == Op::Update && has_unavailable(event) {
                let table = event.table.as_ref().expect("row events name their table");
                if !tables.iter().any(|t| Arc::ptr_eq(t, table)) {
                    tables.push(Arc::clone(table));
                }
            }
        }
        tables
    };
    let mut unresolved = 0;
    for table in tables {
        let Some(relation) = relations.values().find(|r| Arc::ptr_eq(&r.schema, &table)) else {
            // Its relation changed within the batch; the types to read it with are gone.
            unresolved += count_unavailable(events, &table);
            continue;
        };
        let (keys, lost) = walk(events, &table);
        unresolved += lost + read_open(client, relation, events, keys).await?;
    }
    Ok(unresolved)
}

fn has_unavailable(event: &ChangeEvent) -> bool {
    event
        .after
        .as_ref()
        .is_some_and(|row| row.iter().any(|v| matches!(v, Value::Unavailable)))
}

fn count_unavailable(events: &[ChangeEvent], table: &Arc<TableSchema>) -> u64 {
    events
        .iter()
        .filter(|e| e.table.as_ref().is_some_and(|t| Arc::ptr_eq(t, table)))
        .filter_map(|e| e.after.as_ref())
        .flatten()
        .filter(|v| matches!(v, Value::Unavailable))
        .count() as u64
}

/// Step 1: walks the batch forward for one table, filling values an earlier event carried;
/// returns each key's state at the batch's end, and how many values can no longer be known
/// (a later event of the batch changed or deleted them).
fn walk(
    events: &mut [ChangeEvent],
    table: &Arc<TableSchema>,
) -> (HashMap<Vec<String>, KeyState>, u64) {
    let mut keys: HashMap<Vec<String>, KeyState> = HashMap::new();
    let mut lost = 0u64;
    for i in 0..events.len() {
        let event = &events[i];
        if !event.table.as_ref().is_some_and(|t| Arc::ptr_eq(t, table)) {
            continue;
        }
        let row = match event.op {
            Op::Delete => event.before.as_deref(),
            _ => event.after.as_deref(),
        };
        let Some(key) = row.and_then(|row| key_text(table, row)) else {
            continue;
        };
        let state = keys.entry(key).or_default();
        state.last_xid = event.xid;
        state.deleted = event.op == Op::Delete;
        if event.op == Op::Delete {
            state.carried.clear();
            lost += state.open.len() as u64;
            state.open.clear();
            continue;
        }
        let Some(after) = &event.after else { continue };
        let mut fills = Vec::new();
        for (column, value) in after.iter().enumerate() {
            if matches!(value, Value::Unavailable) {
                match state.carried.get(&column) {
                    Some(&from) => fills.push((column, from)),
                    None => state.open.push(Open { event: i, column }),
                }
            } else {
                // A new value: what is open for this column was the value before it, which
                // nothing here knows.
                let before = state.open.len();
                state.open.retain(|open| open.column != column);
                lost += (before - state.open.len()) as u64;
                state.carried.insert(column, i);
            }
        }
        for (column, from) in fills {
            let value = events[from].after.as_ref().expect("carried")[column].clone();
            events[i].after.as_mut().expect("an update")[column] = value;
        }
    }
    keys.retain(|_, state| !state.open.is_empty());
    (keys, lost)
}

/// Step 2: reads the open keys' rows and fills the values the row still holds exactly;
/// returns how many stay placeholders.
async fn read_open(
    client: &Client,
    relation: &Relation,
    events: &mut [ChangeEvent],
    keys: HashMap<Vec<String>, KeyState>,
) -> Result<u64, PostgresError> {
    if keys.is_empty() {
        return Ok(0);
    }
    let table = &relation.schema;
    let mut unresolved = 0u64;
    // Only keys whose row can still be the batch's: not deleted at its end.
    let mut asked: Vec<(Vec<String>, KeyState)> = Vec::new();
    for (key, state) in keys {
        if state.deleted {
            unresolved += state.open.len() as u64;
        } else {
            asked.push((key, state));
        }
    }
    let mut columns: Vec<usize> = asked
        .iter()
        .flat_map(|(_, s)| s.open.iter().map(|o| o.column))
        .collect();
    columns.sort_unstable();
    columns.dedup();
    let key_names: Vec<&str> = table.key_columns().map(|(_, c)| c.name.as_str()).collect();
    let probes: Vec<String> = asked
        .iter()
        .map(|(key, _)| {
            let object: serde_json::Map<String, serde_json::Value> = key_names
                .iter()
                .zip(key)
                .map(|(name, text)| ((*name).to_owned(), serde_json::Value::from(text.as_str())))
                .collect();
            serde_json::Value::Object(object).to_string()
        })
        .collect();
    let qualified = format!(
        "{}.{}",
        quote_ident(&table.table.namespace),
        quote_ident(&table.table.name)
    );
    let selected: Vec<String> = columns
        .iter()
        .map(|&c| format!("t.{}::text", quote_ident(&table.columns[c].name)))
        .collect();
    let joined: Vec<String> = key_names
        .iter()
        .map(|name| format!("t.{0} = k.{0}", quote_ident(name)))
        .collect();
    // The probes' text becomes the key columns' types through the table's own row type, so
    // that the join uses the key's index whatever the types are.
    let sql = format!(
        "SELECT u.ord, t.xmin::text, {} \
         FROM unnest($1::text[]) WITH ORDINALITY AS u(j, ord) \
         CROSS JOIN LATERAL json_populate_record(NULL::{qualified}, u.j::json) AS k \
         JOIN {qualified} AS t ON {}",
        selected.join(", "),
        joined.join(" AND ")
    );
    let rows = client
        .query(&sql, &[&probes])
        .await
        .map_err(|err| match err.as_db_error() {
            Some(_) => PostgresError::Setup {
                problem: format!(
                    "reading unchanged TOASTed values of {} failed: {}",
                    table.table,
                    crate::postgres::ErrorText(&err)
                ),
                fix: "grant the source's user SELECT on the table, or set toast = \"placeholder\" \
                      in the source config to emit Debezium's placeholder instead"
                    .into(),
            },
            None => PostgresError::Query(err),
        })?;
    let mut found: Vec<Option<&tokio_postgres::Row>> = vec![None; asked.len()];
    for row in &rows {
        let ord: i64 = row.get(0);
        if let Some(slot) = usize::try_from(ord - 1).ok().and_then(|i| found.get_mut(i)) {
            *slot = Some(row);
        }
    }
    for ((_, state), row) in asked.iter().zip(found) {
        let exact = row.filter(|row| {
            let xmin: Option<&str> = row.get(1);
            xmin.and_then(|x| x.parse::<u64>().ok()) == state.last_xid
        });
        let Some(row) = exact else {
            unresolved += state.open.len() as u64;
            continue;
        };
        for open in &state.open {
            let at = columns
                .iter()
                .position(|&c| c == open.column)
                .expect("asked for");
            let text: Option<&str> = row.get(2 + at);
            let value = match text {
                Some(text) => parse(relation, open.column, text.as_bytes())?,
                None => Value::Null,
            };
            events[open.event].after.as_mut().expect("an update")[open.column] = value;
        }
    }
    Ok(unresolved)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_core::event::{Column, DataType, SnapshotMarker, TableId};
    use sluice_core::position::{Lsn, Position};

    fn table() -> Arc<TableSchema> {
        let column = |name: &str, key: bool, data_type: DataType| Column {
            name: name.into(),
            type_name: String::new(),
            data_type,
            key,
            nullable: !key,
        };
        Arc::new(TableSchema {
            table: TableId {
                namespace: "public".into(),
                name: "t".into(),
            },
            columns: vec![
                column("id", true, DataType::Int32),
                column("big", false, DataType::Text),
            ],
            version: 1,
        })
    }

    fn event(table: &Arc<TableSchema>, op: Op, xid: u64, id: i32, big: Value) -> ChangeEvent {
        let row = vec![Value::Int32(id), big];
        ChangeEvent {
            op,
            table: Some(Arc::clone(table)),
            before: (op == Op::Delete).then(|| row.clone()),
            before_is_key_only: true,
            after: (op != Op::Delete).then_some(row),
            snapshot: SnapshotMarker::No,
            commit_ts_us: 0,
            position: Position::PgLsn(Lsn(0)),
            xid: Some(xid),
            txn: None,
            message: None,
        }
    }

    #[test]
    fn the_batch_fills_what_it_carried_and_counts_what_a_later_change_hid() {
        let t = table();
        let text = |s: &str| Value::Text(s.into());
        let mut events = vec![
            event(&t, Op::Create, 10, 1, text("A")),
            event(&t, Op::Update, 11, 1, Value::Unavailable), // A, from the insert
            event(&t, Op::Update, 12, 2, Value::Unavailable), // hidden by the next change
            event(&t, Op::Update, 13, 2, text("B")),
            event(&t, Op::Update, 14, 3, Value::Unavailable), // hidden by the delete
            event(&t, Op::Delete, 15, 3, Value::Null),
            event(&t, Op::Update, 16, 4, Value::Unavailable), // open: read back
            event(&t, Op::Update, 17, 4, Value::Unavailable), // open: read back
        ];
        let (open, lost) = walk(&mut events, &t);
        assert_eq!(events[1].after.as_ref().unwrap()[1], text("A"));
        assert_eq!(events[2].after.as_ref().unwrap()[1], Value::Unavailable);
        assert_eq!(lost, 2);
        assert_eq!(open.len(), 1);
        let state = &open[&vec!["4".to_owned()]];
        assert_eq!(state.last_xid, Some(17));
        assert_eq!(
            state.open.iter().map(|o| o.event).collect::<Vec<_>>(),
            vec![6, 7]
        );
    }
}
