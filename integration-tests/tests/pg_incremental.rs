//! On-demand snapshots while streaming (DBLog watermarks): `sluice snapshot` re-reads a table
//! in key chunks under a writer that updates, deletes and inserts, through a `kill -9`, and the
//! log folds to the table with every key's changes in order; a `WHERE` slice reads only its
//! rows; a table added to `tables`, and one created while streaming, are read without asking.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sluice_integration_tests::{
    assert_reads_keep_key_order, events, folded_id_v, incremental_reads, sluice_command,
    source_config, wait_for, Rng, Sluice, TestDb,
};

/// Each row of `t` as the source has it now: id → v.
fn table_rows(db: &TestDb, table: &str) -> BTreeMap<i64, i64> {
    db.exec(&format!("SELECT id || ' ' || v FROM {table} ORDER BY id"))
        .lines()
        .map(|line| {
            let (id, v) = line.split_once(' ').unwrap();
            (id.parse().unwrap(), v.parse().unwrap())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_on_demand_snapshot_under_writes_and_a_kill_keeps_every_key_in_order() {
    let db = TestDb::create();
    db.exec("CREATE TABLE t (id int PRIMARY KEY, v int NOT NULL); INSERT INTO t SELECT g, 0 FROM generate_series(1, 80000) g");
    // Streaming only: the table's rows reach the log through the on-demand snapshot alone.
    let mut sluice = Sluice::new(&source_config(
        &db,
        "snapshot = \"never\"\nmax_batch_events = 1000",
    ));
    sluice.start();
    db.wait_for_streaming().await;

    // v only grows: a chunk row overwriting a newer change would show as v going down.
    let stop = Arc::new(AtomicBool::new(false));
    let writer_stop = Arc::clone(&stop);
    let writer_db = db.url();
    let writer = sluice_core::task::spawn_in_span(async move {
        let client = sluice_integration_tests::writer_client(&writer_db).await;
        let mut rng = Rng::new(11);
        let mut next_id = 80_001;
        while !writer_stop.load(Ordering::Relaxed) {
            let id = 1 + rng.below(80_000) as i32;
            match rng.below(10) {
                0 => {
                    client
                        .execute("DELETE FROM t WHERE id = $1", &[&id])
                        .await
                        .unwrap();
                }
                1 => {
                    client
                        .execute("INSERT INTO t VALUES ($1, 0)", &[&next_id])
                        .await
                        .unwrap();
                    next_id += 1;
                }
                _ => {
                    client
                        .execute("UPDATE t SET v = v + 1 WHERE id = $1", &[&id])
                        .await
                        .unwrap();
                }
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (code, out) = sluice_command(&["snapshot", "src", "public.t"], &sluice.config);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("asked source src for an on-demand snapshot of public.t"),
        "{out}"
    );

    // Part-way through, kill -9 and restart: it resumes after the last chunk in the log. (The
    // table is large enough that the snapshot is still running when status is asked: with
    // 40,000 rows an idle box finished it first.)
    wait_for(Duration::from_secs(60), "a few chunks in the log", || {
        incremental_reads(&events(&sluice.records("src.public.t"))) >= 5000
    })
    .await;
    let (_, status) = sluice_command(&["status"], &sluice.config);
    assert!(
        status.contains("on-demand snapshot in progress")
            && status.contains("snapshot of public.t:"),
        "{status}"
    );
    sluice.kill();
    sluice.start();
    wait_for(
        Duration::from_secs(120),
        "the on-demand snapshot's end",
        || {
            sluice
                .stderr()
                .contains("on-demand snapshot of the table done")
        },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    db.exec("INSERT INTO t VALUES (-1, 0)");
    wait_for(Duration::from_secs(60), "the marker row", || {
        events(&sluice.records("src.public.t"))
            .iter()
            .any(|e| e["after"]["id"] == -1)
    })
    .await;

    let all = events(&sluice.records("src.public.t"));
    assert_eq!(
        folded_id_v(&all),
        table_rows(&db, "t"),
        "the log folds to the table"
    );
    // Per key: v never goes down, no row comes back after its delete, and no key is read
    // twice (the chunk after the kill starts after the last one in the log).
    let read = assert_reads_keep_key_order(&all);
    assert!(
        read >= 30_000,
        "rows read by the on-demand snapshot: {read}"
    );
    assert_eq!(sluice.stop(), Some(0), "{}", sluice.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_where_slice_and_tables_that_join_the_source_are_read_while_streaming() {
    let db = TestDb::create();
    db.exec(
        "CREATE TABLE a (id int PRIMARY KEY, v int NOT NULL); \
         INSERT INTO a SELECT g, g FROM generate_series(1, 3000) g; \
         CREATE TABLE b (id int PRIMARY KEY, v int NOT NULL); \
         INSERT INTO b SELECT g, g FROM generate_series(1, 2000) g",
    );
    let mut sluice = Sluice::new(
        &source_config(&db, "snapshot = \"never\"")
            .replace("tables = [\"public.*\"]", "tables = [\"public.a\"]"),
    );
    sluice.start();
    db.wait_for_streaming().await;

    // A slice: only its rows.
    let (code, out) = sluice_command(
        &["snapshot", "src", "public.a", "--where", "v > 2500"],
        &sluice.config,
    );
    assert_eq!(code, Some(0), "{out}");
    wait_for(Duration::from_secs(60), "the slice of a", || {
        incremental_reads(&events(&sluice.records("src.public.a"))) == 500
    })
    .await;
    let read = events(&sluice.records("src.public.a"));
    assert!(read
        .iter()
        .all(|e| e["after"]["v"].as_i64().unwrap() > 2500));

    // A condition that does not parse is refused by the command; written by hand, the source
    // drops that request with the reason and goes on.
    let (code, out) = sluice_command(
        &[
            "snapshot",
            "src",
            "public.a",
            "--where",
            "no_such_column > 1",
        ],
        &sluice.config,
    );
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("cannot select rows of public.a") && out.contains("no_such_column"),
        "{out}"
    );
    db.exec(
        "SELECT pg_logical_emit_message(true, 'sluice.signal',          '{\"source\": \"src\", \"snapshot\": [\"public.a\"], \"where\": \"no_such_column > 1\"}')",
    );
    wait_for(Duration::from_secs(30), "the bad request dropped", || {
        sluice.stderr().contains("on-demand snapshot dropped")
    })
    .await;
    assert!(sluice.is_running(), "{}", sluice.stderr());

    // A table the source does not capture is refused, saying so.
    let (code, out) = sluice_command(&["snapshot", "src", "public.b"], &sluice.config);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("source src does not capture public.b"),
        "{out}"
    );

    // b added to `tables`: read at the next start, without asking.
    assert_eq!(sluice.stop(), Some(0), "{}", sluice.stderr());
    let config = std::fs::read_to_string(&sluice.config)
        .unwrap()
        .replace("tables = [\"public.a\"]", "tables = [\"public.*\"]");
    std::fs::write(&sluice.config, config).unwrap();
    sluice.start();
    wait_for(Duration::from_secs(60), "b's rows", || {
        folded_id_v(&events(&sluice.records("src.public.b"))) == table_rows(&db, "b")
    })
    .await;

    // c created while streaming, rows written before sluice publishes it: read too.
    db.exec(
        "CREATE TABLE c (id int PRIMARY KEY, v int NOT NULL); \
         INSERT INTO c SELECT g, g FROM generate_series(1, 1500) g",
    );
    wait_for(Duration::from_secs(60), "c's rows", || {
        folded_id_v(&events(&sluice.records("src.public.c"))) == table_rows(&db, "c")
    })
    .await;
    assert_eq!(sluice.stop(), Some(0), "{}", sluice.stderr());
}
