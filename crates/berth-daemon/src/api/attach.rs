//! `POST /containers/{id}/attach` (hijacked connection) and `POST /containers/{id}/resize`.
//!
//! Output comes from the container's json-file log, followed from the moment of attaching:
//! the monitor only forwards output produced while a client is connected to its socket, and
//! `docker run` attaches before the container starts, so reading the log is what guarantees
//! that a short-lived container's output is never lost. Input goes to the monitor's attach
//! socket as STDIN frames (see `berth_runtime::monitor::attach`), once the container runs.

use std::sync::Arc;
use std::time::Duration;

use berth_runtime::monitor::attach as proto;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONNECTION, CONTENT_TYPE, UPGRADE};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UnixStream;

use super::{empty, Body, Ctx};
use crate::daemon::Daemon;
use crate::error::{Error, Result};
use crate::logs::{self, Selection};

/// How often an attached session polls the log for output.
const POLL: Duration = Duration::from_millis(50);

/// `POST /containers/{id}/attach?stream=&stdin=&stdout=&stderr=&logs=`.
pub async fn attach(ctx: &Ctx, key: &str, mut req: Request<Incoming>) -> Result<Response<Body>> {
    let q = &ctx.query;
    let record = ctx.daemon.containers.get(key)?;
    let tty = record.config.tty.unwrap_or(false);
    let sel = Selection {
        stdout: q.bool("stdout"),
        stderr: q.bool("stderr"),
        ..Default::default()
    };
    let want_stdin = q.bool("stdin") && record.config.open_stdin.unwrap_or(false);
    let replay = q.bool("logs");
    let stream = q.bool("stream");
    if !req.headers().contains_key(UPGRADE) {
        return Err(Error::InvalidParameter(
            "attach needs a connection upgrade (Upgrade: tcp)".into(),
        ));
    }
    let upgrade = hyper::upgrade::on(&mut req);
    let daemon = Arc::clone(&ctx.daemon);
    let id = record.id.clone();
    let started_at = record.state.started_at.clone();
    let was_running = record.state.running;
    let error = record.state.error.clone();
    tokio::spawn(async move {
        let upgraded = match upgrade.await {
            Ok(u) => TokioIo::new(u),
            Err(err) => {
                tracing::debug!(%id, %err, "attach upgrade failed");
                return;
            }
        };
        let (mut reader, mut writer) = tokio::io::split(upgraded);
        if want_stdin {
            let d = Arc::clone(&daemon);
            let sid = id.clone();
            let run = (started_at.clone(), was_running);
            tokio::spawn(async move {
                if let Err(err) = forward_stdin(&d, &sid, run, &mut reader).await {
                    tracing::debug!(id = %sid, %err, "attach stdin ended");
                }
            });
        }
        let session = Session {
            daemon,
            id: id.clone(),
            sel,
            tty,
            started_at,
            was_running,
            error,
        };
        if let Err(err) = session.stream_output(&mut writer, replay, stream).await {
            tracing::debug!(%id, %err, "attach output ended");
        }
        let _ = writer.shutdown().await;
    });
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
    Ok(resp)
}

struct Session {
    daemon: Arc<Daemon>,
    id: String,
    sel: Selection,
    tty: bool,
    started_at: String,
    was_running: bool,
    /// The record's start error when attaching; a new one means the start failed.
    error: String,
}

impl Session {
    /// Streams output until the run that was current (or the next one, when attached before
    /// start) has ended and its output is drained.
    async fn stream_output<W: AsyncWrite + Unpin>(
        &self,
        w: &mut W,
        replay: bool,
        stream: bool,
    ) -> Result<()> {
        let record = self.daemon.containers.get(&self.id)?;
        let log_path = std::path::PathBuf::from(&record.log_path);
        let sel = Selection {
            tail: if replay { None } else { Some(0) },
            ..self.sel.clone()
        };
        let (past, mut follower) = tokio::task::spawn_blocking(move || logs::read(&log_path, &sel))
            .await
            .map_err(|e| Error::Internal(format!("log reader: {e}")))??;
        for e in &past {
            self.write(w, e).await?;
        }
        if !stream {
            return Ok(());
        }
        loop {
            let done = match self.daemon.containers.get(&self.id) {
                Ok(r) => {
                    let ran = self.was_running || r.state.started_at != self.started_at;
                    let failed = !r.state.error.is_empty() && r.state.error != self.error;
                    (ran || failed) && !r.state.running
                }
                Err(_) => true,
            };
            for e in follower.poll()?.iter().filter(|e| self.sel.wants(e)) {
                self.write(w, e).await?;
            }
            if done {
                return Ok(());
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn write<W: AsyncWrite + Unpin>(&self, w: &mut W, e: &logs::Entry) -> Result<()> {
        w.write_all(&logs::frame(e, self.tty, false))
            .await
            .map_err(|e| Error::io("write attach output", e))?;
        w.flush()
            .await
            .map_err(|e| Error::io("write attach output", e))
    }
}

/// Connects to a container's monitor, waiting for the container to start; gives up once the
/// run the client attached to has ended.
async fn connect_monitor(daemon: &Daemon, id: &str, run: &(String, bool)) -> Result<UnixStream> {
    let socket = daemon.run_paths(id).attach_socket;
    loop {
        let record = daemon.containers.get(id)?;
        if record.state.running {
            if let Ok(s) = UnixStream::connect(&socket).await {
                return Ok(s);
            }
        } else if run.1 || record.state.started_at != run.0 {
            return Err(Error::Conflict(format!("container {id} is not running")));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Copies the client's raw stdin into STDIN frames; client EOF closes the container's stdin.
async fn forward_stdin<R: tokio::io::AsyncRead + Unpin>(
    daemon: &Daemon,
    id: &str,
    run: (String, bool),
    reader: &mut R,
) -> Result<()> {
    let mut buf = vec![0u8; 32 << 10];
    let mut monitor: Option<tokio::net::unix::OwnedWriteHalf> = None;
    loop {
        let n = reader
            .read(&mut buf)
            .await
            .map_err(|e| Error::io("read attach input", e))?;
        if monitor.is_none() {
            monitor = Some(drained(connect_monitor(daemon, id, &run).await?));
        }
        let Some(m) = monitor.as_mut() else {
            continue;
        };
        let frame = if n == 0 {
            proto::encode(proto::CLOSE_STDIN, &[])
        } else {
            proto::encode(proto::STDIN, &buf[..n])
        };
        m.write_all(&frame)
            .await
            .map_err(|e| Error::io("write to the container's monitor", e))?;
        if n == 0 {
            return Ok(());
        }
    }
}

/// `POST /containers/{id}/resize?h=&w=`.
pub async fn resize(ctx: &Ctx, key: &str) -> Result<Response<Body>> {
    let dim = |k: &str| -> Result<u16> {
        ctx.query
            .get(k)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| Error::InvalidParameter(format!("invalid value for {k}")))
    };
    let (h, w) = (dim("h")?, dim("w")?);
    let record = ctx.daemon.containers.get(key)?;
    if !record.state.running {
        return Err(Error::Conflict(format!(
            "Container {} is not running",
            record.id
        )));
    }
    let socket = ctx.daemon.run_paths(&record.id).attach_socket;
    let mut s = UnixStream::connect(&socket)
        .await
        .map_err(|e| Error::io(format!("connect to {}", socket.display()), e))?;
    let mut payload = Vec::with_capacity(4);
    payload.extend_from_slice(&h.to_be_bytes());
    payload.extend_from_slice(&w.to_be_bytes());
    s.write_all(&proto::encode(proto::RESIZE, &payload))
        .await
        .map_err(|e| Error::io("send resize to the container's monitor", e))?;
    Ok(empty(StatusCode::OK))
}

/// Splits a monitor connection used for input: the monitor also sends this client the
/// container's output, which is read and discarded until the monitor closes the socket, so the
/// monitor never writes to a closed or full socket. Output reaches clients through the log.
pub(super) fn drained(stream: UnixStream) -> tokio::net::unix::OwnedWriteHalf {
    let (mut read, write) = stream.into_split();
    tokio::spawn(async move {
        let mut sink = vec![0u8; 16 << 10];
        while matches!(read.read(&mut sink).await, Ok(n) if n > 0) {}
    });
    write
}
