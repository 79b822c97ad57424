//! Credential helpers from the Docker config (`credHelpers`, `credsStore`). Its own test
//! binary because it puts a fake `docker-credential-*` program first on PATH.

use std::os::unix::fs::PermissionsExt;

use berth_distribution::{resolve_credentials, Credentials, DockerConfig};

#[test]
fn helpers_answer_before_auths() {
    let dir = tempfile::tempdir().unwrap();
    let helper = dir.path().join("docker-credential-fake");
    std::fs::write(
        &helper,
        "#!/bin/sh\nread server\ncase \"$server\" in\n\
         reg.example:5000) echo '{\"ServerURL\":\"x\",\"Username\":\"hal\",\"Secret\":\"pw\"}' ;;\n\
         https://index.docker.io/v1/) echo '{\"Username\":\"<token>\",\"Secret\":\"refresh\"}' ;;\n\
         *) echo 'credentials not found in native keychain'; exit 1 ;;\nesac\n",
    )
    .unwrap();
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        dir.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // This binary has a single test, so nothing else reads PATH concurrently.
    std::env::set_var("PATH", path);

    let conf = dir.path().join("config.json");
    std::fs::write(
        &conf,
        r#"{"auths":{"other:1":{"auth":"YTpi"}},"credsStore":"fake"}"#,
    )
    .unwrap();
    let cfg = DockerConfig::load(&conf).unwrap();
    assert_eq!(
        cfg.lookup("reg.example:5000").unwrap(),
        Some(Credentials::basic("hal", "pw"))
    );
    let hub = cfg.lookup("docker.io").unwrap().unwrap();
    assert_eq!(hub.identity_token.as_deref(), Some("refresh"));
    // Not in the helper: falls back to auths.
    assert_eq!(
        resolve_credentials("other:1/x", None, &cfg).unwrap(),
        Some(Credentials::basic("a", "b"))
    );
    assert_eq!(cfg.lookup("nowhere:1").unwrap(), None);

    // A per-registry helper that does not exist is a clear error.
    std::fs::write(&conf, r#"{"credHelpers":{"gone:1":"missing"}}"#).unwrap();
    let err = DockerConfig::load(&conf)
        .unwrap()
        .lookup("gone:1")
        .unwrap_err();
    assert!(
        err.to_string().contains("docker-credential-missing"),
        "{err}"
    );
}
