//! The sink runtime's decoder: a log record of either encoding into a typed [`Change`].
//!
//! An Avro record names its schema in the wire header; a JSON record in the
//! [`SCHEMA_HEADER`] header (the JSON encoder registers each table version as the Avro encoder
//! does). Either way the table version comes from the registry, so a sink builds the same
//! tables with the same types whichever encoding its sources use. Plans are cached per id.

use std::collections::HashMap;
use std::sync::Arc;

use sluice_core::change::{Change, ChangeDecoder, DecodeError, SCHEMA_HEADER};
use sluice_core::sink::SinkRecord;
use sluice_core::topic;

use crate::avro::decode::is_framed;
use crate::avro::rows::{self, Plan, SchemaError};
use crate::registry::Registry;

/// Decodes records of both encodings, typed by their registered schemas.
pub struct RecordDecoder {
    registry: Arc<Registry>,
    /// Per schema id: its plan, or `None` for schemas of records without a table (messages).
    plans: HashMap<u32, Option<Arc<Plan>>>,
}

impl RecordDecoder {
    pub fn new(registry: Arc<Registry>) -> RecordDecoder {
        RecordDecoder {
            registry,
            plans: HashMap::new(),
        }
    }

    fn plan(&mut self, id: u32) -> Result<Option<Arc<Plan>>, SchemaError> {
        if let Some(plan) = self.plans.get(&id) {
            return Ok(plan.clone());
        }
        let plan = rows::registered_plan(&self.registry, id)?.map(Arc::new);
        self.plans.insert(id, plan.clone());
        Ok(plan)
    }
}

/// The table version a registered value schema describes (None for schemas sluice wrote for
/// no table, such as logical messages): what `sluice check` holds transforms against.
pub fn registered_table(
    registry: &Registry,
    id: u32,
) -> Result<Option<Arc<sluice_core::event::TableSchema>>, String> {
    Ok(rows::registered_plan(registry, id)?.map(|plan| plan.table))
}

/// The schema id in a record's [`SCHEMA_HEADER`].
pub fn header_schema_id(record: &SinkRecord) -> Option<u32> {
    let header = record
        .record
        .headers
        .iter()
        .find(|h| h.key == SCHEMA_HEADER)?;
    std::str::from_utf8(header.value.as_deref()?)
        .ok()?
        .parse()
        .ok()
}

impl ChangeDecoder for RecordDecoder {
    fn decode(&mut self, record: &SinkRecord) -> Result<Option<Change>, DecodeError> {
        let Some(value) = record.record.value.as_deref() else {
            return Ok(None);
        };
        let fail = |reason: String| DecodeError::at(record, reason);
        let Some(id) = self.schema_id(record) else {
            // A transaction boundary (BEGIN/END, JSON): no row change.
            if record
                .record
                .headers
                .iter()
                .any(|h| h.key == topic::BOUNDARY_HEADER)
            {
                return Ok(None);
            }
            return Err(fail(
                "the record names no registered schema (a JSON record written before sluice \
                 named schemas in a header, or not by sluice): its table's types are unknown. \
                 Re-snapshot the source into a fresh log, or feed this sink from a source with \
                 encoding = \"avro\""
                    .into(),
            ));
        };
        let Some(plan) = self.plan(id).map_err(|e| fail(e.0))? else {
            return Ok(None);
        };
        let change = if is_framed(value) {
            rows::decode(&plan, &value[5..])
        } else {
            crate::json::decode::decode(&plan, value)
        };
        change.map(Some).map_err(|e| fail(e.0))
    }

    fn schema_id(&self, record: &SinkRecord) -> Option<u32> {
        let value = record.record.value.as_deref()?;
        if is_framed(value) {
            return Some(u32::from_be_bytes([value[1], value[2], value[3], value[4]]));
        }
        header_schema_id(record)
    }

    fn fork(&self) -> Option<RecordDecoder> {
        Some(RecordDecoder {
            registry: Arc::clone(&self.registry),
            plans: self.plans.clone(),
        })
    }

    fn join(&mut self, fork: RecordDecoder) {
        for (id, plan) in fork.plans {
            self.plans.entry(id).or_insert(plan);
        }
    }
}
