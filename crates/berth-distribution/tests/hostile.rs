//! A registry that lies: every failure must be a clear error and leave the store consistent,
//! with no image recorded and no unverified blob stored.

mod common;

use berth_distribution::{no_progress, Client, Error, PullOptions, RegistryConfig};
use berth_image::{Digest, Store};
use common::*;

struct Case {
    _dir: tempfile::TempDir,
    store: Store,
}

fn store() -> Case {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    Case { _dir: dir, store }
}

fn good_layers() -> (Layer, Layer) {
    let big: Vec<u8> = (0..2_000_000u32).map(|i| (i * 7 % 253) as u8).collect();
    (
        layer_gzip(&[("bin/tool", &big)]),
        layer_zstd(&[("etc/conf", b"x=1\n")]),
    )
}

/// Pull `repo:latest` from `h` and return the error; checks nothing of it was recorded.
async fn pull_fails(h: &Hostile, repo: &str, case: &Case) -> Error {
    let name = format!("{}/{repo}:latest", h.host());
    let err = Client::new(RegistryConfig::default())
        .unwrap()
        .pull(&case.store, &name, &PullOptions::default(), no_progress())
        .await
        .unwrap_err();
    assert!(
        case.store.image_id(&name).is_err(),
        "no image may be recorded"
    );
    assert!(case.store.list().unwrap().is_empty());
    assert_fsck(&case.store);
    err
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layer_digest_mismatch_is_refused() {
    let (l1, l2) = good_layers();
    let (config, manifest) = image_docs(&[&l1, &l2]);
    let mut routes = image_routes("evil/app", &[&l1, &l2], &config, &manifest);
    // Same length, different bytes.
    let mut forged = l2.blob.clone();
    let last = forged.len() - 1;
    forged[last] ^= 0xff;
    routes.insert(
        format!("/v2/evil/app/blobs/{}", l2.digest),
        Reply::Ok(forged, "application/octet-stream"),
    );
    let h = Hostile::start(routes).await;
    let case = store();
    let err = pull_fails(&h, "evil/app", &case).await;
    assert!(
        err.to_string().contains("digest mismatch") || err.to_string().contains("invalid layer"),
        "{err}"
    );
    assert!(!case.store.has_blob(&l2.digest));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_digest_mismatch_is_refused() {
    let (l1, l2) = good_layers();
    let (config, manifest) = image_docs(&[&l1, &l2]);
    let mut routes = image_routes("evil/app", &[&l1, &l2], &config, &manifest);
    let mut forged = config.clone();
    forged[0] = b' ';
    routes.insert(
        format!("/v2/evil/app/blobs/{}", Digest::of(&config)),
        Reply::Ok(forged, "application/octet-stream"),
    );
    let h = Hostile::start(routes).await;
    let case = store();
    let err = pull_fails(&h, "evil/app", &case).await;
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_lying_about_sizes_is_refused() {
    let (l1, l2) = good_layers();
    let (config, _) = image_docs(&[&l1, &l2]);
    for delta in [-100i64, 100] {
        let mut m: serde_json::Value = serde_json::from_slice(&image_docs(&[&l1, &l2]).1).unwrap();
        m["layers"][0]["size"] = serde_json::json!(l1.blob.len() as i64 + delta);
        let manifest = serde_json::to_vec(&m).unwrap();
        let h = Hostile::start(image_routes("evil/app", &[&l1, &l2], &config, &manifest)).await;
        let case = store();
        let err = pull_fails(&h, "evil/app", &case).await;
        assert!(
            matches!(err, Error::BlobSize { .. }),
            "delta {delta}: {err}"
        );
        assert!(!case.store.has_blob(&l1.digest));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_body_is_bounded_by_descriptor() {
    let (l1, l2) = good_layers();
    let (config, manifest) = image_docs(&[&l1, &l2]);
    let mut routes = image_routes("evil/app", &[&l1, &l2], &config, &manifest);
    routes.insert(format!("/v2/evil/app/blobs/{}", l1.digest), Reply::Endless);
    let h = Hostile::start(routes).await;
    let case = store();
    let err = pull_fails(&h, "evil/app", &case).await;
    assert!(matches!(err, Error::BlobSize { .. }), "{err}");
    assert!(err.to_string().contains("longer"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_loop_is_bounded() {
    let (l1, l2) = good_layers();
    let (config, manifest) = image_docs(&[&l1, &l2]);
    let mut routes = image_routes("evil/app", &[&l1, &l2], &config, &manifest);
    routes.insert(
        format!("/v2/evil/app/blobs/{}", l1.digest),
        Reply::RedirectLoop,
    );
    let h = Hostile::start(routes).await;
    let case = store();
    let err = pull_fails(&h, "evil/app", &case).await;
    assert!(matches!(err, Error::Http { .. }), "{err}");
    let hits = h
        .log
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains(&l1.digest.to_string()))
        .count();
    // The first try and every resume each follow at most MAX_REDIRECTS redirects.
    let bound = (berth_distribution::pull::MAX_RESUMES + 1)
        * (berth_distribution::client::MAX_REDIRECTS + 1);
    assert!(hits <= bound, "{hits} requests");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_traversal_layer_is_refused() {
    // A tar entry named ../../evil, written past the tar crate's own path checks.
    let mut h = tar::Header::new_gnu();
    h.set_size(4);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    let name = b"../../evil";
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    h.set_cksum();
    let mut t = h.as_bytes().to_vec();
    t.extend_from_slice(b"evil");
    t.resize(t.len() + 508 + 1024, 0);
    let blob = gzip(&t);
    let bad = Layer {
        digest: Digest::of(&blob),
        diff_id: Digest::of(&t),
        blob,
        media_type: berth_image::spec::MT_OCI_LAYER_GZIP,
    };
    let (config, manifest) = image_docs(&[&bad]);
    let h = Hostile::start(image_routes("evil/app", &[&bad], &config, &manifest)).await;
    let case = store();
    let err = pull_fails(&h, "evil/app", &case).await;
    assert!(
        matches!(err, Error::Store(berth_image::Error::UnsafeEntry { .. })),
        "{err}"
    );
    assert!(!case.store.has_blob(&bad.digest));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_download_restarts_without_range_support() {
    let (l1, l2) = good_layers();
    let (config, manifest) = image_docs(&[&l1, &l2]);
    let mut routes = image_routes("ok/app", &[&l1, &l2], &config, &manifest);
    routes.insert(
        format!("/v2/ok/app/blobs/{}", l1.digest),
        Reply::CutOnceNoRange(l1.blob.clone(), l1.blob.len() / 3),
    );
    let h = Hostile::start(routes).await;
    let case = store();
    let name = format!("{}/ok/app:latest", h.host());
    let r = Client::new(RegistryConfig::default())
        .unwrap()
        .pull(&case.store, &name, &PullOptions::default(), no_progress())
        .await
        .unwrap();
    assert_eq!(r.id, Digest::of(&config));
    assert!(case.store.has_blob(&l1.digest));
    assert_fsck(&case.store);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_download_resumes_with_range() {
    let (l1, l2) = good_layers();
    let (config, manifest) = image_docs(&[&l1, &l2]);
    let mut routes = image_routes("ok/app", &[&l1, &l2], &config, &manifest);
    let cut = l1.blob.len() / 2;
    routes.insert(
        format!("/v2/ok/app/blobs/{}", l1.digest),
        Reply::CutOnce(l1.blob.clone(), cut),
    );
    let h = Hostile::start(routes).await;
    let case = store();
    let name = format!("{}/ok/app:latest", h.host());
    let r = Client::new(RegistryConfig::default())
        .unwrap()
        .pull(&case.store, &name, &PullOptions::default(), no_progress())
        .await
        .unwrap();
    assert_eq!(r.id, Digest::of(&config));
    assert_eq!(r.layers_downloaded, 2);
    let log = h.log.lock().unwrap().clone();
    let resumed: Vec<&String> = log.iter().filter(|l| l.contains(" range=")).collect();
    assert_eq!(resumed.len(), 1, "{log:?}");
    assert!(resumed[0].ends_with(&format!("range={cut}")), "{log:?}");
    assert_fsck(&case.store);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_platforms_and_docker_io_mirror() {
    let (l1, l2) = good_layers();
    let (config, manifest) = image_docs(&[&l1, &l2]);
    let (os, arch) = berth_image::spec::host_platform();
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": berth_image::spec::MT_OCI_INDEX,
        "manifests": [
            {"mediaType": berth_image::spec::MT_OCI_MANIFEST,
             "digest": Digest::of(b"not here").to_string(), "size": 8,
             "platform": {"os": "linux", "architecture": "s390x"}},
            {"mediaType": berth_image::spec::MT_OCI_MANIFEST,
             "digest": Digest::of(&manifest).to_string(), "size": manifest.len(),
             "platform": {"os": os, "architecture": arch}},
        ]
    }))
    .unwrap();
    // Served as docker.io's library/app through a mirror: no request leaves loopback.
    let mut routes = image_routes("library/app", &[&l1, &l2], &config, &manifest);
    routes.insert(
        "/v2/library/app/manifests/latest".into(),
        Reply::Ok(index.clone(), berth_image::spec::MT_OCI_INDEX),
    );
    routes.insert(
        format!("/v2/library/app/manifests/{}", Digest::of(&manifest)),
        Reply::Ok(manifest.clone(), berth_image::spec::MT_OCI_MANIFEST),
    );
    let h = Hostile::start(routes).await;
    let c = Client::new(RegistryConfig {
        mirrors: vec![format!("http://{}", h.host())],
        ..Default::default()
    })
    .unwrap();
    let case = store();
    let other = PullOptions {
        platform: Some("linux/riscv64".into()),
        ..Default::default()
    };
    let err = c
        .pull(&case.store, "app", &other, no_progress())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NoMatchingPlatform { .. }), "{err}");
    let r = c
        .pull(&case.store, "app", &PullOptions::default(), no_progress())
        .await
        .unwrap();
    assert_eq!(r.digest, Digest::of(&index));
    assert_eq!(r.id, Digest::of(&config));
    assert_eq!(case.store.image_id("app:latest").unwrap(), r.id);
    let di = c.inspect_distribution("app", None).await.unwrap();
    assert_eq!(di.platforms.len(), 2);
    assert_fsck(&case.store);
}

/// `--platform` for a non-host entry of an index: the image is that entry's, the RepoDigest
/// the index's (what Docker records), and a push sends the platform manifest, read through
/// the store's API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_host_platform_records_index_repo_digest() {
    let (l1, l2) = good_layers();
    let (config, manifest) = image_docs(&[&l1, &l2]);
    let (_, host_arch) = berth_image::spec::host_platform();
    let other = if host_arch == "s390x" {
        "riscv64"
    } else {
        "s390x"
    };
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": berth_image::spec::MT_OCI_INDEX,
        "manifests": [
            {"mediaType": berth_image::spec::MT_OCI_MANIFEST,
             "digest": Digest::of(&manifest).to_string(), "size": manifest.len(),
             "platform": {"os": "linux", "architecture": other}},
        ]
    }))
    .unwrap();
    let mut routes = image_routes("plat/app", &[&l1, &l2], &config, &manifest);
    routes.insert(
        "/v2/plat/app/manifests/latest".into(),
        Reply::Ok(index.clone(), berth_image::spec::MT_OCI_INDEX),
    );
    routes.insert(
        format!("/v2/plat/app/manifests/{}", Digest::of(&manifest)),
        Reply::Ok(manifest.clone(), berth_image::spec::MT_OCI_MANIFEST),
    );
    let h = Hostile::start(routes).await;
    let c = Client::new(RegistryConfig::default()).unwrap();
    let case = store();
    let name = format!("{}/plat/app:latest", h.host());
    let opts = PullOptions {
        platform: Some(format!("linux/{other}")),
        ..Default::default()
    };
    let r = c
        .pull(&case.store, &name, &opts, no_progress())
        .await
        .unwrap();
    assert_eq!(r.digest, Digest::of(&index));
    assert_eq!(r.id, Digest::of(&config));
    let inspect = case.store.inspect(&name).unwrap();
    assert_eq!(
        inspect.repo_digests,
        vec![format!("{}/plat/app@{}", h.host(), Digest::of(&index))]
    );
    assert_eq!(
        case.store.manifest_digest(&name).unwrap(),
        Digest::of(&manifest)
    );
    assert_fsck(&case.store);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_tokens_are_cached_per_scope() {
    let (l1, l2) = good_layers();
    let (config, manifest) = image_docs(&[&l1, &l2]);
    let routes = image_routes("tok/app", &[&l1, &l2], &config, &manifest);
    let h = Hostile::start_with_token(routes, Some("t0ken")).await;
    let case = store();
    let c = Client::new(RegistryConfig::default()).unwrap();
    let name = format!("{}/tok/app:latest", h.host());
    let r = c
        .pull(&case.store, &name, &PullOptions::default(), no_progress())
        .await
        .unwrap();
    assert_eq!(r.id, Digest::of(&config));
    let log = h.log.lock().unwrap().clone();
    let tokens: Vec<&String> = log.iter().filter(|l| l.contains("/token")).collect();
    // One token for repository:tok/app:pull, reused for the manifest, config and layers,
    // each fetched once (no 401 round trip).
    assert_eq!(tokens.len(), 1, "{log:?}");
    assert!(
        tokens[0].contains("scope=repository%3Atok%2Fapp%3Apull"),
        "{log:?}"
    );
    let blob_requests = log.iter().filter(|l| l.contains("/blobs/")).count();
    assert_eq!(blob_requests, 3, "{log:?}");
    assert_fsck(&case.store);
}
