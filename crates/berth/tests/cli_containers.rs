//! The `berth` CLI and the real docker CLI (28.x) against a real daemon: version, info, ps with
//! filters and formats, inspect, rename, rm, logs, events, container prune.

mod daemon_common;

use daemon_common::{log_line, ok, Daemon, Seed, DOCKER};
use serde_json::{json, Value};

/// A daemon with two stopped containers: `web` (exited 3, labelled, with logs) and `db`.
fn seeded() -> (Daemon, Seed<'static>, Seed<'static>) {
    let mut d = Daemon::start();
    d.stop();
    let mut web = Seed::new('a', "web", "exited");
    web.exit_code = 3;
    web.labels = json!({"tier": "front"});
    let log = web.write(&d.data());
    std::fs::write(
        &log,
        log_line("stdout", 1, "hello\n")
            + &log_line("stderr", 2, "oops\n")
            + &log_line("stdout", 3, "bye\n"),
    )
    .unwrap();
    let mut db = Seed::new('b', "db", "created");
    db.created_offset = 60;
    db.write(&d.data());
    d.spawn();
    (d, web, db)
}

#[test]
fn berth_ps_inspect_rename_rm_prune() {
    let (d, web, db) = seeded();

    let out = ok(d.berth(&["ps"]));
    assert_eq!(out.lines().count(), 1, "header only: {out}");
    assert!(out.starts_with("CONTAINER ID   IMAGE     COMMAND"), "{out}");

    let out = ok(d.berth(&["ps", "-a"]));
    let lines: Vec<_> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines[1].starts_with("bbbbbbbbbbbb   busybox   \"sh -c echo hello; s…\""),
        "{out}"
    );
    assert!(lines[1].ends_with("db"));
    assert!(lines[2].contains("Exited (3)"), "{out}");

    let out = ok(d.berth(&["ps", "-aq", "--no-trunc"]));
    assert_eq!(out, format!("{}\n{}\n", db.id, web.id));
    let out = ok(d.berth(&[
        "ps",
        "-a",
        "--filter",
        "label=tier=front",
        "--format",
        "{{.Names}} {{.State}} {{.Labels}}",
    ]));
    assert_eq!(out, "web exited tier=front\n");
    let out = ok(d.berth(&["ps", "-a", "--filter", "status=created", "-q"]));
    assert_eq!(out, "bbbbbbbbbbbb\n");
    let out = ok(d.berth(&["container", "ls", "-a", "--format", "json", "-n", "1"]));
    let row: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(row["Names"], "db");
    let out = ok(d.berth(&["ps", "-a", "--format", "table {{.ID}}\t{{.Status}}"]));
    assert!(out.starts_with("CONTAINER ID   STATUS\n"), "{out}");

    let out = ok(d.berth(&["inspect", "web"]));
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["Id"], web.id);
    assert!(
        out.contains("\n        \"Id\""),
        "four-space indent like docker"
    );
    let out = ok(d.berth(&[
        "inspect",
        "-f",
        "{{.State.Status}} {{.State.ExitCode}} {{json .Config.Labels}}",
        "web",
        "db",
    ]));
    assert_eq!(
        out,
        "exited 3 {\"tier\":\"front\"}\ncreated 0 null\n".replace("null", "{}")
    );
    let out = d.berth(&["inspect", "web", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("No such object: nope"));

    let out = d.berth(&["rename", "web", "db"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with(
        "Error response from daemon: Conflict. The container name \"/db\" is already in use"
    ));
    ok(d.berth(&["rename", "web", "front"]));

    let out = d.berth(&["rm", "front", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "front\n");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "Error response from daemon: No such container: nope\n"
    );

    let out = ok(d.berth(&["container", "prune", "-f"]));
    assert!(
        out.starts_with(&format!("Deleted Containers:\n{}\n", db.id)),
        "{out}"
    );
    assert!(out.contains("Total reclaimed space: "));
    assert_eq!(ok(d.berth(&["ps", "-aq"])), "");
}

#[test]
fn berth_version_info_logs_events() {
    let (d, web, _db) = seeded();
    let out = ok(d.berth(&["version"]));
    assert!(
        out.contains("API version:      1.47 (minimum version 1.24)"),
        "{out}"
    );
    assert_eq!(
        ok(d.berth(&["version", "--format", "{{.Server.ApiVersion}}"])),
        "1.47\n"
    );
    let out = ok(d.berth(&["info"]));
    assert!(out.contains(" Containers: 2\n"), "{out}");
    assert!(out.contains(" Storage Driver: overlay2\n"));
    let out = ok(d.berth(&["info", "--format", "{{.ContainersStopped}} {{.OSType}}"]));
    assert_eq!(out, "2 linux\n");

    let out = d.berth(&["logs", "web"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\nbye\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "oops\n");
    let out = d.berth(&["logs", "--tail", "1", "-t", "web"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "2024-01-01T00:00:03.000000001Z bye\n"
    );
    let out = d.berth(&["logs", "--until", "2024-01-01T00:00:02Z", "web"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n");
    let out = d.berth(&["logs", "nope"]);
    assert_eq!(out.status.code(), Some(1));

    let start = now_secs() - 1;
    ok(d.berth(&["rename", "web", "front"]));
    ok(d.berth(&["rm", "front"]));
    let until = format!("{:.3}", now_secs_f64());
    let out = ok(d.berth(&[
        "events",
        "--since",
        &start.to_string(),
        "--until",
        &until,
        "--filter",
        "type=container",
        "--format",
        "{{.Action}} {{.Actor.Attributes.name}}",
    ]));
    assert_eq!(out, "rename front\ndestroy front\n");
    let out = ok(d.berth(&[
        "events",
        "--since",
        &start.to_string(),
        "--until",
        &until,
        "--filter",
        "container=front",
    ]));
    assert_eq!(out.lines().count(), 2);
    assert!(
        out.contains(&format!("container destroy {} (", web.id)),
        "{out}"
    );
}

#[test]
fn docker_cli_against_berth() {
    if !std::path::Path::new(DOCKER).exists() {
        eprintln!("skipping: {DOCKER} is not installed");
        return;
    }
    let (d, web, db) = seeded();
    let out = ok(d.docker(&["version"]));
    assert!(out.contains("Server: Berth Engine"), "{out}");
    assert!(
        out.contains("API version:      1.47 (minimum version 1.24)"),
        "{out}"
    );
    assert_eq!(
        ok(d.docker(&["version", "--format", "{{.Server.APIVersion}}"])),
        "1.47\n"
    );
    let out = ok(d.docker(&[
        "info",
        "--format",
        "{{.Containers}} {{.Driver}} {{.CgroupDriver}}",
    ]));
    assert_eq!(out, "2 overlay2 cgroupfs\n");
    let out = ok(d.docker(&["info"]));
    assert!(out.contains("Server Version: 0.1.0"), "{out}");

    let out = ok(d.docker(&["ps", "-a"]));
    let lines: Vec<_> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(lines[1].starts_with("bbbbbbbbbbbb   busybox"), "{out}");
    assert!(lines[2].contains("Exited (3)"));
    let out = ok(d.docker(&[
        "ps",
        "-a",
        "--filter",
        "exited=3",
        "--format",
        "{{.ID}} {{.Names}}",
    ]));
    assert_eq!(out, "aaaaaaaaaaaa web\n");
    assert_eq!(ok(d.docker(&["ps", "-q"])), "");

    let out = ok(d.docker(&[
        "inspect",
        "--format",
        "{{.State.Status}}/{{.State.ExitCode}}/{{.Name}}",
        "web",
        &db.id[..5],
    ]));
    assert_eq!(out, "exited/3//web\ncreated/0//db\n");
    let out = ok(d.docker(&["container", "inspect", "web"]));
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["Id"], web.id);
    assert_eq!(
        v[0]["State"]["FinishedAt"],
        "2024-01-01T00:00:00.000000000Z"
    );
    let out = d.docker(&["inspect", "nope"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("No such object: nope"));

    let out = d.docker(&["logs", "web"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\nbye\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "oops\n");

    let start = now_secs() - 1;
    ok(d.docker(&["rename", "web", "front"]));
    let out = d.docker(&["rename", "front", "db"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is already in use by container"));
    assert_eq!(ok(d.docker(&["rm", "front"])), "front\n");
    let out = d.docker(&["rm", "front"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("No such container: front"));
    // docker sends whole seconds for --until; wait until the events are strictly before it.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let until = now_secs().to_string();
    let out = ok(d.docker(&[
        "events",
        "--since",
        &start.to_string(),
        "--until",
        &until,
        "--filter",
        "type=container",
        "--format",
        "{{.Type}} {{.Action}} {{.Actor.Attributes.name}}",
    ]));
    assert_eq!(out, "container rename front\ncontainer destroy front\n");
    let out = ok(d.docker(&["container", "prune", "-f"]));
    assert!(out.contains(&db.id), "{out}");
    assert_eq!(ok(d.docker(&["ps", "-aq"])), "");
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn now_secs_f64() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}
