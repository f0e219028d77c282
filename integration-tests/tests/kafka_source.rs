//! The Kafka source against a real broker: a Postgres table captured by Debezium 3.6.1 itself
//! (its embedded engine sending each record to Kafka, JSON with or without schemas) is read
//! from Kafka by sluice and applied by its Postgres sink: the replica equals the table,
//! through a snapshot, inserts, updates, deletes and a sluice restart. And Debezium's Avro
//! (written by Confluent's serializer against sluice's registry) arrives typed and exact; a
//! topic pattern picks up topics created while sluice runs. The move off Debezium (sluice's own
//! source started beside it, then the cut-over) keeps the replica equal, without a snapshot.

use std::time::Duration;

use sluice_integration_tests::kafka::{consume, debezium, services, BROKERS};
use sluice_integration_tests::{run_ok, wait_for, Sluice, TestDb};

/// Every row of `t`, ordered, as text (to compare a replica with its source).
fn rows(db: &TestDb) -> String {
    db.exec("SELECT * FROM t ORDER BY id")
}

/// Debezium (with `schemas`: JSON with schemas) captures `source` into Kafka topics
/// `<prefix>.public.t`; sluice reads them into `target`. Returns once the replica equals the
/// source, after changes made while both run and a restart of sluice; with `cut_over`, after
/// the move off Debezium that docs/migrating-from-debezium.md describes too.
async fn replicate_through_debezium(
    source: &TestDb,
    target: &TestDb,
    schemas: bool,
    cut_over: bool,
) {
    services(&["up", "debezium"]);
    let prefix = format!("dbz_{}", source.name);
    let schemas_enable = format!("converter.schemas.enable={schemas}");
    let engine = debezium(
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
    assert!(
        sluice.stderr().contains("reading Kafka"),
        "{}",
        sluice.stderr()
    );
    if cut_over {
        move_off_debezium(&mut sluice, engine, source, target, &prefix, &topic).await;
    }
    assert_eq!(sluice.stop(), Some(0), "{}", sluice.stderr());
}

/// The migration guide's steps, with a writer between them: sluice's own Postgres source,
/// named as Debezium's topic prefix, streams from a slot of its own (no snapshot) while
/// Debezium still runs; once the Kafka source has passed that point, Debezium stops and the
/// sink moves to the new source's topics, read from their start. The replica equals the
/// source throughout, with no row taken again.
async fn move_off_debezium(
    sluice: &mut Sluice,
    mut engine: sluice_integration_tests::kafka::Debezium,
    source: &TestDb,
    target: &TestDb,
    prefix: &str,
    topic: &str,
) {
    let kafka_source = format!(
        "[[sources]]\nname = \"mig\"\nkind = \"kafka\"\nbrokers = \"{BROKERS}\"\n\
         topics = [\"{topic}\"]\n\n"
    );
    let own_source = format!(
        "[[sources]]\nname = \"{prefix}\"\nkind = \"postgres\"\nurl = \"{}\"\n\
         tables = [\"public.t\"]\nslot = \"sluice_{}\"\nsnapshot = \"never\"\n\n",
        source.url(),
        source.name
    );
    let sink = |topics: &str| {
        format!(
            "[[sinks]]\nname = \"replica\"\nkind = \"postgres\"\nurl = \"{}\"\ntopics = [\"{topics}\"]\n",
            target.url()
        )
    };
    assert_eq!(sluice.stop(), Some(0), "{}", sluice.stderr());
    sluice.reconfigure(&format!(
        "{kafka_source}{own_source}{}",
        sink("mig.public.*")
    ));
    sluice.start();
    wait_for(
        Duration::from_secs(60),
        "sluice's own source to stream",
        || sluice.stderr().contains("streaming slot="),
    )
    .await;
    // Both paths carry these changes: through Debezium's topics, and in sluice's own slot.
    source.exec("INSERT INTO t VALUES (200, 2.50, 'both paths', false)");
    source.exec("UPDATE t SET label = 'via both', amount = 7.75 WHERE id = 2");
    wait_for(
        Duration::from_secs(120),
        "the Kafka source past the slot's start",
        || rows(target) == rows(source),
    )
    .await;
    // Cut over. Changes made now reach only sluice's slot.
    engine.stop();
    source.exec("DELETE FROM t WHERE id = 200");
    source.exec("INSERT INTO t VALUES (300, 3.00, 'after the cut-over', true)");
    assert_eq!(sluice.stop(), Some(0), "{}", sluice.stderr());
    sluice.reconfigure(&format!(
        "{own_source}{}",
        sink(&format!("{prefix}.public.*"))
    ));
    sluice.start();
    source.exec("UPDATE t SET label = 'after, again' WHERE id = 300");
    wait_for(
        Duration::from_secs(120),
        "the replica fed by sluice's own source",
        || rows(target) == rows(source),
    )
    .await;
    // The sink read the new source's topic from its start: the changes since the slot began,
    // the ones both paths carried included (applied again, to the same rows).
    let ids: Vec<i64> =
        sluice_integration_tests::events(&sluice.records(&format!("{prefix}.public.t")))
            .iter()
            .filter_map(|e| e["after"]["id"].as_i64().or(e["before"]["id"].as_i64()))
            .collect();
    assert_eq!(ids, [200, 2, 200, 300, 300], "{}", sluice.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debeziums_json_with_schemas_replicates_a_table_exactly() {
    let (source, target) = (TestDb::create(), TestDb::create());
    source.exec(
        "CREATE TABLE t (id int PRIMARY KEY, amount numeric(10,2), label text, flag bool); \
         INSERT INTO t VALUES (1, 10.50, 'one', true), (2, -0.01, NULL, false), (3, NULL, 'three', NULL)",
    );
    replicate_through_debezium(&source, &target, true, true).await;
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
    replicate_through_debezium(&source, &target, false, false).await;
}

/// Creates topic argv[1] on the broker at argv[2], registers Debezium's Avro schemas for it in
/// the registry at argv[3] (Confluent's client) and produces a Debezium change stream of table
/// `public.t` in Avro: three creates, an update, a delete and its tombstone.
const AVRO_PRODUCER: &str = r#"
import sys
from decimal import Decimal
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import SerializationContext, MessageField
topic, brokers, registry = sys.argv[1], sys.argv[2], sys.argv[3]
if sys.argv[4] == "create":
    admin = AdminClient({"bootstrap.servers": brokers})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result()
    sys.exit(0)
key_schema = '{"type":"record","name":"Key","namespace":"%s","fields":[{"name":"id","type":"int"}],"connect.name":"%s.Key"}' % (topic, topic)
value_schema = '''{"type":"record","name":"Envelope","namespace":"%s","connect.name":"%s.Envelope","fields":[
 {"name":"before","type":["null",{"type":"record","name":"Value","fields":[
   {"name":"id","type":"int"},
   {"name":"amount","type":["null",{"type":"bytes","scale":2,"precision":10,"connect.version":1,
     "connect.parameters":{"scale":"2","connect.decimal.precision":"10"},
     "connect.name":"org.apache.kafka.connect.data.Decimal","logicalType":"decimal"}],"default":null},
   {"name":"label","type":["null","string"],"default":null},
   {"name":"at","type":["null",{"type":"long","connect.version":1,"connect.name":"io.debezium.time.MicroTimestamp"}],"default":null}],
   "connect.name":"%s.Value"}],"default":null},
 {"name":"after","type":["null","Value"],"default":null},
 {"name":"source","type":{"type":"record","name":"Source","namespace":"io.debezium.connector.postgresql","fields":[
   {"name":"version","type":"string"},{"name":"connector","type":"string"},{"name":"name","type":"string"},
   {"name":"ts_ms","type":"long"},{"name":"snapshot","type":["null","string"],"default":null},
   {"name":"db","type":"string"},{"name":"schema","type":"string"},{"name":"table","type":"string"},
   {"name":"txId","type":["null","long"],"default":null},{"name":"lsn","type":["null","long"],"default":null}]}},
 {"name":"op","type":"string"},
 {"name":"ts_ms","type":["null","long"],"default":null}]}''' % (topic, topic, topic)
client = SchemaRegistryClient({"url": registry})
keys = AvroSerializer(client, key_schema)
values = AvroSerializer(client, value_schema)
producer = Producer({"bootstrap.servers": brokers})
def source(lsn):
    return {"version": "3.6.1.Final", "connector": "postgresql", "name": "dbserver1", "ts_ms": 1700000000000,
            "snapshot": "false", "db": "shop", "schema": "public", "table": "t", "txId": 700 + lsn, "lsn": lsn}
def row(id, amount, label, at):
    return {"id": id, "amount": amount, "label": label, "at": at}
def send(id, before, after, op, lsn):
    key = keys({"id": id}, SerializationContext(topic, MessageField.KEY))
    value = values({"before": before, "after": after, "source": source(lsn), "op": op, "ts_ms": 1700000000001},
                   SerializationContext(topic, MessageField.VALUE))
    producer.produce(topic, key=key, value=value)
send(1, None, row(1, Decimal("10.50"), "one", 1704164645123456), "c", 10)
send(2, None, row(2, Decimal("-0.01"), None, None), "c", 20)
send(3, None, row(3, None, "three", 0), "c", 30)
send(2, row(2, Decimal("-0.01"), None, None), row(2, Decimal("99999999.99"), "two", None), "u", 40)
send(3, row(3, None, "three", 0), None, "d", 50)
producer.produce(topic, key=keys({"id": 3}, SerializationContext(topic, MessageField.KEY)), value=None)
producer.flush(30)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debeziums_avro_with_a_registry_replicates_a_table_exactly() {
    let target = TestDb::create();
    let topic = format!("dbz_{}.public.t", target.name);
    let python = sluice_integration_tests::test_python();
    let produce = |step: &str, registry: &str| {
        run_ok(
            std::process::Command::new(&python).args([
                "-c",
                AVRO_PRODUCER,
                &topic,
                BROKERS,
                registry,
                step,
            ]),
            "the Avro producer",
        );
    };
    produce("create", "");
    let port = sluice_integration_tests::free_port();
    let registry = format!("http://127.0.0.1:{port}");
    let mut sluice = Sluice::new(&format!(
        "[registry]\nlisten = \"127.0.0.1:{port}\"\n\n\
         [[sources]]\nname = \"mig\"\nkind = \"kafka\"\nbrokers = \"{BROKERS}\"\n\
         topics = [\"{topic}\"]\nregistry_url = \"{registry}\"\n\n\
         [[sinks]]\nname = \"replica\"\nkind = \"postgres\"\nurl = \"{}\"\ntopics = [\"mig.public.*\"]\n",
        target.url()
    ));
    sluice.start();
    wait_for(Duration::from_secs(30), "the registry", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    })
    .await;
    produce("produce", &registry);
    let expected = "1|10.50|one|2024-01-02 03:04:05.123456\n2|99999999.99|two|";
    wait_for(Duration::from_secs(60), "the replica", || {
        target.exec("SELECT to_regclass('public.t') IS NOT NULL") == "t"
            && target.exec("SELECT * FROM t ORDER BY id") == expected
    })
    .await;
    assert_eq!(
        target.exec(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute \
             WHERE attrelid = 't'::regclass AND attnum > 0 ORDER BY attnum"
        ),
        "integer\nnumeric(10,2)\ntext\ntimestamp without time zone"
    );
    assert_eq!(sluice.stop(), Some(0), "{}", sluice.stderr());
}

/// Produces Debezium JSON (no schemas) change events of table argv[3] into topic argv[1] on the
/// broker at argv[2]: creates with ids argv[4..]; topic `*.transaction` gets Debezium's BEGIN
/// and END records instead.
const JSON_PRODUCER: &str = r#"
import json, sys
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
topic, brokers, table, ids = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
admin = AdminClient({"bootstrap.servers": brokers})
admin.create_topics([NewTopic(topic, 1, 1)])[topic].result()
producer = Producer({"bootstrap.servers": brokers})
if topic.endswith(".transaction"):
    for status in ("BEGIN", "END"):
        producer.produce(topic, key=json.dumps({"id": "571:100"}), value=json.dumps(
            {"status": status, "id": "571:100", "ts_ms": 1, "event_count": 1 if status == "END" else None,
             "data_collections": [] if status == "END" else None}))
for i in ids:
    source = {"version": "3.6.1.Final", "connector": "postgresql", "name": "pat", "ts_ms": 1,
              "snapshot": "false", "db": "shop", "schema": "public", "table": table, "txId": 7, "lsn": 100 + int(i)}
    value = {"before": None, "after": {"id": int(i), "name": "row " + i}, "source": source, "op": "c", "ts_ms": 1}
    producer.produce(topic, key=json.dumps({"id": int(i)}), value=json.dumps(value))
producer.flush(30)
"#;

/// `topics` as a pattern: topics that exist at start are read, one created while sluice runs
/// is picked up and read from its beginning, and Debezium's transaction topic, which the
/// pattern also matches, is passed over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_pattern_reads_topics_created_while_running() {
    services(&["up", "kafka"]);
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis();
    let prefix = format!("pat_{stamp}");
    let python = sluice_integration_tests::test_python();
    let produce = |topic: &str, table: &str, ids: &[&str]| {
        run_ok(
            std::process::Command::new(&python)
                .args(["-c", JSON_PRODUCER, topic, BROKERS, table])
                .args(ids),
            "the JSON producer",
        );
    };
    produce(&format!("{prefix}.public.a"), "a", &["1", "2"]);
    produce(&format!("{prefix}.transaction"), "", &[]);
    let mut sluice = Sluice::new(&format!(
        "[[sources]]\nname = \"mig\"\nkind = \"kafka\"\nbrokers = \"{BROKERS}\"\n\
         topics = [\"{prefix}.*\"]\n\n\
         [[sinks]]\nname = \"file\"\nkind = \"jsonl\"\npath = \"{{dir}}/out.jsonl\"\ntopics = [\"mig.*\"]\n"
    ));
    sluice.start();
    let ids = |sluice: &Sluice, table: &str| -> Vec<i64> {
        sluice_integration_tests::events(&sluice.records(&format!("mig.public.{table}")))
            .iter()
            .filter_map(|e| e["after"]["id"].as_i64())
            .collect()
    };
    wait_for(Duration::from_secs(60), "the existing topic's rows", || {
        ids(&sluice, "a") == [1, 2]
    })
    .await;
    // Created while sluice runs: found within seconds, read from its first record.
    produce(&format!("{prefix}.public.b"), "b", &["3", "4", "5"]);
    wait_for(Duration::from_secs(60), "the new topic's rows", || {
        ids(&sluice, "b") == [3, 4, 5]
    })
    .await;
    let stderr = sluice.stderr();
    assert!(
        stderr.contains("new Kafka partition matches `topics`")
            && stderr.contains(&format!("{prefix}.public.b")),
        "{stderr}"
    );
    assert_eq!(ids(&sluice, "a"), [1, 2], "nothing read twice");
    assert_eq!(sluice.stop(), Some(0), "{}", sluice.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_brokers_at_start_stop_sluice_naming_them_and_why() {
    let port = sluice_integration_tests::free_port();
    let mut sluice = Sluice::new(&format!(
        "[[sources]]\nname = \"mig\"\nkind = \"kafka\"\nbrokers = \"127.0.0.1:{port}\"\n\
         topics = [\"dbserver1.public.t\"]\n\n\
         [[sinks]]\nname = \"file\"\nkind = \"jsonl\"\npath = \"{{dir}}/out.jsonl\"\ntopics = [\"mig.*\"]\n"
    ));
    // Three attempts at start, ten seconds each, then the pipeline stops.
    sluice.start();
    wait_for(Duration::from_secs(90), "sluice to stop", || {
        !sluice.is_running()
    })
    .await;
    let (code, output) = (sluice.stop(), sluice.stderr());
    assert_eq!(code, Some(1), "{output}");
    assert!(
        output.contains(&format!("no Kafka broker answers at 127.0.0.1:{port}"))
            && output.contains("BrokerTransportFailure"),
        "{output}"
    );
}
