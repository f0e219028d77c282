//! The order in which a table's planned steps reach a target, shared by the engines: each
//! engine says how one kind of statement is written ([`Statements`]), and [`apply_steps`] runs
//! them in the order that keeps the replica right.

use std::future::Future;

use sluice_core::event::TableSchema;

use super::plan::{KeylessOp, Row, Step};

/// The statements of one engine, inside the batch's transaction. `target` is the quoted,
/// qualified table name; no method is called with an empty set of rows. Calls never overlap:
/// each runs to completion before the next starts, and an error ends the batch (the caller
/// rolls the transaction back).
pub trait Statements {
    type Error;

    /// Removes every row of the table, inside the transaction.
    fn truncate(&mut self, target: &str) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Deletes the rows with these keys.
    fn delete_keys(
        &mut self,
        table: &TableSchema,
        target: &str,
        rows: &[Row],
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Inserts these rows, or updates the rows with their keys.
    fn upsert(
        &mut self,
        table: &TableSchema,
        target: &str,
        rows: &[Row],
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Sets the columns the source sent (not `Value::Unavailable`) of the row with this key.
    fn update_available(
        &mut self,
        table: &TableSchema,
        target: &str,
        row: &Row,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Inserts these rows into a table without a key.
    fn insert(
        &mut self,
        table: &TableSchema,
        target: &str,
        rows: &[&Row],
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Deletes one row equal to this one in every column (a table without a key).
    fn delete_matching(
        &mut self,
        table: &TableSchema,
        target: &str,
        row: &Row,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

/// Runs one table's steps in order. Keyed steps delete before they upsert (a key's final
/// state is one or the other) and set partial rows last, over the upserted ones; keyless
/// operations keep their order, with runs of inserts written together.
pub async fn apply_steps<S: Statements>(
    statements: &mut S,
    table: &TableSchema,
    target: &str,
    steps: &[Step],
) -> Result<(), S::Error> {
    for step in steps {
        match step {
            Step::Truncate { .. } => statements.truncate(target).await?,
            Step::Keyed {
                upserts,
                deletes,
                partial,
            } => {
                if !deletes.is_empty() {
                    statements.delete_keys(table, target, deletes).await?;
                }
                if !upserts.is_empty() {
                    statements.upsert(table, target, upserts).await?;
                }
                for row in partial {
                    statements.update_available(table, target, row).await?;
                }
            }
            Step::Keyless(ops) => {
                let mut inserts: Vec<&Row> = Vec::new();
                for op in ops {
                    match op {
                        KeylessOp::Insert(row) => inserts.push(row),
                        KeylessOp::Delete(row) => {
                            if !inserts.is_empty() {
                                statements.insert(table, target, &inserts).await?;
                                inserts.clear();
                            }
                            statements.delete_matching(table, target, row).await?;
                        }
                    }
                }
                if !inserts.is_empty() {
                    statements.insert(table, target, &inserts).await?;
                }
            }
        }
    }
    Ok(())
}
