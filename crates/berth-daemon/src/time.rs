//! Time as Docker's API writes and reads it: RFC 3339 with nanoseconds, unix `sec.nsec`
//! timestamps in query parameters, and the human durations of `docker ps`.

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};

/// Docker's zero time, used for `StartedAt`/`FinishedAt` before they happen.
pub const ZERO: &str = "0001-01-01T00:00:00Z";

/// Now, in unix nanoseconds.
pub fn now_nanos() -> i64 {
    Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX)
}

/// Now, as RFC 3339 with nanoseconds (`2024-05-01T10:00:00.123456789Z`).
pub fn now_rfc3339() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Nanos, true)
}

/// Parses an RFC 3339 timestamp into unix nanoseconds; Docker's zero time gives `None`.
pub fn parse_rfc3339_nanos(s: &str) -> Option<i64> {
    if s.is_empty() || s == ZERO {
        return None;
    }
    DateTime::parse_from_rfc3339(s)
        .ok()
        .and_then(|t| t.timestamp_nanos_opt())
}

/// Formats unix nanoseconds as Docker's fixed-width RFC 3339 (`...05.000000000Z`).
pub fn format_nanos_fixed(nanos: i64) -> String {
    let t = Utc.timestamp_nanos(nanos);
    t.format("%Y-%m-%dT%H:%M:%S%.9fZ").to_string()
}

/// Parses a `since`/`until` query value: unix seconds with an optional `.nanoseconds`
/// fraction (what clients send), or RFC 3339. Returns unix nanoseconds.
pub fn parse_timestamp(s: &str) -> Option<i64> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    if let Some(n) = parse_rfc3339_nanos(s) {
        return Some(n);
    }
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: i64 = secs.parse().ok()?;
    let mut nanos: i64 = 0;
    if !frac.is_empty() {
        if frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        nanos = format!("{frac:0<9}").parse().ok()?;
    }
    secs.checked_mul(1_000_000_000)?.checked_add(nanos)
}

/// Docker's `units.HumanDuration`: "Less than a second", "About a minute", "3 hours", ...
pub fn human_duration(secs: i64) -> String {
    let secs = secs.max(0);
    let minutes = secs / 60;
    let hours = secs / 3600;
    match () {
        _ if secs < 1 => "Less than a second".into(),
        _ if secs == 1 => "1 second".into(),
        _ if secs < 60 => format!("{secs} seconds"),
        _ if minutes == 1 => "About a minute".into(),
        _ if minutes < 60 => format!("{minutes} minutes"),
        _ if hours == 1 => "About an hour".into(),
        _ if hours < 48 => format!("{hours} hours"),
        _ if hours < 24 * 7 * 2 => format!("{} days", hours / 24),
        _ if hours < 24 * 30 * 2 => format!("{} weeks", hours / 24 / 7),
        _ if hours < 24 * 365 * 2 => format!("{} months", hours / 24 / 30),
        _ => format!("{} years", hours / 24 / 365),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(parse_timestamp("10"), Some(10_000_000_000));
        assert_eq!(parse_timestamp("10.5"), Some(10_500_000_000));
        assert_eq!(parse_timestamp("10.000000001"), Some(10_000_000_001));
        assert_eq!(
            parse_timestamp("1970-01-01T00:00:10.5Z"),
            Some(10_500_000_000)
        );
        assert_eq!(parse_timestamp("x"), None);
        assert_eq!(
            format_nanos_fixed(10_500_000_000),
            "1970-01-01T00:00:10.500000000Z"
        );
        assert_eq!(human_duration(0), "Less than a second");
        assert_eq!(human_duration(75), "About a minute");
        assert_eq!(human_duration(7200), "2 hours");
        assert_eq!(human_duration(3 * 86400), "3 days");
    }
}
