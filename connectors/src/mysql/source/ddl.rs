//! DDL in the binlog: statements that touch captured tables re-read their schemas from the
//! catalog (CREATE, ALTER, DROP, RENAME TABLE), a TRUNCATE of one is a truncate event, and any
//! other statement that names a captured table stops the source, quoting it.

use std::collections::HashMap;
use std::sync::Arc;

use mysql_async::prelude::Queryable;
use mysql_async::Pool;
use sluice_core::event::{ChangeEvent, Op, SnapshotMarker};
use sluice_core::position::Position;

use super::catalog::{self, TableInfo};
use super::config::MysqlSourceConfig;
use super::SourceError;

fn quoted_words(statement: &str) -> Vec<String> {
    statement
        .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '$' || c == '`' || c == '.'))
        .filter(|w| !w.is_empty())
        .flat_map(|w| {
            w.split('.')
                .map(|p| p.trim_matches('`').to_owned())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// A DDL statement: re-reads the schemas of captured tables it touches; a truncate of one is a
/// truncate event. Returns the events it makes.
pub async fn ddl(
    config: &MysqlSourceConfig,
    pool: &Pool,
    tables: &mut HashMap<(String, String), TableInfo>,
    schema: &str,
    statement: &str,
    ts_us: i64,
    position: Position,
) -> Result<Vec<ChangeEvent>, SourceError> {
    let words = quoted_words(statement);
    let upper: Vec<String> = words.iter().map(|w| w.to_ascii_uppercase()).collect();
    let known = [
        "CREATE",
        "ALTER",
        "DROP",
        "RENAME",
        "TRUNCATE",
        "GRANT",
        "REVOKE",
        "FLUSH",
        "ANALYZE",
        "OPTIMIZE",
        "SET",
        "XA",
        "SAVEPOINT",
        "ROLLBACK",
    ];
    let first = upper.first().map(String::as_str).unwrap_or("");
    // Captured tables the statement names (database-qualified or in the current database),
    // and tables it creates that the patterns capture.
    let mut touched: Vec<(String, String)> = tables
        .keys()
        .filter(|(db, table)| {
            words.iter().any(|w| w == table) && (db == schema || words.iter().any(|w| w == db))
        })
        .cloned()
        .collect();
    for (i, word) in words.iter().enumerate() {
        let db = if i > 0
            && words
                .get(i - 1)
                .is_some_and(|w| !w.eq_ignore_ascii_case("TABLE"))
            && statement.contains(&format!("{}.{word}", words[i - 1]))
        {
            words[i - 1].clone()
        } else {
            schema.to_owned()
        };
        if catalog::table_matches(&config.tables, &db, word)
            && !touched.contains(&(db.clone(), word.clone()))
            && (first == "CREATE" || first == "RENAME" || first == "ALTER")
        {
            touched.push((db, word.clone()));
        }
    }
    if touched.is_empty() {
        if !known.contains(&first) {
            tracing::warn!(%statement, "skipping a statement that touches no captured table");
        }
        return Ok(Vec::new());
    }
    if !known.contains(&first) {
        return Err(SourceError::UnknownDdl {
            table: format!("{}.{}", touched[0].0, touched[0].1),
            statement: statement.to_owned(),
        });
    }
    let mut events = Vec::new();
    let mut conn = pool
        .get_conn()
        .await
        .map_err(SourceError::mysql("connecting"))?;
    for (db, table) in touched {
        if first == "TRUNCATE" {
            if let Some(info) = tables.get(&(db.clone(), table.clone())) {
                events.push(ChangeEvent {
                    op: Op::Truncate,
                    table: Some(Arc::clone(&info.schema)),
                    before: None,
                    before_is_key_only: false,
                    after: None,
                    snapshot: SnapshotMarker::No,
                    commit_ts_us: ts_us,
                    position: position.clone(),
                    xid: None,
                    txn: None,
                    message: None,
                });
            }
            continue;
        }
        let exists: Option<u64> = conn
            .exec_first(
                "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
                (db.as_str(), table.as_str()),
            )
            .await
            .map_err(SourceError::mysql("reading the catalog"))?;
        if exists.unwrap_or(0) == 0 {
            tables.remove(&(db, table));
            continue;
        }
        let mut info = catalog::table_info(&mut conn, &db, &table).await?;
        if let Some(previous) = tables.get(&(db.clone(), table.clone())) {
            if previous.schema.columns == info.schema.columns {
                continue;
            }
            let mut schema = (*info.schema).clone();
            schema.version = previous.schema.version + 1;
            info.schema = Arc::new(schema);
        }
        tracing::info!(table = %format!("{db}.{table}"), version = info.schema.version, "table schema changed");
        tables.insert((db, table), info);
    }
    Ok(events)
}
