//! The Kafka source against a real broker: a Postgres table captured by Debezium 3.6.1 itself
//! (its embedded engine sending each record to Kafka, JSON with or without schemas) is read
//! from Kafka by sluice and applied by its Postgres sink: the replica equals the table,
//! through a snapshot, inserts, updates, deletes and a sluice restart. And Debezium's Avro
//! (written by Confluent's serializer against sluice's registry) arrives typed and exact.

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
    engine.stop();
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
        let out = std::process::Command::new(&python)
            .args(["-c", AVRO_PRODUCER, &topic, BROKERS, registry, step])
            .output()
            .expect("run the Avro producer");
        assert!(
            out.status.success(),
            "the Avro producer failed: {}",
            String::from_utf8_lossy(&out.stderr)
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
