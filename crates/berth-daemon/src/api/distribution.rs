//! Registry routes: `POST /images/{name}/push`, `POST /auth` and
//! `GET /distribution/{name}/json` over the daemon's shared `berth_distribution::Client`,
//! and the streaming machinery pull (`images::pull`) shares with push.
//!
//! Pull and push answer with Docker's JSON progress stream ([`stream_job`]). Every line,
//! progress and result alike, goes through one ordered [`JsonStream`], so a slow client never
//! loses a layer's final `Pushed` line and never sees the result before the progress. A
//! failure before the first line is a plain HTTP error, as in dockerd; a client that
//! disconnects cancels the transfer, as dockerd's request context does.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::mpsc;

use super::{json_response, read_json, Body, Ctx};
use crate::daemon::Daemon;
use crate::error::{Error, Result};
use crate::events::Event;

/// The credentials of an `X-Registry-Auth` header, if it carries any. The docker CLI sends
/// `e30=` (`{}`) when it has none; that is no credentials, not an error.
pub(super) fn registry_auth(
    req: &Request<Incoming>,
) -> Result<Option<berth_distribution::Credentials>> {
    let Some(h) = req
        .headers()
        .get("X-Registry-Auth")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.trim().is_empty())
    else {
        return Ok(None);
    };
    let c = berth_distribution::Credentials::from_registry_auth_header(h)
        .map_err(|e| Error::InvalidParameter(e.to_string()))?;
    Ok((c != berth_distribution::Credentials::default()).then_some(c))
}

/// An ordered JSON-lines response stream. Sends never block the producer (a pull or push
/// reporting progress from its transfer tasks); the buffer holds at most a few hundred
/// small lines per image (progress is reported every 512 KiB).
pub(super) struct JsonStream {
    tx: mpsc::UnboundedSender<Bytes>,
}

impl JsonStream {
    /// The stream and the `200 application/json` response that carries it.
    pub(super) fn new() -> (JsonStream, Response<Body>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut resp = Response::new(UnboundedBody { rx }.boxed());
        resp.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        (JsonStream { tx }, resp)
    }

    /// Writes one JSON object and a newline; a no-op once the client has gone.
    pub(super) fn send(&self, v: &impl serde::Serialize) {
        if let Ok(mut line) = serde_json::to_vec(v) {
            line.push(b'\n');
            let _ = self.tx.send(Bytes::from(line));
        }
    }

    /// Docker's error line, which ends a failed stream (the status stays 200).
    pub(super) fn error(&self, message: &str) {
        self.send(&json!({"errorDetail": {"message": message}, "error": message}));
    }

    /// A progress sink for `berth_distribution` writing into this stream.
    pub(super) fn progress(&self) -> berth_distribution::Progress {
        let tx = self.tx.clone();
        Arc::new(move |m| {
            let _ = tx.send(Bytes::from(m.to_json_line()));
        })
    }

    /// Completes when the client has gone (the response body was dropped).
    pub(super) async fn closed(&self) {
        self.tx.closed().await
    }
}

/// Runs a pull or push in its own task and answers as dockerd does: a failure before the
/// job reported anything is a plain HTTP error with the error's status (404 for an unknown
/// manifest, 401 for refused credentials); after that, the response is a 200 stream that
/// ends with Docker's error line. `finish` writes the result lines of a successful job. A
/// client that disconnects cancels the job.
pub(super) async fn stream_job<T, Fut>(
    job: impl FnOnce(berth_distribution::Progress) -> Fut,
    finish: impl FnOnce(&JsonStream, T) + Send + 'static,
) -> Result<Response<Body>>
where
    T: Send + 'static,
    Fut: std::future::Future<Output = berth_distribution::Result<T>> + Send + 'static,
{
    type Head = tokio::sync::oneshot::Sender<Option<berth_distribution::Error>>;
    let (stream, resp) = JsonStream::new();
    let (head_tx, head_rx) = tokio::sync::oneshot::channel();
    // Taken by whichever comes first: the first progress line (stream) or the job's end.
    let head: Arc<std::sync::Mutex<Option<Head>>> = Arc::new(std::sync::Mutex::new(Some(head_tx)));
    let take_head = |h: &std::sync::Mutex<Option<Head>>| crate::events::lock(h).take();
    let sink = stream.progress();
    let progress: berth_distribution::Progress = {
        let head = head.clone();
        Arc::new(move |m| {
            if let Some(h) = take_head(&head) {
                let _ = h.send(None);
            }
            sink(m)
        })
    };
    let work = job(progress);
    tokio::spawn(async move {
        let result = tokio::select! {
            r = work => r,
            // The client went away: dropping the job's future cancels its transfers.
            () = stream.closed() => return,
        };
        match result {
            Ok(v) => {
                if let Some(h) = take_head(&head) {
                    let _ = h.send(None);
                }
                finish(&stream, v);
            }
            Err(e) => match take_head(&head) {
                Some(h) => {
                    let _ = h.send(Some(e));
                }
                None => stream.error(&e.to_string()),
            },
        }
    });
    match head_rx.await {
        Ok(Some(e)) => Err(Error::Registry(e)),
        _ => Ok(resp),
    }
}

struct UnboundedBody {
    rx: mpsc::UnboundedReceiver<Bytes>,
}

impl hyper::body::Body for UnboundedBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}

fn image_event(d: &Daemon, action: &str, id: &str, name: &str) {
    d.events.publish(Event::new(
        "image",
        action,
        id,
        [("name".to_string(), name.to_string())].into(),
    ));
}

/// dockerd's answer to pushing a repository with no such local tag.
fn not_local(familiar_name: &str) -> Error {
    Error::NotFound(format!(
        "An image does not exist locally with the tag: {familiar_name}"
    ))
}

/// `POST /images/{name}/push?tag=`: push one tag, or every local tag of the repository when
/// `tag` is empty. Local existence is checked before streaming starts, so an unknown image
/// is a plain 404.
pub async fn push(ctx: &Ctx, name: String, req: &Request<Incoming>) -> Result<Response<Body>> {
    let credentials = registry_auth(req)?;
    let tag = ctx.query.get("tag").unwrap_or("").to_string();
    let repo = berth_image::Reference::parse(&name).map_err(Error::from)?;
    if repo.digest().is_some() {
        return Err(Error::InvalidParameter(format!(
            "cannot push a digest reference: {name}"
        )));
    }
    // `docker push name:tag` sends the tag separately; accept it inside the name too.
    let target = match (tag.is_empty(), repo.tag()) {
        (false, _) => Some(repo.with_tag(&tag).map_err(Error::from)?),
        (true, Some(_)) => Some(repo.clone()),
        (true, None) => None,
    };
    let familiar_name = repo.familiar_name();
    {
        let target = target.as_ref().map(ToString::to_string);
        let repo_name = repo.name();
        let d = ctx.daemon.clone();
        let found = tokio::task::spawn_blocking(move || -> Result<bool> {
            match target {
                Some(t) => match d.images.image_id(&t) {
                    Ok(_) => Ok(true),
                    Err(berth_image::Error::ImageNotFound(_)) => Ok(false),
                    Err(e) => Err(e.into()),
                },
                None => Ok(d.images.list()?.iter().any(|i| {
                    i.repo_tags.iter().any(|t| {
                        berth_image::Reference::parse(t).is_ok_and(|r| r.name() == repo_name)
                    })
                })),
            }
        })
        .await
        .map_err(|e| Error::Internal(format!("image store task: {e}")))??;
        if !found {
            return Err(not_local(&familiar_name));
        }
    }

    let registry = ctx.daemon.registry()?;
    let d = ctx.daemon.clone();
    let opts = berth_distribution::PushOptions {
        credentials,
        chunk_size: None,
    };
    let job_daemon = d.clone();
    let job_repo = repo.name();
    stream_job(
        move |progress| async move {
            match target {
                Some(t) => registry
                    .push(&job_daemon.images, &t.to_string(), &opts, progress)
                    .await
                    .map(|r| vec![r]),
                None => {
                    registry
                        .push_all_tags(&job_daemon.images, &job_repo, &opts, progress)
                        .await
                }
            }
        },
        move |stream, results| {
            for r in results {
                stream.send(&json!({
                    "progressDetail": {},
                    "aux": {"Tag": r.tag, "Digest": r.digest.to_string(), "Size": r.size},
                }));
                let pushed = repo
                    .with_tag(&r.tag)
                    .map(|x| x.familiar())
                    .unwrap_or_else(|_| format!("{familiar_name}:{}", r.tag));
                image_event(&d, "push", &pushed, &familiar_name);
            }
        },
    )
    .await
}

/// The body of `POST /auth`.
#[derive(Deserialize, Default)]
#[serde(default)]
struct AuthConfig {
    username: String,
    password: String,
    serveraddress: String,
    #[serde(alias = "identitytoken", alias = "IdentityToken")]
    identity_token: Option<String>,
    #[serde(alias = "registrytoken", alias = "RegistryToken")]
    registry_token: Option<String>,
}

/// `POST /auth`: check the credentials against the registry (`docker login`). An empty
/// server address means Docker Hub, as in dockerd.
pub async fn auth(ctx: &Ctx, req: Request<Incoming>) -> Result<Response<Body>> {
    let a: AuthConfig = read_json(req).await?;
    let creds = berth_distribution::Credentials {
        username: a.username,
        password: a.password,
        identity_token: a.identity_token.filter(|t| !t.is_empty()),
        registry_token: a.registry_token.filter(|t| !t.is_empty()),
    };
    let registry = ctx.daemon.registry()?;
    let status = registry
        .login(&a.serveraddress, &creds)
        .await
        .map_err(Error::Registry)?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"Status": status, "IdentityToken": ""}),
    ))
}

/// `GET /distribution/{name}/json`: the descriptor the reference resolves to in its registry
/// and the platforms it offers.
pub async fn inspect(ctx: &Ctx, name: String, req: &Request<Incoming>) -> Result<Response<Body>> {
    let credentials = registry_auth(req)?;
    let registry = ctx.daemon.registry()?;
    let info = registry
        .inspect_distribution(&name, credentials.as_ref())
        .await
        .map_err(Error::Registry)?;
    Ok(json_response(StatusCode::OK, &info))
}
