//! Container routes: create, list, inspect, rename, remove, prune, logs.

use std::time::Duration;

use bollard_stubs::models::ContainerCreateBody;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use serde_json::json;

use super::{channel_body, empty, json_response, read_json, Body, Ctx};
use crate::daemon::ListOptions;
use crate::error::{Error, Result};
use crate::logs::{self, Selection};
use crate::time;

/// How often a followed log is polled for new lines.
const FOLLOW_POLL: Duration = Duration::from_millis(200);

/// `POST /containers/create?name=`.
pub async fn create(ctx: &Ctx, req: Request<Incoming>) -> Result<Response<Body>> {
    let body: ContainerCreateBody = read_json(req).await?;
    let name = ctx.query.get("name").filter(|n| !n.is_empty());
    let id = ctx.daemon.create_container(name, body)?;
    Ok(json_response(
        StatusCode::CREATED,
        &json!({"Id": id, "Warnings": []}),
    ))
}

/// `GET /containers/json?all=&limit=&size=&filters=`.
pub fn list(ctx: &Ctx) -> Result<Response<Body>> {
    let q = &ctx.query;
    let limit = match q.get("limit").filter(|l| !l.is_empty()) {
        None => None,
        Some(l) => Some(
            l.parse::<i64>()
                .map_err(|_| Error::InvalidParameter(format!("invalid value for limit: {l:?}")))?,
        )
        .and_then(|l| usize::try_from(l).ok()),
    };
    let opts = ListOptions {
        all: q.bool("all"),
        limit,
        size: q.bool("size"),
        filters: q.filters()?,
    };
    Ok(json_response(
        StatusCode::OK,
        &ctx.daemon.list_containers(&opts)?,
    ))
}

/// `GET /containers/{id}/json?size=`.
pub fn inspect(ctx: &Ctx, id: &str) -> Result<Response<Body>> {
    let v = ctx.daemon.inspect_container(id, ctx.query.bool("size"))?;
    Ok(json_response(StatusCode::OK, &v))
}

/// `POST /containers/{id}/rename?name=`.
pub fn rename(ctx: &Ctx, id: &str) -> Result<Response<Body>> {
    let name = ctx
        .query
        .get("name")
        .filter(|n| !n.is_empty())
        .ok_or_else(|| Error::InvalidParameter("Neither old nor new names may be empty".into()))?;
    ctx.daemon.rename_container(id, name)?;
    Ok(empty(StatusCode::NO_CONTENT))
}

/// `DELETE /containers/{id}?force=&v=`.
pub async fn remove(ctx: &Ctx, id: &str) -> Result<Response<Body>> {
    ctx.daemon
        .remove_container(id, ctx.query.bool("force"))
        .await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

/// `POST /containers/prune?filters=`.
pub fn prune(ctx: &Ctx) -> Result<Response<Body>> {
    let (deleted, reclaimed) = ctx.daemon.prune_containers(&ctx.query.filters()?)?;
    let deleted = (!deleted.is_empty()).then_some(deleted);
    Ok(json_response(
        StatusCode::OK,
        &json!({"ContainersDeleted": deleted, "SpaceReclaimed": reclaimed}),
    ))
}

/// `GET /containers/{id}/logs?stdout=&stderr=&since=&until=&timestamps=&tail=&follow=`.
pub async fn logs(ctx: &Ctx, key: &str) -> Result<Response<Body>> {
    let q = &ctx.query;
    let record = ctx.daemon.containers.get(key)?;
    let sel =
        Selection {
            stdout: q.bool("stdout"),
            stderr: q.bool("stderr"),
            since: time_param(q.get("since"), "since")?.filter(|&t| t > 0),
            until: time_param(q.get("until"), "until")?.filter(|&t| t > 0),
            tail: match q.get("tail") {
                None | Some("") | Some("all") => None,
                Some(n) => Some(n.parse::<usize>().map_err(|_| {
                    Error::InvalidParameter(format!("invalid value for tail: {n:?}"))
                })?),
            },
        };
    if !sel.stdout && !sel.stderr {
        return Err(Error::InvalidParameter(
            "Bad parameters: you must choose at least one stream".into(),
        ));
    }
    let follow = q.bool("follow");
    let timestamps = q.bool("timestamps");
    let tty = record.config.tty.unwrap_or(false);
    let log_path = std::path::PathBuf::from(&record.log_path);
    let read_sel = sel.clone();
    let (entries, mut follower) =
        tokio::task::spawn_blocking(move || logs::read(&log_path, &read_sel))
            .await
            .map_err(|e| Error::Internal(format!("log reader: {e}")))??;

    let (tx, body) = channel_body();
    let daemon = ctx.daemon.clone();
    let id = record.id.clone();
    tokio::spawn(async move {
        for e in &entries {
            if tx.send(logs::frame(e, tty, timestamps)).await.is_err() {
                return;
            }
        }
        if !follow {
            return;
        }
        loop {
            // Read the running state before polling so that lines written just before the
            // container exits are still delivered.
            let running = daemon.containers.get(&id).is_ok_and(|r| r.state.running);
            let fresh = match follower.poll() {
                Ok(f) => f,
                Err(err) => {
                    tracing::warn!(%id, %err, "following logs failed");
                    return;
                }
            };
            for e in fresh.iter().filter(|e| sel.wants(e)) {
                if tx.send(logs::frame(e, tty, timestamps)).await.is_err() {
                    return;
                }
            }
            if !running || sel.until.is_some_and(|u| time::now_nanos() > u) {
                return;
            }
            tokio::select! {
                () = tokio::time::sleep(FOLLOW_POLL) => {}
                () = tx.closed() => return,
            }
        }
    });
    // Before API 1.42 both kinds were labelled raw-stream.
    let content_type = if tty || ctx.version < crate::apiversion::ApiVersion(1, 42) {
        "application/vnd.docker.raw-stream"
    } else {
        "application/vnd.docker.multiplexed-stream"
    };
    let mut resp = Response::new(body);
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    Ok(resp)
}

fn time_param(v: Option<&str>, key: &str) -> Result<Option<i64>> {
    match v.filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => time::parse_timestamp(v)
            .map(Some)
            .ok_or_else(|| Error::InvalidParameter(format!("invalid value for {key}: {v:?}"))),
    }
}
