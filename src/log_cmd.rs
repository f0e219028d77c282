//! `sluice log …`: reading the log from the command line, also while `sluice run` writes it:
//! the embedded log (read-only opens see what was committed) or, with `-c` and a config whose
//! log is on Kafka, the cluster's topics and groups.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context};
use base64::Engine;
use serde_json::{json, Value as Json};
use sluice_core::event_log::{EventLog, StoredRecord};
use sluice_log::{EmbeddedLog, Log};
use sluice_schema_registry::avro::decode::is_framed;
use sluice_schema_registry::avro::AvroDecoder;
use sluice_schema_registry::registry::store::LogStore;
use sluice_schema_registry::registry::Registry;

use crate::cli::{Format, LogCommand, LogLocation};
use crate::{config, Failure};

/// The config's [log] section, when the location is a config file.
fn section(location: &LogLocation) -> Result<Option<config::LogSection>, Failure> {
    match &location.config {
        Some(path) => Ok(Some(config::load(path).map_err(Failure::config)?.log)),
        None => Ok(None),
    }
}

fn log_dir(location: &LogLocation) -> Result<PathBuf, Failure> {
    match (&location.dir, section(location)?) {
        (Some(dir), _) => Ok(dir.clone()),
        (None, Some(log)) => Ok(log.dir),
        (None, None) => Err(Failure::config(anyhow!(
            "say which log: -c FILE or --dir DIR"
        ))),
    }
}

fn open(location: &LogLocation) -> Result<EmbeddedLog, Failure> {
    crate::backend::open_read_only(&log_dir(location)?).map_err(Failure::runtime)
}

/// Runs `$body` with `$log` bound to the log `$location` names: the log on Kafka when its
/// config says so, else the embedded log, read-only.
macro_rules! on_log {
    ($location:expr, $runtime:expr, |$log:ident| $body:expr) => {{
        let section = section($location)?.filter(|log| log.kind == "kafka");
        match section {
            #[cfg(feature = "kafka")]
            Some(section) => {
                let $log = $runtime.block_on(crate::backend::open_kafka(&section))?;
                $runtime.block_on($body).map_err(Failure::runtime)
            }
            #[cfg(not(feature = "kafka"))]
            Some(_) => Err(Failure::config(anyhow!(
                "this config's log is on Kafka, and this build of sluice has no kafka connector"
            ))),
            None => {
                let $log = open($location)?;
                $runtime.block_on($body).map_err(Failure::runtime)
            }
        }
    }};
}

pub(crate) fn dispatch(command: LogCommand) -> Result<(), Failure> {
    let runtime = crate::backend::command_runtime()?;
    match command {
        LogCommand::Topics { location } => {
            on_log!(&location, runtime, |log| topics(&log))
        }
        LogCommand::Offsets { group, location } => {
            on_log!(&location, runtime, |log| group_offsets(&log, &group))
        }
        LogCommand::Describe { topic, location } => {
            on_log!(&location, runtime, |log| describe(&log, &topic))
        }
        LogCommand::Repair { location } => {
            if let Some(log) = section(&location)?.filter(|log| log.kind == "kafka") {
                return Err(Failure::config(anyhow!(
                    "sluice log repair mends the embedded log's files; this config's log is on \
                     Kafka at {}, whose brokers keep their own",
                    log.brokers.unwrap_or_default()
                )));
            }
            // The embedded log's own: it works on the files, not through the log interface.
            let dir = log_dir(&location)?;
            let reports = Log::repair(&dir, sluice_log::LogOptions::default())
                .with_context(|| format!("repairing the log at {}", dir.display()))
                .map_err(Failure::runtime)?;
            print_repairs(&reports);
            Ok(())
        }
        LogCommand::Tail {
            topic,
            location,
            from_beginning,
            from_offset,
            from_time,
            format,
            follow,
        } => {
            let start = match (from_beginning, from_offset, from_time) {
                (_, Some(offset), _) => Start::Offset(offset),
                (_, _, Some(time)) => Start::Time(parse_time(&time).map_err(Failure::config)?),
                (false, _, _) if follow => Start::End,
                _ => Start::Beginning,
            };
            let dir = log_dir(&location)?;
            on_log!(&location, runtime, |log| tail(
                log, &dir, &topic, start, format, follow
            ))
        }
    }
}

async fn topics<L: EventLog>(log: &L) -> anyhow::Result<()> {
    for topic in log.topics() {
        let partitions = log.partitions(&topic).unwrap_or(0);
        let mut records = 0;
        for p in 0..partitions {
            let offsets = log.offsets(&topic, p).await?;
            records += offsets.stable - offsets.start;
        }
        println!("{topic}\tpartitions={partitions}\trecords={records}");
    }
    Ok(())
}

async fn group_offsets<L: EventLog>(log: &L, group: &str) -> anyhow::Result<()> {
    for ((topic, partition), offset) in log.group_offsets(group).await? {
        let stable = log
            .offsets(&topic, partition)
            .await
            .map_or(offset, |o| o.stable);
        println!(
            "{topic}\t{partition}\toffset={offset}\tlag={}",
            stable.saturating_sub(offset)
        );
    }
    Ok(())
}

async fn describe<L: EventLog>(log: &L, topic: &str) -> anyhow::Result<()> {
    let partitions = log
        .partitions(topic)
        .ok_or_else(|| anyhow!("topic {topic} does not exist"))?;
    println!("topic {topic}: {partitions} partition(s)");
    for partition in 0..partitions {
        let d = log.describe(topic, partition).await?;
        let uncommitted = if d.end > d.stable {
            format!(" ({} uncommitted past it)", d.end - d.stable)
        } else {
            String::new()
        };
        let storage = match d.storage {
            Some((segments, bytes)) => format!(", {segments} segment(s), {bytes} bytes"),
            None => String::new(),
        };
        println!(
            "  partition {partition}: offsets {}..{} committed{uncommitted}{storage}",
            d.start, d.stable
        );
    }
    Ok(())
}

/// What `sluice log repair` did, for the operator.
fn print_repairs(reports: &[sluice_log::RepairReport]) {
    if reports.is_empty() {
        println!("the log is sound: nothing to repair");
        return;
    }
    for report in reports {
        if report.lost.is_empty() && report.salvaged == 0 {
            println!(
                "{}: the commit records from the damage on are gone (the bytes are kept in {}); \
                 the transactions they committed are cut as uncommitted, and each source \
                 resends them if its slot or binlog still holds them",
                report.what,
                report.kept_at.display()
            );
            continue;
        }
        let lost: Vec<String> = report
            .lost
            .iter()
            .map(|r| format!("{}..{} ({} records)", r.start, r.end, r.end - r.start))
            .collect();
        println!(
            "{}: offsets {} lost; {} records after the damage verified and were kept; the \
             damaged bytes are in {}",
            report.what,
            lost.join(", "),
            report.salvaged,
            report.kept_at.display()
        );
    }
    println!(
        "the log opens again. Sinks skip the lost offsets: to bring their targets back in step, \
         take a new snapshot of the tables those topics hold"
    );
}

/// `sluice log tail … | head` closes the pipe early: that is the reader's choice, not an error.
fn quiet_on_closed_pipe(err: std::io::Error) -> anyhow::Result<()> {
    if err.kind() == std::io::ErrorKind::BrokenPipe {
        Ok(())
    } else {
        Err(err.into())
    }
}

/// Where `tail` starts in each partition.
enum Start {
    Beginning,
    End,
    Offset(u64),
    Time(i64),
}

/// RFC 3339 (`2024-01-02T03:04:05.123Z`, `…+02:00`) or milliseconds since the epoch.
fn parse_time(text: &str) -> anyhow::Result<i64> {
    if let Ok(ms) = text.parse::<i64>() {
        return Ok(ms);
    }
    let bad = || {
        anyhow!("--from-time: {text:?} is neither RFC 3339 (2024-01-02T03:04:05Z) nor milliseconds since the epoch")
    };
    let (date, rest) = text.split_once('T').ok_or_else(bad)?;
    let mut parts = date
        .splitn(3, '-')
        .map(|p| p.parse::<i64>().map_err(|_| bad()));
    let (year, month, day) = (
        parts.next().ok_or_else(bad)??,
        parts.next().ok_or_else(bad)??,
        parts.next().ok_or_else(bad)??,
    );
    let (time, offset_seconds) = match rest.find(['Z', 'z', '+', '-']) {
        Some(i) if rest[i..].eq_ignore_ascii_case("z") => (&rest[..i], 0),
        Some(i) => {
            let sign = if rest[i..].starts_with('-') { -1 } else { 1 };
            let (h, m) = rest[i + 1..].split_once(':').ok_or_else(bad)?;
            (
                &rest[..i],
                sign * (h.parse::<i64>().map_err(|_| bad())? * 3600
                    + m.parse::<i64>().map_err(|_| bad())? * 60),
            )
        }
        None => return Err(bad()),
    };
    let (hms, fraction) = time.split_once('.').unwrap_or((time, ""));
    let mut hms = hms
        .splitn(3, ':')
        .map(|p| p.parse::<i64>().map_err(|_| bad()));
    let (h, m, s) = (
        hms.next().ok_or_else(bad)??,
        hms.next().ok_or_else(bad)??,
        hms.next().ok_or_else(bad)??,
    );
    let millis: i64 = format!("{fraction:0<3}")[..3].parse().map_err(|_| bad())?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return Err(bad());
    }
    let days = sluice_core::value::days_from_civil(year, month as u32, day as u32);
    Ok(((days * 86_400 + h * 3600 + m * 60 + s - offset_seconds) * 1000) + millis)
}

/// How `sluice log tail --follow` sees commits made after the log was opened.
trait Follow: EventLog + Clone {
    /// Whether the log shows them by itself.
    const LIVE: bool;
    /// The log again, showing them (`dir`: the embedded log's directory).
    fn again(&self, dir: &std::path::Path) -> anyhow::Result<Self>;
}

impl Follow for EmbeddedLog {
    // A read-only open sees the commits made before it.
    const LIVE: bool = false;
    fn again(&self, dir: &std::path::Path) -> anyhow::Result<EmbeddedLog> {
        crate::backend::open_read_only(dir)
    }
}

#[cfg(feature = "kafka")]
impl Follow for sluice_connectors::kafka::log::KafkaLog {
    const LIVE: bool = true;
    fn again(&self, _: &std::path::Path) -> anyhow::Result<Self> {
        Ok(self.clone())
    }
}

async fn tail<L: Follow>(
    mut log: L,
    dir: &std::path::Path,
    topic: &str,
    start: Start,
    format: Format,
    follow: bool,
) -> anyhow::Result<()> {
    let mut decoder = avro_decoder(&log)?;
    let partitions = log
        .partitions(topic)
        .ok_or_else(|| anyhow!("topic {topic} does not exist"))?;
    let mut next = Vec::with_capacity(partitions as usize);
    for p in 0..partitions {
        let offsets = log.offsets(topic, p).await?;
        next.push(match start {
            Start::Offset(offset) => offset.max(offsets.start),
            Start::End => offsets.stable,
            Start::Beginning => offsets.start,
            Start::Time(ms) => log
                .offset_for_time(topic, p, ms)
                .await?
                .unwrap_or(offsets.stable),
        });
    }
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    loop {
        let mut printed = false;
        for partition in 0..partitions {
            loop {
                let from = next[partition as usize];
                let read = log.read_from(topic, partition, from, 1 << 20).await?;
                next[partition as usize] = read.next;
                if read.records.is_empty() {
                    if read.next > from {
                        // Past offsets without records (Kafka's transaction markers).
                        continue;
                    }
                    break;
                }
                for record in &read.records {
                    let printing =
                        print_record(&mut out, topic, partition, record, format, &mut decoder);
                    if let Err(err) = printing {
                        return quiet_on_closed_pipe(err);
                    }
                }
                printed = true;
            }
        }
        if let Err(err) = out.flush() {
            return quiet_on_closed_pipe(err);
        }
        if !follow {
            return Ok(());
        }
        if !printed {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if !L::LIVE {
                log = log.again(dir)?;
                decoder = avro_decoder(&log)?;
            }
        }
    }
}

/// Reads Avro records with the log's own schema registry.
fn avro_decoder<L: EventLog + Clone>(log: &L) -> anyhow::Result<AvroDecoder> {
    let store =
        LogStore::open(log.clone()).map_err(|e| anyhow!("reading the schema registry: {e}"))?;
    let registry =
        Registry::open(store).map_err(|e| anyhow!("reading the schema registry: {}", e.message))?;
    Ok(AvroDecoder::new(Arc::new(registry)))
}

fn print_record(
    out: &mut impl Write,
    topic: &str,
    partition: u32,
    record: &StoredRecord,
    format: Format,
    decoder: &mut AvroDecoder,
) -> std::io::Result<()> {
    let mut decode = |bytes: &[u8]| -> Json {
        if is_framed(bytes) {
            decoder
                .to_json(bytes)
                .unwrap_or_else(|e| json!({"undecodable_avro": e.to_string()}))
        } else {
            decode(bytes)
        }
    };
    match format {
        Format::Raw => {
            if let Some(value) = &record.value {
                if is_framed(value) {
                    serde_json::to_writer(&mut *out, &decode(value))?;
                } else {
                    out.write_all(value)?;
                }
            }
            out.write_all(b"\n")
        }
        Format::Base64 => {
            let encode = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
            let line = json!({
                "topic": topic,
                "partition": partition,
                "offset": record.offset,
                "timestamp": record.timestamp_ms,
                "key": record.key.as_deref().map(encode),
                "value": record.value.as_deref().map(encode),
            });
            serde_json::to_writer(&mut *out, &line)?;
            out.write_all(b"\n")
        }
        Format::Json => {
            let line = json!({
                "topic": topic,
                "partition": partition,
                "offset": record.offset,
                "timestamp": record.timestamp_ms,
                "key": record.key.as_deref().map(&mut decode),
                "value": record.value.as_deref().map(&mut decode),
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

#[cfg(test)]
mod tests {
    use super::parse_time;

    #[test]
    fn times_parse_as_rfc_3339_or_epoch_milliseconds() {
        assert_eq!(parse_time("1700000000123").unwrap(), 1_700_000_000_123);
        assert_eq!(parse_time("1970-01-01T00:00:01Z").unwrap(), 1000);
        assert_eq!(parse_time("1970-01-01T01:00:00.5+01:00").unwrap(), 500);
        assert_eq!(
            parse_time("2024-01-02T03:04:05Z").unwrap(),
            1_704_164_645_000
        );
        assert!(parse_time("yesterday").is_err());
        assert!(parse_time("2024-13-02T03:04:05Z").is_err());
    }
}
