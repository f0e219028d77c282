//! The HTTP client of the sinks that talk HTTP (search indexes, ClickHouse): one pooled reqwest
//! client per sink, TLS through rustls (ring; the system's CA store, or a CA file for private
//! servers), credentials kept out of every message (basic auth from the URL or a password file;
//! Typesense's API key), and answers turned into [`HttpError`]s that say what was asked and what
//! the server said.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use reqwest::{Method, Url};
use sluice_core::redact::SecretUrl;

use sluice_core::retry::{Classify, ErrorKind};

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The server could not be reached or did not answer in time (retried).
    #[error("{server} at {url}: {reason}")]
    Unreachable {
        server: &'static str,
        url: String,
        reason: String,
    },
    /// The server answered with an error status. 408, 429 and 5xx are retried; the rest are
    /// definite (permissions, a bad request the operator must fix).
    #[error("{server} answered {status} to {what}: {body}")]
    Status {
        server: &'static str,
        what: String,
        status: u16,
        body: String,
    },
    /// The server answered, but not what the sink can use.
    #[error("{server}: {reason}")]
    Unexpected {
        server: &'static str,
        reason: String,
    },
    /// The client cannot be made as configured (a URL, a certificate or password file).
    #[error("{0}")]
    Config(String),
}

impl Classify for HttpError {
    fn kind(&self) -> ErrorKind {
        match self {
            HttpError::Unreachable { .. } => ErrorKind::Transient,
            HttpError::Status { status, .. } if retried_status(*status) => ErrorKind::Transient,
            HttpError::Status { .. } | HttpError::Unexpected { .. } | HttpError::Config(_) => {
                ErrorKind::Definite
            }
        }
    }
}

/// `text` escaped for a URL's path or query: every byte but ASCII letters and digits.
pub fn escape(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Statuses worth retrying: overloaded, timed out, failing.
pub fn retried_status(status: u16) -> bool {
    status == 429 || status == 408 || status >= 500
}

/// How long a request may take, answer included: a bulk of several MiB on a busy cluster.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How requests prove who they are.
pub enum Auth {
    /// User and password from the URL's userinfo (`https://user:pass@host:9200`), the password
    /// replaced by `password_file`'s content when given.
    Basic {
        password_file: Option<std::path::PathBuf>,
    },
    /// A key sent in a header of its own (Typesense's `X-TYPESENSE-API-KEY`).
    ApiKey { header: &'static str, key: String },
}

/// A search server's HTTP endpoint.
#[derive(Clone)]
pub struct Http {
    server: &'static str,
    client: reqwest::Client,
    /// The URL without credentials and without a trailing '/'.
    base: String,
    auth: Option<(HeaderName, HeaderValue)>,
}

impl Http {
    /// A client for `url` (`server` names the kind of server in messages).
    pub fn new(
        server: &'static str,
        url: &SecretUrl,
        ca_file: Option<&Path>,
        auth: Auth,
    ) -> Result<Http, HttpError> {
        let config = |reason: String| HttpError::Config(format!("{server} url {url}: {reason}"));
        let password = match &auth {
            Auth::Basic {
                password_file: Some(path),
            } => Some(
                read_secret(path).map_err(|e| HttpError::Config(format!("password_file {e}")))?,
            ),
            _ => None,
        };
        let (parsed, basic) = without_credentials(url, password).map_err(&config)?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(config("use http:// or https://".into()));
        }
        let auth = match auth {
            Auth::Basic { .. } => basic.map(|value| (reqwest::header::AUTHORIZATION, value)),
            Auth::ApiKey { header, key } => {
                let mut value = HeaderValue::from_str(&key)
                    .map_err(|_| config("the API key holds characters a header cannot".into()))?;
                value.set_sensitive(true);
                Some((HeaderName::from_static(header), value))
            }
        };
        let client = client(ca_file).map_err(&config)?;
        Ok(Http {
            server,
            client,
            base: parsed.as_str().trim_end_matches('/').to_owned(),
            auth,
        })
    }

    pub fn server(&self) -> &'static str {
        self.server
    }

    /// The server's URL, without credentials.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends a request and returns the status and body, whatever the status; `what` says what
    /// the request is for, in errors. Only a failure to reach the server is an error here.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<(Bytes, &'static str)>,
        what: &str,
    ) -> Result<(u16, Bytes), HttpError> {
        let url = format!("{}{path}", self.base);
        let mut request = self.client.request(method, &url);
        if let Some((name, value)) = &self.auth {
            request = request.header(name, value.clone());
        }
        if let Some((body, content_type)) = body {
            request = request.header(CONTENT_TYPE, content_type).body(body);
        }
        let unreachable = |err: reqwest::Error| HttpError::Unreachable {
            server: self.server,
            url: self.base.clone(),
            reason: format!("{what}: {}", error_chain(&err)),
        };
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status().as_u16();
        let bytes = response.bytes().await.map_err(unreachable)?;
        Ok((status, bytes))
    }

    /// Sends a request with an optional JSON body and parses the JSON answer; a status
    /// outside 2xx is an error (`allow` lists statuses that are answers, not errors, such as
    /// 404 for "no such document").
    pub async fn json(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
        what: &str,
        allow: &[u16],
    ) -> Result<(u16, serde_json::Value), HttpError> {
        let body = body.map(|b| (Bytes::from(b.to_string()), "application/json"));
        let (status, bytes) = self.send(method, path, body, what).await?;
        if !(200..300).contains(&status) && !allow.contains(&status) {
            return Err(self.status_error(what, status, &bytes));
        }
        let value = if bytes.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&bytes).map_err(|e| HttpError::Unexpected {
                server: self.server,
                reason: format!("{what}: the answer is not JSON ({e}): {}", shorten(&bytes)),
            })?
        };
        Ok((status, value))
    }

    /// The error for an answer with `status`, with the server's reason when it gives one.
    pub fn status_error(&self, what: &str, status: u16, body: &[u8]) -> HttpError {
        let reason = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| server_reason(&v))
            .unwrap_or_else(|| shorten(body));
        let hint = match status {
            401 => " (check the credentials: user and password in the url or password_file, or the API key)",
            403 => " (the user lacks a privilege this needs: see the reason)",
            413 => " (the request is larger than the server accepts: lower the batch size)",
            _ => "",
        };
        HttpError::Status {
            server: self.server,
            what: what.to_owned(),
            status,
            body: format!("{reason}{hint}"),
        }
    }
}

/// `url` without its user and password, and the basic-auth header they make (`password`, from
/// a password file, takes the place of the URL's); None when the URL names no user and there
/// is no password.
pub fn without_credentials(
    url: &SecretUrl,
    password: Option<String>,
) -> Result<(Url, Option<HeaderValue>), String> {
    let mut parsed = Url::parse(url.expose()).map_err(|e| e.to_string())?;
    let user = percent_decode(parsed.username());
    let password = password.or_else(|| parsed.password().map(percent_decode));
    let _ = parsed.set_username("");
    let _ = parsed.set_password(None);
    if user.is_empty() && password.is_none() {
        return Ok((parsed, None));
    }
    use base64::Engine;
    let token = base64::engine::general_purpose::STANDARD
        .encode(format!("{user}:{}", password.unwrap_or_default()));
    let mut value = HeaderValue::from_str(&format!("Basic {token}")).map_err(|e| e.to_string())?;
    value.set_sensitive(true);
    Ok((parsed, Some(value)))
}

/// A secret kept in a file (a password, a token): its text without the trailing newline.
pub fn read_secret(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(text.trim_end_matches(['\n', '\r']).to_owned())
}

/// The reason an OpenSearch/Elasticsearch (`error.reason`, `error.type`) or Typesense
/// (`message`) error answer gives.
pub fn server_reason(answer: &serde_json::Value) -> Option<String> {
    if let Some(error) = answer.get("error") {
        if let Some(text) = error.as_str() {
            return Some(text.to_owned());
        }
        let kind = error
            .get("type")
            .and_then(|t| t.as_str())
            .unwrap_or("error");
        let reason = error.get("reason").and_then(|r| r.as_str()).unwrap_or("");
        return Some(format!("{kind}: {reason}"));
    }
    answer
        .get("message")
        .and_then(|m| m.as_str())
        .map(str::to_owned)
}

/// A pooled client (HTTP/1.1, rustls on ring trusting `ca_file` or the system's CA store).
pub fn client(ca_file: Option<&Path>) -> Result<reqwest::Client, String> {
    client_with(ca_file, CONNECT_TIMEOUT, REQUEST_TIMEOUT)
}

/// [`client`] with other waits (a credentials endpoint that may not exist is given up on
/// sooner).
pub fn client_with(
    ca_file: Option<&Path>,
    connect: Duration,
    request: Duration,
) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls_config(ca_file)?)
        .connect_timeout(connect)
        .timeout(request)
        .tcp_nodelay(true)
        .pool_idle_timeout(Duration::from_secs(60))
        .no_proxy()
        .build()
        .map_err(|e| e.to_string())
}

/// At most 500 characters of a body, for messages.
pub fn shorten(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    match text.char_indices().nth(500) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.into_owned(),
    }
}

/// An error and its causes, one line ("connection refused" is several levels down).
pub(crate) fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let line = cause.to_string();
        if !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        source = cause.source();
    }
    text
}

/// `%XX` escapes of URL userinfo decoded.
fn percent_decode(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}

/// rustls on ring, trusting `ca_file` when given, else the system's CA store.
fn tls_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("ca_file {}: {e}", path.display()))?;
            for cert in certs {
                let cert = cert.map_err(|e| format!("ca_file {}: {e}", path.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("ca_file {}: {e}", path.display()))?;
            }
        }
        None => {
            // Certificates the store cannot parse are skipped, as browsers do.
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    // ring: see connectors/src/tls.rs.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_leave_the_url_and_reasons_are_found() {
        let url = SecretUrl::new("http://elastic:s%40cret@127.0.0.1:9200/");
        let http = Http::new(
            "OpenSearch",
            &url,
            None,
            Auth::Basic {
                password_file: None,
            },
        )
        .unwrap();
        assert_eq!(http.base(), "http://127.0.0.1:9200");
        let (name, value) = http.auth.clone().unwrap();
        assert_eq!(name, reqwest::header::AUTHORIZATION);
        assert!(value.is_sensitive());
        use base64::Engine;
        let expected = base64::engine::general_purpose::STANDARD.encode("elastic:s@cret");
        assert_eq!(value.to_str().unwrap(), format!("Basic {expected}"));
        let answer =
            serde_json::json!({"error": {"type": "mapper_parsing_exception", "reason": "bad"}});
        assert_eq!(
            server_reason(&answer).unwrap(),
            "mapper_parsing_exception: bad"
        );
        let err = http.status_error("creating index x", 401, b"{}");
        assert!(err.to_string().contains("check the credentials"), "{err}");
        assert!(!err.to_string().contains("cret"));
        let err = Http::new(
            "OpenSearch",
            &SecretUrl::new("ftp://h"),
            None,
            Auth::Basic {
                password_file: None,
            },
        )
        .err()
        .unwrap();
        assert!(err.to_string().contains("use http:// or https://"), "{err}");
    }

    #[test]
    fn credentials_leave_the_url_for_a_basic_auth_header() {
        use base64::Engine;
        let basic = |user_password: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(user_password)
            )
        };
        let url = SecretUrl::new("https://ann:p%40ss@search.internal:9200/x");
        let (bare, header) = without_credentials(&url, None).unwrap();
        assert_eq!(bare.as_str(), "https://search.internal:9200/x");
        assert_eq!(header.unwrap().to_str().unwrap(), basic("ann:p@ss"));
        assert!(without_credentials(&url, None)
            .unwrap()
            .1
            .unwrap()
            .is_sensitive());
        let (_, header) = without_credentials(&url, Some("from-file".into())).unwrap();
        assert_eq!(header.unwrap().to_str().unwrap(), basic("ann:from-file"));
        let plain = SecretUrl::new("http://127.0.0.1:8123");
        assert!(without_credentials(&plain, None).unwrap().1.is_none());
        assert!(without_credentials(&SecretUrl::new("not a url"), None).is_err());
    }
}
