//! Encoding a source batch into log batches: each event through the pipeline's encoder, its
//! records framed into their partition's batch (prepared whole on the encoding threads when the
//! log takes them), the commit number stamped on each partition's last record. Large batches
//! are encoded by two threads, one half each.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::batch::{
    BatchBuilder, Compression, Header, PackedEntry, PackedRecords, PartitionBatch, Record, Records,
};
use bytes::Bytes;

use super::super::PipelineError;
use crate::change::SCHEMA_HEADER;
use crate::checkpoint::{Checkpoint, COMMIT_HEADER, COMMIT_PART_HEADER};
use crate::clock::now_us;
use crate::encode::{EncodedRecord, EncodedRecords, EventEncoder, TableVersion};
use crate::event::{ChangeEvent, TableSchema};
use crate::event_log::EventLog;
use crate::source::SourceBatch;
use crate::topic;

/// A source batch encoded into log records, ready to append.
pub(super) struct EncodedBatch {
    pub batches: Vec<PartitionBatch>,
    pub checkpoint: Option<Checkpoint>,
    pub records: u64,
    pub newest_commit_us: i64,
}

/// Batches at least this large are encoded by two threads, each on half of the events.
const PARALLEL_ENCODE_MIN_EVENTS: usize = 1_000;

/// Topic names and partition counts the writer has seen.
#[derive(Clone, Default)]
struct Topics {
    partitions: HashMap<String, u32>,
    /// Tables whose events are held back (their topic → why): the registry refused a schema
    /// version of theirs. Their events go to the held topic until a restart releases them.
    held: HashMap<String, Arc<str>>,
    /// Events of one table come in runs: the last event's topic and partition count (once the
    /// topic exists), instead of rebuilding and looking them up for every event.
    last: Option<LastTopic>,
}

#[derive(Clone)]
struct LastTopic {
    table: Option<Arc<TableSchema>>,
    topic: String,
    partitions: Option<u32>,
    /// Why the table is held back, when it is (`topic` is then its held topic).
    held: Option<Arc<str>>,
}

impl Topics {
    /// The topic of `event` and its partition count, if the topic exists yet.
    fn topic_for(&mut self, source: &str, event: &ChangeEvent) -> (&str, Option<u32>) {
        let same_table = match (&event.table, &self.last) {
            (
                Some(table),
                Some(LastTopic {
                    table: Some(last), ..
                }),
            ) => Arc::ptr_eq(table, last),
            _ => false,
        };
        if !same_table {
            let mut topic = topic::event_topic(source, event);
            let held = self.held.get(&topic).cloned();
            if held.is_some() {
                topic = topic::held_topic(&topic);
            }
            let partitions = self.partitions.get(&topic).copied();
            self.last = Some(LastTopic {
                table: event.table.clone(),
                topic,
                partitions,
                held,
            });
        }
        let last = self.last.as_ref().expect("set above");
        (&last.topic, last.partitions)
    }

    /// Why the last event's table is held back, if it is.
    fn held_reason(&self) -> Option<&Arc<str>> {
        self.last.as_ref().and_then(|last| last.held.as_ref())
    }

    /// Holds `topic`'s table (of source `source`) back from now on.
    fn hold(&mut self, source: &str, topic: String, reason: Arc<str>) {
        self.held.insert(topic, reason);
        self.last = None;
        ::metrics::gauge!(crate::metrics::SOURCE_TABLES_HELD, "source" => source.to_owned())
            .set(self.held.len() as f64);
    }

    fn insert(&mut self, topic: String, partitions: u32) {
        if let Some(last) = self.last.as_mut().filter(|last| last.topic == topic) {
            last.partitions = Some(partitions);
        }
        self.partitions.insert(topic, partitions);
    }
}

/// Encodes events into per-partition record batches.
pub(super) struct BatchEncoder<E> {
    name: String,
    encoder: E,
    topics: Topics,
    /// What the last batch's events took, encoded (sizes the next batch's buffers).
    bytes_per_event: usize,
    /// Whether (and how compressed) the log takes prepared batches: they are then made by the
    /// encoding threads, not by the log's one appending thread.
    prepare: Option<Compression>,
}

/// Records of a run of events, per partition in event order.
struct EncodedPart<B> {
    /// `Slice`s while encoding, `PartitionBatch`es once finished.
    batches: Vec<B>,
    /// The buffer packed slices point into.
    data: Bytes,
    records: u64,
    newest_commit_us: i64,
    /// Bytes of the encoded records.
    bytes: usize,
}

impl EncodedPart<Slice> {
    /// The slices as log batches; the last record of each slice `stamped` picks carries
    /// commit number `stamp` (see COMMIT_HEADER).
    fn into_batches(
        self,
        stamp: &Stamp,
        stamped: impl Fn(&Slice) -> bool,
    ) -> EncodedPart<PartitionBatch> {
        let EncodedPart {
            batches,
            data,
            records,
            newest_commit_us,
            bytes,
        } = self;
        let batches = batches
            .into_iter()
            .map(|slice| {
                let header = stamped(&slice).then(|| stamp.header());
                let records = match slice.records {
                    SliceRecords::Packed(mut entries) => {
                        if let Some(last) = entries.last_mut() {
                            last.headers.extend(header);
                        }
                        Records::Packed(PackedRecords {
                            data: data.clone(),
                            entries,
                        })
                    }
                    SliceRecords::Built(builder) => Records::Prepared(builder.finish(header)),
                };
                PartitionBatch {
                    topic: slice.topic,
                    partition: slice.partition,
                    records,
                }
            })
            .collect();
        EncodedPart {
            batches,
            data,
            records,
            newest_commit_us,
            bytes,
        }
    }
}

impl<E: EventEncoder> BatchEncoder<E> {
    /// An encoder for source `name`'s batches; `prepare`: the log's `prepared_batches()`.
    pub(super) fn new(name: String, encoder: E, prepare: Option<Compression>) -> BatchEncoder<E> {
        BatchEncoder {
            name,
            encoder,
            topics: Topics::default(),
            bytes_per_event: FIRST_BYTES_PER_EVENT,
            prepare,
        }
    }

    /// Readies the event's table version for encoding. A version the registry refuses holds
    /// the table back: its events (this one on) go to its held topic, kept in the log but
    /// delivered to no sink, while the other tables go on; a restart after the fix releases
    /// them (`release_held`).
    fn prepare_table(
        &mut self,
        event: &ChangeEvent,
        table: &Arc<TableSchema>,
    ) -> Result<(), PipelineError> {
        let encode_error = |source| PipelineError::Encode {
            name: self.name.clone(),
            source,
        };
        let topic = topic::event_topic(&self.name, event);
        let held = self.topics.held.contains_key(&topic);
        match self.encoder.prepare_table(table, held) {
            Ok(TableVersion::Ready) => Ok(()),
            Ok(TableVersion::Refused { reason }) => {
                tracing::error!(table = %table.table, %reason,
                    "holding the table's events back (kept in the log, delivered to no sink) until the registry accepts its new schema; the other tables go on");
                self.topics.hold(&self.name, topic, reason.into());
                match self.encoder.prepare_table(table, true) {
                    Ok(_) => Ok(()),
                    Err(err) => Err(encode_error(err)),
                }
            }
            Err(err) => Err(encode_error(err)),
        }
    }

    /// At start: the records of held-back tables whose schema the registry now accepts join
    /// their topics (in their order, before anything newer of the table), each copy committed
    /// with how far it got; tables it still refuses stay held.
    pub(super) async fn release_held<L: EventLog>(&mut self, log: &L) -> Result<(), PipelineError> {
        let log_error = |source| PipelineError::Log {
            name: self.name.clone(),
            source,
        };
        let writer = topic::release_writer(&self.name);
        let mut released: Released = match log.checkpoint(&writer).await.map_err(log_error)? {
            Some(text) if !text.is_empty() => serde_json::from_str(&text).unwrap_or_default(),
            _ => Released::new(),
        };
        let prefix = topic::held_topic(&format!("{}.", self.name));
        for held in log.topics().into_iter().filter(|t| t.starts_with(&prefix)) {
            let Some(real) = topic::unheld(&held).map(str::to_owned) else {
                continue;
            };
            let partitions = log.partitions(&held).unwrap_or(0);
            let done = released.get(&held).cloned().unwrap_or_default();
            let waiting = (0..partitions)
                .any(|p| log.stable_offset(&held, p) > done.get(&p).copied().unwrap_or(0));
            if !waiting {
                continue;
            }
            let version = self.encoder.release_held(&held, &real).map_err(|source| {
                PipelineError::Encode {
                    name: self.name.clone(),
                    source,
                }
            })?;
            if let TableVersion::Refused { reason } = version {
                tracing::error!(topic = %real, %reason, "the table's events stay held back: the registry still refuses its schema");
                self.topics.hold(&self.name, real, reason.into());
                continue;
            }
            let count = log.ensure_topic(&real).await.map_err(log_error)?;
            let mut moved = 0usize;
            for partition in 0..partitions {
                let mut next = done.get(&partition).copied().unwrap_or(0);
                loop {
                    let read = log
                        .read(&held, partition, next, RELEASE_READ_BYTES)
                        .await
                        .map_err(log_error)?;
                    let Some(last) = read.last() else { break };
                    next = last.offset + 1;
                    moved += read.len();
                    let mut by_partition: BTreeMap<u32, Vec<Record>> = BTreeMap::new();
                    for stored in read {
                        let target = topic::partition_for(stored.key.as_deref(), count);
                        by_partition.entry(target).or_default().push(Record {
                            key: stored.key,
                            value: stored.value,
                            timestamp_ms: stored.timestamp_ms,
                            headers: stored
                                .headers
                                .into_iter()
                                .filter(|h| h.key != topic::HELD_HEADER)
                                .collect(),
                        });
                    }
                    released
                        .entry(held.clone())
                        .or_default()
                        .insert(partition, next);
                    let batches = by_partition
                        .into_iter()
                        .map(|(target, records)| PartitionBatch {
                            topic: real.clone(),
                            partition: target,
                            records: records.into_iter().collect(),
                        })
                        .collect();
                    let checkpoint = serde_json::to_string(&released).expect("offsets serialize");
                    log.append(&writer, batches, Some(checkpoint))
                        .await
                        .map_err(log_error)?;
                }
            }
            tracing::info!(topic = %real, events = moved, "released the table's held-back events: the registry accepts its schema now");
        }
        Ok(())
    }

    /// Encodes `batch`, whose records belong to log commit number `commit` (stamped on the
    /// last record of each partition's records, see COMMIT_HEADER).
    pub(super) async fn encode<L: EventLog>(
        &mut self,
        batch: SourceBatch,
        log: &L,
        commit: u64,
    ) -> Result<EncodedBatch, PipelineError> {
        // Topics first (creating one is I/O), so that encoding itself never waits. Events of
        // one table come in runs: only the first of a run needs looking at.
        let mut previous: Option<&Arc<TableSchema>> = None;
        for event in &batch.events {
            if let (Some(table), Some(previous)) = (&event.table, previous) {
                if Arc::ptr_eq(table, previous) {
                    continue;
                }
            }
            previous = event.table.as_ref();
            if let Some(table) = &event.table {
                self.prepare_table(event, table)?;
            }
            let (topic, None) = self.topics.topic_for(&self.name, event) else {
                continue;
            };
            let topic = topic.to_owned();
            let count = log
                .ensure_topic(&topic)
                .await
                .map_err(|source| PipelineError::Log {
                    name: self.name.clone(),
                    source,
                })?;
            self.topics.insert(topic, count);
        }
        let SourceBatch {
            events,
            checkpoint,
            history,
            boundaries,
        } = batch;
        let stamp = Stamp {
            commit: Bytes::copy_from_slice(&commit.to_be_bytes()),
            last_append: checkpoint.is_some(),
        };
        let (events_len, bytes_per_event) = (events.len().max(1), self.bytes_per_event);
        let output = Output {
            bytes_per_event,
            prepare: self.prepare,
        };
        let part = if events.len() >= PARALLEL_ENCODE_MIN_EVENTS {
            // The second half goes to a blocking thread with a clone of the encoder while this
            // task encodes the first; per partition, the first half's records come first. The
            // events are shared, not split: splitting would copy half of them.
            let events = Arc::new(events);
            let half = events.len() / 2;
            let (name, mut encoder, mut topics, shared, second_stamp) = (
                self.name.clone(),
                self.encoder.clone(),
                self.topics.clone(),
                Arc::clone(&events),
                stamp.clone(),
            );
            let second = tokio::task::spawn_blocking(move || {
                let part =
                    encode_events(&name, &mut encoder, &mut topics, &shared[half..], output)?;
                // The second half's slices are the last of their partitions: all stamped.
                Ok::<_, PipelineError>(part.into_batches(&second_stamp, |_| true))
            });
            let first = encode_events(
                &self.name,
                &mut self.encoder,
                &mut self.topics,
                &events[..half],
                output,
            )?;
            let second = match second.await {
                Ok(result) => result?,
                Err(join) => std::panic::resume_unwind(join.into_panic()),
            };
            // A partition may get one slice from each half: the log appends them in order, and
            // only the second one ends the commit in that partition, so only it is stamped (a
            // stamp in the middle would let a sink take half a commit for a whole one).
            let mut first = first.into_batches(&stamp, |slice| {
                !second
                    .batches
                    .iter()
                    .any(|b| b.partition == slice.partition && b.topic == slice.topic)
            });
            first.batches.extend(second.batches);
            first.records += second.records;
            first.bytes += second.bytes;
            first.newest_commit_us = first.newest_commit_us.max(second.newest_commit_us);
            // Freeing thousands of rows takes a while; it need not delay this batch's append.
            tokio::task::spawn_blocking(move || drop(events));
            first
        } else {
            encode_events(
                &self.name,
                &mut self.encoder,
                &mut self.topics,
                &events,
                output,
            )?
            .into_batches(&stamp, |_| true)
        };
        // The next buffers are sized for this batch's events, with room for some variation.
        if part.records > 0 {
            self.bytes_per_event = part.bytes / events_len + part.bytes / events_len / 8 + 16;
        }
        let mut batches = part.batches;
        if !history.is_empty() {
            let topic = topic::history_topic(&self.name);
            log.ensure_topic(&topic)
                .await
                .map_err(|source| PipelineError::Log {
                    name: self.name.clone(),
                    source,
                })?;
            let timestamp_ms = now_us().div_euclid(1000);
            let mut records: Records = history
                .into_iter()
                .map(|value| Record {
                    key: None,
                    value: Some(value),
                    timestamp_ms,
                    headers: Vec::new(),
                })
                .collect();
            records.push_header_to_last(stamp.header());
            batches.push(PartitionBatch {
                topic,
                partition: 0,
                records,
            });
        }
        if !boundaries.is_empty() {
            let encoded = super::transactions::boundary_batches(
                &self.name,
                &mut self.encoder,
                &boundaries,
                log,
                stamp.header(),
            )
            .await?;
            batches.extend(encoded);
        }
        Ok(EncodedBatch {
            batches,
            checkpoint,
            records: part.records,
            newest_commit_us: part.newest_commit_us,
        })
    }
}

/// What an append stamps on each partition's last record: the number of the commit that makes
/// it visible, and whether this append is that commit's last (COMMIT_HEADER) or a part before
/// it (COMMIT_PART_HEADER).
#[derive(Clone)]
struct Stamp {
    commit: Bytes,
    last_append: bool,
}

impl Stamp {
    fn header(&self) -> Header {
        let key = if self.last_append {
            COMMIT_HEADER
        } else {
            COMMIT_PART_HEADER
        };
        Header {
            key: key.to_owned(),
            value: Some(self.commit.clone()),
        }
    }
}

/// Bytes read from a held topic per copy while releasing it.
const RELEASE_READ_BYTES: usize = 4 << 20;

/// How far each held topic's partitions have been released: held topic → partition → next
/// offset (the release writer's checkpoint).
type Released = BTreeMap<String, BTreeMap<u32, u64>>;

/// The header naming a JSON record's registered value schema (see `change::SCHEMA_HEADER`).
fn schema_id_header(id: u32) -> Header {
    Header {
        key: SCHEMA_HEADER.to_owned(),
        value: Some(Bytes::from(id.to_string())),
    }
}

/// How `encode_events` lays out what it encodes.
#[derive(Clone, Copy)]
struct Output {
    /// Bytes an event is assumed to take (sizes the buffers).
    bytes_per_event: usize,
    /// Prepare whole batches, compressed so, instead of handing the log packed records.
    prepare: Option<Compression>,
}

/// One partition's share of the events being encoded.
struct Slice {
    topic: String,
    partition: u32,
    records: SliceRecords,
}

enum SliceRecords {
    /// Spans of the shared buffer, for a log that takes records.
    Packed(Vec<PackedEntry>),
    /// Whole batches, for a log that takes them prepared.
    Built(BatchBuilder),
}

/// Encodes `events` (whose topics all exist in `topics`) into per-partition batches: prepared
/// ones when the log takes them (each event's records are framed into their partition's batch
/// right after encoding, while in cache), else records that all lie in one buffer.
fn encode_events<E: EventEncoder>(
    name: &str,
    encoder: &mut E,
    topics: &mut Topics,
    events: &[ChangeEvent],
    output: Output,
) -> Result<EncodedPart<Slice>, PipelineError> {
    let mut slices: Vec<Slice> = Vec::new();
    let mut records = 0u64;
    let mut bytes = 0usize;
    let mut newest_commit_us = i64::MIN;
    // Packed: one buffer for all records, capped (one batch of large rows must not make the
    // next batch reserve gigabytes). Prepared: one event's records at a time.
    let expected = events
        .len()
        .saturating_mul(output.bytes_per_event)
        .min(MAX_FIRST_BUFFER);
    let mut out = EncodedRecords::with_capacity(match output.prepare {
        Some(_) => 64 * 1024,
        None => expected,
    });
    encoder.set_processing_time(now_us());
    // The last schema header made: records of a run share their table version.
    let mut schema_header: Option<(u32, [Header; 1])> = None;
    for event in events {
        match output.prepare {
            Some(_) => out.clear(),
            None => out.clear_records(),
        }
        encoder
            .encode(event, &mut out)
            .map_err(|source| PipelineError::Encode {
                name: name.to_owned(),
                source,
            })?;
        let (topic, count) = topics.topic_for(name, event);
        let count = count.unwrap_or(1);
        let topic = topic.to_owned();
        let held = topics.held_reason().cloned();
        let timestamp_ms = event.commit_ts_us.div_euclid(1000);
        newest_commit_us = newest_commit_us.max(event.commit_ts_us);
        for &EncodedRecord {
            key,
            value,
            value_schema,
        } in out.records()
        {
            let mut headers: &[Header] = match value_schema {
                None => &[],
                Some(id) => {
                    if schema_header.as_ref().is_none_or(|(last, _)| *last != id) {
                        schema_header = Some((id, [schema_id_header(id)]));
                    }
                    &schema_header.as_ref().expect("set above").1
                }
            };
            // A held table's records say why (for `sluice status`).
            let with_reason: Vec<Header>;
            if let Some(reason) = &held {
                with_reason = headers
                    .iter()
                    .cloned()
                    .chain([Header {
                        key: topic::HELD_HEADER.to_owned(),
                        value: Some(Bytes::copy_from_slice(reason.as_bytes())),
                    }])
                    .collect();
                headers = &with_reason;
            }
            let partition = topic::partition_for(key.map(|key| out.bytes(key)), count);
            // A batch touches few partitions; the most recent one is the likely match.
            let slot = match slices
                .iter()
                .rposition(|s| s.partition == partition && s.topic == topic)
            {
                Some(slot) => slot,
                None => {
                    // Sized for an even share of the events, so that pushing rarely regrows.
                    let share = events.len() / usize::try_from(count).unwrap_or(1).max(1);
                    let records = match output.prepare {
                        Some(compression) => SliceRecords::Built(BatchBuilder::new(
                            compression,
                            match compression {
                                Compression::None => expected / count as usize,
                                // Change events compress 5–15×.
                                Compression::Lz4 => expected / count as usize / 4,
                            },
                        )),
                        None => SliceRecords::Packed(Vec::with_capacity(share.clamp(16, 4096))),
                    };
                    slices.push(Slice {
                        topic: topic.to_owned(),
                        partition,
                        records,
                    });
                    slices.len() - 1
                }
            };
            match &mut slices[slot].records {
                SliceRecords::Packed(entries) => entries.push(PackedEntry {
                    key,
                    value,
                    timestamp_ms,
                    headers: headers.to_vec(),
                }),
                SliceRecords::Built(builder) => {
                    let (key, value) = (key.map(|k| out.bytes(k)), value.map(|v| out.bytes(v)));
                    bytes += key.map_or(0, <[u8]>::len) + value.map_or(0, <[u8]>::len);
                    builder.push(key, value, timestamp_ms, headers);
                }
            }
            records += 1;
        }
    }
    let data = Bytes::from(out.into_data());
    if output.prepare.is_none() {
        bytes = data.len();
    }
    Ok(EncodedPart {
        batches: slices,
        data,
        records,
        newest_commit_us,
        bytes,
    })
}

/// Bytes an event's records are assumed to take before the first batch says otherwise.
const FIRST_BYTES_PER_EVENT: usize = 256;
/// The most a batch's record buffer reserves up front (it grows past this when it must).
const MAX_FIRST_BUFFER: usize = 64 << 20;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Column, DataType, Op, SnapshotMarker, TableId};
    use crate::event_log::memory::MemoryLog;
    use crate::position::{Lsn, Position};
    use crate::value::Value;

    /// Key: the id as 8 bytes; value: a short text.
    #[derive(Clone)]
    struct IdEncoder;

    impl EventEncoder for IdEncoder {
        fn encode(
            &mut self,
            event: &ChangeEvent,
            out: &mut EncodedRecords,
        ) -> Result<(), crate::encode::EncodeError> {
            let id = match event.after.as_ref().map(|row| &row[0]) {
                Some(Value::Int64(id)) => *id,
                _ => unreachable!("the test's rows start with an id"),
            };
            let (key, ()) = out.write(|buf| buf.extend_from_slice(&id.to_be_bytes()));
            let (value, ()) =
                out.write(|buf| buf.extend_from_slice(format!("row {id}").as_bytes()));
            out.push(Some(key), Some(value));
            Ok(())
        }
    }

    fn events(n: i64) -> Vec<ChangeEvent> {
        let schema = Arc::new(TableSchema {
            table: TableId {
                namespace: "public".into(),
                name: "t".into(),
            },
            columns: vec![Column {
                name: "id".into(),
                type_name: "bigint".into(),
                data_type: DataType::Int64,
                key: true,
                nullable: false,
            }],
            version: 1,
        });
        (0..n)
            .map(|id| ChangeEvent {
                op: Op::Read,
                table: Some(Arc::clone(&schema)),
                before: None,
                before_is_key_only: false,
                after: Some(vec![Value::Int64(id)]),
                snapshot: SnapshotMarker::Yes,
                commit_ts_us: 1_700_000_000_000_000,
                position: Position::PgLsn(Lsn(42)),
                xid: None,
                txn: None,
                message: None,
            })
            .collect()
    }

    /// Encodes and appends `n` events as commit 7 into a log with `partitions` partitions per
    /// topic; returns each partition's records.
    async fn appended(
        n: i64,
        partitions: u32,
        compression: Compression,
        prepared: bool,
    ) -> Vec<Vec<crate::batch::StoredRecord>> {
        let log = MemoryLog::new(partitions, Some(compression));
        let mut encoder = BatchEncoder {
            name: "src".into(),
            encoder: IdEncoder,
            topics: Topics::default(),
            bytes_per_event: FIRST_BYTES_PER_EVENT,
            prepare: log.prepared_batches().filter(|_| prepared),
        };
        let batch = SourceBatch {
            events: events(n),
            // The commit's last append: its stamps are COMMIT_HEADER (parts before it get
            // COMMIT_PART_HEADER).
            checkpoint: Some(Checkpoint {
                position: Position::PgLsn(Lsn(42)),
                snapshot: crate::checkpoint::SnapshotProgress::Done,
                snapshot_state: None,
            }),
            history: Vec::new(),
            boundaries: Vec::new(),
        };
        let encoded = encoder.encode(batch, &log, 7).await.unwrap();
        assert_eq!(encoded.records, n as u64);
        log.append("src", encoded.batches, Some("{}".into()))
            .await
            .unwrap();
        let mut per_partition = Vec::new();
        for partition in 0..partitions {
            let read = log.read("src.public.t", partition, 0, usize::MAX);
            per_partition.push(read.await.unwrap());
        }
        per_partition
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn only_the_last_record_of_each_partition_carries_the_commit_stamp() {
        let is_stamp = |h: &Header| h.key == COMMIT_HEADER;
        // Below and above the size at which two threads encode a batch's halves, with one and
        // with several partitions, packed and prepared (compressed or not).
        for (compression, prepared) in [
            (Compression::Lz4, true),
            (Compression::None, true),
            (Compression::Lz4, false),
        ] {
            for (n, partitions) in [(10, 1), (5_000, 1), (5_000, 3)] {
                let per_partition = appended(n, partitions, compression, prepared).await;
                let total: usize = per_partition.iter().map(Vec::len).sum();
                assert_eq!(total, n as usize);
                for records in &per_partition {
                    let stamped: Vec<usize> = records
                        .iter()
                        .enumerate()
                        .filter(|(_, r)| r.headers.iter().any(is_stamp))
                        .map(|(i, _)| i)
                        .collect();
                    assert_eq!(
                        stamped,
                        [records.len() - 1],
                        "{n} events, {partitions} partitions"
                    );
                    let stamp = records.last().unwrap().headers.iter().find(|h| is_stamp(h));
                    assert_eq!(
                        stamp.unwrap().value.as_deref(),
                        Some(&7u64.to_be_bytes()[..])
                    );
                }
            }
        }
    }
}
