//! End-to-end image operations on a real store: import, rootfs mounts, whiteouts, commit,
//! diff, export, tag/rmi semantics, prune, gc and fsck.

mod common;

use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};

use berth_image::{ChangeKind, CommitOptions, DeleteItem, Driver, ImportOptions, StoreOptions};
use common::*;

/// A container config object for the options' `config`.
fn config(v: serde_json::Value) -> Option<serde_json::Map<String, serde_json::Value>> {
    v.as_object().cloned()
}

fn import_busybox(ts: &TestStore, tag: &str) -> berth_image::Digest {
    let opts = ImportOptions {
        reference: Some(tag.to_string()),
        config: config(serde_json::json!({
            "Cmd": ["/bin/sh"],
            "Env": ["PATH=/bin"],
            "WorkingDir": "/tmp",
        })),
        message: None,
    };
    ts.store
        .import(busybox_rootfs().as_slice(), &opts)
        .expect("import")
}

#[test]
fn import_busybox_and_chroot_into_overlay_rootfs() {
    let ts = TestStore::new();
    let id = import_busybox(&ts, "busybox");
    let inspect = ts.store.inspect("busybox").unwrap();
    assert_eq!(inspect.id, id.to_string());
    assert_eq!(inspect.repo_tags, vec!["busybox:latest"]);
    assert_eq!(inspect.os, "linux");
    assert_eq!(inspect.architecture, "amd64");
    assert_eq!(inspect.root_fs.layers.len(), 1);
    assert_eq!(
        inspect.config.as_ref().unwrap()["Cmd"],
        serde_json::json!(["/bin/sh"])
    );
    assert_eq!(
        inspect.config.as_ref().unwrap()["WorkingDir"],
        serde_json::json!("/tmp")
    );
    let v = serde_json::to_value(&inspect).unwrap();
    for k in [
        "Id",
        "RepoTags",
        "RepoDigests",
        "Parent",
        "Comment",
        "Created",
        "Config",
        "Architecture",
        "Os",
        "Size",
        "RootFS",
        "Metadata",
    ] {
        assert!(v.get(k).is_some(), "inspect lacks {k}");
    }
    assert_eq!(v["RootFS"]["Type"], "layers");
    // Short IDs and prefixes resolve; the familiar and full names too.
    assert_eq!(ts.store.image_id(&id.hex()[..12]).unwrap(), id);
    assert_eq!(
        ts.store
            .image_id(&format!("sha256:{}", &id.hex()[..8]))
            .unwrap(),
        id
    );
    assert_eq!(
        ts.store
            .image_id("docker.io/library/busybox:latest")
            .unwrap(),
        id
    );
    assert!(ts.store.image_id("nosuch").is_err());

    let rootfs = ts.store.create_rootfs("busybox", "c1").unwrap();
    assert_eq!(rootfs.driver, Driver::Overlay);
    let st = std::process::Command::new("chroot")
        .arg(&rootfs.path)
        .args(["/bin/busybox", "true"])
        .status()
        .unwrap();
    assert!(st.success(), "chroot busybox true failed");
    // The image is in use now.
    let err = ts.store.remove("busybox", false).unwrap_err();
    assert_eq!(err.kind(), berth_image::ErrorKind::Conflict, "{err}");

    // Changes: add, modify, delete.
    std::fs::write(rootfs.path.join("tmp/new"), b"x").unwrap();
    std::fs::write(rootfs.path.join("etc/passwd"), b"root:x:0:0::/:/bin/sh\n").unwrap();
    std::fs::remove_file(rootfs.path.join("bin/sh")).unwrap();
    let diff = ts.store.diff("c1").unwrap();
    let find = |p: &str| diff.iter().find(|c| c.path == p).map(|c| c.kind);
    assert_eq!(find("/tmp/new"), Some(ChangeKind::Added), "{diff:?}");
    assert_eq!(find("/etc/passwd"), Some(ChangeKind::Modified), "{diff:?}");
    assert_eq!(find("/bin/sh"), Some(ChangeKind::Deleted), "{diff:?}");
    assert_eq!(find("/tmp"), Some(ChangeKind::Modified), "{diff:?}");
    assert!(serde_json::to_value(&diff[0]).unwrap()["Kind"]
        .as_u64()
        .is_some());

    // Commit and run the committed image.
    let opts = CommitOptions {
        reference: Some("committed:v1".into()),
        author: Some("tester".into()),
        message: Some("add tmp/new".into()),
        config: config(serde_json::json!({"Labels": {"a": "b"}})),
        created_by: None,
    };
    let cid = ts.store.commit("c1", &opts).unwrap();
    let ci = ts.store.inspect("committed:v1").unwrap();
    assert_eq!(ci.id, cid.to_string());
    assert_eq!(ci.root_fs.layers.len(), 2);
    assert_eq!(ci.author, "tester");
    assert_eq!(ci.config.as_ref().unwrap()["Labels"]["a"], "b");
    let hist = ts.store.history("committed:v1").unwrap();
    assert_eq!(hist.len(), 2);
    assert_eq!(hist[0].id, cid.to_string());
    assert_eq!(hist[0].comment, "add tmp/new");
    assert_eq!(
        hist[0].tags.as_deref(),
        Some(&["committed:v1".to_string()][..])
    );
    // The parent's entry names the parent, as dockerd's history of local images does.
    assert_eq!(hist[1].id, id.to_string());
    assert_eq!(
        hist[1].tags.as_deref(),
        Some(&["busybox:latest".to_string()][..])
    );

    let r2 = ts.store.create_rootfs("committed:v1", "c2").unwrap();
    assert_eq!(std::fs::read(r2.path.join("tmp/new")).unwrap(), b"x");
    assert!(
        std::fs::symlink_metadata(r2.path.join("bin/sh")).is_err(),
        "whiteout of bin/sh not applied"
    );
    assert!(r2.path.join("bin/busybox").exists());

    // Export is a tar of the whole filesystem.
    let mut tar = Vec::new();
    ts.store.export("c2", &mut tar).unwrap();
    let mut names = Vec::new();
    let mut ar = tar::Archive::new(tar.as_slice());
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let p = e.path().unwrap().display().to_string();
        if p == "etc/passwd" {
            let mut s = String::new();
            e.read_to_string(&mut s).unwrap();
            assert_eq!(s, "root:x:0:0::/:/bin/sh\n");
        }
        names.push(p);
    }
    assert!(
        names.contains(&"bin/busybox".to_string()) && names.contains(&"tmp/new".to_string()),
        "{names:?}"
    );
    assert!(!names.iter().any(|n| n == "bin/sh"));

    r2.remove().unwrap();
    rootfs.remove().unwrap();
    assert!(ts.store.fsck().unwrap().ok());
    // As dockerd: the parent of a committed image only loses its tag, and cannot be deleted
    // by ID while its child exists...
    let del = ts.store.remove("busybox", false).unwrap();
    assert_eq!(del, vec![DeleteItem::Untagged("busybox:latest".into())]);
    let e = ts.store.remove(&id.to_string(), true).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "conflict: unable to delete {} (cannot be forced) - image has dependent child images",
            &id.hex()[..12]
        )
    );
    // ... and deleting the child deletes the untagged parent with it.
    let del = ts.store.remove("committed:v1", false).unwrap();
    assert_eq!(
        del,
        vec![
            DeleteItem::Untagged("committed:v1".into()),
            DeleteItem::Deleted(cid.to_string()),
            DeleteItem::Deleted(id.to_string())
        ]
    );
    assert!(ts.store.list().unwrap().is_empty());
    let f = ts.store.fsck().unwrap();
    assert!(f.ok(), "{:?}", f.problems);
}

#[test]
fn tag_untag_and_delete_like_docker() {
    let ts = TestStore::new();
    let id = import_busybox(&ts, "busybox:1");
    ts.store.tag("busybox:1", "busybox:2").unwrap();
    ts.store
        .tag(&id.hex()[..10], "example.com:5000/team/bb:x")
        .unwrap();
    assert_eq!(
        ts.store.inspect(&id.to_string()).unwrap().repo_tags.len(),
        3
    );
    // Removing one of several tags only untags.
    assert_eq!(
        ts.store.remove("busybox:2", false).unwrap(),
        vec![DeleteItem::Untagged("busybox:2".into())]
    );
    // By ID while two repositories name it: conflict unless forced.
    let e = ts.store.remove(&id.hex()[..12], false).unwrap_err();
    assert_eq!(e.kind(), berth_image::ErrorKind::Conflict, "{e}");
    assert_eq!(
        e.to_string(),
        format!(
            "conflict: unable to delete {} (must be forced) - image is referenced in multiple repositories",
            &id.hex()[..12]
        )
    );
    let out = ts.store.remove(&id.hex()[..12], true).unwrap();
    assert_eq!(out.last(), Some(&DeleteItem::Deleted(id.to_string())));
    assert_eq!(
        out.iter()
            .filter(|d| matches!(d, DeleteItem::Untagged(_)))
            .count(),
        2
    );
    let json = serde_json::to_string(&out).unwrap();
    assert!(json.starts_with(r#"[{"Untagged":"#), "{json}");
    assert!(ts.store.list().unwrap().is_empty());
    assert_eq!(ts.count("blobs/sha256"), 0, "gc after delete");
    assert_eq!(ts.count("snapshots"), 0);
    assert!(ts.store.tag("nosuch", "x").is_err());
    assert!(ts.store.tag("busybox", "Bad/Name").is_err());
}

/// rmi conflicts with containers, in dockerd's decisions and words.
#[test]
fn rmi_conflicts_with_containers_like_dockerd() {
    let ts = TestStore::new();
    let id = import_busybox(&ts, "busybox");
    let short = id.hex()[..12].to_string();
    let cid = format!("{}{}", "c0ffee".repeat(10), "abcd");
    let r = ts.store.create_rootfs("busybox", &cid).unwrap();
    let running = vec![cid.clone()];

    // The last tag, a container (running or not) using the image.
    for run in [&[][..], &running[..]] {
        let e = ts.store.remove_with("busybox", false, run).unwrap_err();
        assert_eq!(e.kind(), berth_image::ErrorKind::Conflict);
        assert_eq!(
            e.to_string(),
            format!(
                "conflict: unable to remove repository reference \"busybox\" (must force) - container {} is using its referenced image {short}",
                &cid[..12]
            )
        );
    }
    // By ID: a stopped container needs force, a running one cannot be forced.
    let e = ts.store.remove(&short, false).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "conflict: unable to delete {short} (must be forced) - image is being used by stopped container {}",
            &cid[..12]
        )
    );
    for force in [false, true] {
        let e = ts.store.remove_with(&short, force, &running).unwrap_err();
        assert_eq!(e.kind(), berth_image::ErrorKind::Conflict);
        assert_eq!(
            e.to_string(),
            format!(
                "conflict: unable to delete {short} (cannot be forced) - image is being used by running container {}",
                &cid[..12]
            )
        );
    }
    // Forcing the tag away while the container runs only untags.
    assert_eq!(
        ts.store.remove_with("busybox", true, &running).unwrap(),
        vec![DeleteItem::Untagged("busybox:latest".into())]
    );
    assert_eq!(ts.store.image_id(&short).unwrap(), id);
    // Stopped, a forced removal by ID deletes the image; the container keeps its layers.
    assert_eq!(
        ts.store.remove(&short, true).unwrap(),
        vec![DeleteItem::Deleted(id.to_string())]
    );
    assert!(r.path.join("bin/busybox").exists());
    r.remove().unwrap();
}

#[test]
fn prune_gc_and_disk_usage() {
    let ts = TestStore::new();
    let id1 = import_busybox(&ts, "a:1");
    // Re-tagging a:1 to another image leaves the first dangling.
    let other = ts
        .store
        .import(
            Layer::new().file("x", b"1").tar().as_slice(),
            &ImportOptions::default(),
        )
        .unwrap();
    ts.store.tag(&other.to_string(), "a:1").unwrap();
    let list = ts.store.list().unwrap();
    assert_eq!(list.len(), 2);
    let dangling = list.iter().find(|s| s.id == id1.to_string()).unwrap();
    assert!(dangling.repo_tags.is_empty());
    let df = ts.store.disk_usage().unwrap();
    assert!(
        df.layers_size > 1_000_000,
        "busybox layer counted: {}",
        df.layers_size
    );
    let report = ts.store.prune(false).unwrap();
    assert_eq!(
        report.images_deleted,
        vec![DeleteItem::Deleted(id1.to_string())]
    );
    assert!(report.space_reclaimed > 1_000_000);
    assert_eq!(ts.store.list().unwrap().len(), 1);
    // Junk in tmp and orphan blobs are collected.
    std::fs::write(ts.root().join("tmp/junk"), b"x").unwrap();
    std::fs::write(ts.root().join(".tmp-crashed"), b"{").unwrap();
    ts.store.put_blob(&b"orphan"[..], None, None).unwrap();
    let gc = ts.store.gc().unwrap();
    assert_eq!(gc.blobs_removed, 1);
    assert_eq!(ts.count("tmp"), 0);
    assert!(!ts.root().join(".tmp-crashed").exists());
    assert!(ts.store.fsck().unwrap().ok());
}

fn check_whiteouts(ts: &TestStore) {
    let dir = ts.dir.path().join("layout");
    write_oci_layout(&dir, &multi_layer_image(), "latest");
    let ids = ts.store.load(tar_dir(&dir).as_slice()).unwrap();
    assert_eq!(ids.len(), 1);
    assert!(
        ids[0].tags.is_empty(),
        "a bare tag name gives no repository"
    );
    let r = ts.store.create_rootfs(&ids[0].id.to_string(), "w").unwrap();
    assert!(
        !r.path.join("etc/passwd").exists(),
        "whiteout hides lower file"
    );
    assert_eq!(std::fs::read(r.path.join("etc/motd")).unwrap(), b"berth\n");
    let data: Vec<_> = std::fs::read_dir(r.path.join("data"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(data, vec!["b"], "opaque dir hides lower contents");
    let st = std::process::Command::new("chroot")
        .arg(&r.path)
        .args(["/bin/busybox", "true"])
        .status()
        .unwrap();
    assert!(st.success());
    // Deleting in the container and committing produces a whiteout the next image honours.
    std::fs::remove_file(r.path.join("etc/motd")).unwrap();
    std::fs::remove_dir_all(r.path.join("data")).unwrap();
    std::fs::create_dir(r.path.join("data")).unwrap();
    std::fs::write(r.path.join("data/c"), b"c").unwrap();
    let diff = ts.store.diff("w").unwrap();
    assert!(
        diff.iter()
            .any(|c| c.path == "/etc/motd" && c.kind == ChangeKind::Deleted),
        "{diff:?}"
    );
    let has = |p: &str, k: ChangeKind| diff.iter().any(|c| c.path == p && c.kind == k);
    assert!(has("/data/c", ChangeKind::Added), "{diff:?}");
    if r.driver == Driver::Overlay {
        // The recreated directory is opaque in the upper dir: Docker reports it deleted.
        assert!(has("/data", ChangeKind::Deleted), "{diff:?}");
    } else {
        assert!(has("/data/b", ChangeKind::Deleted), "{diff:?}");
    }
    ts.store
        .commit(
            "w",
            &CommitOptions {
                reference: Some("wh:1".into()),
                ..Default::default()
            },
        )
        .unwrap();
    let r2 = ts.store.create_rootfs("wh:1", "w2").unwrap();
    assert!(!r2.path.join("etc/motd").exists());
    let data: Vec<_> = std::fs::read_dir(r2.path.join("data"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(data, vec!["c"]);
    r2.remove().unwrap();
    r.remove().unwrap();
    let f = ts.store.fsck().unwrap();
    assert!(f.ok(), "{:?}", f.problems);
}

#[test]
fn whiteouts_with_overlay() {
    check_whiteouts(&TestStore::new());
}

#[test]
fn whiteouts_with_copy_driver() {
    check_whiteouts(&TestStore::with(StoreOptions {
        driver: Some(Driver::Copy),
    }));
}

#[test]
fn snapshots_are_overlay_form_and_root_is_private() {
    let ts = TestStore::new();
    let dir = ts.dir.path().join("layout");
    write_oci_layout(&dir, &multi_layer_image(), "latest");
    ts.store.load(tar_dir(&dir).as_slice()).unwrap();
    let mode = std::fs::metadata(ts.root()).unwrap().mode() & 0o777;
    assert_eq!(mode, 0o700);
    let mut whiteouts = 0;
    for e in std::fs::read_dir(ts.root().join("snapshots")).unwrap() {
        let p = e.unwrap().path().join("fs/etc/passwd");
        if let Ok(m) = std::fs::symlink_metadata(&p) {
            if m.file_type().is_char_device() && m.rdev() == 0 {
                whiteouts += 1;
            }
        }
    }
    assert_eq!(whiteouts, 1);
}

#[test]
fn many_layers_exceed_the_classic_option_limit() {
    let ts = TestStore::new();
    // 80 layers: the lowerdir string of absolute snapshot paths would be far over 4096 bytes.
    let mut id = ts
        .store
        .import(
            busybox_rootfs().as_slice(),
            &ImportOptions {
                reference: Some("many:0".into()),
                ..Default::default()
            },
        )
        .unwrap();
    for i in 1..80 {
        let r = ts
            .store
            .create_rootfs(&id.to_string(), &format!("m{i}"))
            .unwrap();
        std::fs::write(r.path.join(format!("f{i}")), i.to_string()).unwrap();
        id = ts
            .store
            .commit(&format!("m{i}"), &CommitOptions::default())
            .unwrap();
        r.remove().unwrap();
    }
    let r = ts.store.create_rootfs(&id.to_string(), "top").unwrap();
    assert_eq!(std::fs::read_to_string(r.path.join("f1")).unwrap(), "1");
    assert_eq!(std::fs::read_to_string(r.path.join("f79")).unwrap(), "79");
    assert_eq!(
        ts.store
            .inspect(&id.to_string())
            .unwrap()
            .root_fs
            .layers
            .len(),
        80
    );
    r.remove().unwrap();
}

#[test]
fn concurrent_loads_and_imports() {
    let ts = TestStore::new();
    let dir = ts.dir.path().join("layout");
    write_oci_layout(&dir, &multi_layer_image(), "latest");
    let archive = tar_dir(&dir);
    std::thread::scope(|s| {
        for i in 0..4 {
            let store = ts.store.clone();
            let archive = &archive;
            s.spawn(move || {
                store.load(archive.as_slice()).unwrap();
                store
                    .import(
                        busybox_rootfs().as_slice(),
                        &ImportOptions {
                            reference: Some(format!("t:{i}")),
                            ..Default::default()
                        },
                    )
                    .unwrap();
                store.gc().unwrap();
            });
        }
    });
    assert_eq!(ts.store.list().unwrap().len(), 5);
    let f = ts.store.fsck().unwrap();
    assert!(f.ok(), "{:?}", f.problems);
}

#[test]
fn fsck_reports_corruption() {
    let ts = TestStore::new();
    let id = import_busybox(&ts, "bb");
    assert!(ts.store.fsck().unwrap().ok());
    let inspect = ts.store.inspect("bb").unwrap();
    // A flipped byte in the layer blob.
    let blobs = ts.root().join("blobs/sha256");
    let layer = std::fs::read_dir(&blobs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let mut bytes = std::fs::read(&layer).unwrap();
    bytes[600] ^= 1;
    std::fs::write(&layer, &bytes).unwrap();
    let f = ts.store.fsck().unwrap();
    assert!(
        f.problems.iter().any(|p| p.contains("digest mismatch")),
        "{:?}",
        f.problems
    );
    // A missing snapshot.
    let chain = inspect.root_fs.layers[0]
        .trim_start_matches("sha256:")
        .to_string();
    std::fs::remove_dir_all(ts.root().join("snapshots").join(chain)).unwrap();
    let f = ts.store.fsck().unwrap();
    assert!(
        f.problems
            .iter()
            .any(|p| p.contains("snapshot") && p.contains("missing")),
        "{:?}",
        f.problems
    );
    // A tag pointing nowhere.
    let db = ts.root().join("images.json");
    let mut json: serde_json::Value = serde_json::from_slice(&std::fs::read(&db).unwrap()).unwrap();
    json["tags"]["docker.io/library/ghost:latest"] =
        serde_json::json!(format!("sha256:{}", "0".repeat(64)));
    std::fs::write(&db, serde_json::to_vec(&json).unwrap()).unwrap();
    assert!(ts.store.image_id(&id.to_string()).is_ok());
    let f = ts.store.fsck().unwrap();
    assert!(
        f.problems
            .iter()
            .any(|p| p.contains("points to missing image")),
        "{:?}",
        f.problems
    );
}

#[test]
fn import_accepts_gzip_and_zstd_and_rejects_bad_references() {
    let ts = TestStore::new();
    let tar = busybox_rootfs();
    let plain = ts
        .store
        .import(tar.as_slice(), &ImportOptions::default())
        .unwrap();
    let gz = ts
        .store
        .import(
            gzip(&tar).as_slice(),
            &ImportOptions {
                reference: Some("gz".into()),
                ..Default::default()
            },
        )
        .unwrap();
    let zs = zstd::encode_all(tar.as_slice(), 3).unwrap();
    let z = ts
        .store
        .import(
            zs.as_slice(),
            &ImportOptions {
                reference: Some("zs".into()),
                ..Default::default()
            },
        )
        .unwrap();
    // Same filesystem, same diff ID, whatever the compression.
    for id in [&gz, &z] {
        assert_eq!(
            ts.store.inspect(&id.to_string()).unwrap().root_fs.layers,
            ts.store.inspect(&plain.to_string()).unwrap().root_fs.layers
        );
    }
    let r = ts.store.create_rootfs("zs", "z").unwrap();
    assert!(r.path.join("bin/busybox").exists());
    r.remove().unwrap();
    let bad_ref = ImportOptions {
        reference: Some("UPPER".into()),
        ..Default::default()
    };
    assert!(ts.store.import(tar.as_slice(), &bad_ref).is_err());
}

/// The runtime's and the daemon's mountpoints live in the container's init layer (as in
/// Docker), so creating and mounting over them is no change to `docker diff` or commit.
fn check_init_layer(ts: &TestStore) {
    let bb = std::fs::read("/bin/busybox").unwrap();
    let tar = Layer::new()
        .dir("bin")
        .file_mode("bin/busybox", &bb, 0o755)
        .symlink("bin/sh", "busybox")
        // An unusual mode the init layer's /etc must keep.
        .raw(b"etc/", tar::EntryType::Directory, b"", b"")
        .file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n")
        .file("etc/hosts", b"127.0.0.1 image\n")
        .symlink("etc/resolv.conf", "../run/systemd/resolve/stub-resolv.conf")
        .dir("tmp")
        .tar();
    let opts = ImportOptions {
        reference: Some("stubs:1".into()),
        ..Default::default()
    };
    ts.store.import(tar.as_slice(), &opts).unwrap();
    let r = ts.store.create_rootfs("stubs:1", "init").unwrap();
    let p = |rel: &str| r.path.join(rel);
    for d in ["proc", "sys", "dev/pts", "dev/shm"] {
        assert!(p(d).is_dir(), "{d}");
    }
    for f in [".dockerenv", "etc/hosts", "etc/hostname", "etc/resolv.conf"] {
        let m = std::fs::symlink_metadata(p(f)).unwrap();
        assert!(m.is_file() && m.len() == 0, "{f}: {m:?}");
    }
    assert_eq!(
        std::fs::read_link(p("etc/mtab")).unwrap(),
        std::path::Path::new("/proc/mounts")
    );
    let etc = std::fs::metadata(p("etc")).unwrap();
    assert_eq!(
        etc.mode() & 0o7777,
        0o644,
        "the image's /etc attributes show"
    );
    assert!(p("etc/passwd").is_file());
    assert!(ts.store.diff("init").unwrap().is_empty());

    // What runc and the daemon do: create missing mountpoints (O_CREAT without writing,
    // mkdir -p), mount /dev and bind-mount /etc/hosts (overlay only: the copy driver's
    // naive diff would walk the mounts).
    for d in ["proc", "sys", "dev/pts", "dev/shm"] {
        std::fs::create_dir_all(p(d)).unwrap();
    }
    for f in [".dockerenv", "etc/hosts", "etc/hostname", "etc/resolv.conf"] {
        let fd = nix::fcntl::open(
            &p(f),
            nix::fcntl::OFlag::O_CREAT | nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::from_bits_truncate(0o755),
        )
        .unwrap();
        nix::unistd::close(fd).unwrap();
    }
    let host_hosts = ts.dir.path().join("hosts");
    if r.driver == Driver::Overlay {
        std::fs::write(&host_hosts, b"10.0.0.2 ctr\n").unwrap();
        use nix::mount::{mount, MsFlags};
        mount(
            Some("tmpfs"),
            &p("dev"),
            Some("tmpfs"),
            MsFlags::empty(),
            None::<&str>,
        )
        .unwrap();
        mount(
            Some(&host_hosts),
            &p("etc/hosts"),
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .unwrap();
        assert_eq!(std::fs::read(p("etc/hosts")).unwrap(), b"10.0.0.2 ctr\n");
    }
    std::fs::write(p("etc/new"), b"n").unwrap();
    let diff: Vec<(String, ChangeKind)> = ts
        .store
        .diff("init")
        .unwrap()
        .into_iter()
        .map(|c| (c.path, c.kind))
        .collect();
    assert_eq!(
        diff,
        vec![
            ("/etc".to_string(), ChangeKind::Modified),
            ("/etc/new".to_string(), ChangeKind::Added)
        ]
    );
    if r.driver == Driver::Overlay {
        for m in ["etc/hosts", "dev"] {
            nix::mount::umount2(&p(m), nix::mount::MntFlags::MNT_DETACH).unwrap();
        }
    }

    // The stubs are not committed: the new image's only change is /etc/new.
    let opts = CommitOptions {
        reference: Some("stubs:2".into()),
        ..Default::default()
    };
    ts.store.commit("init", &opts).unwrap();
    r.remove().unwrap();
    let r2 = ts.store.create_rootfs("stubs:2", "init2").unwrap();
    assert_eq!(std::fs::read(r2.path.join("etc/new")).unwrap(), b"n");
    assert_eq!(
        std::fs::read(r2.path.join("etc/passwd")).unwrap(),
        b"root:x:0:0:root:/root:/bin/sh\n"
    );
    assert!(ts.store.diff("init2").unwrap().is_empty());
    r2.remove().unwrap();
}

#[test]
fn init_layer_hides_mountpoints_with_overlay() {
    check_init_layer(&TestStore::new());
}

#[test]
fn init_layer_hides_mountpoints_with_copy_driver() {
    check_init_layer(&TestStore::with(StoreOptions {
        driver: Some(Driver::Copy),
    }));
}

#[test]
fn prepare_rootfs_probes_overlay_once_then_leaves_layers_unmounted() {
    let ts = TestStore::new();
    import_busybox(&ts, "busybox");
    let mounted = |id: &str| {
        let merged = ts.store.root().join("containers").join(id).join("merged");
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .contains(&format!(" {} ", merged.display()))
    };
    // The first one mounts to choose the driver, and unmounts; later ones do not mount.
    ts.store.prepare_rootfs("busybox", "p1").unwrap();
    assert!(!mounted("p1"));
    ts.store.prepare_rootfs("busybox", "p2").unwrap();
    assert!(!mounted("p2"));
    // Both mount when asked, with the image's files, and are prepared only once.
    for id in ["p1", "p2"] {
        let rootfs = ts.store.mount_rootfs(id).unwrap();
        assert_eq!(rootfs.driver, Driver::Overlay);
        assert!(mounted(id));
        assert!(rootfs.path.join("bin/busybox").exists());
        rootfs.remove().unwrap();
    }
    let err = ts.store.prepare_rootfs("busybox", "p1");
    assert!(
        err.is_ok(),
        "a removed container's id can be used again: {err:?}"
    );
    assert!(ts.store.prepare_rootfs("busybox", "p1").is_err());
    ts.store.remove_rootfs("p1").unwrap();
}

/// A `--rm` container's layers are prepared without flushing their record; what a power loss
/// may leave of it (empty, zero-filled or no `meta.json`) is listed for its owner to remove,
/// and gc removes it too.
#[test]
fn unflushed_rootfs_records_torn_by_a_power_loss_are_cleaned_up() {
    let ts = TestStore::new();
    import_busybox(&ts, "busybox");
    for id in ["v1", "v2", "v3", "kept"] {
        ts.store
            .prepare_rootfs_with("busybox", id, id == "kept")
            .unwrap();
    }
    let dir = |id: &str| ts.store.root().join("containers").join(id);
    let listed = || {
        let mut ids = ts.store.container_layer_ids().unwrap();
        ids.sort();
        ids
    };
    std::fs::write(dir("v1").join("meta.json"), b"").unwrap();
    std::fs::write(dir("v2").join("meta.json"), [0u8; 512]).unwrap();
    std::fs::remove_file(dir("v3").join("meta.json")).unwrap();
    assert_eq!(listed(), ["kept", "v1", "v2", "v3"]);
    // Not records any more: the image is in use only by the whole one.
    assert_eq!(ts.store.containers().unwrap().len(), 1);
    ts.store.remove_rootfs("v1").unwrap();
    ts.store.gc().unwrap();
    assert_eq!(listed(), ["kept"]);
    ts.store.remove_rootfs("kept").unwrap();
}

#[test]
fn intermediate_images_stay_while_their_child_does() {
    let ts = TestStore::new();
    let base = import_busybox(&ts, "busybox");
    let commit = |from: &str, container: &str, reference: Option<&str>| {
        let r = ts.store.create_rootfs(from, container).unwrap();
        std::fs::write(r.path.join(container), container).unwrap();
        let opts = CommitOptions {
            reference: reference.map(str::to_string),
            author: None,
            message: None,
            config: None,
            created_by: None,
        };
        let id = ts.store.commit(container, &opts).unwrap();
        r.remove().unwrap();
        id
    };
    // busybox <- step (untagged, as a build's intermediate image) <- top:1
    let step = commit("busybox", "s1", None);
    let top = commit(&step.to_string(), "s2", Some("top:1"));
    assert_eq!(ts.store.inspect("top:1").unwrap().parent, step.to_string());
    // Not dangling while its child is there.
    let report = ts.store.prune(false).unwrap();
    assert!(report.images_deleted.is_empty(), "{report:?}");
    assert_eq!(ts.store.list().unwrap().len(), 3);
    // Deleting the child takes the untagged step with it, not the tagged base.
    assert_eq!(
        ts.store.remove("top:1", false).unwrap(),
        vec![
            DeleteItem::Untagged("top:1".into()),
            DeleteItem::Deleted(top.to_string()),
            DeleteItem::Deleted(step.to_string()),
        ]
    );
    let left: Vec<String> = ts.store.list().unwrap().into_iter().map(|i| i.id).collect();
    assert_eq!(left, vec![base.to_string()]);
    // Untagged and childless, a step is dangling: prune takes it.
    let lone = commit("busybox", "s3", None);
    let report = ts.store.prune(false).unwrap();
    assert_eq!(
        report.images_deleted,
        vec![DeleteItem::Deleted(lone.to_string())]
    );
}

#[test]
fn removed_rootfs_is_detached_and_deleted_in_the_background_or_by_gc() {
    let ts = TestStore::new();
    import_busybox(&ts, "busybox");
    let mountinfo_mentions = |needle: &str| {
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .any(|l| l.contains(needle))
    };
    let tmp = ts.store.root().join("tmp");

    // The reaper thread detaches the overlay before deleting the tree that holds it.
    ts.store.prepare_rootfs("busybox", "r1").unwrap();
    let rootfs = ts.store.mount_rootfs("r1").unwrap();
    std::fs::write(rootfs.path.join("written"), b"upper").unwrap();
    ts.store.remove_rootfs("r1").unwrap();
    assert!(ts.store.mount_rootfs("r1").is_err(), "gone from the store");
    let doomed = tmp.join("removed-r1");
    for _ in 0..500 {
        if !doomed.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(!doomed.exists(), "the reaper left {}", doomed.display());
    assert!(
        !mountinfo_mentions("/r1/merged"),
        "r1's rootfs still mounted"
    );

    // A tree left in tmp/ with its mount (the daemon died before its reaper ran) goes with gc.
    ts.store.prepare_rootfs("busybox", "r2").unwrap();
    ts.store.mount_rootfs("r2").unwrap();
    let left = tmp.join("removed-r2");
    std::fs::rename(ts.store.root().join("containers/r2"), &left).unwrap();
    assert!(mountinfo_mentions("removed-r2/merged"));
    ts.store.gc().unwrap();
    assert!(!left.exists());
    assert!(!mountinfo_mentions("removed-r2/merged"));

    // The image's files are untouched.
    ts.store.prepare_rootfs("busybox", "r3").unwrap();
    let rootfs = ts.store.mount_rootfs("r3").unwrap();
    assert!(rootfs.path.join("bin/busybox").exists());
    assert!(!rootfs.path.join("written").exists());
    rootfs.remove().unwrap();
}
