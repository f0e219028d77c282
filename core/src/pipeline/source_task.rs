//! Runs one source: pulls batches, hands them to the log writer, feeds durable checkpoints back.

mod encode;
mod transactions;

use encode::{BatchEncoder, EncodedBatch};
use transactions::TxnTracker;

use crate::clock::now_us;

use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::PipelineError;
use crate::checkpoint::{Checkpoint, SnapshotProgress};
use crate::encode::EventEncoder;
use crate::event_log::EventLog;
use crate::metrics;
use crate::position::Position;
use crate::retry::{Backoff, Classify, ErrorKind};
use crate::source::{Source, SourceBatch};
use crate::topic;

/// Attempts to start a source before an unreachable server is reported as a failure.
const STARTUP_ATTEMPTS: u32 = 3;

/// How a source runs.
#[derive(Debug, Clone)]
pub struct SourceSettings {
    /// The source's name: topic prefix and log writer id.
    pub name: String,
    /// Batches in flight between the source and the log writer.
    pub channel_batches: usize,
    /// Stop the whole pipeline once a checkpoint at or past this position is durable (after
    /// any snapshot): `sluice run --stop-at`, for cut-overs and benchmarks.
    pub stop_at: Option<Position>,
    /// What reaching `stop_at` cancels: the whole pipeline's token (None: the one the source
    /// runs on, which then is the pipeline's).
    pub stop_at_cancels: Option<CancellationToken>,
    /// Number each event among its table's events in its transaction and write `BEGIN`/`END`
    /// records to `<name>.transaction` (Debezium's `provide.transaction.metadata`).
    pub transaction_metadata: bool,
}

/// What the writer reports back to the source side.
#[derive(Debug, Clone, Default, PartialEq)]
struct WriterProgress {
    /// Checkpoint of the last committed batch.
    durable: Option<Checkpoint>,
    /// Batches handled so far, committed or not.
    handled: u64,
}

/// Runs `source` until `cancel` fires or a definite error; see the pipeline module for the
/// shutdown order.
pub async fn run_source<S, E, L>(
    settings: SourceSettings,
    mut source: S,
    encoder: E,
    log: L,
    cancel: CancellationToken,
) -> Result<(), PipelineError>
where
    S: Source,
    E: EventEncoder,
    L: EventLog + Clone,
{
    let name = settings.name.clone();
    let log_error = |source| PipelineError::Log {
        name: name.clone(),
        source,
    };
    let stored = log.claim(&name).await.map_err(log_error)?;
    let last_commit = stored.as_deref().map_or(0, Checkpoint::commit_in);
    let resume = match stored {
        Some(text) => {
            Some(
                Checkpoint::from_json(&text).map_err(|source| PipelineError::Checkpoint {
                    name: name.clone(),
                    source,
                })?,
            )
        }
        None => None,
    };
    match &resume {
        Some(checkpoint) => {
            tracing::info!(position = %checkpoint.position, snapshot = ?checkpoint.snapshot, "resuming from the log's last checkpoint")
        }
        None => tracing::info!("no checkpoint in the log: fresh start"),
    }

    // `halt` stops the source side when the pipeline stops or when the writer fails.
    let halt = cancel.child_token();
    let (batch_tx, batch_rx) = mpsc::channel::<SourceBatch>(settings.channel_batches.max(1));
    let (progress_tx, mut progress_rx) = watch::channel(WriterProgress {
        durable: resume.clone(),
        handled: 0,
    });
    let stop = settings.stop_at.clone().map(|position| {
        let token = settings.stop_at_cancels.clone();
        (position, token.unwrap_or_else(|| cancel.clone()))
    });
    // A cut-over whose position the log already holds stops at once: no new batch may come
    // to be checked (the legacy system's writes have stopped).
    if let (Some((stop_at, stop_cancel)), Some(checkpoint)) = (&stop, &resume) {
        let reached = checkpoint.snapshot == SnapshotProgress::Done
            && checkpoint
                .position
                .partial_cmp(stop_at)
                .is_some_and(|order| order.is_ge());
        if reached {
            tracing::info!(position = %checkpoint.position, stop_at = %stop_at, "reached the stop position; stopping");
            stop_cancel.cancel();
            return Ok(());
        }
    }
    let writer_halt = halt.clone();
    let writer_log = log.clone();
    let writer_name = name.clone();
    let writer = crate::task::spawn_in_span(async move {
        let result = write_batches(
            writer_name,
            encoder,
            writer_log,
            batch_rx,
            progress_tx,
            stop,
            last_commit,
        )
        .await;
        if result.is_err() {
            writer_halt.cancel();
        }
        result
    });

    let mut puller = Puller {
        name: &name,
        log: &log,
        batch_tx: &batch_tx,
        progress_rx: &mut progress_rx,
        halt: &halt,
        sent: 0,
        transactions: settings.transaction_metadata.then(TxnTracker::default),
    };
    let source_result = puller.run(&mut source, resume).await;
    drop(batch_tx);
    // Drain: the writer appends every batch already read before it returns.
    let writer_result = match writer.await {
        Ok(result) => result,
        Err(join) => std::panic::resume_unwind(join.into_panic()),
    };
    // Acknowledge upstream exactly what is durable, then close.
    let final_checkpoint = progress_rx.borrow_and_update().durable.clone();
    if let Some(checkpoint) = final_checkpoint {
        if let Err(err) = source.commit(&checkpoint).await {
            tracing::warn!(error = %err, "final acknowledgement upstream failed; the source will resend from its last acknowledged position");
        }
    }
    if let Err(err) = source.shutdown().await {
        tracing::warn!(error = %err, "source shutdown failed");
    }
    writer_result.and(source_result)
}

/// The source side: pull, send, apply durable checkpoints, retry transient failures.
struct Puller<'a, L> {
    name: &'a str,
    log: &'a L,
    batch_tx: &'a mpsc::Sender<SourceBatch>,
    progress_rx: &'a mut watch::Receiver<WriterProgress>,
    halt: &'a CancellationToken,
    sent: u64,
    /// With `transaction_metadata`: the transaction boundaries of the batches.
    transactions: Option<TxnTracker>,
}

impl<L: EventLog> Puller<'_, L> {
    async fn run<S: Source>(
        &mut self,
        source: &mut S,
        resume: Option<Checkpoint>,
    ) -> Result<(), PipelineError> {
        let name = self.name;
        let source_error = |err: S::Error| PipelineError::Source {
            name: name.to_owned(),
            source: Box::new(err),
        };
        let mut backoff = Backoff::new();
        let mut start_from = resume;
        let mut ever_started = false;
        'connect: loop {
            if self.halt.is_cancelled() {
                return Ok(());
            }
            if S::KEEPS_HISTORY {
                let records =
                    read_history(self.log, name)
                        .await
                        .map_err(|source| PipelineError::Log {
                            name: name.to_owned(),
                            source,
                        })?;
                source.restore_history(records).map_err(source_error)?;
            }
            if let Err(err) = source.start(start_from.clone()).await {
                // At startup a server that cannot be reached is reported, not waited for
                // forever: the operator is watching. Once running, transient failures are
                // retried for good.
                let give_up = !ever_started && backoff.attempts() + 1 >= STARTUP_ATTEMPTS;
                if err.kind() == ErrorKind::Definite || give_up {
                    return Err(source_error(err));
                }
                let delay = backoff.next_delay();
                ::metrics::counter!(metrics::ERRORS, "source" => name.to_owned(), "stage" => "source").increment(1);
                tracing::warn!(error = %err, retry_in_ms = delay.as_millis() as u64, attempt = backoff.attempts(), "source start failed; retrying");
                tokio::select! {
                    _ = self.halt.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(delay) => continue 'connect,
                }
            }
            ever_started = true;
            if let Some(tracker) = self.transactions.as_mut() {
                tracker.reset();
            }
            loop {
                let durable = match self.progress_rx.has_changed() {
                    Ok(true) => self.progress_rx.borrow_and_update().durable.clone(),
                    _ => None,
                };
                let committed = match durable {
                    Some(checkpoint) => source.commit(&checkpoint).await,
                    None => Ok(()),
                };
                // A lost connection while acknowledging is handled like one while reading.
                let next = match committed {
                    Ok(()) => tokio::select! {
                        biased;
                        _ = self.halt.cancelled() => return Ok(()),
                        next = source.next_batch() => next,
                    },
                    Err(err) => Err(err),
                };
                let err = match next {
                    Ok(Some(mut batch)) => {
                        backoff.reset();
                        if let Some(tracker) = self.transactions.as_mut() {
                            tracker.track(&mut batch);
                        }
                        ::metrics::counter!(metrics::SOURCE_EVENTS, "source" => name.to_owned())
                            .increment(batch.events.len() as u64);
                        if self.batch_tx.send(batch).await.is_err() {
                            return Ok(()); // the writer stopped; the caller reports its error
                        }
                        self.sent += 1;
                        continue;
                    }
                    Ok(None) => continue,
                    Err(err) if err.kind() == ErrorKind::Definite => return Err(source_error(err)),
                    Err(err) => err,
                };
                ::metrics::counter!(metrics::ERRORS, "source" => name.to_owned(), "stage" => "source").increment(1);
                // Resume after the last batch handed to the writer, once everything sent is
                // handled: restarting from an older checkpoint would write transactions twice.
                // Parts of an unfinished large transaction are discarded; it comes again whole.
                while self.progress_rx.borrow_and_update().handled < self.sent {
                    tokio::select! {
                        changed = self.progress_rx.changed() => if changed.is_err() { return Ok(()) },
                        _ = self.halt.cancelled() => return Ok(()),
                    }
                }
                self.log
                    .rollback(name)
                    .await
                    .map_err(|source| PipelineError::Log {
                        name: name.to_owned(),
                        source,
                    })?;
                start_from = self.progress_rx.borrow().durable.clone();
                let delay = backoff.next_delay();
                tracing::warn!(error = %err, retry_in_ms = delay.as_millis() as u64, "source stream failed; reconnecting from the last durable position");
                tokio::select! {
                    _ = self.halt.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(delay) => continue 'connect,
                }
            }
        }
    }
}

/// The committed records of a source's history topic, oldest first (none when it has none).
async fn read_history<L: EventLog>(
    log: &L,
    source: &str,
) -> Result<Vec<Bytes>, crate::event_log::LogError> {
    let topic = topic::history_topic(source);
    let mut records = Vec::new();
    if log.partitions(&topic).is_none() {
        return Ok(records);
    }
    let mut offset = 0;
    loop {
        let read = log.read(&topic, 0, offset, 4 << 20).await?;
        let Some(last) = read.last() else {
            return Ok(records);
        };
        offset = last.offset + 1;
        records.extend(read.into_iter().filter_map(|record| record.value));
    }
}

/// An encoded batch on its way to the appender.
struct PendingAppend {
    encoded: EncodedBatch,
    /// The checkpoint as stored in the log's commit record (None: part of a large transaction).
    stored_checkpoint: Option<String>,
}

/// Encoded batches waiting for the appender while it appends (and fsyncs) an earlier one. With
/// one, the encoder and the appender took turns waiting for each other; with two, whichever is
/// faster keeps the other busy.
const APPENDS_QUEUED: usize = 2;
/// The same for a log whose commits take longer than writing (Kafka's transactions: a round
/// trip to the coordinator and markers): batches queued meanwhile are appended together and
/// committed once, with the last one's checkpoint.
const APPENDS_GROUPED: usize = 16;

/// The log side: encode each batch and hand it to the appender, which appends the batches
/// strictly in order, one at a time (as one transaction when a batch carries a checkpoint), and
/// publishes each checkpoint as durable. Encoding overlaps the appends (and fsyncs).
async fn write_batches<E: EventEncoder, L: EventLog + Clone + 'static>(
    name: String,
    encoder: E,
    log: L,
    mut batch_rx: mpsc::Receiver<SourceBatch>,
    progress_tx: watch::Sender<WriterProgress>,
    stop: Option<(Position, CancellationToken)>,
    last_commit: u64,
) -> Result<(), PipelineError> {
    // The number of the commit the next appended records belong to.
    let mut commit = last_commit + 1;
    let mut batch_encoder = BatchEncoder::new(name.clone(), encoder, log.prepared_batches());
    // Tables held back by an earlier run go first: released into their topics if the registry
    // takes their schema now, held on otherwise.
    batch_encoder.release_held(&log).await?;
    // Logs that take records as they are (not batches prepared in their own format) commit
    // several queued batches at once.
    let grouped = log.prepared_batches().is_none();
    let queued = if grouped {
        APPENDS_GROUPED
    } else {
        APPENDS_QUEUED
    };
    let (append_tx, append_rx) = mpsc::channel::<PendingAppend>(queued);
    let mut appender = crate::task::spawn_in_span(append_batches(
        name.clone(),
        log.clone(),
        append_rx,
        progress_tx,
        stop,
    ));
    let appended = |joined: Result<Result<(), PipelineError>, tokio::task::JoinError>| match joined
    {
        Ok(result) => result,
        Err(join) => std::panic::resume_unwind(join.into_panic()),
    };
    loop {
        // The appender only ends early on an error: that ends the writer at once, even while
        // the source is idle.
        let next = tokio::select! {
            joined = &mut appender => return appended(joined),
            next = batch_rx.recv() => next,
        };
        let Some(batch) = next else { break };
        // The last record of each partition's records is stamped with the commit number: the
        // records before it in that partition belong to the same commit (see COMMIT_HEADER).
        let encoded = batch_encoder.encode(batch, &log, commit).await?;
        let stored_checkpoint = encoded
            .checkpoint
            .as_ref()
            .map(|checkpoint| checkpoint.to_json_at(commit));
        if stored_checkpoint.is_some() {
            commit += 1;
        }
        let pending = PendingAppend {
            encoded,
            stored_checkpoint,
        };
        if append_tx.send(pending).await.is_err() {
            break; // the appender stopped on an error, returned below
        }
    }
    drop(append_tx);
    appended(appender.await)
}

/// Appends encoded batches in the order they come, reporting each; stops at the first error.
async fn append_batches<L: EventLog>(
    name: String,
    log: L,
    mut append_rx: mpsc::Receiver<PendingAppend>,
    progress_tx: watch::Sender<WriterProgress>,
    stop: Option<(Position, CancellationToken)>,
) -> Result<(), PipelineError> {
    let mut snapshot = SnapshotMeter::default();
    let grouped = log.prepared_batches().is_none();
    while let Some(first) = append_rx.recv().await {
        let mut group = vec![first];
        while grouped && group.len() < APPENDS_GROUPED {
            match append_rx.try_recv() {
                Ok(next) => group.push(next),
                Err(_) => break,
            }
        }
        // One commit, with the checkpoint of the last batch that has one: it covers the
        // batches before it. (Batches after it are parts of a large transaction, appended
        // uncommitted as always.)
        let commit_at = group
            .iter()
            .rposition(|pending| pending.stored_checkpoint.is_some());
        let mut done = Vec::with_capacity(group.len());
        for (i, pending) in group.into_iter().enumerate() {
            let PendingAppend {
                encoded,
                stored_checkpoint,
            } = pending;
            let EncodedBatch {
                batches,
                checkpoint,
                records,
                newest_commit_us,
            } = encoded;
            let bytes: usize = batches.iter().map(|b| b.records.byte_len()).sum();
            let stored = if commit_at.is_some_and(|at| i < at) {
                None
            } else {
                stored_checkpoint
            };
            log.append(&name, batches, stored)
                .await
                .map_err(|source| PipelineError::Log {
                    name: name.clone(),
                    source,
                })?;
            done.push((checkpoint, records, newest_commit_us, bytes));
        }
        // Reported once committed, in order.
        for (checkpoint, records, newest_commit_us, bytes) in done {
            if let Some(checkpoint) = &checkpoint {
                snapshot.committed(&name, checkpoint, records, bytes as u64);
            }
            report(
                &name,
                &progress_tx,
                &stop,
                checkpoint,
                records,
                newest_commit_us,
            );
        }
    }
    Ok(())
}

/// How often a running snapshot says how far it is.
const SNAPSHOT_PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// A running snapshot's progress line: chunks in the log (of all), rows and bytes this run,
/// rates, and the time left at this run's pace.
#[derive(Default)]
struct SnapshotMeter {
    /// When this run's first snapshot batch was committed, and the chunks done then.
    started: Option<(std::time::Instant, u64)>,
    rows: u64,
    bytes: u64,
    last_line: Option<std::time::Instant>,
}

impl SnapshotMeter {
    fn committed(&mut self, name: &str, checkpoint: &Checkpoint, records: u64, bytes: u64) {
        let Some((done, total)) = checkpoint.snapshot_chunks() else {
            if checkpoint.snapshot == SnapshotProgress::Done && self.started.is_some() {
                self.rows += records;
                tracing::info!(
                    source = name,
                    rows = self.rows,
                    "snapshot: every chunk is in the log"
                );
                *self = SnapshotMeter::default();
            }
            return;
        };
        let now = std::time::Instant::now();
        let (started, done_at_start) = *self.started.get_or_insert((now, done));
        self.rows += records;
        self.bytes += bytes;
        ::metrics::counter!(metrics::SNAPSHOT_ROWS, "source" => name.to_owned()).increment(records);
        ::metrics::counter!(metrics::SNAPSHOT_BYTES, "source" => name.to_owned()).increment(bytes);
        if self
            .last_line
            .is_some_and(|last| now.duration_since(last) < SNAPSHOT_PROGRESS_EVERY)
        {
            return;
        }
        self.last_line = Some(now);
        let elapsed = now.duration_since(started).as_secs_f64().max(1e-3);
        let rate = self.rows as f64 / elapsed;
        let done_now = done.saturating_sub(done_at_start);
        let left = if done_now > 0 {
            let seconds = elapsed / done_now as f64 * total.saturating_sub(done) as f64;
            format!("about {}s left", seconds.round() as u64)
        } else {
            "time left not known yet".to_owned()
        };
        tracing::info!(
            source = name,
            "snapshot: {done} of {total} chunks in the log ({}%), {} rows ({:.1} MB in the log) \
             this run at {} rows/s ({:.1} MB/s), {left}",
            (done * 100).checked_div(total).unwrap_or(0),
            self.rows,
            self.bytes as f64 / 1e6,
            rate.round() as u64,
            self.bytes as f64 / 1e6 / elapsed,
        );
    }
}

/// Publishes a finished append: metrics, the stop position, and the durable checkpoint.
fn report(
    name: &str,
    progress_tx: &watch::Sender<WriterProgress>,
    stop: &Option<(Position, CancellationToken)>,
    checkpoint: Option<Checkpoint>,
    records: u64,
    newest_commit_us: i64,
) {
    ::metrics::counter!(metrics::LOG_RECORDS_APPENDED, "source" => name.to_owned())
        .increment(records);
    let Some(checkpoint) = checkpoint else {
        progress_tx.send_modify(|progress| progress.handled += 1);
        return;
    };
    ::metrics::counter!(metrics::SOURCE_BATCHES_COMMITTED, "source" => name.to_owned())
        .increment(1);
    if newest_commit_us > 0 {
        let lag = (now_us() - newest_commit_us).max(0) as f64 / 1e6;
        ::metrics::gauge!(metrics::SOURCE_LAG_SECONDS, "source" => name.to_owned()).set(lag);
    }
    if let Some((done, total)) = checkpoint.snapshot_chunks() {
        ::metrics::gauge!(metrics::SNAPSHOT_CHUNKS_DONE, "source" => name.to_owned())
            .set(done as f64);
        ::metrics::gauge!(metrics::SNAPSHOT_CHUNKS_TOTAL, "source" => name.to_owned())
            .set(total as f64);
    }
    let snapshotting = f64::from(u8::from(
        checkpoint.snapshot == SnapshotProgress::InProgress,
    ));
    ::metrics::gauge!(metrics::SNAPSHOT_RUNNING, "source" => name.to_owned()).set(snapshotting);
    tracing::trace!(position = %checkpoint.position, records, "batch durable");
    if let Some((stop_at, cancel)) = stop {
        let reached = checkpoint.snapshot == SnapshotProgress::Done
            && checkpoint
                .position
                .partial_cmp(stop_at)
                .is_some_and(|order| order.is_ge());
        if reached && !cancel.is_cancelled() {
            tracing::info!(position = %checkpoint.position, stop_at = %stop_at, "reached the stop position; stopping");
            cancel.cancel();
        }
    }
    progress_tx.send_modify(|progress| {
        progress.handled += 1;
        progress.durable = Some(checkpoint);
    });
}
