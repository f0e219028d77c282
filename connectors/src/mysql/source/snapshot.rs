//! The initial snapshot: every captured table read inside consistent-snapshot transactions, in
//! primary-key chunks, at a binlog position that is exactly the snapshot's, so streaming
//! continues from there with no gap and no duplicate.
//!
//! With one connection on MariaDB no lock is taken: the server reports the snapshot's binlog
//! position (`binlog_snapshot_file`/`_position`), which the snapshot's events carry, as
//! Debezium's do. Streaming starts from it as a GTID list: `BINLOG_GTID_POS` reads the binlog
//! file up to that offset, which on a large file takes a while, so it runs on another
//! connection while the rows are read. With several connections (`snapshot_parallelism`), or on MySQL, the
//! transactions start under `FLUSH TABLES WITH READ LOCK`, held only while they start and the
//! position is read; tables with an integer key are then split into key ranges read in
//! parallel.
//!
//! The snapshot transactions run on sluice's own connections (`wire.rs`), which read rows
//! where they lie in the read buffer; the lock and the catalog use mysql_async's pool.
//!
//! Every unit is committed with the snapshot's progress (`progress.rs`): a crash resumes each
//! slice after the last key in the log.

pub(super) mod incremental;
mod progress;
mod wire;

use std::sync::Arc;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Pool, Value as My};
use sluice_core::checkpoint::{Checkpoint, SnapshotProgress};
use sluice_core::clock::now_us;
use sluice_core::event::{ChangeEvent, DataType, Op, SnapshotMarker, TableSchema};
use sluice_core::position::Position;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::catalog::{Flavor, Server, TableInfo};
use super::config::MysqlSourceConfig;
use super::decode::{convert, convert_snapshot_bytes, Origin};
use super::{SourceError, Unit};
pub(super) use progress::SnapshotState;
use progress::{KeyValue, SliceProgress};
use wire::{Cell, WireConn};

fn quote(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// How the snapshot's own connections log in: the URL's options, TLS as they settled.
struct Login {
    opts: mysql_async::Opts,
    wire: Option<crate::tls::WireTls>,
    tls: crate::tls::TlsSettings,
}

impl Login {
    async fn new(config: &MysqlSourceConfig) -> Result<Login, SourceError> {
        let url = config.opts()?;
        let opts = url.settled().await?;
        Ok(Login {
            wire: url.wire(&opts)?,
            opts,
            tls: url.tls,
        })
    }

    async fn connect(&self) -> Result<WireConn, SourceError> {
        WireConn::connect(&self.opts, self.wire.as_ref())
            .await
            .map_err(|err| match super::tls::failure(&err, &self.tls) {
                Some(reason) => SourceError::Tls {
                    address: super::tls::address(&self.opts),
                    reason,
                },
                None => SourceError::mysql("connecting for the snapshot")(err),
            })
    }
}

/// Logs in the way the snapshot does, and out again (`sluice check --connect`).
pub(super) async fn check_login(config: &MysqlSourceConfig) -> Result<(), SourceError> {
    Login::new(config).await?.connect().await?.close().await;
    Ok(())
}

/// Where the binlog is now (streaming without a snapshot).
pub(super) async fn current_position(
    pool: &Pool,
    server: &Server,
) -> Result<Position, SourceError> {
    let mut conn = pool
        .get_conn()
        .await
        .map_err(SourceError::mysql("connecting"))?;
    position_of(&mut conn, server).await
}

async fn position_of(conn: &mut Conn, server: &Server) -> Result<Position, SourceError> {
    match (server.flavor, server.gtid_mode) {
        (Flavor::Mariadb, _) => {
            let pos: Option<String> = conn
                .query_first("SELECT @@GLOBAL.gtid_binlog_pos")
                .await
                .map_err(SourceError::mysql("reading gtid_binlog_pos"))?;
            Ok(Position::MariadbGtidList(pos.unwrap_or_default().into()))
        }
        (Flavor::Mysql, true) => {
            let set: Option<String> = conn
                .query_first("SELECT @@GLOBAL.gtid_executed")
                .await
                .map_err(SourceError::mysql("reading gtid_executed"))?;
            Ok(Position::MysqlGtidSet(
                set.unwrap_or_default().replace('\n', "").into(),
            ))
        }
        (Flavor::Mysql, false) => {
            let row: Option<mysql_async::Row> = conn
                .query_first("SHOW MASTER STATUS")
                .await
                .map_err(SourceError::mysql("reading the binlog position"))?;
            let row = row
                .ok_or_else(|| SourceError::Setup(vec!["the binlog is off: set log_bin".into()]))?;
            Ok(Position::BinlogFile {
                file: row.get::<String, _>(0).unwrap_or_default().into(),
                offset: row.get::<u64, _>(1).unwrap_or(4),
            })
        }
    }
}

async fn begin(conn: &mut WireConn) -> Result<(), SourceError> {
    conn.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        .await
        .map_err(SourceError::mysql("starting the snapshot"))?;
    conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT")
        .await
        .map_err(SourceError::mysql("starting the snapshot"))
}

/// The snapshot's position: the one its events carry, and the one streaming starts from when
/// that is still being worked out.
type Positions = (Position, Option<JoinHandle<Result<Position, SourceError>>>);

/// Opens the snapshot transactions and reads their common binlog position.
async fn open(
    login: &Login,
    pool: &Pool,
    server: &Server,
    parallelism: usize,
) -> Result<(Vec<WireConn>, Positions), SourceError> {
    let mut conns = Vec::with_capacity(parallelism);
    for _ in 0..parallelism {
        conns.push(login.connect().await?);
    }
    if server.flavor == Flavor::Mariadb && parallelism == 1 {
        let conn = &mut conns[0];
        begin(conn).await?;
        let Some(incremental::Coord { file, offset }) =
            incremental::snapshot_position(conn).await?
        else {
            return Err(SourceError::Other(
                "the server reports no binlog position for the snapshot; is the binlog on (log_bin)?"
                    .into(),
            ));
        };
        let file = file.to_string();
        let pool = pool.clone();
        let file_name = file.clone();
        let gtids = sluice_core::task::spawn_in_span(async move {
            let mut conn = pool
                .get_conn()
                .await
                .map_err(SourceError::mysql("connecting"))?;
            let gtids: Option<Option<String>> = conn
                .exec_first("SELECT BINLOG_GTID_POS(?, ?)", (&file_name, offset))
                .await
                .map_err(SourceError::mysql("reading the snapshot's GTID position"))?;
            match gtids.flatten() {
                Some(gtids) => Ok(Position::MariadbGtidList(gtids.into())),
                None => Err(SourceError::Other(format!(
                    "the server cannot turn the snapshot's binlog position {file_name}:{offset} into GTIDs (BINLOG_GTID_POS is NULL: it could not read that binlog file, e.g. an event larger than max_allowed_packet); set snapshot_parallelism = 2 to take the position under a brief global read lock instead, or raise max_allowed_packet"
                ))),
            }
        });
        let position = Position::BinlogFile {
            file: file.into(),
            offset,
        };
        return Ok((conns, (position, Some(gtids))));
    }
    // The lock is held on a connection of its own, only while the transactions start.
    let mut lock = pool
        .get_conn()
        .await
        .map_err(SourceError::mysql("connecting"))?;
    lock.query_drop("FLUSH TABLES WITH READ LOCK")
        .await
        .map_err(SourceError::mysql("locking for the snapshot position (needs RELOAD; or set snapshot_parallelism = 1 on MariaDB)"))?;
    let started = async {
        for conn in conns.iter_mut() {
            begin(conn).await?;
        }
        position_of(&mut lock, server).await
    }
    .await;
    lock.query_drop("UNLOCK TABLES")
        .await
        .map_err(SourceError::mysql("unlocking"))?;
    Ok((conns, (started?, None)))
}

/// A slice of the snapshot one connection reads: a table, or a key range of it.
#[derive(Clone)]
struct Work {
    table: TableInfo,
    /// `[from, to)` of the integer key, when the table is split.
    range: Option<(i64, Option<i64>)>,
    /// Its index in the snapshot's progress.
    slice: usize,
    /// Resuming: the key of the last row of it in the log.
    after: Option<Vec<My>>,
}

/// The snapshot's progress, shared by the readers: each updates its slice and sends its unit
/// under the lock, so units reach the log in the order of the states they carry.
type Progress = Arc<tokio::sync::Mutex<SnapshotState>>;

/// Splits tables with an integer key into `parts` key ranges.
async fn plan(
    conn: &mut WireConn,
    tables: &[TableInfo],
    parts: usize,
) -> Result<Vec<Work>, SourceError> {
    let mut work = Vec::new();
    for table in tables {
        let keys: Vec<usize> = table.schema.key_columns().map(|(i, _)| i).collect();
        let integer_key = keys.len() == 1
            && matches!(
                table.schema.columns[keys[0]].data_type,
                DataType::Int8
                    | DataType::Int16
                    | DataType::Int32
                    | DataType::Int64
                    | DataType::UInt8
                    | DataType::UInt16
                    | DataType::UInt32
            );
        if parts < 2 || !integer_key {
            work.push(Work {
                table: table.clone(),
                range: None,
                slice: work.len(),
                after: None,
            });
            continue;
        }
        let key = quote(&table.schema.columns[keys[0]].name);
        let from = format!(
            "{}.{}",
            quote(&table.schema.table.namespace),
            quote(&table.schema.table.name)
        );
        let bounds = key_bounds(conn, &format!("SELECT MIN({key}), MAX({key}) FROM {from}"))
            .await
            .map_err(SourceError::mysql("reading key bounds"))?;
        let Some((min, max)) = bounds else {
            work.push(Work {
                table: table.clone(),
                range: None,
                slice: work.len(),
                after: None,
            });
            continue;
        };
        let step = ((max - min) / parts as i64).max(1);
        let mut start = min;
        for part in 0..parts {
            let end = if part + 1 == parts {
                None
            } else {
                Some(start + step)
            };
            work.push(Work {
                table: table.clone(),
                range: Some((start, end)),
                slice: work.len(),
                after: None,
            });
            match end {
                Some(end) if end <= max => start = end,
                _ => break,
            }
        }
    }
    Ok(work)
}

/// The minimum and maximum of an integer key (`None` for an empty table).
async fn key_bounds(
    conn: &mut WireConn,
    sql: &str,
) -> Result<Option<(i64, i64)>, mysql_async::Error> {
    let mut rows = conn.exec(sql, &[]).await?;
    let mut bounds = None;
    while let Some(mut row) = rows.next().await? {
        let as_int = |value: My| match value {
            My::Int(i) => Some(i),
            My::UInt(u) => i64::try_from(u).ok(),
            _ => None,
        };
        let (min, max) = (as_int(row.next_value()?), as_int(row.next_value()?));
        bounds = min.zip(max);
    }
    Ok(bounds)
}

/// Reads one slice in key chunks, sending each chunk.
async fn read(
    conn: &mut WireConn,
    work: &Work,
    config: &MysqlSourceConfig,
    position: &Position,
    progress: &Progress,
    tx: &mpsc::Sender<Result<Unit, SourceError>>,
) -> Result<u64, SourceError> {
    let schema = &work.table.schema;
    let chunk = config.snapshot_chunk_rows;
    let keys: Vec<usize> = schema.key_columns().map(|(i, _)| i).collect();
    let mut last_key: Option<Vec<My>> = work.after.clone();
    let mut total = 0u64;
    let mut held: Option<Sent> = None;
    let sent = |events, key: &[My], done| Sent {
        events,
        slice: work.slice,
        key: (!keys.is_empty() && !key.is_empty()).then(|| key.iter().map(KeyValue::of).collect()),
        done,
    };
    loop {
        let (sql, params) = chunk_select(schema, work.range, last_key.as_deref(), None, chunk);
        // Rows are converted as the server streams them, so reading and converting overlap;
        // every UNIT_ROWS rows go out as a unit.
        let mut rows = conn
            .exec(&sql, &params)
            .await
            .map_err(SourceError::mysql("reading a snapshot chunk"))?;
        let ts = now_us();
        let mut read = 0usize;
        let mut events = Vec::with_capacity(UNIT_ROWS);
        // Every event refers to the table's schema and the position. Each unit gets copies of
        // its own, so that this reader counting references up and the threads freeing earlier
        // units counting them down do not fight over shared counters.
        let fresh = || (Arc::new(TableSchema::clone(schema)), position.unshared());
        let (mut unit_schema, mut unit_position) = fresh();
        // The key of the last row read, where the next chunk starts (reused, not reallocated).
        let mut row_key = Vec::with_capacity(keys.len());
        loop {
            let row = rows
                .next()
                .await
                .map_err(SourceError::mysql("reading a snapshot chunk"))?;
            let Some(mut row) = row else { break };
            read += 1;
            let after = convert_row(
                &mut row,
                &work.table,
                &keys,
                config.zero_dates,
                &mut row_key,
            )?;
            events.push(ChangeEvent {
                op: Op::Read,
                table: Some(Arc::clone(&unit_schema)),
                before: None,
                before_is_key_only: false,
                after: Some(after),
                snapshot: SnapshotMarker::Yes,
                commit_ts_us: ts,
                position: unit_position.clone(),
                xid: None,
                txn: None,
                message: None,
            });
            if events.len() >= UNIT_ROWS {
                total += events.len() as u64;
                let full = std::mem::replace(&mut events, Vec::with_capacity(UNIT_ROWS));
                (unit_schema, unit_position) = fresh();
                hold(
                    &mut held,
                    sent(full, &row_key, false),
                    tx,
                    progress,
                    position,
                )
                .await?;
            }
        }
        drop(rows);
        if !events.is_empty() {
            total += events.len() as u64;
            hold(
                &mut held,
                sent(events, &row_key, false),
                tx,
                progress,
                position,
            )
            .await?;
        }
        if read > 0 {
            last_key = Some(row_key);
        }
        if keys.is_empty() || read < chunk {
            // The slice's last unit carries its end, so that its last row can be marked.
            let mut last = held.take().unwrap_or_else(|| sent(Vec::new(), &[], true));
            last.done = true;
            send(tx, progress, last, position).await?;
            return Ok(total);
        }
    }
}

/// Sends the unit held back and holds `next` instead: a slice's units go out one behind, so
/// that the one that ends it is known when it is sent.
async fn hold(
    held: &mut Option<Sent>,
    next: Sent,
    tx: &mpsc::Sender<Result<Unit, SourceError>>,
    progress: &Progress,
    position: &Position,
) -> Result<(), SourceError> {
    if let Some(previous) = held.replace(next) {
        send(tx, progress, previous, position).await?;
    }
    Ok(())
}

/// One row of `table` as a snapshot query selects it (every column, in order), converted; the
/// key columns' protocol values go to `row_key` (cleared first), to read on after the row.
fn convert_row(
    row: &mut wire::BinaryRow<'_>,
    table: &TableInfo,
    keys: &[usize],
    zero_dates: super::config::ZeroDates,
    row_key: &mut Vec<My>,
) -> Result<Vec<sluice_core::value::Value>, SourceError> {
    let schema = &table.schema;
    let mut after = Vec::with_capacity(schema.columns.len());
    row_key.clear();
    for (i, (kind, column)) in table.kinds.iter().zip(&schema.columns).enumerate() {
        let cell = row
            .next_cell()
            .map_err(SourceError::mysql("reading a snapshot chunk"))?;
        let is_key = keys.contains(&i);
        let value = match cell {
            Cell::Bytes(bytes) if !is_key => match convert_snapshot_bytes(bytes, kind) {
                Some(converted) => Ok(converted),
                None => Err(My::Bytes(bytes.to_vec())),
            },
            Cell::Bytes(bytes) => Err(My::Bytes(bytes.to_vec())),
            Cell::Value(value) => Err(value),
        };
        // Converted straight from the buffer, or through a protocol value (which a key
        // column also keeps, for the next chunk's start).
        let converted = match value {
            Ok(converted) => converted,
            Err(value) => {
                if is_key {
                    row_key.push(value.clone());
                }
                convert(value, kind, Origin::Snapshot, zero_dates)
            }
        };
        after.push(converted.map_err(|problem| SourceError::Value {
            table: schema.table.to_string(),
            column: column.name.clone(),
            problem: problem.0,
        })?);
    }
    Ok(after)
}

/// The SELECT of a snapshot chunk: every column of the table, in key order, after `after`
/// (a key), within a key `range`, and on `filter` (SQL); with its parameters.
fn chunk_select(
    schema: &TableSchema,
    range: Option<(i64, Option<i64>)>,
    after: Option<&[My]>,
    filter: Option<&str>,
    limit: usize,
) -> (String, Vec<My>) {
    let columns: Vec<String> = schema.columns.iter().map(|c| quote(&c.name)).collect();
    let key_list: Vec<String> = schema.key_columns().map(|(_, c)| quote(&c.name)).collect();
    let from = format!(
        "{}.{}",
        quote(&schema.table.namespace),
        quote(&schema.table.name)
    );
    let mut conditions = Vec::new();
    let mut params: Vec<My> = Vec::new();
    if let Some((start, end)) = range {
        conditions.push(format!("{} >= ?", key_list[0]));
        params.push(My::Int(start));
        if let Some(end) = end {
            conditions.push(format!("{} < ?", key_list[0]));
            params.push(My::Int(end));
        }
    }
    if let Some(last) = after {
        conditions.push(format!(
            "({}) > ({})",
            key_list.join(", "),
            vec!["?"; key_list.len()].join(", ")
        ));
        params.extend(last.iter().cloned());
    }
    if let Some(filter) = filter {
        conditions.push(format!("({filter})"));
    }
    let condition = if conditions.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conditions.join(" AND "))
    };
    let sql = if key_list.is_empty() {
        format!("SELECT {} FROM {from}{condition}", columns.join(", "))
    } else {
        format!(
            "SELECT {} FROM {from}{condition} ORDER BY {} LIMIT {limit}",
            columns.join(", "),
            key_list.join(", ")
        )
    };
    (sql, params)
}

/// The slices of a resumed snapshot still to read, each after its last key in the log. A slice
/// of a table no longer captured is left out; one of a table without a key is read again
/// whole.
fn resumed_work(state: &SnapshotState, tables: &[TableInfo]) -> Vec<Work> {
    state
        .slices
        .iter()
        .enumerate()
        .filter(|(_, slice)| !slice.done)
        .filter_map(|(index, slice)| {
            let table = tables
                .iter()
                .find(|t| t.schema.table.to_string() == slice.table)?;
            Some(Work {
                table: table.clone(),
                range: slice.range,
                slice: index,
                after: slice
                    .after
                    .as_ref()
                    .map(|key| key.iter().map(KeyValue::to_value).collect()),
            })
        })
        .collect()
}

/// Snapshot rows per unit sent to the batcher.
const UNIT_ROWS: usize = 5_000;

/// A unit of one slice, and how far the slice is once it is in the log.
struct Sent {
    events: Vec<ChangeEvent>,
    slice: usize,
    /// The key of the unit's last row (None: no key to resume after, or no row).
    key: Option<Vec<KeyValue>>,
    done: bool,
}

/// Records the unit in the progress and sends it with it, under the progress lock.
async fn send(
    tx: &mpsc::Sender<Result<Unit, SourceError>>,
    progress: &Progress,
    mut sent: Sent,
    position: &Position,
) -> Result<(), SourceError> {
    let mut state = progress.lock().await;
    let slice = &mut state.slices[sent.slice];
    if sent.key.is_some() {
        slice.after = sent.key;
    }
    slice.done |= sent.done;
    let table = slice.table.clone();
    state.recount();
    state.mark(&table, &mut sent.events);
    let unit = Unit {
        events: sent.events,
        checkpoint: Some(Checkpoint {
            position: position.clone(),
            snapshot: SnapshotProgress::InProgress,
            snapshot_state: Some(state.to_value()),
        }),
        history: Vec::new(),
        flush: true,
    };
    tx.send(Ok(unit))
        .await
        .map_err(|_| SourceError::StreamEnded)
}

/// Where streaming starts after a snapshot: its position and, when known, the same point as a
/// binlog file and offset.
pub(super) struct StreamStart {
    pub position: Position,
    /// The server finds a file and offset at once, while a GTID list has it read the binlog
    /// file from its start (up to a gigabyte) before it sends the first event.
    pub binlog: Option<(Arc<str>, u64)>,
}

/// Runs the snapshot (or resumes one: its progress and the position it began at), sending
/// its units and finally one that marks it done; returns where streaming starts.
pub(super) async fn run(
    config: &MysqlSourceConfig,
    pool: &Pool,
    server: &Server,
    tables: &[TableInfo],
    resume: Option<(SnapshotState, Position)>,
    tx: &mpsc::Sender<Result<Unit, SourceError>>,
) -> Result<StreamStart, SourceError> {
    let parallelism = config.snapshot_parallelism.max(1);
    let login = Login::new(config).await?;
    let (mut conns, (position, streaming_from), state) = match resume {
        Some((state, position)) => {
            // Each connection in a snapshot of its own: streaming starts where the original
            // snapshot was, so the new one's position does not matter (see `progress.rs`).
            let mut conns = Vec::with_capacity(parallelism);
            for _ in 0..parallelism {
                let mut conn = login.connect().await?;
                begin(&mut conn).await?;
                conns.push(conn);
            }
            tracing::info!(
                done = state.chunks_done,
                total = state.chunks_total,
                "resuming the interrupted snapshot after the last rows in the log"
            );
            (conns, (position, None), Some(state))
        }
        None => match open(&login, pool, server, parallelism).await {
            Ok((conns, positions)) => (conns, positions, None),
            Err(err) if parallelism > 1 && server.flavor == Flavor::Mariadb => {
                tracing::warn!(error = %err, "a parallel snapshot needs a brief global read lock; reading with one connection, without locks");
                let (conns, positions) = open(&login, pool, server, 1).await?;
                (conns, positions, None)
            }
            Err(err) => return Err(err),
        },
    };
    tracing::info!(%position, tables = tables.len(), connections = conns.len(), "snapshot starting");
    // Each connection takes every n-th slice.
    let n = conns.len();
    let (work, state) = match state {
        Some(state) => (resumed_work(&state, tables), state),
        None => {
            let work = plan(&mut conns[0], tables, n).await?;
            let slices = work
                .iter()
                .map(|w| SliceProgress {
                    table: w.table.schema.table.to_string(),
                    range: w.range,
                    after: None,
                    done: false,
                })
                .collect();
            (work, SnapshotState::new(slices))
        }
    };
    let progress: Progress = Arc::new(tokio::sync::Mutex::new(state));
    let mut readers = Vec::new();
    for (index, mut conn) in conns.into_iter().enumerate() {
        let mine: Vec<Work> = work.iter().skip(index).step_by(n).cloned().collect();
        let (config, position, tx) = (config.clone(), position.clone(), tx.clone());
        let progress = Arc::clone(&progress);
        readers.push(sluice_core::task::spawn_in_span(async move {
            let mut total = 0;
            for slice in &mine {
                total += read(&mut conn, slice, &config, &position, &progress, &tx).await?;
            }
            conn.query_drop("COMMIT")
                .await
                .map_err(SourceError::mysql("ending the snapshot"))?;
            conn.close().await;
            Ok::<u64, SourceError>(total)
        }));
    }
    let mut total = 0;
    for reader in readers {
        total += match reader.await {
            Ok(result) => result?,
            Err(join) => std::panic::resume_unwind(join.into_panic()),
        };
    }
    let start = match streaming_from {
        Some(pending) => {
            let binlog = match &position {
                Position::BinlogFile { file, offset } => Some((Arc::clone(file), *offset)),
                _ => None,
            };
            match pending.await {
                Ok(result) => StreamStart {
                    position: result?,
                    binlog,
                },
                Err(join) => std::panic::resume_unwind(join.into_panic()),
            }
        }
        None => StreamStart {
            position,
            binlog: None,
        },
    };
    let position = &start.position;
    let done = Unit {
        events: Vec::new(),
        checkpoint: Some(Checkpoint {
            position: position.clone(),
            snapshot: SnapshotProgress::Done,
            snapshot_state: None,
        }),
        history: Vec::new(),
        flush: true,
    };
    if tx.send(Ok(done)).await.is_err() {
        return Err(SourceError::StreamEnded);
    }
    tracing::info!(rows = total, "snapshot complete");
    Ok(start)
}
