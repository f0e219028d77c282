//! Wall-clock time as events carry it: microseconds since the Unix epoch.

/// Now, in microseconds since the Unix epoch (0 if the clock is before it).
pub fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}
