//! Exec routes: `POST /containers/{id}/exec`, `POST /exec/{id}/start` (hijacked unless
//! detached), `GET /exec/{id}/json`, `POST /exec/{id}/resize`.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::header::UPGRADE;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;

use super::{empty, json_response, read_json, Body, Ctx};
use crate::error::{Error, Result};
use crate::exec::ExecConfig;
use crate::logs::{self, Selection};

/// `POST /containers/{id}/exec`.
pub async fn create(ctx: &Ctx, key: &str, req: Request<Incoming>) -> Result<Response<Body>> {
    let config: ExecConfig = read_json(req).await?;
    if let Some(keys) = &config.detach_keys {
        crate::detach::parse(keys).map_err(Error::InvalidParameter)?;
    }
    let id = ctx.daemon.create_exec(key, config)?;
    Ok(json_response(StatusCode::CREATED, &json!({"Id": id})))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct StartBody {
    detach: bool,
    /// Whether the client reads a raw stream (dockerd frames output unless it is set, even
    /// for an exec with a terminal).
    tty: bool,
}

/// `POST /exec/{id}/start`.
pub async fn start(ctx: &Ctx, id: &str, mut req: Request<Incoming>) -> Result<Response<Body>> {
    let upgrade = req
        .headers()
        .contains_key(UPGRADE)
        .then(|| hyper::upgrade::on(&mut req));
    let socket = super::ConnSocket::of_request(&req);
    let body: StartBody = read_json(req).await?;
    let exec = ctx.daemon.execs.get(id)?;
    if body.detach {
        ctx.daemon.start_exec(id).await?;
        return Ok(empty(StatusCode::OK));
    }
    let Some(upgrade) = upgrade else {
        return Err(Error::InvalidParameter(
            "exec start needs a connection upgrade (Upgrade: tcp) unless detached".into(),
        ));
    };
    // As dockerd does, the connection is upgraded first and a failure to start is written
    // into the stream, with the exec's exit code set to 126 (or 127: command not found).
    let daemon = Arc::clone(&ctx.daemon);
    let tty = body.tty;
    // As dockerd: the detach sequence is watched for when the process has a terminal.
    let detach = (exec.config.tty && exec.config.attach_stdin)
        .then(|| crate::detach::parse(exec.config.detach_keys.as_deref().unwrap_or("")))
        .transpose()
        .map_err(Error::InvalidParameter)?
        .map(crate::detach::EscapeFilter::new);
    tokio::spawn(async move {
        let io = match upgrade.await {
            Ok(u) => TokioIo::new(u),
            Err(err) => {
                tracing::debug!(id = %exec.id, %err, "exec upgrade failed");
                return;
            }
        };
        if let Some(socket) = socket {
            socket.head_read().await;
        }
        let (reader, mut writer) = tokio::io::split(io);
        let monitor = match daemon.start_exec_attached(&exec.id, true).await {
            Ok((_, Some(monitor))) => monitor,
            Ok((_, None)) => return,
            Err(err) => {
                let message = format!("{err}\r\n");
                let entry = logs::Entry {
                    stream: logs::Stream::Stdout,
                    time: 0,
                    line: message.into_bytes(),
                };
                let _ = writer.write_all(&logs::frame(&entry, tty, false)).await;
                daemon.fail_exec(&exec.id, &err);
                let _ = writer.shutdown().await;
                return;
            }
        };
        let sel = Selection {
            stdout: exec.config.attach_stdout,
            stderr: exec.config.attach_stderr,
            ..Default::default()
        };
        let monitor = monitor
            .set_nonblocking(true)
            .and_then(|()| UnixStream::from_std(monitor));
        match monitor {
            Ok(monitor) => {
                let stdin = exec.config.attach_stdin;
                let framing = super::attach::Framing {
                    monitor_tty: exec.config.tty,
                    client_tty: tty,
                };
                match super::attach::copy_session(
                    monitor,
                    reader,
                    &mut writer,
                    stdin,
                    &sel,
                    framing,
                    detach,
                )
                .await
                {
                    // The process goes on; its watcher records the exit.
                    Ok(super::attach::Ended::Detached) => {
                        let _ = writer.shutdown().await;
                        return;
                    }
                    Ok(super::attach::Ended::Exited) => {}
                    Err(err) => tracing::debug!(id = %exec.id, %err, "exec session ended"),
                }
            }
            Err(err) => tracing::warn!(id = %exec.id, %err, "exec attach socket"),
        }
        // The exit code must be visible to `GET /exec/{id}/json` once the stream ends.
        daemon.finish_exec(&exec.id);
        let _ = writer.shutdown().await;
    });
    Ok(super::stream_upgrade_response(tty))
}

/// `GET /exec/{id}/json`.
pub fn inspect(ctx: &Ctx, id: &str) -> Result<Response<Body>> {
    let e = ctx.daemon.execs.get(id)?;
    let cmd = e.config.cmd.clone().unwrap_or_default();
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "ID": e.id,
            "Running": e.running,
            "ExitCode": e.exit_code,
            "ProcessConfig": {
                "tty": e.config.tty,
                "entrypoint": cmd.first(),
                "arguments": cmd.get(1..).unwrap_or_default(),
                "privileged": e.config.privileged,
                "user": e.config.user.clone().unwrap_or_default(),
            },
            "OpenStdin": e.config.attach_stdin,
            "OpenStdout": e.config.attach_stdout,
            "OpenStderr": e.config.attach_stderr,
            "CanRemove": false,
            "ContainerID": e.container_id,
            "DetachKeys": "",
            "Pid": e.pid,
        }),
    ))
}

/// `POST /exec/{id}/resize?h=&w=`.
pub async fn resize(ctx: &Ctx, id: &str) -> Result<Response<Body>> {
    let size = super::attach::requested_size(ctx)?;
    let e = ctx.daemon.execs.get(id)?;
    if !e.running {
        return Err(Error::Conflict(format!("Exec {id} is not running")));
    }
    let socket = ctx.daemon.exec_paths(id).attach_socket;
    super::attach::send_resize(&socket, size, "the exec's monitor").await?;
    Ok(empty(StatusCode::OK))
}
