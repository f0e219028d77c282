//! The fast path of reading an envelope back. sluice's encoder writes envelopes compact (no
//! whitespace, names without escapes), and reading that form byte by byte costs a fraction of
//! going through serde's visitors, which was most of a JSON-fed sink's CPU. Values are turned
//! into what their columns hold by the general reader's own conversions (`ValueSeed`), so both
//! paths give the same values.
//!
//! Anything else gives up on the record and the general reader (`decode.rs`) reads it, and says
//! what is wrong when something is: whitespace, an escaped name, an array or object as a column
//! value, a number that does not fit 64 bits, a value its column cannot hold, or JSON that is
//! broken. So the fast path accepts a record only when the general reader would, with the same
//! result; `tests` hold it to that on valid and broken envelopes alike.

use std::borrow::Cow;

use serde::de::Visitor;
use sluice_core::event::DataType;
use sluice_core::value::Value;

use super::decode::{value_of, Parts, SourceParts, ValueSeed};
use crate::avro::rows::Plan;

/// The error type the general reader's conversions are called with here: only whether they
/// failed matters (the general reader then reads the record again and words the error).
type Refused = serde::de::value::Error;

/// How deep skipped values may nest (serde_json refuses past 128).
const MAX_DEPTH: usize = 100;

/// The envelope's parts, when `text` is in the form sluice writes and every value converts;
/// None sends the record to the general reader.
pub(super) fn parts(plan: &Plan, text: &str) -> Option<Parts> {
    let mut reader = Reader { text, at: 0 };
    let mut parts = Parts::default();
    reader.object(|reader, key| {
        match key {
            "op" => parts.op = reader.optional(|reader| Some(reader.string()?.into_owned()))?,
            "before" => parts.before = reader.optional(|reader| reader.row(plan, "before"))?,
            "after" => parts.after = reader.optional(|reader| reader.row(plan, "after"))?,
            "source" => {
                parts.source = reader
                    .optional(|reader| reader.source())?
                    .unwrap_or_default()
            }
            "transaction" => {
                if let Some((id, order)) = reader.optional(|reader| reader.transaction())? {
                    parts.txn_id = id;
                    parts.total_order = order;
                }
            }
            _ => reader.skip(0)?,
        }
        Some(())
    })?;
    (reader.at == text.len()).then_some(parts)
}

/// A JSON number as serde_json reads it: positive integers as u64, negative ones as i64, the
/// rest as f64.
#[derive(Clone, Copy)]
enum Number {
    Positive(u64),
    Negative(i64),
    Float(f64),
}

/// A scalar read where only some types are wanted (the source and transaction blocks, read
/// leniently: a value of another type counts as absent).
enum Scalar<'a> {
    Number(Number),
    Text(Cow<'a, str>),
    Other,
}

struct Reader<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Reader<'a> {
    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    fn peek(&self) -> Option<u8> {
        self.bytes().get(self.at).copied()
    }

    fn eat(&mut self, byte: u8) -> Option<()> {
        (self.peek()? == byte).then(|| self.at += 1)
    }

    fn word(&mut self, word: &[u8]) -> Option<()> {
        let end = self.at + word.len();
        (self.bytes().get(self.at..end)? == word).then(|| self.at = end)
    }

    /// `null` as None, else what `read` makes of the value.
    fn optional<T>(&mut self, read: impl FnOnce(&mut Self) -> Option<T>) -> Option<Option<T>> {
        if self.peek()? == b'n' {
            self.word(b"null")?;
            return Some(None);
        }
        read(self).map(Some)
    }

    /// An object: `member` is called with each name, the reader on its value.
    fn object(&mut self, mut member: impl FnMut(&mut Self, &'a str) -> Option<()>) -> Option<()> {
        self.eat(b'{')?;
        if self.eat(b'}').is_some() {
            return Some(());
        }
        loop {
            let (start, end, escaped) = self.string_bounds()?;
            if escaped {
                return None;
            }
            self.eat(b':')?;
            let text = self.text;
            member(self, &text[start..end])?;
            match self.peek()? {
                b',' => self.at += 1,
                b'}' => {
                    self.at += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// The string at the reader: its contents' bounds (quotes excluded) and whether it has
    /// escapes. Refuses raw control characters, as JSON does.
    fn string_bounds(&mut self) -> Option<(usize, usize, bool)> {
        self.eat(b'"')?;
        let start = self.at;
        let mut escaped = false;
        let bytes = self.bytes();
        let mut at = start;
        loop {
            // Eight bytes at a time, to the first that ends the string or needs a look.
            if let Some(chunk) = bytes.get(at..at + 8) {
                let stops = stops(u64::from_le_bytes(chunk.try_into().expect("8 bytes")));
                if stops == 0 {
                    at += 8;
                    continue;
                }
                at += (stops.trailing_zeros() / 8) as usize;
            }
            match *bytes.get(at)? {
                b'"' => break,
                b'\\' => {
                    escaped = true;
                    at += 2;
                }
                0..=0x1f => return None,
                _ => at += 1,
            }
        }
        self.at = at + 1;
        Some((start, at, escaped))
    }

    /// A string's value, unescaped by serde_json when it has escapes.
    fn string(&mut self) -> Option<Cow<'a, str>> {
        let (start, end, escaped) = self.string_bounds()?;
        if !escaped {
            return Some(Cow::Borrowed(&self.text[start..end]));
        }
        serde_json::from_str::<String>(&self.text[start - 1..=end])
            .ok()
            .map(Cow::Owned)
    }

    fn number(&mut self) -> Option<Number> {
        let start = self.at;
        let negative = self.eat(b'-').is_some();
        let digits = self.at;
        while let Some(b'0'..=b'9') = self.peek() {
            self.at += 1;
        }
        let count = self.at - digits;
        if count == 0 || (count > 1 && self.bytes()[digits] == b'0') || count > 20 {
            return None;
        }
        // Up to 19 digits cannot overflow; the 20th is checked.
        let (head, last) = self.bytes()[digits..self.at].split_at(count.min(19));
        let mut n = head
            .iter()
            .fold(0u64, |n, digit| n * 10 + u64::from(digit - b'0'));
        if let [digit] = last {
            n = n.checked_mul(10)?.checked_add(u64::from(digit - b'0'))?;
        }
        if let Some(b'.' | b'e' | b'E') = self.peek() {
            while let Some(b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-') = self.peek() {
                self.at += 1;
            }
            return serde_json::from_str::<f64>(&self.text[start..self.at])
                .ok()
                .map(Number::Float);
        }
        match negative {
            false => Some(Number::Positive(n)),
            // -0 and integers below i64's range are serde_json's floats: the general reader's.
            true if n == 0 => None,
            true => i64::try_from(-i128::from(n)).ok().map(Number::Negative),
        }
    }

    fn scalar(&mut self) -> Option<Scalar<'a>> {
        match self.peek()? {
            b'"' => self.string().map(Scalar::Text),
            b'-' | b'0'..=b'9' => self.number().map(Scalar::Number),
            _ => self.skip(0).map(|()| Scalar::Other),
        }
    }

    /// Steps over a value, checking it is JSON as serde_json would.
    fn skip(&mut self, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        match self.peek()? {
            b'"' => {
                let (start, end, escaped) = self.string_bounds()?;
                if escaped {
                    serde_json::from_str::<serde::de::IgnoredAny>(&self.text[start - 1..=end])
                        .ok()?;
                }
            }
            b'-' | b'0'..=b'9' => {
                self.number()?;
            }
            b't' => self.word(b"true")?,
            b'f' => self.word(b"false")?,
            b'n' => self.word(b"null")?,
            b'{' => {
                self.at += 1;
                if self.eat(b'}').is_none() {
                    loop {
                        self.skip_key()?;
                        self.eat(b':')?;
                        self.skip(depth + 1)?;
                        if self.eat(b',').is_none() {
                            self.eat(b'}')?;
                            break;
                        }
                    }
                }
            }
            b'[' => {
                self.at += 1;
                if self.eat(b']').is_none() {
                    loop {
                        self.skip(depth + 1)?;
                        if self.eat(b',').is_none() {
                            self.eat(b']')?;
                            break;
                        }
                    }
                }
            }
            _ => return None,
        }
        Some(())
    }

    fn skip_key(&mut self) -> Option<()> {
        if self.peek()? != b'"' {
            return None;
        }
        self.skip(0)
    }

    /// `before` or `after`: the plan's columns by name, as the general reader matches them.
    fn row(&mut self, plan: &Plan, field: &'static str) -> Option<Vec<Value>> {
        let columns = &plan.table.columns;
        let mut row = Vec::with_capacity(columns.len());
        row.resize_with(columns.len(), || Value::Null);
        let mut next = 0;
        self.object(|reader, key| {
            let index = if columns.get(next).is_some_and(|c| c.name == key) {
                Some(next)
            } else {
                columns.iter().position(|c| c.name == key)
            };
            let Some(index) = index else {
                return reader.skip(0);
            };
            let column = &columns[index];
            row[index] = reader.value(ValueSeed {
                data_type: &column.data_type,
                field,
                column: &column.name,
            })?;
            next = index + 1;
            Some(())
        })?;
        Some(row)
    }

    /// A column's value, converted as the general reader converts it.
    fn value(&mut self, seed: ValueSeed) -> Option<Value> {
        let converted: Result<Value, Refused> = match self.peek()? {
            b'n' => {
                self.word(b"null")?;
                return Some(Value::Null);
            }
            // Arrays go through a JSON tree, as in the general reader.
            _ if matches!(seed.data_type, DataType::Array(_)) => {
                let start = self.at;
                self.skip(0)?;
                let json = serde_json::from_str(&self.text[start..self.at]).ok()?;
                return value_of(&json, seed.data_type).ok();
            }
            b'"' => {
                let text = self.string()?;
                seed.visit_str(&text)
            }
            b't' => {
                self.word(b"true")?;
                seed.visit_bool(true)
            }
            b'f' => {
                self.word(b"false")?;
                seed.visit_bool(false)
            }
            b'-' | b'0'..=b'9' => match self.number()? {
                Number::Positive(n) => seed.visit_u64(n),
                Number::Negative(n) => seed.visit_i64(n),
                Number::Float(x) => seed.visit_f64(x),
            },
            _ => return None,
        };
        converted.ok()
    }

    /// The source block's commit time and position (other types count as absent, as in the
    /// general reader).
    fn source(&mut self) -> Option<SourceParts> {
        let mut parts = SourceParts::default();
        self.object(|reader, key| {
            if !matches!(key, "ts_us" | "ts_ms" | "lsn" | "pos" | "gtid" | "file") {
                return reader.skip(0);
            }
            let scalar = reader.scalar()?;
            match key {
                "ts_us" => parts.ts_us = signed(&scalar),
                "ts_ms" => parts.ts_ms = signed(&scalar),
                "lsn" => parts.lsn = unsigned(&scalar),
                "pos" => parts.pos = unsigned(&scalar),
                "gtid" => parts.gtid = text(scalar),
                _ => parts.file = text(scalar),
            }
            Some(())
        })?;
        Some(parts)
    }

    /// The transaction block's id and total order.
    fn transaction(&mut self) -> Option<(Option<String>, Option<u64>)> {
        let (mut id, mut order) = (None, None);
        self.object(|reader, key| {
            match key {
                "id" => id = text(reader.scalar()?),
                "total_order" => order = unsigned(&reader.scalar()?),
                _ => reader.skip(0)?,
            }
            Some(())
        })?;
        Some((id, order))
    }
}

/// The high bits of the bytes of `word` (little-endian) that may be a quote, a backslash or a
/// control character: none when none is, and the lowest one set is the first such byte (the
/// borrow that can flag a byte wrongly only runs upwards from a true one).
fn stops(word: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero_in = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    let quote = zero_in(word ^ (ONES * u64::from(b'"')));
    let backslash = zero_in(word ^ (ONES * u64::from(b'\\')));
    let control = word.wrapping_sub(ONES * 0x20) & !word & HIGH;
    quote | backslash | control
}

/// What serde_json's `as_i64` gives for the scalar.
fn signed(scalar: &Scalar) -> Option<i64> {
    match scalar {
        Scalar::Number(Number::Positive(n)) => i64::try_from(*n).ok(),
        Scalar::Number(Number::Negative(n)) => Some(*n),
        _ => None,
    }
}

/// What serde_json's `as_u64` gives for the scalar.
fn unsigned(scalar: &Scalar) -> Option<u64> {
    match scalar {
        Scalar::Number(Number::Positive(n)) => Some(*n),
        _ => None,
    }
}

fn text(scalar: Scalar) -> Option<String> {
    match scalar {
        Scalar::Text(text) => Some(text.into_owned()),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
