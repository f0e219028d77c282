//! Preparing the server: settings checks with fixes, the publication, and the replication slot.

use sluice_core::position::Lsn;
use tokio_postgres::Client;

use super::catalog::CapturedTable;
use super::protocol::{quote_ident, WireConnection};
use super::PostgresError;

fn setup_error(problem: impl Into<String>, fix: impl Into<String>) -> PostgresError {
    PostgresError::Setup {
        problem: problem.into(),
        fix: fix.into(),
    }
}

/// Facts about the server the source needs.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    pub version_num: i32,
}

/// Checks wal_level and the REPLICATION privilege; each failure says how to fix it.
pub async fn check_server(client: &Client) -> Result<ServerInfo, PostgresError> {
    let row = client
        .query_one(
            "SELECT current_setting('wal_level'), current_setting('server_version_num')::int, \
                    r.rolreplication OR r.rolsuper, current_user::text, \
                    current_setting('max_replication_slots')::int \
             FROM pg_roles r WHERE r.rolname = current_user",
            &[],
        )
        .await?;
    let (wal_level, version_num, can_replicate, user, max_slots): (String, i32, bool, String, i32) =
        (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
    if wal_level != "logical" {
        return Err(setup_error(
            format!("the server runs with wal_level = {wal_level}"),
            "set wal_level = logical in postgresql.conf (or ALTER SYSTEM SET wal_level = logical) and restart Postgres",
        ));
    }
    if !can_replicate {
        return Err(setup_error(
            format!("user {user} may not start replication"),
            format!("ALTER ROLE {} WITH REPLICATION", quote_ident(&user)),
        ));
    }
    if max_slots == 0 {
        return Err(setup_error(
            "max_replication_slots is 0",
            "set max_replication_slots = 10 (or more) and restart Postgres",
        ));
    }
    if version_num < 100_000 {
        return Err(setup_error(
            format!("server version {version_num} has no pgoutput"),
            "use Postgres 10 or later (15+ recommended)",
        ));
    }
    Ok(ServerInfo { version_num })
}

/// Every captured table must identify its rows for updates and deletes.
pub fn check_tables(tables: &[CapturedTable], patterns: &[String]) -> Result<(), PostgresError> {
    if tables.is_empty() {
        return Err(setup_error(
            format!("no table matches {patterns:?}"),
            "check `tables` in the source config (schema.table, wildcards allowed) and that the tables exist",
        ));
    }
    for table in tables {
        let problem = match table.replica_identity {
            b'n' => Some("REPLICA IDENTITY NOTHING"),
            b'd' if !table.has_primary_key => Some("no primary key and REPLICA IDENTITY DEFAULT"),
            _ => None,
        };
        if let Some(problem) = problem {
            return Err(setup_error(
                format!("table {} has {problem}", table.id),
                format!(
                    "set REPLICA IDENTITY FULL (ALTER TABLE {}.{} REPLICA IDENTITY FULL) or add a primary key",
                    quote_ident(&table.id.namespace),
                    quote_ident(&table.id.name)
                ),
            ));
        }
    }
    Ok(())
}

/// Creates the publication, or brings one sluice created back in line with the patterns.
/// `schema.*` patterns publish the whole schema (so tables created later are captured, on
/// Postgres 15+); other patterns publish the tables that match now.
pub async fn ensure_publication(
    client: &Client,
    name: &str,
    patterns: &[String],
    tables: &[CapturedTable],
    server: &ServerInfo,
    owned: bool,
) -> Result<(), PostgresError> {
    let mut schemas: Vec<&str> = Vec::new();
    let mut listed: Vec<String> = Vec::new();
    for pattern in patterns {
        match pattern.strip_suffix(".*") {
            Some(schema) if server.version_num >= 150_000 && !schema.contains('*') => {
                schemas.push(schema)
            }
            _ => {}
        }
    }
    for table in tables {
        if !schemas.contains(&table.id.namespace.as_str()) {
            listed.push(format!(
                "{}.{}",
                quote_ident(&table.id.namespace),
                quote_ident(&table.id.name)
            ));
        }
    }
    let mut targets = Vec::new();
    if !schemas.is_empty() {
        targets.push(format!(
            "TABLES IN SCHEMA {}",
            schemas
                .iter()
                .map(|s| quote_ident(s))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if !listed.is_empty() {
        targets.push(format!("TABLE {}", listed.join(", ")));
    }
    let targets = targets.join(", ");
    let exists = client
        .query_opt("SELECT 1 FROM pg_publication WHERE pubname = $1", &[&name])
        .await?
        .is_some();
    if !exists {
        tracing::info!(publication = name, "creating publication");
        client
            .batch_execute(&format!(
                "CREATE PUBLICATION {} FOR {targets}",
                quote_ident(name)
            ))
            .await?;
    } else if owned {
        client
            .batch_execute(&format!(
                "ALTER PUBLICATION {} SET {targets}",
                quote_ident(name)
            ))
            .await?;
    }
    Ok(())
}

/// A replication slot as `pg_replication_slots` shows it.
#[derive(Debug, Clone)]
pub struct SlotState {
    pub plugin: Option<String>,
    pub confirmed_flush: Option<Lsn>,
    pub active_pid: Option<i32>,
    pub database: Option<String>,
}

pub async fn slot_state(client: &Client, slot: &str) -> Result<Option<SlotState>, PostgresError> {
    let row = client
        .query_opt(
            "SELECT plugin::text, confirmed_flush_lsn::text, active_pid, database::text \
             FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await?;
    Ok(row.map(|row| SlotState {
        plugin: row.get(0),
        confirmed_flush: row
            .get::<_, Option<String>>(1)
            .and_then(|lsn| lsn.parse().ok()),
        active_pid: row.get(2),
        database: row.get(3),
    }))
}

/// Slot names are shared by the whole server: a slot of another database is not ours to use
/// or drop.
pub fn check_slot_database(
    slot: &str,
    state: &SlotState,
    dbname: &str,
) -> Result<(), PostgresError> {
    if state.database.as_deref() == Some(dbname) {
        return Ok(());
    }
    Err(setup_error(
        format!(
            "replication slot {slot} belongs to database {:?}, not {dbname}",
            state.database
        ),
        "slot names are shared by the whole server: name another one with `slot =`",
    ))
}

/// Why a slot that exists is not this source's to drop or reuse: sluice proves a slot is its own
/// only by the log's checkpoint (a snapshot begun at the slot's consistent point, or a stream
/// position at or past what the slot confirmed). Anything else may be another tool's slot, or
/// another pipeline's.
pub fn foreign_slot(slot: &str, state: &SlotState, log_position: Option<Lsn>) -> PostgresError {
    let confirmed = state
        .confirmed_flush
        .map_or_else(|| "-".to_owned(), |lsn| lsn.to_string());
    let plugin = state.plugin.as_deref().unwrap_or("-");
    let problem = match log_position {
        None => format!(
            "replication slot {slot} already exists (plugin {plugin}, confirmed_flush_lsn {confirmed}, \
             idle) and this source's log has no record of creating it; sluice never drops or \
             reuses a slot it cannot prove it owns"
        ),
        Some(position) => format!(
            "replication slot {slot} (plugin {plugin}) is at {confirmed}, past the log's last \
             position {position}: another consumer advanced it, and the changes in between are \
             lost to sluice; sluice never drops or reuses a slot it cannot prove it owns"
        ),
    };
    setup_error(
        problem,
        format!(
            "give this source a slot of its own with `slot = \"...\"` (a new slot starts with \
             a snapshot); or, if the slot is a leftover of an earlier sluice pipeline that you \
             mean to start over, drop it with SELECT pg_drop_replication_slot('{}') and run again",
            slot.replace('\'', "''")
        ),
    )
}

/// A slot held by a live connection: who holds it, for the error.
pub async fn slot_in_use(client: &Client, slot: &str, pid: i32) -> PostgresError {
    let holder = client
        .query_opt(
            "SELECT coalesce(application_name, ''), coalesce(client_addr::text, 'local'),                     coalesce(state, ''), coalesce(backend_start::text, '') \
             FROM pg_stat_replication WHERE pid = $1",
            &[&pid],
        )
        .await
        .ok()
        .flatten()
        .map(|row| {
            let (app, addr, state, since): (String, String, String, String) =
                (row.get(0), row.get(1), row.get(2), row.get(3));
            format!(" (application {app:?} from {addr}, {state} since {since})")
        })
        .unwrap_or_default();
    PostgresError::SlotInUse {
        slot: slot.to_owned(),
        pid,
        holder,
    }
}

pub async fn drop_slot(client: &Client, slot: &str) -> Result<(), PostgresError> {
    tracing::info!(slot, "dropping replication slot");
    client
        .execute("SELECT pg_drop_replication_slot($1)", &[&slot])
        .await?;
    Ok(())
}

/// A slot just created with an exported snapshot.
#[derive(Debug, Clone)]
pub struct CreatedSlot {
    pub consistent_point: Lsn,
    pub snapshot_name: Option<String>,
}

/// Creates a pgoutput slot on the replication connection. With `export_snapshot` the
/// connection must stay idle until every snapshot reader has imported the snapshot.
pub async fn create_slot(
    conn: &mut WireConnection,
    slot: &str,
    export_snapshot: bool,
) -> Result<CreatedSlot, PostgresError> {
    let snapshot = if export_snapshot {
        "EXPORT_SNAPSHOT"
    } else {
        "NOEXPORT_SNAPSHOT"
    };
    let rows = conn
        .simple_query(&format!("CREATE_REPLICATION_SLOT {} LOGICAL pgoutput {snapshot}", quote_ident(slot)))
        .await
        .map_err(|err| match err {
            PostgresError::Server(server) if server.code == "53400" => setup_error(
                format!("cannot create replication slot {slot}: {}", server.message),
                "raise max_replication_slots, or drop unused slots (SELECT pg_drop_replication_slot(name))",
            ),
            other => other,
        })?;
    let row = rows
        .first()
        .ok_or_else(|| PostgresError::protocol("CREATE_REPLICATION_SLOT returned no row"))?;
    let consistent_point = row
        .get(1)
        .and_then(|v| v.as_deref())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| {
            PostgresError::protocol("CREATE_REPLICATION_SLOT returned no consistent point")
        })?;
    let snapshot_name = row.get(2).cloned().flatten();
    tracing::info!(slot, consistent_point = %consistent_point, "created replication slot");
    Ok(CreatedSlot {
        consistent_point,
        snapshot_name,
    })
}
