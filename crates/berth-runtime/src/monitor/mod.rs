//! The per-container monitor (`berth monitor`), and the library API the daemon drives it with.
//!
//! One monitor process per container (and one per `exec`) owns the container's stdio for its
//! whole life, independently of the daemon:
//!
//! 1. The daemon calls [`spawn_monitor`], which runs `berth monitor --config - --fds-on-stdin`
//!    with a socket as stdin: the status pipe (and the start pipe) arrive on it with the first
//!    byte, then the [`MonitorConfig`] as JSON.
//! 2. The monitor detaches (double fork + `setsid`), makes itself a child subreaper, creates the
//!    stdio (pipes, or a pty received over a console socket), creates and starts the
//!    container (it is single-threaded, as creating one requires), writes
//!    its own pid and the container's pid to files, and reports `{"monitor_pid":..,
//!    "container_pid":..}` or `{"error":"one line"}` on the status pipe. So the daemon's
//!    `start` returns real errors.
//!    With [`spawn_monitor_created`] (two-phase, as containerd's shim), it reports
//!    `{"created":true}` once the container is created (its init waiting for `start`)
//!    and the attach socket listens, and starts the process only when the daemon asks, after
//!    connecting its attach clients, so they see all of the output.
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
        /// The directory holding every container's `<id>/merged` rootfs mount (the image
        /// store's `containers/`): the container is created in a mount namespace without the
        /// other containers' rootfs mounts (see `serve::without_sibling_rootfs_mounts`).
        #[serde(default)]
        rootfs_siblings: Option<PathBuf>,
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
    /// The terminal's initial size as (rows, columns), set before the process starts so that
    /// it never sees a 0×0 terminal (`HostConfig.ConsoleSize`); later sizes come as resizes.
    #[serde(default)]
    pub console_size: Option<(u16, u16)>,
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
    /// Two-phase mode: the attach socket listens and the process is ready to start.
    Created {
        created: bool,
    },
    Failed {
        error: String,
    },
}

/// A monitor whose container is created but not started ([`spawn_monitor_created`]).
///
/// Its attach socket already listens: clients connected before [`CreatedMonitor::start`]
/// receive all of the process's output. Dropping it without starting makes the monitor
/// delete the container (or skip the exec) and exit without an exit file.
#[derive(Debug)]
pub struct CreatedMonitor {
    id: String,
    status: std::io::BufReader<std::fs::File>,
    start: Option<std::fs::File>,
}

impl CreatedMonitor {
    /// Asks the monitor to start the process and waits until it runs or fails.
    pub fn start(mut self) -> Result<MonitorStarted> {
        let mut start = self
            .start
            .take()
            .ok_or_else(|| Error::Monitor(format!("monitor for {} already started", self.id)))?;
        start
            .write_all(b"s")
            .map_err(|e| Error::io(format!("ask monitor for {} to start", self.id), e))?;
        drop(start);
        match read_report(&mut self.status, &self.id)? {
            StatusReport::Started(s) => Ok(s),
            StatusReport::Failed { error } => Err(Error::Monitor(error)),
            StatusReport::Created { .. } => Err(Error::Monitor(format!(
                "monitor for {} reported created twice",
                self.id
            ))),
        }
    }
}

fn read_report(status: &mut impl std::io::BufRead, id: &str) -> Result<StatusReport> {
    let mut line = String::new();
    status
        .read_line(&mut line)
        .map_err(|e| Error::io("read monitor status", e))?;
    match serde_json::from_str::<StatusReport>(line.trim()) {
        Ok(r) => Ok(r),
        Err(_) if line.trim().is_empty() => Err(Error::Monitor(format!(
            "monitor for {id} exited without reporting"
        ))),
        Err(_) => Err(Error::Monitor(line.trim().to_owned())),
    }
}

/// Gives back memory a long-lived process touched and does not use now: free heap pages, and the
/// page-table entries of its clean read-only file pages (code and constants of the binary and
/// its libraries), which fault back from the page cache when next used. Monitors call it once
/// their container runs; the daemon after a quiet spell.
pub fn release_clean_memory() {
    serve::release_startup_memory();
}

/// Makes `dir`, the directory above every container's `<id>/merged` rootfs mount (the image
/// store's root), a private mount of its own, as dockerd does with its storage driver's home:
/// a monitor then drops every other container's rootfs from the mount namespace it creates its
/// container in with one unmount instead of one per running container (`serve`), and rootfs
/// mounts do not propagate into the host's other mount namespaces. Left as it is when already
/// a mount, or when something is mounted below it already (containers running from before; the
/// monitors then unmount the siblings one by one). Returns whether `dir` is a mount of its own.
pub fn own_mount_for_rootfs_parent(dir: &Path) -> Result<bool> {
    use nix::mount::{mount, MsFlags};
    let dir = std::fs::canonicalize(dir)
        .map_err(|e| Error::io(format!("resolve {}", dir.display()), e))?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| Error::io("read /proc/self/mountinfo", e))?;
    let escaped = mountinfo_escape(&dir.to_string_lossy());
    let below = format!("{escaped}/");
    let mut occupied = false;
    for mount_point in mountinfo.lines().filter_map(|l| l.split(' ').nth(4)) {
        if mount_point == escaped {
            return Ok(true);
        }
        occupied |= mount_point.starts_with(&below);
    }
    if occupied {
        return Ok(false);
    }
    mount(
        Some(&dir),
        &dir,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| Error::sys(format!("bind {} onto itself", dir.display()), e))?;
    mount(
        None::<&str>,
        &dir,
        None::<&str>,
        MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| Error::sys(format!("make {} private", dir.display()), e))?;
    Ok(true)
}

/// A path as `/proc/self/mountinfo` writes it (space, tab, newline and backslash in octal).
fn mountinfo_escape(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        match c {
            ' ' => out.push_str("\\040"),
            '\t' => out.push_str("\\011"),
            '\n' => out.push_str("\\012"),
            '\\' => out.push_str("\\134"),
            c => out.push(c),
        }
    }
    out
}

/// Starts a monitor for `config` by running `binary monitor ...` (normally the `berth`
/// executable itself) and waits until the container runs or fails. Safe to call from a
/// multi-threaded process: it only spawns a subprocess. Output produced before a client
/// connects to the attach socket is only in the log; use [`spawn_monitor_created`] to attach
/// first.
pub fn spawn_monitor(binary: &Path, config: &MonitorConfig) -> Result<MonitorStarted> {
    PendingMonitor::spawn(binary, false)?.started(config)
}

/// Two-phase start, as containerd's shim does it: runs the monitor, which creates the
/// container (its init waits on the exec fifo; an exec is not run yet) and listens on the
/// attach socket, and returns once it reports `created`. Connect the attach clients, then
/// call [`CreatedMonitor::start`].
pub fn spawn_monitor_created(binary: &Path, config: &MonitorConfig) -> Result<CreatedMonitor> {
    PendingMonitor::spawn(binary, true)?.created(config)
}

/// A monitor process started before its configuration exists: it is executed and initialised
/// while the caller still prepares the container (rootfs, network, bundle), then reads its
/// [`MonitorConfig`] from stdin. Dropped unconfigured, it reads end-of-file and exits without
/// having done anything.
pub struct PendingMonitor {
    child: std::process::Child,
    /// The monitor's stdin: the pipe ends arrived on it first, the configuration follows.
    config: Option<std::os::unix::net::UnixStream>,
    /// The status pipe; taken by the [`CreatedMonitor`] a two-phase start returns.
    status: Option<std::io::BufReader<std::fs::File>>,
    start: Option<std::fs::File>,
}

impl PendingMonitor {
    /// Runs `binary monitor` with the status pipe and, with `two_phase`, the start pipe.
    ///
    /// The pipe ends travel as `SCM_RIGHTS` with the first byte on the monitor's stdin (a
    /// socket), not as inherited descriptors placed by a `pre_exec` hook: without one,
    /// `Command` spawns with `posix_spawn` (a vfork), where a hook forces a full fork of the
    /// multi-threaded daemon, whose copy-on-write faults cost the daemon ~0.5 ms per start.
    pub fn spawn(binary: &Path, two_phase: bool) -> Result<Self> {
        use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
        let cloexec = nix::fcntl::OFlag::O_CLOEXEC;
        let (read_end, write_end) =
            nix::unistd::pipe2(cloexec).map_err(|e| Error::sys("create status pipe", e))?;
        let start_pipe = if two_phase {
            Some(nix::unistd::pipe2(cloexec).map_err(|e| Error::sys("create start pipe", e))?)
        } else {
            None
        };
        let (ours, theirs) = std::os::unix::net::UnixStream::pair()
            .map_err(|e| Error::io("create monitor config socket", e))?;
        let mut cmd = Command::new(binary);
        cmd.arg("monitor")
            .arg("--config")
            .arg("-")
            .arg("--fds-on-stdin")
            .stdin(Stdio::from(OwnedFd::from(theirs)))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd
            .spawn()
            .map_err(|e| Error::io(format!("spawn {}", binary.display()), e))?;
        let fds: Vec<i32> = std::iter::once(write_end.as_raw_fd())
            .chain(start_pipe.as_ref().map(|(r, _)| r.as_raw_fd()))
            .collect();
        let mut pending = PendingMonitor {
            child,
            config: Some(ours),
            status: Some(std::io::BufReader::new(std::fs::File::from(read_end))),
            start: None,
        };
        // The socket buffers the message until the monitor reads it.
        let sent = sendmsg::<()>(
            pending.config.as_ref().map_or(-1, |c| c.as_raw_fd()),
            &[std::io::IoSlice::new(b"F")],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::empty(),
            None,
        );
        // Dropping `pending` on failure reaps the monitor.
        sent.map_err(|e| Error::sys("hand the monitor its pipes", e))?;
        drop(write_end);
        pending.start = start_pipe.map(|(r, w)| {
            drop(r);
            std::fs::File::from(w)
        });
        Ok(pending)
    }

    /// Sends `config`, waits until the monitor has detached (its direct child exits then)
    /// and reads its report.
    fn configure(&mut self, config: &MonitorConfig) -> Result<StatusReport> {
        let text =
            serde_json::to_vec(config).map_err(|e| Error::json("encode monitor config", e))?;
        if let Some(mut stdin) = self.config.take() {
            stdin
                .write_all(&text)
                .map_err(|e| Error::io("send monitor config", e))?;
        }
        let _ = self.child.wait();
        match &mut self.status {
            Some(status) => read_report(status, &config.id),
            None => Err(Error::Monitor(format!(
                "monitor for {} was configured twice",
                config.id
            ))),
        }
    }

    /// Configures a monitor spawned one-phase and waits until its container runs.
    pub fn started(mut self, config: &MonitorConfig) -> Result<MonitorStarted> {
        match self.configure(config)? {
            StatusReport::Started(s) => Ok(s),
            StatusReport::Failed { error } => Err(Error::Monitor(error)),
            StatusReport::Created { .. } => Err(Error::Monitor(format!(
                "monitor for {} waits for a start it was not told about",
                config.id
            ))),
        }
    }

    /// Configures a monitor spawned two-phase and waits until its container is created.
    pub fn created(mut self, config: &MonitorConfig) -> Result<CreatedMonitor> {
        match self.configure(config)? {
            StatusReport::Created { .. } => match self.status.take() {
                Some(status) => Ok(CreatedMonitor {
                    id: config.id.clone(),
                    status,
                    start: self.start.take(),
                }),
                None => Err(Error::Monitor(format!(
                    "monitor for {} lost its status pipe",
                    config.id
                ))),
            },
            StatusReport::Failed { error } => Err(Error::Monitor(error)),
            StatusReport::Started(_) => Err(Error::Monitor(format!(
                "monitor for {} started without waiting",
                config.id
            ))),
        }
    }
}

impl Drop for PendingMonitor {
    fn drop(&mut self) {
        // Unconfigured: end-of-file on its stdin makes it exit; reap it.
        drop(self.config.take());
        let _ = self.child.wait();
    }
}

/// Asks the monitor listening on `attach_socket` to copy the output its container has already
/// written into the log ([`attach::SYNC`]) and waits until it has, at most `timeout`. Then a
/// read of the log holds everything written before this call, though the monitor may not
/// have been scheduled since.
pub fn sync_output(attach_socket: &Path, timeout: std::time::Duration) -> Result<()> {
    let io = |e| {
        Error::io(
            format!("sync output through {}", attach_socket.display()),
            e,
        )
    };
    let mut stream = std::os::unix::net::UnixStream::connect(attach_socket).map_err(io)?;
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream
        .write_all(&attach::encode(attach::SYNC, &[]))
        .map_err(io)?;
    // Output forwarded before the request was handled comes first; the hang-up is the answer.
    let mut sink = [0u8; 8192];
    loop {
        match stream.read(&mut sink) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io(e)),
        }
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

/// Writes `data` to `path` atomically (temp file, rename), so a reader never sees a partial
/// file.
///
/// Not fsynced: the monitor's files live in the exec root (runtime state, `/run` by
/// default), which only has to outlive a crash of the daemon, not of the machine: the page
/// cache survives the former, and after a reboot no container runs anyway. The fsyncs cost
/// two disk flushes on every container exit.
pub(crate) fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::File::create(&tmp)?.write_all(data)?;
    std::fs::rename(&tmp, path)
}

struct Args {
    config: Option<PathBuf>,
    status_fd: Option<i32>,
    start_fd: Option<i32>,
    fds_on_stdin: bool,
    foreground: bool,
}

fn parse_args(args: &[OsString]) -> std::result::Result<Args, String> {
    let mut out = Args {
        config: None,
        status_fd: None,
        start_fd: None,
        fds_on_stdin: false,
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
            Some("--start-fd") => {
                let v = it
                    .next()
                    .and_then(|v| v.to_str())
                    .ok_or("--start-fd needs a value")?;
                out.start_fd = Some(v.parse().map_err(|_| format!("bad --start-fd {v:?}"))?);
            }
            Some("--fds-on-stdin") => out.fds_on_stdin = true,
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
/// `--start-fd N` (two-phase: report `created`, then start when a byte arrives on N, abort on
/// EOF), `--fds-on-stdin` (both arrive as `SCM_RIGHTS` with stdin's first byte instead),
/// `--foreground` (do not detach; for debugging).
pub fn main(args: &[OsString]) -> i32 {
    let args = match parse_args(args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("berth monitor: {e}");
            return 2;
        }
    };
    let (status, start) = if args.fds_on_stdin {
        match fds_from_stdin() {
            Ok(fds) => fds,
            Err(e) => {
                eprintln!("berth monitor: {e}");
                return 1;
            }
        }
    } else {
        // SAFETY: the fd was handed to us by our spawner and nothing else owns it.
        let status = args.status_fd.map(|fd| unsafe { OwnedFd::from_raw_fd(fd) });
        // SAFETY: as above.
        let start = args.start_fd.map(|fd| unsafe { OwnedFd::from_raw_fd(fd) });
        (status, start)
    };
    for fd in status.iter().chain(start.iter()) {
        // Keep them out of the container's processes.
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
    serve::run(config, status, start, !args.foreground)
}

/// The status pipe and (two-phase) the start pipe, sent with the first byte on stdin
/// ([`PendingMonitor::spawn`]).
fn fds_from_stdin() -> Result<(Option<OwnedFd>, Option<OwnedFd>)> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, UnixAddr};
    let mut byte = [0u8; 1];
    let mut iov = [std::io::IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 2]);
    let msg = recvmsg::<UnixAddr>(0, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)
        .map_err(|e| Error::sys("receive the monitor's pipes", e))?;
    let mut fds = Vec::new();
    for cmsg in msg
        .cmsgs()
        .map_err(|e| Error::sys("read the monitor's pipes", e))?
    {
        if let ControlMessageOwned::ScmRights(received) = cmsg {
            // SAFETY: SCM_RIGHTS just installed these descriptors in our table; we own them.
            fds.extend(
                received
                    .into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    let mut fds = fds.into_iter();
    let status = fds
        .next()
        .ok_or_else(|| Error::Monitor("no status pipe arrived on stdin".into()))?;
    Ok((Some(status), fds.next()))
}

/// Writes the final status report and closes the pipe (EOF tells the spawner we are done).
fn report(status: Option<OwnedFd>, what: &StatusReport) {
    report_line(status.as_ref(), what);
}

/// Writes one status line, keeping the pipe open.
fn report_line(status: Option<&OwnedFd>, what: &StatusReport) {
    let line = serde_json::to_string(what).unwrap_or_else(|_| "{}".into());
    match status {
        Some(fd) => {
            let _ = nix::unistd::write(fd, format!("{line}\n").as_bytes());
        }
        None => eprintln!("{line}"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn mountinfo_escapes_like_the_kernel() {
        assert_eq!(
            super::mountinfo_escape("/var/lib/my data\\x\tz"),
            "/var/lib/my\\040data\\134x\\011z"
        );
    }
}
