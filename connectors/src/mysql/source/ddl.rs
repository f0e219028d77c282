//! DDL in the binlog. Table DDL (CREATE, ALTER, DROP, RENAME TABLE) is parsed
//! (`ddl/parse.rs`) and applied to the definitions of the captured tables it touches, which
//! gives each a new schema version and a schema-history record (`history.rs`): the stream
//! then reads later rows with the new columns even when it is behind the catalog. A TRUNCATE
//! of a captured table is a truncate event. A statement that names a captured table but cannot
//! be understood stops the source, quoting it; elsewhere it is skipped with a warning.

use std::collections::HashMap;
use std::sync::Arc;

use mysql_async::Pool;
use sluice_core::event::{ChangeEvent, Op, SnapshotMarker, TableId};
use sluice_core::position::Position;

use super::catalog::{self, TableInfo};
use super::config::MysqlSourceConfig;
use super::history::{HistoryRecord, TableDef, TableEntry};
use super::SourceError;

mod lex;
pub(super) mod parse;

use self::parse::{AlterSpec, CreateBody, Ddl, Name};

type Tables = HashMap<(String, String), TableInfo>;

fn quoted_words(statement: &str) -> Vec<String> {
    statement
        .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '$' || c == '`' || c == '.'))
        .filter(|w| !w.is_empty())
        .flat_map(|w| {
            w.split('.')
                .map(|p| p.trim_matches('`').to_owned())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Captured tables a statement names, by a scan of its words (for statements the parser does
/// not take apart).
fn named_tables(tables: &Tables, schema: &str, statement: &str) -> Vec<(String, String)> {
    let words = quoted_words(statement);
    let mut named: Vec<(String, String)> = tables
        .keys()
        .filter(|(db, table)| {
            words.iter().any(|w| w == table) && (db == schema || words.iter().any(|w| w == db))
        })
        .cloned()
        .collect();
    named.sort();
    named
}

/// What a DDL statement did to the captured tables.
#[derive(Default)]
pub(super) struct DdlOutcome {
    /// Truncate events.
    pub events: Vec<ChangeEvent>,
    /// The changed definitions, for the schema history.
    pub history: Option<HistoryRecord>,
    /// Tables that joined the captured set with rows already in them (renamed into it), for
    /// an on-demand snapshot to read.
    pub backfill: Vec<TableId>,
}

/// Applies a DDL statement from the binlog to the captured tables.
pub(super) async fn ddl(
    config: &MysqlSourceConfig,
    pool: &Pool,
    tables: &mut Tables,
    schema: &str,
    statement: &str,
    ts_us: i64,
    position: Position,
) -> Result<DdlOutcome, SourceError> {
    let parsed = match parse::parse(statement) {
        Ok(Some(ddl)) => ddl,
        Ok(None) => {
            // Not table DDL: GRANT, CREATE INDEX, CREATE VIEW, … These leave columns alone;
            // an unknown statement that names a captured table may not.
            let first = statement
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_ascii_uppercase();
            let harmless = [
                "CREATE",
                "ALTER",
                "DROP",
                "GRANT",
                "REVOKE",
                "FLUSH",
                "ANALYZE",
                "OPTIMIZE",
                "SET",
                "XA",
                "SAVEPOINT",
                "ROLLBACK",
                "RENAME",
                "REPAIR",
                "CHECK",
            ];
            let named = named_tables(tables, schema, statement);
            if let Some((db, table)) = named
                .first()
                .filter(|_| !harmless.contains(&first.as_str()))
            {
                return Err(SourceError::UnknownDdl {
                    table: format!("{db}.{table}"),
                    statement: statement.to_owned(),
                    problem: format!("sluice does not know what {first} does to a table"),
                });
            }
            return Ok(DdlOutcome::default());
        }
        Err(err) => {
            let named = named_tables(tables, schema, statement);
            if let Some((db, table)) = named.first() {
                return Err(SourceError::UnknownDdl {
                    table: format!("{db}.{table}"),
                    statement: statement.to_owned(),
                    problem: err.0,
                });
            }
            tracing::warn!(%statement, problem = %err, "skipping a DDL statement sluice cannot read; it names no captured table");
            return Ok(DdlOutcome::default());
        }
    };
    let mut apply = Apply {
        config,
        pool,
        tables,
        schema,
        statement,
        entries: Vec::new(),
        joined: Vec::new(),
    };
    let mut outcome = DdlOutcome::default();
    match parsed {
        Ddl::Truncate { table } => {
            if let Some(info) = apply.tables.get(&apply.key(&table)) {
                outcome.events.push(ChangeEvent {
                    op: Op::Truncate,
                    table: Some(Arc::clone(&info.schema)),
                    before: None,
                    before_is_key_only: false,
                    after: None,
                    snapshot: SnapshotMarker::No,
                    commit_ts_us: ts_us,
                    position: position.clone(),
                    xid: None,
                    txn: None,
                    message: None,
                });
            }
        }
        Ddl::Drop { tables: names } => {
            for name in names {
                let key = apply.key(&name);
                apply.remove(&key);
            }
        }
        Ddl::Rename { pairs } => {
            for (from, to) in pairs {
                let (from, to) = (apply.key(&from), apply.key(&to));
                apply.rename(&from, &to).await?;
            }
        }
        Ddl::Create {
            table,
            body,
            or_replace,
        } => apply.create(apply.key(&table), body, or_replace).await?,
        Ddl::Alter { table, specs } => apply.alter(apply.key(&table), &specs).await?,
    }
    if !apply.entries.is_empty() {
        outcome.history = Some(HistoryRecord {
            position: position.to_string(),
            statement: Some(statement.to_owned()),
            tables: apply.entries,
            patterns: None,
        });
    }
    outcome.backfill = apply.joined;
    Ok(outcome)
}

/// Applies one parsed statement, collecting history entries.
struct Apply<'a> {
    config: &'a MysqlSourceConfig,
    pool: &'a Pool,
    tables: &'a mut Tables,
    schema: &'a str,
    statement: &'a str,
    entries: Vec<TableEntry>,
    /// Tables renamed into the captured set.
    joined: Vec<TableId>,
}

impl Apply<'_> {
    fn key(&self, name: &Name) -> (String, String) {
        (
            name.database
                .clone()
                .unwrap_or_else(|| self.schema.to_owned()),
            name.table.clone(),
        )
    }

    fn captured(&self, key: &(String, String)) -> bool {
        catalog::table_matches(&self.config.tables, &key.0, &key.1)
    }

    fn remove(&mut self, key: &(String, String)) {
        if let Some(info) = self.tables.remove(key) {
            tracing::info!(table = %format!("{}.{}", key.0, key.1), "captured table dropped");
            self.entries.push(TableEntry::dropped(&info));
        }
    }

    /// Sets a captured table's definition (a new version when it had one).
    fn set(&mut self, key: (String, String), def: TableDef) {
        let version = match self.tables.get(&key) {
            Some(previous) if previous.def == def => return,
            Some(previous) => previous.schema.version + 1,
            None => 1,
        };
        tracing::info!(table = %format!("{}.{}", key.0, key.1), version, "table schema changed");
        let info = TableInfo::from_def(&key.0, &key.1, version, def);
        self.entries.push(TableEntry::defined(&info));
        self.tables.insert(key, info);
    }

    /// A table's definition as the catalog has it now: for tables sluice has no definition
    /// of, and CREATE TABLE … SELECT.
    async fn catalog_def(&self, key: &(String, String)) -> Result<Option<TableDef>, SourceError> {
        let mut conn = self
            .pool
            .get_conn()
            .await
            .map_err(SourceError::mysql("connecting"))?;
        if !catalog::table_exists(&mut conn, &key.0, &key.1).await? {
            return Ok(None);
        }
        Ok(Some(
            catalog::table_info(&mut conn, &key.0, &key.1).await?.def,
        ))
    }

    async fn rename(
        &mut self,
        from: &(String, String),
        to: &(String, String),
    ) -> Result<(), SourceError> {
        let def = match self.tables.get(from) {
            Some(info) => Some(info.def.clone()),
            None if self.captured(to) => {
                tracing::info!(table = %format!("{}.{}", to.0, to.1), "a table renamed into the captured set: its columns are read from the catalog, its rows by an on-demand snapshot");
                self.joined.push(TableId {
                    namespace: to.0.clone(),
                    name: to.1.clone(),
                });
                self.catalog_def(to).await?
            }
            None => None,
        };
        self.remove(from);
        if let Some(def) = def.filter(|_| self.captured(to)) {
            self.tables.remove(to);
            self.set(to.clone(), def);
        }
        Ok(())
    }

    async fn create(
        &mut self,
        key: (String, String),
        body: CreateBody,
        or_replace: bool,
    ) -> Result<(), SourceError> {
        if !self.captured(&key) || (self.tables.contains_key(&key) && !or_replace) {
            // Not captured, or CREATE TABLE IF NOT EXISTS of a table that exists: no change.
            return Ok(());
        }
        let def = match body {
            CreateBody::Columns {
                columns,
                primary_key,
                charset,
            } => {
                let default_charset = if charset.is_none() {
                    let mut conn = self
                        .pool
                        .get_conn()
                        .await
                        .map_err(SourceError::mysql("connecting"))?;
                    catalog::database_charset(&mut conn, &key.0).await?
                } else {
                    None
                };
                Some(TableDef::from_create(
                    &columns,
                    &primary_key,
                    charset.as_deref(),
                    default_charset.as_deref(),
                ))
            }
            CreateBody::Like(source) => {
                let source = self.key(&source);
                match self.tables.get(&source) {
                    Some(info) => Some(info.def.clone()),
                    None => self.catalog_def(&key).await?,
                }
            }
            CreateBody::Query => {
                tracing::warn!(table = %format!("{}.{}", key.0, key.1), "CREATE TABLE … SELECT: its columns are read from the catalog");
                self.catalog_def(&key).await?
            }
        };
        if let Some(def) = def {
            self.set(key, def);
        }
        Ok(())
    }

    async fn alter(
        &mut self,
        key: (String, String),
        specs: &[AlterSpec],
    ) -> Result<(), SourceError> {
        let Some(info) = self.tables.get(&key) else {
            let renamed = specs.iter().rev().find_map(|spec| match spec {
                AlterSpec::RenameTable(name) => Some(self.key(name)),
                _ => None,
            });
            if let Some(to) = renamed.filter(|to| !self.captured(&key) && self.captured(to)) {
                // ALTER TABLE … RENAME TO: a table renamed into the captured set.
                return self.rename(&key, &to).await;
            }
            if self.captured(&key) {
                // A captured table sluice has no definition of yet (created before its history
                // began): the catalog's is the best there is.
                if let Some(def) = self.catalog_def(&key).await? {
                    self.set(key, def);
                }
            }
            return Ok(());
        };
        let def = info
            .def
            .alter(specs)
            .map_err(|problem| SourceError::UnknownDdl {
                table: format!("{}.{}", key.0, key.1),
                statement: self.statement.to_owned(),
                problem: problem.0,
            })?;
        let renamed = specs.iter().rev().find_map(|spec| match spec {
            AlterSpec::RenameTable(name) => Some(self.key(name)),
            _ => None,
        });
        match renamed {
            Some(to) if to != key => {
                self.remove(&key);
                if self.captured(&to) {
                    self.tables.remove(&to);
                    self.set(to, def);
                }
            }
            _ => self.set(key, def),
        }
        Ok(())
    }
}
