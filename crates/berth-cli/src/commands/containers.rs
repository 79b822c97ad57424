//! `ps`, `inspect`, `rm`, `rename`, `logs`, `container prune`.

use std::io::Write;

use anyhow::{bail, Result};
use http_body_util::BodyExt;
use hyper::Method;
use serde_json::{json, Value};

use super::{api_timestamp, filters_json, human_size};
use crate::client::{encode, Client};
use crate::format::{go_string, print_rows, Template};

const DEFAULT_PS: &str =
    "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}";

/// `berth ps` flags.
#[derive(Debug, clap::Args)]
pub struct PsArgs {
    /// Show all containers (default shows just running)
    #[arg(short, long)]
    all: bool,
    /// Filter output based on conditions provided
    #[arg(short, long = "filter")]
    filter: Vec<String>,
    /// Format output using a custom template ('table', 'json', or a Go template)
    #[arg(long)]
    format: Option<String>,
    /// Show n last created containers (includes all states)
    #[arg(short = 'n', long = "last", default_value_t = -1)]
    last: i64,
    /// Show the latest created container (includes all states)
    #[arg(short, long)]
    latest: bool,
    /// Don't truncate output
    #[arg(long)]
    no_trunc: bool,
    /// Only display container IDs
    #[arg(short, long)]
    quiet: bool,
    /// Display total file sizes
    #[arg(short, long)]
    size: bool,
}

/// `berth ps`.
pub async fn ps(c: &Client, a: &PsArgs) -> Result<i32> {
    let limit = if a.latest { 1 } else { a.last };
    let mut q = vec![format!("filters={}", encode(&filters_json(&a.filter)?))];
    if a.all {
        q.push("all=1".into());
    }
    if limit > 0 {
        q.push(format!("limit={limit}"));
    }
    if a.size {
        q.push("size=1".into());
    }
    let list: Vec<Value> = c
        .get_json(&format!("/containers/json?{}", q.join("&")))
        .await?;
    let now = chrono::Utc::now().timestamp();
    let rows: Vec<Value> = list.iter().map(|v| ps_row(v, a.no_trunc, now)).collect();
    if a.quiet {
        for r in &rows {
            println!("{}", go_string(&r["ID"]));
        }
        return Ok(0);
    }
    let format = match a.format.as_deref() {
        None | Some("") | Some("table") => DEFAULT_PS,
        Some("json") => "{{json .}}",
        Some(f) => f,
    };
    print_rows(format, &rows, &ps_title)
}

fn ps_title(field: &str) -> String {
    match field {
        "ID" => "CONTAINER ID".into(),
        "RunningFor" => "CREATED".into(),
        "CreatedAt" => "CREATED AT".into(),
        other => other.to_uppercase(),
    }
}

/// The fields `docker ps --format` offers, computed from a container summary.
fn ps_row(v: &Value, no_trunc: bool, now: i64) -> Value {
    let id = v["Id"].as_str().unwrap_or("");
    let id = if no_trunc {
        id
    } else {
        &id[..id.len().min(12)]
    };
    let command = v["Command"].as_str().unwrap_or("");
    let command = if no_trunc || command.chars().count() <= 20 {
        format!("\"{command}\"")
    } else {
        format!("\"{}…\"", command.chars().take(19).collect::<String>())
    };
    let created = v["Created"].as_i64().unwrap_or(0);
    let created_at = chrono::DateTime::from_timestamp(created, 0)
        .map(|t| {
            t.with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S %z %Z")
                .to_string()
        })
        .unwrap_or_default();
    let names: Vec<&str> = v["Names"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|n| n.trim_start_matches('/'))
        .filter(|n| !n.contains('/'))
        .collect();
    let mut labels: Vec<String> = v["Labels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", go_string(v)))
                .collect()
        })
        .unwrap_or_default();
    labels.sort();
    let image = v["Image"].as_str().unwrap_or("");
    let image = match image.strip_prefix("sha256:") {
        Some(h) if !no_trunc => &h[..h.len().min(12)],
        _ => image,
    };
    let size = match (v["SizeRw"].as_f64(), v["SizeRootFs"].as_f64()) {
        (Some(rw), Some(root)) => format!("{} (virtual {})", human_size(rw), human_size(root)),
        (Some(rw), None) => human_size(rw),
        _ => "0B".into(),
    };
    json!({
        "ID": id,
        "Image": image,
        "Command": command,
        "CreatedAt": created_at,
        "RunningFor": format!("{} ago", berth_daemon::time::human_duration(now - created)),
        "Ports": super::network::ports_column(&v["Ports"]),
        "State": v["State"],
        "Status": v["Status"],
        "Size": size,
        "Names": names.join(","),
        "Labels": labels.join(","),
        "Mounts": "",
        "Networks": super::network::networks_column(&v["NetworkSettings"]),
        "LocalVolumes": "0",
    })
}

/// `berth inspect` flags.
#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// Format output using a custom template ('json' or a Go template)
    #[arg(short, long)]
    format: Option<String>,
    /// Display total file sizes
    #[arg(short, long)]
    size: bool,
    /// Only inspect objects of this type
    #[arg(long = "type")]
    kind: Option<String>,
    /// Objects to inspect
    #[arg(required = true)]
    names: Vec<String>,
}

impl InspectArgs {
    /// `image inspect`'s arguments.
    pub fn for_images(format: Option<String>, names: Vec<String>) -> Self {
        InspectArgs {
            format,
            size: false,
            kind: Some("image".into()),
            names,
        }
    }
}

/// `berth inspect`.
pub async fn inspect(c: &Client, a: &InspectArgs) -> Result<i32> {
    if let Some(k) = a
        .kind
        .as_deref()
        .filter(|k| !["container", "image"].contains(k))
    {
        bail!("inspecting objects of type {k:?} is not supported yet");
    }
    let tpl = match a.format.as_deref() {
        None | Some("json") => None,
        Some(f) => Some(Template::parse(f)?),
    };
    let mut found = Vec::new();
    let mut code = 0;
    for name in &a.names {
        let path = format!(
            "/containers/{}/json{}",
            encode(name),
            if a.size { "?size=1" } else { "" }
        );
        let mut result = c.get_json::<Value>(&path).await;
        let not_found = |r: &Result<Value>| {
            r.as_ref()
                .err()
                .and_then(|e| e.downcast_ref::<crate::client::ApiError>())
                .is_some_and(|e| e.status == hyper::StatusCode::NOT_FOUND)
        };
        if a.kind.as_deref() != Some("container") && (a.kind.is_some() || not_found(&result)) {
            result = c
                .get_json::<Value>(&format!("/images/{}/json", encode(name)))
                .await;
        }
        match result {
            Ok(v) => found.push(v),
            Err(err) => {
                match err.downcast_ref::<crate::client::ApiError>() {
                    Some(e) if e.status == hyper::StatusCode::NOT_FOUND => {
                        eprintln!("Error: No such object: {name}")
                    }
                    _ => eprintln!("{err}"),
                }
                code = 1;
            }
        }
    }
    match tpl {
        Some(t) => {
            for v in &found {
                println!("{}", t.render(v)?);
            }
        }
        None => {
            let mut out = Vec::new();
            let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
            let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
            serde::Serialize::serialize(&found, &mut ser)?;
            println!("{}", String::from_utf8_lossy(&out));
        }
    }
    Ok(code)
}

/// `berth rm` flags.
#[derive(Debug, clap::Args)]
pub struct RmArgs {
    /// Force the removal of a running container (uses SIGKILL)
    #[arg(short, long)]
    force: bool,
    /// Remove anonymous volumes associated with the container
    #[arg(short, long)]
    volumes: bool,
    /// Containers to remove
    #[arg(required = true)]
    containers: Vec<String>,
}

/// `berth rm`.
pub async fn rm(c: &Client, a: &RmArgs) -> Result<i32> {
    use super::run::{each_container, Fanout};
    each_container(c, &a.containers, Fanout::Parallel, Method::DELETE, |name| {
        format!(
            "/containers/{}?force={}&v={}",
            encode(name),
            u8::from(a.force),
            u8::from(a.volumes)
        )
    })
    .await
}

/// `berth rename`.
pub async fn rename(c: &Client, container: &str, new_name: &str) -> Result<i32> {
    let path = format!(
        "/containers/{}/rename?name={}",
        encode(container),
        encode(new_name)
    );
    c.request(Method::POST, &path, None).await?;
    Ok(0)
}

/// `berth logs` flags.
#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    /// Show extra details provided to logs
    #[arg(long)]
    details: bool,
    /// Follow log output
    #[arg(short, long)]
    follow: bool,
    /// Show logs since timestamp or relative (e.g. 42m for 42 minutes)
    #[arg(long)]
    since: Option<String>,
    /// Number of lines to show from the end of the logs
    #[arg(short = 'n', long, default_value = "all")]
    tail: String,
    /// Show timestamps
    #[arg(short, long)]
    timestamps: bool,
    /// Show logs before a timestamp or relative (e.g. 42m for 42 minutes)
    #[arg(long)]
    until: Option<String>,
    /// Container
    container: String,
}

/// `berth logs`: demultiplexes stdout and stderr unless the container has a TTY.
pub async fn logs(c: &Client, a: &LogsArgs) -> Result<i32> {
    let info: Value = c
        .get_json(&format!("/containers/{}/json", encode(&a.container)))
        .await?;
    let tty = info["Config"]["Tty"].as_bool().unwrap_or(false);
    let mut q = vec![
        "stdout=1".to_string(),
        "stderr=1".to_string(),
        format!("tail={}", encode(&a.tail)),
    ];
    if a.follow {
        q.push("follow=1".into());
    }
    if a.timestamps {
        q.push("timestamps=1".into());
    }
    if a.details {
        q.push("details=1".into());
    }
    if let Some(s) = &a.since {
        q.push(format!("since={}", encode(&api_timestamp(s)?)));
    }
    if let Some(u) = &a.until {
        q.push(format!("until={}", encode(&api_timestamp(u)?)));
    }
    let resp = c
        .request(
            Method::GET,
            &format!("/containers/{}/logs?{}", encode(&a.container), q.join("&")),
            None,
        )
        .await?;
    let mut body = resp.into_body();
    let mut stdout = std::io::stdout().lock();
    let mut stderr = std::io::stderr().lock();
    let mut buf: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        if tty {
            stdout.write_all(&data)?;
            stdout.flush()?;
            continue;
        }
        buf.extend_from_slice(&data);
        while buf.len() >= 8 {
            let len = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]) as usize;
            if buf.len() < 8 + len {
                break;
            }
            let payload = &buf[8..8 + len];
            if buf[0] == 2 {
                stderr.write_all(payload)?;
                stderr.flush()?;
            } else {
                stdout.write_all(payload)?;
                stdout.flush()?;
            }
            buf.drain(..8 + len);
        }
    }
    Ok(0)
}

/// `berth container prune` flags.
#[derive(Debug, clap::Args)]
pub struct PruneArgs {
    /// Provide filter values (e.g. "until=<timestamp>")
    #[arg(long = "filter")]
    filter: Vec<String>,
    /// Do not prompt for confirmation
    #[arg(short, long)]
    force: bool,
}

/// `berth container prune`.
pub async fn container_prune(c: &Client, a: &PruneArgs) -> Result<i32> {
    if !a.force {
        eprint!("WARNING! This will remove all stopped containers.\nAre you sure you want to continue? [y/N] ");
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            return Ok(0);
        }
    }
    let path = format!(
        "/containers/prune?filters={}",
        encode(&filters_json(&a.filter)?)
    );
    let resp = c.request(Method::POST, &path, Some(Vec::new())).await?;
    let bytes = resp.into_body().collect().await?.to_bytes();
    let v: Value = serde_json::from_slice(&bytes)?;
    if let Some(ids) = v["ContainersDeleted"].as_array().filter(|a| !a.is_empty()) {
        println!("Deleted Containers:");
        for id in ids {
            println!("{}", go_string(id));
        }
        println!();
    }
    println!(
        "Total reclaimed space: {}",
        human_size(v["SpaceReclaimed"].as_f64().unwrap_or(0.0))
    );
    Ok(0)
}
