//! The Engine API client: finds the daemon (`-H`, `$BERTH_HOST`, `$DOCKER_HOST`, the default
//! socket), negotiates the API version with `/_ping`, starts a daemon in the background when
//! nothing answers on the default socket, and sends requests over HTTP/1.1.

use std::path::PathBuf;
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

/// A connection-per-request API client (cheap to clone).
#[derive(Clone)]
pub struct Client {
    endpoint: Endpoint,
    /// True when no host was given explicitly: then a missing daemon is started.
    default_host: bool,
    version: ApiVersion,
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
            version: apiversion::MAX,
        })
    }

    /// Pings the daemon, starting one when the default socket is dead, and adopts the lower
    /// of the daemon's API version and ours.
    pub async fn negotiate(&mut self) -> Result<()> {
        let resp = match self.raw(Method::GET, "/_ping", None).await {
            Ok(r) => r,
            Err(err) if self.default_host && is_not_running(&err) => {
                self.start_daemon().await?;
                self.raw(Method::GET, "/_ping", None).await?
            }
            Err(err) => return Err(err),
        };
        if let Some(v) = resp
            .headers()
            .get("api-version")
            .and_then(|v| v.to_str().ok())
            .and_then(ApiVersion::parse)
        {
            self.version = v.min(apiversion::MAX);
        }
        Ok(())
    }

    /// The API version in use.
    pub fn version(&self) -> ApiVersion {
        self.version
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

    async fn connect(&self) -> Result<http1::SendRequest<Full<Bytes>>> {
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
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("Host", "berth")
            .header(
                "User-Agent",
                concat!("berth-cli/", env!("CARGO_PKG_VERSION")),
            );
        if body.is_some() {
            req = req.header("Content-Type", "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .context("build request")?;
        sender.send_request(req).await.context("send request")
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
        let mut sender = self.connect().await?;
        let req = Request::builder()
            .method(Method::POST)
            .uri(format!("/v{}{path}", self.version))
            .header("Host", "berth")
            .header(hyper::header::CONNECTION, "Upgrade")
            .header(hyper::header::UPGRADE, "tcp")
            .header("Content-Type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .context("build request")?;
        let resp = sender.send_request(req).await.context("send request")?;
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
        let resp = self
            .raw(method, &format!("/v{}{path}", self.version), body)
            .await?;
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
        let mut sender = self.connect().await?;
        let req = Request::builder()
            .method(method)
            .uri(format!("/v{}{path}", self.version))
            .header("Host", "berth")
            .header("Content-Type", content_type)
            .body(Full::new(Bytes::from(body)))
            .context("build request")?;
        let resp = sender.send_request(req).await.context("send request")?;
        check(resp).await
    }

    /// [`Client::request`] with more headers (`X-Registry-Auth` for pull and push).
    pub async fn request_with_headers(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<Response<Incoming>> {
        let mut sender = self.connect().await?;
        let mut req = Request::builder()
            .method(method)
            .uri(format!("/v{}{path}", self.version))
            .header("Host", "berth")
            .header("Content-Type", "application/json");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(Bytes::new())).context("build request")?;
        let resp = sender.send_request(req).await.context("send request")?;
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
