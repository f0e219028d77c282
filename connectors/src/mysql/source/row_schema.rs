//! A table's columns as a row event describes them (binlog_row_metadata = FULL): the binlog's
//! own column names decide the schema of each row, so a stream that is behind the catalog
//! (catching up across ALTER TABLE) still reads every row with the columns it was written
//! with. Columns the catalog still has keep its description; others are described from the
//! event's column types.

use std::sync::Arc;

use mysql_async::binlog::events::{OptionalMetaExtractor, TableMapEvent};
use mysql_async::consts::ColumnType;
use sluice_core::event::{Column, DataType, TableSchema};

use super::catalog::{Kind, TableInfo};
use super::history::{ColumnRow, TableDef};

/// Column names of a table map event (present with binlog_row_metadata = FULL).
pub(super) fn column_names(tme: &TableMapEvent<'_>) -> Option<Vec<String>> {
    let extractor = OptionalMetaExtractor::new(tme.iter_optional_meta()).ok()?;
    let names: Vec<String> = extractor
        .iter_column_name()
        .map(|n| n.map(|n| n.name().into_owned()))
        .collect::<Result<_, _>>()
        .ok()?;
    (names.len() as u64 == tme.columns_count()).then_some(names)
}

/// The table as the row event describes it: columns the catalog still has (by name and
/// compatible type) keep the catalog's description; others (dropped or changed since) are
/// described from the event's column types.
pub(super) fn shape_from_row_metadata(
    tme: &TableMapEvent<'_>,
    names: &[String],
    catalog: &TableInfo,
) -> TableInfo {
    let extractor = OptionalMetaExtractor::new(tme.iter_optional_meta()).ok();
    let signed: Vec<bool> = extractor
        .as_ref()
        .map(|e| e.iter_signedness().collect())
        .unwrap_or_default();
    let mut numeric = 0;
    let mut columns = Vec::with_capacity(names.len());
    let mut kinds = Vec::with_capacity(names.len());
    let mut rows = Vec::with_capacity(names.len());
    for (i, name) in names.iter().enumerate() {
        let column_type = tme.get_column_type(i).ok().flatten();
        let is_numeric = matches!(
            column_type,
            Some(
                ColumnType::MYSQL_TYPE_TINY
                    | ColumnType::MYSQL_TYPE_SHORT
                    | ColumnType::MYSQL_TYPE_INT24
                    | ColumnType::MYSQL_TYPE_LONG
                    | ColumnType::MYSQL_TYPE_LONGLONG
                    | ColumnType::MYSQL_TYPE_NEWDECIMAL
                    | ColumnType::MYSQL_TYPE_FLOAT
                    | ColumnType::MYSQL_TYPE_DOUBLE
            )
        );
        let unsigned = is_numeric && signed.get(numeric).copied().unwrap_or(false);
        if is_numeric {
            numeric += 1;
        }
        let derived = derive_kind(
            column_type,
            unsigned,
            tme.get_column_metadata(i).unwrap_or(&[]),
        );
        let known = catalog
            .schema
            .columns
            .iter()
            .position(|c| c.name == *name)
            .filter(|&j| {
                // ENUM and SET labels are only in the catalog (derived as Unknown).
                matches!(derived.1, Kind::Unknown(_))
                    || std::mem::discriminant(&catalog.kinds[j])
                        == std::mem::discriminant(&derived.1)
            });
        match known {
            Some(j) => {
                columns.push(catalog.schema.columns[j].clone());
                kinds.push(catalog.kinds[j].clone());
                if let Some(row) = catalog.def.columns.get(j) {
                    rows.push(row.clone());
                }
            }
            None => {
                let (data_type, kind, type_name) = derived;
                rows.push(ColumnRow {
                    name: name.clone(),
                    data_type: type_name
                        .split(['(', ' '])
                        .next()
                        .unwrap_or_default()
                        .to_owned(),
                    column_type: type_name.clone(),
                    nullable: true,
                    key: false,
                    charset: None,
                });
                columns.push(Column {
                    name: name.clone(),
                    type_name,
                    data_type,
                    key: false,
                    nullable: true,
                });
                kinds.push(kind);
            }
        }
    }
    TableInfo {
        schema: Arc::new(TableSchema {
            table: catalog.schema.table.clone(),
            columns,
            version: catalog.schema.version,
        }),
        kinds,
        def: TableDef {
            columns: rows,
            charset: catalog.def.charset.clone(),
        },
    }
}

/// sluice's type, the decoding kind and a type name for a binlog column type.
fn derive_kind(
    column_type: Option<ColumnType>,
    unsigned: bool,
    meta: &[u8],
) -> (DataType, Kind, String) {
    let int = |bits: u8, signed: DataType, unsigned_type: DataType, name: &str| {
        (
            if unsigned { unsigned_type } else { signed },
            Kind::Int { unsigned, bits },
            if unsigned {
                format!("{name} unsigned")
            } else {
                name.to_owned()
            },
        )
    };
    match column_type {
        Some(ColumnType::MYSQL_TYPE_TINY) => int(8, DataType::Int8, DataType::UInt8, "tinyint"),
        Some(ColumnType::MYSQL_TYPE_SHORT) => {
            int(16, DataType::Int16, DataType::UInt16, "smallint")
        }
        Some(ColumnType::MYSQL_TYPE_INT24) => {
            int(24, DataType::Int32, DataType::UInt32, "mediumint")
        }
        Some(ColumnType::MYSQL_TYPE_LONG) => int(32, DataType::Int32, DataType::UInt32, "int"),
        Some(ColumnType::MYSQL_TYPE_LONGLONG) => {
            int(64, DataType::Int64, DataType::UInt64, "bigint")
        }
        Some(ColumnType::MYSQL_TYPE_NEWDECIMAL) => {
            let (p, s) = (
                u32::from(meta.first().copied().unwrap_or(10)),
                u32::from(meta.get(1).copied().unwrap_or(0)),
            );
            (
                DataType::Decimal {
                    precision: Some(p),
                    scale: Some(s),
                },
                Kind::Decimal,
                format!("decimal({p},{s})"),
            )
        }
        Some(ColumnType::MYSQL_TYPE_FLOAT) => (DataType::Float32, Kind::Float, "float".into()),
        Some(ColumnType::MYSQL_TYPE_DOUBLE) => (DataType::Float64, Kind::Double, "double".into()),
        Some(ColumnType::MYSQL_TYPE_DATE | ColumnType::MYSQL_TYPE_NEWDATE) => {
            (DataType::Date, Kind::Date, "date".into())
        }
        Some(ColumnType::MYSQL_TYPE_DATETIME | ColumnType::MYSQL_TYPE_DATETIME2) => {
            (DataType::Timestamp, Kind::DateTime, "datetime".into())
        }
        Some(ColumnType::MYSQL_TYPE_TIMESTAMP | ColumnType::MYSQL_TYPE_TIMESTAMP2) => {
            (DataType::TimestampTz, Kind::Timestamp, "timestamp".into())
        }
        Some(ColumnType::MYSQL_TYPE_TIME | ColumnType::MYSQL_TYPE_TIME2) => {
            (DataType::Time, Kind::Time, "time".into())
        }
        Some(ColumnType::MYSQL_TYPE_YEAR) => (DataType::Int16, Kind::Year, "year".into()),
        Some(ColumnType::MYSQL_TYPE_JSON) => (DataType::Json, Kind::Json, "json".into()),
        Some(ColumnType::MYSQL_TYPE_BIT) => {
            let bits = u32::from(meta.get(1).copied().unwrap_or(0)) * 8
                + u32::from(meta.first().copied().unwrap_or(1));
            if bits == 1 {
                (DataType::Bool, Kind::Bit { bits }, "bit(1)".into())
            } else {
                (DataType::Bytes, Kind::Bit { bits }, format!("bit({bits})"))
            }
        }
        Some(
            ColumnType::MYSQL_TYPE_VARCHAR
            | ColumnType::MYSQL_TYPE_VAR_STRING
            | ColumnType::MYSQL_TYPE_STRING,
        ) => (
            DataType::Text,
            Kind::Text { latin1: false },
            "varchar".into(),
        ),
        Some(
            ColumnType::MYSQL_TYPE_BLOB
            | ColumnType::MYSQL_TYPE_TINY_BLOB
            | ColumnType::MYSQL_TYPE_MEDIUM_BLOB
            | ColumnType::MYSQL_TYPE_LONG_BLOB,
        ) => (DataType::Bytes, Kind::Binary { pad: None }, "blob".into()),
        other => {
            let name = format!("{other:?}");
            (DataType::Text, Kind::Unknown(name.clone()), name)
        }
    }
}
