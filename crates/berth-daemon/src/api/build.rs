//! `POST /build` (the classic builder's JSON message stream) and `POST /build/prune`.
//!
//! The context arrives as the request body and is read on a blocking thread as it is received;
//! the build then runs there too, its messages sent as they happen. A build that fails before
//! its first message is answered with an HTTP error, as dockerd answers it.

use std::collections::BTreeMap;
use std::sync::Arc;

use berth_builder::{BuildOptions, Emit};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;

use super::{channel_body, json_response, Body, Ctx};
use crate::archive::ChannelReader;
use crate::error::{Error, Result};

/// Decodes a JSON-object query parameter (`buildargs`, `labels`).
fn json_param<T: serde::de::DeserializeOwned + Default>(ctx: &Ctx, key: &str) -> Result<T> {
    match ctx.query.get(key).filter(|v| !v.is_empty()) {
        None => Ok(T::default()),
        Some(v) => serde_json::from_str(v)
            .map_err(|e| Error::InvalidParameter(format!("invalid {key} parameter: {e}"))),
    }
}

fn options(ctx: &Ctx) -> Result<(BuildOptions, Value, bool)> {
    let q = &ctx.query;
    if let Some(r) = q.get("remote").filter(|r| !r.is_empty()) {
        return Err(Error::InvalidParameter(format!(
            "remote build contexts ({r}) are not supported: send the context as the request body"
        )));
    }
    let rm = match q.get("rm") {
        None => true,
        Some(_) => q.bool("rm"),
    };
    let cache_from: Vec<String> = json_param(ctx, "cachefrom")?;
    let opts = BuildOptions {
        dockerfile: q.get("dockerfile").unwrap_or("").to_string(),
        tags: q
            .get_all("t")
            .into_iter()
            .filter(|t| !t.is_empty())
            .collect(),
        build_args: json_param::<BTreeMap<String, Option<String>>>(ctx, "buildargs")?,
        labels: json_param::<BTreeMap<String, String>>(ctx, "labels")?,
        target: q
            .get("target")
            .filter(|t| !t.is_empty())
            .map(str::to_string),
        no_cache: q.bool("nocache"),
        rm,
        force_rm: q.bool("forcerm"),
        pull: q.bool("pull"),
        platform: q
            .get("platform")
            .filter(|p| !p.is_empty())
            .map(str::to_string),
        cache_from,
    };
    if let Some(p) = &opts.platform {
        berth_builder::build::check_platform(p)
            .map_err(|e| Error::InvalidParameter(e.to_string()))?;
    }
    for t in &opts.tags {
        berth_image::Reference::parse_tagged(t)
            .map_err(|e| Error::InvalidParameter(format!("invalid reference format: {t}: {e}")))?;
    }
    let mut hc = Map::new();
    let network = match q.get("networkmode").filter(|n| !n.is_empty()) {
        None | Some("default") => "bridge",
        Some(n) => n,
    };
    hc.insert("NetworkMode".into(), json!(network));
    let hosts: Vec<String> = q
        .get_all("extrahosts")
        .into_iter()
        .flat_map(|h| h.split(',').map(str::to_string).collect::<Vec<_>>())
        .filter(|h| !h.is_empty())
        .collect();
    if !hosts.is_empty() {
        hc.insert("ExtraHosts".into(), json!(hosts));
    }
    for (param, field) in [
        ("memory", "Memory"),
        ("memswap", "MemorySwap"),
        ("cpushares", "CpuShares"),
        ("cpuperiod", "CpuPeriod"),
        ("cpuquota", "CpuQuota"),
        ("shmsize", "ShmSize"),
    ] {
        if let Some(v) = q.get(param).filter(|v| !v.is_empty()) {
            let n: i64 = v
                .parse()
                .map_err(|_| Error::InvalidParameter(format!("invalid {param} parameter: {v}")))?;
            if n != 0 {
                hc.insert(field.into(), json!(n));
            }
        }
    }
    if let Some(v) = q.get("cpusetcpus").filter(|v| !v.is_empty()) {
        hc.insert("CpusetCpus".into(), json!(v));
    }
    Ok((opts, Value::Object(hc), q.bool("q")))
}

/// Sends build messages into the response body. The response head waits for the first
/// message: a build that fails before printing anything (a bad Dockerfile, a missing context
/// file) is answered with an HTTP error instead, as dockerd answers it.
struct Stream {
    tx: mpsc::Sender<Bytes>,
    quiet: bool,
    head: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Stream {
    fn send(&mut self, v: &Value) -> berth_builder::Result<()> {
        if let Some(h) = self.head.take() {
            let _ = h.send(());
        }
        let mut line = serde_json::to_vec(v).unwrap_or_default();
        line.extend_from_slice(b"\r\n");
        self.tx
            .blocking_send(Bytes::from(line))
            .map_err(|_| berth_builder::Error::Cancelled)
    }
}

impl Emit for Stream {
    fn stream(&mut self, text: &str) -> berth_builder::Result<()> {
        if self.quiet {
            return Ok(());
        }
        self.send(&json!({ "stream": text }))
    }

    fn aux(&mut self, value: Value) -> berth_builder::Result<()> {
        self.send(&json!({ "aux": value }))
    }

    fn message(&mut self, value: Value) -> berth_builder::Result<()> {
        if self.quiet {
            return Ok(());
        }
        self.send(&value)
    }
}

/// `POST /build`.
pub async fn build(ctx: &Ctx, req: Request<Incoming>) -> Result<Response<Body>> {
    let (opts, host_config, quiet) = options(ctx)?;
    let registry_config = req
        .headers()
        .get("X-Registry-Config")
        .and_then(|v| v.to_str().ok())
        .map(crate::build::registry_config)
        .unwrap_or_default();
    let daemon = Arc::clone(&ctx.daemon);
    let data_root = daemon.config.data_root.clone();
    let tmp = crate::build::tmp_dir(&data_root);
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(format!("create {}", tmp.display()), e))?;
    let cache = crate::build::cache_for(&daemon).map_err(|e| Error::Internal(e.to_string()))?;
    let (chunk_tx, chunk_rx) = mpsc::channel::<Bytes>(16);
    tokio::spawn(async move {
        let mut body = req.into_body();
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(data) = frame.into_data() {
                if chunk_tx.send(data).await.is_err() {
                    return;
                }
            }
        }
    });
    let (tx, body) = channel_body();
    let (head_tx, head_rx) = tokio::sync::oneshot::channel::<()>();
    let (early_tx, early_rx) = tokio::sync::oneshot::channel::<berth_builder::Error>();
    let handle = tokio::runtime::Handle::current();
    let events = Arc::clone(&daemon);
    let tags = opts.tags.clone();
    // A client that goes away cancels the build (dockerd cancels the build's context).
    let running = crate::build::RunningStep::default();
    let watcher = {
        let tx = tx.clone();
        let daemon = Arc::clone(&daemon);
        let running = running.clone();
        tokio::spawn(async move {
            tx.closed().await;
            running.cancel(&daemon).await;
        })
    };
    tokio::task::spawn_blocking(move || {
        let mut out = Stream {
            tx,
            quiet,
            head: Some(head_tx),
        };
        let result = berth_builder::Context::from_reader(ChannelReader::new(chunk_rx), &tmp)
            .and_then(|context| {
                let mut backend = crate::build::DaemonBackend {
                    daemon,
                    handle,
                    host_config,
                    registry_config,
                    running,
                };
                berth_builder::build(&mut backend, &cache, &context, &opts, &mut out)
            });
        if let Ok(id) = &result {
            // dockerd's image events for the tags a build applied.
            for t in &tags {
                let name = berth_image::Reference::parse_tagged(t)
                    .map(|r| r.familiar())
                    .unwrap_or_else(|_| t.clone());
                events.events.publish(crate::events::Event::new(
                    "image",
                    "tag",
                    id.as_str(),
                    [("name".to_string(), name)].into(),
                ));
            }
        }
        // Its sender clone must go, or the response would never end.
        watcher.abort();
        match result {
            Ok(id) if quiet => {
                let _ = out.send(&json!({ "stream": format!("{id}\n") }));
            }
            Ok(_) => {}
            Err(berth_builder::Error::Cancelled) => {}
            // Nothing was sent yet: the error is the HTTP answer.
            Err(err) if out.head.is_some() => {
                let _ = early_tx.send(err);
            }
            Err(err) => {
                let msg = err.to_string();
                let detail = match err.code() {
                    Some(code) => json!({ "code": code, "message": msg }),
                    None => json!({ "message": msg }),
                };
                let _ = out.send(&json!({ "errorDetail": detail, "error": msg }));
            }
        }
    });
    // The task signals the head before its first message, or leaves an early error (sent
    // before the head sender is dropped with the task's stream).
    if head_rx.await.is_err() {
        if let Ok(err) = early_rx.await {
            return Err(if err.is_user_error() {
                Error::InvalidParameter(err.to_string())
            } else {
                Error::Internal(err.to_string())
            });
        }
    }
    let mut resp = Response::new(body);
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(resp)
}

/// `POST /build/prune`: forgets cached steps (`all`) or those whose images are gone.
pub async fn prune(ctx: &Ctx) -> Result<Response<Body>> {
    let daemon = Arc::clone(&ctx.daemon);
    let all = ctx.query.bool("all");
    let removed = tokio::task::spawn_blocking(move || -> Result<usize> {
        let cache = crate::build::cache_for(&daemon).map_err(|e| Error::Internal(e.to_string()))?;
        let r = if all {
            cache.clear()
        } else {
            cache.prune(|id| daemon.images.image_id(id).is_ok())
        };
        r.map_err(|e| Error::Internal(e.to_string()))
    })
    .await
    .map_err(|e| Error::Internal(format!("build prune: {e}")))??;
    tracing::debug!(removed, "build cache pruned");
    Ok(json_response(
        StatusCode::OK,
        &json!({ "CachesDeleted": [], "SpaceReclaimed": 0 }),
    ))
}
