//! berth-network: Docker's bridge networking model for Berth.
//!
//! It owns everything between "the container has a network namespace" and "the container
//! is on the network": the default `bridge` network and user-defined bridge networks, IPv4
//! or dual-stack (`EnableIPv6`: the bridge and each endpoint also get an IPv6 address and
//! default route; isolation but no IPv6 NAT, as in Docker), with their IPAM ([`ipam`],
//! persisted crash-safely by [`store`]), bridges and veth pairs over
//! rtnetlink ([`netlink`]), persistent namespace files ([`netns`]), outbound NAT, published
//! ports and network isolation in a dedicated nftables table ([`firewall`], [`ports`]), a pool
//! of ready-made container namespaces per network ([`pool`]), the
//! embedded DNS server ([`dns`]), `/etc/hosts`-style files ([`files`]) and `--network` modes
//! ([`mode`]). [`NetworkManager`] is the entry point the daemon calls; its methods are
//! blocking, so call them from `spawn_blocking` inside tokio.
//!
//! # Wiring into the daemon
//!
//! - Start: `NetworkManager::open(Config::new(<data-root>/network))` with `pool_dir` set,
//!   then `reconcile(&running_container_ids)`, `ensure_default()`, `start_pool()` (the
//!   background worker of [`pool`]), and `DnsRegistry::sync(&mgr, &host_resolv_conf)` (keep the
//!   registry; sync again after every network create/remove).
//! - Container start, for bridge modes ([`mode::NetworkMode::network`] is `Some`):
//!   `connect(network, ConnectRequest { netns: mode::netns_path(exec_root, id), new_netns:
//!   true, .. })` makes the namespace (a pooled one when it can), further networks connect
//!   into it with `new_netns: false`; write `files::{hosts_file, hostname_file, resolv_conf}`
//!   (embedded DNS = the network's gateway for user networks, none for the default bridge),
//!   then hand the namespace path to the runtime as the OCI network namespace path.
//! - Container exit or removal: `release_container(id, netns_path)`.
//! - Shutdown: `stop_pool()`.

pub mod dns;
pub mod error;
pub mod files;
pub mod firewall;
pub mod ipam;
pub mod manager;
pub mod mode;
pub mod netlink;
pub mod netns;
pub mod nfset;
pub mod pool;
pub mod ports;
pub mod store;

pub use error::{NetworkError, Result};
pub use manager::{
    Config, ConnectRequest, CreateIpv6, CreateNetwork, NetworkManager, ReconcileReport,
    DEFAULT_NETWORK,
};
pub use ports::{parse_port_spec, PortMapping, Proto};
