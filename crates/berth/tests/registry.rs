//! `berth registry` end to end: the real binary on an ephemeral loopback port, driven over
//! real sockets by a minimal HTTP/1.1 client, plus `berth registry gc` and skopeo interop.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use berth_registry::digest::Algorithm;

const BERTH: &str = env!("CARGO_BIN_EXE_berth");

/// A running `berth registry serve`; killed (and its root removed) on drop.
struct Server {
    child: Child,
    addr: String,
    root: tempfile::TempDir,
}

impl Server {
    fn start() -> Server {
        Self::start_with(&[])
    }

    fn start_with(extra: &[&str]) -> Server {
        let root = tempfile::tempdir().expect("tempdir");
        Self::start_in(root, extra)
    }

    fn start_in(root: tempfile::TempDir, extra: &[&str]) -> Server {
        let mut child = Command::new(BERTH)
            .args(["registry", "serve", "--addr", "127.0.0.1:0", "--root"])
            .arg(root.path())
            .args(extra)
            .env("RUST_LOG", "warn")
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn berth registry serve");
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = BufReader::new(stderr).lines();
        let addr = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(a) = line.strip_prefix("berth registry listening on ") {
                        break a.trim().to_string();
                    }
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("registry exited before listening");
                }
            }
        };
        // Keep draining stderr so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Server { child, addr, root }
    }

    fn stop(mut self) -> tempfile::TempDir {
        self.kill();
        let root = tempfile::tempdir().expect("tempdir");
        std::mem::replace(&mut self.root, root)
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn req(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
        request(&self.addr, method, path, headers, body)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("json body")
    }
}

/// One request on a fresh connection (`Connection: close`, so the body runs to EOF).
fn request(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
    let mut s = TcpStream::connect(addr).expect("connect");
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).expect("write head");
    s.write_all(body).expect("write body");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read response");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("response head");
    let text = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = text.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Resp {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

fn sha256(data: &[u8]) -> String {
    Algorithm::Sha256.digest(data).to_string()
}

/// Pushes a blob monolithically; returns its digest.
fn push_blob(srv: &Server, repo: &str, data: &[u8]) -> String {
    let d = sha256(data);
    let r = srv.req(
        "POST",
        &format!("/v2/{repo}/blobs/uploads/?digest={d}"),
        &[("Content-Type", "application/octet-stream")],
        data,
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("Docker-Content-Digest"), Some(d.as_str()));
    d
}

const IMAGE_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

fn image_manifest(config: &str, config_len: usize, layers: &[(&str, usize)]) -> Vec<u8> {
    let layers: Vec<_> = layers
        .iter()
        .map(|(d, n)| {
            serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": n})
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": IMAGE_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": config_len},
        "layers": layers,
    }))
    .expect("manifest json")
}

fn put_manifest(srv: &Server, repo: &str, reference: &str, body: &[u8]) -> Resp {
    srv.req(
        "PUT",
        &format!("/v2/{repo}/manifests/{reference}"),
        &[("Content-Type", IMAGE_MANIFEST)],
        body,
    )
}

#[test]
fn push_and_pull_blobs_and_manifests() {
    let srv = Server::start();
    let ping = srv.req("GET", "/v2/", &[], b"");
    assert_eq!(ping.status, 200);
    assert_eq!(
        ping.header("Docker-Distribution-API-Version"),
        Some("registry/2.0")
    );

    let layer = b"layer bytes 0123456789".to_vec();
    let config = br#"{"architecture":"amd64","os":"linux"}"#.to_vec();
    let ld = push_blob(&srv, "library/app", &layer);
    let cd = push_blob(&srv, "library/app", &config);

    let head = srv.req("HEAD", &format!("/v2/library/app/blobs/{ld}"), &[], b"");
    assert_eq!(head.status, 200);
    assert_eq!(head.header("Content-Length"), Some("22"));
    assert!(head.body.is_empty());
    let get = srv.req("GET", &format!("/v2/library/app/blobs/{ld}"), &[], b"");
    assert_eq!(get.body, layer);
    let part = srv.req(
        "GET",
        &format!("/v2/library/app/blobs/{ld}"),
        &[("Range", "bytes=6-10")],
        b"",
    );
    assert_eq!(part.status, 206);
    assert_eq!(part.body, b"bytes");
    assert_eq!(part.header("Content-Range"), Some("bytes 6-10/22"));
    let bad = srv.req(
        "GET",
        &format!("/v2/library/app/blobs/{ld}"),
        &[("Range", "bytes=100-")],
        b"",
    );
    assert_eq!(bad.status, 416);

    // Blobs are visible per repository.
    let other = srv.req("HEAD", &format!("/v2/other/blobs/{ld}"), &[], b"");
    assert_eq!(other.status, 404);
    let mount = srv.req(
        "POST",
        &format!("/v2/other/blobs/uploads/?mount={ld}&from=library/app"),
        &[],
        b"",
    );
    assert_eq!(mount.status, 201);
    assert_eq!(
        srv.req("HEAD", &format!("/v2/other/blobs/{ld}"), &[], b"")
            .status,
        200
    );

    let manifest = image_manifest(&cd, config.len(), &[(&ld, layer.len())]);
    let md = sha256(&manifest);
    let put = put_manifest(&srv, "library/app", "v1", &manifest);
    assert_eq!(put.status, 201);
    assert_eq!(put.header("Docker-Content-Digest"), Some(md.as_str()));
    for reference in ["v1", md.as_str()] {
        let got = srv.req(
            "GET",
            &format!("/v2/library/app/manifests/{reference}"),
            &[],
            b"",
        );
        assert_eq!(got.status, 200);
        assert_eq!(got.body, manifest);
        assert_eq!(got.header("Content-Type"), Some(IMAGE_MANIFEST));
        assert_eq!(got.header("Docker-Content-Digest"), Some(md.as_str()));
    }
    let missing = srv.req("GET", "/v2/library/app/manifests/nope", &[], b"");
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["errors"][0]["code"], "MANIFEST_UNKNOWN");
    let invalid = srv.req("GET", "/v2/Bad/manifests/v1", &[], b"");
    assert_eq!(invalid.status, 400);
    assert_eq!(invalid.json()["errors"][0]["code"], "NAME_INVALID");

    let catalog = srv.req("GET", "/v2/_catalog", &[], b"").json();
    assert_eq!(
        catalog["repositories"],
        serde_json::json!(["library/app", "other"])
    );

    // Delete the manifest, then the blob.
    let del = srv.req(
        "DELETE",
        &format!("/v2/library/app/manifests/{md}"),
        &[],
        b"",
    );
    assert_eq!(del.status, 202);
    assert_eq!(
        srv.req("GET", "/v2/library/app/manifests/v1", &[], b"")
            .status,
        404
    );
    let del = srv.req("DELETE", &format!("/v2/library/app/blobs/{ld}"), &[], b"");
    assert_eq!(del.status, 202);
    let gone = srv.req("GET", &format!("/v2/library/app/blobs/{ld}"), &[], b"");
    assert_eq!(gone.status, 404);
    assert_eq!(gone.json()["errors"][0]["code"], "BLOB_UNKNOWN");
}

#[test]
fn chunked_upload_rejects_out_of_order_chunks() {
    let srv = Server::start();
    let data: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
    let digest = sha256(&data);
    let start = srv.req("POST", "/v2/chunky/blobs/uploads/", &[], b"");
    assert_eq!(start.status, 202);
    let loc = start.header("Location").expect("location").to_string();

    let r = srv.req("PATCH", &loc, &[("Content-Range", "0-999")], &data[..1000]);
    assert_eq!(r.status, 202);
    assert_eq!(r.header("Range"), Some("0-999"));
    let loc = r.header("Location").expect("location").to_string();

    // Skipping ahead is refused, and the session survives.
    let r = srv.req(
        "PATCH",
        &loc,
        &[("Content-Range", "2000-2999")],
        &data[2000..],
    );
    assert_eq!(r.status, 416);
    let status = srv.req("GET", &loc, &[], b"");
    assert_eq!(status.status, 204);
    assert_eq!(status.header("Range"), Some("0-999"));

    // A range that disagrees with the body's length is refused before anything is written.
    let r = srv.req(
        "PATCH",
        &loc,
        &[("Content-Range", "1000-1499")],
        &data[1000..2000],
    );
    assert_eq!(r.status, 416);
    let r = srv.req(
        "PATCH",
        &loc,
        &[("Content-Range", "1000-1999")],
        &data[1000..2000],
    );
    assert_eq!(r.status, 202);
    // A wrong digest is refused without consuming the session.
    let wrong = sha256(b"something else");
    let r = srv.req("PUT", &format!("{loc}?digest={wrong}"), &[], b"");
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["errors"][0]["code"], "DIGEST_INVALID");
    // The last chunk rides on the closing PUT.
    let r = srv.req(
        "PUT",
        &format!("{loc}?digest={digest}"),
        &[("Content-Range", "2000-2999")],
        &data[2000..],
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let got = srv.req("GET", &format!("/v2/chunky/blobs/{digest}"), &[], b"");
    assert_eq!(got.body, data);
    // The finished session is gone.
    assert_eq!(srv.req("GET", &loc, &[], b"").status, 404);

    // Cancelling a session.
    let start = srv.req("POST", "/v2/chunky/blobs/uploads/", &[], b"");
    let loc = start.header("Location").expect("location").to_string();
    assert_eq!(srv.req("DELETE", &loc, &[], b"").status, 204);
    let gone = srv.req("GET", &loc, &[], b"");
    assert_eq!(gone.status, 404);
    assert_eq!(gone.json()["errors"][0]["code"], "BLOB_UPLOAD_UNKNOWN");
}

#[test]
fn tags_paginate_with_link_header() {
    let srv = Server::start();
    let config = b"{}".to_vec();
    let cd = push_blob(&srv, "paged", &config);
    let manifest = image_manifest(&cd, config.len(), &[]);
    for tag in ["d", "a", "c", "b", "e"] {
        assert_eq!(put_manifest(&srv, "paged", tag, &manifest).status, 201);
    }
    let all = srv.req("GET", "/v2/paged/tags/list", &[], b"").json();
    assert_eq!(all["tags"], serde_json::json!(["a", "b", "c", "d", "e"]));

    let page = srv.req("GET", "/v2/paged/tags/list?n=2", &[], b"");
    assert_eq!(page.json()["tags"], serde_json::json!(["a", "b"]));
    let link = page.header("Link").expect("link header").to_string();
    assert_eq!(link, "</v2/paged/tags/list?n=2&last=b>; rel=\"next\"");
    let next = link
        .trim_start_matches('<')
        .split_once('>')
        .map(|(u, _)| u.to_string())
        .expect("link target");
    let page = srv.req("GET", &next, &[], b"");
    assert_eq!(page.json()["tags"], serde_json::json!(["c", "d"]));
    let page = srv.req("GET", "/v2/paged/tags/list?n=2&last=d", &[], b"");
    assert_eq!(page.json()["tags"], serde_json::json!(["e"]));
    assert!(page.header("Link").is_none());
    let empty = srv.req("GET", "/v2/paged/tags/list?n=0", &[], b"");
    assert_eq!(empty.json()["tags"], serde_json::json!([]));
    assert!(empty.header("Link").is_none());

    // Deleting a tag leaves the manifest and the other tags.
    assert_eq!(
        srv.req("DELETE", "/v2/paged/manifests/a", &[], b"").status,
        202
    );
    let all = srv.req("GET", "/v2/paged/tags/list", &[], b"").json();
    assert_eq!(all["tags"], serde_json::json!(["b", "c", "d", "e"]));
    assert_eq!(
        srv.req("GET", "/v2/unknown/tags/list", &[], b"").status,
        404
    );
}

#[test]
fn referrers_list_manifests_with_a_subject() {
    let srv = Server::start();
    let config = b"{}".to_vec();
    let cd = push_blob(&srv, "refs", &config);
    let subject = image_manifest(&cd, config.len(), &[]);
    let sd = sha256(&subject);
    assert_eq!(put_manifest(&srv, "refs", "base", &subject).status, 201);
    let artifact = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": IMAGE_MANIFEST,
        "artifactType": "application/vnd.example.sbom",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": cd, "size": config.len()},
        "layers": [],
        "subject": {"mediaType": IMAGE_MANIFEST, "digest": sd, "size": subject.len()},
        "annotations": {"org.example": "yes"},
    }))
    .expect("json");
    let ad = sha256(&artifact);
    let put = put_manifest(&srv, "refs", &ad, &artifact);
    assert_eq!(put.status, 201);
    assert_eq!(put.header("OCI-Subject"), Some(sd.as_str()));

    let list = srv.req("GET", &format!("/v2/refs/referrers/{sd}"), &[], b"");
    assert_eq!(list.status, 200);
    assert_eq!(
        list.header("Content-Type"),
        Some("application/vnd.oci.image.index.v1+json")
    );
    let list = list.json();
    assert_eq!(list["manifests"][0]["digest"], ad.as_str());
    assert_eq!(
        list["manifests"][0]["artifactType"],
        "application/vnd.example.sbom"
    );
    assert_eq!(list["manifests"][0]["annotations"]["org.example"], "yes");

    let filtered = srv.req(
        "GET",
        &format!("/v2/refs/referrers/{sd}?artifactType=application%2Fvnd.other"),
        &[],
        b"",
    );
    assert_eq!(filtered.header("OCI-Filters-Applied"), Some("artifactType"));
    assert_eq!(filtered.json()["manifests"], serde_json::json!([]));

    assert_eq!(
        srv.req("DELETE", &format!("/v2/refs/manifests/{ad}"), &[], b"")
            .status,
        202
    );
    let list = srv
        .req("GET", &format!("/v2/refs/referrers/{sd}"), &[], b"")
        .json();
    assert_eq!(list["manifests"], serde_json::json!([]));
}

#[test]
fn read_only_mode_refuses_writes() {
    let cfg = tempfile::NamedTempFile::new().expect("tempfile");
    std::fs::write(cfg.path(), br#"{"readOnly": true}"#).expect("write config");
    let path = cfg.path().to_str().expect("utf-8 path");
    let srv = Server::start_with(&["--config", path]);
    assert_eq!(srv.req("GET", "/v2/", &[], b"").status, 200);
    let r = srv.req("POST", "/v2/x/blobs/uploads/", &[], b"");
    assert_eq!(r.status, 405);
    assert_eq!(r.json()["errors"][0]["code"], "UNSUPPORTED");
}

fn gc(root: &Path, dry_run: bool) -> String {
    let mut cmd = Command::new(BERTH);
    cmd.args(["registry", "gc", "--root"]).arg(root);
    if dry_run {
        cmd.arg("--dry-run");
    }
    let out = cmd.output().expect("run gc");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn blob_file(root: &Path, digest: &str) -> PathBuf {
    let (alg, hex) = digest.split_once(':').expect("digest");
    root.join("blobs").join(alg).join(hex)
}

#[test]
fn gc_keeps_referenced_blobs() {
    let srv = Server::start();
    let config = b"{}".to_vec();
    let kept_layer = b"referenced layer".to_vec();
    let cd = push_blob(&srv, "gc/app", &config);
    let ld = push_blob(&srv, "gc/app", &kept_layer);
    let orphan = push_blob(&srv, "gc/app", b"never referenced");
    let untagged_layer = push_blob(&srv, "gc/app", b"layer of an untagged manifest");
    let manifest = image_manifest(&cd, config.len(), &[(&ld, kept_layer.len())]);
    assert_eq!(put_manifest(&srv, "gc/app", "v1", &manifest).status, 201);
    let untagged = image_manifest(&cd, config.len(), &[(&untagged_layer, 29)]);
    let ud = sha256(&untagged);
    assert_eq!(put_manifest(&srv, "gc/app", &ud, &untagged).status, 201);
    let root = srv.stop();

    let dry = gc(root.path(), true);
    assert!(dry.contains(&format!("would remove {orphan}")), "{dry}");
    assert!(blob_file(root.path(), &orphan).exists());

    let out = gc(root.path(), false);
    assert!(out.contains(&format!("removed {orphan}")), "{out}");
    assert!(!blob_file(root.path(), &orphan).exists());
    let md = sha256(&manifest);
    for kept in [&cd, &ld, &md, &untagged_layer, &ud] {
        assert!(blob_file(root.path(), kept).exists(), "gc removed {kept}");
    }

    // The store still serves everything that is left, and the orphan is gone everywhere.
    let srv = Server::start_in(root, &[]);
    let got = srv.req("GET", "/v2/gc/app/manifests/v1", &[], b"");
    assert_eq!(got.body, manifest);
    assert_eq!(
        srv.req("GET", &format!("/v2/gc/app/blobs/{ld}"), &[], b"")
            .body,
        kept_layer
    );
    assert_eq!(
        srv.req("HEAD", &format!("/v2/gc/app/blobs/{orphan}"), &[], b"")
            .status,
        404
    );
}

/// Writes a blob into an OCI layout; returns its descriptor fields.
fn layout_blob(dir: &Path, data: &[u8]) -> (String, usize) {
    let d = sha256(data);
    let hex = d.trim_start_matches("sha256:");
    std::fs::write(dir.join("blobs/sha256").join(hex), data).expect("write blob");
    (d, data.len())
}

/// A one-layer busybox image as an OCI layout, made by hand (no network).
fn busybox_layout(dir: &Path) -> String {
    std::fs::create_dir_all(dir.join("blobs/sha256")).expect("mkdir");
    let rootfs = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(rootfs.path().join("bin")).expect("mkdir bin");
    std::fs::copy("/bin/busybox", rootfs.path().join("bin/busybox")).expect("copy busybox");
    let tar = dir.join("layer.tar");
    let st = Command::new("tar")
        .args(["--sort=name", "--owner=0", "--group=0", "--mtime=@0", "-C"])
        .arg(rootfs.path())
        .arg("-cf")
        .arg(&tar)
        .arg("bin")
        .status()
        .expect("run tar");
    assert!(st.success());
    let layer = std::fs::read(&tar).expect("read tar");
    std::fs::remove_file(&tar).expect("remove tar");
    let (ld, ll) = layout_blob(dir, &layer);
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["/bin/busybox", "sh"]},
        "rootfs": {"type": "layers", "diff_ids": [ld]},
    }))
    .expect("json");
    let (cd, cl) = layout_blob(dir, &config);
    let manifest = image_manifest(&cd, cl, &[(&ld, ll)]);
    let (md, ml) = layout_blob(dir, &manifest);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": IMAGE_MANIFEST, "digest": md, "size": ml,
                        "annotations": {"org.opencontainers.image.ref.name": "latest"}}],
    });
    std::fs::write(dir.join("index.json"), index.to_string()).expect("write index");
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)
        .expect("write oci-layout");
    md
}

fn skopeo(args: &[&str]) {
    let out = Command::new("skopeo")
        .args(args)
        .output()
        .expect("run skopeo");
    assert!(
        out.status.success(),
        "skopeo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn skopeo_copies_to_and_from_the_registry() {
    if Command::new("skopeo").arg("--version").output().is_err() {
        eprintln!("skopeo not installed; skipping");
        return;
    }
    let srv = Server::start();
    let work = tempfile::tempdir().expect("tempdir");
    let src = work.path().join("src");
    let md = busybox_layout(&src);
    let dest = format!("docker://{}/tools/busybox:1", srv.addr);
    skopeo(&[
        "copy",
        // Keep the layer as it is: by default skopeo would gzip it on the way to a registry.
        "--preserve-digests",
        "--dest-tls-verify=false",
        &format!("oci:{}:latest", src.display()),
        &dest,
    ]);
    let got = srv.req("HEAD", "/v2/tools/busybox/manifests/1", &[], b"");
    assert_eq!(got.status, 200);
    assert_eq!(got.header("Docker-Content-Digest"), Some(md.as_str()));

    let back = work.path().join("back");
    skopeo(&[
        "copy",
        "--preserve-digests",
        "--src-tls-verify=false",
        &dest,
        &format!("oci:{}:latest", back.display()),
    ]);
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(back.join("index.json")).expect("read index"))
            .expect("parse index");
    assert_eq!(index["manifests"][0]["digest"], md.as_str());
    let hex = md.trim_start_matches("sha256:");
    assert_eq!(
        std::fs::read(back.join("blobs/sha256").join(hex)).expect("read manifest"),
        std::fs::read(src.join("blobs/sha256").join(hex)).expect("read manifest")
    );
}

/// An htpasswd file with alice:secret, made by `berth registry htpasswd`.
fn htpasswd(dir: &Path) -> PathBuf {
    let mut child = Command::new(BERTH)
        .args(["registry", "htpasswd", "alice"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run htpasswd");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"secret\n")
        .expect("write password");
    let out = child.wait_with_output().expect("htpasswd output");
    assert!(out.status.success());
    let path = dir.join("htpasswd");
    std::fs::write(&path, &out.stdout).expect("write htpasswd");
    path
}

fn write_config(dir: &Path, config: serde_json::Value) -> String {
    let path = dir.join("config.json");
    std::fs::write(&path, config.to_string()).expect("write config");
    path.to_str().expect("utf-8 path").to_string()
}

#[test]
fn basic_auth_guards_every_route() {
    let dir = tempfile::tempdir().expect("tempdir");
    let users = htpasswd(dir.path());
    let cfg = write_config(dir.path(), serde_json::json!({"auth": {"htpasswd": users}}));
    let srv = Server::start_with(&["--config", &cfg]);
    let r = srv.req("GET", "/v2/", &[], b"");
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("WWW-Authenticate"),
        Some("Basic realm=\"berth-registry\"")
    );
    assert_eq!(r.json()["errors"][0]["code"], "UNAUTHORIZED");
    // alice:secret and alice:wrong, base64.
    let good = [("Authorization", "Basic YWxpY2U6c2VjcmV0")];
    let bad = [("Authorization", "Basic YWxpY2U6d3Jvbmc=")];
    assert_eq!(srv.req("GET", "/v2/", &good, b"").status, 200);
    assert_eq!(srv.req("GET", "/v2/", &bad, b"").status, 401);
    assert_eq!(
        srv.req("POST", "/v2/a/blobs/uploads/", &bad, b"").status,
        401
    );
    assert_eq!(
        srv.req("POST", "/v2/a/blobs/uploads/", &good, b"").status,
        202
    );
    drop(srv);

    // With anonymousPull, reads need no credentials but writes still do.
    let cfg = write_config(
        dir.path(),
        serde_json::json!({"auth": {"htpasswd": users, "anonymousPull": true}}),
    );
    let srv = Server::start_with(&["--config", &cfg]);
    assert_eq!(srv.req("GET", "/v2/", &[], b"").status, 200);
    assert_eq!(srv.req("GET", "/v2/_catalog", &[], b"").status, 200);
    assert_eq!(
        srv.req("POST", "/v2/a/blobs/uploads/", &[], b"").status,
        401
    );
    assert_eq!(
        srv.req("POST", "/v2/a/blobs/uploads/", &good, b"").status,
        202
    );
}

#[test]
fn bearer_tokens_come_from_the_token_endpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let users = htpasswd(dir.path());
    let cfg = write_config(
        dir.path(),
        serde_json::json!({"auth": {"htpasswd": users, "scheme": "bearer"}}),
    );
    let srv = Server::start_with(&["--config", &cfg]);
    let r = srv.req("GET", "/v2/app/tags/list", &[], b"");
    assert_eq!(r.status, 401);
    let realm = format!("http://{}/token", srv.addr);
    assert_eq!(
        r.header("WWW-Authenticate"),
        Some(
            format!(
                "Bearer realm=\"{realm}\",service=\"berth-registry\",scope=\"repository:app:pull\""
            )
            .as_str()
        )
    );
    let bad = srv.req(
        "GET",
        "/token?service=berth-registry",
        &[("Authorization", "Basic YWxpY2U6d3Jvbmc=")],
        b"",
    );
    assert_eq!(bad.status, 401);
    let ok = srv.req(
        "GET",
        "/token?service=berth-registry&scope=repository:app:pull,push",
        &[("Authorization", "Basic YWxpY2U6c2VjcmV0")],
        b"",
    );
    assert_eq!(ok.status, 200);
    let token = ok.json()["token"].as_str().expect("token").to_string();
    let bearer = format!("Bearer {token}");
    let auth = [("Authorization", bearer.as_str())];
    assert_eq!(srv.req("GET", "/v2/", &auth, b"").status, 200);
    assert_eq!(
        srv.req("POST", "/v2/app/blobs/uploads/", &auth, b"").status,
        202
    );
    let forged = [("Authorization", "Bearer 0123")];
    assert_eq!(srv.req("GET", "/v2/", &forged, b"").status, 401);
}

/// A self-signed certificate for 127.0.0.1, made with the openssl command line.
fn self_signed(dir: &Path) -> Option<(PathBuf, PathBuf)> {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let st = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args([
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()
        .ok()?;
    st.success().then_some((cert, key))
}

#[test]
fn tls_and_bearer_tokens_work_with_skopeo() {
    let tools = ["skopeo", "openssl"];
    if tools
        .iter()
        .any(|t| Command::new(t).arg("--version").output().is_err())
    {
        eprintln!("skopeo or openssl missing; skipping");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let users = htpasswd(dir.path());
    let (cert, key) = self_signed(dir.path()).expect("openssl self-signed certificate");
    let cfg = write_config(
        dir.path(),
        serde_json::json!({
            "auth": {"htpasswd": users, "scheme": "bearer"},
            "tls": {"cert": cert, "key": key},
        }),
    );
    let srv = Server::start_with(&["--config", &cfg]);
    let src = dir.path().join("src");
    let md = busybox_layout(&src);
    let dest = format!("docker://{}/secure/busybox:1", srv.addr);
    skopeo(&[
        "copy",
        "--preserve-digests",
        "--dest-tls-verify=false",
        "--dest-creds",
        "alice:secret",
        &format!("oci:{}:latest", src.display()),
        &dest,
    ]);
    let out = Command::new("skopeo")
        .args([
            "inspect",
            "--raw",
            "--tls-verify=false",
            "--creds",
            "alice:secret",
            &dest,
        ])
        .output()
        .expect("skopeo inspect");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(sha256(&out.stdout), md);
}

#[test]
fn serve_stops_cleanly_on_sigterm() {
    let mut srv = Server::start();
    assert_eq!(srv.req("GET", "/v2/", &[], b"").status, 200);
    let pid = nix::unistd::Pid::from_raw(srv.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("send SIGTERM");
    let status = srv.child.wait().expect("wait for registry");
    assert!(status.success(), "{status}");
}
