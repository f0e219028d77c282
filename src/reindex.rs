//! `sluice reindex SINK TABLE`: rebuilds an OpenSearch sink's index for one table from the log
//! into a fresh index, and moves the index's name (made an alias) onto it, so a mapping change
//! needs no downtime. It runs beside `sluice run`, reading the log read-only.
//!
//! 1. The sink itself, pointed at `<index>_r<time>` (under a name of its own), is fed every
//!    record of the table's topics up to the log's end as it is now. Searches still go to the
//!    old index, which the running sink keeps writing.
//! 2. One `_aliases` request moves the name onto the rebuilt index (a concrete index of that
//!    name is removed in the same request): from then on the running sink writes there too.
//! 3. The records committed between the end of step 1 and the move are fed again from where
//!    step 1 stopped. Documents carry their record's offset as external version, so whichever
//!    of the two writers comes second for a key cannot undo a newer change.

use std::sync::Arc;

use anyhow::anyhow;
use sluice_connectors::search::opensearch::reindex::{self, Live};
use sluice_connectors::search::opensearch::{opensearch_sink, OpenSearchSinkConfig};
use sluice_connectors::SinkConfig;
use sluice_core::event_log::EventLog;
use sluice_core::sink::{RecordSink, SinkRecord};
use sluice_core::topic::pattern_takes;
use sluice_log::EmbeddedLog;

use crate::config::FileConfig;
use crate::Failure;

/// A partition's records to copy: `[from, to)`.
struct Range {
    topic: Arc<str>,
    partition: u32,
    from: u64,
    to: u64,
}

// (A build with the opensearch connector alone has no other kind of sink.)
#[allow(irrefutable_let_patterns)]
pub(crate) fn reindex(config: &FileConfig, sink: &str, table: &str) -> Result<(), Failure> {
    let Some(found) = config.sinks.iter().find(|s| s.name() == sink) else {
        let names: Vec<&str> = config.sinks.iter().map(|s| s.name()).collect();
        return Err(Failure::config(anyhow!(
            "the config has no sink named {sink:?} (it has: {})",
            names.join(", ")
        )));
    };
    let SinkConfig::OpenSearch(os) = found else {
        return Err(Failure::config(anyhow!(
            "sluice reindex rebuilds OpenSearch/Elasticsearch indexes; sink {sink} is a {} sink",
            found.kind()
        )));
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(Failure::runtime)?;
    runtime.block_on(rebuild(config, os, table))
}

async fn rebuild(
    config: &FileConfig,
    os: &OpenSearchSinkConfig,
    table: &str,
) -> Result<(), Failure> {
    let runtime = |e: &dyn std::fmt::Display| Failure::runtime(anyhow!("{e}"));
    let log = open_log(config)?;
    let (live, topics) = topics_of(os, &log, table)?;
    let http = reindex::client(os).map_err(|e| runtime(&e))?;
    let before = reindex::live(&http, &live).await.map_err(|e| runtime(&e))?;
    let rebuilt = format!("{live}_r{}", stamp());
    let mut settings = os.clone();
    settings.name = format!("{}_reindex", os.name);
    settings.topics = topics.clone();
    settings.index = rebuilt.clone();
    settings.dead_letter_topic = None;
    reindex::forget_offsets(&http, &os.offsets_index, &settings.name)
        .await
        .map_err(|e| runtime(&e))?;
    println!(
        "rebuilding {live} from {} into {rebuilt}",
        topics.join(", ")
    );

    // 1. Everything up to the log's end now.
    let mut ranges = Vec::new();
    for topic in &topics {
        for partition in 0..log.partitions(topic).unwrap_or(0) {
            let offsets = log
                .offsets(topic, partition)
                .await
                .map_err(|e| runtime(&e))?;
            if offsets.start > 0 {
                return Err(Failure::runtime(anyhow!(
                    "{topic}/{partition} starts at offset {} (retention removed older records): \
                     rows not changed since would be missing from the rebuilt index. Nothing was \
                     changed; rebuild by hand as docs/search.md describes (a second sink fed by \
                     an on-demand snapshot)",
                    offsets.start
                )));
            }
            ranges.push(Range {
                topic: Arc::from(topic.as_str()),
                partition,
                from: 0,
                to: offsets.stable,
            });
        }
    }
    let copied = copy(&log, &settings, &ranges).await?;

    // 2. The name moves.
    let replaced = reindex::move_alias(&http, &live, &rebuilt, &before)
        .await
        .map_err(|e| runtime(&e))?;

    // 3. What was committed meanwhile (the running sink wrote it to the old index).
    let log = open_log(config)?;
    for range in &mut ranges {
        range.from = range.to;
        range.to = log.stable_offset(&range.topic, range.partition);
    }
    let caught_up = copy(&log, &settings, &ranges).await?;
    reindex::forget_offsets(&http, &os.offsets_index, &settings.name)
        .await
        .map_err(|e| runtime(&e))?;
    if let Live::Alias(_) = before {
        for old in &replaced {
            reindex::delete_index(&http, old)
                .await
                .map_err(|e| runtime(&e))?;
        }
    }
    let documents = reindex::count(&http, &rebuilt)
        .await
        .map_err(|e| runtime(&e))?;
    let was = match before {
        Live::Missing => "a new alias".to_owned(),
        Live::Index => format!("the index {live} replaced by an alias of that name"),
        Live::Alias(_) => format!("the alias moved; {} deleted", replaced.join(", ")),
    };
    println!(
        "{live} -> {rebuilt}: {documents} documents from {} records ({} of them committed during \
         the rebuild); {was}",
        copied + caught_up,
        caught_up
    );
    Ok(())
}

fn open_log(config: &FileConfig) -> Result<EmbeddedLog, Failure> {
    if config.log.kind == "kafka" {
        return Err(Failure::config(anyhow!(
            "sluice reindex reads the embedded log; on a log on Kafka, rebuild the index with a \
             second sink of a new name fed from the topics' first offsets"
        )));
    }
    crate::backend::open_read_only(&config.log.dir).map_err(Failure::runtime)
}

/// The live index `table` names for the sink, and every topic of the sink whose documents go
/// there (several sources may feed one index).
fn topics_of(
    os: &OpenSearchSinkConfig,
    log: &EmbeddedLog,
    table: &str,
) -> Result<(String, Vec<String>), Failure> {
    let taken: Vec<String> = log
        .topics()
        .into_iter()
        .filter(|t| os.topics.iter().any(|p| pattern_takes(p, t)))
        .collect();
    let named: Vec<&String> = taken
        .iter()
        .filter(|t| *t == table || t.ends_with(&format!(".{table}")))
        .collect();
    let mut lives: Vec<String> = named.iter().map(|t| reindex::live_index(os, t)).collect();
    lives.sort();
    lives.dedup();
    match lives.as_slice() {
        [live] => {
            let topics = taken
                .iter()
                .filter(|t| reindex::live_index(os, t) == *live)
                .cloned()
                .collect();
            Ok((live.clone(), topics))
        }
        [] => Err(Failure::config(anyhow!(
            "no topic of sink {} in the log holds a table {table:?} (its topics: {}); name it as \
             schema.table, table or the whole topic",
            os.name,
            taken.join(", ")
        ))),
        several => Err(Failure::config(anyhow!(
            "{table:?} names tables of several indexes ({}); name it as schema.table or the \
             whole topic",
            several.join(", ")
        ))),
    }
}

/// Feeds the records of `ranges` to a sink of `settings`; how many.
async fn copy(
    log: &EmbeddedLog,
    settings: &OpenSearchSinkConfig,
    ranges: &[Range],
) -> Result<u64, Failure> {
    let runtime = |e: &dyn std::fmt::Display| Failure::runtime(anyhow!("{e}"));
    // The registry as the log has it now (a table version registered since the last copy
    // decodes too).
    let registry = crate::run::open_registry(log.clone()).await?;
    let mut sink = opensearch_sink(settings.clone(), registry, None);
    sink.open().await.map_err(|e| runtime(&e))?;
    let mut copied = 0;
    for range in ranges.iter() {
        let mut at = range.from;
        while at < range.to {
            let read = log
                .read(&range.topic, range.partition, at, 4 << 20)
                .await
                .map_err(|e| runtime(&e))?;
            let records: Vec<SinkRecord> = read
                .into_iter()
                .filter(|r| r.offset < range.to)
                .map(|record| SinkRecord {
                    topic: Arc::clone(&range.topic),
                    partition: range.partition,
                    record,
                })
                .collect();
            let Some(last) = records.last() else { break };
            at = last.record.offset + 1;
            copied += records.len() as u64;
            sink.write(&records).await.map_err(|e| runtime(&e))?;
        }
    }
    sink.flush().await.map_err(|e| runtime(&e))?;
    sink.close().await.map_err(|e| runtime(&e))?;
    Ok(copied)
}

/// `YYYYMMDDhhmmss` (UTC) of now: rebuilt indexes sort by when they were made.
fn stamp() -> String {
    let mut text = String::new();
    sluice_core::value::write_utc_timestamp(&mut text, sluice_core::clock::now_us());
    text.chars().filter(char::is_ascii_digit).take(14).collect()
}
