//! Configuration of the Postgres sink.

use std::path::PathBuf;

use serde::Deserialize;
use sluice_core::transform::TransformConfig;

use crate::{ConfigError, UrlError};

/// `[[sinks]] kind = "postgres"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSinkConfig {
    /// Sink name: the key of its rows in the offsets table. Required.
    pub name: String,
    /// `postgres://user[:password]@host[:port]/database` of the target. Required. The user needs
    /// CREATE on the target schema (tables are created and altered) and the usual DML rights.
    pub url: sluice_core::redact::SecretUrl,
    /// File whose content (trailing newline trimmed) is the password; overrides one in `url`.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Topics to apply: names or `*` patterns (`shop.public.*`). Required. Their records must
    /// be Avro (`encoding = "avro"` on the source): the sink creates tables from their schemas.
    pub topics: Vec<String>,
    /// Schema the target tables go to. Default: the source table's own schema (for MySQL
    /// sources, its database name).
    #[serde(default)]
    pub schema: Option<String>,
    /// Apply only whole log commits, so the target never shows part of a source transaction.
    /// Default false (batches may end inside a transaction; each batch is still atomic).
    #[serde(default)]
    pub transactional: bool,
    /// With `transactional`: bytes of records held back waiting for the rest of their source
    /// transaction; a larger transaction is applied in parts inside one target transaction
    /// that commits with its last part. Default 8388608 (8 MiB).
    #[serde(default = "default_max_pending_bytes")]
    pub max_pending_bytes: usize,
    /// Topic of the log that receives events the target rejects (with the error in a header).
    /// Default none: a rejected event stops the sink with the database's error.
    #[serde(default)]
    pub dead_letter_topic: Option<String>,
    /// What happens to changes between the log and the sink, in order (core's `transform`).
    #[serde(default)]
    pub transforms: Vec<TransformConfig>,
    /// Table (in the target's `public` schema unless qualified) holding the sink's offsets,
    /// written in the same transaction as the rows. Default `_sluice_offsets`.
    #[serde(default = "default_offsets_table")]
    pub offsets_table: String,
    /// Also record every applied batch (topic, partition, first and last offset) in
    /// `<offsets_table>_batches`, for audits. Default false.
    #[serde(default)]
    pub batch_history: bool,
    /// Connections in the pool. Default 2.
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
}

fn default_offsets_table() -> String {
    "_sluice_offsets".to_owned()
}

fn default_pool_size() -> usize {
    2
}

impl PostgresSinkConfig {
    pub fn validate(&self, key: &str) -> Result<(), ConfigError> {
        let err = crate::ConfigError::at(key);
        crate::validate_name(key, "sink", &self.name)?;
        self.pg_config().map_err(|e| err("url", e.0))?;
        if self.topics.is_empty() {
            return Err(err(
                "topics",
                "list at least one topic or pattern, e.g. [\"shop.public.*\"]".into(),
            ));
        }
        if self.pool_size == 0 {
            return Err(err("pool_size", "must be at least 1".into()));
        }
        if self.offsets_table.is_empty() {
            return Err(err("offsets_table", "name a table".into()));
        }
        if let Some(topic) = &self.dead_letter_topic {
            if topic.is_empty() || topic.starts_with('_') {
                return Err(err(
                    "dead_letter_topic",
                    "name a topic, e.g. \"replica.dead_letters\"".into(),
                ));
            }
        }
        Ok(())
    }

    /// The connection settings (password from `password_file` when set).
    pub fn pg_config(
        &self,
    ) -> Result<(tokio_postgres::Config, crate::postgres::tls::TlsSettings), UrlError> {
        let (mut config, tls) = crate::postgres::tls::pg_config(
            self.url.expose(),
            &sluice_core::redact::redact_connection_string(self.url.expose()),
        )?;
        if config.get_hosts().is_empty() {
            return Err("the URL names no host".into());
        }
        if config.get_user().is_none() {
            return Err("the URL names no user (postgres://USER@host/db)".into());
        }
        if let Some(path) = &self.password_file {
            let password = std::fs::read_to_string(path)
                .map_err(|e| format!("password_file {}: {e}", path.display()))?;
            config.password(password.trim_end_matches(['\n', '\r']));
        }
        config.application_name("sluice-sink");
        Ok((config, tls))
    }

    /// `(schema, table)` of the offsets table.
    pub fn offsets_table(&self) -> (String, String) {
        match self.offsets_table.split_once('.') {
            Some((schema, table)) => (schema.to_owned(), table.to_owned()),
            None => ("public".to_owned(), self.offsets_table.clone()),
        }
    }
}

fn default_max_pending_bytes() -> usize {
    sluice_core::pipeline::DEFAULT_MAX_PENDING_BYTES
}

sink_section!(PostgresSinkConfig, "postgres", |c| c
    .password_file
    .iter_mut()
    .collect());
