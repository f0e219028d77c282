//! Key-based compaction: latest value per key in closed segments, offsets unchanged, tombstones
//! kept for their retention, plain topics untouched, everything intact across reopen.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use sluice_core::batch::{PartitionBatch, Record, StoredRecord};
use sluice_log::{Log, LogOptions};

fn keyed(key: &str, value: Option<&str>) -> Record {
    Record {
        key: Some(Bytes::copy_from_slice(key.as_bytes())),
        value: value.map(|v| Bytes::copy_from_slice(v.as_bytes())),
        timestamp_ms: 0,
        headers: Vec::new(),
    }
}

fn all(log: &Log, topic: &str) -> Vec<StoredRecord> {
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        let records = log.read(topic, 0, offset, 1 << 20).unwrap();
        let Some(last) = records.last() else {
            return out;
        };
        offset = last.offset + 1;
        out.extend(records);
    }
}

fn text(bytes: &Option<Bytes>) -> Option<String> {
    bytes
        .as_ref()
        .map(|b| String::from_utf8(b.to_vec()).unwrap())
}

/// The base offset of the active (last) segment of `topic`/0.
fn active_base(dir: &std::path::Path, topic: &str) -> u64 {
    std::fs::read_dir(dir.join("topics").join(topic).join("0"))
        .unwrap()
        .filter_map(|e| {
            e.unwrap()
                .file_name()
                .into_string()
                .ok()?
                .strip_suffix(".log")?
                .parse::<u64>()
                .ok()
        })
        .max()
        .unwrap()
}

#[test]
fn compaction_keeps_the_latest_value_per_key_with_offsets_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let options = || LogOptions {
        segment_bytes: 400,
        ..LogOptions::default()
    };
    let log = Log::open(dir.path(), options()).unwrap();
    log.create_compacted_topic("c", 1).unwrap();
    log.create_topic("plain", 1).unwrap();
    let mut last_value: BTreeMap<String, Option<String>> = BTreeMap::new();
    for i in 0..200 {
        let key = format!("k{}", i % 5);
        // k4 is deleted halfway and never written again.
        let value = if key == "k4" && i >= 100 {
            if last_value.get("k4") == Some(&None) {
                continue;
            }
            None
        } else {
            Some(format!("v{i}"))
        };
        last_value.insert(key.clone(), value.clone());
        let record = keyed(&key, value.as_deref());
        let batches = [
            PartitionBatch {
                topic: "c".into(),
                partition: 0,
                records: vec![record.clone()].into(),
            },
            PartitionBatch {
                topic: "plain".into(),
                partition: 0,
                records: vec![record].into(),
            },
        ];
        log.append_txn("w", &batches, &i.to_string()).unwrap();
    }
    let before = all(&log, "c");
    let latest: BTreeMap<Bytes, u64> = before
        .iter()
        .map(|r| (r.key.clone().unwrap(), r.offset))
        .collect();

    let stats = log.compact(Duration::from_secs(3600)).unwrap();
    assert!(
        stats.records_removed > 0 && stats.segments_rewritten > 0,
        "{stats:?}"
    );
    let after = all(&log, "c");
    let active = active_base(dir.path(), "c");
    let expected: Vec<u64> = before
        .iter()
        .filter(|r| latest[r.key.as_ref().unwrap()] == r.offset || r.offset >= active)
        .map(|r| r.offset)
        .collect();
    assert_eq!(
        after.iter().map(|r| r.offset).collect::<Vec<_>>(),
        expected,
        "offsets kept, older versions gone"
    );
    // The last value of each key reads as written, the young tombstone included.
    let folded: BTreeMap<String, Option<String>> = after
        .iter()
        .map(|r| (text(&Some(r.key.clone().unwrap())).unwrap(), text(&r.value)))
        .collect();
    assert_eq!(folded, last_value);
    assert_eq!(
        all(&log, "plain").len(),
        before.len(),
        "plain topics are not compacted"
    );

    // Reading from an offset inside a gap gives the next record that is left.
    let gap = (0..before.len() as u64)
        .find(|o| !expected.contains(o))
        .unwrap();
    let next = log.read("c", 0, gap, 1 << 16).unwrap();
    assert!(next[0].offset > gap);

    // Old tombstones go too, once their retention has passed (if they sit in a closed segment).
    log.compact(Duration::ZERO).unwrap();
    let k4 = all(&log, "c")
        .into_iter()
        .filter(|r| r.key.as_deref() == Some(&b"k4"[..]))
        .count();
    let tombstone_offset = latest[&Bytes::from_static(b"k4")];
    assert_eq!(
        k4,
        usize::from(tombstone_offset >= active_base(dir.path(), "c"))
    );

    // Gaps survive a reopen; appends and compaction go on.
    let now = all(&log, "c")
        .iter()
        .map(|r| (r.offset, text(&r.value)))
        .collect::<Vec<_>>();
    drop(log);
    let log = Log::open(dir.path(), options()).unwrap();
    assert_eq!(
        all(&log, "c")
            .iter()
            .map(|r| (r.offset, text(&r.value)))
            .collect::<Vec<_>>(),
        now
    );
    log.append_txn(
        "w",
        &[PartitionBatch {
            topic: "c".into(),
            partition: 0,
            records: vec![keyed("k0", Some("new"))].into(),
        }],
        "x",
    )
    .unwrap();
    log.compact(Duration::from_secs(3600)).unwrap();
    let k0: Vec<Option<String>> = all(&log, "c")
        .iter()
        .filter(|r| r.key.as_deref() == Some(&b"k0"[..]))
        .map(|r| text(&r.value))
        .collect();
    assert_eq!(k0.last().unwrap().as_deref(), Some("new"));
    assert!(!std::fs::read_dir(dir.path().join("topics/c/0"))
        .unwrap()
        .any(|e| e.unwrap().path().to_string_lossy().ends_with(".cleaned")));
}
