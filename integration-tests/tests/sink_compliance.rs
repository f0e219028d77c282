//! Every sink through the compliance kit (`sluice_integration_tests::compliance`): one call per
//! sink, with a factory for its destination. A new sink adds its own here.

use std::sync::Arc;

use serde_json::{json, Value as Json};
use sluice_connectors::clickhouse::{clickhouse_sink, ClickHouseSinkConfig, ClickHouseSinkRuntime};
use sluice_connectors::jsonl::{JsonlSink, JsonlSinkConfig};
use sluice_connectors::mysql::sink::{mysql_sink, MysqlSink, MysqlSinkConfig};
use sluice_connectors::postgres::sink::{postgres_sink, PostgresSink, PostgresSinkConfig};
use sluice_connectors::search::opensearch::{
    opensearch_sink, OpenSearchSink, OpenSearchSinkConfig,
};
use sluice_connectors::search::typesense::{typesense_sink, TypesenseSink, TypesenseSinkConfig};
use sluice_core::sink::DeadLetterWriter;
use sluice_integration_tests::clickhouse::{ClickHouse, CHDB_URL, CLICKHOUSE_URL};
use sluice_integration_tests::compliance::{self, Kit, Rows, SinkUnderTest, REJECTED_QTY, TOPIC};
use sluice_integration_tests::search::{typesense_key, OpenSearch, Typesense, OPENSEARCH_URL};
use sluice_integration_tests::{MariaDb, TestDb};
use sluice_schema_registry::avro::AvroDecoder;

/// Rows from `id|name|qty` lines (any single-character separator).
fn parse_rows(text: &str, separator: char) -> Rows {
    text.lines()
        .filter(|line| !line.is_empty())
        .map(|line| {
            let fields: Vec<&str> = line.split(separator).collect();
            (
                fields[0].parse().unwrap(),
                (fields[1].to_owned(), fields[2].parse().unwrap()),
            )
        })
        .collect()
}

fn config<T: serde::de::DeserializeOwned>(value: Json) -> T {
    serde_json::from_value(value).expect("a valid sink config")
}

struct Jsonl {
    dir: tempfile::TempDir,
}

impl Jsonl {
    /// The complete lines: the kit polls while the sink writes, so the last line may be
    /// half-written (or torn by the kit's crash, until the restarted sink truncates it).
    fn lines(&self) -> Vec<Json> {
        let text = std::fs::read_to_string(self.dir.path().join("out.jsonl")).unwrap_or_default();
        let complete = text.rfind('\n').map_or("", |end| &text[..end]);
        complete
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }
}

impl SinkUnderTest for Jsonl {
    type Sink = JsonlSink;

    fn sink(&self, kit: &Kit, _dead_letters: Option<DeadLetterWriter>) -> JsonlSink {
        let config: JsonlSinkConfig = config(json!({
            "name": "kit",
            "path": self.dir.path().join("out.jsonl"),
            "topics": [TOPIC],
        }));
        JsonlSink::new(config, Some(AvroDecoder::new(Arc::clone(&kit.registry))))
    }

    fn rows(&self) -> Rows {
        let mut rows = Rows::new();
        for line in self.lines() {
            let value = &line;
            match value["op"].as_str() {
                Some("d") => {
                    rows.remove(&value["before"]["id"].as_i64().unwrap());
                }
                _ => {
                    let after = &value["after"];
                    rows.insert(
                        after["id"].as_i64().unwrap(),
                        (
                            after["name"].as_str().unwrap().to_owned(),
                            after["qty"].as_i64().unwrap() as i32,
                        ),
                    );
                }
            }
        }
        rows
    }

    fn exactly_once(&self) -> bool {
        true
    }

    fn events_held(&self) -> Option<usize> {
        Some(self.lines().len())
    }

    fn forget_offsets(&self) -> Option<()> {
        None // a file holds every delivery: twice is not harmless
    }

    fn reject_poison(&self) -> Option<String> {
        None
    }
}

struct Postgres {
    target: TestDb,
}

impl SinkUnderTest for Postgres {
    type Sink = PostgresSink;

    fn sink(&self, kit: &Kit, dead_letters: Option<DeadLetterWriter>) -> PostgresSink {
        let config: PostgresSinkConfig = config(json!({
            "name": "kit",
            "url": self.target.url(),
            "topics": [TOPIC],
            "offsets_table": "kit_offsets",
        }));
        postgres_sink(config, Arc::clone(&kit.registry), dead_letters)
    }

    fn rows(&self) -> Rows {
        if self
            .target
            .exec("SELECT to_regclass('public.items') IS NOT NULL")
            != "t"
        {
            return Rows::new();
        }
        parse_rows(
            &self
                .target
                .exec("SELECT id, name, qty FROM public.items ORDER BY id"),
            '|',
        )
    }

    fn exactly_once(&self) -> bool {
        true
    }

    fn forget_offsets(&self) -> Option<()> {
        self.target.exec("DELETE FROM public.kit_offsets");
        Some(())
    }

    fn reject_poison(&self) -> Option<String> {
        self.target.exec(&format!(
            "ALTER TABLE public.items ADD CONSTRAINT qty_ok CHECK (qty <> {REJECTED_QTY})"
        ));
        Some("qty_ok".into())
    }
}

struct Mysql {
    target: MariaDb,
}

impl SinkUnderTest for Mysql {
    type Sink = MysqlSink;

    fn sink(&self, kit: &Kit, dead_letters: Option<DeadLetterWriter>) -> MysqlSink {
        let config: MysqlSinkConfig = config(json!({
            "name": "kit",
            "url": self.target.url(),
            "topics": [TOPIC],
            "offsets_table": "kit_offsets",
        }));
        mysql_sink(config, Arc::clone(&kit.registry), dead_letters)
    }

    fn rows(&self) -> Rows {
        let exists = self.target.exec(
            "SELECT count(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'items'",
        );
        if exists != "1" {
            return Rows::new();
        }
        parse_rows(
            &self
                .target
                .exec("SELECT id, name, qty FROM items ORDER BY id"),
            '\t',
        )
    }

    fn exactly_once(&self) -> bool {
        true
    }

    fn forget_offsets(&self) -> Option<()> {
        self.target.exec("DELETE FROM kit_offsets");
        Some(())
    }

    fn reject_poison(&self) -> Option<String> {
        self.target.exec(&format!(
            "ALTER TABLE items ADD CONSTRAINT qty_ok CHECK (qty <> {REJECTED_QTY})"
        ));
        Some("qty_ok".into())
    }
}

struct OpenSearchIndex {
    server: OpenSearch,
}

impl SinkUnderTest for OpenSearchIndex {
    type Sink = OpenSearchSink;

    fn sink(&self, kit: &Kit, dead_letters: Option<DeadLetterWriter>) -> OpenSearchSink {
        let config: OpenSearchSinkConfig = config(json!({
            "name": "kit",
            "url": OPENSEARCH_URL,
            "topics": [TOPIC],
            "index": format!("{}_{{table}}", self.server.prefix),
            "offsets_index": format!("{}_offsets", self.server.prefix),
            "number_of_replicas": 0,
            // Small bulks, several in flight: the kit's batches span many requests.
            "bulk_docs": 7,
            "max_in_flight": 3,
        }));
        opensearch_sink(config, Arc::clone(&kit.registry), dead_letters)
    }

    fn rows(&self) -> Rows {
        self.server
            .documents(&self.server.index("items"))
            .into_iter()
            .map(|(id, hit)| {
                let doc = &hit["_source"];
                assert_eq!(
                    doc["id"].as_i64().unwrap().to_string(),
                    id,
                    "_id is the key"
                );
                (
                    doc["id"].as_i64().unwrap(),
                    (
                        doc["name"].as_str().unwrap().to_owned(),
                        doc["qty"].as_i64().unwrap() as i32,
                    ),
                )
            })
            .collect()
    }

    fn exactly_once(&self) -> bool {
        true
    }

    fn forget_offsets(&self) -> Option<()> {
        let path = format!("/{}_offsets/_doc/kit?refresh=true", self.server.prefix);
        self.server.request("DELETE", &path, None);
        Some(())
    }

    fn reject_poison(&self) -> Option<String> {
        // A negative qty does not fit unsigned_long: the index is made again with that
        // mapping, and the sink (its offsets forgotten) fills it again from the log.
        let index = self.server.index("items");
        self.server.request("DELETE", &format!("/{index}"), None);
        let mapping = json!({"mappings": {"properties": {"qty": {"type": "unsigned_long"}}},
            "settings": {"index": {"number_of_replicas": 0}}});
        let made = self
            .server
            .request("PUT", &format!("/{index}"), Some(&mapping));
        assert_eq!(made["acknowledged"], json!(true), "{made}");
        self.forget_offsets();
        Some("mapper_parsing_exception".into())
    }
}

struct TypesenseCollection {
    server: Typesense,
}

impl SinkUnderTest for TypesenseCollection {
    type Sink = TypesenseSink;

    fn sink(&self, kit: &Kit, dead_letters: Option<DeadLetterWriter>) -> TypesenseSink {
        let config: TypesenseSinkConfig = config(json!({
            "name": "kit",
            "url": self.server.url,
            "api_key": typesense_key(),
            "topics": [TOPIC],
            "collection": format!("{}_{{table}}", self.server.prefix),
            "offsets_collection": format!("{}_offsets", self.server.prefix),
            // Small imports, several in flight: the kit's batches span many requests.
            "batch_docs": 7,
            "max_in_flight": 3,
        }));
        typesense_sink(config, Arc::clone(&kit.registry), dead_letters)
    }

    fn rows(&self) -> Rows {
        self.server
            .documents(&self.server.collection("items"))
            .into_iter()
            .map(|(id, doc)| {
                (
                    id.parse().expect("the id is the key"),
                    (
                        doc["name"].as_str().unwrap().to_owned(),
                        doc["qty"].as_i64().unwrap() as i32,
                    ),
                )
            })
            .collect()
    }

    fn exactly_once(&self) -> bool {
        true
    }

    fn forget_offsets(&self) -> Option<()> {
        let path = format!(
            "/collections/{}_offsets/documents/sink.kit",
            self.server.prefix
        );
        self.server.request("DELETE", &path, None);
        Some(())
    }

    fn reject_poison(&self) -> Option<String> {
        // Typesense has no constraints on values: a type check is all it refuses, and every
        // qty of the kit is an int. search_sinks.rs rejects a string in an int32 field.
        None
    }
}

struct ClickHouseTable {
    server: ClickHouse,
}

impl SinkUnderTest for ClickHouseTable {
    type Sink = ClickHouseSinkRuntime;

    fn sink(&self, kit: &Kit, dead_letters: Option<DeadLetterWriter>) -> ClickHouseSinkRuntime {
        let config: ClickHouseSinkConfig = config(json!({
            "name": "kit",
            "url": self.server.url,
            "database": self.server.database,
            "topics": [TOPIC],
            // Small inserts, often: the kit's batches span many, and its crashes fall between.
            "flush_interval_ms": 20,
            "batch_bytes": 4096,
        }));
        clickhouse_sink(config, Arc::clone(&kit.registry), dead_letters)
    }

    fn rows(&self) -> Rows {
        if !self.server.has_table("items") {
            return Rows::new();
        }
        parse_rows(
            &self.server.current("items", "id, name, qty").join("\n"),
            '\t',
        )
    }

    fn exactly_once(&self) -> bool {
        true
    }

    fn forget_offsets(&self) -> Option<()> {
        self.server.exec(&format!(
            "TRUNCATE TABLE {}._sluice_offsets",
            self.server.database
        ));
        Some(())
    }

    fn reject_poison(&self) -> Option<String> {
        // The table is made again with an unsigned qty: a negative one does not fit, and the
        // sink (its offsets forgotten) fills it again from the log.
        let db = &self.server.database;
        self.server
            .exec(&format!("DROP TABLE IF EXISTS {db}.items"));
        self.server.exec(&format!(
            "CREATE TABLE {db}.items (id Int32, name Nullable(String), qty Nullable(UInt32), \
             _sluice_version UInt64, _sluice_deleted UInt8) \
             ENGINE = ReplacingMergeTree(_sluice_version) ORDER BY id"
        ));
        self.forget_offsets();
        Some("-999 does not fit UInt32".into())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clickhouse_sink_passes_the_compliance_kit_on_clickhouse_18() {
    compliance::check(ClickHouseTable {
        server: ClickHouse::on(CLICKHOUSE_URL),
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clickhouse_sink_passes_the_compliance_kit_on_current_clickhouse() {
    compliance::check(ClickHouseTable {
        server: ClickHouse::on(CHDB_URL),
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_typesense_sink_passes_the_compliance_kit() {
    compliance::check(TypesenseCollection {
        server: Typesense::new(),
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_opensearch_sink_passes_the_compliance_kit() {
    compliance::check(OpenSearchIndex {
        server: OpenSearch::new(),
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jsonl_sink_passes_the_compliance_kit() {
    compliance::check(Jsonl {
        dir: tempfile::tempdir().unwrap(),
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgres_sink_passes_the_compliance_kit() {
    compliance::check(Postgres {
        target: TestDb::create(),
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mysql_sink_passes_the_compliance_kit() {
    compliance::check(Mysql {
        target: MariaDb::create(),
    })
    .await;
}
