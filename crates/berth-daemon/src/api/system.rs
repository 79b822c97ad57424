//! System routes: `/_ping`, `/version`, `/info`, `/events`, `/system/df`.

use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE, PRAGMA};
use hyper::{Method, Response, StatusCode};
use serde_json::json;

use super::{channel_body, full, json_response, Body, Ctx};
use crate::apiversion;
use crate::error::{Error, Result};
use crate::time;

/// `GET|HEAD /_ping`.
pub fn ping(method: &Method) -> Response<Body> {
    let body = if method == Method::HEAD { "" } else { "OK" };
    let mut resp = Response::new(full(body));
    let h = resp.headers_mut();
    h.insert(
        "API-Version",
        HeaderValue::from_static(super::max_version_str()),
    );
    h.insert("OSType", HeaderValue::from_static("linux"));
    h.insert("Docker-Experimental", HeaderValue::from_static("false"));
    h.insert("Builder-Version", HeaderValue::from_static("1"));
    h.insert("Swarm", HeaderValue::from_static("inactive"));
    h.insert(
        CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store, must-revalidate"),
    );
    h.insert(PRAGMA, HeaderValue::from_static("no-cache"));
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// `GET /version`.
pub fn version(ctx: &Ctx) -> Result<Response<Body>> {
    let host = &ctx.daemon.host;
    let min = apiversion::MIN.to_string();
    let max = apiversion::MAX.to_string();
    let go_version = format!("n/a (rust {})", rustc_version());
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "Platform": {"Name": "Berth Engine"},
            "Components": [{
                "Name": "Engine",
                "Version": VERSION,
                "Details": {
                    "ApiVersion": max,
                    "MinAPIVersion": min,
                    "GitCommit": option_env!("BERTH_GIT_COMMIT").unwrap_or("unknown"),
                    "GoVersion": go_version,
                    "Os": "linux",
                    "Arch": host.arch,
                    "KernelVersion": host.kernel_version,
                    "BuildTime": option_env!("BERTH_BUILD_TIME").unwrap_or("unknown"),
                    "Experimental": "false",
                },
            }],
            "Version": VERSION,
            "ApiVersion": max,
            "MinAPIVersion": min,
            "GitCommit": option_env!("BERTH_GIT_COMMIT").unwrap_or("unknown"),
            "GoVersion": go_version,
            "Os": "linux",
            "Arch": host.arch,
            "KernelVersion": host.kernel_version,
            "BuildTime": option_env!("BERTH_BUILD_TIME").unwrap_or("unknown"),
        }),
    ))
}

fn rustc_version() -> &'static str {
    option_env!("BERTH_RUSTC_VERSION").unwrap_or("stable")
}

/// `GET /info`.
pub fn info(ctx: &Ctx) -> Result<Response<Body>> {
    let d = &ctx.daemon;
    let records = d.containers.list();
    let running = records
        .iter()
        .filter(|r| r.state.running && !r.state.paused)
        .count();
    let paused = records.iter().filter(|r| r.state.paused).count();
    let host = &d.host;
    let image_count = d.images.list().map_or(0, |l| l.len());
    let cgroup_driver = "cgroupfs";
    let mirrors = &d.config.registry_mirrors;
    let mut index_configs = serde_json::Map::new();
    index_configs.insert(
        "docker.io".into(),
        json!({"Name": "docker.io", "Mirrors": mirrors, "Secure": true, "Official": true}),
    );
    for reg in &d.config.insecure_registries {
        if !reg.contains('/') {
            index_configs.insert(
                reg.clone(),
                json!({"Name": reg, "Mirrors": [], "Secure": false, "Official": false}),
            );
        }
    }
    // dockerd always treats loopback registries as insecure.
    let mut insecure_cidrs: Vec<String> = vec!["::1/128".into(), "127.0.0.0/8".into()];
    insecure_cidrs.extend(
        d.config
            .insecure_registries
            .iter()
            .filter(|r| r.contains('/'))
            .cloned(),
    );
    let mut warnings: Vec<String> = Vec::new();
    if d.config
        .hosts
        .iter()
        .any(|h| matches!(h, crate::config::Host::Tcp(_)))
    {
        warnings.push(
            "WARNING: API is accessible on http://... without encryption. Access to the remote API is equivalent to root access on the host.".into(),
        );
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "ID": d.engine_id,
            "Containers": records.len(),
            "ContainersRunning": running,
            "ContainersPaused": paused,
            "ContainersStopped": records.len() - running - paused,
            "Images": image_count,
            "Driver": "overlay2",
            "DriverStatus": [["Backing Filesystem", "extfs"], ["Supports d_type", "true"]],
            "Plugins": {
                "Volume": ["local"],
                "Network": ["bridge", "host", "none"],
                "Authorization": null,
                "Log": ["json-file"],
            },
            "MemoryLimit": true,
            "SwapLimit": true,
            "CpuCfsPeriod": true,
            "CpuCfsQuota": true,
            "CPUShares": true,
            "CPUSet": true,
            "PidsLimit": true,
            "IPv4Forwarding": true,
            "Debug": d.config.log_level == "debug",
            "NFd": open_fds(),
            "OomKillDisable": host.cgroup_version == "1",
            "NGoroutines": 0,
            "SystemTime": time::now_rfc3339(),
            "LoggingDriver": "json-file",
            "CgroupDriver": cgroup_driver,
            "CgroupVersion": host.cgroup_version,
            "NEventsListener": 0,
            "KernelVersion": host.kernel_version,
            "OperatingSystem": host.operating_system,
            "OSVersion": host.os_version,
            "OSType": "linux",
            "Architecture": host.machine,
            "IndexServerAddress": "https://index.docker.io/v1/",
            "RegistryConfig": {
                "InsecureRegistryCIDRs": insecure_cidrs,
                "IndexConfigs": index_configs,
                "Mirrors": mirrors,
            },
            "NCPU": host.ncpu,
            "MemTotal": host.mem_total,
            "GenericResources": null,
            "DockerRootDir": d.config.data_root,
            "HttpProxy": std::env::var("HTTP_PROXY").unwrap_or_default(),
            "HttpsProxy": std::env::var("HTTPS_PROXY").unwrap_or_default(),
            "NoProxy": std::env::var("NO_PROXY").unwrap_or_default(),
            "Name": host.hostname,
            "Labels": [],
            "ExperimentalBuild": false,
            "ServerVersion": VERSION,
            "Runtimes": crate::daemon::Daemon::RUNTIMES
                .iter()
                .map(|r| (r.to_string(), json!({"path": "berth", "runtimeArgs": ["runtime"]})))
                .collect::<serde_json::Map<String, serde_json::Value>>(),
            "DefaultRuntime": crate::daemon::Daemon::RUNTIMES[0],
            "Swarm": {
                "NodeID": "",
                "NodeAddr": "",
                "LocalNodeState": "inactive",
                "ControlAvailable": false,
                "Error": "",
                "RemoteManagers": null,
            },
            "LiveRestoreEnabled": true,
            "Isolation": "",
            "InitBinary": "",
            "ContainerdCommit": {"ID": ""},
            "RuncCommit": {"ID": ""},
            "InitCommit": {"ID": ""},
            "SecurityOptions": ["name=seccomp,profile=builtin"],
            "CDISpecDirs": [],
            "Warnings": warnings,
        }),
    ))
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// `GET /system/df`.
pub async fn df(ctx: &Ctx) -> Result<Response<Body>> {
    let d = ctx.daemon.clone();
    let (usage, containers, volumes) = tokio::task::spawn_blocking(move || {
        let usage = d.images.disk_usage()?;
        let containers = d.list_containers(&crate::daemon::ListOptions {
            all: true,
            size: true,
            ..Default::default()
        })?;
        Ok::<_, Error>((usage, containers, d.volumes_disk_usage()))
    })
    .await
    .map_err(|e| Error::Internal(format!("disk usage: {e}")))??;
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "LayersSize": usage.layers_size,
            "Images": usage.images,
            "Containers": containers,
            "Volumes": volumes,
            "BuildCache": [],
        }),
    ))
}

/// `GET /events`: replays recorded events from `since`, then streams live ones until `until`
/// (or until the client goes away).
pub fn events(ctx: &Ctx) -> Result<Response<Body>> {
    let filters = ctx.query.filters()?;
    filters.validate(&[
        "type",
        "event",
        "container",
        "image",
        "label",
        "daemon",
        "scope",
    ])?;
    let parse = |key: &str| -> Result<Option<i64>> {
        match ctx.query.get(key).filter(|v| !v.is_empty()) {
            None => Ok(None),
            Some(v) => time::parse_timestamp(v)
                .map(Some)
                .ok_or_else(|| Error::InvalidParameter(format!("invalid value for {key}: {v:?}"))),
        }
    };
    let since = parse("since")?;
    let until = parse("until")?;
    let (past, mut rx) = ctx.daemon.events.subscribe();
    let (tx, body) = channel_body();
    tokio::spawn(async move {
        let encode = |e: &crate::events::Event| {
            let mut line = serde_json::to_vec(e).unwrap_or_default();
            line.push(b'\n');
            bytes::Bytes::from(line)
        };
        let in_window = |t: i64| since.is_none_or(|s| t >= s) && until.is_none_or(|u| t <= u);
        if since.is_some() {
            for e in past
                .iter()
                .filter(|e| in_window(e.time_nano) && e.matches(&filters))
            {
                if tx.send(encode(e)).await.is_err() {
                    return;
                }
            }
        }
        let deadline = until.map(|u| {
            let wait = u.saturating_sub(time::now_nanos()).max(0);
            tokio::time::Instant::now()
                + std::time::Duration::from_nanos(u64::try_from(wait).unwrap_or(0))
        });
        loop {
            let next = async {
                match deadline {
                    Some(d) => tokio::time::timeout_at(d, rx.recv()).await.ok(),
                    None => Some(rx.recv().await),
                }
            };
            tokio::select! {
                got = next => match got {
                    None => return,
                    Some(Ok(e)) => {
                        if in_window(e.time_nano) && e.matches(&filters)
                            && tx.send(encode(&e)).await.is_err()
                        {
                            return;
                        }
                    }
                    Some(Err(tokio::sync::broadcast::error::RecvError::Lagged(n))) => {
                        tracing::warn!(missed = n, "event subscriber lagged");
                    }
                    Some(Err(tokio::sync::broadcast::error::RecvError::Closed)) => return,
                },
                () = tx.closed() => return,
            }
        }
    });
    let mut resp = Response::new(body);
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(resp)
}
