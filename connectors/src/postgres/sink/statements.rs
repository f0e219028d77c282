//! The statements of one batch, in its transaction: what `replica`'s plan asks of the target
//! (`Statements`), run by [`PgTarget`]'s set operations.

use sluice_core::event::TableSchema;
use tokio_postgres::Client;

use super::{PgTarget, SinkError};
use crate::replica::{Row, Statements};

/// The Postgres statements of a batch, in its transaction.
pub(super) struct PgStatements<'a> {
    pub(super) target: &'a mut PgTarget,
    pub(super) tx: &'a Client,
}

impl Statements for PgStatements<'_> {
    type Error = SinkError;

    async fn truncate(&mut self, target: &str) -> Result<(), SinkError> {
        self.tx
            .batch_execute(&format!("TRUNCATE {target}"))
            .await
            .map_err(|e| SinkError::db(format!("truncating {target}"), e))
    }

    async fn delete_keys(
        &mut self,
        table: &TableSchema,
        target: &str,
        rows: &[Row],
    ) -> Result<(), SinkError> {
        self.target.delete_keys(self.tx, table, target, rows).await
    }

    async fn upsert(
        &mut self,
        table: &TableSchema,
        target: &str,
        rows: &[Row],
    ) -> Result<(), SinkError> {
        self.target.upsert(self.tx, table, target, rows).await
    }

    async fn update_available(
        &mut self,
        table: &TableSchema,
        target: &str,
        row: &Row,
    ) -> Result<(), SinkError> {
        self.target
            .update_available(self.tx, table, target, row)
            .await
    }

    async fn insert(
        &mut self,
        table: &TableSchema,
        target: &str,
        rows: &[&Row],
    ) -> Result<(), SinkError> {
        self.target
            .copy_into(self.tx, table, target, rows, false)
            .await
    }

    async fn delete_matching(
        &mut self,
        table: &TableSchema,
        target: &str,
        row: &Row,
    ) -> Result<(), SinkError> {
        self.target
            .delete_matching(self.tx, table, target, row)
            .await
    }
}
