//! The berth CLI's network flags as the docker CLI has them: `network create` with repeatable
//! `--subnet`/`--gateway`/`--ip-range`/`--aux-address` matched to their subnets, `--ipv6`,
//! `--internal`, `--attachable`, `--label`, `-o`; `run --ip6`; `network connect --ip --ip6
//! --alias`.

mod daemon_common;

use std::path::Path;

use daemon_common::{import_busybox, ok, Daemon};

fn have_tools() -> bool {
    let ok = Path::new("/bin/busybox").exists();
    if !ok {
        eprintln!("skipping: busybox-static missing");
    }
    ok
}

fn berth_ok(d: &Daemon, args: &[&str]) -> String {
    ok(d.berth(args))
}

#[test]
fn network_create_run_and_connect_flags() {
    if !have_tools() {
        return;
    }
    // The daemon's drop removes containers and the instance's links and tables (both families).
    let d = Daemon::start();
    import_busybox(&d);

    berth_ok(
        &d,
        &[
            "network",
            "create",
            "--ipv6",
            "--subnet",
            "10.79.8.0/24",
            "--subnet",
            "fd78:8::/64",
            "--gateway",
            "fd78:8::fe",
            "--gateway",
            "10.79.8.254",
            "--ip-range",
            "10.79.8.128/25",
            "--aux-address",
            "r=10.79.8.200",
            "--aux-address",
            "s=fd78:8::2",
            "--attachable",
            "--label",
            "team=net",
            "-o",
            "com.docker.network.driver.mtu=1400",
            "bflags",
        ],
    );
    let net = d.http("GET", "/networks/bflags", None).json();
    assert_eq!(net["EnableIPv6"], true, "{net}");
    assert_eq!(net["Attachable"], true, "{net}");
    assert_eq!(net["Labels"]["team"], "net", "{net}");
    assert_eq!(
        net["Options"]["com.docker.network.driver.mtu"], "1400",
        "{net}"
    );
    let configs = net["IPAM"]["Config"].as_array().expect("IPAM.Config");
    let v4 = configs
        .iter()
        .find(|c| c["Subnet"] == "10.79.8.0/24")
        .expect("v4 config");
    assert_eq!(v4["Gateway"], "10.79.8.254", "{net}");
    assert_eq!(v4["IPRange"], "10.79.8.128/25", "{net}");
    assert_eq!(v4["AuxiliaryAddresses"]["r"], "10.79.8.200", "{net}");
    let v6 = configs
        .iter()
        .find(|c| c["Subnet"] == "fd78:8::/64")
        .expect("v6 config");
    assert_eq!(v6["Gateway"], "fd78:8::fe", "{net}");
    assert_eq!(v6["AuxiliaryAddresses"]["s"], "fd78:8::2", "{net}");

    // A gateway outside every subnet is refused by the CLI, as docker's does.
    let out = d.berth(&[
        "network",
        "create",
        "--subnet",
        "10.79.9.0/24",
        "--gateway",
        "10.79.10.1",
        "bbad",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no matching subnet for gateway 10.79.10.1"),
        "{err}"
    );

    // run --ip6 (with --ip), and network connect --ip --ip6 --alias.
    berth_ok(
        &d,
        &[
            "run",
            "-d",
            "--name",
            "six",
            "--network",
            "bflags",
            "--ip",
            "10.79.8.130",
            "--ip6",
            "fd78:8::30",
            "busybox",
            "sleep",
            "600",
        ],
    );
    let addr = berth_ok(&d, &["exec", "six", "ip", "-o", "addr", "show", "eth0"]);
    assert!(addr.contains("10.79.8.130/24"), "{addr}");
    assert!(addr.contains("fd78:8::30/64"), "{addr}");

    berth_ok(
        &d,
        &[
            "network",
            "create",
            "--ipv6",
            "--subnet",
            "10.79.11.0/24",
            "--subnet",
            "fd78:11::/64",
            "bflags2",
        ],
    );
    berth_ok(
        &d,
        &[
            "network",
            "connect",
            "--ip",
            "10.79.11.9",
            "--ip6",
            "fd78:11::9",
            "--alias",
            "sixth",
            "bflags2",
            "six",
        ],
    );
    let c = d.http("GET", "/containers/six/json", None).json();
    let ep = &c["NetworkSettings"]["Networks"]["bflags2"];
    assert_eq!(ep["IPAddress"], "10.79.11.9", "{ep}");
    assert_eq!(ep["GlobalIPv6Address"], "fd78:11::9", "{ep}");
    assert!(
        ep["Aliases"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x == "sixth")),
        "{ep}"
    );
    let addr = berth_ok(&d, &["exec", "six", "ip", "-o", "addr", "show", "eth1"]);
    assert!(addr.contains("fd78:11::9/64"), "{addr}");

    berth_ok(&d, &["rm", "-f", "six"]);
    berth_ok(&d, &["network", "rm", "bflags", "bflags2"]);
}
