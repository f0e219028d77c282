//! The registry's state: the fold of its stored records (subjects, versions, schemas by id,
//! levels, modes) and the record formats themselves. Live changes and the replay at start go
//! through the same `fold`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::store::{Entry, StoreError};
use super::{
    parse_schema, Level, Mode, RegistryError, SchemaType, StoredSchema, SubjectVersion, VersionSpec,
};

#[derive(Debug, Clone, Copy)]
pub(super) struct Version {
    pub(super) id: u32,
    pub(super) deleted: bool,
}

#[derive(Default)]
pub(super) struct State {
    pub(super) schemas: BTreeMap<u32, Arc<StoredSchema>>,
    pub(super) by_text: HashMap<(SchemaType, String), u32>,
    pub(super) subjects: BTreeMap<String, BTreeMap<u32, Version>>,
    /// `None` is the global setting.
    pub(super) compatibility: BTreeMap<Option<String>, Level>,
    pub(super) modes: BTreeMap<Option<String>, Mode>,
    pub(super) next_id: u32,
}

// The stored records (see store.rs for the key layout).
#[derive(Serialize, Deserialize)]
#[serde(tag = "keytype", rename_all = "SCREAMING_SNAKE_CASE")]
pub(super) enum Key {
    Schema { subject: String, version: u32 },
    Config { subject: Option<String> },
    Mode { subject: Option<String> },
    NextId,
}

#[derive(Serialize, Deserialize)]
struct SchemaRecord {
    subject: String,
    version: u32,
    id: u32,
    #[serde(rename = "schemaType")]
    schema_type: SchemaType,
    schema: String,
    deleted: bool,
}

#[derive(Serialize, Deserialize)]
pub(super) struct ConfigRecord {
    #[serde(rename = "compatibilityLevel")]
    pub(super) compatibility_level: String,
}

#[derive(Serialize, Deserialize)]
pub(super) struct ModeRecord {
    pub(super) mode: String,
}

pub(super) fn entry(key: &Key, value: Option<serde_json::Value>) -> Entry {
    (
        Bytes::from(serde_json::to_vec(key).expect("keys serialize")),
        value.map(|v| Bytes::from(v.to_string())),
    )
}

pub(super) fn schema_entry(
    subject: &str,
    version: u32,
    id: u32,
    schema: &StoredSchema,
    deleted: bool,
) -> Entry {
    let record = SchemaRecord {
        subject: subject.to_owned(),
        version,
        id,
        schema_type: schema.schema_type,
        schema: schema.text.clone(),
        deleted,
    };
    entry(
        &Key::Schema {
            subject: subject.to_owned(),
            version,
        },
        Some(serde_json::to_value(record).expect("records serialize")),
    )
}

impl State {
    pub(super) fn fold(&mut self, entries: &[Entry]) -> Result<(), StoreError> {
        for (key, value) in entries {
            let bad = |what: &str| StoreError(format!("unreadable registry record: {what}"));
            let key: Key = serde_json::from_slice(key).map_err(|_| bad("key"))?;
            match key {
                Key::Schema { subject, version } => {
                    let Some(value) = value else {
                        self.remove_version(&subject, version);
                        continue;
                    };
                    let record: SchemaRecord =
                        serde_json::from_slice(value).map_err(|_| bad("schema value"))?;
                    if !self.schemas.contains_key(&record.id) {
                        let (text, parsed) = parse_schema(record.schema_type, &record.schema)
                            .map_err(|e| bad(&e.message))?;
                        self.by_text
                            .insert((record.schema_type, text.clone()), record.id);
                        self.schemas.insert(
                            record.id,
                            Arc::new(StoredSchema {
                                id: record.id,
                                schema_type: record.schema_type,
                                text,
                                parsed,
                            }),
                        );
                    }
                    self.next_id = self.next_id.max(record.id + 1);
                    self.subjects.entry(subject).or_default().insert(
                        version,
                        Version {
                            id: record.id,
                            deleted: record.deleted,
                        },
                    );
                }
                Key::Config { subject } => match value {
                    None => {
                        self.compatibility.remove(&subject);
                    }
                    Some(value) => {
                        let record: ConfigRecord =
                            serde_json::from_slice(value).map_err(|_| bad("config value"))?;
                        let level = Level::parse(&record.compatibility_level)
                            .map_err(|e| bad(&e.message))?;
                        self.compatibility.insert(subject, level);
                    }
                },
                Key::Mode { subject } => match value {
                    None => {
                        self.modes.remove(&subject);
                    }
                    Some(value) => {
                        let record: ModeRecord =
                            serde_json::from_slice(value).map_err(|_| bad("mode value"))?;
                        let mode = Mode::parse(&record.mode).map_err(|e| bad(&e.message))?;
                        self.modes.insert(subject, mode);
                    }
                },
                Key::NextId => {
                    let next: u32 = value
                        .as_deref()
                        .and_then(|v| serde_json::from_slice(v).ok())
                        .ok_or_else(|| bad("next id"))?;
                    self.next_id = self.next_id.max(next);
                }
            }
        }
        Ok(())
    }

    /// Forgets a permanently deleted version, and its schema when nothing refers to it.
    pub(super) fn remove_version(&mut self, subject: &str, version: u32) {
        let Some(versions) = self.subjects.get_mut(subject) else {
            return;
        };
        let Some(removed) = versions.remove(&version) else {
            return;
        };
        if versions.is_empty() {
            self.subjects.remove(subject);
        }
        let used = self
            .subjects
            .values()
            .any(|versions| versions.values().any(|v| v.id == removed.id));
        if !used {
            if let Some(schema) = self.schemas.remove(&removed.id) {
                self.by_text
                    .remove(&(schema.schema_type, schema.text.clone()));
            }
        }
    }

    pub(super) fn level(&self, subject: &str) -> Level {
        self.compatibility
            .get(&Some(subject.to_owned()))
            .or_else(|| self.compatibility.get(&None))
            .copied()
            .unwrap_or(Level::DEFAULT)
    }

    pub(super) fn mode(&self, subject: Option<&str>) -> Mode {
        subject
            .and_then(|s| self.modes.get(&Some(s.to_owned())))
            .or_else(|| self.modes.get(&None))
            .copied()
            .unwrap_or(Mode::ReadWrite)
    }

    pub(super) fn versions(&self, subject: &str) -> Result<&BTreeMap<u32, Version>, RegistryError> {
        self.subjects
            .get(subject)
            .ok_or_else(|| RegistryError::subject_not_found(subject))
    }

    /// The version a spec names; `Latest` is the newest live (or, with `deleted`, any) one.
    pub(super) fn resolve(
        &self,
        subject: &str,
        spec: VersionSpec,
        deleted: bool,
    ) -> Result<(u32, Version), RegistryError> {
        let versions = self.versions(subject)?;
        let found = match spec {
            VersionSpec::Latest => versions
                .iter()
                .rev()
                .find(|(_, v)| deleted || !v.deleted)
                .map(|(n, v)| (*n, *v)),
            VersionSpec::Number(n) => versions
                .get(&n)
                .filter(|v| deleted || !v.deleted)
                .map(|v| (n, *v)),
        };
        match (found, spec) {
            (Some(found), _) => Ok(found),
            (None, VersionSpec::Latest) => Err(RegistryError::subject_not_found(subject)),
            (None, VersionSpec::Number(n)) => Err(RegistryError::version_not_found(subject, n)),
        }
    }

    pub(super) fn view(&self, subject: &str, version: u32, v: Version) -> SubjectVersion {
        let schema = &self.schemas[&v.id];
        SubjectVersion {
            subject: subject.to_owned(),
            version,
            id: v.id,
            schema_type: schema.schema_type,
            schema: schema.text.clone(),
            deleted: v.deleted,
        }
    }

    pub(super) fn live(&self, subject: &str) -> impl Iterator<Item = (u32, Version)> + '_ {
        self.subjects
            .get(subject)
            .into_iter()
            .flat_map(|versions| versions.iter())
            .filter(|(_, v)| !v.deleted)
            .map(|(n, v)| (*n, *v))
    }
}
