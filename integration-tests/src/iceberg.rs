//! The Iceberg REST catalog the lakehouse tests write to (`dev/services up iceberg`, :8181,
//! a file warehouse under target/iceberg), the S3 store they may keep files in instead
//! (`dev/services up s3`, moto on :4566), and the readers that check sluice's files without
//! sluice: pyiceberg, DuckDB and pyarrow (`iceberg_read.py`). Each test works in a namespace
//! of its own (and under a prefix of its own on S3).

use std::process::Command;

use serde_json::Value as Json;

use crate::{run_ok, test_python, unique_name, workspace_root};

pub const CATALOG_URL: &str = "http://127.0.0.1:8181";
/// The S3 store of `dev/services up s3`, its bucket and the key tests sign with.
pub const S3_ENDPOINT: &str = "http://127.0.0.1:4566";
pub const S3_BUCKET: &str = "sluice-test";
pub const S3_KEY: &str = "sluice-test";
pub const S3_SECRET: &str = "sluice-test-secret";

/// Where a test's files go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    /// The catalog's warehouse directory (Iceberg), the sluice's data directory (Parquet).
    Local,
    /// The S3 store, under `s3://sluice-test/<namespace>/`.
    S3,
}

/// A readers' view of Iceberg tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reader {
    PyIceberg,
    DuckDb,
}

/// A test's namespace in the catalog.
pub struct Iceberg {
    pub namespace: String,
    pub storage: Storage,
}

impl Iceberg {
    pub fn new(storage: Storage) -> Iceberg {
        let services = workspace_root().join("dev/services");
        if storage == Storage::S3 {
            run_ok(
                Command::new(&services).args(["up", "s3"]),
                "dev/services up s3",
            );
        }
        run_ok(
            Command::new(&services).args(["up", "iceberg"]),
            "dev/services up iceberg",
        );
        Iceberg {
            namespace: unique_name("ice").to_lowercase(),
            storage,
        }
    }

    /// The `s3 = { … }` setting of a sink that writes to the test store (the secret in a
    /// file, as users keep it).
    pub fn s3_setting() -> String {
        let secret = workspace_root().join("target/s3/secret-access-key");
        std::fs::create_dir_all(secret.parent().unwrap()).unwrap();
        std::fs::write(&secret, format!("{S3_SECRET}\n")).unwrap();
        format!(
            "s3 = {{ endpoint = \"{S3_ENDPOINT}\", region = \"us-east-1\", access_key_id = \"{S3_KEY}\", \
             secret_access_key_file = \"{}\" }}",
            secret.display()
        )
    }

    /// A `[[sinks]]` entry of kind iceberg named `name` for `topics` in the test's namespace.
    pub fn sink_config(&self, name: &str, topics: &str, extra: &str) -> String {
        let storage = match self.storage {
            Storage::Local => String::new(),
            Storage::S3 => format!(
                "location = \"s3://{S3_BUCKET}/{}/warehouse\"\n{}\n",
                self.namespace,
                Iceberg::s3_setting()
            ),
        };
        format!(
            "\n[[sinks]]\nname = \"{name}\"\nkind = \"iceberg\"\ncatalog_url = \"{CATALOG_URL}\"\n\
             namespace = \"{}\"\ntopics = {topics}\n{storage}{extra}\n",
            self.namespace
        )
    }

    /// A `[[sinks]]` entry of kind parquet named `name` for `topics`, its files under
    /// `{dir}/changes` locally or the test's S3 prefix; and that place as readers name it
    /// (`{dir}` left for the caller).
    pub fn parquet_sink_config(&self, name: &str, topics: &str, extra: &str) -> (String, String) {
        let (path, storage) = match self.storage {
            Storage::Local => ("{dir}/changes".to_owned(), String::new()),
            Storage::S3 => (
                format!("s3://{S3_BUCKET}/{}/changes", self.namespace),
                format!("{}\n", Iceberg::s3_setting()),
            ),
        };
        (
            format!(
                "\n[[sinks]]\nname = \"{name}\"\nkind = \"parquet\"\npath = \"{path}\"\n\
                 topics = {topics}\n{storage}{extra}\n"
            ),
            path,
        )
    }

    /// The names of the files directly under `sub` (`data`, `metadata`) of `table`.
    pub fn table_files(&self, table: &str, sub: &str) -> Vec<String> {
        match self.storage {
            Storage::Local => {
                let dir = workspace_root()
                    .join("target/iceberg/warehouse")
                    .join(&self.namespace)
                    .join(table)
                    .join(sub);
                std::fs::read_dir(dir)
                    .map(|entries| {
                        entries
                            .flatten()
                            .map(|e| e.file_name().to_string_lossy().into_owned())
                            .collect()
                    })
                    .unwrap_or_default()
            }
            Storage::S3 => {
                let prefix = format!(
                    "{}/warehouse/{}/{table}/{sub}/",
                    self.namespace, self.namespace
                );
                let out = self.python(&[
                    "-c",
                    "import boto3, os, sys\n\
                     s3 = boto3.client('s3', endpoint_url=os.environ['S3_ENDPOINT'], region_name='us-east-1', \
                     aws_access_key_id=os.environ['S3_KEY'], aws_secret_access_key=os.environ['S3_SECRET'])\n\
                     for page in s3.get_paginator('list_objects_v2').paginate(Bucket=sys.argv[1], Prefix=sys.argv[2]):\n\
                     \x20   for o in page.get('Contents', []): print(o['Key'][len(sys.argv[2]):])",
                    S3_BUCKET,
                    &prefix,
                ]);
                out.lines()
                    .filter(|l| !l.contains('/'))
                    .map(str::to_owned)
                    .collect()
            }
        }
    }

    /// The test's Python with the S3 store's settings in its environment; its stdout (a
    /// failure panics with its stderr).
    fn python(&self, args: &[&str]) -> String {
        let out = self
            .python_command()
            .args(args)
            .output()
            .expect("run python");
        assert!(
            out.status.success(),
            "python {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn python_command(&self) -> Command {
        let mut command = Command::new(test_python());
        if self.storage == Storage::S3 {
            command.envs([
                ("S3_ENDPOINT", S3_ENDPOINT),
                ("S3_KEY", S3_KEY),
                ("S3_SECRET", S3_SECRET),
            ]);
        }
        command
    }

    /// The rows of a DuckDB query (Parquet files, locally or on the S3 store), as JSON
    /// arrays, sorted.
    pub fn duckdb(&self, sql: &str) -> Vec<Json> {
        let script = workspace_root().join("integration-tests/src/iceberg_read.py");
        let out = self.python(&[&script.display().to_string(), "sql", sql]);
        let mut rows: Vec<Json> = out
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON row"))
            .collect();
        rows.sort_by_key(|r| r.to_string());
        rows
    }

    /// How many rows pyarrow reads from the Parquet files under `path`.
    pub fn pyarrow_rows(&self, path: &str) -> u64 {
        let script = workspace_root().join("integration-tests/src/iceberg_read.py");
        self.python(&[&script.display().to_string(), "pyarrow", path])
            .trim()
            .parse()
            .expect("a row count")
    }

    /// The rows of `table` as `reader` reads them: the values of `columns` (`md5:col` for the
    /// MD5 of a text column), sorted; None while the table does not exist.
    pub fn rows(&self, reader: Reader, table: &str, columns: &str) -> Option<Vec<Json>> {
        self.try_rows(reader, table, columns)
            .unwrap_or_else(|err| panic!("{err}"))
    }

    /// As [`Iceberg::rows`]; `Err` says why the reader failed (a column the table does not
    /// have yet, while a sink catching up has not added it, is one such failure).
    pub fn try_rows(
        &self,
        reader: Reader,
        table: &str,
        columns: &str,
    ) -> Result<Option<Vec<Json>>, String> {
        let script = workspace_root().join("integration-tests/src/iceberg_read.py");
        let out = self
            .python_command()
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
                return Ok(None);
            }
            return Err(format!(
                "{reader:?} could not read {}.{table}: {err}",
                self.namespace
            ));
        }
        let mut rows: Vec<Json> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|line| serde_json::from_str(line).expect("a JSON row"))
            .collect();
        rows.sort_by_key(|row| row.to_string());
        Ok(Some(rows))
    }
}

impl Default for Iceberg {
    fn default() -> Self {
        Iceberg::new(Storage::Local)
    }
}
