//! On-demand snapshots of a MariaDB source while it streams: `sluice snapshot` (through the
//! source's signal table) re-reads a table in key chunks under a writer that updates, deletes
//! and inserts, through a `kill -9`, and the log folds to the table with every key's changes
//! in order; a `WHERE` slice reads only its rows; a table added to `tables`, and one renamed
//! into the captured set, are read without asking.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mysql_async::prelude::Queryable;
use sluice_integration_tests::{
    assert_reads_keep_key_order, events, folded_id_v, incremental_reads, mysql_source_config,
    sluice_command, wait_for, MariaDb, Rng, Sluice, MARIADB_URL,
};

const SIGNAL_DDL: &str =
    "CREATE TABLE sluice_signal (id VARCHAR(64) PRIMARY KEY, type VARCHAR(32) NOT NULL, data TEXT)";

/// Each row of `table` as the server has it now: id → v.
fn table_rows(db: &MariaDb, table: &str) -> BTreeMap<i64, i64> {
    db.exec(&format!("SELECT id, v FROM {table} ORDER BY id"))
        .lines()
        .map(|line| {
            let (id, v) = line.split_once('\t').unwrap();
            (id.parse().unwrap(), v.parse().unwrap())
        })
        .collect()
}

/// The chunks of the on-demand snapshot in the log, as `sluice status` says (0: none running).
fn chunks_done(status: &str) -> u64 {
    status
        .split("on-demand snapshot in progress: ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn config(db: &MariaDb, extra: &str) -> String {
    mysql_source_config(
        db,
        &format!(
            "snapshot = \"never\"\nsignal_table = \"{}.sluice_signal\"\n{extra}",
            db.name
        ),
    )
}

async fn wait_streaming(sluice: &Sluice) {
    wait_for(Duration::from_secs(30), "the source to stream", || {
        sluice.stderr().contains("streaming the binlog")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_on_demand_snapshot_under_writes_and_a_kill_keeps_every_key_in_order() {
    let db = MariaDb::create();
    db.exec(&format!(
        "CREATE TABLE t (id int PRIMARY KEY, v int NOT NULL); \
         INSERT INTO t SELECT seq, 0 FROM seq_1_to_200000; {SIGNAL_DDL}"
    ));
    // Streaming only: the table's rows reach the log through the on-demand snapshot alone.
    let mut sluice = Sluice::new(&config(&db, "max_batch_events = 200"));
    sluice.start();
    wait_streaming(&sluice).await;

    // v only grows: a chunk row overwriting a newer change would show as v going down.
    let stop = Arc::new(AtomicBool::new(false));
    let writer_stop = Arc::clone(&stop);
    let pool = mysql_async::Pool::new(format!("{MARIADB_URL}/{}", db.name).as_str());
    let writer_pool = pool.clone();
    let writer = sluice_core::task::spawn_in_span(async move {
        let mut conn = writer_pool.get_conn().await.unwrap();
        let mut rng = Rng::new(11);
        let mut next_id = 200_001;
        let mut writes = 0u64;
        while !writer_stop.load(Ordering::Relaxed) {
            let id = 1 + rng.below(200_000) as i32;
            match rng.below(10) {
                0 => conn.exec_drop("DELETE FROM t WHERE id = ?", (id,)).await,
                1 => {
                    next_id += 1;
                    conn.exec_drop("INSERT INTO t VALUES (?, 0)", (next_id - 1,))
                        .await
                }
                _ => {
                    conn.exec_drop("UPDATE t SET v = v + 1 WHERE id = ?", (id,))
                        .await
                }
            }
            .unwrap();
            writes += 1;
        }
        writes
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let table = format!("{}.t", db.name);
    let (code, out) = sluice_command(&["snapshot", "src", &table], &sluice.config);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains(&format!(
            "asked source src for an on-demand snapshot of {table}"
        )),
        "{out}"
    );

    // Part-way through, kill -9 and restart: it resumes after the last chunk in the log.
    let topic = format!("src.{}.t", db.name);
    wait_for(Duration::from_secs(60), "a few chunks in the log", || {
        chunks_done(&sluice_command(&["status"], &sluice.config).1) >= 40
    })
    .await;
    sluice.kill();
    let (_, status) = sluice_command(&["status"], &sluice.config);
    assert!(
        status.contains("on-demand snapshot in progress")
            && status.contains(&format!("snapshot of {table}:")),
        "{status}"
    );
    let before_kill = incremental_reads(&events(&sluice.records(&topic)));
    assert!(
        (8_000..190_000).contains(&before_kill),
        "the kill comes part-way through the snapshot: {before_kill} rows read before it"
    );
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
    let writes = writer.await.unwrap();
    assert!(writes > 500, "the writer ran alongside: {writes} writes");
    db.exec("INSERT INTO t VALUES (-1, 0)");
    wait_for(Duration::from_secs(60), "the marker row", || {
        events(&sluice.records(&topic))
            .iter()
            .any(|e| e["after"]["id"] == -1)
    })
    .await;

    let all = events(&sluice.records(&topic));
    assert_eq!(
        folded_id_v(&all),
        table_rows(&db, "t"),
        "the log folds to the table"
    );
    // Per key: v never goes down, no row comes back after its delete, and no key is read
    // twice (the chunk after the kill starts after the last one in the log).
    let read = assert_reads_keep_key_order(&all);
    assert!(
        read >= 180_000,
        "rows read by the on-demand snapshot: {read}"
    );
    // The signal table's rows are requests, not data.
    assert!(sluice
        .records(&format!("src.{}.sluice_signal", db.name))
        .is_empty());
    assert_eq!(sluice.stop(), Some(0), "{}", sluice.stderr());
    pool.disconnect().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_where_slice_and_tables_that_join_the_source_are_read_while_streaming() {
    let db = MariaDb::create();
    db.exec(&format!(
        "CREATE TABLE a (id int PRIMARY KEY, v int NOT NULL); \
         INSERT INTO a SELECT seq, seq FROM seq_1_to_3000; \
         CREATE TABLE b (id int PRIMARY KEY, v int NOT NULL); \
         INSERT INTO b SELECT seq, seq FROM seq_1_to_2000; {SIGNAL_DDL}"
    ));
    let only = |tables: &str| {
        config(&db, "").replace(
            &format!("tables = [\"{}.*\"]", db.name),
            &format!("tables = [{tables}]"),
        )
    };
    let (a, b) = (format!("{}.a", db.name), format!("{}.b", db.name));
    let mut sluice = Sluice::new(&only(&format!("\"{a}\"")));
    sluice.start();
    wait_streaming(&sluice).await;

    // A slice: only its rows.
    let (code, out) = sluice_command(
        &["snapshot", "src", &a, "--where", "v > 2500"],
        &sluice.config,
    );
    assert_eq!(code, Some(0), "{out}");
    let topic_a = format!("src.{a}");
    wait_for(Duration::from_secs(60), "the slice of a", || {
        incremental_reads(&events(&sluice.records(&topic_a))) == 500
    })
    .await;
    let read = events(&sluice.records(&topic_a));
    assert!(read
        .iter()
        .all(|e| e["after"]["v"].as_i64().unwrap() > 2500));

    // A condition that does not parse is refused by the command; written by hand, the source
    // drops that request with the reason and goes on.
    let (code, out) = sluice_command(
        &["snapshot", "src", &a, "--where", "no_such_column > 1"],
        &sluice.config,
    );
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(&format!("cannot select rows of {a}")) && out.contains("no_such_column"),
        "{out}"
    );
    db.exec(&format!(
        "INSERT INTO sluice_signal VALUES ('by-hand', 'execute-snapshot', \
         '{{\"data-collections\": [\"{a}\"], \"additional-conditions\": \
         [{{\"data-collection\": \"{a}\", \"filter\": \"no_such_column > 1\"}}]}}')"
    ));
    wait_for(Duration::from_secs(30), "the bad request dropped", || {
        sluice.stderr().contains("on-demand snapshot dropped")
    })
    .await;
    assert!(sluice.is_running(), "{}", sluice.stderr());

    // A table the source does not capture is refused, saying so.
    let (code, out) = sluice_command(&["snapshot", "src", &b], &sluice.config);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(&format!("source src does not capture {b}")),
        "{out}"
    );

    // b added to `tables`: read at the next start, without asking.
    assert_eq!(sluice.stop(), Some(0), "{}", sluice.stderr());
    let c = format!("{}.c", db.name);
    let config = std::fs::read_to_string(&sluice.config).unwrap().replace(
        &format!("tables = [\"{a}\"]"),
        &format!("tables = [\"{a}\", \"{b}\", \"{c}\"]"),
    );
    std::fs::write(&sluice.config, config).unwrap();
    sluice.start();
    wait_for(Duration::from_secs(60), "b's rows", || {
        folded_id_v(&events(&sluice.records(&format!("src.{b}")))) == table_rows(&db, "b")
    })
    .await;

    // A table with rows renamed into the captured set: read too.
    db.exec(
        "CREATE TABLE staging (id int PRIMARY KEY, v int NOT NULL); \
         INSERT INTO staging SELECT seq, seq FROM seq_1_to_1500; \
         RENAME TABLE staging TO c; UPDATE c SET v = -v WHERE id <= 10",
    );
    wait_for(Duration::from_secs(60), "c's rows", || {
        folded_id_v(&events(&sluice.records(&format!("src.{c}")))) == table_rows(&db, "c")
    })
    .await;
    assert_eq!(sluice.stop(), Some(0), "{}", sluice.stderr());

    // Without a signal table, the command says how to set one up.
    let config = std::fs::read_to_string(&sluice.config)
        .unwrap()
        .replace(&format!("signal_table = \"{}.sluice_signal\"", db.name), "");
    std::fs::write(&sluice.config, config).unwrap();
    let (code, out) = sluice_command(&["snapshot", "src", &a], &sluice.config);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("has no signal_table") && out.contains("CREATE TABLE"),
        "{out}"
    );
}
