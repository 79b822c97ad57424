//! `docker push`: for each blob of the image (layers and config) HEAD it in the target
//! repository and skip it if present, else try a cross-repository mount from a repository of
//! the same registry the image came from, else upload it (monolithic PUT, or PATCH chunks);
//! then PUT the manifest under the tag and check the digest the registry computed.
//!
//! Everything is read through `berth_image::Store`'s API (`manifest_digest`, `open_blob`),
//! never from its files; blobs are re-hashed while they stream, and an upload is only
//! completed once the local blob proved to match its digest.

use std::io::Read;
use std::sync::Arc;

use berth_image::spec::{Descriptor, Manifest, MT_OCI_MANIFEST};
use berth_image::{Digest, Reference, Store};
use futures_util::StreamExt;
use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, LOCATION};
use reqwest::{StatusCode, Url};
use tokio::sync::Semaphore;

use crate::auth::Credentials;
use crate::client::{header_str, status_error, Client, Endpoint};
use crate::error::{Error, Result};
use crate::progress::{short_id, Progress, ProgressMessage};
use crate::pull::{join_all_fail_fast, repo_scope};

/// Options of one push.
#[derive(Debug, Clone, Default)]
pub struct PushOptions {
    pub credentials: Option<Credentials>,
    /// Upload blobs in PATCH chunks of this many bytes; one streaming PUT when `None`.
    pub chunk_size: Option<u64>,
}

/// What a push produced.
#[derive(Debug, Clone)]
pub struct PushResult {
    /// The manifest digest in the registry.
    pub digest: Digest,
    /// The manifest size in bytes.
    pub size: u64,
    /// The tag pushed.
    pub tag: String,
    /// Blobs uploaded, mounted, and skipped because present.
    pub uploaded: usize,
    pub mounted: usize,
    pub skipped: usize,
}

enum BlobOutcome {
    Skipped,
    Mounted,
    Uploaded,
}

impl Client {
    /// Push the local image `reference` (`host:5000/a/b:tag`) to its registry.
    pub async fn push(
        &self,
        store: &Store,
        reference: &str,
        opts: &PushOptions,
        progress: Progress,
    ) -> Result<PushResult> {
        let r = Reference::parse_tagged(reference)?;
        let tag = r.tag().unwrap_or("latest").to_string();
        let creds = opts.credentials.as_ref();
        let (id, manifest_bytes, mdigest, sources) = {
            let s = store.clone();
            let name = r.to_string();
            crate::pull::blocking("push source", move || {
                let id = s.image_id(&name)?;
                let md = s.manifest_digest(id.as_str())?;
                let bytes = s.read_blob(&md)?;
                let repo_digests = s.inspect(&name)?.repo_digests;
                Ok((id, bytes, md, repo_digests))
            })
            .await?
        };
        let manifest: Manifest =
            serde_json::from_slice(&manifest_bytes).map_err(|e| Error::Invalid {
                what: format!("local manifest {mdigest} of image {id}"),
                reason: e.to_string(),
            })?;
        progress(ProgressMessage::status(format!(
            "The push refers to repository [{}]",
            r.name()
        )));
        let ep = self.endpoint(r.domain()).await?;
        // Repositories of the same registry this image was pulled from or pushed to.
        let mount_from: Vec<String> = sources
            .iter()
            .filter_map(|rd| Reference::parse(rd).ok())
            .filter(|s| s.domain() == r.domain() && s.path() != r.path())
            .map(|s| s.path().to_string())
            .collect();

        let mut blobs: Vec<&Descriptor> = manifest.layers.iter().collect();
        for l in &blobs {
            progress(ProgressMessage::with_id("Preparing", short_id(&l.digest)));
        }
        blobs.push(&manifest.config);
        let sem = Arc::new(Semaphore::new(self.config.max_concurrent_uploads.max(1)));
        let counts = std::sync::Mutex::new((0usize, 0usize, 0usize));
        let config_digest = &manifest.config.digest;
        let jobs: Vec<_> = blobs
            .iter()
            .map(|d| {
                let sem = sem.clone();
                let counts = &counts;
                let ep = &ep;
                let r = &r;
                let mount_from = &mount_from;
                let progress = &progress;
                async move {
                    let _p = sem
                        .acquire()
                        .await
                        .map_err(|e| Error::Task(d.digest.to_string(), e.to_string()))?;
                    let is_config = &d.digest == config_digest;
                    let outcome = self
                        .push_blob(
                            store, ep, r, creds, d, is_config, mount_from, opts, progress,
                        )
                        .await?;
                    let mut c = counts.lock().unwrap_or_else(|p| p.into_inner());
                    match outcome {
                        BlobOutcome::Uploaded => c.0 += 1,
                        BlobOutcome::Mounted => c.1 += 1,
                        BlobOutcome::Skipped => c.2 += 1,
                    }
                    Ok(())
                }
            })
            .collect();
        join_all_fail_fast(jobs).await?;

        let media_type = manifest
            .media_type
            .clone()
            .unwrap_or_else(|| MT_OCI_MANIFEST.to_string());
        let url = format!("{}/v2/{}/manifests/{tag}", ep.base, r.path());
        let resp = self
            .send(&ep, creds, &repo_scope(&r, true), |h| {
                h.put(&url)
                    .header(CONTENT_TYPE, media_type.as_str())
                    .body(manifest_bytes.clone())
            })
            .await?;
        if !resp.status().is_success() {
            return Err(status_error(&format!("PUT {url}"), resp).await);
        }
        if let Some(d) = header_str(resp.headers(), "docker-content-digest") {
            if d != mdigest.as_str() {
                return Err(Error::DigestMismatch {
                    what: format!("manifest pushed to {}", r.name()),
                    expected: mdigest.to_string(),
                    actual: d.to_string(),
                });
            }
        }
        progress(ProgressMessage::status(format!(
            "{tag}: digest: {mdigest} size: {}",
            manifest_bytes.len()
        )));
        // Record the RepoDigest locally, as Docker does after a push.
        {
            let s = store.clone();
            let rd = r.with_digest(mdigest.clone());
            let bytes = manifest_bytes.clone();
            crate::pull::blocking("push record", move || {
                s.put_manifest(&bytes, Some(&rd))?;
                Ok(())
            })
            .await?;
        }
        let (uploaded, mounted, skipped) = counts.into_inner().unwrap_or_else(|p| p.into_inner());
        Ok(PushResult {
            digest: mdigest,
            size: manifest_bytes.len() as u64,
            tag,
            uploaded,
            mounted,
            skipped,
        })
    }

    /// `docker push REPO` without a tag: push every local tag of the repository, in tag
    /// order, as Docker does. Fails if the repository has no tags.
    pub async fn push_all_tags(
        &self,
        store: &Store,
        repository: &str,
        opts: &PushOptions,
        progress: Progress,
    ) -> Result<Vec<PushResult>> {
        let repo = Reference::parse(repository)?;
        let s = store.clone();
        let summaries = crate::pull::blocking("list images", move || Ok(s.list()?)).await?;
        let mut tags: Vec<String> = summaries
            .iter()
            .flat_map(|i| i.repo_tags.iter())
            .filter_map(|t| Reference::parse(t).ok())
            .filter(|t| t.name() == repo.name() && t.tag().is_some())
            .map(|t| t.to_string())
            .collect();
        tags.sort();
        tags.dedup();
        if tags.is_empty() {
            return Err(Error::Store(berth_image::Error::ImageNotFound(format!(
                "{}: no tags to push",
                repo.familiar_name()
            ))));
        }
        let mut out = Vec::with_capacity(tags.len());
        for t in tags {
            out.push(self.push(store, &t, opts, progress.clone()).await?);
        }
        Ok(out)
    }

    #[allow(clippy::too_many_arguments)]
    async fn push_blob(
        &self,
        store: &Store,
        ep: &Endpoint,
        r: &Reference,
        creds: Option<&Credentials>,
        d: &Descriptor,
        is_config: bool,
        mount_from: &[String],
        opts: &PushOptions,
        progress: &Progress,
    ) -> Result<BlobOutcome> {
        let id = short_id(&d.digest);
        let scope = repo_scope(r, true);
        let blob_url = format!("{}/v2/{}/blobs/{}", ep.base, r.path(), d.digest);
        let resp = self.send(ep, creds, &scope, |h| h.head(&blob_url)).await?;
        if resp.status().is_success() {
            if !is_config {
                progress(ProgressMessage::with_id("Layer already exists", id));
            }
            return Ok(BlobOutcome::Skipped);
        }
        let uploads = format!("{}/v2/{}/blobs/uploads/", ep.base, r.path());
        for from in mount_from {
            let url = format!("{uploads}?mount={}&from={from}", d.digest);
            let scope = format!("{scope} repository:{from}:pull");
            let resp = self.send(ep, creds, &scope, |h| h.post(&url)).await?;
            if resp.status() == StatusCode::CREATED {
                if !is_config {
                    progress(ProgressMessage::with_id(format!("Mounted from {from}"), id));
                }
                return Ok(BlobOutcome::Mounted);
            }
        }
        if !is_config {
            progress(ProgressMessage::with_id("Waiting", id.clone()));
        }
        let resp = self.send(ep, creds, &scope, |h| h.post(&uploads)).await?;
        if resp.status() != StatusCode::ACCEPTED {
            return Err(status_error(&format!("POST {uploads}"), resp).await);
        }
        let mut location = next_location(&resp, &uploads)?;
        let total = d.size;
        // Fail here, naming the blob, rather than as a confusing upload error.
        let mut blob = store.open_blob(&d.digest)?;
        if blob.size() != total {
            return Err(Error::BlobSize {
                digest: d.digest.to_string(),
                reason: format!(
                    "local blob has {} bytes, its descriptor {total}",
                    blob.size()
                ),
            });
        }
        if let Some(chunk) = opts.chunk_size.filter(|c| *c > 0) {
            let mut offset = 0u64;
            while offset < total {
                let n = chunk.min(total - offset) as usize;
                let mut buf = vec![0u8; n];
                blob.read_exact(&mut buf).map_err(|e| Error::Io {
                    context: "read blob",
                    path: d.digest.to_string().into(),
                    source: e,
                })?;
                let body = bytes::Bytes::from(buf);
                let range = format!("{offset}-{}", offset + n as u64 - 1);
                let loc = location.clone();
                let resp = self
                    .send(ep, creds, &scope, |h| {
                        h.patch(loc.clone())
                            .header(CONTENT_TYPE, "application/octet-stream")
                            .header(CONTENT_RANGE, range.as_str())
                            .header(CONTENT_LENGTH, n)
                            .body(body.clone())
                    })
                    .await?;
                if resp.status() != StatusCode::ACCEPTED {
                    return Err(status_error(&format!("PATCH {loc}"), resp).await);
                }
                location = next_location(&resp, loc.as_str())?;
                offset += n as u64;
                if !is_config {
                    progress(ProgressMessage::bytes("Pushing", &id, offset, total));
                }
            }
            // Only a blob that still hashes to its digest is committed.
            blob.verify_rest()?;
            let mut put = location.clone();
            put.query_pairs_mut()
                .append_pair("digest", d.digest.as_str());
            let resp = self
                .send(ep, creds, &scope, |h| {
                    h.put(put.clone()).header(CONTENT_LENGTH, 0)
                })
                .await?;
            if resp.status() != StatusCode::CREATED {
                return Err(status_error(&format!("PUT {put}"), resp).await);
            }
        } else {
            drop(blob);
            let mut put = location.clone();
            put.query_pairs_mut()
                .append_pair("digest", d.digest.as_str());
            let prog = progress.clone();
            let pid = id.clone();
            // A read error aborts the request; reqwest reports that without its cause, so
            // the body leaves it here to be returned instead.
            let read_error: ReadError = Default::default();
            let sent = self
                .send(ep, creds, &scope, |h| {
                    // Each attempt (auth retries) streams the blob afresh.
                    let body = match store.open_blob(&d.digest) {
                        Ok(b) => blob_body(b, &prog, &pid, !is_config, read_error.clone()),
                        // Fails the upload with a body the registry rejects by digest.
                        Err(e) => reqwest::Body::from(format!("{e}")),
                    };
                    h.put(put.clone())
                        .header(CONTENT_TYPE, "application/octet-stream")
                        .header(CONTENT_LENGTH, total)
                        .body(body)
                })
                .await;
            let taken = read_error.lock().ok().and_then(|mut e| e.take());
            let resp = match (sent, taken) {
                (Ok(resp), None) => resp,
                (_, Some(source)) => {
                    return Err(Error::Io {
                        context: "stream blob",
                        path: d.digest.as_str().into(),
                        source,
                    })
                }
                (Err(e), None) => return Err(e),
            };
            if resp.status() != StatusCode::CREATED {
                return Err(status_error(&format!("PUT {put}"), resp).await);
            }
        }
        if !is_config {
            progress(ProgressMessage::with_id("Pushed", id));
        }
        Ok(BlobOutcome::Uploaded)
    }
}

/// Where [`blob_body`] leaves the error that made it abort the upload.
type ReadError = Arc<std::sync::Mutex<Option<std::io::Error>>>;

/// A request body streaming a store blob, reporting `Pushing` progress as it is read. The
/// blob is read on a blocking thread; a digest mismatch at its end fails the stream, so the
/// upload is aborted rather than completed with corrupt content.
fn blob_body(
    mut blob: berth_image::BlobReader,
    progress: &Progress,
    id: &str,
    report: bool,
    read_error: ReadError,
) -> reqwest::Body {
    const CHUNK: usize = 256 * 1024;
    let total = blob.size();
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<bytes::Bytes>>(4);
    // One chunk is held back until the next read: the last one is released only after the
    // end-of-file read has checked the digest, so a corrupt blob never completes an upload.
    tokio::task::spawn_blocking(move || {
        let mut held: Option<bytes::Bytes> = None;
        loop {
            let mut buf = vec![0u8; CHUNK];
            let next = match blob.read(&mut buf) {
                Ok(n) => {
                    buf.truncate(n);
                    Ok(n)
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => Err(e),
            };
            match next {
                Ok(n) => {
                    if let Some(c) = held.take() {
                        if tx.blocking_send(Ok(c)).is_err() {
                            return; // the request was dropped
                        }
                    }
                    if n == 0 {
                        return;
                    }
                    held = Some(bytes::Bytes::from(buf));
                }
                Err(e) => {
                    let kind = e.kind();
                    if let Ok(mut slot) = read_error.lock() {
                        *slot = Some(e);
                    }
                    let _ = tx.blocking_send(Err(std::io::Error::new(kind, "reading blob failed")));
                    return;
                }
            }
        }
    });
    let progress = progress.clone();
    let id = id.to_string();
    let mut sent = 0u64;
    let mut last = 0u64;
    let stream =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) })
            .map(move |c| {
                if let Ok(c) = &c {
                    sent += c.len() as u64;
                    if report && (sent - last >= 512 * 1024 || sent == total) {
                        last = sent;
                        progress(ProgressMessage::bytes("Pushing", &id, sent, total));
                    }
                }
                c
            });
    reqwest::Body::wrap_stream(stream)
}

/// The upload session URL from a `Location` header, which may be relative.
fn next_location(resp: &reqwest::Response, base: &str) -> Result<Url> {
    let loc = header_str(resp.headers(), LOCATION.as_str()).ok_or_else(|| Error::Invalid {
        what: format!("upload session at {base}"),
        reason: "no Location header".into(),
    })?;
    let base = Url::parse(base).map_err(|e| Error::Invalid {
        what: base.to_string(),
        reason: e.to_string(),
    })?;
    base.join(loc).map_err(|e| Error::Invalid {
        what: format!("upload location {loc:?}"),
        reason: e.to_string(),
    })
}
