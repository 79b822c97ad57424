//! Container health checks (`HEALTHCHECK`, `Config.Healthcheck`), as dockerd runs them.
//!
//! Each run of a container with a health check gets one checker task. It probes by running
//! the test as an exec instance inside the container (the daemon's ordinary exec path, so
//! probes show up as `exec_*` events as in dockerd), keeps the last five results and the
//! failing streak in the container's persisted `State.Health`, and publishes a
//! `health_status: <status>` event on every status change.
//!
//! A checker belongs to one run, identified by the container init's PID: it ends by itself
//! once the container is no longer running that PID (stop, exit, restart), so nothing has to
//! cancel it. Starting (or re-adopting after a daemon restart) spawns a new one.

use std::sync::Arc;
use std::time::Duration;

use bollard_stubs::models::HealthConfig;
use serde::{Deserialize, Serialize};

use crate::daemon::Daemon;
use crate::error::{Error, Result};
use crate::exec::ExecConfig;
use crate::time;

/// dockerd's defaults.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_START_INTERVAL: Duration = Duration::from_secs(5);
const DEFAULT_RETRIES: i64 = 3;
/// Results kept in `State.Health.Log`.
const MAX_LOG_ENTRIES: usize = 5;
/// Bytes of probe output kept per result.
const MAX_OUTPUT: usize = 4096;

/// `State.Health` of a container.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Health {
    /// `starting`, `healthy` or `unhealthy`.
    pub status: String,
    /// Consecutive failed probes.
    pub failing_streak: i64,
    /// The most recent results, oldest first.
    pub log: Vec<HealthResult>,
}

/// One probe's result.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthResult {
    /// When the probe started (RFC 3339).
    pub start: String,
    /// When it ended.
    pub end: String,
    /// 0 healthy, anything else a failure; -1 when it could not run or timed out.
    pub exit_code: i64,
    /// The first 4 KiB of its stdout and stderr.
    pub output: String,
}

/// `starting`.
pub const STARTING: &str = "starting";
/// `healthy`.
pub const HEALTHY: &str = "healthy";
/// `unhealthy`.
pub const UNHEALTHY: &str = "unhealthy";

/// The `health` filter's name for a container's state: `none` without a health check.
pub fn filter_status(health: Option<&Health>) -> &str {
    health.map_or("none", |h| h.status.as_str())
}

/// Checks a create request's health config as dockerd does (durations of zero mean the
/// default; anything else must be at least a millisecond).
pub fn validate(hc: Option<&HealthConfig>) -> Result<()> {
    let Some(hc) = hc else {
        return Ok(());
    };
    const MIN: i64 = 1_000_000;
    for (name, v) in [
        ("Interval", hc.interval),
        ("Timeout", hc.timeout),
        ("StartPeriod", hc.start_period),
        ("StartInterval", hc.start_interval),
    ] {
        if v.is_some_and(|v| v != 0 && v < MIN) {
            return Err(Error::InvalidParameter(format!(
                "{name} in Healthcheck cannot be less than 1ms"
            )));
        }
    }
    if hc.retries.is_some_and(|r| r < 0) {
        return Err(Error::InvalidParameter(
            "Retries in Healthcheck cannot be negative".into(),
        ));
    }
    Ok(())
}

/// A health config with dockerd's defaults filled in.
#[derive(Debug, Clone, PartialEq)]
struct Probe {
    cmd: Vec<String>,
    interval: Duration,
    timeout: Duration,
    start_period: Duration,
    start_interval: Duration,
    retries: i64,
}

fn nanos(v: Option<i64>, default: Duration) -> Duration {
    match v {
        Some(n) if n > 0 => Duration::from_nanos(n.unsigned_abs()),
        _ => default,
    }
}

/// The probe a config describes; `None` without a test or for `["NONE"]`.
fn probe(hc: Option<&HealthConfig>, shell: Option<&[String]>) -> Option<Probe> {
    let hc = hc?;
    let test = hc.test.as_deref()?;
    let cmd = match test.split_first()? {
        (kind, args) if kind == "CMD" && !args.is_empty() => args.to_vec(),
        (kind, args) if kind == "CMD-SHELL" && !args.is_empty() => {
            let mut cmd = shell
                .filter(|s| !s.is_empty())
                .map_or_else(|| vec!["/bin/sh".into(), "-c".into()], <[String]>::to_vec);
            cmd.push(args.join(" "));
            cmd
        }
        _ => return None,
    };
    Some(Probe {
        cmd,
        interval: nanos(hc.interval, DEFAULT_INTERVAL),
        timeout: nanos(hc.timeout, DEFAULT_TIMEOUT),
        start_period: nanos(hc.start_period, Duration::ZERO),
        start_interval: nanos(hc.start_interval, DEFAULT_START_INTERVAL),
        retries: hc.retries.filter(|&r| r > 0).unwrap_or(DEFAULT_RETRIES),
    })
}

/// Go's rendering of a duration, as dockerd puts it in the timeout message (`30s`, `1.5s`,
/// `500ms`).
fn go_duration(d: Duration) -> String {
    if d.as_secs() >= 1 || d.is_zero() {
        let s = format!("{:.9}", d.as_secs_f64());
        let s = s.trim_end_matches('0').trim_end_matches('.');
        format!("{s}s")
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// Keeps the first [`MAX_OUTPUT`] bytes, cut at a character boundary.
fn truncate_output(mut s: String) -> String {
    if s.len() > MAX_OUTPUT {
        let mut end = MAX_OUTPUT;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// Folds a result into the health state (dockerd's `handleProbeResult`). `in_start_period`:
/// the probe started within the start period, where failures of a starting container do not
/// count.
fn apply_result(h: &mut Health, result: HealthResult, retries: i64, in_start_period: bool) {
    if h.log.len() >= MAX_LOG_ENTRIES {
        h.log.drain(..=h.log.len() - MAX_LOG_ENTRIES);
    }
    let ok = result.exit_code == 0;
    h.log.push(result);
    if ok {
        h.failing_streak = 0;
        h.status = HEALTHY.into();
    } else if !(h.status == STARTING && in_start_period) {
        h.failing_streak += 1;
        if h.failing_streak >= retries {
            h.status = UNHEALTHY.into();
        }
    }
}

impl Daemon {
    /// Starts the health checker of container `id`'s current run, if it has a health check:
    /// its status becomes `starting` (its log is kept). Called when a run starts and when a
    /// running container is re-adopted.
    pub fn start_health_checks(self: &Arc<Self>, id: &str) {
        let Ok(record) = self.containers.get(id) else {
            return;
        };
        let Some(probe) = probe(
            record.config.healthcheck.as_ref(),
            record.config.shell.as_deref(),
        ) else {
            return;
        };
        if !record.state.running {
            return;
        }
        let pid = record.state.pid;
        let started = time::parse_rfc3339_nanos(&record.state.started_at).unwrap_or(0);
        let _ = self.containers.update(&record.id, |r| {
            let h = r.state.health.get_or_insert_with(Health::default);
            h.status = STARTING.into();
            h.failing_streak = 0;
            Ok(())
        });
        let d = Arc::clone(self);
        let id = record.id.clone();
        tokio::spawn(async move {
            d.health_loop(&id, pid, started, &probe).await;
        });
    }

    /// Whether container `id` still runs the process `pid` (the checker's run).
    fn same_run(&self, id: &str, pid: i64) -> bool {
        self.containers
            .get(id)
            .is_ok_and(|r| r.state.running && !r.state.restarting && r.state.pid == pid)
    }

    async fn health_loop(self: &Arc<Self>, id: &str, pid: i64, started: i64, probe: &Probe) {
        let start_period = i64::try_from(probe.start_period.as_nanos()).unwrap_or(i64::MAX);
        let in_start_period = |at: i64| at.saturating_sub(started) < start_period;
        loop {
            let starting = self.containers.get(id).is_ok_and(|r| {
                r.state
                    .health
                    .as_ref()
                    .is_some_and(|h| h.status == STARTING)
            });
            let interval = if starting && in_start_period(time::now_nanos()) {
                probe.start_interval
            } else {
                probe.interval
            };
            tokio::time::sleep(interval).await;
            if !self.same_run(id, pid) {
                return;
            }
            // A frozen container cannot answer; dockerd skips the probe too.
            if self.containers.get(id).is_ok_and(|r| r.state.paused) {
                continue;
            }
            let begun = time::now_nanos();
            let result = self.run_probe(id, probe).await;
            // The run ended while probing (a stop kills the probe with the container, before
            // the exit is recorded): its result says nothing about the container's health.
            if !self.same_run(id, pid) || !crate::daemon::pid_alive(pid) {
                return;
            }
            let changed = self.containers.update(id, |r| {
                let h = r.state.health.get_or_insert_with(Health::default);
                let before = h.status.clone();
                apply_result(h, result, probe.retries, in_start_period(begun));
                Ok((before != h.status).then(|| h.status.clone()))
            });
            if let Ok((record, Some(status))) = changed {
                self.container_event(&format!("health_status: {status}"), &record, &[]);
            }
        }
    }

    /// Runs one probe as an exec instance and collects its result.
    async fn run_probe(self: &Arc<Self>, id: &str, probe: &Probe) -> HealthResult {
        let start = time::now_rfc3339();
        let (code, output) = match self.exec_probe(id, probe).await {
            Ok(r) => r,
            Err(err) => (-1, err.to_string()),
        };
        HealthResult {
            start,
            end: time::now_rfc3339(),
            exit_code: code,
            output: truncate_output(output),
        }
    }

    async fn exec_probe(self: &Arc<Self>, id: &str, probe: &Probe) -> Result<(i64, String)> {
        let config = ExecConfig {
            attach_stdout: true,
            attach_stderr: true,
            cmd: Some(probe.cmd.clone()),
            ..Default::default()
        };
        let exec_id = self.create_exec(id, config)?;
        let (_, mut events) = self.events.subscribe();
        let outcome = async {
            let exec = self.start_exec(&exec_id).await?;
            let finished = self
                .wait_exec(&exec_id, &mut events, Some(probe.timeout))
                .await;
            if !finished {
                // Kill it and wait for its end, so that hung probes do not pile up.
                // Never 0 or negative: kill(2) would signal a whole process group.
                if let Some(pid) = i32::try_from(exec.pid).ok().filter(|&p| p > 0) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                self.wait_exec(&exec_id, &mut events, Some(Duration::from_secs(10)))
                    .await;
                let out = self.exec_output(&exec_id);
                let msg = format!(
                    "Health check exceeded timeout ({})",
                    go_duration(probe.timeout)
                );
                let msg = if out.is_empty() {
                    msg
                } else {
                    format!("{msg}: {out}")
                };
                return Ok((-1, msg));
            }
            let code = self.execs.get(&exec_id)?.exit_code.unwrap_or(-1);
            Ok((code, self.exec_output(&exec_id)))
        }
        .await;
        self.execs.forget(&exec_id);
        let dir = self.exec_paths(&exec_id).dir;
        if let Err(err) = std::fs::remove_dir_all(&dir) {
            tracing::debug!(dir = %dir.display(), %err, "cannot remove health probe files");
        }
        outcome
    }

    /// Waits until exec `id` has been recorded as ended; `false` on timeout.
    async fn wait_exec(
        &self,
        id: &str,
        events: &mut tokio::sync::broadcast::Receiver<Arc<crate::events::Event>>,
        timeout: Option<Duration>,
    ) -> bool {
        crate::events::until(events, timeout, || {
            self.execs.get(id).map_or(true, |e| e.exit_code.is_some())
        })
        .await
    }

    /// The stdout and stderr an exec wrote to its json-file log, in order.
    fn exec_output(&self, id: &str) -> String {
        let text = std::fs::read_to_string(self.exec_paths(id).log).unwrap_or_default();
        let mut out = String::new();
        for line in text.lines() {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
                out.push_str(v["log"].as_str().unwrap_or(""));
            }
            if out.len() > MAX_OUTPUT {
                break;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hc(json: &str) -> HealthConfig {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn probes_and_defaults() {
        let p = probe(Some(&hc(r#"{"Test":["CMD-SHELL","echo hi"]}"#)), None).unwrap();
        assert_eq!(p.cmd, ["/bin/sh", "-c", "echo hi"]);
        assert_eq!(p.interval, DEFAULT_INTERVAL);
        assert_eq!(p.timeout, DEFAULT_TIMEOUT);
        assert_eq!(p.retries, 3);
        let shell = ["/bin/bash".to_string(), "-c".to_string()];
        let p = probe(Some(&hc(r#"{"Test":["CMD-SHELL","x"]}"#)), Some(&shell)).unwrap();
        assert_eq!(p.cmd, ["/bin/bash", "-c", "x"]);
        let p = probe(
            Some(&hc(
                r#"{"Test":["CMD","true"],"Interval":1000000000,"Retries":1,"StartPeriod":3000000000}"#,
            )),
            None,
        )
        .unwrap();
        assert_eq!(p.cmd, ["true"]);
        assert_eq!(p.interval, Duration::from_secs(1));
        assert_eq!(p.start_period, Duration::from_secs(3));
        assert_eq!(p.retries, 1);
        assert!(probe(Some(&hc(r#"{"Test":["NONE"]}"#)), None).is_none());
        assert!(probe(Some(&hc(r#"{"Test":[]}"#)), None).is_none());
        assert!(probe(None, None).is_none());
    }

    #[test]
    fn results_fold_like_dockerd() {
        let r = |code| HealthResult {
            exit_code: code,
            ..Default::default()
        };
        let mut h = Health {
            status: STARTING.into(),
            ..Default::default()
        };
        // Failures in the start period do not count while starting.
        apply_result(&mut h, r(1), 2, true);
        assert_eq!((h.status.as_str(), h.failing_streak), (STARTING, 0));
        apply_result(&mut h, r(1), 2, false);
        assert_eq!((h.status.as_str(), h.failing_streak), (STARTING, 1));
        apply_result(&mut h, r(1), 2, false);
        assert_eq!((h.status.as_str(), h.failing_streak), (UNHEALTHY, 2));
        apply_result(&mut h, r(0), 2, false);
        assert_eq!((h.status.as_str(), h.failing_streak), (HEALTHY, 0));
        for _ in 0..10 {
            apply_result(&mut h, r(0), 2, false);
        }
        assert_eq!(h.log.len(), MAX_LOG_ENTRIES);
        assert_eq!(filter_status(Some(&h)), HEALTHY);
        assert_eq!(filter_status(None), "none");
    }

    #[test]
    fn validation() {
        assert!(validate(Some(&hc(r#"{"Interval":0,"Retries":0}"#))).is_ok());
        let err = validate(Some(&hc(r#"{"Timeout":1000}"#))).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Timeout in Healthcheck cannot be less than 1ms"
        );
        assert!(validate(Some(&hc(r#"{"Retries":-1}"#))).is_err());
        assert!(validate(None).is_ok());
    }

    #[test]
    fn output_and_durations() {
        assert_eq!(truncate_output("é".repeat(3000)).len(), 4096);
        assert_eq!(go_duration(Duration::from_secs(30)), "30s");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(go_duration(Duration::from_millis(500)), "500ms");
    }
}
