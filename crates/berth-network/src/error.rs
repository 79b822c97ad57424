//! The crate's error type: one enum, each variant carrying the context (network, path,
//! interface, port) an operator needs to act on it.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

/// Errors returned by berth-network.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("invalid subnet {0:?}: expected a.b.c.d/len or an IPv6 x:x::x/len")]
    InvalidCidr(String),
    #[error("invalid address {0:?}")]
    InvalidAddress(String),
    #[error("invalid port mapping {spec:?}: {reason}")]
    InvalidPortSpec { spec: String, reason: String },
    #[error("invalid network name {0:?}")]
    InvalidName(String),
    #[error("network {0} not found")]
    NetworkNotFound(String),
    #[error("network with name {0} already exists")]
    NetworkExists(String),
    #[error("subnet {subnet} overlaps with {other}")]
    SubnetOverlap { subnet: String, other: String },
    #[error("{what} {addr} is outside subnet {subnet}")]
    OutsideSubnet {
        what: &'static str,
        addr: String,
        subnet: String,
    },
    #[error("no free address pool for a new network")]
    NoFreePool,
    #[error("no free address left in {0}")]
    PoolExhausted(String),
    #[error("address {addr} is already in use on network {network}")]
    AddressInUse { addr: IpAddr, network: String },
    #[error("network {network} has active endpoints: {endpoints}")]
    ActiveEndpoints { network: String, endpoints: String },
    #[error("network {0} does not have IPv6 enabled: an IPv6 address cannot be assigned")]
    Ipv6Disabled(String),
    #[error("container {container} is already connected to network {network}")]
    AlreadyConnected { container: String, network: String },
    #[error("container {container} is not connected to network {network}")]
    NotConnected { container: String, network: String },
    #[error("bind for {addr}:{port}/{proto} failed: port is already allocated")]
    PortInUse {
        addr: Ipv4Addr,
        port: u16,
        proto: &'static str,
    },
    #[error("no free host port for {0}")]
    NoFreeHostPort(String),
    #[error("network {0} is predefined and cannot be removed")]
    Predefined(String),
    #[error("netlink {op} {target}: {source}")]
    Netlink {
        op: &'static str,
        target: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("link {0} not found")]
    LinkNotFound(String),
    #[error("nft: {0}")]
    Nft(String),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{op}: {source}")]
    Sys {
        op: &'static str,
        #[source]
        source: nix::Error,
    },
    #[error("state file {path}: {source}")]
    StateCorrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("dns: {0}")]
    Dns(String),
    #[error("{0} worker thread panicked")]
    WorkerPanicked(&'static str),
}

/// Convenience alias.
pub type Result<T, E = NetworkError> = std::result::Result<T, E>;

pub(crate) fn io_err(
    op: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(std::io::Error) -> NetworkError {
    let path = path.into();
    move |source| NetworkError::Io { op, path, source }
}
