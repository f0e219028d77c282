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
use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice_core::batch::{PartitionBatch, Record};
use sluice_core::event_log::{EventLog, LogError};

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

    /// Makes this process the store's writer, where processes share it (a log on Kafka), which
    /// stops any other from writing until it claims the store back. True when it just became
    /// the writer: what it loaded before may miss others' writes, so it loads again before it
    /// decides anything (an id) from it.
    fn claim(&self) -> Result<bool, StoreError> {
        Ok(false)
    }

    /// The entries written since the last load, where the store can tell (None: load it all).
    fn load_more(&self) -> Result<Option<Vec<Entry>>, StoreError> {
        Ok(None)
    }

    /// Whether trying again can help: false once the store cannot work any more (its thread
    /// ended), so that a caller stops at once rather than retrying.
    fn working(&self) -> bool {
        true
    }
}

/// What the store asks of its log thread.
enum Request {
    Load(SyncSender<Result<Vec<Entry>, StoreError>>),
    Append(Vec<Entry>, SyncSender<Result<(), StoreError>>),
    Claim(SyncSender<Result<bool, StoreError>>),
    LoadMore(SyncSender<Result<Option<Vec<Entry>>, StoreError>>),
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
                // Whether this process holds the topic's writer (where processes share a log,
                // the last to claim it does; a write after another's claim fails, fenced).
                let mut claimed = false;
                // Writes fenced in a row: processes registering at once take turns, each
                // waiting a little longer (and at random) before claiming again.
                let mut fenced = 0u32;
                // Where the next load goes on from.
                let mut loaded_to = 0u64;
                // Ends when the store is dropped (its sender with it).
                for request in incoming {
                    match request {
                        Request::Load(reply) => {
                            let loaded = runtime.block_on(load(&log, 0)).map(|(entries, next)| {
                                loaded_to = next;
                                entries
                            });
                            let _ = reply.send(loaded);
                        }
                        Request::LoadMore(reply) => {
                            let loaded =
                                runtime
                                    .block_on(load(&log, loaded_to))
                                    .map(|(entries, next)| {
                                        loaded_to = loaded_to.max(next);
                                        Some(entries)
                                    });
                            let _ = reply.send(loaded);
                        }
                        Request::Claim(reply) => {
                            let claiming = runtime.block_on(async {
                                if claimed {
                                    return Ok(false);
                                }
                                if fenced > 0 {
                                    await_turn(&log, fenced).await;
                                }
                                log.fence(WRITER)
                                    .await
                                    .map_err(|e| StoreError(format!("taking over {TOPIC}: {e}")))?;
                                claimed = true;
                                Ok(true)
                            });
                            if claiming.is_err() {
                                runtime.block_on(async { tokio::time::sleep(PAUSE).await });
                            }
                            let _ = reply.send(claiming);
                        }
                        Request::Append(entries, reply) => {
                            let appended = runtime.block_on(async {
                                // (The registry claims first; this keeps a bare append from
                                // writing unfenced.)
                                if !claimed {
                                    log.fence(WRITER).await?;
                                    claimed = true;
                                }
                                append(&log, entries).await
                            });
                            match &appended {
                                Ok(()) => fenced = 0,
                                Err(LogError::Fenced(_)) => {
                                    claimed = false;
                                    fenced += 1;
                                }
                                // A log that fails otherwise (a broker down, a producer left
                                // in an error state): the registry tries again, not at once,
                                // with a writer made afresh.
                                Err(_) => {
                                    claimed = false;
                                    runtime.block_on(async { tokio::time::sleep(PAUSE).await });
                                }
                            }
                            let _ = reply.send(
                                appended.map_err(|e| StoreError(format!("writing {TOPIC}: {e}"))),
                            );
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

/// How long a write or claim that failed (not fenced) holds the next one back.
const PAUSE: Duration = Duration::from_millis(250);

/// How long `_schemas` must have been still (after the process that fenced this one wrote) for
/// that process to be done writing, and how long to wait at most for it to write at all (it
/// may have found, once it read the topic, that it had nothing to write).
const STILL: Duration = Duration::from_millis(300);
const AT_MOST: Duration = Duration::from_secs(2);

/// After `fenced` writes in a row were fenced: waits for the process that fenced this one to
/// write and be done, then a little longer at random (below 25 ms, doubling with each fence,
/// up to 0.4 s), so that processes that register at once take turns, each writing all it has
/// in its turn. (Claiming back at once would fence the other before its write, and it would
/// do the same in return, round after round.)
async fn await_turn<L: EventLog>(log: &L, fenced: u32) {
    let end = || async { log.offsets(TOPIC, 0).await.map(|o| o.stable).ok() };
    let started = Instant::now();
    let (mut last, mut since, mut moved) = (end().await, Instant::now(), false);
    while started.elapsed() < AT_MOST && !(moved && since.elapsed() >= STILL) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = end().await;
        if now != last {
            (last, since, moved) = (now, Instant::now(), true);
        }
    }
    let ceiling = 25u64 << fenced.min(4);
    let noise = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::from(d.subsec_nanos()))
        ^ u64::from(std::process::id()).wrapping_mul(2_654_435_761);
    tokio::time::sleep(Duration::from_millis(noise % ceiling)).await;
}

/// The topic's entries from offset `from` on, and the offset after them.
async fn load<L: EventLog>(log: &L, from: u64) -> Result<(Vec<Entry>, u64), StoreError> {
    let mut entries = Vec::new();
    // Up to the end as it is now (asked, not remembered: other processes may write the topic):
    // a read may come back short (or empty, past offsets without records) before it.
    let end = match log.offsets(TOPIC, 0).await {
        Ok(offsets) => offsets.stable,
        Err(_) if log.partitions(TOPIC).is_none() => return Ok((entries, from)),
        Err(e) => return Err(StoreError(format!("reading {TOPIC}: {e}"))),
    };
    let mut offset = from;
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
    Ok((entries, offset))
}

async fn append<L: EventLog>(log: &L, entries: Vec<Entry>) -> Result<(), LogError> {
    log.ensure_compacted_topic(TOPIC, 1).await?;
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
    log.append(WRITER, vec![batch], Some(String::new())).await
}

impl SchemaStore for LogStore {
    fn load(&self) -> Result<Vec<Entry>, StoreError> {
        self.ask(Request::Load)
    }

    fn append(&self, entries: &[Entry]) -> Result<(), StoreError> {
        self.ask(|reply| Request::Append(entries.to_vec(), reply))
    }

    fn claim(&self) -> Result<bool, StoreError> {
        self.ask(Request::Claim)
    }

    fn working(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    fn load_more(&self) -> Result<Option<Vec<Entry>>, StoreError> {
        self.ask(Request::LoadMore)
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

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::{Entry, SchemaStore, StoreError};
    use crate::registry::{NewSchema, Registry, SchemaType};

    /// One store two registries share, as processes share `_schemas` on Kafka: the last to
    /// claim it may write; the other's writes fail until it claims it back.
    #[derive(Default)]
    struct Shared {
        entries: Vec<Entry>,
        writer: Option<usize>,
    }

    struct Handle {
        shared: Arc<Mutex<Shared>>,
        me: usize,
    }

    impl SchemaStore for Handle {
        fn load(&self) -> Result<Vec<Entry>, StoreError> {
            Ok(self.shared.lock().unwrap().entries.clone())
        }

        fn append(&self, entries: &[Entry]) -> Result<(), StoreError> {
            let mut shared = self.shared.lock().unwrap();
            if shared.writer != Some(self.me) {
                return Err(StoreError("fenced".into()));
            }
            shared.entries.extend_from_slice(entries);
            Ok(())
        }

        fn claim(&self) -> Result<bool, StoreError> {
            let mut shared = self.shared.lock().unwrap();
            let newly = shared.writer != Some(self.me);
            shared.writer = Some(self.me);
            Ok(newly)
        }
    }

    fn schema(name: &str) -> String {
        format!(r#"{{"type":"record","name":"{name}","fields":[{{"name":"a","type":"int"}}]}}"#)
    }

    #[test]
    fn registries_sharing_a_store_never_give_one_id_twice() {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let open = |me| {
            Registry::open(Handle {
                shared: Arc::clone(&shared),
                me,
            })
            .unwrap()
        };
        let (a, b) = (open(1), open(2));
        let register = |registry: &Registry, name: &str| {
            let text = schema(name);
            let new = NewSchema {
                schema_type: SchemaType::Avro,
                text: &text,
                id: None,
                version: None,
            };
            registry.register(&format!("{name}-value"), &new).unwrap()
        };
        // Each registers while the other holds the store: it claims it back, reads what the
        // other wrote, and takes the next id.
        let ids = [
            register(&a, "one"),
            register(&b, "two"),
            register(&a, "three"),
            register(&b, "four"),
        ];
        assert_eq!(ids, [1, 2, 3, 4]);
        // Both see every schema; registering one again gives its id, writing nothing.
        assert_eq!(register(&a, "two"), 2);
        assert_eq!(register(&b, "one"), 1);
        assert_eq!(b.schema(3).unwrap().id, 3);
        assert_eq!(
            shared.lock().unwrap().writer,
            Some(2),
            "no claim for a held schema"
        );
    }
}
