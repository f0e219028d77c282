//! Reading sluice's Debezium JSON envelopes back into typed changes: the inverse of the
//! encoder's value mapping (docs/types.md), typed by the table version the record names (its
//! registered schema, see `crate::changes`). Values come back as the Avro path returns them,
//! so that a sink cannot tell which encoding a source used: intervals, times with zone and SETs
//! as their text, everything else as the source produced it.

use base64::Engine;
use serde_json::Value as Json;
use sluice_core::change::Change;
use sluice_core::event::{DataType, Op};
use sluice_core::value::{self, Date, Decimal, Timestamp, Value};
use std::sync::Arc;

use super::{TIMESTAMP_NEGATIVE_INFINITY_US, TIMESTAMP_POSITIVE_INFINITY_US, UNAVAILABLE_VALUE};
use crate::avro::rows::{position_of, Plan};
use crate::avro::DatumError;

/// Reads one envelope written with `plan`'s table version.
pub(crate) fn decode(plan: &Plan, value: &[u8]) -> Result<Change, DatumError> {
    let envelope: Json =
        serde_json::from_slice(value).map_err(|e| format!("the value is not JSON: {e}"))?;
    let op = match envelope.get("op").and_then(Json::as_str) {
        Some("c") => Op::Create,
        Some("u") => Op::Update,
        Some("d") => Op::Delete,
        Some("r") => Op::Read,
        Some("t") => Op::Truncate,
        Some("m") => Op::Message,
        other => return Err(format!("the envelope has no known op ({other:?})").into()),
    };
    let row = |field: &str| -> Result<Option<Vec<Value>>, DatumError> {
        let row = match envelope.get(field) {
            None | Some(Json::Null) => return Ok(None),
            Some(Json::Object(row)) => row,
            Some(_) => return Err(format!("{field} is not an object").into()),
        };
        plan.table
            .columns
            .iter()
            .map(|column| {
                let json = row.get(&column.name).unwrap_or(&Json::Null);
                value_of(json, &column.data_type)
                    .map_err(|e| DatumError(format!("{field}.{}: {e}", column.name)))
            })
            .collect::<Result<Vec<Value>, DatumError>>()
            .map(Some)
    };
    let (before, after) = (row("before")?, row("after")?);
    let source = envelope.get("source");
    let source_field = |name: &str| source.and_then(|s| s.get(name));
    let commit_ts_us = source_field("ts_us")
        .and_then(Json::as_i64)
        .or_else(|| {
            source_field("ts_ms")
                .and_then(Json::as_i64)
                .map(|ms| ms * 1000)
        })
        .unwrap_or(0);
    let position = position_of(
        source_field("lsn").and_then(Json::as_u64),
        source_field("gtid").and_then(Json::as_str),
        source_field("file").and_then(Json::as_str),
        source_field("pos").and_then(Json::as_u64),
    );
    let transaction = envelope.get("transaction").filter(|t| !t.is_null());
    Ok(Change {
        table: Arc::clone(&plan.table),
        op,
        before,
        after,
        position,
        txn: transaction
            .and_then(|t| t.get("id"))
            .and_then(Json::as_str)
            .map(str::to_owned),
        total_order: transaction
            .and_then(|t| t.get("total_order"))
            .and_then(Json::as_u64),
        commit_ts_us,
    })
}

/// One column's value, as the encoder wrote it for `data_type`.
fn value_of(json: &Json, data_type: &DataType) -> Result<Value, DatumError> {
    let bad = || format!("{json} is not a {data_type} value");
    if json.is_null() {
        return Ok(Value::Null);
    }
    if json.as_str() == Some(UNAVAILABLE_VALUE) {
        return Ok(Value::Unavailable);
    }
    let int = || json.as_i64().ok_or_else(bad);
    let text = || json.as_str().ok_or_else(bad);
    Ok(match data_type {
        DataType::Bool => Value::Bool(json.as_bool().ok_or_else(bad)?),
        DataType::Int8 => Value::Int8(i8::try_from(int()?).map_err(|_| bad())?),
        DataType::Int16 => Value::Int16(i16::try_from(int()?).map_err(|_| bad())?),
        DataType::Int32 => Value::Int32(i32::try_from(int()?).map_err(|_| bad())?),
        DataType::Int64 => Value::Int64(int()?),
        DataType::UInt8 => Value::UInt8(u8::try_from(int()?).map_err(|_| bad())?),
        DataType::UInt16 => Value::UInt16(u16::try_from(int()?).map_err(|_| bad())?),
        DataType::UInt32 => Value::UInt32(u32::try_from(int()?).map_err(|_| bad())?),
        DataType::UInt64 => Value::UInt64(json.as_u64().ok_or_else(bad)?),
        DataType::Float32 => Value::Float32(float(json).ok_or_else(bad)? as f32),
        DataType::Float64 => Value::Float64(float(json).ok_or_else(bad)?),
        DataType::Decimal { .. } => Value::Decimal(Decimal::parse(text()?).ok_or_else(bad)?),
        DataType::Text | DataType::TimeTz | DataType::Interval | DataType::Set => {
            Value::Text(text()?.into())
        }
        DataType::Bytes => Value::Bytes(
            base64::engine::general_purpose::STANDARD
                .decode(text()?)
                .map_err(|_| bad())?
                .into(),
        ),
        DataType::Uuid => Value::Uuid(value::parse_uuid(text()?).ok_or_else(bad)?),
        DataType::Json => Value::Json(text()?.to_owned()),
        DataType::Enum => Value::Enum(text()?.to_owned()),
        DataType::Date => Value::Date(match int()? {
            n if n == i64::from(i32::MAX) => Date::PositiveInfinity,
            n if n == i64::from(i32::MIN) => Date::NegativeInfinity,
            n => Date::Days(i32::try_from(n).map_err(|_| bad())?),
        }),
        DataType::Time => Value::Time(int()?),
        DataType::Timestamp => Value::Timestamp(match int()? {
            TIMESTAMP_POSITIVE_INFINITY_US => Timestamp::PositiveInfinity,
            TIMESTAMP_NEGATIVE_INFINITY_US => Timestamp::NegativeInfinity,
            n => Timestamp::Micros(n),
        }),
        DataType::TimestampTz => Value::TimestampTz(match text()? {
            "infinity" => Timestamp::PositiveInfinity,
            "-infinity" => Timestamp::NegativeInfinity,
            text => Timestamp::Micros(value::parse_utc_timestamp(text).ok_or_else(bad)?),
        }),
        DataType::Array(element) => Value::Array(
            json.as_array()
                .ok_or_else(bad)?
                .iter()
                .map(|item| value_of(item, element))
                .collect::<Result<_, _>>()?,
        ),
    })
}

/// A float as the encoder writes it: a number, or `"NaN"`/`"Infinity"`/`"-Infinity"`.
fn float(json: &Json) -> Option<f64> {
    match json {
        Json::Number(n) => n.as_f64(),
        Json::String(s) => match s.as_str() {
            "NaN" => Some(f64::NAN),
            "Infinity" => Some(f64::INFINITY),
            "-Infinity" => Some(f64::NEG_INFINITY),
            _ => None,
        },
        _ => None,
    }
}
