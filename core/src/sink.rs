//! The sink contracts: how the runtime hands what the log holds to a destination.
//!
//! - [`RecordSink`]: records as the log holds them, bytes passed through (JSON lines, Kafka, raw
//!   HTTP);
//! - [`ChangeSink`]: typed changes, decoded once by the runtime from either encoding, in batches
//!   that can be held to whole source transactions (databases, search indexes, warehouses).
//!   The runtime runs a change sink as a record sink through `pipeline::TypedSink`, which owns
//!   decoding, transaction assembly and splitting batches at schema changes.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use crate::batch::{Header, PartitionBatch, Record, StoredRecord};

use crate::event_log::EventLog;

use crate::change::SourcedChange;
use crate::retry::Classify;

/// Next offset to read, per `(topic, partition)`.
pub type Offsets = BTreeMap<(String, u32), u64>;

/// A record read from the log for a sink.
#[derive(Debug, Clone)]
pub struct SinkRecord {
    pub topic: Arc<str>,
    pub partition: u32,
    pub record: StoredRecord,
}

/// A destination fed with the log's records as they are.
///
/// Contract:
/// - Delivery is at-least-once: after a crash or a transient error the runtime calls `open`
///   again and re-sends records after the last offsets it knows to be applied. Sinks that can
///   store offsets atomically with their data return them from `open`, which makes the effect
///   exactly once; the runtime then resumes from those, not from the log's consumer group.
/// - Records of one partition arrive in offset order (per key: source commit order). Calls
///   never overlap.
/// - When `write` returns `Ok`, the records are durable in the destination (for sinks that
///   return offsets from `open`: once `flush` or the next `write` returns `Ok`, and those
///   report what is durable through `applied`); the runtime then commits their offsets to the
///   log's consumer group for this sink.
/// - `close` is called once at shutdown, after the last `write`.
pub trait RecordSink: Send {
    type Error: std::error::Error + Classify + Send + Sync + 'static;

    fn open(&mut self) -> impl Future<Output = Result<Option<Offsets>, Self::Error>> + Send;

    fn write(
        &mut self,
        records: &[SinkRecord],
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    fn close(&mut self) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Finishes whatever `write` left running (sinks that overlap applying a batch with
    /// preparing the next). The runtime calls it before it waits for new records, so that a
    /// failure is seen without waiting for the next batch.
    fn flush(&mut self) -> impl Future<Output = Result<(), Self::Error>> + Send {
        async { Ok(()) }
    }

    /// Before each `write`: the partitions whose read stopped short of their last committed
    /// offset, so the last log commit seen in them may continue in the next batch (sinks that
    /// apply whole commits hold those back).
    fn partitions_cut(&mut self, _cut: &[(Arc<str>, u32)]) {}

    /// Before each `write`, with `partitions_cut`: per source, the last log commit that was
    /// whole in the log before the round's first read. The round reads its partitions one
    /// after another, so a later commit may have been read in some partitions and not yet in
    /// others; sinks that apply whole commits hold such commits back.
    fn committed_before_read(&mut self, _committed: &[(String, u64)]) {}

    /// After `open`, when an operator changed the sink's offsets while it was stopped: the
    /// runtime reads from `offsets`, not from what `open` returned. Sinks that keep what their
    /// destination holds (for `applied`, or to skip what they delivered) take these instead.
    fn resume_from(&mut self, _offsets: &Offsets) {}

    /// For sinks whose `write` returns before the destination has committed (they apply in
    /// the background, or hold records back): the next offset per partition that the
    /// destination holds durably now. The runtime commits these, not what it handed to
    /// `write`, to the consumer group, and reports lag from them, so that lag always says
    /// what the destination still lacks. `None` (the default): what `write` returned `Ok`
    /// for is durable.
    fn applied(&self) -> Option<&Offsets> {
        None
    }
}

/// A destination fed with typed changes.
///
/// The contract is [`RecordSink`]'s (at-least-once, exactly once for sinks that store offsets
/// with their data and return them from `open`; per-partition order; calls never overlap;
/// `applied` for sinks that finish in the background), with batches of decoded changes:
/// - every row change of the batch's records is in `changes`, in record order; records that
///   hold none (tombstones, messages) are in `records` only;
/// - in a batch, every table has one schema version: a batch that spans a schema change is
///   handed over in parts, one per version, in version order, each a prefix of every
///   partition's records;
/// - with whole transactions asked for, what one destination transaction receives (the
///   batches up to one whose `ends_transaction` is true) holds only whole log commits, i.e.
///   whole source transactions.
pub trait ChangeSink: Send {
    type Error: std::error::Error + Classify + Send + Sync + 'static;

    fn open(&mut self) -> impl Future<Output = Result<Option<Offsets>, Self::Error>> + Send;

    fn write(
        &mut self,
        batch: ChangeBatch<'_>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    fn close(&mut self) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// As [`RecordSink::flush`].
    fn flush(&mut self) -> impl Future<Output = Result<(), Self::Error>> + Send {
        async { Ok(()) }
    }

    /// As [`RecordSink::applied`].
    fn applied(&self) -> Option<&Offsets> {
        None
    }

    /// As [`RecordSink::resume_from`].
    fn resume_from(&mut self, _offsets: &Offsets) {}
}

/// Typed changes and the records they came from.
#[derive(Debug)]
pub struct ChangeBatch<'a> {
    pub changes: Vec<SourcedChange>,
    /// The records, in read order; `SourcedChange::record` indexes them.
    pub records: &'a [SinkRecord],
    /// False only for sinks that asked for whole transactions: more of this batch's source
    /// transaction follows (a transaction too large to hold, or a batch split at a schema
    /// change). The sink applies it in the destination transaction it keeps open, and makes
    /// it visible (with its offsets) only with a batch where this is true.
    pub ends_transaction: bool,
}

impl ChangeBatch<'_> {
    /// The next offset of every partition the records came from: what the destination holds
    /// once this batch is applied.
    pub fn next_offsets(&self) -> Offsets {
        next_offsets(self.records)
    }
}

/// The next offset of every partition `records` came from.
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

/// A record a sink could not apply because the destination rejected its value (a "poison"
/// event), and the destination's reason.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub record: SinkRecord,
    pub error: String,
}

/// Why dead letters could not be written.
#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    /// Rejected events and no `dead_letter_topic` to put them in.
    #[error("no dead-letter topic is configured")]
    NoTopic,
    /// The log refused the append (retried: the events are still there to divert).
    #[error("appending to the dead-letter topic: {0}")]
    Log(crate::event_log::LogError),
}

// Not `#[from]`: that would make the error its own cause, printed twice by `{:#}`.
impl From<crate::event_log::LogError> for DeadLetterError {
    fn from(err: crate::event_log::LogError) -> Self {
        DeadLetterError::Log(err)
    }
}

impl Classify for DeadLetterError {
    fn kind(&self) -> crate::retry::ErrorKind {
        match self {
            // Nowhere to put rejected events will not pass by waiting; the log refusing may.
            DeadLetterError::NoTopic => crate::retry::ErrorKind::Definite,
            DeadLetterError::Log(_) => crate::retry::ErrorKind::Transient,
        }
    }
}

/// Appends dead letters durably to a sink's dead-letter topic in the log (built by the binary,
/// which owns the log). Returns once they are durable.
pub type DeadLetterWriter = Arc<
    dyn Fn(
            Vec<DeadLetter>,
        )
            -> std::pin::Pin<Box<dyn Future<Output = Result<(), DeadLetterError>> + Send + 'static>>
        + Send
        + Sync,
>;

/// A [`DeadLetterWriter`] appending sink `sink`'s rejected events to `topic` in `log`: the
/// original key and value, with the error and where the event came from in headers
/// (`sluice.error`, `sluice.topic`, `sluice.partition`, `sluice.offset`). Durable before the
/// sink commits past them.
pub fn dead_letter_writer<L: EventLog + Clone>(
    log: &L,
    sink: &str,
    topic: &str,
) -> DeadLetterWriter {
    let (log, writer, topic) = (
        log.clone(),
        format!("sink.{sink}.dead_letters"),
        topic.to_owned(),
    );
    Arc::new(move |letters: Vec<DeadLetter>| {
        let (log, writer, topic) = (log.clone(), writer.clone(), topic.clone());
        let sink = writer
            .strip_prefix("sink.")
            .and_then(|w| w.strip_suffix(".dead_letters"))
            .unwrap_or_default()
            .to_owned();
        Box::pin(async move {
            let count = letters.len() as u64;
            log.ensure_topic(&topic).await?;
            let header = |key: &str, value: String| Header {
                key: key.to_owned(),
                value: Some(value.into()),
            };
            let records = letters
                .into_iter()
                .map(|letter| Record {
                    key: letter.record.record.key.clone(),
                    value: letter.record.record.value.clone(),
                    timestamp_ms: crate::clock::now_us() / 1000,
                    headers: vec![
                        header("sluice.error", letter.error),
                        header("sluice.topic", letter.record.topic.to_string()),
                        header("sluice.partition", letter.record.partition.to_string()),
                        header("sluice.offset", letter.record.record.offset.to_string()),
                    ],
                })
                .collect();
            let batch = PartitionBatch {
                topic,
                partition: 0,
                records,
            };
            log.append(&writer, vec![batch], Some(String::new()))
                .await
                .map_err(DeadLetterError::from)?;
            ::metrics::counter!(crate::metrics::SINK_DEAD_LETTERS, "sink" => sink).increment(count);
            Ok(())
        })
    })
}
