//! Prepared batches: a writer frames each record into its partition's open batch as it
//! encodes it, and closes (compresses, checksums) the batch on its own thread; the partition only
//! sets the base offset (see [`super::Records::Prepared`]).

use std::cell::RefCell;

use bytes::Bytes;

use super::{
    put_bytes, put_compressed, put_varlong, seal, varlong_len, Compression, Header,
    PreparedBatches, MAGIC, TARGET_BATCH_BYTES,
};

thread_local! {
    /// Open-batch buffers of [`BatchBuilder`]s, kept between builders so that each batch does
    /// not fault in a fresh megabyte.
    static PLAIN_POOL: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// Builds one partition's prepared batches record by record, as a writer encodes them: each
/// record is framed into the open batch's buffer while its bytes are still in cache, and the
/// batch is closed (compressed, checksummed) once it holds about [`TARGET_BATCH_BYTES`].
pub struct BatchBuilder {
    compression: Compression,
    /// Closed batches, back to back.
    out: Vec<u8>,
    /// The open batch's records, uncompressed.
    plain: Vec<u8>,
    count: u32,
    records: usize,
    base_timestamp: i64,
    max_timestamp: i64,
    /// Where the open batch's last record starts in `plain`, and its key and value ranges (to
    /// frame it again with one more header in `finish`).
    last: Option<LastRecord>,
}

struct LastRecord {
    start: usize,
    key: Option<(usize, usize)>,
    value: Option<(usize, usize)>,
    timestamp_ms: i64,
    /// How many headers it has, and where their encoded bytes lie (kept as bytes: records
    /// with a header each would otherwise copy it for every record pushed).
    header_count: usize,
    headers: (usize, usize),
}

impl BatchBuilder {
    /// `capacity`: the bytes the closed batches are expected to take.
    pub fn new(compression: Compression, capacity: usize) -> BatchBuilder {
        BatchBuilder {
            compression,
            out: Vec::with_capacity(capacity),
            plain: PLAIN_POOL.with_borrow_mut(Vec::pop).unwrap_or_default(),
            count: 0,
            records: 0,
            base_timestamp: 0,
            max_timestamp: i64::MIN,
            last: None,
        }
    }

    /// Appends a record (offsets follow on from the previous one).
    pub fn push(
        &mut self,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        timestamp_ms: i64,
        headers: &[Header],
    ) {
        let headers_len: usize = headers
            .iter()
            .map(|h| bytes_len(Some(h.key.as_bytes())) + bytes_len(h.value.as_deref()))
            .sum();
        self.push_framed(
            key,
            value,
            timestamp_ms,
            headers.len(),
            headers_len,
            |plain| {
                for header in headers {
                    put_bytes(plain, Some(header.key.as_bytes()));
                    put_bytes(plain, header.value.as_deref());
                }
            },
        );
    }

    /// Appends a record whose `count` headers `write_headers` encodes in `headers_len` bytes.
    fn push_framed(
        &mut self,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        timestamp_ms: i64,
        count: usize,
        headers_len: usize,
        write_headers: impl FnOnce(&mut Vec<u8>),
    ) {
        let size = key.map_or(0, <[u8]>::len) + value.map_or(0, <[u8]>::len) + 24;
        if self.count > 0 && self.plain.len() + size > TARGET_BATCH_BYTES {
            self.close_batch();
        }
        if self.count == 0 {
            self.base_timestamp = timestamp_ms;
            self.max_timestamp = timestamp_ms;
        }
        self.max_timestamp = self.max_timestamp.max(timestamp_ms);
        let start = self.plain.len();
        let timestamp_delta = timestamp_ms.wrapping_sub(self.base_timestamp);
        let offset_delta = i64::from(self.count);
        let record_len = 1
            + varlong_len(timestamp_delta)
            + varlong_len(offset_delta)
            + bytes_len(key)
            + bytes_len(value)
            + varlong_len(count as i64)
            + headers_len;
        let plain = &mut self.plain;
        put_varlong(plain, record_len as i64);
        plain.push(0); // record attributes
        put_varlong(plain, timestamp_delta);
        put_varlong(plain, offset_delta);
        let key_range = put_bytes_at(plain, key);
        let value_range = put_bytes_at(plain, value);
        put_varlong(plain, count as i64);
        let headers_start = plain.len();
        write_headers(plain);
        debug_assert_eq!(plain.len() - headers_start, headers_len);
        self.last = Some(LastRecord {
            start,
            key: key_range,
            value: value_range,
            timestamp_ms,
            header_count: count,
            headers: (headers_start, plain.len()),
        });
        self.count += 1;
        self.records += 1;
    }

    /// Closes the open batch and returns every batch; `last_header` is added to the last
    /// record first.
    pub fn finish(mut self, last_header: Option<Header>) -> PreparedBatches {
        if let (Some(header), Some(last)) = (last_header, self.last.take()) {
            let bytes =
                |range: Option<(usize, usize)>| range.map(|(s, e)| self.plain[s..e].to_vec());
            let (key, value) = (bytes(last.key), bytes(last.value));
            let mut headers = self.plain[last.headers.0..last.headers.1].to_vec();
            put_bytes(&mut headers, Some(header.key.as_bytes()));
            put_bytes(&mut headers, header.value.as_deref());
            // Framed again where it was, with the same offset and timestamp.
            self.plain.truncate(last.start);
            self.count -= 1;
            self.records -= 1;
            self.push_framed(
                key.as_deref(),
                value.as_deref(),
                last.timestamp_ms,
                last.header_count + 1,
                headers.len(),
                |plain| plain.extend_from_slice(&headers),
            );
        }
        if self.count > 0 {
            self.close_batch();
        }
        let mut plain = std::mem::take(&mut self.plain);
        plain.clear();
        if plain.capacity() <= 4 * TARGET_BATCH_BYTES {
            PLAIN_POOL.with_borrow_mut(|pool| pool.push(plain));
        }
        PreparedBatches {
            data: Bytes::from(std::mem::take(&mut self.out)),
            records: self.records,
        }
    }

    fn close_batch(&mut self) {
        let out = &mut self.out;
        let start = out.len();
        out.extend_from_slice(&0i64.to_be_bytes()); // baseOffset: set by the partition
        out.extend_from_slice(&0i32.to_be_bytes()); // batchLength, patched below
        out.extend_from_slice(&0i32.to_be_bytes()); // partitionLeaderEpoch
        out.push(MAGIC as u8);
        out.extend_from_slice(&0u32.to_be_bytes()); // crc, patched below
        out.extend_from_slice(&self.compression.code().to_be_bytes());
        out.extend_from_slice(&(self.count as i32 - 1).to_be_bytes()); // lastOffsetDelta
        out.extend_from_slice(&self.base_timestamp.to_be_bytes());
        out.extend_from_slice(&self.max_timestamp.to_be_bytes());
        out.extend_from_slice(&(-1i64).to_be_bytes()); // producerId
        out.extend_from_slice(&(-1i16).to_be_bytes()); // producerEpoch
        out.extend_from_slice(&(-1i32).to_be_bytes()); // baseSequence
        out.extend_from_slice(&(self.count as i32).to_be_bytes());
        put_compressed(&self.plain, self.compression, out);
        seal(out, start);
        self.plain.clear();
        self.count = 0;
        self.last = None;
    }
}

/// Like `put_bytes`; returns where the bytes landed.
fn put_bytes_at(out: &mut Vec<u8>, bytes: Option<&[u8]>) -> Option<(usize, usize)> {
    put_bytes(out, bytes);
    bytes.map(|b| (out.len() - b.len(), out.len()))
}

/// Bytes of a length-prefixed byte string (or of the null marker).
fn bytes_len(bytes: Option<&[u8]>) -> usize {
    bytes.map_or(varlong_len(-1), |b| varlong_len(b.len() as i64) + b.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::tests::record;
    use crate::batch::{decode, BatchHeader, Record, StoredRecord};

    fn prepared(
        records: &[Record],
        compression: Compression,
        stamp: Option<Header>,
    ) -> (usize, Vec<StoredRecord>) {
        let mut builder = BatchBuilder::new(compression, 0);
        for r in records {
            builder.push(
                r.key.as_deref(),
                r.value.as_deref(),
                r.timestamp_ms,
                &r.headers,
            );
        }
        let prepared = builder.finish(stamp);
        assert_eq!(prepared.records, records.len());
        let (mut at, mut batches, mut out) = (0, 0, Vec::new());
        while at < prepared.data.len() {
            let header = BatchHeader::parse(&prepared.data[at..]).unwrap();
            decode(&prepared.data.slice(at..at + header.total_len), &mut out).unwrap();
            assert_eq!(header.base_offset, 0);
            at += header.total_len;
            batches += 1;
        }
        (batches, out)
    }

    #[test]
    fn built_batches_split_like_appends_and_start_at_offset_zero() {
        let big = "x".repeat(300_000);
        let records: Vec<Record> = (0..9)
            .map(|i| record(&i.to_string(), Some(&big), 100 - i))
            .collect();
        for compression in [Compression::None, Compression::Lz4] {
            let (batches, out) = prepared(&records, compression, None);
            // 300 kB records, batches of about 1 MiB: three per batch.
            assert_eq!(batches, 3);
            let offsets: Vec<u64> = out.iter().map(|r| r.offset).collect();
            assert_eq!(offsets, [0, 1, 2, 0, 1, 2, 0, 1, 2]);
            for (stored, original) in out.iter().zip(&records) {
                assert_eq!(stored.timestamp_ms, original.timestamp_ms);
                assert_eq!(stored.value, original.value);
                assert_eq!(stored.headers, original.headers);
            }
        }
    }

    #[test]
    fn the_finishing_header_lands_on_the_last_record_only() {
        let records: Vec<Record> = (0..1_000)
            .map(|i| {
                record(
                    &i.to_string(),
                    (i % 3 != 0).then_some("v"),
                    5 + i64::from(i % 4),
                )
            })
            .collect();
        let stamp = Header {
            key: "sluice.commit".into(),
            value: Some(Bytes::from_static(&[0, 0, 0, 0, 0, 0, 0, 9])),
        };
        for compression in [Compression::None, Compression::Lz4] {
            let (batches, out) = prepared(&records, compression, Some(stamp.clone()));
            assert_eq!(batches, 1);
            assert_eq!(out.len(), 1_000);
            for (i, (stored, original)) in out.iter().zip(&records).enumerate() {
                assert_eq!(stored.offset, i as u64);
                assert_eq!(
                    (&stored.key, &stored.value),
                    (&original.key, &original.value)
                );
                assert_eq!(stored.timestamp_ms, original.timestamp_ms);
                let mut headers = original.headers.clone();
                if i == 999 {
                    headers.push(stamp.clone());
                }
                assert_eq!(stored.headers, headers);
            }
        }
        // Nothing pushed: nothing to stamp, no batch.
        let (batches, out) = prepared(&[], Compression::Lz4, Some(stamp));
        assert_eq!((batches, out.len()), (0, 0));
    }
}
