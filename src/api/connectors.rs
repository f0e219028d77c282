//! `/connectors` and `/connector-plugins`: Kafka Connect's REST shapes over sluice's running
//! connectors (`control.rs`).

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Response, StatusCode};
use serde_json::{json, Value as Json};
use sluice_connectors::{SinkConfig, SourceConfig};
use sluice_core::event_log::EventLog;
use sluice_core::pipeline::{OffsetReset, PartitionReset};

use super::{error, json, Api};
use crate::control::{Connector, ControlError};

type Answer = Response<Full<Bytes>>;

pub(super) async fn route<L: EventLog + Clone>(
    api: &Api<L>,
    method: &Method,
    parts: &[&str],
    query: &str,
    body: &Bytes,
) -> Answer {
    let control = &api.control;
    match (method, parts) {
        (&Method::GET, ["connectors"]) => {
            let mut expand = (false, false);
            for (key, value) in parameters(query) {
                match (key, value) {
                    ("expand", "status") => expand.0 = true,
                    ("expand", "info") => expand.1 = true,
                    ("expand", other) => {
                        return error(
                            StatusCode::BAD_REQUEST,
                            &format!("expand takes status or info, not {other:?}"),
                        )
                    }
                    (other, _) => return unknown_parameter(other, "expand"),
                }
            }
            if expand == (false, false) {
                return json(StatusCode::OK, &json!(control.names().await));
            }
            let mut out = serde_json::Map::new();
            for name in control.names().await {
                let mut entry = serde_json::Map::new();
                if expand.0 {
                    if let Ok(state) = control.state(&name).await {
                        entry.insert("status".into(), json!(state));
                    }
                }
                if expand.1 {
                    if let Some(connector) = control.connector(&name).await {
                        entry.insert("info".into(), describe(&connector));
                    }
                }
                out.insert(name, Json::Object(entry));
            }
            json(StatusCode::OK, &Json::Object(out))
        }
        (&Method::GET, ["connectors", name]) => match control.connector(name).await {
            None => unknown(name),
            Some(connector) => json(StatusCode::OK, &describe(&connector)),
        },
        (&Method::GET, ["connectors", name, "status"]) => match control.state(name).await {
            Ok(state) => json(StatusCode::OK, &json!(state)),
            Err(err) => control_error(&err),
        },
        (&Method::PUT, ["connectors", name, "pause"]) => accepted(control.pause(name, false).await),
        (&Method::PUT, ["connectors", name, "stop"]) => accepted(control.pause(name, true).await),
        (&Method::PUT, ["connectors", name, "resume"]) => accepted(control.resume(name).await),
        (&Method::POST, ["connectors", name, "restart"]) => accepted(control.restart(name).await),
        (&Method::GET, ["connectors", name, "offsets"]) => offsets(api, name).await,
        (&Method::DELETE, ["connectors", name, "offsets"]) => {
            let reset = OffsetReset {
                all: true,
                partitions: Vec::new(),
            };
            changed(control.change_offsets(name, reset).await, "reset")
        }
        (&Method::PATCH, ["connectors", name, "offsets"]) => {
            match offsets_asked(api, name, body).await {
                Ok(reset) => changed(control.change_offsets(name, reset).await, "altered"),
                Err(answer) => answer,
            }
        }
        (&Method::POST, ["connectors", name, "snapshot"]) => snapshot(api, name, body).await,
        (&Method::GET, ["connector-plugins"]) => {
            let mut plugins = Vec::new();
            for (role, kinds) in [
                ("source", &sluice_connectors::SOURCE_KINDS[..]),
                ("sink", &sluice_connectors::SINK_KINDS[..]),
            ] {
                let section = if role == "source" { "sources" } else { "sinks" };
                for kind in kinds
                    .iter()
                    .filter(|k| sluice_connectors::compiled_in(section, k))
                {
                    plugins.push(json!({"class": kind, "type": role}));
                }
            }
            json(StatusCode::OK, &Json::Array(plugins))
        }
        (&Method::PUT, ["connector-plugins", kind, "config", "validate"]) => {
            validate(kind, query, body)
        }
        (&Method::GET, _) => error(
            StatusCode::NOT_FOUND,
            "no such resource: /openapi.json lists them",
        ),
        _ => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "no such operation: /openapi.json lists them",
        ),
    }
}

/// A query's `key=value` pairs (a key alone has an empty value).
fn parameters(query: &str) -> impl Iterator<Item = (&str, &str)> {
    query
        .split('&')
        .filter(|q| !q.is_empty())
        .map(|q| q.split_once('=').unwrap_or((q, "")))
}

fn unknown_parameter(name: &str, known: &str) -> Answer {
    error(
        StatusCode::BAD_REQUEST,
        &format!("no query parameter {name:?} here (it takes {known})"),
    )
}

fn unknown(name: &str) -> Answer {
    error(
        StatusCode::NOT_FOUND,
        &format!("no connector named {name:?}"),
    )
}

fn control_error(err: &ControlError) -> Answer {
    match err {
        ControlError::Unknown(name) => unknown(name),
        ControlError::Refused(reason) => error(StatusCode::CONFLICT, reason),
        ControlError::Invalid(reason) => error(StatusCode::BAD_REQUEST, reason),
    }
}

/// Kafka Connect's answer to an offsets change.
fn changed(result: Result<(), ControlError>, how: &str) -> Answer {
    match result {
        Ok(()) => json(
            StatusCode::OK,
            &json!({"message": format!("The offsets for this connector have been {how} successfully; it resumes from them when it runs again")}),
        ),
        Err(err) => control_error(&err),
    }
}

/// A `PATCH /connectors/{name}/offsets` body, in Kafka Connect's shape: `{"offsets":
/// [{"partition": {"topic": "t", "partition": 0}, "offset": {"offset": 42}}]}`, an `offset`
/// of null for the log's first record. Each partition must be one the sink reads, and the
/// offset within what the log holds.
async fn offsets_asked<L: EventLog + Clone>(
    api: &Api<L>,
    name: &str,
    body: &Bytes,
) -> Result<OffsetReset, Answer> {
    const SHAPE: &str = "the body must be {\"offsets\": [{\"partition\": {\"topic\": \"<topic>\", \"partition\": 0}, \"offset\": {\"offset\": 42}}]} (an offset of null: the log's first record)";
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        offsets: Vec<Change>,
    }
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Change {
        partition: Partition,
        offset: Option<Offset>,
    }
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Partition {
        topic: String,
        partition: u32,
    }
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Offset {
        offset: u64,
    }
    let bad = |message: String| error(StatusCode::BAD_REQUEST, &message);
    let asked: Body = serde_json::from_slice(body).map_err(|e| bad(format!("{SHAPE}: {e}")))?;
    if asked.offsets.is_empty() {
        return Err(bad(format!("{SHAPE}: name at least one partition")));
    }
    let Some(connector) = api.control.connector(name).await else {
        return Err(unknown(name));
    };
    let sink = match connector {
        Connector::Sink(sink) => sink,
        // The controller says why. (A build without sources has none.)
        #[allow(unreachable_patterns)]
        Connector::Source(_) => return Ok(OffsetReset::default()),
    };
    let log = api.control.log();
    let mut partitions = Vec::new();
    for change in asked.offsets {
        let Partition { topic, partition } = change.partition;
        if !sink
            .topics()
            .iter()
            .any(|pattern| sluice_core::topic::pattern_takes(pattern, &topic))
        {
            return Err(bad(format!(
                "{name} does not read topic {topic:?} (its topics: {})",
                sink.topics().join(", ")
            )));
        }
        match log.partitions(&topic) {
            None => return Err(bad(format!("the log has no topic {topic:?}"))),
            Some(count) if partition >= count => {
                return Err(bad(format!(
                    "topic {topic:?} has {count} partitions: there is no partition {partition}"
                )))
            }
            Some(_) => {}
        }
        let offset = change.offset.map(|o| o.offset);
        if let Some(offset) = offset {
            let held = log
                .offsets(&topic, partition)
                .await
                .map_err(|e| error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()))?;
            if offset > held.stable {
                return Err(bad(format!(
                    "{topic}[{partition}] holds offsets {}..{}: offset {offset} lies past its end",
                    held.start, held.stable
                )));
            }
        }
        partitions.push(PartitionReset {
            topic,
            partition,
            offset,
        });
    }
    Ok(OffsetReset {
        all: false,
        partitions,
    })
}

fn accepted(result: Result<(), ControlError>) -> Answer {
    match result {
        Ok(()) => json(StatusCode::ACCEPTED, &json!({})),
        Err(err) => control_error(&err),
    }
}

/// A connector as `GET /connectors/{name}` shows it (no secrets: no URLs).
fn describe(connector: &Connector) -> Json {
    let mut out = json!({
        "name": connector.name(),
        "type": connector.role(),
        "kind": connector.kind(),
    });
    if let Connector::Sink(sink) = connector {
        out["topics"] = json!(sink.topics());
        out["transforms"] = json!(sink
            .transforms()
            .iter()
            .map(|t| t.kind())
            .collect::<Vec<_>>());
    }
    out
}

/// Kafka Connect's offsets shape: a sink's consumer-group offsets per partition, a source's
/// position.
async fn offsets<L: EventLog + Clone>(api: &Api<L>, name: &str) -> Answer {
    let Some(connector) = api.control.connector(name).await else {
        return unknown(name);
    };
    let log = api.control.log();
    let offsets: Vec<Json> = match connector {
        Connector::Sink(_) => match log.group_offsets(&format!("sink.{name}")).await {
            Ok(offsets) => offsets
                .into_iter()
                .map(|((topic, partition), offset)| {
                    json!({"partition": {"topic": topic, "partition": partition}, "offset": {"offset": offset}})
                })
                .collect(),
            Err(err) => return error(StatusCode::SERVICE_UNAVAILABLE, &err.to_string()),
        },
        Connector::Source(_) => match api.control.state(name).await {
            Ok(state) => state
                .position
                .map(|p| json!({"partition": {"source": name}, "offset": {"position": p}}))
                .into_iter()
                .collect(),
            Err(err) => return control_error(&err),
        },
    };
    json(StatusCode::OK, &json!({ "offsets": offsets }))
}

/// `POST /connectors/{name}/snapshot` `{"tables": ["public.orders"], "where": "…"}`.
async fn snapshot<L: EventLog + Clone>(api: &Api<L>, name: &str, body: &Bytes) -> Answer {
    let Some(connector) = api.control.connector(name).await else {
        return unknown(name);
    };
    let Connector::Source(source) = connector else {
        return error(
            StatusCode::BAD_REQUEST,
            &format!("{name} is a sink: snapshots are a source's"),
        );
    };
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Ask {
        tables: Vec<String>,
        #[serde(rename = "where")]
        filter: Option<String>,
    }
    let ask: Ask = match serde_json::from_slice(body) {
        Ok(ask) => ask,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("the body must be {{\"tables\": [\"schema.table\"], \"where\": \"optional condition\"}}: {e}"),
            )
        }
    };
    if ask.tables.is_empty() {
        return error(StatusCode::BAD_REQUEST, "tables: name at least one table");
    }
    match crate::connect::request_snapshot(&source, &ask.tables, ask.filter.as_deref()).await {
        Ok(message) => json(StatusCode::ACCEPTED, &json!({ "message": message })),
        Err(e) => error(StatusCode::BAD_REQUEST, &format!("{e:#}")),
    }
}

/// Kafka Connect's validation answer for one connector config (the body: the `[[sources]]` or
/// `[[sinks]]` entry as JSON, without `kind`). `?type=source` for a source of a kind that is
/// both (postgres, mysql, kafka).
fn validate(kind: &str, query: &str, body: &Bytes) -> Answer {
    let mut config: Json = match serde_json::from_slice(body) {
        Ok(Json::Object(map)) => Json::Object(map),
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "the body must be a JSON object: the connector's config",
            )
        }
    };
    config["kind"] = json!(kind);
    let is_sink_kind = sluice_connectors::SINK_KINDS.contains(&kind);
    let is_source_kind = sluice_connectors::SOURCE_KINDS.contains(&kind);
    let mut asked = None;
    for (key, value) in parameters(query) {
        match (key, value) {
            ("type", "source") => asked = Some(true),
            ("type", "sink") => asked = Some(false),
            ("type", other) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    &format!("type takes source or sink, not {other:?}"),
                )
            }
            (other, _) => return unknown_parameter(other, "type"),
        }
    }
    let source = asked.unwrap_or(is_source_kind && !is_sink_kind);
    if !is_sink_kind && !is_source_kind {
        return error(
            StatusCode::NOT_FOUND,
            &format!("no connector kind {kind:?}: GET /connector-plugins lists them"),
        );
    }
    let (section, key) = if source {
        ("sources", "sources[0]")
    } else {
        ("sinks", "sinks[0]")
    };
    let problem: Option<(String, String)> = if source {
        match serde_json::from_value::<SourceConfig>(config.clone()) {
            Err(e) => Some(located(section, &config, &e.to_string())),
            Ok(c) => c.validate(key).err().map(|e| (e.key, e.message)),
        }
    } else {
        match serde_json::from_value::<SinkConfig>(config.clone()) {
            Err(e) => Some(located(section, &config, &e.to_string())),
            Ok(c) => c
                .validate(key)
                .err()
                .map(|e| (e.key, e.message))
                .or_else(|| {
                    sluice_core::transform::Chain::new(c.transforms())
                        .err()
                        .map(|e| (format!("{key}.transforms[{}]", e.index), e.to_string()))
                }),
        }
    };
    let configs: Vec<Json> = problem
        .iter()
        .map(|(field, message)| json!({"value": {"name": field, "errors": [message]}}))
        .collect();
    json(
        StatusCode::OK,
        &json!({"name": kind, "error_count": configs.len(), "groups": [], "configs": configs}),
    )
}

/// A deserialization error placed at its field.
fn located(section: &str, config: &Json, text: &str) -> (String, String) {
    match sluice_connectors::locate_config_error(section, config.clone()) {
        Some(at) => match at.split_once(": ") {
            Some((field, message)) => {
                (field.trim_start_matches('.').to_owned(), message.to_owned())
            }
            None => (String::new(), at),
        },
        None => (String::new(), text.to_owned()),
    }
}
