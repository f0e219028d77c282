use super::*;

/// A record with a key, the given value and one header.
pub(super) fn record(key: &str, value: Option<&str>, ts: i64) -> Record {
    Record {
        key: Some(Bytes::copy_from_slice(key.as_bytes())),
        value: value.map(|v| Bytes::copy_from_slice(v.as_bytes())),
        timestamp_ms: ts,
        headers: vec![Header {
            key: "h".into(),
            value: Some(Bytes::from_static(b"v")),
        }],
    }
}

/// `out` holds `records` at offsets from `base` on.
fn assert_read_back(out: &[StoredRecord], records: &[Record], base: u64) {
    assert_eq!(out.len(), records.len());
    for (i, (stored, original)) in out.iter().zip(records).enumerate() {
        assert_eq!(stored.offset, base + i as u64);
        assert_eq!(stored.key, original.key);
        assert_eq!(stored.value, original.value);
        assert_eq!(stored.timestamp_ms, original.timestamp_ms);
        assert_eq!(stored.headers, original.headers);
    }
}

#[test]
fn round_trips_records_with_tombstones_and_headers() {
    let records = vec![
        record("a", Some("1"), 1000),
        record("b", None, 999),
        record("c", Some(""), 5000),
    ];
    let mut buf = Vec::new();
    encode(42, &records, &mut buf);
    let bytes = Bytes::from(buf);
    let mut out = Vec::new();
    let header = decode(&bytes, &mut out).unwrap();
    assert_eq!(header.base_offset, 42);
    assert_eq!(header.next_offset(), 45);
    assert_eq!(header.max_timestamp_ms, 5000);
    assert_eq!(out.len(), 3);
    assert_read_back(&out, &records, 42);
}

#[test]
fn lz4_batches_round_trip_and_shrink_repetitive_records() {
    let envelope = r#"{"before":null,"source":{"version":"sluice","connector":"postgresql"}}"#;
    let records: Vec<Record> = (0..2_000)
        .map(|i| {
            let value = format!("{{\"after\":{{\"id\":{i}}},{envelope}");
            let mut r = record(&i.to_string(), Some(&value), 1_000 + i64::from(i % 7));
            if i % 5 == 0 {
                r.value = None;
            }
            r
        })
        .collect();
    let (mut plain, mut packed) = (Vec::new(), Vec::new());
    encode(7, &records, &mut plain);
    encode_compressed(7, &records, Compression::Lz4, &mut packed);
    assert!(
        packed.len() * 5 < plain.len(),
        "{} vs {}",
        packed.len(),
        plain.len()
    );
    let mut out = Vec::new();
    let header = decode(&Bytes::from(packed), &mut out).unwrap();
    assert_eq!((header.base_offset, header.record_count), (7, 2_000));
    assert_eq!(out.len(), records.len());
    assert_read_back(&out, &records, 7);
}

#[test]
fn a_damaged_lz4_blob_is_a_clear_error_even_under_a_valid_crc() {
    let records = [record("key", Some("value value value value"), 7)];
    let mut buf = Vec::new();
    encode_compressed(0, &records, Compression::Lz4, &mut buf);
    // Damage the first block's length (after the frame's 7-byte header), then fix the CRC,
    // as a writer bug (not the disk, which the CRC catches) would.
    buf[BATCH_HEADER_LEN + 7 + 2] ^= 0x7f;
    let crc = crc32c::crc32c(&buf[CRC_START..]);
    buf[17..21].copy_from_slice(&crc.to_be_bytes());
    let err = decode(&Bytes::from(buf), &mut Vec::new()).unwrap_err();
    assert!(
        err.to_string().contains("LZ4") || err.to_string().contains("record"),
        "{err}"
    );
}

#[test]
fn other_compression_types_are_named_in_the_error() {
    let mut buf = Vec::new();
    encode(0, &[record("k", Some("v"), 1)], &mut buf);
    buf[22] = 4; // zstd
    let crc = crc32c::crc32c(&buf[CRC_START..]);
    buf[17..21].copy_from_slice(&crc.to_be_bytes());
    let err = decode(&Bytes::from(buf), &mut Vec::new()).unwrap_err();
    assert!(err.to_string().contains("compression type 4"), "{err}");
}

#[test]
fn packed_records_encode_exactly_like_owned_ones() {
    let owned = vec![
        record("a", Some("1"), 1000),
        record("b", None, 1001),
        record("c", Some(""), 999),
    ];
    // Keys and values back to back, in a buffer shared with another partition's records.
    let mut data = b"other".to_vec();
    let mut entries = Vec::new();
    for r in &owned {
        let mut span = |bytes: &Option<Bytes>| {
            bytes.as_ref().map(|b| {
                let start = data.len();
                data.extend_from_slice(b);
                Span {
                    start,
                    end: data.len(),
                }
            })
        };
        let (key, value) = (span(&r.key), span(&r.value));
        entries.push(PackedEntry {
            key,
            value,
            timestamp_ms: r.timestamp_ms,
            headers: r.headers.clone(),
        });
    }
    let packed = PackedRecords {
        data: Bytes::from(data),
        entries,
    };
    let (mut from_owned, mut from_packed) = (Vec::new(), Vec::new());
    encode(42, &owned, &mut from_owned);
    encode(42, &packed.views(), &mut from_packed);
    assert_eq!(from_owned, from_packed);
    let mut records = Records::Packed(packed);
    assert!(records.push_header_to_last(Header {
        key: "last".into(),
        value: None,
    }));
    let Records::Packed(packed) = &records else {
        unreachable!()
    };
    assert_eq!(packed.entries[2].headers.len(), 2);
    assert!(!Records::Owned(Vec::new()).push_header_to_last(Header {
        key: "none".into(),
        value: None,
    }));
}

#[test]
fn detects_any_flipped_byte_after_the_crc() {
    let mut buf = Vec::new();
    encode(0, &[record("key", Some("value"), 7)], &mut buf);
    for i in CRC_START..buf.len() {
        let mut damaged = buf.clone();
        damaged[i] ^= 0x40;
        assert!(verify(&damaged).is_err(), "flip at byte {i} went unnoticed");
    }
}

#[test]
fn rejects_truncated_batches_without_panicking() {
    let mut buf = Vec::new();
    encode(0, &[record("key", Some("value"), 7)], &mut buf);
    for len in 0..buf.len() {
        let bytes = Bytes::copy_from_slice(&buf[..len]);
        assert!(decode(&bytes, &mut Vec::new()).is_err());
    }
}

#[test]
fn random_and_mutated_bytes_never_panic_the_decoder() {
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut valid = Vec::new();
    encode(
        7,
        &[record("key", Some("value"), 1), record("k2", None, 2)],
        &mut valid,
    );
    for _ in 0..20_000 {
        let mut bytes = if next() % 2 == 0 {
            let mut mutated = valid.clone();
            for _ in 0..1 + next() % 4 {
                let at = (next() as usize) % mutated.len();
                mutated[at] = next() as u8;
            }
            mutated
        } else {
            (0..next() % 200).map(|_| next() as u8).collect()
        };
        // Half the time fix the CRC so that the record parser itself is exercised.
        if bytes.len() >= BATCH_HEADER_LEN && next() % 2 == 0 {
            let crc = crc32c::crc32c(&bytes[CRC_START..]);
            bytes[17..21].copy_from_slice(&crc.to_be_bytes());
        }
        let _ = decode(&Bytes::from(bytes), &mut Vec::new());
    }
}

#[test]
fn computed_record_lengths_match_what_is_written() {
    for value in [0i64, 1, -1, 63, 64, -65, 8191, 8192, i64::MAX, i64::MIN] {
        let mut out = Vec::new();
        put_varlong(&mut out, value);
        assert_eq!(varlong_len(value), out.len(), "{value}");
    }
    let big = Record {
        value: Some(Bytes::from(vec![7u8; 70_000])),
        ..record("k", None, 5)
    };
    let mut buf = Vec::new();
    encode(
        0,
        &[big.clone(), record("a", Some("b"), 1_000_000)],
        &mut buf,
    );
    let mut out = Vec::new();
    decode(&Bytes::from(buf), &mut out).unwrap();
    assert_eq!(out[0].value, big.value);
    assert_eq!(out[1].timestamp_ms, 1_000_000);
}

#[test]
fn zigzag_varints_match_kafka_for_edge_values() {
    for value in [
        0i64,
        -1,
        1,
        63,
        -64,
        64,
        i32::MAX as i64,
        i64::MIN,
        i64::MAX,
    ] {
        let mut out = Vec::new();
        put_varlong(&mut out, value);
        let bytes = Bytes::from(out);
        let mut cursor = Cursor {
            bytes: &bytes,
            pos: 0,
        };
        assert_eq!(cursor.varlong().unwrap(), value);
    }
    let mut out = Vec::new();
    put_varlong(&mut out, -1);
    assert_eq!(out, vec![1]);
}
