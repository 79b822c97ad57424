//! Resource routes: `GET /containers/{id}/stats` (one document, or one a second while
//! streaming) and `POST /containers/{id}/update`.

use std::sync::Arc;
use std::time::Duration;

use bollard_stubs::models::ContainerUpdateBody;
use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use serde_json::{json, Value};

use super::{channel_body, json_response, read_json, Body, Ctx};
use crate::daemon::Daemon;
use crate::error::{Error, Result};
use crate::stats::{self, Sample};

/// dockerd's collection interval.
const INTERVAL: Duration = Duration::from_secs(1);

async fn sample(daemon: &Arc<Daemon>, id: &str) -> Result<Option<Sample>> {
    let d = Arc::clone(daemon);
    let id = id.to_string();
    tokio::task::spawn_blocking(move || d.stats_sample(&id))
        .await
        .map_err(|e| Error::Internal(format!("stats task: {e}")))?
}

/// The document for `cur` (or dockerd's zeroed one when the container is not running).
fn document(name: &str, id: &str, cur: Option<&Sample>, prev: Option<&Sample>) -> Value {
    match cur {
        Some(cur) => stats::stats_json(name, id, cur, prev),
        None => stats::zero_stats_json(name, id),
    }
}

/// `GET /containers/{id}/stats?stream=&one-shot=`.
pub async fn stats(ctx: &Ctx, key: &str) -> Result<Response<Body>> {
    let q = &ctx.query;
    let stream = q.get("stream").is_none() || q.bool("stream");
    let one_shot = q.bool("one-shot");
    if one_shot && stream {
        return Err(Error::InvalidParameter(
            "cannot have stream=true and one-shot=true".into(),
        ));
    }
    let record = ctx.daemon.containers.get(key)?;
    let (id, name) = (record.id, record.name);
    if !stream {
        let first = sample(&ctx.daemon, &id).await?;
        // Without one-shot, dockerd waits for a second reading so that precpu_stats is set.
        let doc = match first {
            Some(first) if !one_shot => {
                tokio::time::sleep(INTERVAL).await;
                let second = sample(&ctx.daemon, &id).await?;
                document(&name, &id, second.as_ref(), Some(&first))
            }
            first => document(&name, &id, first.as_ref(), None),
        };
        return Ok(json_response(StatusCode::OK, &doc));
    }
    let (tx, body) = channel_body();
    let daemon = Arc::clone(&ctx.daemon);
    tokio::spawn(async move {
        let mut prev: Option<Sample> = None;
        let mut ticker = tokio::time::interval(INTERVAL);
        loop {
            ticker.tick().await;
            let cur = match sample(&daemon, &id).await {
                Ok(s) => s,
                // Removed while streaming: the stream ends.
                Err(Error::NoSuchContainer(_)) => return,
                Err(err) => {
                    tracing::debug!(%id, %err, "stats sample failed");
                    None
                }
            };
            let doc = document(&name, &id, cur.as_ref(), prev.as_ref());
            let mut line = serde_json::to_vec(&doc).unwrap_or_default();
            line.push(b'\n');
            if tx.send(Bytes::from(line)).await.is_err() {
                return;
            }
            prev = cur;
        }
    });
    let mut resp = Response::new(body);
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(resp)
}

/// `POST /containers/{id}/update`.
pub async fn update(ctx: &Ctx, key: &str, req: Request<Incoming>) -> Result<Response<Body>> {
    let body: ContainerUpdateBody = read_json(req).await?;
    let warnings = ctx.daemon.update_container(key, body).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({ "Warnings": warnings }),
    ))
}
