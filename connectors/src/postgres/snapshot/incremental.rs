//! On-demand snapshots while streaming, with DBLog's watermarks: tables (or a `WHERE` slice
//! of them) re-read in primary-key chunks interleaved with the live stream, with no lock and
//! no pause, and no chunk row ever overwriting a newer streamed change.
//!
//! A chunk is read between two watermarks, non-transactional logical messages
//! (`pg_logical_emit_message(false, 'sluice.watermark', …)`) that reach the stream at the
//! WAL position they were written:
//!
//! 1. the low watermark is written; 2. the chunk is selected (`WHERE key > last key ORDER BY
//!    key LIMIT n`, by the key's index); 3. the high watermark is written.
//!
//! In the stream, every key of the table changed by a transaction between the two watermarks
//! is noted (`replication.rs`, `Window`). At the high watermark the chunk's rows whose keys
//! were not noted go to the log, as `r` events with `source.snapshot = "incremental"`, right
//! there: such a row was unchanged from before the select until the high watermark, so it is
//! the row as of that point, and every later change follows it. Rows whose keys were noted are
//! dropped: the stream already carries newer values. A truncate of the table inside the
//! window drops the whole chunk.
//!
//! What to read comes from signals: `sluice snapshot` (or anyone with SQL) writes a
//! transactional logical message with prefix `sluice.signal` and a JSON body naming the
//! source and the tables; tables that join the source's publication (added to `tables`, or
//! created in a captured schema) are queued the same way. The queue and each table's last key
//! are in every checkpoint (`snapshot_state`, `kind = "incremental"`): a restart resumes at
//! the next chunk.

use std::collections::HashSet;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sluice_core::clock::now_us;
use sluice_core::event::{ChangeEvent, Op, TableId, TableSchema};
use sluice_core::position::{Lsn, Position};
use sluice_core::value::Value;
use tokio_postgres::Client;

use crate::postgres::protocol::quote_ident;
use crate::postgres::text_format::{self, PgType};
use crate::postgres::PostgresError;

/// The prefix of the logical messages that ask a source for an on-demand snapshot.
pub const SIGNAL_PREFIX: &str = "sluice.signal";
/// The prefix of the watermarks around a chunk.
pub(in crate::postgres) const WATERMARK_PREFIX: &str = "sluice.watermark";

/// A request for an on-demand snapshot: the body of a `sluice.signal` message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotSignal {
    /// The source (its `name` in the config) that is to read the tables.
    pub source: String,
    /// Tables as `schema.table`.
    pub snapshot: Vec<String>,
    /// A condition on the tables' rows (SQL), to read only a slice.
    #[serde(default, rename = "where", skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
}

/// A table waiting to be read: its key kept as each column's text.
pub(in crate::postgres) type Pending = crate::incremental::Pending<Vec<String>>;

/// What a checkpoint carries while tables wait to be read.
pub(in crate::postgres) type IncrementalState = crate::incremental::IncrementalState<Vec<String>>;

/// The chunk read between the watermarks, waiting for the high one in the stream.
struct InFlight {
    id: String,
    schema: Arc<TableSchema>,
    /// Each row's key text and values.
    rows: Vec<(Vec<String>, Vec<Value>)>,
    /// Fewer rows than asked for: the table (or slice) is done after this chunk.
    last: bool,
}

/// The window a chunk's watermarks open and close in the stream (kept by `replication.rs`).
#[derive(Debug)]
pub(in crate::postgres) struct Window {
    pub id: String,
    pub table: TableId,
    pub state: WindowState,
    /// Keys of the table changed by transactions seen while open.
    pub keys: HashSet<Vec<String>>,
    /// The table was truncated while open.
    pub truncated: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::postgres) enum WindowState {
    /// Written the low watermark; the stream has not reached it yet.
    Waiting,
    Open,
    /// The stream reached the high watermark, at this position.
    Closed(Lsn),
}

impl Window {
    /// Notes the keys of `events` that belong to the window's table, while it is open.
    pub(in crate::postgres) fn note(&mut self, events: &[ChangeEvent]) {
        if self.state != WindowState::Open {
            return;
        }
        for event in events {
            let Some(table) = event.table.as_deref() else {
                continue;
            };
            if table.table != self.table {
                continue;
            }
            if event.op == Op::Truncate {
                self.truncated = true;
                continue;
            }
            for row in [event.before.as_deref(), event.after.as_deref()]
                .into_iter()
                .flatten()
            {
                if let Some(key) = key_text(table, row) {
                    self.keys.insert(key);
                }
            }
        }
    }

    /// Reads a watermark's body (`<slot>:<id>:low|high`) for this window.
    pub(in crate::postgres) fn watermark(&mut self, slot: &str, body: &[u8], lsn: Lsn) {
        let Ok(body) = std::str::from_utf8(body) else {
            return;
        };
        let mut parts = body.rsplitn(3, ':');
        let (Some(which), Some(id), Some(from)) = (parts.next(), parts.next(), parts.next()) else {
            return;
        };
        if from != slot || id != self.id {
            return;
        }
        match (which, self.state) {
            ("low", WindowState::Waiting) => self.state = WindowState::Open,
            ("high", WindowState::Open) => self.state = WindowState::Closed(lsn),
            _ => {}
        }
    }
}

/// A row's key, each column in Postgres' text form (None: part of the key is missing).
pub(in crate::postgres) fn key_text(table: &TableSchema, row: &[Value]) -> Option<Vec<String>> {
    table
        .key_columns()
        .map(|(i, _)| {
            let value = row.get(i)?;
            if matches!(value, Value::Unavailable | Value::Null) {
                return None;
            }
            let mut text = String::new();
            crate::postgres::sink::write_text(&mut text, value);
            Some(text)
        })
        .collect()
}

/// On-demand snapshots of one source: the queue, and the chunk between its watermarks.
pub(in crate::postgres) struct Incremental {
    pub state: IncrementalState,
    slot: String,
    chunk_rows: usize,
    in_flight: Option<InFlight>,
    next_id: u64,
}

impl Incremental {
    pub(in crate::postgres) fn new(
        slot: String,
        chunk_rows: usize,
        state: IncrementalState,
    ) -> Incremental {
        Incremental {
            state,
            slot,
            chunk_rows: chunk_rows.max(1),
            in_flight: None,
            // Distinct from the ids of a previous run, whose watermarks may be replayed.
            next_id: u64::try_from(now_us()).unwrap_or(0),
        }
    }

    /// The checkpoint's `snapshot_state` (None when nothing is queued).
    pub(in crate::postgres) fn checkpoint_state(&self) -> Option<serde_json::Value> {
        self.state.checkpoint_state()
    }

    /// Queues tables to read (a table already queued with the same slice is left as it is).
    pub(in crate::postgres) async fn queue(
        &mut self,
        client: &Client,
        tables: &[TableId],
        filter: Option<&str>,
    ) -> Result<(), PostgresError> {
        for table in tables {
            if self.state.is_queued(table, filter) {
                continue;
            }
            let estimate: f64 = client
                .query_one(
                    "SELECT greatest(c.reltuples, 0)::float8 FROM pg_class c \
                     JOIN pg_namespace n ON n.oid = c.relnamespace \
                     WHERE n.nspname = $1 AND c.relname = $2",
                    &[&table.namespace, &table.name],
                )
                .await?
                .get(0);
            self.state.push(table, filter, estimate, self.chunk_rows);
        }
        Ok(())
    }

    /// Reads the next chunk between two watermarks, unless one is already waiting for its
    /// high watermark; returns the window the stream is to keep (None: nothing to read).
    /// `describe` gives the table's schema and column readings.
    pub(in crate::postgres) async fn read_chunk(
        &mut self,
        client: &Client,
        schema: Arc<TableSchema>,
        types: &[PgType],
    ) -> Result<Option<Window>, PostgresError> {
        let Some(pending) = self.state.queue.front() else {
            return Ok(None);
        };
        if self.in_flight.is_some() {
            return Ok(None);
        }
        let table = pending.id();
        if !schema.has_key() {
            tracing::warn!(%table, "on-demand snapshot skipped: the table has no primary key to read it in chunks by");
            self.state.queue.pop_front();
            return Ok(None);
        }
        self.next_id += 1;
        let id = self.next_id.to_string();
        let window = Window {
            id: id.clone(),
            table: table.clone(),
            state: WindowState::Waiting,
            keys: HashSet::new(),
            truncated: false,
        };
        self.emit(client, &id, "low").await?;
        let (sql, after) = chunk_query(&schema, pending, self.chunk_rows);
        let rows = match &after {
            Some(after) => client.query(&sql, &[after]).await,
            None => client.query(&sql, &[]).await,
        };
        let rows = match rows {
            Ok(rows) => rows,
            // The server refused the read itself (no SELECT, a `where` that does not parse):
            // that request is dropped, the stream and the rest of the queue go on.
            Err(err) if err.as_db_error().is_some() => {
                tracing::error!(
                    %table,
                    filter = pending.filter.as_deref(),
                    error = %crate::postgres::ErrorText(&err),
                    "on-demand snapshot dropped: the table cannot be read this way; grant the \
                     source's user SELECT on it, or correct the `where` condition, and ask again"
                );
                self.state.queue.pop_front();
                return Ok(None);
            }
            Err(err) => return Err(PostgresError::Query(err)),
        };
        self.emit(client, &id, "high").await?;
        let mut read = Vec::with_capacity(rows.len());
        for row in &rows {
            let mut values = Vec::with_capacity(types.len());
            for (i, pg_type) in types.iter().enumerate() {
                let text: Option<&str> = row.get(i);
                values.push(match text {
                    None => Value::Null,
                    Some(text) => {
                        text_format::parse(pg_type, text.as_bytes()).map_err(|source| {
                            PostgresError::Value {
                                table: table.to_string(),
                                column: schema.columns[i].name.clone(),
                                source,
                            }
                        })?
                    }
                });
            }
            let key = key_text(&schema, &values).ok_or_else(|| {
                PostgresError::protocol(format!("a row of {table} without its key"))
            })?;
            read.push((key, values));
        }
        self.in_flight = Some(InFlight {
            id,
            last: read.len() < self.chunk_rows,
            schema,
            rows: read,
        });
        Ok(Some(window))
    }

    async fn emit(&self, client: &Client, id: &str, which: &str) -> Result<(), PostgresError> {
        let body = format!("{}:{id}:{which}", self.slot);
        client
            .execute(
                "SELECT pg_logical_emit_message(false, $1::text, $2::text)",
                &[&WATERMARK_PREFIX, &body],
            )
            .await?;
        Ok(())
    }

    /// The stream reached the chunk's high watermark: its rows not changed in the window, as
    /// events at that position; the queue moves on.
    pub(in crate::postgres) fn finish_chunk(&mut self, window: Window) -> Vec<ChangeEvent> {
        let WindowState::Closed(lsn) = window.state else {
            return Vec::new();
        };
        let Some(chunk) = self.in_flight.take_if(|chunk| chunk.id == window.id) else {
            return Vec::new();
        };
        if self.state.queue.is_empty() {
            return Vec::new();
        }
        let last_key = chunk.rows.last().map(|(key, _)| key.clone());
        self.state.advance(last_key, chunk.last);
        let kept = chunk
            .rows
            .into_iter()
            .filter(|(key, _)| !window.truncated && !window.keys.contains(key))
            .map(|(_, values)| values);
        crate::incremental::read_events(&chunk.schema, kept, &Position::PgLsn(lsn))
    }

    /// The table the next chunk reads.
    pub(in crate::postgres) fn next_table(&self) -> Option<TableId> {
        self.state.queue.front().map(Pending::id)
    }

    /// A chunk waits for its high watermark.
    pub(in crate::postgres) fn in_flight(&self) -> bool {
        self.in_flight.is_some()
    }
}

impl crate::postgres::PostgresSource {
    /// While streaming: queues the tables that joined the publication, and reads the next
    /// chunk when none waits for its high watermark.
    pub(in crate::postgres) async fn next_chunk(&mut self) -> Result<(), PostgresError> {
        let (Some(incremental), crate::postgres::Phase::Streaming(stream), Some(ctx)) = (
            self.incremental.as_mut(),
            &mut self.phase,
            self.ctx.as_mut(),
        ) else {
            return Ok(());
        };
        if !self.joined.is_empty() {
            let joined = std::mem::take(&mut self.joined);
            incremental.queue(&ctx.client, &joined, None).await?;
        }
        if incremental.in_flight() || stream.window.is_some() {
            return Ok(());
        }
        let Some(table) = incremental.next_table() else {
            return Ok(());
        };
        let described = match stream.relation_of(&table) {
            Some(known) => Some(known),
            None => {
                let oid = ctx
                    .client
                    .query_opt(
                        "SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                         WHERE n.nspname = $1 AND c.relname = $2",
                        &[&table.namespace, &table.name],
                    )
                    .await?
                    .map(|row| row.get::<_, u32>(0));
                match oid {
                    Some(oid) => {
                        let captured = crate::postgres::catalog::CapturedTable {
                            oid,
                            id: table.clone(),
                            replica_identity: b'd',
                            has_primary_key: true,
                        };
                        let (_, columns, types) = crate::postgres::catalog::describe(
                            &ctx.client,
                            &mut ctx.resolver,
                            &captured,
                        )
                        .await?;
                        let schema = TableSchema {
                            table: table.clone(),
                            columns,
                            version: 1,
                        };
                        Some((Arc::new(schema), types))
                    }
                    None => None,
                }
            }
        };
        let Some((schema, types)) = described else {
            tracing::warn!(%table, "on-demand snapshot dropped: the table no longer exists");
            incremental.state.queue.pop_front();
            return Ok(());
        };
        stream.window = incremental.read_chunk(&ctx.client, schema, &types).await?;
        Ok(())
    }

    /// When the batch ends at the chunk's high watermark: the chunk's rows after it.
    pub(in crate::postgres) fn chunk_rows_into(&mut self, events: &mut Vec<ChangeEvent>) {
        let (Some(incremental), crate::postgres::Phase::Streaming(stream)) =
            (self.incremental.as_mut(), &mut self.phase)
        else {
            return;
        };
        if !matches!(
            stream.window.as_ref().map(|w| w.state),
            Some(WindowState::Closed(_))
        ) {
            return;
        }
        let window = stream.window.take().expect("matched above");
        events.extend(incremental.finish_chunk(window));
    }

    /// Queues the tables of the snapshot requests the stream read.
    pub(in crate::postgres) async fn take_signals(&mut self) -> Result<(), PostgresError> {
        let (Some(incremental), crate::postgres::Phase::Streaming(stream), Some(ctx)) = (
            self.incremental.as_mut(),
            &mut self.phase,
            self.ctx.as_ref(),
        ) else {
            return Ok(());
        };
        if stream.signals.is_empty() {
            return Ok(());
        }
        let signals = std::mem::take(&mut stream.signals);
        if self.standby {
            for signal in &signals {
                tracing::error!(
                    tables = ?signal.snapshot,
                    "on-demand snapshot request dropped: this source reads a standby, and an \
                     on-demand snapshot writes watermarks into the WAL, which a standby cannot; \
                     run it from a source on the primary"
                );
            }
            return Ok(());
        }
        let captured = crate::postgres::catalog::resolve_tables(
            &ctx.client,
            &self.config.tables,
            &self.config.exclude,
        )
        .await?
        .captured;
        for signal in signals {
            let mut tables = Vec::new();
            for name in &signal.snapshot {
                match captured.iter().find(|t| t.id.to_string() == *name) {
                    Some(table) => tables.push(table.id.clone()),
                    None => tracing::warn!(
                        table = %name,
                        "on-demand snapshot request ignored for a table this source does not capture"
                    ),
                }
            }
            incremental
                .queue(&ctx.client, &tables, signal.filter.as_deref())
                .await?;
        }
        Ok(())
    }
}

/// The chunk's SELECT (every column as text, in key order) and its parameter: the last key
/// read, as a JSON object the table's row type reads with each key column's type.
fn chunk_query(schema: &TableSchema, pending: &Pending, limit: usize) -> (String, Option<String>) {
    let qualified = format!(
        "{}.{}",
        quote_ident(&pending.namespace),
        quote_ident(&pending.name)
    );
    let columns: Vec<String> = schema
        .columns
        .iter()
        .map(|c| format!("t.{}::text", quote_ident(&c.name)))
        .collect();
    let keys: Vec<&str> = schema.key_columns().map(|(_, c)| c.name.as_str()).collect();
    let key_list = |prefix: &str| {
        keys.iter()
            .map(|k| format!("{prefix}.{}", quote_ident(k)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut conditions = Vec::new();
    let after = pending.after.as_ref().map(|after| {
        let object: serde_json::Map<String, serde_json::Value> = keys
            .iter()
            .zip(after)
            .map(|(k, v)| ((*k).to_owned(), serde_json::Value::from(v.as_str())))
            .collect();
        serde_json::Value::Object(object).to_string()
    });
    if after.is_some() {
        conditions.push(format!(
            "({}) > (SELECT {} FROM json_populate_record(NULL::{qualified}, $1::text::json) AS k)",
            key_list("t"),
            key_list("k")
        ));
    }
    if let Some(filter) = &pending.filter {
        conditions.push(format!("({filter})"));
    }
    let condition = if conditions.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conditions.join(" AND "))
    };
    (
        format!(
            "SELECT {} FROM {qualified} AS t{condition} ORDER BY {} LIMIT {limit}",
            columns.join(", "),
            key_list("t")
        ),
        after,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_core::event::{Column, DataType};

    fn schema() -> TableSchema {
        let column = |name: &str, key: bool| Column {
            name: name.into(),
            type_name: "integer".into(),
            data_type: DataType::Int32,
            key,
            nullable: !key,
        };
        TableSchema {
            table: TableId {
                namespace: "public".into(),
                name: "t".into(),
            },
            columns: vec![column("a", true), column("b", true), column("v", false)],
            version: 1,
        }
    }

    #[test]
    fn chunks_follow_the_key_from_the_last_row_read_and_keep_the_slice() {
        let mut pending = Pending {
            namespace: "public".into(),
            name: "t".into(),
            filter: Some("v > 10".into()),
            after: None,
            chunks_done: 0,
            chunks_total: 1,
        };
        let (sql, after) = chunk_query(&schema(), &pending, 100);
        assert_eq!(after, None);
        assert_eq!(
            sql,
            "SELECT t.\"a\"::text, t.\"b\"::text, t.\"v\"::text FROM \"public\".\"t\" AS t \
             WHERE (v > 10) ORDER BY t.\"a\", t.\"b\" LIMIT 100"
        );
        pending.after = Some(vec!["1".into(), "x\"y".into()]);
        let (sql, after) = chunk_query(&schema(), &pending, 100);
        assert!(sql.contains(
            "WHERE (t.\"a\", t.\"b\") > (SELECT k.\"a\", k.\"b\" FROM json_populate_record(NULL::\"public\".\"t\", $1::text::json) AS k) AND (v > 10)"
        ), "{sql}");
        assert_eq!(after.as_deref(), Some(r#"{"a":"1","b":"x\"y"}"#));
    }

    #[test]
    fn a_window_opens_and_closes_on_its_own_watermarks_only() {
        let mut window = Window {
            id: "7".into(),
            table: schema().table,
            state: WindowState::Waiting,
            keys: HashSet::new(),
            truncated: false,
        };
        window.watermark("slot", b"other:7:low", Lsn(1));
        window.watermark("slot", b"slot:6:low", Lsn(1));
        assert_eq!(window.state, WindowState::Waiting);
        window.watermark("slot", b"slot:7:high", Lsn(2));
        assert_eq!(window.state, WindowState::Waiting, "high before low");
        window.watermark("slot", b"slot:7:low", Lsn(3));
        assert_eq!(window.state, WindowState::Open);
        window.watermark("slot", b"slot:7:high", Lsn(4));
        assert_eq!(window.state, WindowState::Closed(Lsn(4)));
    }
}
