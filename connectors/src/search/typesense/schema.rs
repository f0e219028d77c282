//! Collection fields made from a table's schema. Every field is optional (a null is an absent
//! field); the key becomes the document `id` (as text), so a column named `id` is not a field of
//! its own. Types follow `document.rs`: numbers as `int32`/`int64`/`float` (decimals as
//! `float`: Typesense has no exact type), timestamps as `int64` epoch milliseconds, arrays as
//! arrays of their element's type, everything else as `string` (bytes and json stored, not
//! indexed).

use serde_json::{json, Value as Json};
use sluice_core::event::{DataType, TableSchema};

/// The `fields` of a collection for `table`.
pub(super) fn fields(table: &TableSchema) -> Vec<Json> {
    table
        .columns
        .iter()
        .filter(|c| c.name != "id")
        .map(|c| {
            let (kind, index) = field_type(&c.data_type);
            let mut field = json!({ "name": c.name, "type": kind, "optional": true });
            if !index {
                field["index"] = json!(false);
            }
            field
        })
        .collect()
}

/// A column's field type, and whether the field is indexed.
fn field_type(data_type: &DataType) -> (String, bool) {
    let scalar = |t: &DataType| -> Option<&'static str> {
        Some(match t {
            DataType::Bool => "bool",
            DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::UInt8
            | DataType::UInt16 => "int32",
            DataType::Int64 | DataType::UInt32 | DataType::UInt64 => "int64",
            DataType::Timestamp | DataType::TimestampTz => "int64",
            DataType::Float32 | DataType::Float64 | DataType::Decimal { .. } => "float",
            DataType::Text
            | DataType::Uuid
            | DataType::Enum
            | DataType::Date
            | DataType::Time
            | DataType::TimeTz
            | DataType::Interval => "string",
            DataType::Bytes | DataType::Json | DataType::Set | DataType::Array(_) => return None,
        })
    };
    match data_type {
        DataType::Bytes | DataType::Json => ("string".into(), false),
        DataType::Set => ("string[]".into(), true),
        DataType::Array(inner) => match scalar(inner) {
            Some(kind) => (format!("{kind}[]"), true),
            None => ("string[]".into(), false),
        },
        other => (scalar(other).unwrap_or("string").into(), true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_core::event::{Column, TableId};

    #[test]
    fn fields_follow_the_columns_and_the_id_is_the_key() {
        let column = |name: &str, data_type: DataType, key| Column {
            name: name.into(),
            type_name: String::new(),
            data_type,
            key,
            nullable: !key,
        };
        let table = TableSchema {
            table: TableId {
                namespace: "public".into(),
                name: "t".into(),
            },
            columns: vec![
                column("id", DataType::Int64, true),
                column(
                    "price",
                    DataType::Decimal {
                        precision: Some(10),
                        scale: Some(2),
                    },
                    false,
                ),
                column("tags", DataType::Array(Box::new(DataType::Text)), false),
                column("meta", DataType::Json, false),
                column("at", DataType::TimestampTz, false),
            ],
            version: 1,
        };
        let f = fields(&table);
        assert_eq!(f.len(), 4, "no field for id: {f:?}");
        assert_eq!(
            f[0],
            json!({"name": "price", "type": "float", "optional": true})
        );
        assert_eq!(f[1]["type"], "string[]");
        assert_eq!(
            f[2],
            json!({"name": "meta", "type": "string", "optional": true, "index": false})
        );
        assert_eq!(f[3]["type"], "int64");
    }
}
