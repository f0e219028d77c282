//! How deployments connect to Postgres. TLS, against the shared server with the certificate
//! `dev/services` made for it (target/tls): verify-full on the source (replication and snapshot
//! connections included) and the sink; a wrong CA refused at once, naming the check; `require`
//! against a server without TLS refused, saying so. A Unix-socket host. And a replication
//! connection the server drops, twice, while a writer commits.

use std::time::Duration;

use sluice_integration_tests::{
    events, sluice_bin, source_config, wait_for, workspace_root, PrivateCluster, Sluice, TestDb,
};

fn tls_file(name: &str) -> String {
    let path = workspace_root().join("target/tls").join(name);
    assert!(
        path.exists(),
        "{} is missing: run dev/services up (it makes the test certificates)",
        path.display()
    );
    path.display().to_string()
}

/// `url` with TLS parameters appended.
fn with_tls(url: &str, params: &str) -> String {
    let join = if url.contains('?') { '&' } else { '?' };
    format!("{url}{join}{params}")
}

/// A source (and optionally a sink) config whose URLs carry `params`.
fn config(source: &TestDb, params: &str, target: Option<&TestDb>) -> String {
    let mut text = source_config(source, "").replace(
        &format!("url = \"{}\"", source.url()),
        &format!("url = \"{}\"", with_tls(&source.url(), params)),
    );
    if let Some(target) = target {
        text.push_str(&format!(
            "[[sinks]]\nname = \"replica\"\nkind = \"postgres\"\nurl = \"{}\"\ntopics = [\"src.public.*\"]\n",
            with_tls(&target.url(), params)
        ));
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_carries_snapshot_stream_and_sink_over_tls() {
    let source = TestDb::create();
    let target = TestDb::create();
    source.exec("CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'snap')");
    let params = format!("sslmode=verify-full&sslrootcert={}", tls_file("ca.pem"));
    let mut sluice = Sluice::new(&config(&source, &params, Some(&target)));
    sluice.start();
    source.wait_for_streaming().await;
    source.exec("INSERT INTO t VALUES (2, 'streamed')");
    wait_for(Duration::from_secs(30), "both rows in the replica", || {
        target.exec("SELECT count(*) FROM information_schema.tables WHERE table_name = 't'") == "1"
            && target.exec("SELECT string_agg(v, ',' ORDER BY id) FROM t") == "snap,streamed"
    })
    .await;
    // Every connection sluice holds to the server is encrypted: the walsender, the catalog
    // connection and the sink's.
    // Only this test's databases: other tests run sluice against the same server meanwhile.
    let count = |ssl: bool| {
        source.exec(&format!(
            "SELECT count(*) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
             WHERE a.application_name LIKE 'sluice%' AND s.ssl = {ssl} \
               AND a.datname IN ('{}', '{}')",
            source.name, target.name
        ))
    };
    let (plain, encrypted) = (count(false), count(true));
    assert_eq!(plain, "0", "connections without TLS");
    assert!(
        encrypted.parse::<u32>().unwrap() >= 3,
        "encrypted connections: {encrypted}"
    );
    let walsender = source.exec(&format!(
        "SELECT s.ssl FROM pg_replication_slots r JOIN pg_stat_ssl s ON s.pid = r.active_pid \
         WHERE r.slot_name = '{}'",
        source.name
    ));
    assert_eq!(walsender, "t", "the replication connection is encrypted");
    assert_eq!(sluice.stop(), Some(0), "{}", sluice.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_another_ca_is_refused_at_once_naming_the_check() {
    let source = TestDb::create();
    source.exec("CREATE TABLE t (id int PRIMARY KEY)");
    let params = format!(
        "sslmode=verify-full&sslrootcert={}",
        tls_file("other-ca.pem")
    );
    let mut sluice = Sluice::new(&config(&source, &params, None));
    let (code, stderr) = sluice_integration_tests::run_to_exit(&mut sluice);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("TLS to Postgres at 127.0.0.1:5432 failed")
            && stderr.contains("not signed by a trusted CA (sslmode=verify-full)")
            && stderr.contains("sslrootcert="),
        "{stderr}"
    );
    assert!(
        !stderr.contains("retry"),
        "a bad certificate is not retried:\n{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_against_a_server_without_tls_is_refused_saying_so() {
    let cluster = PrivateCluster::start();
    let url = with_tls(&cluster.url("postgres"), "sslmode=require");
    let mut sluice = Sluice::new(&format!(
        "[[sources]]\nname = \"src\"\nkind = \"postgres\"\nurl = \"{url}\"\ntables = [\"public.*\"]\n"
    ));
    let (code, stderr) = sluice_integration_tests::run_to_exit(&mut sluice);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "the server does not accept TLS connections and sslmode=require requires one"
        ),
        "{stderr}"
    );
    assert!(!stderr.contains("retry"), "it is not retried:\n{stderr}");

    // A sink says the same (here through `check --connect`, which connects as `run` does).
    let source = TestDb::create();
    let sink = Sluice::new(&format!(
        "{}[[sinks]]\nname = \"replica\"\nkind = \"postgres\"\nurl = \"{url}\"\ntopics = [\"src.public.*\"]\n",
        source_config(&source, "")
    ));
    let out = std::process::Command::new(sluice_bin())
        .args(["check", "--connect", "-c"])
        .arg(&sink.config)
        .output()
        .expect("run sluice check");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("sink replica: FAILED: TLS to the target database failed: the server does not accept TLS"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unix_socket_host_carries_the_snapshot_the_stream_and_the_sink() {
    let source = TestDb::create();
    let target = TestDb::create();
    source.exec("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)");
    let socket = |db: &TestDb| format!("postgres://postgres@%2Fvar%2Frun%2Fpostgresql/{}", db.name);
    let mut sluice = Sluice::new(&format!(
        "[[sources]]\nname = \"src\"\nkind = \"postgres\"\nurl = \"{}\"\ntables = [\"public.*\"]\nslot = \"{}\"\n\
         [[sinks]]\nname = \"replica\"\nkind = \"postgres\"\nurl = \"{}\"\ntopics = [\"src.public.*\"]\n",
        socket(&source),
        source.name,
        socket(&target)
    ));
    sluice.start();
    source.wait_for_streaming().await;
    source.exec("INSERT INTO t VALUES (2)");
    wait_for(Duration::from_secs(30), "both rows in the replica", || {
        target.exec("SELECT count(*) FROM information_schema.tables WHERE table_name = 't'") == "1"
            && target.exec("SELECT string_agg(id::text, ',' ORDER BY id) FROM t") == "1,2"
    })
    .await;
    // The walsender's client is a Unix socket: pg_stat_replication shows no address for it.
    let address = source.exec(&format!(
        "SELECT coalesce(r.client_addr::text, 'unix') FROM pg_replication_slots s \
         JOIN pg_stat_replication r ON r.pid = s.active_pid WHERE s.slot_name = '{}'",
        source.name
    ));
    assert_eq!(address, "unix");
    assert_eq!(sluice.stop(), Some(0), "{}", sluice.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_replication_connection_reconnects_without_loss_or_duplicates() {
    let db = TestDb::create();
    db.exec("CREATE TABLE d (id int PRIMARY KEY)");
    let mut sluice = Sluice::new(&source_config(&db, "max_batch_events = 200"));
    sluice.start();
    db.wait_for_streaming().await;
    let writer_db = db.url();
    let writer = sluice_core::task::spawn_in_span(async move {
        let client = sluice_integration_tests::writer_client(&writer_db).await;
        for id in 1..=3000 {
            client
                .execute("INSERT INTO d VALUES ($1)", &[&id])
                .await
                .unwrap();
        }
    });
    // Cut the walsender twice while the writer commits; sluice must reconnect on its own.
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        db.exec(&format!(
            "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = '{}' AND active_pid IS NOT NULL",
            db.name
        ));
    }
    writer.await.unwrap();
    // A marker row after everything: once it is in the log, so is every duplicate there
    // could be (one partition, commit order).
    db.exec("INSERT INTO d VALUES (3001)");
    wait_for(
        Duration::from_secs(60),
        "all 3000 rows and the marker",
        || {
            events(&sluice.records("src.public.d"))
                .iter()
                .any(|e| e["after"]["id"] == 3001)
        },
    )
    .await;
    let ids: Vec<i64> = events(&sluice.records("src.public.d"))
        .iter()
        .map(|e| e["after"]["id"].as_i64().unwrap())
        .collect();
    assert_eq!(
        ids,
        (1..=3001).collect::<Vec<_>>(),
        "each row once, in commit order"
    );
    assert!(sluice.is_running(), "a dropped connection is not fatal");
    assert!(
        sluice
            .stderr()
            .contains("reconnecting from the last durable position"),
        "{}",
        sluice.stderr()
    );
}
