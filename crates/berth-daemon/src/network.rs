//! Container networking in the daemon: the glue between container records and
//! `berth-network`'s [`NetworkManager`].
//!
//! It owns the daemon-side network lifecycle: opening and reconciling the manager at daemon
//! start, the embedded DNS servers, setting up a container's namespace, endpoints and
//! `/etc/{hosts,hostname,resolv.conf}` before its runtime starts, tearing them down when it
//! exits, connect/disconnect of running containers, and the `NetworkSettings` JSON of
//! container inspect and list. The `/networks` routes live in `api::networks`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_network::dns::DnsRegistry;
use berth_network::mode::NetworkMode as Mode;
use berth_network::store::{EndpointRecord, NetworkRecord};
use berth_network::{files, netns, ConnectRequest, NetworkManager, PortMapping, Proto};
use berth_runtime::spec::{MountKind, MountSpec, NetworkMode};
use bollard_stubs::models::EndpointSettings;
use serde_json::{json, Map, Value};

use crate::daemon::Daemon;
use crate::error::{Error, Result};
use crate::store::ContainerRecord;

/// The daemon's network state: the manager and the embedded DNS servers of user networks.
pub struct Networking {
    /// The network manager (state under `<data-root>/network`).
    pub mgr: Arc<NetworkManager>,
    dns: tokio::sync::Mutex<DnsRegistry>,
    exec_root: PathBuf,
    /// False with `--bridge none`: no default network, containers default to mode none.
    default_bridge: bool,
}

/// What a container's runtime spec needs from its network setup.
pub struct NetSetup {
    /// The network namespace to use.
    pub mode: NetworkMode,
    /// Bind mounts of `/etc/hosts`, `/etc/hostname` and `/etc/resolv.conf`.
    pub mounts: Vec<MountSpec>,
    /// A namespace file needed only until the container has joined it (`none`), unmounted
    /// then: running containers do not grow the host's mount table, which every start reads
    /// dozens of times (libcontainer).
    pub transient_netns: Option<PathBuf>,
}

impl From<berth_network::NetworkError> for Error {
    fn from(e: berth_network::NetworkError) -> Self {
        Error::Network(e)
    }
}

impl Networking {
    /// Loads the persisted network state; touches no kernel object (see [`Daemon::network_start`]).
    pub fn open(config: &crate::config::Config) -> Result<Self> {
        let mut cfg = berth_network::Config::new(config.data_root.join("network"))
            .with_instance(&config.network_instance);
        // Ready-made namespaces for container starts (see `berth_network::pool`).
        cfg.pool_dir = Some(config.exec_root.join("netns-pool"));
        let default_bridge = match config.bridge.as_deref() {
            Some("none") => false,
            Some(name) => {
                cfg.default_bridge = name.to_string();
                cfg.reclaim_default_bridge = false;
                true
            }
            None => true,
        };
        Ok(Networking {
            mgr: Arc::new(NetworkManager::open(cfg)?),
            dns: Default::default(),
            exec_root: config.exec_root.clone(),
            default_bridge,
        })
    }

    /// Starts embedded DNS servers for new networks and stops those of removed ones.
    pub async fn sync_dns(&self) {
        let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        if let Err(err) = self.dns.lock().await.sync(&self.mgr, &host).await {
            tracing::warn!(%err, "cannot sync embedded DNS servers");
        }
    }

    /// The persistent namespace file of container `id`.
    pub fn netns_path(&self, id: &str) -> PathBuf {
        berth_network::mode::netns_path(&self.exec_root, id)
    }

    /// The endpoints of container `id`, with their networks.
    pub fn endpoints_of(&self, id: &str) -> Vec<(NetworkRecord, EndpointRecord)> {
        self.mgr
            .list()
            .into_iter()
            .filter_map(|n| {
                let ep = n.endpoints.get(id).cloned()?;
                Some((n, ep))
            })
            .collect()
    }
}

/// Runs blocking network work off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(format!("network task: {e}")))?
}

fn endpoint_settings<'a>(r: &'a ContainerRecord, network: &str) -> Option<&'a EndpointSettings> {
    let eps = r.networking_config.as_ref()?.endpoints_config.as_ref()?;
    eps.get(network).or_else(|| {
        // The docker CLI names the default network's endpoint after the mode, `default`.
        (network == berth_network::DEFAULT_NETWORK)
            .then(|| eps.get("default"))
            .flatten()
    })
}

/// The network an EndpointsConfig key or NetworkMode names (`default` is `bridge`).
fn network_name(key: &str) -> &str {
    if key == "default" {
        berth_network::DEFAULT_NETWORK
    } else {
        key
    }
}

/// Docker's PortBindings plus, with PublishAllPorts, every exposed port on a random host port.
fn port_mappings(r: &ContainerRecord) -> Result<Vec<PortMapping>> {
    let mut out = Vec::new();
    let mut bound = HashSet::new();
    for (key, bindings) in r.host_config.port_bindings.iter().flatten() {
        let (port, proto) = parse_port_key(key)?;
        bound.insert(key.clone());
        let bindings = bindings.clone().unwrap_or_default();
        if bindings.is_empty() {
            out.push(PortMapping {
                host_ip: Ipv4Addr::UNSPECIFIED,
                host_port: 0,
                container_port: port,
                proto,
            });
        }
        for b in bindings {
            let host_ip = match b.host_ip.as_deref().filter(|s| !s.is_empty()) {
                Some(ip) => ip
                    .parse()
                    .map_err(|_| Error::InvalidParameter(format!("invalid host IP {ip:?}")))?,
                None => Ipv4Addr::UNSPECIFIED,
            };
            let host_port = match b.host_port.as_deref().filter(|s| !s.is_empty()) {
                Some(p) => p
                    .parse()
                    .map_err(|_| Error::InvalidParameter(format!("invalid host port {p:?}")))?,
                None => 0,
            };
            out.push(PortMapping {
                host_ip,
                host_port,
                container_port: port,
                proto,
            });
        }
    }
    if r.host_config.publish_all_ports == Some(true) {
        for key in r.config.exposed_ports.iter().flatten() {
            if bound.contains(key) {
                continue;
            }
            let (port, proto) = parse_port_key(key)?;
            out.push(PortMapping {
                host_ip: Ipv4Addr::UNSPECIFIED,
                host_port: 0,
                container_port: port,
                proto,
            });
        }
    }
    Ok(out)
}

/// `80/tcp` (or `80`) as a port and protocol.
fn parse_port_key(key: &str) -> Result<(u16, Proto)> {
    let (port, proto) = key.split_once('/').unwrap_or((key, "tcp"));
    let proto = match proto {
        "tcp" => Proto::Tcp,
        "udp" => Proto::Udp,
        other => {
            return Err(Error::InvalidParameter(format!(
                "invalid protocol {other:?} in port {key:?}"
            )))
        }
    };
    let port = port
        .parse()
        .map_err(|_| Error::InvalidParameter(format!("invalid port {key:?}")))?;
    Ok((port, proto))
}

fn short_id(id: &str) -> &str {
    &id[..id.len().min(12)]
}

fn bind_file(source: PathBuf, target: &str) -> MountSpec {
    MountSpec {
        kind: MountKind::Bind,
        source,
        target: target.into(),
        read_only: false,
        options: Vec::new(),
    }
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|e| Error::io(format!("write {}", path.display()), e))
}

impl Daemon {
    /// Daemon start (before containers are restored): reconciles the network state with the
    /// running containers, ensures the default `bridge` network and starts the DNS servers.
    pub async fn network_start(self: &Arc<Self>) {
        let live: HashSet<String> = self
            .containers
            .list()
            .into_iter()
            .filter(|r| r.state.running)
            .map(|r| r.id)
            .collect();
        let mgr = Arc::clone(&self.network.mgr);
        let default_bridge = self.network.default_bridge;
        let res = blocking(move || {
            let report = mgr.reconcile(&live)?;
            if !report.endpoints_removed.is_empty() || !report.links_removed.is_empty() {
                tracing::info!(?report, "network state reconciled");
            }
            if default_bridge {
                mgr.ensure_default()?;
            }
            mgr.start_pool();
            Ok(())
        })
        .await;
        if let Err(err) = res {
            tracing::error!(%err, "cannot set up container networking");
        }
        self.network.sync_dns().await;
    }

    /// Daemon shutdown: removes the pooled namespaces (containers keep theirs).
    pub async fn network_stop(self: &Arc<Self>) {
        let mgr = Arc::clone(&self.network.mgr);
        let _ = blocking(move || {
            mgr.stop_pool();
            Ok(())
        })
        .await;
    }

    /// Container start (blocking): creates the namespace, connects the container to its
    /// networks and writes its `/etc` files.
    pub fn network_setup(&self, r: &ContainerRecord) -> Result<NetSetup> {
        let mode = match r.host_config.network_mode.as_deref().unwrap_or("") {
            // As dockerd with `--bridge none` (an explicit `bridge` then finds no network).
            "" | "default" if !self.network.default_bridge => Mode::None,
            m => Mode::parse(m),
        };
        let dir = self.containers.dir(&r.id);
        let hostname = r
            .config
            .hostname
            .clone()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| short_id(&r.id).to_string());
        let files = |own: Option<&EndpointRecord>, dns: Option<Ipv4Addr>, host_hosts: bool| {
            let hc = &r.host_config;
            let extra: Vec<files::HostEntry> = hc
                .extra_hosts
                .iter()
                .flatten()
                .filter_map(|e| {
                    let (name, ip) = e.split_once(':')?;
                    Some(files::HostEntry {
                        ip: ip.parse().ok()?,
                        names: vec![name.to_string()],
                    })
                })
                .collect();
            let hosts = if host_hosts {
                std::fs::read_to_string("/etc/hosts").unwrap_or_default()
            } else {
                files::hosts_file(
                    &hostname,
                    None,
                    own.map(|e| e.ip),
                    own.and_then(|e| e.ip6),
                    &extra,
                )
            };
            let host_rc = files::parse_resolv_conf(
                &std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
            );
            let resolv = files::resolv_conf(
                &host_rc,
                dns,
                hc.dns.as_deref().unwrap_or_default(),
                hc.dns_search.as_deref().unwrap_or_default(),
                hc.dns_options.as_deref().unwrap_or_default(),
            );
            write(&dir.join("hosts"), &hosts)?;
            write(&dir.join("hostname"), &files::hostname_file(&hostname))?;
            write(&dir.join("resolv.conf"), &resolv)?;
            Ok::<_, Error>(vec![
                bind_file(dir.join("hosts"), "/etc/hosts"),
                bind_file(dir.join("hostname"), "/etc/hostname"),
                bind_file(dir.join("resolv.conf"), "/etc/resolv.conf"),
            ])
        };
        match &mode {
            Mode::Host => Ok(NetSetup {
                mode: NetworkMode::Host,
                mounts: files(None, None, true)?,
                transient_netns: None,
            }),
            Mode::None => {
                // Made ahead of time, its loopback up as in Docker; no endpoint to release, so a
                // namespace left by a run the daemon did not see end only needs unmounting.
                let path = self.network.netns_path(&r.id);
                netns::remove(&path)?;
                self.network.mgr.isolated_netns(&path)?;
                match files(None, None, false) {
                    Ok(mounts) => Ok(NetSetup {
                        mode: NetworkMode::Path(path.clone()),
                        mounts,
                        transient_netns: Some(path),
                    }),
                    Err(e) => {
                        let _ = netns::remove(&path);
                        Err(e)
                    }
                }
            }
            Mode::Container(other) => {
                let o = self.containers.get(other)?;
                if !o.state.running {
                    return Err(Error::Conflict(format!(
                        "cannot join network of a non running container: {}",
                        o.id
                    )));
                }
                let path = self.network.netns_path(&o.id);
                let ns = if netns::is_netns(&path) {
                    path
                } else {
                    PathBuf::from(format!("/proc/{}/ns/net", o.state.pid))
                };
                let odir = self.containers.dir(&o.id);
                let mounts = ["hosts", "hostname", "resolv.conf"]
                    .iter()
                    .filter(|f| odir.join(f).exists())
                    .map(|f| bind_file(odir.join(f), &format!("/etc/{f}")))
                    .collect();
                Ok(NetSetup {
                    mode: NetworkMode::Path(ns),
                    mounts,
                    transient_netns: None,
                })
            }
            Mode::Default | Mode::Bridge(_) => {
                let primary = mode.network().unwrap_or("bridge").to_string();
                let path = self.network.netns_path(&r.id);
                // A namespace left by a run the daemon did not see end.
                self.network_teardown(&r.id);
                match self.connect_all(r, &primary, &path) {
                    Ok((ep, dns)) => {
                        let mounts = files(Some(&ep), dns, false);
                        if mounts.is_err() {
                            self.network_teardown(&r.id);
                        }
                        Ok(NetSetup {
                            mode: NetworkMode::Path(path),
                            mounts: mounts?,
                            transient_netns: None,
                        })
                    }
                    Err(e) => {
                        self.network_teardown(&r.id);
                        Err(e)
                    }
                }
            }
        }
    }

    /// Connects a starting container to its primary network and to every other network of its
    /// EndpointsConfig. Returns its primary endpoint and embedded DNS server.
    fn connect_all(
        &self,
        r: &ContainerRecord,
        primary: &str,
        netns: &Path,
    ) -> Result<(EndpointRecord, Option<Ipv4Addr>)> {
        let primary_net = self.network.mgr.inspect(primary)?;
        let mut extra: Vec<String> = r
            .networking_config
            .as_ref()
            .and_then(|n| n.endpoints_config.as_ref())
            .map(|e| e.keys().map(|k| network_name(k).to_string()).collect())
            .unwrap_or_default();
        extra.sort();
        extra.dedup();
        let ports = port_mappings(r)?;
        // The primary connect makes the namespace (a pooled one when it can).
        let ep = self.connect_one(r, &primary_net, netns, ports, "eth0", true)?;
        let mut n = 1;
        for name in extra {
            let Ok(net) = self.network.mgr.inspect(&name) else {
                return Err(Error::NotFound(format!("network {name} not found")));
            };
            if net.id == primary_net.id {
                continue;
            }
            self.connect_one(r, &net, netns, Vec::new(), &format!("eth{n}"), false)?;
            n += 1;
        }
        let dns = (!primary_net.default_bridge).then_some(primary_net.gateway);
        Ok((ep, dns))
    }

    fn connect_one(
        &self,
        r: &ContainerRecord,
        net: &NetworkRecord,
        netns: &Path,
        ports: Vec<PortMapping>,
        ifname: &str,
        new_netns: bool,
    ) -> Result<EndpointRecord> {
        let settings = endpoint_settings(r, &net.name).or_else(|| endpoint_settings(r, &net.id));
        let mut aliases: Vec<String> = settings.and_then(|s| s.aliases.clone()).unwrap_or_default();
        if !net.default_bridge && !aliases.iter().any(|a| a == short_id(&r.id)) {
            aliases.push(short_id(&r.id).to_string());
        }
        let ip = settings
            .and_then(|s| s.ipam_config.as_ref())
            .and_then(|c| c.ipv4_address.as_deref())
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<Ipv4Addr>()
                    .map_err(|_| Error::InvalidParameter(format!("invalid IPv4 address {s:?}")))
            })
            .transpose()?;
        let ip6 = settings
            .and_then(|s| s.ipam_config.as_ref())
            .and_then(|c| c.ipv6_address.as_deref())
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<Ipv6Addr>()
                    .map_err(|_| Error::InvalidParameter(format!("invalid IPv6 address {s:?}")))
            })
            .transpose()?;
        let mac = settings
            .and_then(|s| s.mac_address.as_deref())
            .filter(|s| !s.is_empty())
            .map(|s| {
                berth_network::netlink::parse_mac(s)
                    .ok_or_else(|| Error::InvalidParameter(format!("invalid MAC address {s:?}")))
            })
            .transpose()?;
        if (ip.is_some() || ip6.is_some()) && net.default_bridge {
            return Err(Error::InvalidParameter(
                "user specified IP address is supported on user defined networks only".into(),
            ));
        }
        if ip6.is_some() && net.ipv6.is_none() {
            return Err(Error::InvalidParameter(format!(
                "invalid IPv6 address: network {} does not have IPv6 enabled",
                net.name
            )));
        }
        let ep = self.network.mgr.connect(
            &net.id,
            ConnectRequest {
                container_id: r.id.clone(),
                name: r.name.trim_start_matches('/').to_string(),
                aliases,
                links: settings
                    .and_then(|s| s.links.clone())
                    .unwrap_or_default()
                    .iter()
                    .map(|l| match l.split_once(':') {
                        Some((name, alias)) => (name.to_string(), alias.to_string()),
                        None => (l.clone(), l.clone()),
                    })
                    .collect(),
                ip,
                ip6,
                mac,
                ports,
                netns: netns.to_path_buf(),
                new_netns,
                ifname: Some(ifname.to_string()),
            },
        )?;
        self.network_event("connect", net, &[("container", r.id.clone())]);
        Ok(ep)
    }

    /// Container exit or removal (blocking): detaches it from every network and removes its
    /// namespace; the links are deleted in the background. Failures are logged: the container
    /// is gone either way.
    pub fn network_teardown(&self, id: &str) {
        let path = self.network.netns_path(id);
        match self.network.mgr.release_container(id, &path) {
            Ok(nets) => {
                for net in nets {
                    self.network_event("disconnect", &net, &[("container", id.into())]);
                }
            }
            Err(err) => tracing::warn!(%id, %err, "cannot release container networking"),
        }
    }

    /// Publishes a `network` event.
    pub fn network_event(&self, action: &str, net: &NetworkRecord, extra: &[(&str, String)]) {
        let mut attrs = BTreeMap::new();
        attrs.insert("name".to_string(), net.name.clone());
        attrs.insert("type".to_string(), "bridge".to_string());
        for (k, v) in extra {
            attrs.insert((*k).to_string(), v.clone());
        }
        self.events
            .publish(crate::events::Event::new("network", action, &net.id, attrs));
    }

    /// `POST /networks/{id}/connect`: records the endpoint config, and connects a running
    /// container into its namespace at once.
    pub async fn network_connect(
        self: &Arc<Self>,
        network: &str,
        container: &str,
        settings: EndpointSettings,
    ) -> Result<()> {
        let net = self.network.mgr.inspect(network)?;
        let r = self.containers.get(container)?;
        let mode = Mode::parse(r.host_config.network_mode.as_deref().unwrap_or(""));
        if mode.network().is_none() {
            return Err(Error::InvalidParameter(format!(
                "container sharing network namespace with another container or host cannot be connected to any other network: {}",
                r.name.trim_start_matches('/')
            )));
        }
        let already = if r.state.running {
            net.endpoints.contains_key(&r.id)
        } else {
            endpoint_settings(&r, &net.name).is_some()
        };
        if already {
            return Err(Error::Forbidden(format!(
                "endpoint with name {} already exists in network {}",
                r.name.trim_start_matches('/'),
                net.name
            )));
        }
        let (r, ()) = self.containers.update(&r.id, |rec| {
            let nc = rec.networking_config.get_or_insert_with(Default::default);
            nc.endpoints_config
                .get_or_insert_with(HashMap::new)
                .insert(net.name.clone(), settings.clone());
            Ok(())
        })?;
        if !r.state.running {
            return Ok(());
        }
        let d = Arc::clone(self);
        let res = blocking(move || {
            let path = d.network.netns_path(&r.id);
            // The lowest free ethN: earlier disconnects leave gaps.
            let names = berth_network::netlink::link_names_in(&path)?;
            let ifname = (0..)
                .map(|n| format!("eth{n}"))
                .find(|n| !names.contains(n))
                .unwrap_or_else(|| "eth0".into());
            d.connect_one(&r, &net, &path, Vec::new(), &ifname, false)
                .map(drop)
        })
        .await;
        if res.is_err() {
            let name = self.network.mgr.inspect(network).map(|n| n.name);
            let _ = self.containers.update(container, |rec| {
                if let (Some(eps), Ok(name)) = (
                    rec.networking_config
                        .as_mut()
                        .and_then(|n| n.endpoints_config.as_mut()),
                    name.as_ref(),
                ) {
                    eps.remove(name);
                }
                Ok(())
            });
        }
        res
    }

    /// `POST /networks/{id}/disconnect`.
    pub async fn network_disconnect(
        self: &Arc<Self>,
        network: &str,
        container: &str,
    ) -> Result<()> {
        let net = self.network.mgr.inspect(network)?;
        let r = self.containers.get(container)?;
        let configured =
            endpoint_settings(&r, &net.name).is_some() || endpoint_settings(&r, &net.id).is_some();
        let mode = Mode::parse(r.host_config.network_mode.as_deref().unwrap_or(""));
        let primary = mode.network().is_some_and(|p| p == net.name || p == net.id);
        let connected = net.endpoints.contains_key(&r.id);
        if !configured && !primary && !connected {
            return Err(Error::Forbidden(format!(
                "container {} is not connected to network {}",
                r.id, net.name
            )));
        }
        self.containers.update(&r.id, |rec| {
            if let Some(eps) = rec
                .networking_config
                .as_mut()
                .and_then(|n| n.endpoints_config.as_mut())
            {
                eps.remove(&net.name);
                eps.remove(&net.id);
            }
            Ok(())
        })?;
        if connected {
            let d = Arc::clone(self);
            let id = r.id.clone();
            let n2 = net.clone();
            blocking(move || {
                d.network.mgr.disconnect(&n2.id, &id)?;
                Ok(())
            })
            .await?;
            self.network_event("disconnect", &net, &[("container", r.id.clone())]);
        }
        Ok(())
    }

    /// `NetworkSettings` of container inspect, as dockerd fills it.
    pub fn network_settings(&self, r: &ContainerRecord) -> Value {
        let eps = if r.state.running {
            self.network.endpoints_of(&r.id)
        } else {
            Vec::new()
        };
        let mode = r.host_config.network_mode.clone().unwrap_or_default();
        let mut networks = Map::new();
        let mut ports = Map::new();
        let mut top = json!({"IPAddress": "", "Gateway": "", "MacAddress": "", "IPPrefixLen": 0,
            "IPv6Gateway": "", "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0});
        for (net, ep) in &eps {
            let aliases = if net.default_bridge {
                Value::Null
            } else {
                json!(ep.aliases)
            };
            let v6 = ep.ip6.zip(net.ipv6.as_ref());
            let v = json!({
                "IPAMConfig": endpoint_settings(r, &net.name).and_then(|s| s.ipam_config.clone()),
                "Links": endpoint_settings(r, &net.name).and_then(|s| s.links.clone()),
                "Aliases": aliases,
                "NetworkID": net.id,
                "EndpointID": format!("{}{}", net.id.get(..32).unwrap_or(&net.id), short_id(&r.id)),
                "Gateway": if net.internal { String::new() } else { net.gateway.to_string() },
                "IPAddress": ep.ip.to_string(),
                "IPPrefixLen": net.subnet.prefix_len(),
                "IPv6Gateway": v6
                    .filter(|_| !net.internal)
                    .map(|(_, n6)| n6.gateway.to_string())
                    .unwrap_or_default(),
                "GlobalIPv6Address": v6.map(|(ip, _)| ip.to_string()).unwrap_or_default(),
                "GlobalIPv6PrefixLen": v6.map(|(_, n6)| n6.subnet.prefix_len()).unwrap_or(0),
                "MacAddress": ep.mac,
                "DriverOpts": endpoint_settings(r, &net.name).and_then(|s| s.driver_opts.clone()),
            });
            if net.default_bridge {
                for k in [
                    "IPAddress",
                    "Gateway",
                    "MacAddress",
                    "IPPrefixLen",
                    "IPv6Gateway",
                    "GlobalIPv6Address",
                    "GlobalIPv6PrefixLen",
                ] {
                    top[k] = v[k].clone();
                }
            }
            for p in &ep.ports {
                let key = format!("{}/{}", p.container_port, p.proto.as_str());
                let entry = ports.entry(key).or_insert_with(|| json!([]));
                if let Some(a) = entry.as_array_mut() {
                    a.push(json!({"HostIp": p.host_ip.to_string(), "HostPort": p.host_port.to_string()}));
                }
            }
            networks.insert(net.name.clone(), v);
        }
        if !r.state.running {
            // A stopped container keeps its configured networks, without addresses.
            let mut names: Vec<String> = r
                .networking_config
                .as_ref()
                .and_then(|n| n.endpoints_config.as_ref())
                .map(|e| e.keys().cloned().collect())
                .unwrap_or_default();
            let mode = network_name(&mode).to_string();
            names = names.iter().map(|n| network_name(n).to_string()).collect();
            names.sort();
            names.dedup();
            let bridged =
                !matches!(mode.as_str(), "" | "host" | "none") && !mode.starts_with("container:");
            if bridged && !names.contains(&mode) {
                names.push(mode.clone());
            }
            for name in names {
                let id = self
                    .network
                    .mgr
                    .inspect(&name)
                    .map(|n| n.id)
                    .unwrap_or_default();
                // What was asked for, as Docker reports it until the container runs.
                let s = endpoint_settings(r, &name).cloned().unwrap_or_default();
                networks.insert(
                    name,
                    json!({"IPAMConfig": s.ipam_config, "Links": s.links, "Aliases": s.aliases,
                        "NetworkID": id, "EndpointID": "", "Gateway": "", "IPAddress": "",
                        "IPPrefixLen": 0, "IPv6Gateway": "", "GlobalIPv6Address": "",
                        "GlobalIPv6PrefixLen": 0, "MacAddress": s.mac_address.unwrap_or_default(),
                        "DriverOpts": s.driver_opts}),
                );
            }
        }
        for key in r.config.exposed_ports.iter().flatten() {
            ports.entry(key.clone()).or_insert(Value::Null);
        }
        let sandbox = if r.state.running && !eps.is_empty() {
            self.network.netns_path(&r.id).display().to_string()
        } else {
            String::new()
        };
        json!({
            "Bridge": "",
            "SandboxID": if sandbox.is_empty() { String::new() } else { r.id.clone() },
            "HairpinMode": false,
            "LinkLocalIPv6Address": "",
            "LinkLocalIPv6PrefixLen": 0,
            "Ports": ports,
            "SandboxKey": sandbox,
            "SecondaryIPAddresses": null,
            "SecondaryIPv6Addresses": null,
            "EndpointID": "",
            "Gateway": top["Gateway"],
            "GlobalIPv6Address": top["GlobalIPv6Address"],
            "GlobalIPv6PrefixLen": top["GlobalIPv6PrefixLen"],
            "IPAddress": top["IPAddress"],
            "IPPrefixLen": top["IPPrefixLen"],
            "IPv6Gateway": top["IPv6Gateway"],
            "MacAddress": top["MacAddress"],
            "Networks": networks,
        })
    }

    /// `Ports` and `NetworkSettings` of a container list entry.
    pub fn network_summary(&self, r: &ContainerRecord) -> (Value, Value) {
        let full = self.network_settings(r);
        let mut ports = Vec::new();
        if let Some(map) = full["Ports"].as_object() {
            for (key, bindings) in map {
                let Ok((port, proto)) = parse_port_key(key) else {
                    continue;
                };
                match bindings.as_array() {
                    Some(list) if !list.is_empty() => {
                        for b in list {
                            ports.push(json!({
                                "IP": b["HostIp"],
                                "PrivatePort": port,
                                "PublicPort": b["HostPort"].as_str().and_then(|p| p.parse::<u16>().ok()),
                                "Type": proto.as_str(),
                            }));
                        }
                    }
                    _ => ports.push(json!({"PrivatePort": port, "Type": proto.as_str()})),
                }
            }
        }
        (
            Value::Array(ports),
            json!({"Networks": full["Networks"].clone()}),
        )
    }
}
