//! encode-bench: events/s and bytes per event of the Avro and JSON encoders on the same 20-column
//! rows (what `dev/bench` reports as `encode_avro` against `encode_json`). One thread, after a
//! warm-up that registers the Avro schemas; prints one JSON object.
//!
//! Usage: encode-bench [--events N]

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use sluice_core::batch::{Header, StoredRecord};
use sluice_core::change::SCHEMA_HEADER;
use sluice_core::encode::{EncodedRecords, EventEncoder};
use sluice_core::event::{
    ChangeEvent, Column, DataType, Op, SnapshotMarker, TableId, TableSchema, TxnInfo,
};
use sluice_core::position::{Lsn, Position};
use sluice_core::sink::SinkRecord;
use sluice_core::value::{Date, Decimal, Timestamp, Value};
use sluice_schema_registry::avro::{AvroEncoder, DecimalHandling};
use sluice_schema_registry::json::debezium::{DebeziumForms, DebeziumJson};
use sluice_schema_registry::json::{JsonEnvelopeEncoder, SourceBlock};
use sluice_schema_registry::registry::store::MemoryStore;
use sluice_schema_registry::registry::Registry;

fn table() -> Arc<TableSchema> {
    let col = |name: &str, data_type: DataType, type_name: &str| Column {
        name: name.into(),
        type_name: type_name.into(),
        data_type,
        key: name == "id",
        nullable: name != "id",
    };
    let dec = |p, s| DataType::Decimal {
        precision: Some(p),
        scale: Some(s),
    };
    Arc::new(TableSchema {
        table: TableId {
            namespace: "public".into(),
            name: "orders".into(),
        },
        columns: vec![
            col("id", DataType::Int64, "bigint"),
            col("customer_id", DataType::Int32, "integer"),
            col("line", DataType::Int16, "smallint"),
            col("name", DataType::Text, "text"),
            col("email", DataType::Text, "text"),
            col("price", dec(12, 2), "numeric(12,2)"),
            col("weight", dec(8, 3), "numeric(8,3)"),
            col("paid", DataType::Bool, "boolean"),
            col("ship_date", DataType::Date, "date"),
            col("created_at", DataType::TimestampTz, "timestamptz"),
            col("updated_at", DataType::Timestamp, "timestamp"),
            col("order_uid", DataType::Uuid, "uuid"),
            col("score", DataType::Float64, "double precision"),
            col("ratio", DataType::Float32, "real"),
            col("attrs", DataType::Json, "jsonb"),
            col("status", DataType::Enum, "order_status"),
            col("city", DataType::Text, "character varying(40)"),
            col("counter", DataType::Int64, "bigint"),
            col("qty", DataType::Int32, "integer"),
            col("token", DataType::Bytes, "bytea"),
        ],
        version: 1,
    })
}

fn event(table: &Arc<TableSchema>, i: i64) -> ChangeEvent {
    let row = vec![
        Value::Int64(i),
        Value::Int32((i % 100_000) as i32),
        Value::Int16((i % 10) as i16),
        Value::Text(format!("Customer Name {i}").into()),
        Value::Text(format!("customer{i}@example.com").into()),
        Value::Decimal(Decimal::Finite(
            format!("{}.{:02}", i % 100_000, i % 100).into(),
        )),
        Value::Decimal(Decimal::Finite(
            format!("{}.{:03}", i % 1000, i % 1000).into(),
        )),
        Value::Bool(i % 2 == 0),
        Value::Date(Date::Days(19_000 + (i % 1000) as i32)),
        Value::TimestampTz(Timestamp::Micros(1_700_000_000_000_000 + i * 1_000)),
        Value::Timestamp(Timestamp::Micros(1_700_000_000_000_000 + i * 2_000)),
        Value::Uuid([(i % 251) as u8; 16]),
        Value::Float64(i as f64 * 0.37),
        Value::Float32((i % 1000) as f32 * 0.5),
        Value::Json(format!(r#"{{"gift": {}, "tags": ["a", "b"]}}"#, i % 2 == 0)),
        Value::Enum("shipped".into()),
        Value::Text("Amsterdam".into()),
        Value::Int64(i * 7),
        Value::Int32((i % 50) as i32),
        Value::Bytes(Bytes::from(vec![(i % 256) as u8; 16])),
    ];
    ChangeEvent {
        op: Op::Create,
        table: Some(Arc::clone(table)),
        before: None,
        before_is_key_only: false,
        after: Some(row),
        snapshot: SnapshotMarker::No,
        commit_ts_us: 1_700_000_000_000_000 + i,
        position: Position::PgLsn(Lsn(1_000_000 + i as u64 * 100)),
        xid: Some(1000 + i as u64 / 10),
        txn: Some(TxnInfo {
            id: format!("{}:{}", 1000 + i / 10, 1_000_000 + i * 100).into(),
            total_order: (i % 10 + 1) as u64,
            data_collection_order: 0,
        }),
        message: None,
    }
}

/// Events per source batch (the sources' default `max_batch_events`).
const BATCH_EVENTS: usize = 5_000;

/// (seconds, bytes of keys and values) to encode every event.
fn measure(encoder: &mut impl EventEncoder, events: &[ChangeEvent]) -> (f64, usize) {
    encoder
        .encode(&events[0], &mut EncodedRecords::default())
        .expect("warm-up encodes");
    let started = Instant::now();
    let mut bytes = 0;
    // Like the runtime: one buffer per batch of events.
    for batch in events.chunks(BATCH_EVENTS) {
        let mut out = EncodedRecords::with_capacity(batch.len() * 256);
        for event in batch {
            out.clear_records();
            encoder.encode(event, &mut out).expect("encodes");
            for record in out.records() {
                bytes += record.key.map_or(0, |span| span.end - span.start);
                bytes += record.value.map_or(0, |span| span.end - span.start);
            }
        }
    }
    (started.elapsed().as_secs_f64(), bytes)
}

fn source_block() -> SourceBlock {
    SourceBlock {
        connector: "postgresql",
        name: "shop".into(),
        db: "shop".into(),
    }
}

/// Seconds for the Kafka sink's rewrite of the events' JSON records into Debezium's forms
/// (`format = "debezium"`; the best of two passes).
fn measure_debezium(table: &Arc<TableSchema>, events: &[ChangeEvent], source: SourceBlock) -> f64 {
    let registry = Arc::new(Registry::open(MemoryStore::default()).expect("registry"));
    let mut encoder = JsonEnvelopeEncoder::new(source, false).registering(Arc::clone(&registry));
    encoder
        .prepare_table(table, false)
        .expect("the table registers");
    let mut records = Vec::with_capacity(events.len());
    let mut out = EncodedRecords::default();
    for (offset, event) in events.iter().enumerate() {
        out.clear_records();
        encoder.encode(event, &mut out).expect("encodes");
        for record in out.records() {
            let bytes = |span: Option<sluice_core::encode::Span>| {
                span.map(|s| Bytes::copy_from_slice(out.bytes(s)))
            };
            records.push(SinkRecord {
                topic: "shop.public.orders".into(),
                partition: 0,
                record: StoredRecord {
                    offset: offset as u64,
                    timestamp_ms: 0,
                    key: bytes(record.key),
                    value: bytes(record.value),
                    headers: record
                        .value_schema
                        .map(|id| Header {
                            key: SCHEMA_HEADER.into(),
                            value: Some(id.to_string().into()),
                        })
                        .into_iter()
                        .collect(),
                },
            });
        }
    }
    let mut transcoder = DebeziumJson::new(registry, DebeziumForms::default());
    let mut buf = Vec::new();
    let mut best = f64::MAX;
    for _ in 0..2 {
        let started = Instant::now();
        for record in &records {
            transcoder.transcode(record, &mut buf).expect("rewrites");
        }
        best = best.min(started.elapsed().as_secs_f64());
    }
    best
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let events_count: i64 = args
        .iter()
        .position(|a| a == "--events")
        .and_then(|i| args.get(i + 1))
        .map_or(1_000_000, |n| n.parse().expect("--events N"));
    let table = table();
    let events: Vec<ChangeEvent> = (0..events_count).map(|i| event(&table, i)).collect();
    let source = source_block();
    let mut json = JsonEnvelopeEncoder::new(source.clone(), false);
    let registry = Arc::new(Registry::open(MemoryStore::default()).expect("registry"));
    let mut avro = AvroEncoder::new(registry, source, false, DecimalHandling::Precise);
    // Interleave: json, avro, avro, json; best of each.
    let j1 = measure(&mut json, &events);
    let a1 = measure(&mut avro, &events);
    let a2 = measure(&mut avro, &events);
    let j2 = measure(&mut json, &events);
    let best = |a: (f64, usize), b: (f64, usize)| if a.0 <= b.0 { a } else { b };
    let (json_s, json_bytes) = best(j1, j2);
    let (avro_s, avro_bytes) = best(a1, a2);
    let n = events.len() as f64;
    let debezium_s = measure_debezium(&table, &events, source_block());
    println!(
        "{}",
        serde_json::json!({
            "events": events.len(),
            "json": {"seconds": json_s, "events_per_s": n / json_s, "bytes_per_event": json_bytes as f64 / n},
            "avro": {"seconds": avro_s, "events_per_s": n / avro_s, "bytes_per_event": avro_bytes as f64 / n},
            "debezium_forms": {"seconds": debezium_s, "events_per_s": n / debezium_s},
        })
    );
}
