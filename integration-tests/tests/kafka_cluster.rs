//! The log on a three-broker Kafka cluster (replication factor 3, `min.insync.replicas=2`,
//! `dev/services up kafka-cluster`): a broker killed with `kill -9` mid-stream and started again
//! later loses nothing and duplicates nothing, and the pipeline keeps streaming while it is down.

use std::time::Duration;

use sluice_integration_tests::kafka::{consume_from, replica_pipeline, services, table_t as rows};
use sluice_integration_tests::{wait_for, workspace_root, writer_client, Rng, Sluice, TestDb};

const CLUSTER: &str = "127.0.0.1:9192,127.0.0.1:9292,127.0.0.1:9392";

fn sum(db: &TestDb) -> i64 {
    if db.exec("SELECT to_regclass('public.t') IS NOT NULL") != "t" {
        return 0;
    }
    db.exec("SELECT coalesce(sum(v), 0) FROM t")
        .parse()
        .unwrap()
}

/// kill -9 of cluster node `n`.
fn kill_node(n: u32) {
    let pid_file = workspace_root().join(format!("target/kafka-cluster/n{n}/kafka.pid"));
    let pid = std::fs::read_to_string(&pid_file).expect("the node's pid file");
    let status = std::process::Command::new("kill")
        .args(["-9", pid.trim()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill -9 of node {n}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_killed_mid_stream_loses_and_duplicates_nothing() {
    services(&["up", "kafka-cluster"]);
    let source = TestDb::create();
    let replica = TestDb::create();
    source.exec(
        "CREATE TABLE t (id int PRIMARY KEY, v bigint NOT NULL); \
         INSERT INTO t SELECT g, 0 FROM generate_series(1, 2000) g",
    );
    let name = format!("c{}", &source.name[source.name.len() - 5..]);
    let log = format!(
        "kind = \"kafka\"\nbrokers = \"{CLUSTER}\"\npartitions = 2\nreplication_factor = 3\n\
         min_insync_replicas = 2"
    );
    let config = replica_pipeline(&name, &source, &replica);
    let mut sluice = Sluice::with_log(&log, &config);
    sluice.start();
    wait_for(
        Duration::from_secs(120),
        "the snapshot in the replica",
        || rows(&replica).lines().count() == 2000,
    )
    .await;

    // Each committed statement adds one to one row's v: the sum counts the changes.
    let writer = {
        let url = source.url();
        sluice_core::task::spawn_in_span(async move {
            let client = writer_client(&url).await;
            let mut rng = Rng::new(0xc1);
            let start = std::time::Instant::now();
            let mut changes = 0u64;
            while start.elapsed() < Duration::from_secs(20) {
                let id = rng.below(2000) + 1;
                if client
                    .batch_execute(&format!("UPDATE t SET v = v + 1 WHERE id = {id}"))
                    .await
                    .is_ok()
                {
                    changes += 1;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            changes
        })
    };
    tokio::time::sleep(Duration::from_secs(4)).await;
    kill_node(2);
    // Two brokers of three hold every partition's in-sync replicas: the pipeline goes on.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let while_down = sum(&replica);
    wait_for(
        Duration::from_secs(45),
        "changes reaching the replica while a broker is down",
        || sum(&replica) > while_down,
    )
    .await;
    services(&["up", "kafka-cluster"]);
    let changes = writer.await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while rows(&replica) != rows(&source) {
        let said = sluice.stderr();
        let tail: Vec<&str> = said.lines().rev().take(60).collect();
        assert!(
            std::time::Instant::now() < deadline,
            "the replica differs from the source (sums {} vs {}); sluice's log ends:\n{}",
            sum(&replica),
            sum(&source),
            tail.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(sum(&source), changes as i64, "the writer's changes");

    // The log's topic on the cluster: the snapshot's rows and each change exactly once.
    let records = consume_from(CLUSTER, &format!("{name}.public.t"), None);
    let ops = |op: &str| {
        records
            .iter()
            .filter(|(_, _, value)| {
                value
                    .as_str()
                    .and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok())
                    .is_some_and(|v| v["op"] == op)
            })
            .count() as u64
    };
    assert_eq!(ops("r"), 2000, "snapshot rows");
    assert_eq!(ops("u"), changes, "updates, each once");
    assert!(sluice.is_running(), "{}", sluice.stderr());
    assert_eq!(sluice.stop(), Some(0), "{}", sluice.stderr());
}
