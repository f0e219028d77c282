//! sluice-schema-registry: the Confluent-compatible schema registry and the event encoders.
//!
//! - `registry`: subjects, versions, global ids, compatibility levels and modes, stored in the
//!   log's compacted `_schemas` topic; `http` serves Confluent's REST API on top of it.
//! - `json`: the Debezium JSON envelope, so that Debezium consumers read sluice's topics
//!   unchanged.
//! - `avro`: Avro schemas derived from table schemas (Debezium's names, logical types) and the
//!   binary encoder with Confluent's wire header, registering each table version it meets.
//! - `changes`: the sink runtime's decoder, records of either encoding into typed changes.

pub mod avro;
pub mod changes;
pub mod http;
pub mod json;
pub mod registry;

use std::sync::Arc;

use sluice_core::encode::{EncodeError, EncodedRecords, EventEncoder, TableVersion};
use sluice_core::event::ChangeEvent;
use sluice_core::event::TableSchema;

/// The encoder a pipeline chose: one type for the runtime whichever encoding a source uses.
#[derive(Clone)]
pub enum Encoder {
    Json(json::JsonEnvelopeEncoder),
    Avro(avro::AvroEncoder),
}

impl EventEncoder for Encoder {
    fn prepare_table(
        &mut self,
        table: &Arc<TableSchema>,
        held: bool,
    ) -> Result<TableVersion, EncodeError> {
        match self {
            Encoder::Json(encoder) => encoder.prepare_table(table, held),
            Encoder::Avro(encoder) => encoder.prepare_table(table, held),
        }
    }

    fn release_held(&mut self, held_topic: &str, topic: &str) -> Result<TableVersion, EncodeError> {
        match self {
            Encoder::Json(encoder) => encoder.release_held(held_topic, topic),
            Encoder::Avro(encoder) => encoder.release_held(held_topic, topic),
        }
    }

    fn encode(&mut self, event: &ChangeEvent, out: &mut EncodedRecords) -> Result<(), EncodeError> {
        match self {
            Encoder::Json(encoder) => encoder.encode(event, out),
            Encoder::Avro(encoder) => encoder.encode(event, out),
        }
    }

    fn set_processing_time(&mut self, now_us: i64) {
        match self {
            Encoder::Json(encoder) => encoder.set_processing_time(now_us),
            Encoder::Avro(encoder) => encoder.set_processing_time(now_us),
        }
    }
}
