//! `version`, `info`, `events`, `system df`.

use std::io::Write;

use anyhow::Result;
use http_body_util::BodyExt;
use hyper::Method;
use serde_json::{json, Value};

use super::{api_timestamp, filters_json, human_size};
use crate::client::{encode, Client};
use crate::format::{go_string, Template};

/// `berth version`.
pub async fn version(c: &Client, format: Option<&str>) -> Result<i32> {
    let server: Value = c.get_json("/version").await?;
    let client_info = json!({
        "Version": env!("CARGO_PKG_VERSION"),
        "ApiVersion": c.version().to_string(),
        "DefaultAPIVersion": berth_daemon::apiversion::MAX.to_string(),
        "Os": "linux",
        "Arch": berth_daemon::host::go_arch(std::env::consts::ARCH),
    });
    if let Some(f) = format {
        let v = json!({"Client": client_info, "Server": server});
        let f = if f == "json" { "{{json .}}" } else { f };
        println!("{}", Template::parse(f)?.render(&v)?);
        return Ok(0);
    }
    let s = |k: &str| server.get(k).map(go_string).unwrap_or_default();
    println!("Client:");
    println!(
        " Version:           {}",
        client_info["Version"].as_str().unwrap_or("")
    );
    println!(" API version:       {}", c.version());
    println!(
        " OS/Arch:           linux/{}",
        client_info["Arch"].as_str().unwrap_or("")
    );
    println!();
    println!(
        "Server: {}",
        server["Platform"]["Name"].as_str().unwrap_or("")
    );
    println!(" Engine:");
    println!("  Version:          {}", s("Version"));
    println!(
        "  API version:      {} (minimum version {})",
        s("ApiVersion"),
        s("MinAPIVersion")
    );
    println!("  Go version:       {}", s("GoVersion"));
    println!("  Git commit:       {}", s("GitCommit"));
    println!("  Built:            {}", s("BuildTime"));
    println!("  OS/Arch:          {}/{}", s("Os"), s("Arch"));
    println!("  Experimental:     false");
    Ok(0)
}

/// `berth info`.
pub async fn info(c: &Client, format: Option<&str>) -> Result<i32> {
    let v: Value = c.get_json("/info").await?;
    if let Some(f) = format {
        let f = if f == "json" { "{{json .}}" } else { f };
        println!("{}", Template::parse(f)?.render(&v)?);
        return Ok(0);
    }
    let s = |k: &str| v.get(k).map(go_string).unwrap_or_default();
    println!("Server:");
    println!(" Containers: {}", s("Containers"));
    println!("  Running: {}", s("ContainersRunning"));
    println!("  Paused: {}", s("ContainersPaused"));
    println!("  Stopped: {}", s("ContainersStopped"));
    println!(" Images: {}", s("Images"));
    println!(" Server Version: {}", s("ServerVersion"));
    println!(" Storage Driver: {}", s("Driver"));
    println!(" Logging Driver: {}", s("LoggingDriver"));
    println!(" Cgroup Driver: {}", s("CgroupDriver"));
    println!(" Cgroup Version: {}", s("CgroupVersion"));
    println!(
        " Runtimes: {}",
        v["Runtimes"]
            .as_object()
            .map(|m| m.keys().cloned().collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    );
    println!(" Default Runtime: {}", s("DefaultRuntime"));
    println!(" Security Options:");
    for opt in v["SecurityOptions"].as_array().into_iter().flatten() {
        println!("  {}", go_string(opt));
    }
    println!(" Kernel Version: {}", s("KernelVersion"));
    println!(" Operating System: {}", s("OperatingSystem"));
    println!(" OSType: {}", s("OSType"));
    println!(" Architecture: {}", s("Architecture"));
    println!(" CPUs: {}", s("NCPU"));
    println!(
        " Total Memory: {:.4}GiB",
        v["MemTotal"].as_f64().unwrap_or(0.0) / f64::from(1u32 << 30)
    );
    println!(" Name: {}", s("Name"));
    println!(" ID: {}", s("ID"));
    println!(" Berth Root Dir: {}", s("DockerRootDir"));
    println!(" Debug Mode: {}", s("Debug"));
    let insecure = &v["RegistryConfig"]["IndexConfigs"];
    let insecure: Vec<&String> = insecure
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(_, c)| c["Secure"] == false)
                .map(|(k, _)| k)
                .collect()
        })
        .unwrap_or_default();
    if !insecure.is_empty() {
        println!(" Insecure Registries:");
        for r in insecure {
            println!("  {r}");
        }
    }
    if let Some(m) = v["RegistryConfig"]["Mirrors"]
        .as_array()
        .filter(|m| !m.is_empty())
    {
        println!(" Registry Mirrors:");
        for r in m {
            println!("  {}", go_string(r));
        }
    }
    println!(" Live Restore Enabled: {}", s("LiveRestoreEnabled"));
    for w in v["Warnings"].as_array().into_iter().flatten() {
        eprintln!("{}", go_string(w));
    }
    Ok(0)
}

/// `berth events` flags.
#[derive(Debug, clap::Args)]
pub struct EventsArgs {
    /// Filter output based on conditions provided
    #[arg(short, long = "filter")]
    filter: Vec<String>,
    /// Format output using a custom template
    #[arg(long)]
    format: Option<String>,
    /// Show all events created since timestamp
    #[arg(long)]
    since: Option<String>,
    /// Stream events until this timestamp
    #[arg(long)]
    until: Option<String>,
}

/// `berth events`.
pub async fn events(c: &Client, a: &EventsArgs) -> Result<i32> {
    let mut q = vec![format!("filters={}", encode(&filters_json(&a.filter)?))];
    if let Some(s) = &a.since {
        q.push(format!("since={}", encode(&api_timestamp(s)?)));
    }
    if let Some(u) = &a.until {
        q.push(format!("until={}", encode(&api_timestamp(u)?)));
    }
    let tpl = match a.format.as_deref() {
        Some("json") => Some(Template::parse("{{json .}}")?),
        Some(f) => Some(Template::parse(f)?),
        None => None,
    };
    let resp = c
        .request(Method::GET, &format!("/events?{}", q.join("&")), None)
        .await?;
    let mut body = resp.into_body();
    let mut buf: Vec<u8> = Vec::new();
    let mut out = std::io::stdout().lock();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        buf.extend_from_slice(&data);
        while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=nl).collect();
            let Ok(ev) = serde_json::from_slice::<Value>(&line) else {
                continue;
            };
            let text = match &tpl {
                Some(t) => t.render(&ev)?,
                None => default_event_line(&ev),
            };
            writeln!(out, "{text}")?;
            out.flush()?;
        }
    }
    Ok(0)
}

/// `2024-01-01T10:00:00.000000000Z container create <id> (image=busybox, name=web)`.
fn default_event_line(ev: &Value) -> String {
    let nanos = ev["timeNano"].as_i64().unwrap_or(0);
    let time = chrono::DateTime::from_timestamp_nanos(nanos)
        .with_timezone(&chrono::Local)
        .format("%Y-%m-%dT%H:%M:%S%.9f%:z");
    let attrs: Vec<String> = ev["Actor"]["Attributes"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", go_string(v)))
                .collect()
        })
        .unwrap_or_default();
    let mut line = format!(
        "{time} {} {} {}",
        go_string(&ev["Type"]),
        go_string(&ev["Action"]),
        go_string(&ev["Actor"]["ID"])
    );
    if !attrs.is_empty() {
        line.push_str(&format!(" ({})", attrs.join(", ")));
    }
    line
}

/// `berth system df`.
pub async fn df(c: &Client) -> Result<i32> {
    let v: Value = c.get_json("/system/df").await?;
    let containers = v["Containers"].as_array().cloned().unwrap_or_default();
    let active = containers
        .iter()
        .filter(|c| c["State"] == "running")
        .count();
    let size: f64 = containers.iter().filter_map(|c| c["SizeRw"].as_f64()).sum();
    let reclaim: f64 = containers
        .iter()
        .filter(|c| c["State"] != "running")
        .filter_map(|c| c["SizeRw"].as_f64())
        .sum();
    let images = v["Images"].as_array().map_or(0, Vec::len);
    let lines = vec![
        "TYPE\tTOTAL\tACTIVE\tSIZE\tRECLAIMABLE".to_string(),
        format!(
            "Images\t{images}\t0\t{}\t0B",
            human_size(v["LayersSize"].as_f64().unwrap_or(0.0))
        ),
        format!(
            "Containers\t{}\t{active}\t{}\t{}",
            containers.len(),
            human_size(size),
            human_size(reclaim)
        ),
        "Local Volumes\t0\t0\t0B\t0B".to_string(),
        "Build Cache\t0\t0\t0B\t0B".to_string(),
    ];
    print!("{}", crate::format::tabulate(&lines));
    Ok(0)
}
