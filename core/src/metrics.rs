//! Metric names of the runtime (Prometheus style). Labels: `source` or `sink` (the connector
//! name from the config), and `stage` for errors.

/// Events a source produced (counter).
pub const SOURCE_EVENTS: &str = "sluice_source_events_total";
/// Source transactions or snapshot chunks made durable in the log (counter).
pub const SOURCE_BATCHES_COMMITTED: &str = "sluice_source_batches_committed_total";
/// Records appended to the log by a source (counter).
pub const LOG_RECORDS_APPENDED: &str = "sluice_log_records_appended_total";
/// Seconds from source commit to durable in the log, of the last batch (gauge).
pub const SOURCE_LAG_SECONDS: &str = "sluice_source_lag_seconds";
/// Tables a source's patterns match but that it leaves out because publishing them would
/// break the application's writes (no key, no REPLICA IDENTITY FULL) (gauge).
pub const SOURCE_TABLES_LEFT_OUT: &str = "sluice_source_tables_left_out";
/// Tables whose events are held back because the registry refused their new schema (gauge).
pub const SOURCE_TABLES_HELD: &str = "sluice_source_tables_held";
/// WAL a Postgres source's slot holds on the server, in bytes (gauge).
pub const SLOT_RETAINED_WAL_BYTES: &str = "sluice_source_slot_retained_wal_bytes";
/// WAL the slot may still hold before the server invalidates it (`max_slot_wal_keep_size`;
/// absent when the server sets no limit) (gauge).
pub const SLOT_SAFE_WAL_BYTES: &str = "sluice_source_slot_safe_wal_bytes";
/// Unchanged TOASTed values a Postgres source could not read back and emitted as Debezium's
/// placeholder (counter; see `postgres/replication/toast.rs`).
pub const SOURCE_TOAST_UNRESOLVED: &str = "sluice_source_toast_unresolved_total";
/// 1 while a source's initial snapshot runs, 0 once it streams (gauge).
pub const SNAPSHOT_RUNNING: &str = "sluice_snapshot_running";
/// The snapshot's chunks in the log, and in all (gauges; they keep their last values once the
/// snapshot is done).
pub const SNAPSHOT_CHUNKS_DONE: &str = "sluice_snapshot_chunks_done";
pub const SNAPSHOT_CHUNKS_TOTAL: &str = "sluice_snapshot_chunks_total";
/// Rows and bytes (as stored in the log) the running snapshot has written since sluice
/// started (counters).
pub const SNAPSHOT_ROWS: &str = "sluice_snapshot_rows_total";
pub const SNAPSHOT_BYTES: &str = "sluice_snapshot_bytes_total";
/// Records a sink delivered (counter).
pub const SINK_RECORDS: &str = "sluice_sink_records_total";
/// Records in the log a sink has not delivered yet (gauge).
pub const SINK_LAG_RECORDS: &str = "sluice_sink_lag_records";
/// 1 while a sink is stopped by a definite failure (see `sluice status` for the reason), 0
/// while it runs (gauge).
pub const SINK_FAILED: &str = "sluice_sink_failed";
/// Events a sink put in its dead-letter topic (rejected by the destination or a transform).
pub const SINK_DEAD_LETTERS: &str = "sluice_sink_dead_letters_total";
/// Errors, by `stage`: source, encode, log, sink (counter).
pub const ERRORS: &str = "sluice_errors_total";

/// Kafka sink: records and bytes (key and value) produced, per sink.
pub const KAFKA_PRODUCED_RECORDS: &str = "sluice_kafka_produced_records_total";
pub const KAFKA_PRODUCED_BYTES: &str = "sluice_kafka_produced_bytes_total";
/// Kafka sink: transactions, by `result` (`committed`, `aborted`).
pub const KAFKA_TRANSACTIONS: &str = "sluice_kafka_transactions_total";
/// Kafka sink: seconds from a round's first record to all of it acknowledged (committed, with
/// transactions).
pub const KAFKA_PRODUCE_SECONDS: &str = "sluice_kafka_produce_seconds";
