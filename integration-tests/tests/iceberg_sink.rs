//! The Iceberg sink end to end against the Apache Iceberg REST catalog, checked by readers
//! that are not sluice (pyiceberg's scan, DuckDB's iceberg extension): Postgres tables
//! (TOASTed values, a composite key, a table without a key) kept through a writer workload
//! (inserts, updates that leave TOASTed values unchanged, deletes, key changes, a truncate,
//! an added column) and three `kill -9`s of sluice equal their source row for row, and the
//! changelog tables hold every change of the log once; the Parquet changelog sink, under the
//! same kills, holds every change once and replayed in DuckDB gives the tables (pyarrow reads
//! it too). And a crash between writing a commit's
//! files and committing them loses nothing, duplicates nothing, and the files it left are
//! removed at the next start. Each runs twice: files in local directories, and on S3 (moto).
//! Keys for S3 come from the config, or from an instance's or container's credentials endpoint
//! (a stand-in on loopback that answers as EC2's and ECS's do).

use std::time::{Duration, Instant};

use serde_json::Value as Json;
use sluice_integration_tests::iceberg::{Iceberg, Reader, Storage};
use sluice_integration_tests::warehouse::{write, TABLES};
use sluice_integration_tests::{
    sluice_command, sluice_command_env, source_config, wait_for, Rng, Sluice, TestDb,
};

/// The rows of a Postgres query of `json_build_array(...)`, parsed and sorted.
fn source_rows(db: &TestDb, select: &str, table: &str) -> Vec<Json> {
    let mut rows: Vec<Json> = db
        .exec(&format!(
            "SELECT json_build_array({select})::text FROM {table}"
        ))
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_str(l).expect("json row"))
        .collect();
    rows.sort_by_key(|row| row.to_string());
    rows
}

const ITEMS_PG: &str = "id, name, price::text, tags, md5(doc), extra";
const ITEMS_ICEBERG: &str = "id,name,price,tags,md5:doc,extra";

/// Waits until `reader` sees `table` equal to `expected()`; on timeout, shows what differs.
async fn wait_equal(
    ice: &Iceberg,
    reader: Reader,
    table: &str,
    columns: &str,
    expected: impl Fn() -> Vec<Json>,
    timeout: Duration,
) {
    let deadline = Instant::now() + timeout;
    loop {
        let want = expected();
        // A column the table lacks yet (a sink catching up adds it with the source's new
        // version) reads as no rows until the deadline; any other failure fails at once.
        let have = match ice.try_rows(reader, table, columns) {
            Ok(rows) => rows.unwrap_or_default(),
            Err(err)
                if (err.contains("Could not find column") || err.contains("Referenced column"))
                    && Instant::now() <= deadline =>
            {
                Vec::new()
            }
            Err(err) => panic!("{err}"),
        };
        if want == have {
            return;
        }
        if Instant::now() > deadline {
            let missing: Vec<_> = want.iter().filter(|r| !have.contains(r)).take(3).collect();
            let extra: Vec<_> = have.iter().filter(|r| !want.contains(r)).take(3).collect();
            panic!(
                "{table} read by {reader:?}: {} rows at the source, {} in Iceberg; only at the \
                 source {missing:?}, only in Iceberg {extra:?}",
                want.len(),
                have.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_three_times_under_a_writer_leaves_iceberg_and_the_parquet_changelog_equal_to_the_source(
) {
    kill_9_three_times(Storage::Local).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_s3_kill_9_three_times_leaves_iceberg_and_the_parquet_changelog_equal_to_the_source() {
    kill_9_three_times(Storage::S3).await;
}

async fn kill_9_three_times(storage: Storage) {
    let ice = Iceberg::new(storage);
    let source = TestDb::create();
    source.exec(TABLES);
    let sink = ice.sink_config(
        "lake",
        "[\"src.public.*\"]",
        "mode = \"both\"\ncommit_interval_ms = 700\nkeep_snapshots = 10",
    );
    let (files, parquet_path) =
        ice.parquet_sink_config("files", "[\"src.public.*\"]", "roll_interval_ms = 500");
    let mut sluice = Sluice::new(&format!("{}{sink}{files}", source_config(&source, "")));
    sluice.start();
    source.wait_for_streaming().await;
    let writer = sluice_core::task::spawn_in_span(write(source.url(), 24));
    let mut rng = Rng::new(0x1ce);
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(2500 + rng.below(3000))).await;
        sluice.kill();
        sluice.start();
    }
    writer.await.unwrap();

    for reader in [Reader::PyIceberg, Reader::DuckDb] {
        wait_equal(
            &ice,
            reader,
            "items",
            ITEMS_ICEBERG,
            || source_rows(&source, ITEMS_PG, "items"),
            Duration::from_secs(120),
        )
        .await;
        wait_equal(
            &ice,
            reader,
            "orders",
            "a,b,qty",
            || source_rows(&source, "a, b, qty", "orders"),
            Duration::from_secs(60),
        )
        .await;
    }
    // Old snapshots expired along the way: the metadata keeps about keep_snapshots.
    let metadata = std::process::Command::new("curl")
        .args(["-sS", "-m", "10"])
        .arg(format!(
            "{}/v1/namespaces/{}/tables/items",
            sluice_integration_tests::iceberg::CATALOG_URL,
            ice.namespace
        ))
        .output()
        .unwrap();
    let metadata: Json = serde_json::from_slice(&metadata.stdout).unwrap();
    let snapshots = metadata["metadata"]["snapshots"].as_array().unwrap().len();
    assert!(
        (2..=11).contains(&snapshots),
        "{snapshots} snapshots kept with keep_snapshots = 10"
    );
    // The commits' manifests were merged along the way (and the readers above read through):
    // each commit carries one or two more, and 32 carried are merged, so past 33 commits a
    // merged manifest exists. (A slow run, a debug build on S3, may commit fewer times.)
    let merged = ice
        .table_files("items", "metadata")
        .iter()
        .any(|name| name.contains("m-merged"));
    let commits = metadata["metadata"]["last-sequence-number"]
        .as_u64()
        .unwrap_or(0);
    if commits >= 34 {
        assert!(merged, "no merged manifest after {commits} commits");
    } else {
        eprintln!(
            "{commits} commits to items: too few to need a merged manifest (merged: {merged})"
        );
    }
    // Each change of the log once in the changelog, whatever the kills interrupted.
    let in_log = sluice
        .records("src.public.items")
        .iter()
        .filter(|(_, value)| !value.is_null())
        .count();
    let changes = ice
        .rows(
            Reader::DuckDb,
            "items_changes",
            "_sluice_partition,_sluice_offset",
        )
        .expect("items_changes");
    let mut distinct = changes.clone();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        changes.len(),
        "a change twice in the changelog"
    );
    assert_eq!(
        changes.len(),
        in_log,
        "changelog rows against the log's records"
    );
    // A table without a key: its changelog only, every insert once.
    assert!(
        ice.rows(Reader::PyIceberg, "events", "x").is_none(),
        "no current-state table for a table without a key"
    );
    let inserted = ice
        .rows(Reader::PyIceberg, "events_changes", "_sluice_op,x")
        .expect("events_changes");
    assert_eq!(
        inserted,
        source_rows(&source, "'c', x", "events"),
        "every insert of events once"
    );

    // The Parquet changelog: every change of the log once, and replayed, the tables.
    let changes = parquet_path.replace("{dir}", &sluice.dir.path().display().to_string());
    let duckdb = |sql: &str| ice.duckdb(sql);
    let scan = |table: &str| {
        format!("read_parquet('{changes}/{table}/*/*.parquet', hive_partitioning = true, union_by_name = true)")
    };
    wait_for(
        Duration::from_secs(60),
        "the Parquet files to hold every items change",
        || {
            duckdb(&format!("SELECT count(*) FROM {}", scan("items")))[0][0].as_u64()
                == Some(in_log as u64)
        },
    )
    .await;
    assert_eq!(
        duckdb(&format!(
            "SELECT count(*) - count(DISTINCT (_sluice_partition, _sluice_offset)) FROM {}",
            scan("items")
        ))[0][0],
        0,
        "a change twice in the Parquet files"
    );
    let replay = |table: &str, key: &str, columns: &str| {
        duckdb(&format!(
            "WITH c AS (SELECT * FROM {scan}), \
             t AS (SELECT coalesce(max(_sluice_offset), -1) AS at FROM c WHERE _sluice_op = 't'), \
             latest AS (SELECT *, row_number() OVER (PARTITION BY {key} ORDER BY _sluice_offset DESC) AS n \
                        FROM c, t WHERE _sluice_offset > t.at AND _sluice_op != 't') \
             SELECT [{columns}] FROM latest WHERE n = 1 AND _sluice_op != 'd'",
            scan = scan(table)
        ))
        .into_iter()
        .map(|row| row[0].clone())
        .collect::<Vec<Json>>()
    };
    let mut items = replay("items", "id", "id::VARCHAR, name, price::VARCHAR");
    items.sort_by_key(|r| r.to_string());
    assert_eq!(
        items,
        source_rows(&source, "id::text, name, price::text", "items"),
        "the items changelog replayed in DuckDB"
    );
    let mut orders = replay("orders", "a, b", "a::VARCHAR, b, qty::VARCHAR");
    orders.sort_by_key(|r| r.to_string());
    assert_eq!(
        orders,
        source_rows(&source, "a::text, b, qty::text", "orders"),
        "the orders changelog (truncated once) replayed in DuckDB"
    );
    assert_eq!(
        ice.pyarrow_rows(&format!("{changes}/items")),
        in_log as u64,
        "pyarrow reads the items files"
    );
    sluice.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_writing_files_and_committing_them_loses_and_repeats_nothing() {
    crash_before_commit(Storage::Local).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_s3_a_crash_between_writing_files_and_committing_them_loses_and_repeats_nothing() {
    crash_before_commit(Storage::S3).await;
}

async fn crash_before_commit(storage: Storage) {
    let ice = Iceberg::new(storage);
    let source = TestDb::create();
    source.exec(
        "CREATE TABLE items (id int PRIMARY KEY, name text, price numeric(10,2), tags text[], \
         doc text, extra int);
         INSERT INTO items SELECT g, 'item ' || g, g * 1.25, ARRAY['a'], md5(g::text), NULL
           FROM generate_series(1, 500) g;",
    );
    let sink = ice.sink_config("lake", "[\"src.public.*\"]", "commit_interval_ms = 300");
    let mut sluice = Sluice::new(&format!("{}{sink}", source_config(&source, "")));
    // The second commit's files are written, then the process dies before the catalog
    // commit.
    sluice.start_with_env(&[("SLUICE_TEST_ABORT_BEFORE_ICEBERG_COMMIT", "2")]);
    wait_for(Duration::from_secs(60), "the first commit", || {
        ice.rows(Reader::PyIceberg, "items", "id")
            .is_some_and(|rows| rows.len() == 500)
    })
    .await;
    source.exec(
        "UPDATE items SET name = 'changed' WHERE id <= 100; DELETE FROM items WHERE id > 450;",
    );
    wait_for(
        Duration::from_secs(60),
        "sluice to abort before its second commit",
        || !sluice.is_running(),
    )
    .await;
    assert!(
        sluice.stderr().contains("aborting before commit 2"),
        "{}",
        sluice.stderr()
    );
    let leftovers = |ice: &Iceberg| -> Vec<String> {
        ice.table_files("items", "data")
            .into_iter()
            .filter(|name| name.starts_with("0000000002.lake."))
            .collect()
    };
    let orphans = leftovers(&ice);
    assert!(
        !orphans.is_empty(),
        "the aborted commit wrote its files first"
    );
    // Not committed: the readers still see the first commit.
    assert_eq!(
        ice.rows(Reader::DuckDb, "items", "name")
            .unwrap()
            .iter()
            .filter(|r| r[0] == "changed")
            .count(),
        0
    );

    sluice.kill(); // reaps the aborted process
    sluice.start();
    for reader in [Reader::PyIceberg, Reader::DuckDb] {
        wait_equal(
            &ice,
            reader,
            "items",
            ITEMS_ICEBERG,
            || source_rows(&source, ITEMS_PG, "items"),
            Duration::from_secs(60),
        )
        .await;
    }
    // Removed once a commit of the new process has landed (the aborted one can then never
    // land): after the replayed rows' commit.
    wait_for(
        Duration::from_secs(60),
        "the aborted commit's files to be removed",
        || {
            sluice
                .stderr()
                .contains("removed files an interrupted commit left")
        },
    )
    .await;
    let said = sluice.stderr();
    let found = said
        .find("found files an interrupted commit left")
        .expect("the leftovers are reported at open");
    let removed = said
        .find("removed files an interrupted commit left")
        .expect("waited for above");
    assert!(found < removed, "{said}");
    let now = leftovers(&ice);
    assert!(
        orphans.iter().all(|name| !now.contains(name)),
        "the aborted commit's files are gone: {orphans:?} still in {now:?}"
    );
    sluice.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_mistakes_are_named_with_what_to_do() {
    let ice = Iceberg::new(Storage::S3);
    let source = TestDb::create();
    source.exec("CREATE TABLE t (id int PRIMARY KEY)");
    let (files, _) = ice.parquet_sink_config("files", "[\"src.public.*\"]", "");
    let check = |sink: &str| {
        let sluice = Sluice::new(&format!("{}{sink}", source_config(&source, "")));
        sluice_command(&["check", "--connect"], &sluice.config)
    };
    let (code, out) = check(&files);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("S3 at http://127.0.0.1:4566"), "{out}");

    let missing = files.replace("s3://sluice-test/", "s3://no-such-bucket/");
    let (code, out) = check(&missing);
    assert_ne!(code, Some(0), "{out}");
    assert!(out.contains("NoSuchBucket"), "{out}");
    assert!(out.contains("create the bucket"), "{out}");

    let keyless = missing
        .lines()
        .filter(|line| !line.starts_with("s3 = "))
        .collect::<Vec<_>>()
        .join("\n");
    let sluice = Sluice::new(&format!("{}{keyless}", source_config(&source, "")));
    let (code, out) = sluice_command_env(
        &["check", "--connect"],
        &sluice.config,
        &[("AWS_ACCESS_KEY_ID", ""), ("AWS_SECRET_ACCESS_KEY", "")],
    );
    assert_ne!(code, Some(0), "{out}");
    assert!(out.contains("no S3 credentials"), "{out}");
    assert!(out.contains("AWS_ACCESS_KEY_ID"), "{out}");
}

/// Answers as EC2's instance metadata service (IMDSv2) and an ECS/EKS container credentials
/// endpoint do, on loopback; prints its port, then one line per request it answered.
const METADATA: &str = r#"
import http.server, json, sys, datetime
TOKEN = sys.argv[1]
class H(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def answer(self, code, body):
        self.send_response(code); self.send_header("content-length", str(len(body))); self.end_headers()
        self.wfile.write(body.encode()); print(self.command, self.path, code, flush=True)
    def creds(self):
        expires = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=6)
        return json.dumps({"Code": "Success", "AccessKeyId": "ASIAFROMROLE", "SecretAccessKey": "role-secret",
                           "Token": "role-session", "Expiration": expires.strftime("%Y-%m-%dT%H:%M:%SZ")})
    def do_PUT(self):
        if self.path == "/latest/api/token" and self.headers.get("x-aws-ec2-metadata-token-ttl-seconds"):
            return self.answer(200, "imds-session")
        self.answer(400, "bad")
    def do_GET(self):
        if self.path.startswith("/latest/"):
            if self.headers.get("x-aws-ec2-metadata-token") != "imds-session":
                return self.answer(401, "")
            if self.path == "/latest/meta-data/iam/security-credentials/":
                return self.answer(200, "sluice-role\n")
            if self.path == "/latest/meta-data/iam/security-credentials/sluice-role":
                return self.answer(200, self.creds())
        if self.path == "/container/creds":
            if self.headers.get("authorization") != TOKEN:
                return self.answer(401, "")
            return self.answer(200, self.creds())
        self.answer(404, "")
server = http.server.HTTPServer(("127.0.0.1", 0), H)
print(server.server_address[1], flush=True)
server.serve_forever()
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_keys_come_from_a_profile_an_instance_role_or_a_container_endpoint() {
    use std::io::BufRead;
    let ice = Iceberg::new(Storage::S3);
    let source = TestDb::create();
    source.exec("CREATE TABLE t (id int PRIMARY KEY)");
    let (files, _) = ice.parquet_sink_config("files", "[\"src.public.*\"]", "");
    // The sink names the store but no keys.
    let keyless: String = files
        .lines()
        .map(|line| {
            if line.starts_with("s3 = ") {
                "s3 = { endpoint = \"http://127.0.0.1:4566\", region = \"us-east-1\" }"
            } else {
                line
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let sluice = Sluice::new(&format!("{}{keyless}", source_config(&source, "")));
    let token_file = sluice.path("container-token");
    std::fs::write(&token_file, "container-secret-token\n").unwrap();
    /// Stops the stand-in however the test ends.
    struct Server(std::process::Child);
    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut server = Server(
        std::process::Command::new(sluice_integration_tests::test_python())
            .args(["-c", METADATA, "container-secret-token"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start the metadata stand-in"),
    );
    let mut answers = std::io::BufReader::new(server.0.stdout.take().unwrap()).lines();
    let port = answers.next().unwrap().unwrap();
    let endpoint = format!("http://127.0.0.1:{port}");
    let no_keys = [("AWS_ACCESS_KEY_ID", ""), ("AWS_SECRET_ACCESS_KEY", "")];
    // No keys, and the instance metadata service asked at the stand-in's address.
    let instance = [
        no_keys[0],
        no_keys[1],
        ("AWS_EC2_METADATA_DISABLED", ""),
        ("AWS_EC2_METADATA_SERVICE_ENDPOINT", endpoint.as_str()),
    ];

    // Keys in an AWS profile come first (the stand-in is not asked: its first answers below
    // are the instance role's); a profile named but not there is said, not passed over.
    let credentials = sluice.path("aws-credentials");
    std::fs::write(
        &credentials,
        "[default]\naws_access_key_id = other\naws_secret_access_key = other\n\n[lake]\n\
         aws_access_key_id = testing\naws_secret_access_key = testing\n",
    )
    .unwrap();
    let credentials = credentials.display().to_string();
    let mut profile = instance.to_vec();
    profile.extend([
        ("AWS_SHARED_CREDENTIALS_FILE", credentials.as_str()),
        ("AWS_PROFILE", "lake"),
    ]);
    let (code, out) = sluice_command_env(&["check", "--connect"], &sluice.config, &profile);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("S3 at http://127.0.0.1:4566"), "{out}");
    profile.last_mut().unwrap().1 = "prod";
    let (code, out) = sluice_command_env(&["check", "--connect"], &sluice.config, &profile);
    assert_ne!(code, Some(0), "{out}");
    assert!(
        out.contains("AWS_PROFILE=prod") && out.contains(&credentials),
        "{out}"
    );

    // An EC2 instance's role, through IMDSv2.
    let (code, out) = sluice_command_env(&["check", "--connect"], &sluice.config, &instance);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("S3 at http://127.0.0.1:4566"), "{out}");
    let asked: Vec<String> = (0..3).map(|_| answers.next().unwrap().unwrap()).collect();
    assert_eq!(
        asked,
        [
            "PUT /latest/api/token 200",
            "GET /latest/meta-data/iam/security-credentials/ 200",
            "GET /latest/meta-data/iam/security-credentials/sluice-role 200",
        ]
    );

    // A container's endpoint, with the token file EKS Pod Identity mounts.
    let full_uri = format!("{endpoint}/container/creds");
    let token_path = token_file.display().to_string();
    let mut env = no_keys.to_vec();
    env.extend([
        ("AWS_CONTAINER_CREDENTIALS_FULL_URI", full_uri.as_str()),
        (
            "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
            token_path.as_str(),
        ),
    ]);
    let (code, out) = sluice_command_env(&["check", "--connect"], &sluice.config, &env);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(answers.next().unwrap().unwrap(), "GET /container/creds 200");
    // A wrong token is refused, and the error says by whom.
    std::fs::write(&token_file, "stale\n").unwrap();
    let (code, out) = sluice_command_env(&["check", "--connect"], &sluice.config, &env);
    assert_ne!(code, Some(0), "{out}");
    assert!(out.contains("no S3 credentials"), "{out}");
    assert!(
        out.contains(&format!("the container credentials endpoint at {full_uri}")),
        "{out}"
    );
    assert!(out.contains("401"), "{out}");
    drop(server);

    // No instance service where it is looked for: said, with what else would do.
    let (code, out) = sluice_command_env(&["check", "--connect"], &sluice.config, &instance);
    assert_ne!(code, Some(0), "{out}");
    assert!(out.contains("no S3 credentials"), "{out}");
    assert!(out.contains("AWS_ACCESS_KEY_ID"), "{out}");
    assert!(
        out.contains(&format!("the EC2 instance metadata service at {endpoint}")),
        "{out}"
    );
}
