//! Legacy links through the real docker CLI: a linked container's environment and address
//! reach the linking container as Docker's `ALIAS_*` variables, and `rm --link` removes a link
//! while both containers stay.

mod daemon_common;

use daemon_common::{import_busybox, ok, Daemon, DOCKER};

#[test]
fn link_environment_and_link_removal() {
    if !std::path::Path::new(DOCKER).exists() || !std::path::Path::new("/bin/busybox").exists() {
        eprintln!("skipping: docker CLI or busybox-static missing");
        return;
    }
    let d = Daemon::start();
    import_busybox(&d);
    ok(d.docker(&[
        "run", "-d", "--name", "db", "-e", "FOO=1", "--expose", "5432", "busybox", "sleep", "100",
    ]));
    let ip = ok(d.docker(&["inspect", "-f", "{{.NetworkSettings.IPAddress}}", "db"]));
    let ip = ip.trim();
    assert!(!ip.is_empty());

    let env = ok(d.docker(&[
        "run",
        "--name",
        "web",
        "--link",
        "db:data-1",
        "busybox",
        "env",
    ]));
    for want in [
        "DATA_1_NAME=/web/data-1".to_string(),
        "DATA_1_ENV_FOO=1".to_string(),
        format!("DATA_1_PORT=tcp://{ip}:5432"),
        format!("DATA_1_PORT_5432_TCP_ADDR={ip}"),
        "DATA_1_PORT_5432_TCP_PROTO=tcp".to_string(),
    ] {
        assert!(env.lines().any(|l| l == want), "no {want} in {env}");
    }
    assert!(!env.contains("DATA_1_ENV_PATH"), "{env}");

    ok(d.docker(&["rm", "--link", "/web/data-1"]));
    let links = ok(d.docker(&["inspect", "-f", "{{json .HostConfig.Links}}", "web"]));
    assert!(links.trim() == "[]" || links.trim() == "null", "{links}");
    let names = ok(d.docker(&["ps", "-a", "--format", "{{.Names}}"]));
    assert_eq!(names.lines().count(), 2, "{names}");

    let out = d.docker(&["run", "--rm", "--link", "nope:x", "busybox", "true"]);
    assert!(!out.status.success());
}
