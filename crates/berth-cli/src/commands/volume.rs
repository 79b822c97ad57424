//! `volume create|ls|inspect|rm|prune`, and the `--mount`/`--volumes-from` parts of
//! `create`/`run` bodies (parsed by `berth-volume`, as the daemon parses `-v`).

use anyhow::{Context, Result};
use http_body_util::BodyExt;
use hyper::Method;
use serde_json::{json, Map, Value};

use super::{filters_json, human_size};
use crate::client::{encode, Client};
use crate::format::{go_string, print_inspected, print_rows};

const DEFAULT_LS: &str = "table {{.Driver}}\t{{.Name}}";

/// `berth volume` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum VolumeCommand {
    /// Create a volume
    Create {
        /// Specify volume driver name
        #[arg(short, long, default_value = "local")]
        driver: String,
        /// Set driver specific options
        #[arg(short = 'o', long = "opt")]
        opt: Vec<String>,
        /// Set metadata for a volume
        #[arg(long)]
        label: Vec<String>,
        /// Volume name (a random one when omitted)
        name: Option<String>,
    },
    /// List volumes
    #[command(visible_alias = "list")]
    Ls {
        /// Provide filter values (e.g. 'dangling=true')
        #[arg(short, long)]
        filter: Vec<String>,
        /// Format output using a custom template
        #[arg(long)]
        format: Option<String>,
        /// Only display volume names
        #[arg(short, long)]
        quiet: bool,
    },
    /// Display detailed information on one or more volumes
    Inspect {
        /// Format output using a custom template
        #[arg(short, long)]
        format: Option<String>,
        /// Volumes
        #[arg(required = true)]
        volumes: Vec<String>,
    },
    /// Remove one or more volumes
    #[command(visible_alias = "remove")]
    Rm {
        /// Force the removal of one or more volumes
        #[arg(short, long)]
        force: bool,
        /// Volumes
        #[arg(required = true)]
        volumes: Vec<String>,
    },
    /// Remove unused local volumes
    Prune {
        /// Remove all unused volumes, not just anonymous ones
        #[arg(short, long)]
        all: bool,
        /// Do not prompt for confirmation
        #[arg(short, long)]
        force: bool,
        /// Provide filter values (e.g. 'label=<label>')
        #[arg(long)]
        filter: Vec<String>,
    },
}

fn key_values(items: &[String]) -> Map<String, Value> {
    items
        .iter()
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap_or((l, ""));
            (k.to_string(), json!(v))
        })
        .collect()
}

async fn body_json(resp: hyper::Response<hyper::body::Incoming>) -> Result<Value> {
    let bytes = resp.into_body().collect().await?.to_bytes();
    serde_json::from_slice(&bytes).context("decode response")
}

/// `Labels` as the docker CLI's table shows them: `k=v,k2=v2`.
fn labels_column(labels: &Value) -> String {
    let mut pairs: Vec<String> = labels
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", go_string(v)))
        .collect();
    pairs.sort();
    pairs.join(",")
}

/// `berth volume ...`.
pub async fn volume(c: &Client, cmd: VolumeCommand) -> Result<i32> {
    match cmd {
        VolumeCommand::Create {
            driver,
            opt,
            label,
            name,
        } => {
            let body = json!({
                "Name": name.unwrap_or_default(),
                "Driver": driver,
                "DriverOpts": key_values(&opt),
                "Labels": key_values(&label),
            });
            let resp = c
                .request(
                    Method::POST,
                    "/volumes/create",
                    Some(body.to_string().into_bytes()),
                )
                .await?;
            println!("{}", go_string(&body_json(resp).await?["Name"]));
            Ok(0)
        }
        VolumeCommand::Ls {
            filter,
            format,
            quiet,
        } => {
            let path = format!("/volumes?filters={}", encode(&filters_json(&filter)?));
            let list: Value = c.get_json(&path).await?;
            let rows: Vec<Value> = list["Volumes"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|v| {
                    json!({"Name": v["Name"], "Driver": v["Driver"], "Scope": v["Scope"],
                        "Mountpoint": v["Mountpoint"], "Labels": labels_column(&v["Labels"])})
                })
                .collect();
            if quiet {
                for r in &rows {
                    println!("{}", go_string(&r["Name"]));
                }
                return Ok(0);
            }
            print_rows(
                format.as_deref().unwrap_or(DEFAULT_LS),
                &rows,
                &|f: &str| match f {
                    "Name" => "VOLUME NAME".into(),
                    other => other.to_uppercase(),
                },
            )
        }
        VolumeCommand::Inspect { format, volumes } => {
            let mut found = Vec::new();
            let mut code = 0;
            for v in &volumes {
                match c
                    .get_json::<Value>(&format!("/volumes/{}", encode(v)))
                    .await
                {
                    Ok(j) => found.push(j),
                    Err(_) => {
                        eprintln!("Error: No such volume: {v}");
                        code = 1;
                    }
                }
            }
            print_inspected(&found, format.as_deref())?;
            Ok(code)
        }
        VolumeCommand::Rm { force, volumes } => {
            let mut code = 0;
            for v in &volumes {
                let path = format!("/volumes/{}?force={}", encode(v), u8::from(force));
                match c.request(Method::DELETE, &path, None).await {
                    Ok(_) => println!("{v}"),
                    Err(err) => {
                        eprintln!("Error response from daemon: {err}");
                        code = 1;
                    }
                }
            }
            Ok(code)
        }
        VolumeCommand::Prune { all, force, filter } => {
            if !force {
                let what = if all { "all" } else { "anonymous" };
                eprint!("WARNING! This will remove {what} local volumes not used by at least one container.\nAre you sure you want to continue? [y/N] ");
                let mut answer = String::new();
                std::io::stdin().read_line(&mut answer)?;
                if !matches!(answer.trim(), "y" | "Y" | "yes") {
                    return Ok(0);
                }
            }
            let mut filter = filter;
            if all {
                filter.push("all=true".into());
            }
            let path = format!("/volumes/prune?filters={}", encode(&filters_json(&filter)?));
            let v = body_json(c.request(Method::POST, &path, Some(Vec::new())).await?).await?;
            if let Some(names) = v["VolumesDeleted"].as_array().filter(|a| !a.is_empty()) {
                println!("Deleted Volumes:");
                for n in names {
                    println!("{}", go_string(n));
                }
                println!();
            }
            let reclaimed = v["SpaceReclaimed"].as_f64().unwrap_or(0.0);
            println!("Total reclaimed space: {}", human_size(reclaimed));
            Ok(0)
        }
    }
}

/// `--mount` values as `HostConfig.Mounts` (Docker's API `Mount` objects).
pub(crate) fn mounts_json(specs: &[String]) -> Result<Vec<Value>> {
    specs
        .iter()
        .map(|s| {
            let m = berth_volume::spec::parse_mount_flag(s)
                .with_context(|| format!("invalid argument {s:?} for \"--mount\" flag"))?;
            serde_json::to_value(m).context("encode mount")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_flags_become_api_mounts() {
        let m = mounts_json(&["type=bind,src=/a,dst=/b,readonly".into()]).unwrap();
        assert_eq!(
            m[0],
            json!({"Type": "bind", "Source": "/a", "Target": "/b", "ReadOnly": true})
        );
        assert!(mounts_json(&["type=bind,src=/a".into()]).is_err());
        assert_eq!(labels_column(&json!({"b": "2", "a": "1"})), "a=1,b=2");
    }
}
