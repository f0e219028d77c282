//! Runs one source: pulls batches, hands them to the log writer, feeds durable checkpoints back.

use sluice_log::{PartitionBatch, Record};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::PipelineError;
use crate::checkpoint::{Checkpoint, SnapshotProgress};
use crate::encode::{EncodedRecord, EventEncoder};
use crate::event::TableSchema;
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
    let resume = match log
        .checkpoint(&name)
        .await
        .map_err(|source| PipelineError::Log {
            name: name.clone(),
            source,
        })? {
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

    let (batch_tx, batch_rx) = mpsc::channel::<SourceBatch>(settings.channel_batches.max(1));
    let (durable_tx, mut durable_rx) = watch::channel::<Option<Checkpoint>>(resume.clone());
    let stop = settings
        .stop_at
        .clone()
        .map(|position| (position, cancel.clone()));
    let writer = tokio::spawn(write_batches(
        name.clone(),
        encoder,
        log,
        batch_rx,
        durable_tx,
        stop,
    ));

    let source_result = pull(
        &name,
        &mut source,
        resume,
        &batch_tx,
        &mut durable_rx,
        &cancel,
    )
    .await;
    drop(batch_tx);
    // Drain: the writer appends every batch already read before it returns.
    let writer_result = match writer.await {
        Ok(result) => result,
        Err(join) => std::panic::resume_unwind(join.into_panic()),
    };
    // Acknowledge upstream exactly what is durable, then close.
    let final_checkpoint = durable_rx.borrow_and_update().clone();
    if let Some(checkpoint) = final_checkpoint {
        if let Err(err) = source.commit(&checkpoint).await {
            tracing::warn!(error = %err, "final acknowledgement upstream failed; the source will resend from its last acknowledged position");
        }
    }
    if let Err(err) = source.shutdown().await {
        tracing::warn!(error = %err, "source shutdown failed");
    }
    source_result.and(writer_result)
}

/// The source side: pull, send, apply durable checkpoints, retry transient failures.
async fn pull<S: Source>(
    name: &str,
    source: &mut S,
    resume: Option<Checkpoint>,
    batch_tx: &mpsc::Sender<SourceBatch>,
    durable_rx: &mut watch::Receiver<Option<Checkpoint>>,
    cancel: &CancellationToken,
) -> Result<(), PipelineError> {
    let source_error = |err: S::Error| PipelineError::Source {
        name: name.to_owned(),
        source: Box::new(err),
    };
    let mut backoff = Backoff::new();
    let mut start_from = resume;
    let mut last_sent = start_from.clone();
    let mut ever_started = false;
    'connect: loop {
        if cancel.is_cancelled() {
            return Ok(());
        }
        if let Err(err) = source.start(start_from.clone()).await {
            // At startup a server that cannot be reached is reported, not waited for forever:
            // the operator is watching. Once running, transient failures are retried for good.
            let give_up = !ever_started && backoff.attempts() + 1 >= STARTUP_ATTEMPTS;
            if err.kind() == ErrorKind::Definite || give_up {
                return Err(source_error(err));
            }
            let delay = backoff.next_delay();
            ::metrics::counter!(metrics::ERRORS, "source" => name.to_owned(), "stage" => "source")
                .increment(1);
            tracing::warn!(error = %err, retry_in_ms = delay.as_millis() as u64, attempt = backoff.attempts(), "source start failed; retrying");
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                _ = tokio::time::sleep(delay) => continue 'connect,
            }
        }
        ever_started = true;
        loop {
            if cancel.is_cancelled() {
                return Ok(());
            }
            if durable_rx.has_changed().unwrap_or(false) {
                let checkpoint = durable_rx.borrow_and_update().clone();
                if let Some(checkpoint) = checkpoint {
                    source
                        .commit(&checkpoint)
                        .await
                        .map_err(|e| classify_or_fail(e, name))?;
                }
            }
            let next = tokio::select! {
                biased;
                _ = cancel.cancelled() => return Ok(()),
                next = source.next_batch() => next,
            };
            let err = match next {
                Ok(Some(batch)) => {
                    backoff.reset();
                    ::metrics::counter!(metrics::SOURCE_EVENTS, "source" => name.to_owned())
                        .increment(batch.events.len() as u64);
                    last_sent = Some(batch.checkpoint.clone());
                    if batch_tx.send(batch).await.is_err() {
                        // The writer stopped; its error is reported by the caller.
                        return Ok(());
                    }
                    continue;
                }
                Ok(None) => continue,
                Err(err) if err.kind() == ErrorKind::Definite => return Err(source_error(err)),
                Err(err) => err,
            };
            ::metrics::counter!(metrics::ERRORS, "source" => name.to_owned(), "stage" => "source")
                .increment(1);
            // Resume after the last batch handed to the writer, once it is durable: restarting
            // from an older checkpoint would write those transactions twice.
            while *durable_rx.borrow_and_update() != last_sent {
                tokio::select! {
                    changed = durable_rx.changed() => if changed.is_err() { return Ok(()) },
                    _ = cancel.cancelled() => return Ok(()),
                }
            }
            start_from = last_sent.clone();
            let delay = backoff.next_delay();
            tracing::warn!(error = %err, retry_in_ms = delay.as_millis() as u64, "source stream failed; reconnecting from the last durable position");
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                _ = tokio::time::sleep(delay) => continue 'connect,
            }
        }
    }
}

fn classify_or_fail<E: std::error::Error + Classify + Send + Sync + 'static>(
    err: E,
    name: &str,
) -> PipelineError {
    PipelineError::Source {
        name: name.to_owned(),
        source: Box::new(err),
    }
}

/// The log side: encode each batch, append it as one transaction with its checkpoint, publish
/// the checkpoint as durable.
async fn write_batches<E: EventEncoder, L: EventLog>(
    name: String,
    mut encoder: E,
    log: L,
    mut batch_rx: mpsc::Receiver<SourceBatch>,
    durable_tx: watch::Sender<Option<Checkpoint>>,
    stop: Option<(Position, CancellationToken)>,
) -> Result<(), PipelineError> {
    let log_error = |source| PipelineError::Log {
        name: name.clone(),
        source,
    };
    let mut partitions: HashMap<String, u32> = HashMap::new();
    let mut encoded = Vec::new();
    // Events of one table come in runs: remember the last table's topic instead of rebuilding it.
    let mut last_table: Option<(Arc<TableSchema>, String)> = None;
    while let Some(batch) = batch_rx.recv().await {
        let mut batches: Vec<PartitionBatch> = Vec::new();
        let mut appended = 0u64;
        let mut newest_commit_us = i64::MIN;
        for event in &batch.events {
            encoded.clear();
            encoder
                .encode(event, &mut encoded)
                .map_err(|source| PipelineError::Encode {
                    name: name.clone(),
                    source,
                })?;
            let topic = match (&event.table, &last_table) {
                (Some(table), Some((last, topic))) if Arc::ptr_eq(table, last) => topic.clone(),
                (Some(table), _) => {
                    let topic = topic::event_topic(&name, event);
                    last_table = Some((table.clone(), topic.clone()));
                    topic
                }
                (None, _) => topic::event_topic(&name, event),
            };
            let count = match partitions.get(&topic) {
                Some(count) => *count,
                None => {
                    let count = log.ensure_topic(&topic).await.map_err(log_error)?;
                    partitions.insert(topic.clone(), count);
                    count
                }
            };
            let timestamp_ms = event.commit_ts_us.div_euclid(1000);
            newest_commit_us = newest_commit_us.max(event.commit_ts_us);
            for EncodedRecord { key, value } in encoded.drain(..) {
                let partition = topic::partition_for(key.as_deref(), count);
                // A batch touches few partitions; the most recent one is the likely match.
                let slot = match batches
                    .iter()
                    .rposition(|b| b.partition == partition && b.topic == topic)
                {
                    Some(slot) => slot,
                    None => {
                        batches.push(PartitionBatch {
                            topic: topic.clone(),
                            partition,
                            records: Vec::new(),
                        });
                        batches.len() - 1
                    }
                };
                batches[slot].records.push(Record {
                    key,
                    value,
                    timestamp_ms,
                    headers: Vec::new(),
                });
                appended += 1;
            }
        }
        log.append_txn(&name, batches, batch.checkpoint.to_json())
            .await
            .map_err(log_error)?;
        ::metrics::counter!(metrics::LOG_RECORDS_APPENDED, "source" => name.clone())
            .increment(appended);
        ::metrics::counter!(metrics::SOURCE_BATCHES_COMMITTED, "source" => name.clone())
            .increment(1);
        if newest_commit_us > 0 {
            let lag = (now_us() - newest_commit_us).max(0) as f64 / 1e6;
            ::metrics::gauge!(metrics::SOURCE_LAG_SECONDS, "source" => name.clone()).set(lag);
        }
        tracing::trace!(position = %batch.checkpoint.position, events = batch.events.len(), "batch durable");
        if let Some((stop_at, cancel)) = &stop {
            let reached = batch.checkpoint.snapshot == SnapshotProgress::Done
                && batch
                    .checkpoint
                    .position
                    .partial_cmp(stop_at)
                    .is_some_and(|order| order.is_ge());
            if reached && !cancel.is_cancelled() {
                tracing::info!(position = %batch.checkpoint.position, stop_at = %stop_at, "reached the stop position; stopping");
                cancel.cancel();
            }
        }
        durable_tx.send_replace(Some(batch.checkpoint));
    }
    Ok(())
}

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}
