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

/// Capped exponential backoff: 0.5 s, 1 s, 2 s … 30 s.
#[derive(Debug, Clone)]
pub struct Backoff {
    attempt: u32,
}

impl Backoff {
    pub const MAX: Duration = Duration::from_secs(30);

    pub fn new() -> Backoff {
        Backoff { attempt: 0 }
    }

    pub fn next_delay(&mut self) -> Duration {
        let delay = Duration::from_millis(500).saturating_mul(1 << self.attempt.min(6));
        self.attempt += 1;
        delay.min(Self::MAX)
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
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
    fn backoff_doubles_up_to_its_cap_and_resets() {
        let mut backoff = Backoff::new();
        let delays: Vec<u64> = (0..9)
            .map(|_| backoff.next_delay().as_millis() as u64)
            .collect();
        assert_eq!(
            delays,
            [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]
        );
        backoff.reset();
        assert_eq!(backoff.next_delay(), Duration::from_millis(500));
    }
}
