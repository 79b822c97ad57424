//! Pooled namespaces as root: entries made in the background, taken by a connect with
//! `new_netns` (address, MAC and route already in place), refilled, reclaimed for a static
//! address, drained by `remove_network`, and cleaned up by `reconcile` after a restart.

mod common;

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::path::Path;

use berth_network::pool::{ISOLATED_PREFIX, POOL_OWNER, RELEASING_OWNER};
use berth_network::{netlink, ConnectRequest, CreateNetwork, NetworkManager};
use common::{eventually, ok_in, Env};

fn ours(mgr: &NetworkManager) -> Vec<String> {
    let prefix = &mgr.config().veth_prefix;
    let mut v: Vec<String> = netlink::link_names()
        .unwrap()
        .into_iter()
        .filter(|l| l.starts_with(prefix.as_str()))
        .collect();
    v.sort();
    v
}

/// Files in the pool directory: bridge entries, or with `isolated` the `none` network's.
fn files_of(mgr: &NetworkManager, isolated: bool) -> usize {
    let dir = mgr.config().pool_dir.clone().unwrap();
    std::fs::read_dir(dir).map_or(0, |d| {
        d.flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(ISOLATED_PREFIX) == isolated)
            .count()
    })
}

fn pool_files(mgr: &NetworkManager) -> usize {
    files_of(mgr, false)
}

/// Namespace mounts in the pool directory.
fn pool_mounts(mgr: &NetworkManager) -> usize {
    let dir = format!("{}/", mgr.config().pool_dir.clone().unwrap().display());
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.split(' ').nth(4).is_some_and(|m| m.starts_with(&dir)))
        .count()
}

fn held(mgr: &NetworkManager, network: &str) -> Vec<String> {
    mgr.inspect(network)
        .unwrap()
        .ipam
        .allocated
        .values()
        .filter(|o| o.starts_with(POOL_OWNER) || o.starts_with(RELEASING_OWNER))
        .cloned()
        .collect()
}

fn start(env: &mut Env, network: &str, id: &str) -> berth_network::store::EndpointRecord {
    let ns = env.netns_path(id);
    env.mgr
        .connect(
            network,
            ConnectRequest {
                container_id: id.into(),
                name: id.into(),
                netns: ns,
                new_netns: true,
                ..Default::default()
            },
        )
        .unwrap()
}

#[test]
fn pooled_namespace_is_taken_refilled_reclaimed_and_released() {
    let mut env = Env::with_pool(1);
    let net = env
        .mgr
        .create_network(CreateNetwork {
            name: "p1".into(),
            subnet: Some("10.77.20.0/24".into()),
            bridge_name: Some(env.bridge("p")),
            ..Default::default()
        })
        .unwrap();
    // The bridge's MAC is set once (not all zeros, not following its ports').
    let sys = Path::new("/sys/class/net").join(&net.bridge);
    let mac = std::fs::read_to_string(sys.join("address")).unwrap();
    assert_ne!(mac.trim(), "00:00:00:00:00:00");
    assert_eq!(
        std::fs::read_to_string(sys.join("addr_assign_type"))
            .unwrap()
            .trim(),
        "3"
    );
    // The first start finds no pool yet (the network gets one from now on).
    let c1 = start(&mut env, "p1", "c1");
    assert_eq!(c1.ip, Ipv4Addr::new(10, 77, 20, 2));
    assert!(eventually(|| env.mgr.pooled("p1") == 2));
    assert_eq!(pool_files(&env.mgr), 2);
    assert_eq!(held(&env.mgr, "p1").len(), 2);

    // The second takes an entry: its interface is ready and reaches the first container.
    let c2 = start(&mut env, "p1", "c2");
    assert_eq!(c2.ip, Ipv4Addr::new(10, 77, 20, 3));
    let ns2 = env.netns_path("c2");
    let addr = ok_in(&ns2, &["ip", "-4", "addr", "show", "eth0"]);
    assert!(addr.contains("10.77.20.3/24"), "{addr}");
    assert!(ok_in(&ns2, &["ip", "link", "show", "eth0"]).contains("02:42:0a:4d:14:03"));
    assert!(ok_in(&ns2, &["ip", "link", "show", "lo"]).contains("UP"));
    assert!(ok_in(&ns2, &["ip", "route"]).contains("default via 10.77.20.1 dev eth0"));
    ok_in(&ns2, &["busybox", "ping", "-c1", "-W2", "10.77.20.2"]);
    let owner = &env.mgr.inspect("p1").unwrap().ipam.allocated[&c2.ip];
    assert_eq!(owner, "c2");
    let port = Path::new("/sys/class/net")
        .join(&net.bridge)
        .join("brif")
        .join(&c2.host_veth);
    assert!(port.exists(), "{} not on the bridge", c2.host_veth);
    assert_eq!(std::fs::read_to_string(sys.join("address")).unwrap(), mac);
    assert!(eventually(|| env.mgr.pooled("p1") == 2));

    // A static address held by a pool entry is given to the container that asks for it.
    let ns3 = env.netns_path("c3");
    let c3 = env
        .mgr
        .connect(
            "p1",
            ConnectRequest {
                container_id: "c3".into(),
                name: "c3".into(),
                ip: Some(Ipv4Addr::new(10, 77, 20, 4)),
                netns: ns3.clone(),
                new_netns: true,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(c3.ip, Ipv4Addr::new(10, 77, 20, 4));
    assert!(ok_in(&ns3, &["ip", "-4", "addr", "show", "eth0"]).contains("10.77.20.4/24"));

    // Release: the endpoint goes at once, the link and then the address in the background.
    let nets = env.mgr.release_container("c2", &ns2).unwrap();
    assert_eq!(nets.len(), 1);
    assert!(!env.mgr.inspect("p1").unwrap().endpoints.contains_key("c2"));
    assert!(!ns2.exists());
    assert!(eventually(|| {
        !netlink::link_exists(&c2.host_veth).unwrap()
            && !env
                .mgr
                .inspect("p1")
                .unwrap()
                .ipam
                .allocated
                .contains_key(&c2.ip)
    }));
}

#[test]
fn network_rm_drains_and_restart_reconciles_pool() {
    let mut env = Env::with_pool(2);
    for (name, subnet, br) in [("p2", "10.77.21.0/24", "q"), ("p3", "10.77.22.0/24", "r")] {
        env.mgr
            .create_network(CreateNetwork {
                name: name.into(),
                subnet: Some(subnet.into()),
                bridge_name: Some(env.bridge(br)),
                ..Default::default()
            })
            .unwrap();
    }
    let c1 = start(&mut env, "p2", "c1");
    let c2 = start(&mut env, "p3", "c2");
    assert!(eventually(
        || env.mgr.pooled("p2") == 2 && env.mgr.pooled("p3") == 2
    ));
    assert_eq!(pool_files(&env.mgr), 4);

    // `network rm` drains its pool: nothing of p3 is left once it returns.
    let ns2 = env.netns_path("c2");
    env.mgr.release_container("c2", &ns2).unwrap();
    env.mgr.remove_network("p3").unwrap();
    assert_eq!(pool_files(&env.mgr), 2);
    let links = ours(&env.mgr);
    assert_eq!(links.len(), 3, "c1 and p2's two entries only: {links:?}");
    assert!(links.contains(&c1.host_veth));
    assert!(!links.contains(&c2.host_veth));

    // A daemon killed with entries pooled: the next one removes them and frees their
    // addresses, and keeps the live container's endpoint.
    let again = NetworkManager::open(env.mgr.config().clone()).unwrap();
    again.reconcile(&HashSet::from(["c1".to_string()])).unwrap();
    assert_eq!(pool_files(&again), 0);
    // Unmounted namespaces take their links with them, a moment later (or the sweep does).
    assert!(eventually(|| ours(&again) == vec![c1.host_veth.clone()]));
    assert!(held(&again, "p2").is_empty());
    assert!(again.inspect("p2").unwrap().endpoints.contains_key("c1"));
}

#[test]
fn loopback_only_namespaces_are_pooled_with_lo_up() {
    let mut env = Env::with_pool(3);
    let size = env.mgr.config().pool_size;
    assert!(size > 0);
    assert!(eventually(|| env.mgr.pooled_isolated() == size));
    assert_eq!(files_of(&env.mgr, true), size);
    // More than the pool holds: the rest are made at once; all have lo up and nothing else.
    for i in 0..=size {
        let ns = env.netns_path(&format!("n{i}"));
        env.mgr.isolated_netns(&ns).unwrap();
        let links = ok_in(&ns, &["ip", "-o", "link", "show"]);
        assert_eq!(links.lines().count(), 1, "{links}");
        assert!(links.contains("lo: <LOOPBACK,UP"), "{links}");
        let addrs = ok_in(&ns, &["ip", "-o", "addr", "show", "lo"]);
        assert!(addrs.contains("127.0.0.1/8"), "{addrs}");
    }
    assert!(eventually(|| env.mgr.pooled_isolated() == size));
    // A shutdown leaves none mounted.
    env.mgr.stop_pool();
    assert_eq!(pool_mounts(&env.mgr), 0);
    assert_eq!(files_of(&env.mgr, true), 0);
}
