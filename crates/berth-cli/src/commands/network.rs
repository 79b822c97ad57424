//! `network create|ls|inspect|rm|connect|disconnect|prune`, and the `-p`/`--ip`/`--ip6`/
//! `--network-alias` parts of `create`/`run` bodies.

use std::net::IpAddr;

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
        subnet: Vec<String>,
        /// IPv4 or IPv6 Gateway for the master subnet
        #[arg(long)]
        gateway: Vec<String>,
        /// Allocate container ip from a sub-range
        #[arg(long)]
        ip_range: Vec<String>,
        /// Auxiliary IPv4 or IPv6 addresses used by Network driver
        #[arg(long = "aux-address")]
        aux_address: Vec<String>,
        /// IP Address Management Driver
        #[arg(long, default_value = "default")]
        ipam_driver: String,
        /// Enable or disable IPv6 networking
        #[arg(long)]
        ipv6: bool,
        /// Restrict external access to the network
        #[arg(long)]
        internal: bool,
        /// Enable manual container attachment
        #[arg(long)]
        attachable: bool,
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
        /// IPv6 address (e.g., 2001:db8::33)
        #[arg(long)]
        ip6: Option<String>,
        /// Add a link to another container
        #[arg(long)]
        link: Vec<String>,
        /// Add a link-local address for the container
        #[arg(long)]
        link_local_ip: Vec<String>,
        /// Driver options for the network
        #[arg(long)]
        driver_opt: Vec<String>,
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
            aux_address,
            ipam_driver,
            ipv6,
            internal,
            attachable,
            label,
            opt,
            name,
        } => {
            let ipam_config = consolidate_ipam(&subnet, &ip_range, &gateway, &aux_address)?;
            let body = json!({
                "Name": name,
                "CheckDuplicate": true,
                "Driver": driver,
                "Internal": internal,
                "Attachable": attachable,
                "EnableIPv6": ipv6,
                "IPAM": {"Driver": ipam_driver, "Config": ipam_config},
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
            ip6,
            link,
            link_local_ip,
            driver_opt,
            network,
            container,
        } => {
            let mut ep = json!({"Aliases": alias});
            if let Some(ipam) = ipam_endpoint(ip.as_deref(), ip6.as_deref(), &link_local_ip) {
                ep["IPAMConfig"] = ipam;
            }
            if !link.is_empty() {
                ep["Links"] = json!(link);
            }
            if !driver_opt.is_empty() {
                ep["DriverOpts"] = Value::Object(key_values(&driver_opt));
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
    pub ip6: Option<&'a str>,
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
    if f.ip.is_some() || f.ip6.is_some() || !f.aliases.is_empty() {
        let mut ep = json!({"Aliases": f.aliases});
        if let Some(ipam) = ipam_endpoint(f.ip, f.ip6, &[]) {
            ep["IPAMConfig"] = ipam;
        }
        body["NetworkingConfig"] = json!({"EndpointsConfig": {f.network: ep}});
    }
    Ok(())
}

/// An endpoint's `IPAMConfig` from `--ip`, `--ip6` and `--link-local-ip`, if any is given.
fn ipam_endpoint(ip: Option<&str>, ip6: Option<&str>, link_local: &[String]) -> Option<Value> {
    if ip.is_none() && ip6.is_none() && link_local.is_empty() {
        return None;
    }
    let mut c = Map::new();
    if let Some(ip) = ip {
        c.insert("IPv4Address".into(), json!(ip));
    }
    if let Some(ip6) = ip6 {
        c.insert("IPv6Address".into(), json!(ip6));
    }
    if !link_local.is_empty() {
        c.insert("LinkLocalIPs".into(), json!(link_local));
    }
    Some(Value::Object(c))
}

/// `a.b.c.d/n` or `x::y/n` as its address and prefix length; a bare address is a host route.
fn parse_cidr(s: &str) -> Result<(IpAddr, u8)> {
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let ip: IpAddr = addr
        .parse()
        .with_context(|| format!("invalid address {s:?}"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = match len {
        Some(l) => l
            .parse::<u8>()
            .ok()
            .filter(|l| *l <= max)
            .with_context(|| format!("invalid CIDR address: {s}"))?,
        None => max,
    };
    Ok((ip, len))
}

/// Whether `data` (an address or CIDR) lies in `subnet`, as the docker CLI matches them.
fn subnet_matches(subnet: &str, data: &str) -> Result<bool> {
    let (net, len) = parse_cidr(subnet)?;
    let (ip, _) = parse_cidr(data)?;
    let masked = |ip: IpAddr| -> Option<u128> {
        let (bits, width) = match ip {
            IpAddr::V4(v4) => (u128::from(u32::from(v4)), 32u32),
            IpAddr::V6(v6) => (u128::from(v6), 128),
        };
        let host = width.checked_sub(u32::from(len))?;
        Some(bits.checked_shr(host).unwrap_or(0))
    };
    Ok(net.is_ipv4() == ip.is_ipv4() && masked(net) == masked(ip))
}

/// The docker CLI's `network create` IPAM: one config per `--subnet`, each `--ip-range`,
/// `--gateway` and `--aux-address host=ip` put on the subnet that contains it.
fn consolidate_ipam(
    subnets: &[String],
    ranges: &[String],
    gateways: &[String],
    aux: &[String],
) -> Result<Vec<Value>> {
    if subnets.len() < ranges.len() || subnets.len() < gateways.len() {
        bail!("every ip-range or gateway must have a corresponding subnet");
    }
    for s in subnets {
        parse_cidr(s)?;
    }
    for (i, a) in subnets.iter().enumerate() {
        for b in &subnets[i + 1..] {
            if subnet_matches(a, b)? || subnet_matches(b, a)? {
                bail!("multiple overlapping subnet configuration is not supported");
            }
        }
    }
    let mut configs: Vec<Map<String, Value>> = subnets
        .iter()
        .map(|s| {
            let mut m = Map::new();
            m.insert("Subnet".into(), json!(s));
            m
        })
        .collect();
    // `what` and `on` word the error as the docker CLI does.
    let mut place = |values: &[String], key: &str, what: &str, on: &str| -> Result<()> {
        for v in values {
            let mut matched = false;
            for (s, c) in subnets.iter().zip(configs.iter_mut()) {
                if !subnet_matches(s, v)? {
                    continue;
                }
                if let Some(prev) = c.get(key) {
                    bail!(
                        "cannot configure multiple {what}s ({v}, {}) {on} the same subnet ({s})",
                        go_string(prev)
                    );
                }
                c.insert(key.into(), json!(v));
                matched = true;
            }
            if !matched {
                bail!("no matching subnet for {what} {v}");
            }
        }
        Ok(())
    };
    place(ranges, "IPRange", "range", "on")?;
    place(gateways, "Gateway", "gateway", "for")?;
    for a in aux {
        let (host, ip) = a
            .split_once('=')
            .with_context(|| format!("invalid aux-address {a:?}: expected host=ip"))?;
        let mut matched = false;
        for (s, c) in subnets.iter().zip(configs.iter_mut()) {
            if subnet_matches(s, ip)? {
                let aux = c.entry("AuxiliaryAddresses").or_insert_with(|| json!({}));
                aux[host] = json!(ip);
                matched = true;
            }
        }
        if !matched {
            bail!("no matching subnet for aux-address {ip}");
        }
    }
    Ok(configs.into_iter().map(Value::Object).collect())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn ipam_configs_per_subnet() {
        let c = consolidate_ipam(
            &strings(&["10.9.0.0/16", "fd00:9::/64"]),
            &strings(&["10.9.1.0/24"]),
            &strings(&["fd00:9::1", "10.9.0.254"]),
            &strings(&["r=10.9.0.2", "s=fd00:9::2"]),
        )
        .unwrap();
        assert_eq!(
            Value::Array(c),
            json!([
                {"Subnet": "10.9.0.0/16", "IPRange": "10.9.1.0/24", "Gateway": "10.9.0.254",
                 "AuxiliaryAddresses": {"r": "10.9.0.2"}},
                {"Subnet": "fd00:9::/64", "Gateway": "fd00:9::1",
                 "AuxiliaryAddresses": {"s": "fd00:9::2"}},
            ])
        );
        assert!(consolidate_ipam(&[], &[], &[], &[]).unwrap().is_empty());
    }

    #[test]
    fn ipam_mismatches_are_refused() {
        let err = |s: &[&str], r: &[&str], g: &[&str], a: &[&str]| {
            consolidate_ipam(&strings(s), &strings(r), &strings(g), &strings(a))
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            err(&[], &[], &["10.0.0.1"], &[]),
            "every ip-range or gateway must have a corresponding subnet"
        );
        assert_eq!(
            err(&["10.0.0.0/8", "10.1.0.0/16"], &[], &[], &[]),
            "multiple overlapping subnet configuration is not supported"
        );
        assert_eq!(
            err(&["10.0.0.0/24"], &[], &["10.0.1.1"], &[]),
            "no matching subnet for gateway 10.0.1.1"
        );
        assert_eq!(
            err(&["10.0.0.0/24", "10.0.1.0/24"], &[], &["10.0.0.1", "10.0.0.2"], &[]),
            "cannot configure multiple gateways (10.0.0.2, 10.0.0.1) for the same subnet (10.0.0.0/24)"
        );
        assert_eq!(
            err(&["10.0.0.0/24"], &[], &[], &["h=10.0.9.1"]),
            "no matching subnet for aux-address 10.0.9.1"
        );
        assert!(err(&["10.0.0.0/33"], &[], &[], &[]).contains("invalid CIDR"));
    }

    #[test]
    fn endpoint_ipam() {
        assert_eq!(ipam_endpoint(None, None, &[]), None);
        assert_eq!(
            ipam_endpoint(Some("10.0.0.5"), Some("fd00::5"), &[]),
            Some(json!({"IPv4Address": "10.0.0.5", "IPv6Address": "fd00::5"}))
        );
    }
}
