//! The initial snapshot: every captured row as a `r` event, consistent with the slot.
//!
//! The slot is created with an exported snapshot; `parallelism` connections each import it
//! (`SET TRANSACTION SNAPSHOT`) and COPY the tables out in chunks of ctid block ranges, so one
//! large table is read in parallel. Tables whose columns all have a binary reading
//! (`binary_format`) are copied in binary, the rest in text. All readers see exactly the
//! database as of the slot's consistent point, and streaming starts from that point: no change
//! is missed and none is seen twice.
//!
//! Each batch carries whole chunks and records them in its checkpoint (`progress`). After a
//! crash the snapshot resumes at the chunks not yet in the log, on the same slot, reading only
//! the rows unchanged since the original snapshot (see `progress` for why that is exact).

mod begin;
pub(super) mod incremental;
mod phase;
mod progress;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use sluice_core::event::{ChangeEvent, Op, SnapshotMarker, TableSchema};
use sluice_core::position::{Lsn, Position};
use sluice_core::value::Value;
use tokio::sync::mpsc;

use super::binary_format::{self, BinaryType};
use super::catalog::CapturedTable;
use super::protocol::{quote_ident, ConnectParams, Session, WireConnection};
use super::text_format::{self, PgType};
use super::PostgresError;

pub(super) use phase::SnapshotPhase;
pub(super) use progress::{auto_chunk_blocks, chunk_count, ChunkId, SnapshotState, TableProgress};

/// A captured table with everything needed to read and decode it.
#[derive(Debug, Clone)]
pub(super) struct SnapshotTable {
    pub table: CapturedTable,
    pub schema: Arc<TableSchema>,
    pub types: Vec<PgType>,
    /// Each column's binary reading, when every column has one: the table is copied in binary.
    pub binary: Option<Vec<BinaryType>>,
    /// Estimated size in blocks, for splitting.
    pub blocks: u64,
    /// How many chunks of how many blocks the table is read in (fixed when the snapshot
    /// begins, kept when it resumes).
    pub chunks: u32,
    pub chunk_blocks: u64,
    /// The table is one chunk that may be larger than memory: its rows go out as `Read::Part`.
    pub in_parts: bool,
    /// Resuming: read only rows whose inserting transaction this snapshot
    /// (`txid_current_snapshot()` text) saw, as the original snapshot would have.
    pub unchanged_since: Option<String>,
}

/// One unit of reading, committing and resuming: a table's block range.
#[derive(Debug, Clone)]
struct Chunk {
    table: usize,
    id: ChunkId,
    blocks: Option<(u64, Option<u64>)>,
}

/// The chunks still to read, table by table (`done` says which are in the log already).
fn plan(tables: &[SnapshotTable], done: impl Fn(ChunkId) -> bool) -> VecDeque<Chunk> {
    let mut chunks = VecDeque::new();
    for (i, table) in tables.iter().enumerate() {
        for index in 0..table.chunks {
            let id = ChunkId {
                table: table.table.oid,
                index,
            };
            if !done(id) {
                chunks.push_back(Chunk {
                    table: i,
                    id,
                    blocks: progress::chunk_blocks(index, table.chunks, table.chunk_blocks),
                });
            }
        }
    }
    chunks
}

/// What the readers send: a chunk's rows (in parts of about a source batch), then that it
/// ended. A chunk's parts are sent in order, and only its `Done` says it is whole.
pub(super) enum Read {
    Rows(ChunkId, Vec<ChangeEvent>),
    /// Rows of a chunk that is a whole table too large to hold (a partitioned root; a large
    /// table on a server without ctid range scans): they go to the log as they come, and only
    /// the chunk's `Done` counts it. A crash before then reads it again, so these rows reach
    /// the log twice (the same rows; database sinks apply them idempotently).
    Part(Vec<ChangeEvent>),
    Done(ChunkId),
}

/// Which snapshot the readers read in.
#[derive(Debug, Clone)]
pub(super) enum ReadAs {
    /// The one a new slot exported: the slot's consistent point exactly.
    Exported(String),
    /// A fresh one each (resuming): tables say which rows to keep (`unchanged_since`).
    Fresh,
}

/// Starts the snapshot readers on the chunks `done` does not name. Rows arrive on the returned
/// channel in parts of about `chunk_events` (a source batch); the channel closes when every
/// chunk is read (or on the first error, which is sent first).
#[allow(clippy::too_many_arguments)]
pub(super) fn spawn(
    params: ConnectParams,
    read_as: ReadAs,
    tables: Vec<SnapshotTable>,
    done: impl Fn(ChunkId) -> bool,
    parallelism: usize,
    consistent_point: Lsn,
    snapshot_ts_us: i64,
    chunk_events: usize,
) -> mpsc::Receiver<Result<Read, PostgresError>> {
    // Two parts in flight per reader: one being filled, one waiting for the source.
    let (tx, rx) = mpsc::channel(parallelism * 2);
    let queue = plan(&tables, done);
    let tables = Arc::new(tables);
    tracing::info!(
        tables = tables.len(),
        chunks = queue.len(),
        blocks = tables.iter().map(|t| t.blocks).sum::<u64>(),
        parallelism,
        "snapshot reading"
    );
    let queue = Arc::new(Mutex::new(queue));
    for reader in 0..parallelism {
        let reader_ctx = Reader {
            params: params.clone(),
            read_as: read_as.clone(),
            tables: Arc::clone(&tables),
            queue: Arc::clone(&queue),
            position: Position::PgLsn(consistent_point),
            snapshot_ts_us,
            chunk_events: chunk_events.max(1),
        };
        let tx = tx.clone();
        sluice_core::task::spawn_in_span(async move {
            if let Err(err) = reader_ctx.run(&tx).await {
                let _ = tx.send(Err(err)).await;
            }
            tracing::debug!(reader, "snapshot reader done");
        });
    }
    rx
}

struct Reader {
    params: ConnectParams,
    read_as: ReadAs,
    tables: Arc<Vec<SnapshotTable>>,
    queue: Arc<Mutex<VecDeque<Chunk>>>,
    position: Position,
    snapshot_ts_us: i64,
    chunk_events: usize,
}

impl Reader {
    async fn run(
        &self,
        tx: &mpsc::Sender<Result<Read, PostgresError>>,
    ) -> Result<(), PostgresError> {
        let mut conn = WireConnection::open(&self.params, Session::Sql).await?;
        let begin = match &self.read_as {
            ReadAs::Exported(name) => format!(
                "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT '{}'",
                name.replace('\'', "''")
            ),
            ReadAs::Fresh => "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY".to_owned(),
        };
        conn.simple_query(&begin).await?;
        loop {
            let next = self
                .queue
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .pop_front();
            let Some(chunk) = next else { break };
            if !self.copy_chunk(&mut conn, &chunk, tx).await? {
                // The source stopped listening. Closing the socket ends the read-only
                // transaction; a COMMIT would first have to read the rest of the COPY.
                return Ok(());
            }
        }
        conn.simple_query("COMMIT").await?;
        conn.close().await;
        Ok(())
    }

    /// COPYs one chunk out and sends its rows as events, then that it is done; false when the
    /// receiver is gone.
    async fn copy_chunk(
        &self,
        conn: &mut WireConnection,
        chunk: &Chunk,
        tx: &mpsc::Sender<Result<Read, PostgresError>>,
    ) -> Result<bool, PostgresError> {
        let table = &self.tables[chunk.table];
        let columns: Vec<String> = table
            .schema
            .columns
            .iter()
            .map(|c| quote_ident(&c.name))
            .collect();
        let mut query = format!(
            "COPY (SELECT {} FROM {}.{}",
            columns.join(", "),
            quote_ident(&table.table.id.namespace),
            quote_ident(&table.table.id.name)
        );
        let mut conditions = Vec::new();
        if let Some((start, end)) = chunk.blocks {
            conditions.push(format!("ctid >= '({start},0)'::tid"));
            if let Some(end) = end {
                conditions.push(format!("ctid < '({end},0)'::tid"));
            }
        }
        if let Some(snapshot) = &table.unchanged_since {
            // Valid while transaction ids have not wrapped (epoch 0): the source checks.
            conditions.push(format!(
                "txid_visible_in_snapshot(xmin::text::int8, '{}'::txid_snapshot)",
                snapshot.replace('\'', "''")
            ));
        }
        if !conditions.is_empty() {
            query.push_str(" WHERE ");
            query.push_str(&conditions.join(" AND "));
        }
        query.push_str(") TO STDOUT");
        if table.binary.is_some() {
            query.push_str(" (FORMAT binary)");
        }
        conn.copy_out(&query).await?;
        // Rows are parsed where they lie in the connection's read buffer (the server sends one
        // row per message); only a row split across messages is gathered in `carry`.
        let mut framing = Framing::new(table);
        let mut carry = Vec::new();
        // Every event holds a reference to its table's schema. Each chunk gets a copy of its
        // own, so that this reader counting references up and the threads freeing earlier
        // chunks counting them down do not fight over one shared counter (that cost ~10% of
        // the snapshot's CPU).
        let mut schema = Arc::new(TableSchema::clone(&table.schema));
        // One read can parse a few thousand rows past a full chunk: room for them, so that the
        // chunk is not copied into a vector twice its size.
        let capacity = self.chunk_events + self.chunk_events / 2;
        let mut events = Vec::with_capacity(capacity);
        loop {
            let more = conn
                .copy_out_data(|payload| {
                    self.take_rows(
                        table,
                        &schema,
                        &mut framing,
                        &mut carry,
                        payload,
                        &mut events,
                    )
                })
                .await?;
            if !more {
                break;
            }
            if events.len() >= self.chunk_events {
                let full = std::mem::replace(&mut events, Vec::with_capacity(capacity));
                schema = Arc::new(TableSchema::clone(&table.schema));
                let read = if table.in_parts {
                    Read::Part(full)
                } else {
                    Read::Rows(chunk.id, full)
                };
                if tx.send(Ok(read)).await.is_err() {
                    return Ok(false);
                }
            }
        }
        if !carry.is_empty() || !framing.ended() {
            return Err(PostgresError::protocol("COPY output ended inside a row"));
        }
        let read = if table.in_parts {
            Read::Part(events)
        } else {
            Read::Rows(chunk.id, events)
        };
        let empty = matches!(&read, Read::Rows(_, e) | Read::Part(e) if e.is_empty());
        if !empty && tx.send(Ok(read)).await.is_err() {
            return Ok(false);
        }
        Ok(tx.send(Ok(Read::Done(chunk.id))).await.is_ok())
    }

    /// The rows of one CopyData payload (after what `carry` holds of an earlier one) as events.
    fn take_rows(
        &self,
        table: &SnapshotTable,
        schema: &Arc<TableSchema>,
        framing: &mut Framing,
        carry: &mut Vec<u8>,
        payload: &[u8],
        events: &mut Vec<ChangeEvent>,
    ) -> Result<(), PostgresError> {
        let joined;
        let buf = if carry.is_empty() {
            payload
        } else {
            carry.extend_from_slice(payload);
            joined = std::mem::take(carry);
            &joined[..]
        };
        let mut at = 0;
        while let Some(framed) = framing.next_row(&buf[at..])? {
            if let Some(len) = framed.row {
                let row = &buf[at..at + len];
                events.push(match &table.binary {
                    Some(types) => self.binary_row_event(table, schema, types, row)?,
                    None => self.row_event(table, schema, row)?,
                });
            }
            at += framed.consumed;
        }
        carry.extend_from_slice(&buf[at..]);
        Ok(())
    }

    /// A binary COPY row (`binary_format::next` framed it) as an event.
    fn binary_row_event(
        &self,
        table: &SnapshotTable,
        schema: &Arc<TableSchema>,
        types: &[BinaryType],
        row: &[u8],
    ) -> Result<ChangeEvent, PostgresError> {
        if binary_format::field_count(row) != types.len() {
            return Err(PostgresError::protocol(
                "a binary COPY row has a different number of fields than the table has columns",
            ));
        }
        let mut values = Vec::with_capacity(types.len());
        for (i, field) in binary_format::fields(row).enumerate() {
            values.push(match field {
                None => Value::Null,
                Some(data) => {
                    binary_format::parse(types[i], data).map_err(|source| PostgresError::Value {
                        table: table.table.id.to_string(),
                        column: table.schema.columns[i].name.clone(),
                        source,
                    })?
                }
            });
        }
        Ok(self.read_event(schema, values))
    }

    fn row_event(
        &self,
        table: &SnapshotTable,
        schema: &Arc<TableSchema>,
        line: &[u8],
    ) -> Result<ChangeEvent, PostgresError> {
        let mut values = Vec::with_capacity(table.types.len());
        let mut unescaped = Vec::new();
        for (i, field) in line.split(|b| *b == b'\t').enumerate() {
            let ty = table.types.get(i).ok_or_else(|| {
                PostgresError::protocol("COPY row has more fields than the table has columns")
            })?;
            if field == b"\\N" {
                values.push(Value::Null);
                continue;
            }
            let text = if field.contains(&b'\\') {
                unescape_copy_text(field, &mut unescaped);
                &unescaped[..]
            } else {
                field
            };
            let value = text_format::parse(ty, text).map_err(|source| PostgresError::Value {
                table: table.table.id.to_string(),
                column: table.schema.columns[i].name.clone(),
                source,
            })?;
            values.push(value);
        }
        if values.len() != table.types.len() {
            return Err(PostgresError::protocol(
                "COPY row has fewer fields than the table has columns",
            ));
        }
        Ok(self.read_event(schema, values))
    }

    fn read_event(&self, schema: &Arc<TableSchema>, values: Vec<Value>) -> ChangeEvent {
        ChangeEvent {
            op: Op::Read,
            table: Some(Arc::clone(schema)),
            before: None,
            before_is_key_only: false,
            after: Some(values),
            snapshot: SnapshotMarker::Yes,
            commit_ts_us: self.snapshot_ts_us,
            position: self.position.clone(),
            xid: None,
            txn: None,
            message: None,
        }
    }
}

/// Where rows end in a COPY stream: at newlines in text, by length prefixes in binary.
enum Framing {
    Text,
    Binary { header_seen: bool, ended: bool },
}

/// The next framed item: `consumed` bytes, of which the first `row` are a row (or none).
struct Framed {
    row: Option<usize>,
    consumed: usize,
}

impl Framing {
    fn new(table: &SnapshotTable) -> Framing {
        match table.binary {
            Some(_) => Framing::Binary {
                header_seen: false,
                ended: false,
            },
            None => Framing::Text,
        }
    }

    /// The next item at the start of `buf`, or None until more bytes arrive.
    fn next_row(&mut self, buf: &[u8]) -> Result<Option<Framed>, PostgresError> {
        match self {
            Framing::Text => Ok(buf.iter().position(|b| *b == b'\n').map(|end| Framed {
                row: Some(end),
                consumed: end + 1,
            })),
            Framing::Binary { ended: true, .. } if !buf.is_empty() => Err(PostgresError::protocol(
                "binary COPY output continued after its trailer",
            )),
            Framing::Binary { header_seen, ended } => {
                let next = binary_format::next(buf, *header_seen)
                    .map_err(|_| PostgresError::protocol("binary COPY output is malformed"))?;
                Ok(match next {
                    binary_format::Next::Header(len) => {
                        *header_seen = true;
                        Some(Framed {
                            row: None,
                            consumed: len,
                        })
                    }
                    binary_format::Next::Row(len) => Some(Framed {
                        row: Some(len),
                        consumed: len,
                    }),
                    binary_format::Next::End => {
                        *ended = true;
                        Some(Framed {
                            row: None,
                            consumed: 2,
                        })
                    }
                    binary_format::Next::Incomplete => None,
                })
            }
        }
    }

    fn ended(&self) -> bool {
        match self {
            Framing::Text => true,
            Framing::Binary { ended, .. } => *ended,
        }
    }
}

/// Undoes COPY text escaping (`\t`, `\n`, `\\`, octal and hex escapes) into `out`.
fn unescape_copy_text(field: &[u8], out: &mut Vec<u8>) {
    out.clear();
    let mut i = 0;
    while i < field.len() {
        let b = field[i];
        if b != b'\\' || i + 1 == field.len() {
            out.push(b);
            i += 1;
            continue;
        }
        let next = field[i + 1];
        i += 2;
        match next {
            b'b' => out.push(0x08),
            b'f' => out.push(0x0c),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(0x0b),
            b'0'..=b'7' => {
                let mut value = u32::from(next - b'0');
                let mut digits = 1;
                while digits < 3 && i < field.len() && (b'0'..=b'7').contains(&field[i]) {
                    value = value * 8 + u32::from(field[i] - b'0');
                    i += 1;
                    digits += 1;
                }
                out.push(value as u8);
            }
            b'x' if i < field.len() && field[i].is_ascii_hexdigit() => {
                let mut value = 0u32;
                let mut digits = 0;
                while digits < 2 && i < field.len() && field[i].is_ascii_hexdigit() {
                    value = value * 16 + (field[i] as char).to_digit(16).unwrap_or(0);
                    i += 1;
                    digits += 1;
                }
                out.push(value as u8);
            }
            other => out.push(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_text_escapes_are_undone() {
        let mut out = Vec::new();
        unescape_copy_text(br"a\tb\nc\\d\101\x42", &mut out);
        assert_eq!(out, b"a\tb\nc\\dAB");
    }

    #[test]
    fn the_plan_skips_chunks_in_the_log_and_ends_each_table_open() {
        use sluice_core::event::TableId;
        let table = |oid, chunks| SnapshotTable {
            chunk_blocks: 100,
            table: CapturedTable {
                oid,
                id: TableId {
                    namespace: "s".into(),
                    name: "t".into(),
                },
                replica_identity: b'd',
                has_primary_key: true,
            },
            schema: Arc::new(TableSchema {
                table: TableId {
                    namespace: "s".into(),
                    name: "t".into(),
                },
                columns: vec![],
                version: 1,
            }),
            types: vec![],
            binary: None,
            blocks: 0,
            chunks,
            in_parts: false,
            unchanged_since: None,
        };
        let tables = [table(1, 4), table(2, 1)];
        let chunks = plan(&tables, |id| id.table == 1 && id.index == 1);
        let ids: Vec<(u32, u32)> = chunks.iter().map(|c| (c.id.table, c.id.index)).collect();
        assert_eq!(ids, [(1, 0), (1, 2), (1, 3), (2, 0)]);
        assert_eq!(chunks[0].blocks, Some((0, Some(100))));
        assert_eq!(chunks[2].blocks, Some((300, None)));
        assert_eq!(chunks[3].blocks, None);
    }
}
