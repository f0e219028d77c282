//! Streaming: pgoutput from the slot, assembled into whole transactions and batches.
//!
//! - Resume: the stream starts at the log's last checkpoint (the end LSN of the last
//!   transaction durable in the log) and skips any transaction whose commit record starts
//!   before it, so each source transaction reaches the log exactly once.
//! - Batches: whole transactions, closed at the first commit after `max_batch_events` events or,
//!   when nothing more has arrived, `max_batch_age` after the batch's first event (so a live
//!   stream waits at most that long, and one catching up fills its batches). Until the stream
//!   has caught up with the WAL the server had when it connected, a batch waits up to
//!   `CATCH_UP_MAX_AGE` for more: a backlog goes out in full batches, not cut wherever the
//!   server paused to decode (which also lets TOAST reads see a key's whole backlog). A transaction larger than `max_batch_events`
//!   goes out in parts without a checkpoint, which the log keeps invisible until the part with
//!   the commit arrives, so memory stays bounded.
//! - Streamed transactions (protocol 2, Postgres 14+, `stream_in_progress`): the server sends a
//!   large transaction in blocks while it runs; they wait on local disk until its commit and
//!   are then read as if the transaction had just arrived whole (`spool.rs`).
//! - Acknowledgement: standby status updates carry `write` = the last commit received and
//!   `flush` = the last commit durable in the log (never beyond), at least every
//!   `status_interval` even when idle, at once when the server asks, and once more at shutdown.
//! - Idle: when nothing captured is pending, the server's keepalives say how far its decoding
//!   has gone (writes to other databases, tables outside the publication). That position goes
//!   to the log as a checkpoint without data (at most once per `status_interval`, at once when
//!   the server asks for a reply) and is confirmed once durable. Without it an idle source
//!   pins WAL forever, and a server shutting down (which waits for its walsenders' clients to
//!   confirm everything sent) cannot stop. The checkpoint goes to the log first so that after
//!   a restart the log is never behind the slot.
//! - Failure: a lost connection is a transient error (the runtime reconnects from the last
//!   durable checkpoint); undecodable data or an unmappable type is definite.

use sluice_core::clock::now_us;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use sluice_core::event::{
    ChangeEvent, Column, LogicalMessage, Op, SnapshotMarker, TableId, TableSchema, TxnInfo,
};
use sluice_core::position::{Lsn, Position};
use tokio::time::Instant;
use tokio_postgres::Client;

use super::catalog::{self, TypeResolver};
use super::decode::{self, PgOutput, RelationMessage};
use super::protocol::{quote_ident, ReplicationMessage, WireConnection};
use super::snapshot::incremental::{
    SnapshotSignal, Window, WindowState, SIGNAL_PREFIX, WATERMARK_PREFIX,
};
use super::text_format::PgType;
use super::PostgresError;

mod rows;
mod spool;
mod toast;
use rows::{push, row, OpenTxn};
use spool::{Replay, Spools};
pub use toast::ToastMode;

/// How long `next_batch` waits for data before returning empty-handed.
const IDLE_TICK: Duration = Duration::from_secs(1);
/// Least time between two status updates sent because a commit became durable.
const ACK_STATUS_SPACING: Duration = Duration::from_millis(100);
/// While catching up with the WAL the server had at connect time, how long a batch waits for
/// more (the server may take a while to decode the next transaction, a large TOASTed one say).
const CATCH_UP_MAX_AGE: Duration = Duration::from_secs(1);

/// A relation as the stream described it, with its decoders.
struct Relation {
    schema: Arc<TableSchema>,
    types: Vec<PgType>,
    captured: bool,
}

/// What the stream needs from the catalog to understand relations.
pub(super) struct RelationContext {
    pub client: Client,
    pub resolver: TypeResolver,
    pub patterns: Vec<String>,
}

/// Batch limits.
#[derive(Debug, Clone, Copy)]
pub(super) struct BatchLimits {
    pub max_events: usize,
    pub max_age: Duration,
}

/// How a stream is opened.
pub(super) struct StreamSettings {
    /// The source's name and slot: signals name the one, watermarks carry the other.
    pub source: String,
    pub slot: String,
    pub publication: String,
    pub limits: BatchLimits,
    pub status_interval: Duration,
    /// Where streamed in-progress transactions wait for their commit; `None`: protocol 1, the
    /// server holds them until then.
    pub spool: Option<std::path::PathBuf>,
}

pub(super) struct Stream {
    conn: WireConnection,
    resume_lsn: Lsn,
    received_lsn: Lsn,
    durable_lsn: Lsn,
    /// How far the server's decoding has gone by its last keepalive: every transaction that
    /// committed before it has been received.
    server_lsn: Lsn,
    /// The highest checkpoint handed to the runtime (durable or on its way).
    handed_lsn: Lsn,
    /// When the last checkpoint without data was handed out.
    idle_checkpoint_at: Instant,
    /// The server asked for a reply while a checkpoint without data is due: answered once the
    /// checkpoint is durable, with it.
    reply_due: bool,
    /// A durable position not yet sent to the server (acknowledged inside the status spacing).
    flush_unsent: bool,
    /// Hand the start position to the log as a checkpoint before anything else: the slot was
    /// just created, and a restart proves it is this source's by that checkpoint.
    claim: bool,
    /// The server's WAL position when the stream connected: until the stream is past it, it is
    /// catching up.
    catch_up_to: Lsn,
    last_status: Instant,
    status_interval: Duration,
    relations: HashMap<u32, Relation>,
    txn: Option<OpenTxn>,
    ready: Vec<ChangeEvent>,
    batch_end: Option<Lsn>,
    batch_started: Option<Instant>,
    limits: BatchLimits,
    /// The source's name and slot: signals name the one, watermarks carry the other.
    source: String,
    slot: String,
    /// The window of the on-demand snapshot's chunk in flight (`snapshot/incremental.rs`).
    pub(super) window: Option<Window>,
    /// Snapshot requests read from the stream, not yet taken by the source.
    pub(super) signals: Vec<SnapshotSignal>,
    /// End the batch now: the stream reached a chunk's high watermark.
    cut: bool,
    /// Streamed in-progress transactions (protocol 2), and the committed one being read back.
    spools: Option<Spools>,
    replay: Option<Replay>,
}

impl Stream {
    /// Starts streaming the slot from `start` (transactions committed at or before it are
    /// skipped).
    pub(super) async fn start(
        mut conn: WireConnection,
        settings: StreamSettings,
        start: Lsn,
    ) -> Result<Stream, PostgresError> {
        let spools = settings.spool.map(Spools::open).transpose()?;
        let system = conn.simple_query("IDENTIFY_SYSTEM").await?;
        let catch_up_to = system
            .first()
            .and_then(|row| row.get(2).cloned().flatten())
            .and_then(|lsn| lsn.parse().ok())
            .unwrap_or(start);
        let protocol = if spools.is_some() {
            "proto_version '2', streaming 'on'"
        } else {
            "proto_version '1'"
        };
        let command = format!(
            "START_REPLICATION SLOT {} LOGICAL {start} ({protocol}, publication_names '{}', messages 'true')",
            quote_ident(&settings.slot),
            quote_ident(&settings.publication).replace('\'', "''"),
        );
        conn.start_replication(&command).await?;
        tracing::info!(
            slot = settings.slot,
            from = %start,
            in_progress_transactions = if spools.is_some() { "streamed" } else { "at commit" },
            "streaming"
        );
        Ok(Stream {
            conn,
            resume_lsn: start,
            received_lsn: start,
            durable_lsn: start,
            server_lsn: start,
            handed_lsn: start,
            idle_checkpoint_at: Instant::now(),
            reply_due: false,
            flush_unsent: false,
            claim: false,
            catch_up_to,
            last_status: Instant::now(),
            status_interval: settings.status_interval,
            relations: HashMap::new(),
            txn: None,
            ready: Vec::new(),
            batch_end: None,
            batch_started: None,
            limits: settings.limits,
            source: settings.source,
            slot: settings.slot,
            window: None,
            signals: Vec::new(),
            cut: false,
            spools,
            replay: None,
        })
    }

    /// Makes the first batch a checkpoint of the start position without data (for a slot just
    /// created: the log then records it as this source's).
    pub(super) fn claim_slot(&mut self) {
        self.claim = true;
    }

    /// The next batch of whole transactions and the end LSN of its last one, or `None` after an
    /// idle tick.
    pub(super) async fn next_batch(
        &mut self,
        ctx: &mut RelationContext,
    ) -> Result<Option<(Vec<ChangeEvent>, Option<Lsn>)>, PostgresError> {
        if std::mem::take(&mut self.claim) {
            return Ok(Some((Vec::new(), Some(self.resume_lsn))));
        }
        let idle_until = Instant::now() + IDLE_TICK;
        loop {
            if std::mem::take(&mut self.cut) {
                if let Some(batch) = self.take_batch() {
                    return Ok(Some(batch));
                }
            }
            let now = Instant::now();
            let open_txn_full = self
                .txn
                .as_ref()
                .is_some_and(|txn| txn.events.len() >= self.limits.max_events);
            if self.batch_started.is_some()
                && (self.ready.len() >= self.limits.max_events || open_txn_full)
            {
                return Ok(self.take_batch());
            }
            if open_txn_full {
                // A transaction larger than a batch goes to the log in parts, committed when
                // its last part arrives; memory stays bounded whatever its size.
                let txn = self.txn.as_mut().expect("checked above");
                if let Some(window) = self.window.as_mut() {
                    window.note(&txn.events);
                }
                txn.emitted += txn.events.len() as u64;
                return Ok(Some((std::mem::take(&mut txn.events), None)));
            }
            if let Some(end) = self.idle_checkpoint(now) {
                return Ok(Some((Vec::new(), Some(end))));
            }
            if now >= self.last_status + self.status_interval
                || (self.flush_unsent && now >= self.last_status + ACK_STATUS_SPACING)
            {
                self.send_status(false).await?;
            }
            if self.replay.is_some() {
                self.replay_next(ctx).await?;
                continue;
            }
            // What has already arrived joins the batch whatever its age (catching up, batches
            // fill); only waiting for more is bounded by the batch's age.
            let max_age = self.max_age();
            let message = match self.conn.try_recv()? {
                Some(message) => message,
                None if self
                    .batch_started
                    .is_some_and(|started| now >= started + max_age) =>
                {
                    return Ok(self.take_batch());
                }
                None => {
                    let mut deadline = match self.batch_started {
                        Some(started) => started + max_age,
                        None => idle_until.min(self.last_status + self.status_interval),
                    };
                    if self.flush_unsent {
                        deadline = deadline.min(self.last_status + ACK_STATUS_SPACING);
                    }
                    match tokio::time::timeout_at(deadline, self.conn.recv()).await {
                        Ok(message) => message?,
                        Err(_) if self.batch_started.is_some() => return Ok(self.take_batch()),
                        Err(_) if Instant::now() >= idle_until => return Ok(None),
                        Err(_) => continue,
                    }
                }
            };
            match message {
                ReplicationMessage::XLogData {
                    wal_start, data, ..
                } => self.received(data, wal_start, ctx).await?,
                ReplicationMessage::Keepalive {
                    wal_end,
                    reply_requested,
                } => {
                    self.server_lsn = self.server_lsn.max(wal_end);
                    if reply_requested {
                        if self.is_idle() && self.server_lsn > self.handed_lsn {
                            // Answered with the checkpoint, once it is durable.
                            self.reply_due = true;
                        } else {
                            self.send_status(false).await?;
                        }
                    }
                }
            }
        }
    }

    /// How long the open batch may wait for more: longer while catching up.
    fn max_age(&self) -> Duration {
        if self.received_lsn.max(self.server_lsn) < self.catch_up_to {
            CATCH_UP_MAX_AGE.max(self.limits.max_age)
        } else {
            self.limits.max_age
        }
    }

    /// A chunk's watermark: opens or closes its window; at the high watermark the batch ends
    /// there, so that the chunk's rows follow exactly what came before it.
    fn watermark(&mut self, body: &[u8], lsn: Lsn) {
        let Some(window) = self.window.as_mut() else {
            return;
        };
        window.watermark(&self.slot, body, lsn);
        if matches!(window.state, WindowState::Closed(_)) {
            self.cut = true;
            if self.batch_end.is_none() {
                self.batch_end = Some(self.durable_lsn.max(self.received_lsn));
            }
            self.batch_started.get_or_insert_with(Instant::now);
        }
    }

    /// A snapshot request, kept for the source when it names this one.
    fn signal(&mut self, body: &[u8]) {
        match serde_json::from_slice::<SnapshotSignal>(body) {
            Ok(signal) if signal.source == self.source => self.signals.push(signal),
            Ok(_) => {}
            Err(err) => tracing::warn!(
                body = %String::from_utf8_lossy(body),
                error = %err,
                "ignored a {SIGNAL_PREFIX} message that is not a snapshot request \
                 ({{\"source\": …, \"snapshot\": [\"schema.table\", …], \"where\": …}})"
            ),
        }
    }

    /// The relation the stream knows for `table`: its schema and column readings.
    pub(super) fn relation_of(&self, table: &TableId) -> Option<(Arc<TableSchema>, Vec<PgType>)> {
        self.relations
            .values()
            .find(|r| r.captured && r.schema.table == *table)
            .map(|r| (Arc::clone(&r.schema), r.types.clone()))
    }

    /// Fills the batch's unchanged TOASTed values (`toast.rs`); returns how many stay
    /// placeholders.
    pub(super) async fn fill_toast(
        &self,
        client: &Client,
        events: &mut [ChangeEvent],
    ) -> Result<u64, PostgresError> {
        toast::fill(client, &self.relations, events).await
    }

    fn take_batch(&mut self) -> Option<(Vec<ChangeEvent>, Option<Lsn>)> {
        self.batch_started = None;
        let end = self.batch_end.take()?;
        self.handed_lsn = self.handed_lsn.max(end);
        Some((std::mem::take(&mut self.ready), Some(end)))
    }

    /// Nothing captured is open, pending or in parts: everything the server sent is handled.
    fn is_idle(&self) -> bool {
        self.txn.is_none() && self.ready.is_empty() && self.batch_started.is_none()
    }

    /// The position to checkpoint without data, when the stream is idle and the server has
    /// moved past the last checkpoint: once per status interval, or at once when the server
    /// waits for a reply (a shutdown waits for exactly this).
    fn idle_checkpoint(&mut self, now: Instant) -> Option<Lsn> {
        let caught_up = self.server_lsn.max(self.received_lsn);
        if !self.is_idle() || caught_up <= self.handed_lsn {
            return None;
        }
        if !self.reply_due && now < self.idle_checkpoint_at + self.status_interval {
            return None;
        }
        self.reply_due = false;
        self.idle_checkpoint_at = now;
        self.handed_lsn = caught_up;
        tracing::trace!(lsn = %caught_up, "idle: checkpointing the server's position");
        Some(caught_up)
    }

    /// Records that the log holds everything up to `lsn`; tells the server soon.
    pub(super) async fn acknowledge(&mut self, lsn: Lsn) -> Result<(), PostgresError> {
        if lsn > self.durable_lsn {
            self.durable_lsn = lsn;
            if self.last_status.elapsed() >= ACK_STATUS_SPACING {
                self.send_status(false).await?;
            } else {
                self.flush_unsent = true;
            }
        }
        Ok(())
    }

    async fn send_status(&mut self, reply_requested: bool) -> Result<(), PostgresError> {
        let write = self.received_lsn.max(self.durable_lsn);
        self.conn
            .send_status(write, self.durable_lsn, reply_requested)
            .await?;
        self.last_status = Instant::now();
        self.flush_unsent = false;
        Ok(())
    }

    /// Sends the final status update (flush = what is durable) and closes the connection.
    pub(super) async fn close(mut self) {
        if let Err(err) = self.send_status(false).await {
            tracing::warn!(error = %err, "final status update failed");
        } else {
            tracing::info!(flush_lsn = %self.durable_lsn, "acknowledged to the server");
        }
        self.conn.close().await;
    }

    /// An XLogData message: a streamed transaction's message goes to its spool, the rest is
    /// handled at once.
    async fn received(
        &mut self,
        data: bytes::Bytes,
        wal_start: Lsn,
        ctx: &mut RelationContext,
    ) -> Result<(), PostgresError> {
        let Some(spools) = self.spools.as_mut() else {
            let message = decode::parse(data)?;
            return self.handle(message, wal_start, ctx).await;
        };
        let (message, xid) = decode::parse_in(data.clone(), spools.in_block())?;
        if let Some(xid) = xid {
            if !matches!(message, PgOutput::Type { .. }) {
                spools.append(xid, wal_start, &data)?;
            }
            return Ok(());
        }
        match message {
            PgOutput::StreamStart { xid, first_segment } => {
                if self.txn.is_some() {
                    return Err(PostgresError::protocol(
                        "a stream block inside a transaction",
                    ));
                }
                spools.start(xid, first_segment)?;
            }
            PgOutput::StreamStop => spools.stop(),
            PgOutput::StreamAbort { xid, subxid } => spools.abort(xid, subxid)?,
            PgOutput::StreamCommit {
                xid,
                commit_lsn,
                end_lsn,
                commit_ts_us,
            } => {
                if self.txn.is_some() {
                    return Err(PostgresError::protocol(
                        "a stream commit inside a transaction",
                    ));
                }
                let replay = spools.commit(xid, end_lsn)?;
                self.txn = Some(OpenTxn::new(xid, commit_ts_us, commit_lsn, self.resume_lsn));
                if commit_lsn < self.resume_lsn {
                    // Already in the log: nothing to read back.
                    drop(replay);
                    self.commit(end_lsn)?;
                } else {
                    self.replay = Some(replay);
                }
            }
            message => self.handle(message, wal_start, ctx).await?,
        }
        Ok(())
    }

    /// Reads back the next message of the committed streamed transaction; at its end, commits
    /// it as if its Commit had just arrived.
    async fn replay_next(&mut self, ctx: &mut RelationContext) -> Result<(), PostgresError> {
        let replay = self.replay.as_mut().expect("called while replaying");
        match replay.next()? {
            Some((wal_start, data)) => {
                let (message, _) = decode::parse_in(data, true)?;
                self.handle(message, wal_start, ctx).await
            }
            None => {
                let end_lsn = replay.end_lsn;
                self.replay = None;
                self.commit(end_lsn)
            }
        }
    }

    /// The open transaction's commit: its events join the batch.
    fn commit(&mut self, end_lsn: Lsn) -> Result<(), PostgresError> {
        let txn = self
            .txn
            .take()
            .ok_or_else(|| PostgresError::protocol("commit without begin"))?;
        self.received_lsn = self.received_lsn.max(end_lsn);
        if txn.skip {
            tracing::debug!(xid = txn.xid, end_lsn = %end_lsn, "skipping a transaction already in the log");
            return Ok(());
        }
        if let Some(window) = self.window.as_mut() {
            window.note(&txn.events);
        }
        if txn.events.is_empty() {
            if txn.emitted > 0 {
                // Its last part went out when it filled a batch exactly: this commit
                // still has to commit those parts, with a checkpoint and no data.
                self.batch_end = Some(end_lsn);
                self.batch_started.get_or_insert_with(Instant::now);
            }
            return Ok(());
        }
        if self.ready.is_empty() {
            self.ready = txn.events;
        } else {
            self.ready.extend(txn.events);
        }
        self.batch_end = Some(end_lsn);
        self.batch_started.get_or_insert_with(Instant::now);
        Ok(())
    }

    async fn handle(
        &mut self,
        message: PgOutput,
        wal_start: Lsn,
        ctx: &mut RelationContext,
    ) -> Result<(), PostgresError> {
        match message {
            PgOutput::Begin {
                final_lsn,
                commit_ts_us,
                xid,
            } => {
                self.txn = Some(OpenTxn::new(xid, commit_ts_us, final_lsn, self.resume_lsn));
            }
            PgOutput::Commit { end_lsn, .. } => self.commit(end_lsn)?,
            PgOutput::Relation(message) => {
                let relation = self.relation(&message, ctx).await?;
                // A streamed transaction's relations are its own (`spool.rs`).
                match self.replay.as_mut() {
                    Some(replay) => replay.relations.insert(message.oid, relation),
                    None => self.relations.insert(message.oid, relation),
                };
            }
            PgOutput::Origin { .. } | PgOutput::Type { .. } => {}
            PgOutput::StreamStart { .. }
            | PgOutput::StreamStop
            | PgOutput::StreamCommit { .. }
            | PgOutput::StreamAbort { .. } => {
                return Err(PostgresError::protocol(
                    "a streamed-transaction message inside a transaction",
                ))
            }
            PgOutput::Insert { relation, new } => {
                let Some((rel, txn)) = self.target(relation)? else {
                    return Ok(());
                };
                let after = row(rel, &new, None)?;
                push(txn, rel, Op::Create, None, false, Some(after), wal_start);
            }
            PgOutput::Update { relation, old, new } => {
                let Some((rel, txn)) = self.target(relation)? else {
                    return Ok(());
                };
                let before = old
                    .as_ref()
                    .map(|old| row(rel, &old.values, None))
                    .transpose()?;
                let after = row(rel, &new, old.as_ref())?;
                let key_only = old.as_ref().is_some_and(|o| o.key_only);
                let key_changed = before.as_ref().is_some_and(|before| {
                    rel.schema.key_columns().any(|(i, _)| before[i] != after[i])
                        && rel.schema.has_key()
                });
                if key_changed {
                    // As Debezium: a key change is a delete of the old key and a create of the new.
                    push(txn, rel, Op::Delete, before, key_only, None, wal_start);
                    push(txn, rel, Op::Create, None, false, Some(after), wal_start);
                } else {
                    push(
                        txn,
                        rel,
                        Op::Update,
                        before,
                        key_only,
                        Some(after),
                        wal_start,
                    );
                }
            }
            PgOutput::Delete { relation, old } => {
                let Some((rel, txn)) = self.target(relation)? else {
                    return Ok(());
                };
                let before = row(rel, &old.values, None)?;
                push(
                    txn,
                    rel,
                    Op::Delete,
                    Some(before),
                    old.key_only,
                    None,
                    wal_start,
                );
            }
            PgOutput::Truncate { relations, .. } => {
                for relation in relations {
                    let Some((rel, txn)) = self.target(relation)? else {
                        continue;
                    };
                    push(txn, rel, Op::Truncate, None, false, None, wal_start);
                }
            }
            PgOutput::Message {
                transactional,
                lsn,
                prefix,
                content,
            } => {
                if prefix == WATERMARK_PREFIX {
                    self.watermark(&content, lsn);
                    return Ok(());
                }
                if prefix == SIGNAL_PREFIX {
                    if !self.txn.as_ref().is_some_and(|txn| txn.skip) {
                        self.signal(&content);
                    }
                    return Ok(());
                }
                let message = LogicalMessage {
                    prefix,
                    content,
                    transactional,
                };
                let mut event = ChangeEvent {
                    op: Op::Message,
                    table: None,
                    before: None,
                    before_is_key_only: false,
                    after: None,
                    snapshot: SnapshotMarker::No,
                    commit_ts_us: now_us(),
                    position: Position::PgLsn(lsn),
                    xid: None,
                    txn: None,
                    message: Some(Box::new(message)),
                };
                match self.txn.as_mut() {
                    Some(txn) if transactional => {
                        if !txn.skip {
                            event.commit_ts_us = txn.commit_ts_us;
                            event.xid = Some(u64::from(txn.xid));
                            event.txn = Some(TxnInfo {
                                id: Arc::clone(&txn.id),
                                total_order: txn.emitted + txn.events.len() as u64 + 1,
                                data_collection_order: 0,
                            });
                            txn.events.push(event);
                        }
                    }
                    // Non-transactional messages are delivered at least once: they carry no
                    // commit to resume after.
                    _ => {
                        self.ready.push(event);
                        self.batch_started.get_or_insert_with(Instant::now);
                        if self.batch_end.is_none() {
                            self.batch_end = Some(self.durable_lsn.max(self.received_lsn));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// The relation and open transaction a data message applies to; `None` when the
    /// transaction is skipped or the table is not captured.
    fn target(
        &mut self,
        relation: u32,
    ) -> Result<Option<(&Relation, &mut OpenTxn)>, PostgresError> {
        let txn = self
            .txn
            .as_mut()
            .ok_or_else(|| PostgresError::protocol("data message outside a transaction"))?;
        if txn.skip {
            return Ok(None);
        }
        let streamed = self
            .replay
            .as_ref()
            .and_then(|r| r.relations.get(&relation));
        let rel = streamed
            .or_else(|| self.relations.get(&relation))
            .ok_or_else(|| {
                PostgresError::protocol(format!(
                    "data for relation {relation} before its description"
                ))
            })?;
        Ok(rel.captured.then_some((rel, txn)))
    }

    /// A relation as a Relation message describes it; its schema version counts on from the
    /// last one the stream saw.
    async fn relation(
        &self,
        message: &RelationMessage,
        ctx: &mut RelationContext,
    ) -> Result<Relation, PostgresError> {
        let id = TableId {
            namespace: message.namespace.clone(),
            name: message.name.clone(),
        };
        if !catalog::table_matches(&ctx.patterns, &id) {
            let schema = Arc::new(TableSchema {
                table: id,
                columns: Vec::new(),
                version: 0,
            });
            return Ok(Relation {
                schema,
                types: Vec::new(),
                captured: false,
            });
        }
        let infos = catalog::relation_columns(&ctx.client, message.oid, &message.columns).await?;
        let has_primary_key = infos.iter().any(|c| c.primary_key);
        let mut columns = Vec::with_capacity(infos.len());
        let mut types = Vec::with_capacity(infos.len());
        for (info, column) in infos.into_iter().zip(&message.columns) {
            let key = if has_primary_key {
                info.primary_key
            } else {
                // REPLICA IDENTITY USING INDEX without a primary key: the index columns are the key.
                message.replica_identity == b'i' && column.identity
            };
            let pg_type = ctx
                .resolver
                .resolve(&ctx.client, info.type_oid, &id, &info.name, &info.type_name)
                .await?;
            columns.push(Column {
                data_type: pg_type.data_type(&info.type_name),
                name: info.name,
                type_name: info.type_name,
                key,
                nullable: !info.not_null,
            });
            types.push(pg_type);
        }
        let previous = self
            .replay
            .as_ref()
            .and_then(|replay| replay.relations.get(&message.oid))
            .or_else(|| self.relations.get(&message.oid));
        let version = match previous {
            Some(previous) if previous.schema.columns == columns => previous.schema.version,
            Some(previous) => {
                tracing::info!(table = %id, version = previous.schema.version + 1, "table schema changed");
                previous.schema.version + 1
            }
            None => 1,
        };
        let schema = Arc::new(TableSchema {
            table: id,
            columns,
            version,
        });
        Ok(Relation {
            schema,
            types,
            captured: true,
        })
    }
}
