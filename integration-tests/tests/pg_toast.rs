//! Unchanged TOASTed values (1 MB text and jsonb, stored out of line) under
//! `REPLICA IDENTITY DEFAULT`: filled with their exact value from the batch or read back from
//! the table, and Debezium's placeholder only where the value at that commit is gone.

use std::time::Duration;

use serde_json::Value as Json;
use sluice_integration_tests::{events, source_config, wait_for, Sluice, TestDb};

const PLACEHOLDER: &str = "__debezium_unavailable_value";
const TOPIC: &str = "src.public.t";

/// A 1 MiB string unlike any other (`seed` varies it).
fn big(seed: &str) -> String {
    format!("(SELECT string_agg(md5(i::text || '{seed}'), '') FROM generate_series(1, 32768) i)")
}

/// The row's current text and jsonb, as the source has them.
fn current(db: &TestDb, id: i32) -> (String, Json) {
    let big = db.exec(&format!("SELECT big FROM t WHERE id = {id}"));
    let doc = db.exec(&format!("SELECT doc::text FROM t WHERE id = {id}"));
    (big, serde_json::from_str(&doc).unwrap())
}

/// The jsonb value of an event as JSON (it travels as its text).
fn doc_of(event: &Json) -> Json {
    match &event["after"]["doc"] {
        Json::String(text) if text != PLACEHOLDER => serde_json::from_str(text).unwrap(),
        other => other.clone(),
    }
}

fn updates_of(sluice: &Sluice, id: i64) -> Vec<Json> {
    events(&sluice.records(TOPIC))
        .into_iter()
        .filter(|e| e["op"] == "u" && e["after"]["id"] == id)
        .collect()
}

fn assert_big(event: &Json, expected: &str, what: &str) {
    let got = event["after"]["big"].as_str().unwrap_or_default();
    assert!(
        got == expected,
        "{what}: big is {} bytes starting {:?}, expected {} bytes starting {:?}",
        got.len(),
        &got[..got.len().min(40)],
        expected.len(),
        &expected[..expected.len().min(40)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_toasted_values_arrive_exact_and_the_placeholder_only_where_they_are_gone() {
    let db = TestDb::create();
    db.exec(&format!(
        "CREATE TABLE t (id int PRIMARY KEY, n int, big text, doc jsonb); \
         ALTER TABLE t ALTER big SET STORAGE EXTERNAL, ALTER doc SET STORAGE EXTERNAL; \
         INSERT INTO t VALUES (1, 0, {}, jsonb_build_object('blob', {}))",
        big("a"),
        big("b")
    ));
    let (big1, doc1) = current(&db, 1);
    assert_eq!(big1.len(), 1 << 20);
    let mut sluice = Sluice::new(&source_config(&db, ""));
    sluice.start();
    db.wait_for_streaming().await;

    // A row from the snapshot, updated alone: read back from the table.
    db.exec("UPDATE t SET n = 1 WHERE id = 1");
    wait_for(Duration::from_secs(30), "the update of row 1", || {
        !updates_of(&sluice, 1).is_empty()
    })
    .await;
    let update = &updates_of(&sluice, 1)[0];
    assert_big(update, &big1, "row 1 after an update of n");
    assert_eq!(doc_of(update), doc1);

    // Inserted, updated leaving the values, then given a new big value in one transaction:
    // the middle update's big is the inserted one (from the batch: the table has the newer).
    db.exec(&format!(
        "BEGIN; INSERT INTO t VALUES (2, 0, {}, jsonb_build_object('blob', {})); \
         UPDATE t SET n = 1 WHERE id = 2; UPDATE t SET big = {} WHERE id = 2; COMMIT",
        big("c"),
        big("d"),
        big("e")
    ));
    wait_for(Duration::from_secs(30), "the updates of row 2", || {
        updates_of(&sluice, 2).len() >= 2
    })
    .await;
    let inserted = events(&sluice.records(TOPIC))
        .into_iter()
        .find(|e| e["op"] == "c" && e["after"]["id"] == 2)
        .expect("the insert of row 2");
    let (big2, doc2) = current(&db, 2);
    let updates = updates_of(&sluice, 2);
    assert_big(
        &updates[0],
        inserted["after"]["big"].as_str().unwrap(),
        "row 2's first update",
    );
    assert_eq!(doc_of(&updates[0]), doc2);
    assert_big(&updates[1], &big2, "row 2's second update");
    assert_eq!(doc_of(&updates[1]), doc2);

    // While sluice is down, row 1 is updated leaving its values, then given a new big value:
    // the first update's big is nowhere any more (placeholder, counted and warned about); its
    // doc is unchanged to this day, so it is read back.
    assert_eq!(sluice.stop(), Some(0), "{}", sluice.stderr());
    db.exec("UPDATE t SET n = 2 WHERE id = 1");
    db.exec(&format!("UPDATE t SET big = {} WHERE id = 1", big("f")));
    let (big1_new, _) = current(&db, 1);
    sluice.start();
    wait_for(
        Duration::from_secs(30),
        "row 1's updates made while down",
        || updates_of(&sluice, 1).len() >= 3,
    )
    .await;
    let updates = updates_of(&sluice, 1);
    assert_eq!(updates[1]["after"]["n"], 2);
    assert_eq!(updates[1]["after"]["big"], PLACEHOLDER);
    assert_eq!(doc_of(&updates[1]), doc1);
    assert_big(&updates[2], &big1_new, "row 1's new big value");
    assert_eq!(doc_of(&updates[2]), doc1);
    wait_for(Duration::from_secs(10), "the warning", || {
        sluice
            .stderr()
            .contains("emitted as Debezium's placeholder")
    })
    .await;

    // toast = "placeholder": no reads, the placeholder.
    assert_eq!(sluice.stop(), Some(0), "{}", sluice.stderr());
    let config = std::fs::read_to_string(&sluice.config).unwrap().replace(
        "tables = [\"public.*\"]\n",
        "tables = [\"public.*\"]\ntoast = \"placeholder\"\n",
    );
    assert!(config.contains("toast = \"placeholder\""), "{config}");
    std::fs::write(&sluice.config, config).unwrap();
    sluice.start();
    db.wait_for_streaming().await;
    db.exec("UPDATE t SET n = 3 WHERE id = 1");
    wait_for(
        Duration::from_secs(30),
        "the update with toast = placeholder",
        || updates_of(&sluice, 1).len() >= 4,
    )
    .await;
    let last = updates_of(&sluice, 1).pop().unwrap();
    assert_eq!(last["after"]["n"], 3);
    assert_eq!(last["after"]["big"], PLACEHOLDER);
    assert_eq!(last["after"]["doc"], PLACEHOLDER);
    assert_eq!(sluice.stop(), Some(0), "{}", sluice.stderr());
}
