//! What the sink does to indexes besides writing documents: creates them with their mapping
//! (or adds a new table version's fields), relaxes them while a snapshot loads and puts them
//! back, empties them for a truncate, reads fields a row lacks, and keeps the sink's own
//! document (offsets and relaxed indexes) in the offsets index.

use std::collections::HashMap;
use std::sync::Arc;

use reqwest::Method;
use serde_json::json;
use sluice_core::event::TableSchema;

use super::bulk::{Action, Builder};
use super::config::MappingMode;
use super::{
    create_index, mapping, Control, OpenSearchTarget, Relaxed, StoredOffset, SERVER, TRUNCATE_PAGE,
};
use crate::replica::Row;
use crate::search::document::document_id;
use crate::search::SearchError;

impl OpenSearchTarget {
    /// Creates `index` if it does not exist (with the table's mapping), or adds the fields of a
    /// new table version to its mapping.
    pub(super) async fn ensure_index(
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
            create_index(http, index, &body, &what).await?;
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
                    reason = crate::http::server_reason(&answer).unwrap_or_default(),
                    "the index's mapping differs from the table's and cannot be changed; \
                     documents are indexed under the existing mapping (reindex to change it)");
            }
        }
        self.ready.insert(index.to_owned(), Arc::clone(table));
        Ok(())
    }

    /// Turns `index`'s refresh off and its replicas to 0 for a snapshot load, remembering
    /// (durably, before changing anything) what to put back.
    pub(super) async fn relax(&mut self, index: &str) -> Result<(), SearchError> {
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
        // Keyed by the concrete index, which differs from `index` when that is an alias
        // (after `sluice reindex`).
        let settings = answer
            .get(index)
            .or_else(|| answer.as_object().and_then(|m| m.values().next()))
            .map_or(&serde_json::Value::Null, |i| &i["settings"]);
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
    pub(super) async fn restore(&mut self, index: &str) -> Result<(), SearchError> {
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

    /// Writes the sink's document: the applied offsets and the relaxed indexes.
    pub(super) async fn save_control(&mut self) -> Result<(), SearchError> {
        let control = Control {
            sink: self.config.name.clone(),
            offsets: self
                .applied
                .offsets
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
        self.applied.saved();
        Ok(())
    }

    /// Empties `index` of every document older than `version` (a truncate at the source,
    /// whose record has that version), after what was sent before it is applied. Each
    /// document is deleted with the truncate's external version, so that a replay of the
    /// truncate leaves documents written after it alone, and writes from before it replayed
    /// later are refused. (`_delete_by_query` would delete with internal versions, and the
    /// replayed writes after the truncate would then be refused as stale.)
    pub(super) async fn truncate(&self, index: &str, version: u64) -> Result<usize, SearchError> {
        let http = self.http.as_ref().expect("opened");
        // Documents indexed since the last refresh are invisible to a search: refresh first.
        let (status, _) = http
            .json(
                Method::POST,
                &format!("/{index}/_refresh"),
                None,
                &format!("refreshing index {index} before a truncate"),
                &[404],
            )
            .await?;
        if status == 404 {
            return Ok(0);
        }
        let what = format!("listing the documents of index {index} (a truncate)");
        let (_, mut page) = http
            .json(
                Method::POST,
                &format!("/{index}/_search?scroll=2m&filter_path=_scroll_id,hits.hits._id"),
                Some(&json!({ "size": TRUNCATE_PAGE, "_source": false, "sort": ["_doc"] })),
                &what,
                &[],
            )
            .await?;
        let mut deleted = 0;
        let mut rejected = Vec::new();
        loop {
            let ids: Vec<&str> = page["hits"]["hits"]
                .as_array()
                .map(|hits| hits.iter().filter_map(|h| h["_id"].as_str()).collect())
                .unwrap_or_default();
            if ids.is_empty() {
                break;
            }
            let mut builder = Builder::new(self.config.bulk_bytes, self.config.bulk_docs);
            for id in &ids {
                builder.push(Action::Delete, index, id, Some(version), usize::MAX, |_| {});
            }
            rejected.extend(self.send(builder.finish()).await?);
            deleted += ids.len();
            let scroll_id = page["_scroll_id"].as_str().unwrap_or_default().to_owned();
            page = http
                .json(
                    Method::POST,
                    "/_search/scroll?filter_path=_scroll_id,hits.hits._id",
                    Some(&json!({ "scroll": "2m", "scroll_id": scroll_id })),
                    &what,
                    &[],
                )
                .await?
                .1;
        }
        if let Some(scroll_id) = page["_scroll_id"].as_str() {
            let body = json!({ "scroll_id": scroll_id });
            let _ = http
                .json(
                    Method::DELETE,
                    "/_search/scroll",
                    Some(&body),
                    "closing a scroll",
                    &[404],
                )
                .await;
        }
        if let Some((_, kind, reason)) = rejected.first() {
            return Err(SearchError::Http(crate::http::HttpError::Unexpected {
                server: SERVER,
                reason: format!("deleting the documents of {index} (a truncate): {kind}: {reason}"),
            }));
        }
        tracing::info!(
            index,
            documents = deleted,
            "truncate: documents older than it deleted"
        );
        Ok(deleted)
    }

    /// The fields `index` holds for the documents of `rows` (realtime: what was indexed a
    /// moment ago counts), by document id; documents it lacks are left out.
    pub(super) async fn kept_fields(
        &self,
        index: &str,
        table: &TableSchema,
        rows: &[Row],
    ) -> Result<HashMap<String, serde_json::Map<String, serde_json::Value>>, SearchError> {
        let ids: Vec<String> = rows
            .iter()
            .filter_map(|row| document_id(table, &row.values))
            .collect();
        let http = self.http.as_ref().expect("opened");
        let (status, answer) = http
            .json(
                Method::POST,
                &format!("/{index}/_mget?realtime=true"),
                Some(&json!({ "ids": ids })),
                &format!("reading documents of {index} to complete rows without their unchanged TOASTed values"),
                &[404],
            )
            .await?;
        if status == 404 {
            return Ok(HashMap::new());
        }
        Ok(answer["docs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|doc| doc["found"] == json!(true))
            .filter_map(|doc| {
                let id = doc["_id"].as_str()?.to_owned();
                Some((id, doc["_source"].as_object()?.clone()))
            })
            .collect())
    }
}
