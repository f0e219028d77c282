//! Appending: transactions across partitions made visible by one commit record, uncommitted
//! parts of large transactions, rollback, group commit of the control partition, and the
//! poisoning of the log after a failed write.

use std::collections::BTreeMap;
use std::sync::MutexGuard;
use std::time::Instant;

use crate::batch::{Record, Records};
use crate::{
    commit, failpoint, now_ms, Control, FsyncPolicy, Log, LogError, PartitionBatch, PartitionEnds,
};

impl Log {
    /// Appends a transaction: `batches` to their partitions, then `checkpoint` as the writer's
    /// commit. Returns when the transaction is committed under the fsync policy; then readers
    /// see all of it. On error nothing of it becomes visible (recovery cuts it off).
    pub fn append_txn(
        &self,
        writer: &str,
        batches: &[PartitionBatch],
        checkpoint: &str,
    ) -> Result<(), LogError> {
        self.append(writer, batches, Some(checkpoint))
    }

    /// Appends part of a transaction too large to hold in memory: written now, invisible until
    /// a later `append_txn` of the same writer commits it together with everything it appended
    /// since its last commit. `rollback` (or a crash) discards it.
    pub fn append_uncommitted(
        &self,
        writer: &str,
        batches: &[PartitionBatch],
    ) -> Result<(), LogError> {
        self.append(writer, batches, None)
    }

    pub(crate) fn append(
        &self,
        writer: &str,
        batches: &[PartitionBatch],
        checkpoint: Option<&str>,
    ) -> Result<(), LogError> {
        if !self.writable {
            return Err(LogError::ReadOnly);
        }
        self.check_not_failed()?;
        let mut ends = Vec::with_capacity(batches.len());
        for batch in batches.iter().filter(|b| !b.records.is_empty()) {
            let end = self.with_partition(&batch.topic, batch.partition, |guarded| {
                let mut partition = guarded.lock();
                match &batch.records {
                    Records::Owned(records) => partition.append(records),
                    Records::Packed(packed) => partition.append(&packed.views()),
                    Records::Prepared(prepared) => partition.append_prepared(&prepared.data),
                }
            })?;
            // A write that failed midway leaves this transaction's earlier parts on disk past
            // the stable offsets: no later commit may cover them, so the log stops here.
            let end = match end {
                Ok(end) => end,
                Err(LogError::RecordTooLarge { max }) if ends.is_empty() => {
                    return Err(LogError::RecordTooLarge { max })
                }
                Err(err) => return Err(self.fail(err)),
            };
            ends.push(((batch.topic.clone(), batch.partition), end));
        }
        let Some(checkpoint) = checkpoint else {
            let mut pending = self.lock_pending();
            pending.entry(writer.to_owned()).or_default().extend(ends);
            return Ok(());
        };
        // Everything the writer appended since its last commit is part of this commit.
        let mut ends: BTreeMap<(String, u32), u64> = ends.into_iter().collect();
        if let Some(earlier) = self.lock_pending().remove(writer) {
            for (tp, end) in earlier {
                ends.entry(tp).or_insert(end);
            }
        }
        // Each topic's own policy decides whether its data is synced; the commit record is
        // synced when any of the data was.
        let interval_due = self.interval_due();
        let mut sync_now = false;
        for (topic, partition) in ends.keys() {
            let due = match self.options.fsync_for(topic) {
                FsyncPolicy::Always => true,
                FsyncPolicy::Never => false,
                FsyncPolicy::Interval(_) => interval_due,
            };
            if !due {
                continue;
            }
            sync_now = true;
            let (file, path) =
                self.with_partition(topic, *partition, |guarded| guarded.lock().sync_handle())?;
            failpoint::hit("fsync-segment")
                .and_then(|()| file.sync_data())
                .map_err(|e| self.fail(LogError::io("fsync segment", &path, e)))?;
        }
        if ends.is_empty() {
            // A commit without data (a checkpoint only) follows the log-wide policy.
            sync_now = match self.options.fsync {
                FsyncPolicy::Always => true,
                FsyncPolicy::Never => false,
                FsyncPolicy::Interval(_) => interval_due,
            };
        }
        failpoint::hit("before-commit-record")
            .map_err(|e| self.fail(LogError::io("append commit record", &self.dir, e)))?;
        let commit_end = {
            let mut control = self.lock_control();
            let state = control.writers.entry(writer.to_owned()).or_default();
            state.checkpoint = checkpoint.to_owned();
            state
                .ends
                .extend(ends.iter().map(|(tp, end)| (tp.clone(), *end)));
            let record = commit::encode_touched(writer, checkpoint, &ends, now_ms());
            control.partition.append(std::slice::from_ref(&record))?;
            let end = control.partition.end_offset();
            control.partition.stable_offset = end;
            if self.control_needs_roll(&control) {
                self.roll_control(&mut control)?;
            }
            end
        };
        if sync_now {
            self.sync_control_through(commit_end)?;
        }
        for ((topic, partition), end) in &ends {
            self.with_partition(topic, *partition, |guarded| {
                guarded.lock().stable_offset = *end
            })?;
        }
        self.commits.send_modify(|generation| *generation += 1);
        Ok(())
    }

    /// Discards what `writer` appended with `append_uncommitted` since its last commit (a source
    /// restarting in the middle of a large transaction sends it again from its start).
    pub fn rollback(&self, writer: &str) -> Result<(), LogError> {
        self.check_not_failed()?;
        let Some(pending) = self.lock_pending().remove(writer) else {
            return Ok(());
        };
        let committed = self
            .lock_control()
            .writers
            .get(writer)
            .map(|state| state.ends.clone())
            .unwrap_or_default();
        for (tp, _) in pending {
            let end = committed.get(&tp).copied().unwrap_or(0);
            self.with_partition(&tp.0, tp.1, |guarded| guarded.lock().truncate_to(end))??;
        }
        Ok(())
    }

    pub(crate) fn lock_pending(&self) -> MutexGuard<'_, BTreeMap<String, PartitionEnds>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Group commit: makes the control partition durable through `end`. Concurrent committers
    /// share fsyncs: one of them (the leader) syncs everything appended so far while the others
    /// wait, and each returns as soon as a sync covered its commit record.
    pub(crate) fn sync_control_through(&self, end: u64) -> Result<(), LogError> {
        let mut state = self.control_sync.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if state.durable_end >= end {
                return Ok(());
            }
            if state.leader {
                state = self
                    .control_synced
                    .wait(state)
                    .unwrap_or_else(|p| p.into_inner());
                continue;
            }
            state.leader = true;
            drop(state);
            let (file, path, target) = {
                let control = self.lock_control();
                let (file, path) = control.partition.sync_handle();
                (file, path, control.partition.end_offset())
            };
            let result = failpoint::hit("fsync-control").and_then(|()| file.sync_data());
            state = self.control_sync.lock().unwrap_or_else(|p| p.into_inner());
            state.leader = false;
            if result.is_ok() {
                state.durable_end = state.durable_end.max(target);
            }
            self.control_synced.notify_all();
            result.map_err(|e| self.fail(LogError::io("fsync control segment", &path, e)))?;
        }
    }

    /// Records that a write or fsync failed midway through an append. After that the state of
    /// the files is unknown (a failed fsync may have dropped dirty pages), so the log takes no
    /// more writes: reopening it recovers exactly what was committed.
    pub(crate) fn fail(&self, error: LogError) -> LogError {
        self.failed.store(true, std::sync::atomic::Ordering::SeqCst);
        tracing::error!(error = %error, "log write failed; refusing further writes until reopened");
        error
    }

    pub(crate) fn check_not_failed(&self) -> Result<(), LogError> {
        if self.failed.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(LogError::Failed);
        }
        Ok(())
    }

    /// Whether topics under an `interval` policy are due a sync (the shortest interval of the
    /// log-wide and per-topic policies applies); resets the timer when they are.
    pub(crate) fn interval_due(&self) -> bool {
        let Some(every) = self.options.shortest_interval() else {
            return false;
        };
        let mut last = self.last_sync.lock().unwrap_or_else(|p| p.into_inner());
        if last.elapsed() >= every {
            *last = Instant::now();
            true
        } else {
            false
        }
    }

    pub(crate) fn control_needs_roll(&self, control: &Control) -> bool {
        let (file, _) = control.partition.sync_handle();
        file.size()
            .map(|len| len > commit::CONTROL_SEGMENT_BYTES)
            .unwrap_or(false)
    }

    /// Starts a new control segment that restates every writer's latest commit, then deletes
    /// the older control segments.
    pub(crate) fn roll_control(&self, control: &mut Control) -> Result<(), LogError> {
        let now = now_ms();
        let records: Vec<Record> = control
            .writers
            .iter()
            .map(|(writer, state)| commit::encode(writer, state, now))
            .collect();
        control.partition.roll()?;
        if !records.is_empty() {
            control.partition.append(&records)?;
        }
        let (file, path) = control.partition.sync_handle();
        file.sync_data()
            .map_err(|e| LogError::io("fsync control segment", &path, e))?;
        control.partition.stable_offset = control.partition.end_offset();
        control.partition.remove_older_segments()
    }
}
