//! What the CLI asks of a source's server without running it: the slot as `sluice status`
//! shows it, `sluice check --connect`, and `sluice snapshot` requests.

use super::protocol::{self, WireConnection};
use super::{catalog, connect_catalog, setup, PostgresError, PostgresSourceConfig};
use super::{ErrorText, SnapshotSignal, SIGNAL_PREFIX};

/// The replication slot as the server sees it, for `sluice status`: whether a connection
/// streams from it, what it has confirmed, and how much WAL it holds back.
pub async fn slot_status(config: &PostgresSourceConfig) -> Result<String, PostgresError> {
    let (client, connection) = connect_catalog(config).await?;
    let row = client
        .query_opt(
            "SELECT active, confirmed_flush_lsn::text, \
                    pg_size_pretty(pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)), \
                    pg_size_pretty(pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)), \
                    to_jsonb(s) ->> 'wal_status', \
                    pg_size_pretty((to_jsonb(s) ->> 'safe_wal_size')::int8) \
             FROM pg_replication_slots s WHERE slot_name = $1",
            &[&config.slot_name()],
        )
        .await?;
    let resolution = catalog::resolve_tables(&client, &config.tables, &config.exclude).await?;
    connection.abort();
    let left_out = if resolution.left_out.is_empty() {
        String::new()
    } else {
        let names: Vec<String> = resolution
            .left_out
            .iter()
            .map(ToString::to_string)
            .collect();
        format!(
            "; left out (no primary key; ALTER TABLE … REPLICA IDENTITY FULL to capture): {}",
            names.join(", ")
        )
    };
    Ok(match row {
        None => format!("slot {} does not exist (yet){left_out}", config.slot_name()),
        Some(row) => {
            let (active, confirmed, retained, behind): (
                bool,
                Option<String>,
                Option<String>,
                Option<String>,
            ) = (row.get(0), row.get(1), row.get(2), row.get(3));
            let (wal_status, safe): (Option<String>, Option<String>) = (row.get(4), row.get(5));
            let limit = match (wal_status.as_deref(), safe) {
                (Some("lost"), _) => "; INVALIDATED by the server (max_slot_wal_keep_size): a new snapshot is needed (snapshot = \"when_needed\")".to_owned(),
                (_, Some(safe)) => format!(", {safe} more before the server invalidates it (max_slot_wal_keep_size)"),
                _ => String::new(),
            };
            format!(
                "slot {} {}, confirmed_flush_lsn {}, {} behind the server, holding {} of WAL",
                config.slot_name(),
                if active {
                    "streaming"
                } else {
                    "idle (no connection)"
                },
                confirmed.unwrap_or_else(|| "-".into()),
                behind.unwrap_or_else(|| "-".into()),
                retained.unwrap_or_else(|| "-".into()),
            ) + &limit
                + &left_out
        }
    })
}

/// Connects and checks what `start` would check, without creating anything: server settings,
/// privileges, the tables the patterns match and their replica identity. Returns a summary.
pub async fn probe(config: &PostgresSourceConfig) -> Result<String, PostgresError> {
    let (client, connection) = connect_catalog(config).await?;
    let (server, mut problems) = setup::server_problems(&client).await?;
    let resolution = catalog::resolve_tables(&client, &config.tables, &config.exclude).await?;
    match setup::check_tables(&resolution, &config.tables) {
        Err(PostgresError::Setup { problem, fix }) => problems.push((problem, fix)),
        other => other?,
    }
    problems.extend(setup::privilege_problems(&client, config, &resolution, &server).await?);
    // The stream's own connection (replication mode), as `run` opens it.
    let params = config
        .connect_params()
        .map_err(|problem| PostgresError::Setup {
            problem: problem.0,
            fix: "correct url in the source config".into(),
        })?;
    if problems.is_empty() {
        match WireConnection::connect(&params).await {
            Ok(conn) => conn.close().await,
            Err(err) => problems.push((
                format!("a replication connection fails: {err}"),
                "allow it in pg_hba.conf (logical replication connections match the database \
                 name, as ordinary ones do) and check max_wal_senders"
                    .to_owned(),
            )),
        }
    }
    match problems.len() {
        0 => {}
        1 => {
            let (problem, fix) = problems.remove(0);
            return Err(PostgresError::Setup { problem, fix });
        }
        _ => return Err(PostgresError::Problems(problems)),
    }
    let tables = resolution.captured;
    let slot = setup::slot_state(&client, &config.slot_name()).await?;
    drop(client);
    connection.abort();
    let names: Vec<String> = tables.iter().map(|t| t.id.to_string()).collect();
    Ok(format!(
        "server {}{}, wal_level logical, replication allowed, {} table(s): {}; slot {} {}",
        server.version_num,
        if server.standby { " (a standby)" } else { "" },
        tables.len(),
        names.join(", "),
        config.slot_name(),
        if slot.is_some() {
            "exists"
        } else {
            "will be created"
        }
    ))
}

/// Asks a source for an on-demand snapshot of `tables` (or the slice `filter` of them): writes
/// the request into the WAL, where the running source reads it (or reads it when it next
/// runs). Returns what was asked, in words.
pub async fn request_snapshot(
    config: &PostgresSourceConfig,
    tables: &[String],
    filter: Option<&str>,
) -> Result<String, PostgresError> {
    let (client, connection) = connect_catalog(config).await?;
    let standby: bool = client
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await?
        .get(0);
    if standby {
        connection.abort();
        return Err(PostgresError::Setup {
            problem: format!(
                "source {} reads a standby, and an on-demand snapshot writes watermarks into the \
                 WAL, which a standby cannot",
                config.name
            ),
            fix: "run on-demand snapshots from a source that reads the primary".into(),
        });
    }
    let captured = catalog::resolve_tables(&client, &config.tables, &config.exclude)
        .await?
        .captured;
    let mut names = Vec::with_capacity(tables.len());
    for table in tables {
        let name = if table.contains('.') {
            table.clone()
        } else {
            format!("public.{table}")
        };
        if !captured.iter().any(|t| t.id.to_string() == name) {
            connection.abort();
            return Err(PostgresError::Setup {
                problem: format!("source {} does not capture {name}", config.name),
                fix: "name tables its `tables` patterns match (schema.table), or add them to \
                      `tables` (a table added there is read by an on-demand snapshot at the next \
                      start anyway)"
                    .into(),
            });
        }
        names.push(name);
    }
    if let Some(filter) = filter {
        // The condition is checked here, where a mistake can be said to the one who made it.
        for name in &names {
            let (namespace, table) = name.split_once('.').expect("qualified above");
            let sql = format!(
                "SELECT 1 FROM {}.{} WHERE ({filter}) LIMIT 0",
                protocol::quote_ident(namespace),
                protocol::quote_ident(table)
            );
            if let Err(err) = client.execute(sql.as_str(), &[]).await {
                connection.abort();
                return Err(PostgresError::Setup {
                    problem: format!(
                        "the condition {filter:?} cannot select rows of {name}: {}",
                        ErrorText(&err)
                    ),
                    fix: "give a SQL condition on the table's columns, as after WHERE".into(),
                });
            }
        }
    }
    let signal = SnapshotSignal {
        source: config.name.clone(),
        snapshot: names.clone(),
        filter: filter.map(str::to_owned),
    };
    let body = serde_json::to_string(&signal).expect("a signal serializes");
    let lsn: String = client
        .query_one(
            "SELECT pg_logical_emit_message(true, $1::text, $2::text)::text",
            &[&SIGNAL_PREFIX, &body],
        )
        .await?
        .get(0);
    connection.abort();
    Ok(format!(
        "asked source {} for an on-demand snapshot of {}{} (request at {lsn}); `sluice status` \
         shows its progress",
        config.name,
        names.join(", "),
        filter.map(|f| format!(" where {f}")).unwrap_or_default()
    ))
}
