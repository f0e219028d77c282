//! Producing the runtime's rounds. Exactly once, one Kafka transaction spans rounds: `write`
//! hands a round's records to the producer and returns (the round's memory is free while
//! Kafka acknowledges it), and the transaction, with the offsets of everything it holds,
//! commits once it holds [`TXN_BYTES`] or is [`TXN_AGE`] old, and whenever the runtime
//! flushes (it does before it waits for new records). `applied` reports what committed. At
//! least once, the same without a transaction: rounds are handed over and `write` returns;
//! what Kafka acknowledged is settled on the same terms, and `applied` reports it.
//!
//! A record larger than the producer's `message.max.bytes`: the producer refuses it at once,
//! and it goes to the dead-letter topic without disturbing the transaction (without one, the
//! sink stops, naming it). A broker whose limit is lower refuses the whole batch the record
//! was sent in, which says nothing about which record is at fault: the transaction aborts
//! and the sink stops, naming a record of it and saying to set the producer's limit to the
//! broker's.

use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer};
use sluice_core::change::DecodeError;
use sluice_core::metrics as metrics_names;
use sluice_core::sink::{DeadLetter, Offsets, SinkRecord};

use super::delivery::{Failure, NO_INDEX};
use super::rewrite::{rewrite, REWRITE_CHUNK};
use super::topics::Destinations;
use super::{KafkaSink, KafkaSinkError};
use crate::reshape::Destination;

/// A transaction commits once it holds this many bytes of records (the records themselves
/// are in the producer's bounded queue or in Kafka, not held here; each commit waits for
/// every record to be acknowledged, so fewer commits go faster)...
pub(super) const TXN_BYTES: usize = 128 << 20;
/// ...or is this old (a `read_committed` consumer sees its records then).
pub(super) const TXN_AGE: Duration = Duration::from_secs(1);

/// What the producer holds and has not committed: the open transaction (exactly once) or
/// the records not yet settled (at least once).
pub(super) struct InFlight {
    started: Instant,
    bytes: usize,
    /// The next log offset of each (log topic, partition) read into it.
    next: Vec<(Arc<str>, u32, u64)>,
    /// The log position of each record produced, by the index it was produced with: an
    /// index into `topics`, the partition, the offset (16 bytes a record).
    positions: Vec<(u32, u32, u64)>,
    topics: Vec<Arc<str>>,
}

impl InFlight {
    pub(super) fn new() -> InFlight {
        InFlight {
            started: Instant::now(),
            bytes: 0,
            next: Vec::new(),
            positions: Vec::new(),
            topics: Vec::new(),
        }
    }

    fn advance(&mut self, at: &SinkRecord) {
        let next = at.record.offset + 1;
        match self.next.iter_mut().rev().find(|(topic, partition, _)| {
            *partition == at.partition && (Arc::ptr_eq(topic, &at.topic) || *topic == at.topic)
        }) {
            Some((_, _, offset)) => *offset = next,
            None => self.next.push((Arc::clone(&at.topic), at.partition, next)),
        }
    }

    /// Notes where the record about to be produced comes from; returns the index to produce
    /// it with.
    fn produce_as(&mut self, at: &SinkRecord) -> usize {
        let topic = match self.topics.iter().rposition(|t| Arc::ptr_eq(t, &at.topic)) {
            Some(topic) => topic,
            None => {
                self.topics.push(Arc::clone(&at.topic));
                self.topics.len() - 1
            }
        };
        self.positions
            .push((topic as u32, at.partition, at.record.offset));
        self.positions.len() - 1
    }

    /// The log position of the record produced as `index`.
    fn position(&self, index: usize) -> Option<(String, u32, u64)> {
        let (topic, partition, offset) = *self.positions.get(index)?;
        Some((self.topics[topic as usize].to_string(), partition, offset))
    }

    fn offsets(&self) -> Offsets {
        self.next
            .iter()
            .map(|(topic, partition, next)| ((topic.to_string(), *partition), *next))
            .collect()
    }
}

impl KafkaSink {
    /// Hands a round's records to the producer (into the open transaction when exactly
    /// once).
    /// `to`: where transforms sent each record (`reshape.rs`); without, each goes to its own
    /// topic.
    pub(super) async fn produce_round(
        &mut self,
        records: &[SinkRecord],
        to: Option<&[Destination]>,
    ) -> Result<(), KafkaSinkError> {
        let transactional = self.transactional();
        let destinations = Destinations::of(&self.config, records, to);
        self.ensure_topics(&destinations.kafka_topics(), false)
            .await?;
        if self.in_flight.is_none() {
            if transactional {
                let producer = self.producer.as_ref().expect("opened");
                producer
                    .begin_transaction()
                    .map_err(self.error("beginning a transaction"))?;
            }
            self.in_flight = Some(InFlight::new());
        }
        let started = Instant::now();
        let bytes = match self.hand_over(records, to, &destinations).await {
            Ok(bytes) => bytes,
            Err(err) => return Err(self.abandon(err).await),
        };
        let sink = self.config.name.clone();
        metrics::counter!(metrics_names::KAFKA_PRODUCED_RECORDS, "sink" => sink.clone())
            .increment(records.len() as u64);
        metrics::counter!(metrics_names::KAFKA_PRODUCED_BYTES, "sink" => sink.clone())
            .increment(bytes as u64);
        let in_flight = self.in_flight.as_mut().expect("set above");
        in_flight.bytes += bytes;
        if in_flight.bytes >= TXN_BYTES || in_flight.started.elapsed() >= TXN_AGE {
            self.commit().await?;
        }
        metrics::histogram!(metrics_names::KAFKA_PRODUCE_SECONDS, "sink" => sink)
            .record(started.elapsed().as_secs_f64());
        Ok(())
    }

    /// Commits the open transaction with the offsets of what it holds (exactly once), or
    /// settles what is in flight (at least once).
    pub(super) async fn commit(&mut self) -> Result<(), KafkaSinkError> {
        if !self.transactional() {
            return self.settle().await;
        }
        let Some(in_flight) = self.in_flight.as_ref() else {
            return Ok(());
        };
        let mut next: Vec<(String, u32, u64)> = in_flight
            .next
            .iter()
            .map(|(topic, partition, next)| (topic.to_string(), *partition, *next))
            .collect();
        next.sort();
        let topic = self.config.offsets_topic();
        let mut result = Ok(());
        for (log_topic, partition, next) in &next {
            let key = format!("{log_topic}:{partition}");
            let value = next.to_string();
            let out = BaseRecord::with_opaque_to(&topic, NO_INDEX)
                .key(key.as_bytes())
                .payload(value.as_bytes());
            if let Err(err) = self.produce(out).await {
                result = Err(err);
                break;
            }
        }
        if result.is_ok() {
            self.deliveries.settled().await;
            result = self.delivery_failure();
        }
        if result.is_ok() {
            result = self
                .txn("committing a transaction", |p| {
                    p.commit_transaction(super::TXN_TIMEOUT)
                })
                .await;
        }
        if let Err(err) = result {
            return Err(self.abandon(err).await);
        }
        let in_flight = self.in_flight.take().expect("checked above");
        self.committed.extend(in_flight.offsets());
        self.count_transaction("committed");
        Ok(())
    }

    /// At least once: waits until Kafka acknowledged everything in flight, which is then
    /// applied.
    async fn settle(&mut self) -> Result<(), KafkaSinkError> {
        if self.in_flight.is_none() {
            return Ok(());
        }
        self.deliveries.settled().await;
        if let Err(err) = self.delivery_failure() {
            return Err(self.abandon(err).await);
        }
        let in_flight = self.in_flight.take().expect("checked above");
        self.committed.extend(in_flight.offsets());
        Ok(())
    }

    /// After a failure: aborts the open transaction.
    async fn abandon(&mut self, err: KafkaSinkError) -> KafkaSinkError {
        if self.in_flight.take().is_some() && self.transactional() {
            let _ = self
                .txn("aborting a transaction", |p| {
                    p.abort_transaction(super::TXN_TIMEOUT)
                })
                .await;
            self.count_transaction("aborted");
        }
        err
    }

    fn count_transaction(&self, outcome: &'static str) {
        metrics::counter!(metrics_names::KAFKA_TRANSACTIONS, "sink" => self.config.name.clone(), "result" => outcome)
            .increment(1);
    }

    /// Produces the round's records (but those the producer refuses as too large when there
    /// is a dead-letter topic: those go there); returns the bytes handed over. With Debezium forms, each chunk of records is rewritten on a
    /// blocking thread while the one before it is produced.
    async fn hand_over(
        &mut self,
        records: &[SinkRecord],
        to: Option<&[Destination]>,
        destinations: &Destinations,
    ) -> Result<usize, KafkaSinkError> {
        let mut bytes = 0;
        let mut letters: Vec<DeadLetter> = Vec::new();
        let chunks: Vec<Range<usize>> = (0..records.len())
            .step_by(REWRITE_CHUNK)
            .map(|start| start..(start + REWRITE_CHUNK).min(records.len()))
            .collect();
        // Transformed records hold their final values already.
        let mut rewriting = match (self.transcoder.take(), chunks.first()) {
            (Some(transcoder), Some(first)) if to.is_none() => {
                Some(rewrite(transcoder, &records[first.clone()]))
            }
            (transcoder, _) => {
                self.transcoder = transcoder;
                None
            }
        };
        let mut result = Ok(());
        'chunks: for (k, chunk) in chunks.iter().enumerate() {
            let rewritten = match rewriting.take() {
                Some(handle) => {
                    let (transcoder, rewritten) =
                        handle.await.expect("rewriting records does not panic");
                    match chunks.get(k + 1) {
                        Some(following) => {
                            rewriting = Some(rewrite(transcoder, &records[following.clone()]));
                        }
                        None => self.transcoder = Some(transcoder),
                    }
                    match rewritten {
                        Ok(rewritten) => Some(rewritten),
                        Err((index, reason)) => {
                            result = Err(KafkaSinkError::Transcode(DecodeError::at(
                                &records[chunk.start + index],
                                reason,
                            )));
                            break;
                        }
                    }
                }
                None => None,
            };
            for index in chunk.clone() {
                let at = &records[index];
                let record = &at.record;
                let in_flight = self.in_flight.as_mut().expect("set by produce_round");
                in_flight.advance(at);
                let topic = match to.map(|to| &to[index]) {
                    None => &at.topic,
                    Some(Destination::Topic(topic)) => topic,
                    Some(Destination::Dropped) => continue,
                };
                let produced_as = in_flight.produce_as(at);
                let value: Option<&[u8]> = match rewritten
                    .as_ref()
                    .and_then(|r| r.spans[index - chunk.start].clone())
                {
                    Some(span) => Some(&rewritten.as_ref().expect("a span").data[span]),
                    None => record.value.as_deref(),
                };
                let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
                for header in &record.headers {
                    headers = headers.insert(Header {
                        key: &header.key,
                        value: header.value.as_deref(),
                    });
                }
                let mut out = BaseRecord::with_opaque_to(destinations.topic(topic), produced_as)
                    .timestamp(record.timestamp_ms)
                    .headers(headers);
                let size =
                    record.key.as_ref().map_or(0, |k| k.len()) + value.map_or(0, <[u8]>::len);
                if let Some(key) = &record.key {
                    out = out.key(key.as_ref());
                }
                if let Some(value) = value {
                    out = out.payload(value);
                }
                match self.produce(out).await {
                    Ok(()) => bytes += size,
                    // (The producer's own refusal: nothing of it is in the transaction.)
                    Err(KafkaSinkError::TooLarge { size, .. }) if self.dead_letters.is_some() => {
                        tracing::warn!(
                            topic = %at.topic,
                            offset = record.offset,
                            size,
                            "Kafka refused a record as too large: to the dead-letter topic"
                        );
                        letters.push(DeadLetter {
                            record: at.clone(),
                            error: too_large_reason(size),
                        });
                    }
                    Err(err) => {
                        result = Err(err);
                        break 'chunks;
                    }
                }
            }
        }
        // A chunk still being rewritten hands the transcoder back.
        if let Some(handle) = rewriting.take() {
            let (transcoder, _) = handle.await.expect("rewriting records does not panic");
            self.transcoder = Some(transcoder);
        }
        result?;
        if !letters.is_empty() {
            // Durable before the commit that takes the offsets past them.
            let writer = self
                .dead_letters
                .as_ref()
                .expect("diverted only with a writer");
            writer(letters).await.map_err(KafkaSinkError::DeadLetter)?;
        }
        Ok(bytes)
    }

    /// Queues one record, waiting for room in the producer's queue when it is full; stops at
    /// the first failed delivery. A record the producer refuses as too large is named.
    async fn produce(
        &self,
        record: BaseRecord<'_, [u8], [u8], usize>,
    ) -> Result<(), KafkaSinkError> {
        let producer = self.producer.as_ref().expect("opened");
        let mut record = record;
        loop {
            self.deliveries.sending();
            match producer.send(record) {
                Ok(()) => return Ok(()),
                Err((error, back)) => {
                    self.deliveries.not_sent();
                    record = back;
                    match error {
                        KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull) => {
                            self.delivery_failure()?;
                            self.deliveries.next_report().await;
                        }
                        KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge) => {
                            let size = record.payload.map_or(0, <[u8]>::len)
                                + record.key.map_or(0, <[u8]>::len);
                            let key = record.key.map(|k| String::from_utf8_lossy(k).into_owned());
                            return Err(self.too_large(record.delivery_opaque, size, key));
                        }
                        source => {
                            return Err(match self.error("producing")(source) {
                                KafkaSinkError::Kafka {
                                    brokers, source, ..
                                } => KafkaSinkError::Topic {
                                    brokers,
                                    topic: record.topic.into(),
                                    source,
                                },
                                fenced => fenced,
                            })
                        }
                    }
                }
            }
        }
    }

    /// The first failed delivery since the last look, as the sink's error: a record a
    /// broker refused as too large is named.
    fn delivery_failure(&self) -> Result<(), KafkaSinkError> {
        match self.deliveries.take_failure() {
            None => Ok(()),
            Some(Failure {
                index,
                error,
                key,
                size,
                ..
            }) if error.rdkafka_error_code() == Some(RDKafkaErrorCode::MessageSizeTooLarge)
                && index != NO_INDEX =>
            {
                Err(self.too_large(index, size, key))
            }
            Some(Failure { error, topic, .. }) => Err(KafkaSinkError::Topic {
                brokers: self.config.brokers.clone(),
                topic: topic.into(),
                source: error,
            }),
        }
    }

    /// The record produced as `index` of what is in flight, refused as too large.
    fn too_large(&self, index: usize, size: usize, key: Option<String>) -> KafkaSinkError {
        let (topic, partition, offset) = self
            .in_flight
            .as_ref()
            .and_then(|in_flight| in_flight.position(index))
            .unwrap_or_default();
        KafkaSinkError::TooLarge {
            topic,
            partition,
            offset,
            size,
            key: key
                .map(|k| k.chars().take(200).collect())
                .unwrap_or_else(|| "none".into()),
        }
    }
}

fn too_large_reason(size: usize) -> String {
    format!(
        "Kafka refused the record ({size} bytes): larger than message.max.bytes (Broker: \
         Message size too large)"
    )
}
