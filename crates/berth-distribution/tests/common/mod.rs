//! Shared helpers: images built in a store, an in-process berth registry, and a tiny raw-HTTP
//! "hostile" registry whose every answer the test controls.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use berth_distribution::{Progress, ProgressMessage};
use berth_image::{Digest, Reference, Store};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A tar of regular files.
pub fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, name, *data).unwrap();
    }
    b.into_inner().unwrap()
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

pub fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 3).unwrap()
}

/// A layer: compressed bytes, blob digest, diff ID, media type.
pub struct Layer {
    pub blob: Vec<u8>,
    pub digest: Digest,
    pub diff_id: Digest,
    pub media_type: &'static str,
}

pub fn layer_gzip(files: &[(&str, &[u8])]) -> Layer {
    let t = tar_of(files);
    let blob = gzip(&t);
    Layer {
        digest: Digest::of(&blob),
        diff_id: Digest::of(&t),
        blob,
        media_type: berth_image::spec::MT_OCI_LAYER_GZIP,
    }
}

pub fn layer_zstd(files: &[(&str, &[u8])]) -> Layer {
    let t = tar_of(files);
    let blob = zstd(&t);
    Layer {
        digest: Digest::of(&blob),
        diff_id: Digest::of(&t),
        blob,
        media_type: berth_image::spec::MT_OCI_LAYER_ZSTD,
    }
}

/// Config and manifest bytes for `layers`.
pub fn image_docs(layers: &[&Layer]) -> (Vec<u8>, Vec<u8>) {
    let (os, arch) = berth_image::spec::host_platform();
    let diff_ids: Vec<String> = layers.iter().map(|l| l.diff_id.to_string()).collect();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": arch, "os": os,
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": berth_image::spec::MT_OCI_MANIFEST,
        "config": {"mediaType": berth_image::spec::MT_OCI_CONFIG,
                   "digest": Digest::of(&config).to_string(), "size": config.len()},
        "layers": layers.iter().map(|l| serde_json::json!({
            "mediaType": l.media_type, "digest": l.digest.to_string(), "size": l.blob.len()
        })).collect::<Vec<_>>(),
    }))
    .unwrap();
    (config, manifest)
}

/// Build a two-layer (gzip + zstd) image tagged `reference` in `store`; returns its ID.
pub fn make_image(store: &Store, reference: &str, salt: &str) -> Digest {
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let l1 = layer_gzip(&[("etc/hello", b"hello\n"), ("data/big", &big)]);
    let l2 = layer_zstd(&[("etc/salt", salt.as_bytes())]);
    let (_, chain) = store
        .put_layer(&l1.blob[..], Some(&l1.digest), None)
        .unwrap();
    store
        .put_layer(&l2.blob[..], Some(&l2.digest), Some(&chain))
        .unwrap();
    let (config, manifest) = image_docs(&[&l1, &l2]);
    store.put_blob(&config[..], None, None).unwrap();
    store
        .put_manifest(
            &manifest,
            Some(&Reference::parse_tagged(reference).unwrap()),
        )
        .unwrap()
}

/// Collects progress messages.
#[derive(Clone, Default)]
pub struct Events(pub Arc<Mutex<Vec<ProgressMessage>>>);

impl Events {
    pub fn sink(&self) -> Progress {
        let v = self.0.clone();
        Arc::new(move |m| v.lock().unwrap().push(m))
    }
    pub fn statuses(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|m| m.status.clone())
            .collect()
    }
}

/// Asserts the store is consistent.
pub fn assert_fsck(store: &Store) {
    let r = store.fsck().unwrap();
    assert!(r.ok(), "fsck problems: {:?}", r.problems);
}

/// An in-process berth registry on 127.0.0.1:0, stopped when dropped (its task is aborted).
pub struct BerthRegistry {
    pub addr: SocketAddr,
    _root: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for BerthRegistry {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl BerthRegistry {
    pub async fn start(auth: Option<berth_registry::auth::AuthConfig>) -> BerthRegistry {
        Self::start_with(auth, false).await
    }

    /// With `tls`, serves HTTPS with a fresh self-signed certificate for 127.0.0.1.
    pub async fn start_with(
        auth: Option<berth_registry::auth::AuthConfig>,
        tls: bool,
    ) -> BerthRegistry {
        let root = tempfile::tempdir().unwrap();
        let store = berth_registry::storage::Store::open(root.path()).unwrap();
        let auth = auth.map(|a| berth_registry::auth::Auth::load(a, tls).unwrap());
        let tls = tls.then(|| {
            let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
            let (c, k) = (root.path().join("cert.pem"), root.path().join("key.pem"));
            std::fs::write(&c, cert.cert.pem()).unwrap();
            std::fs::write(&k, cert.key_pair.serialize_pem()).unwrap();
            berth_registry::tls::acceptor(&berth_registry::tls::TlsConfig { cert: c, key: k })
                .unwrap()
        });
        let registry = Arc::new(berth_registry::server::Registry {
            store,
            read_only: false,
            auth,
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            berth_registry::server::serve(listener, registry, tls, std::future::pending()).await;
        });
        BerthRegistry {
            addr,
            _root: root,
            task,
        }
    }

    pub fn host(&self) -> String {
        self.addr.to_string()
    }
}

/// What the hostile registry answers for one path.
#[derive(Clone)]
pub enum Reply {
    /// 200 with this body and content type.
    Ok(Vec<u8>, &'static str),
    /// Declares the full length, sends the first `cut` bytes and closes; the next request
    /// (with or without Range) is answered properly.
    CutOnce(Vec<u8>, usize),
    /// 200 with the whole body whatever `Range` asks (a server without range support).
    OkIgnoringRange(Vec<u8>),
    /// Like `CutOnce`, but the retry is answered by a server without range support.
    CutOnceNoRange(Vec<u8>, usize),
    /// Streams bytes forever (bounded at 256 MiB so the server stops by itself).
    Endless,
    /// 307 to the same path.
    RedirectLoop,
}

/// A raw HTTP/1.1 server answering each connection once, from a path → reply table.
pub struct Hostile {
    pub addr: SocketAddr,
    /// Request lines and Range headers seen, in order.
    pub log: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Hostile {
    pub async fn start(routes: HashMap<String, Reply>) -> Hostile {
        Self::start_with_token(routes, None).await
    }

    /// Like [`Hostile::start`], but every route except `/token` wants `Bearer <token>`, which
    /// `/token` hands out (requests to it are logged like the others).
    pub async fn start_with_token(
        routes: HashMap<String, Reply>,
        token: Option<&'static str>,
    ) -> Hostile {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let routes = Arc::new(Mutex::new(routes));
        let l2 = log.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut conn, _)) = listener.accept().await else {
                    return;
                };
                let log = l2.clone();
                let routes = routes.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    // A TLS hello: answer as an HTTP server does, so the client falls back.
                    if let Ok(1..) = conn.peek(&mut buf[..1]).await {
                        if buf[0] == 0x16 {
                            let _ = conn
                                .write_all(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n")
                                .await;
                            return;
                        }
                    }
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&head).to_string();
                    let first = head.lines().next().unwrap_or("").to_string();
                    let path = first.split(' ').nth(1).unwrap_or("").to_string();
                    let range = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("range: bytes=")
                                .map(|r| r.trim().trim_end_matches('-').to_string())
                        })
                        .and_then(|r| r.parse::<usize>().ok());
                    log.lock().unwrap().push(match range {
                        Some(r) => format!("{first} range={r}"),
                        None => first.clone(),
                    });
                    if let Some(tok) = token {
                        let want = format!("authorization: bearer {tok}");
                        let authed = head.lines().any(|l| l.to_ascii_lowercase() == want);
                        if path.starts_with("/token") {
                            let body = format!(r#"{{"token":"{tok}","expires_in":300}}"#);
                            let h = format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
                            let _ = conn.write_all(h.as_bytes()).await;
                            return;
                        }
                        if !authed {
                            let local = conn.local_addr().unwrap();
                            let h = format!("HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"http://{local}/token\",service=\"hostile\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                            let _ = conn.write_all(h.as_bytes()).await;
                            return;
                        }
                    }
                    let reply = routes.lock().unwrap().get(&path).cloned();
                    let _ = answer(&mut conn, &path, reply, range, &routes).await;
                });
            }
        });
        Hostile { addr, log, task }
    }

    pub fn host(&self) -> String {
        self.addr.to_string()
    }
}

async fn answer(
    conn: &mut tokio::net::TcpStream,
    path: &str,
    reply: Option<Reply>,
    range: Option<usize>,
    routes: &Arc<Mutex<HashMap<String, Reply>>>,
) -> std::io::Result<()> {
    let reply = match reply {
        Some(r) => r,
        None if path == "/v2/" => Reply::Ok(b"{}".to_vec(), "application/json"),
        None => {
            return conn
                .write_all(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                )
                .await
        }
    };
    let honour_range = !matches!(reply, Reply::CutOnceNoRange(..));
    match reply {
        Reply::Ok(body, ct) => {
            let (status, body) = match range {
                Some(r) if r <= body.len() => (
                    format!(
                        "206 Partial Content\r\nContent-Range: bytes {r}-{}/{}",
                        body.len().saturating_sub(1),
                        body.len()
                    ),
                    body[r..].to_vec(),
                ),
                _ => ("200 OK".to_string(), body),
            };
            let h = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {ct}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            conn.write_all(h.as_bytes()).await?;
            conn.write_all(&body).await
        }
        Reply::OkIgnoringRange(body) => {
            let h = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            conn.write_all(h.as_bytes()).await?;
            conn.write_all(&body).await
        }
        Reply::CutOnce(body, cut) | Reply::CutOnceNoRange(body, cut) => {
            let next = if honour_range {
                Reply::Ok(body.clone(), "application/octet-stream")
            } else {
                Reply::OkIgnoringRange(body.clone())
            };
            routes.lock().unwrap().insert(path.to_string(), next);
            let h = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            conn.write_all(h.as_bytes()).await?;
            conn.write_all(&body[..cut]).await?;
            conn.flush().await
        }
        Reply::Endless => {
            conn.write_all(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
            )
            .await?;
            let chunk = vec![0u8; 64 * 1024];
            let framed = [
                format!("{:x}\r\n", chunk.len()).into_bytes(),
                chunk,
                b"\r\n".to_vec(),
            ]
            .concat();
            for _ in 0..4096 {
                conn.write_all(&framed).await?;
            }
            Ok(())
        }
        Reply::RedirectLoop => {
            let h = format!(
                "HTTP/1.1 307 Temporary Redirect\r\nLocation: {path}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            conn.write_all(h.as_bytes()).await
        }
    }
}

/// Routes serving an image (`repo:latest`) from the hostile registry.
pub fn image_routes(
    repo: &str,
    layers: &[&Layer],
    config: &[u8],
    manifest: &[u8],
) -> HashMap<String, Reply> {
    let mut m = HashMap::new();
    m.insert(
        format!("/v2/{repo}/manifests/latest"),
        Reply::Ok(manifest.to_vec(), berth_image::spec::MT_OCI_MANIFEST),
    );
    m.insert(
        format!("/v2/{repo}/blobs/{}", Digest::of(config)),
        Reply::Ok(config.to_vec(), "application/octet-stream"),
    );
    for l in layers {
        m.insert(
            format!("/v2/{repo}/blobs/{}", l.digest),
            Reply::Ok(l.blob.clone(), "application/octet-stream"),
        );
    }
    m
}
