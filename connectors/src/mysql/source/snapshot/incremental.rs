//! On-demand snapshots while streaming: tables (or a `WHERE` slice of them) re-read in
//! primary-key chunks between the binlog stream's transactions, with no lock, no pause of
//! streaming beyond one chunk's read, and no chunk row ever overwriting a newer streamed change.
//!
//! Each chunk is read in a consistent-snapshot transaction of its own, which the server pins to
//! an exact binlog position P (`binlog_snapshot_file`/`_position`: MariaDB, Percona Server): the
//! chunk is the table as of P. The chunk goes to the log right where the stream reaches P, after
//! the transaction that ends there and before the next, so every change streamed before it is
//! in it and every later change follows it, as a DBLog watermark window would give without
//! writing any watermark (the source's user needs no write privilege). The stream is paused at a
//! transaction boundary S while the chunk is read; when the server has a transaction of the
//! binlog before S not yet visible to new snapshots (P < S, a commit in flight), the read is
//! taken again, a moment later. If the stream ever passes P without stopping there exactly, the
//! chunk is dropped and read again.
//!
//! Requests come from the signal table (`signal_table`), which `sluice snapshot` writes to, as
//! anyone with SQL can: a row with `type = 'execute-snapshot'` and, in `data`, Debezium's JSON
//! (`{"data-collections": ["db.t"], "additional-conditions": [{"data-collection": "db.t",
//! "filter": "v > 1"}]}`, plus sluice's `"source"` to address one source). Tables that join the
//! captured set (added to `tables`, or renamed into it) are queued the same way. The queue and
//! each table's last key are in every checkpoint (`crate::incremental`).

use std::cmp::Ordering;
use std::sync::Arc;
use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Pool, Value as My};
use serde::{Deserialize, Serialize};
use sluice_core::clock::now_us;
use sluice_core::event::{ChangeEvent, TableId, TableSchema};
use sluice_core::position::Position;
use sluice_core::value::Value;

use super::super::catalog::{self, TableInfo};
use super::super::config::MysqlSourceConfig;
use super::super::SourceError;
use super::progress::KeyValue;
use super::wire::WireConn;
use super::{begin, chunk_select, convert_row, Login};

/// What a checkpoint carries while tables wait to be read: keys as the protocol's values.
pub(in crate::mysql::source) type IncrementalState =
    crate::incremental::IncrementalState<Vec<KeyValue>>;

type Tables = std::collections::HashMap<(String, String), TableInfo>;

/// The signal row type that asks for a snapshot, and the one that cancels one.
pub(in crate::mysql) const EXECUTE: &str = "execute-snapshot";
const STOP: &str = "stop-snapshot";

/// A point in the binlog: a file and an offset in it, ordered as the server writes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(in crate::mysql::source) struct Coord {
    pub file: Arc<str>,
    pub offset: u64,
}

impl Coord {
    /// The file's sequence number (`mysql-bin.000042`: 42).
    fn sequence(&self) -> Option<u64> {
        self.file.rsplit_once('.')?.1.parse().ok()
    }
}

impl PartialOrd for Coord {
    fn partial_cmp(&self, other: &Coord) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Coord {
    fn cmp(&self, other: &Coord) -> Ordering {
        (self.sequence(), &self.file, self.offset).cmp(&(
            other.sequence(),
            &other.file,
            other.offset,
        ))
    }
}

/// The body (`data`) of an `execute-snapshot` or `stop-snapshot` signal row.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(in crate::mysql) struct SignalData {
    /// Tables as `database.table`.
    #[serde(rename = "data-collections", default)]
    pub tables: Vec<String>,
    /// `incremental` (the default; Debezium's `blocking` is not supported).
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(
        rename = "additional-conditions",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub conditions: Vec<Condition>,
    /// The source the request is for (sluice's); without it, every source reading the table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// A `WHERE` condition for one of the tables.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(in crate::mysql) struct Condition {
    #[serde(rename = "data-collection")]
    pub table: String,
    pub filter: String,
}

/// The chunk read, waiting for the stream to reach its position.
struct Chunk {
    table: (String, String),
    schema: Arc<TableSchema>,
    rows: Vec<Vec<Value>>,
    last_key: Option<Vec<KeyValue>>,
    /// Fewer rows than asked for: the table (or slice) is done after this chunk.
    last: bool,
    at: Coord,
}

/// On-demand snapshots of one source: the queue, the chunk in flight, the signal table.
pub(in crate::mysql::source) struct Incremental {
    pub state: IncrementalState,
    source: String,
    chunk_rows: usize,
    signal_table: Option<(String, String)>,
    /// The signal table's columns, once its first row is read.
    signal_info: Option<TableInfo>,
    login: Option<Login>,
    conn: Option<WireConn>,
    in_flight: Option<Chunk>,
    /// Chunks dropped in a row because the stream passed their position.
    missed: u32,
    /// Reads given up in a row because the server had not committed what the stream had.
    behind: u32,
}

/// Times a chunk is read again while the server still commits a transaction the stream has
/// before the stream goes on and it is tried later: 2 ms apart at first, then longer (up to
/// 50 ms), about 2 s in all, so that a server slow to commit under load (its binlog written,
/// the engine's commit not yet visible) is waited for rather than tried at every
/// transaction boundary, each time just behind the stream again.
const READ_TRIES: u32 = 40;

impl Incremental {
    pub(in crate::mysql::source) fn new(
        config: &MysqlSourceConfig,
        state: IncrementalState,
    ) -> Incremental {
        Incremental {
            state,
            source: config.name.clone(),
            chunk_rows: config.max_batch_events.max(1),
            signal_table: config.signal_table(),
            signal_info: None,
            login: None,
            conn: None,
            in_flight: None,
            missed: 0,
            behind: 0,
        }
    }

    /// Tables wait to be read.
    pub(in crate::mysql::source) fn has_work(&self) -> bool {
        !self.state.queue.is_empty()
    }

    /// The checkpoint's `snapshot_state` (None when nothing is queued).
    pub(in crate::mysql::source) fn checkpoint_state(&self) -> Option<serde_json::Value> {
        self.state.checkpoint_state()
    }

    /// Drops the queue (a new initial snapshot reads every table anyway).
    pub(in crate::mysql::source) fn clear(&mut self) {
        self.state.queue.clear();
        self.in_flight = None;
    }

    /// Queues tables to read (one already queued with the same slice is left as it is).
    pub(in crate::mysql::source) async fn queue(
        &mut self,
        pool: &Pool,
        tables: &[TableId],
        filter: Option<&str>,
    ) -> Result<(), SourceError> {
        let mut conn = pool
            .get_conn()
            .await
            .map_err(SourceError::mysql("connecting"))?;
        for table in tables {
            if self.state.is_queued(table, filter) {
                continue;
            }
            let estimate: Option<u64> = conn
                .exec_first(
                    "SELECT TABLE_ROWS FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
                    (&table.namespace, &table.name),
                )
                .await
                .map_err(SourceError::mysql("reading the table's size"))?;
            self.state
                .push(table, filter, estimate.unwrap_or(0) as f64, self.chunk_rows);
        }
        Ok(())
    }

    /// The row event is the signal table's.
    pub(in crate::mysql::source) fn is_signal(&self, key: &(String, String)) -> bool {
        self.signal_table.as_ref() == Some(key)
    }

    /// The signal table's columns (read from the catalog at its first row).
    pub(in crate::mysql::source) async fn signal_info(
        &mut self,
        pool: &Pool,
    ) -> Result<&TableInfo, SourceError> {
        if self.signal_info.is_none() {
            let (database, table) = self.signal_table.clone().expect("a signal table");
            let mut conn = pool
                .get_conn()
                .await
                .map_err(SourceError::mysql("connecting"))?;
            self.signal_info = Some(catalog::table_info(&mut conn, &database, &table).await?);
        }
        Ok(self.signal_info.as_ref().expect("read above"))
    }

    /// Acts on a row written to the signal table (its columns by name: `type`, `data`).
    pub(in crate::mysql::source) async fn signal(
        &mut self,
        config: &MysqlSourceConfig,
        pool: &Pool,
        row: &[Value],
    ) -> Result<(), SourceError> {
        let info = self.signal_info(pool).await?;
        let column = |name: &str| {
            info.schema
                .columns
                .iter()
                .position(|c| c.name.eq_ignore_ascii_case(name))
                .and_then(|i| match row.get(i) {
                    Some(Value::Text(text)) => Some(text.to_string()),
                    Some(Value::Json(text)) => Some(text.clone()),
                    _ => None,
                })
        };
        let (Some(kind), data) = (column("type"), column("data")) else {
            tracing::warn!("a signal table row without a `type` column value: ignored");
            return Ok(());
        };
        if kind != EXECUTE && kind != STOP {
            tracing::warn!(%kind, "a signal of a type sluice does not act on: ignored (it takes {EXECUTE} and {STOP})");
            return Ok(());
        }
        let data: SignalData = match serde_json::from_str(data.as_deref().unwrap_or("{}")) {
            Ok(data) => data,
            Err(err) => {
                tracing::warn!(data, error = %err, "a {kind} signal whose data is not the expected JSON (data-collections, additional-conditions): ignored");
                return Ok(());
            }
        };
        if data.source.as_deref().is_some_and(|s| s != self.source) {
            return Ok(());
        }
        if kind == STOP {
            self.stop(&data.tables);
            return Ok(());
        }
        if data.kind.as_deref().is_some_and(|k| k != "incremental") {
            tracing::warn!(kind = data.kind, "a blocking snapshot was asked for; sluice reads on-demand snapshots incrementally, while streaming");
        }
        for name in &data.tables {
            let Some((database, table)) = name.split_once('.') else {
                tracing::warn!(table = %name, "on-demand snapshot request ignored: name tables as database.table");
                continue;
            };
            if !catalog::table_matches(&config.tables, database, table) {
                tracing::warn!(table = %name, "on-demand snapshot request ignored for a table this source does not capture");
                continue;
            }
            let filter = data
                .conditions
                .iter()
                .find(|c| c.table == *name)
                .map(|c| c.filter.clone());
            let id = TableId {
                namespace: database.to_owned(),
                name: table.to_owned(),
            };
            self.queue(pool, &[id], filter.as_deref()).await?;
        }
        Ok(())
    }

    /// Cancels the queued snapshots of `tables` (all of them when empty).
    fn stop(&mut self, tables: &[String]) {
        let before = self.state.queue.len();
        self.state
            .queue
            .retain(|p| !tables.is_empty() && !tables.contains(&p.label()));
        if self.in_flight.as_ref().is_some_and(|c| {
            tables.is_empty() || tables.contains(&format!("{}.{}", c.table.0, c.table.1))
        }) {
            self.in_flight = None;
        }
        tracing::info!(
            cancelled = before - self.state.queue.len(),
            "on-demand snapshots stopped by a signal"
        );
    }

    /// A chunk can be read now: tables wait and none is in flight.
    pub(in crate::mysql::source) fn can_read(&self) -> bool {
        self.in_flight.is_none() && self.has_work()
    }

    /// Reads the next chunk of the front table, pinned to a binlog position at or after `at`
    /// (where the stream stands, between transactions).
    pub(in crate::mysql::source) async fn read_chunk(
        &mut self,
        config: &MysqlSourceConfig,
        tables: &Tables,
        at: &Coord,
    ) -> Result<(), SourceError> {
        let Some(pending) = self.state.queue.front() else {
            return Ok(());
        };
        let key = (pending.namespace.clone(), pending.name.clone());
        let Some(info) = tables.get(&key) else {
            tracing::warn!(table = %pending.label(), "on-demand snapshot dropped: the table no longer exists, or is not captured");
            self.state.queue.pop_front();
            return Ok(());
        };
        let keys: Vec<usize> = info.schema.key_columns().map(|(i, _)| i).collect();
        if keys.is_empty() {
            tracing::warn!(table = %pending.label(), "on-demand snapshot skipped: the table has no primary key to read it in chunks by");
            self.state.queue.pop_front();
            return Ok(());
        }
        let after: Option<Vec<My>> = pending
            .after
            .as_ref()
            .map(|key| key.iter().map(KeyValue::to_value).collect());
        let (sql, params) = chunk_select(
            &info.schema,
            None,
            after.as_deref(),
            pending.filter.as_deref(),
            self.chunk_rows,
        );
        let filter = pending.filter.clone();
        if self.login.is_none() {
            self.login = Some(Login::new(config).await?);
        }
        if self.conn.is_none() {
            let login = self.login.as_ref().expect("set above");
            self.conn = Some(login.connect().await?);
        }
        let conn = self.conn.as_mut().expect("connected above");
        let mut tries = 0;
        let position = loop {
            begin(conn).await?;
            let Some(position) = snapshot_position(conn).await? else {
                // MySQL: requests cannot be served, and they do not stop the stream.
                let tables: Vec<String> = self.state.queue.iter().map(|p| p.label()).collect();
                tracing::error!(
                    ?tables,
                    "on-demand snapshots dropped: {}",
                    no_snapshot_position()
                );
                self.state.queue.clear();
                conn.query_drop("COMMIT")
                    .await
                    .map_err(SourceError::mysql("ending an on-demand snapshot read"))?;
                return Ok(());
            };
            if position >= *at {
                break position;
            }
            // A transaction the stream has is not committed yet: read again in a moment.
            conn.query_drop("COMMIT")
                .await
                .map_err(SourceError::mysql("ending an on-demand snapshot read"))?;
            tries += 1;
            if tries == READ_TRIES {
                self.behind += 1;
                if self.behind.is_multiple_of(10) {
                    tracing::warn!(
                        stream = %format!("{}:{}", at.file, at.offset),
                        snapshot = %format!("{}:{}", position.file, position.offset),
                        "on-demand snapshot waiting: the server keeps transactions the stream \
                         has read invisible to new snapshots for seconds (a commit \
                         slowed by load); chunks are read again at the next transactions"
                    );
                }
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis((2u64 << tries.min(5)).min(50))).await;
        };
        self.behind = 0;
        let mut rows = Vec::new();
        let mut row_key = Vec::with_capacity(keys.len());
        let mut result = match conn.exec(&sql, &params).await {
            Ok(result) => result,
            Err(mysql_async::Error::Server(err)) => {
                tracing::error!(
                    table = %format!("{}.{}", key.0, key.1),
                    filter,
                    error = %err,
                    "on-demand snapshot dropped: the table cannot be read this way; grant the \
                     source's user SELECT on it, or correct the `where` condition, and ask again"
                );
                self.state.queue.pop_front();
                conn.query_drop("COMMIT")
                    .await
                    .map_err(SourceError::mysql("ending an on-demand snapshot read"))?;
                return Ok(());
            }
            Err(err) => {
                return Err(SourceError::mysql("reading an on-demand snapshot chunk")(
                    err,
                ))
            }
        };
        while let Some(mut row) = result
            .next()
            .await
            .map_err(SourceError::mysql("reading an on-demand snapshot chunk"))?
        {
            rows.push(convert_row(
                &mut row,
                info,
                &keys,
                config.zero_dates,
                &mut row_key,
            )?);
        }
        drop(result);
        let last_key = (!rows.is_empty()).then(|| row_key.iter().map(KeyValue::of).collect());
        conn.query_drop("COMMIT")
            .await
            .map_err(SourceError::mysql("ending an on-demand snapshot read"))?;
        self.in_flight = Some(Chunk {
            table: key,
            schema: Arc::clone(&info.schema),
            last: rows.len() < self.chunk_rows,
            rows,
            last_key,
            at: position,
        });
        Ok(())
    }

    /// Between transactions, with the stream at `at`: the chunk's rows when this is its
    /// position, as events at `position` (None: no chunk is due here). A chunk the stream
    /// passed, or whose table changed shape since it was read, is dropped to be read again.
    pub(in crate::mysql::source) fn take_due(
        &mut self,
        at: &Coord,
        tables: &Tables,
        position: &Position,
    ) -> Option<Vec<ChangeEvent>> {
        let chunk = self.in_flight.take_if(|chunk| chunk.at <= *at)?;
        if chunk.at < *at {
            self.missed += 1;
            if self.missed.is_multiple_of(10) {
                tracing::warn!(chunk = %format!("{}:{}", chunk.at.file, chunk.at.offset), stream = %format!("{}:{}", at.file, at.offset), "the stream keeps passing on-demand snapshot chunks' binlog positions; the snapshot is not making progress (please report this)");
            }
            return None;
        }
        self.missed = 0;
        let current = tables.get(&chunk.table).map(|t| t.schema.version);
        if current != Some(chunk.schema.version) {
            tracing::debug!("a chunk's table changed shape after it was read: reading it again");
            return None;
        }
        self.state.advance(chunk.last_key, chunk.last);
        if !self.has_work() {
            // Nothing more to read: the connection goes until the next request.
            if let Some(conn) = self.conn.take() {
                sluice_core::task::spawn_in_span(conn.close());
            }
        }
        Some(crate::incremental::read_events(
            &chunk.schema,
            chunk.rows,
            position,
        ))
    }
}

/// The signal table as `sluice snapshot` expects it (Debezium's columns).
pub(in crate::mysql) fn signal_table_ddl(table: &str) -> String {
    let quoted: Vec<String> = table.split('.').map(super::quote).collect();
    format!(
        "CREATE TABLE {} (id VARCHAR(64) PRIMARY KEY, type VARCHAR(32) NOT NULL, data TEXT)",
        quoted.join(".")
    )
}

/// What stops the signal table from working (`sluice check --connect`): a table that does not
/// exist, a server that cannot pin a chunk to a binlog position.
pub(in crate::mysql) async fn signal_problems(
    config: &MysqlSourceConfig,
    conn: &mut mysql_async::Conn,
) -> Result<Vec<String>, SourceError> {
    let Some((database, table)) = config.signal_table() else {
        return Ok(Vec::new());
    };
    let mut problems = Vec::new();
    if !catalog::table_exists(conn, &database, &table).await? {
        problems.push(format!(
            "the signal table {database}.{table} does not exist: create it ({}) and grant the \
             source's user SELECT on it",
            signal_table_ddl(&format!("{database}.{table}"))
        ));
    }
    let status: Vec<(String, String)> = conn
        .query("SHOW STATUS LIKE 'binlog_snapshot_file'")
        .await
        .map_err(SourceError::mysql("reading the server's status"))?;
    if status.first().is_none_or(|(_, file)| file.is_empty()) {
        problems.push(no_snapshot_position().to_owned());
    }
    Ok(problems)
}

/// Asks a source for an on-demand snapshot (`sluice snapshot`): checks that it captures the
/// tables and that the condition selects rows of them, then writes the request into the
/// source's signal table, where the running source (or the next one) reads it in the binlog.
pub(in crate::mysql) async fn request(
    config: &MysqlSourceConfig,
    tables: &[String],
    filter: Option<&str>,
) -> Result<String, SourceError> {
    let Some(signal_table) = config.signal_table.as_deref() else {
        return Err(SourceError::Other(format!(
            "source {} has no signal_table: a MySQL/MariaDB source is asked for on-demand \
             snapshots through a table of the server; add signal_table = \"db.sluice_signal\" \
             to it, create that table ({}) and grant the source's user SELECT on it and \
             `sluice snapshot`'s INSERT, then restart sluice",
            config.name,
            signal_table_ddl("db.sluice_signal")
        )));
    };
    let opts = config.opts()?.settled().await?;
    let mut conn = mysql_async::Conn::new(opts)
        .await
        .map_err(|err| super::super::connect_error(err, config))?;
    let result = async {
        let problems = signal_problems(config, &mut conn).await?;
        if !problems.is_empty() {
            return Err(SourceError::Setup(problems));
        }
        let mut names = Vec::with_capacity(tables.len());
        for name in tables {
            let captured = name.split_once('.').is_some_and(|(database, table)| {
                catalog::table_matches(&config.tables, database, table)
            });
            let exists = match name.split_once('.') {
                Some((database, table)) if captured => {
                    catalog::table_exists(&mut conn, database, table).await?
                }
                _ => false,
            };
            if !exists {
                return Err(SourceError::Other(format!(
                    "source {} does not capture {name}: name tables (database.table) that exist \
                     and that its `tables` patterns match, or add them to `tables` (a table \
                     added there is read by an on-demand snapshot at the next start anyway)",
                    config.name
                )));
            }
            if let Some(filter) = filter {
                // The condition is checked here, where a mistake can be said to the one who
                // made it.
                let quoted: Vec<String> = name.split('.').map(super::quote).collect();
                let sql = format!(
                    "SELECT 1 FROM {} WHERE ({filter}) LIMIT 0",
                    quoted.join(".")
                );
                if let Err(err) = conn.query_drop(sql).await {
                    return Err(SourceError::Other(format!(
                        "the condition {filter:?} cannot select rows of {name}: {err}; give a \
                         SQL condition on the table's columns, as after WHERE"
                    )));
                }
            }
            names.push(name.clone());
        }
        let data = SignalData {
            tables: names.clone(),
            kind: Some("incremental".into()),
            conditions: filter
                .map(|filter| {
                    names
                        .iter()
                        .map(|table| Condition {
                            table: table.clone(),
                            filter: filter.to_owned(),
                        })
                        .collect()
                })
                .unwrap_or_default(),
            source: Some(config.name.clone()),
        };
        let quoted: Vec<String> = signal_table.split('.').map(super::quote).collect();
        let id = format!("sluice-{}", now_us());
        let inserted = conn
            .exec_drop(
                format!(
                    "INSERT INTO {} (id, type, data) VALUES (?, ?, ?)",
                    quoted.join(".")
                ),
                (
                    &id,
                    EXECUTE,
                    serde_json::to_string(&data).expect("a signal serializes"),
                ),
            )
            .await;
        match inserted {
            Ok(()) => {}
            Err(mysql_async::Error::Server(err)) if err.code == 1146 => {
                return Err(SourceError::Other(format!(
                    "the signal table {signal_table} does not exist: create it ({}) and grant \
                     the source's user SELECT on it",
                    signal_table_ddl(signal_table)
                )));
            }
            Err(err) => return Err(SourceError::mysql("writing to the signal table")(err)),
        }
        Ok(format!(
            "asked source {} for an on-demand snapshot of {}{} (signal {id} in {signal_table}); \
             `sluice status` shows its progress",
            config.name,
            names.join(", "),
            filter.map(|f| format!(" where {f}")).unwrap_or_default()
        ))
    }
    .await;
    let _ = conn.disconnect().await;
    result
}

/// The binlog position the connection's consistent snapshot is pinned to (None: the server
/// does not say, as MySQL does not).
pub(super) async fn snapshot_position(conn: &mut WireConn) -> Result<Option<Coord>, SourceError> {
    let status = conn
        .query_text("SHOW STATUS LIKE 'binlog_snapshot_%'")
        .await
        .map_err(SourceError::mysql("reading the snapshot's binlog position"))?;
    let get = |name: &str| {
        status
            .iter()
            .find(|row| {
                row[0]
                    .as_deref()
                    .is_some_and(|n| n.eq_ignore_ascii_case(name))
            })
            .and_then(|row| row.get(1).cloned().flatten())
    };
    Ok(
        match (get("binlog_snapshot_file"), get("binlog_snapshot_position")) {
            (Some(file), Some(offset)) if !file.is_empty() => {
                offset.parse().ok().map(|offset| Coord {
                    file: file.into(),
                    offset,
                })
            }
            _ => None,
        },
    )
}

fn no_snapshot_position() -> &'static str {
    "on-demand snapshots need the binlog position of a consistent snapshot \
     (binlog_snapshot_file/_position), which MariaDB and Percona Server report and MySQL does \
     not; on MySQL, take a new snapshot with a new source (another name) instead"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(file: &str, offset: u64) -> Coord {
        Coord {
            file: file.into(),
            offset,
        }
    }

    #[test]
    fn binlog_coordinates_order_by_file_number_then_offset() {
        assert!(at("bin.000002", 4) > at("bin.000001", 90_000));
        assert!(at("bin.000001", 5) > at("bin.000001", 4));
        assert!(at("bin.1000000", 4) > at("bin.999999", 4));
        assert_eq!(
            at("bin.000003", 7).cmp(&at("bin.000003", 7)),
            Ordering::Equal
        );
    }

    #[test]
    fn signals_read_debeziums_json_and_sluices_source() {
        let data: SignalData = serde_json::from_str(
            r#"{"data-collections": ["db.a", "db.b"], "type": "incremental",
                "additional-conditions": [{"data-collection": "db.b", "filter": "v > 1"}],
                "source": "src"}"#,
        )
        .unwrap();
        assert_eq!(data.tables, ["db.a", "db.b"]);
        assert_eq!(data.conditions[0].filter, "v > 1");
        assert_eq!(data.source.as_deref(), Some("src"));
        let back: SignalData =
            serde_json::from_str(&serde_json::to_string(&data).unwrap()).unwrap();
        assert_eq!(back, data);
    }
}
