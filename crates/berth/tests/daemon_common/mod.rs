//! Shared harness for the daemon and CLI integration tests: a real `berth daemon` on a private
//! socket and data root, killed by a Drop guard, plus a minimal HTTP/1.1 client over the
//! socket and helpers that seed container records the way the daemon writes them.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub const BERTH: &str = env!("CARGO_BIN_EXE_berth");
pub const DOCKER: &str = "/usr/local/bin/docker";

/// A running daemon and its private directories.
pub struct Daemon {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub sock: PathBuf,
    /// This daemon's `--network-instance`, held for its lifetime (see [`NetInstance`]).
    pub net: NetInstance,
    /// More `berth daemon` flags, passed at every spawn.
    pub args: Vec<String>,
}

/// A `--network-instance` tag unique on the host while this value lives: test daemons run
/// in parallel (and test processes too), and each must own its bridges, veths and nftables
/// table. Uniqueness across processes comes from an exclusive lock on a per-tag file; drop
/// removes whatever host objects the tag's daemon left behind.
pub struct NetInstance {
    pub tag: String,
    _lock: std::fs::File,
}

impl NetInstance {
    pub fn acquire() -> Self {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        const SPACE: u32 = 36 * 36 * 36;
        let dir = Path::new("/run/berth-test-instances");
        std::fs::create_dir_all(dir).expect("create instance lock dir");
        // Start where this process is unlikely to meet another one, then probe.
        let base = std::process::id().wrapping_mul(97);
        for _ in 0..SPACE {
            let n = base.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed)) % SPACE;
            let tag = base36(n);
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(dir.join(&tag))
                .expect("open instance lock");
            if file.try_lock().is_ok() {
                let inst = NetInstance { tag, _lock: file };
                // Left by a killed test run that held this tag before.
                inst.cleanup();
                return inst;
            }
        }
        panic!("no free network instance tag");
    }

    pub fn default_bridge(&self) -> String {
        format!("berth-{}", self.tag)
    }

    /// The bridge this instance's daemon generates for network `id`.
    pub fn bridge_of(&self, id: &str) -> String {
        let prefix = format!("bb{}-", self.tag);
        let hex = (15 - prefix.len()).min(12);
        format!("{prefix}{}", &id[..hex])
    }

    pub fn table(&self) -> String {
        format!("berth-{}", self.tag)
    }

    /// Links on the host carrying this instance's names.
    pub fn links(&self) -> Vec<String> {
        let veth = format!("bv{}-", self.tag);
        let bridge = format!("bb{}-", self.tag);
        let out = Command::new("ip").args(["-o", "link", "show"]).output();
        let text = out
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        text.lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_string())
            .filter(|n| {
                n.starts_with(&veth) || n.starts_with(&bridge) || *n == self.default_bridge()
            })
            .collect()
    }

    pub fn has_table(&self) -> bool {
        Command::new("nft")
            .args(["list", "table", "ip", &self.table()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    fn cleanup(&self) {
        // Deleting one end of a veth pair deletes the other, listed too: quiet about those.
        for link in self.links() {
            let _ = Command::new("ip")
                .args(["link", "del", &link])
                .stderr(Stdio::null())
                .status();
        }
        // The ip6 table exists only while the daemon had an IPv6 network.
        for family in ["ip", "ip6"] {
            let _ = Command::new("nft")
                .args(["delete", "table", family, &self.table()])
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Drop for NetInstance {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// Removes, when dropped, every container of the daemon at `host` and the networks named,
/// through the docker CLI, so a test that fails half-way leaves nothing behind. It holds the
/// daemon's address rather than the daemon, so a test may stop and restart it meanwhile.
pub struct Cleanup {
    host: String,
    networks: Vec<String>,
}

impl Cleanup {
    pub fn new(d: &Daemon, networks: &[&str]) -> Self {
        Cleanup {
            host: d.host(),
            networks: networks.iter().map(|n| n.to_string()).collect(),
        }
    }

    fn docker(&self, args: &[&str]) -> Option<Output> {
        Command::new(DOCKER)
            .arg("-H")
            .arg(&self.host)
            .args(args)
            .output()
            .ok()
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(ids) = self.docker(&["ps", "-aq"]) {
            for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
                let _ = self.docker(&["rm", "-f", id]);
            }
        }
        for n in &self.networks {
            let _ = self.docker(&["network", "rm", n]);
        }
    }
}

fn base36(mut n: u32) -> String {
    let digits = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(digits[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

impl Daemon {
    /// Starts a daemon on `<tmp>/s.sock` with `<tmp>/data` and `<tmp>/run`.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// [`Daemon::start`] with more daemon flags.
    pub fn start_with(args: &[&str]) -> Self {
        let dir = tempfile::Builder::new()
            // Short: unix socket paths under it must stay below 108 bytes.
            .prefix("bd")
            .tempdir()
            .expect("create temp dir");
        std::fs::create_dir_all(dir.path().join("data")).unwrap();
        let mut d = Daemon {
            child: None,
            sock: dir.path().join("s.sock"),
            dir,
            net: NetInstance::acquire(),
            args: args.iter().map(|a| a.to_string()).collect(),
        };
        d.spawn();
        d
    }

    /// Starts (again) on the same directories.
    pub fn spawn(&mut self) {
        std::fs::write(self.dir.path().join("daemon.json"), "{}").unwrap();
        let log = std::fs::File::create(self.dir.path().join("daemon.log")).unwrap();
        let child = Command::new(BERTH)
            .arg("daemon")
            .arg("-H")
            .arg(format!("unix://{}", self.sock.display()))
            .arg("--data-root")
            .arg(self.data())
            .arg("--exec-root")
            .arg(self.dir.path().join("run"))
            .arg("--config-file")
            .arg(self.dir.path().join("daemon.json"))
            .arg("--network-instance")
            .arg(&self.net.tag)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn berth daemon");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while UnixStream::connect(&self.sock).is_err() {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("daemon exited early ({status}): {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "daemon did not listen: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the daemon with SIGTERM and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Kills the daemon with SIGKILL (a crash: no shutdown code runs) and reaps it.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    pub fn host(&self) -> String {
        format!("unix://{}", self.sock.display())
    }

    /// Runs the real docker CLI against this daemon.
    pub fn docker(&self, args: &[&str]) -> Output {
        Command::new(DOCKER)
            .args(args)
            .env("DOCKER_HOST", self.host())
            .env("DOCKER_CONFIG", self.dir.path().join("docker-config"))
            .stdin(Stdio::null())
            .output()
            .expect("run docker")
    }

    /// Runs the berth CLI against this daemon.
    pub fn berth(&self, args: &[&str]) -> Output {
        Command::new(BERTH)
            .args(args)
            .env("BERTH_HOST", self.host())
            .env_remove("DOCKER_HOST")
            .stdin(Stdio::null())
            .output()
            .expect("run berth")
    }

    /// Sends one HTTP request over the socket and returns (status, headers, body).
    pub fn http(&self, method: &str, path: &str, body: Option<&[u8]>) -> Response {
        http(&self.sock, method, path, body)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // Containers outlive the daemon (their monitors are detached), so remove them through
        // the API first, then kill whatever is left and unmount what the image store mounted.
        let mut ids = Vec::new();
        if self.child.is_some() {
            if let Ok(list) =
                std::panic::catch_unwind(|| self.http("GET", "/containers/json?all=1", None).json())
            {
                for c in list.as_array().into_iter().flatten() {
                    if let Some(id) = c["Id"].as_str() {
                        ids.push(id.to_owned());
                        let _ = std::panic::catch_unwind(|| {
                            self.http("DELETE", &format!("/containers/{id}?force=1"), None)
                        });
                    }
                }
            }
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let run = self.dir.path().join("run").join("containers");
        for entry in std::fs::read_dir(&run).into_iter().flatten().flatten() {
            for file in ["container.pid", "monitor.pid"] {
                let pid = std::fs::read_to_string(entry.path().join(file))
                    .ok()
                    .and_then(|p| p.trim().parse::<i32>().ok());
                if let Some(pid) = pid.filter(|&p| p > 1) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
        remove_left_cgroups(&self.dir.path().join("run").join("runtime"), &ids);
        unmount_under(self.dir.path());
    }
}

/// Removes the (empty) cgroups this daemon's containers may have left: those whose runtime
/// state is still under `runtime_root` (the daemon deletes a removed container's state and
/// cgroups a few milliseconds after the removal answered, and the kill above may come first)
/// and those of the containers it listed last, at the default parent.
fn remove_left_cgroups(runtime_root: &Path, ids: &[String]) {
    let mut cgroups: Vec<String> = ids.iter().map(|id| format!("berth/{id}")).collect();
    for entry in std::fs::read_dir(runtime_root)
        .into_iter()
        .flatten()
        .flatten()
    {
        let cgroup = std::fs::read(entry.path().join("youki_config.json"))
            .ok()
            .and_then(|text| serde_json::from_slice::<serde_json::Value>(&text).ok())
            .and_then(|v| v["cgroup_path"].as_str().map(str::to_owned));
        cgroups.extend(cgroup.map(|c| c.trim_start_matches('/').to_owned()));
    }
    for cgroup in cgroups.iter().filter(|c| c.contains('/')) {
        for hierarchy in std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
        {
            let _ = std::fs::remove_dir(hierarchy.path().join(cgroup));
        }
    }
}

/// Detaches every mount below `root` (rootfs overlays, pooled network namespaces), innermost
/// first: what a daemon killed without a clean stop leaves mounted.
pub fn unmount_under(root: &Path) {
    let root = root.display().to_string();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut targets: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&root))
        .collect();
    targets.reverse();
    for t in targets {
        let _ = nix::mount::umount2(t, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// A root filesystem tarball with a static busybox and a symlink per applet.
pub fn busybox_tar(dir: &Path) -> PathBuf {
    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    let list = Command::new("/bin/busybox").arg("--list").output().unwrap();
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let link = rootfs.join("bin").join(applet);
        if !link.exists() {
            std::os::unix::fs::symlink("busybox", link).unwrap();
        }
    }
    let tar = dir.join("rootfs.tar");
    let status = Command::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::remove_dir_all(&rootfs).unwrap();
    tar
}

/// Imports the busybox rootfs as `busybox:latest` through the docker CLI.
pub fn import_busybox(d: &Daemon) -> String {
    let tar = busybox_tar(d.dir.path());
    let out = d.docker(&[
        "import",
        "-c",
        r#"CMD ["sh"]"#,
        "-c",
        "ENV PATH=/bin",
        tar.to_str().unwrap(),
        "busybox:latest",
    ]);
    ok(out).trim().to_string()
}

/// A parsed HTTP response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn message(&self) -> String {
        self.json()["message"].as_str().unwrap_or("").to_string()
    }
}

/// A minimal HTTP/1.1 client: one request per connection, `Connection: close`, chunked
/// bodies decoded.
pub fn http(sock: &Path, method: &str, path: &str, body: Option<&[u8]>) -> Response {
    let mut s = UnixStream::connect(sock).expect("connect to daemon");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let body = body.unwrap_or(b"");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: berth\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    // The daemon may answer (413) before reading a huge body; a broken pipe is fine then.
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("response has a header section");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        body = dechunk(&body);
    }
    Response {
        status,
        headers,
        body,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(nl) = data.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size = usize::from_str_radix(std::str::from_utf8(&data[..nl]).unwrap().trim(), 16)
            .expect("chunk size");
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[nl + 2..nl + 2 + size]);
        data = &data[nl + 2 + size + 2..];
    }
}

/// What a seeded container record looks like.
pub struct Seed<'a> {
    pub id: String,
    pub name: &'a str,
    pub status: &'a str,
    pub exit_code: i64,
    pub pid: i64,
    pub labels: Value,
    pub tty: bool,
    /// Creation time, seconds after 2024-01-01T00:00:00Z (orders the records).
    pub created_offset: u32,
}

impl<'a> Seed<'a> {
    pub fn new(id_char: char, name: &'a str, status: &'a str) -> Self {
        Seed {
            id: id_char.to_string().repeat(64),
            name,
            status,
            exit_code: 0,
            pid: 0,
            labels: json!({}),
            tty: false,
            created_offset: 0,
        }
    }

    /// Writes `<data>/containers/<id>/config.v2.json`; returns the log path.
    pub fn write(&self, data: &Path) -> PathBuf {
        let dir = data.join("containers").join(&self.id);
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join(format!("{}-json.log", self.id));
        let secs = self.created_offset;
        let created = format!(
            "2024-01-01T{:02}:{:02}:{:02}.000000000Z",
            secs / 3600,
            (secs / 60) % 60,
            secs % 60
        );
        let running = self.status == "running";
        let record = json!({
            "ID": self.id,
            "Created": created,
            "Path": "sh",
            "Args": ["-c", "echo hello; sleep 1000"],
            "Config": {
                "Image": "busybox",
                "Cmd": ["sh", "-c", "echo hello; sleep 1000"],
                "Labels": self.labels,
                "Tty": self.tty,
                "Env": ["PATH=/bin"],
            },
            "HostConfig": {"NetworkMode": "bridge", "LogConfig": {"Type": "json-file", "Config": {}}},
            "State": {
                "Status": self.status,
                "Running": running,
                "Paused": false,
                "Restarting": false,
                "OOMKilled": false,
                "Dead": false,
                "Pid": self.pid,
                "ExitCode": self.exit_code,
                "Error": "",
                "StartedAt": if self.status == "created" { "0001-01-01T00:00:00Z".to_string() } else { created.clone() },
                "FinishedAt": if self.status == "exited" { created.clone() } else { "0001-01-01T00:00:00Z".to_string() },
            },
            "Image": format!("sha256:{}", "ab".repeat(32)),
            "Name": format!("/{}", self.name),
            "Driver": "overlay2",
            "LogPath": log,
            "RestartCount": 0,
        });
        std::fs::write(dir.join("config.v2.json"), record.to_string()).unwrap();
        log
    }
}

/// One json-file log line.
pub fn log_line(stream: &str, second: u32, text: &str) -> String {
    format!(
        "{}\n",
        json!({"log": text, "stream": stream, "time": format!("2024-01-01T00:00:{second:02}.000000001Z")})
    )
}

/// Text output of a command, asserting that it succeeded.
pub fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "command failed ({}): stdout={} stderr={}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A `sleep` process standing in for a container's init process; killed on drop.
pub struct Sleeper(pub Child);

impl Sleeper {
    pub fn start() -> Self {
        Sleeper(
            Command::new("sleep")
                .arg("1000")
                .spawn()
                .expect("spawn sleep"),
        )
    }

    pub fn pid(&self) -> i64 {
        i64::from(self.0.id())
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
