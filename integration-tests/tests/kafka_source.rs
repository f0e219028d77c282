//! The Kafka source against a real broker: a Postgres table captured by Debezium 3.6.1 itself
//! (its embedded engine sending each record to Kafka, JSON with or without schemas) is read
//! from Kafka by sluice and applied by its Postgres sink: the replica equals the table,
//! through a snapshot, inserts, updates, deletes and a sluice restart.

use std::time::Duration;

use sluice_integration_tests::kafka::{consume, debezium, services, BROKERS};
use sluice_integration_tests::{wait_for, Sluice, TestDb};

/// Every row of `t`, ordered, as text (to compare a replica with its source).
fn rows(db: &TestDb) -> String {
    db.exec("SELECT * FROM t ORDER BY id")
}

/// Debezium (with `schemas`: JSON with schemas) captures `source` into Kafka topics
/// `<prefix>.public.t`; sluice reads them into `target`. Returns once the replica equals the
/// source, after changes made while both run and a restart of sluice.
async fn replicate_through_debezium(source: &TestDb, target: &TestDb, schemas: bool) {
    services(&["up", "debezium"]);
    let prefix = format!("dbz_{}", source.name);
    let schemas_enable = format!("converter.schemas.enable={schemas}");
    let mut engine = debezium(
        &source.name,
        &[
            &format!("topic.prefix={prefix}"),
            &format!("harness.out=kafka:{BROKERS}"),
            &schemas_enable,
            &format!("key.{schemas_enable}"),
            &format!("value.{schemas_enable}"),
        ],
        std::process::Stdio::null(),
        std::process::Stdio::null(),
    );
    let topic = format!("{prefix}.public.t");
    wait_for(
        Duration::from_secs(120),
        "Debezium's snapshot in Kafka",
        || consume(&topic, None).len() >= 3,
    )
    .await;
    let mut sluice = Sluice::new(&format!(
        "[[sources]]\nname = \"mig\"\nkind = \"kafka\"\nbrokers = \"{BROKERS}\"\n\
         topics = [\"{topic}\"]\n\n\
         [[sinks]]\nname = \"replica\"\nkind = \"postgres\"\nurl = \"{}\"\ntopics = [\"mig.public.*\"]\n",
        target.url()
    ));
    sluice.start();
    source.exec(
        "INSERT INTO t SELECT g, g * 1.5, 'row ' || g, g % 2 = 0 FROM generate_series(4, 50) g",
    );
    source.exec("UPDATE t SET label = 'changed', amount = amount + 0.25 WHERE id % 5 = 0");
    source.exec("DELETE FROM t WHERE id % 7 = 0");
    wait_for(
        Duration::from_secs(120),
        "the replica equal to the source",
        || {
            target.exec("SELECT to_regclass('public.t') IS NOT NULL") == "t"
                && rows(target) == rows(source)
        },
    )
    .await;
    // A restart resumes after the log's position: nothing lost, nothing applied twice.
    sluice.kill();
    source.exec("INSERT INTO t VALUES (100, 1.25, 'after the restart', true)");
    source.exec("DELETE FROM t WHERE id = 1");
    sluice.start();
    wait_for(
        Duration::from_secs(120),
        "the rows after the restart",
        || rows(target) == rows(source),
    )
    .await;
    let _ = engine.kill();
    let _ = engine.wait();
    assert!(
        sluice.stderr().contains("reading Kafka"),
        "{}",
        sluice.stderr()
    );
    assert_eq!(sluice.stop(), Some(0), "{}", sluice.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debeziums_json_with_schemas_replicates_a_table_exactly() {
    let (source, target) = (TestDb::create(), TestDb::create());
    source.exec(
        "CREATE TABLE t (id int PRIMARY KEY, amount numeric(10,2), label text, flag bool); \
         INSERT INTO t VALUES (1, 10.50, 'one', true), (2, -0.01, NULL, false), (3, NULL, 'three', NULL)",
    );
    replicate_through_debezium(&source, &target, true).await;
    // The types came through Debezium's schemas.
    assert_eq!(
        target.exec(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute \
             WHERE attrelid = 't'::regclass AND attnum > 0 ORDER BY attnum"
        ),
        "integer\nnumeric(10,2)\ntext\nboolean"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debeziums_json_without_schemas_replicates_a_table_of_plain_types() {
    let (source, target) = (TestDb::create(), TestDb::create());
    // Without schemas a decimal is Debezium's base64 bytes: a table of plain types.
    source.exec(
        "CREATE TABLE t (id int PRIMARY KEY, amount float8, label text, flag bool); \
         INSERT INTO t VALUES (1, 10.5, 'one', true), (2, -0.25, NULL, false), (3, NULL, 'three', NULL)",
    );
    replicate_through_debezium(&source, &target, false).await;
}
