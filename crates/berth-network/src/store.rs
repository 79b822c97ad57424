//! The persisted model (networks, their endpoints and address allocations) and its
//! crash-safe storage: one JSON file replaced by rename, so a crash leaves either the old or
//! the new state, never a torn file.
//!
//! Only network definitions need to survive a power loss; endpoints and container addresses
//! describe running containers, and after a reboot none runs (`reconcile` drops them). So
//! changes of the network set are written durably (fsync of the file and the directory, and
//! a copy kept as `<file>.durable`), while endpoint changes on the container start and stop
//! paths skip the fsyncs. Should a power loss leave the last non-durable rename with torn
//! contents, `load` falls back to the durable copy.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{io_err, NetworkError, Result};
use crate::ipam::{Allocations, Allocations6, Ipv4Net, Ipv6Net};
use crate::ports::PortMapping;

/// One bridge network.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NetworkRecord {
    pub id: String,
    pub name: String,
    /// Linux bridge interface name (at most 15 bytes).
    pub bridge: String,
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
    /// The gateway was picked by Berth inside a subnet the user gave: inspect then shows
    /// the config as given, without it, as dockerd does.
    #[serde(default)]
    pub gateway_auto: bool,
    /// Sub-range dynamic addresses come from (defaults to the subnet).
    pub ip_range: Ipv4Net,
    pub mtu: u32,
    /// No outbound NAT and no forwarding off the bridge (`--internal`).
    pub internal: bool,
    /// The default `bridge` network: no embedded DNS, isolated like the others.
    pub default_bridge: bool,
    /// `--attachable`, reported back (every local bridge network is attachable in effect).
    #[serde(default)]
    pub attachable: bool,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Driver options as given at creation (`docker network create -o`), reported back.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    pub ipam: Allocations,
    /// IPAM `AuxiliaryAddresses` as given: reserved in `ipam`, never handed to a container.
    #[serde(default)]
    pub aux_addresses: BTreeMap<String, Ipv4Addr>,
    /// The IPv6 side of an `EnableIPv6` network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<Ipv6Record>,
    /// Endpoints by container id.
    pub endpoints: BTreeMap<String, EndpointRecord>,
}

/// IPv6 addressing of a dual-stack network.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Ipv6Record {
    pub subnet: Ipv6Net,
    pub gateway: Ipv6Addr,
    /// Sub-range dynamic addresses come from (defaults to the subnet).
    pub ip_range: Ipv6Net,
    /// Whether the gateway was chosen by the user (inspect shows it only then, as dockerd).
    #[serde(default)]
    pub gateway_given: bool,
    /// Whether the subnet was chosen by the user rather than a random ULA /64.
    #[serde(default)]
    pub subnet_given: bool,
    #[serde(default)]
    pub aux_addresses: BTreeMap<String, Ipv6Addr>,
    pub ipam: Allocations6,
}

/// A container's attachment to a network.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EndpointRecord {
    pub container_id: String,
    /// Container name without the leading slash.
    pub name: String,
    pub aliases: Vec<String>,
    /// `--link target:alias` pairs: names only this container resolves.
    pub links: Vec<(String, String)>,
    pub ip: Ipv4Addr,
    /// Address on an IPv6 network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip6: Option<Ipv6Addr>,
    pub mac: String,
    /// Host side of the veth pair.
    pub host_veth: String,
    pub netns: PathBuf,
    pub ports: Vec<PortMapping>,
}

/// Everything berth-network persists.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct State {
    pub networks: BTreeMap<String, NetworkRecord>,
}

impl State {
    pub fn find(&self, id_or_name: &str) -> Option<&NetworkRecord> {
        self.networks.get(id_or_name).or_else(|| {
            self.networks
                .values()
                .find(|n| n.name == id_or_name)
                .or_else(|| {
                    let mut it = self
                        .networks
                        .values()
                        .filter(|n| n.id.starts_with(id_or_name));
                    match (it.next(), it.next()) {
                        (Some(n), None) if !id_or_name.is_empty() => Some(n),
                        _ => None,
                    }
                })
        })
    }
}

/// The copy of `path` written at every durable save.
fn durable_copy(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".durable");
    PathBuf::from(name)
}

/// Loads `path`, returning an empty state if it does not exist yet; a torn `path` (a power
/// loss after a non-durable save) gives the last durable state instead.
pub fn load(path: &Path) -> Result<State> {
    match read(path) {
        Err(NetworkError::StateCorrupt { path: p, source }) if durable_copy(path).exists() => {
            tracing::warn!(path = %p.display(), %source, "state file torn, using its durable copy");
            read(&durable_copy(path))
        }
        r => r,
    }
}

fn read(path: &Path) -> Result<State> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| NetworkError::StateCorrupt {
            path: path.to_path_buf(),
            source,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
        Err(e) => Err(io_err("read", path)(e)),
    }
}

/// Atomically replaces `path` with `state`; `durable` also makes it (and its durable copy)
/// survive a power loss.
pub fn save(path: &Path, state: &State, durable: bool) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(state).map_err(|source| NetworkError::StateCorrupt {
        path: path.to_path_buf(),
        source,
    })?;
    if durable {
        replace(&durable_copy(path), &bytes, true)?;
    }
    replace(path, &bytes, durable)
}

fn replace(path: &Path, bytes: &[u8], durable: bool) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(io_err("create", dir))?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = File::create(&tmp).map_err(io_err("create", &tmp))?;
    f.write_all(bytes).map_err(io_err("write", &tmp))?;
    if durable {
        f.sync_all().map_err(io_err("fsync", &tmp))?;
    }
    drop(f);
    fs::rename(&tmp, path).map_err(io_err("rename", path))?;
    if durable {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err("fsync", dir))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(names: &[&str]) -> State {
        let mut st = State::default();
        for n in names {
            let rec = NetworkRecord {
                id: (*n).to_string(),
                name: (*n).to_string(),
                bridge: format!("br-{n}"),
                subnet: "10.9.0.0/24".parse().unwrap(),
                gateway: Ipv4Addr::new(10, 9, 0, 1),
                gateway_auto: false,
                ip_range: "10.9.0.0/24".parse().unwrap(),
                mtu: 1500,
                internal: false,
                default_bridge: false,
                attachable: false,
                labels: BTreeMap::new(),
                options: BTreeMap::new(),
                ipam: Allocations::default(),
                aux_addresses: BTreeMap::new(),
                ipv6: None,
                endpoints: BTreeMap::new(),
            };
            st.networks.insert(rec.id.clone(), rec);
        }
        st
    }

    #[test]
    fn torn_state_falls_back_to_the_durable_copy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("networks.json");
        assert_eq!(load(&path).unwrap(), State::default());
        save(&path, &state(&["a"]), true).unwrap();
        save(&path, &state(&["a", "b"]), false).unwrap();
        assert_eq!(load(&path).unwrap(), state(&["a", "b"]));
        // What a power loss may leave of a rename whose data was never flushed.
        std::fs::write(&path, "").unwrap();
        assert_eq!(load(&path).unwrap(), state(&["a"]));
        // Without a durable copy, a torn file is an error, not an empty state.
        std::fs::remove_file(durable_copy(&path)).unwrap();
        assert!(matches!(
            load(&path),
            Err(NetworkError::StateCorrupt { .. })
        ));
    }
}
