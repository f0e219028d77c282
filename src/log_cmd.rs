//! `sluice log …`: reading the embedded log from the command line, also while `sluice run`
//! writes it (read-only opens see what was committed).

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, Context};
use serde_json::{json, Value as Json};
use sluice_log::{Log, StoredRecord};

use crate::cli::{Format, LogCommand, LogLocation};
use crate::{config, Failure};

fn log_dir(location: &LogLocation) -> Result<PathBuf, Failure> {
    match (&location.dir, &location.config) {
        (Some(dir), _) => Ok(dir.clone()),
        (None, Some(path)) => Ok(config::load(path).map_err(Failure::config)?.log.dir),
        (None, None) => Err(Failure::config(anyhow!(
            "say which log: -c FILE or --dir DIR"
        ))),
    }
}

fn open(location: &LogLocation) -> Result<Log, Failure> {
    let dir = log_dir(location)?;
    Log::open_read_only(&dir)
        .with_context(|| format!("opening the log at {}", dir.display()))
        .map_err(Failure::runtime)
}

pub fn dispatch(command: LogCommand) -> Result<(), Failure> {
    match command {
        LogCommand::Topics { location } => {
            let log = open(&location)?;
            for topic in log.topics() {
                let partitions = log.topic_partitions(&topic).unwrap_or(0);
                let mut records = 0;
                for p in 0..partitions {
                    let offsets = log
                        .offsets(&topic, p)
                        .map_err(|e| Failure::runtime(anyhow!(e)))?;
                    records += offsets.stable - offsets.start;
                }
                println!("{topic}\tpartitions={partitions}\trecords={records}");
            }
            Ok(())
        }
        LogCommand::Offsets { group, location } => {
            let log = open(&location)?;
            let offsets = log
                .group_offsets(&group)
                .map_err(|e| Failure::runtime(anyhow!(e)))?;
            for ((topic, partition), offset) in offsets {
                let stable = log
                    .offsets(&topic, partition)
                    .map(|o| o.stable)
                    .unwrap_or(offset);
                println!(
                    "{topic}\t{partition}\toffset={offset}\tlag={}",
                    stable.saturating_sub(offset)
                );
            }
            Ok(())
        }
        LogCommand::Tail {
            topic,
            location,
            from_beginning,
            from_offset,
            format,
            follow,
        } => {
            let dir = log_dir(&location)?;
            tail(&dir, &topic, from_beginning, from_offset, format, follow)
                .map_err(Failure::runtime)
        }
    }
}

fn tail(
    dir: &PathBuf,
    topic: &str,
    from_beginning: bool,
    from_offset: Option<u64>,
    format: Format,
    follow: bool,
) -> anyhow::Result<()> {
    let mut log = Log::open_read_only(dir)
        .with_context(|| format!("opening the log at {}", dir.display()))?;
    let partitions = log
        .topic_partitions(topic)
        .ok_or_else(|| anyhow!("topic {topic} does not exist in {}", dir.display()))?;
    let mut next: Vec<u64> = (0..partitions)
        .map(|p| {
            let offsets = log.offsets(topic, p)?;
            Ok(match from_offset {
                Some(offset) => offset.max(offsets.start),
                None if follow && !from_beginning => offsets.stable,
                None => offsets.start,
            })
        })
        .collect::<Result<_, sluice_log::LogError>>()?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    loop {
        let mut printed = false;
        for partition in 0..partitions {
            loop {
                let records = log.read(topic, partition, next[partition as usize], 1 << 20)?;
                let Some(last) = records.last() else { break };
                next[partition as usize] = last.offset + 1;
                for record in &records {
                    print_record(&mut out, topic, partition, record, format)?;
                }
                printed = true;
            }
        }
        out.flush()?;
        if !follow {
            return Ok(());
        }
        if !printed {
            // A read-only open sees a snapshot of the commits: reopen to see new ones.
            std::thread::sleep(Duration::from_millis(200));
            log = Log::open_read_only(dir)?;
        }
    }
}

fn print_record(
    out: &mut impl Write,
    topic: &str,
    partition: u32,
    record: &StoredRecord,
    format: Format,
) -> std::io::Result<()> {
    match format {
        Format::Raw => {
            if let Some(value) = &record.value {
                out.write_all(value)?;
            }
            out.write_all(b"\n")
        }
        Format::Json => {
            let line = json!({
                "topic": topic,
                "partition": partition,
                "offset": record.offset,
                "timestamp": record.timestamp_ms,
                "key": record.key.as_deref().map(decode),
                "value": record.value.as_deref().map(decode),
            });
            serde_json::to_writer(&mut *out, &line)?;
            out.write_all(b"\n")
        }
    }
}

/// Record bytes as JSON: parsed when they are JSON, else a string.
fn decode(bytes: &[u8]) -> Json {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| Json::String(String::from_utf8_lossy(bytes).into_owned()))
}
