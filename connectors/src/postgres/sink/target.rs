//! The target tables: Postgres types for sluice's columns, creating a table the first time its
//! events arrive, and following the source's schema changes. Added columns are added
//! (nullable: existing rows have no value), dropped columns are dropped, types that only widen
//! are altered, and anything else stops the sink with what changed and what to do.

use sluice_core::event::{Column, DataType, TableSchema};
use tokio_postgres::GenericClient;

use super::SinkError;
use crate::replica;

/// Quotes an identifier.
pub(super) fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `"schema"."table"`.
pub(super) fn qualified(schema: &str, table: &str) -> String {
    format!("{}.{}", ident(schema), ident(table))
}

/// The Postgres type for a column: the source's own spelling when it came from Postgres and is
/// a built-in type, else the mapping of its sluice type (docs/types.md).
pub(super) fn pg_type(column: &Column) -> String {
    type_for(&column.data_type, column.type_name.trim())
}

fn type_for(data_type: &DataType, source: &str) -> String {
    let keep = |ok: bool| ok.then(|| source.to_owned());
    let paren = |prefix: &str| {
        source
            .strip_prefix(prefix)
            .filter(|rest| rest.starts_with('(') && rest.ends_with(')'))
            .map(str::to_owned)
    };
    let mapped = match data_type {
        DataType::Bool => "boolean".to_owned(),
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => "smallint".to_owned(),
        DataType::Int32 | DataType::UInt16 => "integer".to_owned(),
        DataType::Int64 | DataType::UInt32 => "bigint".to_owned(),
        DataType::UInt64 => "numeric(20,0)".to_owned(),
        DataType::Float32 => "real".to_owned(),
        DataType::Float64 => "double precision".to_owned(),
        DataType::Decimal {
            precision: Some(p),
            scale,
        } => format!("numeric({p},{})", scale.unwrap_or(0)),
        DataType::Decimal { .. } => "numeric".to_owned(),
        DataType::Text => {
            const BUILTIN: [&str; 10] = [
                "text", "name", "inet", "cidr", "macaddr", "macaddr8", "xml", "money", "\"char\"",
                "citext",
            ];
            keep(BUILTIN.contains(&source))
                .or_else(|| {
                    keep(
                        source.starts_with("character varying(")
                            || source.starts_with("character("),
                    )
                })
                .or_else(|| keep(source.starts_with("bit(") || source.starts_with("bit varying")))
                .or_else(|| paren("varchar").map(|n| format!("character varying{n}")))
                .or_else(|| paren("char").map(|n| format!("character{n}")))
                .unwrap_or_else(|| "text".to_owned())
        }
        DataType::Enum | DataType::Set | DataType::TimeTz if !source.contains("with time zone") => {
            if matches!(data_type, DataType::TimeTz) {
                "time with time zone".to_owned()
            } else {
                "text".to_owned()
            }
        }
        DataType::TimeTz => source.to_owned(),
        DataType::Enum | DataType::Set => "text".to_owned(),
        DataType::Bytes => "bytea".to_owned(),
        DataType::Uuid => "uuid".to_owned(),
        DataType::Json => keep(source == "json").unwrap_or_else(|| "jsonb".to_owned()),
        DataType::Date => "date".to_owned(),
        DataType::Time => keep(source.starts_with("time") && source.ends_with("without time zone"))
            .or_else(|| paren("time").map(|p| format!("time{p} without time zone")))
            .unwrap_or_else(|| "time without time zone".to_owned()),
        DataType::Timestamp => {
            keep(source.starts_with("timestamp") && source.ends_with("without time zone"))
                .or_else(|| paren("datetime").map(|p| format!("timestamp{p} without time zone")))
                .unwrap_or_else(|| "timestamp without time zone".to_owned())
        }
        DataType::TimestampTz => keep(
            source.starts_with("timestamp")
                && source.ends_with("with time zone")
                && !source.contains("without"),
        )
        .or_else(|| paren("timestamp").map(|p| format!("timestamp{p} with time zone")))
        .unwrap_or_else(|| "timestamp with time zone".to_owned()),
        DataType::Interval => {
            keep(source.starts_with("interval")).unwrap_or_else(|| "interval".to_owned())
        }
        DataType::Array(element) => {
            format!(
                "{}[]",
                type_for(element, source.strip_suffix("[]").unwrap_or(""))
            )
        }
    };
    mapped
}

/// The parenthesised numbers of a type (`numeric(10,2)` → [10, 2]).
fn modifiers(pg: &str) -> Vec<u32> {
    pg.split_once('(')
        .and_then(|(_, rest)| rest.split_once(')'))
        .map(|(inside, _)| {
            inside
                .split(',')
                .filter_map(|n| n.trim().parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn base(pg: &str) -> String {
    let mut base = String::new();
    let mut depth = 0;
    for c in pg.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            _ if depth == 0 => base.push(c),
            _ => {}
        }
    }
    base.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Whether a column of type `from` may be altered to `to` without losing values.
pub(super) fn widens(from: &str, to: &str) -> bool {
    if from == to {
        return true;
    }
    let (fb, tb) = (base(from), base(to));
    let (fm, tm) = (modifiers(from), modifiers(to));
    let ints = ["smallint", "integer", "bigint"];
    let rank = |t: &str| ints.iter().position(|i| *i == t);
    match (fb.as_str(), tb.as_str()) {
        (f, t) if rank(f).is_some() && rank(t).is_some() => rank(f) <= rank(t),
        (f, "numeric") if rank(f).is_some() => tm.is_empty() || tm[0] >= 20,
        ("real", "double precision") => true,
        ("numeric", "numeric") => {
            tm.is_empty() || (fm.len() == 2 && tm.len() == 2 && fm[1] == tm[1] && tm[0] >= fm[0])
        }
        ("character varying", "character varying") => {
            tm.is_empty() || (!fm.is_empty() && tm[0] >= fm[0])
        }
        ("character varying" | "character", "text") => true,
        (f, t) if f == t => tm.is_empty() || (!fm.is_empty() && tm[0] >= fm[0]),
        _ => false,
    }
}

/// A target table as it is.
#[derive(Debug, Clone)]
pub(super) struct Existing {
    /// (name, format_type, not null)
    pub columns: Vec<(String, String, bool)>,
    pub key: Vec<String>,
}

pub(super) async fn describe(
    client: &impl GenericClient,
    schema: &str,
    table: &str,
) -> Result<Option<Existing>, SinkError> {
    let rows = client
        .query(
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), a.attnotnull, \
                    COALESCE(a.attnum = ANY(i.indkey), false) \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
             LEFT JOIN pg_index i ON i.indrelid = c.oid AND i.indisprimary \
             WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p') \
             ORDER BY a.attnum",
            &[&schema, &table],
        )
        .await
        .map_err(SinkError::from_pg)?;
    if rows.is_empty() {
        return Ok(None);
    }
    let mut existing = Existing {
        columns: Vec::new(),
        key: Vec::new(),
    };
    for row in rows {
        let name: String = row.get(0);
        if row.get::<_, bool>(3) {
            existing.key.push(name.clone());
        }
        existing.columns.push((name, row.get(1), row.get(2)));
    }
    Ok(Some(existing))
}

/// The statements that make the target match `table` (none when it already does); a change
/// sluice must not make is an error saying what and how to fix it.
pub(super) fn reconcile(
    schema: &str,
    table: &TableSchema,
    existing: Option<&Existing>,
) -> Result<Vec<String>, SinkError> {
    let target = qualified(schema, &table.table.name);
    let Some(existing) = existing else {
        let mut columns: Vec<String> = table
            .columns
            .iter()
            .map(|c| {
                let not_null = if c.key || !c.nullable {
                    " NOT NULL"
                } else {
                    ""
                };
                format!("{} {}{not_null}", ident(&c.name), pg_type(c))
            })
            .collect();
        if table.has_key() {
            let key: Vec<String> = table.key_columns().map(|(_, c)| ident(&c.name)).collect();
            columns.push(format!("PRIMARY KEY ({})", key.join(", ")));
        }
        return Ok(vec![
            format!("CREATE SCHEMA IF NOT EXISTS {}", ident(schema)),
            format!(
                "CREATE TABLE IF NOT EXISTS {target} ({})",
                columns.join(", ")
            ),
        ]);
    };
    replica::check_key(table, &existing.key, &target)
        .map_err(|e| SinkError::Schema(e.to_string()))?;
    let mut statements = Vec::new();
    for column in &table.columns {
        let wanted = pg_type(column);
        match existing.columns.iter().find(|(n, _, _)| *n == column.name) {
            None => statements.push(format!(
                "ALTER TABLE {target} ADD COLUMN {} {wanted}",
                ident(&column.name)
            )),
            Some((_, have, not_null)) => {
                if *have != wanted {
                    if !widens(have, &wanted) {
                        return Err(SinkError::Schema(format!(
                            "column {} of {} changed type: the target has {have}, the source now \
                             sends {wanted} ({}); sluice applies only widening changes. Alter \
                             the target column yourself (ALTER TABLE {target} ALTER COLUMN {} \
                             TYPE {wanted} USING …) and restart",
                            column.name,
                            table.table,
                            column.type_name,
                            ident(&column.name)
                        )));
                    }
                    if !widens(&wanted, have) {
                        statements.push(format!(
                            "ALTER TABLE {target} ALTER COLUMN {} TYPE {wanted}",
                            ident(&column.name)
                        ));
                    }
                }
                if *not_null && column.nullable && !column.key {
                    statements.push(format!(
                        "ALTER TABLE {target} ALTER COLUMN {} DROP NOT NULL",
                        ident(&column.name)
                    ));
                }
            }
        }
    }
    for (name, _, _) in &existing.columns {
        if !table.columns.iter().any(|c| c.name == *name) {
            statements.push(format!("ALTER TABLE {target} DROP COLUMN {}", ident(name)));
        }
    }
    Ok(statements)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(data_type: DataType, type_name: &str) -> Column {
        Column {
            name: "c".into(),
            type_name: type_name.into(),
            data_type,
            key: false,
            nullable: true,
        }
    }

    #[test]
    fn postgres_types_keep_their_spelling_and_others_map() {
        let dec = DataType::Decimal {
            precision: Some(10),
            scale: Some(2),
        };
        assert_eq!(pg_type(&col(dec.clone(), "numeric(10,2)")), "numeric(10,2)");
        assert_eq!(pg_type(&col(dec, "decimal(10,2)")), "numeric(10,2)");
        assert_eq!(
            pg_type(&col(DataType::Text, "character varying(20)")),
            "character varying(20)"
        );
        assert_eq!(
            pg_type(&col(DataType::Text, "varchar(20)")),
            "character varying(20)"
        );
        assert_eq!(pg_type(&col(DataType::Text, "inet")), "inet");
        assert_eq!(pg_type(&col(DataType::Text, "mediumtext")), "text");
        assert_eq!(pg_type(&col(DataType::Enum, "mood")), "text");
        assert_eq!(
            pg_type(&col(DataType::UInt64, "bigint unsigned")),
            "numeric(20,0)"
        );
        assert_eq!(
            pg_type(&col(DataType::Timestamp, "datetime(6)")),
            "timestamp(6) without time zone"
        );
        assert_eq!(
            pg_type(&col(DataType::TimestampTz, "timestamp with time zone")),
            "timestamp with time zone"
        );
        assert_eq!(
            pg_type(&col(
                DataType::Array(Box::new(DataType::Int32)),
                "integer[]"
            )),
            "integer[]"
        );
        assert_eq!(pg_type(&col(DataType::Json, "json")), "json");
        assert_eq!(pg_type(&col(DataType::Json, "json ")), "json");
    }

    #[test]
    fn only_widening_type_changes_are_applied() {
        assert!(widens("integer", "bigint"));
        assert!(!widens("bigint", "integer"));
        assert!(widens("numeric(10,2)", "numeric(12,2)"));
        assert!(!widens("numeric(10,2)", "numeric(10,3)"));
        assert!(widens("character varying(20)", "character varying(50)"));
        assert!(widens("character varying(20)", "text"));
        assert!(!widens("text", "integer"));
        assert!(widens("real", "double precision"));
        assert!(widens(
            "timestamp(3) without time zone",
            "timestamp(6) without time zone"
        ));
    }
}
