//! AWS Signature Version 4 for S3 requests: the canonical request, the string to sign and the
//! `Authorization` header, with HMAC-SHA256 and SHA-256 from ring (already in the tree through
//! rustls).

use ring::{digest, hmac};

/// The hex SHA-256 of `bytes` (the `x-amz-content-sha256` of a body).
pub(super) fn sha256_hex(bytes: &[u8]) -> String {
    hex(digest::digest(&digest::SHA256, bytes).as_ref())
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    out
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> hmac::Tag {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data)
}

/// `text` escaped as SigV4 wants it: every byte but `A-Za-z0-9-_.~` as `%XX`; `/` kept when
/// `keep_slash` (object keys in paths).
pub(super) fn uri_escape(text: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'_' | b'.' | b'~')
            || (keep_slash && b == b'/')
        {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `YYYYMMDDTHHMMSSZ` for a Unix time in seconds.
pub(super) fn amz_date(unix_seconds: i64) -> String {
    let mut iso = String::new();
    sluice_core::value::write_utc_timestamp(&mut iso, unix_seconds * 1_000_000);
    iso.retain(|c| c != '-' && c != ':');
    iso
}

/// Who signs: an access key, its secret and the region and service of the scope.
pub(super) struct Signer<'a> {
    pub(super) access_key_id: &'a str,
    pub(super) secret_access_key: &'a str,
    pub(super) region: &'a str,
    pub(super) service: &'a str,
}

/// A request as it is signed. `path` is already escaped; `query` pairs are raw; `headers` are
/// every header to sign (names lower case), `host` and `x-amz-date` among them.
pub(super) struct Request<'a> {
    pub(super) method: &'a str,
    pub(super) path: &'a str,
    pub(super) query: &'a [(String, String)],
    pub(super) headers: &'a [(String, String)],
    pub payload_sha256: &'a str,
    pub(super) amz_date: &'a str,
}

impl Signer<'_> {
    /// The `Authorization` header's value for `request`.
    pub(super) fn authorization(&self, request: &Request<'_>) -> String {
        let mut query: Vec<(String, String)> = request
            .query
            .iter()
            .map(|(k, v)| (uri_escape(k, false), uri_escape(v, false)))
            .collect();
        query.sort();
        let query = query
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&");
        let mut headers: Vec<(String, String)> = request
            .headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        headers.sort();
        let canonical_headers: String = headers.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
        let signed_headers = headers
            .iter()
            .map(|(k, _)| k.as_str())
            .collect::<Vec<_>>()
            .join(";");
        let canonical = format!(
            "{}\n{}\n{query}\n{canonical_headers}\n{signed_headers}\n{}",
            request.method, request.path, request.payload_sha256
        );
        let day = &request.amz_date[..8];
        let scope = format!("{day}/{}/{}/aws4_request", self.region, self.service);
        let to_sign = format!(
            "AWS4-HMAC-SHA256\n{}\n{scope}\n{}",
            request.amz_date,
            sha256_hex(canonical.as_bytes())
        );
        let key = format!("AWS4{}", self.secret_access_key);
        let key = hmac_sha256(key.as_bytes(), day.as_bytes());
        let key = hmac_sha256(key.as_ref(), self.region.as_bytes());
        let key = hmac_sha256(key.as_ref(), self.service.as_bytes());
        let key = hmac_sha256(key.as_ref(), b"aws4_request");
        let signature = hex(hmac_sha256(key.as_ref(), to_sign.as_bytes()).as_ref());
        format!(
            "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
            self.access_key_id
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The "GET Object" example of Amazon's SigV4 documentation for S3 (a public test vector).
    #[test]
    fn signs_amazons_documented_example() {
        let signer = Signer {
            access_key_id: "AKIAIOSFODNN7EXAMPLE",
            secret_access_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            region: "us-east-1",
            service: "s3",
        };
        let empty = sha256_hex(b"");
        assert_eq!(
            empty,
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let date = amz_date(1_369_353_600);
        assert_eq!(date, "20130524T000000Z");
        let headers = [
            (
                "Host".to_owned(),
                "examplebucket.s3.amazonaws.com".to_owned(),
            ),
            ("Range".to_owned(), "bytes=0-9".to_owned()),
            ("x-amz-content-sha256".to_owned(), empty.clone()),
            ("x-amz-date".to_owned(), date.clone()),
        ];
        let auth = signer.authorization(&Request {
            method: "GET",
            path: "/test.txt",
            query: &[],
            headers: &headers,
            payload_sha256: &empty,
            amz_date: &date,
        });
        assert_eq!(
            auth,
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, \
             SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, \
             Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
    }

    #[test]
    fn escapes_as_sigv4_wants() {
        assert_eq!(uri_escape("a b/c~d+é", true), "a%20b/c~d%2B%C3%A9");
        assert_eq!(uri_escape("a/b", false), "a%2Fb");
    }
}
