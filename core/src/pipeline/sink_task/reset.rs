//! An operator's change to a sink's offsets: the admin API's `DELETE` and `PATCH
//! /connectors/{name}/offsets`, made while the sink is stopped.
//!
//! Sinks that deliver exactly once keep their offsets in their target and resume from those,
//! whatever the consumer group says, so the change cannot simply be written to the group. It is
//! kept in the log instead (the checkpoint of writer `sink.<name>.reset`) and laid over what the
//! sink's `open` returns, partition by partition, each time the sink opens, until the target has
//! committed that partition again: from then on the target's own offset carries the change.
//! A crash between the target's commit and the removal of the partition from the change lays it
//! over once more: the records from the changed offset are delivered again (at least once).

use serde::{Deserialize, Serialize};

use crate::event_log::{EventLog, LogError};
use crate::sink::Offsets;

/// The log writer whose checkpoint holds the change to sink `sink`'s offsets.
pub fn reset_writer(sink: &str) -> String {
    format!("sink.{sink}.reset")
}

/// A change to a sink's offsets that its target does not carry yet.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetReset {
    /// Every partition the sink holds offsets for starts again from the first record the log
    /// keeps (`DELETE`).
    #[serde(default)]
    pub all: bool,
    /// Partitions set one by one (`PATCH`), after `all`.
    #[serde(default)]
    pub partitions: Vec<PartitionReset>,
}

/// One partition's new offset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionReset {
    pub topic: String,
    pub partition: u32,
    /// The next offset to deliver; none: the first record the log keeps.
    pub offset: Option<u64>,
}

impl OffsetReset {
    /// The change waiting for sink `sink` (None: there is none).
    pub async fn read<L: EventLog>(log: &L, sink: &str) -> Result<Option<OffsetReset>, LogError> {
        let Some(text) = log.checkpoint(&reset_writer(sink)).await? else {
            return Ok(None);
        };
        // Written only by `store`: anything else is no change.
        Ok(serde_json::from_str::<OffsetReset>(&text)
            .ok()
            .filter(|r| !r.is_empty()))
    }

    /// Keeps the change in the log (an empty one: there is no change any more).
    pub async fn store<L: EventLog>(&self, log: &L, sink: &str) -> Result<(), LogError> {
        let text = serde_json::to_string(self).expect("offsets serialize");
        log.append(&reset_writer(sink), Vec::new(), Some(text))
            .await
    }

    pub fn is_empty(&self) -> bool {
        !self.all && self.partitions.is_empty()
    }

    /// `later` made after this one, still waiting: a change of every partition replaces it, a
    /// change of some partitions replaces theirs.
    pub fn then(mut self, later: OffsetReset) -> OffsetReset {
        if later.all {
            return later;
        }
        for change in later.partitions {
            self.partitions
                .retain(|p| (p.topic.as_str(), p.partition) != (&change.topic, change.partition));
            self.partitions.push(change);
        }
        self
    }

    /// Lays the change over `offsets` (what the sink's target holds). `all` becomes a change
    /// of each partition `offsets` holds, so that each is let go as its target commits it.
    pub async fn apply<L: EventLog>(&mut self, log: &L, offsets: &mut Offsets) {
        if self.all {
            self.all = false;
            let mut every: Vec<PartitionReset> = offsets
                .keys()
                .map(|(topic, partition)| PartitionReset {
                    topic: topic.clone(),
                    partition: *partition,
                    offset: None,
                })
                .collect();
            every.retain(|p| {
                !self
                    .partitions
                    .iter()
                    .any(|q| (&q.topic, q.partition) == (&p.topic, p.partition))
            });
            every.append(&mut self.partitions);
            self.partitions = every;
        }
        for change in &self.partitions {
            let offset = match change.offset {
                Some(offset) => offset,
                // The log's first record (0 where the log cannot say: reading from there moves
                // on to its first record).
                None => log
                    .offsets(&change.topic, change.partition)
                    .await
                    .map_or(0, |o| o.start),
            };
            offsets.insert((change.topic.clone(), change.partition), offset);
        }
    }

    /// Lets go of the partitions the target has now committed (`advanced`); true when that
    /// changed anything.
    pub fn settle(&mut self, advanced: &Offsets) -> bool {
        let before = self.partitions.len();
        self.partitions
            .retain(|p| !advanced.contains_key(&(p.topic.clone(), p.partition)));
        self.partitions.len() != before
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(topic: &str, partition: u32, offset: Option<u64>) -> PartitionReset {
        PartitionReset {
            topic: topic.into(),
            partition,
            offset,
        }
    }

    #[test]
    fn a_later_change_replaces_the_earlier_one_where_they_meet() {
        let first = OffsetReset {
            all: false,
            partitions: vec![at("a", 0, Some(5)), at("b", 0, Some(7))],
        };
        let later = OffsetReset {
            all: false,
            partitions: vec![at("a", 0, Some(9))],
        };
        let both = first.clone().then(later);
        assert_eq!(
            both.partitions,
            vec![at("b", 0, Some(7)), at("a", 0, Some(9))]
        );
        let every = OffsetReset {
            all: true,
            partitions: vec![],
        };
        assert_eq!(first.then(every.clone()), every);
    }

    #[tokio::test]
    async fn every_partition_starts_over_and_is_let_go_once_committed() {
        let log = crate::event_log::memory::MemoryLog::new(1, None);
        let mut offsets = Offsets::new();
        offsets.insert(("a".into(), 0), 40);
        offsets.insert(("b".into(), 0), 12);
        let mut reset = OffsetReset {
            all: true,
            partitions: vec![at("b", 0, Some(3))],
        };
        reset.apply(&log, &mut offsets).await;
        assert_eq!(offsets[&("a".into(), 0)], 0);
        assert_eq!(offsets[&("b".into(), 0)], 3);
        assert!(!reset.all);
        assert_eq!(
            reset.partitions,
            vec![at("a", 0, None), at("b", 0, Some(3))]
        );
        let mut advanced = Offsets::new();
        advanced.insert(("a".into(), 0), 10);
        assert!(reset.settle(&advanced));
        assert_eq!(reset.partitions, vec![at("b", 0, Some(3))]);
        assert!(!reset.settle(&advanced));

        reset.store(&log, "s").await.unwrap();
        assert_eq!(
            OffsetReset::read(&log, "s").await.unwrap(),
            Some(reset.clone())
        );
        OffsetReset::default().store(&log, "s").await.unwrap();
        assert_eq!(OffsetReset::read(&log, "s").await.unwrap(), None);
    }
}
