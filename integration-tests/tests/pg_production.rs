//! What production does to a Postgres source every week: the server restarts, a database sits
//! idle while others write, a transaction fills its batches exactly. Each test reproduces an
//! observation from the field (issue 14) against a real server.

use std::time::{Duration, Instant};

use sluice_integration_tests::{events, source_config, wait_for, PrivateCluster, Sluice, TestDb};

/// The ids of a topic's data events, in log order.
fn ids(sluice: &Sluice, topic: &str) -> Vec<i64> {
    events(&sluice.records(topic))
        .iter()
        .map(|e| e["after"]["id"].as_i64().expect("integer id"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_server_restart_completes_in_seconds_and_streaming_resumes_without_loss() {
    let cluster = PrivateCluster::start();
    cluster.exec("postgres", "CREATE DATABASE shop");
    cluster.exec("shop", "CREATE TABLE t (id int PRIMARY KEY)");
    let mut sluice = Sluice::new(&format!(
        "[[sources]]\nname = \"src\"\nkind = \"postgres\"\nurl = \"{}\"\ntables = [\"public.*\"]\n",
        cluster.url("shop")
    ));
    sluice.start();
    cluster.exec("shop", "INSERT INTO t SELECT generate_series(1, 100)");
    wait_for(Duration::from_secs(30), "the first rows", || {
        ids(&sluice, "src.public.t").len() == 100
    })
    .await;

    // Writes to another database move the server's WAL past what the source was sent data
    // for: only a confirmation of the keepalive position lets the walsender finish.
    cluster.exec(
        "postgres",
        "CREATE TABLE elsewhere AS SELECT generate_series(1, 10000) g",
    );
    tokio::time::sleep(Duration::from_millis(200)).await;

    // The default mode: the server waits for its walsenders' clients to confirm what they
    // were sent. pg_ctl gives up (and fails) after 15 s.
    let started = Instant::now();
    let out = cluster.pg_ctl(&["restart", "-m", "fast", "-w", "-t", "15"]);
    assert!(
        out.status.success(),
        "pg_ctl restart -m fast did not finish in 15 s while sluice was connected:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        cluster.server_log()
    );
    let took = started.elapsed();

    cluster.exec("shop", "INSERT INTO t SELECT generate_series(101, 200)");
    wait_for(
        Duration::from_secs(60),
        "rows written after the restart",
        || ids(&sluice, "src.public.t").len() >= 200,
    )
    .await;
    assert_eq!(
        ids(&sluice, "src.public.t"),
        (1..=200).collect::<Vec<_>>(),
        "each row once, in order"
    );
    assert!(sluice.is_running(), "{}", sluice.stderr());
    assert!(took < Duration::from_secs(15), "restart took {took:?}");
    assert_eq!(sluice.stop(), Some(0), "{}", sluice.stderr());
}

/// The slot's confirmed_flush_lsn and restart_lsn are both past `target`.
fn slot_past(db: &TestDb, target: &str) -> bool {
    db.exec(&format!(
        "SELECT confirmed_flush_lsn >= '{target}'::pg_lsn AND restart_lsn >= '{target}'::pg_lsn \
         FROM pg_replication_slots WHERE slot_name = '{}'",
        db.name
    )) == "t"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_to_other_databases_do_not_pin_wal_behind_an_idle_source() {
    let db = TestDb::create();
    db.exec("CREATE TABLE quiet (id int PRIMARY KEY)");
    let other = TestDb::create();
    other.exec("CREATE TABLE busy (id int PRIMARY KEY, pad text)");
    let mut sluice = Sluice::new(&source_config(&db, "status_interval_s = 1"));
    sluice.start();
    db.wait_for_streaming().await;

    other.exec("INSERT INTO busy SELECT g, repeat('x', 500) FROM generate_series(1, 20000) g");
    // A checkpoint logs the running transactions, which lets the slot's restart_lsn move.
    other.exec("CHECKPOINT");
    let target = other.exec("SELECT pg_current_wal_lsn()");
    other.exec("INSERT INTO busy VALUES (-1, 'x')");
    wait_for(
        Duration::from_secs(60),
        "the idle slot to confirm and release WAL written elsewhere",
        || slot_past(&db, &target),
    )
    .await;

    // The confirmed position is in the log: a restart does not find the slot ahead of it.
    assert_eq!(sluice.stop(), Some(0), "{}", sluice.stderr());
    sluice.start();
    db.wait_for_streaming().await;
    db.exec("INSERT INTO quiet VALUES (1)");
    wait_for(Duration::from_secs(30), "a row after the restart", || {
        ids(&sluice, "src.public.quiet") == [1]
    })
    .await;
    assert!(sluice.is_running(), "{}", sluice.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_filling_its_batches_exactly_commits_without_a_later_one() {
    let db = TestDb::create();
    db.exec("CREATE TABLE t (id int PRIMARY KEY)");
    let mut sluice = Sluice::new(&source_config(&db, "max_batch_events = 100"));
    sluice.start();
    db.wait_for_streaming().await;
    let mut total = 0;
    // 1×, 2× and 100× the batch size, and no transaction after any of them.
    for rows in [100, 200, 10_000] {
        db.exec(&format!(
            "INSERT INTO t SELECT generate_series({}, {})",
            total + 1,
            total + rows
        ));
        total += rows;
        let target = db.exec("SELECT pg_current_wal_lsn()");
        wait_for(
            Duration::from_secs(60),
            &format!("a transaction of {rows} rows to be committed in the log"),
            || ids(&sluice, "src.public.t").len() == total as usize,
        )
        .await;
        wait_for(Duration::from_secs(30), "the slot to confirm it", || {
            db.exec(&format!(
                "SELECT confirmed_flush_lsn >= '{target}'::pg_lsn FROM pg_replication_slots WHERE slot_name = '{}'",
                db.name
            )) == "t"
        })
        .await;
    }
    assert_eq!(
        ids(&sluice, "src.public.t"),
        (1..=total).collect::<Vec<_>>()
    );
}
