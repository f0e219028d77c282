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

/// Where `run` reads its config again on SIGHUP (or the API's `POST /reload`).
pub(crate) struct Reloads {
    pub path: std::path::PathBuf,
    pub only: Option<crate::cli::Role>,
}

pub(crate) fn run(
    config: FileConfig,
    stop_at: Option<Position>,
    reloads: Reloads,
) -> Result<(), Failure> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(Failure::runtime)?;
    runtime.block_on(run_async(config, stop_at, Arc::new(reloads)))
}

async fn run_async(
    config: FileConfig,
    stop_at: Option<Position>,
    reloads: Arc<Reloads>,
) -> Result<(), Failure> {
    let registry_listener = match &config.registry {
        Some(registry) => Some(
            sluice_schema_registry::http::bind(&registry.listen)
                .await
                .map_err(|e| Failure::runtime(anyhow!(e)))?,
        ),
        None => None,
    };
    let api = match &config.api {
        Some(api) => {
            let auth = crate::api::Auth::from_config(api).map_err(Failure::config)?;
            let (listener, metrics) = crate::api::bind(&api.listen)
                .await
                .map_err(Failure::runtime)?;
            Some((listener, metrics, auth))
        }
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
        return run_on(
            config,
            stop_at,
            backend,
            None,
            (registry_listener, api),
            reloads,
        )
        .await;
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
        reloads,
    )
    .await
}

/// What `run` binds before it opens the log: the registry's and the API's listeners.
type Listeners = (
    Option<tokio::net::TcpListener>,
    Option<(
        tokio::net::TcpListener,
        metrics_exporter_prometheus::PrometheusHandle,
        crate::api::Auth,
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
    reloads: Arc<Reloads>,
) -> Result<(), Failure> {
    let registry = open_registry(backend.clone()).await?;
    let tasks = Arc::new(Tasks::new());
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
    let stop_position = stop_at.clone();
    let control = crate::control::Control::new(
        Arc::clone(&tasks),
        backend.clone(),
        Arc::clone(&registry),
        health.clone(),
        stop_at,
        config.log.dir.clone(),
    );
    control.start_all(config).await?;
    if stop_position.is_some() {
        tasks.spawn(
            "cut-over",
            tracing::info_span!("cutover"),
            drain_after_cutover(Arc::clone(&control), health.clone(), tasks.cancel_token()),
        );
    }
    if let Some((listener, metrics, auth)) = api {
        let history = Arc::new(crate::api::dashboard::History::default());
        tasks.spawn(
            "dashboard history",
            tracing::info_span!("dashboard"),
            Arc::clone(&history).run(metrics.clone(), tasks.cancel_token()),
        );
        let api = crate::api::Api {
            history,
            metrics,
            health: health.clone(),
            control: Arc::clone(&control),
            auth,
            reloads: Arc::clone(&reloads),
        };
        tasks.spawn(
            "api",
            tracing::info_span!("api"),
            crate::api::serve(listener, api, tasks.cancel_token()),
        );
    }

    // Made once, so that a signal arriving while a reload runs is not missed.
    let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        let hangup = async {
            match hangups.as_mut() {
                Some(hangups) => hangups.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            signal = &mut shutdown => {
                tracing::info!(signal, "shutting down: stopping sources, draining, acknowledging");
                break;
            }
            () = tasks.wait_cancelled() => break,
            Some(()) = hangup => {
                tracing::info!("SIGHUP: reading the config again");
                let _ = reload(&control, &reloads).await;
            }
        }
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

/// Reads the config file again and applies it (SIGHUP, `POST /reload`). A file that does not
/// load is refused with the reason, and the running pipeline goes on as it was.
pub(crate) async fn reload<L: EventLog + Clone>(
    control: &crate::control::Control<L>,
    reloads: &Reloads,
) -> Result<crate::control::Reload, String> {
    let mut config = match crate::config::load(&reloads.path) {
        Ok(config) => config,
        Err(err) => {
            let reason = format!("{err:#}");
            tracing::error!(error = %reason, "config reload refused; the running pipeline goes on unchanged");
            return Err(reason);
        }
    };
    crate::cli::only_role(&mut config, reloads.only);
    let report = control.reload(config).await;
    tracing::info!(
        added = ?report.added,
        removed = ?report.removed,
        restarted = ?report.restarted,
        failed = ?report.failed,
        "config reloaded"
    );
    Ok(report)
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

/// `--stop-at`: once a source reached the position (and every source stopped), the sinks
/// deliver everything the log holds, then sluice stops. A sink that fails meanwhile stops it
/// at once (the exit code says so); paused sinks are not waited for.
async fn drain_after_cutover<L: EventLog + Clone>(
    control: Arc<crate::control::Control<L>>,
    health: Health,
    shutdown: tokio_util::sync::CancellationToken,
) -> Result<(), anyhow::Error> {
    tokio::select! {
        () = control.cutover().cancelled() => {}
        () = shutdown.cancelled() => return Ok(()),
    }
    tracing::info!("reached the stop position: the sources stopped; the sinks deliver what the log holds, then sluice stops");
    let mut last_report = tokio::time::Instant::now();
    loop {
        if let Some(failed) = health
            .failed()
            .into_iter()
            .find(|f| f.component.starts_with("sink "))
        {
            tracing::error!(component = %failed.component, reason = %failed.reason, "a sink failed before delivering everything the log holds: stopping");
            shutdown.cancel();
            return Ok(());
        }
        let mut behind = Vec::new();
        for sink in control.running_sinks().await {
            let topics = crate::status::delivered(control.log(), &sink).await?;
            let lag: u64 = topics.iter().map(|t| t.stored - t.delivered).sum();
            if lag > 0 {
                behind.push(format!("{} ({lag} behind)", sink.name()));
            }
        }
        if behind.is_empty() {
            tracing::info!("every sink delivered everything the log holds: stopping");
            shutdown.cancel();
            return Ok(());
        }
        if last_report.elapsed() >= Duration::from_secs(5) {
            tracing::info!(sinks = %behind.join(", "), "waiting for the sinks to deliver what the log holds");
            last_report = tokio::time::Instant::now();
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(250)) => {}
            () = shutdown.cancelled() => return Ok(()),
        }
    }
}
