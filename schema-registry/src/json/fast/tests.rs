use std::sync::Arc;

use bytes::Bytes;
use sluice_core::encode::{EncodedRecords, EventEncoder};
use sluice_core::event::{
    ChangeEvent, Column, DataType, Op, SnapshotMarker, TableId, TableSchema, TxnInfo,
};
use sluice_core::position::{Lsn, Position};
use sluice_core::value::{Date, Decimal, Timestamp, Value};

use super::parts;
use crate::avro::rows::{plan_of, Plan};
use crate::avro::schema::table_plan;
use crate::avro::DecimalHandling;
use crate::json::decode::general;
use crate::json::{JsonEnvelopeEncoder, SourceBlock};

fn table() -> Arc<TableSchema> {
    let column = |name: &str, data_type, key| Column {
        name: name.into(),
        type_name: String::new(),
        data_type,
        key,
        nullable: !key,
    };
    Arc::new(TableSchema {
        table: TableId {
            namespace: "public".into(),
            name: "mixed".into(),
        },
        columns: vec![
            column("id", DataType::Int64, true),
            column("flag", DataType::Bool, false),
            column("small", DataType::Int16, false),
            column("u64", DataType::UInt64, false),
            column("f8", DataType::Float64, false),
            column(
                "price",
                DataType::Decimal {
                    precision: Some(10),
                    scale: Some(2),
                },
                false,
            ),
            column("name", DataType::Text, false),
            column("blob", DataType::Bytes, false),
            column("uid", DataType::Uuid, false),
            column("doc", DataType::Json, false),
            column("day", DataType::Date, false),
            column("local", DataType::Timestamp, false),
            column("instant", DataType::TimestampTz, false),
            column("tags", DataType::Array(Box::new(DataType::Int32)), false),
            column("héllo wörld", DataType::Text, false),
        ],
        version: 1,
    })
}

fn row(id: i64, name: &str) -> Vec<Value> {
    vec![
        Value::Int64(id),
        Value::Bool(id % 2 == 0),
        Value::Int16(i16::MIN),
        Value::UInt64(u64::MAX),
        Value::Float64(-1.25e-7),
        Value::Decimal(Decimal::Finite("-12345678.90".into())),
        Value::Text(name.into()),
        Value::Bytes(Bytes::from_static(&[0, 1, 2, 255])),
        Value::Uuid([0x12; 16]),
        Value::Json(r#"{"a": [1, "x\"y"]}"#.into()),
        Value::Date(Date::Days(-719_162)),
        Value::Timestamp(Timestamp::Micros(-62_135_596_800_000_000)),
        Value::TimestampTz(Timestamp::Micros(1_700_000_000_123_456)),
        Value::Array(vec![Value::Int32(1), Value::Null, Value::Int32(-3)]),
        Value::Null,
    ]
}

fn source() -> SourceBlock {
    SourceBlock {
        connector: "postgresql",
        name: "shop".into(),
        db: "shop".into(),
    }
}

fn plan() -> Plan {
    let schema = table_plan("shop", &source(), &table(), DecimalHandling::Precise)
        .unwrap()
        .value_schema;
    plan_of(&schema).unwrap().unwrap()
}

/// sluice's own envelopes for an insert, an update and a delete (names with escapes, unicode
/// and a null among them).
fn envelopes() -> Vec<String> {
    let mut encoder = JsonEnvelopeEncoder::new(source(), false);
    let event = |op, before, after| ChangeEvent {
        op,
        table: Some(table()),
        before,
        before_is_key_only: false,
        after,
        snapshot: SnapshotMarker::No,
        commit_ts_us: 1_559_033_904_863_123,
        position: Position::PgLsn(Lsn(24_023_128)),
        xid: Some(556),
        txn: Some(TxnInfo {
            id: "556:24023128".into(),
            total_order: 3,
            data_collection_order: 1,
        }),
        message: None,
    };
    let mut out = EncodedRecords::default();
    for event in [
        event(Op::Create, None, Some(row(1, "plain"))),
        event(
            Op::Update,
            Some(row(2, "tab\there \"quoted\" ✓")),
            Some(row(2, "ünïcode\\")),
        ),
        event(Op::Delete, Some(row(-3, "")), None),
    ] {
        encoder.encode(&event, &mut out).unwrap();
    }
    (0..out.records().len())
        .map(|i| String::from_utf8(out.record(i).1.unwrap().to_vec()).unwrap())
        .collect()
}

/// The fast path either gives up or reads exactly what the general reader reads; it never
/// accepts what the general reader refuses.
fn agree(plan: &Plan, text: &str) -> bool {
    match (parts(plan, text), general(plan, text)) {
        (Some(fast), Ok(slow)) => {
            assert_eq!(fast, slow, "the fast path read {text:?} differently");
            true
        }
        (Some(fast), Err(e)) => {
            panic!(
                "the fast path accepted {text:?} ({fast:?}), which the general reader refuses: {e}"
            )
        }
        (None, _) => false,
    }
}

#[test]
fn sluices_own_envelopes_take_the_fast_path_with_the_general_readers_result() {
    let plan = plan();
    let envelopes = envelopes();
    assert_eq!(envelopes.len(), 3);
    for text in &envelopes {
        assert!(agree(&plan, text), "not read by the fast path: {text}");
    }
    let update = parts(&plan, &envelopes[1]).unwrap();
    assert_eq!(update.op.as_deref(), Some("u"));
    assert_eq!(
        update.after.as_ref().unwrap()[6],
        Value::Text("ünïcode\\".into())
    );
    assert_eq!(
        update.before.as_ref().unwrap()[6],
        Value::Text("tab\there \"quoted\" ✓".into())
    );
    assert_eq!(update.source.lsn, Some(24_023_128));
    assert_eq!(update.source.ts_us, Some(1_559_033_904_863_123));
    assert_eq!(update.txn_id.as_deref(), Some("556:24023128"));
    assert_eq!(update.total_order, Some(3));
    assert_eq!(parts(&plan, &envelopes[2]).unwrap().after, None);
}

#[test]
fn other_forms_are_left_to_the_general_reader_or_read_alike() {
    let plan = plan();
    let text = &envelopes()[0];
    // Whitespace, escaped names and numbers serde_json reads as floats: the general reader's.
    for (from, to, fast) in [
        (r#""op":"c""#, r#""op" : "c""#, false),
        (r#""op":"c""#, r#""\u006fp":"c""#, false),
        (r#""small":-32768"#, r#""small":-0"#, false),
        (r#""id":1"#, r#""id":18446744073709551616"#, false),
        (r#""id":1"#, r#""id":-9223372036854775809"#, false),
        (r#""id":1"#, r#""id":1e0"#, false),
        (r#""id":1"#, r#""id":01"#, false),
        (r#""id":1"#, r#""id":[1]"#, false),
        (r#""small":-32768"#, r#""small":-32769"#, false),
        // Read alike: other members, nested values, names in another order, escapes in values.
        (
            r#""op":"c""#,
            r#""op":"c","extra":{"a":[1,-2.5e3,{"b":null}],"c\n":"d\u00e9"}"#,
            true,
        ),
        (r#""f8":-1.25e-7"#, r#""f8":2"#, true),
        (r#""f8":-1.25e-7"#, r#""f8":"-Infinity""#, true),
        (r#""name":"plain""#, r#""name":"p\u006cain""#, true),
        (r#""flag":false"#, r#""flag":false,"gone":true"#, true),
        (r#""source":{"#, r#""source":{"lsn":"text","gtid":7,"#, true),
        (r#""transaction":{"#, r#""transaction":{"id":null,"#, true),
    ] {
        assert!(text.contains(from), "{from} in {text}");
        let changed = text.replacen(from, to, 1);
        assert_eq!(agree(&plan, &changed), fast, "{to}");
    }
    let reordered = text.replacen(r#""id":1,"flag":false"#, r#""flag":false,"id":1"#, 1);
    assert!(agree(&plan, &reordered));
}

#[test]
fn broken_envelopes_are_never_accepted_by_the_fast_path_alone() {
    let plan = plan();
    for text in envelopes() {
        // Every prefix, and every byte replaced by what breaks or changes JSON.
        for end in 0..text.len() {
            if text.is_char_boundary(end) {
                agree(&plan, &text[..end]);
            }
        }
        let bytes = text.as_bytes();
        for at in 0..bytes.len() {
            for byte in [
                b'"', b'\\', b'}', b']', b',', b':', b'0', b'-', b'e', b' ', b'x', 0x01,
            ] {
                let mut changed = bytes.to_vec();
                changed[at] = byte;
                if let Ok(changed) = String::from_utf8(changed) {
                    agree(&plan, &changed);
                }
            }
        }
    }
}

#[test]
fn an_envelope_that_is_not_utf8_is_refused_with_where() {
    let plan = plan();
    let mut bytes = envelopes()[0].clone().into_bytes();
    let at = bytes.windows(5).position(|w| w == b"plain").unwrap();
    bytes[at] = 0xff;
    let err = crate::json::decode::decode(&plan, &bytes).unwrap_err();
    assert!(err.0.contains("not UTF-8"), "{}", err.0);
    assert!(err.0.contains(&format!("index {at}")), "{}", err.0);
}
