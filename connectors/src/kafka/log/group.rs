//! Sinks as Kafka consumer groups: every process that runs a sink joins the group
//! `sink.<name>`, and Kafka shares the sink's partitions between them (cooperative-sticky
//! assignment: a rebalance moves only the partitions that must move).
//!
//! The member's consumer only holds the membership: its partitions stay paused, and the sink
//! reads them through the log's own readers. A thread polls it, which serves heartbeats and
//! rebalances. Before a partition goes to another member, the sink finishes what it has in
//! flight and commits its offsets (see `hand_over` in core's sink task); the rebalance waits
//! for that, so the next owner starts where this one stopped. A member that dies (`kill -9`)
//! answers nothing: the group gives its partitions away after `session.timeout.ms`, and their
//! next owner starts from the target's offsets (exactly-once sinks) or the group's committed
//! offsets (the others, which then write again what the dead member wrote after its last
//! commit).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use sluice_core::event_log::{LogError, Membership, Revocation};
use sluice_core::sink::Offsets;
use tokio::sync::{mpsc, oneshot, watch};

use super::{consumer_config, KafkaLog, CHECKPOINTS_TOPIC};

/// How long a rebalance waits for the sink to finish with the partitions it gives up.
const HAND_OVER: Duration = Duration::from_secs(60);

/// A group's consumer: the member's (with its channels to the sink), or one that only reads and
/// commits offsets (`sluice status`, a process that does not run the sink).
pub(super) type GroupConsumer = BaseConsumer<MemberContext>;

/// What a rebalance tells the sink.
#[derive(Default)]
pub(super) struct MemberContext {
    owned: Option<watch::Sender<BTreeSet<(String, u32)>>>,
    revoked: Option<mpsc::Sender<Revocation>>,
}

impl ClientContext for MemberContext {}

impl ConsumerContext for MemberContext {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let (Rebalance::Revoke(list), Some(revoked)) = (rebalance, &self.revoked) else {
            return;
        };
        let partitions = partitions(list);
        if partitions.is_empty() {
            return;
        }
        // No longer this member's from now on: a sink that opens again meanwhile leaves them.
        if let Some(owned) = &self.owned {
            owned.send_modify(|owned| {
                for partition in &partitions {
                    owned.remove(partition);
                }
            });
        }
        let (done, mut answered) = oneshot::channel();
        if revoked
            .blocking_send(Revocation { partitions, done })
            .is_err()
        {
            // The sink has stopped: nothing in flight.
            return;
        }
        let deadline = Instant::now() + HAND_OVER;
        loop {
            match answered.try_recv() {
                Ok(()) | Err(oneshot::error::TryRecvError::Closed) => return,
                Err(oneshot::error::TryRecvError::Empty) if Instant::now() > deadline => {
                    tracing::warn!(
                        seconds = HAND_OVER.as_secs(),
                        "the sink did not finish with its partitions in time; they move anyway \
                         and their next owner writes again what this member did not commit"
                    );
                    return;
                }
                Err(oneshot::error::TryRecvError::Empty) => {
                    #[allow(clippy::disallowed_methods)] // the group's own thread, not a worker
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Some(owned) = &self.owned else { return };
        match rebalance {
            Rebalance::Assign(list) => {
                // Reads go through the log's readers: this consumer fetches nothing.
                if let Err(err) = consumer.pause(list) {
                    tracing::warn!(error = %err, "pausing the group member's partitions");
                }
                let added = partitions(list);
                if !added.is_empty() {
                    tracing::info!(
                        partitions = added.len(),
                        "partitions assigned to this member"
                    );
                    owned.send_modify(|owned| owned.extend(added));
                }
            }
            Rebalance::Revoke(list) => {
                // Removed before the revocation already; this keeps the set right whatever
                // happened in between.
                let removed = partitions(list);
                owned.send_if_modified(|owned| {
                    let before = owned.len();
                    for partition in &removed {
                        owned.remove(partition);
                    }
                    owned.len() != before
                });
            }
            Rebalance::Error(err) => tracing::warn!(error = %err, "consumer group rebalance"),
        }
    }
}

fn partitions(list: &TopicPartitionList) -> Vec<(String, u32)> {
    list.elements()
        .iter()
        .map(|e| (e.topic().to_owned(), e.partition() as u32))
        .collect()
}

/// The subscription of a sink's topic patterns: names as they are, wildcards as regular
/// expressions (`^shop\.public\..*$`).
fn subscription(pattern: &str) -> String {
    if !pattern.contains('*') {
        return pattern.to_owned();
    }
    let mut regex = String::from("^");
    for c in pattern.chars() {
        match c {
            '*' => regex.push_str(".*"),
            c if c.is_ascii_alphanumeric() || c == '_' || c == '-' => regex.push(c),
            c => {
                regex.push('\\');
                regex.push(c);
            }
        }
    }
    regex.push('$');
    regex
}

impl KafkaLog {
    /// Commits `offsets` to `group` (on the calling, blocking thread). A commit the group refuses
    /// while it rebalances (its generation moved on), or that a broker down or a coordinator
    /// moving refuses, is kept and sent with the next one, for the partitions this member still
    /// owns then: a sink's progress is not an error, and an old offset must not overwrite what
    /// the partition's next owner committed.
    pub(super) fn commit_group(&self, group: &str, offsets: Offsets) -> Result<(), LogError> {
        let consumer = self.group(group)?;
        let mut all = self
            .inner
            .pending_commits
            .lock()
            .expect("not poisoned")
            .remove(group)
            .unwrap_or_default();
        let subscribed = consumer
            .subscription()
            .map(|list| partitions(&list))
            .unwrap_or_default();
        if !subscribed.is_empty() && !all.is_empty() {
            let owned = consumer
                .assignment()
                .map(|list| partitions(&list))
                .unwrap_or_default();
            if subscribed
                .iter()
                .any(|(topic, _)| topic == CHECKPOINTS_TOPIC)
            {
                // A whole sink's member: its offsets are its own while it holds the token.
                if owned.is_empty() {
                    all.clear();
                }
            } else {
                all.retain(|partition, _| owned.contains(partition));
            }
        }
        for (partition, next) in offsets {
            let at = all.entry(partition).or_insert(next);
            *at = (*at).max(next);
        }
        let mut list = TopicPartitionList::new();
        for ((topic, partition), next) in &all {
            list.add_partition_offset(topic, *partition as i32, Offset::Offset(*next as i64))
                .map_err(|e| self.error("committing offsets", e))?;
        }
        match consumer.commit(&list, CommitMode::Sync) {
            Ok(()) => Ok(()),
            Err(err)
                if super::transient(&err)
                    || matches!(
                        err.rdkafka_error_code(),
                        Some(
                            RDKafkaErrorCode::IllegalGeneration
                                | RDKafkaErrorCode::RebalanceInProgress
                                | RDKafkaErrorCode::UnknownMemberId
                                | RDKafkaErrorCode::State
                                | RDKafkaErrorCode::NotCoordinator
                                | RDKafkaErrorCode::CoordinatorNotAvailable
                                | RDKafkaErrorCode::CoordinatorLoadInProgress
                        )
                    ) =>
            {
                tracing::debug!(group, error = %err, "offsets kept for the next commit (the group is rebalancing, or a broker is down)");
                self.inner
                    .pending_commits
                    .lock()
                    .expect("not poisoned")
                    .insert(group.to_owned(), all);
                Ok(())
            }
            Err(err) => Err(self.error(format!("committing consumer group {group}"), err)),
        }
    }

    /// Joins `group` for `patterns`: a member consumer polled by a thread of its own until the
    /// membership is dropped (the sink stopped), then leaves the group.
    pub(super) fn join(&self, group: &str, patterns: &[String]) -> Result<Membership, LogError> {
        let (owned, owned_rx) = watch::channel(BTreeSet::new());
        let (revoked, revoked_rx) = mpsc::channel(1);
        let mut config = consumer_config(&self.inner.config);
        config.set("group.id", group);
        for (key, value) in [
            ("partition.assignment.strategy", "cooperative-sticky"),
            // A member that died is noticed within this; heartbeats go every second.
            ("session.timeout.ms", "10000"),
            ("heartbeat.interval.ms", "1000"),
            // New topics that match a wildcard are assigned within this.
            ("topic.metadata.refresh.interval.ms", "2000"),
        ] {
            if !self.inner.config.properties.contains_key(key) {
                config.set(key, value);
            }
        }
        let consumer: GroupConsumer = config
            .create_with_context(MemberContext {
                owned: Some(owned.clone()),
                revoked: Some(revoked),
            })
            .map_err(|e| self.error(format!("joining consumer group {group}"), e))?;
        let topics: Vec<String> = patterns.iter().map(|p| subscription(p)).collect();
        let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&topics)
            .map_err(|e| self.error(format!("subscribing consumer group {group}"), e))?;
        let consumer = Arc::new(consumer);
        // Offsets of this group are committed by the member (Kafka takes commits of an active
        // group only from its members).
        self.inner
            .groups
            .lock()
            .expect("not poisoned")
            .insert(group.to_owned(), Arc::clone(&consumer));
        let name = group.to_owned();
        let log = self.clone();
        std::thread::Builder::new()
            .name(format!("group {group}"))
            .spawn(move || {
                while !owned.is_closed() {
                    // Heartbeats, rebalances; no records (the partitions are paused).
                    if let Some(Err(err)) = consumer.poll(Duration::from_millis(100)) {
                        tracing::warn!(group = name, error = %err, "consumer group");
                    }
                }
                log.inner.groups.lock().expect("not poisoned").remove(&name);
                // Dropping the last handle leaves the group (its partitions go to the others
                // at once, not after the session timeout).
                drop(consumer);
            })
            .map_err(|e| {
                LogError::Backend(format!("starting the thread of group {group}: {e}").into())
            })?;
        Ok(Membership {
            owned: owned_rx,
            revoked: revoked_rx,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::subscription;

    #[test]
    fn patterns_subscribe_as_names_or_regular_expressions() {
        assert_eq!(subscription("shop.public.orders"), "shop.public.orders");
        assert_eq!(subscription("shop.public.*"), "^shop\\.public\\..*$");
        assert_eq!(subscription("*"), "^.*$");
    }
}
