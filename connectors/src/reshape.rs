//! Transforms on the sinks that deliver the log's records as they are (Kafka, JSONL): with
//! `[[sinks.transforms]]`, such a sink's records are decoded into typed changes, run through
//! the transforms as every typed sink's are, and rendered back into records (`events.rs`):
//!
//! - the key is the row's key columns as JSON (`{"id":7}`); an outbox event's is its aggregate
//!   id as text, as Debezium's EventRouter keys it (and its `id` goes in a header, `id`);
//! - the value is Debezium's envelope as JSON without its schema part, the row (`unwrap`), or
//!   the outbox event's payload; a delete under `unwrap` with tombstones is a tombstone;
//! - the topic is the one a `route` or `outbox` transform gave, else the record's own;
//! - a record no change is left of (a `filter` dropped it, an outbox update, the log's
//!   tombstone after a delete) is not delivered, and counts as delivered for the offsets;
//!   transaction boundary records (`<source>.transaction`) go as they are.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use sluice_core::batch::Header;
use sluice_core::pipeline::TypedSink;
use sluice_core::sink::{
    ChangeBatch, ChangeSink, DeadLetterWriter, Offsets, RecordSink, SinkRecord,
};
use sluice_core::transform::Chain;
use sluice_core::value::Value;
use sluice_schema_registry::changes::RecordDecoder;
use sluice_schema_registry::registry::Registry;

use crate::events::Events;

/// Where one record of a reshaped batch goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// To this topic (the log's name: the sink maps it to its own as it does any other).
    Topic(Arc<str>),
    /// Nowhere: nothing is left of it after the transforms. Its offset counts as delivered.
    Dropped,
}

/// A sink of stored records that takes transformed ones.
pub trait ReshapedSink: RecordSink {
    /// As `write`, with `to[i]` saying where `records[i]` goes.
    fn write_reshaped(
        &mut self,
        records: &[SinkRecord],
        to: &[Destination],
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

/// A record sink fed with transformed changes, rendered back into records.
pub struct Reshaping<S> {
    sink: S,
    events: Events,
    records: Vec<SinkRecord>,
    to: Vec<Destination>,
    buffer: Vec<u8>,
}

/// `sink` behind its transforms (`chain`); changes a transform rejects go to `dead_letters`
/// (without them, they stop the sink).
pub fn reshaping<S: ReshapedSink>(
    sink: S,
    registry: Arc<Registry>,
    chain: Chain,
    dead_letters: Option<DeadLetterWriter>,
) -> TypedSink<Reshaping<S>, RecordDecoder> {
    let reshaping = Reshaping {
        sink,
        events: Events::default(),
        records: Vec::new(),
        to: Vec::new(),
        buffer: Vec::new(),
    };
    TypedSink::new(reshaping, RecordDecoder::new(registry), false).transforms(chain, dead_letters)
}

impl<S: ReshapedSink> ChangeSink for Reshaping<S> {
    type Error = S::Error;

    fn open(&mut self) -> impl Future<Output = Result<Option<Offsets>, S::Error>> + Send {
        self.sink.open()
    }

    async fn write(&mut self, batch: ChangeBatch<'_>) -> Result<(), S::Error> {
        self.records.clear();
        self.to.clear();
        for record in batch.records {
            let boundary = record
                .record
                .headers
                .iter()
                .any(|h| h.key == sluice_core::topic::BOUNDARY_HEADER);
            self.records.push(record.clone());
            self.to.push(if boundary {
                Destination::Topic(Arc::clone(&record.topic))
            } else {
                Destination::Dropped
            });
        }
        for sourced in &batch.changes {
            if !self.events.sends(sourced) {
                continue;
            }
            let index = sourced.record;
            let out = &mut self.records[index];
            self.buffer.clear();
            let key = if sourced.payload.is_some() {
                outbox_key(sourced)
            } else if self.events.key(&mut self.buffer, sourced) {
                Some(Bytes::copy_from_slice(&self.buffer))
            } else {
                None
            };
            self.buffer.clear();
            let value = self
                .events
                .value(&mut self.buffer, sourced)
                .then(|| Bytes::copy_from_slice(&self.buffer));
            out.record.key = key;
            out.record.value = value;
            // The log's headers describe the log's value (its schema id): not this one.
            out.record.headers.clear();
            if sourced.payload.is_some() {
                if let Some(id) = sourced
                    .change
                    .after
                    .as_ref()
                    .and_then(|row| row.first())
                    .and_then(sluice_core::transform::values::text_form)
                {
                    out.record.headers.push(Header {
                        key: "id".into(),
                        value: Some(Bytes::from(id.into_bytes())),
                    });
                }
            }
            self.to[index] = Destination::Topic(
                sourced
                    .topic
                    .clone()
                    .unwrap_or_else(|| Arc::clone(&out.topic)),
            );
        }
        self.sink.write_reshaped(&self.records, &self.to).await
    }

    fn close(&mut self) -> impl Future<Output = Result<(), S::Error>> + Send {
        self.sink.close()
    }

    fn flush(&mut self) -> impl Future<Output = Result<(), S::Error>> + Send {
        self.sink.flush()
    }

    fn applied(&self) -> Option<&Offsets> {
        self.sink.applied()
    }

    fn resume_from(&mut self, offsets: &Offsets) {
        self.sink.resume_from(offsets);
    }
}

/// An outbox event's key: its aggregate id as text (the event row's second column).
fn outbox_key(sourced: &sluice_core::change::SourcedChange) -> Option<Bytes> {
    let row = sourced.change.after.as_ref()?;
    match row.get(1)? {
        Value::Null => None,
        value => {
            sluice_core::transform::values::text_form(value).map(|t| Bytes::from(t.into_bytes()))
        }
    }
}
