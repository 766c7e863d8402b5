//! Timestamps in the shapes the contract uses.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// RFC 3339 in UTC with millisecond precision, e.g. `2026-11-27T10:15:05.312Z`.
pub fn rfc3339_millis(at: SystemTime) -> String {
    let dt = OffsetDateTime::from(at);
    let ms = dt.millisecond();
    // Truncate to milliseconds so every timestamp has the same, readable shape.
    let dt = dt
        .replace_nanosecond(u32::from(ms) * 1_000_000)
        .unwrap_or(dt);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        dt.year(),
        u8::from(dt.month()),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second(),
        ms
    )
}

/// [`rfc3339_millis`] of a Unix millisecond time.
pub fn rfc3339_millis_of_unix_ms(ms: u64) -> String {
    rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms))
}

/// The longest wait ever computed from input (a parked record's due time, a `Retry-After`):
/// far beyond any schedule, and small enough that adding it to a clock cannot overflow.
pub const MAX_WAIT: Duration = Duration::from_secs(30 * 24 * 3600);

/// `wait`, at most [`MAX_WAIT`].
pub fn bounded(wait: Duration) -> Duration {
    wait.min(MAX_WAIT)
}

/// `at + delay`, with the delay bounded by [`MAX_WAIT`]: never overflows.
pub fn after(at: SystemTime, delay: Duration) -> SystemTime {
    at.checked_add(bounded(delay)).unwrap_or(at)
}

/// Milliseconds since the Unix epoch (0 before it): the one millisecond clock of the
/// project (outcome times, due times, the delivery log's windows, the watchdog).
pub fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Now, in milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    unix_ms(SystemTime::now())
}

/// Unix seconds, as sent in `webhook-timestamp`.
pub fn unix_seconds(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Parses an RFC 3339 timestamp (used for config `updatedAt` checks and CLI windows).
pub fn parse_rfc3339(text: &str) -> Option<SystemTime> {
    OffsetDateTime::parse(text, &Rfc3339)
        .ok()
        .map(SystemTime::from)
}

#[cfg(test)]
mod bound_tests {
    use super::*;

    #[test]
    fn waits_from_input_are_bounded_and_never_overflow() {
        let now = SystemTime::now();
        assert_eq!(bounded(Duration::from_secs(5)), Duration::from_secs(5));
        assert_eq!(bounded(Duration::MAX), MAX_WAIT);
        assert_eq!(after(now, Duration::MAX), now + MAX_WAIT);
        let _ = tokio::time::Instant::now() + bounded(Duration::from_millis(u64::MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn formats_utc_with_millis() {
        let at = UNIX_EPOCH + Duration::from_millis(1_795_774_505_312);
        assert_eq!(rfc3339_millis(at), "2026-11-27T10:15:05.312Z");
        assert_eq!(unix_seconds(at), 1_795_774_505);
    }

    #[test]
    fn parses_rfc3339() {
        let at = parse_rfc3339("2026-11-27T10:15:05.312Z").unwrap();
        assert_eq!(rfc3339_millis(at), "2026-11-27T10:15:05.312Z");
        assert!(parse_rfc3339("yesterday").is_none());
    }
}
