//! `docker cp` through the daemon: `HEAD|GET|PUT /containers/{id}/archive` with the berth CLI,
//! the real docker CLI and raw HTTP, on running and stopped containers (with a volume and a
//! bind mount), plus `export`, `diff` and `commit` from the berth CLI.
//!
//! The escape tests plant a canary on the host and give containers symlinks that point at it
//! (by its absolute host path, through `../../..`, through a symlinked directory in the middle
//! of a path, as the target directory of a PUT) and archives with `../` entries, absolute
//! names and a symlink-then-file pair: the canary is never returned, changed or joined by a
//! new file.

mod daemon_common;

use std::io::Read;
use std::path::Path;

use base64::Engine;
use daemon_common::{import_busybox, ok, Daemon, DOCKER};

fn tools_present() -> bool {
    Path::new(DOCKER).exists() && Path::new("/bin/busybox").exists()
}

fn fail(out: std::process::Output) -> String {
    assert!(
        !out.status.success(),
        "expected failure, got: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A host directory holding a canary file nothing may read, change or add to.
struct Canary {
    dir: tempfile::TempDir,
}

const SECRET: &str = "host secret, never in a container";

impl Canary {
    fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("berth-canary")
            .tempdir()
            .unwrap();
        std::fs::write(dir.path().join("shadow"), SECRET).unwrap();
        Canary { dir }
    }

    fn dir(&self) -> String {
        self.dir.path().display().to_string()
    }

    fn file(&self) -> String {
        format!("{}/shadow", self.dir())
    }

    fn assert_untouched(&self) {
        assert_eq!(std::fs::read_to_string(self.file()).unwrap(), SECRET);
        let names: Vec<String> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            ["shadow"],
            "something was written next to the canary"
        );
    }
}

/// A raw ustar archive, so that names the tar crate refuses (`../x`, `/abs`) can be sent.
fn raw_tar(entries: &[(&str, u8, &[u8], &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, kind, data, link) in entries {
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        let octal = |h: &mut [u8], at: usize, len: usize, v: u64| {
            let s = format!("{v:0w$o}\0", w = len - 1);
            h[at..at + len].copy_from_slice(s.as_bytes());
        };
        octal(&mut h, 100, 8, if *kind == b'5' { 0o755 } else { 0o644 });
        octal(&mut h, 108, 8, 0);
        octal(&mut h, 116, 8, 0);
        octal(&mut h, 124, 12, data.len() as u64);
        octal(&mut h, 136, 12, 1_600_000_000);
        h[156] = *kind;
        h[157..157 + link.len()].copy_from_slice(link.as_bytes());
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
        let s = format!("{sum:06o}\0 ");
        h[148..156].copy_from_slice(s.as_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

/// Member names and contents of a tar stream.
fn members(bytes: &[u8]) -> Vec<(String, String)> {
    let mut a = tar::Archive::new(bytes);
    a.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let name = String::from_utf8_lossy(&e.path_bytes()).into_owned();
            let mut data = String::new();
            let _ = e.read_to_string(&mut data);
            (name, data)
        })
        .collect()
}

fn stat_header(r: &daemon_common::Response) -> serde_json::Value {
    let h = r
        .header("X-Docker-Container-Path-Stat")
        .expect("stat header");
    let raw = base64::engine::general_purpose::STANDARD
        .decode(h)
        .expect("base64");
    serde_json::from_slice(&raw).expect("json")
}

/// Whether container `name`'s rootfs is mounted (its overlay's `merged` dir).
fn rootfs_mounted(d: &Daemon, name: &str) -> bool {
    let id = ok(d.docker(&["inspect", "-f", "{{.Id}}", name]));
    let merged = format!("/{}/merged ", id.trim());
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .contains(&merged)
}

/// Waits (a few seconds at most: the release runs after the response) until container
/// `name`'s rootfs is no longer mounted.
fn assert_rootfs_unmounted(d: &Daemon, name: &str) {
    for _ in 0..100 {
        if !rootfs_mounted(d, name) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("the rootfs of {name} stayed mounted");
}

#[test]
fn cp_with_both_clis_on_stopped_and_running_containers() {
    if !tools_present() {
        eprintln!("skipping: docker CLI or busybox-static missing");
        return;
    }
    let d = Daemon::start();
    import_busybox(&d);
    let work = tempfile::tempdir().unwrap();
    let w = |p: &str| work.path().join(p).display().to_string();
    let bind = tempfile::tempdir().unwrap();
    let bind_spec = format!("{}:/bind", bind.path().display());

    // A stopped container: its volume and bind mount are part of what cp sees.
    ok(d.docker(&[
        "run",
        "--name",
        "stopped",
        "-v",
        "/vol",
        "-v",
        &bind_spec,
        "busybox",
        "sh",
        "-c",
        "echo in-volume > /vol/f; echo in-rootfs > /rootf; echo in-bind > /bind/b; mkdir -p /d/sub; echo deep > /d/sub/x",
    ]));
    ok(d.docker(&["cp", "stopped:/vol/f", &w("from-docker")]));
    assert_eq!(
        std::fs::read_to_string(w("from-docker")).unwrap(),
        "in-volume\n"
    );
    ok(d.berth(&["cp", "stopped:/vol/f", &w("from-berth")]));
    assert_eq!(
        std::fs::read_to_string(w("from-berth")).unwrap(),
        "in-volume\n"
    );
    ok(d.berth(&["cp", "stopped:/bind/b", &w("bind-b")]));
    assert_eq!(std::fs::read_to_string(w("bind-b")).unwrap(), "in-bind\n");
    // A directory into an existing directory, and its contents (`/.`) into a new one.
    std::fs::create_dir(w("into")).unwrap();
    ok(d.berth(&["cp", "stopped:/d", &w("into")]));
    assert_eq!(
        std::fs::read_to_string(w("into/d/sub/x")).unwrap(),
        "deep\n"
    );
    ok(d.docker(&["cp", "stopped:/d/.", &w("renamed")]));
    assert_eq!(
        std::fs::read_to_string(w("renamed/sub/x")).unwrap(),
        "deep\n"
    );
    // `-` streams the tar.
    let out = d.berth(&["cp", "stopped:/rootf", "-"]);
    assert!(out.status.success());
    assert_eq!(
        members(&out.stdout),
        [("rootf".to_string(), "in-rootfs\n".to_string())]
    );

    // Into the stopped container (into the volume, through the CLI's rename), then read back.
    std::fs::write(w("up.txt"), "uploaded").unwrap();
    ok(d.berth(&["cp", &w("up.txt"), "stopped:/vol/"]));
    ok(d.docker(&["cp", &w("up.txt"), "stopped:/renamed.txt"]));
    ok(d.berth(&["cp", "stopped:/vol/up.txt", &w("back1")]));
    ok(d.docker(&["cp", "stopped:/renamed.txt", &w("back2")]));
    assert_eq!(std::fs::read_to_string(w("back1")).unwrap(), "uploaded");
    assert_eq!(std::fs::read_to_string(w("back2")).unwrap(), "uploaded");
    // As with dockerd, the copies mounted the stopped container's rootfs only while they ran.
    assert_rootfs_unmounted(&d, "stopped");
    // The volume really holds it: a container started afterwards sees it.
    ok(d.docker(&["start", "stopped"]));
    ok(d.docker(&["wait", "stopped"]));
    let out = ok(d.docker(&[
        "run",
        "--rm",
        "--volumes-from",
        "stopped",
        "busybox",
        "cat",
        "/vol/up.txt",
    ]));
    assert_eq!(out, "uploaded");

    // A running container: its /proc/<pid>/root, with the bind mount inside.
    ok(d.docker(&[
        "run", "-d", "--name", "running", "-v", &bind_spec, "busybox", "sleep", "1000",
    ]));
    assert!(rootfs_mounted(&d, "running"));
    // The test image is a bare busybox: no /tmp until we make one.
    ok(d.docker(&["exec", "running", "mkdir", "/tmp"]));
    ok(d.berth(&["cp", &w("up.txt"), "running:/tmp/"]));
    let out = ok(d.docker(&["exec", "running", "cat", "/tmp/up.txt"]));
    assert_eq!(out, "uploaded");
    ok(d.docker(&["cp", &w("up.txt"), "running:/bind/"]));
    assert_eq!(
        std::fs::read_to_string(bind.path().join("up.txt")).unwrap(),
        "uploaded"
    );
    ok(d.docker(&["exec", "running", "sh", "-c", "echo live > /live"]));
    ok(d.berth(&["cp", "running:/live", &w("live")]));
    assert_eq!(std::fs::read_to_string(w("live")).unwrap(), "live\n");
    let tar = raw_tar(&[("piped.txt", b'0', b"piped", "")]);
    let mut child = std::process::Command::new(daemon_common::BERTH)
        .args(["cp", "-", "running:/tmp"])
        .env("BERTH_HOST", d.host())
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), &tar).unwrap();
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
    assert_eq!(
        ok(d.docker(&["exec", "running", "cat", "/tmp/piped.txt"])),
        "piped"
    );

    // `-a`: owned by the container's user; without it, by the archive's owners.
    ok(d.docker(&[
        "run",
        "-d",
        "--name",
        "user",
        "--user",
        "1234:4321",
        "busybox",
        "sleep",
        "1000",
    ]));
    ok(d.docker(&["cp", "-a", &w("up.txt"), "user:/"]));
    ok(d.berth(&["cp", &w("up.txt"), "user:/plain.txt"]));
    let out = ok(d.docker(&[
        "exec",
        "user",
        "stat",
        "-c",
        "%u:%g",
        "/up.txt",
        "/plain.txt",
    ]));
    assert_eq!(out, "1234:4321\n0:0\n");
    // A read-only rootfs takes nothing.
    ok(d.docker(&[
        "run",
        "-d",
        "--name",
        "ro",
        "--read-only",
        "busybox",
        "sleep",
        "1000",
    ]));
    // The upload is larger than what socket buffers hold: the daemon refuses it at once but
    // must still read it, or the client sees "broken pipe" instead of the reason.
    std::fs::write(w("big"), vec![7u8; 8 << 20]).unwrap();
    for upload in ["up.txt", "big"] {
        let err = fail(d.docker(&["cp", &w(upload), "ro:/"]));
        assert!(
            err.contains("container rootfs is marked read-only"),
            "{upload}: {err}"
        );
    }
    // On a terminal, the CLI reports what it copied, as docker does.
    let script = std::process::Command::new("script")
        .args([
            "-qec",
            &format!("{} cp running:/live {}", daemon_common::BERTH, w("tty")),
            "/dev/null",
        ])
        .env("BERTH_HOST", d.host())
        .output();
    if let Ok(out) = script {
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains(&format!("Successfully copied 2.05kB to {}", w("tty"))),
            "{text}"
        );
    }

    // Errors in docker's words.
    let err = fail(d.berth(&["cp", "running:/nope", &w("x")]));
    assert!(
        err.contains("Could not find the file /nope in container running"),
        "{err}"
    );
    let err = fail(d.docker(&["cp", "running:/nope", &w("x")]));
    assert!(
        err.contains("Could not find the file /nope in container running"),
        "{err}"
    );
    let err = fail(d.berth(&["cp", "running:/d", &w("up.txt")]));
    assert!(
        err.contains("cannot copy directory") || err.contains("Could not find"),
        "{err}"
    );
    let err = fail(d.berth(&["cp", &w("up.txt"), &w("up2.txt")]));
    assert!(
        err.contains("must specify at least one container source"),
        "{err}"
    );
    let r = d.http("GET", "/containers/running/archive", None);
    assert_eq!(r.status, 400);
    let r = d.http(
        "PUT",
        "/containers/running/archive?path=/tmp/up.txt",
        Some(&tar),
    );
    assert_eq!(
        (r.status, r.message()),
        (400, "extraction point is not a directory".into())
    );
    let r = d.http("HEAD", "/containers/nosuch/archive?path=/", None);
    assert_eq!(r.status, 404);

    // The stat header: Go FileMode bits and dockerd's field names.
    let r = d.http("HEAD", "/containers/running/archive?path=/tmp/up.txt", None);
    assert_eq!(r.status, 200);
    let st = stat_header(&r);
    assert_eq!(
        (st["name"].as_str(), st["size"].as_i64()),
        (Some("up.txt"), Some(8))
    );
    assert_eq!(st["mode"].as_u64(), Some(0o644));
    let r = d.http("HEAD", "/containers/running/archive?path=/tmp", None);
    assert_eq!(
        stat_header(&r)["mode"].as_u64().unwrap() & (1 << 31),
        1 << 31
    );

    // export, diff, commit from the berth CLI.
    let out = ok(d.berth(&["diff", "stopped"]));
    assert!(out.lines().any(|l| l == "A /rootf"), "{out}");
    assert!(out.lines().any(|l| l == "A /renamed.txt"), "{out}");
    ok(d.berth(&["export", "-o", &w("export.tar"), "stopped"]));
    let exported = members(&std::fs::read(w("export.tar")).unwrap());
    assert!(exported
        .iter()
        .any(|(n, c)| n == "rootf" && c == "in-rootfs\n"));
    assert_rootfs_unmounted(&d, "stopped");
    let id = ok(d.berth(&[
        "container",
        "commit",
        "-a",
        "me",
        "-m",
        "msg",
        "-c",
        "ENV A=1",
        "running",
        "mine:1",
    ]));
    assert!(id.trim().starts_with("sha256:"), "{id}");
    let out = ok(d.docker(&[
        "image",
        "inspect",
        "-f",
        "{{.Author}}|{{.Comment}}|{{.Config.Env}}",
        "mine:1",
    ]));
    assert_eq!(out.trim(), "me|msg|[PATH=/bin A=1]");
    // The running container was paused for the commit and runs again.
    let out = ok(d.docker(&["inspect", "-f", "{{.State.Status}}", "running"]));
    assert_eq!(out.trim(), "running");
}

#[test]
fn cp_never_reads_or_writes_the_host() {
    if !tools_present() {
        eprintln!("skipping: docker CLI or busybox-static missing");
        return;
    }
    let canary = Canary::new();
    let d = Daemon::start();
    import_busybox(&d);
    let work = tempfile::tempdir().unwrap();
    let w = |p: &str| work.path().join(p).display().to_string();
    let setup = format!(
        "mkdir -p /etc /tmp && echo container-shadow > /etc/shadow && \
         ln -s /etc/shadow /x && ln -s ../../../../etc /y && ln -s /etc /mid && \
         ln -s {file} /hostfile && ln -s {dir} /hostdir && ln -s ../../../..{dir} /updir",
        file = canary.file(),
        dir = canary.dir()
    );
    ok(d.docker(&["run", "--name", "stopped", "busybox", "sh", "-c", &setup]));
    ok(d.docker(&[
        "run",
        "-d",
        "--name",
        "running",
        "busybox",
        "sh",
        "-c",
        &format!("{setup} && sleep 1000"),
    ]));

    for c in ["stopped", "running"] {
        // Reading: every symlink resolves inside the container.
        for (path, want) in [
            ("/x", "container-shadow\n"),
            ("/y/shadow", "container-shadow\n"),
            ("/mid/shadow", "container-shadow\n"),
        ] {
            let r = d.http("GET", &format!("/containers/{c}/archive?path={path}"), None);
            assert_eq!(r.status, 200, "{c}:{path}");
            let m = members(&r.body);
            if path == "/x" {
                // A final symlink is archived as the link itself.
                assert_eq!(m[0].0, "x");
            } else {
                assert_eq!(m[0].1, want, "{c}:{path}");
            }
        }
        ok(d.berth(&["cp", "-L", &format!("{c}:/x"), &w(&format!("{c}-x"))]));
        assert_eq!(
            std::fs::read_to_string(w(&format!("{c}-x"))).unwrap(),
            "container-shadow\n"
        );
        let st = stat_header(&d.http("HEAD", &format!("/containers/{c}/archive?path=/y"), None));
        assert_eq!(st["linkTarget"].as_str(), Some("/etc"));
        // The link itself is archived as a link; nothing of the host file comes with it.
        let r = d.http(
            "GET",
            &format!("/containers/{c}/archive?path=/hostfile"),
            None,
        );
        assert_eq!(r.status, 200);
        assert!(!String::from_utf8_lossy(&r.body).contains(SECRET));
        let out = d.berth(&["cp", "-L", &format!("{c}:/hostfile"), &w("leak")]);
        assert!(!out.status.success());
        for path in [
            "/hostfile/",
            "/hostdir/shadow",
            "/updir/shadow",
            &canary.file(),
        ] {
            let r = d.http("GET", &format!("/containers/{c}/archive?path={path}"), None);
            assert_eq!(
                r.status,
                404,
                "{c}:{path}: {}",
                String::from_utf8_lossy(&r.body)
            );
            let out = d.docker(&["cp", "-L", &format!("{c}:{path}"), &w("leak")]);
            assert!(!out.status.success());
            assert!(!Path::new(&w("leak")).exists());
        }

        // Writing through a symlinked target directory: the host directory exists only on
        // the host, so the container path does not exist.
        std::fs::write(w("payload"), "payload").unwrap();
        for dst in ["/hostdir", "/hostdir/", "/updir/"] {
            let _ = d.docker(&["cp", &w("payload"), &format!("{c}:{dst}")]);
            let _ = d.berth(&["cp", &w("payload"), &format!("{c}:{dst}")]);
        }
        canary.assert_untouched();

        // Crafted archives.
        let cases: Vec<Vec<u8>> = vec![
            raw_tar(&[("../../../../escape", b'0', b"x", "")]),
            raw_tar(&[("a/../../escape", b'0', b"x", "")]),
            raw_tar(&[("up", b'2', b"", "../../../../")]),
            raw_tar(&[("hl", b'1', b"", &canary.file())]),
        ];
        for t in &cases {
            let r = d.http(
                "PUT",
                &format!("/containers/{c}/archive?path=/tmp"),
                Some(t),
            );
            assert_eq!(r.status, 400, "{c}: {}", String::from_utf8_lossy(&r.body));
        }
        // A symlink to the host directory, then a file through it.
        let pair = raw_tar(&[
            ("esc", b'2', b"", &canary.dir()),
            ("esc/shadow", b'0', b"overwritten", ""),
        ]);
        let r = d.http(
            "PUT",
            &format!("/containers/{c}/archive?path=/"),
            Some(&pair),
        );
        assert_ne!(r.status, 200, "{c}");
        // An absolute name lands inside the destination.
        let abs = raw_tar(&[(&canary.file(), b'0', b"overwritten", "")]);
        let r = d.http(
            "PUT",
            &format!("/containers/{c}/archive?path=/tmp"),
            Some(&abs),
        );
        assert_eq!(r.status, 200, "{c}: {}", String::from_utf8_lossy(&r.body));
        let inside = format!("/containers/{c}/archive?path=/tmp{}", canary.file());
        assert_eq!(
            members(&d.http("GET", &inside, None).body)[0].1,
            "overwritten"
        );
        // Replacing the link to the host canary replaces the link, not the canary.
        let over = raw_tar(&[("hostfile", b'0', b"overwritten", "")]);
        let r = d.http(
            "PUT",
            &format!("/containers/{c}/archive?path=/"),
            Some(&over),
        );
        assert_eq!(r.status, 200, "{c}");
        canary.assert_untouched();
        assert!(!Path::new("/escape").exists());
    }
}
