//! Registry interoperability end to end, with real daemons, registries and clients:
//!
//! - a Berth daemon pushes to Debian's `docker-registry` (CNCF distribution) and a second
//!   daemon with a fresh data root pulls the image back;
//! - skopeo copies that image into `berth registry serve` and out of it again;
//! - the manifest digest is the same in every registry, daemon and copy;
//! - bearer-token auth: `berth registry serve` with token auth, `berth login` (bad password
//!   refused with dockerd's message, good one stored 0600), push and pull through the daemon,
//!   the same with the docker CLI, and `berth logout`.
//!
//! Skips (with the reason printed) when `docker-registry` or skopeo is absent; CI installs
//! both (scripts/install-deps.sh).

mod daemon_common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use daemon_common::{import_busybox, ok, Daemon, BERTH, DOCKER};

const DOCKER_REGISTRY: &str = "/usr/bin/docker-registry";

/// A registry process killed on drop; its temporary root goes with it.
struct Registry {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free loopback port (bound, read, released: the registry binds it right after).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("find a free port")
}

impl Registry {
    /// Debian's docker-registry (distribution 2.8) with a private config and root.
    fn distribution() -> Option<Registry> {
        if !Path::new(DOCKER_REGISTRY).exists() {
            eprintln!(
                "skipping: {DOCKER_REGISTRY} is not installed (apt-get install docker-registry)"
            );
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let addr = format!("127.0.0.1:{}", free_port());
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
                dir.path().join("data").display()
            ),
        )
        .expect("write registry config");
        let log = std::fs::File::create(dir.path().join("registry.log")).expect("log file");
        let child = Command::new(DOCKER_REGISTRY)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("spawn docker-registry");
        let r = Registry {
            child,
            addr,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(&r.addr).is_err() {
            assert!(Instant::now() < deadline, "docker-registry did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(r)
    }

    /// `berth registry serve` on an ephemeral port, with `config` as its `--config` if any.
    fn berth(config: Option<serde_json::Value>) -> Registry {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cmd = Command::new(BERTH);
        cmd.args(["registry", "serve", "--addr", "127.0.0.1:0", "--root"])
            .arg(dir.path().join("root"));
        if let Some(c) = config {
            let path = dir.path().join("config.json");
            std::fs::write(&path, c.to_string()).expect("write config");
            cmd.arg("--config").arg(path);
        }
        let mut child = cmd
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn berth registry serve");
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let addr = loop {
            match lines.next() {
                Some(Ok(l)) => {
                    if let Some(a) = l.strip_prefix("berth registry listening on ") {
                        break a.trim().to_string();
                    }
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("berth registry exited before listening");
                }
            }
        };
        // Keep draining so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Registry {
            child,
            addr,
            _dir: dir,
        }
    }
}

fn have_skopeo() -> bool {
    let found = Command::new("skopeo").arg("--version").output().is_ok();
    if !found {
        eprintln!("skipping: skopeo is not installed");
    }
    found
}

/// A client environment: the berth and docker CLIs against one daemon, with a private
/// docker config directory (logins).
struct Cli<'a> {
    daemon: &'a Daemon,
    config: PathBuf,
}

impl<'a> Cli<'a> {
    fn new(daemon: &'a Daemon, config: &Path) -> Cli<'a> {
        Cli {
            daemon,
            config: config.to_path_buf(),
        }
    }

    fn run(&self, program: &str, args: &[&str], stdin: Option<&str>) -> Output {
        let mut child = Command::new(program)
            .args(args)
            .env("BERTH_HOST", self.daemon.host())
            .env("DOCKER_HOST", self.daemon.host())
            .env("DOCKER_CONFIG", &self.config)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn client");
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(text.as_bytes()).expect("write stdin");
        }
        child.wait_with_output().expect("wait for client")
    }

    fn berth(&self, args: &[&str]) -> Output {
        self.run(BERTH, args, None)
    }

    fn berth_stdin(&self, args: &[&str], stdin: &str) -> Output {
        self.run(BERTH, args, Some(stdin))
    }

    fn docker_stdin(&self, args: &[&str], stdin: &str) -> Output {
        self.run(DOCKER, args, Some(stdin))
    }

    fn docker(&self, args: &[&str]) -> Output {
        self.run(DOCKER, args, None)
    }

    /// The `RepoDigests` entry of `image` for repository `repo`: its manifest digest.
    fn repo_digest(&self, image: &str, repo: &str) -> String {
        let out = ok(self.berth(&["image", "inspect", image]));
        let v: serde_json::Value = serde_json::from_str(&out).expect("inspect json");
        let digests = v[0]["RepoDigests"].as_array().cloned().unwrap_or_default();
        digests
            .iter()
            .filter_map(|d| d.as_str())
            .find_map(|d| d.strip_prefix(&format!("{repo}@")).map(str::to_string))
            .unwrap_or_else(|| panic!("no RepoDigest for {repo} in {digests:?}"))
    }

    fn layers(&self, image: &str) -> serde_json::Value {
        let out = ok(self.berth(&["image", "inspect", image]));
        let v: serde_json::Value = serde_json::from_str(&out).expect("inspect json");
        v[0]["RootFS"]["Layers"].clone()
    }
}

/// The manifest digest a registry serves for `reference` (via skopeo).
fn registry_digest(reference: &str) -> String {
    let out = ok(Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", "--format", "{{.Digest}}"])
        .arg(format!("docker://{reference}"))
        .output()
        .expect("skopeo inspect"));
    out.trim().to_string()
}

fn skopeo(args: &[&str]) {
    ok(Command::new("skopeo")
        .args(args)
        .output()
        .expect("run skopeo"));
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The digest in a push's `TAG: digest: sha256:… size: N` line.
fn pushed_digest(push_output: &str, tag: &str) -> String {
    push_output
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{tag}: digest: ")))
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("no digest line in push output: {push_output}"))
        .to_string()
}

#[test]
fn push_pull_through_distribution_and_skopeo_through_berth_registry() {
    let Some(dist) = Registry::distribution() else {
        return;
    };
    if !have_skopeo() {
        return;
    }
    let config = tempfile::tempdir().expect("tempdir");
    let src = Daemon::start_with(&["--bridge", "none"]);
    let a = Cli::new(&src, config.path());
    import_busybox(&src);
    let repo = format!("{}/interop/busybox", dist.addr);
    let image = format!("{repo}:v1");
    ok(a.berth(&["tag", "busybox:latest", &image]));

    // The daemon pushes to CNCF distribution.
    let out = ok(a.berth(&["push", &image]));
    assert!(
        out.starts_with(&format!("The push refers to repository [{repo}]")),
        "{out}"
    );
    assert!(out.contains(": Pushed"), "{out}");
    let digest = pushed_digest(&out, "v1");
    assert_eq!(registry_digest(&image), digest);
    assert_eq!(a.repo_digest(&image, &repo), digest);
    // Again: every layer is already there.
    let again = ok(a.berth(&["push", &image]));
    assert!(again.contains(": Layer already exists"), "{again}");
    assert_eq!(pushed_digest(&again, "v1"), digest);
    // `push -q` prints only the reference.
    assert_eq!(ok(a.berth(&["push", "-q", &image])).trim(), image);

    // A daemon with a fresh data root pulls it back: same manifest, same layers.
    let dst = Daemon::start_with(&["--bridge", "none"]);
    let b = Cli::new(&dst, config.path());
    let out = ok(b.berth(&["pull", &image]));
    assert!(out.contains(&format!("Digest: {digest}")), "{out}");
    assert!(out.trim_end().ends_with(&image), "{out}");
    assert_eq!(b.repo_digest(&image, &repo), digest);
    assert_eq!(b.layers(&image), a.layers(&image));
    let run = ok(b.berth(&["run", "--rm", "--network", "none", &image, "echo", "pulled"]));
    assert_eq!(run.trim(), "pulled");

    // skopeo copies it into berth's registry and out again, digests untouched.
    let berth_reg = Registry::berth(None);
    let berth_image = format!("{}/interop/busybox:v1", berth_reg.addr);
    skopeo(&[
        "copy",
        // As a registry-to-registry copy must: by default skopeo would gzip the layers.
        "--preserve-digests",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        &format!("docker://{image}"),
        &format!("docker://{berth_image}"),
    ]);
    assert_eq!(registry_digest(&berth_image), digest);
    let layout = tempfile::tempdir().expect("tempdir");
    let oci = format!("oci:{}:v1", layout.path().display());
    skopeo(&[
        "copy",
        "--preserve-digests",
        "--src-tls-verify=false",
        &format!("docker://{berth_image}"),
        &oci,
    ]);
    let index: serde_json::Value = serde_json::from_slice(
        &std::fs::read(layout.path().join("index.json")).expect("read oci index"),
    )
    .expect("oci index json");
    assert_eq!(index["manifests"][0]["digest"], digest.as_str());

    // And the daemon pulls the same image from berth's registry.
    let out = ok(b.berth(&["pull", &berth_image]));
    assert!(out.contains(&format!("Digest: {digest}")), "{out}");
    let berth_repo = format!("{}/interop/busybox", berth_reg.addr);
    assert_eq!(b.repo_digest(&berth_image, &berth_repo), digest);

    // Distribution inspect through the daemon agrees too.
    let r = dst.http("GET", &format!("/distribution/{berth_image}/json"), None);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(v["Descriptor"]["digest"], digest.as_str());
    assert_eq!(v["Platforms"][0]["os"], "linux");

    // An unknown tag fails before anything streamed: a plain 404, as from dockerd.
    let r = dst.http(
        "POST",
        &format!("/images/create?fromImage={repo}&tag=nope"),
        None,
    );
    assert_eq!(r.status, 404, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        r.message(),
        format!("manifest for {repo}:nope not found: manifest unknown")
    );
    let out = b.berth(&["pull", &format!("{repo}:nope")]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out).trim(),
        format!("Error response from daemon: manifest for {repo}:nope not found: manifest unknown")
    );

    // Pushing a tag that does not exist locally is dockerd's 404.
    let r = src.http(
        "POST",
        &format!("/images/{}/interop/none/push?tag=v1", dist.addr),
        None,
    );
    assert_eq!(r.status, 404);
    assert_eq!(
        r.message(),
        format!(
            "An image does not exist locally with the tag: {}/interop/none",
            dist.addr
        )
    );
}

fn htpasswd_file(dir: &Path, user: &str, password: &str) -> PathBuf {
    let mut child = Command::new(BERTH)
        .args(["registry", "htpasswd", user])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn htpasswd");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("{password}\n").as_bytes())
        .expect("write password");
    let out = ok(child.wait_with_output().expect("htpasswd"));
    let path = dir.join("htpasswd");
    std::fs::write(&path, out).expect("write htpasswd");
    path
}

#[test]
fn bearer_token_login_push_pull_logout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let htpasswd = htpasswd_file(dir.path(), "alice", "s3cret");
    let reg = Registry::berth(Some(serde_json::json!({
        "auth": {"htpasswd": htpasswd, "scheme": "bearer"}
    })));
    let config = dir.path().join("docker-config");
    let d = Daemon::start_with(&["--bridge", "none"]);
    let c = Cli::new(&d, &config);
    import_busybox(&d);
    let repo = format!("{}/secure/busybox", reg.addr);
    let image = format!("{repo}:v1");
    ok(c.berth(&["tag", "busybox:latest", &image]));

    // Anonymous push: refused.
    let out = c.berth(&["push", &image]);
    assert!(!out.status.success(), "anonymous push succeeded");
    assert!(stderr(&out).contains("unauthorized"), "{}", stderr(&out));

    // Bad password: dockerd's 401 message, nothing stored.
    let out = c.berth_stdin(
        &["login", "-u", "alice", "--password-stdin", &reg.addr],
        "wrong\n",
    );
    assert!(!out.status.success());
    assert_eq!(
        stderr(&out).trim(),
        format!(
            "Error response from daemon: login attempt to http://{}/v2/ failed with status: 401 Unauthorized",
            reg.addr
        )
    );
    assert!(!config.join("config.json").exists());
    let r = d.http(
        "POST",
        "/auth",
        Some(
            serde_json::json!({"username": "alice", "password": "nope", "serveraddress": reg.addr})
                .to_string()
                .as_bytes(),
        ),
    );
    assert_eq!(r.status, 401);

    // Good password: stored where the docker CLI keeps it, private.
    let out = c.berth_stdin(
        &["login", "-u", "alice", "--password-stdin", &reg.addr],
        "s3cret\n",
    );
    assert_eq!(stdout(&out).trim(), "Login Succeeded", "{}", stderr(&out));
    let file = config.join("config.json");
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&file).expect("read config")).expect("config json");
    assert_eq!(v["auths"][reg.addr.as_str()]["auth"], "YWxpY2U6czNjcmV0"); // alice:s3cret
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&file)
        .expect("stat config")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    // Push and pull through the daemon with the stored credentials.
    let out = ok(c.berth(&["push", &image]));
    let digest = pushed_digest(&out, "v1");
    ok(c.berth(&["rmi", &image]));
    let out = ok(c.berth(&["pull", &image]));
    assert!(out.contains(&format!("Digest: {digest}")), "{out}");
    assert_eq!(c.repo_digest(&image, &repo), digest);

    // The docker CLI logs in and pushes through the same daemon.
    let out = c.docker_stdin(
        &["login", "-u", "alice", "--password-stdin", &reg.addr],
        "s3cret\n",
    );
    assert!(
        stdout(&out).contains("Login Succeeded"),
        "{} {}",
        stdout(&out),
        stderr(&out)
    );
    let tag2 = format!("{repo}:v2");
    ok(c.berth(&["tag", &image, &tag2]));
    let out = ok(c.docker(&["push", &tag2]));
    assert_eq!(pushed_digest(&out, "v2"), digest);
    let bad = c.docker_stdin(
        &["login", "-u", "alice", "--password-stdin", &reg.addr],
        "wrong\n",
    );
    assert!(!bad.status.success());
    assert!(
        stderr(&bad).contains("401 Unauthorized"),
        "{}",
        stderr(&bad)
    );

    // Logged out: the registry refuses again.
    let out = ok(c.berth(&["logout", &reg.addr]));
    assert_eq!(
        out.trim(),
        format!("Removing login credentials for {}", reg.addr)
    );
    ok(c.berth(&["rmi", &image, &tag2]));
    let out = c.berth(&["pull", &image]);
    assert!(!out.status.success(), "pull after logout succeeded");
    assert!(stderr(&out).contains("unauthorized"), "{}", stderr(&out));
    let r = d.http(
        "POST",
        &format!("/images/create?fromImage={repo}&tag=v1"),
        None,
    );
    assert_eq!(r.status, 401, "{}", String::from_utf8_lossy(&r.body));
}
