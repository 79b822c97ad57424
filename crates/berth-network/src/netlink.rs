//! Link, address and route plumbing over rtnetlink. The API is synchronous: each call runs a
//! short-lived current-thread runtime on its own OS thread, which makes it callable from
//! anywhere (including inside tokio via `spawn_blocking`) and lets the thread enter a
//! container's network namespace with `setns` before opening its netlink socket, without
//! touching the caller's namespace.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsFd;
use std::path::Path;

use futures_util::TryStreamExt;
use rtnetlink::packet_route::link::{LinkAttribute, LinkMessage};
use rtnetlink::{Handle, LinkBridge, LinkUnspec, LinkVeth, RouteMessageBuilder};

use crate::error::{io_err, NetworkError, Result};

/// Runs `f` with a netlink handle, optionally inside the network namespace at `netns`.
fn run<T, F, Fut>(netns: Option<&Path>, f: F) -> Result<T>
where
    T: Send,
    F: FnOnce(Handle) -> Fut + Send,
    Fut: Future<Output = Result<T>>,
{
    std::thread::scope(|s| {
        s.spawn(move || {
            if let Some(path) = netns {
                let file = std::fs::File::open(path).map_err(io_err("open netns", path))?;
                // Only this helper thread moves; it exits when the closure is done.
                nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).map_err(
                    |source| NetworkError::Sys {
                        op: "setns",
                        source,
                    },
                )?;
            }
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .build()
                .map_err(io_err("tokio runtime", "netlink"))?;
            rt.block_on(async {
                let (conn, handle, _) =
                    rtnetlink::new_connection().map_err(io_err("netlink socket", "route"))?;
                let task = tokio::spawn(conn);
                let out = f(handle).await;
                task.abort();
                out
            })
        })
        .join()
        .unwrap_or(Err(NetworkError::WorkerPanicked("netlink")))
    })
}

fn nl(op: &'static str, target: &str) -> impl FnOnce(rtnetlink::Error) -> NetworkError {
    let target = target.to_string();
    move |source| NetworkError::Netlink { op, target, source }
}

async fn index_of(h: &Handle, name: &str) -> Result<Option<u32>> {
    let mut links = h.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(Some(msg)) => Ok(Some(msg.header.index)),
        Ok(None) => Ok(None),
        // ENODEV: no such link.
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => Ok(None),
        Err(e) => Err(nl("get link", name)(e)),
    }
}

async fn must_index(h: &Handle, name: &str) -> Result<u32> {
    index_of(h, name)
        .await?
        .ok_or_else(|| NetworkError::LinkNotFound(name.to_string()))
}

/// True if a link called `name` exists in the current namespace.
pub fn link_exists(name: &str) -> Result<bool> {
    let name = name.to_string();
    run(
        None,
        |h| async move { Ok(index_of(&h, &name).await?.is_some()) },
    )
}

/// Names of all links in the current namespace.
pub fn link_names() -> Result<Vec<String>> {
    run(None, list_names)
}

/// Names of all links in the namespace at `netns` (to pick a container's next `ethN`).
pub fn link_names_in(netns: &Path) -> Result<Vec<String>> {
    run(Some(netns), list_names)
}

async fn list_names(h: Handle) -> Result<Vec<String>> {
    let msgs: Vec<LinkMessage> = h
        .link()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(nl("list links", "all"))?;
    Ok(msgs
        .into_iter()
        .filter_map(|m| {
            m.attributes.into_iter().find_map(|a| match a {
                LinkAttribute::IfName(n) => Some(n),
                _ => None,
            })
        })
        .collect())
}

/// Adds `ip/prefix` to link `idx` without duplicate address detection: the addresses are
/// ours by construction, and DAD would leave an IPv6 address tentative (unusable) for a
/// second or more after a container starts.
async fn add_address(h: &Handle, idx: u32, ip: IpAddr, prefix: u8, name: &str) -> Result<()> {
    use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags, AddressHeaderFlags};
    let mut req = h.address().add(idx, ip, prefix);
    if ip.is_ipv6() {
        let msg = req.message_mut();
        msg.header.flags |= AddressHeaderFlags::Nodad;
        msg.attributes
            .push(AddressAttribute::Flags(AddressFlags::Nodad));
    }
    req.execute().await.map_err(nl("add address", name))
}

/// Turns IPv6 on for interface `name` of the calling thread's network namespace, in case the
/// host's default disables it. A kernel without IPv6 has no such file: adding the address
/// then fails with the reason.
fn enable_ipv6(name: &str) -> Result<()> {
    let path = format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6");
    match std::fs::read_to_string(&path) {
        Ok(v) if v.trim() != "0" => {
            std::fs::write(&path, "0").map_err(io_err("write sysctl", &path))
        }
        _ => Ok(()),
    }
}

/// Creates bridge `name` with `gateway/prefix` (and the IPv6 gateway `gateway6` of a
/// dual-stack network), sets `mtu` and brings it up. An existing bridge of that name is
/// reused (idempotent for restarts).
pub fn ensure_bridge(
    name: &str,
    gateway: Ipv4Addr,
    prefix: u8,
    gateway6: Option<(Ipv6Addr, u8)>,
    mtu: u32,
) -> Result<()> {
    let name = name.to_string();
    run(None, |h| async move {
        if index_of(&h, &name).await?.is_none() {
            h.link()
                .add(LinkBridge::new(&name).mtu(mtu).build())
                .execute()
                .await
                .map_err(nl("create bridge", &name))?;
        }
        let idx = must_index(&h, &name).await?;
        let addrs: Vec<_> = h
            .address()
            .get()
            .set_link_index_filter(idx)
            .execute()
            .try_collect()
            .await
            .map_err(nl("list addresses", &name))?;
        let has = |want: IpAddr| {
            addrs.iter().any(|a| {
                a.attributes.iter().any(|at| matches!(at, rtnetlink::packet_route::address::AddressAttribute::Address(ip) if *ip == want))
            })
        };
        if !has(IpAddr::V4(gateway)) {
            add_address(&h, idx, IpAddr::V4(gateway), prefix, &name).await?;
        }
        if let Some((gw6, prefix6)) = gateway6 {
            enable_ipv6(&name)?;
            if !has(IpAddr::V6(gw6)) {
                add_address(&h, idx, IpAddr::V6(gw6), prefix6, &name).await?;
            }
        }
        // A bridge whose MAC address was never set follows the lowest MAC among its ports
        // (and has none, all zeros, without ports), so it would change as containers and
        // pooled namespaces come and go, leaving stale gateway neighbour entries in every
        // container. Setting it pins it: to the address it has, or a random one.
        let sys = format!("/sys/class/net/{name}");
        let assigned = std::fs::read_to_string(format!("{sys}/addr_assign_type"))
            .map_err(io_err("read", &sys))?;
        let current = std::fs::read_to_string(format!("{sys}/address"))
            .ok()
            .and_then(|m| parse_mac(m.trim()))
            .filter(|m| m.iter().any(|b| *b != 0));
        if assigned.trim() != "3" || current.is_none() {
            let mac = current.unwrap_or_else(random_mac);
            h.link()
                .set(
                    LinkUnspec::new_with_index(idx)
                        .address(mac.to_vec())
                        .build(),
                )
                .execute()
                .await
                .map_err(nl("set address", &name))?;
        }
        h.link()
            .set(LinkUnspec::new_with_index(idx).up().build())
            .execute()
            .await
            .map_err(nl("set up", &name))?;
        Ok(())
    })
}

/// Deletes link `name` if it exists (deleting one end of a veth deletes both).
pub fn delete_link(name: &str) -> Result<()> {
    let name = name.to_string();
    run(None, |h| async move {
        if let Some(idx) = index_of(&h, &name).await? {
            match h.link().del(idx).execute().await {
                Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => {}
                r => r.map_err(nl("delete link", &name))?,
            }
        }
        Ok(())
    })
}

/// What to configure on the container side of a veth pair.
#[derive(Debug, Clone)]
pub struct ContainerIface<'a> {
    pub netns: &'a Path,
    /// Final name inside the namespace, usually `eth0`.
    pub name: &'a str,
    pub ip: Ipv4Addr,
    pub prefix: u8,
    pub mac: [u8; 6],
    pub mtu: u32,
    /// Default route via this gateway; `None` for internal networks with no route out.
    pub gateway: Option<Ipv4Addr>,
    /// IPv6 address and prefix on an IPv6 network.
    pub ip6: Option<(Ipv6Addr, u8)>,
    /// IPv6 default route via this gateway.
    pub gateway6: Option<Ipv6Addr>,
}

/// Creates veth `host_name` <-> `c.name` with the container end made directly inside
/// `c.netns` (MAC, MTU) and the host end enslaved to `bridge` and up, in one request:
/// moving a link between namespaces afterwards would wait for RCU grace periods under the
/// RTNL lock. Then turns hairpin on and, inside the namespace, sets lo and the container end
/// up, the addresses and the default routes. On failure the pair is deleted, leaving nothing
/// behind.
pub fn attach_veth(bridge: &str, host_name: &str, c: &ContainerIface<'_>) -> Result<()> {
    let r = attach_veth_inner(bridge, host_name, c);
    if r.is_err() {
        let _ = delete_link(host_name);
    }
    r
}

fn attach_veth_inner(bridge: &str, host_name: &str, c: &ContainerIface<'_>) -> Result<()> {
    use rtnetlink::packet_route::link::{InfoData, InfoKind, InfoVeth};
    use rtnetlink::LinkMessageBuilder;
    let ns = std::fs::File::open(c.netns).map_err(io_err("open netns", c.netns))?;
    {
        let (bridge, host_name, name) = (
            bridge.to_string(),
            host_name.to_string(),
            c.name.to_string(),
        );
        let (mtu, mac, ns_fd) = (c.mtu, c.mac, std::os::fd::AsRawFd::as_raw_fd(&ns));
        run(None, |h| async move {
            let br = must_index(&h, &bridge).await?;
            let peer = LinkMessageBuilder::<LinkUnspec>::new()
                .name(name)
                .address(mac.to_vec())
                .mtu(mtu)
                .setns_by_fd(ns_fd)
                .build();
            let msg = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
                .name(host_name.clone())
                .mtu(mtu)
                .controller(br)
                .up()
                .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
                .build();
            h.link()
                .add(msg)
                .execute()
                .await
                .map_err(nl("create veth", &host_name))
        })?;
    }
    // Hairpin lets a container reach itself through its own published port.
    let hp = format!("/sys/class/net/{host_name}/brport/hairpin_mode");
    std::fs::write(&hp, "1").map_err(io_err("write", &hp))?;
    let (name, ip, prefix, gw) = (c.name.to_string(), c.ip, c.prefix, c.gateway);
    let (ip6, gw6) = (c.ip6, c.gateway6);
    run(Some(c.netns), |h| async move {
        let lo = must_index(&h, "lo").await?;
        h.link()
            .set(LinkUnspec::new_with_index(lo).up().build())
            .execute()
            .await
            .map_err(nl("set up", "lo"))?;
        let idx = must_index(&h, &name).await?;
        // Not at creation: the kernel configures the peer before linking the pair, and a
        // veth cannot go up without its peer.
        h.link()
            .set(LinkUnspec::new_with_index(idx).up().build())
            .execute()
            .await
            .map_err(nl("set up", &name))?;
        add_address(&h, idx, IpAddr::V4(ip), prefix, &name).await?;
        if let Some((ip6, prefix6)) = ip6 {
            // This helper thread is inside the container's namespace: /proc/sys/net is its.
            enable_ipv6(&name)?;
            add_address(&h, idx, IpAddr::V6(ip6), prefix6, &name).await?;
        }
        if let Some(gw) = gw {
            let route = RouteMessageBuilder::<Ipv4Addr>::new()
                .gateway(gw)
                .output_interface(idx)
                .build();
            match h.route().add(route).execute().await {
                // A second network of the container: the first one's default route stays,
                // as in Docker.
                Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::EEXIST => {}
                r => r.map_err(nl("add default route", &name))?,
            }
        }
        if let (Some(gw6), Some(_)) = (gw6, ip6) {
            let route = RouteMessageBuilder::<Ipv6Addr>::new()
                .gateway(gw6)
                .output_interface(idx)
                .build();
            match h.route().add(route).execute().await {
                Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::EEXIST => {}
                r => r.map_err(nl("add default IPv6 route", &name))?,
            }
        }
        Ok(())
    })
}

/// Sets the loopback interface of the namespace at `netns` up (the kernel gives it its
/// 127.0.0.1/8 and ::1 then), as Docker's `none` network has it.
pub fn loopback_up(netns: &Path) -> Result<()> {
    run(Some(netns), |h| async move {
        let lo = must_index(&h, "lo").await?;
        h.link()
            .set(LinkUnspec::new_with_index(lo).up().build())
            .execute()
            .await
            .map_err(nl("set up", "lo"))
    })
}

/// Deletes interface `name` inside the namespace at `netns` (used when detaching a
/// container whose namespace outlives the endpoint).
pub fn delete_link_in(netns: &Path, name: &str) -> Result<()> {
    let name = name.to_string();
    run(Some(netns), |h| async move {
        if let Some(idx) = index_of(&h, &name).await? {
            h.link()
                .del(idx)
                .execute()
                .await
                .map_err(nl("delete link", &name))?;
        }
        Ok(())
    })
}

/// A random locally administered unicast MAC address.
fn random_mac() -> [u8; 6] {
    let mut mac: [u8; 6] = rand::random();
    mac[0] = (mac[0] & 0xfe) | 0x02;
    mac
}

/// Docker's MAC scheme: 02:42 followed by the IPv4 address.
pub fn mac_for(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x02, 0x42, o[0], o[1], o[2], o[3]]
}

/// Parses `aa:bb:cc:dd:ee:ff`; `None` unless it is a unicast address (a multicast or
/// broadcast one cannot be set on an interface).
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    (parts.next().is_none() && mac[0] & 1 == 0).then_some(mac)
}

/// Formats a MAC address.
pub fn mac_string(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Host IPv4 routes' destinations, so new pools avoid them.
pub fn host_routes() -> Result<Vec<crate::ipam::Ipv4Net>> {
    let msg = RouteMessageBuilder::<Ipv4Addr>::new().build();
    Ok(route_destinations(msg, "ipv4")?
        .into_iter()
        .filter_map(|(ip, p)| match ip {
            IpAddr::V4(ip) => crate::ipam::Ipv4Net::new(ip, p).ok(),
            IpAddr::V6(_) => None,
        })
        .collect())
}

/// Host IPv6 routes' destinations (not the default route), so a generated subnet avoids them.
pub fn host_routes6() -> Result<Vec<crate::ipam::Ipv6Net>> {
    let msg = RouteMessageBuilder::<Ipv6Addr>::new().build();
    Ok(route_destinations(msg, "ipv6")?
        .into_iter()
        .filter_map(|(ip, p)| match ip {
            IpAddr::V6(ip) => crate::ipam::Ipv6Net::new(ip, p).ok(),
            IpAddr::V4(_) => None,
        })
        .collect())
}

/// The (destination, prefix length) of the host's routes that `query` (one address family)
/// lists, the default route left out.
fn route_destinations(
    query: rtnetlink::packet_route::route::RouteMessage,
    family: &'static str,
) -> Result<Vec<(IpAddr, u8)>> {
    run(None, move |h| async move {
        use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute};
        let msgs: Vec<_> = h
            .route()
            .get(query)
            .execute()
            .try_collect()
            .await
            .map_err(nl("list routes", family))?;
        Ok(msgs
            .into_iter()
            .filter(|m| m.header.destination_prefix_length > 0)
            .filter_map(|m| {
                let p = m.header.destination_prefix_length;
                m.attributes.into_iter().find_map(|a| match a {
                    RouteAttribute::Destination(RouteAddress::Inet(ip)) => {
                        Some((IpAddr::V4(ip), p))
                    }
                    RouteAttribute::Destination(RouteAddress::Inet6(ip)) => {
                        Some((IpAddr::V6(ip), p))
                    }
                    _ => None,
                })
            })
            .collect())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs() {
        assert_eq!(
            parse_mac("02:42:AC:11:00:0a"),
            Some([0x02, 0x42, 0xac, 0x11, 0x00, 0x0a])
        );
        for bad in [
            "",
            "02:42:ac:11:00",
            "02:42:ac:11:00:0a:0b",
            "2:42:ac:11:00:0a",
            "01:00:5e:00:00:01",
            "zz:42:ac:11:00:0a",
        ] {
            assert_eq!(parse_mac(bad), None, "{bad}");
        }
        assert_eq!(
            mac_string(mac_for(Ipv4Addr::new(172, 17, 0, 2))),
            "02:42:ac:11:00:02"
        );
    }
}
