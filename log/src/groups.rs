//! Committed consumer-group offsets: one small JSON file per group, replaced crash-atomically.

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::LogError;

#[derive(Serialize, Deserialize, Default)]
struct GroupFile {
    offsets: Vec<GroupOffset>,
}

#[derive(Serialize, Deserialize)]
struct GroupOffset {
    topic: String,
    partition: u32,
    offset: u64,
}

pub(crate) fn load(dir: &Path, group: &str) -> Result<BTreeMap<(String, u32), u64>, LogError> {
    let path = dir.join(format!("{group}.json"));
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(LogError::io("read group offsets", &path, e)),
    };
    let file: GroupFile = serde_json::from_slice(&bytes)
        .map_err(|e| LogError::corrupt(format!("{} is unreadable: {e}", path.display())))?;
    Ok(file
        .offsets
        .into_iter()
        .map(|o| ((o.topic, o.partition), o.offset))
        .collect())
}

pub(crate) fn commit(
    dir: &Path,
    group: &str,
    offsets: &[(String, u32, u64)],
) -> Result<(), LogError> {
    let mut merged = load(dir, group)?;
    for (topic, partition, offset) in offsets {
        merged.insert((topic.clone(), *partition), *offset);
    }
    let file = GroupFile {
        offsets: merged
            .into_iter()
            .map(|((topic, partition), offset)| GroupOffset {
                topic,
                partition,
                offset,
            })
            .collect(),
    };
    let bytes = serde_json::to_vec_pretty(&file).expect("group offsets serialize");
    crate::write_atomically(&dir.join(format!("{group}.json")), &bytes)
}
