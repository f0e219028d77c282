//! The MySQL/MariaDB source end to end against the real MariaDB: changes across tables in
//! order, a snapshot under concurrent writes, every type with extreme values (snapshot and
//! binlog alike), a password login and a row longer than a packet in the snapshot, schema changes
//! mid-stream, kill -9 with every transaction exactly once, and MariaDB replicated into
//! Postgres.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value as Json};
use sluice_integration_tests::{
    events, fold_rows, mysql_source_config, sluice_bin, wait_for, MariaDb, Rng, Sluice, TestDb,
};

fn jsonl_sink(db: &MariaDb) -> String {
    format!(
        "[[sinks]]\nname = \"file\"\nkind = \"jsonl\"\npath = \"{{dir}}/out.jsonl\"\ntopics = [\"src.{}.*\"]\n",
        db.name
    )
}

/// Table `c`'s rows as the log folds them: id → {"id", "n"}.
fn rows_of_c(db: &MariaDb) -> BTreeMap<String, Json> {
    db.exec("SELECT id, n FROM c ORDER BY id")
        .lines()
        .map(|l| {
            let (id, n) = l.split_once('\t').unwrap();
            (
                id.to_owned(),
                json!({"id": id.parse::<i64>().unwrap(), "n": n.parse::<i64>().unwrap()}),
            )
        })
        .collect()
}

async fn wait_streaming(sluice: &Sluice) {
    wait_for(Duration::from_secs(30), "the source to stream", || {
        sluice.stderr().contains("streaming the binlog")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_across_tables_arrive_in_commit_order_with_gtids() {
    let db = MariaDb::create();
    db.exec("CREATE TABLE a (id int PRIMARY KEY, v varchar(10)); CREATE TABLE b (id bigint PRIMARY KEY, n int)");
    let mut sluice = Sluice::new(&mysql_source_config(&db, ""));
    sluice.start();
    wait_streaming(&sluice).await;
    for statement in [
        "BEGIN; INSERT INTO a VALUES (1, 'x'), (2, 'y'); INSERT INTO b VALUES (10, 1); COMMIT",
        "UPDATE a SET v = 'x2' WHERE id = 1",
        "UPDATE b SET n = n + 1 WHERE id = 10",
        "DELETE FROM a WHERE id = 2",
        "UPDATE a SET id = 3 WHERE id = 1",
    ] {
        db.exec(statement);
    }
    let topic_a = format!("src.{}.a", db.name);
    let topic_b = format!("src.{}.b", db.name);
    wait_for(Duration::from_secs(20), "events", || {
        events(&sluice.records(&topic_a)).len() >= 6 && events(&sluice.records(&topic_b)).len() >= 2
    })
    .await;
    let a = events(&sluice.records(&topic_a));
    let summary: Vec<(String, Json, Json)> = a
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
            ("c".into(), Json::Null, json!({"id": 1, "v": "x"})),
            ("c".into(), Json::Null, json!({"id": 2, "v": "y"})),
            (
                "u".into(),
                json!({"id": 1, "v": "x"}),
                json!({"id": 1, "v": "x2"})
            ),
            ("d".into(), json!({"id": 2, "v": "y"}), Json::Null),
            ("d".into(), json!({"id": 1, "v": "x2"}), Json::Null),
            ("c".into(), Json::Null, json!({"id": 3, "v": "x2"})),
        ]
    );
    // One transaction, one GTID, across both tables.
    let b = events(&sluice.records(&topic_b));
    assert_eq!(a[0]["transaction"]["id"], b[0]["transaction"]["id"]);
    let gtid = a[0]["source"]["gtid"].as_str().unwrap();
    assert_eq!(gtid.split('-').count(), 3, "a MariaDB GTID list: {gtid}");
    assert_eq!(b[1]["after"], json!({"id": 10, "n": 2}));
    assert_eq!(sluice.stop(), Some(0), "{}", sluice.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_under_concurrent_writes_ends_equal_to_the_source() {
    let db = MariaDb::create();
    db.exec("CREATE TABLE c (id int PRIMARY KEY, n int NOT NULL)");
    db.exec("INSERT INTO c SELECT seq, 0 FROM seq_1_to_20000");
    let mut sluice = Sluice::new(&mysql_source_config(
        &db,
        "snapshot_chunk_rows = 1000\nsnapshot_parallelism = 2",
    ));
    let writer = {
        let name = db.name.clone();
        tokio::task::spawn_blocking(move || {
            let db = MariaDb { name };
            let mut rng = Rng::new(3);
            for _ in 0..150 {
                let id = 1 + rng.below(20_000);
                db.exec(&format!(
                    "UPDATE c SET n = n + 1 WHERE id IN ({id}, {})",
                    20_001 - id
                ));
                db.exec(&format!(
                    "INSERT INTO c VALUES ({}, 1) ON DUPLICATE KEY UPDATE n = n + 1",
                    20_000 + rng.below(100)
                ));
            }
            std::mem::forget(db);
        })
    };
    sluice.start();
    writer.await.unwrap();
    let expected = rows_of_c(&db);
    let topic = format!("src.{}.c", db.name);
    wait_for(
        Duration::from_secs(60),
        "the log to equal the table",
        || fold_rows(&events(&sluice.records(&topic)), "id") == expected,
    )
    .await;
    let all = events(&sluice.records(&topic));
    let reads: Vec<&Json> = all
        .iter()
        .filter(|e| e["op"] == "r")
        .map(|e| &e["after"]["id"])
        .collect();
    let distinct: std::collections::BTreeSet<String> =
        reads.iter().map(|id| id.to_string()).collect();
    assert!(reads.len() >= 20_000, "every row read: {}", reads.len());
    assert_eq!(reads.len(), distinct.len(), "no row read twice");
    assert_eq!(sluice.stop(), Some(0), "{}", sluice.stderr());
}

/// Debezium's snapshot markers: the snapshot's first row `first`, its last `last`, each other
/// table's first and last rows `first_in_data_collection` and `last_in_data_collection`, the
/// rest `true`; a table of 10,000 rows ends exactly on a unit and a chunk, one has one row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_snapshot_marks_first_and_last_rows_as_debezium_does() {
    let db = MariaDb::create();
    for (table, rows) in [("a", 10_000), ("b", 1), ("c", 7)] {
        db.exec(&format!("CREATE TABLE {table} (id int PRIMARY KEY)"));
        db.exec(&format!(
            "INSERT INTO {table} SELECT seq FROM seq_1_to_{rows}"
        ));
    }
    let mut sluice = Sluice::new(&mysql_source_config(&db, "snapshot_chunk_rows = 5000"));
    sluice.start();
    let markers = |table: &str| -> Vec<String> {
        events(&sluice.records(&format!("src.{}.{table}", db.name)))
            .iter()
            .map(|e| e["source"]["snapshot"].as_str().unwrap_or("?").to_string())
            .collect()
    };
    wait_for(Duration::from_secs(60), "every row in the log", || {
        markers("a").len() == 10_000 && markers("b").len() == 1 && markers("c").len() == 7
    })
    .await;
    let tables: Vec<Vec<String>> = ["a", "b", "c"].iter().map(|t| markers(t)).collect();
    let all: Vec<&String> = tables.iter().flatten().collect();
    let count = |marker: &str| all.iter().filter(|m| m.as_str() == marker).count();
    assert_eq!(count("first"), 1, "one first row: {tables:?}");
    assert_eq!(count("last"), 1, "one last row");
    for (name, rows) in ["a", "b", "c"].iter().zip(&tables) {
        let ends = ["first", "first_in_data_collection", "last"];
        assert!(
            ends.contains(&rows[0].as_str()),
            "{name} begins with {}",
            rows[0]
        );
        if rows.len() > 1 {
            let last = rows.last().unwrap().as_str();
            assert!(
                ["last", "last_in_data_collection"].contains(&last),
                "{name} ends with {last}"
            );
            let middle = &rows[1..rows.len() - 1];
            assert!(middle.iter().all(|m| m == "true"), "{name}: {middle:?}");
        }
    }
    assert_eq!(
        count("first_in_data_collection") + count("first"),
        3,
        "each table's first row marked"
    );
    assert_eq!(sluice.stop(), Some(0), "{}", sluice.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_round_trips_with_extreme_values() {
    let db = MariaDb::create();
    db.exec(
        "CREATE TABLE t (id int PRIMARY KEY, \
         ti tinyint, tu tinyint unsigned, si smallint, su smallint unsigned, mi mediumint, mu mediumint unsigned, \
         i int, iu int unsigned, bi bigint, bu bigint unsigned, \
         de decimal(65,30), f float, d double, bt bit(1), b12 bit(12), \
         ch char(5), vc varchar(100), tx text, lat varchar(10) CHARACTER SET latin1, \
         bn binary(3), vb varbinary(10), bl blob, \
         dt date, tm time(6), dtm datetime(6), ts timestamp(6) NULL, y year, \
         j json, e enum('a','b','c'), s set('x','y','z'))",
    );
    let row = |id: i32, extreme_low: bool| {
        if extreme_low {
            format!("({id}, -128, 0, -32768, 0, -8388608, 0, -2147483648, 0, -9223372036854775808, 0, \
                     '-99999999999999999999999999999999999.999999999999999999999999999999', -3.40282e38, -1.7976931348623157e308, b'0', b'000000000000', \
                     '', '', '', 'é', x'000000', x'', x'', '1000-01-01', '-838:59:59.000000', '1000-01-01 00:00:00.000000', '1970-01-01 00:00:01.000000', 1901, \
                     '[]', 'a', '')")
        } else {
            format!("({id}, 127, 255, 32767, 65535, 8388607, 16777215, 2147483647, 4294967295, 9223372036854775807, 18446744073709551615, \
                     '99999999999999999999999999999999999.999999999999999999999999999999', 3.40282e38, 1.7976931348623157e308, b'1', b'111111111111', \
                     'abcde', 'ünï ✓ \"q\" \\\\ x', 'long text', 'ÿ', x'ffffff', x'00ff', x'deadbeef', '9999-12-31', '838:59:59.999999', '9999-12-31 23:59:59.999999', '2038-01-19 03:14:07.999999', 2155, \
                     '{{\"k\": [1, 2.5, null, \"s\"]}}', 'c', 'x,z')")
        }
    };
    // All three rows go through the snapshot's reader; streamed copies of them follow below.
    db.exec(&format!(
        "INSERT INTO t VALUES {}, {}",
        row(1, true),
        row(2, false)
    ));
    db.exec("INSERT INTO t (id) VALUES (3)");
    let mut sluice = Sluice::new(&mysql_source_config(&db, ""));
    sluice.start();
    wait_streaming(&sluice).await;
    let topic = format!("src.{}.t", db.name);
    wait_for(Duration::from_secs(20), "3 rows", || {
        events(&sluice.records(&topic)).len() >= 3
    })
    .await;
    let rows = fold_rows(&events(&sluice.records(&topic)), "id");
    let low = &rows["1"];
    let high = &rows["2"];
    assert_eq!(low["ti"], -128);
    assert_eq!(high["tu"], 255);
    assert_eq!(low["mi"], -8_388_608);
    assert_eq!(high["mu"], 16_777_215);
    assert_eq!(high["iu"], 4_294_967_295u64);
    assert_eq!(low["bi"], i64::MIN);
    assert_eq!(high["bu"], u64::MAX, "BIGINT UNSIGNED exact");
    assert_eq!(
        high["de"],
        "99999999999999999999999999999999999.999999999999999999999999999999"
    );
    assert_eq!(
        low["de"],
        "-99999999999999999999999999999999999.999999999999999999999999999999"
    );
    assert_eq!(high["d"], 1.797_693_134_862_315_7e308);
    assert_eq!(high["bt"], true);
    assert_eq!(low["bt"], false);
    assert_eq!(high["b12"], "D/8=", "BIT(12) as 2 bytes");
    assert_eq!(high["ch"], "abcde");
    assert_eq!(high["vc"], "ünï ✓ \"q\" \\ x");
    assert_eq!(low["lat"], "é", "latin1 decoded");
    assert_eq!(high["lat"], "ÿ");
    assert_eq!(high["bn"], "////");
    assert_eq!(low["vb"], "");
    assert_eq!(high["bl"], "3q2+7w==");
    assert_eq!(low["dt"], -354_285, "1000-01-01 in days");
    assert_eq!(high["dt"], 2_932_896, "9999-12-31 in days");
    assert_eq!(low["tm"], -3_020_399_000_000i64, "-838:59:59");
    assert_eq!(high["tm"], 3_020_399_999_999i64);
    assert_eq!(high["dtm"], 253_402_300_799_999_999i64);
    assert_eq!(high["ts"], "2038-01-19T03:14:07.999999Z");
    assert_eq!(low["ts"], "1970-01-01T00:00:01Z");
    assert_eq!(high["y"], 2155);
    assert_eq!(low["y"], 1901);
    let doc: Json = serde_json::from_str(high["j"].as_str().unwrap()).unwrap();
    assert_eq!(doc, json!({"k": [1, 2.5, null, "s"]}));
    assert_eq!(high["e"], "c");
    assert_eq!(high["s"], "x,z");
    assert_eq!(low["s"], "");
    assert!(rows["3"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| *k != "id")
        .all(|(_, v)| v.is_null()));
    // The snapshot and the binlog decode alike: compare each row with a streamed copy.
    let columns = "ti, tu, si, su, mi, mu, i, iu, bi, bu, de, f, d, bt, b12, ch, vc, tx, lat, \
                   bn, vb, bl, dt, tm, dtm, ts, y, j, e, s";
    db.exec(&format!(
        "INSERT INTO t (id, {columns}) SELECT id + 10, {columns} FROM t WHERE id <= 3"
    ));
    wait_for(Duration::from_secs(20), "the copies", || {
        fold_rows(&events(&sluice.records(&topic)), "id").contains_key("13")
    })
    .await;
    let rows = fold_rows(&events(&sluice.records(&topic)), "id");
    for id in 1..=3 {
        let mut copied = rows[&(id + 10).to_string()].clone();
        copied["id"] = json!(id);
        assert_eq!(
            copied,
            rows[&id.to_string()],
            "row {id}: snapshot and binlog decode alike"
        );
    }
    assert_eq!(sluice.stop(), Some(0), "{}", sluice.stderr());
}

/// The snapshot reads on its own protocol connection: a user with a password logs in, and a
/// row longer than one protocol packet (16 MiB) is read whole, with the row after it intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_snapshot_logs_in_with_a_password_and_reads_rows_longer_than_a_packet() {
    /// Puts the server's setting and users back even when the test fails.
    struct Restore<'a>(&'a MariaDb, String, String);
    impl Drop for Restore<'_> {
        fn drop(&mut self) {
            let Restore(db, packet, user) = self;
            db.exec(&format!("SET GLOBAL max_allowed_packet = {packet}"));
            db.exec(&format!(
                "DROP USER IF EXISTS '{user}'@'%', '{user}'@'localhost'"
            ));
        }
    }
    let db = MariaDb::create();
    let user = format!("{}_u", db.name);
    let _restore = Restore(
        &db,
        db.exec("SELECT @@GLOBAL.max_allowed_packet"),
        user.clone(),
    );
    db.exec("SET GLOBAL max_allowed_packet = 64 * 1024 * 1024");
    db.exec("CREATE TABLE big (id int PRIMARY KEY, b longblob)");
    const LEN: usize = 17_000_000;
    // Kept out of the binlog: an event larger than max_allowed_packet (restored at the end)
    // would stop the server's BINLOG_GTID_POS on that file for every later snapshot.
    db.exec(&format!(
        "SET SESSION sql_log_bin = 0; INSERT INTO big VALUES (1, REPEAT('x', {LEN})), (2, 'after')"
    ));
    for host in ["%", "localhost"] {
        db.exec(&format!(
            "CREATE USER '{user}'@'{host}' IDENTIFIED BY 'Secret-pw1'; GRANT ALL ON *.* TO '{user}'@'{host}'"
        ));
    }
    let config = mysql_source_config(&db, "")
        .replace("mysql://root@", &format!("mysql://{user}:Secret-pw1@"));
    let mut sluice = Sluice::new(&config);
    // `check --connect` logs in the way the snapshot does too.
    let check = std::process::Command::new(sluice_bin())
        .args(["check", "--connect", "-c"])
        .arg(&sluice.config)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&check.stdout).into_owned()
        + &String::from_utf8_lossy(&check.stderr);
    assert!(check.status.success(), "{said}");
    assert!(said.contains("source src: ok"), "{said}");
    sluice.start();
    let topic = format!("src.{}.big", db.name);
    wait_for(Duration::from_secs(60), "both rows", || {
        events(&sluice.records(&topic)).len() >= 2
    })
    .await;
    let rows = fold_rows(&events(&sluice.records(&topic)), "id");
    let blob = rows["1"]["b"].as_str().expect("the blob as base64");
    assert_eq!(blob.len(), LEN.div_ceil(3) * 4, "the whole long row");
    // "xxx" is "eHh4" in base64; 17,000,000 leaves "xx" at the end.
    let (body, tail) = blob.split_at(blob.len() - 4);
    assert!(body.as_bytes().chunks(4).all(|group| group == b"eHh4"));
    assert_eq!(tail, "eHg=");
    assert_eq!(rows["2"]["b"], "YWZ0ZXI=", "the row after the long one");
    assert_eq!(sluice.stop(), Some(0), "{}", sluice.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alter_table_mid_stream_keeps_events_right() {
    let db = MariaDb::create();
    db.exec("CREATE TABLE t (id int PRIMARY KEY, a int, b varchar(5))");
    let mut sluice = Sluice::new(&(mysql_source_config(&db, "") + &jsonl_sink(&db)));
    sluice.start();
    wait_streaming(&sluice).await;
    db.exec("INSERT INTO t VALUES (1, 1, 'x')");
    db.exec("ALTER TABLE t ADD COLUMN c int DEFAULT 7");
    db.exec("INSERT INTO t (id, a, b) VALUES (2, 2, 'y')");
    db.exec("ALTER TABLE t DROP COLUMN a");
    db.exec("INSERT INTO t (id, b, c) VALUES (3, 'z', 3)");
    db.exec("ALTER TABLE t MODIFY COLUMN b varchar(50)");
    db.exec("UPDATE t SET b = 'a longer value than five' WHERE id = 3");
    db.exec("TRUNCATE TABLE t");
    let topic = format!("src.{}.t", db.name);
    wait_for(Duration::from_secs(20), "events", || {
        events(&sluice.records(&topic)).len() >= 5
    })
    .await;
    let all = events(&sluice.records(&topic));
    let afters: Vec<Json> = all.iter().map(|e| e["after"].clone()).collect();
    assert_eq!(afters[0], json!({"id": 1, "a": 1, "b": "x"}));
    assert_eq!(afters[1], json!({"id": 2, "a": 2, "b": "y", "c": 7}));
    assert_eq!(afters[2], json!({"id": 3, "b": "z", "c": 3}));
    assert_eq!(
        afters[3],
        json!({"id": 3, "b": "a longer value than five", "c": 3})
    );
    assert_eq!(all[4]["op"], "t");
    assert_eq!(sluice.stop(), Some(0), "{}", sluice.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_and_restart_give_every_transaction_exactly_once() {
    let db = MariaDb::create();
    db.exec("CREATE TABLE k (id int PRIMARY KEY, n int)");
    let mut sluice = Sluice::new(&mysql_source_config(&db, "max_batch_events = 50"));
    sluice.start();
    wait_streaming(&sluice).await;
    let total = 3000;
    let writer = {
        let name = db.name.clone();
        tokio::task::spawn_blocking(move || {
            let db = MariaDb { name };
            let statements: Vec<String> = (1..=total)
                .map(|i| format!("INSERT INTO k VALUES ({i}, {i});"))
                .collect();
            for chunk in statements.chunks(100) {
                db.exec(&chunk.join(" "));
            }
            std::mem::forget(db);
        })
    };
    let mut rng = Rng::new(11);
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(400 + rng.below(800))).await;
        sluice.kill();
        sluice.start();
    }
    writer.await.unwrap();
    // A marker row after everything: once it is in the log, so is every duplicate there
    // could be (one partition, commit order).
    let marker = total + 1;
    db.exec(&format!("INSERT INTO k VALUES ({marker}, 0)"));
    let topic = format!("src.{}.k", db.name);
    wait_for(
        Duration::from_secs(60),
        "the marker row after every row",
        || {
            events(&sluice.records(&topic))
                .iter()
                .any(|e| e["after"]["id"] == marker)
        },
    )
    .await;
    let all = events(&sluice.records(&topic));
    assert_eq!(all.len(), marker, "each transaction exactly once");
    let ids: Vec<i64> = all
        .iter()
        .map(|e| e["after"]["id"].as_i64().unwrap())
        .collect();
    assert_eq!(
        ids,
        (1..=marker as i64).collect::<Vec<_>>(),
        "in commit order"
    );
    assert_eq!(sluice.stop(), Some(0), "{}", sluice.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_replicates_into_postgres() {
    let source = MariaDb::create();
    let target = TestDb::create();
    source.exec(
        "CREATE TABLE acct (id int PRIMARY KEY, owner varchar(30) NOT NULL, balance decimal(12,2), \
         big bigint unsigned, opened datetime(6), flags set('a','b'), kind enum('x','y'), note text)",
    );
    source.exec("INSERT INTO acct VALUES (1, 'seed', 10.00, 18446744073709551615, '2024-01-01 00:00:00', 'a', 'x', NULL)");
    let mut sluice = Sluice::new(&format!(
        "{}[[sinks]]\nname = \"replica\"\nkind = \"postgres\"\nurl = \"{}\"\ntopics = [\"src.*\"]\nschema = \"public\"\n",
        mysql_source_config(&source, "encoding = \"avro\""),
        target.url()
    ));
    sluice.start();
    wait_streaming(&sluice).await;
    let mut rng = Rng::new(5);
    for n in 0..400 {
        let id = 1 + rng.below(60);
        let statement = match rng.below(10) {
            0..=5 => format!(
                "INSERT INTO acct VALUES ({id}, 'owner {n}', {n}.25, {}, '2024-02-{:02} 10:00:00.{:06}', 'a,b', 'y', 'n{n}') \
                 ON DUPLICATE KEY UPDATE balance = balance + 1, note = 'again {n}'",
                u64::MAX - n,
                n % 28 + 1,
                n
            ),
            6..=8 => format!("UPDATE acct SET balance = balance - 0.5, flags = 'b' WHERE id = {id}"),
            _ => format!("DELETE FROM acct WHERE id = {id}"),
        };
        source.exec(&statement);
    }
    let query_maria = "SELECT concat_ws('|', id, owner, balance, big, DATE_FORMAT(opened, '%Y-%m-%d %H:%i:%s.%f'), flags, kind, coalesce(note, 'NULL')) FROM acct ORDER BY id";
    let query_pg = "SELECT concat_ws('|', id, owner, balance, big, to_char(opened, 'YYYY-MM-DD HH24:MI:SS.US'), flags, kind, coalesce(note, 'NULL')) FROM acct ORDER BY id";
    let expected = source.exec(query_maria);
    wait_for(
        Duration::from_secs(60),
        "the target to equal the source",
        || {
            target.exec("SELECT to_regclass('public.acct') IS NOT NULL") == "t"
                && target.exec(query_pg) == expected
        },
    )
    .await;
    assert_eq!(
        target.exec("SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'acct'::regclass AND attname = 'big'"),
        "numeric(20,0)"
    );
    assert_eq!(sluice.stop(), Some(0), "{}", sluice.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_larger_than_a_batch_reaches_a_transactional_target_whole() {
    let source = MariaDb::create();
    let target = TestDb::create();
    source.exec("CREATE TABLE big (id int PRIMARY KEY, pad varchar(200))");
    // The source sends it in parts of 500 events; the sink holds at most ~1 MB back.
    let mut sluice = Sluice::new(&format!(
        "{}[[sinks]]\nname = \"replica\"\nkind = \"postgres\"\nurl = \"{}\"\ntopics = [\"src.*\"]\nschema = \"public\"\ntransactional = true\nmax_pending_bytes = 1000000\n",
        mysql_source_config(&source, "max_batch_events = 500"),
        target.url()
    ));
    sluice.start();
    wait_streaming(&sluice).await;
    source.exec("INSERT INTO big VALUES (0, 'first')");
    let count = || {
        if target.exec("SELECT to_regclass('public.big') IS NOT NULL") != "t" {
            return 0;
        }
        target
            .exec("SELECT count(*) FROM big")
            .parse::<u64>()
            .unwrap()
    };
    wait_for(Duration::from_secs(30), "the first row", || count() == 1).await;
    source.exec(
        "INSERT INTO big SELECT seq, repeat('p', 200) FROM seq_1_to_20000; UPDATE big SET pad = 'done' WHERE id = 0",
    );
    // The target shows none of the transaction or all of it.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let seen = count();
        assert!(seen == 1 || seen == 20_001, "the target showed {seen} rows");
        if seen == 20_001 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not applied: {}",
            sluice.stderr()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(target.exec("SELECT pad FROM big WHERE id = 0"), "done");
    assert!(
        sluice
            .stderr()
            .contains("applying it in parts inside one destination transaction"),
        "{}",
        sluice.stderr()
    );
    assert_eq!(sluice.stop(), Some(0), "{}", sluice.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catching_up_across_ddl_reads_rows_with_the_columns_they_were_written_with() {
    let db = MariaDb::create();
    db.exec("CREATE TABLE t (id int PRIMARY KEY, a int, b varchar(5))");
    let mut sluice = Sluice::new(&mysql_source_config(&db, ""));
    sluice.start();
    wait_streaming(&sluice).await;
    db.exec("INSERT INTO t VALUES (1, 1, 'x')");
    let topic = format!("src.{}.t", db.name);
    wait_for(Duration::from_secs(20), "the first row", || {
        events(&sluice.records(&topic)).len() == 1
    })
    .await;
    assert_eq!(sluice.stop(), Some(0));
    // While sluice is down: two schema changes, rows under each.
    db.exec("ALTER TABLE t ADD COLUMN c int");
    db.exec("INSERT INTO t VALUES (2, 2, 'y', 22)");
    db.exec("ALTER TABLE t DROP COLUMN a");
    db.exec("INSERT INTO t VALUES (3, 'z', 33)");
    sluice.start();
    wait_for(Duration::from_secs(20), "three rows", || {
        events(&sluice.records(&topic)).len() >= 3
    })
    .await;
    let afters: Vec<Json> = events(&sluice.records(&topic))
        .iter()
        .map(|e| e["after"].clone())
        .collect();
    assert_eq!(
        afters[1],
        json!({"id": 2, "a": 2, "b": "y", "c": 22}),
        "the row as written, though `a` is gone now"
    );
    assert_eq!(afters[2], json!({"id": 3, "b": "z", "c": 33}));
    assert_eq!(sluice.stop(), Some(0), "{}", sluice.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_killed_three_times_resumes_after_the_last_keys_and_reads_each_row_once() {
    let db = MariaDb::create();
    db.exec("CREATE TABLE c (id int PRIMARY KEY, n int NOT NULL)");
    db.exec("INSERT INTO c SELECT seq, 0 FROM seq_1_to_200000");
    let mut sluice = Sluice::new(&mysql_source_config(
        &db,
        "snapshot_chunk_rows = 500\nsnapshot_parallelism = 2",
    ));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (name, stop) = (db.name.clone(), std::sync::Arc::clone(&stop));
        std::thread::spawn(move || {
            let db = MariaDb { name };
            let mut rng = Rng::new(5);
            let mut next = 1_000_000;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                db.exec(&format!(
                    "UPDATE c SET n = n + 1 WHERE id IN ({}, {}); DELETE FROM c WHERE id = {}; \
                     INSERT INTO c VALUES ({next}, 0)",
                    1 + rng.below(200_000),
                    1 + rng.below(200_000),
                    1 + rng.below(200_000),
                ));
                next += 1;
            }
            std::mem::forget(db);
        })
    };
    let topic = format!("src.{}.c", db.name);
    let mut seen = 0;
    let mut stderr = String::new();
    for _ in 0..3 {
        sluice.start();
        wait_for(
            Duration::from_secs(60),
            "the snapshot to write more rows",
            || sluice_integration_tests::logged(&sluice, &topic) > seen,
        )
        .await;
        sluice.kill();
        stderr.push_str(&sluice.stderr());
        seen = sluice_integration_tests::logged(&sluice, &topic);
    }
    sluice.start();
    wait_streaming(&sluice).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().expect("the writer ran");
    stderr.push_str(&sluice.stderr());
    assert!(
        stderr.contains("resuming the interrupted snapshot"),
        "no run resumed a snapshot:\n{stderr}"
    );
    let expected = rows_of_c(&db);
    wait_for(
        Duration::from_secs(120),
        "the log to fold to the table",
        || fold_rows(&events(&sluice.records(&topic)), "id") == expected,
    )
    .await;
    let mut reads: BTreeMap<String, u32> = BTreeMap::new();
    for event in events(&sluice.records(&topic))
        .iter()
        .filter(|e| e["op"] == "r")
    {
        *reads.entry(event["after"]["id"].to_string()).or_default() += 1;
    }
    let twice: Vec<_> = reads.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(twice.is_empty(), "rows read into the log twice: {twice:?}");
    assert_eq!(sluice.stop(), Some(0), "{}", sluice.stderr());
}
