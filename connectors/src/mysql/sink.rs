//! The MySQL/MariaDB sink: keeps target tables equal to their source tables.
//!
//! - `config.rs`: the `[[sinks]] kind = "mysql"` section.
//! - `target.rs`: target column types, creating tables and following schema changes.
//! - `encode.rs`: values as SQL literals.
//! - here: the [`Target`] for `replica::ReplicaSink` (which decodes, plans and pipelines):
//!   each batch in one transaction: per table, deletes as `DELETE … WHERE (key) IN (…)` and
//!   upserts as multi-row `INSERT … ON DUPLICATE KEY UPDATE`, then the sink's offsets in the
//!   same transaction, so after a crash it resumes from what the target holds. DDL runs
//!   before the transaction (MySQL commits implicitly around DDL); a truncate is applied as
//!   `DELETE FROM` so that it stays inside the transaction.

mod config;
mod encode;
mod target;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Pool};
use sluice_core::event::TableSchema;
use sluice_core::pipeline::TypedSink;
use sluice_core::retry::{mysql_errno_class, Classify, ErrorKind, ServerErrorClass};
use sluice_core::sink::{DeadLetter, DeadLetterWriter, Offsets};
use sluice_core::value::Value;
use sluice_schema_registry::changes::RecordDecoder;
use sluice_schema_registry::registry::Registry;

pub use self::config::MysqlSinkConfig;
use self::encode::{ident, write_literal};
use self::target::Existing;
use crate::replica::{
    self, Prepared, ReplicaError, ReplicaSettings, ReplicaSink, Row, Statements, TableWork, Target,
};

/// Largest statement the sink builds (the server's max_allowed_packet is 16 MiB by default).
const MAX_STATEMENT: usize = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("cannot reach the target database: {0}")]
    Connect(String),
    #[error("the sink's url cannot be used: {0}")]
    Url(crate::UrlError),
    #[error("TLS to the target database failed: {0}")]
    Tls(String),
    #[error("{context}: {message}")]
    Db {
        context: String,
        message: String,
        /// The server's error number, when it answered.
        code: Option<u16>,
    },
    #[error("{0}")]
    Schema(String),
    #[error(
        "the target rejected an event: {0}; set dead_letter_topic on the sink to divert such \
         events and go on"
    )]
    Poison(String),
    #[error("writing to the dead-letter topic failed: {0}")]
    DeadLetter(#[source] sluice_core::sink::DeadLetterError),
}

// Not `#[from]`: that would make the error its own cause, printed twice by `{:#}`.
impl From<crate::UrlError> for SinkError {
    fn from(err: crate::UrlError) -> Self {
        SinkError::Url(err)
    }
}

impl SinkError {
    fn db(context: impl Into<String>, err: mysql_async::Error) -> SinkError {
        match err {
            mysql_async::Error::Server(server) => SinkError::Db {
                context: context.into(),
                message: format!(
                    "{} (error {}, SQLSTATE {})",
                    server.message, server.code, server.state
                ),
                code: Some(server.code),
            },
            other => SinkError::Connect(format!("{}: {other}", context.into())),
        }
    }

    /// The target refused the data itself (bad value, constraint).
    fn is_data_error(&self) -> bool {
        matches!(self, SinkError::Db { code: Some(code), .. } if mysql_errno_class(*code) == ServerErrorClass::Data)
    }
}

impl Classify for SinkError {
    fn kind(&self) -> ErrorKind {
        match self {
            SinkError::Connect(_) => ErrorKind::Transient,
            SinkError::Url(_) | SinkError::Tls(_) => ErrorKind::Definite,
            SinkError::DeadLetter(err) => err.kind(),
            SinkError::Db { code: None, .. } => ErrorKind::Transient,
            // A target table or column dropped under the sink is recreated on reopen.
            SinkError::Db {
                code: Some(code), ..
            } => match mysql_errno_class(*code) {
                ServerErrorClass::Transient | ServerErrorClass::MissingObject => {
                    ErrorKind::Transient
                }
                _ => ErrorKind::Definite,
            },
            SinkError::Schema(_) | SinkError::Poison(_) => ErrorKind::Definite,
        }
    }
}

impl From<ReplicaError> for SinkError {
    fn from(err: ReplicaError) -> SinkError {
        SinkError::Schema(err.0)
    }
}

/// Applies batches to a MySQL/MariaDB database.
pub struct MysqlTarget {
    config: MysqlSinkConfig,
    pool: Option<Pool>,
    dead_letters: Option<DeadLetterWriter>,
    ensured: HashMap<(String, String), Arc<TableSchema>>,
    /// The connection whose transaction holds the parts of a source transaction applied so
    /// far (`Prepared::commit` false).
    open: Option<Conn>,
    sql: String,
    scratch: String,
}

/// The MySQL/MariaDB sink.
pub type MysqlSink = TypedSink<ReplicaSink<MysqlTarget>, RecordDecoder>;

/// A MySQL sink for `config`; `dead_letters` is required when it names a dead-letter topic.
pub fn mysql_sink(
    config: MysqlSinkConfig,
    registry: Arc<Registry>,
    dead_letters: Option<DeadLetterWriter>,
) -> MysqlSink {
    let settings = ReplicaSettings {
        dead_letters: dead_letters.is_some(),
        batch_history: config.batch_history,
        whole_commits: config.transactional,
        max_pending_bytes: config.max_pending_bytes,
    };
    let target = MysqlTarget {
        config,
        pool: None,
        dead_letters,
        ensured: HashMap::new(),
        open: None,
        sql: String::new(),
        scratch: String::new(),
    };
    replica::typed_sink(target, settings, registry)
}

impl MysqlTarget {
    async fn conn(&mut self) -> Result<Conn, SinkError> {
        if self.pool.is_none() {
            let opts = self.config.opts()?.settled().await?;
            self.pool = Some(Pool::new(opts));
        }
        let pool = self.pool.as_ref().expect("just set");
        // Access denied will not pass by waiting; anything else may.
        pool.get_conn().await.map_err(|err| match err {
            mysql_async::Error::Server(server)
                if mysql_errno_class(server.code) == ServerErrorClass::Access =>
            {
                SinkError::db(
                    "connecting to the target database",
                    mysql_async::Error::Server(server),
                )
            }
            other => match super::tls::failure(
                &other,
                &self.config.opts().map(|url| url.tls).unwrap_or_default(),
            ) {
                Some(reason) => SinkError::Tls(reason),
                None => SinkError::Connect(other.to_string()),
            },
        })
    }

    /// The database target tables go to.
    fn database(&self, table: &TableSchema) -> String {
        self.config
            .database
            .clone()
            .or_else(|| {
                self.config
                    .opts()
                    .ok()
                    .and_then(|url| url.opts.db_name().map(str::to_owned))
            })
            .unwrap_or_else(|| table.table.namespace.clone())
    }

    fn offsets_table(&self) -> String {
        let database = self
            .config
            .database
            .clone()
            .or_else(|| {
                self.config
                    .opts()
                    .ok()
                    .and_then(|url| url.opts.db_name().map(str::to_owned))
            })
            .unwrap_or_else(|| "sluice".to_owned());
        format!("{}.{}", ident(&database), ident(&self.config.offsets_table))
    }

    async fn describe(
        conn: &mut Conn,
        database: &str,
        table: &str,
    ) -> Result<Option<Existing>, SinkError> {
        let rows: Vec<(String, String, String, String)> = conn
            .exec(
                "SELECT COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE, COLUMN_KEY FROM information_schema.COLUMNS \
                 WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
                (database, table),
            )
            .await
            .map_err(|e| SinkError::db("reading the target's columns", e))?;
        if rows.is_empty() {
            return Ok(None);
        }
        let mut existing = Existing {
            columns: Vec::new(),
            key: Vec::new(),
        };
        for (name, column_type, nullable, key) in rows {
            if key == "PRI" {
                existing.key.push(name.clone());
            }
            existing
                .columns
                .push((name, target::normalize(&column_type), nullable == "YES"));
        }
        Ok(Some(existing))
    }

    async fn ensure_tables(
        &mut self,
        conn: &mut Conn,
        work: &[TableWork],
    ) -> Result<(), SinkError> {
        for item in work {
            let database = self.database(&item.table);
            let key = (database.clone(), item.table.table.name.clone());
            if self
                .ensured
                .get(&key)
                .is_some_and(|known| known.columns == item.table.columns)
            {
                continue;
            }
            let existing = Self::describe(conn, &database, &item.table.table.name).await?;
            for statement in target::reconcile(&database, &item.table, existing.as_ref())? {
                tracing::info!(%statement, "changing the target to match the source");
                conn.query_drop(&statement)
                    .await
                    .map_err(|e| SinkError::db(format!("running {statement}"), e))?;
            }
            self.ensured.insert(key, Arc::clone(&item.table));
        }
        Ok(())
    }

    /// Applies a batch and its offsets in the open transaction (beginning one), committing it
    /// when the batch ends the source transaction. On an error the transaction is rolled back.
    async fn apply_batch(&mut self, prepared: Prepared) -> Result<(), SinkError> {
        let mut conn = match self.open.take() {
            Some(conn) => conn,
            None => {
                let mut conn = self.conn().await?;
                // MySQL commits before any DDL: tables are created and changed before the
                // transaction starts.
                self.ensure_tables(&mut conn, &prepared.work).await?;
                conn.query_drop("START TRANSACTION")
                    .await
                    .map_err(|e| SinkError::db("starting a transaction", e))?;
                conn
            }
        };
        let commit = prepared.commit;
        match self.apply_in(&mut conn, prepared).await {
            Ok(()) if commit => conn
                .query_drop("COMMIT")
                .await
                .map_err(|e| SinkError::db("committing", e)),
            Ok(()) => {
                self.open = Some(conn);
                Ok(())
            }
            Err(err) => {
                let _ = conn.query_drop("ROLLBACK").await;
                Err(err)
            }
        }
    }

    /// Applies a batch inside the transaction open on `conn`: its rows, then its offsets.
    /// Rejected rows go to the dead-letter topic when there is one (the batch is applied again
    /// event by event, each under a savepoint).
    async fn apply_in(&mut self, conn: &mut Conn, prepared: Prepared) -> Result<(), SinkError> {
        let Prepared {
            work,
            offsets,
            ranges,
            records,
            changes,
            mut dead,
            commit: _,
            origins: _,
        } = prepared;
        // A table first seen (or changed) in a later part of a large transaction: MySQL
        // commits the parts before it (docs/delivery.md).
        self.ensure_tables(conn, &work).await?;
        let savepoints = self.dead_letters.is_some();
        if savepoints {
            conn.query_drop("SAVEPOINT sluice_batch")
                .await
                .map_err(|e| SinkError::db("savepoint", e))?;
        }
        match self.apply_work(conn, &work).await {
            Ok(()) => {}
            Err(err) if err.is_data_error() && savepoints => {
                tracing::warn!(error = %err, "the target rejected the batch; applying its events one by one to find the rejected ones");
                conn.query_drop("ROLLBACK TO SAVEPOINT sluice_batch")
                    .await
                    .map_err(|e| SinkError::db("savepoint", e))?;
                for change in changes {
                    let record = change.record;
                    conn.query_drop("SAVEPOINT sluice_event")
                        .await
                        .map_err(|e| SinkError::db("savepoint", e))?;
                    let single =
                        replica::plan(vec![change]).map_err(|e| SinkError::Schema(e.message))?;
                    match self.apply_work(conn, &single).await {
                        Ok(()) => conn
                            .query_drop("RELEASE SAVEPOINT sluice_event")
                            .await
                            .map_err(|e| SinkError::db("savepoint", e))?,
                        Err(err) if err.is_data_error() => {
                            conn.query_drop("ROLLBACK TO SAVEPOINT sluice_event")
                                .await
                                .map_err(|e| SinkError::db("savepoint", e))?;
                            dead.push(DeadLetter {
                                record: records[record].clone(),
                                error: err.to_string(),
                            });
                        }
                        Err(err) => return Err(err),
                    }
                }
            }
            Err(err) if err.is_data_error() => return Err(SinkError::Poison(err.to_string())),
            Err(err) => return Err(err),
        }
        self.store_offsets(conn, &offsets, &ranges).await?;
        self.deliver_dead_letters(dead).await
    }

    async fn deliver_dead_letters(&self, dead: Vec<DeadLetter>) -> Result<(), SinkError> {
        replica::deliver_dead_letters(self.dead_letters.as_ref(), dead)
            .await
            .map_err(SinkError::DeadLetter)
    }

    async fn store_offsets(
        &mut self,
        tx: &mut Conn,
        offsets: &Offsets,
        ranges: &BTreeMap<(Arc<str>, u32), (u64, u64, i32)>,
    ) -> Result<(), SinkError> {
        let table = self.offsets_table();
        let mut sql = format!(
            "INSERT INTO {table} (sink, topic, `partition`, next_offset, updated_at) VALUES "
        );
        for (i, ((topic, partition), next)) in offsets.iter().enumerate() {
            if i > 0 {
                sql.push(',');
            }
            sql.push('(');
            write_literal(
                &mut sql,
                &mut self.scratch,
                &Value::Text(self.config.name.as_str().into()),
            );
            sql.push(',');
            write_literal(&mut sql, &mut self.scratch, &Value::Text(topic.into()));
            sql.push_str(&format!(",{partition},{next},UTC_TIMESTAMP(6))"));
        }
        sql.push_str(" ON DUPLICATE KEY UPDATE next_offset = VALUES(next_offset), updated_at = VALUES(updated_at)");
        tx.query_drop(&sql)
            .await
            .map_err(|e| SinkError::db("storing offsets", e))?;
        if !ranges.is_empty() {
            let history = format!(
                "{}.{}",
                table.split('.').next().unwrap_or(""),
                ident(&format!("{}_batches", self.config.offsets_table))
            );
            let mut sql = format!(
                "INSERT INTO {history} (sink, topic, `partition`, first_offset, last_offset, records) VALUES "
            );
            for (i, ((topic, partition), (first, last, count))) in ranges.iter().enumerate() {
                if i > 0 {
                    sql.push(',');
                }
                sql.push('(');
                write_literal(
                    &mut sql,
                    &mut self.scratch,
                    &Value::Text(self.config.name.as_str().into()),
                );
                sql.push(',');
                write_literal(&mut sql, &mut self.scratch, &Value::Text((**topic).into()));
                sql.push_str(&format!(",{partition},{first},{last},{count})"));
            }
            tx.query_drop(&sql)
                .await
                .map_err(|e| SinkError::db("recording the batch", e))?;
        }
        Ok(())
    }

    async fn apply_work(&mut self, tx: &mut Conn, work: &[TableWork]) -> Result<(), SinkError> {
        for item in work {
            let target = format!(
                "{}.{}",
                ident(&self.database(&item.table)),
                ident(&item.table.table.name)
            );
            let mut statements = MysqlStatements { target: self, tx };
            replica::apply_steps(&mut statements, &item.table, &target, &item.steps).await?;
        }
        Ok(())
    }

    /// Multi-row INSERT (with ON DUPLICATE KEY UPDATE when `upsert`), split to stay under
    /// the server's packet limit.
    async fn insert(
        &mut self,
        tx: &mut Conn,
        table: &TableSchema,
        target: &str,
        rows: &[&Row],
        upsert: bool,
    ) -> Result<(), SinkError> {
        if rows.is_empty() {
            return Ok(());
        }
        let columns: Vec<String> = table.columns.iter().map(|c| ident(&c.name)).collect();
        let head = format!("INSERT INTO {target} ({}) VALUES ", columns.join(", "));
        let tail = if upsert {
            let updates: Vec<String> = table
                .columns
                .iter()
                .filter(|c| !c.key)
                .map(|c| format!("{0} = VALUES({0})", ident(&c.name)))
                .collect();
            if updates.is_empty() {
                let key = ident(&table.columns[0].name);
                format!(" ON DUPLICATE KEY UPDATE {key} = {key}")
            } else {
                format!(" ON DUPLICATE KEY UPDATE {}", updates.join(", "))
            }
        } else {
            String::new()
        };
        let mut sql = std::mem::take(&mut self.sql);
        sql.clear();
        let mut in_statement = 0;
        for (n, row) in rows.iter().enumerate() {
            if in_statement == 0 {
                sql.push_str(&head);
            } else {
                sql.push(',');
            }
            sql.push('(');
            for (i, value) in row.values.iter().enumerate() {
                if i > 0 {
                    sql.push(',');
                }
                write_literal(&mut sql, &mut self.scratch, value);
            }
            sql.push(')');
            in_statement += 1;
            if sql.len() >= MAX_STATEMENT || n + 1 == rows.len() {
                sql.push_str(&tail);
                let result = tx.query_drop(sql.as_str()).await;
                sql.clear();
                in_statement = 0;
                if let Err(e) = result {
                    self.sql = sql;
                    return Err(SinkError::db(format!("writing rows into {target}"), e));
                }
            }
        }
        self.sql = sql;
        Ok(())
    }

    async fn delete_keys(
        &mut self,
        tx: &mut Conn,
        table: &TableSchema,
        target: &str,
        rows: &[Row],
    ) -> Result<(), SinkError> {
        let keys: Vec<usize> = table.key_columns().map(|(i, _)| i).collect();
        let names: Vec<String> = keys
            .iter()
            .map(|i| ident(&table.columns[*i].name))
            .collect();
        for chunk in rows.chunks(1000) {
            let mut sql = format!("DELETE FROM {target} WHERE ({}) IN (", names.join(", "));
            for (n, row) in chunk.iter().enumerate() {
                if n > 0 {
                    sql.push(',');
                }
                sql.push('(');
                for (k, i) in keys.iter().enumerate() {
                    if k > 0 {
                        sql.push(',');
                    }
                    write_literal(&mut sql, &mut self.scratch, &row.values[*i]);
                }
                sql.push(')');
            }
            sql.push(')');
            tx.query_drop(&sql)
                .await
                .map_err(|e| SinkError::db(format!("deleting from {target}"), e))?;
        }
        Ok(())
    }

    /// An update whose unchanged columns the source did not send: sets the others.
    async fn update_available(
        &mut self,
        tx: &mut Conn,
        table: &TableSchema,
        target: &str,
        row: &Row,
    ) -> Result<(), SinkError> {
        let (mut sets, mut wheres) = (Vec::new(), Vec::new());
        for (column, value) in table.columns.iter().zip(&row.values) {
            if matches!(value, Value::Unavailable) {
                continue;
            }
            let mut literal = String::new();
            write_literal(&mut literal, &mut self.scratch, value);
            let clause = format!("{} = {literal}", ident(&column.name));
            if column.key {
                wheres.push(clause);
            } else {
                sets.push(clause);
            }
        }
        if sets.is_empty() {
            return Ok(());
        }
        tx.query_drop(format!(
            "UPDATE {target} SET {} WHERE {}",
            sets.join(", "),
            wheres.join(" AND ")
        ))
        .await
        .map_err(|e| SinkError::db(format!("updating {target}"), e))
    }

    /// Deletes one row equal to `row` in every column (tables without a key).
    async fn delete_matching(
        &mut self,
        tx: &mut Conn,
        table: &TableSchema,
        target: &str,
        row: &Row,
    ) -> Result<(), SinkError> {
        let mut conditions = Vec::new();
        for (column, value) in table.columns.iter().zip(&row.values) {
            let mut literal = String::new();
            write_literal(&mut literal, &mut self.scratch, value);
            conditions.push(format!("{} <=> {literal}", ident(&column.name)));
        }
        tx.query_drop(format!(
            "DELETE FROM {target} WHERE {} LIMIT 1",
            conditions.join(" AND ")
        ))
        .await
        .map_err(|e| SinkError::db(format!("deleting from {target}"), e))
    }

    async fn open_target(&mut self) -> Result<Offsets, SinkError> {
        self.ensured.clear();
        if let Some(mut conn) = self.open.take() {
            // A transaction left open by a failure elsewhere.
            let _ = conn.query_drop("ROLLBACK").await;
        }
        let mut conn = self.conn().await?;
        let table = self.offsets_table();
        let database = table.split('.').next().unwrap_or("").to_owned();
        conn.query_drop(format!("CREATE DATABASE IF NOT EXISTS {database}"))
            .await
            .map_err(|e| SinkError::db(format!("creating {database}"), e))?;
        conn.query_drop(format!(
            "CREATE TABLE IF NOT EXISTS {table} (sink varchar(255) NOT NULL, topic varchar(255) NOT NULL, \
             `partition` int NOT NULL, next_offset bigint NOT NULL, updated_at datetime(6) NOT NULL, \
             PRIMARY KEY (sink, topic, `partition`))"
        ))
        .await
        .map_err(|e| SinkError::db(format!("creating {table}"), e))?;
        if self.config.batch_history {
            let history = format!(
                "{database}.{}",
                ident(&format!("{}_batches", self.config.offsets_table))
            );
            conn.query_drop(format!(
                "CREATE TABLE IF NOT EXISTS {history} (sink varchar(255) NOT NULL, topic varchar(255) NOT NULL, \
                 `partition` int NOT NULL, first_offset bigint NOT NULL, last_offset bigint NOT NULL, \
                 records int NOT NULL, applied_at datetime(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6), \
                 PRIMARY KEY (sink, topic, `partition`, first_offset))"
            ))
            .await
            .map_err(|e| SinkError::db(format!("creating {history}"), e))?;
        }
        let rows: Vec<(String, u32, u64)> = conn
            .exec(
                format!("SELECT topic, `partition`, next_offset FROM {table} WHERE sink = ?"),
                (self.config.name.as_str(),),
            )
            .await
            .map_err(|e| SinkError::db(format!("reading {table}"), e))?;
        Ok(rows
            .into_iter()
            .map(|(topic, partition, next)| ((topic, partition), next))
            .collect())
    }
}

/// The MySQL statements of a batch, in its transaction.
struct MysqlStatements<'a> {
    target: &'a mut MysqlTarget,
    tx: &'a mut Conn,
}

impl Statements for MysqlStatements<'_> {
    type Error = SinkError;

    /// `DELETE FROM`, not TRUNCATE: TRUNCATE would commit the transaction.
    async fn truncate(&mut self, target: &str) -> Result<(), SinkError> {
        self.tx
            .query_drop(format!("DELETE FROM {target}"))
            .await
            .map_err(|e| SinkError::db(format!("truncating {target}"), e))
    }

    async fn delete_keys(
        &mut self,
        table: &TableSchema,
        target: &str,
        rows: &[Row],
    ) -> Result<(), SinkError> {
        self.target.delete_keys(self.tx, table, target, rows).await
    }

    async fn upsert(
        &mut self,
        table: &TableSchema,
        target: &str,
        rows: &[Row],
    ) -> Result<(), SinkError> {
        let rows: Vec<&Row> = rows.iter().collect();
        self.target
            .insert(self.tx, table, target, &rows, true)
            .await
    }

    async fn update_available(
        &mut self,
        table: &TableSchema,
        target: &str,
        row: &Row,
    ) -> Result<(), SinkError> {
        self.target
            .update_available(self.tx, table, target, row)
            .await
    }

    async fn insert(
        &mut self,
        table: &TableSchema,
        target: &str,
        rows: &[&Row],
    ) -> Result<(), SinkError> {
        self.target
            .insert(self.tx, table, target, rows, false)
            .await
    }

    async fn delete_matching(
        &mut self,
        table: &TableSchema,
        target: &str,
        row: &Row,
    ) -> Result<(), SinkError> {
        self.target
            .delete_matching(self.tx, table, target, row)
            .await
    }
}

impl Target for MysqlTarget {
    type Error = SinkError;

    async fn open(&mut self) -> Result<Offsets, SinkError> {
        self.open_target().await
    }

    async fn apply(&mut self, batch: Prepared) -> Result<(), SinkError> {
        self.apply_batch(batch).await
    }

    fn close(&mut self) {
        if let Some(pool) = self.pool.take() {
            sluice_core::task::spawn_in_span(async move {
                let _ = pool.disconnect().await;
            });
        }
    }
}

/// `check --connect` for a MySQL/MariaDB sink: connects as `run` would.
pub async fn probe(config: &MysqlSinkConfig) -> Result<String, SinkError> {
    let url = config.opts()?;
    let mut conn =
        Conn::new(url.settled().await?).await.map_err(|err| {
            match super::tls::failure(&err, &url.tls) {
                Some(reason) => SinkError::Tls(reason),
                None => SinkError::db("connecting to the target database", err),
            }
        })?;
    let version: Option<String> = conn
        .query_first("SELECT VERSION()")
        .await
        .map_err(|err| SinkError::db("asking the server's version", err))?;
    let _ = conn.disconnect().await;
    Ok(format!("server {}", version.unwrap_or_default()))
}
