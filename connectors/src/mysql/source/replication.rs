//! The binlog stream: row events of captured tables into change events, grouped into whole
//! transactions (GTID … XID/COMMIT), each sent with the position right after it.
//!
//! Resuming: on MariaDB the connection sets `@mariadb_slave_capability=4` and
//! `@slave_connect_state` to the GTID list of the last transaction in the log, and the server
//! sends what follows; on MySQL with GTIDs the request carries the executed GTID set; without
//! GTIDs it starts at the binlog file and offset after the last transaction.
//!
//! Table schemas come from the catalog and are re-read when a DDL statement touches a captured
//! table (CREATE, ALTER, DROP, RENAME, TRUNCATE TABLE); a statement that mentions a captured
//! table and is none of those stops the source, quoting it.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use mysql_async::binlog::events::{Event, EventData};
use mysql_async::binlog::BinlogChecksumAlg;
use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStreamRequest, Pool, Sid, Value as My};
use sluice_core::checkpoint::{Checkpoint, SnapshotProgress};
use sluice_core::event::{ChangeEvent, Op, SnapshotMarker, TxnInfo};
use sluice_core::position::Position;
use sluice_core::value::Value;
use tokio::sync::mpsc;

use super::catalog::{self, Server, TableInfo};
use super::config::{MysqlSourceConfig, SnapshotMode};
use super::decode::{convert, Origin};
use super::gtid::{MariadbGtidList, MysqlGtidSet};
use super::history::{HistoryRecord, TableEntry};
use super::snapshot::incremental::{Coord, Incremental};
use super::snapshot::{self, StreamStart};
use super::{ddl, row_schema, SourceError, Unit};

mod cursor;
use cursor::{gtid_of, mysql_sids, Cursor, Gtid};

/// How long the stream waits for an event before on-demand snapshot work goes on without one.
const IDLE_TICK: std::time::Duration = std::time::Duration::from_millis(100);

/// How long an on-demand snapshot chunk waits for a moment with no binlog event waiting
/// before it is read anyway, at the next transaction boundary. A stream that is always behind
/// (a backlog after a restart, a writer faster than the source for a while) has no such
/// moment, and the snapshot would never move; reading a chunk then pins it to a binlog
/// position ahead of the stream, and the chunk waits until the stream gets there.
const CHUNK_WAIT: std::time::Duration = std::time::Duration::from_millis(100);

/// The transaction being read.
#[derive(Default)]
struct Open {
    events: Vec<ChangeEvent>,
    /// Schema-history records of the DDL in this transaction.
    history: Vec<Bytes>,
    /// `domain-server-seq` or `uuid:n`, applied to the cursor at commit.
    gtid: Option<Gtid>,
    /// Events already sent ahead in parts (a transaction larger than `max_batch_events`),
    /// and the id they were sent with.
    sent: u64,
    sent_id: Option<Arc<str>>,
}

/// Streams from `start` until an error; sends units to `tx`.
#[allow(clippy::too_many_arguments)]
pub(super) async fn stream(
    config: &MysqlSourceConfig,
    pool: &Pool,
    server: &Server,
    tables: Vec<TableInfo>,
    unrecorded: Unrecorded,
    start: StreamStart,
    incremental: &mut Incremental,
    tx: &mpsc::Sender<Result<Unit, SourceError>>,
) -> Result<(), SourceError> {
    let StreamStart {
        mut position,
        mut binlog,
    } = start;
    let by_key = |tables: Vec<TableInfo>| -> HashMap<(String, String), TableInfo> {
        tables
            .into_iter()
            .map(|t| {
                (
                    (
                        t.schema.table.namespace.clone(),
                        t.schema.table.name.clone(),
                    ),
                    t,
                )
            })
            .collect()
    };
    let mut tables = by_key(tables);
    let mut unrecorded = unrecorded;
    loop {
        let state = incremental.checkpoint_state();
        if !record_definitions(&tables, &unrecorded, &position, state, tx).await {
            return Ok(());
        }
        // The binlog coordinates are only good for the first connection: later ones resume from
        // wherever the stream got to.
        let at = binlog.take();
        match stream_from(config, pool, &mut tables, &position, at, incremental, tx).await {
            Err(SourceError::BinlogGone {
                position: at,
                message,
            }) if config.snapshot == SnapshotMode::WhenNeeded => {
                tracing::warn!(position = %at, %message, "the binlog to resume from is gone; taking a new snapshot (snapshot = \"when_needed\")");
                let fresh: Vec<TableInfo> = {
                    let mut conn = pool
                        .get_conn()
                        .await
                        .map_err(SourceError::mysql("connecting"))?;
                    catalog::captured(&mut conn, config).await?
                };
                incremental.clear();
                StreamStart { position, binlog } =
                    snapshot::run(config, pool, server, &fresh, None, tx).await?;
                tables = by_key(fresh);
                unrecorded = Unrecorded {
                    tables: tables.keys().cloned().collect(),
                    patterns: Some(config.tables.clone()),
                };
            }
            other => return other,
        }
    }
}

/// What the schema history does not hold yet when streaming starts.
#[derive(Debug, Default)]
pub(super) struct Unrecorded {
    /// Tables whose definitions (as the catalog has them) are to be recorded.
    pub tables: Vec<(String, String)>,
    /// The source's patterns, when they are new to the history.
    pub patterns: Option<Vec<String>>,
}

/// Records what is `unrecorded` in the schema history, at `position` (where streaming
/// starts). False when the source stopped listening.
async fn record_definitions(
    tables: &HashMap<(String, String), TableInfo>,
    unrecorded: &Unrecorded,
    position: &Position,
    snapshot_state: Option<serde_json::Value>,
    tx: &mpsc::Sender<Result<Unit, SourceError>>,
) -> bool {
    let mut entries: Vec<TableEntry> = unrecorded
        .tables
        .iter()
        .filter_map(|key| tables.get(key))
        .map(TableEntry::defined)
        .collect();
    if entries.is_empty() && unrecorded.patterns.is_none() {
        return true;
    }
    entries.sort_by(|a, b| (&a.database, &a.table).cmp(&(&b.database, &b.table)));
    let record = HistoryRecord {
        position: position.to_string(),
        statement: None,
        tables: entries,
        patterns: unrecorded.patterns.clone(),
    };
    let unit = Unit {
        events: Vec::new(),
        checkpoint: Some(Checkpoint {
            position: position.clone(),
            snapshot: SnapshotProgress::Done,
            snapshot_state,
        }),
        history: vec![record.to_bytes()],
        flush: true,
    };
    tx.send(Ok(unit)).await.is_ok()
}

async fn stream_from(
    config: &MysqlSourceConfig,
    pool: &Pool,
    tables: &mut HashMap<(String, String), TableInfo>,
    position: &Position,
    at: Option<(Arc<str>, u64)>,
    incremental: &mut Incremental,
    tx: &mpsc::Sender<Result<Unit, SourceError>>,
) -> Result<(), SourceError> {
    let mut conn = pool
        .get_conn()
        .await
        .map_err(SourceError::mysql("connecting"))?;
    // Heartbeats every second keep an idle stream's connection alive and its failure
    // visible, and tell an idle stream where the binlog ends (on-demand snapshots wait for it).
    conn.query_drop("SET @master_heartbeat_period = 1000000000")
        .await
        .map_err(SourceError::mysql("setting the heartbeat"))?;
    let mut cursor;
    let request = BinlogStreamRequest::new(config.server_id);
    let sids: Vec<Sid<'static>>;
    let request = match position {
        Position::MariadbGtidList(list) => {
            let list = MariadbGtidList::parse(list)?;
            // Capability 4: the server sends GTID events, which move the cursor.
            conn.query_drop("SET @mariadb_slave_capability = 4")
                .await
                .map_err(SourceError::mysql("preparing the binlog stream"))?;
            let connect_state = list.to_string();
            cursor = Cursor::Mariadb(list);
            match &at {
                Some((file, offset)) => request.with_filename(file.as_bytes()).with_pos(*offset),
                None => {
                    conn.exec_drop("SET @slave_connect_state = ?", (connect_state,))
                        .await
                        .map_err(SourceError::mysql("preparing the binlog stream"))?;
                    conn.query_drop(
                        "SET @slave_gtid_strict_mode = 0, @slave_gtid_ignore_duplicates = 0",
                    )
                    .await
                    .map_err(SourceError::mysql("preparing the binlog stream"))?;
                    request
                }
            }
        }
        Position::MysqlGtidSet(set) => {
            let parsed = MysqlGtidSet::parse(set)?;
            cursor = Cursor::Mysql(parsed);
            match &at {
                Some((file, offset)) => request.with_filename(file.as_bytes()).with_pos(*offset),
                None => {
                    sids = mysql_sids(set)?;
                    request.with_gtid().with_gtid_set(sids.clone())
                }
            }
        }
        Position::BinlogFile { file, offset } => {
            cursor = Cursor::File {
                file: file.to_string(),
                offset: *offset,
            };
            request
                .with_filename(file.as_bytes())
                .with_pos(*offset)
        }
        Position::PgLsn(_) | Position::KafkaOffsets(_) => {
            return Err(SourceError::Other(format!(
                "the log's checkpoint {position} is not a MySQL position; this source reads MySQL: use a fresh [log] dir or another source name"
            )))
        }
    };
    let mut stream = conn
        .get_binlog_stream(request)
        .await
        .map_err(SourceError::mysql("starting the binlog stream"))?;
    match &at {
        Some((file, offset)) => {
            tracing::info!(%position, %file, offset, "streaming the binlog")
        }
        None => tracing::info!(%position, "streaming the binlog"),
    }
    // Shared by the positions of the file's events (cloning it does not allocate).
    let mut current_file: Arc<str> = match (&cursor, &at) {
        (Cursor::File { file, .. }, _) => file.as_str().into(),
        (_, Some((file, _))) => Arc::clone(file),
        _ => "".into(),
    };
    let mut open: Option<Open> = None;
    // The last rotate was the one the server sends first (its file name to be checked).
    let mut fake_rotate: Option<Vec<u8>> = None;
    // The end of the last event read: where the stream stands in the binlog.
    let mut processed: Option<Coord> = None;
    // An event read ahead while checking whether one was waiting.
    let mut ready = None;
    // Since when a chunk could be read but events kept waiting.
    let mut chunk_waiting: Option<std::time::Instant> = None;
    loop {
        // Between transactions: an on-demand snapshot chunk goes to the log when the stream
        // is at its position, and the next is read when no event is waiting.
        if let (None, Some(here)) = (&open, &processed) {
            if incremental.has_work() {
                if let Some(events) = incremental.take_due(here, tables, &cursor.position()) {
                    if !send_chunk(events, &cursor, incremental, tx).await {
                        return Ok(());
                    }
                }
                if ready.is_none() && incremental.can_read() {
                    let waited_enough =
                        chunk_waiting.is_some_and(|since| since.elapsed() >= CHUNK_WAIT);
                    match (!waited_enough)
                        .then(|| stream.next().now_or_never())
                        .flatten()
                    {
                        Some(next) => {
                            chunk_waiting.get_or_insert_with(std::time::Instant::now);
                            ready = Some(next);
                        }
                        None => {
                            chunk_waiting = None;
                            incremental.read_chunk(config, tables, here).await?;
                            continue;
                        }
                    }
                }
            }
        }
        let next = match ready.take() {
            Some(next) => next,
            None if incremental.has_work() => {
                match tokio::time::timeout(IDLE_TICK, stream.next()).await {
                    Ok(next) => next,
                    Err(_) => continue,
                }
            }
            None => stream.next().await,
        };
        let Some(event) = next else { break };
        let event = event.map_err(|err| match err {
            mysql_async::Error::Server(server_err) if server_err.code == 1236 => {
                SourceError::BinlogGone {
                    position: position.to_string(),
                    message: server_err.message,
                }
            }
            other => SourceError::Mysql {
                context: "reading the binlog".into(),
                source: other,
            },
        })?;
        let header = event.header();
        let ts_us = i64::from(header.timestamp()) * 1_000_000;
        // (A format description starts a file, and the first one comes before the name of
        // the file is known for sure.)
        if header.log_pos() > 0 && header.event_type_raw() != 15 {
            let here = Coord {
                file: Arc::clone(&current_file),
                offset: u64::from(header.log_pos()),
            };
            if processed.as_ref().is_none_or(|p| here > *p) {
                processed = Some(here);
            }
        }
        // A GTID starts a transaction (a standalone one, DDL, has no BEGIN: its one statement
        // commits it).
        if let Some(gtid) = gtid_of(&event)? {
            open = Some(Open {
                gtid: Some(gtid),
                ..Open::default()
            });
            continue;
        }
        if let Some(setting) = compressed(&event) {
            // Skipping it would lose the transaction's rows without a word.
            return Err(SourceError::Other(format!(
                "the binlog holds compressed events ({setting} is ON), which sluice cannot \
                 read yet; turn it off (SET GLOBAL {setting} = OFF) and take a new snapshot \
                 (snapshot = \"when_needed\" with a new [log] dir), as the transactions it \
                 compressed cannot be read"
            )));
        }
        let data = match event.read_data() {
            Ok(Some(data)) => data,
            Ok(None) => continue,
            Err(err) => {
                return Err(SourceError::Other(format!(
                    "an unreadable binlog event: {err}"
                )))
            }
        };
        let mut commit = false;
        match data {
            EventData::RotateEvent(rotate) => {
                current_file = rotate.name().into();
                fake_rotate = (header.log_pos() == 0).then(|| rotate.name_raw().to_vec());
                if let Cursor::File { file, offset } = &mut cursor {
                    *file = current_file.to_string();
                    *offset = rotate.position();
                }
            }
            EventData::FormatDescriptionEvent(fde) => {
                // The rotate the server sends first comes before this event says that events
                // carry checksums, so its file name was read with the checksum's 4 bytes.
                let checksummed = matches!(
                    fde.footer().get_checksum_alg(),
                    Ok(Some(BinlogChecksumAlg::BINLOG_CHECKSUM_ALG_CRC32))
                );
                if let Some(raw) = fake_rotate
                    .take()
                    .filter(|raw| checksummed && raw.len() > 4)
                {
                    current_file = String::from_utf8_lossy(&raw[..raw.len() - 4])
                        .as_ref()
                        .into();
                    if let Cursor::File { file, .. } = &mut cursor {
                        *file = current_file.to_string();
                    }
                }
            }
            EventData::QueryEvent(query) => {
                let statement = query.query();
                let upper = statement.trim_start().to_ascii_uppercase();
                if upper.starts_with("BEGIN") {
                    open.get_or_insert_with(Open::default);
                } else if upper.starts_with("COMMIT") {
                    commit = true;
                } else {
                    let schema = query.schema().into_owned();
                    let outcome = ddl::ddl(
                        config,
                        pool,
                        tables,
                        &schema,
                        &statement,
                        ts_us,
                        cursor.position(),
                    )
                    .await?;
                    incremental.queue(pool, &outcome.backfill, None).await?;
                    let txn = open.get_or_insert_with(Open::default);
                    txn.events.extend(outcome.events);
                    txn.history
                        .extend(outcome.history.as_ref().map(HistoryRecord::to_bytes));
                    // DDL commits on its own (MySQL implicitly, MariaDB as a standalone GTID).
                    commit = true;
                }
            }
            EventData::XidEvent(_) => commit = true,
            EventData::RowsEvent(rows) => {
                let table_id = rows.table_id();
                let Some(tme) = stream.get_tme(table_id) else {
                    continue;
                };
                let key = (
                    tme.database_name().into_owned(),
                    tme.table_name().into_owned(),
                );
                if incremental.is_signal(&key) {
                    // A request for an on-demand snapshot (or to stop one).
                    let info = incremental.signal_info(pool).await?.clone();
                    for row in rows.rows(tme) {
                        let (_, after) = row.map_err(|e| {
                            SourceError::Other(format!(
                                "an unreadable row of {}.{}: {e}",
                                key.0, key.1
                            ))
                        })?;
                        if let Some(values) = row_values(after, &info, config.zero_dates)? {
                            incremental.signal(config, pool, &values).await?;
                        }
                    }
                    continue;
                }
                if !tables.contains_key(&key) {
                    if !catalog::table_matches(&config.tables, &key.0, &key.1) {
                        continue;
                    }
                    // A table created after start that the patterns capture.
                    let mut conn = pool
                        .get_conn()
                        .await
                        .map_err(SourceError::mysql("connecting"))?;
                    let info = catalog::table_info(&mut conn, &key.0, &key.1).await?;
                    let record = HistoryRecord {
                        position: cursor.position().to_string(),
                        statement: None,
                        patterns: None,
                        tables: vec![TableEntry::defined(&info)],
                    };
                    open.get_or_insert_with(Open::default)
                        .history
                        .push(record.to_bytes());
                    tables.insert(key.clone(), info);
                }
                // The row's own column list (binlog_row_metadata = FULL) decides the schema: the
                // catalog may already show later DDL when the stream is behind.
                if let Some(names) = row_schema::column_names(tme) {
                    let cached = &tables[&key];
                    let same = cached.schema.columns.len() == names.len()
                        && cached
                            .schema
                            .columns
                            .iter()
                            .zip(&names)
                            .all(|(c, n)| c.name == *n);
                    if !same {
                        let mut conn = pool
                            .get_conn()
                            .await
                            .map_err(SourceError::mysql("connecting"))?;
                        let catalog = catalog::table_info(&mut conn, &key.0, &key.1).await?;
                        let mut shaped = row_schema::shape_from_row_metadata(tme, &names, &catalog);
                        let mut schema = (*shaped.schema).clone();
                        schema.version = cached.schema.version + 1;
                        shaped.schema = Arc::new(schema);
                        tracing::info!(table = %format!("{}.{}", key.0, key.1), version = shaped.schema.version, "table schema changed (from the binlog's column metadata)");
                        tables.insert(key.clone(), shaped);
                    }
                }
                let info = &tables[&key];
                let txn = open.get_or_insert_with(Open::default);
                for row in rows.rows(tme) {
                    let (before, after) = row.map_err(|e| {
                        SourceError::Other(format!("an unreadable row of {}.{}: {e}", key.0, key.1))
                    })?;
                    let values = |row| row_values(row, info, config.zero_dates);
                    let (before, after) = (values(before)?, values(after)?);
                    let event = |op, before, after| ChangeEvent {
                        op,
                        table: Some(Arc::clone(&info.schema)),
                        before,
                        before_is_key_only: false,
                        after,
                        snapshot: SnapshotMarker::No,
                        commit_ts_us: ts_us,
                        position: Position::BinlogFile {
                            file: Arc::clone(&current_file),
                            offset: u64::from(header.log_pos()),
                        },
                        xid: None,
                        txn: None,
                        message: None,
                    };
                    match (before, after) {
                        (None, Some(after)) => {
                            txn.events.push(event(Op::Create, None, Some(after)))
                        }
                        (Some(before), None) => {
                            txn.events.push(event(Op::Delete, Some(before), None))
                        }
                        (Some(before), Some(after)) => {
                            let key_changed = info
                                .schema
                                .key_columns()
                                .any(|(i, _)| before[i] != after[i]);
                            if key_changed {
                                // As Debezium: a delete of the old key, then a create.
                                txn.events.push(event(Op::Delete, Some(before), None));
                                txn.events.push(event(Op::Create, None, Some(after)));
                            } else {
                                txn.events
                                    .push(event(Op::Update, Some(before), Some(after)));
                            }
                        }
                        (None, None) => {}
                    }
                }
            }
            _ => {}
        }
        if !commit {
            // A transaction larger than a batch goes ahead in parts, uncommitted in the log
            // until its last part (with the checkpoint) commits it: memory stays bounded.
            if let Some(txn) = open
                .as_mut()
                .filter(|t| t.events.len() >= config.max_batch_events)
            {
                let at = Position::BinlogFile {
                    file: Arc::clone(&current_file),
                    offset: u64::from(header.log_pos()),
                };
                let id = Arc::clone(txn.sent_id.get_or_insert_with(|| match &txn.gtid {
                    Some(gtid) => gtid.text().into(),
                    None => at.to_string().into(),
                }));
                let position = match &txn.gtid {
                    Some(gtid) => cursor.after(gtid).position(),
                    None => at,
                };
                let mut events = std::mem::take(&mut txn.events);
                for (n, event) in events.iter_mut().enumerate() {
                    event.position = position.clone();
                    event.txn = Some(TxnInfo {
                        id: Arc::clone(&id),
                        total_order: txn.sent + n as u64 + 1,
                        data_collection_order: 0,
                    });
                }
                txn.sent += events.len() as u64;
                let part = Unit {
                    events,
                    checkpoint: None,
                    history: Vec::new(),
                    flush: true,
                };
                if tx.send(Ok(part)).await.is_err() {
                    return Ok(());
                }
            }
            continue;
        }
        let txn = open.take().unwrap_or_default();
        match (&mut cursor, &txn.gtid) {
            (
                Cursor::Mariadb(list),
                Some(Gtid::Mariadb {
                    domain,
                    server,
                    seq,
                }),
            ) => list.apply(*domain, *server, *seq),
            (Cursor::Mysql(set), Some(Gtid::Mysql { uuid, gno })) => set.add(uuid, *gno),
            (Cursor::File { file, offset }, _) => {
                current_file[..].clone_into(file);
                *offset = u64::from(header.log_pos());
            }
            _ => {}
        }
        let position = cursor.position();
        let id: Arc<str> = match (&txn.sent_id, &txn.gtid) {
            (Some(id), _) => Arc::clone(id),
            (None, Some(gtid)) => gtid.text().into(),
            (None, None) => position.to_string().into(),
        };
        let mut events = txn.events;
        for (n, event) in events.iter_mut().enumerate() {
            event.position = position.clone();
            event.txn = Some(TxnInfo {
                id: Arc::clone(&id),
                total_order: txn.sent + n as u64 + 1,
                data_collection_order: 0,
            });
        }
        let unit = Unit {
            events,
            checkpoint: Some(Checkpoint {
                position,
                snapshot: SnapshotProgress::Done,
                snapshot_state: incremental.checkpoint_state(),
            }),
            history: txn.history,
            flush: false,
        };
        if tx.send(Ok(unit)).await.is_err() {
            return Ok(());
        }
    }
    Err(SourceError::StreamEnded)
}

/// A binlog row image's values as sluice's (None: the event has no such image).
fn row_values(
    row: Option<mysql_async::binlog::row::BinlogRow>,
    info: &TableInfo,
    zero_dates: super::config::ZeroDates,
) -> Result<Option<Vec<Value>>, SourceError> {
    let Some(row) = row else { return Ok(None) };
    let raw = row.unwrap();
    let table = &info.schema.table;
    if raw.len() != info.kinds.len() {
        return Err(SourceError::Other(format!(
            "a row of {table} has {} columns in the binlog but {} in sluice's definition of the table; the table changed in a way the schema history does not cover (take a fresh snapshot: set snapshot = \"when_needed\" and recreate the pipeline)",
            raw.len(),
            info.kinds.len()
        )));
    }
    let mut out = Vec::with_capacity(raw.len());
    for ((value, kind), column) in raw.into_iter().zip(&info.kinds).zip(&info.schema.columns) {
        let value = My::try_from(value).map_err(|e| SourceError::Value {
            table: table.to_string(),
            column: column.name.clone(),
            problem: e.to_string(),
        })?;
        out.push(
            convert(value, kind, Origin::Binlog, zero_dates).map_err(|problem| {
                SourceError::Value {
                    table: table.to_string(),
                    column: column.name.clone(),
                    problem: problem.0,
                }
            })?,
        );
    }
    Ok(Some(out))
}

/// Sends an on-demand snapshot chunk's rows, at the stream's position, with the queue as it
/// is after them. False when the source stopped listening.
async fn send_chunk(
    mut events: Vec<ChangeEvent>,
    cursor: &Cursor,
    incremental: &Incremental,
    tx: &mpsc::Sender<Result<Unit, SourceError>>,
) -> bool {
    let position = cursor.position();
    for event in &mut events {
        event.position = position.clone();
    }
    let unit = Unit {
        events,
        checkpoint: Some(Checkpoint {
            position,
            snapshot: SnapshotProgress::Done,
            snapshot_state: incremental.checkpoint_state(),
        }),
        history: Vec::new(),
        flush: false,
    };
    tx.send(Ok(unit)).await.is_ok()
}

/// The server setting that made `event` compressed: MySQL 8's transaction payload event (40,
/// `binlog_transaction_compression`) or MariaDB's compressed query and row events (165–171,
/// `log_bin_compress`).
fn compressed(event: &Event) -> Option<&'static str> {
    match event.header().event_type_raw() {
        40 => Some("binlog_transaction_compression"),
        165..=171 => Some("log_bin_compress"),
        _ => None,
    }
}
