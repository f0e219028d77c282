//! Iceberg's Avro metadata files: manifests (which data or delete files a snapshot added,
//! with their counts) and manifest lists (a snapshot's manifests), in format v2, with the
//! field ids readers resolve them by; and reading both back, whoever wrote them.

use apache_avro::types::Value as Avro;
use apache_avro::{Reader, Schema as AvroSchema};
use serde_json::{json, Value as Json};

use super::parquet::WrittenFile;

/// `content` of a data file entry and of a manifest.
pub const CONTENT_DATA: i32 = 0;
pub const CONTENT_POSITION_DELETES: i32 = 1;
pub const CONTENT_EQUALITY_DELETES: i32 = 2;

/// `status` of a manifest entry.
const STATUS_ADDED: i32 = 1;
const STATUS_DELETED: i32 = 2;

fn field(name: &str, id: i32, ty: Json) -> Json {
    json!({"name": name, "type": ty, "field-id": id})
}

fn optional(name: &str, id: i32, ty: Json) -> Json {
    json!({"name": name, "type": ["null", ty], "default": null, "field-id": id})
}

fn int_map(name: &str, id: i32, key_id: i32, value_id: i32, value: &str) -> Json {
    optional(
        name,
        id,
        json!({
            "type": "array",
            "logicalType": "map",
            "items": {
                "type": "record",
                "name": format!("k{key_id}_v{value_id}"),
                "fields": [
                    field("key", key_id, json!("int")),
                    field("value", value_id, json!(value)),
                ],
            },
        }),
    )
}

fn list(name: &str, id: i32, element_id: i32, element: &str) -> Json {
    optional(
        name,
        id,
        json!({"type": "array", "items": element, "element-id": element_id}),
    )
}

/// The schema of a v2 manifest's entries (unpartitioned tables: an empty partition record).
fn entry_schema() -> Json {
    let data_file = json!({
        "type": "record",
        "name": "r2",
        "fields": [
            field("content", 134, json!("int")),
            field("file_path", 100, json!("string")),
            field("file_format", 101, json!("string")),
            field("partition", 102, json!({"type": "record", "name": "r102", "fields": []})),
            field("record_count", 103, json!("long")),
            field("file_size_in_bytes", 104, json!("long")),
            int_map("column_sizes", 108, 117, 118, "long"),
            int_map("value_counts", 109, 119, 120, "long"),
            int_map("null_value_counts", 110, 121, 122, "long"),
            int_map("nan_value_counts", 137, 138, 139, "long"),
            int_map("lower_bounds", 125, 126, 127, "bytes"),
            int_map("upper_bounds", 128, 129, 130, "bytes"),
            optional("key_metadata", 131, json!("bytes")),
            list("split_offsets", 132, 133, "long"),
            list("equality_ids", 135, 136, "int"),
            optional("sort_order_id", 140, json!("int")),
        ],
    });
    json!({
        "type": "record",
        "name": "manifest_entry",
        "fields": [
            field("status", 0, json!("int")),
            optional("snapshot_id", 1, json!("long")),
            optional("sequence_number", 3, json!("long")),
            optional("file_sequence_number", 4, json!("long")),
            field("data_file", 2, data_file),
        ],
    })
}

fn list_schema() -> Json {
    let summary = json!({
        "type": "record",
        "name": "r508",
        "fields": [
            field("contains_null", 509, json!("boolean")),
            optional("contains_nan", 518, json!("boolean")),
            optional("lower_bound", 510, json!("bytes")),
            optional("upper_bound", 511, json!("bytes")),
        ],
    });
    json!({
        "type": "record",
        "name": "manifest_file",
        "fields": [
            field("manifest_path", 500, json!("string")),
            field("manifest_length", 501, json!("long")),
            field("partition_spec_id", 502, json!("int")),
            field("content", 517, json!("int")),
            field("sequence_number", 515, json!("long")),
            field("min_sequence_number", 516, json!("long")),
            field("added_snapshot_id", 503, json!("long")),
            field("added_files_count", 504, json!("int")),
            field("existing_files_count", 505, json!("int")),
            field("deleted_files_count", 506, json!("int")),
            field("added_rows_count", 512, json!("long")),
            field("existing_rows_count", 513, json!("long")),
            field("deleted_rows_count", 514, json!("long")),
            optional("partitions", 507, json!({"type": "array", "items": summary, "element-id": 508})),
            optional("key_metadata", 519, json!("bytes")),
        ],
    })
}

/// An Avro object container file of `records` of `schema`, written here rather than with
/// apache-avro's writer because that one re-serialises the schema and drops attributes
/// Iceberg readers need (an array's `"logicalType": "map"`); one block, no compression.
struct Container {
    schema_json: String,
    schema: AvroSchema,
    metadata: Vec<(&'static str, String)>,
    block: Vec<u8>,
    count: i64,
}

fn write_long(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    loop {
        if z < 0x80 {
            out.push(z as u8);
            return;
        }
        out.push((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
}

fn write_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    write_long(out, bytes.len() as i64);
    out.extend_from_slice(bytes);
}

impl Container {
    fn new(schema: Json) -> Container {
        Container {
            schema: AvroSchema::parse(&schema).expect("sluice's manifest schemas are valid Avro"),
            schema_json: schema.to_string(),
            metadata: Vec::new(),
            block: Vec::new(),
            count: 0,
        }
    }

    fn append(&mut self, value: Avro) -> Result<(), String> {
        let datum = apache_avro::writer::datum::GenericDatumWriter::builder(&self.schema)
            .build()
            .and_then(|writer| writer.write_value_to_vec(value))
            .map_err(|e| e.to_string())?;
        self.block.extend_from_slice(&datum);
        self.count += 1;
        Ok(())
    }

    fn finish(self, sync: [u8; 16]) -> Vec<u8> {
        let mut out = b"Obj\x01".to_vec();
        write_long(&mut out, self.metadata.len() as i64 + 2);
        write_bytes(&mut out, b"avro.schema");
        write_bytes(&mut out, self.schema_json.as_bytes());
        write_bytes(&mut out, b"avro.codec");
        write_bytes(&mut out, b"null");
        for (key, value) in &self.metadata {
            write_bytes(&mut out, key.as_bytes());
            write_bytes(&mut out, value.as_bytes());
        }
        write_long(&mut out, 0);
        out.extend_from_slice(&sync);
        if self.count > 0 {
            write_long(&mut out, self.count);
            write_bytes(&mut out, &self.block);
            out.extend_from_slice(&sync);
        }
        out
    }
}

/// A file's sync marker: any 16 bytes unlikely to occur in its blocks.
fn sync_marker(seed: i64) -> [u8; 16] {
    let mut marker = [0u8; 16];
    marker[..8].copy_from_slice(&seed.to_le_bytes());
    marker[8..].copy_from_slice(&(!seed).rotate_left(17).to_le_bytes());
    marker
}

/// A manifest as a manifest list holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestFile {
    pub path: String,
    pub length: i64,
    pub spec_id: i32,
    pub content: i32,
    pub sequence_number: i64,
    pub min_sequence_number: i64,
    pub added_snapshot_id: i64,
    pub added_files: i32,
    pub existing_files: i32,
    pub deleted_files: i32,
    pub added_rows: i64,
    pub existing_rows: i64,
    pub deleted_rows: i64,
}

/// A live file a manifest names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub content: i32,
    pub path: String,
    pub record_count: i64,
    pub file_size: i64,
    /// The snapshot that added the file.
    pub snapshot_id: i64,
    /// Data and file sequence numbers, inherited ones made explicit.
    pub sequence_number: i64,
    pub file_sequence_number: i64,
}

/// A manifest entry to write: a file added by this snapshot (`Added`, its sequence numbers
/// inherited at commit) or one carried from an earlier manifest (`Existing`).
pub enum Written<'a> {
    Added(&'a WrittenFile),
    Existing(&'a Entry),
}

/// `status` of an entry carried into a rewritten manifest.
const STATUS_EXISTING: i32 = 0;

fn union(value: Avro) -> Avro {
    Avro::Union(
        if matches!(value, Avro::Null) { 0 } else { 1 },
        Box::new(value),
    )
}

fn counts(pairs: &[(i32, i64)]) -> Avro {
    if pairs.is_empty() {
        return union(Avro::Null);
    }
    union(Avro::Array(
        pairs
            .iter()
            .map(|(id, n)| {
                Avro::Record(vec![
                    ("key".into(), Avro::Int(*id)),
                    ("value".into(), Avro::Long(*n)),
                ])
            })
            .collect(),
    ))
}

/// The bytes of a manifest of `files` (all of `content`) added by `snapshot_id`; `schema`
/// is the table schema's JSON, which readers of the manifest find in its metadata.
pub fn write_manifest(
    files: &[Written<'_>],
    content: i32,
    snapshot_id: i64,
    schema: &Json,
    schema_id: i32,
) -> Result<Vec<u8>, String> {
    let mut writer = Container::new(entry_schema());
    writer.metadata = vec![
        ("schema", schema.to_string()),
        ("schema-id", schema_id.to_string()),
        ("partition-spec", "[]".to_owned()),
        ("partition-spec-id", "0".to_owned()),
        ("format-version", "2".to_owned()),
        (
            "content",
            if content == CONTENT_DATA {
                "data"
            } else {
                "deletes"
            }
            .to_owned(),
        ),
    ];
    for written in files {
        let (path, records, size, values, nulls) = match written {
            Written::Added(f) => (
                &f.path,
                f.record_count,
                f.file_size,
                &f.value_counts[..],
                &f.null_counts[..],
            ),
            Written::Existing(e) => (&e.path, e.record_count, e.file_size, &[][..], &[][..]),
        };
        let data_file = Avro::Record(vec![
            ("content".into(), Avro::Int(content)),
            ("file_path".into(), Avro::String(path.clone())),
            ("file_format".into(), Avro::String("PARQUET".into())),
            ("partition".into(), Avro::Record(Vec::new())),
            ("record_count".into(), Avro::Long(records)),
            ("file_size_in_bytes".into(), Avro::Long(size)),
            ("column_sizes".into(), union(Avro::Null)),
            ("value_counts".into(), counts(values)),
            ("null_value_counts".into(), counts(nulls)),
            ("nan_value_counts".into(), union(Avro::Null)),
            ("lower_bounds".into(), union(Avro::Null)),
            ("upper_bounds".into(), union(Avro::Null)),
            ("key_metadata".into(), union(Avro::Null)),
            ("split_offsets".into(), union(Avro::Null)),
            ("equality_ids".into(), union(Avro::Null)),
            ("sort_order_id".into(), union(Avro::Null)),
        ]);
        let (status, added_by, sequence, file_sequence) = match written {
            // Inherited from the manifest list when the snapshot commits.
            Written::Added(_) => (STATUS_ADDED, snapshot_id, Avro::Null, Avro::Null),
            Written::Existing(e) => (
                STATUS_EXISTING,
                e.snapshot_id,
                Avro::Long(e.sequence_number),
                Avro::Long(e.file_sequence_number),
            ),
        };
        let entry = Avro::Record(vec![
            ("status".into(), Avro::Int(status)),
            ("snapshot_id".into(), union(Avro::Long(added_by))),
            ("sequence_number".into(), union(sequence)),
            ("file_sequence_number".into(), union(file_sequence)),
            ("data_file".into(), data_file),
        ]);
        writer.append(entry)?;
    }
    Ok(writer.finish(sync_marker(snapshot_id ^ i64::from(content))))
}

/// The bytes of a manifest list of `manifests`.
pub fn write_manifest_list(
    manifests: &[ManifestFile],
    snapshot_id: i64,
    parent_id: Option<i64>,
    sequence_number: i64,
) -> Result<Vec<u8>, String> {
    let mut writer = Container::new(list_schema());
    let parent = parent_id.map_or_else(|| "null".to_owned(), |id| id.to_string());
    writer.metadata = vec![
        ("snapshot-id", snapshot_id.to_string()),
        ("parent-snapshot-id", parent),
        ("sequence-number", sequence_number.to_string()),
        ("format-version", "2".to_owned()),
    ];
    for m in manifests {
        writer.append(Avro::Record(vec![
            ("manifest_path".into(), Avro::String(m.path.clone())),
            ("manifest_length".into(), Avro::Long(m.length)),
            ("partition_spec_id".into(), Avro::Int(m.spec_id)),
            ("content".into(), Avro::Int(m.content)),
            ("sequence_number".into(), Avro::Long(m.sequence_number)),
            (
                "min_sequence_number".into(),
                Avro::Long(m.min_sequence_number),
            ),
            ("added_snapshot_id".into(), Avro::Long(m.added_snapshot_id)),
            ("added_files_count".into(), Avro::Int(m.added_files)),
            ("existing_files_count".into(), Avro::Int(m.existing_files)),
            ("deleted_files_count".into(), Avro::Int(m.deleted_files)),
            ("added_rows_count".into(), Avro::Long(m.added_rows)),
            ("existing_rows_count".into(), Avro::Long(m.existing_rows)),
            ("deleted_rows_count".into(), Avro::Long(m.deleted_rows)),
            ("partitions".into(), union(Avro::Array(Vec::new()))),
            ("key_metadata".into(), union(Avro::Null)),
        ]))?;
    }
    Ok(writer.finish(sync_marker(snapshot_id)))
}

/// A record's field by name, unions unwrapped (None when absent or null).
fn get<'a>(record: &'a Avro, name: &str) -> Option<&'a Avro> {
    let Avro::Record(fields) = record else {
        return None;
    };
    let mut value = &fields.iter().find(|(n, _)| n == name)?.1;
    while let Avro::Union(_, inner) = value {
        value = inner;
    }
    (!matches!(value, Avro::Null)).then_some(value)
}

fn long(record: &Avro, name: &str) -> Option<i64> {
    match get(record, name)? {
        Avro::Long(v) => Some(*v),
        Avro::Int(v) => Some(i64::from(*v)),
        _ => None,
    }
}

fn string(record: &Avro, name: &str) -> Option<String> {
    match get(record, name)? {
        Avro::String(s) => Some(s.clone()),
        _ => None,
    }
}

fn records(bytes: &[u8], what: &str) -> Result<Vec<Avro>, String> {
    let reader = Reader::new(bytes).map_err(|e| format!("{what}: {e}"))?;
    reader
        .map(|r| r.map_err(|e| format!("{what}: {e}")))
        .collect()
}

/// The manifests of a manifest list (v1 lists read as data manifests of sequence 0).
pub fn read_manifest_list(bytes: &[u8], what: &str) -> Result<Vec<ManifestFile>, String> {
    records(bytes, what)?
        .iter()
        .map(|r| {
            let int = |name| long(r, name).unwrap_or(0);
            Ok(ManifestFile {
                path: string(r, "manifest_path")
                    .ok_or_else(|| format!("{what}: a manifest without path"))?,
                length: int("manifest_length"),
                spec_id: int("partition_spec_id") as i32,
                content: int("content") as i32,
                sequence_number: int("sequence_number"),
                min_sequence_number: int("min_sequence_number"),
                added_snapshot_id: int("added_snapshot_id"),
                added_files: long(r, "added_files_count")
                    .or_else(|| long(r, "added_data_files_count"))
                    .unwrap_or(0) as i32,
                existing_files: long(r, "existing_files_count")
                    .or_else(|| long(r, "existing_data_files_count"))
                    .unwrap_or(0) as i32,
                deleted_files: long(r, "deleted_files_count")
                    .or_else(|| long(r, "deleted_data_files_count"))
                    .unwrap_or(0) as i32,
                added_rows: int("added_rows_count"),
                existing_rows: int("existing_rows_count"),
                deleted_rows: int("deleted_rows_count"),
            })
        })
        .collect()
}

/// The live (added or existing) files a manifest names.
pub fn read_manifest(
    bytes: &[u8],
    manifest: &ManifestFile,
    what: &str,
) -> Result<Vec<Entry>, String> {
    let mut live = Vec::new();
    for entry in records(bytes, what)? {
        if long(&entry, "status") == Some(i64::from(STATUS_DELETED)) {
            continue;
        }
        let file = get(&entry, "data_file")
            .ok_or_else(|| format!("{what}: an entry without data_file"))?;
        live.push(Entry {
            content: long(file, "content").unwrap_or(0) as i32,
            path: string(file, "file_path")
                .ok_or_else(|| format!("{what}: a data file without path"))?,
            record_count: long(file, "record_count").unwrap_or(0),
            file_size: long(file, "file_size_in_bytes").unwrap_or(0),
            snapshot_id: long(&entry, "snapshot_id").unwrap_or(manifest.added_snapshot_id),
            sequence_number: long(&entry, "sequence_number").unwrap_or(manifest.sequence_number),
            file_sequence_number: long(&entry, "file_sequence_number")
                .unwrap_or(manifest.sequence_number),
        });
    }
    Ok(live)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_and_lists_read_back_as_written() {
        let files = [WrittenFile {
            path: "file:///t/data/1.parquet".into(),
            record_count: 3,
            file_size: 100,
            value_counts: vec![(1, 3)],
            null_counts: vec![(1, 0)],
        }];
        let added: Vec<Written> = files.iter().map(Written::Added).collect();
        let bytes =
            write_manifest(&added, CONTENT_DATA, 42, &json!({"type": "struct"}), 0).unwrap();
        let reader = Reader::new(&bytes[..]).unwrap();
        let header = reader.user_metadata();
        assert_eq!(header["content"], b"data");
        let header = String::from_utf8_lossy(&bytes[..2000.min(bytes.len())]).to_string();
        assert!(header.contains(r#""logicalType":"map""#), "{header}");
        let manifest = ManifestFile {
            path: "file:///t/metadata/m.avro".into(),
            length: bytes.len() as i64,
            spec_id: 0,
            content: CONTENT_POSITION_DELETES,
            sequence_number: 5,
            min_sequence_number: 5,
            added_snapshot_id: 42,
            added_files: 1,
            existing_files: 0,
            deleted_files: 0,
            added_rows: 3,
            existing_rows: 0,
            deleted_rows: 0,
        };
        let entry = Entry {
            content: 0,
            path: "file:///t/data/1.parquet".into(),
            record_count: 3,
            file_size: 100,
            snapshot_id: 42,
            // Inherited from the manifest.
            sequence_number: 5,
            file_sequence_number: 5,
        };
        assert_eq!(
            read_manifest(&bytes, &manifest, "m").unwrap(),
            vec![entry.clone()]
        );
        // Carried into a merged manifest, its numbers stay.
        let merged = write_manifest(
            &[Written::Existing(&entry)],
            CONTENT_DATA,
            77,
            &json!({}),
            0,
        )
        .unwrap();
        let mut later = manifest.clone();
        later.sequence_number = 9;
        later.added_snapshot_id = 77;
        assert_eq!(read_manifest(&merged, &later, "m").unwrap(), vec![entry]);
        let list = write_manifest_list(std::slice::from_ref(&manifest), 42, None, 5).unwrap();
        let header = String::from_utf8_lossy(&list[..1500.min(list.len())]).to_string();
        assert!(
            header.contains("\"field-id\":500"),
            "field ids kept: {header}"
        );
        assert_eq!(read_manifest_list(&list, "l").unwrap(), vec![manifest]);
    }
}
