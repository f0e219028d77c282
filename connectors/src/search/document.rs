//! A row as a search document: the after image's columns by name, nulls as null, written
//! straight into a request body (no intermediate JSON tree), and the document id from the key.
//!
//! The two servers differ in what a value may look like:
//!
//! | column | OpenSearch / Elasticsearch | Typesense |
//! |---|---|---|
//! | exact decimal | string with the exact digits (mapped `scaled_float` or `double`: the document keeps every digit, the index its number) | number (`float`: Typesense has no exact type) |
//! | NaN, ±infinity | string (`"NaN"`, `"Infinity"`): a numeric field rejects it, to the dead-letter topic | same |
//! | date | `"2024-01-02"` (`date`) | same string |
//! | timestamp, timestamptz | ISO-8601 `"2024-01-02T03:04:05.123456"` (`Z` for timestamptz) | epoch milliseconds (`int64`) |
//! | json | the JSON value itself (`object`) | the JSON text (`string`) |
//! | bytes | base64 (`binary`) | base64 |
//! | time, timetz, interval, uuid | text (`keyword`) | text |
//! | arrays, MySQL SET | JSON arrays | arrays |
//!
//! Values the source could not send (unchanged TOASTed columns) are left out, so that a
//! partial update keeps what the index holds.

use std::io::Write as _;

use sluice_core::event::TableSchema;
use sluice_core::value::{self, Date, Decimal, Timestamp, Value, MICROS_PER_DAY};

/// Which server's value forms to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    OpenSearch,
    Typesense,
}

/// Writes `row` (values of `table`'s columns, in order) as a JSON object; `extra` fields (name,
/// JSON text) go first and take the place of columns of the same name (Typesense's `id`; the
/// fields an index holds for values the source did not send).
pub fn write_document(
    out: &mut Vec<u8>,
    table: &TableSchema,
    row: &[Value],
    flavor: Flavor,
    extra: &[(&str, &str)],
) {
    out.push(b'{');
    let mut first = true;
    for (name, json) in extra {
        if !first {
            out.push(b',');
        }
        first = false;
        write_str(out, name);
        out.push(b':');
        out.extend_from_slice(json.as_bytes());
    }
    for (column, value) in table.columns.iter().zip(row) {
        if matches!(value, Value::Unavailable) || extra.iter().any(|(name, _)| *name == column.name)
        {
            continue;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        write_str(out, &column.name);
        out.push(b':');
        write_value(out, value, flavor);
    }
    out.push(b'}');
}

/// The document id of a row: a one-column key's value as text, a composite key as the JSON
/// array of its values. `None` for tables without a key.
pub fn document_id(table: &TableSchema, row: &[Value]) -> Option<String> {
    let mut keys = table.key_columns().filter_map(|(i, _)| row.get(i));
    let first = keys.next()?;
    let second = keys.next();
    if second.is_none() {
        return Some(match first {
            Value::Text(text) => text.to_string(),
            Value::Enum(text) => text.clone(),
            Value::Uuid(bytes) => value::uuid_to_string(bytes),
            other => {
                let mut out = Vec::new();
                write_value(&mut out, other, Flavor::OpenSearch);
                let text = String::from_utf8(out).expect("JSON is UTF-8");
                // A JSON string's quotes are not part of the id (numbers have none).
                if text.starts_with('"') {
                    serde_json::from_str::<String>(&text).unwrap_or(text)
                } else {
                    text
                }
            }
        });
    }
    let mut out = vec![b'['];
    write_value(&mut out, first, Flavor::OpenSearch);
    for value in second.into_iter().chain(keys) {
        out.push(b',');
        write_value(&mut out, value, Flavor::OpenSearch);
    }
    out.push(b']');
    Some(String::from_utf8(out).expect("JSON is UTF-8"))
}

/// A JSON string.
pub fn write_str(out: &mut Vec<u8>, text: &str) {
    // serde_json's escaping; writing to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, text);
}

fn write_text(out: &mut Vec<u8>, text: impl std::fmt::Display) {
    write_str(out, &text.to_string());
}

/// One value in the flavor's form.
pub fn write_value(out: &mut Vec<u8>, value: &Value, flavor: Flavor) {
    let mut buf = itoa::Buffer::new();
    match value {
        Value::Null | Value::Unavailable => out.extend_from_slice(b"null"),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Int8(v) => out.extend_from_slice(buf.format(*v).as_bytes()),
        Value::Int16(v) => out.extend_from_slice(buf.format(*v).as_bytes()),
        Value::Int32(v) => out.extend_from_slice(buf.format(*v).as_bytes()),
        Value::Int64(v) => out.extend_from_slice(buf.format(*v).as_bytes()),
        Value::UInt8(v) => out.extend_from_slice(buf.format(*v).as_bytes()),
        Value::UInt16(v) => out.extend_from_slice(buf.format(*v).as_bytes()),
        Value::UInt32(v) => out.extend_from_slice(buf.format(*v).as_bytes()),
        Value::UInt64(v) => out.extend_from_slice(buf.format(*v).as_bytes()),
        Value::Float32(v) => write_float(out, f64::from(*v)),
        Value::Float64(v) => write_float(out, *v),
        Value::Decimal(Decimal::Finite(digits)) => match flavor {
            Flavor::OpenSearch => write_str(out, digits),
            Flavor::Typesense => write_decimal_number(out, digits),
        },
        Value::Decimal(Decimal::NaN) => write_str(out, "NaN"),
        Value::Decimal(Decimal::PositiveInfinity) => write_str(out, "Infinity"),
        Value::Decimal(Decimal::NegativeInfinity) => write_str(out, "-Infinity"),
        Value::Text(text) => write_str(out, text),
        Value::Enum(text) => write_str(out, text),
        Value::Bytes(bytes) => {
            use base64::Engine;
            write_str(
                out,
                &base64::engine::general_purpose::STANDARD.encode(bytes),
            );
        }
        Value::Uuid(bytes) => write_str(out, &value::uuid_to_string(bytes)),
        Value::Json(text) => match flavor {
            // The document holds the JSON itself, unless the source sent something that is not
            // JSON (then its text).
            Flavor::OpenSearch if serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok() => {
                out.extend_from_slice(text.as_bytes())
            }
            _ => write_str(out, text),
        },
        Value::Date(Date::Days(days)) => {
            let mut text = String::with_capacity(24);
            value::write_utc_timestamp(&mut text, i64::from(*days) * MICROS_PER_DAY);
            text.truncate(text.find('T').unwrap_or(text.len()));
            write_str(out, &text);
        }
        Value::Date(Date::PositiveInfinity) => write_str(out, "infinity"),
        Value::Date(Date::NegativeInfinity) => write_str(out, "-infinity"),
        Value::Time(micros) => {
            let mut text = String::with_capacity(16);
            value::write_time_of_day(&mut text, *micros);
            write_str(out, &text);
        }
        Value::TimeTz {
            micros,
            offset_seconds,
        } => {
            let mut text = String::with_capacity(24);
            value::write_time_of_day(&mut text, *micros);
            value::write_offset(&mut text, *offset_seconds);
            write_str(out, &text);
        }
        Value::Timestamp(ts) | Value::TimestampTz(ts) => {
            let zone = matches!(value, Value::TimestampTz(_));
            match (ts, flavor) {
                (Timestamp::Micros(micros), Flavor::OpenSearch) => {
                    let mut text = String::with_capacity(32);
                    value::write_utc_timestamp(&mut text, *micros);
                    if !zone {
                        text.pop();
                    }
                    write_str(out, &text);
                }
                (Timestamp::Micros(micros), Flavor::Typesense) => {
                    out.extend_from_slice(buf.format(micros.div_euclid(1000)).as_bytes())
                }
                (Timestamp::PositiveInfinity, _) => write_str(out, "infinity"),
                (Timestamp::NegativeInfinity, _) => write_str(out, "-infinity"),
            }
        }
        Value::Interval(interval) => write_text(out, interval),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, item, flavor);
            }
            out.push(b']');
        }
        Value::Set(labels) => {
            out.push(b'[');
            for (i, label) in labels.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_str(out, label);
            }
            out.push(b']');
        }
    }
}

/// A float as JSON: NaN and infinities (which JSON lacks) as their names in a string.
fn write_float(out: &mut Vec<u8>, v: f64) {
    if v.is_finite() {
        let _ = write!(out, "{v}");
    } else if v.is_nan() {
        write_str(out, "NaN");
    } else if v > 0.0 {
        write_str(out, "Infinity");
    } else {
        write_str(out, "-Infinity");
    }
}

/// An exact decimal's digits as a JSON number (a leading `.` or `-.` gets its zero).
fn write_decimal_number(out: &mut Vec<u8>, digits: &str) {
    let (sign, rest) = match digits.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", digits.strip_prefix('+').unwrap_or(digits)),
    };
    out.extend_from_slice(sign.as_bytes());
    if rest.starts_with('.') {
        out.push(b'0');
    }
    let rest = rest.trim_end_matches('.');
    out.extend_from_slice(rest.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_core::event::{Column, DataType, TableId};

    fn table(keys: &[&str], columns: &[(&str, DataType)]) -> TableSchema {
        TableSchema {
            table: TableId {
                namespace: "public".into(),
                name: "t".into(),
            },
            columns: columns
                .iter()
                .map(|(name, data_type)| Column {
                    name: (*name).into(),
                    type_name: String::new(),
                    data_type: data_type.clone(),
                    key: keys.contains(name),
                    nullable: true,
                })
                .collect(),
            version: 1,
        }
    }

    fn doc(table: &TableSchema, row: &[Value], flavor: Flavor) -> serde_json::Value {
        let mut out = Vec::new();
        write_document(&mut out, table, row, flavor, &[]);
        serde_json::from_slice(&out).unwrap()
    }

    #[test]
    fn values_take_each_servers_forms() {
        let t = table(
            &["id"],
            &[
                ("id", DataType::Int64),
                (
                    "price",
                    DataType::Decimal {
                        precision: Some(10),
                        scale: Some(2),
                    },
                ),
                ("at", DataType::TimestampTz),
                ("day", DataType::Date),
                ("meta", DataType::Json),
                ("tags", DataType::Array(Box::new(DataType::Text))),
                ("gone", DataType::Text),
                ("none", DataType::Text),
                ("ratio", DataType::Float64),
            ],
        );
        let row = vec![
            Value::Int64(7),
            Value::Decimal(Decimal::Finite("12345678.90".into())),
            Value::TimestampTz(Timestamp::Micros(1_700_000_000_123_456)),
            Value::Date(Date::Days(19_000)),
            Value::Json(r#"{"a":[1,2]}"#.into()),
            Value::Array(vec![Value::Text("x".into()), Value::Null]),
            Value::Unavailable,
            Value::Null,
            Value::Float64(f64::NAN),
        ];
        let os = doc(&t, &row, Flavor::OpenSearch);
        assert_eq!(
            os,
            serde_json::json!({"id": 7, "price": "12345678.90", "at": "2023-11-14T22:13:20.123456Z",
                "day": "2022-01-08", "meta": {"a": [1, 2]}, "tags": ["x", null], "none": null,
                "ratio": "NaN"})
        );
        let ts = doc(&t, &row, Flavor::Typesense);
        assert_eq!(ts["price"], serde_json::json!(12345678.90));
        assert_eq!(ts["at"], serde_json::json!(1_700_000_000_123i64));
        assert_eq!(ts["meta"], serde_json::json!(r#"{"a":[1,2]}"#));
        assert!(ts.get("gone").is_none());
        let mut out = Vec::new();
        write_decimal_number(&mut out, "-.5");
        assert_eq!(out, b"-0.5");
    }

    #[test]
    fn ids_are_the_key_as_text_or_a_json_array() {
        let one = table(&["id"], &[("id", DataType::Text), ("v", DataType::Int32)]);
        let row = [Value::Text("a \"b\"".into()), Value::Int32(1)];
        assert_eq!(document_id(&one, &row).unwrap(), "a \"b\"");
        let num = table(&["id"], &[("id", DataType::Int64)]);
        assert_eq!(document_id(&num, &[Value::Int64(-5)]).unwrap(), "-5");
        let uuid = table(&["id"], &[("id", DataType::Uuid)]);
        assert_eq!(
            document_id(&uuid, &[Value::Uuid([0xab; 16])]).unwrap(),
            "abababab-abab-abab-abab-abababababab"
        );
        let two = table(
            &["a", "b"],
            &[("a", DataType::Int32), ("b", DataType::Text)],
        );
        assert_eq!(
            document_id(&two, &[Value::Int32(1), Value::Text("x".into())]).unwrap(),
            r#"[1,"x"]"#
        );
        let none = table(&[], &[("a", DataType::Int32)]);
        assert_eq!(document_id(&none, &[Value::Int32(1)]), None);
    }
}
