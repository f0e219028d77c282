//! A small S3 client: the five calls the file sinks make (PutObject, conditional PutObject,
//! GetObject, DeleteObject, ListObjectsV2), signed with SigV4, on the sinks' HTTP client.
//! Works against AWS S3 and S3-compatible stores (MinIO, Ceph, moto, R2) through `endpoint`
//! and path-style addressing.

use bytes::Bytes;
use reqwest::Method;

use super::credentials::Credentials;
use super::sigv4::{self, Signer};
use crate::http::HttpError;

const SERVER: &str = "S3";

/// How to reach a bucket and prove who is asking.
pub(super) struct S3 {
    client: reqwest::Client,
    /// `scheme://host[:port]`, without a trailing '/'.
    endpoint: String,
    /// `https://s3.<region>.amazonaws.com` when no endpoint was given (virtual-hosted).
    aws: bool,
    path_style: bool,
    region: String,
    credentials: Credentials,
}

/// What [`S3::new`] needs.
pub(super) struct S3Settings {
    pub(super) endpoint: Option<String>,
    pub(super) region: String,
    pub(super) path_style: Option<bool>,
    pub(super) credentials: Credentials,
    pub(super) ca_file: Option<std::path::PathBuf>,
}

/// An object a listing found.
pub(super) struct Object {
    pub(super) key: String,
    pub(super) size: u64,
}

impl S3 {
    pub(super) fn new(settings: S3Settings) -> Result<S3, String> {
        let client = crate::http::client(settings.ca_file.as_deref())?;
        let (endpoint, aws) = match settings.endpoint {
            Some(endpoint) => {
                let endpoint = endpoint.trim_end_matches('/').to_owned();
                if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
                    return Err(format!(
                        "s3 endpoint {endpoint:?} is not an http:// or https:// URL"
                    ));
                }
                (endpoint, false)
            }
            None => (
                format!("https://s3.{}.amazonaws.com", settings.region),
                true,
            ),
        };
        Ok(S3 {
            client,
            endpoint,
            aws,
            // Stores other than AWS are mostly reached by path (MinIO, moto, Ceph).
            path_style: settings.path_style.unwrap_or(!aws),
            region: settings.region,
            credentials: settings.credentials,
        })
    }

    /// Where the requests go, for messages.
    pub(super) fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Writes an object; with `only_new`, only if no object has the key (`If-None-Match: *`):
    /// false when one has.
    pub(super) async fn put(
        &self,
        bucket: &str,
        key: &str,
        body: Bytes,
        only_new: bool,
    ) -> Result<bool, HttpError> {
        let extra: &[(&str, &str)] = if only_new {
            &[("if-none-match", "*")]
        } else {
            &[]
        };
        let what = format!("writing s3://{bucket}/{key}");
        let (status, answer) = self
            .send(Method::PUT, bucket, key, &[], body, extra, &what)
            .await?;
        match status {
            200..=299 => Ok(true),
            412 if only_new => Ok(false),
            // Another conditional write of the key was under way: try again.
            409 => Err(HttpError::Unreachable {
                server: SERVER,
                url: self.endpoint.clone(),
                reason: format!("{what}: a concurrent write of the same key (409); retrying"),
            }),
            _ => Err(self.error(&what, status, &answer)),
        }
    }

    /// An object's bytes; None when there is no such key.
    pub(super) async fn get(&self, bucket: &str, key: &str) -> Result<Option<Bytes>, HttpError> {
        let what = format!("reading s3://{bucket}/{key}");
        let (status, body) = self
            .send(Method::GET, bucket, key, &[], Bytes::new(), &[], &what)
            .await?;
        match status {
            200..=299 => Ok(Some(body)),
            404 if error_code(&body).as_deref() != Some("NoSuchBucket") => Ok(None),
            _ => Err(self.error(&what, status, &body)),
        }
    }

    pub(super) async fn delete(&self, bucket: &str, key: &str) -> Result<(), HttpError> {
        let what = format!("removing s3://{bucket}/{key}");
        let (status, body) = self
            .send(Method::DELETE, bucket, key, &[], Bytes::new(), &[], &what)
            .await?;
        match status {
            200..=299 | 404 => Ok(()),
            _ => Err(self.error(&what, status, &body)),
        }
    }

    /// Every object whose key starts with `prefix`, in key order.
    pub(super) async fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<Object>, HttpError> {
        let what = format!("listing s3://{bucket}/{prefix}");
        let mut objects = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut query = vec![
                ("list-type".to_owned(), "2".to_owned()),
                ("prefix".to_owned(), prefix.to_owned()),
            ];
            if let Some(token) = &token {
                query.push(("continuation-token".to_owned(), token.clone()));
            }
            let (status, body) = self
                .send(Method::GET, bucket, "", &query, Bytes::new(), &[], &what)
                .await?;
            if !(200..300).contains(&status) {
                return Err(self.error(&what, status, &body));
            }
            let text = String::from_utf8_lossy(&body);
            for block in elements(&text, "Contents") {
                let (Some(key), Some(size)) = (element(block, "Key"), element(block, "Size"))
                else {
                    continue;
                };
                objects.push(Object {
                    key: unescape_xml(key),
                    size: size.trim().parse().unwrap_or(0),
                });
            }
            let truncated = element(&text, "IsTruncated").is_some_and(|t| t.trim() == "true");
            token = element(&text, "NextContinuationToken").map(unescape_xml);
            if !truncated || token.is_none() {
                return Ok(objects);
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn send(
        &self,
        method: Method,
        bucket: &str,
        key: &str,
        query: &[(String, String)],
        body: Bytes,
        extra: &[(&str, &str)],
        what: &str,
    ) -> Result<(u16, Bytes), HttpError> {
        let escaped_key = sigv4::uri_escape(key, true);
        let (base, path) = if self.path_style {
            (self.endpoint.clone(), format!("/{bucket}/{escaped_key}"))
        } else {
            let (scheme, host) = self
                .endpoint
                .split_once("://")
                .expect("checked at construction");
            (
                format!("{scheme}://{bucket}.{host}"),
                format!("/{escaped_key}"),
            )
        };
        let host = base.split_once("://").map_or("", |(_, h)| h).to_owned();
        let mut url = format!("{base}{path}");
        if !query.is_empty() {
            let pairs: Vec<String> = query
                .iter()
                .map(|(k, v)| {
                    format!(
                        "{}={}",
                        sigv4::uri_escape(k, false),
                        sigv4::uri_escape(v, false)
                    )
                })
                .collect();
            url.push('?');
            url.push_str(&pairs.join("&"));
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let date = sigv4::amz_date(now);
        let payload = sigv4::sha256_hex(&body);
        let mut headers = vec![
            ("host".to_owned(), host),
            ("x-amz-content-sha256".to_owned(), payload.clone()),
            ("x-amz-date".to_owned(), date.clone()),
        ];
        let keys = self.credentials.keys().await?;
        if let Some(token) = &keys.session_token {
            headers.push(("x-amz-security-token".to_owned(), token.expose().to_owned()));
        }
        for (name, value) in extra {
            headers.push(((*name).to_owned(), (*value).to_owned()));
        }
        let signer = Signer {
            access_key_id: &keys.access_key_id,
            secret_access_key: keys.secret_access_key.expose(),
            region: &self.region,
            service: "s3",
        };
        let authorization = signer.authorization(&sigv4::Request {
            method: method.as_str(),
            path: &path,
            query,
            headers: &headers,
            payload_sha256: &payload,
            amz_date: &date,
        });
        let mut request = self.client.request(method, &url);
        for (name, value) in headers.iter().filter(|(n, _)| n != "host") {
            request = request.header(name.as_str(), value.as_str());
        }
        let mut auth = reqwest::header::HeaderValue::from_str(&authorization).map_err(|_| {
            HttpError::Config("the S3 credentials hold characters a header cannot".into())
        })?;
        auth.set_sensitive(true);
        request = request
            .header(reqwest::header::AUTHORIZATION, auth)
            .body(body);
        let unreachable = |err: reqwest::Error| HttpError::Unreachable {
            server: SERVER,
            url: self.endpoint.clone(),
            reason: format!("{what}: {}", crate::http::error_chain(&err)),
        };
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status().as_u16();
        let bytes = response.bytes().await.map_err(unreachable)?;
        Ok((status, bytes))
    }

    /// The error for an S3 answer, with S3's code and message and what to do about it.
    fn error(&self, what: &str, status: u16, body: &[u8]) -> HttpError {
        let text = String::from_utf8_lossy(body);
        let code = error_code(body).unwrap_or_default();
        let message = element(&text, "Message")
            .map(unescape_xml)
            .unwrap_or_else(|| crate::http::shorten(body));
        let hint = match code.as_str() {
            "InvalidAccessKeyId" | "SignatureDoesNotMatch" | "ExpiredToken" | "InvalidToken" => {
                " (check the credentials: s3.access_key_id and s3.secret_access_key_file, or \
                 AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
            }
            "AccessDenied" => " (the credentials lack a permission this needs: s3:PutObject, s3:GetObject, s3:DeleteObject and s3:ListBucket on the bucket)",
            "NoSuchBucket" => " (create the bucket, or fix the location's bucket name)",
            "PermanentRedirect" | "AuthorizationHeaderMalformed" | "IllegalLocationConstraintException" => {
                " (the bucket is in another region: set s3.region to it)"
            }
            _ if self.aws && status == 301 => " (the bucket is in another region: set s3.region to it)",
            _ => "",
        };
        let code = if code.is_empty() {
            String::new()
        } else {
            format!("{code}: ")
        };
        HttpError::Status {
            server: SERVER,
            what: what.to_owned(),
            status,
            body: format!("{code}{message}{hint}"),
        }
    }
}

/// The `<Code>` of an S3 error answer.
fn error_code(body: &[u8]) -> Option<String> {
    element(&String::from_utf8_lossy(body), "Code").map(unescape_xml)
}

/// The text inside the first `<name>…</name>` of `xml`.
fn element<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&close)? + start;
    Some(&xml[start..end])
}

/// The text inside every `<name>…</name>` of `xml`.
fn elements<'a>(xml: &'a str, name: &str) -> Vec<&'a str> {
    let (open, close) = (format!("<{name}>"), format!("</{name}>"));
    let mut found = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find(&open) {
        let after = &rest[start + open.len()..];
        let Some(end) = after.find(&close) else { break };
        found.push(&after[..end]);
        rest = &after[end + close.len()..];
    }
    found
}

/// XML's escapes undone (`&amp;`, `&lt;`, `&gt;`, `&quot;`, `&apos;`, `&#NN;`, `&#xNN;`).
fn unescape_xml(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        let Some(end) = tail.find(';') else {
            out.push_str(tail);
            return out;
        };
        let entity = &tail[1..end];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &tail[end + 1..];
            }
            None => {
                out.push('&');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listings_and_errors_are_read() {
        let xml = "<ListBucketResult><IsTruncated>true</IsTruncated><Contents><Key>a&amp;b/1.parquet</Key>\
                   <Size>12</Size></Contents><Contents><Key>c&#x20;d</Key><Size>3</Size></Contents>\
                   <NextContinuationToken>t&lt;1</NextContinuationToken></ListBucketResult>";
        let keys: Vec<String> = elements(xml, "Contents")
            .iter()
            .map(|b| unescape_xml(element(b, "Key").unwrap()))
            .collect();
        assert_eq!(keys, ["a&b/1.parquet", "c d"]);
        assert_eq!(
            unescape_xml(element(xml, "NextContinuationToken").unwrap()),
            "t<1"
        );
        assert_eq!(unescape_xml("x & y &bogus; &#65;"), "x & y &bogus; A");
        let body = b"<Error><Code>NoSuchBucket</Code><Message>The specified bucket does not exist</Message></Error>";
        assert_eq!(error_code(body).as_deref(), Some("NoSuchBucket"));
    }
}
