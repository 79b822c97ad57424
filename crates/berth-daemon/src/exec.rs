//! Exec instances (`docker exec`): created against a running container, started through a
//! monitor in exec mode, and kept in memory (as dockerd does) until their container goes.
//!
//! Like a container, an exec process writes a json-file log of its own under
//! `<exec-root>/exec/<exec-id>/`, which is what attached clients read, so no output is lost
//! between the process starting and the client's stream being set up.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use berth_runtime::monitor::{self, LogConfig, MonitorConfig, MonitorMode};
use serde::Deserialize;

use crate::daemon::Daemon;
use crate::error::{Error, Result};
use crate::events::lock;

/// The body of `POST /containers/{id}/exec`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ExecConfig {
    /// Attach the client's stdin.
    pub attach_stdin: bool,
    /// Attach stdout.
    pub attach_stdout: bool,
    /// Attach stderr.
    pub attach_stderr: bool,
    /// Allocate a pseudo-terminal.
    pub tty: bool,
    /// Extra environment.
    pub env: Option<Vec<String>>,
    /// Command and arguments.
    pub cmd: Option<Vec<String>>,
    /// Run with all capabilities.
    pub privileged: bool,
    /// `user[:group]`; the container's user by default.
    pub user: Option<String>,
    /// Working directory; the container's by default.
    pub working_dir: Option<String>,
    /// The terminal's initial `[height, width]`.
    pub console_size: Option<Vec<usize>>,
    /// The detach sequence in Docker's notation (`ctrl-p,ctrl-q` when absent). docker-py
    /// spells the key in camel case, which dockerd's case-insensitive decoding accepts.
    #[serde(alias = "detachKeys")]
    pub detach_keys: Option<String>,
}

/// One exec instance.
#[derive(Debug, Clone)]
pub struct ExecInstance {
    /// 64-hex ID.
    pub id: String,
    /// The container it runs in.
    pub container_id: String,
    /// What to run.
    pub config: ExecConfig,
    /// Started (an instance starts once).
    pub started: bool,
    /// Its process runs.
    pub running: bool,
    /// Host PID while running.
    pub pid: i64,
    /// Exit code once it ended.
    pub exit_code: Option<i64>,
}

/// In-memory exec instances.
#[derive(Default)]
pub struct ExecStore(Mutex<HashMap<String, ExecInstance>>);

impl ExecStore {
    /// A copy of instance `id`.
    pub fn get(&self, id: &str) -> Result<ExecInstance> {
        lock(&self.0)
            .get(id)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("No such exec instance: {id}")))
    }

    fn update(&self, id: &str, f: impl FnOnce(&mut ExecInstance)) {
        if let Some(e) = lock(&self.0).get_mut(id) {
            f(e);
        }
    }

    /// Forgets one instance (a finished health probe).
    pub(crate) fn forget(&self, id: &str) {
        lock(&self.0).remove(id);
    }

    /// Forgets the instances of a removed container; returns their IDs.
    pub fn forget_container(&self, container_id: &str) -> Vec<String> {
        let mut map = lock(&self.0);
        let gone: Vec<String> = map
            .values()
            .filter(|e| e.container_id == container_id)
            .map(|e| e.id.clone())
            .collect();
        for id in &gone {
            map.remove(id);
        }
        gone
    }
}

/// Files of an exec instance.
pub struct ExecPaths {
    /// `<exec-root>/exec/<id>`.
    pub dir: PathBuf,
    /// Its json-file log.
    pub log: PathBuf,
    /// Exit file.
    pub exit_file: PathBuf,
    /// Attach socket.
    pub attach_socket: PathBuf,
}

impl Daemon {
    /// Paths of exec instance `id`.
    pub fn exec_paths(&self, id: &str) -> ExecPaths {
        let dir = self.config.exec_root.join("exec").join(id);
        ExecPaths {
            log: dir.join("log.json"),
            exit_file: dir.join("exit.json"),
            attach_socket: self
                .config
                .exec_root
                .join("s")
                .join(format!("{}.sock", &id[..id.len().min(24)])),
            dir,
        }
    }

    /// `POST /containers/{id}/exec`: registers an instance.
    pub fn create_exec(&self, key: &str, config: ExecConfig) -> Result<String> {
        let record = self.containers.get(key)?;
        if !record.state.running {
            return Err(Error::Conflict(format!(
                "Container {} is not running",
                record.id
            )));
        }
        if record.state.paused {
            return Err(Error::Conflict(format!(
                "Container {} is paused, unpause the container before exec",
                record.id
            )));
        }
        let cmd = config.cmd.clone().unwrap_or_default();
        if cmd.is_empty() {
            return Err(Error::InvalidParameter("No exec command specified".into()));
        }
        let id = crate::names::random_id();
        lock(&self.execs.0).insert(
            id.clone(),
            ExecInstance {
                id: id.clone(),
                container_id: record.id.clone(),
                config,
                started: false,
                running: false,
                pid: 0,
                exit_code: None,
            },
        );
        self.container_event(
            &format!("exec_create: {}", cmd.join(" ")),
            &record,
            &[("execID", id.clone())],
        );
        Ok(id)
    }

    /// `POST /exec/{id}/start`: runs the process through a monitor and watches it.
    pub async fn start_exec(self: &Arc<Self>, id: &str) -> Result<ExecInstance> {
        Ok(self.start_exec_attached(id, false).await?.0)
    }

    /// As [`Self::start_exec`]; with `attach`, also returns a connection to the exec monitor's
    /// attach socket made before the process started, so it carries all of its output.
    pub async fn start_exec_attached(
        self: &Arc<Self>,
        id: &str,
        attach: bool,
    ) -> Result<(ExecInstance, Option<std::os::unix::net::UnixStream>)> {
        let exec = {
            let mut map = lock(&self.execs.0);
            let e = map
                .get_mut(id)
                .ok_or_else(|| Error::NotFound(format!("No such exec instance: {id}")))?;
            if e.started {
                return Err(Error::Conflict(format!(
                    "Exec instance {id} has already been started"
                )));
            }
            e.started = true;
            e.clone()
        };
        let record = self.containers.get(&exec.container_id)?;
        if !record.state.running {
            return Err(Error::Conflict(format!(
                "Container {} is not running",
                record.id
            )));
        }
        let d = Arc::clone(self);
        let e2 = exec.clone();
        let (started, stream) =
            tokio::task::spawn_blocking(move || d.launch_exec(&e2, &record, attach))
                .await
                .map_err(|e| Error::Internal(format!("exec task: {e}")))??;
        self.execs.update(id, |e| {
            e.running = true;
            e.pid = i64::from(started.container_pid);
        });
        let record = self.containers.get(&exec.container_id)?;
        let cmd = exec.config.cmd.clone().unwrap_or_default().join(" ");
        self.container_event(
            &format!("exec_start: {cmd}"),
            &record,
            &[("execID", id.to_string())],
        );
        let d = Arc::clone(self);
        let eid = id.to_string();
        tokio::spawn(async move {
            crate::lifecycle::wait_for_pid(started.monitor_pid).await;
            d.finish_exec(&eid);
        });
        Ok((self.execs.get(id)?, stream))
    }

    fn launch_exec(
        &self,
        exec: &ExecInstance,
        record: &crate::store::ContainerRecord,
        attach: bool,
    ) -> Result<(
        monitor::MonitorStarted,
        Option<std::os::unix::net::UnixStream>,
    )> {
        let paths = self.exec_paths(&exec.id);
        for dir in [Some(paths.dir.as_path()), paths.attach_socket.parent()]
            .into_iter()
            .flatten()
        {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
        }
        let c = &exec.config;
        let rootfs = self.images.mount_rootfs(&record.id)?;
        let user = c
            .user
            .clone()
            .filter(|u| !u.is_empty())
            .or_else(|| record.config.user.clone().filter(|u| !u.is_empty()))
            .unwrap_or_else(|| "0".into());
        let resolved = berth_runtime::spec::user::resolve_user(&rootfs.path, &user, &[])?;
        let mut env: Vec<String> = record.config.env.clone().unwrap_or_default();
        for var in c.env.iter().flatten() {
            let key = var.split('=').next().unwrap_or(var);
            env.retain(|e| e.split('=').next() != Some(key));
            env.push(var.clone());
        }
        if !env.iter().any(|e| e.starts_with("HOME=")) {
            env.push(format!("HOME={}", resolved.home));
        }
        let cwd = c
            .working_dir
            .clone()
            .filter(|w| !w.is_empty())
            .or_else(|| record.config.working_dir.clone().filter(|w| !w.is_empty()))
            .map(PathBuf::from);
        let caps = if c.privileged {
            berth_runtime::spec::capabilities(&berth_runtime::spec::RunOptions {
                privileged: true,
                ..Default::default()
            })?
        } else {
            Vec::new()
        };
        let config = MonitorConfig {
            id: record.id.clone(),
            runtime_root: self.runtime.root().to_path_buf(),
            mode: MonitorMode::Exec {
                args: c.cmd.clone().unwrap_or_default(),
                env,
                cwd,
                uid: Some(resolved.uid),
                gid: Some(resolved.gid),
                additional_gids: resolved.additional_gids,
                caps,
                no_new_privileges: false,
            },
            tty: c.tty,
            open_stdin: c.attach_stdin,
            console_size: crate::lifecycle::console_size(c.console_size.as_deref()),
            log: Some(LogConfig {
                path: paths.log.clone(),
                max_size: 10 << 20,
                max_files: 1,
            }),
            exit_file: paths.exit_file.clone(),
            attach_socket: Some(paths.attach_socket.clone()),
            monitor_pid_file: paths.dir.join("monitor.pid"),
            container_pid_file: paths.dir.join("process.pid"),
        };
        let exe = crate::lifecycle::self_exe();
        if !attach {
            return Ok((monitor::spawn_monitor(&exe, &config)?, None));
        }
        let created = monitor::spawn_monitor_created(&exe, &config)?;
        let stream = std::os::unix::net::UnixStream::connect(&paths.attach_socket)
            .map_err(|e| Error::io(format!("connect to {}", paths.attach_socket.display()), e))?;
        Ok((created.start()?, Some(stream)))
    }

    /// Records an exec's exit from its exit file (idempotent).
    pub fn finish_exec(&self, id: &str) {
        let Ok(exec) = self.execs.get(id) else {
            return;
        };
        if !exec.running {
            return;
        }
        let paths = self.exec_paths(id);
        let code = monitor::read_exit(&paths.exit_file)
            .ok()
            .flatten()
            .map_or(126, |s| i64::from(s.exit_code));
        self.execs.update(id, |e| {
            e.running = false;
            e.pid = 0;
            e.exit_code = Some(code);
        });
        if let Ok(record) = self.containers.get(&exec.container_id) {
            self.container_event(
                "exec_die",
                &record,
                &[("execID", id.to_string()), ("exitCode", code.to_string())],
            );
        }
    }

    /// Records that exec `id` could not start.
    pub fn fail_exec(&self, id: &str, err: &Error) {
        let code = if err.to_string().contains("not found") {
            127
        } else {
            126
        };
        self.execs.update(id, |e| {
            e.running = false;
            e.exit_code = Some(code);
        });
    }

    /// Whether exec `id`'s process has ended (its exit file exists).
    pub fn exec_exited(&self, id: &str) -> bool {
        matches!(
            monitor::read_exit(&self.exec_paths(id).exit_file),
            Ok(Some(_))
        )
    }
}
