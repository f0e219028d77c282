//! The MySQL/MariaDB sink end to end: a Postgres source replicated into the real MariaDB, compared
//! row by row after catch-up; types across engines; a column added mid-stream; rejected events.

use std::process::Command;
use std::time::{Duration, Instant};

use sluice_integration_tests::{source_config, MariaDb, Sluice, TestDb};

fn sink_config(target: &MariaDb, extra: &str) -> String {
    format!(
        "[[sinks]]\nname = \"replica\"\nkind = \"mysql\"\nurl = \"{}\"\ntopics = [\"src.public.*\"]\n{extra}\n",
        target.url()
    )
}

/// The same query's rows from both sides, each as `a|b|c` lines: `query` is `columns FROM …`.
fn concat(query: &str) -> String {
    let (columns, rest) = query.split_once(" FROM ").expect("columns FROM …");
    format!("SELECT concat_ws('|', {columns}) FROM {rest}")
}

fn rows_pg(db: &TestDb, query: &str) -> String {
    db.exec(&concat(query))
}

fn rows_maria(db: &MariaDb, query: &str) -> String {
    db.exec(&concat(query))
}

async fn wait_same(source: &TestDb, target: &MariaDb, queries: &[&str], timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let differing: Vec<&str> = queries
            .iter()
            .copied()
            .filter(|q| {
                let table = q.split(" FROM ").nth(1).and_then(|r| r.split(' ').next()).unwrap_or("");
                let exists = target.exec(&format!(
                    "SELECT count(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = '{table}'"
                )) == "1";
                // A column the sink has not added yet makes the query fail: not the same yet.
                !exists || target.try_exec(&concat(q)).ok() != Some(rows_pg(source, q))
            })
            .collect();
        if differing.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "still different after {timeout:?}: {differing:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_replicates_into_mariadb() {
    let source = TestDb::create();
    let target = MariaDb::create();
    let bench = |args: &[&str]| {
        let out = Command::new("pgbench")
            .args(["-h", "127.0.0.1", "-U", "postgres"])
            .args(args)
            .arg(&source.name)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    bench(&["-i", "-q", "-s", "1"]);
    source.exec("ALTER TABLE pgbench_history REPLICA IDENTITY FULL");
    let mut sluice = Sluice::new(&format!(
        "{}{}",
        source_config(&source, "encoding = \"avro\""),
        sink_config(&target, "batch_history = true")
    ));
    sluice.start();
    source.wait_for_streaming().await;
    bench(&["-c", "4", "-T", "10"]);
    let queries = [
        "aid, bid, abalance FROM pgbench_accounts ORDER BY aid",
        "bid, bbalance FROM pgbench_branches ORDER BY bid",
        "tid, bid, tbalance FROM pgbench_tellers ORDER BY tid",
        "tid, bid, aid, delta FROM pgbench_history ORDER BY tid, bid, aid, delta",
    ];
    wait_same(&source, &target, &queries, Duration::from_secs(90)).await;
    assert_eq!(
        target.exec("SELECT COLUMN_TYPE FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'pgbench_accounts' AND COLUMN_NAME = 'filler'"),
        "char(84)"
    );
    // Offsets live in the target; no offset range was applied twice.
    let ranges = target.exec(
        "SELECT topic, `partition`, first_offset, last_offset FROM _sluice_offsets_batches ORDER BY topic, `partition`, first_offset",
    );
    let mut previous: Option<(String, i64)> = None;
    for line in ranges.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        let key = format!("{}:{}", f[0], f[1]);
        let (first, last): (i64, i64) = (f[2].parse().unwrap(), f[3].parse().unwrap());
        if let Some((k, end)) = &previous {
            if *k == key {
                assert!(first > *end, "{key}: {first} overlaps {end}");
            }
        }
        previous = Some((key, last));
    }
    assert_eq!(sluice.stop(), Some(0), "{}", sluice.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn types_cross_into_mariadb_and_schema_changes_follow() {
    let source = TestDb::create();
    let target = MariaDb::create();
    source.exec(
        "CREATE TABLE t (id bigint PRIMARY KEY, name varchar(20) NOT NULL, price numeric(10,2), \
         big numeric, ok boolean, day date, at timestamptz, local timestamp(3), uid uuid, \
         doc jsonb, bin bytea, tags text[], note text)",
    );
    source.exec(
        "INSERT INTO t VALUES (1, 'it''s \"q\" \\ ü', -12345678.90, 123456789012345678901234567890.5, true, \
         '2024-02-29', '2024-01-02 03:04:05.123456+00', '1999-12-31 23:59:59.999', \
         'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{\"a\": [1, 2]}', '\\x00ff10', ARRAY['x', NULL], NULL)",
    );
    let mut sluice = Sluice::new(&format!(
        "{}{}",
        source_config(&source, "encoding = \"avro\""),
        sink_config(&target, "")
    ));
    sluice.start();
    source.wait_for_streaming().await;
    let check = "id, name, price, big, ok, day, at, local, uid, hex(bin), tags, coalesce(note, 'NULL') FROM t ORDER BY id";
    let deadline = Instant::now() + Duration::from_secs(30);
    let row = loop {
        let exists = target.exec("SELECT count(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 't'") == "1";
        if exists && target.exec("SELECT count(*) FROM t") == "1" {
            break rows_maria(&target, check);
        }
        assert!(Instant::now() < deadline, "{}", sluice.stderr());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        row,
        "1|it's \"q\" \\ ü|-12345678.90|123456789012345678901234567890.500000000000000000000000000000|1|2024-02-29|2024-01-02 03:04:05.123456|1999-12-31 23:59:59.999|a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11|00FF10|[\"x\",null]|NULL"
    );
    assert_eq!(
        target.exec("SELECT JSON_EXTRACT(doc, '$.a[1]') FROM t"),
        "2"
    );

    // A column added and a type widened at the source follow in the target.
    source.exec(
        "ALTER TABLE t ADD COLUMN extra int; ALTER TABLE t ALTER COLUMN name TYPE varchar(50)",
    );
    source.exec("INSERT INTO t (id, name, extra) VALUES (2, 'second', 42)");
    source.exec("DELETE FROM t WHERE id = 1");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let added = target.exec("SELECT count(*) FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 't' AND COLUMN_NAME = 'extra'") == "1";
        if added
            && target.exec("SELECT count(*) FROM t") == "1"
            && target.exec("SELECT coalesce(max(extra), 0) FROM t") == "42"
        {
            break;
        }
        assert!(Instant::now() < deadline, "{}", sluice.stderr());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        target.exec("SELECT COLUMN_TYPE FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 't' AND COLUMN_NAME = 'name'"),
        "varchar(50)"
    );
    assert_eq!(sluice.stop(), Some(0), "{}", sluice.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_changes_inside_one_batch_apply_each_row_with_its_own_version() {
    let source = TestDb::create();
    let target = MariaDb::create();
    source.exec("CREATE TABLE t (id int PRIMARY KEY, a int, b text)");
    let mut sluice =
        Sluice::new(&(source_config(&source, "encoding = \"avro\"") + &sink_config(&target, "")));
    sluice.start();
    source.wait_for_streaming().await;
    source.exec(sluice_integration_tests::MIGRATION_IN_ONE_TRANSACTION);
    wait_same(
        &source,
        &target,
        // pgoutput does not tell a rename from a drop and an add: rows written before the
        // rename and not since keep NULL in the renamed column at the target.
        &[
            "id, coalesce(c, '-') FROM t ORDER BY id",
            "id, a2 FROM t WHERE id = 1 OR id >= 4 ORDER BY id",
        ],
        Duration::from_secs(60),
    )
    .await;
    assert!(sluice.is_running(), "{}", sluice.stderr());
    sluice_integration_tests::assert_schema_changes_at_most(&sluice, 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_larger_than_the_sinks_budget_reaches_mariadb_whole() {
    let source = TestDb::create();
    let target = MariaDb::create();
    source.exec(
        "CREATE TABLE a (id int PRIMARY KEY, balance bigint NOT NULL, pad text); \
         INSERT INTO a SELECT g, 1000, repeat('x', 1500) FROM generate_series(1, 3000) g;",
    );
    // Each update is ~9 MB of records, more than one read of a partition (4 MiB): the source
    // writes it in appends of 300 events and the sink, holding ~1 MB, applies it in parts.
    let mut sluice = Sluice::new(&format!(
        "{}{}",
        source_config(&source, "max_batch_events = 300"),
        sink_config(&target, "transactional = true\nmax_pending_bytes = 1000000")
    ));
    sluice.start();
    let total = || {
        let exists = target.exec(
            "SELECT count(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'a'",
        );
        if exists != "1" {
            return String::new();
        }
        target.exec("SELECT concat(count(*), ':', coalesce(sum(balance), 0)) FROM a")
    };
    sluice_integration_tests::wait_for(Duration::from_secs(60), "the snapshot", || {
        total() == "3000:3000000"
    })
    .await;
    source.wait_for_streaming().await;
    // Each transaction adds 1 to every balance: the target's sum moves in steps of 3,000.
    for _ in 0..3 {
        source.exec("UPDATE a SET balance = balance + 1");
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let seen = total();
        assert!(
            [
                "3000:3000000",
                "3000:3003000",
                "3000:3006000",
                "3000:3009000"
            ]
            .contains(&seen.as_str()),
            "the target showed part of a transaction: {seen}"
        );
        if seen == "3000:3009000" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not applied: {}",
            sluice.stderr()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        sluice
            .stderr()
            .contains("applying it in parts inside one destination transaction"),
        "{}",
        sluice.stderr()
    );
    assert_eq!(sluice.stop(), Some(0), "{}", sluice.stderr());
}
