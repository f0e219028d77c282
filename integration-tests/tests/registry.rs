//! The schema registry end to end: a real Postgres table captured as Avro by the real binary,
//! read back by Confluent's own Python client (SchemaRegistryClient + AvroDeserializer), and
//! schema changes registering new versions, an incompatible one holding its table back alone
//! (kept, shown with the reason) until a relaxed level and a restart release it in order.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value as Json};
use sluice_integration_tests::{
    events, free_port, jsonl_sink, sluice_bin, source_config, test_python, wait_for,
    workspace_root, Sluice, TestDb,
};

/// A plain HTTP/1.1 request to the registry; returns (status, body).
fn http(port: u16, method: &str, path: &str, body: Option<Json>) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect registry");
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    (head[9..12].parse().unwrap(), body.to_owned())
}

fn lines(path: &std::path::Path) -> Vec<Json> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

/// Row `i` of the test table, as SQL values and as the text the Python check converts.
fn row(i: i64) -> (String, Json) {
    let price = format!("{}.{:02}", i * 37 % 100_000, i % 100);
    let day = format!("20{:02}-{:02}-{:02}", i % 90 + 10, i % 12 + 1, i % 28 + 1);
    let at = format!(
        "2024-03-{:02}T{:02}:04:05.{:06}+00:00",
        i % 28 + 1,
        i % 24,
        i * 1001 % 1_000_000
    );
    let local = format!("1999-12-31T23:59:{:02}.{:06}", i % 60, i * 7 % 1_000_000);
    let uid = format!("{:08x}-0000-4000-8000-{:012x}", i, i * 99);
    let note = if i % 3 == 0 {
        None
    } else {
        Some(format!("note ü {i}"))
    };
    let blob_hex = format!("{:02x}ff00", i % 256);
    let sql = format!(
        "({i}, 'name {i}', {price}, {qty}, {ok}, '{day}', '{at}', '{local}', '{uid}', {note}, {score}, '\\x{blob_hex}')",
        qty = i * 3 - 50,
        ok = i % 2 == 0,
        note = note.as_ref().map_or("NULL".to_owned(), |n| format!("'{n}'")),
        score = i as f64 / 8.0,
    );
    let blob: Vec<u8> = (0..3)
        .map(|k| u8::from_str_radix(&blob_hex[k * 2..k * 2 + 2], 16).unwrap())
        .collect();
    let expected = json!({
        "id": i.to_string(),
        "name": format!("name {i}"),
        "price": price,
        "qty": (i * 3 - 50).to_string(),
        "ok": i % 2 == 0,
        "day": day,
        "at": at,
        "local": local,
        "uid": uid,
        "note": note,
        "score": (i as f64 / 8.0).to_string(),
        "blob": base64_of(&blob),
    });
    (sql, expected)
}

fn base64_of(bytes: &[u8]) -> String {
    const TABLE: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().fold(0u32, |n, b| n << 8 | u32::from(*b)) << (8 * (3 - chunk.len()));
        for k in 0..4 {
            if k <= chunk.len() {
                out.push(TABLE[(n >> (18 - 6 * k) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confluents_python_client_reads_sluices_registry_and_avro_records() {
    let python = test_python();
    let db = TestDb::create();
    db.exec(
        "CREATE TABLE items (id bigint PRIMARY KEY, name text NOT NULL, price numeric(10,2), \
         qty int, ok boolean, day date, at timestamptz, local timestamp, uid uuid, note text, \
         score double precision, blob bytea)",
    );
    let mut expected = BTreeMap::new();
    let mut values = Vec::new();
    for i in 1..=40 {
        let (sql, row) = row(i);
        values.push(sql);
        expected.insert(i, row);
    }
    db.exec(&format!("INSERT INTO items VALUES {}", values.join(",")));

    let port = free_port();
    let mut sluice = Sluice::new(&format!(
        "[registry]\nlisten = \"127.0.0.1:{port}\"\n\n{}{}",
        source_config(&db, "encoding = \"avro\""),
        jsonl_sink("\"src.public.*\"")
    ));
    sluice.start();
    db.wait_for_streaming().await;
    // Streamed changes too: new rows and an update.
    let client = db.client().await;
    for i in 41..=50 {
        let (sql, row) = row(i);
        client
            .batch_execute(&format!("INSERT INTO items VALUES {sql}"))
            .await
            .unwrap();
        expected.insert(i, row);
    }
    client
        .batch_execute("UPDATE items SET name = 'renamed', price = 0.5 WHERE id = 7")
        .await
        .unwrap();
    expected.get_mut(&7).unwrap()["name"] = json!("renamed");
    expected.get_mut(&7).unwrap()["price"] = json!("0.50");
    let out = sluice.path("out.jsonl");
    wait_for(Duration::from_secs(30), "51 events in the file", || {
        lines(&out).len() >= 51
    })
    .await;

    // The JSONL sink wrote the Avro records decoded to JSON; decimals stay exact text.
    let file = lines(&out);
    assert_eq!(file.len(), 51);
    let last_seven = file.iter().rev().find(|e| e["after"]["id"] == 7).unwrap();
    assert_eq!(last_seven["op"], "u");
    assert_eq!(last_seven["after"]["price"], "0.50");
    assert_eq!(last_seven["after"]["name"], "renamed");
    assert_eq!(file[0]["op"], "r");
    // The log read back through the registry agrees.
    assert_eq!(events(&sluice.records("src.public.items")).len(), 51);

    // The registry the pipeline serves lists the topic's subjects.
    let (status, subjects) = http(port, "GET", "/subjects", None);
    assert_eq!(status, 200);
    let subjects: Json = serde_json::from_str(&subjects).unwrap();
    assert_eq!(
        subjects,
        json!(["src.public.items-key", "src.public.items-value"])
    );

    // Records exactly as stored, for Confluent's deserializer.
    let records = sluice.path("records.jsonl");
    let dump = Command::new(sluice_bin())
        .args([
            "log",
            "tail",
            "src.public.items",
            "--from-beginning",
            "--format",
            "base64",
            "--dir",
        ])
        .arg(sluice.log_dir())
        .output()
        .unwrap();
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    std::fs::write(&records, &dump.stdout).unwrap();
    let expected_path = sluice.path("expected.json");
    let types = json!({
        "id": "int", "name": "text", "price": "decimal", "qty": "int", "ok": "bool",
        "day": "date", "at": "timestamptz", "local": "timestamp", "uid": "uuid", "note": "text",
        "score": "float", "blob": "bytes"
    });
    std::fs::write(
        &expected_path,
        json!({"types": types, "rows": expected.values().collect::<Vec<_>>()}).to_string(),
    )
    .unwrap();
    let output = Command::new(python)
        .arg(workspace_root().join("integration-tests/python/confluent_client.py"))
        .arg(format!("http://127.0.0.1:{port}"))
        .arg(&records)
        .arg(&expected_path)
        .arg("src.public.items")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "python client failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("registry API: ok"), "{stdout}");
    assert!(
        stdout.contains("records: 50 rows decoded and equal to the source"),
        "{stdout}"
    );
    assert_eq!(sluice.stop(), Some(0), "{}", sluice.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incompatible_schema_holds_its_table_back_alone_until_allowed_and_restarted() {
    let db = TestDb::create();
    db.exec("CREATE TABLE t (id int PRIMARY KEY, a text); CREATE TABLE u (id int PRIMARY KEY)");
    let port = free_port();
    let mut sluice = Sluice::new(&format!(
        "[registry]\nlisten = \"127.0.0.1:{port}\"\n\n{}",
        source_config(&db, "encoding = \"avro\"")
    ));
    sluice.start();
    db.wait_for_streaming().await;
    let client = db.client().await;
    client
        .batch_execute("INSERT INTO t VALUES (1, 'x')")
        .await
        .unwrap();
    client
        .batch_execute("ALTER TABLE t ADD COLUMN b text; INSERT INTO t VALUES (2, 'y', 'new')")
        .await
        .unwrap();
    wait_for(Duration::from_secs(20), "two events", || {
        events(&sluice.records("src.public.t")).len() >= 2
    })
    .await;
    let (_, versions) = http(port, "GET", "/subjects/src.public.t-value/versions", None);
    assert_eq!(
        versions, "[1,2]",
        "a nullable column is a compatible new version"
    );
    let rows = events(&sluice.records("src.public.t"));
    assert_eq!(rows[1]["after"], json!({"id": 2, "a": "y", "b": "new"}));

    // A text column turned into an integer cannot be read by the new schema from old data: t
    // is held back (its events kept), u goes on.
    client
        .batch_execute("ALTER TABLE t ALTER COLUMN a TYPE int USING length(a); INSERT INTO t VALUES (3, 7, NULL)")
        .await
        .unwrap();
    client
        .batch_execute("INSERT INTO u VALUES (10); INSERT INTO t VALUES (4, 8, 'later'); INSERT INTO u VALUES (11)")
        .await
        .unwrap();
    wait_for(Duration::from_secs(20), "the other table to go on", || {
        events(&sluice.records("src.public.u")).len() >= 2
    })
    .await;
    assert!(sluice.is_running(), "{}", sluice.stderr());
    assert_eq!(
        events(&sluice.records("src.public.t")).len(),
        2,
        "nothing of the refused version reaches the topic"
    );
    let stderr = sluice.stderr();
    assert!(
        stderr.contains("holding the table's events back"),
        "{stderr}"
    );
    assert!(
        stderr.contains("column 'a': type changed from string to int"),
        "{stderr}"
    );
    let report = status(&sluice);
    assert!(
        report.contains("table src.public.t HELD BACK: 2 event(s)"),
        "{report}"
    );
    assert!(
        report.contains("PUT /config/src.public.t-value"),
        "{report}"
    );

    // The fix the message names, on the running registry; then a restart releases the held
    // events into the topic, in order, before anything newer.
    let (code, body) = http(
        port,
        "PUT",
        "/config/src.public.t-value",
        Some(json!({"compatibility": "NONE"})),
    );
    assert_eq!((code, body.as_str()), (200, r#"{"compatibility":"NONE"}"#));
    assert_eq!(sluice.stop(), Some(0), "{}", sluice.stderr());
    sluice.start();
    wait_for(Duration::from_secs(20), "the held events", || {
        events(&sluice.records("src.public.t")).len() >= 4
    })
    .await;
    client
        .batch_execute("INSERT INTO t VALUES (5, 9, NULL)")
        .await
        .unwrap();
    wait_for(Duration::from_secs(20), "a new event after them", || {
        events(&sluice.records("src.public.t")).len() >= 5
    })
    .await;
    let rows = events(&sluice.records("src.public.t"));
    let ids: Vec<i64> = rows
        .iter()
        .map(|e| e["after"]["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [1, 2, 3, 4, 5], "held events once, in order");
    assert_eq!(rows[2]["after"], json!({"id": 3, "a": 7, "b": null}));
    let (_, versions) = http(port, "GET", "/subjects/src.public.t-value/versions", None);
    assert_eq!(versions, "[1,2,3]");
    assert!(
        !status(&sluice).contains("HELD BACK"),
        "{}",
        status(&sluice)
    );
    assert_eq!(sluice.stop(), Some(0), "{}", sluice.stderr());
}

/// `sluice status` on `sluice`'s config.
fn status(sluice: &Sluice) -> String {
    let out = Command::new(sluice_bin())
        .args(["status", "-c"])
        .arg(&sluice.config)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}
