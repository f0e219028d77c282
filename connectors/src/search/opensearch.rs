//! The OpenSearch/Elasticsearch sink: each table's rows as documents of an index.
//!
//! A batch arrives planned (`replica::plan`: the final state of each key, truncates in order)
//! and is applied as `_bulk` requests, `max_in_flight` at a time: upserts as `index` and
//! deletes as `delete`, both with `version_type=external` and the record's log offset (+1) as
//! version, so that a replay or a late retry is refused (409, counted as `stale`) instead of
//! overwriting something newer; partial updates (unchanged TOASTed columns) as `update` with
//! `doc_as_upsert`. A truncate sends what came before it, then empties the index
//! (`_delete_by_query`). Items the cluster refuses as overloaded (429) or failing (5xx) are
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
pub mod mapping;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures_util::StreamExt;
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sluice_core::event::TableSchema;
use sluice_core::pipeline::TypedSink;
use sluice_core::retry::{Classify, ErrorKind};
use sluice_core::sink::{DeadLetter, DeadLetterWriter, Offsets};
use sluice_schema_registry::changes::RecordDecoder;
use sluice_schema_registry::registry::Registry;

use self::bulk::{Action, Builder, Outcome};
use self::config::MappingMode;
pub use self::config::OpenSearchSinkConfig;
use super::document::{document_id, write_document, Flavor};
use super::http::{Auth, Http};
use super::{backoff, index_name, metric, SearchError};
use crate::replica::{self, Prepared, ReplicaSettings, ReplicaSink, Row, Step, Target};

/// Snapshot rows of one index in one batch from which the index is relaxed for loading.
const RELAX_MIN_ROWS: usize = 1000;
/// Attempts at an item the cluster keeps refusing as overloaded before the sink gives up
/// (the runtime then restarts it from its stored offsets, with its own backoff).
const MAX_ATTEMPTS: u32 = 8;
const BULK_PATH: &str =
    "/_bulk?filter_path=errors,items.*.status,items.*.error.type,items.*.error.reason";
const SERVER: &str = "OpenSearch";

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
        stored: Offsets::new(),
    };
    replica::typed_sink(target, settings, registry)
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
    /// The offsets the offsets document holds.
    stored: Offsets,
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

    /// Creates `index` if it does not exist (with the table's mapping), or adds the fields of a
    /// new table version to its mapping.
    async fn ensure_index(
        &mut self,
        index: &str,
        table: &Arc<TableSchema>,
    ) -> Result<(), SearchError> {
        if self
            .ready
            .get(index)
            .is_some_and(|t| t.columns == table.columns)
        {
            return Ok(());
        }
        let config = &self.config;
        let mapping =
            (config.mapping == MappingMode::Create).then(|| mapping::mapping(table, config.json));
        let http = self.http.as_ref().expect("opened");
        let (status, _) = http
            .send(
                Method::HEAD,
                &format!("/{index}"),
                None,
                &format!("looking up index {index}"),
            )
            .await?;
        if status == 404 {
            let mut settings = serde_json::Map::new();
            if let Some(shards) = config.number_of_shards {
                settings.insert("number_of_shards".into(), json!(shards));
            }
            if let Some(replicas) = config.number_of_replicas {
                settings.insert("number_of_replicas".into(), json!(replicas));
            }
            if let Some(refresh) = &config.refresh_interval {
                settings.insert("refresh_interval".into(), json!(refresh));
            }
            let mut body = json!({ "settings": { "index": settings } });
            if let Some(mapping) = &mapping {
                body["mappings"] = mapping.clone();
            }
            let what = format!("creating index {index} for {}", table.table);
            let (status, answer) = http
                .json(
                    Method::PUT,
                    &format!("/{index}"),
                    Some(&body),
                    &what,
                    &[400],
                )
                .await?;
            if status == 400 && !already_exists(&answer) {
                return Err(http.status_error(&what, status, answer.to_string().as_bytes()));
            }
            tracing::info!(index, table = %table.table, "created index");
        } else if let Some(mapping) = &mapping {
            let what = format!("adding the fields of {} to index {index}", table.table);
            let (status, answer) = http
                .json(
                    Method::PUT,
                    &format!("/{index}/_mapping"),
                    Some(mapping),
                    &what,
                    &[400],
                )
                .await?;
            if status == 400 {
                // A field whose type cannot change: documents go on with the index's type (a
                // value it refuses is rejected, to the dead-letter topic).
                tracing::warn!(index, table = %table.table,
                    reason = super::http::server_reason(&answer).unwrap_or_default(),
                    "the index's mapping differs from the table's and cannot be changed; \
                     documents are indexed under the existing mapping (reindex to change it)");
            }
        }
        self.ready.insert(index.to_owned(), Arc::clone(table));
        Ok(())
    }

    /// Turns `index`'s refresh off and its replicas to 0 for a snapshot load, remembering
    /// (durably, before changing anything) what to put back.
    async fn relax(&mut self, index: &str) -> Result<(), SearchError> {
        let http = self.http.as_ref().expect("opened");
        let what = format!("reading the settings of index {index}");
        let (_, answer) = http
            .json(
                Method::GET,
                &format!("/{index}/_settings?flat_settings=true"),
                None,
                &what,
                &[],
            )
            .await?;
        let settings = &answer[index]["settings"];
        let text = |key: &str| {
            settings
                .get(key)
                .and_then(|v| v.as_str())
                .map(str::to_owned)
        };
        let relaxed = Relaxed {
            refresh_interval: text("index.refresh_interval"),
            number_of_replicas: text("index.number_of_replicas"),
        };
        self.relaxed.insert(index.to_owned(), relaxed);
        self.save_control().await?;
        let body = json!({ "index": { "refresh_interval": "-1", "number_of_replicas": 0 } });
        let http = self.http.as_ref().expect("opened");
        http.json(
            Method::PUT,
            &format!("/{index}/_settings"),
            Some(&body),
            &format!("relaxing index {index} for a snapshot load"),
            &[],
        )
        .await?;
        tracing::info!(
            index,
            "a snapshot loads the index: refresh off and replicas 0 until it is done"
        );
        Ok(())
    }

    /// Puts back what [`relax`](Self::relax) changed, and refreshes the index so that what was
    /// loaded is searchable.
    async fn restore(&mut self, index: &str) -> Result<(), SearchError> {
        let Some(relaxed) = self.relaxed.get(index).cloned() else {
            return Ok(());
        };
        let http = self.http.as_ref().expect("opened");
        let body = json!({ "index": {
            "refresh_interval": relaxed.refresh_interval,
            "number_of_replicas": relaxed.number_of_replicas,
        } });
        let what = format!("restoring the settings of index {index}");
        let (status, _) = http
            .json(
                Method::PUT,
                &format!("/{index}/_settings"),
                Some(&body),
                &what,
                &[404],
            )
            .await?;
        if status != 404 {
            http.json(
                Method::POST,
                &format!("/{index}/_refresh"),
                None,
                &format!("refreshing index {index}"),
                &[404],
            )
            .await?;
        }
        self.relaxed.remove(index);
        self.save_control().await?;
        tracing::info!(index, "snapshot load done: refresh and replicas restored");
        Ok(())
    }

    /// Writes the sink's document: the stored offsets and the relaxed indexes.
    async fn save_control(&self) -> Result<(), SearchError> {
        let control = Control {
            sink: self.config.name.clone(),
            offsets: self
                .stored
                .iter()
                .map(|((topic, partition), next)| StoredOffset {
                    topic: topic.clone(),
                    partition: *partition,
                    next: *next,
                })
                .collect(),
            relaxed: self.relaxed.clone(),
            updated_at_ms: sluice_core::clock::now_us() / 1000,
        };
        let body = serde_json::to_value(&control).expect("plain data");
        let http = self.http.as_ref().expect("opened");
        http.json(
            Method::PUT,
            &format!("/{}/_doc/{}", self.config.offsets_index, self.config.name),
            Some(&body),
            &format!("storing the offsets of sink {}", self.config.name),
            &[],
        )
        .await?;
        Ok(())
    }

    /// Empties `index` (a truncate at the source), after what was sent before it is applied.
    async fn truncate(&self, index: &str) -> Result<(), SearchError> {
        let http = self.http.as_ref().expect("opened");
        // Documents indexed since the last refresh are invisible to the query: refresh first.
        http.json(
            Method::POST,
            &format!("/{index}/_refresh"),
            None,
            &format!("refreshing index {index} before a truncate"),
            &[404],
        )
        .await?;
        let (status, answer) = http
            .json(
                Method::POST,
                &format!("/{index}/_delete_by_query?conflicts=proceed&refresh=true"),
                Some(&json!({ "query": { "match_all": {} } })),
                &format!("emptying index {index} (a truncate)"),
                &[404],
            )
            .await?;
        if status != 404 {
            let deleted = answer["deleted"].as_u64().unwrap_or(0);
            tracing::info!(index, deleted, "truncate: index emptied");
        }
        Ok(())
    }

    /// Sends bulk requests, `max_in_flight` at a time, sending again what the cluster refuses
    /// as overloaded; returns the rejected items as (record, error type, reason).
    async fn send(
        &self,
        requests: Vec<bulk::Request>,
    ) -> Result<Vec<(usize, String, String)>, SearchError> {
        let http = self.http.as_ref().expect("opened");
        let sink = self.config.name.clone();
        let mut rejected = Vec::new();
        let mut pending = requests;
        let mut attempt = 0;
        while !pending.is_empty() {
            let results: Vec<_> = futures_util::stream::iter(pending)
                .map(|request| {
                    let sink = &sink;
                    let body = Bytes::from(request.body);
                    let items = request.items;
                    async move {
                        let start = Instant::now();
                        let result = http
                            .send(
                                Method::POST,
                                BULK_PATH,
                                Some((body.clone(), "application/x-ndjson")),
                                "a bulk request",
                            )
                            .await;
                        metrics::histogram!(metric::BULK_SECONDS, "sink" => sink.clone())
                            .record(start.elapsed().as_secs_f64());
                        (body, items, result)
                    }
                })
                .buffer_unordered(self.config.max_in_flight)
                .collect()
                .await;
            let mut retry = Builder::new(self.config.bulk_bytes, self.config.bulk_docs);
            let mut last = String::new();
            let mut counts: HashMap<&'static str, u64> = HashMap::new();
            for (body, items, result) in results {
                let answer = match result.and_then(|(status, bytes)| {
                    if status == 200 {
                        serde_json::from_slice::<bulk::Answer>(&bytes).map_err(|e| {
                            SearchError::Unexpected {
                                server: SERVER,
                                reason: format!(
                                    "a bulk answer that does not parse ({e}): {}",
                                    super::http::shorten(&bytes)
                                ),
                            }
                        })
                    } else {
                        Err(http.status_error("a bulk request", status, &bytes))
                    }
                }) {
                    Ok(answer) => answer,
                    Err(err) if err.kind() == ErrorKind::Transient => {
                        last = err.to_string();
                        items.iter().for_each(|item| retry.again(&body, item));
                        continue;
                    }
                    Err(err) => return Err(err),
                };
                if !answer.errors {
                    for item in &items {
                        *counts.entry(done_label(item.action)).or_default() += 1;
                    }
                    continue;
                }
                if answer.items.len() != items.len() {
                    return Err(SearchError::Unexpected {
                        server: SERVER,
                        reason: format!(
                            "a bulk of {} items answered for {}",
                            items.len(),
                            answer.items.len()
                        ),
                    });
                }
                for (item, reply) in items.iter().zip(&answer.items) {
                    match bulk::outcome(item.action, &reply.index) {
                        Outcome::Indexed => *counts.entry("indexed").or_default() += 1,
                        Outcome::Deleted => *counts.entry("deleted").or_default() += 1,
                        Outcome::Stale => *counts.entry("stale").or_default() += 1,
                        Outcome::Retry(reason) => {
                            last = reason;
                            retry.again(&body, item);
                        }
                        Outcome::Rejected(kind, reason) => {
                            metrics::counter!(metric::REJECTIONS, "sink" => sink.clone(), "reason" => kind.clone())
                                .increment(1);
                            *counts.entry("rejected").or_default() += 1;
                            rejected.push((item.record, kind, reason));
                        }
                    }
                }
            }
            for (result, count) in counts {
                metrics::counter!(metric::DOCUMENTS, "sink" => sink.clone(), "result" => result)
                    .increment(count);
            }
            pending = retry.finish();
            if pending.is_empty() {
                break;
            }
            attempt += 1;
            let count: usize = pending.iter().map(|r| r.items.len()).sum();
            if attempt >= MAX_ATTEMPTS {
                return Err(SearchError::ItemsFailing {
                    server: SERVER,
                    count,
                    attempts: attempt,
                    last,
                });
            }
            metrics::counter!(metric::RETRIES, "sink" => sink.clone()).increment(count as u64);
            tracing::warn!(documents = count, attempt, reason = %last, "cluster refused documents for now; sending them again");
            tokio::time::sleep(backoff(attempt)).await;
        }
        Ok(rejected)
    }
}

fn done_label(action: Action) -> &'static str {
    match action {
        Action::Delete => "deleted",
        Action::Index | Action::Update => "indexed",
    }
}

fn already_exists(answer: &serde_json::Value) -> bool {
    answer["error"]["type"].as_str() == Some("resource_already_exists_exception")
}

/// The HTTP client for a sink's cluster.
fn connect(config: &OpenSearchSinkConfig) -> Result<Http, SearchError> {
    Http::new(
        SERVER,
        &config.url,
        config.ca_file.as_deref(),
        Auth::Basic {
            password_file: config.password_file.clone(),
        },
    )
}

/// The documents of one table's step, added to `builder`.
fn push_rows(
    builder: &mut Builder,
    index: &str,
    table: &TableSchema,
    origins: &[(Arc<str>, u64)],
    rows: &[Row],
    action: Action,
) -> Result<(), SearchError> {
    for row in rows {
        let id = document_id(table, &row.values).ok_or_else(|| no_key(table))?;
        let version = (action != Action::Update).then(|| origins[row.record].1 + 1);
        builder.push(action, index, &id, version, row.record, |out| {
            write_document(out, table, &row.values, Flavor::OpenSearch, &[])
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
            let (status, answer) = http
                .json(
                    Method::PUT,
                    &format!("/{offsets_index}"),
                    Some(&body),
                    &what,
                    &[400],
                )
                .await?;
            if status == 400 && !already_exists(&answer) {
                return Err(http.status_error(&what, status, answer.to_string().as_bytes()));
            }
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
                SearchError::Unexpected {
                    server: SERVER,
                    reason: format!(
                    "the offsets document {offsets_index}/{name} is not sluice's ({e}); delete it \
                     to index everything again"
                ),
                }
            })?
        };
        self.stored = control
            .offsets
            .into_iter()
            .map(|o| ((o.topic, o.partition), o.next))
            .collect();
        self.ready.clear();
        // Indexes left relaxed by a run that stopped while loading: put them back (the next
        // large snapshot batch relaxes them again).
        self.relaxed = control.relaxed;
        let relaxed: Vec<String> = self.relaxed.keys().cloned().collect();
        for index in relaxed {
            self.restore(&index).await?;
        }
        Ok(self.stored.clone())
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
        let mut dead = dead;
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
                        push_rows(
                            &mut builder,
                            &index,
                            table,
                            &origins,
                            upserts,
                            Action::Index,
                        )?;
                        push_rows(
                            &mut builder,
                            &index,
                            table,
                            &origins,
                            deletes,
                            Action::Delete,
                        )?;
                        push_rows(
                            &mut builder,
                            &index,
                            table,
                            &origins,
                            partial,
                            Action::Update,
                        )?;
                    }
                    Step::Truncate => {
                        let before = std::mem::replace(
                            &mut builder,
                            Builder::new(self.config.bulk_bytes, self.config.bulk_docs),
                        );
                        rejected.extend(self.send(before.finish()).await?);
                        self.truncate(&index).await?;
                    }
                    Step::Keyless(_) => return Err(no_key(&item.table)),
                }
            }
        }
        if !builder.is_empty() {
            rejected.extend(self.send(builder.finish()).await?);
        }
        for (record, kind, reason) in rejected {
            let error = format!("{kind}: {reason}");
            match records.get(record) {
                Some(rejected) => dead.push(DeadLetter {
                    record: rejected.clone(),
                    error,
                }),
                None => {
                    let (topic, offset) = &origins[record];
                    return Err(SearchError::Rejected(format!(
                        "the index rejected the document of {topic} offset {offset}: {error}; \
                         set dead_letter_topic to divert such documents and go on"
                    )));
                }
            }
        }
        replica::deliver_dead_letters(self.dead_letters.as_ref(), dead).await?;
        if commit {
            self.stored.extend(offsets);
            self.save_control().await?;
        }
        Ok(())
    }

    async fn idle(&mut self) -> Result<(), SearchError> {
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
        return Err(SearchError::Unexpected {
            server: SERVER,
            reason: format!(
                "cluster {} is red (primary shards unassigned): writes to those indexes fail \
                 until it recovers",
                health["cluster_name"].as_str().unwrap_or("?")
            ),
        });
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
