//! The sink compliance kit: the scenarios every sink must pass, run in-process on the real
//! runtime (a scripted source → the pipeline's source task → an embedded log with its schema
//! registry → `run_sink` → the sink) against the sink's real destination.
//!
//! A sink's test implements [`SinkUnderTest`] (how to build the sink, read its destination
//! back, and what the destination promises) and calls [`check`]. The scenarios:
//! 1. per-key order and final state: random inserts, updates and deletes over 100 keys in many
//!    transactions end as the source's final state;
//! 2. a crash (the sink's task dropped mid-write, no close) and a restart lose nothing; sinks
//!    that store offsets with their data hold each event once;
//! 3. a clean shutdown right after new writes, then a restart, lose and double nothing;
//! 4. duplicate delivery (offsets forgotten, everything delivered again) changes nothing, for
//!    sinks that say they are idempotent;
//! 5. a record the destination rejects goes to the dead-letter topic with the destination's
//!    reason, and the rest is applied, for sinks that can reject;
//! 6. bounded memory, as far as a test can see it: however large the backlog, no write hands
//!    the sink more than the runtime's read budget. The sink's own peak memory is measured by
//!    `dev/bench` (`pg_big_txn`, `mysql_big_txn`).

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_core::checkpoint::{Checkpoint, SnapshotProgress};
use sluice_core::event::{ChangeEvent, Column, DataType, Op, SnapshotMarker, TableId, TableSchema};
use sluice_core::event_log::EventLog;
use sluice_core::pipeline::{run_sink, run_source, SinkSettings, SourceSettings};
use sluice_core::position::{Lsn, Position};
use sluice_core::retry::{Classify, ErrorKind};
use sluice_core::sink::{DeadLetterWriter, RecordSink};
use sluice_core::source::{Source, SourceBatch};
use sluice_core::value::Value;
use sluice_log::{EmbeddedLog, Log, LogOptions};
use sluice_schema_registry::json::{JsonEnvelopeEncoder, SourceBlock};
use sluice_schema_registry::registry::store::LogStore;
use sluice_schema_registry::registry::Registry;
use sluice_schema_registry::Encoder;
use tokio_util::sync::CancellationToken;

use crate::{wait_for, Rng};

/// The kit's table: `public.items (id bigint key, name text, qty int)`, topic `kit.public.items`.
pub const TOPIC: &str = "kit.public.items";
/// The dead-letter topic sinks under test are given.
pub const DEAD_LETTER_TOPIC: &str = "kit.dead";

/// A row of the kit's table: (name, qty) by id.
pub type Rows = BTreeMap<i64, (String, i32)>;

/// What a sink's test tells the kit.
pub trait SinkUnderTest: Send + Sync {
    type Sink: RecordSink + Sync + 'static;

    /// A new sink for the destination, as sluice builds it at start (each call is a restart).
    fn sink(&self, kit: &Kit, dead_letters: Option<DeadLetterWriter>) -> Self::Sink;

    /// The rows the destination holds now (empty when the table does not exist yet).
    fn rows(&self) -> Rows;

    /// Each event is applied once even across crashes (offsets stored with the data).
    fn exactly_once(&self) -> bool;

    /// For exactly-once sinks whose destination keeps every event (a file): how many events
    /// it holds, to check that none is there twice. `None`: the destination keeps state only.
    fn events_held(&self) -> Option<usize> {
        None
    }

    /// Makes the sink forget what it has delivered (its stored offsets), so that the next sink
    /// built delivers everything again; `None` when delivering twice is not harmless for this
    /// destination (skip the scenario).
    fn forget_offsets(&self) -> Option<()>;

    /// Makes the destination reject `qty` values of `REJECTED_QTY` (a constraint the source
    /// lacks) and returns a piece of the reason it will give; `None` for destinations that
    /// accept anything.
    fn reject_poison(&self) -> Option<String>;
}

/// The `qty` the poison event carries.
pub const REJECTED_QTY: i32 = -999;

/// The log, registry and scripted source the scenarios run on.
pub struct Kit {
    _dir: tempfile::TempDir,
    pub log: EmbeddedLog,
    pub registry: Arc<Registry>,
    queue: Arc<Mutex<VecDeque<SourceBatch>>>,
    source_cancel: CancellationToken,
    source: Option<tokio::task::JoinHandle<Result<(), sluice_core::pipeline::PipelineError>>>,
    table: Arc<TableSchema>,
    /// The source's state of the table, and how many events it sent.
    model: Rows,
    events: usize,
    lsn: u64,
    rng: Rng,
}

impl Kit {
    fn start() -> Kit {
        let dir = tempfile::tempdir().expect("a temporary log directory");
        let log = Arc::new(Log::open(dir.path(), LogOptions::default()).expect("open the log"));
        // Four partitions per topic: a round reads several, so its byte budget binds.
        let log = EmbeddedLog::new(log, 4);
        let store = LogStore::open(log.clone()).expect("the registry's store");
        let registry = Arc::new(Registry::open(store).expect("the registry"));
        let queue = Arc::new(Mutex::new(VecDeque::new()));
        let encoder = Encoder::Json(
            JsonEnvelopeEncoder::new(
                SourceBlock {
                    connector: "postgresql",
                    name: "kit".into(),
                    db: "kit".into(),
                },
                true,
            )
            .registering(Arc::clone(&registry)),
        );
        let source_cancel = CancellationToken::new();
        let source = sluice_core::task::spawn_in_span(run_source(
            SourceSettings {
                name: "kit".into(),
                channel_batches: 2,
                stop_at: None,
                stop_at_cancels: None,
                transaction_metadata: false,
            },
            ScriptedSource {
                queue: Arc::clone(&queue),
            },
            encoder,
            log.clone(),
            source_cancel.clone(),
        ));
        let column = |name: &str, data_type, type_name: &str, key| Column {
            name: name.into(),
            type_name: type_name.into(),
            data_type,
            key,
            nullable: !key,
        };
        let table = Arc::new(TableSchema {
            table: TableId {
                namespace: "public".into(),
                name: "items".into(),
            },
            columns: vec![
                column("id", DataType::Int64, "bigint", true),
                column("name", DataType::Text, "text", false),
                column("qty", DataType::Int32, "integer", false),
            ],
            version: 1,
        });
        Kit {
            _dir: dir,
            log,
            registry,
            queue,
            source_cancel,
            source: Some(source),
            table,
            model: Rows::new(),
            events: 0,
            lsn: 100,
            rng: Rng::new(0xc0ffee),
        }
    }

    /// Sends `transactions` random transactions of up to 30 changes over keys 1..=100: an
    /// insert for a key the table lacks, else an update (two in three) or a delete.
    fn write(&mut self, transactions: usize) {
        for _ in 0..transactions {
            let changes = 1 + self.rng.below(30) as usize;
            let mut events = Vec::with_capacity(changes);
            for _ in 0..changes {
                let id = 1 + self.rng.below(100) as i64;
                let row = if self.model.contains_key(&id) && self.rng.below(3) == 0 {
                    None
                } else {
                    Some((
                        format!("item {id} v{}", self.events),
                        self.rng.below(1000) as i32,
                    ))
                };
                events.push(self.change(id, row));
            }
            self.commit(events);
        }
    }

    /// The event that makes row `id` hold `row` (`None`: deleted, which it must exist for),
    /// applied to the model.
    fn change(&mut self, id: i64, row: Option<(String, i32)>) -> ChangeEvent {
        let values = |(name, qty): &(String, i32)| {
            vec![
                Value::Int64(id),
                Value::Text(name.as_str().into()),
                Value::Int32(*qty),
            ]
        };
        let before = self.model.get(&id).map(values);
        let after = row.as_ref().map(values);
        let op = match (&before, &after) {
            (None, Some(_)) => Op::Create,
            (Some(_), Some(_)) => Op::Update,
            (Some(_), None) => Op::Delete,
            (None, None) => unreachable!("a delete of a row that is not there"),
        };
        match row {
            Some(row) => self.model.insert(id, row),
            None => self.model.remove(&id),
        };
        self.events += 1;
        ChangeEvent {
            op,
            table: Some(Arc::clone(&self.table)),
            before,
            before_is_key_only: false,
            after,
            snapshot: SnapshotMarker::No,
            commit_ts_us: 1_700_000_000_000_000,
            position: Position::PgLsn(Lsn(self.lsn)),
            xid: None,
            txn: None,
            message: None,
        }
    }

    fn commit(&mut self, events: Vec<ChangeEvent>) {
        self.lsn += 100;
        let checkpoint = Checkpoint {
            position: Position::PgLsn(Lsn(self.lsn)),
            snapshot: SnapshotProgress::Done,
            snapshot_state: None,
        };
        self.queue
            .lock()
            .unwrap()
            .push_back(SourceBatch::new(events, Some(checkpoint)));
    }

    /// Runs a sink until `cancel`; the handle's result is the sink task's.
    fn run<S: RecordSink + Send + Sync + 'static>(
        &self,
        sink: S,
        cancel: &CancellationToken,
    ) -> tokio::task::JoinHandle<Result<(), sluice_core::pipeline::PipelineError>> {
        sluice_core::task::spawn_in_span(run_sink(
            SinkSettings {
                name: "kit".into(),
                topics: vec![TOPIC.into()],
                max_read_bytes: 64 << 10,
                max_batch_bytes: ROUND_BYTES,
                topic_refresh: Duration::from_millis(200),
                shared: false,
            },
            sink,
            self.log.clone(),
            cancel.clone(),
        ))
    }

    async fn stop(mut self) {
        self.source_cancel.cancel();
        if let Some(source) = self.source.take() {
            source
                .await
                .expect("the source task")
                .expect("the source ran");
        }
    }
}

/// The kit's read budget per round (`SinkSettings::max_batch_bytes`).
const ROUND_BYTES: usize = 128 << 10;

/// A sink under test, with the largest write it was handed.
struct Measured<S> {
    inner: S,
    largest_write: Arc<std::sync::atomic::AtomicUsize>,
}

impl<S: RecordSink> RecordSink for Measured<S> {
    type Error = S::Error;

    fn open(
        &mut self,
    ) -> impl Future<Output = Result<Option<sluice_core::sink::Offsets>, S::Error>> + Send {
        self.inner.open()
    }

    fn resume_from(&mut self, offsets: &sluice_core::sink::Offsets) {
        self.inner.resume_from(offsets);
    }

    fn write(
        &mut self,
        records: &[sluice_core::sink::SinkRecord],
    ) -> impl Future<Output = Result<(), S::Error>> + Send {
        let bytes: usize = records
            .iter()
            .map(|r| {
                r.record.key.as_ref().map_or(0, |k| k.len())
                    + r.record.value.as_ref().map_or(0, |v| v.len())
            })
            .sum();
        self.largest_write
            .fetch_max(bytes, std::sync::atomic::Ordering::Relaxed);
        self.inner.write(records)
    }

    fn close(&mut self) -> impl Future<Output = Result<(), S::Error>> + Send {
        self.inner.close()
    }

    fn flush(&mut self) -> impl Future<Output = Result<(), S::Error>> + Send {
        self.inner.flush()
    }

    fn partitions_cut(&mut self, cut: &[(Arc<str>, u32)]) {
        self.inner.partitions_cut(cut);
    }

    fn applied(&self) -> Option<&sluice_core::sink::Offsets> {
        self.inner.applied()
    }
}

/// The kit's source: hands out the batches the scenarios queue.
struct ScriptedSource {
    queue: Arc<Mutex<VecDeque<SourceBatch>>>,
}

#[derive(Debug, thiserror::Error)]
#[error("the scripted source does not fail")]
struct Never;

impl Classify for Never {
    fn kind(&self) -> ErrorKind {
        ErrorKind::Definite
    }
}

impl Source for ScriptedSource {
    type Error = Never;

    async fn start(&mut self, _resume: Option<Checkpoint>) -> Result<(), Never> {
        Ok(())
    }

    async fn next_batch(&mut self) -> Result<Option<SourceBatch>, Never> {
        let next = self.queue.lock().unwrap().pop_front();
        if next.is_none() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(next)
    }

    async fn commit(&mut self, _checkpoint: &Checkpoint) -> Result<(), Never> {
        Ok(())
    }

    async fn shutdown(&mut self) -> Result<(), Never> {
        Ok(())
    }
}

/// Waits until the destination holds the source's rows.
async fn wait_equal<T: SinkUnderTest>(sut: &T, kit: &Kit, what: &str) {
    let model = kit.model.clone();
    wait_for(Duration::from_secs(60), what, || sut.rows() == model).await;
}

/// Runs every scenario against the sink `sut` describes.
pub async fn check<T: SinkUnderTest>(sut: T) {
    let mut kit = Kit::start();

    // 1. Per-key order and final state, from a backlog of ~3 MB (6. bounded: no write gets
    // more than a round's budget across the four partitions, give or take the one log batch a
    // read always returns).
    kit.write(400);
    let largest_write = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let measured = Measured {
        inner: sut.sink(&kit, None),
        largest_write: Arc::clone(&largest_write),
    };
    let cancel = CancellationToken::new();
    let task = kit.run(measured, &cancel);
    wait_equal(
        &sut,
        &kit,
        "the destination to hold the source's final state",
    )
    .await;
    let largest = largest_write.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        largest > 0 && largest <= ROUND_BYTES + (16 << 10),
        "the largest write was {largest} bytes for a {ROUND_BYTES}-byte budget"
    );

    // 2. A crash mid-stream: the task is dropped where it stands, with no close.
    kit.write(60);
    tokio::time::sleep(Duration::from_millis(30)).await;
    task.abort();
    let _ = task.await;
    let cancel = CancellationToken::new();
    let task = kit.run(sut.sink(&kit, None), &cancel);
    kit.write(20);
    wait_equal(
        &sut,
        &kit,
        "the destination to equal the source after a crash",
    )
    .await;
    if let Some(held) = sut.events_held() {
        assert_eq!(held, kit.events, "each event exactly once after the crash");
    }

    // 3. A clean shutdown right after new writes, then a restart: nothing lost or doubled.
    kit.write(10);
    cancel.cancel();
    task.await
        .expect("the sink task")
        .expect("the sink shut down cleanly");
    let cancel = CancellationToken::new();
    let task = kit.run(sut.sink(&kit, None), &cancel);
    wait_equal(&sut, &kit, "the rest after a clean restart").await;
    cancel.cancel();
    task.await.expect("the sink task").expect("a clean stop");
    if let Some(held) = sut.events_held() {
        assert_eq!(
            held, kit.events,
            "each event exactly once after a clean restart"
        );
    }

    // 4. Duplicate delivery.
    if sut.forget_offsets().is_some() {
        kit.log
            .commit_offsets(
                "sink.kit",
                (0..4).map(|p| ((TOPIC.to_owned(), p), 0)).collect(),
            )
            .await
            .expect("rewind the consumer group");
        let cancel = CancellationToken::new();
        let task = kit.run(sut.sink(&kit, None), &cancel);
        kit.write(5);
        wait_equal(&sut, &kit, "the same rows after everything came twice").await;
        cancel.cancel();
        task.await.expect("the sink task").expect("a clean stop");
    }

    // 5. A record the destination rejects.
    if let Some(reason) = sut.reject_poison() {
        let id = 1_000;
        let poison = kit.change(id, Some(("poison".into(), REJECTED_QTY)));
        kit.model.remove(&id);
        let after = kit.change(id + 1, Some(("after the poison".into(), 1)));
        kit.commit(vec![poison, after]);
        let writer = sluice_core::sink::dead_letter_writer(&kit.log, "kit", DEAD_LETTER_TOPIC);
        let cancel = CancellationToken::new();
        let task = kit.run(sut.sink(&kit, Some(writer)), &cancel);
        wait_equal(&sut, &kit, "every row but the rejected one").await;
        cancel.cancel();
        task.await.expect("the sink task").expect("a clean stop");
        let dead = kit
            .log
            .read(DEAD_LETTER_TOPIC, 0, 0, usize::MAX)
            .await
            .expect("read the dead-letter topic");
        assert_eq!(dead.len(), 1, "one dead letter");
        let error = dead[0]
            .headers
            .iter()
            .find(|h| h.key == "sluice.error")
            .and_then(|h| h.value.as_deref())
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default();
        assert!(error.contains(&reason), "the destination's reason: {error}");
    }
    kit.stop().await;
}

/// Runs `future` on a runtime of its own (for sync callers).
pub fn block_on<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(future)
}
