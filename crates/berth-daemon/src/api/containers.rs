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
    let CreateRequest {
        mut body,
        mac_address,
    } = read_json(req).await?;
    if let Some(mac) = mac_address.filter(|m| !m.is_empty()) {
        primary_endpoint(&mut body).mac_address.get_or_insert(mac);
    }
    let name = ctx.query.get("name").filter(|n| !n.is_empty());
    let id = ctx.daemon.create_container(name, body)?;
    Ok(json_response(
        StatusCode::CREATED,
        &json!({"Id": id, "Warnings": []}),
    ))
}

/// The create body, with the container-level `MacAddress` that API versions before 1.44 use
/// (and docker-py still sends) and newer ones moved into the endpoint settings.
#[derive(serde::Deserialize)]
struct CreateRequest {
    #[serde(flatten)]
    body: ContainerCreateBody,
    #[serde(rename = "MacAddress", default)]
    mac_address: Option<String>,
}

/// The endpoint settings of the container's primary network (its network mode), created
/// empty when the request had none, as dockerd moves a container-level MAC address there.
fn primary_endpoint(
    body: &mut ContainerCreateBody,
) -> &mut bollard_stubs::models::EndpointSettings {
    let network = body
        .host_config
        .as_ref()
        .and_then(|h| h.network_mode.clone())
        .filter(|m| !m.is_empty() && m != "default")
        .unwrap_or_else(|| "bridge".into());
    body.networking_config
        .get_or_insert_with(Default::default)
        .endpoints_config
        .get_or_insert_with(Default::default)
        .entry(network)
        .or_default()
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
    // `v`: its anonymous volumes go too (read before the container's mount points are).
    let volumes = match ctx.query.bool("v") {
        true => ctx.daemon.anonymous_volumes(id),
        false => Vec::new(),
    };
    ctx.daemon
        .remove_container(id, ctx.query.bool("force"))
        .await?;
    ctx.daemon.remove_unused_volumes(&volumes);
    Ok(empty(StatusCode::NO_CONTENT))
}

/// `DELETE /containers/{parent}/{alias}?link=1`: removes a legacy link.
pub fn remove_link(ctx: &Ctx, parent: &str, alias: &str) -> Result<Response<Body>> {
    ctx.daemon.remove_link(parent, alias)?;
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

/// How long a log read waits for the monitor to copy pending output (see [`logs`]).
const LOG_SYNC_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

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
    if record.state.running {
        // What the container wrote before this request must be in the answer even when its
        // monitor has not been scheduled since (`docker start` then `docker logs`).
        let socket = ctx.daemon.run_paths(&record.id).attach_socket;
        let synced = tokio::task::spawn_blocking(move || {
            berth_runtime::monitor::sync_output(&socket, LOG_SYNC_TIMEOUT)
        })
        .await;
        if let Ok(Err(err)) = synced {
            tracing::debug!(id = %record.id, %err, "log sync with the monitor failed");
        }
    }
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

/// `POST /containers/{id}/start`: 204, or 304 when already running.
pub async fn start(ctx: &Ctx, id: &str) -> Result<Response<Body>> {
    let started = ctx.daemon.start_container(id).await?;
    Ok(empty(if started {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::NOT_MODIFIED
    }))
}

fn stop_params(ctx: &Ctx) -> Result<(Option<i64>, Option<nix::sys::signal::Signal>)> {
    let timeout = match ctx.query.get("t").filter(|t| !t.is_empty()) {
        None => None,
        Some(t) => Some(
            t.parse::<i64>()
                .map_err(|_| Error::InvalidParameter(format!("invalid value for t: {t:?}")))?,
        ),
    };
    let signal = ctx
        .query
        .get("signal")
        .filter(|s| !s.is_empty())
        .map(crate::lifecycle::parse_signal)
        .transpose()?;
    Ok((timeout, signal))
}

/// `POST /containers/{id}/stop?t=&signal=`: 204, or 304 when not running.
pub async fn stop(ctx: &Ctx, id: &str) -> Result<Response<Body>> {
    let (timeout, signal) = stop_params(ctx)?;
    let stopped = ctx.daemon.stop_container(id, timeout, signal).await?;
    Ok(empty(if stopped {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::NOT_MODIFIED
    }))
}

/// `POST /containers/{id}/restart?t=&signal=`.
pub async fn restart(ctx: &Ctx, id: &str) -> Result<Response<Body>> {
    let (timeout, signal) = stop_params(ctx)?;
    ctx.daemon.stop_container(id, timeout, signal).await?;
    ctx.daemon.start_container(id).await?;
    let record = ctx.daemon.containers.get(id)?;
    ctx.daemon.container_event("restart", &record, &[]);
    Ok(empty(StatusCode::NO_CONTENT))
}

/// `POST /containers/{id}/kill?signal=` (default SIGKILL).
pub async fn kill(ctx: &Ctx, id: &str) -> Result<Response<Body>> {
    let signal = crate::lifecycle::parse_signal(
        ctx.query
            .get("signal")
            .filter(|s| !s.is_empty())
            .unwrap_or("KILL"),
    )?;
    ctx.daemon.kill_container(id, signal).await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

/// `POST /containers/{id}/wait?condition=not-running|next-exit|removed`.
///
/// As dockerd does, the status line and headers are sent at once and the body when the
/// condition is met: clients send this before `start` and rely on it being registered.
pub async fn wait(ctx: &Ctx, key: &str) -> Result<Response<Body>> {
    let condition = ctx
        .query
        .get("condition")
        .filter(|c| !c.is_empty())
        .unwrap_or("not-running")
        .to_string();
    if !["not-running", "next-exit", "removed"].contains(&condition.as_str()) {
        return Err(Error::InvalidParameter(format!(
            "invalid condition: \"{condition}\""
        )));
    }
    let (_, rx) = ctx.daemon.events.subscribe();
    let id = ctx.daemon.containers.resolve(key)?;
    let (tx, body) = channel_body();
    let daemon = ctx.daemon.clone();
    tokio::spawn(async move {
        let result = tokio::select! {
            r = daemon.wait_container(&id, &condition, rx) => r,
            () = tx.closed() => return,
        };
        let body = match result {
            Ok(code) => json!({"StatusCode": code}),
            Err(err) => json!({"StatusCode": -1, "Error": {"Message": err.to_string()}}),
        };
        let _ = tx.send(bytes::Bytes::from(body.to_string() + "\n")).await;
    });
    let mut resp = Response::new(body);
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(resp)
}
