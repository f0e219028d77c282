//! Where the registry keeps its records: the compacted, single-partition topic `_schemas` of
//! the log, like Confluent's. Every change is a record; the registry's state is the fold of the
//! topic from its start (see `state.rs`), so a restart replays to exactly what was served.
//!
//! Keys say what a record is about (compaction keeps the latest per key):
//! - `{"keytype":"SCHEMA","subject":S,"version":V}`: a subject version (tombstone = permanently
//!   deleted);
//! - `{"keytype":"CONFIG","subject":S|null}` / `{"keytype":"MODE","subject":S|null}`;
//! - `{"keytype":"NEXT_ID"}`: the next global id, so ids are never reused, even after the
//!   schema that last held one was permanently deleted and compacted away.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use sluice_log::{Log, PartitionBatch, Record};

/// The topic the embedded log stores schemas in.
pub const TOPIC: &str = "_schemas";
/// The log writer that owns the topic.
const WRITER: &str = "_schemas";

/// One stored record: key and value (`None` = tombstone).
pub type Entry = (Bytes, Option<Bytes>);

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StoreError(pub String);

/// Durable storage of registry records. `append` is atomic and durable when it returns.
pub trait SchemaStore: Send + Sync + 'static {
    fn load(&self) -> Result<Vec<Entry>, StoreError>;
    fn append(&self, entries: &[Entry]) -> Result<(), StoreError>;
}

/// The registry's records in the embedded log.
pub struct LogStore {
    log: Arc<Log>,
}

impl LogStore {
    /// The store of `log`; `_schemas` is created with the first registration, so logs of
    /// pipelines that register nothing (JSON encoding) do not carry an empty topic.
    pub fn open(log: Arc<Log>) -> Result<LogStore, StoreError> {
        Ok(LogStore { log })
    }

    /// Reads whatever `_schemas` holds (also for read-only opens of the log).
    pub fn reader(log: Arc<Log>) -> LogStore {
        LogStore { log }
    }
}

impl SchemaStore for LogStore {
    fn load(&self) -> Result<Vec<Entry>, StoreError> {
        let mut entries = Vec::new();
        if self.log.topic_partitions(TOPIC).is_none() {
            return Ok(entries);
        }
        let mut offset = 0;
        loop {
            let records = self
                .log
                .read(TOPIC, 0, offset, 1 << 20)
                .map_err(|e| StoreError(format!("reading {TOPIC}: {e}")))?;
            let Some(last) = records.last() else {
                return Ok(entries);
            };
            offset = last.offset + 1;
            entries.extend(records.into_iter().filter_map(|r| Some((r.key?, r.value))));
        }
    }

    fn append(&self, entries: &[Entry]) -> Result<(), StoreError> {
        if self.log.topic_partitions(TOPIC).is_none() {
            self.log
                .create_compacted_topic(TOPIC, 1)
                .map_err(|e| StoreError(format!("creating topic {TOPIC}: {e}")))?;
        }
        let timestamp_ms = sluice_core::clock::now_us() / 1000;
        let batch = PartitionBatch {
            topic: TOPIC.to_owned(),
            partition: 0,
            records: entries
                .iter()
                .map(|(key, value)| Record {
                    key: Some(key.clone()),
                    value: value.clone(),
                    timestamp_ms,
                    headers: Vec::new(),
                })
                .collect(),
        };
        self.log
            .append_txn(WRITER, &[batch], "")
            .map_err(|e| StoreError(format!("writing {TOPIC}: {e}")))
    }
}

/// Records in memory only: for tests and tools that need no durability.
#[derive(Default)]
pub struct MemoryStore {
    entries: Mutex<Vec<Entry>>,
}

impl SchemaStore for MemoryStore {
    fn load(&self) -> Result<Vec<Entry>, StoreError> {
        Ok(self.entries.lock().expect("not poisoned").clone())
    }

    fn append(&self, entries: &[Entry]) -> Result<(), StoreError> {
        self.entries
            .lock()
            .expect("not poisoned")
            .extend_from_slice(entries);
        Ok(())
    }
}
