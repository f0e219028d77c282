//! One Iceberg table the sink writes: its metadata as last loaded or committed, the changes
//! waiting for the next commit, and (for current-state tables) the index of where each key's
//! live row is, which turns an update or delete into a position delete.
//!
//! Waiting changes are kept as the last state of each key (a key inserted and updated
//! twice before a commit is one row in the data file), because a position delete can only
//! remove rows of files committed before.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use sluice_core::change::Change;
use sluice_core::event::{Op, TableSchema};
use sluice_core::sink::Offsets;
use sluice_core::value::Value;

use super::catalog::TableMetadata;
use super::cells::{self, cell, Cell, RowKey};
use super::schema::{Schema, CHANGELOG_COLUMNS};

/// A map keyed by row keys, hashed fast (per-process random seeds).
pub type KeyMap<V> = HashMap<RowKey, V, foldhash::fast::RandomState>;

/// What a table keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// The source table's current rows (keyed; updates and deletes as position deletes).
    Current,
    /// Every change as a row, appended.
    Changelog,
}

/// Where a committed row lives: a data file (index into [`Index::files`]) and its position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub file: u32,
    pub pos: u32,
}

/// The live rows of a current-state table by key.
#[derive(Debug, Default)]
pub struct Index {
    pub files: Vec<Arc<str>>,
    pub rows: KeyMap<Location>,
}

impl Index {
    pub fn file_id(&mut self, path: &str) -> u32 {
        self.files.push(path.into());
        (self.files.len() - 1) as u32
    }
}

/// A row waiting for the next commit (its key is the one in [`Pending::keys`] that names its
/// slot).
#[derive(Debug)]
pub struct Row {
    pub cells: Vec<Cell>,
    /// The key of the committed row whose values fill this row's unavailable ones: its own
    /// key, or the old key of a key change.
    pub fill_from: Option<RowKey>,
}

/// A deleted key, and its row when that was waiting.
pub type Deleted = (RowKey, Option<Row>);

/// Changes waiting for the next commit.
#[derive(Debug, Default)]
pub struct Pending {
    /// Rows in arrival order; a slot is emptied when its key changes again.
    pub rows: Vec<Option<Row>>,
    /// Every key touched since the last commit: its row's slot, or None once deleted.
    pub keys: KeyMap<Option<usize>>,
    /// The table was truncated: the commit starts from no rows.
    pub truncated: bool,
    pub bytes: usize,
    /// The next offset of each partition whose records are in here.
    pub offsets: Offsets,
    /// When the oldest waiting change arrived.
    pub since: Option<Instant>,
    /// The last change when it was a delete: its key and the row it removed if that was
    /// waiting here. A key change arrives as a delete and a create, and the create lacks the
    /// old row's unchanged TOASTed values.
    pub last_delete: Option<Deleted>,
}

impl Pending {
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty() && self.keys.is_empty() && !self.truncated
    }
}

/// How the columns of a source table version map to the table's fields.
#[derive(Debug)]
pub struct Mapping {
    /// For each field of the table's schema: the source column it comes from (None: the
    /// table has a column the source no longer has, written as null).
    pub sources: Vec<Option<usize>>,
    /// Positions of the key fields in the schema, in key order.
    pub key_fields: Vec<usize>,
}

pub struct Table {
    pub namespace: String,
    pub name: String,
    /// `namespace.name`, for messages.
    pub shown: String,
    pub kind: Kind,
    pub meta: TableMetadata,
    /// Where its files are read and written (a directory or S3, from its location).
    pub files: Arc<crate::files::Files>,
    /// Built on the first change (current-state tables).
    pub index: Option<Index>,
    pub pending: Pending,
    /// The sink's offsets as the table's current snapshot stores them.
    pub committed: Offsets,
    /// Mappings per source table version seen (by columns).
    pub mappings: Vec<(Arc<TableSchema>, Arc<Mapping>)>,
    /// Files an interrupted commit of this sink left (found at open): removed once this
    /// sink's next commit to the table has landed, since from then on the interrupted one
    /// can no longer land (its parent is not the table's current snapshot any more).
    pub leftovers: Vec<String>,
    /// The commit running on its own task (its files, then the catalog).
    pub in_flight: Option<
        tokio::task::JoinHandle<Result<crate::iceberg::Committed, crate::iceberg::IcebergError>>,
    >,
    /// Where keys are built (reused).
    pub key_scratch: Vec<u8>,
}

impl Table {
    pub fn schema(&self) -> &Schema {
        &self.meta.schema
    }

    /// The mapping of `table`'s columns to this table's fields (the schema must fit: see
    /// `schema::evolve`).
    pub fn mapping(&mut self, table: &Arc<TableSchema>) -> Result<Arc<Mapping>, String> {
        if let Some((_, m)) = self
            .mappings
            .iter()
            .find(|(t, _)| Arc::ptr_eq(t, table) || t.columns == table.columns)
        {
            return Ok(Arc::clone(m));
        }
        let schema = &self.meta.schema;
        let sources = sources(schema, table);
        for (field, source) in schema.fields.iter().zip(&sources) {
            let is_extra = self.kind == Kind::Changelog
                && CHANGELOG_COLUMNS
                    .iter()
                    .any(|(name, _)| *name == field.name);
            if source.is_none() && field.required && !is_extra {
                return Err(format!(
                    "{} column {:?} is required, and the source table has no such column \
                     any more: make the column optional in the table, or write to a new table",
                    self.shown, field.name
                ));
            }
        }
        let key_fields = if self.kind == Kind::Current {
            let mut key_fields = Vec::new();
            for id in &schema.identifier_field_ids {
                let at = schema
                    .fields
                    .iter()
                    .position(|f| f.id == *id)
                    .ok_or_else(|| {
                        format!("{}: identifier field {id} is not a column", self.shown)
                    })?;
                key_fields.push(at);
            }
            let source_key: Vec<&str> = table.key_columns().map(|(_, c)| c.name.as_str()).collect();
            let table_key: Vec<&str> = key_fields
                .iter()
                .map(|i| schema.fields[*i].name.as_str())
                .collect();
            let mut sorted_source = source_key.clone();
            sorted_source.sort_unstable();
            let mut sorted_table = table_key.clone();
            sorted_table.sort_unstable();
            if sorted_source != sorted_table {
                return Err(format!(
                    "{} is keyed by {table_key:?} (its identifier fields) and the source table \
                     by {source_key:?}: set the table's identifier fields to the source's key, \
                     or write to a new table",
                    self.shown
                ));
            }
            key_fields
        } else {
            Vec::new()
        };
        let mapping = Arc::new(Mapping {
            sources,
            key_fields,
        });
        self.mappings
            .push((Arc::clone(table), Arc::clone(&mapping)));
        Ok(mapping)
    }

    fn cells(&self, mapping: &Mapping, values: &[Value]) -> Result<Vec<Cell>, String> {
        row_cells(&self.meta.schema, &mapping.sources, values)
    }

    fn key_of(&mut self, mapping: &Mapping, cells: &[Cell]) -> RowKey {
        RowKey::of(
            &mut self.key_scratch,
            mapping.key_fields.iter().map(|at| &cells[*at]),
        )
    }

    /// Adds a change of a current-state table; `Err` says why its row cannot be written (the
    /// change is then left out).
    pub fn apply(&mut self, change: &Change, mapping: &Mapping) -> Result<(), String> {
        match change.op {
            Op::Truncate => {
                self.pending.rows.clear();
                self.pending.keys.clear();
                self.pending.truncated = true;
                self.pending.bytes = 0;
                return Ok(());
            }
            Op::Message => return Ok(()),
            Op::Delete => {
                let before = change.before.as_deref().unwrap_or_default();
                let cells = self.cells(mapping, before)?;
                let key = self.key_of(mapping, &cells);
                self.pending.bytes += 2 * key.len() + 96;
                let removed = match self.pending.keys.insert(key.clone(), None) {
                    Some(Some(slot)) => self.pending.rows[slot].take(),
                    _ => None,
                };
                self.pending.last_delete = Some((key, removed));
                return Ok(());
            }
            Op::Create | Op::Update | Op::Read => {}
        }
        let last_delete = self.pending.last_delete.take();
        let after = change.after.as_deref().unwrap_or_default();
        let mut cells = self.cells(mapping, after)?;
        let key = self.key_of(mapping, &cells);
        // Where the values the change lacks come from, when not from the key's own committed
        // row (set when a waiting row gave them, or a key change names the old key).
        let mut fill_from_other = None;
        let own = cells.contains(&Cell::Unavailable).then(|| key.clone());
        let key_bytes = key.len();
        let slot = self.pending.rows.len();
        let previous = match self.pending.keys.entry(key) {
            Entry::Occupied(mut entry) => entry.get_mut().replace(slot),
            Entry::Vacant(entry) => {
                entry.insert(Some(slot));
                None
            }
        };
        if let Some(previous) = previous {
            if let Some(row) = self.pending.rows[previous].take() {
                fill_unavailable(&mut cells, &row.cells);
                fill_from_other = Some(row.fill_from);
            }
        } else if change.op == Op::Create && cells.contains(&Cell::Unavailable) {
            // The create of a key change: the unchanged values are the old key's row's.
            if let Some((old_key, removed)) = last_delete {
                match removed {
                    // The old row waited here: its values, and where its own missing values
                    // come from (it may lack them too).
                    Some(old) => {
                        fill_unavailable(&mut cells, &old.cells);
                        fill_from_other = Some(old.fill_from);
                    }
                    None => fill_from_other = Some(Some(old_key)),
                }
            }
        }
        let fill_from = if cells.contains(&Cell::Unavailable) {
            fill_from_other.unwrap_or(own)
        } else {
            None
        };
        // The row (with what filled it), its key and the map's entry.
        self.pending.bytes += cells.iter().map(cells::size).sum::<usize>() + key_bytes + 96;
        self.pending.rows.push(Some(Row { cells, fill_from }));
        Ok(())
    }

    /// Adds a change of a changelog table: the new row (the old one for deletes) after the
    /// change's op, place in the log and commit time.
    pub fn append_change(
        &mut self,
        change: &Change,
        mapping: &Mapping,
        partition: u32,
        offset: u64,
    ) -> Result<(), String> {
        let Some(cells) = change_row(
            &self.meta.schema,
            &mapping.sources,
            change,
            partition,
            offset,
        )?
        else {
            return Ok(());
        };
        self.pending.bytes += cells.iter().map(cells::size).sum::<usize>() + 64;
        self.pending.rows.push(Some(Row {
            cells,
            fill_from: None,
        }));
        Ok(())
    }
}

/// Which source column each field of `schema` comes from (None: the table has a column the
/// source does not, written as null).
pub fn sources(schema: &Schema, table: &TableSchema) -> Vec<Option<usize>> {
    schema
        .fields
        .iter()
        .map(|f| table.columns.iter().position(|c| c.name == f.name))
        .collect()
}

/// The row of `values` as cells of `schema`'s fields.
pub fn row_cells(
    schema: &Schema,
    sources: &[Option<usize>],
    values: &[Value],
) -> Result<Vec<Cell>, String> {
    // (Filled in a loop: collecting results would grow the vector as it goes.)
    let mut cells = Vec::with_capacity(schema.fields.len());
    for (field, source) in schema.fields.iter().zip(sources) {
        cells.push(match source {
            Some(i) => cell(&field.ty, values.get(*i).unwrap_or(&Value::Null))
                .map_err(|reason| format!("column {:?}: {reason}", field.name))?,
            None => Cell::Null,
        });
    }
    Ok(cells)
}

/// A change as a changelog row of `schema` ([`CHANGELOG_COLUMNS`] first): its op, place in
/// the log and commit time, and the new row (the old one for deletes; none for a truncate,
/// whose row says only that everything before it is gone). None for messages.
pub fn change_row(
    schema: &Schema,
    sources: &[Option<usize>],
    change: &Change,
    partition: u32,
    offset: u64,
) -> Result<Option<Vec<Cell>>, String> {
    let row = match change.op {
        Op::Message => return Ok(None),
        Op::Truncate => None,
        Op::Delete => change.before.as_deref(),
        _ => change.after.as_deref(),
    };
    let mut cells = match row {
        Some(row) => row_cells(schema, sources, row)?,
        None => vec![Cell::Null; schema.fields.len()],
    };
    for (at, field) in schema.fields.iter().enumerate() {
        cells[at] = match field.name.as_str() {
            "_sluice_op" => Cell::String(change.op.code().into()),
            "_sluice_partition" => Cell::Int(partition as i32),
            "_sluice_offset" => Cell::Long(offset as i64),
            "_sluice_ts" if change.commit_ts_us != 0 => Cell::Long(change.commit_ts_us),
            "_sluice_ts" => Cell::Null,
            _ => continue,
        };
    }
    Ok(Some(cells))
}

/// Values the source did not send (`Unavailable`) taken from the row's previous version.
pub fn fill_unavailable(cells: &mut [Cell], previous: &[Cell]) {
    for (cell, old) in cells.iter_mut().zip(previous) {
        if matches!(cell, Cell::Unavailable) {
            *cell = old.clone();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iceberg::schema::new_schema;
    use sluice_core::event::{Column, DataType, TableId};

    fn change(
        table: &Arc<TableSchema>,
        op: Op,
        before: Option<Vec<Value>>,
        after: Option<Vec<Value>>,
    ) -> Change {
        Change {
            table: Arc::clone(table),
            op,
            before,
            after,
            position: None,
            txn: None,
            total_order: None,
            commit_ts_us: 0,
        }
    }

    #[test]
    fn a_key_change_of_a_row_that_lacked_values_still_finds_them_in_the_table() {
        let source = Arc::new(TableSchema {
            table: TableId {
                namespace: "public".into(),
                name: "items".into(),
            },
            columns: vec![
                Column {
                    name: "id".into(),
                    type_name: "int4".into(),
                    data_type: DataType::Int32,
                    key: true,
                    nullable: false,
                },
                Column {
                    name: "doc".into(),
                    type_name: "text".into(),
                    data_type: DataType::Text,
                    key: false,
                    nullable: true,
                },
            ],
            version: 0,
        });
        let mut table = Table {
            namespace: "sluice".into(),
            name: "items".into(),
            shown: "sluice.items".into(),
            kind: Kind::Current,
            meta: TableMetadata {
                metadata_location: None,
                uuid: "u".into(),
                format_version: 2,
                location: "file:///tmp/x".into(),
                last_sequence_number: 0,
                schema: new_schema(&source, false),
                current: None,
                snapshots: Vec::new(),
                properties: Default::default(),
                config: Default::default(),
            },
            files: Arc::new(crate::files::Files::new(
                &Default::default(),
                &Default::default(),
            )),
            index: None,
            pending: Pending::default(),
            committed: Offsets::new(),
            mappings: Vec::new(),
            leftovers: Vec::new(),
            in_flight: None,
            key_scratch: Vec::new(),
        };
        let mapping = table.mapping(&source).unwrap();
        let key = |id: i32| RowKey::of(&mut Vec::new(), [&Cell::Int(id)]);
        // An update that left doc alone, then the key change (a delete and a create that
        // lacks doc too): doc must come from key 1's committed row.
        table
            .apply(
                &change(
                    &source,
                    Op::Update,
                    None,
                    Some(vec![Value::Int32(1), Value::Unavailable]),
                ),
                &mapping,
            )
            .unwrap();
        table
            .apply(
                &change(
                    &source,
                    Op::Delete,
                    Some(vec![Value::Int32(1), Value::Null]),
                    None,
                ),
                &mapping,
            )
            .unwrap();
        table
            .apply(
                &change(
                    &source,
                    Op::Create,
                    None,
                    Some(vec![Value::Int32(1001), Value::Unavailable]),
                ),
                &mapping,
            )
            .unwrap();
        let live: Vec<&Row> = table.pending.rows.iter().flatten().collect();
        assert_eq!(live.len(), 1);
        assert_eq!(table.pending.keys.get(&key(1001)), Some(&Some(1)));
        assert_eq!(live[0].fill_from, Some(key(1)));
        assert_eq!(table.pending.keys.get(&key(1)), Some(&None));
    }
}
