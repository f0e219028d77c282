//! The admin HTTP endpoint (`[api] listen`, loopback by default):
//!
//! - `/health` (200 `ok`, or 503 naming each failed sink and why) and `/metrics` (Prometheus
//!   text; the names are in core's and each connector's `metrics.rs`);
//! - the REST API in Kafka Connect's shape (`api/connectors.rs`): connectors and their state,
//!   pause, resume, restart, offsets, on-demand snapshots, config validation;
//! - `/`, the dashboard (`api/dashboard.rs`);
//! - `/openapi.json`, the API's description (`api/openapi.json`, checked against the routes by
//!   `integration-tests/tests/admin_api.rs`).
//!
//! Every write (PUT, POST, PATCH, DELETE) needs `Authorization: Bearer <token>`, the token from
//! `[api] token_file` or `SLUICE_API_TOKEN`; without a token configured, writes are refused.
//! Reads need it too with `protect_reads = true` (`/health` never does).

mod connectors;
pub(crate) mod dashboard;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use sluice_core::event_log::EventLog;
use sluice_core::health::Health;
use sluice_core::redact::Secret;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::ApiSection;
use crate::control::Control;

/// The largest request body read (config validation is the largest request).
const MAX_BODY: usize = 1 << 20;

/// Installs the Prometheus recorder and binds `listen`; serving starts with [`serve`].
pub(crate) async fn bind(listen: &str) -> anyhow::Result<(TcpListener, PrometheusHandle)> {
    let address: SocketAddr = listen
        .parse()
        .with_context(|| format!("api.listen: {listen:?} is not an address like 127.0.0.1:8083"))?;
    let handle = PrometheusBuilder::new()
        .install_recorder()
        .context("installing the metrics recorder")?;
    let listener = TcpListener::bind(address)
        .await
        .with_context(|| format!("api.listen: cannot listen on {address}"))?;
    tracing::info!(%address, "serving the admin API, /metrics and /health");
    Ok((listener, handle))
}

/// Who may do what.
pub(crate) struct Auth {
    token: Option<Secret>,
    protect_reads: bool,
}

impl Auth {
    /// The token from `[api] token_file` or `SLUICE_API_TOKEN`.
    pub(crate) fn from_config(api: &ApiSection) -> anyhow::Result<Auth> {
        let token = match &api.token_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .with_context(|| format!("api.token_file {}", path.display()))?
                    .trim_end_matches(['\n', '\r'])
                    .to_owned(),
            ),
            None => std::env::var("SLUICE_API_TOKEN").ok(),
        };
        if token.as_deref().is_some_and(|t| t.len() < 16) {
            anyhow::bail!("api: the token is shorter than 16 characters; use a long random one");
        }
        if api.protect_reads && token.is_none() {
            anyhow::bail!(
                "api.protect_reads needs a token: set api.token_file or SLUICE_API_TOKEN"
            );
        }
        Ok(Auth {
            token: token.map(Secret::new),
            protect_reads: api.protect_reads,
        })
    }

    /// None when the request may go on, else the answer refusing it.
    fn check(&self, request: &Request<Incoming>) -> Option<Response<Full<Bytes>>> {
        let write = request.method() != Method::GET && request.method() != Method::HEAD;
        // The page itself holds no data (it asks for the token when its data needs one).
        let open = matches!(request.uri().path(), "/health" | "/");
        if open || !(write || self.protect_reads) {
            return None;
        }
        let Some(token) = &self.token else {
            return Some(error(
                StatusCode::FORBIDDEN,
                "this API takes no writes: set [api] token_file (or SLUICE_API_TOKEN) to a secret token and send it as Authorization: Bearer <token>",
            ));
        };
        let given = request
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match given {
            Some(given) if constant_time_eq(given.as_bytes(), token.expose().as_bytes()) => None,
            Some(_) => Some(error(StatusCode::UNAUTHORIZED, "the bearer token is wrong")),
            None => Some(error(
                StatusCode::UNAUTHORIZED,
                "send the API token as Authorization: Bearer <token>",
            )),
        }
    }
}

/// Compares without stopping at the first difference (a timing attack learns nothing).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What the handlers reach.
pub(crate) struct Api<L> {
    pub(crate) metrics: PrometheusHandle,
    pub(crate) health: Health,
    pub(crate) control: Arc<Control<L>>,
    pub(crate) auth: Auth,
    pub(crate) reloads: Arc<crate::run::Reloads>,
    pub(crate) history: Arc<dashboard::History>,
}

pub(crate) async fn serve<L: EventLog + Clone>(
    listener: TcpListener,
    api: Api<L>,
    cancel: CancellationToken,
) -> Result<(), std::io::Error> {
    let api = Arc::new(api);
    loop {
        let (stream, _) = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            accepted = listener.accept() => accepted?,
        };
        let api = Arc::clone(&api);
        let cancel = cancel.clone();
        sluice_core::task::spawn_in_span(async move {
            let service = hyper::service::service_fn(move |request| {
                let api = Arc::clone(&api);
                async move { Ok::<_, Infallible>(handle(&api, request).await) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(err) = result {
                        tracing::debug!(error = %err, "api connection ended");
                    }
                }
                _ = cancel.cancelled() => connection.as_mut().graceful_shutdown(),
            }
        });
    }
}

async fn handle<L: EventLog + Clone>(
    api: &Api<L>,
    request: Request<Incoming>,
) -> Response<Full<Bytes>> {
    if let Some(refused) = api.auth.check(&request) {
        return refused;
    }
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let query = request.uri().query().unwrap_or_default().to_owned();
    let body = match Limited::new(request.into_body(), MAX_BODY).collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "the body is larger than 1 MiB or was cut off",
            )
        }
    };
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    // What the document does not describe is not served: an unknown path is 404, a method
    // its path does not take is 405 with the ones it does.
    match documented(&parts) {
        None => {
            return error(
                StatusCode::NOT_FOUND,
                "no such resource: /openapi.json lists them",
            )
        }
        Some(methods) if !methods.contains(&method) => {
            let mut refused = error(
                StatusCode::METHOD_NOT_ALLOWED,
                &format!("{path} does not take {method}: /openapi.json lists what it takes"),
            );
            let allow: Vec<&str> = methods.iter().map(Method::as_str).collect();
            if let Ok(value) = hyper::header::HeaderValue::from_str(&allow.join(", ")) {
                refused.headers_mut().insert(hyper::header::ALLOW, value);
            }
            return refused;
        }
        Some(_) => {}
    }
    match (&method, parts.as_slice()) {
        (&Method::GET, ["health"]) => health_report(&api.health),
        (&Method::GET, [""]) => text(StatusCode::OK, "text/html; charset=utf-8", DASHBOARD.to_owned()),
        (&Method::GET, ["dashboard.json"]) => {
            json(StatusCode::OK, &dashboard::data(&api.control, &api.history).await)
        }
        (&Method::GET, ["metrics"]) => text(StatusCode::OK, "text/plain; version=0.0.4", api.metrics.render()),
        (&Method::GET, ["openapi.json"]) => text(StatusCode::OK, "application/json", OPENAPI.to_owned()),
        (&Method::POST, ["reload"]) => match crate::run::reload(&api.control, &api.reloads).await {
            Ok(report) => json(StatusCode::OK, &serde_json::json!(report)),
            Err(reason) => error(StatusCode::BAD_REQUEST, &format!("the config was not reloaded (the running pipeline goes on unchanged): {reason}")),
        },
        (_, ["connectors", ..]) | (_, ["connector-plugins", ..]) => {
            connectors::route(api, &method, &parts, &query, &body).await
        }
        (&Method::GET, _) => error(StatusCode::NOT_FOUND, "no such resource: try /connectors, /openapi.json, /metrics or /health"),
        _ => error(StatusCode::METHOD_NOT_ALLOWED, "no such operation: /openapi.json lists them"),
    }
}

/// The dashboard's page (its data: `/dashboard.json`).
const DASHBOARD: &str = include_str!("api/dashboard.html");

/// The API's OpenAPI 3 description.
const OPENAPI: &str = include_str!("api/openapi.json");

/// The methods the document describes for a path (its segments), or None for a path it does
/// not describe. `{name}` in a template stands for any one segment.
fn documented(parts: &[&str]) -> Option<&'static [Method]> {
    static PATHS: std::sync::OnceLock<Vec<(Vec<String>, Vec<Method>)>> = std::sync::OnceLock::new();
    let paths = PATHS.get_or_init(|| {
        let doc: serde_json::Value =
            serde_json::from_str(OPENAPI).expect("the OpenAPI document is JSON");
        doc["paths"]
            .as_object()
            .expect("the document has paths")
            .iter()
            .map(|(path, item)| {
                let segments = path
                    .trim_matches('/')
                    .split('/')
                    .map(str::to_owned)
                    .collect();
                let methods = item
                    .as_object()
                    .expect("a path item is an object")
                    .keys()
                    .filter_map(|m| Method::from_bytes(m.to_uppercase().as_bytes()).ok())
                    .collect();
                (segments, methods)
            })
            .collect()
    });
    paths
        .iter()
        .find(|(segments, _)| {
            segments.len() == parts.len()
                && segments
                    .iter()
                    .zip(parts)
                    .all(|(s, p)| s == p || (s.starts_with('{') && !p.is_empty()))
        })
        .map(|(_, methods)| methods.as_slice())
}

/// `/health`: 200 while nothing has failed, else 503 with one line per failed component.
fn health_report(health: &Health) -> Response<Full<Bytes>> {
    let failed = health.failed();
    if failed.is_empty() {
        return text(StatusCode::OK, "text/plain", "ok\n".to_owned());
    }
    let mut body = String::new();
    for failure in failed {
        let mut at = String::new();
        sluice_core::value::write_utc_timestamp(&mut at, failure.at_us);
        body.push_str(&format!(
            "{} failed at {at}: {} (fix the cause, then restart it: POST /connectors/<name>/restart, or restart sluice)\n",
            failure.component, failure.reason
        ));
    }
    text(StatusCode::SERVICE_UNAVAILABLE, "text/plain", body)
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    response
}

pub(crate) fn json(status: StatusCode, value: &serde_json::Value) -> Response<Full<Bytes>> {
    text(status, "application/json", value.to_string())
}

/// Kafka Connect's error body: `{"error_code": 404, "message": "…"}`.
pub(crate) fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    json(
        status,
        &serde_json::json!({"error_code": status.as_u16(), "message": message}),
    )
}
