//! encode-bench: events/s and bytes per event of the Avro and JSON encoders on the same 20-column
//! rows (what `dev/bench` reports as `encode_avro` against `encode_json`). One thread, after a
//! warm-up that registers the Avro schemas; prints one JSON object.
//!
//! Usage: encode-bench [--events N]

use std::sync::Arc;
use std::time::Instant;

use sluice_core::encode::{EncodedRecords, EventEncoder};
use sluice_core::event::{ChangeEvent, TableSchema};
use sluice_schema_registry::avro::{AvroEncoder, DecimalHandling};
use sluice_schema_registry::json::debezium::{DebeziumForms, DebeziumJson};
use sluice_schema_registry::json::{JsonEnvelopeEncoder, SourceBlock};
use sluice_schema_registry::registry::store::MemoryStore;
use sluice_schema_registry::registry::Registry;

#[path = "events.rs"]
mod events;
use events::{event, table};

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
    let (records, registry) = events::json_records(table, events.iter().cloned(), source);
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
