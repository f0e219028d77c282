//! Kafka record batch v2 (magic 2): the unit sluice's log writes, checks and reads.
//!
//! Batches are stored byte for byte as Kafka stores them (see shared/reference/kafka-log-format.md),
//! so that a segment can later be served to Kafka clients or moved to Kafka unchanged (a test
//! reads segments with Kafka's own Java client). This is a lean codec of our own rather than the
//! `kafka-protocol` crate: the log needs uncompressed and LZ4 batches only, and the generated
//! protocol crate would add a large build for one struct.
//!
//! Layout (big-endian): baseOffset i64, batchLength i32, partitionLeaderEpoch i32, magic i8,
//! crc u32 (CRC-32C of everything after it), attributes i16, lastOffsetDelta i32,
//! baseTimestamp i64, maxTimestamp i64, producerId i64, producerEpoch i16, baseSequence i32,
//! record count i32, records. With compression (attributes bits 0–2) the records after the
//! count are one compressed blob; the embedded log writes and reads LZ4 (type 3, an LZ4 frame
//! of independent 64 KiB blocks, as Kafka writes it).
//!
//! The record types here are what every log backend speaks (`event_log::EventLog`); the codec
//! is what the embedded log stores and what writers prepare batches with on their own threads.

use std::cell::RefCell;
use std::io::Read;

use bytes::Bytes;

mod builder;
mod lz4;
pub use builder::BatchBuilder;

/// Bytes before the records: every batch has this fixed header.
pub const BATCH_HEADER_LEN: usize = 61;
/// Bytes of `baseOffset` + `batchLength`, the part not counted in `batchLength`.
pub const BATCH_PREFIX_LEN: usize = 12;
const MAGIC: i8 = 2;
const CRC_START: usize = 21;
/// Upper bound on one batch; anything larger in a header is corruption, not data.
pub const MAX_BATCH_LEN: usize = 256 * 1024 * 1024;
/// Records are gathered into batches of about this many bytes, before compression (Kafka's
/// default largest batch is 1 MiB).
pub const TARGET_BATCH_BYTES: usize = 1024 * 1024;

/// A batch that does not decode: truncated, failing its CRC, or not Kafka's layout.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BatchError(pub String);

impl BatchError {
    fn corrupt(message: impl Into<String>) -> BatchError {
        BatchError(message.into())
    }
}

/// How a batch's records are compressed: the codes of Kafka's attributes bits 0–2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    None,
    /// LZ4 frames. Change events repeat most of their envelope from record to record, so a
    /// batch of them shrinks 5–15×, and compressing is faster than writing the difference.
    #[default]
    Lz4,
}

impl Compression {
    fn code(self) -> i16 {
        match self {
            Compression::None => 0,
            Compression::Lz4 => 3,
        }
    }
}

/// A header on a record: UTF-8 key, optional bytes value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub key: String,
    pub value: Option<Bytes>,
}

/// A record to append. Offsets are assigned by the partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record {
    pub key: Option<Bytes>,
    /// `None` is a tombstone.
    pub value: Option<Bytes>,
    pub timestamp_ms: i64,
    pub headers: Vec<Header>,
}

/// A stretch `start..end` of a packed buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

/// A record whose key and value lie in a buffer it shares with other records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackedEntry {
    pub key: Option<Span>,
    /// `None` is a tombstone.
    pub value: Option<Span>,
    pub timestamp_ms: i64,
    pub headers: Vec<Header>,
}

/// Records written back to back into one buffer, as an encoder writes them: no allocation or
/// reference count per record. Several partitions' records may share one buffer.
#[derive(Debug, Clone, Default)]
pub struct PackedRecords {
    pub data: Bytes,
    pub entries: Vec<PackedEntry>,
}

impl PackedRecords {
    /// Each record as a view into the buffer.
    pub fn views(&self) -> Vec<PackedRecord<'_>> {
        self.entries
            .iter()
            .map(|entry| PackedRecord {
                data: &self.data,
                entry,
            })
            .collect()
    }
}

/// One record of [`PackedRecords`].
#[derive(Debug, Clone, Copy)]
pub struct PackedRecord<'a> {
    data: &'a [u8],
    entry: &'a PackedEntry,
}

/// The records of one partition's slice of an append.
#[derive(Debug, Clone)]
pub enum Records {
    Owned(Vec<Record>),
    Packed(PackedRecords),
    /// Whole batches encoded (and compressed) by the writer, at base offset 0: the partition
    /// only sets their base offsets. Writers prepare them on their own threads, so that
    /// compressing and checksumming are not done by the one thread that appends.
    Prepared(PreparedBatches),
}

/// One partition's slice of an append.
#[derive(Debug, Clone)]
pub struct PartitionBatch {
    pub topic: String,
    pub partition: u32,
    pub records: Records,
}

/// Batches back to back in one buffer, each at base offset 0 (see [`BatchBuilder`]).
#[derive(Debug, Clone, Default)]
pub struct PreparedBatches {
    pub data: Bytes,
    /// Records in all the batches.
    pub records: usize,
}

impl Records {
    pub fn len(&self) -> usize {
        match self {
            Records::Owned(records) => records.len(),
            Records::Packed(packed) => packed.entries.len(),
            Records::Prepared(prepared) => prepared.records,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The records' size: the batches' bytes as stored when prepared (compressed), otherwise
    /// the keys and values.
    pub fn byte_len(&self) -> usize {
        let size = |b: &Option<Bytes>| b.as_ref().map_or(0, Bytes::len);
        match self {
            Records::Owned(records) => records.iter().map(|r| size(&r.key) + size(&r.value)).sum(),
            Records::Packed(packed) => packed.data.len(),
            Records::Prepared(prepared) => prepared.data.len(),
        }
    }

    /// Adds `header` to the last record; false when there is none (or the records are
    /// prepared batches already).
    pub fn push_header_to_last(&mut self, header: Header) -> bool {
        let headers = match self {
            Records::Owned(records) => records.last_mut().map(|r| &mut r.headers),
            Records::Packed(packed) => packed.entries.last_mut().map(|e| &mut e.headers),
            Records::Prepared(_) => None,
        };
        match headers {
            Some(headers) => {
                headers.push(header);
                true
            }
            None => false,
        }
    }
}

impl From<Vec<Record>> for Records {
    fn from(records: Vec<Record>) -> Records {
        Records::Owned(records)
    }
}

impl FromIterator<Record> for Records {
    fn from_iter<I: IntoIterator<Item = Record>>(records: I) -> Records {
        Records::Owned(records.into_iter().collect())
    }
}

/// What writing a record into a batch needs of it.
pub trait RecordView {
    fn key(&self) -> Option<&[u8]>;
    fn value(&self) -> Option<&[u8]>;
    fn timestamp_ms(&self) -> i64;
    fn headers(&self) -> &[Header];
}

impl RecordView for Record {
    fn key(&self) -> Option<&[u8]> {
        self.key.as_deref()
    }
    fn value(&self) -> Option<&[u8]> {
        self.value.as_deref()
    }
    fn timestamp_ms(&self) -> i64 {
        self.timestamp_ms
    }
    fn headers(&self) -> &[Header] {
        &self.headers
    }
}

impl RecordView for PackedRecord<'_> {
    fn key(&self) -> Option<&[u8]> {
        self.entry.key.map(|s| &self.data[s.start..s.end])
    }
    fn value(&self) -> Option<&[u8]> {
        self.entry.value.map(|s| &self.data[s.start..s.end])
    }
    fn timestamp_ms(&self) -> i64 {
        self.entry.timestamp_ms
    }
    fn headers(&self) -> &[Header] {
        &self.entry.headers
    }
}

/// A record read back, with its offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    pub offset: u64,
    pub timestamp_ms: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<Header>,
}

/// The fixed header of a batch, read without touching its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: u64,
    /// Whole batch length in bytes, prefix included.
    pub total_len: usize,
    pub last_offset_delta: u32,
    pub max_timestamp_ms: i64,
    pub record_count: u32,
}

impl BatchHeader {
    /// Offset after the last record of the batch.
    pub fn next_offset(&self) -> u64 {
        self.base_offset + u64::from(self.last_offset_delta) + 1
    }

    /// Parses the fixed header; checks bounds and magic but not the CRC.
    pub fn parse(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
        if bytes.len() < BATCH_HEADER_LEN {
            return Err(BatchError::corrupt("batch header is truncated"));
        }
        let base_offset = i64::from_be_bytes(bytes[0..8].try_into().expect("8 bytes"));
        let batch_len = i32::from_be_bytes(bytes[8..12].try_into().expect("4 bytes"));
        let magic = bytes[16] as i8;
        if magic != MAGIC {
            return Err(BatchError::corrupt(format!(
                "batch magic is {magic}, expected 2"
            )));
        }
        let base_offset = u64::try_from(base_offset)
            .map_err(|_| BatchError::corrupt("batch base offset is negative"))?;
        let total_len = usize::try_from(batch_len)
            .ok()
            .map(|len| len + BATCH_PREFIX_LEN)
            .filter(|len| (BATCH_HEADER_LEN..=MAX_BATCH_LEN).contains(len))
            .ok_or_else(|| {
                BatchError::corrupt(format!("batch length {batch_len} is out of bounds"))
            })?;
        let last_offset_delta = i32::from_be_bytes(bytes[23..27].try_into().expect("4 bytes"));
        let max_timestamp_ms = i64::from_be_bytes(bytes[35..43].try_into().expect("8 bytes"));
        let record_count = i32::from_be_bytes(bytes[57..61].try_into().expect("4 bytes"));
        let last_offset_delta = u32::try_from(last_offset_delta)
            .map_err(|_| BatchError::corrupt("batch last offset delta is negative"))?;
        let record_count = u32::try_from(record_count)
            .ok()
            // Compacted batches keep their offsets and so can have gaps: fewer records than the
            // offset range, never more.
            .filter(|count| (1..=last_offset_delta + 1).contains(count))
            .ok_or_else(|| BatchError::corrupt("batch record count does not match its offsets"))?;
        Ok(BatchHeader {
            base_offset,
            total_len,
            last_offset_delta,
            max_timestamp_ms,
            record_count,
        })
    }
}

/// Appends one encoded batch holding `records` at `base_offset` to `out`.
#[cfg(test)]
pub fn encode<R: RecordView>(base_offset: u64, records: &[R], out: &mut Vec<u8>) {
    encode_batch(base_offset, records, None, Compression::None, out);
}

/// Like [`encode`], with each record's offset given as a delta from `base_offset` (increasing;
/// gaps allowed), as compaction writes them.
pub fn encode_with_deltas<R: RecordView>(
    base_offset: u64,
    records: &[R],
    offset_deltas: Option<&[u32]>,
    out: &mut Vec<u8>,
) {
    encode_batch(base_offset, records, offset_deltas, Compression::None, out);
}

/// Like [`encode`], compressed.
pub fn encode_compressed<R: RecordView>(
    base_offset: u64,
    records: &[R],
    compression: Compression,
    out: &mut Vec<u8>,
) {
    encode_batch(base_offset, records, None, compression, out);
}

/// How many of `records` (at least one) go into the next batch: about [`TARGET_BATCH_BYTES`].
pub fn next_batch_len<R: RecordView>(records: &[R]) -> usize {
    let mut end = 0;
    let mut bytes = 0;
    while end < records.len()
        && (end == 0 || bytes + record_size(&records[end]) <= TARGET_BATCH_BYTES)
    {
        bytes += record_size(&records[end]);
        end += 1;
    }
    end
}

/// Roughly the encoded size of a record.
fn record_size<R: RecordView>(record: &R) -> usize {
    let headers: usize = record
        .headers()
        .iter()
        .map(|h| h.key.len() + h.value.as_ref().map_or(0, |v| v.len()) + 4)
        .sum();
    record.key().map_or(0, <[u8]>::len) + record.value().map_or(0, <[u8]>::len) + headers + 24
}

/// `plain` (records) into `out`, compressed so.
fn put_compressed(plain: &[u8], compression: Compression, out: &mut Vec<u8>) {
    match compression {
        Compression::None => out.extend_from_slice(plain),
        Compression::Lz4 => lz4::put_frame(plain, out),
    }
}

/// Patches the batch starting at `start` (the last one in `out`) with its length and CRC.
fn seal(out: &mut [u8], start: usize) {
    // Past i32 the length cannot be written; the largest value makes the batch fail to parse,
    // which the partition reports as a record too large.
    let batch_len = i32::try_from(out.len() - start - BATCH_PREFIX_LEN).unwrap_or(i32::MAX);
    out[start + 8..start + 12].copy_from_slice(&batch_len.to_be_bytes());
    let crc = crc32c::crc32c(&out[start + CRC_START..]);
    out[start + 17..start + 21].copy_from_slice(&crc.to_be_bytes());
}

thread_local! {
    /// The uncompressed records of the batch being compressed, kept between batches so that
    /// each batch does not fault in a fresh megabyte.
    static PLAIN: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

fn encode_batch<R: RecordView>(
    base_offset: u64,
    records: &[R],
    offset_deltas: Option<&[u32]>,
    compression: Compression,
    out: &mut Vec<u8>,
) {
    assert!(!records.is_empty(), "a batch holds at least one record");
    let delta_of = |i: usize| offset_deltas.map_or(i as i64, |d| i64::from(d[i]));
    let start = out.len();
    let base_timestamp = records.iter().map(|r| r.timestamp_ms()).min().unwrap_or(0);
    let max_timestamp = records.iter().map(|r| r.timestamp_ms()).max().unwrap_or(0);
    let last_offset_delta =
        i32::try_from(delta_of(records.len() - 1)).expect("batch offsets fit i32");
    let record_count = i32::try_from(records.len()).expect("batch record count fits i32");
    out.extend_from_slice(&(base_offset as i64).to_be_bytes());
    out.extend_from_slice(&0i32.to_be_bytes()); // batchLength, patched below
    out.extend_from_slice(&0i32.to_be_bytes()); // partitionLeaderEpoch
    out.push(MAGIC as u8);
    out.extend_from_slice(&0u32.to_be_bytes()); // crc, patched below
    out.extend_from_slice(&compression.code().to_be_bytes()); // attributes; CreateTime
    out.extend_from_slice(&last_offset_delta.to_be_bytes());
    out.extend_from_slice(&base_timestamp.to_be_bytes());
    out.extend_from_slice(&max_timestamp.to_be_bytes());
    out.extend_from_slice(&(-1i64).to_be_bytes()); // producerId
    out.extend_from_slice(&(-1i16).to_be_bytes()); // producerEpoch
    out.extend_from_slice(&(-1i32).to_be_bytes()); // baseSequence
    out.extend_from_slice(&record_count.to_be_bytes());
    match compression {
        Compression::None => put_records(records, base_timestamp, delta_of, out),
        Compression::Lz4 => PLAIN.with_borrow_mut(|plain| {
            plain.clear();
            put_records(records, base_timestamp, delta_of, plain);
            put_compressed(plain, compression, out);
            // A very large batch leaves a buffer this thread need not keep.
            if plain.capacity() > 4 * TARGET_BATCH_BYTES {
                *plain = Vec::new();
            }
        }),
    }
    seal(out, start);
}

/// The records of a batch, uncompressed, in Kafka's record format.
fn put_records<R: RecordView>(
    records: &[R],
    base_timestamp: i64,
    delta_of: impl Fn(usize) -> i64,
    out: &mut Vec<u8>,
) {
    // A close upper estimate is enough to avoid regrowing; exact lengths come per record below.
    out.reserve(
        records
            .iter()
            .map(|r| r.key().map_or(0, <[u8]>::len) + r.value().map_or(0, <[u8]>::len) + 40)
            .sum(),
    );
    for (i, record) in records.iter().enumerate() {
        // The length prefix comes first, so it is computed rather than measured after writing.
        let timestamp_delta = record.timestamp_ms() - base_timestamp;
        let delta = delta_of(i);
        put_varlong(out, record_len(record, timestamp_delta, delta) as i64);
        out.push(0); // record attributes
        put_varlong(out, timestamp_delta);
        put_varlong(out, delta);
        put_bytes(out, record.key());
        put_bytes(out, record.value());
        put_varlong(out, record.headers().len() as i64);
        for header in record.headers() {
            put_bytes(out, Some(header.key.as_bytes()));
            put_bytes(out, header.value.as_deref());
        }
    }
}

/// Checks the CRC of a whole batch (`bytes` is exactly one batch).
pub fn verify(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
    let header = BatchHeader::parse(bytes)?;
    if bytes.len() != header.total_len {
        return Err(BatchError::corrupt("batch is truncated"));
    }
    let stored = u32::from_be_bytes(bytes[17..21].try_into().expect("4 bytes"));
    let computed = crc32c::crc32c(&bytes[CRC_START..]);
    if stored != computed {
        return Err(BatchError::corrupt(format!(
            "batch at offset {} fails its CRC (stored {stored:08x}, computed {computed:08x})",
            header.base_offset
        )));
    }
    Ok(header)
}

/// Decodes the records of one CRC-checked batch; `batch` is a slice of a shared read buffer so
/// keys and values are not copied.
pub fn decode(batch: &Bytes, out: &mut Vec<StoredRecord>) -> Result<BatchHeader, BatchError> {
    let header = verify(batch)?;
    let attributes = i16::from_be_bytes(batch[21..23].try_into().expect("2 bytes"));
    let records = match attributes & 0x7 {
        0 => batch.slice(BATCH_HEADER_LEN..),
        3 => decompress_lz4(&batch[BATCH_HEADER_LEN..])?,
        other => {
            return Err(BatchError::corrupt(format!(
                "batch at offset {} uses compression type {other}; the embedded log reads \
                 uncompressed (0) and LZ4 (3) batches",
                header.base_offset
            )))
        }
    };
    let base_timestamp = i64::from_be_bytes(batch[27..35].try_into().expect("8 bytes"));
    let mut cursor = Cursor {
        bytes: &records,
        pos: 0,
    };
    for _ in 0..header.record_count {
        let len = cursor.varint_len()?;
        let end = cursor.pos + len;
        if end > records.len() {
            return Err(BatchError::corrupt("record runs past its batch"));
        }
        cursor.pos += 1; // record attributes
        let timestamp_delta = cursor.varlong()?;
        let offset_delta = cursor.varlong()?;
        let key = cursor.nullable_bytes()?;
        let value = cursor.nullable_bytes()?;
        let header_count = cursor.varint_len()?;
        let mut headers = Vec::with_capacity(header_count.min(64));
        for _ in 0..header_count {
            let key = cursor.nullable_bytes()?.unwrap_or_default();
            let key = String::from_utf8(key.to_vec())
                .map_err(|_| BatchError::corrupt("record header key is not UTF-8"))?;
            let value = cursor.nullable_bytes()?;
            headers.push(Header { key, value });
        }
        if cursor.pos != end {
            return Err(BatchError::corrupt(
                "record length does not match its fields",
            ));
        }
        let offset_delta = u64::try_from(offset_delta)
            .map_err(|_| BatchError::corrupt("negative offset delta"))?;
        out.push(StoredRecord {
            offset: header.base_offset + offset_delta,
            timestamp_ms: base_timestamp.wrapping_add(timestamp_delta),
            key,
            value,
            headers,
        });
    }
    if cursor.pos != records.len() {
        return Err(BatchError::corrupt(
            "batch holds bytes past its last record",
        ));
    }
    Ok(header)
}

/// The records blob of an LZ4-compressed batch, uncompressed (at most [`MAX_BATCH_LEN`]).
fn decompress_lz4(compressed: &[u8]) -> Result<Bytes, BatchError> {
    let mut plain = Vec::with_capacity(compressed.len().saturating_mul(8).min(MAX_BATCH_LEN));
    lz4_flex::frame::FrameDecoder::new(compressed)
        .take(MAX_BATCH_LEN as u64 + 1)
        .read_to_end(&mut plain)
        .map_err(|e| {
            BatchError::corrupt(format!("LZ4-compressed batch does not decompress: {e}"))
        })?;
    if plain.len() > MAX_BATCH_LEN {
        return Err(BatchError::corrupt(
            "LZ4-compressed batch decompresses past the largest batch size",
        ));
    }
    Ok(Bytes::from(plain))
}

struct Cursor<'a> {
    bytes: &'a Bytes,
    pos: usize,
}

impl Cursor<'_> {
    fn varlong(&mut self) -> Result<i64, BatchError> {
        let mut raw: u64 = 0;
        for shift in (0..70).step_by(7) {
            let byte = *self
                .bytes
                .get(self.pos)
                .ok_or_else(|| BatchError::corrupt("varint runs past its batch"))?;
            self.pos += 1;
            raw |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(((raw >> 1) as i64) ^ -((raw & 1) as i64));
            }
        }
        Err(BatchError::corrupt("varint is longer than 10 bytes"))
    }

    fn varint_len(&mut self) -> Result<usize, BatchError> {
        let value = self.varlong()?;
        usize::try_from(value).map_err(|_| BatchError::corrupt("negative length"))
    }

    fn nullable_bytes(&mut self) -> Result<Option<Bytes>, BatchError> {
        let len = self.varlong()?;
        if len < 0 {
            return Ok(None);
        }
        let len = usize::try_from(len).map_err(|_| BatchError::corrupt("length overflows"))?;
        let end = self
            .pos
            .checked_add(len)
            .filter(|end| *end <= self.bytes.len());
        let end = end.ok_or_else(|| BatchError::corrupt("field runs past its batch"))?;
        let slice = self.bytes.slice(self.pos..end);
        self.pos = end;
        Ok(Some(slice))
    }
}

/// Encoded size of a record's body (everything after its length prefix).
fn record_len<R: RecordView>(record: &R, timestamp_delta: i64, offset_delta: i64) -> usize {
    let bytes_len =
        |b: Option<&[u8]>| b.map_or(varlong_len(-1), |b| varlong_len(b.len() as i64) + b.len());
    let headers: usize = record
        .headers()
        .iter()
        .map(|h| bytes_len(Some(h.key.as_bytes())) + bytes_len(h.value.as_deref()))
        .sum();
    1 + varlong_len(timestamp_delta)
        + varlong_len(offset_delta)
        + bytes_len(record.key())
        + bytes_len(record.value())
        + varlong_len(record.headers().len() as i64)
        + headers
}

/// Bytes of a zig-zag varint.
#[inline]
fn varlong_len(value: i64) -> usize {
    let raw = ((value << 1) ^ (value >> 63)) as u64;
    (64 - raw.leading_zeros() as usize).max(1).div_ceil(7)
}

#[inline]
fn put_varlong(out: &mut Vec<u8>, value: i64) {
    let mut raw = ((value << 1) ^ (value >> 63)) as u64;
    while raw >= 0x80 {
        out.push((raw as u8) | 0x80);
        raw >>= 7;
    }
    out.push(raw as u8);
}

#[inline]
fn put_bytes(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        None => put_varlong(out, -1),
        Some(bytes) => {
            put_varlong(out, bytes.len() as i64);
            out.extend_from_slice(bytes);
        }
    }
}

#[cfg(test)]
mod tests;
