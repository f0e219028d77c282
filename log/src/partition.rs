//! A partition: an ordered run of segments with one writer and any number of readers.
//!
//! The writer appends batches at the log end offset; readers see only offsets below the stable
//! offset, which the log advances when a transaction's commit record is durable. Recovery cuts a
//! partition back to the end its last commit recorded: anything past it was never acknowledged.
//!
//! A segment is fsynced before the partition rolls to a new one, so the start of the active
//! segment is the recovery point: on open only the active segment is re-read with CRC checks,
//! older ones are walked header by header (to rebuild their indexes).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::batch::{self, BatchHeader, Compression, RecordView, StoredRecord};
use crate::compaction::ClosedSegment;
use crate::segment::{self, Damage, ReadRequest, Scan, Segment, SegmentView};
use crate::storage::{SegmentFile, Storage};
use crate::LogError;

/// How a partition is being opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Opening {
    /// By a reader while another process may write: nothing on disk changes.
    ReadOnly,
    /// For writing, after the last writer stopped cleanly.
    AfterCleanStop,
    /// For writing, after a crash or kill: the active segment is checked batch by batch.
    AfterCrash,
}

/// How a partition's segments are kept.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// Where segment files live (a fault-injecting one in tests).
    pub storage: Arc<dyn Storage>,
    /// Roll before a batch would take the active segment past this size.
    pub bytes: u64,
    /// Roll before appending to an active segment opened this long ago.
    pub max_age: Option<std::time::Duration>,
    /// Key-compacted: offsets may have gaps where compaction removed records.
    pub compacted: bool,
    /// How appended records are compressed.
    pub compression: Compression,
}

/// Fsyncs a directory through `storage`.
fn sync_dir(storage: &dyn Storage, dir: &Path) -> Result<(), LogError> {
    storage
        .sync_dir(dir)
        .map_err(|e| LogError::io("fsync directory", dir, e))
}

pub(crate) struct Partition {
    pub dir: PathBuf,
    segments: Vec<Segment>,
    /// Where the active segment's bytes stopped making sense when it was opened, not cut yet:
    /// recovery decides (a torn tail past the committed end is cut; damage below it is
    /// refused, with nothing changed).
    pub damage: Option<Damage>,
    /// Readers see offsets below this.
    pub stable_offset: u64,
    settings: Settings,
    encode_buf: Vec<u8>,
}

impl Partition {
    pub(crate) fn create(dir: PathBuf, settings: Settings) -> Result<Partition, LogError> {
        fs::create_dir_all(&dir)
            .map_err(|e| LogError::io("create partition directory", &dir, e))?;
        let segment = Segment::create(&*settings.storage, &dir, 0)?;
        sync_dir(&*settings.storage, &dir)?;
        Ok(Partition {
            dir,
            segments: vec![segment],
            damage: None,
            stable_offset: 0,
            settings,
            encode_buf: Vec::new(),
        })
    }

    /// Opens a partition directory. `writable` opens for appending and repairs torn tails;
    /// otherwise nothing on disk changes.
    pub(crate) fn open(
        dir: PathBuf,
        settings: Settings,
        opening: Opening,
    ) -> Result<Partition, LogError> {
        let writable = opening != Opening::ReadOnly;
        let mut bases = Vec::new();
        let entries =
            fs::read_dir(&dir).map_err(|e| LogError::io("list partition directory", &dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| LogError::io("list partition directory", &dir, e))?;
            if writable
                && entry
                    .file_name()
                    .to_str()
                    .is_some_and(|name| name.ends_with(".cleaned"))
            {
                // A compaction interrupted before its swap: the original segment is intact.
                fs::remove_file(entry.path()).map_err(|e| {
                    LogError::io("remove leftover compaction file", &entry.path(), e)
                })?;
                continue;
            }
            if let Some(base) = entry
                .file_name()
                .to_str()
                .and_then(segment::parse_file_name)
            {
                bases.push(base);
            }
        }
        bases.sort_unstable();
        if bases.is_empty() {
            if !writable {
                return Err(LogError::corrupt(format!(
                    "partition {} has no segments",
                    dir.display()
                )));
            }
            return Partition::create(dir, settings);
        }
        let mut segments: Vec<Segment> = Vec::with_capacity(bases.len());
        let lost = crate::repair::lost_offsets(&dir)?;
        let mut damage = None;
        let last = bases.len() - 1;
        for (i, base) in bases.iter().copied().enumerate() {
            let path = dir.join(segment::file_name(base));
            if let Some(previous) = segments.last() {
                // `sluice log repair` leaves holes where damaged records were: listed, allowed.
                let repaired_hole = lost
                    .iter()
                    .any(|range| range.start <= previous.next_offset && base <= range.end);
                if base < previous.next_offset
                    || (base > previous.next_offset && !settings.compacted && !repaired_hole)
                {
                    // A gap or overlap after a damaged segment: later segments cannot be trusted.
                    tracing::warn!(partition = %dir.display(), segment = base, expected = previous.next_offset,
                        "segment does not continue its predecessor; dropping it and later segments");
                    if writable {
                        for later in &bases[i..] {
                            let path = dir.join(segment::file_name(*later));
                            segment::remove_files(&*settings.storage, &path)?;
                        }
                        sync_dir(&*settings.storage, &dir)?;
                    }
                    break;
                }
            }
            // After a clean stop even the active segment is whole: its headers suffice.
            let scan = match (i == last, opening) {
                (false, _) => Scan::Headers,
                (true, Opening::AfterCleanStop) => Scan::HeadersThenCut,
                (true, _) => Scan::Repair,
            };
            let (segment, problem) = Segment::open(
                &*settings.storage,
                &path,
                base,
                scan,
                writable,
                settings.compacted,
            )?;
            if let Some(problem) = problem {
                if scan == Scan::Headers {
                    // An older segment is read by headers only; a reader of the bytes past
                    // this point meets the problem (and its checksum) when it gets there.
                    tracing::warn!(segment = %path.display(), problem = %problem, "segment ends early");
                } else {
                    damage = Some(problem);
                }
            }
            segments.push(segment);
        }
        if writable {
            // Index files are derived: check each against the log just scanned, and keep only
            // the active segment's open for appends.
            let count = segments.len();
            for (i, segment) in segments.iter_mut().enumerate() {
                segment.write_index_files()?;
                if i + 1 < count {
                    segment.seal();
                }
            }
        }
        Ok(Partition {
            dir,
            segments,
            damage,
            stable_offset: 0,
            settings,
            encode_buf: Vec::new(),
        })
    }

    /// Cuts the active segment's damaged tail, once recovery knows nothing committed is in it.
    pub(crate) fn cut_damaged_tail(&mut self) -> Result<(), LogError> {
        let Some(damage) = self.damage.take() else {
            return Ok(());
        };
        let segment = self.active();
        tracing::warn!(segment = %segment.path.display(), problem = %damage, "recovery: cutting a torn tail that holds nothing committed");
        segment.cut_damaged_tail()
    }

    /// The path of the active segment.
    pub(crate) fn active_path(&self) -> &Path {
        &self
            .segments
            .last()
            .expect("a partition always has a segment")
            .path
    }

    pub(crate) fn start_offset(&self) -> u64 {
        self.segments.first().map_or(0, |s| s.base_offset)
    }

    /// Log end offset: the next offset to be written.
    pub(crate) fn end_offset(&self) -> u64 {
        self.segments.last().map_or(0, |s| s.next_offset)
    }

    fn active(&mut self) -> &mut Segment {
        self.segments
            .last_mut()
            .expect("a partition always has a segment")
    }

    /// Appends records as batches of about `batch::TARGET_BATCH_BYTES` each (Kafka's default
    /// largest batch is 1 MiB); returns the offset after the last. Not synced, not visible.
    pub(crate) fn append<R: RecordView>(&mut self, records: &[R]) -> Result<u64, LogError> {
        let mut start = 0;
        while start < records.len() {
            let end = start + batch::next_batch_len(&records[start..]);
            let base = self.end_offset();
            let mut buf = std::mem::take(&mut self.encode_buf);
            buf.clear();
            batch::encode_compressed(
                base,
                &records[start..end],
                self.settings.compression,
                &mut buf,
            );
            let result = self.append_encoded(&buf);
            self.encode_buf = buf;
            result?;
            start = end;
        }
        Ok(self.end_offset())
    }

    /// Appends batches prepared at base offset 0 (`batch::BatchBuilder`), each moved to the log end
    /// offset; returns the offset after the last.
    pub(crate) fn append_prepared(&mut self, prepared: &[u8]) -> Result<u64, LogError> {
        let mut at = 0;
        while at < prepared.len() {
            // The writer made these batches: one that does not parse holds a record too large
            // for any batch (the size is the only thing a writer cannot check up front).
            let header = BatchHeader::parse(&prepared[at..])
                .ok()
                .filter(|header| at + header.total_len <= prepared.len())
                .ok_or(LogError::RecordTooLarge {
                    max: batch::MAX_BATCH_LEN,
                })?;
            let mut buf = std::mem::take(&mut self.encode_buf);
            buf.clear();
            buf.extend_from_slice(&prepared[at..at + header.total_len]);
            // The base offset is outside the CRC: setting it keeps the batch valid.
            buf[..8].copy_from_slice(&(self.end_offset() as i64).to_be_bytes());
            let result = self.append_encoded(&buf);
            self.encode_buf = buf;
            result?;
            at += header.total_len;
        }
        Ok(self.end_offset())
    }

    /// Writes one encoded batch at the log end offset, rolling the segment first when due.
    fn append_encoded(&mut self, buf: &[u8]) -> Result<(), LogError> {
        let header = BatchHeader::parse(buf).map_err(|_| LogError::RecordTooLarge {
            max: batch::MAX_BATCH_LEN,
        })?;
        let (max_bytes, max_age) = (self.settings.bytes, self.settings.max_age);
        let active = self.active();
        let full = active.size + buf.len() as u64 > max_bytes;
        let old = max_age.is_some_and(|age| active.opened.elapsed() >= age);
        if active.size > 0 && (full || old) {
            // Roll: make the new segment durable in the directory before writing into it.
            self.roll()?;
        }
        self.active().append(buf, &header)
    }

    /// Starts a new, empty segment at the log end offset.
    pub(crate) fn roll(&mut self) -> Result<(), LogError> {
        let base = self.end_offset();
        if self.active().size == 0 {
            return Ok(());
        }
        self.active().sync()?;
        self.active().seal();
        let segment = Segment::create(&*self.settings.storage, &self.dir, base)?;
        sync_dir(&*self.settings.storage, &self.dir)?;
        self.segments.push(segment);
        Ok(())
    }

    /// Deletes every segment but the active one.
    pub(crate) fn remove_older_segments(&mut self) -> Result<(), LogError> {
        let keep = self.segments.split_off(self.segments.len() - 1);
        for segment in std::mem::replace(&mut self.segments, keep) {
            segment::remove_files(&*self.settings.storage, &segment.path)?;
        }
        sync_dir(&*self.settings.storage, &self.dir)
    }

    /// Handle to fsync what `append` wrote: the active segment file.
    pub(crate) fn sync_handle(&self) -> (Arc<dyn SegmentFile>, PathBuf) {
        let active = self
            .segments
            .last()
            .expect("a partition always has a segment");
        (Arc::clone(&active.file), active.path.clone())
    }

    /// Cuts the partition back to `offset`, removing later segments. Used by recovery only.
    pub(crate) fn truncate_to(&mut self, offset: u64) -> Result<(), LogError> {
        if offset >= self.end_offset() {
            return Ok(());
        }
        while self.segments.len() > 1
            && self.active().base_offset >= offset
            && self.active().base_offset > 0
        {
            if self.segments[self.segments.len() - 2].next_offset < offset {
                break;
            }
            let segment = self.segments.pop().expect("checked above");
            segment::remove_files(&*self.settings.storage, &segment.path)?;
        }
        sync_dir(&*self.settings.storage, &self.dir)?;
        self.active().truncate_to(offset)
    }

    /// Deletes the oldest segments that retention allows: never the active one, never one
    /// holding records past the stable offset. Returns how many were deleted.
    pub(crate) fn enforce_retention(
        &mut self,
        retention: &crate::Retention,
        now: std::time::SystemTime,
    ) -> Result<usize, LogError> {
        let mut total: u64 = self.segments.iter().map(|s| s.size).sum();
        let mut deleted = 0;
        while self.segments.len() > 1 {
            let oldest = &self.segments[0];
            if oldest.next_offset > self.stable_offset {
                break;
            }
            let modified = oldest
                .file
                .modified()
                .map_err(|e| LogError::io("stat segment", &oldest.path, e))?;
            let expired = retention.max_age.is_some_and(|age| {
                now.duration_since(modified)
                    .is_ok_and(|elapsed| elapsed > age)
            });
            let oversized = retention.max_bytes.is_some_and(|max| total > max);
            if !expired && !oversized {
                break;
            }
            let segment = self.segments.remove(0);
            segment::remove_files(&*self.settings.storage, &segment.path)?;
            tracing::info!(segment = %segment.path.display(), expired, oversized, "retention: deleted segment");
            total -= segment.size;
            deleted += 1;
        }
        if deleted > 0 {
            sync_dir(&*self.settings.storage, &self.dir)?;
        }
        Ok(deleted)
    }

    /// For compaction: the closed segments (all but the active one, wholly committed), a view of
    /// every segment, and the stable offset.
    #[allow(clippy::type_complexity)]
    pub(crate) fn compaction_snapshot(
        &self,
    ) -> Result<(Vec<ClosedSegment>, Vec<(u64, SegmentView)>, u64), LogError> {
        let view = |s: &Segment| SegmentView {
            file: Arc::clone(&s.file),
            path: s.path.clone(),
            start_pos: 0,
            end_pos: s.size,
        };
        let mut closed = Vec::new();
        for segment in &self.segments[..self.segments.len() - 1] {
            if segment.next_offset > self.stable_offset {
                break;
            }
            let modified = segment
                .file
                .modified()
                .map_err(|e| LogError::io("stat segment", &segment.path, e))?;
            closed.push(ClosedSegment {
                base_offset: segment.base_offset,
                view: view(segment),
                modified,
            });
        }
        let all = self
            .segments
            .iter()
            .map(|s| (s.base_offset, view(s)))
            .collect();
        Ok((closed, all, self.stable_offset))
    }

    /// Swaps a compacted copy in for the closed segment at `base` (rename over it), or deletes
    /// the segment when nothing of it is left (`cleaned` is `None`).
    pub(crate) fn replace_closed_segment(
        &mut self,
        base: u64,
        cleaned: Option<PathBuf>,
    ) -> Result<(), LogError> {
        let Some(i) = self.segments[..self.segments.len() - 1]
            .iter()
            .position(|s| s.base_offset == base)
        else {
            // Retention removed it meanwhile.
            if let Some(cleaned) = cleaned {
                let _ = fs::remove_file(cleaned);
            }
            return Ok(());
        };
        let path = self.segments[i].path.clone();
        match cleaned {
            None => {
                segment::remove_files(&*self.settings.storage, &path)?;
                self.segments.remove(i);
            }
            Some(cleaned) => {
                self.settings
                    .storage
                    .rename(&cleaned, &path)
                    .map_err(|e| LogError::io("swap in compacted segment", &path, e))?;
                let (mut replacement, problem) = Segment::open(
                    &*self.settings.storage,
                    &path,
                    base,
                    Scan::Headers,
                    true,
                    true,
                )?;
                if let Some(problem) = problem {
                    return Err(LogError::corrupt(format!(
                        "compacted segment {}: {problem}",
                        path.display()
                    )));
                }
                replacement.write_index_files()?;
                replacement.seal();
                self.segments[i] = replacement;
            }
        }
        sync_dir(&*self.settings.storage, &self.dir)
    }

    /// Segment count and bytes on disk.
    pub(crate) fn footprint(&self) -> (usize, u64) {
        (
            self.segments.len(),
            self.segments.iter().map(|s| s.size).sum(),
        )
    }

    /// The first committed offset whose batch holds a timestamp at or after `timestamp_ms`
    /// (batch granularity: Kafka's answer to a time lookup), walking batch headers.
    pub(crate) fn offset_for_time(&self, timestamp_ms: i64) -> Result<Option<u64>, LogError> {
        let mut header = [0u8; crate::batch::BATCH_HEADER_LEN];
        for segment in &self.segments {
            let mut pos = segment.position_for_time(timestamp_ms);
            while pos < segment.size {
                segment
                    .file
                    .read_exact_at(&mut header, pos)
                    .map_err(|e| LogError::io("read segment", &segment.path, e))?;
                let parsed = BatchHeader::parse(&header)?;
                if parsed.base_offset >= self.stable_offset {
                    return Ok(None);
                }
                if parsed.max_timestamp_ms >= timestamp_ms {
                    return Ok(Some(parsed.base_offset));
                }
                pos += parsed.total_len as u64;
            }
        }
        Ok(None)
    }

    /// Where a reader of `offset` starts: the segment holding it, bounded to whole batches.
    /// The view for reading at `offset`, and the base offset of the segment after it.
    pub(crate) fn view_for(&self, offset: u64) -> Option<(SegmentView, Option<u64>)> {
        let i = self
            .segments
            .partition_point(|s| s.base_offset <= offset)
            .checked_sub(1)?;
        let mut i = i;
        // An offset at the very end of a full segment lives at the start of the next one.
        while offset >= self.segments[i].next_offset && i + 1 < self.segments.len() {
            i += 1;
        }
        let segment = &self.segments[i];
        let view = SegmentView {
            file: Arc::clone(&segment.file),
            path: segment.path.clone(),
            start_pos: segment.position_before(offset),
            end_pos: segment.size,
        };
        Some((view, self.segments.get(i + 1).map(|next| next.base_offset)))
    }
}

/// Reads committed records of a partition from `offset`, at most about `max_bytes`.
pub(crate) fn read(
    partition: &parking::Guarded,
    offset: u64,
    max_bytes: usize,
) -> Result<Vec<StoredRecord>, LogError> {
    let mut from = offset;
    loop {
        let (view, stable_offset, next_base) = {
            let partition = partition.lock();
            if from < partition.start_offset() {
                // Compaction may delete whole segments of a compacted topic: reading from
                // before them starts at what is left. Elsewhere the records are gone.
                if !partition.settings.compacted {
                    return Err(LogError::OffsetOutOfRange {
                        partition: partition.dir.display().to_string(),
                        offset: from,
                        start: partition.start_offset(),
                    });
                }
                from = partition.start_offset();
            }
            if from >= partition.stable_offset {
                return Ok(Vec::new());
            }
            let Some((view, next_base)) = partition.view_for(from) else {
                return Ok(Vec::new());
            };
            (view, partition.stable_offset, next_base)
        };
        let mut out = Vec::new();
        let request = ReadRequest {
            from_offset: from,
            stable_offset,
            max_bytes,
        };
        segment::read_batches(&view, &request, &mut out)?;
        // Compaction can leave nothing at or after `from` in a segment: go on to the next one.
        match next_base {
            Some(next) if out.is_empty() && next < stable_offset => from = from.max(next),
            _ => return Ok(out),
        }
    }
}

/// The lock around a partition (std's mutex; a poisoned lock means a writer panicked mid-append,
/// and recovery on the next open is the only safe way on).
pub(crate) mod parking {
    use std::sync::{Mutex, MutexGuard};

    use super::Partition;

    pub(crate) struct Guarded(Mutex<Partition>);

    impl Guarded {
        pub(crate) fn new(partition: Partition) -> Guarded {
            Guarded(Mutex::new(partition))
        }

        pub(crate) fn into_inner(self) -> Partition {
            self.0
                .into_inner()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
        }

        pub(crate) fn lock(&self) -> MutexGuard<'_, Partition> {
            self.0
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
        }
    }
}

pub(crate) fn partition_dir(topic_dir: &Path, partition: u32) -> PathBuf {
    topic_dir.join(partition.to_string())
}
