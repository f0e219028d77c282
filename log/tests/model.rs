//! Model-based test: random sequences of appends (committed and uncommitted), rollbacks, reads,
//! reopens and crashes (reopen without rollback) against a simple in-memory model of what must
//! be visible. Deterministic seeds, so a failure names the seed that reproduces it.

use std::collections::BTreeMap;

use bytes::Bytes;
use sluice_core::batch::{PartitionBatch, Record};
use sluice_log::{FsyncPolicy, Log, LogOptions};

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// What readers must see: committed values per (topic, partition), and the writer's checkpoint.
#[derive(Default)]
struct Model {
    committed: BTreeMap<(String, u32), Vec<String>>,
    pending: BTreeMap<(String, u32), Vec<String>>,
    checkpoint: Option<String>,
}

const TOPICS: [&str; 2] = ["a", "b"];
const PARTITIONS: u32 = 2;

fn options(rng: &mut Rng) -> LogOptions {
    // Tiny segments so that rolls happen all the time.
    let segment_bytes = [200, 1_000, 64 * 1024][rng.below(3) as usize];
    let fsync = [FsyncPolicy::Always, FsyncPolicy::Never][rng.below(2) as usize];
    LogOptions {
        fsync,
        segment_bytes,
        ..LogOptions::default()
    }
}

fn read_all(log: &Log, topic: &str, partition: u32) -> Vec<String> {
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        let records = log
            .read(topic, partition, offset, 1 + offset as usize % 700)
            .unwrap();
        let Some(last) = records.last() else {
            return out;
        };
        assert_eq!(
            records[0].offset, offset,
            "reads start exactly at the asked offset"
        );
        offset = last.offset + 1;
        out.extend(
            records
                .iter()
                .map(|r| String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap()),
        );
    }
}

fn run(seed: u64) {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), options(&mut rng)).unwrap();
    for topic in TOPICS {
        log.create_topic(topic, PARTITIONS).unwrap();
    }
    let mut model = Model::default();
    let mut counter = 0u64;
    for step in 0..300 {
        match rng.below(100) {
            0..=54 => {
                let mut batches = Vec::new();
                let mut appended = Vec::new();
                for _ in 0..1 + rng.below(3) {
                    let topic = TOPICS[rng.below(2) as usize];
                    let partition = rng.below(u64::from(PARTITIONS)) as u32;
                    let values: Vec<String> = (0..1 + rng.below(20))
                        .map(|_| {
                            counter += 1;
                            format!("v{counter}-{}", "x".repeat(rng.below(300) as usize))
                        })
                        .collect();
                    appended.push(((topic.to_owned(), partition), values.clone()));
                    let records = values
                        .iter()
                        .map(|v| Record {
                            key: None,
                            value: Some(Bytes::from(v.clone())),
                            timestamp_ms: 0,
                            headers: Vec::new(),
                        })
                        .collect();
                    batches.push(PartitionBatch {
                        topic: topic.into(),
                        partition,
                        records,
                    });
                }
                if rng.below(4) == 0 {
                    log.append_uncommitted("w", &batches).unwrap();
                    for (tp, values) in appended {
                        model.pending.entry(tp).or_default().extend(values);
                    }
                } else {
                    let checkpoint = format!("c{step}");
                    log.append_txn("w", &batches, &checkpoint).unwrap();
                    for (tp, values) in std::mem::take(&mut model.pending) {
                        model.committed.entry(tp).or_default().extend(values);
                    }
                    for (tp, values) in appended {
                        model.committed.entry(tp).or_default().extend(values);
                    }
                    model.checkpoint = Some(checkpoint);
                }
            }
            55..=64 => {
                log.rollback("w").unwrap();
                model.pending.clear();
            }
            65..=74 => {
                // Clean close and reopen: pending parts are lost like in a crash.
                drop(log);
                log = Log::open(dir.path(), options(&mut rng)).unwrap();
                model.pending.clear();
            }
            75..=79 => {
                // A crash leaving garbage after the last segment's data (and no clean marker).
                drop(log);
                let _ = std::fs::remove_file(dir.path().join(".clean_shutdown"));
                let topic = TOPICS[rng.below(2) as usize];
                let pdir = dir
                    .path()
                    .join("topics")
                    .join(topic)
                    .join(rng.below(u64::from(PARTITIONS)).to_string());
                let mut segments: Vec<_> = std::fs::read_dir(&pdir)
                    .unwrap()
                    .map(|e| e.unwrap().path())
                    .collect();
                segments.sort();
                let last = segments.last().unwrap();
                let garbage: Vec<u8> = (0..rng.below(100)).map(|_| rng.below(256) as u8).collect();
                let mut file = std::fs::OpenOptions::new().append(true).open(last).unwrap();
                std::io::Write::write_all(&mut file, &garbage).unwrap();
                log = Log::open(dir.path(), options(&mut rng)).unwrap();
                model.pending.clear();
            }
            _ => {
                let topic = TOPICS[rng.below(2) as usize];
                let partition = rng.below(u64::from(PARTITIONS)) as u32;
                let expected = model
                    .committed
                    .get(&(topic.to_owned(), partition))
                    .cloned()
                    .unwrap_or_default();
                assert_eq!(
                    read_all(&log, topic, partition),
                    expected,
                    "seed {seed} step {step}: {topic}/{partition}"
                );
            }
        }
        assert_eq!(
            log.checkpoint("w"),
            model.checkpoint,
            "seed {seed} step {step}: checkpoint"
        );
    }
    drop(log);
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    for topic in TOPICS {
        for partition in 0..PARTITIONS {
            let expected = model
                .committed
                .get(&(topic.to_owned(), partition))
                .cloned()
                .unwrap_or_default();
            assert_eq!(
                read_all(&log, topic, partition),
                expected,
                "seed {seed} at the end: {topic}/{partition}"
            );
        }
    }
}

#[test]
fn random_operation_sequences_match_the_model() {
    for seed in 1..=25 {
        run(seed);
    }
}
