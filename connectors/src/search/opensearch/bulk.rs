//! `_bulk` requests: built up to a size in bytes and documents, each item remembering the
//! record it came from and where its lines are (to send it again, or to dead-letter it), and
//! the server's per-item answers sorted into done, stale, retry and rejected.

use std::ops::Range;

use serde::Deserialize;

use super::super::document::write_str;

/// What an item does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Index,
    Delete,
    /// A partial update (unchanged TOASTed columns left as the index holds them).
    Update,
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

    /// Adds an item: its action line, then (for index and update) `source` writes the
    /// document line.
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
            Action::Update => b"{\"update\":{\"_index\":",
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
        match action {
            Action::Index => source(body),
            Action::Update => {
                body.extend_from_slice(b"{\"doc\":");
                source(body);
                body.extend_from_slice(b",\"doc_as_upsert\":true}");
            }
            Action::Delete => {}
        }
        if action != Action::Delete {
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
    match answer.status {
        200..=299 if action == Action::Delete => Outcome::Deleted,
        200..=299 => Outcome::Indexed,
        // Deleting what is not there leaves the index as wanted.
        404 if action == Action::Delete => Outcome::Deleted,
        409 => Outcome::Stale,
        status if super::super::retried_status(status) => {
            let (kind, reason) = describe();
            Outcome::Retry(format!("{status} {kind}: {reason}"))
        }
        _ => {
            let (kind, reason) = describe();
            Outcome::Rejected(kind, reason)
        }
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
        builder.push(Action::Update, "ix", "3", None, 2, |b| {
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
            "{\"update\":{\"_index\":\"ix\",\"_id\":\"3\"}}\n{\"doc\":{\"a\":3},\"doc_as_upsert\":true}\n"
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
            {"index":{"status":400,"error":{"type":"mapper_parsing_exception","reason":"bad"}}}]}"#,
        )
        .unwrap();
        let actions = [
            Action::Index,
            Action::Delete,
            Action::Index,
            Action::Index,
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
    }
}
