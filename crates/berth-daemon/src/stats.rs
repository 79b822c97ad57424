//! Container resource usage in the shape of dockerd's `GET /containers/{id}/stats`.
//!
//! A [`Sample`] is one reading: the container's cgroup (through `berth-runtime`, which uses
//! libcgroups on v1 or v2), the host's CPU time from `/proc/stat`, and the interface counters of
//! the container's network namespace from `/proc/<pid>/net/dev`. [`stats_json`] pairs a sample
//! with the previous one (`precpu_stats`, `preread`) as dockerd's collector does, so clients
//! compute CPU % from the difference.
//!
//! Units follow dockerd: CPU times in nanoseconds (cgroup v1 reports user/system time in clock
//! ticks and v2 in microseconds, both converted here), memory in bytes. Memory `stats` holds the
//! cgroup's `memory.stat` keys as they are, which differ between v1 and v2, as in dockerd.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use crate::daemon::Daemon;
use crate::error::Result;
use crate::time;

/// One reading of a running container's resource usage.
#[derive(Debug, Clone)]
pub struct Sample {
    /// When it was taken (RFC 3339, nanoseconds).
    pub read: String,
    /// `cpu_stats`.
    pub cpu: Value,
    /// `memory_stats`.
    pub memory: Value,
    /// `pids_stats`.
    pub pids: Value,
    /// `blkio_stats`.
    pub blkio: Value,
    /// `networks`, absent without a private network namespace.
    pub networks: Option<Value>,
}

/// What a sample needs from the host besides the cgroup.
#[derive(Debug, Clone, Copy)]
pub struct HostCounters {
    /// Total CPU time of the host in nanoseconds (`/proc/stat`'s `cpu` line).
    pub system_cpu_usage: u64,
    /// Online CPUs.
    pub online_cpus: u64,
    /// Host memory in bytes: the limit reported when the cgroup sets none.
    pub mem_total: u64,
    /// Whether the cgroup is v2 (CPU times in microseconds, v2 memory keys).
    pub v2: bool,
}

/// The host's clock ticks per second (`USER_HZ`), the unit of v1 `cpuacct.stat`.
fn clock_ticks() -> u64 {
    // SAFETY: sysconf only reads a configuration value.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(t).ok().filter(|&t| t > 0).unwrap_or(100)
}

/// Reads `/proc/stat`: the host's total CPU time in nanoseconds and the number of CPUs.
pub fn host_cpu() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    parse_proc_stat(&text, clock_ticks())
}

fn parse_proc_stat(text: &str, ticks: u64) -> (u64, u64) {
    let mut total = 0;
    let mut cpus = 0;
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            // user nice system idle iowait irq softirq steal (guest time is within user).
            Some("cpu") => {
                total = words
                    .take(8)
                    .filter_map(|w| w.parse::<u64>().ok())
                    .sum::<u64>()
                    .saturating_mul(1_000_000_000 / ticks);
            }
            Some(w) if w.starts_with("cpu") => cpus += 1,
            _ => {}
        }
    }
    (total, cpus)
}

/// Parses `/proc/<pid>/net/dev` into dockerd's per-interface counters, leaving out `lo`.
pub fn parse_net_dev(text: &str) -> Value {
    let mut out = Map::new();
    // Two header lines, then `iface: rx_bytes rx_packets rx_errs rx_drop fifo frame
    // compressed multicast tx_bytes tx_packets tx_errs tx_drop ...`.
    for line in text.lines().skip(2) {
        let Some((name, rest)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if name == "lo" {
            continue;
        }
        let n: Vec<u64> = rest
            .split_whitespace()
            .map(|w| w.parse().unwrap_or(0))
            .collect();
        if n.len() < 12 {
            continue;
        }
        out.insert(
            name.to_string(),
            json!({
                "rx_bytes": n[0], "rx_packets": n[1], "rx_errors": n[2], "rx_dropped": n[3],
                "tx_bytes": n[8], "tx_packets": n[9], "tx_errors": n[10], "tx_dropped": n[11],
            }),
        );
    }
    Value::Object(out)
}

/// Builds a sample from libcgroups' reading.
pub fn sample_from(
    s: &libcgroups::stats::Stats,
    host: HostCounters,
    networks: Option<Value>,
) -> Sample {
    let u = &s.cpu.usage;
    // v2 reports microseconds; v1 reports the total in nanoseconds and user/system in ticks.
    let (total, user, kernel, percpu) = if host.v2 {
        (
            u.usage_total.saturating_mul(1000),
            u.usage_user.saturating_mul(1000),
            u.usage_kernel.saturating_mul(1000),
            None,
        )
    } else {
        let tick_ns = 1_000_000_000 / clock_ticks();
        (
            u.usage_total,
            u.usage_user.saturating_mul(tick_ns),
            u.usage_kernel.saturating_mul(tick_ns),
            Some(u.per_core_usage_total.clone()),
        )
    };
    let mut cpu_usage = json!({
        "total_usage": total,
        "usage_in_kernelmode": kernel,
        "usage_in_usermode": user,
    });
    if let Some(p) = percpu.filter(|p| !p.is_empty()) {
        cpu_usage["percpu_usage"] = json!(p);
    }
    let t = &s.cpu.throttling;
    let cpu = json!({
        "cpu_usage": cpu_usage,
        "system_cpu_usage": host.system_cpu_usage,
        "online_cpus": host.online_cpus,
        "throttling_data": {
            "periods": t.periods,
            "throttled_periods": t.throttled_periods,
            "throttled_time": t.throttled_time,
        },
    });

    let m = &s.memory;
    // An unset v1 limit reads as a huge number and v2's `max` as u64::MAX: report the host's
    // memory instead, as dockerd does.
    let limit = match m.memory.limit {
        0 => host.mem_total,
        l => l.min(host.mem_total),
    };
    let stats: BTreeMap<&String, &u64> = m.stats.iter().collect();
    let mut memory = json!({
        "usage": m.memory.usage,
        "stats": stats,
        "limit": limit,
    });
    if !host.v2 {
        memory["max_usage"] = json!(m.memory.max_usage);
        // dockerd leaves a zero failcnt out.
        if m.memory.fail_count > 0 {
            memory["failcnt"] = json!(m.memory.fail_count);
        }
    }

    let mut pids = json!({ "current": s.pids.current });
    if s.pids.limit > 0 {
        pids["limit"] = json!(s.pids.limit);
    }

    let entries = |list: &[libcgroups::stats::BlkioDeviceStat]| -> Value {
        list.iter()
            .map(|e| {
                json!({
                    "major": e.major,
                    "minor": e.minor,
                    "op": e.op_type.clone().unwrap_or_default(),
                    "value": e.value,
                })
            })
            .collect::<Vec<_>>()
            .into()
    };
    let b = &s.blkio;
    let blkio = json!({
        "io_service_bytes_recursive": entries(&b.service_bytes),
        "io_serviced_recursive": entries(&b.serviced),
        "io_queue_recursive": entries(&b.queued),
        "io_service_time_recursive": entries(&b.service_time),
        "io_wait_time_recursive": entries(&b.wait_time),
        "io_merged_recursive": entries(&b.merged),
        "io_time_recursive": entries(&b.time),
        "sectors_recursive": entries(&b.sectors),
    });
    Sample {
        read: time::now_rfc3339(),
        cpu,
        memory,
        pids,
        blkio,
        networks,
    }
}

/// `precpu_stats` before a first sample: zeros, as dockerd's zero-valued struct encodes.
fn empty_cpu() -> Value {
    json!({
        "cpu_usage": {"total_usage": 0, "usage_in_kernelmode": 0, "usage_in_usermode": 0},
        "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0},
    })
}

/// dockerd's answer for a container that is not running: its name and ID, everything else
/// zero.
pub fn zero_stats_json(name: &str, id: &str) -> Value {
    let blkio: Map<String, Value> = [
        "io_service_bytes_recursive",
        "io_serviced_recursive",
        "io_queue_recursive",
        "io_service_time_recursive",
        "io_wait_time_recursive",
        "io_merged_recursive",
        "io_time_recursive",
        "sectors_recursive",
    ]
    .into_iter()
    .map(|k| (k.to_string(), Value::Null))
    .collect();
    json!({
        "name": name,
        "id": id,
        "read": time::ZERO,
        "preread": time::ZERO,
        "pids_stats": {},
        "blkio_stats": blkio,
        "num_procs": 0,
        "storage_stats": {},
        "cpu_stats": empty_cpu(),
        "precpu_stats": empty_cpu(),
        "memory_stats": {},
    })
}

/// One stats document: `cur` with `prev` as its `pre*` fields.
pub fn stats_json(name: &str, id: &str, cur: &Sample, prev: Option<&Sample>) -> Value {
    let mut v = json!({
        "name": name,
        "id": id,
        "read": cur.read,
        "preread": prev.map_or(time::ZERO, |p| p.read.as_str()),
        "pids_stats": cur.pids,
        "blkio_stats": cur.blkio,
        "num_procs": 0,
        "storage_stats": {},
        "cpu_stats": cur.cpu,
        "precpu_stats": prev.map_or_else(empty_cpu, |p| p.cpu.clone()),
        "memory_stats": cur.memory,
    });
    if let Some(n) = &cur.networks {
        v["networks"] = n.clone();
    }
    v
}

impl Daemon {
    /// Takes one sample of container `id`; `None` when it is not running (or stopped while
    /// being read). Blocking: it reads cgroup and proc files.
    pub fn stats_sample(&self, id: &str) -> Result<Option<Sample>> {
        let record = self.containers.get(id)?;
        if !record.state.running || record.state.restarting {
            return Ok(None);
        }
        let cg = match self.runtime.stats(&record.id) {
            Ok(s) => s,
            Err(err) => {
                // The container may have exited between the check and the read.
                if self.containers.get(id).is_ok_and(|r| r.state.running) {
                    return Err(err.into());
                }
                return Ok(None);
            }
        };
        let (system_cpu_usage, online_cpus) = host_cpu();
        let host = HostCounters {
            system_cpu_usage,
            online_cpus,
            mem_total: self.host.mem_total,
            v2: self.host.cgroup_version == "2",
        };
        let host_net = record.host_config.network_mode.as_deref() == Some("host")
            || record.host_config.network_mode.as_deref() == Some("none");
        let networks = if host_net {
            None
        } else {
            std::fs::read_to_string(format!("/proc/{}/net/dev", record.state.pid))
                .ok()
                .map(|t| parse_net_dev(&t))
        };
        Ok(Some(sample_from(&cg, host, networks)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_and_net_dev() {
        let stat = "cpu  100 0 50 1000 10 0 0 0 0 0\ncpu0 50 0 25 500 5 0 0 0 0 0\ncpu1 50 0 25 500 5 0 0 0 0 0\nintr 1\n";
        assert_eq!(parse_proc_stat(stat, 100), (1160 * 10_000_000, 2));
        let dev = "Inter-|   Receive |  Transmit\n face |bytes packets errs drop fifo frame compressed multicast|bytes packets errs drop fifo colls carrier compressed\n    lo:     10       1    0    0    0     0          0         0       10       1    0    0    0     0       0          0\n  eth0:   1296      12    0    1    0     0          0         0      726       9    0    2    0     0       0          0\n";
        let v = parse_net_dev(dev);
        assert!(v.get("lo").is_none());
        assert_eq!(v["eth0"]["rx_bytes"], 1296);
        assert_eq!(v["eth0"]["rx_dropped"], 1);
        assert_eq!(v["eth0"]["tx_packets"], 9);
        assert_eq!(v["eth0"]["tx_dropped"], 2);
    }

    #[test]
    fn v1_units_limits_and_precpu() {
        let mut s = libcgroups::stats::Stats::default();
        s.cpu.usage.usage_total = 5_000_000;
        s.cpu.usage.usage_user = 3;
        s.cpu.usage.per_core_usage_total = vec![2_000_000, 3_000_000];
        s.memory.memory.usage = 4096;
        s.memory.memory.limit = u64::MAX / 2;
        s.memory.stats.insert("total_rss".into(), 1024);
        s.pids.current = 2;
        let host = HostCounters {
            system_cpu_usage: 10,
            online_cpus: 2,
            mem_total: 1 << 30,
            v2: false,
        };
        let first = sample_from(&s, host, None);
        assert_eq!(first.cpu["cpu_usage"]["total_usage"], 5_000_000);
        assert_eq!(
            first.cpu["cpu_usage"]["usage_in_usermode"],
            3 * (1_000_000_000 / clock_ticks())
        );
        assert_eq!(first.cpu["cpu_usage"]["percpu_usage"][1], 3_000_000);
        assert_eq!(first.memory["limit"], 1u64 << 30);
        assert_eq!(first.memory["stats"]["total_rss"], 1024);
        assert_eq!(first.pids, json!({"current": 2}));
        let one = stats_json("/x", "id", &first, None);
        assert_eq!(one["preread"], time::ZERO);
        assert_eq!(one["precpu_stats"]["cpu_usage"]["total_usage"], 0);
        assert!(one.get("networks").is_none());
        let second = sample_from(&s, host, Some(json!({"eth0": {}})));
        let two = stats_json("/x", "id", &second, Some(&first));
        assert_eq!(two["precpu_stats"]["cpu_usage"]["total_usage"], 5_000_000);
        assert_eq!(two["preread"], first.read);
        assert!(two["networks"]["eth0"].is_object());

        let v2 = sample_from(&s, HostCounters { v2: true, ..host }, None);
        assert_eq!(v2.cpu["cpu_usage"]["total_usage"], 5_000_000_000u64);
        assert!(v2.cpu["cpu_usage"].get("percpu_usage").is_none());
        assert!(v2.memory.get("max_usage").is_none());
    }
}
