//! MySQL/MariaDB target tables: column types for sluice's columns, creating a table when its
//! first events arrive, and following the source's schema changes (added and dropped columns,
//! widened types); anything else stops the sink with what changed and what to do.

use sluice_core::event::{Column, DataType, TableSchema};

use super::encode::ident;
use super::SinkError;
use crate::replica;

/// The MySQL type for a column: the source's own spelling when it came from MySQL/MariaDB,
/// else the mapping of its sluice type (docs/types.md). Key columns get bounded types (MySQL
/// cannot index TEXT or BLOB whole).
pub(super) fn mysql_type(column: &Column) -> String {
    type_for(&column.data_type, column.type_name.trim(), column.key)
}

fn type_for(data_type: &DataType, source: &str, key: bool) -> String {
    let lower = source.to_ascii_lowercase();
    let keep = |prefixes: &[&str]| {
        prefixes
            .iter()
            .any(|p| lower.starts_with(p))
            .then(|| lower.clone())
    };
    let paren = |prefix: &str| {
        lower
            .strip_prefix(prefix)
            .filter(|rest| rest.starts_with('(') && rest.ends_with(')'))
            .map(str::to_owned)
    };
    // The fractional-second precision of a Postgres or MySQL time type: `timestamp(3) with
    // time zone`, `datetime(3)`, `time(3)`.
    let precision = || {
        lower
            .split_once('(')
            .and_then(|(_, rest)| rest.split_once(')'))
            .and_then(|(digits, _)| digits.parse::<u32>().ok())
            .map(|p| format!("({p})"))
    };
    match data_type {
        DataType::Bool => "tinyint(1)".into(),
        DataType::Int8 => "tinyint".into(),
        DataType::UInt8 => "tinyint unsigned".into(),
        DataType::Int16 => "smallint".into(),
        DataType::UInt16 => "smallint unsigned".into(),
        DataType::Int32 => keep(&["mediumint"]).unwrap_or_else(|| "int".into()),
        DataType::UInt32 => keep(&["mediumint"]).unwrap_or_else(|| "int unsigned".into()),
        DataType::Int64 => "bigint".into(),
        DataType::UInt64 => "bigint unsigned".into(),
        DataType::Float32 => "float".into(),
        DataType::Float64 => "double".into(),
        DataType::Decimal {
            precision: Some(p),
            scale,
        } => format!("decimal({},{})", (*p).min(65), scale.unwrap_or(0).min(30)),
        DataType::Decimal { .. } => "decimal(65,30)".into(),
        DataType::Text => {
            if key {
                keep(&["varchar(", "char("])
                    .or_else(|| paren("character varying").map(|n| format!("varchar{n}")))
                    .or_else(|| paren("character").map(|n| format!("char{n}")))
                    .unwrap_or_else(|| "varchar(255)".into())
            } else {
                keep(&[
                    "varchar(",
                    "char(",
                    "tinytext",
                    "text",
                    "mediumtext",
                    "longtext",
                ])
                .or_else(|| paren("character varying").map(|n| format!("varchar{n}")))
                .or_else(|| paren("character").map(|n| format!("char{n}")))
                .unwrap_or_else(|| "longtext".into())
            }
        }
        DataType::Bytes => {
            if key {
                keep(&["varbinary(", "binary("]).unwrap_or_else(|| "varbinary(255)".into())
            } else {
                keep(&[
                    "varbinary(",
                    "binary(",
                    "tinyblob",
                    "blob",
                    "mediumblob",
                    "longblob",
                ])
                .unwrap_or_else(|| "longblob".into())
            }
        }
        DataType::Uuid => "char(36)".into(),
        DataType::Json => "json".into(),
        DataType::Date => "date".into(),
        DataType::Time => precision().map_or_else(|| "time(6)".into(), |p| format!("time{p}")),
        DataType::TimeTz => "varchar(32)".into(),
        // Instants are stored as UTC wall-clock time (the session's time zone is UTC).
        DataType::Timestamp | DataType::TimestampTz => {
            precision().map_or_else(|| "datetime(6)".into(), |p| format!("datetime{p}"))
        }
        DataType::Interval => "varchar(64)".into(),
        DataType::Enum => keep(&["enum("]).unwrap_or_else(|| "varchar(255)".into()),
        DataType::Set => keep(&["set("]).unwrap_or_else(|| "varchar(1024)".into()),
        DataType::Array(_) => "json".into(),
    }
}

/// The type as information_schema spells it, without integer display widths
/// (`int(11)` → `int`, `bigint(20) unsigned` → `bigint unsigned`; `tinyint(1)` stays).
pub(super) fn normalize(column_type: &str) -> String {
    let lower = column_type.to_ascii_lowercase();
    for int in ["tinyint", "smallint", "mediumint", "int", "bigint"] {
        if let Some(rest) = lower.strip_prefix(int) {
            if let Some(after) = rest.strip_prefix('(').and_then(|r| r.split_once(')')) {
                if int == "tinyint" && after.0 == "1" {
                    return lower;
                }
                return format!("{int}{}", after.1);
            }
        }
    }
    // MariaDB reports JSON columns as longtext with a check constraint.
    lower
}

fn int_rank(t: &str) -> Option<(usize, bool)> {
    let unsigned = t.ends_with(" unsigned");
    let base = t.trim_end_matches(" unsigned");
    ["tinyint", "smallint", "mediumint", "int", "bigint"]
        .iter()
        .position(|i| *i == base)
        .map(|rank| (rank, unsigned))
}

fn modifiers(t: &str) -> Vec<u32> {
    t.split_once('(')
        .and_then(|(_, rest)| rest.split_once(')'))
        .map(|(inside, _)| {
            inside
                .split(',')
                .filter_map(|n| n.trim().parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Whether a column of type `from` may be altered to `to` without losing values.
pub(super) fn widens(from: &str, to: &str) -> bool {
    if from == to {
        return true;
    }
    if let (Some((a, au)), Some((b, bu))) = (int_rank(from), int_rank(to)) {
        return (au == bu && a <= b) || (au && !bu && a < b);
    }
    let (fm, tm) = (modifiers(from), modifiers(to));
    let base = |t: &str| t.split('(').next().unwrap_or("").to_owned();
    match (base(from).as_str(), base(to).as_str()) {
        ("decimal", "decimal") => {
            fm.len() == 2 && tm.len() == 2 && fm[1] == tm[1] && tm[0] >= fm[0]
        }
        ("varchar", "varchar")
        | ("varbinary", "varbinary")
        | ("datetime", "datetime")
        | ("time", "time") => !fm.is_empty() && !tm.is_empty() && tm[0] >= fm[0],
        (
            "varchar" | "char" | "tinytext" | "text" | "mediumtext",
            "longtext" | "mediumtext" | "text",
        ) => true,
        ("float", "double") => true,
        _ => false,
    }
}

/// A target table as it is: (name, normalized type, nullable), and its key.
#[derive(Debug, Clone)]
pub(super) struct Existing {
    pub columns: Vec<(String, String, bool)>,
    pub key: Vec<String>,
}

/// The statements that make the target match `table`; an error for changes sluice must not
/// make.
pub(super) fn reconcile(
    database: &str,
    table: &TableSchema,
    existing: Option<&Existing>,
) -> Result<Vec<String>, SinkError> {
    let target = format!("{}.{}", ident(database), ident(&table.table.name));
    let Some(existing) = existing else {
        let mut columns: Vec<String> = table
            .columns
            .iter()
            .map(|c| {
                let not_null = if c.key || !c.nullable {
                    " NOT NULL"
                } else {
                    " NULL"
                };
                format!("{} {}{not_null}", ident(&c.name), mysql_type(c))
            })
            .collect();
        if table.has_key() {
            let key: Vec<String> = table.key_columns().map(|(_, c)| ident(&c.name)).collect();
            columns.push(format!("PRIMARY KEY ({})", key.join(", ")));
        }
        return Ok(vec![
            format!("CREATE DATABASE IF NOT EXISTS {}", ident(database)),
            format!(
                "CREATE TABLE IF NOT EXISTS {target} ({}) DEFAULT CHARSET = utf8mb4",
                columns.join(", ")
            ),
        ]);
    };
    replica::check_key(table, &existing.key, &target)
        .map_err(|e| SinkError::Schema(e.to_string()))?;
    let mut statements = Vec::new();
    for column in &table.columns {
        let wanted = mysql_type(column);
        match existing
            .columns
            .iter()
            .find(|(n, _, _)| n.eq_ignore_ascii_case(&column.name))
        {
            None => statements.push(format!(
                "ALTER TABLE {target} ADD COLUMN {} {wanted} NULL",
                ident(&column.name)
            )),
            Some((_, have, nullable)) => {
                let json_alias = wanted == "json" && have == "longtext";
                let changed = *have != wanted && !json_alias;
                if changed && !widens(have, &wanted) {
                    return Err(SinkError::Schema(format!(
                        "column {} of {} changed type: the target has {have}, the source now \
                         sends {wanted} ({}); sluice applies only widening changes. Alter the \
                         target column yourself (ALTER TABLE {target} MODIFY COLUMN {} {wanted}) \
                         and restart",
                        column.name,
                        table.table,
                        column.type_name,
                        ident(&column.name)
                    )));
                }
                let loosen = !*nullable && column.nullable && !column.key;
                if (changed && !widens(&wanted, have)) || loosen {
                    let null = if column.key || (!column.nullable && !*nullable) {
                        " NOT NULL"
                    } else {
                        " NULL"
                    };
                    statements.push(format!(
                        "ALTER TABLE {target} MODIFY COLUMN {} {wanted}{null}",
                        ident(&column.name)
                    ));
                }
            }
        }
    }
    for (name, _, _) in &existing.columns {
        if !table
            .columns
            .iter()
            .any(|c| c.name.eq_ignore_ascii_case(name))
        {
            statements.push(format!("ALTER TABLE {target} DROP COLUMN {}", ident(name)));
        }
    }
    Ok(statements)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(data_type: DataType, type_name: &str, key: bool) -> Column {
        Column {
            name: "c".into(),
            type_name: type_name.into(),
            data_type,
            key,
            nullable: !key,
        }
    }

    #[test]
    fn types_map_and_keys_get_bounded_types() {
        assert_eq!(
            mysql_type(&col(DataType::Text, "varchar(20)", false)),
            "varchar(20)"
        );
        assert_eq!(
            mysql_type(&col(DataType::Text, "character varying(20)", false)),
            "varchar(20)"
        );
        assert_eq!(mysql_type(&col(DataType::Text, "text", false)), "text");
        assert_eq!(
            mysql_type(&col(DataType::Text, "text", true)),
            "varchar(255)"
        );
        assert_eq!(
            mysql_type(&col(DataType::UInt64, "bigint unsigned", false)),
            "bigint unsigned"
        );
        assert_eq!(
            mysql_type(&col(
                DataType::TimestampTz,
                "timestamp with time zone",
                false
            )),
            "datetime(6)"
        );
        assert_eq!(
            mysql_type(&col(
                DataType::Decimal {
                    precision: None,
                    scale: None
                },
                "numeric",
                false
            )),
            "decimal(65,30)"
        );
        assert_eq!(
            mysql_type(&col(DataType::Enum, "enum('a','b')", false)),
            "enum('a','b')"
        );
    }

    #[test]
    fn information_schema_types_normalize_and_widen() {
        assert_eq!(normalize("int(11)"), "int");
        assert_eq!(normalize("bigint(20) unsigned"), "bigint unsigned");
        assert_eq!(normalize("tinyint(1)"), "tinyint(1)");
        assert!(widens("int", "bigint"));
        assert!(!widens("bigint", "int"));
        assert!(widens("int unsigned", "bigint"));
        assert!(widens("varchar(20)", "varchar(50)"));
        assert!(widens("varchar(20)", "longtext"));
        assert!(widens("decimal(10,2)", "decimal(12,2)"));
        assert!(!widens("decimal(10,2)", "decimal(12,3)"));
    }
}
