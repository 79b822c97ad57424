//! Running containers through `berth-runtime`: start (spec, bundle, monitor), the exit
//! watcher, stop, kill, wait, and re-adopting running containers after a daemon restart.
//!
//! The monitor, not the daemon, is the container's parent: it holds the stdio, writes the
//! json-file log and, when the container exits, the exit file. The daemon watches each
//! monitor through a pidfd, and records the exit when the monitor goes away.

use std::os::fd::{FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use berth_runtime::monitor::{self, ExitStatus, LogConfig, MonitorConfig, MonitorMode};
use berth_runtime::spec::{self, ImageDefaults, NetworkMode, RunOptions};
use bollard_stubs::models::{HostConfigCgroupnsModeEnum, RestartPolicyNameEnum};
use nix::sys::signal::Signal;
use tokio::io::unix::AsyncFd;

use crate::daemon::{pid_alive, Daemon};
use crate::error::{Error, Result};
use crate::store::{ContainerRecord, Status};

/// Where a container's runtime files live: `<exec-root>/containers/<id>/`.
pub struct RunPaths {
    /// The directory itself.
    pub dir: PathBuf,
    /// OCI bundle (`config.json`; the rootfs is the image store's mount).
    pub bundle: PathBuf,
    /// Written by the monitor when the container exits.
    pub exit_file: PathBuf,
    /// The monitor's attach socket (`<exec-root>/s/<short id>.sock`).
    pub attach_socket: PathBuf,
    /// The monitor's pid.
    pub monitor_pid: PathBuf,
    /// The container init's pid.
    pub container_pid: PathBuf,
}

/// Parses `SIGTERM`, `TERM`, `term` or `15`.
pub fn parse_signal(s: &str) -> Result<Signal> {
    let bad = || Error::InvalidParameter(format!("Invalid signal: {s}"));
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| bad());
    }
    let upper = s.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse::<Signal>().map_err(|_| bad())
}

impl From<berth_runtime::Error> for Error {
    fn from(e: berth_runtime::Error) -> Self {
        match e {
            berth_runtime::Error::WrongState { .. } => Error::Conflict(e.to_string()),
            berth_runtime::Error::InvalidOption(_)
            | berth_runtime::Error::UnknownSignal(_)
            | berth_runtime::Error::InvalidId { .. } => Error::InvalidParameter(e.to_string()),
            other => Error::Runtime(other.to_string()),
        }
    }
}

impl Daemon {
    /// The runtime files of container `id`.
    pub fn run_paths(&self, id: &str) -> RunPaths {
        let dir = self.config.exec_root.join("containers").join(id);
        // Unix socket paths are limited to 107 bytes, so the socket does not live in the
        // container's directory; 24 hex digits of a random ID are unique in practice.
        let short = &id[..id.len().min(24)];
        RunPaths {
            bundle: dir.join("bundle"),
            exit_file: dir.join("exit.json"),
            attach_socket: self
                .config
                .exec_root
                .join("s")
                .join(format!("{short}.sock")),
            monitor_pid: dir.join("monitor.pid"),
            container_pid: dir.join("container.pid"),
            dir,
        }
    }

    /// `POST /containers/{id}/start`. Returns `false` when it was already running (304).
    pub async fn start_container(self: &Arc<Self>, key: &str) -> Result<bool> {
        let record = self.containers.get(key)?;
        if record.state.running {
            return Ok(false);
        }
        if record.has_been_manually_stopped || record.restart_count != 0 {
            self.containers.update(&record.id, |r| {
                r.has_been_manually_stopped = false;
                r.restart_count = 0;
                Ok(())
            })?;
        }
        self.run_container(key).await
    }

    /// Starts a container without touching its restart bookkeeping (the restart policy's
    /// path into a start).
    async fn run_container(self: &Arc<Self>, key: &str) -> Result<bool> {
        let record = self.containers.get(key)?;
        if record.state.running {
            return Ok(false);
        }
        let d = Arc::clone(self);
        let id = record.id.clone();
        // Until the record says running: a copy from the stopped container that ends now
        // must not unmount the rootfs this start is using.
        let hold = self.hold_rootfs(&id, tokio::runtime::Handle::current());
        let started = tokio::task::spawn_blocking(move || d.launch(&record))
            .await
            .map_err(|e| Error::Internal(format!("start task: {e}")))?;
        let started = match started {
            Ok(s) => s,
            Err(err) => {
                // Sessions waiting for this start end (their senders are dropped).
                crate::events::lock(&self.pending_attach).remove(&id);
                let message = err.to_string();
                // Docker's codes for a command that cannot be found or run.
                let code = if message.contains("not found") {
                    127
                } else {
                    126
                };
                let _ = self.containers.update(&id, |r| {
                    r.state.error = message.clone();
                    r.state.exit_code = code;
                    Ok(())
                });
                // As dockerd does, a container created with --rm does not outlive a failed
                // start; its removal also ends `wait?condition=removed`.
                if let Ok(r) = self.containers.get(&id) {
                    if r.host_config.auto_remove == Some(true) {
                        let _ = self.remove_container(&id, true).await;
                    }
                }
                return Err(err);
            }
        };
        let (record, ()) = self.containers.update(&id, |r| {
            r.state.status = Status::Running;
            r.state.running = true;
            r.state.paused = false;
            r.state.restarting = false;
            r.state.pid = i64::from(started.container_pid);
            r.state.exit_code = 0;
            r.state.error.clear();
            r.state.oom_killed = false;
            r.state.started_at = crate::time::now_rfc3339();
            r.state.finished_at = crate::time::ZERO.into();
            Ok(())
        })?;
        drop(hold);
        self.container_event("start", &record, &[]);
        self.watch(
            record.id.clone(),
            started.monitor_pid,
            started.container_pid,
        );
        self.start_health_checks(&record.id);
        Ok(true)
    }

    /// Mounts the rootfs, writes the bundle and spawns the monitor (blocking).
    fn launch(&self, r: &ContainerRecord) -> Result<monitor::MonitorStarted> {
        // The monitor's exec and start-up overlap with the preparation below; it waits for
        // its configuration (and exits if it never comes).
        let monitor = monitor::PendingMonitor::spawn(&self_exe(), true)?;
        let paths = self.run_paths(&r.id);
        // A previous run's leftovers: its exit file and runtime state.
        let _ = std::fs::remove_file(&paths.exit_file);
        if self.runtime.exists(&r.id) {
            let _ = self.runtime.delete(&r.id, true);
        }
        for dir in [Some(paths.dir.as_path()), paths.attach_socket.parent()]
            .into_iter()
            .flatten()
        {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
        }
        let rootfs = self.mount_held_rootfs(&r.id)?;
        let c = &r.config;
        let mut env = self.link_env(r)?;
        env.extend(c.env.clone().unwrap_or_default());
        let defaults = ImageDefaults {
            user: c.user.clone().filter(|u| !u.is_empty()),
            env,
            entrypoint: c.entrypoint.clone(),
            cmd: c.cmd.clone(),
            working_dir: c.working_dir.clone().filter(|w| !w.is_empty()),
        };
        let mut opts = run_options(r)?;
        let net = self.network_setup(r)?;
        let transient_netns = net.transient_netns;
        opts.network = net.mode;
        opts.mounts.splice(0..0, net.mounts);
        let user_mounts = self.container_mounts(r, &rootfs.path);
        opts.mounts
            .extend(user_mounts.inspect_err(|_| self.network_teardown(&r.id))?);
        let spec = spec::build_spec(&r.id, &rootfs.path, &defaults, &opts);
        let spec = spec.inspect_err(|_| {
            self.network_teardown(&r.id);
            self.release_mounts(&r.id);
        })?;
        spec::write_bundle(&paths.bundle, &spec)?;
        let log_opts = r
            .host_config
            .log_config
            .as_ref()
            .and_then(|l| l.config.clone())
            .unwrap_or_default();
        let log = LogConfig {
            path: PathBuf::from(&r.log_path),
            max_size: log_opts
                .get("max-size")
                .and_then(|s| parse_size(s))
                .unwrap_or(10 << 20),
            max_files: log_opts
                .get("max-file")
                .and_then(|s| s.parse().ok())
                .unwrap_or(3),
        };
        let config = MonitorConfig {
            id: r.id.clone(),
            runtime_root: self.runtime.root().to_path_buf(),
            mode: MonitorMode::Container {
                bundle: paths.bundle.clone(),
                rootfs_siblings: rootfs
                    .path
                    .parent()
                    .and_then(std::path::Path::parent)
                    .map(Into::into),
            },
            tty: c.tty.unwrap_or(false),
            open_stdin: c.open_stdin.unwrap_or(false),
            console_size: console_size(r.host_config.console_size.as_deref()),
            log: Some(log),
            exit_file: paths.exit_file.clone(),
            attach_socket: Some(paths.attach_socket.clone()),
            monitor_pid_file: paths.monitor_pid.clone(),
            container_pid_file: paths.container_pid.clone(),
        };
        // Two-phase start, as dockerd with containerd: attach sessions that are waiting (the
        // `docker run` client attaches before it starts) connect while the container is only
        // created, so they receive all of its output.
        let started = monitor.created(&config).and_then(|created| {
            let waiters = crate::events::lock(&self.pending_attach)
                .remove(&r.id)
                .unwrap_or_default();
            for waiter in waiters {
                match std::os::unix::net::UnixStream::connect(&paths.attach_socket) {
                    Ok(stream) => {
                        let _ = waiter.send(stream);
                    }
                    Err(err) => tracing::warn!(id = %r.id, %err, "cannot connect attach session"),
                }
            }
            created.start()
        });
        match started {
            Ok(started) => {
                if let Some(path) = transient_netns {
                    // Joined by the container's init at create: its processes hold it now.
                    if let Err(err) = berth_network::netns::remove(&path) {
                        tracing::warn!(id = %r.id, %err, "cannot unpin network namespace");
                    }
                }
                Ok(started)
            }
            Err(err) => {
                let _ = self.runtime.delete(&r.id, true);
                // The start's hold, when dropped, releases the rootfs and the volumes.
                self.network_teardown(&r.id);
                Err(err.into())
            }
        }
    }

    /// Watches a container's monitor and records the exit when it goes away.
    fn watch(self: &Arc<Self>, id: String, monitor_pid: i32, container_pid: i32) {
        let d = Arc::clone(self);
        tokio::spawn(async move {
            wait_for_pid(monitor_pid).await;
            let exit_file = d.run_paths(&id).exit_file;
            let status = monitor::read_exit(&exit_file).unwrap_or_else(|err| {
                tracing::warn!(%id, %err, "cannot read exit file");
                None
            });
            if status.is_none() {
                tracing::warn!(%id, monitor_pid, "monitor exited without writing an exit file");
            }
            if let Err(err) = d.record_exit(&id, i64::from(container_pid), status).await {
                tracing::warn!(%id, %err, "cannot record container exit");
            }
        });
    }

    /// Records that the run whose init had `pid` ended: state, runtime cleanup, `die` event,
    /// and auto-removal. A run that was already recorded (or replaced) is left alone.
    pub async fn record_exit(
        self: &Arc<Self>,
        id: &str,
        pid: i64,
        status: Option<ExitStatus>,
    ) -> Result<()> {
        let (code, oom, finished, error) = match &status {
            Some(s) => (
                i64::from(s.exit_code),
                s.oom_killed,
                s.finished_at.clone(),
                "",
            ),
            None => (
                255,
                false,
                crate::time::now_rfc3339(),
                "the container's monitor exited without an exit status",
            ),
        };
        // The run is torn down before its exit becomes visible: `restart` (stop, then start)
        // waits only for the recorded exit, and the new run's network namespace, rootfs
        // mount and runtime state must not be what this teardown removes.
        let Some((auto_remove, own_pid_ns)) = self
            .containers
            .get(id)
            .ok()
            .filter(|r| r.state.running && r.state.pid == pid)
            .map(|r| {
                let own_pid_ns = r.host_config.pid_mode.as_deref().is_none_or(str::is_empty);
                (r.host_config.auto_remove == Some(true), own_pid_ns)
            })
        else {
            return Ok(());
        };
        // A `--rm` container in its own PID namespace has no process left once its init was
        // reaped (the kernel ends the namespace's others first), so nothing runs on what its
        // removal takes away: the removal below tears down the network and the rootfs before
        // it answers, and its runtime state (cgroup, state directory) after.
        let teardown_in_removal = auto_remove && own_pid_ns;
        if !teardown_in_removal {
            self.teardown_run(id, auto_remove).await;
        }
        // A `--rm` container (which has no restart policy) is removed right after: its exit
        // is not written to disk first.
        let record_exit = |r: &mut ContainerRecord| {
            if !r.state.running || r.state.pid != pid {
                return Ok(false);
            }
            r.state.set_exited(code, error);
            r.state.oom_killed = oom;
            r.state.finished_at = finished.clone();
            // Restarting from the moment the exit is recorded, so that a waiter woken by it
            // cannot remove the container before the policy restarts it (as dockerd).
            if restart_delay(r, code).is_some() {
                r.state.restarting = true;
                r.state.status = Status::Restarting;
            }
            Ok(true)
        };
        let (record, changed) = if auto_remove {
            self.containers.update_unpersisted(id, record_exit)?
        } else {
            self.containers.update(id, record_exit)?
        };
        if !changed {
            return Ok(());
        }
        // A copy that ended while the record still said running left the rootfs mounted.
        if !auto_remove {
            self.release_rootfs_if_unused(&record.id);
        }
        if oom {
            self.container_event("oom", &record, &[]);
        }
        self.container_event("die", &record, &[("exitCode", code.to_string())]);
        if let Some(delay) = restart_delay(&record, code) {
            self.schedule_restart(record.id.clone(), delay);
            return Ok(());
        }
        if auto_remove {
            if let Err(err) = self.remove_container(&record.id, true).await {
                // Still listed: its exit must then be on disk, and its run released, like
                // any other.
                if teardown_in_removal {
                    self.teardown_run(&record.id, true).await;
                }
                let _ = self.containers.persist(&record.id);
                self.release_rootfs_if_unused(&record.id);
                return Err(err);
            }
        }
        Ok(())
    }

    /// Deletes a finished run's runtime state and network (and, unless `auto_remove`, whose
    /// removal does it off this path, releases its rootfs).
    async fn teardown_run(self: &Arc<Self>, id: &str, auto_remove: bool) {
        let d = Arc::clone(self);
        let rid = id.to_owned();
        let _ = tokio::task::spawn_blocking(move || {
            if d.runtime.exists(&rid) {
                if let Err(err) = d.runtime.delete(&rid, true) {
                    tracing::warn!(id = %rid, %err, "cannot delete runtime state");
                }
            }
            // A `--rm` container's rootfs and volumes go with its removal below, whose
            // unmount happens off this path (the image store's reaper thread).
            if !auto_remove {
                d.release_rootfs_if_unused(&rid);
            }
            d.network_teardown(&rid);
        })
        .await;
    }

    /// Restarts a container after `delay`, unless a user acted on it in the meantime.
    fn schedule_restart(self: &Arc<Self>, id: String, delay: std::time::Duration) {
        let d = Arc::clone(self);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let Ok(record) = d.containers.get(&id) else {
                return;
            };
            if record.state.running {
                return;
            }
            if record.has_been_manually_stopped {
                d.clear_restarting(&id);
                return;
            }
            let _ = d.containers.update(&id, |r| {
                r.restart_count += 1;
                Ok(())
            });
            if let Err(err) = d.run_container(&id).await {
                tracing::warn!(%id, %err, "restart policy could not start the container");
                d.clear_restarting(&id);
            }
        });
    }

    /// Ends a pending restart's `restarting` state: the container is simply exited.
    pub(crate) fn clear_restarting(&self, id: &str) {
        let _ = self.containers.update(id, |r| {
            if r.state.restarting {
                r.state.restarting = false;
                r.state.status = Status::Exited;
            }
            Ok(())
        });
    }

    /// Marks a container as stopped by a user, which suspends its restart policy.
    pub(crate) fn mark_manually_stopped(&self, id: &str) {
        let _ = self.containers.update(id, |r| {
            r.has_been_manually_stopped = true;
            Ok(())
        });
    }

    /// Re-adopts containers that were running when the daemon stopped: a finished run is
    /// recorded from its exit file, a live monitor is watched again, anything else is marked
    /// exited.
    pub async fn restore(self: &Arc<Self>) {
        self.network_start().await;
        // Before the restored exits start removals of their own.
        self.remove_orphaned_run_state();
        self.restore_running().await;
        self.remove_orphaned_rootfs();
        self.reconcile_volumes();
        // Then, as dockerd does at boot, start what the restart policies say should run.
        for record in self.containers.list() {
            if record.state.running {
                continue;
            }
            let policy = record
                .host_config
                .restart_policy
                .as_ref()
                .and_then(|p| p.name);
            // `always` brings back even a container a user stopped; `unless-stopped` does not.
            let start = match policy {
                Some(RestartPolicyNameEnum::ALWAYS) => true,
                Some(RestartPolicyNameEnum::UNLESS_STOPPED) => !record.has_been_manually_stopped,
                _ => false,
            };
            if start {
                if let Err(err) = self.start_container(&record.id).await {
                    tracing::warn!(id = %record.id, %err, "cannot start container at boot");
                }
            }
        }
    }

    /// Writable layers whose container has no record: a removal cut short between the record,
    /// which goes first (the name is free at once), and its rootfs, or a `--rm` container's
    /// unflushed records after a power loss. Run before the API serves.
    fn remove_orphaned_rootfs(&self) {
        let layers = match self.images.container_layer_ids() {
            Ok(l) => l,
            Err(err) => {
                tracing::warn!(%err, "cannot list container layers");
                return;
            }
        };
        for id in layers {
            if !self.containers.contains_id(&id) {
                tracing::info!(%id, "removing the rootfs of a removed container");
                self.remove_rootfs(&id);
            }
        }
    }

    /// Runtime states and run directories of containers without a record: a removal answers
    /// before it deletes them (`remove_container`), and a daemon may die in between. A state
    /// whose processes still run is left alone (nothing else could tell what they are), and so
    /// is one not named like the daemon's containers (`berth runtime` shares the default root).
    fn remove_orphaned_run_state(&self) {
        let orphan = |id: &str| crate::names::is_full_id(id) && !self.containers.contains_id(id);
        match self.runtime.list() {
            Ok(states) => {
                for state in states {
                    if !orphan(&state.id) {
                        continue;
                    }
                    if matches!(state.status.as_str(), "running" | "paused") {
                        tracing::warn!(id = %state.id, status = %state.status, "leaving the runtime state of an unknown container");
                        continue;
                    }
                    tracing::info!(id = %state.id, "deleting the runtime state of a removed container");
                    if let Err(err) = self.runtime.delete(&state.id, true) {
                        tracing::warn!(id = %state.id, %err, "cannot delete runtime state");
                    }
                }
            }
            Err(err) => tracing::warn!(%err, "cannot list runtime states"),
        }
        let runs = self.config.exec_root.join("containers");
        for entry in std::fs::read_dir(&runs).into_iter().flatten().flatten() {
            let name = entry.file_name();
            let Some(id) = name.to_str() else { continue };
            if !orphan(id) || self.runtime.exists(id) {
                continue;
            }
            if let Err(err) = std::fs::remove_dir_all(entry.path()) {
                tracing::warn!(%id, %err, "cannot remove the run directory of a removed container");
            }
        }
    }

    async fn restore_running(self: &Arc<Self>) {
        for record in self.containers.list() {
            if !record.state.running {
                continue;
            }
            let paths = self.run_paths(&record.id);
            let monitor_pid = std::fs::read_to_string(&paths.monitor_pid)
                .ok()
                .and_then(|p| p.trim().parse::<i32>().ok());
            let exit = monitor::read_exit(&paths.exit_file).ok().flatten();
            let pid = record.state.pid;
            match (exit, monitor_pid) {
                (Some(status), _) => {
                    let _ = self.record_exit(&record.id, pid, Some(status)).await;
                }
                (None, Some(m)) if pid_alive(i64::from(m)) => {
                    let container_pid = i32::try_from(pid).unwrap_or(0);
                    self.watch(record.id.clone(), m, container_pid);
                    self.start_health_checks(&record.id);
                }
                // Not started by a monitor (or its files are gone): trust the init's pid.
                (None, None) if pid_alive(pid) => self.start_health_checks(&record.id),
                (None, _) => {
                    let _ = self.record_exit(&record.id, pid, None).await;
                }
            }
        }
    }

    /// `POST /containers/{id}/kill?signal=`.
    pub async fn kill_container(self: &Arc<Self>, key: &str, signal: Signal) -> Result<()> {
        let record = self.containers.get(key)?;
        if !record.state.running {
            return Err(Error::Conflict(format!(
                "Cannot kill container: {key}: Container {} is not running",
                record.id
            )));
        }
        if matches!(signal, Signal::SIGKILL | Signal::SIGTERM | Signal::SIGINT) {
            self.mark_manually_stopped(&record.id);
        }
        let (_, mut rx) = self.events.subscribe();
        self.signal(&record, signal, false).await?;
        self.container_event("kill", &record, &[("signal", (signal as i32).to_string())]);
        // As dockerd: a SIGKILL returns once the exit is recorded, so an inspect or remove
        // that follows sees the container stopped with its exit code (137).
        if signal == Signal::SIGKILL
            && !self
                .wait_exit(&record.id, &mut rx, Some(Duration::from_secs(30)))
                .await
        {
            return Err(Error::Internal(format!(
                "container {} did not exit after SIGKILL",
                record.id
            )));
        }
        Ok(())
    }

    /// Signals a container's init (or all its processes), through the runtime when the
    /// container was started by one, else through its recorded pid.
    pub(crate) async fn signal(
        &self,
        record: &ContainerRecord,
        signal: Signal,
        all: bool,
    ) -> Result<()> {
        if self.runtime.exists(&record.id) {
            let rt = self.runtime.clone();
            let id = record.id.clone();
            // A frozen process only acts on a signal once thawed; SIGKILL must not wait.
            let thaw = record.state.paused && signal == Signal::SIGKILL;
            return tokio::task::spawn_blocking(move || {
                if thaw {
                    rt.resume(&id)?;
                }
                rt.kill(&id, signal, all)
            })
            .await
            .map_err(|e| Error::Internal(format!("kill task: {e}")))?
            .map_err(Error::from);
        }
        let pid = i32::try_from(record.state.pid).unwrap_or(0);
        if pid <= 0 {
            return Err(Error::Conflict(format!(
                "container {} has no process to signal",
                record.id
            )));
        }
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal)
            .map_err(|e| Error::io(format!("signal pid {pid}"), e.into()))
    }

    /// `POST /containers/{id}/stop?t=&signal=`: the stop signal, then SIGKILL after the
    /// timeout. Returns `false` when it was not running (304).
    pub async fn stop_container(
        self: &Arc<Self>,
        key: &str,
        timeout: Option<i64>,
        signal: Option<Signal>,
    ) -> Result<bool> {
        let record = self.containers.get(key)?;
        if !record.state.running {
            // Also cancels a restart the policy has scheduled.
            self.mark_manually_stopped(&record.id);
            if record.state.restarting {
                self.clear_restarting(&record.id);
                return Ok(true);
            }
            return Ok(false);
        }
        let signal = match signal {
            Some(s) => s,
            None => match record.config.stop_signal.as_deref() {
                Some(s) if !s.is_empty() => parse_signal(s)?,
                _ => Signal::SIGTERM,
            },
        };
        let timeout = timeout.or(record.config.stop_timeout).unwrap_or(10);
        self.mark_manually_stopped(&record.id);
        let (_, mut rx) = self.events.subscribe();
        if let Err(err) = self.signal(&record, signal, false).await {
            tracing::debug!(id = %record.id, %err, "stop signal failed; killing");
        } else {
            self.container_event("kill", &record, &[("signal", (signal as i32).to_string())]);
        }
        let grace = Duration::from_secs(u64::try_from(timeout.max(0)).unwrap_or(0));
        if timeout < 0 || !self.wait_exit(&record.id, &mut rx, Some(grace)).await {
            // Negative timeouts mean "wait forever" in Docker's API.
            if timeout < 0 {
                self.wait_exit(&record.id, &mut rx, None).await;
                return Ok(true);
            }
            self.signal(&record, Signal::SIGKILL, true).await?;
            self.container_event("kill", &record, &[("signal", "9".into())]);
            if !self
                .wait_exit(&record.id, &mut rx, Some(Duration::from_secs(30)))
                .await
            {
                return Err(Error::Internal(format!(
                    "container {} did not exit after SIGKILL",
                    record.id
                )));
            }
        }
        self.container_event("stop", &record, &[]);
        Ok(true)
    }

    /// Waits until container `id` is no longer running; `false` on timeout.
    pub(crate) async fn wait_exit(
        &self,
        id: &str,
        rx: &mut tokio::sync::broadcast::Receiver<Arc<crate::events::Event>>,
        timeout: Option<Duration>,
    ) -> bool {
        crate::events::until(rx, timeout, || {
            self.containers.get(id).map_or(true, |r| !r.state.running)
        })
        .await
    }

    /// `POST /containers/{id}/wait?condition=`: resolves to the exit code. The receiver must
    /// be subscribed before the caller answers the client, so that no exit is missed.
    pub async fn wait_container(
        &self,
        id: &str,
        condition: &str,
        mut rx: tokio::sync::broadcast::Receiver<Arc<crate::events::Event>>,
    ) -> Result<i64> {
        if condition == "not-running" {
            if let Ok(r) = self.containers.get(id) {
                if !r.state.running {
                    return Ok(r.state.exit_code);
                }
            }
        }
        let mut last_code = None;
        loop {
            match rx.recv().await {
                Ok(e) if e.kind == "container" && e.actor.id == id => {
                    if e.action == "die" {
                        let code = e
                            .actor
                            .attributes
                            .get("exitCode")
                            .and_then(|c| c.parse().ok())
                            .unwrap_or(0);
                        if condition != "removed" {
                            return Ok(code);
                        }
                        last_code = Some(code);
                    }
                    if e.action == "destroy" {
                        return Ok(last_code.unwrap_or(0));
                    }
                }
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                    return Err(Error::Internal("event stream closed".into()))
                }
            }
        }
    }
}

impl Daemon {
    /// `POST /containers/{id}/pause` and `/unpause`: freezes or thaws every process.
    pub async fn set_paused(self: &Arc<Self>, key: &str, pause: bool) -> Result<()> {
        let record = self.containers.get(key)?;
        if !record.state.running {
            return Err(Error::Conflict(format!(
                "Container {} is not running",
                record.id
            )));
        }
        if record.state.paused == pause {
            let what = if pause {
                "already paused"
            } else {
                "not paused"
            };
            return Err(Error::Conflict(format!(
                "Container {} is {what}",
                record.id
            )));
        }
        let rt = self.runtime.clone();
        let id = record.id.clone();
        tokio::task::spawn_blocking(move || if pause { rt.pause(&id) } else { rt.resume(&id) })
            .await
            .map_err(|e| Error::Internal(format!("pause task: {e}")))??;
        let (record, ()) = self.containers.update(&record.id, |r| {
            r.state.paused = pause;
            r.state.status = if pause {
                Status::Paused
            } else {
                Status::Running
            };
            Ok(())
        })?;
        self.container_event(if pause { "pause" } else { "unpause" }, &record, &[]);
        Ok(())
    }

    /// `GET /containers/{id}/top?ps_args=`: the host's `ps` output restricted to the
    /// container's processes, as dockerd does it.
    pub async fn top(self: &Arc<Self>, key: &str, ps_args: &str) -> Result<serde_json::Value> {
        let record = self.containers.get(key)?;
        if !record.state.running {
            return Err(Error::Conflict(format!(
                "Container {} is not running",
                record.id
            )));
        }
        let rt = self.runtime.clone();
        let id = record.id.clone();
        let pids = tokio::task::spawn_blocking(move || rt.processes(&id))
            .await
            .map_err(|e| Error::Internal(format!("top task: {e}")))??;
        let args: Vec<&str> = ps_args.split_whitespace().collect();
        let out = tokio::process::Command::new("ps")
            .args(if args.is_empty() { vec!["-ef"] } else { args })
            .output()
            .await
            .map_err(|e| Error::io("run ps", e))?;
        if !out.status.success() {
            return Err(Error::InvalidParameter(format!(
                "ps: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let mut lines = text.lines();
        let header = lines.next().unwrap_or("");
        let titles: Vec<&str> = header.split_whitespace().collect();
        let pid_col = titles.iter().position(|t| *t == "PID").ok_or_else(|| {
            Error::InvalidParameter("Couldn't find PID field in ps output".into())
        })?;
        let mut processes = Vec::new();
        for line in lines {
            // The last column (the command) may contain spaces.
            let words: Vec<&str> = line.split_whitespace().collect();
            let head = titles.len().saturating_sub(1).min(words.len());
            let mut fields: Vec<String> = words[..head].iter().map(|w| w.to_string()).collect();
            fields.push(words[head..].join(" "));
            let pid = fields.get(pid_col).and_then(|p| p.parse::<i32>().ok());
            if pid.is_some_and(|p| pids.contains(&p)) {
                processes.push(fields);
            }
        }
        Ok(serde_json::json!({"Titles": titles, "Processes": processes}))
    }
}

/// How long to wait before the restart policy restarts a container that exited with `code`,
/// or `None` when it does not. The delay doubles from 100ms with each restart, up to a
/// minute, as dockerd's back-off does.
fn restart_delay(r: &ContainerRecord, code: i64) -> Option<std::time::Duration> {
    if r.has_been_manually_stopped || r.host_config.auto_remove == Some(true) {
        return None;
    }
    let policy = r.host_config.restart_policy.as_ref()?;
    let restart = match policy.name? {
        RestartPolicyNameEnum::ALWAYS | RestartPolicyNameEnum::UNLESS_STOPPED => true,
        RestartPolicyNameEnum::ON_FAILURE => {
            let max = policy.maximum_retry_count.unwrap_or(0);
            code != 0 && (max == 0 || r.restart_count < max)
        }
        RestartPolicyNameEnum::NO | RestartPolicyNameEnum::EMPTY => false,
    };
    let shift = u32::try_from(r.restart_count.clamp(0, 10)).unwrap_or(10);
    restart.then(|| Duration::from_millis((100u64 << shift).min(60_000)))
}

/// Docker's HostConfig and Config as the runtime's plain options.
fn run_options(r: &ContainerRecord) -> Result<RunOptions> {
    let hc = &r.host_config;
    let network = match hc.network_mode.as_deref() {
        Some("host") => NetworkMode::Host,
        // Bridge and container modes are filled in by `network_setup`.
        _ => NetworkMode::None,
    };
    let security = hc.security_opt.clone().unwrap_or_default();
    let limits = berth_runtime::Limits {
        memory: hc.memory.filter(|&m| m > 0),
        memory_swap: hc.memory_swap.filter(|&m| m != 0),
        memory_reservation: hc.memory_reservation.filter(|&m| m > 0),
        oom_kill_disable: hc.oom_kill_disable,
        cpu_shares: hc
            .cpu_shares
            .and_then(|s| u64::try_from(s).ok())
            .filter(|&s| s > 0),
        cpu_quota: hc.cpu_quota.filter(|&q| q > 0).or_else(|| {
            hc.nano_cpus
                .filter(|&n| n > 0)
                .map(|n| n * 100_000 / 1_000_000_000)
        }),
        cpu_period: hc
            .cpu_period
            .and_then(|p| u64::try_from(p).ok())
            .filter(|&p| p > 0)
            .or_else(|| hc.nano_cpus.filter(|&n| n > 0).map(|_| 100_000)),
        cpuset_cpus: hc.cpuset_cpus.clone().filter(|s| !s.is_empty()),
        cpuset_mems: hc.cpuset_mems.clone().filter(|s| !s.is_empty()),
        pids_limit: hc.pids_limit.filter(|&p| p > 0),
        blkio_weight: hc.blkio_weight.filter(|&w| w > 0),
    };
    Ok(RunOptions {
        hostname: r.config.hostname.clone().filter(|h| !h.is_empty()),
        group_add: hc.group_add.clone().unwrap_or_default(),
        tty: r.config.tty.unwrap_or(false),
        // Mounts (binds, volumes, tmpfs) are prepared by `Daemon::container_mounts`.
        limits,
        cap_add: hc.cap_add.clone().unwrap_or_default(),
        cap_drop: hc.cap_drop.clone().unwrap_or_default(),
        privileged: hc.privileged.unwrap_or(false),
        read_only_rootfs: hc.readonly_rootfs.unwrap_or(false),
        // Records made before the mode was filled in at create ran with a private one.
        host_cgroupns: hc.cgroupns_mode == Some(HostConfigCgroupnsModeEnum::HOST),
        sysctls: hc.sysctls.clone().unwrap_or_default().into_iter().collect(),
        ulimits: hc
            .ulimits
            .iter()
            .flatten()
            .filter_map(|u| {
                Some(spec::Ulimit {
                    name: u.name.clone()?,
                    soft: u64::try_from(u.soft?).ok()?,
                    hard: u64::try_from(u.hard?).ok()?,
                })
            })
            .collect(),
        seccomp: if security
            .iter()
            .any(|s| s == "seccomp=unconfined" || s == "seccomp:unconfined")
        {
            spec::SeccompMode::Unconfined
        } else {
            spec::SeccompMode::Default
        },
        no_new_privileges: security.iter().any(|s| {
            s == "no-new-privileges"
                || s == "no-new-privileges:true"
                || s == "no-new-privileges=true"
        }),
        network,
        shm_size: hc
            .shm_size
            .and_then(|s| u64::try_from(s).ok())
            .filter(|&s| s > 0),
        oom_score_adj: hc.oom_score_adj.and_then(|s| i32::try_from(s).ok()),
        ..Default::default()
    })
}

/// Docker's `ConsoleSize` (`[height, width]`) as (rows, columns); absent or zero is none.
pub(crate) fn console_size(size: Option<&[usize]>) -> Option<(u16, u16)> {
    match size? {
        [rows, cols] if *rows > 0 && *cols > 0 => {
            Some((u16::try_from(*rows).ok()?, u16::try_from(*cols).ok()?))
        }
        _ => None,
    }
}

/// `10m`, `512k`, `1g`, or plain bytes.
fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim().to_ascii_lowercase();
    let (num, mult) = match s.chars().last()? {
        'k' => (&s[..s.len() - 1], 1u64 << 10),
        'm' => (&s[..s.len() - 1], 1 << 20),
        'g' => (&s[..s.len() - 1], 1 << 30),
        _ => (&s[..], 1),
    };
    num.parse::<u64>().ok()?.checked_mul(mult)
}

/// The daemon's own executable, which monitors are re-executed from. `/proc/self/exe` still
/// works after the binary on disk has been replaced or deleted (an upgrade in place).
pub(crate) fn self_exe() -> PathBuf {
    PathBuf::from("/proc/self/exe")
}

/// Resolves when process `pid` (not our child) has exited.
pub(crate) async fn wait_for_pid(pid: i32) {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1; no memory
    // is passed.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        // ESRCH: already gone. Other errors (old kernels): poll for the pid instead.
        while pid_alive(i64::from(pid)) {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        return;
    }
    let Ok(raw) = i32::try_from(fd) else {
        return;
    };
    // SAFETY: the descriptor was just returned by pidfd_open and nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: `fd` is an open pidfd owned by the OwnedFd moved into the AsyncFd, which keeps
    // it open and unchanged until the AsyncFd is dropped.
    let registered = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) };
    match registered {
        // A pidfd becomes readable when the process exits.
        Ok(afd) => {
            let _ = afd.readable().await;
        }
        Err(_) => {
            while pid_alive(i64::from(pid)) {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_and_sizes() {
        assert_eq!(parse_signal("TERM").unwrap(), Signal::SIGTERM);
        assert_eq!(parse_signal("sigkill").unwrap(), Signal::SIGKILL);
        assert_eq!(parse_signal("9").unwrap(), Signal::SIGKILL);
        assert!(parse_signal("NOPE").is_err());
        assert_eq!(parse_size("10m"), Some(10 << 20));
        assert_eq!(parse_size("512"), Some(512));
        assert_eq!(parse_size("x"), None);
    }
}
