//! Keeping secrets out of everything sluice prints: connection strings in every form users
//! write them (URL userinfo, `?password=` query parameters, libpq key/value strings with
//! quoted values) lose their passwords before they reach an error, a log line or `status`.

/// A connection URL that may hold a password: `Debug` and `Display` show it redacted, so that
/// a config printed by mistake (a `{:?}` in a log line, an error) gives nothing away; the
/// text itself is reached only through [`SecretUrl::expose`], where a connection is made.
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct SecretUrl(String);

impl SecretUrl {
    pub fn new(url: impl Into<String>) -> SecretUrl {
        SecretUrl(url.into())
    }

    /// The URL with its password, for the code that connects.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL without its password, for messages.
    pub fn redacted(&self) -> String {
        redact_connection_string(&self.0)
    }
}

impl std::fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

impl std::fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// A secret that is not a URL (an API key, a token): `Debug` and `Display` print
/// `(secret)`; the text is reached only through [`Secret::expose`], where it is sent.
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(text: impl Into<String>) -> Secret {
        Secret(text.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("(secret)")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("(secret)")
    }
}

/// Keys whose values are secrets, in URL query strings and key/value connection strings.
const SECRET_KEYS: [&str; 5] = ["password", "pass", "passwd", "pwd", "sslpassword"];

/// `conn` with every password replaced by `***`: `scheme://user:***@host`, `?password=***`,
/// `password=***` (quoted values included, an unterminated quote to the end of the text).
pub fn redact_connection_string(conn: &str) -> String {
    let userinfo_redacted = redact_userinfo(conn);
    redact_key_values(&userinfo_redacted)
}

fn redact_userinfo(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let authority_start = scheme_end + 3;
    // The authority ends at the first '/', '?' or '#'; its userinfo at its last '@'.
    let authority_end = url[authority_start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| authority_start + i);
    let authority = &url[authority_start..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    match authority[..at].split_once(':') {
        Some((user, _)) => format!(
            "{}{user}:***{}",
            &url[..authority_start],
            &url[authority_start + at..]
        ),
        None => url.to_owned(),
    }
}

fn redact_key_values(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        let at_key_start = i == 0 || matches!(bytes[i - 1], b'?' | b'&' | b' ' | b'\t' | b';');
        let key = at_key_start.then(|| secret_key_at(&text[i..])).flatten();
        let Some(key_len) = key else {
            i += 1;
            continue;
        };
        // Past the key, optional spaces, '=', optional spaces: the value.
        let mut value_start = i + key_len;
        while bytes.get(value_start) == Some(&b' ') {
            value_start += 1;
        }
        if bytes.get(value_start) != Some(&b'=') {
            i += 1;
            continue;
        }
        value_start += 1;
        while bytes.get(value_start) == Some(&b' ') {
            value_start += 1;
        }
        let value_end = value_end(bytes, value_start);
        out.push_str(&text[copied..value_start]);
        out.push_str("***");
        copied = value_end;
        i = value_end.max(i + 1);
    }
    out.push_str(&text[copied..]);
    out
}

/// The length of the secret key `rest` starts with (case-insensitive), if any.
fn secret_key_at(rest: &str) -> Option<usize> {
    SECRET_KEYS
        .iter()
        .filter(|key| {
            rest.len() >= key.len()
                && rest.as_bytes()[..key.len()].eq_ignore_ascii_case(key.as_bytes())
                && matches!(rest.as_bytes().get(key.len()), Some(b'=' | b' '))
        })
        .map(|key| key.len())
        .max()
}

/// Where a value starting at `start` ends: a quoted one at its closing quote (backslash
/// escapes skipped; unterminated: the end), a bare one at the next separator.
fn value_end(bytes: &[u8], start: usize) -> usize {
    match bytes.get(start) {
        Some(&quote @ (b'\'' | b'"')) => {
            let mut i = start + 1;
            while i < bytes.len() {
                match bytes[i] {
                    b'\\' => i += 2,
                    b if b == quote => return i + 1,
                    _ => i += 1,
                }
            }
            bytes.len()
        }
        _ => bytes[start..]
            .iter()
            .position(|b| matches!(b, b'&' | b' ' | b'\t' | b';' | b'#'))
            .map_or(bytes.len(), |i| start + i),
    }
}

#[cfg(test)]
mod tests {
    use super::redact_connection_string as redact;

    #[test]
    fn passwords_leave_every_form_of_connection_string() {
        let cases = [
            (
                "postgres://u:hunter2@h:5432/db",
                "postgres://u:***@h:5432/db",
            ),
            ("postgres://u@h/db", "postgres://u@h/db"),
            (
                "postgres://u@h/db?password=hunter2&port=x",
                "postgres://u@h/db?password=***&port=x",
            ),
            (
                "mysql://u@h/db?sslmode=1&PASSWORD=hunter2",
                "mysql://u@h/db?sslmode=1&PASSWORD=***",
            ),
            (
                "host=h port=xx password=hunter2 user=u",
                "host=h port=xx password=*** user=u",
            ),
            (
                "host=h password = 'hun ter\\'2' user=u",
                "host=h password = *** user=u",
            ),
            ("host=h password='hunter2 user=u", "host=h password=***"),
            ("postgres://u:p@ss@h/db", "postgres://u:***@h/db"),
            ("host=h passwordless=yes", "host=h passwordless=yes"),
            ("host=h sslpassword=hunter2", "host=h sslpassword=***"),
        ];
        for (input, want) in cases {
            let got = redact(input);
            assert_eq!(got, want, "{input}");
            assert!(
                !got.contains("hunter2") && !got.contains("ter\\'2"),
                "{got}"
            );
        }
    }

    #[test]
    fn a_secret_never_prints() {
        let key: super::Secret = serde_json::from_str("\"xyz-key\"").unwrap();
        assert_eq!(format!("{key} {key:?}"), "(secret) (secret)");
        assert_eq!(key.expose(), "xyz-key");
    }

    #[test]
    fn a_secret_url_never_prints_its_password() {
        let url: super::SecretUrl = serde_json::from_str("\"postgres://u:hunter2@h/db\"").unwrap();
        assert_eq!(url.expose(), "postgres://u:hunter2@h/db");
        assert_eq!(
            format!("{url} {url:?}"),
            "postgres://u:***@h/db \"postgres://u:***@h/db\""
        );
    }
}
