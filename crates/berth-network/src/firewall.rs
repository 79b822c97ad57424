//! Packet filtering and NAT. All of Berth's IPv4 rules live in one nftables table, `ip berth`
//! (IPv6 networks add network isolation in `ip6 berth`; no IPv6 NAT, as Docker by default),
//! regenerated from the persisted state and swapped in a single atomic `nft -f` transaction,
//! so the host's own tables are never touched and a restart (or reconcile) converges to
//! exactly the rules the state implies. Published ports are elements of two maps in that
//! table: a container's start or removal only adds or deletes elements ([`port_changes`],
//! sent over netlink by [`crate::nfset`]; [`render_port_changes`] is the same in nft's
//! language, the fallback), while the chains are reloaded when the networks change. When the host's iptables FORWARD policy is DROP
//! (e.g. a Debian dockerd is running) an `ACCEPT` for each Berth bridge is added there too,
//! tagged with a comment so it can be found and removed: a packet must be accepted by every
//! base chain on the forward hook, ours alone is not enough.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use crate::error::{NetworkError, Result};
use crate::store::State;

/// Name of the nftables table Berth owns.
pub const TABLE: &str = "berth";

/// One published port as an element of the table's port maps: `ports_ip` (keyed by host
/// address, protocol and port) for a port bound to one address, `ports_any` (protocol and
/// port) for one bound to all; the value is the container's address and port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PortElement {
    host_ip: Option<Ipv4Addr>,
    proto: &'static str,
    host_port: u16,
    container_ip: Ipv4Addr,
    container_port: u16,
}

impl PortElement {
    fn map(&self) -> &'static str {
        if self.host_ip.is_some() {
            "ports_ip"
        } else {
            "ports_any"
        }
    }

    fn key(&self) -> String {
        match self.host_ip {
            Some(ip) => format!("{ip} . {} . {}", self.proto, self.host_port),
            None => format!("{} . {}", self.proto, self.host_port),
        }
    }
}

/// The port map elements `state` implies.
pub fn port_elements(state: &State) -> BTreeSet<PortElement> {
    state
        .networks
        .values()
        .flat_map(|n| n.endpoints.values())
        .flat_map(|ep| {
            ep.ports.iter().map(|p| PortElement {
                host_ip: Some(p.host_ip).filter(|ip| !ip.is_unspecified()),
                proto: p.proto.as_str(),
                host_port: p.host_port,
                container_ip: ep.ip,
                container_port: p.container_port,
            })
        })
        .collect()
}

/// The nft commands taking the port maps from `old` to `new`. Changing set elements leaves
/// every chain in place, so unlike a table reload the kernel does not wait for an RCU grace
/// period: publishing a container's ports costs one short transaction.
pub fn render_port_changes(
    table: &str,
    old: &BTreeSet<PortElement>,
    new: &BTreeSet<PortElement>,
) -> String {
    let mut s = String::new();
    for e in old.difference(new) {
        let _ = writeln!(s, "delete element ip {table} {} {{ {} }}", e.map(), e.key());
    }
    for e in new.difference(old) {
        let _ = writeln!(
            s,
            "add element ip {table} {} {{ {} : {} . {} }}",
            e.map(),
            e.key(),
            e.container_ip,
            e.container_port
        );
    }
    s
}

/// The netlink form of [`render_port_changes`] (see [`crate::nfset`]): deletions first.
pub fn port_changes(
    old: &BTreeSet<PortElement>,
    new: &BTreeSet<PortElement>,
) -> Vec<crate::nfset::ElementChange> {
    let deleted = old.difference(new).map(|e| e.change(false));
    deleted
        .chain(new.difference(old).map(|e| e.change(true)))
        .collect()
}

impl PortElement {
    /// In nftables' register layout: every field of a concatenation padded to 4 bytes.
    fn change(&self, add: bool) -> crate::nfset::ElementChange {
        let port = |p: u16| {
            let [a, b] = p.to_be_bytes();
            [a, b, 0, 0]
        };
        let proto: u8 = match self.proto {
            "udp" => libc::IPPROTO_UDP as u8,
            _ => libc::IPPROTO_TCP as u8,
        };
        let mut key = Vec::with_capacity(12);
        if let Some(ip) = self.host_ip {
            key.extend_from_slice(&ip.octets());
        }
        key.extend_from_slice(&[proto, 0, 0, 0]);
        key.extend_from_slice(&port(self.host_port));
        let mut data = self.container_ip.octets().to_vec();
        data.extend_from_slice(&port(self.container_port));
        crate::nfset::ElementChange {
            add,
            set: self.map().to_string(),
            key,
            data: add.then_some(data),
        }
    }
}

/// Renders the complete `ip berth` table for `state`: the chains and rules, which change
/// with the set of networks, then the published ports as map elements.
pub fn render(table: &str, state: &State) -> String {
    let mut s = render_structure(table, state);
    s.push_str(&render_port_changes(
        table,
        &BTreeSet::new(),
        &port_elements(state),
    ));
    s
}

/// The table without its port map elements (see [`render`]).
pub fn render_structure(table: &str, state: &State) -> String {
    let nets: Vec<_> = state.networks.values().collect();
    let mut s = String::new();
    let _ = writeln!(
        s,
        "table ip {table}\ndelete table ip {table}\ntable ip {table} {{"
    );
    // Port publishing: DNAT from anywhere that reaches a local address, including the
    // host itself (output hook) so 127.0.0.1 and the bridge address work. A port bound to
    // one address is looked up first.
    s.push_str("  map ports_ip {\n    type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service\n  }\n");
    s.push_str(
        "  map ports_any {\n    type inet_proto . inet_service : ipv4_addr . inet_service\n  }\n",
    );
    s.push_str("  chain prerouting {\n    type nat hook prerouting priority dstnat; policy accept;\n    fib daddr type local jump ports\n  }\n");
    s.push_str("  chain output {\n    type nat hook output priority -100; policy accept;\n    fib daddr type local jump ports\n  }\n");
    s.push_str("  chain ports {\n");
    s.push_str("    dnat ip to ip daddr . meta l4proto . th dport map @ports_ip\n");
    s.push_str("    dnat ip to meta l4proto . th dport map @ports_any\n");
    s.push_str("  }\n");
    s.push_str(
        "  chain postrouting {\n    type nat hook postrouting priority srcnat; policy accept;\n",
    );
    for n in &nets {
        let (br, sub) = (&n.bridge, n.subnet);
        // Host-originated 127.0.0.1 traffic DNATed onto the bridge (needs route_localnet).
        let _ = writeln!(s, "    oifname \"{br}\" ip saddr 127.0.0.0/8 masquerade");
        // Hairpin: a container reaching a published port of its own network.
        let _ = writeln!(
            s,
            "    oifname \"{br}\" ip saddr {sub} ct status dnat masquerade"
        );
        if !n.internal {
            let _ = writeln!(s, "    ip saddr {sub} oifname != \"{br}\" masquerade");
        }
    }
    s.push_str("  }\n");
    s.push_str("  chain forward {\n    type filter hook forward priority filter; policy accept;\n");
    // A published port is meant to be reachable, also from other networks via the host.
    s.push_str("    ct status dnat accept\n");
    render_isolation(&mut s, &nets);
    s.push_str("  }\n}\n");
    // IPv6 is routed only between the bridges of IPv6 networks and the host (no NAT, no
    // published ports), but where the host forwards IPv6 the same isolation must hold.
    // Without an IPv6 network there is nothing to isolate, and no `ip6` table.
    let _ = writeln!(s, "table ip6 {table}\ndelete table ip6 {table}");
    if nets.iter().any(|n| n.ipv6.is_some()) {
        let _ = writeln!(s, "table ip6 {table} {{");
        s.push_str(
            "  chain forward {\n    type filter hook forward priority filter; policy accept;\n",
        );
        render_isolation(&mut s, &nets);
        s.push_str("  }\n}\n");
    }
    s
}

/// Forward-chain rules keeping networks apart: by interface name, so they serve both
/// families.
fn render_isolation(s: &mut String, nets: &[&crate::store::NetworkRecord]) {
    for n in nets {
        let br = &n.bridge;
        // Isolation: nothing crosses from one Berth network to another.
        let others: Vec<String> = nets
            .iter()
            .filter(|o| o.bridge != *br)
            .map(|o| format!("\"{}\"", o.bridge))
            .collect();
        if !others.is_empty() {
            let _ = writeln!(
                s,
                "    iifname \"{br}\" oifname {{ {} }} drop",
                others.join(", ")
            );
        }
        if n.internal {
            let _ = writeln!(s, "    iifname \"{br}\" oifname != \"{br}\" drop");
            let _ = writeln!(s, "    oifname \"{br}\" iifname != \"{br}\" drop");
        }
    }
}

/// Runs `script` as one `nft -f` transaction.
pub fn nft(script: &str) -> Result<()> {
    let mut child = Command::new("nft")
        .arg("-f")
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| NetworkError::Nft(format!("spawn nft: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(|e| NetworkError::Nft(format!("write script: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| NetworkError::Nft(format!("wait: {e}")))?;
    if !out.status.success() {
        return Err(NetworkError::Nft(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    Ok(())
}

/// Replaces the `ip berth` table with the rules `state` implies; removes it when no
/// network exists. Also syncs the iptables FORWARD accepts and the sysctls we need.
pub fn apply(table: &str, state: &State) -> Result<()> {
    if state.networks.is_empty() {
        nft(&format!(
            "table ip {table}\ndelete table ip {table}\ntable ip6 {table}\ndelete table ip6 {table}\n"
        ))?;
    } else {
        enable_forwarding()?;
        for n in state.networks.values() {
            // Lets DNATed 127.0.0.1 packets be routed out of the bridge. A bridge deleted
            // behind our back is skipped: the next connect to its network recreates it.
            let path = format!("/proc/sys/net/ipv4/conf/{}/route_localnet", n.bridge);
            if std::path::Path::new(&path).exists() {
                write_sysctl(&path, "1")?;
            }
        }
        nft(&render(table, state))?;
    }
    let bridges: Vec<&str> = state.networks.values().map(|n| n.bridge.as_str()).collect();
    sync_iptables_forward(table, &bridges);
    Ok(())
}

fn enable_forwarding() -> Result<()> {
    write_sysctl("/proc/sys/net/ipv4/ip_forward", "1")
}

fn write_sysctl(path: &str, value: &str) -> Result<()> {
    std::fs::write(path, value).map_err(crate::error::io_err("write sysctl", path))
}

fn iptables(args: &[&str]) -> Option<String> {
    let out = Command::new("iptables")
        .arg("-w")
        .args(args)
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Keeps one `-i br -j ACCEPT` and one `-o br -j ACCEPT` per Berth bridge at the top of the
/// iptables FORWARD chain while its policy is DROP; removes stale ones. Best effort: a host
/// without iptables has no such chain to satisfy.
fn sync_iptables_forward(table: &str, bridges: &[&str]) {
    let comment = format!("{table}-bridge");
    let Some(rules) = iptables(&["-S", "FORWARD"]) else {
        return;
    };
    let drop_policy = rules.lines().any(|l| l.trim() == "-P FORWARD DROP");
    for line in rules.lines().filter(|l| {
        l.contains(&format!("--comment {comment}"))
            || l.contains(&format!("--comment \"{comment}\""))
    }) {
        let keep = drop_policy && bridges.iter().any(|b| line.contains(&format!(" {b} ")));
        if !keep {
            let args: Vec<&str> = line
                .trim_start_matches("-A ")
                .split_whitespace()
                .map(|a| a.trim_matches('"'))
                .collect();
            let mut del = vec!["-D"];
            del.extend(args);
            let _ = iptables(&del);
        }
    }
    if !drop_policy {
        return;
    }
    for b in bridges {
        for dir in ["-i", "-o"] {
            let rule = [
                "FORWARD",
                dir,
                b,
                "-m",
                "comment",
                "--comment",
                &comment,
                "-j",
                "ACCEPT",
            ];
            let mut check = vec!["-C"];
            check.extend(rule);
            if iptables(&check).is_none() {
                let mut ins = vec!["-I"];
                ins.extend(rule);
                let _ = iptables(&ins);
            }
        }
    }
}

/// True if the `ip berth` table exists.
pub fn table_exists(table: &str) -> bool {
    Command::new("nft")
        .args(["list", "table", "ip", table])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipam::Allocations;
    use crate::ports::{PortMapping, Proto};
    use crate::store::{EndpointRecord, NetworkRecord};
    use std::net::Ipv4Addr;

    fn net(name: &str, bridge: &str, subnet: &str, internal: bool) -> NetworkRecord {
        let subnet = subnet.parse().unwrap();
        NetworkRecord {
            id: name.into(),
            name: name.into(),
            bridge: bridge.into(),
            subnet,
            gateway: Ipv4Addr::new(10, 0, 0, 1),
            gateway_auto: false,
            ip_range: subnet,
            mtu: 1500,
            internal,
            default_bridge: false,
            attachable: false,
            labels: Default::default(),
            options: Default::default(),
            ipam: Allocations::default(),
            aux_addresses: Default::default(),
            ipv6: None,
            endpoints: Default::default(),
        }
    }

    #[test]
    fn renders_nat_ports_and_isolation() {
        let mut a = net("a", "bra", "10.0.0.0/24", false);
        a.endpoints.insert(
            "c1".into(),
            EndpointRecord {
                container_id: "c1".into(),
                name: "web".into(),
                aliases: vec![],
                links: vec![],
                ip: Ipv4Addr::new(10, 0, 0, 2),
                ip6: None,
                mac: String::new(),
                host_veth: "v1".into(),
                netns: "/x".into(),
                ports: vec![
                    PortMapping {
                        host_ip: Ipv4Addr::UNSPECIFIED,
                        host_port: 8080,
                        container_port: 80,
                        proto: Proto::Tcp,
                    },
                    PortMapping {
                        host_ip: Ipv4Addr::LOCALHOST,
                        host_port: 5353,
                        container_port: 53,
                        proto: Proto::Udp,
                    },
                ],
            },
        );
        let b = net("b", "brb", "10.1.0.0/24", true);
        let mut st = State::default();
        st.networks.insert("a".into(), a);
        st.networks.insert("b".into(), b);
        let r = render("t", &st);
        assert!(r.starts_with("table ip t\ndelete table ip t\ntable ip t {"));
        assert!(r.contains("dnat ip to ip daddr . meta l4proto . th dport map @ports_ip"));
        assert!(r.contains("add element ip t ports_any { tcp . 8080 : 10.0.0.2 . 80 }"));
        assert!(r.contains("add element ip t ports_ip { 127.0.0.1 . udp . 5353 : 10.0.0.2 . 53 }"));
        // A container leaving and another arriving change elements only.
        let before = port_elements(&st);
        let mut after_state = st.clone();
        if let Some(ep) = after_state
            .networks
            .get_mut("a")
            .and_then(|n| n.endpoints.get_mut("c1"))
        {
            ep.ports.truncate(1);
            ep.ip = Ipv4Addr::new(10, 0, 0, 3);
        }
        assert_eq!(
            render_structure("t", &st),
            render_structure("t", &after_state)
        );
        let changes = render_port_changes("t", &before, &port_elements(&after_state));
        assert_eq!(
            changes,
            "delete element ip t ports_any { tcp . 8080 }\n\
             delete element ip t ports_ip { 127.0.0.1 . udp . 5353 }\n\
             add element ip t ports_any { tcp . 8080 : 10.0.0.3 . 80 }\n"
        );
        assert!(r.contains("ip saddr 10.0.0.0/24 oifname != \"bra\" masquerade"));
        assert!(
            !r.contains("ip saddr 10.1.0.0/24 oifname != \"brb\" masquerade"),
            "internal: no NAT out"
        );
        assert!(r.contains("iifname \"bra\" oifname { \"brb\" } drop"));
        assert!(r.contains("iifname \"brb\" oifname != \"brb\" drop"));
        assert!(
            !r.contains("table ip6 t {"),
            "no IPv6 network, no ip6 table"
        );
        if let Some(b) = st.networks.get_mut("b") {
            b.ipv6 = Some(crate::store::Ipv6Record {
                subnet: "fd00:1::/64".parse().unwrap(),
                gateway: "fd00:1::1".parse().unwrap(),
                ip_range: "fd00:1::/64".parse().unwrap(),
                gateway_given: false,
                subnet_given: true,
                aux_addresses: Default::default(),
                ipam: Default::default(),
            });
        }
        let r = render("t", &st);
        let v6 = r.split("table ip6 t {").nth(1).expect("ip6 table");
        assert!(v6.contains("iifname \"bra\" oifname { \"brb\" } drop"));
        assert!(!v6.contains("masquerade") && !v6.contains("dnat"));
    }

    #[test]
    fn iptables_forward_accepts_follow_drop_policy() {
        // In a private network namespace, so the host's FORWARD chain is untouched.
        std::thread::spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let rules = || iptables(&["-S", "FORWARD"]).unwrap_or_default();
            sync_iptables_forward("t", &["brx"]);
            assert!(!rules().contains("brx"), "ACCEPT policy needs no rule");
            iptables(&["-P", "FORWARD", "DROP"]).unwrap();
            sync_iptables_forward("t", &["brx"]);
            sync_iptables_forward("t", &["brx"]);
            let r = rules();
            assert_eq!(r.matches("t-bridge").count(), 2, "{r}");
            assert!(r.contains("-i brx") && r.contains("-o brx"), "{r}");
            sync_iptables_forward("t", &[]);
            assert!(!rules().contains("brx"), "stale rules removed");
        })
        .join()
        .unwrap();
    }
}
