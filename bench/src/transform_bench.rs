//! transform-bench: events/s of a sink's decoding with a chain of four transforms (filter,
//! mask, columns, set) against decoding alone, on the same 20-column JSON records as the log
//! holds them (what `dev/bench` reports as `transforms`). One thread, batches of 5,000 records
//! as the sink runtime reads them; interleaved runs, the best of each; prints one JSON object.
//!
//! Usage: transform-bench [--events N]

use std::sync::Arc;
use std::time::Instant;

use sluice_core::change::{ChangeDecoder, SourcedChange};
use sluice_core::sink::SinkRecord;
use sluice_core::transform::{Chain, TransformConfig};
use sluice_schema_registry::changes::RecordDecoder;
use sluice_schema_registry::json::SourceBlock;
use sluice_schema_registry::registry::Registry;

#[path = "events.rs"]
mod events;

/// Records per read, as the sink runtime hands them over.
const BATCH: usize = 5_000;

/// The log's JSON records of `count` events, and the registry that knows their schema.
fn records(count: i64) -> (Vec<SinkRecord>, Arc<Registry>) {
    let table = events::table();
    let source = SourceBlock {
        connector: "postgresql",
        name: "shop".into(),
        db: "shop".into(),
    };
    let events = (0..count).map(|i| events::event(&table, i));
    events::json_records(&table, events, source)
}

/// The chain: what a service fed with PII-free rows would configure.
fn chain() -> Chain {
    let salt = std::env::temp_dir().join(format!("transform-bench-salt-{}", std::process::id()));
    std::fs::write(&salt, "a-salt-of-more-than-sixteen-bytes").expect("write the salt");
    let configs: Vec<TransformConfig> = serde_json::from_value(serde_json::json!([
        {"type": "filter", "when": "__op != 'd' and qty >= 0 and status = 'shipped'"},
        {"type": "mask", "columns": ["email"], "salt_file": salt},
        {"type": "columns", "exclude": ["token", "attrs"]},
        {"type": "set", "fields": {"region": "eu", "origin": "${table}"}},
    ]))
    .expect("the chain's config");
    // TRANSFORM_BENCH_ONLY=i: only the i-th transform (to see what each costs).
    let configs: Vec<TransformConfig> = match std::env::var("TRANSFORM_BENCH_ONLY")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        Some(i) => configs.get(i).cloned().into_iter().collect(),
        None => configs,
    };
    let chain = Chain::new(&configs).expect("the chain compiles");
    let _ = std::fs::remove_file(salt);
    chain
}

/// Seconds to decode every record (and run `chain` on the changes); the changes kept.
fn measure(
    records: &[SinkRecord],
    registry: &Arc<Registry>,
    mut chain: Option<&mut Chain>,
) -> (f64, usize) {
    let mut decoder = RecordDecoder::new(Arc::clone(registry));
    let mut kept = 0;
    let started = Instant::now();
    for batch in records.chunks(BATCH) {
        let mut changes = Vec::with_capacity(batch.len());
        for (i, record) in batch.iter().enumerate() {
            if let Some(change) = decoder.decode(record).expect("decodes") {
                changes.push(SourcedChange::new(change, i));
            }
        }
        if let Some(chain) = chain.as_deref_mut() {
            let (out, rejected) = chain.apply(changes, batch).expect("the chain fits");
            assert!(rejected.is_empty());
            changes = out;
        }
        kept += changes.len();
    }
    (started.elapsed().as_secs_f64(), kept)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let count: i64 = args
        .iter()
        .position(|a| a == "--events")
        .and_then(|i| args.get(i + 1))
        .map_or(1_000_000, |n| n.parse().expect("--events N"));
    let (records, registry) = records(count);
    let mut chain = chain();
    // Interleaved: plain, chained, chained, plain; the best of each.
    let p1 = measure(&records, &registry, None);
    let c1 = measure(&records, &registry, Some(&mut chain));
    let c2 = measure(&records, &registry, Some(&mut chain));
    let p2 = measure(&records, &registry, None);
    let plain = p1.0.min(p2.0);
    let chained = c1.0.min(c2.0);
    assert_eq!(p1.1, records.len());
    assert_eq!(
        c1.1,
        records.len(),
        "every event is shipped, has qty >= 0 and is no delete"
    );
    let n = records.len() as f64;
    println!(
        "{}",
        serde_json::json!({
            "events": records.len(),
            "plain": {"seconds": plain, "events_per_s": n / plain},
            "chained": {"seconds": chained, "events_per_s": n / chained},
        })
    );
}
