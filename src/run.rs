//! `sluice run` and `sluice check --connect`: builds each configured connector (one `match` per
//! kind) and hands them to the pipeline runtime.

use std::sync::Arc;
use std::time::Duration;

use anyhow::anyhow;
use sluice_connectors::{AvroDecimals, Encoding, SinkConfig, SourceConfig};
use sluice_core::event_log::{EmbeddedLog, EventLog};
use sluice_core::health::{sink_failure_writer, Health};
use sluice_core::pipeline::{run_sink, run_source, SinkSettings, SourceSettings};
use sluice_core::position::Position;
use sluice_core::task::Tasks;
use sluice_log::Log;
use sluice_schema_registry::avro::{AvroDecoder, AvroEncoder, DecimalHandling};
use sluice_schema_registry::json::{JsonEnvelopeEncoder, SourceBlock};
use sluice_schema_registry::registry::store::LogStore;
use sluice_schema_registry::registry::Registry;
use sluice_schema_registry::Encoder;

use crate::config::FileConfig;
use crate::Failure;

/// How long shutdown may take before what is left is abandoned.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(30);
/// How often retention and compaction run.
const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(60);

pub(crate) fn run(config: FileConfig, stop_at: Option<Position>) -> Result<(), Failure> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(Failure::runtime)?;
    runtime.block_on(run_async(config, stop_at))
}

async fn run_async(config: FileConfig, stop_at: Option<Position>) -> Result<(), Failure> {
    let registry_listener = match &config.registry {
        Some(registry) => Some(
            sluice_schema_registry::http::bind(&registry.listen)
                .await
                .map_err(|e| Failure::runtime(anyhow!(e)))?,
        ),
        None => None,
    };
    let api = match &config.api {
        Some(api) => Some(
            crate::api::bind(&api.listen)
                .await
                .map_err(Failure::runtime)?,
        ),
        None => None,
    };
    let options = config.log.options().map_err(Failure::config)?;
    let dir = config.log.dir.clone();
    let log = tokio::task::spawn_blocking(move || Log::open(&dir, options))
        .await
        .map_err(Failure::runtime)?
        .map_err(|e| Failure::runtime(anyhow!(e)))?;
    tracing::info!(dir = %config.log.dir.display(), topics = log.topics().len(), "log open");
    let log = Arc::new(log);
    let registry = open_registry(Arc::clone(&log)).await?;
    let backend = EmbeddedLog::new(Arc::clone(&log), config.log.partitions);
    let tasks = Tasks::new();
    let health = Health::new();
    if let Some(listener) = registry_listener {
        tasks.spawn(
            "schema registry",
            tracing::info_span!("registry"),
            sluice_schema_registry::http::serve(
                listener,
                Arc::clone(&registry),
                tasks.cancel_token(),
            ),
        );
    }
    let tombstone_retention = Duration::from_secs(config.log.tombstone_retention_hours * 3600);
    tasks.spawn(
        "log maintenance",
        tracing::info_span!("log_maintenance"),
        maintain(log, tombstone_retention, tasks.cancel_token()),
    );
    if let Some((listener, metrics)) = api {
        tasks.spawn(
            "api",
            tracing::info_span!("api"),
            crate::api::serve(listener, metrics, health.clone(), tasks.cancel_token()),
        );
    }

    for source in config.sources {
        let name = source.name().to_owned();
        let settings = SourceSettings {
            name: name.clone(),
            channel_batches: 4,
            stop_at: stop_at.clone(),
        };
        let span = tracing::info_span!("source", source = %name);
        match source {
            SourceConfig::Postgres(pg) => {
                let db = pg.connect_params().map(|p| p.dbname).unwrap_or_default();
                let block = SourceBlock {
                    connector: "postgresql",
                    name: name.clone(),
                    db,
                };
                let encoder = encoder(
                    block,
                    pg.tombstones,
                    pg.encoding,
                    pg.avro_decimals,
                    &registry,
                );
                let source = sluice_connectors::postgres::PostgresSource::new(pg);
                tasks.spawn(
                    format!("source {name}"),
                    span,
                    run_source(
                        settings,
                        source,
                        encoder,
                        backend.clone(),
                        tasks.cancel_token(),
                    ),
                );
            }
            SourceConfig::Mysql(my) => {
                // Debezium's connector name for MySQL and MariaDB alike.
                let block = SourceBlock {
                    connector: "mysql",
                    name: name.clone(),
                    db: String::new(),
                };
                let encoder = encoder(
                    block,
                    my.tombstones,
                    my.encoding,
                    my.avro_decimals,
                    &registry,
                );
                let source = sluice_connectors::mysql::source::MysqlSource::new(my);
                tasks.spawn(
                    format!("source {name}"),
                    span,
                    run_source(
                        settings,
                        source,
                        encoder,
                        backend.clone(),
                        tasks.cancel_token(),
                    ),
                );
            }
        }
    }
    for sink in config.sinks {
        let name = sink.name().to_owned();
        let settings = SinkSettings {
            name: name.clone(),
            topics: sink.topics().to_vec(),
            max_read_bytes: 1 << 20,
            max_batch_bytes: 4 << 20,
            topic_refresh: Duration::from_secs(1),
        };
        let span = tracing::info_span!("sink", sink = %name);
        let dead_letters = sink
            .dead_letter_topic()
            .map(|topic| sluice_core::sink::dead_letter_writer(&backend, &name, topic));
        clear_sink_failure(&backend, &name)
            .await
            .map_err(|e| Failure::runtime(anyhow!("sink {name}: {e}")))?;
        health.sink_running(&name);
        let on_failure = sink_failure_recorder(&backend, &health, &name);
        match sink {
            SinkConfig::Jsonl(jsonl) => {
                let decoder = AvroDecoder::new(Arc::clone(&registry));
                let sink = sluice_connectors::jsonl::JsonlSink::new(jsonl, Some(decoder));
                tasks.spawn_isolated(
                    format!("sink {name}"),
                    span,
                    run_sink(settings, sink, backend.clone(), tasks.cancel_token()),
                    on_failure,
                );
            }
            SinkConfig::Mysql(my) => {
                let settings = SinkSettings {
                    max_read_bytes: 4 << 20,
                    max_batch_bytes: 8 << 20,
                    ..settings
                };
                let sink = sluice_connectors::mysql::sink::mysql_sink(
                    my,
                    Arc::clone(&registry),
                    dead_letters,
                );
                tasks.spawn_isolated(
                    format!("sink {name}"),
                    span,
                    run_sink(settings, sink, backend.clone(), tasks.cancel_token()),
                    on_failure,
                );
            }
            SinkConfig::Postgres(pg) => {
                // Bigger reads: each one becomes a target transaction.
                let settings = SinkSettings {
                    max_read_bytes: 4 << 20,
                    max_batch_bytes: 8 << 20,
                    ..settings
                };
                let sink = sluice_connectors::postgres::sink::postgres_sink(
                    pg,
                    Arc::clone(&registry),
                    dead_letters,
                );
                tasks.spawn_isolated(
                    format!("sink {name}"),
                    span,
                    run_sink(settings, sink, backend.clone(), tasks.cancel_token()),
                    on_failure,
                );
            }
        }
    }

    tokio::select! {
        signal = shutdown_signal() => tracing::info!(signal, "shutting down: stopping sources, draining, acknowledging"),
        () = tasks.wait_cancelled() => {}
    }
    let result = tasks.shutdown(SHUTDOWN_DEADLINE).await;
    if let Err(err) = backend.flush().await {
        tracing::error!(error = %err, "final log flush failed");
    }
    let (failures, in_time) = match result {
        Ok(failures) => (failures, true),
        Err(failures) => (failures, false),
    };
    if let Some(first) = failures.into_iter().next() {
        return Err(Failure::runtime(anyhow!("{}", first.error)));
    }
    if !in_time {
        return Err(Failure::runtime(anyhow!(
            "shutdown did not finish within {}s",
            SHUTDOWN_DEADLINE.as_secs()
        )));
    }
    tracing::info!("stopped cleanly");
    Ok(())
}

/// The schema registry over the log's `_schemas` topic (replayed into memory).
pub(crate) async fn open_registry(log: Arc<Log>) -> Result<Arc<Registry>, Failure> {
    let opened = tokio::task::spawn_blocking(move || -> anyhow::Result<Registry> {
        let store = LogStore::open(log).map_err(|e| anyhow!("schema registry: {e}"))?;
        Registry::open(store).map_err(|e| anyhow!("schema registry: {}", e.message))
    })
    .await
    .map_err(Failure::runtime)?
    .map_err(Failure::runtime)?;
    Ok(Arc::new(opened))
}

/// A sink starting: forget a failure recorded by an earlier run (restarting sluice is how a
/// failed sink is restarted).
async fn clear_sink_failure(backend: &EmbeddedLog, sink: &str) -> Result<(), sluice_log::LogError> {
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
fn sink_failure_recorder(
    backend: &EmbeddedLog,
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

/// Once a minute: deletes segments past the retention limits and compacts compacted topics.
async fn maintain(
    log: Arc<Log>,
    tombstone_retention: Duration,
    cancel: tokio_util::sync::CancellationToken,
) -> Result<(), sluice_log::LogError> {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            _ = tokio::time::sleep(MAINTENANCE_INTERVAL) => {}
        }
        let log = Arc::clone(&log);
        let work = move || -> Result<_, sluice_log::LogError> {
            Ok((log.enforce_retention()?, log.compact(tombstone_retention)?))
        };
        let (deleted, compacted) = tokio::task::spawn_blocking(work)
            .await
            .unwrap_or(Ok((0, Default::default())))?;
        if deleted > 0 {
            tracing::info!(segments = deleted, "retention deleted old segments");
        }
        if compacted.records_removed > 0 {
            tracing::info!(
                records = compacted.records_removed,
                segments = compacted.segments_rewritten,
                "compaction removed superseded records"
            );
        }
    }
}

pub(crate) async fn shutdown_signal() -> &'static str {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return "SIGINT";
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

/// Prints one probe's outcome; true when it passed.
fn report_probe(kind: &str, name: &str, result: anyhow::Result<String>) -> bool {
    match result {
        Ok(summary) => {
            println!("{kind} {name}: ok: {summary}");
            true
        }
        Err(err) => {
            println!("{kind} {name}: FAILED: {err:#}");
            false
        }
    }
}

/// `sluice check --connect`: probes every source's server and every sink's destination.
pub(crate) fn probe(config: &FileConfig) -> Result<(), Failure> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Failure::runtime)?;
    let mut failed = false;
    for source in &config.sources {
        let result = match source {
            SourceConfig::Postgres(pg) => runtime
                .block_on(sluice_connectors::postgres::probe(pg))
                .map_err(anyhow::Error::from),
            SourceConfig::Mysql(my) => runtime
                .block_on(sluice_connectors::mysql::source::probe(my))
                .map_err(anyhow::Error::from),
        };
        failed |= !report_probe("source", source.name(), result);
    }
    for sink in &config.sinks {
        let result = match sink {
            SinkConfig::Jsonl(jsonl) => {
                sluice_connectors::jsonl::probe(jsonl).map_err(|e| anyhow!(e))
            }
            SinkConfig::Postgres(pg) => runtime
                .block_on(sluice_connectors::postgres::sink::probe(pg))
                .map_err(anyhow::Error::from),
            SinkConfig::Mysql(my) => runtime
                .block_on(sluice_connectors::mysql::sink::probe(my))
                .map_err(anyhow::Error::from),
        };
        failed |= !report_probe("sink", sink.name(), result);
    }
    if failed {
        return Err(Failure::runtime(anyhow!(
            "some sources or sinks failed their checks (see above)"
        )));
    }
    Ok(())
}
