//! What the database sinks (Postgres, MySQL/MariaDB) share: a batch of typed changes turned
//! into per-table work that a target applies in one transaction together with the sink's
//! offsets.
//!
//! Within a batch only the final state of each key matters, so keyed tables get one upsert or
//! one delete per key (applied as set operations), in table-version order; a truncate splits a
//! table's work in two. Tables without a key keep every operation in order, matching rows on
//! all columns (which needs the full old row: REPLICA IDENTITY FULL). That planning is in
//! `replica/plan.rs`; this file runs a target's batches (`ReplicaSink`, a `ChangeSink`).
//!
//! Decoding, holding batches to whole source transactions and splitting them at schema changes
//! are the sink runtime's (`sluice_core::pipeline::TypedSink`): each batch here has one version
//! per table, and the target's table is changed to it just before its rows are applied.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use sluice_core::change::SourcedChange;
use sluice_core::event::TableSchema;
use sluice_core::pipeline::TypedSink;
use sluice_core::retry::Classify;
use sluice_core::sink::{
    ChangeBatch, ChangeSink, DeadLetter, DeadLetterError, DeadLetterWriter, Offsets, SinkRecord,
};
use sluice_schema_registry::changes::RecordDecoder;
use sluice_schema_registry::registry::Registry;

mod apply;
mod plan;

pub use self::apply::{apply_steps, Statements};
pub use self::plan::{plan, KeylessOp, PlanError, Row, Step, TableWork};

/// A target table whose primary key is not the source's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the key of {table} is ({source_key}) at the source but ({target_key}) in the target \
     {target}; sluice does not change primary keys: change the target's key to match (or drop \
     the target table to have it recreated) and restart"
)]
pub struct KeyMismatch {
    pub table: String,
    /// The key columns, comma-separated, in the order each side declares them.
    pub source_key: String,
    pub target_key: String,
    pub target: String,
}

/// The target's primary key (`target_key`, in any order) must be the source's: sluice does not
/// change keys.
pub fn check_key(
    table: &TableSchema,
    target_key: &[String],
    target: &str,
) -> Result<(), KeyMismatch> {
    let mut source: Vec<&str> = table.key_columns().map(|(_, c)| c.name.as_str()).collect();
    let mut existing: Vec<&str> = target_key.iter().map(String::as_str).collect();
    let (source_key, shown_target) = (source.join(", "), existing.join(", "));
    source.sort_unstable();
    existing.sort_unstable();
    if source == existing {
        return Ok(());
    }
    Err(KeyMismatch {
        table: table.table.to_string(),
        source_key,
        target_key: shown_target,
        target: target.to_owned(),
    })
}

/// Writes dead letters (logging each) through `writer`; nothing to do for none.
pub async fn deliver_dead_letters(
    writer: Option<&DeadLetterWriter>,
    dead: Vec<DeadLetter>,
) -> Result<(), DeadLetterError> {
    if dead.is_empty() {
        return Ok(());
    }
    for letter in &dead {
        tracing::warn!(topic = %letter.record.topic, partition = letter.record.partition,
            offset = letter.record.record.offset, error = %letter.error,
            "event rejected by the target; sent to the dead-letter topic");
    }
    let writer = writer.ok_or(DeadLetterError::NoTopic)?;
    writer(dead).await
}

/// A batch planned, ready for a target to apply in one transaction.
pub struct Prepared {
    pub work: Vec<TableWork>,
    /// Next offset per partition, to store with the rows.
    pub offsets: Offsets,
    /// Per partition: first offset, last offset, records (only with `batch_history`).
    pub ranges: BTreeMap<(Arc<str>, u32), (u64, u64, i32)>,
    /// With a dead-letter topic: the records, and the changes that could be planned, to apply
    /// one by one when the target rejects the batch.
    pub records: Vec<SinkRecord>,
    pub changes: Vec<SourcedChange>,
    /// Records already known to be dead letters (they could not be planned).
    pub dead: Vec<DeadLetter>,
    /// Topic and log offset of every record of the batch (`Row::record` and
    /// `TableWork::record` index it): search sinks route by topic and version documents by
    /// offset.
    pub origins: Vec<(Arc<str>, u64)>,
    /// Commit the destination transaction after this batch. False: more of the source
    /// transaction follows; keep the transaction open (see `ChangeBatch::ends_transaction`).
    pub commit: bool,
}

/// Why a batch could not be prepared: an event cannot be applied as it is (and there is no
/// dead-letter topic to put it in).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaError(pub String);

/// A database the sink applies batches to.
pub trait Target: Send + 'static {
    type Error: std::error::Error + Classify + Send + Sync + 'static + From<ReplicaError>;

    /// Connects, creates the offsets table if needed, and returns the stored offsets. A
    /// transaction left open by an earlier failure is rolled back.
    fn open(&mut self) -> impl Future<Output = Result<Offsets, Self::Error>> + Send;

    /// Applies a batch and its offsets in the open transaction (beginning one if none is
    /// open), and commits it when the batch says so. An error rolls the open transaction back.
    fn apply(&mut self, batch: Prepared) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// The sink has caught up and waits for new records (targets that relaxed something for
    /// a bulk load put it back here).
    fn idle(&mut self) -> impl Future<Output = Result<(), Self::Error>> + Send {
        async { Ok(()) }
    }

    /// Releases connections.
    fn close(&mut self) {}
}

/// How a database sink batches.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReplicaSettings {
    pub dead_letters: bool,
    pub batch_history: bool,
    /// Apply whole source transactions only (`transactional`).
    pub whole_commits: bool,
    /// With `whole_commits`: record bytes held back before a transaction goes over in parts.
    pub max_pending_bytes: usize,
}

/// A database sink as the runtime runs it: `target` fed with typed changes decoded through
/// `registry`, whole source transactions only when the settings say so.
pub fn typed_sink<T: Target>(
    target: T,
    settings: ReplicaSettings,
    registry: Arc<Registry>,
) -> TypedSink<ReplicaSink<T>, RecordDecoder> {
    TypedSink::new(
        ReplicaSink::new(target, settings),
        RecordDecoder::new(registry),
        settings.whole_commits,
    )
    .max_pending_bytes(settings.max_pending_bytes)
}

/// A database sink: plans each batch on the sink's task while the target applies the previous
/// one on its own task. `write` returns once the batch is planned and the previous one
/// applied, so a failure of batch N surfaces at the write of batch N+1, at `flush` (before the
/// runtime idles) or at `close`. That is safe because the target's offsets table, not the log's
/// consumer group, says where the sink resumes.
pub struct ReplicaSink<T: Target> {
    settings: ReplicaSettings,
    target: Option<T>,
    /// The batch being applied and, when it commits, the offsets its transaction stores.
    in_flight: Option<(InFlight<T>, Option<Offsets>)>,
    /// What the target holds: the offsets it returned from `open`, advanced by each
    /// transaction it committed.
    applied: Offsets,
    /// Offsets of batches applied in the target's open transaction, not committed yet.
    uncommitted: Offsets,
}

/// A batch being applied: the target comes back with the result.
type InFlight<T> = tokio::task::JoinHandle<(T, Result<(), <T as Target>::Error>)>;

impl<T: Target> ReplicaSink<T> {
    pub fn new(target: T, settings: ReplicaSettings) -> ReplicaSink<T> {
        ReplicaSink {
            settings,
            target: Some(target),
            in_flight: None,
            applied: Offsets::new(),
            uncommitted: Offsets::new(),
        }
    }

    /// The target, once the batch it was applying (if any) is done.
    async fn target(&mut self) -> Result<T, T::Error> {
        if let Some((handle, offsets)) = self.in_flight.take() {
            let (target, result) = match handle.await {
                Ok(done) => done,
                Err(join) => std::panic::resume_unwind(join.into_panic()),
            };
            self.target = Some(target);
            result?;
            self.applied.extend(offsets.into_iter().flatten());
        }
        Ok(self
            .target
            .take()
            .expect("the target is home when nothing is in flight"))
    }

    fn prepare(&mut self, batch: ChangeBatch<'_>) -> Result<Prepared, ReplicaError> {
        // Events that cannot be planned (e.g. an update of a keyless table without its old
        // row) are dead letters when a dead-letter topic is configured.
        let dead_letters = self.settings.dead_letters;
        let records = batch.records;
        let commit = batch.ends_transaction;
        let mut dead: Vec<DeadLetter> = Vec::new();
        let offsets = batch.next_offsets();
        let mut changes = batch.changes;
        let work = loop {
            let planned = if dead_letters {
                plan(changes.clone())
            } else {
                plan(std::mem::take(&mut changes))
            };
            match planned {
                Ok(work) => break work,
                Err(err) if dead_letters => {
                    changes.retain(|c| c.record != err.record);
                    dead.push(DeadLetter {
                        record: records[err.record].clone(),
                        error: err.message,
                    });
                }
                Err(err) => return Err(ReplicaError(err.message)),
            }
        };
        let mut ranges: BTreeMap<(Arc<str>, u32), (u64, u64, i32)> = BTreeMap::new();
        if self.settings.batch_history {
            for record in records {
                let entry = ranges
                    .entry((Arc::clone(&record.topic), record.partition))
                    .or_insert((record.record.offset, record.record.offset, 0));
                entry.0 = entry.0.min(record.record.offset);
                entry.1 = entry.1.max(record.record.offset);
                entry.2 += 1;
            }
        }
        Ok(Prepared {
            work,
            offsets,
            ranges,
            records: if dead_letters {
                records.to_vec()
            } else {
                Vec::new()
            },
            changes,
            dead,
            origins: records
                .iter()
                .map(|r| (Arc::clone(&r.topic), r.record.offset))
                .collect(),
            commit,
        })
    }
}

impl<T: Target> ChangeSink for ReplicaSink<T> {
    type Error = T::Error;

    async fn open(&mut self) -> Result<Option<Offsets>, T::Error> {
        // A batch still in flight from before is finished or failed; either way the offsets
        // read below say what the target holds.
        let mut target = match self.target().await {
            Ok(target) => target,
            Err(_) => self.target.take().expect("returned home with its error"),
        };
        self.uncommitted.clear();
        let result = target.open().await;
        self.target = Some(target);
        let stored = result?;
        self.applied = stored.clone();
        Ok(Some(stored))
    }

    fn applied(&self) -> Option<&Offsets> {
        Some(&self.applied)
    }

    fn resume_from(&mut self, offsets: &Offsets) {
        self.applied = offsets.clone();
    }

    async fn write(&mut self, batch: ChangeBatch<'_>) -> Result<(), T::Error> {
        let prepared = self.prepare(batch)?;
        let mut target = self.target().await?;
        self.uncommitted.extend(prepared.offsets.clone());
        let offsets = prepared
            .commit
            .then(|| std::mem::take(&mut self.uncommitted));
        let handle = sluice_core::task::spawn_in_span(async move {
            let result = target.apply(prepared).await;
            (target, result)
        });
        self.in_flight = Some((handle, offsets));
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), T::Error> {
        let mut target = self.target().await?;
        let result = target.idle().await;
        self.target = Some(target);
        result
    }

    async fn close(&mut self) -> Result<(), T::Error> {
        let result = self.flush().await;
        if let Some(target) = self.target.as_mut() {
            target.close();
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_core::change::Change;
    use sluice_core::event::{Column, DataType, Op, TableId};
    use sluice_core::value::Value;

    fn table(keyed: bool) -> Arc<TableSchema> {
        let column = |name: &str, key| Column {
            name: name.into(),
            type_name: "integer".into(),
            data_type: DataType::Int32,
            key,
            nullable: !key,
        };
        Arc::new(TableSchema {
            table: TableId {
                namespace: "public".into(),
                name: "t".into(),
            },
            columns: vec![column("id", keyed), column("v", false)],
            version: 1,
        })
    }

    fn change(
        table: &Arc<TableSchema>,
        op: Op,
        before: Option<[i32; 2]>,
        after: Option<[i32; 2]>,
        record: usize,
    ) -> SourcedChange {
        let row = |r: [i32; 2]| r.iter().map(|v| Value::Int32(*v)).collect();
        SourcedChange::new(
            Change {
                table: Arc::clone(table),
                op,
                before: before.map(row),
                after: after.map(row),
                position: None,
                txn: None,
                total_order: None,
                commit_ts_us: 0,
            },
            record,
        )
    }

    fn ints(rows: &[Row]) -> Vec<Vec<Value>> {
        rows.iter().map(|r| r.values.clone()).collect()
    }

    #[test]
    fn keyed_tables_keep_the_final_state_of_each_key() {
        let t = table(true);
        let changes = vec![
            change(&t, Op::Create, None, Some([1, 10]), 0),
            change(&t, Op::Update, Some([1, 10]), Some([1, 11]), 1),
            change(&t, Op::Create, None, Some([2, 20]), 2),
            change(&t, Op::Delete, Some([2, 20]), None, 3),
            change(&t, Op::Delete, Some([3, 0]), None, 4),
            change(&t, Op::Create, None, Some([3, 30]), 5),
        ];
        let work = plan(changes).unwrap();
        assert_eq!(work.len(), 1);
        let Step::Keyed {
            upserts,
            deletes,
            partial,
        } = &work[0].steps[0]
        else {
            panic!("{:?}", work[0].steps)
        };
        let v = |a: i32, b: i32| vec![Value::Int32(a), Value::Int32(b)];
        assert_eq!(ints(upserts), vec![v(1, 11), v(3, 30)]);
        assert_eq!(ints(deletes), vec![v(2, 20)]);
        assert!(partial.is_empty());
    }

    #[test]
    fn truncates_split_the_work_and_schema_versions_get_their_own_items() {
        let t = table(true);
        let mut t2 = (*t).clone();
        t2.columns.push(Column {
            name: "w".into(),
            type_name: "integer".into(),
            data_type: DataType::Int32,
            key: false,
            nullable: true,
        });
        let t2 = Arc::new(t2);
        let mut added = change(&t2, Op::Create, None, None, 3);
        added.change.after = Some(vec![Value::Int32(5), Value::Int32(5), Value::Int32(5)]);
        let changes = vec![
            change(&t, Op::Create, None, Some([1, 1]), 0),
            change(&t, Op::Truncate, None, None, 1),
            change(&t, Op::Create, None, Some([2, 2]), 2),
            added,
        ];
        let work = plan(changes).unwrap();
        assert_eq!(work.len(), 2);
        assert_eq!(work[0].steps.len(), 3, "{:?}", work[0].steps);
        assert_eq!(work[0].steps[1], Step::Truncate { record: 1 });
        assert_eq!(work[1].table.columns.len(), 3);
    }

    #[test]
    fn unchanged_toast_values_are_filled_from_earlier_rows_or_left_partial() {
        let t = table(true);
        let mut toast = change(&t, Op::Update, None, Some([1, 0]), 1);
        toast.change.after.as_mut().unwrap()[1] = Value::Unavailable;
        let work = plan(vec![
            change(&t, Op::Create, None, Some([1, 9]), 0),
            toast.clone(),
        ])
        .unwrap();
        let Step::Keyed {
            upserts, partial, ..
        } = &work[0].steps[0]
        else {
            panic!()
        };
        assert_eq!(upserts[0].values, vec![Value::Int32(1), Value::Int32(9)]);
        assert!(partial.is_empty());
        let work = plan(vec![toast]).unwrap();
        let Step::Keyed {
            upserts, partial, ..
        } = &work[0].steps[0]
        else {
            panic!()
        };
        assert!(upserts.is_empty());
        assert_eq!(partial.len(), 1);
    }

    #[test]
    fn the_target_key_must_be_the_sources_in_any_order() {
        let t = table(true);
        assert_eq!(check_key(&t, &["id".to_owned()], "public.t"), Ok(()));
        let err = check_key(&t, &["v".to_owned()], "public.t")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("is (id) at the source but (v) in the target public.t"),
            "{err}"
        );
    }

    #[test]
    fn keyless_tables_need_the_whole_old_row() {
        let t = table(false);
        let work = plan(vec![
            change(&t, Op::Create, None, Some([1, 1]), 0),
            change(&t, Op::Update, Some([1, 1]), Some([1, 2]), 1),
        ])
        .unwrap();
        let Step::Keyless(ops) = &work[0].steps[0] else {
            panic!()
        };
        assert_eq!(ops.len(), 3);
        let err = plan(vec![change(&t, Op::Delete, None, None, 7)]).unwrap_err();
        assert_eq!(err.record, 7);
        assert!(
            err.message.contains("REPLICA IDENTITY FULL"),
            "{}",
            err.message
        );
    }
}
