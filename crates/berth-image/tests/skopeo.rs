//! Round trips with an implementation nobody here wrote: Debian's skopeo writes docker-archive
//! and oci-archive files Berth loads with identical image IDs and layer digests, and reads what
//! Berth saves back with the same IDs and digests.

mod common;

use std::path::Path;

use berth_image::ArchiveFormat;
use common::*;

fn skopeo(args: &[&str]) -> String {
    let mut a = vec!["--insecure-policy"];
    a.extend_from_slice(args);
    run("skopeo", &a)
}

/// (config digest, layer digests) of the single image in an OCI layout directory.
fn layout_image(dir: &Path) -> (String, Vec<String>) {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let md = index["manifests"][0]["digest"].as_str().unwrap();
    let blob = |d: &str| {
        std::fs::read(
            dir.join("blobs/sha256")
                .join(d.trim_start_matches("sha256:")),
        )
        .unwrap()
    };
    let m: serde_json::Value = serde_json::from_slice(&blob(md)).unwrap();
    let layers = m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect();
    (m["config"]["digest"].as_str().unwrap().to_string(), layers)
}

fn diff_ids(layers: &[(Vec<u8>, &'static str, Vec<u8>)]) -> Vec<String> {
    layers
        .iter()
        .map(|(_, _, t)| format!("sha256:{}", sha256_hex(t)))
        .collect()
}

#[test]
fn skopeo_archives_load_with_identical_ids() {
    let ts = TestStore::new();
    let d = ts.dir.path();
    // Docker images cannot carry zstd layers, so skopeo's docker-archive gets gzip + plain.
    let layers = multi_layer_image_no_zstd();
    let config = write_oci_layout(&d.join("src"), &layers, "latest");
    let src = format!("oci:{}:latest", d.join("src").display());

    // docker-archive written by skopeo (layers decompressed, config byte-identical).
    let da = d.join("skopeo-docker.tar");
    skopeo(&[
        "copy",
        &src,
        &format!("docker-archive:{}:busybox:latest", da.display()),
    ]);
    let loaded = ts.store.load(std::fs::File::open(&da).unwrap()).unwrap();
    assert_eq!(loaded.len(), 1);
    assert_eq!(loaded[0].id.to_string(), config);
    assert_eq!(loaded[0].tags, vec!["busybox:latest"]);
    let inspect = ts.store.inspect("busybox").unwrap();
    assert_eq!(inspect.root_fs.layers, diff_ids(&layers));

    // oci-archive written by skopeo (blobs kept as they are: gzip, plain, zstd).
    let ts2 = TestStore::new();
    let oa = d.join("skopeo-oci.tar");
    let zlayers = multi_layer_image();
    let zconfig = write_oci_layout(&d.join("zsrc"), &zlayers, "latest");
    skopeo(&[
        "copy",
        &format!("oci:{}:latest", d.join("zsrc").display()),
        &format!("oci-archive:{}:example.com/bb:v1", oa.display()),
    ]);
    let loaded = ts2.store.load(std::fs::File::open(&oa).unwrap()).unwrap();
    assert_eq!(loaded[0].id.to_string(), zconfig);
    assert_eq!(loaded[0].tags, vec!["example.com/bb:v1"]);
    let (_, src_layers) = layout_image(&d.join("zsrc"));
    for l in &src_layers {
        assert!(
            ts2.store.has_blob(&l.parse().unwrap()),
            "layer blob {l} kept as is"
        );
    }
    let r = ts2.store.create_rootfs("example.com/bb:v1", "c").unwrap();
    assert!(std::process::Command::new("chroot")
        .arg(&r.path)
        .args(["/bin/busybox", "true"])
        .status()
        .unwrap()
        .success());
    r.remove().unwrap();
}

#[test]
fn berth_archives_read_by_skopeo_with_identical_ids() {
    let ts = TestStore::new();
    let d = ts.dir.path();
    let layers = multi_layer_image();
    write_oci_layout(&d.join("src"), &layers, "busybox:latest");
    let id = ts.store.load(tar_dir(&d.join("src")).as_slice()).unwrap()[0]
        .id
        .clone();
    ts.store.tag(&id.to_string(), "busybox:latest").unwrap();

    // docker-archive → skopeo inspect and copy.
    let da = d.join("berth-docker.tar");
    ts.store
        .save(
            &["busybox"],
            ArchiveFormat::Docker,
            std::fs::File::create(&da).unwrap(),
        )
        .unwrap();
    let raw_config = std::process::Command::new("skopeo")
        .args([
            "--insecure-policy",
            "inspect",
            "--config",
            "--raw",
            &format!("docker-archive:{}", da.display()),
        ])
        .output()
        .unwrap();
    assert!(
        raw_config.status.success(),
        "{}",
        String::from_utf8_lossy(&raw_config.stderr)
    );
    assert_eq!(
        format!("sha256:{}", sha256_hex(&raw_config.stdout)),
        id.to_string()
    );
    let info: serde_json::Value = serde_json::from_str(&skopeo(&[
        "inspect",
        &format!("docker-archive:{}", da.display()),
    ]))
    .unwrap();
    let skopeo_layers: Vec<String> = info["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(skopeo_layers, diff_ids(&layers));
    assert_eq!(
        info["RepoTags"],
        serde_json::json!([]),
        "docker-archive sources list no registry tags"
    );
    // `dir:` keeps the manifest type, so the config bytes must come through untouched.
    let out = d.join("out-dir");
    skopeo(&[
        "copy",
        &format!("docker-archive:{}", da.display()),
        &format!("dir:{}", out.display()),
    ]);
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(m["config"]["digest"].as_str().unwrap(), id.to_string());
    assert_eq!(
        sha256_hex(&std::fs::read(out.join(id.hex())).unwrap()),
        id.hex()
    );
    // `oci:` converts the Docker manifest to OCI, and skopeo re-serialises the config while
    // doing so (its own behaviour): the content and the layer diff IDs stay the same.
    let out = d.join("out-oci-from-docker");
    skopeo(&[
        "copy",
        &format!("docker-archive:{}", da.display()),
        &format!("oci:{}:x", out.display()),
    ]);
    let cfg = layout_image(&out).0;
    let cfg: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            out.join("blobs/sha256")
                .join(cfg.trim_start_matches("sha256:")),
        )
        .unwrap(),
    )
    .unwrap();
    let ours: serde_json::Value = serde_json::from_slice(&raw_config.stdout).unwrap();
    assert_eq!(cfg, ours);

    // oci-archive → skopeo copy keeps config and layer blobs byte for byte.
    let oa = d.join("berth-oci.tar");
    ts.store
        .save(
            &["busybox:latest"],
            ArchiveFormat::Oci,
            std::fs::File::create(&oa).unwrap(),
        )
        .unwrap();
    let out = d.join("out-oci");
    skopeo(&[
        "copy",
        &format!("oci-archive:{}", oa.display()),
        &format!("oci:{}:x", out.display()),
    ]);
    let (cfg, ls) = layout_image(&out);
    assert_eq!(cfg, id.to_string());
    assert_eq!(ls, layout_image(&d.join("src")).1);

    // And Berth reads its own archives back into a fresh store with the same ID.
    for (p, tags) in [(&da, vec!["busybox:latest"]), (&oa, vec!["busybox:latest"])] {
        let fresh = TestStore::new();
        let l = fresh.store.load(std::fs::File::open(p).unwrap()).unwrap();
        assert_eq!(l[0].id, id);
        assert_eq!(l[0].tags, tags);
    }
}
