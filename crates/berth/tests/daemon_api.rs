//! The daemon's Engine API over its unix socket, driven with raw HTTP: version negotiation,
//! system routes, container records, logs framing, and Docker's status codes for bad input.

mod daemon_common;

use daemon_common::{log_line, Daemon, Seed, Sleeper};
use serde_json::json;

#[test]
fn ping_version_and_negotiation() {
    let d = Daemon::start();
    let r = d.http("GET", "/_ping", None);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"OK");
    assert_eq!(r.header("API-Version"), Some("1.47"));
    assert_eq!(r.header("OSType"), Some("linux"));
    assert_eq!(r.header("Docker-Experimental"), Some("false"));
    assert_eq!(r.header("Builder-Version"), Some("1"));
    assert_eq!(
        r.header("Cache-Control"),
        Some("no-cache, no-store, must-revalidate")
    );
    assert_eq!(r.header("Pragma"), Some("no-cache"));
    let r = d.http("HEAD", "/v1.40/_ping", None);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("API-Version"), Some("1.47"));

    let r = d.http("GET", "/v1.99/version", None);
    assert_eq!(r.status, 400);
    assert_eq!(
        r.message(),
        "client version 1.99 is too new. Maximum supported API version is 1.47"
    );
    let r = d.http("GET", "/v1.12/info", None);
    assert_eq!(r.status, 400);
    assert!(r.message().contains("too old"), "{}", r.message());

    for path in ["/version", "/v1.47/version", "/v1.24/version"] {
        let r = d.http("GET", path, None);
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.header("Api-Version"), Some("1.47"));
        let v = r.json();
        assert_eq!(v["ApiVersion"], "1.47");
        assert_eq!(v["MinAPIVersion"], "1.24");
        assert_eq!(v["Os"], "linux");
        assert_eq!(v["Components"][0]["Name"], "Engine");
        assert!(!v["KernelVersion"].as_str().unwrap().is_empty());
    }

    let r = d.http("GET", "/nothing/here", None);
    assert_eq!(r.status, 404);
    assert_eq!(r.message(), "page not found");
}

#[test]
fn info_counts_and_df() {
    // Records are seeded while the daemon is down, so it loads them from disk.
    let mut d = Daemon::start();
    d.stop();
    Seed::new('a', "one", "exited").write(&d.data());
    Seed::new('b', "two", "created").write(&d.data());
    d.spawn();
    let v = d.http("GET", "/info", None).json();
    assert_eq!(v["Containers"], 2);
    assert_eq!(v["ContainersRunning"], 0);
    assert_eq!(v["ContainersStopped"], 2);
    assert_eq!(v["Driver"], "overlay2");
    assert_eq!(v["CgroupDriver"], "cgroupfs");
    assert!(["1", "2"].contains(&v["CgroupVersion"].as_str().unwrap()));
    assert_eq!(v["DockerRootDir"], d.data().display().to_string());
    assert_eq!(v["OSType"], "linux");
    assert!(v["NCPU"].as_u64().unwrap() >= 1);
    assert!(v["MemTotal"].as_u64().unwrap() > 0);
    assert_eq!(v["ID"].as_str().unwrap().len(), 36);
    let df = d.http("GET", "/system/df", None).json();
    assert_eq!(df["Containers"].as_array().unwrap().len(), 2);
    assert!(df["Containers"][0]["SizeRw"].is_u64());
}

#[test]
fn bad_input_gets_dockers_status_codes() {
    let d = Daemon::start();
    let create = |body: &[u8]| d.http("POST", "/v1.47/containers/create", Some(body));

    let r = create(b"{not json");
    assert_eq!(r.status, 400);
    assert!(r.message().starts_with("invalid JSON:"), "{}", r.message());

    let r = create(br#"{"Image": 5}"#);
    assert_eq!(r.status, 400);
    assert!(r.message().contains("expected a string"), "{}", r.message());

    let r = create(br#"{"Image":"busybox","HostConfig":{"Memory":"lots"}}"#);
    assert_eq!(r.status, 400);

    let huge = vec![b' '; 5 << 20];
    let r = create(&huge);
    assert_eq!(r.status, 413);
    assert!(r.message().contains("too large"), "{}", r.message());

    let r = create(br#"{"Image":"busybox","HostConfig":{"Memory":1024}}"#);
    assert_eq!(r.status, 400);
    assert_eq!(r.message(), "Minimum memory limit allowed is 6MB");

    let r = d.http(
        "POST",
        "/containers/create?name=bad%20name",
        Some(br#"{"Image":"busybox"}"#),
    );
    assert_eq!(r.status, 400);
    assert!(r.message().starts_with("Invalid container name"));

    let r = create(br#"{"Image":"busybox","HostConfig":{"Runtime":"nope"}}"#);
    assert_eq!(r.status, 400);
    assert_eq!(r.message(), "Unknown runtime specified nope");

    // The fresh daemon has no images.
    let r = create(br#"{"Image":"busybox"}"#);
    assert_eq!(r.status, 404);
    assert_eq!(r.message(), "No such image: busybox");

    let r = d.http("GET", "/containers/nope/json", None);
    assert_eq!(r.status, 404);
    assert_eq!(r.message(), "No such container: nope");
    let r = d.http("DELETE", "/containers/nope", None);
    assert_eq!(r.status, 404);

    let r = d.http("GET", "/containers/json?filters=%7Bbad", None);
    assert_eq!(r.status, 400);
    let r = d.http(
        "GET",
        "/containers/json?filters=%7B%22bogus%22%3A%5B%22x%22%5D%7D",
        None,
    );
    assert_eq!(r.status, 400);
    assert_eq!(r.message(), "invalid filter 'bogus'");
}

#[test]
fn records_list_inspect_rename_remove_prune() {
    let mut d = Daemon::start();
    d.stop();
    let mut web = Seed::new('a', "web", "exited");
    web.exit_code = 3;
    web.labels = json!({"tier": "front"});
    web.write(&d.data());
    let mut db = Seed::new('b', "db", "created");
    db.created_offset = 60;
    db.write(&d.data());
    d.spawn();

    let list = d.http("GET", "/containers/json", None).json();
    assert_eq!(list.as_array().unwrap().len(), 0, "only running by default");
    let list = d.http("GET", "/containers/json?all=1", None).json();
    let names: Vec<_> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["Names"][0].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["/db", "/web"], "newest first");
    assert_eq!(
        list[1]["Status"]
            .as_str()
            .unwrap()
            .split(' ')
            .take(2)
            .collect::<Vec<_>>(),
        ["Exited", "(3)"]
    );
    assert_eq!(list[0]["Status"], "Created");
    assert_eq!(list[1]["Labels"]["tier"], "front");

    let q = |f: &str| {
        let path = format!("/containers/json?all=1&filters={f}");
        d.http("GET", &path, None).json().as_array().unwrap().len()
    };
    assert_eq!(q("%7B%22label%22%3A%5B%22tier%3Dfront%22%5D%7D"), 1);
    assert_eq!(q("%7B%22exited%22%3A%5B%223%22%5D%7D"), 1);
    assert_eq!(q("%7B%22status%22%3A%7B%22created%22%3Atrue%7D%7D"), 1);
    assert_eq!(q("%7B%22name%22%3A%5B%22d%22%5D%7D"), 1);
    assert_eq!(q("%7B%22id%22%3A%5B%22aaaa%22%5D%7D"), 1);
    assert_eq!(q("%7B%22ancestor%22%3A%5B%22busybox%22%5D%7D"), 2);
    assert_eq!(q("%7B%22since%22%3A%5B%22web%22%5D%7D"), 1);
    assert_eq!(q("%7B%22before%22%3A%5B%22db%22%5D%7D"), 1);
    let limited = d.http("GET", "/containers/json?limit=1", None).json();
    assert_eq!(limited.as_array().unwrap().len(), 1);

    // Lookups: name with and without '/', full ID, unique prefix.
    for key in ["web", "%2Fweb", &web.id, "aaa"] {
        let r = d.http("GET", &format!("/containers/{key}/json"), None);
        assert_eq!(r.status, 200, "{key}");
        let v = r.json();
        assert_eq!(v["Id"], web.id);
        assert_eq!(v["State"]["Status"], "exited");
        assert_eq!(v["State"]["ExitCode"], 3);
        assert_eq!(v["State"]["Running"], false);
        assert_eq!(v["Name"], "/web");
        assert_eq!(v["Config"]["Image"], "busybox");
        assert_eq!(v["HostConfig"]["NetworkMode"], "bridge");
    }

    let r = d.http("POST", "/containers/web/rename?name=db", None);
    assert_eq!(r.status, 409);
    assert_eq!(
        r.message(),
        format!(
            "Conflict. The container name \"/db\" is already in use by container \"{}\". You have to remove (or rename) that container to be able to reuse that name.",
            db.id
        )
    );
    let r = d.http("POST", "/containers/web/rename?name=front", None);
    assert_eq!(r.status, 204);
    assert_eq!(d.http("GET", "/containers/web/json", None).status, 404);

    // Renames survive a restart.
    d.stop();
    d.spawn();
    assert_eq!(
        d.http("GET", "/containers/front/json", None).json()["Id"],
        web.id
    );

    let r = d.http("DELETE", "/containers/front", None);
    assert_eq!(r.status, 204);
    assert!(!d.data().join("containers").join(&web.id).exists());

    let r = d.http("POST", "/containers/prune", None);
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["ContainersDeleted"], json!([db.id]));
    assert!(d
        .http("GET", "/containers/json?all=1", None)
        .json()
        .as_array()
        .unwrap()
        .is_empty());
}

#[test]
fn running_container_needs_force() {
    let mut d = Daemon::start();
    d.stop();
    let sleeper = Sleeper::start();
    let mut c = Seed::new('c', "busy", "running");
    c.pid = sleeper.pid();
    c.write(&d.data());
    // A "running" record whose process is gone is reconciled to exited at startup.
    let mut gone = Seed::new('d', "gone", "running");
    gone.pid = i64::from(i32::MAX);
    gone.write(&d.data());
    d.spawn();

    let v = d.http("GET", "/containers/gone/json", None).json();
    assert_eq!(v["State"]["Status"], "exited");
    let list = d.http("GET", "/containers/json", None).json();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert!(list[0]["Status"].as_str().unwrap().starts_with("Up "));
    assert_eq!(d.http("GET", "/info", None).json()["ContainersRunning"], 1);

    let r = d.http("DELETE", "/containers/busy", None);
    assert_eq!(r.status, 409);
    assert_eq!(
        r.message(),
        "cannot remove container \"/busy\": container is running: stop the container before removing or force remove"
    );
    let r = d.http("POST", "/containers/prune", None);
    assert_eq!(r.json()["ContainersDeleted"], json!([gone.id]));

    let r = d.http("DELETE", "/containers/busy?force=1", None);
    assert_eq!(r.status, 204, "{}", String::from_utf8_lossy(&r.body));
    let mut sleeper = sleeper;
    let status = sleeper.0.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );
}

#[test]
fn logs_selection_and_framing() {
    let mut d = Daemon::start();
    d.stop();
    let c = Seed::new('e', "talker", "exited");
    let log = c.write(&d.data());
    std::fs::write(
        format!("{}.1", log.display()),
        log_line("stdout", 1, "one\n"),
    )
    .unwrap();
    std::fs::write(
        &log,
        log_line("stderr", 2, "two\n") + &log_line("stdout", 3, "three\n"),
    )
    .unwrap();
    let mut t = Seed::new('f', "tty", "exited");
    t.tty = true;
    let tlog = t.write(&d.data());
    std::fs::write(&tlog, log_line("stdout", 1, "raw\n")).unwrap();
    d.spawn();

    let r = d.http("GET", "/containers/talker/logs?stdout=1&stderr=1", None);
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("Content-Type"),
        Some("application/vnd.docker.multiplexed-stream")
    );
    let mut expect = Vec::new();
    for (stream, text) in [(1u8, "one\n"), (2, "two\n"), (1, "three\n")] {
        expect.extend_from_slice(&[stream, 0, 0, 0, 0, 0, 0, text.len() as u8]);
        expect.extend_from_slice(text.as_bytes());
    }
    assert_eq!(r.body, expect);

    let r = d.http("GET", "/containers/talker/logs?stdout=1&tail=1", None);
    assert_eq!(r.body, b"\x01\x00\x00\x00\x00\x00\x00\x06three\n");
    let r = d.http("GET", "/containers/talker/logs?stderr=1&timestamps=1", None);
    assert_eq!(
        &r.body[8..],
        b"2024-01-01T00:00:02.000000001Z two\n".as_slice()
    );
    // since is inclusive, until too.
    let since = 1704067202; // 2024-01-01T00:00:02Z
    let r = d.http(
        "GET",
        &format!(
            "/containers/talker/logs?stdout=1&stderr=1&since={since}&until={}.5",
            since + 1
        ),
        None,
    );
    assert_eq!(r.body.len(), 8 + 4 + 8 + 6);

    let r = d.http("GET", "/containers/tty/logs?stdout=1", None);
    assert_eq!(
        r.header("Content-Type"),
        Some("application/vnd.docker.raw-stream")
    );
    assert_eq!(r.body, b"raw\n");

    let r = d.http("GET", "/containers/talker/logs", None);
    assert_eq!(r.status, 400);
    assert_eq!(
        r.message(),
        "Bad parameters: you must choose at least one stream"
    );
}

#[test]
fn events_replay_with_since_and_until() {
    let mut d = Daemon::start();
    d.stop();
    Seed::new('a', "first", "exited").write(&d.data());
    d.spawn();
    let start = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 1;
    assert_eq!(
        d.http("POST", "/containers/first/rename?name=second", None)
            .status,
        204
    );
    assert_eq!(d.http("DELETE", "/containers/second", None).status, 204);
    let until = start + 3600;
    let r = d.http(
        "GET",
        &format!("/events?since={start}&until={start}.5&filters=%7B%22type%22%3A%5B%22container%22%5D%7D"),
        None,
    );
    assert_eq!(r.status, 200);
    assert!(
        r.body.is_empty(),
        "nothing happened in the first half second"
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let r = d.http(
        "GET",
        &format!(
            "/events?since={start}&until={now:.3}&filters=%7B%22type%22%3A%5B%22container%22%5D%7D"
        ),
        None,
    );
    let events: Vec<serde_json::Value> = String::from_utf8(r.body)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let actions: Vec<_> = events
        .iter()
        .map(|e| e["Action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["rename", "destroy"]);
    assert_eq!(events[0]["Actor"]["Attributes"]["oldName"], "/first");
    assert_eq!(events[0]["Actor"]["Attributes"]["name"], "second");
    assert_eq!(events[1]["Type"], "container");
    assert_eq!(events[1]["status"], "destroy");
    let _ = until;

    let r = d.http(
        "GET",
        &format!(
            "/events?since={start}&until={now:.3}&filters=%7B%22event%22%3A%5B%22destroy%22%5D%7D"
        ),
        None,
    );
    assert_eq!(String::from_utf8(r.body).unwrap().lines().count(), 1);
}

#[test]
fn socket_is_private_and_stale_socket_is_replaced() {
    use std::os::unix::fs::PermissionsExt;
    let mut d = Daemon::start();
    let mode = std::fs::metadata(&d.sock).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o660);
    // A second daemon on the same socket is refused while the first listens.
    let second = std::process::Command::new(daemon_common::BERTH)
        .args(["daemon", "-H", &d.host(), "--data-root"])
        .arg(d.dir.path().join("data2"))
        .arg("--exec-root")
        .arg(d.dir.path().join("run2"))
        .arg("--config-file")
        .arg(d.dir.path().join("daemon.json"))
        .output()
        .unwrap();
    assert!(!second.status.success());
    assert!(String::from_utf8_lossy(&second.stderr).contains("already listening"));
    // A socket file left by a killed daemon is replaced.
    d.stop();
    let _stale = std::os::unix::net::UnixListener::bind(&d.sock).unwrap();
    drop(_stale);
    assert!(d.sock.exists());
    d.spawn();
    assert_eq!(d.http("GET", "/_ping", None).status, 200);
}

#[test]
fn tcp_requires_tls_or_explicit_insecure_flag() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("d.json"), "{}").unwrap();
    let out = std::process::Command::new(daemon_common::BERTH)
        .args(["daemon", "-H", "tcp://127.0.0.1:0", "--data-root"])
        .arg(dir.path().join("data"))
        .arg("--exec-root")
        .arg(dir.path().join("run"))
        .arg("--config-file")
        .arg(dir.path().join("d.json"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("without --tlsverify"));
    // Refused before it touched the host: no network namespace or other mount left behind.
    let root = dir.path().display().to_string();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let left: Vec<&str> = mounts.lines().filter(|l| l.contains(&root)).collect();
    daemon_common::unmount_under(dir.path());
    assert!(left.is_empty(), "left mounted: {left:?}");

    std::fs::write(dir.path().join("d.json"), r#"{"no-such-option": 1}"#).unwrap();
    let out = std::process::Command::new(daemon_common::BERTH)
        .args(["daemon", "--config-file"])
        .arg(dir.path().join("d.json"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("don't match any configuration option: no-such-option"));
}
