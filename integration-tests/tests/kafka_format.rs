//! The embedded log's segments are Kafka's record-batch format: Kafka's own Java client
//! (kafka-clients, from the jars `dev/services up` puts in target/jars) reads them, checking every
//! batch's CRC and decompressing LZ4 batches with its own reader.

use std::path::{Path, PathBuf};
use std::process::Command;

use bytes::Bytes;
use sluice_core::batch::{BatchBuilder, Compression, Header, PartitionBatch, Record, Records};
use sluice_log::{Log, LogOptions};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The line ReadSegments.java prints for a record.
fn line(
    compression: &str,
    offset: u64,
    ts: i64,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: &[Header],
) -> String {
    let mut line = format!(
        "{compression} {offset} {ts} {} {}",
        key.map_or("-".into(), hex),
        value.map_or("-".into(), hex)
    );
    for h in headers {
        line.push_str(&format!(
            " {}={}",
            h.key,
            h.value.as_deref().map_or("-".into(), hex)
        ));
    }
    line
}

/// Every record of the segment files under `dir`, as Kafka's client reads them.
fn kafka_read(dir: &Path) -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let jars = root.join("target/jars");
    assert!(
        jars.join("kafka-clients-4.4.0.jar").exists(),
        "Kafka's client jars are missing from {}: run dev/services up",
        jars.display()
    );
    let mut segments: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    segments.sort();
    let output = Command::new("java")
        .arg("-cp")
        .arg(format!("{}/*", jars.display()))
        .arg(root.join("integration-tests/java/ReadSegments.java"))
        .args(&segments)
        .output()
        .expect("java runs (dev/services up installs it)");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "Kafka's client failed to read the segments:\n{stderr}"
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn kafka_reads_the_embedded_logs_segments_compressed_and_not() {
    for compression in [Compression::Lz4, Compression::None] {
        let name = if compression == Compression::Lz4 {
            "lz4"
        } else {
            "none"
        };
        let dir = tempfile::tempdir().unwrap();
        let options = LogOptions {
            compression,
            ..LogOptions::default()
        };
        let log = Log::open(dir.path(), options).unwrap();
        log.create_topic("t", 1).unwrap();
        let mut expected = Vec::new();
        let mut offset = 0u64;

        // Records the log batches itself: null keys and values, headers with and without a
        // value, timestamps out of order.
        let records: Vec<Record> = (0..3_000i64)
            .map(|i| Record {
                key: (i % 7 != 0).then(|| Bytes::from(format!("key-{i}"))),
                value: (i % 11 != 0)
                    .then(|| Bytes::from(format!("{{\"after\":{{\"id\":{i}}},\"op\":\"c\"}}"))),
                timestamp_ms: 1_700_000_000_000 + (i * 37) % 1_000,
                headers: match i % 5 {
                    0 => vec![Header {
                        key: "h".into(),
                        value: None,
                    }],
                    1 => vec![Header {
                        key: "trace".into(),
                        value: Some(Bytes::from(vec![0, 1, 255])),
                    }],
                    _ => Vec::new(),
                },
            })
            .collect();
        for r in &records {
            expected.push(line(
                name,
                offset,
                r.timestamp_ms,
                r.key.as_deref(),
                r.value.as_deref(),
                &r.headers,
            ));
            offset += 1;
        }
        let owned = PartitionBatch {
            topic: "t".into(),
            partition: 0,
            records: records.into(),
        };
        log.append_txn("w", &[owned], "{}").unwrap();

        // Batches a writer prepared: over 1 MiB, so several batches, the last record stamped.
        let mut builder = BatchBuilder::new(compression, 0);
        let stamp = Header {
            key: "sluice.commit".into(),
            value: Some(Bytes::from_static(&[0, 0, 0, 0, 0, 0, 0, 2])),
        };
        let body = "x".repeat(500);
        for i in 0..2_500i64 {
            let (key, value) = (format!("k{i}"), format!("{i} {body}"));
            let ts = 1_700_000_005_000 - i % 3;
            builder.push(Some(key.as_bytes()), Some(value.as_bytes()), ts, &[]);
            let headers = if i == 2_499 {
                vec![stamp.clone()]
            } else {
                Vec::new()
            };
            expected.push(line(
                name,
                offset,
                ts,
                Some(key.as_bytes()),
                Some(value.as_bytes()),
                &headers,
            ));
            offset += 1;
        }
        let prepared = PartitionBatch {
            topic: "t".into(),
            partition: 0,
            records: Records::Prepared(builder.finish(Some(stamp))),
        };
        log.append_txn("w", &[prepared], "{}").unwrap();
        drop(log);

        let read = kafka_read(&dir.path().join("topics/t/0"));
        assert_eq!(read.len(), expected.len(), "{name}");
        for (ours, kafka) in expected.iter().zip(&read) {
            assert_eq!(kafka, ours, "{name}");
        }
    }
}
