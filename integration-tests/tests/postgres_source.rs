//! The Postgres source end to end: real Postgres, the real `sluice` binary, the log read back.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value as Json};
use sluice_integration_tests::{
    events, fold_rows, jsonl_sink, source_config, wait_for, Rng, Sluice, TestDb,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_arrive_in_commit_order_per_key_with_before_images() {
    let db = TestDb::create();
    db.exec(
        "CREATE TABLE full_t (id int PRIMARY KEY, v text, n int); ALTER TABLE full_t REPLICA IDENTITY FULL; \
         CREATE TABLE dflt_t (id int PRIMARY KEY, v text);",
    );
    let mut sluice = Sluice::new(&(source_config(&db, "") + &jsonl_sink("\"src.public.*\"")));
    sluice.start();
    let client = db.client().await;
    db.wait_for_streaming().await;
    // One string per transaction: a multi-statement string would run as one implicit transaction.
    for txn in [
        "BEGIN; INSERT INTO full_t VALUES (1, 'a', 1), (2, 'b', 2); INSERT INTO dflt_t VALUES (1, 'x'); COMMIT",
        "UPDATE full_t SET v = 'a2', n = 10 WHERE id = 1",
        "UPDATE dflt_t SET v = 'x2' WHERE id = 1",
        "BEGIN; UPDATE full_t SET n = n + 1 WHERE id = 1; DELETE FROM full_t WHERE id = 2; COMMIT",
        "DELETE FROM dflt_t WHERE id = 1",
        "UPDATE full_t SET id = 3 WHERE id = 1",
        "INSERT INTO dflt_t VALUES (5, 'y')",
        "TRUNCATE dflt_t",
    ] {
        client.batch_execute(txn).await.unwrap();
    }
    wait_for(Duration::from_secs(20), "all events in the log", || {
        events(&sluice.records("src.public.full_t")).len() >= 6
            && events(&sluice.records("src.public.dflt_t")).len() >= 5
    })
    .await;

    let full = events(&sluice.records("src.public.full_t"));
    let summary: Vec<(String, Json, Json)> = full
        .iter()
        .map(|e| {
            (
                e["op"].as_str().unwrap().to_owned(),
                e["before"].clone(),
                e["after"].clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("c".into(), Json::Null, json!({"id": 1, "v": "a", "n": 1})),
            ("c".into(), Json::Null, json!({"id": 2, "v": "b", "n": 2})),
            (
                "u".into(),
                json!({"id": 1, "v": "a", "n": 1}),
                json!({"id": 1, "v": "a2", "n": 10})
            ),
            (
                "u".into(),
                json!({"id": 1, "v": "a2", "n": 10}),
                json!({"id": 1, "v": "a2", "n": 11})
            ),
            ("d".into(), json!({"id": 2, "v": "b", "n": 2}), Json::Null),
            // A key change is a delete of the old key and a create of the new one.
            ("d".into(), json!({"id": 1, "v": "a2", "n": 11}), Json::Null),
            ("c".into(), Json::Null, json!({"id": 3, "v": "a2", "n": 11})),
        ]
    );
    // The two events of one transaction carry its id and their order in it.
    assert_eq!(full[3]["transaction"]["id"], full[4]["transaction"]["id"]);
    assert_eq!(full[3]["transaction"]["total_order"], 1);
    assert_eq!(full[4]["transaction"]["total_order"], 2);
    // Keys and tombstones.
    let records = sluice.records("src.public.full_t");
    assert_eq!(records[0].0, json!({"id": 1}));
    let tombstone = records
        .iter()
        .position(|(_, v)| v.is_null())
        .expect("a tombstone after the delete");
    assert_eq!(records[tombstone - 1].1["op"], "d");
    assert_eq!(records[tombstone].0, records[tombstone - 1].0);

    let dflt = events(&sluice.records("src.public.dflt_t"));
    let ops: Vec<&str> = dflt.iter().map(|e| e["op"].as_str().unwrap()).collect();
    assert_eq!(ops, ["c", "u", "d", "c", "t"]);
    // REPLICA IDENTITY DEFAULT: no before image on update, the key alone on delete.
    assert_eq!(dflt[1]["before"], Json::Null);
    assert_eq!(dflt[2]["before"]["id"], 1);
    assert_eq!(dflt[2]["before"]["v"], Json::Null);
    assert_eq!(dflt[4]["source"]["table"], "dflt_t");

    // The JSONL sink got every event, tombstones left out.
    wait_for(Duration::from_secs(10), "the sink to catch up", || {
        std::fs::read_to_string(sluice.path("out.jsonl"))
            .map(|t| t.lines().count())
            .unwrap_or(0)
            >= full.len() + dflt.len()
    })
    .await;
    assert_eq!(sluice.stop(), Some(0), "clean exit:\n{}", sluice.stderr());
    let lines = std::fs::read_to_string(sluice.path("out.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), full.len() + dflt.len());

    // `sluice status` tells where everything stands.
    let status = std::process::Command::new(sluice_integration_tests::sluice_bin())
        .args(["status", "-c"])
        .arg(&sluice.config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{text}");
    assert!(text.contains("source src: last committed pg:"), "{text}");
    assert!(text.contains("2 topic(s)"), "{text}");
    assert!(text.contains("idle (no connection)"), "{text}");
    assert!(
        text.contains("sink file (jsonl): 2 partition(s), 0 record(s) behind the log"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_under_concurrent_writes_has_no_gap_and_no_duplicate() {
    let db = TestDb::create();
    db.exec("CREATE TABLE t (id int PRIMARY KEY, v int NOT NULL); INSERT INTO t SELECT g, 0 FROM generate_series(1, 30000) g;");
    let writer_db = db.url();
    // The writer commits before, during and after the snapshot, until told to stop.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer_stop = Arc::clone(&stop);
    let writer = sluice_core::task::spawn_in_span(async move {
        let client = sluice_integration_tests::writer_client(&writer_db).await;
        let mut rng = Rng::new(7);
        let mut next_id = 30_001;
        for i in 0..50_000 {
            if writer_stop.load(std::sync::atomic::Ordering::Relaxed) {
                break;
            }
            if i % 3 == 0 {
                client
                    .execute("INSERT INTO t VALUES ($1, 0)", &[&next_id])
                    .await
                    .unwrap();
                next_id += 1;
            } else {
                let id = 1 + rng.below(30_000) as i32;
                client
                    .execute("UPDATE t SET v = v + 1 WHERE id = $1", &[&id])
                    .await
                    .unwrap();
            }
        }
    });
    // Start while the writer is busy.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut sluice = Sluice::new(&source_config(
        &db,
        "snapshot_parallelism = 2\nmax_batch_events = 5000",
    ));
    sluice.start();
    db.wait_for_streaming().await;
    // Keep writing for a while once streaming runs, then stop.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.await.unwrap();
    db.exec("INSERT INTO t VALUES (-1, 0)");
    wait_for(Duration::from_secs(60), "the marker row in the log", || {
        events(&sluice.records("src.public.t"))
            .iter()
            .any(|e| e["after"]["id"] == -1)
    })
    .await;

    let all = events(&sluice.records("src.public.t"));
    assert!(
        all.iter().any(|e| e["op"] == "r"),
        "the snapshot emitted reads"
    );
    assert!(
        all.iter().any(|e| e["op"] == "u"),
        "changes were streamed after the snapshot"
    );
    // Each row's v must go up by exactly one per event: a gap skips a value, a duplicate repeats one.
    let mut seen: BTreeMap<i64, i64> = BTreeMap::new();
    for event in &all {
        let id = event["after"]["id"].as_i64().unwrap();
        let v = event["after"]["v"].as_i64().unwrap();
        match (event["op"].as_str().unwrap(), seen.get(&id)) {
            ("r" | "c", None) => {}
            ("u", Some(previous)) => {
                assert_eq!(v, previous + 1, "row {id}: v went from {previous} to {v}")
            }
            (op, previous) => panic!("row {id}: unexpected {op} after {previous:?}"),
        }
        seen.insert(id, v);
    }
    let table: BTreeMap<i64, i64> = db
        .exec("SELECT id || ':' || v FROM t ORDER BY id")
        .lines()
        .map(|line| {
            let (id, v) = line.split_once(':').unwrap();
            (id.parse().unwrap(), v.parse().unwrap())
        })
        .collect();
    assert_eq!(seen, table, "the log folds to exactly the table's content");
    let markers: Vec<&str> = all
        .iter()
        .filter_map(|e| e["source"]["snapshot"].as_str())
        .filter(|s| *s == "first" || *s == "last")
        .collect();
    assert_eq!(markers, ["first", "last"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mapped_type_round_trips_exactly_through_snapshot_and_stream() {
    let db = TestDb::create();
    db.exec(
        "CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy'); \
         CREATE TABLE types (id int PRIMARY KEY, \
           i2 smallint, i4 integer, i8 bigint, num numeric, num_nan numeric, num_inf numeric, \
           r real, d double precision, d_nan double precision, b boolean, t text, vc varchar(20), ch char(3), \
           by bytea, big bytea, u uuid, j json, jb jsonb, dt date, dt_inf date, tm time, tmtz timetz, \
           ts timestamp, ts_inf timestamp, tstz timestamptz, tstz_ninf timestamptz, iv interval, \
           ai int[], at text[], a_empty int[], a_null int[], a2 int[][], e mood, ae mood[]);",
    );
    let row = |id: i32| {
        format!(
            "INSERT INTO types VALUES ({id}, -32768, 2147483647, -9223372036854775808, \
             '-1234567890123456789012345678901234567890.0123456789', 'NaN', '-Infinity', \
             3.4028235e38, 2.2250738585072014e-308, 'NaN', true, 'ünïcødé ✓ \"quoted\" \\ tab\there', 'varchar', 'ab', \
             '\\x00ff0a', decode(repeat('ab', 10 * 1024 * 1024), 'hex'), 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', \
             '{{\"a\": [1, 2.5]}}', '{{\"b\": null}}', '2024-02-29', 'infinity', '23:59:59.999999', '10:00:00-05:30', \
             '2024-01-02 03:04:05.123456', '-infinity', '1999-12-31 23:00:00+00', '-infinity', \
             '1 year 2 mons 3 days 04:05:06.5', '{{1,NULL,3}}', '{{\"a b\",\"c,d\",NULL}}', '{{}}', NULL, '{{{{1,2}},{{3,4}}}}', \
             'happy', '{{sad,ok}}')"
        )
    };
    db.exec(&row(1)); // read by the snapshot (COPY, text: it has arrays and an enum)
                      // The same scalars without arrays and enums: this table is copied in binary.
    db.exec(
        "CREATE TABLE scalars AS SELECT id, i2, i4, i8, num, num_nan, num_inf, r, d, d_nan, b, t, vc, ch, \
           by, big, u, j, jb, dt, dt_inf, tm, tmtz, ts, ts_inf, tstz, tstz_ninf, iv FROM types; \
         ALTER TABLE scalars ADD PRIMARY KEY (id), ADD n_zero numeric, ADD n_scale numeric(12,4), \
           ADD n_small numeric, ADD n_round numeric, ADD n_neg numeric(6,3), ADD f_inf real; \
         UPDATE scalars SET n_zero = 0, n_scale = 0, n_small = 0.00000123, n_round = 100000000, \
           n_neg = -0.5, f_inf = '-Infinity'",
    );
    let mut sluice = Sluice::new(&source_config(&db, ""));
    sluice.start();
    wait_for(Duration::from_secs(30), "the snapshot row", || {
        !events(&sluice.records("src.public.types")).is_empty()
    })
    .await;
    db.exec(&row(2)); // streamed (pgoutput)
    wait_for(Duration::from_secs(30), "the streamed row", || {
        events(&sluice.records("src.public.types")).len() >= 2
    })
    .await;

    let all = events(&sluice.records("src.public.types"));
    assert_eq!(all[0]["op"], "r");
    assert_eq!(all[1]["op"], "c");
    let mut snapshot = all[0]["after"].clone();
    let mut streamed = all[1]["after"].clone();
    // 10 MiB of 0xab, base64: check size and content, then compare the rest field by field.
    for after in [&mut snapshot, &mut streamed] {
        let big = after["big"].as_str().unwrap().to_owned();
        assert_eq!(big.len(), 4 * (10usize * 1024 * 1024).div_ceil(3));
        assert!(big.starts_with("q6urq6ur"), "0xab bytes in base64");
        after["big"] = Json::Null;
        after["id"] = Json::Null;
    }
    let expected = json!({
        "id": null, "i2": -32768, "i4": 2147483647, "i8": -9223372036854775808i64,
        "num": "-1234567890123456789012345678901234567890.0123456789", "num_nan": "NaN", "num_inf": "-Infinity",
        "r": 3.4028235e38, "d": 2.2250738585072014e-308, "d_nan": "NaN", "b": true,
        "t": "ünïcødé ✓ \"quoted\" \\ tab\there", "vc": "varchar", "ch": "ab ",
        "by": "AP8K", "big": null, "u": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        "j": "{\"a\": [1, 2.5]}", "jb": "{\"b\": null}",
        "dt": 19782, "dt_inf": 2147483647, "tm": 86399999999i64, "tmtz": "10:00:00-05:30",
        "ts": 1704164645123456i64, "ts_inf": -9223372036832400000i64,
        "tstz": "1999-12-31T23:00:00Z", "tstz_ninf": "-infinity",
        "iv": "P1Y2M3DT4H5M6.5S", "ai": [1, null, 3], "at": ["a b", "c,d", null], "a_empty": [], "a_null": null,
        "a2": [[1, 2], [3, 4]], "e": "happy", "ae": ["sad", "ok"]
    });
    assert_eq!(snapshot, expected, "snapshot (COPY) values");
    assert_eq!(streamed, expected, "streamed (pgoutput) values");

    // Binary COPY gives the same values as text COPY and pgoutput.
    db.exec(
        "INSERT INTO scalars SELECT id, i2, i4, i8, num, num_nan, num_inf, r, d, d_nan, b, t, vc, ch, \
           by, big, u, j, jb, dt, dt_inf, tm, tmtz, ts, ts_inf, tstz, tstz_ninf, iv, \
           0, 0, 0.00000123, 100000000, -0.5, '-Infinity' FROM types WHERE id = 2",
    );
    wait_for(Duration::from_secs(30), "the streamed scalars row", || {
        events(&sluice.records("src.public.scalars")).len() >= 2
    })
    .await;
    let all = events(&sluice.records("src.public.scalars"));
    assert_eq!((&all[0]["op"], &all[1]["op"]), (&json!("r"), &json!("c")));
    let mut expected = expected.as_object().unwrap().clone();
    for array_or_enum in ["ai", "at", "a_empty", "a_null", "a2", "e", "ae"] {
        expected.remove(array_or_enum);
    }
    for (key, value) in [
        ("n_zero", json!("0")),
        ("n_scale", json!("0.0000")),
        ("n_small", json!("0.00000123")),
        ("n_round", json!("100000000")),
        ("n_neg", json!("-0.500")),
        ("f_inf", json!("-Infinity")),
    ] {
        expected.insert(key.to_owned(), value);
    }
    for (event, how) in [(&all[0], "snapshot (binary COPY)"), (&all[1], "streamed")] {
        let mut after = event["after"].clone();
        assert!(after["big"].as_str().unwrap().starts_with("q6urq6ur"));
        after["big"] = Json::Null;
        after["id"] = Json::Null;
        assert_eq!(after, Json::Object(expected.clone()), "{how} values");
    }
}

/// Types whose text form is exact arrive as that text (hstore as a JSON object, a domain over an
/// array as the array), the same from the snapshot and the stream; generated columns are left
/// out of both, as pgoutput leaves them out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn geometric_search_range_and_extension_types_arrive_as_their_exact_text() {
    let db = TestDb::create();
    db.exec(
        "CREATE EXTENSION citext; CREATE EXTENSION ltree; CREATE EXTENSION hstore; \
         CREATE TYPE floatrange AS RANGE (subtype = float8); \
         CREATE DOMAIN positives AS int[] CHECK (0 < ALL (VALUE)); \
         CREATE TABLE odd (id int PRIMARY KEY, \
           p point, l line, ls lseg, bx box, pa path, pg polygon, c circle, \
           tv tsvector, tq tsquery, lsn pg_lsn, \
           r4 int4range, r8 int8range, rn numrange, rts tsrange, rtz tstzrange, rd daterange, \
           rf floatrange, mr int4multirange, mrd datemultirange, \
           ci citext, lt ltree, lq lquery, hs hstore, \
           ip inet, net cidr, mac macaddr, mac8 macaddr8, x xml, \
           dom positives, cia citext[], \
           twice int GENERATED ALWAYS AS (id * 2) STORED);",
    );
    let row = |id: i32| {
        format!(
            "INSERT INTO odd VALUES ({id}, '(1.5,-2)', '{{1,-1,0}}', '[(0,0),(1,1)]', '((3,4),(1,2))', \
             '[(0,0),(1,1),(2,0)]', '((0,0),(1,1),(1,0))', '<(1,2),3.5>', \
             to_tsvector('english', 'The quick brown foxes jumped'), 'fox & !dog | \"cat''s\"', '16/B374D848', \
             '[1,10)', '(,5]', '[1.5,2.25]', '[2024-01-01 10:00,2024-01-02)', '[2024-01-01 10:00+00,)', \
             '[2024-01-01,2024-02-01)', '(0.5,1e300)', '{{[1,3),[5,8)}}', '{{[2024-01-01,2024-01-05)}}', \
             'MiXeD Case', 'Top.Science.Astronomy', '*.Astronomy.*', \
             'a=>1, \"b c\"=>NULL, \"q\\\"\"=>\"x=>y\"', \
             '192.168.1.5/24', '10.0.0.0/8', '08:00:2b:01:02:03', '08:00:2b:01:02:03:04:05', \
             '<a href=\"x\">t &amp; u</a>', '{{1,2,3}}', '{{Abc,dEF}}')"
        )
    };
    let expected = |client: tokio_postgres::Client, id: i32| async move {
        let row = client
            .query_one(
                "SELECT row_to_json(sub)::text FROM (SELECT id, p::text p, l::text l, ls::text ls, \
                   bx::text bx, pa::text pa, pg::text pg, c::text c, tv::text tv, tq::text tq, \
                   lsn::text lsn, r4::text r4, r8::text r8, rn::text rn, rts::text rts, rtz::text rtz, \
                   rd::text rd, rf::text rf, mr::text mr, mrd::text mrd, ci::text ci, lt::text lt, \
                   lq::text lq, hstore_to_json(hs) hs, ip::text ip, net::text net, mac::text mac, \
                   mac8::text mac8, x::text x, dom, cia::text[] cia FROM odd WHERE id = $1) sub",
                &[&id],
            )
            .await
            .unwrap();
        serde_json::from_str::<Json>(row.get::<_, &str>(0)).unwrap()
    };
    db.exec(&row(1));
    let mut sluice = Sluice::new(&source_config(&db, ""));
    sluice.start();
    wait_for(Duration::from_secs(30), "the snapshot row", || {
        !events(&sluice.records("src.public.odd")).is_empty()
    })
    .await;
    db.exec(&row(2));
    wait_for(Duration::from_secs(30), "the streamed row", || {
        events(&sluice.records("src.public.odd")).len() >= 2
    })
    .await;

    let all = events(&sluice.records("src.public.odd"));
    assert_eq!((&all[0]["op"], &all[1]["op"]), (&json!("r"), &json!("c")));
    for (event, id, how) in [(&all[0], 1, "snapshot"), (&all[1], 2, "streamed")] {
        let mut after = event["after"].clone();
        // hstore is a JSON document (a string in the envelope, as json columns are).
        let hs = after["hs"]
            .as_str()
            .unwrap_or_else(|| panic!("{how}: {after}"));
        after["hs"] = serde_json::from_str(hs).unwrap();
        assert_eq!(after, expected(db.client().await, id).await, "{how} values");
        assert_eq!(
            after["hs"],
            json!({"a": "1", "b c": null, "q\"": "x=>y"}),
            "{how}"
        );
        assert!(
            after.get("twice").is_none(),
            "{how}: generated column left out"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmappable_types_stop_with_table_and_column_or_pass_through_as_text() {
    let db = TestDb::create();
    db.exec(
        "CREATE TYPE pair AS (a int, b text); \
         CREATE TABLE geo (id int PRIMARY KEY, p pair); INSERT INTO geo VALUES (1, '(1,x)');",
    );
    let mut sluice = Sluice::new(&source_config(&db, ""));
    sluice.start();
    wait_for(Duration::from_secs(20), "sluice to fail", || {
        !sluice.is_running()
    })
    .await;
    let stderr = sluice.stderr();
    assert!(
        stderr.contains("table public.geo column p has type pair"),
        "{stderr}"
    );
    assert!(
        stderr.contains("unknown_types = \\\"text\\\"")
            || stderr.contains("unknown_types = \"text\""),
        "{stderr}"
    );

    let mut sluice = Sluice::new(&source_config(
        &db,
        "unknown_types = \"text\"\nslot = \"sluice_text\"\npublication = \"sluice_text\"",
    ));
    sluice.start();
    wait_for(Duration::from_secs(20), "the row", || {
        !events(&sluice.records("src.public.geo")).is_empty()
    })
    .await;
    assert_eq!(
        events(&sluice.records("src.public.geo"))[0]["after"]["p"],
        "(1,x)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_20000_transactions_keeps_each_exactly_once() {
    let db = TestDb::create();
    db.exec("CREATE TABLE k (id int PRIMARY KEY, payload text)");
    let mut sluice = Sluice::new(
        &(source_config(&db, "max_batch_events = 500") + &jsonl_sink("\"src.public.k\"")),
    );
    sluice.start();
    db.wait_for_streaming().await;
    let writer_db = db.url();
    let total = 20_000;
    let (progress_tx, mut progress_rx) = tokio::sync::watch::channel(0);
    let writer = sluice_core::task::spawn_in_span(async move {
        let client = sluice_integration_tests::writer_client(&writer_db).await;
        let insert = client
            .prepare("INSERT INTO k VALUES ($1, 'p')")
            .await
            .unwrap();
        for id in 1..=total {
            client.execute(&insert, &[&id]).await.unwrap();
            if id % 100 == 0 {
                let _ = progress_tx.send(id);
            }
        }
    });
    let mut rng = Rng::new(std::process::id() as u64);
    for round in 0..3 {
        let at = (round + 1) * 5_000 + rng.below(3_000) as i32;
        while *progress_rx.borrow_and_update() < at {
            progress_rx.changed().await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(rng.below(200))).await;
        sluice.kill();
        sluice.start();
    }
    writer.await.unwrap();
    wait_for(
        Duration::from_secs(120),
        "all 20,000 transactions in the log",
        || events(&sluice.records("src.public.k")).len() >= total as usize,
    )
    .await;
    let all = events(&sluice.records("src.public.k"));
    let mut counts: BTreeMap<i64, usize> = BTreeMap::new();
    let unexpected: Vec<String> = all
        .iter()
        // A kill before the first snapshot commits makes the restart snapshot again: rows
        // inserted by then arrive as reads. Either way, once.
        .filter(|e| e["op"] != "c" && e["op"] != "r")
        .take(3)
        .map(|e| {
            format!(
                "{} id={} snapshot={}",
                e["op"], e["after"]["id"], e["source"]["snapshot"]
            )
        })
        .collect();
    assert!(
        unexpected.is_empty(),
        "only inserts were made, found: {unexpected:?}\n{}",
        sluice.stderr()
    );
    for event in &all {
        *counts
            .entry(event["after"]["id"].as_i64().unwrap())
            .or_default() += 1;
    }
    assert_eq!(
        counts.len(),
        total as usize,
        "every transaction is in the log"
    );
    let duplicated: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        duplicated.is_empty(),
        "transactions in the log twice: {duplicated:?}"
    );
    // Commit order is kept: ids were committed in increasing order.
    let ids: Vec<i64> = all
        .iter()
        .map(|e| e["after"]["id"].as_i64().unwrap())
        .collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "log order follows commit order"
    );

    // The file sink, killed along with it, also has each event exactly once.
    wait_for(Duration::from_secs(60), "the sink to catch up", || {
        std::fs::read_to_string(sluice.path("out.jsonl"))
            .map(|t| t.lines().count())
            .unwrap_or(0)
            >= total as usize
    })
    .await;
    assert_eq!(sluice.stop(), Some(0), "{}", sluice.stderr());
    let file = std::fs::read_to_string(sluice.path("out.jsonl")).unwrap();
    let file_ids: Vec<i64> = file
        .lines()
        .map(|l| {
            serde_json::from_str::<Json>(l).unwrap()["after"]["id"]
                .as_i64()
                .unwrap()
        })
        .collect();
    let first_wrong = file_ids
        .iter()
        .enumerate()
        .find(|(i, id)| **id != *i as i64 + 1);
    assert!(
        first_wrong.is_none() && file_ids.len() == total as usize,
        "the file holds each event once, in order: first wrong line {first_wrong:?} of {}",
        file_ids.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirmed_flush_lsn_advances_while_no_sink_reads() {
    let db = TestDb::create();
    db.exec("CREATE TABLE w (id int PRIMARY KEY)");
    // A sink on a topic that never gets data: nothing consumes what the source writes.
    let mut sluice = Sluice::new(
        &(source_config(&db, "status_interval_s = 1") + &jsonl_sink("\"nothing.here\"")),
    );
    sluice.start();
    db.wait_for_streaming().await;
    let before = db.exec(&format!(
        "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '{slot}'",
        slot = db.name
    ));
    // WAL is shared with other tests' databases: the insert's commit lies past this point, and
    // the slot can only move past it by acknowledging that commit.
    let target = db.exec("SELECT pg_current_wal_lsn()");
    db.exec("INSERT INTO w SELECT generate_series(1, 1000)");
    wait_for(Duration::from_secs(30), "confirmed_flush_lsn to pass the insert", || {
        db.exec(&format!("SELECT confirmed_flush_lsn > '{target}'::pg_lsn FROM pg_replication_slots WHERE slot_name = '{slot}'", slot = db.name)) == "t"
    })
    .await;
    let after = db.exec(&format!(
        "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '{slot}'",
        slot = db.name
    ));
    assert_ne!(before, after);
    assert_eq!(events(&sluice.records("src.public.w")).len(), 1000);
    // Nothing was delivered, and yet the server may recycle the WAL.
    assert!(
        !sluice.path("out.jsonl").exists()
            || std::fs::read_to_string(sluice.path("out.jsonl"))
                .unwrap()
                .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_restart_resumes_without_gap_or_duplicate() {
    let db = TestDb::create();
    db.exec("CREATE TABLE r (id int PRIMARY KEY); INSERT INTO r SELECT generate_series(1, 100);");
    let mut sluice = Sluice::new(&source_config(&db, ""));
    sluice.start();
    wait_for(Duration::from_secs(20), "the snapshot", || {
        events(&sluice.records("src.public.r")).len() == 100
    })
    .await;
    db.exec("INSERT INTO r SELECT generate_series(101, 150)");
    wait_for(Duration::from_secs(20), "streamed rows", || {
        events(&sluice.records("src.public.r")).len() == 150
    })
    .await;
    assert_eq!(sluice.stop(), Some(0), "{}", sluice.stderr());
    // Changes made while sluice is down arrive after the restart, once.
    db.exec("INSERT INTO r SELECT generate_series(151, 200)");
    sluice.start();
    // A marker row after them: once it is in the log, so is every duplicate there could be.
    db.exec("INSERT INTO r VALUES (201)");
    wait_for(
        Duration::from_secs(20),
        "rows written while stopped, then the marker",
        || {
            events(&sluice.records("src.public.r"))
                .iter()
                .any(|e| e["after"]["id"] == 201)
        },
    )
    .await;
    let ids: Vec<i64> = events(&sluice.records("src.public.r"))
        .iter()
        .map(|e| e["after"]["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, (1..=201).collect::<Vec<_>>());
    let rows = fold_rows(&events(&sluice.records("src.public.r")), "id");
    assert_eq!(rows.len(), 201);
    assert!(sluice
        .stderr()
        .contains("resuming from the log's last checkpoint"));

    // The log reads back through the CLI, one JSON object per record.
    let output = std::process::Command::new(sluice_integration_tests::sluice_bin())
        .args([
            "log",
            "tail",
            "src.public.r",
            "--from-beginning",
            "--format",
            "json",
            "-c",
        ])
        .arg(&sluice.config)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<Json> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 201);
    assert_eq!(lines[0]["topic"], "src.public.r");
    assert_eq!(lines[0]["offset"], 0);
    assert_eq!(lines[0]["key"], json!({"id": 1}));
    assert_eq!(lines[200]["value"]["after"]["id"], 201);
    let keys: Vec<&String> = lines[0].as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        ["topic", "partition", "offset", "timestamp", "key", "value"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_larger_than_a_batch_arrives_whole_and_once() {
    let db = TestDb::create();
    db.exec("CREATE TABLE big (id int PRIMARY KEY, note text)");
    let mut sluice = Sluice::new(&source_config(&db, "max_batch_events = 1000"));
    sluice.start();
    db.wait_for_streaming().await;
    db.exec("INSERT INTO big SELECT g, 'row ' || g FROM generate_series(1, 12000) g");
    db.exec("INSERT INTO big VALUES (-1, 'after')");
    wait_for(
        Duration::from_secs(60),
        "the transaction after the big one",
        || {
            events(&sluice.records("src.public.big"))
                .iter()
                .any(|e| e["after"]["id"] == -1)
        },
    )
    .await;
    let all = events(&sluice.records("src.public.big"));
    assert_eq!(all.len(), 12_001);
    let big_txn = &all[0]["transaction"]["id"];
    for (i, event) in all[..12_000].iter().enumerate() {
        assert_eq!(event["after"]["id"], i as i64 + 1);
        assert_eq!(&event["transaction"]["id"], big_txn, "one transaction");
        assert_eq!(
            event["transaction"]["total_order"],
            i as i64 + 1,
            "order within the transaction"
        );
    }
    assert_ne!(&all[12_000]["transaction"]["id"], big_txn);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_health_are_served_while_running() {
    let db = TestDb::create();
    db.exec("CREATE TABLE m (id int PRIMARY KEY)");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut sluice = Sluice::new(&format!(
        "[api]\nlisten = \"127.0.0.1:{port}\"\n\n{}{}",
        source_config(&db, ""),
        jsonl_sink("\"src.public.m\"")
    ));
    sluice.start();
    db.wait_for_streaming().await;
    db.exec("INSERT INTO m SELECT generate_series(1, 25)");
    wait_for(Duration::from_secs(20), "the sink to deliver", || {
        std::fs::read_to_string(sluice.path("out.jsonl"))
            .map(|t| t.lines().count())
            .unwrap_or(0)
            == 25
    })
    .await;
    let (status, body) = sluice_integration_tests::http_get(port, "/health");
    assert!(status.contains("200"), "{status}");
    assert_eq!(body, "ok\n");
    let metric = |metrics: &str, name: &str| -> Option<f64> {
        metrics
            .lines()
            .find(|line| line.starts_with(name))
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    };
    // The file is written before the sink's counters move: wait for them too.
    wait_for(Duration::from_secs(20), "the sink's metrics", || {
        let (_, metrics) = sluice_integration_tests::http_get(port, "/metrics");
        metric(&metrics, "sluice_sink_records_total{sink=\"file\"}").is_some_and(|v| v >= 25.0)
            && metric(&metrics, "sluice_sink_lag_records{sink=\"file\"}") == Some(0.0)
    })
    .await;
    let (status, metrics) = sluice_integration_tests::http_get(port, "/metrics");
    assert!(status.contains("200"), "{status}");
    let value = |name: &str| -> f64 {
        metric(&metrics, name).unwrap_or_else(|| panic!("{name} missing from:\n{metrics}"))
    };
    assert!(value("sluice_source_events_total{source=\"src\"}") >= 25.0);
    assert!(value("sluice_log_records_appended_total{source=\"src\"}") >= 25.0);
    assert!(value("sluice_sink_records_total{sink=\"file\"}") >= 25.0);
    assert_eq!(value("sluice_sink_lag_records{sink=\"file\"}"), 0.0);
    let (status, _) = sluice_integration_tests::http_get(port, "/nope");
    assert!(status.contains("404"), "{status}");
}
