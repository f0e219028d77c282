//! Retention: deleting old committed segments by age and size (see `partition` for which
//! segments qualify).

use std::time::SystemTime;

use crate::{Log, LogError, Retention};

impl Log {
    /// Deletes old segments as the retention options allow, in every partition; returns how
    /// many. Readers holding a deleted segment open finish reading it.
    pub fn enforce_retention(&self) -> Result<usize, LogError> {
        if !self.writable || self.options.retention == Retention::default() {
            return Ok(0);
        }
        let topics = self.all_topics();
        let now = SystemTime::now();
        let mut deleted = 0;
        for topic in topics {
            for guarded in &topic.partitions {
                deleted += guarded
                    .lock()
                    .enforce_retention(&self.options.retention, now)?;
            }
        }
        Ok(deleted)
    }
}
