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
