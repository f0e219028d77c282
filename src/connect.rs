//! Every connector kind in one place: how `sluice run` builds and spawns it, and how
//! `sluice check --connect` and `sluice status` probe it. Each kind is one arm per function,
//! behind its Cargo feature (a build without it refuses its config with "this build of sluice
//! has no <kind> connector", see `config.rs`).
//!
//! A new connector: its module and config variant in sluice-connectors (`lib.rs`: the
//! `SourceConfig`/`SinkConfig` variant and its `section` arm, `SOURCE_KINDS`/`SINK_KINDS`,
//! `compiled_in`, `locate_config_error`), its features in both Cargo.toml files, its arms
//! here, its compliance call in `integration-tests/tests/sink_compliance.rs` (sinks), and its
//! server in `dev/services` when it needs one.

// A build without some connector leaves parts of this unused.
#![cfg_attr(
    not(all(feature = "postgres", feature = "mysql", feature = "jsonl")),
    allow(unused)
)]

#[cfg(any(feature = "jsonl", feature = "kafka"))]
use sluice_connectors::reshape::reshaping;
use std::sync::Arc;
use std::time::Duration;

use anyhow::anyhow;
use sluice_connectors::{AvroDecimals, Encoding, SinkConfig, SourceConfig};
use sluice_core::event_log::{EventLog, LogError};
use sluice_core::health::{sink_failure_writer, Health};
use sluice_core::pipeline::{run_sink, run_source, SinkSettings, SourceSettings};
use sluice_core::position::Position;
use sluice_core::task::Tasks;
use sluice_schema_registry::avro::{AvroEncoder, DecimalHandling};
use sluice_schema_registry::json::{JsonEnvelopeEncoder, SourceBlock};
use sluice_schema_registry::registry::Registry;
use sluice_schema_registry::Encoder;
use tokio::task::JoinHandle;

use crate::Failure;

/// What building a connector needs from the running pipeline, on log backend `L`.
pub(crate) struct Context<'a, L> {
    pub(crate) tasks: &'a Tasks,
    pub(crate) log: &'a L,
    pub(crate) registry: &'a Arc<Registry>,
    pub(crate) health: &'a Health,
    pub(crate) stop_at: Option<Position>,
    /// Cancelled when a source reaches `stop_at`: every source stops then.
    pub(crate) cutover: tokio_util::sync::CancellationToken,
    /// The `[log] dir`: sources keep their working files under it.
    pub(crate) log_dir: &'a std::path::Path,
    /// What the connector stops on: shutdown, or the admin API pausing or restarting it.
    pub(crate) cancel: tokio_util::sync::CancellationToken,
}

/// Builds a source and spawns it; a source's failure stops the pipeline. Returns its task.
pub(crate) fn spawn_source<L: EventLog + Clone>(
    source: SourceConfig,
    cx: &Context<'_, L>,
) -> JoinHandle<()> {
    let name = source.name().to_owned();
    let settings = SourceSettings {
        name: name.clone(),
        channel_batches: 4,
        stop_at: cx.stop_at.clone(),
        // A cut-over stops every source, not only this one (the sinks go on until they have
        // delivered what the log holds: run.rs).
        stop_at_cancels: Some(cx.cutover.clone()),
        transaction_metadata: source.transaction_metadata(),
    };
    let span = tracing::info_span!("source", source = %name);
    let task = format!("source {name}");
    let cancel = cx.cancel.clone();
    if cx.stop_at.is_some() {
        let (cutover, cancel) = (cx.cutover.clone(), cancel.clone());
        sluice_core::task::spawn_in_span(async move {
            tokio::select! {
                () = cutover.cancelled() => cancel.cancel(),
                () = cancel.cancelled() => {}
            }
        });
    }
    match source {
        #[cfg(feature = "postgres")]
        SourceConfig::Postgres(pg) => {
            let db = pg.connect_params().map(|p| p.dbname).unwrap_or_default();
            let spool = cx.log_dir.join("spool").join(&name);
            let block = SourceBlock {
                connector: "postgresql",
                name,
                db,
            };
            let encoder = encoder(
                block,
                pg.tombstones,
                pg.encoding,
                pg.avro_decimals,
                cx.registry,
            );
            let source = sluice_connectors::postgres::PostgresSource::new(pg).with_spool_dir(spool);
            let run = run_source(settings, source, encoder, cx.log.clone(), cancel);
            cx.tasks.spawn(task, span, run)
        }
        #[cfg(feature = "mysql")]
        SourceConfig::Mysql(my) => {
            // Debezium's connector name for MySQL and MariaDB alike.
            let block = SourceBlock {
                connector: "mysql",
                name,
                db: String::new(),
            };
            let encoder = encoder(
                block,
                my.tombstones,
                my.encoding,
                my.avro_decimals,
                cx.registry,
            );
            let source = sluice_connectors::mysql::source::MysqlSource::new(my);
            let run = run_source(settings, source, encoder, cx.log.clone(), cancel);
            cx.tasks.spawn(task, span, run)
        }
        #[cfg(feature = "kafka")]
        SourceConfig::Kafka(kafka) => {
            let block = SourceBlock {
                connector: "kafka",
                name,
                db: String::new(),
            };
            let encoder = encoder(
                block,
                kafka.tombstones,
                kafka.encoding,
                kafka.avro_decimals,
                cx.registry,
            );
            let source = sluice_connectors::kafka::KafkaSource::new(kafka);
            let run = run_source(settings, source, encoder, cx.log.clone(), cancel);
            cx.tasks.spawn(task, span, run)
        }
    }
}

/// Builds a sink and spawns it in its own failure domain. Returns its task.
pub(crate) async fn spawn_sink<L: EventLog + Clone>(
    sink: SinkConfig,
    cx: &Context<'_, L>,
) -> Result<JoinHandle<()>, Failure> {
    let name = sink.name().to_owned();
    // Records are read up to `max_read_bytes` per partition and `max_batch_bytes` per round.
    let settings = |max_read_bytes: usize, max_batch_bytes: usize| SinkSettings {
        name: name.clone(),
        topics: sink.topics().to_vec(),
        max_read_bytes,
        max_batch_bytes,
        topic_refresh: Duration::from_secs(1),
        shared: sink.shares_partitions(),
    };
    let span = tracing::info_span!("sink", sink = %name);
    let dead_letters = sink
        .dead_letter_topic()
        .map(|topic| sluice_core::sink::dead_letter_writer(cx.log, &name, topic));
    let chain = sluice_core::transform::Chain::new(sink.transforms())
        .map_err(|e| Failure::config(anyhow!("sink {name}: {e}")))?;
    clear_sink_failure(cx.log, &name)
        .await
        .map_err(|e| Failure::runtime(anyhow!("sink {name}: {e}")))?;
    cx.health.sink_running(&name);
    let on_failure = sink_failure_recorder(cx.log, cx.health, &name);
    let task = format!("sink {name}");
    let (log, cancel) = (cx.log.clone(), cx.cancel.clone());
    let handle = match sink {
        #[cfg(feature = "jsonl")]
        SinkConfig::Jsonl(ref jsonl) => {
            let decoder = sluice_schema_registry::avro::AvroDecoder::new(Arc::clone(cx.registry));
            let built = sluice_connectors::jsonl::JsonlSink::new(jsonl.clone(), Some(decoder));
            let shaped = (chain, dead_letters, Arc::clone(cx.registry));
            let run = run_record_sink(settings(1 << 20, 4 << 20), built, shaped, log, cancel);
            cx.tasks.spawn_isolated(task, span, run, on_failure)
        }
        // Database sinks read more per round: each round becomes a target transaction.
        #[cfg(feature = "postgres")]
        SinkConfig::Postgres(ref pg) => {
            let built = sluice_connectors::postgres::sink::postgres_sink(
                pg.clone(),
                Arc::clone(cx.registry),
                dead_letters.clone(),
            )
            .transforms(chain, dead_letters);
            let run = run_sink(settings(4 << 20, 8 << 20), built, log, cancel);
            cx.tasks.spawn_isolated(task, span, run, on_failure)
        }
        #[cfg(feature = "mysql")]
        SinkConfig::Mysql(ref my) => {
            let built = sluice_connectors::mysql::sink::mysql_sink(
                my.clone(),
                Arc::clone(cx.registry),
                dead_letters.clone(),
            )
            .transforms(chain, dead_letters);
            let run = run_sink(settings(4 << 20, 8 << 20), built, log, cancel);
            cx.tasks.spawn_isolated(task, span, run, on_failure)
        }
        // What Kafka holds is settled per 128 MiB or second (a transaction, exactly once),
        // not per round: rounds of 4 MiB, whose memory is free once produced (the next round
        // is read while one is written: two at a time).
        #[cfg(feature = "kafka")]
        SinkConfig::Kafka(ref kafka) => {
            let round = 4 << 20;
            let built = sluice_connectors::kafka::KafkaSink::new(
                kafka.clone(),
                Arc::clone(cx.registry),
                dead_letters.clone(),
            );
            let shaped = (chain, dead_letters, Arc::clone(cx.registry));
            let run = run_record_sink(settings(round / 2, round), built, shaped, log, cancel);
            cx.tasks.spawn_isolated(task, span, run, on_failure)
        }
        // Search sinks: each round is planned to one state per key, and goes to the server as
        // several bulk requests in flight (rounds of 16 MiB, search::WRITE_BYTES).
        #[cfg(feature = "opensearch")]
        SinkConfig::OpenSearch(ref os) => {
            let built = sluice_connectors::search::opensearch::opensearch_sink(
                os.clone(),
                Arc::clone(cx.registry),
                dead_letters.clone(),
            )
            .transforms(chain, dead_letters);
            let run = run_sink(settings(8 << 20, 16 << 20), built, log, cancel);
            cx.tasks.spawn_isolated(task, span, run, on_failure)
        }
        #[cfg(feature = "typesense")]
        SinkConfig::Typesense(ref ts) => {
            let built = sluice_connectors::search::typesense::typesense_sink(
                ts.clone(),
                Arc::clone(cx.registry),
                dead_letters.clone(),
            )
            .transforms(chain, dead_letters);
            let run = run_sink(settings(8 << 20, 16 << 20), built, log, cancel);
            cx.tasks.spawn_isolated(task, span, run, on_failure)
        }
        // ClickHouse: rounds of 16 MiB encoded into a buffer that is inserted per second or
        // per batch_bytes, the insert running while the next rounds are read.
        #[cfg(feature = "clickhouse")]
        SinkConfig::ClickHouse(ref ch) => {
            let built = sluice_connectors::clickhouse::clickhouse_sink(
                ch.clone(),
                Arc::clone(cx.registry),
                dead_letters.clone(),
            )
            .transforms(chain, dead_letters);
            let run = run_sink(settings(8 << 20, 16 << 20), built, log, cancel);
            cx.tasks.spawn_isolated(task, span, run, on_failure)
        }
        // Iceberg: changes wait in memory per table and are committed as snapshots per
        // commit_interval_ms or commit_bytes.
        #[cfg(feature = "iceberg")]
        SinkConfig::Iceberg(ref ice) => {
            let built = sluice_connectors::iceberg::iceberg_sink(
                ice.clone(),
                Arc::clone(cx.registry),
                dead_letters.clone(),
            )
            .transforms(chain, dead_letters);
            let run = run_sink(settings(8 << 20, 16 << 20), built, log, cancel);
            cx.tasks.spawn_isolated(task, span, run, on_failure)
        }
        // Parquet files: changes wait in memory per table and partition and are written as a
        // file per roll_interval_ms or roll_bytes.
        #[cfg(feature = "parquet")]
        SinkConfig::Parquet(ref pq) => {
            let built = sluice_connectors::parquet_sink::parquet_sink(
                pq.clone(),
                Arc::clone(cx.registry),
                dead_letters.clone(),
            )
            .transforms(chain, dead_letters);
            let run = run_sink(settings(8 << 20, 16 << 20), built, log, cancel);
            cx.tasks.spawn_isolated(task, span, run, on_failure)
        }
        // HTTP: each write is POSTed in requests of batch_events, one at a time (in order).
        #[cfg(feature = "http_sink")]
        SinkConfig::Http(ref http) => {
            let built = sluice_connectors::http_sink::http_sink(
                http.clone(),
                Arc::clone(cx.registry),
                dead_letters.clone(),
            )
            .transforms(chain, dead_letters);
            let run = run_sink(settings(1 << 20, 4 << 20), built, log, cancel);
            cx.tasks.spawn_isolated(task, span, run, on_failure)
        }
    };
    Ok(handle)
}

/// Runs a sink of stored records (Kafka, JSONL) as it is, or, with transforms, behind them
/// (`reshape.rs`: decoded, transformed, written back).
#[cfg(any(feature = "jsonl", feature = "kafka"))]
fn run_record_sink<S, L>(
    settings: SinkSettings,
    sink: S,
    (chain, dead_letters, registry): (
        sluice_core::transform::Chain,
        Option<sluice_core::sink::DeadLetterWriter>,
        Arc<Registry>,
    ),
    log: L,
    cancel: tokio_util::sync::CancellationToken,
) -> std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<(), sluice_core::pipeline::PipelineError>> + Send>,
>
where
    S: sluice_connectors::reshape::ReshapedSink + Sync + 'static,
    L: EventLog + Clone,
{
    if chain.is_empty() {
        Box::pin(run_sink(settings, sink, log, cancel))
    } else {
        let sink = reshaping(sink, registry, chain, dead_letters);
        Box::pin(run_sink(settings, sink, log, cancel))
    }
}

/// `check --connect` for a source: connects as `run` would and checks what capture needs.
// (A build without sources has no source to ask.)
#[cfg_attr(
    not(any(feature = "postgres", feature = "mysql", feature = "kafka")),
    allow(clippy::unused_async)
)]
pub(crate) async fn probe_source(source: &SourceConfig) -> anyhow::Result<String> {
    match *source {
        #[cfg(feature = "postgres")]
        SourceConfig::Postgres(ref pg) => Ok(sluice_connectors::postgres::probe(pg).await?),
        #[cfg(feature = "mysql")]
        SourceConfig::Mysql(ref my) => Ok(sluice_connectors::mysql::source::probe(my).await?),
        #[cfg(feature = "kafka")]
        SourceConfig::Kafka(ref kafka) => {
            Ok(sluice_connectors::kafka::probe_brokers(&kafka.brokers).await?)
        }
    }
}

/// `check --connect` for a sink: reaches its destination and checks it may write there.
// (A build whose only sink is JSONL probes a file.)
#[cfg_attr(
    not(any(
        feature = "postgres",
        feature = "mysql",
        feature = "kafka",
        feature = "opensearch",
        feature = "typesense",
        feature = "clickhouse",
        feature = "iceberg",
        feature = "parquet",
        feature = "http_sink"
    )),
    allow(clippy::unused_async)
)]
pub(crate) async fn probe_sink(sink: &SinkConfig) -> anyhow::Result<String> {
    match *sink {
        #[cfg(feature = "jsonl")]
        SinkConfig::Jsonl(ref jsonl) => Ok(sluice_connectors::jsonl::probe(jsonl)?),
        #[cfg(feature = "postgres")]
        SinkConfig::Postgres(ref pg) => Ok(sluice_connectors::postgres::sink::probe(pg).await?),
        #[cfg(feature = "mysql")]
        SinkConfig::Mysql(ref my) => Ok(sluice_connectors::mysql::sink::probe(my).await?),
        #[cfg(feature = "kafka")]
        SinkConfig::Kafka(ref kafka) => Ok(sluice_connectors::kafka::probe(kafka).await?),
        #[cfg(feature = "opensearch")]
        SinkConfig::OpenSearch(ref os) => {
            Ok(sluice_connectors::search::opensearch::probe(os).await?)
        }
        #[cfg(feature = "typesense")]
        SinkConfig::Typesense(ref ts) => Ok(sluice_connectors::search::typesense::probe(ts).await?),
        #[cfg(feature = "clickhouse")]
        SinkConfig::ClickHouse(ref ch) => Ok(sluice_connectors::clickhouse::probe(ch).await?),
        #[cfg(feature = "iceberg")]
        SinkConfig::Iceberg(ref ice) => Ok(sluice_connectors::iceberg::probe(ice).await?),
        #[cfg(feature = "parquet")]
        SinkConfig::Parquet(ref pq) => Ok(sluice_connectors::parquet_sink::probe(pq).await?),
        #[cfg(feature = "http_sink")]
        SinkConfig::Http(ref http) => Ok(sluice_connectors::http_sink::probe(http).await?),
    }
}

/// `sluice status`: what a sink's destination says about it, for sinks that keep their state
/// there (None for the others).
// (A build without those sinks has nothing to wait for here.)
#[cfg_attr(
    not(any(feature = "clickhouse", feature = "iceberg")),
    allow(clippy::unused_async)
)]
pub(crate) async fn sink_server_status(sink: &SinkConfig) -> Option<anyhow::Result<Vec<String>>> {
    match *sink {
        #[cfg(feature = "clickhouse")]
        SinkConfig::ClickHouse(ref ch) => Some(
            sluice_connectors::clickhouse::server_status(ch)
                .await
                .map_err(anyhow::Error::from),
        ),
        #[cfg(feature = "iceberg")]
        SinkConfig::Iceberg(ref ice) => Some(
            sluice_connectors::iceberg::server_status(ice)
                .await
                .map_err(anyhow::Error::from),
        ),
        #[allow(unreachable_patterns)]
        _ => None,
    }
}

/// Asks a source for an on-demand snapshot (`sluice snapshot`).
// (A build with Kafka sources alone only refuses.)
#[cfg_attr(
    not(any(feature = "postgres", feature = "mysql")),
    allow(clippy::unused_async)
)]
pub(crate) async fn request_snapshot(
    source: &SourceConfig,
    tables: &[String],
    filter: Option<&str>,
) -> anyhow::Result<String> {
    match *source {
        #[cfg(feature = "postgres")]
        SourceConfig::Postgres(ref pg) => {
            Ok(sluice_connectors::postgres::request_snapshot(pg, tables, filter).await?)
        }
        #[cfg(feature = "mysql")]
        SourceConfig::Mysql(ref my) => {
            Ok(sluice_connectors::mysql::source::request_snapshot(my, tables, filter).await?)
        }
        #[cfg(feature = "kafka")]
        SourceConfig::Kafka(ref kafka) => {
            let _ = (tables, filter);
            anyhow::bail!(
                "source {} reads Kafka topics: it takes no snapshots (ask the Debezium \
                 deployment that writes them for one)",
                kafka.name
            )
        }
    }
}

/// `sluice status`: where the source's server stands (a Postgres slot and the WAL it holds;
/// a MySQL server's settings).
// (A build without sources has no source to ask.)
#[cfg_attr(
    not(any(feature = "postgres", feature = "mysql", feature = "kafka")),
    allow(clippy::unused_async)
)]
pub(crate) async fn source_server_status(source: &SourceConfig) -> anyhow::Result<String> {
    match *source {
        #[cfg(feature = "postgres")]
        SourceConfig::Postgres(ref pg) => Ok(sluice_connectors::postgres::slot_status(pg).await?),
        #[cfg(feature = "mysql")]
        SourceConfig::Mysql(ref my) => Ok(sluice_connectors::mysql::source::probe(my).await?),
        #[cfg(feature = "kafka")]
        SourceConfig::Kafka(ref kafka) => {
            Ok(sluice_connectors::kafka::probe_brokers(&kafka.brokers).await?)
        }
    }
}

/// A sink starting: forget a failure recorded by an earlier run (restarting sluice is how a
/// failed sink is restarted).
async fn clear_sink_failure<L: EventLog>(backend: &L, sink: &str) -> Result<(), LogError> {
    let writer = sink_failure_writer(sink);
    match backend.checkpoint(&writer).await? {
        Some(text) if !text.is_empty() => {
            backend
                .append(&writer, Vec::new(), Some(String::new()))
                .await
        }
        _ => Ok(()),
    }
}

/// What happens when a sink fails: `/health` and the metric show it, and the log keeps the
/// reason for `sluice status`.
fn sink_failure_recorder<L: EventLog + Clone>(
    backend: &L,
    health: &Health,
    sink: &str,
) -> impl FnOnce(String) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>
       + Send
       + 'static {
    let (backend, health, sink) = (backend.clone(), health.clone(), sink.to_owned());
    move |reason: String| {
        Box::pin(async move {
            let failed = health.sink_failed(&sink, &reason);
            let writer = sink_failure_writer(&sink);
            if let Err(err) = backend
                .append(&writer, Vec::new(), Some(failed.to_checkpoint()))
                .await
            {
                tracing::error!(%sink, error = %err, "cannot record the sink's failure in the log");
            }
        })
    }
}

/// The encoder a source's `encoding` names.
fn encoder(
    block: SourceBlock,
    tombstones: bool,
    encoding: Encoding,
    decimals: AvroDecimals,
    registry: &Arc<Registry>,
) -> Encoder {
    match encoding {
        Encoding::Json => Encoder::Json(
            JsonEnvelopeEncoder::new(block, tombstones).registering(Arc::clone(registry)),
        ),
        Encoding::Avro => {
            let decimals = match decimals {
                AvroDecimals::Precise => DecimalHandling::Precise,
                AvroDecimals::String => DecimalHandling::String,
            };
            Encoder::Avro(AvroEncoder::new(
                Arc::clone(registry),
                block,
                tombstones,
                decimals,
            ))
        }
    }
}
