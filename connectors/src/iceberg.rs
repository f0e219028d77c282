//! The Apache Iceberg sink: each source table as an Iceberg table (format v2, through a REST
//! catalog) that holds its current rows, as a changelog table of every change, or both.
//!
//! Changes wait in memory (`table.rs`: the last state of each key) and are committed once
//! `commit_interval_ms` passed since the oldest or `commit_bytes` are waiting: one snapshot
//! per table with a Parquet data file of the new rows and a position delete file of the rows
//! they replace (`commit.rs`). Position deletes, not equality deletes, because every reader
//! applies them (pyiceberg 0.12 refuses equality deletes; DuckDB, Spark, Trino, chdb read
//! both); they need to know where a key's row is, so the sink keeps an index of each table's
//! live keys, rebuilt from the table when it first writes to it.
//!
//! Exactly once: each snapshot's summary holds the sink's offsets (`sluice.offsets.<sink>`),
//! committed with the rows in one catalog commit; a restart resumes from them. A table also
//! keeps, in its properties, the offset from which it was first fed each partition, so a
//! crash between the commits of two tables fed by one topic (modes `both`, `changelog` of a
//! keyless table) resumes from the lower of the two and each table skips what it holds.
//!
//! Which parts are sluice's own, and why: the Parquet writer is the parquet crate's column
//! writer (no arrow), the manifests are Avro through apache-avro, and the REST catalog is
//! spoken over the HTTP client the other sinks use. The `iceberg` crates (0.10) commit only
//! `fast_append`, which refuses delete files, so row-level changes needed a commit of our own
//! anyway; what they would add (arrow, opendal, a second HTTP stack) costs tens of minutes of
//! cold build for code paths this sink does not use.

pub mod catalog;
pub mod cells;
pub mod commit;
pub mod config;
pub mod manifest;
pub mod parquet;
pub mod schema;
mod status;
pub mod table;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_core::event::{Op, TableSchema};
use sluice_core::pipeline::TypedSink;
use sluice_core::retry::{Classify, ErrorKind};
use sluice_core::sink::{
    ChangeBatch, ChangeSink, DeadLetter, DeadLetterError, DeadLetterWriter, Offsets,
};
use sluice_schema_registry::changes::RecordDecoder;
use sluice_schema_registry::registry::Registry;

use self::catalog::{Catalog, CommitError, TableMetadata};
pub use self::config::{IcebergSinkConfig, Mode};
use self::schema::Evolution;
pub use self::status::{probe, server_status};
use self::table::{Kind, Pending, Table};
use crate::files::{Files, FilesError};
use crate::http::{Auth, Http, HttpError};

/// Metric names (labels: `sink`, `table`).
pub mod metric {
    /// Rows committed (data file rows).
    pub const ROWS: &str = "sluice_iceberg_rows_total";
    /// Rows removed by position deletes.
    pub const DELETES: &str = "sluice_iceberg_position_deletes_total";
    /// Seconds per commit, files included (histogram).
    pub const COMMIT_SECONDS: &str = "sluice_iceberg_commit_seconds";
    /// When a table last committed (Unix seconds).
    pub const LAST_COMMIT: &str = "sluice_iceberg_last_commit_timestamp_seconds";
}

/// Why the Iceberg sink stopped or will retry.
#[derive(Debug, thiserror::Error)]
pub enum IcebergError {
    #[error(transparent)]
    Http(#[from] HttpError),
    /// Another writer committed to the table meanwhile (retried: the sink reloads it).
    #[error("table {table} changed while sluice committed to it ({reason}); reloading it")]
    Conflict { table: String, reason: String },
    /// A table sluice cannot write as it is (a type, a key, its location).
    #[error("{0}")]
    Table(String),
    /// A table's file could not be read as Iceberg files are (corrupt, or not Iceberg's).
    #[error("Iceberg files: {0}")]
    Files(String),
    /// Writing, reading or listing the table's files failed (a directory or S3).
    #[error("Iceberg files: {0}")]
    Storage(FilesError),
    /// Rows the table cannot hold and no dead-letter topic to put them in.
    #[error("{0}")]
    Rejected(String),
    #[error(transparent)]
    DeadLetter(#[from] DeadLetterError),
}

// Not `#[from]`: that would make the error its own cause, printed twice.
impl From<FilesError> for IcebergError {
    fn from(err: FilesError) -> Self {
        IcebergError::Storage(err)
    }
}

impl Classify for IcebergError {
    fn kind(&self) -> ErrorKind {
        match self {
            IcebergError::Http(err) => err.kind(),
            IcebergError::DeadLetter(err) => err.kind(),
            IcebergError::Storage(err) => err.kind(),
            IcebergError::Conflict { .. } | IcebergError::Files(_) => ErrorKind::Transient,
            IcebergError::Table(_) | IcebergError::Rejected(_) => ErrorKind::Definite,
        }
    }
}

pub(crate) fn commit_error(table: &str, err: CommitError) -> IcebergError {
    match err {
        CommitError::Conflict(reason) => IcebergError::Conflict {
            table: table.to_owned(),
            reason,
        },
        CommitError::Http(err) => IcebergError::Http(err),
    }
}

/// A commit that went through, as its task hands it back.
pub struct Committed {
    meta: TableMetadata,
    prepared: commit::Prepared,
    offsets: Offsets,
    seconds: f64,
}

/// Where the changes of one topic, partition and table version go.
struct Targets {
    topic: Arc<str>,
    partition: u32,
    schema: Arc<TableSchema>,
    tables: Vec<Target>,
}

struct Target {
    name: Arc<str>,
    kind: Kind,
    /// The offset the table stores for the partition: changes before it are in it.
    stored: Option<u64>,
}

/// The sink as the runtime runs it.
pub type IcebergSinkRuntime = TypedSink<IcebergSink, RecordDecoder>;

/// Builds the sink for `config`, decoding records through `registry`.
pub fn iceberg_sink(
    config: IcebergSinkConfig,
    registry: Arc<Registry>,
    dead_letters: Option<DeadLetterWriter>,
) -> IcebergSinkRuntime {
    let sink = IcebergSink {
        config,
        dead_letters,
        catalog: None,
        tables: HashMap::default(),
        routes: HashMap::new(),
        keyless_warned: HashSet::new(),
        durable: Offsets::new(),
        catching_up: false,
    };
    TypedSink::new(sink, RecordDecoder::new(registry), false)
}

/// Tables in an Iceberg REST catalog.
pub struct IcebergSink {
    config: IcebergSinkConfig,
    dead_letters: Option<DeadLetterWriter>,
    catalog: Option<Catalog>,
    /// Tables by name, as loaded at open or when first written.
    tables: HashMap<String, Table, foldhash::fast::RandomState>,
    /// The table each version of a topic's source table goes to, per kind (None: it has no
    /// key, so no current-state table).
    #[allow(clippy::type_complexity)]
    routes: HashMap<(Arc<str>, Kind), Vec<(Arc<TableSchema>, Option<String>)>>,
    keyless_warned: HashSet<String>,
    /// What every table holds: per partition, the lowest offset the tables fed by it store.
    durable: Offsets,
    /// The last commits went out because `commit_bytes` were waiting: a backlog is being
    /// read, and what is left of it is committed as soon as the runtime finds nothing new.
    catching_up: bool,
}

fn connect(config: &IcebergSinkConfig) -> Result<Http, IcebergError> {
    let auth = match &config.token_file {
        Some(path) => {
            let token = std::fs::read_to_string(path)
                .map_err(|e| HttpError::Config(format!("token_file {}: {e}", path.display())))?;
            Auth::ApiKey {
                header: "authorization",
                key: format!("Bearer {}", token.trim_end_matches(['\n', '\r'])),
            }
        }
        None => Auth::Basic {
            password_file: None,
        },
    };
    Ok(Http::new(
        "the Iceberg REST catalog",
        &config.catalog_url,
        config.ca_file.as_deref(),
        auth,
    )?)
}

impl IcebergSink {
    fn catalog(&self) -> &Catalog {
        self.catalog.as_ref().expect("opened before use")
    }

    /// The lowest stored offset of each partition over all tables.
    fn lowest_offsets(&self) -> Offsets {
        let mut lowest = Offsets::new();
        for table in self.tables.values() {
            for (partition, offset) in &table.committed {
                lowest
                    .entry(partition.clone())
                    .and_modify(|o| *o = (*o).min(*offset))
                    .or_insert(*offset);
            }
        }
        lowest
    }

    fn new_table(
        &self,
        name: &str,
        kind: Kind,
        meta: TableMetadata,
        committed: Offsets,
    ) -> Result<Table, IcebergError> {
        if meta.format_version < 2 {
            return Err(IcebergError::Table(format!(
                "{}.{name} is an Iceberg format v{} table; row-level deletes need format v2: \
                 upgrade it (ALTER TABLE … SET TBLPROPERTIES ('format-version'='2') in Spark) or \
                 write to a new table",
                self.config.namespace, meta.format_version
            )));
        }
        let files = Files::new(&self.config.s3, &self.catalog().file_settings(&meta));
        files.check(&meta.location)?;
        Ok(Table {
            namespace: self.config.namespace.clone(),
            name: name.to_owned(),
            shown: format!("{}.{name}", self.config.namespace),
            kind,
            meta,
            files: Arc::new(files),
            index: None,
            pending: Pending::default(),
            committed,
            mappings: Vec::new(),
            leftovers: Vec::new(),
            in_flight: None,
            key_scratch: Vec::new(),
        })
    }

    /// The table rows of `schema` from `topic` go to as `kind`, made or evolved first.
    async fn route(
        &mut self,
        topic: &Arc<str>,
        schema: &Arc<TableSchema>,
        kind: Kind,
    ) -> Result<Option<String>, IcebergError> {
        let key = (Arc::clone(topic), kind);
        if let Some((_, name)) = self.routes.get(&key).and_then(|versions| {
            versions
                .iter()
                .find(|(known, _)| Arc::ptr_eq(known, schema) || known.columns == schema.columns)
        }) {
            return Ok(name.clone());
        }
        let template = match kind {
            Kind::Current => &self.config.table,
            Kind::Changelog => &self.config.changelog_table,
        };
        let name = crate::names::fill_template(template, topic, &schema.table);
        if kind == Kind::Current && !schema.has_key() {
            if self.keyless_warned.insert(name.clone()) {
                tracing::warn!(table = %schema.table, "the table has no primary key: a current-state table needs one (updates and deletes find rows by it), so only its changelog table is kept");
            }
            self.routes
                .entry(key)
                .or_default()
                .push((Arc::clone(schema), None));
            return Ok(None);
        }
        let namespace = self.config.namespace.clone();
        if !self.tables.contains_key(&name) {
            let meta = match self.catalog().load_table(&namespace, &name).await? {
                Some(meta) => meta,
                None => {
                    let wanted = schema::new_schema(schema, kind == Kind::Changelog);
                    tracing::info!(table = %format!("{namespace}.{name}"), "creating the Iceberg table");
                    let location = self.config.location.as_deref().map(|base| {
                        let base = base.trim_end_matches('/');
                        let base = if base.starts_with('/') {
                            format!("file://{base}")
                        } else {
                            base.to_owned()
                        };
                        format!("{base}/{namespace}/{name}")
                    });
                    self.catalog()
                        .create_table(&namespace, &name, &wanted, location.as_deref())
                        .await?
                }
            };
            let table = self.new_table(&name, kind, meta, Offsets::new())?;
            self.tables.insert(name.clone(), table);
        }
        let table = self.tables.get_mut(&name).expect("inserted above");
        table.kind = kind;
        let shown = table.shown.clone();
        let evolution =
            schema::evolve(table.schema(), schema, &shown).map_err(IcebergError::Table)?;
        if let Evolution::Change(next) = evolution {
            // Waiting rows were made for the table's schema as it is.
            self.commit_table(&name).await?;
            self.settle_table(&name).await?;
            let table = self.tables.get_mut(&name).expect("present");
            tracing::info!(table = %shown, schema_id = next.id, "changing the table's schema for a new version of the source table");
            let (requirements, updates) = commit::schema_updates(&table.meta, &next);
            let catalog = self.catalog.as_ref().expect("opened");
            let meta = catalog
                .commit(&table.namespace, &table.name, requirements, updates)
                .await
                .map_err(|e| commit_error(&shown, e))?;
            table.meta = meta;
            table.mappings.clear();
        }
        let table = self.tables.get_mut(&name).expect("present");
        table.mapping(schema).map_err(IcebergError::Table)?;
        self.routes
            .entry(key)
            .or_default()
            .push((Arc::clone(schema), Some(name.clone())));
        Ok(Some(name))
    }

    /// Commits what waits for the table `name` (nothing when nothing waits).
    /// Starts committing what waits for the table `name` (nothing when nothing waits), once
    /// its previous commit is settled: the files are written and the catalog asked on a task
    /// of their own while the next changes are read.
    async fn commit_table(&mut self, name: &str) -> Result<(), IcebergError> {
        self.settle_table(name).await?;
        let sink = self.config.name.clone();
        let target_file_bytes = self.config.target_file_bytes;
        let catalog = self.catalog.clone().expect("opened");
        let Some(table) = self.tables.get_mut(name) else {
            return Ok(());
        };
        if table.pending.is_empty() {
            return Ok(());
        }
        // The next commit's keys likely number about as many: room for them now spares the
        // map its growing (each growth hashes every key again).
        let room = table.pending.keys.len();
        let pending = std::mem::take(&mut table.pending);
        table.pending.keys.reserve(room);
        let mut offsets = table.committed.clone();
        offsets.extend(pending.offsets.clone());
        let job = commit::Job {
            sink,
            kind: table.kind,
            meta: table.meta.clone(),
            files: Arc::clone(&table.files),
            shown: table.shown.clone(),
            pending,
            index: table.index.take(),
            offsets: offsets.clone(),
            target_file_bytes,
        };
        let keep = self.config.keep_snapshots;
        let files = Arc::clone(&table.files);
        let sink_name = self.config.name.clone();
        let (namespace, name, shown, meta) = (
            table.namespace.clone(),
            table.name.clone(),
            table.shown.clone(),
            table.meta.clone(),
        );
        table.in_flight = Some(sluice_core::task::spawn_in_span(async move {
            let started = Instant::now();
            let prepared = tokio::task::spawn_blocking(move || job.run())
                .await
                .expect("commit files do not panic")?;
            commit::abort_before_commit_for_tests();
            let (requirements, updates) = commit::snapshot_updates(&meta, &prepared);
            let mut meta = catalog
                .commit(&namespace, &name, requirements, updates)
                .await
                .map_err(|e| commit_error(&shown, e))?;
            // Expiring is housekeeping: a failure is logged and tried again next commit.
            match commit::expire_snapshots(
                &catalog, &files, &namespace, &name, &meta, keep, &sink_name,
            )
            .await
            {
                Ok(Some(after)) => meta = after,
                Ok(None) => {}
                Err(err) => {
                    tracing::warn!(table = %shown, error = %err, "could not expire old snapshots; trying again after the next commit")
                }
            }
            Ok(Committed {
                meta,
                prepared,
                offsets,
                seconds: started.elapsed().as_secs_f64(),
            })
        }));
        Ok(())
    }

    /// Waits for the table's commit in flight: what it committed becomes the table's state.
    async fn settle_table(&mut self, name: &str) -> Result<(), IcebergError> {
        let Some(table) = self.tables.get_mut(name) else {
            return Ok(());
        };
        let Some(handle) = table.in_flight.take() else {
            return Ok(());
        };
        let committed = match handle.await {
            Ok(result) => result?,
            Err(join) => std::panic::resume_unwind(join.into_panic()),
        };
        let prepared = committed.prepared;
        if prepared.unfilled > 0 {
            tracing::warn!(table = %table.shown, rows = prepared.unfilled, "rows lacked values the source did not send (unchanged TOASTed columns) and the table had no earlier version of them: those columns are null");
        }
        table.meta = committed.meta;
        table.index = prepared.index;
        table.committed = committed.offsets;
        let labels = [
            ("sink", self.config.name.clone()),
            ("table", table.shown.clone()),
        ];
        metrics::counter!(metric::ROWS, &labels).increment(prepared.rows as u64);
        metrics::counter!(metric::DELETES, &labels).increment(prepared.deletes as u64);
        metrics::histogram!(metric::COMMIT_SECONDS, &labels).record(committed.seconds);
        metrics::gauge!(metric::LAST_COMMIT, &labels).set(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
        );
        tracing::debug!(table = %table.shown, rows = prepared.rows, deletes = prepared.deletes, seconds = committed.seconds, "committed");
        if !table.leftovers.is_empty() {
            let leftovers = std::mem::take(&mut table.leftovers);
            match commit::remove_files(&table.files, &leftovers).await {
                Ok(()) => {
                    tracing::warn!(table = %table.shown, files = leftovers.len(), "removed files an interrupted commit left")
                }
                Err(err) => {
                    tracing::warn!(table = %table.shown, error = %err, "could not remove files an interrupted commit left; they are unused and may be deleted by hand")
                }
            }
        }
        self.durable = self.lowest_offsets();
        Ok(())
    }

    /// Waits for every commit in flight; what the tables hold becomes durable.
    async fn settle_all(&mut self) -> Result<(), IcebergError> {
        let names: Vec<String> = self
            .tables
            .iter()
            .filter(|(_, t)| t.in_flight.is_some())
            .map(|(n, _)| n.clone())
            .collect();
        for name in names {
            self.settle_table(&name).await?;
        }
        Ok(())
    }

    /// Commits every table with waiting changes.
    ///
    /// Unless `idle`, a table whose last change was a delete waits for the next round (up to
    /// twice the interval or twice `commit_bytes`, so a stream of deletes still commits): a
    /// key change arrives as a delete and a create read one after the other, and the create's
    /// unchanged TOASTed values come from the deleted row, which a commit between the two
    /// would put out of reach. (Idle, the create would have been read with its delete: both
    /// are in the log as one source transaction.)
    async fn commit_all(&mut self, idle: bool) -> Result<(), IcebergError> {
        let (limit, interval) = (
            2 * self.config.commit_bytes,
            2 * self.config.commit_interval(),
        );
        let mut names: Vec<String> = self
            .tables
            .iter()
            .filter(|(_, t)| {
                let p = &t.pending;
                !p.is_empty()
                    && (idle
                        || p.last_delete.is_none()
                        || p.bytes >= limit
                        || p.since.is_some_and(|s| s.elapsed() >= interval))
            })
            .map(|(n, _)| n.clone())
            .collect();
        names.sort();
        for name in names {
            self.commit_table(&name).await?;
        }
        Ok(())
    }

    fn waiting(&self) -> (usize, Option<Instant>) {
        let bytes = self.tables.values().map(|t| t.pending.bytes).sum();
        let since = self.tables.values().filter_map(|t| t.pending.since).min();
        (bytes, since)
    }

    /// The tables a record of `schema` goes to (made or evolved first), each with the offset
    /// it stores for the record's partition.
    async fn targets(
        &mut self,
        record: &sluice_core::sink::SinkRecord,
        schema: &Arc<TableSchema>,
    ) -> Result<Targets, IcebergError> {
        let mode = self.config.mode;
        let current = if mode.current() {
            self.route(&record.topic, schema, Kind::Current).await?
        } else {
            None
        };
        let changelog = if mode.changelog() || current.is_none() {
            self.route(&record.topic, schema, Kind::Changelog).await?
        } else {
            None
        };
        let mut tables = Vec::new();
        for (name, kind) in [(current, Kind::Current), (changelog, Kind::Changelog)] {
            let Some(name) = name else { continue };
            let offset = record.record.offset;
            self.ensure_floor(&name, &record.topic, record.partition, offset)
                .await?;
            let stored = self.tables[&name]
                .committed
                .get(&(record.topic.to_string(), record.partition))
                .copied();
            tables.push(Target {
                name: name.into(),
                kind,
                stored,
            });
        }
        Ok(Targets {
            topic: Arc::clone(&record.topic),
            partition: record.partition,
            schema: Arc::clone(schema),
            tables,
        })
    }

    /// Records in `table` that partition's first offset it was fed from (a floor for the
    /// resume point), unless it has one.
    async fn ensure_floor(
        &mut self,
        name: &str,
        topic: &str,
        partition: u32,
        offset: u64,
    ) -> Result<(), IcebergError> {
        let key = (topic.to_owned(), partition);
        if self
            .tables
            .get(name)
            .is_some_and(|t| t.committed.contains_key(&key))
        {
            return Ok(());
        }
        // The table's metadata changes with this commit: none may be in flight.
        self.settle_table(name).await?;
        let table = self.tables.get_mut(name).expect("routed");
        if table.committed.contains_key(&key) {
            return Ok(());
        }
        table.committed.insert(key, offset);
        let text = commit::offsets_json(&table.committed);
        let requirements =
            vec![serde_json::json!({"type": "assert-table-uuid", "uuid": table.meta.uuid})];
        let updates = vec![serde_json::json!({
            "action": "set-properties",
            "updates": {commit::offsets_key(&self.config.name): text},
        })];
        let catalog = self.catalog.as_ref().expect("opened");
        table.meta = catalog
            .commit(&table.namespace, &table.name, requirements, updates)
            .await
            .map_err(|e| commit_error(&table.shown, e))?;
        Ok(())
    }
}

impl ChangeSink for IcebergSink {
    type Error = IcebergError;

    async fn open(&mut self) -> Result<Option<Offsets>, IcebergError> {
        // A commit left running by a failure is finished (or failed) first; either way the
        // tables read below say what was committed.
        for table in self.tables.values_mut() {
            if let Some(handle) = table.in_flight.take() {
                let _ = handle.await;
            }
        }
        self.tables.clear();
        self.routes.clear();
        let http = connect(&self.config)?;
        let catalog = Catalog::connect(http, self.config.warehouse.as_deref()).await?;
        let namespace = self.config.namespace.clone();
        catalog.ensure_namespace(&namespace).await?;
        self.catalog = Some(catalog);
        let names = self.catalog().list_tables(&namespace).await?;
        let key = commit::offsets_key(&self.config.name);
        for name in names {
            let Some(meta) = self.catalog().load_table(&namespace, &name).await? else {
                continue;
            };
            let floors = meta
                .properties
                .get(&key)
                .and_then(|text| commit::parse_offsets(text))
                .unwrap_or_default();
            let committed = commit::stored_offsets(&meta, &floors, &self.config.name);
            if committed.is_empty() {
                continue;
            }
            let mut table = self.new_table(&name, Kind::Current, meta, committed)?;
            // Files of a commit past the table's last are what a stopped process left. They
            // stay until this sink's next commit: a killed process's commit request may still
            // be landing in the catalog (on S3 a commit takes a while), and they would then be
            // the table's; once a commit of this process has landed, that one never can.
            table.leftovers = commit::leftovers(
                &table.files,
                &table.meta.location,
                &self.config.name,
                table.meta.last_sequence_number,
            )
            .await?;
            if !table.leftovers.is_empty() {
                tracing::info!(table = %table.shown, files = table.leftovers.len(), "found files an interrupted commit left (written, never committed: their rows are written again from the log); they are removed after this sink's next commit to the table");
            }
            self.tables.insert(name, table);
        }
        let stored = self.lowest_offsets();
        tracing::info!(catalog = %self.catalog().base(), %namespace, tables = self.tables.len(), partitions = stored.len(), "Iceberg sink open");
        self.durable = stored.clone();
        Ok(Some(stored))
    }

    fn applied(&self) -> Option<&Offsets> {
        Some(&self.durable)
    }

    /// Each table resumes the changed partitions from their new offsets: it skips records
    /// below them, and its next commit stores them.
    fn resume_from(&mut self, offsets: &Offsets) {
        for table in self.tables.values_mut() {
            for (partition, offset) in table.committed.iter_mut() {
                if let Some(&new) = offsets.get(partition) {
                    *offset = new;
                }
            }
        }
        self.durable = offsets.clone();
    }

    async fn write(&mut self, batch: ChangeBatch<'_>) -> Result<(), IcebergError> {
        let mut dead = Vec::new();
        // The tables of the last change's topic, partition and table version (most changes
        // of a batch share them), and the offsets each table took, per partition.
        let mut targets: Option<Targets> = None;
        let mut taken: Vec<(Arc<str>, Arc<str>, u32, u64)> = Vec::new();
        for sourced in &batch.changes {
            let change = &sourced.change;
            if change.op == Op::Message {
                continue;
            }
            let record = &batch.records[sourced.record];
            let fresh = targets.as_ref().is_some_and(|t| {
                Arc::ptr_eq(&t.topic, &record.topic)
                    && t.partition == record.partition
                    && Arc::ptr_eq(&t.schema, &change.table)
            });
            if !fresh {
                targets = Some(self.targets(record, &change.table).await?);
            }
            let offset = record.record.offset;
            let mut rejected = None;
            for target in &targets.as_ref().expect("set above").tables {
                if target.stored.is_some_and(|stored| offset < stored) {
                    // Committed to this table before a crash that another table of the
                    // topic had not committed yet.
                    continue;
                }
                let table = self.tables.get_mut(&*target.name).expect("routed");
                let mapping = table.mapping(&change.table).map_err(IcebergError::Table)?;
                let applied = match target.kind {
                    Kind::Current => table.apply(change, &mapping),
                    Kind::Changelog => {
                        table.append_change(change, &mapping, record.partition, offset)
                    }
                };
                if let Err(reason) = applied {
                    rejected = Some(reason);
                }
                table.pending.since.get_or_insert_with(Instant::now);
                match taken.last_mut() {
                    Some((name, topic, partition, next))
                        if Arc::ptr_eq(name, &target.name)
                            && Arc::ptr_eq(topic, &record.topic)
                            && *partition == record.partition =>
                    {
                        *next = offset + 1
                    }
                    _ => taken.push((
                        Arc::clone(&target.name),
                        Arc::clone(&record.topic),
                        record.partition,
                        offset + 1,
                    )),
                }
            }
            if let Some(reason) = rejected {
                if self.dead_letters.is_none() {
                    return Err(IcebergError::Rejected(format!(
                        "{} offset {offset}: {reason}; set dead_letter_topic to divert such rows \
                         and go on",
                        record.topic
                    )));
                }
                dead.push(DeadLetter {
                    record: record.clone(),
                    error: reason,
                });
            }
        }
        for (name, topic, partition, next) in taken {
            if let Some(table) = self.tables.get_mut(&*name) {
                let slot = table
                    .pending
                    .offsets
                    .entry((topic.to_string(), partition))
                    .or_insert(next);
                *slot = (*slot).max(next);
            }
        }
        crate::replica::deliver_dead_letters(self.dead_letters.as_ref(), dead).await?;
        let (bytes, since) = self.waiting();
        let due = since.is_some_and(|since| since.elapsed() >= self.config.commit_interval());
        if bytes >= self.config.commit_bytes || due {
            self.catching_up |= bytes >= self.config.commit_bytes;
            self.commit_all(false).await?;
        }
        Ok(())
    }

    /// The runtime found nothing new: what waits is committed once its interval is up, or at
    /// once at the end of a backlog (waiting would gather nothing more).
    async fn flush(&mut self) -> Result<(), IcebergError> {
        let (_, since) = self.waiting();
        if let (Some(since), false) = (since, std::mem::take(&mut self.catching_up)) {
            let wait = self
                .config
                .commit_interval()
                .saturating_sub(since.elapsed());
            if wait > Duration::ZERO {
                tokio::time::sleep(wait).await;
            }
        }
        self.commit_all(true).await?;
        self.settle_all().await
    }

    async fn close(&mut self) -> Result<(), IcebergError> {
        if self.catalog.is_some() {
            self.commit_all(true).await?;
            self.settle_all().await?;
        }
        Ok(())
    }
}
