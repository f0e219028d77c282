//! Configuration of the OpenSearch/Elasticsearch sink.

use std::path::PathBuf;

use serde::Deserialize;
use sluice_core::redact::SecretUrl;
use sluice_core::transform::TransformConfig;

use crate::ConfigError;

/// `[[sinks]] kind = "opensearch"`: tables kept in step in OpenSearch (or Elasticsearch)
/// indexes, one document per row.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenSearchSinkConfig {
    /// Sink name: the id of its offsets document. Required.
    pub name: String,
    /// The cluster, `http://host:9200` or `https://user:password@host:9200`. Required.
    pub url: SecretUrl,
    /// File whose content (trailing newline trimmed) is the password; overrides one in `url`.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// PEM file of the CA that signed the cluster's certificate (https). Default: the
    /// system's CA store.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Topics to index: names or `*` patterns (`shop.public.*`). Required.
    pub topics: Vec<String>,
    /// The index a topic's documents go to: `{topic}`, `{source}`, `{schema}` and `{table}`
    /// are replaced, the result lowercased. Default `"{topic}"`.
    #[serde(default = "default_index")]
    pub index: String,
    /// `create` (default): indexes sluice creates get a mapping made from the table's schema
    /// (docs/search.md); `none`: sluice sends no mapping, leaving it to index templates or
    /// dynamic mapping.
    #[serde(default)]
    pub mapping: MappingMode,
    /// How json columns are mapped: `object` (default: fields searchable with their own
    /// types; a value that is not an object or an array of objects is rejected),
    /// `flat_object` (OpenSearch 2.7+, Elasticsearch's `flattened`: objects, leaves searchable
    /// as keywords) or `stored` (any JSON kept in the document, not searchable).
    #[serde(default)]
    pub json: JsonMapping,
    /// Shards and replicas of the indexes sluice creates. Default: the cluster's.
    #[serde(default)]
    pub number_of_shards: Option<u32>,
    #[serde(default)]
    pub number_of_replicas: Option<u32>,
    /// `refresh_interval` of the indexes sluice creates (`"1s"`, `"30s"`). Default: the
    /// cluster's (1 s).
    #[serde(default)]
    pub refresh_interval: Option<String>,
    /// While a snapshot loads an index, turn its refresh off and its replicas to 0, and put
    /// both back once the load is done (or at the next start after a crash). Default true.
    #[serde(default = "default_true")]
    pub relax_during_snapshot: bool,
    /// Most bytes of one `_bulk` request. Default 5242880 (5 MiB).
    #[serde(default = "default_bulk_bytes")]
    pub bulk_bytes: usize,
    /// Most documents of one `_bulk` request. Default 5000.
    #[serde(default = "default_bulk_docs")]
    pub bulk_docs: usize,
    /// `_bulk` requests in flight at once. Default 2.
    #[serde(default = "default_in_flight")]
    pub max_in_flight: usize,
    /// Index holding the sink's offsets (one document per sink). Default `sluice_offsets`.
    #[serde(default = "default_offsets_index")]
    pub offsets_index: String,
    /// Topic of the log that receives documents the index rejects (a value its mapping
    /// refuses), with the server's reason in a header. Default none: a rejection stops the
    /// sink with that reason.
    #[serde(default)]
    pub dead_letter_topic: Option<String>,
    /// What happens to changes between the log and the sink, in order (core's `transform`).
    #[serde(default)]
    pub transforms: Vec<TransformConfig>,
}

/// Whether sluice maps the indexes it creates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MappingMode {
    #[default]
    Create,
    None,
}

/// How json columns are mapped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JsonMapping {
    #[default]
    Object,
    FlatObject,
    Stored,
}

fn default_index() -> String {
    "{topic}".into()
}

fn default_true() -> bool {
    true
}

fn default_bulk_bytes() -> usize {
    5 << 20
}

fn default_bulk_docs() -> usize {
    5000
}

fn default_in_flight() -> usize {
    2
}

fn default_offsets_index() -> String {
    "sluice_offsets".into()
}

impl OpenSearchSinkConfig {
    pub fn validate(&self, key: &str) -> Result<(), ConfigError> {
        let err = crate::ConfigError::at(key);
        crate::validate_name(key, "sink", &self.name)?;
        let url = self.url.expose();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(err(
                "url",
                format!(
                    "{} is not an http:// or https:// URL of the cluster",
                    self.url
                ),
            ));
        }
        if self.topics.is_empty() {
            return Err(err(
                "topics",
                "list at least one topic or pattern, e.g. [\"shop.public.*\"]".into(),
            ));
        }
        if let Some(problem) = super::super::check_template(&self.index) {
            return Err(err("index", problem));
        }
        if self.bulk_bytes < 1024 {
            return Err(err("bulk_bytes", "must be at least 1024".into()));
        }
        if self.bulk_docs == 0 {
            return Err(err("bulk_docs", "must be at least 1".into()));
        }
        if self.max_in_flight == 0 {
            return Err(err("max_in_flight", "must be at least 1".into()));
        }
        if let Some(problem) = super::index_name_problem(&self.offsets_index) {
            return Err(err("offsets_index", problem));
        }
        if self.number_of_shards == Some(0) {
            return Err(err("number_of_shards", "must be at least 1".into()));
        }
        Ok(())
    }
}

sink_section!(OpenSearchSinkConfig, "opensearch", |c| c
    .password_file
    .iter_mut()
    .chain(c.ca_file.iter_mut())
    .collect());
