//! `sluice run` and `sluice check --connect`: opens the log and registry, starts each configured
//! connector (built in `connect.rs`) on the pipeline runtime, and stops in order.

use std::sync::Arc;
use std::time::Duration;

use anyhow::anyhow;
use sluice_core::event_log::EventLog;
use sluice_core::health::Health;
use sluice_core::position::Position;
use sluice_core::task::Tasks;
use sluice_log::Log;
use sluice_schema_registry::registry::store::LogStore;
use sluice_schema_registry::registry::Registry;

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
    #[cfg(feature = "kafka")]
    if config.log.kind == "kafka" {
        let backend = crate::backend::open_kafka(&config.log).await?;
        tracing::info!(
            brokers = config.log.brokers.as_deref().unwrap_or_default(),
            topics = backend.topics().len(),
            "log open on Kafka"
        );
        return run_on(config, stop_at, backend, None, (registry_listener, api)).await;
    }
    let backend = crate::backend::open(&config.log).await?;
    tracing::info!(dir = %config.log.dir.display(), topics = backend.topics().len(), "log open");
    let maintenance = Arc::clone(backend.log());
    run_on(
        config,
        stop_at,
        backend,
        Some(maintenance),
        (registry_listener, api),
    )
    .await
}

/// What `run` binds before it opens the log: the registry's and the API's listeners.
type Listeners = (
    Option<tokio::net::TcpListener>,
    Option<(
        tokio::net::TcpListener,
        metrics_exporter_prometheus::PrometheusHandle,
    )>,
);

/// Runs the pipelines on `backend`; `maintenance`: the embedded log, whose retention and
/// compaction sluice runs itself (a Kafka cluster does its own).
async fn run_on<L: EventLog + Clone>(
    config: FileConfig,
    stop_at: Option<Position>,
    backend: L,
    maintenance: Option<Arc<Log>>,
    (registry_listener, api): Listeners,
) -> Result<(), Failure> {
    let registry = open_registry(backend.clone()).await?;
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
    if let Some(log) = maintenance {
        tasks.spawn(
            "log maintenance",
            tracing::info_span!("log_maintenance"),
            maintain(log, tombstone_retention, tasks.cancel_token()),
        );
    }
    if let Some((listener, metrics)) = api {
        tasks.spawn(
            "api",
            tracing::info_span!("api"),
            crate::api::serve(listener, metrics, health.clone(), tasks.cancel_token()),
        );
    }

    let context = crate::connect::Context {
        tasks: &tasks,
        log: &backend,
        registry: &registry,
        health: &health,
        stop_at,
        log_dir: &config.log.dir,
    };
    for source in config.sources {
        crate::connect::spawn_source(source, &context);
    }
    for sink in config.sinks {
        crate::connect::spawn_sink(sink, &context).await?;
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
pub(crate) async fn open_registry<L: EventLog>(log: L) -> Result<Arc<Registry>, Failure> {
    let opened = tokio::task::spawn_blocking(move || -> anyhow::Result<Registry> {
        let store = LogStore::open(log).map_err(|e| anyhow!("schema registry: {e}"))?;
        Registry::open(store).map_err(|e| anyhow!("schema registry: {}", e.message))
    })
    .await
    .map_err(Failure::runtime)?
    .map_err(Failure::runtime)?;
    Ok(Arc::new(opened))
}

/// Once a minute: deletes segments past the retention limits and compacts compacted topics
/// (the embedded log's own upkeep; a Kafka broker does this itself).
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

/// `sluice snapshot`: asks a source for an on-demand snapshot.
pub(crate) fn request_snapshot(
    config: &FileConfig,
    source: &str,
    tables: &[String],
    filter: Option<&str>,
) -> Result<(), Failure> {
    let Some(found) = config.sources.iter().find(|s| s.name() == source) else {
        let names: Vec<&str> = config.sources.iter().map(|s| s.name()).collect();
        return Err(Failure::config(anyhow!(
            "the config has no source named {source:?} (it has: {})",
            names.join(", ")
        )));
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Failure::runtime)?;
    let said = runtime
        .block_on(crate::connect::request_snapshot(found, tables, filter))
        .map_err(Failure::runtime)?;
    println!("{said}");
    Ok(())
}

/// `sluice check --connect`: probes every source's server and every sink's destination.
pub(crate) fn probe(config: &FileConfig) -> Result<(), Failure> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Failure::runtime)?;
    let mut failed = false;
    for source in &config.sources {
        let result = runtime.block_on(crate::connect::probe_source(source));
        failed |= !report_probe("source", source.name(), result);
    }
    for sink in &config.sinks {
        let result = runtime.block_on(crate::connect::probe_sink(sink));
        failed |= !report_probe("sink", sink.name(), result);
    }
    if failed {
        return Err(Failure::runtime(anyhow!(
            "some sources or sinks failed their checks (see above)"
        )));
    }
    Ok(())
}
