//! Values in Postgres' text form, escaped for `COPY … FROM STDIN` (text format): what the sink
//! streams into its staging tables.

use std::fmt::Write as _;

use sluice_core::value::{self, Date, Decimal, Timestamp, Value};

/// Appends one value as a COPY text field (`\N` for NULL).
pub(super) fn write_field(out: &mut Vec<u8>, text: &mut String, value: &Value) {
    if let Value::Null = value {
        out.extend_from_slice(b"\\N");
        return;
    }
    text.clear();
    write_text(text, value);
    escape(out, text);
}

/// The value's Postgres input text (unescaped).
pub(in crate::postgres) fn write_text(text: &mut String, value: &Value) {
    match value {
        Value::Null | Value::Unavailable => {}
        Value::Bool(b) => text.push(if *b { 't' } else { 'f' }),
        Value::Int8(v) => push_int(text, *v),
        Value::Int16(v) => push_int(text, *v),
        Value::Int32(v) => push_int(text, *v),
        Value::Int64(v) => push_int(text, *v),
        Value::UInt8(v) => push_int(text, *v),
        Value::UInt16(v) => push_int(text, *v),
        Value::UInt32(v) => push_int(text, *v),
        Value::UInt64(v) => push_int(text, *v),
        Value::Float32(v) => push_float(text, f64::from(*v), v.to_string()),
        Value::Float64(v) => push_float(text, *v, v.to_string()),
        Value::Decimal(d) => match d {
            Decimal::Finite(digits) => text.push_str(digits),
            Decimal::NaN => text.push_str("NaN"),
            Decimal::PositiveInfinity => text.push_str("Infinity"),
            Decimal::NegativeInfinity => text.push_str("-Infinity"),
        },
        Value::Text(s) => text.push_str(s),
        Value::Json(s) | Value::Enum(s) => text.push_str(s),
        Value::Bytes(b) => {
            text.push_str("\\x");
            for byte in b.iter() {
                let _ = write!(text, "{byte:02x}");
            }
        }
        Value::Uuid(u) => text.push_str(&value::uuid_to_string(u)),
        Value::Date(Date::Days(days)) => value::write_sql_date(text, i64::from(*days)),
        Value::Date(Date::PositiveInfinity) => text.push_str("infinity"),
        Value::Date(Date::NegativeInfinity) => text.push_str("-infinity"),
        Value::Time(micros) => value::write_time_of_day(text, *micros),
        Value::TimeTz {
            micros,
            offset_seconds,
        } => {
            value::write_time_of_day(text, *micros);
            value::write_offset(text, *offset_seconds);
        }
        Value::Timestamp(ts) | Value::TimestampTz(ts) => {
            match ts {
                Timestamp::Micros(micros) => value::write_sql_timestamp(text, *micros),
                Timestamp::PositiveInfinity => text.push_str("infinity"),
                Timestamp::NegativeInfinity => text.push_str("-infinity"),
            }
            if matches!(value, Value::TimestampTz(Timestamp::Micros(_))) {
                // Before the BC suffix would be wrong; the offset goes after the time.
                if text.ends_with(" BC") {
                    text.truncate(text.len() - 3);
                    text.push_str("+00 BC");
                } else {
                    text.push_str("+00");
                }
            }
        }
        Value::Interval(interval) => {
            let _ = write!(text, "{interval}");
        }
        Value::Array(items) => write_array(text, items),
        Value::Set(labels) => text.push_str(&labels.join(",")),
    }
}

/// `{a,"b c",NULL}`: elements quoted when needed, nested arrays for more dimensions.
fn write_array(text: &mut String, items: &[Value]) {
    text.push('{');
    let mut element = String::new();
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            text.push(',');
        }
        match item {
            Value::Null => text.push_str("NULL"),
            Value::Array(inner) => write_array(text, inner),
            other => {
                element.clear();
                write_text(&mut element, other);
                let plain = !element.is_empty()
                    && !element.eq_ignore_ascii_case("null")
                    && !element
                        .chars()
                        .any(|c| matches!(c, '{' | '}' | ',' | '"' | '\\') || c.is_whitespace());
                if plain {
                    text.push_str(&element);
                } else {
                    text.push('"');
                    for c in element.chars() {
                        if c == '"' || c == '\\' {
                            text.push('\\');
                        }
                        text.push(c);
                    }
                    text.push('"');
                }
            }
        }
    }
    text.push('}');
}

fn push_int(text: &mut String, value: impl itoa::Integer) {
    text.push_str(itoa::Buffer::new().format(value));
}

fn push_float(text: &mut String, value: f64, shortest: String) {
    if value.is_nan() {
        text.push_str("NaN");
    } else if value.is_infinite() {
        text.push_str(if value > 0.0 { "Infinity" } else { "-Infinity" });
    } else {
        text.push_str(&shortest);
    }
}

/// COPY text escaping: backslash, tab, newline and carriage return.
fn escape(out: &mut Vec<u8>, text: &str) {
    let bytes = text.as_bytes();
    let special = |b: &u8| matches!(b, b'\\' | b'\t' | b'\n' | b'\r');
    if !bytes.iter().any(special) {
        out.extend_from_slice(bytes);
        return;
    }
    for &byte in bytes {
        match byte {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b => out.push(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_core::value::Interval;

    fn field(value: &Value) -> String {
        let mut out = Vec::new();
        write_field(&mut out, &mut String::new(), value);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn values_in_copy_text() {
        assert_eq!(field(&Value::Null), "\\N");
        assert_eq!(field(&Value::Text("a\tb\\c\nd".into())), "a\\tb\\\\c\\nd");
        assert_eq!(field(&Value::Bytes(vec![0, 255].into())), "\\\\x00ff");
        assert_eq!(field(&Value::Date(Date::Days(0))), "1970-01-01");
        assert_eq!(field(&Value::Date(Date::Days(-719_163))), "0001-12-31 BC");
        assert_eq!(
            field(&Value::TimestampTz(Timestamp::Micros(1_500))),
            "1970-01-01 00:00:00.0015+00"
        );
        assert_eq!(
            field(&Value::Timestamp(Timestamp::PositiveInfinity)),
            "infinity"
        );
        assert_eq!(field(&Value::Float64(f64::NAN)), "NaN");
        assert_eq!(
            field(&Value::Array(vec![
                Value::Text("a b".into()),
                Value::Null,
                Value::Text("x\"y".into()),
                Value::Array(vec![Value::Int32(1)]),
            ])),
            "{\"a b\",NULL,\"x\\\\\"y\",{1}}"
        );
        assert_eq!(
            field(&Value::Interval(Interval {
                months: 14,
                days: 3,
                micros: 4_000_000
            })),
            "P1Y2M3DT4S"
        );
    }
}
