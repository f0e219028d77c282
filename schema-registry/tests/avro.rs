//! The Avro encoder against an independent reader: every record sluice writes must decode with
//! apache-avro's own datum reader under the schema registered for it, to the values the event
//! held; and sluice's JSON decoder must give the same.

use std::sync::Arc;

use apache_avro::types::Value as Avro;
use bytes::Bytes;
use sluice_core::batch::{Header, StoredRecord};
use sluice_core::change::{ChangeDecoder, SCHEMA_HEADER};
use sluice_core::encode::{EncodedRecords, EventEncoder};
use sluice_core::event::{
    ChangeEvent, Column, DataType, Op, SnapshotMarker, TableId, TableSchema, TxnInfo,
};
use sluice_core::position::{Lsn, Position};
use sluice_core::sink::SinkRecord;
use sluice_core::value::{Date, Decimal, Interval, Timestamp, Value};
use sluice_schema_registry::avro::encode::unscaled_bytes;
use sluice_schema_registry::avro::{decode, AvroDecoder, AvroEncoder, DecimalHandling};
use sluice_schema_registry::changes::RecordDecoder;
use sluice_schema_registry::json::{JsonEnvelopeEncoder, SourceBlock};
use sluice_schema_registry::registry::store::MemoryStore;
use sluice_schema_registry::registry::{Parsed, Registry, VersionSpec};

fn column(name: &str, data_type: DataType, type_name: &str, key: bool, nullable: bool) -> Column {
    Column {
        name: name.into(),
        type_name: type_name.into(),
        data_type,
        key,
        nullable,
    }
}

fn every_type() -> Arc<TableSchema> {
    let dec = |p, s| DataType::Decimal {
        precision: Some(p),
        scale: Some(s),
    };
    Arc::new(TableSchema {
        table: TableId {
            namespace: "public".into(),
            name: "every type".into(),
        },
        columns: vec![
            column("id", DataType::Int64, "bigint", true, false),
            column("flag", DataType::Bool, "boolean", false, true),
            column("small", DataType::Int16, "smallint", false, true),
            column("u64", DataType::UInt64, "bigint unsigned", false, true),
            column("f4", DataType::Float32, "real", false, true),
            column("f8", DataType::Float64, "double precision", false, true),
            column("price", dec(10, 2), "numeric(10,2)", false, true),
            column("huge", dec(60, 5), "numeric(60,5)", false, true),
            column(
                "any_num",
                DataType::Decimal {
                    precision: None,
                    scale: None,
                },
                "numeric",
                false,
                true,
            ),
            column("name", DataType::Text, "text", false, true),
            column("blob", DataType::Bytes, "bytea", false, true),
            column("uid", DataType::Uuid, "uuid", false, true),
            column("doc", DataType::Json, "jsonb", false, true),
            column("day", DataType::Date, "date", false, true),
            column("at", DataType::Time, "time", false, true),
            column("local", DataType::Timestamp, "timestamp", false, true),
            column("instant", DataType::TimestampTz, "timestamptz", false, true),
            column("span", DataType::Interval, "interval", false, true),
            column(
                "tags",
                DataType::Array(Box::new(DataType::Int32)),
                "integer[]",
                false,
                true,
            ),
            column("mood", DataType::Enum, "mood", false, true),
            column("héllo wörld", DataType::Text, "text", false, true),
        ],
        version: 1,
    })
}

fn row() -> Vec<Value> {
    vec![
        Value::Int64(i64::MAX),
        Value::Bool(true),
        Value::Int16(i16::MIN),
        Value::UInt64(u64::MAX),
        Value::Float32(1.5),
        Value::Float64(f64::MIN_POSITIVE),
        Value::Decimal(Decimal::Finite("-12345678.90".into())),
        Value::Decimal(Decimal::Finite(
            "-1234567890123456789012345678901234567890123456789012345.12345".into(),
        )),
        Value::Decimal(Decimal::NaN),
        Value::Text("ünïcode ✓".into()),
        Value::Bytes(Bytes::from_static(&[0, 1, 2, 255])),
        Value::Uuid([0x12; 16]),
        Value::Json(r#"{"a": [1, 2]}"#.into()),
        Value::Date(Date::Days(-719_162)),
        Value::Time(86_399_999_999),
        Value::Timestamp(Timestamp::Micros(-62_135_596_800_000_000)),
        Value::TimestampTz(Timestamp::Micros(1_700_000_000_123_456)),
        Value::Interval(Interval {
            months: 14,
            days: 3,
            micros: 4_000_000,
        }),
        Value::Array(vec![Value::Int32(1), Value::Null, Value::Int32(-3)]),
        Value::Enum("happy".into()),
        Value::Null,
    ]
}

fn event(op: Op, before: Option<Vec<Value>>, after: Option<Vec<Value>>) -> ChangeEvent {
    ChangeEvent {
        op,
        table: Some(every_type()),
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

fn source() -> SourceBlock {
    SourceBlock {
        connector: "postgresql",
        name: "shop".into(),
        db: "shop".into(),
    }
}

fn encoder() -> (Arc<Registry>, AvroEncoder) {
    let registry = Arc::new(Registry::open(MemoryStore::default()).unwrap());
    let encoder = AvroEncoder::new(
        Arc::clone(&registry),
        source(),
        true,
        DecimalHandling::Precise,
    );
    (registry, encoder)
}

/// Decodes a framed record with apache-avro under the schema its header names.
fn avro_decode(registry: &Registry, bytes: &[u8]) -> Avro {
    assert_eq!(bytes[0], 0, "magic byte");
    let id = u32::from_be_bytes(bytes[1..5].try_into().unwrap());
    let stored = registry.schema(id).unwrap();
    let Parsed::Avro(schema) = &stored.parsed else {
        panic!("not avro")
    };
    let mut rest = &bytes[5..];
    let value = apache_avro::reader::datum::GenericDatumReader::builder(schema)
        .build()
        .unwrap()
        .read_value(&mut rest)
        .unwrap();
    assert!(rest.is_empty(), "bytes left after the datum");
    value
}

fn field<'a>(record: &'a Avro, name: &str) -> &'a Avro {
    let Avro::Record(fields) = record else {
        panic!("not a record: {record:?}")
    };
    &fields
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no field {name}"))
        .1
}

fn unwrap_union(value: &Avro) -> &Avro {
    match value {
        Avro::Union(_, inner) => inner,
        other => other,
    }
}

#[test]
fn every_type_reads_back_with_apache_avro() {
    let (registry, mut encoder) = encoder();
    let mut out = EncodedRecords::default();
    encoder
        .encode(&event(Op::Create, None, Some(row())), &mut out)
        .unwrap();
    assert_eq!(out.records().len(), 1);
    let (key, value) = out.record(0);
    let key = avro_decode(&registry, key.unwrap());
    assert_eq!(field(&key, "id"), &Avro::Long(i64::MAX));

    let value = avro_decode(&registry, value.unwrap());
    assert_eq!(unwrap_union(field(&value, "before")), &Avro::Null);
    assert_eq!(field(&value, "op"), &Avro::String("c".into()));
    let after = unwrap_union(field(&value, "after"));
    let get = |name| unwrap_union(field(after, name)).clone();
    assert_eq!(get("flag"), Avro::Boolean(true));
    assert_eq!(get("small"), Avro::Int(i32::from(i16::MIN)));
    assert_eq!(get("f4"), Avro::Float(1.5));
    assert_eq!(get("f8"), Avro::Double(f64::MIN_POSITIVE));
    assert_eq!(get("name"), Avro::String("ünïcode ✓".into()));
    assert_eq!(get("blob"), Avro::Bytes(vec![0, 1, 2, 255]));
    assert!(
        matches!(get("uid"), Avro::Uuid(u) if u.to_string() == "12121212-1212-1212-1212-121212121212")
    );
    assert_eq!(get("doc"), Avro::String(r#"{"a": [1, 2]}"#.into()));
    assert_eq!(get("day"), Avro::Date(-719_162));
    assert_eq!(get("at"), Avro::TimeMicros(86_399_999_999));
    assert_eq!(
        get("local"),
        Avro::LocalTimestampMicros(-62_135_596_800_000_000)
    );
    assert_eq!(get("instant"), Avro::TimestampMicros(1_700_000_000_123_456));
    assert_eq!(get("span"), Avro::String("P1Y2M3DT4S".into()));
    assert_eq!(
        get("tags"),
        Avro::Array(vec![
            Avro::Union(1, Box::new(Avro::Int(1))),
            Avro::Union(0, Box::new(Avro::Null)),
            Avro::Union(1, Box::new(Avro::Int(-3))),
        ])
    );
    assert_eq!(get("mood"), Avro::String("happy".into()));
    assert_eq!(get("h_llo_w_rld"), Avro::Null);
    assert_eq!(get("any_num"), Avro::String("NaN".into()));
    // Decimals: apache-avro yields the unscaled integer; compare its bytes with ours.
    for (name, text, scale) in [
        ("price", "-12345678.90", 2),
        ("u64", "18446744073709551615", 0),
        (
            "huge",
            "-1234567890123456789012345678901234567890123456789012345.12345",
            5,
        ),
    ] {
        let Avro::Decimal(decimal) = get(name) else {
            panic!("{name} is not a decimal: {:?}", get(name))
        };
        let bytes: Vec<u8> = decimal.try_into().unwrap();
        assert_eq!(decode::decimal_text(&bytes, scale), text, "{name}");
    }
    let source = field(&value, "source");
    assert_eq!(
        field(source, "connector"),
        &Avro::String("postgresql".into())
    );
    assert_eq!(unwrap_union(field(source, "lsn")), &Avro::Long(24_023_128));
    assert_eq!(
        unwrap_union(field(source, "table")),
        &Avro::String("every type".into())
    );
}

#[test]
fn sluice_decoder_gives_debezium_shaped_json() {
    let (registry, mut encoder) = encoder();
    let mut out = EncodedRecords::default();
    encoder
        .encode(&event(Op::Update, Some(row()), Some(row())), &mut out)
        .unwrap();
    let mut decoder = AvroDecoder::new(registry);
    let value = decoder.to_json(out.record(0).1.unwrap()).unwrap();
    assert_eq!(value["op"], "u");
    assert_eq!(value["after"]["price"], "-12345678.90");
    assert_eq!(value["after"]["u64"], "18446744073709551615");
    assert_eq!(value["before"]["tags"], serde_json::json!([1, null, -3]));
    assert_eq!(value["after"]["blob"], "AAEC/w==");
    assert_eq!(value["source"]["txId"], 556);
    assert_eq!(value["transaction"]["id"], "556:24023128");
    let key = decoder.to_json(out.record(0).0.unwrap()).unwrap();
    assert_eq!(key, serde_json::json!({"id": i64::MAX}));
}

#[test]
fn deletes_tombstones_and_truncates() {
    let (registry, mut encoder) = encoder();
    let mut out = EncodedRecords::default();
    encoder
        .encode(&event(Op::Delete, Some(row()), None), &mut out)
        .unwrap();
    assert_eq!(out.records().len(), 2, "delete then tombstone");
    assert_eq!(out.record(1).1, None);
    assert_eq!(out.record(1).0, out.record(0).0);
    let value = avro_decode(&registry, out.record(0).1.unwrap());
    assert_eq!(unwrap_union(field(&value, "after")), &Avro::Null);
    let mut out = EncodedRecords::default();
    encoder
        .encode(&event(Op::Truncate, None, None), &mut out)
        .unwrap();
    assert_eq!(out.records().len(), 1);
    assert_eq!(out.record(0).0, None);
    let value = avro_decode(&registry, out.record(0).1.unwrap());
    assert_eq!(field(&value, "op"), &Avro::String("t".into()));
}

#[test]
fn schemas_register_under_topic_subjects_with_debezium_names() {
    let (registry, mut encoder) = encoder();
    encoder
        .encode(
            &event(Op::Create, None, Some(row())),
            &mut EncodedRecords::default(),
        )
        .unwrap();
    assert_eq!(
        registry.subjects(false),
        vec![
            "shop.public.every-20-type-key".to_string(),
            "shop.public.every-20-type-value".to_string()
        ]
    );
    let value = registry
        .version(
            "shop.public.every-20-type-value",
            VersionSpec::Latest,
            false,
        )
        .unwrap();
    let schema: serde_json::Value = serde_json::from_str(&value.schema).unwrap();
    assert_eq!(schema["name"], "Envelope");
    assert_eq!(schema["namespace"], "shop.public.every_type");
    assert_eq!(schema["fields"][0]["type"][1]["name"], "Value");
    let price = &schema["fields"][0]["type"][1]["fields"][6];
    assert_eq!(price["name"], "price");
    assert_eq!(
        price["type"][1],
        serde_json::json!({"type": "bytes", "logicalType": "decimal", "precision": 10, "scale": 2})
    );
    assert_eq!(price["sluice.type"], "numeric(10,2)");
}

#[test]
fn new_columns_are_compatible_new_versions_and_a_changed_type_is_refused() {
    let (registry, mut encoder) = encoder();
    let mut schema = (*every_type()).clone();
    let base = event(Op::Create, None, Some(row()));
    encoder
        .encode(&base, &mut EncodedRecords::default())
        .unwrap();

    schema.version = 2;
    schema
        .columns
        .push(column("note", DataType::Text, "text", false, true));
    let mut added = base.clone();
    added.table = Some(Arc::new(schema.clone()));
    let mut values = row();
    values.push(Value::Text("new".into()));
    added.after = Some(values.clone());
    let mut out = EncodedRecords::default();
    encoder.encode(&added, &mut out).unwrap();
    assert_eq!(
        registry
            .versions("shop.public.every-20-type-value", false)
            .unwrap(),
        vec![1, 2]
    );
    let value = avro_decode(&registry, out.record(0).1.unwrap());
    let after = unwrap_union(field(&value, "after"));
    assert_eq!(
        unwrap_union(field(after, "note")),
        &Avro::String("new".into())
    );

    // A NOT NULL column is optional in Avro too (old records have no value for it).
    schema.version = 3;
    schema
        .columns
        .push(column("required", DataType::Int32, "integer", false, false));
    let mut required = base.clone();
    required.table = Some(Arc::new(schema.clone()));
    values.push(Value::Int32(1));
    required.after = Some(values.clone());
    encoder
        .encode(&required, &mut EncodedRecords::default())
        .unwrap();

    // A column whose type changes from text to bigint cannot be read from old records.
    schema.version = 4;
    let name = schema
        .columns
        .iter()
        .position(|c| c.name == "name")
        .unwrap();
    schema.columns[name].data_type = DataType::Int64;
    schema.columns[name].type_name = "bigint".into();
    let mut refused = base.clone();
    refused.table = Some(Arc::new(schema));
    values[name] = Value::Int64(5);
    refused.after = Some(values);
    let err = encoder
        .encode(&refused, &mut EncodedRecords::default())
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("public.every type"), "{text}");
    assert!(text.contains("shop.public.every-20-type-value"), "{text}");
    assert!(
        text.contains("column 'name': type changed from string to long"),
        "{text}"
    );
    assert!(
        text.contains("PUT /config/shop.public.every-20-type-value"),
        "{text}"
    );
}

#[test]
fn values_the_avro_types_cannot_carry_are_definite_errors() {
    let (_, mut encoder) = encoder();
    let mut values = row();
    values[6] = Value::Decimal(Decimal::NaN);
    let err = encoder
        .encode(
            &event(Op::Create, None, Some(values)),
            &mut EncodedRecords::default(),
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("column price"), "{err}");
    assert!(err.contains("avro_decimals"), "{err}");

    let mut values = row();
    values[6] = Value::Decimal(Decimal::Finite("1.234".into()));
    let err = encoder
        .encode(
            &event(Op::Create, None, Some(values)),
            &mut EncodedRecords::default(),
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("more than 2 decimal places"), "{err}");

    let mut values = row();
    values[18] = Value::Array(vec![Value::Array(vec![Value::Int32(1)])]);
    let err = encoder
        .encode(
            &event(Op::Create, None, Some(values)),
            &mut EncodedRecords::default(),
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("multi-dimensional"), "{err}");

    let mut values = row();
    values[0] = Value::Null;
    let err = encoder
        .encode(
            &event(Op::Create, None, Some(values)),
            &mut EncodedRecords::default(),
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("key column id is NULL"), "{err}");
}

#[test]
fn decimal_bytes_round_trip_at_every_size() {
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for digits in 1..=120 {
        for _ in 0..20 {
            let mut text = String::new();
            if next() % 2 == 0 {
                text.push('-');
            }
            for i in 0..digits {
                let d = (next() % 10) as u8;
                text.push(char::from(if i == 0 && digits > 1 {
                    b'1' + d % 9
                } else {
                    b'0' + d
                }));
            }
            let scale = (next() % 6) as usize;
            let scale = scale.min(digits - 1);
            let with_point = if scale > 0 {
                let at = text.len() - scale;
                format!("{}.{}", &text[..at], &text[at..])
            } else {
                text.clone()
            };
            let bytes = unscaled_bytes(&with_point, scale as u32).unwrap();
            let expected = if with_point == "-0" {
                "0".to_string()
            } else {
                with_point.clone()
            };
            let back = decode::decimal_text(&bytes, scale);
            let normalized = |s: &str| {
                s.trim_start_matches('-')
                    .trim_start_matches('0')
                    .to_string()
            };
            assert_eq!(normalized(&back), normalized(&expected), "{with_point}");
            // apache-avro agrees on the integer the bytes hold.
            let via_avro = apache_avro::Decimal::from(bytes.clone());
            let back_bytes: Vec<u8> = (&via_avro).try_into().unwrap();
            assert_eq!(decode::decimal_text(&back_bytes, scale), back);
        }
    }
    assert_eq!(unscaled_bytes("0", 2).unwrap(), vec![0]);
    assert_eq!(unscaled_bytes("-1", 0).unwrap(), vec![0xff]);
    assert_eq!(unscaled_bytes("128", 0).unwrap(), vec![0, 128]);
    assert_eq!(unscaled_bytes("-128", 0).unwrap(), vec![0x80]);
    assert_eq!(unscaled_bytes("1.5", 3).unwrap(), vec![0x05, 0xdc]);
    assert_eq!(decode::decimal_text(&[0x05, 0xdc], 3), "1.500");
    assert_eq!(decode::decimal_text(&[0xff], 2), "-0.01");
}

/// A log record of `out`'s record `i`, with a schema header when the encoder named one.
fn sink_record(out: &EncodedRecords, i: usize, value_schema: Option<u32>) -> SinkRecord {
    let (key, value) = out.record(i);
    SinkRecord {
        topic: "src.public.every type".into(),
        partition: 0,
        record: StoredRecord {
            offset: 7,
            timestamp_ms: 0,
            key: key.map(Bytes::copy_from_slice),
            value: value.map(Bytes::copy_from_slice),
            headers: value_schema
                .map(|id| Header {
                    key: SCHEMA_HEADER.into(),
                    value: Some(id.to_string().into()),
                })
                .into_iter()
                .collect(),
        },
    }
}

#[test]
fn typed_rows_read_back_equal_to_the_events_values_from_avro_and_from_json() {
    let (registry, mut encoder) = encoder();
    let mut json_encoder =
        JsonEnvelopeEncoder::new(source(), true).registering(Arc::clone(&registry));
    let mut before = row();
    before[20] = Value::Unavailable;
    let update = event(Op::Update, Some(before.clone()), Some(row()));
    let (mut avro_out, mut json_out) = (EncodedRecords::default(), EncodedRecords::default());
    encoder.encode(&update, &mut avro_out).unwrap();
    json_encoder.encode(&update, &mut json_out).unwrap();
    let json_schema = json_out.records()[0].value_schema;
    assert!(json_schema.is_some(), "JSON records name their schema");
    let mut decoder = RecordDecoder::new(registry);
    let from_avro = decoder
        .decode(&sink_record(&avro_out, 0, None))
        .unwrap()
        .unwrap();
    let from_json = decoder
        .decode(&sink_record(&json_out, 0, json_schema))
        .unwrap()
        .unwrap();
    for change in [&from_avro, &from_json] {
        assert_eq!(change.op, Op::Update);
        assert_eq!(change.txn.as_deref(), Some("556:24023128"));
        assert_eq!(change.total_order, Some(1));
        assert_eq!(change.position, Some(Position::PgLsn(Lsn(24_023_128))));
        assert_eq!(change.commit_ts_us, 1_559_033_904_863_123);
        let schema = every_type();
        assert_eq!(change.table.table, schema.table);
        assert_eq!(
            change.table.columns, schema.columns,
            "names, types, keys, nullability"
        );
        // Intervals come back as their ISO text; everything else as it went in.
        let mut expected = row();
        expected[17] = Value::Text("P1Y2M3DT4S".into());
        assert_eq!(change.after.as_ref().unwrap(), &expected);
        let mut expected_before = expected.clone();
        expected_before[20] = Value::Unavailable;
        assert_eq!(change.before.as_ref().unwrap(), &expected_before);
        assert_eq!(change.key(), vec![&Value::Int64(i64::MAX)]);
    }
    // A JSON record that names no schema is refused with the fix.
    let err = decoder
        .decode(&sink_record(&json_out, 0, None))
        .unwrap_err();
    assert!(err.to_string().contains("encoding = \"avro\""), "{err}");
    // The delete's tombstone is no change.
    let mut out = EncodedRecords::default();
    json_encoder
        .encode(&event(Op::Delete, Some(row()), None), &mut out)
        .unwrap();
    assert_eq!(out.records().len(), 2);
    assert_eq!(decoder.decode(&sink_record(&out, 1, None)).unwrap(), None);
}

#[test]
fn a_table_version_number_reused_for_other_columns_is_a_new_schema() {
    // A source may number versions afresh (snapshot, then stream; or after a restart).
    let (registry, mut encoder) = encoder();
    encoder
        .encode(
            &event(Op::Create, None, Some(row())),
            &mut EncodedRecords::default(),
        )
        .unwrap();
    let mut wider = (*every_type()).clone();
    wider
        .columns
        .push(column("late", DataType::Int32, "integer", false, true));
    let mut added = event(Op::Create, None, None);
    added.table = Some(Arc::new(wider));
    let mut values = row();
    values.push(Value::Int32(9));
    added.after = Some(values);
    let mut out = EncodedRecords::default();
    encoder.encode(&added, &mut out).unwrap();
    let value = avro_decode(&registry, out.record(0).1.unwrap());
    let after = unwrap_union(field(&value, "after"));
    assert_eq!(unwrap_union(field(after, "late")), &Avro::Int(9));
}

#[test]
fn transaction_boundaries_read_back_with_apache_avro_and_are_no_row_change() {
    use sluice_core::event::TxnBoundary;
    let (registry, mut encoder) = encoder();
    let boundaries = [
        TxnBoundary {
            id: "571:53195829".into(),
            commit_ts_us: 1_486_500_577_125_000,
            end: None,
        },
        TxnBoundary {
            id: "571:53195829".into(),
            commit_ts_us: 1_486_500_577_125_000,
            end: Some(vec![("public.a".into(), 2), ("public.b".into(), 1)]),
        },
        TxnBoundary {
            id: "572:53195900".into(),
            commit_ts_us: 1_486_500_577_200_000,
            end: Some(Vec::new()),
        },
    ];
    let mut out = EncodedRecords::with_capacity(1024);
    for boundary in &boundaries {
        encoder.encode_boundary(boundary, &mut out).unwrap();
    }
    assert_eq!(out.records().len(), 3);
    let text = |v: &Avro| match unwrap_union(v) {
        Avro::String(s) => s.clone(),
        other => panic!("not a string: {other:?}"),
    };
    let long = |v: &Avro| match unwrap_union(v) {
        Avro::Long(n) => Some(*n),
        Avro::Null => None,
        other => panic!("not a long: {other:?}"),
    };
    for (i, boundary) in boundaries.iter().enumerate() {
        let (key, value) = out.record(i);
        let key = avro_decode(&registry, key.unwrap());
        assert_eq!(text(field(&key, "id")), &*boundary.id);
        let value = avro_decode(&registry, value.unwrap());
        assert_eq!(text(field(&value, "status")), boundary.status());
        assert_eq!(text(field(&value, "id")), &*boundary.id);
        assert_eq!(
            long(field(&value, "event_count")),
            boundary.event_count().map(|n| n as i64)
        );
        assert_eq!(
            long(field(&value, "ts_ms")),
            Some(boundary.commit_ts_us / 1000)
        );
        let collections = match unwrap_union(field(&value, "data_collections")) {
            Avro::Null => None,
            Avro::Array(items) => Some(
                items
                    .iter()
                    .map(|item| {
                        let name = text(field(item, "data_collection"));
                        (name, long(field(item, "event_count")).unwrap() as u64)
                    })
                    .collect::<Vec<_>>(),
            ),
            other => panic!("not an array: {other:?}"),
        };
        assert_eq!(collections, boundary.end);
    }
    // Registered under the transaction topic's subjects, Debezium's record names.
    let latest = registry
        .version("shop.transaction-value", VersionSpec::Latest, false)
        .unwrap();
    assert!(
        latest.schema.contains("TransactionMetadataValue"),
        "{}",
        latest.schema
    );
    // A sink decoding the transaction topic passes the records over.
    let mut decoder = RecordDecoder::new(Arc::clone(&registry));
    let mut record = sink_record(&out, 1, None);
    record.topic = "shop.transaction".into();
    assert_eq!(decoder.decode(&record).unwrap(), None);
    // As JSON (Debezium's form), marked by the header the runtime puts on them.
    let mut json = JsonEnvelopeEncoder::new(source(), true);
    let mut out = EncodedRecords::with_capacity(1024);
    json.encode_boundary(&boundaries[1], &mut out).unwrap();
    let (key, value) = out.record(0);
    assert_eq!(key.unwrap(), br#"{"id":"571:53195829"}"#);
    assert_eq!(
        std::str::from_utf8(value.unwrap()).unwrap(),
        r#"{"status":"END","id":"571:53195829","event_count":3,"data_collections":[{"data_collection":"public.a","event_count":2},{"data_collection":"public.b","event_count":1}],"ts_ms":1486500577125}"#
    );
    let mut record = sink_record(&out, 0, None);
    record.topic = "shop.transaction".into();
    record.record.headers.push(Header {
        key: sluice_core::topic::BOUNDARY_HEADER.into(),
        value: Some("END".into()),
    });
    assert_eq!(decoder.decode(&record).unwrap(), None);
}
