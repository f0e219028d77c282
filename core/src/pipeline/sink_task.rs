//! Runs one sink: reads committed records from the log and delivers them at the sink's pace.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::PipelineError;
use crate::event_log::{EventLog, ReadBatch};
use crate::metrics;
use crate::retry::{Backoff, Classify, ErrorKind};
use crate::sink::{Offsets, RecordSink, SinkRecord};
use crate::topic::pattern_takes;

mod membership;
mod past_the_log;
mod reset;
use membership::{hand_over, moved, moved_now};
use past_the_log::offsets_past_the_log;
pub use reset::{reset_writer, OffsetReset, PartitionReset};

/// How a sink runs.
#[derive(Debug, Clone)]
pub struct SinkSettings {
    /// The sink's name; its consumer group in the log is `sink.<name>`.
    pub name: String,
    /// Topic patterns: exact names or with `*` wildcards (`shop.public.*`).
    pub topics: Vec<String>,
    /// Upper bound of one read from one partition.
    pub max_read_bytes: usize,
    /// Upper bound of what one round reads across every partition (the sink's memory for
    /// records): partitions are read in turn, starting one further each round, until it is
    /// spent.
    pub max_batch_bytes: usize,
    /// How often to look for new topics matching the patterns when idle.
    pub topic_refresh: Duration,
    /// Whether processes that run this sink may share its partitions (the target keeps each
    /// partition's offsets apart, as the database sinks do). If not, one process runs the whole
    /// sink at a time and the others stand by.
    pub shared: bool,
}

impl SinkSettings {
    pub fn group(&self) -> String {
        format!("sink.{}", self.name)
    }
}

/// Runs `sink` until `cancel` fires or a definite error.
pub async fn run_sink<K, L>(
    settings: SinkSettings,
    mut sink: K,
    log: L,
    cancel: CancellationToken,
) -> Result<(), PipelineError>
where
    K: RecordSink,
    L: EventLog + Clone,
{
    let name = settings.name.clone();
    let group = settings.group();
    let sink_error = |err: K::Error| PipelineError::Sink {
        name: name.clone(),
        source: Box::new(err),
    };
    let log_error = |source| PipelineError::Log {
        name: name.clone(),
        source,
    };
    let mut backoff = Backoff::new();
    let mut commits = log.subscribe();
    // Where several processes run this sink (the log on Kafka), the partitions this one owns.
    let mut membership = log
        .join_group(&group, &settings.topics, !settings.shared)
        .map_err(log_error)?;
    'open: loop {
        if cancel.is_cancelled() {
            break;
        }
        let stored = match sink.open().await {
            Ok(stored) => stored,
            Err(err) if err.kind() == ErrorKind::Definite => return Err(sink_error(err)),
            Err(err) => {
                let delay = backoff.next_delay();
                ::metrics::counter!(metrics::ERRORS, "sink" => name.clone(), "stage" => "sink")
                    .increment(1);
                tracing::warn!(error = %err, retry_in_ms = delay.as_millis() as u64, "sink open failed; retrying");
                tokio::select! {
                    _ = cancel.cancelled() => break 'open,
                    _ = tokio::time::sleep(delay) => continue 'open,
                }
            }
        };
        let mut offsets: Offsets = match stored {
            Some(offsets) => offsets,
            None => log.group_offsets(&group).await.map_err(log_error)?,
        };
        // An operator's change to the offsets that the target does not carry yet.
        let mut reset = OffsetReset::read(&log, &name).await.map_err(log_error)?;
        if let Some(reset) = reset.as_mut() {
            reset.apply(&log, &mut offsets).await;
            reset.store(&log, &name).await.map_err(log_error)?;
            sink.resume_from(&offsets);
            tracing::info!(partitions = ?reset.partitions, "the sink's offsets were changed while it was stopped: it resumes from the new ones");
        }
        // What the destination holds: the consumer group and the lag follow this.
        let mut durable = offsets.clone();
        let owned = membership
            .as_mut()
            .map(|m| m.owned.borrow_and_update().clone());
        match &owned {
            None => tracing::info!(
                partitions = offsets.len(),
                "sink open; resuming from committed offsets"
            ),
            Some(owned) if !settings.shared && owned.is_empty() => tracing::info!(
                group,
                "sink on standby: another process runs it (this one takes over if it stops)"
            ),
            Some(_) if !settings.shared => tracing::info!(
                group,
                "sink open; resuming from committed offsets (this process runs it for the group)"
            ),
            Some(owned) => tracing::info!(
                group,
                owned = owned.len(),
                "sink open; resuming from committed offsets of the partitions this member owns"
            ),
        }
        // The partitions this process delivers: all (no group, or the whole sink's turn), none
        // (on standby), or the group's share.
        let owned = match owned {
            Some(owned) if !settings.shared => owned.is_empty().then(BTreeSet::new),
            owned => owned,
        };
        let mut assigned: Vec<(Arc<str>, u32)> = Vec::new();
        // Per partition, the latest run of offsets read past that holds no record.
        let mut gaps = Gaps::new();
        let mut last_refresh = None::<tokio::time::Instant>;
        // Which partition a round starts with: each round starts one further, so that a budget
        // spent early does not starve the partitions at the end.
        let mut first = 0usize;
        let mut topics_version = log.topics_version();
        // The next round, read while the sink writes the one before (reading and decoding the
        // log then overlaps with the destination's work).
        let mut ahead: Option<tokio::task::JoinHandle<Result<Round, PipelineError>>> = None;
        loop {
            if cancel.is_cancelled() {
                break 'open;
            }
            if let Some(moved) = moved_now(&mut membership) {
                // (A round read ahead is dropped with the rest of this loop's state.)
                hand_over(
                    &name,
                    &group,
                    &log,
                    &mut sink,
                    (&assigned, &gaps),
                    &mut durable,
                    moved,
                )
                .await?;
                continue 'open;
            }
            // A new topic is picked up as soon as its first records are committed (a commit
            // wakes this loop); the periodic refresh covers anything else.
            let version = log.topics_version();
            if version != topics_version
                || last_refresh
                    .is_none_or(|at: tokio::time::Instant| at.elapsed() >= settings.topic_refresh)
            {
                assigned = assignment(&settings, &log, owned.as_ref());
                if let Some(past) = offsets_past_the_log(&log, &assigned, &offsets).await {
                    return Err(PipelineError::Sink {
                        name: name.clone(),
                        source: Box::new(past),
                    });
                }
                last_refresh = Some(tokio::time::Instant::now());
                topics_version = version;
                // Read for the old assignment: read again.
                ahead = None;
            }
            let round = match ahead.take() {
                Some(read) => read.await.expect("reading the log does not panic")?,
                None => {
                    // Mark what exists now, then read: a commit after this point wakes the
                    // wait below.
                    commits.borrow_and_update();
                    first = next_first(first, assigned.len());
                    read_round(&name, &log, &assigned, &offsets, first, &settings).await?
                }
            };
            offsets.extend(round.skipped);
            gaps.extend(round.gaps);
            let Round {
                records,
                cut,
                committed,
                positions,
                ..
            } = round;
            if !records.is_empty() {
                let mut next = offsets.clone();
                for record in &records {
                    next.insert(
                        (record.topic.to_string(), record.partition),
                        record.record.offset + 1,
                    );
                }
                next.extend(positions.clone());
                commits.borrow_and_update();
                first = next_first(first, assigned.len());
                let (name, log, assigned, settings) = (
                    name.clone(),
                    log.clone(),
                    assigned.clone(),
                    settings.clone(),
                );
                ahead = Some(crate::task::spawn_in_span(async move {
                    read_round(&name, &log, &assigned, &next, first, &settings).await
                }));
            }
            // With nothing new, finish what the sink has in flight before waiting, so that a
            // failure shows now rather than with the next batch.
            // A destination that hangs holds this loop in `write`: the lag gauge goes on
            // counting what arrives meanwhile.
            let result = {
                let work = async {
                    if records.is_empty() {
                        sink.flush().await
                    } else {
                        sink.partitions_cut(&cut);
                        sink.committed_before_read(&committed);
                        sink.write(&records).await
                    }
                };
                tokio::pin!(work);
                let mut tick = tokio::time::interval(LAG_REFRESH);
                loop {
                    tokio::select! {
                        result = &mut work => break result,
                        _ = tick.tick() => set_lag_gauge(&name, &log, &assigned, &durable),
                    }
                }
            };
            if let Err(err) = result {
                if err.kind() == ErrorKind::Definite {
                    return Err(sink_error(err));
                }
                let delay = backoff.next_delay();
                ::metrics::counter!(metrics::ERRORS, "sink" => name.clone(), "stage" => "sink")
                    .increment(1);
                tracing::warn!(error = %err, retry_in_ms = delay.as_millis() as u64, "sink write failed; reopening");
                tokio::select! {
                    _ = cancel.cancelled() => break 'open,
                    _ = tokio::time::sleep(delay) => continue 'open,
                }
            }
            let mut advanced = BTreeMap::new();
            for record in &records {
                advanced.insert(
                    (record.topic.to_string(), record.partition),
                    record.record.offset + 1,
                );
            }
            // Past offsets that hold no record, the consumer group too.
            advanced.extend(positions);
            offsets.extend(advanced.clone());
            // With nothing new, what the destination finished in the background still counts
            // now, not at the next batch.
            let advanced = publish_durable(
                &name,
                &group,
                &log,
                &sink,
                (&assigned, &gaps),
                &mut durable,
                advanced,
            )
            .await?;
            if let Some(pending) = reset.as_mut() {
                if pending.settle(&advanced) {
                    pending.store(&log, &name).await.map_err(log_error)?;
                }
                if pending.is_empty() {
                    reset = None;
                }
            }
            if records.is_empty() {
                tokio::select! {
                    _ = cancel.cancelled() => break 'open,
                    _ = commits.changed() => {}
                    _ = tokio::time::sleep(settings.topic_refresh) => last_refresh = None,
                    moved = moved(&mut membership) => {
                        hand_over(&name, &group, &log, &mut sink, (&assigned, &gaps), &mut durable, moved).await?;
                        continue 'open;
                    }
                }
                continue;
            }
            backoff.reset();
            ::metrics::counter!(metrics::SINK_RECORDS, "sink" => name.clone())
                .increment(records.len() as u64);
        }
    }
    sink.close().await.map_err(sink_error)?;
    Ok(())
}

/// What one round read: records of the assigned partitions, in turn, up to the round's budget.
struct Round {
    records: Vec<SinkRecord>,
    /// Partitions holding more committed records than the round read.
    cut: Vec<(Arc<str>, u32)>,
    /// Partitions whose next offset moved past records the log's retention deleted.
    skipped: Offsets,
    /// Partitions whose next offset lies past their last record read (offsets that hold no
    /// record for readers, such as Kafka's transaction markers).
    positions: Offsets,
    /// The same, as the runs of offsets without records.
    gaps: Gaps,
    /// Per source, its last commit before the round read anything (its checkpoint's).
    committed: Vec<(String, u64)>,
}

/// Per partition, offsets `[from, to)` that hold no record for readers (Kafka's transaction
/// markers): a destination that holds everything before them holds everything up to `to`.
type Gaps = BTreeMap<(String, u32), (u64, u64)>;

/// The partition a round starts with: one further than the last round's.
fn next_first(first: usize, count: usize) -> usize {
    if count == 0 {
        0
    } else {
        (first + 1) % count
    }
}

/// Reads a round from `offsets` on, starting with partition `first` of `assigned`.
async fn read_round<L: EventLog>(
    name: &str,
    log: &L,
    assigned: &[(Arc<str>, u32)],
    offsets: &Offsets,
    first: usize,
    settings: &SinkSettings,
) -> Result<Round, PipelineError> {
    let log_error = |source| PipelineError::Log {
        name: name.to_owned(),
        source,
    };
    let mut round = Round {
        records: Vec::new(),
        cut: Vec::new(),
        skipped: Offsets::new(),
        positions: Offsets::new(),
        gaps: Gaps::new(),
        committed: Vec::new(),
    };
    // Each source's last commit before any partition is read: everything up to it is in every
    // partition this round reads (commits become visible whole), later commits maybe not.
    let mut sources: Vec<&str> = assigned
        .iter()
        .map(|(topic, _)| topic.split('.').next().unwrap_or(topic))
        .collect();
    sources.sort_unstable();
    sources.dedup();
    for source in sources {
        if let Some(text) = log.checkpoint(source).await.map_err(log_error)? {
            let commit = crate::checkpoint::Checkpoint::commit_in(&text);
            if commit > 0 {
                round.committed.push((source.to_owned(), commit));
            }
        }
    }
    let mut budget = settings.max_batch_bytes;
    let count = assigned.len();
    for i in 0..count {
        let (topic, partition) = &assigned[(first + i) % count];
        let offset = offsets
            .get(&(topic.to_string(), *partition))
            .copied()
            .unwrap_or(0);
        if budget == 0 {
            // Not read this round: whatever it holds waits, like a cut read.
            if offset < log.stable_offset(topic, *partition) {
                round.cut.push((Arc::clone(topic), *partition));
            }
            continue;
        }
        let max_bytes = settings.max_read_bytes.min(budget);
        let ReadBatch {
            records: read,
            next,
        } = match log.read_from(topic, *partition, offset, max_bytes).await {
            Ok(read) => read,
            Err(crate::event_log::LogError::OffsetOutOfRange { start, .. }) => {
                // Retention deleted what this sink had not read yet: say so loudly and go
                // on from what is left, rather than stop the sink for good.
                tracing::error!(%topic, partition, from = offset, to = start,
                        "sink fell behind the log's retention; records in between are lost to this sink");
                ::metrics::counter!(metrics::ERRORS, "sink" => name.to_owned(), "stage" => "retention").increment(1);
                round.skipped.insert((topic.to_string(), *partition), start);
                log.read_from(topic, *partition, start, max_bytes)
                    .await
                    .map_err(log_error)?
            }
            Err(err) => return Err(log_error(err)),
        };
        // Past offsets without records (transaction markers): the next read starts there.
        let after_records = read.last().map_or(offset, |last| last.offset + 1);
        if next > after_records {
            round
                .positions
                .insert((topic.to_string(), *partition), next);
            round
                .gaps
                .insert((topic.to_string(), *partition), (after_records, next));
        }
        let bytes: usize = read
            .iter()
            .map(|r| {
                r.key.as_ref().map_or(0, |k| k.len()) + r.value.as_ref().map_or(0, |v| v.len())
            })
            .sum();
        budget = budget.saturating_sub(bytes.max(1));
        if !read.is_empty() && next.max(after_records) < log.stable_offset(topic, *partition) {
            round.cut.push((Arc::clone(topic), *partition));
        }
        round
            .records
            .extend(read.into_iter().map(|record| SinkRecord {
                topic: Arc::clone(topic),
                partition: *partition,
                record,
            }));
    }
    Ok(round)
}

/// Commits to the consumer group what the destination now holds beyond `durable`: the
/// sink's `applied` offsets when it reports them, otherwise what `write` just took
/// (`written`). Then sets the lag gauge from `durable`: records committed in the log that the
/// destination does not hold yet.
#[allow(clippy::too_many_arguments)]
async fn publish_durable<S: RecordSink, L: EventLog>(
    name: &str,
    group: &str,
    log: &L,
    sink: &S,
    (assigned, gaps): (&[(Arc<str>, u32)], &Gaps),
    durable: &mut Offsets,
    written: Offsets,
) -> Result<Offsets, PipelineError> {
    let advanced: Offsets = match sink.applied() {
        Some(applied) => {
            let mut advanced: Offsets = applied
                .iter()
                .filter(|(partition, next)| {
                    durable.get(*partition).is_none_or(|known| known < *next)
                })
                .map(|(partition, next)| (partition.clone(), *next))
                .collect();
            // Past the markers after what the destination holds, so that a caught-up sink
            // shows no lag.
            for (partition, (from, to)) in gaps {
                let at = advanced.get(partition).or(durable.get(partition)).copied();
                if at.is_some_and(|at| at >= *from && at < *to) {
                    advanced.insert(partition.clone(), *to);
                }
            }
            advanced
        }
        None => written,
    };
    durable.extend(advanced.clone());
    if !advanced.is_empty() {
        log.commit_offsets(group, advanced.clone())
            .await
            .map_err(|source| PipelineError::Log {
                name: name.to_owned(),
                source,
            })?;
    }
    set_lag_gauge(name, log, assigned, durable);
    Ok(advanced)
}

/// How often the lag gauge is refreshed while a write waits on the destination.
const LAG_REFRESH: std::time::Duration = std::time::Duration::from_secs(1);

/// Sets the lag gauge: records committed in the log that the destination does not hold yet.
fn set_lag_gauge<L: EventLog>(
    name: &str,
    log: &L,
    assigned: &[(Arc<str>, u32)],
    durable: &Offsets,
) {
    let lag: u64 = assigned
        .iter()
        .map(|(topic, partition)| {
            let next = durable
                .get(&(topic.to_string(), *partition))
                .copied()
                .unwrap_or(0);
            log.stable_offset(topic, *partition).saturating_sub(next)
        })
        .sum();
    ::metrics::gauge!(metrics::SINK_LAG_RECORDS, "sink" => name.to_owned()).set(lag as f64);
}

/// The partitions of every topic a sink's patterns take (`pattern_takes`).
fn assignment<L: EventLog>(
    settings: &SinkSettings,
    log: &L,
    owned: Option<&BTreeSet<(String, u32)>>,
) -> Vec<(Arc<str>, u32)> {
    let mut assigned = Vec::new();
    for topic in log.topics() {
        if settings
            .topics
            .iter()
            .any(|pattern| pattern_takes(pattern, &topic))
        {
            let topic: Arc<str> = Arc::from(topic.as_str());
            for partition in 0..log.partitions(&topic).unwrap_or(0) {
                if owned.is_none_or(|owned| owned.contains(&(topic.to_string(), partition))) {
                    assigned.push((Arc::clone(&topic), partition));
                }
            }
        }
    }
    assigned
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::batch::{PartitionBatch, Record};
    use crate::event_log::memory::MemoryLog;
    use crate::event_log::{Membership, Revocation};

    /// Offsets and values taken.
    type Seen = Arc<Mutex<Vec<(u64, Vec<u8>)>>>;

    /// Takes every record, noting the partitions each write was told were cut.
    #[derive(Clone, Default)]
    struct Collect {
        seen: Seen,
        cuts: Arc<Mutex<Vec<usize>>>,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("never")]
    struct Never;

    impl Classify for Never {
        fn kind(&self) -> ErrorKind {
            ErrorKind::Definite
        }
    }

    impl RecordSink for Collect {
        type Error = Never;

        async fn open(&mut self) -> Result<Option<Offsets>, Self::Error> {
            Ok(None)
        }

        async fn write(&mut self, records: &[SinkRecord]) -> Result<(), Self::Error> {
            let mut seen = self.seen.lock().unwrap();
            for record in records {
                let value = record.record.value.as_deref().unwrap_or_default().to_vec();
                seen.push((record.record.offset, value));
            }
            Ok(())
        }

        fn partitions_cut(&mut self, cut: &[(Arc<str>, u32)]) {
            self.cuts.lock().unwrap().push(cut.len());
        }

        async fn close(&mut self) -> Result<(), Self::Error> {
            Ok(())
        }
    }

    async fn commit(log: &MemoryLog, values: &[&str]) {
        commit_to(log, 0, values).await;
    }

    async fn commit_to(log: &MemoryLog, partition: u32, values: &[&str]) {
        let records: Vec<Record> = values
            .iter()
            .map(|v| Record {
                key: None,
                value: Some(bytes::Bytes::copy_from_slice(v.as_bytes())),
                timestamp_ms: 0,
                headers: Vec::new(),
            })
            .collect();
        let batch = PartitionBatch {
            topic: "src.public.t".into(),
            partition,
            records: records.into(),
        };
        log.append("src", vec![batch], Some("{}".into()))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn offsets_without_records_are_passed_over_not_waited_for() {
        // Kafka's way: each commit leaves a marker offset after its records.
        let log = MemoryLog::with_markers(1);
        log.ensure_topic("src.public.t").await.unwrap();
        commit(&log, &["a", "b"]).await;
        commit(&log, &["c"]).await;
        assert_eq!(log.stable_offset("src.public.t", 0), 5, "a b | c |");
        let sink = Collect::default();
        let settings = SinkSettings {
            name: "s".into(),
            topics: vec!["src.public.*".into()],
            max_read_bytes: 1 << 20,
            max_batch_bytes: 1 << 20,
            topic_refresh: Duration::from_secs(60),
            shared: true,
        };
        let cancel = CancellationToken::new();
        let task = crate::task::spawn_in_span(run_sink(
            settings,
            sink.clone(),
            log.clone(),
            cancel.clone(),
        ));
        let group = |log: &MemoryLog| {
            let log = log.clone();
            async move { log.group_offsets("sink.s").await.unwrap() }
        };
        let until = |want: usize| {
            let seen = Arc::clone(&sink.seen);
            async move {
                for _ in 0..200 {
                    if seen.lock().unwrap().len() >= want {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                panic!("the sink took {:?}", seen.lock().unwrap());
            }
        };
        until(3).await;
        commit(&log, &["d"]).await;
        until(4).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        cancel.cancel();
        task.await.unwrap().unwrap();
        let seen = sink.seen.lock().unwrap().clone();
        let expected: Vec<(u64, Vec<u8>)> = [(0, "a"), (1, "b"), (3, "c"), (5, "d")]
            .iter()
            .map(|(o, v)| (*o, v.as_bytes().to_vec()))
            .collect();
        assert_eq!(seen, expected, "each record once, in order");
        // Read to the end past the markers: no write was told the partition holds more.
        assert!(sink.cuts.lock().unwrap().iter().all(|&n| n == 0));
        // The consumer group is past the last marker too: no lag.
        assert_eq!(log.stable_offset("src.public.t", 0), 7);
        assert_eq!(
            group(&log)
                .await
                .get(&("src.public.t".to_owned(), 0))
                .copied(),
            Some(7)
        );
    }

    #[tokio::test]
    async fn a_member_delivers_only_its_partitions_and_hands_them_over_when_asked() {
        let topic = "src.public.t".to_owned();
        let (owned, owned_rx) = tokio::sync::watch::channel(BTreeSet::from([(topic.clone(), 0)]));
        let (revoke, revoked_rx) = tokio::sync::mpsc::channel(1);
        let log = MemoryLog::with_member(
            2,
            Membership {
                owned: owned_rx,
                revoked: revoked_rx,
            },
        );
        log.ensure_topic(&topic).await.unwrap();
        commit_to(&log, 0, &["a"]).await;
        commit_to(&log, 1, &["b"]).await;
        let sink = Collect::default();
        let settings = SinkSettings {
            name: "s".into(),
            topics: vec!["src.public.*".into()],
            max_read_bytes: 1 << 20,
            max_batch_bytes: 1 << 20,
            topic_refresh: Duration::from_secs(60),
            shared: true,
        };
        let cancel = CancellationToken::new();
        let task = crate::task::spawn_in_span(run_sink(
            settings,
            sink.clone(),
            log.clone(),
            cancel.clone(),
        ));
        let seen = || sink.seen.lock().unwrap().clone();
        let value = |v: &str| v.as_bytes().to_vec();
        for _ in 0..200 {
            if !seen().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(seen(), vec![(0, value("a"))], "only the owned partition");

        // Partition 0 goes to another member: the sink answers once its offsets are committed.
        let (done, answered) = tokio::sync::oneshot::channel();
        revoke
            .send(Revocation {
                partitions: vec![(topic.clone(), 0)],
                done,
            })
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(5), answered)
            .await
            .expect("the sink answers the revocation")
            .unwrap();
        let committed = log.group_offsets("sink.s").await.unwrap();
        assert_eq!(
            committed.get(&(topic.clone(), 0)),
            Some(&1),
            "{committed:?}"
        );

        // This member gets partition 1 instead.
        owned.send_replace(BTreeSet::from([(topic.clone(), 1)]));
        commit_to(&log, 0, &["c"]).await;
        for _ in 0..200 {
            if seen().len() >= 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            seen(),
            vec![(0, value("a")), (0, value("b"))],
            "partition 1's record, and nothing more of partition 0"
        );
        cancel.cancel();
        task.await.unwrap().unwrap();
    }
}
