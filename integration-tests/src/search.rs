//! The search servers the search sink tests write to (started by `dev/services up opensearch` /
//! `up typesense`), reached with curl: each test works under index (collection) names of its
//! own, removed when it ends.

use std::collections::BTreeMap;
use std::process::Command;

use serde_json::Value as Json;

use crate::{run_ok, unique_name};

/// The OpenSearch node `dev/services up opensearch` starts.
pub const OPENSEARCH_URL: &str = "http://127.0.0.1:9200";

/// A test's share of an OpenSearch node: every index it makes starts with `prefix`.
pub struct OpenSearch {
    pub prefix: String,
    pub url: String,
}

impl OpenSearch {
    /// On the shared node of `dev/services`.
    pub fn new() -> OpenSearch {
        OpenSearch::on(OPENSEARCH_URL)
    }

    /// On the node at `url`.
    pub fn on(url: &str) -> OpenSearch {
        let search = OpenSearch {
            prefix: unique_name("t").to_lowercase(),
            url: url.to_owned(),
        };
        search.request(
            "GET",
            "/_cluster/health?wait_for_status=yellow&timeout=30s",
            None,
        );
        search
    }

    /// The `[[sinks]]` entry of an OpenSearch sink named `name` over `topics` (a TOML array),
    /// indexes and offsets under this test's prefix, plus `extra` lines.
    pub fn sink_config(&self, name: &str, topics: &str, extra: &str) -> String {
        format!(
            "[[sinks]]\nname = \"{name}\"\nkind = \"opensearch\"\nurl = \"{url}\"\n\
             topics = {topics}\nindex = \"{prefix}_{{table}}\"\noffsets_index = \"{prefix}_offsets\"\n\
             number_of_replicas = 0\n{extra}\n",
            prefix = self.prefix,
            url = self.url,
        )
    }

    /// The index a table's documents go to under [`sink_config`](Self::sink_config).
    pub fn index(&self, table: &str) -> String {
        format!("{}_{table}", self.prefix)
    }

    /// Sends a request and returns the JSON answer (any status).
    pub fn request(&self, method: &str, path: &str, body: Option<&Json>) -> Json {
        let mut command = Command::new("curl");
        command
            .args(["-sS", "-m", "60", "-X", method])
            .arg(format!("{}{path}", self.url));
        if let Some(body) = body {
            command
                .args(["-H", "content-type: application/json", "--data-binary"])
                .arg(body.to_string());
        }
        let out = run_ok(&mut command, &format!("curl {method} {path}"));
        serde_json::from_str(&out).unwrap_or(Json::Null)
    }

    /// Every document of `index` (after a refresh) by id; empty when there is no such index.
    pub fn documents(&self, index: &str) -> BTreeMap<String, Json> {
        self.request("POST", &format!("/{index}/_refresh"), None);
        let answer = self.request(
            "GET",
            &format!("/{index}/_search?size=10000&version=true"),
            Some(&serde_json::json!({"query": {"match_all": {}}, "sort": ["_doc"]})),
        );
        let Some(hits) = answer["hits"]["hits"].as_array() else {
            return BTreeMap::new();
        };
        assert!(
            hits.len() < 10_000,
            "the helper reads up to 10,000 documents"
        );
        hits.iter()
            .map(|hit| (hit["_id"].as_str().unwrap().to_owned(), hit.clone()))
            .collect()
    }
}

impl Default for OpenSearch {
    fn default() -> Self {
        OpenSearch::new()
    }
}

impl Drop for OpenSearch {
    fn drop(&mut self) {
        let _ = Command::new("curl")
            .args(["-sS", "-m", "30", "-X", "DELETE"])
            .arg(format!(
                "{}/{}*?expand_wildcards=all",
                self.url, self.prefix
            ))
            .output();
    }
}

/// An OpenSearch node of a test's own (for tests that stop and start it): the jars and the
/// main of `dev/services up opensearch`, on a free port, data in a temporary directory.
pub struct PrivateOpenSearch {
    pub port: u16,
    home: tempfile::TempDir,
    process: Option<std::process::Child>,
}

impl PrivateOpenSearch {
    pub fn start() -> PrivateOpenSearch {
        let mut node = PrivateOpenSearch {
            port: crate::free_port(),
            home: tempfile::tempdir().expect("a home for the node"),
            process: None,
        };
        node.run();
        node
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn run(&mut self) {
        let root = crate::workspace_root();
        std::fs::create_dir_all(self.home.path().join("config")).unwrap();
        let out = std::fs::File::create(self.home.path().join("node.out")).unwrap();
        let child = Command::new("java")
            .args(["-Xms256m", "-Xmx512m", "-XX:+UseSerialGC", "-cp"])
            .arg(root.join("target/opensearch/libs/*"))
            .arg(root.join("dev/opensearch/OpenSearchNode.java"))
            .arg(self.home.path())
            .arg(self.port.to_string())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("java (dev/services up opensearch installs the jars)");
        self.process = Some(child);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        loop {
            let health = Command::new("curl")
                .args(["-fsS", "-m", "2"])
                .arg(format!(
                    "{}/_cluster/health?wait_for_status=yellow&timeout=1s",
                    self.url()
                ))
                .output();
            if health.is_ok_and(|o| o.status.success()) {
                return;
            }
            let log =
                std::fs::read_to_string(self.home.path().join("node.out")).unwrap_or_default();
            assert!(
                std::time::Instant::now() < deadline,
                "the private OpenSearch node did not start: {log}"
            );
            // A blocking helper (tests call it inside block_in_place): polls a process.
            #[allow(clippy::disallowed_methods)]
            std::thread::sleep(std::time::Duration::from_millis(300));
        }
    }

    /// Stops the node as an operator would (SIGTERM; it closes cleanly) and starts it again on
    /// the same data.
    pub fn restart(&mut self) {
        self.stop();
        self.run();
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.process.take() {
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateOpenSearch {
    fn drop(&mut self) {
        if let Some(mut child) = self.process.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The Typesense server `dev/services up typesense` starts.
pub const TYPESENSE_URL: &str = "http://127.0.0.1:8108";

/// The API key of the server `dev/services up typesense` starts.
pub fn typesense_key() -> String {
    let path = crate::workspace_root().join("target/typesense/api-key");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run dev/services up typesense)", path.display()))
        .trim()
        .to_owned()
}

/// A test's share of a Typesense server: every collection it makes starts with `prefix`.
pub struct Typesense {
    pub prefix: String,
    pub url: String,
    key: String,
}

impl Typesense {
    /// On the shared server of `dev/services`.
    pub fn new() -> Typesense {
        Typesense::on(TYPESENSE_URL)
    }

    pub fn on(url: &str) -> Typesense {
        Typesense {
            prefix: unique_name("t").to_lowercase(),
            url: url.to_owned(),
            key: typesense_key(),
        }
    }

    /// The `[[sinks]]` entry of a Typesense sink named `name` over `topics` (a TOML array),
    /// collections and offsets under this test's prefix, plus `extra` lines.
    pub fn sink_config(&self, name: &str, topics: &str, extra: &str) -> String {
        format!(
            "[[sinks]]\nname = \"{name}\"\nkind = \"typesense\"\nurl = \"{url}\"\napi_key = \"{key}\"\n\
             topics = {topics}\ncollection = \"{prefix}_{{table}}\"\noffsets_collection = \"{prefix}_offsets\"\n{extra}\n",
            url = self.url,
            key = self.key,
            prefix = self.prefix,
        )
    }

    pub fn collection(&self, table: &str) -> String {
        format!("{}_{table}", self.prefix)
    }

    /// Sends a request and returns the answer's text (any status).
    pub fn request(&self, method: &str, path: &str, body: Option<&str>) -> String {
        let mut command = Command::new("curl");
        command
            .args(["-sS", "-g", "-m", "60", "-X", method, "-H"])
            .arg(format!("X-TYPESENSE-API-KEY: {}", self.key))
            .arg(format!("{}{path}", self.url));
        if let Some(body) = body {
            command.arg("--data-binary").arg(body);
        }
        run_ok(&mut command, &format!("curl {method} {path}"))
    }

    /// Every document of `collection` by id (empty when there is no such collection).
    pub fn documents(&self, collection: &str) -> BTreeMap<String, Json> {
        self.request(
            "GET",
            &format!("/collections/{collection}/documents/export"),
            None,
        )
        .lines()
        .filter_map(|line| serde_json::from_str::<Json>(line).ok())
        .filter_map(|doc| Some((doc["id"].as_str()?.to_owned(), doc)))
        .collect()
    }
}

impl Default for Typesense {
    fn default() -> Self {
        Typesense::new()
    }
}

impl Drop for Typesense {
    /// Best effort: the server may be gone already (a private one dropped first).
    fn drop(&mut self) {
        let curl = |method: &str, path: &str| {
            Command::new("curl")
                .args(["-sS", "-m", "10", "-X", method, "-H"])
                .arg(format!("X-TYPESENSE-API-KEY: {}", self.key))
                .arg(format!("{}{path}", self.url))
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default()
        };
        let collections: Json =
            serde_json::from_str(&curl("GET", "/collections")).unwrap_or(Json::Null);
        for collection in collections.as_array().into_iter().flatten() {
            if let Some(name) = collection["name"].as_str() {
                if name.starts_with(&self.prefix) {
                    curl("DELETE", &format!("/collections/{name}"));
                }
            }
        }
    }
}

/// A Typesense server of a test's own (for tests that stop and start it), the binary of
/// `dev/services up typesense` on a free port with its own data directory.
pub struct PrivateTypesense {
    pub port: u16,
    dir: tempfile::TempDir,
    process: Option<std::process::Child>,
}

impl PrivateTypesense {
    pub fn start() -> PrivateTypesense {
        let mut server = PrivateTypesense {
            port: crate::free_port(),
            dir: tempfile::tempdir().expect("a directory for the server"),
            process: None,
        };
        server.run();
        server
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn run(&mut self) {
        let binary = crate::workspace_root().join("target/typesense/typesense-server");
        let data = self.dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let out = std::fs::File::create(self.dir.path().join("server.out")).unwrap();
        // Its peering port (raft) must be free too.
        let peering = crate::free_port();
        let child = Command::new(&binary)
            .arg("--data-dir")
            .arg(&data)
            .args([
                "--api-key",
                &typesense_key(),
                "--api-address",
                "127.0.0.1",
                "--api-port",
            ])
            .arg(self.port.to_string())
            .args(["--peering-address", "127.0.0.1", "--peering-port"])
            .arg(peering.to_string())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("{}: {e} (run dev/services up typesense)", binary.display())
            });
        self.process = Some(child);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let health = Command::new("curl")
                .args(["-fsS", "-m", "2"])
                .arg(format!("{}/health", self.url()))
                .output();
            if health.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("\"ok\":true")) {
                return;
            }
            let log =
                std::fs::read_to_string(self.dir.path().join("server.out")).unwrap_or_default();
            assert!(
                std::time::Instant::now() < deadline,
                "the private Typesense did not start: {log}"
            );
            // A blocking helper (tests call it inside block_in_place): polls a process.
            #[allow(clippy::disallowed_methods)]
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }

    /// Stops the server as an operator would (SIGTERM) and starts it again on the same data.
    pub fn restart(&mut self) {
        if let Some(mut child) = self.process.take() {
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            let _ = child.wait();
        }
        self.run();
    }
}

impl Drop for PrivateTypesense {
    fn drop(&mut self) {
        if let Some(mut child) = self.process.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
