//! The MySQL/MariaDB source: a consistent snapshot, then the row binlog, into the log.
//!
//! - `config.rs`: the `[[sources]] kind = "mysql"` section.
//! - `catalog.rs`: flavour, settings and privileges, tables and their columns.
//! - `snapshot.rs`: the initial snapshot in primary-key chunks inside one consistent-snapshot
//!   transaction, at a binlog position read without locking (MariaDB) or under the shortest
//!   global read lock (MySQL); `snapshot/wire.rs`: the snapshot's own protocol connection,
//!   which reads binary rows where they lie in its buffer.
//! - `replication.rs`: the binlog stream (GTID-positioned on MariaDB and MySQL, file and offset
//!   otherwise), whole transactions with their positions; `row_schema.rs`: each row's columns
//!   from the event's own metadata; `ddl.rs`: DDL statements.
//! - `decode.rs`: binlog and snapshot values into sluice's values.
//! - `gtid.rs`: MariaDB GTID lists, MySQL GTID sets, MariaDB GTID events.
//!
//! Both phases run on one producer task that sends units (a transaction, or a snapshot chunk)
//! with the checkpoint after each; `next_batch` groups units into batches that end on unit
//! boundaries, so a batch always ends on a transaction commit.

mod catalog;
pub mod config;
mod ddl;
mod decode;
mod gtid;
pub use gtid::GtidError;
pub use history::UnreadableHistory;
mod history;
mod replication;
mod row_schema;
mod snapshot;

use std::time::Duration;

use bytes::Bytes;
use mysql_async::prelude::Queryable;
use mysql_async::Pool;
use sluice_core::checkpoint::{Checkpoint, SnapshotProgress};
use sluice_core::event::{ChangeEvent, TableId};
use sluice_core::retry::{mysql_errno_class, Classify, ErrorKind, ServerErrorClass};
use sluice_core::source::{Source, SourceBatch};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use self::catalog::TableInfo;
use self::config::{MysqlSourceConfig, SnapshotMode};
use self::history::History;
use self::replication::Unrecorded;
use self::snapshot::incremental::{Incremental, IncrementalState};
use super::tls;

pub use self::catalog::Flavor;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{context}: {source}")]
    Mysql {
        context: String,
        #[source]
        source: mysql_async::Error,
    },
    #[error("the server is not set up for change capture:\n  - {}", .0.join("\n  - "))]
    Setup(Vec<String>),
    #[error(
        "the binlog needed to resume at {position} is gone from the server (purged?): {message}; to fix: set snapshot = \"when_needed\" to take a new snapshot, or recreate the pipeline with a fresh [log] dir"
    )]
    BinlogGone { position: String, message: String },
    #[error("column {column} of {table} {problem}")]
    Value {
        table: String,
        column: String,
        problem: String,
    },
    #[error("a DDL statement touches the captured table {table} and sluice cannot tell what it does to its columns ({problem}): {statement:?}; change the table with plain CREATE/ALTER/DROP/RENAME TABLE, or stop capturing it")]
    UnknownDdl {
        table: String,
        statement: String,
        problem: String,
    },
    #[error("the binlog stream ended")]
    StreamEnded,
    #[error("{source}; the log's topic {topic} is damaged: restore the log from a backup, or start a fresh pipeline")]
    HistoryDamaged {
        topic: String,
        #[source]
        source: history::UnreadableHistory,
    },
    #[error("the source's url cannot be used: {0}")]
    Url(crate::UrlError),
    #[error("TLS to MySQL at {address} failed: {reason}")]
    Tls { address: String, reason: String },
    #[error("the saved binlog position cannot be read: {0}")]
    Gtid(gtid::GtidError),
    #[error("{0}")]
    Other(String),
}

// Not `#[from]`: that would make the error its own cause, printed twice by `{:#}`.
impl From<crate::UrlError> for SourceError {
    fn from(err: crate::UrlError) -> Self {
        SourceError::Url(err)
    }
}

// Not `#[from]`: that would make the error its own cause, printed twice by `{:#}`.
impl From<gtid::GtidError> for SourceError {
    fn from(err: gtid::GtidError) -> Self {
        SourceError::Gtid(err)
    }
}

impl SourceError {
    fn mysql(context: &'static str) -> impl Fn(mysql_async::Error) -> SourceError {
        move |source| SourceError::Mysql {
            context: context.to_owned(),
            source,
        }
    }
}

impl Classify for SourceError {
    fn kind(&self) -> ErrorKind {
        match self {
            SourceError::Mysql { source, .. } => match source {
                mysql_async::Error::Server(server) => match mysql_errno_class(server.code) {
                    ServerErrorClass::Transient => ErrorKind::Transient,
                    _ => ErrorKind::Definite,
                },
                mysql_async::Error::Url(_) => ErrorKind::Definite,
                // A certificate that fails its check fails the same way next time.
                other if tls::failure(other, &Default::default()).is_some() => ErrorKind::Definite,
                _ => ErrorKind::Transient,
            },
            SourceError::StreamEnded => ErrorKind::Transient,
            _ => ErrorKind::Definite,
        }
    }
}

/// A transaction (or snapshot chunk) and the checkpoint right after it.
#[derive(Debug)]
struct Unit {
    events: Vec<ChangeEvent>,
    /// None: a part of a transaction too large for one batch; the unit with its last events
    /// carries the checkpoint that commits it.
    checkpoint: Option<Checkpoint>,
    /// Schema-history records (`history.rs`) that belong with it.
    history: Vec<Bytes>,
    /// Close the batch after this unit instead of waiting up to `max_batch_ms` for more: set
    /// where nothing follows soon (the end of a snapshot), so that it is not held back.
    flush: bool,
}

/// The MySQL/MariaDB source.
pub struct MysqlSource {
    config: MysqlSourceConfig,
    pool: Option<Pool>,
    rx: Option<mpsc::Receiver<Result<Unit, SourceError>>>,
    producer: Option<JoinHandle<()>>,
    /// A unit received but not yet put in a batch.
    carry: Option<Unit>,
    /// The schema history as of the last durable checkpoint (`restore_history`).
    history: History,
}

impl MysqlSource {
    pub fn new(config: MysqlSourceConfig) -> MysqlSource {
        MysqlSource {
            config,
            pool: None,
            rx: None,
            producer: None,
            carry: None,
            history: History::default(),
        }
    }

    async fn pool(&mut self) -> Result<Pool, SourceError> {
        if let Some(pool) = &self.pool {
            return Ok(pool.clone());
        }
        let opts = self.config.opts()?.settled().await?;
        let pool = Pool::new(opts);
        self.pool = Some(pool.clone());
        Ok(pool)
    }

    /// Why the producer's channel closed: it sends its errors before it ends, so a producer
    /// that ended without one panicked (a bug: retrying would hit it again) or was stopped.
    async fn producer_ended(&mut self) -> SourceError {
        match self.producer.take() {
            Some(producer) => match producer.await {
                Err(join) if join.is_panic() => SourceError::Other(format!(
                    "the MySQL reader crashed ({}); this is a bug in sluice: please report it with this log. The log holds everything up to the last checkpoint; restarting resumes from there",
                    sluice_core::task::panic_message(&*join.into_panic())
                )),
                _ => SourceError::StreamEnded,
            },
            None => SourceError::StreamEnded,
        }
    }

    fn stop_producer(&mut self) {
        if let Some(producer) = self.producer.take() {
            producer.abort();
        }
        self.rx = None;
        self.carry = None;
    }
}

/// A failed connection's error: TLS explained when TLS is why.
fn connect_error(err: mysql_async::Error, config: &MysqlSourceConfig) -> SourceError {
    let Ok(url) = config.opts() else {
        return SourceError::mysql("connecting")(err);
    };
    match tls::failure(&err, &url.tls) {
        Some(reason) => SourceError::Tls {
            address: tls::address(&url.opts),
            reason,
        },
        None => SourceError::mysql("connecting")(err),
    }
}

/// Connects and reports the server's settings and privileges (`sluice check --connect`).
pub async fn probe(config: &MysqlSourceConfig) -> Result<String, SourceError> {
    let opts = config.opts()?.settled().await?;
    let mut conn = mysql_async::Conn::new(opts)
        .await
        .map_err(|err| connect_error(err, config))?;
    let server = catalog::server(&mut conn).await?;
    let problems = catalog::problems(&mut conn, &server).await?;
    let tables = catalog::tables(&mut conn, &config.tables).await?;
    let mut problems: Vec<String> = problems.into_iter().map(|p| p.message).collect();
    problems.extend(snapshot::incremental::signal_problems(config, &mut conn).await?);
    let _ = conn.disconnect().await;
    // The snapshot logs in on a connection of its own (fewer auth plugins than mysql_async).
    if let Err(err) = snapshot::check_login(config).await {
        problems.push(format!("the snapshot's connection cannot log in: {err}"));
    }
    if !problems.is_empty() {
        return Err(SourceError::Setup(problems));
    }
    Ok(format!(
        "{} {}; binlog ROW/FULL; GTIDs {}; {} table(s) match",
        match server.flavor {
            Flavor::Mariadb => "MariaDB",
            Flavor::Mysql => "MySQL",
        },
        server.version,
        if server.gtid_mode {
            "on"
        } else {
            "off (file+offset)"
        },
        tables.len()
    ))
}

/// Asks a running (or the next) source for an on-demand snapshot of `tables` (`sluice
/// snapshot`), through its signal table.
pub async fn request_snapshot(
    config: &MysqlSourceConfig,
    tables: &[String],
    filter: Option<&str>,
) -> Result<String, SourceError> {
    snapshot::incremental::request(config, tables, filter).await
}

/// Tables of the catalog that the patterns match now and did not match `before` (the
/// patterns the history last recorded), which the history does not hold: they joined the
/// captured set since the last run. (A table the old patterns matched that the history lacks
/// is created by a statement still to come in the binlog.)
fn joined_tables(catalog: Vec<TableInfo>, before: &[String], history: &History) -> Vec<TableInfo> {
    catalog
        .into_iter()
        .filter(|t| {
            let id = &t.schema.table;
            !catalog::table_matches(before, &id.namespace, &id.name)
                && !history
                    .tables
                    .contains_key(&(id.namespace.clone(), id.name.clone()))
        })
        .collect()
}

/// The producer: snapshot if needed, then the binlog; everything goes to `tx` as units.
async fn produce(
    config: MysqlSourceConfig,
    pool: Pool,
    resume: Option<Checkpoint>,
    history: History,
    tx: mpsc::Sender<Result<Unit, SourceError>>,
) {
    let result = async {
        let mut conn = pool.get_conn().await.map_err(SourceError::mysql("connecting"))?;
        let server = catalog::server(&mut conn).await?;
        let problems = catalog::problems(&mut conn, &server).await?;
        // Only what breaks capture stops the source; the rest is a warning.
        let (fatal, warnings): (Vec<_>, Vec<_>) = problems.into_iter().partition(|p| p.fatal);
        for problem in warnings {
            tracing::warn!(problem = %problem.message, "server setting");
        }
        let fatal: Vec<String> = fatal.into_iter().map(|p| p.message).collect();
        if !fatal.is_empty() {
            return Err(SourceError::Setup(fatal));
        }
        let mut tables = catalog::captured(&mut conn, &config).await?;
        drop(conn);
        let catalog_tables = tables.clone();
        let snapshot_needed = match &resume {
            None => config.snapshot != SnapshotMode::Never,
            Some(checkpoint) => checkpoint.snapshot == SnapshotProgress::InProgress,
        };
        // On-demand snapshots resume where the checkpoint left them.
        let mut incremental = Incremental::new(
            &config,
            resume
                .as_ref()
                .filter(|_| !snapshot_needed)
                .and_then(|checkpoint| checkpoint.snapshot_state.as_ref())
                .and_then(IncrementalState::from_value)
                .unwrap_or_default(),
        );
        // Resuming with a schema history, the tables are as it has them at the checkpoint,
        // which may be behind the catalog (tables since altered, dropped or created). A table
        // it lacks is created by a statement still to come, or read from the catalog at its
        // first row. Otherwise (a snapshot, or a log from before the history) the catalog's
        // definitions are recorded as where the history starts.
        let mut unrecorded = Unrecorded::default();
        if resume.is_some() && !snapshot_needed && !history.tables.is_empty() {
            tables = history
                .tables
                .iter()
                .filter(|((database, table), _)| {
                    catalog::table_matches(&config.tables, database, table)
                })
                .map(|((database, table), (version, def))| {
                    TableInfo::from_def(database, table, *version, def.clone())
                })
                .collect();
            if history.patterns.as_ref() != Some(&config.tables) {
                unrecorded.patterns = Some(config.tables.clone());
                if let Some(before) = &history.patterns {
                    let joined = joined_tables(catalog_tables, before, &history);
                    if !joined.is_empty() {
                        let ids: Vec<TableId> =
                            joined.iter().map(|t| t.schema.table.clone()).collect();
                        tracing::info!(tables = ?ids.iter().map(ToString::to_string).collect::<Vec<_>>(), "tables added to the source's patterns: reading their rows while streaming");
                        incremental.queue(&pool, &ids, None).await?;
                        unrecorded.tables = ids
                            .iter()
                            .map(|id| (id.namespace.clone(), id.name.clone()))
                            .collect();
                        tables.extend(joined);
                    }
                }
            }
        } else {
            unrecorded = Unrecorded {
                tables: tables
                    .iter()
                    .map(|t| (t.schema.table.namespace.clone(), t.schema.table.name.clone()))
                    .collect(),
                patterns: Some(config.tables.clone()),
            };
        }
        if tables.is_empty() {
            tracing::warn!(patterns = ?config.tables, "no table matches the configured patterns yet");
        }
        let start = if snapshot_needed {
            // An interrupted snapshot whose progress the log holds resumes; one without (an
            // older sluice wrote it) starts over.
            let progress = resume.as_ref().and_then(|checkpoint| {
                let state = snapshot::SnapshotState::from_value(checkpoint.snapshot_state.as_ref()?)?;
                Some((state, checkpoint.position.clone()))
            });
            if resume.is_some() && progress.is_none() {
                tracing::warn!("the last run stopped during the initial snapshot and the log does not say how far it got (written by an older sluice); taking it again from the start");
            }
            snapshot::run(&config, &pool, &server, &tables, progress, &tx).await?
        } else {
            let position = match (resume, &config.start_at) {
                (Some(checkpoint), _) => checkpoint.position,
                (None, Some(start)) => start
                    .parse()
                    .map_err(|e| SourceError::Other(format!("start_at: {e}")))?,
                (None, None) => snapshot::current_position(&pool, &server).await?,
            };
            snapshot::StreamStart {
                position,
                binlog: None,
            }
        };
        replication::stream(
            &config,
            &pool,
            &server,
            tables,
            unrecorded,
            start,
            &mut incremental,
            &tx,
        )
        .await
    }
    .await;
    if let Err(err) = result {
        let _ = tx.send(Err(err)).await;
    }
}

impl Source for MysqlSource {
    type Error = SourceError;

    const KEEPS_HISTORY: bool = true;

    fn restore_history(&mut self, records: Vec<Bytes>) -> Result<(), SourceError> {
        self.history = history::fold(&records).map_err(|source| SourceError::HistoryDamaged {
            topic: sluice_core::topic::history_topic(&self.config.name),
            source,
        })?;
        Ok(())
    }

    async fn start(&mut self, resume: Option<Checkpoint>) -> Result<(), SourceError> {
        self.stop_producer();
        let pool = self.pool().await?;
        // Reach the server now, so that an unreachable one (or a failed TLS check) is
        // reported at start.
        let mut conn = pool
            .get_conn()
            .await
            .map_err(|err| connect_error(err, &self.config))?;
        conn.ping()
            .await
            .map_err(SourceError::mysql("connecting"))?;
        drop(conn);
        let (tx, rx) = mpsc::channel(4);
        self.producer = Some(sluice_core::task::spawn_in_span(produce(
            self.config.clone(),
            pool,
            resume,
            self.history.clone(),
            tx,
        )));
        self.rx = Some(rx);
        Ok(())
    }

    async fn next_batch(&mut self) -> Result<Option<SourceBatch>, SourceError> {
        let rx = self.rx.as_mut().expect("started");
        let first = match self.carry.take() {
            Some(unit) => unit,
            None => match tokio::time::timeout(Duration::from_secs(1), rx.recv()).await {
                Err(_) => return Ok(None),
                Ok(None) => return Err(self.producer_ended().await),
                Ok(Some(unit)) => unit?,
            },
        };
        let deadline =
            tokio::time::Instant::now() + Duration::from_millis(self.config.max_batch_ms);
        let mut events = first.events;
        let mut checkpoint = first.checkpoint;
        let mut history = first.history;
        // A part of a large transaction is a batch of its own.
        let mut flush = first.flush || checkpoint.is_none();
        while !flush && events.len() < self.config.max_batch_events {
            // What is already waiting joins the batch whatever its age (catching up, batches
            // fill); only waiting for more is bounded by max_batch_ms.
            let next = match rx.try_recv() {
                Ok(unit) => unit,
                Err(mpsc::error::TryRecvError::Disconnected) => break,
                Err(mpsc::error::TryRecvError::Empty) => {
                    match tokio::time::timeout_at(deadline, rx.recv()).await {
                        Err(_) | Ok(None) => break,
                        Ok(Some(unit)) => unit,
                    }
                }
            };
            match next {
                Ok(unit) if unit.checkpoint.is_none() => {
                    // Whole transactions go first; the part starts the next batch.
                    self.carry = Some(unit);
                    break;
                }
                Ok(unit) => {
                    events.extend(unit.events);
                    checkpoint = unit.checkpoint;
                    history.extend(unit.history);
                    flush = unit.flush;
                }
                Err(err) => {
                    // Deliver what is whole first; the error comes with the next call.
                    let (tx_err, rx_err) = mpsc::channel(1);
                    let _ = tx_err.try_send(Err(err));
                    let old = std::mem::replace(rx, rx_err);
                    drop(old);
                    break;
                }
            }
        }
        Ok(Some(SourceBatch {
            events,
            checkpoint,
            history,
            boundaries: Vec::new(),
        }))
    }

    async fn commit(&mut self, _checkpoint: &Checkpoint) -> Result<(), SourceError> {
        // The server keeps binlogs by age, not by replica acknowledgement: nothing to tell it.
        Ok(())
    }

    async fn shutdown(&mut self) -> Result<(), SourceError> {
        self.stop_producer();
        if let Some(pool) = self.pool.take() {
            let _ = pool.disconnect().await;
        }
        Ok(())
    }
}
