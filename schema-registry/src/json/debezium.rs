//! Debezium's own value forms, for consumers that read Debezium's topics today (the Kafka sink's
//! default): a log record's JSON envelope rewritten the way Debezium 3.6's Postgres connector
//! with its defaults writes the same change. Compared field by field with Debezium 3.6.1 itself
//! by the `kafka_debezium` integration test.
//!
//! What changes against the log's exact forms (each switchable, see [`DebeziumForms`]):
//! - `numeric(p,s)`, MySQL `decimal` and `money`: the unscaled value's big-endian two's
//!   complement bytes, base64 (`decimal.handling.mode = precise`); unconstrained `numeric`: the
//!   struct `{"scale","value"}`; NaN and ±Infinity: null.
//! - `interval`: microseconds, a month counted as 30.4375 days (`interval.handling.mode =
//!   numeric`).
//! - `timetz`: the time in UTC, `08:15:30.5Z`.
//! - `bit(1)`: a boolean; `bit(n)`, `varbit`: the bits as a little-endian number's bytes.
//! - `point`: `{"x","y","wkb","srid"}`.
//! - The envelope: `transaction` null unless transaction metadata is asked for; `ts_ns` beside
//!   `ts_ms`/`ts_us`; the source block with `sequence`, `ts_ns`, `xmin`, `origin` and
//!   `origin_lsn`; a truncate with `before` and `after` null; Debezium's field order.

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine;
use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value as Json;
use sluice_core::change::DecodeError;
use sluice_core::event::{Column, DataType};
use sluice_core::sink::SinkRecord;

use crate::avro::decode::is_framed;
use crate::avro::rows::plan_of;
use crate::changes::header_schema_id;
use crate::registry::Registry;

/// How decimals (and `money`) are written (Debezium's `decimal.handling.mode`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecimalHandling {
    /// Debezium's default: scaled bytes, base64.
    #[default]
    Precise,
    /// The exact decimal as text (`"1234.567"`, `money` without its currency sign).
    String,
    /// A JSON number (may lose digits).
    Double,
}

/// How intervals are written (Debezium's `interval.handling.mode`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IntervalHandling {
    /// Debezium's default: microseconds, a month counted as 30.4375 days.
    #[default]
    Numeric,
    /// ISO-8601, `P1Y2M3DT4H5M6.5S`: months and days kept apart.
    String,
}

/// How `timetz` values are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeTzHandling {
    /// Debezium's: the time in UTC, `08:15:30.5Z`.
    #[default]
    Utc,
    /// The source's offset kept, `10:15:30.5+02:00`.
    Offset,
}

/// The choices a Debezium-form writer makes; the defaults are Debezium's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DebeziumForms {
    pub decimal: DecimalHandling,
    pub interval: IntervalHandling,
    pub timetz: TimeTzHandling,
    /// Keep each event's `transaction` block (Debezium's `provide.transaction.metadata`);
    /// off, it is null, as Debezium writes it by default.
    pub transaction_metadata: bool,
}

/// What one column's values become.
#[derive(Debug, Clone, PartialEq)]
enum Form {
    Same,
    /// A decimal of fixed scale, as bytes / text / number.
    Scaled(u32),
    /// An unconstrained `numeric`: `{"scale","value"}`.
    VariableScale,
    /// `money`: the text carries a currency sign and separators; scale 2.
    Money,
    DecimalText,
    DecimalNumber,
    Bool,
    Bits,
    Point,
    TimeTzUtc,
    IntervalMicros,
    Array(Box<Form>),
}

impl Form {
    fn of(column: &Column, forms: &DebeziumForms) -> Form {
        Form::for_type(&column.data_type, &column.type_name, forms)
    }

    fn for_type(data_type: &DataType, type_name: &str, forms: &DebeziumForms) -> Form {
        let name = type_name.trim();
        match data_type {
            DataType::Array(element) => {
                let element_name = name.strip_suffix("[]").unwrap_or(name);
                match Form::for_type(element, element_name, forms) {
                    Form::Same => Form::Same,
                    form => Form::Array(Box::new(form)),
                }
            }
            DataType::Decimal { scale, precision } => match forms.decimal {
                DecimalHandling::Precise => match (precision, scale) {
                    (Some(_), Some(scale)) => Form::Scaled(*scale),
                    _ => Form::VariableScale,
                },
                DecimalHandling::String => Form::Same,
                DecimalHandling::Double => Form::DecimalNumber,
            },
            DataType::Text if name == "money" => match forms.decimal {
                DecimalHandling::Precise => Form::Money,
                DecimalHandling::String => Form::DecimalText,
                DecimalHandling::Double => Form::DecimalNumber,
            },
            DataType::Text if name == "bit(1)" || name == "bit" => Form::Bool,
            DataType::Text if name.starts_with("bit(") || name.starts_with("bit varying") => {
                Form::Bits
            }
            DataType::Text if name == "point" => Form::Point,
            DataType::TimeTz if forms.timetz == TimeTzHandling::Utc => Form::TimeTzUtc,
            DataType::Interval if forms.interval == IntervalHandling::Numeric => {
                Form::IntervalMicros
            }
            _ => Form::Same,
        }
    }

    /// The value in this form; values it cannot read stay as they are.
    fn apply(&self, value: Json) -> Json {
        let Json::String(text) = &value else {
            return match (self, value) {
                (Form::Array(element), Json::Array(items)) => {
                    Json::Array(items.into_iter().map(|v| element.apply(v)).collect())
                }
                (_, value) => value,
            };
        };
        if text == super::UNAVAILABLE_VALUE {
            return value;
        }
        let converted = match self {
            Form::Same | Form::Array(_) => None,
            Form::Scaled(scale) => decimal_bytes(text, Some(*scale)).map(|(_, b)| base64(&b)),
            Form::Money => decimal_bytes(&money_digits(text), Some(2)).map(|(_, b)| base64(&b)),
            Form::VariableScale => Some(match decimal_bytes(text, None) {
                Some((scale, bytes)) => {
                    serde_json::json!({"scale": scale, "value": base64(&bytes)})
                }
                // NaN and the infinities: Debezium writes null.
                None => Json::Null,
            }),
            Form::DecimalText => Some(Json::String(money_digits(text))),
            Form::DecimalNumber => {
                let digits = money_digits(text);
                digits
                    .parse::<f64>()
                    .ok()
                    .and_then(|f| serde_json::Number::from_f64(f).map(Json::Number))
            }
            Form::Bool => match text.as_str() {
                "1" => Some(Json::Bool(true)),
                "0" => Some(Json::Bool(false)),
                _ => None,
            },
            Form::Bits => bits_bytes(text).map(|b| Json::String(base64_str(&b))),
            Form::Point => point(text),
            Form::TimeTzUtc => timetz_utc(text).map(Json::String),
            Form::IntervalMicros => interval_micros(text).map(Json::from),
        };
        converted.unwrap_or(value)
    }
}

fn base64_str(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn base64(bytes: &[u8]) -> Json {
    Json::String(base64_str(bytes))
}

/// The digits, point and sign of a `money` text (`-$1,234.56` → `-1234.56`).
fn money_digits(text: &str) -> String {
    let negative = text.starts_with('-') || text.starts_with('(');
    let mut out = String::with_capacity(text.len());
    if negative {
        out.push('-');
    }
    out.extend(text.chars().filter(|c| c.is_ascii_digit() || *c == '.'));
    out
}

/// A plain decimal's scale and unscaled value as Java's `BigInteger.toByteArray` writes it
/// (big-endian two's complement, shortest); `scale` pads (or trims zeros from) the fraction.
/// None for text that is not a plain decimal (NaN, infinities).
fn decimal_bytes(text: &str, scale: Option<u32>) -> Option<(u32, Vec<u8>)> {
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (whole, fraction) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    if whole.is_empty() && fraction.is_empty()
        || !whole
            .bytes()
            .chain(fraction.bytes())
            .all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let mut fraction = fraction.to_owned();
    let scale = match scale {
        Some(scale) => {
            let scale = scale as usize;
            while fraction.len() > scale && fraction.ends_with('0') {
                fraction.pop();
            }
            while fraction.len() < scale {
                fraction.push('0');
            }
            fraction.len()
        }
        None => fraction.len(),
    };
    // The magnitude, big-endian base 256.
    let mut magnitude: Vec<u8> = Vec::new();
    for digit in whole
        .bytes()
        .chain(fraction.bytes())
        .map(|b| u32::from(b - b'0'))
    {
        let mut carry = digit;
        for byte in magnitude.iter_mut().rev() {
            let v = u32::from(*byte) * 10 + carry;
            *byte = v as u8;
            carry = v >> 8;
        }
        while carry > 0 {
            magnitude.insert(0, carry as u8);
            carry >>= 8;
        }
    }
    if magnitude.is_empty() {
        return Some((scale as u32, vec![0]));
    }
    if !negative {
        if magnitude[0] & 0x80 != 0 {
            magnitude.insert(0, 0);
        }
        return Some((scale as u32, magnitude));
    }
    // Two's complement: invert and add one.
    for byte in magnitude.iter_mut() {
        *byte = !*byte;
    }
    for byte in magnitude.iter_mut().rev() {
        let (sum, overflow) = byte.overflowing_add(1);
        *byte = sum;
        if !overflow {
            break;
        }
    }
    if magnitude[0] & 0x80 == 0 {
        magnitude.insert(0, 0xff);
    }
    Some((scale as u32, magnitude))
}

/// A bit string (`1010000011`) as the bytes of the number it spells, least significant byte
/// first, as short as the highest set bit allows (Debezium's `Bits`: empty for zero).
fn bits_bytes(text: &str) -> Option<Vec<u8>> {
    let mut bytes = vec![0u8; text.len().div_ceil(8)];
    for (i, bit) in text.bytes().rev().enumerate() {
        match bit {
            b'1' => bytes[i / 8] |= 1 << (i % 8),
            b'0' => {}
            _ => return None,
        }
    }
    while bytes.last() == Some(&0) {
        bytes.pop();
    }
    Some(bytes)
}

/// `(1.5,-2)` as Debezium's Point struct, with its well-known binary (little-endian).
fn point(text: &str) -> Option<Json> {
    let inner = text.trim().strip_prefix('(')?.strip_suffix(')')?;
    let (x, y) = inner.split_once(',')?;
    let (x, y): (f64, f64) = (x.trim().parse().ok()?, y.trim().parse().ok()?);
    let mut wkb = vec![1u8, 1, 0, 0, 0];
    wkb.extend_from_slice(&x.to_le_bytes());
    wkb.extend_from_slice(&y.to_le_bytes());
    Some(serde_json::json!({"x": x, "y": y, "wkb": base64_str(&wkb), "srid": null}))
}

/// `HH:MM:SS[.ffffff]±hh[:mm[:ss]]` → the same instant of the day in UTC, `HH:MM:SS[.f]Z`
/// (seconds always, the fraction without trailing zeros, as Java's ISO_OFFSET_TIME).
fn timetz_utc(text: &str) -> Option<String> {
    let at = text.rfind(['+', '-'])?;
    let (time, offset) = text.split_at(at);
    let mut parts = time.split(':');
    let hours: i64 = parts.next()?.parse().ok()?;
    let minutes: i64 = parts.next()?.parse().ok()?;
    let seconds = parts.next().unwrap_or("0");
    let (whole, fraction) = seconds.split_once('.').unwrap_or((seconds, ""));
    let seconds: i64 = whole.parse().ok()?;
    if fraction.len() > 6 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let micros_part: i64 = format!("{fraction:0<6}").parse().ok()?;
    let sign = if offset.starts_with('-') { -1 } else { 1 };
    let mut offset_parts = offset[1..].split(':');
    let offset_seconds = offset_parts.next()?.parse::<i64>().ok()? * 3600
        + offset_parts.next().unwrap_or("0").parse::<i64>().ok()? * 60
        + offset_parts.next().unwrap_or("0").parse::<i64>().ok()?;
    let day = 86_400_000_000i64;
    let local = ((hours * 60 + minutes) * 60 + seconds) * 1_000_000 + micros_part;
    let utc = (local - sign * offset_seconds * 1_000_000).rem_euclid(day);
    let secs = utc / 1_000_000;
    let mut out = format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60);
    let frac = utc % 1_000_000;
    if frac != 0 {
        let digits = format!("{frac:06}");
        out.push('.');
        out.push_str(digits.trim_end_matches('0'));
    }
    out.push('Z');
    Some(out)
}

/// An ISO-8601 duration as sluice writes intervals (`P1Y2M3DT4H5M6.5S`, signed parts) →
/// Debezium's microseconds: months of 30.4375 days (2,629,800 s), days of 86,400 s.
fn interval_micros(text: &str) -> Option<i64> {
    let rest = text.strip_prefix('P')?;
    let (date, time) = rest.split_once('T').unwrap_or((rest, ""));
    let mut months: i64 = 0;
    let mut days: i64 = 0;
    let mut micros: i64 = 0;
    for (number, unit) in sluice_core::value::iso_duration_parts(date)? {
        let n: i64 = number.parse().ok()?;
        match unit {
            'Y' => months += n * 12,
            'M' => months += n,
            'D' => days += n,
            'W' => days += n * 7,
            _ => return None,
        }
    }
    for (number, unit) in sluice_core::value::iso_duration_parts(time)? {
        match unit {
            'H' => micros += number.parse::<i64>().ok()? * 3_600_000_000,
            'M' => micros += number.parse::<i64>().ok()? * 60_000_000,
            'S' => {
                let negative = number.starts_with('-');
                let digits = number.trim_start_matches(['-', '+']);
                let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
                if fraction.len() > 6 {
                    return None;
                }
                let value = whole.parse::<i64>().ok()? * 1_000_000
                    + format!("{fraction:0<6}").parse::<i64>().ok()?;
                micros += if negative { -value } else { value };
            }
            _ => return None,
        }
    }
    Some((months * 2_629_800 + days * 86_400) * 1_000_000 + micros)
}

/// Rewrites the log's JSON envelopes in Debezium's forms, typed by their registered schemas.
/// Values that keep their form are copied as they are, without being parsed.
pub struct DebeziumJson {
    registry: Arc<Registry>,
    forms: DebeziumForms,
    /// Per schema id: each column's name and form, in order (None: a schema without a
    /// table, or whose columns all keep their form).
    tables: HashMap<u32, Option<Arc<Columns>>>,
}

/// A table version's columns: name and form, in the order the log's rows list them.
type Columns = Vec<(String, Form)>;

/// A log envelope, its parts borrowed as they are.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, default)]
    before: Option<Members<'a>>,
    #[serde(borrow, default)]
    after: Option<Members<'a>>,
    #[serde(borrow, default)]
    source: Option<Members<'a>>,
    #[serde(borrow)]
    op: Cow<'a, str>,
    #[serde(borrow, default)]
    ts_ms: Option<&'a RawValue>,
    #[serde(default)]
    ts_us: Option<i64>,
    #[serde(borrow, default)]
    transaction: Option<&'a RawValue>,
    #[serde(borrow, default)]
    message: Option<&'a RawValue>,
}

/// A JSON object's members in order, their values borrowed as they are.
struct Members<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de: 'a, 'a> Deserialize<'de> for Members<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visit<'a> {
            type Value = Members<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                mut map: M,
            ) -> Result<Members<'a>, M::Error> {
                let mut members = Vec::with_capacity(map.size_hint().unwrap_or(16));
                while let Some((Key(key), value)) = map.next_entry::<Key<'de>, &'de RawValue>()? {
                    members.push((key, value));
                }
                Ok(Members(members))
            }
        }
        deserializer.deserialize_map(Visit(std::marker::PhantomData))
    }
}

/// An object member's name, borrowed unless it has escapes (serde's `Cow<str>` always copies).
struct Key<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Key<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visit<'a> {
            type Value = Key<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a member name")
            }
            fn visit_borrowed_str<E>(self, name: &'de str) -> Result<Key<'a>, E> {
                Ok(Key(Cow::Borrowed(name)))
            }
            fn visit_str<E>(self, name: &str) -> Result<Key<'a>, E> {
                Ok(Key(Cow::Owned(name.to_owned())))
            }
        }
        deserializer.deserialize_str(Visit(std::marker::PhantomData))
    }
}

impl<'a> Members<'a> {
    fn get(&self, name: &str) -> Option<&'a RawValue> {
        self.0
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| *value)
    }
}

impl DebeziumJson {
    pub fn new(registry: Arc<Registry>, forms: DebeziumForms) -> DebeziumJson {
        DebeziumJson {
            registry,
            forms,
            tables: HashMap::new(),
        }
    }

    fn columns(&mut self, id: u32) -> Result<Option<Arc<Columns>>, String> {
        if let Some(columns) = self.tables.get(&id) {
            return Ok(columns.clone());
        }
        let stored = self
            .registry
            .schema(id)
            .map_err(|e| format!("schema id {id}: {}", e.message))?;
        let json: Json =
            serde_json::from_str(&stored.text).map_err(|e| format!("schema id {id}: {e}"))?;
        let plan = plan_of(&json).map_err(|e| format!("schema id {id}: {}", e.0))?;
        let columns = plan
            .map(|plan| {
                plan.table
                    .columns
                    .iter()
                    .map(|c| (c.name.clone(), Form::of(c, &self.forms)))
                    .collect::<Columns>()
            })
            .filter(|columns| columns.iter().any(|(_, form)| *form != Form::Same))
            .map(Arc::new);
        self.tables.insert(id, columns.clone());
        Ok(columns)
    }

    /// The record's value in Debezium's forms into `out`; false when the value stays as it is
    /// (a tombstone, or an Avro record: Avro keeps the log's schema).
    pub fn transcode(
        &mut self,
        record: &SinkRecord,
        out: &mut Vec<u8>,
    ) -> Result<bool, DecodeError> {
        out.clear();
        let Some(value) = record.record.value.as_deref() else {
            return Ok(false);
        };
        self.transcode_value(value, header_schema_id(record), out)
            .map_err(|reason| DecodeError::at(record, reason))
    }

    /// A value (whose registered schema is `schema_id`, from its header) in Debezium's forms,
    /// appended to `out`; false (nothing appended) when it stays as it is (Avro).
    pub fn transcode_value(
        &mut self,
        value: &[u8],
        schema_id: Option<u32>,
        out: &mut Vec<u8>,
    ) -> Result<bool, String> {
        if is_framed(value) {
            return Ok(false);
        }
        let columns = match schema_id {
            Some(id) => self.columns(id)?,
            None => None,
        };
        let start = out.len();
        self.envelope(value, columns.as_deref(), out).map_err(|e| {
            out.truncate(start);
            format!("the value is not a JSON envelope: {e}")
        })?;
        Ok(true)
    }

    fn envelope(
        &self,
        value: &[u8],
        columns: Option<&Columns>,
        out: &mut Vec<u8>,
    ) -> Result<(), serde_json::Error> {
        let envelope: Envelope<'_> = serde_json::from_slice(value)?;
        out.push(b'{');
        if envelope.op != "m" {
            for (n, (side, row)) in [("before", envelope.before), ("after", envelope.after)]
                .into_iter()
                .enumerate()
            {
                if n > 0 {
                    out.push(b',');
                }
                write_key(out, side);
                match row {
                    Some(row) => write_row(out, &row, columns)?,
                    None => out.extend_from_slice(b"null"),
                }
            }
            out.push(b',');
        }
        // A Postgres transaction's id is `xid:commit LSN`.
        #[derive(Deserialize)]
        struct Transaction<'a> {
            #[serde(borrow)]
            id: Option<Cow<'a, str>>,
        }
        let transaction = envelope.transaction.filter(|t| t.get() != "null");
        let commit_lsn = match transaction {
            Some(raw) => serde_json::from_str::<Transaction<'_>>(raw.get())?
                .id
                .and_then(|id| id.split_once(':')?.1.parse::<u64>().ok()),
            None => None,
        };
        if let Some(source) = envelope.source {
            write_key(out, "source");
            write_source(out, source, commit_lsn);
            out.push(b',');
        }
        write_key(out, "transaction");
        match transaction {
            Some(raw) if self.forms.transaction_metadata => {
                out.extend_from_slice(raw.get().as_bytes())
            }
            _ => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"op\":");
        serde_json::to_writer(&mut *out, envelope.op.as_ref())?;
        if let Some(ts) = envelope.ts_ms {
            out.extend_from_slice(b",\"ts_ms\":");
            out.extend_from_slice(ts.get().as_bytes());
        }
        if let Some(us) = envelope.ts_us {
            out.extend_from_slice(b",\"ts_us\":");
            write_number(out, us);
            out.extend_from_slice(b",\"ts_ns\":");
            write_number(out, us.saturating_mul(1000));
        }
        if let Some(message) = envelope.message {
            out.extend_from_slice(b",\"message\":");
            out.extend_from_slice(message.get().as_bytes());
        }
        out.push(b'}');
        Ok(())
    }
}

fn write_key(out: &mut Vec<u8>, key: &str) {
    // Most names need no escaping: copied as they are.
    if key.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push(b'"');
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(b"\":");
        return;
    }
    serde_json::to_writer(&mut *out, key).expect("a string serializes");
    out.push(b':');
}

fn write_number(out: &mut Vec<u8>, n: i64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// A row object, its columns in their Debezium form (`columns`: the table's, in order; none:
/// every value as it is).
fn write_row(
    out: &mut Vec<u8>,
    row: &Members<'_>,
    columns: Option<&Columns>,
) -> Result<(), serde_json::Error> {
    out.push(b'{');
    for (n, (name, value)) in row.0.iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        write_key(out, name);
        // Rows list the table's columns in order; a name elsewhere is looked up.
        let form = columns.and_then(|columns| match columns.get(n) {
            Some((column, form)) if column == name => Some(form),
            _ => columns.iter().find(|(c, _)| c == name).map(|(_, f)| f),
        });
        match form {
            Some(form) if *form != Form::Same && value.get() != "null" => {
                let converted = form.apply(serde_json::from_str(value.get())?);
                serde_json::to_writer(&mut *out, &converted)?;
            }
            _ => out.extend_from_slice(value.get().as_bytes()),
        }
    }
    out.push(b'}');
    Ok(())
}

/// The source block in Debezium's order, with its fields sluice does not track (`xmin`,
/// `origin`, `origin_lsn`: null) and `sequence` and `ts_ns` derived.
fn write_source(out: &mut Vec<u8>, source: Members<'_>, commit_lsn: Option<u64>) {
    let postgres = source.get("connector").map(RawValue::get) == Some("\"postgresql\"");
    let mut written: Vec<&str> = Vec::with_capacity(source.0.len() + 6);
    let mut first = true;
    let mut field = |out: &mut Vec<u8>, name: &str, value: &[u8]| {
        if !std::mem::take(&mut first) {
            out.push(b',');
        }
        write_key(out, name);
        out.extend_from_slice(value);
    };
    out.push(b'{');
    for name in ["version", "connector", "name", "ts_ms", "snapshot", "db"] {
        if let Some(value) = source.get(name) {
            field(out, name, value.get().as_bytes());
            written.push(name);
        }
    }
    let lsn = source.get("lsn").and_then(|l| l.get().parse::<u64>().ok());
    let snapshot = source
        .get("snapshot")
        .is_some_and(|s| s.get() != "\"false\"");
    let sequence = match (postgres, lsn) {
        // Debezium's `[last commit LSN, this LSN]`, as a JSON text: sluice puts the commit LSN
        // of the event's own transaction first (it orders events the same way).
        (true, Some(lsn)) => {
            let commit = commit_lsn
                .filter(|_| !snapshot)
                .map_or(Json::Null, |c| Json::String(c.to_string()));
            let text = serde_json::to_string(&[commit, Json::String(lsn.to_string())])
                .expect("strings serialize");
            serde_json::to_vec(&text).expect("a string serializes")
        }
        _ => b"null".to_vec(),
    };
    field(out, "sequence", &sequence);
    if let Some(us) = source.get("ts_us") {
        field(out, "ts_us", us.get().as_bytes());
        written.push("ts_us");
        if let Ok(us) = us.get().parse::<i64>() {
            let mut ns = Vec::new();
            write_number(&mut ns, us.saturating_mul(1000));
            field(out, "ts_ns", &ns);
        }
    }
    if postgres {
        for name in [
            "schema",
            "table",
            "txId",
            "lsn",
            "xmin",
            "origin",
            "origin_lsn",
        ] {
            let value = source
                .get(name)
                .map_or(&b"null"[..], |v| v.get().as_bytes());
            field(out, name, value);
            written.push(name);
        }
    }
    for (name, value) in &source.0 {
        if !written.contains(&name.as_ref()) && name != "ts_ns" && name != "sequence" {
            field(out, name, value.get().as_bytes());
        }
    }
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(text: &str, scale: Option<u32>) -> String {
        base64_str(&decimal_bytes(text, scale).unwrap().1)
    }

    #[test]
    fn decimals_are_javas_big_integer_bytes() {
        // As Debezium 3.6.1 wrote them for the same values.
        assert_eq!(b64("1234.567", Some(3)), "EtaH");
        assert_eq!(decimal_bytes("-0.000123", None).unwrap().0, 6);
        assert_eq!(b64("-0.000123", None), "hQ==");
        assert_eq!(b64(&money_digits("$12.34"), Some(2)), "BNI=");
        assert_eq!(b64(&money_digits("-$1,234.50"), Some(2)), "/h3G");
        // Edges of two's complement.
        assert_eq!(decimal_bytes("0", Some(0)).unwrap().1, vec![0]);
        assert_eq!(decimal_bytes("128", Some(0)).unwrap().1, vec![0, 0x80]);
        assert_eq!(decimal_bytes("-128", Some(0)).unwrap().1, vec![0x80]);
        assert_eq!(decimal_bytes("-129", Some(0)).unwrap().1, vec![0xff, 0x7f]);
        assert_eq!(decimal_bytes("-256", Some(0)).unwrap().1, vec![0xff, 0x00]);
        assert_eq!(decimal_bytes("-1", Some(0)).unwrap().1, vec![0xff]);
        assert_eq!(decimal_bytes("1.5", Some(3)).unwrap().1, vec![0x05, 0xdc]);
        assert!(decimal_bytes("NaN", None).is_none());
        assert!(decimal_bytes("Infinity", Some(2)).is_none());
    }

    #[test]
    fn bits_points_times_and_intervals_take_debeziums_forms() {
        assert_eq!(base64_str(&bits_bytes("1010000011").unwrap()), "gwI=");
        assert_eq!(base64_str(&bits_bytes("0000000001").unwrap()), "AQ==");
        assert_eq!(base64_str(&bits_bytes("101").unwrap()), "BQ==");
        assert_eq!(bits_bytes("00000000000").unwrap(), Vec::<u8>::new());
        assert_eq!(
            point("(1.5,-2)").unwrap(),
            serde_json::json!({"x": 1.5, "y": -2.0, "wkb": "AQEAAAAAAAAAAAD4PwAAAAAAAADA", "srid": null})
        );
        assert_eq!(timetz_utc("10:15:30.5+02:00").unwrap(), "08:15:30.5Z");
        assert_eq!(timetz_utc("23:00:00-05:30").unwrap(), "04:30:00Z");
        assert_eq!(
            timetz_utc("00:00:00.000001+00:00").unwrap(),
            "00:00:00.000001Z"
        );
        assert_eq!(
            interval_micros("P1Y2M3DT4H5M6.5S").unwrap(),
            37_091_106_500_000
        );
        assert_eq!(interval_micros("P-1M-2DT1S").unwrap(), -2_802_599_000_000);
        assert_eq!(interval_micros("PT-1.25S").unwrap(), -1_250_000);
        assert_eq!(interval_micros("PT0S").unwrap(), 0);
        assert!(interval_micros("1 day").is_none());
    }
}
