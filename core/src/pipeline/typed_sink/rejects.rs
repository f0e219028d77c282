//! Changes a sink's transforms rejected: into the sink's dead-letter topic, durably, before
//! the sink goes past them (without one, the sink stops with the first reason).

use super::TypedSinkError;
use crate::sink::{DeadLetter, DeadLetterWriter, SinkRecord};
use crate::transform::Rejected;

/// Puts the changes a transform rejected into the dead-letter topic (durably, before the
/// sink goes past them).
pub(super) async fn divert<E>(
    writer: Option<&DeadLetterWriter>,
    records: &[SinkRecord],
    rejected: Vec<Rejected>,
) -> Result<(), TypedSinkError<E>> {
    let Some(writer) = writer else {
        let first = &rejected[0];
        let record = &records[first.record];
        return Err(TypedSinkError::Rejected(format!(
            "record {}[{}] offset {}: {}",
            record.topic, record.partition, record.record.offset, first.reason
        )));
    };
    for reject in &rejected {
        let record = &records[reject.record];
        tracing::warn!(
            topic = %record.topic,
            partition = record.partition,
            offset = record.record.offset,
            reason = %reject.reason,
            "a transform rejected a change; it goes to the dead-letter topic"
        );
    }
    let letters = rejected
        .into_iter()
        .map(|reject| DeadLetter {
            record: records[reject.record].clone(),
            error: reject.reason,
        })
        .collect();
    writer(letters).await.map_err(TypedSinkError::DeadLetter)
}
