//! Typed changes: what a change sink receives, decoded once by the sink runtime from whatever
//! encoding the source wrote (the Debezium JSON envelope or Avro), with the column types of the
//! table version the source wrote it with.
//!
//! A [`ChangeDecoder`] turns a log record into a [`Change`]; the registry crate implements it
//! for both encodings (a JSON record names its table schema in the [`SCHEMA_HEADER`] header, an
//! Avro record in its wire header), so that a sink fed by a JSON source builds exactly the
//! tables one fed by Avro builds.

use std::sync::Arc;

use crate::event::{Op, TableSchema};
use crate::position::Position;
use crate::sink::SinkRecord;
use crate::value::Value;

/// The record header naming the registry schema id (decimal text) of a JSON record's value:
/// the table version it was written with. Avro records carry the id in their wire header.
pub const SCHEMA_HEADER: &str = "sluice.schema";

/// One row change, typed.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// The table version the source wrote the change with: columns, their types, the key.
    pub table: Arc<TableSchema>,
    pub op: Op,
    /// The old row: absent for inserts and truncates; for updates and deletes of tables
    /// without REPLICA IDENTITY FULL only its key columns are set (the rest are `Null`).
    pub before: Option<Vec<Value>>,
    pub after: Option<Vec<Value>>,
    /// Where in the source's stream the change was committed, when the envelope says.
    pub position: Option<Position>,
    /// `transaction.id`: the source transaction (absent for snapshot rows).
    pub txn: Option<String>,
    /// `transaction.total_order`: the change's place in its transaction, from 1.
    pub total_order: Option<u64>,
    /// Commit time at the source, microseconds since the epoch.
    pub commit_ts_us: i64,
}

impl Change {
    /// The values of the key columns, from the new row (the old one for deletes); empty for
    /// tables without a key.
    pub fn key(&self) -> Vec<&Value> {
        let Some(row) = self.after.as_ref().or(self.before.as_ref()) else {
            return Vec::new();
        };
        self.table
            .key_columns()
            .filter_map(|(index, _)| row.get(index))
            .collect()
    }
}

/// A change and the index, in the batch handed to the sink, of the record it came from.
#[derive(Debug, Clone)]
pub struct SourcedChange {
    pub change: Change,
    pub record: usize,
    /// The topic a transform routed the change to (`route`, `outbox`); None: the record's.
    pub topic: Option<Arc<str>>,
    /// Set by the outbox router: the column that is the event's whole value.
    pub payload: Option<usize>,
    /// Set by an `unwrap` transform that applied to the change: sinks that send events send
    /// the row, not the envelope.
    pub unwrapped: bool,
}

impl SourcedChange {
    pub fn new(change: Change, record: usize) -> SourcedChange {
        SourcedChange {
            change,
            record,
            topic: None,
            payload: None,
            unwrapped: false,
        }
    }
}

/// Why a record could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("record {topic}[{partition}] offset {offset}: {reason}")]
pub struct DecodeError {
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
    pub reason: String,
}

impl DecodeError {
    pub fn at(record: &SinkRecord, reason: impl Into<String>) -> DecodeError {
        DecodeError {
            topic: record.topic.to_string(),
            partition: record.partition,
            offset: record.record.offset,
            reason: reason.into(),
        }
    }
}

/// Decodes log records into typed changes. One per sink; it may cache per schema.
pub trait ChangeDecoder: Send + 'static {
    /// The change a record holds; `Ok(None)` for records that are no row change (tombstones,
    /// logical messages, transaction markers).
    fn decode(&mut self, record: &SinkRecord) -> Result<Option<Change>, DecodeError>;

    /// The registry id of the schema the record's value was written with, without decoding
    /// it (`None` for tombstones and records that name none). Ids grow as versions are
    /// registered.
    fn schema_id(&self, record: &SinkRecord) -> Option<u32>;

    /// Another decoder like this one (what it learned, such as schemas, included), so that a
    /// batch can be decoded on several threads at once; None (the default): this decoder
    /// decodes alone.
    fn fork(&self) -> Option<Self>
    where
        Self: Sized,
    {
        None
    }

    /// Takes back what a fork learned while it decoded.
    fn join(&mut self, fork: Self)
    where
        Self: Sized,
    {
        let _ = fork;
    }
}
