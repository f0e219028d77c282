//! Configuration of the MySQL/MariaDB sink.

use std::path::PathBuf;

use serde::Deserialize;
use sluice_core::transform::TransformConfig;

use crate::{ConfigError, UrlError};

/// `[[sinks]] kind = "mysql"` (MySQL 8 or MariaDB 10.6+).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MysqlSinkConfig {
    /// Sink name: the key of its rows in the offsets table. Required.
    pub name: String,
    /// `mysql://user[:password]@host[:port]/database` of the target. Required. The user needs
    /// CREATE and ALTER on the target database and the usual DML rights.
    /// TLS as the MySQL client takes it: `?ssl-mode=VERIFY_IDENTITY&ssl-ca=/path/ca.pem`
    /// (`mysql/tls.rs`).
    pub url: sluice_core::redact::SecretUrl,
    /// File whose content (trailing newline trimmed) is the password; overrides one in `url`.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Topics to apply (Avro: `encoding = "avro"` on the source). Required.
    pub topics: Vec<String>,
    /// Database the target tables go to. Default: the URL's database, else the source table's
    /// schema (or database) name.
    #[serde(default)]
    pub database: Option<String>,
    /// Apply only whole log commits (never part of a source transaction). Default false.
    #[serde(default)]
    pub transactional: bool,
    /// With `transactional`: bytes of records held back waiting for the rest of their source
    /// transaction; a larger transaction is applied in parts inside one target transaction
    /// that commits with its last part. Default 8388608 (8 MiB).
    #[serde(default = "default_max_pending_bytes")]
    pub max_pending_bytes: usize,
    /// Log topic for events the target rejects. Default none: they stop the sink.
    #[serde(default)]
    pub dead_letter_topic: Option<String>,
    /// What happens to changes between the log and the sink, in order (core's `transform`).
    #[serde(default)]
    pub transforms: Vec<TransformConfig>,
    /// Table holding the sink's offsets, in the target database. Default `_sluice_offsets`.
    #[serde(default = "default_offsets_table")]
    pub offsets_table: String,
    /// Also record every applied batch in `<offsets_table>_batches`. Default false.
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

impl MysqlSinkConfig {
    pub fn validate(&self, key: &str) -> Result<(), ConfigError> {
        let err = crate::ConfigError::at(key);
        crate::validate_name(key, "sink", &self.name)?;
        self.opts().map_err(|e| err("url", e.0))?;
        if self.topics.is_empty() {
            return Err(err(
                "topics",
                "list at least one topic or pattern, e.g. [\"shop.public.*\"]".into(),
            ));
        }
        if self.pool_size == 0 {
            return Err(err("pool_size", "must be at least 1".into()));
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

    /// The URL read, with the password file, the pool's size and the session settings the
    /// sink's SQL relies on (strict mode, UTC, utf8mb4).
    pub fn opts(&self) -> Result<crate::mysql::tls::MysqlUrl, UrlError> {
        let mut url = crate::mysql::tls::MysqlUrl::read(
            &self.url,
            self.password_file.as_deref(),
            "SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION', time_zone = '+00:00', NAMES utf8mb4",
            "mysql://user@host:3306/db",
        )?;
        url.opts = mysql_async::OptsBuilder::from_opts(url.opts)
            .pool_opts(
                mysql_async::PoolOpts::default().with_constraints(
                    mysql_async::PoolConstraints::new(0, self.pool_size.max(1))
                        .expect("0 <= pool size"),
                ),
            )
            .into();
        Ok(url)
    }
}

fn default_max_pending_bytes() -> usize {
    sluice_core::pipeline::DEFAULT_MAX_PENDING_BYTES
}

sink_section!(MysqlSinkConfig, "mysql", |c| c
    .password_file
    .iter_mut()
    .collect());
