//! The daemon is killed with SIGKILL while 20 containers run, one of which exits while no
//! daemon is running. After a restart every container is listed with its real state, the
//! running ones are still the same processes and are controllable (logs, exec, stop), the one
//! that exited shows its exit code, and no log line written meanwhile is lost: monitors, not
//! the daemon, own containers' stdio and exit status. A `--rm` container that exited meanwhile
//! is removed, and what a dead daemon or a power loss leaves (run directories of removed
//! containers, torn records) is cleaned up.

mod daemon_common;

use std::time::{Duration, Instant};

use daemon_common::{import_busybox, ok, Daemon, DOCKER};

const RUNNING: usize = 19;

/// Prints `line N` ten times a second, N counting up from 0.
const COUNTER: &str = "i=0; while true; do echo line $i; i=$((i+1)); sleep 0.1; done";

/// The numbers of a counter's log lines, checked to run 0, 1, 2… without a gap.
fn counted(log: &str) -> usize {
    let numbers: Vec<usize> = log
        .lines()
        .map(|l| {
            l.strip_prefix("line ")
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("unexpected log line {l:?}"))
        })
        .collect();
    for (expected, n) in numbers.iter().enumerate() {
        assert_eq!(*n, expected, "log lines lost or repeated: {log}");
    }
    numbers.len()
}

#[test]
fn containers_survive_daemon_kill_9() {
    if !std::path::Path::new(DOCKER).exists() || !std::path::Path::new("/bin/busybox").exists() {
        eprintln!("skipping: docker CLI or busybox-static missing");
        return;
    }
    let mut d = Daemon::start();
    import_busybox(&d);

    let names: Vec<String> = (0..RUNNING).map(|i| format!("c{i}")).collect();
    for name in &names {
        ok(d.docker(&[
            "run",
            "-d",
            "--network",
            "none",
            "--name",
            name,
            "busybox",
            "sh",
            "-c",
            COUNTER,
        ]));
    }
    ok(d.docker(&[
        "run",
        "-d",
        "--network",
        "none",
        "--name",
        "ephemeral",
        "busybox",
        "sh",
        "-c",
        "echo started; sleep 2; echo done; exit 42",
    ]));
    // A `--rm` container that exits while no daemon runs is removed by the next one, runtime
    // state and run directory included.
    let transient = ok(d.docker(&[
        "run",
        "-d",
        "--rm",
        "--network",
        "none",
        "busybox",
        "sh",
        "-c",
        "sleep 2",
    ]))
    .trim()
    .to_string();
    let pids: Vec<String> = names
        .iter()
        .map(|n| ok(d.docker(&["inspect", "-f", "{{.State.Pid}}", n])))
        .collect();
    let before = counted(&ok(d.docker(&["logs", "c0"])));

    d.kill9();
    // What a daemon may leave behind when it dies, or a power loss does: the run directory of
    // a container whose removal had answered, and unflushed (`--rm`) records left empty or
    // zero-filled.
    let run = d.dir.path().join("run");
    let orphan_run = run.join("containers").join("a1".repeat(32));
    std::fs::create_dir_all(orphan_run.join("bundle")).unwrap();
    std::fs::write(orphan_run.join("exit.json"), "{}").unwrap();
    let torn: Vec<_> = ["b2", "c3"]
        .iter()
        .map(|h| d.data().join("containers").join(h.repeat(32)))
        .collect();
    for (dir, content) in torn.iter().zip([vec![], vec![0u8; 2048]]) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("config.v2.json"), content).unwrap();
    }
    // `ephemeral` exits and every counter writes ~30 lines while no daemon runs.
    std::thread::sleep(Duration::from_secs(3));
    d.spawn();

    let listed = ok(d.docker(&["ps", "-a", "--format", "{{.Names}} {{.State}}"]));
    // Served only once the start's reconciliation is done.
    assert!(!orphan_run.exists(), "orphaned run directory left");
    for dir in &torn {
        assert!(!dir.exists(), "torn record left: {}", dir.display());
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while run.join("runtime").join(&transient).exists()
        || run.join("containers").join(&transient).exists()
    {
        assert!(
            Instant::now() < deadline,
            "the removed --rm container's runtime files are left"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(listed.lines().count(), RUNNING + 1, "{listed}");
    for name in &names {
        assert!(
            listed.lines().any(|l| l == format!("{name} running")),
            "{name} not running after the restart: {listed}"
        );
    }
    assert!(listed.lines().any(|l| l == "ephemeral exited"), "{listed}");
    let out = ok(d.docker(&[
        "inspect",
        "-f",
        "{{.State.Status}} {{.State.ExitCode}} {{.State.Running}}",
        "ephemeral",
    ]));
    assert_eq!(out, "exited 42 false\n");
    assert_eq!(
        String::from_utf8_lossy(&d.docker(&["logs", "ephemeral"]).stdout),
        "started\ndone\n"
    );
    for (name, pid) in names.iter().zip(&pids) {
        let now = ok(d.docker(&["inspect", "-f", "{{.State.Pid}}", name]));
        assert_eq!(&now, pid, "{name} is no longer the same process");
    }

    // Lines written while the daemon was down are there, in order, without a gap.
    let after = counted(&ok(d.docker(&["logs", "c0"])));
    assert!(after >= before + 20, "before {before}, after {after}");
    // Every container's log is intact, and still growing (its monitor kept collecting).
    for name in &names {
        counted(&ok(d.docker(&["logs", name])));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while counted(&ok(d.docker(&["logs", "c1"]))) <= after {
        assert!(Instant::now() < deadline, "c1's log stopped growing");
        std::thread::sleep(Duration::from_millis(100));
    }

    // Controllable: exec, stop (sh as pid 1 ignores SIGTERM: killed after the timeout), wait.
    assert_eq!(ok(d.docker(&["exec", "c2", "echo", "in c2"])), "in c2\n");
    ok(d.docker(&["stop", "-t", "1", "c3"]));
    let out = ok(d.docker(&[
        "inspect",
        "-f",
        "{{.State.Status}} {{.State.ExitCode}}",
        "c3",
    ]));
    assert_eq!(out, "exited 137\n");
    ok(d.docker(&["kill", "c4"]));
    assert_eq!(ok(d.docker(&["wait", "c4"])), "137\n");
    ok(d.docker(&["rm", "-f", "c5"]));
    let listed = ok(d.docker(&["ps", "-q"]));
    assert_eq!(listed.lines().count(), RUNNING - 3, "{listed}");
}
