//! Configuration of the JSON-lines sink.

use std::path::PathBuf;

use serde::Deserialize;

use crate::ConfigError;

/// `[[sinks]] kind = "jsonl"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonlSinkConfig {
    /// Sink name; its consumer group in the log is `sink.<name>`. Required.
    pub name: String,
    /// The file to append to (created if missing). Required.
    pub path: PathBuf,
    /// Topics to deliver: names or `*` patterns (`shop.public.*`). Required.
    pub topics: Vec<String>,
    /// Transforms (`[[sinks.transforms]]`): the lines are then the transformed changes
    /// (`reshape.rs`).
    #[serde(default)]
    pub transforms: Vec<sluice_core::transform::TransformConfig>,
    /// Where changes a transform rejects go (a log topic); without it they stop the sink.
    #[serde(default)]
    pub dead_letter_topic: Option<String>,
}

impl JsonlSinkConfig {
    pub fn validate(&self, key: &str) -> Result<(), ConfigError> {
        let err = |field: &str, message: &str| ConfigError {
            key: format!("{key}.{field}"),
            message: message.to_owned(),
        };
        crate::validate_name(key, "sink", &self.name)?;
        if self.path.as_os_str().is_empty() || self.path.file_name().is_none() {
            return Err(err("path", "name a file, e.g. \"data/audit.jsonl\""));
        }
        if self.topics.is_empty() {
            return Err(err(
                "topics",
                "list at least one topic or pattern, e.g. [\"shop.public.*\"]",
            ));
        }
        if let Some(topic) = &self.dead_letter_topic {
            if topic.is_empty() || topic.starts_with('_') {
                return Err(err(
                    "dead_letter_topic",
                    "name a log topic, e.g. \"file.dead_letters\"",
                ));
            }
        }
        Ok(())
    }

    /// Where the committed length and offsets are kept.
    pub fn offsets_path(&self) -> PathBuf {
        let mut name = self.path.file_name().unwrap_or_default().to_os_string();
        name.push(".offsets.json");
        self.path.with_file_name(name)
    }
}

sink_section!(JsonlSinkConfig, "jsonl", |c| vec![&mut c.path]);
