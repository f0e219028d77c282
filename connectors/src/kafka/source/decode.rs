//! Debezium change events as Kafka holds them into sluice's change events: JSON with schemas
//! (`{"schema","payload"}`, Kafka Connect's JsonConverter with `schemas.enable`), JSON without
//! them (types inferred from the values), or Avro (its schema turned into the same shape, see
//! `avro.rs`). Column types come from Debezium's Connect schema names
//! (`io.debezium.time.MicroTimestamp`, `org.apache.kafka.connect.data.Decimal`, …), so that a
//! sink builds the tables Debezium's source had.

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine;
use serde_json::Value as Json;
use sluice_core::event::{
    ChangeEvent, Column, DataType, Op, SnapshotMarker, TableId, TableSchema, TxnInfo,
};
use sluice_core::position::{Lsn, Position};
use sluice_core::value::{Date, Decimal, Interval, Timestamp, Value};

/// What one field's values are, from its Connect schema (or inferred).
#[derive(Debug, Clone, PartialEq)]
enum Kind {
    Int8,
    Int16,
    Int32,
    Int64,
    Float32,
    Float64,
    Bool,
    Text,
    Bytes,
    /// Connect's Decimal: the unscaled value's two's complement bytes, base64.
    Decimal {
        scale: u32,
        precision: Option<u32>,
    },
    /// Debezium's VariableScaleDecimal: `{"scale","value"}`.
    VariableDecimal,
    /// Days since 1970-01-01.
    Date,
    /// Time of day in milliseconds / microseconds / nanoseconds.
    Time(i64),
    /// Wall-clock timestamp in milliseconds / microseconds / nanoseconds since 1970.
    Timestamp(i64),
    /// An instant in milliseconds since 1970 (Connect's Timestamp).
    Instant,
    /// ISO-8601 text of an instant (`ZonedTimestamp`).
    ZonedTimestamp,
    /// ISO-8601 time with offset (`ZonedTime`).
    ZonedTime,
    /// Microseconds (`MicroDuration`).
    Duration,
    Json,
    Uuid,
    Enum,
    /// A struct sluice has no type for: kept as its JSON text.
    Struct,
    Array(Box<Kind>),
}

impl Kind {
    /// The kind a Connect schema names.
    fn of(schema: &Json) -> Kind {
        let name = schema.get("name").and_then(Json::as_str).unwrap_or("");
        let ty = schema.get("type").and_then(Json::as_str).unwrap_or("");
        let parameter = |key: &str| {
            schema
                .get("parameters")
                .and_then(|p| p.get(key))
                .and_then(Json::as_str)
                .and_then(|v| v.parse::<u32>().ok())
        };
        match name {
            "org.apache.kafka.connect.data.Decimal" => {
                return Kind::Decimal {
                    scale: parameter("scale").unwrap_or(0),
                    precision: parameter("connect.decimal.precision"),
                }
            }
            "io.debezium.data.VariableScaleDecimal" => return Kind::VariableDecimal,
            "io.debezium.time.Date" | "org.apache.kafka.connect.data.Date" => return Kind::Date,
            "io.debezium.time.Time" | "org.apache.kafka.connect.data.Time" => {
                return Kind::Time(1_000)
            }
            "io.debezium.time.MicroTime" => return Kind::Time(1),
            "io.debezium.time.NanoTime" => return Kind::Time(-1_000),
            "io.debezium.time.Timestamp" => return Kind::Timestamp(1_000),
            "io.debezium.time.MicroTimestamp" => return Kind::Timestamp(1),
            "io.debezium.time.NanoTimestamp" => return Kind::Timestamp(-1_000),
            "org.apache.kafka.connect.data.Timestamp" => return Kind::Instant,
            "io.debezium.time.ZonedTimestamp" => return Kind::ZonedTimestamp,
            "io.debezium.time.ZonedTime" => return Kind::ZonedTime,
            "io.debezium.time.MicroDuration" => return Kind::Duration,
            "io.debezium.data.Json" => return Kind::Json,
            "io.debezium.data.Uuid" => return Kind::Uuid,
            "io.debezium.data.Enum" => return Kind::Enum,
            _ => {}
        }
        match ty {
            "int8" => Kind::Int8,
            "int16" => Kind::Int16,
            "int32" => Kind::Int32,
            "int64" => Kind::Int64,
            "float" | "float32" => Kind::Float32,
            "double" | "float64" => Kind::Float64,
            "boolean" => Kind::Bool,
            "bytes" => Kind::Bytes,
            "array" => Kind::Array(Box::new(schema.get("items").map_or(Kind::Text, Kind::of))),
            "struct" | "map" => Kind::Struct,
            _ => Kind::Text,
        }
    }

    /// The kind a schemaless value suggests (None for null: not known yet).
    fn inferred(value: &Json) -> Option<Kind> {
        Some(match value {
            Json::Null => return None,
            Json::Bool(_) => Kind::Bool,
            Json::Number(n) if n.is_i64() => Kind::Int64,
            Json::Number(_) => Kind::Float64,
            Json::String(_) => Kind::Text,
            Json::Array(_) | Json::Object(_) => Kind::Json,
        })
    }

    fn data_type(&self) -> DataType {
        match self {
            Kind::Int8 => DataType::Int8,
            Kind::Int16 => DataType::Int16,
            Kind::Int32 => DataType::Int32,
            Kind::Int64 => DataType::Int64,
            Kind::Float32 => DataType::Float32,
            Kind::Float64 => DataType::Float64,
            Kind::Bool => DataType::Bool,
            Kind::Text | Kind::Struct => DataType::Text,
            Kind::Bytes => DataType::Bytes,
            Kind::Decimal { scale, precision } => DataType::Decimal {
                precision: *precision,
                scale: precision.map(|_| *scale),
            },
            Kind::VariableDecimal => DataType::Decimal {
                precision: None,
                scale: None,
            },
            Kind::Date => DataType::Date,
            Kind::Time(_) => DataType::Time,
            Kind::Timestamp(_) => DataType::Timestamp,
            Kind::Instant | Kind::ZonedTimestamp => DataType::TimestampTz,
            Kind::ZonedTime => DataType::TimeTz,
            Kind::Duration => DataType::Interval,
            Kind::Json => DataType::Json,
            Kind::Uuid => DataType::Uuid,
            Kind::Enum => DataType::Enum,
            Kind::Array(element) => DataType::Array(Box::new(element.data_type())),
        }
    }

    /// A source type name for the column (what a sink creating the table reads).
    fn type_name(&self) -> String {
        match self {
            Kind::Int8 | Kind::Int16 => "smallint".into(),
            Kind::Int32 => "integer".into(),
            Kind::Int64 => "bigint".into(),
            Kind::Float32 => "real".into(),
            Kind::Float64 => "double precision".into(),
            Kind::Bool => "boolean".into(),
            Kind::Text | Kind::Struct | Kind::Enum => "text".into(),
            Kind::Bytes => "bytea".into(),
            Kind::Decimal {
                scale,
                precision: Some(precision),
            } => format!("numeric({precision},{scale})"),
            Kind::Decimal { .. } | Kind::VariableDecimal => "numeric".into(),
            Kind::Date => "date".into(),
            Kind::Time(_) => "time".into(),
            Kind::Timestamp(_) => "timestamp".into(),
            Kind::Instant | Kind::ZonedTimestamp => "timestamptz".into(),
            Kind::ZonedTime => "timetz".into(),
            Kind::Duration => "interval".into(),
            Kind::Json => "jsonb".into(),
            Kind::Uuid => "uuid".into(),
            Kind::Array(element) => format!("{}[]", element.type_name()),
        }
    }

    /// One value of this kind; `exact`: decimals come as exact text (read from Avro), not as
    /// Connect's base64 bytes.
    fn value(&self, json: &Json, exact: bool) -> Result<Value, String> {
        if json.is_null() {
            return Ok(Value::Null);
        }
        let bad = || format!("{json} is not a {self:?} value");
        let int = || json.as_i64().ok_or_else(bad);
        let text = || json.as_str().ok_or_else(bad);
        Ok(match self {
            Kind::Int8 => Value::Int8(i8::try_from(int()?).map_err(|_| bad())?),
            Kind::Int16 => Value::Int16(i16::try_from(int()?).map_err(|_| bad())?),
            Kind::Int32 => Value::Int32(i32::try_from(int()?).map_err(|_| bad())?),
            Kind::Int64 => Value::Int64(int()?),
            Kind::Float32 => Value::Float32(float(json).ok_or_else(bad)? as f32),
            Kind::Float64 => Value::Float64(float(json).ok_or_else(bad)?),
            Kind::Bool => Value::Bool(json.as_bool().ok_or_else(bad)?),
            Kind::Text | Kind::Enum => match json {
                Json::String(s) => Value::Text(s.as_str().into()),
                other => Value::Text(other.to_string().into()),
            },
            Kind::Struct => Value::Text(json.to_string().into()),
            Kind::Json => match json {
                Json::String(s) => Value::Json(s.clone()),
                other => Value::Json(other.to_string()),
            },
            Kind::Bytes => Value::Bytes(base64_bytes(text()?).ok_or_else(bad)?.into()),
            Kind::Decimal { .. } if exact => {
                Value::Decimal(Decimal::parse(text()?).ok_or_else(bad)?)
            }
            Kind::Decimal { scale, .. } => {
                let bytes = base64_bytes(text()?).ok_or_else(bad)?;
                Value::Decimal(Decimal::Finite(decimal_text(&bytes, *scale).into()))
            }
            Kind::VariableDecimal => {
                let scale = json.get("scale").and_then(Json::as_u64).ok_or_else(bad)?;
                let bytes = json
                    .get("value")
                    .and_then(Json::as_str)
                    .and_then(base64_bytes)
                    .ok_or_else(bad)?;
                Value::Decimal(Decimal::Finite(decimal_text(&bytes, scale as u32).into()))
            }
            Kind::Date => Value::Date(Date::Days(i32::try_from(int()?).map_err(|_| bad())?)),
            Kind::Time(unit) => Value::Time(scaled(int()?, *unit)),
            Kind::Timestamp(unit) => Value::Timestamp(Timestamp::Micros(scaled(int()?, *unit))),
            Kind::Instant => Value::TimestampTz(Timestamp::Micros(int()?.saturating_mul(1000))),
            Kind::ZonedTimestamp => {
                Value::TimestampTz(Timestamp::Micros(iso_instant(text()?).ok_or_else(bad)?))
            }
            Kind::ZonedTime => {
                let (micros, offset_seconds) = iso_time(text()?).ok_or_else(bad)?;
                Value::TimeTz {
                    micros,
                    offset_seconds,
                }
            }
            Kind::Duration => Value::Interval(Interval {
                months: 0,
                days: 0,
                micros: int()?,
            }),
            Kind::Uuid => Value::Uuid(sluice_core::value::parse_uuid(text()?).ok_or_else(bad)?),
            Kind::Array(element) => Value::Array(
                json.as_array()
                    .ok_or_else(bad)?
                    .iter()
                    .map(|v| element.value(v, exact))
                    .collect::<Result<_, _>>()?,
            ),
        })
    }
}

/// A JSON number, or the names JSON has no numbers for.
fn float(json: &Json) -> Option<f64> {
    json.as_f64().or_else(|| match json.as_str()? {
        "NaN" => Some(f64::NAN),
        "Infinity" => Some(f64::INFINITY),
        "-Infinity" => Some(f64::NEG_INFINITY),
        _ => None,
    })
}

/// `value` in units of `unit` microseconds (negative: 1/-unit of a microsecond).
fn scaled(value: i64, unit: i64) -> i64 {
    if unit > 0 {
        value.saturating_mul(unit)
    } else {
        value / -unit
    }
}

fn base64_bytes(text: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}

/// Big-endian two's complement bytes (Java's `BigInteger.toByteArray`) and a scale as exact
/// decimal text: `[0x12, 0xd6, 0x87]`, 3 → `1234.567`.
fn decimal_text(bytes: &[u8], scale: u32) -> String {
    sluice_schema_registry::avro::decode::decimal_text(bytes, scale as usize)
}

/// Days from 1970-01-01 to a proleptic Gregorian date.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `HH:MM[:SS[.f]]` → microseconds, and the rest of the text.
fn time_of_day(text: &str) -> Option<(i64, &str)> {
    let end = text
        .find(|c: char| !(c.is_ascii_digit() || c == ':' || c == '.'))
        .unwrap_or(text.len());
    let (time, rest) = text.split_at(end);
    let mut parts = time.split(':');
    let hours: i64 = parts.next()?.parse().ok()?;
    let minutes: i64 = parts.next()?.parse().ok()?;
    let seconds = parts.next().unwrap_or("0");
    let (whole, fraction) = seconds.split_once('.').unwrap_or((seconds, ""));
    let fraction = &fraction[..fraction.len().min(6)];
    let micros: i64 = format!("{fraction:0<6}").parse().ok()?;
    Some((
        (hours * 60 + minutes) * 60_000_000 + whole.parse::<i64>().ok()? * 1_000_000 + micros,
        rest,
    ))
}

/// `Z`, `+02:00`, `-0530` → seconds east of UTC.
fn offset(text: &str) -> Option<i32> {
    if text == "Z" {
        return Some(0);
    }
    let sign = match text.as_bytes().first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let digits: String = text[1..].chars().filter(char::is_ascii_digit).collect();
    let hours: i32 = digits.get(..2)?.parse().ok()?;
    let minutes: i32 = digits.get(2..4).map_or(Some(0), |m| m.parse().ok())?;
    Some(sign * (hours * 3600 + minutes * 60))
}

/// `2024-01-02T03:04:05.123456Z` (any offset) → microseconds since 1970 UTC.
fn iso_instant(text: &str) -> Option<i64> {
    let (date, rest) = text.split_once('T')?;
    let mut parts = date.splitn(3, '-');
    let year: i64 = parts.next()?.parse().ok()?;
    let month: i64 = parts.next()?.parse().ok()?;
    let day: i64 = parts.next()?.parse().ok()?;
    let (micros, zone) = time_of_day(rest)?;
    let offset = offset(zone)?;
    Some(
        days_from_civil(year, month, day) * 86_400_000_000 + micros - i64::from(offset) * 1_000_000,
    )
}

/// `08:15:30.5Z` → (microseconds of the day, offset seconds).
fn iso_time(text: &str) -> Option<(i64, i32)> {
    let (micros, zone) = time_of_day(text)?;
    Some((micros, offset(zone)?))
}

/// One table as the decoder knows it.
struct Known {
    schema: Arc<TableSchema>,
    kinds: Vec<Kind>,
}

/// Decodes Debezium records into change events, keeping each table's current version.
#[derive(Default)]
pub(crate) struct Decoder {
    tables: HashMap<TableId, Known>,
}

/// A record's place in Kafka (for events that carry no database position of their own).
pub(crate) struct At<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
}

impl Decoder {
    /// The change event in a record's key and value (both JSON; `exact`: read from Avro,
    /// decimals as exact text); None for what carries no row change (tombstones, logical
    /// messages).
    pub(crate) fn decode(
        &mut self,
        at: &At<'_>,
        key: Option<&Json>,
        value: &Json,
        exact: bool,
    ) -> Result<Option<ChangeEvent>, String> {
        let (schema, payload) = match (value.get("schema"), value.get("payload")) {
            (Some(schema), Some(payload)) => (Some(schema), payload),
            _ => (None, value),
        };
        if payload.is_null() {
            return Ok(None);
        }
        let op = match payload.get("op").and_then(Json::as_str) {
            Some("c") => Op::Create,
            Some("u") => Op::Update,
            Some("d") => Op::Delete,
            Some("r") => Op::Read,
            Some("t") => Op::Truncate,
            Some("m") => return Ok(None),
            // Debezium's transaction metadata (`<prefix>.transaction`, which a pattern such as
            // `<prefix>.*` matches): BEGIN and END records carry no row.
            None if payload.get("status").and_then(Json::as_str).is_some()
                && payload.get("data_collections").is_some() =>
            {
                return Ok(None)
            }
            other => {
                return Err(format!(
                    "not a Debezium change event (op {other:?}): sluice reads Debezium's \
                     envelope (before, after, source, op), not unwrapped rows"
                ))
            }
        };
        let source = payload.get("source").unwrap_or(&Json::Null);
        let field = |name: &str| source.get(name).filter(|v| !v.is_null());
        let table = table_id(source, at.topic)?;
        let key_names: Vec<String> = match key {
            Some(key) => match (key.get("schema"), key.get("payload")) {
                (Some(schema), Some(_)) => schema
                    .get("fields")
                    .and_then(Json::as_array)
                    .map(|fields| {
                        fields
                            .iter()
                            .filter_map(|f| f.get("field").and_then(Json::as_str))
                            .map(str::to_owned)
                            .collect()
                    })
                    .unwrap_or_default(),
                _ => key
                    .as_object()
                    .map(|o| o.keys().cloned().collect())
                    .unwrap_or_default(),
            },
            None => Vec::new(),
        };
        let row_fields = schema.and_then(|schema| {
            let fields = schema.get("fields")?.as_array()?;
            fields
                .iter()
                .find(|f| f.get("field").and_then(Json::as_str) == Some("after"))
                .or_else(|| {
                    fields
                        .iter()
                        .find(|f| f.get("field").and_then(Json::as_str) == Some("before"))
                })?
                .get("fields")?
                .as_array()
                .cloned()
        });
        let (before, after) = (
            payload.get("before").filter(|v| !v.is_null()),
            payload.get("after").filter(|v| !v.is_null()),
        );
        let known = if op == Op::Truncate {
            match self.tables.get(&table) {
                Some(known) => known,
                None => self.learn(&table, row_fields.as_deref(), None, &key_names)?,
            }
        } else {
            let sample = after
                .or(before)
                .ok_or("a change event with neither before nor after")?;
            self.learn(&table, row_fields.as_deref(), Some(sample), &key_names)?
        };
        let row = |json: Option<&Json>| -> Result<Option<Vec<Value>>, String> {
            let Some(object) = json.and_then(Json::as_object) else {
                return Ok(None);
            };
            known
                .schema
                .columns
                .iter()
                .zip(&known.kinds)
                .map(|(column, kind)| {
                    kind.value(object.get(&column.name).unwrap_or(&Json::Null), exact)
                        .map_err(|e| format!("{table}.{}: {e}", column.name))
                })
                .collect::<Result<Vec<Value>, String>>()
                .map(Some)
        };
        let (before, after) = if op == Op::Truncate {
            (None, None)
        } else {
            (row(before)?, row(after)?)
        };
        let commit_ts_us = field("ts_us")
            .and_then(Json::as_i64)
            .or_else(|| field("ts_ms").and_then(Json::as_i64).map(|ms| ms * 1000))
            .unwrap_or(0);
        let position = if let Some(lsn) = field("lsn").and_then(Json::as_u64) {
            Position::PgLsn(Lsn(lsn))
        } else if let Some(gtid) = field("gtid").and_then(Json::as_str) {
            if gtid.contains(':') {
                Position::MysqlGtidSet(gtid.into())
            } else {
                Position::MariadbGtidList(gtid.into())
            }
        } else if let (Some(file), Some(pos)) = (
            field("file").and_then(Json::as_str),
            field("pos").and_then(Json::as_u64),
        ) {
            Position::BinlogFile {
                file: file.into(),
                offset: pos,
            }
        } else {
            Position::KafkaOffsets(format!("{}/{}@{}", at.topic, at.partition, at.offset).into())
        };
        let transaction = payload.get("transaction").filter(|t| !t.is_null());
        let txn = transaction.and_then(|t| {
            Some(TxnInfo {
                id: t.get("id")?.as_str()?.into(),
                total_order: t.get("total_order")?.as_u64()?,
                data_collection_order: t
                    .get("data_collection_order")
                    .and_then(|o| o.as_u64())
                    .unwrap_or(0),
            })
        });
        let snapshot = match field("snapshot").and_then(|s| {
            s.as_str()
                .map(str::to_owned)
                .or_else(|| s.as_bool().map(|b| b.to_string()))
        }) {
            Some(marker) => match marker.as_str() {
                "true" => SnapshotMarker::Yes,
                "first" => SnapshotMarker::First,
                "first_in_data_collection" => SnapshotMarker::FirstInDataCollection,
                "last_in_data_collection" => SnapshotMarker::LastInDataCollection,
                "last" => SnapshotMarker::Last,
                "incremental" => SnapshotMarker::Incremental,
                _ => SnapshotMarker::No,
            },
            None => SnapshotMarker::No,
        };
        Ok(Some(ChangeEvent {
            op,
            table: Some(Arc::clone(&known.schema)),
            before,
            before_is_key_only: false,
            after,
            snapshot,
            commit_ts_us,
            position,
            xid: field("txId").and_then(Json::as_u64),
            txn,
            message: None,
        }))
    }

    /// The table's current version, made anew when the record's fields differ from it.
    fn learn(
        &mut self,
        table: &TableId,
        fields: Option<&[Json]>,
        sample: Option<&Json>,
        key_names: &[String],
    ) -> Result<&Known, String> {
        let previous = self.tables.get(table);
        let columns: Vec<(String, Kind, bool)> = match fields {
            Some(fields) => fields
                .iter()
                .map(|f| {
                    let name = f
                        .get("field")
                        .and_then(Json::as_str)
                        .ok_or("a schema field without a name")?;
                    let optional = f.get("optional").and_then(Json::as_bool).unwrap_or(true);
                    Ok((name.to_owned(), Kind::of(f), optional))
                })
                .collect::<Result<_, String>>()?,
            None => {
                // No schema: the row's own values say what they are; a column seen before
                // keeps its kind unless a value does not fit it (then it becomes text).
                let object = sample
                    .and_then(Json::as_object)
                    .ok_or("a row that is not a JSON object")?;
                object
                    .iter()
                    .map(|(name, value)| {
                        let before = previous.and_then(|p| {
                            p.schema
                                .columns
                                .iter()
                                .position(|c| &c.name == name)
                                .map(|i| p.kinds[i].clone())
                        });
                        let kind = match (before, Kind::inferred(value)) {
                            (Some(before), None) => before,
                            (Some(before), Some(now)) if before == now => before,
                            (Some(Kind::Float64), Some(Kind::Int64))
                            | (Some(Kind::Int64), Some(Kind::Float64)) => Kind::Float64,
                            (Some(Kind::Json), Some(_)) | (Some(_), Some(Kind::Json)) => Kind::Json,
                            (Some(_), Some(_)) => Kind::Text,
                            (None, now) => now.unwrap_or(Kind::Text),
                        };
                        (name.clone(), kind, true)
                    })
                    .collect()
            }
        };
        let same = previous.is_some_and(|p| {
            p.kinds.len() == columns.len()
                && p.schema
                    .columns
                    .iter()
                    .zip(&p.kinds)
                    .zip(&columns)
                    .all(|((c, k), (name, kind, _))| &c.name == name && k == kind)
        });
        if !same {
            let version = previous.map_or(1, |p| p.schema.version + 1);
            let (schema_columns, kinds): (Vec<Column>, Vec<Kind>) = columns
                .into_iter()
                .map(|(name, kind, optional)| {
                    let key = key_names.contains(&name);
                    (
                        Column {
                            type_name: kind.type_name(),
                            data_type: kind.data_type(),
                            key,
                            nullable: optional && !key,
                            name,
                        },
                        kind,
                    )
                })
                .unzip();
            self.tables.insert(
                table.clone(),
                Known {
                    schema: Arc::new(TableSchema {
                        table: table.clone(),
                        columns: schema_columns,
                        version,
                    }),
                    kinds,
                },
            );
        }
        Ok(self.tables.get(table).expect("known now"))
    }
}

/// The table a record is about: its source block's schema (Postgres) or database (MySQL) and
/// table; without one, the last two parts of the topic's name.
fn table_id(source: &Json, topic: &str) -> Result<TableId, String> {
    let text = |name: &str| {
        source
            .get(name)
            .and_then(Json::as_str)
            .filter(|s| !s.is_empty())
    };
    if let Some(table) = text("table") {
        if let Some(namespace) = text("schema").or_else(|| text("db")) {
            return Ok(TableId {
                namespace: namespace.to_owned(),
                name: table.to_owned(),
            });
        }
    }
    let mut parts = topic.rsplitn(3, '.');
    match (parts.next(), parts.next()) {
        (Some(name), Some(namespace)) => Ok(TableId {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }),
        _ => Err(format!(
            "topic {topic:?}: the event names no table and the topic is not <prefix>.<schema>.<table>"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_values_come_back_exact() {
        assert_eq!(decimal_text(&[0x12, 0xd6, 0x87], 3), "1234.567");
        assert_eq!(decimal_text(&[0x85], 6), "-0.000123");
        assert_eq!(decimal_text(&[0xfe, 0x1d, 0xc6], 2), "-1234.50");
        assert_eq!(decimal_text(&[0x00], 2), "0.00");
        assert_eq!(decimal_text(&[0x80], 0), "-128");
        assert_eq!(
            iso_instant("2024-01-02T03:04:05.123456Z"),
            Some(1_704_164_645_123_456)
        );
        assert_eq!(
            iso_instant("2024-01-02T05:04:05.123456+02:00"),
            Some(1_704_164_645_123_456)
        );
        assert_eq!(iso_time("08:15:30.5Z"), Some((29_730_500_000, 0)));
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2024, 1, 2), 19_724);
    }

    #[test]
    fn transaction_metadata_records_carry_no_change_and_rows_are_refused() {
        let at = At {
            topic: "dbserver1.transaction",
            partition: 0,
            offset: 0,
        };
        let mut decoder = Decoder::default();
        for value in [
            serde_json::json!({"status": "BEGIN", "id": "571:53195829", "ts_ms": 1,
                               "event_count": null, "data_collections": null}),
            serde_json::json!({"status": "END", "id": "571:53195829", "ts_ms": 2, "event_count": 1,
                               "data_collections": [{"data_collection": "public.t", "event_count": 1}]}),
        ] {
            assert_eq!(decoder.decode(&at, None, &value, false), Ok(None));
        }
        let unwrapped = serde_json::json!({"id": 1, "status": "shipped"});
        let err = decoder.decode(&at, None, &unwrapped, false).unwrap_err();
        assert!(err.contains("not a Debezium change event"), "{err}");
    }

    #[test]
    fn a_debezium_event_with_schema_becomes_a_typed_change() {
        let value: Json = serde_json::json!({
            "schema": {"type": "struct", "fields": [
                {"type": "struct", "optional": true, "field": "before", "fields": []},
                {"type": "struct", "optional": true, "field": "after", "fields": [
                    {"type": "int32", "optional": false, "field": "id"},
                    {"type": "bytes", "optional": true, "field": "n",
                     "name": "org.apache.kafka.connect.data.Decimal",
                     "parameters": {"scale": "3", "connect.decimal.precision": "10"}},
                    {"type": "int64", "optional": true, "field": "ts",
                     "name": "io.debezium.time.MicroTimestamp"}]}]},
            "payload": {"before": null, "after": {"id": 7, "n": "EtaH", "ts": 1704164645123456_i64},
                        "source": {"schema": "public", "table": "t", "lsn": 42, "txId": 9,
                                   "ts_us": 5, "snapshot": "false"},
                        "op": "c"}
        });
        let key = serde_json::json!({"id": 7});
        let at = At {
            topic: "dbserver1.public.t",
            partition: 0,
            offset: 3,
        };
        let event = Decoder::default()
            .decode(&at, Some(&key), &value, false)
            .unwrap()
            .unwrap();
        let table = event.table.as_ref().unwrap();
        assert_eq!(table.table.to_string(), "public.t");
        assert_eq!(table.columns[1].type_name, "numeric(10,3)");
        assert!(table.columns[0].key);
        assert_eq!(
            event.after.unwrap(),
            vec![
                Value::Int32(7),
                Value::Decimal(Decimal::Finite("1234.567".into())),
                Value::Timestamp(Timestamp::Micros(1_704_164_645_123_456)),
            ]
        );
        assert_eq!(event.position, Position::PgLsn(Lsn(42)));
        assert_eq!(event.xid, Some(9));
    }
}
