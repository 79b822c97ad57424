//! `docker stats`, `docker update` and health checks against a real daemon with real
//! containers: the stats document's numbers, streaming with `precpu_stats`, limits applied to
//! the live cgroup (and kept across a restart), the OOM killer honouring an updated limit, and
//! health checks turning healthy or unhealthy with their events.

mod daemon_common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use daemon_common::{import_busybox, ok, Daemon, DOCKER};
use serde_json::Value;

fn have_tools() -> bool {
    let ok = std::path::Path::new(DOCKER).exists() && std::path::Path::new("/bin/busybox").exists();
    if !ok {
        eprintln!("skipping: docker CLI or busybox-static missing");
    }
    ok
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

/// A control file of the container's cgroup for `controller` (v1) or the unified one (v2).
fn cgroup_file(d: &Daemon, name: &str, controller: &str, file: &str) -> PathBuf {
    let pid = ok(d.docker(&["inspect", "-f", "{{.State.Pid}}", name]));
    let cgroups = std::fs::read_to_string(format!("/proc/{}/cgroup", pid.trim())).unwrap();
    for line in cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, ctrls, path) = (parts.next(), parts.next().unwrap_or(""), parts.next());
        let path = path.unwrap_or("").trim_start_matches('/');
        if ctrls.split(',').any(|c| c == controller) {
            return PathBuf::from("/sys/fs/cgroup")
                .join(controller)
                .join(path)
                .join(file);
        }
    }
    let path = cgroups
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .expect("container cgroup");
    PathBuf::from("/sys/fs/cgroup")
        .join(path.trim_start_matches('/'))
        .join(file)
}

fn read_trim(path: &PathBuf) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .trim()
        .to_string()
}

/// Reads `n` documents from a streaming stats response.
fn stream_docs(d: &Daemon, path: &str, n: usize) -> Vec<Value> {
    let mut s = UnixStream::connect(&d.sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: berth\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let docs: Vec<Value> = String::from_utf8_lossy(&raw)
            .split(['\r', '\n'])
            .filter(|l| l.starts_with('{'))
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        if docs.len() >= n {
            return docs;
        }
        let got = s.read(&mut buf).expect("read stats stream");
        assert!(got > 0, "stream ended: {}", String::from_utf8_lossy(&raw));
        raw.extend_from_slice(&buf[..got]);
    }
}

/// Polls `f` until it returns true (bounded, so a broken daemon fails rather than hangs).
fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(40);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn stats_one_shot_stream_and_stopped() {
    if !have_tools() {
        return;
    }
    let d = Daemon::start();
    import_busybox(&d);
    ok(d.docker(&[
        "run",
        "-d",
        "--name",
        "busy",
        "busybox",
        "sh",
        "-c",
        "sleep 1000 & while :; do :; done",
    ]));

    let v = d
        .http(
            "GET",
            "/containers/busy/stats?stream=false&one-shot=true",
            None,
        )
        .json();
    assert_eq!(v["name"], "/busy");
    assert!(
        v["cpu_stats"]["cpu_usage"]["total_usage"].as_u64().unwrap() > 0,
        "{v}"
    );
    assert!(
        v["cpu_stats"]["system_cpu_usage"].as_u64().unwrap() > 0,
        "{v}"
    );
    assert!(v["cpu_stats"]["online_cpus"].as_u64().unwrap() >= 1, "{v}");
    assert!(v["memory_stats"]["usage"].as_u64().unwrap() > 0, "{v}");
    assert!(v["memory_stats"]["limit"].as_u64().unwrap() > 0, "{v}");
    assert!(v["memory_stats"]["stats"]
        .as_object()
        .is_some_and(|m| !m.is_empty()));
    assert!(v["pids_stats"]["current"].as_u64().unwrap() >= 1, "{v}");
    assert!(v["networks"]["eth0"]["rx_bytes"].is_u64(), "{v}");
    assert!(v["blkio_stats"]["io_service_bytes_recursive"].is_array());
    // One-shot: no previous reading.
    assert_eq!(v["preread"], "0001-01-01T00:00:00Z");
    assert_eq!(v["precpu_stats"]["cpu_usage"]["total_usage"], 0);

    // Without one-shot, a non-streamed answer carries the previous reading as dockerd's does.
    let v = d
        .http("GET", "/containers/busy/stats?stream=0", None)
        .json();
    assert!(
        v["precpu_stats"]["cpu_usage"]["total_usage"]
            .as_u64()
            .unwrap()
            > 0
    );

    let docs = stream_docs(&d, "/containers/busy/stats", 2);
    assert_eq!(docs[0]["precpu_stats"]["cpu_usage"]["total_usage"], 0);
    let (first, second) = (&docs[0], &docs[1]);
    assert_eq!(second["preread"], first["read"]);
    assert_eq!(
        second["precpu_stats"]["cpu_usage"]["total_usage"],
        first["cpu_stats"]["cpu_usage"]["total_usage"]
    );
    assert!(
        second["cpu_stats"]["cpu_usage"]["total_usage"].as_u64()
            > first["cpu_stats"]["cpu_usage"]["total_usage"].as_u64()
    );

    // The real docker CLI computes its columns from these documents.
    let out = ok(d.docker(&["stats", "--no-stream", "busy"]));
    let mut lines = out.lines();
    assert!(lines.next().unwrap().contains("CPU %"), "{out}");
    assert!(lines.next().unwrap().contains("busy"), "{out}");
    let cpu = ok(d.docker(&["stats", "--no-stream", "--format", "{{.CPUPerc}}", "busy"]));
    assert_ne!(cpu.trim(), "0.00%", "a busy loop uses CPU");

    // A stopped container answers zeroes, as dockerd does.
    ok(d.docker(&["kill", "busy"]));
    let v = d
        .http("GET", "/containers/busy/stats?stream=false", None)
        .json();
    assert_eq!(v["read"], "0001-01-01T00:00:00Z");
    assert_eq!(v["id"].as_str().unwrap().len(), 64);
    assert_eq!(v["memory_stats"], serde_json::json!({}));
    let r = d.http("GET", "/containers/nope/stats?stream=false", None);
    assert_eq!(r.status, 404);
}

#[test]
fn update_limits_live_and_across_restart() {
    if !have_tools() {
        return;
    }
    let d = Daemon::start();
    import_busybox(&d);
    ok(d.docker(&["run", "-d", "--name", "upd", "busybox", "sleep", "1000"]));

    // dockerd's refusals.
    let out = d.docker(&["update", "--memory", "1m", "upd"]);
    assert!(
        text(&out.stderr).contains("Minimum memory limit allowed is 6MB"),
        "{out:?}"
    );
    let out = d.docker(&["update", "--memory", "64m", "upd"]);
    assert!(
        text(&out.stderr).contains("update the memoryswap at the same time"),
        "{out:?}"
    );

    ok(d.docker(&[
        "update",
        "--memory",
        "32m",
        "--memory-swap",
        "32m",
        "--pids-limit",
        "20",
        "--cpu-shares",
        "512",
        "upd",
    ]));
    let mem = cgroup_file(&d, "upd", "memory", "memory.limit_in_bytes");
    if mem.exists() {
        assert_eq!(read_trim(&mem), (32u64 << 20).to_string());
        let pids = cgroup_file(&d, "upd", "pids", "pids.max");
        assert_eq!(read_trim(&pids), "20");
        let shares = cgroup_file(&d, "upd", "cpu", "cpu.shares");
        assert_eq!(read_trim(&shares), "512");
    } else {
        let max = cgroup_file(&d, "upd", "", "memory.max");
        assert_eq!(read_trim(&max), (32u64 << 20).to_string());
    }
    let hc = ok(d.docker(&[
        "inspect",
        "-f",
        "{{.HostConfig.Memory}} {{.HostConfig.MemorySwap}} {{.HostConfig.PidsLimit}} {{.HostConfig.CpuShares}}",
        "upd",
    ]));
    assert_eq!(hc.trim(), format!("{} {} 20 512", 32 << 20, 32 << 20));

    // The kernel enforces the new limit: a process buffering 100 MB is OOM-killed.
    let out = d.docker(&[
        "exec",
        "upd",
        "sh",
        "-c",
        "head -c 100m /dev/zero | tail > /dev/null",
    ]);
    assert_eq!(out.status.code(), Some(137), "{out:?}");

    // The stats limit follows the cgroup.
    let v = d
        .http(
            "GET",
            "/containers/upd/stats?stream=false&one-shot=true",
            None,
        )
        .json();
    assert_eq!(v["memory_stats"]["limit"], 32u64 << 20);
    assert_eq!(v["pids_stats"]["limit"], 20);

    // The record keeps them: a restart starts with the updated limits.
    ok(d.docker(&["restart", "-t", "0", "upd"]));
    let pids = cgroup_file(&d, "upd", "pids", "pids.max");
    if pids.exists() {
        assert_eq!(read_trim(&pids), "20");
    }

    // The berth CLI's update and stats.
    assert_eq!(
        ok(d.berth(&["update", "--pids-limit", "30", "upd"])),
        "upd\n"
    );
    let row = ok(d.berth(&[
        "stats",
        "--no-stream",
        "--format",
        "{{.Name}} {{.MemUsage}}",
        "upd",
    ]));
    assert!(
        row.starts_with("upd ") && row.trim_end().ends_with("/ 32MiB"),
        "{row}"
    );
    let table = ok(d.berth(&["stats", "--no-stream"]));
    assert!(table.starts_with("CONTAINER ID   NAME"), "{table}");
    let out = d.berth(&["update", "--memory", "1m", "upd"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("Minimum memory limit allowed is 6MB"));

    // Restart policy updates; refused on an --rm container.
    ok(d.docker(&["update", "--restart", "on-failure:3", "upd"]));
    let rp = ok(d.docker(&[
        "inspect",
        "-f",
        "{{.HostConfig.RestartPolicy.Name}} {{.HostConfig.RestartPolicy.MaximumRetryCount}}",
        "upd",
    ]));
    assert_eq!(rp.trim(), "on-failure 3");
    ok(d.docker(&[
        "run", "-d", "--rm", "--name", "rm1", "busybox", "sleep", "1000",
    ]));
    let out = d.docker(&["update", "--restart", "always", "rm1"]);
    assert!(
        text(&out.stderr).contains("Restart policy cannot be updated because AutoRemove"),
        "{out:?}"
    );

    // A stopped container's record is updated too.
    ok(d.docker(&["create", "--name", "cr1", "busybox", "true"]));
    ok(d.docker(&["update", "--cpus", "0.5", "cr1"]));
    let nano = ok(d.docker(&["inspect", "-f", "{{.HostConfig.NanoCpus}}", "cr1"]));
    assert_eq!(nano.trim(), "500000000");
    let out = d.docker(&["update", "--cpu-quota", "50000", "cr1"]);
    assert!(text(&out.stderr).contains("Conflicting options"), "{out:?}");
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn health_status(d: &Daemon, name: &str) -> String {
    let out = d.docker(&["inspect", "-f", "{{.State.Health.Status}}", name]);
    text(&out.stdout).trim().to_string()
}

#[test]
fn health_checks_turn_healthy_and_unhealthy() {
    if !have_tools() {
        return;
    }
    let mut d = Daemon::start();
    import_busybox(&d);
    ok(d.docker(&[
        "run",
        "-d",
        "--name",
        "good",
        "--health-cmd",
        "echo alive",
        "--health-interval",
        "1s",
        "--health-retries",
        "1",
        "busybox",
        "sleep",
        "1000",
    ]));
    ok(d.docker(&[
        "run",
        "-d",
        "--name",
        "bad",
        "--health-cmd",
        "echo failing; exit 3",
        "--health-interval",
        "1s",
        "--health-retries",
        "2",
        "busybox",
        "sleep",
        "1000",
    ]));
    wait_for("good to be healthy", || {
        health_status(&d, "good") == "healthy"
    });
    wait_for("bad to be unhealthy", || {
        health_status(&d, "bad") == "unhealthy"
    });

    let health: Value = serde_json::from_str(&ok(d.docker(&[
        "inspect",
        "-f",
        "{{json .State.Health}}",
        "bad",
    ])))
    .unwrap();
    assert!(health["FailingStreak"].as_i64().unwrap() >= 2, "{health}");
    let last = health["Log"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["ExitCode"], 3);
    assert_eq!(last["Output"], "failing\n");

    let ps = ok(d.docker(&["ps", "--format", "{{.Names}} {{.Status}}"]));
    assert!(
        ps.lines()
            .any(|l| l.starts_with("good Up") && l.ends_with("(healthy)")),
        "{ps}"
    );
    assert!(
        ps.lines()
            .any(|l| l.starts_with("bad Up") && l.ends_with("(unhealthy)")),
        "{ps}"
    );
    let filtered = ok(d.docker(&[
        "ps",
        "--filter",
        "health=unhealthy",
        "--format",
        "{{.Names}}",
    ]));
    assert_eq!(filtered, "bad\n");

    // Through the API with `until` a second ahead: the docker CLI rounds `--until` down to
    // whole seconds, which would leave out what happened in the current one.
    let until = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 1;
    let filters = r#"{"event":["health_status"]}"#;
    let r = d.http(
        "GET",
        &format!(
            "/events?since=0&until={until}&filters={}",
            urlencode(filters)
        ),
        None,
    );
    let events: Vec<Value> = String::from_utf8_lossy(&r.body)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let seen = |name: &str, action: &str| {
        events
            .iter()
            .any(|e| e["Actor"]["Attributes"]["name"] == name && e["Action"] == action)
    };
    assert!(seen("good", "health_status: healthy"), "{events:?}");
    assert!(seen("bad", "health_status: unhealthy"), "{events:?}");

    // A restarted container starts over, and a stopped one keeps its last state.
    ok(d.docker(&["restart", "-t", "0", "bad"]));
    let after = health_status(&d, "bad");
    assert!(after == "starting" || after == "unhealthy", "{after}");
    ok(d.docker(&["stop", "-t", "0", "good"]));
    assert_eq!(health_status(&d, "good"), "healthy");

    // Health checks survive a daemon restart: the re-adopted container is checked again.
    d.stop();
    d.spawn();
    ok(d.docker(&["start", "good"]));
    wait_for("good to be healthy again", || {
        health_status(&d, "good") == "healthy"
    });
    ok(d.docker(&["kill", "bad"]));
    ok(d.docker(&[
        "run",
        "-d",
        "--name",
        "adopted",
        "--health-cmd",
        "test -e /ready",
        "--health-interval",
        "1s",
        "busybox",
        "sleep",
        "1000",
    ]));
    d.stop();
    d.spawn();
    ok(d.docker(&["exec", "adopted", "touch", "/ready"]));
    wait_for("adopted to be healthy", || {
        health_status(&d, "adopted") == "healthy"
    });
}
