//! The Docker Engine API's HTTP edge: routing under `/v1.N/` and unversioned paths, query and
//! body decoding, Docker's error body, and the headers dockerd puts on every response.
//!
//! Handlers are thin: they decode, call [`Daemon`], and encode.

mod archive;
mod attach;
mod build;
mod containers;
mod distribution;
mod exec;
mod images;
mod networks;
mod stats;
mod system;
mod volumes;

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, Limited};
use hyper::body::{Frame, Incoming};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

use crate::apiversion::{self, ApiVersion};
use crate::daemon::Daemon;
use crate::error::{Error, Result};

/// Response body: a full buffer or a stream fed through a channel.
pub type Body = BoxBody<Bytes, Infallible>;

/// Largest JSON request body accepted.
pub const MAX_JSON_BODY: usize = 4 << 20;

/// The value of the `Server` header.
const SERVER: &str = concat!("Berth/", env!("CARGO_PKG_VERSION"), " (linux)");

/// Per-request context handed to handlers.
pub struct Ctx {
    /// The daemon.
    pub daemon: Arc<Daemon>,
    /// Negotiated API version.
    pub version: ApiVersion,
    /// Decoded query parameters.
    pub query: Query,
}

/// Serves one request: routes it in its own task so that a panicking handler becomes a 500
/// for that request only, then adds dockerd's standard headers.
pub async fn serve(
    daemon: Arc<Daemon>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let task = tokio::spawn(route(daemon, req));
    let mut resp = match task.await {
        Ok(Ok(resp)) => resp,
        Ok(Err(err)) => {
            if err.status().is_server_error() {
                tracing::error!(%method, %path, %err, "request failed");
            } else {
                tracing::debug!(%method, %path, %err, "request rejected");
            }
            error_response(&err)
        }
        Err(join) => {
            tracing::error!(%method, %path, "request handler panicked");
            let what = if join.is_panic() {
                "handler panicked"
            } else {
                "handler cancelled"
            };
            error_response(&Error::Internal(what.into()))
        }
    };
    let headers = resp.headers_mut();
    headers.insert("Api-Version", HeaderValue::from_static(max_version_str()));
    headers.insert("Ostype", HeaderValue::from_static("linux"));
    headers.insert("Server", HeaderValue::from_static(SERVER));
    Ok(resp)
}

fn max_version_str() -> &'static str {
    // Kept in sync with apiversion::MAX by the test below.
    "1.47"
}

async fn route(daemon: Arc<Daemon>, req: Request<Incoming>) -> Result<Response<Body>> {
    let (version, path) = apiversion::split_path(req.uri().path())?;
    let path = path.to_string();
    let query = Query::parse(req.uri().query().unwrap_or(""));
    let ctx = Ctx {
        daemon,
        version,
        query,
    };
    let decoded: Vec<String> = path
        .trim_matches('/')
        .split('/')
        .map(|s| percent_decode(s, false))
        .collect();
    let segments: Vec<&str> = decoded.iter().map(String::as_str).collect();
    let method = req.method().clone();
    match (&method, segments.as_slice()) {
        (&Method::GET | &Method::HEAD, ["_ping"]) => Ok(system::ping(&method)),
        (&Method::GET, ["version"]) => system::version(&ctx),
        (&Method::GET, ["info"]) => system::info(&ctx),
        (&Method::GET, ["events"]) => system::events(&ctx),
        (&Method::GET, ["system", "df"]) => system::df(&ctx).await,
        (&Method::GET, ["containers", "json"]) => containers::list(&ctx),
        (&Method::POST, ["containers", "create"]) => containers::create(&ctx, req).await,
        (&Method::POST, ["containers", "prune"]) => containers::prune(&ctx),
        (&Method::GET, ["containers", id, "json"]) => containers::inspect(&ctx, id),
        (&Method::POST, ["containers", id, "rename"]) => containers::rename(&ctx, id),
        (&Method::DELETE, ["containers", id]) => containers::remove(&ctx, id).await,
        (&Method::DELETE, ["containers", parent, alias]) if ctx.query.bool("link") => {
            containers::remove_link(&ctx, parent, alias)
        }
        (&Method::GET, ["containers", id, "logs"]) => containers::logs(&ctx, id).await,
        (&Method::POST, ["containers", id, "start"]) => containers::start(&ctx, id).await,
        (&Method::POST, ["containers", id, "stop"]) => containers::stop(&ctx, id).await,
        (&Method::POST, ["containers", id, "restart"]) => containers::restart(&ctx, id).await,
        (&Method::POST, ["containers", id, "kill"]) => containers::kill(&ctx, id).await,
        (&Method::POST, ["containers", id, "wait"]) => containers::wait(&ctx, id).await,
        (&Method::POST, ["containers", id, "attach"]) => attach::attach(&ctx, id, req).await,
        (&Method::POST, ["containers", id, "resize"]) => attach::resize(&ctx, id).await,
        (&Method::POST, ["containers", id, "pause"]) => {
            ctx.daemon.set_paused(id, true).await?;
            Ok(empty(StatusCode::NO_CONTENT))
        }
        (&Method::POST, ["containers", id, "unpause"]) => {
            ctx.daemon.set_paused(id, false).await?;
            Ok(empty(StatusCode::NO_CONTENT))
        }
        (&Method::GET, ["containers", id, "top"]) => {
            let top = ctx
                .daemon
                .top(id, ctx.query.get("ps_args").unwrap_or(""))
                .await?;
            Ok(json_response(StatusCode::OK, &top))
        }
        (&Method::POST, ["containers", id, "exec"]) => exec::create(&ctx, id, req).await,
        (&Method::POST, ["exec", id, "start"]) => exec::start(&ctx, id, req).await,
        (&Method::GET, ["exec", id, "json"]) => exec::inspect(&ctx, id),
        (&Method::POST, ["exec", id, "resize"]) => exec::resize(&ctx, id).await,
        (&Method::GET, ["containers", id, "changes"]) => images::changes(&ctx, id).await,
        (&Method::GET, ["containers", id, "export"]) => images::export(&ctx, id).await,
        (&Method::HEAD, ["containers", id, "archive"]) => archive::head(&ctx, id).await,
        (&Method::GET, ["containers", id, "archive"]) => archive::get(&ctx, id).await,
        (&Method::PUT, ["containers", id, "archive"]) => archive::put(&ctx, id, req).await,
        (&Method::POST, ["commit"]) => images::commit(&ctx, req).await,
        (&Method::POST, ["build"]) => build::build(&ctx, req).await,
        (&Method::POST, ["build", "prune"]) => build::prune(&ctx).await,
        (&Method::GET, ["containers", id, "stats"]) => stats::stats(&ctx, id).await,
        (&Method::POST, ["containers", id, "update"]) => stats::update(&ctx, id, req).await,
        (&Method::GET, ["images", "json"]) => images::list(&ctx).await,
        (&Method::POST, ["images", "load"]) => images::load(&ctx, req).await,
        (&Method::POST, ["images", "prune"]) => images::prune(&ctx).await,
        (&Method::GET, ["images", "get"]) => {
            let names = ctx.query.get_all("names");
            images::save(&ctx, names).await
        }
        (&Method::GET, ["images", name @ .., "json"]) if !name.is_empty() => {
            images::inspect(&ctx, name.join("/")).await
        }
        (&Method::GET, ["images", name @ .., "history"]) if !name.is_empty() => {
            images::history(&ctx, name.join("/")).await
        }
        (&Method::GET, ["images", name @ .., "get"]) if !name.is_empty() => {
            images::save(&ctx, vec![name.join("/")]).await
        }
        (&Method::POST, ["images", name @ .., "tag"]) if !name.is_empty() => {
            images::tag(&ctx, name.join("/")).await
        }
        (&Method::DELETE, ["images", name @ ..]) if !name.is_empty() => {
            images::remove(&ctx, name.join("/")).await
        }
        (&Method::POST, ["images", "create"]) if ctx.query.get("fromSrc") == Some("-") => {
            images::import(&ctx, req).await
        }
        (&Method::POST, ["images", "create"]) => images::pull(&ctx, &req).await,
        (&Method::POST, ["images", name @ .., "push"]) if !name.is_empty() => {
            distribution::push(&ctx, name.join("/"), &req).await
        }
        (&Method::POST, ["auth"]) => distribution::auth(&ctx, req).await,
        (&Method::GET, ["distribution", name @ .., "json"]) if !name.is_empty() => {
            distribution::inspect(&ctx, name.join("/"), &req).await
        }
        (&Method::GET, ["networks"]) => networks::list(&ctx),
        (&Method::POST, ["networks", "create"]) => networks::create(&ctx, req).await,
        (&Method::POST, ["networks", "prune"]) => networks::prune(&ctx).await,
        (&Method::GET, ["networks", id]) => networks::inspect(&ctx, id),
        (&Method::DELETE, ["networks", id]) => networks::remove(&ctx, id).await,
        (&Method::POST, ["networks", id, "connect"]) => networks::connect(&ctx, id, req).await,
        (&Method::POST, ["networks", id, "disconnect"]) => {
            networks::disconnect(&ctx, id, req).await
        }
        (&Method::GET, ["volumes"]) => volumes::list(&ctx),
        (&Method::POST, ["volumes", "create"]) => volumes::create(&ctx, req).await,
        (&Method::POST, ["volumes", "prune"]) => volumes::prune(&ctx).await,
        (&Method::GET, ["volumes", name]) => volumes::inspect(&ctx, name),
        (&Method::DELETE, ["volumes", name]) => volumes::remove(&ctx, name).await,
        (_, ["swarm", ..]) => Err(Error::NotInSwarm),
        _ => Err(Error::RouteNotFound),
    }
}

/// Docker's error body: `{"message": "..."}` with the error's status.
pub fn error_response(err: &Error) -> Response<Body> {
    json_response(
        err.status(),
        &serde_json::json!({ "message": err.to_string() }),
    )
}

/// A JSON response.
pub fn json_response<T: serde::Serialize + ?Sized>(
    status: StatusCode,
    value: &T,
) -> Response<Body> {
    let body = match serde_json::to_vec(value) {
        Ok(mut b) => {
            b.push(b'\n');
            b
        }
        Err(e) => {
            return plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("{{\"message\":\"serialise response: {e}\"}}"),
            )
        }
    };
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// An empty response with the given status.
pub fn empty(status: StatusCode) -> Response<Body> {
    let mut resp = Response::new(full(Bytes::new()));
    *resp.status_mut() = status;
    resp
}

fn plain(status: StatusCode, text: String) -> Response<Body> {
    let mut resp = Response::new(full(text));
    *resp.status_mut() = status;
    resp
}

/// A complete body.
pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).boxed()
}

/// A streaming body and the sender that feeds it; the stream ends when the sender drops, and
/// `send` fails once the client has gone, which is how producers learn to stop.
pub fn channel_body() -> (mpsc::Sender<Bytes>, Body) {
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    let stream = ChannelBody { rx };
    (tx, stream.boxed())
}

struct ChannelBody {
    rx: mpsc::Receiver<Bytes>,
}

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}

/// How much of a refused upload is still read before the error goes back ([`discard_body`]).
const MAX_DISCARDED_UPLOAD: usize = 64 << 20;

/// Reads and drops what is left of a refused request's body, up to a bound: closing a socket
/// with unread data resets it, and a client still sending would see "broken pipe" instead of
/// the error.
pub async fn discard_body(body: &mut Incoming) {
    let mut discarded = 0usize;
    while let Some(Ok(frame)) = body.frame().await {
        if let Ok(data) = frame.into_data() {
            discarded += data.len();
            if discarded > MAX_DISCARDED_UPLOAD {
                return;
            }
        }
    }
}

/// Reads a JSON request body of at most [`MAX_JSON_BODY`] bytes; an empty body decodes as
/// `{}` (Docker accepts a missing body for optional configs).
pub async fn read_json<T: DeserializeOwned>(req: Request<Incoming>) -> Result<T> {
    let bytes = Limited::new(req.into_body(), MAX_JSON_BODY)
        .collect()
        .await
        .map_err(|e| {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                Error::BodyTooLarge(MAX_JSON_BODY)
            } else {
                Error::InvalidParameter(format!("read request body: {e}"))
            }
        })?
        .to_bytes();
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        &bytes
    };
    serde_json::from_slice(bytes).map_err(|e| Error::InvalidJson(e.to_string()))
}

/// Decoded query parameters; like Go's `FormValue`, lookups return a key's first value.
#[derive(Debug, Default)]
pub struct Query(Vec<(String, String)>);

impl Query {
    /// Decodes `a=1&b=x%20y`.
    pub fn parse(raw: &str) -> Self {
        Query(
            raw.split('&')
                .filter(|p| !p.is_empty())
                .map(|pair| {
                    let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                    (percent_decode(k, true), percent_decode(v, true))
                })
                .collect(),
        )
    }

    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `key`, in order.
    pub fn get_all(&self, key: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Docker's boolean query values: absent, empty, `0`, `no`, `false`, `none` are false.
    pub fn bool(&self, key: &str) -> bool {
        match self.get(key) {
            None => false,
            Some(v) => !matches!(
                v.to_ascii_lowercase().as_str(),
                "" | "0" | "no" | "false" | "none"
            ),
        }
    }

    /// The `filters` parameter.
    pub fn filters(&self) -> Result<crate::filters::Filters> {
        crate::filters::Filters::parse(self.get("filters").unwrap_or(""))
    }
}

/// Decodes `%XX` escapes; in query strings `+` also means a space.
fn percent_decode(s: &str, plus_is_space: bool) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' if plus_is_space => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The client connection's unix socket, put in each request's extensions by the server.
///
/// docker-py reads the head of a `101` answer through a buffered reader and the hijacked
/// stream from the raw socket beneath it, so stream bytes that arrive together with the head
/// are lost in that buffer (docker/docker-py#1770): a replayed log or a quick exec's output
/// went missing now and then. dockerd is slow enough never to hit that window; Berth instead
/// holds a hijacked stream's first bytes until the client has read the head
/// ([`ConnSocket::head_read`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnSocket(std::os::fd::RawFd);

impl ConnSocket {
    /// The socket of a connection being served.
    pub(crate) fn of(stream: &tokio::net::UnixStream) -> Self {
        ConnSocket(std::os::fd::AsRawFd::as_raw_fd(stream))
    }

    /// Waits until everything sent on the connection has been read by the client (its unix
    /// socket's send queue is empty), or 50 ms at most. Call it while the connection is
    /// alive, which keeps the descriptor valid.
    pub(crate) async fn head_read(self) {
        for _ in 0..50 {
            let mut unread: libc::c_int = 0;
            // SAFETY: TIOCOUTQ (SIOCOUTQ) only writes an int through the pointer, which points
            // at a live local; the descriptor belongs to a connection the caller still holds.
            let rc = unsafe { libc::ioctl(self.0, libc::TIOCOUTQ, &mut unread) };
            if rc != 0 || unread == 0 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }

    /// The socket of the connection `req` came on, when it is a unix socket.
    pub(crate) fn of_request<B>(req: &Request<B>) -> Option<Self> {
        req.extensions().get::<ConnSocket>().copied()
    }
}

/// The `101 Switching Protocols` answer of attach and exec start: the connection becomes the
/// container's stdio, raw for a TTY and in Docker's multiplexed framing otherwise.
pub(crate) fn stream_upgrade_response(tty: bool) -> Response<Body> {
    use hyper::header::{HeaderValue, CONNECTION, CONTENT_TYPE, UPGRADE};
    let mut resp = empty(StatusCode::SWITCHING_PROTOCOLS);
    let h = resp.headers_mut();
    h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(UPGRADE, HeaderValue::from_static("tcp"));
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static(if tty {
            "application/vnd.docker.raw-stream"
        } else {
            "application/vnd.docker.multiplexed-stream"
        }),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_decoding() {
        let q = Query::parse("all=1&filters=%7B%22a%22%3A%5B%22b+c%22%5D%7D&x=%zz&f=false");
        assert!(q.bool("all"));
        assert!(!q.bool("f"));
        assert!(!q.bool("missing"));
        assert_eq!(q.get("filters"), Some(r#"{"a":["b c"]}"#));
        assert_eq!(q.get("x"), Some("%zz"));
        assert_eq!(max_version_str(), apiversion::MAX.to_string());
    }
}
