//! Which log a config names, opened for `sluice run` (writable, one process) or for the
//! commands that read it while `sluice run` writes (`status`, `log`, read-only). Everything
//! after opening goes through core's `EventLog`, so a second backend (Kafka) is another arm here.

use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, Context};
use sluice_log::{EmbeddedLog, Log};

use crate::config::LogSection;
use crate::Failure;

/// The embedded log of `section`, opened for writing (file I/O on the blocking pool).
pub(crate) async fn open(section: &LogSection) -> Result<EmbeddedLog, Failure> {
    let options = section.options().map_err(Failure::config)?;
    let dir = section.dir.clone();
    let log = tokio::task::spawn_blocking(move || Log::open(&dir, options))
        .await
        .map_err(Failure::runtime)?
        .map_err(|e| {
            Failure::runtime(anyhow!("opening the log at {}: {e}", section.dir.display()))
        })?;
    Ok(EmbeddedLog::new(Arc::new(log), section.partitions))
}

/// The log on the Kafka cluster `section` names (`kind = "kafka"`).
#[cfg(feature = "kafka")]
pub(crate) async fn open_kafka(
    section: &LogSection,
) -> Result<sluice_connectors::kafka::log::KafkaLog, Failure> {
    use sluice_connectors::kafka::log::{KafkaLog, KafkaLogConfig};
    let config = KafkaLogConfig {
        brokers: section.brokers.clone().unwrap_or_default(),
        partitions: section.partitions,
        replication_factor: section.replication_factor,
        min_insync_replicas: section.min_insync_replicas,
        properties: section.properties.clone(),
        topic_settings: section
            .topic_settings
            .iter()
            .map(|s| sluice_connectors::kafka::log::TopicSettings {
                topics: s.topics.clone(),
                partitions: s.partitions,
                replication_factor: s.replication_factor,
                min_insync_replicas: s.min_insync_replicas,
                config: s.config.clone(),
            })
            .collect(),
    };
    KafkaLog::open(config)
        .await
        .map_err(|e| Failure::runtime(anyhow!(e)))
}

/// The log at `dir`, read-only: it sees what was committed when it was opened.
pub(crate) fn open_read_only(dir: &Path) -> anyhow::Result<EmbeddedLog> {
    let log = Log::open_read_only(dir)
        .with_context(|| format!("opening the log at {}", dir.display()))?;
    // Read-only: no topic is created, so the partition count for new topics does not matter.
    Ok(EmbeddedLog::new(Arc::new(log), 1))
}

/// A one-thread runtime for the synchronous commands that read the log.
pub(crate) fn command_runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Failure::runtime)
}
