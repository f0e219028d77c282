//! The envelope rewrite: one pass over a log record's JSON that writes its rows in Debezium's
//! forms as it reads them and copies everything it keeps byte for byte.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use sluice_core::change::DecodeError;
use sluice_core::sink::SinkRecord;

use super::{write_key, write_number, Columns, DebeziumForms, Form};
use crate::avro::decode::is_framed;
use crate::avro::rows::registered_plan;
use crate::changes::header_schema_id;
use crate::json::scan::{self, Object, ScanError};
use crate::registry::Registry;

/// Rewrites the log's JSON envelopes in Debezium's forms, typed by their registered schemas.
/// Values that keep their form are copied as they are, without being parsed.
pub struct DebeziumJson {
    registry: Arc<Registry>,
    forms: DebeziumForms,
    /// Per schema id: each column's name and form, in order (None: a schema without a
    /// table, or whose columns all keep their form).
    tables: HashMap<u32, Option<Arc<Columns>>>,
    /// The rows of the record being rewritten, in Debezium's forms (reused).
    rows: Vec<u8>,
    /// Its source block's members, as byte ranges of the record (reused).
    source: Vec<(Range<usize>, Range<usize>)>,
}

/// The source block's fields Debezium orders: those sluice writes first, in order, then the
/// ones it derives (`sequence`, `ts_ns`) and the Postgres connector's own.
const FIRST: [&str; 6] = ["version", "connector", "name", "ts_ms", "snapshot", "db"];
const POSTGRES: [&str; 7] = [
    "schema",
    "table",
    "txId",
    "lsn",
    "xmin",
    "origin",
    "origin_lsn",
];
/// Slots of [`FIRST`], then `ts_us`, then [`POSTGRES`]; `sequence` and `ts_ns` are derived.
const TS_US: usize = FIRST.len();
const SLOTS: usize = FIRST.len() + 1 + POSTGRES.len();

fn slot(name: &str) -> Option<usize> {
    Some(match name {
        "version" => 0,
        "connector" => 1,
        "name" => 2,
        "ts_ms" => 3,
        "snapshot" => 4,
        "db" => 5,
        "ts_us" => TS_US,
        "schema" => TS_US + 1,
        "table" => TS_US + 2,
        "txId" => TS_US + 3,
        "lsn" => TS_US + 4,
        "xmin" => TS_US + 5,
        "origin" => TS_US + 6,
        "origin_lsn" => TS_US + 7,
        _ => return None,
    })
}

/// A log envelope's parts: its rows already written (ranges of [`DebeziumJson::rows`]), the
/// rest as JSON text (`null` counts as absent).
#[derive(Default)]
struct Envelope<'a> {
    before: Option<Range<usize>>,
    after: Option<Range<usize>>,
    /// The source block; its members are in [`DebeziumJson::source`].
    source: bool,
    op: Option<&'a str>,
    ts_ms: Option<&'a str>,
    ts_us: Option<&'a str>,
    transaction: Option<&'a str>,
    message: Option<&'a str>,
}

/// Where `part` (a slice of `text`) lies in it.
fn range_in(text: &str, part: &str) -> Range<usize> {
    let start = part.as_ptr() as usize - text.as_ptr() as usize;
    start..start + part.len()
}

impl DebeziumJson {
    pub fn new(registry: Arc<Registry>, forms: DebeziumForms) -> DebeziumJson {
        DebeziumJson {
            registry,
            forms,
            tables: HashMap::new(),
            rows: Vec::new(),
            source: Vec::new(),
        }
    }

    fn columns(&mut self, id: u32) -> Result<Option<Arc<Columns>>, String> {
        if let Some(columns) = self.tables.get(&id) {
            return Ok(columns.clone());
        }
        let columns = registered_plan(&self.registry, id)?
            .map(|plan| {
                plan.table
                    .columns
                    .iter()
                    .map(|c| (c.name.clone(), Form::of(c, &self.forms)))
                    .collect::<Columns>()
            })
            .filter(|columns| columns.iter().any(|(_, form)| *form != Form::Same))
            .map(Arc::new);
        self.tables.insert(id, columns.clone());
        Ok(columns)
    }

    /// The record's value in Debezium's forms into `out`; false when the value stays as it is
    /// (a tombstone, or an Avro record: Avro keeps the log's schema).
    pub fn transcode(
        &mut self,
        record: &SinkRecord,
        out: &mut Vec<u8>,
    ) -> Result<bool, DecodeError> {
        out.clear();
        let Some(value) = record.record.value.as_deref() else {
            return Ok(false);
        };
        self.transcode_value(value, header_schema_id(record), out)
            .map_err(|reason| DecodeError::at(record, reason))
    }

    /// A value (whose registered schema is `schema_id`, from its header) in Debezium's forms,
    /// appended to `out`; false (nothing appended) when it stays as it is (Avro).
    pub fn transcode_value(
        &mut self,
        value: &[u8],
        schema_id: Option<u32>,
        out: &mut Vec<u8>,
    ) -> Result<bool, String> {
        if is_framed(value) {
            return Ok(false);
        }
        let columns = match schema_id {
            Some(id) => self.columns(id)?,
            None => None,
        };
        let start = out.len();
        self.envelope(value, columns.as_deref(), out).map_err(|e| {
            out.truncate(start);
            format!("the value is not a JSON envelope ({e})")
        })?;
        Ok(true)
    }

    /// Reads the envelope in one pass: rows written into `self.rows` as they are read, the
    /// source block's members noted in `self.source`.
    fn scan<'a>(
        &mut self,
        text: &'a str,
        columns: Option<&Columns>,
    ) -> Result<Envelope<'a>, String> {
        self.rows.clear();
        self.source.clear();
        let mut envelope = Envelope::default();
        let mut members = Object::at(text, 0).map_err(|e| e.to_string())?;
        while let Some(name) = members.name().map_err(|e| e.to_string())? {
            match (name, members.object()) {
                ("before" | "after", Some(mut row)) => {
                    let start = self.rows.len();
                    write_row(&mut self.rows, &mut row, columns)
                        .map_err(|e| format!("{name}: {e}"))?;
                    members.resume(row);
                    let range = Some(start..self.rows.len());
                    match name {
                        "before" => envelope.before = range,
                        _ => envelope.after = range,
                    }
                }
                ("source", Some(mut source)) => {
                    while let Some(field) = source.name().map_err(|e| format!("source: {e}"))? {
                        let value = source.value().map_err(|e| format!("source: {e}"))?;
                        self.source
                            .push((range_in(text, field), range_in(text, value)));
                    }
                    members.resume(source);
                    envelope.source = true;
                }
                _ => {
                    let value = members.value().map_err(|e| e.to_string())?;
                    let value = (value != "null").then_some(value);
                    match name {
                        "op" => envelope.op = value,
                        "ts_ms" => envelope.ts_ms = value,
                        "ts_us" => envelope.ts_us = value,
                        "transaction" => envelope.transaction = value,
                        "message" => envelope.message = value,
                        // `before`/`after`/`source` null; members Debezium does not have.
                        _ => {}
                    }
                }
            }
        }
        Ok(envelope)
    }

    fn envelope(
        &mut self,
        value: &[u8],
        columns: Option<&Columns>,
        out: &mut Vec<u8>,
    ) -> Result<(), String> {
        // Checked as UTF-8 once; what is kept is copied byte for byte.
        let text = std::str::from_utf8(value).map_err(|e| e.to_string())?;
        let envelope = self.scan(text, columns)?;
        let op = envelope
            .op
            .filter(|op| scan::plain_string(op).is_some())
            .ok_or("no `op` string")?;
        out.push(b'{');
        if op != "\"m\"" {
            write_key(out, "before");
            match envelope.before {
                Some(row) => out.extend_from_slice(&self.rows[row]),
                None => out.extend_from_slice(b"null"),
            }
            out.push(b',');
            write_key(out, "after");
            match envelope.after {
                Some(row) => out.extend_from_slice(&self.rows[row]),
                None => out.extend_from_slice(b"null"),
            }
            out.push(b',');
        }
        // A Postgres transaction's id is `xid:commit LSN`.
        let commit_lsn = match envelope.transaction {
            Some(transaction) => scan::members(transaction)
                .and_then(|members| {
                    for member in members {
                        let (name, value) = member?;
                        if name == "id" {
                            return Ok(Some(value));
                        }
                    }
                    Ok(None)
                })
                .map_err(|e: ScanError| format!("transaction: {e}"))?
                .and_then(scan::plain_string)
                .and_then(|id| id.split_once(':')?.1.parse::<u64>().ok()),
            None => None,
        };
        if envelope.source {
            write_key(out, "source");
            write_source(out, text, &self.source, commit_lsn);
            out.push(b',');
        }
        write_key(out, "transaction");
        match envelope.transaction {
            Some(transaction) if self.forms.transaction_metadata => {
                out.extend_from_slice(transaction.as_bytes())
            }
            _ => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"op\":");
        out.extend_from_slice(op.as_bytes());
        if let Some(ts) = envelope.ts_ms {
            out.extend_from_slice(b",\"ts_ms\":");
            out.extend_from_slice(ts.as_bytes());
        }
        if let Some(us) = envelope.ts_us {
            let us: i64 = us
                .parse()
                .map_err(|_| format!("ts_us is not a number: {us}"))?;
            out.extend_from_slice(b",\"ts_us\":");
            write_number(out, us);
            out.extend_from_slice(b",\"ts_ns\":");
            write_number(out, us.saturating_mul(1000));
        }
        if let Some(message) = envelope.message {
            out.extend_from_slice(b",\"message\":");
            out.extend_from_slice(message.as_bytes());
        }
        out.push(b'}');
        Ok(())
    }
}

/// A member name as the log wrote it (escapes kept), then `:`.
fn write_raw_key(out: &mut Vec<u8>, name: &str) {
    out.push(b'"');
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":");
}

/// A row object read from `row`, its columns written in their Debezium form (`columns`: the
/// table's, in order; none: every value as it is).
fn write_row(
    out: &mut Vec<u8>,
    row: &mut Object<'_>,
    columns: Option<&Columns>,
) -> Result<(), String> {
    out.push(b'{');
    let mut n = 0;
    while let Some(name) = row.name().map_err(|e| e.to_string())? {
        if n > 0 {
            out.push(b',');
        }
        write_raw_key(out, name);
        let value = row.value().map_err(|e| e.to_string())?;
        match columns.and_then(|columns| form_of(columns, n, name)) {
            Some(form) if *form != Form::Same && value != "null" => form
                .write(value, out)
                .map_err(|e| format!("column {name}: {e}"))?,
            _ => out.extend_from_slice(value.as_bytes()),
        }
        n += 1;
    }
    out.push(b'}');
    Ok(())
}

/// The form of the row's `n`-th member, named `name` (as written, escapes kept): rows list
/// the table's columns in order; a name elsewhere is looked up.
fn form_of<'c>(columns: &'c Columns, n: usize, name: &str) -> Option<&'c Form> {
    let name = match name.contains('\\') {
        true => {
            std::borrow::Cow::Owned(serde_json::from_str::<String>(&format!("\"{name}\"")).ok()?)
        }
        false => std::borrow::Cow::Borrowed(name),
    };
    match columns.get(n) {
        Some((column, form)) if *column == name => Some(form),
        _ => columns.iter().find(|(c, _)| *c == name).map(|(_, f)| f),
    }
}

/// The source block (its members: ranges of `text`) in Debezium's order, with the fields
/// sluice does not track (`xmin`, `origin`, `origin_lsn`: null) and `sequence` and `ts_ns`
/// derived.
fn write_source(
    out: &mut Vec<u8>,
    text: &str,
    members: &[(Range<usize>, Range<usize>)],
    commit_lsn: Option<u64>,
) {
    let mut slots: [Option<&str>; SLOTS] = [None; SLOTS];
    for (name, value) in members {
        if let Some(slot) = slot(&text[name.clone()]) {
            slots[slot] = Some(&text[value.clone()]);
        }
    }
    let postgres = slots[1] == Some("\"postgresql\"");
    let mut first = true;
    let mut field = |out: &mut Vec<u8>, name: &str, value: &[u8]| {
        if !std::mem::take(&mut first) {
            out.push(b',');
        }
        write_raw_key(out, name);
        out.extend_from_slice(value);
    };
    out.push(b'{');
    for (slot, name) in FIRST.iter().enumerate() {
        if let Some(value) = slots[slot] {
            field(out, name, value.as_bytes());
        }
    }
    let lsn = slots[TS_US + 4].and_then(|l| l.parse::<u64>().ok());
    let snapshot = slots[4].is_some_and(|s| s != "\"false\"");
    field(out, "sequence", b"");
    match (postgres, lsn) {
        // Debezium's `[last commit LSN, this LSN]`, as a JSON text (`"[\"1\",\"2\"]"`):
        // sluice puts the commit LSN of the event's own transaction first (it orders events
        // the same way).
        (true, Some(lsn)) => {
            out.extend_from_slice(b"\"[");
            match commit_lsn.filter(|_| !snapshot) {
                Some(commit) => {
                    out.extend_from_slice(b"\\\"");
                    out.extend_from_slice(itoa::Buffer::new().format(commit).as_bytes());
                    out.extend_from_slice(b"\\\"");
                }
                None => out.extend_from_slice(b"null"),
            }
            out.extend_from_slice(b",\\\"");
            out.extend_from_slice(itoa::Buffer::new().format(lsn).as_bytes());
            out.extend_from_slice(b"\\\"]\"");
        }
        _ => out.extend_from_slice(b"null"),
    }
    if let Some(us) = slots[TS_US] {
        field(out, "ts_us", us.as_bytes());
        if let Ok(us) = us.parse::<i64>() {
            field(out, "ts_ns", b"");
            write_number(out, us.saturating_mul(1000));
        }
    }
    if postgres {
        for (k, name) in POSTGRES.iter().enumerate() {
            let value = slots[TS_US + 1 + k].map_or(&b"null"[..], str::as_bytes);
            field(out, name, value);
        }
    }
    // The rest in the log's order.
    for (name, value) in members {
        let name = &text[name.clone()];
        let written = match slot(name) {
            Some(slot) => slot <= TS_US || postgres,
            None => matches!(name, "ts_ns" | "sequence"),
        };
        if !written {
            field(out, name, text[value.clone()].as_bytes());
        }
    }
    out.push(b'}');
}
