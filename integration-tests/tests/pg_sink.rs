//! The Postgres sink end to end: a source database under pgbench replicated through the log
//! into a target database, compared table by table (md5 of the ordered rows), through kill -9,
//! a column added mid-stream, a target that is unreachable for 30 seconds, rejected events and
//! transactional mode.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;
use sluice_integration_tests::{
    admin, free_port, http_get, jsonl_sink, run_ok, source_config, wait_for, Rng, Sluice, TestDb,
    MIGRATION_IN_ONE_TRANSACTION,
};

const PGBENCH_TABLES: [&str; 4] = [
    "pgbench_accounts",
    "pgbench_branches",
    "pgbench_tellers",
    "pgbench_history",
];

fn pgbench(db: &TestDb, args: &[&str]) {
    run_ok(
        Command::new("pgbench")
            .args(["-h", "127.0.0.1", "-U", "postgres"])
            .args(args)
            .arg(&db.name),
        &format!("pgbench {args:?}"),
    );
}

fn exists(db: &TestDb, table: &str) -> bool {
    db.exec(&format!("SELECT to_regclass('public.{table}') IS NOT NULL")) == "t"
}

/// md5 of a table's rows in a canonical order (`missing` for a missing table).
fn checksum(db: &TestDb, table: &str) -> String {
    if !exists(db, table) {
        return "missing".into();
    }
    db.exec(&format!(
        "SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM public.{table} t"
    ))
}

fn count(db: &TestDb, table: &str) -> String {
    if !exists(db, table) {
        return "0".into();
    }
    db.exec(&format!("SELECT count(*) FROM public.{table}"))
}

fn sink_config(target: &TestDb, extra: &str) -> String {
    format!(
        "[[sinks]]\nname = \"replica\"\nkind = \"postgres\"\nurl = \"{}\"\ntopics = [\"src.public.*\"]\n{extra}\n",
        target.url()
    )
}

async fn wait_equal(source: &TestDb, target: &TestDb, tables: &[&str], timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let differing: Vec<&str> = tables
            .iter()
            .copied()
            .filter(|t| checksum(source, t) != checksum(target, t))
            .collect();
        if differing.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "tables still differ after {timeout:?}: {differing:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The batch history shows every offset applied once: per partition, ranges never overlap.
fn assert_no_batch_applied_twice(target: &TestDb) {
    let rows = target.exec(
        "SELECT topic || ':' || partition || ':' || first_offset || ':' || last_offset \
         FROM _sluice_offsets_batches ORDER BY topic, partition, first_offset",
    );
    let mut last: Option<(String, i64)> = None;
    let mut batches = 0;
    for line in rows.lines() {
        let parts: Vec<&str> = line.rsplitn(3, ':').collect();
        let (end, first, key) = (
            parts[0].parse::<i64>().unwrap(),
            parts[1].parse::<i64>().unwrap(),
            parts[2].to_owned(),
        );
        if let Some((previous_key, previous_end)) = &last {
            if *previous_key == key {
                assert!(
                    first > *previous_end,
                    "{key}: batch starting at {first} overlaps one ending at {previous_end}"
                );
            }
        }
        last = Some((key, end));
        batches += 1;
    }
    assert!(batches > 0, "no batches recorded");
}

fn setup_pgbench() -> (TestDb, TestDb) {
    let source = TestDb::create();
    let target = TestDb::create();
    pgbench(&source, &["-i", "-q", "-s", "1"]);
    // pgbench_history has no key: the sink matches its rows on every column.
    source.exec("ALTER TABLE pgbench_history REPLICA IDENTITY FULL");
    (source, target)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_replicates_to_an_equal_target() {
    let (source, target) = setup_pgbench();
    let mut sluice = Sluice::new(&format!(
        "{}{}",
        source_config(&source, "encoding = \"avro\""),
        sink_config(&target, "batch_history = true")
    ));
    sluice.start();
    source.wait_for_streaming().await;
    let bench = {
        let name = source.name.clone();
        tokio::task::spawn_blocking(move || {
            let db = TestDb { name };
            pgbench(&db, &["-c", "4", "-T", "20"]);
            std::mem::forget(db);
        })
    };
    bench.await.unwrap();
    wait_equal(&source, &target, &PGBENCH_TABLES, Duration::from_secs(60)).await;
    // The target got the source's types and key.
    assert_eq!(
        target.exec("SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'pgbench_accounts'::regclass AND attname = 'filler'"),
        "character(84)"
    );
    assert_eq!(
        target.exec("SELECT count(*) FROM pg_index WHERE indrelid = 'pgbench_accounts'::regclass AND indisprimary"),
        "1"
    );
    assert_no_batch_applied_twice(&target);
    assert_eq!(sluice.stop(), Some(0), "{}", sluice.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_five_times_during_pgbench_from_a_json_source_leaves_an_equal_target() {
    kill_9_five_times_during_pgbench(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_five_times_during_pgbench_from_an_avro_source_leaves_an_equal_target() {
    kill_9_five_times_during_pgbench(Some("avro")).await;
}

/// pgbench on the source while sluice is killed five times; `encoding` of the source (None:
/// the default, JSON).
async fn kill_9_five_times_during_pgbench(encoding: Option<&str>) {
    let (source, target) = setup_pgbench();
    let encoding = encoding.map_or(String::new(), |e| format!("encoding = \"{e}\""));
    let mut sluice = Sluice::new(&format!(
        "{}{}",
        source_config(&source, &encoding),
        sink_config(&target, "batch_history = true")
    ));
    sluice.start();
    source.wait_for_streaming().await;
    let bench = {
        let name = source.name.clone();
        tokio::task::spawn_blocking(move || {
            let db = TestDb { name };
            pgbench(&db, &["-c", "4", "-T", "25"]);
            std::mem::forget(db);
        })
    };
    let mut rng = Rng::new(0x5eed);
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(1500 + rng.below(2500))).await;
        sluice.kill();
        sluice.start();
    }
    bench.await.unwrap();
    wait_equal(&source, &target, &PGBENCH_TABLES, Duration::from_secs(90)).await;
    assert_no_batch_applied_twice(&target);
    assert_eq!(sluice.stop(), Some(0), "{}", sluice.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_column_added_mid_stream_and_a_target_down_for_30s_end_equal() {
    let source = TestDb::create();
    let target = TestDb::create();
    source.exec(
        "CREATE TABLE items (id int PRIMARY KEY, name varchar(20) NOT NULL, price numeric(10,2), \
         tags text[], doc jsonb, at timestamptz, blob bytea)",
    );
    let mut sluice = Sluice::new(&format!(
        "{}{}",
        source_config(&source, ""),
        sink_config(&target, "")
    ));
    sluice.start();
    source.wait_for_streaming().await;
    let client = source.client().await;
    let mut rng = Rng::new(7);
    let mut write = |n: u32, widened: bool| {
        let id = rng.below(200) as i32;
        let kind = rng.below(10);
        let statement = if kind < 6 {
            let extra = if widened { ", note" } else { "" };
            let extra_value = if widened {
                format!(", 'note {n}'")
            } else {
                String::new()
            };
            format!(
                "INSERT INTO items (id, name, price, tags, doc, at, blob{extra}) VALUES ({id}, 'n{n}', {n}.25, \
                 ARRAY['a{n}', NULL, 'b \"q\"'], '{{\"n\": {n}}}', now(), '\\x{n:04x}'{extra_value}) \
                 ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, price = EXCLUDED.price"
            )
        } else if kind < 9 {
            format!("UPDATE items SET price = price + 1, tags = tags || 'x'::text WHERE id = {id}")
        } else {
            format!("DELETE FROM items WHERE id = {id}")
        };
        statement
    };
    for n in 0..300 {
        client.batch_execute(&write(n, false)).await.unwrap();
    }
    client
        .batch_execute("ALTER TABLE items ADD COLUMN note text; ALTER TABLE items ALTER COLUMN name TYPE varchar(50)")
        .await
        .unwrap();
    for n in 300..600 {
        client.batch_execute(&write(n, true)).await.unwrap();
    }
    wait_equal(&source, &target, &["items"], Duration::from_secs(30)).await;
    assert_eq!(
        target.exec("SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'items'::regclass AND attname = 'name'"),
        "character varying(50)",
        "the widened type is applied"
    );

    // The target is unreachable for 30 seconds while the source keeps changing.
    admin(&format!(
        "ALTER DATABASE {0} ALLOW_CONNECTIONS false; SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{0}'",
        target.name
    ));
    let down_since = Instant::now();
    for n in 600..900 {
        client.batch_execute(&write(n, true)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(30).saturating_sub(down_since.elapsed())).await;
    assert!(
        sluice.is_running(),
        "the sink retries instead of stopping:\n{}",
        sluice.stderr()
    );
    admin(&format!(
        "ALTER DATABASE {} ALLOW_CONNECTIONS true",
        target.name
    ));
    wait_equal(&source, &target, &["items"], Duration::from_secs(60)).await;
    assert!(
        sluice.stderr().contains("cannot reach the target database"),
        "the outage is logged"
    );
    assert_eq!(sluice.stop(), Some(0), "{}", sluice.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_events_go_to_the_dead_letter_topic_or_stop_the_sink() {
    let source = TestDb::create();
    let target = TestDb::create();
    source.exec("CREATE TABLE t (id int PRIMARY KEY, v int)");
    // The target refuses v >= 100 (a constraint the source does not have).
    target.exec("CREATE TABLE t (id int PRIMARY KEY, v int CHECK (v < 100))");
    let mut sluice = Sluice::new(&format!(
        "{}{}",
        source_config(&source, "encoding = \"avro\""),
        sink_config(&target, "dead_letter_topic = \"replica.dead\"")
    ));
    sluice.start();
    source.wait_for_streaming().await;
    source.exec("INSERT INTO t SELECT g, g FROM generate_series(1, 50) g");
    source.exec("INSERT INTO t VALUES (51, 500)");
    source.exec("INSERT INTO t VALUES (52, 52)");
    wait_for(Duration::from_secs(30), "52 applied", || {
        target.exec("SELECT count(*) FROM t WHERE id = 52") == "1"
    })
    .await;
    assert_eq!(
        target.exec("SELECT count(*) FROM t"),
        "51",
        "all but the rejected row"
    );
    let dead = sluice.records("replica.dead");
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].1["after"], json!({"id": 51, "v": 500}));
    let headers = Command::new(sluice_integration_tests::sluice_bin())
        .args([
            "log",
            "tail",
            "replica.dead",
            "--from-beginning",
            "--format",
            "base64",
            "--dir",
        ])
        .arg(sluice.log_dir())
        .output()
        .unwrap();
    assert!(headers.status.success());
    assert_eq!(sluice.stop(), Some(0), "{}", sluice.stderr());
    assert!(
        sluice.stderr().contains("t_v_check"),
        "the error is logged: {}",
        sluice.stderr()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_sink_stops_alone_while_the_source_and_other_sinks_go_on() {
    let source = TestDb::create();
    let target = TestDb::create();
    source.exec("CREATE TABLE t (id int PRIMARY KEY, v int)");
    // The target refuses v >= 100, and there is no dead-letter topic: a definite failure.
    target.exec("CREATE TABLE t (id int PRIMARY KEY, v int CHECK (v < 100))");
    let port = free_port();
    let mut sluice = Sluice::new(&format!(
        "[api]\nlisten = \"127.0.0.1:{port}\"\n\n{}{}{}",
        source_config(&source, ""),
        sink_config(&target, ""),
        jsonl_sink("\"src.public.t\""),
    ));
    sluice.start();
    source.wait_for_streaming().await;
    source.exec("INSERT INTO t VALUES (1, 500)");
    wait_for(
        Duration::from_secs(30),
        "/health to report the sink",
        || http_get(port, "/health").0.contains("503"),
    )
    .await;
    let (_, body) = http_get(port, "/health");
    assert!(
        body.contains("sink replica failed at") && body.contains("t_v_check"),
        "{body}"
    );
    assert!(
        body.contains("dead_letter_topic"),
        "the fix is named: {body}"
    );
    let metrics = http_get(port, "/metrics").1;
    assert!(
        metrics.contains("sluice_sink_failed{sink=\"replica\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("sluice_sink_failed{sink=\"file\"} 0"),
        "{metrics}"
    );

    // The source and the other sink go on, and the slot keeps advancing.
    source.exec("INSERT INTO t SELECT g, g FROM generate_series(2, 100) g");
    let written = source.exec("SELECT pg_current_wal_lsn()");
    wait_for(
        Duration::from_secs(30),
        "the file sink to get every row",
        || {
            std::fs::read_to_string(sluice.path("out.jsonl"))
                .is_ok_and(|text| text.lines().count() >= 100)
        },
    )
    .await;
    wait_for(Duration::from_secs(30), "the slot to confirm the new rows", || {
        source.exec(&format!(
            "SELECT confirmed_flush_lsn >= '{written}' FROM pg_replication_slots WHERE slot_name = '{}'",
            source.name
        )) == "t"
    })
    .await;
    assert!(sluice.is_running(), "{}", sluice.stderr());
    let report = status(&sluice);
    assert!(
        report.contains("FAILED at") && report.contains("t_v_check"),
        "{report}"
    );
    assert!(report.contains("of WAL"), "retained WAL is shown: {report}");

    // Stopping reports the failure; fixed and restarted, the sink catches up.
    assert_eq!(sluice.stop(), Some(1), "{}", sluice.stderr());
    target.exec("ALTER TABLE t DROP CONSTRAINT t_v_check");
    sluice.start();
    wait_equal(&source, &target, &["t"], Duration::from_secs(30)).await;
    assert!(!status(&sluice).contains("FAILED"), "{}", status(&sluice));
    assert_eq!(sluice.stop(), Some(0), "{}", sluice.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactional_mode_never_shows_half_a_transaction() {
    transactional_money_moves("max_batch_events = 100000", "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_larger_than_a_source_batch_and_the_sinks_budget_still_apply_whole() {
    // Each ~4,000-row transaction reaches the log in ~14 appends, and the sink holds at most
    // ~1 MB back: it applies each transaction in parts inside one target transaction.
    let stderr =
        transactional_money_moves("max_batch_events = 300", "max_pending_bytes = 1000000").await;
    assert!(
        stderr.contains("applying it in parts inside one destination transaction"),
        "{stderr}"
    );
}

/// Transactions that each move money from every row of one table to every row of another,
/// replicated in transactional mode: the target's total never changes. `source_extra` and
/// `sink_extra` go into the source and sink sections.
async fn transactional_money_moves(source_extra: &str, sink_extra: &str) -> String {
    let source = TestDb::create();
    let target = TestDb::create();
    source.exec(
        "CREATE TABLE a (id int PRIMARY KEY, balance bigint NOT NULL, pad text); \
         CREATE TABLE b (id int PRIMARY KEY, balance bigint NOT NULL, pad text); \
         INSERT INTO a SELECT g, 1000, repeat('x', 1500) FROM generate_series(1, 2000) g; \
         INSERT INTO b SELECT g, 1000, repeat('y', 300) FROM generate_series(1, 2000) g;",
    );
    let mut sluice = Sluice::new(&format!(
        "{}{}",
        source_config(&source, &format!("encoding = \"avro\"\n{source_extra}")),
        sink_config(&target, &format!("transactional = true\n{sink_extra}"))
    ));
    sluice.start();
    wait_for(
        Duration::from_secs(60),
        "the snapshot in the target",
        || count(&target, "a") == "2000" && count(&target, "b") == "2000",
    )
    .await;
    source.wait_for_streaming().await;
    // Each transaction moves money from every row of a to every row of b: ~4,000 row changes,
    // about 3 MB of records per table, so reads of a partition (4 MiB) end inside transactions.
    let writer = {
        let url = source.url();
        sluice_core::task::spawn_in_span(async move {
            let client = sluice_integration_tests::writer_client(&url).await;
            for round in 1..=6 {
                client
                    .batch_execute(&format!(
                        "BEGIN; UPDATE a SET balance = balance - {round}; UPDATE b SET balance = balance + {round}; COMMIT"
                    ))
                    .await
                    .unwrap();
            }
        })
    };
    let expected_total = "4000000";
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut observations = 0;
    loop {
        let total =
            target.exec("SELECT (SELECT sum(balance) FROM a) + (SELECT sum(balance) FROM b)");
        assert_eq!(
            total, expected_total,
            "the target showed part of a transaction"
        );
        observations += 1;
        if target.exec("SELECT min(balance) FROM b") == "1021" {
            break;
        }
        assert!(Instant::now() < deadline, "not caught up");
    }
    writer.await.unwrap();
    assert!(observations > 3);
    assert_eq!(sluice.stop(), Some(0), "{}", sluice.stderr());
    sluice.stderr()
}

/// Queries whose rows must be the same on both sides after the first migration: every column
/// but the renamed one, and that one where rows were written after the rename.
const AFTER_FIRST_MIGRATION: [&str; 2] = [
    "SELECT id, c FROM t ORDER BY id",
    "SELECT id, a2 FROM t WHERE id = 1 OR id >= 4 ORDER BY id",
];
const AFTER_SECOND_MIGRATION: [&str; 2] = [
    "SELECT id, b FROM t ORDER BY id",
    "SELECT id, a FROM t WHERE id >= 8 ORDER BY id",
];

/// Waits until `t` has the same columns on both sides and each query gives the same rows.
async fn wait_same_rows(source: &TestDb, target: &TestDb, queries: &[&str]) {
    let columns = "SELECT string_agg(column_name, ',' ORDER BY column_name) \
                   FROM information_schema.columns WHERE table_schema = 'public' AND table_name = 't'";
    wait_for(
        Duration::from_secs(60),
        "the same rows in the target",
        || {
            target.exec(columns) == source.exec(columns)
                && queries.iter().all(|q| target.exec(q) == source.exec(q))
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_changes_inside_one_batch_apply_each_row_with_its_own_version() {
    let source = TestDb::create();
    let target = TestDb::create();
    source.exec("CREATE TABLE t (id int PRIMARY KEY, a int, b text)");
    // First without the sink: it then catches up across the migration from the log.
    let mut sluice = Sluice::new(&source_config(&source, "encoding = \"avro\""));
    sluice.start();
    source.wait_for_streaming().await;
    source.exec(MIGRATION_IN_ONE_TRANSACTION);
    wait_for(Duration::from_secs(30), "the migration in the log", || {
        sluice.records("src.public.t").len() >= 6
    })
    .await;
    assert_eq!(sluice.stop(), Some(0), "{}", sluice.stderr());
    let config = std::fs::read_to_string(&sluice.config).unwrap();
    std::fs::write(&sluice.config, config + &sink_config(&target, "")).unwrap();
    sluice.start();
    // pgoutput does not tell a rename from a drop and an add: rows written before the rename
    // and not since keep NULL in the renamed column at the target (docs/operations.md).
    wait_same_rows(&source, &target, &AFTER_FIRST_MIGRATION).await;
    assert_eq!(
        target.exec("SELECT data_type FROM information_schema.columns WHERE table_name = 't' AND column_name = 'a2'"),
        "bigint"
    );
    // And while the sink streams: the same migration backwards, in one transaction.
    source.exec(
        "BEGIN; INSERT INTO t VALUES (6, 6, 'six'); ALTER TABLE t DROP COLUMN c; \
         INSERT INTO t VALUES (7, 7); ALTER TABLE t RENAME COLUMN a2 TO a; \
         ALTER TABLE t ADD COLUMN b text; INSERT INTO t VALUES (8, 8, 'eight'); COMMIT;",
    );
    wait_same_rows(&source, &target, &AFTER_SECOND_MIGRATION).await;
    assert!(sluice.is_running(), "{}", sluice.stderr());
    sluice_integration_tests::assert_schema_changes_at_most(&sluice, 16);
}

/// `sluice status` on `sluice`'s config.
fn status(sluice: &Sluice) -> String {
    let out = Command::new(sluice_integration_tests::sluice_bin())
        .args(["status", "-c"])
        .arg(&sluice.config)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_counts_what_the_target_has_not_committed() {
    let source = TestDb::create();
    let target = TestDb::create();
    source.exec("CREATE TABLE t (id int PRIMARY KEY)");
    let port = sluice_integration_tests::free_port();
    let mut sluice = Sluice::new(&format!(
        "[api]\nlisten = \"127.0.0.1:{port}\"\n\n{}{}",
        source_config(&source, "encoding = \"avro\""),
        sink_config(&target, "")
    ));
    sluice.start();
    source.wait_for_streaming().await;
    source.exec("INSERT INTO t VALUES (0)");
    wait_equal(&source, &target, &["t"], Duration::from_secs(30)).await;

    // The target is stuck: a lock the sink waits behind.
    let blocker = target.client().await;
    blocker
        .batch_execute("BEGIN; LOCK TABLE public.t IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    for chunk in 0..20 {
        source.exec(&format!(
            "INSERT INTO t SELECT generate_series({}, {})",
            chunk * 100 + 1,
            chunk * 100 + 100
        ));
    }
    let behind = |text: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with("sink replica"))?;
        line.split(", ").nth(1)?.split(' ').next()?.parse().ok()
    };
    wait_for(
        Duration::from_secs(30),
        "status to show the unapplied rows",
        || behind(&status(&sluice)).is_some_and(|n| n >= 1900),
    )
    .await;
    let lag_metric = || {
        let metrics = sluice_integration_tests::http_get(port, "/metrics").1;
        metrics
            .lines()
            .find(|l| l.starts_with("sluice_sink_lag_records{sink=\"replica\"}"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
    };
    wait_for(
        Duration::from_secs(30),
        "the lag metric to show them",
        || lag_metric().is_some_and(|lag| lag >= 1900.0),
    )
    .await;

    blocker.batch_execute("COMMIT").await.unwrap();
    wait_equal(&source, &target, &["t"], Duration::from_secs(60)).await;
    wait_for(Duration::from_secs(30), "lag to return to 0", || {
        behind(&status(&sluice)) == Some(0) && lag_metric() == Some(0.0)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_fed_from_another_log_stops_its_sink_instead_of_skipping_records() {
    let source = TestDb::create();
    let target = TestDb::create();
    source.exec(
        "CREATE TABLE t (id int PRIMARY KEY, v int); \
         INSERT INTO t SELECT g, g FROM generate_series(1, 50) g",
    );
    let mut first = Sluice::new(&format!(
        "{}{}",
        source_config(&source, ""),
        sink_config(&target, "")
    ));
    first.start();
    source.wait_for_streaming().await;
    // Changes outnumber the rows, as they do: the target's offsets end up past the rows'
    // count, where a new log's snapshot ends.
    for n in 0..250 {
        source.exec(&format!("UPDATE t SET v = v + 1 WHERE id = {}", n % 50 + 1));
    }
    wait_equal(&source, &target, &["t"], Duration::from_secs(60)).await;
    assert_eq!(first.stop(), Some(0), "{}", first.stderr());
    let before = checksum(&target, "t");

    // A new log (another directory, its own slot) under the same target: its snapshot ends
    // below the offsets the target holds.
    let port = free_port();
    let token = "a-long-random-admin-token";
    let mut second = Sluice::new(&format!(
        "[api]\nlisten = \"127.0.0.1:{port}\"\ntoken_file = \"{{dir}}/token\"\n\n{}{}",
        source_config(&source, &format!("slot = \"{}_again\"", source.name)),
        sink_config(&target, "")
    ));
    std::fs::write(second.path("token"), token).unwrap();
    second.start();
    source.exec("UPDATE t SET v = -v WHERE id <= 10");
    wait_for(Duration::from_secs(60), "the sink to stop", || {
        second
            .stderr()
            .contains("the target was fed from another log")
    })
    .await;
    let log = second.stderr();
    assert!(
        log.contains("its target has applied src.public.t[0] up to offset")
            && log.contains("Point the sink at a fresh target, or reset its offsets"),
        "{log}"
    );
    let (_, status) = sluice_integration_tests::sluice_command(&["status"], &second.config);
    assert!(status.contains("fed from another log"), "{status}");
    // Nothing was written: the target is as the first log left it.
    assert_eq!(checksum(&target, "t"), before);
    // The way out: its offsets reset, the failed sink feeds the target again from the new log.
    let ask = |method: &str, path: &str| {
        sluice_integration_tests::http_request(port, method, path, Some(token), "")
    };
    let (code, body) = ask("DELETE", "/connectors/replica/offsets");
    assert_eq!(code, 200, "{body}");
    let (code, body) = ask("POST", "/connectors/replica/restart");
    assert_eq!(code, 202, "{body}");
    wait_equal(&source, &target, &["t"], Duration::from_secs(60)).await;
    second.stop();
    source.exec(&format!(
        "SELECT pg_drop_replication_slot('{}_again')",
        source.name
    ));
}
