//! `docker pull` through the daemon from an in-process berth registry: the daemon's server
//! runs in this test's runtime, the image is pushed with the distribution client, and the real
//! docker CLI pulls it.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

const DOCKER: &str = "/usr/local/bin/docker";

fn docker(host: &str, home: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(DOCKER)
        .args(args)
        .env("DOCKER_HOST", host)
        .env("DOCKER_CONFIG", home.join("docker-config"))
        .output()
        .expect("run docker")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_pull_from_a_local_registry() {
    if !std::path::Path::new(DOCKER).exists() {
        eprintln!("skipping: {DOCKER} is not installed");
        return;
    }
    let dir = tempfile::Builder::new().prefix("bp").tempdir().unwrap();
    let _unmount = UnmountBelow(dir.path().to_path_buf());

    // A registry on 127.0.0.1 (always insecure, as in Docker).
    let registry_root = dir.path().join("registry");
    let registry = Arc::new(berth_registry::server::Registry {
        store: berth_registry::storage::Store::open(&registry_root).unwrap(),
        read_only: false,
        auth: None,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let registry_task = tokio::spawn(async move {
        // Runs until the test aborts the task.
        berth_registry::server::serve(listener, registry, None, std::future::pending()).await;
    });

    // An image pushed there from a scratch store.
    let source = berth_image::Store::open(dir.path().join("source")).unwrap();
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(6);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_cksum();
    tar.append_data(&mut header, "hello.txt", &b"hello\n"[..])
        .unwrap();
    let reference = format!("{addr}/small:1");
    source
        .import(
            &tar.into_inner().unwrap()[..],
            &berth_image::ImportOptions {
                reference: Some(reference.clone()),
                ..Default::default()
            },
        )
        .unwrap();
    let client = berth_distribution::Client::new(Default::default()).unwrap();
    client
        .push(
            &source,
            &reference,
            &Default::default(),
            berth_distribution::no_progress(),
        )
        .await
        .unwrap();

    // The daemon, in this runtime.
    let sock = dir.path().join("s.sock");
    // Its own network instance, no default bridge: it must not reconcile (delete) the links
    // of other daemons on this host. The guard drops its nftables table.
    let net = NetTable(format!("p{:02}", std::process::id() % 100));
    let config = berth_daemon::Config {
        hosts: vec![berth_daemon::config::Host::Unix(sock.clone())],
        data_root: dir.path().join("data"),
        exec_root: dir.path().join("run"),
        insecure_registries: vec![],
        registry_mirrors: vec![],
        log_level: "info".into(),
        tls: false,
        tls_verify: false,
        tls_ca: None,
        tls_cert: None,
        tls_key: None,
        insecure_tcp: false,
        pidfile: dir.path().join("run/berth.pid"),
        bridge: Some("none".into()),
        network_instance: net.0.clone(),
        cgroup_favordynmods: false,
    };
    let daemon_task = tokio::spawn(berth_daemon::server::run(config));
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::UnixStream::connect(&sock).await.is_err() {
        assert!(Instant::now() < deadline, "daemon did not listen");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let host = format!("unix://{}", sock.display());
    let home = dir.path().to_path_buf();

    let (h, p, r) = (host.clone(), home.clone(), reference.clone());
    let out = tokio::task::spawn_blocking(move || docker(&h, &p, &["pull", &r]))
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.contains("Downloaded newer image for"), "{text}");

    let (h, p, r) = (host.clone(), home.clone(), reference.clone());
    let out = tokio::task::spawn_blocking(move || {
        (
            docker(&h, &p, &["pull", &r]),
            docker(&h, &p, &["images", "--format", "{{.Repository}}:{{.Tag}}"]),
            docker(
                &h,
                &p,
                &[
                    "pull",
                    &format!("{}/missing:1", r.split('/').next().unwrap()),
                ],
            ),
        )
    })
    .await
    .unwrap();
    assert!(
        String::from_utf8_lossy(&out.0.stdout).contains("Image is up to date"),
        "{:?}",
        out.0
    );
    assert_eq!(
        String::from_utf8_lossy(&out.1.stdout),
        format!("{addr}/small:1\n")
    );
    assert!(!out.2.status.success(), "{:?}", out.2);

    daemon_task.abort();
    registry_task.abort();
}

/// Deletes the nftables table of network instance `.0` on drop.
struct NetTable(String);

impl Drop for NetTable {
    fn drop(&mut self) {
        for family in ["ip", "ip6"] {
            let _ = std::process::Command::new("nft")
                .args(["delete", "table", family, &format!("berth-{}", self.0)])
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

/// Detaches every mount below `.0` on drop (the daemon's image store and pooled namespaces):
/// the daemon task is aborted, not stopped.
struct UnmountBelow(std::path::PathBuf);

impl Drop for UnmountBelow {
    fn drop(&mut self) {
        let below = format!("{}/", self.0.display());
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut points: Vec<&str> = mountinfo
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| m.starts_with(&below))
            .collect();
        points.reverse();
        for p in points {
            let _ = nix::mount::umount2(p, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}
