//! Container API behaviour that docker-py's integration suite checks: a SIGKILL `kill` returns
//! with the exit recorded (137), and `HostConfig.LogConfig` defaults and validation.

mod daemon_common;

use daemon_common::{import_busybox, Daemon};
use serde_json::Value;

fn have_busybox() -> bool {
    let ok = std::path::Path::new("/bin/busybox").exists()
        && std::path::Path::new(daemon_common::DOCKER).exists();
    if !ok {
        eprintln!("skipping: docker CLI or busybox-static missing");
    }
    ok
}

/// Creates a container from `body` and returns its id, asserting a 201.
fn create(d: &Daemon, body: &str) -> String {
    let r = d.http("POST", "/v1.47/containers/create", Some(body.as_bytes()));
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    r.json()["Id"].as_str().unwrap().to_string()
}

fn inspect(d: &Daemon, id: &str) -> Value {
    let r = d.http("GET", &format!("/v1.47/containers/{id}/json"), None);
    assert_eq!(r.status, 200);
    r.json()
}

#[test]
fn kill_returns_after_the_exit_is_recorded() {
    if !have_busybox() {
        return;
    }
    let d = Daemon::start();
    import_busybox(&d);
    let id = create(&d, r#"{"Image":"busybox","Cmd":["sleep","9999"]}"#);
    let r = d.http("POST", &format!("/v1.47/containers/{id}/start"), None);
    assert_eq!(r.status, 204, "{}", r.message());

    let r = d.http("POST", &format!("/v1.47/containers/{id}/kill"), None);
    assert_eq!(r.status, 204, "{}", r.message());
    // No wait in between: the kill itself waited for the exit.
    let state = &inspect(&d, &id)["State"];
    assert_eq!(state["Running"], false, "{state}");
    assert_eq!(state["ExitCode"], 137, "{state}");
    let r = d.http("DELETE", &format!("/v1.47/containers/{id}"), None);
    assert_eq!(r.status, 204, "{}", r.message());
}

#[test]
fn log_config_defaults_and_unknown_drivers() {
    if !have_busybox() {
        return;
    }
    let d = Daemon::start();
    import_busybox(&d);

    let id = create(&d, r#"{"Image":"busybox","Cmd":["true"]}"#);
    let lc = &inspect(&d, &id)["HostConfig"]["LogConfig"];
    assert_eq!(lc["Type"], "json-file");
    assert_eq!(lc["Config"], serde_json::json!({}));

    // An empty type is the default driver, with the options given.
    let id = create(
        &d,
        r#"{"Image":"busybox","Cmd":["true"],
            "HostConfig":{"LogConfig":{"Type":"","Config":{"max-file":"100"}}}}"#,
    );
    let lc = &inspect(&d, &id)["HostConfig"]["LogConfig"];
    assert_eq!(lc["Type"], "json-file");
    assert_eq!(lc["Config"], serde_json::json!({"max-file": "100"}));

    let id = create(
        &d,
        r#"{"Image":"busybox","Cmd":["true"],"HostConfig":{"LogConfig":{"Type":"none"}}}"#,
    );
    assert_eq!(inspect(&d, &id)["HostConfig"]["LogConfig"]["Type"], "none");

    let r = d.http(
        "POST",
        "/v1.47/containers/create",
        Some(br#"{"Image":"busybox","Cmd":["true"],"HostConfig":{"LogConfig":{"Type":"asdf"}}}"#),
    );
    assert_eq!(r.status, 400);
    assert_eq!(
        r.message(),
        "logger: no log driver named 'asdf' is registered"
    );
}

#[test]
fn restart_policy_keeps_an_exited_container_from_removal() {
    if !have_busybox() {
        return;
    }
    let d = Daemon::start();
    import_busybox(&d);
    let id = create(
        &d,
        r#"{"Image":"busybox","Cmd":["true"],
            "HostConfig":{"RestartPolicy":{"Name":"always","MaximumRetryCount":0}}}"#,
    );
    let rp = &inspect(&d, &id)["HostConfig"]["RestartPolicy"];
    assert_eq!(rp["Name"], "always", "{rp}");
    let r = d.http("POST", &format!("/v1.47/containers/{id}/start"), None);
    assert_eq!(r.status, 204, "{}", r.message());
    let r = d.http("POST", &format!("/v1.47/containers/{id}/wait"), None);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));

    // Restarting (or already running again): either way not removable without force.
    let r = d.http("DELETE", &format!("/v1.47/containers/{id}"), None);
    assert_eq!(r.status, 409, "{}", r.message());
    assert!(
        r.message().contains("stop the container before"),
        "{}",
        r.message()
    );
    let r = d.http("DELETE", &format!("/v1.47/containers/{id}?force=1"), None);
    assert_eq!(r.status, 204, "{}", r.message());
    let r = d.http("GET", &format!("/v1.47/containers/{id}/json"), None);
    assert_eq!(r.status, 404);
}
