//! The dashboard at `/`: one page (`dashboard.html`, compiled into the binary: no build step,
//! nothing fetched from elsewhere) drawn from `/dashboard.json`, which this module serves:
//! every connector's state, the flow (sources → topics → sinks), and per connector its
//! throughput and lag over the last hour, sampled every 5 seconds from the process's own
//! metrics.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::{json, Value as Json};
use sluice_core::event_log::EventLog;
use sluice_core::metrics as m;
use sluice_core::topic::pattern_takes;
use tokio_util::sync::CancellationToken;

use crate::control::{Connector, Control};

/// How often the history takes a sample, and how many it keeps (an hour).
const EVERY: Duration = Duration::from_secs(5);
const KEEP: usize = 720;

/// One point: when, events (sources) or records (sinks) per second, and lag (seconds behind
/// for sources, records behind for sinks).
#[derive(Clone, Copy)]
struct Point {
    at_ms: i64,
    rate: f64,
    lag: f64,
}

/// The last hour of every connector.
#[derive(Default)]
pub(crate) struct History {
    points: Mutex<BTreeMap<String, VecDeque<Point>>>,
    /// The counters at the last sample, for rates.
    last: Mutex<Option<(Instant, BTreeMap<String, f64>)>>,
    /// Gauges of the last sample: per connector, name → value.
    gauges: Mutex<BTreeMap<String, BTreeMap<&'static str, f64>>>,
}

/// Per `(metric, connector)`: the metric's value summed over its other labels.
fn parse(text: &str) -> BTreeMap<(String, String), f64> {
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let (name, labels) = series.split_once('{').unwrap_or((series, ""));
        let connector = labels
            .trim_end_matches('}')
            .split(',')
            .filter_map(|l| l.split_once('='))
            .find(|(k, _)| *k == "source" || *k == "sink")
            .map(|(_, v)| v.trim_matches('"').to_owned());
        if let Some(connector) = connector {
            *out.entry((name.to_owned(), connector)).or_insert(0.0) += value;
        }
    }
    out
}

impl History {
    /// Samples every 5 seconds until `cancel`.
    pub(crate) async fn run(
        self: Arc<Self>,
        metrics: PrometheusHandle,
        cancel: CancellationToken,
    ) -> Result<(), std::io::Error> {
        loop {
            self.sample(&metrics.render(), Instant::now());
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                _ = tokio::time::sleep(EVERY) => {}
            }
        }
    }

    /// Takes one sample of the rendered metrics `text`, as of `now`.
    fn sample(&self, text: &str, now: Instant) {
        let values = parse(text);
        let at_ms = sluice_core::clock::now_us() / 1000;
        let value =
            |metric: &str, name: &str| values.get(&(metric.to_owned(), name.to_owned())).copied();
        let names: std::collections::BTreeSet<String> =
            values.keys().map(|(_, c)| c.clone()).collect();
        let previous = self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let mut counters = BTreeMap::new();
        let mut gauges = BTreeMap::new();
        for name in &names {
            let (total, lag) = match value(m::SOURCE_EVENTS, name) {
                Some(events) => (events, value(m::SOURCE_LAG_SECONDS, name).unwrap_or(0.0)),
                None => (
                    value(m::SINK_RECORDS, name).unwrap_or(0.0),
                    value(m::SINK_LAG_RECORDS, name).unwrap_or(0.0),
                ),
            };
            counters.insert(name.clone(), total);
            let mut own = BTreeMap::new();
            for (key, metric) in [
                ("dead_letters", m::SINK_DEAD_LETTERS),
                ("retained_wal_bytes", m::SLOT_RETAINED_WAL_BYTES),
                (
                    "lag",
                    if value(m::SOURCE_EVENTS, name).is_some() {
                        m::SOURCE_LAG_SECONDS
                    } else {
                        m::SINK_LAG_RECORDS
                    },
                ),
                (
                    "total",
                    if value(m::SOURCE_EVENTS, name).is_some() {
                        m::SOURCE_EVENTS
                    } else {
                        m::SINK_RECORDS
                    },
                ),
            ] {
                if let Some(v) = value(metric, name) {
                    own.insert(key, v);
                }
            }
            gauges.insert(name.clone(), own);
            let rate = match &previous {
                Some((then, before)) => {
                    let seconds = now.duration_since(*then).as_secs_f64().max(0.001);
                    (total - before.get(name).copied().unwrap_or(total)).max(0.0) / seconds
                }
                None => 0.0,
            };
            let mut points = self
                .points
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let series = points.entry(name.clone()).or_default();
            series.push_back(Point { at_ms, rate, lag });
            while series.len() > KEEP {
                series.pop_front();
            }
        }
        *self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some((now, counters));
        *self
            .gauges
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = gauges;
    }
}

/// `/dashboard.json`.
pub(crate) async fn data<L: EventLog + Clone>(control: &Control<L>, history: &History) -> Json {
    let states = control.states().await;
    let topics: Vec<String> = control
        .log()
        .topics()
        .into_iter()
        .filter(|t| !t.starts_with('_'))
        .collect();
    let mut connectors = Vec::new();
    let points = history
        .points
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let gauges = history
        .gauges
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    for state in states {
        let reads: Vec<&String> = match control.connector(&state.name).await {
            Some(Connector::Sink(sink)) => topics
                .iter()
                .filter(|t| sink.topics().iter().any(|p| pattern_takes(p, t)))
                .collect(),
            Some(Connector::Source(source)) => {
                let prefix = format!("{}.", source.name());
                topics.iter().filter(|t| t.starts_with(&prefix)).collect()
            }
            None => Vec::new(),
        };
        let base = state.name.trim_start_matches("sink:");
        let series: Vec<Json> = points
            .get(base)
            .map(|s| s.iter().map(|p| json!([p.at_ms, p.rate, p.lag])).collect())
            .unwrap_or_default();
        connectors.push(json!({
            "status": state,
            "topics": reads,
            "series": series,
            "gauges": gauges.get(base).cloned().unwrap_or_default(),
        }));
    }
    json!({ "topics": topics, "connectors": connectors, "sample_seconds": EVERY.as_secs() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_give_rates_and_keep_an_hour() {
        let history = History::default();
        let start = Instant::now();
        history.sample(
            "# TYPE x counter\nsluice_sink_records_total{sink=\"file\"} 10\n\
             sluice_sink_lag_records{sink=\"file\"} 4\n",
            start,
        );
        history.sample(
            "sluice_sink_records_total{sink=\"file\"} 60\nsluice_sink_lag_records{sink=\"file\"} 0\n\
             sluice_source_events_total{source=\"src\",table=\"a\"} 5\n\
             sluice_source_events_total{source=\"src\",table=\"b\"} 7\n",
            start + Duration::from_millis(100),
        );
        let points = history.points.lock().unwrap();
        let file = &points["file"];
        assert_eq!(file.len(), 2);
        assert!((file[1].rate - 500.0).abs() < 1e-6, "{}", file[1].rate);
        assert_eq!(file[1].lag, 0.0);
        assert_eq!(
            history.gauges.lock().unwrap()["src"]["total"],
            12.0,
            "labels beyond the connector are summed"
        );
        drop(points);
        for i in 0..KEEP {
            history.sample(
                "sluice_sink_records_total{sink=\"file\"} 60\n",
                start + Duration::from_secs(i as u64 + 1),
            );
        }
        assert_eq!(
            history.points.lock().unwrap()["file"].len(),
            KEEP,
            "an hour is kept"
        );
    }
}
