//! Container networking through the daemon with the real docker CLI: the default bridge,
//! user networks with name resolution by the embedded DNS, published ports reached from the
//! host on loopback, isolation between user networks, and cleanup of bridges and rules.
//! Traffic only goes to loopback and to addresses on bridges the test made.

mod daemon_common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use daemon_common::{import_busybox, ok, Cleanup, Daemon, DOCKER};

fn have_tools() -> bool {
    let ok = std::path::Path::new(DOCKER).exists()
        && std::path::Path::new("/bin/busybox").exists()
        && Command::new("nft").arg("--version").output().is_ok();
    if !ok {
        eprintln!("skipping: docker CLI, busybox-static or nft missing");
    }
    ok
}

fn links() -> String {
    let out = Command::new("ip").args(["-o", "link"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn http_get(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to published port");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body
}

/// The tests of this file run one daemon at a time: their published ports and DNS checks
/// are simpler to reason about alone, though each daemon has its own network instance.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

const HTTPD: &str =
    "mkdir -p /www && echo hello-berth > /www/index.html && exec httpd -f -p 80 -h /www";

#[test]
fn bridge_networks_dns_ports_and_isolation() {
    if !have_tools() {
        return;
    }
    let _serial = serial();
    let d = Daemon::start();
    import_busybox(&d);
    let _cleanup = Cleanup::new(&d, &["bt-front", "bt-other"]);

    // The default bridge.
    let out = ok(d.docker(&[
        "run",
        "--rm",
        "busybox",
        "sh",
        "-c",
        "ip -o -4 addr show eth0",
    ]));
    assert!(
        out.contains("inet "),
        "no address on the default bridge: {out}"
    );

    let front = ok(d.docker(&["network", "create", "bt-front"]))
        .trim()
        .to_string();
    let other = ok(d.docker(&["network", "create", "bt-other"]))
        .trim()
        .to_string();
    let ls = ok(d.docker(&["network", "ls", "--format", "{{.Name}}"]));
    for n in ["bridge", "bt-front", "bt-other"] {
        assert!(ls.lines().any(|l| l == n), "{n} missing from: {ls}");
    }

    ok(d.docker(&[
        "run",
        "-d",
        "--name",
        "web",
        "--network",
        "bt-front",
        "--network-alias",
        "www",
        "-p",
        "127.0.0.1::80",
        "busybox",
        "sh",
        "-c",
        HTTPD,
    ]));
    let ip = ok(d.docker(&[
        "inspect",
        "-f",
        "{{(index .NetworkSettings.Networks \"bt-front\").IPAddress}}",
        "web",
    ]))
    .trim()
    .to_string();
    assert!(
        ip.parse::<std::net::Ipv4Addr>().is_ok(),
        "bad IPAddress {ip:?}"
    );
    let port = ok(d.docker(&["port", "web", "80/tcp"]));
    let port: u16 = port
        .trim()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("bad docker port output {port:?}"));

    // By name and by alias from a container on the same network (retried while httpd starts).
    let fetch = |net: &str, host: &str| {
        d.docker(&[
            "run", "--rm", "--network", net, "busybox", "sh", "-c",
            &format!(
                "for i in 1 2 3 4 5 6 7 8 9 10; do printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {host} 80 && exit 0; sleep 0.5; done; exit 1"
            ),
        ])
    };
    let out = ok(fetch("bt-front", "web"));
    assert!(out.contains("hello-berth"), "fetch by name: {out}");
    let out = ok(fetch("bt-front", "www"));
    assert!(out.contains("hello-berth"), "fetch by alias: {out}");

    // From the host through the published port on loopback.
    let body = http_get(port);
    assert!(
        body.contains("hello-berth"),
        "fetch by published port: {body}"
    );

    // Not from another user network, not even by address.
    let out = d.docker(&[
        "run",
        "--rm",
        "--network",
        "bt-other",
        "busybox",
        "sh",
        "-c",
        &format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {ip} 80"),
    ]);
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("hello-berth"),
        "bt-other reached bt-front"
    );

    // Inspect shows the endpoint.
    let net = d.http("GET", "/networks/bt-front", None).json();
    assert_eq!(net["Name"], "bt-front");
    let eps = net["Containers"].as_object().expect("Containers");
    assert_eq!(eps.len(), 1, "{net}");

    ok(d.docker(&["rm", "-f", "web"]));
    ok(d.docker(&["network", "rm", "bt-front", "bt-other"]));
    let links = links();
    for id in [&front, &other] {
        let bridge = d.net.bridge_of(id);
        assert!(
            !links.contains(&bridge),
            "bridge {bridge} left behind: {links}"
        );
    }
    let rules = Command::new("nft")
        .args(["list", "ruleset"])
        .output()
        .unwrap();
    let rules = String::from_utf8_lossy(&rules.stdout);
    for id in [&front, &other] {
        assert!(!rules.contains(&id[..12]), "rules of {id} left behind");
    }
}

#[test]
fn berth_cli_network_commands_and_restart() {
    if !have_tools() {
        return;
    }
    let _serial = serial();
    let mut d = Daemon::start();
    import_busybox(&d);
    let _cleanup = Cleanup::new(&d, &["bt-cli"]);
    let id = ok(d.berth(&[
        "network",
        "create",
        "--subnet",
        "10.231.7.0/24",
        "--label",
        "k=v",
        "bt-cli",
    ]))
    .trim()
    .to_string();
    let ls = ok(d.berth(&[
        "network",
        "ls",
        "--filter",
        "label=k=v",
        "--format",
        "{{.Name}}",
    ]));
    assert_eq!(ls.trim(), "bt-cli");
    let sub = ok(d.berth(&[
        "network",
        "inspect",
        "-f",
        "{{json .IPAM.Config}}",
        "bt-cli",
    ]));
    assert!(sub.contains("10.231.7.0/24"), "{sub}");

    ok(d.berth(&[
        "run",
        "-d",
        "--name",
        "web",
        "--network",
        "bt-cli",
        "--ip",
        "10.231.7.50",
        "--network-alias",
        "www",
        "-p",
        "127.0.0.1::80",
        "busybox",
        "sh",
        "-c",
        HTTPD,
    ]));
    let ip = ok(d.docker(&[
        "inspect",
        "-f",
        "{{(index .NetworkSettings.Networks \"bt-cli\").IPAddress}}",
        "web",
    ]));
    assert_eq!(ip.trim(), "10.231.7.50");
    let ports = d.http("GET", "/containers/web/json", None).json();
    let port: u16 = ports["NetworkSettings"]["Ports"]["80/tcp"][0]["HostPort"]
        .as_str()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no published port: {}", ports["NetworkSettings"]));

    let ps = ok(d.berth(&["ps", "--format", "{{.Names}} {{.Ports}} {{.Networks}}"]));
    assert!(
        ps.contains(&format!("web 127.0.0.1:{port}->80/tcp bt-cli")),
        "ps: {ps}"
    );

    // A restarted daemon keeps the running container's namespace, address and port.
    d.stop();
    d.spawn();
    let ip = ok(d.docker(&[
        "inspect",
        "-f",
        "{{(index .NetworkSettings.Networks \"bt-cli\").IPAddress}}",
        "web",
    ]));
    assert_eq!(ip.trim(), "10.231.7.50");
    let mut body = String::new();
    for _ in 0..20 {
        body = http_get(port);
        if body.contains("hello-berth") {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(body.contains("hello-berth"), "after restart: {body}");

    // A running container is connected into its namespace at once.
    ok(d.docker(&["run", "-d", "--name", "idle", "busybox", "sleep", "1000"]));
    ok(d.berth(&["network", "connect", "--alias", "side", "bt-cli", "idle"]));
    let out = ok(d.docker(&["exec", "idle", "sh", "-c", "ip -o -4 addr show eth1"]));
    assert!(
        out.contains("10.231.7."),
        "no address on the second network: {out}"
    );
    ok(d.berth(&["network", "disconnect", "bt-cli", "idle"]));
    let out = d.docker(&["exec", "idle", "sh", "-c", "ip -o -4 addr show eth1"]);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("10.231.7."));

    let rm = d.berth(&["network", "rm", "bt-cli"]);
    assert!(!rm.status.success(), "removed a network in use");
    ok(d.docker(&["rm", "-f", "web", "idle"]));
    let pruned = ok(d.berth(&["network", "prune", "-f"]));
    assert!(pruned.contains("bt-cli"), "prune: {pruned}");
    assert!(!links().contains(&d.net.bridge_of(&id)));
}

/// Two daemons with their own `--network-instance` run containers on their default bridges
/// at once; restarting one (reconcile included) leaves the other's bridge, veths and nftables
/// table alone.
#[test]
fn network_instances_do_not_touch_each_other() {
    if !have_tools() {
        return;
    }
    let a = Daemon::start();
    let mut b = Daemon::start();
    assert_ne!(a.net.tag, b.net.tag);
    for d in [&a, &b] {
        import_busybox(d);
    }
    let _cleanup_a = Cleanup::new(&a, &[]);
    let _cleanup_b = Cleanup::new(&b, &[]);
    for d in [&a, &b] {
        ok(d.docker(&["run", "-d", "--name", "idle", "busybox", "sleep", "300"]));
    }
    let table = |d: &Daemon| {
        let out = Command::new("nft")
            .args(["list", "table", "ip", &d.net.table()])
            .output()
            .unwrap();
        assert!(out.status.success(), "no table {}", d.net.table());
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // The bridge, idle's veth and the two pooled namespaces' veths, once the pool has refilled.
    let before = settled_links(&a, 4);
    assert!(before.contains(&a.net.default_bridge()), "{before:?}");
    assert!(
        before
            .iter()
            .any(|l| l.starts_with(&format!("bv{}-", a.net.tag))),
        "no veth of {}: {before:?}",
        a.net.tag
    );
    assert!(b.net.links().contains(&b.net.default_bridge()));
    let rules_before = table(&a);

    // Restart b twice: with its state, then with a fresh data root (reconcile of nothing).
    b.stop();
    b.spawn();
    ok(b.docker(&["exec", "idle", "true"]));
    b.stop();
    std::fs::rename(b.data().join("network"), b.dir.path().join("network.old")).unwrap();
    b.spawn();

    let after = settled_links(&a, 4);
    assert_eq!(before, after, "daemon {} links changed", a.net.tag);
    assert_eq!(rules_before, table(&a));
    ok(a.docker(&["exec", "idle", "ping", "-c", "1", "-W", "5", &gateway(&a)]));
}

/// `d`'s links, sorted, once there are `n` of them: the default network's pool of ready
/// namespaces refills in the background after each container start.
fn settled_links(d: &Daemon, n: usize) -> Vec<String> {
    let mut links = Vec::new();
    for _ in 0..100 {
        links = d.net.links();
        if links.len() == n {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    links.sort();
    links
}

/// The gateway of `d`'s default network.
fn gateway(d: &Daemon) -> String {
    let net = d.http("GET", "/networks/bridge", None).json();
    net["IPAM"]["Config"][0]["Gateway"]
        .as_str()
        .expect("gateway")
        .to_string()
}

/// `--bridge none`: no default network, and containers without `--network` get none.
#[test]
fn bridge_none_means_no_default_network() {
    if !have_tools() {
        return;
    }
    let d = Daemon::start_with(&["--bridge", "none"]);
    import_busybox(&d);
    let _cleanup = Cleanup::new(&d, &[]);
    let out = ok(d.docker(&["run", "--rm", "busybox", "ip", "-o", "link"]));
    assert!(out.contains(": lo:"), "{out}");
    assert!(!out.contains("eth0"), "{out}");
    let net = d.http("GET", "/networks/bridge", None);
    assert_eq!(net.status, 404, "default network exists");
    assert!(!d.net.links().contains(&d.net.default_bridge()));
}

/// `--bridge NAME` naming a bridge the operator made: the daemon uses it and never deletes it
/// (its fresh state does not own it).
#[test]
fn named_bridge_is_used_not_reclaimed() {
    if !have_tools() {
        return;
    }
    let mut d = Daemon::start();
    import_busybox(&d);
    let _cleanup = Cleanup::new(&d, &[]);
    d.stop();
    // Named with the instance's veth prefix (not + hex): the instance guard removes it.
    let name = format!("bv{}-op", d.net.tag);
    let st = Command::new("ip")
        .args(["link", "add", &name, "type", "bridge"])
        .status()
        .unwrap();
    assert!(st.success());
    let index = || std::fs::read_to_string(format!("/sys/class/net/{name}/ifindex")).ok();
    let before = index();
    std::fs::remove_dir_all(d.data().join("network")).unwrap();
    d.args = vec!["--bridge".into(), name.clone()];
    d.spawn();
    let out = ok(d.docker(&[
        "run", "--rm", "busybox", "ip", "-o", "-4", "addr", "show", "eth0",
    ]));
    assert!(out.contains("inet "), "{out}");
    assert_eq!(before, index(), "bridge {name} deleted and recreated");
}

#[test]
fn container_level_mac_address_reaches_the_interface() {
    if !have_tools() {
        return;
    }
    let _serial = serial();
    let d = Daemon::start();
    import_busybox(&d);
    // API < 1.44 clients (docker-py) send the MAC in Config, not in the endpoint settings.
    let r = d.http(
        "POST",
        "/v1.41/containers/create?name=mac",
        Some(
            br#"{"Image":"busybox","MacAddress":"02:42:ac:11:00:0a",
                 "Cmd":["sleep","100"]}"#,
        ),
    );
    assert_eq!(r.status, 201, "{r:?}");
    ok(d.docker(&["start", "mac"]));
    let inside = ok(d.docker(&["exec", "mac", "cat", "/sys/class/net/eth0/address"]));
    assert_eq!(inside, "02:42:ac:11:00:0a\n");
    let mac = ok(d.docker(&["inspect", "-f", "{{.NetworkSettings.MacAddress}}", "mac"]));
    assert_eq!(mac, "02:42:ac:11:00:0a\n");
}
