//! Reading sluice's Debezium JSON envelopes back into typed changes: the inverse of the
//! encoder's value mapping (docs/types.md), typed by the table version the record names (its
//! registered schema, see `crate::changes`). Values come back as the Avro path returns them,
//! so that a sink cannot tell which encoding a source used: intervals, times with zone and SETs
//! as their text, everything else as the source produced it.

use base64::Engine;
use serde::de::{DeserializeSeed, IgnoredAny, MapAccess};
use serde_json::Value as Json;
use sluice_core::change::Change;
use sluice_core::event::{DataType, Op};
use sluice_core::value::{self, Date, Decimal, Timestamp, Value};
use std::sync::Arc;

use super::{TIMESTAMP_NEGATIVE_INFINITY_US, TIMESTAMP_POSITIVE_INFINITY_US, UNAVAILABLE_VALUE};
use crate::avro::rows::{position_of, Plan};
use crate::avro::DatumError;

/// Reads one envelope written with `plan`'s table version. The envelope is read in one pass
/// straight into the change: row fields are matched to the plan's columns by name as they come
/// (each value parsed on its own), the source block and transaction keep only what a change
/// holds, and everything else is skipped unparsed. (Parsing the whole envelope into a JSON
/// tree first cost a sink most of its CPU.) The form sluice writes is read by hand
/// (`fast.rs`); any other, and every error, by serde_json (`general`).
pub(crate) fn decode(plan: &Plan, value: &[u8]) -> Result<Change, DatumError> {
    // UTF-8 checked once for the whole envelope: a reader over bytes checks each string on its
    // own, which cost more than the check itself.
    let text = std::str::from_utf8(value)
        .map_err(|e| DatumError(format!("the value is not JSON: not UTF-8 ({e})")))?;
    let parts = match super::fast::parts(plan, text) {
        Some(parts) => parts,
        None => general(plan, text)?,
    };
    let op = match parts.op.as_deref() {
        Some("c") => Op::Create,
        Some("u") => Op::Update,
        Some("d") => Op::Delete,
        Some("r") => Op::Read,
        Some("t") => Op::Truncate,
        Some("m") => Op::Message,
        other => return Err(format!("the envelope has no known op ({other:?})").into()),
    };
    let (before, after) = (parts.before, parts.after);
    let source = parts.source;
    Ok(Change {
        table: Arc::clone(&plan.table),
        op,
        before,
        after,
        position: position_of(
            source.lsn,
            source.gtid.as_deref(),
            source.file.as_deref(),
            source.pos,
        ),
        txn: parts.txn_id,
        total_order: parts.total_order,
        commit_ts_us: source
            .ts_us
            .or_else(|| source.ts_ms.map(|ms| ms * 1000))
            .unwrap_or(0),
    })
}

/// The envelope read by serde_json through the visitors below: any JSON, and the error that
/// says what is wrong. (`fast.rs` reads the form sluice writes and leaves the rest to this.)
pub(super) fn general(plan: &Plan, text: &str) -> Result<Parts, DatumError> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    EnvelopeSeed { plan }
        .deserialize(&mut deserializer)
        .and_then(|parts| deserializer.end().map(|()| parts))
        .map_err(|e| match e.classify() {
            serde_json::error::Category::Data => DatumError(e.to_string()),
            _ => DatumError(format!("the value is not JSON: {e}")),
        })
}

/// What an envelope holds for a change, as read.
#[derive(Default, Debug, PartialEq)]
pub(super) struct Parts {
    pub(super) op: Option<String>,
    /// Per column of the plan's table, its value (null when absent).
    pub(super) before: Option<Vec<Value>>,
    pub(super) after: Option<Vec<Value>>,
    pub(super) source: SourceParts,
    pub(super) txn_id: Option<String>,
    pub(super) total_order: Option<u64>,
}

#[derive(Default, Debug, PartialEq)]
pub(super) struct SourceParts {
    pub(super) ts_us: Option<i64>,
    pub(super) ts_ms: Option<i64>,
    pub(super) lsn: Option<u64>,
    pub(super) gtid: Option<String>,
    pub(super) file: Option<String>,
    pub(super) pos: Option<u64>,
}

/// The envelope's fields a change needs; the rest is skipped.
enum EnvelopeField {
    Op,
    Before,
    After,
    Source,
    Transaction,
    Other,
}

/// Reads a map key into what it names, without allocating.
struct KeyVisitor<F>(fn(&str) -> F);

impl<'de, F> serde::de::Visitor<'de> for KeyVisitor<F> {
    type Value = F;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<F, E> {
        Ok((self.0)(key))
    }
}

struct Key<F>(fn(&str) -> F);

impl<'de, F> DeserializeSeed<'de> for Key<F> {
    type Value = F;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<F, D::Error> {
        d.deserialize_str(KeyVisitor(self.0))
    }
}

struct EnvelopeSeed<'p> {
    plan: &'p Plan,
}

impl<'de> DeserializeSeed<'de> for EnvelopeSeed<'_> {
    type Value = Parts;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Parts, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for EnvelopeSeed<'_> {
    type Value = Parts;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a Debezium change envelope (a JSON object)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Parts, A::Error> {
        let mut parts = Parts::default();
        let field = |key: &str| match key {
            "op" => EnvelopeField::Op,
            "before" => EnvelopeField::Before,
            "after" => EnvelopeField::After,
            "source" => EnvelopeField::Source,
            "transaction" => EnvelopeField::Transaction,
            _ => EnvelopeField::Other,
        };
        while let Some(key) = map.next_key_seed(Key(field))? {
            match key {
                EnvelopeField::Op => parts.op = map.next_value()?,
                EnvelopeField::Before => {
                    parts.before = map.next_value_seed(RowSeed(self.plan, "before"))?
                }
                EnvelopeField::After => {
                    parts.after = map.next_value_seed(RowSeed(self.plan, "after"))?
                }
                EnvelopeField::Source => {
                    parts.source = map.next_value_seed(SourceSeed)?.unwrap_or_default()
                }
                EnvelopeField::Transaction => {
                    if let Some((id, order)) = map.next_value_seed(TransactionSeed)? {
                        parts.txn_id = id;
                        parts.total_order = order;
                    }
                }
                EnvelopeField::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(parts)
    }
}

/// `before` or `after`: null, or an object whose fields are the plan's columns.
struct RowSeed<'p>(&'p Plan, &'static str);

impl<'de> DeserializeSeed<'de> for RowSeed<'_> {
    type Value = Option<Vec<Value>>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de> serde::de::Visitor<'de> for RowSeed<'_> {
    type Value = Option<Vec<Value>>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "{} as an object or null", self.1)
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let columns = &self.0.table.columns;
        let mut row = vec![Value::Null; columns.len()];
        // Keys arrive in the columns' order (the encoder writes them so): try the next column
        // first, then look for the name.
        let mut next = 0;
        while let Some(key) = map.next_key_seed(ColumnKey)? {
            let index = if columns.get(next).is_some_and(|c| c.name == key) {
                Some(next)
            } else {
                columns.iter().position(|c| c.name == key)
            };
            match index {
                Some(index) => {
                    let column = &columns[index];
                    row[index] = map.next_value_seed(ValueSeed {
                        data_type: &column.data_type,
                        field: self.1,
                        column: &column.name,
                    })?;
                    next = index + 1;
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Some(row))
    }
}

/// One column's value, read straight from the envelope into what the column's type holds
/// (no JSON tree in between: that allocation was a good part of a sink's decoding). Arrays go
/// through a JSON value, element by element as [`value_of`] reads them.
pub(super) struct ValueSeed<'a> {
    pub(super) data_type: &'a DataType,
    pub(super) field: &'static str,
    pub(super) column: &'a str,
}

impl ValueSeed<'_> {
    /// `field.column: shown is not a <type> value`.
    fn bad<E: serde::de::Error>(&self, shown: impl std::fmt::Display) -> E {
        E::custom(format!(
            "{}.{}: {shown} is not a {} value",
            self.field, self.column, self.data_type
        ))
    }

    fn int<E: serde::de::Error>(&self, n: i64) -> Result<Value, E> {
        let narrow = |ok: Option<Value>| ok.ok_or_else(|| self.bad(n));
        match self.data_type {
            DataType::Int8 => narrow(i8::try_from(n).ok().map(Value::Int8)),
            DataType::Int16 => narrow(i16::try_from(n).ok().map(Value::Int16)),
            DataType::Int32 => narrow(i32::try_from(n).ok().map(Value::Int32)),
            DataType::Int64 => Ok(Value::Int64(n)),
            DataType::UInt8 => narrow(u8::try_from(n).ok().map(Value::UInt8)),
            DataType::UInt16 => narrow(u16::try_from(n).ok().map(Value::UInt16)),
            DataType::UInt32 => narrow(u32::try_from(n).ok().map(Value::UInt32)),
            DataType::UInt64 => narrow(u64::try_from(n).ok().map(Value::UInt64)),
            DataType::Float32 => Ok(Value::Float32(n as f32)),
            DataType::Float64 => Ok(Value::Float64(n as f64)),
            DataType::Date => Ok(Value::Date(match n {
                n if n == i64::from(i32::MAX) => Date::PositiveInfinity,
                n if n == i64::from(i32::MIN) => Date::NegativeInfinity,
                n => Date::Days(i32::try_from(n).map_err(|_| self.bad(n))?),
            })),
            DataType::Time => Ok(Value::Time(n)),
            DataType::Timestamp => Ok(Value::Timestamp(match n {
                TIMESTAMP_POSITIVE_INFINITY_US => Timestamp::PositiveInfinity,
                TIMESTAMP_NEGATIVE_INFINITY_US => Timestamp::NegativeInfinity,
                n => Timestamp::Micros(n),
            })),
            _ => Err(self.bad(n)),
        }
    }
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        if let DataType::Array(_) = self.data_type {
            let json = <Json as serde::Deserialize>::deserialize(d)?;
            return value_of(&json, self.data_type).map_err(|e| {
                serde::de::Error::custom(format!("{}.{}: {e}", self.field, self.column))
            });
        }
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for ValueSeed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "a {} value", self.data_type)
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_bool<E: serde::de::Error>(self, b: bool) -> Result<Value, E> {
        match self.data_type {
            DataType::Bool => Ok(Value::Bool(b)),
            _ => Err(self.bad(b)),
        }
    }

    fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Value, E> {
        self.int(n)
    }

    fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Value, E> {
        match (self.data_type, i64::try_from(n)) {
            (DataType::UInt64, _) => Ok(Value::UInt64(n)),
            (DataType::Float32, _) => Ok(Value::Float32(n as f32)),
            (DataType::Float64, _) => Ok(Value::Float64(n as f64)),
            (_, Ok(n)) => self.int(n),
            (_, Err(_)) => Err(self.bad(n)),
        }
    }

    fn visit_f64<E: serde::de::Error>(self, x: f64) -> Result<Value, E> {
        match self.data_type {
            DataType::Float32 => Ok(Value::Float32(x as f32)),
            DataType::Float64 => Ok(Value::Float64(x)),
            _ => Err(self.bad(x)),
        }
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Value, E> {
        if text == UNAVAILABLE_VALUE {
            return Ok(Value::Unavailable);
        }
        let bad = || self.bad(Json::String(text.to_owned()));
        Ok(match self.data_type {
            DataType::Float32 | DataType::Float64 => {
                let x = match text {
                    "NaN" => f64::NAN,
                    "Infinity" => f64::INFINITY,
                    "-Infinity" => f64::NEG_INFINITY,
                    _ => return Err(bad()),
                };
                if *self.data_type == DataType::Float32 {
                    Value::Float32(x as f32)
                } else {
                    Value::Float64(x)
                }
            }
            DataType::Decimal { .. } => Value::Decimal(Decimal::parse(text).ok_or_else(bad)?),
            DataType::Text | DataType::TimeTz | DataType::Interval | DataType::Set => {
                Value::Text(text.into())
            }
            DataType::Bytes => Value::Bytes(
                base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .map_err(|_| bad())?
                    .into(),
            ),
            DataType::Uuid => Value::Uuid(value::parse_uuid(text).ok_or_else(bad)?),
            DataType::Json => Value::Json(text.to_owned()),
            DataType::Enum => Value::Enum(text.to_owned()),
            DataType::TimestampTz => Value::TimestampTz(match text {
                "infinity" => Timestamp::PositiveInfinity,
                "-infinity" => Timestamp::NegativeInfinity,
                text => Timestamp::Micros(value::parse_utc_timestamp(text).ok_or_else(bad)?),
            }),
            _ => return Err(bad()),
        })
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, _: A) -> Result<Value, A::Error> {
        Err(self.bad("an array"))
    }

    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<Value, A::Error> {
        Err(self.bad("an object"))
    }
}

/// A row field's name, borrowed from the input when it has no escapes.
struct ColumnKey;

impl<'de> DeserializeSeed<'de> for ColumnKey {
    type Value = std::borrow::Cow<'de, str>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> serde::de::Visitor<'de> for ColumnKey {
    type Value = std::borrow::Cow<'de, str>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a column name")
    }

    fn visit_borrowed_str<E: serde::de::Error>(self, key: &'de str) -> Result<Self::Value, E> {
        Ok(std::borrow::Cow::Borrowed(key))
    }

    fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<Self::Value, E> {
        Ok(std::borrow::Cow::Owned(key.to_owned()))
    }
}

/// The source block: commit time and position.
struct SourceSeed;

impl<'de> DeserializeSeed<'de> for SourceSeed {
    type Value = Option<SourceParts>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de> serde::de::Visitor<'de> for SourceSeed {
    type Value = Option<SourceParts>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("the source block (an object)")
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut parts = SourceParts::default();
        let field = |key: &str| match key {
            "ts_us" => 1,
            "ts_ms" => 2,
            "lsn" => 3,
            "gtid" => 4,
            "file" => 5,
            "pos" => 6,
            _ => 0,
        };
        while let Some(key) = map.next_key_seed(Key(field))? {
            // Lenient as the fields' readers were: a value of another type counts as absent.
            let value: Json = match key {
                0 => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
                _ => map.next_value()?,
            };
            match key {
                1 => parts.ts_us = value.as_i64(),
                2 => parts.ts_ms = value.as_i64(),
                3 => parts.lsn = value.as_u64(),
                4 => parts.gtid = value.as_str().map(str::to_owned),
                5 => parts.file = value.as_str().map(str::to_owned),
                _ => parts.pos = value.as_u64(),
            }
        }
        Ok(Some(parts))
    }
}

/// The transaction block: its id and the change's total order.
struct TransactionSeed;

impl<'de> DeserializeSeed<'de> for TransactionSeed {
    type Value = Option<(Option<String>, Option<u64>)>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de> serde::de::Visitor<'de> for TransactionSeed {
    type Value = Option<(Option<String>, Option<u64>)>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("the transaction block (an object or null)")
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (mut id, mut order) = (None, None);
        let field = |key: &str| match key {
            "id" => 1,
            "total_order" => 2,
            _ => 0,
        };
        while let Some(key) = map.next_key_seed(Key(field))? {
            match key {
                1 => id = map.next_value::<Json>()?.as_str().map(str::to_owned),
                2 => order = map.next_value::<Json>()?.as_u64(),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Some((id, order)))
    }
}

/// One column's value, as the encoder wrote it for `data_type`.
pub(super) fn value_of(json: &Json, data_type: &DataType) -> Result<Value, DatumError> {
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
