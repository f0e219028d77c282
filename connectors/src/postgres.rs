//! Postgres source: logical replication with pgoutput.
//!
//! Where things happen:
//! - `config`: the `[[sources]] kind = "postgres"` settings and their validation;
//! - `setup`: server checks with fixes (`check --connect` lists them all), publication, slot
//!   (failover slots on Postgres 17+), standbys;
//! - `snapshot`: the initial snapshot, parallel COPY over the slot's exported snapshot;
//! - `replication`: streaming, transaction batching, resume, standby status updates;
//!   `replication/spool.rs`: large transactions the server streams while they run (protocol 2);
//!   `replication/toast.rs`: unchanged TOASTed values filled in;
//! - `snapshot/incremental.rs`: on-demand snapshots between watermarks while streaming;
//! - `commands`: what the CLI asks of a source's server (status, `check --connect`, `snapshot`);
//! - `protocol`: the replication-mode wire protocol; `decode`: pgoutput messages;
//!   `text_format`: value texts into typed values; `binary_format`: binary COPY values (the
//!   snapshot's fast path); `catalog`: tables, columns, types.
//!
//! Lifecycle: `start` reads the log's last checkpoint. Without one (or with a snapshot left
//! unfinished) it creates the slot with an exported snapshot, snapshots, then streams from the
//! slot's consistent point. With one it streams from the checkpoint's LSN. A transient failure
//! (connection lost, server restarting) makes the runtime call `start` again with the last
//! durable checkpoint; definite failures (settings, privileges, a lost slot, an unmappable type)
//! stop the pipeline with what to do.

mod binary_format;
mod catalog;
mod commands;
pub mod config;
mod decode;
mod protocol;
mod replication;
mod setup;
pub mod sink;
mod snapshot;
pub mod text_format;
pub mod tls;

use sluice_core::checkpoint::{Checkpoint, SnapshotProgress};
use sluice_core::event::TableId;
use sluice_core::position::{Lsn, Position};
use sluice_core::retry::{sqlstate_class, Classify, ErrorKind, ServerErrorClass};
use sluice_core::source::{Source, SourceBatch};
use tokio::task::JoinHandle;

pub use self::commands::{probe, request_snapshot, slot_status};
pub use self::config::PostgresSourceConfig;
use self::config::SnapshotMode;
pub use self::protocol::ServerError;
use self::protocol::WireConnection;
pub use self::replication::ToastMode;
use self::replication::{BatchLimits, RelationContext, Stream, StreamSettings};
use self::snapshot::incremental::{Incremental, IncrementalState};
pub use self::snapshot::incremental::{SnapshotSignal, SIGNAL_PREFIX};
use self::snapshot::{SnapshotPhase, SnapshotState};

/// Errors of the Postgres source, classified for retry in [`Classify`].
#[derive(Debug, thiserror::Error)]
pub enum PostgresError {
    #[error("cannot connect to Postgres at {address}: {source}")]
    Connect {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS to Postgres at {address} failed: {reason}")]
    Tls { address: String, reason: String },
    #[error("Postgres rejected user {user}: {reason}")]
    Auth { user: String, reason: String },
    #[error("connection to Postgres lost: {0}")]
    Io(#[source] std::io::Error),
    #[error("Postgres error: {0}")]
    Server(ServerError),
    #[error("Postgres query failed: {}", ErrorText(.0))]
    Query(#[from] tokio_postgres::Error),
    #[error("replication protocol error: {0}")]
    Protocol(String),
    #[error("the server ended the replication stream")]
    StreamEnded,
    #[error(transparent)]
    Decode(#[from] decode::DecodeError),
    #[error("table {table} column {column}: {source}")]
    Value {
        table: String,
        column: String,
        #[source]
        source: text_format::InvalidText,
    },
    #[error(
        "table {table} column {column} has type {type_name}, which sluice cannot map; \
         set unknown_types = \"text\" in the source config to pass it through as text"
    )]
    UnknownType {
        table: String,
        column: String,
        type_name: String,
    },
    #[error("{problem}; to fix: {fix}")]
    Setup { problem: String, fix: String },
    /// Several setup problems at once (`check --connect` names every one).
    #[error("{}", Listed(.0))]
    Problems(Vec<(String, String)>),
    #[error(
        "replication slot {slot} is in use by process {pid}{holder}; to fix: stop the other \
         pipeline or tool reading it, or give this source its own slot with `slot = \"...\"` \
         (a connection of a sluice that died is released within the server's wal_sender_timeout)"
    )]
    SlotInUse {
        slot: String,
        pid: i32,
        holder: String,
    },
}

/// Problems one per line, each with its fix.
struct Listed<'a>(&'a [(String, String)]);

impl std::fmt::Display for Listed<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} problems:", self.0.len())?;
        for (problem, fix) in self.0 {
            write!(f, "\n  - {problem}; to fix: {fix}")?;
        }
        Ok(())
    }
}

/// A tokio-postgres error as an operator needs to read it: the server's message, SQLSTATE,
/// detail and hint when the server answered (tokio-postgres itself prints only "db error"),
/// otherwise the client's reason with its causes (refused, timed out, TLS).
pub(crate) struct ErrorText<'a>(pub &'a tokio_postgres::Error);

impl std::fmt::Display for ErrorText<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(db) = self.0.as_db_error() {
            write!(f, "{} (SQLSTATE {})", db.message(), db.code().code())?;
            if let Some(detail) = db.detail() {
                write!(f, "; detail: {detail}")?;
            }
            if let Some(hint) = db.hint() {
                write!(f, "; hint: {hint}")?;
            }
            return Ok(());
        }
        write!(f, "{}", self.0)?;
        let mut written = self.0.to_string();
        let mut cause = std::error::Error::source(self.0);
        while let Some(inner) = cause {
            let text = inner.to_string();
            if !written.contains(&text) {
                write!(f, ": {text}")?;
                written.push_str(&text);
            }
            cause = inner.source();
        }
        Ok(())
    }
}

impl PostgresError {
    pub(crate) fn protocol(message: impl Into<String>) -> PostgresError {
        PostgresError::Protocol(message.into())
    }
}

/// SQLSTATEs worth retrying: connection trouble, resources, shutdown, a slot still held by a
/// previous connection (`retry::sqlstate_class`).
fn transient_sqlstate(code: &str) -> bool {
    sqlstate_class(code) == ServerErrorClass::Transient
}

impl Classify for PostgresError {
    fn kind(&self) -> ErrorKind {
        match self {
            // A slot in use may be held by the connection of a sluice that just died: the
            // runtime retries a few times at startup, and for good once running.
            PostgresError::Connect { .. }
            | PostgresError::Io(_)
            | PostgresError::StreamEnded
            | PostgresError::SlotInUse { .. } => ErrorKind::Transient,
            PostgresError::Server(error) if transient_sqlstate(&error.code) => ErrorKind::Transient,
            PostgresError::Query(error) => {
                let io = std::error::Error::source(error)
                    .is_some_and(|source| source.is::<std::io::Error>());
                match error.code() {
                    Some(code) if transient_sqlstate(code.code()) => ErrorKind::Transient,
                    None if io || error.is_closed() => ErrorKind::Transient,
                    _ => ErrorKind::Definite,
                }
            }
            _ => ErrorKind::Definite,
        }
    }
}

enum Phase {
    Stopped,
    Snapshot(Box<SnapshotPhase>),
    Streaming(Box<Stream>),
}

/// The Postgres source (see the module docs).
pub struct PostgresSource {
    config: PostgresSourceConfig,
    phase: Phase,
    ctx: Option<RelationContext>,
    catalog_task: Option<JoinHandle<()>>,
    /// When the captured tables were last compared with the catalog (tables created, keys
    /// added or dropped): the publication sluice owns follows them.
    tables_checked: tokio::time::Instant,
    /// When the slot's retained WAL was last checked.
    slot_checked: tokio::time::Instant,
    /// When unresolved TOAST values were last warned about, and how many came since.
    toast_warned: tokio::time::Instant,
    toast_unresolved_since_warning: u64,
    /// On-demand snapshots (`snapshot/incremental.rs`), while streaming.
    incremental: Option<Incremental>,
    /// Their state from the checkpoint a restart resumes at, until streaming begins.
    restored_incremental: Option<IncrementalState>,
    /// Tables that joined the publication at start, to read once streaming.
    joined: Vec<TableId>,
    /// Where streamed in-progress transactions wait for their commit (`with_spool_dir`).
    spool_dir: Option<std::path::PathBuf>,
    /// `server_version_num` of the server, known once started.
    server_version: i32,
    /// The server is a standby (known once started): nothing can be written on it.
    standby: bool,
}

/// How often a streaming source looks for tables that appeared or changed their key.
const TABLES_CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);
/// How often the slot's WAL is compared with what the server lets it keep.
const SLOT_CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_secs(30);

impl PostgresSource {
    /// Builds the source; nothing connects until `start`.
    pub fn new(config: PostgresSourceConfig) -> PostgresSource {
        PostgresSource {
            config,
            phase: Phase::Stopped,
            ctx: None,
            catalog_task: None,
            tables_checked: tokio::time::Instant::now(),
            slot_checked: tokio::time::Instant::now(),
            toast_warned: tokio::time::Instant::now() - std::time::Duration::from_secs(60),
            toast_unresolved_since_warning: 0,
            incremental: None,
            restored_incremental: None,
            joined: Vec::new(),
            spool_dir: None,
            server_version: 0,
            standby: false,
        }
    }

    /// Says what creating a slot on a standby waits for.
    pub(in crate::postgres) fn before_slot_creation(&self) {
        if self.standby {
            tracing::info!(
                "creating the slot on a standby waits for the primary's next running-transactions \
                 record (within ~15 s while the primary is busy; SELECT pg_log_standby_snapshot() \
                 on the primary sends one at once)"
            );
        }
    }

    /// Lets the server stream large transactions while they run (Postgres 14+, unless
    /// `stream_in_progress = false`); they wait in `dir` until they commit.
    pub fn with_spool_dir(mut self, dir: std::path::PathBuf) -> PostgresSource {
        self.spool_dir = Some(dir);
        self
    }

    /// Counts unchanged TOASTed values left as placeholders, with a warning at most once a
    /// minute.
    fn toast_unresolved(&mut self, count: u64) {
        metrics::counter!(sluice_core::metrics::SOURCE_TOAST_UNRESOLVED, "source" => self.config.name.clone())
            .increment(count);
        self.toast_unresolved_since_warning += count;
        if self.toast_warned.elapsed() >= std::time::Duration::from_secs(60) {
            tracing::warn!(
                values = self.toast_unresolved_since_warning,
                "unchanged TOASTed values whose rows changed again before sluice could read \
                 them are emitted as Debezium's placeholder (database sinks keep the stored \
                 value); set REPLICA IDENTITY FULL on the tables where every event must carry \
                 them"
            );
            self.toast_warned = tokio::time::Instant::now();
            self.toast_unresolved_since_warning = 0;
        }
    }

    /// While streaming, every `TABLES_CHECK_INTERVAL`, the publication sluice owns follows
    /// the tables (see `setup::follow_tables`).
    async fn check_tables_now(&mut self) -> Result<(), PostgresError> {
        if self.config.publication.is_some()
            || self.tables_checked.elapsed() < TABLES_CHECK_INTERVAL
        {
            return Ok(());
        }
        self.tables_checked = tokio::time::Instant::now();
        if let Some(ctx) = self.ctx.as_ref() {
            let joined = setup::follow_tables(&ctx.client, &self.config).await?;
            self.joined.extend(joined);
        }
        Ok(())
    }

    /// While streaming, every `SLOT_CHECK_INTERVAL`: how much WAL the slot holds and how much
    /// more the server allows (`max_slot_wal_keep_size`), as metrics, with a warning as it runs
    /// out (the server then invalidates the slot, and a new snapshot is the only way back).
    async fn check_slot_now(&mut self) -> Result<(), PostgresError> {
        if self.slot_checked.elapsed() < SLOT_CHECK_INTERVAL {
            return Ok(());
        }
        self.slot_checked = tokio::time::Instant::now();
        let Some(ctx) = self.ctx.as_ref() else {
            return Ok(());
        };
        let slot = self.config.slot_name();
        let Some(wal) = setup::slot_wal(&ctx.client, &slot).await? else {
            return Ok(());
        };
        let source = self.config.name.clone();
        if let Some(retained) = wal.retained_bytes {
            metrics::gauge!(sluice_core::metrics::SLOT_RETAINED_WAL_BYTES, "source" => source.clone())
                .set(retained as f64);
        }
        if let Some(safe) = wal.safe_bytes {
            metrics::gauge!(sluice_core::metrics::SLOT_SAFE_WAL_BYTES, "source" => source)
                .set(safe as f64);
        }
        let running_out = match (wal.safe_bytes, wal.retained_bytes) {
            (Some(safe), Some(retained)) => safe < (safe + retained) / 4,
            _ => false,
        };
        if running_out || matches!(wal.wal_status.as_deref(), Some("unreserved" | "lost")) {
            tracing::warn!(
                %slot,
                wal_status = wal.wal_status.as_deref().unwrap_or("-"),
                retained_bytes = wal.retained_bytes.unwrap_or(0),
                safe_bytes = wal.safe_bytes.unwrap_or(0),
                "the replication slot is close to the WAL the server lets it keep \
                 (max_slot_wal_keep_size): once past it the server invalidates the slot and \
                 only a new snapshot recovers; check why sluice falls behind (status, lag)"
            );
        }
        Ok(())
    }

    fn dbname(&self) -> String {
        self.config
            .connect_params()
            .map(|p| p.dbname)
            .unwrap_or_default()
    }

    fn limits(&self) -> BatchLimits {
        BatchLimits {
            max_events: self.config.max_batch_events,
            max_age: self.config.max_batch_age(),
        }
    }

    fn connect_params(&self) -> Result<protocol::ConnectParams, PostgresError> {
        self.config
            .connect_params()
            .map_err(|problem| PostgresError::Setup {
                problem: problem.0,
                fix: "correct the source url".into(),
            })
    }

    async fn connect_replication(&self) -> Result<WireConnection, PostgresError> {
        let conn = WireConnection::connect(&self.connect_params()?).await?;
        conn.limit_receive_buffer(REPLICATION_RECEIVE_BUFFER)?;
        Ok(conn)
    }
}

/// The replication connection's socket receive buffer. The walsender flushes its socket after
/// every change it decodes, one `send` per row while the socket has room; a small window fills
/// while sluice works on a batch, so the walsender's output waits and goes out in larger
/// writes. Measured on 1M rows streamed into Kafka: the walsender's system time 3.0-3.1 s ->
/// 2.1-2.4 s, end to end 7.4-8.2 s -> 7.0-7.1 s; streaming into the log alone unchanged.
const REPLICATION_RECEIVE_BUFFER: usize = 64 * 1024;

impl Source for PostgresSource {
    type Error = PostgresError;

    async fn start(&mut self, resume: Option<Checkpoint>) -> Result<(), PostgresError> {
        self.shutdown().await?;
        let (client, task) = connect_catalog(&self.config).await?;
        self.catalog_task = Some(task);
        let server = setup::check_server(&client).await?;
        self.server_version = server.version_num;
        self.standby = server.standby;
        if self.config.failover_slot && server.version_num < 170_000 {
            return Err(PostgresError::Setup {
                problem: format!(
                    "failover_slot = true, but failover slots need Postgres 17 (the server runs {})",
                    server.version_num
                ),
                fix: "set failover_slot = false, or upgrade the primary".into(),
            });
        }
        if server.standby {
            tracing::info!("the server is a standby: reading its WAL (publication and slot as on a primary; no writes)");
        }
        let (tables, joined) = setup::publish_tables(&client, &self.config, server.standby).await?;
        for table in &joined {
            tracing::info!(%table, "table added to the source since the last run; an on-demand snapshot reads its rows once streaming");
        }
        self.joined = joined;
        self.restored_incremental = resume
            .as_ref()
            .filter(|c| c.snapshot == SnapshotProgress::Done)
            .and_then(|c| c.snapshot_state.as_ref())
            .and_then(IncrementalState::from_value);
        self.tables_checked = tokio::time::Instant::now();
        let slot_name = self.config.slot_name();
        let slot = setup::slot_state(&client, &slot_name).await?;
        self.ctx = Some(RelationContext {
            client,
            resolver: catalog::TypeResolver::new(self.config.unknown_types),
            patterns: self.config.tables.clone(),
        });

        let resume_lsn =
            match &resume {
                Some(Checkpoint {
                    position: Position::PgLsn(lsn),
                    snapshot: SnapshotProgress::Done,
                    ..
                }) => Some(*lsn),
                Some(Checkpoint {
                    position: Position::PgLsn(_),
                    snapshot: SnapshotProgress::InProgress,
                    ..
                }) => None,
                Some(Checkpoint { position, .. }) => return Err(PostgresError::Setup {
                    problem: format!(
                    "the log's checkpoint for this source is {position}, not a Postgres position"
                ),
                    fix: "give this source a new name, or point [log] dir at this source's own log"
                        .into(),
                }),
                None => None,
            };
        if let Some(state) = &slot {
            setup::check_slot_database(&slot_name, state, &self.dbname())?;
            if let Some(pid) = state.active_pid {
                let client = &self.ctx.as_ref().expect("set above").client;
                return Err(setup::slot_in_use(client, &slot_name, pid).await);
            }
        }
        let snapshot_mode = self.config.snapshot;
        let start_lsn = match (resume_lsn, &slot) {
            (None, Some(state)) => {
                // Ours only if the log recorded beginning a snapshot at this very slot's
                // consistent point (which its confirmed_flush_lsn stays at until streaming).
                let snapshot_began_here = matches!(
                    &resume,
                    Some(Checkpoint {
                        position: Position::PgLsn(began),
                        snapshot: SnapshotProgress::InProgress,
                    ..
                }) if state.confirmed_flush == Some(*began)
                );
                if self.config.adopt_slot && resume.is_none() && state.lost() {
                    return Err(setup::slot_lost(&slot_name, state.confirmed_flush));
                }
                if self.config.adopt_slot && resume.is_none() {
                    let start = state.confirmed_flush.unwrap_or_default();
                    tracing::info!(slot = %slot_name, from = %start, "adopting the existing slot (adopt_slot = true)");
                    let conn = self.connect_replication().await?;
                    self.stream_from(conn, start).await?;
                    if let Phase::Streaming(stream) = &mut self.phase {
                        stream.claim_slot();
                    }
                    return Ok(());
                }
                if !snapshot_began_here {
                    return Err(setup::foreign_slot(&slot_name, state, None));
                }
                let progress = resume
                    .as_ref()
                    .and_then(|c| c.snapshot_state.as_ref())
                    .and_then(SnapshotState::from_value)
                    // A snapshot resumes on its slot's WAL; an invalidated slot has none.
                    .filter(|_| !state.lost());
                if let (Some(progress), Some(began)) = (progress, state.confirmed_flush) {
                    tracing::info!(slot = %slot_name, "the last run stopped during the initial snapshot; resuming it on its slot");
                    return self
                        .begin_snapshot(server.version_num, &tables, Some((progress, began)))
                        .await;
                }
                tracing::warn!("the last run stopped during the initial snapshot and the log does not say how far it got (written by an older sluice); taking it again from the start");
                let client = &self.ctx.as_ref().expect("set above").client;
                // No committed stream position depends on this slot: start it over.
                setup::drop_slot(client, &slot_name).await?;
                return self.begin_snapshot(server.version_num, &tables, None).await;
            }
            (None, None) if snapshot_mode != SnapshotMode::Never || resume.is_some() => {
                if resume.is_some() {
                    tracing::warn!(slot = %slot_name, "the last run stopped during the initial snapshot and its slot is gone; taking it again from the start (rows it had read stay in the log)");
                }
                return self.begin_snapshot(server.version_num, &tables, None).await;
            }
            (None, None) => {
                let mut conn = self.connect_replication().await?;
                self.before_slot_creation();
                let created =
                    setup::create_slot(&mut conn, &slot_name, false, self.config.failover_slot)
                        .await?;
                self.stream_from(conn, created.consistent_point).await?;
                if let Phase::Streaming(stream) = &mut self.phase {
                    // The log records the slot as this source's before anything else happens.
                    stream.claim_slot();
                }
                return Ok(());
            }
            (Some(lsn), None) => {
                if snapshot_mode == SnapshotMode::WhenNeeded {
                    tracing::warn!(slot = %slot_name, "replication slot is gone; taking a new snapshot (snapshot = when_needed)");
                    return self.begin_snapshot(server.version_num, &tables, None).await;
                }
                return Err(PostgresError::Setup {
                    problem: format!("replication slot {slot_name} does not exist, so changes after {lsn} may be lost"),
                    fix: "set snapshot = \"when_needed\" to take a new snapshot, or recreate the pipeline with a fresh [log] dir".into(),
                });
            }
            (Some(lsn), Some(state)) if state.lost() => {
                if snapshot_mode == SnapshotMode::WhenNeeded {
                    tracing::warn!(slot = %slot_name, "the server invalidated the replication slot (max_slot_wal_keep_size); dropping it and taking a new snapshot (snapshot = when_needed)");
                    let client = &self.ctx.as_ref().expect("set above").client;
                    setup::drop_slot(client, &slot_name).await?;
                    return self.begin_snapshot(server.version_num, &tables, None).await;
                }
                return Err(setup::slot_lost(&slot_name, Some(lsn)));
            }
            (Some(lsn), Some(state)) => {
                if state.plugin.as_deref() != Some("pgoutput") {
                    return Err(PostgresError::Setup {
                        problem: format!(
                            "replication slot {slot_name} uses plugin {:?}, not pgoutput",
                            state.plugin
                        ),
                        fix: "name another slot with `slot =`; sluice does not drop slots it did not create".into(),
                    });
                }
                if state
                    .confirmed_flush
                    .is_some_and(|confirmed| confirmed > lsn)
                {
                    // sluice confirms only what its log holds, so its own slot is never ahead.
                    return Err(setup::foreign_slot(&slot_name, state, Some(lsn)));
                }
                if self.config.failover_slot && state.failover == Some(false) {
                    let mut conn = self.connect_replication().await?;
                    setup::enable_failover(&mut conn, &slot_name).await?;
                    conn.close().await;
                }
                lsn
            }
        };
        let conn = self.connect_replication().await?;
        self.stream_from(conn, start_lsn).await
    }

    async fn next_batch(&mut self) -> Result<Option<SourceBatch>, PostgresError> {
        match &mut self.phase {
            Phase::Stopped => Err(PostgresError::protocol("next_batch before start")),
            Phase::Snapshot(_) => self.next_snapshot_batch().await,
            Phase::Streaming(_) => {
                self.check_tables_now().await?;
                self.check_slot_now().await?;
                self.next_chunk().await?;
                let Phase::Streaming(stream) = &mut self.phase else {
                    unreachable!("matched above")
                };
                let ctx = self.ctx.as_mut().expect("catalog connected in start");
                let mut batch = stream.next_batch(ctx).await?;
                if let (Some((events, _)), ToastMode::Fetch) = (&mut batch, self.config.toast) {
                    let unresolved = stream.fill_toast(&ctx.client, events).await?;
                    if unresolved > 0 {
                        self.toast_unresolved(unresolved);
                    }
                }
                if let Some((events, _)) = &mut batch {
                    self.chunk_rows_into(events);
                }
                self.take_signals().await?;
                let state = self
                    .incremental
                    .as_ref()
                    .and_then(Incremental::checkpoint_state);
                Ok(batch.map(|(events, end)| {
                    SourceBatch::new(
                        events,
                        end.map(|end| Checkpoint {
                            position: Position::PgLsn(end),
                            snapshot: SnapshotProgress::Done,
                            snapshot_state: state,
                        }),
                    )
                }))
            }
        }
    }

    async fn commit(&mut self, checkpoint: &Checkpoint) -> Result<(), PostgresError> {
        if let (Phase::Streaming(stream), Position::PgLsn(lsn), SnapshotProgress::Done) =
            (&mut self.phase, &checkpoint.position, checkpoint.snapshot)
        {
            stream.acknowledge(*lsn).await?;
        }
        Ok(())
    }

    async fn shutdown(&mut self) -> Result<(), PostgresError> {
        match std::mem::replace(&mut self.phase, Phase::Stopped) {
            Phase::Streaming(stream) => stream.close().await,
            Phase::Snapshot(phase) => {
                if let Some(conn) = phase.conn {
                    conn.close().await;
                }
            }
            Phase::Stopped => {}
        }
        self.ctx = None;
        if let Some(task) = self.catalog_task.take() {
            task.abort();
        }
        Ok(())
    }
}

impl PostgresSource {
    async fn stream_from(&mut self, conn: WireConnection, start: Lsn) -> Result<(), PostgresError> {
        let stream = Stream::start(conn, self.stream_settings(), start).await?;
        self.streaming(stream);
        Ok(())
    }

    /// How this source's stream is opened: protocol 2 (in-progress transactions streamed to a
    /// spool) on Postgres 14+ unless `stream_in_progress = false`, or when sluice runs it
    /// without a log directory to spool in.
    fn stream_settings(&self) -> StreamSettings {
        let spool = match &self.spool_dir {
            Some(dir) if self.config.stream_in_progress && self.server_version >= 140_000 => {
                Some(dir.clone())
            }
            _ => None,
        };
        StreamSettings {
            source: self.config.name.clone(),
            slot: self.config.slot_name(),
            publication: self.config.publication_name(),
            limits: self.limits(),
            status_interval: std::time::Duration::from_secs(self.config.status_interval_s),
            spool,
        }
    }

    /// Streams from now on, with on-demand snapshots resumed where the checkpoint left them.
    fn streaming(&mut self, stream: Stream) {
        self.phase = Phase::Streaming(Box::new(stream));
        let state = self.restored_incremental.take().unwrap_or_default();
        self.incremental = Some(Incremental::new(
            self.config.slot_name(),
            self.config.max_batch_events,
            state,
        ));
    }
}

/// An ordinary connection for catalog queries, its connection task running in the background.
pub(in crate::postgres) async fn connect_catalog(
    config: &PostgresSourceConfig,
) -> Result<(tokio_postgres::Client, JoinHandle<()>), PostgresError> {
    let setup = |problem: String| PostgresError::Setup {
        problem,
        fix: "correct the source url".into(),
    };
    let (pg_config, tls) = config.pg_config().map_err(|problem| setup(problem.0))?;
    let connector = tls.connector().map_err(|e| setup(e.to_string()))?;
    let connected = pg_config.connect(connector).await;
    if let Err(err) = &connected {
        if let Some(reason) = tls::connect_failure(err, &pg_config, &tls).await {
            let address = config
                .connect_params()
                .map(|p| format!("{}:{}", p.host, p.port))
                .unwrap_or_default();
            return Err(PostgresError::Tls { address, reason });
        }
    }
    let (client, connection) = connected.map_err(|err| {
        if err.as_db_error().is_some() {
            return PostgresError::Query(err);
        }
        let address = config
            .connect_params()
            .map(|p| format!("{}:{}", p.host, p.port))
            .unwrap_or_default();
        // tokio-postgres keeps the reason (refused, timed out) in its source chain.
        let mut reason = err.to_string();
        let mut cause = std::error::Error::source(&err);
        while let Some(inner) = cause {
            let inner_text = inner.to_string();
            if !reason.contains(&inner_text) {
                reason = format!("{reason}: {inner_text}");
            }
            cause = inner.source();
        }
        PostgresError::Connect {
            address,
            source: std::io::Error::other(reason),
        }
    })?;
    let task = sluice_core::task::spawn_in_span(async move {
        if let Err(err) = connection.await {
            tracing::debug!(error = %err, "catalog connection ended");
        }
    });
    Ok((client, task))
}
