//! Go's duration syntax (`time.ParseDuration`): what Dockerfile flags (`HEALTHCHECK
//! --interval=30s`) and the docker CLI's duration arguments (`--since 10m`) are written in.

/// Parses a Go duration (`0`, `30s`, `1h30m`, `1.5s`, `250ms`, `-2m`) into nanoseconds;
/// `None` if it is not one (no unit, an unknown unit, or beyond `i64` nanoseconds).
pub fn go_duration(s: &str) -> Option<i64> {
    let (negative, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    // Go accepts a bare zero, and nothing else, without a unit.
    if rest == "0" {
        return Some(0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number = &rest[..number_end];
        // `f64::from_str` also takes `inf`, `1e3` and the like; Go takes digits and one dot.
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return None;
        }
        let value: f64 = number.parse().ok()?;
        rest = &rest[number_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let nanos_per_unit = match &rest[..unit_end] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        total += value * nanos_per_unit;
        rest = &rest[unit_end..];
    }
    if total > i64::MAX as f64 {
        return None;
    }
    let nanos = total.round() as i64;
    Some(if negative { -nanos } else { nanos })
}

#[cfg(test)]
mod tests {
    use super::go_duration;

    #[test]
    fn go_syntax() {
        assert_eq!(go_duration("0"), Some(0));
        assert_eq!(go_duration("30s"), Some(30_000_000_000));
        assert_eq!(go_duration("1h30m"), Some(5_400_000_000_000));
        assert_eq!(go_duration("1.5s"), Some(1_500_000_000));
        assert_eq!(go_duration(".5s"), Some(500_000_000));
        assert_eq!(go_duration("250ms"), Some(250_000_000));
        assert_eq!(go_duration("1m0.5s"), Some(60_500_000_000));
        assert_eq!(go_duration("3us"), Some(3_000));
        assert_eq!(go_duration("3µs"), Some(3_000));
        assert_eq!(go_duration("-2m"), Some(-120_000_000_000));
        assert_eq!(go_duration("+7ns"), Some(7));
        for bad in [
            "", "x", "10", "s", "5 s", "1d", ".s", "1..5s", "1e3s", "inf", "-", " 5s", "3000000h",
        ] {
            assert_eq!(go_duration(bad), None, "{bad:?}");
        }
    }
}
