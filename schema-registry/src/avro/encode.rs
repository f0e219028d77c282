//! The Avro binary encoder: each key and value is Confluent's wire format (magic byte 0, the
//! schema id as a big-endian u32, then the Avro datum), written straight from sluice's values
//! into a buffer by walking the table's plan (`schema.rs`), with no intermediate Avro value
//! tree.
//!
//! Each table version's key and value schemas are registered (`register.rs`) under the topic's
//! subjects (`<topic>-key`, `<topic>-value`) before its first event is encoded.

use std::sync::Arc;

use sluice_core::clock::now_us;
use sluice_core::encode::{EncodeError, EncodedRecords, EventEncoder, TableVersion};
use sluice_core::event::{ChangeEvent, Op, SnapshotMarker, TableSchema, TxnBoundary};
use sluice_core::position::Position;
use sluice_core::value::{self, Date, Decimal, Timestamp, Value};

use super::register::{RegisteredTable, Registrar};
use super::schema::{DecimalHandling, FieldKind, FieldPlan};
use crate::json::{
    SourceBlock, TIMESTAMP_NEGATIVE_INFINITY_US, TIMESTAMP_POSITIVE_INFINITY_US, UNAVAILABLE_VALUE,
};
use crate::registry::Registry;

/// Confluent's wire-format magic byte.
pub const MAGIC: u8 = 0;

/// Encodes events as Avro with Confluent's wire header.
#[derive(Clone)]
pub struct AvroEncoder {
    registrar: Registrar,
    source: SourceBlock,
    tombstones_on_delete: bool,
    /// The last event's table (as the event referred to it) and its registration: events of
    /// one table come in runs, and this spares each a hash lookup, a comparison of columns and
    /// a reference count shared with the other encoding threads.
    last: Option<(Arc<TableSchema>, Arc<RegisteredTable>)>,
    /// The last event's source block, as written (see `SourceKey`).
    source_memo: Option<(SourceKey, Vec<u8>)>,
    text: String,
    /// `EventEncoder::set_processing_time`.
    processing_us: Option<i64>,
}

/// What an event's source block depends on, besides the encoder's constants: the same for every
/// row of a snapshot chunk or of a transaction.
#[derive(Clone)]
struct SourceKey {
    table: Option<Arc<TableSchema>>,
    commit_ts_us: i64,
    snapshot: SnapshotMarker,
    xid: Option<u64>,
    position: Position,
}

impl SourceKey {
    fn matches(&self, event: &ChangeEvent) -> bool {
        let same_table = match (&self.table, &event.table) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        same_table
            && self.commit_ts_us == event.commit_ts_us
            && self.snapshot == event.snapshot
            && self.xid == event.xid
            && self.position == event.position
    }
}

impl AvroEncoder {
    pub fn new(
        registry: Arc<Registry>,
        source: SourceBlock,
        tombstones_on_delete: bool,
        decimals: DecimalHandling,
    ) -> AvroEncoder {
        AvroEncoder {
            registrar: Registrar::new(registry, source.clone(), decimals),
            source,
            tombstones_on_delete,
            last: None,
            source_memo: None,
            text: String::new(),
            processing_us: None,
        }
    }

    /// The event's table and registration, taken out of `last` (the caller puts them back).
    fn take_table(
        &mut self,
        event: &ChangeEvent,
    ) -> Result<(Arc<TableSchema>, Arc<RegisteredTable>), EncodeError> {
        let table = event.table.as_ref().expect("checked by the caller");
        match self.last.take() {
            Some(last) if Arc::ptr_eq(&last.0, table) => Ok(last),
            _ => Ok((Arc::clone(table), self.registrar.table(table)?)),
        }
    }
}

impl EventEncoder for AvroEncoder {
    fn prepare_table(
        &mut self,
        table: &Arc<TableSchema>,
        held: bool,
    ) -> Result<TableVersion, EncodeError> {
        self.last = None;
        self.registrar.prepare(table, held)
    }

    fn release_held(&mut self, held_topic: &str, topic: &str) -> Result<TableVersion, EncodeError> {
        self.registrar.release(held_topic, topic)
    }

    fn set_processing_time(&mut self, now_us: i64) {
        self.processing_us = Some(now_us);
    }

    fn encode_boundary(
        &mut self,
        boundary: &TxnBoundary,
        out: &mut EncodedRecords,
    ) -> Result<(), EncodeError> {
        self.boundary(boundary, out)
    }

    fn encode(&mut self, event: &ChangeEvent, out: &mut EncodedRecords) -> Result<(), EncodeError> {
        let Some(table) = &event.table else {
            if event.op != Op::Message {
                return Err(EncodeError {
                    table: "?".into(),
                    reason: format!("a {:?} event has no table", event.op),
                });
            }
            let id = self.registrar.message_value_id()?;
            let now = self.processing_us.unwrap_or_else(now_us);
            let (value, ()) = out.write(|buf| {
                write_header(buf, id);
                write_message(buf, &self.source, event, now);
            });
            out.push(None, Some(value));
            return Ok(());
        };
        let last = self.take_table(event)?;
        let result = self.encode_row(event, table, &last.1, out);
        self.last = Some(last);
        result
    }
}

impl AvroEncoder {
    /// A transaction boundary as Debezium's Avro converter writes it: key
    /// `TransactionMetadataKey {id}`, value `TransactionMetadataValue`, both registered under
    /// the transaction topic's subjects.
    fn boundary(
        &mut self,
        boundary: &TxnBoundary,
        out: &mut EncodedRecords,
    ) -> Result<(), EncodeError> {
        let (key_id, value_id) = self.registrar.transaction_ids()?;
        let (key, ()) = out.write(|buf| {
            write_header(buf, key_id);
            write_str(buf, &boundary.id);
        });
        let (value, ()) = out.write(|buf| {
            write_header(buf, value_id);
            write_str(buf, boundary.status());
            write_str(buf, &boundary.id);
            write_optional_long(buf, boundary.event_count().map(|n| n as i64));
            match &boundary.end {
                Some(tables) => {
                    write_long(buf, 1);
                    if !tables.is_empty() {
                        write_long(buf, tables.len() as i64);
                        for (table, count) in tables {
                            write_str(buf, table);
                            write_long(buf, *count as i64);
                        }
                    }
                    write_long(buf, 0);
                }
                None => write_long(buf, 0),
            }
            write_long(buf, boundary.commit_ts_us.div_euclid(1000));
        });
        out.push(Some(key), Some(value));
        Ok(())
    }

    fn encode_row(
        &mut self,
        event: &ChangeEvent,
        table: &Arc<TableSchema>,
        registered: &RegisteredTable,
        out: &mut EncodedRecords,
    ) -> Result<(), EncodeError> {
        let fail = |reason: ValueError| EncodeError {
            table: table.table.to_string(),
            reason: reason.0,
        };
        if !self
            .source_memo
            .as_ref()
            .is_some_and(|(key, _)| key.matches(event))
        {
            let mut bytes = self.source_memo.take().map(|(_, b)| b).unwrap_or_default();
            bytes.clear();
            write_source(&mut bytes, &self.source, event);
            let key = SourceKey {
                table: event.table.clone(),
                commit_ts_us: event.commit_ts_us,
                snapshot: event.snapshot,
                xid: event.xid,
                position: event.position.clone(),
            };
            self.source_memo = Some((key, bytes));
        }
        let source = self.source_memo.as_ref().map_or(&[][..], |(_, b)| &b[..]);
        let row = event.after.as_deref().or(event.before.as_deref());
        let text = &mut self.text;
        let key = match (registered.key_id, row) {
            (Some(key_id), Some(row)) if event.op != Op::Truncate => {
                let (key, written) = out.write(|buf| {
                    write_header(buf, key_id);
                    write_fields(buf, text, &registered.plan.key, row)
                });
                written.map_err(&fail)?;
                Some(key)
            }
            _ => None,
        };
        let now = self.processing_us.unwrap_or_else(now_us);
        let (value, written) = out.write(|buf| {
            write_header(buf, registered.value_id);
            for row in [event.before.as_deref(), event.after.as_deref()] {
                match row {
                    // A truncate has neither; a delete under REPLICA IDENTITY DEFAULT has a
                    // key-only before image whose other columns are null.
                    Some(row) if !matches!(event.op, Op::Truncate) => {
                        write_long(buf, 1);
                        write_fields(buf, text, &registered.plan.row, row)?;
                    }
                    _ => write_long(buf, 0),
                }
            }
            buf.extend_from_slice(source);
            write_str(buf, event.op.code());
            write_times_and_txn(buf, event, now);
            Ok(())
        });
        written.map_err(&fail)?;
        out.push(key, Some(value));
        if event.op == Op::Delete && self.tombstones_on_delete && key.is_some() {
            out.push(key, None);
        }
        Ok(())
    }
}

/// Magic byte and schema id.
pub fn write_header(buf: &mut Vec<u8>, id: u32) {
    buf.push(MAGIC);
    buf.extend_from_slice(&id.to_be_bytes());
}

/// Avro `long`/`int`: zig-zag varint.
pub fn write_long(buf: &mut Vec<u8>, value: i64) {
    let mut n = ((value << 1) ^ (value >> 63)) as u64;
    while n >= 0x80 {
        buf.push((n as u8) | 0x80);
        n >>= 7;
    }
    buf.push(n as u8);
}

pub fn write_bytes(buf: &mut Vec<u8>, bytes: &[u8]) {
    write_long(buf, bytes.len() as i64);
    buf.extend_from_slice(bytes);
}

pub fn write_str(buf: &mut Vec<u8>, text: &str) {
    write_bytes(buf, text.as_bytes());
}

fn write_optional_str(buf: &mut Vec<u8>, text: Option<&str>) {
    match text {
        Some(text) => {
            write_long(buf, 1);
            write_str(buf, text);
        }
        None => write_long(buf, 0),
    }
}

fn write_optional_long(buf: &mut Vec<u8>, value: Option<i64>) {
    match value {
        Some(value) => {
            write_long(buf, 1);
            write_long(buf, value);
        }
        None => write_long(buf, 0),
    }
}

sluice_core::reason_error!(
    /// A value that does not fit its column's Avro type (or a key column without a value).
    pub ValueError
);

/// The fields of a key or row record, in plan order.
fn write_fields(
    buf: &mut Vec<u8>,
    text: &mut String,
    fields: &[FieldPlan],
    row: &[Value],
) -> Result<(), ValueError> {
    for field in fields {
        let value = row.get(field.column).unwrap_or(&Value::Null);
        match (value, field.nullable) {
            (Value::Null, true) => write_long(buf, 0),
            (Value::Null, false) => {
                return Err(format!(
                    "key column {} is NULL; a key needs a value in every column",
                    field.name
                )
                .into())
            }
            (value, nullable) => {
                if nullable {
                    write_long(buf, 1);
                }
                write_value(buf, text, &field.kind, value)
                    .map_err(|why| format!("column {}: {why}", field.name))?;
            }
        }
    }
    Ok(())
}

fn mismatch(kind: &FieldKind, value: &Value) -> ValueError {
    ValueError(format!(
        "a {value:?} value does not fit the column's Avro type ({kind:?})"
    ))
}

/// One non-null value as `kind`.
pub fn write_value(
    buf: &mut Vec<u8>,
    text: &mut String,
    kind: &FieldKind,
    value: &Value,
) -> Result<(), ValueError> {
    if let Value::Unavailable = value {
        return match kind {
            FieldKind::String
            | FieldKind::Json
            | FieldKind::Text
            | FieldKind::DecimalText
            | FieldKind::Bytes => {
                write_str(buf, UNAVAILABLE_VALUE);
                Ok(())
            }
            _ => Err(format!(
                "the source did not send this unchanged TOASTed value and Avro type {kind:?} has \
                 no placeholder for it; set REPLICA IDENTITY FULL on the table"
            )
            .into()),
        };
    }
    match (kind, value) {
        (FieldKind::Boolean, Value::Bool(b)) => buf.push(u8::from(*b)),
        (FieldKind::Int | FieldKind::Long, _) => {
            let n = match value {
                Value::Int8(v) => i64::from(*v),
                Value::Int16(v) => i64::from(*v),
                Value::Int32(v) => i64::from(*v),
                Value::UInt8(v) => i64::from(*v),
                Value::UInt16(v) => i64::from(*v),
                Value::Int64(v) if *kind == FieldKind::Long => *v,
                Value::UInt32(v) if *kind == FieldKind::Long => i64::from(*v),
                _ => return Err(mismatch(kind, value)),
            };
            write_long(buf, n);
        }
        (FieldKind::Float, Value::Float32(v)) => buf.extend_from_slice(&v.to_le_bytes()),
        (FieldKind::Double, Value::Float64(v)) => buf.extend_from_slice(&v.to_le_bytes()),
        (FieldKind::Double, Value::Float32(v)) => {
            buf.extend_from_slice(&f64::from(*v).to_le_bytes())
        }
        (FieldKind::Decimal { scale, .. }, Value::Decimal(Decimal::Finite(digits))) => {
            match small_unscaled(digits, *scale) {
                Some(unscaled) => write_twos_complement(buf, unscaled),
                None => write_bytes(buf, &unscaled_bytes(digits, *scale)?),
            }
        }
        (FieldKind::Decimal { .. }, Value::UInt64(v)) => {
            write_bytes(buf, &minimal_twos_complement(&i128::from(*v).to_be_bytes()));
        }
        (FieldKind::Decimal { .. }, Value::Decimal(special)) => {
            return Err(format!(
                "{special} cannot be carried by an Avro decimal; set `avro_decimals = \"string\"` \
                 on the source to carry decimals as exact text"
            )
            .into())
        }
        (FieldKind::DecimalText, Value::Decimal(d)) => {
            text.clear();
            use std::fmt::Write as _;
            let _ = write!(text, "{d}");
            write_str(buf, text);
        }
        (FieldKind::DecimalText, Value::UInt64(v)) => write_str(buf, &v.to_string()),
        (FieldKind::String | FieldKind::Text, Value::Text(s)) => write_str(buf, s),
        (FieldKind::String | FieldKind::Text, Value::Enum(s)) => write_str(buf, s),
        (FieldKind::Json | FieldKind::String | FieldKind::Text, Value::Json(s)) => {
            write_str(buf, s)
        }
        (FieldKind::Bytes, Value::Bytes(b)) => write_bytes(buf, b),
        (FieldKind::Uuid, Value::Uuid(u)) => write_str(buf, &value::uuid_to_string(u)),
        (FieldKind::Date, Value::Date(date)) => write_long(
            buf,
            i64::from(match date {
                Date::Days(days) => *days,
                Date::PositiveInfinity => i32::MAX,
                Date::NegativeInfinity => i32::MIN,
            }),
        ),
        (FieldKind::TimeMicros, Value::Time(micros)) => write_long(buf, *micros),
        (FieldKind::TimestampMicros, Value::TimestampTz(ts))
        | (FieldKind::LocalTimestampMicros, Value::Timestamp(ts)) => write_long(
            buf,
            match ts {
                Timestamp::Micros(micros) => *micros,
                Timestamp::PositiveInfinity => TIMESTAMP_POSITIVE_INFINITY_US,
                Timestamp::NegativeInfinity => TIMESTAMP_NEGATIVE_INFINITY_US,
            },
        ),
        (
            FieldKind::Text,
            Value::TimeTz {
                micros,
                offset_seconds,
            },
        ) => {
            text.clear();
            value::write_time_of_day(text, *micros);
            value::write_offset(text, *offset_seconds);
            write_str(buf, text);
        }
        (FieldKind::Text, Value::Interval(interval)) => write_str(buf, &interval.to_string()),
        (FieldKind::Text | FieldKind::String, Value::Set(labels)) => {
            write_str(buf, &labels.join(","))
        }
        (FieldKind::Array(element), Value::Array(items)) => {
            if !items.is_empty() {
                write_long(buf, items.len() as i64);
                for item in items {
                    match item {
                        Value::Null => write_long(buf, 0),
                        Value::Array(_) if !matches!(**element, FieldKind::Array(_)) => {
                            return Err("multi-dimensional arrays cannot be carried by the Avro \
                                        encoding (its array schema has one dimension); use the \
                                        json encoding for this table"
                                .into())
                        }
                        item => {
                            write_long(buf, 1);
                            write_value(buf, text, element, item)?;
                        }
                    }
                }
            }
            write_long(buf, 0);
        }
        _ => return Err(mismatch(kind, value)),
    }
    Ok(())
}

/// The unscaled integer of a plain decimal text (`-123.45`) at `scale`, when it has at most
/// `scale` decimal places and fits an i128 comfortably; None sends the caller to
/// [`unscaled_bytes`], which handles (and explains) everything else.
fn small_unscaled(text: &str, scale: u32) -> Option<i128> {
    let (negative, digits) = match text.as_bytes().split_first()? {
        (b'-', rest) => (true, rest),
        _ => (false, text.as_bytes()),
    };
    let mut unscaled: i128 = 0;
    let (mut seen, mut places, mut point) = (0usize, 0u32, false);
    for &b in digits {
        match b {
            b'0'..=b'9' if seen < 36 => {
                unscaled = unscaled * 10 + i128::from(b - b'0');
                seen += 1;
                places += u32::from(point);
            }
            b'.' if !point => point = true,
            _ => return None,
        }
    }
    if seen == 0 || places > scale || scale - places + seen as u32 > 37 {
        return None;
    }
    let unscaled = unscaled * 10i128.pow(scale - places);
    Some(if negative { -unscaled } else { unscaled })
}

/// An Avro `bytes` holding `value` as minimal big-endian two's complement.
fn write_twos_complement(buf: &mut Vec<u8>, value: i128) {
    write_bytes(buf, sign_trimmed(&value.to_be_bytes()));
}

/// The unscaled integer of a decimal text at `scale`, as Avro's big-endian two's complement.
pub fn unscaled_bytes(text: &str, scale: u32) -> Result<Vec<u8>, ValueError> {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let scale = scale as usize;
    let frac = if frac.len() > scale {
        let (kept, dropped) = frac.split_at(scale);
        if dropped.bytes().any(|b| b != b'0') {
            return Err(format!(
                "{text} has more than {scale} decimal places, which the column's Avro decimal \
                 cannot hold exactly"
            )
            .into());
        }
        kept
    } else {
        frac
    };
    let mut all = String::with_capacity(int.len() + scale);
    all.push_str(int);
    all.push_str(frac);
    all.extend(std::iter::repeat_n('0', scale - frac.len()));
    let all = all.trim_start_matches('0');
    if all.len() <= 38 {
        let magnitude: i128 = if all.is_empty() {
            0
        } else {
            all.parse()
                .map_err(|_| format!("{text} is not a decimal"))?
        };
        let unscaled = if negative { -magnitude } else { magnitude };
        return Ok(minimal_twos_complement(&unscaled.to_be_bytes()));
    }
    // Longer than i128: base-10 digits into base-256, little-endian, then two's complement.
    let mut magnitude: Vec<u8> = vec![0];
    for digit in all.bytes() {
        if !digit.is_ascii_digit() {
            return Err(format!("{text} is not a decimal").into());
        }
        let mut carry = u32::from(digit - b'0');
        for byte in magnitude.iter_mut() {
            let v = u32::from(*byte) * 10 + carry;
            *byte = v as u8;
            carry = v >> 8;
        }
        while carry > 0 {
            magnitude.push(carry as u8);
            carry >>= 8;
        }
    }
    magnitude.push(0); // room for the sign bit
    if negative {
        let mut carry = 1u16;
        for byte in magnitude.iter_mut() {
            let v = u16::from(!*byte) + carry;
            *byte = v as u8;
            carry = v >> 8;
        }
    }
    magnitude.reverse();
    Ok(minimal_twos_complement(&magnitude))
}

/// Drops leading bytes that only repeat the sign.
fn minimal_twos_complement(bytes: &[u8]) -> Vec<u8> {
    sign_trimmed(bytes).to_vec()
}

/// `bytes` (big-endian two's complement) without the leading bytes that only repeat the sign.
fn sign_trimmed(bytes: &[u8]) -> &[u8] {
    let mut start = 0;
    while start + 1 < bytes.len() {
        let (b, next) = (bytes[start], bytes[start + 1]);
        if (b == 0 && next & 0x80 == 0) || (b == 0xff && next & 0x80 != 0) {
            start += 1;
        } else {
            break;
        }
    }
    &bytes[start..]
}

fn write_source(buf: &mut Vec<u8>, source: &SourceBlock, event: &ChangeEvent) {
    write_str(buf, concat!("sluice-", env!("CARGO_PKG_VERSION")));
    write_str(buf, source.connector);
    write_str(buf, &source.name);
    write_long(buf, event.commit_ts_us.div_euclid(1000));
    write_long(buf, event.commit_ts_us);
    write_str(buf, event.snapshot.as_str());
    write_str(buf, &source.db);
    let table = event.table.as_ref().map(|t| &t.table);
    if source.connector == "postgresql" {
        write_optional_str(buf, table.map(|t| t.namespace.as_str()));
        write_optional_str(buf, table.map(|t| t.name.as_str()));
        write_optional_long(buf, event.xid.map(|x| x as i64));
        let lsn = match &event.position {
            Position::PgLsn(lsn) => Some(lsn.0 as i64),
            _ => None,
        };
        write_optional_long(buf, lsn);
    } else {
        write_optional_str(buf, table.map(|t| t.name.as_str()));
        let (gtid, file, pos) = match &event.position {
            Position::MysqlGtidSet(g) | Position::MariadbGtidList(g) => (Some(&**g), None, None),
            Position::BinlogFile { file, offset } => (None, Some(&**file), Some(*offset as i64)),
            Position::PgLsn(_) | Position::KafkaOffsets(_) => (None, None, None),
        };
        write_optional_str(buf, gtid);
        write_optional_str(buf, file);
        write_optional_long(buf, pos);
    }
}

/// `ts_ms`, `ts_us` and `transaction`, the envelope's last fields.
fn write_times_and_txn(buf: &mut Vec<u8>, event: &ChangeEvent, now: i64) {
    write_optional_long(buf, Some(now.div_euclid(1000)));
    write_optional_long(buf, Some(now));
    write_txn(buf, event);
}

fn write_txn(buf: &mut Vec<u8>, event: &ChangeEvent) {
    match &event.txn {
        Some(txn) => {
            write_long(buf, 1);
            write_str(buf, &txn.id);
            write_long(buf, txn.total_order as i64);
            // data_collection_order: null unless tracked (the source's transaction_metadata).
            let order = txn.data_collection_order;
            write_optional_long(buf, (order > 0).then_some(order as i64));
        }
        None => write_long(buf, 0),
    }
}

fn write_message(buf: &mut Vec<u8>, source: &SourceBlock, event: &ChangeEvent, now: i64) {
    write_str(buf, event.op.code());
    write_optional_long(buf, Some(now.div_euclid(1000)));
    write_optional_long(buf, Some(now));
    write_source(buf, source, event);
    let (prefix, content) = event
        .message
        .as_ref()
        .map_or(("", &[][..]), |m| (m.prefix.as_str(), &m.content[..]));
    write_str(buf, prefix);
    write_bytes(buf, content);
    write_txn(buf, event);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_decimals_encode_like_the_general_path() {
        let cases = [
            ("0", 0),
            ("0", 2),
            ("1", 2),
            ("-1", 2),
            ("249.46", 2),
            ("-249.46", 2),
            ("0.01", 2),
            ("-0.5", 3),
            ("127", 0),
            ("128", 0),
            ("-128", 0),
            ("-129", 0),
            ("32767.99", 2),
            ("99999999999999999999999999999999999", 0),
            ("12.3", 5),
            ("-0.000", 3),
        ];
        for (text, scale) in cases {
            let mut expected = Vec::new();
            write_bytes(&mut expected, &unscaled_bytes(text, scale).unwrap());
            let unscaled = small_unscaled(text, scale).unwrap_or_else(|| panic!("{text}"));
            let mut fast = Vec::new();
            write_twos_complement(&mut fast, unscaled);
            assert_eq!(fast, expected, "{text} at scale {scale}");
        }
        // Left to the general path: too many places or digits, or not a plain decimal.
        let nines = "9".repeat(40);
        for (text, scale) in [
            ("1.234", 2),
            (nines.as_str(), 0),
            ("1e5", 0),
            ("", 0),
            ("-", 0),
            ("1.2.3", 2),
        ] {
            assert_eq!(small_unscaled(text, scale), None, "{text}");
        }
    }
}
