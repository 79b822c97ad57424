//! Shared helpers for tests that drive the real `berth` binary: a busybox-static rootfs, OCI
//! bundles built with berth-runtime's spec builder, and a guard that removes the container,
//! its state and its cgroups even when a test fails.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use berth_runtime::spec::{build_spec, write_bundle, ImageDefaults, RunOptions};

/// Cgroup parent of every test container (removed per container by [`TestContainer`]).
pub const CGROUP_PARENT: &str = "/berth-test";

/// The `berth` binary under test.
pub fn berth_bin() -> &'static str {
    env!("CARGO_BIN_EXE_berth")
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A unique container id for test `name`.
pub fn unique_id(name: &str) -> String {
    format!(
        "t-{name}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Builds a rootfs with /bin/busybox and one symlink per applet.
pub fn busybox_rootfs(dir: &Path) {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy("/bin/busybox", bin.join("busybox")).unwrap();
    let list = Command::new("/bin/busybox").arg("--list").output().unwrap();
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet.is_empty() || applet == "busybox" {
            continue;
        }
        let _ = std::os::unix::fs::symlink("busybox", bin.join(applet));
    }
    for d in ["proc", "sys", "dev", "etc", "tmp", "mnt", "root"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::fs::write(
        dir.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("etc/group"),
        "root:x:0:\ntty:x:5:\nnogroup:x:65534:\n",
    )
    .unwrap();
}

/// A container under test: a bundle, a private runtime root, and cleanup on drop.
pub struct TestContainer {
    pub id: String,
    pub dir: tempfile::TempDir,
    pub bundle: PathBuf,
    pub root: PathBuf,
}

impl TestContainer {
    /// A bundle whose process is `cmd` with Docker's defaults adjusted by `tweak`.
    pub fn new(name: &str, cmd: &[&str], tweak: impl FnOnce(&mut RunOptions)) -> Self {
        let id = unique_id(name);
        let dir = tempfile::Builder::new()
            .prefix("berth-rt-")
            .tempdir()
            .unwrap();
        let bundle = dir.path().join("bundle");
        let rootfs = bundle.join("rootfs");
        busybox_rootfs(&rootfs);
        // The user-namespace root must be able to reach the rootfs.
        for p in [dir.path(), bundle.as_path()] {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let mut opts = RunOptions {
            cmd: Some(cmd.iter().map(|s| (*s).to_owned()).collect()),
            hostname: Some("berth-test".into()),
            cgroups_path: Some(format!("{CGROUP_PARENT}/{id}")),
            ..Default::default()
        };
        tweak(&mut opts);
        let mut spec = build_spec(&id, &rootfs, &ImageDefaults::default(), &opts).unwrap();
        // A bundle-relative root, as `runc spec` writes it.
        let mut root = spec.root().clone().unwrap();
        root.set_path(PathBuf::from("rootfs"));
        spec.set_root(Some(root));
        write_bundle(&bundle, &spec).unwrap();
        let root = dir.path().join("state");
        TestContainer {
            id,
            dir,
            bundle,
            root,
        }
    }

    /// `berth runtime --root <root> ARGS`.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(berth_bin());
        c.arg("runtime").arg("--root").arg(&self.root).args(args);
        c
    }

    /// Runs `berth runtime ARGS` to completion.
    pub fn runtime(&self, args: &[&str]) -> Output {
        self.cmd(args).stdin(Stdio::null()).output().unwrap()
    }

    /// `berth runtime run` of this bundle, with `stdin` fed to the container.
    pub fn run(&self, stdin: &[u8]) -> Output {
        use std::io::Write;
        let mut child = self
            .cmd(&["run", "--bundle", self.bundle.to_str().unwrap(), &self.id])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        let _ = input.write_all(stdin);
        drop(input);
        child.wait_with_output().unwrap()
    }

    /// Creates and starts the container in the background; returns the init's host pid.
    pub fn start_detached(&self) -> i32 {
        let pid_file = self.dir.path().join("pid");
        // The container inherits create's stdio: a pipe would never see EOF, use a file.
        let log = self.dir.path().join("create.err");
        let status = self
            .cmd(&[
                "create",
                "--bundle",
                self.bundle.to_str().unwrap(),
                "--pid-file",
                pid_file.to_str().unwrap(),
                &self.id,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .status()
            .unwrap();
        assert!(
            status.success(),
            "create: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        let out = self.runtime(&["start", &self.id]);
        assert!(out.status.success(), "start: {}", stderr(&out));
        std::fs::read_to_string(pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    /// The `status` field of `berth runtime state`.
    pub fn status(&self) -> String {
        let out = self.runtime(&["state", &self.id]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v["status"].as_str().unwrap_or("").to_owned()
    }

    /// Paths of this container's cgroup in every v1 hierarchy (and the v2 one).
    pub fn cgroup_dirs(&self) -> Vec<PathBuf> {
        cgroup_dirs_of(&self.id)
    }
}

/// Where a test container's cgroup would be, in every hierarchy.
pub fn cgroup_dirs_of(id: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") {
        for e in entries.flatten() {
            out.push(
                e.path()
                    .join(CGROUP_PARENT.trim_start_matches('/'))
                    .join(id),
            );
        }
    }
    out.push(
        Path::new("/sys/fs/cgroup")
            .join(CGROUP_PARENT.trim_start_matches('/'))
            .join(id),
    );
    out
}

impl Drop for TestContainer {
    fn drop(&mut self) {
        let _ = self
            .cmd(&["delete", "--force", &self.id])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        for dir in self.cgroup_dirs() {
            if dir.exists() {
                // Kill stragglers, then remove the (now empty) cgroup.
                if let Ok(pids) = std::fs::read_to_string(dir.join("cgroup.procs")) {
                    for pid in pids.lines().filter_map(|p| p.parse::<i32>().ok()) {
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(pid),
                            nix::sys::signal::Signal::SIGKILL,
                        );
                    }
                }
                let deadline = Instant::now() + Duration::from_secs(5);
                while std::fs::remove_dir(&dir).is_err() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Polls `f` until it returns true (panics after 10 s).
pub fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits for a child process (killing it after 20 s, so a failing test cannot hang CI).
pub fn wait_child(child: &mut std::process::Child) -> Option<i32> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("child {} did not exit within 20 s", child.id());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
