//! The running connectors and what the admin API (and a config reload) does to them: pause
//! (the connector stops as it does at shutdown: a sink delivers and commits what it holds, a
//! source checkpoints; a paused Postgres source keeps its slot, which holds WAL), stop (the
//! same, reported as STOPPED, as Kafka Connect does before offsets change), resume (it starts
//! again from where it stopped), restart (stop, then start; a failed sink starts afresh), a
//! stopped sink's offsets changed, and each connector's state for status.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use sluice_connectors::{SinkConfig, SourceConfig};
use sluice_core::checkpoint::{Checkpoint, SnapshotProgress};
use sluice_core::event_log::EventLog;
use sluice_core::health::Health;
use sluice_core::pipeline::OffsetReset;
use sluice_core::position::Position;
use sluice_core::task::Tasks;
use sluice_schema_registry::registry::Registry;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::FileConfig;
use crate::connect::Context;

/// How long a pause or restart waits for the connector to stop.
const STOP_DEADLINE: Duration = Duration::from_secs(30);

/// A connector's config.
#[derive(Clone)]
// Few, long-lived and moved rarely: boxing the larger one would buy nothing.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Connector {
    Source(SourceConfig),
    Sink(SinkConfig),
}

impl Connector {
    pub(crate) fn name(&self) -> &str {
        match self {
            Connector::Source(c) => c.name(),
            Connector::Sink(c) => c.name(),
        }
    }

    pub(crate) fn role(&self) -> &'static str {
        match self {
            Connector::Source(_) => "source",
            Connector::Sink(_) => "sink",
        }
    }

    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Connector::Source(c) => c.section().kind(),
            Connector::Sink(c) => c.kind(),
        }
    }
}

struct Entry {
    connector: Connector,
    /// The connector's entry as the file spelled it (a reload restarts it when that changes).
    fingerprint: String,
    /// Cancelled to stop this connector (a child of shutdown's token).
    cancel: CancellationToken,
    task: Option<JoinHandle<()>>,
    paused: bool,
    /// Paused by `stop` (reported as STOPPED).
    stopped: bool,
}

/// A connector's state, as the API reports it.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct State {
    pub name: String,
    #[serde(rename = "type")]
    pub role: &'static str,
    pub kind: &'static str,
    /// RUNNING, PAUSED, FAILED, STOPPED or (sources) SNAPSHOTTING.
    pub state: &'static str,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace: Option<String>,
    /// Sources: the position of the last transaction in the log.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<String>,
    /// Sources in their initial snapshot: chunks in the log, of how many.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<serde_json::Value>,
}

/// The running pipeline's connectors, shared by the API.
pub(crate) struct Control<L> {
    tasks: Arc<Tasks>,
    log: L,
    registry: Arc<Registry>,
    health: Health,
    stop_at: Option<Position>,
    /// Cancelled when a source reaches `stop_at` (`--stop-at`): the sources stop, and the
    /// sinks deliver what the log holds before sluice stops (`run.rs`).
    cutover: CancellationToken,
    log_dir: std::path::PathBuf,
    /// Held only to read or change entries, never while a connector stops: the API's reads
    /// answer while a pause waits for a slow sink.
    connectors: Mutex<BTreeMap<String, Entry>>,
    /// Held through each operation that stops or starts connectors (pause, resume, restart,
    /// offsets, reload), one at a time: no connector is started while its last run stops.
    operations: Mutex<()>,
}

/// Why a control request cannot be done.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ControlError {
    #[error("no connector named {0:?}")]
    Unknown(String),
    /// Not possible in the connector's state (409).
    #[error("{0}")]
    Refused(String),
    /// Not possible for this connector at all (400).
    #[error("{0}")]
    Invalid(String),
}

impl<L: EventLog + Clone> Control<L> {
    pub(crate) fn new(
        tasks: Arc<Tasks>,
        log: L,
        registry: Arc<Registry>,
        health: Health,
        stop_at: Option<Position>,
        log_dir: std::path::PathBuf,
    ) -> Arc<Control<L>> {
        Arc::new(Control {
            tasks,
            log,
            registry,
            health,
            stop_at,
            cutover: CancellationToken::new(),
            log_dir,
            connectors: Mutex::new(BTreeMap::new()),
            operations: Mutex::new(()),
        })
    }

    /// Starts the config's connectors and keeps them.
    pub(crate) async fn start_all(&self, config: FileConfig) -> Result<(), crate::Failure> {
        let mut connectors = self.connectors.lock().await;
        for (connector, fingerprint) in wanted(config) {
            let (cancel, task) = self.spawn(&connector).await?;
            let name = key(&connector, &connectors);
            connectors.insert(name, Entry::running(connector, fingerprint, cancel, task));
        }
        Ok(())
    }

    /// Applies a config read again: connectors gone from it stop, new ones start, those whose
    /// entry changed restart with it (a paused one stays paused), the rest go on untouched.
    pub(crate) async fn reload(&self, config: FileConfig) -> Reload {
        let _operation = self.operations.lock().await;
        let mut report = Reload::default();
        let wanted = wanted(config);
        let names: std::collections::BTreeSet<String> = wanted
            .iter()
            .map(|(c, _)| {
                let other_role = wanted
                    .iter()
                    .any(|(o, _)| o.name() == c.name() && o.role() != c.role());
                qualified(c, other_role)
            })
            .collect();
        let gone: Vec<(String, Entry)> = {
            let mut connectors = self.connectors.lock().await;
            let names: Vec<String> = connectors
                .keys()
                .filter(|k| !names.contains(*k))
                .cloned()
                .collect();
            names
                .into_iter()
                .filter_map(|name| connectors.remove(&name).map(|entry| (name, entry)))
                .collect()
        };
        for (name, mut entry) in gone {
            finish(&name, entry.halt()).await;
            report.removed.push(name);
        }
        for (connector, fingerprint) in wanted {
            // A changed connector stops (outside the map's lock) before it starts again.
            let (name, changed) = {
                let mut connectors = self.connectors.lock().await;
                let name = key(&connector, &connectors);
                let changed = match connectors.get_mut(&name) {
                    Some(entry) if entry.fingerprint == fingerprint => {
                        report.unchanged.push(name);
                        continue;
                    }
                    Some(entry) => Some(entry.halt()),
                    None => None,
                };
                (name, changed)
            };
            if let Some(task) = changed {
                finish(&name, task).await;
                let mut connectors = self.connectors.lock().await;
                let Some(entry) = connectors.get_mut(&name) else {
                    continue;
                };
                entry.connector = connector;
                entry.fingerprint = fingerprint;
                if !entry.paused {
                    if let Err(err) = self.start(entry).await {
                        report.failed.push(format!("{name}: {err}"));
                        continue;
                    }
                }
                report.restarted.push(name);
                continue;
            }
            // New (operations are one at a time: nothing else added it meanwhile).
            match self.spawn(&connector).await {
                Ok((cancel, task)) => {
                    let entry = Entry::running(connector, fingerprint, cancel, task);
                    self.connectors.lock().await.insert(name.clone(), entry);
                    report.added.push(name);
                }
                Err(failure) => report.failed.push(format!("{name}: {:#}", failure.error)),
            }
        }
        report
    }

    async fn spawn(
        &self,
        connector: &Connector,
    ) -> Result<(CancellationToken, JoinHandle<()>), crate::Failure> {
        let cancel = self.tasks.cancel_token().child_token();
        let cx = Context {
            tasks: &self.tasks,
            log: &self.log,
            registry: &self.registry,
            health: &self.health,
            stop_at: self.stop_at.clone(),
            cutover: self.cutover.clone(),
            log_dir: &self.log_dir,
            cancel: cancel.clone(),
        };
        let task = match connector {
            Connector::Source(source) => crate::connect::spawn_source(source.clone(), &cx),
            Connector::Sink(sink) => crate::connect::spawn_sink(sink.clone(), &cx).await?,
        };
        Ok((cancel, task))
    }

    /// The log the connectors run on.
    pub(crate) fn log(&self) -> &L {
        &self.log
    }

    /// Cancelled once a source reached the `--stop-at` position.
    pub(crate) fn cutover(&self) -> &CancellationToken {
        &self.cutover
    }

    /// The sinks that run now (neither paused nor ended), with their configs.
    pub(crate) async fn running_sinks(&self) -> Vec<SinkConfig> {
        let connectors = self.connectors.lock().await;
        connectors
            .values()
            .filter(|e| !e.paused && e.task.as_ref().is_some_and(|t| !t.is_finished()))
            .filter_map(|e| match &e.connector {
                Connector::Sink(sink) => Some(sink.clone()),
                #[allow(unreachable_patterns)]
                Connector::Source(_) => None,
            })
            .collect()
    }

    /// The connectors' names, in order.
    pub(crate) async fn names(&self) -> Vec<String> {
        self.connectors.lock().await.keys().cloned().collect()
    }

    /// The connector's config (None: no such connector).
    pub(crate) async fn connector(&self, name: &str) -> Option<Connector> {
        let connectors = self.connectors.lock().await;
        connectors.get(name).map(|e| e.connector.clone())
    }

    /// Stops the connector as shutdown does, and keeps it stopped until `resume` (`stopped`:
    /// reported as STOPPED rather than PAUSED).
    pub(crate) async fn pause(&self, name: &str, stopped: bool) -> Result<(), ControlError> {
        let _operation = self.operations.lock().await;
        let task = {
            let mut connectors = self.connectors.lock().await;
            let entry = entry(&mut connectors, name)?;
            entry.paused = true;
            entry.stopped = stopped;
            entry.halt()
        };
        finish(name, task).await;
        tracing::info!(
            connector = name,
            "{}",
            if stopped { "stopped" } else { "paused" }
        );
        Ok(())
    }

    /// Changes a sink's offsets, which must not be running (paused, stopped or failed): the
    /// change waits in the log until the sink runs again (`OffsetReset`), and the consumer
    /// group shows it at once. `reset.all`: every partition from the log's first record.
    pub(crate) async fn change_offsets(
        &self,
        name: &str,
        reset: OffsetReset,
    ) -> Result<(), ControlError> {
        // No resume meanwhile: the sink stays stopped while its offsets change.
        let _operation = self.operations.lock().await;
        let connectors = self.connectors.lock().await;
        let entry = connectors
            .get(name)
            .ok_or_else(|| ControlError::Unknown(name.to_owned()))?;
        let Connector::Sink(sink) = &entry.connector else {
            return Err(ControlError::Invalid(format!(
                "{name} is a source: its position is its database's (the replication slot, the \
                 binlog), not an offset sluice can move. To read tables again, POST \
                 /connectors/{name}/snapshot"
            )));
        };
        let running = !entry.paused && entry.task.as_ref().is_some_and(|t| !t.is_finished());
        if running {
            return Err(ControlError::Refused(format!(
                "{name} is running: stop it first (PUT /connectors/{name}/stop), change its \
                 offsets, then resume it (PUT /connectors/{name}/resume)"
            )));
        }
        let sink_name = sink.name();
        let log_error = |e: sluice_core::event_log::LogError| {
            ControlError::Refused(format!("the log refused the change: {e}"))
        };
        // What the group shows: the new offsets where they are known now.
        let group = format!("sink.{sink_name}");
        let mut shown = self.log.group_offsets(&group).await.map_err(log_error)?;
        if !reset.all {
            shown.clear();
        }
        let mut pending = reset.clone();
        pending.apply(&self.log, &mut shown).await;
        if !shown.is_empty() {
            self.log
                .commit_offsets(&group, shown)
                .await
                .map_err(log_error)?;
        }
        let waiting = OffsetReset::read(&self.log, sink_name)
            .await
            .map_err(log_error)?
            .unwrap_or_default();
        waiting
            .then(reset)
            .store(&self.log, sink_name)
            .await
            .map_err(log_error)?;
        tracing::info!(
            connector = name,
            "offsets changed; the sink resumes from them"
        );
        Ok(())
    }

    /// Starts a paused connector again, from where it stopped.
    pub(crate) async fn resume(&self, name: &str) -> Result<(), ControlError> {
        let _operation = self.operations.lock().await;
        let mut connectors = self.connectors.lock().await;
        let entry = entry(&mut connectors, name)?;
        if !entry.paused {
            return Ok(());
        }
        self.start(entry).await?;
        entry.stopped = false;
        tracing::info!(connector = name, "resumed");
        Ok(())
    }

    /// Stops the connector and starts it again (a failed sink starts afresh; a paused one
    /// runs again).
    pub(crate) async fn restart(&self, name: &str) -> Result<(), ControlError> {
        let _operation = self.operations.lock().await;
        let task = {
            let mut connectors = self.connectors.lock().await;
            entry(&mut connectors, name)?.halt()
        };
        finish(name, task).await;
        let mut connectors = self.connectors.lock().await;
        let entry = entry(&mut connectors, name)?;
        self.start(entry).await?;
        entry.stopped = false;
        tracing::info!(connector = name, "restarted");
        Ok(())
    }

    async fn start(&self, entry: &mut Entry) -> Result<(), ControlError> {
        if self.tasks.cancel_token().is_cancelled() {
            return Err(ControlError::Refused("sluice is shutting down".into()));
        }
        let (cancel, task) = self
            .spawn(&entry.connector)
            .await
            .map_err(|f| ControlError::Refused(format!("{:#}", f.error)))?;
        entry.cancel = cancel;
        entry.task = Some(task);
        entry.paused = false;
        Ok(())
    }

    /// Every connector's state.
    pub(crate) async fn states(&self) -> Vec<State> {
        let names = self.names().await;
        let mut out = Vec::new();
        for name in names {
            if let Ok(state) = self.state(&name).await {
                out.push(state);
            }
        }
        out
    }

    /// One connector's state.
    pub(crate) async fn state(&self, name: &str) -> Result<State, ControlError> {
        let (connector, paused, stopped, ended) = {
            let connectors = self.connectors.lock().await;
            let entry = connectors
                .get(name)
                .ok_or_else(|| ControlError::Unknown(name.to_owned()))?;
            let ended = entry.task.as_ref().is_none_or(JoinHandle::is_finished);
            (entry.connector.clone(), entry.paused, entry.stopped, ended)
        };
        let failed = match &connector {
            Connector::Sink(sink) => {
                let component = format!("sink {}", sink.name());
                self.health
                    .failed()
                    .into_iter()
                    .find(|f| f.component == component)
            }
            Connector::Source(_) => None,
        };
        let mut state = State {
            name: name.to_owned(),
            role: connector.role(),
            kind: connector.kind(),
            state: "RUNNING",
            trace: None,
            position: None,
            snapshot: None,
        };
        if let Connector::Source(_) = connector {
            if let Ok(Some(text)) = self.log.checkpoint(name).await {
                if let Ok(checkpoint) = Checkpoint::from_json(&text) {
                    state.position = Some(checkpoint.position.to_string());
                    if let Some((done, total)) = checkpoint.snapshot_chunks() {
                        if checkpoint.snapshot == SnapshotProgress::InProgress {
                            state.state = "SNAPSHOTTING";
                            state.snapshot =
                                Some(serde_json::json!({"chunks_done": done, "chunks": total}));
                        }
                    }
                }
            }
        }
        if paused {
            state.state = if stopped { "STOPPED" } else { "PAUSED" };
        } else if let Some(failure) = failed {
            state.state = "FAILED";
            state.trace = Some(failure.reason);
        } else if ended {
            state.state = "STOPPED";
        }
        Ok(state)
    }
}

/// What a reload did, connector by connector.
#[derive(Debug, Default, serde::Serialize)]
pub(crate) struct Reload {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub restarted: Vec<String>,
    pub unchanged: Vec<String>,
    /// Connectors that could not start, and why.
    pub failed: Vec<String>,
}

/// The config's connectors and their fingerprints.
fn wanted(config: FileConfig) -> Vec<(Connector, String)> {
    let fingerprint = |section: &str, name: &str| {
        config
            .fingerprints
            .get(&format!("{section}/{name}"))
            .cloned()
            .unwrap_or_default()
    };
    let mut out = Vec::new();
    for source in config.sources {
        let print = fingerprint("sources", source.name());
        out.push((Connector::Source(source), print));
    }
    for sink in config.sinks {
        let print = fingerprint("sinks", sink.name());
        out.push((Connector::Sink(sink), print));
    }
    out
}

/// The name the API knows a connector by: its own, or `sink:<name>` for a sink that shares
/// its name with a source.
fn qualified(connector: &Connector, shared: bool) -> String {
    if shared && matches!(connector, Connector::Sink(_)) {
        format!("sink:{}", connector.name())
    } else {
        connector.name().to_owned()
    }
}

fn key(connector: &Connector, connectors: &BTreeMap<String, Entry>) -> String {
    let shared = connectors
        .get(connector.name())
        .is_some_and(|e| e.connector.role() != connector.role());
    qualified(connector, shared)
}

/// The connector called `name`.
fn entry<'a>(
    connectors: &'a mut BTreeMap<String, Entry>,
    name: &str,
) -> Result<&'a mut Entry, ControlError> {
    connectors
        .get_mut(name)
        .ok_or_else(|| ControlError::Unknown(name.to_owned()))
}

impl Entry {
    fn running(
        connector: Connector,
        fingerprint: String,
        cancel: CancellationToken,
        task: JoinHandle<()>,
    ) -> Entry {
        Entry {
            connector,
            fingerprint,
            cancel,
            task: Some(task),
            paused: false,
            stopped: false,
        }
    }

    /// Cancels the connector; returns its task, to wait for (`finish`).
    fn halt(&mut self) -> Option<JoinHandle<()>> {
        self.cancel.cancel();
        self.task.take()
    }
}

/// Waits for a halted connector's task to end (for a while).
async fn finish(name: &str, task: Option<JoinHandle<()>>) {
    if let Some(task) = task {
        if tokio::time::timeout(STOP_DEADLINE, task).await.is_err() {
            tracing::warn!(
                connector = name,
                "the connector did not stop within 30 s; it is left to stop on its own"
            );
        }
    }
}
