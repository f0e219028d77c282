//! Configuration of the Typesense sink.

use std::path::PathBuf;

use serde::Deserialize;
use sluice_core::redact::{Secret, SecretUrl};
use sluice_core::transform::TransformConfig;

use crate::ConfigError;

/// `[[sinks]] kind = "typesense"`: tables kept in step in Typesense collections, one document
/// per row.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TypesenseSinkConfig {
    /// Sink name: the id of its offsets document. Required.
    pub name: String,
    /// The server, `http://host:8108`. Required.
    pub url: SecretUrl,
    /// The admin API key (it creates collections). One of `api_key`, `api_key_file` or the
    /// environment variable `TYPESENSE_API_KEY` is required.
    #[serde(default)]
    pub api_key: Option<Secret>,
    /// File whose content (trailing newline trimmed) is the API key.
    #[serde(default)]
    pub api_key_file: Option<PathBuf>,
    /// PEM file of the CA that signed the server's certificate (https). Default: the system's
    /// CA store.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Topics to index: names or `*` patterns. Required.
    pub topics: Vec<String>,
    /// The collection a topic's documents go to: `{topic}`, `{source}`, `{schema}`, `{table}`
    /// replaced, lowercased. Default `"{topic}"`.
    #[serde(default = "default_collection")]
    pub collection: String,
    /// Most documents of one import request. Default 2000.
    #[serde(default = "default_batch_docs")]
    pub batch_docs: usize,
    /// Import requests in flight at once (documents of different keys). Default 2.
    #[serde(default = "default_in_flight")]
    pub max_in_flight: usize,
    /// Collection holding the sink's offsets (one document per sink). Default
    /// `sluice_offsets`.
    #[serde(default = "default_offsets_collection")]
    pub offsets_collection: String,
    /// Topic of the log that receives documents the collection rejects, with the server's
    /// reason. Default none: a rejection stops the sink with that reason.
    #[serde(default)]
    pub dead_letter_topic: Option<String>,
    /// What happens to changes between the log and the sink, in order (core's `transform`).
    #[serde(default)]
    pub transforms: Vec<TransformConfig>,
}

fn default_collection() -> String {
    "{topic}".into()
}

fn default_batch_docs() -> usize {
    2000
}

fn default_in_flight() -> usize {
    2
}

fn default_offsets_collection() -> String {
    "sluice_offsets".into()
}

/// The environment variable holding the API key when the config gives none.
pub const API_KEY_ENV: &str = "TYPESENSE_API_KEY";

impl TypesenseSinkConfig {
    pub fn validate(&self, key: &str) -> Result<(), ConfigError> {
        let err = crate::ConfigError::at(key);
        crate::validate_name(key, "sink", &self.name)?;
        let url = self.url.expose();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(err(
                "url",
                format!(
                    "{} is not an http:// or https:// URL of the server",
                    self.url
                ),
            ));
        }
        if self.api_key.is_none()
            && self.api_key_file.is_none()
            && std::env::var_os(API_KEY_ENV).is_none()
        {
            return Err(err(
                "api_key",
                format!("give the admin API key: api_key, api_key_file or ${API_KEY_ENV}"),
            ));
        }
        if self.topics.is_empty() {
            return Err(err(
                "topics",
                "list at least one topic or pattern, e.g. [\"shop.public.*\"]".into(),
            ));
        }
        if let Some(problem) = super::super::check_template(&self.collection) {
            return Err(err("collection", problem));
        }
        if self.batch_docs == 0 {
            return Err(err("batch_docs", "must be at least 1".into()));
        }
        if self.max_in_flight == 0 {
            return Err(err("max_in_flight", "must be at least 1".into()));
        }
        if self.offsets_collection.is_empty() {
            return Err(err("offsets_collection", "name a collection".into()));
        }
        Ok(())
    }

    /// The API key: `api_key`, else `api_key_file`'s content, else the environment's.
    pub fn resolve_api_key(&self) -> Result<String, String> {
        if let Some(key) = &self.api_key {
            return Ok(key.expose().to_owned());
        }
        if let Some(path) = &self.api_key_file {
            return std::fs::read_to_string(path)
                .map(|text| text.trim_end_matches(['\n', '\r']).to_owned())
                .map_err(|e| format!("api_key_file {}: {e}", path.display()));
        }
        std::env::var(API_KEY_ENV)
            .map_err(|_| format!("no api_key, api_key_file or ${API_KEY_ENV}"))
    }
}

sink_section!(TypesenseSinkConfig, "typesense", |c| c
    .api_key_file
    .iter_mut()
    .chain(c.ca_file.iter_mut())
    .collect());
