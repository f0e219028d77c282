//! What `sluice reindex` needs of a cluster besides the sink itself: the index a topic's
//! documents go to, the name of a fresh index to rebuild it in, the atomic move of the name
//! (made an alias) onto the rebuilt index, and the removal of the rebuild's offsets document.
//! The rebuild itself is the sink, pointed at the fresh index (`src/reindex.rs` drives it).

use reqwest::Method;
use serde_json::{json, Value as Json};
use sluice_core::event::TableId;

use super::{connect, OpenSearchSinkConfig};
use crate::http::Http;
use crate::search::{index_name, SearchError};

/// The index (or alias) `config` sends `topic`'s documents to. The table is taken from the
/// topic's name (`source.schema.table`).
pub fn live_index(config: &OpenSearchSinkConfig, topic: &str) -> String {
    let mut parts = topic.rsplitn(3, '.');
    let name = parts.next().unwrap_or(topic).to_owned();
    let namespace = parts.next().unwrap_or("").to_owned();
    index_name(&config.index, topic, &TableId { namespace, name })
}

/// What the name of the live index is now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Live {
    /// Nothing by that name.
    Missing,
    /// A concrete index (its first rebuild turns the name into an alias).
    Index,
    /// An alias of these indexes.
    Alias(Vec<String>),
}

/// The client for `config`'s cluster, for the calls below.
pub fn client(config: &OpenSearchSinkConfig) -> Result<Http, SearchError> {
    connect(config)
}

/// What `name` is on the cluster.
pub async fn live(http: &Http, name: &str) -> Result<Live, SearchError> {
    let what = format!("looking up alias {name}");
    let (status, answer) = http
        .json(Method::GET, &format!("/_alias/{name}"), None, &what, &[404])
        .await?;
    if status == 200 {
        if let Some(indexes) = answer.as_object().filter(|m| !m.is_empty()) {
            return Ok(Live::Alias(indexes.keys().cloned().collect()));
        }
    }
    let (status, _) = http
        .send(
            Method::HEAD,
            &format!("/{name}"),
            None,
            &format!("looking up index {name}"),
        )
        .await?;
    Ok(if status == 404 {
        Live::Missing
    } else {
        Live::Index
    })
}

/// Points the name `alias` at `rebuilt` alone, in one atomic `_aliases` request: the indexes
/// it named lose it, and a concrete index of that name is removed (its name becomes the
/// alias). Returns the indexes that no longer have the name.
pub async fn move_alias(
    http: &Http,
    alias: &str,
    rebuilt: &str,
    before: &Live,
) -> Result<Vec<String>, SearchError> {
    let mut actions = vec![json!({"add": {"index": rebuilt, "alias": alias}})];
    let mut replaced = Vec::new();
    match before {
        Live::Missing => {}
        Live::Index => {
            actions.push(json!({"remove_index": {"index": alias}}));
            replaced.push(alias.to_owned());
        }
        Live::Alias(indexes) => {
            for index in indexes.iter().filter(|i| *i != rebuilt) {
                actions.push(json!({"remove": {"index": index, "alias": alias}}));
                replaced.push(index.clone());
            }
        }
    }
    let body = json!({ "actions": actions });
    http.json(
        Method::POST,
        "/_aliases",
        Some(&body),
        &format!("moving {alias} to {rebuilt}"),
        &[],
    )
    .await?;
    Ok(replaced)
}

/// Deletes `index` (an index the alias no longer names).
pub async fn delete_index(http: &Http, index: &str) -> Result<(), SearchError> {
    http.json(
        Method::DELETE,
        &format!("/{index}"),
        None,
        &format!("deleting index {index}"),
        &[404],
    )
    .await?;
    Ok(())
}

/// Deletes the offsets document of the sink named `name` (a rebuild's, once it is done) from
/// `offsets_index`.
pub async fn forget_offsets(
    http: &Http,
    offsets_index: &str,
    name: &str,
) -> Result<(), SearchError> {
    http.json(
        Method::DELETE,
        &format!("/{offsets_index}/_doc/{name}"),
        None,
        &format!("deleting the offsets of {name}"),
        &[404],
    )
    .await?;
    Ok(())
}

/// The documents `index` holds (after a refresh).
pub async fn count(http: &Http, index: &str) -> Result<u64, SearchError> {
    http.json(
        Method::POST,
        &format!("/{index}/_refresh"),
        None,
        &format!("refreshing {index}"),
        &[],
    )
    .await?;
    let (_, answer) = http
        .json(
            Method::GET,
            &format!("/{index}/_count"),
            None,
            &format!("counting {index}"),
            &[],
        )
        .await?;
    Ok(answer.get("count").and_then(Json::as_u64).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_topics_live_index_follows_the_sinks_template() {
        let config: OpenSearchSinkConfig = serde_json::from_value(json!({
            "name": "s", "url": "http://127.0.0.1:9200", "topics": ["shop.*"],
            "index": "search_{schema}_{table}",
        }))
        .unwrap();
        assert_eq!(
            live_index(&config, "shop.Public.Items"),
            "search_public_items"
        );
    }
}
