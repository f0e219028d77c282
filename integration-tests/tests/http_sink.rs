//! The HTTP sink against a receiver that fails on purpose (503s, a 429 with Retry-After, a
//! 400 for one event, and a few seconds down), with a chain of transforms (filter, mask,
//! columns) and the outbox router: every change arrives, exactly once after de-duplication
//! on the event id, in order per key; the refused event is in the dead-letter topic; every
//! request is signed.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value as Json;
use sha2::Sha256;
use sluice_integration_tests::receiver::{Receiver, Request};
use sluice_integration_tests::{source_config, wait_for, Sluice, TestDb};

const SALT: &str = "a-salt-of-twenty-bytes";
const SECRET: &str = "the-signing-secret";

fn hex_hmac(key: &str, data: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key.as_bytes()).expect("any key");
    mac.update(data);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The events of the 2xx requests to `path`, first delivery of each id only, in order.
fn delivered(requests: &[Request], path: &str) -> Vec<Json> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for request in requests
        .iter()
        .filter(|r| r.path == path && r.status == 200)
    {
        let events: Vec<Json> = match request.header("content-type") {
            Some("application/x-ndjson") => String::from_utf8_lossy(&request.body)
                .lines()
                .map(|l| serde_json::from_str(l).expect("a JSON line"))
                .collect(),
            _ => serde_json::from_slice(&request.body).expect("a JSON array"),
        };
        for event in events {
            if seen.insert(event["id"].as_str().expect("id").to_owned()) {
                out.push(event);
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_sink_delivers_every_change_through_failures() {
    let db = TestDb::create();
    db.exec(
        "CREATE TABLE orders (id int PRIMARY KEY, status text NOT NULL, email text, note text); \
         CREATE TABLE outbox (id uuid PRIMARY KEY, aggregatetype text NOT NULL, \
           aggregateid text NOT NULL, type text NOT NULL, payload jsonb);",
    );
    // 503 three times, then a 429 asking for a second; any batch holding the poison event is
    // refused with a 400. Every request's signature is checked.
    let policy = Arc::new(|request: &Request, n: usize| {
        let body = String::from_utf8_lossy(&request.body);
        if request.path == "/events" {
            match n {
                0..=2 => return (503, vec![]),
                3 => return (429, vec![("retry-after".to_owned(), "1".to_owned())]),
                _ => {}
            }
            if body.contains("poison") {
                return (400, vec![]);
            }
        }
        (200, vec![])
    });
    let mut receiver = Receiver::start(policy).await;
    let mut sluice = Sluice::new(&format!(
        "{source}\n\
         [[sinks]]\nname = \"svc\"\nkind = \"http\"\nurl = \"http://127.0.0.1:{port}/events\"\n\
         topics = [\"src.public.orders\"]\nbatch_events = 40\nretry_ms = 1500\n\
         signing_secret_file = \"{{dir}}/secret\"\ndead_letter_topic = \"svc_dead\"\n\
         [[sinks.transforms]]\ntype = \"filter\"\nwhen = \"__op = 'd' or status != 'internal'\"\n\
         [[sinks.transforms]]\ntype = \"mask\"\ncolumns = [\"email\"]\nsalt_file = \"{{dir}}/salt\"\n\
         [[sinks.transforms]]\ntype = \"columns\"\nexclude = [\"note\"]\n\n\
         [[sinks]]\nname = \"events\"\nkind = \"http\"\nurl = \"http://127.0.0.1:{port}/outbox\"\n\
         format = \"lines\"\ntopics = [\"src.public.outbox\"]\n\
         [[sinks.transforms]]\ntype = \"outbox\"\n",
        source = source_config(&db, ""),
        port = receiver.port,
    ));
    std::fs::write(sluice.path("secret"), format!("{SECRET}\n")).unwrap();
    std::fs::write(sluice.path("salt"), format!("{SALT}\n")).unwrap();
    sluice.start();
    db.wait_for_streaming().await;

    let statuses = ["new", "paid", "internal", "shipped"];
    for batch in 0..10 {
        let mut sql = String::from("BEGIN;");
        for i in 0..30 {
            let id = batch * 30 + i;
            let status = statuses[(id % 4) as usize];
            sql.push_str(&format!(
                "INSERT INTO orders VALUES ({id}, '{status}', 'user{id}@example.com', 'secret note {id}');"
            ));
        }
        sql.push_str(&format!(
            "INSERT INTO outbox VALUES (gen_random_uuid(), '{}', 'agg-{batch}', 'Created', '{{\"n\": {batch}}}'); \
             DELETE FROM outbox; COMMIT;",
            if batch % 2 == 0 { "Order" } else { "Customer" }
        ));
        db.exec(&sql);
        if batch == 4 {
            // The endpoint goes down for longer than retry_ms: the sink reopens and sends
            // again from its committed offsets.
            db.exec("INSERT INTO orders VALUES (1000, 'poison', 'p@example.com', null)");
            receiver.down();
            tokio::time::sleep(Duration::from_secs(4)).await;
            receiver.up().await;
        }
    }
    db.exec(
        "UPDATE orders SET status = 'shipped', email = 'moved' || id || '@example.com' WHERE id % 4 = 1; \
         DELETE FROM orders WHERE id % 10 = 3; \
         UPDATE orders SET note = 'changed' WHERE id % 7 = 0;",
    );

    // What the receiver must end with: every order not internal (the poison one refused),
    // email masked, no note.
    let rows = db.exec(
        "SELECT string_agg(id || '|' || status || '|' || email, ',' ORDER BY id) FROM orders \
         WHERE status NOT IN ('internal', 'poison')",
    );
    let expected: BTreeMap<i64, (String, String)> = rows
        .split(',')
        .map(|row| {
            let parts: Vec<&str> = row.split('|').collect();
            (
                parts[0].parse().unwrap(),
                (parts[1].to_owned(), hex_hmac(SALT, parts[2].as_bytes())),
            )
        })
        .collect();
    let fold = |events: &[Json]| {
        let mut state = BTreeMap::new();
        for event in events {
            let id = event["key"]["id"].as_i64().expect("key id");
            let value = &event["value"];
            if value["op"] == "d" {
                state.remove(&id);
            } else {
                let after = &value["after"];
                assert!(after.get("note").is_none(), "note is excluded: {event}");
                state.insert(
                    id,
                    (
                        after["status"].as_str().unwrap().to_owned(),
                        after["email"].as_str().unwrap().to_owned(),
                    ),
                );
            }
        }
        state
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let mut last = fold(&delivered(&receiver.requests(), "/events"));
    while last != expected && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        last = fold(&delivered(&receiver.requests(), "/events"));
    }
    assert_eq!(
        last,
        expected,
        "what the receiver holds\n{}",
        sluice.stderr()
    );

    let requests = receiver.requests();
    for request in &requests {
        let signature = request.header("x-sluice-signature");
        if request.path == "/events" {
            assert_eq!(
                signature,
                Some(format!("sha256={}", hex_hmac(SECRET, &request.body)).as_str())
            );
            assert!(request
                .header("idempotency-key")
                .is_some_and(|k| k.starts_with("src.public.orders:")));
        } else {
            assert_eq!(signature, None, "the outbox sink signs nothing");
        }
    }
    let retried = requests
        .iter()
        .filter(|r| r.status == 503 || r.status == 429)
        .count();
    assert_eq!(retried, 4);
    let stderr = sluice.stderr();
    assert!(
        stderr.contains("HTTP sink request failed; retrying"),
        "{stderr}"
    );
    assert!(
        stderr.contains("sink write failed; reopening"),
        "the outage outlasted retry_ms:\n{stderr}"
    );
    assert!(!delivered(&requests, "/events")
        .iter()
        .any(|e| e["value"]["after"]["status"] == "internal"));

    // The refused event, alone in the dead-letter topic.
    let dead: Vec<Json> = sluice
        .records("svc_dead")
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["after"]["status"], "poison");

    // Outbox events: one per insert (the deletes are no events), on their aggregate's topic,
    // keyed by the aggregate id, the payload as the value.
    let mut outbox = Vec::new();
    wait_for(Duration::from_secs(30), "ten outbox events", || {
        outbox = delivered(&receiver.requests(), "/outbox");
        outbox.len() >= 10
    })
    .await;
    assert_eq!(outbox.len(), 10);
    outbox.sort_by_key(|e| {
        e["key"]["aggregateid"].as_str().unwrap()[4..]
            .parse::<usize>()
            .unwrap()
    });
    for (batch, event) in outbox.iter().enumerate() {
        let kind = if batch % 2 == 0 { "Order" } else { "Customer" };
        assert_eq!(event["topic"], format!("outbox.event.{kind}"));
        assert_eq!(
            event["key"],
            serde_json::json!({ "aggregateid": format!("agg-{batch}") })
        );
        assert_eq!(event["value"], serde_json::json!({ "n": batch }));
    }
    assert_eq!(sluice.stop(), Some(0));
}
