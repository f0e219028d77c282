//! A target fed from another log: its stored offsets lie past the end of this log.

use std::sync::Arc;

use crate::event_log::EventLog;
use crate::sink::Offsets;

/// A sink's stored offset beyond the end of its partition in the log. A sink only ever applies
/// committed records, and the log's committed end only grows: its target was fed from another
/// log (the log was created again, or restored from an older copy). Reading on would skip,
/// silently, every record of this log below the stored offset.
#[derive(Debug, thiserror::Error)]
#[error(
    "its target has applied {topic}[{partition}] up to offset {stored}, but the log holds only \
     {end} records there: the target was fed from another log (the log was created again, or \
     restored from an older copy). Nothing was written, since reading on would skip this log's \
     records below offset {stored}. Point the sink at a fresh target, or reset its offsets \
     (with the sink stopped: DELETE /connectors/<sink>/offsets on the admin API) to feed the \
     target again from this log (docs/operations.md, \"A new log under an old target\")"
)]
pub(super) struct OffsetsPastTheLog {
    topic: String,
    partition: u32,
    stored: u64,
    end: u64,
}

/// The first of `assigned`'s partitions whose offset in `offsets` lies past its end in `log`.
/// The end is asked afresh before it counts: the stable offset a backend remembers may lag
/// (another process's commits on Kafka).
pub(super) async fn offsets_past_the_log<L: EventLog>(
    log: &L,
    assigned: &[(Arc<str>, u32)],
    offsets: &Offsets,
) -> Option<OffsetsPastTheLog> {
    for (topic, partition) in assigned {
        let Some(&stored) = offsets.get(&(topic.to_string(), *partition)) else {
            continue;
        };
        if stored <= log.stable_offset(topic, *partition) {
            continue;
        }
        let Ok(fresh) = log.offsets(topic, *partition).await else {
            continue;
        };
        if stored > fresh.stable {
            return Some(OffsetsPastTheLog {
                topic: topic.to_string(),
                partition: *partition,
                stored,
                end: fresh.stable,
            });
        }
    }
    None
}
