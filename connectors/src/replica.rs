//! What the database sinks (Postgres, MySQL/MariaDB) share: records from the log decoded into
//! typed changes, and a batch turned into per-table work that a target applies in one
//! transaction together with the sink's offsets.
//!
//! Within a batch only the final state of each key matters, so keyed tables get one upsert or
//! one delete per key (applied as set operations), in table-version order; a truncate splits a
//! table's work in two. Tables without a key keep every operation in order, matching rows on
//! all columns (which needs the full old row: REPLICA IDENTITY FULL). That planning is in
//! `replica/plan.rs`; this file decodes records and runs a target's batches (`ReplicaSink`).
//!
//! A batch that holds several schema versions of a table (a migration inside a source
//! transaction, or a sink catching up across one) is applied in parts, one per version, in
//! version order, each in its own target transaction with the offsets of exactly the records
//! it holds: the target's table is changed to each version just before that version's rows
//! are applied. A topic is one table, so in each partition a version's records form one run
//! (versions only grow), and each part is a prefix of every partition: stored offsets always
//! say exactly what was applied.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;

use sluice_core::checkpoint::COMMIT_HEADER;
use sluice_core::event::{Op, TableSchema};
use sluice_core::retry::Classify;
use sluice_core::sink::{DeadLetter, DeadLetterWriter, Offsets, Sink, SinkRecord};
use sluice_schema_registry::avro::rows::{Change, ChangeDecoder};
use sluice_schema_registry::registry::Registry;

/// A change and the index of the record it came from.
#[derive(Debug, Clone)]
pub struct Sourced {
    pub change: Change,
    pub record: usize,
}

/// Decodes the records' values (tombstones and messages are skipped). An undecodable record is
/// an error naming where it is.
pub fn decode(decoder: &mut ChangeDecoder, records: &[SinkRecord]) -> Result<Vec<Sourced>, String> {
    let mut out = Vec::with_capacity(records.len());
    for (index, record) in records.iter().enumerate() {
        let Some(value) = &record.record.value else {
            continue;
        };
        let change = decoder.decode(value).map_err(|e| {
            format!(
                "record {}[{}] offset {}: {e}",
                record.topic, record.partition, record.record.offset
            )
        })?;
        if let Some(change) = change {
            if change.op != Op::Message {
                out.push(Sourced {
                    change,
                    record: index,
                });
            }
        }
    }
    Ok(out)
}

/// The next offset of every partition the records came from.
pub fn next_offsets(records: &[SinkRecord]) -> Offsets {
    let mut offsets = Offsets::new();
    for record in records {
        offsets.insert(
            (record.topic.to_string(), record.partition),
            record.record.offset + 1,
        );
    }
    offsets
}

mod apply;
mod plan;

pub use self::apply::{apply_steps, Statements};
pub use self::plan::{plan, KeylessOp, PlanError, Row, Step, TableWork};

/// The target's primary key (`target_key`, in any order) must be the source's: sluice does not
/// change keys.
pub fn check_key(table: &TableSchema, target_key: &[String], target: &str) -> Result<(), String> {
    let mut source: Vec<&str> = table.key_columns().map(|(_, c)| c.name.as_str()).collect();
    let mut existing: Vec<&str> = target_key.iter().map(String::as_str).collect();
    let (shown_source, shown_target) = (source.join(", "), existing.join(", "));
    source.sort_unstable();
    existing.sort_unstable();
    if source == existing {
        return Ok(());
    }
    Err(format!(
        "the key of {} is ({shown_source}) at the source but ({shown_target}) in the target \
         {target}; sluice does not change primary keys: change the target's key to match (or drop \
         the target table to have it recreated) and restart",
        table.table
    ))
}

/// Writes dead letters (logging each) through `writer`; nothing to do for none.
pub async fn deliver_dead_letters(
    writer: Option<&DeadLetterWriter>,
    dead: Vec<DeadLetter>,
) -> Result<(), String> {
    if dead.is_empty() {
        return Ok(());
    }
    for letter in &dead {
        tracing::warn!(topic = %letter.record.topic, partition = letter.record.partition,
            offset = letter.record.record.offset, error = %letter.error,
            "event rejected by the target; sent to the dead-letter topic");
    }
    let writer = writer.ok_or("no dead-letter topic is configured")?;
    writer(dead).await
}

/// A batch decoded and planned, ready for a target to apply in one transaction.
pub struct Prepared {
    pub work: Vec<TableWork>,
    /// Next offset per partition, to store with the rows.
    pub offsets: Offsets,
    /// Per partition: first offset, last offset, records (only with `batch_history`).
    pub ranges: BTreeMap<(Arc<str>, u32), (u64, u64, i32)>,
    /// The records, kept when a dead-letter topic may need them.
    pub records: Vec<SinkRecord>,
    /// Records already known to be dead letters (they could not be planned).
    pub skipped: HashSet<usize>,
    pub dead: Vec<DeadLetter>,
}

/// Why a batch could not be prepared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicaError {
    /// A record is not sluice Avro.
    Decode(String),
    /// An event cannot be applied as it is (no dead-letter topic to put it in).
    Plan(String),
}

/// A database the sink applies batches to.
pub trait Target: Send + 'static {
    type Error: std::error::Error + Classify + Send + Sync + 'static + From<ReplicaError>;

    /// Connects, creates the offsets table if needed, and returns the stored offsets.
    fn open(&mut self) -> impl Future<Output = Result<Offsets, Self::Error>> + Send;

    /// Applies a batch and its offsets in one transaction.
    fn apply(&mut self, batch: Prepared) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Releases connections.
    fn close(&mut self) {}
}

/// How a database sink batches.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReplicaSettings {
    pub transactional: bool,
    pub dead_letters: bool,
    pub batch_history: bool,
}

/// A database sink: decodes and plans each batch on the sink's task while the target applies
/// the previous one on its own task. `write` returns once the batch is planned and the
/// previous one applied, so a failure of batch N surfaces at the write of batch N+1, at
/// `flush` (before the runtime idles) or at `close`. That is safe because the target's offsets
/// table, not the log's consumer group, says where the sink resumes.
pub struct ReplicaSink<T: Target> {
    settings: ReplicaSettings,
    decoder: ChangeDecoder,
    /// Transactional mode: records of log commits not yet read whole.
    pending: Vec<SinkRecord>,
    cut: Vec<(Arc<str>, u32)>,
    target: Option<T>,
    /// The batch being applied and the offsets it stores with its rows.
    in_flight: Option<(InFlight<T>, Offsets)>,
    /// What the target holds: the offsets it returned from `open`, advanced by each batch it
    /// finished applying.
    applied: Offsets,
}

/// A batch being applied: the target comes back with the result.
type InFlight<T> = tokio::task::JoinHandle<(T, Result<(), <T as Target>::Error>)>;

/// The records' changes, leaving out those at the `skipped` indexes.
pub fn decode_skipping(
    decoder: &mut ChangeDecoder,
    records: &[SinkRecord],
    skipped: &HashSet<usize>,
) -> Result<Vec<Sourced>, ReplicaError> {
    let mut changes = decode(decoder, records).map_err(ReplicaError::Decode)?;
    if !skipped.is_empty() {
        changes.retain(|c| !skipped.contains(&c.record));
    }
    Ok(changes)
}

impl<T: Target> ReplicaSink<T> {
    pub fn new(target: T, registry: Arc<Registry>, settings: ReplicaSettings) -> ReplicaSink<T> {
        ReplicaSink {
            settings,
            decoder: ChangeDecoder::new(registry),
            pending: Vec::new(),
            cut: Vec::new(),
            target: Some(target),
            in_flight: None,
            applied: Offsets::new(),
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
            self.applied.extend(offsets);
        }
        Ok(self
            .target
            .take()
            .expect("the target is home when nothing is in flight"))
    }

    /// Splits off (into `pending`) the records of log commits not yet read whole.
    ///
    /// A record's commit is the stamp (COMMIT_HEADER) of the next stamped record in its
    /// partition; records after the last stamp belong to a commit not read to its end. In a
    /// partition read only partly, commits after its last stamp may go on: they wait.
    fn whole_commits(&mut self, records: &[SinkRecord]) -> Vec<SinkRecord> {
        let mut all = std::mem::take(&mut self.pending);
        all.extend_from_slice(records);
        let stamp = |record: &SinkRecord| {
            record
                .record
                .headers
                .iter()
                .find(|h| h.key == COMMIT_HEADER)
                .and_then(|h| h.value.as_deref())
                .and_then(|v| <[u8; 8]>::try_from(v).ok())
                .map(u64::from_be_bytes)
        };
        // Each record's commit, from the back of its partition.
        let mut commits: Vec<Option<u64>> = vec![None; all.len()];
        let mut next: HashMap<(Arc<str>, u32), u64> = HashMap::new();
        let mut any_stamp = false;
        for (i, record) in all.iter().enumerate().rev() {
            let key = (record.topic.clone(), record.partition);
            if let Some(commit) = stamp(record) {
                next.insert(key.clone(), commit);
                any_stamp = true;
            }
            commits[i] = next.get(&key).copied();
        }
        if !any_stamp {
            // A log written before commits were stamped: apply as it comes.
            return all;
        }
        // A partition read to its end ends on a commit boundary: its unstamped tail (a topic
        // no source stamps) is complete.
        for (record, commit) in all.iter().zip(commits.iter_mut()) {
            let cut = self
                .cut
                .iter()
                .any(|(t, p)| *t == record.topic && *p == record.partition);
            if commit.is_none() && !cut {
                *commit = Some(0);
            }
        }
        let mut limit = u64::MAX;
        for (topic, partition) in &self.cut {
            let last_stamp = all
                .iter()
                .rev()
                .filter(|r| r.topic == *topic && r.partition == *partition)
                .find_map(&stamp);
            let bound = match last_stamp {
                Some(commit) => commit + 1,
                // Nothing of this partition's current commit is known yet.
                None => commits.iter().flatten().copied().min().unwrap_or(0),
            };
            limit = limit.min(bound);
        }
        let (mut ready, mut later) = (Vec::new(), Vec::new());
        for (record, commit) in all.into_iter().zip(commits) {
            match commit {
                Some(c) if c < limit => ready.push(record),
                _ => later.push(record),
            }
        }
        self.pending = later;
        ready
    }

    fn prepare(&mut self, records: &[SinkRecord]) -> Result<Prepared, ReplicaError> {
        // Events that cannot be planned (e.g. an update of a keyless table without its old
        // row) are dead letters when a dead-letter topic is configured.
        let dead_letters = self.settings.dead_letters;
        let mut dead: Vec<DeadLetter> = Vec::new();
        let mut skipped = HashSet::new();
        let work = loop {
            let changes = decode_skipping(&mut self.decoder, records, &skipped)?;
            match plan(changes) {
                Ok(work) => break work,
                Err(err) if dead_letters => {
                    skipped.insert(err.record);
                    dead.push(DeadLetter {
                        record: records[err.record].clone(),
                        error: err.message,
                    });
                }
                Err(err) => return Err(ReplicaError::Plan(err.message)),
            }
        };
        let mut ranges: BTreeMap<(Arc<str>, u32), (u64, u64, i32)> = BTreeMap::new();
        if self.settings.batch_history {
            for record in records {
                let entry = ranges
                    .entry((record.topic.clone(), record.partition))
                    .or_insert((record.record.offset, record.record.offset, 0));
                entry.0 = entry.0.min(record.record.offset);
                entry.1 = entry.1.max(record.record.offset);
                entry.2 += 1;
            }
        }
        Ok(Prepared {
            work,
            offsets: next_offsets(records),
            ranges,
            records: if dead_letters {
                records.to_vec()
            } else {
                Vec::new()
            },
            skipped,
            dead,
        })
    }
}

impl<T: Target> Sink for ReplicaSink<T> {
    type Error = T::Error;

    async fn open(&mut self) -> Result<Option<Offsets>, T::Error> {
        // A batch still in flight from before is finished or failed; either way the offsets
        // read below say what the target holds.
        let mut target = match self.target().await {
            Ok(target) => target,
            Err(_) => self.target.take().expect("returned home with its error"),
        };
        self.pending.clear();
        let result = target.open().await;
        self.target = Some(target);
        let stored = result?;
        self.applied = stored.clone();
        Ok(Some(stored))
    }

    fn applied(&self) -> Option<&Offsets> {
        Some(&self.applied)
    }

    fn partitions_cut(&mut self, cut: &[(Arc<str>, u32)]) {
        self.cut = cut.to_vec();
    }

    async fn write(&mut self, records: &[SinkRecord]) -> Result<(), T::Error> {
        let ready;
        let records = if self.settings.transactional {
            ready = self.whole_commits(records);
            if ready.is_empty() {
                return Ok(());
            }
            &ready[..]
        } else {
            records
        };
        for part in split_by_schema_version(records) {
            let prepared = match &part {
                Some(part) => self.prepare(part)?,
                None => self.prepare(records)?,
            };
            let mut target = self.target().await?;
            let offsets = prepared.offsets.clone();
            let handle = tokio::spawn(async move {
                let result = target.apply(prepared).await;
                (target, result)
            });
            self.in_flight = Some((handle, offsets));
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), T::Error> {
        let target = self.target().await?;
        self.target = Some(target);
        Ok(())
    }

    async fn close(&mut self) -> Result<(), T::Error> {
        let result = self.flush().await;
        if let Some(target) = self.target.as_mut() {
            target.close();
        }
        result
    }
}

/// The Confluent wire header's schema id of a record's value (`None` for tombstones and
/// values that are not Avro).
fn value_schema_id(record: &SinkRecord) -> Option<u32> {
    let value = record.record.value.as_deref()?;
    if !sluice_schema_registry::avro::decode::is_framed(value) {
        return None;
    }
    Some(u32::from_be_bytes([value[1], value[2], value[3], value[4]]))
}

/// Splits records holding several schema versions of a topic's table into parts, one per
/// version rank (a table's versions in the batch, oldest first, by schema id: the registry
/// numbers schemas in the order they are registered). `[None]` (the whole batch as it is)
/// when every topic has one version, the common case, without copying.
fn split_by_schema_version(records: &[SinkRecord]) -> Vec<Option<Vec<SinkRecord>>> {
    let mut versions: HashMap<&str, Vec<u32>> = HashMap::new();
    // Records come in runs of one topic and schema: look each run up once.
    let mut last: Option<(&Arc<str>, u32)> = None;
    for record in records {
        let Some(id) = value_schema_id(record) else {
            continue;
        };
        if last.is_some_and(|(topic, last_id)| Arc::ptr_eq(topic, &record.topic) && last_id == id) {
            continue;
        }
        last = Some((&record.topic, id));
        let ids = versions.entry(&record.topic).or_default();
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    if versions.values().all(|ids| ids.len() <= 1) {
        return vec![None];
    }
    for ids in versions.values_mut() {
        ids.sort_unstable();
    }
    // Each record's rank; a tombstone shares the rank of the record before it in its partition.
    let mut ranks = Vec::with_capacity(records.len());
    let mut last_rank: HashMap<(&str, u32), usize> = HashMap::new();
    let mut monotonic = true;
    for record in records {
        let partition = (&*record.topic, record.partition);
        let previous = last_rank.get(&partition).copied();
        let rank = match value_schema_id(record) {
            Some(id) => versions[&*record.topic]
                .iter()
                .position(|v| *v == id)
                .unwrap_or(0),
            None => previous.unwrap_or(0),
        };
        monotonic &= previous.is_none_or(|previous| previous <= rank);
        last_rank.insert(partition, rank);
        ranks.push(rank);
    }
    if !monotonic {
        // A schema registered again (a column dropped and added back) reuses its old id, so
        // id order is not time order: rank by each partition's own schema changes instead,
        // which keeps every part a prefix of every partition.
        let mut runs: HashMap<(&str, u32), (Option<u32>, usize)> = HashMap::new();
        for (record, rank) in records.iter().zip(ranks.iter_mut()) {
            let run = runs
                .entry((&*record.topic, record.partition))
                .or_insert((None, 0));
            if let Some(id) = value_schema_id(record) {
                if run.0.is_some_and(|last| last != id) {
                    run.1 += 1;
                }
                run.0 = Some(id);
            }
            *rank = run.1;
        }
    }
    let mut parts: Vec<Vec<SinkRecord>> = Vec::new();
    for (record, rank) in records.iter().zip(ranks) {
        if parts.len() <= rank {
            parts.resize_with(rank + 1, Vec::new);
        }
        parts[rank].push(record.clone());
    }
    parts
        .into_iter()
        .filter(|part| !part.is_empty())
        .map(Some)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_core::event::{Column, DataType, TableId};
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
    ) -> Sourced {
        let row = |r: [i32; 2]| r.iter().map(|v| Value::Int32(*v)).collect();
        Sourced {
            change: Change {
                table: table.clone(),
                op,
                before: before.map(row),
                after: after.map(row),
                txn: None,
                commit_ts_us: 0,
            },
            record,
        }
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
        assert_eq!(work[0].steps[1], Step::Truncate);
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
        let err = check_key(&t, &["v".to_owned()], "public.t").unwrap_err();
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
