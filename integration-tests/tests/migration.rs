//! docs/migration.md, walked through: a legacy MariaDB "orders" monolith writes its orders and
//! an outbox; sluice feeds a new Postgres service database (routed and renamed by transforms)
//! and an HTTP service (the outbox events); the writes stop, `sluice run --stop-at` cuts over
//! at the legacy server's GTID position, the sinks drain, and the new side equals what the old
//! system committed: every order, every event once.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value as Json;
use sluice_integration_tests::receiver::{Receiver, Request};
use sluice_integration_tests::{mysql_source_config, wait_for, MariaDb, Sluice, TestDb};

/// The outbox events the receiver took, first delivery of each id only.
fn events(requests: &[Request]) -> Vec<Json> {
    let mut seen = HashSet::new();
    requests
        .iter()
        .filter(|r| r.status == 200)
        .flat_map(|r| serde_json::from_slice::<Vec<Json>>(&r.body).expect("a JSON array"))
        .filter(|e| seen.insert(e["id"].as_str().unwrap().to_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_monolith_moves_to_new_services_with_a_cut_over_at_a_known_position() {
    let legacy = MariaDb::create();
    legacy.exec(
        "CREATE TABLE orders (id INT PRIMARY KEY, customer VARCHAR(40) NOT NULL, \
           total DECIMAL(10,2) NOT NULL, status VARCHAR(20) NOT NULL); \
         CREATE TABLE outbox (id CHAR(36) PRIMARY KEY, aggregatetype VARCHAR(40) NOT NULL, \
           aggregateid VARCHAR(40) NOT NULL, type VARCHAR(40) NOT NULL, payload TEXT);",
    );
    let service = TestDb::create();
    let receiver = Receiver::start(Arc::new(|_: &Request, _| (200, vec![]))).await;
    let db = &legacy.name;
    let mut sluice = Sluice::new(&format!(
        "{source}\n\
         [[sinks]]\nname = \"orders-service\"\nkind = \"postgres\"\nurl = \"{pg}\"\n\
         topics = [\"src.{db}.orders\"]\n\
         [[sinks.transforms]]\ntype = \"route\"\nregex = 'src\\.[^.]+\\.orders'\nreplacement = \"svc.public.orders\"\n\
         [[sinks.transforms]]\ntype = \"columns\"\nrename = {{ total = \"amount\" }}\n\n\
         [[sinks]]\nname = \"notifier\"\nkind = \"http\"\nurl = \"http://127.0.0.1:{port}/events\"\n\
         topics = [\"src.{db}.outbox\"]\n\
         [[sinks.transforms]]\ntype = \"outbox\"\n",
        source = mysql_source_config(&legacy, ""),
        pg = service.url(),
        port = receiver.port,
    ));
    sluice.start();
    // Outbox rows a snapshot reads are no events (as with Debezium): the application writes
    // once sluice streams.
    wait_for(
        Duration::from_secs(30),
        "sluice to stream the binlog",
        || sluice.stderr().contains("streaming the binlog"),
    )
    .await;
    // The legacy application: each business transaction changes an order and writes its event.
    let mut expected_events = Vec::new();
    for i in 0..120 {
        let (sql, kind) = if i % 3 == 2 {
            let id = i - 1;
            (
                format!("UPDATE orders SET status = 'paid' WHERE id = {id};"),
                ("OrderPaid", id),
            )
        } else {
            (
                format!(
                    "INSERT INTO orders VALUES ({i}, 'customer {}', {}.25, 'new');",
                    i % 7,
                    i * 3
                ),
                ("OrderCreated", i),
            )
        };
        legacy.exec(&format!(
            "BEGIN; {sql} INSERT INTO outbox VALUES (UUID(), 'Order', 'order-{}', '{}', \
             '{{\"order\": {}, \"event\": \"{}\"}}'); COMMIT;",
            kind.1, kind.0, kind.1, kind.0
        ));
        expected_events.push((format!("order-{}", kind.1), kind.0.to_owned()));
        if i == 60 {
            // Mid-way, sluice is killed; the restart goes on from the log.
            tokio::time::sleep(Duration::from_millis(300)).await;
            sluice.kill();
            sluice.start();
        }
    }

    // Cut-over: writes to the legacy system stop; sluice runs to the position it had reached.
    let position = format!("mariadb-gtid:{}", legacy.exec("SELECT @@gtid_binlog_pos"));
    assert_eq!(sluice.stop(), Some(0));
    sluice.start_with_args(&["--stop-at", &position]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while sluice.is_running() {
        assert!(
            Instant::now() < deadline,
            "--stop-at never stopped:\n{}",
            sluice.stderr()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stderr = sluice.stderr();
    assert_eq!(sluice.stop(), Some(0), "{stderr}");
    assert!(stderr.contains("reached the stop position"), "{stderr}");
    // It stopped only once the sinks had delivered everything the log holds: the new side is
    // complete now, with sluice no longer running.
    assert!(
        stderr.contains("every sink delivered everything the log holds: stopping"),
        "{stderr}"
    );

    let legacy_rows: BTreeMap<i64, String> = legacy
        .exec("SELECT id, customer, total, status FROM orders ORDER BY id")
        .lines()
        .map(|l| {
            let cols: Vec<&str> = l.split('\t').collect();
            (cols[0].parse().unwrap(), cols.join("|"))
        })
        .collect();
    let read_service = || -> BTreeMap<i64, String> {
        if service.exec("SELECT to_regclass('public.orders') IS NULL") == "t" {
            return BTreeMap::new();
        }
        service
            .exec("SELECT string_agg(concat_ws('|', id, customer, amount, status), E'\\n' ORDER BY id) FROM public.orders")
            .lines()
            .map(|l| (l.split('|').next().unwrap().parse().unwrap(), l.to_owned()))
            .collect()
    };
    assert_eq!(read_service(), legacy_rows, "{}", sluice.stderr());

    // Every event once (after de-duplication on its id), in the order the legacy system
    // committed them (one aggregate type: one topic, one partition per key).
    let delivered = events(&receiver.requests());
    let mut by_order: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for event in &delivered {
        assert_eq!(event["topic"], "outbox.event.Order");
        let key = event["key"]["aggregateid"].as_str().unwrap().to_owned();
        let value: Json =
            serde_json::from_str(event["value"].as_str().expect("a text payload")).unwrap();
        by_order
            .entry(key)
            .or_default()
            .push(value["event"].as_str().unwrap().to_owned());
    }
    let mut wanted: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (key, kind) in &expected_events {
        wanted.entry(key.clone()).or_default().push(kind.clone());
    }
    assert_eq!(delivered.len(), expected_events.len());
    assert_eq!(by_order, wanted);
}
