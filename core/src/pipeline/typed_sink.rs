//! Runs a [`ChangeSink`] on the record-sink runtime: decodes each record once, holds back log
//! commits not yet read whole (when the sink asks for whole transactions), and splits a batch
//! that spans a table's schema change into one part per version.
//!
//! Whole commits: the source task stamps the last record of each partition's share of every
//! append with the number of the commit that makes it visible (COMMIT_HEADER on a commit's last
//! append, COMMIT_PART_HEADER on the appends before it of a transaction too large for one
//! batch). A record's commit is the stamp of the next stamped record in its partition. In a
//! partition read only partly, the records after its last stamp belong to a commit not read to
//! its end (after a part stamp, possibly that stamp's commit): that commit and every later one
//! of the same source wait in `pending` for the next read. Commit numbers are per source (a
//! topic's first name part).
//!
//! A transaction larger than `max_pending_bytes` is handed over in parts: once pending holds
//! more than that, the records known to belong to each source's oldest open commit go to the
//! sink with `ends_transaction = false`, and the sink keeps its destination transaction open
//! until a batch that ends it. Memory stays bounded by the budget plus one append's records per
//! partition.
//!
//! Schema versions: a topic is one table, so in each partition a version's records form one
//! run (versions only grow), and each part is a prefix of every partition: offsets stored with
//! a part say exactly what was applied.

use std::collections::HashMap;
use std::sync::Arc;

use crate::change::{ChangeDecoder, DecodeError, SourcedChange};
use crate::checkpoint::{COMMIT_HEADER, COMMIT_PART_HEADER};
use crate::event::Op;
use crate::retry::{Classify, ErrorKind};
use crate::sink::{
    ChangeBatch, ChangeSink, DeadLetterError, DeadLetterWriter, Offsets, RecordSink, SinkRecord,
};
use crate::transform::{Chain, TransformConfigError};

mod rejects;
use rejects::divert;

/// A change sink's error, or a record no decoder could read (definite: the record is not what
/// sluice writes, or its schema is gone from the registry).
#[derive(Debug, thiserror::Error)]
pub enum TypedSinkError<E> {
    #[error(transparent)]
    Sink(E),
    #[error("cannot decode {0}")]
    Decode(DecodeError),
    /// A transform does not fit a table the sink met (a column it lacks).
    #[error("{0}")]
    Transform(TransformConfigError),
    /// A transform rejected a change and there is no dead-letter topic to put it in.
    #[error("{0}; set dead_letter_topic on the sink to divert such events and go on")]
    Rejected(String),
    #[error("{0}")]
    DeadLetter(DeadLetterError),
}

impl<E: Classify> Classify for TypedSinkError<E> {
    fn kind(&self) -> ErrorKind {
        match self {
            TypedSinkError::Sink(err) => err.kind(),
            TypedSinkError::Decode(_)
            | TypedSinkError::Transform(_)
            | TypedSinkError::Rejected(_) => ErrorKind::Definite,
            TypedSinkError::DeadLetter(err) => err.kind(),
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
    /// Whole-commit mode: per source, its last commit that was whole in the log before the
    /// last read began (later ones may have been read in some partitions only).
    committed: HashMap<String, u64>,
    /// Whole-commit mode: past this many bytes pending, the oldest open commit goes to the sink
    /// in parts.
    max_pending_bytes: usize,
    /// Per source, the commit handed to the sink in part and not finished yet.
    open: HashMap<String, u64>,
    /// The most record bytes one `ChangeSink::write` gets.
    max_write_bytes: usize,
    /// The sink's transforms (None: none configured).
    transforms: Option<Chain>,
    /// Where changes a transform rejects go.
    rejects: Option<DeadLetterWriter>,
}

/// What whole-commit mode hands the sink from one read.
struct Ready {
    /// Whole commits.
    whole: Vec<SinkRecord>,
    /// Then records of open commits too large to hold (their transaction goes on).
    partial: Vec<SinkRecord>,
}

/// Bytes of pending records past which an open commit is handed over in parts.
pub const DEFAULT_MAX_PENDING_BYTES: usize = 8 << 20;

/// The most record bytes one `ChangeSink::write` gets: what is ready beyond it goes over in
/// several writes (in whole-commit mode inside one destination transaction), so that decoded
/// and planned changes stay bounded whatever a read or a finished transaction releases.
const MAX_WRITE_BYTES: usize = 4 << 20;

impl<S: ChangeSink, D: ChangeDecoder> TypedSink<S, D> {
    /// `whole_commits`: hand the sink only whole log commits (source transactions).
    pub fn new(sink: S, decoder: D, whole_commits: bool) -> TypedSink<S, D> {
        TypedSink {
            sink,
            decoder,
            whole_commits,
            pending: Vec::new(),
            cut: Vec::new(),
            committed: HashMap::new(),
            max_pending_bytes: DEFAULT_MAX_PENDING_BYTES,
            open: HashMap::new(),
            max_write_bytes: MAX_WRITE_BYTES,
            transforms: None,
            rejects: None,
        }
    }

    /// Runs `chain` on every change before the sink sees it; changes it rejects go to
    /// `dead_letters` (without one, they stop the sink).
    pub fn transforms(mut self, chain: Chain, dead_letters: Option<DeadLetterWriter>) -> Self {
        if !chain.is_empty() {
            self.transforms = Some(chain);
            self.rejects = dead_letters;
        }
        self
    }

    /// The most record bytes one write hands the sink (default 4 MiB): sinks whose destination
    /// works best with many requests in flight per write (search indexes) take more.
    pub fn max_write_bytes(mut self, bytes: usize) -> Self {
        self.max_write_bytes = bytes.max(1);
        self
    }

    /// Whole-commit mode: hold at most about this many bytes of records back (see the module
    /// doc).
    pub fn max_pending_bytes(mut self, bytes: usize) -> Self {
        self.max_pending_bytes = bytes;
        self
    }

    pub fn inner(&self) -> &S {
        &self.sink
    }

    /// Decodes the records' row changes (records without one are left out). A large batch is
    /// cut into one run per core, each decoded on a thread of its own by a fork of the
    /// decoder: decoding is most of a light sink's work (ClickHouse, Iceberg, search indexes),
    /// and the sink's own work for the batch cannot start before it.
    fn decode(&mut self, records: &[SinkRecord]) -> Result<Vec<SourcedChange>, DecodeError> {
        let threads = decode_threads();
        if threads < 2 || records.len() < PARALLEL_DECODE_MIN_RECORDS {
            return decode_run(&mut self.decoder, records, 0);
        }
        let forks: Vec<D> = (1..threads).filter_map(|_| self.decoder.fork()).collect();
        if forks.is_empty() {
            return decode_run(&mut self.decoder, records, 0);
        }
        let run = records.len().div_ceil(forks.len() + 1);
        let decoder = &mut self.decoder;
        let (first, rest) = std::thread::scope(|scope| {
            let handles: Vec<_> = forks
                .into_iter()
                .enumerate()
                .map(|(i, mut fork)| {
                    let start = ((i + 1) * run).min(records.len());
                    let end = ((i + 2) * run).min(records.len());
                    let part = &records[start..end];
                    scope.spawn(move || {
                        let decoded = decode_run(&mut fork, part, start);
                        (fork, decoded)
                    })
                })
                .collect();
            let first = decode_run(decoder, &records[..run.min(records.len())], 0);
            let rest: Vec<_> = handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                })
                .collect();
            (first, rest)
        });
        let mut changes = first?;
        for (fork, decoded) in rest {
            self.decoder.join(fork);
            changes.extend(decoded?);
        }
        Ok(changes)
    }

    /// Splits off (into `pending`) the records of log commits not yet read whole, handing over
    /// the oldest open commits' known records when too much is held.
    fn take_ready(&mut self, records: &[SinkRecord]) -> Ready {
        let mut all = std::mem::take(&mut self.pending);
        all.extend_from_slice(records);
        // Each record's commit, from the back of its partition.
        let mut commits: Vec<Option<u64>> = vec![None; all.len()];
        let mut next: HashMap<(Arc<str>, u32), u64> = HashMap::new();
        let mut any_stamp = false;
        for (i, record) in all.iter().enumerate().rev() {
            let key = (Arc::clone(&record.topic), record.partition);
            if let Some((commit, _)) = commit_stamp(record) {
                next.insert(key.clone(), commit);
                any_stamp = true;
            }
            commits[i] = next.get(&key).copied();
        }
        if !any_stamp && self.open.is_empty() {
            // A log written before commits were stamped: apply as it comes.
            return Ready {
                whole: all,
                partial: Vec::new(),
            };
        }
        let is_cut = |record: &SinkRecord| {
            self.cut
                .iter()
                .any(|(t, p)| *t == record.topic && *p == record.partition)
        };
        // A partition read to its end ends on a commit boundary: its unstamped tail (a topic
        // no source stamps) is complete.
        for (record, commit) in all.iter().zip(commits.iter_mut()) {
            if commit.is_none() && !is_cut(record) {
                *commit = Some(0);
            }
        }
        // Per source: the oldest commit that may not be whole yet.
        let mut limits: HashMap<&str, u64> = HashMap::new();
        for (topic, partition) in &self.cut {
            let source = source_of(topic);
            let last_stamp = all
                .iter()
                .rev()
                .filter(|r| r.topic == *topic && r.partition == *partition)
                .find_map(commit_stamp);
            let bound = match last_stamp {
                // After a commit's last append, later commits follow in this partition.
                Some((commit, true)) => commit + 1,
                // After a part, more of that commit may follow.
                Some((commit, false)) => commit,
                // Nothing of this partition's current commit is known yet.
                None => all
                    .iter()
                    .zip(&commits)
                    .filter(|(r, c)| c.is_some_and(|c| c > 0) && source_of(&r.topic) == source)
                    .filter_map(|(_, c)| *c)
                    .min()
                    .unwrap_or(0),
            };
            let limit = limits.entry(source).or_insert(u64::MAX);
            *limit = (*limit).min(bound);
        }
        // A commit after the source's last one before the read began may have been read in
        // some partitions and not in others (it landed between their reads): it waits.
        for (source, commit) in &self.committed {
            let limit = limits.entry(source.as_str()).or_insert(u64::MAX);
            *limit = (*limit).min(commit.saturating_add(1));
        }
        let limit_of = |record: &SinkRecord| {
            limits
                .get(source_of(&record.topic))
                .copied()
                .unwrap_or(u64::MAX)
        };
        let (mut whole, mut later, mut later_commits) = (Vec::new(), Vec::new(), Vec::new());
        let mut later_bytes = 0usize;
        for (record, commit) in all.into_iter().zip(commits) {
            match commit {
                Some(c) if c < limit_of(&record) => whole.push(record),
                _ => {
                    later_bytes += record_bytes(&record);
                    later.push(record);
                    later_commits.push(commit);
                }
            }
        }
        // Open commits now read whole are finished.
        self.open
            .retain(|source, commit| limits.get(source.as_str()).is_some_and(|l| l <= commit));
        let mut partial = Vec::new();
        if later_bytes > self.max_pending_bytes {
            // Too much held: hand over what is known to belong to each source's oldest open
            // commit (a prefix of each partition's held records).
            let mut held = Vec::with_capacity(later.len());
            for (record, commit) in later.into_iter().zip(later_commits) {
                let source = source_of(&record.topic);
                match (commit, limits.get(source)) {
                    (Some(c), Some(&limit)) if c == limit => {
                        if self.open.insert(source.to_owned(), c).is_none() {
                            tracing::info!(source, commit = c, held_bytes = later_bytes,
                                "transaction larger than max_pending_bytes: applying it in parts inside one destination transaction");
                        }
                        partial.push(record);
                    }
                    _ => held.push(record),
                }
            }
            later = held;
        }
        self.pending = later;
        Ready { whole, partial }
    }
}

/// The source a topic belongs to (its first name part): commit numbers are per source.
fn source_of(topic: &str) -> &str {
    topic.split('.').next().unwrap_or(topic)
}

/// Bytes a held record takes, roughly.
fn record_bytes(record: &SinkRecord) -> usize {
    record.record.key.as_ref().map_or(0, |k| k.len())
        + record.record.value.as_ref().map_or(0, |v| v.len())
        + 64
}

/// The log commit number a record's stamp carries, and whether it is on the commit's last
/// append (COMMIT_HEADER) rather than a part before it (COMMIT_PART_HEADER).
fn commit_stamp(record: &SinkRecord) -> Option<(u64, bool)> {
    record.record.headers.iter().find_map(|h| {
        let last = match h.key.as_str() {
            COMMIT_HEADER => true,
            COMMIT_PART_HEADER => false,
            _ => return None,
        };
        let bytes = <[u8; 8]>::try_from(h.value.as_deref()?).ok()?;
        Some((u64::from_be_bytes(bytes), last))
    })
}

impl<S: ChangeSink, D: ChangeDecoder> TypedSink<S, D> {
    /// Decodes `records` and hands them to the sink, one part per schema version. With whole
    /// commits the parts share one destination transaction, which the last part ends unless
    /// `open` (a commit handed over in part goes on).
    async fn deliver(
        &mut self,
        records: &[SinkRecord],
        open: bool,
    ) -> Result<(), TypedSinkError<S::Error>> {
        let parts = split_by_schema_version(&self.decoder, records);
        let count = parts.len();
        for (i, part) in parts.into_iter().enumerate() {
            let part = part.as_deref().unwrap_or(records);
            let chunks = chunks(part, self.max_write_bytes);
            let last_part = i + 1 == count;
            for (j, chunk) in chunks.iter().enumerate() {
                let mut changes = self.decode(chunk).map_err(TypedSinkError::Decode)?;
                if let Some(chain) = &mut self.transforms {
                    let (kept, rejected) = chain
                        .apply(changes, chunk)
                        .map_err(TypedSinkError::Transform)?;
                    changes = kept;
                    if !rejected.is_empty() {
                        divert(self.rejects.as_ref(), chunk, rejected).await?;
                    }
                }
                let last = last_part && j + 1 == chunks.len();
                let ends_transaction = !self.whole_commits || (last && !open);
                let batch = ChangeBatch {
                    changes,
                    records: chunk,
                    ends_transaction,
                };
                self.sink.write(batch).await.map_err(TypedSinkError::Sink)?;
            }
        }
        Ok(())
    }
}

/// Batches smaller than this are decoded on the sink's own thread (a thread's start costs
/// about what a few dozen records take to decode).
const PARALLEL_DECODE_MIN_RECORDS: usize = 256;

/// Threads a batch is decoded on: the machine's cores, at most 4 (`SLUICE_DECODE_THREADS`
/// overrides; 1 turns parallel decoding off).
fn decode_threads() -> usize {
    static THREADS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *THREADS.get_or_init(|| {
        std::env::var("SLUICE_DECODE_THREADS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map_or(1, |n| n.get())
                    .min(4)
            })
            .max(1)
    })
}

/// Decodes `records` (the batch's records from `first` on) with one decoder.
fn decode_run<D: ChangeDecoder>(
    decoder: &mut D,
    records: &[SinkRecord],
    first: usize,
) -> Result<Vec<SourcedChange>, DecodeError> {
    let mut changes = Vec::with_capacity(records.len());
    for (index, record) in records.iter().enumerate() {
        if let Some(change) = decoder.decode(record)? {
            if change.op != Op::Message {
                changes.push(SourcedChange::new(change, first + index));
            }
        }
    }
    Ok(changes)
}

/// `records` cut into runs of about `max_bytes` (each at least one record). Runs are
/// contiguous, so each is a prefix of what is left of every partition.
fn chunks(records: &[SinkRecord], max_bytes: usize) -> Vec<&[SinkRecord]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, record) in records.iter().enumerate() {
        let size = record_bytes(record);
        if i > start && bytes + size > max_bytes {
            out.push(&records[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += size;
    }
    if start < records.len() || out.is_empty() {
        out.push(&records[start..]);
    }
    out
}

impl<S: ChangeSink, D: ChangeDecoder> RecordSink for TypedSink<S, D> {
    type Error = TypedSinkError<S::Error>;

    async fn open(&mut self) -> Result<Option<Offsets>, Self::Error> {
        self.pending.clear();
        self.open.clear();
        self.sink.open().await.map_err(TypedSinkError::Sink)
    }

    fn partitions_cut(&mut self, cut: &[(Arc<str>, u32)]) {
        self.cut = cut.to_vec();
    }

    fn committed_before_read(&mut self, committed: &[(String, u64)]) {
        self.committed = committed.iter().cloned().collect();
    }

    fn applied(&self) -> Option<&Offsets> {
        self.sink.applied()
    }

    fn resume_from(&mut self, offsets: &Offsets) {
        self.sink.resume_from(offsets);
    }

    async fn write(&mut self, records: &[SinkRecord]) -> Result<(), Self::Error> {
        if !self.whole_commits {
            return self.deliver(records, false).await;
        }
        let Ready { mut whole, partial } = self.take_ready(records);
        whole.extend(partial);
        if whole.is_empty() {
            return Ok(());
        }
        // While a commit handed over in part is open, nothing ends the destination's
        // transaction.
        let open = !self.open.is_empty();
        self.deliver(&whole, open).await
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{Header, StoredRecord};
    use bytes::Bytes;

    use crate::change::Change;

    /// Decodes nothing; records carry no schema.
    struct NoDecoder;

    impl ChangeDecoder for NoDecoder {
        fn decode(&mut self, _: &SinkRecord) -> Result<Option<Change>, DecodeError> {
            Ok(None)
        }
        fn schema_id(&self, _: &SinkRecord) -> Option<u32> {
            None
        }
    }

    struct NoSink;

    #[derive(Debug, thiserror::Error)]
    #[error("never")]
    struct Never;

    impl Classify for Never {
        fn kind(&self) -> ErrorKind {
            ErrorKind::Definite
        }
    }

    impl ChangeSink for NoSink {
        type Error = Never;
        async fn open(&mut self) -> Result<Option<Offsets>, Self::Error> {
            Ok(None)
        }
        async fn write(&mut self, _: ChangeBatch<'_>) -> Result<(), Self::Error> {
            Ok(())
        }
        async fn close(&mut self) -> Result<(), Self::Error> {
            Ok(())
        }
    }

    /// A record of `src.t` partition 0 at `offset`, stamped `(commit, last append)`.
    fn record(offset: u64, stamp: Option<(u64, bool)>) -> SinkRecord {
        let headers = stamp
            .map(|(commit, last)| Header {
                key: if last {
                    COMMIT_HEADER
                } else {
                    COMMIT_PART_HEADER
                }
                .to_owned(),
                value: Some(Bytes::copy_from_slice(&commit.to_be_bytes())),
            })
            .into_iter()
            .collect();
        SinkRecord {
            topic: Arc::from("src.t"),
            partition: 0,
            record: StoredRecord {
                offset,
                timestamp_ms: 0,
                key: None,
                value: Some(Bytes::from(vec![b'x'; 100])),
                headers,
            },
        }
    }

    fn offsets(records: &[SinkRecord]) -> Vec<u64> {
        records.iter().map(|r| r.record.offset).collect()
    }

    /// Decodes each record into a change whose commit time is its offset (none for offsets
    /// ending in 3; the record at offset 1013 fails), and forks, so a batch is decoded on as
    /// many threads as `decode_threads` gives.
    struct OffsetDecoder(Arc<crate::event::TableSchema>);

    impl ChangeDecoder for OffsetDecoder {
        fn decode(&mut self, record: &SinkRecord) -> Result<Option<Change>, DecodeError> {
            let offset = record.record.offset;
            if offset == 1013 {
                return Err(DecodeError::at(record, "bad"));
            }
            Ok((offset % 10 != 3).then(|| Change {
                table: Arc::clone(&self.0),
                op: Op::Create,
                before: None,
                after: Some(Vec::new()),
                position: None,
                txn: None,
                total_order: None,
                commit_ts_us: offset as i64,
            }))
        }
        fn schema_id(&self, _: &SinkRecord) -> Option<u32> {
            None
        }
        fn fork(&self) -> Option<Self> {
            Some(OffsetDecoder(Arc::clone(&self.0)))
        }
    }

    #[test]
    fn a_batch_decoded_on_several_threads_keeps_its_order_and_its_first_error() {
        let table = Arc::new(crate::event::TableSchema {
            table: crate::event::TableId {
                namespace: "public".into(),
                name: "t".into(),
            },
            columns: Vec::new(),
            version: 1,
        });
        let mut sink = TypedSink::new(NoSink, OffsetDecoder(table), false);
        let read: Vec<SinkRecord> = (0..1000).map(|i| record(i, None)).collect();
        let changes = sink.decode(&read).unwrap();
        // Records ending in 3 hold no change; the rest come in record order, indexed right.
        assert_eq!(changes.len(), 900);
        for change in &changes {
            assert_eq!(
                change.change.commit_ts_us,
                read[change.record].record.offset as i64
            );
        }
        assert!(changes.windows(2).all(|w| w[0].record < w[1].record));
        // A failing record anywhere in the batch is the error, whichever thread met it.
        let read: Vec<SinkRecord> = (1000..2000).map(|i| record(i, None)).collect();
        let err = sink.decode(&read).unwrap_err();
        assert_eq!(err.offset, 1013);
        let read: Vec<SinkRecord> = (500..1500).map(|i| record(i, None)).collect();
        assert_eq!(sink.decode(&read).unwrap_err().offset, 1013);
    }

    #[test]
    fn a_part_stamp_does_not_end_its_commit_and_a_last_stamp_does() {
        let mut sink = TypedSink::new(NoSink, NoDecoder, true);
        let cut = [(Arc::from("src.t"), 0)];
        sink.partitions_cut(&cut);
        // Commit 7 whole, then commit 8's first append (part stamp) and more of it.
        let read = [
            record(0, None),
            record(1, Some((7, true))),
            record(2, None),
            record(3, Some((8, false))),
            record(4, None),
        ];
        let ready = sink.take_ready(&read);
        assert_eq!(offsets(&ready.whole), [0, 1]);
        assert!(ready.partial.is_empty());
        assert_eq!(offsets(&sink.pending), [2, 3, 4]);
        // Commit 8's last append arrives and the partition is read to its end.
        sink.partitions_cut(&[]);
        let ready = sink.take_ready(&[record(5, Some((8, true)))]);
        assert_eq!(offsets(&ready.whole), [2, 3, 4, 5]);
        assert!(sink.pending.is_empty());
    }

    #[test]
    fn a_commit_newer_than_the_reads_start_waits_for_its_other_partitions() {
        let mut sink = TypedSink::new(NoSink, NoDecoder, true);
        let on = |topic: &str, mut record: SinkRecord| {
            record.topic = Arc::from(topic);
            record
        };
        // Commit 7 was whole before the round read anything; commit 8 landed between the
        // reads of src.a (read first, without it) and src.b (read after, with its half).
        sink.partitions_cut(&[]);
        sink.committed_before_read(&[("src".into(), 7)]);
        let read = [
            on("src.a", record(0, Some((7, true)))),
            on("src.b", record(0, None)),
            on("src.b", record(1, Some((8, true)))),
        ];
        let ready = sink.take_ready(&read);
        assert_eq!(offsets(&ready.whole), [0]);
        assert_eq!(&*ready.whole[0].topic, "src.a");
        assert_eq!(
            offsets(&sink.pending),
            [0, 1],
            "src.b's half of commit 8 waits"
        );
        // The next round began after commit 8: both halves go together.
        sink.committed_before_read(&[("src".into(), 8)]);
        let ready = sink.take_ready(&[on("src.a", record(1, Some((8, true))))]);
        assert_eq!(ready.whole.len(), 3);
        assert!(sink.pending.is_empty());
    }

    #[test]
    fn past_the_budget_the_oldest_commit_goes_over_in_parts_and_ends_with_its_last() {
        let mut sink = TypedSink::new(NoSink, NoDecoder, true).max_pending_bytes(300);
        let cut = [(Arc::from("src.t"), 0)];
        sink.partitions_cut(&cut);
        let read: Vec<SinkRecord> = (0..4)
            .map(|i| record(i, (i == 2).then_some((9, false))))
            .collect();
        let ready = sink.take_ready(&read);
        assert!(ready.whole.is_empty());
        // Records known to be commit 9 (up to its part stamp) go over; the tail waits.
        assert_eq!(offsets(&ready.partial), [0, 1, 2]);
        assert_eq!(offsets(&sink.pending), [3]);
        assert_eq!(sink.open.get("src"), Some(&9));
        // The rest of commit 9 ends it: the open transaction closes.
        sink.partitions_cut(&[]);
        let ready = sink.take_ready(&[record(4, Some((9, true))), record(5, None)]);
        assert_eq!(offsets(&ready.whole), [3, 4, 5]);
        assert!(sink.open.is_empty());
    }
}
