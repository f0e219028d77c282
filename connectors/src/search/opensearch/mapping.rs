//! Index mappings made from a table's schema (`mapping = "create"`).
//!
//! Exact numbers stay exact: the document keeps a decimal's every digit as a string, and the
//! index maps it as `scaled_float` with the column's scale when the digits fit a long
//! (precision up to 18), else as `double` (ranges and sorting on the nearest double). Integers
//! map to the smallest type that holds them (`unsigned_long` for 64-bit unsigned), timestamps
//! and dates to `date`, text to `text` with a `keyword` subfield (as dynamic mapping does),
//! json to `object`, `flat_object` or an unindexed object, arrays to their element's type (every field of an index
//! is multi-valued).

use serde_json::{json, Value as Json};
use sluice_core::event::{DataType, TableSchema};

use super::config::JsonMapping;

/// The `mappings` body for `table`'s columns.
pub fn mapping(table: &TableSchema, json_mapping: JsonMapping) -> Json {
    let properties: serde_json::Map<String, Json> = table
        .columns
        .iter()
        .map(|c| (c.name.clone(), field(&c.data_type, json_mapping)))
        .collect();
    json!({ "properties": properties })
}

/// The mapping of one column.
pub fn field(data_type: &DataType, json_mapping: JsonMapping) -> Json {
    let simple = |t: &str| json!({ "type": t });
    match data_type {
        DataType::Bool => simple("boolean"),
        DataType::Int8 => simple("byte"),
        DataType::Int16 | DataType::UInt8 => simple("short"),
        DataType::Int32 | DataType::UInt16 => simple("integer"),
        DataType::Int64 | DataType::UInt32 => simple("long"),
        DataType::UInt64 => simple("unsigned_long"),
        DataType::Float32 => simple("float"),
        DataType::Float64 => simple("double"),
        DataType::Decimal {
            precision: Some(precision),
            scale,
        } if *precision <= 18 => {
            let scale = scale.unwrap_or(0);
            json!({ "type": "scaled_float", "scaling_factor": 10f64.powi(scale as i32) })
        }
        DataType::Decimal { .. } => simple("double"),
        DataType::Text => json!({
            "type": "text",
            "fields": { "keyword": { "type": "keyword", "ignore_above": 256 } }
        }),
        DataType::Bytes => simple("binary"),
        DataType::Uuid
        | DataType::Time
        | DataType::TimeTz
        | DataType::Interval
        | DataType::Enum
        | DataType::Set => simple("keyword"),
        DataType::Json => match json_mapping {
            JsonMapping::Object => json!({ "type": "object", "dynamic": true }),
            JsonMapping::FlatObject => simple("flat_object"),
            JsonMapping::Stored => json!({ "type": "object", "enabled": false }),
        },
        DataType::Date => json!({ "type": "date", "format": "strict_date||date_optional_time" }),
        DataType::Timestamp | DataType::TimestampTz => {
            json!({ "type": "date", "format": "strict_date_optional_time||epoch_millis" })
        }
        DataType::Array(inner) => field(inner, json_mapping),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_core::event::{Column, TableId};

    #[test]
    fn columns_map_to_types_that_keep_their_values() {
        let column = |name: &str, data_type: DataType| Column {
            name: name.into(),
            type_name: String::new(),
            data_type,
            key: false,
            nullable: true,
        };
        let table = TableSchema {
            table: TableId {
                namespace: "public".into(),
                name: "t".into(),
            },
            columns: vec![
                column(
                    "price",
                    DataType::Decimal {
                        precision: Some(10),
                        scale: Some(2),
                    },
                ),
                column(
                    "huge",
                    DataType::Decimal {
                        precision: None,
                        scale: None,
                    },
                ),
                column("at", DataType::TimestampTz),
                column("ids", DataType::Array(Box::new(DataType::Int64))),
                column("meta", DataType::Json),
            ],
            version: 1,
        };
        let m = mapping(&table, JsonMapping::Object);
        let p = &m["properties"];
        assert_eq!(
            p["price"],
            json!({"type": "scaled_float", "scaling_factor": 100.0})
        );
        assert_eq!(p["huge"]["type"], "double");
        assert_eq!(p["at"]["type"], "date");
        assert_eq!(p["ids"]["type"], "long");
        assert_eq!(p["meta"]["type"], "object");
        let flat = mapping(&table, JsonMapping::FlatObject);
        assert_eq!(flat["properties"]["meta"]["type"], "flat_object");
    }
}
