//! Rows waiting to be inserted: per ClickHouse table (and source table version), encoded as
//! RowBinary as changes arrive, with the offsets they take the sink to. Rows whose unchanged
//! TOASTed values the source did not send wait apart, to be completed from the table when
//! they are inserted (`insert.rs`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use sluice_core::change::Change;
use sluice_core::event::Op;
use sluice_core::sink::Offsets;
use sluice_core::value::Value;

use super::rowbinary::{self, write_bytes};
use super::table::{Kind, Layout};
use super::types::ChType;

/// The rows of one table layout.
pub(super) struct Segment {
    pub(super) layout: Arc<Layout>,
    pub(super) rows: Vec<u8>,
    pub(super) count: usize,
    /// Current-state rows with values the source did not send, in order among `rows`.
    pub(super) partial: Vec<Partial>,
}

/// A row the source sent without some values (unchanged TOASTed columns): they are the values
/// its key had before, or, for the new key of a key change, the old key's.
pub(super) struct Partial {
    /// Where it falls among the segment's rows (the byte length of `rows` when it came).
    pub(super) at: usize,
    pub(super) values: Vec<Value>,
    pub(super) version: u64,
    /// The key (a row holding it) whose values it lacks, when not its own: the old row of a
    /// key change.
    pub(super) from: Option<Vec<Value>>,
}

/// Where a change is in the log, for changelog rows and versions.
pub(super) struct Origin<'a> {
    pub(super) topic: &'a str,
    pub(super) partition: u32,
    pub(super) offset: u64,
}

/// Rows waiting for the next insert.
#[derive(Default)]
pub(super) struct Buffer {
    pub(super) segments: Vec<Segment>,
    /// Segment of each layout (by its address).
    index: HashMap<usize, usize>,
    pub(super) bytes: usize,
    /// When the oldest row waiting arrived.
    pub(super) since: Option<Instant>,
    /// The next offset of every partition whose records are all in the buffer (or before).
    pub(super) offsets: Offsets,
}

impl Buffer {
    pub(super) fn is_empty(&self) -> bool {
        self.segments.is_empty() && self.offsets.is_empty()
    }

    /// The index of the segment of `layout`, made if new.
    fn segment(&mut self, layout: &Arc<Layout>) -> usize {
        let at = *self
            .index
            .entry(Arc::as_ptr(layout) as usize)
            .or_insert_with(|| {
                self.segments.push(Segment {
                    layout: Arc::clone(layout),
                    rows: Vec::new(),
                    count: 0,
                    partial: Vec::new(),
                });
                self.segments.len() - 1
            });
        self.since.get_or_insert_with(Instant::now);
        at
    }

    /// Appends a row that `write` writes to the segment of `layout`; a row it fails to write
    /// leaves nothing behind.
    fn row(
        &mut self,
        layout: &Arc<Layout>,
        write: impl FnOnce(&mut Vec<u8>) -> Result<(), String>,
    ) -> Result<(), String> {
        let at = self.segment(layout);
        let segment = &mut self.segments[at];
        let start = segment.rows.len();
        match write(&mut segment.rows) {
            Ok(()) => {
                segment.count += 1;
                self.bytes += segment.rows.len() - start;
                Ok(())
            }
            Err(reason) => {
                segment.rows.truncate(start);
                Err(reason)
            }
        }
    }

    /// Adds the current-state row of `change`: the new row, or the old one's key flagged
    /// deleted. `Err` says why ClickHouse cannot hold it (nothing is added then).
    /// `from`: for the new row of a key change, the old row (its key) it continues.
    pub(super) fn current(
        &mut self,
        layout: &Arc<Layout>,
        change: &Change,
        version: u64,
        from: Option<&[Value]>,
    ) -> Result<(), String> {
        match change.op {
            Op::Create | Op::Read | Op::Update => {
                let row = change.after.as_deref().unwrap_or_default();
                if row.iter().any(|v| matches!(v, Value::Unavailable)) {
                    return self.partial(layout, row, version, from);
                }
                self.row(layout, |out| {
                    write_row(out, layout, row, false).map(|()| write_version(out, version, false))
                })
            }
            Op::Delete => {
                let row = change.before.as_deref().unwrap_or_default();
                self.row(layout, |out| {
                    write_row(out, layout, row, true).map(|()| write_version(out, version, true))
                })
            }
            Op::Truncate | Op::Message => Ok(()),
        }
    }

    /// A row lacking values: checked now, so that a value ClickHouse cannot hold is rejected
    /// with its record; written once the missing values are known (`insert.rs`).
    fn partial(
        &mut self,
        layout: &Arc<Layout>,
        row: &[Value],
        version: u64,
        from: Option<&[Value]>,
    ) -> Result<(), String> {
        let mut scratch = Vec::new();
        for (i, (ty, value)) in layout.columns.iter().zip(row).enumerate() {
            if !matches!(value, Value::Unavailable) {
                rowbinary::write(&mut scratch, ty, value)
                    .map_err(|reason| column_reason(layout, i, &reason))?;
            }
        }
        let at = self.segment(layout);
        let segment = &mut self.segments[at];
        segment.partial.push(Partial {
            at: segment.rows.len(),
            values: row.to_vec(),
            version,
            from: from.map(<[Value]>::to_vec),
        });
        Ok(())
    }

    /// Adds the changelog row of `change`: the new row (the old one for a delete), then the
    /// change's operation and place.
    pub(super) fn changelog(
        &mut self,
        layout: &Arc<Layout>,
        change: &Change,
        origin: &Origin<'_>,
    ) -> Result<(), String> {
        let row = match change.op {
            Op::Delete => change.before.as_deref(),
            _ => change.after.as_deref(),
        }
        .unwrap_or_default();
        self.row(layout, |out| {
            if change.op == Op::Truncate {
                // A truncate has no row: its key columns get their defaults.
                layout.columns.iter().for_each(|ty| write_missing(out, ty));
            } else {
                write_row(out, layout, row, true)?;
            }
            write_bytes(out, change.op.code().as_bytes());
            write_bytes(out, origin.topic.as_bytes());
            out.extend_from_slice(&origin.partition.to_le_bytes());
            out.extend_from_slice(&origin.offset.to_le_bytes());
            let commit =
                Value::TimestampTz(sluice_core::value::Timestamp::Micros(change.commit_ts_us));
            if rowbinary::write(out, &layout.commit_ts, &commit).is_err() {
                rowbinary::write_default(out, &layout.commit_ts);
            }
            let position = change
                .position
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default();
            write_bytes(out, position.as_bytes());
            Ok(())
        })
    }

    /// Takes what waits, leaving the buffer empty.
    pub(super) fn take(&mut self) -> Buffer {
        std::mem::take(self)
    }
}

/// Writes a row's columns in the layout's types. With `lenient`, columns other than the key
/// that cannot be written as they are (values a delete's old row lacks, values the source did
/// not send) get their type's default (NULL where the column is Nullable).
pub(super) fn write_row(
    out: &mut Vec<u8>,
    layout: &Layout,
    row: &[Value],
    lenient: bool,
) -> Result<(), String> {
    for (i, ty) in layout.columns.iter().enumerate() {
        let value = row.get(i).unwrap_or(&Value::Null);
        let key = layout.key.contains(&i);
        if lenient && !key && matches!(value, Value::Null | Value::Unavailable) {
            write_missing(out, ty);
            continue;
        }
        let start = out.len();
        if let Err(reason) = rowbinary::write(out, ty, value) {
            out.truncate(start);
            if lenient && !key && layout.kind == Kind::Current {
                write_missing(out, ty);
            } else {
                return Err(column_reason(layout, i, &reason));
            }
        }
    }
    Ok(())
}

fn write_missing(out: &mut Vec<u8>, ty: &ChType) {
    if ty.is_nullable() {
        rowbinary::write(out, ty, &Value::Null).expect("NULL fits a Nullable column");
    } else {
        rowbinary::write_default(out, ty);
    }
}

pub(super) fn write_version(out: &mut Vec<u8>, version: u64, deleted: bool) {
    out.extend_from_slice(&version.to_le_bytes());
    out.push(u8::from(deleted));
}

/// The reason a column's value cannot be written, naming the column and table.
fn column_reason(layout: &Layout, column: usize, reason: &str) -> String {
    format!(
        "column {} of {}: {reason}",
        layout.names.get(column).map_or("?", String::as_str),
        layout.shown
    )
}
