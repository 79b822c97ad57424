//! The daemon's state and its container operations, independent of HTTP: create, list with
//! Docker's filters, inspect, rename, remove, prune. The API layer only translates requests
//! into these calls and their results into Docker's JSON.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use bollard_stubs::models::{
    ContainerConfig, ContainerCreateBody, HostConfig, HostConfigCgroupnsModeEnum,
    RestartPolicyNameEnum,
};
use serde_json::{json, Value};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::events::Events;
use crate::filters::Filters;
use crate::host::HostInfo;
use crate::store::{ContainerRecord, ContainerStore, State, Status};
use crate::{names, time};

/// How long after a removal answered its runtime state and run directory are deleted.
const DEFERRED_DELETE_DELAY: std::time::Duration = std::time::Duration::from_millis(3);

/// The daemon's shared state.
pub struct Daemon {
    /// Effective configuration.
    pub config: Config,
    /// Container records.
    pub containers: ContainerStore,
    /// Event hub.
    pub events: Events,
    /// Host facts.
    pub host: HostInfo,
    /// Persistent engine ID (`/info`'s `ID`).
    pub engine_id: String,
    /// The image store (`<data-root>/image`).
    pub images: berth_image::Store,
    /// The OCI runtime (`<exec-root>/runtime`).
    pub runtime: berth_runtime::Runtime,
    /// Exec instances.
    pub execs: crate::exec::ExecStore,
    /// Container networking.
    pub network: crate::network::Networking,
    /// Volumes and the containers' mount points.
    pub volumes: crate::volumes::Volumes,
    /// The registry client, built on first use: loading the system's root certificates
    /// costs memory an idle daemon does not need.
    registry: std::sync::Mutex<Option<Arc<berth_distribution::Client>>>,
    /// Attach sessions waiting for a container's next start, by container id: the start
    /// path connects each to the monitor's attach socket before the process runs.
    pub(crate) pending_attach: std::sync::Mutex<HashMap<String, Vec<PendingAttach>>>,
    /// Holds on containers' mounted root filesystems besides their runs (`docker cp`, export).
    pub(crate) rootfs_users: crate::rootfs_users::RootfsUsers,
}

/// Receives a connection to the monitor's attach socket made before the container starts.
pub(crate) type PendingAttach = tokio::sync::oneshot::Sender<std::os::unix::net::UnixStream>;

/// Options of `GET /containers/json`.
#[derive(Debug, Default)]
pub struct ListOptions {
    /// Include stopped containers.
    pub all: bool,
    /// Only the N most recently created (implies `all`).
    pub limit: Option<usize>,
    /// Report sizes.
    pub size: bool,
    /// Docker filters.
    pub filters: Filters,
}

const LIST_FILTERS: &[&str] = &[
    "id", "name", "label", "status", "ancestor", "exited", "before", "since", "health",
];
const STATUSES: &[&str] = &[
    "created",
    "restarting",
    "running",
    "removing",
    "paused",
    "exited",
    "dead",
];

impl Daemon {
    /// Opens the daemon's state under the configured roots.
    pub fn open(config: Config) -> Result<Self> {
        for dir in [&config.data_root, &config.exec_root] {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
        }
        let containers = ContainerStore::open(&config.data_root.join("containers"))?;
        let engine_id = engine_id(&config.data_root)?;
        let images = berth_image::Store::open(config.data_root.join("image"))?;
        let runtime = berth_runtime::Runtime::new(config.exec_root.join("runtime"));
        let network = crate::network::Networking::open(&config)?;
        let volumes =
            crate::volumes::Volumes::open(&config.data_root, &config.data_root.join("containers"))?;
        let daemon = Daemon {
            network,
            volumes,
            registry: Default::default(),
            pending_attach: Default::default(),
            rootfs_users: Default::default(),
            runtime,
            execs: Default::default(),
            config,
            containers,
            events: Events::new(),
            host: HostInfo::detect(),
            engine_id,
            images,
        };
        Ok(daemon)
    }

    /// The registry client (created on first use).
    pub fn registry(&self) -> Result<Arc<berth_distribution::Client>> {
        let mut slot = crate::events::lock(&self.registry);
        if let Some(c) = slot.as_ref() {
            return Ok(Arc::clone(c));
        }
        let client = berth_distribution::Client::new(berth_distribution::RegistryConfig {
            insecure_registries: self.config.insecure_registries.clone(),
            mirrors: self.config.registry_mirrors.clone(),
            ..Default::default()
        })
        .map_err(|e| Error::Config(format!("registry client: {e}")))?;
        let client = Arc::new(client);
        *slot = Some(Arc::clone(&client));
        Ok(client)
    }

    /// `POST /containers/create`: validates the request, resolves the image, merges the image
    /// config, reserves the name and persists the record. Returns the new ID.
    /// The OCI runtimes a container may name (`HostConfig.Runtime`, `/info`'s `Runtimes`): all
    /// are Berth's built-in libcontainer runtime; `runc` is accepted because Docker clients and
    /// compose files name the default runtime so, and Berth's runtime is runc-compatible.
    pub const RUNTIMES: [&'static str; 2] = ["runc", "berth"];

    pub fn create_container(
        &self,
        name: Option<&str>,
        body: ContainerCreateBody,
    ) -> Result<String> {
        if let Some(n) = name {
            if !names::valid_name(n) {
                return Err(Error::InvalidParameter(format!(
                    "Invalid container name ({n}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
                )));
            }
        }
        let mut host_config = body.host_config.clone().unwrap_or_default();
        validate_host_config(&host_config)?;
        host_config.runtime = Some(runtime_name(host_config.runtime.as_deref())?);
        if matches!(
            host_config.cgroupns_mode,
            None | Some(HostConfigCgroupnsModeEnum::EMPTY)
        ) {
            // dockerd's default-cgroupns-mode: the host's namespace on cgroup v1, a private
            // one on v2 (where the container then sees its own cgroup as the root).
            host_config.cgroupns_mode = Some(if self.host.cgroup_version == "2" {
                HostConfigCgroupnsModeEnum::PRIVATE
            } else {
                HostConfigCgroupnsModeEnum::HOST
            });
        }
        crate::health::validate(body.healthcheck.as_ref())?;
        let image_ref = body
            .image
            .clone()
            .filter(|i| !i.is_empty())
            .ok_or_else(|| Error::InvalidParameter("no image specified".into()))?;
        let image_id = self.images.image_id(&image_ref)?;
        let image_config: ContainerConfig = self
            .images
            .image_config(image_id.as_str())?
            .get("config")
            .cloned()
            .map(serde_json::from_value)
            .transpose()
            .map_err(|e| Error::json(format!("image config of {image_id}"), e))?
            .unwrap_or_default();
        let config = merge_config(&image_config, &body);
        let mut argv: Vec<String> = config.entrypoint.clone().unwrap_or_default();
        argv.extend(config.cmd.clone().unwrap_or_default());
        if argv.is_empty() {
            return Err(Error::InvalidParameter("no command specified".into()));
        }
        if host_config
            .network_mode
            .as_deref()
            .is_none_or(str::is_empty)
        {
            host_config.network_mode = Some("bridge".into());
        }
        crate::logdriver::normalize(&mut host_config)?;
        let mount_points = self.create_mount_points(&config, &host_config)?;
        let id = names::random_id();
        let name = match name {
            Some(n) => format!("/{}", n.trim_start_matches('/')),
            None => format!("/{}", self.containers.unused_name()),
        };
        let dir = self.containers.dir(&id);
        // The writable layer exists from creation on, as with Docker: it is what marks the
        // image as in use. It is mounted when the container starts.
        // A `--rm` container's records are not flushed (see `store::Durability::Volatile`).
        let durable = host_config.auto_remove != Some(true);
        self.images
            .prepare_rootfs_with(image_id.as_str(), &id, durable)
            .inspect_err(|_| self.discard_mount_points(&mount_points))?;
        let record = ContainerRecord {
            id: id.clone(),
            created: time::now_rfc3339(),
            path: argv[0].clone(),
            args: argv[1..].to_vec(),
            config,
            host_config,
            networking_config: body.networking_config,
            state: State::default(),
            image: image_id.to_string(),
            name,
            driver: "overlay2".into(),
            log_path: dir.join(format!("{id}-json.log")).display().to_string(),
            restart_count: 0,
            has_been_manually_stopped: false,
        };
        if let Err(err) = self.containers.create(record.clone()) {
            self.remove_rootfs(&id);
            self.discard_mount_points(&mount_points);
            return Err(err);
        }
        if let Err(err) = self.volumes.set_mount_points(&id, &dir, mount_points) {
            let _ = self.containers.remove(&id);
            self.remove_rootfs(&id);
            return Err(err);
        }
        self.container_event("create", &record, &[]);
        Ok(id)
    }

    /// Publishes a container event with the record's name, image and labels.
    pub fn container_event(&self, action: &str, r: &ContainerRecord, extra: &[(&str, String)]) {
        let image = r.config.image.as_deref().unwrap_or(&r.image);
        self.events.container(
            action,
            &r.id,
            &r.name,
            image,
            r.config.labels.as_ref(),
            extra,
        );
    }

    /// `GET /containers/json`.
    pub fn list_containers(&self, opts: &ListOptions) -> Result<Vec<Value>> {
        let f = &opts.filters;
        f.validate(LIST_FILTERS)?;
        for s in f.get("status") {
            if !STATUSES.contains(&s.as_str()) {
                return Err(Error::InvalidParameter(format!(
                    "invalid filter 'status={s}'"
                )));
            }
        }
        for h in f.get("health") {
            if !["starting", "healthy", "unhealthy", "none"].contains(&h.as_str()) {
                return Err(Error::InvalidParameter(format!(
                    "Unrecognised filter value for health: {h}"
                )));
            }
        }
        let exited: Vec<i64> = f
            .get("exited")
            .iter()
            .map(|e| {
                e.parse()
                    .map_err(|_| Error::InvalidParameter(format!("invalid filter 'exited={e}'")))
            })
            .collect::<Result<_>>()?;
        let names_re: Vec<regex::Regex> = f
            .get("name")
            .iter()
            .map(|n| {
                regex::Regex::new(n)
                    .map_err(|e| Error::InvalidParameter(format!("invalid filter 'name={n}': {e}")))
            })
            .collect::<Result<_>>()?;
        let created_of = |key: &str| -> Result<i64> {
            let r = self.containers.get(key)?;
            Ok(time::parse_rfc3339_nanos(&r.created).unwrap_or(0))
        };
        let before = f.get("before").first().map(|k| created_of(k)).transpose()?;
        let since = f.get("since").first().map(|k| created_of(k)).transpose()?;
        let all = opts.all
            || opts.limit.is_some_and(|l| l > 0)
            || !f.get("status").is_empty()
            || !exited.is_empty();

        let mut records = self.containers.list();
        records.sort_by_key(|r| std::cmp::Reverse(time::parse_rfc3339_nanos(&r.created)));
        let now = time::now_nanos();
        let mut out = Vec::new();
        for r in records {
            let created = time::parse_rfc3339_nanos(&r.created).unwrap_or(0);
            let status = r.state.status.as_str();
            let labels = r.config.labels.clone().unwrap_or_default();
            let keep = (all || r.state.running)
                && f.matches_any("id", |id| r.id.starts_with(id))
                && (names_re.is_empty() || names_re.iter().any(|re| re.is_match(&r.name)))
                && f.matches_any("status", |s| s == status)
                && f.matches_all("label", |l| match l.split_once('=') {
                    Some((k, v)) => labels.get(k).is_some_and(|x| x == v),
                    None => labels.contains_key(l),
                })
                && f.matches_any("ancestor", |a| ancestor_matches(&r, a))
                && (exited.is_empty()
                    || (r.state.status == Status::Exited && exited.contains(&r.state.exit_code)))
                && before.is_none_or(|b| created < b)
                && since.is_none_or(|s| created > s)
                && f.matches_any("health", |h| {
                    h == crate::health::filter_status(r.state.health.as_ref())
                });
            if !keep {
                continue;
            }
            let mut summary = json!({
                "Id": r.id,
                "Names": [r.name],
                "Image": r.config.image.clone().unwrap_or_default(),
                "ImageID": r.image,
                "Command": command_line(&r),
                "Created": created / 1_000_000_000,
                "Ports": [],
                "Labels": labels,
                "State": status,
                "Status": status_text(&r.state, now),
                "HostConfig": {"NetworkMode": r.host_config.network_mode.clone().unwrap_or_default()},
                "NetworkSettings": {"Networks": {}},
                "Mounts": self.mounts_json(&r.id),
            });
            (summary["Ports"], summary["NetworkSettings"]) = self.network_summary(&r);
            if opts.size {
                summary["SizeRw"] = json!(self.size_rw(&r.id));
            }
            out.push(summary);
            if opts.limit.is_some_and(|l| l > 0 && out.len() >= l) {
                break;
            }
        }
        Ok(out)
    }

    /// `GET /containers/{id}/json`.
    pub fn inspect_container(&self, key: &str, size: bool) -> Result<Value> {
        let r = self.containers.get(key)?;
        let s = &r.state;
        let mut v = json!({
            "Id": r.id,
            "Created": r.created,
            "Path": r.path,
            "Args": r.args,
            "State": {
                "Status": s.status.as_str(),
                "Running": s.running,
                "Paused": s.paused,
                "Restarting": s.restarting,
                "OOMKilled": s.oom_killed,
                "Dead": s.dead,
                "Pid": s.pid,
                "ExitCode": s.exit_code,
                "Error": s.error,
                "StartedAt": s.started_at,
                "FinishedAt": s.finished_at,
            },
            "Image": r.image,
            "ResolvConfPath": "",
            "HostnamePath": "",
            "HostsPath": "",
            "LogPath": r.log_path,
            "Name": r.name,
            "RestartCount": r.restart_count,
            "Driver": r.driver,
            "Platform": "linux",
            "MountLabel": "",
            "ProcessLabel": "",
            "AppArmorProfile": "",
            "ExecIDs": null,
            "HostConfig": r.host_config,
            "GraphDriver": {"Data": null, "Name": r.driver},
            "Mounts": self.mounts_json(&r.id),
            "Config": r.config,
            "NetworkSettings": {
                "Bridge": "",
                "SandboxID": "",
                "SandboxKey": "",
                "Ports": {},
                "Networks": {},
            },
        });
        v["NetworkSettings"] = self.network_settings(&r);
        if let Some(h) = &s.health {
            v["State"]["Health"] = json!(h);
        }
        if size {
            v["SizeRw"] = json!(self.size_rw(&r.id));
        }
        Ok(v)
    }

    /// `POST /containers/{id}/rename`.
    pub fn rename_container(&self, key: &str, new_name: &str) -> Result<()> {
        let (record, old) = self.containers.rename(key, new_name)?;
        self.container_event("rename", &record, &[("oldName", old)]);
        Ok(())
    }

    /// `DELETE /containers/{id}`: a running container is refused unless `force`, which kills
    /// its process first.
    pub async fn remove_container(&self, key: &str, force: bool) -> Result<()> {
        let record = self.containers.get(key)?;
        if record.state.restarting && !force {
            return Err(Error::Conflict(format!(
                "cannot remove container \"{}\": container is restarting: stop the container before removing or force remove",
                record.name
            )));
        }
        if force && (record.state.running || record.state.restarting) {
            // Neither a scheduled restart nor the exit of the kill below restarts it. (An
            // exited container has neither: `run --rm` skips this record write.)
            self.mark_manually_stopped(&record.id);
        }
        if record.state.running {
            if !force {
                let verb = if record.state.paused {
                    "paused"
                } else {
                    "running"
                };
                return Err(Error::Conflict(format!(
                    "cannot remove container \"{}\": container is {verb}: stop the container before removing or force remove",
                    record.name
                )));
            }
            if self.runtime.exists(&record.id) {
                let (_, mut rx) = self.events.subscribe();
                let killed = self
                    .signal(&record, nix::sys::signal::Signal::SIGKILL, true)
                    .await;
                if killed.is_ok() {
                    self.container_event("kill", &record, &[("signal", "9".into())]);
                }
                // A kill that fails because the container is exiting on its own (its runtime
                // state or cgroup going away meanwhile) still ends in a recorded exit.
                let timeout = std::time::Duration::from_secs(if killed.is_ok() { 30 } else { 5 });
                if !self.wait_exit(&record.id, &mut rx, Some(timeout)).await {
                    killed?;
                    return Err(Error::Conflict(format!(
                        "could not kill running container {}, cannot remove",
                        record.id
                    )));
                }
            } else {
                self.kill_and_wait(&record).await?;
            }
        }
        let record = self.containers.remove(&record.id)?;
        self.remove_rootfs(&record.id);
        self.drop_mounts(&record.id, record.host_config.auto_remove == Some(true));
        self.network_teardown(&record.id);
        for exec_id in self.execs.forget_container(&record.id) {
            let _ = std::fs::remove_dir_all(self.exec_paths(&exec_id).dir);
        }
        self.container_event("destroy", &record, &[]);
        // What no client can see goes after the answer: the runtime state (a `--rm`
        // container's cgroup and state directory, see `record_exit`) and the run's files,
        // under an ID that is never used again. A daemon that dies first leaves them to its
        // successor's `remove_orphaned_run_state`.
        let runtime = self.runtime.clone();
        let run_dir = self.run_paths(&record.id).dir;
        let id = record.id;
        tokio::spawn(async move {
            // A little later still, so that the deletion (a mount-table read, a dozen rmdirs
            // and unlinks) does not compete for the CPU with the client that waited for this
            // removal and is exiting: `run --rm` ~1 ms faster on 2 vCPUs.
            tokio::time::sleep(DEFERRED_DELETE_DELAY).await;
            let _ = tokio::task::spawn_blocking(move || {
                if runtime.exists(&id) {
                    if let Err(err) = runtime.delete(&id, true) {
                        tracing::warn!(%id, %err, "cannot delete runtime state");
                    }
                }
                if let Err(err) = std::fs::remove_dir_all(&run_dir) {
                    if err.kind() != std::io::ErrorKind::NotFound {
                        tracing::warn!(%id, %err, "cannot remove runtime directory");
                    }
                }
            })
            .await;
        });
        Ok(())
    }

    /// Deletes a container's writable layer; a container without one (never created through
    /// the image store) is fine.
    pub(crate) fn remove_rootfs(&self, id: &str) {
        match self.images.remove_rootfs(id) {
            Ok(()) | Err(berth_image::Error::ContainerNotFound(_)) => {}
            Err(err) => tracing::warn!(%id, %err, "cannot remove container rootfs"),
        }
    }

    /// Sends SIGKILL to the container's recorded init process, waits for it to go, and
    /// records the exit.
    async fn kill_and_wait(&self, record: &ContainerRecord) -> Result<()> {
        let pid = record.state.pid;
        if let Ok(p) = i32::try_from(pid) {
            if p > 0 {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(p),
                    nix::sys::signal::Signal::SIGKILL,
                );
                self.container_event("kill", record, &[("signal", "9".into())]);
                for _ in 0..100 {
                    if !pid_alive(pid) {
                        break;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                if pid_alive(pid) {
                    return Err(Error::Conflict(format!(
                        "could not kill running container {}, cannot remove",
                        record.id
                    )));
                }
            }
        }
        let (record, ()) = self.containers.update(&record.id, |r| {
            r.state.set_exited(137, "");
            Ok(())
        })?;
        self.container_event("die", &record, &[("exitCode", "137".into())]);
        Ok(())
    }

    /// Bytes in a container's writable layer plus its record and logs.
    pub fn size_rw(&self, id: &str) -> u64 {
        let layer = self.images.container_size_rw(id).unwrap_or(0);
        layer + dir_size(&self.containers.dir(id))
    }

    /// `POST /containers/prune`: removes every stopped container passing the `until` and
    /// `label` filters. Returns the removed IDs and the bytes reclaimed.
    pub fn prune_containers(&self, filters: &Filters) -> Result<(Vec<String>, u64)> {
        filters.validate(&["until", "label", "label!"])?;
        let until = filters
            .get("until")
            .first()
            .map(|u| {
                parse_until(u)
                    .ok_or_else(|| Error::InvalidParameter(format!("invalid filter 'until={u}'")))
            })
            .transpose()?;
        let mut deleted = Vec::new();
        let mut reclaimed = 0;
        for r in self.containers.list() {
            if r.state.running || r.state.status == Status::Removing {
                continue;
            }
            let labels = r.config.labels.clone().unwrap_or_default();
            let label_ok = |l: &str| match l.split_once('=') {
                Some((k, v)) => labels.get(k).is_some_and(|x| x == v),
                None => labels.contains_key(l),
            };
            let created = time::parse_rfc3339_nanos(&r.created).unwrap_or(0);
            if until.is_some_and(|u| created >= u)
                || !filters.matches_all("label", label_ok)
                || filters.get("label!").iter().any(|l| label_ok(l))
            {
                continue;
            }
            let size = self.size_rw(&r.id);
            match self.containers.remove(&r.id) {
                Ok(r) => {
                    self.remove_rootfs(&r.id);
                    self.drop_mounts(&r.id, false);
                    self.container_event("destroy", &r, &[]);
                    reclaimed += size;
                    deleted.push(r.id);
                }
                Err(err) => tracing::warn!(id = %r.id, %err, "prune: cannot remove container"),
            }
        }
        self.events.publish(crate::events::Event::new(
            "container",
            "prune",
            "",
            [("reclaimed".to_string(), reclaimed.to_string())].into(),
        ));
        Ok((deleted, reclaimed))
    }
}

/// Docker's `until` for prune: a timestamp or a duration before now (`10m`, `24h`).
fn parse_until(s: &str) -> Option<i64> {
    if let Some(t) = time::parse_timestamp(s) {
        return Some(t);
    }
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit())?);
    let n: i64 = num.parse().ok()?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return None,
    };
    Some(time::now_nanos() - secs * 1_000_000_000)
}

fn validate_host_config(hc: &HostConfig) -> Result<()> {
    if let Some(m) = hc.memory {
        if m < 0 {
            return Err(Error::InvalidParameter(
                "invalid memory limit: must be positive".into(),
            ));
        }
        if m > 0 && m < 6 * 1024 * 1024 {
            return Err(Error::InvalidParameter(
                "Minimum memory limit allowed is 6MB".into(),
            ));
        }
    }
    if let Some(rp) = &hc.restart_policy {
        let retries = rp.maximum_retry_count.unwrap_or(0);
        match rp.name {
            Some(RestartPolicyNameEnum::ON_FAILURE) if retries < 0 => {
                return Err(Error::InvalidParameter(
                    "invalid restart policy: maximum retry count can't be negative".into(),
                ))
            }
            Some(RestartPolicyNameEnum::ON_FAILURE) | None | Some(RestartPolicyNameEnum::EMPTY) => {}
            Some(other) if retries != 0 => {
                return Err(Error::InvalidParameter(format!(
                    "invalid restart policy: maximum retry count can only be used with 'on-failure' (got '{other}')"
                )))
            }
            Some(_) => {}
        }
    }
    if hc.auto_remove == Some(true) {
        if let Some(rp) = &hc.restart_policy {
            if !matches!(
                rp.name,
                None | Some(RestartPolicyNameEnum::EMPTY) | Some(RestartPolicyNameEnum::NO)
            ) {
                return Err(Error::InvalidParameter(
                    "can't create 'AutoRemove' container with restart policy".into(),
                ));
            }
        }
    }
    Ok(())
}

/// The image config overlaid with the request, as Docker merges them: request values win,
/// `Env` merges by variable name, `Labels` and `ExposedPorts`/`Volumes` are unions, and a
/// request `Entrypoint` drops the image's `Cmd`.
fn merge_config(image: &ContainerConfig, req: &ContainerCreateBody) -> ContainerConfig {
    let mut env: Vec<String> = image.env.clone().unwrap_or_default();
    for var in req.env.iter().flatten() {
        let key = var.split('=').next().unwrap_or(var);
        env.retain(|e| e.split('=').next() != Some(key));
        env.push(var.clone());
    }
    let entrypoint = req.entrypoint.clone().or_else(|| image.entrypoint.clone());
    let cmd = match (&req.cmd, &req.entrypoint) {
        (Some(c), _) => Some(c.clone()),
        (None, Some(_)) => None,
        (None, None) => image.cmd.clone(),
    };
    let union = |a: &Option<Vec<String>>, b: &Option<Vec<String>>| -> Option<Vec<String>> {
        let mut v: Vec<String> = a.clone().unwrap_or_default();
        for x in b.iter().flatten() {
            if !v.contains(x) {
                v.push(x.clone());
            }
        }
        (!v.is_empty()).then_some(v)
    };
    let mut labels = image.labels.clone().unwrap_or_default();
    labels.extend(req.labels.clone().unwrap_or_default());
    let non_empty = |s: &Option<String>| s.clone().filter(|s| !s.is_empty());
    ContainerConfig {
        hostname: non_empty(&req.hostname),
        domainname: req.domainname.clone(),
        user: non_empty(&req.user).or_else(|| image.user.clone()),
        attach_stdin: req.attach_stdin,
        attach_stdout: req.attach_stdout,
        attach_stderr: req.attach_stderr,
        exposed_ports: union(&image.exposed_ports, &req.exposed_ports),
        tty: Some(req.tty.unwrap_or(false)),
        open_stdin: Some(req.open_stdin.unwrap_or(false)),
        stdin_once: Some(req.stdin_once.unwrap_or(false)),
        env: Some(env),
        cmd,
        healthcheck: req
            .healthcheck
            .clone()
            .or_else(|| image.healthcheck.clone()),
        args_escaped: req.args_escaped,
        image: req.image.clone(),
        volumes: union(&image.volumes, &req.volumes),
        working_dir: non_empty(&req.working_dir).or_else(|| image.working_dir.clone()),
        entrypoint,
        network_disabled: req.network_disabled,
        on_build: image.on_build.clone(),
        labels: Some(labels),
        stop_signal: req
            .stop_signal
            .clone()
            .or_else(|| image.stop_signal.clone()),
        stop_timeout: req.stop_timeout,
        shell: req.shell.clone().or_else(|| image.shell.clone()),
    }
}

fn ancestor_matches(r: &ContainerRecord, ancestor: &str) -> bool {
    let image_ref = r.config.image.as_deref().unwrap_or("");
    let bare_id = r.image.trim_start_matches("sha256:");
    let with_latest = |s: &str| {
        if s.rsplit('/').next().is_some_and(|last| last.contains(':')) || s.contains('@') {
            s.to_string()
        } else {
            format!("{s}:latest")
        }
    };
    image_ref == ancestor
        || with_latest(image_ref) == with_latest(ancestor)
        || r.image == ancestor
        || (ancestor.len() >= 4 && bare_id.starts_with(ancestor.trim_start_matches("sha256:")))
}

/// The `Command` column: entrypoint and arguments joined by spaces.
fn command_line(r: &ContainerRecord) -> String {
    std::iter::once(r.path.as_str())
        .chain(r.args.iter().map(String::as_str))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Docker's human status: `Up 3 minutes`, `Exited (0) 2 hours ago`, `Created`, ...
pub fn status_text(s: &State, now_nanos: i64) -> String {
    let since = |t: &str| {
        let then = time::parse_rfc3339_nanos(t).unwrap_or(now_nanos);
        time::human_duration((now_nanos - then) / 1_000_000_000)
    };
    match s.status {
        Status::Running | Status::Paused if s.paused => {
            format!("Up {} (Paused)", since(&s.started_at))
        }
        Status::Running | Status::Paused => match &s.health {
            Some(h) if h.status == crate::health::STARTING => {
                format!("Up {} (health: starting)", since(&s.started_at))
            }
            Some(h) => format!("Up {} ({})", since(&s.started_at), h.status),
            None => format!("Up {}", since(&s.started_at)),
        },
        Status::Restarting => format!("Restarting ({}) {} ago", s.exit_code, since(&s.finished_at)),
        Status::Removing => "Removal In Progress".into(),
        Status::Dead => "Dead".into(),
        Status::Created => "Created".into(),
        Status::Exited if time::parse_rfc3339_nanos(&s.finished_at).is_none() => {
            format!("Exited ({})", s.exit_code)
        }
        Status::Exited => format!("Exited ({}) {} ago", s.exit_code, since(&s.finished_at)),
    }
}

/// Whether a process with this PID exists.
pub fn pid_alive(pid: i64) -> bool {
    match i32::try_from(pid) {
        Ok(p) if p > 0 => {
            // Signal 0 checks existence without delivering anything; a zombie still exists
            // but has exited, so its state letter in /proc/<pid>/stat is checked too.
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), None).is_ok()
                && !std::fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|stat| {
                    stat.rsplit_once(')')
                        .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
                })
        }
        _ => false,
    }
}

/// Disk usage of a directory tree in bytes (allocated blocks, not following symlinks).
pub fn dir_size(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    let mut total = meta.blocks() * 512;
    if meta.is_dir() {
        if let Ok(entries) = std::fs::read_dir(path) {
            total += entries.flatten().map(|e| dir_size(&e.path())).sum::<u64>();
        }
    }
    total
}

/// The engine ID, generated once and kept in `<data-root>/engine-id`.
fn engine_id(data_root: &Path) -> Result<String> {
    let path = data_root.join("engine-id");
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => return Ok(id.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(format!("read {}", path.display()), e)),
    }
    let raw = names::random_id();
    // Docker's engine IDs are UUIDs; shape the random hex the same way.
    let id = format!(
        "{}-{}-{}-{}-{}",
        &raw[0..8],
        &raw[8..12],
        &raw[12..16],
        &raw[16..20],
        &raw[20..32]
    );
    crate::store::write_atomic(data_root, "engine-id", id.as_bytes())?;
    Ok(id)
}

/// `HostConfig.Runtime` checked against [`Daemon::RUNTIMES`]; none means the default.
fn runtime_name(requested: Option<&str>) -> Result<String> {
    match requested.filter(|r| !r.is_empty()) {
        None => Ok(Daemon::RUNTIMES[0].to_string()),
        Some(r) if Daemon::RUNTIMES.contains(&r) => Ok(r.to_string()),
        // dockerd's words.
        Some(r) => Err(Error::InvalidParameter(format!(
            "Unknown runtime specified {r}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Host;

    /// A one-file image imported into the daemon's store as `busybox:latest`.
    fn import_image(d: &Daemon) {
        let mut tar = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(3);
        header.set_mode(0o755);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_cksum();
        tar.append_data(&mut header, "bin/sh", &b"#!\n"[..])
            .unwrap();
        let bytes = tar.into_inner().unwrap();
        let opts = berth_image::ImportOptions {
            reference: Some("busybox:latest".into()),
            config: serde_json::json!({"Env": ["PATH=/bin", "A=1"], "Cmd": ["sh"]})
                .as_object()
                .cloned(),
            message: None,
        };
        d.images.import(&bytes[..], &opts).unwrap();
    }

    fn daemon(dir: &Path) -> Daemon {
        let config = Config {
            hosts: vec![Host::Unix(dir.join("s.sock"))],
            data_root: dir.join("data"),
            exec_root: dir.join("run"),
            insecure_registries: vec![],
            registry_mirrors: vec![],
            log_level: "info".into(),
            tls: false,
            tls_verify: false,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            insecure_tcp: false,
            pidfile: dir.join("run/berth.pid"),
            bridge: None,
            network_instance: String::new(),
            cgroup_favordynmods: false,
        };
        let d = Daemon::open(config).unwrap();
        import_image(&d);
        d
    }

    fn body(json: &str) -> ContainerCreateBody {
        serde_json::from_str(json).unwrap()
    }

    #[tokio::test]
    async fn create_list_filter_prune() {
        let dir = tempfile::tempdir().unwrap();
        let d = daemon(dir.path());
        let a = d
            .create_container(
                Some("web"),
                body(r#"{"Image":"busybox","Env":["A=2"],"Labels":{"tier":"front"}}"#),
            )
            .unwrap();
        let rec = d.containers.get("web").unwrap();
        assert_eq!(rec.config.env.as_deref().unwrap(), ["PATH=/bin", "A=2"]);
        assert_eq!(rec.path, "sh");
        let err = d
            .create_container(Some("web"), body(r#"{"Image":"busybox"}"#))
            .unwrap_err();
        assert_eq!(err.status(), hyper::StatusCode::CONFLICT);
        let err = d
            .create_container(None, body(r#"{"Image":"nope"}"#))
            .unwrap_err();
        assert_eq!(err.to_string(), "No such image: nope");
        let b = d
            .create_container(None, body(r#"{"Image":"busybox","Cmd":["true"]}"#))
            .unwrap();
        d.containers
            .update(&b, |r| {
                r.state.set_exited(3, "");
                Ok(())
            })
            .unwrap();

        let list = |q: &str| {
            d.list_containers(&ListOptions {
                all: true,
                filters: Filters::parse(q).unwrap(),
                ..Default::default()
            })
            .unwrap()
        };
        assert_eq!(list("").len(), 2);
        assert_eq!(list(r#"{"label":["tier=front"]}"#)[0]["Id"], a);
        assert_eq!(list(r#"{"exited":["3"]}"#)[0]["Id"], b);
        assert_eq!(list(r#"{"status":["created"]}"#).len(), 1);
        assert_eq!(list(r#"{"name":["^/we"]}"#).len(), 1);
        assert_eq!(list(r#"{"ancestor":["busybox:latest"]}"#).len(), 2);
        assert_eq!(list(r#"{"before":["web"]}"#).len(), 0);
        assert!(d
            .list_containers(&ListOptions {
                filters: Filters::parse(r#"{"status":["bogus"]}"#).unwrap(),
                ..Default::default()
            })
            .is_err());
        assert!(d
            .list_containers(&ListOptions::default())
            .unwrap()
            .is_empty());

        let inspect = d.inspect_container(&a[..8], false).unwrap();
        assert_eq!(inspect["State"]["Status"], "created");
        assert_eq!(inspect["Config"]["Labels"]["tier"], "front");
        assert_eq!(inspect["HostConfig"]["NetworkMode"], "bridge");

        let (deleted, _) = d
            .prune_containers(&Filters::parse(r#"{"label":["tier"]}"#).unwrap())
            .unwrap();
        assert_eq!(deleted, [a]);
        d.remove_container(&b, false).await.unwrap();
        assert!(d.containers.is_empty());
    }
}
