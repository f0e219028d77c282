//! The encoder contract: turning a change event into log record key and value bytes.
//!
//! Encoders live in sluice-schema-registry (Debezium JSON, Avro); the runtime is generic over
//! them. Topic and partition are chosen by the runtime (`topic`), not the encoder.

pub use crate::batch::Span;

use crate::event::{ChangeEvent, TxnBoundary};

/// One log record made from an event, as spans of [`EncodedRecords`]' buffer. A delete may
/// produce two: the event and a tombstone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncodedRecord {
    pub key: Option<Span>,
    /// `None` is a tombstone.
    pub value: Option<Span>,
    /// The registry id of the value's schema, for encodings that do not carry it in the value
    /// (JSON): the runtime puts it in the record's `SCHEMA_HEADER`.
    pub value_schema: Option<u32>,
}

/// Where encoders write records: their bytes back to back in one buffer, and each record's key
/// and value as spans of it. No allocation or reference count per record: the runtime hands
/// the whole buffer to the log, which copies each record once, into its batch.
#[derive(Debug, Default)]
pub struct EncodedRecords {
    data: Vec<u8>,
    records: Vec<EncodedRecord>,
}

impl EncodedRecords {
    pub fn with_capacity(bytes: usize) -> EncodedRecords {
        EncodedRecords {
            data: Vec::with_capacity(bytes),
            records: Vec::new(),
        }
    }

    /// Writes one key or value with `write`; returns where it lies and what `write` returned.
    #[inline]
    pub fn write<T>(&mut self, write: impl FnOnce(&mut Vec<u8>) -> T) -> (Span, T) {
        let start = self.data.len();
        let result = write(&mut self.data);
        let span = Span {
            start,
            end: self.data.len(),
        };
        (span, result)
    }

    /// Adds a record of spans returned by [`EncodedRecords::write`].
    #[inline]
    pub fn push(&mut self, key: Option<Span>, value: Option<Span>) {
        self.push_named(key, value, None);
    }

    /// Like [`EncodedRecords::push`], naming the value's registered schema.
    #[inline]
    pub fn push_named(
        &mut self,
        key: Option<Span>,
        value: Option<Span>,
        value_schema: Option<u32>,
    ) {
        self.records.push(EncodedRecord {
            key,
            value,
            value_schema,
        });
    }

    /// The records pushed since the last [`EncodedRecords::clear_records`].
    #[inline]
    pub fn records(&self) -> &[EncodedRecord] {
        &self.records
    }

    /// Forgets the record list (their bytes stay in the buffer).
    #[inline]
    pub fn clear_records(&mut self) {
        self.records.clear();
    }

    /// Forgets the records and their bytes (the buffer's capacity stays).
    #[inline]
    pub fn clear(&mut self) {
        self.records.clear();
        self.data.clear();
    }

    #[inline]
    pub fn bytes(&self, span: Span) -> &[u8] {
        &self.data[span.start..span.end]
    }

    /// The key and value bytes of record `i` of [`EncodedRecords::records`].
    pub fn record(&self, i: usize) -> (Option<&[u8]>, Option<&[u8]>) {
        let record = self.records[i];
        (
            record.key.map(|span| self.bytes(span)),
            record.value.map(|span| self.bytes(span)),
        )
    }

    /// The buffer every span points into.
    pub fn into_data(self) -> Vec<u8> {
        self.data
    }
}

#[derive(Debug, thiserror::Error)]
#[error("cannot encode a change of {table}: {reason}")]
pub struct EncodeError {
    pub table: String,
    pub reason: String,
}

/// What readying a table version for encoding came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableVersion {
    Ready,
    /// The registry refuses this version for the table's topic (its compatibility level); the
    /// reason says which field changed and how to allow it.
    Refused {
        reason: String,
    },
}

/// Clones may encode different events of one batch in parallel: a clone must encode an event
/// exactly as the original would.
pub trait EventEncoder: Send + Clone + 'static {
    /// Readies `table`'s version before any of its events is encoded (registers its schemas).
    /// With `held`, for the table's held topic, whose subjects take any version. Encoders
    /// without a registry are always ready.
    fn prepare_table(
        &mut self,
        _table: &std::sync::Arc<crate::event::TableSchema>,
        _held: bool,
    ) -> Result<TableVersion, EncodeError> {
        Ok(TableVersion::Ready)
    }

    /// Registers under `topic`'s subjects the versions held under `held_topic`'s, oldest
    /// first, so that the held records can join the topic; `Refused` while the registry still
    /// will not take them.
    fn release_held(
        &mut self,
        _held_topic: &str,
        _topic: &str,
    ) -> Result<TableVersion, EncodeError> {
        Ok(TableVersion::Ready)
    }

    /// Writes the records for `event` into `out`.
    fn encode(&mut self, event: &ChangeEvent, out: &mut EncodedRecords) -> Result<(), EncodeError>;

    /// Writes the record of a transaction boundary into `out`: by default Debezium's JSON
    /// (key `{"id"}`, value `{"status", "id", "event_count", "data_collections", "ts_ms"}`).
    fn encode_boundary(
        &mut self,
        boundary: &TxnBoundary,
        out: &mut EncodedRecords,
    ) -> Result<(), EncodeError> {
        let (key, ()) = out.write(|buf| write_boundary_key(buf, boundary));
        let (value, ()) = out.write(|buf| write_boundary_value(buf, boundary));
        out.push(Some(key), Some(value));
        Ok(())
    }

    /// The processing time (microseconds since the Unix epoch) to write into the events encoded
    /// next, as `ts_ms`/`ts_us`. The runtime sets it once per batch so that encoding does not
    /// read the clock for every event; an encoder that was never given one reads the clock.
    fn set_processing_time(&mut self, _now_us: i64) {}
}

/// A boundary record's JSON key: `{"id": …}`.
pub fn write_boundary_key(buf: &mut Vec<u8>, boundary: &TxnBoundary) {
    let key = serde_json::json!({ "id": &*boundary.id });
    serde_json::to_writer(buf, &key).expect("writing to a Vec");
}

/// A boundary record's JSON value, as Debezium writes it (`event_count` and
/// `data_collections` null for BEGIN).
pub fn write_boundary_value(buf: &mut Vec<u8>, boundary: &TxnBoundary) {
    let collections = boundary.end.as_ref().map(|tables| {
        tables
            .iter()
            .map(|(table, count)| {
                serde_json::json!({ "data_collection": table, "event_count": count })
            })
            .collect::<Vec<_>>()
    });
    let value = serde_json::json!({
        "status": boundary.status(),
        "id": &*boundary.id,
        "event_count": boundary.event_count(),
        "data_collections": collections,
        "ts_ms": boundary.commit_ts_us.div_euclid(1000),
    });
    serde_json::to_writer(buf, &value).expect("writing to a Vec");
}
