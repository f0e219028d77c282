//! Values as the transforms see them: one text form per value (what `mask` hashes, what
//! filters compare, what `set` templates print) and numbers for numeric comparisons.

use std::fmt::Write as _;

use crate::value::{self, Date, Decimal, Timestamp, Value};

/// The value's text: ISO forms for dates and times, canonical digits for decimals, lowercase
/// hex for bytes, JSON arrays for arrays and sets. `None` for null and values the source did
/// not send.
pub fn text_form(value: &Value) -> Option<String> {
    let mut out = String::new();
    match value {
        Value::Null | Value::Unavailable => return None,
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Int8(v) => out.push_str(&v.to_string()),
        Value::Int16(v) => out.push_str(&v.to_string()),
        Value::Int32(v) => out.push_str(&v.to_string()),
        Value::Int64(v) => out.push_str(&v.to_string()),
        Value::UInt8(v) => out.push_str(&v.to_string()),
        Value::UInt16(v) => out.push_str(&v.to_string()),
        Value::UInt32(v) => out.push_str(&v.to_string()),
        Value::UInt64(v) => out.push_str(&v.to_string()),
        Value::Float32(v) => out.push_str(&v.to_string()),
        Value::Float64(v) => out.push_str(&v.to_string()),
        Value::Decimal(d) => out.push_str(&d.to_string()),
        Value::Text(t) => out.push_str(t),
        Value::Bytes(b) => b.iter().for_each(|byte| {
            let _ = write!(out, "{byte:02x}");
        }),
        Value::Uuid(u) => out.push_str(&value::uuid_to_string(u)),
        Value::Json(j) => out.push_str(j),
        Value::Enum(e) => out.push_str(e),
        Value::Date(Date::Days(days)) => {
            let (y, m, d) = value::civil_from_days(i64::from(*days));
            let _ = write!(out, "{y:04}-{m:02}-{d:02}");
        }
        Value::Date(Date::PositiveInfinity) | Value::Timestamp(Timestamp::PositiveInfinity) => {
            out.push_str("infinity")
        }
        Value::Date(Date::NegativeInfinity) | Value::Timestamp(Timestamp::NegativeInfinity) => {
            out.push_str("-infinity")
        }
        Value::TimestampTz(Timestamp::PositiveInfinity) => out.push_str("infinity"),
        Value::TimestampTz(Timestamp::NegativeInfinity) => out.push_str("-infinity"),
        Value::Time(micros) => value::write_time_of_day(&mut out, *micros),
        Value::TimeTz {
            micros,
            offset_seconds,
        } => {
            value::write_time_of_day(&mut out, *micros);
            value::write_offset(&mut out, *offset_seconds);
        }
        Value::Timestamp(Timestamp::Micros(micros)) => {
            value::write_utc_timestamp(&mut out, *micros);
            out.pop();
        }
        Value::TimestampTz(Timestamp::Micros(micros)) => {
            value::write_utc_timestamp(&mut out, *micros)
        }
        Value::Interval(i) => out.push_str(&i.to_string()),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                match item {
                    Value::Null | Value::Unavailable => out.push_str("null"),
                    other => {
                        let text = text_form(other).unwrap_or_default();
                        if number(other).is_some() {
                            out.push_str(&text);
                        } else {
                            let _ = write!(out, "{:?}", text);
                        }
                    }
                }
            }
            out.push(']');
        }
        Value::Set(labels) => {
            let _ = write!(out, "{labels:?}");
        }
    }
    Some(out)
}

/// The value as a number, for numeric comparisons: integers, floats, finite decimals, and
/// text that holds a number.
pub fn number(value: &Value) -> Option<f64> {
    Some(match value {
        Value::Int8(v) => f64::from(*v),
        Value::Int16(v) => f64::from(*v),
        Value::Int32(v) => f64::from(*v),
        Value::Int64(v) => *v as f64,
        Value::UInt8(v) => f64::from(*v),
        Value::UInt16(v) => f64::from(*v),
        Value::UInt32(v) => f64::from(*v),
        Value::UInt64(v) => *v as f64,
        Value::Float32(v) => f64::from(*v),
        Value::Float64(v) => *v,
        Value::Decimal(Decimal::Finite(text)) => text.parse().ok()?,
        Value::Decimal(Decimal::NaN) => f64::NAN,
        Value::Decimal(Decimal::PositiveInfinity) => f64::INFINITY,
        Value::Decimal(Decimal::NegativeInfinity) => f64::NEG_INFINITY,
        Value::Text(text) => text.trim().parse().ok()?,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_have_one_text_form() {
        assert_eq!(text_form(&Value::Null), None);
        assert_eq!(
            text_form(&Value::Bytes(vec![0, 255].into())).unwrap(),
            "00ff"
        );
        assert_eq!(
            text_form(&Value::Date(Date::Days(19_724))).unwrap(),
            "2024-01-02"
        );
        let micros = 19_724 * value::MICROS_PER_DAY + 3_600_000_000;
        assert_eq!(
            text_form(&Value::TimestampTz(Timestamp::Micros(micros))).unwrap(),
            "2024-01-02T01:00:00Z"
        );
        assert_eq!(
            text_form(&Value::Timestamp(Timestamp::Micros(micros))).unwrap(),
            "2024-01-02T01:00:00"
        );
        let array = Value::Array(vec![
            Value::Int32(1),
            Value::Text("a\"b".into()),
            Value::Null,
        ]);
        assert_eq!(text_form(&array).unwrap(), r#"[1,"a\"b",null]"#);
        assert_eq!(number(&Value::Text(" 12.5 ".into())), Some(12.5));
        assert_eq!(number(&Value::Text("x".into())), None);
    }
}
