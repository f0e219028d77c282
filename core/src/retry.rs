//! The one place that maps error kinds to retry policy.
//!
//! Connectors classify their errors where they arise ([`Classify`]); the runtime retries
//! transient ones with capped exponential backoff and stops the pipeline on definite ones.

use std::time::Duration;

/// How an error should be handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The server went away, a timeout, a lost connection: reconnect and resume from the last
    /// durable position.
    Transient,
    /// Retrying will not help: the user must change something. Stop and say what.
    Definite,
}

pub trait Classify {
    fn kind(&self) -> ErrorKind;
}

/// Capped exponential backoff with jitter (backon's): the n-th delay is drawn from
/// `[d, 2d)` where d is 0.5 s, 1 s, 2 s … up to 20 s. The jitter keeps many connectors (or many
/// sluice processes) that lost one server from reconnecting in lockstep.
#[derive(Debug)]
pub struct Backoff {
    delays: backon::ExponentialBackoff,
    attempt: u32,
}

impl Backoff {
    /// The longest delay before jitter.
    pub const MAX: Duration = Duration::from_secs(20);
    const FIRST: Duration = Duration::from_millis(500);

    pub fn new() -> Backoff {
        use backon::BackoffBuilder;
        Backoff {
            delays: backon::ExponentialBuilder::default()
                .with_min_delay(Self::FIRST)
                .with_max_delay(Self::MAX)
                .with_factor(2.0)
                .with_jitter()
                .without_max_times()
                .build(),
            attempt: 0,
        }
    }

    pub fn next_delay(&mut self) -> Duration {
        self.attempt += 1;
        self.delays.next().unwrap_or(Self::MAX)
    }

    pub fn reset(&mut self) {
        *self = Backoff::new();
    }

    pub fn attempts(&self) -> u32 {
        self.attempt
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap_with_jitter_and_resets() {
        let mut backoff = Backoff::new();
        let delays: Vec<Duration> = (0..9).map(|_| backoff.next_delay()).collect();
        let floors = [500u64, 1000, 2000, 4000, 8000, 16000, 20000, 20000, 20000];
        for (delay, floor) in delays.iter().zip(floors) {
            let floor = Duration::from_millis(floor);
            assert!(
                *delay >= floor && *delay < floor * 2,
                "{delay:?} not in [{floor:?}, 2×)"
            );
        }
        // At the cap only the jitter varies the delay.
        assert!(
            delays[6..].windows(2).any(|w| w[0] != w[1]),
            "jittered: {delays:?}"
        );
        assert_eq!(backoff.attempts(), 9);
        backoff.reset();
        assert!(backoff.next_delay() < Duration::from_secs(1));
    }
}
