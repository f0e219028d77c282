//! latency-bench: source commit → visible in the target, for a replication pipeline that is
//! already running (`dev/bench` starts `sluice run`). A writer commits single-row transactions
//! into `load` at a steady rate on four connections; every 20th transaction is a marker row
//! (`markers.seq`). A watcher polls the target for the highest marker every millisecond; a
//! marker's latency is the time from its commit being acknowledged to the watcher seeing it.
//! Prints p50/p99 in milliseconds as JSON.
//!
//! With `--index NAME`, the target is an OpenSearch URL and a marker is seen when a search of
//! index NAME finds it (so the index's refresh counts, as it does for a user searching); the
//! watcher then polls every 10 ms.
//!
//! Usage: latency-bench --source URL --target URL [--index NAME] [--rate 2000] [--seconds 20]

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;
use tokio_postgres::NoTls;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"));
    sluice_core::task::spawn_in_span(connection);
    client
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let source = arg(&args, "--source").expect("--source URL");
    let target = arg(&args, "--target").expect("--target URL");
    let rate: u64 = arg(&args, "--rate").map_or(2000, |r| r.parse().expect("--rate N"));
    let seconds: u64 = arg(&args, "--seconds").map_or(20, |s| s.parse().expect("--seconds N"));
    const WRITERS: u64 = 4;
    const MARKER_EVERY: u64 = 20;

    // Wait for the pipeline: the target has the markers table once the sink applied anything.
    let mut watcher = match arg(&args, "--index") {
        Some(index) => Watcher::Search {
            client: {
                // ring: see connectors/src/tls.rs.
                #[allow(deprecated)]
                let _ = rustls::crypto::ring::default_provider().install_default();
                reqwest::Client::new()
            },
            url: format!("{}/{index}/_search", target.trim_end_matches('/')),
        },
        None => {
            let client = connect(&target).await;
            Watcher::Postgres { client, poll: None }
        }
    };
    let probe = connect(&source).await;
    probe
        .execute("INSERT INTO markers VALUES (0, 0)", &[])
        .await
        .expect("first marker");
    let ready = Instant::now();
    loop {
        if watcher.seen_after(-1).await.contains(&0) {
            break;
        }
        assert!(
            ready.elapsed() < Duration::from_secs(60),
            "the pipeline never delivered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Commit acknowledgement time per marker seq.
    let sent: Arc<Mutex<Vec<Option<Instant>>>> = Arc::new(Mutex::new(Vec::new()));
    let total = rate * seconds;
    let start = Instant::now();
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (source, sent) = (source.clone(), Arc::clone(&sent));
        writers.push(sluice_core::task::spawn_in_span(async move {
            let client = connect(&source).await;
            client
                .batch_execute("SET synchronous_commit = off")
                .await
                .unwrap();
            let insert = client
                .prepare("INSERT INTO load VALUES ($1, 'payload payload payload')")
                .await
                .unwrap();
            let marker = client
                .prepare("INSERT INTO markers VALUES ($1, 0)")
                .await
                .unwrap();
            let mut n = w;
            while n < total {
                // Pace: transaction n is due at n / rate seconds.
                let due = start + Duration::from_micros(n * 1_000_000 / rate);
                tokio::time::sleep_until(due.into()).await;
                if n % MARKER_EVERY == 0 {
                    let seq = (n / MARKER_EVERY + 1) as i64;
                    client.execute(&marker, &[&seq]).await.unwrap();
                    let at = Instant::now();
                    let mut sent = sent.lock().await;
                    if sent.len() <= seq as usize {
                        sent.resize(seq as usize + 1, None);
                    }
                    sent[seq as usize] = Some(at);
                } else {
                    client.execute(&insert, &[&(n as i64)]).await.unwrap();
                }
                n += WRITERS;
            }
        }));
    }
    let markers = total / MARKER_EVERY;
    let mut seen_at: Vec<Option<Instant>> = vec![None; markers as usize + 1];
    let mut seen_up_to = 0i64;
    watcher.prepare().await;
    let deadline = Instant::now() + Duration::from_secs(seconds + 60);
    while (seen_at.iter().skip(1).filter(|s| s.is_some()).count() as u64) < markers {
        assert!(Instant::now() < deadline, "markers did not all arrive");
        let seqs = watcher.seen_after(seen_up_to).await;
        let now = Instant::now();
        for seq in seqs {
            if let Some(slot) = seen_at.get_mut(seq as usize) {
                slot.get_or_insert(now);
            }
            seen_up_to = seen_up_to.max(seq);
        }
        tokio::time::sleep(watcher.interval()).await;
    }
    let elapsed = start.elapsed();
    for writer in writers {
        writer.await.unwrap();
    }
    let sent = sent.lock().await;
    let mut latencies: Vec<f64> = (1..=markers as usize)
        .filter_map(|seq| {
            let (sent, seen) = (sent.get(seq).copied().flatten()?, seen_at[seq]?);
            Some(seen.saturating_duration_since(sent).as_secs_f64() * 1000.0)
        })
        .collect();
    latencies.sort_by(f64::total_cmp);
    let pick = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    println!(
        "{}",
        serde_json::json!({
            "markers": latencies.len(),
            "p50_ms": pick(0.5),
            "p99_ms": pick(0.99),
            "max_ms": latencies.last().copied().unwrap_or(0.0),
            "achieved_tps": total as f64 / elapsed.as_secs_f64(),
        })
    );
}

/// Where markers are looked for.
enum Watcher {
    /// A replica database (the markers table); `poll` once the table exists.
    Postgres {
        client: tokio_postgres::Client,
        poll: Option<tokio_postgres::Statement>,
    },
    /// An OpenSearch index, by search (what a user sees after a refresh).
    Search {
        client: reqwest::Client,
        url: String,
    },
}

impl Watcher {
    /// The marker seqs visible now beyond `after` (errors, such as a table or index not there
    /// yet, are none).
    async fn seen_after(&self, after: i64) -> Vec<i64> {
        match self {
            Watcher::Postgres { client, poll } => {
                let rows = match poll {
                    Some(poll) => client.query(poll, &[&after]).await,
                    None => {
                        client
                            .query("SELECT seq FROM markers WHERE seq > $1", &[&after])
                            .await
                    }
                };
                rows.map(|rows| rows.iter().map(|r| r.get(0)).collect())
                    .unwrap_or_default()
            }
            Watcher::Search { client, url } => {
                let body = serde_json::json!({
                    "query": { "range": { "seq": { "gt": after } } },
                    "_source": ["seq"],
                    "size": 10000,
                });
                let Ok(response) = client
                    .post(url)
                    .header("content-type", "application/json")
                    .body(body.to_string())
                    .send()
                    .await
                else {
                    return Vec::new();
                };
                let Ok(answer) = response.json::<serde_json::Value>().await else {
                    return Vec::new();
                };
                answer["hits"]["hits"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|hit| hit["_source"]["seq"].as_i64())
                    .collect()
            }
        }
    }

    /// Prepares the Postgres poll once the markers table exists (the pipeline made it).
    async fn prepare(&mut self) {
        if let Watcher::Postgres { client, poll } = self {
            if poll.is_none() {
                *poll = client
                    .prepare("SELECT seq FROM markers WHERE seq > $1")
                    .await
                    .ok();
            }
        }
    }

    fn interval(&self) -> Duration {
        match self {
            Watcher::Postgres { .. } => Duration::from_millis(1),
            Watcher::Search { .. } => Duration::from_millis(10),
        }
    }
}
