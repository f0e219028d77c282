//! Harness for end-to-end tests against the real servers `dev/services up` starts on 127.0.0.1:
//! a fresh database per test, the `sluice` binary run as a child process on a temp config, the
//! log read back through sluice-log, and a notify-or-timeout wait.

pub mod clickhouse;
pub mod compliance;
pub mod iceberg;
pub mod kafka;
mod private_servers;
pub mod receiver;
mod requests;
pub use requests::{http_get, http_request};
pub mod search;
pub mod warehouse;

pub use private_servers::{PrivateCluster, PrivateMariaDb};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::sync::Once;
use std::time::{Duration, Instant};

use serde_json::Value as Json;
use sluice_schema_registry::avro::decode::is_framed;
use sluice_schema_registry::avro::AvroDecoder;
use sluice_schema_registry::registry::store::LogStore;
use sluice_schema_registry::registry::Registry;

pub const PG_URL: &str = "postgres://postgres@127.0.0.1:5432";

/// The `sluice` binary, built once per test run.
pub fn sluice_bin() -> PathBuf {
    static BUILD: Once = Once::new();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf();
    BUILD.call_once(|| {
        let status = Command::new(env!("CARGO"))
            // The same command as dev/test's build step: with other arguments cargo would
            // resolve features differently and rebuild the binary while a test waits.
            .args(["build", "--quiet", "--workspace", "--bins", "--locked"])
            .current_dir(&root)
            .status()
            .expect("run cargo build");
        assert!(status.success(), "building the sluice binary failed");
    });
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    target.join("debug").join("sluice")
}

/// A name no other test (or earlier run) uses.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{prefix}_{}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        nanos % 100_000
    )
}

/// Runs `sql` in database `db` through psql (for threads that outlive a borrow of a `TestDb`).
pub fn psql(db: &str, sql: &str) -> std::process::Output {
    Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            db,
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            sql,
        ])
        .output()
        .expect("run psql (is postgresql-client installed? run dev/services up)")
}

/// SQL as the postgres superuser in database `postgres` (roles and databases are
/// cluster-wide); returns its output. Panics with psql's message on failure.
pub fn admin(sql: &str) -> String {
    let out = psql("postgres", sql);
    assert!(
        out.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// One source transaction that drops, adds, renames and retypes columns of `t (id int PRIMARY
/// KEY, a int, b text)` between its rows (for the database sinks' schema-change tests).
pub const MIGRATION_IN_ONE_TRANSACTION: &str = "BEGIN; \
    INSERT INTO t VALUES (1, 1, 'one'); \
    ALTER TABLE t DROP COLUMN b; \
    INSERT INTO t VALUES (2, 2); \
    ALTER TABLE t ADD COLUMN c text; \
    INSERT INTO t VALUES (3, 3, 'three'); \
    ALTER TABLE t RENAME COLUMN a TO a2; \
    INSERT INTO t VALUES (4, 4, 'four'); \
    ALTER TABLE t ALTER COLUMN a2 TYPE bigint; \
    INSERT INTO t VALUES (5, 5000000000, 'five'); \
    UPDATE t SET c = 'updated' WHERE id = 1; \
    COMMIT;";

/// A database of its own for one test; dropped (with its slots) when the test ends.
pub struct TestDb {
    pub name: String,
}

impl TestDb {
    pub fn create() -> TestDb {
        let name = unique_name("sluice_t");
        let out = psql("postgres", &format!("CREATE DATABASE {name}"));
        assert!(
            out.status.success(),
            "create database: {} (is Postgres up? run dev/services up)",
            String::from_utf8_lossy(&out.stderr)
        );
        TestDb { name }
    }

    pub fn url(&self) -> String {
        format!("{PG_URL}/{}", self.name)
    }

    pub async fn client(&self) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(&self.url(), tokio_postgres::NoTls)
            .await
            .expect("connect to the test database");
        sluice_core::task::spawn_in_span(connection);
        client
    }

    /// Waits until sluice streams from this database's slot (the tests name it after the
    /// database): the snapshot is done and changes from now on are streamed.
    pub async fn wait_for_streaming(&self) {
        // A slot is already `active` while CREATE_REPLICATION_SLOT waits for the transactions
        // running anywhere in the cluster to end; writes in that window land in the snapshot,
        // not the stream. Only a walsender that has run START_REPLICATION is `streaming`.
        let sql = format!(
            "SELECT count(*) FROM pg_replication_slots s JOIN pg_stat_replication r ON r.pid = s.active_pid \
             WHERE s.slot_name = '{}' AND r.state = 'streaming'",
            self.name
        );
        wait_for(
            Duration::from_secs(30),
            "sluice to stream from the slot",
            || self.exec(&sql) == "1",
        )
        .await;
    }

    /// Runs SQL through psql (for setup scripts with several statements).
    pub fn exec(&self, sql: &str) -> String {
        let out = psql(&self.name, sql);
        assert!(
            out.status.success(),
            "psql failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let slots = format!(
            "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE database = '{0}' AND active_pid IS NOT NULL; \
             SELECT pg_sleep(0.2); \
             SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = '{0}'",
            self.name
        );
        // On its own: statements sent together run as one transaction, which DROP DATABASE
        // refuses (so before, no test database was ever dropped here).
        let database = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        // With tests running in parallel the server may briefly refuse the connection (too
        // many clients) or a reconnecting client may race the drop: try again before giving up.
        for attempt in 0..5 {
            if psql("postgres", &slots).status.success()
                && psql("postgres", &database).status.success()
            {
                return;
            }
            #[allow(clippy::disallowed_methods)] // synchronous (Drop): back off between retries
            std::thread::sleep(Duration::from_millis(200 * (attempt + 1)));
        }
        eprintln!("could not drop the test database {}", self.name);
    }
}

/// A connection for a workload writer: commits do not wait for the WAL flush, so tests can
/// commit thousands of transactions quickly (each is still its own transaction).
pub async fn writer_client(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect the writer");
    sluice_core::task::spawn_in_span(connection);
    client
        .batch_execute("SET synchronous_commit = off")
        .await
        .expect("set synchronous_commit");
    client
}

pub const MARIADB_URL: &str = "mysql://root@127.0.0.1:3306";

/// A MariaDB database of its own for one test, dropped at the end.
pub struct MariaDb {
    pub name: String,
}

impl MariaDb {
    pub fn create() -> MariaDb {
        let name = unique_name("sluice_m");
        let db = MariaDb { name };
        db.exec_in(None, &format!("CREATE DATABASE {}", db.name));
        db
    }

    pub fn url(&self) -> String {
        format!("{MARIADB_URL}/{}", self.name)
    }

    /// Runs SQL with the `mariadb` client in this database; returns stdout (tab-separated rows).
    pub fn exec(&self, sql: &str) -> String {
        self.exec_in(Some(&self.name), sql)
    }

    fn exec_in(&self, database: Option<&str>, sql: &str) -> String {
        match self.try_exec_in(database, sql) {
            Ok(out) => out,
            Err(err) => panic!("mariadb failed: {err} (is MariaDB up? run dev/services up)"),
        }
    }

    /// Like `exec`, but a failing statement (a column that does not exist yet) is an `Err`
    /// with the client's message, for waits that poll until it succeeds.
    pub fn try_exec(&self, sql: &str) -> Result<String, String> {
        self.try_exec_in(Some(&self.name), sql)
    }

    fn try_exec_in(&self, database: Option<&str>, sql: &str) -> Result<String, String> {
        let mut command = Command::new("mariadb");
        command.args([
            "-h",
            "127.0.0.1",
            "-P",
            "3306",
            "-u",
            "root",
            "-N",
            "-B",
            "-r",
            "-e",
            sql,
        ]);
        if let Some(database) = database {
            command.arg(database);
        }
        let out = command.output().expect("run the mariadb client");
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        let _ = Command::new("mariadb")
            .args(["-h", "127.0.0.1", "-P", "3306", "-u", "root", "-e"])
            .arg(format!("DROP DATABASE IF EXISTS {}", self.name))
            .output();
    }
}

/// A `[[sources]]` entry named `src` capturing every table of the MariaDB database `db`, with a
/// replica server id of its own (two replicas with one id would evict each other).
pub fn mysql_source_config(db: &MariaDb, extra: &str) -> String {
    let server_id = 1000
        + db.name
            .bytes()
            .fold(7u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)))
            % 100_000;
    format!(
        "[[sources]]\nname = \"src\"\nkind = \"mysql\"\nurl = \"{MARIADB_URL}\"\ntables = [\"{}.*\"]\nserver_id = {server_id}\n{extra}\n",
        db.name
    )
}

/// Runs `command` to its end and returns its standard output; fails the test, with the
/// command's standard error, when it does not succeed. `what` names it in that message.
pub fn run_ok(command: &mut Command, what: &str) -> String {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run it: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A `[[sources]]` entry named `src` capturing `public.*` of `db`, plus `extra` lines.
pub fn source_config(db: &TestDb, extra: &str) -> String {
    format!(
        "[[sources]]\nname = \"src\"\nkind = \"postgres\"\nurl = \"{}\"\ntables = [\"public.*\"]\n{slot}{extra}\n",
        db.url(),
        // Slots are cluster-wide: each test's database gets its own.
        slot = if extra.contains("slot =") { String::new() } else { format!("slot = \"{}\"\n", db.name) }
    )
}

/// A `[[sinks]]` entry writing `topics` (quoted, comma-separated) to `{dir}/out.jsonl`.
pub fn jsonl_sink(topics: &str) -> String {
    format!("[[sinks]]\nname = \"file\"\nkind = \"jsonl\"\npath = \"{{dir}}/out.jsonl\"\ntopics = [{topics}]\n")
}

/// A TCP port free on 127.0.0.1 right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

/// The Python of the venv dev/services creates (confluent-kafka and fastavro installed).
pub fn test_python() -> PathBuf {
    let path = std::env::var_os("SLUICE_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/pyenv/bin/python"));
    assert!(
        path.exists(),
        "{} is missing: run dev/services up (it creates the test venv)",
        path.display()
    );
    path
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// A sluice process on a config written into its own temp directory.
pub struct Sluice {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    child: Option<Child>,
}

impl Sluice {
    /// Writes `config_body` (TOML without the [log] section) after a [log] section pointing into
    /// the temp directory. `{dir}` in the body is replaced by the temp directory.
    pub fn new(config_body: &str) -> Sluice {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("sluice.toml");
        let sluice = Sluice {
            dir,
            config,
            child: None,
        };
        sluice.reconfigure(config_body);
        sluice
    }

    /// Replaces the config (as `new` writes it) for the next start: the log stays.
    pub fn reconfigure(&self, config_body: &str) {
        self.reconfigure_with_log("", config_body);
    }

    /// As [`Sluice::new`], with more lines in the [log] section (`kind = "kafka"`, …).
    pub fn with_log(log_lines: &str, config_body: &str) -> Sluice {
        let sluice = Sluice::new(config_body);
        sluice.reconfigure_with_log(log_lines, config_body);
        sluice
    }

    fn reconfigure_with_log(&self, log_lines: &str, config_body: &str) {
        let dir = self.dir.path().display().to_string();
        let body = config_body.replace("{dir}", &dir);
        let text = format!("[log]\ndir = \"{dir}/log\"\nfsync = \"always\"\n{log_lines}\n\n{body}");
        std::fs::write(&self.config, text).expect("write config");
    }

    pub fn log_dir(&self) -> PathBuf {
        self.dir.path().join("log")
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn start(&mut self) {
        self.start_with_env(&[]);
    }

    /// Starts sluice with more environment variables (test hooks).
    pub fn start_with_env(&mut self, env: &[(&str, &str)]) {
        self.spawn(&[], env);
    }

    /// Starts `sluice run` with more arguments (`--only sinks`).
    pub fn start_with_args(&mut self, args: &[&str]) {
        self.spawn(args, &[]);
    }

    fn spawn(&mut self, args: &[&str], env: &[(&str, &str)]) {
        assert!(self.child.is_none(), "already running");
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("sluice.stderr"))
            .expect("stderr file");
        let child = Command::new(sluice_bin())
            .args(["run", "-c"])
            .arg(&self.config)
            .args(args)
            // SLUICE_TEST_LOG (e.g. "info,sluice_core=debug") to see more of a failing test.
            .env(
                "SLUICE_LOG",
                std::env::var("SLUICE_TEST_LOG").unwrap_or_else(|_| "info".to_owned()),
            )
            .env(NO_INSTANCE_METADATA.0, NO_INSTANCE_METADATA.1)
            .envs(NO_AWS_FILES)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn sluice");
        self.child = Some(child);
    }

    /// The process's log output so far (for assertion messages).
    /// Sends SIGHUP (sluice reads its config again).
    pub fn hangup(&self) {
        let pid = self.child.as_ref().expect("sluice is running").id();
        let status = Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -HUP {pid}");
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.path("sluice.stderr")).unwrap_or_default()
    }

    /// kill -9.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits for a clean exit; returns the exit code.
    pub fn stop(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "sluice did not stop within 40s after SIGTERM:\n{}",
                    self.stderr()
                );
            }
            #[allow(clippy::disallowed_methods)] // synchronous: polls the child until it exits
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => child.try_wait().expect("wait").is_none(),
            None => false,
        }
    }

    /// Every committed record of `topic` in the log: (key, value) as JSON, in offset order per
    /// partition (partitions one after another).
    pub fn records(&self, topic: &str) -> Vec<(Json, Json)> {
        read_topic(&self.log_dir(), topic)
    }
}

impl Drop for Sluice {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- sluice stderr ---\n{}--- end ---", self.stderr());
        }
    }
}

/// Avro records are decoded to JSON with the log's own schema registry.
pub fn read_topic(log_dir: &Path, topic: &str) -> Vec<(Json, Json)> {
    let mut out = Vec::new();
    for_each_record(log_dir, topic, |key, value| out.push((key, value)));
    out
}

/// Calls `f` with every committed record of `topic` (key, value as JSON), partition after
/// partition, without holding them all: for logs too large to read into memory.
pub fn for_each_record(log_dir: &Path, topic: &str, mut f: impl FnMut(Json, Json)) {
    let Ok(log) = sluice_log::Log::open_read_only(log_dir) else {
        return;
    };
    let log = std::sync::Arc::new(log);
    let store = LogStore::open(sluice_log::EmbeddedLog::new(Arc::clone(&log), 1));
    let registry = Registry::open(store.expect("the registry's store")).expect("registry replays");
    let mut decoder = AvroDecoder::new(std::sync::Arc::new(registry));
    let Some(partitions) = log.topic_partitions(topic) else {
        return;
    };
    for partition in 0..partitions {
        let mut offset = 0;
        loop {
            let records = log
                .read(topic, partition, offset, 4 << 20)
                .expect("read log");
            let Some(last) = records.last() else { break };
            offset = last.offset + 1;
            for record in records {
                let mut parse = |bytes: Option<bytes::Bytes>| match bytes {
                    None => Json::Null,
                    Some(b) if is_framed(&b) => decoder.to_json(&b).expect("Avro record decodes"),
                    Some(b) => serde_json::from_slice(&b).expect("record is JSON"),
                };
                let key = parse(record.key);
                f(key, parse(record.value));
            }
        }
    }
}

/// Data events (not tombstones) of a topic.
pub fn events(records: &[(Json, Json)]) -> Vec<Json> {
    records
        .iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(_, v)| v.clone())
        .collect()
}

/// Waits until `condition` holds, checking every 100 ms; panics with `what` after `timeout`.
pub async fn wait_for<F: FnMut() -> bool>(timeout: Duration, what: &str, mut condition: F) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The events of a table `(id, v)` folded per key: id → v.
pub fn folded_id_v(events: &[Json]) -> BTreeMap<i64, i64> {
    fold_rows(events, "id")
        .into_values()
        .map(|row| (row["id"].as_i64().unwrap(), row["v"].as_i64().unwrap()))
        .collect()
}

/// How many events are rows read by an on-demand snapshot.
pub fn incremental_reads(events: &[Json]) -> usize {
    events
        .iter()
        .filter(|e| e["op"] == "r" && e["source"]["snapshot"] == "incremental")
        .count()
}

/// Checks the events of a table `(id, v)` whose writer only ever raises `v`, for an on-demand
/// snapshot run alongside it: per key, v never goes down (a read never overwrites a newer
/// change), no row is read after its delete, and no key is read twice. Returns how many keys
/// were read.
pub fn assert_reads_keep_key_order(events: &[Json]) -> usize {
    let mut last: std::collections::HashMap<i64, Option<i64>> = Default::default();
    let mut reads: std::collections::HashMap<i64, u32> = Default::default();
    for event in events {
        let op = event["op"].as_str().unwrap();
        let row = if op == "d" {
            &event["before"]
        } else {
            &event["after"]
        };
        let id = row["id"].as_i64().unwrap();
        match op {
            "d" => {
                last.insert(id, None);
            }
            "r" | "u" | "c" => {
                let v = row["v"].as_i64().unwrap();
                match last.get(&id) {
                    Some(None) if op == "r" => panic!("key {id} read after its delete: {event}"),
                    Some(Some(before)) => assert!(
                        v >= *before,
                        "key {id}: v {v} after {before} ({op}): a read overwrote a newer change"
                    ),
                    _ => {}
                }
                last.insert(id, Some(v));
                if op == "r" {
                    *reads.entry(id).or_default() += 1;
                }
            }
            _ => {}
        }
    }
    let twice: Vec<_> = reads.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "keys read more than once: {twice:?}");
    reads.len()
}

/// Folds change events into the final row per key (`r`, `c`, `u` set; `d` removes; `t` clears).
pub fn fold_rows(events: &[Json], key_column: &str) -> BTreeMap<String, Json> {
    let mut rows = BTreeMap::new();
    for event in events {
        match event["op"].as_str().unwrap_or_default() {
            "r" | "c" | "u" => {
                let after = &event["after"];
                rows.insert(after[key_column].to_string(), after.clone());
            }
            "d" => {
                rows.remove(&event["before"][key_column].to_string());
            }
            "t" => rows.clear(),
            _ => {}
        }
    }
    rows
}

/// A small deterministic random source for workloads.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// A finished command's exit code and everything it printed (stdout, then stderr).
pub fn code_and_output(out: std::process::Output) -> (Option<i32>, String) {
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// A database sink changed its target's tables at most `most` times: it followed the source's
/// schema versions instead of flapping between them.
pub fn assert_schema_changes_at_most(sluice: &Sluice, most: usize) {
    let stderr = sluice.stderr();
    let changes = stderr
        .matches("changing the target to match the source")
        .count();
    assert!(
        changes <= most,
        "{changes} schema changes: the sink flapped\n{stderr}"
    );
}

/// A slot's confirmed_flush_lsn and catalog_xmin: a slot dropped and recreated under the same
/// name differs in both (empty when there is no such slot).
pub fn slot_identity(db: &TestDb, slot: &str) -> String {
    db.exec(&format!(
        "SELECT confirmed_flush_lsn::text || ' ' || catalog_xmin::text FROM pg_replication_slots WHERE slot_name = '{slot}'"
    ))
}

/// Runs `sluice run` on `sluice`'s config to its end (it must stop by itself within 30 s);
/// returns the exit code and everything it printed.
pub fn run_to_exit(sluice: &mut Sluice) -> (Option<i32>, String) {
    sluice.start();
    let deadline = Instant::now() + Duration::from_secs(30);
    while sluice.is_running() {
        assert!(
            Instant::now() < deadline,
            "sluice kept running:\n{}",
            sluice.stderr()
        );
        #[allow(clippy::disallowed_methods)] // synchronous: polls the child until it exits
        std::thread::sleep(Duration::from_millis(100));
    }
    (sluice.stop(), sluice.stderr())
}

/// Set for every sluice the tests start (a test may unset it): an S3 sink without keys would
/// otherwise ask EC2's instance metadata service, which is not on loopback.
const NO_INSTANCE_METADATA: (&str, &str) = ("AWS_EC2_METADATA_DISABLED", "true");

/// Also set: the AWS profile files of whoever runs the tests are not read (a keyless S3 sink
/// would otherwise take their keys).
const NO_AWS_FILES: [(&str, &str); 2] = [
    (
        "AWS_SHARED_CREDENTIALS_FILE",
        "/nonexistent/aws/credentials",
    ),
    ("AWS_CONFIG_FILE", "/nonexistent/aws/config"),
];

/// Runs `sluice ARGS -c CONFIG` to its end with a deadline; returns (exit code, stdout+stderr).
pub fn sluice_command(args: &[&str], config: &Path) -> (Option<i32>, String) {
    sluice_command_env(args, config, &[])
}

/// [`sluice_command`] with environment variables set (an empty value removes one).
pub fn sluice_command_env(
    args: &[&str],
    config: &Path,
    env: &[(&str, &str)],
) -> (Option<i32>, String) {
    let mut command = Command::new(sluice_bin());
    command.env(NO_INSTANCE_METADATA.0, NO_INSTANCE_METADATA.1);
    command.envs(NO_AWS_FILES);
    for (name, value) in env {
        if value.is_empty() {
            command.env_remove(name);
        } else {
            command.env(name, value);
        }
    }
    let mut child = command
        .args(args)
        .arg("-c")
        .arg(config)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn sluice");
    let deadline = Instant::now() + Duration::from_secs(40);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "sluice {args:?} kept running (retrying forever?):\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        #[allow(clippy::disallowed_methods)] // synchronous: polls the child until it exits
        std::thread::sleep(Duration::from_millis(100));
    }
    code_and_output(child.wait_with_output().expect("output"))
}

/// How many records `topic` of `sluice`'s log holds (`sluice log topics`: cheap, unlike reading
/// them all).
pub fn logged(sluice: &Sluice, topic: &str) -> u64 {
    let (_, out) = sluice_command(&["log", "topics"], &sluice.config);
    out.lines()
        .find(|line| line.starts_with(&format!("{topic}\t")))
        .and_then(|line| line.rsplit("records=").next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}
