//! Where an S3 client's credentials come from, in the order AWS's own tools look:
//!
//! 1. keys given outright: the sink's `s3 = { … }`, `AWS_ACCESS_KEY_ID` and friends, or those
//!    an Iceberg catalog vends for a table (`files.rs` picks them), then those of an AWS
//!    profile in `~/.aws` (`profiles.rs`);
//! 2. a container's credentials endpoint, when the environment names one (ECS tasks set
//!    `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`, EKS Pod Identity sets
//!    `AWS_CONTAINER_CREDENTIALS_FULL_URI` and `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE`);
//! 3. the role of the EC2 instance sluice runs on, through the instance metadata service
//!    (IMDSv2: a session token first, then the role's keys), unless
//!    `AWS_EC2_METADATA_DISABLED=true`; `AWS_EC2_METADATA_SERVICE_ENDPOINT` moves it.
//!
//! Fetched keys are temporary: they are fetched again five minutes before they expire (and
//! kept while they are still valid if that fails, with a warning), so a sink that runs for
//! months never signs with expired keys.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use sluice_core::redact::Secret;

use crate::http::HttpError;

/// The instance metadata service's address on every EC2 instance.
const IMDS: &str = "http://169.254.169.254";
/// The ECS agent's credentials address, which a relative URI is relative to.
const ECS: &str = "http://169.254.170.2";
/// How long before fetched keys expire they are fetched again.
const RENEW_BEFORE: Duration = Duration::from_secs(300);

/// One set of keys requests are signed with.
pub(super) struct Keys {
    pub(super) access_key_id: String,
    pub(super) secret_access_key: Secret,
    pub(super) session_token: Option<Secret>,
    /// When temporary keys stop working.
    expires: Option<SystemTime>,
}

impl Keys {
    pub(super) fn fixed(
        access_key_id: String,
        secret_access_key: Secret,
        session_token: Option<Secret>,
    ) -> Keys {
        Keys {
            access_key_id,
            secret_access_key,
            session_token,
            expires: None,
        }
    }
}

/// Keys given outright, or a place that gives temporary ones.
pub(super) enum Credentials {
    Fixed(Arc<Keys>),
    Fetched(Fetcher),
}

/// Where temporary keys come from, and the last ones it gave.
pub(super) struct Fetcher {
    source: Source,
    client: reqwest::Client,
    /// What to say first when nothing gives keys: the ways to give them.
    none_given: String,
    last: tokio::sync::Mutex<Option<Arc<Keys>>>,
}

enum Source {
    /// A container's credentials endpoint, with the token that authorizes asking it (from a
    /// file, read at each fetch since it is rotated, or the environment).
    Container {
        url: String,
        token_file: Option<String>,
        token: Option<Secret>,
    },
    /// The EC2 instance's role, through IMDSv2 at this address.
    Instance { endpoint: String },
}

/// The answer of both endpoints (IMDS adds `Code`, `Type` and `LastUpdated`).
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Answer {
    access_key_id: String,
    secret_access_key: String,
    token: Option<String>,
    expiration: Option<String>,
    code: Option<String>,
}

impl Credentials {
    /// Where keys come from when none were given: a container endpoint the environment
    /// names, else the instance's role (unless turned off). Err: nowhere, and why.
    pub(super) fn discover(none_given: &str) -> Result<Credentials, String> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let container = var("AWS_CONTAINER_CREDENTIALS_FULL_URI").or_else(|| {
            var("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI").map(|path| format!("{ECS}{path}"))
        });
        let source = match container {
            Some(url) => Source::Container {
                url,
                token_file: var("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"),
                token: var("AWS_CONTAINER_AUTHORIZATION_TOKEN").map(Secret::new),
            },
            None if var("AWS_EC2_METADATA_DISABLED")
                .is_some_and(|v| v.eq_ignore_ascii_case("true")) =>
            {
                return Err(format!(
                    "{none_given} (the EC2 instance metadata service is not asked: \
                     AWS_EC2_METADATA_DISABLED=true)"
                ))
            }
            None => Source::Instance {
                endpoint: var("AWS_EC2_METADATA_SERVICE_ENDPOINT")
                    .unwrap_or_else(|| IMDS.into())
                    .trim_end_matches('/')
                    .to_owned(),
            },
        };
        // Short waits: off EC2 the instance address answers nothing, and saying so beats
        // hanging (the client uses no proxy, which could not reach a link-local address).
        let client =
            crate::http::client_with(None, Duration::from_secs(2), Duration::from_secs(5))?;
        Ok(Credentials::Fetched(Fetcher {
            source,
            client,
            none_given: none_given.to_owned(),
            last: tokio::sync::Mutex::new(None),
        }))
    }

    /// Keys to sign a request with now.
    pub(super) async fn keys(&self) -> Result<Arc<Keys>, HttpError> {
        match self {
            Credentials::Fixed(keys) => Ok(Arc::clone(keys)),
            Credentials::Fetched(fetcher) => fetcher.keys().await,
        }
    }
}

impl Fetcher {
    async fn keys(&self) -> Result<Arc<Keys>, HttpError> {
        let mut last = self.last.lock().await;
        let now = SystemTime::now();
        let fresh = |keys: &Keys| keys.expires.is_none_or(|at| now + RENEW_BEFORE < at);
        if let Some(keys) = last.as_ref().filter(|k| fresh(k)) {
            return Ok(Arc::clone(keys));
        }
        match self.fetch().await {
            Ok(keys) => {
                let keys = Arc::new(keys);
                *last = Some(Arc::clone(&keys));
                Ok(keys)
            }
            // Renewing failed, but the keys held still work for a while: go on with them.
            Err(err) => match last
                .as_ref()
                .filter(|k| k.expires.is_some_and(|at| now < at))
            {
                Some(keys) => {
                    tracing::warn!(error = %err, "could not renew the S3 credentials; the current ones are used until they expire");
                    Ok(Arc::clone(keys))
                }
                // Never fetched: nothing here gives keys, which retrying will not change
                // (a definite error). Expired: the endpoint may come back (transient).
                None if last.is_none() => Err(HttpError::Config(err)),
                None => Err(HttpError::Unreachable {
                    server: "S3 credentials",
                    url: self.url(),
                    reason: err,
                }),
            },
        }
    }

    fn url(&self) -> String {
        match &self.source {
            Source::Container { url, .. } => url.clone(),
            Source::Instance { endpoint } => endpoint.clone(),
        }
    }

    async fn fetch(&self) -> Result<Keys, String> {
        let answer = match &self.source {
            Source::Container {
                url,
                token_file,
                token,
            } => {
                let token = match token_file {
                    Some(path) => Some(Secret::new(
                        std::fs::read_to_string(path)
                            .map_err(|e| {
                                format!(
                                    "no S3 credentials: reading AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE {path}: {e}"
                                )
                            })?
                            .trim(),
                    )),
                    None => token.clone(),
                };
                let mut request = self.client.get(url);
                if let Some(token) = &token {
                    request = request.header(reqwest::header::AUTHORIZATION, token.expose());
                }
                self.ask(request, "the container credentials endpoint", url)
                    .await?
            }
            Source::Instance { endpoint } => {
                let place = "the EC2 instance metadata service";
                let session = self
                    .ask(
                        self.client
                            .put(format!("{endpoint}/latest/api/token"))
                            .header("x-aws-ec2-metadata-token-ttl-seconds", "21600"),
                        place,
                        endpoint,
                    )
                    .await?;
                let roles_url = format!("{endpoint}/latest/meta-data/iam/security-credentials/");
                let roles = self
                    .ask(
                        self.client
                            .get(&roles_url)
                            .header("x-aws-ec2-metadata-token", session.trim()),
                        place,
                        endpoint,
                    )
                    .await?;
                let Some(role) = roles.lines().map(str::trim).find(|l| !l.is_empty()) else {
                    return Err(format!(
                        "no S3 credentials: the EC2 instance at {endpoint} has no IAM role; \
                         attach one that may use the bucket, or give keys (s3.access_key_id \
                         and s3.secret_access_key_file)"
                    ));
                };
                self.ask(
                    self.client
                        .get(format!("{roles_url}{role}"))
                        .header("x-aws-ec2-metadata-token", session.trim()),
                    place,
                    endpoint,
                )
                .await?
            }
        };
        parse(&answer, &self.url())
    }

    /// The body of a successful answer; Err says who did not answer and what to do.
    async fn ask(
        &self,
        request: reqwest::RequestBuilder,
        place: &str,
        url: &str,
    ) -> Result<String, String> {
        let failed =
            |why: String| format!("{}; {place} at {url} gave none: {why}", self.none_given);
        let response = request
            .send()
            .await
            .map_err(|e| failed(crate::http::error_chain(&e)))?;
        let status = response.status();
        let body = response
            .text()
            .await
            .map_err(|e| failed(crate::http::error_chain(&e)))?;
        if !status.is_success() {
            return Err(failed(format!(
                "HTTP {status}: {}",
                crate::http::shorten(body.as_bytes())
            )));
        }
        Ok(body)
    }
}

/// Keys from an endpoint's JSON answer.
fn parse(answer: &str, url: &str) -> Result<Keys, String> {
    let answer: Answer = serde_json::from_str(answer)
        .map_err(|e| format!("no S3 credentials: {url} answered what is not credentials: {e}"))?;
    if let Some(code) = answer.code.filter(|c| c != "Success") {
        return Err(format!(
            "no S3 credentials: {url} answered {code} instead of credentials"
        ));
    }
    let expires = match answer.expiration {
        Some(text) => Some(expiry(&text).ok_or_else(|| {
            format!("no S3 credentials: {url} gave an expiration that is not a time: {text:?}")
        })?),
        None => None,
    };
    Ok(Keys {
        access_key_id: answer.access_key_id,
        secret_access_key: Secret::new(answer.secret_access_key),
        session_token: answer.token.filter(|t| !t.is_empty()).map(Secret::new),
        expires,
    })
}

/// `2026-12-07T15:00:00Z` (fractions allowed) as a time.
fn expiry(text: &str) -> Option<SystemTime> {
    let text = text.trim();
    let micros = sluice_core::value::parse_utc_timestamp(text)?;
    let micros = u64::try_from(micros).ok()?;
    Some(UNIX_EPOCH + Duration::from_micros(micros))
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    use super::*;

    /// A container credentials endpoint on loopback: answers each request with the body held
    /// (an HTTP 500 when none), counting them.
    fn endpoint(body: Arc<Mutex<Option<String>>>, asked: Arc<AtomicUsize>) -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/creds", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let mut stream = stream.unwrap();
                let mut request = [0u8; 4096];
                let _ = stream.read(&mut request);
                asked.fetch_add(1, Ordering::SeqCst);
                let answer = match body.lock().unwrap().clone() {
                    Some(body) => format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    ),
                    None => {
                        "HTTP/1.1 500 Oops\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".into()
                    }
                };
                let _ = stream.write_all(answer.as_bytes());
            }
        });
        url
    }

    fn answer(key: &str, expires_in: Duration) -> String {
        let at = SystemTime::now() + expires_in;
        let micros = at.duration_since(UNIX_EPOCH).unwrap().as_micros() as i64;
        let mut expiration = String::new();
        sluice_core::value::write_utc_timestamp(&mut expiration, micros);
        format!(
            r#"{{"AccessKeyId":"{key}","SecretAccessKey":"s","Token":"t","Expiration":"{expiration}"}}"#
        )
    }

    #[tokio::test]
    async fn fetched_keys_are_renewed_before_they_expire_and_kept_while_renewing_fails() {
        let body = Arc::new(Mutex::new(Some(answer("first", Duration::from_secs(3600)))));
        let asked = Arc::new(AtomicUsize::new(0));
        let url = endpoint(Arc::clone(&body), Arc::clone(&asked));
        let credentials = Credentials::Fetched(Fetcher {
            source: Source::Container {
                url,
                token_file: None,
                token: None,
            },
            client: crate::http::client(None).unwrap(),
            none_given: "no S3 credentials".into(),
            last: tokio::sync::Mutex::new(None),
        });
        // Valid for an hour: fetched once, then kept.
        assert_eq!(credentials.keys().await.unwrap().access_key_id, "first");
        assert_eq!(credentials.keys().await.unwrap().access_key_id, "first");
        assert_eq!(asked.load(Ordering::SeqCst), 1);
        // Keys that expire within the renewal margin are fetched again at each use.
        *body.lock().unwrap() = Some(answer("second", Duration::from_secs(120)));
        let Credentials::Fetched(fetcher) = &credentials else {
            unreachable!()
        };
        *fetcher.last.lock().await = None;
        assert_eq!(credentials.keys().await.unwrap().access_key_id, "second");
        *body.lock().unwrap() = Some(answer("third", Duration::from_secs(3600)));
        assert_eq!(credentials.keys().await.unwrap().access_key_id, "third");
        assert_eq!(asked.load(Ordering::SeqCst), 3);
        // The endpoint fails while the keys held still work: they are used.
        *fetcher.last.lock().await = None;
        *body.lock().unwrap() = Some(answer("fourth", Duration::from_secs(120)));
        assert_eq!(credentials.keys().await.unwrap().access_key_id, "fourth");
        *body.lock().unwrap() = None;
        assert_eq!(credentials.keys().await.unwrap().access_key_id, "fourth");
        // Expired, and the endpoint still fails: a transient error naming it.
        *fetcher.last.lock().await = Some(Arc::new(Keys {
            expires: Some(SystemTime::now() - Duration::from_secs(1)),
            ..Keys::fixed("old".into(), Secret::new("s"), None)
        }));
        let err = credentials.keys().await.err().expect("no usable keys");
        assert!(matches!(err, HttpError::Unreachable { .. }), "{err}");
        assert!(err.to_string().contains("HTTP 500"), "{err}");
        // Never fetched and failing: a definite error.
        *fetcher.last.lock().await = None;
        let err = credentials.keys().await.err().expect("no keys");
        assert!(matches!(err, HttpError::Config(_)), "{err}");
    }

    #[test]
    fn an_answer_gives_temporary_keys_and_refuses_what_is_not_one() {
        let keys = parse(
            r#"{"Code":"Success","LastUpdated":"2026-12-07T14:00:00Z","Type":"AWS-HMAC",
                "AccessKeyId":"ASIAEXAMPLE","SecretAccessKey":"s3cr3t","Token":"tok",
                "Expiration":"2026-12-07T20:00:00Z"}"#,
            "http://x",
        )
        .unwrap();
        assert_eq!(keys.access_key_id, "ASIAEXAMPLE");
        assert_eq!(keys.secret_access_key.expose(), "s3cr3t");
        assert_eq!(keys.session_token.as_ref().map(Secret::expose), Some("tok"));
        assert_eq!(
            keys.expires,
            Some(UNIX_EPOCH + Duration::from_secs(1_796_673_600))
        );
        let refused = parse(
            r#"{"Code":"Failed","AccessKeyId":"","SecretAccessKey":""}"#,
            "u",
        );
        assert!(refused.is_err_and(|e| e.contains("answered Failed")));
        let bad_time = parse(
            r#"{"AccessKeyId":"a","SecretAccessKey":"b","Expiration":"tomorrow"}"#,
            "u",
        );
        assert!(bad_time.is_err_and(|e| e.contains("\"tomorrow\"")));
    }
}
