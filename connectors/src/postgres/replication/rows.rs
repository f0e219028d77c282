//! A transaction as the stream assembles it, and its changes' rows decoded from pgoutput's
//! tuples.

use std::sync::Arc;

use sluice_core::event::{ChangeEvent, Op, SnapshotMarker, TxnInfo};
use sluice_core::position::{Lsn, Position};
use sluice_core::value::Value;

use super::super::decode::{OldTuple, TupleValue};
use super::super::text_format;
use super::super::PostgresError;
use super::Relation;

pub(super) struct OpenTxn {
    pub(super) xid: u32,
    pub(super) commit_ts_us: i64,
    pub(super) id: Arc<str>,
    pub(super) events: Vec<ChangeEvent>,
    /// Events already handed out as parts of this (large) transaction.
    pub(super) emitted: u64,
    pub(super) skip: bool,
}

impl OpenTxn {
    /// The transaction `xid` whose commit record is at `commit_lsn`; skipped when that is
    /// before `resume_lsn` (it is in the log already).
    pub(super) fn new(xid: u32, commit_ts_us: i64, commit_lsn: Lsn, resume_lsn: Lsn) -> OpenTxn {
        OpenTxn {
            xid,
            commit_ts_us,
            id: Arc::from(format!("{xid}:{}", commit_lsn.0)),
            events: Vec::new(),
            emitted: 0,
            skip: commit_lsn < resume_lsn,
        }
    }
}

pub(super) fn push(
    txn: &mut OpenTxn,
    rel: &Relation,
    op: Op,
    before: Option<Vec<Value>>,
    before_is_key_only: bool,
    after: Option<Vec<Value>>,
    lsn: Lsn,
) {
    let total_order = txn.emitted + txn.events.len() as u64 + 1;
    txn.events.push(ChangeEvent {
        op,
        table: Some(Arc::clone(&rel.schema)),
        before,
        before_is_key_only,
        after,
        snapshot: SnapshotMarker::No,
        commit_ts_us: txn.commit_ts_us,
        position: Position::PgLsn(lsn),
        xid: Some(u64::from(txn.xid)),
        txn: Some(TxnInfo {
            id: Arc::clone(&txn.id),
            total_order,
            data_collection_order: 0,
        }),
        message: None,
    });
}

/// Decodes a tuple. Unchanged TOAST values come from the old row when the server sent one
/// (REPLICA IDENTITY FULL), otherwise they are `Unavailable`.
pub(super) fn row(
    rel: &Relation,
    values: &[TupleValue],
    old: Option<&OldTuple>,
) -> Result<Vec<Value>, PostgresError> {
    if values.len() != rel.types.len() {
        return Err(PostgresError::protocol(format!(
            "tuple of {} has {} columns, its relation {}",
            rel.schema.table,
            values.len(),
            rel.types.len()
        )));
    }
    let mut out = Vec::with_capacity(values.len());
    for (i, value) in values.iter().enumerate() {
        out.push(match value {
            TupleValue::Null => Value::Null,
            TupleValue::Unchanged => match old.and_then(|o| o.values.get(i)) {
                Some(TupleValue::Text(text)) if !old.is_some_and(|o| o.key_only) => {
                    parse(rel, i, text)?
                }
                _ => Value::Unavailable,
            },
            TupleValue::Text(text) => parse(rel, i, text)?,
            TupleValue::Binary(_) => {
                return Err(PostgresError::protocol(
                    "binary tuple data without the binary option",
                ))
            }
        });
    }
    Ok(out)
}

pub(super) fn parse(rel: &Relation, column: usize, text: &[u8]) -> Result<Value, PostgresError> {
    text_format::parse(&rel.types[column], text).map_err(|source| PostgresError::Value {
        table: rel.schema.table.to_string(),
        column: rel.schema.columns[column].name.clone(),
        source,
    })
}
