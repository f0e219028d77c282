//! `sluice check --connect` for a Postgres sink.

use super::{PostgresSinkConfig, SinkError};

/// `check --connect` for a Postgres sink: connects as `run` would and checks that the user may
/// create the target tables (CREATE on the database) and the offsets table.
pub async fn probe(config: &PostgresSinkConfig) -> Result<String, SinkError> {
    let (pg, tls) = config.pg_config().map_err(SinkError::Url)?;
    let connector = tls
        .connector()
        .map_err(|e| SinkError::Url(crate::UrlError(e.to_string())))?;
    let connected = pg.connect(connector).await;
    if let Err(err) = &connected {
        if let Some(reason) = crate::postgres::tls::connect_failure(err, &pg, &tls).await {
            return Err(SinkError::Tls(reason));
        }
    }
    let (client, connection) = connected.map_err(|err| match err.code() {
        Some(_) => SinkError::db("connecting to the target database", err),
        None => SinkError::Connect(crate::postgres::ErrorText(&err).to_string()),
    })?;
    let task = sluice_core::task::spawn_in_span(connection);
    let row = client
        .query_one(
            "SELECT current_user::text, current_database()::text, \
                    has_database_privilege(current_database(), 'CREATE'), \
                    current_setting('server_version')",
            &[],
        )
        .await
        .map_err(SinkError::from_pg);
    task.abort();
    let row = row?;
    let (user, database, can_create, version): (String, String, bool, String) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    if !can_create {
        return Err(SinkError::Schema(format!(
            "user {user} may not create schemas or tables in database {database}, which the sink \
             needs for its target and offsets tables; to fix: GRANT CREATE ON DATABASE {database} TO {user}"
        )));
    }
    Ok(format!(
        "server {version}, database {database}, user {user} may create tables"
    ))
}
