//! Transforms: what a sink's `[[sinks.transforms]]` do to typed changes between decoding and
//! the sink, in the order the config lists them.
//!
//! | `type` | does |
//! |---|---|
//! | `filter` | keeps the changes whose `when` condition holds (`predicate.rs`) |
//! | `route` | renames the topic by a regex (`$1`, `${name}`); database sinks take the new name's last two parts as schema and table |
//! | `columns` | keeps `include`d columns, drops `exclude`d ones, `rename`s (key columns always stay) |
//! | `mask` | replaces columns by an HMAC-SHA256 of their text (salted, `hash`), `****` (`redact`) or null |
//! | `set` | adds or overwrites columns: static text or `${op}`, `${table}`, `${topic}`, `${position}`, `${txn}`, `${commit_ts}` |
//! | `unwrap` | the row instead of the Debezium envelope for sinks that send events (HTTP); deletes as tombstones, a `__deleted` flag (soft deletes, also for database sinks) or dropped |
//! | `outbox` | Debezium's outbox event router: inserts into an outbox table become events on `outbox.event.<aggregatetype>` keyed by `aggregateid`, the payload as the value |
//!
//! Each transform may name `topics` (patterns) it applies to; by default it applies to every
//! topic the sink reads. Mistakes a table reveals (a column it does not have, a key column
//! dropped) stop the sink with the sink, transform and column named; a change that one
//! transform cannot handle (a number compared with text that holds none, a regex group that
//! matched nothing) goes to the sink's dead-letter topic with the reason.

mod config;
mod outbox;
pub mod predicate;
mod steps;
pub mod values;

use std::collections::HashMap;
use std::sync::Arc;

pub use config::{
    ColumnsConfig, Deletes, FilterConfig, MaskConfig, MaskWith, OutboxConfig, RouteConfig,
    SetConfig, TransformConfig, UnwrapConfig,
};

use crate::change::SourcedChange;
use crate::event::TableSchema;
use crate::sink::SinkRecord;
pub use steps::DELETED;
use steps::{Prepared, Step};

/// A transform's config is wrong whatever the data (bad regex, unparsable condition, no
/// salt), or wrong for a table the sink met (a column it lacks).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("transforms[{index}] ({kind}): {reason}")]
pub struct TransformConfigError {
    pub index: usize,
    pub kind: &'static str,
    pub reason: String,
}

/// One change a transform could not handle, and why (the change goes to the dead-letter
/// topic).
#[derive(Debug, Clone)]
pub struct Rejected {
    /// The record the change came from (an index into the batch's records).
    pub record: usize,
    pub reason: String,
}

/// What one step prepared, per table version and topic.
#[derive(Default)]
struct Cache {
    /// (topic, table, what was prepared); the table is held, so its address stays its own.
    entries: Vec<(Arc<str>, Arc<TableSchema>, Prepared)>,
    /// Entries by the table's address.
    by_table: HashMap<usize, Vec<usize>>,
    /// The last entry found: changes come in runs of one table.
    last: Option<usize>,
}

/// A sink's transforms, ready to run.
pub struct Chain {
    steps: Vec<Step>,
    /// Per step, what it prepared.
    caches: Vec<Cache>,
}

impl Chain {
    /// Compiles `configs` (regexes, conditions, salts read from their file or variable).
    pub fn new(configs: &[TransformConfig]) -> Result<Chain, TransformConfigError> {
        let steps = configs
            .iter()
            .enumerate()
            .map(|(index, config)| {
                Step::new(config).map_err(|reason| TransformConfigError {
                    index,
                    kind: config.kind(),
                    reason,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Chain {
            caches: steps.iter().map(|_| Cache::default()).collect(),
            steps,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Runs every change through the chain. Returns what is left, in order, and the changes
    /// a transform rejected; an error for a transform that does not fit a table at all.
    pub fn apply(
        &mut self,
        changes: Vec<SourcedChange>,
        records: &[SinkRecord],
    ) -> Result<(Vec<SourcedChange>, Vec<Rejected>), TransformConfigError> {
        if self.steps.is_empty() {
            return Ok((changes, Vec::new()));
        }
        let mut changes = changes;
        let mut rejected = Vec::new();
        let mut failed = None;
        // In place: dropped and rejected changes leave the vector, the rest keep their order.
        changes.retain_mut(|sourced| {
            if failed.is_some() {
                return false;
            }
            // Borrowed from the record until a transform routes the change elsewhere.
            let record = sourced.record;
            let mut routed: Option<Arc<str>> = sourced.topic.clone();
            for index in 0..self.steps.len() {
                let topic = routed.as_ref().unwrap_or(&records[record].topic);
                let slot = match self.prepared_for(index, &sourced.change.table, topic) {
                    Ok(slot) => slot,
                    Err(err) => {
                        failed = Some(err);
                        return false;
                    }
                };
                let prepared = &self.caches[index].entries[slot].2;
                if !prepared.applies() {
                    continue;
                }
                match self.steps[index].apply(prepared, sourced, topic) {
                    Ok(true) => {}
                    Ok(false) => return false,
                    Err((record, reason)) => {
                        rejected.push(Rejected {
                            record,
                            reason: format!(
                                "transforms[{index}] ({}): {reason}",
                                self.steps[index].kind()
                            ),
                        });
                        return false;
                    }
                }
                if sourced.topic.is_some() {
                    routed.clone_from(&sourced.topic);
                }
            }
            true
        });
        if let Some(err) = failed {
            return Err(err);
        }
        let kept = changes;
        Ok((kept, rejected))
    }

    /// Holds the chain against one table version on `topic` without a change: each step
    /// prepared in turn, on the table the steps before it make (what `sluice check` does
    /// with the tables the log knows). Stops quietly where the table depends on the data
    /// (after an outbox router).
    pub fn check(
        &mut self,
        table: &Arc<TableSchema>,
        topic: &str,
    ) -> Result<(), TransformConfigError> {
        let mut table = Arc::clone(table);
        let mut topic: Arc<str> = topic.into();
        for index in 0..self.steps.len() {
            let slot = self.prepared_for(index, &table, &topic)?;
            let (t, s, prepared) = &self.caches[index].entries[slot];
            match prepared.output(s, t) {
                Some((next_table, next_topic)) => {
                    (table, topic) = (Arc::clone(next_table), Arc::clone(next_topic));
                }
                None => return Ok(()),
            }
        }
        Ok(())
    }

    /// Where step `index`'s cache holds what it prepared for `table` on `topic` (preparing
    /// it the first time).
    fn prepared_for(
        &mut self,
        index: usize,
        table: &Arc<TableSchema>,
        topic: &Arc<str>,
    ) -> Result<usize, TransformConfigError> {
        let cache = &mut self.caches[index];
        if let Some(slot) = cache.last {
            let (t, s, _) = &cache.entries[slot];
            if Arc::ptr_eq(s, table) && (Arc::ptr_eq(t, topic) || **t == **topic) {
                return Ok(slot);
            }
        }
        let key = Arc::as_ptr(table) as usize;
        let found = cache.by_table.get(&key).and_then(|slots| {
            slots
                .iter()
                .copied()
                .find(|&slot| *cache.entries[slot].0 == **topic)
        });
        if let Some(slot) = found {
            cache.last = Some(slot);
            return Ok(slot);
        }
        let step = &self.steps[index];
        let prepared = step
            .prepare(table, topic)
            .map_err(|reason| TransformConfigError {
                index,
                kind: step.kind(),
                reason: format!(
                    "{reason} (table {}, topic {topic}; its columns: {})",
                    table.table,
                    table
                        .columns
                        .iter()
                        .map(|c| c.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            })?;
        let slot = cache.entries.len();
        cache
            .entries
            .push((Arc::clone(topic), Arc::clone(table), prepared));
        cache.by_table.entry(key).or_default().push(slot);
        cache.last = Some(slot);
        Ok(slot)
    }
}

#[cfg(test)]
mod tests;
