//! `_bulk` requests: built up to a size in bytes and documents, each item remembering the
//! record it came from and where its lines are (to send it again, or to dead-letter it), and
//! the server's per-item answers sorted into done, stale, retry and rejected.

use std::collections::HashMap;
use std::ops::Range;
use std::time::Instant;

use bytes::Bytes;
use futures_util::StreamExt;
use reqwest::Method;
use serde::Deserialize;
use sluice_core::retry::{Classify, ErrorKind};

use super::{OpenSearchTarget, MAX_ATTEMPTS, SERVER};
use crate::search::document::write_str;
use crate::search::{backoff, metric, retried_status, SearchError};

/// The bulk endpoint, its answer cut down to what the sink reads.
const BULK_PATH: &str =
    "/_bulk?filter_path=errors,items.*.status,items.*.error.type,items.*.error.reason";

/// What an item does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Index,
    Delete,
}

/// One item of a bulk request.
#[derive(Debug, Clone)]
pub struct Item {
    pub record: usize,
    pub action: Action,
    /// Its lines in the request body.
    pub lines: Range<usize>,
}

/// One `_bulk` request body and its items.
#[derive(Debug, Default)]
pub struct Request {
    pub body: Vec<u8>,
    pub items: Vec<Item>,
}

/// Bulk requests of at most `max_bytes` (unless one item is larger) and `max_docs` items.
pub struct Builder {
    max_bytes: usize,
    max_docs: usize,
    current: Request,
    done: Vec<Request>,
}

impl Builder {
    pub fn new(max_bytes: usize, max_docs: usize) -> Builder {
        Builder {
            max_bytes,
            max_docs,
            current: Request::default(),
            done: Vec::new(),
        }
    }

    /// Adds an item: its action line, then (for index) `source` writes the document line.
    pub fn push(
        &mut self,
        action: Action,
        index: &str,
        id: &str,
        version: Option<u64>,
        record: usize,
        source: impl FnOnce(&mut Vec<u8>),
    ) {
        let body = &mut self.current.body;
        let start = body.len();
        body.extend_from_slice(match action {
            Action::Index => b"{\"index\":{\"_index\":",
            Action::Delete => b"{\"delete\":{\"_index\":",
        });
        write_str(body, index);
        body.extend_from_slice(b",\"_id\":");
        write_str(body, id);
        if let Some(version) = version {
            body.extend_from_slice(b",\"version\":");
            body.extend_from_slice(itoa::Buffer::new().format(version).as_bytes());
            body.extend_from_slice(b",\"version_type\":\"external\"");
        }
        body.extend_from_slice(b"}}\n");
        if action == Action::Index {
            source(body);
            body.push(b'\n');
        }
        let lines = start..body.len();
        self.current.items.push(Item {
            record,
            action,
            lines,
        });
        if self.current.body.len() >= self.max_bytes || self.current.items.len() >= self.max_docs {
            self.done.push(std::mem::take(&mut self.current));
        }
    }

    /// Adds an item of an earlier request (whose body was `body`) again, as it was.
    pub fn again(&mut self, body: &[u8], item: &Item) {
        let start = self.current.body.len();
        self.current
            .body
            .extend_from_slice(&body[item.lines.clone()]);
        self.current.items.push(Item {
            lines: start..self.current.body.len(),
            ..item.clone()
        });
        if self.current.body.len() >= self.max_bytes || self.current.items.len() >= self.max_docs {
            self.done.push(std::mem::take(&mut self.current));
        }
    }

    pub fn is_empty(&self) -> bool {
        self.done.is_empty() && self.current.items.is_empty()
    }

    /// The requests built, the last one possibly short.
    pub fn finish(mut self) -> Vec<Request> {
        if !self.current.items.is_empty() {
            self.done.push(self.current);
        }
        self.done
    }
}

/// The answer to a `_bulk` request, as `filter_path=errors,items.*.status,items.*.error`
/// leaves it.
#[derive(Debug, Deserialize)]
pub struct Answer {
    pub errors: bool,
    #[serde(default)]
    pub items: Vec<ItemAnswerWrap>,
}

/// One item's answer, under its action's name.
#[derive(Debug, Deserialize)]
pub struct ItemAnswerWrap {
    #[serde(alias = "create", alias = "delete", alias = "update")]
    pub index: ItemAnswer,
}

#[derive(Debug, Deserialize)]
pub struct ItemAnswer {
    pub status: u16,
    #[serde(default)]
    pub error: Option<ItemError>,
}

#[derive(Debug, Deserialize)]
pub struct ItemError {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub reason: Option<String>,
}

/// What became of an item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Indexed,
    Deleted,
    /// The index holds a newer version (a replay, or a late retry): nothing to do.
    Stale,
    /// Overloaded or failing: send it again.
    Retry(String),
    /// The index refuses the document: `(error type, reason)`.
    Rejected(String, String),
}

/// The outcome of an item from its answer.
pub fn outcome(action: Action, answer: &ItemAnswer) -> Outcome {
    let describe = || match &answer.error {
        Some(error) => (error.kind.clone(), error.reason.clone().unwrap_or_default()),
        None => (format!("status {}", answer.status), String::new()),
    };
    let kind = answer.error.as_ref().map(|e| e.kind.as_str());
    match answer.status {
        // The name resolved to an index that was removed while the request ran: an alias
        // moved (`sluice reindex`). Sent again, it resolves to the index the name has now.
        404 if kind == Some("index_not_found_exception") => {
            let (kind, reason) = describe();
            Outcome::Retry(format!("404 {kind}: {reason}"))
        }
        200..=299 if action == Action::Delete => Outcome::Deleted,
        200..=299 => Outcome::Indexed,
        // Deleting what is not there leaves the index as wanted.
        404 if action == Action::Delete => Outcome::Deleted,
        409 => Outcome::Stale,
        status if retried_status(status) => {
            let (kind, reason) = describe();
            Outcome::Retry(format!("{status} {kind}: {reason}"))
        }
        _ => {
            let (kind, reason) = describe();
            Outcome::Rejected(kind, reason)
        }
    }
}

impl OpenSearchTarget {
    /// Sends bulk requests, `max_in_flight` at a time, sending again what the cluster refuses
    /// as overloaded; returns the rejected items as (record, error type, reason).
    pub(super) async fn send(
        &self,
        requests: Vec<Request>,
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
                let answer = match result
                    .map_err(SearchError::from)
                    .and_then(|(status, bytes)| {
                        if status == 200 {
                            serde_json::from_slice::<Answer>(&bytes).map_err(|e| {
                                SearchError::Http(crate::http::HttpError::Unexpected {
                                    server: SERVER,
                                    reason: format!(
                                        "a bulk answer that does not parse ({e}): {}",
                                        crate::http::shorten(&bytes)
                                    ),
                                })
                            })
                        } else {
                            Err(http.status_error("a bulk request", status, &bytes).into())
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
                    return Err(SearchError::Http(crate::http::HttpError::Unexpected {
                        server: SERVER,
                        reason: format!(
                            "a bulk of {} items answered for {}",
                            items.len(),
                            answer.items.len()
                        ),
                    }));
                }
                for (item, reply) in items.iter().zip(&answer.items) {
                    match outcome(item.action, &reply.index) {
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
        Action::Index => "indexed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_split_by_documents_and_items_can_be_sent_again() {
        let mut builder = Builder::new(1 << 20, 2);
        builder.push(Action::Index, "ix", "1", Some(5), 0, |b| {
            b.extend_from_slice(b"{\"a\":1}")
        });
        builder.push(Action::Delete, "ix", "2", Some(6), 1, |_| {});
        builder.push(Action::Index, "ix", "3", None, 2, |b| {
            b.extend_from_slice(b"{\"a\":3}")
        });
        let requests = builder.finish();
        assert_eq!(requests.len(), 2);
        assert_eq!(
            String::from_utf8(requests[0].body.clone()).unwrap(),
            "{\"index\":{\"_index\":\"ix\",\"_id\":\"1\",\"version\":5,\"version_type\":\"external\"}}\n{\"a\":1}\n\
             {\"delete\":{\"_index\":\"ix\",\"_id\":\"2\",\"version\":6,\"version_type\":\"external\"}}\n"
        );
        assert_eq!(
            String::from_utf8(requests[1].body.clone()).unwrap(),
            "{\"index\":{\"_index\":\"ix\",\"_id\":\"3\"}}\n{\"a\":3}\n"
        );
        let mut again = Builder::new(1 << 20, 10);
        again.again(&requests[0].body, &requests[0].items[1]);
        let retried = again.finish();
        assert_eq!(
            &retried[0].body[..],
            &requests[0].body[requests[0].items[1].lines.clone()]
        );
        assert_eq!(retried[0].items[0].record, 1);
    }

    #[test]
    fn answers_sort_into_outcomes() {
        let answer: Answer = serde_json::from_str(
            r#"{"errors":true,"items":[{"index":{"status":201}},{"delete":{"status":404}},
            {"index":{"status":409,"error":{"type":"version_conflict_engine_exception","reason":"x"}}},
            {"index":{"status":429,"error":{"type":"es_rejected_execution_exception","reason":"full"}}},
            {"index":{"status":400,"error":{"type":"mapper_parsing_exception","reason":"bad"}}},
            {"delete":{"status":404,"error":{"type":"index_not_found_exception","reason":"no such index [i]"}}},
            {"index":{"status":404,"error":{"type":"index_not_found_exception","reason":"no such index [i]"}}}]}"#,
        )
        .unwrap();
        let actions = [
            Action::Index,
            Action::Delete,
            Action::Index,
            Action::Index,
            Action::Index,
            Action::Delete,
            Action::Index,
        ];
        let outcomes: Vec<Outcome> = answer
            .items
            .iter()
            .zip(actions)
            .map(|(item, action)| outcome(action, &item.index))
            .collect();
        assert_eq!(outcomes[0], Outcome::Indexed);
        assert_eq!(outcomes[1], Outcome::Deleted);
        assert_eq!(outcomes[2], Outcome::Stale);
        assert!(matches!(&outcomes[3], Outcome::Retry(r) if r.contains("full")));
        assert_eq!(
            outcomes[4],
            Outcome::Rejected("mapper_parsing_exception".into(), "bad".into())
        );
        // An index removed under a request (an alias moved by `sluice reindex`): neither a
        // done delete nor a refused document.
        for moved in &outcomes[5..] {
            assert!(
                matches!(moved, Outcome::Retry(r) if r.contains("no such index")),
                "{moved:?}"
            );
        }
    }
}
