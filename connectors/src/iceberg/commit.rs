//! Commits: what waits for a table becomes a new snapshot. The files are written first (off
//! the async runtime): the rows as data files, the rows they replace as one position delete
//! file, a manifest for each, and a manifest list that adds them to the parent snapshot's
//! manifests. Then one catalog commit adds the snapshot, with the sink's offsets in its
//! summary, if the table is still at the parent snapshot. A crash before the commit leaves
//! files no snapshot names, which the next start removes (their names carry the sequence
//! number they were meant for and the sink's name); a crash after it is a committed snapshot
//! whose offsets the next start resumes from. Either way no row is lost or written twice.
//!
//! Also here: the index of a current-state table, rebuilt from its snapshot (key columns of
//! its data files, minus its position deletes) when the sink first writes to it.

use std::collections::hash_map;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;

use bytes::Bytes;
use serde_json::{json, Value as Json};
use sluice_core::sink::Offsets;

use super::catalog::{Catalog, Snapshot, TableMetadata};
use super::cells::{Cell, RowKey};
use super::manifest::{
    self, Entry, ManifestFile, Written, CONTENT_DATA, CONTENT_EQUALITY_DELETES,
    CONTENT_POSITION_DELETES,
};
use super::parquet::{self, DELETE_FILE_PATH_ID, DELETE_POS_ID};
use super::schema::Schema;
use super::table::{fill_unavailable, Index, Kind, Location, Pending, Row};
use crate::files::{Files, FilesError};
use crate::iceberg::IcebergError;

/// The summary key of a sink's offsets: `sluice.offsets.<sink>`.
pub fn offsets_key(sink: &str) -> String {
    format!("sluice.offsets.{sink}")
}

/// Offsets as a snapshot summary keeps them: `{"topic": {"partition": next offset}}`.
pub fn offsets_json(offsets: &Offsets) -> String {
    offsets_value(offsets).to_string()
}

/// Offsets as JSON: `{"topic": {"partition": next offset}}`.
pub fn offsets_value(offsets: &Offsets) -> Json {
    let mut by_topic = serde_json::Map::new();
    for ((topic, partition), offset) in offsets {
        by_topic
            .entry(topic.clone())
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .expect("made as an object")
            .insert(partition.to_string(), json!(offset));
    }
    Json::Object(by_topic)
}

/// The offsets a summary value holds (None when it is not one sluice wrote).
pub fn parse_offsets(text: &str) -> Option<Offsets> {
    let json: Json = serde_json::from_str(text).ok()?;
    let mut offsets = Offsets::new();
    for (topic, partitions) in json.as_object()? {
        for (partition, offset) in partitions.as_object()? {
            offsets.insert((topic.clone(), partition.parse().ok()?), offset.as_u64()?);
        }
    }
    Some(offsets)
}

/// Runs a file operation from a commit's blocking thread (a directory or S3 alike).
fn block<T>(operation: impl Future<Output = Result<T, FilesError>>) -> Result<T, IcebergError> {
    Ok(tokio::runtime::Handle::current().block_on(operation)?)
}

fn read(files: &Files, uri: &str) -> Result<Bytes, IcebergError> {
    block(files.get(uri))
}

/// A corrupt or unreadable file's error.
fn bad(reason: String) -> IcebergError {
    IcebergError::Files(reason)
}

/// The manifests of `snapshot`.
fn manifests(files: &Files, snapshot: &Snapshot) -> Result<Vec<ManifestFile>, IcebergError> {
    manifest::read_manifest_list(
        &read(files, &snapshot.manifest_list)?,
        &snapshot.manifest_list,
    )
    .map_err(bad)
}

/// Rebuilds the index of a current-state table at `snapshot`: where each key's live row is.
pub fn build_index(
    files: &Files,
    schema: &Schema,
    snapshot: Option<&Snapshot>,
    shown: &str,
) -> Result<Index, IcebergError> {
    let mut index = Index::default();
    let Some(snapshot) = snapshot else {
        return Ok(index);
    };
    let mut data_files = Vec::new();
    let mut deleted: HashMap<String, HashSet<i64>> = HashMap::new();
    for manifest in manifests(files, snapshot)? {
        let bytes = read(files, &manifest.path)?;
        for entry in manifest::read_manifest(&bytes, &manifest, &manifest.path).map_err(bad)? {
            match entry.content {
                CONTENT_DATA => data_files.push(entry.path),
                CONTENT_POSITION_DELETES => {
                    let rows = parquet::read_columns(
                        read(files, &entry.path)?,
                        &entry.path,
                        &[DELETE_FILE_PATH_ID, DELETE_POS_ID],
                    )
                    .map_err(bad)?;
                    for row in rows {
                        if let [Cell::String(file), Cell::Long(pos)] = &row[..] {
                            deleted.entry(file.to_string()).or_default().insert(*pos);
                        }
                    }
                }
                CONTENT_EQUALITY_DELETES => {
                    return Err(IcebergError::Table(format!(
                        "{shown} has equality delete files (another engine wrote them): sluice \
                         keeps an index of where each key's row is and cannot follow equality \
                         deletes; rewrite them as position deletes (Spark's \
                         rewrite_position_delete_files or rewrite_data_files), or write to a new \
                         table"
                    )))
                }
                other => {
                    return Err(IcebergError::Table(format!(
                        "{shown}: a file of unknown content {other}"
                    )))
                }
            }
        }
    }
    let ids = &schema.identifier_field_ids;
    let mut scratch = Vec::new();
    for path in data_files {
        let file = index.file_id(&path);
        let gone = deleted.get(&path);
        for (pos, cells) in parquet::read_columns(read(files, &path)?, &path, ids)
            .map_err(bad)?
            .iter()
            .enumerate()
        {
            if gone.is_some_and(|g| g.contains(&(pos as i64))) {
                continue;
            }
            index.rows.insert(
                RowKey::of(&mut scratch, cells),
                Location {
                    file,
                    pos: pos as u32,
                },
            );
        }
    }
    Ok(index)
}

/// Everything a commit's files are made from, moved off the async runtime.
pub struct Job {
    pub sink: String,
    pub kind: Kind,
    pub meta: TableMetadata,
    pub files: Arc<Files>,
    /// The table's name, for messages.
    pub shown: String,
    pub pending: Pending,
    pub index: Option<Index>,
    /// The offsets the snapshot stores: the table's committed ones and the waiting ones.
    pub offsets: Offsets,
    pub target_file_bytes: usize,
}

/// A commit's files, written; what the catalog is asked to add.
pub struct Prepared {
    pub snapshot: Json,
    pub snapshot_id: i64,
    pub index: Option<Index>,
    pub rows: usize,
    pub deletes: usize,
    /// Row values the source did not send and the table did not have either.
    pub unfilled: usize,
}

/// A random positive snapshot id.
fn snapshot_id(uuid: &str, sequence: i64) -> i64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write(uuid.as_bytes());
    hasher.write_i64(sequence);
    if let Ok(now) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        hasher.write_u128(now.as_nanos());
    }
    (hasher.finish() >> 1) as i64
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The prefix of every file a commit of `sink` at `sequence` writes, which tells a removable
/// leftover from everything else.
pub fn file_prefix(sequence: i64, sink: &str) -> String {
    format!("{sequence:010}.{sink}.")
}

/// Removes the files named (leftovers of an interrupted commit).
pub async fn remove_files(files: &Files, uris: &[String]) -> Result<(), FilesError> {
    for uri in uris {
        files.delete(uri).await?;
    }
    Ok(())
}

/// The files an interrupted commit of `sink` left at the table's `location`: those for a
/// sequence number above the table's last, and half-written temporary ones.
pub async fn leftovers(
    files: &Files,
    location: &str,
    sink: &str,
    last_sequence: i64,
) -> Result<Vec<String>, FilesError> {
    let mut found = Vec::new();
    let location = location.trim_end_matches('/');
    for sub in ["data", "metadata"] {
        for file in files.list(&format!("{location}/{sub}")).await? {
            if file.relative.contains('/') {
                continue;
            }
            let name = file.relative.as_str();
            let name = name
                .strip_prefix('.')
                .and_then(|n| n.strip_suffix(".tmp"))
                .unwrap_or(name);
            let name = name.strip_prefix("snap-").unwrap_or(name);
            let Some((sequence, rest)) = name.split_once('.') else {
                continue;
            };
            let ours = rest.starts_with(&format!("{sink}."));
            if let (true, Ok(sequence)) = (ours, sequence.parse::<i64>()) {
                if sequence > last_sequence {
                    found.push(file.uri);
                }
            }
        }
    }
    Ok(found)
}

impl Job {
    /// Writes the commit's files and returns the snapshot to add.
    pub fn run(mut self) -> Result<Prepared, IcebergError> {
        let sequence = self.meta.last_sequence_number + 1;
        let id = snapshot_id(&self.meta.uuid, sequence);
        let prefix = format!("{}{id}-", file_prefix(sequence, &self.sink));
        let location = self.meta.location.trim_end_matches('/').to_owned();
        let files = Arc::clone(&self.files);
        let schema = self.meta.schema.clone();
        let mut index = self.index.take();
        if self.kind == Kind::Current && index.is_none() {
            index = Some(build_index(
                &files,
                &schema,
                self.meta.current.as_ref(),
                &self.shown,
            )?);
        }
        if self.pending.truncated {
            index = index.map(|_| Index::default());
        }
        // Each slot's place among the rows written (a key's row is found by its slot).
        let mut places = Vec::with_capacity(self.pending.rows.len());
        let mut rows: Vec<Row> = Vec::with_capacity(self.pending.rows.len());
        for slot in std::mem::take(&mut self.pending.rows) {
            places.push(rows.len() as u32);
            rows.extend(slot);
        }
        let unfilled = match &index {
            Some(index) => fill_from_table(&files, &mut rows, index, &schema)?,
            None => 0,
        };

        // The rows, in files of about target_file_bytes; where each file starts among them.
        let mut data_files = Vec::new();
        let mut starts: Vec<(usize, u32)> = Vec::new();
        let mut start = 0;
        while start < rows.len() {
            let mut end = start;
            let mut bytes = 0;
            while end < rows.len() && (end == start || bytes < self.target_file_bytes) {
                bytes += rows[end]
                    .cells
                    .iter()
                    .map(super::cells::size)
                    .sum::<usize>();
                end += 1;
            }
            let name = format!("{prefix}{}.parquet", data_files.len());
            let uri = format!("{location}/data/{name}");
            let cells: Vec<&[Cell]> = rows[start..end].iter().map(|r| &r.cells[..]).collect();
            let (bytes, written) =
                parquet::write_data_file(&uri, &schema.fields, &cells).map_err(bad)?;
            block(files.put(&uri, bytes.into()))?;
            if let (Some(index), Kind::Current) = (&mut index, self.kind) {
                starts.push((start, index.file_id(&uri)));
            }
            data_files.push(written);
            start = end;
        }
        let rows_written = rows.len();
        drop(rows);

        // The index follows: each waiting key's committed row is deleted (its place becomes
        // a position delete), and the key's new row, if any, is where it was just written.
        let mut deletes: Vec<(Arc<str>, i64)> = Vec::new();
        if let Some(index) = &mut index {
            let keys = std::mem::take(&mut self.pending.keys);
            index.rows.reserve(rows_written);
            let committed = !index.rows.is_empty();
            for (key, slot) in keys {
                let written = match (slot, self.kind) {
                    (Some(slot), Kind::Current) => {
                        let place = places[slot] as usize;
                        let file = starts.partition_point(|(start, _)| *start <= place) - 1;
                        let (start, file) = starts[file];
                        Some(Location {
                            file,
                            pos: (place - start) as u32,
                        })
                    }
                    _ => None,
                };
                // (One lookup per key: the old place is taken as the new one goes in.)
                let replaced = match (written, committed) {
                    (Some(location), false) => {
                        index.rows.insert(key, location);
                        None
                    }
                    (Some(location), true) => match index.rows.entry(key) {
                        hash_map::Entry::Occupied(mut entry) => {
                            Some(std::mem::replace(entry.get_mut(), location))
                        }
                        hash_map::Entry::Vacant(entry) => {
                            entry.insert(location);
                            None
                        }
                    },
                    (None, true) => index.rows.remove(&key),
                    (None, false) => None,
                };
                if let Some(at) = replaced {
                    deletes.push((
                        Arc::clone(&index.files[at.file as usize]),
                        i64::from(at.pos),
                    ));
                }
            }
        }
        let mut delete_files = Vec::new();
        if !deletes.is_empty() {
            let name = format!("{prefix}deletes.parquet");
            let uri = format!("{location}/data/{name}");
            let (bytes, written) = parquet::write_delete_file(&uri, deletes).map_err(bad)?;
            block(files.put(&uri, bytes.into()))?;
            delete_files.push(written);
        }

        // Manifests: the new ones first, then the parent's (none after a truncate).
        let schema_json = schema.to_json();
        let mut list = Vec::new();
        for (written, content, label) in [
            (&data_files, CONTENT_DATA, "data"),
            (&delete_files, CONTENT_POSITION_DELETES, "deletes"),
        ] {
            if written.is_empty() {
                continue;
            }
            let added: Vec<Written> = written.iter().map(Written::Added).collect();
            let bytes = manifest::write_manifest(&added, content, id, &schema_json, schema.id)
                .map_err(bad)?;
            let path = format!("{location}/metadata/{prefix}m-{label}.avro");
            let length = bytes.len() as i64;
            block(files.put(&path, bytes.into()))?;
            list.push(ManifestFile {
                path,
                length,
                spec_id: 0,
                content,
                sequence_number: sequence,
                min_sequence_number: sequence,
                added_snapshot_id: id,
                added_files: written.len() as i32,
                existing_files: 0,
                deleted_files: 0,
                added_rows: written.iter().map(|f| f.record_count).sum(),
                existing_rows: 0,
                deleted_rows: 0,
            });
        }
        let parent = self.meta.current.as_ref();
        if let (Some(parent), false) = (parent, self.pending.truncated) {
            let carried = manifests(&files, parent)?;
            if carried.len() >= MERGE_MANIFESTS_AT {
                list.extend(merge(
                    &carried, &files, &location, &prefix, id, sequence, &schema,
                )?);
            } else {
                list.extend(carried);
            }
        }
        let list_name = format!("snap-{prefix}list.avro");
        let bytes = manifest::write_manifest_list(&list, id, parent.map(|p| p.id), sequence)
            .map_err(bad)?;
        block(files.put(&format!("{location}/metadata/{list_name}"), bytes.into()))?;

        let added_rows: i64 = data_files.iter().map(|f| f.record_count).sum();
        let deleted_rows: i64 = delete_files.iter().map(|f| f.record_count).sum();
        let operation = if deleted_rows > 0 || self.pending.truncated {
            "overwrite"
        } else {
            "append"
        };
        let mut summary = serde_json::Map::new();
        let mut put = |k: &str, v: String| {
            summary.insert(k.to_owned(), Json::String(v));
        };
        put("operation", operation.into());
        put("added-data-files", data_files.len().to_string());
        put("added-records", added_rows.to_string());
        put(
            "added-files-size",
            data_files
                .iter()
                .map(|f| f.file_size)
                .sum::<i64>()
                .to_string(),
        );
        if !delete_files.is_empty() {
            put("added-delete-files", delete_files.len().to_string());
            put(
                "added-position-delete-files",
                delete_files.len().to_string(),
            );
            put("added-position-deletes", deleted_rows.to_string());
        }
        // Totals, as Iceberg's own writers keep them (from the parent's, when it has them).
        let parent_total = |key: &str| -> Option<i64> {
            if self.pending.truncated {
                return Some(0);
            }
            match parent {
                None => Some(0),
                Some(p) => p.summary.get(key).and_then(|v| v.parse().ok()),
            }
        };
        if let Some(total) = parent_total("total-records") {
            put(
                "total-records",
                (total + added_rows - deleted_rows).to_string(),
            );
        }
        if let Some(total) = parent_total("total-data-files") {
            put(
                "total-data-files",
                (total + data_files.len() as i64).to_string(),
            );
        }
        put(&offsets_key(&self.sink), offsets_json(&self.offsets));
        let mut snapshot = json!({
            "snapshot-id": id,
            "sequence-number": sequence,
            "timestamp-ms": now_ms(),
            "manifest-list": format!("{location}/metadata/{list_name}"),
            "summary": summary,
            "schema-id": schema.id,
        });
        if let Some(parent) = parent {
            snapshot["parent-snapshot-id"] = json!(parent.id);
        }
        Ok(Prepared {
            snapshot,
            snapshot_id: id,
            index,
            rows: added_rows as usize,
            deletes: deleted_rows as usize,
            unfilled,
        })
    }
}

/// How many manifests a snapshot carries before a commit merges them: each commit adds one
/// or two, and readers open every one of them.
pub const MERGE_MANIFESTS_AT: usize = 32;

/// The manifests `carried` rewritten as one manifest per content (data, deletes), their
/// live files as existing entries with the sequence numbers they had.
fn merge(
    carried: &[ManifestFile],
    files: &Files,
    location: &str,
    prefix: &str,
    snapshot_id: i64,
    sequence: i64,
    schema: &Schema,
) -> Result<Vec<ManifestFile>, IcebergError> {
    let mut by_content: Vec<(i32, Vec<Entry>)> = Vec::new();
    for m in carried {
        let entries = manifest::read_manifest(&read(files, &m.path)?, m, &m.path).map_err(bad)?;
        match by_content.iter_mut().find(|(c, _)| *c == m.content) {
            Some((_, all)) => all.extend(entries),
            None => by_content.push((m.content, entries)),
        }
    }
    let mut merged = Vec::new();
    for (content, entries) in by_content {
        if entries.is_empty() {
            continue;
        }
        let written: Vec<Written> = entries.iter().map(Written::Existing).collect();
        let bytes =
            manifest::write_manifest(&written, content, snapshot_id, &schema.to_json(), schema.id)
                .map_err(bad)?;
        let path = format!("{location}/metadata/{prefix}m-merged-{content}.avro");
        let length = bytes.len() as i64;
        block(files.put(&path, bytes.into()))?;
        merged.push(ManifestFile {
            path,
            length,
            spec_id: 0,
            content,
            sequence_number: sequence,
            min_sequence_number: entries
                .iter()
                .map(|e| e.sequence_number)
                .min()
                .unwrap_or(sequence),
            added_snapshot_id: snapshot_id,
            added_files: 0,
            existing_files: entries.len() as i32,
            deleted_files: 0,
            added_rows: 0,
            existing_rows: entries.iter().map(|e| e.record_count).sum(),
            deleted_rows: 0,
        });
    }
    Ok(merged)
}

/// Fills values the source did not send from the committed rows they update; how many
/// could not be (the table had no such row).
fn fill_from_table(
    files: &Files,
    rows: &mut [Row],
    index: &Index,
    schema: &Schema,
) -> Result<usize, IcebergError> {
    let mut wanted: HashMap<u32, Vec<(usize, u32)>> = HashMap::new();
    let mut unfilled = 0;
    for (at, row) in rows.iter().enumerate() {
        let Some(from) = &row.fill_from else { continue };
        match index.rows.get(from) {
            Some(location) => wanted
                .entry(location.file)
                .or_default()
                .push((at, location.pos)),
            None => unfilled += 1,
        }
    }
    let ids: Vec<i32> = schema.fields.iter().map(|f| f.id).collect();
    for (file, wanted) in wanted {
        let path = &index.files[file as usize];
        let committed = parquet::read_columns(read(files, path)?, path, &ids).map_err(bad)?;
        for (at, pos) in wanted {
            if let Some(old) = committed.get(pos as usize) {
                fill_unavailable(&mut rows[at].cells, old);
            }
        }
    }
    for row in rows.iter_mut() {
        for cell in &mut row.cells {
            if matches!(cell, Cell::Unavailable) {
                *cell = Cell::Null;
            }
        }
    }
    Ok(unfilled)
}

/// The catalog requirements and updates that add `prepared` on top of `meta`'s snapshot.
pub fn snapshot_updates(meta: &TableMetadata, prepared: &Prepared) -> (Vec<Json>, Vec<Json>) {
    let requirements = vec![
        json!({"type": "assert-table-uuid", "uuid": meta.uuid}),
        json!({
            "type": "assert-ref-snapshot-id",
            "ref": "main",
            "snapshot-id": meta.current.as_ref().map(|s| s.id),
        }),
    ];
    let updates = vec![
        json!({"action": "add-snapshot", "snapshot": prepared.snapshot}),
        json!({
            "action": "set-snapshot-ref",
            "ref-name": "main",
            "type": "branch",
            "snapshot-id": prepared.snapshot_id,
        }),
    ];
    (requirements, updates)
}

/// The catalog requirements and updates that make `next` the table's schema.
pub fn schema_updates(meta: &TableMetadata, next: &Schema) -> (Vec<Json>, Vec<Json>) {
    let requirements = vec![
        json!({"type": "assert-table-uuid", "uuid": meta.uuid}),
        json!({"type": "assert-current-schema-id", "current-schema-id": meta.schema.id}),
    ];
    let updates = vec![
        json!({"action": "add-schema", "schema": next.to_json(), "last-column-id": next.highest_id()}),
        json!({"action": "set-current-schema", "schema-id": -1}),
    ];
    (requirements, updates)
}

/// Expires the table's snapshots beyond the newest `keep` (once they are `keep` / 10 more, so
/// not at every commit) and removes the manifest lists `sink` wrote for them; the table's
/// metadata after it, or None when nothing was due.
pub async fn expire_snapshots(
    catalog: &Catalog,
    files: &Files,
    namespace: &str,
    name: &str,
    meta: &TableMetadata,
    keep: usize,
    sink: &str,
) -> Result<Option<TableMetadata>, crate::iceberg::IcebergError> {
    if meta.snapshots.len() <= keep + keep / 10 {
        return Ok(None);
    }
    let current = meta.current.as_ref().map(|s| s.id);
    let expired: Vec<&(i64, String)> = meta.snapshots[..meta.snapshots.len() - keep]
        .iter()
        .filter(|(id, _)| Some(*id) != current)
        .collect();
    let ids: Vec<i64> = expired.iter().map(|(id, _)| *id).collect();
    let requirements = vec![serde_json::json!({"type": "assert-table-uuid", "uuid": meta.uuid})];
    let updates = vec![serde_json::json!({"action": "remove-snapshots", "snapshot-ids": ids})];
    let after = catalog
        .commit(namespace, name, requirements, updates)
        .await
        .map_err(|e| crate::iceberg::commit_error(&format!("{namespace}.{name}"), e))?;
    // The lists are the expired snapshots' own; manifests and data files may still be
    // named by kept snapshots and stay.
    let marker = format!(".{sink}.");
    for (_, list) in expired {
        let ours = list
            .rsplit('/')
            .next()
            .is_some_and(|file| file.starts_with("snap-") && file.contains(&marker));
        if ours {
            if let Err(err) = files.delete(list).await {
                tracing::debug!(file = %list, error = %err, "could not remove an expired manifest list");
            }
        }
    }
    tracing::debug!(table = %format!("{namespace}.{name}"), expired = ids.len(), "expired old snapshots");
    Ok(Some(after))
}

/// A test's crash at the one point a kill cannot be timed to hit:
/// `SLUICE_TEST_ABORT_BEFORE_ICEBERG_COMMIT=N` aborts the process once the files of the
/// sink's Nth commit are written and before the catalog hears of them.
pub(super) fn abort_before_commit_for_tests() {
    static COMMITS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let Some(at) = std::env::var("SLUICE_TEST_ABORT_BEFORE_ICEBERG_COMMIT")
        .ok()
        .and_then(|n| n.parse::<usize>().ok())
    else {
        return;
    };
    if COMMITS.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 == at {
        eprintln!("aborting before commit {at}, as SLUICE_TEST_ABORT_BEFORE_ICEBERG_COMMIT asks");
        std::process::abort();
    }
}

/// The sink's offsets a table stores: the floors in its properties overlaid by its current
/// snapshot's summary.
pub(super) fn stored_offsets(meta: &TableMetadata, properties: &Offsets, sink: &str) -> Offsets {
    let mut offsets = properties.clone();
    if let Some(summary) = meta
        .current
        .as_ref()
        .and_then(|s| s.summary.get(&offsets_key(sink)))
        .and_then(|text| parse_offsets(text))
    {
        offsets.extend(summary);
    }
    offsets
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_survive_a_summary() {
        let mut offsets = Offsets::new();
        offsets.insert(("shop.public.items".into(), 0), 42);
        offsets.insert(("shop.public.items".into(), 3), 7);
        let text = offsets_json(&offsets);
        assert_eq!(text, r#"{"shop.public.items":{"0":42,"3":7}}"#);
        assert_eq!(parse_offsets(&text), Some(offsets));
        assert_eq!(parse_offsets("nonsense"), None);
    }

    #[tokio::test]
    async fn leftovers_of_an_interrupted_commit_are_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("data")).unwrap();
        std::fs::create_dir_all(dir.path().join("metadata")).unwrap();
        for name in [
            "data/0000000003.s1.9-0.parquet",
            "data/0000000004.s1.9-0.parquet",
            "data/0000000004.s1-2.9-0.parquet",
            "data/.0000000005.s1.9-0.parquet.tmp",
            "metadata/snap-0000000004.s1.9-list.avro",
            "metadata/v3.metadata.json",
        ] {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        let files = Files::new(&Default::default(), &Default::default());
        let location = format!("file://{}", dir.path().display());
        let found = leftovers(&files, &location, "s1", 3).await.unwrap();
        assert_eq!(found.len(), 3, "{found:?}");
        remove_files(&files, &found).await.unwrap();
        assert!(!dir.path().join("data/0000000004.s1.9-0.parquet").exists());
        assert!(dir.path().join("data/0000000003.s1.9-0.parquet").exists());
        assert!(dir.path().join("data/0000000004.s1-2.9-0.parquet").exists());
        assert!(dir.path().join("metadata/v3.metadata.json").exists());
    }
}
