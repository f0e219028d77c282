//! The Postgres sink: keeps target tables equal to their source tables.
//!
//! - `config.rs`: the `[[sinks]] kind = "postgres"` section.
//! - `target.rs`: creating target tables from the source schema and following its changes.
//! - `encode.rs`: values in Postgres' COPY text form.
//! - `statements.rs`: a batch's statements in its transaction, as the replica's plan asks them.
//! - here: the [`Target`] for `replica::ReplicaSink` (which decodes, plans and pipelines):
//!   opening (offsets from the target), and applying a batch in one transaction: per table,
//!   deletes and upserts as set operations on staged rows (COPY into a session-local staging
//!   table, then `DELETE … USING` and `INSERT … ON CONFLICT DO UPDATE`; new keys are COPYed
//!   straight in), then the sink's offsets in the same transaction. That transaction is the exactly-once point: after
//!   a crash the sink resumes from the offsets the target holds, whatever the log's consumer
//!   group says.
//!
//! A batch the target rejects for its data (SQLSTATE classes 22 and 23) is retried event by
//! event under savepoints when a dead-letter topic is configured; the rejected events go there
//! with the database's message, the rest are applied. Without one, the sink stops with the
//! message. Connection failures and restarts of the target are retried with backoff.

mod config;
mod encode;

pub(in crate::postgres) use encode::write_text;
mod probe;
mod statements;
mod target;

use statements::PgStatements;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bytes::Bytes;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use futures_util::SinkExt;
use sluice_core::event::TableSchema;
use sluice_core::pipeline::TypedSink;
use sluice_core::retry::{sqlstate_class, Classify, ErrorKind, ServerErrorClass};
use sluice_core::sink::{DeadLetter, DeadLetterWriter, Offsets};
use sluice_core::value::Value;
use sluice_schema_registry::changes::RecordDecoder;
use sluice_schema_registry::registry::Registry;
use tokio_postgres::Client;

pub use self::config::PostgresSinkConfig;
pub use self::probe::probe;
use self::target::{ident, pg_type, qualified};
use crate::replica::{
    self, Prepared, ReplicaError, ReplicaSettings, ReplicaSink, Row, TableWork, Target,
};

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
        /// SQLSTATE, when the server answered.
        code: Option<String>,
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
    fn from_pg(err: tokio_postgres::Error) -> SinkError {
        SinkError::db("the target database", err)
    }

    fn db(context: impl Into<String>, err: tokio_postgres::Error) -> SinkError {
        let code = err.code().map(|c| c.code().to_owned());
        let message = crate::postgres::ErrorText(&err).to_string();
        SinkError::Db {
            context: context.into(),
            message,
            code,
        }
    }

    /// The target refused the data itself (bad value, constraint): retrying cannot help.
    fn is_data_error(&self) -> bool {
        matches!(self, SinkError::Db { code: Some(code), .. } if sqlstate_class(code) == ServerErrorClass::Data)
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
            } => match sqlstate_class(code) {
                ServerErrorClass::Transient | ServerErrorClass::MissingObject => {
                    ErrorKind::Transient
                }
                _ => ErrorKind::Definite,
            },
            SinkError::Schema(_) | SinkError::Poison(_) => ErrorKind::Definite,
        }
    }
}

/// What applies batches to the target: the pool, the known target tables, buffers.
pub struct PgTarget {
    config: PostgresSinkConfig,
    pool: Option<Pool>,
    dead_letters: Option<DeadLetterWriter>,
    /// Target tables known to match a source table version: (schema, table) → that version.
    ensured: HashMap<(String, String), Arc<TableSchema>>,
    /// The connection whose transaction holds the parts of a source transaction applied so
    /// far (`Prepared::commit` false).
    open: Option<deadpool_postgres::Object>,
    buf: Vec<u8>,
    text: String,
}

/// The advisory lock sluice's Postgres sinks take around DDL on their target ("sluice" and 1).
const DDL_LOCK: i64 = 0x736c_7569_6365_0001;

impl PgTarget {
    fn target_schema(&self, table: &TableSchema) -> String {
        self.config
            .schema
            .clone()
            .unwrap_or_else(|| table.table.namespace.clone())
    }

    /// Creates or alters target tables so they match the versions in `work`. `in_transaction`:
    /// the DDL runs inside the open transaction (it holds the DDL lock until it ends).
    async fn ensure_tables(
        &mut self,
        client: &Client,
        work: &[TableWork],
        in_transaction: bool,
    ) -> Result<(), SinkError> {
        let mut locked = false;
        let result = self
            .ensure_tables_locked(client, work, in_transaction, &mut locked)
            .await;
        if locked && !in_transaction {
            // (A broken connection releases it by ending.)
            let _ = client
                .batch_execute(&format!("SELECT pg_advisory_unlock({DDL_LOCK})"))
                .await;
        }
        result
    }

    async fn ensure_tables_locked(
        &mut self,
        client: &Client,
        work: &[TableWork],
        in_transaction: bool,
        locked: &mut bool,
    ) -> Result<(), SinkError> {
        for item in work {
            let schema = self.target_schema(&item.table);
            let key = (schema.clone(), item.table.table.name.clone());
            if self
                .ensured
                .get(&key)
                .is_some_and(|known| known.columns == item.table.columns)
            {
                continue;
            }
            if !*locked {
                // Processes that share this sink's partitions (the log on Kafka) would race to
                // create the same tables: one at a time, each looking after the lock.
                let lock = if in_transaction {
                    "pg_advisory_xact_lock"
                } else {
                    "pg_advisory_lock"
                };
                client
                    .batch_execute(&format!("SELECT {lock}({DDL_LOCK})"))
                    .await
                    .map_err(|e| SinkError::db("taking the sink's DDL lock", e))?;
                *locked = true;
            }
            let existing = target::describe(client, &schema, &item.table.table.name).await?;
            let statements = target::reconcile(&schema, &item.table, existing.as_ref())?;
            for statement in &statements {
                tracing::info!(%statement, "changing the target to match the source");
                client
                    .batch_execute(statement)
                    .await
                    .map_err(|e| SinkError::db(format!("running {statement}"), e))?;
            }
            self.ensured.insert(key, Arc::clone(&item.table));
        }
        Ok(())
    }

    fn pool(&mut self) -> Result<Pool, SinkError> {
        if let Some(pool) = &self.pool {
            return Ok(pool.clone());
        }
        let (pg, tls) = self.config.pg_config().map_err(SinkError::Url)?;
        let connector = tls
            .connector()
            .map_err(|e| SinkError::Url(crate::UrlError(e.to_string())))?;
        let manager = Manager::from_config(
            pg,
            connector,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(self.config.pool_size)
            .build()
            .map_err(|e| SinkError::Connect(e.to_string()))?;
        self.pool = Some(pool.clone());
        Ok(pool)
    }

    async fn client(&mut self) -> Result<deadpool_postgres::Object, SinkError> {
        let pool = self.pool()?;
        let got = pool.get().await;
        if let Err(deadpool_postgres::PoolError::Backend(err)) = &got {
            if let Ok((pg, tls)) = self.config.pg_config() {
                if let Some(reason) = crate::postgres::tls::connect_failure(err, &pg, &tls).await {
                    return Err(SinkError::Tls(reason));
                }
            }
        }
        got.map_err(|err| match err {
            // Credentials, a database that does not exist, no CONNECT privilege: waiting will
            // not help. Anything else (starting up, not accepting connections, too many
            // clients) may pass.
            deadpool_postgres::PoolError::Backend(err)
                if err.code().is_some_and(|code| {
                    sqlstate_class(code.code()) == ServerErrorClass::Access
                }) =>
            {
                SinkError::db("connecting to the target database", err)
            }
            deadpool_postgres::PoolError::Backend(err) => {
                SinkError::Connect(crate::postgres::ErrorText(&err).to_string())
            }
            other => SinkError::Connect(other.to_string()),
        })
    }

    /// Applies a batch and its offsets in the open transaction (beginning one), committing it
    /// when the batch ends the source transaction. On an error the transaction is rolled back
    /// and its connection dropped.
    async fn apply_batch(&mut self, prepared: Prepared) -> Result<(), SinkError> {
        let client = match self.open.take() {
            Some(client) => client,
            None => {
                let client = self.client().await?;
                // Tables are created and changed outside the transaction when it starts, so
                // that their DDL does not wait on the rows.
                self.ensure_tables(&client, &prepared.work, false).await?;
                client
                    .batch_execute("BEGIN")
                    .await
                    .map_err(SinkError::from_pg)?;
                client
            }
        };
        let commit = prepared.commit;
        match self.apply_in(&client, prepared).await {
            Ok(()) if commit => client
                .batch_execute("COMMIT")
                .await
                .map_err(SinkError::from_pg),
            Ok(()) => {
                self.open = Some(client);
                Ok(())
            }
            Err(err) => {
                // Whatever DDL ran inside the transaction is undone with it.
                self.ensured.clear();
                let _ = client.batch_execute("ROLLBACK").await;
                Err(err)
            }
        }
    }

    /// Applies a batch inside the transaction open on `client`: its rows, then its offsets.
    /// Rejected rows go to the dead-letter topic when there is one (the batch is applied again
    /// event by event, each under a savepoint).
    async fn apply_in(&mut self, client: &Client, prepared: Prepared) -> Result<(), SinkError> {
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
        // Tables first seen (or changed) in a later part of a transaction: Postgres runs the
        // DDL inside it.
        self.ensure_tables(client, &work, true).await?;
        let savepoints = self.dead_letters.is_some();
        if savepoints {
            client
                .batch_execute("SAVEPOINT sluice_batch")
                .await
                .map_err(SinkError::from_pg)?;
        }
        match self.apply_work(client, &work).await {
            Ok(()) => {}
            Err(err) if err.is_data_error() && savepoints => {
                tracing::warn!(error = %err, "the target rejected the batch; applying its events one by one to find the rejected ones");
                client
                    .batch_execute("ROLLBACK TO SAVEPOINT sluice_batch")
                    .await
                    .map_err(SinkError::from_pg)?;
                for change in changes {
                    let record = change.record;
                    client
                        .batch_execute("SAVEPOINT sluice_event")
                        .await
                        .map_err(SinkError::from_pg)?;
                    let single =
                        replica::plan(vec![change]).map_err(|e| SinkError::Schema(e.message))?;
                    match self.apply_work(client, &single).await {
                        Ok(()) => client
                            .batch_execute("RELEASE SAVEPOINT sluice_event")
                            .await
                            .map_err(SinkError::from_pg)?,
                        Err(err) if err.is_data_error() => {
                            client
                                .batch_execute("ROLLBACK TO SAVEPOINT sluice_event")
                                .await
                                .map_err(SinkError::from_pg)?;
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
        self.store_offsets(client, &offsets, &ranges).await?;
        self.deliver_dead_letters(dead).await
    }

    async fn deliver_dead_letters(&self, dead: Vec<DeadLetter>) -> Result<(), SinkError> {
        replica::deliver_dead_letters(self.dead_letters.as_ref(), dead)
            .await
            .map_err(SinkError::DeadLetter)
    }

    async fn store_offsets(
        &self,
        tx: &Client,
        offsets: &Offsets,
        ranges: &BTreeMap<(Arc<str>, u32), (u64, u64, i32)>,
    ) -> Result<(), SinkError> {
        let (schema, table) = self.config.offsets_table();
        let target = qualified(&schema, &table);
        let topics: Vec<&str> = offsets.keys().map(|(t, _)| t.as_str()).collect();
        let partitions: Vec<i32> = offsets.keys().map(|(_, p)| *p as i32).collect();
        let next: Vec<i64> = offsets.values().map(|o| *o as i64).collect();
        tx.execute(
            &format!(
                "INSERT INTO {target} (sink, topic, partition, next_offset, updated_at) \
                 SELECT $1, t, p, o, now() FROM unnest($2::text[], $3::int[], $4::bigint[]) AS u(t, p, o) \
                 ON CONFLICT (sink, topic, partition) DO UPDATE SET next_offset = EXCLUDED.next_offset, updated_at = now()"
            ),
            &[&self.config.name, &topics, &partitions, &next],
        )
        .await
        .map_err(|e| SinkError::db("storing offsets", e))?;
        let history = qualified(&schema, &format!("{table}_batches"));
        for ((topic, partition), (first, last, count)) in ranges {
            tx.execute(
                &format!("INSERT INTO {history} (sink, topic, partition, first_offset, last_offset, records) VALUES ($1, $2, $3, $4, $5, $6)"),
                &[&self.config.name, &topic.as_ref(), &(*partition as i32), &(*first as i64), &(*last as i64), count],
            )
            .await
            .map_err(|e| SinkError::db("recording the batch", e))?;
        }
        Ok(())
    }

    async fn apply_work(&mut self, tx: &Client, work: &[TableWork]) -> Result<(), SinkError> {
        for item in work {
            let schema = self.target_schema(&item.table);
            let target = qualified(&schema, &item.table.table.name);
            let mut statements = PgStatements { target: self, tx };
            replica::apply_steps(&mut statements, &item.table, &target, &item.steps).await?;
        }
        Ok(())
    }

    /// A session-local staging table shaped like the target's key (`keys_only`) or whole row,
    /// emptied for this use.
    async fn stage(
        &self,
        tx: &Client,
        table: &TableSchema,
        target: &str,
        keys_only: bool,
    ) -> Result<String, SinkError> {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        target.hash(&mut hasher);
        for column in &table.columns {
            column.name.hash(&mut hasher);
            pg_type(column).hash(&mut hasher);
        }
        keys_only.hash(&mut hasher);
        let name = format!("_sluice_stage_{:016x}", hasher.finish());
        let columns: Vec<String> = table
            .columns
            .iter()
            .filter(|c| !keys_only || c.key)
            .map(|c| ident(&c.name))
            .collect();
        tx.batch_execute(&format!(
            "CREATE TEMP TABLE IF NOT EXISTS {name} ON COMMIT DELETE ROWS AS SELECT {} FROM {target} WITH NO DATA; TRUNCATE {name}",
            columns.join(", ")
        ))
        .await
        .map_err(|e| SinkError::db(format!("staging rows for {target}"), e))?;
        Ok(name)
    }

    /// COPY `rows` (all columns, or keys only) into `into`.
    async fn copy_into(
        &mut self,
        tx: &Client,
        table: &TableSchema,
        into: &str,
        rows: &[&Row],
        keys_only: bool,
    ) -> Result<(), SinkError> {
        if rows.is_empty() {
            return Ok(());
        }
        let columns: Vec<(usize, String)> = table
            .columns
            .iter()
            .enumerate()
            .filter(|(_, c)| !keys_only || c.key)
            .map(|(i, c)| (i, ident(&c.name)))
            .collect();
        self.buf.clear();
        for row in rows {
            for (n, (i, _)) in columns.iter().enumerate() {
                if n > 0 {
                    self.buf.push(b'\t');
                }
                encode::write_field(&mut self.buf, &mut self.text, &row.values[*i]);
            }
            self.buf.push(b'\n');
        }
        let names: Vec<&str> = columns.iter().map(|(_, n)| n.as_str()).collect();
        let statement = format!("COPY {into} ({}) FROM STDIN", names.join(", "));
        let sink = tx
            .copy_in::<_, Bytes>(&statement)
            .await
            .map_err(|e| SinkError::db(format!("copying rows into {into}"), e))?;
        futures_util::pin_mut!(sink);
        let data = Bytes::copy_from_slice(&self.buf);
        sink.send(data)
            .await
            .map_err(|e| SinkError::db(format!("copying rows into {into}"), e))?;
        sink.finish()
            .await
            .map_err(|e| SinkError::db(format!("copying rows into {into}"), e))?;
        Ok(())
    }

    async fn delete_keys(
        &mut self,
        tx: &Client,
        table: &TableSchema,
        target: &str,
        rows: &[Row],
    ) -> Result<(), SinkError> {
        let stage = self.stage(tx, table, target, true).await?;
        let refs: Vec<&Row> = rows.iter().collect();
        self.copy_into(tx, table, &stage, &refs, true).await?;
        let matches: Vec<String> = table
            .key_columns()
            .map(|(_, c)| format!("t.{0} = s.{0}", ident(&c.name)))
            .collect();
        tx.batch_execute(&format!(
            "DELETE FROM {target} AS t USING {stage} AS s WHERE {}",
            matches.join(" AND ")
        ))
        .await
        .map_err(|e| SinkError::db(format!("deleting from {target}"), e))
    }

    async fn upsert(
        &mut self,
        tx: &Client,
        table: &TableSchema,
        target: &str,
        rows: &[Row],
    ) -> Result<(), SinkError> {
        let refs: Vec<&Row> = rows.iter().collect();
        if rows.iter().all(|r| r.fresh) {
            // Inserts and snapshot rows: most likely new keys, so COPY straight into the target
            // (as fast as a bulk load); if a key is already there, fall back to the upsert.
            tx.batch_execute("SAVEPOINT sluice_copy")
                .await
                .map_err(SinkError::from_pg)?;
            match self.copy_into(tx, table, target, &refs, false).await {
                Ok(()) => {
                    return tx
                        .batch_execute("RELEASE SAVEPOINT sluice_copy")
                        .await
                        .map_err(SinkError::from_pg)
                }
                Err(SinkError::Db {
                    code: Some(code), ..
                }) if code == "23505" => {
                    tx.batch_execute("ROLLBACK TO SAVEPOINT sluice_copy")
                        .await
                        .map_err(SinkError::from_pg)?;
                }
                Err(err) => return Err(err),
            }
        }
        let stage = self.stage(tx, table, target, false).await?;
        self.copy_into(tx, table, &stage, &refs, false).await?;
        let columns: Vec<String> = table.columns.iter().map(|c| ident(&c.name)).collect();
        let keys: Vec<String> = table.key_columns().map(|(_, c)| ident(&c.name)).collect();
        let updates: Vec<String> = table
            .columns
            .iter()
            .filter(|c| !c.key)
            .map(|c| format!("{0} = EXCLUDED.{0}", ident(&c.name)))
            .collect();
        let action = if updates.is_empty() {
            "DO NOTHING".to_owned()
        } else {
            format!("DO UPDATE SET {}", updates.join(", "))
        };
        tx.batch_execute(&format!(
            "INSERT INTO {target} ({cols}) SELECT {cols} FROM {stage} ON CONFLICT ({}) {action}",
            keys.join(", "),
            cols = columns.join(", ")
        ))
        .await
        .map_err(|e| SinkError::db(format!("upserting into {target}"), e))
    }

    /// An update whose unchanged TOASTed columns the source did not send: sets the others.
    async fn update_available(
        &mut self,
        tx: &Client,
        table: &TableSchema,
        target: &str,
        row: &Row,
    ) -> Result<(), SinkError> {
        let mut sets = Vec::new();
        let mut wheres = Vec::new();
        let mut params: Vec<Option<String>> = Vec::new();
        for (column, value) in table.columns.iter().zip(&row.values) {
            if matches!(value, Value::Unavailable) {
                continue;
            }
            params.push(self.param(value));
            let placeholder = format!("${}::text::{}", params.len(), pg_type(column));
            if column.key {
                wheres.push(format!("{} = {placeholder}", ident(&column.name)));
            } else {
                sets.push(format!("{} = {placeholder}", ident(&column.name)));
            }
        }
        if sets.is_empty() {
            return Ok(());
        }
        let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = params
            .iter()
            .map(|p| p as &(dyn tokio_postgres::types::ToSql + Sync))
            .collect();
        tx.execute(
            &format!(
                "UPDATE {target} SET {} WHERE {}",
                sets.join(", "),
                wheres.join(" AND ")
            ),
            &refs,
        )
        .await
        .map_err(|e| SinkError::db(format!("updating {target}"), e))?;
        Ok(())
    }

    /// Deletes one row equal to `row` in every column (tables without a key).
    async fn delete_matching(
        &mut self,
        tx: &Client,
        table: &TableSchema,
        target: &str,
        row: &Row,
    ) -> Result<(), SinkError> {
        let mut conditions = Vec::new();
        let mut params: Vec<Option<String>> = Vec::new();
        for (column, value) in table.columns.iter().zip(&row.values) {
            params.push(self.param(value));
            conditions.push(format!(
                "{} IS NOT DISTINCT FROM ${}::text::{}",
                ident(&column.name),
                params.len(),
                pg_type(column)
            ));
        }
        let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = params
            .iter()
            .map(|p| p as &(dyn tokio_postgres::types::ToSql + Sync))
            .collect();
        tx.execute(
            &format!(
                "DELETE FROM {target} WHERE ctid = (SELECT ctid FROM {target} WHERE {} LIMIT 1)",
                conditions.join(" AND ")
            ),
            &refs,
        )
        .await
        .map_err(|e| SinkError::db(format!("deleting from {target}"), e))?;
        Ok(())
    }

    fn param(&mut self, value: &Value) -> Option<String> {
        if let Value::Null = value {
            return None;
        }
        self.text.clear();
        encode::write_text(&mut self.text, value);
        Some(self.text.clone())
    }
}

impl PgTarget {
    /// Creates the offsets table (and the batch history) when missing; returns the offsets.
    async fn open_target(&mut self) -> Result<Offsets, SinkError> {
        self.ensured.clear();
        if let Some(client) = self.open.take() {
            // A transaction left open by a failure elsewhere: never back into the pool.
            let _ = client.batch_execute("ROLLBACK").await;
            drop(deadpool_postgres::Object::take(client));
        }
        let client = self.client().await?;
        let (schema, table) = self.config.offsets_table();
        let offsets = qualified(&schema, &table);
        // One implicit transaction: the lock keeps processes that share this sink from racing.
        let mut ddl = format!(
            "SELECT pg_advisory_xact_lock({DDL_LOCK}); CREATE SCHEMA IF NOT EXISTS {}; \
             CREATE TABLE IF NOT EXISTS {offsets} (sink text NOT NULL, topic text NOT NULL, \
             partition int NOT NULL, next_offset bigint NOT NULL, updated_at timestamptz NOT NULL, \
             PRIMARY KEY (sink, topic, partition))",
            ident(&schema)
        );
        if self.config.batch_history {
            let history = qualified(&schema, &format!("{table}_batches"));
            ddl.push_str(&format!(
                "; CREATE TABLE IF NOT EXISTS {history} (sink text NOT NULL, topic text NOT NULL, \
                 partition int NOT NULL, first_offset bigint NOT NULL, last_offset bigint NOT NULL, \
                 records int NOT NULL, applied_at timestamptz NOT NULL DEFAULT now(), \
                 PRIMARY KEY (sink, topic, partition, first_offset))"
            ));
        }
        client
            .batch_execute(&ddl)
            .await
            .map_err(|e| SinkError::db(format!("creating {offsets}"), e))?;
        let rows = client
            .query(
                &format!("SELECT topic, partition, next_offset FROM {offsets} WHERE sink = $1"),
                &[&self.config.name],
            )
            .await
            .map_err(|e| SinkError::db(format!("reading {offsets}"), e))?;
        Ok(rows
            .iter()
            .map(|row| {
                let partition: i32 = row.get(1);
                let next: i64 = row.get(2);
                ((row.get::<_, String>(0), partition as u32), next as u64)
            })
            .collect())
    }
}

impl Target for PgTarget {
    type Error = SinkError;

    async fn open(&mut self) -> Result<Offsets, SinkError> {
        self.open_target().await
    }

    async fn apply(&mut self, batch: Prepared) -> Result<(), SinkError> {
        self.apply_batch(batch).await
    }

    fn close(&mut self) {
        if let Some(pool) = self.pool.take() {
            pool.close();
        }
    }
}

impl From<ReplicaError> for SinkError {
    fn from(err: ReplicaError) -> SinkError {
        SinkError::Schema(err.0)
    }
}

/// The Postgres sink.
pub type PostgresSink = TypedSink<ReplicaSink<PgTarget>, RecordDecoder>;

/// A Postgres sink for `config`; `dead_letters` is required when it names a dead-letter topic.
pub fn postgres_sink(
    config: PostgresSinkConfig,
    registry: Arc<Registry>,
    dead_letters: Option<DeadLetterWriter>,
) -> PostgresSink {
    let settings = ReplicaSettings {
        dead_letters: dead_letters.is_some(),
        batch_history: config.batch_history,
        whole_commits: config.transactional,
        max_pending_bytes: config.max_pending_bytes,
    };
    let target = PgTarget {
        config,
        pool: None,
        dead_letters,
        ensured: HashMap::new(),
        open: None,
        buf: Vec::new(),
        text: String::new(),
    };
    replica::typed_sink(target, settings, registry)
}
