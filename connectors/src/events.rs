//! Changes as JSON events, for the sinks that send events rather than rows: the HTTP sink,
//! and the Kafka and JSONL sinks when they have transforms (`reshape.rs`).
//!
//! - The key is the row's key columns, `{"id":7}` (null for a table without a key); an outbox
//!   event's is its aggregate id.
//! - The value is Debezium's envelope (`before`, `after`, `op`, `ts_ms`, `source`,
//!   `transaction`) without its schema part; where an `unwrap` transform applied, the row
//!   (null for a delete: a tombstone); for an outbox event its payload (a JSON column's document as it
//!   is, other columns as JSON values). Values take the log's JSON forms (docs/types.md).
//!
//! The HTTP sink wraps each as `{"id":"<topic>:<partition>:<offset>","topic":…,"key":…,
//! "value":…}` (`http_sink.rs`).

use sluice_core::change::SourcedChange;
use sluice_core::event::{Op, TableSchema};
use sluice_core::sink::SinkRecord;
use sluice_core::value::Value;
use sluice_schema_registry::json::{write_value, Scratch};

/// Writes events (its scratch space is reused from one to the next).
#[derive(Default)]
pub struct Events {
    scratch: Scratch,
}

impl Events {
    /// Whether `sourced` makes an event: a truncate does not when rows are sent.
    pub fn sends(&self, sourced: &SourcedChange) -> bool {
        !(sourced.unwrapped && sourced.payload.is_none() && sourced.change.op == Op::Truncate)
    }

    /// Appends the `{"id":…,"topic":…,"key":…,"value":…}` event of `sourced` (which came
    /// from `record`) to `out`; false (and nothing written) for what sends no event.
    pub fn write(
        &mut self,
        out: &mut Vec<u8>,
        sourced: &SourcedChange,
        record: &SinkRecord,
    ) -> bool {
        if !self.sends(sourced) {
            return false;
        }
        out.extend_from_slice(b"{\"id\":");
        write_str(
            out,
            &format!(
                "{}:{}:{}",
                record.topic, record.partition, record.record.offset
            ),
        );
        out.extend_from_slice(b",\"topic\":");
        write_str(out, sourced.topic.as_deref().unwrap_or(&record.topic));
        out.extend_from_slice(b",\"key\":");
        if !self.key(out, sourced) {
            out.extend_from_slice(b"null");
        }
        out.extend_from_slice(b",\"value\":");
        if !self.value(out, sourced) {
            out.extend_from_slice(b"null");
        }
        out.push(b'}');
        true
    }

    /// Appends the key, `{"id":7}`; false (nothing written) for a table without a key.
    pub fn key(&mut self, out: &mut Vec<u8>, sourced: &SourcedChange) -> bool {
        let change = &sourced.change;
        let table = &change.table;
        match change.after.as_ref().or(change.before.as_ref()) {
            Some(row) if table.has_key() => {
                self.row(out, table, row, true);
                true
            }
            _ => false,
        }
    }

    /// Appends the value; false (nothing written) for a tombstone.
    pub fn value(&mut self, out: &mut Vec<u8>, sourced: &SourcedChange) -> bool {
        let change = &sourced.change;
        if let Some(payload) = sourced.payload {
            match change.after.as_ref().and_then(|row| row.get(payload)) {
                Some(Value::Json(json)) => out.extend_from_slice(json.as_bytes()),
                Some(Value::Null) | None => return false,
                Some(value) => write_value(out, &mut self.scratch, value),
            }
        } else if sourced.unwrapped {
            match (&change.after, change.op) {
                (Some(row), op) if op != Op::Delete => self.row(out, &change.table, row, false),
                _ => return false,
            }
        } else {
            self.envelope(out, sourced);
        }
        true
    }

    fn envelope(&mut self, out: &mut Vec<u8>, sourced: &SourcedChange) {
        let change = &sourced.change;
        let table = &change.table;
        for (name, row) in [
            ("{\"before\":", &change.before),
            (",\"after\":", &change.after),
        ] {
            out.extend_from_slice(name.as_bytes());
            match row {
                Some(row) => self.row(out, table, row, false),
                None => out.extend_from_slice(b"null"),
            }
        }
        out.extend_from_slice(b",\"op\":\"");
        out.extend_from_slice(change.op.code().as_bytes());
        out.extend_from_slice(b"\",\"ts_ms\":");
        out.extend_from_slice(
            itoa::Buffer::new()
                .format(change.commit_ts_us.div_euclid(1000))
                .as_bytes(),
        );
        out.extend_from_slice(b",\"source\":{\"schema\":");
        write_str(out, &table.table.namespace);
        out.extend_from_slice(b",\"table\":");
        write_str(out, &table.table.name);
        if let Some(position) = &change.position {
            out.extend_from_slice(b",\"position\":");
            write_str(out, &position.to_string());
        }
        out.extend_from_slice(b"},\"transaction\":");
        match &change.txn {
            Some(id) => {
                out.extend_from_slice(b"{\"id\":");
                write_str(out, id);
                if let Some(order) = change.total_order {
                    out.extend_from_slice(b",\"total_order\":");
                    out.extend_from_slice(itoa::Buffer::new().format(order).as_bytes());
                }
                out.push(b'}');
            }
            None => out.extend_from_slice(b"null"),
        }
        out.push(b'}');
    }

    /// `{"column":value,…}`: the key columns only when `key`; values the source did not send
    /// are left out.
    fn row(&mut self, out: &mut Vec<u8>, table: &TableSchema, row: &[Value], key: bool) {
        out.push(b'{');
        let mut first = true;
        for (column, value) in table.columns.iter().zip(row) {
            if (key && !column.key) || matches!(value, Value::Unavailable) {
                continue;
            }
            if !first {
                out.push(b',');
            }
            first = false;
            write_str(out, &column.name);
            out.push(b':');
            write_value(out, &mut self.scratch, value);
        }
        out.push(b'}');
    }
}

/// A JSON string.
pub fn write_str(out: &mut Vec<u8>, text: &str) {
    // serde_json's escaping; writing to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, text);
}
