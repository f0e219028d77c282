//! Several processes on one log on Kafka: one runs the sources (`--only sources`), others run
//! the sinks (`--only sinks`) as members of each sink's consumer group, sharing its partitions.
//! A member killed with `kill -9` hands its partitions to the others (after the group's session
//! timeout) and nothing is lost; a second process that starts the same source fences the first,
//! which stops with a clear message; processes that register schemas at once take turns at the
//! cluster's one registry topic.

use std::time::Duration;

use sluice_integration_tests::kafka::{replica_pipeline, services, table_t as rows};
use sluice_integration_tests::{wait_for, writer_client, Rng, Sluice, TestDb};

const LOG: &str = "kind = \"kafka\"\nbrokers = \"127.0.0.1:9092\"\npartitions = 4";

/// A Postgres source of `t` and a Postgres sink of its topics into `replica`, named after the
/// source database (topics and groups are the broker's, shared by every test).
fn pipeline(source: &TestDb, replica: &TestDb) -> (String, String) {
    let name = format!("g{}", &source.name[source.name.len() - 5..]);
    let config = replica_pipeline(&name, source, replica);
    (name, config)
}

/// Waits until the replica equals the source, showing the members' logs if it never does.
async fn replica_catches_up(source: &TestDb, replica: &TestDb, members: &[&Sluice]) {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while rows(replica) != rows(source) {
        if std::time::Instant::now() > deadline {
            let logs: Vec<String> = members
                .iter()
                .map(|m| {
                    let log = m.stderr();
                    let tail: Vec<&str> = log.lines().rev().take(40).collect();
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                })
                .collect();
            panic!(
                "the replica differs from the source ({} vs {} rows, sums {} vs {}); the \
                 members' logs end:\n{}",
                rows(replica).lines().count(),
                rows(source).lines().count(),
                replica.exec("SELECT coalesce(sum(v), 0) FROM t"),
                source.exec("SELECT sum(v) FROM t"),
                logs.join("\n----\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_processes_share_partitions_and_take_over_from_one_killed() {
    services(&["up", "kafka"]);
    let source = TestDb::create();
    let replica = TestDb::create();
    source.exec(
        "CREATE TABLE t (id int PRIMARY KEY, v bigint NOT NULL); \
         INSERT INTO t SELECT g, 0 FROM generate_series(1, 2000) g",
    );
    let (name, config) = pipeline(&source, &replica);
    // The sink processes start first: the schemas they decode with are registered later, by
    // the sources' process, and reach them through the log.
    let mut first = Sluice::with_log(LOG, &config);
    let mut second = Sluice::with_log(LOG, &config);
    first.start_with_args(&["--only", "sinks"]);
    second.start_with_args(&["--only", "sinks"]);
    let mut sources = Sluice::with_log(LOG, &config);
    sources.start_with_args(&["--only", "sources"]);
    wait_for(
        Duration::from_secs(120),
        "the snapshot in the replica",
        || rows(&replica).lines().count() == 2000,
    )
    .await;
    // The four partitions are shared: each member owns some.
    let owned = |member: &Sluice| {
        member
            .stderr()
            .contains("partitions assigned to this member")
    };
    wait_for(
        Duration::from_secs(60),
        "both members own partitions",
        || owned(&first) && owned(&second),
    )
    .await;
    assert!(
        !sources.stderr().contains("sink open"),
        "the sources' process runs no sink:\n{}",
        sources.stderr()
    );
    assert!(
        !first
            .stderr()
            .contains("resuming from the log's last checkpoint")
            && !first.stderr().contains("fresh start"),
        "a sinks' process runs no source:\n{}",
        first.stderr()
    );

    // Each committed statement adds one to one row's v: the sums count the changes.
    let writer = {
        let url = source.url();
        sluice_core::task::spawn_in_span(async move {
            let client = writer_client(&url).await;
            let mut rng = Rng::new(0x9e0);
            let start = std::time::Instant::now();
            while start.elapsed() < Duration::from_secs(15) {
                let id = rng.below(2000) + 1;
                let _ = client
                    .batch_execute(&format!("UPDATE t SET v = v + 1 WHERE id = {id}"))
                    .await;
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(5)).await;
    first.kill();
    let before = second
        .stderr()
        .matches("partitions assigned to this member")
        .count();
    writer.await.unwrap();
    wait_for(
        Duration::from_secs(60),
        "the surviving member takes the killed one's partitions",
        || {
            second
                .stderr()
                .matches("partitions assigned to this member")
                .count()
                > before
        },
    )
    .await;
    replica_catches_up(&source, &replica, &[&second, &sources]).await;
    assert!(second.is_running(), "{}", second.stderr());
    assert_eq!(sources.stop(), Some(0), "{}", sources.stderr());
    assert_eq!(second.stop(), Some(0), "{}", second.stderr());
    // Both members committed the group's offsets as they went.
    let (code, status) = sluice_integration_tests::sluice_command(&["status"], &second.config);
    assert_eq!(code, Some(0), "{status}");
    assert!(
        status.contains(&format!("sink {name}_replica (postgres): 4 partition(s)")),
        "{status}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_with_the_same_source_fences_the_first() {
    services(&["up", "kafka"]);
    let source = TestDb::create();
    let replica = TestDb::create();
    source.exec(
        "CREATE TABLE t (id int PRIMARY KEY, v bigint NOT NULL); \
         INSERT INTO t SELECT g, 0 FROM generate_series(1, 100) g",
    );
    let (_, config) = pipeline(&source, &replica);
    let mut first = Sluice::with_log(LOG, &config);
    first.start();
    wait_for(
        Duration::from_secs(120),
        "the snapshot in the replica",
        || rows(&replica).lines().count() == 100,
    )
    .await;
    let mut second = Sluice::with_log(LOG, &config);
    second.start();
    wait_for(
        Duration::from_secs(60),
        "the second process takes the source over",
        || {
            second
                .stderr()
                .contains("resuming from the log's last checkpoint")
        },
    )
    .await;
    // The first one's next append finds it fenced: it stops, saying why.
    source.exec("UPDATE t SET v = v + 1 WHERE id <= 10");
    wait_for(Duration::from_secs(60), "the first process stops", || {
        !first.is_running()
    })
    .await;
    let said = first.stderr();
    assert!(
        said.contains(
            "another sluice process started this writer on the cluster and fenced this one"
        ),
        "{said}"
    );
    assert_eq!(first.stop(), Some(1), "a runtime failure: {said}");
    // The second one goes on: every change reaches the replica once.
    source.exec("UPDATE t SET v = v + 1 WHERE id > 90");
    replica_catches_up(&source, &replica, &[&second]).await;
    assert_eq!(
        replica.exec("SELECT sum(v) FROM t"),
        "20",
        "each change applied once"
    );
    assert_eq!(second.stop(), Some(0), "{}", second.stderr());
}

/// The ids of the rows inserted (`op = "c"`) in a JSONL file of events.
/// The ids of the rows in a JSONL sink's file, read by the snapshot or inserted since: on a
/// busy or fresh broker the source may still be registering its schema when the test inserts,
/// and then takes those rows in its snapshot.
fn delivered(path: &std::path::Path) -> std::collections::BTreeSet<i64> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|event| event["op"] == "c" || event["op"] == "r")
        .filter_map(|event| event["after"]["id"].as_i64())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_that_cannot_share_partitions_runs_in_one_process_and_the_standby_takes_over() {
    services(&["up", "kafka"]);
    let source = TestDb::create();
    source.exec("CREATE TABLE t (id int PRIMARY KEY, v bigint NOT NULL)");
    let name = format!("s{}", &source.name[source.name.len() - 5..]);
    // A JSONL sink writes a file of its own process: one process runs it at a time.
    let config = format!(
        "[[sources]]\nname = \"{name}\"\nkind = \"postgres\"\nurl = \"{}\"\n\
         tables = [\"public.t\"]\nslot = \"{}\"\n\n\
         [[sinks]]\nname = \"{name}_file\"\nkind = \"jsonl\"\npath = \"{{dir}}/out.jsonl\"\n\
         topics = [\"{name}.public.*\"]\n",
        source.url(),
        source.name,
    );
    let mut sources = Sluice::with_log(LOG, &config);
    sources.start_with_args(&["--only", "sources"]);
    let mut active = Sluice::with_log(LOG, &config);
    active.start_with_args(&["--only", "sinks"]);
    wait_for(
        Duration::from_secs(60),
        "the first process runs the sink",
        || {
            active
                .stderr()
                .contains("this process runs it for the group")
        },
    )
    .await;
    let mut standby = Sluice::with_log(LOG, &config);
    standby.start_with_args(&["--only", "sinks"]);
    wait_for(Duration::from_secs(60), "the second one stands by", || {
        standby.stderr().contains("sink on standby")
    })
    .await;
    source.exec("INSERT INTO t SELECT g, 0 FROM generate_series(1, 100) g");
    let first = active.path("out.jsonl");
    wait_for(
        Duration::from_secs(60),
        "the first rows in the active one's file",
        || delivered(&first).len() == 100,
    )
    .await;
    assert!(
        delivered(&standby.path("out.jsonl")).is_empty(),
        "the standby writes nothing"
    );

    active.kill();
    source.exec("INSERT INTO t SELECT g, 0 FROM generate_series(101, 200) g");
    wait_for(Duration::from_secs(60), "the standby takes over", || {
        standby
            .stderr()
            .contains("this process runs it for the group")
    })
    .await;
    let second = standby.path("out.jsonl");
    wait_for(
        Duration::from_secs(60),
        "the later rows in the standby's file",
        || (101..=200).all(|id| delivered(&second).contains(&id)),
    )
    .await;
    // At least once: the standby starts from the group's offsets (what the killed one
    // committed), so every row is in one file or the other.
    let mut all = delivered(&first);
    all.extend(delivered(&second));
    assert_eq!(all, (1..=200).collect(), "every row delivered");
    assert_eq!(standby.stop(), Some(0), "{}", standby.stderr());
    assert_eq!(sources.stop(), Some(0), "{}", sources.stderr());
}

/// Processes that each run sources of their own register their schemas in the cluster's one
/// `_schemas` topic at the same moment: each claim fences the last writer, so they must take
/// turns rather than fence one another forever. Every process gets its ids and delivers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_registering_schemas_at_once_take_turns_and_all_deliver() {
    services(&["up", "kafka"]);
    const PROCESSES: usize = 5;
    let mut members = Vec::new();
    for _ in 0..PROCESSES {
        let source = TestDb::create();
        // Three tables: three subjects each, registered one after another as the snapshot
        // reaches them.
        for table in ["a", "b", "c"] {
            source.exec(&format!(
                "CREATE TABLE {table} (id int PRIMARY KEY, v bigint NOT NULL); \
                 INSERT INTO {table} SELECT g, 0 FROM generate_series(1, 10) g"
            ));
        }
        // The whole database name: the broker keeps every run's checkpoints, and five
        // characters of it met an earlier run's source once.
        let name = source.name.replace("sluice_t_", "r");
        let config = format!(
            "[[sources]]\nname = \"{name}\"\nkind = \"postgres\"\nurl = \"{}\"\n\
             tables = [\"public.*\"]\nslot = \"{}\"\n\n\
             [[sinks]]\nname = \"{name}_file\"\nkind = \"jsonl\"\npath = \"{{dir}}/out.jsonl\"\n\
             topics = [\"{name}.public.*\"]\n",
            source.url(),
            source.name,
        );
        // The process first: it is dropped (killed) before its database is, which it would
        // otherwise keep reconnecting to.
        members.push((Sluice::with_log(LOG, &config), source));
    }
    for (sluice, _) in &mut members {
        sluice.start();
    }
    for (sluice, _) in &mut members {
        let out = sluice.path("out.jsonl");
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        loop {
            let lines = std::fs::read_to_string(&out).unwrap_or_default();
            if lines.lines().count() == 30 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline && sluice.is_running(),
                "a process did not deliver its 30 rows ({} so far):\n{}",
                lines.lines().count(),
                sluice.stderr()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    for (sluice, _) in &mut members {
        assert_eq!(sluice.stop(), Some(0), "{}", sluice.stderr());
    }
}
