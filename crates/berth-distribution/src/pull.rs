//! `docker pull`: resolve the reference (tag → manifest, index → platform manifest), fetch the
//! config, then stream layers (a bounded number at once) straight into
//! [`Store::put_layer`](berth_image::Store::put_layer), which hashes, checks and unpacks them
//! in the same pass. A download that breaks is resumed with `Range` from the byte it reached;
//! the store sees one continuous stream, so its digest check still covers every byte.
//!
//! Nothing is recorded for the image until every blob is verified: a failed pull leaves at
//! most complete, verified blobs and snapshots behind (which gc collects), never an image.

use std::io::{self, Read};
use std::sync::Arc;

use berth_image::digest::chain_ids;
use berth_image::spec::{
    host_platform, Descriptor, ImageConfig, Manifest, ManifestOrIndex, MT_DOCKER_LIST,
    MT_DOCKER_MANIFEST, MT_OCI_INDEX, MT_OCI_MANIFEST,
};
use berth_image::{Digest, Reference, Store};
use bytes::Bytes;
use reqwest::header::{ACCEPT, CONTENT_RANGE, RANGE};
use reqwest::StatusCode;
use tokio::sync::{mpsc, Semaphore};

use crate::auth::Credentials;
use crate::client::{read_bounded, status_error, Client, Endpoint};
use crate::error::{Error, Result};
use crate::progress::{short_id, Progress, ProgressMessage};

/// Largest manifest or config accepted (Docker uses 4 MiB for manifests too).
pub const MAX_MANIFEST_SIZE: u64 = 4 << 20;
/// Times a broken layer download is resumed before the pull fails.
pub const MAX_RESUMES: usize = 3;
const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

/// Options of one pull.
#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    /// Credentials for the image's registry (from `X-Registry-Auth` or the config file).
    pub credentials: Option<Credentials>,
    /// `os/arch[/variant]`; the host's platform when `None`.
    pub platform: Option<String>,
}

/// What a pull produced.
#[derive(Debug, Clone)]
pub struct PullResult {
    /// The image ID (config digest).
    pub id: Digest,
    /// The digest the reference resolved to (index or manifest): the RepoDigest.
    pub digest: Digest,
    /// The fully-qualified reference pulled.
    pub reference: String,
    /// Layers downloaded (the others were already present).
    pub layers_downloaded: usize,
    /// Whether the image was new (or the tag moved) rather than up to date.
    pub updated: bool,
}

struct Platform {
    os: String,
    arch: String,
    variant: Option<String>,
}

fn parse_platform(s: Option<&str>) -> Result<Platform> {
    let Some(s) = s.filter(|s| !s.is_empty()) else {
        let (os, arch) = host_platform();
        return Ok(Platform {
            os: os.into(),
            arch: arch.into(),
            variant: None,
        });
    };
    let mut parts = s.split('/');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(os), Some(arch), variant, None) if !os.is_empty() && !arch.is_empty() => {
            Ok(Platform {
                os: os.into(),
                arch: arch.into(),
                variant: variant.map(str::to_string),
            })
        }
        _ => Err(Error::Invalid {
            what: "platform".into(),
            reason: format!("{s:?} is not os/arch[/variant]"),
        }),
    }
}

impl Platform {
    fn matches(&self, d: &Descriptor) -> bool {
        d.platform.as_ref().is_some_and(|p| {
            p.os == self.os
                && p.architecture == self.arch
                && (self.variant.is_none() || p.variant == self.variant)
        })
    }
    fn to_spec(&self) -> berth_image::spec::Platform {
        berth_image::spec::Platform {
            architecture: self.arch.clone(),
            os: self.os.clone(),
            variant: self.variant.clone(),
        }
    }
    fn render(&self) -> String {
        match &self.variant {
            Some(v) => format!("{}/{}/{v}", self.os, self.arch),
            None => format!("{}/{}", self.os, self.arch),
        }
    }
}

/// What `GET /distribution/{name}/json` returns.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DistributionInspect {
    #[serde(rename = "Descriptor")]
    pub descriptor: serde_json::Value,
    #[serde(rename = "Platforms")]
    pub platforms: Vec<serde_json::Value>,
}

pub(crate) fn repo_scope(r: &Reference, push: bool) -> String {
    if push {
        format!("repository:{}:pull,push", r.path())
    } else {
        format!("repository:{}:pull", r.path())
    }
}

impl Client {
    /// Fetch a manifest or index by tag or digest; verifies a digest reference.
    async fn fetch_manifest(
        &self,
        ep: &Endpoint,
        r: &Reference,
        creds: Option<&Credentials>,
        reference: &str,
    ) -> Result<(Vec<u8>, Digest, String)> {
        let url = format!("{}/v2/{}/manifests/{reference}", ep.base, r.path());
        let resp = self
            .send(ep, creds, &repo_scope(r, false), |h| {
                h.get(&url).header(ACCEPT, ACCEPT_MANIFESTS)
            })
            .await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Err(Error::ManifestNotFound(format!("{}:{reference}", r.name())));
        }
        if !resp.status().is_success() {
            return Err(status_error(&format!("GET {url}"), resp).await);
        }
        let media_type = crate::client::header_str(resp.headers(), "content-type")
            .unwrap_or_default()
            .to_string();
        let body = read_bounded(resp, MAX_MANIFEST_SIZE, &url).await?;
        let digest = Digest::of(&body);
        if let Ok(want) = reference.parse::<Digest>() {
            if want != digest {
                return Err(Error::DigestMismatch {
                    what: format!("manifest {}@{want}", r.name()),
                    expected: want.to_string(),
                    actual: digest.to_string(),
                });
            }
        }
        Ok((body, digest, media_type))
    }

    /// Resolve a reference to its top-level document on the first answering host (mirrors
    /// first for docker.io).
    async fn resolve(
        &self,
        r: &Reference,
        creds: Option<&Credentials>,
    ) -> Result<(Endpoint, Vec<u8>, Digest, String)> {
        let want = match (r.digest(), r.tag()) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.to_string(),
            (None, None) => "latest".to_string(),
        };
        let mut last = None;
        for domain in self.pull_domains(r.domain()) {
            let mirror = domain != r.domain();
            let attempt = async {
                let ep = self.endpoint(&domain).await?;
                let (b, d, mt) = self.fetch_manifest(&ep, r, creds, &want).await?;
                Ok::<_, Error>((ep, b, d, mt))
            }
            .await;
            match attempt {
                Ok(v) => return Ok(v),
                Err(e) if mirror => {
                    tracing::info!(mirror = %domain, error = %e, "mirror failed, trying next");
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::ManifestNotFound(r.to_string())))
    }

    /// `GET /distribution/{name}/json`: the descriptor a reference resolves to and the
    /// platforms it offers.
    pub async fn inspect_distribution(
        &self,
        reference: &str,
        creds: Option<&Credentials>,
    ) -> Result<DistributionInspect> {
        let r = Reference::parse_tagged(reference)?;
        let (ep, body, digest, media_type) = self.resolve(&r, creds).await?;
        let parsed = parse_doc(&body, &digest)?;
        let media_type = if media_type.is_empty() {
            doc_media_type(&parsed)
        } else {
            media_type
        };
        let platforms = match &parsed {
            ManifestOrIndex::Index(i) => i
                .manifests
                .iter()
                .filter_map(|d| d.platform.as_ref())
                .filter_map(|p| serde_json::to_value(p).ok())
                .collect(),
            // A single manifest's platform is its config's, as dockerd reports it.
            ManifestOrIndex::Manifest(m) => {
                check_descriptor_size(&m.config, MAX_MANIFEST_SIZE)?;
                let raw = self.fetch_small_blob(&ep, &r, creds, &m.config).await?;
                let cfg: serde_json::Value =
                    serde_json::from_slice(&raw).map_err(|e| Error::Invalid {
                        what: format!("image config {}", m.config.digest),
                        reason: e.to_string(),
                    })?;
                let mut p = serde_json::Map::new();
                for (key, field) in [
                    ("architecture", "architecture"),
                    ("os", "os"),
                    ("os.version", "os.version"),
                    ("variant", "variant"),
                ] {
                    if let Some(v) = cfg.get(field).and_then(|v| v.as_str()) {
                        if !v.is_empty() {
                            p.insert(key.to_string(), v.into());
                        }
                    }
                }
                vec![serde_json::Value::Object(p)]
            }
        };
        Ok(DistributionInspect {
            descriptor: serde_json::json!({
                "mediaType": media_type,
                "digest": digest.to_string(),
                "size": body.len(),
            }),
            platforms,
        })
    }

    /// Pull `reference` (`busybox`, `host:5000/a/b:tag`, `x@sha256:…`) into `store`.
    pub async fn pull(
        &self,
        store: &Store,
        reference: &str,
        opts: &PullOptions,
        progress: Progress,
    ) -> Result<PullResult> {
        let r = Reference::parse_tagged(reference)?;
        let platform = parse_platform(opts.platform.as_deref())?;
        let creds = opts.credentials.as_ref();
        let shown = match (r.tag(), r.digest()) {
            (Some(t), _) => t.to_string(),
            (None, Some(d)) => d.to_string(),
            (None, None) => "latest".to_string(),
        };
        // After the manifest resolved, as dockerd does: a daemon can still answer an unknown
        // image or refused credentials with a plain HTTP error while nothing was streamed.
        let (ep, top, top_digest, _) = self.resolve(&r, creds).await?;
        progress(ProgressMessage::message(
            format!("Pulling from {}", r.path()),
            shown,
        ));

        // An index: pick the platform's manifest and fetch it by digest.
        let (manifest_bytes, manifest_digest) = match parse_doc(&top, &top_digest)? {
            ManifestOrIndex::Manifest(_) => (top.clone(), top_digest.clone()),
            ManifestOrIndex::Index(idx) => {
                let d = idx
                    .manifests
                    .iter()
                    .find(|d| platform.matches(d))
                    .ok_or_else(|| Error::NoMatchingPlatform {
                        reference: r.familiar(),
                        platform: platform.render(),
                    })?;
                check_descriptor_size(d, MAX_MANIFEST_SIZE)?;
                let (b, dg, _) = self
                    .fetch_manifest(&ep, &r, creds, d.digest.as_str())
                    .await?;
                if b.len() as u64 != d.size {
                    return Err(size_lie(&d.digest, d.size, b.len() as u64));
                }
                (b, dg)
            }
        };
        let manifest: Manifest = match parse_doc(&manifest_bytes, &manifest_digest)? {
            ManifestOrIndex::Manifest(m) => m,
            ManifestOrIndex::Index(_) => {
                return Err(Error::Invalid {
                    what: format!("manifest {manifest_digest}"),
                    reason: "an index nested in an index".into(),
                })
            }
        };

        // Config: small, fetched whole and checked before any layer work.
        check_descriptor_size(&manifest.config, MAX_MANIFEST_SIZE)?;
        let config_bytes = self
            .fetch_small_blob(&ep, &r, creds, &manifest.config)
            .await?;
        let config: ImageConfig =
            serde_json::from_slice(&config_bytes).map_err(|e| Error::Invalid {
                what: format!("image config {}", manifest.config.digest),
                reason: e.to_string(),
            })?;
        if config.rootfs.diff_ids.len() != manifest.layers.len() {
            return Err(Error::Invalid {
                what: format!("manifest {manifest_digest}"),
                reason: format!(
                    "{} layers but the config lists {} diff ids",
                    manifest.layers.len(),
                    config.rootfs.diff_ids.len()
                ),
            });
        }
        let before = {
            let (s, name) = (store.clone(), r.to_string());
            blocking("image lookup", move || Ok(s.image_id(&name).ok())).await?
        };

        let chains = chain_ids(&config.rootfs.diff_ids);
        let downloaded = self
            .pull_layers(
                store, &ep, &r, creds, &manifest, &chains, &config, &progress,
            )
            .await?;

        // Blobs for the image record: config, the chosen manifest, and the index we resolved.
        let blob_store = store.clone();
        let cfg_digest = manifest.config.digest.clone();
        let mb = manifest_bytes.clone();
        let md = manifest_digest.clone();
        let top_is_index = top_digest != manifest_digest;
        // For an index the image is its `platform` entry while the RepoDigest is the index's
        // digest, whichever platform was asked for (as Docker records it).
        let (reg_bytes, reg_digest) = if top_is_index {
            (top.clone(), top_digest.clone())
        } else {
            (manifest_bytes.clone(), manifest_digest.clone())
        };
        let tagged = match r.tag() {
            Some(t) => r.with_tag(t)?,
            None => r.clone(),
        };
        let spec_platform = platform.to_spec();
        let id = blocking("image record", move || {
            blob_store.put_blob(io::Cursor::new(&config_bytes), Some(&cfg_digest), None)?;
            blob_store.put_blob(io::Cursor::new(&mb), Some(&md), None)?;
            let reference = if tagged.tag().is_some() {
                tagged.clone()
            } else {
                tagged.with_digest(reg_digest.clone())
            };
            Ok(blob_store.put_manifest_for(&reg_bytes, Some(&reference), &spec_platform)?)
        })
        .await?;

        let updated = before.as_ref() != Some(&id);
        progress(ProgressMessage::status(format!("Digest: {top_digest}")));
        progress(ProgressMessage::status(if updated {
            format!("Status: Downloaded newer image for {}", r.familiar())
        } else {
            format!("Status: Image is up to date for {}", r.familiar())
        }));
        Ok(PullResult {
            id,
            digest: top_digest,
            reference: r.to_string(),
            layers_downloaded: downloaded,
            updated,
        })
    }

    async fn fetch_small_blob(
        &self,
        ep: &Endpoint,
        r: &Reference,
        creds: Option<&Credentials>,
        d: &Descriptor,
    ) -> Result<Vec<u8>> {
        let url = format!("{}/v2/{}/blobs/{}", ep.base, r.path(), d.digest);
        let resp = self
            .send(ep, creds, &repo_scope(r, false), |h| h.get(&url))
            .await?;
        if !resp.status().is_success() {
            return Err(status_error(&format!("GET {url}"), resp).await);
        }
        let body = read_bounded(resp, d.size, d.digest.as_str()).await?;
        if body.len() as u64 != d.size {
            return Err(size_lie(&d.digest, d.size, body.len() as u64));
        }
        let actual = Digest::of(&body);
        if actual != d.digest {
            return Err(Error::DigestMismatch {
                what: format!("blob {}", d.digest),
                expected: d.digest.to_string(),
                actual: actual.to_string(),
            });
        }
        Ok(body)
    }

    #[allow(clippy::too_many_arguments)]
    async fn pull_layers(
        &self,
        store: &Store,
        ep: &Endpoint,
        r: &Reference,
        creds: Option<&Credentials>,
        manifest: &Manifest,
        chains: &[Digest],
        config: &ImageConfig,
        progress: &Progress,
    ) -> Result<usize> {
        let mut todo = Vec::new();
        for (i, l) in manifest.layers.iter().enumerate() {
            if store.has_blob(&l.digest) {
                progress(ProgressMessage::with_id(
                    "Already exists",
                    short_id(&l.digest),
                ));
            } else {
                progress(ProgressMessage::with_id(
                    "Pulling fs layer",
                    short_id(&l.digest),
                ));
                todo.push(i);
            }
        }
        let sem = Arc::new(Semaphore::new(self.config.max_concurrent_downloads.max(1)));
        let jobs = todo.iter().map(|&i| {
            let sem = sem.clone();
            async move {
                let _permit = sem.acquire().await.map_err(|e| {
                    Error::Task(manifest.layers[i].digest.to_string(), e.to_string())
                })?;
                let parent = if i == 0 {
                    None
                } else {
                    Some(chains[i - 1].clone())
                };
                self.pull_layer(
                    store,
                    ep,
                    r,
                    creds,
                    &manifest.layers[i],
                    parent,
                    &config.rootfs.diff_ids[i],
                    progress,
                )
                .await
            }
        });
        // Run them together and fail on the first error; the others are dropped (their
        // store tasks see a closed stream and discard their temp files).
        let results = join_all_fail_fast(jobs.collect()).await;
        results?;
        Ok(todo.len())
    }

    #[allow(clippy::too_many_arguments)]
    async fn pull_layer(
        &self,
        store: &Store,
        ep: &Endpoint,
        r: &Reference,
        creds: Option<&Credentials>,
        layer: &Descriptor,
        parent: Option<Digest>,
        diff_id: &Digest,
        progress: &Progress,
    ) -> Result<()> {
        let id = short_id(&layer.digest);
        let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(16);
        let s = store.clone();
        let digest = layer.digest.clone();
        let unpack = tokio::task::spawn_blocking(move || {
            s.put_layer(ChannelReader::new(rx), Some(&digest), parent.as_ref())
        });
        let fed = self
            .feed_blob(ep, r, creds, layer, &tx, progress, &id)
            .await;
        drop(tx);
        let stored = unpack
            .await
            .map_err(|e| Error::Task(layer.digest.to_string(), e.to_string()))?;
        // A download error explains a store error (the stream was cut), so report it first.
        fed?;
        let (digests, _chain) = stored?;
        if &digests.diff_id != diff_id {
            return Err(Error::DigestMismatch {
                what: format!("uncompressed content of layer {}", layer.digest),
                expected: diff_id.to_string(),
                actual: digests.diff_id.to_string(),
            });
        }
        progress(ProgressMessage::with_id("Pull complete", id));
        Ok(())
    }

    /// Stream a blob into `tx`, never more than the descriptor's size, resuming with `Range`
    /// when the connection breaks or ends early.
    #[allow(clippy::too_many_arguments)]
    async fn feed_blob(
        &self,
        ep: &Endpoint,
        r: &Reference,
        creds: Option<&Credentials>,
        layer: &Descriptor,
        tx: &mpsc::Sender<io::Result<Bytes>>,
        progress: &Progress,
        id: &str,
    ) -> Result<()> {
        let url = format!("{}/v2/{}/blobs/{}", ep.base, r.path(), layer.digest);
        let total = layer.size;
        let mut offset = 0u64;
        let mut resumes = 0usize;
        let mut last_report = 0u64;
        loop {
            let attempt: Result<()> = async {
                let resp = self
                    .send(ep, creds, &repo_scope(r, false), |h| {
                        let b = h.get(&url);
                        if offset > 0 {
                            b.header(RANGE, format!("bytes={offset}-"))
                        } else {
                            b
                        }
                    })
                    .await?;
                let status = resp.status();
                let mut skip = 0u64;
                if offset > 0 && status == StatusCode::PARTIAL_CONTENT {
                    let start = crate::client::header_str(resp.headers(), CONTENT_RANGE.as_str())
                        .and_then(|v| v.strip_prefix("bytes "))
                        .and_then(|v| v.split('-').next())
                        .and_then(|v| v.parse::<u64>().ok());
                    if start != Some(offset) {
                        return Err(Error::Invalid {
                            what: format!("blob {}", layer.digest),
                            reason: format!("resumed at {start:?}, asked for {offset}"),
                        });
                    }
                } else if status == StatusCode::OK {
                    // No range support: read past what we already have.
                    skip = offset;
                } else if offset > 0 && status == StatusCode::RANGE_NOT_SATISFIABLE {
                    return Err(size_lie(&layer.digest, total, offset));
                } else {
                    return Err(status_error(&format!("GET {url}"), resp).await);
                }
                let mut resp = resp;
                while let Some(mut chunk) = resp.chunk().await.map_err(crate::error::http(&url))? {
                    if skip > 0 {
                        let n = skip.min(chunk.len() as u64) as usize;
                        let _ = chunk.split_to(n);
                        skip -= n as u64;
                        if chunk.is_empty() {
                            continue;
                        }
                    }
                    if offset + chunk.len() as u64 > total {
                        return Err(Error::BlobSize {
                            digest: layer.digest.to_string(),
                            reason: format!(
                                "body is longer than the {total} bytes its descriptor says"
                            ),
                        });
                    }
                    offset += chunk.len() as u64;
                    if tx.send(Ok(chunk)).await.is_err() {
                        // The store stopped reading: it has an error to report.
                        return Ok(());
                    }
                    if offset - last_report >= 512 * 1024 || offset == total {
                        last_report = offset;
                        progress(ProgressMessage::bytes("Downloading", id, offset, total));
                    }
                }
                Ok(())
            }
            .await;
            match attempt {
                Ok(()) if offset == total || tx.is_closed() => break,
                Ok(()) | Err(Error::Http { .. }) if resumes < MAX_RESUMES => {
                    resumes += 1;
                    tracing::info!(blob = %layer.digest, offset, "download interrupted, resuming");
                }
                outcome => {
                    let e = outcome
                        .err()
                        .unwrap_or_else(|| size_lie(&layer.digest, total, offset));
                    // Make the store fail too instead of seeing a clean end of stream.
                    let _ = tx.send(Err(io::Error::other(e.to_string()))).await;
                    return Err(e);
                }
            }
        }
        progress(ProgressMessage::with_id("Download complete", id));
        Ok(())
    }
}

fn size_lie(d: &Digest, want: u64, got: u64) -> Error {
    Error::BlobSize {
        digest: d.to_string(),
        reason: format!("body ended after {got} of the {want} bytes its descriptor says"),
    }
}

fn check_descriptor_size(d: &Descriptor, limit: u64) -> Result<()> {
    if d.size > limit {
        return Err(Error::Invalid {
            what: format!("descriptor {}", d.digest),
            reason: format!("size {} is over the {limit} byte limit", d.size),
        });
    }
    Ok(())
}

fn parse_doc(bytes: &[u8], digest: &Digest) -> Result<ManifestOrIndex> {
    ManifestOrIndex::parse(bytes).map_err(|e| Error::Invalid {
        what: format!("manifest {digest}"),
        reason: e.to_string(),
    })
}

fn doc_media_type(d: &ManifestOrIndex) -> String {
    match d {
        ManifestOrIndex::Manifest(m) => m.media_type.clone().unwrap_or_else(|| {
            if m.config.media_type.contains("docker") {
                MT_DOCKER_MANIFEST
            } else {
                MT_OCI_MANIFEST
            }
            .to_string()
        }),
        ManifestOrIndex::Index(i) => i.media_type.clone().unwrap_or_else(|| {
            if i.manifests.iter().any(|m| m.media_type.contains("docker")) {
                MT_DOCKER_LIST
            } else {
                MT_OCI_INDEX
            }
            .to_string()
        }),
    }
}

/// Run futures concurrently, returning the first error as soon as it happens.
pub(crate) async fn join_all_fail_fast<F>(jobs: Vec<F>) -> Result<()>
where
    F: std::future::Future<Output = Result<()>>,
{
    let mut jobs: Vec<std::pin::Pin<Box<F>>> = jobs.into_iter().map(Box::pin).collect();
    std::future::poll_fn(|cx| {
        let mut i = 0;
        while i < jobs.len() {
            match jobs[i].as_mut().poll(cx) {
                std::task::Poll::Ready(Ok(())) => {
                    jobs.swap_remove(i);
                }
                std::task::Poll::Ready(Err(e)) => return std::task::Poll::Ready(Err(e)),
                std::task::Poll::Pending => i += 1,
            }
        }
        if jobs.is_empty() {
            std::task::Poll::Ready(Ok(()))
        } else {
            std::task::Poll::Pending
        }
    })
    .await
}

/// Run a store call on tokio's blocking pool.
pub(crate) async fn blocking<T: Send + 'static>(
    what: &str,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Task(what.to_string(), e.to_string()))?
}

/// The synchronous end of a download: what the async side sends, as a `Read` for the store.
struct ChannelReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    cur: Bytes,
}

impl ChannelReader {
    fn new(rx: mpsc::Receiver<io::Result<Bytes>>) -> Self {
        ChannelReader {
            rx,
            cur: Bytes::new(),
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.cur = b,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur.split_to(n));
        Ok(n)
    }
}
