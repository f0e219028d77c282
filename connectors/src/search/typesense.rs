//! The Typesense sink: each table's rows as documents of a collection.
//!
//! Typesense has no external versions, so order is kept by the sink itself: a batch arrives
//! planned (`replica::plan`: the final state of each key), its steps are applied one after the
//! other (upserts through `documents/import?action=upsert`, deletes by id filter, rows without
//! their unchanged TOASTed values through `action=emplace`, which keeps the fields it is not
//! given; a truncate deletes every document the collection holds), and only after that are
//! the sink's offsets stored in a document of `offsets_collection` (at most once a second, and
//! when the sink catches up). A crash replays from those offsets: the same final states,
//! applied in the same order, so the collection ends exactly as the table is. Import lines the server rejects (a value the
//! schema refuses) go to the dead-letter topic with its reason; a server that is not ready or
//! overloaded gets the request again with backoff.
//!
//! Collections are created on first use with fields made from the table's schema
//! (`schema.rs`); a new table version adds its new fields.

pub mod config;
mod schema;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures_util::StreamExt;
use reqwest::Method;
use serde_json::json;
use sluice_core::event::TableSchema;
use sluice_core::pipeline::TypedSink;
use sluice_core::retry::{Classify, ErrorKind};
use sluice_core::sink::{DeadLetterWriter, Offsets};
use sluice_schema_registry::changes::RecordDecoder;
use sluice_schema_registry::registry::Registry;

pub use self::config::TypesenseSinkConfig;
use super::document::{document_id, write_document, write_str, Flavor};
use super::{backoff, index_name, metric, AppliedOffsets, SearchError};
use crate::http::{Auth, Http};
use crate::replica::{self, Prepared, ReplicaSettings, ReplicaSink, Row, Step, Target};

const SERVER: &str = "Typesense";
/// Attempts at a request the server keeps refusing as not ready or overloaded.
const MAX_ATTEMPTS: u32 = 8;
/// Ids per delete request (they travel in the URL).
const DELETE_IDS: usize = 100;

/// The sink as the runtime runs it.
pub type TypesenseSink = TypedSink<ReplicaSink<TypesenseTarget>, RecordDecoder>;

/// Builds the sink for `config`, decoding records through `registry`.
pub fn typesense_sink(
    config: TypesenseSinkConfig,
    registry: Arc<Registry>,
    dead_letters: Option<DeadLetterWriter>,
) -> TypesenseSink {
    let settings = ReplicaSettings {
        dead_letters: dead_letters.is_some(),
        batch_history: false,
        whole_commits: false,
        max_pending_bytes: sluice_core::pipeline::DEFAULT_MAX_PENDING_BYTES,
    };
    let target = TypesenseTarget {
        config,
        http: None,
        dead_letters,
        ready: HashMap::new(),
        applied: AppliedOffsets::default(),
    };
    replica::typed_sink(target, settings, registry).max_write_bytes(super::WRITE_BYTES)
}

/// The server a sink writes to.
pub struct TypesenseTarget {
    config: TypesenseSinkConfig,
    http: Option<Http>,
    dead_letters: Option<DeadLetterWriter>,
    /// Collections made ready in this run, with the table version they were last made for.
    ready: HashMap<String, Arc<TableSchema>>,
    /// The offsets applied, and whether the offsets document is behind them.
    applied: AppliedOffsets,
}

/// How an import line is sent: a whole document, or the fields given (others kept).
#[derive(Clone, Copy)]
enum Import {
    Upsert,
    Emplace,
}

/// The HTTP client for a sink's server.
fn connect(config: &TypesenseSinkConfig) -> Result<Http, SearchError> {
    let key = config
        .resolve_api_key()
        .map_err(|e| SearchError::Config(format!("sink {}: {e}", config.name)))?;
    Ok(Http::new(
        SERVER,
        &config.url,
        config.ca_file.as_deref(),
        Auth::ApiKey {
            header: "x-typesense-api-key",
            key,
        },
    )?)
}

/// The server answers and is ready (a node still loading or without a raft leader answers
/// 503: retried, like a server that cannot be reached).
async fn ready(http: &Http) -> Result<(), SearchError> {
    let (_, health) = http
        .json(
            Method::GET,
            "/health",
            None,
            "asking the server's health",
            &[503],
        )
        .await?;
    if health["ok"] != json!(true) {
        return Err(SearchError::Http(crate::http::HttpError::Unreachable {
            server: SERVER,
            url: http.base().to_owned(),
            reason: format!("the server is not ready: {health}"),
        }));
    }
    Ok(())
}

/// Bytes a URL's path segment or query value keeps as they are (RFC 3986's unreserved).
const UNRESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// `text` escaped for a URL's path segment or query value.
fn escape(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, UNRESERVED).to_string()
}

/// The id of a sink's offsets document: not its bare name, which could be one of the
/// documents API's own paths (`search`, `export`, `import`).
pub fn offsets_id(sink: &str) -> String {
    format!("sink.{sink}")
}

fn no_key(table: &TableSchema) -> SearchError {
    SearchError::Rejected(format!(
        "{} has no primary key, and a collection needs one id per row: add a primary key at \
         the source, or leave the table out of this sink's topics",
        table.table
    ))
}

impl TypesenseTarget {
    fn http(&self) -> &Http {
        self.http.as_ref().expect("opened")
    }

    /// Creates `collection` if it does not exist, or adds a new table version's fields.
    async fn ensure_collection(
        &mut self,
        collection: &str,
        table: &Arc<TableSchema>,
    ) -> Result<(), SearchError> {
        if self
            .ready
            .get(collection)
            .is_some_and(|t| t.columns == table.columns)
        {
            return Ok(());
        }
        let http = self.http();
        let path = format!("/collections/{}", escape(collection));
        let (status, existing) = http
            .json(
                Method::GET,
                &path,
                None,
                &format!("looking up collection {collection}"),
                &[404],
            )
            .await?;
        let fields = schema::fields(table);
        if status == 404 {
            let body = json!({ "name": collection, "fields": fields });
            let what = format!("creating collection {collection} for {}", table.table);
            // 409: another process made it meanwhile.
            let (status, _) = http
                .json(Method::POST, "/collections", Some(&body), &what, &[409])
                .await?;
            if status != 409 {
                tracing::info!(collection, table = %table.table, "created collection");
            }
        } else {
            let known: Vec<&str> = existing["fields"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|f| f["name"].as_str())
                .collect();
            let new: Vec<&serde_json::Value> = fields
                .iter()
                .filter(|f| !known.contains(&f["name"].as_str().unwrap_or_default()))
                .collect();
            if !new.is_empty() {
                let what = format!("adding the new fields of {} to {collection}", table.table);
                let (status, answer) = http
                    .json(
                        Method::PATCH,
                        &path,
                        Some(&json!({ "fields": new })),
                        &what,
                        &[400],
                    )
                    .await?;
                if status == 400 {
                    tracing::warn!(collection, table = %table.table,
                        reason = crate::http::server_reason(&answer).unwrap_or_default(),
                        "cannot add the table's new columns to the collection; documents keep \
                         their values but the fields are not searchable");
                }
            }
        }
        self.ready.insert(collection.to_owned(), Arc::clone(table));
        Ok(())
    }

    /// Imports `rows` into `collection`, `batch_docs` per request, `max_in_flight` at a time;
    /// returns the rejected lines as (record, reason).
    async fn import(
        &self,
        collection: &str,
        table: &TableSchema,
        rows: &[Row],
        how: Import,
    ) -> Result<Vec<(usize, String)>, SearchError> {
        let action = match how {
            Import::Upsert => "upsert",
            Import::Emplace => "emplace",
        };
        let path = format!(
            "/collections/{}/documents/import?action={action}",
            escape(collection)
        );
        let mut requests: Vec<(Bytes, Vec<usize>)> = Vec::new();
        for chunk in rows.chunks(self.config.batch_docs) {
            let mut body = Vec::with_capacity(chunk.len() * 128);
            let mut records = Vec::with_capacity(chunk.len());
            for row in chunk {
                let id = document_id(table, &row.values).ok_or_else(|| no_key(table))?;
                let mut id_json = Vec::with_capacity(id.len() + 2);
                write_str(&mut id_json, &id);
                let id_json = String::from_utf8(id_json).expect("JSON is UTF-8");
                write_document(
                    &mut body,
                    table,
                    &row.values,
                    Flavor::Typesense,
                    &[("id", &id_json)],
                );
                body.push(b'\n');
                records.push(row.record);
            }
            requests.push((Bytes::from(body), records));
        }
        let sink = &self.config.name;
        let http = self.http();
        let mut rejected = Vec::new();
        let results: Vec<Result<Vec<(usize, String)>, SearchError>> =
            futures_util::stream::iter(requests)
                .map(|(body, records)| {
                    let path = &path;
                    async move {
                        let mut attempt = 0;
                        loop {
                            let start = Instant::now();
                            let result = http
                                .send(Method::POST, path, Some((body.clone(), "text/plain")), "an import")
                                .await
                                .map_err(SearchError::from)
                                .and_then(|(status, answer)| match status {
                                    200 => Ok(answer),
                                    _ => Err(http.status_error("an import", status, &answer).into()),
                                });
                            metrics::histogram!(metric::BULK_SECONDS, "sink" => sink.clone())
                                .record(start.elapsed().as_secs_f64());
                            match result {
                                Ok(answer) => return Ok(import_rejections(&answer, &records, sink)),
                                Err(err) if err.kind() == ErrorKind::Transient => {
                                    attempt += 1;
                                    if attempt >= MAX_ATTEMPTS {
                                        return Err(err);
                                    }
                                    metrics::counter!(metric::RETRIES, "sink" => sink.clone())
                                        .increment(records.len() as u64);
                                    tracing::warn!(error = %err, attempt, "import refused for now; sending it again");
                                    tokio::time::sleep(backoff(attempt)).await;
                                }
                                Err(err) => return Err(err),
                            }
                        }
                    }
                })
                .buffer_unordered(self.config.max_in_flight)
                .collect()
                .await;
        for result in results {
            rejected.extend(result?);
        }
        Ok(rejected)
    }

    /// Deletes the documents `ids` from `collection`.
    async fn delete(&self, collection: &str, ids: &[String]) -> Result<(), SearchError> {
        let http = self.http();
        let base = format!("/collections/{}/documents", escape(collection));
        let (plain, odd): (Vec<&String>, Vec<&String>) =
            ids.iter().partition(|id| !id.contains('`'));
        for chunk in plain.chunks(DELETE_IDS) {
            let list: Vec<String> = chunk.iter().map(|id| format!("`{id}`")).collect();
            let filter = format!("id:=[{}]", list.join(","));
            let path = format!("{base}?filter_by={}", escape(&filter));
            http.json(
                Method::DELETE,
                &path,
                None,
                &format!("deleting documents of {collection}"),
                &[404],
            )
            .await?;
        }
        // An id with a backtick cannot be quoted in a filter: one request each.
        for id in odd {
            let path = format!("{base}/{}", escape(id));
            http.json(
                Method::DELETE,
                &path,
                None,
                &format!("deleting a document of {collection}"),
                &[404],
            )
            .await?;
        }
        metrics::counter!(metric::DOCUMENTS, "sink" => self.config.name.clone(), "result" => "deleted")
            .increment(ids.len() as u64);
        Ok(())
    }

    /// Deletes every document of `collection` (a truncate at the source).
    async fn truncate(&self, collection: &str) -> Result<(), SearchError> {
        let http = self.http();
        let path = format!(
            "/collections/{}/documents/export?include_fields=id",
            escape(collection)
        );
        let (status, body) = http
            .send(
                Method::GET,
                &path,
                None,
                &format!("listing the documents of {collection}"),
            )
            .await?;
        if status == 404 {
            return Ok(());
        }
        if status != 200 {
            return Err(http
                .status_error(
                    &format!("listing the documents of {collection}"),
                    status,
                    &body,
                )
                .into());
        }
        let ids: Vec<String> = body
            .split(|b| *b == b'\n')
            .filter(|line| !line.is_empty())
            .filter_map(|line| serde_json::from_slice::<serde_json::Value>(line).ok())
            .filter_map(|doc| doc["id"].as_str().map(str::to_owned))
            .collect();
        self.delete(collection, &ids).await?;
        tracing::info!(
            collection,
            documents = ids.len(),
            "truncate: collection emptied"
        );
        Ok(())
    }

    /// Stores the sink's offsets in its document of `offsets_collection`.
    async fn save_offsets(&mut self) -> Result<(), SearchError> {
        let offsets: Vec<serde_json::Value> = self
            .applied
            .offsets
            .iter()
            .map(|((topic, partition), next)| json!({"topic": topic, "partition": partition, "next": next}))
            .collect();
        let doc = json!({
            "id": offsets_id(&self.config.name),
            "sink": self.config.name,
            "offsets": serde_json::Value::Array(offsets).to_string(),
        });
        let path = format!(
            "/collections/{}/documents?action=upsert",
            escape(&self.config.offsets_collection)
        );
        self.http()
            .json(
                Method::POST,
                &path,
                Some(&doc),
                &format!("storing the offsets of sink {}", self.config.name),
                &[],
            )
            .await?;
        self.applied.saved();
        Ok(())
    }
}

/// The lines of an import answer that failed, as (record, reason); counts the rest.
fn import_rejections(answer: &[u8], records: &[usize], sink: &str) -> Vec<(usize, String)> {
    let mut rejected = Vec::new();
    let mut indexed = 0u64;
    for (line, record) in answer
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .zip(records)
    {
        let result: serde_json::Value = serde_json::from_slice(line).unwrap_or_default();
        if result["success"] == json!(true) {
            indexed += 1;
            continue;
        }
        let reason = result["error"].as_str().unwrap_or("rejected").to_owned();
        metrics::counter!(metric::REJECTIONS, "sink" => sink.to_owned(), "reason" => rejection_kind(&reason))
            .increment(1);
        rejected.push((*record, reason));
    }
    metrics::counter!(metric::DOCUMENTS, "sink" => sink.to_owned(), "result" => "indexed")
        .increment(indexed);
    metrics::counter!(metric::DOCUMENTS, "sink" => sink.to_owned(), "result" => "rejected")
        .increment(rejected.len() as u64);
    rejected
}

/// A short label for a rejection's reason (metrics): the field type check, or other.
fn rejection_kind(reason: &str) -> &'static str {
    if reason.contains("must be") {
        "field_type"
    } else {
        "other"
    }
}

impl Target for TypesenseTarget {
    type Error = SearchError;

    async fn open(&mut self) -> Result<Offsets, SearchError> {
        if self.http.is_none() {
            self.http = Some(connect(&self.config)?);
        }
        let http = self.http();
        ready(http).await?;
        let collection = self.config.offsets_collection.clone();
        let path = format!("/collections/{}", escape(&collection));
        let (status, _) = http
            .json(
                Method::GET,
                &path,
                None,
                "looking up the offsets collection",
                &[404],
            )
            .await?;
        if status == 404 {
            let body = json!({ "name": collection, "fields": [
                { "name": "sink", "type": "string" },
                { "name": "offsets", "type": "string", "index": false, "optional": true },
            ]});
            http.json(
                Method::POST,
                "/collections",
                Some(&body),
                &format!("creating the offsets collection {collection}"),
                &[409],
            )
            .await?;
        }
        let name = &self.config.name;
        let (status, doc) = http
            .json(
                Method::GET,
                &format!("{path}/documents/{}", escape(&offsets_id(name))),
                None,
                &format!("reading the offsets of sink {name}"),
                &[404],
            )
            .await?;
        let mut stored = Offsets::new();
        if status != 404 {
            let text = doc["offsets"].as_str().unwrap_or("[]");
            let list: Vec<serde_json::Value> = serde_json::from_str(text).map_err(|e| SearchError::Http(crate::http::HttpError::Unexpected {
                server: SERVER,
                reason: format!("the offsets document of sink {name} in {collection} is not sluice's ({e}); delete it to index everything again"),
            }))?;
            for entry in list {
                let (Some(topic), Some(partition), Some(next)) = (
                    entry["topic"].as_str(),
                    entry["partition"].as_u64(),
                    entry["next"].as_u64(),
                ) else {
                    continue;
                };
                stored.insert((topic.to_owned(), partition as u32), next);
            }
        }
        tracing::info!(url = http.base(), "Typesense sink connected");
        self.applied = AppliedOffsets::stored(stored);
        self.ready.clear();
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
        let mut rejected = Vec::new();
        for item in &work {
            let topic = &origins[item.record].0;
            let collection = index_name(&self.config.collection, topic, &item.table.table);
            self.ensure_collection(&collection, &item.table).await?;
            let table = &item.table;
            for step in &item.steps {
                match step {
                    Step::Keyed {
                        upserts,
                        deletes,
                        partial,
                    } => {
                        rejected.extend(
                            self.import(&collection, table, upserts, Import::Upsert)
                                .await?,
                        );
                        let ids: Vec<String> = deletes
                            .iter()
                            .map(|row| document_id(table, &row.values).ok_or_else(|| no_key(table)))
                            .collect::<Result<_, _>>()?;
                        self.delete(&collection, &ids).await?;
                        rejected.extend(
                            self.import(&collection, table, partial, Import::Emplace)
                                .await?,
                        );
                    }
                    Step::Truncate { .. } => self.truncate(&collection).await?,
                    Step::Keyless(_) => return Err(no_key(table)),
                }
            }
        }
        let writer = self.dead_letters.as_ref();
        super::divert_rejected(rejected, dead, &records, &origins, writer, "collection").await?;
        if commit && self.applied.advance(offsets) {
            self.save_offsets().await?;
        }
        Ok(())
    }

    async fn idle(&mut self) -> Result<(), SearchError> {
        if self.applied.unsaved() {
            self.save_offsets().await?;
        }
        Ok(())
    }
}

/// `sluice check --connect`: the server answers, is ready, and the key may read collections.
pub async fn probe(config: &TypesenseSinkConfig) -> Result<String, SearchError> {
    let http = connect(config)?;
    ready(&http).await?;
    let (_, collections) = http
        .json(
            Method::GET,
            "/collections",
            None,
            "listing collections (checks the API key)",
            &[],
        )
        .await?;
    Ok(format!(
        "Typesense at {}: ready, {} collections visible to the key",
        http.base(),
        collections.as_array().map_or(0, Vec::len)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_import_answers() {
        assert_eq!(escape("id:=[`a,b`]"), "id%3A%3D%5B%60a%2Cb%60%5D");
        let answer = b"{\"success\":true}\n{\"code\":400,\"error\":\"Field `n` must be an int32.\",\"success\":false}\n";
        let rejected = import_rejections(answer, &[4, 9], "s");
        assert_eq!(
            rejected,
            vec![(9, "Field `n` must be an int32.".to_owned())]
        );
    }
}
