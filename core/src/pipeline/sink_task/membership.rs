//! A sink's share of its partitions where several processes run it (the log on Kafka): the
//! changes of ownership the sink loop handles, and the hand-over before partitions move.

use std::sync::Arc;

use super::{publish_durable, Gaps, PipelineError};
use crate::event_log::{EventLog, Membership, Revocation};
use crate::retry::{Classify, ErrorKind};
use crate::sink::{Offsets, RecordSink};

/// A change of the partitions this member owns.
pub(super) enum Moved {
    /// Partitions go to another member once this one answers.
    Revoked(Revocation),
    /// Partitions came (or went without asking: the group lost them).
    Changed,
}

/// A change of ownership waiting to be handled, if any.
pub(super) fn moved_now(membership: &mut Option<Membership>) -> Option<Moved> {
    let membership = membership.as_mut()?;
    if let Ok(revocation) = membership.revoked.try_recv() {
        return Some(Moved::Revoked(revocation));
    }
    membership
        .owned
        .has_changed()
        .unwrap_or(false)
        .then_some(Moved::Changed)
}

/// The next change of ownership (never, without a group).
pub(super) async fn moved(membership: &mut Option<Membership>) -> Moved {
    let Some(membership) = membership.as_mut() else {
        return std::future::pending().await;
    };
    tokio::select! {
        Some(revocation) = membership.revoked.recv() => Moved::Revoked(revocation),
        Ok(()) = membership.owned.changed() => Moved::Changed,
        else => std::future::pending().await,
    }
}

/// Before partitions move: finishes what the sink has in flight and commits its offsets, so
/// that the next owner starts where this one stopped (from the target's offsets or the
/// group's), then lets the move go on. A sink that cannot finish lets it go on too: what it
/// did not make durable, the next owner writes again.
#[allow(clippy::too_many_arguments)]
pub(super) async fn hand_over<S: RecordSink, L: EventLog>(
    name: &str,
    group: &str,
    log: &L,
    sink: &mut S,
    progress: (&[(Arc<str>, u32)], &Gaps),
    durable: &mut Offsets,
    moved: Moved,
) -> Result<(), PipelineError> {
    let flushed = sink.flush().await;
    let published = match &flushed {
        Ok(()) => publish_durable(name, group, log, sink, progress, durable, Offsets::new())
            .await
            .map(drop),
        Err(err) => {
            tracing::warn!(error = %err, "sink could not finish its writes before a rebalance; the next owner of its partitions writes them again");
            Ok(())
        }
    };
    if let Moved::Revoked(revocation) = moved {
        tracing::info!(
            partitions = revocation.partitions.len(),
            "partitions move to another member of the group"
        );
        let _ = revocation.done.send(());
    }
    match flushed {
        Err(err) if err.kind() == ErrorKind::Definite => Err(PipelineError::Sink {
            name: name.to_owned(),
            source: Box::new(err),
        }),
        _ => published,
    }
}
