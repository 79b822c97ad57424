//! The per-container monitor (`berth monitor`), and the library API the daemon drives it with.
//!
//! One monitor process per container (and one per `exec`) owns the container's stdio for its
//! whole life, independently of the daemon:
//!
//! 1. The daemon calls [`spawn_monitor`], which runs `berth monitor --config - --status-fd 3`
//!    with the [`MonitorConfig`] as JSON on stdin and a pipe on fd 3.
//! 2. The monitor detaches (double fork + `setsid`), makes itself a child subreaper, creates the
//!    stdio (pipes, or a pty received over a console socket), creates and starts the
//!    container through libcontainer (it is single-threaded, as libcontainer requires), writes
//!    its own pid and the container's pid to files, and reports `{"monitor_pid":..,
//!    "container_pid":..}` or `{"error":"one line"}` on the status pipe. So the daemon's
//!    `start` returns real errors.
//! 3. It then loops on `poll(2)`: container output goes to the json-file log ([`logfile`]) and
//!    to attached clients; clients of the attach socket ([`attach`] documents the framing)
//!    send stdin, resizes and close-stdin; `SIGCHLD` (through a signalfd) reaps the container.
//! 4. When the container's init exits, it drains the output, writes the exit file atomically
//!    ([`ExitStatus`], tmp + fsync + rename) and exits. It does not delete the container: the
//!    daemon reads the exit file ([`read_exit`]) and calls [`crate::Runtime::delete`].

pub mod attach;
pub mod logfile;
mod serve;

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
pub use logfile::LogConfig;

/// What the monitor runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum MonitorMode {
    /// Create and start a container from a bundle.
    Container {
        /// The OCI bundle (config.json and rootfs).
        bundle: PathBuf,
    },
    /// Run an extra process in a running container (`docker exec`).
    Exec {
        /// Command and arguments.
        args: Vec<String>,
        /// Extra environment (`KEY=value`).
        #[serde(default)]
        env: Vec<String>,
        /// Working directory inside the container.
        #[serde(default)]
        cwd: Option<PathBuf>,
        /// uid to run as.
        #[serde(default)]
        uid: Option<u32>,
        /// gid to run as.
        #[serde(default)]
        gid: Option<u32>,
        /// Supplementary groups.
        #[serde(default)]
        additional_gids: Vec<u32>,
        /// Capabilities (`CAP_*`) added to the container's.
        #[serde(default)]
        caps: Vec<String>,
        /// Set no-new-privileges.
        #[serde(default)]
        no_new_privileges: bool,
    },
}

/// Everything a monitor needs; the daemon fills it and passes it to [`spawn_monitor`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonitorConfig {
    /// Container id.
    pub id: String,
    /// Runtime state root (`Runtime::root`).
    pub runtime_root: PathBuf,
    /// Container or exec.
    pub mode: MonitorMode,
    /// Give the process a pty (one stream) instead of pipes.
    #[serde(default)]
    pub tty: bool,
    /// Keep stdin open for attach clients; otherwise stdin is /dev/null.
    #[serde(default)]
    pub open_stdin: bool,
    /// json-file log; `None` discards output no client reads.
    #[serde(default)]
    pub log: Option<LogConfig>,
    /// Where the exit status is written when the process ends.
    pub exit_file: PathBuf,
    /// The attach socket to listen on (removed when the monitor exits).
    #[serde(default)]
    pub attach_socket: Option<PathBuf>,
    /// File receiving the monitor's pid.
    pub monitor_pid_file: PathBuf,
    /// File receiving the container process's pid.
    pub container_pid_file: PathBuf,
}

/// What [`spawn_monitor`] returns once the container runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonitorStarted {
    /// Pid of the monitor process.
    pub monitor_pid: i32,
    /// Pid (host namespace) of the container's process.
    pub container_pid: i32,
}

/// The exit file's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus {
    /// Exit code; 128+signal when killed by a signal (as Docker).
    pub exit_code: i32,
    /// The signal that killed the process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// When the exit was observed, RFC 3339 with nanoseconds.
    pub finished_at: String,
    /// Whether the cgroup's OOM killer fired.
    #[serde(default)]
    pub oom_killed: bool,
}

/// The status line the monitor writes on its status pipe.
#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
enum StatusReport {
    Started(MonitorStarted),
    Failed { error: String },
}

/// Starts a monitor for `config` by running `binary monitor ...` (normally the `berth`
/// executable itself) and waits until the container runs or fails. Safe to call from a
/// multi-threaded process: it only spawns a subprocess.
pub fn spawn_monitor(binary: &Path, config: &MonitorConfig) -> Result<MonitorStarted> {
    let text = serde_json::to_vec(config).map_err(|e| Error::json("encode monitor config", e))?;
    let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| Error::sys("create status pipe", e))?;
    let write_raw = write_end.as_raw_fd();
    let mut cmd = Command::new(binary);
    cmd.arg("monitor")
        .arg("--config")
        .arg("-")
        .arg("--status-fd")
        .arg("3")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: dup2 and fcntl are async-signal-safe; this runs in the forked child before
    // exec. dup2 clears FD_CLOEXEC on the new descriptor (but is a no-op when the pipe already
    // is fd 3, hence the fcntl), so only fd 3 survives exec.
    unsafe {
        cmd.pre_exec(move || {
            if write_raw == 3 {
                if libc::fcntl(3, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(write_raw, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::io(format!("spawn {}", binary.display()), e))?;
    drop(write_end);
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(&text)
            .map_err(|e| Error::io("send monitor config", e))?;
    }
    let mut report = Vec::new();
    std::fs::File::from(read_end)
        .read_to_end(&mut report)
        .map_err(|e| Error::io("read monitor status", e))?;
    // The direct child exits once the detached monitor is running.
    let _ = child.wait();
    let line = String::from_utf8_lossy(&report);
    match serde_json::from_str::<StatusReport>(line.trim()) {
        Ok(StatusReport::Started(s)) => Ok(s),
        Ok(StatusReport::Failed { error }) => Err(Error::Monitor(error)),
        Err(_) if line.trim().is_empty() => Err(Error::Monitor(format!(
            "monitor for {} exited without reporting",
            config.id
        ))),
        Err(_) => Err(Error::Monitor(line.trim().to_owned())),
    }
}

/// Reads an exit file; `Ok(None)` while the process still runs (no file yet).
pub fn read_exit(path: &Path) -> Result<Option<ExitStatus>> {
    match std::fs::read(path) {
        Ok(text) => serde_json::from_slice(&text)
            .map(Some)
            .map_err(|e| Error::json(format!("parse {}", path.display()), e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(format!("read {}", path.display()), e)),
    }
}

/// Writes `data` to `path` atomically: temp file, fsync, rename.
pub(crate) fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

struct Args {
    config: Option<PathBuf>,
    status_fd: Option<i32>,
    foreground: bool,
}

fn parse_args(args: &[OsString]) -> std::result::Result<Args, String> {
    let mut out = Args {
        config: None,
        status_fd: None,
        foreground: false,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.to_str() {
            Some("--config") => {
                out.config = Some(PathBuf::from(it.next().ok_or("--config needs a value")?));
            }
            Some("--status-fd") => {
                let v = it
                    .next()
                    .and_then(|v| v.to_str())
                    .ok_or("--status-fd needs a value")?;
                out.status_fd = Some(v.parse().map_err(|_| format!("bad --status-fd {v:?}"))?);
            }
            Some("--foreground") => out.foreground = true,
            _ => return Err(format!("unknown argument {arg:?}")),
        }
    }
    Ok(out)
}

fn load_config(path: &Path) -> Result<MonitorConfig> {
    let text = if path == Path::new("-") {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .map_err(|e| Error::io("read config from stdin", e))?;
        buf
    } else {
        std::fs::read(path).map_err(|e| Error::io(format!("read {}", path.display()), e))?
    };
    serde_json::from_slice(&text).map_err(|e| Error::json("parse monitor config", e))
}

/// Runs the monitor with the arguments that follow `monitor`; returns the exit code.
///
/// `--config FILE|-` (JSON [`MonitorConfig`]), `--status-fd N` (where to report start-up),
/// `--foreground` (do not detach; for debugging).
pub fn main(args: &[OsString]) -> i32 {
    let args = match parse_args(args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("berth monitor: {e}");
            return 2;
        }
    };
    // SAFETY: the fd was handed to us by our spawner and nothing else owns it.
    let status = args.status_fd.map(|fd| unsafe { OwnedFd::from_raw_fd(fd) });
    if let Some(fd) = &status {
        // Keep it out of the container's processes.
        let _ = nix::fcntl::fcntl(
            fd.as_raw_fd(),
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        );
    }
    let config = match args
        .config
        .as_deref()
        .ok_or_else(|| Error::InvalidOption("--config is required".into()))
        .and_then(load_config)
    {
        Ok(c) => c,
        Err(e) => {
            report(
                status,
                &StatusReport::Failed {
                    error: crate::error::one_line(&e),
                },
            );
            return 1;
        }
    };
    serve::run(config, status, !args.foreground)
}

/// Writes the one-line status report and closes the pipe (EOF tells the spawner we are done).
fn report(status: Option<OwnedFd>, what: &StatusReport) {
    let line = serde_json::to_string(what).unwrap_or_else(|_| "{}".into());
    match status {
        Some(fd) => {
            let mut f = std::fs::File::from(fd);
            let _ = writeln!(f, "{line}");
        }
        None => eprintln!("{line}"),
    }
}
