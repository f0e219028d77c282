//! The MySQL source's schema history against the real MariaDB: a stream that resumes behind the
//! catalog reads each row with the columns it was written with, even when the binlog does not
//! name them (binlog_row_metadata = MINIMAL, MySQL's default). This is the only test in its
//! binary because it changes a server-wide setting, which must not reach tests running beside it.

use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value as Json};
use sluice_integration_tests::{events, mysql_source_config, wait_for, MariaDb, Sluice};

/// Sets binlog_row_metadata = MINIMAL for as long as it lives (FULL again afterwards, as
/// dev/services configures it, even when the test fails).
struct MinimalRowMetadata;

impl MinimalRowMetadata {
    fn set(db: &MariaDb) -> MinimalRowMetadata {
        db.exec("SET GLOBAL binlog_row_metadata = MINIMAL");
        MinimalRowMetadata
    }
}

impl Drop for MinimalRowMetadata {
    fn drop(&mut self) {
        let _ = Command::new("mariadb")
            .args(["-h", "127.0.0.1", "-P", "3306", "-u", "root", "-e"])
            .arg("SET GLOBAL binlog_row_metadata = FULL")
            .output();
    }
}

fn afters(sluice: &Sluice, topic: &str) -> Vec<Json> {
    events(&sluice.records(topic))
        .iter()
        .map(|e| e["after"].clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_minimal_row_metadata_the_schema_history_reads_rows_as_they_were_written() {
    let db = MariaDb::create();
    let _minimal = MinimalRowMetadata::set(&db);
    assert_eq!(db.exec("SELECT @@GLOBAL.binlog_row_metadata"), "MINIMAL");
    db.exec(
        "CREATE TABLE t (id int PRIMARY KEY, a int, b varchar(5)) DEFAULT CHARSET latin1; \
         CREATE TABLE gone (id int PRIMARY KEY, v varchar(5))",
    );
    let mut sluice = Sluice::new(&mysql_source_config(&db, ""));
    sluice.start();
    wait_for(Duration::from_secs(30), "the source to stream", || {
        sluice.stderr().contains("streaming the binlog")
    })
    .await;
    db.exec("INSERT INTO t VALUES (1, 1, 'x')");
    let t = format!("src.{}.t", db.name);
    wait_for(Duration::from_secs(20), "the first row", || {
        afters(&sluice, &t).len() == 1
    })
    .await;
    assert_eq!(sluice.stop(), Some(0), "{}", sluice.stderr());

    // While sluice is down, the catalog moves ahead of the binlog position sluice resumes at.
    db.exec("INSERT INTO gone VALUES (1, 'g')");
    db.exec("ALTER TABLE t ADD COLUMN c int FIRST, CHANGE b b2 varchar(20) CHARACTER SET utf8mb4");
    // Literals in hex, so that the client's charset does not matter: ü and é in UTF-8.
    db.exec("INSERT INTO t (c, id, a, b2) VALUES (22, 2, 2, CONVERT(X'C3BC' USING utf8mb4))");
    db.exec("ALTER TABLE t DROP COLUMN a, ADD COLUMN d bigint NOT NULL DEFAULT 7 AFTER id");
    db.exec("INSERT INTO t (c, id, d, b2) VALUES (33, 3, 8, 'z')");
    db.exec("CREATE TABLE n (k bigint unsigned PRIMARY KEY, e enum('p','q'), l varchar(3))");
    db.exec("INSERT INTO n VALUES (18446744073709551615, 'q', CONVERT(X'C3A9' USING utf8mb4))");
    db.exec("DROP TABLE gone");
    db.exec("RENAME TABLE t TO t2");
    db.exec("INSERT INTO t2 VALUES (44, 4, 9, 'w')");

    sluice.start();
    let (n, t2, gone) = (
        format!("src.{}.n", db.name),
        format!("src.{}.t2", db.name),
        format!("src.{}.gone", db.name),
    );
    wait_for(Duration::from_secs(30), "every row", || {
        afters(&sluice, &t).len() >= 3
            && afters(&sluice, &n).len() == 1
            && afters(&sluice, &t2).len() == 1
    })
    .await;
    assert_eq!(
        afters(&sluice, &t),
        [
            json!({"id": 1, "a": 1, "b": "x"}),
            json!({"c": 22, "id": 2, "a": 2, "b2": "ü"}),
            json!({"c": 33, "id": 3, "d": 8, "b2": "z"}),
        ],
        "each row as written, though the catalog shows none of these shapes now:\n{}",
        sluice.stderr()
    );
    assert_eq!(
        afters(&sluice, &n),
        [json!({"k": 18446744073709551615u64, "e": "q", "l": "é"})]
    );
    assert_eq!(
        afters(&sluice, &t2),
        [json!({"c": 44, "id": 4, "d": 9, "b2": "w"})]
    );
    assert_eq!(afters(&sluice, &gone), [json!({"id": 1, "v": "g"})]);

    // The history itself: the definitions at the snapshot, then one record per DDL.
    let history: Vec<Json> = sluice
        .records("_sluice_history.src")
        .into_iter()
        .map(|(_, value)| value)
        .collect();
    let statements: Vec<&str> = history
        .iter()
        .filter_map(|r| r["statement"].as_str())
        .collect();
    assert_eq!(statements.len(), 5, "{history:#?}");
    assert!(
        statements[0].starts_with("ALTER TABLE t ADD COLUMN c"),
        "{statements:?}"
    );
    assert!(
        statements[4].starts_with("RENAME TABLE t TO t2"),
        "{statements:?}"
    );
    let first = &history[0];
    assert!(first["statement"].is_null());
    let recorded: Vec<&str> = first["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["table"].as_str().unwrap())
        .collect();
    assert_eq!(recorded, ["gone", "t"]);
    assert_eq!(sluice.stop(), Some(0), "{}", sluice.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ddl_statement_it_cannot_read_on_a_captured_table_stops_the_source_quoting_it() {
    // (It may run while the other test has MINIMAL set; it does not depend on the setting.)
    let db = MariaDb::create();
    db.exec("CREATE TABLE t (id int PRIMARY KEY)");
    let mut sluice = Sluice::new(&mysql_source_config(&db, ""));
    sluice.start();
    wait_for(Duration::from_secs(30), "the source to stream", || {
        sluice.stderr().contains("streaming the binlog")
    })
    .await;
    // System versioning adds hidden columns to the rows; sluice's parser does not know it.
    db.exec("ALTER TABLE t ADD COLUMN g int, ADD SYSTEM VERSIONING");
    wait_for(Duration::from_secs(20), "the source to stop", || {
        !sluice.is_running()
    })
    .await;
    let stderr = sluice.stderr();
    assert!(
        stderr.contains("touches the captured table") && stderr.contains("ADD SYSTEM VERSIONING"),
        "{stderr}"
    );
}
