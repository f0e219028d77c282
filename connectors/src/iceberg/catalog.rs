//! The Iceberg REST catalog, as far as the sink uses it: its config (a path prefix), a
//! namespace made if missing, tables listed, loaded and created, and commits of new snapshots
//! and schemas with the requirements that make a concurrent writer's commit fail instead of
//! being overwritten.

use std::collections::BTreeMap;

use reqwest::Method;
use serde_json::{json, Value as Json};

use super::schema::Schema;
use crate::http::{escape, Http, HttpError};

/// A table as its current metadata describes it.
#[derive(Debug, Clone)]
pub struct TableMetadata {
    pub metadata_location: Option<String>,
    pub uuid: String,
    pub format_version: i64,
    /// Where the table's files go (`file:///…`, `s3://…`).
    pub location: String,
    pub last_sequence_number: i64,
    pub schema: Schema,
    pub current: Option<Snapshot>,
    /// Every snapshot the metadata keeps: id and manifest list, oldest first.
    pub snapshots: Vec<(i64, String)>,
    pub properties: BTreeMap<String, String>,
    /// What the catalog says to read and write the table's files with (`s3.endpoint`,
    /// vended credentials such as `s3.access-key-id`); empty after a commit.
    pub config: BTreeMap<String, String>,
}

/// The table's current snapshot.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub id: i64,
    pub sequence_number: i64,
    pub manifest_list: String,
    pub timestamp_ms: i64,
    pub summary: BTreeMap<String, String>,
}

/// A commit the catalog refused because the table changed since it was loaded.
#[derive(Debug)]
pub enum CommitError {
    Conflict(String),
    Http(HttpError),
}

impl From<HttpError> for CommitError {
    fn from(e: HttpError) -> Self {
        CommitError::Http(e)
    }
}

#[derive(Clone)]
pub struct Catalog {
    http: Http,
    /// `/v1` or `/v1/<prefix>` as the catalog's config says.
    root: String,
    /// The config's `overrides` (file settings such as `s3.endpoint` among them).
    overrides: BTreeMap<String, String>,
}

impl Catalog {
    /// Reads the catalog's config (`GET /v1/config`), which may give a path prefix.
    pub async fn connect(http: Http, warehouse: Option<&str>) -> Result<Catalog, HttpError> {
        let path = match warehouse {
            Some(w) => format!("/v1/config?warehouse={}", escape(w)),
            None => "/v1/config".into(),
        };
        let (_, config) = http
            .json(
                Method::GET,
                &path,
                None,
                "reading the catalog's config",
                &[],
            )
            .await?;
        let prefix = config
            .pointer("/overrides/prefix")
            .or_else(|| config.pointer("/defaults/prefix"))
            .and_then(Json::as_str);
        let root = match prefix {
            Some(prefix) if !prefix.is_empty() => format!("/v1/{}", escape(prefix)),
            _ => "/v1".into(),
        };
        Ok(Catalog {
            http,
            root,
            overrides: strings(config.get("overrides")),
        })
    }

    /// The settings for a table's files: the catalog's overrides, then the table's own.
    pub fn file_settings(
        &self,
        table: &TableMetadata,
    ) -> std::collections::HashMap<String, String> {
        let mut settings: std::collections::HashMap<String, String> = self
            .overrides
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        settings.extend(table.config.iter().map(|(k, v)| (k.clone(), v.clone())));
        settings
    }

    pub fn base(&self) -> &str {
        self.http.base()
    }

    fn table_path(&self, namespace: &str, table: &str) -> String {
        format!(
            "{}/namespaces/{}/tables/{}",
            self.root,
            escape(namespace),
            escape(table)
        )
    }

    /// Makes `namespace` unless it exists.
    pub async fn ensure_namespace(&self, namespace: &str) -> Result<(), HttpError> {
        let (status, _) = self
            .http
            .json(
                Method::GET,
                &format!("{}/namespaces/{}", self.root, escape(namespace)),
                None,
                &format!("looking up namespace {namespace}"),
                &[404],
            )
            .await?;
        if status != 404 {
            return Ok(());
        }
        let body = json!({"namespace": [namespace], "properties": {}});
        self.http
            .json(
                Method::POST,
                &format!("{}/namespaces", self.root),
                Some(&body),
                &format!("creating namespace {namespace}"),
                // Made meanwhile by another writer.
                &[409],
            )
            .await
            .map(drop)
    }

    /// The tables of `namespace`.
    pub async fn list_tables(&self, namespace: &str) -> Result<Vec<String>, HttpError> {
        let mut names = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut path = format!("{}/namespaces/{}/tables", self.root, escape(namespace));
            if let Some(token) = &token {
                path.push_str(&format!("?pageToken={}", escape(token)));
            }
            let (_, answer) = self
                .http
                .json(
                    Method::GET,
                    &path,
                    None,
                    &format!("listing the tables of {namespace}"),
                    &[],
                )
                .await?;
            for id in answer
                .get("identifiers")
                .and_then(Json::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(name) = id.get("name").and_then(Json::as_str) {
                    names.push(name.to_owned());
                }
            }
            token = answer
                .get("next-page-token")
                .and_then(Json::as_str)
                .filter(|t| !t.is_empty())
                .map(str::to_owned);
            if token.is_none() {
                return Ok(names);
            }
        }
    }

    /// The table's metadata, or None when it does not exist.
    pub async fn load_table(
        &self,
        namespace: &str,
        table: &str,
    ) -> Result<Option<TableMetadata>, HttpError> {
        let (status, answer) = self
            .http
            .json(
                Method::GET,
                &self.table_path(namespace, table),
                None,
                &format!("loading table {namespace}.{table}"),
                &[404],
            )
            .await?;
        if status == 404 {
            return Ok(None);
        }
        self.metadata(&answer, namespace, table).map(Some)
    }

    /// Creates a format-v2, unpartitioned table of `schema`, at `location` when given (else
    /// where the catalog's warehouse puts it). A table created since the caller looked for it
    /// (a killed run's request that landed late, or another writer) is loaded and returned.
    pub async fn create_table(
        &self,
        namespace: &str,
        table: &str,
        schema: &Schema,
        location: Option<&str>,
    ) -> Result<TableMetadata, HttpError> {
        match self.create(namespace, table, schema, location).await {
            Err(HttpError::Status { status: 409, .. }) => {
                tracing::info!(table = %format!("{namespace}.{table}"), "the Iceberg table was created meanwhile; using it");
                self.load_table(namespace, table)
                    .await?
                    .ok_or_else(|| HttpError::Unexpected {
                        server: self.http.server(),
                        reason: format!(
                            "{namespace}.{table}: the catalog refused to create it as existing \
                             (409) but does not load it; check the catalog"
                        ),
                    })
            }
            created => created,
        }
    }

    async fn create(
        &self,
        namespace: &str,
        table: &str,
        schema: &Schema,
        location: Option<&str>,
    ) -> Result<TableMetadata, HttpError> {
        let mut body = json!({
            "name": table,
            "schema": schema.to_json(),
            "stage-create": false,
            "properties": {
                "format-version": "2",
                "write.format.default": "parquet",
                "write.delete.mode": "merge-on-read",
                "write.update.mode": "merge-on-read",
                "created-by": "sluice",
            },
        });
        if let Some(location) = location {
            body["location"] = json!(location);
        }
        let (_, answer) = self
            .http
            .json(
                Method::POST,
                &format!("{}/namespaces/{}/tables", self.root, escape(namespace)),
                Some(&body),
                &format!("creating table {namespace}.{table}"),
                &[],
            )
            .await?;
        self.metadata(&answer, namespace, table)
    }

    /// Commits `updates` to the table if `requirements` hold; the table's metadata after it.
    pub async fn commit(
        &self,
        namespace: &str,
        table: &str,
        requirements: Vec<Json>,
        updates: Vec<Json>,
    ) -> Result<TableMetadata, CommitError> {
        let body = json!({
            "identifier": {"namespace": [namespace], "name": table},
            "requirements": requirements,
            "updates": updates,
        });
        let what = format!("committing to table {namespace}.{table}");
        let (status, bytes) = self
            .http
            .send(
                Method::POST,
                &self.table_path(namespace, table),
                Some((body.to_string().into(), "application/json")),
                &what,
            )
            .await?;
        if status == 409 {
            let reason = serde_json::from_slice::<Json>(&bytes)
                .ok()
                .and_then(|v| {
                    v.pointer("/error/message")
                        .and_then(Json::as_str)
                        .map(str::to_owned)
                })
                .unwrap_or_else(|| crate::http::shorten(&bytes));
            return Err(CommitError::Conflict(reason));
        }
        if !(200..300).contains(&status) {
            return Err(self.http.status_error(&what, status, &bytes).into());
        }
        let answer: Json = serde_json::from_slice(&bytes).map_err(|e| HttpError::Unexpected {
            server: self.http.server(),
            reason: format!("{what}: the answer is not JSON ({e})"),
        })?;
        Ok(self.metadata(&answer, namespace, table)?)
    }

    fn metadata(
        &self,
        answer: &Json,
        namespace: &str,
        table: &str,
    ) -> Result<TableMetadata, HttpError> {
        parse_metadata(answer).map_err(|reason| HttpError::Unexpected {
            server: self.http.server(),
            reason: format!("table {namespace}.{table}: {reason}"),
        })
    }
}

/// A load-table answer (`metadata-location` and `metadata`).
pub fn parse_metadata(answer: &Json) -> Result<TableMetadata, String> {
    let metadata = answer.get("metadata").ok_or("an answer without metadata")?;
    let text = |name: &str| metadata.get(name).and_then(Json::as_str);
    let number = |name: &str| metadata.get(name).and_then(Json::as_i64);
    let schema_id = number("current-schema-id").unwrap_or(0);
    let schema_json = metadata
        .get("schemas")
        .and_then(Json::as_array)
        .and_then(|schemas| {
            schemas
                .iter()
                .find(|s| s.get("schema-id").and_then(Json::as_i64).unwrap_or(0) == schema_id)
        })
        .or_else(|| metadata.get("schema"))
        .ok_or("no current schema in the metadata")?;
    let current_id = metadata
        .pointer("/refs/main/snapshot-id")
        .or_else(|| metadata.get("current-snapshot-id"))
        .and_then(Json::as_i64)
        .filter(|id| *id >= 0);
    let current = match current_id {
        None => None,
        Some(id) => {
            let snapshot = metadata
                .get("snapshots")
                .and_then(Json::as_array)
                .and_then(|all| {
                    all.iter()
                        .find(|s| s.get("snapshot-id").and_then(Json::as_i64) == Some(id))
                })
                .ok_or_else(|| format!("snapshot {id} is current but not in the metadata"))?;
            Some(Snapshot {
                id,
                sequence_number: snapshot
                    .get("sequence-number")
                    .and_then(Json::as_i64)
                    .unwrap_or(0),
                manifest_list: snapshot
                    .get("manifest-list")
                    .and_then(Json::as_str)
                    .ok_or_else(|| {
                        format!(
                            "snapshot {id} has no manifest list (a v1 table with inline manifests)"
                        )
                    })?
                    .to_owned(),
                timestamp_ms: snapshot
                    .get("timestamp-ms")
                    .and_then(Json::as_i64)
                    .unwrap_or(0),
                summary: strings(snapshot.get("summary")),
            })
        }
    };
    Ok(TableMetadata {
        metadata_location: answer
            .get("metadata-location")
            .and_then(Json::as_str)
            .map(str::to_owned),
        uuid: text("table-uuid").ok_or("no table-uuid")?.to_owned(),
        format_version: number("format-version").unwrap_or(1),
        location: text("location").ok_or("no location")?.to_owned(),
        last_sequence_number: number("last-sequence-number").unwrap_or(0),
        schema: Schema::parse(schema_json)?,
        current,
        snapshots: {
            let mut all: Vec<(i64, i64, String)> = metadata
                .get("snapshots")
                .and_then(Json::as_array)
                .into_iter()
                .flatten()
                .filter_map(|s| {
                    Some((
                        s.get("sequence-number").and_then(Json::as_i64).unwrap_or(0),
                        s.get("snapshot-id").and_then(Json::as_i64)?,
                        s.get("manifest-list")
                            .and_then(Json::as_str)
                            .unwrap_or("")
                            .to_owned(),
                    ))
                })
                .collect();
            all.sort();
            all.into_iter().map(|(_, id, list)| (id, list)).collect()
        },
        properties: strings(metadata.get("properties")),
        config: strings(answer.get("config")),
    })
}

/// A JSON object of strings as a map (other values left out).
fn strings(object: Option<&Json>) -> BTreeMap<String, String> {
    object
        .and_then(Json::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}
