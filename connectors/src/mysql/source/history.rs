//! The schema history: every captured table's definition as of each DDL statement, kept in the
//! log (topic `_sluice_history.<source>`, one JSON record per change).
//!
//! The catalog only tells how a table looks now. A stream that resumes behind the catalog
//! (sluice was down while a table was altered) must read the binlog's rows with the columns
//! they were written with; without binlog_row_metadata = FULL the rows do not say. So the
//! source records each table's definition when it starts from a snapshot (or has no history
//! yet), and again after each DDL it parses (`ddl/parse.rs`). The runtime appends the records
//! in the same log transaction as the batch they belong to, and hands back exactly the
//! committed ones before each start; folding them gives the tables as of the checkpoint.

use std::collections::HashMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::catalog::TableInfo;
use super::ddl::parse::{AlterSpec, ColumnDef, Place};

/// A column in the terms of information_schema.COLUMNS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct ColumnRow {
    pub name: String,
    /// Base type, lower case: `int`, `varchar`, …
    pub data_type: String,
    /// Whole type: `int unsigned`, `varchar(20)`, `enum('a','b')`.
    pub column_type: String,
    pub nullable: bool,
    /// Part of the primary key.
    pub key: bool,
    /// The charset of a text column (resolved: a column added without one gets the table's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub charset: Option<String>,
}

/// A table's definition: what decides how its rows decode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct TableDef {
    pub columns: Vec<ColumnRow>,
    /// The table's default charset, for columns added later without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub charset: Option<String>,
}

/// One table in a history record: its definition and schema version, or that it is gone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct TableEntry {
    pub database: String,
    pub table: String,
    pub version: u32,
    /// `None`: the table was dropped (or renamed away).
    pub def: Option<TableDef>,
}

impl TableEntry {
    /// The table as `info` defines it.
    pub(super) fn defined(info: &TableInfo) -> TableEntry {
        TableEntry {
            def: Some(info.def.clone()),
            ..TableEntry::dropped(info)
        }
    }

    /// The table gone.
    pub(super) fn dropped(info: &TableInfo) -> TableEntry {
        TableEntry {
            database: info.schema.table.namespace.clone(),
            table: info.schema.table.name.clone(),
            version: info.schema.version,
            def: None,
        }
    }
}

/// One record of the history topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct HistoryRecord {
    /// Where in the binlog the change applies (for operators; folding relies on the log's order).
    pub position: String,
    /// The DDL statement, or `None` for the definitions recorded at a snapshot or first start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statement: Option<String>,
    pub tables: Vec<TableEntry>,
    /// The source's `tables` patterns, recorded when they are new (the first start, a
    /// snapshot, a config that changed them): the next start tells from them which tables
    /// joined the captured set, and reads those tables' rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patterns: Option<Vec<String>>,
}

impl HistoryRecord {
    pub(super) fn to_bytes(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(self).expect("a history record serializes"))
    }
}

/// A record of the schema history topic that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("record {record} of the schema history is unreadable: {source}")]
pub struct UnreadableHistory {
    record: usize,
    #[source]
    source: serde_json::Error,
}

sluice_core::reason_error!(
    /// Why an ALTER TABLE cannot be applied to the table definition sluice keeps.
    pub(super) AlterError
);

/// Table definitions and their schema versions, by (database, table).
pub(super) type Definitions = HashMap<(String, String), (u32, TableDef)>;

/// The history folded: the tables as of its last record, and the patterns last recorded
/// (None in a history an older sluice wrote).
#[derive(Debug, Clone, Default)]
pub(super) struct History {
    pub tables: Definitions,
    pub patterns: Option<Vec<String>>,
}

/// Each table's last definition and version in `records` (oldest first), dropped tables left
/// out, and the last patterns.
pub(super) fn fold(records: &[Bytes]) -> Result<History, UnreadableHistory> {
    let mut tables = HashMap::new();
    let mut patterns = None;
    for (i, bytes) in records.iter().enumerate() {
        let record: HistoryRecord = serde_json::from_slice(bytes)
            .map_err(|source| UnreadableHistory { record: i, source })?;
        if record.patterns.is_some() {
            patterns = record.patterns;
        }
        for entry in record.tables {
            let key = (entry.database, entry.table);
            match entry.def {
                Some(def) => {
                    tables.insert(key, (entry.version, def));
                }
                None => {
                    tables.remove(&key);
                }
            }
        }
    }
    Ok(History { tables, patterns })
}

fn is_text(data_type: &str) -> bool {
    matches!(
        data_type,
        "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" | "enum" | "set"
    )
}

impl TableDef {
    /// A CREATE TABLE's definition; `default_charset` is the database's, for a table that
    /// names none.
    pub(super) fn from_create(
        columns: &[ColumnDef],
        primary_key: &[String],
        charset: Option<&str>,
        default_charset: Option<&str>,
    ) -> TableDef {
        let charset = charset.or(default_charset).map(str::to_owned);
        let mut def = TableDef {
            columns: Vec::new(),
            charset,
        };
        for column in columns {
            let row = def.row(column);
            def.columns.push(row);
        }
        for row in &mut def.columns {
            if primary_key
                .iter()
                .any(|k| k.eq_ignore_ascii_case(&row.name))
            {
                row.key = true;
                row.nullable = false;
            }
        }
        def
    }

    /// A parsed column as a row of this table (its charset resolved against the table's).
    fn row(&self, column: &ColumnDef) -> ColumnRow {
        let charset = if is_text(&column.data_type) {
            column.charset.clone().or_else(|| self.charset.clone())
        } else {
            None
        };
        ColumnRow {
            name: column.name.clone(),
            data_type: column.data_type.clone(),
            column_type: column.column_type.clone(),
            nullable: column.nullable,
            key: column.primary_key,
            charset,
        }
    }

    fn position_of(&self, name: &str) -> Result<usize, AlterError> {
        self.columns
            .iter()
            .position(|c| c.name.eq_ignore_ascii_case(name))
            .ok_or_else(|| {
                AlterError(format!(
                    "it names column {name}, which the table does not have"
                ))
            })
    }

    fn place(&mut self, row: ColumnRow, place: &Place, at: usize) -> Result<(), AlterError> {
        let index = match place {
            Place::Default => at,
            Place::First => 0,
            Place::After(after) => self.position_of(after)? + 1,
        };
        self.columns.insert(index.min(self.columns.len()), row);
        Ok(())
    }

    /// The definition after an ALTER TABLE's clauses (all but renaming the table itself).
    pub(super) fn alter(&self, specs: &[AlterSpec]) -> Result<TableDef, AlterError> {
        let mut def = self.clone();
        for spec in specs {
            match spec {
                AlterSpec::AddColumn(column, place) => {
                    if def.position_of(&column.name).is_ok() {
                        continue; // ADD COLUMN IF NOT EXISTS of an existing column
                    }
                    let row = def.row(column);
                    let end = def.columns.len();
                    def.place(row, place, end)?;
                }
                AlterSpec::DropColumn(name) => {
                    if let Ok(i) = def.position_of(name) {
                        def.columns.remove(i);
                    }
                }
                AlterSpec::ChangeColumn { old, column, place } => {
                    let i = def.position_of(old)?;
                    let previous = def.columns.remove(i);
                    let mut row = def.row(column);
                    // The key is kept: MODIFY does not take a column out of the primary key.
                    row.key = previous.key || column.primary_key;
                    if row.key {
                        row.nullable = false;
                    }
                    def.place(row, place, i)?;
                }
                AlterSpec::RenameColumn { from, to } => {
                    let i = def.position_of(from)?;
                    def.columns[i].name = to.clone();
                }
                AlterSpec::AddPrimaryKey(columns) => {
                    for name in columns {
                        let i = def.position_of(name)?;
                        def.columns[i].key = true;
                        def.columns[i].nullable = false;
                    }
                }
                AlterSpec::DropPrimaryKey => {
                    for column in &mut def.columns {
                        column.key = false;
                    }
                }
                AlterSpec::ConvertCharset(charset) => {
                    def.charset = Some(charset.clone());
                    for column in &mut def.columns {
                        if column.charset.as_deref() != Some("binary") && is_text(&column.data_type)
                        {
                            column.charset = Some(charset.clone());
                        }
                    }
                }
                AlterSpec::DefaultCharset(charset) => def.charset = Some(charset.clone()),
                AlterSpec::RenameTable(_) => {}
            }
        }
        Ok(def)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mysql::source::ddl::parse::{parse, CreateBody, Ddl};

    fn create(statement: &str) -> TableDef {
        let Some(Ddl::Create {
            body:
                CreateBody::Columns {
                    columns,
                    primary_key,
                    charset,
                },
            ..
        }) = parse(statement).unwrap()
        else {
            panic!("{statement}")
        };
        TableDef::from_create(&columns, &primary_key, charset.as_deref(), Some("utf8mb4"))
    }

    fn alter(def: &TableDef, statement: &str) -> Result<TableDef, AlterError> {
        let Some(Ddl::Alter { specs, .. }) = parse(statement).unwrap() else {
            panic!("{statement}")
        };
        def.alter(&specs)
    }

    fn names(def: &TableDef) -> Vec<&str> {
        def.columns.iter().map(|c| c.name.as_str()).collect()
    }

    #[test]
    fn alters_move_rename_retype_and_rekey_columns() {
        let def = create(
            "CREATE TABLE t (id int, a varchar(5), b int, PRIMARY KEY (id)) DEFAULT CHARSET latin1",
        );
        assert_eq!(def.charset.as_deref(), Some("latin1"));
        assert_eq!(def.columns[1].charset.as_deref(), Some("latin1"));
        assert!(def.columns[0].key && !def.columns[0].nullable);

        let def = alter(
            &def,
            "ALTER TABLE t ADD c text FIRST, ADD d int AFTER a, DROP b",
        )
        .unwrap();
        assert_eq!(names(&def), ["c", "id", "a", "d"]);
        assert_eq!(def.columns[0].charset.as_deref(), Some("latin1"));

        let def = alter(
            &def,
            "ALTER TABLE t CHANGE a a2 bigint NOT NULL AFTER d, MODIFY id bigint",
        )
        .unwrap();
        assert_eq!(names(&def), ["c", "id", "d", "a2"]);
        assert_eq!(def.columns[3].column_type, "bigint");
        assert_eq!(def.columns[3].charset, None);
        assert!(def.columns[1].key, "MODIFY keeps the key");

        let def = alter(
            &def,
            "ALTER TABLE t RENAME COLUMN d TO e, DROP PRIMARY KEY, ADD PRIMARY KEY (e, a2), \
             CONVERT TO CHARACTER SET utf8mb4",
        )
        .unwrap();
        assert_eq!(names(&def), ["c", "id", "e", "a2"]);
        let keys: Vec<bool> = def.columns.iter().map(|c| c.key).collect();
        assert_eq!(keys, [false, false, true, true]);
        assert_eq!(def.columns[0].charset.as_deref(), Some("utf8mb4"));

        let err = alter(&def, "ALTER TABLE t MODIFY nope int").unwrap_err();
        assert_eq!(err.0, "it names column nope, which the table does not have");
    }

    #[test]
    fn folding_keeps_the_last_definition_and_forgets_dropped_tables() {
        let def = create("CREATE TABLE t (id int PRIMARY KEY)");
        let entry = |table: &str, version, def: Option<TableDef>| TableEntry {
            database: "d".into(),
            table: table.into(),
            version,
            def,
        };
        let records = [
            HistoryRecord {
                position: "mariadb-gtid:0-1-1".into(),
                statement: None,
                patterns: Some(vec!["d.*".into()]),
                tables: vec![
                    entry("a", 1, Some(def.clone())),
                    entry("b", 1, Some(def.clone())),
                ],
            },
            HistoryRecord {
                position: "mariadb-gtid:0-1-2".into(),
                statement: Some("ALTER TABLE a ADD x int".into()),
                patterns: None,
                tables: vec![entry(
                    "a",
                    2,
                    Some(alter(&def, "ALTER TABLE a ADD x int").unwrap()),
                )],
            },
            HistoryRecord {
                position: "mariadb-gtid:0-1-3".into(),
                statement: Some("DROP TABLE b".into()),
                patterns: None,
                tables: vec![entry("b", 1, None)],
            },
        ];
        let bytes: Vec<Bytes> = records.iter().map(HistoryRecord::to_bytes).collect();
        let History {
            tables: folded,
            patterns,
        } = fold(&bytes).unwrap();
        assert_eq!(
            patterns,
            Some(vec!["d.*".to_owned()]),
            "the last patterns recorded"
        );
        assert_eq!(folded.len(), 1);
        let (version, a) = &folded[&("d".to_owned(), "a".to_owned())];
        assert_eq!(*version, 2);
        assert_eq!(names(a), ["id", "x"]);
        let err = fold(&[Bytes::from_static(b"{")]).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("record 0 of the schema history is unreadable"),
            "{err}"
        );
    }
}
