//! Recovery and visibility of the embedded log, through its public API and the files it writes.

use std::fs::OpenOptions;
use std::io::Write;
use std::sync::Arc;

use bytes::Bytes;
use sluice_core::batch::{PartitionBatch, Record};
use sluice_log::{Log, LogError, LogOptions};

fn record(value: &str) -> Record {
    Record {
        key: Some(Bytes::copy_from_slice(value.as_bytes())),
        value: Some(Bytes::copy_from_slice(value.as_bytes())),
        timestamp_ms: 1,
        headers: Vec::new(),
    }
}

fn batch(topic: &str, partition: u32, values: &[&str]) -> PartitionBatch {
    PartitionBatch {
        topic: topic.into(),
        partition,
        records: values.iter().map(|v| record(v)).collect(),
    }
}

fn values(log: &Log, topic: &str, partition: u32) -> Vec<String> {
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        let records = log.read(topic, partition, offset, 1 << 16).unwrap();
        let Some(last) = records.last() else {
            return out;
        };
        offset = last.offset + 1;
        out.extend(
            records
                .iter()
                .map(|r| String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap()),
        );
    }
}

fn small_segments() -> LogOptions {
    LogOptions {
        segment_bytes: 300,
        ..LogOptions::default()
    }
}

#[test]
fn committed_transactions_survive_reopen_across_many_segments() {
    let dir = tempfile::tempdir().unwrap();
    let expected: Vec<String> = (0..200).map(|i| format!("v{i}")).collect();
    {
        let log = Log::open(dir.path(), small_segments()).unwrap();
        log.create_topic("t", 2).unwrap();
        for (i, value) in expected.iter().enumerate() {
            log.append_txn(
                "w",
                &[batch("t", 0, &[value]), batch("t", 1, &[value])],
                &format!("pos-{i}"),
            )
            .unwrap();
        }
    }
    let log = Log::open(dir.path(), small_segments()).unwrap();
    assert_eq!(log.checkpoint("w").as_deref(), Some("pos-199"));
    assert_eq!(values(&log, "t", 0), expected);
    assert_eq!(values(&log, "t", 1), expected);
    // Reading from the middle starts exactly at the asked offset.
    let from_middle = log.read("t", 0, 137, 1 << 16).unwrap();
    assert_eq!(from_middle[0].offset, 137);
    assert_eq!(from_middle[0].value.as_deref(), Some(&b"v137"[..]));
}

#[test]
fn a_torn_tail_is_cut_and_only_committed_records_remain() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = Log::open(dir.path(), LogOptions::default()).unwrap();
        log.create_topic("t", 1).unwrap();
        log.append_txn("w", &[batch("t", 0, &["a", "b"])], "1")
            .unwrap();
        log.append_txn("w", &[batch("t", 0, &["c"])], "2").unwrap();
    }
    // Garbage after the last batch, as a crash mid-write leaves it.
    let segment = dir.path().join("topics/t/0/00000000000000000000.log");
    let mut file = OpenOptions::new().append(true).open(&segment).unwrap();
    file.write_all(&[
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x10,
    ])
    .unwrap();
    drop(file);
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    assert_eq!(values(&log, "t", 0), ["a", "b", "c"]);
    log.append_txn("w", &[batch("t", 0, &["d"])], "3").unwrap();
    assert_eq!(values(&log, "t", 0), ["a", "b", "c", "d"]);
}

#[test]
fn data_appended_without_its_commit_record_is_invisible_and_cut_on_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let control = dir.path().join("control/00000000000000000000.log");
    let control_len_after_first;
    {
        let log = Log::open(dir.path(), LogOptions::default()).unwrap();
        log.create_topic("a", 1).unwrap();
        log.create_topic("b", 1).unwrap();
        log.append_txn("w", &[batch("a", 0, &["a1"]), batch("b", 0, &["b1"])], "1")
            .unwrap();
        control_len_after_first = std::fs::metadata(&control).unwrap().len();
        log.append_txn("w", &[batch("a", 0, &["a2"]), batch("b", 0, &["b2"])], "2")
            .unwrap();
    }
    // Remove the second commit record: as if the crash came after the data, before the commit.
    OpenOptions::new()
        .write(true)
        .open(&control)
        .unwrap()
        .set_len(control_len_after_first)
        .unwrap();
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    assert_eq!(log.checkpoint("w").as_deref(), Some("1"));
    assert_eq!(values(&log, "a", 0), ["a1"]);
    assert_eq!(values(&log, "b", 0), ["b1"]);
    // The next append reuses the offsets the lost transaction had.
    log.append_txn("w", &[batch("a", 0, &["a3"])], "3").unwrap();
    let records = log.read("a", 0, 1, 1 << 16).unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].offset, 1);
}

#[test]
fn a_second_writer_process_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _log = Log::open(dir.path(), LogOptions::default()).unwrap();
    match Log::open(dir.path(), LogOptions::default()) {
        Err(LogError::Locked(_)) => {}
        other => panic!("expected Locked, got {:?}", other.err()),
    }
    let reader = Log::open_read_only(dir.path()).unwrap();
    assert!(reader.topics().is_empty());
}

#[test]
fn consumer_group_offsets_are_durable_and_merged() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = Log::open(dir.path(), LogOptions::default()).unwrap();
        log.commit_offsets("g", &[("t".into(), 0, 5), ("t".into(), 1, 7)])
            .unwrap();
        log.commit_offsets("g", &[("t".into(), 0, 9)]).unwrap();
    }
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    let offsets = log.group_offsets("g").unwrap();
    assert_eq!(offsets.get(&("t".into(), 0)), Some(&9));
    assert_eq!(offsets.get(&("t".into(), 1)), Some(&7));
    assert!(matches!(
        log.commit_offsets("../x", &[]),
        Err(LogError::InvalidName { .. })
    ));
}

#[test]
fn control_segment_rolls_and_keeps_every_writers_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = Log::open(
            dir.path(),
            LogOptions {
                fsync: sluice_log::FsyncPolicy::Never,
                ..LogOptions::default()
            },
        )
        .unwrap();
        log.create_topic("t", 1).unwrap();
        log.append_txn("quiet", &[batch("t", 0, &["q"])], "quiet-pos")
            .unwrap();
        // Each commit record is ~100 bytes: enough of them roll the 8 MiB control segment.
        let big_checkpoint = "x".repeat(4000);
        for _ in 0..2500 {
            log.append_txn("busy", &[], &big_checkpoint).unwrap();
        }
    }
    let segments = std::fs::read_dir(dir.path().join("control"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "log")
        })
        .count();
    assert_eq!(segments, 1, "old control segments are deleted after a roll");
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    assert_eq!(log.checkpoint("quiet").as_deref(), Some("quiet-pos"));
    assert_eq!(values(&log, "t", 0), ["q"]);
}

#[test]
fn a_large_transaction_appended_in_parts_appears_at_once_on_commit() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    log.create_topic("t", 1).unwrap();
    log.append_txn("w", &[batch("t", 0, &["before"])], "0")
        .unwrap();
    // 3 MiB of records: several Kafka batches.
    let big = "x".repeat(1000);
    let part: Vec<&str> = (0..1500).map(|_| big.as_str()).collect();
    log.append_uncommitted("w", &[batch("t", 0, &part)])
        .unwrap();
    log.append_uncommitted("w", &[batch("t", 0, &part)])
        .unwrap();
    assert_eq!(values(&log, "t", 0), ["before"], "parts stay invisible");
    assert_eq!(log.checkpoint("w").as_deref(), Some("0"));
    log.append_txn("w", &[batch("t", 0, &["last"])], "1")
        .unwrap();
    let all = values(&log, "t", 0);
    assert_eq!(all.len(), 1 + 3000 + 1);
    assert_eq!(all.last().map(String::as_str), Some("last"));
    drop(log);
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    assert_eq!(
        values(&log, "t", 0).len(),
        3002,
        "committed parts survive reopen"
    );
}

#[test]
fn rolled_back_and_crashed_parts_are_discarded() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = Log::open(dir.path(), LogOptions::default()).unwrap();
        log.create_topic("t", 1).unwrap();
        log.append_txn("w", &[batch("t", 0, &["a"])], "1").unwrap();
        log.append_uncommitted("w", &[batch("t", 0, &["partial-1", "partial-2"])])
            .unwrap();
        log.rollback("w").unwrap();
        log.append_txn("w", &[batch("t", 0, &["b"])], "2").unwrap();
        assert_eq!(values(&log, "t", 0), ["a", "b"]);
        // A part left behind by a crash (no rollback, no commit).
        log.append_uncommitted("w", &[batch("t", 0, &["orphan"])])
            .unwrap();
    }
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    assert_eq!(values(&log, "t", 0), ["a", "b"]);
    log.append_txn("w", &[batch("t", 0, &["c"])], "3").unwrap();
    let records = log.read("t", 0, 0, 1 << 20).unwrap();
    let offsets: Vec<u64> = records.iter().map(|r| r.offset).collect();
    assert_eq!(
        offsets,
        [0, 1, 2],
        "offsets stay contiguous after discarding"
    );
}

/// Writes two committed transactions, then a third whose commit never happened (its data was
/// being written when the machine stopped); returns the segment file and the byte range the
/// third one occupies.
fn log_with_unfinished_third_txn(dir: &std::path::Path) -> (std::path::PathBuf, u64, u64) {
    let log = Log::open(dir, LogOptions::default()).unwrap();
    log.create_topic("t", 1).unwrap();
    log.append_txn("w", &[batch("t", 0, &["a1", "a2"])], "1")
        .unwrap();
    log.append_txn("w", &[batch("t", 0, &["b1"])], "2").unwrap();
    let segment = dir.join("topics/t/0/00000000000000000000.log");
    let start = std::fs::metadata(&segment).unwrap().len();
    log.append_uncommitted("w", &[batch("t", 0, &["c1", "c2", "c3"])])
        .unwrap();
    let end = std::fs::metadata(&segment).unwrap().len();
    drop(log);
    // It was a crash, not a clean close: no marker.
    std::fs::remove_file(dir.join(".clean_shutdown")).unwrap();
    (segment, start, end)
}

#[test]
fn a_torn_write_at_every_byte_of_the_last_batch_leaves_exactly_the_committed_records() {
    let template = tempfile::tempdir().unwrap();
    let (_, start, end) = log_with_unfinished_third_txn(template.path());
    for cut in start..=end {
        let dir = tempfile::tempdir().unwrap();
        let (segment, _, _) = log_with_unfinished_third_txn(dir.path());
        OpenOptions::new()
            .write(true)
            .open(&segment)
            .unwrap()
            .set_len(cut)
            .unwrap();
        let log = Log::open(dir.path(), LogOptions::default()).unwrap();
        assert_eq!(
            values(&log, "t", 0),
            ["a1", "a2", "b1"],
            "cut at byte {cut}"
        );
        assert_eq!(log.checkpoint("w").as_deref(), Some("2"));
        log.append_txn("w", &[batch("t", 0, &["d"])], "3").unwrap();
        assert_eq!(
            values(&log, "t", 0),
            ["a1", "a2", "b1", "d"],
            "appends continue after a cut at {cut}"
        );
    }
}

#[test]
fn a_zeroed_tail_is_cut_without_losing_committed_records() {
    let dir = tempfile::tempdir().unwrap();
    let (segment, start, end) = log_with_unfinished_third_txn(dir.path());
    // A crash can leave the file longer than what was written, filled with zeros.
    let mut file = OpenOptions::new().write(true).open(&segment).unwrap();
    std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(start)).unwrap();
    file.write_all(&vec![0u8; (end - start + 4096) as usize])
        .unwrap();
    drop(file);
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    assert_eq!(values(&log, "t", 0), ["a1", "a2", "b1"]);
    assert_eq!(
        std::fs::metadata(&segment).unwrap().len(),
        start,
        "the tail is truncated away"
    );
}

#[test]
fn a_torn_commit_record_loses_only_its_own_unacknowledged_transaction() {
    let template = tempfile::tempdir().unwrap();
    let control = |dir: &std::path::Path| dir.join("control/00000000000000000000.log");
    let build = |dir: &std::path::Path| {
        let log = Log::open(dir, LogOptions::default()).unwrap();
        log.create_topic("t", 1).unwrap();
        log.append_txn("w", &[batch("t", 0, &["a"])], "1").unwrap();
        let before = std::fs::metadata(control(dir)).unwrap().len();
        log.append_txn("w", &[batch("t", 0, &["b"])], "2").unwrap();
        let after = std::fs::metadata(control(dir)).unwrap().len();
        (before, after)
    };
    let (before, after) = build(template.path());
    for cut in before..after {
        let dir = tempfile::tempdir().unwrap();
        build(dir.path());
        OpenOptions::new()
            .write(true)
            .open(control(dir.path()))
            .unwrap()
            .set_len(cut)
            .unwrap();
        let log = Log::open(dir.path(), LogOptions::default()).unwrap();
        assert_eq!(
            values(&log, "t", 0),
            ["a"],
            "commit record cut at byte {cut}"
        );
        assert_eq!(log.checkpoint("w").as_deref(), Some("1"));
    }
}

#[test]
fn a_missing_committed_segment_is_reported_not_silently_skipped() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = Log::open(dir.path(), LogOptions::default()).unwrap();
        log.create_topic("t", 1).unwrap();
        log.append_txn("w", &[batch("t", 0, &["a", "b"])], "1")
            .unwrap();
    }
    OpenOptions::new()
        .write(true)
        .open(dir.path().join("topics/t/0/00000000000000000000.log"))
        .unwrap()
        .set_len(0)
        .unwrap();
    match Log::open(dir.path(), LogOptions::default()) {
        Err(err @ LogError::CommittedDataMissing { .. }) => {
            assert!(
                err.to_string().contains("acknowledged data is missing"),
                "{err}"
            );
        }
        other => panic!("expected CommittedDataMissing, got {:?}", other.err()),
    }
}

#[test]
fn time_lookups_find_the_first_batch_at_or_after_a_timestamp() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    log.create_topic("t", 1).unwrap();
    for (i, ts) in [1_000i64, 2_000, 3_000].into_iter().enumerate() {
        let record = Record {
            timestamp_ms: ts,
            ..record(&format!("v{i}"))
        };
        log.append_txn(
            "w",
            &[PartitionBatch {
                topic: "t".into(),
                partition: 0,
                records: vec![record].into(),
            }],
            "c",
        )
        .unwrap();
    }
    assert_eq!(log.offset_for_time("t", 0, 0).unwrap(), Some(0));
    assert_eq!(log.offset_for_time("t", 0, 1_500).unwrap(), Some(1));
    assert_eq!(log.offset_for_time("t", 0, 3_000).unwrap(), Some(2));
    assert_eq!(log.offset_for_time("t", 0, 3_001).unwrap(), None);
    let described = log.describe("t", 0).unwrap();
    assert_eq!(
        (
            described.start,
            described.stable,
            described.end,
            described.segments
        ),
        (0, 3, 3, 1)
    );
    log.append_uncommitted("w", &[batch("t", 0, &["pending"])])
        .unwrap();
    assert_eq!(
        log.describe("t", 0).unwrap().end,
        4,
        "uncommitted records show as past the stable offset"
    );
}

#[test]
fn retention_deletes_only_old_committed_segments_and_reads_before_them_say_so() {
    let dir = tempfile::tempdir().unwrap();
    let options = |retention| LogOptions {
        segment_bytes: 300,
        retention,
        ..LogOptions::default()
    };
    let by_size = sluice_log::Retention {
        max_age: None,
        max_bytes: Some(1_000),
    };
    let log = Log::open(dir.path(), options(by_size)).unwrap();
    log.create_topic("t", 1).unwrap();
    for i in 0..60 {
        log.append_txn(
            "w",
            &[batch("t", 0, &[&format!("value-{i:03}")])],
            &i.to_string(),
        )
        .unwrap();
    }
    // A transaction being appended holds its segments back from retention.
    log.append_uncommitted("w", &[batch("t", 0, &["pending"])])
        .unwrap();
    let before = log.describe("t", 0).unwrap();
    let deleted = log.enforce_retention().unwrap();
    let after = log.describe("t", 0).unwrap();
    assert!(deleted > 0 && after.segments < before.segments);
    assert!(after.bytes <= 1_000 + 300, "{after:?}");
    assert!(after.start > 0);
    assert_eq!(after.stable, 60, "nothing committed recently is touched");
    match log.read("t", 0, 0, 1 << 16) {
        Err(LogError::OffsetOutOfRange { start, .. }) => assert_eq!(start, after.start),
        other => panic!("expected OffsetOutOfRange, got {other:?}"),
    }
    let last = log.read("t", 0, 59, 1 << 16).unwrap();
    assert_eq!(last[0].value.as_deref(), Some(&b"value-059"[..]));
    log.append_txn("w", &[], "60").unwrap();
    drop(log);
    // Reopened, the log starts where retention left it; time-based retention takes the rest.
    let by_age = sluice_log::Retention {
        max_age: Some(std::time::Duration::ZERO),
        max_bytes: None,
    };
    let log = Log::open(dir.path(), options(by_age)).unwrap();
    assert_eq!(log.offsets("t", 0).unwrap().start, after.start);
    #[allow(clippy::disallowed_methods)] // the condition is the clock: records must age
    std::thread::sleep(std::time::Duration::from_millis(10));
    log.enforce_retention().unwrap();
    assert_eq!(
        log.describe("t", 0).unwrap().segments,
        1,
        "all but the active segment expire"
    );
}

#[test]
fn concurrent_writers_share_commits_and_each_keeps_its_own() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = std::sync::Arc::new(Log::open(dir.path(), LogOptions::default()).unwrap());
        log.create_topic("t", 4).unwrap();
        let threads: Vec<_> = (0..4u32)
            .map(|p| {
                let log = Arc::clone(&log);
                std::thread::spawn(move || {
                    for i in 0..200 {
                        let value = format!("{p}-{i}");
                        log.append_txn(
                            &format!("w{p}"),
                            &[batch("t", p, &[&value])],
                            &i.to_string(),
                        )
                        .unwrap();
                        // Acknowledged means visible.
                        assert_eq!(log.offsets("t", p).unwrap().stable, i + 1);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
    }
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    for p in 0..4u32 {
        assert_eq!(log.checkpoint(&format!("w{p}")).as_deref(), Some("199"));
        let expected: Vec<String> = (0..200).map(|i| format!("{p}-{i}")).collect();
        assert_eq!(values(&log, "t", p), expected);
    }
}

#[test]
fn index_files_mirror_kafkas_layout_and_are_rebuilt_when_damaged() {
    let dir = tempfile::tempdir().unwrap();
    let pdir = dir.path().join("topics/t/0");
    {
        let log = Log::open(dir.path(), small_segments()).unwrap();
        log.create_topic("t", 1).unwrap();
        for i in 0..50 {
            let record = Record {
                timestamp_ms: 1_000 + i,
                ..record(&format!("v{i}"))
            };
            log.append_txn(
                "w",
                &[PartitionBatch {
                    topic: "t".into(),
                    partition: 0,
                    records: vec![record].into(),
                }],
                "c",
            )
            .unwrap();
        }
    }
    let mut names: Vec<String> = std::fs::read_dir(&pdir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert!(
        names.contains(&"00000000000000000000.index".to_owned()),
        "{names:?}"
    );
    assert!(
        names.contains(&"00000000000000000000.timeindex".to_owned()),
        "{names:?}"
    );
    let index = std::fs::read(pdir.join("00000000000000000000.index")).unwrap();
    assert_eq!(index.len() % 8, 0);
    assert_eq!(
        &index[..8],
        &[0, 0, 0, 0, 0, 0, 0, 0],
        "first entry: relative offset 0 at position 0"
    );
    let time_index = std::fs::read(pdir.join("00000000000000000000.timeindex")).unwrap();
    assert_eq!(time_index.len() % 12, 0);
    assert_eq!(
        i64::from_be_bytes(time_index[..8].try_into().unwrap()),
        1_000
    );
    // Damage and delete index files: the log rebuilds them and reads as before.
    std::fs::write(pdir.join("00000000000000000000.index"), b"garbage!").unwrap();
    let second = names
        .iter()
        .find(|n| n.ends_with(".timeindex") && !n.starts_with("00000000000000000000"))
        .unwrap();
    std::fs::remove_file(pdir.join(second)).unwrap();
    let log = Log::open(dir.path(), small_segments()).unwrap();
    assert_eq!(
        std::fs::read(pdir.join("00000000000000000000.index")).unwrap(),
        index
    );
    assert!(pdir.join(second).exists());
    assert_eq!(values(&log, "t", 0).len(), 50);
    assert_eq!(log.offset_for_time("t", 0, 1_030).unwrap(), Some(30));
}

#[test]
fn segments_roll_by_age_as_well_as_size() {
    let dir = tempfile::tempdir().unwrap();
    let options = LogOptions {
        // Long enough that two fsynced appends on a loaded CI box stay inside one segment
        // (20 ms was not: CI saw a second segment before the sleep).
        segment_max_age: Some(std::time::Duration::from_millis(1_500)),
        ..LogOptions::default()
    };
    let log = Log::open(dir.path(), options).unwrap();
    log.create_topic("t", 1).unwrap();
    log.append_txn("w", &[batch("t", 0, &["a"])], "1").unwrap();
    log.append_txn("w", &[batch("t", 0, &["b"])], "2").unwrap();
    assert_eq!(log.describe("t", 0).unwrap().segments, 1);
    #[allow(clippy::disallowed_methods)] // the condition is the clock: the segment must age
    std::thread::sleep(std::time::Duration::from_millis(1_600));
    log.append_txn("w", &[batch("t", 0, &["c"])], "3").unwrap();
    assert_eq!(log.describe("t", 0).unwrap().segments, 2);
    assert_eq!(values(&log, "t", 0), ["a", "b", "c"]);
}

#[test]
fn a_clean_close_leaves_a_marker_that_the_next_open_consumes() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join(".clean_shutdown");
    {
        let log = Log::open(dir.path(), LogOptions::default()).unwrap();
        log.create_topic("t", 1).unwrap();
        log.append_txn("w", &[batch("t", 0, &["a"])], "1").unwrap();
    }
    assert!(marker.exists(), "clean close");
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    assert!(!marker.exists(), "an open log is not cleanly closed");
    assert_eq!(values(&log, "t", 0), ["a"]);
    log.append_txn("w", &[batch("t", 0, &["b"])], "2").unwrap();
    // A crash: no drop, no marker; the garbage tail is found by the CRC scan.
    std::mem::forget(log);
    let segment = dir.path().join("topics/t/0/00000000000000000000.log");
    let mut file = OpenOptions::new().append(true).open(&segment).unwrap();
    file.write_all(&[7u8; 100]).unwrap();
    drop(file);
    // The lock of the forgotten log is still held by this process: release it by reopening
    // from a fresh file handle is not possible, so copy the directory instead.
    let copy = tempfile::tempdir().unwrap();
    for entry in walk(dir.path()) {
        let target = copy.path().join(entry.strip_prefix(dir.path()).unwrap());
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        if entry.file_name().unwrap() != ".lock" {
            std::fs::copy(&entry, &target).unwrap();
        }
    }
    assert!(!copy.path().join(".clean_shutdown").exists());
    let log = Log::open(copy.path(), LogOptions::default()).unwrap();
    assert_eq!(values(&log, "t", 0), ["a", "b"]);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

#[test]
fn recovering_arbitrary_segment_bytes_never_panics() {
    // The stable stand-in for the fuzz target: a valid segment, mutated and cut at random.
    let dir = tempfile::tempdir().unwrap();
    {
        let log = Log::open(dir.path(), LogOptions::default()).unwrap();
        log.create_topic("t", 1).unwrap();
        for i in 0..5 {
            log.append_txn("w", &[batch("t", 0, &[&format!("v{i}"), "x"])], "c")
                .unwrap();
        }
    }
    let valid = std::fs::read(dir.path().join("topics/t/0/00000000000000000000.log")).unwrap();
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..300 {
        let mut bytes = valid.clone();
        for _ in 0..next() % 6 {
            let at = (next() as usize) % bytes.len();
            bytes[at] = next() as u8;
        }
        bytes.truncate((next() as usize) % (valid.len() + 1));
        sluice_log::fuzzing::decode_batches(&bytes);
        sluice_log::fuzzing::recover_segment(&bytes);
    }
    assert_eq!(sluice_log::fuzzing::decode_batches(&valid), 5);
}

#[test]
fn creating_a_topic_changes_the_topics_version_and_reopening_keeps_the_topics() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    let before = log.topics_version();
    log.create_topic("a", 1).unwrap();
    let after_a = log.topics_version();
    assert_ne!(after_a, before, "a new topic must change the version");
    // Asking for an existing topic creates nothing.
    log.create_topic("a", 1).unwrap();
    assert_eq!(log.topics_version(), after_a);
    log.create_topic("b", 1).unwrap();
    assert_ne!(log.topics_version(), after_a);
    drop(log);
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    assert_eq!(log.topics(), vec!["a".to_owned(), "b".to_owned()]);
}

#[test]
fn compressed_batches_are_read_back_in_bounded_pieces() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    log.create_topic("t", 1).unwrap();
    // 20,000 records of 1 KiB that compress about 50×: 20 MiB of records in well under 1 MiB.
    let padding = "change event envelope ".repeat(46);
    let expected: Vec<String> = (0..20_000).map(|i| format!("{i:06} {padding}")).collect();
    for chunk in expected.chunks(5_000) {
        let values: Vec<&str> = chunk.iter().map(String::as_str).collect();
        log.append_txn("w", &[batch("t", 0, &values)], "{}")
            .unwrap();
    }
    let on_disk: u64 = std::fs::read_dir(dir.path().join("topics/t/0"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(on_disk < 2 << 20, "{on_disk} bytes on disk");
    // A read of at most 1 MiB returns about 1 MiB of records (at least one batch), not all of
    // what 1 MiB of compressed batches holds.
    let first = log.read("t", 0, 0, 1 << 20).unwrap();
    let bytes: usize = first.iter().map(|r| r.value.as_ref().unwrap().len()).sum();
    assert!(
        !first.is_empty() && bytes <= 3 << 20,
        "{} records, {bytes} bytes",
        first.len()
    );
    assert_eq!(values(&log, "t", 0), expected);
}

#[test]
fn a_record_too_large_for_any_batch_is_refused_whole_and_the_log_goes_on() {
    use sluice_core::batch::{BatchBuilder, Compression, Records};
    let dir = tempfile::tempdir().unwrap();
    let options = LogOptions {
        compression: Compression::None,
        ..LogOptions::default()
    };
    let log = Log::open(dir.path(), options).unwrap();
    log.create_topic("t", 1).unwrap();
    let huge = vec![b'x'; 257 << 20];
    // As records the log batches itself, and as a batch a writer prepared.
    let mut builder = BatchBuilder::new(Compression::None, 0);
    builder.push(None, Some(&huge), 1, &[]);
    let as_records = PartitionBatch {
        topic: "t".into(),
        partition: 0,
        records: vec![Record {
            key: None,
            value: Some(Bytes::from(huge.clone())),
            timestamp_ms: 1,
            headers: Vec::new(),
        }]
        .into(),
    };
    let prepared = PartitionBatch {
        topic: "t".into(),
        partition: 0,
        records: Records::Prepared(builder.finish(None)),
    };
    for batch in [as_records, prepared] {
        let err = log.append_txn("w", &[batch], "{}").unwrap_err();
        assert!(matches!(err, LogError::RecordTooLarge { .. }), "{err}");
    }
    log.append_txn("w", &[batch("t", 0, &["after"])], "{}")
        .unwrap();
    assert_eq!(values(&log, "t", 0), ["after"]);
}
