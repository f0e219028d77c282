//! Delivery reports without a future per record: librdkafka's callback counts the records in
//! flight down and keeps the first failure with the record's index in its batch.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{DeliveryResult, ProducerContext, ThreadedProducer};

/// The sink's producer: delivery reports go to its [`Deliveries`].
pub(super) type SinkProducer = ThreadedProducer<SinkContext>;

/// The index (in its batch) a record is produced with; the offsets records have none.
pub(super) const NO_INDEX: usize = usize::MAX;

/// A record Kafka did not take.
pub(super) struct Failure {
    /// The index it was produced with.
    pub(super) index: usize,
    pub(super) error: KafkaError,
    /// The Kafka topic it was for.
    pub(super) topic: String,
    /// Its key as text, and its size in bytes (key and value).
    pub(super) key: Option<String>,
    pub(super) size: usize,
}

/// The records in flight and the first that failed.
#[derive(Default)]
pub(super) struct Deliveries {
    in_flight: AtomicUsize,
    failed: Mutex<Option<Failure>>,
    reported: tokio::sync::Notify,
}

impl Deliveries {
    /// Counts a record about to be handed to the producer (before, so its report cannot
    /// come first); [`Deliveries::not_sent`] takes it back.
    pub(super) fn sending(&self) {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
    }

    pub(super) fn not_sent(&self) {
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
    }

    pub(super) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// The first failure reported since the last call, with the record's index.
    pub(super) fn take_failure(&self) -> Option<Failure> {
        self.failed.lock().expect("not poisoned").take()
    }

    /// Returns after a report came in (or a short while, to look again).
    pub(super) async fn next_report(&self) {
        let _ = tokio::time::timeout(Duration::from_millis(100), self.reported.notified()).await;
    }

    /// Waits until every record handed over was reported.
    pub(super) async fn settled(&self) {
        while self.in_flight() > 0 {
            self.next_report().await;
        }
    }
}

/// The producer's context: librdkafka's logs through tracing, delivery reports into
/// [`Deliveries`].
pub(super) struct SinkContext(pub(super) Arc<Deliveries>);

impl ClientContext for SinkContext {}

impl ProducerContext for SinkContext {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, index: usize) {
        if let Err((error, message)) = result {
            let mut failed = self.0.failed.lock().expect("not poisoned");
            if failed.is_none() {
                *failed = Some(Failure {
                    index,
                    error: error.clone(),
                    topic: message.topic().to_owned(),
                    key: message
                        .key()
                        .map(|k| String::from_utf8_lossy(&k[..k.len().min(200)]).into_owned()),
                    size: message.key_len() + message.payload_len(),
                });
            }
        }
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.0.reported.notify_one();
    }
}
