//! `HEAD|GET|PUT /containers/{id}/archive?path=` (`docker cp`): a path's stat in the
//! `X-Docker-Container-Path-Stat` header, the path as a tar stream, and a tar stream unpacked
//! into a directory. The filesystem work is `berth-image`'s [`berth_image::ContainerFs`] on a
//! thread of the daemon's [`crate::archive`] view.

use base64::Engine;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

use super::{channel_body, empty, Body, Ctx};
use crate::archive::ChannelReader;
use crate::error::{Error, Result};

const STAT_HEADER: &str = "X-Docker-Container-Path-Stat";

/// The `path` parameter, which dockerd requires.
fn path_param(ctx: &Ctx) -> Result<String> {
    ctx.query
        .get("path")
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .ok_or_else(|| Error::InvalidParameter("bad parameter: path cannot be empty".into()))
}

/// dockerd's 404 for a path missing in the container names the container as the client did.
fn not_found(err: Error, path: &str, key: &str) -> Error {
    match err {
        Error::Image(berth_image::Error::PathNotFound(_)) => {
            Error::NotFound(format!("Could not find the file {path} in container {key}"))
        }
        other => other,
    }
}

/// Go's `time.Time` JSON form (RFC 3339 with nanoseconds, trailing zeros trimmed), in UTC.
fn go_time(secs: i64, nanos: u32) -> String {
    let Some(t) = chrono::DateTime::from_timestamp(secs, nanos) else {
        return "0001-01-01T00:00:00Z".into();
    };
    let mut s = t.format("%Y-%m-%dT%H:%M:%S").to_string();
    if nanos != 0 {
        let frac = format!("{nanos:09}");
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    s.push('Z');
    s
}

fn stat_header(stat: &berth_image::PathStat) -> Result<HeaderValue> {
    let body = json!({
        "name": stat.name,
        "size": stat.size,
        "mode": stat.file_mode(),
        "mtime": go_time(stat.mtime_secs, stat.mtime_nsecs),
        "linkTarget": stat.link_target,
    });
    let encoded = base64::engine::general_purpose::STANDARD.encode(body.to_string());
    HeaderValue::from_str(&encoded)
        .map_err(|e| Error::Internal(format!("encode path stat header: {e}")))
}

/// `HEAD /containers/{id}/archive?path=`.
pub async fn head(ctx: &Ctx, key: &str) -> Result<Response<Body>> {
    let path = path_param(ctx)?;
    let record = ctx.daemon.containers.get(key)?;
    let p = path.clone();
    let stat = ctx
        .daemon
        .with_container_fs(record, move |fs| Ok(fs.stat(&p)?))
        .await
        .map_err(|e| not_found(e, &path, key))?;
    let mut resp = empty(StatusCode::OK);
    resp.headers_mut().insert(STAT_HEADER, stat_header(&stat)?);
    Ok(resp)
}

/// `GET /containers/{id}/archive?path=`: the stat header, then the tar stream.
pub async fn get(ctx: &Ctx, key: &str) -> Result<Response<Body>> {
    let path = path_param(ctx)?;
    let record = ctx.daemon.containers.get(key)?;
    let (stat_tx, stat_rx) = oneshot::channel();
    let (tx, body) = channel_body();
    let d = ctx.daemon.clone();
    let p = path.clone();
    let rec = record.clone();
    ctx.daemon.spawn_in_container_fs(record, move |fs| {
        let fs = match fs {
            Ok(fs) => fs,
            Err(err) => {
                let _ = stat_tx.send(Err(err));
                return;
            }
        };
        match fs.stat(&p) {
            Ok(stat) => {
                if stat_tx.send(Ok(stat)).is_err() {
                    return;
                }
            }
            Err(err) => {
                let _ = stat_tx.send(Err(err.into()));
                return;
            }
        }
        let writer = std::io::BufWriter::with_capacity(64 << 10, ChannelWriter(tx));
        if let Err(err) = fs.archive(&p, writer) {
            tracing::warn!(id = %rec.id, path = %p, %err, "archive failed after the response started");
        }
        d.container_event("archive-path", &rec, &[]);
    });
    let stat = stat_rx
        .await
        .map_err(|_| Error::Internal("container filesystem thread ended early".into()))?
        .map_err(|e| not_found(e, &path, key))?;
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    h.insert(STAT_HEADER, stat_header(&stat)?);
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/x-tar"));
    Ok(resp)
}

/// `PUT /containers/{id}/archive?path=&noOverwriteDirNonDir=&copyUIDGID=`: the body, a tar
/// stream (gzip or zstd compressed or not), unpacked into the directory `path` leads to.
pub async fn put(ctx: &Ctx, key: &str, req: Request<Incoming>) -> Result<Response<Body>> {
    let path = path_param(ctx)?;
    let record = ctx.daemon.containers.get(key)?;
    let opts = berth_image::ExtractOptions {
        allow_overwrite_dir_non_dir: !ctx.query.bool("noOverwriteDirNonDir"),
        ..Default::default()
    };
    let copy_uid_gid = ctx.query.bool("copyUIDGID");
    // The body is read on the runtime and handed to the extracting thread in chunks.
    let (chunk_tx, chunk_rx) = mpsc::channel::<Bytes>(16);
    let forward = tokio::spawn(async move {
        let mut body = req.into_body();
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { return false };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            if chunk_tx.send(data).await.is_err() {
                // The extraction ended (failed): the rest is read only for the error's sake.
                super::discard_body(&mut body).await;
                return true;
            }
        }
        true
    });
    let d = ctx.daemon.clone();
    let rec = record.clone();
    let p = path.clone();
    let result = ctx
        .daemon
        .with_container_fs(record, move |fs| {
            let dest = fs.resolve(&p)?;
            d.check_writable(&rec, &dest)?;
            let mut opts = opts;
            // Without a configured user, dockerd keeps the archive's owners even then.
            let user = rec.config.user.clone().unwrap_or_default();
            if copy_uid_gid && !user.is_empty() {
                opts.owner = Some(crate::archive::container_user_ids(fs, &user)?);
            }
            let reader = ChannelReader::new(chunk_rx);
            fs.extract(&p, reader, &opts)?;
            d.container_event("extract-to-dir", &rec, &[]);
            Ok(())
        })
        .await;
    let complete = forward.await.unwrap_or(false);
    result.map_err(|e| not_found(e, &path, key))?;
    if !complete {
        return Err(Error::InvalidParameter(
            "read request body: the upload was cut short".into(),
        ));
    }
    Ok(empty(StatusCode::OK))
}

/// A blocking `Write` into a response body channel.
struct ChannelWriter(mpsc::Sender<Bytes>);

impl std::io::Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send(Bytes::copy_from_slice(buf))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client went away"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_times() {
        assert_eq!(go_time(0, 0), "1970-01-01T00:00:00Z");
        assert_eq!(
            go_time(1_600_000_000, 500_000_000),
            "2020-09-13T12:26:40.5Z"
        );
        assert_eq!(
            go_time(1_600_000_000, 123),
            "2020-09-13T12:26:40.000000123Z"
        );
    }
}
