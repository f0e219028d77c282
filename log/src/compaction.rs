//! Key-based compaction of compacted topics: in every closed segment (not the active one, and
//! wholly committed), only the latest record of each key is kept; tombstones (null values) are
//! kept until their segment is older than the tombstone retention, so that readers catch up
//! with deletes. Offsets never change: compacted batches have gaps, as in Kafka.
//!
//! It runs beside appends: segments are read and the cleaned copies written without holding the
//! partition lock (closed segments never change), and the lock is taken only to swap each
//! cleaned copy in with a rename. A crash leaves either the old segment or the new one, plus
//! perhaps a `.cleaned` file that the next open deletes.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use crate::batch::{self, Record, StoredRecord};
use crate::partition::parking::Guarded;
use crate::segment::{self, ReadRequest, SegmentView};
use crate::{Log, LogError};

/// Records per cleaned batch are gathered up to about this many bytes.
const CLEANED_BATCH_BYTES: usize = 1024 * 1024;

/// A closed segment as compaction sees it.
pub(crate) struct ClosedSegment {
    pub base_offset: u64,
    pub view: SegmentView,
    pub modified: SystemTime,
}

/// What one partition's compaction did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CompactionStats {
    pub segments_rewritten: usize,
    pub records_removed: u64,
}

fn read_all(
    view: &SegmentView,
    base_offset: u64,
    stable_offset: u64,
) -> Result<Vec<StoredRecord>, LogError> {
    let mut records = Vec::new();
    let request = ReadRequest {
        from_offset: base_offset,
        stable_offset,
        max_bytes: view.end_pos as usize,
    };
    segment::read_batches(view, &request, &mut records)?;
    Ok(records)
}

pub(crate) fn compact_partition(
    guarded: &Guarded,
    tombstone_retention: Duration,
    now: SystemTime,
) -> Result<CompactionStats, LogError> {
    let (closed, all, stable) = {
        let partition = guarded.lock();
        partition.compaction_snapshot()?
    };
    let mut stats = CompactionStats::default();
    if closed.is_empty() {
        return Ok(stats);
    }
    // The latest offset of every key, over everything committed.
    let mut latest: HashMap<Bytes, u64> = HashMap::new();
    for (base, view) in &all {
        for record in read_all(view, *base, stable)? {
            if let Some(key) = record.key {
                latest.insert(key, record.offset);
            }
        }
    }
    let mut rewrites: Vec<(u64, Option<PathBuf>)> = Vec::new();
    for segment in &closed {
        let records = read_all(&segment.view, segment.base_offset, stable)?;
        let tombstones_expire = now
            .duration_since(segment.modified)
            .is_ok_and(|age| age >= tombstone_retention);
        let total = records.len();
        let kept: Vec<StoredRecord> = records
            .into_iter()
            .filter(|r| match &r.key {
                None => true,
                Some(key) => {
                    latest.get(key) == Some(&r.offset) && !(r.value.is_none() && tombstones_expire)
                }
            })
            .collect();
        if kept.len() == total {
            continue;
        }
        stats.records_removed += (total - kept.len()) as u64;
        stats.segments_rewritten += 1;
        if kept.is_empty() {
            rewrites.push((segment.base_offset, None));
            continue;
        }
        let cleaned = segment.view.path.with_extension("log.cleaned");
        write_cleaned(&cleaned, &kept)?;
        rewrites.push((segment.base_offset, Some(cleaned)));
    }
    if !rewrites.is_empty() {
        let mut partition = guarded.lock();
        for (base, cleaned) in rewrites {
            partition.replace_closed_segment(base, cleaned)?;
        }
    }
    Ok(stats)
}

/// Writes `records` (increasing offsets, with gaps) as batches into a new file and fsyncs it.
fn write_cleaned(path: &PathBuf, records: &[StoredRecord]) -> Result<(), LogError> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < records.len() {
        let mut end = start;
        let mut bytes = 0;
        while end < records.len() && (end == start || bytes < CLEANED_BATCH_BYTES) {
            bytes += records[end].key.as_ref().map_or(0, |k| k.len())
                + records[end].value.as_ref().map_or(0, |v| v.len())
                + 24;
            end += 1;
        }
        let base = records[start].offset;
        let chunk: Vec<Record> = records[start..end]
            .iter()
            .map(|r| Record {
                key: r.key.clone(),
                value: r.value.clone(),
                timestamp_ms: r.timestamp_ms,
                headers: r.headers.clone(),
            })
            .collect();
        let deltas: Vec<u32> = records[start..end]
            .iter()
            .map(|r| u32::try_from(r.offset - base).unwrap_or(u32::MAX))
            .collect();
        batch::encode_with_deltas(base, &chunk, Some(&deltas), &mut out);
        start = end;
    }
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::File::create(path)?;
        std::io::Write::write_all(&mut file, &out)?;
        file.sync_all()
    };
    write().map_err(|e| LogError::io("write compacted segment", path, e))
}

impl Log {
    /// Compacts every compacted topic: closed segments keep only the latest record per key, and
    /// tombstones older than `tombstone_retention`. Runs beside appends and reads.
    pub fn compact(&self, tombstone_retention: Duration) -> Result<CompactionStats, LogError> {
        if !self.writable {
            return Ok(CompactionStats::default());
        }
        self.check_not_failed()?;
        let topics = self.all_topics().into_iter().filter(|t| t.compact);
        let now = SystemTime::now();
        let mut total = CompactionStats::default();
        for topic in topics {
            for guarded in &topic.partitions {
                let stats = compact_partition(guarded, tombstone_retention, now)?;
                total.segments_rewritten += stats.segments_rewritten;
                total.records_removed += stats.records_removed;
            }
        }
        Ok(total)
    }
}
