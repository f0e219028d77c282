//! Runs a [`ChangeSink`] on the record-sink runtime: decodes each record once, holds back log
//! commits not yet read whole (when the sink asks for whole transactions), and splits a batch
//! that spans a table's schema change into one part per version.
//!
//! Whole commits: the source task stamps the last record of each partition's share of a log
//! commit with the commit number (COMMIT_HEADER). A record's commit is the stamp of the next
//! stamped record in its partition; records after a partition's last stamp belong to a commit
//! not read to its end, and so does everything of a later commit in any partition read only
//! partly. Those wait in `pending` for the next read.
//!
//! Schema versions: a topic is one table, so in each partition a version's records form one
//! run (versions only grow), and each part is a prefix of every partition: offsets stored with
//! a part say exactly what was applied.

use std::collections::HashMap;
use std::sync::Arc;

use crate::change::{ChangeDecoder, DecodeError, SourcedChange};
use crate::checkpoint::COMMIT_HEADER;
use crate::event::Op;
use crate::retry::{Classify, ErrorKind};
use crate::sink::{ChangeBatch, ChangeSink, Offsets, RecordSink, SinkRecord};

/// A change sink's error, or a record no decoder could read (definite: the record is not what
/// sluice writes, or its schema is gone from the registry).
#[derive(Debug, thiserror::Error)]
pub enum TypedSinkError<E> {
    #[error(transparent)]
    Sink(E),
    #[error("cannot decode {0}")]
    Decode(DecodeError),
}

impl<E: Classify> Classify for TypedSinkError<E> {
    fn kind(&self) -> ErrorKind {
        match self {
            TypedSinkError::Sink(err) => err.kind(),
            TypedSinkError::Decode(_) => ErrorKind::Definite,
        }
    }
}

/// A change sink, as the runtime runs it.
pub struct TypedSink<S, D> {
    sink: S,
    decoder: D,
    whole_commits: bool,
    /// Whole-commit mode: records of log commits not yet read whole.
    pending: Vec<SinkRecord>,
    cut: Vec<(Arc<str>, u32)>,
}

impl<S: ChangeSink, D: ChangeDecoder> TypedSink<S, D> {
    /// `whole_commits`: hand the sink only whole log commits (source transactions).
    pub fn new(sink: S, decoder: D, whole_commits: bool) -> TypedSink<S, D> {
        TypedSink {
            sink,
            decoder,
            whole_commits,
            pending: Vec::new(),
            cut: Vec::new(),
        }
    }

    pub fn inner(&self) -> &S {
        &self.sink
    }

    /// Decodes the records' row changes (records without one are left out).
    fn decode(&mut self, records: &[SinkRecord]) -> Result<Vec<SourcedChange>, DecodeError> {
        let mut changes = Vec::with_capacity(records.len());
        for (index, record) in records.iter().enumerate() {
            if let Some(change) = self.decoder.decode(record)? {
                if change.op != Op::Message {
                    changes.push(SourcedChange {
                        change,
                        record: index,
                    });
                }
            }
        }
        Ok(changes)
    }

    /// Splits off (into `pending`) the records of log commits not yet read whole.
    fn whole_commits(&mut self, records: &[SinkRecord]) -> Vec<SinkRecord> {
        let mut all = std::mem::take(&mut self.pending);
        all.extend_from_slice(records);
        // Each record's commit, from the back of its partition.
        let mut commits: Vec<Option<u64>> = vec![None; all.len()];
        let mut next: HashMap<(Arc<str>, u32), u64> = HashMap::new();
        let mut any_stamp = false;
        for (i, record) in all.iter().enumerate().rev() {
            let key = (Arc::clone(&record.topic), record.partition);
            if let Some(commit) = commit_stamp(record) {
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
                .find_map(commit_stamp);
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
}

/// The log commit number a record's COMMIT_HEADER carries.
fn commit_stamp(record: &SinkRecord) -> Option<u64> {
    record
        .record
        .headers
        .iter()
        .find(|h| h.key == COMMIT_HEADER)
        .and_then(|h| h.value.as_deref())
        .and_then(|v| <[u8; 8]>::try_from(v).ok())
        .map(u64::from_be_bytes)
}

impl<S: ChangeSink, D: ChangeDecoder> RecordSink for TypedSink<S, D> {
    type Error = TypedSinkError<S::Error>;

    async fn open(&mut self) -> Result<Option<Offsets>, Self::Error> {
        self.pending.clear();
        self.sink.open().await.map_err(TypedSinkError::Sink)
    }

    fn partitions_cut(&mut self, cut: &[(Arc<str>, u32)]) {
        self.cut = cut.to_vec();
    }

    fn applied(&self) -> Option<&Offsets> {
        self.sink.applied()
    }

    async fn write(&mut self, records: &[SinkRecord]) -> Result<(), Self::Error> {
        let ready;
        let records = if self.whole_commits {
            ready = self.whole_commits(records);
            if ready.is_empty() {
                return Ok(());
            }
            &ready[..]
        } else {
            records
        };
        for part in split_by_schema_version(&self.decoder, records) {
            let part = part.as_deref().unwrap_or(records);
            let changes = self.decode(part).map_err(TypedSinkError::Decode)?;
            let batch = ChangeBatch {
                changes,
                records: part,
            };
            self.sink.write(batch).await.map_err(TypedSinkError::Sink)?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), Self::Error> {
        self.sink.flush().await.map_err(TypedSinkError::Sink)
    }

    async fn close(&mut self) -> Result<(), Self::Error> {
        self.sink.close().await.map_err(TypedSinkError::Sink)
    }
}

/// Splits records holding several schema versions of a topic's table into parts, one per
/// version rank (a table's versions in the batch, oldest first, by schema id: the registry
/// numbers schemas in the order they are registered). `[None]` (the whole batch as it is)
/// when every topic has one version, the common case, without copying.
fn split_by_schema_version<D: ChangeDecoder>(
    decoder: &D,
    records: &[SinkRecord],
) -> Vec<Option<Vec<SinkRecord>>> {
    let mut versions: HashMap<&str, Vec<u32>> = HashMap::new();
    // Records come in runs of one topic and schema: look each run up once.
    let mut last: Option<(&Arc<str>, u32)> = None;
    let ids: Vec<Option<u32>> = records.iter().map(|r| decoder.schema_id(r)).collect();
    for (record, id) in records.iter().zip(&ids) {
        let Some(id) = *id else {
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
    for (record, id) in records.iter().zip(&ids) {
        let partition = (&*record.topic, record.partition);
        let previous = last_rank.get(&partition).copied();
        let rank = match id {
            Some(id) => versions[&*record.topic]
                .iter()
                .position(|v| v == id)
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
        for ((record, id), rank) in records.iter().zip(&ids).zip(ranks.iter_mut()) {
            let run = runs
                .entry((&*record.topic, record.partition))
                .or_insert((None, 0));
            if let Some(id) = *id {
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
