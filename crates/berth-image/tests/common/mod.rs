//! Shared test helpers: a store in a temp dir that unmounts whatever it mounted on drop, and
//! builders for layer tars and images.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};

use berth_image::{Store, StoreOptions};

pub struct TestStore {
    pub dir: tempfile::TempDir,
    pub store: Store,
}

impl TestStore {
    pub fn new() -> TestStore {
        TestStore::with(StoreOptions::default())
    }

    pub fn with(opts: StoreOptions) -> TestStore {
        let dir = tempfile::Builder::new()
            .prefix("berth-image-test-")
            .tempdir_in("/var/tmp")
            .expect("temp dir");
        let store = Store::open_with(dir.path().join("image"), opts).expect("open store");
        TestStore { dir, store }
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("image")
    }

    pub fn count(&self, sub: &str) -> usize {
        std::fs::read_dir(self.root().join(sub))
            .map(|d| d.count())
            .unwrap_or(0)
    }
}

/// Unmount everything mounted below `dir` (deepest first).
pub fn unmount_below(dir: &Path) {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let prefix = dir.to_string_lossy().to_string();
    let mut points: Vec<String> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| p.starts_with(&prefix))
        .map(str::to_string)
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = nix::mount::umount2(p.as_str(), nix::mount::MntFlags::MNT_DETACH);
    }
}

impl Drop for TestStore {
    fn drop(&mut self) {
        unmount_below(self.dir.path());
    }
}

/// Builds layer tars in memory.
pub struct Layer {
    b: tar::Builder<Vec<u8>>,
}

impl Layer {
    pub fn new() -> Layer {
        Layer {
            b: tar::Builder::new(Vec::new()),
        }
    }

    fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        h
    }

    pub fn dir(mut self, path: &str) -> Layer {
        let mut h = Self::header(tar::EntryType::Directory, 0o755, 0);
        self.b.append_data(&mut h, path, std::io::empty()).unwrap();
        self
    }

    pub fn file(mut self, path: &str, data: &[u8]) -> Layer {
        self = self.file_mode(path, data, 0o644);
        self
    }

    pub fn file_mode(mut self, path: &str, data: &[u8], mode: u32) -> Layer {
        let mut h = Self::header(tar::EntryType::Regular, mode, data.len() as u64);
        self.b.append_data(&mut h, path, data).unwrap();
        self
    }

    pub fn symlink(mut self, path: &str, target: &str) -> Layer {
        let mut h = Self::header(tar::EntryType::Symlink, 0o777, 0);
        self.b.append_link(&mut h, path, target).unwrap();
        self
    }

    pub fn hardlink(mut self, path: &str, target: &str) -> Layer {
        let mut h = Self::header(tar::EntryType::Link, 0o644, 0);
        self.b.append_link(&mut h, path, target).unwrap();
        self
    }

    /// Append a raw header whose name field is written byte for byte (no sanitising).
    pub fn raw(mut self, name: &[u8], kind: tar::EntryType, link: &[u8], data: &[u8]) -> Layer {
        let mut h = Self::header(kind, 0o644, data.len() as u64);
        {
            let gnu = h.as_gnu_mut().unwrap();
            gnu.name = [0; 100];
            gnu.name[..name.len()].copy_from_slice(name);
            gnu.linkname = [0; 100];
            gnu.linkname[..link.len()].copy_from_slice(link);
        }
        h.set_cksum();
        self.b.append(&h, data).unwrap();
        self
    }

    pub fn tar(self) -> Vec<u8> {
        self.b.into_inner().unwrap()
    }

    pub fn gzip(self) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(&self.tar()).unwrap();
        e.finish().unwrap()
    }

    pub fn zstd(self) -> Vec<u8> {
        zstd::encode_all(self.tar().as_slice(), 1).unwrap()
    }
}

/// A busybox-static root filesystem tarball.
pub fn busybox_rootfs() -> Vec<u8> {
    let bb = std::fs::read("/bin/busybox").expect("busybox-static installed at /bin/busybox");
    Layer::new()
        .dir("bin")
        .dir("etc")
        .dir("tmp")
        .file_mode("bin/busybox", &bb, 0o755)
        .symlink("bin/sh", "busybox")
        .file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n")
        .tar()
}

pub fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(b))
}

/// Write an OCI image layout directory holding one image made of `layers` (each given as raw
/// blob bytes and its uncompressed tar), tagged `tag`. Returns the config digest.
pub fn write_oci_layout(
    dir: &Path,
    layers: &[(Vec<u8>, &'static str, Vec<u8>)],
    tag: &str,
) -> String {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |b: &[u8]| {
        let h = sha256_hex(b);
        std::fs::write(blobs.join(&h), b).unwrap();
        format!("sha256:{h}")
    };
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    for (blob, mt, tar) in layers {
        descs.push(serde_json::json!({"mediaType": mt, "digest": put(blob), "size": blob.len()}));
        diff_ids.push(format!("sha256:{}", sha256_hex(tar)));
    }
    let history: Vec<_> = layers.iter().enumerate().map(|(i, _)| serde_json::json!({"created": "2024-01-01T00:00:00Z", "created_by": format!("layer {i}")})).collect();
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux", "created": "2024-01-01T00:00:00Z",
        "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": history,
    });
    let cb = serde_json::to_vec(&config).unwrap();
    let cd = put(&cb);
    let manifest = serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cb.len()},
        "layers": descs,
    });
    let mb = serde_json::to_vec(&manifest).unwrap();
    let md = put(&mb);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": mb.len(),
            "annotations": {"org.opencontainers.image.ref.name": tag}}],
    });
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    cd
}

pub fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

/// Compressed layers only, so that skopeo (which compresses plain layers when writing OCI)
/// copies every blob byte for byte.
/// A small multi-layer image: busybox base (gzip), a second layer with whiteouts, a third zstd.
pub fn multi_layer_image() -> Vec<(Vec<u8>, &'static str, Vec<u8>)> {
    let base = busybox_rootfs();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&base).unwrap();
    let l1 = gz.finish().unwrap();
    let l2 = Layer::new()
        .dir("etc")
        .file("etc/motd", b"berth\n")
        .file("etc/.wh.passwd", b"")
        .dir("data")
        .file("data/a", b"a")
        .tar();
    let l3 = Layer::new()
        .dir("data")
        .file("data/.wh..wh..opq", b"")
        .file("data/b", b"b")
        .tar();
    let l3z = zstd::encode_all(l3.as_slice(), 1).unwrap();
    vec![
        (l1, "application/vnd.oci.image.layer.v1.tar+gzip", base),
        (gzip(&l2), "application/vnd.oci.image.layer.v1.tar+gzip", l2),
        (l3z, "application/vnd.oci.image.layer.v1.tar+zstd", l3),
    ]
}

/// The same image without the zstd layer (Docker manifests cannot describe zstd).
pub fn multi_layer_image_no_zstd() -> Vec<(Vec<u8>, &'static str, Vec<u8>)> {
    let mut v = multi_layer_image();
    let (_, _, tar) = v.pop().unwrap();
    v.push((
        gzip(&tar),
        "application/vnd.oci.image.layer.v1.tar+gzip",
        tar,
    ));
    v
}

/// Tar up a directory (for OCI layouts → archives).
pub fn tar_dir(dir: &Path) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    b.append_dir_all(".", dir).unwrap();
    b.into_inner().unwrap()
}

pub fn run(cmd: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
