//! One flush: every segment's rows inserted (one `INSERT … FORMAT RowBinary` per table), rows
//! the source sent without their unchanged TOASTed values completed from the table and
//! inserted after, then the offsets the rows take the sink to. A crash anywhere in between is
//! harmless: the next start resumes from the offsets stored before, and the rows inserted
//! again carry the same versions (current-state tables) or the same log positions (changelog
//! tables), so the ReplacingMergeTree collapses them with their first copies.

use std::collections::HashMap;
use std::time::Instant;

use bytes::Bytes;
use sluice_core::sink::Offsets;
use sluice_core::value::{self, Date, Value};

use super::buffer::{write_version, Buffer, Partial, Segment};
use super::client::{literal, quote, Client};
use super::rowbinary::{self, value_len};
use super::table::{self, Layout, DELETED};
use super::types::ChType;
use super::{metric, ClickHouseError};

/// Keys looked up per query (a query's text is limited, 256 KiB by default).
const LOOKUP_KEYS: usize = 1000;

/// Where the sink keeps its offsets.
#[derive(Clone)]
pub(super) struct OffsetsTable {
    pub(super) sink: String,
    pub(super) database: String,
    pub(super) table: String,
}

/// Inserts what `buffer` holds and then its offsets; returns the offsets.
pub(super) async fn flush(
    client: Client,
    buffer: Buffer,
    offsets_table: OffsetsTable,
) -> Result<Offsets, ClickHouseError> {
    let sink = offsets_table.sink.as_str();
    for segment in buffer.segments {
        let Segment {
            layout,
            mut rows,
            mut count,
            partial,
        } = segment;
        if !partial.is_empty() {
            // Completed from the rows before them and from the table as it is before this
            // insert, then inserted with the rest.
            let (completed, n) = complete(&client, &layout, &rows, partial).await?;
            rows.extend_from_slice(&completed);
            count += n;
        }
        if count > 0 {
            insert(&client, sink, &layout, rows, count).await?;
        }
    }
    if !buffer.offsets.is_empty() {
        let updated_us = now_us();
        let rows = table::offset_rows(sink, &buffer.offsets, updated_us);
        client
            .insert(
                &table::offsets_insert(&offsets_table.database, &offsets_table.table),
                Bytes::from(rows),
                "storing the sink's offsets",
            )
            .await?;
    }
    Ok(buffer.offsets)
}

async fn insert(
    client: &Client,
    sink: &str,
    layout: &Layout,
    rows: Vec<u8>,
    count: usize,
) -> Result<(), ClickHouseError> {
    let started = Instant::now();
    let bytes = rows.len();
    client
        .insert(
            &layout.insert,
            Bytes::from(rows),
            &format!("inserting {count} rows into {}", layout.shown),
        )
        .await?;
    let kind = match layout.kind {
        table::Kind::Current => "current",
        table::Kind::Changelog => "changelog",
    };
    ::metrics::counter!(metric::ROWS, "sink" => sink.to_owned(), "table" => layout.shown.clone(), "kind" => kind)
        .increment(count as u64);
    ::metrics::counter!(metric::BYTES, "sink" => sink.to_owned()).increment(bytes as u64);
    ::metrics::histogram!(metric::INSERT_SECONDS, "sink" => sink.to_owned())
        .record(started.elapsed().as_secs_f64());
    ::metrics::gauge!(metric::LAST_INSERT, "sink" => sink.to_owned(), "table" => layout.shown.clone())
        .set(now_us() as f64 / 1e6);
    Ok(())
}

/// Microseconds since 1970, as the offsets' version (a clock step back would make older
/// offsets win, so it never goes below the last one handed out).
fn now_us() -> u64 {
    static LAST: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    let last = LAST.fetch_max(now, std::sync::atomic::Ordering::Relaxed);
    if last >= now {
        LAST.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1
    } else {
        now
    }
}

/// A row cut into its columns' RowBinary values.
type Columns = Vec<Vec<u8>>;

/// The partial rows completed, in order: each lacking value is the one the key it takes
/// values from (its own, or a key change's old key) had just before it: the last row of that
/// key before it in the segment that is not a delete (a completed partial row counts), or else
/// the table's row as it is before this insert. A row whose key the table does not hold either
/// is left out with a warning, as a database replica's `UPDATE` of a missing row changes
/// nothing.
async fn complete(
    client: &Client,
    layout: &Layout,
    rows: &[u8],
    partial: Vec<Partial>,
) -> Result<(Vec<u8>, usize), ClickHouseError> {
    // The keys values are taken from (each with its first partial row's place), and the
    // rows of the segment that hold them: (position, columns).
    let mut sources: HashMap<Vec<u8>, (Vec<Value>, usize)> = HashMap::new();
    for p in &partial {
        let source = p.from.as_deref().unwrap_or(&p.values);
        sources
            .entry(encoded_key(layout, source)?)
            .or_insert_with(|| (source.to_vec(), p.at));
    }
    let mut held: HashMap<Vec<u8>, Vec<(usize, Columns)>> = HashMap::new();
    let mut at = 0;
    while at < rows.len() {
        let start = at;
        let (columns, end) = cut(&rows[at..], &layout.columns).ok_or_else(|| {
            ClickHouseError::Unexpected(format!("{}: a buffered row does not cut", layout.shown))
        })?;
        at += end;
        let deleted = rows.get(at + 8).is_some_and(|d| *d != 0);
        at += 9;
        let key: Vec<u8> = layout
            .key
            .iter()
            .flat_map(|&i| columns[i].clone())
            .collect();
        if !deleted && sources.contains_key(&key) {
            held.entry(key).or_default().push((start, columns));
        }
    }
    // Only keys the segment holds no row of before their first partial row are read from the
    // table (later partial rows of a key take values from the earlier ones).
    let unheld: Vec<&Vec<Value>> = sources
        .iter()
        .filter(|(key, (_, first))| {
            !held
                .get(*key)
                .is_some_and(|rows| rows.iter().any(|(start, _)| start < first))
        })
        .map(|(_, (values, _))| values)
        .collect();
    let stored = lookup(client, layout, &unheld).await?;
    let mut done: HashMap<Vec<u8>, Vec<(usize, Columns)>> = HashMap::new();
    let mut out = Vec::new();
    let mut count = 0;
    for p in &partial {
        let own = encoded_key(layout, &p.values)?;
        let source = match &p.from {
            Some(from) => encoded_key(layout, from)?,
            None => own.clone(),
        };
        let before_held = held
            .get(&source)
            .and_then(|rows| rows.iter().rev().find(|(start, _)| *start < p.at));
        let before_done = done.get(&source).and_then(|rows| rows.last());
        let found = match (before_held, before_done) {
            (Some(held), Some(done)) if done.0 > held.0 => Some(&done.1),
            (Some(held), _) => Some(&held.1),
            (None, Some(done)) => Some(&done.1),
            (None, None) => stored.get(&source),
        };
        let Some(found) = found else {
            tracing::warn!(table = %layout.shown, "an update without its unchanged TOASTed values for a key the table does not hold: left out");
            continue;
        };
        let mut columns = Vec::with_capacity(layout.columns.len());
        for (i, ty) in layout.columns.iter().enumerate() {
            match p.values.get(i) {
                Some(Value::Unavailable) => columns.push(found[i].clone()),
                value => {
                    let mut bytes = Vec::new();
                    rowbinary::write(&mut bytes, ty, value.unwrap_or(&Value::Null)).map_err(
                        |reason| ClickHouseError::Unexpected(format!("{}: {reason}", layout.shown)),
                    )?;
                    columns.push(bytes);
                }
            }
        }
        columns.iter().for_each(|c| out.extend_from_slice(c));
        write_version(&mut out, p.version, false);
        count += 1;
        done.entry(own).or_default().push((p.at, columns));
    }
    Ok((out, count))
}

/// A row's columns cut from the start of `input`, and where they end.
fn cut(input: &[u8], types: &[ChType]) -> Option<(Columns, usize)> {
    let mut at = 0;
    let mut columns = Vec::with_capacity(types.len());
    for ty in types {
        let len = value_len(input.get(at..)?, ty)?;
        columns.push(input[at..at + len].to_vec());
        at += len;
    }
    Some((columns, at))
}

/// The rows the table holds now for `keys` (by encoded key), deleted ones left out.
async fn lookup(
    client: &Client,
    layout: &Layout,
    keys: &[&Vec<Value>],
) -> Result<HashMap<Vec<u8>, Columns>, ClickHouseError> {
    let mut found = HashMap::new();
    for chunk in keys.chunks(LOOKUP_KEYS) {
        found.extend(lookup_chunk(client, layout, chunk).await?);
    }
    Ok(found)
}

async fn lookup_chunk(
    client: &Client,
    layout: &Layout,
    keys: &[&Vec<Value>],
) -> Result<HashMap<Vec<u8>, Columns>, ClickHouseError> {
    let key_names: Vec<String> = layout
        .key
        .iter()
        .map(|&i| quote(&layout.names[i]))
        .collect();
    let mut tuples = Vec::with_capacity(keys.len());
    for row in keys {
        let mut items = Vec::with_capacity(layout.key.len());
        for &i in &layout.key {
            items.push(sql_literal(&row[i], &layout.columns[i]).ok_or_else(|| {
                ClickHouseError::Unexpected(format!(
                    "{}: cannot look up a key of type {} to complete a row the source sent \
                     without its unchanged TOASTed values (set REPLICA IDENTITY FULL on the \
                     source table)",
                    layout.shown, layout.columns[i]
                ))
            })?);
        }
        tuples.push(format!("({})", items.join(", ")));
    }
    let mut selected: Vec<String> = layout.names.iter().map(|n| quote(n)).collect();
    selected.push(quote(DELETED));
    let sql = format!(
        "SELECT {} FROM {} FINAL WHERE ({}) IN ({}) FORMAT RowBinary",
        selected.join(", "),
        layout.table,
        key_names.join(", "),
        tuples.join(", ")
    );
    let what = format!(
        "reading {} rows of {} to complete updates without their unchanged TOASTed values",
        keys.len(),
        layout.shown
    );
    let answer = client.query(&sql, &what).await?;
    let mut found = HashMap::new();
    let mut at = 0;
    while at < answer.len() {
        let (columns, end) = cut(&answer[at..], &layout.columns).ok_or_else(|| {
            ClickHouseError::Unexpected(format!("{what}: the answer ends mid-row"))
        })?;
        at += end;
        let deleted = answer.get(at).is_some_and(|d| *d != 0);
        at += 1;
        if !deleted {
            let key: Vec<u8> = layout
                .key
                .iter()
                .flat_map(|&i| columns[i].clone())
                .collect();
            found.insert(key, columns);
        }
    }
    Ok(found)
}

fn encoded_key(layout: &Layout, row: &[Value]) -> Result<Vec<u8>, ClickHouseError> {
    let mut key = Vec::new();
    for &i in &layout.key {
        rowbinary::write(&mut key, &layout.columns[i], &row[i])
            .map_err(|reason| ClickHouseError::Unexpected(format!("{}: {reason}", layout.shown)))?;
    }
    Ok(key)
}

/// A key value as a SQL literal of the column's type, for the kinds of keys tables have.
fn sql_literal(value: &Value, ty: &ChType) -> Option<String> {
    let mut text = String::new();
    Some(match (ty.base(), value) {
        (ChType::Int(_) | ChType::UInt(_) | ChType::Decimal { .. }, _) => {
            rowbinary::write_text(&mut text, value);
            if !text
                .bytes()
                .all(|b| b.is_ascii_digit() || b == b'-' || b == b'.')
            {
                return None;
            }
            match ty.base() {
                // Of the column's own type: IN refuses a decimal of another precision.
                base @ ChType::Decimal { .. } => format!("CAST({}, '{base}')", literal(&text)),
                _ => text,
            }
        }
        (ChType::String | ChType::FixedString(_), _) => {
            rowbinary::write_text(&mut text, value);
            literal(&text)
        }
        (ChType::Uuid, Value::Uuid(bytes)) => format!("toUUID('{}')", value::uuid_to_string(bytes)),
        (ChType::Date | ChType::Date32, Value::Date(Date::Days(days))) => {
            value::write_sql_date(&mut text, i64::from(*days));
            format!("CAST('{text}', '{}')", ty.base())
        }
        _ => return None,
    })
}
