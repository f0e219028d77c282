//! Avro schemas derived from table schemas, named and shaped like Debezium's so that consumers
//! written for Debezium's Avro topics read sluice's: per table version a key record
//! `<prefix>.<schema>.<table>.Key` and an envelope `<prefix>.<schema>.<table>.Envelope` whose
//! `before` and `after` are the row record `….Value`.
//!
//! Column types map to Avro logical types where Avro has one (decimal, date, time-micros,
//! timestamp-micros, local-timestamp-micros, uuid); docs/types.md has the full table. Each
//! field carries what a sink needs to recreate the column and read its values back exactly
//! (`rows.rs`): the source's type name (`sluice.type`), sluice's type (`sluice.data_type`),
//! whether it is part of the key (`sluice.key`) and, when Avro's naming rules changed it, the
//! original column name (`sluice.name`); the envelope names its table (`sluice.namespace`,
//! `sluice.table`). The same plan drives the binary encoder (`encode.rs`), field by field.

use serde_json::{json, Value as Json};
use sluice_core::event::{DataType, TableSchema};

use crate::json::SourceBlock;

/// How Avro carries exact decimals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DecimalHandling {
    /// `bytes` with logical type `decimal` where precision and scale are fixed; unconstrained
    /// numerics (whose scale varies per value) as strings.
    #[default]
    Precise,
    /// Every decimal as its exact text.
    String,
}

/// How one column's values are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldKind {
    Boolean,
    Int,
    Long,
    Float,
    Double,
    /// `bytes`/`decimal` with this scale.
    Decimal {
        precision: u32,
        scale: u32,
    },
    /// A decimal (or any value) as its exact text.
    DecimalText,
    String,
    Json,
    Bytes,
    Uuid,
    Date,
    TimeMicros,
    TimestampMicros,
    LocalTimestampMicros,
    /// ISO-8601 text: intervals, times with zone, MySQL SETs.
    Text,
    Array(Box<FieldKind>),
}

/// One field of a key or row record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldPlan {
    pub name: String,
    pub kind: FieldKind,
    /// The Avro type is `["null", T]`.
    pub nullable: bool,
    /// Index of the column in the table schema.
    pub column: usize,
}

/// Everything needed to encode events of one table version.
#[derive(Debug, Clone)]
pub struct TablePlan {
    pub key: Vec<FieldPlan>,
    pub row: Vec<FieldPlan>,
    pub key_schema: Option<Json>,
    pub value_schema: Json,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SchemaError(pub String);

/// An Avro name: letters, digits and `_`, not starting with a digit (Debezium's adjustment).
pub fn avro_name(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// `<prefix>.<schema>.<table>` as an Avro namespace.
pub fn table_namespace(prefix: &str, table: &TableSchema) -> String {
    [prefix, &table.table.namespace, &table.table.name]
        .iter()
        .map(|part| avro_name(part))
        .collect::<Vec<_>>()
        .join(".")
}

fn kind_of(data_type: &DataType, decimals: DecimalHandling) -> FieldKind {
    match data_type {
        DataType::Bool => FieldKind::Boolean,
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::UInt8 | DataType::UInt16 => {
            FieldKind::Int
        }
        DataType::Int64 | DataType::UInt32 => FieldKind::Long,
        DataType::UInt64 => FieldKind::Decimal {
            precision: 20,
            scale: 0,
        },
        DataType::Float32 => FieldKind::Float,
        DataType::Float64 => FieldKind::Double,
        DataType::Decimal {
            precision: Some(precision),
            scale,
        } if decimals == DecimalHandling::Precise => FieldKind::Decimal {
            precision: *precision,
            scale: scale.unwrap_or(0),
        },
        DataType::Decimal { .. } => FieldKind::DecimalText,
        DataType::Text | DataType::Enum => FieldKind::String,
        DataType::Json => FieldKind::Json,
        DataType::Bytes => FieldKind::Bytes,
        DataType::Uuid => FieldKind::Uuid,
        DataType::Date => FieldKind::Date,
        DataType::Time => FieldKind::TimeMicros,
        DataType::TimestampTz => FieldKind::TimestampMicros,
        DataType::Timestamp => FieldKind::LocalTimestampMicros,
        DataType::TimeTz | DataType::Interval | DataType::Set => FieldKind::Text,
        DataType::Array(element) => FieldKind::Array(Box::new(kind_of(element, decimals))),
    }
}

fn type_json(kind: &FieldKind) -> Json {
    match kind {
        FieldKind::Boolean => json!("boolean"),
        FieldKind::Int => json!("int"),
        FieldKind::Long => json!("long"),
        FieldKind::Float => json!("float"),
        FieldKind::Double => json!("double"),
        FieldKind::Decimal { precision, scale } => {
            json!({"type": "bytes", "logicalType": "decimal", "precision": precision, "scale": scale})
        }
        FieldKind::DecimalText | FieldKind::String | FieldKind::Text => json!("string"),
        FieldKind::Json => json!({"type": "string", "connect.name": "io.debezium.data.Json"}),
        FieldKind::Bytes => json!("bytes"),
        FieldKind::Uuid => json!({"type": "string", "logicalType": "uuid"}),
        FieldKind::Date => json!({"type": "int", "logicalType": "date"}),
        FieldKind::TimeMicros => json!({"type": "long", "logicalType": "time-micros"}),
        FieldKind::TimestampMicros => json!({"type": "long", "logicalType": "timestamp-micros"}),
        FieldKind::LocalTimestampMicros => {
            json!({"type": "long", "logicalType": "local-timestamp-micros"})
        }
        FieldKind::Array(element) => {
            json!({"type": "array", "items": ["null", type_json(element)]})
        }
    }
}

fn fields(
    table: &TableSchema,
    columns: impl Iterator<Item = usize>,
    decimals: DecimalHandling,
) -> Result<(Vec<FieldPlan>, Vec<Json>), SchemaError> {
    let mut plans: Vec<FieldPlan> = Vec::new();
    let mut json_fields = Vec::new();
    for index in columns {
        let column = &table.columns[index];
        let name = avro_name(&column.name);
        if let Some(other) = plans.iter().find(|p| p.name == name) {
            return Err(SchemaError(format!(
                "columns {:?} and {:?} of {} both become Avro field {name}; rename one",
                table.columns[other.column].name, column.name, table.table
            )));
        }
        let kind = kind_of(&column.data_type, decimals);
        // Only key columns are required in Avro: a delete's old row under REPLICA IDENTITY
        // DEFAULT carries just the key, and a NOT NULL column added later must not make old
        // records unreadable. Whether the column is NOT NULL at the source is `sluice.not_null`.
        let optional = !column.key;
        let mut field = if optional {
            json!({"name": name, "type": ["null", type_json(&kind)], "default": null})
        } else {
            json!({"name": name, "type": type_json(&kind)})
        };
        if !column.nullable {
            field["sluice.not_null"] = json!(true);
        }
        field["sluice.type"] = json!(column.type_name);
        field["sluice.data_type"] = json!(column.data_type.to_string());
        if column.key {
            field["sluice.key"] = json!(true);
        }
        if name != column.name {
            field["sluice.name"] = json!(column.name);
        }
        json_fields.push(field);
        plans.push(FieldPlan {
            name,
            kind,
            nullable: optional,
            column: index,
        });
    }
    Ok((plans, json_fields))
}

/// The source block record, per connector (Debezium's `io.debezium.connector.<c>.Source`).
pub fn source_schema(source: &SourceBlock) -> Json {
    let optional =
        |name: &str, ty: &str| json!({"name": name, "type": ["null", ty], "default": null});
    let mut fields = vec![
        json!({"name": "version", "type": "string"}),
        json!({"name": "connector", "type": "string"}),
        json!({"name": "name", "type": "string"}),
        json!({"name": "ts_ms", "type": "long"}),
        json!({"name": "ts_us", "type": "long"}),
        json!({"name": "snapshot", "type": "string", "default": "false"}),
        json!({"name": "db", "type": "string"}),
    ];
    if source.connector == "postgresql" {
        fields.push(optional("schema", "string"));
        fields.push(optional("table", "string"));
        fields.push(optional("txId", "long"));
        fields.push(optional("lsn", "long"));
    } else {
        fields.push(optional("table", "string"));
        fields.push(optional("gtid", "string"));
        fields.push(optional("file", "string"));
        fields.push(optional("pos", "long"));
    }
    json!({
        "type": "record",
        "name": "Source",
        "namespace": format!("io.debezium.connector.{}", source.connector),
        "fields": fields,
    })
}

fn transaction_schema() -> Json {
    json!({
        "name": "transaction",
        "type": ["null", {
            "type": "record",
            "name": "block",
            "namespace": "event",
            "fields": [
                {"name": "id", "type": "string"},
                {"name": "total_order", "type": "long"},
                {"name": "data_collection_order", "type": ["null", "long"], "default": null}
            ]
        }],
        "default": null
    })
}

/// Key and envelope schemas of one table version.
pub fn table_plan(
    prefix: &str,
    source: &SourceBlock,
    table: &TableSchema,
    decimals: DecimalHandling,
) -> Result<TablePlan, SchemaError> {
    let namespace = table_namespace(prefix, table);
    let (row, row_fields) = fields(table, 0..table.columns.len(), decimals)?;
    let (key, key_fields) = fields(table, table.key_columns().map(|(i, _)| i), decimals)?;
    let key_schema = table.has_key().then(
        || json!({"type": "record", "name": "Key", "namespace": namespace, "fields": key_fields}),
    );
    let value_record = json!({
        "type": "record",
        "name": "Value",
        "namespace": namespace,
        "fields": row_fields,
    });
    let value_schema = json!({
        "type": "record",
        "name": "Envelope",
        "namespace": namespace,
        "fields": [
            {"name": "before", "type": ["null", value_record], "default": null},
            {"name": "after", "type": ["null", "Value"], "default": null},
            {"name": "source", "type": source_schema(source)},
            {"name": "op", "type": "string"},
            {"name": "ts_ms", "type": ["null", "long"], "default": null},
            {"name": "ts_us", "type": ["null", "long"], "default": null},
            transaction_schema(),
        ],
        "connect.name": format!("{namespace}.Envelope"),
        "sluice.namespace": table.table.namespace,
        "sluice.table": table.table.name,
    });
    Ok(TablePlan {
        key,
        row,
        key_schema,
        value_schema,
    })
}

/// The key schema of transaction boundary records (`<prefix>.transaction`), Debezium's.
pub fn transaction_key_schema() -> Json {
    json!({
        "type": "record",
        "name": "TransactionMetadataKey",
        "namespace": "io.debezium.connector.common",
        "fields": [{"name": "id", "type": "string"}],
    })
}

/// The value schema of transaction boundary records: Debezium's `TransactionMetadataValue`.
pub fn transaction_value_schema() -> Json {
    json!({
        "type": "record",
        "name": "TransactionMetadataValue",
        "namespace": "io.debezium.connector.common",
        "fields": [
            {"name": "status", "type": "string"},
            {"name": "id", "type": "string"},
            {"name": "event_count", "type": ["null", "long"], "default": null},
            {"name": "data_collections", "type": ["null", {
                "type": "array",
                "items": {
                    "type": "record",
                    "name": "ConnectDefault",
                    "namespace": "io.confluent.connect.avro",
                    "fields": [
                        {"name": "data_collection", "type": "string"},
                        {"name": "event_count", "type": "long"}
                    ]
                }
            }], "default": null},
            {"name": "ts_ms", "type": "long"}
        ],
    })
}

/// The value schema of logical decoding messages (`<prefix>.message`).
pub fn message_schema(source: &SourceBlock) -> Json {
    json!({
        "type": "record",
        "name": "MessageValue",
        "namespace": format!("io.debezium.connector.{}", source.connector),
        "fields": [
            {"name": "op", "type": "string"},
            {"name": "ts_ms", "type": ["null", "long"], "default": null},
            {"name": "ts_us", "type": ["null", "long"], "default": null},
            {"name": "source", "type": source_schema(source)},
            {"name": "message", "type": {
                "type": "record",
                "name": "Message",
                "fields": [
                    {"name": "prefix", "type": "string"},
                    {"name": "content", "type": "bytes"}
                ]
            }},
            transaction_schema(),
        ],
    })
}
