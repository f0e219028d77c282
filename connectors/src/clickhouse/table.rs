//! The sink's tables in ClickHouse: made from the source table's schema, checked when they
//! exist (engine, key, column types), widened by `ALTER` when a new version of the source table
//! needs it, and the offsets table the sink resumes from.
//!
//! A current-state table is a `ReplacingMergeTree` ordered by the source's key, with
//! `_sluice_version` (the change's log offset + 1: per key, the source's commit order) as its
//! version and `_sluice_deleted` (1 for a delete) as its delete flag, which ClickHouse 23.2 and
//! newer take as the engine's `is_deleted` parameter (`FINAL` then leaves deleted rows out;
//! older servers need `WHERE _sluice_deleted = 0`). A changelog table holds every change, ordered
//! by where it is in the log (`_sluice_topic`, `_sluice_partition`, `_sluice_offset`), also a
//! `ReplacingMergeTree`, so that a replayed change collapses with its first copy.

use std::collections::BTreeMap;

use sluice_core::event::TableSchema;
use sluice_core::sink::Offsets;

use super::client::{literal, quote, Client};
use super::types::{column_type, ChType, Features};
use super::ClickHouseError;

pub(super) const VERSION: &str = "_sluice_version";
pub(super) const DELETED: &str = "_sluice_deleted";

/// What a row of a table is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Kind {
    Current,
    Changelog,
}

/// A table's columns as the server has them.
#[derive(Debug, Clone)]
pub(super) struct Existing {
    pub(super) engine: String,
    /// `ORDER BY`'s columns.
    pub(super) sorting_key: Vec<String>,
    pub(super) columns: Vec<(String, ChType)>,
}

/// How the rows of one source table version are written to one ClickHouse table.
#[derive(Debug)]
pub(super) struct Layout {
    pub(super) kind: Kind,
    /// `` `db`.`table` ``.
    pub(super) table: String,
    /// `db.table`, for messages.
    pub(super) shown: String,
    /// `INSERT INTO … (columns) FORMAT RowBinary`.
    pub(super) insert: String,
    /// Per source column: its type in the table.
    pub(super) columns: Vec<ChType>,
    /// Names of the source columns, in source order.
    pub(super) names: Vec<String>,
    /// Indexes of the key columns in the source row.
    pub(super) key: Vec<usize>,
    /// `_sluice_commit_ts`'s type (changelog tables).
    pub(super) commit_ts: ChType,
}

/// Changelog columns after the row's, with their types.
fn changelog_meta(features: Features) -> [(&'static str, ChType); 6] {
    [
        ("_sluice_op", ChType::String),
        ("_sluice_topic", ChType::String),
        ("_sluice_partition", ChType::UInt(32)),
        ("_sluice_offset", ChType::UInt(64)),
        ("_sluice_commit_ts", commit_ts_type(features)),
        ("_sluice_position", ChType::String),
    ]
}

fn commit_ts_type(features: Features) -> ChType {
    if features.datetime64 {
        ChType::DateTime64 {
            precision: 6,
            zone: Some("UTC".into()),
        }
    } else {
        ChType::DateTime {
            zone: Some("UTC".into()),
        }
    }
}

fn current_meta() -> [(&'static str, ChType); 2] {
    [(VERSION, ChType::UInt(64)), (DELETED, ChType::UInt(8))]
}

/// The table `name` of `database` as the server has it, or None.
pub(super) async fn describe(
    client: &Client,
    database: &str,
    name: &str,
) -> Result<Option<Existing>, ClickHouseError> {
    let what = format!("reading the definition of {database}.{name}");
    let tables = json_rows(
        client,
        &format!(
            "SELECT engine, sorting_key FROM system.tables WHERE database = {} AND name = {}",
            literal(database),
            literal(name)
        ),
        &what,
    )
    .await?;
    let Some(table) = tables.first() else {
        return Ok(None);
    };
    let columns = json_rows(
        client,
        &format!("DESCRIBE TABLE {}.{}", quote(database), quote(name)),
        &what,
    )
    .await?;
    let out = columns
        .iter()
        .map(|column| {
            (
                column["name"].as_str().unwrap_or_default().to_owned(),
                ChType::parse(column["type"].as_str().unwrap_or_default()),
            )
        })
        .collect();
    Ok(Some(Existing {
        engine: table["engine"].as_str().unwrap_or_default().to_owned(),
        sorting_key: sorting_key(table["sorting_key"].as_str().unwrap_or_default())
            .split(',')
            .map(|c| c.trim().trim_matches('`').to_owned())
            .filter(|c| !c.is_empty())
            .collect(),
        columns: out,
    }))
}

/// What a source table version needs of its ClickHouse table: the statements that make or
/// widen it (none when it is as needed) and how rows are written to it then.
pub(super) fn plan(
    schema: &TableSchema,
    kind: Kind,
    database: &str,
    name: &str,
    existing: Option<&Existing>,
    features: Features,
) -> Result<(Vec<String>, Layout), ClickHouseError> {
    let full = format!("{}.{}", quote(database), quote(name));
    let shown = format!("{database}.{name}");
    let wanted: Vec<(String, ChType)> = schema
        .columns
        .iter()
        .map(|c| {
            let ty = column_type(c, features);
            let ty = match kind {
                // A changelog row of a delete may hold only the key.
                Kind::Changelog if !c.key => ty.or_null(),
                _ => ty,
            };
            (c.name.clone(), ty)
        })
        .collect();
    let meta: Vec<(&str, ChType)> = match kind {
        Kind::Current => current_meta().into(),
        Kind::Changelog => changelog_meta(features).into(),
    };
    let key: Vec<usize> = schema.key_columns().map(|(i, _)| i).collect();
    let key_names: Vec<String> = key
        .iter()
        .map(|&i| schema.columns[i].name.clone())
        .collect();
    let mut statements = Vec::new();
    let columns: Vec<ChType> = match existing {
        None => {
            let mut defs: Vec<String> = wanted
                .iter()
                .map(|(name, ty)| format!("{} {ty}", quote(name)))
                .collect();
            defs.extend(
                meta.iter()
                    .map(|(name, ty)| format!("{} {ty}", quote(name))),
            );
            let engine = match kind {
                Kind::Current if features.is_deleted => {
                    format!("ReplacingMergeTree({}, {})", quote(VERSION), quote(DELETED))
                }
                Kind::Current => format!("ReplacingMergeTree({})", quote(VERSION)),
                Kind::Changelog => "ReplacingMergeTree".to_owned(),
            };
            let order: Vec<String> = match kind {
                Kind::Current => key_names.iter().map(|n| quote(n)).collect(),
                Kind::Changelog => ["_sluice_topic", "_sluice_partition", "_sluice_offset"]
                    .iter()
                    .map(|n| quote(n))
                    .collect(),
            };
            // One column without parentheses: a current server keeps `(id)` as written.
            let order = match &order[..] {
                [one] => one.clone(),
                _ => format!("({})", order.join(", ")),
            };
            statements.push(format!(
                "CREATE TABLE IF NOT EXISTS {full} ({}) ENGINE = {engine} ORDER BY {order}",
                defs.join(", ")
            ));
            wanted.iter().map(|(_, ty)| ty.clone()).collect()
        }
        Some(existing) => {
            if !existing.engine.contains("ReplacingMergeTree") {
                return Err(ClickHouseError::Table(format!(
                    "{shown} exists with engine {}; sluice writes versions of rows, which only a \
                     ReplacingMergeTree collapses: drop the table to have sluice create it, or \
                     point the sink's table template elsewhere",
                    existing.engine
                )));
            }
            if kind == Kind::Current && existing.sorting_key != key_names {
                return Err(ClickHouseError::Table(format!(
                    "{shown} is ordered by ({}) but the key of {} is ({}): a ReplacingMergeTree \
                     collapses rows by its ORDER BY, which must be the source's key; drop the \
                     table to have it recreated",
                    existing.sorting_key.join(", "),
                    schema.table,
                    key_names.join(", ")
                )));
            }
            for (name, ty) in &meta {
                match existing.columns.iter().find(|(n, _)| n == name) {
                    Some((_, have)) if have.holds(ty) => {}
                    _ => {
                        return Err(ClickHouseError::Table(format!(
                            "{shown} has no column {name} {ty}: it was not made by sluice's \
                             ClickHouse sink for this mode; drop it or point the table template \
                             elsewhere"
                        )))
                    }
                }
            }
            let mut types = Vec::with_capacity(wanted.len());
            for (name, want) in &wanted {
                let ty = match existing.columns.iter().find(|(n, _)| n == name) {
                    None => {
                        statements.push(format!(
                            "ALTER TABLE {full} ADD COLUMN {} {want}",
                            quote(name)
                        ));
                        want.clone()
                    }
                    Some((_, have)) if have.holds(want) => have.clone(),
                    Some((_, have))
                        if !key_names.contains(name) && widening(have, want).is_some() =>
                    {
                        let wider = widening(have, want).expect("checked");
                        statements.push(format!(
                            "ALTER TABLE {full} MODIFY COLUMN {} {wider}",
                            quote(name)
                        ));
                        wider
                    }
                    Some((_, have)) if have.accepts(want) => {
                        tracing::warn!(table = %shown, column = %name, have = %have, source = %want, "the column takes only some of the source's values; rows that do not fit are rejected");
                        have.clone()
                    }
                    Some((_, have)) => {
                        return Err(ClickHouseError::Table(format!(
                            "column {name} of {shown} is {have}, and {} now sends values of \
                             {want}, which it cannot hold; sluice only widens columns: ALTER it \
                             yourself to a type that holds both, or drop the table to have it \
                             recreated, and restart",
                            schema.table
                        )))
                    }
                };
                types.push(ty);
            }
            types
        }
    };
    let mut insert_columns: Vec<String> = wanted.iter().map(|(n, _)| quote(n)).collect();
    insert_columns.extend(meta.iter().map(|(n, _)| quote(n)));
    let layout = Layout {
        kind,
        insert: format!(
            "INSERT INTO {full} ({}) FORMAT RowBinary",
            insert_columns.join(", ")
        ),
        table: full,
        shown,
        columns,
        names: wanted.into_iter().map(|(n, _)| n).collect(),
        key,
        commit_ts: commit_ts_type(features),
    };
    Ok((statements, layout))
}

/// The type a column of type `have` becomes to hold values of `want` too: `want` when it holds
/// `have`, or `have` made Nullable when only NULLs were missing.
fn widening(have: &ChType, want: &ChType) -> Option<ChType> {
    if want.holds(have) {
        return Some(want.clone());
    }
    let nullable = ChType::Nullable(Box::new(have.clone()));
    (want.is_nullable() && !have.is_nullable() && nullable.holds(want)).then_some(nullable)
}

/// Creates the offsets table if it is missing.
pub(super) async fn create_offsets_table(
    client: &Client,
    database: &str,
    table: &str,
) -> Result<(), ClickHouseError> {
    client
        .query(
            &format!("CREATE DATABASE IF NOT EXISTS {}", quote(database)),
            &format!("creating database {database}"),
        )
        .await?;
    client
        .query(
            &format!(
                "CREATE TABLE IF NOT EXISTS {}.{} (sink String, topic String, partition UInt32, \
                 next_offset UInt64, updated_us UInt64) ENGINE = ReplacingMergeTree(updated_us) \
                 ORDER BY (sink, topic, partition)",
                quote(database),
                quote(table)
            ),
            &format!("creating the offsets table {database}.{table}"),
        )
        .await
        .map(drop)
}

/// The offsets stored for `sink`.
pub(super) async fn read_offsets(
    client: &Client,
    database: &str,
    table: &str,
    sink: &str,
) -> Result<Offsets, ClickHouseError> {
    let what = format!("reading the sink's offsets from {database}.{table}");
    let sql = format!(
        "SELECT topic, partition, next_offset FROM {}.{} FINAL WHERE sink = {}",
        quote(database),
        quote(table),
        literal(sink)
    );
    let mut offsets = BTreeMap::new();
    for row in json_rows(client, &sql, &what).await? {
        match (
            row["topic"].as_str(),
            number(&row["partition"]),
            number(&row["next_offset"]),
        ) {
            (Some(topic), Some(partition), Some(next)) => {
                offsets.insert((topic.to_owned(), partition as u32), next);
            }
            _ => {
                return Err(ClickHouseError::Unexpected(format!(
                    "{what}: a row the sink did not write: {row}"
                )))
            }
        }
    }
    Ok(offsets)
}

/// Per topic, when the sink last stored offsets of it (microseconds since 1970).
pub(super) async fn stored_at(
    client: &Client,
    database: &str,
    table: &str,
    sink: &str,
) -> Result<Vec<(String, u64)>, ClickHouseError> {
    let what = format!("reading when the sink last stored offsets in {database}.{table}");
    let sql = format!(
        "SELECT topic, max(updated_us) AS at FROM {}.{} FINAL WHERE sink = {} \
         GROUP BY topic ORDER BY topic",
        quote(database),
        quote(table),
        literal(sink)
    );
    Ok(json_rows(client, &sql, &what)
        .await?
        .iter()
        .filter_map(|row| Some((row["topic"].as_str()?.to_owned(), number(&row["at"])?)))
        .collect())
}

/// The rows `sql` selects, as JSON objects (`FORMAT JSONEachRow`).
async fn json_rows(
    client: &Client,
    sql: &str,
    what: &str,
) -> Result<Vec<serde_json::Value>, ClickHouseError> {
    let answer = client
        .query(&format!("{sql} FORMAT JSONEachRow"), what)
        .await?;
    lines(&answer).map(|line| json_line(line, what)).collect()
}

/// A number of JSONEachRow (64-bit integers come quoted from older servers).
fn number(value: &serde_json::Value) -> Option<u64> {
    value
        .as_u64()
        .or_else(|| value.as_str().and_then(|s| s.parse().ok()))
}

/// The offsets as rows of the offsets table (RowBinary), versioned `updated_us`.
pub(super) fn offset_rows(sink: &str, offsets: &Offsets, updated_us: u64) -> Vec<u8> {
    use super::rowbinary::write_bytes;
    let mut out = Vec::new();
    for ((topic, partition), next) in offsets {
        write_bytes(&mut out, sink.as_bytes());
        write_bytes(&mut out, topic.as_bytes());
        out.extend_from_slice(&partition.to_le_bytes());
        out.extend_from_slice(&next.to_le_bytes());
        out.extend_from_slice(&updated_us.to_le_bytes());
    }
    out
}

pub(super) fn offsets_insert(database: &str, table: &str) -> String {
    format!(
        "INSERT INTO {}.{} (sink, topic, partition, next_offset, updated_us) FORMAT RowBinary",
        quote(database),
        quote(table)
    )
}

/// A sorting key without the parentheses current servers keep around a one-column tuple
/// (`(id)`).
fn sorting_key(text: &str) -> &str {
    let text = text.trim();
    match text.strip_prefix('(').and_then(|t| t.strip_suffix(')')) {
        Some(inner) if !inner.contains('(') => inner,
        _ => text,
    }
}

fn lines(answer: &[u8]) -> impl Iterator<Item = &str> {
    std::str::from_utf8(answer)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
}

fn json_line(line: &str, what: &str) -> Result<serde_json::Value, ClickHouseError> {
    serde_json::from_str(line)
        .map_err(|e| ClickHouseError::Unexpected(format!("{what}: {e} in the answer {line}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_core::event::{Column, DataType, TableId};

    fn schema(extra: Option<DataType>) -> TableSchema {
        let column = |name: &str, data_type, key| Column {
            name: name.into(),
            type_name: String::new(),
            data_type,
            key,
            nullable: !key,
        };
        let mut columns = vec![
            column("id", DataType::Int32, true),
            column("v", DataType::Int32, false),
        ];
        if let Some(ty) = extra {
            columns.push(column("w", ty, false));
        }
        TableSchema {
            table: TableId {
                namespace: "public".into(),
                name: "t".into(),
            },
            columns,
            version: 1,
        }
    }

    #[test]
    fn new_tables_are_replacing_merge_trees_on_the_key() {
        let old = Features::of_version("18.16.1");
        let (ddl, layout) = plan(&schema(None), Kind::Current, "db", "t", None, old).unwrap();
        assert_eq!(
            ddl,
            [
                "CREATE TABLE IF NOT EXISTS `db`.`t` (`id` Int32, `v` Nullable(Int32), \
              `_sluice_version` UInt64, `_sluice_deleted` UInt8) ENGINE = \
              ReplacingMergeTree(`_sluice_version`) ORDER BY `id`"
            ]
        );
        assert_eq!(layout.key, [0]);
        let new = Features::of_version("26.9");
        let (ddl, _) = plan(&schema(None), Kind::Current, "db", "t", None, new).unwrap();
        assert!(
            ddl[0].contains("ReplacingMergeTree(`_sluice_version`, `_sluice_deleted`)"),
            "{ddl:?}"
        );
        let (ddl, _) = plan(&schema(None), Kind::Changelog, "db", "t_changes", None, old).unwrap();
        assert!(
            ddl[0].contains("`_sluice_commit_ts` DateTime('UTC')"),
            "{ddl:?}"
        );
        assert!(
            ddl[0].ends_with("ORDER BY (`_sluice_topic`, `_sluice_partition`, `_sluice_offset`)"),
            "{ddl:?}"
        );
    }

    #[test]
    fn existing_tables_are_widened_or_refused_with_the_fix() {
        let features = Features::of_version("18.16.1");
        let existing = Existing {
            engine: "ReplacingMergeTree".into(),
            sorting_key: vec!["id".into()],
            columns: vec![
                ("id".into(), ChType::Int(64)),
                ("v".into(), ChType::parse("Nullable(Int16)")),
                (VERSION.into(), ChType::UInt(64)),
                (DELETED.into(), ChType::UInt(8)),
            ],
        };
        let (ddl, layout) = plan(
            &schema(Some(DataType::Text)),
            Kind::Current,
            "db",
            "t",
            Some(&existing),
            features,
        )
        .unwrap();
        assert_eq!(
            ddl,
            [
                "ALTER TABLE `db`.`t` MODIFY COLUMN `v` Nullable(Int32)",
                "ALTER TABLE `db`.`t` ADD COLUMN `w` Nullable(String)"
            ]
        );
        // The wider key column stays as it is, and rows are written in its type.
        assert_eq!(layout.columns[0], ChType::Int(64));
        let mut narrow = existing.clone();
        narrow.columns[1].1 = ChType::String;
        let (ddl, _) = plan(
            &schema(None),
            Kind::Current,
            "db",
            "t",
            Some(&narrow),
            features,
        )
        .unwrap();
        assert_eq!(
            ddl,
            ["ALTER TABLE `db`.`t` MODIFY COLUMN `v` Nullable(String)"],
            "text holds numbers, once it takes NULLs"
        );
        narrow.columns[1].1 = ChType::Date;
        let err = plan(
            &schema(None),
            Kind::Current,
            "db",
            "t",
            Some(&narrow),
            features,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("column v of db.t is Date"), "{err}");
        let mut other_key = existing.clone();
        other_key.sorting_key = vec!["v".into()];
        let err = plan(
            &schema(None),
            Kind::Current,
            "db",
            "t",
            Some(&other_key),
            features,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("ordered by (v) but the key of public.t is (id)"),
            "{err}"
        );
        let mut merge_tree = existing;
        merge_tree.engine = "MergeTree".into();
        let err = plan(
            &schema(None),
            Kind::Current,
            "db",
            "t",
            Some(&merge_tree),
            features,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("only a ReplacingMergeTree"), "{err}");
        assert_eq!(sorting_key("(id)"), "id");
        assert_eq!(sorting_key("a, b"), "a, b");
        assert_eq!(sorting_key("(toDate(at))"), "(toDate(at))");
    }
}
