//! One function per command. Each prints what the docker CLI prints for the same command
//! and returns the exit code.

mod build;
mod containers;
mod fs;
mod images;
mod network;
mod registry;
mod run;
mod stats;
mod system;
mod volume;

pub use build::{build, BuildArgs};
pub use containers::{container_prune, inspect, logs, ps, rename, rm};
pub use containers::{InspectArgs, LogsArgs, PruneArgs, PsArgs, RmArgs};
pub use fs::{commit, cp, diff, export, CommitArgs, CpArgs};
pub use images::{history, images, import, load, prune as image_prune, rmi, save, tag, ImagesArgs};
pub use network::{network, NetworkCommand};
pub use registry::{login, logout, pull, push, LoginArgs, PullArgs, PushArgs};
pub use run::{
    create, exec, kill, pause, restart, run, start, stop, top, wait, CreateArgs, ExecArgs, RunArgs,
    StopArgs,
};
pub use stats::{stats, update, StatsArgs, UpdateArgs};
pub use system::{df, events, info, version, EventsArgs};
pub use volume::{volume, VolumeCommand};

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};

/// Turns `--filter key=value` flags into the API's `filters` JSON.
pub(crate) fn filters_json(flags: &[String]) -> Result<String> {
    let mut map: serde_json::Map<String, serde_json::Value> = serde_json::Map::new();
    for f in flags {
        let Some((k, v)) = f.split_once('=') else {
            bail!("bad format of filter (expected name=value): {f}");
        };
        let entry = map
            .entry(k.trim().to_lowercase())
            .or_insert_with(|| serde_json::json!({}));
        entry[v] = serde_json::Value::Bool(true);
    }
    Ok(serde_json::Value::Object(map).to_string())
}

/// Converts a `--since`/`--until` value (a Go duration such as `10m` or `1h30m` before now,
/// an RFC 3339 time, a `YYYY-MM-DD` date, or a unix timestamp) into the API's `sec.nanos`.
pub(crate) fn api_timestamp(value: &str) -> Result<String> {
    if value.bytes().all(|b| b.is_ascii_digit() || b == b'.') && !value.is_empty() {
        return Ok(value.to_string());
    }
    let nanos = if let Some(d) = berth_builder::go_duration(value) {
        Utc::now()
            .timestamp_nanos_opt()
            .context("time out of range")?
            - d
    } else if let Ok(t) = DateTime::parse_from_rfc3339(value) {
        t.timestamp_nanos_opt().context("time out of range")?
    } else if let Ok(d) = chrono::NaiveDate::parse_from_str(value, "%Y-%m-%d") {
        d.and_hms_opt(0, 0, 0)
            .and_then(|t| t.and_utc().timestamp_nanos_opt())
            .context("time out of range")?
    } else {
        bail!("invalid time value {value:?}: expected a duration (10m), an RFC 3339 time or a unix timestamp");
    };
    Ok(format!(
        "{}.{:09}",
        nanos.div_euclid(1_000_000_000),
        nanos.rem_euclid(1_000_000_000)
    ))
}

/// Docker's decimal human sizes: `0B`, `1.23kB`, `45.6MB`.
pub(crate) fn human_size(bytes: f64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let mut size = bytes;
    let mut unit = 0;
    while size >= 1000.0 && unit < UNITS.len() - 1 {
        size /= 1000.0;
        unit += 1;
    }
    // Three significant digits, as Go's %.3g prints them, without trailing zeros.
    let digits = match size {
        s if s >= 100.0 || unit == 0 => 0,
        s if s >= 10.0 => 1,
        _ => 2,
    };
    let s = format!("{size:.digits$}");
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        &s
    };
    format!("{s}{}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers() {
        assert_eq!(
            filters_json(&["status=exited".into(), "status=created".into()]).unwrap(),
            r#"{"status":{"created":true,"exited":true}}"#
        );
        assert!(filters_json(&["nope".into()]).is_err());
        assert_eq!(api_timestamp("12.5").unwrap(), "12.5");
        assert_eq!(
            api_timestamp("1970-01-01T00:00:10Z").unwrap(),
            "10.000000000"
        );
        assert!(api_timestamp("yesterday").is_err());
        assert_eq!(human_size(0.0), "0B");
        assert_eq!(human_size(1234.0), "1.23kB");
        assert_eq!(human_size(45_600_000.0), "45.6MB");
        assert_eq!(human_size(100_000.0), "100kB");
    }
}
