//! Time: the one place veto reads the wall clock, and the conversions between the
//! `Duration`s of the config and the Unix seconds that tokens and rules carry.
//!
//! Everything else takes `now` as an argument (a Check, the snapshot writer's expiry), so
//! a test sets the time instead of waiting for it. `clippy.toml` refuses
//! `SystemTime::now` anywhere but here. Monotonic time (`Instant`, tokio's timers) is not
//! the wall clock: it measures how long something took and stays where it is used.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch: the unit of `exp`, `nbf` and `iat` (RFC 7519 §2,
/// NumericDate) and of every time a rule holds.
pub type UnixTime = i64;

/// The current time as Unix seconds (0 for a clock set before 1970).
#[allow(clippy::disallowed_methods)] // the one place the wall clock is read
pub fn unix_now() -> UnixTime {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, seconds)
}

/// The current time as Unix milliseconds, for `"issued_before": "now"`, which rounds up
/// to the next second (SPEC §5).
#[allow(clippy::disallowed_methods)] // the one place the wall clock is read
pub fn unix_now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// `d` in whole seconds, as a time difference in [`UnixTime`] arithmetic. Saturates: a
/// duration past `i64::MAX` seconds (no config can mean one) stays the largest.
pub fn seconds(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// How long from `now` until `at`: zero when `at` has passed.
pub fn until(at: UnixTime, now: UnixTime) -> Duration {
    Duration::from_secs(u64::try_from(at.saturating_sub(now)).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_saturate_instead_of_wrapping() {
        assert_eq!(seconds(Duration::from_millis(1999)), 1);
        assert_eq!(seconds(Duration::MAX), i64::MAX);
    }

    #[test]
    fn a_time_in_the_past_is_no_wait() {
        assert_eq!(until(100, 40), Duration::from_secs(60));
        assert_eq!(until(40, 100), Duration::ZERO);
        assert_eq!(until(i64::MIN, i64::MAX), Duration::ZERO);
    }
}
