//! Dual-stack bridge networks as root: the bridge's IPv6 gateway, containers' IPv6
//! addresses (allocated and static) and default routes, ping6 between namespaces and from
//! the host, IPv6 names in the resolver, auxiliary addresses kept out of allocation,
//! overlap and syntax checks, the `ip6` isolation table, and cleanup. Traffic stays on the
//! bridges and namespaces each test creates.

mod common;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use berth_network::{netlink, ConnectRequest, CreateIpv6, CreateNetwork, NetworkError};
use common::{ok_in, Env};

fn nft_table6(table: &str) -> Option<String> {
    let out = std::process::Command::new("nft")
        .args(["list", "table", "ip6", table])
        .output()
        .expect("nft");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn host(args: &[&str]) -> String {
    let out = std::process::Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("spawn");
    assert!(
        out.status.success(),
        "{args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn v6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

#[test]
fn dual_stack_addresses_routes_ping6_and_cleanup() {
    let mut env = Env::new(21);
    let aux4: BTreeMap<String, String> = [("a".into(), "10.78.1.2".into())].into();
    let aux6: BTreeMap<String, String> = [("r".into(), "fd77:1::2".into())].into();
    let net = env
        .mgr
        .create_network(CreateNetwork {
            name: "v6a".into(),
            subnet: Some("10.78.1.0/24".into()),
            bridge_name: Some(env.bridge("a")),
            aux_addresses: aux4,
            ipv6: Some(CreateIpv6 {
                subnet: Some("fd77:1::/64".into()),
                aux_addresses: aux6,
                ..Default::default()
            }),
            ..Default::default()
        })
        .unwrap();
    let v6net = net.ipv6.clone().expect("ipv6 side");
    assert_eq!(v6net.gateway, v6("fd77:1::1"));
    assert_eq!(net.aux_addresses["a"], Ipv4Addr::new(10, 78, 1, 2));
    let br = host(&["ip", "-6", "addr", "show", "dev", &net.bridge]);
    assert!(br.contains("fd77:1::1/64"), "{br}");

    let (ns1, ns2) = (env.netns("c1"), env.netns("c2"));
    let web = env
        .mgr
        .connect(
            "v6a",
            ConnectRequest {
                container_id: "c1c1c1c1c1c1".into(),
                name: "web".into(),
                netns: ns1.clone(),
                ..Default::default()
            },
        )
        .unwrap();
    // The auxiliary addresses (.2 and ::2) are skipped by allocation.
    assert_eq!(web.ip, Ipv4Addr::new(10, 78, 1, 3));
    assert_eq!(web.ip6, Some(v6("fd77:1::3")));
    let client = env
        .mgr
        .connect(
            "v6a",
            ConnectRequest {
                container_id: "c2c2c2c2c2c2".into(),
                name: "client".into(),
                netns: ns2.clone(),
                ip6: Some(v6("fd77:1::f00d")),
                mac: Some([0x02, 0x42, 0xde, 0xad, 0xbe, 0xef]),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(client.ip6, Some(v6("fd77:1::f00d")));
    assert_eq!(client.mac, "02:42:de:ad:be:ef");
    assert!(ok_in(&ns2, &["ip", "link", "show", "eth0"]).contains("02:42:de:ad:be:ef"));

    let addr = ok_in(&ns1, &["ip", "-6", "addr", "show", "eth0"]);
    assert!(addr.contains("fd77:1::3/64"), "{addr}");
    let global = addr
        .lines()
        .find(|l| l.contains("fd77:1::3/64"))
        .unwrap_or_default();
    assert!(!global.contains("tentative"), "no DAD wait: {addr}");
    let routes = ok_in(&ns1, &["ip", "-6", "route"]);
    assert!(
        routes.contains("default via fd77:1::1 dev eth0"),
        "{routes}"
    );

    // ping6 container to container, container to gateway, host to container.
    ok_in(&ns2, &["busybox", "ping", "-6", "-c1", "-W5", "fd77:1::3"]);
    ok_in(&ns1, &["busybox", "ping", "-6", "-c1", "-W5", "fd77:1::1"]);
    host(&["busybox", "ping", "-6", "-c1", "-W5", "fd77:1::f00d"]);

    // The embedded DNS resolver knows both addresses of a name.
    let ips = env
        .mgr
        .resolve(net.gateway, client.ip, "web")
        .expect("web resolves");
    assert!(ips.contains(&IpAddr::V4(web.ip)) && ips.contains(&IpAddr::V6(v6("fd77:1::3"))));

    // Reserved addresses are refused as static addresses too.
    let ns3 = env.netns("c3");
    for (ip, ip6) in [
        (Some(Ipv4Addr::new(10, 78, 1, 2)), None),
        (None, Some(v6("fd77:1::2"))),
        (None, Some(v6("fd77:1::f00d"))),
    ] {
        let r = env.mgr.connect(
            "v6a",
            ConnectRequest {
                container_id: "c3".into(),
                name: "c3".into(),
                netns: ns3.clone(),
                ip,
                ip6,
                ..Default::default()
            },
        );
        assert!(
            matches!(r, Err(NetworkError::AddressInUse { .. })),
            "{ip:?} {ip6:?}: {r:?}"
        );
    }
    assert!(
        !ok_in(&ns3, &["ip", "link"]).contains("eth0"),
        "no half-made veth"
    );

    // Isolation between networks also holds for IPv6 forwarding.
    let other = env
        .mgr
        .create_network(CreateNetwork {
            name: "v6b".into(),
            subnet: Some("10.78.2.0/24".into()),
            bridge_name: Some(env.bridge("b")),
            ipv6: Some(CreateIpv6::default()),
            ..Default::default()
        })
        .unwrap();
    let ula = other.ipv6.as_ref().expect("ipv6 side").subnet;
    assert_eq!(ula.prefix_len(), 64);
    assert_eq!(ula.network().segments()[0] & 0xff00, 0xfd00, "{ula}");
    let t6 = nft_table6(&env.mgr.config().table).expect("ip6 table");
    assert!(
        t6.contains(&format!(
            "iifname \"{}\" oifname \"{}\" drop",
            net.bridge, other.bridge
        )),
        "{t6}"
    );

    // Disconnect releases the IPv6 address; removal deletes the bridge.
    env.mgr.disconnect("v6a", "c1c1c1c1c1c1").unwrap();
    let again = env
        .mgr
        .connect(
            "v6a",
            ConnectRequest {
                container_id: "c3".into(),
                name: "c3".into(),
                netns: ns3.clone(),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(again.ip6, Some(v6("fd77:1::3")));
    env.mgr.remove_network("v6b").unwrap();
    assert!(!netlink::link_exists(&other.bridge).unwrap());
    env.mgr.disconnect_all("c2c2c2c2c2c2").unwrap();
    env.mgr.disconnect_all("c3").unwrap();
    env.mgr.remove_network("v6a").unwrap();
    assert!(!netlink::link_exists(&net.bridge).unwrap());
    assert!(
        nft_table6(&env.mgr.config().table).is_none(),
        "no network left, no ip6 table"
    );
}

#[test]
fn ipv6_subnets_are_checked_and_internal_has_no_route() {
    let mut env = Env::new(22);
    let try_net = |name: &str, v4: &str, v6: CreateIpv6| {
        env.mgr.create_network(CreateNetwork {
            name: name.into(),
            subnet: Some(v4.into()),
            bridge_name: Some(env.bridge(name)),
            ipv6: Some(v6),
            ..Default::default()
        })
    };
    let sub = |s: &str| CreateIpv6 {
        subnet: Some(s.into()),
        ..Default::default()
    };
    try_net("o1", "10.78.3.0/24", sub("fd77:3::/64")).unwrap();
    assert!(matches!(
        try_net("o2", "10.78.4.0/24", sub("fd77:3:0:0:8000::/65")),
        Err(NetworkError::SubnetOverlap { .. })
    ));
    for bad in ["fd77:4::/129", "zz::/64", "fd77:4::", "10.78.4.0/24"] {
        assert!(
            matches!(
                try_net("o2", "10.78.4.0/24", sub(bad)),
                Err(NetworkError::InvalidCidr(_))
            ),
            "{bad}"
        );
    }
    let gw_outside = CreateIpv6 {
        subnet: Some("fd77:4::/64".into()),
        gateway: Some("fd77:5::1".into()),
        ..Default::default()
    };
    assert!(matches!(
        try_net("o2", "10.78.4.0/24", gw_outside),
        Err(NetworkError::OutsideSubnet {
            what: "gateway",
            ..
        })
    ));
    let range_outside = CreateIpv6 {
        subnet: Some("fd77:4::/64".into()),
        ip_range: Some("fd77:5::/96".into()),
        ..Default::default()
    };
    assert!(matches!(
        try_net("o2", "10.78.4.0/24", range_outside),
        Err(NetworkError::OutsideSubnet { .. })
    ));
    assert!(
        !netlink::link_exists(&env.bridge("o2")).unwrap(),
        "no half-made bridge"
    );
    // An internal IPv6 network: addresses, but no default route out.
    env.mgr
        .create_network(CreateNetwork {
            name: "i6".into(),
            subnet: Some("10.78.6.0/24".into()),
            bridge_name: Some(env.bridge("i6")),
            internal: true,
            ipv6: Some(sub("fd77:6::/64")),
            ..Default::default()
        })
        .unwrap();
    let ns = env.netns("i1");
    let ep = env
        .mgr
        .connect(
            "i6",
            ConnectRequest {
                container_id: "i1".into(),
                name: "i1".into(),
                netns: ns.clone(),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(ep.ip6, Some(v6("fd77:6::2")));
    let routes = ok_in(&ns, &["ip", "-6", "route"]);
    assert!(
        routes.contains("fd77:6::/64") && !routes.contains("default"),
        "{routes}"
    );
    ok_in(&ns, &["busybox", "ping", "-6", "-c1", "-W5", "fd77:6::1"]);

    // An IPv6 address on an IPv4-only network is refused.
    env.mgr
        .create_network(CreateNetwork {
            name: "o3".into(),
            subnet: Some("10.78.5.0/24".into()),
            bridge_name: Some(env.bridge("o3")),
            ..Default::default()
        })
        .unwrap();
    assert!(matches!(
        env.mgr.connect(
            "o3",
            ConnectRequest {
                container_id: "x".into(),
                ip6: Some(v6("fd77:5::5")),
                ..Default::default()
            }
        ),
        Err(NetworkError::Ipv6Disabled(_))
    ));
}
