//! The ClickHouse sink end to end, on Debian's ClickHouse 18.16 and on current ClickHouse
//! (chdb 26.x) at once: Postgres tables (TOASTed values, a composite key, a table without a
//! key) kept in ClickHouse through a writer workload (inserts, updates that leave TOASTed
//! values unchanged, deletes, key changes, a truncate, an added column) and three `kill -9`s
//! of sluice; then every current-state table equals its source row for row, every changelog
//! holds each change of the log once and replays to the source's state. And rows ClickHouse
//! cannot hold go to the dead-letter topic, a widened source column widens its ClickHouse
//! column, and a change sluice cannot apply stops the sink with the fix.

use std::time::{Duration, Instant};

use sluice_integration_tests::clickhouse::{ClickHouse, CHDB_URL, CLICKHOUSE_URL};
use sluice_integration_tests::warehouse::{write, TABLES};
use sluice_integration_tests::{sluice_command, source_config, wait_for, Rng, Sluice, TestDb};

/// The rows of `items` as tab-separated lines, in the form the ClickHouse query of
/// [`items_in`] prints them (timestamps to the precision the server keeps).
fn items_in_postgres(db: &TestDb, micros: bool) -> Vec<String> {
    let at = if micros {
        "(extract(epoch FROM at) * 1000000)::bigint"
    } else {
        "floor(extract(epoch FROM at))::bigint"
    };
    sorted(&db.exec(&format!(
        "SELECT concat_ws(E'\\t', id, name, (price * 100)::bigint, array_to_string(tags, ','), {at}, \
         md5(doc), coalesce(extra::text, '\\N')) FROM items"
    )))
}

fn items_in(ch: &ClickHouse, micros: bool) -> Vec<String> {
    let at = if micros {
        "toUnixTimestamp64Micro(at)"
    } else {
        "toUnixTimestamp(at)"
    };
    ch.current(
        "items",
        &format!(
            "id, name, toInt64(price * 100), \
             arrayStringConcat(arrayMap(t -> assumeNotNull(t), tags), ','), \
             {at}, lower(hex(MD5(doc))), extra"
        ),
    )
}

fn orders_in_postgres(db: &TestDb) -> Vec<String> {
    sorted(&db.exec("SELECT concat_ws(E'\\t', a, b, qty) FROM orders"))
}

fn sorted(text: &str) -> Vec<String> {
    let mut rows: Vec<String> = text
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    rows.sort();
    rows
}

/// Waits until `actual` equals `expected`; on timeout, shows what differs.
async fn wait_equal(
    what: &str,
    expected: impl Fn() -> Vec<String>,
    actual: impl Fn() -> Vec<String>,
    timeout: Duration,
) {
    let deadline = Instant::now() + timeout;
    loop {
        let (want, have) = (expected(), actual());
        if want == have {
            return;
        }
        if Instant::now() > deadline {
            let missing: Vec<_> = want.iter().filter(|r| !have.contains(r)).take(3).collect();
            let extra: Vec<_> = have.iter().filter(|r| !want.contains(r)).take(3).collect();
            panic!(
                "{what}: {} rows at the source, {} in ClickHouse; only at the source {missing:?}, \
                 only in ClickHouse {extra:?}",
                want.len(),
                have.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_three_times_under_a_writer_leaves_clickhouse_18_and_current_clickhouse_equal_to_the_source(
) {
    let old = ClickHouse::on(CLICKHOUSE_URL);
    let new = ClickHouse::on(CHDB_URL);
    assert!(old.keeps_deleted_rows() && !new.keeps_deleted_rows());
    let source = TestDb::create();
    source.exec(TABLES);
    let sinks = [
        old.sink_config(
            "old",
            "[\"src.public.*\"]",
            "mode = \"both\"\nflush_interval_ms = 300",
        ),
        new.sink_config(
            "new",
            "[\"src.public.*\"]",
            "mode = \"both\"\nflush_interval_ms = 300",
        ),
    ];
    let mut sluice = Sluice::new(&format!(
        "{}{}{}",
        source_config(&source, ""),
        sinks[0],
        sinks[1]
    ));
    sluice.start();
    source.wait_for_streaming().await;
    let writer = sluice_core::task::spawn_in_span(write(source.url(), 24));
    let mut rng = Rng::new(0xc1c9);
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(2000 + rng.below(3000))).await;
        sluice.kill();
        sluice.start();
    }
    writer.await.unwrap();

    for (ch, micros) in [(&old, false), (&new, true)] {
        let server = ch.version();
        wait_equal(
            &format!("items on ClickHouse {server}"),
            || items_in_postgres(&source, micros),
            || items_in(ch, micros),
            Duration::from_secs(120),
        )
        .await;
        wait_equal(
            &format!("orders on ClickHouse {server}"),
            || orders_in_postgres(&source),
            || ch.current("orders", "a, b, qty"),
            Duration::from_secs(60),
        )
        .await;
        // Each change of the log once in the changelog, and replayed it gives the table.
        let in_log = sluice
            .records("src.public.items")
            .iter()
            .filter(|(_, value)| !value.is_null())
            .count();
        let count = |sql: &str| ch.query(sql).trim().parse::<usize>().unwrap();
        let db = &ch.database;
        assert_eq!(
            count(&format!("SELECT count() FROM {db}.items_changes FINAL")),
            in_log,
            "changelog rows on {server}"
        );
        let replayed = ch.query(&format!(
            "SELECT id, n FROM (SELECT id, argMax(name, _sluice_offset) AS n, \
             argMax(_sluice_op, _sluice_offset) AS op FROM {db}.items_changes FINAL GROUP BY id) \
             WHERE op != 'd' FORMAT TabSeparated"
        ));
        assert_eq!(
            sorted(&replayed),
            sorted(&source.exec("SELECT concat_ws(E'\\t', id, name) FROM items")),
            "the changelog replayed on {server}"
        );
        // A table without a key: its changelog only.
        assert!(
            !ch.has_table("events"),
            "no current-state table without a key"
        );
        assert_eq!(
            count(&format!(
                "SELECT count() FROM {db}.events_changes FINAL WHERE _sluice_op = 'c'"
            )),
            source
                .exec("SELECT count(*) FROM events")
                .trim()
                .parse::<usize>()
                .unwrap(),
            "events on {server}"
        );
    }
    let stderr = sluice.stderr();
    assert!(
        stderr.contains("changing the table for a new version of the source table"),
        "the added column reached ClickHouse by ALTER: {stderr}"
    );
    assert!(
        stderr.contains("only its changelog table is kept"),
        "the keyless table is named: {stderr}"
    );
    let (code, status) = sluice_command(&["status"], &sluice.config);
    assert_eq!(code, Some(0), "{status}");
    assert!(status.contains("sink old (clickhouse)"), "{status}");
    assert!(status.contains("last stored at"), "{status}");
    assert_eq!(sluice.stop(), Some(0), "{}", sluice.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_clickhouse_18_cannot_hold_go_to_the_dead_letter_topic_and_columns_widen() {
    let ch = ClickHouse::on(CLICKHOUSE_URL);
    let source = TestDb::create();
    source.exec("CREATE TABLE t (id int PRIMARY KEY, d date, v int)");
    let mut sluice = Sluice::new(&format!(
        "{}{}",
        source_config(&source, ""),
        ch.sink_config(
            "ch",
            "[\"src.public.*\"]",
            "flush_interval_ms = 100\ndead_letter_topic = \"ch.dead\""
        )
    ));
    sluice.start();
    source.wait_for_streaming().await;
    // ClickHouse 18.16's Date starts in 1970.
    source.exec("INSERT INTO t VALUES (1, '2020-01-02', 1), (2, '1960-01-01', 2), (3, NULL, 3)");
    source.exec("ALTER TABLE t ALTER COLUMN v TYPE bigint");
    source.exec("INSERT INTO t VALUES (4, '2021-05-06', 9000000000)");
    wait_for(
        Duration::from_secs(60),
        "the rows after the rejected one",
        || ch.has_table("t") && ch.current("t", "id").len() == 3,
    )
    .await;
    assert_eq!(
        ch.current("t", "id, d, v"),
        ["1\t2020-01-02\t1", "3\t\\N\t3", "4\t2021-05-06\t9000000000"]
    );
    assert_eq!(
        ch.query(&format!(
            "SELECT type FROM system.columns WHERE database = '{}' AND table = 't' AND name = 'v'",
            ch.database
        ))
        .trim(),
        "Nullable(Int64)",
        "the widened column"
    );
    let dead = sluice.records("ch.dead");
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].1["after"]["id"], 2, "{dead:?}");
    assert!(
        sluice
            .stderr()
            .contains("1960-01-01 is outside what Date holds (1970-01-01 to 2149-06-06)"),
        "the reason is logged: {}",
        sluice.stderr()
    );
    let (code, check) = sluice_command(&["check", "--connect"], &sluice.config);
    assert_eq!(code, Some(0), "{check}");
    assert!(check.contains("ClickHouse 18.16"), "{check}");

    // A table whose column cannot hold the source's values: the sink stops, saying what to do;
    // the source goes on.
    ch.exec(&format!(
        "CREATE TABLE {}.u (id Int32, v Date, _sluice_version UInt64, _sluice_deleted UInt8) \
         ENGINE = ReplacingMergeTree(_sluice_version) ORDER BY id",
        ch.database
    ));
    source.exec("CREATE TABLE u (id int PRIMARY KEY, v int); INSERT INTO u VALUES (1, 1)");
    let status = || sluice_command(&["status"], &sluice.config).1;
    wait_for(Duration::from_secs(60), "the sink to stop", || {
        status().contains("FAILED")
    })
    .await;
    let report = status();
    assert!(
        report.contains(&format!(
            "column v of {}.u is Date, and public.u now sends values of Nullable(Int32)",
            ch.database
        )),
        "{report}"
    );
    assert!(report.contains("sluice only widens columns"), "{report}");
    assert!(sluice.is_running(), "{}", sluice.stderr());
    assert_eq!(
        sluice.stop(),
        Some(1),
        "a stop after a sink failed says so: {}",
        sluice.stderr()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_without_their_toasted_values_are_completed_from_clickhouse_on_both_servers() {
    let old = ClickHouse::on(CLICKHOUSE_URL);
    let new = ClickHouse::on(CHDB_URL);
    let source = TestDb::create();
    source.exec(
        "CREATE TABLE docs (a int, b numeric(8,2), d date, name text, body text, \
                            PRIMARY KEY (a, b, d));
         ALTER TABLE docs ALTER COLUMN body SET STORAGE EXTERNAL;
         INSERT INTO docs SELECT g, g / 4.0, date '2020-01-01' + g, 'n' || g, repeat(md5(g::text), 100)
           FROM generate_series(1, 40) g;",
    );
    // The source leaves unchanged TOASTed values out (no reads of its own): every update below
    // reaches the sink without body.
    let mut sluice = Sluice::new(&format!(
        "{}{}{}",
        source_config(&source, "toast = \"placeholder\"\n"),
        old.sink_config("old", "[\"src.public.docs\"]", "flush_interval_ms = 200"),
        new.sink_config("new", "[\"src.public.docs\"]", "flush_interval_ms = 200"),
    ));
    sluice.start();
    source.wait_for_streaming().await;
    let expected =
        || {
            sorted(&source.exec(
                "SELECT concat_ws(E'\\t', a, (b * 100)::bigint, d, name, md5(body)) FROM docs",
            ))
        };
    let actual = |ch: &ClickHouse| {
        ch.current(
            "docs",
            "a, toInt64(b * 100), d, name, lower(hex(MD5(body)))",
        )
    };
    for ch in [&old, &new] {
        wait_equal(
            "the snapshot",
            expected,
            || actual(ch),
            Duration::from_secs(60),
        )
        .await;
    }
    // Updates that leave body alone, some twice in one transaction, and key changes (the new
    // key takes body from the old one), one of them updated again right after.
    source.exec(
        "UPDATE docs SET name = 'u' || a WHERE a % 3 = 0;
         BEGIN; UPDATE docs SET name = 'v' || a WHERE a % 5 = 0; UPDATE docs SET name = 'w' || a WHERE a % 5 = 0; COMMIT;
         UPDATE docs SET a = a + 1000 WHERE a IN (7, 8);
         UPDATE docs SET name = 'after key change' WHERE a = 1007;",
    );
    for ch in [&old, &new] {
        wait_equal(
            &format!("updates without body on ClickHouse {}", ch.version()),
            expected,
            || actual(ch),
            Duration::from_secs(60),
        )
        .await;
    }
    let stderr = sluice.stderr();
    assert!(
        !stderr.contains("left out"),
        "every row completed: {stderr}"
    );
    assert_eq!(sluice.stop(), Some(0), "{}", sluice.stderr());
}
