//! The search servers the search sink tests write to (started by `dev/services up opensearch` /
//! `up typesense`), reached with curl: each test works under index (collection) names of its
//! own, removed when it ends.

use std::collections::BTreeMap;
use std::process::Command;

use serde_json::Value as Json;

use crate::{run_ok, unique_name};

/// The OpenSearch node `dev/services up opensearch` starts.
pub const OPENSEARCH_URL: &str = "http://127.0.0.1:9200";

/// A test's share of the OpenSearch node: every index it makes starts with `prefix`.
pub struct OpenSearch {
    pub prefix: String,
}

impl OpenSearch {
    pub fn new() -> OpenSearch {
        let prefix = unique_name("t").to_lowercase();
        let search = OpenSearch { prefix };
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
            "[[sinks]]\nname = \"{name}\"\nkind = \"opensearch\"\nurl = \"{OPENSEARCH_URL}\"\n\
             topics = {topics}\nindex = \"{prefix}_{{table}}\"\noffsets_index = \"{prefix}_offsets\"\n\
             number_of_replicas = 0\n{extra}\n",
            prefix = self.prefix
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
            .arg(format!("{OPENSEARCH_URL}{path}"));
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
                "{OPENSEARCH_URL}/{}*?expand_wildcards=all",
                self.prefix
            ))
            .output();
    }
}
