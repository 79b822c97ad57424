//! Shared fixtures: unique names per test, namespace files and child processes that are
//! removed in `Drop` even when an assertion fails.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;

use berth_network::{netns, Config, NetworkManager};

/// A manager with its own state dir, nftables table and interface prefixes.
pub struct Env {
    pub mgr: Arc<NetworkManager>,
    pub tag: String,
    _dir: tempfile::TempDir,
    netns: Vec<PathBuf>,
    children: Vec<Child>,
}

impl Env {
    /// `n` distinguishes tests of one binary; names stay within 15 bytes.
    pub fn new(n: u32) -> Self {
        Self::build(n, false)
    }

    /// With pooled namespaces (`Config::pool_dir`) and the pool's worker running.
    pub fn with_pool(n: u32) -> Self {
        Self::build(n, true)
    }

    fn build(n: u32, pool: bool) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let tag = format!("{}{n}", std::process::id() % 10000);
        let mut cfg = Config::new(dir.path());
        cfg.table = format!("berth_t{tag}");
        cfg.veth_prefix = format!("bv{tag}x");
        cfg.bridge_prefix = format!("bb{tag}x");
        cfg.default_bridge = format!("bd{tag}");
        if pool {
            cfg.pool_dir = Some(PathBuf::from(format!("/run/berth-test-netns/{tag}-pool")));
        }
        let mgr = Arc::new(NetworkManager::open(cfg).expect("open manager"));
        if pool {
            mgr.start_pool();
        }
        Env {
            mgr,
            tag,
            _dir: dir,
            netns: Vec::new(),
            children: Vec::new(),
        }
    }

    pub fn bridge(&self, s: &str) -> String {
        format!("bb{}x{s}", self.tag)
    }

    pub fn netns(&mut self, s: &str) -> PathBuf {
        let p = PathBuf::from(format!("/run/berth-test-netns/{}-{s}", self.tag));
        netns::create(&p).expect("create netns");
        self.netns.push(p.clone());
        p
    }

    /// A namespace path for `connect` with `new_netns` to create; removed at drop.
    pub fn netns_path(&mut self, s: &str) -> PathBuf {
        let p = PathBuf::from(format!("/run/berth-test-netns/{}-{s}", self.tag));
        self.netns.push(p.clone());
        p
    }

    pub fn spawn_in(&mut self, ns: &Path, args: &[&str]) {
        let child = Command::new("nsenter")
            .arg(format!("--net={}", ns.display()))
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn in netns");
        self.children.push(child);
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Err(e) = self.mgr.remove_all() {
            eprintln!("cleanup: {e}");
        }
        for p in &self.netns {
            let _ = netns::remove(p);
        }
        if let Some(dir) = &self.mgr.config().pool_dir {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// Runs a command inside `ns`.
pub fn run_in(ns: &Path, args: &[&str]) -> Output {
    Command::new("nsenter")
        .arg(format!("--net={}", ns.display()))
        .args(args)
        .output()
        .expect("nsenter")
}

pub fn ok_in(ns: &Path, args: &[&str]) -> String {
    let out = run_in(ns, args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Retries `f` until it returns true (readiness of a just-spawned server), up to ~10 s.
pub fn eventually(mut f: impl FnMut() -> bool) -> bool {
    for _ in 0..100 {
        if f() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    false
}
