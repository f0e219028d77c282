//! I/O that fails on purpose at the crash-relevant spots of an append: before the data fsync,
//! between data and commit record, before the commit fsync. The failed append is not
//! acknowledged, the log takes no more writes, and reopening finds exactly what was committed
//! (plus, at most, the failed transaction whole: its commit record may have reached the page
//! cache before the fsync failed).

use bytes::Bytes;
use sluice_core::batch::{PartitionBatch, Record};
use sluice_log::{failpoint, Log, LogError, LogOptions};

fn batch(values: &[&str]) -> Vec<PartitionBatch> {
    let records = values
        .iter()
        .map(|v| Record {
            key: None,
            value: Some(Bytes::copy_from_slice(v.as_bytes())),
            timestamp_ms: 0,
            headers: Vec::new(),
        })
        .collect();
    vec![PartitionBatch {
        topic: "t".into(),
        partition: 0,
        records,
    }]
}

fn values(log: &Log) -> Vec<String> {
    log.read("t", 0, 0, 1 << 20)
        .unwrap()
        .iter()
        .map(|r| String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap())
        .collect()
}

#[test]
fn a_failing_fsync_or_commit_write_is_not_acknowledged_and_recovery_keeps_what_was() {
    // One test for all points: failpoints are process-wide, so they must not race.
    for point in ["fsync-segment", "before-commit-record", "fsync-control"] {
        let dir = tempfile::tempdir().unwrap();
        {
            let log = Log::open(dir.path(), LogOptions::default()).unwrap();
            log.create_topic("t", 1).unwrap();
            log.append_txn("w", &batch(&["a"]), "1").unwrap();
            failpoint::arm(point, 0);
            let failed = log.append_txn("w", &batch(&["b"]), "2");
            assert!(
                matches!(failed, Err(LogError::Io { .. })),
                "{point}: {failed:?}"
            );
            assert_eq!(
                values(&log),
                ["a"],
                "{point}: the failed transaction is not visible"
            );
            let refused = log.append_txn("w", &batch(&["c"]), "3");
            assert!(
                matches!(refused, Err(LogError::Failed)),
                "{point}: writes after a failure are refused"
            );
            assert!(refused.unwrap_err().to_string().contains("restart"));
        }
        let log = Log::open(dir.path(), LogOptions::default()).unwrap();
        let recovered = values(&log);
        let checkpoint = log.checkpoint("w").unwrap();
        match point {
            // The commit record never got written: the transaction is gone.
            "fsync-segment" | "before-commit-record" => {
                assert_eq!(recovered, ["a"], "{point}");
                assert_eq!(checkpoint, "1");
            }
            // The record reached the page cache; only its fsync failed. Either outcome is
            // whole and consistent with the checkpoint.
            _ => assert!(
                (recovered == ["a"] && checkpoint == "1")
                    || (recovered == ["a", "b"] && checkpoint == "2"),
                "{point}: {recovered:?} at checkpoint {checkpoint}"
            ),
        }
        log.append_txn("w", &batch(&["d"]), "4").unwrap();
        assert_eq!(
            values(&log).last().map(String::as_str),
            Some("d"),
            "{point}: writable again after reopen"
        );
    }

    // Per-topic policies: only topics whose policy syncs touch the (failing) fsync.
    let dir = tempfile::tempdir().unwrap();
    let options = LogOptions {
        fsync: sluice_log::FsyncPolicy::Never,
        topic_fsync: vec![("important.*".into(), sluice_log::FsyncPolicy::Always)],
        ..LogOptions::default()
    };
    let log = Log::open(dir.path(), options).unwrap();
    log.create_topic("t", 1).unwrap();
    log.create_topic("important.orders", 1).unwrap();
    failpoint::arm("fsync-segment", 0);
    log.append_txn("w", &batch(&["not synced"]), "1")
        .expect("topic t never syncs, so the failing fsync is not reached");
    let to_important = vec![PartitionBatch {
        topic: "important.orders".into(),
        partition: 0,
        records: batch(&["x"]).remove(0).records,
    }];
    assert!(
        matches!(
            log.append_txn("w", &to_important, "2"),
            Err(LogError::Io { .. })
        ),
        "important.* syncs"
    );
}
