//! One segment file of a partition: `{base_offset:020}.log`, a run of record batches.
//!
//! Invariants:
//! - A segment holds whole Kafka v2 batches back to back, with contiguous offsets starting at
//!   its base offset; batches are only ever appended, and only by the partition's one writer.
//! - `size` is the end of the last batch known to be whole. Bytes past it (a torn write) are cut
//!   off by recovery before anything is appended.
//! - The sparse index maps a batch's base offset to its file position, one entry at least every
//!   `INDEX_INTERVAL` bytes; it is derived data, rebuilt by scanning whenever a segment is opened.
//! - A batch is visible to readers only when the partition's stable offset passes it; the segment
//!   itself knows nothing of visibility.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::batch::{self, BatchHeader, BATCH_HEADER_LEN};
use crate::LogError;

/// Bytes of log between two sparse index entries.
const INDEX_INTERVAL: u64 = 4096;

pub(crate) struct Segment {
    pub base_offset: u64,
    pub path: PathBuf,
    pub file: Arc<File>,
    /// Bytes of whole batches.
    pub size: u64,
    /// Offset after the last record in this segment.
    pub next_offset: u64,
    index: Vec<(u64, u64)>,
    last_indexed_pos: Option<u64>,
}

/// How much to trust a segment being opened.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scan {
    /// Check the CRC of every batch and cut the file at the first bad one.
    Repair,
    /// Walk batch headers only (a segment older than the recovery point); stop at the first bad
    /// header without changing the file.
    Headers,
}

pub(crate) fn file_name(base_offset: u64) -> String {
    format!("{base_offset:020}.log")
}

/// Parses `{base_offset:020}.log`.
pub(crate) fn parse_file_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(".log")?;
    (stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit())).then(|| stem.parse().ok())?
}

impl Segment {
    pub fn create(dir: &Path, base_offset: u64) -> Result<Segment, LogError> {
        let path = dir.join(file_name(base_offset));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| LogError::io("create segment", &path, e))?;
        let len = file
            .metadata()
            .map_err(|e| LogError::io("stat segment", &path, e))?
            .len();
        if len != 0 {
            file.set_len(0)
                .map_err(|e| LogError::io("truncate segment", &path, e))?;
        }
        Ok(Segment {
            base_offset,
            path,
            file: Arc::new(file),
            size: 0,
            next_offset: base_offset,
            index: Vec::new(),
            last_indexed_pos: None,
        })
    }

    /// Opens an existing segment, scanning it to find its end and build its index. With
    /// `Scan::Repair` a torn or corrupt tail is truncated away (and reported in the result).
    pub fn open(
        path: &Path,
        base_offset: u64,
        scan: Scan,
        writable: bool,
    ) -> Result<(Segment, Option<String>), LogError> {
        let file = OpenOptions::new()
            .read(true)
            .write(writable)
            .open(path)
            .map_err(|e| LogError::io("open segment", path, e))?;
        let file_len = file
            .metadata()
            .map_err(|e| LogError::io("stat segment", path, e))?
            .len();
        let mut segment = Segment {
            base_offset,
            path: path.to_path_buf(),
            file: Arc::new(file),
            size: 0,
            next_offset: base_offset,
            index: Vec::new(),
            last_indexed_pos: None,
        };
        let mut header_buf = [0u8; BATCH_HEADER_LEN];
        let mut batch_buf = Vec::new();
        let mut problem = None;
        while segment.size < file_len {
            let pos = segment.size;
            if file_len - pos < BATCH_HEADER_LEN as u64 {
                problem = Some(format!(
                    "{} bytes of a torn batch header at position {pos}",
                    file_len - pos
                ));
                break;
            }
            segment
                .file
                .read_exact_at(&mut header_buf, pos)
                .map_err(|e| LogError::io("read segment", path, e))?;
            let header = match BatchHeader::parse(&header_buf) {
                Ok(header) => header,
                Err(err) => {
                    problem = Some(format!("{err} at position {pos}"));
                    break;
                }
            };
            if header.base_offset != segment.next_offset {
                problem = Some(format!(
                    "batch at position {pos} has offset {}, expected {}",
                    header.base_offset, segment.next_offset
                ));
                break;
            }
            if pos + header.total_len as u64 > file_len {
                problem = Some(format!(
                    "torn batch at position {pos} (offset {})",
                    header.base_offset
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
                    problem = Some(format!("{err} at position {pos}"));
                    break;
                }
            }
            segment.note_appended(&header, pos);
        }
        if problem.is_some() && scan == Scan::Repair && writable {
            segment
                .file
                .set_len(segment.size)
                .and_then(|()| segment.file.sync_all())
                .map_err(|e| LogError::io("truncate torn segment tail", path, e))?;
        }
        Ok((segment, problem))
    }

    fn note_appended(&mut self, header: &BatchHeader, pos: u64) {
        if self
            .last_indexed_pos
            .is_none_or(|last| pos - last >= INDEX_INTERVAL)
        {
            self.index.push((header.base_offset, pos));
            self.last_indexed_pos = Some(pos);
        }
        self.size = pos + header.total_len as u64;
        self.next_offset = header.next_offset();
    }

    /// Writes one encoded batch at the end of the segment (not synced).
    pub fn append(&mut self, bytes: &[u8], header: &BatchHeader) -> Result<(), LogError> {
        let pos = self.size;
        self.file
            .write_all_at(bytes, pos)
            .map_err(|e| LogError::io("append to segment", &self.path, e))?;
        self.note_appended(header, pos);
        Ok(())
    }

    /// The file position of the batch holding `offset`, or the nearest indexed batch before it.
    pub fn position_before(&self, offset: u64) -> u64 {
        match self.index.partition_point(|(base, _)| *base <= offset) {
            0 => 0,
            i => self.index[i - 1].1,
        }
    }

    /// Cuts the segment back so that `offset` is its next offset. `offset` must be a batch
    /// boundary inside this segment.
    pub fn truncate_to(&mut self, offset: u64) -> Result<(), LogError> {
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
        Ok(())
    }

    pub fn sync(&self) -> Result<(), LogError> {
        self.file
            .sync_data()
            .map_err(|e| LogError::io("fsync segment", &self.path, e))
    }
}

/// What a reader took from a segment under the partition lock, so that it can read without it.
pub(crate) struct SegmentView {
    pub file: Arc<File>,
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
    while at + BATCH_HEADER_LEN <= buf.len() {
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
