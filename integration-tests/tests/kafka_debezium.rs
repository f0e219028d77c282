//! sluice's Kafka sink against Debezium 3.6.1 itself: the same snapshot and changes of one
//! Postgres database captured by Debezium's embedded engine (its defaults, the JSON converter
//! without schemas; `dev/debezium/DebeziumRun.java`) and by sluice into Kafka with the
//! default `format = "debezium"`, compared record by record. What may differ is only what
//! cannot be the same (versions, processing times, the snapshot's own LSN) and what
//! docs/types.md lists.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value as Json;
use sluice_integration_tests::kafka::{consume, debezium, kafka_sink, services, Debezium};
use sluice_integration_tests::{source_config, wait_for, Sluice, TestDb};

/// Columns of most types whose Debezium form differs from sluice's exact one, and a few that
/// do not.
const TABLE: &str = "CREATE EXTENSION IF NOT EXISTS hstore; \
    CREATE TABLE t (id int PRIMARY KEY, small smallint, big bigint, f float8, ok bool, \
      name text, code varchar(10), ch char(3), d date, tm time, ts timestamp, tstz timestamptz, \
      tz timetz, iv interval, n numeric(10,3), nu numeric, m money, b1 bit(1), b10 bit(10), \
      vb varbit, p point, h hstore, j jsonb, u uuid, by bytea, ints int[], texts text[]); \
    CREATE TABLE other (id int PRIMARY KEY, v text)";

const SNAPSHOT_ROWS: &str = "INSERT INTO t VALUES \
    (1, -32768, 9007199254740993, 1.5, true, 'one', 'x', 'ab', '2024-01-02', '13:14:15.5', \
     '2024-01-02 03:04:05.123456', '2024-01-02 03:04:05.123456+00', '10:15:30.5+02', \
     '1 year 2 mons 3 days 04:05:06.5', 1234.567, -0.000123, 12.34, '1', '1010000011', '101', \
     '(1.5,-2)', 'a=>1, b=>NULL', '{\"x\": [1, 2]}', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', \
     '\\xdeadbeef', '{1,2,NULL}', '{\"a b\",c}'), \
    (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, \
     NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL); \
    INSERT INTO other VALUES (1, 'a'), (2, 'b'), (3, 'c')";

const CHANGES: &[&str] = &[
    "INSERT INTO t (id, b10, vb, nu, iv, tz, m, n, f) VALUES (3, '0000000001', '00000000000', \
     'NaN', '-1 mons -2 days 00:00:01', '23:00:00-05:30', '-1234.5', -0.5, -0.0)",
    "BEGIN; UPDATE t SET m = '-1234.5', name = 'uno' WHERE id = 1; \
     INSERT INTO other VALUES (4, 'd'); UPDATE other SET v = 'bb' WHERE id = 2; COMMIT",
    "DELETE FROM t WHERE id = 3",
    "UPDATE t SET nu = 10.5, iv = 'PT0S', b1 = '0' WHERE id = 2",
    "TRUNCATE other",
];

/// Debezium's embedded engine on `db`, writing each record as a JSON line
/// `{"topic","key","value"}` to `out`.
fn start_debezium(db: &TestDb, out: &std::path::Path, extra: &[&str]) -> Debezium {
    // Truncates too (Debezium skips them by default; sluice emits them).
    let mut properties = vec!["topic.prefix=src", "skipped.operations=none"];
    properties.extend_from_slice(extra);
    debezium(
        &db.name,
        &properties,
        std::fs::File::create(out).unwrap(),
        std::fs::File::create(out.with_extension("stderr")).unwrap(),
    )
}

/// Debezium's records so far, per topic (without the prefix), as `(key, value)`.
fn debezium_records(out: &std::path::Path) -> BTreeMap<String, Vec<(Json, Json)>> {
    let mut topics: BTreeMap<String, Vec<(Json, Json)>> = BTreeMap::new();
    for line in std::fs::read_to_string(out).unwrap_or_default().lines() {
        let Ok(record) = serde_json::from_str::<Json>(line) else {
            continue; // a line being written
        };
        let topic = record["topic"].as_str().unwrap().to_owned();
        topics
            .entry(topic)
            .or_default()
            .push((record["key"].clone(), record["value"].clone()));
    }
    topics
}

/// sluice's records in Kafka for log topic `topic`, as `(key, value)` JSON.
fn sluice_records(db: &TestDb, topic: &str) -> Vec<(Json, Json)> {
    consume(&format!("{}.{topic}", db.name), None)
        .into_iter()
        .map(|(_, key, value)| {
            let parse = |v: Json| {
                v.as_str()
                    .map_or(Json::Null, |s| serde_json::from_str(s).unwrap())
            };
            (parse(key), parse(value))
        })
        .collect()
}

/// Removes what cannot be the same in two captures of one change: the writer's version and
/// processing times; for snapshot rows, each snapshot's own transaction, time and LSN. Of
/// `sequence`, only the event's own LSN is compared (docs/types.md).
fn comparable(mut value: Json) -> Json {
    let Some(envelope) = value.as_object_mut() else {
        return value;
    };
    for field in ["ts_ms", "ts_us", "ts_ns"] {
        assert!(envelope.remove(field).is_some(), "{field} in {envelope:?}");
    }
    let snapshot = envelope["op"] == "r";
    let source = envelope["source"].as_object_mut().unwrap();
    source.remove("version");
    let sequence = source.remove("sequence").unwrap();
    let sequence: Vec<Json> = serde_json::from_str(sequence.as_str().unwrap()).unwrap();
    source.insert("sequence_lsn".into(), sequence[1].clone());
    if snapshot {
        for field in ["ts_ms", "ts_us", "ts_ns", "lsn", "txId", "sequence_lsn"] {
            source.remove(field);
        }
        // Which table comes first is each snapshot's own choice: the snapshot's first and
        // last rows are compared as their tables' (and counted apart).
        let marker = match source["snapshot"].as_str() {
            Some("first") => "first_in_data_collection",
            Some("last") => "last_in_data_collection",
            Some(other) => other,
            None => "?",
        };
        source.insert("snapshot".into(), marker.into());
    }
    value
}

/// How many records carry the snapshot marker `marker`.
fn marked<'a>(records: impl IntoIterator<Item = &'a (Json, Json)>, marker: &str) -> usize {
    records
        .into_iter()
        .filter(|(_, value)| value["source"]["snapshot"] == marker)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_records_equal_debeziums_for_the_same_snapshot_and_changes() {
    services(&["up", "debezium"]);
    let db = TestDb::create();
    db.exec(TABLE);
    db.exec(SNAPSHOT_ROWS);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("debezium.jsonl");
    let mut debezium = start_debezium(&db, &out, &[]);
    let mut sluice = Sluice::new(&format!(
        "{}\n{}",
        source_config(&db, ""),
        kafka_sink(&db.name, &db.name, "")
    ));
    sluice.start();
    db.wait_for_streaming().await;
    let snapshot_rows = 5;
    wait_for(Duration::from_secs(120), "Debezium's snapshot", || {
        debezium_records(&out).values().map(Vec::len).sum::<usize>() >= snapshot_rows
    })
    .await;
    // Debezium streams once its snapshot is done; give it a moment to open its stream.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for change in CHANGES {
        db.exec(change);
    }
    // 1 + 3 + (1 + tombstone) + 1 + 1 records after the snapshot.
    let total = snapshot_rows + 8;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while debezium_records(&out).values().map(Vec::len).sum::<usize>() < total {
        assert!(
            std::time::Instant::now() < deadline,
            "Debezium wrote {:?}; its log:\n{}",
            debezium_records(&out),
            std::fs::read_to_string(out.with_extension("stderr")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_for(Duration::from_secs(60), "every record in Kafka", || {
        sluice_records(&db, "src.public.t").len() + sluice_records(&db, "src.public.other").len()
            >= total
    })
    .await;
    debezium.stop();

    let theirs = debezium_records(&out);
    let ours: Vec<(Json, Json)> = theirs
        .keys()
        .flat_map(|topic| sluice_records(&db, topic))
        .collect();
    for marker in ["first", "last"] {
        assert_eq!(
            marked(theirs.values().flatten(), marker),
            1,
            "Debezium: one {marker}"
        );
        assert_eq!(
            marked(&ours, marker),
            1,
            "sluice: one {marker} row: {ours:?}"
        );
    }
    let mut differences = Vec::new();
    for (topic, records) in &theirs {
        let ours = sluice_records(&db, topic);
        assert_eq!(
            ours.len(),
            records.len(),
            "{topic}: as many records as Debezium's"
        );
        for (n, ((their_key, their_value), (our_key, our_value))) in
            records.iter().zip(&ours).enumerate()
        {
            assert_eq!(our_key, their_key, "{topic} record {n}: the key");
            let (theirs, ours) = (
                comparable(their_value.clone()),
                comparable(our_value.clone()),
            );
            if theirs != ours {
                differences.push(format!(
                    "{topic} record {n}:\n  Debezium: {theirs}\n  sluice:   {ours}"
                ));
            }
        }
    }
    assert!(
        differences.is_empty(),
        "records that differ from Debezium's:\n{}",
        differences.join("\n")
    );
    assert_eq!(sluice.stop(), Some(0), "{}", sluice.stderr());
}

/// `(key, value)` of a transaction topic record with the parts each tool has its own of
/// removed: nothing but the id's form, which the comparison maps.
fn boundary(record: &(Json, Json)) -> (String, Json) {
    let (key, value) = record;
    assert_eq!(key["id"], value["id"], "the key is the id: {record:?}");
    (value["status"].as_str().unwrap().to_owned(), value.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_metadata_equals_debeziums_begin_end_records_and_event_blocks() {
    services(&["up", "debezium"]);
    let db = TestDb::create();
    db.exec(
        "CREATE TABLE a (id int PRIMARY KEY, v text); CREATE TABLE b (id int PRIMARY KEY); \
         INSERT INTO a VALUES (0, 'before')",
    );
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("debezium.jsonl");
    let mut debezium = start_debezium(&db, &out, &["provide.transaction.metadata=true"]);
    // A database sink on every topic of the source: it passes the BEGIN/END records over.
    let replica = TestDb::create();
    let mut sluice = Sluice::new(&format!(
        "{}\n[[sinks]]\nname = \"k_{}\"\nkind = \"kafka\"\nbrokers = \"127.0.0.1:9092\"\n\
         topics = [\"src.public.*\", \"src.transaction\"]\ntopic = \"{}.{{topic}}\"\n\
         transaction_metadata = true\n\
         [[sinks]]\nname = \"replica\"\nkind = \"postgres\"\nurl = \"{}\"\ntopics = [\"src.*\"]\n",
        source_config(&db, "transaction_metadata = true"),
        db.name,
        db.name,
        replica.url()
    ));
    sluice.start();
    db.wait_for_streaming().await;
    // Debezium streams once its snapshot (one row) is done.
    wait_for(Duration::from_secs(120), "Debezium's snapshot", || {
        debezium_records(&out)
            .get("src.public.a")
            .is_some_and(|records| !records.is_empty())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let changes = [
        "INSERT INTO a VALUES (1, 'x')",
        "BEGIN; INSERT INTO a VALUES (2, 'y'); INSERT INTO b VALUES (1), (2); \
         UPDATE a SET v = 'z' WHERE id = 1; DELETE FROM b WHERE id = 1; COMMIT",
        "BEGIN; INSERT INTO b VALUES (3); INSERT INTO a VALUES (3, 'w'); COMMIT",
    ];
    for change in changes {
        db.exec(change);
    }
    // Three transactions: BEGIN and END each; the snapshot row, 1 + 5 + 2 events and a
    // tombstone.
    let count = |topic: &str| debezium_records(&out).get(topic).map_or(0, Vec::len);
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while count("src.transaction") < 6 || count("src.public.a") + count("src.public.b") < 10 {
        assert!(
            std::time::Instant::now() < deadline,
            "Debezium wrote {:?}; its log:\n{}",
            debezium_records(&out),
            std::fs::read_to_string(out.with_extension("stderr")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_for(
        Duration::from_secs(60),
        "the transaction records in Kafka",
        || sluice_records(&db, "src.transaction").len() >= 6,
    )
    .await;
    debezium.stop();
    let theirs = debezium_records(&out);

    // The BEGIN/END records: the same statuses, counts, tables and commit times, in order.
    let their_boundaries: Vec<(String, Json)> =
        theirs["src.transaction"].iter().map(boundary).collect();
    let our_boundaries: Vec<(String, Json)> = sluice_records(&db, "src.transaction")
        .iter()
        .map(boundary)
        .collect();
    assert_eq!(our_boundaries.len(), 6, "{our_boundaries:?}");
    let comparable_boundary = |(status, value): &(String, Json)| {
        let mut value = value.clone();
        value.as_object_mut().unwrap().remove("id");
        // Debezium lists the tables in its hash map's order, sluice by name.
        if let Some(tables) = value["data_collections"].as_array_mut() {
            tables.sort_by_key(|t| t["data_collection"].as_str().unwrap().to_owned());
        }
        (status.clone(), value)
    };
    assert_eq!(
        our_boundaries
            .iter()
            .map(comparable_boundary)
            .collect::<Vec<_>>(),
        their_boundaries
            .iter()
            .map(comparable_boundary)
            .collect::<Vec<_>>(),
        "BEGIN/END records"
    );
    let ids = |boundaries: &[(String, Json)]| -> Vec<Json> {
        boundaries.iter().map(|(_, v)| v["id"].clone()).collect()
    };
    // The same transactions (xids). sluice names a transaction alike in its BEGIN, END and
    // events (`xid:commit LSN`); Debezium's Postgres connector puts the LSN of the record
    // at hand into each (docs/types.md).
    let xids = |boundaries: &[(String, Json)]| -> Vec<String> {
        ids(boundaries)
            .iter()
            .map(|id| id.as_str().unwrap().split(':').next().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        xids(&our_boundaries),
        xids(&their_boundaries),
        "transactions"
    );
    for pair in our_boundaries.chunks(2) {
        assert_eq!(pair[0].1["id"], pair[1].1["id"], "BEGIN and END: {pair:?}");
    }
    // Each transaction's END counts its events per table.
    assert_eq!(
        our_boundaries[3].1["data_collections"],
        serde_json::json!([
            {"data_collection": "public.a", "event_count": 2},
            {"data_collection": "public.b", "event_count": 3}
        ]),
        "{our_boundaries:?}"
    );

    // Every event's transaction block: the same orders; the id names the same transaction
    // as the BEGIN/END records around it.
    for topic in ["src.public.a", "src.public.b"] {
        let ours: Vec<Json> = sluice_records(&db, topic)
            .into_iter()
            .filter(|(_, value)| !value.is_null())
            .map(|(_, value)| value["transaction"].clone())
            .collect();
        let theirs: Vec<Json> = theirs[topic]
            .iter()
            .filter(|(_, value)| !value.is_null())
            .map(|(_, value)| value["transaction"].clone())
            .collect();
        assert_eq!(ours.len(), theirs.len(), "{topic}");
        for (our, their) in ours.iter().zip(&theirs) {
            if our.is_null() {
                // The snapshot row: in no transaction, for both.
                assert!(their.is_null(), "{topic}: {their}");
                continue;
            }
            assert_eq!(
                our["total_order"], their["total_order"],
                "{topic}: {our} vs {their}"
            );
            assert_eq!(
                our["data_collection_order"], their["data_collection_order"],
                "{topic}: {our} vs {their}"
            );
            let ids = |boundaries: &[(String, Json)]| -> Vec<Json> {
                boundaries.iter().map(|(_, v)| v["id"].clone()).collect()
            };
            assert!(ids(&our_boundaries).contains(&our["id"]), "{our}");
        }
    }
    // The replica took the rows and passed the BEGIN/END records over.
    let rows = |db: &TestDb| {
        db.exec("SELECT 'a', id, v FROM a UNION ALL SELECT 'b', id, NULL FROM b ORDER BY 1, 2")
    };
    wait_for(
        Duration::from_secs(60),
        "the replica equal to the source",
        || rows(&replica) == rows(&db),
    )
    .await;
    assert_eq!(sluice.stop(), Some(0), "{}", sluice.stderr());
}
