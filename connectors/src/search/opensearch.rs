//! The OpenSearch/Elasticsearch sink: each table's rows as documents of an index.
//!
//! A batch arrives planned (`replica::plan`: the final state of each key, truncates in order)
//! and is applied as `_bulk` requests, `max_in_flight` at a time: upserts as `index` and
//! deletes as `delete`, both with `version_type=external` and the record's log offset (+1) as
//! version, so that a replay or a late retry is refused (409, counted as `stale`) instead of
//! overwriting something newer. A row the source sent without its unchanged TOASTed values is
//! completed with the fields the index holds for it (a realtime `_mget`) and indexed whole,
//! versioned like the rest (an `update` would bump the internal version and make the next
//! change look stale). A truncate sends what came before it, then deletes every document of the
//! index with the truncate's own version (so that, replayed, it spares what came after it). Items the cluster refuses as overloaded (429) or failing (5xx) are
//! sent again with backoff; items it rejects (a value the mapping refuses) go to the
//! dead-letter topic with the server's reason. Then the sink's offsets are stored in a
//! document of `offsets_index`, where the next start reads them back.
//!
//! Indexes are created on first use with a mapping made from the table's schema
//! (`mapping.rs`); a new table version adds its new fields. While a snapshot loads an index
//! (a batch with at least `RELAX_MIN_ROWS` snapshot rows), its refresh is turned off and its
//! replicas set to 0; both are put back when the sink catches up, and at the next start if
//! sluice stopped before (the offsets document remembers what to put back).

pub mod bulk;
pub mod config;
mod index;
pub mod mapping;
pub mod reindex;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sluice_core::event::TableSchema;
use sluice_core::pipeline::TypedSink;
use sluice_core::sink::{DeadLetterWriter, Offsets};
use sluice_schema_registry::changes::RecordDecoder;
use sluice_schema_registry::registry::Registry;

use self::bulk::{Action, Builder};
pub use self::config::OpenSearchSinkConfig;
use super::document::{document_id, write_document, Flavor};
use super::{index_name, AppliedOffsets, SearchError};
use crate::http::{Auth, Http};
use crate::replica::{self, Prepared, ReplicaSettings, ReplicaSink, Row, Step, Target};

/// Snapshot rows of one index in one batch from which the index is relaxed for loading.
const RELAX_MIN_ROWS: usize = 1000;
/// Attempts at an item the cluster keeps refusing as overloaded before the sink gives up
/// (the runtime then restarts it from its stored offsets, with its own backoff).
const MAX_ATTEMPTS: u32 = 8;
const SERVER: &str = "OpenSearch";
/// Document ids listed per page when a truncate deletes an index's documents.
const TRUNCATE_PAGE: usize = 5000;

/// The sink as the runtime runs it.
pub type OpenSearchSink = TypedSink<ReplicaSink<OpenSearchTarget>, RecordDecoder>;

/// Builds the sink for `config`, decoding records through `registry`.
pub fn opensearch_sink(
    config: OpenSearchSinkConfig,
    registry: Arc<Registry>,
    dead_letters: Option<DeadLetterWriter>,
) -> OpenSearchSink {
    let settings = ReplicaSettings {
        dead_letters: dead_letters.is_some(),
        batch_history: false,
        whole_commits: false,
        max_pending_bytes: sluice_core::pipeline::DEFAULT_MAX_PENDING_BYTES,
    };
    let target = OpenSearchTarget {
        config,
        http: None,
        dead_letters,
        ready: HashMap::new(),
        relaxed: BTreeMap::new(),
        applied: AppliedOffsets::default(),
    };
    replica::typed_sink(target, settings, registry).max_write_bytes(super::WRITE_BYTES)
}

/// Settings of an index relaxed for a snapshot load, to put back (`None`: the index did not
/// set it, the cluster's default applies).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Relaxed {
    refresh_interval: Option<String>,
    number_of_replicas: Option<String>,
}

/// The sink's document in `offsets_index`.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Control {
    sink: String,
    offsets: Vec<StoredOffset>,
    #[serde(default)]
    relaxed: BTreeMap<String, Relaxed>,
    #[serde(default)]
    updated_at_ms: i64,
}

#[derive(Debug, Serialize, Deserialize)]
struct StoredOffset {
    topic: String,
    partition: u32,
    next: u64,
}

/// The cluster a sink writes to.
pub struct OpenSearchTarget {
    config: OpenSearchSinkConfig,
    http: Option<Http>,
    dead_letters: Option<DeadLetterWriter>,
    /// Indexes made ready in this run, with the table version they were last mapped for.
    ready: HashMap<String, Arc<TableSchema>>,
    /// Indexes relaxed for a snapshot load.
    relaxed: BTreeMap<String, Relaxed>,
    /// The offsets applied, and whether the offsets document is behind them.
    applied: AppliedOffsets,
}

/// A reason an index name is not one OpenSearch accepts, if any.
pub fn index_name_problem(name: &str) -> Option<String> {
    let bad = |why: &str| Some(format!("{name:?} cannot name an index: {why}"));
    if name.is_empty() || name == "." || name == ".." {
        return bad("it is empty");
    }
    if name.len() > 255 {
        return bad("longer than 255 bytes");
    }
    if name.starts_with(['_', '-', '+']) {
        return bad("it starts with '_', '-' or '+'");
    }
    if let Some(c) = name.chars().find(|c| {
        matches!(
            c,
            '\\' | '/' | '*' | '?' | '"' | '<' | '>' | '|' | ' ' | ',' | '#' | ':'
        )
    }) {
        return bad(&format!("it holds {c:?}"));
    }
    if name.chars().any(char::is_uppercase) {
        return bad("it holds upper-case letters");
    }
    None
}

impl OpenSearchTarget {
    fn http(&mut self) -> Result<&Http, SearchError> {
        if self.http.is_none() {
            self.http = Some(connect(&self.config)?);
        }
        Ok(self.http.as_ref().expect("just set"))
    }
}

/// Creates `index` with `body` (settings, mappings); one that exists already (another sink or
/// process made it meanwhile) is fine.
async fn create_index(
    http: &Http,
    index: &str,
    body: &serde_json::Value,
    what: &str,
) -> Result<(), SearchError> {
    let (status, answer) = http
        .json(Method::PUT, &format!("/{index}"), Some(body), what, &[400])
        .await?;
    let exists = answer["error"]["type"].as_str() == Some("resource_already_exists_exception");
    if status == 400 && !exists {
        return Err(http
            .status_error(what, status, answer.to_string().as_bytes())
            .into());
    }
    Ok(())
}

/// The HTTP client for a sink's cluster.
fn connect(config: &OpenSearchSinkConfig) -> Result<Http, SearchError> {
    Ok(Http::new(
        SERVER,
        &config.url,
        config.ca_file.as_deref(),
        Auth::Basic {
            password_file: config.password_file.clone(),
        },
    )?)
}

/// The documents of one table's step, added to `builder`, each with its record's version.
/// `kept` holds, for rows the source sent without some values (unchanged TOASTed columns),
/// the fields the index has for them (by document id).
fn push_rows(
    builder: &mut Builder,
    index: &str,
    table: &TableSchema,
    origins: &[(Arc<str>, u64)],
    rows: &[Row],
    action: Action,
    kept: &HashMap<String, serde_json::Map<String, serde_json::Value>>,
) -> Result<(), SearchError> {
    for row in rows {
        let id = document_id(table, &row.values).ok_or_else(|| no_key(table))?;
        let version = origins[row.record].1 + 1;
        // The values the source did not send, as the index holds them.
        let extra: Vec<(String, String)> = kept
            .get(&id)
            .map(|fields| {
                table
                    .columns
                    .iter()
                    .zip(&row.values)
                    .filter(|(_, v)| matches!(v, sluice_core::value::Value::Unavailable))
                    .filter_map(|(c, _)| Some((c.name.clone(), fields.get(&c.name)?.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        let extra: Vec<(&str, &str)> = extra
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        builder.push(action, index, &id, Some(version), row.record, |out| {
            write_document(out, table, &row.values, Flavor::OpenSearch, &extra)
        });
    }
    Ok(())
}

fn no_key(table: &TableSchema) -> SearchError {
    SearchError::Rejected(format!(
        "{} has no primary key, and a search index needs one id per row: add a primary key at \
         the source, or leave the table out of this sink's topics",
        table.table
    ))
}

impl Target for OpenSearchTarget {
    type Error = SearchError;

    async fn open(&mut self) -> Result<Offsets, SearchError> {
        let offsets_index = self.config.offsets_index.clone();
        let name = self.config.name.clone();
        let http = self.http()?.clone();
        let (_, root) = http
            .json(Method::GET, "/", None, "asking the cluster's version", &[])
            .await?;
        tracing::info!(
            url = http.base(),
            distribution = root["version"]["distribution"]
                .as_str()
                .unwrap_or("elasticsearch"),
            version = root["version"]["number"].as_str().unwrap_or("?"),
            "OpenSearch sink connected"
        );
        let (status, _) = http
            .send(
                Method::HEAD,
                &format!("/{offsets_index}"),
                None,
                "looking up the offsets index",
            )
            .await?;
        if status == 404 {
            let body = json!({
                "settings": { "index": { "number_of_shards": 1, "auto_expand_replicas": "0-1" } },
                "mappings": { "dynamic": false },
            });
            let what = format!("creating the offsets index {offsets_index}");
            create_index(&http, &offsets_index, &body, &what).await?;
        }
        let (status, answer) = http
            .json(
                Method::GET,
                &format!("/{offsets_index}/_doc/{name}"),
                None,
                &format!("reading the offsets of sink {name}"),
                &[404],
            )
            .await?;
        let control: Control = if status == 404 || answer["found"] != json!(true) {
            Control::default()
        } else {
            serde_json::from_value(answer["_source"].clone()).map_err(|e| {
                SearchError::Http(crate::http::HttpError::Unexpected {
                    server: SERVER,
                    reason: format!(
                    "the offsets document {offsets_index}/{name} is not sluice's ({e}); delete it \
                     to index everything again"
                ),
                })
            })?
        };
        self.applied = AppliedOffsets::stored(
            control
                .offsets
                .into_iter()
                .map(|o| ((o.topic, o.partition), o.next))
                .collect(),
        );
        self.ready.clear();
        // Indexes left relaxed by a run that stopped while loading: put them back (the next
        // large snapshot batch relaxes them again).
        self.relaxed = control.relaxed;
        let relaxed: Vec<String> = self.relaxed.keys().cloned().collect();
        for index in relaxed {
            self.restore(&index).await?;
        }
        Ok(self.applied.offsets.clone())
    }

    async fn apply(&mut self, batch: Prepared) -> Result<(), SearchError> {
        let Prepared {
            work,
            offsets,
            records,
            dead,
            origins,
            commit,
            ..
        } = batch;
        let mut builder = Builder::new(self.config.bulk_bytes, self.config.bulk_docs);
        let mut rejected = Vec::new();
        for item in &work {
            let topic = &origins[item.record].0;
            let index = index_name(&self.config.index, topic, &item.table.table);
            if let Some(problem) = index_name_problem(&index) {
                return Err(SearchError::Config(format!(
                    "index = {:?} gives {problem}; change the sink's index template",
                    self.config.index
                )));
            }
            self.ensure_index(&index, &item.table).await?;
            if self.config.relax_during_snapshot
                && item.snapshot_rows >= RELAX_MIN_ROWS
                && !self.relaxed.contains_key(&index)
            {
                self.relax(&index).await?;
            }
            for step in &item.steps {
                match step {
                    Step::Keyed {
                        upserts,
                        deletes,
                        partial,
                    } => {
                        let table = &item.table;
                        let none = HashMap::new();
                        let queue = |builder: &mut Builder, rows, action, kept| {
                            push_rows(builder, &index, table, &origins, rows, action, kept)
                        };
                        queue(&mut builder, upserts, Action::Index, &none)?;
                        queue(&mut builder, deletes, Action::Delete, &none)?;
                        if !partial.is_empty() {
                            // What is queued may hold these documents' earlier versions: apply
                            // it before reading the fields the source did not send.
                            let before = std::mem::replace(
                                &mut builder,
                                Builder::new(self.config.bulk_bytes, self.config.bulk_docs),
                            );
                            rejected.extend(self.send(before.finish()).await?);
                            let kept = self.kept_fields(&index, table, partial).await?;
                            queue(&mut builder, partial, Action::Index, &kept)?;
                        }
                    }
                    Step::Truncate { record } => {
                        let before = std::mem::replace(
                            &mut builder,
                            Builder::new(self.config.bulk_bytes, self.config.bulk_docs),
                        );
                        rejected.extend(self.send(before.finish()).await?);
                        self.truncate(&index, origins[*record].1 + 1).await?;
                    }
                    Step::Keyless(_) => return Err(no_key(&item.table)),
                }
            }
        }
        if !builder.is_empty() {
            rejected.extend(self.send(builder.finish()).await?);
        }
        let rejected = rejected
            .into_iter()
            .map(|(record, kind, reason)| (record, format!("{kind}: {reason}")))
            .collect();
        let writer = self.dead_letters.as_ref();
        super::divert_rejected(rejected, dead, &records, &origins, writer, "index").await?;
        if commit && self.applied.advance(offsets) {
            // (The documents are durable already: each bulk is answered after the translog
            // sync.)
            self.save_control().await?;
        }
        Ok(())
    }

    async fn idle(&mut self) -> Result<(), SearchError> {
        if self.applied.unsaved() {
            self.save_control().await?;
        }
        let relaxed: Vec<String> = self.relaxed.keys().cloned().collect();
        for index in relaxed {
            self.restore(&index).await?;
        }
        Ok(())
    }
}

/// `sluice check --connect`: the cluster answers, its health, and whether the sink may write
/// its offsets index.
pub async fn probe(config: &OpenSearchSinkConfig) -> Result<String, SearchError> {
    let http = connect(config)?;
    let (_, root) = http
        .json(Method::GET, "/", None, "asking the cluster's version", &[])
        .await?;
    let (_, health) = http
        .json(
            Method::GET,
            "/_cluster/health",
            None,
            "asking the cluster's health",
            &[],
        )
        .await?;
    let status = health["status"].as_str().unwrap_or("unknown");
    if status == "red" {
        return Err(SearchError::Http(crate::http::HttpError::Unexpected {
            server: SERVER,
            reason: format!(
                "cluster {} is red (primary shards unassigned): writes to those indexes fail \
                 until it recovers",
                health["cluster_name"].as_str().unwrap_or("?")
            ),
        }));
    }
    let index = &config.offsets_index;
    let probe_id = format!("{}-probe", config.name);
    http.json(
        Method::PUT,
        &format!("/{index}/_doc/{probe_id}"),
        Some(&json!({ "sink": config.name, "probe": true })),
        &format!("writing a probe document to {index}"),
        &[],
    )
    .await?;
    http.json(
        Method::DELETE,
        &format!("/{index}/_doc/{probe_id}"),
        None,
        &format!("deleting the probe document from {index}"),
        &[404],
    )
    .await?;
    Ok(format!(
        "{} {} at {}, cluster {} {status}; offsets index {index} writable",
        root["version"]["distribution"]
            .as_str()
            .unwrap_or("elasticsearch"),
        root["version"]["number"].as_str().unwrap_or("?"),
        http.base(),
        health["cluster_name"].as_str().unwrap_or("?"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_names_are_checked() {
        assert_eq!(index_name_problem("shop.public.items"), None);
        assert!(index_name_problem("_x").unwrap().contains("starts with"));
        assert!(index_name_problem("a b").unwrap().contains("' '"));
        assert!(index_name_problem("Ab").unwrap().contains("upper-case"));
    }
}
