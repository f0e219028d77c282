//! Opening a log: replaying commit records, scanning partitions, cutting what was never
//! committed, and loading consumer offsets. See `segment` and `partition` for what is scanned
//! how; `Log::open` and `Log::open_read_only` call in here.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::Instant;

use tokio::sync::watch;

use crate::batch::Compression;
use crate::partition::parking::Guarded;
use crate::partition::{self, Opening, Partition};
use crate::{
    commit, groups, sync_dir, Control, ControlSync, Log, LogError, LogOptions, Topic, TopicMeta,
    CLEAN_SHUTDOWN_MARKER,
};

impl Log {
    pub(crate) fn load(
        dir: PathBuf,
        options: LogOptions,
        lock: Option<File>,
    ) -> Result<Log, LogError> {
        let writable = lock.is_some();
        let marker = dir.join(CLEAN_SHUTDOWN_MARKER);
        let opening = match (writable, marker.exists()) {
            (false, _) => Opening::ReadOnly,
            (true, true) => Opening::AfterCleanStop,
            (true, false) => Opening::AfterCrash,
        };
        if writable && opening == Opening::AfterCleanStop {
            // From here until the next clean close, a stop is not clean.
            fs::remove_file(&marker)
                .map_err(|e| LogError::io("remove clean-shutdown marker", &marker, e))?;
            sync_dir(&dir)?;
        }
        let mut control_partition = Partition::open(
            dir.join("control"),
            partition::Settings {
                storage: Arc::clone(&options.storage),
                bytes: u64::MAX,
                max_age: None,
                compacted: false,
                compression: Compression::None,
            },
            opening,
        )?;
        if let Some(damage) = &control_partition.damage {
            // Commit records have no committed end to compare with: a torn last write is
            // expected after a crash, a checksum failure with records after it is not.
            if damage.mid_file {
                return Err(LogError::CommittedDataCorrupt {
                    what: "the control partition (commit records)".into(),
                    segment: control_partition.active_path().to_path_buf(),
                    position: damage.position,
                    offset: damage.offset,
                    committed: control_partition.end_offset(),
                    reason: damage.reason.clone(),
                });
            }
            if writable {
                control_partition.cut_damaged_tail()?;
            }
        }
        control_partition.stable_offset = control_partition.end_offset();
        let mut writers = BTreeMap::new();
        let control_guard = Guarded::new(control_partition);
        let mut offset = control_guard.lock().start_offset();
        loop {
            let records = partition::read(&control_guard, offset, 1 << 20)?;
            let Some(last) = records.last() else { break };
            offset = last.offset + 1;
            commit::replay(&records, &mut writers)?;
        }
        let control_partition = control_guard.into_inner();
        let control_end = control_partition.end_offset();

        let mut committed: BTreeMap<(String, u32), u64> = BTreeMap::new();
        for state in writers.values() {
            for (tp, end) in &state.ends {
                let entry = committed.entry(tp.clone()).or_default();
                *entry = (*entry).max(*end);
            }
        }

        let mut topics = BTreeMap::new();
        let topics_dir = dir.join("topics");
        let entries =
            fs::read_dir(&topics_dir).map_err(|e| LogError::io("list topics", &topics_dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| LogError::io("list topics", &topics_dir, e))?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let meta_path = entry.path().join("topic.json");
            let Ok(meta) = fs::read(&meta_path) else {
                // A topic whose creation never completed holds no committed data.
                continue;
            };
            let meta: TopicMeta = serde_json::from_slice(&meta).map_err(|e| {
                LogError::corrupt(format!("{} is unreadable: {e}", meta_path.display()))
            })?;
            let mut partitions = Vec::new();
            for p in 0..meta.partitions {
                let pdir = partition::partition_dir(&entry.path(), p);
                let mut part = if pdir.is_dir() || !writable {
                    Partition::open(pdir, options.settings(meta.compact), opening)?
                } else {
                    Partition::create(pdir, options.settings(meta.compact))?
                };
                let committed_end = committed.get(&(name.clone(), p)).copied().unwrap_or(0);
                let found = part.end_offset();
                if let Some(damage) = &part.damage {
                    // Below the last commit a bad byte is damage to acknowledged data, not a
                    // torn write: refuse, and change nothing.
                    if found < committed_end {
                        return Err(LogError::CommittedDataCorrupt {
                            what: format!("partition {name}/{p}"),
                            segment: part.active_path().to_path_buf(),
                            position: damage.position,
                            offset: damage.offset,
                            committed: committed_end,
                            reason: damage.reason.clone(),
                        });
                    }
                    if writable {
                        part.cut_damaged_tail()?;
                    }
                }
                if found < committed_end {
                    return Err(LogError::CommittedDataMissing {
                        topic: name,
                        partition: p,
                        found,
                        committed: committed_end,
                    });
                }
                if found > committed_end && writable {
                    tracing::info!(topic = %name, partition = p, from = found, to = committed_end,
                        "recovery: cutting uncommitted records");
                    part.truncate_to(committed_end)?;
                }
                part.stable_offset = committed_end;
                partitions.push(Guarded::new(part));
            }
            topics.insert(
                name,
                Arc::new(Topic {
                    partitions,
                    compact: meta.compact,
                }),
            );
        }

        let mut groups = groups::Groups::new();
        if let Some(topic) = topics.get(groups::TOPIC) {
            let mut offset = 0;
            loop {
                let records = partition::read(&topic.partitions[0], offset, 1 << 20)?;
                let Some(last) = records.last() else { break };
                offset = last.offset + 1;
                groups::fold(&records, &mut groups)?;
            }
        }
        let (commits, _) = watch::channel(0);
        let log = Log {
            dir,
            options,
            writable,
            _lock: lock,
            topics: RwLock::new(topics),
            topics_version: std::sync::atomic::AtomicU64::new(0),
            control: Mutex::new(Control {
                partition: control_partition,
                writers,
            }),
            last_sync: Mutex::new(Instant::now()),
            commits,
            pending: Mutex::new(BTreeMap::new()),
            failed: std::sync::atomic::AtomicBool::new(false),
            control_sync: Mutex::new(ControlSync {
                durable_end: control_end,
                leader: false,
            }),
            control_synced: Condvar::new(),
            groups: Mutex::new(groups),
        };
        if writable {
            log.create_compacted_topic(groups::TOPIC, 1)?;
        }
        Ok(log)
    }
}
