//! The log on Apache Kafka (`[log] kind = "kafka"`): a Postgres source appends into topics of
//! the broker (records and checkpoint in one Kafka transaction) and a Postgres sink reads them
//! back, across `kill -9`s of sluice under a writer: the replica equals the source, and a
//! `read_committed` consumer of the log's topic sees each change exactly once.

use std::time::Duration;

use sluice_integration_tests::kafka::{consume, replica_pipeline, services, table_t as rows};
use sluice_integration_tests::{wait_for, writer_client, Rng, Sluice, TestDb};

const LOG: &str = "kind = \"kafka\"\nbrokers = \"127.0.0.1:9092\"\npartitions = 2";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_on_a_kafka_log_survives_kill_9_with_each_change_once() {
    services(&["up", "kafka"]);
    let source = TestDb::create();
    let replica = TestDb::create();
    source.exec(
        "CREATE TABLE t (id int PRIMARY KEY, v bigint NOT NULL); \
         INSERT INTO t SELECT g, 0 FROM generate_series(1, 2000) g",
    );
    // Topics are the cluster's: a source name of this test's own.
    let name = format!("k{}", &source.name[source.name.len() - 5..]);
    let config = replica_pipeline(&name, &source, &replica)
        + &format!(
            "\n[[log.topic_settings]]\ntopics = \"{name}.public.*\"\npartitions = 3\n\
             config = {{ \"retention.ms\" = \"86400000\" }}\n"
        );
    let mut sluice = Sluice::with_log(LOG, &config);
    sluice.start();
    wait_for(
        Duration::from_secs(120),
        "the snapshot in the replica",
        || rows(&replica).lines().count() == 2000,
    )
    .await;

    // Every committed statement adds one to one row's v: the sum counts the changes.
    let writer = {
        let url = source.url();
        sluice_core::task::spawn_in_span(async move {
            let client = writer_client(&url).await;
            let mut rng = Rng::new(0x10c);
            let start = std::time::Instant::now();
            let mut changes = 0u64;
            while start.elapsed() < Duration::from_secs(16) {
                let id = rng.below(2000) + 1;
                if client
                    .batch_execute(&format!("UPDATE t SET v = v + 1 WHERE id = {id}"))
                    .await
                    .is_ok()
                {
                    changes += 1;
                }
            }
            changes
        })
    };
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_secs(4)).await;
        sluice.kill();
        sluice.start();
    }
    let changes = writer.await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while rows(&replica) != rows(&source) {
        let log = sluice.stderr();
        let notable: Vec<&str> = log.lines().rev().take(60).collect();
        assert!(
            std::time::Instant::now() < deadline,
            "the replica differs from the source ({} vs {} rows); sluice's log ends:\n{}",
            rows(&replica).lines().count(),
            rows(&source).lines().count(),
            notable.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // The log's topic on the broker: the snapshot's rows and each change exactly once.
    let topic = format!("{name}.public.t");
    let records = consume(&topic, None);
    let values: Vec<&serde_json::Value> = records.iter().map(|(_, _, value)| value).collect();
    let ops = |op: &str| {
        values
            .iter()
            .filter(|v| {
                v.as_str()
                    .and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok())
                    .is_some_and(|v| v["op"] == op)
            })
            .count() as u64
    };
    assert_eq!(ops("r"), 2000, "snapshot rows");
    assert_eq!(ops("u"), changes, "updates, each once");
    // `sluice status` reads the same cluster: the caught-up sink is nothing behind (its offsets
    // go past the transaction markers after its last records).
    let status = || sluice_integration_tests::sluice_command(&["status"], &sluice.config);
    // (Three partitions: the topic's own settings, over the log's default of two.)
    let caught_up = format!("sink {name}_replica (postgres): 3 partition(s), 0 record(s) behind");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (code, said) = status();
        assert_eq!(code, Some(0), "{said}");
        assert!(said.contains("log on Kafka at 127.0.0.1:9092"), "{said}");
        if said.contains(&caught_up) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{said}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // `sluice log` reads the same topics.
    // (Read while it prints: tens of thousands of lines fill a pipe nobody drains.)
    let out = std::process::Command::new(sluice_integration_tests::sluice_bin())
        .args(["log", "tail", &topic, "--from-beginning", "-c"])
        .arg(&sluice.config)
        .output()
        .expect("sluice log tail");
    let tail = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{tail}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = tail.lines().filter(|line| line.starts_with('{')).count() as u64;
    assert_eq!(printed, 2000 + changes, "every record of the topic");
    let (code, described) =
        sluice_integration_tests::sluice_command(&["log", "describe", &topic], &sluice.config);
    assert_eq!(code, Some(0), "{described}");
    assert_eq!(described.matches("  partition ").count(), 3, "{described}");
    assert_eq!(sluice.stop(), Some(0), "{}", sluice.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mariadb_source_keeps_its_schema_history_on_a_kafka_log_across_a_kill() {
    services(&["up", "kafka"]);
    let db = sluice_integration_tests::MariaDb::create();
    let replica = TestDb::create();
    db.exec(
        "CREATE TABLE t (id int PRIMARY KEY, v int NOT NULL); INSERT INTO t VALUES (1, 1), (2, 2)",
    );
    // The source's name is the checkpoint's and the topics' on the shared broker: this test's.
    let name = format!("m{}", &db.name[db.name.len() - 5..]);
    let config = sluice_integration_tests::mysql_source_config(&db, "")
        .replace("name = \"src\"", &format!("name = \"{name}\""))
        + &format!(
            "[[sinks]]\nname = \"{name}_replica\"\nkind = \"postgres\"\nurl = \"{}\"\n\
             topics = [\"{name}.{}.*\"]\nschema = \"public\"\n",
            replica.url(),
            db.name
        );
    let mut sluice = Sluice::with_log(LOG, &config);
    sluice.start();
    let replicated = |want: &str| {
        let replica = &replica;
        let want = want.to_owned();
        move || {
            replica.exec("SELECT to_regclass('public.t') IS NOT NULL") == "t"
                && replica.exec("SELECT id, v FROM t ORDER BY id") == want
        }
    };
    wait_for(
        Duration::from_secs(60),
        "the snapshot",
        replicated("1|1\n2|2"),
    )
    .await;
    // A column joins (the history on Kafka records it), then sluice dies and comes back.
    db.exec("ALTER TABLE t ADD COLUMN w int NULL; INSERT INTO t VALUES (3, 3, 3)");
    wait_for(
        Duration::from_secs(60),
        "the row after the ALTER",
        replicated("1|1\n2|2\n3|3"),
    )
    .await;
    sluice.kill();
    db.exec("INSERT INTO t VALUES (4, 4, 4); UPDATE t SET w = 9 WHERE id = 1");
    sluice.start();
    let expected = "1|1|9\n2|2|-1\n3|3|3\n4|4|4";
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let got = replica.exec("SELECT id, v, coalesce(w, -1) FROM t ORDER BY id");
        if got == expected {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the replica has {got:?}; sluice's log:\n{}",
            sluice.stderr()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(sluice.stop(), Some(0), "{}", sluice.stderr());
}
