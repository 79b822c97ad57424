//! The `berth` CLI running real containers and managing images through a real daemon: import,
//! run (attached, with stdin, detached), pause, top, stop, start, kill, wait, restart, rm -f,
//! images, tag, save, rmi, load, history, inspect of images.

mod daemon_common;

use std::process::{Command, Stdio};

use daemon_common::{busybox_tar, ok, Daemon};

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

#[test]
fn berth_runs_containers_and_manages_images() {
    if !std::path::Path::new("/bin/busybox").exists() {
        eprintln!("skipping: busybox-static missing");
        return;
    }
    let d = Daemon::start();
    let tar = busybox_tar(d.dir.path());
    let id = ok(d.berth(&[
        "import",
        "-c",
        r#"CMD ["sh"]"#,
        "-c",
        "ENV PATH=/bin",
        tar.to_str().unwrap(),
        "busybox:latest",
    ]));
    let id = id.trim().to_string();
    assert!(id.starts_with("sha256:"), "{id}");
    let out = ok(d.berth(&["images"]));
    assert!(
        out.starts_with("REPOSITORY   TAG       IMAGE ID       CREATED"),
        "{out}"
    );
    assert!(
        out.contains(&format!("busybox      latest    {}", &id[7..19])),
        "{out}"
    );

    // Attached runs relay stdout, stderr and the exit code.
    let out = d.berth(&[
        "run",
        "--rm",
        "busybox",
        "sh",
        "-c",
        "echo hi; echo oops >&2; exit 4",
    ]);
    assert_eq!(out.status.code(), Some(4));
    assert_eq!(text(&out.stdout), "hi\n");
    assert_eq!(text(&out.stderr), "oops\n");
    let mut child = Command::new(daemon_common::BERTH)
        .args(["run", "-i", "--rm", "busybox", "tr", "a-z", "A-Z"])
        .env("BERTH_HOST", d.host())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), b"abc\n").unwrap();
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(text(&out.stdout), "ABC\n");
    let out = d.berth(&["run", "--rm", "busybox", "no-such-command"]);
    assert_eq!(out.status.code(), Some(127), "{out:?}");
    assert_eq!(ok(d.berth(&["ps", "-aq"])), "");

    // Detached lifecycle.
    let cid = ok(d.berth(&[
        "run", "-d", "--name", "bg", "-l", "app=test", "busybox", "sleep", "1000",
    ]));
    assert_eq!(cid.trim().len(), 64);
    let out = d.berth(&["exec", "bg", "sh", "-c", "echo in-exec; exit 2"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(text(&out.stdout), "in-exec\n");
    ok(d.berth(&["pause", "bg"]));
    let out = ok(d.berth(&["ps", "--format", "{{.Names}} {{.State}} {{.Labels}}"]));
    assert_eq!(out, "bg paused app=test\n");
    ok(d.berth(&["unpause", "bg"]));
    let out = ok(d.berth(&["top", "bg"]));
    assert!(
        out.lines().nth(1).unwrap_or("").ends_with("sleep 1000"),
        "{out}"
    );
    assert_eq!(ok(d.berth(&["stop", "-t", "1", "bg"])), "bg\n");
    assert_eq!(
        ok(d.berth(&["inspect", "-f", "{{.State.ExitCode}}", "bg"])),
        "137\n"
    );
    ok(d.berth(&["start", "bg"]));
    ok(d.berth(&["kill", "-s", "KILL", "bg"]));
    assert_eq!(ok(d.berth(&["wait", "bg"])), "137\n");
    ok(d.berth(&["restart", "-t", "0", "bg"]));
    assert_eq!(
        ok(d.berth(&["inspect", "-f", "{{.State.Running}}", "bg"])),
        "true\n"
    );
    assert_eq!(ok(d.berth(&["rm", "-f", "bg"])), "bg\n");

    // Images.
    ok(d.berth(&["tag", "busybox", "example/bb:2"]));
    let out = ok(d.berth(&[
        "images",
        "--format",
        "{{.Repository}}:{{.Tag}}",
        "example/bb",
    ]));
    assert_eq!(out, "example/bb:2\n");
    let archive = d.dir.path().join("bb.tar");
    ok(d.berth(&["save", "-o", archive.to_str().unwrap(), "example/bb:2"]));
    let out = ok(d.berth(&["rmi", "example/bb:2"]));
    assert_eq!(out, "Untagged: example/bb:2\n");
    let out = ok(d.berth(&["load", "-i", archive.to_str().unwrap()]));
    assert_eq!(out, "Loaded image: example/bb:2\n");
    let out = ok(d.berth(&["history", "--format", "{{.Comment}}", "example/bb:2"]));
    assert_eq!(out, "Imported from -\n");
    assert_eq!(
        ok(d.berth(&["image", "inspect", "-f", "{{.Id}}", "busybox"])),
        format!("{id}\n")
    );
    assert_eq!(
        ok(d.berth(&["inspect", "-f", "{{.Id}}", "example/bb:2"])),
        format!("{id}\n")
    );
    let out = ok(d.berth(&["rmi", "busybox", "example/bb:2"]));
    assert!(out.contains(&format!("Deleted: {id}")), "{out}");
    assert_eq!(ok(d.berth(&["images", "-q"])), "");
}
