//! The MariaDB server restarted under a running MySQL source: nothing committed is lost and
//! nothing is repeated. In a test binary of its own, since it stops the server every MariaDB
//! test uses.

use std::process::Command;
use std::time::Duration;

use sluice_integration_tests::{
    events, mysql_source_config, wait_for, workspace_root, MariaDb, Sluice,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restart_mid_stream_loses_nothing() {
    let db = MariaDb::create();
    db.exec("CREATE TABLE r (id int PRIMARY KEY)");
    let mut sluice = Sluice::new(&mysql_source_config(&db, ""));
    sluice.start();
    wait_for(Duration::from_secs(30), "streaming", || {
        sluice.stderr().contains("streaming the binlog")
    })
    .await;
    db.exec("INSERT INTO r SELECT seq FROM seq_1_to_500");
    for i in 501..=600 {
        db.exec(&format!("INSERT INTO r VALUES ({i})"));
    }
    let shutdown = Command::new("mariadb-admin")
        .args(["-h", "127.0.0.1", "-P", "3306", "-u", "root", "shutdown"])
        .status()
        .unwrap();
    assert!(shutdown.success());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let up = Command::new(workspace_root().join("dev/services"))
        .arg("up")
        .output()
        .unwrap();
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    for i in 601..=700 {
        db.exec(&format!("INSERT INTO r VALUES ({i})"));
    }
    let topic = format!("src.{}.r", db.name);
    wait_for(Duration::from_secs(90), "all 700 rows", || {
        events(&sluice.records(&topic)).len() >= 700
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let ids: Vec<i64> = events(&sluice.records(&topic))
        .iter()
        .map(|e| e["after"]["id"].as_i64().unwrap())
        .collect();
    assert_eq!(
        ids,
        (1..=700).collect::<Vec<_>>(),
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
