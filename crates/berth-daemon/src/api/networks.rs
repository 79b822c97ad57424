//! `/networks` routes: list, inspect, create, remove, connect, disconnect and prune, in
//! Docker's JSON shapes. Behaviour is `berth-network`'s, reached through
//! [`crate::network`].

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use berth_network::store::NetworkRecord;
use berth_network::{CreateIpv6, CreateNetwork};
use bollard_stubs::models::EndpointSettings;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{empty, json_response, read_json, Body, Ctx};
use crate::daemon::Daemon;
use crate::error::{Error, Result};
use crate::network::blocking;

const LIST_FILTERS: &[&str] = &["name", "id", "label", "driver", "type", "dangling"];

/// Docker's network JSON; `containers` adds the `Containers` map of inspect.
fn network_json(d: &Daemon, n: &NetworkRecord, containers: bool) -> Value {
    // As dockerd: a configured subnet is shown as given, an allocated one with its gateway.
    let mut ipam_config = json!({"Subnet": n.subnet.to_string()});
    if !n.gateway_auto {
        ipam_config["Gateway"] = json!(n.gateway.to_string());
    }
    if n.ip_range != n.subnet {
        ipam_config["IPRange"] = json!(n.ip_range.to_string());
    }
    if !n.aux_addresses.is_empty() {
        ipam_config["AuxiliaryAddresses"] = json!(n.aux_addresses);
    }
    let mut ipam_configs = vec![ipam_config];
    if let Some(v6) = &n.ipv6 {
        let mut c = json!({"Subnet": v6.subnet.to_string()});
        if v6.gateway_given || !v6.subnet_given {
            c["Gateway"] = json!(v6.gateway.to_string());
        }
        if v6.ip_range != v6.subnet {
            c["IPRange"] = json!(v6.ip_range.to_string());
        }
        if !v6.aux_addresses.is_empty() {
            c["AuxiliaryAddresses"] = json!(v6.aux_addresses);
        }
        ipam_configs.push(c);
    }
    let mut options: BTreeMap<&str, String> = n
        .options
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    if n.default_bridge {
        options.insert(
            "com.docker.network.bridge.default_bridge",
            "true".to_string(),
        );
        options.insert("com.docker.network.bridge.enable_icc", "true".to_string());
        options.insert(
            "com.docker.network.bridge.enable_ip_masquerade",
            "true".to_string(),
        );
        options.insert(
            "com.docker.network.bridge.host_binding_ipv4",
            "0.0.0.0".to_string(),
        );
        options.insert("com.docker.network.bridge.name", n.bridge.clone());
        options.insert("com.docker.network.driver.mtu", n.mtu.to_string());
    }
    let mut eps = serde_json::Map::new();
    if containers {
        for (id, ep) in &n.endpoints {
            let name = d
                .containers
                .get(id)
                .map(|r| r.name.trim_start_matches('/').to_string())
                .unwrap_or_else(|_| ep.name.clone());
            eps.insert(
                id.clone(),
                json!({
                    "Name": name,
                    "EndpointID": format!("{}{}", n.id.get(..32).unwrap_or(&n.id), id.get(..12).unwrap_or(id)),
                    "MacAddress": ep.mac,
                    "IPv4Address": format!("{}/{}", ep.ip, n.subnet.prefix_len()),
                    "IPv6Address": match (ep.ip6, &n.ipv6) {
                        (Some(ip), Some(v6)) => format!("{ip}/{}", v6.subnet.prefix_len()),
                        _ => String::new(),
                    },
                }),
            );
        }
    }
    json!({
        "Name": n.name,
        "Id": n.id,
        "Created": crate::time::ZERO,
        "Scope": "local",
        "Driver": "bridge",
        "EnableIPv6": n.ipv6.is_some(),
        "IPAM": {"Driver": "default", "Options": null, "Config": ipam_configs},
        "Internal": n.internal,
        "Attachable": n.attachable,
        "Ingress": false,
        "ConfigFrom": {"Network": ""},
        "ConfigOnly": false,
        "Containers": eps,
        "Options": options,
        "Labels": n.labels,
    })
}

fn label_matches(labels: &BTreeMap<String, String>, l: &str) -> bool {
    match l.split_once('=') {
        Some((k, v)) => labels.get(k).is_some_and(|x| x == v),
        None => labels.contains_key(l),
    }
}

/// `GET /networks`.
pub fn list(ctx: &Ctx) -> Result<Response<Body>> {
    let f = ctx.query.filters()?;
    f.validate(LIST_FILTERS)?;
    for t in f.get("type") {
        if t != "custom" && t != "builtin" {
            return Err(Error::InvalidParameter(format!(
                "invalid filter: 'type'='{t}'"
            )));
        }
    }
    let dangling = match f.get("dangling") {
        [] => None,
        [v] if v == "true" || v == "1" => Some(true),
        [v] if v == "false" || v == "0" => Some(false),
        v => {
            return Err(Error::InvalidParameter(format!(
                "invalid filter 'dangling={}'",
                v.join(",")
            )))
        }
    };
    let mut nets = ctx.daemon.network.mgr.list();
    nets.sort_by(|a, b| a.name.cmp(&b.name));
    let out: Vec<Value> = nets
        .iter()
        .filter(|n| {
            f.matches_any("name", |x| n.name.contains(x))
                && f.matches_any("id", |x| n.id.starts_with(x))
                && f.matches_all("label", |l| label_matches(&n.labels, l))
                && f.matches_any("driver", |x| x == "bridge")
                && f.matches_any("type", |t| (t == "builtin") == n.default_bridge)
                && dangling.is_none_or(|d| d == (n.endpoints.is_empty() && !n.default_bridge))
        })
        .map(|n| network_json(&ctx.daemon, n, false))
        .collect();
    Ok(json_response(StatusCode::OK, &out))
}

/// `GET /networks/{id}`.
pub fn inspect(ctx: &Ctx, id: &str) -> Result<Response<Body>> {
    let n = ctx.daemon.network.mgr.inspect(id)?;
    Ok(json_response(
        StatusCode::OK,
        &network_json(&ctx.daemon, &n, true),
    ))
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct IpamConfig {
    subnet: Option<String>,
    gateway: Option<String>,
    #[serde(rename = "IPRange")]
    ip_range: Option<String>,
    auxiliary_addresses: Option<BTreeMap<String, String>>,
}

impl IpamConfig {
    /// True for an IPv6 config (by its subnet, else its gateway or range).
    fn is_ipv6(&self) -> bool {
        [&self.subnet, &self.gateway, &self.ip_range]
            .into_iter()
            .flatten()
            .find(|s| !s.is_empty())
            .is_some_and(|s| s.contains(':'))
    }
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty())
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct Ipam {
    driver: Option<String>,
    config: Option<Vec<IpamConfig>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct CreateBody {
    name: String,
    driver: Option<String>,
    internal: bool,
    attachable: bool,
    #[serde(rename = "EnableIPv6")]
    enable_ipv6: bool,
    #[serde(rename = "IPAM")]
    ipam: Option<Ipam>,
    options: Option<HashMap<String, String>>,
    labels: Option<BTreeMap<String, String>>,
}

/// `POST /networks/create`.
pub async fn create(ctx: &Ctx, req: Request<Incoming>) -> Result<Response<Body>> {
    let body: CreateBody = read_json(req).await?;
    if body.name.is_empty() {
        return Err(Error::InvalidParameter("network name is required".into()));
    }
    match body.driver.as_deref() {
        None | Some("") | Some("bridge") => {}
        Some(other) => return Err(Error::NotFound(format!("plugin \"{other}\" not found"))),
    }
    let ipam = body.ipam.unwrap_or_default();
    if let Some(d) = ipam
        .driver
        .as_deref()
        .filter(|d| !d.is_empty() && *d != "default")
    {
        return Err(Error::NotFound(format!("plugin \"{d}\" not found")));
    }
    // At most one config per address family, as the default IPAM driver of a bridge takes.
    let (mut v6s, mut v4s): (Vec<IpamConfig>, Vec<IpamConfig>) = ipam
        .config
        .unwrap_or_default()
        .into_iter()
        .partition(IpamConfig::is_ipv6);
    if v4s.len() > 1 {
        return Err(Error::NotImplemented("more than one IPv4 IPAM config"));
    }
    if v6s.len() > 1 {
        return Err(Error::NotImplemented("more than one IPv6 IPAM config"));
    }
    if !v6s.is_empty() && !body.enable_ipv6 {
        return Err(Error::InvalidParameter(
            "an IPv6 IPAM config requires EnableIPv6".into(),
        ));
    }
    let cfg = v4s.pop().unwrap_or_default();
    let ipv6 = body.enable_ipv6.then(|| {
        let c = v6s.pop().unwrap_or_default();
        CreateIpv6 {
            subnet: non_empty(c.subnet),
            gateway: non_empty(c.gateway),
            ip_range: non_empty(c.ip_range),
            aux_addresses: c.auxiliary_addresses.unwrap_or_default(),
        }
    });
    let options = body.options.unwrap_or_default();
    let mtu = options
        .get("com.docker.network.driver.mtu")
        .map(|m| {
            m.parse::<u32>()
                .map_err(|_| Error::InvalidParameter(format!("invalid mtu {m:?}")))
        })
        .transpose()?;
    let req = CreateNetwork {
        name: body.name,
        subnet: non_empty(cfg.subnet),
        gateway: non_empty(cfg.gateway),
        ip_range: non_empty(cfg.ip_range),
        internal: body.internal,
        attachable: body.attachable,
        mtu,
        bridge_name: options.get("com.docker.network.bridge.name").cloned(),
        labels: body.labels.unwrap_or_default(),
        options: options.into_iter().collect(),
        aux_addresses: cfg.auxiliary_addresses.unwrap_or_default(),
        ipv6,
    };
    let d = Arc::clone(&ctx.daemon);
    let n = blocking(move || Ok(d.network.mgr.create_network(req)?)).await?;
    ctx.daemon.network.sync_dns().await;
    ctx.daemon.network_event("create", &n, &[]);
    Ok(json_response(
        StatusCode::CREATED,
        &json!({"Id": n.id, "Warning": ""}),
    ))
}

async fn remove_one(d: &Arc<Daemon>, id: &str) -> Result<NetworkRecord> {
    let n = d.network.mgr.inspect(id)?;
    let d2 = Arc::clone(d);
    let nid = n.id.clone();
    blocking(move || Ok(d2.network.mgr.remove_network(&nid)?)).await?;
    d.network.sync_dns().await;
    d.network_event("destroy", &n, &[]);
    Ok(n)
}

/// `DELETE /networks/{id}`.
pub async fn remove(ctx: &Ctx, id: &str) -> Result<Response<Body>> {
    remove_one(&ctx.daemon, id).await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

/// `POST /networks/prune`: removes user networks without endpoints.
pub async fn prune(ctx: &Ctx) -> Result<Response<Body>> {
    let f = ctx.query.filters()?;
    f.validate(&["label", "label!", "until"])?;
    let mut deleted = Vec::new();
    for n in ctx.daemon.network.mgr.list() {
        if n.default_bridge || !n.endpoints.is_empty() {
            continue;
        }
        // A stopped container that is configured on the network still uses it.
        let used = ctx.daemon.containers.list().iter().any(|r| {
            r.host_config.network_mode.as_deref() == Some(n.name.as_str())
                || r.networking_config
                    .as_ref()
                    .and_then(|c| c.endpoints_config.as_ref())
                    .is_some_and(|e| e.contains_key(&n.name))
        });
        let keep = used
            || !f.matches_all("label", |l| label_matches(&n.labels, l))
            || f.get("label!").iter().any(|l| label_matches(&n.labels, l));
        if keep {
            continue;
        }
        if let Ok(n) = remove_one(&ctx.daemon, &n.id).await {
            deleted.push(n.name);
        }
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({"NetworksDeleted": deleted}),
    ))
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct ConnectBody {
    container: String,
    endpoint_config: Option<EndpointSettings>,
}

/// `POST /networks/{id}/connect`.
pub async fn connect(ctx: &Ctx, id: &str, req: Request<Incoming>) -> Result<Response<Body>> {
    let body: ConnectBody = read_json(req).await?;
    ctx.daemon
        .network_connect(
            id,
            &body.container,
            body.endpoint_config.unwrap_or_default(),
        )
        .await?;
    Ok(empty(StatusCode::OK))
}

/// `POST /networks/{id}/disconnect`.
pub async fn disconnect(ctx: &Ctx, id: &str, req: Request<Incoming>) -> Result<Response<Body>> {
    let body: ConnectBody = read_json(req).await?;
    ctx.daemon.network_disconnect(id, &body.container).await?;
    Ok(empty(StatusCode::OK))
}
