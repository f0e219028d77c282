//! Large transactions the server streams while they run (pgoutput protocol 2): committed ones
//! arrive whole and once, aborted ones and rolled-back savepoints never, and a crash while one
//! is on its way delivers it once.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::Value as Json;
use sluice_integration_tests::{events, source_config, wait_for, Sluice, TestDb};

const TOPIC: &str = "src.public.t";

/// A database whose walsender streams a transaction past 64 kB of changes (the least Postgres
/// allows for `logical_decoding_work_mem`), with table `t`, and sluice streaming from it.
async fn streaming() -> (TestDb, Sluice) {
    let db = TestDb::create();
    db.exec(&format!(
        "ALTER DATABASE {} SET logical_decoding_work_mem = '64kB'",
        db.name
    ));
    db.exec("CREATE TABLE t (id int PRIMARY KEY, payload text)");
    let mut sluice = Sluice::new(&source_config(&db, "max_batch_events = 1000"));
    sluice.start();
    db.wait_for_streaming().await;
    (db, sluice)
}

/// Created ids and how often each arrived.
fn created(sluice: &Sluice) -> BTreeMap<i64, usize> {
    let mut seen = BTreeMap::new();
    for event in events(&sluice.records(TOPIC)) {
        if event["op"] == "c" {
            *seen
                .entry(event["after"]["id"].as_i64().unwrap())
                .or_default() += 1;
        }
    }
    seen
}

fn spool_files(sluice: &Sluice) -> usize {
    std::fs::read_dir(sluice.log_dir().join("spool").join("src"))
        .map(|dir| dir.flatten().count())
        .unwrap_or(0)
}

/// The slot's counters: (transactions streamed, transactions spilled to the server's disk).
fn slot_stats(db: &TestDb) -> (i64, i64) {
    let row = db.exec(&format!(
        "SELECT stream_txns, spill_txns FROM pg_stat_replication_slots WHERE slot_name = '{}'",
        db.name
    ));
    let (streamed, spilled) = row.split_once('|').unwrap_or(("0", "0"));
    (streamed.parse().unwrap(), spilled.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_transactions_arrive_whole_and_once_and_aborted_work_never() {
    let (db, sluice) = streaming().await;
    let a = db.client().await;
    let b = db.client().await;
    // A streams in blocks while B's small transactions commit between them.
    a.batch_execute(
        "BEGIN; INSERT INTO t SELECT i, repeat('a', 100) FROM generate_series(1, 20000) i",
    )
    .await
    .unwrap();
    b.batch_execute("INSERT INTO t VALUES (100001, 'b1')")
        .await
        .unwrap();
    // C streams too, then rolls back.
    b.batch_execute(
        "BEGIN; INSERT INTO t SELECT i, repeat('c', 100) FROM generate_series(200001, 220000) i; ROLLBACK",
    )
    .await
    .unwrap();
    // A goes on: a savepoint whose rows roll back, one released, rows after them.
    a.batch_execute(
        "SAVEPOINT s1; INSERT INTO t SELECT i, 'rolled back' FROM generate_series(300001, 320000) i; \
         ROLLBACK TO SAVEPOINT s1; \
         SAVEPOINT s2; INSERT INTO t SELECT i, 'kept' FROM generate_series(20001, 25000) i; RELEASE s2; \
         INSERT INTO t SELECT i, 'after' FROM generate_series(25001, 30000) i; COMMIT",
    )
    .await
    .unwrap();
    b.batch_execute("INSERT INTO t VALUES (100002, 'b2')")
        .await
        .unwrap();

    wait_for(Duration::from_secs(60), "every committed row", || {
        created(&sluice).len() >= 30_002
    })
    .await;
    // A little longer for anything that should not be there.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let seen = created(&sluice);
    let expected: BTreeSet<i64> = (1..=30_000).chain([100_001, 100_002]).collect();
    let got: BTreeSet<i64> = seen.keys().copied().collect();
    assert_eq!(
        got.difference(&expected).take(5).collect::<Vec<_>>(),
        Vec::<&i64>::new(),
        "rows of aborted work"
    );
    assert_eq!(got, expected);
    assert!(seen.values().all(|n| *n == 1), "a row arrived twice");

    // A is one transaction in the log: one id, orders 1..=30000.
    let all = events(&sluice.records(TOPIC));
    let of_a: Vec<&Json> = all
        .iter()
        .filter(|e| e["after"]["id"].as_i64().is_some_and(|id| id <= 30_000))
        .collect();
    let ids: BTreeSet<String> = of_a
        .iter()
        .map(|e| e["transaction"]["id"].to_string())
        .collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    let orders: BTreeSet<i64> = of_a
        .iter()
        .map(|e| e["transaction"]["total_order"].as_i64().unwrap())
        .collect();
    assert_eq!(orders, (1..=30_000).collect());
    let payload_of = |id: i64| {
        all.iter()
            .find(|e| e["after"]["id"] == id)
            .map(|e| e["after"]["payload"].clone())
    };
    assert_eq!(payload_of(20_001), Some(Json::from("kept")));
    assert_eq!(payload_of(25_001), Some(Json::from("after")));

    // The server streamed them rather than spilling them to its disk.
    wait_for(Duration::from_secs(15), "the slot's statistics", || {
        slot_stats(&db).0 >= 2
    })
    .await;
    assert_eq!(slot_stats(&db).1, 0, "transactions spilled");
    assert_eq!(spool_files(&sluice), 0, "spool files left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_transaction_that_alters_its_table_keeps_each_row_with_its_own_columns() {
    let (db, sluice) = streaming().await;
    let a = db.client().await;
    a.batch_execute(
        "BEGIN; INSERT INTO t SELECT i, repeat('a', 100) FROM generate_series(1, 10000) i; \
         ALTER TABLE t ADD COLUMN extra int; \
         INSERT INTO t SELECT i, 'b', i * 2 FROM generate_series(10001, 20000) i; COMMIT",
    )
    .await
    .unwrap();
    // A later transaction sees the table as it is now.
    a.batch_execute("INSERT INTO t VALUES (20001, 'c', 7)")
        .await
        .unwrap();
    wait_for(Duration::from_secs(60), "every row", || {
        created(&sluice).len() >= 20_001
    })
    .await;
    let all = events(&sluice.records(TOPIC));
    for event in &all {
        let after = &event["after"];
        let id = after["id"].as_i64().unwrap();
        let expected = match id {
            ..=10_000 => None,
            10_001..=20_000 => Some(Json::from(id * 2)),
            _ => Some(Json::from(7)),
        };
        assert_eq!(after.get("extra").cloned(), expected, "row {id}: {after}");
    }
    assert!(created(&sluice).values().all(|n| *n == 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_while_a_streamed_transaction_is_on_its_way_delivers_it_once() {
    let (db, mut sluice) = streaming().await;
    let a = db.client().await;
    a.batch_execute(
        "BEGIN; INSERT INTO t SELECT i, repeat('a', 200) FROM generate_series(1, 60000) i",
    )
    .await
    .unwrap();
    // Killed while the open transaction sits in the spool.
    wait_for(Duration::from_secs(30), "a spool file", || {
        spool_files(&sluice) > 0
    })
    .await;
    sluice.kill();
    sluice.start();
    db.wait_for_streaming().await;
    a.batch_execute(
        "INSERT INTO t SELECT i, repeat('b', 200) FROM generate_series(60001, 120000) i; COMMIT",
    )
    .await
    .unwrap();
    // Killed again while its parts go to the log.
    tokio::time::sleep(Duration::from_millis(700)).await;
    sluice.kill();
    let before = created(&sluice).len();
    sluice.start();
    wait_for(Duration::from_secs(60), "the whole transaction", || {
        created(&sluice).len() >= 120_000
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let seen = created(&sluice);
    assert_eq!(
        seen.len(),
        120_000,
        "rows (had {before} after the second kill)"
    );
    assert!(seen.values().all(|n| *n == 1), "a row arrived twice");
    assert_eq!(
        seen.keys().copied().collect::<Vec<_>>(),
        (1..=120_000).collect::<Vec<_>>()
    );
    wait_for(Duration::from_secs(10), "the spool emptied", || {
        spool_files(&sluice) == 0
    })
    .await;
}
