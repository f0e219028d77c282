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

use std::borrow::Cow;

use base64::Engine;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value as Json;
use sluice_core::event::{Column, DataType};

use super::scan;

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

    /// A text value in this form, appended to `out`; false (nothing appended) when the text
    /// is not one this form reads, so the value stays as it is.
    fn write_text(&self, text: &str, out: &mut Vec<u8>) -> bool {
        match self {
            Form::Same | Form::Array(_) => return false,
            Form::Scaled(scale) => match decimal_bytes(text, Some(*scale)) {
                Some((_, bytes)) => write_base64(out, &bytes),
                None => return false,
            },
            Form::Money => match decimal_bytes(&money_digits(text), Some(2)) {
                Some((_, bytes)) => write_base64(out, &bytes),
                None => return false,
            },
            Form::VariableScale => match decimal_bytes(text, None) {
                Some((scale, bytes)) => {
                    out.extend_from_slice(b"{\"scale\":");
                    write_number(out, i64::from(scale));
                    out.extend_from_slice(b",\"value\":");
                    write_base64(out, &bytes);
                    out.push(b'}');
                }
                // NaN and the infinities: Debezium writes null.
                None => out.extend_from_slice(b"null"),
            },
            // Digits, a sign and a point: nothing to escape.
            Form::DecimalText => write_plain_string(out, &money_digits(text)),
            Form::DecimalNumber => match money_digits(text)
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
            {
                Some(number) => {
                    serde_json::to_writer(&mut *out, &number).expect("a number serializes")
                }
                None => return false,
            },
            Form::Bool => match text {
                "1" => out.extend_from_slice(b"true"),
                "0" => out.extend_from_slice(b"false"),
                _ => return false,
            },
            Form::Bits => match bits_bytes(text) {
                Some(bytes) => write_base64(out, &bytes),
                None => return false,
            },
            Form::Point => match point(text) {
                Some(point) => {
                    serde_json::to_writer(&mut *out, &point).expect("a point serializes")
                }
                None => return false,
            },
            Form::TimeTzUtc => match timetz_utc(text) {
                Some(time) => write_plain_string(out, &time),
                None => return false,
            },
            Form::IntervalMicros => match interval_micros(text) {
                Some(micros) => write_number(out, micros),
                None => return false,
            },
        }
        true
    }

    /// A value (raw JSON, not null) in this form, appended to `out`; values it cannot read are
    /// copied as they are.
    fn write(&self, json: &str, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
        match (self, json.as_bytes().first()) {
            (Form::Array(element), Some(b'[')) => {
                let items: Vec<&RawValue> = serde_json::from_str(json)?;
                out.push(b'[');
                for (n, item) in items.into_iter().enumerate() {
                    if n > 0 {
                        out.push(b',');
                    }
                    match item.get() {
                        "null" => out.extend_from_slice(b"null"),
                        item => element.write(item, out)?,
                    }
                }
                out.push(b']');
            }
            (_, Some(b'"')) => {
                let text = match scan::plain_string(json) {
                    Some(text) => Cow::Borrowed(text),
                    None => serde_json::from_str::<Key<'_>>(json)?.0,
                };
                if text == super::UNAVAILABLE_VALUE || !self.write_text(&text, out) {
                    out.extend_from_slice(json.as_bytes());
                }
            }
            _ => out.extend_from_slice(json.as_bytes()),
        }
        Ok(())
    }
}

/// `bytes` in base64, as a JSON string.
fn write_base64(out: &mut Vec<u8>, bytes: &[u8]) {
    let start = out.len() + 1;
    let length = base64::encoded_len(bytes.len(), true).expect("a value's length fits");
    // The quotes, and the encoding between them.
    out.resize(start + length + 1, b'"');
    base64::engine::general_purpose::STANDARD
        .encode_slice(bytes, &mut out[start..start + length])
        .expect("the buffer fits the encoding");
}

/// A string that needs no escaping (digits, signs, points, colons), quoted.
fn write_plain_string(out: &mut Vec<u8>, text: &str) {
    out.push(b'"');
    out.extend_from_slice(text.as_bytes());
    out.push(b'"');
}

fn base64_str(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
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

mod envelope;

pub use envelope::DebeziumJson;

/// A table version's columns: name and form, in the order the log's rows list them.
type Columns = Vec<(String, Form)>;

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

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(text: &str, scale: Option<u32>) -> String {
        base64_str(&decimal_bytes(text, scale).unwrap().1)
    }

    fn written(form: Form, json: &str) -> String {
        let mut out = b"x".to_vec();
        form.write(json, &mut out).unwrap();
        String::from_utf8(out[1..].to_vec()).unwrap()
    }

    #[test]
    fn values_are_written_in_their_form_as_json() {
        assert_eq!(written(Form::Scaled(3), r#""1234.567""#), r#""EtaH""#);
        assert_eq!(
            written(Form::VariableScale, r#""-0.000123""#),
            r#"{"scale":6,"value":"hQ=="}"#
        );
        assert_eq!(written(Form::VariableScale, r#""NaN""#), "null");
        assert_eq!(written(Form::Money, r#""-$1,234.50""#), r#""/h3G""#);
        assert_eq!(written(Form::DecimalText, r#""$12.34""#), r#""12.34""#);
        assert_eq!(written(Form::DecimalNumber, r#""-$1,234.5""#), "-1234.5");
        assert_eq!(written(Form::Bool, r#""1""#), "true");
        assert_eq!(written(Form::Bits, r#""101""#), r#""BQ==""#);
        assert_eq!(written(Form::IntervalMicros, r#""PT-1.25S""#), "-1250000");
        assert_eq!(
            written(Form::TimeTzUtc, r#""23:00:00-05:30""#),
            r#""04:30:00Z""#
        );
        // Arrays element by element, nulls kept; escaped text read; what a form cannot read
        // and what is not text stay as they are.
        assert_eq!(
            written(
                Form::Array(Box::new(Form::Scaled(1))),
                r#"["1.5",null,"\u0031"]"#
            ),
            r#"["Dw==",null,"Cg=="]"#
        );
        assert_eq!(
            written(Form::Scaled(2), r#""not a number""#),
            r#""not a number""#
        );
        assert_eq!(written(Form::Scaled(2), "12"), "12");
        assert_eq!(
            written(
                Form::Scaled(2),
                &format!("{:?}", super::super::UNAVAILABLE_VALUE)
            ),
            format!("{:?}", super::super::UNAVAILABLE_VALUE)
        );
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
