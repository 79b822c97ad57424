//! The HTTP layer: parses `/v2/...` routes, calls the store, and shapes answers as the OCI
//! distribution spec (v1.1) requires. Behaviour lives in [`crate::storage`]; errors become
//! HTTP answers only in [`crate::error`].

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncSeekExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::auth::{Access, Auth};
use crate::body::{self, Body};
use crate::digest::Digest;
use crate::error::{ApiError, Code};
use crate::name;
use crate::storage::{Descriptor, Reference, Store, StoreError, MAX_MANIFEST_SIZE};

/// How long an upload session may stay idle before the sweeper removes it.
pub const UPLOAD_MAX_IDLE: Duration = Duration::from_secs(3600);
const SWEEP_INTERVAL: Duration = Duration::from_secs(600);

/// Media type of the referrers answer.
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// A running registry's shared state.
pub struct Registry {
    pub store: Store,
    pub read_only: bool,
    pub auth: Option<Auth>,
}

type ApiResult = Result<Response<Body>, ApiError>;

/// How long a client may take to send a request head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// How long in-flight requests may run on after shutdown is requested.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Accepts connections on `listener` until `shutdown` completes, serving each over HTTP/1.1,
/// behind TLS when an acceptor is given; then lets in-flight requests finish (up to
/// [`SHUTDOWN_GRACE`]). Also sweeps expired upload sessions.
pub async fn serve(
    listener: TcpListener,
    registry: Arc<Registry>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let sweeper = registry.store.clone();
    let sweep = tokio::spawn(async move {
        let mut tick = tokio::time::interval(SWEEP_INTERVAL);
        loop {
            tick.tick().await;
            let store = sweeper.clone();
            match tokio::task::spawn_blocking(move || store.sweep_uploads(UPLOAD_MAX_IDLE)).await {
                Ok(Ok(n)) if n > 0 => tracing::info!("removed {n} expired upload sessions"),
                Ok(Err(e)) => tracing::warn!("sweeping uploads: {e}"),
                _ => {}
            }
        }
    });
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(conn) => conn,
            Err(e) => {
                // Out of descriptors and the like: back off rather than spin.
                tracing::warn!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let registry = registry.clone();
        let tls = tls.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let registry = registry.clone();
                async move { Ok::<_, Infallible>(handle(&registry, req, peer).await) }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            // Clients that never finish their request head must not hold a connection forever.
            builder
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT);
            let result = match tls {
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(s) => {
                        watcher
                            .watch(builder.serve_connection(TokioIo::new(s), service))
                            .await
                    }
                    Err(e) => {
                        tracing::debug!("tls handshake with {peer}: {e}");
                        return;
                    }
                },
                None => {
                    watcher
                        .watch(builder.serve_connection(TokioIo::new(stream), service))
                        .await
                }
            };
            if let Err(e) = result {
                tracing::debug!("connection from {peer}: {e}");
            }
        });
    }
    tracing::info!("shutting down: no new connections, waiting for requests in flight");
    sweep.abort();
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(SHUTDOWN_GRACE) => {
            tracing::warn!("requests still running after {SHUTDOWN_GRACE:?}; stopping anyway");
        }
    }
}

/// Answers one request; never fails (errors become error bodies).
pub async fn handle(
    registry: &Registry,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let mut resp = match dispatch(registry, req).await {
        Ok(r) => r,
        Err(e) => error_response(e, method == Method::HEAD),
    };
    resp.headers_mut().insert(
        "Docker-Distribution-API-Version",
        HeaderValue::from_static("registry/2.0"),
    );
    tracing::debug!("{peer} {method} {path} {}", resp.status());
    resp
}

fn error_response(e: ApiError, head: bool) -> Response<Body> {
    let body = e.body();
    let mut b = Response::builder()
        .status(e.status)
        .header(CONTENT_TYPE, "application/json")
        .header(CONTENT_LENGTH, body.len());
    for (k, v) in &e.headers {
        b = b.header(*k, v);
    }
    let body = if head {
        body::empty()
    } else {
        body::full(body)
    };
    b.body(body)
        .unwrap_or_else(|_| Response::new(body::empty()))
}

/// The routes of the API, with the repository name already split off.
enum Route {
    Base,
    Catalog,
    Tags(String),
    Manifest(String, String),
    Blob(String, String),
    UploadStart(String),
    Upload(String, String),
    Referrers(String, String),
}

impl Route {
    fn repository(&self) -> Option<&str> {
        match self {
            Route::Base | Route::Catalog => None,
            Route::Tags(n)
            | Route::Manifest(n, _)
            | Route::Blob(n, _)
            | Route::UploadStart(n)
            | Route::Upload(n, _)
            | Route::Referrers(n, _) => Some(n),
        }
    }
}

fn parse_route(path: &str) -> Option<Route> {
    let rest = path.strip_prefix("/v2")?;
    if rest.is_empty() || rest == "/" {
        return Some(Route::Base);
    }
    let rest = rest.strip_prefix('/')?;
    if rest == "_catalog" {
        return Some(Route::Catalog);
    }
    let segs: Vec<&str> = rest.split('/').collect();
    let n = segs.len();
    let name = |k: usize| segs[..n - k].join("/");
    if n >= 4 && segs[n - 3] == "blobs" && segs[n - 2] == "uploads" {
        let id = segs[n - 1];
        return Some(if id.is_empty() {
            Route::UploadStart(name(3))
        } else {
            Route::Upload(name(3), id.to_string())
        });
    }
    if n < 3 {
        return None;
    }
    let (kind, last) = (segs[n - 2], segs[n - 1].to_string());
    Some(match kind {
        "blobs" if last == "uploads" => Route::UploadStart(name(2)),
        "blobs" => Route::Blob(name(2), last),
        "manifests" => Route::Manifest(name(2), last),
        "referrers" => Route::Referrers(name(2), last),
        "tags" if last == "list" => Route::Tags(name(2)),
        _ => return None,
    })
}

/// Query parameters, decoded.
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(q: Option<&str>) -> Self {
        Query(
            form_urlencoded::parse(q.unwrap_or("").as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
    fn all(&self, key: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .collect()
    }
}

fn check_name(name: &str) -> Result<(), ApiError> {
    if name::valid_name(name) {
        Ok(())
    } else {
        Err(ApiError::new(
            Code::NameInvalid,
            format!("invalid repository name {name:?}"),
        ))
    }
}

fn parse_digest(s: &str) -> Result<Digest, ApiError> {
    s.parse()
        .map_err(|e: crate::digest::DigestError| ApiError::new(Code::DigestInvalid, e.to_string()))
}

fn parse_reference(s: &str) -> Result<Reference, ApiError> {
    if s.contains(':') {
        parse_digest(s).map(Reference::Digest)
    } else if name::valid_tag(s) {
        Ok(Reference::Tag(s.to_string()))
    } else {
        Err(ApiError::new(
            Code::ManifestInvalid,
            format!("invalid tag {s:?}"),
        ))
    }
}

/// Runs blocking store work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(ApiError::from),
        Err(e) => Err(ApiError::new(
            Code::Unknown,
            format!("storage task failed: {e}"),
        )),
    }
}

fn is_write(m: &Method) -> bool {
    matches!(
        *m,
        Method::PUT | Method::POST | Method::PATCH | Method::DELETE
    )
}

async fn dispatch(reg: &Registry, req: Request<Incoming>) -> ApiResult {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = Query::parse(req.uri().query());
    if path == "/token" {
        // The bearer token endpoint, answered before the check it exists to satisfy.
        let Some(auth) = &reg.auth else {
            return Err(ApiError::new(Code::Unknown, "no authentication configured")
                .with_status(StatusCode::NOT_FOUND));
        };
        return Ok(json_response(
            StatusCode::OK,
            auth.issue_token(req.headers())?,
        ));
    }
    let route = parse_route(&path).ok_or_else(|| {
        ApiError::new(Code::Unknown, format!("no route for {path}"))
            .with_status(StatusCode::NOT_FOUND)
    })?;
    if let Some(auth) = &reg.auth {
        let access = Access {
            repository: route.repository(),
            write: is_write(&method),
        };
        auth.check(req.headers(), &access)?;
    }
    if reg.read_only && is_write(&method) {
        return Err(ApiError::new(
            Code::Unsupported,
            "registry is in read-only mode",
        ));
    }
    let store = reg.store.clone();
    match (route, method) {
        (Route::Base, Method::GET | Method::HEAD) => {
            Ok(json_response(StatusCode::OK, b"{}".to_vec()))
        }
        (Route::Catalog, Method::GET) => catalog(store, &query, &path).await,
        (Route::Tags(name), Method::GET) => tags(store, name, &query).await,
        (Route::Manifest(name, r), Method::GET) => get_manifest(store, name, r, false).await,
        (Route::Manifest(name, r), Method::HEAD) => get_manifest(store, name, r, true).await,
        (Route::Manifest(name, r), Method::PUT) => put_manifest(store, name, r, &query, req).await,
        (Route::Manifest(name, r), Method::DELETE) => {
            check_name(&name)?;
            let reference = parse_reference(&r)?;
            blocking(move || store.delete_manifest(&name, &reference)).await?;
            Ok(status_only(StatusCode::ACCEPTED))
        }
        (Route::Blob(name, d), Method::GET) => get_blob(store, name, d, req, false).await,
        (Route::Blob(name, d), Method::HEAD) => get_blob(store, name, d, req, true).await,
        (Route::Blob(name, d), Method::DELETE) => {
            check_name(&name)?;
            let digest = parse_digest(&d)?;
            blocking(move || store.delete_blob(&name, &digest)).await?;
            Ok(status_only(StatusCode::ACCEPTED))
        }
        (Route::UploadStart(name), Method::POST) => start_upload(store, name, &query, req).await,
        (Route::Upload(name, id), Method::GET) => {
            check_name(&name)?;
            let (n, i) = (name.clone(), id.clone());
            let size = blocking(move || store.upload_size(&n, &i)).await?;
            Ok(upload_progress(StatusCode::NO_CONTENT, &name, &id, size))
        }
        (Route::Upload(name, id), Method::PATCH) => patch_upload(store, name, id, req).await,
        (Route::Upload(name, id), Method::PUT) => put_upload(store, name, id, &query, req).await,
        (Route::Upload(name, id), Method::DELETE) => {
            check_name(&name)?;
            blocking(move || store.upload_cancel(&name, &id)).await?;
            Ok(status_only(StatusCode::NO_CONTENT))
        }
        (Route::Referrers(name, d), Method::GET) => referrers(store, name, d, &query).await,
        (_, m) => Err(ApiError::new(
            Code::Unsupported,
            format!("method {m} not allowed on {path}"),
        )),
    }
}

fn status_only(status: StatusCode) -> Response<Body> {
    let mut r = Response::new(body::empty());
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_LENGTH, HeaderValue::from(0));
    r
}

fn json_response(status: StatusCode, data: Vec<u8>) -> Response<Body> {
    let mut r = Response::new(body::empty());
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r.headers_mut()
        .insert(CONTENT_LENGTH, HeaderValue::from(data.len()));
    *r.body_mut() = body::full(data);
    r
}

fn header_value(s: &str) -> Result<HeaderValue, ApiError> {
    HeaderValue::from_str(s).map_err(|_| {
        ApiError::new(
            Code::ManifestInvalid,
            format!("value {s:?} cannot be sent in a header"),
        )
    })
}

/// `n` and `last` pagination over a sorted list; returns the page and whether more follow.
fn paginate(items: Vec<String>, query: &Query) -> Result<(Vec<String>, Option<usize>), ApiError> {
    let mut items: Vec<String> = match query.get("last") {
        Some(last) => items.into_iter().filter(|t| t.as_str() > last).collect(),
        None => items,
    };
    let n = match query.get("n") {
        Some(n) => Some(n.parse::<usize>().map_err(|_| {
            ApiError::new(Code::Unsupported, format!("invalid page size n={n:?}"))
                .with_status(StatusCode::BAD_REQUEST)
        })?),
        None => None,
    };
    match n {
        // A zero page size is an empty page with no link to follow (it would never advance).
        Some(0) => Ok((Vec::new(), None)),
        Some(n) if items.len() > n => {
            items.truncate(n);
            Ok((items, Some(n)))
        }
        _ => Ok((items, None)),
    }
}

fn next_link(base: &str, n: usize, last: Option<&String>) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    q.append_pair("n", &n.to_string());
    if let Some(last) = last {
        q.append_pair("last", last);
    }
    format!("<{base}?{}>; rel=\"next\"", q.finish())
}

async fn catalog(store: Store, query: &Query, path: &str) -> ApiResult {
    let repos = blocking(move || store.catalog()).await?;
    let (page, more) = paginate(repos, query)?;
    let body = serde_json::json!({ "repositories": page });
    let mut r = json_response(StatusCode::OK, body.to_string().into_bytes());
    if let Some(n) = more {
        r.headers_mut()
            .insert("Link", header_value(&next_link(path, n, page.last()))?);
    }
    Ok(r)
}

async fn tags(store: Store, name: String, query: &Query) -> ApiResult {
    check_name(&name)?;
    let n = name.clone();
    let all = blocking(move || store.tags(&n)).await?;
    let (page, more) = paginate(all, query)?;
    let body = serde_json::json!({ "name": name, "tags": page });
    let mut r = json_response(StatusCode::OK, body.to_string().into_bytes());
    if let Some(n) = more {
        let base = format!("/v2/{name}/tags/list");
        r.headers_mut()
            .insert("Link", header_value(&next_link(&base, n, page.last()))?);
    }
    Ok(r)
}

async fn get_manifest(store: Store, name: String, r: String, head: bool) -> ApiResult {
    check_name(&name)?;
    let reference = parse_reference(&r)?;
    let m = blocking(move || store.get_manifest(&name, &reference)).await?;
    let len = m.body.len();
    let body = if head {
        body::empty()
    } else {
        body::full(m.body)
    };
    Response::builder()
        .status(StatusCode::OK)
        .header(CONTENT_TYPE, header_value(&m.media_type)?)
        .header(CONTENT_LENGTH, len)
        .header("Docker-Content-Digest", m.digest.to_string())
        .body(body)
        .map_err(internal)
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(Code::Unknown, e.to_string())
}

async fn put_manifest(
    store: Store,
    name: String,
    r: String,
    query: &Query,
    req: Request<Incoming>,
) -> ApiResult {
    check_name(&name)?;
    let reference = parse_reference(&r)?;
    let extra_tags = query.all("tag");
    if let Some(bad) = extra_tags.iter().find(|t| !name::valid_tag(t)) {
        return Err(ApiError::new(
            Code::ManifestInvalid,
            format!("invalid tag {bad:?}"),
        ));
    }
    let content_type = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = Limited::new(req.into_body(), MAX_MANIFEST_SIZE)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                ApiError::new(
                    Code::SizeInvalid,
                    format!("manifest exceeds the limit of {MAX_MANIFEST_SIZE} bytes"),
                )
                .with_status(StatusCode::PAYLOAD_TOO_LARGE)
            } else {
                ApiError::new(Code::ManifestInvalid, format!("reading manifest: {e}"))
            }
        })?
        .to_bytes();
    let (n, tags) = (name.clone(), extra_tags.clone());
    let put =
        blocking(move || store.put_manifest(&n, &reference, &body, content_type.as_deref(), &tags))
            .await?;
    let mut b = Response::builder()
        .status(StatusCode::CREATED)
        .header(LOCATION, format!("/v2/{name}/manifests/{}", put.digest))
        .header(CONTENT_LENGTH, 0)
        .header("Docker-Content-Digest", put.digest.to_string());
    if let Some(subject) = &put.subject {
        b = b.header("OCI-Subject", subject.to_string());
    }
    for tag in &extra_tags {
        b = b.header("OCI-Tag", header_value(tag)?);
    }
    b.body(body::empty()).map_err(internal)
}

/// Parses a `Range: bytes=...` request header against a blob of `size` bytes.
fn parse_range(v: &str, size: u64) -> Option<(u64, u64)> {
    let spec = v.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (start, end) = if a.is_empty() {
        let suffix: u64 = b.parse().ok()?;
        if suffix == 0 {
            return None;
        }
        (size.saturating_sub(suffix), size.checked_sub(1)?)
    } else {
        let start: u64 = a.parse().ok()?;
        let end = if b.is_empty() {
            size.checked_sub(1)?
        } else {
            b.parse::<u64>().ok()?.min(size.checked_sub(1)?)
        };
        (start, end)
    };
    (start <= end && start < size).then_some((start, end))
}

async fn get_blob(
    store: Store,
    name: String,
    d: String,
    req: Request<Incoming>,
    head: bool,
) -> ApiResult {
    check_name(&name)?;
    let digest = parse_digest(&d)?;
    let dg = digest.clone();
    let (path, size) = blocking(move || store.blob_file(&name, &dg)).await?;
    let range = match req
        .headers()
        .get(hyper::header::RANGE)
        .and_then(|v| v.to_str().ok())
    {
        Some(v) => Some(parse_range(v, size).ok_or_else(|| {
            ApiError::new(
                Code::BlobUploadInvalid,
                format!("unsatisfiable range {v:?}"),
            )
            .with_status(StatusCode::RANGE_NOT_SATISFIABLE)
            .with_header("Content-Range", format!("bytes */{size}"))
        })?),
        None => None,
    };
    let (status, start, len) = match range {
        Some((s, e)) => (StatusCode::PARTIAL_CONTENT, s, e - s + 1),
        None => (StatusCode::OK, 0, size),
    };
    let mut b = Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "application/octet-stream")
        .header(CONTENT_LENGTH, len)
        .header("Accept-Ranges", "bytes")
        .header("Docker-Content-Digest", digest.to_string());
    if range.is_some() {
        b = b.header(
            "Content-Range",
            format!("bytes {start}-{}/{size}", start + len - 1),
        );
    }
    let body = if head {
        body::empty()
    } else {
        let mut f = tokio::fs::File::open(&path).await.map_err(|e| {
            ApiError::from(StoreError::Io {
                op: "open",
                path: path.clone(),
                source: e,
            })
        })?;
        if start > 0 {
            f.seek(io::SeekFrom::Start(start)).await.map_err(|e| {
                ApiError::from(StoreError::Io {
                    op: "seek",
                    path: path.clone(),
                    source: e,
                })
            })?;
        }
        body::file(f, len)
    };
    b.body(body).map_err(internal)
}

fn upload_progress(status: StatusCode, name: &str, id: &str, size: u64) -> Response<Body> {
    let mut r = status_only(status);
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&format!("/v2/{name}/blobs/uploads/{id}")) {
        h.insert(LOCATION, v);
    }
    if let Ok(v) = HeaderValue::from_str(id) {
        h.insert("Docker-Upload-UUID", v);
    }
    let range = if size == 0 {
        "0-0".to_string()
    } else {
        format!("0-{}", size - 1)
    };
    if let Ok(v) = HeaderValue::from_str(&range) {
        h.insert("Range", v);
    }
    r
}

fn blob_created(name: &str, digest: &Digest) -> Result<Response<Body>, ApiError> {
    Response::builder()
        .status(StatusCode::CREATED)
        .header(LOCATION, format!("/v2/{name}/blobs/{digest}"))
        .header(CONTENT_LENGTH, 0)
        .header("Docker-Content-Digest", digest.to_string())
        .body(body::empty())
        .map_err(internal)
}

async fn start_upload(
    store: Store,
    name: String,
    query: &Query,
    req: Request<Incoming>,
) -> ApiResult {
    check_name(&name)?;
    if let Some(mount) = query.get("mount") {
        let digest = parse_digest(mount)?;
        let from = match query.get("from") {
            Some(f) => {
                check_name(f)?;
                Some(f.to_string())
            }
            None => None,
        };
        let (s, n, d) = (store.clone(), name.clone(), digest.clone());
        if blocking(move || s.mount_blob(&n, from.as_deref(), &d)).await? {
            return blob_created(&name, &digest);
        }
        // Nothing to mount: fall through to an ordinary upload session, as the spec says.
    }
    let declared = query.get("digest").map(parse_digest).transpose()?;
    let (s, n) = (store.clone(), name.clone());
    let id = blocking(move || s.upload_start(&n)).await?;
    let Some(digest) = declared else {
        return Ok(upload_progress(StatusCode::ACCEPTED, &name, &id, 0));
    };
    // Monolithic upload: the whole blob is the POST body.
    let (s, n, i) = (store.clone(), name.clone(), id.clone());
    let data = blocking(move || s.upload_data(&n, &i)).await?;
    let result = append_body(&data, req.into_body()).await;
    let (n, i, d) = (name.clone(), id.clone(), digest.clone());
    let s = store.clone();
    let finished = match result {
        Ok(_) => blocking(move || s.upload_finish(&n, &i, &d)).await,
        Err(e) => Err(e),
    };
    if let Err(e) = finished {
        let _ = blocking(move || store.upload_cancel(&name, &id)).await;
        return Err(e);
    }
    blob_created(&name, &digest)
}

/// Appends a request body to an upload's data file; returns the bytes written.
async fn append_body(path: &PathBuf, mut body: Incoming) -> Result<u64, ApiError> {
    let io_fail = |op: &'static str| {
        let path = path.clone();
        move |source| ApiError::from(StoreError::Io { op, path, source })
    };
    let mut f = tokio::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .await
        .map_err(io_fail("open"))?;
    let mut written = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame
            .map_err(|e| ApiError::new(Code::BlobUploadInvalid, format!("reading body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            f.write_all(&data).await.map_err(io_fail("write"))?;
            written += data.len() as u64;
        }
    }
    f.flush().await.map_err(io_fail("write"))?;
    Ok(written)
}

/// Checks a chunk's `Content-Range: <start>-<end>` against the bytes already received and
/// the chunk's `Content-Length`, before any of it is written.
fn check_content_range(req: &Request<Incoming>, id: &str, size: u64) -> Result<(), ApiError> {
    let Some(v) = req.headers().get(hyper::header::CONTENT_RANGE) else {
        return Ok(());
    };
    let v = v.to_str().unwrap_or("");
    let v = v.strip_prefix("bytes ").unwrap_or(v);
    let (start, end) = v
        .split_once('-')
        .and_then(|(a, b)| Some((a.trim().parse::<u64>().ok()?, b.trim().parse::<u64>().ok()?)))
        .filter(|(a, b)| a <= b)
        .ok_or_else(|| {
            ApiError::new(
                Code::BlobUploadInvalid,
                format!("invalid Content-Range {v:?}"),
            )
            .with_status(StatusCode::RANGE_NOT_SATISFIABLE)
        })?;
    if start != size {
        return Err(StoreError::RangeInvalid {
            id: id.to_string(),
            size,
            start,
        }
        .into());
    }
    let length = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|l| l.to_str().ok())
        .and_then(|l| l.parse::<u64>().ok());
    if length.is_some_and(|l| l != end - start + 1) {
        return Err(ApiError::new(
            Code::BlobUploadInvalid,
            format!("Content-Range {v} does not match Content-Length {length:?}"),
        )
        .with_status(StatusCode::RANGE_NOT_SATISFIABLE));
    }
    Ok(())
}

async fn patch_upload(store: Store, name: String, id: String, req: Request<Incoming>) -> ApiResult {
    check_name(&name)?;
    let (s, n, i) = (store.clone(), name.clone(), id.clone());
    let data = blocking(move || s.upload_data(&n, &i)).await?;
    let (s, n, i) = (store.clone(), name.clone(), id.clone());
    let size = blocking(move || s.upload_size(&n, &i)).await?;
    check_content_range(&req, &id, size)?;
    let written = append_body(&data, req.into_body()).await?;
    Ok(upload_progress(
        StatusCode::ACCEPTED,
        &name,
        &id,
        size + written,
    ))
}

async fn put_upload(
    store: Store,
    name: String,
    id: String,
    query: &Query,
    req: Request<Incoming>,
) -> ApiResult {
    check_name(&name)?;
    let digest = query
        .get("digest")
        .ok_or_else(|| ApiError::new(Code::DigestInvalid, "digest parameter is required"))
        .and_then(parse_digest)?;
    let (s, n, i) = (store.clone(), name.clone(), id.clone());
    let data = blocking(move || s.upload_data(&n, &i)).await?;
    let (s, n, i) = (store.clone(), name.clone(), id.clone());
    let size = blocking(move || s.upload_size(&n, &i)).await?;
    check_content_range(&req, &id, size)?;
    append_body(&data, req.into_body()).await?;
    let (n, d) = (name.clone(), digest.clone());
    blocking(move || store.upload_finish(&n, &id, &d)).await?;
    blob_created(&name, &digest)
}

async fn referrers(store: Store, name: String, d: String, query: &Query) -> ApiResult {
    check_name(&name)?;
    let subject = parse_digest(&d)?;
    let mut list: Vec<Descriptor> = blocking(move || store.referrers(&name, &subject)).await?;
    let filter = query.get("artifactType");
    if let Some(t) = filter {
        list.retain(|desc| desc.artifact_type.as_deref() == Some(t));
    }
    let body = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": list,
    });
    let body = body.to_string().into_bytes();
    let mut b = Response::builder()
        .status(StatusCode::OK)
        .header(CONTENT_TYPE, OCI_INDEX)
        .header(CONTENT_LENGTH, body.len());
    if filter.is_some() {
        b = b.header("OCI-Filters-Applied", "artifactType");
    }
    b.body(body::full(Bytes::from(body))).map_err(internal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert!(matches!(parse_route("/v2/"), Some(Route::Base)));
        assert!(matches!(parse_route("/v2/_catalog"), Some(Route::Catalog)));
        assert!(matches!(parse_route("/v2/a/b/tags/list"), Some(Route::Tags(n)) if n == "a/b"));
        assert!(
            matches!(parse_route("/v2/a/b/blobs/uploads/"), Some(Route::UploadStart(n)) if n == "a/b")
        );
        assert!(
            matches!(parse_route("/v2/a/blobs/uploads/xy"), Some(Route::Upload(n, i)) if n == "a" && i == "xy")
        );
        assert!(
            matches!(parse_route("/v2/a/manifests/latest"), Some(Route::Manifest(n, r)) if n == "a" && r == "latest")
        );
        assert!(matches!(
            parse_route("/v2/a/blobs/sha256:00"),
            Some(Route::Blob(..))
        ));
        assert!(parse_route("/v3/a").is_none());
        assert!(parse_route("/v2/a/other/x").is_none());
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Some((0, 9)));
        assert_eq!(parse_range("bytes=90-", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=-10", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=50-500", 100), Some((50, 99)));
        assert_eq!(parse_range("bytes=100-", 100), None);
        assert_eq!(parse_range("bytes=5-1", 100), None);
        assert_eq!(parse_range("items=0-1", 100), None);
    }
}
