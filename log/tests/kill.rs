//! A real `kill -9`: a child process appends with fsync=always and prints every acknowledged
//! transaction; the parent kills it at a random moment, reopens the log, and finds every
//! acknowledged record intact, in order, and nothing it never wrote.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use bytes::Bytes;
use sluice_core::batch::{PartitionBatch, Record};
use sluice_log::{Log, LogOptions};

const CHILD_DIR: &str = "SLUICE_LOG_KILL_CHILD_DIR";

fn record(value: u64) -> Record {
    Record {
        key: None,
        value: Some(Bytes::from(value.to_string())),
        timestamp_ms: 0,
        headers: Vec::new(),
    }
}

/// The child: appends transactions of three records over two topics until killed.
#[test]
#[ignore = "run by acknowledged_records_survive_kill_9 as its child process"]
fn kill_child_appends_until_killed() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else {
        return;
    };
    let log = Log::open(&dir, LogOptions::default()).unwrap();
    log.create_topic("a", 2).unwrap();
    log.create_topic("b", 1).unwrap();
    let stdout = std::io::stdout();
    for n in 0u64.. {
        let batches = vec![
            PartitionBatch {
                topic: "a".into(),
                partition: (n % 2) as u32,
                records: vec![record(n), record(n)].into(),
            },
            PartitionBatch {
                topic: "b".into(),
                partition: 0,
                records: vec![record(n)].into(),
            },
        ];
        log.append_txn("w", &batches, &n.to_string()).unwrap();
        let mut out = stdout.lock();
        writeln!(out, "acked {n}").unwrap();
        out.flush().unwrap();
    }
}

fn values(log: &Log, topic: &str, partition: u32) -> Vec<u64> {
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        let records = log.read(topic, partition, offset, 1 << 20).unwrap();
        let Some(last) = records.last() else {
            return out;
        };
        offset = last.offset + 1;
        out.extend(records.iter().map(|r| {
            std::str::from_utf8(r.value.as_ref().unwrap())
                .unwrap()
                .parse::<u64>()
                .unwrap()
        }));
    }
}

#[test]
fn acknowledged_records_survive_kill_9() {
    let seed = std::process::id() as u64;
    for round in 0..3u64 {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--ignored",
                "--exact",
                "kill_child_appends_until_killed",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DIR, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let kill_after = 50 + (seed.wrapping_mul(31).wrapping_add(round * 977)) % 400;
        let mut acked = None;
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        while let Some(Ok(line)) = lines.next() {
            if let Some(n) = line.strip_prefix("acked ") {
                acked = Some(n.parse::<u64>().unwrap());
                if acked >= Some(kill_after) {
                    break;
                }
            }
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let acked = acked.expect("the child acknowledged something");

        let log = Log::open(dir.path(), LogOptions::default()).unwrap();
        let checkpoint: u64 = log.checkpoint("w").unwrap().parse().unwrap();
        assert!(
            checkpoint >= acked,
            "round {round}: acknowledged {acked} but the log's checkpoint is {checkpoint}"
        );
        // Every transaction up to the checkpoint is whole; nothing beyond it is visible.
        let b = values(&log, "b", 0);
        assert_eq!(
            b,
            (0..=checkpoint).collect::<Vec<_>>(),
            "round {round}: topic b"
        );
        for partition in 0..2u64 {
            let expected: Vec<u64> = (0..=checkpoint)
                .filter(|n| n % 2 == partition)
                .flat_map(|n| [n, n])
                .collect();
            assert_eq!(
                values(&log, "a", partition as u32),
                expected,
                "round {round}: topic a/{partition}"
            );
        }
    }
}
