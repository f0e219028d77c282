//! The Parquet changelog sink: every change as a row of Parquet files in a directory or an S3
//! prefix, one directory per table and date (`<path>/<table>/date=YYYY-MM-DD/`), which DuckDB
//! (`read_parquet('<path>/items/*/*.parquet', hive_partitioning = true, union_by_name =
//! true)`), chdb, pyarrow and Spark read as they are.
//!
//! A row holds the change's op (`c`, `u`, `d`, `r`, `t`), its place in the log
//! (`_sluice_partition`, `_sluice_offset`), the source's commit time (`_sluice_ts`) and the
//! new row (the old one for deletes), in the column types the Iceberg sink uses. A file holds
//! the changes of one topic partition and one table version, in log order, and is named after
//! the offsets of its first and last change (`<topic>.p<partition>.<first>-<last>.parquet`).
//!
//! Exactly once without a catalog: a file appears whole or not at all (locally written under a
//! hidden temporary name, synced and linked into place; on S3 one PutObject), in log order,
//! and only if its name is free (`If-None-Match: *` on S3), so a write retried after an
//! answer was lost never doubles a file. So the files of a partition are always a gapless
//! prefix of the log, and the next start resumes after the last offset the names say;
//! temporary files a crash left are removed. The manifest
//! (`_sluice_manifest.json`) records the offsets after each write, for people and tools; the
//! names are the truth.

pub mod config;

use std::collections::HashMap;
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

pub use self::config::ParquetSinkConfig;
use crate::files::{Files, FilesError};
use crate::iceberg::cells::{self, Cell};
use crate::iceberg::schema::{new_schema, Schema};
use crate::iceberg::table::{change_row, sources};

/// Metric names (labels: `sink`, `table`).
pub mod metric {
    /// Change rows written to files.
    pub const ROWS: &str = "sluice_parquet_rows_total";
    /// Files written.
    pub const FILES: &str = "sluice_parquet_files_total";
}

/// Why the Parquet sink stopped or will retry.
#[derive(Debug, thiserror::Error)]
pub enum ParquetSinkError {
    /// Writing, reading or listing the files failed (a directory or S3).
    #[error("Parquet files: {0}")]
    Files(FilesError),
    /// A file could not be encoded.
    #[error("Parquet files: {0}")]
    Encode(String),
    /// Changes the files cannot hold and no dead-letter topic to put them in.
    #[error("{0}")]
    Rejected(String),
    #[error(transparent)]
    DeadLetter(#[from] DeadLetterError),
}

// Not `#[from]`: that would make the error its own cause, printed twice.
impl From<FilesError> for ParquetSinkError {
    fn from(err: FilesError) -> Self {
        ParquetSinkError::Files(err)
    }
}

impl Classify for ParquetSinkError {
    fn kind(&self) -> ErrorKind {
        match self {
            ParquetSinkError::Files(err) => err.kind(),
            ParquetSinkError::Encode(_) => ErrorKind::Transient,
            ParquetSinkError::Rejected(_) => ErrorKind::Definite,
            ParquetSinkError::DeadLetter(err) => err.kind(),
        }
    }
}

/// The sink as the runtime runs it.
pub type ParquetSinkRuntime = TypedSink<ParquetSink, RecordDecoder>;

/// Builds the sink for `config`, decoding records through `registry`.
pub fn parquet_sink(
    config: ParquetSinkConfig,
    registry: Arc<Registry>,
    dead_letters: Option<DeadLetterWriter>,
) -> ParquetSinkRuntime {
    let sink = ParquetSink {
        config,
        dead_letters,
        buffers: HashMap::new(),
        durable: Offsets::new(),
        files: 0,
        catching_up: false,
        storage: None,
        root: String::new(),
    };
    TypedSink::new(sink, RecordDecoder::new(registry), false)
}

/// The rows waiting for one file: one topic partition, one table version, one date.
struct Buffer {
    /// The directory's location (`<root>/<table>/date=…`).
    dir: String,
    table: String,
    topic: Arc<str>,
    partition: u32,
    version: Arc<TableSchema>,
    schema: Schema,
    sources: Vec<Option<usize>>,
    date: String,
    rows: Vec<Vec<Cell>>,
    first: u64,
    last: u64,
    bytes: usize,
    since: Instant,
}

/// Change rows in Parquet files under a directory.
pub struct ParquetSink {
    config: ParquetSinkConfig,
    dead_letters: Option<DeadLetterWriter>,
    /// Waiting rows by table directory and topic partition.
    buffers: HashMap<(String, Arc<str>, u32), Buffer>,
    /// What the directory holds: the next offset after each partition's last file.
    durable: Offsets,
    files: u64,
    /// The last files were written because `roll_bytes` were waiting: a backlog is being
    /// read, and what is left of it is written as soon as the runtime finds nothing new.
    catching_up: bool,
    /// Where the files go, from `open`.
    storage: Option<Files>,
    /// `config.path` as a location (`file://…` or `s3://…`).
    root: String,
}

const SUFFIX: &str = ".parquet";

/// A file's name: `<topic>.p<partition>.<first>-<last>.parquet`.
fn file_name(topic: &str, partition: u32, first: u64, last: u64) -> String {
    format!("{topic}.p{partition}.{first:020}-{last:020}{SUFFIX}")
}

/// The topic, partition and last offset a file's name gives.
fn parse_name(name: &str) -> Option<(String, u32, u64)> {
    let stem = name.strip_suffix(SUFFIX)?;
    let (rest, range) = stem.rsplit_once('.')?;
    let (topic, partition) = rest.rsplit_once('.')?;
    let partition = partition.strip_prefix('p')?.parse().ok()?;
    let (_, last) = range.split_once('-')?;
    Some((topic.to_owned(), partition, last.parse().ok()?))
}

/// The UTC date of a commit time (`YYYY-MM-DD`); today's when the source gave none.
fn date_of(commit_ts_us: i64) -> String {
    let micros = if commit_ts_us != 0 {
        commit_ts_us
    } else {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as i64)
    };
    let mut out = String::new();
    sluice_core::value::write_sql_date(
        &mut out,
        micros.div_euclid(sluice_core::value::MICROS_PER_DAY),
    );
    out
}

/// The root location of `config.path`: `s3://…` as given, a directory as `file://…`.
fn root(config: &ParquetSinkConfig) -> String {
    let path = config.path.to_string_lossy();
    let path = path.trim_end_matches('/');
    if crate::files::is_s3(path) || path.starts_with("file:") {
        path.to_owned()
    } else {
        format!("file://{path}")
    }
}

/// A finished file's topic, partition and last offset.
type Written = (String, u32, u64);

/// Every finished file under `root` (`<table>/date=…/<name>`), and removes temporary files
/// a crash left.
async fn scan(files: &Files, root: &str) -> Result<(Vec<Written>, usize), ParquetSinkError> {
    let mut found = Vec::new();
    let mut removed = 0;
    for file in files.list(root).await? {
        let mut parts = file.relative.split('/');
        let (Some(_table), Some(_date), Some(name), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if name.starts_with('.') && name.ends_with(".tmp") {
            files.delete(&file.uri).await?;
            removed += 1;
        } else if let Some(parsed) = parse_name(name) {
            found.push(parsed);
        }
    }
    Ok((found, removed))
}

impl ParquetSink {
    fn storage(&self) -> &Files {
        self.storage.as_ref().expect("opened before use")
    }

    /// Writes `buffer` as one file, whole or not at all, unless a file has its name.
    async fn write_file(&mut self, buffer: Buffer) -> Result<(), ParquetSinkError> {
        if buffer.rows.is_empty() {
            return Ok(());
        }
        let name = file_name(&buffer.topic, buffer.partition, buffer.first, buffer.last);
        let uri = format!("{}/{name}", buffer.dir);
        let rows: Vec<&[Cell]> = buffer.rows.iter().map(|r| &r[..]).collect();
        let (bytes, _) =
            crate::iceberg::parquet::write_data_file(&uri, &buffer.schema.fields, &rows)
                .map_err(ParquetSinkError::Encode)?;
        if !self.storage().put_new(&uri, bytes.into()).await? {
            // The same changes under the same name: an earlier attempt wrote it and its
            // answer was lost.
            tracing::info!(file = %uri, "the file was written already (a retried write); keeping it");
        }
        self.durable.insert(
            (buffer.topic.to_string(), buffer.partition),
            buffer.last + 1,
        );
        self.files += 1;
        let labels = [("sink", self.config.name.clone()), ("table", buffer.table)];
        metrics::counter!(metric::ROWS, &labels).increment(rows.len() as u64);
        metrics::counter!(metric::FILES, &labels).increment(1);
        Ok(())
    }

    /// Writes every waiting file, then the manifest.
    async fn write_all(&mut self) -> Result<(), ParquetSinkError> {
        if self.buffers.is_empty() {
            return Ok(());
        }
        let buffers: Vec<Buffer> = self.buffers.drain().map(|(_, b)| b).collect();
        for buffer in buffers {
            self.write_file(buffer).await?;
        }
        self.write_manifest().await
    }

    async fn write_manifest(&self) -> Result<(), ParquetSinkError> {
        let uri = format!("{}/_sluice_manifest.json", self.root);
        let body = serde_json::json!({
            "sink": self.config.name,
            "offsets": crate::iceberg::commit::offsets_value(&self.durable),
            "files_this_run": self.files,
            "layout": "<table>/date=YYYY-MM-DD/<topic>.p<partition>.<first offset>-<last offset>.parquet",
        });
        Ok(self
            .storage()
            .put(&uri, format!("{body:#}\n").into_bytes().into())
            .await?)
    }

    fn waiting(&self) -> (usize, Option<Instant>) {
        (
            self.buffers.values().map(|b| b.bytes).sum(),
            self.buffers.values().map(|b| b.since).min(),
        )
    }
}

impl ChangeSink for ParquetSink {
    type Error = ParquetSinkError;

    async fn open(&mut self) -> Result<Option<Offsets>, ParquetSinkError> {
        self.buffers.clear();
        let root = root(&self.config);
        let files = Files::new(&self.config.s3, &HashMap::new());
        files.check(&root)?;
        let (found, removed) = scan(&files, &root).await?;
        self.storage = Some(files);
        self.root = root.clone();
        if removed > 0 {
            tracing::warn!(files = removed, "removed temporary files an interrupted write left (their changes are written again from the log)");
        }
        let mut offsets = Offsets::new();
        for (topic, partition, last) in found {
            let next = offsets.entry((topic, partition)).or_insert(0);
            *next = (*next).max(last + 1);
        }
        tracing::info!(path = %root, partitions = offsets.len(), "Parquet sink open");
        self.durable = offsets.clone();
        Ok(Some(offsets))
    }

    fn applied(&self) -> Option<&Offsets> {
        Some(&self.durable)
    }

    fn resume_from(&mut self, offsets: &Offsets) {
        self.durable = offsets.clone();
    }

    async fn write(&mut self, batch: ChangeBatch<'_>) -> Result<(), ParquetSinkError> {
        let mut dead = Vec::new();
        for sourced in &batch.changes {
            let change = &sourced.change;
            if change.op == Op::Message {
                continue;
            }
            let record = &batch.records[sourced.record];
            let table =
                crate::names::fill_template(&self.config.table, &record.topic, &change.table.table);
            let date = date_of(change.commit_ts_us);
            let key = (table, Arc::clone(&record.topic), record.partition);
            // A file holds one table version and one date: another starts the next file.
            let fits = self.buffers.get(&key).is_some_and(|b| {
                (Arc::ptr_eq(&b.version, &change.table)
                    || b.version.columns == change.table.columns)
                    && b.date == date
            });
            if !fits {
                if let Some(full) = self.buffers.remove(&key) {
                    self.write_file(full).await?;
                    self.write_manifest().await?;
                }
            }
            let offset = record.record.offset;
            let dir = format!("{}/{}/date={date}", self.root, key.0);
            let table = key.0.clone();
            let buffer = self
                .buffers
                .entry(key)
                .or_insert_with_key(|(_, topic, partition)| {
                    let schema = new_schema(&change.table, true);
                    Buffer {
                        dir,
                        table,
                        topic: Arc::clone(topic),
                        partition: *partition,
                        version: Arc::clone(&change.table),
                        sources: sources(&schema, &change.table),
                        schema,
                        date: date.clone(),
                        rows: Vec::new(),
                        first: offset,
                        last: offset,
                        bytes: 0,
                        since: Instant::now(),
                    }
                });
            match change_row(
                &buffer.schema,
                &buffer.sources,
                change,
                record.partition,
                offset,
            ) {
                Ok(Some(row)) => {
                    if buffer.rows.is_empty() {
                        buffer.first = offset;
                    }
                    buffer.last = offset;
                    buffer.bytes += row.iter().map(cells::size).sum::<usize>() + 24;
                    buffer.rows.push(row);
                }
                Ok(None) => {}
                Err(reason) => {
                    if self.dead_letters.is_none() {
                        return Err(ParquetSinkError::Rejected(format!(
                            "{} offset {offset}: {reason}; set dead_letter_topic to divert such \
                             changes and go on",
                            record.topic
                        )));
                    }
                    dead.push(DeadLetter {
                        record: record.clone(),
                        error: reason,
                    });
                }
            }
        }
        crate::replica::deliver_dead_letters(self.dead_letters.as_ref(), dead).await?;
        let (bytes, since) = self.waiting();
        if bytes >= self.config.roll_bytes
            || since.is_some_and(|s| s.elapsed() >= self.config.roll_interval())
        {
            self.catching_up |= bytes >= self.config.roll_bytes;
            self.write_all().await?;
        }
        Ok(())
    }

    /// The runtime found nothing new: what waits is written once its interval is up, or at
    /// once at the end of a backlog.
    async fn flush(&mut self) -> Result<(), ParquetSinkError> {
        if let ((_, Some(since)), false) = (self.waiting(), std::mem::take(&mut self.catching_up)) {
            let wait = self.config.roll_interval().saturating_sub(since.elapsed());
            if wait > Duration::ZERO {
                tokio::time::sleep(wait).await;
            }
        }
        self.write_all().await
    }

    async fn close(&mut self) -> Result<(), ParquetSinkError> {
        if self.storage.is_some() {
            self.write_all().await?;
        }
        Ok(())
    }
}

/// `sluice check --connect`: a file can be written, listed and removed where the files go.
pub async fn probe(config: &ParquetSinkConfig) -> Result<String, ParquetSinkError> {
    let root = root(config);
    let files = Files::new(&config.s3, &HashMap::new());
    let probe = format!("{root}/._sluice_probe.tmp");
    files
        .put(&probe, bytes::Bytes::from_static(b"probe"))
        .await?;
    files.list(&root).await?;
    files.delete(&probe).await?;
    Ok(format!("{} {root} writable", files.describe(&root)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_carry_their_offsets() {
        let name = file_name("shop.public.items", 3, 10, 2000);
        assert_eq!(
            name,
            "shop.public.items.p3.00000000000000000010-00000000000000002000.parquet"
        );
        assert_eq!(
            parse_name(&name),
            Some(("shop.public.items".into(), 3, 2000))
        );
        assert_eq!(parse_name("notes.txt"), None);
        assert_eq!(date_of(86_400_000_000 * 365), "1971-01-01");
    }
}
