//! The calls a registry client makes: blobs from streams with expected digests, layers
//! verified and unpacked in one pass, manifests and manifest lists recorded under a
//! reference; plus archive variants (docker 25+ combined, gzip-compressed archives).

mod common;

use berth_image::{Digest, Reference};
use common::*;

#[test]
fn pull_like_flow_with_manifest_list() {
    let ts = TestStore::new();
    let layers = multi_layer_image();
    let mut parent: Option<Digest> = None;
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    for (blob, mt, tar) in &layers {
        let expected = Digest::of(blob);
        let (d, chain) = ts
            .store
            .put_layer(blob.as_slice(), Some(&expected), parent.as_ref())
            .unwrap();
        assert_eq!(d.digest, expected);
        assert_eq!(d.diff_id, Digest::of(tar));
        parent = Some(chain);
        descs.push(serde_json::json!({"mediaType": mt, "digest": d.digest, "size": d.size}));
        diff_ids.push(d.diff_id.to_string());
    }
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": diff_ids}
    }))
    .unwrap();
    let cd = Digest::of(&config);
    ts.store
        .put_blob(config.as_slice(), Some(&cd), Some(config.len() as u64))
        .unwrap();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": config.len()},
        "layers": descs,
    }))
    .unwrap();
    let md = Digest::of(&manifest);
    ts.store
        .put_blob(manifest.as_slice(), Some(&md), None)
        .unwrap();
    // A manifest list with an arm64 decoy first.
    let list = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": Digest::of(b"other"), "size": 5,
             "platform": {"architecture": "arm64", "os": "linux"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": manifest.len(),
             "platform": {"architecture": "amd64", "os": "linux"}},
        ]
    }))
    .unwrap();
    let r = Reference::parse("registry.example:5000/team/app:1.0").unwrap();
    let id = ts.store.put_manifest(&list, Some(&r)).unwrap();
    assert_eq!(id, cd);
    let inspect = ts
        .store
        .inspect("registry.example:5000/team/app:1.0")
        .unwrap();
    let ld = Digest::of(&list);
    assert_eq!(
        inspect.repo_digests,
        vec![format!("registry.example:5000/team/app@{ld}")]
    );
    assert_eq!(
        ts.store
            .image_id(&format!("registry.example:5000/team/app@{ld}"))
            .unwrap(),
        id
    );
    let f = ts.store.fsck().unwrap();
    assert!(f.ok(), "{:?}", f.problems);
    // gc keeps the list the repo digest names.
    ts.store.gc().unwrap();
    assert!(ts.store.has_blob(&ld));
    // A list without our platform is refused.
    let arm_only = serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": manifest.len(),
         "platform": {"architecture": "arm64", "os": "linux"}}]}))
    .unwrap();
    assert!(matches!(
        ts.store.put_manifest(&arm_only, None),
        Err(berth_image::Error::NoMatchingPlatform(_))
    ));
}

#[test]
fn docker25_combined_and_compressed_archives_load() {
    let ts = TestStore::new();
    let dir = ts.dir.path().join("layout");
    let layers = multi_layer_image();
    let config = write_oci_layout(&dir, &layers, "latest");
    // Add docker's manifest.json next to the OCI index, as docker 25+ `docker save` does.
    let layer_paths: Vec<String> = layers
        .iter()
        .map(|(b, _, _)| format!("blobs/sha256/{}", sha256_hex(b)))
        .collect();
    let mj = serde_json::json!([{"Config": format!("blobs/sha256/{}", config.trim_start_matches("sha256:")),
        "RepoTags": ["combined:1"], "Layers": layer_paths}]);
    std::fs::write(dir.join("manifest.json"), serde_json::to_vec(&mj).unwrap()).unwrap();
    let archive = gzip(&tar_dir(&dir));
    let loaded = ts.store.load(archive.as_slice()).unwrap();
    assert_eq!(loaded[0].id.to_string(), config);
    assert_eq!(loaded[0].tags, vec!["combined:1"]);
    let h = ts.store.history("combined:1").unwrap();
    assert_eq!(h.len(), 3);
    assert_eq!(h[2].created_by, "layer 0");
    assert!(h[0].size > 0);
}
