//! Image routes over the image store: list, inspect, history, tag, remove, prune, load, save.
//!
//! The store is synchronous, so every call runs on the blocking pool; load spools the upload
//! to a file first and save streams the archive through a channel, so neither holds an image
//! in memory.

use std::io::Write;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use super::{channel_body, json_response, Body, Ctx};
use crate::daemon::Daemon;
use crate::error::{Error, Result};
use crate::events::Event;

/// Runs a store call on the blocking pool.
async fn blocking<T: Send + 'static>(
    daemon: &Arc<Daemon>,
    f: impl FnOnce(&Daemon) -> Result<T> + Send + 'static,
) -> Result<T> {
    let d = daemon.clone();
    tokio::task::spawn_blocking(move || f(&d))
        .await
        .map_err(|e| Error::Internal(format!("image store task: {e}")))?
}

fn image_event(d: &Daemon, action: &str, id: &str, name: &str) {
    d.events.publish(Event::new(
        "image",
        action,
        id,
        [("name".to_string(), name.to_string())].into(),
    ));
}

/// `GET /images/json?all=&filters=`: filters `reference`, `dangling`, `label`.
pub async fn list(ctx: &Ctx) -> Result<Response<Body>> {
    let filters = ctx.query.filters()?;
    filters.validate(&["reference", "dangling", "label", "before", "since"])?;
    let mut images = blocking(&ctx.daemon, |d| Ok(d.images.list()?)).await?;
    if !ctx.query.bool("all") {
        // As dockerd: an untagged image another image names as its parent is an intermediate
        // step of a build, listed only with `all` (and never as dangling).
        let parents: std::collections::HashSet<String> =
            images.iter().map(|i| i.parent_id.clone()).collect();
        images.retain(|i| {
            !(i.repo_tags.is_empty() && i.repo_digests.is_empty() && parents.contains(&i.id))
        });
    }
    let references = filters.get("reference");
    if !references.is_empty() {
        // As dockerd does, an image lists only the tags the filter matched.
        for img in &mut images {
            img.repo_tags
                .retain(|t| references.iter().any(|r| reference_matches(r, t)));
        }
        images.retain(|img| !img.repo_tags.is_empty());
    }
    images.retain(|img| {
        filters.matches_any("dangling", |v| {
            (v == "true" || v == "1") == img.repo_tags.is_empty()
        }) && filters.matches_all("label", |l| match l.split_once('=') {
            Some((k, v)) => img.labels.get(k).is_some_and(|x| x == v),
            None => img.labels.contains_key(l),
        })
    });
    Ok(json_response(StatusCode::OK, &images))
}

/// Docker's `reference` filter: the pattern matches the whole tag, or the repository when the
/// pattern has no tag; `*` matches within one path component.
fn reference_matches(pattern: &str, tag: &str) -> bool {
    let (repo, _) = tag.rsplit_once(':').unwrap_or((tag, ""));
    glob(pattern, tag) || glob(pattern, repo)
}

fn glob(pattern: &str, s: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == s,
        Some((head, tail)) => {
            let Some(rest) = s.strip_prefix(head) else {
                return false;
            };
            (0..=rest.len())
                .filter(|&i| rest.is_char_boundary(i) && !rest[..i].contains('/'))
                .any(|i| glob(tail, &rest[i..]))
        }
    }
}

/// `GET /images/{name}/json`.
pub async fn inspect(ctx: &Ctx, name: String) -> Result<Response<Body>> {
    let v = blocking(&ctx.daemon, move |d| Ok(d.images.inspect(&name)?)).await?;
    Ok(json_response(StatusCode::OK, &v))
}

/// `GET /images/{name}/history`.
pub async fn history(ctx: &Ctx, name: String) -> Result<Response<Body>> {
    let v = blocking(&ctx.daemon, move |d| Ok(d.images.history(&name)?)).await?;
    Ok(json_response(StatusCode::OK, &v))
}

/// `POST /images/{name}/tag?repo=&tag=`.
pub async fn tag(ctx: &Ctx, name: String) -> Result<Response<Body>> {
    let repo = ctx
        .query
        .get("repo")
        .filter(|r| !r.is_empty())
        .ok_or_else(|| {
            Error::InvalidParameter("repository name must have at least one component".into())
        })?;
    let target = match ctx.query.get("tag").filter(|t| !t.is_empty()) {
        Some(t) => format!("{repo}:{t}"),
        None => repo.to_string(),
    };
    blocking(&ctx.daemon, move |d| {
        d.images.tag(&name, &target)?;
        let id = d.images.image_id(&target)?;
        image_event(d, "tag", id.as_str(), &target);
        Ok(())
    })
    .await?;
    Ok(super::empty(StatusCode::CREATED))
}

/// `DELETE /images/{name}?force=`.
pub async fn remove(ctx: &Ctx, name: String) -> Result<Response<Body>> {
    let force = ctx.query.bool("force");
    let items = blocking(&ctx.daemon, move |d| {
        let running: Vec<String> = d
            .containers
            .list()
            .into_iter()
            .filter(|c| c.state.running)
            .map(|c| c.id)
            .collect();
        let items = d.images.remove_with(&name, force, &running)?;
        for item in &items {
            match item {
                berth_image::DeleteItem::Untagged(r) => image_event(d, "untag", r, &name),
                berth_image::DeleteItem::Deleted(id) => image_event(d, "delete", id, &name),
            }
        }
        Ok(items)
    })
    .await?;
    Ok(json_response(StatusCode::OK, &items))
}

/// `POST /images/prune?filters={"dangling":["false"]}`.
pub async fn prune(ctx: &Ctx) -> Result<Response<Body>> {
    let filters = ctx.query.filters()?;
    filters.validate(&["dangling", "until", "label"])?;
    if !filters.get("until").is_empty() || !filters.get("label").is_empty() {
        return Err(Error::InvalidParameter(
            "image prune filters 'until' and 'label' are not supported yet".into(),
        ));
    }
    let all = filters
        .get("dangling")
        .iter()
        .any(|v| v == "false" || v == "0");
    let report = blocking(&ctx.daemon, move |d| {
        let report = d.images.prune(all)?;
        image_event(d, "prune", "", &report.space_reclaimed.to_string());
        Ok(report)
    })
    .await?;
    let deleted = (!report.images_deleted.is_empty()).then_some(&report.images_deleted);
    Ok(json_response(
        StatusCode::OK,
        &json!({"ImagesDeleted": deleted, "SpaceReclaimed": report.space_reclaimed}),
    ))
}

/// `POST /images/load`: the body is a docker-archive or OCI-archive tar.
pub async fn load(ctx: &Ctx, req: Request<Incoming>) -> Result<Response<Body>> {
    let (spool, guard) = spool_body(ctx, req).await?;
    let result = blocking(&ctx.daemon, move |d| {
        let _guard = guard;
        let f = std::fs::File::open(&spool)
            .map_err(|e| Error::io(format!("open {}", spool.display()), e))?;
        let loaded = d.images.load(std::io::BufReader::new(f))?;
        for img in &loaded {
            let name = img.tags.first().cloned().unwrap_or_default();
            image_event(d, "load", img.id.as_str(), &name);
        }
        Ok(loaded)
    })
    .await;
    // As dockerd: once the archive is received, the answer is 200 and a failed load is an
    // error message in the JSON stream (docker-py raises ImageLoadError from it).
    let loaded = match result {
        Ok(loaded) => loaded,
        Err(err) => {
            let line =
                json!({"errorDetail": {"message": err.to_string()}, "error": err.to_string()});
            let mut resp = Response::new(super::full(format!("{line}\n").into_bytes()));
            resp.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            return Ok(resp);
        }
    };
    // `quiet` only suppresses progress, which this daemon does not report; the "Loaded
    // image" lines are the result and are always sent, as by dockerd.
    let mut out = Vec::new();
    for img in &loaded {
        if img.tags.is_empty() {
            out.push(json!({"stream": format!("Loaded image ID: {}\n", img.id)}));
        }
        for t in &img.tags {
            out.push(json!({"stream": format!("Loaded image: {t}\n")}));
        }
    }
    let mut bytes = Vec::new();
    for line in out {
        bytes.extend_from_slice(line.to_string().as_bytes());
        bytes.push(b'\n');
    }
    let mut resp = Response::new(super::full(bytes));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(resp)
}

/// Writes a request body to a file under `<data-root>/tmp`, removed when the guard drops.
async fn spool_body(
    ctx: &Ctx,
    req: Request<Incoming>,
) -> Result<(std::path::PathBuf, RemoveOnDrop)> {
    let tmp_dir = ctx.daemon.config.data_root.join("tmp");
    tokio::fs::create_dir_all(&tmp_dir)
        .await
        .map_err(|e| Error::io(format!("create {}", tmp_dir.display()), e))?;
    let spool = tmp_dir.join(format!("upload-{}", crate::names::random_id()));
    let guard = RemoveOnDrop(spool.clone());
    let mut file = tokio::fs::File::create(&spool)
        .await
        .map_err(|e| Error::io(format!("create {}", spool.display()), e))?;
    let mut body = req.into_body();
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| Error::InvalidParameter(format!("read request body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            file.write_all(&data)
                .await
                .map_err(|e| Error::io(format!("write {}", spool.display()), e))?;
        }
    }
    file.flush()
        .await
        .map_err(|e| Error::io(format!("write {}", spool.display()), e))?;
    Ok((spool, guard))
}

/// `POST /images/create?fromSrc=-&repo=&tag=&changes=&message=` (`docker import`): the
/// body is a root filesystem tarball.
pub async fn import(ctx: &Ctx, req: Request<Incoming>) -> Result<Response<Body>> {
    let q = &ctx.query;
    let reference = match (q.get("repo").filter(|r| !r.is_empty()), q.get("tag")) {
        (Some(r), Some(t)) if !t.is_empty() => Some(format!("{r}:{t}")),
        (Some(r), _) => Some(r.to_string()),
        (None, _) => None,
    };
    // A bad change fails the request before anything of the body is kept.
    let mut config = serde_json::Map::new();
    if let Err(err) = apply_changes(&mut config, &q.get_all("changes")) {
        super::discard_body(&mut req.into_body()).await;
        return Err(err);
    }
    let opts = berth_image::ImportOptions {
        reference,
        config: Some(config),
        message: q
            .get("message")
            .filter(|m| !m.is_empty())
            .map(str::to_string),
    };
    let (spool, guard) = spool_body(ctx, req).await?;
    let id = blocking(&ctx.daemon, move |d| {
        let _guard = guard;
        let f = std::fs::File::open(&spool)
            .map_err(|e| Error::io(format!("open {}", spool.display()), e))?;
        let id = d.images.import(std::io::BufReader::new(f), &opts)?;
        image_event(
            d,
            "import",
            id.as_str(),
            opts.reference.as_deref().unwrap_or(""),
        );
        Ok(id)
    })
    .await?;
    let line = json!({"status": id.to_string()}).to_string() + "\n";
    let mut resp = Response::new(super::full(line));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(resp)
}

/// `--change` lines applied to `config` with the builder's Dockerfile code; what is wrong with
/// them is the client's error, as with dockerd.
fn apply_changes(
    config: &mut serde_json::Map<String, serde_json::Value>,
    changes: &[String],
) -> Result<()> {
    berth_builder::apply_changes(config, changes)
        .map_err(|e| Error::InvalidParameter(e.to_string()))
}

struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `GET /images/get?names=a&names=b` and `GET /images/{name}/get`: a docker-archive tar.
pub async fn save(ctx: &Ctx, names: Vec<String>) -> Result<Response<Body>> {
    if names.is_empty() {
        return Err(Error::InvalidParameter("no image names given".into()));
    }
    // Resolve first so that an unknown name is a 404 rather than a truncated archive.
    let check = names.clone();
    blocking(&ctx.daemon, move |d| {
        for n in &check {
            d.images.image_id(n)?;
        }
        Ok(())
    })
    .await?;
    let (tx, body) = channel_body();
    let d = ctx.daemon.clone();
    tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let writer = std::io::BufWriter::with_capacity(64 << 10, ChannelWriter(tx));
        if let Err(err) = d
            .images
            .save(&refs, berth_image::ArchiveFormat::Docker, writer)
        {
            tracing::warn!(%err, "image save failed after the response started");
        }
        for n in &names {
            image_event(&d, "save", n, n);
        }
    });
    let mut resp = Response::new(body);
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/x-tar"));
    Ok(resp)
}

/// A blocking `Write` into a response body channel.
struct ChannelWriter(mpsc::Sender<Bytes>);

impl Write for ChannelWriter {
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

/// `POST /images/create?fromImage=&tag=&platform=` (`docker pull`): streams Docker's JSON
/// progress messages; a failure after the stream started is reported in it as `error`.
pub async fn pull(ctx: &Ctx, req: &Request<Incoming>) -> Result<Response<Body>> {
    let q = &ctx.query;
    let image = q
        .get("fromImage")
        .filter(|i| !i.is_empty())
        .ok_or_else(|| Error::InvalidParameter("fromImage must be set".into()))?;
    let reference = match q.get("tag").filter(|t| !t.is_empty()) {
        Some(t) if t.starts_with("sha256:") => format!("{image}@{t}"),
        Some(t) => format!("{image}:{t}"),
        None => image.to_string(),
    };
    let credentials = super::distribution::registry_auth(req)?;
    let opts = berth_distribution::PullOptions {
        credentials,
        platform: q
            .get("platform")
            .filter(|p| !p.is_empty())
            .map(str::to_string),
    };
    let registry = ctx.daemon.registry()?;
    let d = ctx.daemon.clone();
    let job_daemon = d.clone();
    super::distribution::stream_job(
        move |progress| async move {
            registry
                .pull(&job_daemon.images, &reference, &opts, progress)
                .await
        },
        // The progress already ended with the `Digest:` and `Status:` lines.
        move |_, r| {
            // dockerd's pull event: the reference as id, the repository as name.
            let (familiar, name) = match berth_image::Reference::parse(&r.reference) {
                Ok(x) => (x.familiar(), x.familiar_name()),
                Err(_) => (r.reference.clone(), r.reference.clone()),
            };
            image_event(&d, "pull", &familiar, &name);
        },
    )
    .await
}

/// `GET /containers/{id}/changes`: the container's filesystem changes against its image.
pub async fn changes(ctx: &Ctx, key: &str) -> Result<Response<Body>> {
    let id = ctx.daemon.containers.resolve(key)?;
    let changes = blocking(&ctx.daemon, move |d| Ok(d.images.diff(&id)?)).await?;
    Ok(json_response(StatusCode::OK, &changes))
}

/// `GET /containers/{id}/export`: the container's root filesystem as a tar stream.
pub async fn export(ctx: &Ctx, key: &str) -> Result<Response<Body>> {
    let record = ctx.daemon.containers.get(key)?;
    let (tx, body) = channel_body();
    let d = ctx.daemon.clone();
    let hold = d.hold_rootfs(&record.id, tokio::runtime::Handle::current());
    tokio::task::spawn_blocking(move || {
        let _hold = hold;
        let writer = std::io::BufWriter::with_capacity(64 << 10, ChannelWriter(tx));
        if let Err(err) = d
            .mount_held_rootfs(&record.id)
            .and_then(|_| Ok(d.images.export(&record.id, writer)?))
        {
            tracing::warn!(id = %record.id, %err, "export failed after the response started");
        }
        d.container_event("export", &record, &[]);
    });
    let mut resp = Response::new(body);
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/x-tar"));
    Ok(resp)
}

/// Fills what the committed config (`user`: the request's, changes applied) leaves unset from
/// the container's, field by field as dockerd's commit does: lists and maps are merged
/// (`Env` by name), and an image with its own ENTRYPOINT keeps no CMD from the container.
fn merge_commit_config(
    user: &mut serde_json::Map<String, serde_json::Value>,
    container: &serde_json::Map<String, serde_json::Value>,
) {
    use serde_json::Value;
    fn empty(v: Option<&Value>) -> bool {
        match v {
            None | Some(Value::Null) => true,
            Some(Value::String(s)) => s.is_empty(),
            Some(Value::Array(a)) => a.is_empty(),
            Some(Value::Object(o)) => o.is_empty(),
            Some(Value::Number(n)) => n.as_f64() == Some(0.0),
            Some(Value::Bool(_)) => false,
        }
    }
    let fill = |user: &mut serde_json::Map<String, Value>, key: &str| {
        if empty(user.get(key)) {
            if let Some(v) = container.get(key) {
                user.insert(key.to_string(), v.clone());
            }
        }
    };
    for key in ["User", "WorkingDir", "StopSignal"] {
        fill(user, key);
    }
    // Maps: the container's keys are added; for volumes its values win, as in dockerd.
    for (key, container_wins) in [
        ("ExposedPorts", false),
        ("Volumes", true),
        ("Labels", false),
    ] {
        let Some(Value::Object(theirs)) = container.get(key) else {
            continue;
        };
        match user.get_mut(key) {
            Some(Value::Object(ours)) => {
                for (k, v) in theirs {
                    if container_wins || !ours.contains_key(k) {
                        ours.insert(k.clone(), v.clone());
                    }
                }
            }
            _ => {
                user.insert(key.to_string(), Value::Object(theirs.clone()));
            }
        }
    }
    if let Some(Value::Array(theirs)) = container.get("Env") {
        match user.get_mut("Env") {
            Some(Value::Array(ours)) if !ours.is_empty() => {
                let name = |e: &Value| {
                    e.as_str()
                        .map(|s| s.split_once('=').map_or(s, |(k, _)| k).to_string())
                };
                let names: std::collections::HashSet<String> =
                    ours.iter().filter_map(name).collect();
                ours.extend(
                    theirs
                        .iter()
                        .filter(|e| name(e).is_some_and(|n| !names.contains(&n)))
                        .cloned(),
                );
            }
            _ => {
                user.insert("Env".into(), Value::Array(theirs.clone()));
            }
        }
    }
    if empty(user.get("Entrypoint")) {
        fill(user, "Cmd");
        // An explicitly empty ENTRYPOINT (`[]`) stays: only a missing one is inherited.
        if matches!(user.get("Entrypoint"), None | Some(Value::Null)) {
            if let Some(v) = container.get("Entrypoint") {
                user.insert("Entrypoint".into(), v.clone());
            }
        }
    }
    if let Some(Value::Object(theirs)) = container.get("Healthcheck") {
        match user.get_mut("Healthcheck") {
            Some(Value::Object(ours)) => {
                for key in [
                    "Test",
                    "Interval",
                    "Timeout",
                    "StartPeriod",
                    "StartInterval",
                    "Retries",
                ] {
                    if empty(ours.get(key)) {
                        if let Some(v) = theirs.get(key) {
                            ours.insert(key.to_string(), v.clone());
                        }
                    }
                }
            }
            _ => {
                user.insert("Healthcheck".into(), Value::Object(theirs.clone()));
            }
        }
    }
}

/// `POST /commit?container=&repo=&tag=&comment=&author=&changes=`: a new image from a
/// container's changes; the body, when present, is the config to record.
pub async fn commit(ctx: &Ctx, req: Request<Incoming>) -> Result<Response<Body>> {
    let q = &ctx.query;
    let key = q
        .get("container")
        .filter(|c| !c.is_empty())
        .ok_or_else(|| Error::InvalidParameter("no container given to commit".into()))?;
    let record = ctx.daemon.containers.get(key)?;
    let config: serde_json::Value = super::read_json(req).await?;
    let reference = match (q.get("repo").filter(|r| !r.is_empty()), q.get("tag")) {
        (Some(r), Some(t)) if !t.is_empty() => Some(format!("{r}:{t}")),
        (Some(r), _) => Some(r.to_string()),
        (None, _) => None,
    };
    // As dockerd: the body's config when it has one, else the container's; the changes go on
    // top, then the container's config fills in what that left unset.
    let container_config = match serde_json::to_value(&record.config)
        .map_err(|e| Error::json(format!("encode the config of {}", record.id), e))?
    {
        serde_json::Value::Object(m) => m,
        _ => serde_json::Map::new(),
    };
    let mut config = match config {
        serde_json::Value::Object(m) if !m.is_empty() => m,
        _ => container_config.clone(),
    };
    apply_changes(&mut config, &q.get_all("changes"))?;
    merge_commit_config(&mut config, &container_config);
    let opts = berth_image::CommitOptions {
        reference,
        author: q
            .get("author")
            .filter(|a| !a.is_empty())
            .map(str::to_string),
        message: q
            .get("comment")
            .filter(|c| !c.is_empty())
            .map(str::to_string),
        config: Some(config),
        created_by: None,
    };
    // As dockerd, a running container is paused while its changes are read (`pause`
    // defaults to true), so the layer is a consistent snapshot.
    let pause = q.get("pause").is_none_or(|_| q.bool("pause"));
    let cid = record.id.clone();
    let paused_here = pause
        && record.state.running
        && !record.state.paused
        && ctx.daemon.set_paused(&cid, true).await.is_ok();
    let result = blocking(&ctx.daemon, move |d| {
        let id = d.images.commit(&record.id, &opts)?;
        d.container_event("commit", &record, &[]);
        Ok(id)
    })
    .await;
    if paused_here {
        if let Err(err) = ctx.daemon.set_paused(&cid, false).await {
            tracing::warn!(id = %cid, %err, "cannot unpause the container after commit");
        }
    }
    let id = result?;
    Ok(json_response(
        StatusCode::CREATED,
        &json!({"Id": id.to_string()}),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_config_is_filled_from_the_containers() {
        let container = json!({
            "User": "1000",
            "Env": ["PATH=/bin", "A=container"],
            "Cmd": ["sh"],
            "Entrypoint": ["/init"],
            "Labels": {"a": "container", "b": "container"},
            "ExposedPorts": {"80/tcp": {}},
            "Volumes": {"/data": {}},
            "WorkingDir": "/srv",
            "StopSignal": "SIGQUIT",
            "Healthcheck": {"Test": ["CMD", "true"], "Interval": 5, "Retries": 3},
        });
        let serde_json::Value::Object(container) = container else {
            unreachable!()
        };
        let mut user = json!({
            "Env": ["A=user"],
            "Labels": {"a": "user"},
            "ExposedPorts": {"53/udp": {}},
            "WorkingDir": "",
            "Healthcheck": {"Retries": 1},
        })
        .as_object()
        .cloned()
        .unwrap_or_default();
        merge_commit_config(&mut user, &container);
        assert_eq!(
            serde_json::Value::Object(user),
            json!({
                "User": "1000",
                "Env": ["A=user", "PATH=/bin"],
                "Cmd": ["sh"],
                "Entrypoint": ["/init"],
                "Labels": {"a": "user", "b": "container"},
                "ExposedPorts": {"53/udp": {}, "80/tcp": {}},
                "Volumes": {"/data": {}},
                "WorkingDir": "/srv",
                "StopSignal": "SIGQUIT",
                "Healthcheck": {"Test": ["CMD", "true"], "Interval": 5, "Retries": 1},
            })
        );
        // An ENTRYPOINT of the commit's own keeps the container's CMD out; `[]` is its own.
        for (entrypoint, cmd) in [(json!(["/e"]), json!(null)), (json!([]), json!(["sh"]))] {
            let mut user = serde_json::Map::new();
            user.insert("Entrypoint".into(), entrypoint.clone());
            user.insert("Cmd".into(), json!(null));
            merge_commit_config(&mut user, &container);
            assert_eq!(user["Entrypoint"], entrypoint);
            assert_eq!(user["Cmd"], cmd);
        }
    }

    #[test]
    fn reference_filter() {
        assert!(reference_matches("busybox", "busybox:latest"));
        assert!(reference_matches("busybox:latest", "busybox:latest"));
        assert!(reference_matches("busy*", "busybox:1"));
        assert!(!reference_matches("busy*", "library/busybox:1"));
        assert!(reference_matches("*/app:*", "me/app:1"));
        assert!(!reference_matches("redis", "busybox:latest"));
    }
}
