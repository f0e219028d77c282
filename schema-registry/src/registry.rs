//! A schema registry compatible with Confluent Schema Registry: subjects with versions, global
//! ids, compatibility levels and modes, kept as records in the log (`store.rs`) and held in
//! memory as their fold (`state.rs`). `http.rs` serves it over Confluent's REST API; encoders
//! register through [`Registry::register`] directly.
//!
//! Every change is made the same way: build the records that express it, append them durably,
//! then fold them into the state, the same fold that replays the topic at start. What was
//! acknowledged is what a restart sees.

pub mod compat;
pub mod error;
mod state;
pub mod store;

use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

pub use self::compat::Level;
pub use self::error::RegistryError;
use self::state::{entry, schema_entry, ConfigRecord, Key, ModeRecord, State, Version};
use self::store::{Entry, SchemaStore};

/// How long a registration goes on trying while the store fails (or other processes keep
/// writing it first) before the error is returned.
const STORE_PATIENCE: std::time::Duration = std::time::Duration::from_secs(120);

/// The kinds of schema the registry accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum SchemaType {
    Avro,
    Json,
}

impl SchemaType {
    pub fn parse(text: Option<&str>) -> Result<SchemaType, RegistryError> {
        match text.map(str::to_ascii_uppercase).as_deref() {
            None | Some("AVRO") => Ok(SchemaType::Avro),
            Some("JSON") => Ok(SchemaType::Json),
            Some(other) => Err(RegistryError::invalid_schema(format!(
                "schema type {other} is not supported (AVRO and JSON are)"
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SchemaType::Avro => "AVRO",
            SchemaType::Json => "JSON",
        }
    }
}

/// A parsed schema.
#[derive(Debug)]
pub enum Parsed {
    Avro(apache_avro::Schema),
    Json(serde_json::Value),
}

/// A schema the registry holds under a global id.
#[derive(Debug)]
pub struct StoredSchema {
    pub id: u32,
    pub schema_type: SchemaType,
    /// The schema text, compacted (no insignificant whitespace); also its identity: two
    /// schemas that differ in anything but whitespace, defaults included, are different.
    pub text: String,
    pub parsed: Parsed,
}

/// Parses and compacts a schema text.
pub fn parse_schema(
    schema_type: SchemaType,
    text: &str,
) -> Result<(String, Parsed), RegistryError> {
    let json: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| RegistryError::invalid_schema(format!("not JSON: {e}")))?;
    let compact = json.to_string();
    let parsed = match schema_type {
        SchemaType::Avro => Parsed::Avro(
            apache_avro::Schema::parse(&json)
                .map_err(|e| RegistryError::invalid_schema(format!("not an Avro schema: {e}")))?,
        ),
        SchemaType::Json => {
            if !(json.is_object() || json.is_boolean()) {
                return Err(RegistryError::invalid_schema(
                    "a JSON Schema must be an object or a boolean",
                ));
            }
            Parsed::Json(json)
        }
    };
    Ok((compact, parsed))
}

/// A subject version as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectVersion {
    pub subject: String,
    pub version: u32,
    pub id: u32,
    pub schema_type: SchemaType,
    pub schema: String,
    pub deleted: bool,
}

/// Which version a request means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionSpec {
    Number(u32),
    Latest,
}

impl VersionSpec {
    /// `1`…`2^31-1`, `latest` or `-1`; anything else is 42202.
    pub fn parse(text: &str) -> Result<VersionSpec, RegistryError> {
        if text == "latest" || text == "-1" {
            return Ok(VersionSpec::Latest);
        }
        match text.parse::<i64>() {
            Ok(n) if (1..=i64::from(i32::MAX)).contains(&n) => Ok(VersionSpec::Number(n as u32)),
            _ => Err(RegistryError::invalid_version(text)),
        }
    }
}

/// What a subject (or the registry as a whole) accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    ReadWrite,
    ReadOnly,
    Import,
}

impl Mode {
    pub fn parse(text: &str) -> Result<Mode, RegistryError> {
        match text.to_ascii_uppercase().as_str() {
            "READWRITE" => Ok(Mode::ReadWrite),
            "READONLY" => Ok(Mode::ReadOnly),
            "IMPORT" => Ok(Mode::Import),
            _ => Err(RegistryError::invalid_mode(text)),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::ReadWrite => "READWRITE",
            Mode::ReadOnly => "READONLY",
            Mode::Import => "IMPORT",
        }
    }
}

/// A registration request.
#[derive(Debug, Clone)]
pub struct NewSchema<'a> {
    pub schema_type: SchemaType,
    pub text: &'a str,
    /// Only in IMPORT mode: the id and version to register under.
    pub id: Option<u32>,
    pub version: Option<u32>,
}

/// The registry. Cheap to share as `Arc<Registry>`; calls block on storage I/O when they
/// change something.
pub struct Registry {
    state: Mutex<State>,
    store: Box<dyn SchemaStore>,
    /// Ids `schema_anywhere` looked for in vain: asked again, they are not looked for.
    missing: Mutex<std::collections::HashSet<u32>>,
}

impl Registry {
    /// Replays `store` into memory.
    pub fn open(store: impl SchemaStore) -> Result<Registry, RegistryError> {
        let mut state = State {
            next_id: 1,
            ..State::default()
        };
        let entries = store.load().map_err(RegistryError::store)?;
        state.fold(&entries).map_err(RegistryError::store)?;
        Ok(Registry {
            state: Mutex::new(state),
            store: Box::new(store),
            missing: Mutex::default(),
        })
    }

    /// As [`schema`](Self::schema), and for an id this registry does not know, reads the store
    /// again first: another process sharing the store (a log on Kafka whose sources run
    /// elsewhere) may have registered it since. (A registration is committed before any record
    /// names its id, so one read finds it.) An id still unknown is not looked for again.
    pub fn schema_anywhere(&self, id: u32) -> Result<Arc<StoredSchema>, RegistryError> {
        match self.schema(id) {
            Err(err) if err.code == 40403 => {}
            found => return found,
        }
        let mut missing = self
            .missing
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if !missing.contains(&id) {
            self.reload()?;
        }
        let found = self.schema(id);
        if found.is_err() {
            missing.insert(id);
        }
        found
    }

    /// Reads the store again into memory (holding the state, as a registration does, so that
    /// none is lost in between): what was written since the last read where the store can
    /// tell, else all of it.
    fn reload(&self) -> Result<(), RegistryError> {
        let mut state = self.state();
        if let Some(entries) = self.store.load_more().map_err(RegistryError::store)? {
            return state.fold(&entries).map_err(RegistryError::store);
        }
        let mut fresh = State {
            next_id: 1,
            ..State::default()
        };
        let entries = self.store.load().map_err(RegistryError::store)?;
        fresh.fold(&entries).map_err(RegistryError::store)?;
        *state = fresh;
        Ok(())
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    fn commit(&self, state: &mut State, entries: Vec<Entry>) -> Result<(), RegistryError> {
        self.store.append(&entries).map_err(RegistryError::store)?;
        state.fold(&entries).map_err(RegistryError::store)
    }

    /// Registers `new` under `subject` and returns its global id. A schema the subject already
    /// holds returns its id unchanged; a new one is checked against the subject's compatibility
    /// level first (409 with the reasons when it fails).
    pub fn register(&self, subject: &str, new: &NewSchema<'_>) -> Result<u32, RegistryError> {
        // A write that another process's claim fenced is made again once this one has claimed
        // the store back and read what the other wrote (its ids are not given twice).
        if let Some(id) = self.held(subject, new)? {
            // Nothing to write: no claim on a store other processes write too.
            return Ok(id);
        }
        // Processes that register at once take turns at the store (see `store.rs`); a store
        // that keeps failing for longer than this is reported.
        let started = std::time::Instant::now();
        let mut attempt = 0u32;
        loop {
            // (A claim that fails, or a store read again that does not fold, is returned at
            // once: the state an id would be chosen from is not known to be whole.)
            self.claim_store()?;
            match self.register_once(subject, new) {
                Err(err)
                    if err.code == 50001
                        && started.elapsed() < STORE_PATIENCE
                        && self.store.working() =>
                {
                    attempt += 1;
                    if attempt.is_multiple_of(10) {
                        tracing::warn!(
                            subject,
                            attempts = attempt,
                            error = %err.message,
                            "registering a schema: the store is written by other processes \
                             at the same moment, or failing; trying again"
                        );
                    }
                }
                registered => return registered,
            }
        }
    }

    /// The id of `new` when `subject` already holds it as it is.
    fn held(&self, subject: &str, new: &NewSchema<'_>) -> Result<Option<u32>, RegistryError> {
        let (text, _) = parse_schema(new.schema_type, new.text)?;
        let state = self.state();
        Ok(state
            .by_text
            .get(&(new.schema_type, text))
            .copied()
            .filter(|id| {
                state.live(subject).any(|(_, v)| v.id == *id) && new.id.is_none_or(|i| i == *id)
            }))
    }

    /// Before a change: makes this process the store's writer, reading the store again if it
    /// was not (another process may have written since).
    fn claim_store(&self) -> Result<(), RegistryError> {
        if self.store.claim().map_err(RegistryError::store)? {
            self.reload()?;
        }
        Ok(())
    }

    fn register_once(&self, subject: &str, new: &NewSchema<'_>) -> Result<u32, RegistryError> {
        if subject.is_empty() || subject.chars().any(char::is_control) {
            return Err(RegistryError::unprocessable(format!(
                "invalid subject name {subject:?}"
            )));
        }
        let (text, parsed) = parse_schema(new.schema_type, new.text)?;
        let mut state = self.state();
        let mode = state.mode(Some(subject));
        match mode {
            Mode::ReadOnly => {
                return Err(RegistryError::not_permitted(format!(
                    "Subject {subject} is in read-only mode"
                )))
            }
            Mode::ReadWrite if new.id.is_some() || new.version.is_some() => {
                return Err(RegistryError::not_permitted(
                    "an id or version can be given only in IMPORT mode",
                ))
            }
            _ => {}
        }
        let existing = state.by_text.get(&(new.schema_type, text.clone())).copied();
        if let Some(id) = existing {
            if state.live(subject).any(|(_, v)| v.id == id) && new.id.is_none_or(|i| i == id) {
                return Ok(id);
            }
        }
        if mode != Mode::Import {
            let level = state.level(subject);
            if level != Level::None {
                let live: Vec<(u32, Version)> = state.live(subject).collect();
                let against = if level.transitive() {
                    &live[..]
                } else {
                    &live[live.len().saturating_sub(1)..]
                };
                let mut problems = Vec::new();
                for (version, v) in against.iter().rev() {
                    let old = &state.schemas[&v.id];
                    problems.extend(compat::check(level, &parsed, &old.parsed, *version));
                }
                if !problems.is_empty() {
                    return Err(RegistryError::incompatible(subject, &problems));
                }
            }
        }
        let id = match (new.id, existing) {
            (Some(id), _) => {
                if let Some(held) = state.schemas.get(&id) {
                    if held.text != text || held.schema_type != new.schema_type {
                        return Err(RegistryError::not_permitted(format!(
                            "id {id} already holds a different schema; cannot overwrite it"
                        )));
                    }
                }
                id
            }
            (None, Some(id)) => id,
            (None, None) => state.next_id,
        };
        let version = match new.version {
            Some(version) => version,
            None => {
                state
                    .subjects
                    .get(subject)
                    .and_then(|v| v.keys().next_back().copied())
                    .unwrap_or(0)
                    + 1
            }
        };
        let stored = StoredSchema {
            id,
            schema_type: new.schema_type,
            text,
            parsed,
        };
        let mut entries = vec![schema_entry(subject, version, id, &stored, false)];
        if id >= state.next_id {
            entries.push(entry(&Key::NextId, Some(serde_json::Value::from(id + 1))));
        }
        self.commit(&mut state, entries)?;
        Ok(id)
    }

    /// The version of `subject` that holds this exact schema (`POST /subjects/{s}`).
    pub fn lookup(
        &self,
        subject: &str,
        schema_type: SchemaType,
        text: &str,
        deleted: bool,
    ) -> Result<SubjectVersion, RegistryError> {
        let (text, _) = parse_schema(schema_type, text)?;
        let state = self.state();
        let versions = state.versions(subject)?;
        let id = state
            .by_text
            .get(&(schema_type, text))
            .ok_or_else(|| RegistryError::schema_not_found("").with_subject(subject))?;
        versions
            .iter()
            .rev()
            .find(|(_, v)| v.id == *id && (deleted || !v.deleted))
            .map(|(n, v)| state.view(subject, *n, *v))
            .ok_or_else(|| RegistryError::schema_not_found("").with_subject(subject))
    }

    pub fn subjects(&self, deleted: bool) -> Vec<String> {
        let state = self.state();
        state
            .subjects
            .iter()
            .filter(|(_, versions)| deleted || versions.values().any(|v| !v.deleted))
            .map(|(s, _)| s.clone())
            .collect()
    }

    pub fn versions(&self, subject: &str, deleted: bool) -> Result<Vec<u32>, RegistryError> {
        let state = self.state();
        let versions: Vec<u32> = state
            .versions(subject)?
            .iter()
            .filter(|(_, v)| deleted || !v.deleted)
            .map(|(n, _)| *n)
            .collect();
        if versions.is_empty() {
            return Err(RegistryError::subject_not_found(subject));
        }
        Ok(versions)
    }

    pub fn version(
        &self,
        subject: &str,
        spec: VersionSpec,
        deleted: bool,
    ) -> Result<SubjectVersion, RegistryError> {
        let state = self.state();
        let (n, v) = state.resolve(subject, spec, deleted)?;
        Ok(state.view(subject, n, v))
    }

    pub fn schema(&self, id: u32) -> Result<Arc<StoredSchema>, RegistryError> {
        self.state()
            .schemas
            .get(&id)
            .cloned()
            .ok_or_else(|| RegistryError::schema_not_found(id))
    }

    /// `(subject, version)` pairs that hold schema `id`.
    pub fn usages(&self, id: u32, deleted: bool) -> Result<Vec<(String, u32)>, RegistryError> {
        let state = self.state();
        if !state.schemas.contains_key(&id) {
            return Err(RegistryError::schema_not_found(id));
        }
        Ok(state
            .subjects
            .iter()
            .flat_map(|(s, versions)| {
                versions
                    .iter()
                    .filter(|(_, v)| v.id == id && (deleted || !v.deleted))
                    .map(|(n, _)| (s.clone(), *n))
            })
            .collect())
    }

    /// Soft-deletes every live version, or (`permanent`) removes a soft-deleted subject.
    /// Returns the versions affected.
    pub fn delete_subject(
        &self,
        subject: &str,
        permanent: bool,
    ) -> Result<Vec<u32>, RegistryError> {
        self.claim_store()?;
        let mut state = self.state();
        self.writable(&state, subject)?;
        let versions = state.versions(subject)?.clone();
        let live: Vec<u32> = versions
            .iter()
            .filter(|(_, v)| !v.deleted)
            .map(|(n, _)| *n)
            .collect();
        let entries: Vec<Entry> = if permanent {
            if !live.is_empty() {
                return Err(RegistryError::subject_not_soft_deleted(subject));
            }
            let mut entries: Vec<Entry> = versions
                .keys()
                .map(|n| {
                    entry(
                        &Key::Schema {
                            subject: subject.to_owned(),
                            version: *n,
                        },
                        None,
                    )
                })
                .collect();
            for key in [
                Key::Config {
                    subject: Some(subject.to_owned()),
                },
                Key::Mode {
                    subject: Some(subject.to_owned()),
                },
            ] {
                entries.push(entry(&key, None));
            }
            entries
        } else {
            if live.is_empty() {
                return Err(RegistryError::subject_soft_deleted(subject));
            }
            live.iter()
                .map(|n| {
                    let v = versions[n];
                    schema_entry(subject, *n, v.id, &state.schemas[&v.id], true)
                })
                .collect()
        };
        let affected = if permanent {
            versions.keys().copied().collect()
        } else {
            live
        };
        self.commit(&mut state, entries)?;
        Ok(affected)
    }

    /// Soft-deletes one version, or (`permanent`) removes a soft-deleted one.
    pub fn delete_version(
        &self,
        subject: &str,
        spec: VersionSpec,
        permanent: bool,
    ) -> Result<u32, RegistryError> {
        self.claim_store()?;
        let mut state = self.state();
        self.writable(&state, subject)?;
        // A numbered version is found even when soft-deleted (to say so); `latest` means the
        // newest live one unless deleting permanently.
        let include_deleted = permanent || matches!(spec, VersionSpec::Number(_));
        let (n, v) = state.resolve(subject, spec, include_deleted)?;
        let entries = if permanent {
            if !v.deleted {
                return Err(RegistryError::version_not_soft_deleted(subject, n));
            }
            vec![entry(
                &Key::Schema {
                    subject: subject.to_owned(),
                    version: n,
                },
                None,
            )]
        } else {
            if v.deleted {
                return Err(RegistryError::version_soft_deleted(subject, n));
            }
            vec![schema_entry(subject, n, v.id, &state.schemas[&v.id], true)]
        };
        self.commit(&mut state, entries)?;
        Ok(n)
    }

    fn writable(&self, state: &State, subject: &str) -> Result<(), RegistryError> {
        if state.mode(Some(subject)) == Mode::ReadOnly {
            return Err(RegistryError::not_permitted(format!(
                "Subject {subject} is in read-only mode"
            )));
        }
        Ok(())
    }

    /// Checks `text` against one version (`Some`) or against what the level names (`None`):
    /// the reasons it is incompatible, empty when compatible.
    pub fn check_compatibility(
        &self,
        subject: &str,
        spec: Option<VersionSpec>,
        schema_type: SchemaType,
        text: &str,
    ) -> Result<Vec<String>, RegistryError> {
        let (_, parsed) = parse_schema(schema_type, text)?;
        let state = self.state();
        let level = state.level(subject);
        let against: Vec<(u32, Version)> = match spec {
            Some(spec) => vec![state.resolve(subject, spec, false)?],
            None => {
                let live: Vec<_> = state.live(subject).collect();
                if level.transitive() {
                    live
                } else {
                    live.last().copied().into_iter().collect()
                }
            }
        };
        if level == Level::None {
            return Ok(Vec::new());
        }
        Ok(against
            .iter()
            .flat_map(|(n, v)| compat::check(level, &parsed, &state.schemas[&v.id].parsed, *n))
            .collect())
    }

    /// The level in force for `subject` (`None`: the global one).
    pub fn compatibility(
        &self,
        subject: Option<&str>,
        default_to_global: bool,
    ) -> Result<Level, RegistryError> {
        let state = self.state();
        match subject {
            None => Ok(state
                .compatibility
                .get(&None)
                .copied()
                .unwrap_or(Level::DEFAULT)),
            Some(s) => match state.compatibility.get(&Some(s.to_owned())) {
                Some(level) => Ok(*level),
                None if default_to_global => Ok(state.level(s)),
                None => Err(RegistryError::no_subject_compatibility(s)),
            },
        }
    }

    pub fn set_compatibility(
        &self,
        subject: Option<&str>,
        level: Level,
    ) -> Result<(), RegistryError> {
        self.claim_store()?;
        let mut state = self.state();
        let record = ConfigRecord {
            compatibility_level: level.as_str().to_owned(),
        };
        let entries = vec![entry(
            &Key::Config {
                subject: subject.map(str::to_owned),
            },
            Some(serde_json::to_value(record).expect("records serialize")),
        )];
        self.commit(&mut state, entries)
    }

    /// Removes a level (the global one returns to BACKWARD); returns the level it had.
    pub fn delete_compatibility(&self, subject: Option<&str>) -> Result<Level, RegistryError> {
        self.claim_store()?;
        let mut state = self.state();
        let key = subject.map(str::to_owned);
        let previous = match (state.compatibility.get(&key), subject) {
            (Some(level), _) => *level,
            (None, None) => Level::DEFAULT,
            (None, Some(s)) => {
                state.versions(s)?;
                return Err(RegistryError::no_subject_compatibility(s));
            }
        };
        self.commit(&mut state, vec![entry(&Key::Config { subject: key }, None)])?;
        Ok(previous)
    }

    pub fn mode(
        &self,
        subject: Option<&str>,
        default_to_global: bool,
    ) -> Result<Mode, RegistryError> {
        let state = self.state();
        match subject {
            None => Ok(state.mode(None)),
            Some(s) => match state.modes.get(&Some(s.to_owned())) {
                Some(mode) => Ok(*mode),
                None if default_to_global => Ok(state.mode(Some(s))),
                None => Err(RegistryError::no_subject_mode(s)),
            },
        }
    }

    /// Sets a mode. IMPORT on the whole registry is refused while it holds schemas (as
    /// Confluent's does), since imported ids could collide with those.
    pub fn set_mode(
        &self,
        subject: Option<&str>,
        mode: Mode,
        force: bool,
    ) -> Result<(), RegistryError> {
        self.claim_store()?;
        let mut state = self.state();
        if mode == Mode::Import && subject.is_none() && !state.schemas.is_empty() && !force {
            return Err(RegistryError::not_permitted(
                "Cannot import since found existing subjects; add force=true to import anyway",
            ));
        }
        let record = ModeRecord {
            mode: mode.as_str().to_owned(),
        };
        let entries = vec![entry(
            &Key::Mode {
                subject: subject.map(str::to_owned),
            },
            Some(serde_json::to_value(record).expect("records serialize")),
        )];
        self.commit(&mut state, entries)
    }

    pub fn delete_mode(&self, subject: Option<&str>) -> Result<Mode, RegistryError> {
        self.claim_store()?;
        let mut state = self.state();
        let key = subject.map(str::to_owned);
        let previous = state.modes.get(&key).copied().unwrap_or(Mode::ReadWrite);
        self.commit(&mut state, vec![entry(&Key::Mode { subject: key }, None)])?;
        Ok(previous)
    }
}

impl RegistryError {
    fn with_subject(mut self, subject: &str) -> RegistryError {
        self.message = format!("Schema not found in subject '{subject}'");
        self
    }
}
