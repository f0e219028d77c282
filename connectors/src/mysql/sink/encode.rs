//! Values as MySQL SQL literals (the sink sends multi-row statements as text, so they are built
//! here, escaped for the session's sql_mode, which the sink sets without NO_BACKSLASH_ESCAPES).

use std::fmt::Write as _;

use sluice_core::value::{self, Date, Decimal, Timestamp, Value};

/// Appends `value` as a literal. Values MySQL has no form for (NaN, ±infinity) are written as
/// strings, which strict mode rejects: the event then goes to the dead-letter topic.
pub(super) fn write_literal(out: &mut String, scratch: &mut String, value: &Value) {
    match value {
        Value::Null | Value::Unavailable => out.push_str("NULL"),
        Value::Bool(b) => out.push(if *b { '1' } else { '0' }),
        Value::Int8(v) => push_int(out, *v),
        Value::Int16(v) => push_int(out, *v),
        Value::Int32(v) => push_int(out, *v),
        Value::Int64(v) => push_int(out, *v),
        Value::UInt8(v) => push_int(out, *v),
        Value::UInt16(v) => push_int(out, *v),
        Value::UInt32(v) => push_int(out, *v),
        Value::UInt64(v) => push_int(out, *v),
        Value::Float32(v) if v.is_finite() => {
            let _ = write!(out, "{v:e}");
        }
        Value::Float64(v) if v.is_finite() => {
            let _ = write!(out, "{v:e}");
        }
        Value::Float32(_) | Value::Float64(_) => quote(out, "NaN"),
        Value::Decimal(Decimal::Finite(digits)) => out.push_str(digits),
        Value::Decimal(special) => quote(out, &special.to_string()),
        Value::Text(s) => quote(out, s),
        Value::Json(s) | Value::Enum(s) => quote(out, s),
        Value::Bytes(b) => {
            out.push_str("X'");
            for byte in b.iter() {
                let _ = write!(out, "{byte:02x}");
            }
            out.push('\'');
        }
        Value::Uuid(u) => quote(out, &value::uuid_to_string(u)),
        Value::Date(Date::Days(days)) => {
            scratch.clear();
            value::write_sql_date(scratch, i64::from(*days));
            quote(out, scratch);
        }
        Value::Date(_) => quote(out, "infinity"),
        Value::Time(micros) => {
            scratch.clear();
            value::write_time_of_day(scratch, *micros);
            quote(out, scratch);
        }
        Value::TimeTz {
            micros,
            offset_seconds,
        } => {
            scratch.clear();
            value::write_time_of_day(scratch, *micros);
            value::write_offset(scratch, *offset_seconds);
            quote(out, scratch);
        }
        Value::Timestamp(Timestamp::Micros(micros))
        | Value::TimestampTz(Timestamp::Micros(micros)) => {
            scratch.clear();
            value::write_sql_timestamp(scratch, *micros);
            quote(out, scratch);
        }
        Value::Timestamp(_) | Value::TimestampTz(_) => quote(out, "infinity"),
        Value::Interval(interval) => quote(out, &interval.to_string()),
        Value::Array(_) => {
            let mut json = Vec::new();
            let mut json_scratch = sluice_schema_registry::json::Scratch::default();
            sluice_schema_registry::json::write_value(&mut json, &mut json_scratch, value);
            quote(out, &String::from_utf8_lossy(&json));
        }
        Value::Set(labels) => quote(out, &labels.join(",")),
    }
}

fn push_int(out: &mut String, value: impl itoa::Integer) {
    out.push_str(itoa::Buffer::new().format(value));
}

/// `'…'` with MySQL's backslash escapes.
fn quote(out: &mut String, text: &str) {
    out.push('\'');
    for c in text.chars() {
        match c {
            '\0' => out.push_str("\\0"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '"' => out.push_str("\\\""),
            '\u{1a}' => out.push_str("\\Z"),
            c => out.push(c),
        }
    }
    out.push('\'');
}

/// `` `name` ``.
pub(super) fn ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn literal(value: &Value) -> String {
        let mut out = String::new();
        write_literal(&mut out, &mut String::new(), value);
        out
    }

    #[test]
    fn literals() {
        assert_eq!(
            literal(&Value::Text("it's a \\ \"x\"\n".into())),
            "'it\\'s a \\\\ \\\"x\\\"\\n'"
        );
        assert_eq!(literal(&Value::Bytes(vec![0, 255].into())), "X'00ff'");
        assert_eq!(literal(&Value::Null), "NULL");
        assert_eq!(literal(&Value::UInt64(u64::MAX)), "18446744073709551615");
        assert_eq!(literal(&Value::Float64(0.5)), "5e-1");
        assert_eq!(
            literal(&Value::Timestamp(Timestamp::Micros(1_500))),
            "'1970-01-01 00:00:00.0015'"
        );
        assert_eq!(
            literal(&Value::Array(vec![Value::Int32(1), Value::Null])),
            "'[1,null]'"
        );
        assert_eq!(ident("we`ird"), "`we``ird`");
    }
}
