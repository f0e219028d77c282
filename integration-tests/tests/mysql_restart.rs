//! The MariaDB server restarted under a running MySQL source: nothing committed is lost and
//! nothing is repeated. On a private server, so that the shared one stays up for every other
//! MariaDB test.

use std::time::Duration;

use sluice_integration_tests::{events, wait_for, PrivateMariaDb, Sluice};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restart_mid_stream_loses_nothing() {
    let server = PrivateMariaDb::start();
    server.exec(
        "",
        "CREATE DATABASE app; CREATE TABLE app.r (id int PRIMARY KEY)",
    );
    let db = Db(&server);
    let mut sluice = Sluice::new(&format!(
        "[[sources]]\nname = \"src\"\nkind = \"mysql\"\nurl = \"{}\"\ntables = [\"app.*\"]\nserver_id = 4242\n",
        server.url("")
    ));
    sluice.start();
    wait_for(Duration::from_secs(30), "streaming", || {
        sluice.stderr().contains("streaming the binlog")
    })
    .await;
    db.exec("INSERT INTO r SELECT seq FROM seq_1_to_500");
    for i in 501..=600 {
        db.exec(&format!("INSERT INTO r VALUES ({i})"));
    }
    server.shutdown();
    server.start_server();
    for i in 601..=700 {
        db.exec(&format!("INSERT INTO r VALUES ({i})"));
    }
    // A marker row after everything: once it is in the log, so is every duplicate there
    // could be (one partition, commit order).
    db.exec("INSERT INTO r VALUES (701)");
    let topic = "src.app.r";
    wait_for(
        Duration::from_secs(90),
        "the marker row after all 700",
        || {
            events(&sluice.records(topic))
                .iter()
                .any(|e| e["after"]["id"] == 701)
        },
    )
    .await;
    let ids: Vec<i64> = events(&sluice.records(topic))
        .iter()
        .map(|e| e["after"]["id"].as_i64().unwrap())
        .collect();
    assert_eq!(
        ids,
        (1..=701).collect::<Vec<_>>(),
        "every row once, in order"
    );
    assert!(
        sluice.is_running(),
        "the source reconnected:\n{}",
        sluice.stderr()
    );
    assert!(
        sluice.stderr().contains("reconnecting"),
        "the lost connection is logged:\n{}",
        sluice.stderr()
    );
    assert_eq!(sluice.stop(), Some(0), "{}", sluice.stderr());
}

/// The test's database on the private server.
struct Db<'a>(&'a PrivateMariaDb);

impl Db<'_> {
    fn exec(&self, sql: &str) -> String {
        self.0.exec("app", sql)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_binlog_events_stop_the_source_instead_of_being_skipped() {
    let server = PrivateMariaDb::start();
    server.exec(
        "",
        "CREATE DATABASE app; CREATE TABLE app.big (id int PRIMARY KEY, body text)",
    );
    let mut sluice = Sluice::new(&format!(
        "[[sources]]\nname = \"src\"\nkind = \"mysql\"\nurl = \"{}\"\ntables = [\"app.*\"]\nserver_id = 4243\n",
        server.url("")
    ));
    sluice.start();
    wait_for(Duration::from_secs(30), "streaming", || {
        sluice.stderr().contains("streaming the binlog")
    })
    .await;
    // Row events of at least log_bin_compress_min_len (256) bytes are written compressed.
    server.exec(
        "",
        "SET GLOBAL log_bin_compress = ON; INSERT INTO app.big VALUES (1, REPEAT('x', 4000))",
    );
    wait_for(Duration::from_secs(30), "sluice to stop", || {
        !sluice.is_running()
    })
    .await;
    let stderr = sluice.stderr();
    assert_eq!(sluice.stop(), Some(1), "{stderr}");
    assert!(
        stderr.contains("the binlog holds compressed events (log_bin_compress is ON)"),
        "{stderr}"
    );
}
