//! Search index sinks: OpenSearch/Elasticsearch (`opensearch/`) and Typesense (`typesense/`).
//!
//! Both are database-sink targets (`replica::Target`): the runtime decodes records into typed
//! changes, `replica::plan` reduces each batch to the final state of every key (upserts,
//! deletes, partial updates for unchanged TOASTed values, truncates in order), and the target
//! applies that and then stores the sink's offsets in the search server itself, so a restart
//! resumes where the index is. What they share lives here: the HTTP client (`http.rs`), the
//! row-to-document conversion (`document.rs`) and index names from templates.
//!
//! Why a replay never leaves an index stale: OpenSearch documents carry an external version,
//! the record's offset in the log (each key lives in one partition, whose offsets follow the
//! source's commit order), so an older write is refused by the server; Typesense has no
//! versions, so its sink applies batches strictly in order and stores its offsets after each,
//! and a replay re-applies the same final states in the same order.

pub mod document;
#[cfg(feature = "opensearch")]
pub mod opensearch;
#[cfg(feature = "typesense")]
pub mod typesense;

use std::sync::Arc;

use sluice_core::event::TableId;
use sluice_core::retry::{Classify, ErrorKind};
use sluice_core::sink::{DeadLetter, DeadLetterWriter, Offsets, SinkRecord};

use crate::replica::ReplicaError;

/// Why a search sink stopped or will retry.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    /// The server could not be reached, answered with an error status (429 and 5xx are
    /// retried), or answered something the sink cannot use.
    #[error(transparent)]
    Http(#[from] crate::http::HttpError),
    /// Events the index rejects and no dead-letter topic to put them in, or one that the
    /// sink cannot index at all (a table without a key).
    #[error("{0}")]
    Rejected(String),
    /// Items the server kept refusing as overloaded (429) or failing (5xx) after retries.
    #[error("{server}: {count} documents still failing after {attempts} attempts, last: {last}")]
    ItemsFailing {
        server: &'static str,
        count: usize,
        attempts: u32,
        last: String,
    },
    /// Writing dead letters to the log failed.
    #[error(transparent)]
    DeadLetter(#[from] sluice_core::sink::DeadLetterError),
    /// The sink's configuration cannot work (a certificate file, an index name).
    #[error("{0}")]
    Config(String),
}

impl Classify for SearchError {
    fn kind(&self) -> ErrorKind {
        match self {
            SearchError::Http(err) => err.kind(),
            SearchError::ItemsFailing { .. } => ErrorKind::Transient,
            SearchError::DeadLetter(err) => err.kind(),
            SearchError::Rejected(_) | SearchError::Config(_) => ErrorKind::Definite,
        }
    }
}

impl From<ReplicaError> for SearchError {
    fn from(err: ReplicaError) -> SearchError {
        SearchError::Rejected(err.0)
    }
}

/// Record bytes per write of a search sink: ~16 MiB makes 6-8 bulk requests of the default
/// size, so the requests in flight stay at `max_in_flight` for most of a write instead of
/// draining at the end of each (the server idled ~30% between writes of 4 MiB).
pub const WRITE_BYTES: usize = 16 << 20;

/// Statuses that pass by waiting: overload, timeouts, the server restarting or electing.
pub use crate::http::retried_status;

/// Metric names of the search sinks (labels: `sink`, and `result` or `reason`).
pub mod metric {
    /// Documents applied, by `result`: `indexed`, `deleted`, `stale` (the index already held a
    /// newer version: a replay), `rejected` (to the dead-letter topic).
    pub const DOCUMENTS: &str = "sluice_search_documents_total";
    /// Seconds per bulk (import) request, answer included (histogram).
    pub const BULK_SECONDS: &str = "sluice_search_bulk_seconds";
    /// Documents the index rejected, by the server's `reason` (`mapper_parsing_exception`).
    pub const REJECTIONS: &str = "sluice_search_rejections_total";
    /// Items retried because the server was overloaded or failing (429, 5xx).
    pub const RETRIES: &str = "sluice_search_item_retries_total";
}

/// The index (collection) name `template` gives a table's topic (`crate::names`), lowercased,
/// as search servers require.
pub fn index_name(template: &str, topic: &str, table: &TableId) -> String {
    crate::names::fill_template(template, topic, table).to_lowercase()
}

/// Checks an index template's placeholders (no I/O): `None` when fine, else what is wrong.
pub fn check_template(template: &str) -> Option<String> {
    crate::names::check_template(template, "an index")
}

/// Documents the server rejected, `(record, reason)`, as dead letters after `dead` (the records
/// are the batch's, kept when there is a dead-letter topic), written through `writer`. With no
/// dead-letter topic the first rejection stops the sink, naming the record; `what` names the
/// destination ("index", "collection").
pub async fn divert_rejected(
    rejected: Vec<(usize, String)>,
    mut dead: Vec<DeadLetter>,
    records: &[SinkRecord],
    origins: &[(Arc<str>, u64)],
    writer: Option<&DeadLetterWriter>,
    what: &str,
) -> Result<(), SearchError> {
    for (record, reason) in rejected {
        match records.get(record) {
            Some(rejected) => dead.push(DeadLetter {
                record: rejected.clone(),
                error: reason,
            }),
            None => {
                let (topic, offset) = &origins[record];
                return Err(SearchError::Rejected(format!(
                    "the {what} rejected the document of {topic} offset {offset}: {reason}; \
                     set dead_letter_topic to divert such documents and go on"
                )));
            }
        }
    }
    crate::replica::deliver_dead_letters(writer, dead).await?;
    Ok(())
}

/// The offsets a search sink has applied, and whether the server's copy (its offsets document)
/// is behind them. The copy only says where a restart resumes, and a replay from an older one
/// ends in the same state (OpenSearch: versions; Typesense: the same steps in order), so it
/// is written at most once a second while batches keep coming, and whenever the sink catches
/// up.
#[derive(Debug, Default)]
pub struct AppliedOffsets {
    pub offsets: Offsets,
    unsaved: bool,
    saved_at: Option<std::time::Instant>,
}

impl AppliedOffsets {
    /// Offsets read back from the server at start.
    pub fn stored(offsets: Offsets) -> AppliedOffsets {
        AppliedOffsets {
            offsets,
            ..AppliedOffsets::default()
        }
    }

    /// A batch applied; true when the server's copy is due.
    pub fn advance(&mut self, offsets: Offsets) -> bool {
        self.offsets.extend(offsets);
        self.unsaved = true;
        self.saved_at
            .is_none_or(|at| at.elapsed() >= std::time::Duration::from_secs(1))
    }

    /// Whether the server's copy is behind.
    pub fn unsaved(&self) -> bool {
        self.unsaved
    }

    /// The server has the offsets now.
    pub fn saved(&mut self) {
        self.unsaved = false;
        self.saved_at = Some(std::time::Instant::now());
    }
}

/// A backoff step for retried bulk items: 100 ms doubling to 5 s.
pub fn backoff(attempt: u32) -> std::time::Duration {
    std::time::Duration::from_millis((100u64 << attempt.min(6)).min(5_000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_names_come_from_templates_lowercased() {
        let table = TableId {
            namespace: "Public".into(),
            name: "Items".into(),
        };
        assert_eq!(
            index_name("{topic}", "shop.Public.Items", &table),
            "shop.public.items"
        );
        // (Placeholders and their checks: names.rs.)
        assert!(check_template(" ").unwrap().contains("name an index"));
    }
}
