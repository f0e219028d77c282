//! The admin HTTP endpoint (`[api] listen`): `/metrics` in Prometheus text format and
//! `/health` (200 `ok`, or 503 naming each failed sink and why: a failed sink stays stopped,
//! and the rest of the pipeline goes on, until sluice is restarted). Deliberately tiny: one request per connection, GET only, no dependencies beyond
//! tokio; the metric names are listed in core's and each connector's `metrics.rs`.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use sluice_core::health::Health;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

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
    tracing::info!(%address, "serving /metrics and /health");
    Ok((listener, handle))
}

pub(crate) async fn serve(
    listener: TcpListener,
    metrics: PrometheusHandle,
    health: Health,
    cancel: CancellationToken,
) -> Result<(), std::io::Error> {
    loop {
        let (stream, _) = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            accepted = listener.accept() => accepted?,
        };
        let (metrics, health) = (metrics.clone(), health.clone());
        sluice_core::task::spawn_in_span(async move {
            if let Err(err) =
                tokio::time::timeout(Duration::from_secs(5), respond(stream, &metrics, &health))
                    .await
            {
                tracing::debug!(error = %err, "api request timed out");
            }
        });
    }
}

async fn respond(
    mut stream: TcpStream,
    metrics: &PrometheusHandle,
    health: &Health,
) -> std::io::Result<()> {
    let mut request = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 8192 {
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            break;
        }
        request.extend_from_slice(&chunk[..read]);
    }
    let line = request.split(|b| *b == b'\r').next().unwrap_or_default();
    let (status, content_type, body) = match line {
        l if l.starts_with(b"GET /metrics ") => {
            ("200 OK", "text/plain; version=0.0.4", metrics.render())
        }
        l if l.starts_with(b"GET /health ") => health_report(health),
        l if l.starts_with(b"GET ") => (
            "404 Not Found",
            "text/plain",
            "try /metrics or /health\n".to_owned(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "GET only\n".to_owned(),
        ),
    };
    let head = format!("HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

/// `/health`: 200 while nothing has failed, else 503 with one line per failed component.
fn health_report(health: &Health) -> (&'static str, &'static str, String) {
    let failed = health.failed();
    if failed.is_empty() {
        return ("200 OK", "text/plain", "ok\n".to_owned());
    }
    let mut body = String::new();
    for failure in failed {
        let mut at = String::new();
        sluice_core::value::write_utc_timestamp(&mut at, failure.at_us);
        body.push_str(&format!(
            "{} failed at {at}: {} (fix the cause, then restart sluice)\n",
            failure.component, failure.reason
        ));
    }
    ("503 Service Unavailable", "text/plain", body)
}
