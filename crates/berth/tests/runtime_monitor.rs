//! `berth monitor` through the library API the daemon uses (`spawn_monitor`, `read_exit`,
//! `Runtime`): logs, exit files, attach socket, exec, start-up errors.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_runtime::monitor::{
    attach, read_exit, spawn_monitor, spawn_monitor_created, ExitStatus, LogConfig, MonitorConfig,
    MonitorMode, PendingMonitor,
};
use berth_runtime::Runtime;
use common::{berth_bin, TestContainer};

fn config(c: &TestContainer, name: &str, mode: MonitorMode) -> MonitorConfig {
    let run = c.dir.path().join(format!("run-{name}"));
    std::fs::create_dir_all(&run).unwrap();
    MonitorConfig {
        id: c.id.clone(),
        runtime_root: c.root.clone(),
        mode,
        tty: false,
        open_stdin: false,
        console_size: None,
        log: Some(LogConfig {
            path: run.join(format!("{}-json.log", c.id)),
            max_size: 10 * 1024 * 1024,
            max_files: 3,
        }),
        exit_file: run.join("exit.json"),
        attach_socket: Some(run.join("attach.sock")),
        monitor_pid_file: run.join("monitor.pid"),
        container_pid_file: run.join("container.pid"),
    }
}

fn container_mode(c: &TestContainer) -> MonitorMode {
    MonitorMode::Container {
        bundle: c.bundle.clone(),
        rootfs_siblings: None,
    }
}

fn wait_exit(path: &Path) -> ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = read_exit(path).unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "no exit file at {}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn log_entries(path: &PathBuf) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn logs_and_exit_status() {
    let c = TestContainer::new(
        "mon-log",
        &["sh", "-c", "echo out; echo err >&2; exit 3"],
        |_| {},
    );
    let cfg = config(&c, "a", container_mode(&c));
    let started = spawn_monitor(Path::new(berth_bin()), &cfg).unwrap();
    assert!(started.container_pid > 0 && started.monitor_pid > 0);
    let pid: i32 = std::fs::read_to_string(&cfg.container_pid_file)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(pid, started.container_pid);
    let status = wait_exit(&cfg.exit_file);
    assert_eq!(status.exit_code, 3);
    assert_eq!(status.signal, None);
    assert!(!status.oom_killed);
    assert!(status.finished_at.ends_with('Z'));
    let mut entries = log_entries(&cfg.log.as_ref().unwrap().path);
    entries.sort_by_key(|e| e["stream"].as_str().unwrap().to_owned());
    assert_eq!(entries.len(), 2, "{entries:?}");
    assert_eq!(entries[0]["log"], "err\n");
    assert_eq!(entries[0]["stream"], "stderr");
    assert_eq!(entries[1]["log"], "out\n");
    // The monitor is gone and the container can be deleted.
    let rt = Runtime::new(&c.root);
    assert_eq!(rt.state(&c.id).unwrap().status, "stopped");
    rt.delete(&c.id, false).unwrap();
    assert!(!cfg.attach_socket.as_ref().unwrap().exists());
}

#[test]
fn kill_and_oom_are_recorded() {
    let c = TestContainer::new("mon-kill", &["sleep", "60"], |_| {});
    let cfg = config(&c, "a", container_mode(&c));
    spawn_monitor(Path::new(berth_bin()), &cfg).unwrap();
    let rt = Runtime::new(&c.root);
    assert_eq!(rt.state(&c.id).unwrap().status, "running");
    rt.kill(&c.id, nix::sys::signal::Signal::SIGKILL, false)
        .unwrap();
    let status = wait_exit(&cfg.exit_file);
    assert_eq!((status.exit_code, status.signal), (137, Some(9)));
    assert!(!status.oom_killed);

    let c = TestContainer::new(
        "mon-oom",
        &["sh", "-c", "head -c 200m /dev/zero | tail"],
        |o| {
            o.limits.memory = Some(64 << 20);
            o.limits.memory_swap = Some(64 << 20);
        },
    );
    let cfg = config(&c, "b", container_mode(&c));
    spawn_monitor(Path::new(berth_bin()), &cfg).unwrap();
    let status = wait_exit(&cfg.exit_file);
    assert_eq!(status.exit_code, 137);
    assert!(status.oom_killed);
}

fn read_frame(s: &mut UnixStream) -> (u8, Vec<u8>) {
    let mut header = [0u8; 8];
    s.read_exact(&mut header).unwrap();
    let len = u32::from_be_bytes([header[4], header[5], header[6], header[7]]) as usize;
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).unwrap();
    (header[0], payload)
}

#[test]
fn attach_socket_carries_stdio() {
    let c = TestContainer::new(
        "mon-attach",
        &[
            "sh",
            "-c",
            "while read l; do echo got:$l; echo e:$l >&2; done; exit 4",
        ],
        |_| {},
    );
    let mut cfg = config(&c, "a", container_mode(&c));
    cfg.open_stdin = true;
    spawn_monitor(Path::new(berth_bin()), &cfg).unwrap();
    let mut s = UnixStream::connect(cfg.attach_socket.as_ref().unwrap()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&attach::encode(attach::STDIN, b"ping\n"))
        .unwrap();
    let mut frames = [read_frame(&mut s), read_frame(&mut s)];
    frames.sort();
    assert_eq!(frames[0], (attach::STDOUT, b"got:ping\n".to_vec()));
    assert_eq!(frames[1], (attach::STDERR, b"e:ping\n".to_vec()));
    s.write_all(&attach::encode(attach::CLOSE_STDIN, b""))
        .unwrap();
    assert_eq!(wait_exit(&cfg.exit_file).exit_code, 4);
}

#[test]
fn tty_mode_and_resize() {
    let c = TestContainer::new(
        "mon-tty",
        &["sh", "-c", "read l; stty size; [ -t 1 ] && echo tty:$l"],
        |o| o.tty = true,
    );
    let mut cfg = config(&c, "a", container_mode(&c));
    cfg.tty = true;
    cfg.open_stdin = true;
    spawn_monitor(Path::new(berth_bin()), &cfg).unwrap();
    let mut s = UnixStream::connect(cfg.attach_socket.as_ref().unwrap()).unwrap();
    s.write_all(&attach::encode(attach::RESIZE, &[0, 33, 0, 101]))
        .unwrap();
    s.write_all(&attach::encode(attach::STDIN, b"hi\n"))
        .unwrap();
    assert_eq!(wait_exit(&cfg.exit_file).exit_code, 0);
    let log: String = log_entries(&cfg.log.as_ref().unwrap().path)
        .iter()
        .map(|e| e["log"].as_str().unwrap().to_owned())
        .collect();
    assert!(log.contains("33 101"), "{log:?}");
    assert!(log.contains("tty:hi"), "{log:?}");
}

#[test]
fn exec_runs_under_its_own_monitor() {
    let c = TestContainer::new("mon-exec", &["sleep", "60"], |_| {});
    let cfg = config(&c, "init", container_mode(&c));
    spawn_monitor(Path::new(berth_bin()), &cfg).unwrap();
    let exec = config(
        &c,
        "exec",
        MonitorMode::Exec {
            args: vec![
                "sh".into(),
                "-c".into(),
                "echo in:$(hostname):$FOO; exit 5".into(),
            ],
            env: vec!["FOO=bar".into()],
            cwd: None,
            uid: None,
            gid: None,
            additional_gids: vec![],
            caps: vec![],
            no_new_privileges: false,
        },
    );
    spawn_monitor(Path::new(berth_bin()), &exec).unwrap();
    assert_eq!(wait_exit(&exec.exit_file).exit_code, 5);
    let entries = log_entries(&exec.log.as_ref().unwrap().path);
    assert_eq!(entries[0]["log"], "in:berth-test:bar\n");
    // The container itself is untouched.
    assert_eq!(
        Runtime::new(&c.root).state(&c.id).unwrap().status,
        "running"
    );
    assert!(read_exit(&cfg.exit_file).unwrap().is_none());
}

#[test]
fn startup_errors_are_reported() {
    let c = TestContainer::new("mon-err", &["true"], |_| {});
    std::fs::remove_dir_all(c.bundle.join("rootfs")).unwrap();
    let cfg = config(&c, "a", container_mode(&c));
    let err = spawn_monitor(Path::new(berth_bin()), &cfg).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("rootfs"), "{msg}");
    assert_eq!(msg.lines().count(), 1);
    assert!(!c.root.join(&c.id).exists());
    assert!(!cfg.attach_socket.as_ref().unwrap().exists());
    assert!(read_exit(&cfg.exit_file).unwrap().is_none());

    let c = TestContainer::new("mon-err2", &["/no/such/binary"], |_| {});
    let cfg = config(&c, "a", container_mode(&c));
    let err = spawn_monitor(Path::new(berth_bin()), &cfg).unwrap_err();
    assert!(err.to_string().contains("/no/such/binary"), "{err}");
    assert!(!c.root.join(&c.id).exists());
    for d in c.cgroup_dirs() {
        assert!(!d.exists(), "cgroup {} left behind", d.display());
    }
}

#[test]
fn log_rotation_keeps_max_files() {
    let c = TestContainer::new(
        "mon-rotate",
        &[
            "sh",
            "-c",
            "i=0; while [ $i -lt 300 ]; do echo line-$i; i=$((i+1)); done",
        ],
        |_| {},
    );
    let mut cfg = config(&c, "a", container_mode(&c));
    let log = cfg.log.as_mut().unwrap();
    log.max_size = 2000;
    log.max_files = 2;
    let path = log.path.clone();
    spawn_monitor(Path::new(berth_bin()), &cfg).unwrap();
    assert_eq!(wait_exit(&cfg.exit_file).exit_code, 0);
    let rotated = PathBuf::from(format!("{}.1", path.display()));
    assert!(rotated.exists());
    assert!(!PathBuf::from(format!("{}.2", path.display())).exists());
    for p in [&path, &rotated] {
        assert!(std::fs::metadata(p).unwrap().len() <= 2000);
    }
    let last = log_entries(&path);
    assert_eq!(last.last().unwrap()["log"], "line-299\n");
}

/// Attach clients that hang up while output is being forwarded must not take the monitor down:
/// a client dropped on a failed write used to shift the indices the poll round still used, the
/// monitor panicked and the exit was never recorded (the daemon then reported 255).
#[test]
fn clients_hanging_up_during_output_keep_the_monitor_alive() {
    let c = TestContainer::new("mon-hangup", &["sh", "-c", "yes output-line"], |_| {});
    let cfg = config(&c, "a", container_mode(&c));
    let started = spawn_monitor(Path::new(berth_bin()), &cfg).unwrap();
    let socket = cfg.attach_socket.clone().unwrap();
    for _ in 0..30 {
        let clients: Vec<UnixStream> = (0..3)
            .map(|_| UnixStream::connect(&socket).unwrap())
            .collect();
        for mut client in clients {
            // Wait until output is flowing to this client, then hang up mid-stream.
            let mut buf = [0u8; 64];
            client.read_exact(&mut buf).unwrap();
            drop(client);
        }
        assert!(
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(started.monitor_pid), None).is_ok(),
            "monitor died"
        );
    }
    Runtime::new(&c.root)
        .kill(&c.id, nix::sys::signal::Signal::SIGKILL, false)
        .unwrap();
    let status = wait_exit(&cfg.exit_file);
    assert_eq!((status.exit_code, status.signal), (137, Some(9)));
}

/// Reads attach frames until the monitor closes the socket; returns (stdout, stderr).
fn read_all_frames(mut s: UnixStream) -> (Vec<u8>, Vec<u8>) {
    let mut bytes = Vec::new();
    s.read_to_end(&mut bytes).unwrap();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let mut rest = &bytes[..];
    while rest.len() >= 8 {
        let len = u32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]) as usize;
        match rest[0] {
            attach::STDOUT => out.extend_from_slice(&rest[8..8 + len]),
            attach::STDERR => err.extend_from_slice(&rest[8..8 + len]),
            other => panic!("unexpected stream {other}"),
        }
        rest = &rest[8 + len..];
    }
    assert!(rest.is_empty(), "truncated frame");
    (out, err)
}

/// Two-phase start: a client connected between `created` and start sees every byte of a
/// process that prints at once and exits, every time.
#[test]
fn attach_before_start_sees_all_output() {
    for i in 0..50 {
        let c = TestContainer::new(
            "mon-2phase",
            &["sh", "-c", "echo first; echo second >&2; echo third"],
            |_| {},
        );
        let cfg = config(&c, "a", container_mode(&c));
        let created = spawn_monitor_created(Path::new(berth_bin()), &cfg).unwrap();
        assert_eq!(
            Runtime::new(&c.root).state(&c.id).unwrap().status,
            "created"
        );
        let client = UnixStream::connect(cfg.attach_socket.as_ref().unwrap()).unwrap();
        created.start().unwrap();
        let (out, err) = read_all_frames(client);
        assert_eq!(out, b"first\nthird\n", "run {i}");
        assert_eq!(err, b"second\n", "run {i}");
        assert_eq!(wait_exit(&cfg.exit_file).exit_code, 0);
        Runtime::new(&c.root).delete(&c.id, false).unwrap();
    }
}

/// An exec attached before start sees all its output; a created monitor dropped without
/// start removes its container and writes no exit file.
#[test]
fn two_phase_exec_and_abandon() {
    let c = TestContainer::new("mon-2exec", &["sleep", "60"], |_| {});
    let cfg = config(&c, "a", container_mode(&c));
    spawn_monitor(Path::new(berth_bin()), &cfg).unwrap();
    let mut exec = config(
        &c,
        "e",
        MonitorMode::Exec {
            args: vec!["sh".into(), "-c".into(), "echo from-exec; exit 4".into()],
            env: vec![],
            cwd: None,
            uid: None,
            gid: None,
            additional_gids: vec![],
            caps: vec![],
            no_new_privileges: false,
        },
    );
    exec.log = None;
    let created = spawn_monitor_created(Path::new(berth_bin()), &exec).unwrap();
    let client = UnixStream::connect(exec.attach_socket.as_ref().unwrap()).unwrap();
    created.start().unwrap();
    let (out, _) = read_all_frames(client);
    assert_eq!(out, b"from-exec\n");
    assert_eq!(wait_exit(&exec.exit_file).exit_code, 4);
    Runtime::new(&c.root)
        .kill(&c.id, nix::sys::signal::Signal::SIGKILL, false)
        .unwrap();
    wait_exit(&cfg.exit_file);

    let c = TestContainer::new("mon-2drop", &["echo", "never"], |_| {});
    let cfg = config(&c, "a", container_mode(&c));
    let created = spawn_monitor_created(Path::new(berth_bin()), &cfg).unwrap();
    drop(created);
    let deadline = Instant::now() + Duration::from_secs(20);
    while c.root.join(&c.id).exists() || cfg.attach_socket.as_ref().unwrap().exists() {
        assert!(Instant::now() < deadline, "abandoned container left behind");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(read_exit(&cfg.exit_file).unwrap().is_none());
}

/// A monitor spawned ahead of its configuration (the daemon overlaps its start-up with the
/// container's preparation) exits without doing anything when the preparation fails, and one
/// configured later runs its container as usual.
#[test]
fn pending_monitor_abandoned_or_configured_late() {
    let abandoned = PendingMonitor::spawn(Path::new(berth_bin()), true).unwrap();
    // Drop closes its stdin and reaps it: this returns only once it exited.
    drop(abandoned);

    let c = TestContainer::new("mon-pending", &["echo", "late"], |_| {});
    let pending = PendingMonitor::spawn(Path::new(berth_bin()), false).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let cfg = config(&c, "p", container_mode(&c));
    pending.started(&cfg).unwrap();
    assert_eq!(wait_exit(&cfg.exit_file).exit_code, 0);
    let log = std::fs::read_to_string(&cfg.log.as_ref().unwrap().path).unwrap();
    assert!(log.contains("late\\n"), "{log}");
    Runtime::new(&c.root).delete(&c.id, false).unwrap();
}

/// A start is reported once the workload has been executed: the container's process is no
/// longer libcontainer's init (whose name is `youki:[2:INIT]`) when `spawn_monitor` returns.
#[test]
fn start_returns_after_the_workload_exec() {
    for i in 0..20 {
        let c = TestContainer::new("mon-execd", &["sleep", "30"], |_| {});
        let cfg = config(&c, "x", container_mode(&c));
        let started = spawn_monitor(Path::new(berth_bin()), &cfg).unwrap();
        let comm = std::fs::read_to_string(format!("/proc/{}/comm", started.container_pid))
            .unwrap_or_default();
        Runtime::new(&c.root)
            .kill(&c.id, nix::sys::signal::Signal::SIGKILL, false)
            .unwrap();
        wait_exit(&cfg.exit_file);
        Runtime::new(&c.root).delete(&c.id, false).unwrap();
        assert_eq!(comm.trim(), "sleep", "run {i}");
    }
}
