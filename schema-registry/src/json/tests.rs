use std::sync::Arc;

use super::*;
use bytes::Bytes;
use sluice_core::event::{Column, LogicalMessage, TableId, TxnInfo};
use sluice_core::position::Lsn;
use sluice_core::value::{Decimal, Interval};

fn schema() -> Arc<TableSchema> {
    let column = |name: &str, key| Column {
        name: name.into(),
        type_name: "int4".into(),
        data_type: sluice_core::event::DataType::Int32,
        key,
        nullable: !key,
    };
    Arc::new(TableSchema {
        table: TableId {
            namespace: "public".into(),
            name: "orders".into(),
        },
        columns: vec![column("id", true), column("qty", false)],
        version: 1,
    })
}

fn event(op: Op, before: Option<Vec<Value>>, after: Option<Vec<Value>>) -> ChangeEvent {
    ChangeEvent {
        op,
        table: Some(schema()),
        before,
        before_is_key_only: false,
        after,
        snapshot: SnapshotMarker::No,
        commit_ts_us: 1_559_033_904_863_123,
        position: Position::PgLsn(Lsn(24_023_128)),
        xid: Some(556),
        txn: Some(TxnInfo {
            id: "556:24023128".into(),
            total_order: 1,
            data_collection_order: 0,
        }),
        message: None,
    }
}

fn encoder() -> JsonEnvelopeEncoder {
    JsonEnvelopeEncoder::new(
        SourceBlock {
            connector: "postgresql",
            name: "shop".into(),
            db: "shop".into(),
        },
        true,
    )
}

fn json(bytes: Option<&[u8]>) -> serde_json::Value {
    serde_json::from_slice(bytes.unwrap()).unwrap()
}

#[test]
fn an_update_is_a_debezium_envelope_with_key_and_source() {
    let mut out = EncodedRecords::default();
    let ev = event(
        Op::Update,
        Some(vec![Value::Int32(1), Value::Int32(2)]),
        Some(vec![Value::Int32(1), Value::Int32(3)]),
    );
    encoder().encode(&ev, &mut out).unwrap();
    assert_eq!(out.records().len(), 1);
    let (key, value) = out.record(0);
    assert_eq!(json(key), serde_json::json!({"id": 1}));
    let value = json(value);
    assert_eq!(value["op"], "u");
    assert_eq!(value["before"], serde_json::json!({"id": 1, "qty": 2}));
    assert_eq!(value["after"], serde_json::json!({"id": 1, "qty": 3}));
    assert_eq!(value["source"]["connector"], "postgresql");
    assert_eq!(value["source"]["table"], "orders");
    assert_eq!(value["source"]["schema"], "public");
    assert_eq!(value["source"]["lsn"], 24_023_128);
    assert_eq!(value["source"]["txId"], 556);
    assert_eq!(value["source"]["ts_ms"], 1_559_033_904_863i64);
    assert_eq!(value["source"]["snapshot"], "false");
    assert_eq!(value["transaction"]["total_order"], 1);
}

#[test]
fn a_delete_is_followed_by_a_tombstone_and_a_truncate_has_no_rows() {
    let mut out = EncodedRecords::default();
    let mut enc = encoder();
    enc.encode(
        &event(Op::Delete, Some(vec![Value::Int32(7), Value::Null]), None),
        &mut out,
    )
    .unwrap();
    assert_eq!(out.records().len(), 2);
    assert_eq!(out.record(1).1, None);
    assert_eq!(out.record(1).0, out.record(0).0);
    let mut out = EncodedRecords::default();
    enc.encode(&event(Op::Truncate, None, None), &mut out)
        .unwrap();
    let (key, value) = out.record(0);
    let value = json(value);
    assert_eq!(key, None);
    assert_eq!(value["op"], "t");
    assert!(value.get("before").is_none() && value.get("after").is_none());
}

#[test]
fn reused_source_fields_match_a_fresh_encoders_for_every_event() {
    let other_table = Arc::new(TableSchema {
        table: TableId {
            namespace: "public".into(),
            name: "customers".into(),
        },
        ..(*schema()).clone()
    });
    let row = || Some(vec![Value::Int32(1), Value::Int32(2)]);
    let mut events = vec![
        event(Op::Create, None, row()),
        event(Op::Create, None, row()),
    ];
    // Another table at the same commit time and position.
    let mut ev = event(Op::Create, None, row());
    ev.table = Some(Arc::clone(&other_table));
    events.push(ev);
    // A message at the same commit time and position: no table fields.
    let mut ev = event(Op::Message, None, None);
    ev.table = None;
    ev.message = Some(Box::new(LogicalMessage {
        prefix: "p".into(),
        content: Bytes::from_static(b"x"),
        transactional: true,
    }));
    events.push(ev);
    // Back to the first table's schema object, then a new position, commit time, marker.
    let mut ev = event(Op::Update, row(), row());
    ev.table = Some(other_table);
    events.push(ev);
    let mut ev = event(Op::Update, row(), row());
    ev.position = Position::PgLsn(Lsn(24_023_200));
    ev.xid = None;
    events.push(ev.clone());
    // The same position with another transaction id.
    ev.xid = Some(777);
    events.push(ev);
    let mut ev = event(Op::Read, None, row());
    ev.commit_ts_us += 1;
    ev.snapshot = SnapshotMarker::Last;
    events.push(ev);

    let mut shared = encoder();
    shared.set_processing_time(1_700_000_000_000_000);
    for ev in &events {
        let mut fresh = encoder();
        fresh.set_processing_time(1_700_000_000_000_000);
        let (mut a, mut b) = (EncodedRecords::default(), EncodedRecords::default());
        shared.encode(ev, &mut a).unwrap();
        fresh.encode(ev, &mut b).unwrap();
        assert_eq!(a.record(0), b.record(0), "event {ev:?}");
    }
    // And the fields really differ where the events do.
    let mut out = EncodedRecords::default();
    for ev in &events {
        shared.encode(ev, &mut out).unwrap();
    }
    let sources: Vec<serde_json::Value> = (0..out.records().len())
        .filter_map(|i| out.record(i).1)
        .map(|v| json(Some(v))["source"].clone())
        .collect();
    assert_eq!(sources[1]["table"], "orders");
    assert_eq!(sources[2]["table"], "customers");
    assert_eq!(sources[3].get("table"), None);
    assert_eq!(sources[5]["lsn"], 24_023_200);
    assert_eq!(sources[5]["txId"], serde_json::Value::Null);
    assert_eq!(sources[6]["lsn"], 24_023_200);
    assert_eq!(sources[6]["txId"], 777);
    assert_eq!(sources[7]["snapshot"], "last");
    assert_eq!(sources[7]["ts_us"], 1_559_033_904_863_124i64);
}

#[test]
fn values_map_exactly() {
    let cases = [
        (
            Value::UInt64(u64::MAX),
            serde_json::json!(18446744073709551615u64),
        ),
        (
            Value::Decimal(Decimal::Finite("-12345678901234567890.123".into())),
            serde_json::json!("-12345678901234567890.123"),
        ),
        (Value::Decimal(Decimal::NaN), serde_json::json!("NaN")),
        (
            Value::Float64(f64::NEG_INFINITY),
            serde_json::json!("-Infinity"),
        ),
        (Value::Float64(1.0), serde_json::json!(1.0)),
        (
            Value::Bytes(Bytes::from_static(b"\x00\xff")),
            serde_json::json!("AP8="),
        ),
        (
            Value::Interval(Interval {
                months: 1,
                days: 2,
                micros: 3_000_000,
            }),
            serde_json::json!("P1M2DT3S"),
        ),
        (
            Value::TimestampTz(Timestamp::Micros(0)),
            serde_json::json!("1970-01-01T00:00:00Z"),
        ),
        (
            Value::Timestamp(Timestamp::PositiveInfinity),
            serde_json::json!(TIMESTAMP_POSITIVE_INFINITY_US),
        ),
        (
            Value::TimeTz {
                micros: 3_600_000_000,
                offset_seconds: 19_800,
            },
            serde_json::json!("01:00:00+05:30"),
        ),
        (
            Value::Array(vec![Value::Int32(1), Value::Null]),
            serde_json::json!([1, null]),
        ),
        (
            Value::Text("ünï \"q\"".into()),
            serde_json::json!("ünï \"q\""),
        ),
    ];
    for (value, expected) in cases {
        assert_eq!(value_to_json(&value), expected, "{value:?}");
    }
}

#[test]
fn strings_are_escaped_exactly_as_serde_json_escapes_them() {
    let mut every_char: String = (0u8..0x80).map(char::from).collect();
    every_char.push_str("ünïcødé ✓ \u{2028} \u{10ffff}");
    for s in [
        every_char.as_str(),
        "",
        "plain",
        "ünï ✓ \u{2028}",
        "\"",
        "a\\b",
        "\u{0}",
        "tab\t",
    ] {
        let mut ours = Vec::new();
        write_str(&mut ours, s);
        assert_eq!(
            String::from_utf8(ours).unwrap(),
            serde_json::to_string(s).unwrap()
        );
    }
}
