//! One segment file of a partition: `{base_offset:020}.log`, a run of record batches.
//!
//! Invariants:
//! - A segment holds whole Kafka v2 batches back to back, with contiguous offsets starting at
//!   its base offset; batches are only ever appended, and only by the partition's one writer.
//! - `size` is the end of the last batch known to be whole. Bytes past it (a torn write) are cut
//!   off by recovery before anything is appended.
//! - The sparse index maps a batch's base offset to its file position, one entry at least every
//!   `INDEX_INTERVAL` bytes; the time index maps the largest timestamp seen so far to the batch
//!   where it was reached. Both are derived data: kept in memory, mirrored to
//!   `{base_offset:020}.index` (8-byte entries: relative offset u32, position u32) and
//!   `.timeindex` (12-byte entries: timestamp i64, relative offset u32) as Kafka lays them out,
//!   and rebuilt from the log whenever a segment is opened, so a missing or damaged index file
//!   never matters.
//! - A batch is visible to readers only when the partition's stable offset passes it; the segment
//!   itself knows nothing of visibility.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::batch::{self, BatchHeader, BATCH_HEADER_LEN};
use crate::storage::{SegmentFile, Storage};
use crate::LogError;

/// Bytes of log between two sparse index entries.
const INDEX_INTERVAL: u64 = 4096;

pub(crate) struct Segment {
    pub base_offset: u64,
    pub path: PathBuf,
    pub file: Arc<dyn SegmentFile>,
    /// Bytes of whole batches.
    pub size: u64,
    /// Offset after the last record in this segment.
    pub next_offset: u64,
    index: Vec<(u64, u64)>,
    last_indexed_pos: Option<u64>,
    /// `(largest timestamp so far, base offset of the batch that reached it)`.
    time_index: Vec<(i64, u64)>,
    /// When this segment was created or opened, for rolling by age.
    pub opened: std::time::Instant,
    index_files: Option<IndexFiles>,
}

/// The on-disk mirrors of the indexes (writable segments only).
struct IndexFiles {
    index: File,
    time_index: File,
}

/// Where a scan found a segment's bytes to stop making sense, and why. Nothing is cut when it
/// is found: whether the bytes past it were ever committed decides between cutting a torn
/// tail and refusing to touch acknowledged data (see recovery).
#[derive(Debug, Clone)]
pub(crate) struct Damage {
    /// The file position where the whole batches end.
    pub position: u64,
    /// The first offset that could not be read.
    pub offset: u64,
    pub reason: String,
    /// A whole batch failed its checksum with more bytes after it: not the tail of an
    /// interrupted write, but bytes changed after they were written.
    pub mid_file: bool,
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} at byte {} (offset {})",
            self.reason, self.position, self.offset
        )
    }
}

/// How much to trust a segment being opened.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scan {
    /// The active segment after a crash: check the CRC of every batch, cut the file at the first
    /// bad one.
    Repair,
    /// The active segment after a clean stop: walk headers, cut anything unparsable after them.
    HeadersThenCut,
    /// A segment older than the recovery point: walk headers only, change nothing.
    Headers,
}

pub(crate) fn file_name(base_offset: u64) -> String {
    format!("{base_offset:020}.log")
}

/// The segment's files besides the log itself.
pub(crate) fn index_paths(log_path: &Path) -> [PathBuf; 2] {
    [
        log_path.with_extension("index"),
        log_path.with_extension("timeindex"),
    ]
}

/// Removes a segment's log and index files.
pub(crate) fn remove_files(storage: &dyn Storage, log_path: &Path) -> Result<(), LogError> {
    storage
        .remove(log_path)
        .map_err(|e| LogError::io("remove segment", log_path, e))?;
    for path in index_paths(log_path) {
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(LogError::io("remove index", &path, e))
            }
            _ => {}
        }
    }
    Ok(())
}

/// Parses `{base_offset:020}.log`.
pub(crate) fn parse_file_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(".log")?;
    (stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit())).then(|| stem.parse().ok())?
}

impl Segment {
    pub(crate) fn create(
        storage: &dyn Storage,
        dir: &Path,
        base_offset: u64,
    ) -> Result<Segment, LogError> {
        let path = dir.join(file_name(base_offset));
        let file = storage
            .open(&path, true, true)
            .map_err(|e| LogError::io("create segment", &path, e))?;
        let len = file
            .size()
            .map_err(|e| LogError::io("stat segment", &path, e))?;
        if len != 0 {
            file.set_len(0)
                .map_err(|e| LogError::io("truncate segment", &path, e))?;
        }
        let mut segment = Segment {
            base_offset,
            path,
            file,
            size: 0,
            next_offset: base_offset,
            index: Vec::new(),
            last_indexed_pos: None,
            time_index: Vec::new(),
            opened: std::time::Instant::now(),
            index_files: None,
        };
        segment.write_index_files()?;
        Ok(segment)
    }

    /// Brings both index files in line with the in-memory indexes (rewriting a file only when
    /// it differs), and keeps them open for appends while `self` is the active segment.
    pub(crate) fn write_index_files(&mut self) -> Result<(), LogError> {
        let [index_path, time_path] = index_paths(&self.path);
        let mut index_bytes = Vec::with_capacity(self.index.len() * 8);
        for (offset, pos) in &self.index {
            index_bytes.extend_from_slice(&self.relative(*offset).to_be_bytes());
            index_bytes.extend_from_slice(&(*pos as u32).to_be_bytes());
        }
        let mut time_bytes = Vec::with_capacity(self.time_index.len() * 12);
        for (timestamp, offset) in &self.time_index {
            time_bytes.extend_from_slice(&timestamp.to_be_bytes());
            time_bytes.extend_from_slice(&self.relative(*offset).to_be_bytes());
        }
        let sync = |path: &Path, bytes: &[u8]| -> Result<File, LogError> {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)
                .map_err(|e| LogError::io("open index", path, e))?;
            let mut existing = Vec::new();
            std::io::Read::read_to_end(&mut &file, &mut existing)
                .map_err(|e| LogError::io("read index", path, e))?;
            if existing != bytes {
                file.set_len(0)
                    .and_then(|()| FileExt::write_all_at(&file, bytes, 0))
                    .map_err(|e| LogError::io("write index", path, e))?;
            }
            Ok(file)
        };
        let files = IndexFiles {
            index: sync(&index_path, &index_bytes)?,
            time_index: sync(&time_path, &time_bytes)?,
        };
        self.index_files = Some(files);
        Ok(())
    }

    /// Closes the index files once the segment is no longer the active one.
    pub(crate) fn seal(&mut self) {
        self.index_files = None;
    }

    fn relative(&self, offset: u64) -> u32 {
        u32::try_from(offset - self.base_offset).unwrap_or(u32::MAX)
    }

    /// Opens an existing segment, scanning it to find its end and build its index. Where the
    /// bytes stop making sense (a torn tail, or with `Scan::Repair` a checksum failure) is
    /// reported, not cut: `size` ends before it, and `cut_damaged_tail` cuts it when the
    /// caller knows nothing committed lies there.
    pub(crate) fn open(
        storage: &dyn Storage,
        path: &Path,
        base_offset: u64,
        scan: Scan,
        writable: bool,
        gaps_allowed: bool,
    ) -> Result<(Segment, Option<Damage>), LogError> {
        let file = storage
            .open(path, writable, false)
            .map_err(|e| LogError::io("open segment", path, e))?;
        let file_len = file
            .size()
            .map_err(|e| LogError::io("stat segment", path, e))?;
        let mut segment = Segment {
            base_offset,
            path: path.to_path_buf(),
            file,
            size: 0,
            next_offset: base_offset,
            index: Vec::new(),
            last_indexed_pos: None,
            time_index: Vec::new(),
            opened: std::time::Instant::now(),
            index_files: None,
        };
        let mut header_buf = [0u8; BATCH_HEADER_LEN];
        let mut batch_buf = Vec::new();
        let mut problem = None;
        let mut mid_file = false;
        while segment.size < file_len {
            let pos = segment.size;
            if file_len - pos < BATCH_HEADER_LEN as u64 {
                problem = Some(format!("{} bytes of a torn batch header", file_len - pos));
                break;
            }
            segment
                .file
                .read_exact_at(&mut header_buf, pos)
                .map_err(|e| LogError::io("read segment", path, e))?;
            let header = match BatchHeader::parse(&header_buf) {
                Ok(header) => header,
                Err(err) => {
                    problem = Some(err.to_string());
                    break;
                }
            };
            let gap = header.base_offset > segment.next_offset;
            if header.base_offset < segment.next_offset || (gap && !gaps_allowed) {
                problem = Some(format!(
                    "a batch with offset {}, expected {}",
                    header.base_offset, segment.next_offset
                ));
                break;
            }
            if pos + header.total_len as u64 > file_len {
                problem = Some(format!(
                    "a torn batch of {} bytes with {} in the file",
                    header.total_len,
                    file_len - pos
                ));
                break;
            }
            if scan == Scan::Repair {
                batch_buf.resize(header.total_len, 0);
                segment
                    .file
                    .read_exact_at(&mut batch_buf, pos)
                    .map_err(|e| LogError::io("read segment", path, e))?;
                if let Err(err) = batch::verify(&batch_buf) {
                    problem = Some(err.to_string());
                    mid_file = pos + (header.total_len as u64) < file_len;
                    break;
                }
            }
            segment.note_appended(&header, pos);
        }
        let damage = problem.map(|reason| Damage {
            position: segment.size,
            offset: segment.next_offset,
            reason,
            mid_file,
        });
        Ok((segment, damage))
    }

    /// Cuts the file back to its whole batches (after `open` reported damage that holds
    /// nothing committed).
    pub(crate) fn cut_damaged_tail(&mut self) -> Result<(), LogError> {
        self.file
            .set_len(self.size)
            .and_then(|()| self.file.sync_all())
            .map_err(|e| LogError::io("truncate torn segment tail", &self.path, e))
    }

    /// Updates size, next offset and indexes for a batch at `pos`; true when index entries
    /// were added.
    fn note_appended(&mut self, header: &BatchHeader, pos: u64) -> bool {
        self.size = pos + header.total_len as u64;
        self.next_offset = header.next_offset();
        if self
            .last_indexed_pos
            .is_some_and(|last| pos - last < INDEX_INTERVAL)
        {
            return false;
        }
        self.index.push((header.base_offset, pos));
        self.last_indexed_pos = Some(pos);
        let largest = self.time_index.last().map_or(i64::MIN, |(ts, _)| *ts);
        if header.max_timestamp_ms > largest {
            self.time_index
                .push((header.max_timestamp_ms, header.base_offset));
        }
        true
    }

    /// Writes one encoded batch at the end of the segment (not synced).
    pub(crate) fn append(&mut self, bytes: &[u8], header: &BatchHeader) -> Result<(), LogError> {
        let pos = self.size;
        self.file
            .write_all_at(bytes, pos)
            .map_err(|e| LogError::io("append to segment", &self.path, e))?;
        let time_entries = self.time_index.len();
        if self.note_appended(header, pos) {
            self.mirror_last_entries(time_entries)?;
        }
        Ok(())
    }

    /// Appends the newest index entry (and time entry, if one was added) to the index files.
    fn mirror_last_entries(&mut self, time_entries_before: usize) -> Result<(), LogError> {
        let Some(files) = &self.index_files else {
            return Ok(());
        };
        let [index_path, time_path] = index_paths(&self.path);
        let (offset, pos) = *self.index.last().expect("an entry was just added");
        let mut entry = [0u8; 12];
        entry[..4].copy_from_slice(&self.relative(offset).to_be_bytes());
        entry[4..8].copy_from_slice(&(pos as u32).to_be_bytes());
        let at = (self.index.len() as u64 - 1) * 8;
        FileExt::write_all_at(&files.index, &entry[..8], at)
            .map_err(|e| LogError::io("append to index", &index_path, e))?;
        if self.time_index.len() > time_entries_before {
            let (timestamp, offset) = *self.time_index.last().expect("a time entry was just added");
            entry[..8].copy_from_slice(&timestamp.to_be_bytes());
            entry[8..].copy_from_slice(&self.relative(offset).to_be_bytes());
            let at = (self.time_index.len() as u64 - 1) * 12;
            FileExt::write_all_at(&files.time_index, &entry, at)
                .map_err(|e| LogError::io("append to time index", &time_path, e))?;
        }
        Ok(())
    }

    /// File position to start a walk for the first batch at or after `timestamp_ms`.
    pub(crate) fn position_for_time(&self, timestamp_ms: i64) -> u64 {
        // Entries before the first one reaching the timestamp hold only older batches.
        match self
            .time_index
            .partition_point(|(ts, _)| *ts < timestamp_ms)
        {
            0 => 0,
            i => self.position_before(self.time_index[i - 1].1),
        }
    }

    /// The file position of the batch holding `offset`, or the nearest indexed batch before it.
    pub(crate) fn position_before(&self, offset: u64) -> u64 {
        match self.index.partition_point(|(base, _)| *base <= offset) {
            0 => 0,
            i => self.index[i - 1].1,
        }
    }

    /// Cuts the segment back so that `offset` is its next offset. `offset` must be a batch
    /// boundary inside this segment.
    pub(crate) fn truncate_to(&mut self, offset: u64) -> Result<(), LogError> {
        if offset >= self.next_offset {
            return Ok(());
        }
        let mut pos = self.position_before(offset);
        let mut header_buf = [0u8; BATCH_HEADER_LEN];
        loop {
            if pos >= self.size {
                return Err(LogError::corrupt(format!(
                    "offset {offset} is not a batch boundary in {}",
                    self.path.display()
                )));
            }
            self.file
                .read_exact_at(&mut header_buf, pos)
                .map_err(|e| LogError::io("read segment", &self.path, e))?;
            let header = BatchHeader::parse(&header_buf)?;
            if header.base_offset == offset {
                break;
            }
            if header.base_offset > offset
                || header.next_offset() > offset && header.base_offset < offset
            {
                return Err(LogError::corrupt(format!(
                    "offset {offset} falls inside a batch in {}",
                    self.path.display()
                )));
            }
            pos += header.total_len as u64;
        }
        self.file
            .set_len(pos)
            .and_then(|()| self.file.sync_all())
            .map_err(|e| LogError::io("truncate segment", &self.path, e))?;
        self.size = pos;
        self.next_offset = offset;
        self.index.retain(|(_, p)| *p < pos);
        self.last_indexed_pos = self.index.last().map(|(_, p)| *p);
        self.time_index.retain(|(_, o)| *o < offset);
        if self.index_files.is_some() {
            self.write_index_files()?;
        }
        Ok(())
    }

    pub(crate) fn sync(&self) -> Result<(), LogError> {
        self.file
            .sync_data()
            .map_err(|e| LogError::io("fsync segment", &self.path, e))
    }
}

/// What a reader took from a segment under the partition lock, so that it can read without it.
pub(crate) struct SegmentView {
    pub file: Arc<dyn SegmentFile>,
    pub path: PathBuf,
    pub start_pos: u64,
    pub end_pos: u64,
}

#[derive(Clone, Copy)]
pub(crate) struct ReadRequest {
    pub from_offset: u64,
    pub stable_offset: u64,
    pub max_bytes: usize,
}

/// Reads whole batches from `file` starting at `pos`, stopping before `stable_offset` or
/// `end_pos`, after about `max_bytes` (always at least one batch). Records before `from_offset`
/// are skipped. Returns the records and whether the end of the segment's data was reached.
pub(crate) fn read_batches(
    view: &SegmentView,
    request: &ReadRequest,
    out: &mut Vec<batch::StoredRecord>,
) -> Result<bool, LogError> {
    let (file, path, end_pos) = (&*view.file, view.path.as_path(), view.end_pos);
    let ReadRequest {
        from_offset,
        stable_offset,
        max_bytes,
    } = *request;
    let mut pos = view.start_pos;
    let mut header_buf = [0u8; BATCH_HEADER_LEN];
    // First find the batch holding `from_offset`: the index may point a few batches earlier.
    loop {
        if pos >= end_pos {
            return Ok(true);
        }
        file.read_exact_at(&mut header_buf, pos)
            .map_err(|e| LogError::io("read segment", path, e))?;
        let header = BatchHeader::parse(&header_buf)?;
        if header.base_offset >= stable_offset {
            return Ok(true);
        }
        if header.next_offset() > from_offset {
            break;
        }
        pos += header.total_len as u64;
    }
    // Then read a run of batches in one pread.
    let mut want = (end_pos - pos).min(max_bytes as u64) as usize;
    want = want.max(BATCH_HEADER_LEN);
    let mut buf = vec![0u8; want];
    file.read_exact_at(&mut buf, pos)
        .map_err(|e| LogError::io("read segment", path, e))?;
    let first = BatchHeader::parse(&buf)?;
    if first.total_len > buf.len() {
        // One batch larger than max_bytes: read it whole.
        buf.resize(first.total_len, 0);
        file.read_exact_at(&mut buf, pos)
            .map_err(|e| LogError::io("read segment", path, e))?;
    }
    let buf = bytes::Bytes::from(buf);
    let mut at = 0usize;
    let mut reached_end = false;
    // Compressed batches hold 5–15× their size in records: the read also stops once it has
    // decoded about `max_bytes` of them, so that what a reader holds stays bounded.
    let mut decoded = 0usize;
    while at + BATCH_HEADER_LEN <= buf.len() && (at == 0 || decoded < max_bytes) {
        let header = BatchHeader::parse(&buf[at..])?;
        if header.base_offset >= stable_offset {
            reached_end = true;
            break;
        }
        if at + header.total_len > buf.len() {
            break;
        }
        let start = out.len();
        batch::decode(&buf.slice(at..at + header.total_len), out)?;
        let skip = out[start..]
            .iter()
            .take_while(|r| r.offset < from_offset)
            .count();
        out.drain(start..start + skip);
        decoded += out[start..]
            .iter()
            .map(|r| {
                r.key.as_ref().map_or(0, |k| k.len()) + r.value.as_ref().map_or(0, |v| v.len())
            })
            .sum::<usize>();
        at += header.total_len;
    }
    if pos + at as u64 >= end_pos {
        reached_end = true;
    }
    Ok(reached_end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_file_names_round_trip() {
        assert_eq!(file_name(42), "00000000000000000042.log");
        assert_eq!(parse_file_name("00000000000000000042.log"), Some(42));
        assert_eq!(parse_file_name("42.log"), None);
        assert_eq!(parse_file_name("0000000000000000004x.log"), None);
    }
}
