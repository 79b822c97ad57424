//! Interoperability with an independent client: skopeo pushes what berth pulls, and copies
//! (digest-verifying every blob) what berth pushes. Skipped when skopeo is not installed.

mod common;

use std::process::Command;

use berth_distribution::{no_progress, Client, PullOptions, PushOptions, RegistryConfig};
use berth_image::{ArchiveFormat, Store};
use common::*;

fn skopeo() -> bool {
    Command::new("skopeo")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn run_skopeo(args: &[&str]) {
    let out = Command::new("skopeo")
        .args(["--insecure-policy"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_round_trips() {
    if !skopeo() {
        eprintln!("skopeo not installed; skipping");
        return;
    }
    let reg = BerthRegistry::start(None).await;
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (
        Store::open(tmp.path().join("a")).unwrap(),
        Store::open(tmp.path().join("b")).unwrap(),
    );
    let ours = format!("{}/interop/ours:1", reg.host());
    let id = make_image(&a, &ours, "interop");

    // skopeo pushes an OCI archive saved by berth-image; berth pulls it.
    let archive = tmp.path().join("img.tar");
    a.save(
        &[ours.as_str()],
        ArchiveFormat::Oci,
        std::fs::File::create(&archive).unwrap(),
    )
    .unwrap();
    let theirs = format!("{}/interop/theirs:1", reg.host());
    let (src, dst) = (
        format!("oci-archive:{}", archive.display()),
        format!("docker://{theirs}"),
    );
    tokio::task::spawn_blocking(move || {
        run_skopeo(&["copy", "--dest-tls-verify=false", &src, &dst]);
    })
    .await
    .unwrap();
    let c = Client::new(RegistryConfig::default()).unwrap();
    let pulled = c
        .pull(&b, &theirs, &PullOptions::default(), no_progress())
        .await
        .unwrap();
    assert_eq!(pulled.id, id);
    assert_fsck(&b);

    // berth pushes; skopeo copies it out, verifying every digest.
    c.push(&a, &ours, &PushOptions::default(), no_progress())
        .await
        .unwrap();
    let out = tmp.path().join("dir");
    let (src, dst) = (format!("docker://{ours}"), format!("dir:{}", out.display()));
    tokio::task::spawn_blocking(move || {
        run_skopeo(&["copy", "--src-tls-verify=false", &src, &dst]);
    })
    .await
    .unwrap();
    assert!(out.join("manifest.json").exists());

    // A Docker schema2 manifest (skopeo converts; gzip layers only) pulls to the same image.
    let l = layer_gzip(&[("etc/v2s2", b"docker\n")]);
    let (config, manifest) = image_docs(&[&l]);
    a.put_layer(&l.blob[..], Some(&l.digest), None).unwrap();
    a.put_blob(&config[..], None, None).unwrap();
    let oci = format!("{}/interop/oci:1", reg.host());
    let id2 = a
        .put_manifest(
            &manifest,
            Some(&berth_image::Reference::parse_tagged(&oci).unwrap()),
        )
        .unwrap();
    c.push(&a, &oci, &PushOptions::default(), no_progress())
        .await
        .unwrap();
    let v2s2 = format!("{}/interop/v2s2:1", reg.host());
    let (src, dst) = (format!("docker://{oci}"), format!("docker://{v2s2}"));
    tokio::task::spawn_blocking(move || {
        run_skopeo(&[
            "copy",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            "--format=v2s2",
            &src,
            &dst,
        ]);
    })
    .await
    .unwrap();
    let pulled = c
        .pull(&b, &v2s2, &PullOptions::default(), no_progress())
        .await
        .unwrap();
    assert_eq!(pulled.id, id2);
    let raw = b.read_blob(&pulled.digest).unwrap();
    let m: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(m["mediaType"], berth_image::spec::MT_DOCKER_MANIFEST);
    assert_fsck(&b);
}
