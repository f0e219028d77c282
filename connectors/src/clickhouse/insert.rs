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

use super::buffer::{write_version, Buffer, Segment};
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
            rows,
            count,
            partial,
        } = segment;
        if count > 0 {
            insert(&client, sink, &layout, rows, count).await?;
        }
        if !partial.is_empty() {
            let (rows, count) = complete(&client, &layout, partial).await?;
            if count > 0 {
                insert(&client, sink, &layout, rows, count).await?;
            }
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
            &format!("inserting {count} rows into {}", layout.table),
        )
        .await?;
    let kind = match layout.kind {
        table::Kind::Current => "current",
        table::Kind::Changelog => "changelog",
    };
    ::metrics::counter!(metric::ROWS, "sink" => sink.to_owned(), "table" => layout.table.clone(), "kind" => kind)
        .increment(count as u64);
    ::metrics::counter!(metric::BYTES, "sink" => sink.to_owned()).increment(bytes as u64);
    ::metrics::histogram!(metric::INSERT_SECONDS, "sink" => sink.to_owned())
        .record(started.elapsed().as_secs_f64());
    ::metrics::gauge!(metric::LAST_INSERT, "sink" => sink.to_owned(), "table" => layout.table.clone())
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

/// Rows completed with the values the table holds for their keys; rows whose key the table
/// does not hold (deleted since, or never delivered) are left out with a warning, as a
/// database replica's `UPDATE` of a missing row changes nothing.
async fn complete(
    client: &Client,
    layout: &Layout,
    partial: Vec<(Vec<Value>, u64)>,
) -> Result<(Vec<u8>, usize), ClickHouseError> {
    // Columns any of the rows lacks.
    let mut missing: Vec<usize> = (0..layout.columns.len())
        .filter(|i| {
            partial
                .iter()
                .any(|(row, _)| matches!(row.get(*i), Some(Value::Unavailable)))
        })
        .collect();
    missing.retain(|i| !layout.key.contains(i));
    let mut found: HashMap<Vec<u8>, Vec<Vec<u8>>> = HashMap::new();
    for chunk in partial.chunks(LOOKUP_KEYS) {
        found.extend(lookup(client, layout, &missing, chunk).await?);
    }
    let mut out = Vec::new();
    let mut count = 0;
    for (row, version) in &partial {
        let key = encoded_key(layout, row)?;
        let Some(stored) = found.get(&key) else {
            tracing::warn!(table = %layout.table, "an update without its unchanged TOASTed values for a key the table does not hold: left out");
            continue;
        };
        for (i, ty) in layout.columns.iter().enumerate() {
            match (row.get(i), missing.iter().position(|m| *m == i)) {
                (Some(Value::Unavailable), Some(at)) => out.extend_from_slice(&stored[at]),
                (value, _) => rowbinary::write(&mut out, ty, value.unwrap_or(&Value::Null))
                    .map_err(|reason| {
                        ClickHouseError::Unexpected(format!("{}: {reason}", layout.table))
                    })?,
            }
        }
        write_version(&mut out, *version, false);
        count += 1;
    }
    Ok((out, count))
}

/// The stored values of `missing` columns for the rows' keys: encoded key → each column's
/// RowBinary bytes. Deleted rows count as absent.
async fn lookup(
    client: &Client,
    layout: &Layout,
    missing: &[usize],
    rows: &[(Vec<Value>, u64)],
) -> Result<HashMap<Vec<u8>, Vec<Vec<u8>>>, ClickHouseError> {
    let key_names: Vec<String> = layout
        .key
        .iter()
        .map(|&i| quote(&layout.names[i]))
        .collect();
    let mut tuples = Vec::with_capacity(rows.len());
    for (row, _) in rows {
        let mut items = Vec::with_capacity(layout.key.len());
        for &i in &layout.key {
            items.push(sql_literal(&row[i], &layout.columns[i]).ok_or_else(|| {
                ClickHouseError::Unexpected(format!(
                    "{}: cannot look up a key of type {} to complete a row the source sent \
                     without its unchanged TOASTed values (set REPLICA IDENTITY FULL on the \
                     source table)",
                    layout.table, layout.columns[i]
                ))
            })?);
        }
        tuples.push(format!("({})", items.join(", ")));
    }
    let mut selected: Vec<String> = key_names.clone();
    selected.extend(missing.iter().map(|&i| quote(&layout.names[i])));
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
        rows.len(),
        layout.table
    );
    let answer = client.query(&sql, &what).await?;
    let mut found = HashMap::new();
    let mut at = 0;
    let broken = || ClickHouseError::Unexpected(format!("{what}: the answer ends mid-row"));
    while at < answer.len() {
        let mut key = Vec::new();
        for &i in &layout.key {
            let len = value_len(&answer[at..], &layout.columns[i]).ok_or_else(broken)?;
            key.extend_from_slice(&answer[at..at + len]);
            at += len;
        }
        let mut values = Vec::with_capacity(missing.len());
        for &i in missing {
            let len = value_len(&answer[at..], &layout.columns[i]).ok_or_else(broken)?;
            values.push(answer[at..at + len].to_vec());
            at += len;
        }
        let deleted = *answer.get(at).ok_or_else(broken)? != 0;
        at += 1;
        if !deleted {
            found.insert(key, values);
        }
    }
    Ok(found)
}

fn encoded_key(layout: &Layout, row: &[Value]) -> Result<Vec<u8>, ClickHouseError> {
    let mut key = Vec::new();
    for &i in &layout.key {
        rowbinary::write(&mut key, &layout.columns[i], &row[i])
            .map_err(|reason| ClickHouseError::Unexpected(format!("{}: {reason}", layout.table)))?;
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
                ChType::Decimal { .. } => {
                    format!("toDecimal128({}, {})", literal(&text), decimals(&text))
                }
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
            format!("toDate('{text}')")
        }
        _ => return None,
    })
}

fn decimals(text: &str) -> usize {
    text.split_once('.').map_or(0, |(_, frac)| frac.len())
}
