//! Volume routes: list, create, inspect, remove, prune.

use berth_volume::CreateOptions;
use bollard_stubs::models::VolumeCreateRequest;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};

use super::{empty, json_response, read_json, Body, Ctx};
use crate::apiversion::ApiVersion;
use crate::error::{Error, Result};

/// `GET /volumes?filters=`.
pub fn list(ctx: &Ctx) -> Result<Response<Body>> {
    let v = ctx.daemon.list_volumes(&ctx.query.filters()?)?;
    Ok(json_response(StatusCode::OK, &v))
}

/// `POST /volumes/create`.
pub async fn create(ctx: &Ctx, req: Request<Incoming>) -> Result<Response<Body>> {
    let body: VolumeCreateRequest = read_json(req).await?;
    let v = ctx.daemon.create_volume(CreateOptions {
        name: body.name,
        driver: body.driver,
        driver_opts: body.driver_opts.unwrap_or_default().into_iter().collect(),
        labels: body.labels.map(|l| l.into_iter().collect()),
    })?;
    Ok(json_response(StatusCode::CREATED, &v))
}

/// `GET /volumes/{name}`.
pub fn inspect(ctx: &Ctx, name: &str) -> Result<Response<Body>> {
    Ok(json_response(
        StatusCode::OK,
        &ctx.daemon.inspect_volume(name)?,
    ))
}

/// `DELETE /volumes/{name}?force=`.
pub async fn remove(ctx: &Ctx, name: &str) -> Result<Response<Body>> {
    let (d, name, force) = (
        ctx.daemon.clone(),
        name.to_string(),
        ctx.query.bool("force"),
    );
    // Deleting a volume's content is blocking filesystem work.
    tokio::task::spawn_blocking(move || d.remove_volume(&name, force))
        .await
        .map_err(|e| Error::Internal(format!("remove volume: {e}")))??;
    Ok(empty(StatusCode::NO_CONTENT))
}

/// `POST /volumes/prune?filters=`. Before API 1.42 prune removed named volumes too.
pub async fn prune(ctx: &Ctx) -> Result<Response<Body>> {
    let all_by_default = ctx.version < ApiVersion(1, 42);
    let (d, filters) = (ctx.daemon.clone(), ctx.query.filters()?);
    let v = tokio::task::spawn_blocking(move || d.prune_volumes(&filters, all_by_default))
        .await
        .map_err(|e| Error::Internal(format!("prune volumes: {e}")))??;
    Ok(json_response(StatusCode::OK, &v))
}
