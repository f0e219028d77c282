//! Configuration of the MySQL/MariaDB source.

use std::path::PathBuf;

use serde::Deserialize;

use crate::{AvroDecimals, ConfigError, Encoding, UrlError};

/// `[[sources]] kind = "mysql"` (MySQL 8 or MariaDB 10.6+).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MysqlSourceConfig {
    /// Source name: the topic prefix (`<name>.<database>.<table>`) and the log writer id.
    pub name: String,
    /// `mysql://user[:password]@host[:port]`. Required. The user needs REPLICATION SLAVE,
    /// REPLICATION CLIENT and SELECT on the captured tables.
    /// TLS as the MySQL client takes it: `?ssl-mode=VERIFY_IDENTITY&ssl-ca=/path/ca.pem`
    /// (`mysql/tls.rs`).
    pub url: sluice_core::redact::SecretUrl,
    /// File whose content (trailing newline trimmed) is the password; overrides one in `url`.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Tables to capture as `database.table`; `*` matches any run of characters. Required.
    pub tables: Vec<String>,
    /// `initial` (snapshot on first start, then stream), `never`, or `when_needed` (also
    /// snapshot again when the binlog needed to resume was purged). Default `initial`.
    #[serde(default)]
    pub snapshot: SnapshotMode,
    /// Where to start streaming when the log has no checkpoint and `snapshot = "never"`: a
    /// position as `sluice status` prints it (`mariadb-gtid:0-1-42`, `mysql-gtid:uuid:1-42`,
    /// `binlog:mysql-bin.000003:4`). Default: the end of the binlog when sluice starts.
    #[serde(default)]
    pub start_at: Option<String>,
    /// Server id sluice registers with as a replica; unique among the server's replicas.
    /// Default 8737.
    #[serde(default = "default_server_id")]
    pub server_id: u32,
    /// Zero dates (`0000-00-00`, `… 00:00:00`): `null` (default) or `error`.
    #[serde(default)]
    pub zero_dates: ZeroDates,
    /// Follow each delete with a tombstone. Default true.
    #[serde(default = "default_true")]
    pub tombstones: bool,
    /// Transaction metadata, as Debezium's `provide.transaction.metadata`: each event's
    /// `transaction.data_collection_order`, and `BEGIN`/`END` records (the END with the
    /// transaction's event count per table) in the topic `<name>.transaction`. Default false.
    #[serde(default)]
    pub transaction_metadata: bool,
    /// `json` (default) or `avro`.
    #[serde(default)]
    pub encoding: Encoding,
    /// With `encoding = "avro"`: `precise` (default) or `string`.
    #[serde(default)]
    pub avro_decimals: AvroDecimals,
    /// A batch closes at the first transaction end after this many events. Default 5000.
    #[serde(default = "default_max_batch_events")]
    pub max_batch_events: usize,
    /// …or, when no more events are waiting, this many milliseconds after its first event: the
    /// longest a change waits to be batched with the ones after it. While events keep arriving
    /// (catching up) batches fill to `max_batch_events` instead. Default 10.
    #[serde(default = "default_max_batch_ms")]
    pub max_batch_ms: u64,
    /// Rows per snapshot query (tables are read in primary-key order, streamed). Default 50000.
    #[serde(default = "default_snapshot_chunk")]
    pub snapshot_chunk_rows: usize,
    /// Connections reading the snapshot in parallel (tables with an integer key are split in
    /// key ranges). More than 1 takes a global read lock for the instant the snapshot
    /// transactions start (needs RELOAD); it pays off with spare cores on both sides. Default 1
    /// (on MariaDB: no lock at all).
    #[serde(default = "default_snapshot_parallelism")]
    pub snapshot_parallelism: usize,
    /// A table (`database.table`) whose rows ask the source for on-demand snapshots while it
    /// streams: `sluice snapshot` inserts into it, and so can anyone with SQL (Debezium's
    /// signal table: `id VARCHAR(64) PRIMARY KEY, type VARCHAR(32) NOT NULL, data TEXT`).
    /// Default: none (no on-demand snapshots).
    #[serde(default)]
    pub signal_table: Option<String>,
}

fn default_snapshot_parallelism() -> usize {
    1
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
pub enum ZeroDates {
    #[default]
    Null,
    Error,
}

fn default_server_id() -> u32 {
    8737
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
fn default_snapshot_chunk() -> usize {
    50_000
}

impl MysqlSourceConfig {
    pub fn validate(&self, key: &str) -> Result<(), ConfigError> {
        let err = crate::ConfigError::at(key);
        crate::validate_name(key, "source", &self.name)?;
        self.opts().map_err(|e| err("url", e.0))?;
        if self.tables.is_empty() {
            return Err(err(
                "tables",
                "list at least one table pattern, e.g. [\"shop.*\"]".into(),
            ));
        }
        for pattern in &self.tables {
            if pattern.split('.').count() != 2 || pattern.split('.').any(str::is_empty) {
                return Err(err(
                    "tables",
                    format!("{pattern:?} is not database.table (patterns may use *)"),
                ));
            }
        }
        if let Some(start) = &self.start_at {
            let parsed: Result<sluice_core::position::Position, _> = start.parse();
            match parsed {
                Ok(sluice_core::position::Position::PgLsn(_)) | Err(_) => {
                    return Err(err(
                        "start_at",
                        format!("{start:?} is not a MySQL position (mariadb-gtid:…, mysql-gtid:…, binlog:file:offset)"),
                    ))
                }
                Ok(_) => {}
            }
        }
        if let Some(table) = &self.signal_table {
            let parts: Vec<&str> = table.split('.').collect();
            if parts.len() != 2 || parts.iter().any(|p| p.is_empty() || p.contains('*')) {
                return Err(err(
                    "signal_table",
                    format!("{table:?} is not database.table, e.g. \"shop.sluice_signal\""),
                ));
            }
        }
        if self.server_id == 0 {
            return Err(err("server_id", "must not be 0".into()));
        }
        if self.max_batch_events == 0 || self.snapshot_chunk_rows == 0 {
            return Err(err("max_batch_events", "must be at least 1".into()));
        }
        Ok(())
    }

    /// The signal table as (database, table).
    pub(crate) fn signal_table(&self) -> Option<(String, String)> {
        let (database, table) = self.signal_table.as_deref()?.split_once('.')?;
        Some((database.to_owned(), table.to_owned()))
    }

    /// The URL read, with the session settings the source relies on (UTC, utf8mb4).
    pub fn opts(&self) -> Result<crate::mysql::tls::MysqlUrl, UrlError> {
        crate::mysql::tls::MysqlUrl::read(
            &self.url,
            self.password_file.as_deref(),
            "SET SESSION time_zone = '+00:00', NAMES utf8mb4",
            "mysql://user@host:3306",
        )
    }
}

impl crate::Section for MysqlSourceConfig {
    fn kind(&self) -> &'static str {
        "mysql"
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn validate(&self, key: &str) -> Result<(), crate::ConfigError> {
        MysqlSourceConfig::validate(self, key)
    }

    fn paths_mut(&mut self) -> Vec<&mut std::path::PathBuf> {
        self.password_file.iter_mut().collect()
    }
}
