//! Round trips with a real Docker engine (`docker import` + `docker save` → Berth, and Berth's
//! docker-archive → `docker load`). Skipped when no engine is reachable: set DOCKER_HOST, or
//! start the reference engine with /work/shared/acceptance/reference/start-dockerd.sh.

mod common;

use std::process::Command;

use berth_image::{ArchiveFormat, ImportOptions};
use common::*;

fn docker_host() -> Option<String> {
    let candidates = [
        std::env::var("DOCKER_HOST").ok(),
        Some("unix:///var/tmp/peer/ref/docker.sock".to_string()),
    ];
    candidates.into_iter().flatten().find(|h| {
        Command::new("docker")
            .args(["version", "--format", "{{.Server.Version}}"])
            .env("DOCKER_HOST", h)
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

struct Docker {
    host: String,
    cleanup: Vec<String>,
}

impl Docker {
    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("docker")
            .args(args)
            .env("DOCKER_HOST", &self.host)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "docker {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Docker {
    fn drop(&mut self) {
        for image in &self.cleanup {
            let _ = Command::new("docker")
                .args(["rmi", "-f", image])
                .env("DOCKER_HOST", &self.host)
                .output();
        }
    }
}

#[test]
fn docker_engine_round_trip() {
    let Some(host) = docker_host() else {
        eprintln!("skipping: no docker engine reachable");
        return;
    };
    let tag = format!("berth-test/dk{}:v1", std::process::id());
    let back = format!("berth-test/back{}:v1", std::process::id());
    let mut docker = Docker {
        host,
        cleanup: vec![tag.clone(), back.clone()],
    };
    let ts = TestStore::new();
    let rootfs = ts.dir.path().join("rootfs.tar");
    std::fs::write(&rootfs, busybox_rootfs()).unwrap();

    // docker import + docker save → Berth.
    docker.run(&[
        "import",
        "-c",
        r#"CMD ["/bin/sh"]"#,
        "-c",
        "ENV A=1",
        rootfs.to_str().unwrap(),
        &tag,
    ]);
    let id = docker.run(&["inspect", "-f", "{{.Id}}", &tag]);
    let layers = docker.run(&["inspect", "-f", "{{json .RootFS.Layers}}", &tag]);
    let archive = ts.dir.path().join("docker.tar");
    docker.run(&["save", "-o", archive.to_str().unwrap(), &tag]);
    let loaded = ts
        .store
        .load(std::fs::File::open(&archive).unwrap())
        .unwrap();
    assert_eq!(loaded[0].id.to_string(), id);
    assert_eq!(loaded[0].tags, vec![tag.clone()]);
    let inspect = ts.store.inspect(&tag).unwrap();
    assert_eq!(
        serde_json::to_string(&inspect.root_fs.layers).unwrap(),
        layers
    );
    assert_eq!(
        inspect.config.as_ref().unwrap()["Cmd"],
        serde_json::json!(["/bin/sh"])
    );
    let r = ts.store.create_rootfs(&tag, "c").unwrap();
    assert!(Command::new("chroot")
        .arg(&r.path)
        .args(["/bin/busybox", "true"])
        .status()
        .unwrap()
        .success());
    r.remove().unwrap();

    // Berth import + save → docker load, same ID.
    let opts = ImportOptions {
        reference: Some(back.clone()),
        config: serde_json::json!({"Labels": {"from": "berth"}})
            .as_object()
            .cloned(),
        message: None,
    };
    let bid = ts.store.import(busybox_rootfs().as_slice(), &opts).unwrap();
    let out = ts.dir.path().join("berth.tar");
    ts.store
        .save(
            &[&back],
            ArchiveFormat::Docker,
            std::fs::File::create(&out).unwrap(),
        )
        .unwrap();
    docker.run(&["load", "-i", out.to_str().unwrap()]);
    assert_eq!(
        docker.run(&["inspect", "-f", "{{.Id}}", &back]),
        bid.to_string()
    );
    assert_eq!(
        docker.run(&["inspect", "-f", "{{index .Config.Labels \"from\"}}", &back]),
        "berth"
    );
    docker.cleanup.push(bid.to_string());
}
