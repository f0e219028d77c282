//! Apache Kafka for the tests: the broker `dev/services up kafka` runs, read by Confluent's
//! Python client and by Kafka's own ConsoleConsumer, and the tools of `dev/services` (the
//! broker's start and stop, Debezium's jars).

use std::process::Command;

use serde_json::Value as Json;

use crate::{test_python, workspace_root};

pub const BROKERS: &str = "127.0.0.1:9092";

/// Confluent's Python consumer: every committed record of a topic (isolation.level =
/// read_committed), partition by partition in offset order, one JSON line each
/// `[partition, key, value]`: UTF-8 text, or with a registry URL, Avro decoded by Confluent's
/// `AvroDeserializer` against it; a tombstone's value is null.
const CONSUMER: &str = r#"
import json, sys, time
from confluent_kafka import Consumer, TopicPartition, OFFSET_BEGINNING
topic, brokers = sys.argv[1], sys.argv[2]
registry = sys.argv[3] if len(sys.argv) > 3 else None
if registry:
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.schema_registry.avro import AvroDeserializer
    from confluent_kafka.serialization import SerializationContext, MessageField
    avro = AvroDeserializer(SchemaRegistryClient({"url": registry}))
    decode = lambda data, field: avro(data, SerializationContext(topic, field))
    KEY, VALUE = MessageField.KEY, MessageField.VALUE
else:
    decode = lambda data, field: data.decode()
    KEY, VALUE = "key", "value"
c = Consumer({"bootstrap.servers": brokers, "group.id": "check-" + topic,
              "enable.auto.commit": False, "isolation.level": "read_committed"})
meta = c.list_topics(topic, timeout=10).topics[topic]
if meta.error is not None:
    sys.exit(0)
parts = sorted(meta.partitions)
def end(p):
    # A topic just created may name partitions its leader does not serve yet.
    for _ in range(50):
        try:
            return c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
        except Exception as e:
            if "Unknown partition" not in str(e):
                raise
            time.sleep(0.2)
    return c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
ends = {p: end(p) for p in parts}
c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
out = {p: [] for p in parts}
deadline = time.time() + 60
while time.time() < deadline:
    positions = {tp.partition: tp.offset for tp in c.position([TopicPartition(topic, p) for p in parts])}
    if all(positions[p] >= ends[p] or ends[p] == 0 for p in parts):
        break
    m = c.poll(0.5)
    if m is None or m.error():
        continue
    key = None if m.key() is None else decode(m.key(), KEY)
    value = None if m.value() is None else decode(m.value(), VALUE)
    out[m.partition()].append([m.partition(), key, value])
for p in parts:
    for row in out[p]:
        print(json.dumps(row, default=str))
"#;

/// The consumer's lines for `topic` (with `registry`: Avro decoded against it).
pub fn consume(topic: &str, registry: Option<&str>) -> Vec<(i32, Json, Json)> {
    consume_from(BROKERS, topic, registry)
}

/// As [`consume`], from the cluster at `brokers`.
pub fn consume_from(brokers: &str, topic: &str, registry: Option<&str>) -> Vec<(i32, Json, Json)> {
    let run = || {
        let mut command = Command::new(test_python());
        command.args(["-c", CONSUMER, topic, brokers]);
        command.args(registry);
        command.output().expect("run the Kafka consumer")
    };
    // A test in the same binary may have the broker stopped for a while (kafka_sink.rs stops
    // it under a running sink): try again before failing.
    let mut out = run();
    for _ in 0..20 {
        if out.status.success() {
            break;
        }
        #[allow(clippy::disallowed_methods)] // synchronous, as the consumer process it waits on
        std::thread::sleep(std::time::Duration::from_millis(1500));
        out = run();
    }
    assert!(
        out.status.success(),
        "the consumer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("a consumer line"))
        .collect()
}

/// Every committed record of a Kafka topic as `(partition, key, value)` text (a tombstone's
/// value is None).
pub fn kafka_records(topic: &str) -> Vec<(i32, Option<String>, Option<String>)> {
    consume(topic, None)
        .into_iter()
        .map(|(partition, key, value)| {
            let text = |v: Json| v.as_str().map(str::to_owned);
            (partition, text(key), text(value))
        })
        .collect()
}

/// A `[[sinks]]` Kafka sink named `k_<db>` delivering the `src.public.*` topics of the test
/// source to Kafka topics `<prefix>.<log topic>`, plus `extra` lines.
pub fn kafka_sink(db: &str, prefix: &str, extra: &str) -> String {
    format!(
        "[[sinks]]\nname = \"k_{db}\"\nkind = \"kafka\"\nbrokers = \"{BROKERS}\"\n\
         topics = [\"src.public.*\"]\ntopic = \"{prefix}.{{topic}}\"\n{extra}"
    )
}

/// `dev/services` with `args` (the broker's own start and stop).
pub fn services(args: &[&str]) {
    crate::run_ok(
        Command::new(workspace_root().join("dev/services")).args(args),
        &format!("dev/services {args:?}"),
    );
}

/// Kills the development broker (`kill -9`, no shutdown of its own) and waits until it is
/// gone; `services(&["up", "kafka"])` starts it again. A single-node broker stopped with
/// SIGTERM under an open transaction was seen to lose the commit markers of a transaction it
/// had acknowledged (its coordinator logged the commit complete, the partitions held no
/// marker after the restart), and the next transaction's marker then committed those records
/// again: an outage the broker survives whole is what the tests that stop it need.
pub fn kill_broker() {
    let pid_file = workspace_root().join("target/kafka/kafka.pid");
    let pid = std::fs::read_to_string(&pid_file).expect("the broker's pid file");
    let pid = pid.trim();
    crate::run_ok(Command::new("kill").args(["-9", pid]), "kill -9 the broker");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while Command::new("kill")
        .args(["-0", pid])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the broker outlived kill -9"
        );
        #[allow(clippy::disallowed_methods)] // synchronous: polls a process until it is gone
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Denies every client (the broker's listener gives them all the principal `User:ANONYMOUS`)
/// writes to the topics whose names start with `prefix`: an ACL (the development broker runs
/// an authorizer that allows whatever no ACL names).
pub fn deny_writes(prefix: &str) {
    const DENY: &str = r#"
import sys
from confluent_kafka.admin import (AdminClient, AclBinding, AclOperation, AclPermissionType,
                                   ResourcePatternType, ResourceType)
admin = AdminClient({"bootstrap.servers": "127.0.0.1:9092"})
deny = AclBinding(ResourceType.TOPIC, sys.argv[1], ResourcePatternType.PREFIXED, "User:ANONYMOUS",
                  "*", AclOperation.WRITE, AclPermissionType.DENY)
for future in admin.create_acls([deny], request_timeout=30).values():
    future.result()
"#;
    let out = Command::new(test_python())
        .args(["-c", DENY, prefix])
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "denying writes to {prefix}*: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every committed record of `topic` as Kafka's own `ConsoleConsumer` (kafka-tools, the jars
/// `dev/services up kafka` installs) reads it with `--isolation-level read_committed`:
/// `(key, value)` text, a tombstone's value None; partitions interleaved as it reads them. It
/// stops after `expected` records, or 20 s without one.
pub fn console_consumer(topic: &str, expected: usize) -> Vec<(Option<String>, Option<String>)> {
    let out = Command::new("java")
        .arg("-cp")
        .arg(workspace_root().join("target/kafka/libs/*"))
        .args([
            "org.apache.kafka.tools.consumer.ConsoleConsumer",
            "--bootstrap-server",
            BROKERS,
            "--topic",
            topic,
            "--from-beginning",
            "--isolation-level",
            "read_committed",
            "--max-messages",
            &expected.to_string(),
            "--timeout-ms",
            "20000",
            "--formatter-property",
            "print.key=true",
            "--formatter-property",
            "key.separator=\t",
            "--formatter-property",
            "null.literal=<null>",
        ])
        .output()
        .expect("run ConsoleConsumer");
    let text = |s: &str| (s != "<null>").then(|| s.to_owned());
    // (It ends with a timeout report, without a tab, when fewer records than expected came.)
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let (key, value) = line.split_once('\t')?;
            Some((text(key), text(value)))
        })
        .collect()
}

/// Debezium 3.6.1's embedded engine (`dev/debezium/DebeziumRun.java`, jars from
/// `dev/services up debezium`) capturing tables `public.*` of database `db` through a slot
/// and publication of its own (`dbz_<db>`), with `properties` added (`topic.prefix=…`, …;
/// `harness.out=kafka:…` sends each record to Kafka, otherwise they are JSON lines on stdout).
pub fn debezium(
    db: &str,
    properties: &[&str],
    stdout: impl Into<std::process::Stdio>,
    stderr: impl Into<std::process::Stdio>,
) -> Debezium {
    let slot = format!("dbz_{db}");
    let child = Command::new("java")
        .arg("-cp")
        .arg(workspace_root().join("target/debezium/libs/*"))
        .arg(workspace_root().join("dev/debezium/DebeziumRun.java"))
        .args([
            "database.hostname=127.0.0.1",
            "database.port=5432",
            "database.user=postgres",
            "database.password=unused",
            &format!("database.dbname={db}"),
            &format!("slot.name={slot}"),
            &format!("publication.name={slot}"),
            "publication.autocreate.mode=filtered",
            "table.include.list=public.*",
        ])
        .args(properties)
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .expect("run java");
    Debezium(child)
}

/// A running Debezium engine, stopped when dropped (a failed test does not leave it
/// holding its slot).
pub struct Debezium(std::process::Child);

impl Debezium {
    pub fn stop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Debezium {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Rows of the test table `t` (`id`, `v`) as text, in key order (empty while it is missing).
pub fn table_t(db: &crate::TestDb) -> String {
    if db.exec("SELECT to_regclass('public.t') IS NOT NULL") != "t" {
        return String::new();
    }
    db.exec("SELECT id, v FROM t ORDER BY id")
}

/// A Postgres source `name` of `source`'s table `t` and a Postgres sink `<name>_replica` of its
/// topics into `replica` (names of the test's own: topics and groups are the broker's).
pub fn replica_pipeline(name: &str, source: &crate::TestDb, replica: &crate::TestDb) -> String {
    format!(
        "[[sources]]\nname = \"{name}\"\nkind = \"postgres\"\nurl = \"{}\"\n\
         tables = [\"public.t\"]\nslot = \"{}\"\n\n\
         [[sinks]]\nname = \"{name}_replica\"\nkind = \"postgres\"\nurl = \"{}\"\n\
         topics = [\"{name}.public.*\"]\n",
        source.url(),
        source.name,
        replica.url()
    )
}
