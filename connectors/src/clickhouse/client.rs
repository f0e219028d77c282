//! Statements and inserts over ClickHouse's HTTP interface, and its errors read back into
//! what failed, ClickHouse's error code and whether trying again can help.

use bytes::Bytes;
use reqwest::Method;
use sluice_core::retry::{Classify, ErrorKind};

use super::ClickHouseError;
use crate::http::{Http, HttpError};

/// Error codes of conditions that pass: too many parts (merges catch up), memory, timeouts,
/// too many queries, network trouble between replicas, a read-only replica, Keeper.
const TRANSIENT_CODES: [u32; 11] = [159, 164, 202, 209, 210, 241, 242, 252, 319, 425, 999];

/// The ClickHouse server a sink talks to.
#[derive(Clone)]
pub struct Client {
    http: Http,
}

/// An error answer: its code (`Code: 60`) and message.
#[derive(Debug, Clone)]
pub struct ServerError {
    pub status: u16,
    pub code: Option<u32>,
    pub message: String,
}

impl Client {
    pub fn new(http: Http) -> Client {
        Client { http }
    }

    pub fn base(&self) -> &str {
        self.http.base()
    }

    /// Runs a statement and returns its output (in the statement's `FORMAT`, if any).
    pub async fn query(&self, sql: &str, what: &str) -> Result<Bytes, ClickHouseError> {
        self.post("/", Bytes::copy_from_slice(sql.as_bytes()), what)
            .await
    }

    /// Inserts `rows` (RowBinary) with `insert` (`INSERT INTO … FORMAT RowBinary`).
    pub async fn insert(
        &self,
        insert: &str,
        rows: Bytes,
        what: &str,
    ) -> Result<(), ClickHouseError> {
        let path = format!("/?query={}", crate::http::escape(insert));
        self.post(&path, rows, what).await.map(drop)
    }

    async fn post(&self, path: &str, body: Bytes, what: &str) -> Result<Bytes, ClickHouseError> {
        let (status, answer) = self
            .http
            .send(
                Method::POST,
                path,
                Some((body, "application/octet-stream")),
                what,
            )
            .await?;
        if (200..300).contains(&status) {
            return Ok(answer);
        }
        let error = parse_error(status, &answer);
        Err(ClickHouseError::Server {
            what: what.to_owned(),
            hint: hint(&error),
            error,
        })
    }
}

impl From<HttpError> for ClickHouseError {
    fn from(err: HttpError) -> ClickHouseError {
        ClickHouseError::Http(err)
    }
}

impl Classify for ServerError {
    fn kind(&self) -> ErrorKind {
        let transient_status = self.status >= 500 && self.code.is_none();
        if transient_status || self.code.is_some_and(|c| TRANSIENT_CODES.contains(&c)) {
            ErrorKind::Transient
        } else {
            ErrorKind::Definite
        }
    }
}

/// `Code: 60, e.displayText() = DB::Exception: Table x doesn't exist., e.what() = …` (18.x) or
/// `Code: 60. DB::Exception: Table x does not exist. (UNKNOWN_TABLE) (version …)`.
fn parse_error(status: u16, body: &[u8]) -> ServerError {
    let text = String::from_utf8_lossy(body).trim().to_owned();
    let code = text.strip_prefix("Code: ").and_then(|rest| {
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    });
    let mut message = text
        .split_once("DB::Exception: ")
        .map_or(text.as_str(), |(_, rest)| rest)
        .to_owned();
    for tail in [", e.what() = DB::Exception", " (version "] {
        if let Some(at) = message.find(tail) {
            message.truncate(at);
        }
    }
    if message.len() > 600 {
        let mut cut = 600;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push('…');
    }
    ServerError {
        status,
        code,
        message,
    }
}

/// What to do about the commonest definite errors.
fn hint(error: &ServerError) -> &'static str {
    match (error.status, error.code) {
        (401 | 403, _) | (_, Some(192 | 193 | 194 | 516)) => {
            " (check the user and password: in the url or password_file)"
        }
        (_, Some(497)) => " (the user lacks a privilege this needs: GRANT it)",
        (_, Some(252)) => {
            " (too many parts: inserts come faster than merges; raise flush_interval_ms)"
        }
        _ => "",
    }
}

/// A name quoted for ClickHouse SQL: `` `name` `` with backticks and backslashes escaped.
pub fn quote(name: &str) -> String {
    delimited(name, '`')
}

/// A string literal for ClickHouse SQL: `'text'` with quotes and backslashes escaped.
pub fn literal(text: &str) -> String {
    delimited(text, '\'')
}

/// `text` between two `delimiter`s, with the delimiter and backslashes escaped in it.
fn delimited(text: &str, delimiter: char) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push(delimiter);
    for c in text.chars() {
        if c == delimiter || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push(delimiter);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_of_old_and_new_servers_are_read() {
        let old = parse_error(
            500,
            b"Code: 60, e.displayText() = DB::Exception: Table default.x doesn't exist., e.what() = DB::Exception\n",
        );
        assert_eq!(old.code, Some(60));
        assert_eq!(old.message, "Table default.x doesn't exist.");
        assert_eq!(old.kind(), ErrorKind::Definite);
        let new = parse_error(
            404,
            b"Code: 60. DB::Exception: Table default.x does not exist. (UNKNOWN_TABLE) (version 26.9.2.1)",
        );
        assert_eq!(new.code, Some(60));
        assert_eq!(
            new.message,
            "Table default.x does not exist. (UNKNOWN_TABLE)"
        );
        let parts = parse_error(
            500,
            b"Code: 252, e.displayText() = DB::Exception: Too many parts",
        );
        assert_eq!(parts.kind(), ErrorKind::Transient);
        assert!(hint(&parts).contains("flush_interval_ms"));
        assert_eq!(parse_error(503, b"overloaded").kind(), ErrorKind::Transient);
    }

    #[test]
    fn names_and_literals_are_escaped() {
        assert_eq!(quote("a`b"), "`a\\`b`");
        assert_eq!(literal("it's \\"), "'it\\'s \\\\'");
    }
}
