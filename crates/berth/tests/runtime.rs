//! `berth runtime`: real containers from a busybox rootfs, checked from the inside.
//! Every test drives the binary as a subprocess (libcontainer must not fork from the
//! multi-threaded test harness) and cleans up through `TestContainer`'s Drop.

mod common;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::process::Stdio;

use berth_runtime::spec::{IdMap, SeccompMode, UserNamespace};
use common::{stderr, stdout, wait_until, TestContainer};

#[test]
fn isolation_pid_hostname_network_mounts() {
    let c = TestContainer::new(
        "iso",
        &[
            "sh",
            "-c",
            "echo pid=$$; hostname; ls /sys/class/net; cat /proc/self/mountinfo",
        ],
        |_| {},
    );
    let out = c.run(b"");
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("pid=1"));
    assert_eq!(lines.next(), Some("berth-test"));
    assert_eq!(lines.next(), Some("lo"), "only lo expected: {text}");
    let mountinfo: Vec<&str> = lines.collect();
    // Our own mount table: the container's root is the rootfs, host mounts are not visible.
    assert!(mountinfo.iter().any(|l| l.split(' ').nth(4) == Some("/")));
    assert!(mountinfo
        .iter()
        .any(|l| l.split(' ').nth(4) == Some("/dev/shm")));
    let host = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(mountinfo.len() < host.lines().count() + 20);
    assert!(!mountinfo.iter().any(|l| l.contains(" /work ")));
    // Nothing left after a foreground run.
    assert!(!c.root.join(&c.id).exists());
}

#[test]
fn exit_codes_propagate() {
    let c = TestContainer::new("exit", &["sh", "-c", "exit 7"], |_| {});
    let out = c.run(b"");
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
}

#[test]
fn signals_propagate() {
    // Forwarded by the foreground `run`: the container traps TERM and exits 42.
    let c = TestContainer::new(
        "sig",
        &[
            "sh",
            "-c",
            "trap 'exit 42' TERM; echo ready; while true; do sleep 0.05; done",
        ],
        |_| {},
    );
    let mut child = c
        .cmd(&["run", "--bundle", c.bundle.to_str().unwrap(), &c.id])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut buf = [0u8; 6];
    std::io::Read::read_exact(&mut out, &mut buf).unwrap();
    assert_eq!(&buf, b"ready\n");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert_eq!(common::wait_child(&mut child), Some(42));

    // `kill` with a signal name; a SIGKILLed init is reported as 128+9.
    let c = TestContainer::new("sigkill", &["sleep", "60"], |_| {});
    let mut child = c
        .cmd(&["run", "--bundle", c.bundle.to_str().unwrap(), &c.id])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("running", || c.status() == "running");
    // No signal means SIGTERM, which `sleep` as pid 1 (no handler) does not die of.
    let out = c.runtime(&["kill", &c.id]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(c.status(), "running");
    let out = c.runtime(&["kill", &c.id, "KILL"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(common::wait_child(&mut child), Some(137));
}

#[test]
fn stdio_is_piped() {
    let c = TestContainer::new("stdio", &["sh", "-c", "cat; echo oops >&2"], |_| {});
    let out = c.run(b"hello from stdin\n");
    assert!(out.status.success());
    assert_eq!(stdout(&out), "hello from stdin\n");
    assert_eq!(stderr(&out), "oops\n");
}

#[test]
fn memory_limit_oom_kills() {
    let c = TestContainer::new(
        "oom",
        // busybox tail keeps a line-less input whole: 200 MB in a 64 MiB cgroup.
        &["sh", "-c", "head -c 200m /dev/zero | tail; exit $?"],
        |o| {
            o.limits.memory = Some(64 << 20);
            o.limits.memory_swap = Some(64 << 20);
        },
    );
    let out = c.run(b"");
    assert_eq!(out.status.code(), Some(137), "{}", stderr(&out));
}

#[test]
fn pids_limit_stops_fork() {
    let c = TestContainer::new(
        "pids",
        &[
            "sh",
            "-c",
            "for i in 1 2 3 4 5 6 7 8 9 10 11 12; do sleep 5 & done; echo all-forked",
        ],
        |o| o.limits.pids_limit = Some(8),
    );
    let out = c.run(b"");
    assert!(!stdout(&out).contains("all-forked"), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("can't fork: Resource temporarily unavailable"),
        "{}",
        stderr(&out)
    );
}

/// Ambient capabilities are raised when they are also inheritable, and skipped (as runc does)
/// when not: `runc spec` itself lists ambient capabilities without inheritable ones.
#[test]
fn ambient_capabilities_need_inheritable_ones() {
    for (inheritable, expected) in [
        (false, "CapAmb:\t0000000000000000"),
        (true, "CapAmb:\t0000000000000020"),
    ] {
        let c = TestContainer::new("ambient", &["grep", "CapAmb", "/proc/self/status"], |_| {});
        let config = c.bundle.join("config.json");
        let mut spec: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
        let caps = &mut spec["process"]["capabilities"];
        caps["ambient"] = serde_json::json!(["CAP_KILL"]);
        caps["inheritable"] = if inheritable {
            serde_json::json!(["CAP_KILL"])
        } else {
            serde_json::json!([])
        };
        std::fs::write(&config, serde_json::to_vec(&spec).unwrap()).unwrap();
        let out = c.run(b"");
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(stdout(&out).contains(expected), "{}", stdout(&out));
    }
}

#[test]
fn default_capabilities_are_dropped() {
    let c = TestContainer::new(
        "caps",
        &[
            "sh",
            "-c",
            "ip link add d0 type dummy 2>/dev/null && echo link-ok; \
             mount -t tmpfs none /mnt 2>/dev/null && echo mount-ok; \
             grep -E '^(CapEff|CapPrm|NoNewPrivs|Seccomp):' /proc/1/status",
        ],
        |_| {},
    );
    let out = c.run(b"");
    let text = stdout(&out);
    assert!(!text.contains("link-ok"), "{text}");
    assert!(!text.contains("mount-ok"), "{text}");
    // Docker's 14 default capabilities, in the workload itself (pid 1): CAP_SYS_ADMIN, which
    // the init holds to load the precompiled seccomp filter, is gone after its execve.
    assert!(text.contains("CapEff:\t00000000a80425fb"), "{text}");
    assert!(text.contains("CapPrm:\t00000000a80425fb"), "{text}");
    assert!(text.contains("Seccomp:\t2"), "{text}");
    // As Docker: setuid programs work unless no-new-privileges is asked for.
    assert!(text.contains("NoNewPrivs:\t0"), "{text}");
}

#[test]
fn seccomp_denies_unshare() {
    // unshare(CLONE_NEWUSER) needs no capability: only the seccomp profile can refuse it.
    let script = "grep Seccomp: /proc/self/status; unshare -U true && echo unshare-ok || echo unshare-denied";
    let c = TestContainer::new("seccomp", &["sh", "-c", script], |_| {});
    let text = stdout(&c.run(b""));
    assert!(text.contains("Seccomp:\t2"), "{text}");
    assert!(text.contains("unshare-denied"), "{text}");

    let c = TestContainer::new("noseccomp", &["sh", "-c", script], |o| {
        o.seccomp = SeccompMode::Unconfined
    });
    let text = stdout(&c.run(b""));
    assert!(text.contains("Seccomp:\t0"), "{text}");
    assert!(text.contains("unshare-ok"), "{text}");
}

#[test]
fn masked_and_readonly_paths() {
    let c = TestContainer::new(
        "masked",
        &[
            "sh",
            "-c",
            "echo kcore=$(head -c 1 /proc/kcore 2>/dev/null | wc -c); \
             echo keys=$(head -c 1 /proc/keys 2>/dev/null | wc -c); \
             echo acpi=$(ls /proc/acpi 2>/dev/null | wc -l); \
             echo 1 > /proc/sys/kernel/domainname 2>/dev/null && echo sys-writable; \
             echo 1 > /proc/sysrq-trigger 2>/dev/null && echo sysrq-writable; echo end",
        ],
        |_| {},
    );
    let text = stdout(&c.run(b""));
    assert!(text.contains("kcore=0"), "{text}");
    assert!(text.contains("keys=0"), "{text}");
    assert!(text.contains("acpi=0"), "{text}");
    assert!(!text.contains("writable"), "{text}");
    assert!(text.contains("end"), "{text}");
}

#[test]
fn user_namespace_remaps_root() {
    let c = TestContainer::new("userns", &["sleep", "60"], |o| {
        let map = IdMap {
            container_id: 0,
            host_id: 231072,
            size: 65536,
        };
        o.userns = Some(UserNamespace {
            uid_maps: vec![map],
            gid_maps: vec![map],
        });
    });
    let pid = c.start_detached();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert_eq!(
        uid_line.split_whitespace().nth(1),
        Some("231072"),
        "{uid_line}"
    );
    let out = c.runtime(&["exec", &c.id, "id", "-u"]);
    assert_eq!(stdout(&out).trim(), "0", "{}", stderr(&out));
}

#[test]
fn exec_joins_running_container() {
    let c = TestContainer::new("exec", &["sleep", "60"], |_| {});
    let pid = c.start_detached();
    let out = c.runtime(&[
        "exec",
        "--env",
        "X=42",
        &c.id,
        "sh",
        "-c",
        "echo $X $(hostname) $(cat /proc/1/comm); readlink /proc/self/ns/pid",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("42 berth-test sleep"));
    let host_ns = std::fs::read_link(format!("/proc/{pid}/ns/pid")).unwrap();
    assert_eq!(lines.next(), host_ns.to_str());

    let out = c.runtime(&["exec", &c.id, "sh", "-c", "exit 3"]);
    assert_eq!(out.status.code(), Some(3));

    // An exec'd process is confined like the init: same seccomp filter (unshare denied),
    // capabilities and no_new_privs, and its own pid-1-independent view of them.
    let out = c.runtime(&[
        "exec",
        &c.id,
        "sh",
        "-c",
        "grep -E '^(CapEff|CapPrm|NoNewPrivs|Seccomp):' /proc/self/status; \
         unshare -U true 2>/dev/null && echo unshare-ok",
    ]);
    let text = stdout(&out);
    assert!(text.contains("Seccomp:\t2"), "{text}");
    assert!(text.contains("CapEff:\t00000000a80425fb"), "{text}");
    assert!(text.contains("CapPrm:\t00000000a80425fb"), "{text}");
    assert!(text.contains("NoNewPrivs:\t0"), "{text}");
    assert!(!text.contains("unshare-ok"), "{text}");

    // ps, pause/resume, kill, delete.
    let out = c.runtime(&["ps", "--format", "json", &c.id]);
    let pids: Vec<i32> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(pids, vec![pid]);
    assert!(c.runtime(&["pause", &c.id]).status.success());
    assert_eq!(c.status(), "paused");
    assert!(c.runtime(&["resume", &c.id]).status.success());
    assert_eq!(c.status(), "running");
    let out = c.runtime(&["delete", &c.id]);
    assert!(
        !out.status.success(),
        "deleting a running container needs --force"
    );
    assert!(c.runtime(&["kill", &c.id, "9"]).status.success());
    wait_until("stopped", || c.status() == "stopped");
    assert!(c.runtime(&["delete", &c.id]).status.success());
    assert!(!c.root.join(&c.id).exists());
    assert!(c.cgroup_dirs().iter().all(|d| !d.exists()));
}

/// Receives one fd over SCM_RIGHTS.
fn recv_fd(stream: &std::os::unix::net::UnixStream) -> OwnedFd {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, UnixAddr};
    let mut buf = [0u8; 64];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = recvmsg::<UnixAddr>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::empty(),
    )
    .unwrap();
    for cmsg in msg.cmsgs().unwrap() {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            // SAFETY: SCM_RIGHTS installed this fd in our table.
            return unsafe { OwnedFd::from_raw_fd(fds[0]) };
        }
    }
    panic!("no fd received");
}

#[test]
fn console_socket_receives_pty() {
    let c = TestContainer::new(
        "pty",
        &[
            "sh",
            "-c",
            "[ -t 0 ] && [ -t 1 ] && echo is-a-tty; read line; echo got:$line",
        ],
        |o| o.tty = true,
    );
    let sock = c.dir.path().join("console.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    let out = c.runtime(&[
        "create",
        "--bundle",
        c.bundle.to_str().unwrap(),
        "--console-socket",
        sock.to_str().unwrap(),
        &c.id,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (stream, _) = listener.accept().unwrap();
    let master = std::fs::File::from(recv_fd(&stream));
    assert!(c.runtime(&["start", &c.id]).status.success());
    let mut writer = master.try_clone().unwrap();
    std::io::Write::write_all(&mut writer, b"pong\n").unwrap();
    let mut text = String::new();
    let mut reader = std::io::BufReader::new(master);
    while !text.contains("got:pong") {
        let mut line = String::new();
        if std::io::BufRead::read_line(&mut reader, &mut line).unwrap_or(0) == 0 {
            break;
        }
        text.push_str(&line);
    }
    assert!(text.contains("is-a-tty"), "{text}");
    assert!(text.contains("got:pong"), "{text}");
}

/// One-line error, exit status 1, no state and no cgroup left behind.
fn assert_clean_failure(c: &TestContainer, out: &std::process::Output, needle: &str) {
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(out);
    assert_eq!(err.lines().count(), 1, "not one line: {err:?}");
    assert!(err.contains(needle), "{err:?} lacks {needle:?}");
    assert!(!c.root.join(&c.id).exists(), "state dir left behind");
    for d in c.cgroup_dirs() {
        assert!(!d.exists(), "cgroup {} left behind", d.display());
    }
}

#[test]
fn bad_input_fails_cleanly() {
    let bundle_arg = |c: &TestContainer| c.bundle.to_str().unwrap().to_owned();

    let c = TestContainer::new("norootfs", &["true"], |_| {});
    std::fs::remove_dir_all(c.bundle.join("rootfs")).unwrap();
    let out = c.runtime(&["create", "--bundle", &bundle_arg(&c), &c.id]);
    assert_clean_failure(&c, &out, "rootfs");

    let c = TestContainer::new("badjson", &["true"], |_| {});
    std::fs::write(c.bundle.join("config.json"), "{\"ociVersion\": ").unwrap();
    let out = c.runtime(&["create", "--bundle", &bundle_arg(&c), &c.id]);
    assert_clean_failure(&c, &out, "malformed config.json");

    let c = TestContainer::new("unknown", &["true"], |_| {});
    let out = c.runtime(&["state", &c.id]);
    assert_clean_failure(&c, &out, "does not exist");
    let out = c.runtime(&["kill", &c.id, "KILL"]);
    assert_clean_failure(&c, &out, "does not exist");
    let out = c.runtime(&["kill", &c.id, "NOPE"]);
    assert_clean_failure(&c, &out, "unknown signal");
    let out = c.runtime(&["create", "--bundle", &bundle_arg(&c), "../escape"]);
    assert_clean_failure(&c, &out, "invalid container id");

    let c = TestContainer::new("symlink", &["true"], |_| {});
    let real = c.dir.path().join("elsewhere");
    std::fs::rename(c.bundle.join("rootfs"), &real).unwrap();
    std::os::unix::fs::symlink(&real, c.bundle.join("rootfs")).unwrap();
    let out = c.runtime(&["create", "--bundle", &bundle_arg(&c), &c.id]);
    assert_clean_failure(&c, &out, "outside the bundle");

    let c = TestContainer::new("dup", &["sleep", "60"], |_| {});
    c.start_detached();
    let out = c.runtime(&["create", "--bundle", &bundle_arg(&c), &c.id]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out).lines().count(), 1);
    assert!(stderr(&out).contains("already exists"), "{}", stderr(&out));
    assert_eq!(c.status(), "running", "the first container is untouched");
}

#[test]
fn live_update_of_limits() {
    use berth_runtime::{Limits, Runtime};
    let c = TestContainer::new("update", &["sleep", "60"], |o| {
        o.limits.memory = Some(64 << 20);
        o.limits.pids_limit = Some(50);
    });
    c.start_detached();
    let mem = c
        .cgroup_dirs()
        .into_iter()
        .find(|d| d.starts_with("/sys/fs/cgroup/memory"))
        .unwrap();
    let pids = c
        .cgroup_dirs()
        .into_iter()
        .find(|d| d.starts_with("/sys/fs/cgroup/pids"))
        .unwrap();
    let read = |p: std::path::PathBuf| std::fs::read_to_string(p).unwrap().trim().to_owned();
    assert_eq!(
        read(mem.join("memory.limit_in_bytes")),
        (64u64 << 20).to_string()
    );
    // The daemon's `docker update` path: in-process, from this multi-threaded harness.
    let limits = Limits {
        memory: Some(128 << 20),
        memory_swap: Some(256 << 20),
        pids_limit: Some(20),
        cpu_shares: Some(512),
        cpu_quota: Some(50_000),
        cpu_period: Some(100_000),
        cpuset_cpus: Some("0".into()),
        ..Default::default()
    };
    Runtime::new(&c.root)
        .update_resources(&c.id, &limits.to_oci().unwrap())
        .unwrap();
    assert_eq!(
        read(mem.join("memory.limit_in_bytes")),
        (128u64 << 20).to_string()
    );
    assert_eq!(read(pids.join("pids.max")), "20");
    let cgroup = |ctl: &str| {
        c.cgroup_dirs()
            .into_iter()
            .find(|d| d.starts_with(format!("/sys/fs/cgroup/{ctl}/")))
            .unwrap()
    };
    assert_eq!(read(cgroup("cpu").join("cpu.shares")), "512");
    assert_eq!(read(cgroup("cpu").join("cpu.cfs_quota_us")), "50000");
    assert_eq!(read(cgroup("cpu").join("cpu.cfs_period_us")), "100000");
    assert_eq!(read(cgroup("cpuset").join("cpuset.cpus")), "0");
    let stats = Runtime::new(&c.root).stats(&c.id).unwrap();
    assert_eq!(stats.pids.current, 1);
    assert_eq!(stats.memory.memory.limit, 128 << 20);
    // The same through the CLI.
    let out = c.runtime(&["update", "--pids-limit", "30", &c.id]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(read(pids.join("pids.max")), "30");
}

/// keyctl(2) is denied by the default profile. busybox has no keyctl applet, so the host's
/// python3 (bind-mounted read-only with /usr) makes the raw system call.
#[cfg(target_arch = "x86_64")]
#[test]
fn seccomp_denies_keyctl() {
    use berth_runtime::spec::{MountKind, MountSpec};
    if !std::path::Path::new("/usr/bin/python3").exists() {
        eprintln!("skipped: no /usr/bin/python3 on the host to issue keyctl(2)");
        return;
    }
    // keyctl(KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0) is syscall 250 on x86_64.
    let script = "import ctypes; libc = ctypes.CDLL(None, use_errno=True); \
                  r = libc.syscall(250, 0, -3, 0); print('keyctl', r, ctypes.get_errno())";
    let with_usr = |o: &mut berth_runtime::spec::RunOptions| {
        o.mounts.push(MountSpec {
            kind: MountKind::Bind,
            source: "/usr".into(),
            target: "/usr".into(),
            read_only: true,
            options: vec![],
        });
    };
    let prepare = |c: &TestContainer| {
        let rootfs = c.bundle.join("rootfs");
        std::os::unix::fs::symlink("usr/lib", rootfs.join("lib")).unwrap();
        std::os::unix::fs::symlink("usr/lib64", rootfs.join("lib64")).unwrap();
    };
    let c = TestContainer::new("keyctl", &["/usr/bin/python3", "-c", script], with_usr);
    prepare(&c);
    let out = c.run(b"");
    assert_eq!(stdout(&out).trim(), "keyctl -1 1", "{}", stderr(&out));

    let c = TestContainer::new("keyctl-ok", &["/usr/bin/python3", "-c", script], |o| {
        with_usr(o);
        o.seccomp = SeccompMode::Unconfined;
    });
    prepare(&c);
    let out = c.run(b"");
    assert!(
        !stdout(&out).contains("keyctl -1 1"),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
}

#[test]
fn run_options_apply_inside() {
    use berth_runtime::spec::{MountKind, MountSpec, Ulimit};
    let host_dir = tempfile::tempdir().unwrap();
    std::fs::write(host_dir.path().join("hello"), "from host\n").unwrap();
    let c = TestContainer::new(
        "opts",
        &[
            "sh",
            "-c",
            "touch /rootfs-write 2>/dev/null && echo rootfs-writable; \
             echo data > /data/f && cat /data/f; cat /host/hello; \
             touch /host/x 2>/dev/null && echo bind-writable; \
             echo nofile=$(ulimit -n); echo shmmax=$(cat /proc/sys/kernel/shmmax); \
             echo id=$(id -u):$(id -g); echo cwd=$(pwd); echo home=$HOME; \
             echo shm=$(df -k /dev/shm | tail -1 | awk '{print $2}')",
        ],
        |o| {
            o.read_only_rootfs = true;
            o.mounts = vec![
                MountSpec {
                    kind: MountKind::Tmpfs,
                    source: "".into(),
                    target: "/data".into(),
                    read_only: false,
                    options: vec!["size=1m".into()],
                },
                MountSpec {
                    kind: MountKind::Bind,
                    source: host_dir.path().to_owned(),
                    target: "/host".into(),
                    read_only: true,
                    options: vec![],
                },
            ];
            o.ulimits = vec![Ulimit {
                name: "nofile".into(),
                soft: 512,
                hard: 1024,
            }];
            o.sysctls.insert("kernel.shmmax".into(), "123456789".into());
            o.user = Some("nobody".into());
            o.working_dir = Some("/tmp".into());
            o.shm_size = Some(8 << 20);
        },
    );
    let out = c.run(b"");
    let text = stdout(&out);
    assert!(out.status.success(), "{text}{}", stderr(&out));
    for expected in [
        "data\n",
        "from host\n",
        "nofile=512\n",
        "shmmax=123456789\n",
        "id=65534:65534\n",
        "cwd=/tmp\n",
        "home=/\n",
        "shm=8192\n",
    ] {
        assert!(text.contains(expected), "{expected:?} missing from {text}");
    }
    assert!(!text.contains("writable"), "{text}");
    assert!(!host_dir.path().join("x").exists());
}

#[test]
fn privileged_gets_everything() {
    let c = TestContainer::new(
        "priv",
        &[
            "sh",
            "-c",
            "grep CapEff /proc/self/status; grep Seccomp: /proc/self/status; \
             echo masks=$(grep -c -e ' /proc/kcore ' -e ' /proc/keys ' /proc/self/mountinfo); \
             [ -e /dev/loop-control ] && echo loop-dev; \
             mount -t tmpfs none /mnt && echo mount-ok",
        ],
        |o| o.privileged = true,
    );
    let out = c.run(b"");
    let text = stdout(&out);
    // Every capability the engine itself holds.
    let host = std::fs::read_to_string("/proc/self/status").unwrap();
    let bounding = host
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .unwrap()
        .trim();
    assert!(
        text.contains(&format!("CapEff:\t{bounding}")),
        "{text}{}",
        stderr(&out)
    );
    assert!(text.contains("Seccomp:\t0"), "{text}");
    assert!(text.contains("masks=0"), "{text}");
    assert!(text.contains("mount-ok"), "{text}");
    if std::path::Path::new("/dev/loop-control").exists() {
        assert!(text.contains("loop-dev"), "{text}");
    }
}

#[test]
fn created_container_needs_force_to_delete() {
    let c = TestContainer::new("created", &["true"], |_| {});
    let log = c.dir.path().join("create.err");
    let status = c
        .cmd(&["create", "--bundle", c.bundle.to_str().unwrap(), &c.id])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .status()
        .unwrap();
    assert!(
        status.success(),
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );
    assert_eq!(c.status(), "created");
    let out = c.runtime(&["delete", &c.id]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("is created"), "{}", stderr(&out));
    assert_eq!(c.status(), "created");
    let out = c.runtime(&["delete", "--force", &c.id]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!c.root.join(&c.id).exists());
    assert!(c.cgroup_dirs().iter().all(|d| !d.exists()));
}
