//! Images through the daemon with the real docker CLI: import, list, inspect, tag, save, rmi,
//! load, history, prune, and container create from an image (which holds the image in use).

mod daemon_common;

use daemon_common::{import_busybox, ok, Daemon, DOCKER};

#[test]
fn docker_image_lifecycle_and_create() {
    if !std::path::Path::new(DOCKER).exists() || !std::path::Path::new("/bin/busybox").exists() {
        eprintln!("skipping: docker CLI or busybox-static missing");
        return;
    }
    let d = Daemon::start();
    let id = import_busybox(&d);
    assert!(id.starts_with("sha256:"), "{id}");

    let out = ok(d.docker(&["images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}"]));
    assert_eq!(out, format!("busybox:latest {}\n", &id[7..19]));
    let out = ok(d.docker(&[
        "image",
        "inspect",
        "-f",
        "{{.Id}} {{json .Config.Cmd}}",
        "busybox",
    ]));
    assert_eq!(out, format!("{id} [\"sh\"]\n"));

    ok(d.docker(&["tag", "busybox", "me/bb:1"]));
    let out = ok(d.docker(&[
        "images",
        "--filter",
        "reference=me/*",
        "--format",
        "{{.Repository}}:{{.Tag}}",
    ]));
    assert_eq!(out, "me/bb:1\n");
    let saved = d.dir.path().join("saved.tar");
    ok(d.docker(&["save", "-o", saved.to_str().unwrap(), "busybox", "me/bb:1"]));
    assert!(std::fs::metadata(&saved).unwrap().len() > 1000);

    // Create containers from it; the image is then in use.
    let cid = ok(d.docker(&[
        "create", "--name", "c1", "-e", "A=1", "busybox", "echo", "hi",
    ]));
    let cid = cid.trim();
    assert_eq!(cid.len(), 64);
    let out = ok(d.docker(&[
        "inspect",
        "-f",
        "{{.Path}} {{.Args}} {{json .Config.Env}} {{.Image}}",
        "c1",
    ]));
    assert_eq!(out, format!("echo [hi] [\"PATH=/bin\",\"A=1\"] {id}\n"));
    let out = ok(d.docker(&[
        "ps",
        "-a",
        "--format",
        "{{.Names}} {{.Image}} {{.Command}} {{.Status}}",
    ]));
    assert_eq!(out, "c1 busybox \"echo hi\" Created\n");
    let out = d.docker(&["create", "--name", "c1", "busybox"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("is already in use by container"));
    let out = d.docker(&["create", "nosuchimage"]);
    assert!(!out.status.success());
    ok(d.docker(&["rmi", "me/bb:1"]));
    let out = d.docker(&["rmi", "busybox"]);
    assert!(
        !out.status.success(),
        "the last tag of an image in use stays"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("conflict"),
        "{out:?}"
    );
    assert_eq!(ok(d.docker(&["rm", "c1"])), "c1\n");

    let out = ok(d.docker(&["rmi", "busybox"]));
    assert!(out.contains("Untagged: busybox:latest"), "{out}");
    assert!(out.contains(&format!("Deleted: {id}")), "{out}");
    assert_eq!(ok(d.docker(&["images", "-q"])), "");
    let out = d.docker(&["image", "inspect", "busybox"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("No such image: busybox"));

    let out = ok(d.docker(&["load", "-i", saved.to_str().unwrap()]));
    assert!(out.contains("Loaded image: busybox:latest"), "{out}");
    assert!(out.contains("Loaded image: me/bb:1"), "{out}");
    let out = ok(d.docker(&["history", "--format", "{{.Comment}}", "busybox"]));
    assert_eq!(out, "Imported from -\n");
    let out = ok(d.docker(&["info", "--format", "{{.Images}}"]));
    assert_eq!(out, "1\n");
    let out = ok(d.docker(&["image", "prune", "-af"]));
    assert!(out.contains(&format!("deleted: {id}")), "{out}");
    assert_eq!(ok(d.docker(&["images", "-q"])), "");
}

/// Intermediate images (untagged, parent of another image) are listed only with `-a`, are not
/// dangling, and go with the image they lead to, as with dockerd.
#[test]
fn intermediate_images_are_listed_with_all_only() {
    if !std::path::Path::new(DOCKER).exists() || !std::path::Path::new("/bin/busybox").exists() {
        eprintln!("skipping: docker CLI or busybox-static missing");
        return;
    }
    let d = Daemon::start();
    import_busybox(&d);
    ok(d.docker(&["create", "--name", "c1", "busybox", "true"]));
    let step = ok(d.docker(&["commit", "c1"])).trim().to_string();
    ok(d.docker(&["create", "--name", "c2", &step, "true"]));
    ok(d.docker(&["commit", "c2", "top:1"]));
    ok(d.docker(&["rm", "c1", "c2"]));
    let listed = |args: &[&str]| {
        let mut cmd = vec!["images", "--no-trunc", "--format", "{{.ID}}"];
        cmd.extend_from_slice(args);
        ok(d.docker(&cmd))
    };
    assert!(
        !listed(&[]).contains(&step),
        "intermediate listed by default"
    );
    assert!(listed(&["-a"]).contains(&step));
    assert!(!listed(&["-f", "dangling=true"]).contains(&step));
    let out = ok(d.docker(&["rmi", "top:1"]));
    assert!(out.contains(&format!("Deleted: {step}")), "{out}");
    assert!(!listed(&["-a"]).contains(&step));
}

/// `--change` on import and commit goes through the builder's instruction code: a refused
/// instruction is named in the error (the upload is refused whole), and a commit records the
/// changed config on top of the container's.
#[test]
fn import_and_commit_apply_changes() {
    if !std::path::Path::new(DOCKER).exists() || !std::path::Path::new("/bin/busybox").exists() {
        eprintln!("skipping: docker CLI or busybox-static missing");
        return;
    }
    let d = Daemon::start();
    import_busybox(&d);
    let tar = daemon_common::busybox_tar(d.dir.path());
    let tar = tar.to_str().unwrap();
    let out = d.docker(&["import", "-c", "FROM busybox", tar, "bad:1"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("FROM is not a valid change command"), "{err}");
    let out = d.docker(&["import", "-c", "ENV A", tar, "bad:1"]);
    assert!(!out.status.success());
    assert_eq!(ok(d.docker(&["images", "-q", "bad"])), "");

    ok(d.docker(&["create", "--name", "cc", "-e", "KEEP=1", "busybox", "true"]));
    ok(d.docker(&[
        "commit",
        "-c",
        "ENV A=1 B=\"two words\"",
        "-c",
        "CMD [\"echo\", \"hi\"]",
        "-c",
        "WORKDIR /srv",
        "cc",
        "changed:1",
    ]));
    let out = ok(d.docker(&[
        "image",
        "inspect",
        "-f",
        "{{json .Config.Env}} {{json .Config.Cmd}} {{.Config.WorkingDir}}",
        "changed:1",
    ]));
    assert_eq!(
        out,
        "[\"PATH=/bin\",\"KEEP=1\",\"A=1\",\"B=two words\"] [\"echo\",\"hi\"] /srv\n"
    );
}
