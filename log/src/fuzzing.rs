//! Entry points for the fuzz targets in `fuzz/` (and their stable stand-in tests): everything
//! that reads bytes from disk, driven with arbitrary input. Not part of the public API.

use bytes::Bytes;

use crate::batch::{self, BatchHeader, BATCH_HEADER_LEN};
use crate::segment::{Scan, Segment};

/// Decodes `data` as a run of record batches; returns how many decoded cleanly.
pub fn decode_batches(data: &[u8]) -> usize {
    let bytes = Bytes::copy_from_slice(data);
    let (mut pos, mut decoded, mut records) = (0, 0, Vec::new());
    while pos + BATCH_HEADER_LEN <= bytes.len() {
        let Ok(header) = BatchHeader::parse(&bytes[pos..]) else {
            break;
        };
        if pos + header.total_len > bytes.len() {
            break;
        }
        records.clear();
        if batch::decode(&bytes.slice(pos..pos + header.total_len), &mut records).is_ok() {
            decoded += 1;
        }
        pos += header.total_len;
    }
    decoded
}

/// Writes `data` as a segment file and opens it the way recovery does (CRC scan, cut the tail).
pub fn recover_segment(data: &[u8]) {
    let dir = std::env::temp_dir().join(format!(
        "sluice-fuzz-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join(crate::segment::file_name(0));
    if std::fs::write(&path, data).is_ok() {
        if let Ok((mut segment, damage)) = Segment::open(
            &crate::storage::FileSystem,
            &path,
            0,
            Scan::Repair,
            true,
            false,
        ) {
            if damage.is_some() {
                let _ = segment.cut_damaged_tail();
            }
            let _ = segment.write_index_files();
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
