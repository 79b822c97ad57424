//! The store's public content API used by the registry client: `manifest_digest`,
//! `open_blob` (digest-verified streaming) and `put_manifest_for` (index + platform).

mod common;

use std::io::Read;

use berth_image::spec::{Platform, MT_OCI_CONFIG, MT_OCI_INDEX, MT_OCI_LAYER, MT_OCI_MANIFEST};
use berth_image::{Digest, Error, Reference};
use common::*;

/// Store a one-layer image for `arch` (blobs only, no record); returns manifest bytes.
fn image_blobs(ts: &TestStore, arch: &str, content: &[u8]) -> Vec<u8> {
    let tar = Layer::new().file("hello", content).tar();
    let (digests, _) = ts.store.put_layer(&tar[..], None, None).unwrap();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": arch, "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [digests.diff_id.to_string()]},
    }))
    .unwrap();
    ts.store.put_blob(&config[..], None, None).unwrap();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": MT_OCI_MANIFEST,
        "config": {"mediaType": MT_OCI_CONFIG, "digest": Digest::of(&config).to_string(),
                   "size": config.len()},
        "layers": [{"mediaType": MT_OCI_LAYER, "digest": digests.digest.to_string(),
                    "size": tar.len()}],
    }))
    .unwrap();
    ts.store.put_blob(&manifest[..], None, None).unwrap();
    manifest
}

fn index_of(entries: &[(&[u8], &str)]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": MT_OCI_INDEX,
        "manifests": entries.iter().map(|(m, arch)| serde_json::json!({
            "mediaType": MT_OCI_MANIFEST, "digest": Digest::of(m).to_string(), "size": m.len(),
            "platform": {"os": "linux", "architecture": arch},
        })).collect::<Vec<_>>(),
    }))
    .unwrap()
}

#[test]
fn manifest_digest_names_the_recorded_manifest() {
    let ts = TestStore::new();
    let m = image_blobs(&ts, Platform::host().architecture.as_str(), b"a");
    let r = Reference::parse_tagged("reg.test/app:1").unwrap();
    let id = ts.store.put_manifest(&m, Some(&r)).unwrap();
    for name in ["reg.test/app:1", id.as_str(), &id.hex()[..12]] {
        assert_eq!(
            ts.store.manifest_digest(name).unwrap(),
            Digest::of(&m),
            "{name}"
        );
    }
    assert!(matches!(
        ts.store.manifest_digest("reg.test/app:2"),
        Err(Error::ImageNotFound(_))
    ));
}

#[test]
fn open_blob_streams_and_verifies() {
    let ts = TestStore::new();
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    let (d, size) = ts.store.put_blob(&data[..], None, None).unwrap();

    let mut b = ts.store.open_blob(&d).unwrap();
    assert_eq!((b.size(), b.digest()), (size, &d));
    let mut back = Vec::new();
    b.read_to_end(&mut back).unwrap();
    assert_eq!(back, data);

    // Stopping after exactly `size` bytes and checking the rest.
    let mut b = ts.store.open_blob(&d).unwrap();
    let mut buf = vec![0u8; size as usize];
    b.read_exact(&mut buf).unwrap();
    b.verify_rest().unwrap();

    assert!(matches!(
        ts.store.open_blob(&Digest::of(b"absent")),
        Err(Error::BlobNotFound(_))
    ));

    // Same size, one byte flipped: the end-of-file read fails instead of passing it on.
    let path = ts.root().join("blobs/sha256").join(d.hex());
    let mut bad = data.clone();
    bad[1234] ^= 0xff;
    std::fs::write(&path, &bad).unwrap();
    let mut b = ts.store.open_blob(&d).unwrap();
    let err = b.read_to_end(&mut Vec::new()).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "{err}");
    let mut b = ts.store.open_blob(&d).unwrap();
    b.read_exact(&mut buf).unwrap();
    assert!(b.verify_rest().is_err());

    // Truncated: the size seen at open no longer holds.
    std::fs::write(&path, &data[..10]).unwrap();
    let mut b = ts.store.open_blob(&d).unwrap();
    assert_eq!(b.size(), 10);
    assert!(b.read_to_end(&mut Vec::new()).is_err());
}

#[test]
fn put_manifest_for_records_the_index_as_repo_digest() {
    let ts = TestStore::new();
    let host = Platform::host();
    let other_arch = if host.architecture == "s390x" {
        "riscv64"
    } else {
        "s390x"
    };
    let m_host = image_blobs(&ts, &host.architecture, b"host");
    let m_other = image_blobs(&ts, other_arch, b"other");
    let index = index_of(&[(&m_host, &host.architecture), (&m_other, other_arch)]);
    let index_digest = Digest::of(&index);
    let r = Reference::parse_tagged("reg.test/multi:latest").unwrap();

    let other = Platform {
        architecture: other_arch.into(),
        os: "linux".into(),
        variant: None,
    };
    let id = ts.store.put_manifest_for(&index, Some(&r), &other).unwrap();
    assert_eq!(
        ts.store.manifest_digest(id.as_str()).unwrap(),
        Digest::of(&m_other)
    );
    assert_eq!(ts.store.image_id("reg.test/multi:latest").unwrap(), id);
    let inspect = ts.store.inspect(id.as_str()).unwrap();
    assert_eq!(
        inspect.repo_digests,
        vec![format!("reg.test/multi@{index_digest}")]
    );
    // The index is kept (it is what the RepoDigest names) and resolves to this image.
    assert!(ts.store.has_blob(&index_digest));
    assert_eq!(
        ts.store
            .image_id(&format!("reg.test/multi@{index_digest}"))
            .unwrap(),
        id
    );

    // The default is the host's entry.
    let host_id = ts.store.put_manifest(&index, None).unwrap();
    assert_eq!(
        ts.store.manifest_digest(host_id.as_str()).unwrap(),
        Digest::of(&m_host)
    );
    assert_ne!(host_id, id);

    let absent = Platform {
        architecture: "mips64le".into(),
        os: "linux".into(),
        variant: None,
    };
    assert!(matches!(
        ts.store.put_manifest_for(&index, Some(&r), &absent),
        Err(Error::NoMatchingPlatform(p)) if p == "linux/mips64le"
    ));
    ts.store.gc().unwrap();
    assert!(ts.store.has_blob(&index_digest));
}
