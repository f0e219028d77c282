//! The writers' checkpoints on Kafka: read whole at start, followed afterwards (other
//! processes' commits), and read afresh when a process takes a writer over.

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use sluice_core::event_log::LogError;

use super::{consumer_config, position, KafkaLog, CHECKPOINTS_TOPIC, TIMEOUT};

impl KafkaLog {
    /// Every writer's last committed checkpoint, from the checkpoints topic, and the reader,
    /// which goes on following it.
    pub(super) fn read_checkpoints(
        &self,
    ) -> Result<(HashMap<String, String>, BaseConsumer), KafkaError> {
        let consumer: BaseConsumer = consumer_config(&self.inner.config).create()?;
        let (low, high) = super::watermarks(&consumer, CHECKPOINTS_TOPIC, 0)?;
        let mut checkpoints = HashMap::new();
        let mut assignment = TopicPartitionList::new();
        assignment.add_partition_offset(CHECKPOINTS_TOPIC, 0, Offset::Offset(low))?;
        consumer.assign(&assignment)?;
        if high <= low {
            return Ok((checkpoints, consumer));
        }
        let deadline = std::time::Instant::now() + TIMEOUT;
        loop {
            let position = position(&consumer, CHECKPOINTS_TOPIC, 0).unwrap_or(low as u64);
            if position >= high as u64 || std::time::Instant::now() > deadline {
                break;
            }
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(message)) => {
                    let Some(key) = message.key() else { continue };
                    let key = String::from_utf8_lossy(key).into_owned();
                    match message.payload() {
                        Some(value) => {
                            checkpoints.insert(key, String::from_utf8_lossy(value).into_owned())
                        }
                        None => checkpoints.remove(&key),
                    };
                }
                Some(Err(err)) => return Err(err),
                None => {}
            }
        }
        Ok((checkpoints, consumer))
    }

    /// Fences every other process's producer of `writer` (their open transaction is aborted):
    /// from now on only this process's appends as `writer` commit.
    pub(super) fn fence_blocking(&self, writer: &str) -> Result<(), LogError> {
        self.inner
            .claimed
            .lock()
            .expect("not poisoned")
            .insert(writer.to_owned());
        // A producer made before (with this process's own id, or fenced since by another
        // process's claim) goes: the new one's start fences every other.
        self.inner
            .writers
            .lock()
            .expect("not poisoned")
            .remove(writer);
        self.writer(writer).map(|_| ())
    }

    /// Checkpoints other processes' writers committed since the last call, without waiting.
    /// (This process's own come back too, maybe behind a newer commit of theirs: they are
    /// left out, as what `append` published is never older.)
    pub(super) fn newer_checkpoints(&self) -> Vec<(String, Option<String>)> {
        let tail = self.inner.checkpoint_tail.lock().expect("not poisoned");
        let Some(consumer) = tail.as_ref() else {
            return Vec::new();
        };
        let mut newer = Vec::new();
        let ours = self.inner.writers.lock().expect("not poisoned");
        while let Some(Ok(message)) = consumer.poll(Duration::ZERO) {
            if let Some(key) = message.key().filter(|key| {
                std::str::from_utf8(key).map_or(true, |writer| !ours.contains_key(writer))
            }) {
                newer.push((
                    String::from_utf8_lossy(key).into_owned(),
                    message
                        .payload()
                        .map(|value| String::from_utf8_lossy(value).into_owned()),
                ));
            }
        }
        newer
    }

    /// Takes checkpoints into what `checkpoint` answers. Called only after the stable offsets
    /// were refreshed since the checkpoints were read: a reader that sees a commit's checkpoint
    /// then finds all of its records below the stable offsets (sinks that apply whole commits
    /// rely on it).
    pub(super) fn publish_checkpoints(&self, checkpoints: Vec<(String, Option<String>)>) {
        if checkpoints.is_empty() {
            return;
        }
        let mut known = self.inner.checkpoints.write().expect("not poisoned");
        for (writer, checkpoint) in checkpoints {
            match checkpoint {
                Some(checkpoint) => known.insert(writer, checkpoint),
                None => known.remove(&writer),
            };
        }
    }

    /// Fences every other process's producer of `writer` (their open transaction is aborted),
    /// then reads the writer's checkpoint afresh: nothing can commit after it.
    pub(super) fn claim_blocking(&self, writer: &str) -> Result<Option<String>, LogError> {
        self.fence_blocking(writer)?;
        let (checkpoints, _) = self
            .read_checkpoints()
            .map_err(|e| self.error("reading the writers' checkpoints", e))?;
        let checkpoint = checkpoints.get(writer).cloned();
        let mut known = self.inner.checkpoints.write().expect("not poisoned");
        match &checkpoint {
            Some(text) => known.insert(writer.to_owned(), text.clone()),
            None => known.remove(writer),
        };
        Ok(checkpoint)
    }
}
