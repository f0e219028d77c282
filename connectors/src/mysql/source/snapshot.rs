//! The initial snapshot: every captured table read inside one `START TRANSACTION WITH
//! CONSISTENT SNAPSHOT`, in primary-key chunks, at a binlog position that is exactly the
//! snapshot's, so streaming continues from there with no gap and no duplicate.
//!
//! MariaDB reports that position without any lock (`binlog_snapshot_file`/`_position`, turned
//! into a GTID list with `BINLOG_GTID_POS`); MySQL needs `FLUSH TABLES WITH READ LOCK` held
//! only while the transaction starts and the position is read.

use std::sync::Arc;

use mysql_async::prelude::Queryable;
use mysql_async::{Pool, Value as My};
use sluice_core::checkpoint::{Checkpoint, SnapshotProgress};
use sluice_core::clock::now_us;
use sluice_core::event::{ChangeEvent, Op, SnapshotMarker};
use sluice_core::position::Position;
use tokio::sync::mpsc;

use super::catalog::{Flavor, Server, TableInfo};
use super::config::MysqlSourceConfig;
use super::values::{convert, Origin};
use super::{SourceError, Unit};

fn quote(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// Where the binlog is now (streaming without a snapshot).
pub async fn current_position(pool: &Pool, server: &Server) -> Result<Position, SourceError> {
    let mut conn = pool
        .get_conn()
        .await
        .map_err(SourceError::mysql("connecting"))?;
    match (server.flavor, server.gtid_mode) {
        (Flavor::Mariadb, _) => {
            let pos: Option<String> = conn
                .query_first("SELECT @@GLOBAL.gtid_binlog_pos")
                .await
                .map_err(SourceError::mysql("reading gtid_binlog_pos"))?;
            Ok(Position::MariadbGtidList(pos.unwrap_or_default()))
        }
        (Flavor::Mysql, true) => {
            let set: Option<String> = conn
                .query_first("SELECT @@GLOBAL.gtid_executed")
                .await
                .map_err(SourceError::mysql("reading gtid_executed"))?;
            Ok(Position::MysqlGtidSet(
                set.unwrap_or_default().replace('\n', ""),
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
                file: row.get::<String, _>(0).unwrap_or_default(),
                offset: row.get::<u64, _>(1).unwrap_or(4),
            })
        }
    }
}

/// Runs the snapshot, sending its chunks; returns the position streaming starts from.
pub async fn run(
    config: &MysqlSourceConfig,
    pool: &Pool,
    server: &Server,
    tables: &[TableInfo],
    tx: &mpsc::Sender<Result<Unit, SourceError>>,
) -> Result<Position, SourceError> {
    let mut conn = pool
        .get_conn()
        .await
        .map_err(SourceError::mysql("connecting"))?;
    conn.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        .await
        .map_err(SourceError::mysql("starting the snapshot"))?;
    let position = match server.flavor {
        Flavor::Mariadb => {
            conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT")
                .await
                .map_err(SourceError::mysql("starting the snapshot"))?;
            let status: Vec<(String, String)> = conn
                .query("SHOW STATUS LIKE 'binlog_snapshot_%'")
                .await
                .map_err(SourceError::mysql("reading the snapshot's binlog position"))?;
            let get = |name: &str| {
                status
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default()
            };
            let (file, offset) = (get("binlog_snapshot_file"), get("binlog_snapshot_position"));
            let gtids: Option<String> = conn
                .exec_first(
                    "SELECT BINLOG_GTID_POS(?, ?)",
                    (file.as_str(), offset.as_str()),
                )
                .await
                .map_err(SourceError::mysql("reading the snapshot's GTID position"))?;
            Position::MariadbGtidList(gtids.unwrap_or_default())
        }
        Flavor::Mysql => {
            conn.query_drop("FLUSH TABLES WITH READ LOCK")
                .await
                .map_err(SourceError::mysql(
                    "locking for the snapshot position (needs RELOAD)",
                ))?;
            conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT")
                .await
                .map_err(SourceError::mysql("starting the snapshot"))?;
            let position = current_position(pool, server).await;
            conn.query_drop("UNLOCK TABLES")
                .await
                .map_err(SourceError::mysql("unlocking"))?;
            position?
        }
    };
    tracing::info!(%position, tables = tables.len(), "snapshot starting");
    let checkpoint = |snapshot| Checkpoint {
        position: position.clone(),
        snapshot,
    };
    let chunk = config.snapshot_chunk_rows;
    let mut total = 0u64;
    for (t, table) in tables.iter().enumerate() {
        let schema = &table.schema;
        let columns: Vec<String> = schema.columns.iter().map(|c| quote(&c.name)).collect();
        let keys: Vec<usize> = schema.key_columns().map(|(i, _)| i).collect();
        let key_list: Vec<String> = keys.iter().map(|i| columns[*i].clone()).collect();
        let from = format!(
            "{}.{}",
            quote(&schema.table.namespace),
            quote(&schema.table.name)
        );
        let mut last_key: Option<Vec<My>> = None;
        loop {
            let sql = match (&last_key, keys.is_empty()) {
                (_, true) => format!("SELECT {} FROM {from}", columns.join(", ")),
                (None, false) => format!(
                    "SELECT {} FROM {from} ORDER BY {} LIMIT {chunk}",
                    columns.join(", "),
                    key_list.join(", ")
                ),
                (Some(_), false) => format!(
                    "SELECT {} FROM {from} WHERE ({}) > ({}) ORDER BY {} LIMIT {chunk}",
                    columns.join(", "),
                    key_list.join(", "),
                    vec!["?"; keys.len()].join(", "),
                    key_list.join(", ")
                ),
            };
            let params = last_key.clone().unwrap_or_default();
            let rows: Vec<mysql_async::Row> = conn
                .exec(sql, params)
                .await
                .map_err(SourceError::mysql("reading a snapshot chunk"))?;
            let read = rows.len();
            let ts = now_us();
            let mut events = Vec::with_capacity(read);
            for row in rows {
                let values: Vec<My> = row.unwrap();
                if !keys.is_empty() {
                    last_key = Some(keys.iter().map(|i| values[*i].clone()).collect());
                }
                let mut after = Vec::with_capacity(values.len());
                for ((value, kind), column) in
                    values.into_iter().zip(&table.kinds).zip(&schema.columns)
                {
                    after.push(
                        convert(value, kind, Origin::Snapshot, config.zero_dates).map_err(
                            |problem| SourceError::Value {
                                table: schema.table.to_string(),
                                column: column.name.clone(),
                                problem,
                            },
                        )?,
                    );
                }
                events.push(ChangeEvent {
                    op: Op::Read,
                    table: Some(Arc::clone(schema)),
                    before: None,
                    before_is_key_only: false,
                    after: Some(after),
                    snapshot: if total == 0 && events.is_empty() {
                        SnapshotMarker::First
                    } else {
                        SnapshotMarker::Yes
                    },
                    commit_ts_us: ts,
                    position: position.clone(),
                    xid: None,
                    txn: None,
                    message: None,
                });
            }
            total += events.len() as u64;
            let done = keys.is_empty() || read < chunk;
            let last_table = t + 1 == tables.len();
            if done && last_table {
                if let Some(last) = events.last_mut() {
                    last.snapshot = SnapshotMarker::Last;
                }
            }
            let progress = if done && last_table {
                SnapshotProgress::Done
            } else {
                SnapshotProgress::InProgress
            };
            if tx
                .send(Ok(Unit {
                    events,
                    checkpoint: checkpoint(progress),
                }))
                .await
                .is_err()
            {
                return Err(SourceError::StreamEnded);
            }
            if done {
                break;
            }
        }
    }
    if tables.is_empty() {
        let _ = tx
            .send(Ok(Unit {
                events: Vec::new(),
                checkpoint: checkpoint(SnapshotProgress::Done),
            }))
            .await;
    }
    conn.query_drop("COMMIT")
        .await
        .map_err(SourceError::mysql("ending the snapshot"))?;
    tracing::info!(rows = total, "snapshot complete");
    Ok(position)
}
