//! Push to and pull from a real berth registry over loopback sockets.

mod common;

use base64::Engine as _;
use berth_distribution::{
    no_progress, Client, Credentials, DockerConfig, Error, PullOptions, PushOptions, RegistryConfig,
};
use berth_image::Store;
use common::*;

fn client() -> Client {
    Client::new(RegistryConfig::default()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_pull_round_trip_skip_and_mount() {
    let reg = BerthRegistry::start(None).await;
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (
        Store::open(a_dir.path()).unwrap(),
        Store::open(b_dir.path()).unwrap(),
    );
    let name = format!("{}/test/app:v1", reg.host());
    let id = make_image(&a, &name, "one");
    let c = client();

    let ev = Events::default();
    let pushed = c
        .push(&a, &name, &PushOptions::default(), ev.sink())
        .await
        .unwrap();
    assert_eq!((pushed.uploaded, pushed.skipped, pushed.mounted), (3, 0, 0));
    let st = ev.statuses();
    assert!(st.iter().any(|s| s == "Pushed"), "{st:?}");
    assert!(
        st.iter().any(|s| s.starts_with("v1: digest: sha256:")),
        "{st:?}"
    );

    let ev = Events::default();
    let pulled = c
        .pull(&b, &name, &PullOptions::default(), ev.sink())
        .await
        .unwrap();
    assert_eq!(pulled.id, id);
    assert_eq!(pulled.digest, pushed.digest);
    assert_eq!(pulled.layers_downloaded, 2);
    assert!(pulled.updated);
    let st = ev.statuses();
    assert_eq!(
        st.iter().filter(|s| *s == "Pull complete").count(),
        2,
        "{st:?}"
    );
    assert!(st.contains(&format!("Digest: {}", pushed.digest)), "{st:?}");
    assert!(
        st.contains(&format!("Status: Downloaded newer image for {name}")),
        "{st:?}"
    );
    let downloading =
        ev.0.lock()
            .unwrap()
            .iter()
            .filter(|m| m.status == "Downloading")
            .count();
    assert!(downloading > 0);
    assert_eq!(b.image_id(&name).unwrap(), id);
    let ia = a.inspect(&name).unwrap();
    let ib = b.inspect(&name).unwrap();
    assert_eq!(ia.root_fs.layers, ib.root_fs.layers);
    assert_eq!(
        ib.repo_digests,
        vec![format!("{}/test/app@{}", reg.host(), pushed.digest)]
    );
    assert_fsck(&b);

    // Everything present: nothing downloaded, nothing uploaded.
    let ev = Events::default();
    let again = c
        .pull(&b, &name, &PullOptions::default(), ev.sink())
        .await
        .unwrap();
    assert_eq!(again.layers_downloaded, 0);
    assert!(!again.updated);
    assert!(ev
        .statuses()
        .contains(&format!("Status: Image is up to date for {name}")));
    assert_eq!(
        ev.statuses()
            .iter()
            .filter(|s| *s == "Already exists")
            .count(),
        2
    );
    assert_eq!(
        a.inspect(&name).unwrap().repo_digests,
        vec![format!("{}/test/app@{}", reg.host(), pushed.digest)],
        "push records the RepoDigest"
    );
    let re = c
        .push(&a, &name, &PushOptions::default(), no_progress())
        .await
        .unwrap();
    assert_eq!((re.uploaded, re.skipped), (0, 3));
    assert_eq!(re.digest, pushed.digest);

    // A store that pulled from test/app pushes to other/app by mounting.
    let other = format!("{}/other/app:v2", reg.host());
    b.tag(&name, &other).unwrap();
    let ev = Events::default();
    let m = c
        .push(&b, &other, &PushOptions::default(), ev.sink())
        .await
        .unwrap();
    assert_eq!((m.mounted, m.uploaded), (3, 0));
    assert!(ev.statuses().iter().any(|s| s == "Mounted from test/app"));
    assert_eq!(m.digest, pushed.digest);

    // Chunked upload of a different image, pulled by digest.
    let chunked = format!("{}/test/chunked:1", reg.host());
    let id2 = make_image(&a, &chunked, "two");
    let opts = PushOptions {
        chunk_size: Some(1 << 20),
        ..Default::default()
    };
    let p2 = c.push(&a, &chunked, &opts, no_progress()).await.unwrap();
    let by_digest = format!("{}/test/chunked@{}", reg.host(), p2.digest);
    let pulled2 = c
        .pull(&b, &by_digest, &PullOptions::default(), no_progress())
        .await
        .unwrap();
    assert_eq!(pulled2.id, id2);
    assert_eq!(
        pulled2.layers_downloaded, 1,
        "the shared gzip layer was already present"
    );
    assert_fsck(&b);

    // `docker push REPO` pushes every tag of it.
    a.tag(&chunked, &format!("{}/test/chunked:2", reg.host()))
        .unwrap();
    let all = c
        .push_all_tags(
            &a,
            &format!("{}/test/chunked", reg.host()),
            &PushOptions::default(),
            no_progress(),
        )
        .await
        .unwrap();
    let tags: Vec<&str> = all.iter().map(|p| p.tag.as_str()).collect();
    assert_eq!(tags, ["1", "2"]);
    assert!(all.iter().all(|p| p.digest == p2.digest && p.uploaded == 0));

    // Distribution inspect and unknown tags.
    let di = c.inspect_distribution(&name, None).await.unwrap();
    assert_eq!(di.descriptor["digest"], pushed.digest.to_string());
    let missing = c
        .pull(
            &b,
            &format!("{}/test/app:nope", reg.host()),
            &PullOptions::default(),
            no_progress(),
        )
        .await
        .unwrap_err();
    assert!(matches!(missing, Error::ManifestNotFound(_)), "{missing}");
    assert_eq!(missing.kind(), berth_distribution::ErrorKind::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_token_auth_with_docker_config() {
    auth_round_trip("bearer").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_with_docker_config() {
    auth_round_trip("basic").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_auth_over_tls() {
    auth_round_trip_with("bearer", true).await;
}

async fn auth_round_trip(scheme: &str) {
    auth_round_trip_with(scheme, false).await;
}

/// With `tls` the registry speaks only HTTPS (self-signed, accepted because loopback
/// registries are insecure as in Docker), so success proves the HTTPS path.
async fn auth_round_trip_with(scheme: &str, tls: bool) {
    let auth_dir = tempfile::tempdir().unwrap();
    let htpasswd = auth_dir.path().join("htpasswd");
    let line = berth_registry::auth::htpasswd_line("alice", "s3cret").unwrap();
    std::fs::write(&htpasswd, format!("{line}\n")).unwrap();
    let cfg: berth_registry::auth::AuthConfig = serde_json::from_value(serde_json::json!({
        "htpasswd": htpasswd, "scheme": scheme, "tokenTtlSecs": 300
    }))
    .unwrap();
    let reg = BerthRegistry::start_with(Some(cfg), tls).await;

    // A docker config file as `docker login` writes it.
    let conf = auth_dir.path().join("config.json");
    let b64 = base64::engine::general_purpose::STANDARD.encode("alice:s3cret");
    std::fs::write(
        &conf,
        serde_json::to_vec(&serde_json::json!({"auths": {reg.host(): {"auth": b64}}})).unwrap(),
    )
    .unwrap();
    let creds = DockerConfig::load(&conf)
        .unwrap()
        .credentials_for(&reg.host())
        .cloned();
    assert!(creds.is_some());

    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (
        Store::open(a_dir.path()).unwrap(),
        Store::open(b_dir.path()).unwrap(),
    );
    let name = format!("{}/secure/app:1", reg.host());
    let id = make_image(&a, &name, "auth");
    let c = client();

    // Anonymous: refused with a clear error, nothing stored.
    let err = c
        .push(&a, &name, &PushOptions::default(), no_progress())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unauthorized(_)), "{err}");
    assert_eq!(err.kind(), berth_distribution::ErrorKind::Unauthorized);

    // Wrong password: login fails; right one: succeeds.
    let bad = c
        .login(&reg.host(), &Credentials::basic("alice", "nope"))
        .await
        .unwrap_err();
    assert!(matches!(bad, Error::LoginFailed { .. }), "{bad}");
    assert_eq!(bad.kind(), berth_distribution::ErrorKind::Unauthorized);
    assert!(bad.to_string().starts_with("login attempt to "), "{bad}");
    let ok = c.login(&reg.host(), creds.as_ref().unwrap()).await.unwrap();
    assert_eq!(ok, "Login Succeeded");

    let push = PushOptions {
        credentials: creds.clone(),
        ..Default::default()
    };
    let pushed = c.push(&a, &name, &push, no_progress()).await.unwrap();
    let pull = PullOptions {
        credentials: creds.clone(),
        ..Default::default()
    };
    let err = c
        .pull(&b, &name, &PullOptions::default(), no_progress())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unauthorized(_)), "{err}");
    let pulled = c.pull(&b, &name, &pull, no_progress()).await.unwrap();
    assert_eq!(pulled.id, id);
    assert_eq!(pulled.digest, pushed.digest);
    assert_fsck(&b);
}

/// Throughput of a pull of one large layer over loopback; run with
/// `cargo test -p berth-distribution --release --test roundtrip -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement, not a check"]
async fn measure_pull_throughput() {
    let reg = BerthRegistry::start(None).await;
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (
        Store::open(a_dir.path()).unwrap(),
        Store::open(b_dir.path()).unwrap(),
    );
    // 4 layers of 32 MiB of poorly compressible data each.
    let mut state = 0x1234_5678u64;
    let layers: Vec<Layer> = (0..4)
        .map(|i| {
            let data: Vec<u8> = (0..32 << 20)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    (state >> 24) as u8
                })
                .collect();
            layer_gzip(&[(&format!("data/{i}"), &data)])
        })
        .collect();
    let mut parent = None;
    for l in &layers {
        let (_, chain) = a
            .put_layer(&l.blob[..], Some(&l.digest), parent.as_ref())
            .unwrap();
        parent = Some(chain);
    }
    let refs: Vec<&Layer> = layers.iter().collect();
    let (config, manifest) = image_docs(&refs);
    a.put_blob(&config[..], None, None).unwrap();
    let name = format!("{}/bench/big:1", reg.host());
    a.put_manifest(
        &manifest,
        Some(&berth_image::Reference::parse_tagged(&name).unwrap()),
    )
    .unwrap();
    let total: usize = layers.iter().map(|l| l.blob.len()).sum();
    let c = client();
    let t = std::time::Instant::now();
    c.push(&a, &name, &PushOptions::default(), no_progress())
        .await
        .unwrap();
    let push = t.elapsed();
    let t = std::time::Instant::now();
    c.pull(&b, &name, &PullOptions::default(), no_progress())
        .await
        .unwrap();
    let pull = t.elapsed();
    // The same download by skopeo (verify only, no unpack) for reference.
    let dir = b_dir.path().join("skopeo-dir");
    let t = std::time::Instant::now();
    let sk = std::process::Command::new("skopeo")
        .args(["--insecure-policy", "copy", "--src-tls-verify=false"])
        .arg(format!("docker://{name}"))
        .arg(format!("dir:{}", dir.display()))
        .status()
        .is_ok_and(|s| s.success());
    let skopeo = t.elapsed();
    let mib = total as f64 / (1 << 20) as f64;
    if sk {
        println!(
            "skopeo copy to dir: {:.2}s ({:.0} MiB/s)",
            skopeo.as_secs_f64(),
            mib / skopeo.as_secs_f64()
        );
    }
    println!(
        "{mib:.0} MiB in 4 layers: push {:.2}s ({:.0} MiB/s), pull+verify+unpack {:.2}s ({:.0} MiB/s)",
        push.as_secs_f64(),
        mib / push.as_secs_f64(),
        pull.as_secs_f64(),
        mib / pull.as_secs_f64()
    );
}

/// A layer blob corrupted on disk (same size) is never uploaded as good: the streaming PUT
/// and the chunked upload both fail, and the registry never gets the blob.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_refuses_a_corrupted_local_blob() {
    let reg = BerthRegistry::start(None).await;
    let dir = tempfile::tempdir().unwrap();
    let a = Store::open(dir.path()).unwrap();
    let name = format!("{}/test/corrupt:v1", reg.host());
    make_image(&a, &name, "corrupt");
    let md = a.manifest_digest(&name).unwrap();
    let manifest: berth_image::spec::Manifest =
        serde_json::from_slice(&a.read_blob(&md).unwrap()).unwrap();
    let layer = &manifest.layers[0].digest;
    let path = dir.path().join("blobs/sha256").join(layer.hex());
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();

    let c = client();
    for chunk_size in [None, Some(1 << 20)] {
        let opts = PushOptions {
            chunk_size,
            ..Default::default()
        };
        let err = c.push(&a, &name, &opts, no_progress()).await.unwrap_err();
        let msg = err.to_string();
        // Caught locally, not by the registry's digest check.
        assert!(
            msg.contains("is corrupt") && msg.contains(layer.hex()),
            "{chunk_size:?}: {msg}"
        );
    }
    let head = reqwest::Client::new()
        .head(format!(
            "http://{}/v2/test/corrupt/blobs/{layer}",
            reg.host()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), reqwest::StatusCode::NOT_FOUND);
}
