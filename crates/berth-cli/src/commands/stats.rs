//! `stats` (a live table of container resource usage, as `docker stats` draws it) and
//! `update` (new resource limits or restart policy for containers).

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::Args;
use http_body_util::BodyExt;
use hyper::Method;
use serde_json::{json, Map, Value};

use super::human_size;
use crate::client::{encode, Client};
use crate::format::{tabulate, Template};

const DEFAULT_FORMAT: &str =
    "table {{.ID}}\t{{.Name}}\t{{.CPUPerc}}\t{{.MemUsage}}\t{{.MemPerc}}\t{{.NetIO}}\t{{.BlockIO}}\t{{.PIDs}}";

/// `berth stats` flags.
#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Show all containers (default shows just running)
    #[arg(short, long)]
    all: bool,
    /// Disable streaming stats and only pull the first result
    #[arg(long)]
    no_stream: bool,
    /// Do not truncate output
    #[arg(long)]
    no_trunc: bool,
    /// Format output using a custom template
    #[arg(long)]
    format: Option<String>,
    /// Containers (all running ones when omitted)
    containers: Vec<String>,
}

/// Docker's binary sizes with four significant digits: `236KiB`, `23.54GiB`.
fn binary_size(bytes: f64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut size = bytes;
    let mut unit = 0;
    while size >= 1024.0 && unit < UNITS.len() - 1 {
        size /= 1024.0;
        unit += 1;
    }
    let int_digits = if size < 1.0 {
        1
    } else {
        // At most four: size < 1024 here.
        size.log10().floor() as usize + 1
    };
    let decimals = 4usize.saturating_sub(int_digits);
    let s = format!("{size:.decimals$}");
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        &s
    };
    format!("{s}{}", UNITS[unit])
}

fn u(v: &Value) -> f64 {
    v.as_f64().unwrap_or(0.0)
}

/// The fields `docker stats --format` offers, computed from a stats document as the docker
/// CLI computes them.
fn row(id: &str, name: &str, s: Option<&Value>, no_trunc: bool) -> Value {
    let short = if no_trunc {
        id
    } else {
        &id[..id.len().min(12)]
    };
    let name = name.trim_start_matches('/');
    let Some(s) = s.filter(|s| s["read"] != "0001-01-01T00:00:00Z") else {
        return json!({
            "ID": short, "Container": short, "Name": name, "CPUPerc": "0.00%",
            "MemUsage": "0B / 0B", "MemPerc": "0.00%", "NetIO": "0B / 0B",
            "BlockIO": "0B / 0B", "PIDs": "0",
        });
    };
    let cpu = &s["cpu_stats"];
    let pre = &s["precpu_stats"];
    let cpu_delta = u(&cpu["cpu_usage"]["total_usage"]) - u(&pre["cpu_usage"]["total_usage"]);
    let sys_delta = u(&cpu["system_cpu_usage"]) - u(&pre["system_cpu_usage"]);
    let online = match u(&cpu["online_cpus"]) {
        0.0 => cpu["cpu_usage"]["percpu_usage"]
            .as_array()
            .map_or(0.0, |a| a.len() as f64),
        n => n,
    };
    let cpu_perc = if cpu_delta > 0.0 && sys_delta > 0.0 {
        cpu_delta / sys_delta * online * 100.0
    } else {
        0.0
    };
    let mem = &s["memory_stats"];
    // The page cache that could be reclaimed is not counted (`total_inactive_file` on v1,
    // `inactive_file` on v2).
    let inactive = ["total_inactive_file", "inactive_file"]
        .iter()
        .map(|k| u(&mem["stats"][k]))
        .find(|&v| v > 0.0)
        .unwrap_or(0.0);
    let mut usage = u(&mem["usage"]);
    if inactive < usage {
        usage -= inactive;
    }
    let limit = u(&mem["limit"]);
    let mem_perc = if limit > 0.0 {
        usage / limit * 100.0
    } else {
        0.0
    };
    let (mut rx, mut tx) = (0.0, 0.0);
    for n in s["networks"].as_object().into_iter().flat_map(Map::values) {
        rx += u(&n["rx_bytes"]);
        tx += u(&n["tx_bytes"]);
    }
    let (mut read, mut write) = (0.0, 0.0);
    for e in s["blkio_stats"]["io_service_bytes_recursive"]
        .as_array()
        .into_iter()
        .flatten()
    {
        match e["op"].as_str().map(str::to_ascii_lowercase).as_deref() {
            Some("read") => read += u(&e["value"]),
            Some("write") => write += u(&e["value"]),
            _ => {}
        }
    }
    json!({
        "ID": short,
        "Container": short,
        "Name": name,
        "CPUPerc": format!("{cpu_perc:.2}%"),
        "MemUsage": format!("{} / {}", binary_size(usage), binary_size(limit)),
        "MemPerc": format!("{mem_perc:.2}%"),
        "NetIO": format!("{} / {}", human_size(rx), human_size(tx)),
        "BlockIO": format!("{} / {}", human_size(read), human_size(write)),
        "PIDs": s["pids_stats"]["current"].as_u64().unwrap_or(0).to_string(),
    })
}

fn title(field: &str) -> String {
    match field {
        "ID" => "CONTAINER ID",
        "Container" => "CONTAINER",
        "Name" => "NAME",
        "CPUPerc" => "CPU %",
        "MemUsage" => "MEM USAGE / LIMIT",
        "MemPerc" => "MEM %",
        "NetIO" => "NET I/O",
        "BlockIO" => "BLOCK I/O",
        "PIDs" => "PIDS",
        other => return other.to_uppercase(),
    }
    .to_string()
}

/// `(id, name)` of the containers to show.
async fn targets(c: &Client, a: &StatsArgs) -> Result<Vec<(String, String)>> {
    if a.containers.is_empty() {
        let q = if a.all { "?all=1" } else { "" };
        let list: Vec<Value> = c.get_json(&format!("/containers/json{q}")).await?;
        return Ok(list
            .iter()
            .map(|v| {
                let name = v["Names"][0].as_str().unwrap_or("").to_string();
                (v["Id"].as_str().unwrap_or("").to_string(), name)
            })
            .collect());
    }
    let mut out = Vec::new();
    for key in &a.containers {
        let v: Value = c
            .get_json(&format!("/containers/{}/json", encode(key)))
            .await?;
        out.push((
            v["Id"].as_str().unwrap_or("").to_string(),
            v["Name"].as_str().unwrap_or("").to_string(),
        ));
    }
    Ok(out)
}

fn render(tpl: &Template, rows: &[Value]) -> Result<String> {
    let mut lines = Vec::with_capacity(rows.len() + 1);
    if tpl.is_table() {
        lines.push(tpl.header(&title));
    }
    for r in rows {
        lines.push(tpl.render(r)?);
    }
    Ok(if tpl.is_table() {
        tabulate(&lines)
    } else {
        lines.iter().map(|l| format!("{l}\n")).collect()
    })
}

/// One reading per container, taken now (`one-shot`: no waiting on the daemon's side); a
/// container that went away reads as stopped.
async fn sample(c: &Client, targets: &[(String, String)]) -> HashMap<String, Value> {
    let mut out = HashMap::new();
    for (id, _) in targets {
        let path = format!("/containers/{id}/stats?stream=0&one-shot=1");
        if let Ok(v) = c.get_json::<Value>(&path).await {
            out.insert(id.clone(), v);
        }
    }
    out
}

/// `cur` with `prev`'s CPU counters as its `precpu_stats`, so a percentage can be computed
/// between two of our own readings.
fn with_precpu(mut cur: Value, prev: Option<&Value>) -> Value {
    if let Some(p) = prev.filter(|p| p["read"] != "0001-01-01T00:00:00Z") {
        cur["precpu_stats"] = p["cpu_stats"].clone();
    }
    cur
}

/// `berth stats`.
pub async fn stats(c: &Client, a: &StatsArgs) -> Result<i32> {
    let format = match a.format.as_deref() {
        None | Some("") | Some("table") => DEFAULT_FORMAT,
        Some("json") => "{{json .}}",
        Some(f) => f,
    };
    let tpl = Template::parse(format)?;
    let mut prev: HashMap<String, Value> = HashMap::new();
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    let mut first = true;
    loop {
        ticker.tick().await;
        // Without names, the set follows the running containers, as docker's does.
        let current = targets(c, a).await?;
        let mut now = sample(c, &current).await;
        if first {
            // CPU % needs two readings: take the second one a second later, as docker does
            // before it prints anything.
            first = false;
            prev = now;
            ticker.tick().await;
            now = sample(c, &current).await;
        }
        let rows: Vec<Value> = current
            .iter()
            .map(|(id, name)| {
                let doc = now.get(id).cloned().map(|d| with_precpu(d, prev.get(id)));
                row(id, name, doc.as_ref(), a.no_trunc)
            })
            .collect();
        let table = render(&tpl, &rows)?;
        if a.no_stream {
            print!("{table}");
            return Ok(0);
        }
        // Clear the screen and redraw, as docker does.
        print!("\x1b[2J\x1b[H{table}");
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
        prev = now;
    }
}

/// `berth update` flags.
#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// Block IO (relative weight), between 10 and 1000, or 0 to disable
    #[arg(long)]
    blkio_weight: Option<u16>,
    /// Limit CPU CFS (Completely Fair Scheduler) period
    #[arg(long)]
    cpu_period: Option<i64>,
    /// Limit CPU CFS (Completely Fair Scheduler) quota
    #[arg(long)]
    cpu_quota: Option<i64>,
    /// CPU shares (relative weight)
    #[arg(short = 'c', long)]
    cpu_shares: Option<i64>,
    /// Number of CPUs
    #[arg(long)]
    cpus: Option<f64>,
    /// CPUs in which to allow execution (0-3, 0,1)
    #[arg(long)]
    cpuset_cpus: Option<String>,
    /// MEMs in which to allow execution (0-3, 0,1)
    #[arg(long)]
    cpuset_mems: Option<String>,
    /// Memory limit
    #[arg(short, long)]
    memory: Option<String>,
    /// Memory soft limit
    #[arg(long)]
    memory_reservation: Option<String>,
    /// Swap limit equal to memory plus swap: -1 to enable unlimited swap
    #[arg(long, allow_hyphen_values = true)]
    memory_swap: Option<String>,
    /// Tune container pids limit (set -1 for unlimited)
    #[arg(long, allow_hyphen_values = true)]
    pids_limit: Option<i64>,
    /// Restart policy to apply when a container exits
    #[arg(long)]
    restart: Option<String>,
    /// Containers
    #[arg(required = true)]
    containers: Vec<String>,
}

/// The request body of `POST /containers/{id}/update`.
fn update_body(a: &UpdateArgs) -> Result<Value> {
    let mut body = Map::new();
    let mut put = |k: &str, v: Value| {
        body.insert(k.to_string(), v);
    };
    let bytes = |s: &str| -> Result<i64> {
        if s == "-1" {
            return Ok(-1);
        }
        super::run::parse_bytes(s)
    };
    if let Some(v) = a.blkio_weight {
        put("BlkioWeight", json!(v));
    }
    if let Some(v) = a.cpu_period {
        put("CpuPeriod", json!(v));
    }
    if let Some(v) = a.cpu_quota {
        put("CpuQuota", json!(v));
    }
    if let Some(v) = a.cpu_shares {
        put("CpuShares", json!(v));
    }
    if let Some(v) = a.cpus {
        // NanoCPUs, rounded as docker's ParseCPUs rounds.
        put("NanoCpus", json!((v * 1e9).round() as i64));
    }
    if let Some(v) = &a.cpuset_cpus {
        put("CpusetCpus", json!(v));
    }
    if let Some(v) = &a.cpuset_mems {
        put("CpusetMems", json!(v));
    }
    if let Some(v) = &a.memory {
        put("Memory", json!(bytes(v)?));
    }
    if let Some(v) = &a.memory_reservation {
        put("MemoryReservation", json!(bytes(v)?));
    }
    if let Some(v) = &a.memory_swap {
        put("MemorySwap", json!(bytes(v)?));
    }
    if let Some(v) = a.pids_limit {
        put("PidsLimit", json!(v));
    }
    if let Some(r) = &a.restart {
        let (name, count) = r.split_once(':').unwrap_or((r, "0"));
        let Ok(count) = count.parse::<i64>() else {
            bail!("invalid restart policy format: maximum retry count must be an integer");
        };
        put(
            "RestartPolicy",
            json!({"Name": name, "MaximumRetryCount": count}),
        );
    }
    if body.is_empty() {
        bail!("you must provide one or more flags when using this command");
    }
    Ok(Value::Object(body))
}

/// `berth update`.
pub async fn update(c: &Client, a: &UpdateArgs) -> Result<i32> {
    let body = serde_json::to_vec(&update_body(a)?)?;
    let mut code = 0;
    for name in &a.containers {
        let path = format!("/containers/{}/update", encode(name));
        match c.request(Method::POST, &path, Some(body.clone())).await {
            Ok(resp) => {
                let bytes = resp.into_body().collect().await?.to_bytes();
                let v: Value = serde_json::from_slice(&bytes).unwrap_or_default();
                for w in v["Warnings"].as_array().into_iter().flatten() {
                    eprintln!("WARNING: {}", w.as_str().unwrap_or(""));
                }
                println!("{name}");
            }
            Err(err) => {
                eprintln!("{err}");
                code = 1;
            }
        }
    }
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_rows() {
        assert_eq!(binary_size(241_664.0), "236KiB");
        assert_eq!(binary_size(25_276_502_016.0), "23.54GiB");
        assert_eq!(binary_size(64.0 * 1024.0 * 1024.0), "64MiB");
        assert_eq!(binary_size(0.0), "0B");
        let doc = json!({
            "read": "2024-01-01T00:00:01Z",
            "cpu_stats": {"cpu_usage": {"total_usage": 2_000_000_000u64}, "system_cpu_usage": 4_000_000_000u64, "online_cpus": 2},
            "precpu_stats": {"cpu_usage": {"total_usage": 1_000_000_000u64}, "system_cpu_usage": 2_000_000_000u64},
            "memory_stats": {"usage": 2048, "limit": 4096, "stats": {"total_inactive_file": 1024}},
            "networks": {"eth0": {"rx_bytes": 1500, "tx_bytes": 500}},
            "blkio_stats": {"io_service_bytes_recursive": [{"op": "Read", "value": 4096}, {"op": "Write", "value": 0}]},
            "pids_stats": {"current": 3},
        });
        let r = row(&"a".repeat(64), "/web", Some(&doc), false);
        assert_eq!(r["ID"], "aaaaaaaaaaaa");
        assert_eq!(r["Name"], "web");
        assert_eq!(r["CPUPerc"], "100.00%");
        assert_eq!(r["MemUsage"], "1KiB / 4KiB");
        assert_eq!(r["MemPerc"], "25.00%");
        assert_eq!(r["NetIO"], "1.5kB / 500B");
        assert_eq!(r["BlockIO"], "4.1kB / 0B");
        assert_eq!(r["PIDs"], "3");
        let stopped = row("b", "/x", None, false);
        assert_eq!(stopped["CPUPerc"], "0.00%");
        let tpl = Template::parse(DEFAULT_FORMAT).unwrap();
        let out = render(&tpl, &[r]).unwrap();
        assert!(out.starts_with("CONTAINER ID"), "{out}");
        assert!(out.contains("MEM USAGE / LIMIT"), "{out}");
    }

    #[test]
    fn update_bodies() {
        let a = UpdateArgs {
            blkio_weight: None,
            cpu_period: None,
            cpu_quota: None,
            cpu_shares: None,
            cpus: Some(1.5),
            cpuset_cpus: None,
            cpuset_mems: None,
            memory: Some("64m".into()),
            memory_reservation: None,
            memory_swap: Some("-1".into()),
            pids_limit: Some(100),
            restart: Some("on-failure:3".into()),
            containers: vec!["x".into()],
        };
        let b = update_body(&a).unwrap();
        assert_eq!(b["NanoCpus"], 1_500_000_000i64);
        assert_eq!(b["Memory"], 64 << 20);
        assert_eq!(b["MemorySwap"], -1);
        assert_eq!(b["PidsLimit"], 100);
        assert_eq!(b["RestartPolicy"]["MaximumRetryCount"], 3);
    }
}
