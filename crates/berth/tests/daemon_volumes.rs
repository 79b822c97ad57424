//! Volumes and mounts through the daemon with the real docker CLI and the raw API: named
//! volumes shared by containers and outliving them, in-use refusal, a tmpfs-backed volume
//! mounted only while used, read-only mounts and rootfs, `--tmpfs` sizes, anonymous volumes
//! from an image `VOLUME` populated by copy-up, and dockerd's errors for bad specifications.

mod daemon_common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Output};

use daemon_common::{busybox_tar, import_busybox, ok, Daemon, DOCKER};
use serde_json::{json, Value};

fn have_tools() -> bool {
    let ok = Path::new(DOCKER).exists() && Path::new("/bin/busybox").exists();
    if !ok {
        eprintln!("skipping: docker CLI or busybox-static missing");
    }
    ok
}

fn failed(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "command unexpectedly succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn inspect(d: &Daemon, what: &str) -> Value {
    let out = ok(d.docker(&["inspect", what]));
    serde_json::from_str::<Value>(&out).unwrap()[0].clone()
}

fn is_mountpoint(path: &Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let p = path.display().to_string();
    info.lines()
        .any(|l| l.split(' ').nth(4) == Some(p.as_str()))
}

#[test]
fn named_volume_outlives_containers_and_is_refused_while_used() {
    if !have_tools() {
        return;
    }
    let d = Daemon::start();
    import_busybox(&d);
    let created = ok(d.docker(&["volume", "create", "--label", "tier=db", "shared"]));
    assert_eq!(created.trim(), "shared");
    let v = inspect(&d, "shared");
    assert_eq!(v["Driver"], "local");
    assert_eq!(v["Labels"]["tier"], "db");
    let mountpoint = v["Mountpoint"].as_str().unwrap().to_string();
    assert_eq!(
        Path::new(&mountpoint),
        d.data().join("volumes/shared/_data")
    );

    ok(d.docker(&[
        "run",
        "--name",
        "writer",
        "--network",
        "none",
        "-v",
        "shared:/data",
        "busybox",
        "sh",
        "-c",
        "echo persisted > /data/f",
    ]));
    let w = inspect(&d, "writer");
    let m = &w["Mounts"][0];
    assert_eq!(m["Type"], "volume");
    assert_eq!(m["Name"], "shared");
    assert_eq!(m["Source"], mountpoint.as_str());
    assert_eq!(m["Destination"], "/data");
    assert_eq!(m["RW"], true);

    let read = ok(d.docker(&[
        "run",
        "--name",
        "reader",
        "--network",
        "none",
        "--mount",
        "source=shared,target=/in,readonly",
        "busybox",
        "cat",
        "/in/f",
    ]));
    assert_eq!(read.trim(), "persisted");

    // Any container referring to it, even a stopped one, keeps it.
    let err = failed(&d.docker(&["volume", "rm", "shared"]));
    assert!(err.contains("remove shared: volume is in use - ["), "{err}");
    let api = d.http("DELETE", "/volumes/shared", None);
    assert_eq!(api.status, 409);
    let dangling = ok(d.docker(&["volume", "ls", "-q", "--filter", "dangling=true"]));
    assert!(!dangling.contains("shared"));

    ok(d.docker(&["rm", "-v", "writer", "reader"]));
    assert_eq!(
        std::fs::read_to_string(Path::new(&mountpoint).join("f")).unwrap(),
        "persisted\n"
    );
    let dangling = ok(d.docker(&["volume", "ls", "-q", "--filter", "dangling=true"]));
    assert_eq!(dangling.trim(), "shared");
    let df = d.http("GET", "/system/df", None).json();
    let usage = &df["Volumes"][0]["UsageData"];
    assert_eq!(df["Volumes"][0]["Name"], "shared");
    assert_eq!(
        (usage["Size"].as_i64(), usage["RefCount"].as_i64()),
        (Some(10), Some(0))
    );
    // Prune removes only anonymous volumes unless asked for all.
    ok(d.docker(&["volume", "prune", "-f"]));
    assert!(ok(d.docker(&["volume", "ls", "-q"])).contains("shared"));
    let by_label = ok(d.docker(&["volume", "ls", "-q", "--filter", "label=tier=web"]));
    assert!(by_label.trim().is_empty());

    ok(d.docker(&["volume", "rm", "shared"]));
    assert!(!d.data().join("volumes/shared").exists());
    let err = failed(&d.docker(&["volume", "inspect", "shared"]));
    assert!(err.contains("no such volume"), "{err}");
    // Volume events.
    let until = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 1;
    let events = d.http(
        "GET",
        &format!("/events?since=0&until={until}&filters=%7B%22type%22%3A%5B%22volume%22%5D%7D"),
        None,
    );
    let actions: Vec<String> = String::from_utf8_lossy(&events.body)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["Actor"]["ID"] == "shared")
        .map(|e| e["Action"].as_str().unwrap_or_default().to_string())
        .collect();
    for action in ["create", "mount", "unmount", "destroy"] {
        assert!(
            actions.iter().any(|a| a == action),
            "{action} in {actions:?}"
        );
    }
}

#[test]
fn tmpfs_volume_readonly_mounts_and_tmpfs_sizes() {
    if !have_tools() {
        return;
    }
    let d = Daemon::start();
    import_busybox(&d);
    ok(d.docker(&[
        "volume",
        "create",
        "-d",
        "local",
        "-o",
        "type=tmpfs",
        "-o",
        "device=tmpfs",
        "-o",
        "o=size=2m",
        "scratch",
    ]));
    let data = d.data().join("volumes/scratch/_data");
    let mounts = ok(d.docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        "-v",
        "scratch:/s",
        "busybox",
        "sh",
        "-c",
        "echo x > /s/f && grep ' /s ' /proc/mounts",
    ]));
    assert!(mounts.starts_with("tmpfs /s tmpfs"), "{mounts}");
    assert!(mounts.contains("size=2048k"), "{mounts}");
    // Unmounted when its last user stopped: the file lived only in the tmpfs.
    assert!(!is_mountpoint(&data));
    assert!(!data.join("f").exists());

    let host = tempfile::tempdir().unwrap();
    let bind = format!("type=bind,src={},dst=/ro,readonly", host.path().display());
    let out = d.docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--mount",
        &bind,
        "busybox",
        "touch",
        "/ro/x",
    ]);
    assert!(failed(&out).contains("Read-only file system"));
    assert!(!host.path().join("x").exists());

    let out = ok(d.docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--read-only",
        "--tmpfs",
        "/t:size=1m",
        "busybox",
        "sh",
        "-c",
        "grep ' /t ' /proc/mounts; touch /t/ok && touch /nope || echo rootfs-ro",
    ]));
    assert!(out.contains("size=1024k"), "{out}");
    assert!(out.contains("rootfs-ro"), "{out}");

    let out = ok(d.docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--mount",
        "type=tmpfs,dst=/m,tmpfs-size=3m",
        "busybox",
        "grep",
        " /m ",
        "/proc/mounts",
    ]));
    assert!(out.contains("size=3072k"), "{out}");
}

/// Imports a busybox image whose `/data` holds a file with particular ownership and mode
/// and a symlink pointing out of the image, declared as a `VOLUME`.
fn import_volume_image(d: &Daemon) {
    let tar = busybox_tar(d.dir.path());
    let extra = d.dir.path().join("extra");
    std::fs::create_dir_all(extra.join("data/sub")).unwrap();
    std::fs::write(extra.join("data/sub/hello"), "from the image\n").unwrap();
    std::os::unix::fs::chown(extra.join("data/sub/hello"), Some(1234), Some(4321)).unwrap();
    std::fs::set_permissions(
        extra.join("data/sub/hello"),
        std::os::unix::fs::PermissionsExt::from_mode(0o640),
    )
    .unwrap();
    std::os::unix::fs::symlink("/etc/shadow", extra.join("data/link")).unwrap();
    let status = Command::new("tar")
        .arg("-C")
        .arg(&extra)
        .arg("-rf")
        .arg(&tar)
        .arg("./data")
        .status()
        .unwrap();
    assert!(status.success());
    ok(d.docker(&[
        "import",
        "-c",
        "VOLUME /data",
        "-c",
        r#"CMD ["sh"]"#,
        "-c",
        "ENV PATH=/bin",
        tar.to_str().unwrap(),
        "withvol:latest",
    ]));
}

#[test]
fn image_volume_is_anonymous_copied_up_and_removed_with_rm_v() {
    if !have_tools() {
        return;
    }
    let d = Daemon::start();
    import_volume_image(&d);
    let out = ok(d.docker(&[
        "run",
        "--name",
        "c1",
        "--network",
        "none",
        "withvol",
        "sh",
        "-c",
        "cat /data/sub/hello; stat -c '%u:%g %a' /data/sub/hello; readlink /data/link",
    ]));
    assert_eq!(out, "from the image\n1234:4321 640\n/etc/shadow\n");
    let c = inspect(&d, "c1");
    let m = &c["Mounts"][0];
    assert_eq!(m["Type"], "volume");
    assert_eq!(m["Destination"], "/data");
    let name = m["Name"].as_str().unwrap().to_string();
    assert_eq!(name.len(), 64);
    let v = inspect(&d, &name);
    assert!(v["Labels"]
        .as_object()
        .unwrap()
        .contains_key("com.docker.volume.anonymous"));
    let copied = d.data().join("volumes").join(&name).join("_data/sub/hello");
    let meta = std::fs::metadata(&copied).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o7777),
        (1234, 4321, 0o640)
    );
    // The link was copied as a link, not followed to the host's file.
    let link = d.data().join("volumes").join(&name).join("_data/link");
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());

    // `nocopy` leaves a new volume empty.
    let out = ok(d.docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        "-v",
        "empty:/data:nocopy",
        "withvol",
        "ls",
        "/data",
    ]));
    assert_eq!(out.trim(), "");

    // --volumes-from shares c1's volume.
    let out = ok(d.docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--volumes-from",
        "c1:ro",
        "withvol",
        "sh",
        "-c",
        "cat /data/sub/hello; touch /data/x 2>/dev/null || echo ro",
    ]));
    assert_eq!(out, "from the image\nro\n");

    ok(d.docker(&["rm", "-v", "c1"]));
    assert!(!d.data().join("volumes").join(&name).exists());
    // Named volumes survive rm -v; --rm removes the anonymous ones.
    assert!(ok(d.docker(&["volume", "ls", "-q"])).contains("empty"));
    ok(d.docker(&["run", "--rm", "--network", "none", "withvol", "true"]));
    let left = ok(d.docker(&["volume", "ls", "-q"]));
    assert_eq!(left.trim(), "empty");
}

#[test]
fn bad_specifications_are_refused_with_dockerd_messages() {
    if !have_tools() {
        return;
    }
    let d = Daemon::start();
    import_busybox(&d);
    let create = |host_config: Value| {
        let body = json!({"Image": "busybox", "Cmd": ["true"], "HostConfig": host_config});
        d.http(
            "POST",
            "/containers/create",
            Some(body.to_string().as_bytes()),
        )
    };
    let cases = [
        (json!({"Binds": ["/a:/b:c:d"]}), "invalid volume specification: '/a:/b:c:d'"),
        (json!({"Binds": ["/a:/b:bogus"]}), "invalid mode: bogus"),
        (
            json!({"Binds": ["/a:rel"]}),
            "invalid mount config for type \"bind\": invalid mount path: 'rel' mount path must be absolute",
        ),
        (
            json!({"Mounts": [{"Type": "bind", "Source": "/nonexistent/berth", "Target": "/x"}]}),
            "invalid mount config for type \"bind\": bind source path does not exist: /nonexistent/berth",
        ),
        (
            json!({"Mounts": [{"Type": "tmpfs", "Source": "x", "Target": "/x"}]}),
            "invalid mount config for type \"tmpfs\": field Source must not be specified",
        ),
        (
            json!({"Binds": ["/tmp:/x", "v1:/x"]}),
            "Duplicate mount point: /x",
        ),
    ];
    for (hc, message) in cases {
        let resp = create(hc.clone());
        assert_eq!(resp.status, 400, "{hc}: {}", resp.message());
        assert_eq!(resp.message(), message, "{hc}");
    }
    let resp = create(json!({"Binds": ["newvol:/x"], "VolumesFrom": ["nope"]}));
    assert_eq!(resp.status, 404, "{}", resp.message());
    // No volume was created by the refused requests.
    assert!(ok(d.docker(&["volume", "ls", "-q"])).trim().is_empty());

    let resp = d.http("POST", "/volumes/create", Some(br#"{"Name": "bad/name"}"#));
    assert_eq!(resp.status, 400);
    assert!(resp
        .message()
        .contains("includes invalid characters for a local volume name"));
    let resp = d.http(
        "POST",
        "/volumes/create",
        Some(br#"{"Name": "v", "Driver": "nope"}"#),
    );
    assert_eq!(resp.status, 400, "single-character names are invalid");
    let resp = d.http(
        "POST",
        "/volumes/create",
        Some(br#"{"Name": "vv", "Driver": "nope"}"#),
    );
    assert_eq!(resp.status, 404);
    let resp = d.http(
        "POST",
        "/volumes/create",
        Some(br#"{"Name": "vv", "DriverOpts": {"type": "tmpfs"}}"#),
    );
    assert_eq!(resp.status, 400);
    assert_eq!(
        resp.message(),
        "create vv: missing required option: \"device\""
    );
    let resp = d.http(
        "GET",
        "/volumes?filters=%7B%22bogus%22%3A%5B%22x%22%5D%7D",
        None,
    );
    assert_eq!(resp.status, 400);
    let resp = d.http("GET", "/volumes/nope", None);
    assert_eq!(resp.status, 404);
}

#[test]
fn berth_cli_volume_commands_and_run_mount_flags() {
    if !have_tools() {
        return;
    }
    let d = Daemon::start();
    import_busybox(&d);
    assert_eq!(
        ok(d.berth(&["volume", "create", "--label", "a=b", "cli-vol"])).trim(),
        "cli-vol"
    );
    let anon = ok(d.berth(&["volume", "create"])).trim().to_string();
    assert_eq!(anon.len(), 64);
    let table = ok(d.berth(&["volume", "ls"]));
    assert!(table.starts_with("DRIVER"), "{table}");
    assert!(table.contains("VOLUME NAME"), "{table}");
    let quiet = ok(d.berth(&["volume", "ls", "-q", "-f", "label=a=b"]));
    assert_eq!(quiet.trim(), "cli-vol");
    let fmt = ok(d.berth(&[
        "volume",
        "inspect",
        "-f",
        "{{.Driver}} {{.Name}}",
        "cli-vol",
    ]));
    assert_eq!(fmt.trim(), "local cli-vol");

    let out = ok(d.berth(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--mount",
        "src=cli-vol,dst=/v",
        "busybox",
        "sh",
        "-c",
        "echo hi > /v/f && cat /v/f",
    ]));
    assert_eq!(out.trim(), "hi");
    ok(d.berth(&[
        "create",
        "--name",
        "holder",
        "--network",
        "none",
        "-v",
        "cli-vol:/v",
        "busybox",
    ]));
    let out = ok(d.berth(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--volumes-from",
        "holder",
        "--read-only",
        "busybox",
        "cat",
        "/v/f",
    ]));
    assert_eq!(out.trim(), "hi");
    let err = d.berth(&["volume", "rm", "cli-vol"]);
    assert!(!err.status.success());
    assert!(String::from_utf8_lossy(&err.stderr).contains("volume is in use"));
    let bad = d.berth(&[
        "run",
        "--rm",
        "--mount",
        "type=bind,src=/x",
        "busybox",
        "true",
    ]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("target is required"));

    ok(d.berth(&["rm", "holder"]));
    let pruned = ok(d.berth(&["volume", "prune", "-f"]));
    assert!(pruned.contains(&anon), "{pruned}");
    assert!(!pruned.contains("cli-vol"), "{pruned}");
    let pruned = ok(d.berth(&["volume", "prune", "-f", "-a"]));
    assert!(pruned.contains("cli-vol"), "{pruned}");
    assert!(ok(d.berth(&["volume", "ls", "-q"])).trim().is_empty());
}

#[test]
fn volume_mount_is_released_when_its_container_exits_while_the_daemon_is_down() {
    if !have_tools() {
        return;
    }
    let mut d = Daemon::start();
    import_busybox(&d);
    ok(d.docker(&[
        "volume",
        "create",
        "-o",
        "type=tmpfs",
        "-o",
        "device=tmpfs",
        "keep",
    ]));
    let data = d.data().join("volumes/keep/_data");
    ok(d.docker(&[
        "run",
        "-d",
        "--name",
        "long",
        "--network",
        "none",
        "-v",
        "keep:/k",
        "busybox",
        "sleep",
        "1000",
    ]));
    assert!(is_mountpoint(&data));
    let pid = inspect(&d, "long")["State"]["Pid"].as_i64().unwrap();

    // A crash of the daemon leaves the container and its volume mounted.
    d.kill9();
    assert!(is_mountpoint(&data));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    d.spawn();
    // The restarted daemon records the exit and the volume's last user is gone.
    assert_eq!(ok(d.docker(&["wait", "long"])).trim(), "137");
    // The exit is recorded before its cleanup finishes; give that a moment.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while is_mountpoint(&data) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(!is_mountpoint(&data));
    ok(d.docker(&["rm", "long"]));
    ok(d.docker(&["volume", "rm", "keep"]));
}

#[test]
fn container_recorded_without_mount_points_gets_them_at_start() {
    if !have_tools() {
        return;
    }
    let mut d = Daemon::start();
    import_busybox(&d);
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("f"), "bound\n").unwrap();
    let bind = format!("{}:/b:ro", host.path().display());
    let id = ok(d.docker(&[
        "create",
        "--network",
        "none",
        "-v",
        &bind,
        "busybox",
        "cat",
        "/b/f",
    ]))
    .trim()
    .to_string();
    // As a record written before mount points were kept.
    d.stop();
    std::fs::remove_file(d.data().join("containers").join(&id).join("mounts.json")).unwrap();
    d.spawn();
    assert_eq!(ok(d.docker(&["start", "-a", &id])), "bound\n");
    let m = &inspect(&d, &id)["Mounts"][0];
    assert_eq!(m["Source"], host.path().display().to_string());
    assert_eq!(m["RW"], false);
}
