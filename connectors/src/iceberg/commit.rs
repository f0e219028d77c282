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

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{json, Value as Json};
use sluice_core::sink::Offsets;

use super::catalog::{Catalog, Snapshot, TableMetadata};
use super::cells::{push_key, Cell};
use super::manifest::{
    self, Entry, ManifestFile, Written, CONTENT_DATA, CONTENT_EQUALITY_DELETES,
    CONTENT_POSITION_DELETES,
};
use super::parquet::{self, DELETE_FILE_PATH_ID, DELETE_POS_ID};
use super::schema::Schema;
use super::table::{fill_unavailable, local_dir, Index, Kind, Location, Pending, Row};

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

fn read(uri: &str) -> Result<Vec<u8>, String> {
    let path = local_dir(uri)?;
    std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))
}

/// The manifests of `snapshot`.
fn manifests(snapshot: &Snapshot) -> Result<Vec<ManifestFile>, String> {
    manifest::read_manifest_list(&read(&snapshot.manifest_list)?, &snapshot.manifest_list)
}

/// Rebuilds the index of a current-state table at `snapshot`: where each key's live row is.
pub fn build_index(
    schema: &Schema,
    snapshot: Option<&Snapshot>,
    shown: &str,
) -> Result<Index, String> {
    let mut index = Index::default();
    let Some(snapshot) = snapshot else {
        return Ok(index);
    };
    let mut data_files = Vec::new();
    let mut deleted: HashMap<String, HashSet<i64>> = HashMap::new();
    for manifest in manifests(snapshot)? {
        for entry in manifest::read_manifest(&read(&manifest.path)?, &manifest, &manifest.path)? {
            match entry.content {
                CONTENT_DATA => data_files.push(entry.path),
                CONTENT_POSITION_DELETES => {
                    let rows = parquet::read_columns(
                        &local_dir(&entry.path)?,
                        &[DELETE_FILE_PATH_ID, DELETE_POS_ID],
                    )?;
                    for row in rows {
                        if let [Cell::String(file), Cell::Long(pos)] = &row[..] {
                            deleted.entry(file.to_string()).or_default().insert(*pos);
                        }
                    }
                }
                CONTENT_EQUALITY_DELETES => {
                    return Err(format!(
                        "{shown} has equality delete files (another engine wrote them): sluice \
                         keeps an index of where each key's row is and cannot follow equality \
                         deletes; rewrite them as position deletes (Spark's \
                         rewrite_position_delete_files or rewrite_data_files), or write to a new \
                         table"
                    ))
                }
                other => return Err(format!("{shown}: a file of unknown content {other}")),
            }
        }
    }
    let ids = &schema.identifier_field_ids;
    for path in data_files {
        let file = index.file_id(&path);
        let gone = deleted.get(&path);
        for (pos, cells) in parquet::read_columns(&local_dir(&path)?, ids)?
            .iter()
            .enumerate()
        {
            if gone.is_some_and(|g| g.contains(&(pos as i64))) {
                continue;
            }
            let mut key = Vec::with_capacity(16);
            for cell in cells {
                push_key(&mut key, cell);
            }
            index.rows.insert(
                key.into_boxed_slice(),
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
    pub dir: PathBuf,
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

/// Removes files an interrupted commit of `sink` left in the table's directory (those for a
/// sequence number above the table's last); how many.
pub fn remove_leftovers(dir: &Path, sink: &str, last_sequence: i64) -> Result<usize, String> {
    let mut removed = 0;
    for sub in ["data", "metadata"] {
        let Ok(entries) = std::fs::read_dir(dir.join(sub)) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let name = name.strip_prefix("snap-").unwrap_or(&name);
            let Some((sequence, rest)) = name.split_once('.') else {
                continue;
            };
            let ours = rest.starts_with(&format!("{sink}."));
            if let (true, Ok(sequence)) = (ours, sequence.parse::<i64>()) {
                if sequence > last_sequence {
                    std::fs::remove_file(entry.path())
                        .map_err(|e| format!("{}: {e}", entry.path().display()))?;
                    removed += 1;
                }
            }
        }
    }
    Ok(removed)
}

impl Job {
    /// Writes the commit's files and returns the snapshot to add.
    pub fn run(mut self) -> Result<Prepared, String> {
        let sequence = self.meta.last_sequence_number + 1;
        let id = snapshot_id(&self.meta.uuid, sequence);
        let prefix = format!("{}{id}-", file_prefix(sequence, &self.sink));
        let location = self.meta.location.trim_end_matches('/').to_owned();
        for sub in ["data", "metadata"] {
            std::fs::create_dir_all(self.dir.join(sub))
                .map_err(|e| format!("{}: {e}", self.dir.join(sub).display()))?;
        }
        let schema = self.meta.schema.clone();
        let mut index = self.index.take();
        if self.kind == Kind::Current && index.is_none() {
            index = Some(build_index(
                &schema,
                self.meta.current.as_ref(),
                &self.shown,
            )?);
        }
        if self.pending.truncated {
            index = index.map(|_| Index::default());
        }
        let mut rows: Vec<Row> = std::mem::take(&mut self.pending.rows)
            .into_iter()
            .flatten()
            .collect();
        let unfilled = match &index {
            Some(index) => fill_from_table(&mut rows, index, &schema)?,
            None => 0,
        };

        // Rows the waiting keys replace in committed files.
        let mut deletes: Vec<(Arc<str>, i64)> = Vec::new();
        if let Some(index) = &mut index {
            for key in self.pending.keys.keys() {
                if let Some(at) = index.rows.remove(key) {
                    deletes.push((
                        Arc::clone(&index.files[at.file as usize]),
                        i64::from(at.pos),
                    ));
                }
            }
        }

        // The rows, in files of about target_file_bytes.
        let mut data_files = Vec::new();
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
            let written = parquet::write_data_file(
                &self.dir.join("data").join(&name),
                &uri,
                &schema.fields,
                &cells,
            )?;
            if let (Some(index), Kind::Current) = (&mut index, self.kind) {
                let file = index.file_id(&uri);
                for (pos, row) in rows[start..end].iter().enumerate() {
                    index.rows.insert(
                        row.key.clone(),
                        Location {
                            file,
                            pos: pos as u32,
                        },
                    );
                }
            }
            data_files.push(written);
            start = end;
        }
        let mut delete_files = Vec::new();
        if !deletes.is_empty() {
            let name = format!("{prefix}deletes.parquet");
            let uri = format!("{location}/data/{name}");
            delete_files.push(parquet::write_delete_file(
                &self.dir.join("data").join(&name),
                &uri,
                deletes,
            )?);
        }

        // Manifests: the new ones first, then the parent's (none after a truncate).
        let schema_json = schema.to_json();
        let mut list = Vec::new();
        for (files, content, label) in [
            (&data_files, CONTENT_DATA, "data"),
            (&delete_files, CONTENT_POSITION_DELETES, "deletes"),
        ] {
            if files.is_empty() {
                continue;
            }
            let added: Vec<Written> = files.iter().map(Written::Added).collect();
            let bytes = manifest::write_manifest(&added, content, id, &schema_json, schema.id)?;
            let name = format!("{prefix}m-{label}.avro");
            write_synced(&self.dir.join("metadata").join(&name), &bytes)?;
            list.push(ManifestFile {
                path: format!("{location}/metadata/{name}"),
                length: bytes.len() as i64,
                spec_id: 0,
                content,
                sequence_number: sequence,
                min_sequence_number: sequence,
                added_snapshot_id: id,
                added_files: files.len() as i32,
                existing_files: 0,
                deleted_files: 0,
                added_rows: files.iter().map(|f| f.record_count).sum(),
                existing_rows: 0,
                deleted_rows: 0,
            });
        }
        let parent = self.meta.current.as_ref();
        if let (Some(parent), false) = (parent, self.pending.truncated) {
            let carried = manifests(parent)?;
            if carried.len() >= MERGE_MANIFESTS_AT {
                list.extend(merge(
                    &carried, &self.dir, &location, &prefix, id, sequence, &schema,
                )?);
            } else {
                list.extend(carried);
            }
        }
        let list_name = format!("snap-{prefix}list.avro");
        let bytes = manifest::write_manifest_list(&list, id, parent.map(|p| p.id), sequence)?;
        write_synced(&self.dir.join("metadata").join(&list_name), &bytes)?;
        sync_dir(&self.dir.join("data"))?;
        sync_dir(&self.dir.join("metadata"))?;

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
    dir: &Path,
    location: &str,
    prefix: &str,
    snapshot_id: i64,
    sequence: i64,
    schema: &Schema,
) -> Result<Vec<ManifestFile>, String> {
    let mut by_content: Vec<(i32, Vec<Entry>)> = Vec::new();
    for m in carried {
        let entries = manifest::read_manifest(&read(&m.path)?, m, &m.path)?;
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
            manifest::write_manifest(&written, content, snapshot_id, &schema.to_json(), schema.id)?;
        let name = format!("{prefix}m-merged-{content}.avro");
        write_synced(&dir.join("metadata").join(&name), &bytes)?;
        merged.push(ManifestFile {
            path: format!("{location}/metadata/{name}"),
            length: bytes.len() as i64,
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
fn fill_from_table(rows: &mut [Row], index: &Index, schema: &Schema) -> Result<usize, String> {
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
        let committed = parquet::read_columns(&local_dir(&index.files[file as usize])?, &ids)?;
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

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write;
    let mut file = std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("{}: {e}", path.display()))
}

fn sync_dir(dir: &Path) -> Result<(), String> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| format!("{}: {e}", dir.display()))
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
        if let (true, Ok(path)) = (ours, local_dir(list)) {
            let _ = std::fs::remove_file(path);
        }
    }
    tracing::debug!(table = %format!("{namespace}.{name}"), expired = ids.len(), "expired old snapshots");
    Ok(Some(after))
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

    #[test]
    fn leftovers_of_an_interrupted_commit_are_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("data")).unwrap();
        std::fs::create_dir_all(dir.path().join("metadata")).unwrap();
        for name in [
            "data/0000000003.s1.9-0.parquet",
            "data/0000000004.s1.9-0.parquet",
            "data/0000000004.s1-2.9-0.parquet",
            "metadata/snap-0000000004.s1.9-list.avro",
            "metadata/v3.metadata.json",
        ] {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        assert_eq!(remove_leftovers(dir.path(), "s1", 3).unwrap(), 2);
        assert!(dir.path().join("data/0000000003.s1.9-0.parquet").exists());
        assert!(dir.path().join("data/0000000004.s1-2.9-0.parquet").exists());
        assert!(dir.path().join("metadata/v3.metadata.json").exists());
    }
}
