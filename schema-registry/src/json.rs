//! Debezium's JSON envelope (payload only, no inline schema), written straight into a buffer.
//!
//! Key: the primary-key columns as an object (`{"id":1}`), or null for keyless tables and
//! truncates. Value: `{"before","after","source","op","ts_ms","ts_us","transaction"}`; a delete
//! is followed by a tombstone (same key, null value) when enabled. Value mapping per type is in
//! docs/types.md; where Debezium's defaults lose information, sluice stays exact: decimals are
//! strings, unsigned 64-bit integers are plain numbers, intervals are ISO-8601 strings.
//!
//! With a registry, each table version is registered as the Avro encoder registers it and every
//! record names its schema id in the `sluice.schema` header, so that typed sinks rebuild exact
//! column types (`json/decode.rs` reads envelopes back).

use std::sync::Arc;

use base64::Engine;
use sluice_core::clock::now_us;
use sluice_core::encode::{EncodeError, EncodedRecords, EventEncoder, TableVersion};
use sluice_core::event::{ChangeEvent, Op, SnapshotMarker, TableSchema};
use sluice_core::position::Position;
use sluice_core::value::{self, Date, Decimal, Timestamp, UtcTimestampWriter, Value};

use crate::avro::register::Registrar;
use crate::avro::DecimalHandling;
use crate::registry::Registry;

pub mod debezium;
pub(crate) mod decode;
mod fast;
pub(crate) mod scan;

/// What Debezium puts for a value the source did not send (unchanged TOAST).
pub const UNAVAILABLE_VALUE: &str = "__debezium_unavailable_value";
/// Debezium's sentinels for Postgres `timestamp` ±infinity (microseconds).
pub const TIMESTAMP_POSITIVE_INFINITY_US: i64 = 9_223_372_036_825_200_000;
pub const TIMESTAMP_NEGATIVE_INFINITY_US: i64 = -9_223_372_036_832_400_000;

/// Static facts about the source, written into every event's `source` block.
#[derive(Debug, Clone)]
pub struct SourceBlock {
    /// `postgresql`, `mysql` or `mariadb`.
    pub connector: &'static str,
    /// The source name (the topic prefix).
    pub name: String,
    /// The database name.
    pub db: String,
}

/// Encodes events as Debezium JSON envelopes.
#[derive(Clone)]
pub struct JsonEnvelopeEncoder {
    source: SourceBlock,
    /// `{"version":…,"connector":…,"name":…,"ts_ms":`: the same for every event.
    source_head: Vec<u8>,
    tombstones_on_delete: bool,
    scratch: Scratch,
    /// The JSON that only depends on the table, for the table of the last event (events come
    /// in runs of one table).
    table_json: Option<(Arc<TableSchema>, TableJson)>,
    /// `,"ts_ms":…,"ts_us":…` of the processing time set by `EventEncoder::set_processing_time`.
    processing_time: Option<Vec<u8>>,
    /// `"source":{…` up to and including the table's fields, for the last commit time,
    /// snapshot marker and whether the event has a table (a message has none); a snapshot chunk
    /// or a transaction shares them. Cleared when the table changes.
    source_memo: Memo<(i64, SnapshotMarker, bool)>,
    /// The position fields closing the source block, for the last position and xid.
    position_memo: Memo<Position>,
    xid_memo: Option<u64>,
    /// Registers table versions, when the encoder has a registry.
    registrar: Option<Registrar>,
    /// The message schema's id (with a registry).
    message_schema: Option<u32>,
}

/// The bytes rendered for the last key; consecutive events mostly repeat their neighbour's
/// commit time and position, so these are written once per run instead of once per event.
#[derive(Clone)]
struct Memo<K> {
    key: Option<K>,
    bytes: Vec<u8>,
}

impl<K: PartialEq + Clone> Memo<K> {
    fn new() -> Memo<K> {
        Memo {
            key: None,
            bytes: Vec::new(),
        }
    }

    /// The bytes for `key`, rendered by `render` when the key differs from the last one. The
    /// key is cloned only then: a position's shared file name or GTID text is reference
    /// counted, and two encoding threads bumping one count per event fight over it.
    fn get(&mut self, key: &K, render: impl FnOnce(&mut Vec<u8>)) -> &[u8] {
        if self.key.as_ref() != Some(key) {
            self.bytes.clear();
            render(&mut self.bytes);
            self.key = Some(key.clone());
        }
        &self.bytes
    }

    fn clear(&mut self) {
        self.key = None;
    }
}

/// Pieces of an envelope that depend only on the table, written once per table version.
#[derive(Clone)]
struct TableJson {
    /// `"column":` for each column.
    column_keys: Vec<Box<[u8]>>,
    /// `,"db":…,"schema":…,"table":…` of the source block.
    source_tail: Box<[u8]>,
    /// The registry id of the table version's value schema (with a registry).
    value_schema: Option<u32>,
}

impl TableJson {
    fn new(source: &SourceBlock, schema: &TableSchema) -> TableJson {
        let column_keys = schema
            .columns
            .iter()
            .map(|column| {
                let mut key = Vec::with_capacity(column.name.len() + 3);
                write_str(&mut key, &column.name);
                key.push(b':');
                key.into_boxed_slice()
            })
            .collect();
        let mut tail = Vec::new();
        write_source_tail(&mut tail, source, Some(schema));
        TableJson {
            column_keys,
            source_tail: tail.into_boxed_slice(),
            value_schema: None,
        }
    }
}

impl JsonEnvelopeEncoder {
    pub fn new(source: SourceBlock, tombstones_on_delete: bool) -> JsonEnvelopeEncoder {
        let mut source_head = Vec::new();
        source_head.extend_from_slice(b"{\"version\":\"sluice-");
        source_head.extend_from_slice(env!("CARGO_PKG_VERSION").as_bytes());
        source_head.extend_from_slice(b"\",\"connector\":\"");
        source_head.extend_from_slice(source.connector.as_bytes());
        source_head.extend_from_slice(b"\",\"name\":");
        write_str(&mut source_head, &source.name);
        source_head.extend_from_slice(b",\"ts_ms\":");
        JsonEnvelopeEncoder {
            source,
            source_head,
            tombstones_on_delete,
            scratch: Scratch::default(),
            table_json: None,
            processing_time: None,
            source_memo: Memo::new(),
            position_memo: Memo::new(),
            xid_memo: None,
            registrar: None,
            message_schema: None,
        }
    }

    /// Registers each table version in `registry` and names it in every record's
    /// `sluice.schema` header (what typed sinks need; see the module doc).
    pub fn registering(mut self, registry: Arc<Registry>) -> JsonEnvelopeEncoder {
        self.registrar = Some(Registrar::new(
            registry,
            self.source.clone(),
            DecimalHandling::Precise,
        ));
        self
    }

    /// The table's cached JSON pieces, rebuilt (and the version registered) when the table or
    /// its version changes.
    fn table_json(&mut self, schema: &Arc<TableSchema>) -> Result<(), EncodeError> {
        match &self.table_json {
            Some((cached, _)) if Arc::ptr_eq(cached, schema) => {}
            _ => {
                let mut json = TableJson::new(&self.source, schema);
                if let Some(registrar) = self.registrar.as_mut() {
                    json.value_schema = Some(registrar.table(schema)?.value_id);
                }
                self.table_json = Some((Arc::clone(schema), json));
                self.source_memo.clear();
            }
        }
        Ok(())
    }

    /// The schema id to name in the value's header, if registering.
    fn value_schema(&mut self, event: &ChangeEvent) -> Result<Option<u32>, EncodeError> {
        if event.table.is_some() {
            return Ok(self.table_json.as_ref().and_then(|(_, t)| t.value_schema));
        }
        let Some(registrar) = self.registrar.as_mut() else {
            return Ok(None);
        };
        if self.message_schema.is_none() {
            self.message_schema = Some(registrar.message_value_id()?);
        }
        Ok(self.message_schema)
    }

    /// Writes the event's key into `buf`; false (nothing written) when it has none.
    fn key(&mut self, event: &ChangeEvent, buf: &mut Vec<u8>) -> bool {
        let (Some(schema), Some(row), Some((_, json))) = (
            event.table.as_ref(),
            event.after.as_ref().or(event.before.as_ref()),
            self.table_json.as_ref(),
        ) else {
            return false;
        };
        if event.op == Op::Truncate || !schema.has_key() {
            return false;
        }
        buf.push(b'{');
        for (n, (i, _)) in schema.key_columns().enumerate() {
            if n > 0 {
                buf.push(b',');
            }
            buf.extend_from_slice(&json.column_keys[i]);
            write_value(buf, &mut self.scratch, &row[i]);
        }
        buf.push(b'}');
        true
    }

    fn value(&mut self, event: &ChangeEvent, buf: &mut Vec<u8>) {
        // The cached table is the last event's: a message (no table) must not inherit it.
        let table = match event.table {
            Some(_) => self.table_json.as_ref().map(|(_, json)| json),
            None => None,
        };
        buf.push(b'{');
        if !matches!(event.op, Op::Truncate | Op::Message) {
            let keys = table.map(|t| &t.column_keys[..]);
            buf.extend_from_slice(b"\"before\":");
            write_row(buf, &mut self.scratch, keys, event.before.as_deref());
            buf.extend_from_slice(b",\"after\":");
            write_row(buf, &mut self.scratch, keys, event.after.as_deref());
            buf.push(b',');
        }
        let (source, source_head) = (&self.source, &self.source_head);
        buf.extend_from_slice(self.source_memo.get(
            &(event.commit_ts_us, event.snapshot, table.is_some()),
            |out| {
                out.extend_from_slice(b"\"source\":");
                out.extend_from_slice(source_head);
                write_source_head(out, source, table.map(|t| &t.source_tail[..]), event);
            },
        ));
        // The xid is written with the position: a new one renders the fields again.
        if self.xid_memo != event.xid {
            self.xid_memo = event.xid;
            self.position_memo.clear();
        }
        buf.extend_from_slice(
            self.position_memo
                .get(&event.position, |out| write_source_position(out, event)),
        );
        buf.extend_from_slice(b",\"op\":\"");
        buf.extend_from_slice(event.op.code().as_bytes());
        buf.push(b'"');
        match &self.processing_time {
            Some(fields) => buf.extend_from_slice(fields),
            None => write_processing_time(buf, now_us()),
        }
        if let Some(message) = &event.message {
            buf.extend_from_slice(b",\"message\":{\"prefix\":");
            write_str(buf, &message.prefix);
            buf.extend_from_slice(b",\"content\":\"");
            buf.extend_from_slice(
                base64::engine::general_purpose::STANDARD
                    .encode(&message.content)
                    .as_bytes(),
            );
            buf.extend_from_slice(b"\"}");
        }
        buf.extend_from_slice(b",\"transaction\":");
        match &event.txn {
            Some(txn) => {
                buf.extend_from_slice(b"{\"id\":");
                write_str(buf, &txn.id);
                buf.extend_from_slice(b",\"total_order\":");
                write_int(buf, txn.total_order);
                if txn.data_collection_order > 0 {
                    buf.extend_from_slice(b",\"data_collection_order\":");
                    write_int(buf, txn.data_collection_order);
                }
                buf.push(b'}');
            }
            None => buf.extend_from_slice(b"null"),
        }
        buf.push(b'}');
    }
}

impl EventEncoder for JsonEnvelopeEncoder {
    fn prepare_table(
        &mut self,
        table: &Arc<TableSchema>,
        held: bool,
    ) -> Result<TableVersion, EncodeError> {
        self.table_json = None;
        match self.registrar.as_mut() {
            Some(registrar) => registrar.prepare(table, held),
            None => Ok(TableVersion::Ready),
        }
    }

    fn release_held(&mut self, held_topic: &str, topic: &str) -> Result<TableVersion, EncodeError> {
        match self.registrar.as_mut() {
            Some(registrar) => registrar.release(held_topic, topic),
            None => Ok(TableVersion::Ready),
        }
    }

    fn set_processing_time(&mut self, now_us: i64) {
        let mut fields = self.processing_time.take().unwrap_or_default();
        fields.clear();
        write_processing_time(&mut fields, now_us);
        self.processing_time = Some(fields);
    }

    fn encode(&mut self, event: &ChangeEvent, out: &mut EncodedRecords) -> Result<(), EncodeError> {
        if event.op != Op::Message && event.table.is_none() {
            return Err(EncodeError {
                table: "?".into(),
                reason: format!("a {:?} event has no table", event.op),
            });
        }
        if let Some(schema) = &event.table {
            self.table_json(schema)?;
        }
        let schema = self.value_schema(event)?;
        let (key, has_key) = out.write(|buf| self.key(event, buf));
        let key = has_key.then_some(key);
        let (value, ()) = out.write(|buf| self.value(event, buf));
        out.push_named(key, Some(value), schema);
        if event.op == Op::Delete && self.tombstones_on_delete && key.is_some() {
            out.push(key, None);
        }
        Ok(())
    }
}

/// A row as an object; `keys` holds each column's `"name":`.
fn write_row(
    buf: &mut Vec<u8>,
    scratch: &mut Scratch,
    keys: Option<&[Box<[u8]>]>,
    row: Option<&[Value]>,
) {
    let (Some(keys), Some(row)) = (keys, row) else {
        buf.extend_from_slice(b"null");
        return;
    };
    buf.push(b'{');
    for (i, (key, value)) in keys.iter().zip(row).enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        buf.extend_from_slice(key);
        write_value(buf, scratch, value);
    }
    buf.push(b'}');
}

/// The envelope's `,"ts_ms":…,"ts_us":…` (processing time).
fn write_processing_time(buf: &mut Vec<u8>, now_us: i64) {
    buf.extend_from_slice(b",\"ts_ms\":");
    write_int(buf, now_us.div_euclid(1000));
    buf.extend_from_slice(b",\"ts_us\":");
    write_int(buf, now_us);
}

/// The source block after its constant head (`JsonEnvelopeEncoder::source_head`) up to the
/// position: commit time, snapshot marker, database and table; `table_tail` is the table's
/// cached `write_source_tail`.
fn write_source_head(
    buf: &mut Vec<u8>,
    source: &SourceBlock,
    table_tail: Option<&[u8]>,
    event: &ChangeEvent,
) {
    let commit_us = event.commit_ts_us;
    write_int(buf, commit_us.div_euclid(1000));
    buf.extend_from_slice(b",\"ts_us\":");
    write_int(buf, commit_us);
    buf.extend_from_slice(b",\"snapshot\":\"");
    buf.extend_from_slice(event.snapshot.as_str().as_bytes());
    buf.push(b'"');
    match table_tail {
        Some(tail) => buf.extend_from_slice(tail),
        None => write_source_tail(buf, source, None),
    }
}

/// The source block's position fields and its closing brace.
fn write_source_position(buf: &mut Vec<u8>, event: &ChangeEvent) {
    match &event.position {
        Position::PgLsn(lsn) => {
            buf.extend_from_slice(b",\"lsn\":");
            write_int(buf, lsn.0);
            match event.xid {
                Some(xid) => {
                    buf.extend_from_slice(b",\"txId\":");
                    write_int(buf, xid);
                }
                None => buf.extend_from_slice(b",\"txId\":null"),
            }
        }
        Position::MysqlGtidSet(gtid) | Position::MariadbGtidList(gtid) => {
            buf.extend_from_slice(b",\"gtid\":");
            write_str(buf, gtid);
        }
        Position::BinlogFile { file, offset } => {
            buf.extend_from_slice(b",\"file\":");
            write_str(buf, file);
            buf.extend_from_slice(b",\"pos\":");
            write_int(buf, *offset);
        }
        // (An event read from Kafka without a database position of its own.)
        Position::KafkaOffsets(_) => {}
    }
    buf.push(b'}');
}

/// `,"db":…` and, for a table, its namespace and name.
fn write_source_tail(buf: &mut Vec<u8>, source: &SourceBlock, schema: Option<&TableSchema>) {
    buf.extend_from_slice(b",\"db\":");
    write_str(buf, &source.db);
    if let Some(schema) = schema {
        let namespace_field: &[u8] = if source.connector == "postgresql" {
            b",\"schema\":"
        } else {
            b",\"db_schema\":"
        };
        buf.extend_from_slice(namespace_field);
        write_str(buf, &schema.table.namespace);
        buf.extend_from_slice(b",\"table\":");
        write_str(buf, &schema.table.name);
    }
}

/// What `write_value` reuses from one value to the next.
#[derive(Debug, Clone, Default)]
pub struct Scratch {
    text: String,
    timestamps: UtcTimestampWriter,
}

/// Writes one value as JSON (see docs/types.md for the mapping).
pub fn write_value(buf: &mut Vec<u8>, scratch: &mut Scratch, value: &Value) {
    match value {
        Value::Null => buf.extend_from_slice(b"null"),
        Value::Bool(b) => buf.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Int8(v) => write_int(buf, *v),
        Value::Int16(v) => write_int(buf, *v),
        Value::Int32(v) => write_int(buf, *v),
        Value::Int64(v) => write_int(buf, *v),
        Value::UInt8(v) => write_int(buf, *v),
        Value::UInt16(v) => write_int(buf, *v),
        Value::UInt32(v) => write_int(buf, *v),
        Value::UInt64(v) => write_int(buf, *v),
        // Debug is the shortest round-tripping form, with an exponent for large and small
        // magnitudes (Display would print 309 digits for f64::MAX).
        Value::Float32(v) => write_float(buf, f64::from(*v), v.is_finite(), || format!("{v:?}")),
        Value::Float64(v) => write_float(buf, *v, v.is_finite(), || format!("{v:?}")),
        // Digits, signs and the special values' names need no escaping.
        Value::Decimal(d) => {
            buf.push(b'"');
            match d {
                Decimal::Finite(digits) => buf.extend_from_slice(digits.as_bytes()),
                Decimal::NaN => buf.extend_from_slice(b"NaN"),
                Decimal::PositiveInfinity => buf.extend_from_slice(b"Infinity"),
                Decimal::NegativeInfinity => buf.extend_from_slice(b"-Infinity"),
            }
            buf.push(b'"');
        }
        Value::Text(s) => write_str(buf, s),
        Value::Json(s) | Value::Enum(s) => write_str(buf, s),
        Value::Bytes(b) => {
            buf.push(b'"');
            buf.extend_from_slice(
                base64::engine::general_purpose::STANDARD
                    .encode(b)
                    .as_bytes(),
            );
            buf.push(b'"');
        }
        Value::Uuid(u) => {
            buf.push(b'"');
            for (i, b) in u.iter().enumerate() {
                if matches!(i, 4 | 6 | 8 | 10) {
                    buf.push(b'-');
                }
                buf.push(HEX[usize::from(b >> 4)]);
                buf.push(HEX[usize::from(b & 0xf)]);
            }
            buf.push(b'"');
        }
        Value::Date(Date::Days(days)) => write_int(buf, *days),
        Value::Date(Date::PositiveInfinity) => write_int(buf, i32::MAX),
        Value::Date(Date::NegativeInfinity) => write_int(buf, i32::MIN),
        Value::Time(micros) => write_int(buf, *micros),
        Value::TimeTz {
            micros,
            offset_seconds,
        } => {
            let text = &mut scratch.text;
            text.clear();
            value::write_time_of_day(text, *micros);
            value::write_offset(text, *offset_seconds);
            write_str(buf, text);
        }
        Value::Timestamp(Timestamp::Micros(micros)) => write_int(buf, *micros),
        Value::Timestamp(Timestamp::PositiveInfinity) => {
            write_int(buf, TIMESTAMP_POSITIVE_INFINITY_US)
        }
        Value::Timestamp(Timestamp::NegativeInfinity) => {
            write_int(buf, TIMESTAMP_NEGATIVE_INFINITY_US)
        }
        Value::TimestampTz(Timestamp::Micros(micros)) => {
            buf.push(b'"');
            scratch.timestamps.write(buf, *micros);
            buf.push(b'"');
        }
        Value::TimestampTz(Timestamp::PositiveInfinity) => buf.extend_from_slice(b"\"infinity\""),
        Value::TimestampTz(Timestamp::NegativeInfinity) => buf.extend_from_slice(b"\"-infinity\""),
        Value::Interval(interval) => write_str(buf, &interval.to_string()),
        Value::Array(items) => {
            buf.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    buf.push(b',');
                }
                write_value(buf, scratch, item);
            }
            buf.push(b']');
        }
        Value::Set(labels) => write_str(buf, &labels.join(",")),
        Value::Unavailable => write_str(buf, UNAVAILABLE_VALUE),
    }
}

fn write_int(buf: &mut Vec<u8>, value: impl itoa::Integer) {
    buf.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
}

/// Finite floats are JSON numbers; NaN and ±Infinity, which JSON lacks, are strings.
fn write_float(buf: &mut Vec<u8>, value: f64, finite: bool, shortest: impl Fn() -> String) {
    if finite {
        let text = shortest();
        buf.extend_from_slice(text.as_bytes());
        if !text.contains(['.', 'e', 'E']) {
            buf.extend_from_slice(b".0");
        }
    } else if value.is_nan() {
        buf.extend_from_slice(b"\"NaN\"");
    } else if value > 0.0 {
        buf.extend_from_slice(b"\"Infinity\"");
    } else {
        buf.extend_from_slice(b"\"-Infinity\"");
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// A JSON string, escaped as serde_json escapes: quote, backslash and control characters;
/// runs of other bytes are copied whole.
fn write_str(buf: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    buf.reserve(bytes.len() + 2);
    buf.push(b'"');
    // Most text needs no escaping: a check without early exits (which the compiler vectorizes),
    // then one copy.
    let plain = bytes.iter().fold(true, |plain, &b| {
        plain & (b >= 0x20) & (b != b'"') & (b != b'\\')
    });
    if plain {
        buf.extend_from_slice(bytes);
        buf.push(b'"');
        return;
    }
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let short: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f => b"",
            _ => continue,
        };
        buf.extend_from_slice(&bytes[start..i]);
        if short.is_empty() {
            buf.extend_from_slice(b"\\u00");
            buf.push(HEX[usize::from(b >> 4)]);
            buf.push(HEX[usize::from(b & 0xf)]);
        } else {
            buf.extend_from_slice(short);
        }
        start = i + 1;
    }
    buf.extend_from_slice(&bytes[start..]);
    buf.push(b'"');
}

/// Shared handle used by tests and tools that only need the value mapping.
pub fn value_to_json(value: &Value) -> serde_json::Value {
    let mut buf = Vec::new();
    write_value(&mut buf, &mut Scratch::default(), value);
    serde_json::from_slice(&buf).expect("write_value writes valid JSON")
}

#[cfg(test)]
mod tests;
