//! Ready-made container network namespaces, so that a container start does no link work.
//!
//! Measured on the start path before: creating a veth pair, moving its peer into the
//! container's namespace (15–20 ms alone: the move waits for RCU grace periods under the RTNL
//! lock), renaming and configuring it, and on removal deleting it (10–20 ms, same reason);
//! each of those also waits while the kernel destroys the previous container's namespace
//! (`cleanup_net` holds RTNL across grace periods). So each pooled network keeps a few entries
//! made in the background: a namespace pinned under the pool directory whose `eth0` is up with
//! an address, MAC and default routes taken from the network's IPAM, its host end plugged into
//! the bridge. A connect that asks for no static address or MAC takes one: the namespace file
//! is re-bound to the container's path and the address changes owner in IPAM, without netlink.
//!
//! Removal is off the path too: a container's endpoints leave the state at once (names, DNS,
//! published ports) and its namespace is unmounted; the kernel destroys the namespace and its
//! veth on its own, and the worker frees the addresses once their links are gone (owner
//! `releasing:<veth>` until then), so an address is never live on two ports of a bridge.
//!
//! The `none` network has its pool too: namespaces whose only interface, the loopback, is up
//! (an `unshare(CLONE_NEWNET)` on the start path cost ~0.5 ms, and left the loopback down).
//!
//! Pool entries and pending releases are recorded only through their IPAM owners
//! (`pool:<veth>`, `releasing:<veth>`); [`NetworkManager::reconcile`] frees those after a
//! restart, unmounts whatever is left in the pool directory and sweeps the links.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use crate::error::Result;
use crate::manager::NetworkManager;
use crate::netlink::{self, ContainerIface};
use crate::netns;
use crate::store::NetworkRecord;

/// File name prefix of the pooled loopback-only namespaces.
pub const ISOLATED_PREFIX: &str = "isolated-";

/// IPAM owner prefix of an address held by a pool entry.
pub const POOL_OWNER: &str = "pool:";
/// IPAM owner prefix of an address whose link is being deleted.
pub const RELEASING_OWNER: &str = "releasing:";

/// A namespace ready to be taken: `eth0` configured, host end on the bridge.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub netns: PathBuf,
    pub host_veth: String,
    pub ip: Ipv4Addr,
    pub ip6: Option<Ipv6Addr>,
    pub mac: [u8; 6],
}

impl Entry {
    pub fn owner(&self) -> String {
        format!("{POOL_OWNER}{}", self.host_veth)
    }
}

/// Work for the background thread.
enum Job {
    /// Bring the pool of this network id up to size.
    Fill(String),
    /// Bring the pool of loopback-only namespaces up to size.
    FillIsolated,
    /// Free the addresses owned by `releasing:<link>` once these host links are gone (with
    /// their namespaces), deleting those still there after [`RELEASE_GRACE`].
    Release(Vec<String>),
    /// Destroy these entries and free their addresses.
    Discard(Vec<Entry>),
    /// Load the rules the current state implies (see `commit_withdrawing`).
    Firewall,
}

/// The pools of all networks and the channel to their background worker.
#[derive(Debug)]
pub(crate) struct Pool {
    dir: Option<PathBuf>,
    size: usize,
    /// Entries by network id, oldest first.
    entries: Mutex<HashMap<String, VecDeque<Entry>>>,
    /// Networks that keep a pool: the default one, and any network a container was started on
    /// (or was running on at daemon start).
    wanted: Mutex<HashSet<String>>,
    worker: Mutex<Option<mpsc::Sender<Job>>>,
    /// Held by the worker while it makes and stores one entry, so that a drain waits for an
    /// entry in the making. Taken before the state lock, never after.
    busy: Mutex<()>,
    /// Loopback-only namespaces (the `none` network), oldest first.
    isolated: Mutex<VecDeque<PathBuf>>,
    /// Whether the loopback-only pool is kept filled (from `start_pool` to `stop_pool`).
    isolated_wanted: AtomicBool,
    /// Numbers the loopback-only namespaces' files.
    isolated_made: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves the data coherent; a panic elsewhere does not poison it.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Pool {
    pub fn new(dir: Option<PathBuf>, size: usize) -> Self {
        Pool {
            dir,
            size,
            entries: Mutex::default(),
            wanted: Mutex::default(),
            worker: Mutex::default(),
            busy: Mutex::default(),
            isolated: Mutex::default(),
            isolated_wanted: AtomicBool::new(false),
            isolated_made: AtomicU64::new(0),
        }
    }

    /// Takes the oldest entry of `network`.
    pub fn take(&self, network: &str) -> Option<Entry> {
        lock(&self.entries).get_mut(network)?.pop_front()
    }

    /// Removes the entry whose address owner is `owner`, if it is still pooled.
    pub fn take_owner(&self, network: &str, owner: &str) -> Option<Entry> {
        let mut entries = lock(&self.entries);
        let q = entries.get_mut(network)?;
        let i = q.iter().position(|e| e.owner() == owner)?;
        q.remove(i)
    }

    /// Removes every entry of `network` and stops refilling it.
    pub fn drain(&self, network: &str) -> Vec<Entry> {
        lock(&self.wanted).remove(network);
        let _wait = lock(&self.busy);
        lock(&self.entries)
            .remove(network)
            .map(Vec::from)
            .unwrap_or_default()
    }

    /// Removes every entry of every network.
    pub fn drain_all(&self) -> Vec<Entry> {
        lock(&self.wanted).clear();
        let _wait = lock(&self.busy);
        lock(&self.entries)
            .drain()
            .flat_map(|(_, q)| q.into_iter())
            .collect()
    }

    /// Removes every loopback-only namespace and stops refilling them.
    pub fn drain_isolated(&self) -> Vec<PathBuf> {
        self.isolated_wanted.store(false, Ordering::SeqCst);
        let _wait = lock(&self.busy);
        lock(&self.isolated).drain(..).collect()
    }

    fn send(&self, job: Job) -> bool {
        lock(&self.worker)
            .as_ref()
            .is_some_and(|tx| tx.send(job).is_ok())
    }
}

/// Unmounts an entry's namespace and deletes its host link (the container end goes with it).
fn destroy(e: &Entry) {
    if let Err(err) = netns::remove(&e.netns) {
        tracing::warn!(%err, netns = %e.netns.display(), "cannot remove pooled namespace");
    }
    if let Err(err) = netlink::delete_link(&e.host_veth) {
        tracing::warn!(%err, link = %e.host_veth, "cannot delete pooled link");
    }
}

impl NetworkManager {
    /// Starts the background worker that fills the pools and frees the addresses of released
    /// links, and fills the pools of the default network and of the networks with endpoints
    /// (containers that ran through a daemon restart). Without it (tests, or no `pool_dir`)
    /// nothing is pooled and released links are deleted inline. The worker holds a weak
    /// reference and ends when the manager is dropped.
    pub fn start_pool(self: &Arc<Self>) {
        let (tx, rx) = mpsc::channel::<Job>();
        *lock(&self.pool.worker) = Some(tx);
        let weak: Weak<Self> = Arc::downgrade(self);
        let spawned = std::thread::Builder::new()
            .name("berth-netpool".into())
            .spawn(move || worker(&rx, &weak));
        if let Err(err) = spawned {
            tracing::warn!(%err, "cannot start the network pool worker; pooling is off");
            *lock(&self.pool.worker) = None;
            return;
        }
        // The default network, and those with running containers (a daemon restart).
        for n in self.list() {
            if n.default_bridge || !n.endpoints.is_empty() {
                self.want_pool(&n.id);
            }
        }
        if self.pool.dir.is_some() && self.pool.size > 0 {
            self.pool.isolated_wanted.store(true, Ordering::SeqCst);
            self.pool.send(Job::FillIsolated);
        }
    }

    /// Puts a network namespace whose only interface is its loopback, up, at `path` (Docker's
    /// `none` network): a pooled one when ready (two mount calls), else one made now.
    pub fn isolated_netns(&self, path: &Path) -> Result<()> {
        let ready = lock(&self.pool.isolated).pop_front();
        // Refilled after every take, and after a start that found the pool empty (a failed
        // refill is tried again there).
        if self.pool.isolated_wanted.load(Ordering::SeqCst) {
            self.pool.send(Job::FillIsolated);
        }
        if let Some(ready) = ready {
            match netns::rebind(&ready, path) {
                Ok(()) => return Ok(()),
                Err(err) => {
                    tracing::warn!(%err, "cannot adopt pooled namespace");
                    let _ = netns::remove(&ready);
                }
            }
        }
        make_isolated(path)
    }

    /// The number of ready loopback-only namespaces (diagnostics and tests).
    pub fn pooled_isolated(&self) -> usize {
        lock(&self.pool.isolated).len()
    }

    /// Fills the loopback-only pool up to size; stops at the first failure, to try again at
    /// the next take.
    fn fill_isolated(&self) {
        let Some(dir) = self.pool.dir.clone() else {
            return;
        };
        loop {
            if !self.pool.isolated_wanted.load(Ordering::SeqCst)
                || lock(&self.pool.isolated).len() >= self.pool.size
            {
                return;
            }
            let _busy = lock(&self.pool.busy);
            let n = self.pool.isolated_made.fetch_add(1, Ordering::Relaxed);
            // The pid keeps names apart from those of a previous daemon, until its cleanup.
            let path = dir.join(format!("{ISOLATED_PREFIX}{}-{n}", std::process::id()));
            if let Err(err) = make_isolated(&path) {
                tracing::debug!(%err, "cannot make a pooled loopback-only namespace");
                return;
            }
            if self.pool.isolated_wanted.load(Ordering::SeqCst) {
                lock(&self.pool.isolated).push_back(path);
            } else {
                let _ = netns::remove(&path);
                return;
            }
        }
    }

    /// Daemon shutdown: stops filling and unmounts every pooled namespace (the kernel deletes
    /// their links with them). Containers are not touched.
    pub fn stop_pool(&self) {
        *lock(&self.pool.worker) = None;
        for e in self.pool.drain_all() {
            if let Err(err) = netns::remove(&e.netns) {
                tracing::warn!(%err, netns = %e.netns.display(), "cannot remove pooled namespace");
            }
        }
        self.remove_isolated();
        self.clear_pool_dir();
    }

    /// Unmounts the pooled loopback-only namespaces and stops refilling them.
    pub(crate) fn remove_isolated(&self) {
        for path in self.pool.drain_isolated() {
            if let Err(err) = netns::remove(&path) {
                tracing::warn!(%err, netns = %path.display(), "cannot remove pooled namespace");
            }
        }
    }

    /// Marks `network` as pooled and asks the worker to fill it.
    pub(crate) fn want_pool(&self, network: &str) {
        if self.pool.dir.is_none() || self.pool.size == 0 {
            return;
        }
        lock(&self.pool.wanted).insert(network.to_string());
        self.pool.send(Job::Fill(network.to_string()));
    }

    /// Asks the worker to bring the firewall in line with the state; false without one.
    pub(crate) fn sync_firewall_later(&self) -> bool {
        self.pool.send(Job::Firewall)
    }

    /// The number of ready entries of `network` (diagnostics and tests).
    pub fn pooled(&self, network: &str) -> usize {
        let id = self.inspect(network).map(|n| n.id).unwrap_or_default();
        lock(&self.pool.entries).get(&id).map_or(0, VecDeque::len)
    }

    /// Hands links to the worker for deletion (or deletes them now without one); their
    /// `releasing:` addresses are freed once they are gone.
    pub(crate) fn release_later(&self, links: Vec<String>) {
        if links.is_empty() {
            return;
        }
        if !self.pool.send(Job::Release(links.clone())) {
            self.release_links(&links);
        }
    }

    /// Deletes `links` (those still there) and frees the addresses they held.
    pub(crate) fn release_links(&self, links: &[String]) {
        for l in links {
            if !Path::new("/sys/class/net").join(l).exists() {
                continue;
            }
            if let Err(err) = netlink::delete_link(l) {
                tracing::warn!(%err, link = %l, "cannot delete released link");
            }
        }
        let owners: HashSet<String> = links
            .iter()
            .map(|l| format!("{RELEASING_OWNER}{l}"))
            .collect();
        self.free_owners(&owners);
    }

    /// Frees every address (IPv4 and IPv6) whose owner is in `owners`.
    pub(crate) fn free_owners(&self, owners: &HashSet<String>) {
        let mut guard = self.lock();
        let mut new = guard.clone();
        let mut changed = false;
        for n in new.networks.values_mut() {
            let before = n.ipam.allocated.len();
            n.ipam.allocated.retain(|_, o| !owners.contains(o));
            changed |= n.ipam.allocated.len() != before;
            if let Some(v6) = n.ipv6.as_mut() {
                let before = v6.ipam.allocated.len();
                v6.ipam.allocated.retain(|_, o| !owners.contains(o));
                changed |= v6.ipam.allocated.len() != before;
            }
        }
        if changed {
            if let Err(err) = self.commit(&mut guard, new) {
                tracing::warn!(%err, "cannot free released addresses");
            }
        }
    }

    /// Destroys entries and frees their addresses, now.
    pub(crate) fn discard(&self, entries: &[Entry]) {
        for e in entries {
            destroy(e);
        }
        self.free_owners(&entries.iter().map(Entry::owner).collect());
    }

    /// Frees, in the kernel, an address of `network` held by a pool entry or a pending
    /// release, for a static request: the entry is destroyed or the link deleted now. The
    /// caller, which holds the state, drops `owner`'s allocations itself. False if `owner` is
    /// neither.
    pub(crate) fn reclaim(&self, network: &str, owner: &str) -> bool {
        if let Some(link) = owner.strip_prefix(RELEASING_OWNER) {
            if let Err(err) = netlink::delete_link(link) {
                tracing::warn!(%err, link, "cannot delete released link");
            }
            return true;
        }
        match self.pool.take_owner(network, owner) {
            Some(e) => {
                destroy(&e);
                true
            }
            None => false,
        }
    }

    /// Every pool entry of `network`, destroyed now (the caller drops their allocations),
    /// for a dynamic request that found its range full. Refilling resumes at the next take.
    /// Returns their address owners.
    pub(crate) fn reclaim_all(&self, network: &str) -> Vec<String> {
        let entries: Vec<Entry> = lock(&self.pool.entries)
            .get_mut(network)
            .map(|q| q.drain(..).collect())
            .unwrap_or_default();
        for e in &entries {
            destroy(e);
        }
        entries.iter().map(Entry::owner).collect()
    }

    /// Fills `network`'s pool up to size, one entry at a time; stops at the first failure
    /// (an exhausted range, a removed network), to try again at the next take.
    fn fill(&self, network: &str) {
        loop {
            if !lock(&self.pool.wanted).contains(network) {
                return;
            }
            let have = lock(&self.pool.entries)
                .get(network)
                .map_or(0, VecDeque::len);
            if have >= self.pool.size {
                return;
            }
            let _busy = lock(&self.pool.busy);
            match self.make_entry(network) {
                Ok(Some(e)) => {
                    let keep = lock(&self.pool.wanted).contains(network);
                    if keep {
                        lock(&self.pool.entries)
                            .entry(network.to_string())
                            .or_default()
                            .push_back(e);
                    } else {
                        self.discard(&[e]);
                        return;
                    }
                }
                Ok(None) => return,
                Err(err) => {
                    tracing::debug!(%err, network, "cannot make a pooled namespace");
                    return;
                }
            }
        }
    }

    /// Reserves an address in IPAM, then makes the namespace and its link. `None` when the
    /// network is gone or has no free address left (containers then allocate their own).
    fn make_entry(&self, network: &str) -> Result<Option<Entry>> {
        let Some(dir) = self.pool.dir.clone() else {
            return Ok(None);
        };
        let (net, host_veth, ip, ip6) = {
            let mut guard = self.lock();
            let Some(net) = guard.networks.get(network).cloned() else {
                return Ok(None);
            };
            let host_veth = self.fresh_veth_name(&guard, &net.id);
            let owner = format!("{POOL_OWNER}{host_veth}");
            let mut new = guard.clone();
            let Some(n) = new.networks.get_mut(network) else {
                return Ok(None);
            };
            let Ok(ip) = n.ipam.allocate(&net.subnet, &net.ip_range, &owner) else {
                return Ok(None);
            };
            let ip6 = match n.ipv6.as_mut() {
                Some(v6) => match v6.ipam.allocate(&v6.subnet, &v6.ip_range, &owner) {
                    Ok(ip6) => Some(ip6),
                    Err(_) => return Ok(None),
                },
                None => None,
            };
            self.commit(&mut guard, new)?;
            (net, host_veth, ip, ip6)
        };
        let entry = Entry {
            netns: dir.join(&host_veth),
            host_veth,
            ip,
            ip6,
            mac: netlink::mac_for(ip),
        };
        if let Err(e) = build(&net, &entry) {
            self.discard(&[entry]);
            return Err(e);
        }
        Ok(Some(entry))
    }

    /// Daemon start: unmounts and removes whatever a previous run left in the pool
    /// directory (its links go with the unowned-link sweep of `reconcile`).
    pub(crate) fn clear_pool_dir(&self) {
        let Some(dir) = &self.pool.dir else { return };
        let Ok(list) = std::fs::read_dir(dir) else {
            return;
        };
        for e in list.flatten() {
            if let Err(err) = netns::remove(&e.path()) {
                let path = e.path();
                tracing::warn!(%err, path = %path.display(), "cannot remove stale pooled namespace");
            }
        }
    }

    /// Adopts a pool entry as `container`'s namespace at `path`: the namespace moves, the
    /// address changes owner in `ipam`s. The caller commits the state.
    pub(crate) fn adopt(
        &self,
        net: &mut NetworkRecord,
        container: &str,
        path: &Path,
    ) -> Option<Entry> {
        loop {
            let e = self.pool.take(&net.id)?;
            self.pool.send(Job::Fill(net.id.clone()));
            let owner = e.owner();
            let owned = net.ipam.allocated.get(&e.ip) == Some(&owner)
                && e.ip6.is_none_or(|ip6| {
                    net.ipv6
                        .as_ref()
                        .is_some_and(|v6| v6.ipam.allocated.get(&ip6) == Some(&owner))
                });
            // The host end must still be a port of the bridge (an operator may have deleted
            // either); a stat of sysfs, no netlink.
            let plugged = Path::new("/sys/class/net")
                .join(&net.bridge)
                .join("brif")
                .join(&e.host_veth)
                .exists();
            // The caller holds the state lock: the worker destroys what cannot be used.
            if !owned || !plugged {
                self.pool.send(Job::Discard(vec![e]));
                continue;
            }
            if let Err(err) = netns::rebind(&e.netns, path) {
                tracing::warn!(%err, "cannot adopt pooled namespace");
                self.pool.send(Job::Discard(vec![e]));
                return None;
            }
            net.ipam.allocated.insert(e.ip, container.to_string());
            if let (Some(v6), Some(ip6)) = (net.ipv6.as_mut(), e.ip6) {
                v6.ipam.allocated.insert(ip6, container.to_string());
            }
            return Some(e);
        }
    }
}

/// How long a released link may outlive its namespace's unmount before it is deleted
/// explicitly (another container joined that namespace and still holds it).
const RELEASE_GRACE: Duration = Duration::from_secs(2);

/// The background worker: runs jobs in order, and frees the addresses of released links once
/// the kernel has destroyed them with their namespaces (its own `cleanup_net` batches that;
/// deleting them here would take the RTNL lock across RCU grace periods once per link).
fn worker(rx: &mpsc::Receiver<Job>, mgr: &Weak<NetworkManager>) {
    let mut pending: Vec<(String, Instant)> = Vec::new();
    loop {
        let job = if pending.is_empty() {
            match rx.recv() {
                Ok(job) => Some(job),
                Err(mpsc::RecvError) => return,
            }
        } else {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(job) => Some(job),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
        };
        let Some(mgr) = mgr.upgrade() else { return };
        match job {
            Some(Job::Fill(id)) => mgr.fill(&id),
            Some(Job::FillIsolated) => mgr.fill_isolated(),
            Some(Job::Release(links)) => {
                pending.extend(links.into_iter().map(|l| (l, Instant::now())));
            }
            Some(Job::Discard(entries)) => mgr.discard(&entries),
            Some(Job::Firewall) => {
                let (st, commits) = mgr.firewall_snapshot();
                if let Err(err) = mgr.sync_firewall_snapshot(&st, commits) {
                    tracing::warn!(%err, "cannot update the firewall");
                }
            }
            None => {}
        }
        let mut done = Vec::new();
        pending.retain(|(link, since)| {
            let gone = !Path::new("/sys/class/net").join(link).exists();
            if gone || since.elapsed() > RELEASE_GRACE {
                done.push(link.clone());
                return false;
            }
            true
        });
        if !done.is_empty() {
            // Deleting is a no-op for the links already gone.
            mgr.release_links(&done);
        }
    }
}

/// Makes a namespace with its loopback up at `path`; nothing is left on failure.
fn make_isolated(path: &Path) -> Result<()> {
    netns::create(path)?;
    netlink::loopback_up(path).inspect_err(|_| {
        let _ = netns::remove(path);
    })
}

/// Makes an entry's namespace and link: what `connect` does for a container, ahead of time.
fn build(net: &NetworkRecord, e: &Entry) -> Result<()> {
    netns::create(&e.netns)?;
    netlink::attach_veth(
        &net.bridge,
        &e.host_veth,
        &ContainerIface {
            netns: &e.netns,
            name: "eth0",
            ip: e.ip,
            prefix: net.subnet.prefix_len(),
            mac: e.mac,
            mtu: net.mtu,
            gateway: (!net.internal).then_some(net.gateway),
            ip6: e.ip6.zip(net.ipv6.as_ref().map(|v| v.subnet.prefix_len())),
            gateway6: net
                .ipv6
                .as_ref()
                .filter(|_| !net.internal)
                .map(|v| v.gateway),
        },
    )
}
