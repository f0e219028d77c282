//! What the warehouse sinks (ClickHouse, Iceberg) share about the tables they keep.

use serde::Deserialize;

use crate::ConfigError;

/// Which tables a sink keeps for a source table: its current state, a changelog of every
/// change, or both.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    #[default]
    Current,
    Changelog,
    Both,
}

impl Mode {
    pub fn current(self) -> bool {
        matches!(self, Mode::Current | Mode::Both)
    }

    pub fn changelog(self) -> bool {
        matches!(self, Mode::Changelog | Mode::Both)
    }
}

/// Checks the table templates of a sink that keeps current-state and changelog tables:
/// `key.table` and `key.changelog_table` must be valid templates, and distinct when both
/// kinds are kept.
pub fn check_templates(
    key: &str,
    mode: Mode,
    table: &str,
    changelog_table: &str,
) -> Result<(), ConfigError> {
    let err = crate::ConfigError::at(key);
    for (field, template) in [("table", table), ("changelog_table", changelog_table)] {
        if let Some(problem) = crate::names::check_template(template, "a table") {
            return Err(err(field, problem));
        }
    }
    if mode == Mode::Both && table == changelog_table {
        return Err(err(
            "changelog_table",
            "is the same template as table: give the changelog its own name, e.g. \
             \"{table}_changes\""
                .into(),
        ));
    }
    Ok(())
}
