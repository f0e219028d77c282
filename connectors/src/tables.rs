//! What the warehouse sinks (ClickHouse, Iceberg) share about the tables they keep.

use serde::Deserialize;

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
