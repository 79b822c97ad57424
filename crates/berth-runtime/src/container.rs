//! Container lifecycle on top of youki's `libcontainer`: the [`Runtime`] handle on a state root.
//!
//! Two kinds of operations live here and the split matters:
//!
//! * In-process, thread-safe operations ([`Runtime::state`], [`Runtime::kill`],
//!   [`Runtime::pause`], [`Runtime::resume`], [`Runtime::delete`], [`Runtime::processes`],
//!   [`Runtime::update_resources`], [`Runtime::list`]): they read state files, send signals and
//!   write cgroup files. The daemon may call them from a tokio worker.
//! * Forking operations (`create`, `exec`): libcontainer forks with a raw `clone3`, which is
//!   only sound in a single-threaded process. They are `pub(crate)` and used by the runc-style
//!   CLI and the monitor, both of which run in a fresh single-threaded process. A multi-threaded
//!   caller runs `berth runtime ...` or `berth monitor ...` as a subprocess instead.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use libcgroups::common::{CgroupConfig, CgroupManager, ControllerOpt, FreezerState};
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::{Container, ContainerStatus};
use libcontainer::syscall::syscall::SyscallType;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use oci_spec::runtime::{Capability, LinuxResources, Process, Spec};
use serde::{Deserialize, Serialize};

use crate::cgroup_fs;
use crate::error::{Error, Result};
use crate::executor::WorkloadExecutor;
use crate::init;
use crate::seccomp_filter::{self, PrecompiledSeccomp};

/// Default state root of `berth runtime`.
pub const DEFAULT_ROOT: &str = "/run/berth/runtime";

/// Cgroup parent used when a bundle's config.json has no `linux.cgroupsPath` (youki would
/// otherwise create a literal `:youki:<id>` cgroup).
pub const DEFAULT_CGROUP_PARENT: &str = "/berth";

/// Directory under the runtime root caching compiled seccomp programs (dot-named: not a
/// container id).
const SECCOMP_CACHE: &str = ".seccomp";

/// The container state as printed by `runc state` (and the OCI runtime spec's state).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerState {
    /// OCI runtime spec version.
    pub oci_version: String,
    /// Container id.
    pub id: String,
    /// PID of the container's init process (0 once stopped, as runc).
    pub pid: i32,
    /// `creating`, `created`, `running`, `paused` or `stopped`.
    pub status: String,
    /// Absolute path of the bundle.
    pub bundle: PathBuf,
    /// Absolute path of the root filesystem.
    pub rootfs: PathBuf,
    /// Creation time, RFC 3339.
    pub created: String,
    /// Owner (runc prints an empty string for root).
    pub owner: String,
    /// Annotations from the spec.
    #[serde(default, skip_serializing_if = "HashMap::is_empty")]
    pub annotations: HashMap<String, String>,
}

/// A handle on a runtime state root (one directory per container, as runc's `--root`).
#[derive(Debug, Clone)]
pub struct Runtime {
    root: PathBuf,
}

impl Default for Runtime {
    fn default() -> Self {
        Runtime::new(DEFAULT_ROOT)
    }
}

/// Whether the container's init process still exists.
fn init_alive(container: &Container) -> bool {
    container
        .pid()
        .is_some_and(|pid| nix::sys::signal::kill(pid, None) != Err(nix::errno::Errno::ESRCH))
}

fn status_name(status: ContainerStatus) -> &'static str {
    match status {
        ContainerStatus::Creating => "creating",
        ContainerStatus::Created => "created",
        ContainerStatus::Running => "running",
        ContainerStatus::Stopped => "stopped",
        ContainerStatus::Paused => "paused",
    }
}

/// Checks that `id` can name a directory under the root (same rule as runc).
pub fn validate_id(id: &str) -> Result<()> {
    let reason = if id.is_empty() {
        Some("empty")
    } else if id == "." || id == ".." {
        Some("not a file name")
    } else if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '-' | '.'))
    {
        Some("only [a-zA-Z0-9_+.-] are allowed")
    } else if id.len() > 1024 {
        Some("too long")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Error::InvalidId {
            id: id.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

impl Runtime {
    /// A runtime whose state lives under `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Runtime { root: root.into() }
    }

    /// The state root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The state directory of container `id`.
    pub fn container_dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    /// Whether a container `id` exists.
    pub fn exists(&self, id: &str) -> bool {
        validate_id(id).is_ok() && self.container_dir(id).join("state.json").exists()
    }

    pub(crate) fn load(&self, id: &str) -> Result<Container> {
        validate_id(id)?;
        let dir = self.container_dir(id);
        if !dir.join("state.json").exists() {
            return Err(Error::NotFound(id.to_owned()));
        }
        Container::load(dir).map_err(|e| Error::libcontainer(format!("load container {id}"), &e))
    }

    /// The runc-style state of container `id`.
    pub fn state(&self, id: &str) -> Result<ContainerState> {
        let container = self.load(id)?;
        Ok(self.to_state(&container))
    }

    fn to_state(&self, container: &Container) -> ContainerState {
        let status = container.status();
        let pid = match status {
            ContainerStatus::Stopped => 0,
            _ => container.pid().map(Pid::as_raw).unwrap_or(0),
        };
        let rootfs = rootfs_of(container.bundle());
        ContainerState {
            oci_version: container.state.oci_version.clone(),
            id: container.id().to_owned(),
            pid,
            status: status_name(status).to_owned(),
            bundle: container.bundle().clone(),
            rootfs,
            created: container
                .created()
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true))
                .unwrap_or_default(),
            owner: String::new(),
            annotations: container.state.annotations.clone().unwrap_or_default(),
        }
    }

    /// States of every container under the root, sorted by id.
    pub fn list(&self) -> Result<Vec<ContainerState>> {
        let entries = match fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(format!("read {}", self.root.display()), e)),
        };
        let mut states = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(id) = name.to_str() else { continue };
            if let Ok(state) = self.state(id) {
                states.push(state);
            }
        }
        states.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(states)
    }

    /// Sends `signal` to the container's init (or to every process in its cgroup when `all`).
    ///
    /// Signals directly rather than through libcontainer's `kill`, which rewrites state.json
    /// (non-atomically) on every call: a concurrent `delete` or `state` could read it torn.
    pub fn kill(&self, id: &str, signal: Signal, all: bool) -> Result<()> {
        let container = self.load(id)?;
        let status = container.status();
        if !(container.can_kill() || all && status == ContainerStatus::Stopped) {
            return Err(Error::WrongState {
                id: id.to_owned(),
                status: status_name(status).to_owned(),
                op: "kill",
            });
        }
        let send = |pid: Pid| match nix::sys::signal::kill(pid, signal) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
            Err(e) => Err(Error::sys(
                format!("signal {signal} to pid {pid} of {id}"),
                e,
            )),
        };
        let paused = status == ContainerStatus::Paused;
        if all {
            let manager = self.cgroup_manager(id, &container)?;
            // One that ended on its own (its exit racing this kill) may have lost its cgroup
            // already: nothing is left to signal, and freezing would make its freezer cgroup
            // again (libcgroups creates the directory it writes to), for good.
            if manager.get_all_pids().is_err() && !init_alive(&container) {
                return Ok(());
            }
            // Freeze so that no process forks away from the signal; a paused container stays
            // frozen unless it is being killed.
            if !paused {
                let _ = manager.freeze(FreezerState::Frozen);
            }
            let pids = match manager.get_all_pids() {
                Ok(pids) => Ok(pids),
                // It ended and its cgroup is already gone (removed on exit, racing this
                // kill): nothing is left to signal, since a cgroup is only removable once
                // empty.
                Err(_) if !init_alive(&container) => Ok(Vec::new()),
                Err(e) => Err(Error::Cgroup {
                    path: self.container_dir(id),
                    message: crate::error::one_line(&e),
                }),
            };
            let result = pids.and_then(|pids| pids.into_iter().try_for_each(send));
            if !paused || signal == Signal::SIGKILL {
                let _ = manager.freeze(FreezerState::Thawed);
            }
            if !init_alive(&container) {
                // The exit may still have raced the freeze above (its teardown removing the
                // cgroup in between): what the freeze made again is empty, and goes.
                if let Ok(config) = container.spec() {
                    let _ = cgroup_fs::remove_cgroup(&config.cgroup_path);
                }
            }
            result
        } else {
            let pid = container
                .pid()
                .ok_or_else(|| Error::NotFound(format!("{id} (no init pid)")))?;
            send(pid)?;
            if paused && signal == Signal::SIGKILL {
                // A frozen process cannot act on SIGKILL until thawed (cgroup v1).
                let manager = self.cgroup_manager(id, &container)?;
                let _ = manager.freeze(FreezerState::Thawed);
            }
            Ok(())
        }
    }

    /// Freezes every process of the container.
    pub fn pause(&self, id: &str) -> Result<()> {
        self.set_frozen(id, true)
    }

    /// Thaws a paused container.
    pub fn resume(&self, id: &str) -> Result<()> {
        self.set_frozen(id, false)
    }

    fn set_frozen(&self, id: &str, frozen: bool) -> Result<()> {
        let mut container = self.load(id)?;
        let (allowed, op) = if frozen {
            (container.can_pause(), "pause")
        } else {
            (container.can_resume(), "resume")
        };
        if !allowed {
            return Err(Error::WrongState {
                id: id.to_owned(),
                status: status_name(container.status()).to_owned(),
                op,
            });
        }
        let done = if frozen {
            container.pause()
        } else {
            container.resume()
        };
        done.map_err(|e| Error::libcontainer(format!("{op} container {id}"), &e))
    }

    /// Deletes a stopped container: its cgroup and its state directory. With `force`, a
    /// created, running or paused container is killed first. (runc also deletes a created
    /// container without `force`; the OCI runtime spec requires an error, as here.)
    pub fn delete(&self, id: &str, force: bool) -> Result<()> {
        let mut container = self.load(id)?;
        if !force && container.status() != ContainerStatus::Stopped {
            return Err(Error::WrongState {
                id: id.to_owned(),
                status: status_name(container.status()).to_owned(),
                op: "delete without --force",
            });
        }
        if self.delete_stopped(id, &container) {
            return Ok(());
        }
        let result = container
            .delete(force)
            .map_err(|e| Error::libcontainer(format!("delete container {id}"), &e));
        if result.is_err() && force {
            // Leave nothing behind on a forced delete, even if the state was half written.
            let _ = fs::remove_dir_all(self.container_dir(id));
        }
        result
    }

    /// The common case of [`Runtime::delete`] without libcontainer: a stopped container with
    /// no poststop hooks, no Intel RDT group and no systemd cgroup loses its (empty) cgroup
    /// directories and its state directory. libcontainer's path builds a cgroup manager, which
    /// re-reads the mount table once per controller (~3 ms on the `run --rm` path); one read
    /// and one `rmdir` per hierarchy do the same. Returns `false`, having changed nothing it
    /// cannot redo, whenever libcontainer's full path is needed (e.g. a cgroup still busy).
    fn delete_stopped(&self, id: &str, container: &Container) -> bool {
        if container.status() != ContainerStatus::Stopped
            || container.systemd()
            || container.intel_rdt_dir().is_some()
        {
            return false;
        }
        let Ok(config) = container.spec() else {
            return false;
        };
        let poststop = config.hooks.as_ref().and_then(|h| h.poststop().as_ref());
        if poststop.is_some_and(|hooks| !hooks.is_empty()) {
            return false;
        }
        if !cgroup_fs::remove_cgroup(&config.cgroup_path) {
            return false;
        }
        match fs::remove_dir_all(self.container_dir(id)) {
            Ok(()) => true,
            Err(e) => e.kind() == std::io::ErrorKind::NotFound,
        }
    }

    fn cgroup_manager(
        &self,
        id: &str,
        container: &Container,
    ) -> Result<libcgroups::common::AnyCgroupManager> {
        let config = container
            .spec()
            .map_err(|e| Error::libcontainer(format!("load config of {id}"), &e))?;
        let path = config.cgroup_path.clone();
        libcgroups::common::create_cgroup_manager(CgroupConfig {
            cgroup_path: path.clone(),
            systemd_cgroup: false,
            container_name: id.to_owned(),
        })
        .map_err(|e| Error::Cgroup {
            path,
            message: crate::error::one_line(&e),
        })
    }

    /// The container's cgroup path (relative to each hierarchy's mount point).
    pub fn cgroup_path(&self, id: &str) -> Result<PathBuf> {
        let container = self.load(id)?;
        container
            .spec()
            .map(|c| c.cgroup_path)
            .map_err(|e| Error::libcontainer(format!("load config of {id}"), &e))
    }

    /// PIDs (host namespace) of every process in the container's cgroup.
    pub fn processes(&self, id: &str) -> Result<Vec<i32>> {
        let container = self.load(id)?;
        let manager = self.cgroup_manager(id, &container)?;
        let mut pids: Vec<i32> = manager
            .get_all_pids()
            .map_err(|e| Error::Cgroup {
                path: self.container_dir(id),
                message: crate::error::one_line(&e),
            })?
            .into_iter()
            .map(Pid::as_raw)
            .collect();
        pids.sort_unstable();
        Ok(pids)
    }

    /// Resource usage of the container's cgroup (cpu, memory, pids, blkio, hugetlb), as
    /// libcgroups reports it for v1 or v2; for `docker stats`.
    pub fn stats(&self, id: &str) -> Result<libcgroups::stats::Stats> {
        let container = self.load(id)?;
        let manager = self.cgroup_manager(id, &container)?;
        manager.stats().map_err(|e| Error::Cgroup {
            path: self.container_dir(id),
            message: crate::error::one_line(&e),
        })
    }

    /// Applies new resource limits to a live container (`docker update`).
    pub fn update_resources(&self, id: &str, resources: &LinuxResources) -> Result<()> {
        let container = self.load(id)?;
        let manager = self.cgroup_manager(id, &container)?;
        manager
            .apply(&ControllerOpt {
                resources,
                disable_oom_killer: resources
                    .memory()
                    .as_ref()
                    .and_then(|m| m.disable_oom_killer())
                    .unwrap_or(false),
                oom_score_adj: None,
                freezer_state: None,
            })
            .map_err(|e| Error::Cgroup {
                path: self.container_dir(id),
                message: crate::error::one_line(&e),
            })
    }

    /// Whether the container's cgroup is frozen.
    pub fn is_paused(&self, id: &str) -> Result<bool> {
        Ok(self.load(id)?.status() == ContainerStatus::Paused)
    }

    /// Marks a created container as started (runs the user's process). Does not fork.
    pub fn start(&self, id: &str) -> Result<()> {
        let mut container = self.load(id)?;
        if !container.can_start() {
            return Err(Error::WrongState {
                id: id.to_owned(),
                status: status_name(container.status()).to_owned(),
                op: "start",
            });
        }
        container
            .start()
            .map_err(|e| Error::libcontainer(format!("start container {id}"), &e))
    }
}

/// The rootfs named by a bundle's config.json (`<bundle>/rootfs` if unreadable).
fn rootfs_of(bundle: &Path) -> PathBuf {
    let root = fs::read(bundle.join("config.json"))
        .ok()
        .and_then(|text| serde_json::from_slice::<serde_json::Value>(&text).ok())
        .and_then(|v| v["root"]["path"].as_str().map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("rootfs"));
    bundle.join(root)
}

/// The libcontainer builder both [`create`] and [`exec`] start from: state root, pid file,
/// console socket, inherited fds and the process's stdio.
fn base_builder(
    runtime: &Runtime,
    id: &str,
    pid_file: Option<&PathBuf>,
    console_socket: Option<&PathBuf>,
    preserve_fds: i32,
    [stdin, stdout, stderr]: [Option<OwnedFd>; 3],
) -> Result<ContainerBuilder> {
    let mut builder = ContainerBuilder::new(id.to_owned(), SyscallType::default())
        .with_root_path(runtime.root())
        .map_err(|e| Error::libcontainer("runtime root", &e))?
        .with_pid_file(pid_file)
        .map_err(|e| Error::libcontainer("pid file", &e))?
        .with_console_socket(console_socket)
        .with_preserved_fds(preserve_fds);
    if let Some(fd) = stdin {
        builder = builder.with_stdin(fd);
    }
    if let Some(fd) = stdout {
        builder = builder.with_stdout(fd);
    }
    if let Some(fd) = stderr {
        builder = builder.with_stderr(fd);
    }
    Ok(builder)
}

/// Options of [`create`].
#[derive(Debug, Default)]
pub(crate) struct CreateOptions {
    pub pid_file: Option<PathBuf>,
    pub console_socket: Option<PathBuf>,
    pub preserve_fds: i32,
    pub no_pivot: bool,
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
    /// `false` for a foreground `run`, which may use a terminal without a console socket.
    pub detach: bool,
    /// Where the bundle's root filesystem is mounted for this create, when not at its own path
    /// (the monitor's private mount namespace, see `monitor::serve`).
    pub rootfs: Option<PathBuf>,
}

/// Loads and checks a bundle's config.json; returns the spec and the absolute rootfs.
fn load_bundle(bundle: &Path) -> Result<(Spec, PathBuf)> {
    let bundle_err = |reason: String| Error::Bundle {
        bundle: bundle.to_owned(),
        reason,
    };
    let config = bundle.join("config.json");
    let text = fs::read_to_string(&config).map_err(|e| bundle_err(format!("config.json: {e}")))?;
    let spec: Spec = serde_json::from_str(&text)
        .map_err(|e| bundle_err(format!("malformed config.json: {e}")))?;
    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| bundle_err("config.json has no root".into()))?;
    let rootfs_path = if root.path().is_absolute() {
        root.path().clone()
    } else {
        bundle.join(root.path())
    };
    let rootfs = fs::canonicalize(&rootfs_path)
        .map_err(|e| bundle_err(format!("rootfs {}: {e}", rootfs_path.display())))?;
    if !rootfs.is_dir() {
        return Err(bundle_err(format!(
            "rootfs {} is not a directory",
            rootfs.display()
        )));
    }
    // A relative root is meant to live in the bundle: refuse one that a symlink sends elsewhere.
    if root.path().is_relative() && !rootfs.starts_with(bundle) {
        return Err(bundle_err(format!(
            "rootfs {} resolves outside the bundle (to {})",
            rootfs_path.display(),
            rootfs.display()
        )));
    }
    if spec.process().is_none() {
        return Err(bundle_err("config.json has no process".into()));
    }
    Ok((spec, rootfs))
}

/// Creates container `id` from `bundle` (runc's `create`). Returns the init's pid, a child of
/// the calling process. FORKS: call only from a single-threaded process.
pub(crate) fn create(
    runtime: &Runtime,
    id: &str,
    bundle: &Path,
    opts: CreateOptions,
) -> Result<Pid> {
    validate_id(id)?;
    let bundle = fs::canonicalize(bundle).map_err(|e| Error::Bundle {
        bundle: bundle.to_owned(),
        reason: e.to_string(),
    })?;
    let (mut spec, rootfs) = load_bundle(&bundle)?;
    let moved_rootfs = opts.rootfs.is_some();
    let rootfs = opts.rootfs.clone().unwrap_or(rootfs);
    let dir = runtime.container_dir(id);
    if dir.exists() {
        return Err(Error::AlreadyExists(id.to_owned()));
    }
    fs::create_dir_all(runtime.root())
        .map_err(|e| Error::io(format!("create {}", runtime.root().display()), e))?;

    // A seccomp profile goes to the init precompiled (see `seccomp_filter`); one that cannot
    // be compiled is left to libcontainer, which reports the problem the usual way.
    let precompiled = spec
        .linux()
        .as_ref()
        .and_then(|l| l.seccomp().as_ref())
        .filter(|profile| seccomp_filter::precompilable(profile))
        .and_then(|profile| {
            seccomp_filter::compiled(&runtime.root().join(SECCOMP_CACHE), profile)
                .and_then(|program| PrecompiledSeccomp::new(&program, profile))
                .inspect_err(|err| tracing::warn!(%err, "seccomp profile not precompiled"))
                .ok()
        });

    // libcontainer reads config.json from the bundle itself. When the spec lacks a cgroups
    // path or its seccomp profile is precompiled, hand it a patched copy (absolute rootfs,
    // explicit cgroup, no profile) from a private staging bundle, and record the real bundle
    // in the state afterwards: `exec` reads the real one.
    let needs_cgroup = spec
        .linux()
        .as_ref()
        .is_none_or(|l| l.cgroups_path().is_none());

    // Berth's own init for the specs it covers (see `init`); libcontainer for the rest.
    if precompiled.is_some() || spec.linux().as_ref().is_none_or(|l| l.seccomp().is_none()) {
        let mut own = spec.clone();
        let mut linux = own.linux().clone().unwrap_or_default();
        if needs_cgroup {
            linux.set_cgroups_path(Some(PathBuf::from(format!("{DEFAULT_CGROUP_PARENT}/{id}"))));
        }
        linux.set_seccomp(None);
        own.set_linux(Some(linux));
        if precompiled.is_some() {
            if let Some(process) = own.process_mut() {
                seccomp_filter::grant_filter_loading(process);
            }
        }
        match init::unsupported(&own, &opts) {
            None => {
                let launch = init::Launch {
                    id,
                    bundle: &bundle,
                    spec: &own,
                    rootfs: &rootfs,
                    seccomp: precompiled.as_ref(),
                };
                return init::create(runtime, &launch, opts);
            }
            Some(reason) => tracing::debug!(reason, "container created by libcontainer"),
        }
    }

    let staged = needs_cgroup || precompiled.is_some() || moved_rootfs;
    let staging = runtime.root().join(format!(".{id}.bundle"));
    let build_bundle = if staged {
        let mut linux = spec.linux().clone().unwrap_or_default();
        if needs_cgroup {
            linux.set_cgroups_path(Some(PathBuf::from(format!("{DEFAULT_CGROUP_PARENT}/{id}"))));
        }
        if precompiled.is_some() {
            linux.set_seccomp(None);
        }
        spec.set_linux(Some(linux));
        if precompiled.is_some() {
            if let Some(process) = spec.process_mut() {
                seccomp_filter::grant_filter_loading(process);
            }
        }
        let mut root = spec.root().clone().unwrap_or_default();
        root.set_path(rootfs.clone());
        spec.set_root(Some(root));
        fs::create_dir_all(&staging)
            .map_err(|e| Error::io(format!("create {}", staging.display()), e))?;
        let text = serde_json::to_vec(&spec).map_err(|e| Error::json("encode config.json", e))?;
        fs::write(staging.join("config.json"), text)
            .map_err(|e| Error::io(format!("write {}", staging.display()), e))?;
        staging.clone()
    } else {
        bundle.clone()
    };

    let builder = base_builder(
        runtime,
        id,
        opts.pid_file.as_ref(),
        opts.console_socket.as_ref(),
        opts.preserve_fds,
        [opts.stdin, opts.stdout, opts.stderr],
    )?;
    let builder = builder.with_executor(WorkloadExecutor {
        seccomp: precompiled,
    });
    let result = builder
        .as_init(&build_bundle)
        .with_systemd(false)
        .with_detach(opts.detach || opts.console_socket.is_some())
        .with_no_pivot(opts.no_pivot)
        .build();
    if staged {
        let _ = fs::remove_dir_all(&staging);
    }
    let mut container = match result {
        Ok(container) => container,
        // Lost a race with a concurrent create of the same id: its directory is not ours.
        Err(libcontainer::error::LibcontainerError::Exist) => {
            return Err(Error::AlreadyExists(id.to_owned()))
        }
        Err(e) => {
            // libcontainer cleans up after a failure in the processes, not after one in its
            // own validation: make sure no state directory is left either way.
            let _ = fs::remove_dir_all(&dir);
            return Err(Error::libcontainer(format!("create container {id}"), &e));
        }
    };
    if staged {
        container.state.bundle = bundle;
        container
            .save()
            .map_err(|e| Error::libcontainer(format!("save state of {id}"), &e))?;
    }
    container
        .pid()
        .ok_or_else(|| Error::Monitor(format!("container {id} has no pid after create")))
}

/// The process `exec` runs, as runc derives it: the container's environment with the
/// overrides, its capabilities plus the added ones, its rlimits and no_new_privs, root (or the
/// given user) in `/` (or the given directory), a terminal when a console socket is given.
fn exec_process(spec: &Spec, opts: &ExecOptions) -> Result<Process> {
    let base = spec
        .process()
        .as_ref()
        .ok_or_else(|| Error::InvalidOption("the container's spec has no process".into()))?;
    if opts.args.is_empty() {
        return Err(Error::InvalidOption("exec needs a command".into()));
    }
    if opts.cwd.as_ref().is_some_and(|c| c.is_relative()) {
        return Err(Error::InvalidOption(
            "the working directory must be an absolute path".into(),
        ));
    }
    let mut env: Vec<String> = base
        .env()
        .iter()
        .flatten()
        .filter(|kv| !opts.env.contains_key(kv.split('=').next().unwrap_or("")))
        .cloned()
        .collect();
    env.extend(opts.env.iter().map(|(k, v)| format!("{k}={v}")));

    let mut added = HashSet::new();
    for cap in &opts.caps {
        let name = cap.to_ascii_uppercase();
        let name = name.strip_prefix("CAP_").unwrap_or(&name).to_owned();
        let cap: Capability = format!("CAP_{name}")
            .parse()
            .map_err(|_| Error::InvalidOption(format!("unknown capability {cap:?}")))?;
        added.insert(cap);
    }
    let with_added = |set: &Option<HashSet<Capability>>| -> Option<HashSet<Capability>> {
        Some(set.iter().flatten().chain(&added).copied().collect())
    };
    let capabilities = match base.capabilities() {
        Some(c) => {
            let mut caps = c.clone();
            caps.set_bounding(with_added(c.bounding()))
                .set_effective(with_added(c.effective()))
                .set_permitted(with_added(c.permitted()));
            // Inheritable capabilities never come from the exec's request (GHSA-f3fp-gc8g-vw66).
            if c.inheritable().is_some() {
                caps.set_ambient(with_added(c.ambient()));
            } else {
                caps.set_ambient(None);
            }
            Some(caps)
        }
        None => None,
    };

    let mut user = oci_spec::runtime::User::default();
    user.set_uid(opts.user.unwrap_or(0))
        .set_gid(opts.group.unwrap_or(0))
        .set_additional_gids(
            (!opts.additional_gids.is_empty()).then(|| opts.additional_gids.clone()),
        );
    let mut process = Process::default();
    let console_size = opts.console_size.and_then(|(rows, cols)| {
        oci_spec::runtime::BoxBuilder::default()
            .height(u32::from(rows))
            .width(u32::from(cols))
            .build()
            .ok()
    });
    process
        .set_console_size(console_size)
        .set_terminal(Some(opts.console_socket.is_some()))
        .set_args(Some(opts.args.clone()))
        .set_env(Some(env))
        .set_cwd(opts.cwd.clone().unwrap_or_else(|| PathBuf::from("/")))
        .set_user(user)
        .set_capabilities(capabilities)
        .set_rlimits(base.rlimits().clone())
        .set_no_new_privileges(if opts.no_new_privs {
            Some(true)
        } else {
            base.no_new_privileges()
        })
        .set_apparmor_profile(None)
        .set_oom_score_adj(None)
        .set_selinux_label(None);
    Ok(process)
}

/// Options of [`exec`].
#[derive(Debug, Default)]
pub(crate) struct ExecOptions {
    pub process: Option<PathBuf>,
    pub args: Vec<String>,
    pub env: HashMap<String, String>,
    pub cwd: Option<PathBuf>,
    pub user: Option<u32>,
    pub group: Option<u32>,
    pub additional_gids: Vec<u32>,
    pub no_new_privs: bool,
    pub caps: Vec<String>,
    /// The terminal's initial (rows, columns).
    pub console_size: Option<(u16, u16)>,
    pub console_socket: Option<PathBuf>,
    pub pid_file: Option<PathBuf>,
    pub preserve_fds: i32,
    pub detach: bool,
    pub ignore_paused: bool,
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
}

/// Runs an extra process inside a running container (runc's `exec`). Returns its pid, a child
/// of the calling process. FORKS: call only from a single-threaded process.
pub(crate) fn exec(runtime: &Runtime, id: &str, opts: ExecOptions) -> Result<Pid> {
    let container = runtime.load(id)?;
    match container.status() {
        ContainerStatus::Running => {}
        ContainerStatus::Paused if opts.ignore_paused => {}
        status => {
            return Err(Error::WrongState {
                id: id.to_owned(),
                status: status_name(status).to_owned(),
                op: "exec",
            })
        }
    }
    if opts.process.is_none() && opts.args.is_empty() {
        return Err(Error::InvalidOption(
            "exec needs a command or --process".into(),
        ));
    }
    // The exec'd process is described in full here rather than by libcontainer's tenant
    // builder, which leaves out the container's seccomp profile and its rlimits, and cannot
    // give a process a terminal without a process file.
    let (spec, _) = load_bundle(container.bundle())?;
    let mut process = match &opts.process {
        Some(path) => {
            let text = fs::read_to_string(path)
                .map_err(|e| Error::io(format!("read {}", path.display()), e))?;
            serde_json::from_str(&text)
                .map_err(|e| Error::json(format!("process file {}", path.display()), e))?
        }
        None => exec_process(&spec, &opts)?,
    };
    let profile = spec.linux().as_ref().and_then(|l| l.seccomp().as_ref());
    let precompiled =
        match profile {
            Some(profile) if seccomp_filter::precompilable(profile) => Some(
                seccomp_filter::compiled(&runtime.root().join(SECCOMP_CACHE), profile)
                    .and_then(|program| PrecompiledSeccomp::new(&program, profile))?,
            ),
            Some(_) => return Err(Error::InvalidOption(
                "exec into a container whose seccomp profile notifies a listener is not supported"
                    .into(),
            )),
            None => None,
        };
    if precompiled.is_some() {
        seccomp_filter::grant_filter_loading(&mut process);
    }
    let process_file = runtime.container_dir(id).join(format!(
        "exec-{}-{}.json",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    ));
    let text = serde_json::to_vec(&process).map_err(|e| Error::json("encode process", e))?;
    fs::write(&process_file, text)
        .map_err(|e| Error::io(format!("write {}", process_file.display()), e))?;

    let builder = base_builder(
        runtime,
        id,
        opts.pid_file.as_ref(),
        opts.console_socket.as_ref(),
        opts.preserve_fds,
        [opts.stdin, opts.stdout, opts.stderr],
    )?;
    let builder = builder.with_executor(WorkloadExecutor {
        seccomp: precompiled,
    });
    let built = builder
        .as_tenant()
        .with_detach(opts.detach || opts.console_socket.is_some())
        .with_process(Some(&process_file))
        .with_ignore_paused(opts.ignore_paused)
        .build();
    let _ = fs::remove_file(&process_file);
    built.map_err(|e| Error::libcontainer(format!("exec in container {id}"), &e))
}

/// Exit code of a wait status the way shells and Docker report it (128+signal).
pub(crate) fn exit_code(status: nix::sys::wait::WaitStatus) -> Option<(i32, Option<i32>)> {
    use nix::sys::wait::WaitStatus;
    match status {
        WaitStatus::Exited(_, code) => Some((code, None)),
        WaitStatus::Signaled(_, sig, _) => Some((128 + sig as i32, Some(sig as i32))),
        _ => None,
    }
}
