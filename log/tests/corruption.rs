//! A byte changed on disk after it was written: below the last commit the log refuses to open
//! and changes nothing; above it the torn tail is cut; `Log::repair` moves the damage aside,
//! keeps what still verifies and says exactly which offsets are lost.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use sluice_core::batch::{PartitionBatch, Record};
use sluice_log::{FsyncPolicy, Log, LogError, LogOptions, LostRange};

/// Committed transactions, each of `RECORDS_PER_TXN` records in a batch of its own.
const TXNS: u64 = 40;
const RECORDS_PER_TXN: u64 = 3;

fn batch(values: &[String]) -> PartitionBatch {
    PartitionBatch {
        topic: "t".into(),
        partition: 0,
        records: values
            .iter()
            .map(|v| Record {
                key: Some(Bytes::copy_from_slice(v.as_bytes())),
                value: Some(Bytes::copy_from_slice(v.as_bytes())),
                timestamp_ms: 1,
                headers: Vec::new(),
            })
            .collect(),
    }
}

fn value(offset: u64) -> String {
    format!("value-{offset:04}-with-some-padding-to-make-a-payload")
}

fn options() -> LogOptions {
    LogOptions {
        fsync: FsyncPolicy::Never,
        ..LogOptions::default()
    }
}

/// (offset, value) of every committed record.
fn read_all(log: &Log) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        let records = log.read("t", 0, offset, 1 << 16).unwrap();
        let Some(last) = records.last() else {
            return out;
        };
        offset = last.offset + 1;
        out.extend(records.iter().map(|r| {
            (
                r.offset,
                String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap(),
            )
        }));
    }
}

/// A log after a crash: `TXNS` committed transactions, then one appended without its commit.
/// Returns the segment, the byte where the committed batches end and the file's length.
fn crashed_log(dir: &Path) -> (PathBuf, u64, u64) {
    let log = Log::open(dir, options()).unwrap();
    log.create_topic("t", 1).unwrap();
    for txn in 0..TXNS {
        let values: Vec<String> = (0..RECORDS_PER_TXN)
            .map(|i| value(txn * RECORDS_PER_TXN + i))
            .collect();
        log.append_txn("w", &[batch(&values)], &txn.to_string())
            .unwrap();
    }
    let segment = dir.join("topics/t/0/00000000000000000000.log");
    let committed_end = std::fs::metadata(&segment).unwrap().len();
    log.append_uncommitted("w", &[batch(&[value(999), value(1000)])])
        .unwrap();
    let len = std::fs::metadata(&segment).unwrap().len();
    drop(log);
    std::fs::remove_file(dir.join(".clean_shutdown")).unwrap();
    (segment, committed_end, len)
}

fn committed_values() -> Vec<(u64, String)> {
    (0..TXNS * RECORDS_PER_TXN).map(|o| (o, value(o))).collect()
}

fn flip(path: &Path, position: u64) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[position as usize] ^= 0x5a;
    std::fs::write(path, bytes).unwrap();
}

/// Every segment and control file's bytes (index files are derived and may be rewritten).
fn data_files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "log") {
                out.insert(path.clone(), std::fs::read(&path).unwrap());
            }
        }
    }
    out
}

/// The committed batch positions of the segment: (start byte, end byte) of each.
fn batch_bounds(segment: &Path, committed_end: u64) -> Vec<(u64, u64)> {
    let bytes = std::fs::read(segment).unwrap();
    let mut bounds = Vec::new();
    let mut pos = 0u64;
    while pos < committed_end {
        let at = pos as usize;
        let len = u32::from_be_bytes(bytes[at + 8..at + 12].try_into().unwrap()) as u64 + 12;
        bounds.push((pos, pos + len));
        pos += len;
    }
    bounds
}

#[test]
fn a_changed_byte_below_the_last_commit_is_refused_and_nothing_on_disk_changes() {
    let template = tempfile::tempdir().unwrap();
    let (_, committed_end, _) = crashed_log(template.path());
    let mut refused = 0;
    // Every byte of the first batches, then every 13th across the committed range.
    let positions = (0..200).chain((200..committed_end).step_by(13));
    for position in positions {
        let dir = tempfile::tempdir().unwrap();
        let (segment, _, _) = crashed_log(dir.path());
        flip(&segment, position);
        let before = data_files(dir.path());
        match Log::open(dir.path(), options()) {
            Err(err @ LogError::CommittedDataCorrupt { .. }) => {
                refused += 1;
                let text = err.to_string();
                assert!(
                    text.contains("partition t/0")
                        && text.contains("Nothing on disk was changed")
                        && text.contains("sluice log repair"),
                    "{text}"
                );
                assert!(
                    data_files(dir.path()) == before,
                    "a refused open changed the log (byte {position})"
                );
            }
            // Bytes no checksum covers (a batch's partition leader epoch) change nothing read.
            Ok(log) => assert_eq!(read_all(&log), committed_values(), "byte {position}"),
            Err(other) => panic!("byte {position}: unexpected error {other}"),
        }
    }
    assert!(refused > 100, "only {refused} flips were refused");
}

#[test]
fn a_changed_byte_above_the_last_commit_is_a_torn_tail_and_is_cut() {
    let template = tempfile::tempdir().unwrap();
    let (_, committed_end, len) = crashed_log(template.path());
    for position in committed_end..len {
        let dir = tempfile::tempdir().unwrap();
        let (segment, _, _) = crashed_log(dir.path());
        flip(&segment, position);
        let log = Log::open(dir.path(), options()).unwrap();
        assert_eq!(read_all(&log), committed_values(), "byte {position}");
        assert_eq!(std::fs::metadata(&segment).unwrap().len(), committed_end);
    }
}

#[test]
fn repair_moves_a_damaged_batch_aside_keeps_the_rest_and_names_the_lost_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let (segment, committed_end, _) = crashed_log(dir.path());
    let bounds = batch_bounds(&segment, committed_end);
    // A byte in the payload of the 11th transaction's batch.
    let (start, end) = bounds[10];
    flip(&segment, (start + end) / 2);
    assert!(matches!(
        Log::open(dir.path(), options()),
        Err(LogError::CommittedDataCorrupt { .. })
    ));

    let reports = Log::repair(dir.path(), options()).unwrap();
    assert_eq!(reports.len(), 1);
    let lost = 10 * RECORDS_PER_TXN..11 * RECORDS_PER_TXN;
    assert_eq!(
        reports[0].lost,
        [LostRange {
            start: lost.start,
            end: lost.end
        }]
    );
    assert_eq!(reports[0].salvaged, (TXNS - 11) * RECORDS_PER_TXN);
    assert!(reports[0].kept_at.exists());

    let log = Log::open(dir.path(), options()).unwrap();
    let expected: Vec<(u64, String)> = committed_values()
        .into_iter()
        .filter(|(offset, _)| !lost.contains(offset))
        .collect();
    assert_eq!(read_all(&log), expected);
    // Offsets are not reused: new records come after the old end.
    log.append_txn("w", &[batch(&["new".to_owned()])], "new")
        .unwrap();
    let all = read_all(&log);
    assert_eq!(
        all.last().unwrap(),
        &(TXNS * RECORDS_PER_TXN, "new".to_owned())
    );
    drop(log);
    let log = Log::open(dir.path(), options()).unwrap();
    assert_eq!(read_all(&log), all, "the repaired log reopens as it was");
    drop(log);
    assert!(Log::repair(dir.path(), options()).unwrap().is_empty());
}

#[test]
fn repair_after_a_damaged_batch_header_loses_up_to_the_committed_end_and_never_reuses_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let (segment, committed_end, _) = crashed_log(dir.path());
    let (start, _) = batch_bounds(&segment, committed_end)[30];
    // The batch's length field: no way to find the next batch.
    flip(&segment, start + 9);
    let reports = Log::repair(dir.path(), options()).unwrap();
    let end = TXNS * RECORDS_PER_TXN;
    assert_eq!(
        reports[0].lost,
        [LostRange {
            start: 30 * RECORDS_PER_TXN,
            end
        }]
    );
    let log = Log::open(dir.path(), options()).unwrap();
    assert_eq!(read_all(&log), committed_values()[..90].to_vec());
    log.append_txn("w", &[batch(&["new".to_owned()])], "new")
        .unwrap();
    assert_eq!(read_all(&log).last().unwrap(), &(end, "new".to_owned()));
}
