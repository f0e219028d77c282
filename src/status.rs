//! `sluice status -c FILE`: where each source and sink of a pipeline stands, read from the log
//! (which any process may read while `sluice run` writes it) and, for sources, from the server.
//! What the operator at 3 a.m. asks first: is the source keeping up, is WAL piling up, which
//! sink is behind and by how much.

use std::collections::BTreeMap;

use anyhow::anyhow;
use sluice_core::checkpoint::{Checkpoint, SnapshotProgress};
use sluice_core::event_log::EventLog;
use sluice_core::health::{sink_failure_writer, Failed};
use sluice_core::topic;
use sluice_core::topic::glob_match;

use crate::config::FileConfig;
use crate::Failure;

pub(crate) fn status(config: &FileConfig) -> Result<(), Failure> {
    #[cfg(feature = "kafka")]
    if config.log.kind == "kafka" {
        let runtime = crate::backend::command_runtime()?;
        return runtime.block_on(async {
            let log = crate::backend::open_kafka(&config.log).await?;
            report(config, &log).await.map_err(Failure::runtime)
        });
    }
    let log = crate::backend::open_read_only(&config.log.dir).map_err(|e| {
        Failure::runtime(anyhow!(
            "{e:#} (has `sluice run` been started with this config?)"
        ))
    })?;
    crate::backend::command_runtime()?
        .block_on(report(config, &log))
        .map_err(Failure::runtime)
}

async fn report<L: EventLog>(config: &FileConfig, log: &L) -> anyhow::Result<()> {
    match config
        .log
        .brokers
        .as_deref()
        .filter(|_| config.log.kind == "kafka")
    {
        Some(brokers) => println!("log on Kafka at {brokers}"),
        None => println!("log {}", config.log.dir.display()),
    }
    for source in &config.sources {
        let name = source.name();
        let stored = log.checkpoint(name).await?;
        let parsed = stored.as_deref().map(Checkpoint::from_json);
        let checkpoint = match &parsed {
            None => "nothing committed yet".to_owned(),
            Some(Ok(checkpoint)) => match checkpoint.snapshot_chunks() {
                Some((done, total)) if checkpoint.snapshot == SnapshotProgress::InProgress => {
                    format!(
                        "initial snapshot in progress: {done} of {total} chunks in the log ({}%), at {}; \
                         a restart resumes it there",
                        (done * 100).checked_div(total).unwrap_or(0),
                        checkpoint.position
                    )
                }
                Some((done, total)) => format!(
                    "last committed {}, streaming; on-demand snapshot in progress: {done} of \
                     ~{total} chunks in the log; a restart resumes it there",
                    checkpoint.position
                ),
                _ => format!(
                    "last committed {} (snapshot {:?})",
                    checkpoint.position, checkpoint.snapshot
                ),
            },
            Some(Err(err)) => format!("unreadable checkpoint: {err}"),
        };
        let prefix = format!("{name}.");
        let mut topics = 0;
        let mut records = 0;
        for topic in log.topics().into_iter().filter(|t| t.starts_with(&prefix)) {
            topics += 1;
            records += records_in(log, &topic).await;
        }
        println!("source {name}: {checkpoint}; {topics} topic(s), {records} record(s)");
        let snapshotting = parsed
            .as_ref()
            .and_then(|parsed| parsed.as_ref().ok())
            .filter(|c| c.snapshot_state.is_some());
        if let Some(checkpoint) = snapshotting {
            // The tables still being read, then how many are done.
            let tables = checkpoint.snapshot_tables();
            let (done, reading): (Vec<_>, Vec<_>) =
                tables.iter().partition(|(_, done, total)| done >= total);
            for (table, done, total) in reading.iter().take(20) {
                let rows = records_in(log, &format!("{name}.{table}")).await;
                println!(
                    "  snapshot of {table}: {done} of {total} chunks in the log ({}%), {rows} record(s) in its topic",
                    (done * 100).checked_div(*total).unwrap_or(0)
                );
            }
            if reading.len() > 20 {
                println!("  … and {} more tables being read", reading.len() - 20);
            }
            if !done.is_empty() {
                println!("  snapshot done for {} table(s)", done.len());
            }
        }
        match crate::connect::source_server_status(source).await {
            Ok(line) => println!("  server: {line}"),
            Err(err) => println!("  server: unreachable: {err}"),
        }
        print_held(log, name).await;
    }
    for sink in &config.sinks {
        let name = sink.name();
        let mut lag = 0u64;
        let mut partitions = 0;
        // Per topic: records delivered (the group's offsets) of those in the log, and the lag.
        let mut per_topic: Vec<String> = Vec::new();
        for topic in delivered(log, sink).await? {
            lag += topic.stored - topic.delivered;
            partitions += topic.partitions;
            per_topic.push(format!(
                "  {}: {} of {} record(s) delivered ({} behind)",
                topic.topic,
                topic.delivered,
                topic.stored,
                topic.stored - topic.delivered
            ));
        }
        let kind = sink.section().kind();
        println!("sink {name} ({kind}): {partitions} partition(s), {lag} record(s) behind the log");
        for line in &per_topic {
            println!("{line}");
        }
        match crate::connect::sink_server_status(sink).await {
            Some(Ok(lines)) => {
                for line in lines {
                    println!("  server: {line}");
                }
            }
            Some(Err(err)) => println!("  server: unreachable: {err}"),
            None => {}
        }
        let failure = log
            .checkpoint(&sink_failure_writer(name))
            .await?
            .and_then(|text| Failed::from_checkpoint(name, &text));
        if let Some(failure) = failure {
            let mut at = String::new();
            sluice_core::value::write_utc_timestamp(&mut at, failure.at_us);
            println!(
                "  FAILED at {at}: {}\n  the sink is stopped (sources and other sinks go on); fix the cause, then restart sluice: it resumes from what the destination last applied",
                failure.reason
            );
        }
    }
    Ok(())
}

/// What a sink has delivered of one topic it reads.
pub(crate) struct Delivered {
    pub topic: String,
    pub partitions: u32,
    /// Records the log holds (committed).
    pub stored: u64,
    /// Of those, records the sink's consumer group is past.
    pub delivered: u64,
}

/// Per topic the sink reads, what it has delivered of what the log holds.
pub(crate) async fn delivered<L: EventLog>(
    log: &L,
    sink: &sluice_connectors::SinkConfig,
) -> Result<Vec<Delivered>, sluice_core::event_log::LogError> {
    let offsets = log.group_offsets(&format!("sink.{}", sink.name())).await?;
    let mut out = Vec::new();
    for topic in log.topics() {
        if !sink
            .topics()
            .iter()
            .any(|pattern| glob_match(pattern, &topic))
        {
            continue;
        }
        let mut delivered = Delivered {
            topic: topic.clone(),
            partitions: 0,
            stored: 0,
            delivered: 0,
        };
        for partition in 0..log.partitions(&topic).unwrap_or(0) {
            let stable = log.offsets(&topic, partition).await.map_or(0, |o| o.stable);
            let next = offsets
                .get(&(topic.clone(), partition))
                .copied()
                .unwrap_or(0);
            delivered.delivered += next.min(stable);
            delivered.stored += stable;
            delivered.partitions += 1;
        }
        out.push(delivered);
    }
    Ok(out)
}

async fn records_in<L: EventLog>(log: &L, topic: &str) -> u64 {
    let mut records = 0;
    for partition in 0..log.partitions(topic).unwrap_or(0) {
        if let Ok(o) = log.offsets(topic, partition).await {
            records += o.stable - o.start;
        }
    }
    records
}

/// The tables of `source` held back because the registry refused their new schema: how many
/// events wait, why, and what to do.
async fn print_held<L: EventLog>(log: &L, source: &str) {
    let released: BTreeMap<String, BTreeMap<u32, u64>> = log
        .checkpoint(&topic::release_writer(source))
        .await
        .ok()
        .flatten()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_default();
    let prefix = topic::held_topic(&format!("{source}."));
    for held in log.topics().into_iter().filter(|t| t.starts_with(&prefix)) {
        let done = released.get(&held).cloned().unwrap_or_default();
        let mut waiting = 0u64;
        let mut reason = String::new();
        for partition in 0..log.partitions(&held).unwrap_or(0) {
            let stable = log.stable_offset(&held, partition);
            let from = done.get(&partition).copied().unwrap_or(0);
            if stable <= from {
                continue;
            }
            waiting += stable - from;
            let last = log
                .read(&held, partition, stable - 1, 1 << 20)
                .await
                .unwrap_or_default();
            if let Some(text) = last
                .first()
                .and_then(|r| r.headers.iter().find(|h| h.key == topic::HELD_HEADER))
                .and_then(|h| h.value.as_deref())
            {
                reason = String::from_utf8_lossy(text).into_owned();
            }
        }
        if waiting > 0 {
            let table = topic::unheld(&held).unwrap_or(&held);
            println!(
                "  table {table} HELD BACK: {waiting} event(s) kept in {held}, delivered to no sink: {reason}\n  \
                 once the registry accepts the schema, restart sluice: the held events join {table} in order"
            );
        }
    }
}
