//! IPv6 networks through the daemon with the real docker CLI and the Engine API: a
//! dual-stack user network, allocated and static (`--ip6`) addresses shown by inspect,
//! ping6 between two containers and from the host, AAAA answers of the embedded DNS, the
//! container's /etc/hosts, auxiliary addresses, bad and overlapping subnets, and cleanup.
//! Traffic only goes to addresses inside the namespaces and bridge the test made.

mod daemon_common;

use std::process::Command;

use daemon_common::{import_busybox, ok, Cleanup, Daemon, DOCKER};
use serde_json::json;

fn have_tools() -> bool {
    let ok = std::path::Path::new(DOCKER).exists()
        && std::path::Path::new("/bin/busybox").exists()
        && Command::new("nft").arg("--version").output().is_ok()
        && std::path::Path::new("/proc/sys/net/ipv6").exists();
    if !ok {
        eprintln!("skipping: docker CLI, busybox-static, nft or kernel IPv6 missing");
    }
    ok
}

fn inspect(d: &Daemon, container: &str, field: &str) -> String {
    ok(d.docker(&[
        "inspect",
        "-f",
        &format!("{{{{(index .NetworkSettings.Networks \"bt6\").{field}}}}}"),
        container,
    ]))
    .trim()
    .to_string()
}

fn host_ping6(addr: &str) -> bool {
    Command::new("busybox")
        .args(["ping", "-6", "-c1", "-W5", addr])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn ipv6_network_addresses_ping6_dns_and_cleanup() {
    if !have_tools() {
        return;
    }
    let mut d = Daemon::start();
    import_busybox(&d);
    let _cleanup = Cleanup::new(&d, &["bt6", "bt6-overlap"]);

    let id = ok(d.docker(&[
        "network",
        "create",
        "--ipv6",
        "--subnet",
        "10.79.1.0/24",
        "--subnet",
        "fd78:1::/64",
        "--aux-address",
        "r=fd78:1::2",
        "--aux-address",
        "g=10.79.1.2",
        "bt6",
    ]))
    .trim()
    .to_string();
    let bridge = d.net.bridge_of(&id);
    let net = d.http("GET", "/networks/bt6", None).json();
    assert_eq!(net["EnableIPv6"], true, "{net}");
    let configs = net["IPAM"]["Config"].as_array().expect("IPAM.Config");
    assert_eq!(configs.len(), 2, "{net}");
    assert_eq!(configs[1]["Subnet"], "fd78:1::/64");
    assert_eq!(configs[1]["AuxiliaryAddresses"], json!({"r": "fd78:1::2"}));
    assert_eq!(configs[0]["AuxiliaryAddresses"], json!({"g": "10.79.1.2"}));
    // Configs are shown as given: no gateway was.
    assert!(configs.iter().all(|c| c.get("Gateway").is_none()), "{net}");

    ok(d.docker(&[
        "run",
        "-d",
        "--name",
        "v6a",
        "--network",
        "bt6",
        "busybox",
        "sleep",
        "600",
    ]));
    ok(d.docker(&[
        "run",
        "-d",
        "--name",
        "v6b",
        "--network",
        "bt6",
        "--ip6",
        "fd78:1::f00d",
        "--mac-address",
        "02:42:de:ad:be:ef",
        "busybox",
        "sleep",
        "600",
    ]));
    // Auxiliary addresses are never handed out.
    assert_eq!(inspect(&d, "v6a", "IPAddress"), "10.79.1.3");
    assert_eq!(inspect(&d, "v6a", "GlobalIPv6Address"), "fd78:1::3");
    assert_eq!(inspect(&d, "v6a", "GlobalIPv6PrefixLen"), "64");
    assert_eq!(inspect(&d, "v6a", "IPv6Gateway"), "fd78:1::1");
    assert_eq!(inspect(&d, "v6b", "GlobalIPv6Address"), "fd78:1::f00d");
    assert_eq!(inspect(&d, "v6b", "IPAMConfig.IPv6Address"), "fd78:1::f00d");
    assert_eq!(inspect(&d, "v6b", "MacAddress"), "02:42:de:ad:be:ef");
    let net = d.http("GET", "/networks/bt6", None).json();
    let eps = net["Containers"].as_object().expect("Containers");
    assert!(
        eps.values().any(|e| e["IPv6Address"] == "fd78:1::f00d/64"),
        "{net}"
    );

    // Inside: the address, the default route, /etc/hosts.
    let out = ok(d.docker(&["exec", "v6a", "ip", "-6", "route"]));
    assert!(out.contains("default via fd78:1::1 dev eth0"), "{out}");
    let hosts = ok(d.docker(&["exec", "v6a", "cat", "/etc/hosts"]));
    assert!(hosts.contains("fd78:1::3\t"), "{hosts}");

    // ping6 container to container, by address and by name (AAAA from the embedded DNS).
    ok(d.docker(&["exec", "v6b", "ping", "-6", "-c1", "-W5", "fd78:1::3"]));
    let out = ok(d.docker(&["exec", "v6b", "nslookup", "-type=aaaa", "v6a"]));
    assert!(out.contains("fd78:1::3"), "{out}");
    ok(d.docker(&["exec", "v6b", "ping", "-6", "-c1", "-W5", "v6a"]));
    // And from the host to a container.
    assert!(
        host_ping6("fd78:1::f00d"),
        "host cannot ping6 the container"
    );

    // A container from bt6's pool of ready namespaces (two for the default network, two for
    // bt6 once v6a started on it) has its IPv6 address and route set too.
    let pool = d.dir.path().join("run").join("netns-pool");
    let pooled = || {
        std::fs::read_dir(&pool).map_or(0, |d| {
            d.flatten()
                .filter(|e| !e.file_name().to_string_lossy().starts_with("isolated-"))
                .count()
        })
    };
    for _ in 0..100 {
        if pooled() >= 4 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let out = ok(d.docker(&[
        "run",
        "--rm",
        "--network",
        "bt6",
        "busybox",
        "sh",
        "-c",
        "ip -o -6 addr show eth0 scope global && ip -6 route && ping -6 -c1 -W5 fd78:1::1",
    ]));
    // ::4, the first entry's (a namespace of its own would have got ::6).
    assert!(out.contains("inet6 fd78:1::4/64"), "{out}");
    assert!(out.contains("default via fd78:1::1 dev eth0"), "{out}");

    // A daemon restart keeps the addresses, the bridge's and the containers'.
    d.stop();
    d.spawn();
    assert_eq!(inspect(&d, "v6b", "GlobalIPv6Address"), "fd78:1::f00d");
    ok(d.docker(&["exec", "v6b", "ping", "-6", "-c1", "-W5", "fd78:1::1"]));
    assert!(host_ping6("fd78:1::3"), "host cannot ping6 after a restart");

    // A static address is checked against the network's subnet and its reservations.
    let out = d.docker(&[
        "run",
        "--rm",
        "--network",
        "bt6",
        "--ip6",
        "fd78:1::2",
        "busybox",
        "true",
    ]);
    assert!(!out.status.success(), "aux address handed out");
    let out = d.docker(&[
        "run",
        "--rm",
        "--network",
        "bridge",
        "--ip6",
        "fd78:1::9",
        "busybox",
        "true",
    ]);
    assert!(!out.status.success(), "IPv6 address on the default bridge");

    // Bad and overlapping subnets.
    let create = |name: &str, subnet6: &str| {
        let body = json!({"Name": name, "EnableIPv6": true,
            "IPAM": {"Config": [{"Subnet": subnet6}]}});
        d.http(
            "POST",
            "/networks/create",
            Some(body.to_string().as_bytes()),
        )
    };
    let r = create("bt6-bad", "fd78:2::/129");
    assert_eq!(r.status, 400, "{}", r.message());
    assert!(r.message().contains("fd78:2::/129"), "{}", r.message());
    let r = create("bt6-overlap", "fd78:1:0:0:8000::/65");
    assert_eq!(r.status, 403, "{}", r.message());
    assert!(r.message().contains("overlaps"), "{}", r.message());

    // Removal takes the bridge, the addresses and the ip6 rules with it.
    ok(d.docker(&["rm", "-f", "v6a", "v6b"]));
    ok(d.docker(&["network", "rm", "bt6"]));
    let links = d.net.links();
    assert!(!links.contains(&bridge), "{links:?}");
    assert!(!host_ping6("fd78:1::f00d"), "address still reachable");
    let t6 = Command::new("nft")
        .args(["list", "table", "ip6", &d.net.table()])
        .output()
        .expect("nft");
    assert!(
        !String::from_utf8_lossy(&t6.stdout).contains(&bridge),
        "ip6 rules left for {bridge}"
    );
}
