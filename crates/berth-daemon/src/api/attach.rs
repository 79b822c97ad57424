//! `POST /containers/{id}/attach` (hijacked connection) and `POST /containers/{id}/resize`.
//!
//! A session is one connection to the container's monitor attach socket
//! (`berth_runtime::monitor::attach`): output arrives already in Docker's stream framing (raw
//! in tty mode) and is copied to the client, filtered to the streams it asked for; the client's
//! input goes back as STDIN frames. A session opened before the container runs (`docker run`
//! attaches, then starts) is connected by the start path while the container is only created
//! (`Daemon::pending_attach`), so no output is lost. `logs=1` replays the json-file log first.

use std::path::Path;
use std::sync::Arc;

use berth_runtime::monitor::attach as proto;
use hyper::body::Incoming;
use hyper::header::UPGRADE;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UnixStream;

use super::{empty, Body, Ctx};
use crate::daemon::Daemon;
use crate::detach::EscapeFilter;
use crate::error::{Error, Result};
use crate::logs::{self, Selection};

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
    // As dockerd: the detach sequence is watched for on TTY sessions only.
    let detach = match q.get("detachKeys") {
        Some(keys) => crate::detach::parse(keys).map_err(Error::InvalidParameter)?,
        None => crate::detach::parse(crate::detach::DEFAULT).map_err(Error::Internal)?,
    };
    let detach = (tty && want_stdin).then(|| EscapeFilter::new(detach));
    let replay = q.bool("logs");
    let stream = q.bool("stream");
    if !req.headers().contains_key(UPGRADE) {
        return Err(Error::InvalidParameter(
            "attach needs a connection upgrade (Upgrade: tcp)".into(),
        ));
    }
    let upgrade = hyper::upgrade::on(&mut req);
    let socket = super::ConnSocket::of_request(&req);
    let daemon = Arc::clone(&ctx.daemon);
    let id = record.id.clone();
    // Registered now, before the response, so that a start requested right after the
    // upgrade (`docker run`) finds this session waiting.
    let pending = (stream && !record.state.running).then(|| {
        let (tx, rx) = tokio::sync::oneshot::channel();
        crate::events::lock(&daemon.pending_attach)
            .entry(id.clone())
            .or_default()
            .push(tx);
        rx
    });
    tokio::spawn(async move {
        let upgraded = match upgrade.await {
            Ok(u) => TokioIo::new(u),
            Err(err) => {
                tracing::debug!(%id, %err, "attach upgrade failed");
                return;
            }
        };
        if let Some(socket) = socket {
            socket.head_read().await;
        }
        let (reader, mut writer) = tokio::io::split(upgraded);
        let session = Session {
            daemon,
            id: id.clone(),
            sel,
            tty,
            detach,
        };
        if let Err(err) = session
            .run(reader, &mut writer, replay, stream, want_stdin, pending)
            .await
        {
            tracing::debug!(%id, %err, "attach ended");
        }
        let _ = writer.shutdown().await;
    });
    Ok(super::stream_upgrade_response(tty))
}

type Pending = tokio::sync::oneshot::Receiver<std::os::unix::net::UnixStream>;

struct Session {
    daemon: Arc<Daemon>,
    id: String,
    sel: Selection,
    tty: bool,
    /// The detach-sequence watch on the client's input (TTY sessions with stdin).
    detach: Option<EscapeFilter>,
}

impl Session {
    async fn run<R, W>(
        &self,
        reader: R,
        w: &mut W,
        replay: bool,
        stream: bool,
        want_stdin: bool,
        pending: Option<Pending>,
    ) -> Result<()>
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin,
    {
        if replay {
            self.replay(w).await?;
        }
        if !stream {
            return Ok(());
        }
        // Subscribed before the container can exit: the session ends only once the daemon has
        // recorded the exit, so a client that asks for the exit code next sees this run's.
        let (_, mut events) = self.daemon.events.subscribe();
        let attached_before_start = pending.is_some();
        let monitor = match pending {
            Some(rx) => {
                let std = rx
                    .await
                    .map_err(|_| Error::Conflict(format!("container {} did not start", self.id)))?;
                std.set_nonblocking(true)
                    .map_err(|e| Error::io("attach socket", e))?;
                UnixStream::from_std(std).map_err(|e| Error::io("attach socket", e))?
            }
            None => {
                let socket = self.daemon.run_paths(&self.id).attach_socket;
                match UnixStream::connect(&socket).await {
                    Ok(s) => s,
                    // The container exited meanwhile: nothing more to stream.
                    Err(_) => return Ok(()),
                }
            }
        };
        let copied = copy_session(
            monitor,
            reader,
            w,
            want_stdin,
            &self.sel,
            Framing::same(self.tty),
            self.detach.clone(),
        )
        .await;
        if matches!(copied, Ok(Ended::Detached)) {
            // The container goes on running; the client is done.
            return Ok(());
        }
        let recorded = async {
            if attached_before_start {
                wait_die(&self.id, &mut events).await;
            } else {
                self.daemon.wait_exit(&self.id, &mut events, None).await;
            }
        };
        // Bounded: a monitor that vanished without a trace must not hold the client forever.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(10), recorded).await;
        copied.map(drop)
    }

    async fn replay<W: AsyncWrite + Unpin>(&self, w: &mut W) -> Result<()> {
        let record = self.daemon.containers.get(&self.id)?;
        let log_path = std::path::PathBuf::from(&record.log_path);
        let sel = self.sel.clone();
        let (past, _) = tokio::task::spawn_blocking(move || logs::read(&log_path, &sel))
            .await
            .map_err(|e| Error::Internal(format!("log reader: {e}")))??;
        for e in &past {
            w.write_all(&logs::frame(e, self.tty, false))
                .await
                .map_err(|e| Error::io("write attach output", e))?;
        }
        w.flush()
            .await
            .map_err(|e| Error::io("write attach output", e))
    }
}

/// Waits for container `id`'s `die` event.
async fn wait_die(
    id: &str,
    events: &mut tokio::sync::broadcast::Receiver<Arc<crate::events::Event>>,
) {
    loop {
        match events.recv().await {
            Ok(e) if e.kind == "container" && e.actor.id == id && e.action == "die" => return,
            Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// How an attach session ended.
pub(super) enum Ended {
    /// The monitor closed the stream: the process exited and its output is drained.
    Exited,
    /// The client typed the detach sequence; the process goes on.
    Detached,
}

/// Runs one attach session over a monitor connection until the monitor closes it (the
/// process exited and its output is drained) or the client detaches: output to `w` (only the
/// selected streams), and with `want_stdin` the client's input to the monitor, watched for
/// the `detach` sequence. Shared with exec.
pub(super) async fn copy_session<R, W>(
    monitor: UnixStream,
    reader: R,
    w: &mut W,
    want_stdin: bool,
    sel: &Selection,
    framing: Framing,
    detach: Option<EscapeFilter>,
) -> Result<Ended>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin,
{
    let (mut from_monitor, to_monitor) = monitor.into_split();
    let (detached_tx, detached_rx) = tokio::sync::oneshot::channel::<()>();
    // The write half stays open for the whole session: closing it reads as a hang-up to
    // the monitor, which would then stop sending output.
    let input = tokio::spawn(async move {
        let mut to_monitor = to_monitor;
        if want_stdin {
            let mut reader = reader;
            match forward_stdin(&mut reader, &mut to_monitor, detach).await {
                Ok(Ended::Detached) => {
                    let _ = detached_tx.send(());
                }
                Ok(Ended::Exited) => {}
                Err(err) => tracing::debug!(%err, "attach stdin ended"),
            }
        }
        std::future::pending::<()>().await;
    });
    let result = tokio::select! {
        copied = copy_output(&mut from_monitor, w, sel, framing) => copied.map(|()| Ended::Exited),
        Ok(()) = detached_rx => Ok(Ended::Detached),
    };
    input.abort();
    result
}

/// The shape of a session's output on each side.
#[derive(Debug, Clone, Copy)]
pub(super) struct Framing {
    /// The process has a terminal: the monitor sends one raw stream.
    pub monitor_tty: bool,
    /// The client asked for a raw stream; otherwise Docker's 8-byte frames. They differ when
    /// an exec with a terminal is started without `Tty` (dockerd then frames the terminal's
    /// output as stdout) and the other way round.
    pub client_tty: bool,
}

impl Framing {
    /// The same shape on both sides.
    pub fn same(tty: bool) -> Self {
        Self {
            monitor_tty: tty,
            client_tty: tty,
        }
    }
}

/// Copies the monitor's output to the client, keeping only the streams the client selected,
/// reframing it when the two sides differ.
async fn copy_output<R, W>(r: &mut R, w: &mut W, sel: &Selection, framing: Framing) -> Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let write_err = |e| Error::io("write attach output", e);
    let mut buf = vec![0u8; 32 << 10];
    if framing.monitor_tty {
        loop {
            let n = r
                .read(&mut buf)
                .await
                .map_err(|e| Error::io("read from the monitor", e))?;
            if n == 0 {
                return Ok(());
            }
            if sel.stdout {
                if !framing.client_tty {
                    let len = u32::try_from(n).unwrap_or(u32::MAX).to_be_bytes();
                    let header = [proto::STDOUT, 0, 0, 0, len[0], len[1], len[2], len[3]];
                    w.write_all(&header).await.map_err(write_err)?;
                }
                w.write_all(&buf[..n]).await.map_err(write_err)?;
                w.flush().await.map_err(write_err)?;
            }
        }
    }
    let mut header = [0u8; 8];
    loop {
        match r.read_exact(&mut header).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(Error::io("read from the monitor", e)),
        }
        let len = u32::from_be_bytes([header[4], header[5], header[6], header[7]]) as usize;
        let mut payload = vec![0u8; len];
        r.read_exact(&mut payload)
            .await
            .map_err(|e| Error::io("read from the monitor", e))?;
        let wanted = match header[0] {
            proto::STDOUT => sel.stdout,
            proto::STDERR => sel.stderr,
            _ => false,
        };
        if wanted {
            if !framing.client_tty {
                w.write_all(&header).await.map_err(write_err)?;
            }
            w.write_all(&payload).await.map_err(write_err)?;
            w.flush().await.map_err(write_err)?;
        }
    }
}

/// Copies the client's raw stdin into STDIN frames; client EOF closes the container's stdin.
/// The detach sequence ends the copy without closing it, as dockerd.
async fn forward_stdin<R, M>(
    reader: &mut R,
    monitor: &mut M,
    mut detach: Option<EscapeFilter>,
) -> Result<Ended>
where
    R: AsyncRead + Unpin,
    M: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 32 << 10];
    let mut filtered = Vec::new();
    loop {
        let n = reader
            .read(&mut buf)
            .await
            .map_err(|e| Error::io("read attach input", e))?;
        let mut detached = false;
        let data = match &mut detach {
            Some(filter) if n > 0 => {
                filtered.clear();
                detached = filter.filter(&buf[..n], &mut filtered);
                &filtered[..]
            }
            _ => &buf[..n],
        };
        let frame = if n == 0 {
            proto::encode(proto::CLOSE_STDIN, &[])
        } else {
            proto::encode(proto::STDIN, data)
        };
        if n == 0 || !data.is_empty() {
            monitor
                .write_all(&frame)
                .await
                .map_err(|e| Error::io("write to the monitor", e))?;
        }
        if detached {
            return Ok(Ended::Detached);
        }
        if n == 0 {
            return Ok(Ended::Exited);
        }
    }
}

/// `POST /containers/{id}/resize?h=&w=`.
pub async fn resize(ctx: &Ctx, key: &str) -> Result<Response<Body>> {
    let size = requested_size(ctx)?;
    let record = ctx.daemon.containers.get(key)?;
    if !record.state.running {
        return Err(Error::Conflict(format!(
            "Container {} is not running",
            record.id
        )));
    }
    let socket = ctx.daemon.run_paths(&record.id).attach_socket;
    send_resize(&socket, size, "the container's monitor").await?;
    Ok(empty(StatusCode::OK))
}

/// The `h` and `w` query parameters of a resize request.
pub(super) fn requested_size(ctx: &Ctx) -> Result<(u16, u16)> {
    let dim = |k: &str| -> Result<u16> {
        ctx.query
            .get(k)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| Error::InvalidParameter(format!("invalid value for {k}")))
    };
    Ok((dim("h")?, dim("w")?))
}

/// Tells the monitor listening on `socket` (`whose`, for errors) the terminal's new size.
pub(super) async fn send_resize(socket: &Path, (h, w): (u16, u16), whose: &str) -> Result<()> {
    let mut s = UnixStream::connect(socket)
        .await
        .map_err(|e| Error::io(format!("connect to {}", socket.display()), e))?;
    let mut payload = Vec::with_capacity(4);
    payload.extend_from_slice(&h.to_be_bytes());
    payload.extend_from_slice(&w.to_be_bytes());
    s.write_all(&proto::encode(proto::RESIZE, &payload))
        .await
        .map_err(|e| Error::io(format!("send resize to {whose}"), e))
}
