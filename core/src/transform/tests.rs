use std::sync::Arc;

use super::*;
use crate::batch::StoredRecord;
use crate::change::Change;
use crate::event::{Column, DataType, Op, TableId};
use crate::value::Value;

fn column(name: &str, data_type: DataType, key: bool) -> Column {
    Column {
        name: name.to_owned(),
        type_name: String::new(),
        data_type,
        key,
        nullable: !key,
    }
}

fn customers() -> Arc<TableSchema> {
    Arc::new(TableSchema {
        table: TableId {
            namespace: "public".into(),
            name: "customers".into(),
        },
        columns: vec![
            column("id", DataType::Int64, true),
            column("email", DataType::Text, false),
            column("status", DataType::Text, false),
            column("ssn", DataType::Text, false),
        ],
        version: 1,
    })
}

fn outbox_table() -> Arc<TableSchema> {
    Arc::new(TableSchema {
        table: TableId {
            namespace: "shop".into(),
            name: "outbox".into(),
        },
        columns: vec![
            column("id", DataType::Uuid, true),
            column("aggregatetype", DataType::Text, false),
            column("aggregateid", DataType::Text, false),
            column("type", DataType::Text, false),
            column("payload", DataType::Json, false),
        ],
        version: 3,
    })
}

fn text(s: &str) -> Value {
    Value::Text(s.into())
}

fn customer(id: i64, email: &str, status: &str) -> Vec<Value> {
    vec![
        Value::Int64(id),
        text(email),
        text(status),
        text("123-45-6789"),
    ]
}

fn change(
    table: &Arc<TableSchema>,
    op: Op,
    before: Option<Vec<Value>>,
    after: Option<Vec<Value>>,
) -> Change {
    Change {
        table: Arc::clone(table),
        op,
        before,
        after,
        position: None,
        txn: Some("7:16/B0".into()),
        total_order: Some(1),
        commit_ts_us: 1_700_000_000_000_000,
    }
}

fn records(topic: &str, n: usize) -> Vec<SinkRecord> {
    (0..n)
        .map(|i| SinkRecord {
            topic: topic.into(),
            partition: 0,
            record: StoredRecord {
                offset: i as u64,
                timestamp_ms: 0,
                key: None,
                value: None,
                headers: Vec::new(),
            },
        })
        .collect()
}

fn build(toml: &str) -> Result<Chain, TransformConfigError> {
    #[derive(serde::Deserialize)]
    struct File {
        transforms: Vec<TransformConfig>,
    }
    let file: File = toml_from(toml);
    Chain::new(&file.transforms)
}

fn toml_from<T: serde::de::DeserializeOwned>(text: &str) -> T {
    // The config crate is the binary's; its TOML reaches serde as JSON-like values, which
    // serde_json models closely enough for these tests.
    serde_json::from_str(text).expect("test config")
}

fn run(
    chain: &mut Chain,
    changes: Vec<Change>,
    topic: &str,
) -> (Vec<SourcedChange>, Vec<Rejected>) {
    let records = records(topic, changes.len());
    let sourced = changes
        .into_iter()
        .enumerate()
        .map(|(i, c)| SourcedChange::new(c, i))
        .collect();
    chain
        .apply(sourced, &records)
        .expect("the chain fits the table")
}

#[test]
fn filter_keeps_what_its_condition_holds_for() {
    let mut chain =
        build(r#"{"transforms":[{"type":"filter","when":"status = 'active' or __op = 'd'"}]}"#)
            .unwrap();
    let t = customers();
    let (kept, rejected) = run(
        &mut chain,
        vec![
            change(&t, Op::Create, None, Some(customer(1, "a@x", "active"))),
            change(&t, Op::Create, None, Some(customer(2, "b@x", "blocked"))),
            change(&t, Op::Delete, Some(customer(2, "b@x", "blocked")), None),
        ],
        "shop.public.customers",
    );
    assert!(rejected.is_empty());
    assert_eq!(kept.iter().map(|c| c.record).collect::<Vec<_>>(), [0, 2]);
}

#[test]
fn route_renames_topic_and_table() {
    let mut chain = build(r#"{"transforms":[{"type":"route","regex":"shop\\.public\\.(.*)","replacement":"crm.v2_$1"}]}"#).unwrap();
    let t = customers();
    let (kept, _) = run(
        &mut chain,
        vec![change(&t, Op::Create, None, Some(customer(1, "a", "b")))],
        "shop.public.customers",
    );
    assert_eq!(kept[0].topic.as_deref(), Some("crm.v2_customers"));
    assert_eq!(kept[0].change.table.table.to_string(), "crm.v2_customers");
    // A topic the regex does not match whole keeps its name.
    let (kept, _) = run(
        &mut chain,
        vec![change(&t, Op::Create, None, Some(customer(1, "a", "b")))],
        "other.public.customers",
    );
    assert_eq!(kept[0].topic, None);
    let err = chain_err(r#"{"transforms":[{"type":"route","regex":"a(.*)","replacement":"$2"}]}"#);
    assert_eq!(
        err,
        "transforms[0] (route): replacement: the regex has no group 2 (it has 1)"
    );
    // A group that took no part in the match rejects the change.
    let mut optional = build(r#"{"transforms":[{"type":"route","regex":"shop\\.public\\.(x)?customers","replacement":"t_$1"}]}"#).unwrap();
    let (kept, rejected) = run(
        &mut optional,
        vec![change(&t, Op::Create, None, Some(customer(1, "a", "b")))],
        "shop.public.customers",
    );
    assert!(kept.is_empty());
    assert_eq!(rejected[0].reason, "transforms[0] (route): group 1 of the regex matched nothing in topic shop.public.customers");
}

fn chain_err(toml: &str) -> String {
    match build(toml) {
        Ok(_) => panic!("{toml} was accepted"),
        Err(err) => err.to_string(),
    }
}

#[test]
fn columns_mask_and_set_reshape_rows() {
    let salt = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(salt.path(), "0123456789abcdef0123\n").unwrap();
    let mut chain = build(&format!(
        r#"{{"transforms":[
            {{"type":"columns","exclude":["ssn"],"rename":{{"status":"state"}}}},
            {{"type":"mask","columns":["email"],"salt_file":{:?}}},
            {{"type":"set","fields":{{"region":"eu","source":"${{table}}@${{op}}","at":"${{commit_ts}}"}}}}
        ]}}"#,
        salt.path()
    ))
    .unwrap();
    let t = customers();
    let (kept, _) = run(
        &mut chain,
        vec![
            change(&t, Op::Create, None, Some(customer(1, "a@x", "active"))),
            change(&t, Op::Create, None, Some(customer(2, "a@x", "active"))),
        ],
        "shop.public.customers",
    );
    let out = &kept[0].change;
    let names: Vec<&str> = out.table.columns.iter().map(|c| c.name.as_str()).collect();
    // Added fields come in name order.
    assert_eq!(names, ["id", "email", "state", "at", "region", "source"]);
    let row = out.after.as_ref().unwrap();
    let Value::Text(hash) = &row[1] else {
        panic!("{row:?}")
    };
    assert_eq!(hash.len(), 64);
    assert_ne!(hash.as_str(), "a@x");
    assert_eq!(
        kept[1].change.after.as_ref().unwrap()[1],
        row[1],
        "equal values hash equal"
    );
    assert_eq!(row[2], text("active"));
    assert_eq!(row[4], text("eu"));
    assert_eq!(row[5], text("public.customers@c"));
    assert_eq!(out.table.columns[3].data_type, DataType::TimestampTz);
    // The same table version gets the same output schema (sinks cache per schema).
    assert!(Arc::ptr_eq(&kept[0].change.table, &kept[1].change.table));
}

#[test]
fn mistakes_a_table_reveals_name_the_column() {
    let mut chain = build(r#"{"transforms":[{"type":"columns","include":["id","email"]},{"type":"filter","when":"phone = '1'"}]}"#).unwrap();
    let t = customers();
    let records = records("shop.public.customers", 1);
    let err = chain
        .apply(
            vec![SourcedChange::new(
                change(&t, Op::Create, None, Some(customer(1, "a", "b"))),
                0,
            )],
            &records,
        )
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "transforms[1] (filter): when: no column `phone` (table public.customers, topic shop.public.customers; its columns: id, email)"
    );
    let mut chain = build(r#"{"transforms":[{"type":"columns","exclude":["id"]}]}"#).unwrap();
    let err = chain
        .apply(
            vec![SourcedChange::new(
                change(&t, Op::Create, None, Some(customer(1, "a", "b"))),
                0,
            )],
            &records,
        )
        .unwrap_err();
    assert!(
        err.to_string().contains("column `id` is part of the key"),
        "{err}"
    );
    assert!(
        chain_err(r#"{"transforms":[{"type":"mask","columns":["email"]}]}"#)
            .contains("needs a salt")
    );
    assert!(
        chain_err(r#"{"transforms":[{"type":"filter","when":"status = "}]}"#)
            .starts_with("transforms[0] (filter): when: expected")
    );
}

#[test]
fn transforms_apply_to_their_topics_only() {
    let mut chain =
        build(r#"{"transforms":[{"type":"filter","topics":["*.orders"],"when":"status = 'x'"}]}"#)
            .unwrap();
    let t = customers();
    let (kept, _) = run(
        &mut chain,
        vec![change(&t, Op::Create, None, Some(customer(1, "a", "b")))],
        "shop.public.customers",
    );
    assert_eq!(kept.len(), 1);
}

#[test]
fn unwrap_flags_or_drops_deletes() {
    let t = customers();
    let delete = || {
        change(
            &t,
            Op::Delete,
            Some(vec![Value::Int64(5), Value::Null, Value::Null, Value::Null]),
            None,
        )
    };
    let mut flag = build(r#"{"transforms":[{"type":"unwrap","deletes":"flag"}]}"#).unwrap();
    let (kept, _) = run(
        &mut flag,
        vec![
            delete(),
            change(&t, Op::Create, None, Some(customer(1, "a", "b"))),
        ],
        "s.public.customers",
    );
    let soft = &kept[0].change;
    assert_eq!(soft.op, Op::Update);
    assert_eq!(
        soft.after.as_ref().unwrap(),
        &vec![
            Value::Int64(5),
            Value::Unavailable,
            Value::Unavailable,
            Value::Unavailable,
            text("true")
        ]
    );
    assert_eq!(kept[1].change.after.as_ref().unwrap()[4], text("false"));
    assert!(
        kept.iter().all(|k| k.unwrapped),
        "sinks that send events send these as rows"
    );
    // Limited to other topics, it leaves this one's changes as they are (envelopes).
    let mut elsewhere =
        build(r#"{"transforms":[{"type":"unwrap","topics":["*.orders"]}]}"#).unwrap();
    let (kept, _) = run(
        &mut elsewhere,
        vec![change(&t, Op::Create, None, Some(customer(1, "a", "b")))],
        "s.public.customers",
    );
    assert!(!kept[0].unwrapped);
    let mut drop = build(r#"{"transforms":[{"type":"unwrap","deletes":"drop"}]}"#).unwrap();
    let (kept, _) = run(&mut drop, vec![delete()], "s.public.customers");
    assert!(kept.is_empty());
}

#[test]
fn outbox_rows_become_events_on_their_aggregate_topic() {
    let mut chain = build(r#"{"transforms":[{"type":"outbox"}]}"#).unwrap();
    let t = outbox_table();
    let row = |kind: &str| {
        vec![
            Value::Uuid([7; 16]),
            text(kind),
            text("order-17"),
            text("OrderCreated"),
            Value::Json(r#"{"total":12}"#.into()),
        ]
    };
    let (kept, rejected) = run(
        &mut chain,
        vec![
            change(&t, Op::Create, None, Some(row("Order"))),
            change(&t, Op::Delete, Some(row("Order")), None),
            change(&t, Op::Create, None, Some(row(""))),
            change(&t, Op::Create, None, Some(row("Customer"))),
        ],
        "legacy.shop.outbox",
    );
    assert_eq!(
        kept.len(),
        2,
        "the delete is no event, the empty type is rejected"
    );
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].record, 2);
    let event = &kept[0];
    assert_eq!(event.topic.as_deref(), Some("outbox.event.Order"));
    assert_eq!(event.change.table.table.to_string(), "shop.Order");
    assert_eq!(event.change.key(), vec![&text("order-17")]);
    assert_eq!(
        event.change.after.as_ref().unwrap()[event.payload.unwrap()],
        Value::Json(r#"{"total":12}"#.into())
    );
    assert_eq!(kept[1].topic.as_deref(), Some("outbox.event.Customer"));
    // Tables that are not outboxes pass untouched.
    let c = customers();
    let (kept, _) = run(
        &mut chain,
        vec![change(&c, Op::Create, None, Some(customer(1, "a", "b")))],
        "legacy.public.customers",
    );
    assert_eq!(kept[0].topic, None);
    assert!(
        chain_err(r#"{"transforms":[{"type":"outbox","route":"events"}]}"#)
            .contains("does not name ${aggregatetype}")
    );
}
