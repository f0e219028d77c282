//! Confluent Schema Registry's REST API over the registry (routes in
//! ../shared/reference/schema-registry.md): Confluent's content type and error bodies, so that
//! Confluent's serializers and tools talk to sluice unchanged.
//!
//! [`handle`] is the whole API as one function of (method, path, query, body); [`serve`] puts
//! it behind HTTP/1.1 with keep-alive. Handlers may block on storage, so they run on tokio's
//! blocking pool.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::{json, Value as Json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::registry::{
    Level, Mode, NewSchema, Registry, RegistryError, SchemaType, SubjectVersion, VersionSpec,
};

/// Confluent's media type; plain `application/json` is accepted too.
pub const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";
/// Largest request body accepted.
const MAX_BODY: usize = 16 << 20;

/// An answer: status and body (JSON, or the raw schema text for `/schema` routes).
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub status: u16,
    pub body: String,
    pub json: bool,
}

impl Answer {
    fn ok(body: Json) -> Answer {
        Answer {
            status: 200,
            body: body.to_string(),
            json: true,
        }
    }

    fn raw(text: String) -> Answer {
        Answer {
            status: 200,
            body: text,
            json: false,
        }
    }

    fn error(err: &RegistryError) -> Answer {
        Answer {
            status: err.status(),
            body: json!({"error_code": err.code, "message": err.message}).to_string(),
            json: true,
        }
    }
}

#[derive(Deserialize)]
struct SchemaBody {
    #[serde(default)]
    schema: Option<String>,
    #[serde(default, rename = "schemaType")]
    schema_type: Option<String>,
    #[serde(default)]
    references: Option<Vec<Json>>,
    #[serde(default)]
    id: Option<i64>,
    #[serde(default)]
    version: Option<i64>,
}

struct Query<'a>(Vec<(String, &'a str)>);

impl<'a> Query<'a> {
    fn parse(query: &'a str) -> Query<'a> {
        Query(
            query
                .split('&')
                .filter(|p| !p.is_empty())
                .map(|pair| {
                    let (k, v) = pair.split_once('=').unwrap_or((pair, "true"));
                    (sluice_core::url::percent_decode(k), v)
                })
                .collect(),
        )
    }

    fn flag(&self, name: &str) -> bool {
        self.0
            .iter()
            .any(|(k, v)| k == name && v.eq_ignore_ascii_case("true"))
    }
}

fn version_json(v: &SubjectVersion) -> Json {
    let mut body = json!({
        "subject": v.subject,
        "version": v.version,
        "id": v.id,
        "schema": v.schema,
    });
    if v.schema_type != SchemaType::Avro {
        body["schemaType"] = json!(v.schema_type.as_str());
    }
    if v.deleted {
        body["deleted"] = json!(true);
    }
    body
}

fn parse_body(body: &[u8]) -> Result<SchemaBody, RegistryError> {
    serde_json::from_slice(body)
        .map_err(|e| RegistryError::bad_request(format!("the request body is not valid: {e}")))
}

/// The schema a request body carries.
fn body_schema(body: &SchemaBody) -> Result<(SchemaType, &str), RegistryError> {
    if body.references.as_ref().is_some_and(|r| !r.is_empty()) {
        return Err(RegistryError::invalid_schema(
            "schema references are not supported by this registry",
        ));
    }
    let schema_type = SchemaType::parse(body.schema_type.as_deref())?;
    match body.schema.as_deref() {
        Some(text) if !text.trim().is_empty() => Ok((schema_type, text)),
        _ => Err(RegistryError::invalid_schema("Empty schema")),
    }
}

fn id_of(text: &str) -> Result<u32, RegistryError> {
    text.parse::<u32>()
        .ok()
        .filter(|id| *id > 0 && i32::try_from(*id).is_ok())
        .ok_or_else(|| RegistryError::schema_not_found(text))
}

fn import_number(value: Option<i64>, what: &str) -> Result<Option<u32>, RegistryError> {
    value
        .map(|n| {
            u32::try_from(n)
                .ok()
                .filter(|n| *n > 0 && i32::try_from(*n).is_ok())
                .ok_or_else(|| RegistryError::unprocessable(format!("invalid {what} {n}")))
        })
        .transpose()
}

fn config_body(body: &[u8]) -> Result<Level, RegistryError> {
    let body: Json = serde_json::from_slice(body)
        .map_err(|e| RegistryError::bad_request(format!("the request body is not valid: {e}")))?;
    let text = body
        .get("compatibility")
        .or_else(|| body.get("compatibilityLevel"))
        .and_then(Json::as_str)
        .unwrap_or("");
    Level::parse(text)
}

fn mode_body(body: &[u8]) -> Result<Mode, RegistryError> {
    let body: Json = serde_json::from_slice(body)
        .map_err(|e| RegistryError::bad_request(format!("the request body is not valid: {e}")))?;
    Mode::parse(body.get("mode").and_then(Json::as_str).unwrap_or(""))
}

/// The API: answers one request. Blocks while a change is written to storage.
pub fn handle(
    registry: &Registry,
    method: &Method,
    path: &str,
    query: &str,
    body: &[u8],
) -> Answer {
    match route(registry, method, path, query, body) {
        Ok(answer) => answer,
        Err(err) => Answer::error(&err),
    }
}

fn route(
    registry: &Registry,
    method: &Method,
    path: &str,
    query: &str,
    body: &[u8],
) -> Result<Answer, RegistryError> {
    let query = Query::parse(query);
    let segments: Vec<String> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .map(sluice_core::url::percent_decode)
        .collect();
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let (get, post, put, delete) = (
        method == Method::GET,
        method == Method::POST,
        method == Method::PUT,
        method == Method::DELETE,
    );
    let deleted = query.flag("deleted");
    let permanent = query.flag("permanent");
    Ok(match segments.as_slice() {
        [] if get => Answer::ok(json!({})),
        ["schemas", "types"] if get => Answer::ok(json!(["AVRO", "JSON"])),
        ["schemas", "ids", id] if get => {
            let schema = registry.schema(id_of(id)?)?;
            let mut body = json!({"schema": schema.text});
            if schema.schema_type != SchemaType::Avro {
                body["schemaType"] = json!(schema.schema_type.as_str());
            }
            Answer::ok(body)
        }
        ["schemas", "ids", id, "schema"] if get => {
            Answer::raw(registry.schema(id_of(id)?)?.text.clone())
        }
        ["schemas", "ids", id, "subjects"] if get => {
            let usages = registry.usages(id_of(id)?, deleted)?;
            let mut subjects: Vec<String> = usages.into_iter().map(|(s, _)| s).collect();
            subjects.dedup();
            Answer::ok(json!(subjects))
        }
        ["schemas", "ids", id, "versions"] if get => {
            let usages = registry.usages(id_of(id)?, deleted)?;
            Answer::ok(Json::Array(
                usages
                    .into_iter()
                    .map(|(subject, version)| json!({"subject": subject, "version": version}))
                    .collect(),
            ))
        }
        ["subjects"] if get => Answer::ok(json!(registry.subjects(deleted))),
        ["subjects", subject] if post => {
            let body = parse_body(body)?;
            let (schema_type, text) = body_schema(&body)?;
            let found = registry.lookup(subject, schema_type, text, deleted)?;
            Answer::ok(version_json(&found))
        }
        ["subjects", subject] if delete => {
            Answer::ok(json!(registry.delete_subject(subject, permanent)?))
        }
        ["subjects", subject, "versions"] if get => {
            Answer::ok(json!(registry.versions(subject, deleted)?))
        }
        ["subjects", subject, "versions"] if post => {
            let body = parse_body(body)?;
            let (schema_type, text) = body_schema(&body)?;
            let id = registry.register(
                subject,
                &NewSchema {
                    schema_type,
                    text,
                    id: import_number(body.id, "id")?,
                    version: import_number(body.version, "version")?,
                },
            )?;
            Answer::ok(json!({"id": id}))
        }
        ["subjects", subject, "versions", version] if get => {
            let found = registry.version(subject, VersionSpec::parse(version)?, deleted)?;
            Answer::ok(version_json(&found))
        }
        ["subjects", subject, "versions", version, "schema"] if get => Answer::raw(
            registry
                .version(subject, VersionSpec::parse(version)?, deleted)?
                .schema,
        ),
        ["subjects", subject, "versions", version, "referencedby"] if get => {
            registry.version(subject, VersionSpec::parse(version)?, deleted)?;
            Answer::ok(json!([]))
        }
        ["subjects", subject, "versions", version] if delete => {
            let spec = VersionSpec::parse(version)?;
            Answer::ok(json!(registry.delete_version(subject, spec, permanent)?))
        }
        ["compatibility", "subjects", subject, "versions", rest @ ..]
            if post && rest.len() <= 1 =>
        {
            let spec = rest.first().map(|v| VersionSpec::parse(v)).transpose()?;
            let body = parse_body(body)?;
            let (schema_type, text) = body_schema(&body)?;
            let messages = registry.check_compatibility(subject, spec, schema_type, text)?;
            let mut answer = json!({"is_compatible": messages.is_empty()});
            if query.flag("verbose") {
                answer["messages"] = json!(messages);
            }
            Answer::ok(answer)
        }
        ["config"] if get => {
            Answer::ok(json!({"compatibilityLevel": registry.compatibility(None, true)?.as_str()}))
        }
        ["config", subject] if get => {
            let level = registry.compatibility(Some(subject), query.flag("defaultToGlobal"))?;
            Answer::ok(json!({"compatibilityLevel": level.as_str()}))
        }
        ["config", rest @ ..] if put && rest.len() <= 1 => {
            let level = config_body(body)?;
            registry.set_compatibility(rest.first().copied(), level)?;
            Answer::ok(json!({"compatibility": level.as_str()}))
        }
        ["config", rest @ ..] if delete && rest.len() <= 1 => {
            let previous = registry.delete_compatibility(rest.first().copied())?;
            Answer::ok(json!({"compatibilityLevel": previous.as_str()}))
        }
        ["mode", rest @ ..] if get && rest.len() <= 1 => {
            let mode = registry.mode(rest.first().copied(), query.flag("defaultToGlobal"))?;
            Answer::ok(json!({"mode": mode.as_str()}))
        }
        ["mode", rest @ ..] if put && rest.len() <= 1 => {
            let mode = mode_body(body)?;
            registry.set_mode(rest.first().copied(), mode, query.flag("force"))?;
            Answer::ok(json!({"mode": mode.as_str()}))
        }
        ["mode", rest @ ..] if delete && rest.len() <= 1 => {
            let previous = registry.delete_mode(rest.first().copied())?;
            Answer::ok(json!({"mode": previous.as_str()}))
        }
        _ if known_route(&segments) => return Err(RegistryError::method_not_allowed()),
        _ => return Err(RegistryError::route_not_found()),
    })
}

fn known_route(segments: &[&str]) -> bool {
    matches!(
        segments,
        [] | ["schemas", ..]
            | ["subjects", ..]
            | ["compatibility", ..]
            | ["config", ..]
            | ["mode", ..]
    )
}

/// Why the registry cannot listen where its config says.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("registry.listen: {0:?} is not an address like 127.0.0.1:8081")]
    Address(String),
    #[error("registry.listen: cannot listen on {address}: {source}")]
    Listen {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Binds `listen` for [`serve`].
pub async fn bind(listen: &str) -> Result<TcpListener, BindError> {
    let address: SocketAddr = listen
        .parse()
        .map_err(|_| BindError::Address(listen.to_owned()))?;
    TcpListener::bind(address)
        .await
        .map_err(|source| BindError::Listen { address, source })
}

/// Serves the API on `listener` until `cancel`.
pub async fn serve(
    listener: TcpListener,
    registry: Arc<Registry>,
    cancel: CancellationToken,
) -> Result<(), std::io::Error> {
    if let Ok(address) = listener.local_addr() {
        tracing::info!(%address, "serving the schema registry API");
    }
    loop {
        let (stream, _) = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            accepted = listener.accept() => accepted?,
        };
        let registry = Arc::clone(&registry);
        let cancel = cancel.clone();
        sluice_core::task::spawn_in_span(async move {
            let service = hyper::service::service_fn(move |request| {
                let registry = Arc::clone(&registry);
                async move { Ok::<_, std::convert::Infallible>(respond(registry, request).await) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(err) = result {
                        tracing::debug!(error = %err, "registry connection ended");
                    }
                }
                _ = cancel.cancelled() => connection.as_mut().graceful_shutdown(),
            }
        });
    }
}

async fn respond(registry: Arc<Registry>, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    let answer = match Limited::new(body, MAX_BODY).collect().await {
        Err(_) => Answer::error(&RegistryError::bad_request(format!(
            "the request body is unreadable or larger than {MAX_BODY} bytes"
        ))),
        Ok(body) => {
            let body = body.to_bytes();
            let method = parts.method.clone();
            let path = parts.uri.path().to_owned();
            let query = parts.uri.query().unwrap_or("").to_owned();
            tokio::task::spawn_blocking(move || handle(&registry, &method, &path, &query, &body))
                .await
                .unwrap_or_else(|_| {
                    Answer::error(&RegistryError::store("the request handler panicked"))
                })
        }
    };
    let content_type = if answer.json {
        CONTENT_TYPE
    } else {
        "text/plain"
    };
    Response::builder()
        .status(StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header(hyper::header::CONTENT_TYPE, content_type)
        .body(Full::new(Bytes::from(answer.body)))
        .expect("a valid response")
}
