//! The Kafka sink against a real Apache Kafka 4.4 broker (`dev/services up kafka`): a Postgres
//! table written to while sluice is killed with -9 three times and the broker is stopped and
//! started again reaches Kafka with every event
//! exactly once for a `read_committed` consumer (Confluent's client), in the log's order per
//! key, each key in the partition Kafka's Java partitioner gives it (asked of kafka-clients
//! itself).

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value as Json;
use sluice_integration_tests::kafka::{
    console_consumer, consume, deny_writes, kafka_records, kafka_sink, kill_broker, services,
};
use sluice_integration_tests::{
    events, free_port, sluice_command, source_config, wait_for, workspace_root, Rng, Sluice, TestDb,
};

/// The partition Kafka's Java producer gives each key among `partitions`, from kafka-clients'
/// own `Utils.murmur2`.
fn java_partitions(keys: &[String], partitions: usize) -> Vec<usize> {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("Partition.java");
    std::fs::write(
        &source,
        "import org.apache.kafka.common.utils.Utils;\n\
         public class Partition { public static void main(String[] a) throws Exception {\n\
           int n = Integer.parseInt(a[0]);\n\
           java.io.BufferedReader r = new java.io.BufferedReader(new java.io.InputStreamReader(System.in));\n\
           for (String line; (line = r.readLine()) != null; ) {\n\
             byte[] key = java.util.HexFormat.of().parseHex(line);\n\
             System.out.println(Utils.toPositive(Utils.murmur2(key)) % n);\n\
           } } }\n",
    )
    .unwrap();
    // kafka-clients and what it needs (slf4j), as dev/services puts them there.
    let jars = workspace_root().join("target/jars/*");
    let mut child = Command::new("java")
        .arg("-cp")
        .arg(&jars)
        .arg(&source)
        .arg(partitions.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run java");
    {
        let mut stdin = child.stdin.take().unwrap();
        for key in keys {
            let hex: String = key.bytes().map(|b| format!("{b:02x}")).collect();
            writeln!(stdin, "{hex}").unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "java failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_reaches_kafka_once_across_kill_9_in_the_partition_java_gives_its_key() {
    let db = TestDb::create();
    db.exec("CREATE TABLE t (id int PRIMARY KEY, v int NOT NULL)");
    // Topics and the transactional id are the broker's, shared by every run: the database's
    // name keeps them apart.
    let kafka_topic = format!("{}.src.public.t", db.name);
    let mut sluice = Sluice::new(&format!(
        "{}\n{}",
        source_config(&db, "max_batch_events = 200"),
        kafka_sink(
            &db.name,
            &db.name,
            "partitions = 3\nformat = \"sluice\"\n\
             properties = { \"message.timeout.ms\" = \"3000\" }\n"
        )
    ));
    sluice.start();
    db.wait_for_streaming().await;

    // The writer runs until after the broker is back: inserts, updates of earlier rows, and
    // deletes (tombstones follow them).
    let stop = Arc::new(AtomicBool::new(false));
    let writer_stop = Arc::clone(&stop);
    let writer_db = db.url();
    let writer = sluice_core::task::spawn_in_span(async move {
        let client = sluice_integration_tests::writer_client(&writer_db).await;
        let mut rng = Rng::new(5);
        let mut id = 0i32;
        while !writer_stop.load(Ordering::Relaxed) {
            id += 1;
            client
                .execute("INSERT INTO t VALUES ($1, 0)", &[&id])
                .await
                .unwrap();
            let other = 1 + rng.below(id as u64) as i32;
            client
                .execute("UPDATE t SET v = v + 1 WHERE id = $1", &[&other])
                .await
                .unwrap();
            if id % 7 == 0 {
                client
                    .execute("DELETE FROM t WHERE id = $1", &[&(id - 3)])
                    .await
                    .unwrap();
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        id
    });
    // Each run is killed once its sink has resumed from Kafka and delivered for a while (a
    // fresh broker can take seconds to load the transaction coordinator).
    let opened = |sluice: &Sluice| {
        sluice
            .stderr()
            .matches("resuming after the offsets committed in Kafka")
            .count()
    };
    for run in 1..=3 {
        wait_for(Duration::from_secs(60), "the sink open", || {
            opened(&sluice) >= run
        })
        .await;
        tokio::time::sleep(Duration::from_millis(1000)).await;
        sluice.kill();
        sluice.start();
    }
    wait_for(Duration::from_secs(60), "the last run's sink open", || {
        opened(&sluice) >= 4
    })
    .await;
    // And the broker killed under the running sink for longer than the producer waits for a
    // record (`message.timeout.ms`, 3 s here, 60 s by default; the broker takes 10 s or more
    // to come back): the records in flight fail, the transaction aborts, and the sink retries
    // until the broker is back. (Killed, not stopped: see `kill_broker`.)
    tokio::time::sleep(Duration::from_millis(1000)).await;
    kill_broker();
    tokio::time::sleep(Duration::from_secs(5)).await;
    services(&["up", "kafka"]);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    let written = writer.await.unwrap();
    db.exec("INSERT INTO t VALUES (-1, 0)");
    wait_for(Duration::from_secs(120), "the marker row in Kafka", || {
        kafka_records(&kafka_topic)
            .iter()
            .any(|(_, key, _)| key.as_deref() == Some(r#"{"id":-1}"#))
    })
    .await;

    // Exactly the log's records (each once), per key in the log's order.
    let in_kafka = kafka_records(&kafka_topic);
    // Kafka's own ConsoleConsumer, read_committed, reads the same records.
    let mut console = console_consumer(&kafka_topic, in_kafka.len() + 1);
    let mut confluent: Vec<(Option<String>, Option<String>)> = in_kafka
        .iter()
        .map(|(_, key, value)| (key.clone(), value.clone()))
        .collect();
    console.sort();
    confluent.sort();
    if console != confluent {
        let only = |a: &[(Option<String>, Option<String>)],
                    b: &[(Option<String>, Option<String>)]| {
            let mut rest = b.to_vec();
            a.iter()
                .filter(|r| match rest.iter().position(|x| x == *r) {
                    Some(i) => {
                        rest.remove(i);
                        false
                    }
                    None => true,
                })
                .take(5)
                .cloned()
                .collect::<Vec<_>>()
        };
        panic!(
            "ConsoleConsumer read {} records, Confluent's client {}; only ConsoleConsumer's: \
             {:?}; only Confluent's: {:?}",
            console.len(),
            confluent.len(),
            only(&console, &confluent),
            only(&confluent, &console)
        );
    }
    let in_log = sluice.records("src.public.t");
    if in_kafka.len() != in_log.len() {
        // Which records differ, and how often each is there (a record twice in Kafka: a
        // transaction's records committed twice).
        let mut counts: BTreeMap<(String, String), (usize, usize)> = BTreeMap::new();
        for (_, key, value) in &in_kafka {
            let value = value
                .as_deref()
                .map_or(Json::Null, |v| serde_json::from_str(v).unwrap());
            let key: Json = serde_json::from_str(key.as_deref().unwrap()).unwrap();
            counts
                .entry((key.to_string(), value.to_string()))
                .or_default()
                .0 += 1;
        }
        for (key, value) in &in_log {
            counts
                .entry((key.to_string(), value.to_string()))
                .or_default()
                .1 += 1;
        }
        let differ: Vec<_> = counts.iter().filter(|(_, (k, l))| k != l).collect();
        panic!(
            "Kafka holds {} records, the log {}: {} records differ, e.g. (record, in Kafka, in \
             the log): {:?}",
            in_kafka.len(),
            in_log.len(),
            differ.len(),
            &differ[..differ.len().min(4)]
        );
    }
    let per_key = |records: Vec<(String, Json)>| {
        let mut keys: BTreeMap<String, Vec<Json>> = BTreeMap::new();
        for (key, value) in records {
            keys.entry(key).or_default().push(value);
        }
        keys
    };
    let kafka_by_key = per_key(
        in_kafka
            .iter()
            .map(|(_, key, value)| {
                let key: Json = serde_json::from_str(key.as_deref().unwrap()).unwrap();
                let value = value
                    .as_deref()
                    .map_or(Json::Null, |v| serde_json::from_str(v).unwrap());
                (key.to_string(), value)
            })
            .collect(),
    );
    let log_by_key = per_key(
        in_log
            .iter()
            .map(|(key, value)| (key.to_string(), value.clone()))
            .collect(),
    );
    assert_eq!(kafka_by_key.len(), written as usize + 1, "every key");
    assert!(
        kafka_by_key == log_by_key,
        "per key, Kafka holds the log's records in its order"
    );
    let deletes = events(&in_log).iter().filter(|e| e["op"] == "d").count();
    let tombstones = in_kafka.iter().filter(|(_, _, v)| v.is_none()).count();
    assert!(
        deletes > 400 && tombstones == deletes,
        "a tombstone after each of the {deletes} deletes: {tombstones}"
    );

    // Each key where Java's producer would put it.
    let keys: Vec<String> = in_kafka
        .iter()
        .map(|(_, k, _)| k.clone().unwrap())
        .collect();
    let java = java_partitions(&keys, 3);
    for ((partition, key, _), expected) in in_kafka.iter().zip(&java) {
        assert_eq!(*partition as usize, *expected, "key {key:?}");
    }
    assert!(opened(&sluice) >= 4, "{}", sluice.stderr());
    // The broker's absence is seen: a write failed and was retried, or (when the outage fell
    // between writes, or a write simply waited it out) librdkafka reported it.
    let stderr = sluice.stderr();
    assert!(
        stderr.contains("sink write failed; reopening") || stderr.contains("AllBrokersDown"),
        "the broker's absence was seen: {stderr}"
    );
    assert_eq!(sluice.stop(), Some(0), "{}", sluice.stderr());
}

/// Every record of an Avro topic decoded by Confluent's `AvroDeserializer` against the
/// registry at `registry`, as `(key, value)` JSON (value null: a tombstone).
fn kafka_avro_records(topic: &str, registry: &str) -> Vec<(Json, Json)> {
    consume(topic, Some(registry))
        .into_iter()
        .map(|(_, key, value)| (key, value))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn avro_records_in_kafka_decode_with_confluents_deserializer_against_sluices_registry() {
    let db = TestDb::create();
    db.exec(
        "CREATE TABLE items (id bigint PRIMARY KEY, name text NOT NULL, price numeric(10,2)); \
         INSERT INTO items SELECT g, 'item ' || g, g / 4.0 FROM generate_series(1, 300) g",
    );
    let port = free_port();
    let api = free_port();
    let kafka_topic = format!("{}.src.public.items", db.name);
    let mut sluice = Sluice::new(&format!(
        "[api]\nlisten = \"127.0.0.1:{api}\"\n[registry]\nlisten = \"127.0.0.1:{port}\"\n\n{}\n{}",
        source_config(&db, "encoding = \"avro\""),
        kafka_sink(&db.name, &db.name, "")
    ));
    sluice.start();
    db.wait_for_streaming().await;
    db.exec("UPDATE items SET name = 'renamed' WHERE id = 7; DELETE FROM items WHERE id = 9");
    let registry = format!("http://127.0.0.1:{port}");
    wait_for(Duration::from_secs(60), "every record in Kafka", || {
        kafka_avro_records(&kafka_topic, &registry).len() >= 303
    })
    .await;
    let records = kafka_avro_records(&kafka_topic, &registry);
    assert_eq!(
        records.len(),
        303,
        "300 reads, an update, a delete and its tombstone"
    );
    // Keys decode to the table's keys; values to Debezium's envelope.
    let keys: std::collections::BTreeSet<i64> = records
        .iter()
        .map(|(k, _)| k["id"].as_i64().unwrap())
        .collect();
    assert_eq!(keys, (1..=300).collect());
    let update = records
        .iter()
        .find(|(_, v)| v["op"] == "u")
        .expect("the update");
    assert_eq!(update.0["id"], 7);
    assert_eq!(update.1["after"]["name"], "renamed");
    assert_eq!(update.1["after"]["id"], 7);
    let tombstone = records
        .iter()
        .position(|(_, v)| v.is_null())
        .expect("a tombstone");
    assert_eq!(records[tombstone].0["id"], 9);
    assert_eq!(
        records[tombstone - 1].1["op"],
        "d",
        "the tombstone follows the delete"
    );
    // The produce metrics count them.
    let metrics = sluice_integration_tests::http_get(api, "/metrics").1;
    let sink = format!("sink=\"k_{}\"", db.name);
    let value = |name: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(name) && l.contains(&sink))
            .unwrap_or_else(|| panic!("no {name} for the sink in:\n{metrics}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .parse::<f64>()
            .unwrap()
    };
    assert_eq!(value("sluice_kafka_produced_records_total"), 303.0);
    assert!(value("sluice_kafka_produced_bytes_total") > 303.0 * 10.0);
    assert!(value("sluice_kafka_transactions_total") >= 1.0);
    assert_eq!(sluice.stop(), Some(0), "{}", sluice.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_larger_than_kafka_takes_stops_the_sink_naming_its_key_and_size() {
    let db = TestDb::create();
    db.exec(
        "CREATE TABLE docs (id int PRIMARY KEY, body text); \
         INSERT INTO docs VALUES (1, 'small'), (2, repeat('x', 5000))",
    );
    let mut sluice = Sluice::new(&format!(
        "{}\n{}",
        source_config(&db, ""),
        kafka_sink(
            &db.name,
            &db.name,
            "properties = { \"message.max.bytes\" = \"2000\" }\n"
        )
    ));
    sluice.start();
    wait_for(Duration::from_secs(60), "the sink to stop", || {
        sluice
            .stderr()
            .contains("is larger than the broker or producer accepts")
    })
    .await;
    let stderr = sluice.stderr();
    assert!(
        stderr.contains(r#"key {"id":2}"#) && stderr.contains("src.public.docs[0]"),
        "the record is named: {stderr}"
    );
    assert!(sluice.is_running(), "the rest of the pipeline goes on");
    // A clean stop still exits 1: a sink failed.
    assert_eq!(sluice.stop(), Some(1), "{}", sluice.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_the_sink_may_not_write_stops_it_naming_the_topic() {
    let db = TestDb::create();
    db.exec("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)");
    let denied = format!("denied_{}", db.name);
    deny_writes(&denied);
    let mut sluice = Sluice::new(&format!(
        "{}\n{}",
        source_config(&db, ""),
        kafka_sink(&db.name, &denied, "")
    ));
    sluice.start();
    wait_for(Duration::from_secs(60), "the sink to stop", || {
        sluice.stderr().contains("Topic authorization failed")
    })
    .await;
    let stderr = sluice.stderr();
    assert!(
        stderr.contains(&format!("producing to topic {denied}.src.public.t"))
            && stderr.contains("grant the sink's principal WRITE"),
        "the topic is named, with what to do: {stderr}"
    );
    assert!(sluice.is_running(), "the rest of the pipeline goes on");
    assert_eq!(sluice.stop(), Some(1), "{}", sluice.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_larger_than_kafka_takes_goes_to_the_dead_letter_topic_and_the_rest_flows() {
    let db = TestDb::create();
    db.exec(
        "CREATE TABLE docs (id int PRIMARY KEY, body text); \
         INSERT INTO docs VALUES (1, 'small'), (2, repeat('x', 5000)), (3, 'after it')",
    );
    let kafka_topic = format!("{}.src.public.docs", db.name);
    let mut sluice = Sluice::new(&format!(
        "{}\n{}",
        source_config(&db, ""),
        kafka_sink(
            &db.name,
            &db.name,
            "dead_letter_topic = \"kafka.dead\"\n\
             properties = { \"message.max.bytes\" = \"2000\" }\n"
        )
    ));
    sluice.start();
    db.wait_for_streaming().await;
    db.exec("INSERT INTO docs VALUES (4, 'streamed')");
    wait_for(Duration::from_secs(60), "the streamed row in Kafka", || {
        kafka_records(&kafka_topic)
            .iter()
            .any(|(_, key, _)| key.as_deref() == Some(r#"{"id":4}"#))
    })
    .await;
    let keys: Vec<String> = kafka_records(&kafka_topic)
        .into_iter()
        .filter_map(|(_, key, _)| key)
        .collect();
    assert_eq!(
        keys,
        [r#"{"id":1}"#, r#"{"id":3}"#, r#"{"id":4}"#],
        "every record but the refused one, once"
    );
    let dead = sluice.records("kafka.dead");
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].1["after"]["id"], 2);
    // `check --connect` finds the brokers and that they grant the sink transactions.
    let (code, check) = sluice_command(&["check", "--connect"], &sluice.config);
    assert_eq!(code, Some(0), "{check}");
    assert!(check.contains("transactions allowed"), "{check}");
    // `sluice status` counts the diverted record as handled, per topic.
    let (code, status) = sluice_command(&["status"], &sluice.config);
    assert_eq!(code, Some(0), "{status}");
    assert!(
        status.contains("src.public.docs: 4 of 4 record(s) delivered (0 behind)"),
        "{status}"
    );
    assert!(
        sluice
            .stderr()
            .contains("Kafka refused a record as too large: to the dead-letter topic"),
        "{}",
        sluice.stderr()
    );
    assert_eq!(sluice.stop(), Some(0), "{}", sluice.stderr());
}

/// At least once (brokers without transactions): rounds are acknowledged in the background
/// and only what Kafka acknowledged moves the sink's offsets in the log, so a `kill -9` while
/// records are in flight loses none (they are sent again). Kafka's last record per key equals
/// the table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_least_once_loses_nothing_across_kill_9() {
    let db = TestDb::create();
    db.exec(
        "CREATE TABLE t (id int PRIMARY KEY, n int NOT NULL); \
         INSERT INTO t SELECT g, 0 FROM generate_series(1, 2000) g",
    );
    let kafka_topic = format!("{}.src.public.t", db.name);
    let mut sluice = Sluice::new(&format!(
        "{}\n{}",
        source_config(&db, ""),
        kafka_sink(&db.name, &db.name, "delivery = \"at_least_once\"\n")
    ));
    sluice.start();
    db.wait_for_streaming().await;
    for step in 1..=20 {
        db.exec(&format!(
            "UPDATE t SET n = {step} WHERE id % 20 = {}",
            step % 20
        ));
    }
    sluice.kill();
    db.exec("UPDATE t SET n = n + 100 WHERE id % 5 = 0; DELETE FROM t WHERE id % 7 = 0");
    sluice.start();
    let table: BTreeMap<i64, Option<i64>> = {
        let rows = db.exec("SELECT id, n FROM t");
        let mut all: BTreeMap<i64, Option<i64>> = (1..=2000).map(|id| (id, None)).collect();
        for line in rows.lines() {
            let (id, n) = line.split_once('|').unwrap();
            all.insert(id.parse().unwrap(), Some(n.parse().unwrap()));
        }
        all
    };
    let last_per_key = || -> BTreeMap<i64, Option<i64>> {
        let mut folded = BTreeMap::new();
        for (_, key, value) in kafka_records(&kafka_topic) {
            let key: Json = serde_json::from_str(&key.unwrap_or_default()).unwrap_or(Json::Null);
            let Some(id) = key["id"].as_i64() else {
                continue;
            };
            let n = value
                .and_then(|v| serde_json::from_str::<Json>(&v).ok())
                .and_then(|v| v["after"]["n"].as_i64());
            folded.insert(id, n);
        }
        folded
    };
    wait_for(
        Duration::from_secs(90),
        "Kafka's last record per key equal to the table",
        || last_per_key() == table,
    )
    .await;
    assert!(
        sluice
            .stderr()
            .contains("Kafka sink connected; at least once"),
        "{}",
        sluice.stderr()
    );
    assert_eq!(sluice.stop(), Some(0), "{}", sluice.stderr());
}

/// Transforms on the Kafka sink: an outbox table's inserts become events on a topic per
/// aggregate type, keyed by the aggregate id with the payload as the value (Debezium's
/// EventRouter), and the outbox topic itself gets nothing; another table's changes are
/// filtered, masked and unwrapped into rows, a delete into a tombstone under its key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transforms_route_outbox_events_and_reshape_rows_into_kafka() {
    let db = TestDb::create();
    db.exec(
        "CREATE TABLE orders (id int PRIMARY KEY, email text, total int); \
         CREATE TABLE notes (id int PRIMARY KEY, body text); \
         CREATE TABLE outbox (id text PRIMARY KEY, aggregatetype text, aggregateid text, \
                              type text, payload jsonb)",
    );
    let topic = |name: &str| format!("{}.{name}", db.name);
    let mut sluice = Sluice::new(&format!(
        "{}\n{}\
         [[sinks.transforms]]\ntype = \"outbox\"\ntopics = [\"src.public.outbox\"]\n\
         [[sinks.transforms]]\ntype = \"filter\"\ntopics = [\"src.public.orders\"]\n\
         when = \"__op = 'd' or total > 10\"\n\
         [[sinks.transforms]]\ntype = \"mask\"\ntopics = [\"src.public.orders\"]\n\
         columns = [\"email\"]\nwith = \"redact\"\n\
         [[sinks.transforms]]\ntype = \"unwrap\"\ntopics = [\"src.public.orders\"]\n",
        source_config(&db, ""),
        kafka_sink(&db.name, &db.name, ""),
    ));
    sluice.start();
    db.wait_for_streaming().await;
    db.exec(
        "BEGIN; \
         INSERT INTO orders VALUES (1, 'a@x.org', 5), (2, 'b@x.org', 50); \
         INSERT INTO outbox VALUES ('e1', 'order', 'o-2', 'OrderPlaced', '{\"total\": 50}'); \
         DELETE FROM outbox WHERE id = 'e1'; \
         COMMIT; \
         BEGIN; \
         UPDATE orders SET total = 60 WHERE id = 2; \
         INSERT INTO outbox VALUES ('e2', 'order', 'o-2', 'OrderChanged', '{\"total\": 60}'), \
                                   ('e3', 'customer', 'c-9', 'Signed', '{\"name\": \"Ann\"}'); \
         DELETE FROM orders WHERE id = 2; \
         INSERT INTO notes VALUES (7, 'kept whole'); \
         COMMIT;",
    );
    let orders = topic("src.public.orders");
    wait_for(
        Duration::from_secs(60),
        "the orders' records in Kafka",
        || kafka_records(&orders).len() >= 3,
    )
    .await;
    let rows: Vec<(Option<String>, Option<Json>)> = kafka_records(&orders)
        .into_iter()
        .map(|(_, key, value)| (key, value.map(|v| serde_json::from_str(&v).unwrap())))
        .collect();
    let key = Some(r#"{"id":2}"#.to_owned());
    assert_eq!(
        rows,
        [
            (
                key.clone(),
                Some(serde_json::json!({"id": 2, "email": "****", "total": 50}))
            ),
            (
                key.clone(),
                Some(serde_json::json!({"id": 2, "email": "****", "total": 60}))
            ),
            (key, None),
        ],
        "order 1 filtered out, the email redacted, rows unwrapped, the delete a tombstone"
    );
    let events = |name: &str| -> Vec<(String, Json)> {
        kafka_records(&topic(name))
            .into_iter()
            .map(|(_, key, value)| (key.unwrap(), serde_json::from_str(&value.unwrap()).unwrap()))
            .collect()
    };
    wait_for(Duration::from_secs(30), "the customer event", || {
        events("outbox.event.customer").len() == 1
    })
    .await;
    assert_eq!(
        events("outbox.event.order"),
        [
            ("o-2".to_owned(), serde_json::json!({"total": 50})),
            ("o-2".to_owned(), serde_json::json!({"total": 60})),
        ]
    );
    assert_eq!(
        events("outbox.event.customer"),
        [("c-9".to_owned(), serde_json::json!({"name": "Ann"}))]
    );
    assert!(
        kafka_records(&topic("src.public.outbox")).is_empty(),
        "the outbox table itself is not delivered"
    );
    // A table no transform names goes as Debezium's envelope (without the schema part).
    let notes = kafka_records(&topic("src.public.notes"));
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert_eq!(notes[0].1.as_deref(), Some(r#"{"id":7}"#));
    let note: Json = serde_json::from_str(notes[0].2.as_deref().unwrap()).unwrap();
    assert_eq!(note["op"], "c", "{note}");
    assert_eq!(
        note["after"],
        serde_json::json!({"id": 7, "body": "kept whole"})
    );
    assert_eq!(note["before"], Json::Null);
    // Records dropped by the transforms count as delivered: nothing is behind.
    wait_for(
        Duration::from_secs(30),
        "status to show both topics delivered",
        || {
            let (_, status) = sluice_command(&["status"], &sluice.config);
            status.matches("(0 behind)").count() == 3
        },
    )
    .await;
    assert_eq!(sluice.stop(), Some(0), "{}", sluice.stderr());
}
