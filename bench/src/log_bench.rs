//! Drives the embedded log for dev/bench and prints one JSON object with what it measured; the
//! reference (dd, cat) runs in bench/run.py in the same run.
//!
//! `log-bench append DIR --producers P --records N --size S --batch B --fsync always|never`
//! `log-bench latency DIR --rate R --seconds T --size S`
//! `log-bench read DIR`   (reads every committed record of every topic)

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice_core::batch::{Compression, PartitionBatch, Record};
use sluice_log::{FsyncPolicy, Log, LogOptions};

fn arg(args: &[String], name: &str, default: u64) -> u64 {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name} takes a number"))
        })
        .unwrap_or(default)
}

fn open(dir: &str, fsync: FsyncPolicy) -> Arc<Log> {
    Arc::new(
        Log::open(
            dir,
            LogOptions {
                fsync,
                segment_bytes: 256 * 1024 * 1024,
                // The cases compare the log's own writing and reading with dd and cat of the
                // same bytes; the synthetic payloads would compress to almost nothing.
                compression: Compression::None,
                ..LogOptions::default()
            },
        )
        .expect("open log"),
    )
}

fn record(value: &Bytes) -> Record {
    Record {
        key: None,
        value: Some(value.clone()),
        timestamp_ms: 0,
        headers: Vec::new(),
    }
}

fn payload(size: usize) -> Bytes {
    Bytes::from(
        (0..size)
            .map(|i| b'a' + (i % 26) as u8)
            .collect::<Vec<u8>>(),
    )
}

/// P producers, each its own writer and partition, append N records in all, B per transaction.
fn append(dir: &str, args: &[String]) {
    let producers = arg(args, "--producers", 4);
    let records = arg(args, "--records", 1_000_000);
    let size = arg(args, "--size", 100) as usize;
    let batch = arg(args, "--batch", 1000);
    let fsync = if args.iter().any(|a| a == "never") {
        FsyncPolicy::Never
    } else {
        FsyncPolicy::Always
    };
    let log = open(dir, fsync);
    log.create_topic("bench", producers as u32).unwrap();
    let started = Instant::now();
    let threads: Vec<_> = (0..producers)
        .map(|p| {
            // Each producer its own payload: a shared one would make every clone contend on one refcount.
            let (log, value) = (Arc::clone(&log), payload(size));
            std::thread::spawn(move || {
                let mine = records / producers;
                let mut done = 0;
                // A producer hands the log ready records: what is measured is the log's work.
                let prepared = |n: u64| {
                    let records = (0..n).map(|_| record(&value)).collect();
                    [PartitionBatch {
                        topic: "bench".into(),
                        partition: p as u32,
                        records,
                    }]
                };
                let full = prepared(batch);
                while done < mine {
                    let n = batch.min(mine - done);
                    let partial;
                    let batches = if n == batch {
                        &full
                    } else {
                        partial = prepared(n);
                        &partial
                    };
                    log.append_txn(&format!("producer-{p}"), batches, &done.to_string())
                        .unwrap();
                    done += n;
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let seconds = started.elapsed().as_secs_f64();
    let total = records / producers * producers;
    println!(
        "{}",
        serde_json::json!({"seconds": seconds, "records": total, "bytes": total * size as u64, "records_per_s": total as f64 / seconds})
    );
}

/// One producer at a steady rate with fsync=always; latency from append to acknowledgement.
fn latency(dir: &str, args: &[String]) {
    let rate = arg(args, "--rate", 10_000);
    let seconds = arg(args, "--seconds", 5);
    let size = arg(args, "--size", 100) as usize;
    let log = open(dir, FsyncPolicy::Always);
    log.create_topic("bench", 1).unwrap();
    let value = payload(size);
    // Records arrive one by one at `rate`; whatever arrived while the previous append ran is
    // appended together (group commit), as the pipeline does with a source's batches.
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let started = Instant::now();
    let mut next_arrival = started;
    let mut latencies = Vec::new();
    let end = started + Duration::from_secs(seconds);
    while Instant::now() < end {
        let now = Instant::now();
        if next_arrival > now {
            #[allow(clippy::disallowed_methods)] // a synchronous load generator pacing arrivals
            std::thread::sleep(next_arrival - now);
        }
        let mut arrivals = Vec::new();
        while next_arrival <= Instant::now() {
            arrivals.push(next_arrival);
            next_arrival += interval;
        }
        let records = arrivals.iter().map(|_| record(&value)).collect();
        log.append_txn(
            "latency",
            &[PartitionBatch {
                topic: "bench".into(),
                partition: 0,
                records,
            }],
            "x",
        )
        .unwrap();
        let acked = Instant::now();
        latencies.extend(arrivals.iter().map(|a| (acked - *a).as_secs_f64() * 1000.0));
    }
    latencies.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    println!(
        "{}",
        serde_json::json!({"records": latencies.len(), "p50_ms": pct(0.50), "p99_ms": pct(0.99)})
    );
}

/// Reads every committed record of every topic from the page cache.
fn read(dir: &str) {
    let log = Log::open_read_only(dir).expect("open log");
    let started = Instant::now();
    let (mut records, mut bytes) = (0u64, 0u64);
    for topic in log.topics() {
        for partition in 0..log.topic_partitions(&topic).unwrap_or(0) {
            let mut offset = log.offsets(&topic, partition).unwrap().start;
            loop {
                let batch = log.read(&topic, partition, offset, 4 << 20).unwrap();
                let Some(last) = batch.last() else { break };
                offset = last.offset + 1;
                records += batch.len() as u64;
                bytes += batch
                    .iter()
                    .map(|r| r.value.as_ref().map_or(0, |v| v.len()) as u64)
                    .sum::<u64>();
            }
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({"seconds": seconds, "records": records, "bytes": bytes})
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(command), Some(dir)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: log-bench append|latency|read DIR [options]");
        std::process::exit(2);
    };
    match command.as_str() {
        "append" => append(dir, &args),
        "latency" => latency(dir, &args),
        "read" => read(dir),
        other => {
            eprintln!("unknown command {other}");
            std::process::exit(2);
        }
    }
}
