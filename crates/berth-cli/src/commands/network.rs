//! `network create|ls|inspect|rm|connect|disconnect|prune`, and the `-p`/`--ip`/
//! `--network-alias` parts of `create`/`run` bodies.

use anyhow::{bail, Context, Result};
use http_body_util::BodyExt;
use hyper::Method;
use serde_json::{json, Map, Value};

use super::filters_json;
use crate::client::{encode, Client};
use crate::format::{go_string, print_inspected, print_rows};

const DEFAULT_LS: &str = "table {{.ID}}\t{{.Name}}\t{{.Driver}}\t{{.Scope}}";

/// `berth network` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum NetworkCommand {
    /// Create a network
    Create {
        /// Driver to manage the Network
        #[arg(short, long, default_value = "bridge")]
        driver: String,
        /// Subnet in CIDR format that represents a network segment
        #[arg(long)]
        subnet: Option<String>,
        /// Gateway for the master subnet
        #[arg(long)]
        gateway: Option<String>,
        /// Allocate container ip from a sub-range
        #[arg(long)]
        ip_range: Option<String>,
        /// Restrict external access to the network
        #[arg(long)]
        internal: bool,
        /// Set metadata on a network
        #[arg(long)]
        label: Vec<String>,
        /// Set driver specific options
        #[arg(short, long = "opt")]
        opt: Vec<String>,
        /// Network name
        name: String,
    },
    /// List networks
    #[command(visible_alias = "list")]
    Ls {
        /// Provide filter values (e.g. 'driver=bridge')
        #[arg(short, long)]
        filter: Vec<String>,
        /// Pretty-print networks using a Go template
        #[arg(long)]
        format: Option<String>,
        /// Only display network IDs
        #[arg(short, long)]
        quiet: bool,
        /// Do not truncate the output
        #[arg(long)]
        no_trunc: bool,
    },
    /// Display detailed information on one or more networks
    Inspect {
        /// Format the output using the given Go template
        #[arg(short, long)]
        format: Option<String>,
        /// Networks
        #[arg(required = true)]
        networks: Vec<String>,
    },
    /// Remove one or more networks
    #[command(visible_alias = "remove")]
    Rm {
        /// Networks
        #[arg(required = true)]
        networks: Vec<String>,
    },
    /// Connect a container to a network
    Connect {
        /// Add network-scoped alias for the container
        #[arg(long)]
        alias: Vec<String>,
        /// IPv4 address (e.g., 172.30.100.104)
        #[arg(long)]
        ip: Option<String>,
        /// Network
        network: String,
        /// Container
        container: String,
    },
    /// Disconnect a container from a network
    Disconnect {
        /// Force the container to disconnect from a network
        #[arg(short, long)]
        force: bool,
        /// Network
        network: String,
        /// Container
        container: String,
    },
    /// Remove all unused networks
    Prune {
        /// Do not prompt for confirmation
        #[arg(short, long)]
        force: bool,
        /// Provide filter values (e.g. 'until=<timestamp>')
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

/// `berth network ...`.
pub async fn network(c: &Client, cmd: NetworkCommand) -> Result<i32> {
    match cmd {
        NetworkCommand::Create {
            driver,
            subnet,
            gateway,
            ip_range,
            internal,
            label,
            opt,
            name,
        } => {
            let mut config = Map::new();
            for (k, v) in [
                ("Subnet", subnet),
                ("Gateway", gateway),
                ("IPRange", ip_range),
            ] {
                if let Some(v) = v {
                    config.insert(k.into(), json!(v));
                }
            }
            let ipam_config = if config.is_empty() {
                json!([])
            } else {
                json!([config])
            };
            let body = json!({
                "Name": name,
                "CheckDuplicate": true,
                "Driver": driver,
                "Internal": internal,
                "IPAM": {"Driver": "default", "Config": ipam_config},
                "Options": key_values(&opt),
                "Labels": key_values(&label),
            });
            let resp = c
                .request(
                    Method::POST,
                    "/networks/create",
                    Some(body.to_string().into_bytes()),
                )
                .await?;
            println!("{}", go_string(&body_json(resp).await?["Id"]));
            Ok(0)
        }
        NetworkCommand::Ls {
            filter,
            format,
            quiet,
            no_trunc,
        } => {
            let path = format!("/networks?filters={}", encode(&filters_json(&filter)?));
            let nets: Vec<Value> = c.get_json(&path).await?;
            let rows: Vec<Value> = nets
                .iter()
                .map(|n| {
                    let id = go_string(&n["Id"]);
                    let id = if no_trunc {
                        id
                    } else {
                        id.chars().take(12).collect()
                    };
                    json!({"ID": id, "Name": n["Name"], "Driver": n["Driver"], "Scope": n["Scope"],
                        "Internal": n["Internal"], "Labels": n["Labels"]})
                })
                .collect();
            if quiet {
                for r in &rows {
                    println!("{}", go_string(&r["ID"]));
                }
                return Ok(0);
            }
            print_rows(
                format.as_deref().unwrap_or(DEFAULT_LS),
                &rows,
                &|f: &str| match f {
                    "ID" => "NETWORK ID".into(),
                    other => other.to_uppercase(),
                },
            )
        }
        NetworkCommand::Inspect { format, networks } => {
            let mut found = Vec::new();
            let mut code = 0;
            for n in &networks {
                match c
                    .get_json::<Value>(&format!("/networks/{}", encode(n)))
                    .await
                {
                    Ok(v) => found.push(v),
                    Err(err) => {
                        eprintln!("Error: No such network: {n} ({err})");
                        code = 1;
                    }
                }
            }
            print_inspected(&found, format.as_deref())?;
            Ok(code)
        }
        NetworkCommand::Rm { networks } => {
            let mut code = 0;
            for n in &networks {
                match c
                    .request(Method::DELETE, &format!("/networks/{}", encode(n)), None)
                    .await
                {
                    Ok(_) => println!("{n}"),
                    Err(err) => {
                        eprintln!("Error response from daemon: {err}");
                        code = 1;
                    }
                }
            }
            Ok(code)
        }
        NetworkCommand::Connect {
            alias,
            ip,
            network,
            container,
        } => {
            let mut ep = json!({"Aliases": alias});
            if let Some(ip) = ip {
                ep["IPAMConfig"] = json!({"IPv4Address": ip});
            }
            let body = json!({"Container": container, "EndpointConfig": ep});
            let path = format!("/networks/{}/connect", encode(&network));
            c.request(Method::POST, &path, Some(body.to_string().into_bytes()))
                .await?;
            Ok(0)
        }
        NetworkCommand::Disconnect {
            force,
            network,
            container,
        } => {
            let body = json!({"Container": container, "Force": force});
            let path = format!("/networks/{}/disconnect", encode(&network));
            c.request(Method::POST, &path, Some(body.to_string().into_bytes()))
                .await?;
            Ok(0)
        }
        NetworkCommand::Prune { force, filter } => {
            if !force {
                eprint!("WARNING! This will remove all custom networks not used by at least one container.\nAre you sure you want to continue? [y/N] ");
                let mut answer = String::new();
                std::io::stdin().read_line(&mut answer)?;
                if !matches!(answer.trim(), "y" | "Y" | "yes") {
                    return Ok(0);
                }
            }
            let path = format!(
                "/networks/prune?filters={}",
                encode(&filters_json(&filter)?)
            );
            let v = body_json(c.request(Method::POST, &path, Some(Vec::new())).await?).await?;
            if let Some(names) = v["NetworksDeleted"].as_array().filter(|a| !a.is_empty()) {
                println!("Deleted Networks:");
                for n in names {
                    println!("{}", go_string(n));
                }
            }
            Ok(0)
        }
    }
}

/// `-p` specs (`[ip:][hostPort:]containerPort[/proto]`) as HostConfig.PortBindings, and the
/// ports they expose.
pub(crate) fn port_bindings(specs: &[String]) -> Result<(Map<String, Value>, Vec<String>)> {
    let mut bindings: Map<String, Value> = Map::new();
    let mut exposed = Vec::new();
    for spec in specs {
        let (body, proto) = match spec.rsplit_once('/') {
            Some((b, p @ ("tcp" | "udp"))) => (b, p),
            Some(_) => bail!("invalid proto in port spec {spec:?}"),
            None => (spec.as_str(), "tcp"),
        };
        let parts: Vec<&str> = body.split(':').collect();
        let (ip, host, container) = match parts.as_slice() {
            [c] => ("", "", *c),
            [h, c] => ("", *h, *c),
            [i, h, c] => (*i, *h, *c),
            _ => bail!("invalid port spec {spec:?}"),
        };
        container
            .parse::<u16>()
            .with_context(|| format!("invalid container port in {spec:?}"))?;
        if !host.is_empty() {
            host.parse::<u16>()
                .with_context(|| format!("invalid host port in {spec:?}"))?;
        }
        let key = format!("{container}/{proto}");
        if !exposed.contains(&key) {
            exposed.push(key.clone());
        }
        let entry = bindings.entry(key).or_insert_with(|| json!([]));
        if let Some(a) = entry.as_array_mut() {
            a.push(json!({"HostIp": ip, "HostPort": host}));
        }
    }
    Ok((bindings, exposed))
}

/// The networking flags of `create`/`run`.
pub(crate) struct RunNetworkFlags<'a> {
    pub network: &'a str,
    pub publish: &'a [String],
    pub publish_all: bool,
    pub ip: Option<&'a str>,
    pub aliases: &'a [String],
}

/// Adds PortBindings, PublishAllPorts, ExposedPorts and the endpoint config of `--network`
/// to a container create body.
pub(crate) fn apply_run_flags(body: &mut Value, f: &RunNetworkFlags<'_>) -> Result<()> {
    let (bindings, exposed) = port_bindings(f.publish)?;
    body["HostConfig"]["PortBindings"] = Value::Object(bindings);
    body["HostConfig"]["PublishAllPorts"] = json!(f.publish_all);
    if !exposed.is_empty() {
        let map: Map<String, Value> = exposed.into_iter().map(|k| (k, json!({}))).collect();
        body["ExposedPorts"] = Value::Object(map);
    }
    if f.ip.is_some() || !f.aliases.is_empty() {
        let mut ep = json!({"Aliases": f.aliases});
        if let Some(ip) = f.ip {
            ep["IPAMConfig"] = json!({"IPv4Address": ip});
        }
        body["NetworkingConfig"] = json!({"EndpointsConfig": {f.network: ep}});
    }
    Ok(())
}

/// The `PORTS` column of `ps`: `127.0.0.1:8080->80/tcp`, or `80/tcp` when unpublished.
pub(crate) fn ports_column(ports: &Value) -> String {
    let mut out: Vec<(u64, String)> = ports
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let private = format!("{}/{}", p["PrivatePort"], go_string(&p["Type"]));
            let text = match p["PublicPort"].as_u64() {
                Some(public) => format!("{}:{public}->{private}", go_string(&p["IP"])),
                None => private,
            };
            (p["PrivatePort"].as_u64().unwrap_or(0), text)
        })
        .collect();
    // As docker orders them: by container port.
    out.sort();
    out.dedup();
    out.into_iter()
        .map(|(_, t)| t)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The `NETWORKS` column of `ps`.
pub(crate) fn networks_column(settings: &Value) -> String {
    let mut names: Vec<&String> = settings["Networks"]
        .as_object()
        .map(|m| m.keys().collect())
        .unwrap_or_default();
    names.sort();
    names
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(",")
}
