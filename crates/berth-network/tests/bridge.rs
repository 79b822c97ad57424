//! End-to-end bridge networking as root: real bridges, veths, namespaces, nftables rules,
//! busybox servers and the embedded DNS server. Traffic stays on loopback and on the
//! bridges and namespaces each test creates.

mod common;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::time::Duration;

use berth_network::dns::DnsServer;
use berth_network::ipam::Subnet;
use berth_network::{netlink, ConnectRequest, CreateNetwork, NetworkError, PortMapping, Proto};
use common::{eventually, ok_in, run_in, Env};

fn http_get(addr: SocketAddrV4) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr.into(), Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

/// An HTTP GET from inside `ns` with busybox nc (busybox wget is unreliable when static).
fn http_in(ns: &std::path::Path, host: &str, port: u16) -> String {
    let cmd = format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | busybox nc -w 2 {host} {port}");
    String::from_utf8_lossy(&run_in(ns, &["sh", "-c", &cmd]).stdout).into_owned()
}

fn nft_table(table: &str) -> String {
    let out = std::process::Command::new("nft")
        .args(["list", "table", "ip", table])
        .output()
        .expect("nft");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn two_containers_ping_http_dns_ports_isolation() {
    let mut env = Env::new(1);
    let a = env
        .mgr
        .create_network(CreateNetwork {
            name: "neta".into(),
            subnet: Some("10.77.1.0/24".into()),
            bridge_name: Some(env.bridge("a")),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(a.gateway, Ipv4Addr::new(10, 77, 1, 1));
    let ns1 = env.netns("c1");
    let ns2 = env.netns("c2");
    let web = env
        .mgr
        .connect(
            "neta",
            ConnectRequest {
                container_id: "c1c1c1c1c1c1c1c1".into(),
                name: "web".into(),
                aliases: vec!["www".into()],
                netns: ns1.clone(),
                ports: vec![PortMapping {
                    host_ip: Ipv4Addr::UNSPECIFIED,
                    host_port: 0,
                    container_port: 80,
                    proto: Proto::Tcp,
                }],
                ..Default::default()
            },
        )
        .unwrap();
    let client = env
        .mgr
        .connect(
            "neta",
            ConnectRequest {
                container_id: "c2c2c2c2c2c2c2c2".into(),
                name: "client".into(),
                links: vec![("web".into(), "db".into())],
                netns: ns2.clone(),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(web.ip, Ipv4Addr::new(10, 77, 1, 2));
    assert_eq!(client.ip, Ipv4Addr::new(10, 77, 1, 3));
    let hp = web.ports[0].host_port;
    assert!(hp >= 49153, "random host port {hp}");

    // Addresses, MAC, lo and default route inside the namespace.
    let addr = ok_in(&ns1, &["ip", "-4", "addr", "show", "eth0"]);
    assert!(addr.contains("10.77.1.2/24"), "{addr}");
    assert!(ok_in(&ns1, &["ip", "link", "show", "eth0"]).contains("02:42:0a:4d:01:02"));
    assert!(ok_in(&ns1, &["ip", "link", "show", "lo"]).contains("UP"));
    assert!(ok_in(&ns1, &["ip", "route"]).contains("default via 10.77.1.1 dev eth0"));

    // ICMP and TCP between the two containers.
    ok_in(&ns2, &["busybox", "ping", "-c1", "-W2", "10.77.1.2"]);
    let www = tempfile::tempdir().unwrap();
    std::fs::write(www.path().join("index.html"), "hello from web\n").unwrap();
    let root = www.path().to_str().unwrap().to_string();
    env.spawn_in(&ns1, &["busybox", "httpd", "-f", "-p", "80", "-h", &root]);
    assert!(eventually(|| {
        http_in(&ns2, "10.77.1.2", 80).contains("hello from web")
    }));

    // Published port from the host: loopback and the bridge address.
    for host in [Ipv4Addr::LOCALHOST, a.gateway] {
        let body = http_get(SocketAddrV4::new(host, hp)).unwrap_or_default();
        assert!(body.contains("hello from web"), "via {host}:{hp}: {body:?}");
    }
    // Hairpin: the container reaches itself through the host's published port.
    assert!(
        http_in(&ns1, "10.77.1.1", hp).contains("hello from web"),
        "hairpin"
    );

    // Embedded DNS on the gateway: names, aliases, short ids and the client's link alias.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dns = rt
        .block_on(DnsServer::start(
            SocketAddrV4::new(a.gateway, 53),
            env.mgr.clone(),
            vec![],
        ))
        .unwrap();
    for name in ["web", "www", "c1c1c1c1c1c1", "db", "client"] {
        let out = ok_in(&ns2, &["busybox", "nslookup", name, "10.77.1.1"]);
        let want = if name == "client" {
            "10.77.1.3"
        } else {
            "10.77.1.2"
        };
        assert!(out.contains(want), "{name}: {out}");
    }
    // The link alias is private to the container that declared it.
    let out = run_in(&ns1, &["busybox", "nslookup", "db", "10.77.1.1"]);
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("10.77.1.2"),
        "db from web"
    );
    drop(dns);

    // Isolation: a container on a second network reaches its own gateway, not network A.
    env.mgr
        .create_network(CreateNetwork {
            name: "netb".into(),
            subnet: Some("10.77.2.0/24".into()),
            bridge_name: Some(env.bridge("b")),
            ..Default::default()
        })
        .unwrap();
    let ns3 = env.netns("c3");
    env.mgr
        .connect(
            "netb",
            ConnectRequest {
                container_id: "c3".into(),
                name: "other".into(),
                netns: ns3.clone(),
                ..Default::default()
            },
        )
        .unwrap();
    ok_in(&ns3, &["busybox", "ping", "-c1", "-W2", "10.77.2.1"]);
    assert!(
        !run_in(&ns3, &["busybox", "ping", "-c1", "-W1", "10.77.1.2"])
            .status
            .success(),
        "isolation broken"
    );
    assert!(
        !http_in(&ns3, "10.77.1.2", 80).contains("hello"),
        "isolation broken (tcp)"
    );
    // ...but published ports stay reachable through the host, as in Docker.
    assert!(
        http_in(&ns3, "10.77.2.1", hp).contains("hello from web"),
        "published port from netb"
    );

    // Removing a network with endpoints is refused; disconnect releases veth, IP and DNAT.
    assert!(matches!(
        env.mgr.remove_network("neta"),
        Err(NetworkError::ActiveEndpoints { .. })
    ));
    env.mgr.disconnect("neta", "c1c1c1c1c1c1c1c1").unwrap();
    assert!(!netlink::link_exists(&web.host_veth).unwrap());
    assert!(!nft_table(&env.mgr.config().table).contains("dnat to"));
    assert!(!env
        .mgr
        .inspect("neta")
        .unwrap()
        .ipam
        .allocated
        .contains_key(&web.ip));
    env.mgr.disconnect_all("c2c2c2c2c2c2c2c2").unwrap();
    env.mgr.remove_network("neta").unwrap();
    assert!(!netlink::link_exists(&a.bridge).unwrap());
    env.mgr.disconnect_all("c3").unwrap();
    env.mgr.remove_network("netb").unwrap();
    assert!(!berth_network::firewall::table_exists(
        &env.mgr.config().table
    ));
}

#[test]
fn bad_input_leaves_nothing_behind() {
    let mut env = Env::new(2);
    let br = env.bridge("a");
    env.mgr
        .create_network(CreateNetwork {
            name: "n1".into(),
            subnet: Some("10.77.3.0/24".into()),
            bridge_name: Some(br.clone()),
            ..Default::default()
        })
        .unwrap();
    let try_net = |name: &str, subnet: &str, gw: Option<&str>, bridge: &str| {
        env.mgr.create_network(CreateNetwork {
            name: name.into(),
            subnet: Some(subnet.into()),
            gateway: gw.map(str::to_string),
            bridge_name: Some(bridge.into()),
            ..Default::default()
        })
    };
    let other = env.bridge("b");
    assert!(matches!(
        try_net("n2", "10.77.3.128/25", None, &other),
        Err(NetworkError::SubnetOverlap { .. })
    ));
    assert!(matches!(
        try_net("n2", "10.77.4.0/33", None, &other),
        Err(NetworkError::InvalidCidr(_))
    ));
    assert!(matches!(
        try_net("n2", "10.77.4.0/24", Some("10.77.5.1"), &other),
        Err(NetworkError::OutsideSubnet { .. })
    ));
    assert!(matches!(
        try_net("n1", "10.77.4.0/24", None, &other),
        Err(NetworkError::NetworkExists(_))
    ));
    assert!(matches!(
        try_net("bad/name", "10.77.4.0/24", None, &other),
        Err(NetworkError::InvalidName(_))
    ));
    assert!(
        !netlink::link_exists(&other).unwrap(),
        "no half-made bridge"
    );

    // A host port already bound fails the connect without leaving a veth or using the IP.
    let ns = env.netns("c1");
    // Below the kernel's ephemeral range, so no outgoing connection of a parallel test
    // grabs the port between our drop and the retry.
    let busy = (20000u16..30000)
        .find_map(|p| std::net::TcpListener::bind(("127.0.0.1", p)).ok())
        .unwrap();
    let port = busy.local_addr().unwrap().port();
    let req = ConnectRequest {
        container_id: "cx".into(),
        name: "cx".into(),
        netns: ns.clone(),
        ports: vec![PortMapping {
            host_ip: Ipv4Addr::LOCALHOST,
            host_port: port,
            container_port: 80,
            proto: Proto::Tcp,
        }],
        ..Default::default()
    };
    assert!(matches!(
        env.mgr.connect("n1", req.clone()),
        Err(NetworkError::PortInUse { .. })
    ));
    assert!(!ok_in(&ns, &["ip", "link"]).contains("eth0"));
    drop(busy);
    // Once freed the port is free again; a socket of another process may hold it a moment
    // (seen once in CI), so retry briefly and say who holds it if that lasts.
    let mut attempt = env.mgr.connect("n1", req.clone());
    for _ in 0..40 {
        if !matches!(attempt, Err(NetworkError::PortInUse { .. })) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        attempt = env.mgr.connect("n1", req.clone());
    }
    let ep = attempt.unwrap_or_else(|e| {
        let holders = std::process::Command::new("ss")
            .args(["-tanp", &format!("sport = :{port}")])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        panic!("connect after freeing port {port}: {e}\n{holders}")
    });
    assert_eq!(
        ep.ip,
        Ipv4Addr::new(10, 77, 3, 2),
        "failed attempt released nothing it held"
    );
    // Same host port twice is refused even though DNAT leaves no listener.
    let ns2 = env.netns("c2");
    let req2 = ConnectRequest {
        container_id: "cy".into(),
        name: "cy".into(),
        netns: ns2,
        ..req
    };
    assert!(matches!(
        env.mgr.connect("n1", req2.clone()),
        Err(NetworkError::PortInUse { .. })
    ));
    // Static IP already taken.
    let req3 = ConnectRequest {
        ports: vec![],
        ip: Some(ep.ip),
        ..req2
    };
    assert!(matches!(
        env.mgr.connect("n1", req3),
        Err(NetworkError::AddressInUse { .. })
    ));
    assert!(matches!(
        env.mgr.connect("nope", ConnectRequest::default()),
        Err(NetworkError::NetworkNotFound(_))
    ));
}

#[test]
fn state_survives_restart_and_reconcile_removes_leftovers() {
    let mut env = Env::new(3);
    let net = env
        .mgr
        .create_network(CreateNetwork {
            name: "r1".into(),
            subnet: Some("10.77.6.0/24".into()),
            ip_range: Some("10.77.6.128/25".into()),
            bridge_name: Some(env.bridge("a")),
            ..Default::default()
        })
        .unwrap();
    let (ns1, ns2) = (env.netns("c1"), env.netns("c2"));
    let keep = env
        .mgr
        .connect(
            "r1",
            ConnectRequest {
                container_id: "live".into(),
                name: "live".into(),
                netns: ns1,
                ..Default::default()
            },
        )
        .unwrap();
    let gone = env
        .mgr
        .connect(
            "r1",
            ConnectRequest {
                container_id: "dead".into(),
                name: "dead".into(),
                netns: ns2,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(keep.ip, Ipv4Addr::new(10, 77, 6, 128));

    // A restarted daemon sees the same state.
    let cfg = env.mgr.config().clone();
    let again = berth_network::NetworkManager::open(cfg.clone()).unwrap();
    assert_eq!(again.list(), env.mgr.list());

    // A stray veth with our naming (prefix + hex) and no owner, e.g. from a crash
    // mid-connect.
    let stray = format!("{}5f2a", cfg.veth_prefix);
    let st = std::process::Command::new("ip")
        .args(["link", "add", &stray, "type", "bridge"])
        .status()
        .unwrap();
    assert!(st.success());
    let report = env
        .mgr
        .reconcile(&HashSet::from(["live".to_string()]))
        .unwrap();
    assert_eq!(report.endpoints_removed, ["dead"]);
    assert!(report.links_removed.contains(&stray), "{report:?}");
    assert!(report.links_removed.contains(&gone.host_veth), "{report:?}");
    assert!(netlink::link_exists(&keep.host_veth).unwrap());
    assert!(netlink::link_exists(&net.bridge).unwrap());
    let reloaded = berth_network::NetworkManager::open(cfg).unwrap();
    assert_eq!(reloaded.inspect("r1").unwrap().endpoints.len(), 1);
}

#[test]
fn default_and_internal_networks() {
    let mut env = Env::new(4);
    // The default network picks a Docker pool clear of host routes and existing networks.
    let routes = netlink::host_routes().unwrap();
    let def = env.mgr.ensure_default().unwrap();
    assert_eq!(def.name, "bridge");
    assert_eq!(def.bridge, env.mgr.config().default_bridge);
    assert!(
        routes.iter().all(|r| !r.overlaps(&def.subnet)),
        "{} vs {routes:?}",
        def.subnet
    );
    assert!(matches!(
        env.mgr.remove_network("bridge"),
        Err(NetworkError::Predefined(_))
    ));
    // Idempotent on daemon restart.
    assert_eq!(env.mgr.ensure_default().unwrap().id, def.id);

    let int = env
        .mgr
        .create_network(CreateNetwork {
            name: "int".into(),
            subnet: Some("10.77.7.0/24".into()),
            gateway: Some("10.77.7.254".into()),
            internal: true,
            mtu: Some(1400),
            bridge_name: Some(env.bridge("i")),
            ..Default::default()
        })
        .unwrap();
    let ns = env.netns("c1");
    assert!(berth_network::netns::is_netns(&ns));
    assert!(
        berth_network::netns::create(&ns).is_err(),
        "no stacked netns mounts"
    );
    let ep = env
        .mgr
        .connect(
            "int",
            ConnectRequest {
                container_id: "c1".into(),
                name: "c1".into(),
                ip: Some(Ipv4Addr::new(10, 77, 7, 42)),
                netns: ns.clone(),
                ifname: Some("eth1".into()),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(ep.ip, Ipv4Addr::new(10, 77, 7, 42));
    let link = ok_in(&ns, &["ip", "link", "show", "eth1"]);
    assert!(link.contains("mtu 1400"), "{link}");
    assert!(
        !ok_in(&ns, &["ip", "route"]).contains("default"),
        "internal networks have no route out"
    );
    ok_in(&ns, &["busybox", "ping", "-c1", "-W2", "10.77.7.254"]);
    assert!(env.mgr.inspect(&int.id[..10]).is_ok(), "id prefix lookup");
}

/// A UDP echo server bound inside `ns` by a thread that joined it; stops when dropped.
struct UdpEcho(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl UdpEcho {
    fn start(ns: &std::path::Path, port: u16) -> Self {
        use std::os::fd::AsFd;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (flag, ns) = (stop.clone(), std::fs::File::open(ns).unwrap());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let s = std::net::UdpSocket::bind(("0.0.0.0", port)).unwrap();
            s.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            tx.send(()).unwrap();
            let mut buf = [0u8; 512];
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok((n, peer)) = s.recv_from(&mut buf) {
                    let _ = s.send_to(&buf[..n], peer);
                }
            }
        });
        rx.recv().unwrap();
        UdpEcho(stop)
    }
}

impl Drop for UdpEcho {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

#[test]
fn udp_published_port() {
    let mut env = Env::new(5);
    env.mgr
        .create_network(CreateNetwork {
            name: "u".into(),
            subnet: Some("10.77.8.0/24".into()),
            bridge_name: Some(env.bridge("u")),
            ..Default::default()
        })
        .unwrap();
    let ns = env.netns("c1");
    let spec = berth_network::parse_port_spec("127.0.0.1::5353/udp").unwrap();
    let ep = env
        .mgr
        .connect(
            "u",
            ConnectRequest {
                container_id: "u1".into(),
                name: "u1".into(),
                netns: ns.clone(),
                ports: vec![spec],
                ..Default::default()
            },
        )
        .unwrap();
    let hp = ep.ports[0].host_port;
    let _echo = UdpEcho::start(&ns, 5353);
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    sock.send_to(b"ping", ("127.0.0.1", hp)).unwrap();
    let mut buf = [0u8; 16];
    let (n, from) = sock.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"ping");
    assert_eq!(
        from.port(),
        hp,
        "reply is un-NATed back to the published port"
    );
}
