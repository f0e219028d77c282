//! `sluice log repair`: what to do when recovery refuses a log whose committed data is damaged.
//!
//! Recovery never changes damaged committed data (see `recovery`). Repair, run by the operator
//! with the pipeline stopped, does it deliberately and says what it did: for each damaged
//! partition it copies the bytes from the damage to the end of the segment into `damaged/`
//! beside it, keeps every later batch whose checksum still verifies (in new segments at their
//! own offsets), cuts the segment at the damage, and records the offsets that are gone in
//! `lost-offsets.json`. Offsets are never reused: the partition still ends where its commits
//! say, so sinks' committed offsets stay meaningful and a reader skips the holes.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::batch::{self, BatchHeader, BATCH_HEADER_LEN};
use crate::{segment, sync_dir, Log, LogError, LogOptions};

/// The name of the file listing a partition's lost offsets.
const LOST_OFFSETS: &str = "lost-offsets.json";

/// A run of offsets a repair could not keep (`end` exclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LostRange {
    pub start: u64,
    pub end: u64,
}

/// What a repair did to one damaged partition.
#[derive(Debug, Clone)]
pub struct RepairReport {
    /// `partition topic/N`, or the control partition.
    pub what: String,
    /// Where the damaged bytes were copied.
    pub kept_at: PathBuf,
    /// Offsets gone for good (for the control partition: none are listed; the commits after
    /// the damage are gone, and what they covered is cut as uncommitted on the next open).
    pub lost: Vec<LostRange>,
    /// Records after the damage whose batches verified and were kept.
    pub salvaged: u64,
}

/// The offsets a repair recorded as lost in partition directory `dir`.
pub(crate) fn lost_offsets(dir: &Path) -> Result<Vec<Range<u64>>, LogError> {
    let path = dir.join(LOST_OFFSETS);
    match fs::read(&path) {
        Ok(bytes) => {
            let ranges: Vec<LostRange> = serde_json::from_slice(&bytes)
                .map_err(|e| LogError::corrupt(format!("{} is unreadable: {e}", path.display())))?;
            Ok(ranges.iter().map(|r| r.start..r.end).collect())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(LogError::io("read", &path, e)),
    }
}

impl Log {
    /// Repairs every partition whose committed data recovery refuses, one at a time, until the
    /// log opens; returns what was done (empty when the log was sound). Takes the log's lock:
    /// no pipeline may run on it meanwhile.
    pub fn repair(
        dir: impl AsRef<Path>,
        options: LogOptions,
    ) -> Result<Vec<RepairReport>, LogError> {
        let dir = dir.as_ref();
        let mut reports = Vec::new();
        loop {
            match Log::open(dir, options.clone()) {
                Ok(_) => return Ok(reports),
                Err(LogError::CommittedDataCorrupt {
                    what,
                    segment,
                    position,
                    offset,
                    committed,
                    ..
                }) => {
                    let control = segment.parent() == Some(&dir.join("control"));
                    let report =
                        repair_segment(&what, &segment, position, offset, committed, control)?;
                    if reports
                        .iter()
                        .any(|r: &RepairReport| r.kept_at == report.kept_at)
                    {
                        return Err(LogError::corrupt(format!(
                            "{what}: repair did not clear the damage at byte {position}"
                        )));
                    }
                    reports.push(report);
                }
                Err(other) => return Err(other),
            }
        }
    }
}

/// Repairs one segment whose bytes stop making sense at `position` (offset `offset`).
fn repair_segment(
    what: &str,
    path: &Path,
    position: u64,
    offset: u64,
    committed: u64,
    control: bool,
) -> Result<RepairReport, LogError> {
    let dir = path
        .parent()
        .expect("segments live in a partition directory");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| LogError::io("open damaged segment", path, e))?;
    let len = file
        .metadata()
        .map_err(|e| LogError::io("stat damaged segment", path, e))?
        .len();
    let kept_at = keep_damaged_bytes(&file, path, position, len)?;
    let mut report = RepairReport {
        what: what.to_owned(),
        kept_at,
        lost: Vec::new(),
        salvaged: 0,
    };
    if !control {
        salvage(&file, dir, position, offset, committed, len, &mut report)?;
    }
    file.set_len(position)
        .and_then(|()| file.sync_all())
        .map_err(|e| LogError::io("cut damaged segment", path, e))?;
    if !control {
        record_lost(dir, &report.lost)?;
    }
    sync_dir(dir)?;
    Ok(report)
}

/// Copies `[position, len)` of the segment into `damaged/` beside it, synced.
fn keep_damaged_bytes(
    file: &File,
    path: &Path,
    position: u64,
    len: u64,
) -> Result<PathBuf, LogError> {
    let damaged_dir = path.parent().expect("partition directory").join("damaged");
    fs::create_dir_all(&damaged_dir)
        .map_err(|e| LogError::io("create directory", &damaged_dir, e))?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("segment");
    let kept_at = damaged_dir.join(format!("{name}.from-byte-{position}"));
    let mut out = File::create(&kept_at).map_err(|e| LogError::io("create", &kept_at, e))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = position;
    while pos < len {
        let n = usize::try_from((len - pos).min(buf.len() as u64)).unwrap_or(buf.len());
        file.read_exact_at(&mut buf[..n], pos)
            .map_err(|e| LogError::io("read damaged segment", path, e))?;
        out.write_all(&buf[..n])
            .map_err(|e| LogError::io("write", &kept_at, e))?;
        pos += n as u64;
    }
    out.sync_all()
        .map_err(|e| LogError::io("fsync", &kept_at, e))?;
    sync_dir(&damaged_dir)?;
    Ok(kept_at)
}

/// Walks the batches after the damage up to the committed end: those that verify go into new
/// segments at their own offsets, the rest are recorded as lost. Ends with an empty segment at
/// the committed end when the last batches are lost, so that offsets are never reused.
fn salvage(
    file: &File,
    dir: &Path,
    mut pos: u64,
    mut expected: u64,
    committed: u64,
    len: u64,
    report: &mut RepairReport,
) -> Result<(), LogError> {
    let mut run: Option<File> = None;
    let mut reached = expected;
    let mut header_buf = [0u8; BATCH_HEADER_LEN];
    let mut batch_buf = Vec::new();
    while expected < committed {
        let header = (len - pos >= BATCH_HEADER_LEN as u64)
            .then(|| file.read_exact_at(&mut header_buf, pos).ok())
            .flatten()
            .and_then(|()| BatchHeader::parse(&header_buf).ok())
            .filter(|h| h.base_offset == expected && pos + h.total_len as u64 <= len);
        let Some(header) = header else {
            // Without a header to trust there is no way to the next batch.
            lost(report, expected, committed);
            break;
        };
        batch_buf.resize(header.total_len, 0);
        file.read_exact_at(&mut batch_buf, pos)
            .map_err(|e| LogError::io("read damaged segment", dir, e))?;
        if batch::verify(&batch_buf).is_ok() {
            let out = match &mut run {
                Some(out) => out,
                None => {
                    let path = dir.join(segment::file_name(expected));
                    run.insert(
                        File::create(&path)
                            .map_err(|e| LogError::io("create segment", &path, e))?,
                    )
                }
            };
            out.write_all(&batch_buf)
                .map_err(|e| LogError::io("write salvaged segment", dir, e))?;
            report.salvaged += header.next_offset() - header.base_offset;
            reached = header.next_offset();
        } else {
            if let Some(out) = run.take() {
                out.sync_all()
                    .map_err(|e| LogError::io("fsync segment", dir, e))?;
            }
            lost(report, expected, header.next_offset());
        }
        pos += header.total_len as u64;
        expected = header.next_offset();
    }
    if let Some(out) = run.take() {
        out.sync_all()
            .map_err(|e| LogError::io("fsync segment", dir, e))?;
    }
    if reached < committed && report.lost.last().is_some_and(|r| r.end >= committed) {
        let path = dir.join(segment::file_name(committed));
        File::create(&path)
            .and_then(|f| f.sync_all())
            .map_err(|e| LogError::io("create segment", &path, e))?;
    }
    Ok(())
}

/// Adds `[start, end)` to the lost ranges, merged with the previous one when they touch.
fn lost(report: &mut RepairReport, start: u64, end: u64) {
    match report.lost.last_mut() {
        Some(last) if last.end == start => last.end = end,
        _ => report.lost.push(LostRange { start, end }),
    }
}

/// Adds `ranges` to the partition's `lost-offsets.json`, crash-atomically.
fn record_lost(dir: &Path, ranges: &[LostRange]) -> Result<(), LogError> {
    let mut all: Vec<LostRange> = lost_offsets(dir)?
        .into_iter()
        .map(|r| LostRange {
            start: r.start,
            end: r.end,
        })
        .collect();
    all.extend_from_slice(ranges);
    let path = dir.join(LOST_OFFSETS);
    let tmp = dir.join(format!("{LOST_OFFSETS}.tmp"));
    let bytes = serde_json::to_vec_pretty(&all).expect("ranges serialize");
    let mut file = File::create(&tmp).map_err(|e| LogError::io("create", &tmp, e))?;
    file.write_all(&bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| LogError::io("write", &tmp, e))?;
    fs::rename(&tmp, &path).map_err(|e| LogError::io("rename", &path, e))?;
    Ok(())
}
