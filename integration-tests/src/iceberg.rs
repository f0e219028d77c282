//! The Iceberg REST catalog the lakehouse tests write to (`dev/services up iceberg`, :8181,
//! a file warehouse under target/iceberg) and the readers that check sluice's tables without
//! sluice: pyiceberg and DuckDB (`iceberg_read.py`). Each test works in a namespace of its own.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value as Json;

use crate::{run_ok, test_python, unique_name, workspace_root};

pub const CATALOG_URL: &str = "http://127.0.0.1:8181";

/// A readers' view of Iceberg tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reader {
    PyIceberg,
    DuckDb,
}

/// A test's namespace in the catalog.
pub struct Iceberg {
    pub namespace: String,
}

impl Iceberg {
    pub fn new() -> Iceberg {
        run_ok(
            Command::new(workspace_root().join("dev/services")).args(["up", "iceberg"]),
            "dev/services up iceberg",
        );
        Iceberg {
            namespace: unique_name("ice").to_lowercase(),
        }
    }

    /// A `[[sinks]]` entry of kind iceberg named `name` for `topics` in the test's namespace.
    pub fn sink_config(&self, name: &str, topics: &str, extra: &str) -> String {
        format!(
            "\n[[sinks]]\nname = \"{name}\"\nkind = \"iceberg\"\ncatalog_url = \"{CATALOG_URL}\"\n\
             namespace = \"{}\"\ntopics = {topics}\n{extra}\n",
            self.namespace
        )
    }

    /// The table's directory in the warehouse.
    pub fn table_dir(&self, table: &str) -> PathBuf {
        workspace_root()
            .join("target/iceberg/warehouse")
            .join(&self.namespace)
            .join(table)
    }

    /// The rows of `table` as `reader` reads them: the values of `columns` (`md5:col` for the
    /// MD5 of a text column), sorted; None while the table does not exist.
    pub fn rows(&self, reader: Reader, table: &str, columns: &str) -> Option<Vec<Json>> {
        let script = workspace_root().join("integration-tests/src/iceberg_read.py");
        let out = Command::new(test_python())
            .arg(script)
            .arg(match reader {
                Reader::PyIceberg => "pyiceberg",
                Reader::DuckDb => "duckdb",
            })
            .args([CATALOG_URL, &self.namespace, table, columns])
            .output()
            .expect("run the Iceberg reader");
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            if err.contains("NoSuchTable") || err.contains("does not exist") {
                return None;
            }
            panic!(
                "{reader:?} could not read {}.{table}: {err}",
                self.namespace
            );
        }
        let mut rows: Vec<Json> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|line| serde_json::from_str(line).expect("a JSON row"))
            .collect();
        rows.sort_by_key(|row| row.to_string());
        Some(rows)
    }
}

impl Default for Iceberg {
    fn default() -> Self {
        Iceberg::new()
    }
}
