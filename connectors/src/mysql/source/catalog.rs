//! What the source reads from the server's catalog: flavour and settings (with fixes for
//! what is wrong), the tables that match the configured patterns, and their columns as sluice
//! types plus what decoding their binlog values needs (signedness, enum and set labels,
//! charsets).

use std::sync::Arc;

use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use sluice_core::event::{Column, DataType, TableId, TableSchema};
use sluice_core::topic::glob_match;

use super::history::{ColumnRow, TableDef};
use super::SourceError;

/// MySQL or MariaDB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    Mysql,
    Mariadb,
}

/// The server settings the source needs.
#[derive(Debug, Clone)]
pub(super) struct Server {
    pub flavor: Flavor,
    pub version: String,
    pub gtid_mode: bool,
}

/// How a column's values are decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Kind {
    Int {
        unsigned: bool,
        bits: u8,
    },
    Float,
    Double,
    Decimal,
    /// Text in a charset: `utf8`-family, or `latin1` (converted).
    Text {
        latin1: bool,
    },
    /// `pad`: the length of a BINARY(n), whose trailing zero bytes the binlog leaves out.
    Binary {
        pad: Option<usize>,
    },
    Bit {
        bits: u32,
    },
    Json,
    Enum(Vec<String>),
    Set(Vec<String>),
    Date,
    DateTime,
    Timestamp,
    Time,
    Year,
    /// A type sluice has no mapping for (geometry…).
    Unknown(String),
}

/// A captured table: its schema and how to decode each column.
#[derive(Debug, Clone)]
pub(super) struct TableInfo {
    pub schema: Arc<TableSchema>,
    pub kinds: Vec<Kind>,
    /// The definition it was built from, which DDL statements are applied to.
    pub def: TableDef,
}

impl TableInfo {
    /// The schema and decoding kinds of a table definition.
    pub(super) fn from_def(database: &str, table: &str, version: u32, def: TableDef) -> TableInfo {
        let mut columns = Vec::with_capacity(def.columns.len());
        let mut kinds = Vec::with_capacity(def.columns.len());
        for row in &def.columns {
            let (data_type, kind) =
                map_type(&row.data_type, &row.column_type, row.charset.as_deref());
            columns.push(Column {
                name: row.name.clone(),
                type_name: row.column_type.clone(),
                data_type,
                key: row.key,
                nullable: row.nullable,
            });
            kinds.push(kind);
        }
        TableInfo {
            schema: Arc::new(TableSchema {
                table: TableId {
                    namespace: database.to_owned(),
                    name: table.to_owned(),
                },
                columns,
                version,
            }),
            kinds,
            def,
        }
    }
}

pub(super) fn table_matches(patterns: &[String], database: &str, table: &str) -> bool {
    let name = format!("{database}.{table}");
    patterns.iter().any(|pattern| glob_match(pattern, &name))
}

pub(super) async fn server(conn: &mut Conn) -> Result<Server, SourceError> {
    let version: String = conn
        .query_first("SELECT VERSION()")
        .await
        .map_err(SourceError::mysql("reading the server version"))?
        .unwrap_or_default();
    let flavor = if version.to_ascii_lowercase().contains("mariadb") {
        Flavor::Mariadb
    } else {
        Flavor::Mysql
    };
    let gtid_mode = match flavor {
        // MariaDB always writes GTIDs.
        Flavor::Mariadb => true,
        Flavor::Mysql => {
            let mode: Option<String> = conn
                .query_first("SELECT @@GLOBAL.gtid_mode")
                .await
                .map_err(SourceError::mysql("reading gtid_mode"))?;
            mode.is_some_and(|m| m.eq_ignore_ascii_case("ON"))
        }
    };
    Ok(Server {
        flavor,
        version,
        gtid_mode,
    })
}

/// Settings and privileges, each problem with its fix; empty when all is well.
/// A server setting or privilege that matters to capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Problem {
    pub(super) message: String,
    /// Capture cannot work at all (the source stops); otherwise it is a warning.
    pub(super) fatal: bool,
}

impl Problem {
    fn fatal(message: impl Into<String>) -> Problem {
        Problem {
            message: message.into(),
            fatal: true,
        }
    }

    fn warning(message: impl Into<String>) -> Problem {
        Problem {
            message: message.into(),
            fatal: false,
        }
    }
}

pub(super) async fn problems(
    conn: &mut Conn,
    server: &Server,
) -> Result<Vec<Problem>, SourceError> {
    let mut problems = Vec::new();
    async fn get(conn: &mut Conn, name: &str) -> Result<String, mysql_async::Error> {
        conn.query_first::<Option<String>, _>(format!("SELECT @@GLOBAL.{name}"))
            .await
            .map(|v| v.flatten().unwrap_or_default())
    }
    let log_bin = get(conn, "log_bin")
        .await
        .map_err(SourceError::mysql("reading log_bin"))?;
    if log_bin != "1" && !log_bin.eq_ignore_ascii_case("ON") {
        problems.push(Problem::fatal(
            "the binlog is off: set log_bin in the server's config and restart it",
        ));
    }
    let format = get(conn, "binlog_format")
        .await
        .map_err(SourceError::mysql("reading binlog_format"))?;
    if !format.eq_ignore_ascii_case("ROW") {
        problems.push(Problem::fatal(format!(
            "binlog_format is {format}: run SET GLOBAL binlog_format = 'ROW' (and set it in the config file)"
        )));
    }
    let image = get(conn, "binlog_row_image")
        .await
        .map_err(SourceError::mysql("reading binlog_row_image"))?;
    if !image.eq_ignore_ascii_case("FULL") {
        problems.push(Problem::fatal(format!(
            "binlog_row_image is {image}: run SET GLOBAL binlog_row_image = 'FULL' (old rows must be whole)"
        )));
    }
    let metadata = get(conn, "binlog_row_metadata").await.unwrap_or_default();
    if !metadata.eq_ignore_ascii_case("FULL") {
        problems.push(Problem::warning(format!(
            "binlog_row_metadata is {}: run SET GLOBAL binlog_row_metadata = 'FULL' (column names \
             in every row event, which sluice checks against its schema history)",
            if metadata.is_empty() {
                "unset"
            } else {
                &metadata
            }
        )));
    }
    if server.flavor == Flavor::Mysql && !server.gtid_mode {
        problems.push(Problem::warning(
            "gtid_mode is OFF: positions will be binlog file and offset (set gtid_mode = ON and \
             enforce_gtid_consistency = ON for positions that survive failover)",
        ));
    }
    let grants: Vec<String> = conn
        .query("SHOW GRANTS")
        .await
        .map_err(SourceError::mysql("reading grants"))?;
    let all = grants.join(" ").to_ascii_uppercase();
    let has = |privilege: &str| all.contains("ALL PRIVILEGES ON *.*") || all.contains(privilege);
    for privilege in ["REPLICATION SLAVE", "REPLICATION CLIENT"] {
        // MariaDB 10.5+ calls REPLICATION CLIENT "BINLOG MONITOR".
        let alias = privilege == "REPLICATION CLIENT" && has("BINLOG MONITOR");
        if !has(privilege) && !alias {
            let message = format!("the user lacks {privilege}: GRANT {privilege} ON *.* TO <user>");
            // Without REPLICATION SLAVE the binlog cannot be read at all.
            problems.push(if privilege == "REPLICATION SLAVE" {
                Problem::fatal(message)
            } else {
                Problem::warning(message)
            });
        }
    }
    if !has("SELECT") {
        problems.push(Problem::warning(
            "the user lacks SELECT on the captured tables: GRANT SELECT ON <db>.* TO <user>",
        ));
    }
    Ok(problems)
}

/// Tables matching `patterns`, with their columns, in name order.
pub(super) async fn tables(
    conn: &mut Conn,
    patterns: &[String],
) -> Result<Vec<TableInfo>, SourceError> {
    let names: Vec<(String, String)> = conn
        .query(
            "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES WHERE TABLE_TYPE = 'BASE TABLE' \
             AND TABLE_SCHEMA NOT IN ('mysql', 'information_schema', 'performance_schema', 'sys') \
             ORDER BY TABLE_SCHEMA, TABLE_NAME",
        )
        .await
        .map_err(SourceError::mysql("listing tables"))?;
    let mut tables = Vec::new();
    for (database, table) in names {
        if table_matches(patterns, &database, &table) {
            tables.push(table_info(conn, &database, &table).await?);
        }
    }
    Ok(tables)
}

/// The tables the source captures: those its patterns match, but its signal table (whose rows
/// are requests, not data).
pub(super) async fn captured(
    conn: &mut Conn,
    config: &super::config::MysqlSourceConfig,
) -> Result<Vec<TableInfo>, SourceError> {
    let mut tables = tables(conn, &config.tables).await?;
    let signal = config.signal_table();
    tables.retain(|t| {
        signal.as_ref()
            != Some(&(
                t.schema.table.namespace.clone(),
                t.schema.table.name.clone(),
            ))
    });
    Ok(tables)
}

/// One table's columns as the catalog describes them now.
pub(super) async fn table_info(
    conn: &mut Conn,
    database: &str,
    table: &str,
) -> Result<TableInfo, SourceError> {
    let rows: Vec<(String, String, String, String, String, Option<String>)> = conn
        .exec(
            "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, IS_NULLABLE, COLUMN_KEY, CHARACTER_SET_NAME \
             FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
            (database, table),
        )
        .await
        .map_err(SourceError::mysql("reading columns"))?;
    let collation: Option<String> = conn
        .exec_first(
            "SELECT TABLE_COLLATION FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
            (database, table),
        )
        .await
        .map_err(SourceError::mysql("reading the table's collation"))?;
    let def = TableDef {
        columns: rows
            .into_iter()
            .map(
                |(name, data_type, column_type, nullable, key, charset)| ColumnRow {
                    name,
                    data_type: data_type.to_ascii_lowercase(),
                    column_type,
                    nullable: nullable == "YES",
                    key: key == "PRI",
                    charset,
                },
            )
            .collect(),
        charset: collation.as_deref().and_then(charset_of_collation),
    };
    Ok(TableInfo::from_def(database, table, 1, def))
}

/// Whether a base table exists now.
pub(super) async fn table_exists(
    conn: &mut Conn,
    database: &str,
    table: &str,
) -> Result<bool, SourceError> {
    let count: Option<u64> = conn
        .exec_first(
            "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
            (database, table),
        )
        .await
        .map_err(SourceError::mysql("reading the catalog"))?;
    Ok(count.unwrap_or(0) > 0)
}

/// The charset a collation belongs to: the part before its first `_` (`latin1_swedish_ci`).
fn charset_of_collation(collation: &str) -> Option<String> {
    collation.split('_').next().map(str::to_owned)
}

/// The default charset of a database (for tables created without one).
pub(super) async fn database_charset(
    conn: &mut Conn,
    database: &str,
) -> Result<Option<String>, SourceError> {
    conn.exec_first(
        "SELECT DEFAULT_CHARACTER_SET_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?",
        (database,),
    )
    .await
    .map_err(SourceError::mysql("reading the database's charset"))
}

/// Labels of `enum('a','b')` / `set('x','y')` (quotes doubled inside labels).
pub(super) fn labels(column_type: &str) -> Vec<String> {
    let inside = column_type
        .split_once('(')
        .and_then(|(_, rest)| rest.rsplit_once(')'))
        .map_or("", |(inside, _)| inside);
    let mut labels = Vec::new();
    let mut current = String::new();
    let mut chars = inside.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('\'', false) => quoted = true,
            ('\'', true) if chars.peek() == Some(&'\'') => {
                chars.next();
                current.push('\'');
            }
            ('\'', true) => {
                quoted = false;
                labels.push(std::mem::take(&mut current));
            }
            (c, true) => current.push(c),
            _ => {}
        }
    }
    labels
}

/// sluice's type and the decoding kind of a MySQL column.
pub(super) fn map_type(
    data_type: &str,
    column_type: &str,
    charset: Option<&str>,
) -> (DataType, Kind) {
    let ct = column_type.to_ascii_lowercase();
    let unsigned = ct.contains("unsigned");
    let int = |bits: u8, signed: DataType, unsigned_type: DataType| {
        (
            if unsigned { unsigned_type } else { signed },
            Kind::Int { unsigned, bits },
        )
    };
    let numbers = || {
        ct.split_once('(')
            .and_then(|(_, rest)| rest.split_once(')'))
            .map(|(inside, _)| {
                inside
                    .split(',')
                    .filter_map(|n| n.trim().parse::<u32>().ok())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    };
    match data_type.to_ascii_lowercase().as_str() {
        "tinyint" => int(8, DataType::Int8, DataType::UInt8),
        "smallint" => int(16, DataType::Int16, DataType::UInt16),
        "mediumint" => int(24, DataType::Int32, DataType::UInt32),
        "int" | "integer" => int(32, DataType::Int32, DataType::UInt32),
        "bigint" => int(64, DataType::Int64, DataType::UInt64),
        "decimal" | "numeric" => {
            let n = numbers();
            (
                DataType::Decimal {
                    precision: n.first().copied(),
                    scale: Some(n.get(1).copied().unwrap_or(0)),
                },
                Kind::Decimal,
            )
        }
        "float" => (DataType::Float32, Kind::Float),
        "double" | "real" => (DataType::Float64, Kind::Double),
        "bit" => {
            let bits = numbers().first().copied().unwrap_or(1);
            if bits == 1 {
                (DataType::Bool, Kind::Bit { bits })
            } else {
                (DataType::Bytes, Kind::Bit { bits })
            }
        }
        "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" => {
            let latin1 = charset.is_some_and(|c| c.eq_ignore_ascii_case("latin1"));
            if charset.is_some_and(|c| c.eq_ignore_ascii_case("binary")) {
                (DataType::Bytes, Kind::Binary { pad: None })
            } else {
                (DataType::Text, Kind::Text { latin1 })
            }
        }
        "binary" => (
            DataType::Bytes,
            Kind::Binary {
                pad: numbers().first().map(|n| *n as usize),
            },
        ),
        "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" => {
            (DataType::Bytes, Kind::Binary { pad: None })
        }
        "json" => (DataType::Json, Kind::Json),
        "enum" => (DataType::Enum, Kind::Enum(labels(column_type))),
        "set" => (DataType::Set, Kind::Set(labels(column_type))),
        "date" => (DataType::Date, Kind::Date),
        "datetime" => (DataType::Timestamp, Kind::DateTime),
        "timestamp" => (DataType::TimestampTz, Kind::Timestamp),
        "time" => (DataType::Time, Kind::Time),
        "year" => (DataType::Int16, Kind::Year),
        other => (DataType::Text, Kind::Unknown(other.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enum_and_set_labels_parse_with_quotes() {
        assert_eq!(labels("enum('a','b c','it''s')"), vec!["a", "b c", "it's"]);
        assert_eq!(labels("set('x','y,z')"), vec!["x", "y,z"]);
    }

    #[test]
    fn column_types_map() {
        assert_eq!(
            map_type("bigint", "bigint(20) unsigned", None).0,
            DataType::UInt64
        );
        assert_eq!(
            map_type("decimal", "decimal(65,30)", None).0,
            DataType::Decimal {
                precision: Some(65),
                scale: Some(30)
            }
        );
        assert_eq!(map_type("bit", "bit(1)", None).0, DataType::Bool);
        assert_eq!(
            map_type("varchar", "varchar(5)", Some("binary")).1,
            Kind::Binary { pad: None }
        );
        assert_eq!(
            map_type("binary", "binary(3)", None).1,
            Kind::Binary { pad: Some(3) }
        );
        assert_eq!(
            map_type("varchar", "varchar(5)", Some("latin1")).1,
            Kind::Text { latin1: true }
        );
    }
}
