//! The source's side of beginning a snapshot: each table's columns, types, size and chunking
//! read from the catalog; a new slot exporting the snapshot, or the plan of a resumed one
//! (`progress.rs` says why it is exact); batches of whole chunks until the last, then streaming.

use std::sync::Arc;

use sluice_core::checkpoint::{Checkpoint, SnapshotProgress};
use sluice_core::clock::now_us;
use sluice_core::event::TableSchema;
use sluice_core::position::{Lsn, Position};
use sluice_core::source::SourceBatch;

use super as snapshot;
use super::{ReadAs, SnapshotPhase, SnapshotState, SnapshotTable, TableProgress};
use crate::postgres::replication::Stream;
use crate::postgres::{binary_format, catalog, setup, Phase, PostgresError, PostgresSource};

impl PostgresSource {
    /// Starts the initial snapshot, or resumes one from `resume` (its progress, and the
    /// consistent point of the slot it began on, which is still there).
    pub(in crate::postgres) async fn begin_snapshot(
        &mut self,
        server_version: i32,
        tables: &[catalog::CapturedTable],
        resume: Option<(SnapshotState, Lsn)>,
    ) -> Result<(), PostgresError> {
        let slot = self.config.slot_name();
        let tid_range_scans = server_version >= 140_000;
        let max_events = self.limits().max_events;
        let ctx = self.ctx.as_mut().expect("catalog connected in start");
        let mut snapshot_tables = Vec::with_capacity(tables.len());
        let mut filenodes = Vec::with_capacity(tables.len());
        for table in tables {
            let (columns, schema_columns, types) =
                catalog::describe(&ctx.client, &mut ctx.resolver, table).await?;
            let size = ctx
                .client
                .query_one(
                    "SELECT (pg_relation_size(c.oid) / current_setting('block_size')::int)::int8, \
                     coalesce(pg_relation_filenode(c.oid), 0)::int8, \
                     CASE WHEN c.relpages > 0 AND c.reltuples > 0 \
                          THEN (c.reltuples / c.relpages)::float8 END, \
                     c.relkind = 'p' \
                     FROM pg_class c WHERE c.oid = $1::oid",
                    &[&table.oid],
                )
                .await?;
            let blocks = u64::try_from(size.get::<_, i64>(0)).unwrap_or(0);
            filenodes.push(size.get::<_, i64>(1));
            let resumed = resume
                .as_ref()
                .and_then(|(state, _)| state.table(table.oid));
            let chunk_blocks = match (resumed, self.config.snapshot_chunk_blocks) {
                (Some(progress), _) => progress.chunk_blocks,
                (None, Some(blocks)) => blocks,
                (None, None) => {
                    snapshot::auto_chunk_blocks(size.get::<_, Option<f64>>(2), max_events)
                }
            };
            snapshot_tables.push(SnapshotTable {
                table: table.clone(),
                schema: Arc::new(TableSchema {
                    table: table.id.clone(),
                    columns: schema_columns,
                    version: 1,
                }),
                types,
                binary: columns
                    .iter()
                    .map(|c| binary_format::BinaryType::of(c.type_oid))
                    .collect(),
                blocks,
                chunks: snapshot::chunk_count(blocks, chunk_blocks, tid_range_scans),
                chunk_blocks,
                // One chunk that may not fit in memory: a partitioned root (its rows are in
                // its partitions), or a table larger than a chunk that cannot be cut by ctid.
                in_parts: size.get::<_, bool>(3) || (!tid_range_scans && blocks > chunk_blocks),
                unchanged_since: None,
            });
        }
        let (conn, read_as, consistent_point, state) = match resume {
            None => {
                let mut conn = self.connect_replication().await?;
                self.before_slot_creation();
                let created =
                    setup::create_slot(&mut conn, &slot, true, self.config.failover_slot).await?;
                let snapshot_name = created
                    .snapshot_name
                    .ok_or_else(|| PostgresError::protocol("the slot exported no snapshot"))?;
                let ctx = self.ctx.as_ref().expect("catalog connected in start");
                let txid_snapshot = setup::txid_snapshot_of(&ctx.client, &snapshot_name).await?;
                let mut state = SnapshotState {
                    txid_snapshot,
                    snapshot_ts_us: now_us(),
                    chunks_total: 0,
                    chunks_done: 0,
                    by_table: Default::default(),
                    tables: snapshot_tables
                        .iter()
                        .zip(&filenodes)
                        .map(|(t, filenode)| TableProgress {
                            oid: t.table.oid,
                            name: t.table.id.to_string(),
                            filenode: *filenode,
                            chunk_blocks: t.chunk_blocks,
                            chunks: t.chunks,
                            done: Vec::new(),
                        })
                        .collect(),
                };
                state.recount();
                (
                    Some(conn),
                    ReadAs::Exported(snapshot_name),
                    created.consistent_point,
                    state,
                )
            }
            Some((state, consistent_point)) => {
                let ctx = self.ctx.as_ref().expect("catalog connected in start");
                let state =
                    resume_plan(&ctx.client, state, &mut snapshot_tables, &filenodes).await?;
                (None, ReadAs::Fresh, consistent_point, state)
            }
        };
        let done = {
            let state = state.clone();
            move |id: snapshot::ChunkId| state.table(id.table).is_some_and(|t| t.is_done(id.index))
        };
        let rx = snapshot::spawn(
            self.connect_params()?,
            read_as,
            snapshot_tables,
            done,
            self.config.snapshot_parallelism,
            consistent_point,
            state.snapshot_ts_us,
            self.limits().max_events,
        );
        let resumed = conn.is_none();
        self.phase = Phase::Snapshot(Box::new(SnapshotPhase::new(
            conn,
            rx,
            consistent_point,
            state,
            resumed,
        )));
        Ok(())
    }

    pub(in crate::postgres) async fn next_snapshot_batch(
        &mut self,
    ) -> Result<Option<SourceBatch>, PostgresError> {
        let limits = self.limits();
        let Phase::Snapshot(phase) = &mut self.phase else {
            unreachable!("called in the snapshot phase")
        };
        let in_progress = |phase: &SnapshotPhase| Checkpoint {
            position: Position::PgLsn(phase.consistent_point),
            snapshot: SnapshotProgress::InProgress,
            snapshot_state: Some(phase.state.to_value()),
        };
        if !phase.claimed {
            // Before any row: proof for a restart that the slot is this source's (see start).
            phase.claimed = true;
            return Ok(Some(SourceBatch::new(Vec::new(), Some(in_progress(phase)))));
        }
        let Some(batch) = phase.next_batch(limits.max_events).await? else {
            return Ok(None);
        };
        if !batch.finished {
            return Ok(Some(SourceBatch::new(
                batch.events,
                Some(in_progress(phase)),
            )));
        }
        tracing::info!(consistent_point = %phase.consistent_point, "snapshot complete");
        let Phase::Snapshot(phase) = std::mem::replace(&mut self.phase, Phase::Stopped) else {
            unreachable!()
        };
        let conn = match phase.conn {
            Some(conn) => conn,
            None => self.connect_replication().await?,
        };
        let stream = Stream::start(conn, self.stream_settings(), phase.consistent_point).await?;
        self.streaming(stream);
        Ok(Some(SourceBatch::new(
            batch.events,
            Some(Checkpoint {
                position: Position::PgLsn(phase.consistent_point),
                snapshot: SnapshotProgress::Done,
                snapshot_state: None,
            }),
        )))
    }
}

/// Readies a resumed snapshot: tables it had begun keep their chunking and done chunks (all
/// of them read again if the table was rewritten since), and read only the rows the original
/// snapshot saw, unless transaction ids wrapped since; tables new to the publication are read
/// whole. Returns the state to go on from.
async fn resume_plan(
    client: &tokio_postgres::Client,
    mut state: SnapshotState,
    tables: &mut [SnapshotTable],
    filenodes: &[i64],
) -> Result<SnapshotState, PostgresError> {
    let now_xmax: i64 = client
        .query_one("SELECT txid_snapshot_xmax(txid_current_snapshot())", &[])
        .await?
        .get(0);
    // Below 2^32 the 32-bit xmin of a row is its full transaction id, and the comparison with
    // the original snapshot is exact. Past it an old frozen row's xmin is ambiguous: read
    // everything as of now (streaming then replays changes made since the original snapshot
    // after rows that already show them; the end state is the same).
    let exact = now_xmax < (1 << 32) && state.xmax().is_some_and(|x| x < (1 << 32));
    if !exact {
        tracing::warn!(
            "transaction ids have wrapped since the database began: the resumed chunks are read \
             as of now, so changes made since the snapshot began arrive after rows that already \
             show them (the end state is the same)"
        );
    }
    let mut kept = Vec::with_capacity(tables.len());
    for (table, filenode) in tables.iter_mut().zip(filenodes) {
        let progress = match state.table(table.table.oid) {
            Some(progress) if progress.filenode == *filenode => {
                table.chunks = progress.chunks;
                table.chunk_blocks = progress.chunk_blocks;
                table.unchanged_since = exact.then(|| state.txid_snapshot.clone());
                progress.clone()
            }
            Some(progress) => {
                tracing::warn!(table = %table.table.id, "the table was rewritten (VACUUM FULL, CLUSTER, ALTER TYPE) while the snapshot was interrupted: reading it again from its start");
                table.unchanged_since = exact.then(|| state.txid_snapshot.clone());
                TableProgress {
                    filenode: *filenode,
                    chunk_blocks: table.chunk_blocks,
                    chunks: table.chunks,
                    done: Vec::new(),
                    ..progress.clone()
                }
            }
            None => {
                tracing::warn!(table = %table.table.id, "a table new to the publication is read whole as of now");
                TableProgress {
                    oid: table.table.oid,
                    name: table.table.id.to_string(),
                    filenode: *filenode,
                    chunk_blocks: table.chunk_blocks,
                    chunks: table.chunks,
                    done: Vec::new(),
                }
            }
        };
        kept.push(progress);
    }
    state.tables = kept;
    state.recount();
    tracing::info!(
        done = state.chunks_done,
        total = state.chunks_total,
        "resuming the interrupted snapshot at the chunks not yet in the log"
    );
    Ok(state)
}
