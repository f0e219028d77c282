//! Preparing the server: settings checks with fixes, the tables to capture and the publication
//! that lists them (kept in step while streaming), privileges for `check --connect`, and the
//! replication slot and the proof that it is this source's.

use sluice_core::position::Lsn;
use tokio_postgres::Client;

use sluice_core::event::TableId;

use super::catalog::{CapturedTable, Resolution};
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
pub(super) struct ServerInfo {
    pub version_num: i32,
    /// A hot standby (in recovery): logical decoding needs Postgres 16+, and nothing can be
    /// written (publications, watermarks) on it.
    pub standby: bool,
}

/// A problem `check --connect` found, and how to fix it.
pub(super) type Problem = (String, String);

/// Checks wal_level and the REPLICATION privilege; the first failure says how to fix it.
pub(super) async fn check_server(client: &Client) -> Result<ServerInfo, PostgresError> {
    let (server, problems) = server_problems(client).await?;
    match problems.into_iter().next() {
        Some((problem, fix)) => Err(setup_error(problem, fix)),
        None => Ok(server),
    }
}

/// The server settings and role attributes a source needs, each missing one with its fix.
pub(super) async fn server_problems(
    client: &Client,
) -> Result<(ServerInfo, Vec<Problem>), PostgresError> {
    let row = client
        .query_one(
            "SELECT current_setting('wal_level'), current_setting('server_version_num')::int, \
                    r.rolreplication OR r.rolsuper, current_user::text, \
                    current_setting('max_replication_slots')::int, \
                    current_setting('max_wal_senders')::int - (SELECT count(*) FROM pg_stat_replication)::int, \
                    pg_is_in_recovery(), current_setting('hot_standby_feedback')::bool \
             FROM pg_roles r WHERE r.rolname = current_user",
            &[],
        )
        .await?;
    let (wal_level, version_num, can_replicate, user, max_slots, free_senders): (
        String,
        i32,
        bool,
        String,
        i32,
        i32,
    ) = (
        row.get(0),
        row.get(1),
        row.get(2),
        row.get(3),
        row.get(4),
        row.get(5),
    );
    let (standby, feedback): (bool, bool) = (row.get(6), row.get(7));
    let mut problems = Vec::new();
    if standby && version_num < 160_000 {
        problems.push((
            format!("the server is a standby running Postgres {version_num}, which cannot decode on a standby"),
            "point url at the primary, or at a standby of Postgres 16 or later".to_owned(),
        ));
    }
    if standby && !feedback {
        problems.push((
            "the standby runs with hot_standby_feedback = off: the primary would remove catalog \
             rows the slot still needs and the standby would invalidate the slot"
                .to_owned(),
            "set hot_standby_feedback = on on the standby (and a physical slot for it on the \
             primary: primary_slot_name) and reload it"
                .to_owned(),
        ));
    }
    if version_num < 100_000 {
        problems.push((
            format!("server version {version_num} has no pgoutput"),
            "use Postgres 10 or later (15+ recommended)".to_owned(),
        ));
    }
    if wal_level != "logical" {
        problems.push((
            format!("the server runs with wal_level = {wal_level}"),
            "set wal_level = logical in postgresql.conf (or ALTER SYSTEM SET wal_level = logical) and restart Postgres".to_owned(),
        ));
    }
    if !can_replicate {
        problems.push((
            format!("user {user} may not start replication"),
            format!("ALTER ROLE {} WITH REPLICATION", quote_ident(&user)),
        ));
    }
    if max_slots == 0 {
        problems.push((
            "max_replication_slots is 0".to_owned(),
            "set max_replication_slots = 10 (or more) and restart Postgres".to_owned(),
        ));
    }
    if free_senders <= 0 {
        problems.push((
            "every WAL sender is taken (max_wal_senders)".to_owned(),
            "raise max_wal_senders and restart Postgres, or stop a replication client".to_owned(),
        ));
    }
    Ok((
        ServerInfo {
            version_num,
            standby,
        },
        problems,
    ))
}

/// There must be something to capture; a table named exactly must identify its rows for
/// updates and deletes. Tables a wildcard matched that cannot are left out, loudly.
pub(super) fn check_tables(
    resolution: &Resolution,
    patterns: &[String],
) -> Result<(), PostgresError> {
    if let Some(table) = resolution.named_without_identity.first() {
        let problem = if table.replica_identity == b'n' {
            "REPLICA IDENTITY NOTHING"
        } else {
            "no primary key and REPLICA IDENTITY DEFAULT"
        };
        return Err(setup_error(
            format!("table {} has {problem}", table.id),
            format!(
                "set REPLICA IDENTITY FULL (ALTER TABLE {} REPLICA IDENTITY FULL) or add a primary key",
                qualified(&table.id)
            ),
        ));
    }
    for table in &resolution.left_out {
        tracing::warn!(table = %table, fix = %format!("ALTER TABLE {} REPLICA IDENTITY FULL", qualified(table)),
            "table left out: it has no primary key, and publishing it would make the application's UPDATEs and DELETEs on it fail");
    }
    if resolution.captured.is_empty() {
        let left_out: Vec<String> = resolution
            .left_out
            .iter()
            .map(ToString::to_string)
            .collect();
        return Err(setup_error(
            if left_out.is_empty() {
                format!("no table matches {patterns:?}")
            } else {
                format!(
                    "no table to capture: {patterns:?} matches only tables without a primary key ({})",
                    left_out.join(", ")
                )
            },
            "check `tables` and `exclude` in the source config (schema.table, wildcards allowed), \
             that the tables exist, and that each has a primary key or REPLICA IDENTITY FULL",
        ));
    }
    Ok(())
}

/// `"schema"."table"`.
pub(super) fn qualified(table: &TableId) -> String {
    format!(
        "{}.{}",
        quote_ident(&table.namespace),
        quote_ident(&table.name)
    )
}

/// The tables a publication publishes now.
pub(super) async fn publication_tables(
    client: &Client,
    name: &str,
) -> Result<Vec<TableId>, PostgresError> {
    let rows = client
        .query(
            "SELECT schemaname::text, tablename::text FROM pg_publication_tables WHERE pubname = $1 \
             ORDER BY 1, 2",
            &[&name],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| TableId {
            namespace: row.get(0),
            name: row.get(1),
        })
        .collect())
}

pub(super) async fn publication_exists(client: &Client, name: &str) -> Result<bool, PostgresError> {
    Ok(client
        .query_opt("SELECT 1 FROM pg_publication WHERE pubname = $1", &[&name])
        .await?
        .is_some())
}

/// The captured tables `publication` does not publish.
pub(super) async fn unpublished(
    client: &Client,
    publication: &str,
    captured: &[CapturedTable],
) -> Result<Vec<String>, PostgresError> {
    let published = publication_tables(client, publication).await?;
    Ok(captured
        .iter()
        .filter(|t| !published.contains(&t.id))
        .map(|t| t.id.to_string())
        .collect())
}

/// Creates the publication sluice owns, listing exactly the captured tables, or brings it back
/// in line with them (tables created, keys added or dropped since). A list, never `FOR TABLES
/// IN SCHEMA`: a schema-wide publication would take in keyless tables created later and make
/// the application's UPDATEs and DELETEs on them fail, and it needs superuser. A publication
/// named in the config (`owned` false) is created the same way when it does not exist, and
/// used as it is when it does (an administrator made it). Returns whether it changed.
pub(super) async fn ensure_publication(
    client: &Client,
    name: &str,
    tables: &[CapturedTable],
    owned: bool,
) -> Result<bool, PostgresError> {
    let exists = publication_exists(client, name).await?;
    let listed: Vec<String> = tables.iter().map(|t| qualified(&t.id)).collect();
    // Partitioned tables publish their partitions' changes under the root (Postgres 13+).
    let via_root: bool = client
        .query_one(
            "SELECT current_setting('server_version_num')::int >= 130000",
            &[],
        )
        .await?
        .get(0);
    let statement = if !exists {
        format!(
            "CREATE PUBLICATION {} FOR TABLE {}{}",
            quote_ident(name),
            listed.join(", "),
            if via_root {
                " WITH (publish_via_partition_root = true)"
            } else {
                ""
            }
        )
    } else {
        let mut published = publication_tables(client, name).await?;
        let mut wanted: Vec<TableId> = tables.iter().map(|t| t.id.clone()).collect();
        published.sort_by_key(ToString::to_string);
        wanted.sort_by_key(ToString::to_string);
        if !owned || published == wanted {
            return Ok(false);
        }
        let mut statement = format!(
            "ALTER PUBLICATION {} SET TABLE {}",
            quote_ident(name),
            listed.join(", ")
        );
        if via_root {
            statement.push_str(&format!(
                "; ALTER PUBLICATION {} SET (publish_via_partition_root = true)",
                quote_ident(name)
            ));
        }
        statement
    };
    tracing::info!(
        publication = name,
        tables = tables.len(),
        "publishing the captured tables"
    );
    client.batch_execute(&statement).await.map_err(|err| {
        match err.code().map(|c| c.code()) {
            // Not the tables' owner: someone who is creates the publication once.
            Some("42501") => setup_error(
                format!("cannot publish the tables: {}", super::ErrorText(&err)),
                format!(
                    "as the tables' owner or a superuser run: CREATE PUBLICATION {} FOR TABLE {}; \
                     then set publication = \"{name}\" in the source config (sluice then uses it \
                     as it is, with REPLICATION and SELECT only)",
                    quote_ident(name),
                    listed.join(", ")
                ),
            ),
            _ => PostgresError::Query(err),
        }
    })?;
    Ok(true)
}

/// Resolves the captured tables, reports those left out (log and metric), and makes the
/// publication list them (or, for one that exists and is named in the config, checks that it
/// does). Returns the captured tables, and those that joined the publication sluice owns now
/// (added to `tables`, or created while sluice was stopped: their rows are not in the log).
pub(super) async fn publish_tables(
    client: &Client,
    config: &super::PostgresSourceConfig,
    standby: bool,
) -> Result<(Vec<CapturedTable>, Vec<TableId>), PostgresError> {
    let resolution =
        super::catalog::resolve_tables(client, &config.tables, &config.exclude).await?;
    check_tables(&resolution, &config.tables)?;
    report_left_out(config, &resolution);
    let publication = config.publication_name();
    let owned = config.publication.is_none();
    if standby && owned {
        return Err(standby_publication(&publication, &resolution.captured));
    }
    let before = if owned && publication_exists(client, &publication).await? {
        Some(publication_tables(client, &publication).await?)
    } else {
        None
    };
    ensure_publication(client, &publication, &resolution.captured, owned).await?;
    let joined = match before {
        Some(before) => resolution
            .captured
            .iter()
            .filter(|t| !before.contains(&t.id))
            .map(|t| t.id.clone())
            .collect(),
        None => Vec::new(),
    };
    if !owned {
        let missing = unpublished(client, &publication, &resolution.captured).await?;
        if !missing.is_empty() {
            return Err(setup_error(
                format!(
                    "publication {publication} does not publish {}, which `tables` matches: its \
                     changes would never arrive",
                    missing.join(", ")
                ),
                format!(
                    "add them (ALTER PUBLICATION {publication} ADD TABLE …) or leave them out with \
                     `exclude`"
                ),
            ));
        }
    }
    Ok((resolution.captured, joined))
}

/// sluice reads a standby and was to create its publication, which a standby cannot do.
fn standby_publication(publication: &str, tables: &[CapturedTable]) -> PostgresError {
    let listed: Vec<String> = tables.iter().map(|t| qualified(&t.id)).collect();
    setup_error(
        format!("the server is a standby: sluice cannot create publication {publication} on it"),
        format!(
            "on the primary run CREATE PUBLICATION {} FOR TABLE {} (it reaches the standby), then \
             set publication = \"{publication}\" in the source config",
            quote_ident(publication),
            listed.join(", ")
        ),
    )
}

/// While streaming: tables created since, or whose key changed, join or leave the publication
/// sluice owns. Returns the tables that joined: captured from then on, and their rows written
/// before are read by an on-demand snapshot.
pub(super) async fn follow_tables(
    client: &Client,
    config: &super::PostgresSourceConfig,
) -> Result<Vec<TableId>, PostgresError> {
    let publication = config.publication_name();
    let before = publication_tables(client, &publication).await?;
    let resolution =
        super::catalog::resolve_tables(client, &config.tables, &config.exclude).await?;
    report_left_out(config, &resolution);
    if resolution.captured.is_empty() || !resolution.named_without_identity.is_empty() {
        // start() reports these on the next reconnect; the stream goes on as it is.
        return Ok(Vec::new());
    }
    if !ensure_publication(client, &publication, &resolution.captured, true).await? {
        return Ok(Vec::new());
    }
    let joined: Vec<TableId> = resolution
        .captured
        .iter()
        .filter(|t| !before.contains(&t.id))
        .map(|t| t.id.clone())
        .collect();
    for table in &joined {
        tracing::info!(%table, "new table captured from now on; an on-demand snapshot reads the rows it had");
    }
    for table in before
        .iter()
        .filter(|t| !resolution.captured.iter().any(|c| c.id == **t))
    {
        tracing::warn!(table = %table, "table no longer captured (dropped, excluded, or lost its primary key)");
    }
    for table in &resolution.left_out {
        tracing::warn!(table = %table, "table left out: it has no primary key, and publishing it would make the application's UPDATEs and DELETEs on it fail");
    }
    Ok(joined)
}

fn report_left_out(config: &super::PostgresSourceConfig, resolution: &Resolution) {
    ::metrics::gauge!(sluice_core::metrics::SOURCE_TABLES_LEFT_OUT, "source" => config.name.clone())
        .set(resolution.left_out.len() as f64);
}

/// A replication slot as `pg_replication_slots` shows it.
#[derive(Debug, Clone)]
pub(super) struct SlotState {
    pub plugin: Option<String>,
    pub confirmed_flush: Option<Lsn>,
    pub active_pid: Option<i32>,
    pub database: Option<String>,
    /// `reserved`, `extended`, `unreserved` or `lost` (Postgres 13+; None before).
    pub wal_status: Option<String>,
    /// Kept on standbys that sync slots (Postgres 17+; None before).
    pub failover: Option<bool>,
}

/// Makes an existing slot a failover slot (Postgres 17+).
pub(super) async fn enable_failover(
    conn: &mut WireConnection,
    slot: &str,
) -> Result<(), PostgresError> {
    conn.simple_query(&format!(
        "ALTER_REPLICATION_SLOT {} (FAILOVER true)",
        quote_ident(slot)
    ))
    .await
    .map_err(|err| match err {
        PostgresError::Server(server) => setup_error(
            format!(
                "cannot make slot {slot} a failover slot: {}",
                server.message
            ),
            "failover slots need Postgres 17 or later on the primary; set failover_slot = false \
             (or leave it out) otherwise",
        ),
        other => other,
    })?;
    tracing::info!(slot, "the slot is a failover slot now");
    Ok(())
}

impl SlotState {
    /// The server invalidated the slot: the WAL it held is gone.
    pub(super) fn lost(&self) -> bool {
        self.wal_status.as_deref() == Some("lost")
    }
}

/// The slot's `pg_replication_slots` columns that say how close it is to invalidation, for any
/// server version (through `to_jsonb`, so that a column a version lacks reads as NULL).
const SLOT_WAL_COLUMNS: &str =
    "to_jsonb(s) ->> 'wal_status', (to_jsonb(s) ->> 'safe_wal_size')::int8, \
     pg_wal_lsn_diff(pg_current_wal_lsn(), s.restart_lsn)::int8";

/// How much WAL a slot holds and how much more the server lets it hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SlotWal {
    pub wal_status: Option<String>,
    /// Bytes the slot may still fall behind before the server invalidates it (None: no limit,
    /// `max_slot_wal_keep_size = -1`).
    pub safe_bytes: Option<i64>,
    pub retained_bytes: Option<i64>,
}

pub(super) async fn slot_wal(
    client: &Client,
    slot: &str,
) -> Result<Option<SlotWal>, PostgresError> {
    let row = client
        .query_opt(
            &format!("SELECT {SLOT_WAL_COLUMNS} FROM pg_replication_slots s WHERE slot_name = $1"),
            &[&slot],
        )
        .await?;
    Ok(row.map(|row| SlotWal {
        wal_status: row.get(0),
        safe_bytes: row.get(1),
        retained_bytes: row.get(2),
    }))
}

/// The error for a slot the server invalidated.
pub(super) fn slot_lost(slot: &str, since: Option<Lsn>) -> PostgresError {
    let since = since.map_or_else(String::new, |lsn| format!(" after {lsn}"));
    setup_error(
        format!(
            "replication slot {slot} was invalidated by the server: it held more WAL than \
             max_slot_wal_keep_size allows, and the changes{since} it kept are gone"
        ),
        "set snapshot = \"when_needed\" to drop it and take a new snapshot (sinks then receive \
         every row again), or start a fresh pipeline with a new [log] dir; raise \
         max_slot_wal_keep_size (or keep sluice running) so that it does not happen again",
    )
}

pub(super) async fn slot_state(
    client: &Client,
    slot: &str,
) -> Result<Option<SlotState>, PostgresError> {
    let row = client
        .query_opt(
            "SELECT plugin::text, confirmed_flush_lsn::text, active_pid, database::text, \
                    to_jsonb(s) ->> 'wal_status', (to_jsonb(s) ->> 'failover')::bool \
             FROM pg_replication_slots s WHERE slot_name = $1",
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
        wal_status: row.get(4),
        failover: row.get(5),
    }))
}

/// Slot names are shared by the whole server: a slot of another database is not ours to use
/// or drop.
pub(super) fn check_slot_database(
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
pub(super) fn foreign_slot(
    slot: &str,
    state: &SlotState,
    log_position: Option<Lsn>,
) -> PostgresError {
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
             a snapshot); or, if you created the slot for sluice, set adopt_slot = true (with \
             snapshot = \"never\"); or, if the slot is a leftover of an earlier sluice pipeline that you \
             mean to start over, drop it with SELECT pg_drop_replication_slot('{}') and run again",
            slot.replace('\'', "''")
        ),
    )
}

/// A slot held by a live connection: who holds it, for the error.
pub(super) async fn slot_in_use(client: &Client, slot: &str, pid: i32) -> PostgresError {
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

/// The transaction snapshot an exported snapshot is (`txid_current_snapshot()` text), read by
/// importing it: what a resumed snapshot compares rows' `xmin` with.
pub(super) async fn txid_snapshot_of(
    client: &Client,
    snapshot_name: &str,
) -> Result<String, PostgresError> {
    let rows = client
        .simple_query(&format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT '{}'; \
             SELECT txid_current_snapshot()::text; COMMIT",
            snapshot_name.replace('\'', "''")
        ))
        .await?;
    rows.iter()
        .find_map(|message| match message {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
            _ => None,
        })
        .ok_or_else(|| PostgresError::protocol("txid_current_snapshot() returned no row"))
}

pub(super) async fn drop_slot(client: &Client, slot: &str) -> Result<(), PostgresError> {
    tracing::info!(slot, "dropping replication slot");
    client
        .execute("SELECT pg_drop_replication_slot($1)", &[&slot])
        .await?;
    Ok(())
}

/// A slot just created with an exported snapshot.
#[derive(Debug, Clone)]
pub(super) struct CreatedSlot {
    pub consistent_point: Lsn,
    pub snapshot_name: Option<String>,
}

/// Creates a pgoutput slot on the replication connection. With `export_snapshot` the
/// connection must stay idle until every snapshot reader has imported the snapshot. With
/// `failover` (Postgres 17+) standbys that sync slots keep a copy, usable after a promotion.
pub(super) async fn create_slot(
    conn: &mut WireConnection,
    slot: &str,
    export_snapshot: bool,
    failover: bool,
) -> Result<CreatedSlot, PostgresError> {
    let snapshot = match (export_snapshot, failover) {
        (true, false) => "EXPORT_SNAPSHOT",
        (false, false) => "NOEXPORT_SNAPSHOT",
        (true, true) => "(SNAPSHOT 'export', FAILOVER)",
        (false, true) => "(SNAPSHOT 'nothing', FAILOVER)",
    };
    let rows = conn
        .simple_query(&format!("CREATE_REPLICATION_SLOT {} LOGICAL pgoutput {snapshot}", quote_ident(slot)))
        .await
        .map_err(|err| match err {
            PostgresError::Server(server) if server.code == "53400" => setup_error(
                format!("cannot create replication slot {slot}: {}", server.message),
                "raise max_replication_slots, or drop unused slots (SELECT pg_drop_replication_slot(name))",
            ),
            PostgresError::Server(server) if failover => setup_error(
                format!("cannot create failover slot {slot}: {}", server.message),
                "failover slots need Postgres 17 or later on the primary; set failover_slot = false \
                 (or leave it out) otherwise",
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
    tracing::info!(slot, consistent_point = %consistent_point, failover, "created replication slot");
    Ok(CreatedSlot {
        consistent_point,
        snapshot_name,
    })
}

/// What `check --connect` adds to the server checks: exactly the privileges `run` will need.
/// SELECT on every captured table; a publication that exists and publishes them, or the right
/// to create it (superuser, or CREATE on the database and ownership of every table); and a
/// free replication slot when the slot does not exist yet. Every one missing, with its fix.
pub(super) async fn privilege_problems(
    client: &Client,
    config: &super::PostgresSourceConfig,
    resolution: &Resolution,
    server: &ServerInfo,
) -> Result<Vec<Problem>, PostgresError> {
    let mut problems = Vec::new();
    if config.failover_slot && server.version_num < 170_000 {
        problems.push((
            format!(
                "failover_slot = true, but failover slots need Postgres 17 (the server runs {})",
                server.version_num
            ),
            "set failover_slot = false, or upgrade the primary".to_owned(),
        ));
    }
    let oids: Vec<u32> = resolution.captured.iter().map(|t| t.oid).collect();
    let row = client
        .query_one(
            "SELECT \
               (SELECT array_agg(format('%I.%I', n.nspname, c.relname) ORDER BY 1) \
                  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE c.oid = ANY($1::oid[]) AND NOT has_table_privilege(c.oid, 'SELECT')), \
               (SELECT array_agg(c.oid::regclass::text ORDER BY 1) FROM pg_class c \
                 WHERE c.oid = ANY($1::oid[]) AND NOT pg_has_role(c.relowner, 'USAGE')), \
               (SELECT rolsuper FROM pg_roles WHERE rolname = current_user), \
               has_database_privilege(current_database(), 'CREATE'), \
               current_user::text, \
               (SELECT count(*) FROM pg_replication_slots) < current_setting('max_replication_slots')::int",
            &[&oids],
        )
        .await?;
    let no_select: Option<Vec<String>> = row.get(0);
    let not_owned: Vec<String> = row.get::<_, Option<Vec<String>>>(1).unwrap_or_default();
    let (superuser, can_create, user, slot_free): (bool, bool, String, bool) =
        (row.get(2), row.get(3), row.get(4), row.get(5));
    if let Some(tables) = no_select {
        problems.push((
            format!("user {user} may not read {}", tables.join(", ")),
            format!(
                "GRANT SELECT ON {} TO {}",
                tables.join(", "),
                quote_ident(&user)
            ),
        ));
    }
    let publication = config.publication_name();
    let listed: Vec<String> = resolution
        .captured
        .iter()
        .map(|t| qualified(&t.id))
        .collect();
    let exists = publication_exists(client, &publication).await?;
    let missing = unpublished(client, &publication, &resolution.captured).await?;
    let create_fix = format!(
        "as the tables' owner or a superuser run: CREATE PUBLICATION {} FOR TABLE {}; then set \
         publication = \"{publication}\" in the source config",
        quote_ident(&publication),
        listed.join(", ")
    );
    if server.standby && config.publication.is_none() {
        let PostgresError::Setup { problem, fix } =
            standby_publication(&publication, &resolution.captured)
        else {
            unreachable!("a setup error")
        };
        problems.push((problem, fix));
    } else if config.publication.is_some() && exists {
        if !missing.is_empty() {
            problems.push((
                format!(
                    "publication {publication} does not publish {}",
                    missing.join(", ")
                ),
                "add them (ALTER PUBLICATION … ADD TABLE …) or leave them out with `exclude`"
                    .to_owned(),
            ));
        }
    } else if !(superuser || (exists && missing.is_empty()) || (can_create && not_owned.is_empty()))
    {
        let why = if can_create {
            format!("it does not own {}", not_owned.join(", "))
        } else {
            "it may not CREATE in this database".to_owned()
        };
        problems.push((
            format!("user {user} cannot create or update publication {publication}: {why}"),
            create_fix,
        ));
    }
    if slot_state(client, &config.slot_name()).await?.is_none() && !slot_free {
        problems.push((
            "every replication slot is taken (max_replication_slots)".to_owned(),
            "raise max_replication_slots, or drop unused slots (SELECT pg_drop_replication_slot(name))".to_owned(),
        ));
    }
    Ok(problems)
}
