//! `[[sinks.transforms]]` as the config file spells them.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

/// One transform, chosen by `type`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TransformConfig {
    Filter(FilterConfig),
    Route(RouteConfig),
    Columns(ColumnsConfig),
    Mask(MaskConfig),
    Set(SetConfig),
    Unwrap(UnwrapConfig),
    Outbox(OutboxConfig),
}

impl TransformConfig {
    /// The `type` as the config spells it.
    pub fn kind(&self) -> &'static str {
        match self {
            TransformConfig::Filter(_) => "filter",
            TransformConfig::Route(_) => "route",
            TransformConfig::Columns(_) => "columns",
            TransformConfig::Mask(_) => "mask",
            TransformConfig::Set(_) => "set",
            TransformConfig::Unwrap(_) => "unwrap",
            TransformConfig::Outbox(_) => "outbox",
        }
    }

    /// The file paths in the transform (to resolve relative to the config file).
    pub fn paths_mut(&mut self) -> Vec<&mut PathBuf> {
        match self {
            TransformConfig::Mask(MaskConfig {
                salt_file: Some(path),
                ..
            }) => vec![path],
            _ => Vec::new(),
        }
    }

    /// The topic patterns the transform applies to (empty: every topic).
    pub fn topics(&self) -> &[String] {
        match self {
            TransformConfig::Filter(c) => &c.topics,
            TransformConfig::Route(c) => &c.topics,
            TransformConfig::Columns(c) => &c.topics,
            TransformConfig::Mask(c) => &c.topics,
            TransformConfig::Set(c) => &c.topics,
            TransformConfig::Unwrap(c) => &c.topics,
            TransformConfig::Outbox(c) => &c.topics,
        }
    }
}

/// Keeps the changes for which `when` holds.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    #[serde(default)]
    pub topics: Vec<String>,
    pub when: String,
}

/// Renames topics matching `regex` to `replacement` (`$1`, `${1}`, `${name}`; `$$` is `$`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    #[serde(default)]
    pub topics: Vec<String>,
    pub regex: String,
    pub replacement: String,
}

/// Keeps, drops and renames columns.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnsConfig {
    #[serde(default)]
    pub topics: Vec<String>,
    /// Only these columns (and the key); empty: every column.
    #[serde(default)]
    pub include: Vec<String>,
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Old name → new name.
    #[serde(default)]
    pub rename: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MaskWith {
    /// Lowercase hex of HMAC-SHA256(salt, the value's text): equal values stay equal (joins
    /// and keys keep working), the value cannot be read back without the salt.
    #[default]
    Hash,
    /// The text `****`.
    Redact,
    /// Null.
    Null,
}

/// Replaces columns' values (PII).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaskConfig {
    #[serde(default)]
    pub topics: Vec<String>,
    pub columns: Vec<String>,
    #[serde(default, rename = "with")]
    pub with: MaskWith,
    /// `hash`: a file holding the salt (a trailing newline is not part of it)…
    pub salt_file: Option<PathBuf>,
    /// …or an environment variable holding it.
    pub salt_env: Option<String>,
}

/// Adds columns, or overwrites them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetConfig {
    #[serde(default)]
    pub topics: Vec<String>,
    /// Column → template.
    pub fields: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Deletes {
    /// The key with a null value (Kafka's compaction tombstone); database sinks delete.
    #[default]
    Tombstone,
    /// The old row with `__deleted = "true"` (every other row gets `"false"`): a soft delete.
    Flag,
    /// Not delivered at all.
    Drop,
}

/// The row instead of the envelope (Debezium's ExtractNewRecordState).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnwrapConfig {
    #[serde(default)]
    pub topics: Vec<String>,
    #[serde(default)]
    pub deletes: Deletes,
}

/// Debezium's outbox event router.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboxConfig {
    /// The outbox tables' topics (default: topics ending in `.outbox`).
    #[serde(default = "outbox_topics")]
    pub topics: Vec<String>,
    #[serde(default = "outbox_id")]
    pub id: String,
    #[serde(default = "outbox_aggregate_type")]
    pub aggregate_type: String,
    #[serde(default = "outbox_aggregate_id")]
    pub aggregate_id: String,
    #[serde(default = "outbox_event_type")]
    pub event_type: String,
    #[serde(default = "outbox_payload")]
    pub payload: String,
    /// The events' topic: `${aggregatetype}` is the aggregate type column's value.
    #[serde(default = "outbox_route")]
    pub route: String,
    /// More outbox columns the events keep (beside id, type and payload).
    #[serde(default)]
    pub additional: Vec<String>,
}

fn outbox_topics() -> Vec<String> {
    vec!["*.outbox".to_owned()]
}
fn outbox_id() -> String {
    "id".to_owned()
}
fn outbox_aggregate_type() -> String {
    "aggregatetype".to_owned()
}
fn outbox_aggregate_id() -> String {
    "aggregateid".to_owned()
}
fn outbox_event_type() -> String {
    "type".to_owned()
}
fn outbox_payload() -> String {
    "payload".to_owned()
}
fn outbox_route() -> String {
    "outbox.event.${aggregatetype}".to_owned()
}
