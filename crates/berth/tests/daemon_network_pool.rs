//! Pooled network namespaces through the daemon: containers started from a ready namespace
//! are reached by name and by published port and inspect shows their real address; a daemon
//! killed with entries pooled leaves no namespace or link behind once restarted; `network rm`
//! drains its pool; a restarted container gets its static address back while its previous
//! link may still be going away. Traffic only goes to loopback and to addresses on the test's
//! bridges.

mod daemon_common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use daemon_common::{import_busybox, ok, Cleanup, Daemon, DOCKER};

fn have_tools() -> bool {
    let ok = Path::new(DOCKER).exists()
        && Path::new("/bin/busybox").exists()
        && Command::new("nft").arg("--version").output().is_ok();
    if !ok {
        eprintln!("skipping: docker CLI, busybox-static or nft missing");
    }
    ok
}

fn pool_dir(d: &Daemon) -> PathBuf {
    d.dir.path().join("run").join("netns-pool")
}

/// The `none` network's pooled namespaces are named `isolated-<pid>-<n>`.
fn is_isolated(name: &str) -> bool {
    name.starts_with("isolated-")
}

/// Names of the pooled namespaces of bridge networks (one per entry, named after its host
/// veth), or with `isolated`, those of the `none` network.
fn pooled_of(d: &Daemon, isolated: bool) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(pool_dir(d))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| is_isolated(n) == isolated)
        .collect();
    v.sort();
    v
}

fn pooled(d: &Daemon) -> Vec<String> {
    pooled_of(d, false)
}

/// Namespace mounts under the daemon's pool directory (bridge entries, or `isolated` ones).
fn pool_mounts_of(d: &Daemon, isolated: bool) -> usize {
    let dir = format!("{}/", pool_dir(d).display());
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4)?.strip_prefix(&dir))
        .filter(|name| is_isolated(name) == isolated)
        .count()
}

fn pool_mounts(d: &Daemon) -> usize {
    pool_mounts_of(d, false)
}

/// Polls `f` for up to 10 s.
fn eventually(mut f: impl FnMut() -> bool) -> bool {
    for _ in 0..100 {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

fn inspect(d: &Daemon, container: &str, network: &str, field: &str) -> String {
    ok(d.docker(&[
        "inspect",
        "-f",
        &format!("{{{{(index .NetworkSettings.Networks \"{network}\").{field}}}}}"),
        container,
    ]))
    .trim()
    .to_string()
}

const HTTPD: &str =
    "mkdir -p /www && echo hello-pool > /www/index.html && exec httpd -f -p 80 -h /www";

#[test]
fn pooled_namespaces_serve_dns_and_published_ports() {
    if !have_tools() {
        return;
    }
    let d = Daemon::start();
    import_busybox(&d);
    let _cleanup = Cleanup::new(&d, &["bpool"]);
    // The default network's pool is filled at daemon start.
    assert!(eventually(|| pooled(&d).len() == 2), "{:?}", pooled(&d));
    ok(d.docker(&["network", "create", "--subnet", "10.79.7.0/24", "bpool"]));
    // The first container of a network makes it keep a pool: .2 is its own, .3 and .4 go to
    // the pool's entries.
    ok(d.docker(&[
        "run",
        "-d",
        "--name",
        "first",
        "--network",
        "bpool",
        "busybox",
        "sleep",
        "600",
    ]));
    assert_eq!(inspect(&d, "first", "bpool", "IPAddress"), "10.79.7.2");
    assert!(eventually(|| pooled(&d).len() == 4), "{:?}", pooled(&d));

    // The next one takes an entry: .3 (a namespace of its own would have got .5).
    ok(d.docker(&[
        "run",
        "-d",
        "--name",
        "web",
        "--network",
        "bpool",
        "--network-alias",
        "www",
        "-p",
        "127.0.0.1::80",
        "busybox",
        "sh",
        "-c",
        HTTPD,
    ]));
    assert_eq!(inspect(&d, "web", "bpool", "IPAddress"), "10.79.7.3");
    assert_eq!(
        inspect(&d, "web", "bpool", "MacAddress"),
        "02:42:0a:4f:07:03"
    );
    let addr = ok(d.docker(&["exec", "web", "ip", "-o", "-4", "addr", "show", "eth0"]));
    assert!(addr.contains("10.79.7.3/24"), "{addr}");
    let link = ok(d.docker(&["exec", "web", "ip", "link", "show", "eth0"]));
    assert!(link.contains("02:42:0a:4f:07:03"), "{link}");
    let hosts = ok(d.docker(&["exec", "web", "cat", "/etc/hosts"]));
    assert!(hosts.contains("10.79.7.3\t"), "{hosts}");

    // By name and alias from another pooled container (retried while httpd starts).
    for host in ["web", "www"] {
        let out = ok(d.docker(&[
            "run", "--rm", "--network", "bpool", "busybox", "sh", "-c",
            &format!(
                "for i in 1 2 3 4 5 6 7 8 9 10; do printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {host} 80 && exit 0; sleep 0.5; done; exit 1"
            ),
        ]));
        assert!(out.contains("hello-pool"), "fetch {host}: {out}");
    }

    // From the host through the published port.
    let port = ok(d.docker(&["port", "web", "80/tcp"]));
    let port: u16 = port
        .trim()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("bad docker port output {port:?}"));
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to published port");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    assert!(body.contains("hello-pool"), "published port: {body}");

    // Removal withdraws the published port's rule (in the background, off the removal path).
    ok(d.docker(&["rm", "-f", "web"]));
    let rule = format!("dport {port} dnat");
    assert!(
        eventually(|| {
            let out = Command::new("nft")
                .args(["list", "table", "ip", &d.net.table()])
                .output()
                .expect("nft");
            !String::from_utf8_lossy(&out.stdout).contains(&rule)
        }),
        "rule for port {port} left behind"
    );

    // The default bridge hands out pooled namespaces too.
    let out = ok(d.docker(&["run", "--rm", "busybox", "ip", "-o", "-4", "route"]));
    assert!(out.contains("default via"), "{out}");
}

#[test]
fn daemon_killed_with_pooled_namespaces_leaves_nothing_after_restart() {
    if !have_tools() {
        return;
    }
    // The daemon's drop removes the container, and its network instance the links.
    let mut d = Daemon::start();
    import_busybox(&d);
    // A subnet of the test's own: daemons of other tests (and engineers) come and go with
    // default subnets picked from the same pools.
    ok(d.docker(&["network", "create", "--subnet", "10.79.12.0/24", "bkill"]));
    ok(d.docker(&[
        "run",
        "-d",
        "--name",
        "idle",
        "--network",
        "bkill",
        "busybox",
        "sleep",
        "600",
    ]));
    // Two entries for the default network, two for bkill, two for `none`.
    assert!(eventually(|| pooled(&d).len() == 4), "{:?}", pooled(&d));
    assert!(eventually(|| pool_mounts_of(&d, true) == 2));
    let old = pooled(&d);
    let old_isolated = pooled_of(&d, true);
    d.kill9();
    d.spawn();
    assert!(
        eventually(|| {
            let now = pooled_of(&d, true);
            now.len() == 2 && now.iter().all(|n| !old_isolated.contains(n))
        }),
        "old {old_isolated:?}, now {:?}",
        pooled_of(&d, true)
    );
    // The previous run's entries are unmounted, their links gone; new ones are made.
    assert!(
        eventually(|| {
            let now = pooled(&d);
            now.len() == 4 && now.iter().all(|n| !old.contains(n))
        }),
        "old {old:?}, now {:?}",
        pooled(&d)
    );
    // (A namespace file exists a moment before it is mounted.)
    assert!(eventually(|| pool_mounts(&d) == 4), "{}", pool_mounts(&d));
    // Two bridges, idle's veth and the four new entries' veths.
    assert!(
        eventually(|| {
            let links = d.net.links();
            links.len() == 7 && old.iter().all(|o| !links.contains(o))
        }),
        "{:?}",
        d.net.links()
    );
    assert_eq!(inspect(&d, "idle", "bkill", "IPAddress"), "10.79.12.2");
    ok(d.docker(&["exec", "idle", "ping", "-c", "1", "-W", "5", "10.79.12.1"]));

    // A clean stop takes the pool with it.
    d.stop();
    assert_eq!(pool_mounts(&d) + pool_mounts_of(&d, true), 0);
    assert!(pooled(&d).is_empty(), "{:?}", pooled(&d));
    assert!(pooled_of(&d, true).is_empty(), "{:?}", pooled_of(&d, true));
    d.spawn();
}

/// `--network none` gets a namespace whose loopback is up (as in Docker), from the pool or,
/// when a burst empties it, made at once; the pool refills.
#[test]
fn none_network_has_its_loopback_up() {
    if !have_tools() {
        return;
    }
    let d = Daemon::start();
    import_busybox(&d);
    let _cleanup = Cleanup::new(&d, &[]);
    assert!(eventually(|| pooled_of(&d, true).len() == 2));
    let out = ok(d.docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        "busybox",
        "sh",
        "-c",
        "ip -o link show; ip -o addr show lo; ping -c 1 -W 5 127.0.0.1",
    ]));
    assert!(out.contains("lo: <LOOPBACK,UP"), "{out}");
    assert!(out.contains("inet 127.0.0.1/8"), "{out}");
    assert!(out.contains("1 packets received"), "{out}");
    assert_eq!(out.matches(": <").count(), 1, "only lo: {out}");
    // More at once than the pool holds.
    let ids: Vec<String> = (0..4)
        .map(|_| {
            ok(d.docker(&["run", "-d", "--network", "none", "busybox", "sleep", "600"]))
                .trim()
                .to_string()
        })
        .collect();
    for id in &ids {
        let out = ok(d.docker(&["exec", id, "ip", "-o", "link", "show", "lo"]));
        assert!(out.contains("<LOOPBACK,UP"), "{id}: {out}");
    }
    // Running, they hold their namespaces themselves: none stays mounted on the host, whose
    // mount table every start reads. Another container still joins one.
    let netns_dir = format!("{}/", d.dir.path().join("run").join("netns").display());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.lines().any(|l| l.contains(&netns_dir)),
        "namespaces left mounted under {netns_dir}"
    );
    let joined = format!("container:{}", ids[0]);
    let out = ok(d.docker(&[
        "run",
        "--rm",
        "--network",
        &joined,
        "busybox",
        "ip",
        "-o",
        "link",
        "show",
    ]));
    assert!(out.contains("lo: <LOOPBACK,UP"), "{out}");
    let mut rm = vec!["rm", "-f"];
    rm.extend(ids.iter().map(String::as_str));
    ok(d.docker(&rm));
    assert!(eventually(|| pool_mounts_of(&d, true) == 2));
    assert!(eventually(|| pooled_of(&d, true).len() == 2));
}

#[test]
fn network_rm_drains_its_pool() {
    if !have_tools() {
        return;
    }
    let d = Daemon::start();
    import_busybox(&d);
    let _cleanup = Cleanup::new(&d, &["bdrain"]);
    let id = ok(d.docker(&["network", "create", "bdrain"]))
        .trim()
        .to_string();
    ok(d.docker(&["run", "--rm", "--network", "bdrain", "busybox", "true"]));
    assert!(eventually(|| pooled(&d).len() == 4), "{:?}", pooled(&d));
    ok(d.docker(&["network", "rm", "bdrain"]));
    // Only the default network's entries are left, at once.
    assert_eq!(pooled(&d).len(), 2, "{:?}", pooled(&d));
    assert_eq!(pool_mounts(&d), 2);
    let links = d.net.links();
    assert!(!links.contains(&d.net.bridge_of(&id)), "{links:?}");
    // The default bridge and its two entries (the removed container's veth goes with its
    // namespace, a moment later).
    assert!(
        eventually(|| d.net.links().len() == 3),
        "{:?}",
        d.net.links()
    );
}

#[test]
fn restart_keeps_a_static_address_whose_link_is_still_being_released() {
    if !have_tools() {
        return;
    }
    let d = Daemon::start();
    import_busybox(&d);
    let _cleanup = Cleanup::new(&d, &["bstatic"]);
    ok(d.docker(&["network", "create", "--subnet", "10.79.13.0/24", "bstatic"]));
    ok(d.docker(&[
        "run",
        "-d",
        "--name",
        "fixed",
        "--network",
        "bstatic",
        "--ip",
        "10.79.13.5",
        "busybox",
        "sleep",
        "600",
    ]));
    // A restart releases the address (freed once the old link is gone, in the background)
    // and asks for it again at once: the start takes it over from the release.
    for _ in 0..2 {
        ok(d.docker(&["restart", "-t", "0", "fixed"]));
        assert_eq!(inspect(&d, "fixed", "bstatic", "IPAddress"), "10.79.13.5");
        ok(d.docker(&["exec", "fixed", "ping", "-c", "1", "-W", "5", "10.79.13.1"]));
    }
    ok(d.docker(&["rm", "-f", "fixed"]));
    ok(d.docker(&["network", "rm", "bstatic"]));
    // Only the default bridge and its two pooled entries are left (the container's links go
    // with their namespaces, or with `network rm`).
    assert!(
        eventually(|| d.net.links().len() == 3),
        "{:?}",
        d.net.links()
    );
}
