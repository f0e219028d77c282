//! PostgreSQL 17 (dev/services unpacks its binaries): reading a hot standby (logical decoding
//! on standbys, Postgres 16+), and a failover slot that survives the standby's promotion.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sluice_integration_tests::{
    events, fold_rows, sluice_command, wait_for, PrivateCluster, Sluice,
};

const TOPIC: &str = "src.public.t";

fn source(url: &str, extra: &str) -> String {
    format!(
        "[[sources]]\nname = \"src\"\nkind = \"postgres\"\nurl = \"{url}?sslmode=disable\"\n\
         tables = [\"public.t\"]\nslot = \"sluice_src\"\nmax_batch_events = 200\n{extra}\n"
    )
}

/// The table as `cluster` has it: id → v.
fn table(cluster: &PrivateCluster) -> Vec<(i64, String)> {
    cluster
        .exec("postgres", "SELECT id, v FROM t ORDER BY id")
        .lines()
        .map(|line| {
            let (id, v) = line.split_once('|').unwrap();
            (id.parse().unwrap(), v.to_owned())
        })
        .collect()
}

/// The log folded to rows: id → v.
fn folded(sluice: &Sluice) -> Vec<(i64, String)> {
    fold_rows(&events(&sluice.records(TOPIC)), "id")
        .into_values()
        .map(|row| {
            (
                row["id"].as_i64().unwrap(),
                row["v"].as_str().unwrap().to_owned(),
            )
        })
        .collect::<std::collections::BTreeMap<_, _>>()
        .into_iter()
        .collect()
}

/// Keeps asking the primary for a running-transactions record, which a slot being created on
/// its standby waits for; stops when dropped.
struct Nudge(Arc<AtomicBool>);

impl Nudge {
    async fn primary(primary: &PrivateCluster) -> Nudge {
        let (client, connection) =
            tokio_postgres::connect(&primary.url("postgres"), tokio_postgres::NoTls)
                .await
                .expect("connect to the primary");
        sluice_core::task::spawn_in_span(connection);
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        sluice_core::task::spawn_in_span(async move {
            while !flag.load(Ordering::Relaxed) {
                let _ = client
                    .execute("SELECT pg_log_standby_snapshot()", &[])
                    .await;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
        Nudge(stop)
    }
}

impl Drop for Nudge {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_17_standby_is_read_with_a_publication_made_on_the_primary() {
    let primary = PrivateCluster::v17("");
    primary.exec(
        "postgres",
        "CREATE TABLE t (id int PRIMARY KEY, v text); \
         INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 1000) g",
    );
    let standby = PrivateCluster::standby_of(&primary, "hot_standby_feedback = on");
    let url = standby.url("postgres");

    // sluice cannot make its own publication on a standby: check --connect says so and how.
    let sluice = Sluice::new(&source(&url, ""));
    let (code, output) = sluice_command(&["check", "--connect"], &sluice.config);
    assert_ne!(code, Some(0), "{output}");
    assert!(
        output.contains("the server is a standby: sluice cannot create publication sluice_src")
            && output.contains(
                "on the primary run CREATE PUBLICATION \"sluice_src\" FOR TABLE \"public\".\"t\""
            ),
        "{output}"
    );
    drop(sluice);

    primary.exec("postgres", "CREATE PUBLICATION for_sluice FOR TABLE t");
    wait_for(
        Duration::from_secs(20),
        "the publication on the standby",
        || standby.exec("postgres", "SELECT count(*) FROM pg_publication") == "1",
    )
    .await;
    let mut sluice = Sluice::new(&source(&url, "publication = \"for_sluice\""));
    let (code, output) = sluice_command(&["check", "--connect"], &sluice.config);
    assert_eq!(code, Some(0), "{output}");
    assert!(output.contains("(a standby)"), "{output}");
    let nudge = Nudge::primary(&primary).await;
    sluice.start();
    wait_for(
        Duration::from_secs(60),
        "the snapshot, read on the standby",
        || events(&sluice.records(TOPIC)).len() >= 1000,
    )
    .await;
    drop(nudge);
    primary.exec(
        "postgres",
        "INSERT INTO t SELECT g, 'v' || g FROM generate_series(1001, 1100) g; \
         UPDATE t SET v = 'changed' WHERE id % 10 = 0; DELETE FROM t WHERE id % 7 = 0",
    );
    let expected = table(&primary);
    wait_for(
        Duration::from_secs(60),
        "the primary's changes, through the standby",
        || folded(&sluice) == expected,
    )
    .await;
    let slots = standby.exec(
        "postgres",
        "SELECT slot_name, slot_type FROM pg_replication_slots",
    );
    assert_eq!(slots, "sluice_src|logical", "the slot lives on the standby");
    assert_eq!(
        primary.exec("postgres", "SELECT count(*) FROM pg_replication_slots"),
        "0",
        "nothing on the primary"
    );

    // On-demand snapshots write watermarks into the WAL: refused on a standby, saying so.
    let (code, output) = sluice_command(&["snapshot", "src", "public.t"], &sluice.config);
    assert_ne!(code, Some(0), "{output}");
    assert!(
        output.contains("reads a standby, and an on-demand snapshot writes watermarks"),
        "{output}"
    );
    assert!(sluice.is_running(), "{}", sluice.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_slot_survives_promotion_and_sluice_resumes_on_the_new_primary() {
    let primary = PrivateCluster::v17("");
    primary.exec(
        "postgres",
        "CREATE TABLE t (id int PRIMARY KEY, v text); \
         SELECT pg_create_physical_replication_slot('standby1')",
    );
    let standby = PrivateCluster::standby_of(
        &primary,
        "primary_slot_name = 'standby1'\nhot_standby_feedback = on\nsync_replication_slots = on",
    );
    // The primary holds logical changes back until the standby has them, so the standby's copy
    // of the slot is never behind what sluice read.
    primary.exec(
        "postgres",
        "ALTER SYSTEM SET synchronized_standby_slots = 'standby1'",
    );
    primary.exec("postgres", "SELECT pg_reload_conf()");
    let config = |port_url: &str| source(port_url, "failover_slot = true");
    let mut sluice = Sluice::new(&config(&primary.url("postgres")));
    sluice.start();
    wait_for(Duration::from_secs(30), "the failover slot", || {
        primary.exec(
            "postgres",
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'sluice_src' AND failover",
        ) == "1"
    })
    .await;
    for batch in 0..20 {
        primary.exec(
            "postgres",
            &format!(
                "INSERT INTO t SELECT g, 'a' FROM generate_series({}, {}) g",
                batch * 100 + 1,
                batch * 100 + 100
            ),
        );
    }
    primary.exec("postgres", "UPDATE t SET v = 'b' WHERE id % 3 = 0");
    wait_for(
        Duration::from_secs(60),
        "the changes on the primary",
        || folded(&sluice).len() == 2000,
    )
    .await;
    wait_for(
        Duration::from_secs(60),
        "the slot synced to the standby",
        || {
            standby.exec(
            "postgres",
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'sluice_src' AND synced \
             AND confirmed_flush_lsn IS NOT NULL",
        ) == "1"
        },
    )
    .await;
    // The primary is lost mid-stream; the standby is promoted.
    sluice.kill();
    let _ = primary.pg_ctl(&["stop", "-m", "immediate"]);
    let out = standby.pg_ctl(&["promote", "-w", "-t", "60"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    standby.exec(
        "postgres",
        "INSERT INTO t SELECT g, 'after' FROM generate_series(2001, 2100) g; \
         UPDATE t SET v = 'c' WHERE id % 5 = 0; DELETE FROM t WHERE id % 11 = 0",
    );

    // The same pipeline, its url now the new primary: no snapshot, no loss, no duplicate.
    let before = std::fs::read_to_string(&sluice.config).unwrap();
    let after = before.replace(&primary.url("postgres"), &standby.url("postgres"));
    assert_ne!(before, after);
    std::fs::write(&sluice.config, after).unwrap();
    let ran_before = sluice.stderr().len();
    sluice.start();
    let promoted = &sluice;
    let expected = table(&standby);
    wait_for(
        Duration::from_secs(60),
        "the changes on the promoted standby",
        || folded(promoted) == expected,
    )
    .await;
    let stderr = promoted.stderr()[ran_before..].to_owned();
    assert!(
        !stderr.contains("snapshot reading"),
        "a new snapshot was taken:\n{stderr}"
    );
    let mut creates = std::collections::BTreeMap::<i64, usize>::new();
    for event in events(&promoted.records(TOPIC)) {
        if event["op"] == "c" || event["op"] == "r" {
            *creates
                .entry(event["after"]["id"].as_i64().unwrap())
                .or_default() += 1;
        }
    }
    assert_eq!(creates.len(), 2100);
    assert!(
        creates.values().all(|n| *n == 1),
        "a row was delivered twice"
    );
}
