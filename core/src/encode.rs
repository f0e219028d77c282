//! The encoder contract: turning a change event into log record key and value bytes.
//!
//! Encoders live in sluice-schema-registry (Debezium JSON, Avro); the runtime is generic over
//! them. Topic and partition are chosen by the runtime (`topic`), not the encoder.

use bytes::Bytes;

use crate::event::ChangeEvent;

/// One log record made from an event. A delete may produce two: the event and a tombstone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedRecord {
    pub key: Option<Bytes>,
    /// `None` is a tombstone.
    pub value: Option<Bytes>,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot encode a change of {table}: {reason}")]
pub struct EncodeError {
    pub table: String,
    pub reason: String,
}

/// Clones may encode different events of one batch in parallel: a clone must encode an event
/// exactly as the original would.
pub trait EventEncoder: Send + Clone + 'static {
    /// Appends the records for `event` to `out`.
    fn encode(
        &mut self,
        event: &ChangeEvent,
        out: &mut Vec<EncodedRecord>,
    ) -> Result<(), EncodeError>;

    /// The processing time (microseconds since the Unix epoch) to write into the events encoded
    /// next, as `ts_ms`/`ts_us`. The runtime sets it once per batch so that encoding does not
    /// read the clock for every event; an encoder that was never given one reads the clock.
    fn set_processing_time(&mut self, _now_us: i64) {}
}
