//! Configuration of the Postgres source: typed, validated without I/O, with defaults.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::protocol::ConnectParams;
use super::tls::TlsSettings;
use crate::{AvroDecimals, ConfigError, Encoding, UrlError};

/// `[[sources]] kind = "postgres"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSourceConfig {
    /// Source name: the topic prefix (`<name>.<schema>.<table>`) and the log writer id. Required.
    pub name: String,
    /// `postgres://user[:password]@host[:port]/database`. Required. The user needs the
    /// REPLICATION attribute (or superuser) and SELECT on the captured tables.
    pub url: sluice_core::redact::SecretUrl,
    /// File whose content (trailing newline trimmed) is the password; overrides one in `url`.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Tables to capture as `schema.table`; `*` matches any run of characters. Default `["public.*"]`.
    #[serde(default = "default_tables")]
    pub tables: Vec<String>,
    /// Tables never to capture, as `schema.table` patterns, even when `tables` matches them.
    /// Default none. Tables without a primary key or REPLICA IDENTITY FULL that only a
    /// wildcard matches are left out by themselves (with a warning, in `sluice status` and in
    /// `sluice_source_tables_left_out`): publishing them would make the application's own
    /// UPDATEs and DELETEs on them fail.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// `initial` (snapshot on first start, then stream), `never` (stream only), or
    /// `when_needed` (also snapshot again when the slot is gone). Default `initial`.
    #[serde(default)]
    pub snapshot: SnapshotMode,
    /// Replication slot name. Default `sluice_<name>`.
    #[serde(default)]
    pub slot: Option<String>,
    /// With `snapshot = "never"` and a log that holds nothing of this source yet: stream from
    /// the existing slot `slot` (one you created for sluice, e.g. to start at a chosen point),
    /// from its confirmed position. It is then this source's, as if sluice had made it.
    /// Without this sluice never uses or drops a slot it did not create. Default false.
    #[serde(default)]
    pub adopt_slot: bool,
    /// Publication name. Default `sluice_<name>`.
    #[serde(default)]
    pub publication: Option<String>,
    /// Columns of types sluice cannot map: `error` (default: stop naming table and column) or
    /// `text` (pass the Postgres text form through as a string).
    #[serde(default)]
    pub unknown_types: UnknownTypes,
    /// Follow each delete with a tombstone (same key, null value). Default true.
    #[serde(default = "default_true")]
    pub tombstones: bool,
    /// Transaction metadata, as Debezium's `provide.transaction.metadata`: each event's
    /// `transaction.data_collection_order`, and `BEGIN`/`END` records (the END with the
    /// transaction's event count per table) in the topic `<name>.transaction`. Default false.
    #[serde(default)]
    pub transaction_metadata: bool,
    /// How events are written to the log: `json` (Debezium's JSON envelope, the default) or
    /// `avro` (Confluent's wire format; schemas registered in the schema registry).
    #[serde(default)]
    pub encoding: Encoding,
    /// With `encoding = "avro"`: `precise` (numerics with a declared precision as Avro
    /// decimals, the default) or `string` (every numeric as its exact text).
    #[serde(default)]
    pub avro_decimals: AvroDecimals,
    /// A batch closes at the first transaction boundary after this many events; a larger
    /// transaction goes to the log in parts of this size. Default 5000.
    #[serde(default = "default_max_batch_events")]
    pub max_batch_events: usize,
    /// …or, when no more events are waiting, this many milliseconds after its first event: the
    /// longest a change waits to be batched with the ones after it. While events keep arriving
    /// (catching up) batches fill to `max_batch_events` instead. Default 10.
    #[serde(default = "default_max_batch_ms")]
    pub max_batch_ms: u64,
    /// Connections that COPY the initial snapshot in parallel. Default 2.
    #[serde(default = "default_snapshot_parallelism")]
    pub snapshot_parallelism: usize,
    /// The initial snapshot reads, commits and resumes tables in chunks of this many 8 KiB
    /// heap blocks (a crash loses at most the chunks being read). Default: per table, about
    /// `max_batch_events` rows by the table's statistics.
    #[serde(default)]
    pub snapshot_chunk_blocks: Option<u64>,
    /// Seconds between standby status updates to the server, even when idle. Default 10.
    #[serde(default = "default_status_interval_s")]
    pub status_interval_s: u64,
    /// Updates that leave a TOASTed (large) value unchanged do not carry it under
    /// `REPLICA IDENTITY DEFAULT`. `fetch` (default): the exact value, from an earlier event of
    /// the batch or read back from the table by key when the row still is as the update left
    /// it. `placeholder`: Debezium's `__debezium_unavailable_value`, no reads.
    #[serde(default)]
    pub toast: super::replication::ToastMode,
    /// Postgres 14+: have the server stream a large transaction while it runs (pgoutput
    /// protocol 2, `streaming = on`) rather than spill it to its own disk until the commit.
    /// sluice keeps the streamed part in `<log dir>/spool/<source>/` (about the transaction's
    /// size) and writes it to the log when it commits; aborted ones are dropped. Default true.
    #[serde(default = "default_true")]
    pub stream_in_progress: bool,
    /// Postgres 17+: create the slot as a failover slot (and make an existing one one), so
    /// that standbys with `sync_replication_slots = on` keep it and sluice resumes on the
    /// promoted standby without a new snapshot. Also list the standby's physical slot in the
    /// primary's `synchronized_standby_slots`, or the standby's copy may lag behind what sluice
    /// has read. Default false.
    #[serde(default)]
    pub failover_slot: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotMode {
    #[default]
    Initial,
    Never,
    WhenNeeded,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownTypes {
    #[default]
    Error,
    Text,
}

fn default_tables() -> Vec<String> {
    vec!["public.*".to_owned()]
}
fn default_true() -> bool {
    true
}
fn default_max_batch_events() -> usize {
    5_000
}
fn default_max_batch_ms() -> u64 {
    10
}
fn default_snapshot_parallelism() -> usize {
    2
}
fn default_status_interval_s() -> u64 {
    10
}

impl PostgresSourceConfig {
    /// Checks everything that can be checked without connecting. `key` is where this source
    /// sits in the file (`sources[0]`), for error messages.
    pub fn validate(&self, key: &str) -> Result<(), ConfigError> {
        let err = crate::ConfigError::at(key);
        crate::validate_name(key, "source", &self.name)?;
        self.connect_params().map_err(|e| err("url", e.0))?;
        if self.tables.is_empty() {
            return Err(err(
                "tables",
                "list at least one table pattern, e.g. [\"public.*\"]".into(),
            ));
        }
        for (field, pattern) in self
            .tables
            .iter()
            .map(|p| ("tables", p))
            .chain(self.exclude.iter().map(|p| ("exclude", p)))
        {
            if pattern.split('.').count() != 2 || pattern.split('.').any(str::is_empty) {
                return Err(err(
                    field,
                    format!(
                        "{pattern:?} is not of the form schema.table (wildcards allowed: public.*)"
                    ),
                ));
            }
        }
        for (field, name) in [
            ("slot", self.slot_name()),
            ("publication", self.publication_name()),
        ] {
            if name.is_empty()
                || name.len() > 63
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            {
                return Err(err(
                    field,
                    format!("{name:?} is not a valid name: use at most 63 of a-z, 0-9 and '_'"),
                ));
            }
        }
        if self.adopt_slot && self.snapshot != SnapshotMode::Never {
            return Err(err(
                "adopt_slot",
                "goes with snapshot = \"never\": a slot that already exists has no snapshot to \
                 start from"
                    .into(),
            ));
        }
        if self.max_batch_events == 0 {
            return Err(err("max_batch_events", "must be at least 1".into()));
        }
        if self
            .snapshot_chunk_blocks
            .is_some_and(|blocks| !(1..=1 << 24).contains(&blocks))
        {
            return Err(err(
                "snapshot_chunk_blocks",
                "must be between 1 and 16777216 (blocks of 8 KiB)".into(),
            ));
        }
        if !(1..=64).contains(&self.snapshot_parallelism) {
            return Err(err(
                "snapshot_parallelism",
                "must be between 1 and 64".into(),
            ));
        }
        if !(1..=3600).contains(&self.status_interval_s) {
            return Err(err(
                "status_interval_s",
                "must be between 1 and 3600 seconds".into(),
            ));
        }
        Ok(())
    }

    pub fn slot_name(&self) -> String {
        self.slot
            .clone()
            .unwrap_or_else(|| default_object_name(&self.name))
    }

    pub fn publication_name(&self) -> String {
        self.publication
            .clone()
            .unwrap_or_else(|| default_object_name(&self.name))
    }

    pub fn max_batch_age(&self) -> Duration {
        Duration::from_millis(self.max_batch_ms)
    }

    /// The tokio-postgres form of the URL (for ordinary connections), and its TLS settings.
    pub fn pg_config(&self) -> Result<(tokio_postgres::Config, TlsSettings), UrlError> {
        let (mut config, tls) =
            super::tls::pg_config(self.url.expose(), &redact_url(self.url.expose()))?;
        if let Some(password) = self.file_password()? {
            config.password(password);
        }
        let options: Vec<String> = super::protocol::SESSION_SETTINGS
            .iter()
            .map(|(name, value)| format!("-c {name}={value}"))
            .collect();
        config.options(options.join(" "));
        config.application_name("sluice");
        Ok((config, tls))
    }

    fn file_password(&self) -> Result<Option<Vec<u8>>, UrlError> {
        let Some(path) = &self.password_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read password_file {}: {e}", path.display()))?;
        Ok(Some(
            text.trim_end_matches(['\n', '\r']).as_bytes().to_vec(),
        ))
    }

    /// Host, port, user and database for the replication connection.
    pub fn connect_params(&self) -> Result<ConnectParams, UrlError> {
        let (config, tls) =
            super::tls::pg_config(self.url.expose(), &redact_url(self.url.expose()))?;
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let (host, unix_socket) = match config.get_hosts() {
            [tokio_postgres::config::Host::Tcp(host)] => (host.clone(), None),
            // libpq's convention: the directory holds the socket `.s.PGSQL.<port>`.
            [tokio_postgres::config::Host::Unix(dir)] => (
                dir.display().to_string(),
                Some(dir.join(format!(".s.PGSQL.{port}"))),
            ),
            [] => return Err(format!("{} names no host", redact_url(self.url.expose())).into()),
            _ => return Err("several hosts are not supported: name one".into()),
        };
        let user = config.get_user().ok_or_else(|| {
            format!(
                "{} names no user (postgres://USER@host/db)",
                redact_url(self.url.expose())
            )
        })?;
        let dbname = config.get_dbname().unwrap_or(user).to_owned();
        // As libpq: no TLS over a Unix socket (the kernel carries the bytes).
        let tls = match unix_socket {
            Some(_) => None,
            None => tls.wire(&host)?,
        };
        let password = match self.file_password()? {
            Some(password) => Some(password),
            None => config.get_password().map(<[u8]>::to_vec),
        };
        Ok(ConnectParams {
            host,
            port,
            user: user.to_owned(),
            password,
            dbname,
            connect_timeout: config
                .get_connect_timeout()
                .copied()
                .unwrap_or(Duration::from_secs(10)),
            tls,
            unix_socket,
        })
    }
}

/// `sluice_<name>` with characters Postgres object names should not have replaced by `_`.
fn default_object_name(source: &str) -> String {
    let name: String = source
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("sluice_{name}")
}

/// The URL (or key/value string) without its password, for messages and logs.
pub fn redact_url(url: &str) -> String {
    sluice_core::redact::redact_connection_string(url)
}

impl crate::Section for PostgresSourceConfig {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn validate(&self, key: &str) -> Result<(), crate::ConfigError> {
        PostgresSourceConfig::validate(self, key)
    }

    fn paths_mut(&mut self) -> Vec<&mut std::path::PathBuf> {
        self.password_file.iter_mut().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> PostgresSourceConfig {
        let value: serde_json::Value = serde_json::from_str(toml_text).unwrap();
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn defaults_fill_in_and_validate() {
        let config = parse(r#"{"name": "shop", "url": "postgres://postgres@127.0.0.1:5432/shop"}"#);
        config.validate("sources[0]").unwrap();
        assert_eq!(config.slot_name(), "sluice_shop");
        assert_eq!(config.tables, ["public.*"]);
        assert_eq!(config.snapshot, SnapshotMode::Initial);
        let params = config.connect_params().unwrap();
        assert_eq!(
            (
                params.host.as_str(),
                params.port,
                params.user.as_str(),
                params.dbname.as_str()
            ),
            ("127.0.0.1", 5432, "postgres", "shop")
        );
    }

    #[test]
    fn bad_values_name_their_key() {
        let config = parse(r#"{"name": "shop", "url": "mysql://nope"}"#);
        let err = config.validate("sources[0]").unwrap_err();
        assert_eq!(err.key, "sources[0].url");
        let config = parse(r#"{"name": "shop", "url": "postgres://u@h/db", "tables": ["orders"]}"#);
        assert_eq!(
            config.validate("sources[1]").unwrap_err().key,
            "sources[1].tables"
        );
        let config = parse(r#"{"name": "shop", "url": "postgres://u@h/db", "slot": "Bad-Slot"}"#);
        assert_eq!(config.validate("s").unwrap_err().key, "s.slot");
    }

    #[test]
    fn unknown_fields_are_refused() {
        let value: serde_json::Value =
            serde_json::from_str(r#"{"name": "a", "url": "postgres://u@h/d", "tabels": []}"#)
                .unwrap();
        let err = serde_json::from_value::<PostgresSourceConfig>(value).unwrap_err();
        assert!(err.to_string().contains("tabels"), "{err}");
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
    }
}
