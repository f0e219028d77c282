//! The ClickHouse servers the warehouse tests write to, reached with curl: Debian's 18.16
//! (`dev/services up clickhouse`, :8123) and a current ClickHouse, chdb 26.x behind a small
//! HTTP server of ours (`dev/services up chdb`, :8124). Each test works in a database of its
//! own, dropped when it ends.

use std::process::Command;

use crate::{run_ok, unique_name};

/// Debian's ClickHouse 18.16.
pub const CLICKHOUSE_URL: &str = "http://127.0.0.1:8123";
/// chdb (ClickHouse 26.x) behind dev/clickhouse/chdb_server.py.
pub const CHDB_URL: &str = "http://127.0.0.1:8124";

/// A test's database on a ClickHouse server.
pub struct ClickHouse {
    pub url: String,
    pub database: String,
}

impl ClickHouse {
    /// A new database on the server at `url`.
    pub fn on(url: &str) -> ClickHouse {
        let server = ClickHouse {
            url: url.to_owned(),
            database: unique_name("ch").to_lowercase(),
        };
        server.exec(&format!(
            "CREATE DATABASE IF NOT EXISTS {}",
            server.database
        ));
        server
    }

    /// Runs `sql` and returns its output; panics with the server's answer on an error.
    pub fn query(&self, sql: &str) -> String {
        let out = Command::new("curl")
            .args(["-sS", "-m", "120", "-w", "\n%{http_code}", "--data-binary"])
            .arg(sql)
            .arg(format!("{}/", self.url))
            .output()
            .expect("curl runs");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, status) = text.rsplit_once('\n').unwrap_or((&text, ""));
        assert_eq!(
            status, "200",
            "ClickHouse answered {status} to {sql}: {body}"
        );
        body.to_owned()
    }

    pub fn exec(&self, sql: &str) {
        self.query(sql);
    }

    /// The version the server reports.
    pub fn version(&self) -> String {
        self.query("SELECT version()").trim().to_owned()
    }

    /// Whether the server is older than 23.2 (no `is_deleted` engine parameter: deleted rows
    /// stay in `FINAL` with `_sluice_deleted = 1`).
    pub fn keeps_deleted_rows(&self) -> bool {
        let version = self.version();
        let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
        (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) < (23, 2)
    }

    /// The current state of `table` (tab-separated lines of `columns`, sorted): `FINAL`, and
    /// deleted rows left out.
    pub fn current(&self, table: &str, columns: &str) -> Vec<String> {
        let text = self.query(&format!(
            "SELECT {columns} FROM {}.{table} FINAL WHERE _sluice_deleted = 0 FORMAT TabSeparated",
            self.database
        ));
        let mut rows: Vec<String> = text.lines().map(str::to_owned).collect();
        rows.sort();
        rows
    }

    /// Whether `table` exists in the test's database.
    pub fn has_table(&self, table: &str) -> bool {
        self.query(&format!(
            "SELECT count() FROM system.tables WHERE database = '{}' AND name = '{table}'",
            self.database
        ))
        .trim()
            == "1"
    }

    /// The `[[sinks]]` entry of a ClickHouse sink named `name` over `topics` (a TOML array)
    /// into this test's database, plus `extra` lines.
    pub fn sink_config(&self, name: &str, topics: &str, extra: &str) -> String {
        format!(
            "[[sinks]]\nname = \"{name}\"\nkind = \"clickhouse\"\nurl = \"{url}\"\n\
             database = \"{database}\"\ntopics = {topics}\n{extra}\n",
            url = self.url,
            database = self.database,
        )
    }
}

impl Drop for ClickHouse {
    fn drop(&mut self) {
        let _ = run_ok(
            Command::new("curl")
                .args(["-sS", "-m", "60", "--data-binary"])
                .arg(format!("DROP DATABASE IF EXISTS {}", self.database))
                .arg(format!("{}/", self.url)),
            "dropping the test's ClickHouse database",
        );
    }
}
