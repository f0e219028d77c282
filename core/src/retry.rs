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

/// What a database server's error code says, for every connector that talks to one: the one
/// table that decides retry or stop for Postgres SQLSTATEs ([`sqlstate_class`]) and MySQL or
/// MariaDB error numbers ([`mysql_errno_class`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerErrorClass {
    /// Connection trouble, shutdown, resource limits, lock timeouts, deadlocks and
    /// serialization failures: retry.
    Transient,
    /// The server refused a value (out of range, too long, constraint, duplicate key): the
    /// event is poison; retrying cannot help.
    Data,
    /// A table or column is missing (dropped under a sink, which recreates it on reopen).
    MissingObject,
    /// Credentials, privileges, or a database that does not exist: the user must act.
    Access,
    /// Anything else: a definite error.
    Other,
}

/// The class of a Postgres SQLSTATE.
pub fn sqlstate_class(code: &str) -> ServerErrorClass {
    match code {
        c if c.starts_with("08") || c.starts_with("53") || c.starts_with("57P") => {
            ServerErrorClass::Transient
        }
        // Serialization failure, deadlock, object in use (a slot held by a dying
        // connection), lock not available.
        "40001" | "40P01" | "55006" | "55P03" => ServerErrorClass::Transient,
        c if c.starts_with("22") || c.starts_with("23") => ServerErrorClass::Data,
        "42P01" | "42703" => ServerErrorClass::MissingObject,
        c if c.starts_with("28") => ServerErrorClass::Access,
        "3D000" | "42501" => ServerErrorClass::Access,
        _ => ServerErrorClass::Other,
    }
}

/// The class of a MySQL/MariaDB server error number.
pub fn mysql_errno_class(code: u16) -> ServerErrorClass {
    match code {
        // Lock wait timeout, deadlock, too many connections, shutdown in progress, server
        // gone or connection lost, network read/write errors, query interrupted.
        1205 | 1213 | 1040 | 1053 | 2006 | 2013 | 1152 | 1158..=1161 | 1317 => {
            ServerErrorClass::Transient
        }
        // Out of range, too long, wrong value, NULL in NOT NULL, bad date, check constraint
        // (MySQL 3819, MariaDB 4025), foreign key, duplicate key.
        1264 | 1406 | 1366 | 1048 | 1292 | 3819 | 4025 | 1451 | 1452 | 1062 | 1265 | 1367
        | 3140 => ServerErrorClass::Data,
        1146 | 1054 => ServerErrorClass::MissingObject,
        // Access denied (database, user, plugin), table or command denied, unknown database.
        1044 | 1045 | 1698 | 1142 | 1143 | 1227 | 1049 => ServerErrorClass::Access,
        _ => ServerErrorClass::Other,
    }
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
    fn server_errors_classify_the_same_for_every_connector() {
        use ServerErrorClass::*;
        for (code, class) in [
            ("08006", Transient),
            ("57P01", Transient),
            ("40P01", Transient),
            ("55006", Transient),
            ("23505", Data),
            ("22003", Data),
            ("42P01", MissingObject),
            ("28P01", Access),
            ("3D000", Access),
            ("42601", Other),
        ] {
            assert_eq!(sqlstate_class(code), class, "{code}");
        }
        for (code, class) in [
            (1213, Transient),
            (2013, Transient),
            (1062, Data),
            (4025, Data),
            (1146, MissingObject),
            (1045, Access),
            (1064, Other),
        ] {
            assert_eq!(mysql_errno_class(code), class, "{code}");
        }
    }

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
