//! Transforms on a database sink, end to end: a chain (filter, route, columns, mask, set,
//! unwrap with soft deletes) reshapes what a Postgres source sends into the table a new
//! service wants; a transform naming a column the table lacks stops that sink alone, with the
//! sink, transform and column named; bad transform configs are refused by `sluice check`.

use std::collections::BTreeMap;
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value as Json;
use sha2::Sha256;
use sluice_integration_tests::{
    free_port, http_get, jsonl_sink, sluice_command, source_config, wait_for, Sluice, TestDb,
};

const SALT: &str = "twenty-bytes-of-salt";

fn hashed(text: &str) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(SALT.as_bytes()).expect("any key");
    mac.update(text.as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

const CHAIN: &str = "\
[[sinks.transforms]]\ntype = \"filter\"\nwhen = \"__op = 'd' or status != 'spam'\"\n\
[[sinks.transforms]]\ntype = \"route\"\nregex = 'src\\.public\\.(.*)'\nreplacement = \"src.public.crm_$1\"\n\
[[sinks.transforms]]\ntype = \"columns\"\nexclude = [\"ssn\"]\nrename = { name = \"full_name\" }\n\
[[sinks.transforms]]\ntype = \"mask\"\ncolumns = [\"email\"]\nsalt_file = \"{dir}/salt\"\n\
[[sinks.transforms]]\ntype = \"set\"\nfields = { origin = \"${table}\", last_op = \"${op}\" }\n\
[[sinks.transforms]]\ntype = \"unwrap\"\ndeletes = \"flag\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_of_transforms_reshapes_rows_into_a_postgres_target() {
    let source = TestDb::create();
    let target = TestDb::create();
    source.exec(
        "CREATE TABLE customers (id int PRIMARY KEY, name text, email text, ssn text, status text)",
    );
    let mut sluice = Sluice::new(&format!(
        "{}[[sinks]]\nname = \"crm\"\nkind = \"postgres\"\nurl = \"{}\"\ntopics = [\"src.public.*\"]\n{CHAIN}",
        source_config(&source, ""),
        target.url()
    ));
    std::fs::write(sluice.path("salt"), format!("{SALT}\n")).unwrap();
    sluice.start();
    source.wait_for_streaming().await;
    let mut sql = String::from("BEGIN;");
    for id in 0..60 {
        let status = if id % 15 == 7 { "spam" } else { "active" };
        sql.push_str(&format!(
            "INSERT INTO customers VALUES ({id}, 'Name {id}', 'c{id}@example.com', '000-{id}', '{status}');"
        ));
    }
    sql.push_str(
        "COMMIT; \
         UPDATE customers SET email = 'new' || id || '@example.com', status = 'vip' WHERE id % 4 = 0 AND status <> 'spam'; \
         DELETE FROM customers WHERE id % 9 = 5;",
    );
    source.exec(&sql);

    // What the service's table must hold: every customer that was never spam, the deleted
    // ones flagged and kept as they were last seen.
    let deleted: Vec<i64> = (0..60).filter(|id| id % 9 == 5).collect();
    let mut expected = BTreeMap::new();
    for id in (0..60i64).filter(|id| id % 15 != 7) {
        let updated = id % 4 == 0;
        let email = if updated {
            format!("new{id}@example.com")
        } else {
            format!("c{id}@example.com")
        };
        let gone = deleted.contains(&id);
        // `set` runs before `unwrap` turns the delete into a flagged update: it saw a `d`.
        let last_op = if gone {
            "d"
        } else if updated {
            "u"
        } else {
            "c"
        };
        expected.insert(
            id,
            format!(
                // `set` runs after `route`: the table it names is the routed one.
                "{id}|Name {id}|{}|{}|public.crm_customers|{last_op}|{gone}",
                hashed(&email),
                if updated { "vip" } else { "active" },
            ),
        );
    }
    let query = "SELECT string_agg(concat_ws('|', id, full_name, email, status, origin, last_op, __deleted), ',' ORDER BY id) \
                 FROM public.crm_customers";
    let read = || -> BTreeMap<i64, String> {
        if target.exec("SELECT to_regclass('public.crm_customers') IS NULL") == "t" {
            return BTreeMap::new();
        }
        target
            .exec(query)
            .split(',')
            .filter(|row| !row.is_empty())
            .map(|row| {
                (
                    row.split('|').next().unwrap().parse().unwrap(),
                    row.to_owned(),
                )
            })
            .collect()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut got = read();
    while got != expected && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        got = read();
    }
    assert_eq!(got, expected, "{}", sluice.stderr());
    let columns = target.exec(
        "SELECT string_agg(column_name, ',' ORDER BY ordinal_position) FROM information_schema.columns \
         WHERE table_name = 'crm_customers'",
    );
    assert_eq!(
        columns, "id,full_name,email,status,last_op,origin,__deleted",
        "ssn is never sent"
    );
    assert_eq!(
        target.exec("SELECT to_regclass('public.customers') IS NULL"),
        "t"
    );
    assert_eq!(sluice.stop(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transform_naming_a_missing_column_stops_its_sink_alone() {
    let source = TestDb::create();
    source.exec("CREATE TABLE t (id int PRIMARY KEY, v int)");
    let port = free_port();
    let mut sluice = Sluice::new(&format!(
        "[api]\nlisten = \"127.0.0.1:{port}\"\n\n{}{}\
         [[sinks]]\nname = \"svc\"\nkind = \"http\"\nurl = \"http://127.0.0.1:9/\"\ntopics = [\"src.public.t\"]\n\
         [[sinks.transforms]]\ntype = \"columns\"\ninclude = [\"id\"]\n\
         [[sinks.transforms]]\ntype = \"filter\"\nwhen = \"v > 1\"\n",
        source_config(&source, ""),
        jsonl_sink("\"src.public.t\""),
    ));
    sluice.start();
    source.wait_for_streaming().await;
    source.exec("INSERT INTO t VALUES (1, 5)");
    wait_for(
        Duration::from_secs(30),
        "/health to report the sink",
        || http_get(port, "/health").0.contains("503"),
    )
    .await;
    let (_, body) = http_get(port, "/health");
    assert!(
        body.contains("sink svc failed")
            && body.contains("transforms[1] (filter): when: no column `v` (table public.t, topic src.public.t; its columns: id)"),
        "{body}"
    );
    // The other sink goes on.
    wait_for(
        Duration::from_secs(30),
        "the JSONL sink to write the row",
        || std::fs::read_to_string(sluice.path("out.jsonl")).is_ok_and(|t| t.contains("\"v\":5")),
    )
    .await;
    assert!(sluice.is_running(), "{}", sluice.stderr());
    // Now that the log knows the table, `check` refuses the config before a run meets it.
    let (code, out) = sluice_command(&["check"], &sluice.config);
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("sinks[1].transforms[1] (filter): when: no column `v` (table public.t, topic src.public.t; its columns: id) (sink svc)"),
        "{out}"
    );
    // A stop after a failed sink says so in its exit code.
    assert_eq!(sluice.stop(), Some(1));
}

/// Transforms on the JSONL sink: its lines are the transformed changes (here filtered rows
/// without a column); a change a transform rejects goes to the dead-letter topic and the rest
/// flow; a restart delivers nothing again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jsonl_sink_writes_transformed_changes_and_dead_letters_what_a_transform_rejects() {
    let source = TestDb::create();
    source.exec("CREATE TABLE t (id int PRIMARY KEY, v text, secret text)");
    let config = format!(
        "{}{}dead_letter_topic = \"file.dead\"\n\
         [[sinks.transforms]]\ntype = \"filter\"\nwhen = \"__op != 'd' and v > 1\"\n\
         [[sinks.transforms]]\ntype = \"columns\"\nexclude = [\"secret\"]\n\
         [[sinks.transforms]]\ntype = \"unwrap\"\n",
        source_config(&source, ""),
        jsonl_sink("\"src.public.t\""),
    );
    let mut sluice = Sluice::new(&config);
    sluice.start();
    source.wait_for_streaming().await;
    // Row 3's v holds no number to compare with 1: the filter rejects that change.
    source.exec(
        "INSERT INTO t VALUES (1, '1', 's1'), (2, '7', 's2'), (3, 'many', 's3'), (4, '9', 's4'); \
         DELETE FROM t WHERE id = 4",
    );
    let out = sluice.path("out.jsonl");
    let lines = || -> Vec<Json> {
        std::fs::read_to_string(&out)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    wait_for(
        Duration::from_secs(30),
        "two lines and a dead letter",
        || lines().len() == 2 && sluice.records("file.dead").len() == 1,
    )
    .await;
    assert_eq!(
        lines(),
        [
            serde_json::json!({"id": 2, "v": "7"}),
            serde_json::json!({"id": 4, "v": "9"})
        ]
    );
    let dead = sluice.records("file.dead");
    assert_eq!(dead[0].1["after"]["id"], 3, "{dead:?}");
    assert_eq!(sluice.stop(), Some(0), "{}", sluice.stderr());
    sluice.start();
    source.exec("INSERT INTO t VALUES (5, '5', 's5')");
    wait_for(Duration::from_secs(30), "the new row", || {
        lines().len() == 3
    })
    .await;
    assert_eq!(lines()[2], serde_json::json!({"id": 5, "v": "5"}));
    assert_eq!(sluice.stop(), Some(0), "{}", sluice.stderr());
}

#[test]
fn check_refuses_transforms_that_cannot_work() {
    let cases = [
        ("type = \"route\"\nregex = \"(a\"\nreplacement = \"x\"", "sinks[0].transforms[0] (route): regex: regex parse error"),
        ("type = \"route\"\nregex = \"a(.*)\"\nreplacement = \"$2\"", "sinks[0].transforms[0] (route): replacement: the regex has no group 2 (it has 1)"),
        ("type = \"filter\"\nwhen = \"v >\"", "sinks[0].transforms[0] (filter): when: expected a column name or a value, found the end of the condition"),
        ("type = \"mask\"\ncolumns = [\"email\"]", "sinks[0].transforms[0] (mask): with = \"hash\" needs a salt"),
        ("type = \"mask\"\ncolumns = [\"email\"]\nsalt_file = \"missing-salt\"", "sinks[0].transforms[0] (mask): salt_file"),
        ("type = \"set\"\nfields = { a = \"${nope}\" }", "sinks[0].transforms[0] (set): fields.a: `${nope}` is not one of"),
        ("type = \"uppercase\"", "unknown variant `uppercase`"),
    ];
    for (transform, expected) in cases {
        let sluice = Sluice::new(&format!(
            "[[sinks]]\nname = \"svc\"\nkind = \"http\"\nurl = \"http://127.0.0.1:9/\"\ntopics = [\"t\"]\n\
             [[sinks.transforms]]\n{transform}\n"
        ));
        let (code, out) = sluice_command(&["check"], &sluice.config);
        assert_eq!(code, Some(2), "{transform}: {out}");
        assert!(out.contains(expected), "{transform}:\n{out}");
    }
}
