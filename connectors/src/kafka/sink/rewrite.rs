//! The Kafka sink's rewrite of records into Debezium's forms, chunk by chunk on a blocking
//! thread while the chunk before is produced.

use std::ops::Range;

use sluice_core::sink::SinkRecord;
use sluice_schema_registry::changes::header_schema_id;
use sluice_schema_registry::json::debezium::DebeziumJson;

/// Records per chunk rewritten in one go on a blocking thread.
pub(super) const REWRITE_CHUNK: usize = 2048;

/// A chunk's values in Debezium's forms: back to back in `data`, `spans[i]` the i-th record's
/// (None: produced as the log holds it).
pub(super) struct Rewritten {
    pub(super) data: Vec<u8>,
    pub(super) spans: Vec<Option<Range<usize>>>,
}

/// A rewritten chunk, or the index in it of the record that could not be rewritten and why.
pub(super) type RewriteResult = Result<Rewritten, (usize, String)>;

/// Rewrites `chunk`'s values on a blocking thread; hands the transcoder back with the result
/// (an error names the record's index in the chunk).
pub(super) fn rewrite(
    mut transcoder: DebeziumJson,
    chunk: &[SinkRecord],
) -> tokio::task::JoinHandle<(DebeziumJson, RewriteResult)> {
    // Transaction boundaries (BEGIN/END) are in Debezium's form already: produced as they are.
    let values: Vec<(Option<bytes::Bytes>, Option<u32>)> = chunk
        .iter()
        .map(|r| match is_boundary(r) {
            true => (None, None),
            false => (r.record.value.clone(), header_schema_id(r)),
        })
        .collect();
    tokio::task::spawn_blocking(move || {
        let mut rewritten = Rewritten {
            data: Vec::with_capacity(values.len() * 512),
            spans: Vec::with_capacity(values.len()),
        };
        for (index, (value, schema)) in values.iter().enumerate() {
            let start = rewritten.data.len();
            let span = match value {
                Some(value) => {
                    match transcoder.transcode_value(value, *schema, &mut rewritten.data) {
                        Ok(true) => Some(start..rewritten.data.len()),
                        Ok(false) => None,
                        Err(reason) => return (transcoder, Err((index, reason))),
                    }
                }
                None => None,
            };
            rewritten.spans.push(span);
        }
        (transcoder, Ok(rewritten))
    })
}

/// Whether `record` is a transaction boundary record (`<source>.transaction`).
fn is_boundary(record: &SinkRecord) -> bool {
    record
        .record
        .headers
        .iter()
        .any(|h| h.key == sluice_core::topic::BOUNDARY_HEADER)
}
