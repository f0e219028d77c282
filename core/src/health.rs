//! Failure domains: what has failed in a running pipeline, for `/health`, the
//! `sluice_sink_failed` metric and `sluice status`.
//!
//! A sink that fails definitively stops alone: its task ends, the failure is recorded here and
//! (by the binary) in the log, so that `sluice status` shows it from another process; sources
//! and other sinks go on. Restarting sluice restarts it. Only source and log failures stop a
//! pipeline.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::clock::now_us;
use crate::metrics;

/// A connector that stopped, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failed {
    /// `sink orders-replica`.
    pub component: String,
    pub reason: String,
    /// When, microseconds since the epoch.
    pub at_us: i64,
}

/// The failed components of a running pipeline, shared by its tasks and the admin endpoint.
#[derive(Debug, Clone, Default)]
pub struct Health {
    failed: Arc<Mutex<BTreeMap<String, Failed>>>,
}

impl Health {
    pub fn new() -> Health {
        Health::default()
    }

    /// Records that sink `name` stopped with `reason`.
    pub fn sink_failed(&self, name: &str, reason: &str) -> Failed {
        ::metrics::gauge!(metrics::SINK_FAILED, "sink" => name.to_owned()).set(1.0);
        let failed = Failed {
            component: format!("sink {name}"),
            reason: reason.to_owned(),
            at_us: now_us(),
        };
        self.lock().insert(failed.component.clone(), failed.clone());
        failed
    }

    /// Sink `name` is running (sets its metric to 0 so that dashboards see it from the start).
    pub fn sink_running(&self, name: &str) {
        ::metrics::gauge!(metrics::SINK_FAILED, "sink" => name.to_owned()).set(0.0);
        self.lock().remove(&format!("sink {name}"));
    }

    /// Everything that has failed, by component name.
    pub fn failed(&self) -> Vec<Failed> {
        self.lock().values().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Failed>> {
        self.failed.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The log writer under whose checkpoint a sink's failure is kept for `sluice status`
/// (`{"reason":…,"at_us":…}`, or empty while it runs).
pub fn sink_failure_writer(sink: &str) -> String {
    format!("sink.{sink}.failure")
}

impl Failed {
    /// The checkpoint text kept for `sluice status`.
    pub fn to_checkpoint(&self) -> String {
        serde_json::json!({"reason": self.reason, "at_us": self.at_us}).to_string()
    }

    /// A failure read back from its checkpoint (`None` for the empty "running" checkpoint).
    pub fn from_checkpoint(component: &str, text: &str) -> Option<Failed> {
        let json: serde_json::Value = serde_json::from_str(text).ok()?;
        Some(Failed {
            component: component.to_owned(),
            reason: json.get("reason")?.as_str()?.to_owned(),
            at_us: json
                .get("at_us")
                .and_then(serde_json::Value::as_i64)
                .unwrap_or(0),
        })
    }
}
