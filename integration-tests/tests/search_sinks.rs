//! The search sinks end to end (OpenSearch, Typesense): Postgres tables kept in step with
//! indexes through a writer workload (inserts, updates, deletes, key changes, a truncate),
//! three `kill -9`s of sluice and a restart of the search server, then a replay of everything
//! from the first offset; and a document the index refuses, which goes to the dead-letter
//! topic while the rest continue. Every document is compared with its row.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value as Json};
use sluice_integration_tests::search::{
    OpenSearch, PrivateOpenSearch, PrivateTypesense, Typesense,
};
use sluice_integration_tests::{
    sluice_command, source_config, wait_for, writer_client, Rng, Sluice, TestDb,
};

const TABLES: &str = "
CREATE TABLE items (id int PRIMARY KEY, name text, price numeric(10,2), tags text[], meta jsonb,
                    at timestamptz DEFAULT now());
CREATE TABLE orders (a int, b text, qty int, PRIMARY KEY (a, b));
INSERT INTO items SELECT g, 'item ' || g, g * 1.25, ARRAY['t' || (g % 7)], jsonb_build_object('n', g)
  FROM generate_series(1, 3000) g;
INSERT INTO orders SELECT g % 50, 'b' || (g / 50), g FROM generate_series(1, 1000) g;
";

/// The rows of `items` and `orders` as OpenSearch documents should hold them, by id.
fn expected(db: &TestDb) -> BTreeMap<String, Json> {
    rows_by_id(
        db,
        "json_build_object('_id', id::text, 'id', id, 'name', name, 'price', price::text, \
         'tags', tags, 'meta', meta, 'at_us', (extract(epoch FROM at) * 1000000)::bigint)",
        "json_build_object('_id', json_build_array(a, b)::jsonb::text, 'a', a, 'b', b, 'qty', qty)",
    )
}

/// The same rows as Typesense documents should hold them: the id as text in the document,
/// decimals as numbers, timestamps in epoch milliseconds, json as its text.
fn expected_typesense(db: &TestDb) -> BTreeMap<String, Json> {
    rows_by_id(
        db,
        "json_build_object('_id', id::text, 'id', id::text, 'name', name, 'price', price::float8, \
         'tags', tags, 'meta', meta::text, 'at', floor(extract(epoch FROM at) * 1000)::bigint)",
        "json_build_object('_id', json_build_array(a, b)::jsonb::text, \
         'id', json_build_array(a, b)::jsonb::text, 'a', a, 'b', b, 'qty', qty)",
    )
}

/// Rows of `items` and `orders` as JSON built by the two expressions, by their `_id`.
fn rows_by_id(db: &TestDb, items: &str, orders: &str) -> BTreeMap<String, Json> {
    let items = db.exec(&format!("SELECT {items} FROM items"));
    let orders = db.exec(&format!("SELECT {orders} FROM orders"));
    items
        .lines()
        .chain(orders.lines())
        .filter(|l| !l.is_empty())
        .map(|line| {
            let mut row: Json = serde_json::from_str(line).unwrap();
            let id = row["_id"].as_str().unwrap().replace(", ", ",");
            row.as_object_mut().unwrap().remove("_id");
            if let Some(id) = row.get_mut("id").filter(|v| v.is_string()) {
                *id = json!(id.as_str().unwrap().replace(", ", ","));
            }
            (id, row)
        })
        .collect()
}

/// The documents of both indexes in the same form as [`expected`] (timestamps as microseconds).
fn actual(search: &OpenSearch) -> BTreeMap<String, Json> {
    let mut docs = BTreeMap::new();
    for table in ["items", "orders"] {
        for (id, hit) in search.documents(&search.index(table)) {
            let mut doc = hit["_source"].clone();
            if let Some(at) = doc.as_object_mut().unwrap().remove("at") {
                let micros = sluice_core::value::parse_utc_timestamp(at.as_str().unwrap())
                    .unwrap_or_else(|| panic!("a timestamp: {at}"));
                doc["at_us"] = json!(micros);
            }
            docs.insert(id, doc);
        }
    }
    docs
}

/// The documents of both collections.
fn actual_typesense(search: &Typesense) -> BTreeMap<String, Json> {
    ["items", "orders"]
        .iter()
        .flat_map(|t| search.documents(&search.collection(t)))
        .map(|(id, doc)| (id, float_price(doc)))
        .collect()
}

/// `price` as a float either way (Typesense answers `128.0` where Postgres says `128`).
fn float_price(mut doc: Json) -> Json {
    if let Some(price) = doc.get("price").and_then(Json::as_f64) {
        doc["price"] = json!(price);
    }
    doc
}

/// Waits until every document equals its row and no other document exists; on timeout, shows
/// what differs and the end of sluice's log.
async fn wait_equal(
    expected: impl Fn() -> BTreeMap<String, Json>,
    actual: impl Fn() -> BTreeMap<String, Json>,
    timeout: Duration,
    sluice: &Sluice,
) {
    let deadline = Instant::now() + timeout;
    loop {
        let (want, have) = (expected(), actual());
        if want == have {
            return;
        }
        if Instant::now() > deadline {
            let missing: Vec<_> = want
                .keys()
                .filter(|k| !have.contains_key(*k))
                .take(5)
                .collect();
            let extra: Vec<_> = have
                .keys()
                .filter(|k| !want.contains_key(*k))
                .take(5)
                .collect();
            let differ: Vec<_> = want
                .iter()
                .filter(|(k, v)| have.get(*k).is_some_and(|h| h != *v))
                .take(3)
                .map(|(k, v)| format!("{k}: row {v} doc {}", have[k]))
                .collect();
            let log = sluice.stderr();
            let tail: String = log.lines().rev().take(30).collect::<Vec<_>>().join("\n");
            panic!(
                "indexes differ from the tables: {} rows, {} documents; missing {missing:?}, \
                 extra {extra:?}, differing {differ:?}; sluice's log ends (newest first):\n{tail}",
                want.len(),
                have.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Random changes for `seconds`: inserts, updates, deletes and key changes of `items`, changes
/// of `orders` (composite key), which is truncated once halfway and filled again.
async fn write(url: String, seconds: u64) {
    let client = writer_client(&url).await;
    let mut rng = Rng::new(0x0e5);
    let start = Instant::now();
    let mut truncated = false;
    let mut n = 0u64;
    while start.elapsed() < Duration::from_secs(seconds) {
        let mut txn = String::from("BEGIN;");
        for _ in 0..5 {
            n += 1;
            let id = rng.below(3500) + 1;
            txn.push_str(&match rng.below(10) {
                0..=2 => format!(
                    "INSERT INTO items VALUES ({id}, 'new {n}', {}.{:02}, ARRAY['x','y{n}'], '{{\"w\": {n}}}') \
                     ON CONFLICT (id) DO UPDATE SET name = excluded.name;",
                    rng.below(1000),
                    rng.below(100)
                ),
                3..=5 => format!(
                    "UPDATE items SET name = 'upd {n}', price = price + 1, meta = meta || '{{\"u\": {n}}}', \
                     at = now() WHERE id = {id};"
                ),
                6 => format!("DELETE FROM items WHERE id = {id};"),
                7 => format!(
                    "UPDATE items SET id = {} WHERE id = {id} AND NOT EXISTS (SELECT 1 FROM items WHERE id = {});",
                    id + 100_000,
                    id + 100_000
                ),
                8 => format!(
                    "INSERT INTO orders VALUES ({}, 'w{}', {n}) ON CONFLICT (a, b) DO UPDATE SET qty = {n};",
                    rng.below(60),
                    rng.below(30)
                ),
                _ => format!("DELETE FROM orders WHERE a = {} AND qty % 3 = 0;", rng.below(60)),
            });
        }
        txn.push_str("COMMIT;");
        // A key change may collide with a concurrent insert's key: that transaction fails.
        if client.batch_execute(&txn).await.is_err() {
            let _ = client.batch_execute("ROLLBACK").await;
        }
        if !truncated && start.elapsed() > Duration::from_secs(seconds / 2) {
            client
                .batch_execute("TRUNCATE orders; INSERT INTO orders SELECT g, 'after', g FROM generate_series(1, 20) g")
                .await
                .unwrap();
            truncated = true;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// The fault run both sinks go through: sluice with `sink` over a filled source, a writer for
/// 24 s, sluice killed three times, `restart_server` called after the second kill.
async fn under_faults(
    source: &TestDb,
    sink: &str,
    seed: u64,
    mut restart_server: impl FnMut(),
) -> Sluice {
    source.exec(TABLES);
    let mut sluice = Sluice::new(&format!("{}{sink}", source_config(source, "")));
    sluice.start();
    source.wait_for_streaming().await;
    let writer = sluice_core::task::spawn_in_span(write(source.url(), 24));
    let mut rng = Rng::new(seed);
    for round in 0..3 {
        tokio::time::sleep(Duration::from_millis(2000 + rng.below(3000))).await;
        sluice.kill();
        sluice.start();
        if round == 1 {
            // The server goes away and comes back while sluice runs: the sink retries.
            tokio::task::block_in_place(&mut restart_server);
        }
    }
    writer.await.unwrap();
    sluice
}

/// Replays everything: sluice stops (storing its offsets on the way), `forget` drops the
/// sink's stored offsets, and sluice runs again until `stored` (what the offsets document
/// says) is what it was at the stop.
async fn replay<T: PartialEq + std::fmt::Debug>(
    sluice: &mut Sluice,
    stored: impl Fn() -> T,
    forget: impl FnOnce(),
) {
    assert_eq!(sluice.stop(), Some(0), "{}", sluice.stderr());
    let before = stored();
    forget();
    sluice.start();
    wait_for(
        Duration::from_secs(120),
        "the replay to reach the end again",
        || stored() == before,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opensearch_kill_9_three_times_and_a_cluster_restart_under_a_writer_then_a_replay_leave_every_index_equal_to_its_table(
) {
    let mut node = tokio::task::block_in_place(PrivateOpenSearch::start);
    let search = OpenSearch::on(&node.url());
    let source = TestDb::create();
    let sink = search.sink_config("search", "[\"src.public.*\"]", "bulk_docs = 500");
    let mut sluice = under_faults(&source, &sink, 0x0e59, || node.restart()).await;
    let want = || expected(&source);
    wait_equal(want, || actual(&search), Duration::from_secs(120), &sluice).await;
    assert!(
        !search.documents(&search.index("orders")).is_empty(),
        "orders refilled after the truncate"
    );

    // Replay: the sink forgets what it applied and gets every record again, from offset 0.
    // External versions make the older writes no-ops: the index stays exactly as it is.
    let offsets_doc = format!("/{}_offsets/_doc/search", search.prefix);
    let stored = || search.request("GET", &offsets_doc, None)["_source"]["offsets"].clone();
    assert!(
        stored().as_array().is_some_and(|o| !o.is_empty()),
        "{}",
        stored()
    );
    let before: BTreeMap<String, Json> = ["items", "orders"]
        .iter()
        .flat_map(|t| search.documents(&search.index(t)))
        .collect();
    replay(&mut sluice, stored, || {
        search.request("DELETE", &format!("{offsets_doc}?refresh=true"), None);
    })
    .await;
    let after: BTreeMap<String, Json> = ["items", "orders"]
        .iter()
        .flat_map(|t| search.documents(&search.index(t)))
        .collect();
    assert_eq!(before.len(), after.len());
    for (id, doc) in &before {
        assert_eq!(
            (&doc["_source"], &doc["_version"]),
            (&after[id]["_source"], &after[id]["_version"]),
            "document {id} changed by the replay"
        );
    }
    assert_eq!(sluice.stop(), Some(0), "{}", sluice.stderr());
    drop(node);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opensearch_sends_a_document_the_mapping_refuses_to_the_dead_letter_topic_and_the_rest_continue(
) {
    let search = OpenSearch::new();
    let source = TestDb::create();
    source.exec("CREATE TABLE t (id int PRIMARY KEY, v text)");
    // The index exists already and maps v as a number: text that is no number is refused.
    let index = search.index("t");
    let made = search.request(
        "PUT",
        &format!("/{index}"),
        Some(
            &json!({"mappings": {"properties": {"v": {"type": "integer"}}},
            "settings": {"index": {"number_of_replicas": 0}}}),
        ),
    );
    assert_eq!(made["acknowledged"], json!(true), "{made}");
    let mut sluice = Sluice::new(&format!(
        "{}{}",
        source_config(&source, ""),
        search.sink_config(
            "search",
            "[\"src.public.t\"]",
            "dead_letter_topic = \"search.dead\""
        )
    ));
    sluice.start();
    source.wait_for_streaming().await;
    source.exec("INSERT INTO t VALUES (1, '10'), (2, 'not a number'), (3, '30')");
    source.exec("UPDATE t SET v = '11' WHERE id = 1");
    wait_for(
        Duration::from_secs(60),
        "the changes after the rejected one",
        || {
            search
                .documents(&index)
                .get("1")
                .is_some_and(|d| d["_source"]["v"] == json!("11"))
        },
    )
    .await;
    let docs = search.documents(&index);
    assert_eq!(
        docs.keys().collect::<Vec<_>>(),
        ["1", "3"],
        "all but the rejected row"
    );
    let dead = sluice.records("search.dead");
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].1["after"], json!({"id": 2, "v": "not a number"}));
    // `check --connect` reaches the cluster and may write the offsets index; `status` counts
    // the diverted record as handled.
    let (code, check) = sluice_command(&["check", "--connect"], &sluice.config);
    assert_eq!(code, Some(0), "{check}");
    assert!(check.contains("opensearch 2.19.6"), "{check}");
    assert!(check.contains("_offsets writable"), "{check}");
    let (code, status) = sluice_command(&["status"], &sluice.config);
    assert_eq!(code, Some(0), "{status}");
    assert!(
        status.contains("src.public.t: 4 of 4 record(s) delivered (0 behind)"),
        "{status}"
    );
    assert_eq!(sluice.stop(), Some(0), "{}", sluice.stderr());
    assert!(
        sluice.stderr().contains("mapper_parsing_exception"),
        "the server's reason is logged: {}",
        sluice.stderr()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typesense_kill_9_three_times_and_a_server_restart_under_a_writer_then_a_replay_leave_every_collection_equal_to_its_table(
) {
    let mut server = tokio::task::block_in_place(PrivateTypesense::start);
    let search = Typesense::on(&server.url());
    let source = TestDb::create();
    let sink = search.sink_config("search", "[\"src.public.*\"]", "batch_docs = 500");
    let mut sluice = under_faults(&source, &sink, 0x75, || server.restart()).await;
    let want = || {
        expected_typesense(&source)
            .into_iter()
            .map(|(id, row)| (id, float_price(row)))
            .collect()
    };
    wait_equal(
        want,
        || actual_typesense(&search),
        Duration::from_secs(120),
        &sluice,
    )
    .await;

    // Replay from offset 0: applied again in order, the collections end the same.
    let offsets_doc = format!(
        "/collections/{}_offsets/documents/sink.search",
        search.prefix
    );
    let stored = || search.request("GET", &offsets_doc, None);
    assert!(stored().contains("\"offsets\""), "{}", stored());
    let before = actual_typesense(&search);
    replay(&mut sluice, stored, || {
        search.request("DELETE", &offsets_doc, None);
    })
    .await;
    assert_eq!(
        actual_typesense(&search),
        before,
        "the replay changed the collections"
    );
    assert_eq!(sluice.stop(), Some(0), "{}", sluice.stderr());
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typesense_rejects_a_document_of_the_wrong_type_to_the_dead_letter_topic_and_the_rest_continue(
) {
    let search = Typesense::new();
    let source = TestDb::create();
    source.exec("CREATE TABLE t (id int PRIMARY KEY, v text)");
    // The collection exists already with v as a number: text that is no number is refused.
    let collection = search.collection("t");
    search.request(
        "POST",
        "/collections",
        Some(&json!({"name": collection, "fields": [{"name": "v", "type": "int32", "optional": true}]}).to_string()),
    );
    let mut sluice = Sluice::new(&format!(
        "{}{}",
        source_config(&source, ""),
        search.sink_config(
            "search",
            "[\"src.public.t\"]",
            "dead_letter_topic = \"search.dead\""
        )
    ));
    sluice.start();
    source.wait_for_streaming().await;
    source.exec("INSERT INTO t VALUES (1, NULL), (2, 'not a number'), (3, NULL)");
    source.exec("UPDATE t SET v = NULL WHERE id = 1; INSERT INTO t VALUES (4, NULL)");
    wait_for(
        Duration::from_secs(60),
        "the changes after the rejected one",
        || search.documents(&collection).contains_key("4"),
    )
    .await;
    let docs = search.documents(&collection);
    assert_eq!(
        docs.keys().collect::<Vec<_>>(),
        ["1", "3", "4"],
        "all but the rejected row"
    );
    let dead = sluice.records("search.dead");
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].1["after"], json!({"id": 2, "v": "not a number"}));
    let (code, check) = sluice_command(&["check", "--connect"], &sluice.config);
    assert_eq!(code, Some(0), "{check}");
    assert!(
        check.contains("Typesense at http://127.0.0.1:8108: ready"),
        "{check}"
    );
    assert_eq!(sluice.stop(), Some(0), "{}", sluice.stderr());
    assert!(
        sluice.stderr().contains("must be an int32"),
        "the server's reason is logged: {}",
        sluice.stderr()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opensearch_reindex_rebuilds_an_index_under_a_writer_and_moves_its_name_without_losing_a_change(
) {
    let search = OpenSearch::new();
    let source = TestDb::create();
    source.exec(TABLES);
    let sink = search.sink_config("search", "[\"src.public.*\"]", "");
    let mut sluice = Sluice::new(&format!("{}{sink}", source_config(&source, "")));
    sluice.start();
    source.wait_for_streaming().await;
    let want = || expected(&source);
    wait_equal(want, || actual(&search), Duration::from_secs(60), &sluice).await;

    // A rebuild while a writer changes both tables: the index's name becomes an alias of the
    // rebuilt index, and what the writer did before, during and after it is all there.
    let writer = sluice_core::task::spawn_in_span(write(source.url(), 12));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let items = search.index("items");
    let alias_of = |name: &str| -> Vec<String> {
        let answer = search.request("GET", &format!("/_alias/{name}"), None);
        answer
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    };
    // (sluice_command puts `-c CONFIG` after the arguments.)
    let run = |args: &[&str]| tokio::task::block_in_place(|| sluice_command(args, &sluice.config));
    let (code, out) = run(&["reindex", "search", "public.items"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains(&format!("the index {items} replaced by an alias")),
        "{out}"
    );
    let first = alias_of(&items);
    assert_eq!(first.len(), 1, "{first:?}");
    assert!(first[0].starts_with(&format!("{items}_r")), "{first:?}");
    writer.await.unwrap();
    wait_equal(want, || actual(&search), Duration::from_secs(60), &sluice).await;

    // Again: the alias moves to a newer index and the one it left is deleted; the running
    // sink keeps writing through the name.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (code, out) = run(&["reindex", "search", "items"]);
    assert_eq!(code, Some(0), "{out}");
    let second = alias_of(&items);
    assert_eq!(second.len(), 1, "{second:?}");
    assert_ne!(second, first, "{out}");
    assert!(out.contains(&format!("{} deleted", first[0])), "{out}");
    let gone = search.request("GET", &format!("/{}", first[0]), None);
    assert_eq!(gone["status"], 404, "{gone}");
    source.exec("INSERT INTO items VALUES (999999, 'after both', 1, ARRAY['z'], '{}')");
    wait_equal(want, || actual(&search), Duration::from_secs(60), &sluice).await;

    // What it refuses, with what to do.
    let (code, out) = run(&["reindex", "search", "nosuch"]);
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("no topic of sink search in the log holds a table \"nosuch\""),
        "{out}"
    );
    let (code, out) = run(&["reindex", "other", "items"]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("no sink named \"other\""), "{out}");
    assert_eq!(sluice.stop(), Some(0), "{}", sluice.stderr());
}
