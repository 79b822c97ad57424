//! The Engine API client: finds the daemon (`-H`, `$BERTH_HOST`, `$DOCKER_HOST`, the default
//! socket), starts a daemon in the background when nothing answers on the default socket, and
//! sends requests over HTTP/1.1.
//!
//! Requests go out under our newest API version without a `/_ping` first (a round trip off
//! every command); a daemon that answers "client version … is too new" is pinged then, and the
//! request is sent again under the version both support, which later requests keep.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use tokio::net::{TcpStream, UnixStream};

use berth_daemon::apiversion::{self, ApiVersion};
use berth_daemon::config::{DEFAULT_EXEC_ROOT, DEFAULT_HOST};

/// Where the daemon listens.
#[derive(Debug, Clone)]
pub enum Endpoint {
    /// A unix socket.
    Unix(PathBuf),
    /// `host:port` over plain TCP.
    Tcp(String),
}

impl Endpoint {
    fn parse(s: &str) -> Result<Self> {
        match berth_daemon::config::Host::parse(s)? {
            berth_daemon::config::Host::Unix(p) => Ok(Endpoint::Unix(p)),
            berth_daemon::config::Host::Tcp(a) => Ok(Endpoint::Tcp(a)),
        }
    }
}

/// A connection-per-request API client (cheap to clone; clones share the negotiated version).
#[derive(Clone)]
pub struct Client {
    endpoint: Endpoint,
    /// True when no host was given explicitly: then a missing daemon is started.
    default_host: bool,
    /// The API version in use, as `major << 32 | minor`.
    version: Arc<AtomicU64>,
    /// Set once the daemon was pinged for its version (or started by us).
    negotiated: Arc<AtomicBool>,
    /// Serialises starting a daemon.
    starting: Arc<tokio::sync::Mutex<()>>,
}

/// An API error response, printed as the docker CLI prints it.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// The daemon's `message`.
    pub message: String,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Error response from daemon: {}", self.message)
    }
}

impl std::error::Error for ApiError {}

impl Client {
    /// Resolves the endpoint from the `-H` flag or the environment.
    pub fn new(host_flag: Option<&str>) -> Result<Self> {
        let explicit = host_flag
            .map(str::to_string)
            .or_else(|| std::env::var("BERTH_HOST").ok().filter(|h| !h.is_empty()))
            .or_else(|| std::env::var("DOCKER_HOST").ok().filter(|h| !h.is_empty()));
        let default_host = explicit.is_none();
        let endpoint = Endpoint::parse(explicit.as_deref().unwrap_or(DEFAULT_HOST))?;
        Ok(Client {
            endpoint,
            default_host,
            version: Arc::new(AtomicU64::new(pack(apiversion::MAX))),
            negotiated: Arc::new(AtomicBool::new(false)),
            starting: Arc::new(tokio::sync::Mutex::new(())),
        })
    }

    /// Pings the daemon and adopts the lower of its API version and ours.
    pub async fn negotiate(&self) -> Result<()> {
        let resp = self.raw(Method::GET, "/_ping", None).await?;
        if let Some(v) = resp
            .headers()
            .get("api-version")
            .and_then(|v| v.to_str().ok())
            .and_then(ApiVersion::parse)
        {
            self.version
                .store(pack(v.min(apiversion::MAX)), Ordering::Relaxed);
        }
        self.negotiated.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// The API version in use.
    pub fn version(&self) -> ApiVersion {
        let v = self.version.load(Ordering::Relaxed);
        ApiVersion((v >> 32) as u32, v as u32)
    }

    /// `path` under the version prefix.
    fn versioned(&self, path: &str) -> String {
        format!("/v{}{path}", self.version())
    }

    /// Whether `resp` refuses our API version as too new and the daemon was not asked for its
    /// own yet: then the caller negotiates and sends the request again. Consumes a refusal.
    async fn refused_as_too_new(&self, resp: Response<Incoming>) -> Result<Response<Incoming>> {
        if resp.status() != StatusCode::BAD_REQUEST || self.negotiated.load(Ordering::Relaxed) {
            return Ok(resp);
        }
        match check(resp).await {
            Err(err)
                if err
                    .downcast_ref::<ApiError>()
                    .is_some_and(|e| e.message.contains("is too new")) =>
            {
                self.negotiate().await?;
                Err(anyhow!(VersionRetry))
            }
            Err(err) => Err(err),
            Ok(resp) => Ok(resp),
        }
    }

    /// Sends what `build` makes, once more under the negotiated version if the daemon refused
    /// ours as too new.
    async fn send_versioned(
        &self,
        build: impl Fn(&str) -> Result<Request<Full<Bytes>>>,
        path: &str,
    ) -> Result<Response<Incoming>> {
        let mut sender = self.connect().await?;
        let resp = sender
            .send_request(build(&self.versioned(path))?)
            .await
            .context("send request")?;
        match self.refused_as_too_new(resp).await {
            Err(err) if err.downcast_ref::<VersionRetry>().is_some() => {
                let mut sender = self.connect().await?;
                sender
                    .send_request(build(&self.versioned(path))?)
                    .await
                    .context("send request")
            }
            r => r,
        }
    }

    async fn start_daemon(&self) -> Result<()> {
        let Endpoint::Unix(socket) = &self.endpoint else {
            bail!("no daemon answers and the default endpoint is not a unix socket");
        };
        let exec_root = PathBuf::from(DEFAULT_EXEC_ROOT);
        std::fs::create_dir_all(&exec_root)
            .with_context(|| format!("create {}", exec_root.display()))?;
        let log_path = exec_root.join("berth.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("open {}", log_path.display()))?;
        let exe = std::env::current_exe().context("find the berth executable")?;
        eprintln!(
            "berth: no daemon is running; starting one in the background (log: {})",
            log_path.display()
        );
        let mut cmd = std::process::Command::new(exe);
        cmd.arg("daemon")
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().context("duplicate log file handle")?)
            .stderr(log);
        // Its own process group: the daemon must not die with the terminal's Ctrl-C.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let mut child = cmd.spawn().context("start berth daemon")?;
        for _ in 0..150 {
            if let Some(status) = child.try_wait().context("wait for berth daemon")? {
                bail!(
                    "berth daemon exited during startup ({status}); see {}",
                    log_path.display()
                );
            }
            if UnixStream::connect(socket).await.is_ok() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!(
            "berth daemon did not start listening on {} within 15s; see {}",
            socket.display(),
            log_path.display()
        )
    }

    /// Connects, starting a daemon first when nothing listens on the default socket.
    async fn connect(&self) -> Result<http1::SendRequest<Full<Bytes>>> {
        match self.connect_once().await {
            Err(err) if self.default_host && is_not_running(&err) => {
                let _one_at_a_time = self.starting.lock().await;
                match self.connect_once().await {
                    Err(err) if is_not_running(&err) => {
                        self.start_daemon().await?;
                        // It is ours, of our version.
                        self.negotiated.store(true, Ordering::Relaxed);
                        self.connect_once().await
                    }
                    r => r,
                }
            }
            r => r,
        }
    }

    async fn connect_once(&self) -> Result<http1::SendRequest<Full<Bytes>>> {
        match &self.endpoint {
            Endpoint::Unix(p) => {
                let s = UnixStream::connect(p).await.map_err(|e| {
                    anyhow!(ConnectError(e)).context(format!(
                        "Cannot connect to the Berth daemon at unix://{}. Is the daemon running?",
                        p.display()
                    ))
                })?;
                handshake(s).await
            }
            Endpoint::Tcp(a) => {
                let s = TcpStream::connect(a).await.map_err(|e| {
                    anyhow!(ConnectError(e)).context(format!(
                        "Cannot connect to the Berth daemon at tcp://{a}. Is the daemon running?"
                    ))
                })?;
                handshake(s).await
            }
        }
    }

    async fn raw(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Response<Incoming>> {
        let mut sender = self.connect().await?;
        sender
            .send_request(json_request(&method, path, body.map(Bytes::from))?)
            .await
            .context("send request")
    }

    /// Opens a hijacked (upgraded) connection, as `attach` and `exec start` use.
    pub async fn hijack(&self, path: &str) -> Result<TokioIo<hyper::upgrade::Upgraded>> {
        self.hijack_with(path, Vec::new()).await
    }

    /// [`Client::hijack`] with a JSON request body (`exec start` takes one).
    pub async fn hijack_with(
        &self,
        path: &str,
        body: Vec<u8>,
    ) -> Result<TokioIo<hyper::upgrade::Upgraded>> {
        let body = Bytes::from(body);
        let build = |uri: &str| {
            Request::builder()
                .method(Method::POST)
                .uri(uri)
                .header("Host", "berth")
                .header(hyper::header::CONNECTION, "Upgrade")
                .header(hyper::header::UPGRADE, "tcp")
                .header("Content-Type", "application/json")
                .body(Full::new(body.clone()))
                .context("build request")
        };
        let resp = self.send_versioned(build, path).await?;
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            check(resp).await?;
            bail!("the daemon did not upgrade the connection");
        }
        let upgraded = hyper::upgrade::on(resp)
            .await
            .context("upgrade the connection")?;
        Ok(TokioIo::new(upgraded))
    }

    /// Sends a request under the negotiated version prefix; non-2xx answers become
    /// [`ApiError`]s.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Response<Incoming>> {
        let body = body.map(Bytes::from);
        let build = |uri: &str| json_request(&method, uri, body.clone());
        let resp = self.send_versioned(build, path).await?;
        check(resp).await
    }

    /// Sends a request with a non-JSON body (archives for load and import).
    pub async fn request_body(
        &self,
        method: Method,
        path: &str,
        body: Vec<u8>,
        content_type: &str,
    ) -> Result<Response<Incoming>> {
        let body = Bytes::from(body);
        let build = |uri: &str| {
            Request::builder()
                .method(&method)
                .uri(uri)
                .header("Host", "berth")
                .header("Content-Type", content_type)
                .body(Full::new(body.clone()))
                .context("build request")
        };
        let resp = self.send_versioned(build, path).await?;
        check(resp).await
    }

    /// [`Client::request`] with more headers (`X-Registry-Auth` for pull and push).
    pub async fn request_with_headers(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<Response<Incoming>> {
        let build = |uri: &str| {
            let mut req = Request::builder()
                .method(&method)
                .uri(uri)
                .header("Host", "berth")
                .header("Content-Type", "application/json");
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            req.body(Full::new(Bytes::new())).context("build request")
        };
        let resp = self.send_versioned(build, path).await?;
        check(resp).await
    }

    /// GETs and decodes JSON.
    pub async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let resp = self.request(Method::GET, path, None).await?;
        let bytes = resp.into_body().collect().await?.to_bytes();
        serde_json::from_slice(&bytes).with_context(|| format!("decode response of GET {path}"))
    }
}

/// Passes 2xx responses through; turns others into [`ApiError`]s carrying the daemon's
/// `message`.
async fn check(resp: Response<Incoming>) -> Result<Response<Incoming>> {
    if resp.status().is_success() {
        return Ok(resp);
    }
    let status = resp.status();
    let bytes = resp.into_body().collect().await?.to_bytes();
    let message = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| {
            v.get("message")
                .and_then(|m| m.as_str())
                .map(str::to_string)
        })
        .unwrap_or_else(|| String::from_utf8_lossy(&bytes).trim().to_string());
    Err(ApiError { status, message }.into())
}

/// A JSON request (an empty body without a content type).
fn json_request(method: &Method, uri: &str, body: Option<Bytes>) -> Result<Request<Full<Bytes>>> {
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .header("Host", "berth")
        .header(
            "User-Agent",
            concat!("berth-cli/", env!("CARGO_PKG_VERSION")),
        );
    if body.is_some() {
        req = req.header("Content-Type", "application/json");
    }
    req.body(Full::new(body.unwrap_or_default()))
        .context("build request")
}

fn pack(v: ApiVersion) -> u64 {
    (u64::from(v.0) << 32) | u64::from(v.1)
}

/// The daemon refused our API version; the request is to be sent again.
#[derive(Debug)]
struct VersionRetry;

impl std::fmt::Display for VersionRetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("API version negotiated; request to be sent again")
    }
}

impl std::error::Error for VersionRetry {}

#[derive(Debug)]
struct ConnectError(std::io::Error);

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for ConnectError {}

fn is_not_running(err: &anyhow::Error) -> bool {
    err.downcast_ref::<ConnectError>().is_some_and(|e| {
        matches!(
            e.0.kind(),
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
        )
    })
}

async fn handshake<S>(stream: S) -> Result<http1::SendRequest<Full<Bytes>>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .context("HTTP handshake with the daemon")?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    Ok(sender)
}

/// Percent-encodes a query value.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// A daemon whose newest API version is 1.41, as dockerd 20.10 answers.
    async fn old_daemon(socket: PathBuf, pings: Arc<AtomicUsize>) {
        let listener = tokio::net::UnixListener::bind(&socket).unwrap();
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let pings = pings.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let pings = pings.clone();
                    async move {
                        let path = req.uri().path().to_string();
                        let body = req.into_body().collect().await?.to_bytes();
                        let (status, version, out) = if path == "/_ping" {
                            pings.fetch_add(1, Ordering::SeqCst);
                            (200, "1.41", Bytes::from_static(b"OK"))
                        } else if path.starts_with("/v1.41/") {
                            (200, "1.41", body)
                        } else {
                            let message = format!(
                                r#"{{"message":"client version {} is too new. Maximum supported API version is 1.41"}}"#,
                                &path[2..6]
                            );
                            (400, "1.41", Bytes::from(message))
                        };
                        Ok::<_, hyper::Error>(
                            hyper::Response::builder()
                                .status(status)
                                .header("api-version", version)
                                .body(Full::new(out))
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    }

    #[tokio::test]
    async fn an_older_daemon_is_asked_its_version_once_and_the_request_sent_again() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("d.sock");
        let pings = Arc::new(AtomicUsize::new(0));
        tokio::spawn(old_daemon(socket.clone(), pings.clone()));
        while !socket.exists() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let c = Client::new(Some(&format!("unix://{}", socket.display()))).unwrap();
        assert_eq!(c.version(), apiversion::MAX);
        // The body goes out again with the retried request (the test daemon echoes it).
        let resp = c
            .request(Method::POST, "/echo", Some(br#"{"a":1}"#.to_vec()))
            .await
            .unwrap();
        let echoed = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&echoed[..], br#"{"a":1}"#);
        assert_eq!(c.version(), ApiVersion(1, 41));
        // Later requests, from clones too, use the negotiated version without a ping.
        let clone = c.clone();
        clone.request(Method::GET, "/info", None).await.unwrap();
        c.request_body(Method::POST, "/load", b"tar".to_vec(), "application/x-tar")
            .await
            .unwrap();
        assert_eq!(pings.load(Ordering::SeqCst), 1);
    }
}
