//! Conversions of sluice's values the sinks that store typed columns share (ClickHouse,
//! Iceberg): integers of any width, decimals as unscaled integers, values as text where a
//! destination keeps them as text, and a value's kind for messages.

use std::fmt::Write as _;

use sluice_core::value::{self, Date, Timestamp, Value};

/// The value of any integer type (and booleans as 0/1).
pub fn integer(value: &Value) -> Option<i128> {
    Some(match value {
        Value::Bool(b) => i128::from(*b),
        Value::Int8(v) => (*v).into(),
        Value::Int16(v) => (*v).into(),
        Value::Int32(v) => (*v).into(),
        Value::Int64(v) => (*v).into(),
        Value::UInt8(v) => (*v).into(),
        Value::UInt16(v) => (*v).into(),
        Value::UInt32(v) => (*v).into(),
        Value::UInt64(v) => (*v).into(),
        _ => return None,
    })
}

/// `digits` (a plain decimal) times 10^scale, if it has at most `precision` digits then and
/// no more fraction digits than `scale`.
pub fn unscaled(digits: &str, precision: u32, scale: u32) -> Option<i128> {
    let (negative, digits) = match digits.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, digits),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let frac = frac.trim_end_matches('0');
    if frac.len() > scale as usize {
        return None;
    }
    let int = int.trim_start_matches('0');
    if int.len() + scale as usize > precision as usize {
        return None;
    }
    let mut v: i128 = 0;
    for b in int.bytes().chain(frac.bytes()) {
        v = v * 10 + i128::from(b - b'0');
    }
    v *= 10i128.pow(scale - frac.len() as u32);
    Some(if negative { -v } else { v })
}

/// What kind of value `value` is, for messages ("a text value does not fit ...").
pub fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "NULL",
        Value::Bool(_) => "boolean",
        Value::Int8(_) | Value::Int16(_) | Value::Int32(_) | Value::Int64(_) => "integer",
        Value::UInt8(_) | Value::UInt16(_) | Value::UInt32(_) | Value::UInt64(_) => "unsigned",
        Value::Float32(_) | Value::Float64(_) => "float",
        Value::Decimal(_) => "decimal",
        Value::Text(_) => "text",
        Value::Bytes(_) => "bytes",
        Value::Uuid(_) => "uuid",
        Value::Json(_) => "json",
        Value::Date(_) => "date",
        Value::Time(_) | Value::TimeTz { .. } => "time",
        Value::Timestamp(_) | Value::TimestampTz(_) => "timestamp",
        Value::Interval(_) => "interval",
        Value::Array(_) => "array",
        Value::Enum(_) => "enum",
        Value::Set(_) => "set",
        Value::Unavailable => "unavailable",
    }
}

/// The value as text: what a String column holds of a value of another type (times as
/// `HH:MM:SS.ffffff`, intervals as ISO 8601, timestamps as `YYYY-MM-DD HH:MM:SS.ffffff`,
/// arrays as JSON).
pub fn write_text(out: &mut String, value: &Value) {
    match value {
        Value::Null | Value::Unavailable => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Int8(v) => push(out, v),
        Value::Int16(v) => push(out, v),
        Value::Int32(v) => push(out, v),
        Value::Int64(v) => push(out, v),
        Value::UInt8(v) => push(out, v),
        Value::UInt16(v) => push(out, v),
        Value::UInt32(v) => push(out, v),
        Value::UInt64(v) => push(out, v),
        Value::Float32(v) => push(out, v),
        Value::Float64(v) => push(out, v),
        Value::Decimal(d) => push(out, d),
        Value::Text(text) => out.push_str(text),
        Value::Enum(label) => out.push_str(label),
        Value::Json(text) => out.push_str(text),
        Value::Bytes(bytes) => out.push_str(&String::from_utf8_lossy(bytes)),
        Value::Uuid(bytes) => out.push_str(&value::uuid_to_string(bytes)),
        Value::Date(Date::Days(days)) => value::write_sql_date(out, i64::from(*days)),
        Value::Date(Date::PositiveInfinity)
        | Value::Timestamp(Timestamp::PositiveInfinity)
        | Value::TimestampTz(Timestamp::PositiveInfinity) => out.push_str("infinity"),
        Value::Date(Date::NegativeInfinity)
        | Value::Timestamp(Timestamp::NegativeInfinity)
        | Value::TimestampTz(Timestamp::NegativeInfinity) => out.push_str("-infinity"),
        Value::Time(micros) => value::write_time_of_day(out, *micros),
        Value::TimeTz {
            micros,
            offset_seconds,
        } => {
            value::write_time_of_day(out, *micros);
            value::write_offset(out, *offset_seconds);
        }
        Value::Timestamp(Timestamp::Micros(micros))
        | Value::TimestampTz(Timestamp::Micros(micros)) => value::write_sql_timestamp(out, *micros),
        Value::Interval(interval) => push(out, interval),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                match item {
                    Value::Null => out.push_str("null"),
                    _ => {
                        let mut text = String::new();
                        write_text(&mut text, item);
                        push(out, serde_json::Value::String(text));
                    }
                }
            }
            out.push(']');
        }
        Value::Set(labels) => out.push_str(&labels.join(",")),
    }
}

fn push(out: &mut String, value: impl std::fmt::Display) {
    let _ = write!(out, "{value}");
}
