//! What production does to a Postgres source every week: the server restarts, a database sits
//! idle while others write, a transaction fills its batches exactly. Each test reproduces an
//! observation from the field (issue 14) against a real server.

use std::time::{Duration, Instant};

use sluice_integration_tests::{
    admin, events, sluice_command, source_config, wait_for, PrivateCluster, Sluice, TestDb,
};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_sluice_did_not_create_is_never_dropped_or_reused() {
    let db = TestDb::create();
    db.exec("CREATE TABLE t (id int PRIMARY KEY)");
    let slot = format!("{}_other_tool", db.name);
    db.exec(&format!(
        "SELECT pg_create_logical_replication_slot('{slot}', 'pgoutput')"
    ));
    db.exec("INSERT INTO t VALUES (1)");
    let before = sluice_integration_tests::slot_identity(&db, &slot);
    for snapshot in ["initial", "never", "when_needed"] {
        let mut sluice = Sluice::new(&source_config(
            &db,
            &format!("slot = \"{slot}\"\nsnapshot = \"{snapshot}\""),
        ));
        let (code, stderr) = sluice_integration_tests::run_to_exit(&mut sluice);
        assert_eq!(code, Some(1), "snapshot = {snapshot}:\n{stderr}");
        assert!(
            stderr.contains(&format!("replication slot {slot} already exists"))
                && stderr.contains("never drops or reuses a slot it cannot prove it owns")
                && stderr.contains("pg_drop_replication_slot"),
            "snapshot = {snapshot}: the error names the slot and the options:\n{stderr}"
        );
        assert_eq!(
            sluice_integration_tests::slot_identity(&db, &slot),
            before,
            "the other tool's slot is untouched"
        );
        assert!(sluice.records("src.public.t").is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_pipeline_with_the_same_source_name_leaves_the_running_ones_slot_alone() {
    let db = TestDb::create();
    db.exec("CREATE TABLE t (id int PRIMARY KEY)");
    let mut first = Sluice::new(&source_config(&db, ""));
    first.start();
    db.wait_for_streaming().await;
    let holder = db.exec(&format!(
        "SELECT active_pid FROM pg_replication_slots WHERE slot_name = '{}'",
        db.name
    ));
    let before = sluice_integration_tests::slot_identity(&db, &db.name);

    // The same source with a log of its own (a copy of the config on another machine, say).
    let mut second = Sluice::new(&source_config(&db, ""));
    let (code, stderr) = sluice_integration_tests::run_to_exit(&mut second);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "replication slot {} is in use by process {holder}",
            db.name
        )) && stderr.contains("application \"sluice\""),
        "the error names the slot and who holds it:\n{stderr}"
    );

    assert_eq!(
        sluice_integration_tests::slot_identity(&db, &db.name),
        before
    );
    db.exec("INSERT INTO t VALUES (1)");
    wait_for(
        Duration::from_secs(20),
        "the first pipeline to go on",
        || ids(&first, "src.public.t") == [1],
    )
    .await;
    assert!(first.is_running(), "{}", first.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_keep_their_reason_and_bad_credentials_stop_at_once() {
    let cluster = PrivateCluster::with_password("right-secret");
    cluster.exec("postgres", "CREATE DATABASE shop");
    cluster.exec("shop", "CREATE TABLE t (id int PRIMARY KEY)");
    cluster.exec(
        "postgres",
        "CREATE ROLE app LOGIN REPLICATION PASSWORD 'app-secret'; \
         REVOKE CONNECT ON DATABASE shop FROM PUBLIC",
    );
    let port = cluster.port;
    // Each case its own slot: a case whose source runs leaves its slot behind.
    let slots = std::cell::Cell::new(0);
    let source = |url: &str| {
        slots.set(slots.get() + 1);
        format!(
            "[[sources]]\nname = \"src\"\nkind = \"postgres\"\nurl = \"{url}\"\ntables = [\"public.*\"]\nencoding = \"avro\"\nslot = \"case_{}\"\n",
            slots.get()
        )
    };
    // A source's failure stops the pipeline; a sink's stops that sink alone (failure domains):
    // sluice goes on and reports it at once, and exits 1 when stopped.
    let cases = [
        (
            "a wrong source password",
            source(&format!("postgres://postgres:wrong-secret@127.0.0.1:{port}/shop")),
            "password authentication failed for user \"postgres\" (SQLSTATE 28P01)",
        ),
        (
            "a user without CONNECT",
            source(&format!("postgres://app:app-secret@127.0.0.1:{port}/shop")),
            "permission denied for database \"shop\" (SQLSTATE 42501); detail: User does not have CONNECT privilege",
        ),
        (
            "a wrong sink password",
            source(&cluster.url("shop"))
                + &format!(
                    "[[sinks]]\nname = \"replica\"\nkind = \"postgres\"\nurl = \"postgres://postgres:wrong-secret@127.0.0.1:{port}/postgres\"\ntopics = [\"src.public.*\"]\n"
                ),
            "password authentication failed for user \"postgres\" (SQLSTATE 28P01)",
        ),
        (
            "an unwritable JSONL path",
            source(&cluster.url("shop"))
                + "[[sinks]]\nname = \"file\"\nkind = \"jsonl\"\npath = \"{dir}/sluice.toml/out.jsonl\"\ntopics = [\"src.public.*\"]\n",
            "cannot create directory for",
        ),
    ];
    for (what, body, reason) in cases {
        let sink_case = body.contains("[[sinks]]");
        let (code, output) = if sink_case {
            let mut sluice = Sluice::new(&body);
            sluice.start();
            wait_for(Duration::from_secs(30), what, || {
                sluice.stderr().contains(reason)
            })
            .await;
            assert!(
                sluice.is_running(),
                "{what}: a sink's failure stops only the sink:\n{}",
                sluice.stderr()
            );
            assert!(
                sluice
                    .stderr()
                    .contains("it stays stopped until sluice is restarted"),
                "{what}:\n{}",
                sluice.stderr()
            );
            (sluice.stop(), sluice.stderr())
        } else {
            let sluice = Sluice::new(&body);
            sluice_command(&["run"], &sluice.config)
        };
        assert_eq!(code, Some(1), "{what}:\n{output}");
        assert!(
            output.contains(reason),
            "{what}: expected {reason:?} in:\n{output}"
        );
        assert!(!output.contains("db error"), "{what}:\n{output}");
        for secret in ["wrong-secret", "app-secret", "right-secret"] {
            assert!(
                !output.contains(secret),
                "{what}: a password in the output:\n{output}"
            );
        }
    }
}

#[test]
fn no_output_of_sluice_contains_a_password() {
    let urls = [
        "postgres://u@127.0.0.1/db?password=hunter2&port=notaport",
        "postgres://u@127.0.0.1:1/db?password=hunter2",
        "postgres://u:hunter2@127.0.0.1:1/db",
        "host=127.0.0.1 port=xx password=hunter2 user=u",
        "host=127.0.0.1 port=1 password=hunter2 user=u dbname=db",
        "host=127.0.0.1 password='hunter2 user=u",
        "postgres://u:hunter2@[::1/db",
    ];
    for url in urls {
        for (kind, sink) in [("source", false), ("sink", true)] {
            let body = if sink {
                format!(
                    "[[sources]]\nname = \"src\"\nkind = \"postgres\"\nurl = \"postgres://u@127.0.0.1:1/db\"\nencoding = \"avro\"\n\
                     [[sinks]]\nname = \"r\"\nkind = \"postgres\"\nurl = \"{url}\"\ntopics = [\"src.public.*\"]\n"
                )
            } else {
                format!("[[sources]]\nname = \"src\"\nkind = \"postgres\"\nurl = \"{url}\"\n")
            };
            let sluice = Sluice::new(&body);
            for args in [
                &["check"][..],
                &["check", "--connect"],
                &["run"],
                &["status"],
            ] {
                // Valid URLs pass `check`; the rest fail. None prints the password.
                let (_, output) = sluice_command(args, &sluice.config);
                assert!(
                    !output.contains("hunter2"),
                    "{kind} url {url}, sluice {args:?} printed the password:\n{output}"
                );
            }
        }
    }
}

/// The tables publication `publication` publishes, comma-separated.
fn published(db: &TestDb, publication: &str) -> String {
    db.exec(&format!(
        "SELECT coalesce(string_agg(tablename, ',' ORDER BY tablename), '') FROM pg_publication_tables WHERE pubname = '{publication}'"
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyless_tables_are_left_out_and_the_applications_writes_keep_working() {
    let db = TestDb::create();
    db.exec(
        "CREATE TABLE k (id int PRIMARY KEY); CREATE TABLE nokey (v int); \
         CREATE TABLE full_identity (v int); ALTER TABLE full_identity REPLICA IDENTITY FULL; \
         CREATE TABLE excluded_audit (id int PRIMARY KEY); \
         INSERT INTO nokey VALUES (1), (2); INSERT INTO full_identity VALUES (1)",
    );
    let mut sluice = Sluice::new(&source_config(&db, "exclude = [\"public.excluded_*\"]"));
    sluice.start();
    db.wait_for_streaming().await;
    assert_eq!(published(&db, "sluice_src"), "full_identity,k");
    // The application's own writes to the keyless table still work.
    db.exec("UPDATE nokey SET v = 3 WHERE v = 1; DELETE FROM nokey WHERE v = 2");
    // So do writes to a keyless table created while sluice runs…
    db.exec("CREATE TABLE later (v int); INSERT INTO later VALUES (1); UPDATE later SET v = 2; DELETE FROM later");
    // …and a keyed one joins the capture.
    db.exec("CREATE TABLE later_keyed (id int PRIMARY KEY)");
    wait_for(
        Duration::from_secs(30),
        "the new keyed table to be published",
        || published(&db, "sluice_src") == "full_identity,k,later_keyed",
    )
    .await;
    db.exec("INSERT INTO later_keyed VALUES (7); INSERT INTO k VALUES (1); UPDATE full_identity SET v = 5");
    wait_for(
        Duration::from_secs(30),
        "rows of the captured tables",
        || ids(&sluice, "src.public.later_keyed") == [7] && ids(&sluice, "src.public.k") == [1],
    )
    .await;
    let stderr = sluice.stderr();
    assert!(
        stderr.contains("table left out") && stderr.contains("public.nokey"),
        "{stderr}"
    );
    assert!(sluice.records("src.public.nokey").is_empty());
    assert!(sluice.records("src.public.excluded_audit").is_empty());

    // A restart is not refused for the keyless tables, and status names them.
    assert_eq!(sluice.stop(), Some(0), "{}", sluice.stderr());
    sluice.start();
    db.wait_for_streaming().await;
    let status = std::process::Command::new(sluice_integration_tests::sluice_bin())
        .args(["status", "-c"])
        .arg(&sluice.config)
        .output()
        .unwrap();
    let status = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(
        status.contains("left out (no primary key")
            && status.contains("public.later, public.nokey"),
        "{status}"
    );
    assert!(sluice.is_running(), "{}", sluice.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replication_user_without_superuser_streams_from_a_publication_made_for_it() {
    let db = TestDb::create();
    let role = format!("{}_repl", db.name);
    admin(&format!("CREATE ROLE {role} LOGIN REPLICATION"));
    db.exec(&format!(
        "CREATE TABLE t (id int PRIMARY KEY); GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}"
    ));
    let url = format!("postgres://{role}@127.0.0.1:5432/{}", db.name);
    let config = |extra: &str| {
        format!(
            "[[sources]]\nname = \"src\"\nkind = \"postgres\"\nurl = \"{url}\"\nslot = \"{}\"\n{extra}\n",
            db.name
        )
    };
    // With a publication of its own to create, check --connect says it cannot, and how to fix it.
    let sluice = Sluice::new(&config(""));
    let (code, output) = sluice_command(&["check", "--connect"], &sluice.config);
    assert_ne!(code, Some(0), "{output}");
    assert!(
        output.contains(&format!(
            "user {role} cannot create or update publication sluice_src"
        )) && output.contains("CREATE PUBLICATION \"sluice_src\" FOR TABLE \"public\".\"t\""),
        "{output}"
    );
    drop(sluice);

    // An administrator creates it once; sluice needs nothing more.
    db.exec("CREATE PUBLICATION for_sluice FOR TABLE t");
    let mut sluice = Sluice::new(&config("publication = \"for_sluice\""));
    let (code, output) = sluice_command(&["check", "--connect"], &sluice.config);
    assert_eq!(code, Some(0), "{output}");
    sluice.start();
    db.wait_for_streaming().await;
    db.exec("INSERT INTO t VALUES (1), (2)");
    wait_for(
        Duration::from_secs(30),
        "rows streamed by the unprivileged user",
        || ids(&sluice, "src.public.t") == [1, 2],
    )
    .await;
    sluice.kill();
    drop(sluice);
    db.exec(&format!("DROP OWNED BY {role}"));
    drop(db);
    admin(&format!("DROP ROLE IF EXISTS {role}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_connect_names_every_missing_privilege_at_once() {
    let db = TestDb::create();
    let role = format!("{}_bare", db.name);
    admin(&format!("CREATE ROLE {role} LOGIN"));
    db.exec("CREATE TABLE t (id int PRIMARY KEY); CREATE TABLE u (id int PRIMARY KEY)");
    let sluice = Sluice::new(&format!(
        "[[sources]]\nname = \"src\"\nkind = \"postgres\"\nurl = \"postgres://{role}@127.0.0.1:5432/{}\"\nslot = \"{}\"\n",
        db.name, db.name
    ));
    let (code, output) = sluice_command(&["check", "--connect"], &sluice.config);
    assert_ne!(code, Some(0), "{output}");
    for expected in [
        "3 problems:".to_owned(),
        format!("user {role} may not start replication; to fix: ALTER ROLE \"{role}\" WITH REPLICATION"),
        format!("user {role} may not read public.t, public.u; to fix: GRANT SELECT ON public.t, public.u TO \"{role}\""),
        format!("user {role} cannot create or update publication sluice_src"),
    ] {
        assert!(output.contains(&expected), "missing {expected:?} in:\n{output}");
    }
    drop(sluice);
    drop(db);
    admin(&format!("DROP ROLE IF EXISTS {role}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_whose_names_differ_only_in_symbols_keep_their_own_topics_and_column_names() {
    let db = TestDb::create();
    db.exec(
        "CREATE TABLE \"Größe 🚀\" (id int PRIMARY KEY, \"日本語\" text); \
         CREATE TABLE \"Größe 🔥\" (id int PRIMARY KEY, \"日本語\" text); \
         CREATE TABLE \"a b\" (id int PRIMARY KEY); CREATE TABLE a_b (id int PRIMARY KEY)",
    );
    let mut sluice = Sluice::new(
        &(source_config(&db, "encoding = \"avro\"")
            + &sluice_integration_tests::jsonl_sink("\"src.public.*\"")),
    );
    sluice.start();
    db.wait_for_streaming().await;
    db.exec(
        "INSERT INTO \"Größe 🚀\" VALUES (1, 'rocket'); INSERT INTO \"Größe 🔥\" VALUES (2, 'fire'); \
         INSERT INTO \"a b\" VALUES (3); INSERT INTO a_b VALUES (4)",
    );
    let lines = || -> Vec<serde_json::Value> {
        std::fs::read_to_string(sluice.path("out.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    wait_for(Duration::from_secs(30), "four rows in the file", || {
        lines().len() == 4
    })
    .await;
    let topics: Vec<String> = std::process::Command::new(sluice_integration_tests::sluice_bin())
        .args(["log", "topics", "-c"])
        .arg(&sluice.config)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("src.public."))
        .map(|l| l.split('\t').next().unwrap().to_owned())
        .collect();
    assert_eq!(topics.len(), 4, "one topic per table: {topics:?}");
    let rocket = lines()
        .into_iter()
        .find(|l| l["after"]["id"] == 1)
        .expect("the rocket row");
    assert_eq!(rocket["after"]["日本語"], "rocket", "{rocket}");
    assert_eq!(rocket["source"]["table"], "Größe 🚀");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_connect_probes_the_sinks_too() {
    let db = TestDb::create();
    db.exec("CREATE TABLE t (id int PRIMARY KEY)");
    let body = source_config(&db, "encoding = \"avro\"")
        + "[[sinks]]\nname = \"file\"\nkind = \"jsonl\"\npath = \"{dir}/sluice.toml/out.jsonl\"\ntopics = [\"src.public.*\"]\n"
        + "[[sinks]]\nname = \"replica\"\nkind = \"postgres\"\nurl = \"postgres://postgres@127.0.0.1:5432/no_such_database_here\"\ntopics = [\"src.public.*\"]\n";
    let sluice = Sluice::new(&body);
    let (code, output) = sluice_command(&["check", "--connect"], &sluice.config);
    assert_eq!(code, Some(1), "{output}");
    assert!(output.contains("source src: ok"), "{output}");
    assert!(
        output.contains("sink file: FAILED") && output.contains("is not a directory"),
        "{output}"
    );
    assert!(
        output.contains("sink replica: FAILED")
            && output
                .contains("database \"no_such_database_here\" does not exist (SQLSTATE 3D000)"),
        "{output}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_the_server_invalidated_stops_the_source_with_the_way_out_or_is_resnapshotted() {
    let cluster = PrivateCluster::start();
    cluster.exec(
        "postgres",
        "ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'",
    );
    cluster.exec("postgres", "SELECT pg_reload_conf()");
    cluster.exec("postgres", "CREATE DATABASE shop");
    cluster.exec("shop", "CREATE TABLE t (id int PRIMARY KEY, pad text)");
    cluster.exec(
        "shop",
        "INSERT INTO t SELECT g, 'x' FROM generate_series(1, 10) g",
    );
    let source = |extra: &str| {
        format!(
            "[[sources]]\nname = \"src\"\nkind = \"postgres\"\nurl = \"{}\"\ntables = [\"public.*\"]\n{extra}\n",
            cluster.url("shop")
        )
    };
    let mut sluice = Sluice::new(&source(""));
    sluice.start();
    wait_for(Duration::from_secs(30), "the snapshot", || {
        ids(&sluice, "src.public.t").len() == 10
    })
    .await;
    let (_, status) = sluice_command(&["status"], &sluice.config);
    assert!(
        status.contains("more before the server invalidates it (max_slot_wal_keep_size)"),
        "{status}"
    );
    assert_eq!(sluice.stop(), Some(0), "{}", sluice.stderr());

    // While sluice is down the server writes far more WAL than the slot may keep.
    for _ in 0..4 {
        cluster.exec(
            "shop",
            "INSERT INTO t SELECT g, repeat('y', 500) FROM generate_series(1000, 6000) g \
             ON CONFLICT (id) DO UPDATE SET pad = excluded.pad",
        );
        cluster.exec("shop", "SELECT pg_switch_wal()");
    }
    cluster.exec("shop", "CHECKPOINT");
    assert_eq!(
        cluster.exec("postgres", "SELECT wal_status FROM pg_replication_slots"),
        "lost",
        "the server invalidated the slot"
    );

    let (code, stderr) = sluice_integration_tests::run_to_exit(&mut sluice);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("was invalidated by the server")
            && stderr.contains("max_slot_wal_keep_size")
            && stderr.contains("snapshot = \"when_needed\""),
        "{stderr}"
    );
    let (_, status) = sluice_command(&["status"], &sluice.config);
    assert!(status.contains("INVALIDATED by the server"), "{status}");

    // With snapshot = when_needed it drops the slot and snapshots again.
    let config = std::fs::read_to_string(&sluice.config).expect("the config");
    std::fs::write(
        &sluice.config,
        config.replace(
            "tables = [\"public.*\"]",
            "tables = [\"public.*\"]\nsnapshot = \"when_needed\"",
        ),
    )
    .expect("rewrite the config");
    sluice.start();
    wait_for(Duration::from_secs(60), "the new snapshot", || {
        ids(&sluice, "src.public.t").len() >= 10 + 5011
    })
    .await;
    assert!(
        sluice
            .stderr()
            .contains("dropping it and taking a new snapshot"),
        "{}",
        sluice.stderr()
    );
    assert_eq!(sluice.stop(), Some(0), "{}", sluice.stderr());
}
