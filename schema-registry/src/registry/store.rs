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

use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::Mutex;
use std::thread::JoinHandle;

use bytes::Bytes;
use sluice_core::batch::{PartitionBatch, Record};
use sluice_core::event_log::EventLog;

/// The topic the log stores schemas in.
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

/// What the store asks of its log thread.
enum Request {
    Load(SyncSender<Result<Vec<Entry>, StoreError>>),
    Append(Vec<Entry>, SyncSender<Result<(), StoreError>>),
}

/// The registry's records in `_schemas` of any [`EventLog`] backend.
///
/// The registry is synchronous (encoders register from their own threads, the HTTP server from
/// the blocking pool) and the log is async, so the store runs the log's calls on a thread of
/// its own with a one-thread runtime: a caller anywhere (inside a runtime or not) waits on a
/// reply, exactly as it waited on file I/O before.
pub struct LogStore {
    requests: Option<SyncSender<Request>>,
    thread: Option<JoinHandle<()>>,
}

impl LogStore {
    /// The store of `log`; `_schemas` is created with the first registration, so logs of
    /// pipelines that register nothing do not carry an empty topic.
    pub fn open<L: EventLog>(log: L) -> Result<LogStore, StoreError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| StoreError(format!("starting the schema store's runtime: {e}")))?;
        let (requests, incoming) = sync_channel::<Request>(1);
        let thread = std::thread::Builder::new()
            .name("schema-store".into())
            .spawn(move || {
                // Before its first registration, this process takes the topic's writer over
                // (where processes share a log, the last to register holds it).
                let mut claimed = false;
                // Ends when the store is dropped (its sender with it).
                for request in incoming {
                    match request {
                        Request::Load(reply) => {
                            let _ = reply.send(runtime.block_on(load(&log)));
                        }
                        Request::Append(entries, reply) => {
                            let appended = runtime.block_on(async {
                                if !claimed {
                                    log.claim(WRITER).await.map_err(|e| {
                                        StoreError(format!("taking over {TOPIC}: {e}"))
                                    })?;
                                    claimed = true;
                                }
                                append(&log, entries).await
                            });
                            let _ = reply.send(appended);
                        }
                    }
                }
            })
            .map_err(|e| StoreError(format!("starting the schema store's thread: {e}")))?;
        Ok(LogStore {
            requests: Some(requests),
            thread: Some(thread),
        })
    }

    fn ask<T>(
        &self,
        request: impl FnOnce(SyncSender<Result<T, StoreError>>) -> Request,
    ) -> Result<T, StoreError> {
        let gone = || StoreError("the schema store's log thread stopped".into());
        let (reply, answer) = sync_channel(1);
        let requests = self.requests.as_ref().ok_or_else(gone)?;
        requests.send(request(reply)).map_err(|_| gone())?;
        answer.recv().map_err(|_| gone())?
    }
}

impl Drop for LogStore {
    fn drop(&mut self) {
        // Closing the channel ends the thread; waiting for it lets the log it holds close
        // cleanly before the process goes on to exit.
        drop(self.requests.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn load<L: EventLog>(log: &L) -> Result<Vec<Entry>, StoreError> {
    let mut entries = Vec::new();
    // Up to the end as it is now (asked, not remembered: other processes may write the topic):
    // a read may come back short (or empty, past offsets without records) before it.
    let end = match log.offsets(TOPIC, 0).await {
        Ok(offsets) => offsets.stable,
        Err(_) if log.partitions(TOPIC).is_none() => return Ok(entries),
        Err(e) => return Err(StoreError(format!("reading {TOPIC}: {e}"))),
    };
    let mut offset = 0;
    while offset < end {
        let read = log
            .read_from(TOPIC, 0, offset, 1 << 20)
            .await
            .map_err(|e| StoreError(format!("reading {TOPIC}: {e}")))?;
        if read.next <= offset {
            // Nothing left for readers (compaction removed the rest).
            break;
        }
        offset = read.next;
        entries.extend(
            read.records
                .into_iter()
                .filter_map(|r| Some((r.key?, r.value))),
        );
    }
    Ok(entries)
}

async fn append<L: EventLog>(log: &L, entries: Vec<Entry>) -> Result<(), StoreError> {
    log.ensure_compacted_topic(TOPIC, 1)
        .await
        .map_err(|e| StoreError(format!("creating topic {TOPIC}: {e}")))?;
    let timestamp_ms = sluice_core::clock::now_us() / 1000;
    let batch = PartitionBatch {
        topic: TOPIC.to_owned(),
        partition: 0,
        records: entries
            .into_iter()
            .map(|(key, value)| Record {
                key: Some(key),
                value,
                timestamp_ms,
                headers: Vec::new(),
            })
            .collect(),
    };
    log.append(WRITER, vec![batch], Some(String::new()))
        .await
        .map_err(|e| StoreError(format!("writing {TOPIC}: {e}")))
}

impl SchemaStore for LogStore {
    fn load(&self) -> Result<Vec<Entry>, StoreError> {
        self.ask(Request::Load)
    }

    fn append(&self, entries: &[Entry]) -> Result<(), StoreError> {
        self.ask(|reply| Request::Append(entries.to_vec(), reply))
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
