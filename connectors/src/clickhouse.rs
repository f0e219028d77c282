//! The ClickHouse sink: each source table as a current-state table (a `ReplacingMergeTree`
//! that collapses a key's versions), as a changelog table of every change, or both.
//!
//! Changes are encoded as RowBinary as they arrive (`buffer.rs`) and inserted together once
//! `flush_interval_ms` passed since the oldest waiting row or `batch_bytes` are waiting, one
//! insert per table, while the next rows are read (`insert.rs`, on a task of its own). After
//! the rows, the sink's offsets go to its offsets table; a restart resumes from them. Exactly
//! once without transactions: a row inserted again after a crash carries the same version (its
//! log offset + 1) or the same log position as its first copy, and the ReplacingMergeTree keeps
//! one of them (queries read the settled state with `FINAL`). Tables are made from the source's
//! schema, checked when they exist and widened when a new version of the source table needs it
//! (`table.rs`); column types follow what the server supports (`types.rs`: 18.16 has no
//! `DateTime64`, no `Date32`, no `Bool`, no `is_deleted` engine parameter).
//!
//! Why the log offset and not the source's position as version: every kind of source has
//! one, it rises with the source's commit order for each key (a key lives in one partition),
//! and it survives what source positions do not (a MySQL failover renumbers binlogs; a Kafka
//! source's positions are per topic).

mod buffer;
pub mod client;
pub mod config;
mod insert;
pub mod rowbinary;
mod table;
pub mod types;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use sluice_core::event::{Op, TableSchema};
use sluice_core::pipeline::TypedSink;
use sluice_core::retry::{Classify, ErrorKind};
use sluice_core::sink::{
    ChangeBatch, ChangeSink, DeadLetter, DeadLetterError, DeadLetterWriter, Offsets,
};
use sluice_core::value::Value;
use sluice_schema_registry::changes::RecordDecoder;
use sluice_schema_registry::registry::Registry;

use self::buffer::{Buffer, Origin};
use self::client::{quote, Client, ServerError};
pub use self::config::{ClickHouseSinkConfig, Mode};
use self::insert::OffsetsTable;
use self::table::{Existing, Kind, Layout};
use self::types::Features;
use crate::http::{Auth, Http, HttpError};

/// Metric names (labels: `sink`, and `table`, `kind`).
pub mod metric {
    /// Rows inserted, by `table` and `kind` (`current`, `changelog`).
    pub const ROWS: &str = "sluice_clickhouse_rows_total";
    /// RowBinary bytes inserted.
    pub const BYTES: &str = "sluice_clickhouse_bytes_total";
    /// Seconds per insert, answer included (histogram).
    pub const INSERT_SECONDS: &str = "sluice_clickhouse_insert_seconds";
    /// When a table last received rows (Unix seconds), by `table`.
    pub const LAST_INSERT: &str = "sluice_clickhouse_last_insert_timestamp_seconds";
}

/// Why the ClickHouse sink stopped or will retry.
#[derive(Debug, thiserror::Error)]
pub enum ClickHouseError {
    #[error(transparent)]
    Http(HttpError),
    #[error("ClickHouse refused {what}: {}{}{hint}", code(error), error.message)]
    Server {
        what: String,
        error: ServerError,
        hint: &'static str,
    },
    /// A table sluice cannot write as it is (engine, key, a column's type).
    #[error("{0}")]
    Table(String),
    /// Rows ClickHouse cannot hold and no dead-letter topic to put them in.
    #[error("{0}")]
    Rejected(String),
    #[error("ClickHouse: {0}")]
    Unexpected(String),
    #[error(transparent)]
    DeadLetter(#[from] DeadLetterError),
    #[error("{0}")]
    Config(String),
}

fn code(error: &ServerError) -> String {
    error
        .code
        .map_or_else(String::new, |code| format!("code {code}: "))
}

impl Classify for ClickHouseError {
    fn kind(&self) -> ErrorKind {
        match self {
            ClickHouseError::Http(err) => err.kind(),
            ClickHouseError::Server { error, .. } => error.kind(),
            ClickHouseError::DeadLetter(err) => err.kind(),
            ClickHouseError::Table(_)
            | ClickHouseError::Rejected(_)
            | ClickHouseError::Unexpected(_)
            | ClickHouseError::Config(_) => ErrorKind::Definite,
        }
    }
}

/// The sink as the runtime runs it.
pub type ClickHouseSinkRuntime = TypedSink<ClickHouseSink, RecordDecoder>;

/// Builds the sink for `config`, decoding records through `registry`.
pub fn clickhouse_sink(
    config: ClickHouseSinkConfig,
    registry: Arc<Registry>,
    dead_letters: Option<DeadLetterWriter>,
) -> ClickHouseSinkRuntime {
    let sink = ClickHouseSink {
        config,
        dead_letters,
        server: None,
        tables: HashMap::new(),
        layouts: HashMap::new(),
        keyless_warned: HashSet::new(),
        last_layouts: None,
        last_delete: None,
        buffer: Buffer::default(),
        catching_up: false,
        in_flight: None,
        durable: Offsets::new(),
    };
    TypedSink::new(sink, RecordDecoder::new(registry), false)
}

/// The server, once `open` reached it.
struct Server {
    client: Client,
    features: Features,
}

/// A ClickHouse server the sink keeps tables in.
pub struct ClickHouseSink {
    config: ClickHouseSinkConfig,
    dead_letters: Option<DeadLetterWriter>,
    server: Option<Server>,
    /// Tables as the server has them, by name, once read or made in this run.
    tables: HashMap<String, Existing>,
    /// How each version of a topic's table is written, per kind of table (None: the table has
    /// no key, so it has no current-state table). Versions are told apart by their columns.
    #[allow(clippy::type_complexity)]
    layouts: HashMap<(Arc<str>, Kind), Vec<(Arc<TableSchema>, Option<Arc<Layout>>)>>,
    keyless_warned: HashSet<String>,
    /// The layouts of the last change's topic and table version (most changes of a batch
    /// share them): current-state, changelog.
    #[allow(clippy::type_complexity)]
    last_layouts: Option<(
        Arc<str>,
        Arc<TableSchema>,
        Option<Arc<Layout>>,
        Option<Arc<Layout>>,
    )>,
    /// The old row of the last change when it was a delete, with its topic: a create right
    /// after it in the same topic that lacks values is the new row of a key change.
    last_delete: Option<(Arc<str>, Vec<Value>)>,
    buffer: Buffer,
    /// The last insert went out because `batch_bytes` were waiting: a backlog is being read,
    /// and what is left of it goes in as soon as the runtime finds nothing new.
    catching_up: bool,
    in_flight: Option<tokio::task::JoinHandle<Result<Offsets, ClickHouseError>>>,
    /// What the server holds: the offsets stored last.
    durable: Offsets,
}

/// Connects to the server of `config`.
fn connect(config: &ClickHouseSinkConfig) -> Result<Client, ClickHouseError> {
    let http = Http::new(
        "ClickHouse",
        &config.url,
        config.ca_file.as_deref(),
        Auth::Basic {
            password_file: config.password_file.clone(),
        },
    )?;
    Ok(Client::new(http))
}

async fn server_version(client: &Client) -> Result<String, ClickHouseError> {
    let answer = client
        .query("SELECT version()", "asking the server's version")
        .await?;
    Ok(String::from_utf8_lossy(&answer).trim().to_owned())
}

impl ClickHouseSink {
    fn server(&self) -> &Server {
        self.server.as_ref().expect("opened before use")
    }

    fn offsets_table(&self) -> OffsetsTable {
        OffsetsTable {
            sink: self.config.name.clone(),
            database: self.config.database.clone(),
            table: self.config.offsets_table.clone(),
        }
    }

    /// Waits for the insert in flight; what it stored becomes durable.
    async fn settle(&mut self) -> Result<(), ClickHouseError> {
        if let Some(handle) = self.in_flight.take() {
            let stored = match handle.await {
                Ok(result) => result?,
                Err(join) => std::panic::resume_unwind(join.into_panic()),
            };
            self.durable.extend(stored);
        }
        Ok(())
    }

    /// Starts inserting what waits (after the insert in flight).
    async fn start_flush(&mut self) -> Result<(), ClickHouseError> {
        self.settle().await?;
        if self.buffer.is_empty() {
            return Ok(());
        }
        let buffer = self.buffer.take();
        let client = self.server().client.clone();
        let offsets = self.offsets_table();
        self.in_flight = Some(sluice_core::task::spawn_in_span(insert::flush(
            client, buffer, offsets,
        )));
        Ok(())
    }

    /// Inserts what waits and waits for it.
    async fn flush_now(&mut self) -> Result<(), ClickHouseError> {
        self.start_flush().await?;
        self.settle().await
    }

    /// How rows of `schema` from `topic` are written to their `kind` of table, making or
    /// widening the table first if needed.
    async fn layout(
        &mut self,
        topic: &Arc<str>,
        schema: &Arc<TableSchema>,
        kind: Kind,
    ) -> Result<Option<Arc<Layout>>, ClickHouseError> {
        let cache_key = (Arc::clone(topic), kind);
        let known = self.layouts.get(&cache_key).and_then(|versions| {
            versions
                .iter()
                .find(|(known, _)| Arc::ptr_eq(known, schema) || known.columns == schema.columns)
        });
        if let Some((_, layout)) = known {
            return Ok(layout.clone());
        }
        let template = match kind {
            Kind::Current => &self.config.table,
            Kind::Changelog => &self.config.changelog_table,
        };
        let name = crate::names::fill_template(template, topic, &schema.table);
        if kind == Kind::Current && schema.key_columns().next().is_none() {
            if self.keyless_warned.insert(name.clone()) {
                tracing::warn!(table = %schema.table, "the table has no primary key: a current-state table needs one (it is ordered and collapsed by it), so only its changelog table is kept");
            }
            self.layouts
                .entry(cache_key)
                .or_default()
                .push((Arc::clone(schema), None));
            return Ok(None);
        }
        let database = self.config.database.clone();
        let features = self.server().features;
        let existing = match self.tables.get(&name) {
            Some(existing) => Some(existing.clone()),
            None => table::describe(&self.server().client, &database, &name).await?,
        };
        let (statements, mut layout) =
            table::plan(schema, kind, &database, &name, existing.as_ref(), features)?;
        if !statements.is_empty() {
            // Rows waiting were written for the table as it is now.
            self.flush_now().await?;
            for statement in &statements {
                tracing::info!(table = %format!("{database}.{name}"), %statement, "changing the table for a new version of the source table");
                self.server()
                    .client
                    .query(statement, &format!("changing {database}.{name}"))
                    .await?;
            }
        }
        let existing = match existing {
            Some(existing) if statements.is_empty() => existing,
            _ => {
                let existing = table::describe(&self.server().client, &database, &name)
                    .await?
                    .ok_or_else(|| {
                        ClickHouseError::Unexpected(format!(
                            "{database}.{name} is missing right after it was created"
                        ))
                    })?;
                // What the server made of the statements (or what another writer made meanwhile).
                let (more, replanned) =
                    table::plan(schema, kind, &database, &name, Some(&existing), features)?;
                if !more.is_empty() {
                    return Err(ClickHouseError::Unexpected(format!(
                        "{database}.{name} still needs {more:?} after it was changed"
                    )));
                }
                layout = replanned;
                existing
            }
        };
        self.tables.insert(name, existing);
        let layout = Some(Arc::new(layout));
        self.layouts
            .entry(cache_key)
            .or_default()
            .push((Arc::clone(schema), layout.clone()));
        Ok(layout)
    }

    async fn truncate(&mut self, layout: &Layout) -> Result<(), ClickHouseError> {
        self.flush_now().await?;
        self.server()
            .client
            .query(
                &format!("TRUNCATE TABLE {}", layout.table),
                &format!("truncating {}", layout.shown),
            )
            .await
            .map(drop)
    }
}

impl ChangeSink for ClickHouseSink {
    type Error = ClickHouseError;

    async fn open(&mut self) -> Result<Option<Offsets>, ClickHouseError> {
        // An insert left running by a failure is finished (or failed) first; either way the
        // offsets read below say what the server holds.
        if let Some(handle) = self.in_flight.take() {
            let _ = handle.await;
        }
        self.buffer = Buffer::default();
        self.last_delete = None;
        self.last_layouts = None;
        self.tables.clear();
        self.layouts.clear();
        let client = connect(&self.config)?;
        let version = server_version(&client).await?;
        let features = Features::of_version(&version);
        let (database, table) = (&self.config.database, &self.config.offsets_table);
        table::create_offsets_table(&client, database, table).await?;
        let stored = table::read_offsets(&client, database, table, &self.config.name).await?;
        tracing::info!(server = %client.base(), %version, partitions = stored.len(), "ClickHouse sink open");
        self.server = Some(Server { client, features });
        self.durable = stored.clone();
        Ok(Some(stored))
    }

    fn applied(&self) -> Option<&Offsets> {
        Some(&self.durable)
    }

    fn resume_from(&mut self, offsets: &Offsets) {
        self.durable = offsets.clone();
    }

    async fn write(&mut self, batch: ChangeBatch<'_>) -> Result<(), ClickHouseError> {
        let mode = self.config.mode;
        let mut dead = Vec::new();
        for sourced in &batch.changes {
            let change = &sourced.change;
            if change.op == Op::Message {
                continue;
            }
            let record = &batch.records[sourced.record];
            let origin = Origin {
                topic: &record.topic,
                partition: record.partition,
                offset: record.record.offset,
            };
            let (current, changelog) = match &self.last_layouts {
                Some((topic, table, current, changelog))
                    if Arc::ptr_eq(table, &change.table) && *topic == record.topic =>
                {
                    (current.clone(), changelog.clone())
                }
                _ => {
                    let current = if mode.current() {
                        self.layout(&record.topic, &change.table, Kind::Current)
                            .await?
                    } else {
                        None
                    };
                    // Tables without a key keep a changelog whatever the mode.
                    let changelog = if mode.changelog() || current.is_none() {
                        self.layout(&record.topic, &change.table, Kind::Changelog)
                            .await?
                    } else {
                        None
                    };
                    self.last_layouts = Some((
                        Arc::clone(&record.topic),
                        Arc::clone(&change.table),
                        current.clone(),
                        changelog.clone(),
                    ));
                    (current, changelog)
                }
            };
            // A key change arrives as a delete of the old key and a create of the new one; the
            // create lacks the unchanged TOASTed values, which are the old row's.
            let lacks_values = change
                .after
                .as_ref()
                .is_some_and(|row| row.iter().any(|v| matches!(v, Value::Unavailable)));
            let from = match self.last_delete.take() {
                Some((topic, before))
                    if change.op == Op::Create && lacks_values && topic == record.topic =>
                {
                    Some(before)
                }
                _ => None,
            };
            if change.op == Op::Delete {
                self.last_delete = Some((
                    Arc::clone(&record.topic),
                    change.before.clone().unwrap_or_default(),
                ));
            }
            let mut rejected = None;
            if let Some(layout) = &current {
                if change.op == Op::Truncate {
                    self.truncate(layout).await?;
                } else if let Err(reason) =
                    self.buffer
                        .current(layout, change, record.record.offset + 1, from.as_deref())
                {
                    rejected = Some(reason);
                }
            }
            if let (Some(layout), None) = (&changelog, &rejected) {
                if let Err(reason) = self.buffer.changelog(layout, change, &origin) {
                    rejected = Some(reason);
                }
            }
            if let Some(reason) = rejected {
                if self.dead_letters.is_none() {
                    return Err(ClickHouseError::Rejected(format!(
                        "{} offset {}: {reason}; set dead_letter_topic to divert such rows and \
                         go on",
                        record.topic, record.record.offset
                    )));
                }
                dead.push(DeadLetter {
                    record: record.clone(),
                    error: reason,
                });
            }
        }
        crate::replica::deliver_dead_letters(self.dead_letters.as_ref(), dead).await?;
        self.buffer.offsets.extend(batch.next_offsets());
        let due = self
            .buffer
            .since
            .is_some_and(|since| since.elapsed() >= self.config.flush_interval());
        // Not right after a delete (unless rows pile up): a key change is a delete and a
        // create read one after the other, and the create's unchanged TOASTed values are
        // looked up by the old key, whose row an insert of the delete would blank.
        let after_delete = self.last_delete.is_some()
            && self.buffer.bytes < 2 * self.config.batch_bytes
            && self
                .buffer
                .since
                .is_none_or(|since| since.elapsed() < 2 * self.config.flush_interval());
        if (self.buffer.bytes >= self.config.batch_bytes || due) && !after_delete {
            self.catching_up |= self.buffer.bytes >= self.config.batch_bytes;
            self.start_flush().await?;
        }
        Ok(())
    }

    /// The runtime found nothing new: rows waiting go in once their interval is up (so that
    /// a trickle of changes makes one insert per interval, not one per change), or at once at
    /// the end of a backlog (waiting would gather nothing more).
    async fn flush(&mut self) -> Result<(), ClickHouseError> {
        if let (Some(since), false) = (self.buffer.since, std::mem::take(&mut self.catching_up)) {
            let wait = self.config.flush_interval().saturating_sub(since.elapsed());
            if wait > Duration::ZERO {
                tokio::time::sleep(wait).await;
            }
        }
        self.flush_now().await
    }

    async fn close(&mut self) -> Result<(), ClickHouseError> {
        if self.server.is_some() {
            self.flush_now().await?;
        }
        Ok(())
    }
}

/// `sluice check --connect`: the server answers, its version, and whether the sink may make
/// its database and offsets table.
pub async fn probe(config: &ClickHouseSinkConfig) -> Result<String, ClickHouseError> {
    let client = connect(config)?;
    let version = server_version(&client).await?;
    table::create_offsets_table(&client, &config.database, &config.offsets_table).await?;
    let features = Features::of_version(&version);
    let note = if features.is_deleted {
        "deleted rows leave FINAL by themselves"
    } else {
        "older than 23.2: query current-state tables with FINAL WHERE _sluice_deleted = 0"
    };
    Ok(format!(
        "ClickHouse {version} at {}; offsets table {}.{} writable; {note}",
        client.base(),
        quote(&config.database),
        quote(&config.offsets_table)
    ))
}

/// `sluice status`: when the sink last stored its offsets for each topic, as the server says.
pub async fn server_status(config: &ClickHouseSinkConfig) -> Result<Vec<String>, ClickHouseError> {
    let client = connect(config)?;
    let version = server_version(&client).await?;
    let stored = table::stored_at(
        &client,
        &config.database,
        &config.offsets_table,
        &config.name,
    )
    .await?;
    let mut lines = vec![format!("ClickHouse {version} at {}", client.base())];
    if stored.is_empty() {
        lines.push("no offsets stored yet".into());
    }
    for (topic, at_us) in stored {
        let mut at = String::new();
        sluice_core::value::write_utc_timestamp(&mut at, at_us as i64);
        lines.push(format!(
            "{topic}: rows up to its offsets last stored at {at}"
        ));
    }
    Ok(lines)
}
