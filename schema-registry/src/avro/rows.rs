//! Reading sluice's Avro change events back into typed rows, for sinks that write them into
//! databases: the table's schema (columns, keys, sluice types, source type names) is rebuilt
//! from the writer schema's `sluice.*` attributes (`schema.rs`), and values come back as the
//! `Value`s the source produced (decimals exact, unsigned 64-bit exact, times in microseconds).
//! Intervals, times with zone and SETs come back as their text.
//!
//! The same rebuilt table schema types the JSON records of a source (`json/decode.rs`): a JSON
//! record names its registered schema in a header. `crate::changes` picks the path per record.

use std::sync::Arc;

use serde_json::Value as Json;
use sluice_core::change::Change;
use sluice_core::event::{Column, DataType, Op, TableId, TableSchema};
use sluice_core::position::{Lsn, Position};
use sluice_core::value::{self, Date, Decimal, Timestamp, Value};

use super::decode::decimal_text;
use super::schema::FieldKind;
use super::wire::{Cursor, DatumError};
use crate::json::{
    TIMESTAMP_NEGATIVE_INFINITY_US, TIMESTAMP_POSITIVE_INFINITY_US, UNAVAILABLE_VALUE,
};

/// How to read one envelope schema's records.
pub(crate) struct Plan {
    pub(crate) table: Arc<TableSchema>,
    fields: Vec<FieldKind>,
    /// Per field: its Avro type is a union with null.
    optional: Vec<bool>,
    /// The source record's fields, in order (skipped, keeping `ts_us` and the position).
    source: Vec<(Skip, Role)>,
}

/// What a source block field means to a [`Change`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Other,
    /// Postgres `lsn`.
    Lsn,
    /// MySQL/MariaDB `gtid`, `file`, `pos`.
    Gtid,
    File,
    Pos,
}

impl Role {
    fn of(name: &str) -> Role {
        match name {
            "lsn" => Role::Lsn,
            "gtid" => Role::Gtid,
            "file" => Role::File,
            "pos" => Role::Pos,
            _ => Role::Other,
        }
    }
}

/// The source position named by a source block's fields: a Postgres LSN, a GTID set (MySQL,
/// with `:`) or list (MariaDB), or a binlog file and offset.
pub(crate) fn position_of(
    lsn: Option<u64>,
    gtid: Option<&str>,
    file: Option<&str>,
    pos: Option<u64>,
) -> Option<Position> {
    if let Some(lsn) = lsn {
        return Some(Position::PgLsn(Lsn(lsn)));
    }
    if let Some(gtid) = gtid.filter(|g| !g.is_empty()) {
        return Some(if gtid.contains(':') {
            Position::MysqlGtidSet(gtid.into())
        } else {
            Position::MariadbGtidList(gtid.into())
        });
    }
    match (file, pos) {
        (Some(file), Some(offset)) => Some(Position::BinlogFile {
            file: file.into(),
            offset,
        }),
        _ => None,
    }
}

/// How to step over one field of the source record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Skip {
    Bytes,
    Long,
    /// `ts_us`: the commit time.
    CommitTime,
    Boolean,
    Null,
    /// `["null", T]`.
    Optional(SkipBase),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SkipBase {
    Bytes,
    Long,
}

fn skip_of(name: &str, schema: &Json) -> Result<Skip, SchemaError> {
    fn base(t: &Json) -> Option<&str> {
        match t {
            Json::String(s) => Some(s.as_str()),
            Json::Object(o) => o.get("type").and_then(Json::as_str),
            _ => None,
        }
    }
    Ok(match schema {
        Json::Array(branches) if branches.len() == 2 && branches[0] == "null" => {
            match base(&branches[1]) {
                Some("string" | "bytes") => Skip::Optional(SkipBase::Bytes),
                Some("long" | "int") => Skip::Optional(SkipBase::Long),
                _ => return Err(format!("source field {name} has an unsupported type").into()),
            }
        }
        other => match base(other) {
            Some("string" | "bytes") => Skip::Bytes,
            Some("long" | "int") if name == "ts_us" => Skip::CommitTime,
            Some("long" | "int") => Skip::Long,
            Some("boolean") => Skip::Boolean,
            Some("null") => Skip::Null,
            _ => return Err(format!("source field {name} has an unsupported type").into()),
        },
    })
}

sluice_core::reason_error!(
    /// A registered envelope schema a change sink cannot read rows with.
    pub SchemaError
);

impl From<sluice_core::error::UnknownDataType> for SchemaError {
    fn from(err: sluice_core::error::UnknownDataType) -> Self {
        SchemaError(err.to_string())
    }
}

/// Reads one Avro datum (after the wire header) written with `plan`'s schema.
pub(crate) fn decode(plan: &Plan, datum: &[u8]) -> Result<Change, DatumError> {
    let mut cursor = Cursor::new(datum);
    let row = |cursor: &mut Cursor<'_>| -> Result<Option<Vec<Value>>, DatumError> {
        if cursor.branch()? == 0 {
            return Ok(None);
        }
        let mut values = Vec::with_capacity(plan.fields.len());
        for ((kind, column), optional) in plan
            .fields
            .iter()
            .zip(&plan.table.columns)
            .zip(&plan.optional)
        {
            let value = if *optional && cursor.branch()? == 0 {
                Value::Null
            } else {
                read_value(cursor, kind, &column.data_type)
                    .map_err(|e| format!("column {}: {e}", column.name))?
            };
            values.push(value);
        }
        Ok(Some(values))
    };
    let before = row(&mut cursor)?;
    let after = row(&mut cursor)?;
    let mut commit_ts_us = 0;
    let (mut lsn, mut gtid, mut file, mut pos) = (None, None, None, None);
    for (skip, role) in &plan.source {
        let base = match skip {
            Skip::CommitTime => {
                commit_ts_us = cursor.long()?;
                continue;
            }
            Skip::Boolean => {
                cursor.take(1)?;
                continue;
            }
            Skip::Null => continue,
            Skip::Bytes => SkipBase::Bytes,
            Skip::Long => SkipBase::Long,
            Skip::Optional(base) => {
                if cursor.branch()? == 0 {
                    continue;
                }
                *base
            }
        };
        match (base, role) {
            (SkipBase::Long, Role::Lsn) => lsn = u64::try_from(cursor.long()?).ok(),
            (SkipBase::Long, Role::Pos) => pos = u64::try_from(cursor.long()?).ok(),
            (SkipBase::Long, _) => {
                cursor.long()?;
            }
            (SkipBase::Bytes, Role::Gtid) => gtid = Some(cursor.string()?),
            (SkipBase::Bytes, Role::File) => file = Some(cursor.string()?),
            (SkipBase::Bytes, _) => {
                cursor.bytes()?;
            }
        }
    }
    let position = position_of(lsn, gtid, file, pos);
    let op = match cursor.string()? {
        "c" => Op::Create,
        "u" => Op::Update,
        "d" => Op::Delete,
        "r" => Op::Read,
        "t" => Op::Truncate,
        "m" => Op::Message,
        other => return Err(format!("unknown op {other:?}").into()),
    };
    for _ in 0..2 {
        if cursor.branch()? == 1 {
            cursor.long()?;
        }
    }
    let (txn, total_order) = if cursor.branch()? == 1 {
        let id = cursor.string()?.to_owned();
        let total_order = u64::try_from(cursor.long()?).ok();
        if cursor.branch()? == 1 {
            cursor.long()?;
        }
        (Some(id), total_order)
    } else {
        (None, None)
    };
    Ok(Change {
        table: Arc::clone(&plan.table),
        op,
        before,
        after,
        position,
        txn,
        total_order,
        commit_ts_us,
    })
}

/// The plan of the envelope schema registered as `id`; `None` for other schemas (messages).
pub(crate) fn registered_plan(
    registry: &crate::registry::Registry,
    id: u32,
) -> Result<Option<Plan>, String> {
    let stored = registry
        .schema_anywhere(id)
        .map_err(|e| format!("schema id {id}: {}", e.message))?;
    let json: Json =
        serde_json::from_str(&stored.text).map_err(|e| format!("schema id {id}: {e}"))?;
    plan_of(&json).map_err(|e| format!("schema id {id}: {e}"))
}

/// The plan of an envelope schema written by sluice; `None` for other schemas (messages).
pub(crate) fn plan_of(schema: &Json) -> Result<Option<Plan>, SchemaError> {
    let (Some(namespace), Some(name)) = (
        schema.get("sluice.namespace").and_then(Json::as_str),
        schema.get("sluice.table").and_then(Json::as_str),
    ) else {
        return Ok(None);
    };
    let fields = schema["fields"].as_array().ok_or("no fields")?;
    let value_record = &fields[0]["type"][1];
    let source = fields[2]["type"]["fields"]
        .as_array()
        .ok_or("no source record")?
        .iter()
        .map(|f| {
            let name = f["name"].as_str().unwrap_or("");
            Ok((skip_of(name, &f["type"])?, Role::of(name)))
        })
        .collect::<Result<Vec<(Skip, Role)>, SchemaError>>()?;
    let mut columns = Vec::new();
    let mut kinds = Vec::new();
    let mut optional = Vec::new();
    for field in value_record["fields"].as_array().ok_or("no row fields")? {
        let avro_name = field["name"].as_str().ok_or("a field without a name")?;
        let (nullable, ty) = match &field["type"] {
            Json::Array(branches) if branches.len() == 2 && branches[0] == "null" => {
                (true, &branches[1])
            }
            other => (false, other),
        };
        let data_type: DataType = field["sluice.data_type"]
            .as_str()
            .ok_or_else(|| format!("field {avro_name} has no sluice.data_type"))?
            .parse()?;
        kinds.push(kind_of(ty)?);
        optional.push(nullable);
        let key = field["sluice.key"].as_bool().unwrap_or(false);
        columns.push(Column {
            name: field["sluice.name"]
                .as_str()
                .unwrap_or(avro_name)
                .to_owned(),
            type_name: field["sluice.type"].as_str().unwrap_or("").to_owned(),
            data_type,
            key,
            nullable: !key && !field["sluice.not_null"].as_bool().unwrap_or(false),
        });
    }
    Ok(Some(Plan {
        table: Arc::new(TableSchema {
            table: TableId {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
            },
            columns,
            version: 0,
        }),
        fields: kinds,
        optional,
        source,
    }))
}

fn kind_of(ty: &Json) -> Result<FieldKind, SchemaError> {
    let logical = ty.get("logicalType").and_then(Json::as_str);
    let base = match ty {
        Json::String(t) => t.as_str(),
        Json::Object(o) => o.get("type").and_then(Json::as_str).unwrap_or(""),
        _ => "",
    };
    Ok(match (base, logical) {
        ("boolean", _) => FieldKind::Boolean,
        ("int", Some("date")) => FieldKind::Date,
        ("int", _) => FieldKind::Int,
        ("long", Some("time-micros")) => FieldKind::TimeMicros,
        ("long", Some("timestamp-micros")) => FieldKind::TimestampMicros,
        ("long", Some("local-timestamp-micros")) => FieldKind::LocalTimestampMicros,
        ("long", _) => FieldKind::Long,
        ("float", _) => FieldKind::Float,
        ("double", _) => FieldKind::Double,
        ("bytes", Some("decimal")) => FieldKind::Decimal {
            precision: ty["precision"].as_u64().unwrap_or(0) as u32,
            scale: ty["scale"].as_u64().unwrap_or(0) as u32,
        },
        ("bytes", _) => FieldKind::Bytes,
        ("string", Some("uuid")) => FieldKind::Uuid,
        ("string", _) => FieldKind::String,
        ("array", _) => {
            let items = &ty["items"];
            let element = match items {
                Json::Array(branches) if branches.len() == 2 => &branches[1],
                other => other,
            };
            FieldKind::Array(Box::new(kind_of(element)?))
        }
        _ => return Err(format!("unsupported Avro type {ty}").into()),
    })
}

fn read_value(
    cursor: &mut Cursor<'_>,
    kind: &FieldKind,
    data_type: &DataType,
) -> Result<Value, DatumError> {
    let bad = || format!("an Avro {kind:?} value for a {data_type} column");
    Ok(match kind {
        FieldKind::Boolean => Value::Bool(cursor.take(1)?[0] != 0),
        FieldKind::Int | FieldKind::Long => {
            let n = cursor.long()?;
            let fit = || bad();
            match data_type {
                DataType::Int8 => Value::Int8(i8::try_from(n).map_err(|_| fit())?),
                DataType::Int16 => Value::Int16(i16::try_from(n).map_err(|_| fit())?),
                DataType::Int32 => Value::Int32(i32::try_from(n).map_err(|_| fit())?),
                DataType::UInt8 => Value::UInt8(u8::try_from(n).map_err(|_| fit())?),
                DataType::UInt16 => Value::UInt16(u16::try_from(n).map_err(|_| fit())?),
                DataType::UInt32 => Value::UInt32(u32::try_from(n).map_err(|_| fit())?),
                _ => Value::Int64(n),
            }
        }
        FieldKind::Float => Value::Float32(f32::from_le_bytes(
            cursor.take(4)?.try_into().expect("4 bytes"),
        )),
        FieldKind::Double => {
            let v = f64::from_le_bytes(cursor.take(8)?.try_into().expect("8 bytes"));
            match data_type {
                DataType::Float32 => Value::Float32(v as f32),
                _ => Value::Float64(v),
            }
        }
        FieldKind::Decimal { scale, .. } => {
            let text = decimal_text(cursor.bytes()?, *scale as usize);
            match data_type {
                DataType::UInt64 => Value::UInt64(text.parse().map_err(|_| bad())?),
                _ => Value::Decimal(Decimal::Finite(text.into())),
            }
        }
        FieldKind::Bytes => match cursor.bytes()? {
            placeholder if placeholder == UNAVAILABLE_VALUE.as_bytes() => Value::Unavailable,
            bytes => Value::Bytes(bytes::Bytes::copy_from_slice(bytes)),
        },
        FieldKind::Uuid => {
            let text = cursor.string()?;
            Value::Uuid(value::parse_uuid(text).ok_or_else(bad)?)
        }
        FieldKind::Date => Value::Date(match cursor.long()? {
            n if n == i64::from(i32::MAX) => Date::PositiveInfinity,
            n if n == i64::from(i32::MIN) => Date::NegativeInfinity,
            n => Date::Days(i32::try_from(n).map_err(|_| bad())?),
        }),
        FieldKind::TimeMicros => Value::Time(cursor.long()?),
        FieldKind::TimestampMicros | FieldKind::LocalTimestampMicros => {
            let ts = match cursor.long()? {
                TIMESTAMP_POSITIVE_INFINITY_US => Timestamp::PositiveInfinity,
                TIMESTAMP_NEGATIVE_INFINITY_US => Timestamp::NegativeInfinity,
                n => Timestamp::Micros(n),
            };
            if *kind == FieldKind::TimestampMicros {
                Value::TimestampTz(ts)
            } else {
                Value::Timestamp(ts)
            }
        }
        FieldKind::String | FieldKind::Json | FieldKind::Text | FieldKind::DecimalText => {
            let text = cursor.string()?;
            if text == UNAVAILABLE_VALUE {
                return Ok(Value::Unavailable);
            }
            let text = text.to_owned();
            match data_type {
                DataType::Json => Value::Json(text),
                DataType::Enum => Value::Enum(text),
                DataType::Decimal { .. } => Value::Decimal(Decimal::parse(&text).ok_or_else(bad)?),
                DataType::UInt64 => Value::UInt64(text.parse().map_err(|_| bad())?),
                _ => Value::Text(text.into()),
            }
        }
        FieldKind::Array(element) => {
            let element_type = match data_type {
                DataType::Array(inner) => inner.as_ref(),
                _ => return Err(bad().into()),
            };
            let mut items = Vec::new();
            loop {
                let count = cursor.long()?;
                if count == 0 {
                    break;
                }
                if count < 0 {
                    cursor.long()?;
                }
                for _ in 0..count.unsigned_abs() {
                    items.push(if cursor.branch()? == 0 {
                        Value::Null
                    } else {
                        read_value(cursor, element, element_type)?
                    });
                }
            }
            Value::Array(items)
        }
    })
}
