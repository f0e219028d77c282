//! The events the encode and transform benches share: a 20-column `orders` row of every
//! common type.

use std::sync::Arc;

use bytes::Bytes;
use sluice_core::batch::{Header, StoredRecord};
use sluice_core::change::SCHEMA_HEADER;
use sluice_core::encode::{EncodedRecords, EventEncoder};
use sluice_core::event::{
    ChangeEvent, Column, DataType, Op, SnapshotMarker, TableId, TableSchema, TxnInfo,
};
use sluice_core::position::{Lsn, Position};
use sluice_core::sink::SinkRecord;
use sluice_core::value::{Date, Decimal, Timestamp, Value};
use sluice_schema_registry::json::{JsonEnvelopeEncoder, SourceBlock};
use sluice_schema_registry::registry::store::MemoryStore;
use sluice_schema_registry::registry::Registry;

pub(crate) fn table() -> Arc<TableSchema> {
    let col = |name: &str, data_type: DataType, type_name: &str| Column {
        name: name.into(),
        type_name: type_name.into(),
        data_type,
        key: name == "id",
        nullable: name != "id",
    };
    let dec = |p, s| DataType::Decimal {
        precision: Some(p),
        scale: Some(s),
    };
    Arc::new(TableSchema {
        table: TableId {
            namespace: "public".into(),
            name: "orders".into(),
        },
        columns: vec![
            col("id", DataType::Int64, "bigint"),
            col("customer_id", DataType::Int32, "integer"),
            col("line", DataType::Int16, "smallint"),
            col("name", DataType::Text, "text"),
            col("email", DataType::Text, "text"),
            col("price", dec(12, 2), "numeric(12,2)"),
            col("weight", dec(8, 3), "numeric(8,3)"),
            col("paid", DataType::Bool, "boolean"),
            col("ship_date", DataType::Date, "date"),
            col("created_at", DataType::TimestampTz, "timestamptz"),
            col("updated_at", DataType::Timestamp, "timestamp"),
            col("order_uid", DataType::Uuid, "uuid"),
            col("score", DataType::Float64, "double precision"),
            col("ratio", DataType::Float32, "real"),
            col("attrs", DataType::Json, "jsonb"),
            col("status", DataType::Enum, "order_status"),
            col("city", DataType::Text, "character varying(40)"),
            col("counter", DataType::Int64, "bigint"),
            col("qty", DataType::Int32, "integer"),
            col("token", DataType::Bytes, "bytea"),
        ],
        version: 1,
    })
}

pub(crate) fn event(table: &Arc<TableSchema>, i: i64) -> ChangeEvent {
    let row = vec![
        Value::Int64(i),
        Value::Int32((i % 100_000) as i32),
        Value::Int16((i % 10) as i16),
        Value::Text(format!("Customer Name {i}").into()),
        Value::Text(format!("customer{i}@example.com").into()),
        Value::Decimal(Decimal::Finite(
            format!("{}.{:02}", i % 100_000, i % 100).into(),
        )),
        Value::Decimal(Decimal::Finite(
            format!("{}.{:03}", i % 1000, i % 1000).into(),
        )),
        Value::Bool(i % 2 == 0),
        Value::Date(Date::Days(19_000 + (i % 1000) as i32)),
        Value::TimestampTz(Timestamp::Micros(1_700_000_000_000_000 + i * 1_000)),
        Value::Timestamp(Timestamp::Micros(1_700_000_000_000_000 + i * 2_000)),
        Value::Uuid([(i % 251) as u8; 16]),
        Value::Float64(i as f64 * 0.37),
        Value::Float32((i % 1000) as f32 * 0.5),
        Value::Json(format!(r#"{{"gift": {}, "tags": ["a", "b"]}}"#, i % 2 == 0)),
        Value::Enum("shipped".into()),
        Value::Text("Amsterdam".into()),
        Value::Int64(i * 7),
        Value::Int32((i % 50) as i32),
        Value::Bytes(Bytes::from(vec![(i % 256) as u8; 16])),
    ];
    ChangeEvent {
        op: Op::Create,
        table: Some(Arc::clone(table)),
        before: None,
        before_is_key_only: false,
        after: Some(row),
        snapshot: SnapshotMarker::No,
        commit_ts_us: 1_700_000_000_000_000 + i,
        position: Position::PgLsn(Lsn(1_000_000 + i as u64 * 100)),
        xid: Some(1000 + i as u64 / 10),
        txn: Some(TxnInfo {
            id: format!("{}:{}", 1000 + i / 10, 1_000_000 + i * 100).into(),
            total_order: (i % 10 + 1) as u64,
            data_collection_order: 0,
        }),
        message: None,
    }
}

/// `events` as the log holds them from a JSON source (envelopes naming their registered
/// schema in a header), and the registry that knows the schema.
pub(crate) fn json_records(
    table: &Arc<TableSchema>,
    events: impl Iterator<Item = ChangeEvent>,
    source: SourceBlock,
) -> (Vec<SinkRecord>, Arc<Registry>) {
    let registry = Arc::new(Registry::open(MemoryStore::default()).expect("registry"));
    let mut encoder = JsonEnvelopeEncoder::new(source, false).registering(Arc::clone(&registry));
    encoder
        .prepare_table(table, false)
        .expect("the table registers");
    let mut records = Vec::new();
    let mut out = EncodedRecords::default();
    // One name for the partition's records, as the sink runtime hands them over.
    let topic: Arc<str> = "shop.public.orders".into();
    for (offset, event) in events.enumerate() {
        out.clear_records();
        encoder.encode(&event, &mut out).expect("encodes");
        for record in out.records() {
            let bytes = |span: Option<sluice_core::encode::Span>| {
                span.map(|s| Bytes::copy_from_slice(out.bytes(s)))
            };
            records.push(SinkRecord {
                topic: Arc::clone(&topic),
                partition: 0,
                record: StoredRecord {
                    offset: offset as u64,
                    timestamp_ms: 0,
                    key: bytes(record.key),
                    value: bytes(record.value),
                    headers: record
                        .value_schema
                        .map(|id| Header {
                            key: SCHEMA_HEADER.into(),
                            value: Some(id.to_string().into()),
                        })
                        .into_iter()
                        .collect(),
                },
            });
        }
    }
    (records, registry)
}
