//! A structural scan of JSON text: an object's members found by their bounds, without building
//! values or unescaping names, so a rewrite can copy what it keeps byte for byte. It checks the
//! structure (quotes, brackets, separators), not the scalars: a record whose JSON is broken
//! there is copied as it is, as a pass-through would.

use std::fmt;

/// Where and why text is not the JSON expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ScanError {
    pub(crate) at: usize,
    pub(crate) expected: &'static str,
}

impl fmt::Display for ScanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "expected {} at byte {}", self.expected, self.at)
    }
}

impl std::error::Error for ScanError {}

fn error<T>(at: usize, expected: &'static str) -> Result<T, ScanError> {
    Err(ScanError { at, expected })
}

fn skip_space(bytes: &[u8], mut at: usize) -> usize {
    while let Some(b' ' | b'\n' | b'\r' | b'\t') = bytes.get(at) {
        at += 1;
    }
    at
}

/// The end (exclusive) of the string whose opening quote is at `start`.
fn string_end(bytes: &[u8], start: usize) -> Result<usize, ScanError> {
    // Most strings are short: byte by byte first, then memchr for long ones.
    let mut at = start + 1;
    let short_end = bytes.len().min(at + 32);
    while at < short_end {
        match bytes[at] {
            b'"' => return Ok(at + 1),
            b'\\' => at += 2,
            _ => at += 1,
        }
    }
    loop {
        match memchr::memchr2(b'"', b'\\', bytes.get(at..).unwrap_or_default()) {
            Some(offset) if bytes[at + offset] == b'"' => return Ok(at + offset + 1),
            // An escape: the character after the backslash is part of it.
            Some(offset) => at += offset + 2,
            None => return error(start, "a closing quote for the string here"),
        }
    }
}

/// The end (exclusive) of the value that starts at `start`.
fn value_end(bytes: &[u8], start: usize) -> Result<usize, ScanError> {
    match bytes.get(start) {
        Some(b'"') => string_end(bytes, start),
        Some(b'{' | b'[') => {
            let mut depth = 0usize;
            let mut at = start;
            loop {
                match bytes.get(at) {
                    Some(b'"') => at = string_end(bytes, at)?,
                    Some(b'{' | b'[') => {
                        depth += 1;
                        at += 1;
                    }
                    Some(b'}' | b']') => {
                        depth -= 1;
                        at += 1;
                        if depth == 0 {
                            return Ok(at);
                        }
                    }
                    Some(_) => at += 1,
                    None => return error(start, "the end of the object or array here"),
                }
            }
        }
        Some(_) => {
            let end = bytes[start..]
                .iter()
                .position(|b| matches!(b, b',' | b'}' | b']' | b' ' | b'\n' | b'\r' | b'\t'))
                .map_or(bytes.len(), |offset| start + offset);
            if end == start {
                return error(start, "a value");
            }
            Ok(end)
        }
        None => error(start, "a value"),
    }
}

/// A cursor over an object's members in order: each member's name as written between its
/// quotes (escapes kept), then its value, skipped as JSON text or entered as an object.
pub(crate) struct Object<'a> {
    text: &'a str,
    at: usize,
    /// No member read yet (the next is not preceded by a comma).
    first: bool,
}

impl<'a> Object<'a> {
    /// The object that starts at byte `at` of `text` (whitespace before it allowed).
    pub(crate) fn at(text: &'a str, at: usize) -> Result<Object<'a>, ScanError> {
        let at = skip_space(text.as_bytes(), at);
        if text.as_bytes().get(at) != Some(&b'{') {
            return error(at, "an object");
        }
        Ok(Object {
            text,
            at: at + 1,
            first: true,
        })
    }

    /// The next member's name, the cursor left at its value (to be read with
    /// [`Object::value`] or [`Object::object`]); None after the closing brace, the cursor
    /// past it.
    pub(crate) fn name(&mut self) -> Result<Option<&'a str>, ScanError> {
        let bytes = self.text.as_bytes();
        let mut at = skip_space(bytes, self.at);
        match bytes.get(at) {
            Some(b'}') => {
                self.at = at + 1;
                return Ok(None);
            }
            Some(b',') if !self.first => at = skip_space(bytes, at + 1),
            _ if self.first => {}
            _ => return error(at, "`,` or `}`"),
        }
        self.first = false;
        if bytes.get(at) != Some(&b'"') {
            return error(at, "a member name");
        }
        let name_end = string_end(bytes, at)?;
        let name = &self.text[at + 1..name_end - 1];
        at = skip_space(bytes, name_end);
        if bytes.get(at) != Some(&b':') {
            return error(at, "`:`");
        }
        self.at = skip_space(bytes, at + 1);
        Ok(Some(name))
    }

    /// The current member's value as JSON text.
    pub(crate) fn value(&mut self) -> Result<&'a str, ScanError> {
        let start = self.at;
        self.at = value_end(self.text.as_bytes(), start)?;
        Ok(&self.text[start..self.at])
    }

    /// The current member's value entered as an object, when it is one (None: the value is
    /// left to [`Object::value`]); read it to its end, then hand it to [`Object::resume`].
    pub(crate) fn object(&self) -> Option<Object<'a>> {
        (self.text.as_bytes().get(self.at) == Some(&b'{')).then_some(Object {
            text: self.text,
            at: self.at + 1,
            first: true,
        })
    }

    /// Continues after a member's object value read to its end.
    pub(crate) fn resume(&mut self, inner: Object<'a>) {
        self.at = inner.at;
    }
}

/// An object's members in order: each member's name as written between its quotes (escapes
/// kept) and its value's JSON text.
pub(crate) struct Members<'a> {
    object: Object<'a>,
    done: bool,
}

/// The members of the object `text` holds (surrounding whitespace allowed).
pub(crate) fn members(text: &str) -> Result<Members<'_>, ScanError> {
    Ok(Members {
        object: Object::at(text, 0)?,
        done: false,
    })
}

impl<'a> Members<'a> {
    fn member(&mut self) -> Result<Option<(&'a str, &'a str)>, ScanError> {
        match self.object.name()? {
            Some(name) => Ok(Some((name, self.object.value()?))),
            None => Ok(None),
        }
    }
}

impl<'a> Iterator for Members<'a> {
    type Item = Result<(&'a str, &'a str), ScanError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let member = self.member();
        if !matches!(member, Ok(Some(_))) {
            self.done = true;
        }
        member.transpose()
    }
}

/// A string value's text when it has no escapes (`"abc"` → `abc`); None for other values and
/// for strings with escapes.
pub(crate) fn plain_string(json: &str) -> Option<&str> {
    let inner = json.strip_prefix('"')?.strip_suffix('"')?;
    (!inner.contains('\\')).then_some(inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(text: &str) -> Result<Vec<(&str, &str)>, ScanError> {
        members(text)?.collect()
    }

    #[test]
    fn members_are_found_with_their_values_as_written() {
        let text =
            r#" { "a" : 1 ,"b\"c":"x\\\"}y", "d":{"e":[1,{"f":"]"}]},"g":null,"h":-1.5e3 } "#;
        assert_eq!(
            all(text).unwrap(),
            vec![
                ("a", "1"),
                (r#"b\"c"#, r#""x\\\"}y""#),
                ("d", r#"{"e":[1,{"f":"]"}]}"#),
                ("g", "null"),
                ("h", "-1.5e3"),
            ]
        );
        assert_eq!(all("{}").unwrap(), vec![]);
        assert_eq!(plain_string(r#""abc""#), Some("abc"));
        assert_eq!(plain_string(r#""a\nb""#), None);
        assert_eq!(plain_string("12"), None);
    }

    #[test]
    fn broken_structure_is_an_error_that_says_where() {
        assert_eq!(all("[1]").unwrap_err().expected, "an object");
        assert_eq!(all(r#"{"a":1 "b":2}"#).unwrap_err().expected, "`,` or `}`");
        assert_eq!(all(r#"{"a" 1}"#).unwrap_err().expected, "`:`");
        assert_eq!(all(r#"{"a":"x}"#).unwrap_err().at, 5);
        assert_eq!(all(r#"{"a":{"b":1}"#).unwrap_err().expected, "`,` or `}`");
        assert_eq!(
            all(r#"{"a":{"b":[1}"#).unwrap_err().expected,
            "the end of the object or array here"
        );
        assert_eq!(all(r#"{"a":}"#).unwrap_err().expected, "a value");
        assert_eq!(all(r#"{,"a":1}"#).unwrap_err().expected, "a member name");
    }
}
