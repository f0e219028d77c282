//! Faults injected through the storage trait where a bad disk or a crash strikes: a write torn
//! after some bytes, an fsync that fails. The failed append is not acknowledged, the log takes
//! no more writes, and reopening on a healthy disk finds exactly the acknowledged records.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use bytes::Bytes;
use sluice_core::batch::{PartitionBatch, Record};
use sluice_log::storage::{FileSystem, SegmentFile, Storage};
use sluice_log::{Log, LogError, LogOptions};

/// What goes wrong next.
#[derive(Debug, Default)]
struct Plan {
    /// Tear the next segment write after this many bytes.
    tear_write_after: Option<usize>,
    /// Fail the next fsync.
    fail_sync: bool,
}

#[derive(Debug, Clone, Default)]
struct Faulty {
    plan: Arc<Mutex<Plan>>,
}

#[derive(Debug)]
struct FaultyFile {
    inner: Arc<dyn SegmentFile>,
    plan: Arc<Mutex<Plan>>,
}

impl Storage for Faulty {
    fn open(
        &self,
        path: &Path,
        writable: bool,
        create: bool,
    ) -> std::io::Result<Arc<dyn SegmentFile>> {
        Ok(Arc::new(FaultyFile {
            inner: FileSystem.open(path, writable, create)?,
            plan: Arc::clone(&self.plan),
        }))
    }
    fn remove(&self, path: &Path) -> std::io::Result<()> {
        FileSystem.remove(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        FileSystem.rename(from, to)
    }
    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        FileSystem.sync_dir(dir)
    }
}

impl SegmentFile for FaultyFile {
    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> std::io::Result<()> {
        self.inner.read_exact_at(buf, pos)
    }
    fn write_all_at(&self, buf: &[u8], pos: u64) -> std::io::Result<()> {
        if let Some(keep) = self.plan.lock().unwrap().tear_write_after.take() {
            self.inner.write_all_at(&buf[..keep.min(buf.len())], pos)?;
            return Err(std::io::Error::other("injected: write torn"));
        }
        self.inner.write_all_at(buf, pos)
    }
    fn size(&self) -> std::io::Result<u64> {
        self.inner.size()
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> std::io::Result<()> {
        if std::mem::take(&mut self.plan.lock().unwrap().fail_sync) {
            return Err(std::io::Error::other("injected: fsync failed"));
        }
        self.inner.sync_data()
    }
    fn sync_all(&self) -> std::io::Result<()> {
        self.inner.sync_all()
    }
    fn modified(&self) -> std::io::Result<SystemTime> {
        self.inner.modified()
    }
}

fn batches(topic: &str, value: &str) -> Vec<PartitionBatch> {
    let record = Record {
        key: None,
        value: Some(Bytes::copy_from_slice(value.as_bytes())),
        timestamp_ms: 0,
        headers: Vec::new(),
    };
    vec![
        PartitionBatch {
            topic: topic.into(),
            partition: 0,
            records: vec![record.clone()].into(),
        },
        PartitionBatch {
            topic: topic.into(),
            partition: 1,
            records: vec![record].into(),
        },
    ]
}

fn values(log: &Log, partition: u32) -> Vec<String> {
    log.read("t", partition, 0, 1 << 20)
        .unwrap()
        .iter()
        .map(|r| String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap())
        .collect()
}

#[test]
fn torn_writes_and_failed_fsyncs_lose_nothing_acknowledged() {
    for fault in [
        "tear the second partition's write",
        "tear the first partition's write",
        "fail the data fsync",
    ] {
        // Writes torn at several points of the batch header and records; one failed fsync.
        let keeps: &[usize] = if fault == "fail the data fsync" {
            &[0]
        } else {
            &[0, 1, 12, 30, 61, 70]
        };
        for &keep in keeps {
            let dir = tempfile::tempdir().unwrap();
            let storage = Faulty::default();
            {
                let options = LogOptions {
                    storage: Arc::new(storage.clone()),
                    ..LogOptions::default()
                };
                let log = Log::open(dir.path(), options).unwrap();
                log.create_topic("t", 2).unwrap();
                log.append_txn("w", &batches("t", "a"), "1").unwrap();
                log.append_txn("w", &batches("t", "b"), "2").unwrap();
                let result = match fault {
                    "tear the second partition's write" => {
                        // A transaction whose first part reached partition 0 and whose last
                        // part tears in partition 1.
                        log.append_txn("w", &batches("t", "c"), "2.5").unwrap();
                        let [first, second]: [PartitionBatch; 2] =
                            batches("t", "x").try_into().unwrap();
                        log.append_uncommitted("w", &[first]).unwrap();
                        storage.plan.lock().unwrap().tear_write_after = Some(keep);
                        log.append_txn("w", &[second], "3")
                    }
                    "tear the first partition's write" => {
                        storage.plan.lock().unwrap().tear_write_after = Some(keep);
                        log.append_txn("w", &batches("t", "x"), "3")
                    }
                    _ => {
                        storage.plan.lock().unwrap().fail_sync = true;
                        log.append_txn("w", &batches("t", "x"), "3")
                    }
                };
                assert!(
                    matches!(result, Err(LogError::Io { .. })),
                    "{fault} ({keep}): {result:?}"
                );
                assert!(
                    matches!(
                        log.append_txn("w", &batches("t", "y"), "4"),
                        Err(LogError::Failed)
                    ),
                    "{fault}: poisoned"
                );
            }
            // Reopen on a healthy disk: the failed transaction is gone, the acknowledged ones whole.
            let log = Log::open(dir.path(), LogOptions::default()).unwrap();
            let expected: &[&str] = if fault.starts_with("tear the second") {
                &["a", "b", "c"]
            } else {
                &["a", "b"]
            };
            assert_eq!(values(&log, 0), expected, "{fault} ({keep}) partition 0");
            assert_eq!(values(&log, 1), expected, "{fault} ({keep}) partition 1");
            log.append_txn("w", &batches("t", "z"), "5").unwrap();
            assert_eq!(values(&log, 1).last().map(String::as_str), Some("z"));
        }
    }
}
