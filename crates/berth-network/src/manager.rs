//! The network manager: the one place that turns requests (create/remove network,
//! connect/disconnect a container) into consistent changes of persisted state, kernel links
//! and firewall rules. Every operation builds the new state first, applies it to the kernel,
//! persists it, and undoes the kernel side if a later step fails, so a failed call leaves no
//! half-made interface or rule. State is guarded by one mutex: network operations are rare
//! and short.

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use crate::error::{NetworkError, Result};
use crate::firewall;
use crate::ipam::{self, Allocations, Ipv4Net, Ipv6Net, Subnet};
use crate::netlink::{self, ContainerIface};
use crate::netns;
use crate::pool::{Pool, POOL_OWNER, RELEASING_OWNER};
use crate::ports::{self, PortMapping};
use crate::store::{self, EndpointRecord, Ipv6Record, NetworkRecord, State};

/// Name of Docker's default network.
pub const DEFAULT_NETWORK: &str = "bridge";

/// Naming and placement knobs. The defaults are what the daemon uses; tests override the
/// prefixes and table so that parallel runs never see each other's objects.
#[derive(Debug, Clone)]
pub struct Config {
    /// Directory holding `networks.json`.
    pub state_dir: PathBuf,
    /// Bridge of the default network.
    pub default_bridge: String,
    /// Whether reconcile may delete `default_bridge` when the state does not own it. False
    /// for a bridge the operator named (`--bridge`): it may well be theirs.
    pub reclaim_default_bridge: bool,
    /// Prefix of user-defined bridges (`bb-` + 12 hex = 15 bytes).
    pub bridge_prefix: String,
    /// Prefix of host-side veths.
    pub veth_prefix: String,
    /// nftables table name (one table in family `ip`, one in `ip6`).
    pub table: String,
    pub default_mtu: u32,
    /// Where pooled namespaces are pinned (see [`crate::pool`]); `None` pools nothing.
    pub pool_dir: Option<PathBuf>,
    /// Ready namespaces kept per pooled network.
    pub pool_size: usize,
}

impl Config {
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        Self {
            state_dir: state_dir.into(),
            default_bridge: "berth0".into(),
            reclaim_default_bridge: true,
            bridge_prefix: "bb-".into(),
            veth_prefix: "bv".into(),
            table: firewall::TABLE.into(),
            default_mtu: 1500,
            pool_dir: None,
            pool_size: 2,
        }
    }

    /// The names of daemon instance `tag` (see `berth daemon --network-instance`): every
    /// host-side object it creates carries the tag, so that daemons sharing a host never
    /// touch each other's links or rules. An empty tag gives the defaults.
    pub fn with_instance(mut self, tag: &str) -> Self {
        if !tag.is_empty() {
            // The `-` keeps tagged names out of the untagged patterns (prefix + hex only)
            // and out of each other's (no tag is a prefix of another followed by `-`).
            self.default_bridge = format!("berth-{tag}");
            self.bridge_prefix = format!("bb{tag}-");
            self.veth_prefix = format!("bv{tag}-");
            self.table = format!("{}-{tag}", firewall::TABLE);
        }
        self
    }
}

/// Parameters of `docker network create`.
#[derive(Debug, Clone, Default)]
pub struct CreateNetwork {
    pub name: String,
    pub subnet: Option<String>,
    pub gateway: Option<String>,
    pub ip_range: Option<String>,
    pub internal: bool,
    /// `--attachable`.
    pub attachable: bool,
    pub mtu: Option<u32>,
    /// `com.docker.network.bridge.name`.
    pub bridge_name: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub options: BTreeMap<String, String>,
    /// IPAM `AuxiliaryAddresses` of the IPv4 config: name to address.
    pub aux_addresses: BTreeMap<String, String>,
    /// `EnableIPv6`: the IPv6 side of the network.
    pub ipv6: Option<CreateIpv6>,
}

/// The IPv6 IPAM config of `docker network create --ipv6`; every field is optional (no
/// subnet means a random unique-local /64).
#[derive(Debug, Clone, Default)]
pub struct CreateIpv6 {
    pub subnet: Option<String>,
    pub gateway: Option<String>,
    pub ip_range: Option<String>,
    pub aux_addresses: BTreeMap<String, String>,
}

/// Parameters of attaching a container to a network.
#[derive(Debug, Clone, Default)]
pub struct ConnectRequest {
    pub container_id: String,
    /// Container name without the leading slash.
    pub name: String,
    pub aliases: Vec<String>,
    /// `(target container name, alias)` from `--link target:alias`.
    pub links: Vec<(String, String)>,
    /// Static address (`--ip`).
    pub ip: Option<Ipv4Addr>,
    /// Static IPv6 address (`--ip6`); the network must have IPv6 enabled.
    pub ip6: Option<Ipv6Addr>,
    /// Static MAC address (`--mac-address`); else Docker's 02:42 + IPv4 address.
    pub mac: Option<[u8; 6]>,
    pub ports: Vec<PortMapping>,
    /// The container's network namespace file.
    pub netns: PathBuf,
    /// `connect` makes the namespace at `netns` itself: a pooled one when the request names
    /// no static address or MAC (the first network of a starting container), else a new one.
    pub new_netns: bool,
    /// Interface name inside the namespace; `eth0` when empty (then `eth1`... for further
    /// networks is the caller's choice).
    pub ifname: Option<String>,
}

/// What [`NetworkManager::reconcile`] removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReconcileReport {
    pub endpoints_removed: Vec<String>,
    pub links_removed: Vec<String>,
}

/// Owner of Berth's bridge networks.
#[derive(Debug)]
pub struct NetworkManager {
    cfg: Config,
    state: Mutex<State>,
    /// The ruleset last loaded into nftables. Most container starts publish no port and do
    /// not change it, so they skip the `nft` run entirely.
    applied: Mutex<Option<AppliedFirewall>>,
    /// Counts commits, each counted before its firewall sync: a deferred sync (the pool's
    /// worker) applies its snapshot of the state only while no commit came after it, since
    /// that one synced the firewall itself or queued another deferred sync.
    commits: std::sync::atomic::AtomicU64,
    pub(crate) pool: Pool,
}

/// What nftables holds: the table's chains and rules, and the published ports.
#[derive(Debug)]
struct AppliedFirewall {
    structure: String,
    ports: std::collections::BTreeSet<firewall::PortElement>,
}

/// How many hex digits fit after `prefix` in a 15-byte interface name, at most `max`.
fn hex_room(prefix: &str, max: usize) -> usize {
    15usize.saturating_sub(prefix.len()).min(max)
}

fn short_hash(s: &str) -> String {
    // FNV-1a: stable across releases, unlike std's hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        // Docker accepts any name (spaces included); names never reach a shell, nftables
        // or a link name, so only path separators and control characters are refused.
        && name.chars().all(|c| c != '/' && !c.is_control())
}

impl NetworkManager {
    /// Loads persisted state (an absent file means no networks yet).
    pub fn open(cfg: Config) -> Result<Self> {
        let state = store::load(&cfg.state_dir.join("networks.json"))?;
        Ok(Self {
            pool: Pool::new(cfg.pool_dir.clone(), cfg.pool_size),
            cfg,
            state: Mutex::new(state),
            applied: Mutex::new(None),
            commits: std::sync::atomic::AtomicU64::new(0),
        })
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic mid-operation leaves the last committed state, which is still coherent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn state_path(&self) -> PathBuf {
        self.cfg.state_dir.join("networks.json")
    }

    /// Loads the rules `st` implies unless they are what nftables already holds: only the
    /// port map elements that changed when the chains are the same, the whole table else.
    pub(crate) fn sync_firewall(&self, st: &State, force: bool) -> Result<()> {
        self.sync_firewall_since(st, force, None)
    }

    /// The state and the commit count for a deferred [`Self::sync_firewall_snapshot`], taken
    /// together under the state lock.
    pub(crate) fn firewall_snapshot(&self) -> (State, u64) {
        let st = self.lock();
        (
            st.clone(),
            self.commits.load(std::sync::atomic::Ordering::SeqCst),
        )
    }

    /// [`Self::sync_firewall`] from a snapshot, without holding the state lock (an `nft` run
    /// must not hold up container starts and removals); nothing happens when a commit came
    /// after the snapshot.
    pub(crate) fn sync_firewall_snapshot(&self, st: &State, commits: u64) -> Result<()> {
        self.sync_firewall_since(st, false, Some(commits))
    }

    fn sync_firewall_since(&self, st: &State, force: bool, commits: Option<u64>) -> Result<()> {
        let structure = firewall::render_structure(&self.cfg.table, st);
        let ports = firewall::port_elements(st);
        let mut applied = self.applied.lock().unwrap_or_else(|e| e.into_inner());
        let now = self.commits.load(std::sync::atomic::Ordering::SeqCst);
        if commits.is_some_and(|seen| seen != now) {
            return Ok(());
        }
        // Taken out: unknown until the update below succeeds.
        let old_ports = match applied.take() {
            Some(a) if !force && a.structure == structure => Some(a.ports),
            _ => None,
        };
        match old_ports {
            Some(old) if old == ports => {}
            Some(old) => {
                let changes = firewall::port_changes(&old, &ports);
                if let Err(err) = crate::nfset::apply(&self.cfg.table, &changes) {
                    // The same change through `nft`, which names what it rejects.
                    tracing::debug!(%err, "netlink set update failed; retrying with nft");
                    let script = firewall::render_port_changes(&self.cfg.table, &old, &ports);
                    firewall::nft(&script)?;
                }
            }
            None => firewall::apply(&self.cfg.table, st)?,
        }
        *applied = Some(AppliedFirewall { structure, ports });
        Ok(())
    }

    /// Whether nftables does not hold what `st` implies (or nothing is known of it).
    fn firewall_stale(&self, st: &State) -> bool {
        let applied = self.applied.lock().unwrap_or_else(|e| e.into_inner());
        applied.as_ref().is_none_or(|a| {
            a.structure != firewall::render_structure(&self.cfg.table, st)
                || a.ports != firewall::port_elements(st)
        })
    }

    pub(crate) fn commit(&self, guard: &mut State, new: State) -> Result<()> {
        self.commits
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if let Err(e) = self.sync_firewall(&new, false) {
            let _ = self.sync_firewall(guard, true);
            return Err(e);
        }
        // Network definitions must survive a power loss; endpoint changes need not (see
        // `store`), which keeps fsync off the container start and stop paths.
        let durable = !guard.networks.keys().eq(new.networks.keys());
        if let Err(e) = store::save(&self.state_path(), &new, durable) {
            let _ = self.sync_firewall(guard, true);
            return Err(e);
        }
        *guard = new;
        Ok(())
    }

    /// [`Self::commit`] for changes that only withdraw rules (a released container's
    /// published ports): the state is saved now, and the firewall (an `nft` and `iptables`
    /// run, tens of milliseconds) is brought in line by the pool's worker, off the removal
    /// path. Rules are always rendered from the whole state, so a commit in between (a new
    /// container publishing the same port) replaces the stale ones in the same load.
    pub(crate) fn commit_withdrawing(&self, guard: &mut State, new: State) -> Result<()> {
        self.commits
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let durable = !guard.networks.keys().eq(new.networks.keys());
        store::save(&self.state_path(), &new, durable)?;
        *guard = new;
        if self.firewall_stale(guard) && !self.sync_firewall_later() {
            self.sync_firewall(guard, false)?;
        }
        Ok(())
    }

    /// All networks.
    pub fn list(&self) -> Vec<NetworkRecord> {
        self.lock().networks.values().cloned().collect()
    }

    /// A network by id, name or unique id prefix.
    pub fn inspect(&self, id_or_name: &str) -> Result<NetworkRecord> {
        self.lock()
            .find(id_or_name)
            .cloned()
            .ok_or_else(|| NetworkError::NetworkNotFound(id_or_name.to_string()))
    }

    /// Creates the default `bridge` network on `berth0` if it does not exist, and makes sure
    /// its bridge and rules exist if it does (daemon start).
    pub fn ensure_default(&self) -> Result<NetworkRecord> {
        if let Ok(n) = self.inspect(DEFAULT_NETWORK) {
            netlink::ensure_bridge(
                &n.bridge,
                n.gateway,
                n.subnet.prefix_len(),
                v6_gateway(&n),
                n.mtu,
            )?;
            let st = self.lock();
            self.sync_firewall(&st, true)?;
            return Ok(n);
        }
        self.create_inner(
            CreateNetwork {
                name: DEFAULT_NETWORK.into(),
                bridge_name: Some(self.cfg.default_bridge.clone()),
                ..Default::default()
            },
            true,
        )
    }

    /// `docker network create` (bridge driver).
    pub fn create_network(&self, req: CreateNetwork) -> Result<NetworkRecord> {
        self.create_inner(req, false)
    }

    fn create_inner(&self, req: CreateNetwork, default_bridge: bool) -> Result<NetworkRecord> {
        if !valid_name(&req.name) {
            return Err(NetworkError::InvalidName(req.name));
        }
        let mut guard = self.lock();
        if guard.networks.values().any(|n| n.name == req.name) {
            return Err(NetworkError::NetworkExists(req.name));
        }
        let taken: Vec<Ipv4Net> = guard.networks.values().map(|n| n.subnet).collect();
        // Other daemons on this host choose from the same routes: from the choice until the
        // bridge holds its address (and so its route), they must wait for us.
        let _host_lock = match req.subnet {
            None => Some(host_subnet_lock()?),
            Some(_) => None,
        };
        let subnet = ipam::choose_subnet(req.subnet.as_deref(), &taken, || {
            let mut avoid = taken.clone();
            // Host routes (not the default route) are off limits too.
            avoid.extend(netlink::host_routes()?);
            ipam::pick_free_pool(&avoid)
        })?;
        let v4 = ipam::plan(
            &req.name,
            subnet,
            req.ip_range.as_deref(),
            req.gateway.as_deref(),
            &req.aux_addresses,
        )?;
        let ipv6 = match &req.ipv6 {
            Some(v6) => Some(self.plan_ipv6(&guard, &req.name, v6)?),
            None => None,
        };
        let id = loop {
            let id = format!(
                "{:016x}{:016x}{:016x}{:016x}",
                rand::random::<u64>(),
                rand::random::<u64>(),
                rand::random::<u64>(),
                rand::random::<u64>()
            );
            // The bridge name keeps only a prefix of the id: it must be unique too.
            let generated = format!(
                "{}{}",
                self.cfg.bridge_prefix,
                &id[..hex_room(&self.cfg.bridge_prefix, 12)]
            );
            if !guard.networks.contains_key(&id)
                && (req.bridge_name.is_some()
                    || !guard.networks.values().any(|n| n.bridge == generated))
            {
                break id;
            }
        };
        let bridge = req.bridge_name.clone().unwrap_or_else(|| {
            format!(
                "{}{}",
                self.cfg.bridge_prefix,
                &id[..hex_room(&self.cfg.bridge_prefix, 12)]
            )
        });
        if bridge.is_empty() || bridge.len() > 15 || bridge.contains(['/', ' ']) {
            return Err(NetworkError::InvalidName(bridge));
        }
        if guard.networks.values().any(|n| n.bridge == bridge) {
            return Err(NetworkError::NetworkExists(format!("bridge {bridge}")));
        }
        let rec = NetworkRecord {
            id: id.clone(),
            name: req.name,
            bridge: bridge.clone(),
            subnet,
            gateway: v4.gateway,
            gateway_auto: req.subnet.is_some() && req.gateway.is_none(),
            ip_range: v4.ip_range,
            mtu: req.mtu.unwrap_or(self.cfg.default_mtu),
            internal: req.internal,
            default_bridge,
            attachable: req.attachable,
            labels: req.labels,
            options: req.options,
            ipam: v4.ipam,
            aux_addresses: v4.aux_addresses,
            ipv6,
            endpoints: BTreeMap::new(),
        };
        let existed = netlink::link_exists(&bridge)?;
        let r = netlink::ensure_bridge(
            &bridge,
            rec.gateway,
            subnet.prefix_len(),
            v6_gateway(&rec),
            rec.mtu,
        );
        if let Err(e) = r {
            if !existed {
                let _ = netlink::delete_link(&bridge);
            }
            return Err(e);
        }
        let mut new = guard.clone();
        new.networks.insert(id, rec.clone());
        if let Err(e) = self.commit(&mut guard, new) {
            if !existed {
                let _ = netlink::delete_link(&bridge);
            }
            return Err(e);
        }
        tracing::info!(network = %rec.name, bridge = %bridge, subnet = %subnet,
            subnet6 = ?rec.ipv6.as_ref().map(|v| v.subnet), "network created");
        Ok(rec)
    }

    /// Validates and allocates the IPv6 side of a new network: subnet (given, or a random
    /// unique-local /64 clear of other networks and host routes), range, gateway and
    /// auxiliary addresses.
    fn plan_ipv6(&self, st: &State, name: &str, req: &CreateIpv6) -> Result<Ipv6Record> {
        let taken: Vec<Ipv6Net> = st
            .networks
            .values()
            .filter_map(|n| n.ipv6.as_ref().map(|v| v.subnet))
            .collect();
        let subnet = ipam::choose_subnet(req.subnet.as_deref(), &taken, || {
            let mut avoid = taken.clone();
            avoid.extend(netlink::host_routes6()?);
            // 40 random bits: a clash is already unlikely, a few draws make it moot.
            (0..16)
                .map(|_| ipam::random_ula())
                .find(|c| !avoid.iter().any(|t| t.overlaps(c)))
                .ok_or(NetworkError::NoFreePool)
        })?;
        let v6 = ipam::plan(
            name,
            subnet,
            req.ip_range.as_deref(),
            req.gateway.as_deref(),
            &req.aux_addresses,
        )?;
        Ok(Ipv6Record {
            subnet,
            gateway: v6.gateway,
            ip_range: v6.ip_range,
            gateway_given: req.gateway.is_some(),
            subnet_given: req.subnet.is_some(),
            aux_addresses: v6.aux_addresses,
            ipam: v6.ipam,
        })
    }

    /// `docker network rm`: refuses while endpoints exist; removes bridge and rules.
    pub fn remove_network(&self, id_or_name: &str) -> Result<()> {
        // Its pool goes first (outside the state lock, which the pool's worker takes).
        if let Ok(n) = self.inspect(id_or_name) {
            if !n.default_bridge {
                for e in self.pool.drain(&n.id) {
                    let _ = netns::remove(&e.netns);
                    let _ = netlink::delete_link(&e.host_veth);
                }
            }
        }
        let mut guard = self.lock();
        let net = guard
            .find(id_or_name)
            .cloned()
            .ok_or_else(|| NetworkError::NetworkNotFound(id_or_name.to_string()))?;
        if net.default_bridge {
            return Err(NetworkError::Predefined(net.name));
        }
        if !net.endpoints.is_empty() {
            let names: Vec<&str> = net.endpoints.values().map(|e| e.name.as_str()).collect();
            return Err(NetworkError::ActiveEndpoints {
                network: net.name,
                endpoints: names.join(", "),
            });
        }
        let mut new = guard.clone();
        new.networks.remove(&net.id);
        self.commit(&mut guard, new)?;
        drop(guard);
        // Links of its last containers that are still being deleted.
        for o in net.ipam.allocated.values() {
            if let Some(link) = o.strip_prefix(RELEASING_OWNER) {
                let _ = netlink::delete_link(link);
            }
        }
        netlink::delete_link(&net.bridge)?;
        Ok(())
    }

    /// Removes every network, including the default one (daemon uninstall and tests).
    pub fn remove_all(&self) -> Result<()> {
        for e in self.pool.drain_all() {
            let _ = netns::remove(&e.netns);
            let _ = netlink::delete_link(&e.host_veth);
        }
        self.remove_isolated();
        let mut guard = self.lock();
        let old = guard.clone();
        self.commit(&mut guard, State::default())?;
        for n in old.networks.values() {
            for ep in n.endpoints.values() {
                let _ = netlink::delete_link(&ep.host_veth);
            }
            for o in n.ipam.allocated.values() {
                if let Some(link) = o.strip_prefix(RELEASING_OWNER) {
                    let _ = netlink::delete_link(link);
                }
            }
            netlink::delete_link(&n.bridge)?;
        }
        Ok(())
    }

    fn published(state: &State) -> Vec<(Ipv4Addr, u16, ports::Proto)> {
        state
            .networks
            .values()
            .flat_map(|n| n.endpoints.values())
            .flat_map(|e| e.ports.iter().map(|p| (p.host_ip, p.host_port, p.proto)))
            .collect()
    }

    /// Attaches a container: allocates its address, creates the veth into its namespace,
    /// publishes its ports. Returns the endpoint (with resolved random host ports). With
    /// `new_netns`, the namespace at `req.netns` is made here, from the network's pool when
    /// the request allows (see [`crate::pool`]); it is removed again if the call fails.
    pub fn connect(&self, network: &str, req: ConnectRequest) -> Result<EndpointRecord> {
        let mut guard = self.lock();
        let net = guard
            .find(network)
            .cloned()
            .ok_or_else(|| NetworkError::NetworkNotFound(network.to_string()))?;
        if net.endpoints.contains_key(&req.container_id) {
            return Err(NetworkError::AlreadyConnected {
                container: req.container_id,
                network: net.name,
            });
        }
        // As in Docker, internal networks publish nothing: there is no way in from outside.
        let wanted = if net.internal {
            &[][..]
        } else {
            &req.ports[..]
        };
        let ports = ports::resolve(wanted, &Self::published(&guard))?;
        let poolable = req.new_netns
            && req.ip.is_none()
            && req.ip6.is_none()
            && req.mac.is_none()
            && req.ifname.as_deref().is_none_or(|n| n == "eth0");
        if poolable {
            self.want_pool(&net.id);
            let mut n = net.clone();
            if let Some(e) = self.adopt(&mut n, &req.container_id, &req.netns) {
                let ep = EndpointRecord {
                    container_id: req.container_id.clone(),
                    name: req.name,
                    aliases: req.aliases,
                    links: req.links,
                    ip: e.ip,
                    ip6: e.ip6,
                    mac: netlink::mac_string(e.mac),
                    host_veth: e.host_veth.clone(),
                    netns: req.netns.clone(),
                    ports,
                };
                n.endpoints.insert(req.container_id, ep.clone());
                let mut new = guard.clone();
                new.networks.insert(n.id.clone(), n);
                if let Err(err) = self.commit(&mut guard, new) {
                    drop(guard);
                    let _ = netns::remove(&req.netns);
                    self.discard(&[e]);
                    return Err(err);
                }
                return Ok(ep);
            }
        }
        let made = req.new_netns;
        if made {
            netns::create(&req.netns)?;
        }
        let netns_path = req.netns.clone();
        let r = self.connect_new(&mut guard, net, req, ports);
        if r.is_err() && made {
            let _ = netns::remove(&netns_path);
        }
        r
    }

    /// The slow path of [`Self::connect`]: a new veth pair into an existing namespace.
    fn connect_new(
        &self,
        guard: &mut MutexGuard<'_, State>,
        net: NetworkRecord,
        req: ConnectRequest,
        ports: Vec<PortMapping>,
    ) -> Result<EndpointRecord> {
        let mut ipam = net.ipam.clone();
        let mut ipv6 = net.ipv6.clone();
        let ip = match req.ip {
            Some(ip) => {
                let owner = ipam.allocated.get(&ip).cloned();
                if let Some(o) = owner.filter(|o| self.reclaim(&net.id, o)) {
                    drop_owners(&mut ipam, &mut ipv6, &[o]);
                }
                ipam.reserve(&net.name, &net.subnet, ip, &req.container_id)?;
                ip
            }
            None => match ipam.allocate(&net.subnet, &net.ip_range, &req.container_id) {
                Err(NetworkError::PoolExhausted(_)) => {
                    // Addresses held by pool entries or links being deleted are free to take.
                    let owners = self.reclaim_held(&net.id, &ipam);
                    drop_owners(&mut ipam, &mut ipv6, &owners);
                    ipam.allocate(&net.subnet, &net.ip_range, &req.container_id)?
                }
                r => r?,
            },
        };
        let ip6 = match (&mut ipv6, req.ip6) {
            (None, None) => None,
            (None, Some(_)) => return Err(NetworkError::Ipv6Disabled(net.name)),
            (Some(v6), Some(ip)) => {
                let owner = v6.ipam.allocated.get(&ip).cloned();
                if let Some(o) = owner.filter(|o| self.reclaim(&net.id, o)) {
                    v6.ipam.allocated.retain(|_, x| *x != o);
                    ipam.allocated.retain(|_, x| *x != o);
                }
                v6.ipam
                    .reserve(&net.name, &v6.subnet, ip, &req.container_id)?;
                Some(ip)
            }
            (Some(v6), None) => Some(v6.ipam.allocate(
                &v6.subnet,
                &v6.ip_range,
                &req.container_id,
            )?),
        };
        let host_veth = self.fresh_veth_name(guard, &net.id);
        let mac = req.mac.unwrap_or_else(|| netlink::mac_for(ip));
        let ifname = req.ifname.clone().unwrap_or_else(|| "eth0".into());
        if !netlink::link_exists(&net.bridge)? {
            // Deleted behind our back (an operator, or another daemon's reconcile): recreate
            // it, and reload the rules and sysctls that went with it.
            netlink::ensure_bridge(
                &net.bridge,
                net.gateway,
                net.subnet.prefix_len(),
                v6_gateway(&net),
                net.mtu,
            )?;
            *self.applied.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
        netlink::attach_veth(
            &net.bridge,
            &host_veth,
            &ContainerIface {
                netns: &req.netns,
                name: &ifname,
                ip,
                prefix: net.subnet.prefix_len(),
                mac,
                mtu: net.mtu,
                gateway: (!net.internal).then_some(net.gateway),
                ip6: ip6.zip(net.ipv6.as_ref().map(|v| v.subnet.prefix_len())),
                gateway6: net
                    .ipv6
                    .as_ref()
                    .filter(|_| !net.internal)
                    .map(|v| v.gateway),
            },
        )?;
        let ep = EndpointRecord {
            container_id: req.container_id.clone(),
            name: req.name,
            aliases: req.aliases,
            links: req.links,
            ip,
            ip6,
            mac: netlink::mac_string(mac),
            host_veth: host_veth.clone(),
            netns: req.netns.clone(),
            ports,
        };
        let mut new = (**guard).clone();
        if let Some(n) = new.networks.get_mut(&net.id) {
            n.ipam = ipam;
            n.ipv6 = ipv6;
            n.endpoints.insert(req.container_id, ep.clone());
        }
        if let Err(e) = self.commit(guard, new) {
            let _ = netlink::delete_link(&host_veth);
            return Err(e);
        }
        Ok(ep)
    }

    /// A host veth name of this configuration's pattern (prefix + hex) that no endpoint
    /// uses. Random rather than derived from the container: a restarted container's previous
    /// link may still exist while it is deleted in the background.
    pub(crate) fn fresh_veth_name(&self, st: &State, network_id: &str) -> String {
        let room = hex_room(&self.cfg.veth_prefix, 16);
        loop {
            let h = short_hash(&format!("{network_id}/{:016x}", rand::random::<u64>()));
            let name = format!("{}{}", self.cfg.veth_prefix, &h[..room]);
            let used = st
                .networks
                .values()
                .flat_map(|n| n.endpoints.values())
                .any(|e| e.host_veth == name);
            if !used {
                return name;
            }
        }
    }

    /// For a full range: the kernel side of every address of `ipam` held by a pool entry or a
    /// link being deleted is removed now; returns those owners for the caller to drop.
    fn reclaim_held(&self, network: &str, ipam: &Allocations) -> Vec<String> {
        let mut owners = self.reclaim_all(network);
        let releasing: HashSet<String> = ipam
            .allocated
            .values()
            .filter(|o| o.starts_with(RELEASING_OWNER))
            .cloned()
            .collect();
        for o in releasing {
            if self.reclaim(network, &o) {
                owners.push(o);
            }
        }
        owners
    }

    /// Detaches a container: removes its veth (the namespace side goes with it), DNAT rules
    /// and address. The container's namespace itself is the caller's.
    pub fn disconnect(&self, network: &str, container_id: &str) -> Result<()> {
        let mut guard = self.lock();
        let net = guard
            .find(network)
            .cloned()
            .ok_or_else(|| NetworkError::NetworkNotFound(network.to_string()))?;
        let ep =
            net.endpoints
                .get(container_id)
                .cloned()
                .ok_or_else(|| NetworkError::NotConnected {
                    container: container_id.to_string(),
                    network: net.name.clone(),
                })?;
        let mut new = guard.clone();
        if let Some(n) = new.networks.get_mut(&net.id) {
            n.endpoints.remove(container_id);
            n.ipam.release(ep.ip);
            if let (Some(v6), Some(ip6)) = (n.ipv6.as_mut(), ep.ip6) {
                v6.ipam.release(ip6);
            }
        }
        self.commit(&mut guard, new)?;
        netlink::delete_link(&ep.host_veth)
    }

    /// Detaches a container from every network it is on (container stop/removal).
    pub fn disconnect_all(&self, container_id: &str) -> Result<()> {
        let nets: Vec<String> = self
            .lock()
            .networks
            .values()
            .filter(|n| n.endpoints.contains_key(container_id))
            .map(|n| n.id.clone())
            .collect();
        for n in nets {
            self.disconnect(&n, container_id)?;
        }
        Ok(())
    }

    /// Container exit or removal: drops every endpoint of `container_id` (names, DNS,
    /// published ports) and unmounts its namespace at `netns` now; the host veths are deleted
    /// in the background and their addresses freed only then. Returns the networks it was on.
    pub fn release_container(
        &self,
        container_id: &str,
        netns_path: &Path,
    ) -> Result<Vec<NetworkRecord>> {
        let mut guard = self.lock();
        let nets: Vec<NetworkRecord> = guard
            .networks
            .values()
            .filter(|n| n.endpoints.contains_key(container_id))
            .cloned()
            .collect();
        let mut links = Vec::new();
        if !nets.is_empty() {
            let mut new = guard.clone();
            for n in new.networks.values_mut() {
                let Some(ep) = n.endpoints.remove(container_id) else {
                    continue;
                };
                let owner = format!("{RELEASING_OWNER}{}", ep.host_veth);
                n.ipam.allocated.insert(ep.ip, owner.clone());
                if let (Some(v6), Some(ip6)) = (n.ipv6.as_mut(), ep.ip6) {
                    v6.ipam.allocated.insert(ip6, owner);
                }
                links.push(ep.host_veth);
            }
            self.commit_withdrawing(&mut guard, new)?;
        }
        drop(guard);
        let r = netns::remove(netns_path);
        self.release_later(links);
        r.map(|()| nets)
    }

    /// Daemon start: drops endpoints of containers not in `live` (the daemon's running
    /// containers), recreates missing bridges, deletes Berth-named links nobody owns and
    /// rewrites the firewall table from state.
    pub fn reconcile(&self, live: &HashSet<String>) -> Result<ReconcileReport> {
        let mut report = ReconcileReport::default();
        // Namespaces a previous run pooled; their links go with the sweep below.
        let stale = self.pool.drain_all();
        for e in &stale {
            let _ = netns::remove(&e.netns);
        }
        self.clear_pool_dir();
        let mut guard = self.lock();
        // Whatever nftables holds now, reload it from state.
        *self.applied.lock().unwrap_or_else(|e| e.into_inner()) = None;
        let mut new = guard.clone();
        for n in new.networks.values_mut() {
            // Addresses of pool entries and of links a previous run was deleting.
            let held = |o: &String| o.starts_with(POOL_OWNER) || o.starts_with(RELEASING_OWNER);
            n.ipam.allocated.retain(|_, o| !held(o));
            if let Some(v6) = n.ipv6.as_mut() {
                v6.ipam.allocated.retain(|_, o| !held(o));
            }
            let dead: Vec<String> = n
                .endpoints
                .keys()
                .filter(|id| !live.contains(*id))
                .cloned()
                .collect();
            for id in dead {
                if let Some(ep) = n.endpoints.remove(&id) {
                    n.ipam.release(ep.ip);
                    if let (Some(v6), Some(ip6)) = (n.ipv6.as_mut(), ep.ip6) {
                        v6.ipam.release(ip6);
                    }
                    report.endpoints_removed.push(id);
                }
            }
        }
        for n in new.networks.values() {
            netlink::ensure_bridge(
                &n.bridge,
                n.gateway,
                n.subnet.prefix_len(),
                v6_gateway(n),
                n.mtu,
            )?;
        }
        self.commit(&mut guard, new)?;
        let owned: HashSet<&str> = guard
            .networks
            .values()
            .flat_map(|n| {
                std::iter::once(n.bridge.as_str())
                    .chain(n.endpoints.values().map(|e| e.host_veth.as_str()))
            })
            .collect();
        for name in netlink::link_names()? {
            // An unowned default bridge goes too, with whatever addresses it carried:
            // `ensure_default` recreates it with the state's subnet. (Another daemon on the
            // same host recreates it at its next connect.)
            // Only names this configuration generates: another daemon's prefix may extend
            // ours (`bv` + hex here, `bv<tag>-` + hex there).
            let generated = |prefix: &str| {
                name.strip_prefix(prefix).is_some_and(|rest| {
                    !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_hexdigit())
                })
            };
            let ours = generated(&self.cfg.veth_prefix)
                || generated(&self.cfg.bridge_prefix)
                || (self.cfg.reclaim_default_bridge && name == self.cfg.default_bridge);
            if ours && !owned.contains(name.as_str()) {
                netlink::delete_link(&name)?;
                report.links_removed.push(name);
            }
        }
        Ok(report)
    }

    /// Embedded DNS lookup: `name` as asked by `client` of the network whose gateway is
    /// `server`. Matches container names, aliases, 12-char ids and the client's own links.
    /// The addresses of an endpoint on an IPv6 network include its IPv6 one.
    pub fn resolve(&self, server: Ipv4Addr, client: Ipv4Addr, name: &str) -> Option<Vec<IpAddr>> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let st = self.lock();
        let net = st.networks.values().find(|n| n.gateway == server)?;
        let by_name = |target: &str| -> Vec<IpAddr> {
            net.endpoints
                .values()
                .filter(|e| {
                    e.name.eq_ignore_ascii_case(target)
                        || e.aliases.iter().any(|a| a.eq_ignore_ascii_case(target))
                        || (target.len() == 12 && e.container_id.starts_with(target))
                })
                .flat_map(|e| std::iter::once(IpAddr::V4(e.ip)).chain(e.ip6.map(IpAddr::V6)))
                .collect()
        };
        let mut ips = by_name(&name);
        if ips.is_empty() {
            if let Some(me) = net.endpoints.values().find(|e| e.ip == client) {
                for (target, alias) in &me.links {
                    if alias.eq_ignore_ascii_case(&name) {
                        ips = by_name(&target.to_ascii_lowercase());
                    }
                }
            }
        }
        (!ips.is_empty()).then_some(ips)
    }

    /// Path of the state file (for diagnostics).
    pub fn state_file(&self) -> PathBuf {
        self.state_path()
    }
}

/// The bridge's IPv6 gateway address and prefix, for IPv6 networks.
fn v6_gateway(n: &NetworkRecord) -> Option<(Ipv6Addr, u8)> {
    n.ipv6.as_ref().map(|v| (v.gateway, v.subnet.prefix_len()))
}

/// Drops the allocations (both families) of `owners`.
fn drop_owners(ipam: &mut Allocations, ipv6: &mut Option<Ipv6Record>, owners: &[String]) {
    ipam.allocated.retain(|_, o| !owners.contains(o));
    if let Some(v6) = ipv6 {
        v6.ipam.allocated.retain(|_, o| !owners.contains(o));
    }
}

/// Convenience for callers holding a path to the state dir.
pub fn open(state_dir: &Path) -> Result<NetworkManager> {
    NetworkManager::open(Config::new(state_dir))
}

/// Where daemons on one host serialise choosing a free subnet (see [`host_subnet_lock`]).
const HOST_SUBNET_LOCK: &str = "/run/berth-network.lock";

/// An exclusive `flock` on [`HOST_SUBNET_LOCK`], released when dropped. Subnets are chosen
/// clear of the host's routes, so two daemons (`--network-instance`) choosing at the same
/// moment would otherwise both take the first free one.
fn host_subnet_lock() -> Result<nix::fcntl::Flock<std::fs::File>> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(HOST_SUBNET_LOCK)
        .map_err(crate::error::io_err("open", HOST_SUBNET_LOCK))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive).map_err(|(_, source)| {
        NetworkError::Sys {
            op: "lock /run/berth-network.lock",
            source,
        }
    })
}
