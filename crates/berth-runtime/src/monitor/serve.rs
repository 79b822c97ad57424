//! The monitor process itself: detach, create the container with its stdio, then the
//! `poll(2)` loop that moves bytes and reaps the container.
//!
//! Single-threaded and small by design: one fixed read buffer, a few fds, no async runtime.

use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{ForkResult, Pid};

use super::attach::{self, Decoder};
use super::logfile::JsonLog;
use super::{
    report, report_line, write_atomic, ExitStatus, MonitorConfig, MonitorMode, MonitorStarted,
    StatusReport,
};
use crate::container::{self, CreateOptions, ExecOptions, Runtime};
use crate::error::{Error, Result};

/// Size of the one read buffer.
const BUF_SIZE: usize = 32 * 1024;

/// How long output is still drained after the process exited, while pipes stay open
/// (a daemonised grandchild may hold them forever).
const DRAIN_MS: u16 = 500;
/// How long a start waits for the workload's `execve` before reporting anyway.
const EXEC_WAIT_MS: u16 = 2000;
/// How long the loop must be idle before the startup's memory is released.
const SETTLE_MS: u16 = 100;
/// Reads a `SYNC` request may take ([`Monitor::drain_outputs`]): 2 MiB at [`BUF_SIZE`].
const MAX_DRAIN_READS: usize = 64;

/// The container-side stdio handed to libcontainer and our ends of it.
struct Stdio {
    /// Output sources: (fd, stream id).
    outputs: Vec<(OwnedFd, u8)>,
    /// Where client stdin goes (pipe write end or pty master).
    stdin: Option<OwnedFd>,
    /// For libcontainer: the container's ends.
    child: [Option<OwnedFd>; 3],
    /// The console socket (tty mode) and its path.
    console: Option<(UnixListener, PathBuf)>,
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| Error::sys("create pipe", e))
}

fn setup_stdio(config: &MonitorConfig) -> Result<Stdio> {
    if config.tty {
        // A fresh 0700 directory under /tmp: the container's own directory can be too deep for
        // a unix socket path (108 bytes), and mkdtemp's private directory keeps other local
        // users from connecting to the socket and handing the monitor a pty of theirs.
        let dir = nix::unistd::mkdtemp("/tmp/berth-console-XXXXXX")
            .map_err(|e| Error::sys("create console socket directory", e))?;
        let path = dir.join("console.sock");
        let listener = UnixListener::bind(&path)
            .map_err(|e| Error::io(format!("bind console socket {}", path.display()), e))?;
        return Ok(Stdio {
            outputs: Vec::new(),
            stdin: None,
            child: [None, None, None],
            console: Some((listener, path)),
        });
    }
    let (stdin_child, stdin) = if config.open_stdin {
        let (r, w) = pipe()?;
        (r, Some(w))
    } else {
        let null = std::fs::File::open("/dev/null").map_err(|e| Error::io("open /dev/null", e))?;
        (OwnedFd::from(null), None)
    };
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    Ok(Stdio {
        outputs: vec![(out_r, attach::STDOUT), (err_r, attach::STDERR)],
        stdin,
        child: [Some(stdin_child), Some(out_w), Some(err_w)],
        console: None,
    })
}

/// A pipe whose write end is inherited by the container's init (see [`Monitor::start`]).
fn exec_watch_pipe() -> Result<(OwnedFd, OwnedFd)> {
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| Error::sys("create exec watch pipe", e))?;
    nix::fcntl::fcntl(
        write.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
    )
    .map_err(|e| Error::sys("make the exec watch pipe inheritable", e))?;
    Ok((read, write))
}

/// Waits until every write end of `read`'s pipe is closed, at most `timeout_ms`.
fn wait_for_eof(read: &OwnedFd, timeout_ms: u16) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(timeout_ms.into());
    let mut byte = [0u8; 1];
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let left = u16::try_from(left.as_millis()).unwrap_or(timeout_ms);
        let mut fds = [PollFd::new(read.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(left)) {
            Ok(0) => return,
            Ok(_) => match nix::unistd::read(read.as_raw_fd(), &mut byte) {
                Ok(0) => return,
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(_) => return,
            },
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return,
        }
    }
}

/// Removes the console socket and the private directory [`setup_stdio`] made for it.
fn remove_console_socket(path: &Path) {
    let _ = std::fs::remove_file(path);
    if let Some(dir) = path.parent() {
        let _ = std::fs::remove_dir(dir);
    }
}

/// Receives the pty master that the container's init sent over the console socket.
fn receive_pty(listener: &UnixListener) -> Result<OwnedFd> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, UnixAddr};
    let (stream, _) = listener
        .accept()
        .map_err(|e| Error::io("accept console socket", e))?;
    let mut name = [0u8; 256];
    let mut iov = [std::io::IoSliceMut::new(&mut name)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = recvmsg::<UnixAddr>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::empty(),
    )
    .map_err(|e| Error::sys("receive pty master", e))?;
    for cmsg in msg.cmsgs().map_err(|e| Error::sys("read pty message", e))? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            if let Some(fd) = fds.first() {
                // SAFETY: SCM_RIGHTS just installed this descriptor in our table; we own it.
                return Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(*fd) });
            }
        }
    }
    Err(Error::Monitor(
        "console socket message carried no pty".into(),
    ))
}

fn detach() -> Result<bool> {
    // SAFETY: the monitor is single-threaded (nothing has spawned a thread), so fork is sound.
    match unsafe { nix::unistd::fork() }.map_err(|e| Error::sys("fork", e))? {
        ForkResult::Parent { .. } => return Ok(false),
        ForkResult::Child => {}
    }
    nix::unistd::setsid().map_err(|e| Error::sys("setsid", e))?;
    // SAFETY: as above; the session leader exits at once so the monitor can never
    // reacquire a controlling terminal.
    match unsafe { nix::unistd::fork() }.map_err(|e| Error::sys("fork", e))? {
        // SAFETY: _exit skips destructors of state shared with the child, on purpose.
        ForkResult::Parent { .. } => unsafe { libc::_exit(0) },
        ForkResult::Child => Ok(true),
    }
}

fn redirect_to_null() {
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        for fd in 0..3 {
            // SAFETY: dup2 onto the standard descriptors, which we own.
            unsafe {
                libc::dup2(null.as_raw_fd(), fd);
            }
        }
    }
}

/// Runs the monitor. With `detach`, returns 0 at once in the original process.
pub(super) fn run(
    config: MonitorConfig,
    status: Option<OwnedFd>,
    start: Option<OwnedFd>,
    detach_self: bool,
) -> i32 {
    if detach_self {
        match detach() {
            Ok(true) => {}
            Ok(false) => return 0,
            Err(e) => {
                report(
                    status,
                    &StatusReport::Failed {
                        error: crate::error::one_line(&e),
                    },
                );
                return 1;
            }
        }
    }
    let gate = start.map(|fd| StartGate {
        status: status.as_ref().and_then(|s| s.try_clone().ok()),
        start: fd,
    });
    let mut monitor = match Monitor::start(&config, gate) {
        Ok(m) => m,
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
    report(
        status,
        &StatusReport::Started(MonitorStarted {
            monitor_pid: std::process::id() as i32,
            container_pid: monitor.pid.as_raw(),
        }),
    );
    if detach_self {
        redirect_to_null();
    }
    let code = monitor.serve(&config);
    if let Some(path) = &config.attach_socket {
        let _ = std::fs::remove_file(path);
    }
    code
}

/// Two-phase start: where `created` is reported and the daemon's go-ahead is read.
struct StartGate {
    status: Option<OwnedFd>,
    start: OwnedFd,
}

impl StartGate {
    /// Reports `created` and blocks until the spawner asks to start (a byte) or gives up
    /// (EOF); then takes the attach clients that connected meanwhile.
    fn wait(self, listener: Option<&UnixListener>) -> Result<Vec<Client>> {
        report_line(
            self.status.as_ref(),
            &StatusReport::Created { created: true },
        );
        drop(self.status);
        let mut byte = [0u8; 1];
        loop {
            match nix::unistd::read(self.start.as_raw_fd(), &mut byte) {
                Ok(1) => break,
                Ok(_) => return Err(Error::Monitor("start abandoned by the spawner".into())),
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(Error::sys("read start pipe", e)),
            }
        }
        let mut clients = Vec::new();
        if let Some(l) = listener {
            accept_into(l, &mut clients);
        }
        Ok(clients)
    }
}

fn accept_into(listener: &UnixListener, clients: &mut Vec<Client>) {
    while let Ok((stream, _)) = listener.accept() {
        // Output writes block at most briefly; a client that stops reading is dropped.
        let _ = stream.set_write_timeout(Some(std::time::Duration::from_secs(1)));
        let _ = stream.set_nonblocking(false);
        clients.push(Client {
            stream,
            decoder: Decoder::default(),
            closed: false,
        });
    }
}

struct Client {
    stream: UnixStream,
    decoder: Decoder,
    /// Set when the client failed or hung up. Clients are only removed at the end of a poll
    /// round ([`Monitor::drop_closed_clients`]): the round refers to them by index, and
    /// removing one while forwarding output used to shift the indices of the rest, so a later
    /// step of the same round indexed past the end and the monitor panicked without writing
    /// its exit file.
    closed: bool,
}

struct Monitor {
    pid: Pid,
    sigfd: SignalFd,
    outputs: Vec<(OwnedFd, u8)>,
    stdin: Option<OwnedFd>,
    stdin_pending: Vec<u8>,
    pty: Option<OwnedFd>,
    listener: Option<UnixListener>,
    clients: Vec<Client>,
    log: Option<JsonLog>,
}

impl Monitor {
    fn start(config: &MonitorConfig, gate: Option<StartGate>) -> Result<Self> {
        let _ = std::env::set_current_dir("/");
        // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) only changes this process's attributes.
        unsafe {
            libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
        }
        // SAFETY: ignoring SIGPIPE installs no handler; writes then fail with EPIPE instead.
        unsafe { nix::sys::signal::signal(Signal::SIGPIPE, nix::sys::signal::SigHandler::SigIgn) }
            .map_err(|e| Error::sys("ignore SIGPIPE", e))?;
        let mut mask = SigSet::empty();
        mask.add(Signal::SIGCHLD);
        mask.thread_block()
            .map_err(|e| Error::sys("block SIGCHLD", e))?;
        let sigfd = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .map_err(|e| Error::sys("signalfd", e))?;

        let listener = match &config.attach_socket {
            Some(path) => {
                let _ = std::fs::remove_file(path);
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)
                        .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
                }
                let l = UnixListener::bind(path)
                    .map_err(|e| Error::io(format!("bind {}", path.display()), e))?;
                l.set_nonblocking(true)
                    .map_err(|e| Error::io("attach socket", e))?;
                Some(l)
            }
            None => None,
        };
        let log = match &config.log {
            Some(c) => Some(
                JsonLog::open(c.clone())
                    .map_err(|e| Error::io(format!("open log {}", c.path.display()), e))?,
            ),
            None => None,
        };

        let mut stdio = setup_stdio(config)?;
        let runtime = Runtime::new(&config.runtime_root);
        let console = stdio.console.as_ref().map(|(_, p)| p.clone());
        let [cin, cout, cerr] = std::mem::take(&mut stdio.child);
        let is_container = matches!(config.mode, MonitorMode::Container { .. });
        let mut gate = gate;
        let mut clients = Vec::new();
        if !is_container {
            // An exec has nothing to create: the process runs once the daemon says so.
            if let Some(g) = gate.take() {
                clients = g.wait(listener.as_ref()).inspect_err(|_| {
                    if let Some((_, p)) = &stdio.console {
                        remove_console_socket(p);
                    }
                    if let Some(p) = &config.attach_socket {
                        let _ = std::fs::remove_file(p);
                    }
                })?;
            }
        }
        // The container's init inherits the write end; libcontainer marks every inherited fd
        // close-on-exec just before the workload's execve, so end-of-file on the read end
        // means the workload runs (or the init died).
        let exec_watch = if is_container {
            Some(exec_watch_pipe()?)
        } else {
            None
        };
        let created = match &config.mode {
            MonitorMode::Container {
                bundle,
                rootfs_siblings,
            } => without_sibling_rootfs_mounts(
                &config.id,
                rootfs_siblings.as_deref(),
                &config.runtime_root,
                |rootfs| {
                    container::create(
                        &runtime,
                        &config.id,
                        bundle,
                        CreateOptions {
                            console_socket: console.clone(),
                            stdin: cin,
                            stdout: cout,
                            stderr: cerr,
                            detach: true,
                            rootfs,
                            ..Default::default()
                        },
                    )
                },
            ),
            MonitorMode::Exec {
                args,
                env,
                cwd,
                uid,
                gid,
                additional_gids,
                caps,
                no_new_privileges,
            } => container::exec(
                &runtime,
                &config.id,
                ExecOptions {
                    args: args.clone(),
                    env: env
                        .iter()
                        .filter_map(|kv| kv.split_once('='))
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                        .collect(),
                    cwd: cwd.clone(),
                    user: *uid,
                    group: *gid,
                    additional_gids: additional_gids.clone(),
                    caps: caps.clone(),
                    no_new_privs: *no_new_privileges,
                    console_size: config.console_size,
                    console_socket: console.clone(),
                    detach: config.tty,
                    stdin: cin,
                    stdout: cout,
                    stderr: cerr,
                    ..Default::default()
                },
            ),
        };
        let cleanup_console = |stdio: &Stdio| {
            if let Some((_, p)) = &stdio.console {
                remove_console_socket(p);
            }
        };
        // Only the container's processes may hold the write end now.
        let exec_watch = exec_watch.map(|(read, _write)| read);
        let pid = match created {
            Ok(pid) => pid,
            Err(e) => {
                cleanup_console(&stdio);
                if let Some(p) = &config.attach_socket {
                    let _ = std::fs::remove_file(p);
                }
                return Err(e);
            }
        };
        let fail = |e: Error| {
            if is_container {
                let _ = runtime.delete(&config.id, true);
            } else {
                let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
            }
            let _ = waitpid(pid, None);
            if let Some(p) = &config.attach_socket {
                let _ = std::fs::remove_file(p);
            }
            e
        };
        let mut pty = None;
        if let Some((listener, _)) = &stdio.console {
            let master = receive_pty(listener);
            cleanup_console(&stdio);
            let master = master.map_err(fail)?;
            if let Some((rows, cols)) = config.console_size.filter(|&(r, c)| r > 0 && c > 0) {
                set_window_size(master.as_fd(), rows, cols);
            }
            let dup = master
                .try_clone()
                .map_err(|e| fail(Error::io("dup pty", e)))?;
            stdio.outputs.push((dup, attach::STDOUT));
            let input = master
                .try_clone()
                .map_err(|e| fail(Error::io("dup pty", e)))?;
            set_nonblocking(input.as_fd());
            stdio.stdin = Some(input);
            pty = Some(master);
        }
        if let Some(fd) = &stdio.stdin {
            set_nonblocking(fd.as_fd());
        }
        if is_container {
            if let Some(g) = gate.take() {
                clients = g.wait(listener.as_ref()).map_err(fail)?;
            }
            runtime.start(&config.id).map_err(fail)?;
            // Report the start once the workload has been executed, as dockerd's start only
            // returns after containerd's: a client reading logs right after `start` then sees
            // what the process printed at once.
            if let Some(read) = exec_watch {
                wait_for_eof(&read, EXEC_WAIT_MS);
            }
        }
        std::fs::write(&config.monitor_pid_file, std::process::id().to_string()).map_err(|e| {
            fail(Error::io(
                format!("write {}", config.monitor_pid_file.display()),
                e,
            ))
        })?;
        std::fs::write(&config.container_pid_file, pid.as_raw().to_string()).map_err(|e| {
            fail(Error::io(
                format!("write {}", config.container_pid_file.display()),
                e,
            ))
        })?;
        Ok(Monitor {
            pid,
            sigfd,
            outputs: stdio.outputs,
            stdin: stdio.stdin,
            stdin_pending: Vec::new(),
            pty,
            listener,
            clients,
            log,
        })
    }

    /// The event loop; returns the monitor's exit code.
    fn serve(&mut self, config: &MonitorConfig) -> i32 {
        let mut buf = vec![0u8; BUF_SIZE];
        let mut exited: Option<WaitStatus> = None;
        // The startup's memory is given back once the loop has been idle a moment: a short
        // container's exit is then not delayed by it, and a short container never pays it.
        let mut startup_memory_released = false;
        loop {
            if exited.is_some() && self.outputs.is_empty() {
                break;
            }
            let mut fds: Vec<PollFd> = Vec::with_capacity(4 + self.clients.len());
            fds.push(PollFd::new(self.sigfd.as_fd(), PollFlags::POLLIN));
            for (fd, _) in &self.outputs {
                fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLIN));
            }
            let stdin_idx = fds.len();
            let want_stdin = !self.stdin_pending.is_empty();
            if let (Some(fd), true) = (&self.stdin, want_stdin) {
                fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLOUT));
            }
            let listener_idx = fds.len();
            if let Some(l) = &self.listener {
                fds.push(PollFd::new(l.as_fd(), PollFlags::POLLIN));
            }
            let clients_idx = fds.len();
            for c in &self.clients {
                fds.push(PollFd::new(c.stream.as_fd(), PollFlags::POLLIN));
            }
            let timeout = if exited.is_some() {
                PollTimeout::from(DRAIN_MS)
            } else if !startup_memory_released {
                PollTimeout::from(SETTLE_MS)
            } else {
                PollTimeout::NONE
            };
            let n = match poll(&mut fds, timeout) {
                Ok(n) => n,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => break,
            };
            if n == 0 && exited.is_none() {
                drop(fds);
                release_startup_memory();
                startup_memory_released = true;
                continue;
            }
            if n == 0 {
                // Drain timeout after exit: a leftover process still holds the output open.
                break;
            }
            let ready = |i: usize| {
                fds.get(i)
                    .and_then(|f| f.revents())
                    .is_some_and(|r| !r.is_empty())
            };
            let sig_ready = ready(0);
            let out_ready: Vec<bool> = (0..self.outputs.len()).map(|i| ready(1 + i)).collect();
            let stdin_ready = self.stdin.is_some() && want_stdin && ready(stdin_idx);
            let listener_ready = self.listener.is_some() && ready(listener_idx);
            let clients_ready: Vec<bool> = (0..self.clients.len())
                .map(|i| ready(clients_idx + i))
                .collect();
            drop(fds);

            if sig_ready {
                while let Ok(Some(_)) = self.sigfd.read_signal() {}
                if let Some(status) = self.reap() {
                    exited = Some(status);
                }
            }
            for i in (0..out_ready.len()).rev() {
                if out_ready[i] {
                    self.read_output(i, &mut buf);
                }
            }
            if stdin_ready {
                self.flush_stdin();
            }
            if listener_ready {
                self.accept();
            }
            for (i, ready) in clients_ready.into_iter().enumerate() {
                if ready {
                    self.read_client(i, &mut buf);
                }
            }
            self.drop_closed_clients();
        }
        if let Some(log) = &mut self.log {
            let _ = log.flush();
        }
        let status = match exited {
            Some(s) => s,
            // The loop ended before the exit was seen (poll failure): wait for it now.
            None => loop {
                match waitpid(self.pid, None) {
                    Err(nix::errno::Errno::EINTR) => continue,
                    Ok(s) => break s,
                    Err(_) => break WaitStatus::Exited(self.pid, 255),
                }
            },
        };
        let (exit_code, signal) = container::exit_code(status).unwrap_or((255, None));
        let oom_killed = matches!(config.mode, MonitorMode::Container { .. })
            && oom_killed(&config.runtime_root, &config.id);
        let record = ExitStatus {
            exit_code,
            signal,
            finished_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
            oom_killed,
        };
        match serde_json::to_vec(&record) {
            Ok(text) => {
                if write_atomic(&config.exit_file, &text).is_err() {
                    return 1;
                }
            }
            Err(_) => return 1,
        }
        0
    }

    /// Reaps every exited child; returns the container process's status once it exited.
    fn reap(&mut self) -> Option<WaitStatus> {
        let mut found = None;
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(status) => {
                    if status.pid() == Some(self.pid) && container::exit_code(status).is_some() {
                        found = Some(status);
                    }
                }
            }
        }
        if found.is_some() {
            // Nobody will write to the container's stdin any more.
            self.stdin = None;
        }
        found
    }

    fn read_output(&mut self, idx: usize, buf: &mut [u8]) {
        let (fd, stream) = &self.outputs[idx];
        let stream = *stream;
        match nix::unistd::read(fd.as_raw_fd(), buf) {
            Ok(0) | Err(nix::errno::Errno::EIO) => {
                self.outputs.remove(idx);
            }
            Ok(n) => {
                let data = &buf[..n];
                if let Some(log) = &mut self.log {
                    let _ = log.write(stream, data);
                }
                let frame = if self.pty.is_some() {
                    data.to_vec()
                } else {
                    attach::encode(stream, data)
                };
                for c in self.clients.iter_mut().filter(|c| !c.closed) {
                    if c.stream.write_all(&frame).is_err() {
                        c.closed = true;
                    }
                }
            }
            Err(nix::errno::Errno::EINTR | nix::errno::Errno::EAGAIN) => {}
            Err(_) => {
                self.outputs.remove(idx);
            }
        }
    }

    /// Copies to the log (and clients) what the container has written and the loop has not
    /// read yet. Bounded, so that a container writing without pause cannot hold the loop.
    fn drain_outputs(&mut self, buf: &mut [u8]) {
        for _ in 0..MAX_DRAIN_READS {
            let readable: Vec<usize> = {
                let mut fds: Vec<PollFd> = self
                    .outputs
                    .iter()
                    .map(|(fd, _)| PollFd::new(fd.as_fd(), PollFlags::POLLIN))
                    .collect();
                if !matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0) {
                    return;
                }
                fds.iter()
                    .enumerate()
                    .filter(|(_, f)| f.revents().is_some_and(|r| !r.is_empty()))
                    .map(|(i, _)| i)
                    .collect()
            };
            // From the end: a read that hits EOF removes its output.
            for i in readable.into_iter().rev() {
                self.read_output(i, buf);
            }
        }
    }

    fn accept(&mut self) {
        let Some(listener) = &self.listener else {
            return;
        };
        accept_into(listener, &mut self.clients);
    }

    fn drop_closed_clients(&mut self) {
        self.clients.retain(|c| !c.closed);
    }

    fn read_client(&mut self, idx: usize, buf: &mut [u8]) {
        let Some(client) = self.clients.get_mut(idx).filter(|c| !c.closed) else {
            return;
        };
        let n = match client.stream.read(buf) {
            Ok(0) => {
                client.closed = true;
                return;
            }
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted || e.kind() == ErrorKind::WouldBlock => {
                return
            }
            Err(_) => {
                client.closed = true;
                return;
            }
        };
        client.decoder.push(&buf[..n]);
        loop {
            match self.clients[idx].decoder.next_frame() {
                Ok(Some((attach::SYNC, _))) => {
                    self.drain_outputs(buf);
                    // The reply is the hang-up (see `attach::SYNC`).
                    let client = &mut self.clients[idx];
                    let _ = client.stream.shutdown(std::net::Shutdown::Both);
                    client.closed = true;
                    return;
                }
                Ok(Some((stream, payload))) => self.handle_frame(stream, payload),
                Ok(None) => break,
                Err(_) => {
                    self.clients[idx].closed = true;
                    return;
                }
            }
        }
    }

    fn handle_frame(&mut self, stream: u8, payload: Vec<u8>) {
        match stream {
            attach::STDIN if self.stdin.is_some() => {
                self.stdin_pending.extend_from_slice(&payload);
                self.flush_stdin();
            }
            attach::RESIZE if payload.len() == 4 => {
                if let Some(pty) = &self.pty {
                    set_window_size(
                        pty.as_fd(),
                        u16::from_be_bytes([payload[0], payload[1]]),
                        u16::from_be_bytes([payload[2], payload[3]]),
                    );
                }
            }
            attach::CLOSE_STDIN => {
                if self.pty.is_some() {
                    // A terminal has no half-close: send EOF (^D) as a terminal would.
                    self.stdin_pending.push(0x04);
                    self.flush_stdin();
                } else {
                    self.flush_stdin();
                    self.stdin = None;
                    self.stdin_pending.clear();
                }
            }
            _ => {}
        }
    }

    fn flush_stdin(&mut self) {
        let Some(fd) = &self.stdin else {
            self.stdin_pending.clear();
            return;
        };
        while !self.stdin_pending.is_empty() {
            match nix::unistd::write(fd, &self.stdin_pending) {
                Ok(n) => {
                    self.stdin_pending.drain(..n);
                }
                Err(nix::errno::Errno::EINTR) => {}
                Err(nix::errno::Errno::EAGAIN) => return,
                Err(_) => {
                    self.stdin = None;
                    self.stdin_pending.clear();
                    return;
                }
            }
        }
    }
}

/// Runs `create` in a mount namespace of its own from which the other containers' rootfs mounts
/// (`<siblings>/<other id>/merged`) are gone, then returns to the host's.
///
/// Each running container adds an overlay mount to the host's table, and reading
/// `/proc/self/mountinfo` costs time in proportion (6 ms with 500 containers here).
/// libcontainer's intermediate process reads it once per cgroup controller and its init reads
/// it again while it sets up the rootfs, so starts slowed from 23 ms to 85 ms with 500
/// containers running. Both processes inherit this namespace: the copy is trimmed to the host's
/// own mounts plus this container's rootfs. It is a slave of the host's, so mounts made on the
/// host still propagate (rslave/rshared binds keep working) and the unmounts here never reach
/// the host. Once the container exists, nothing holds the namespace: its init has its own.
///
/// When the directory above `siblings` (the image store's root) is a mount of its own (the
/// daemon makes it one: [`crate::monitor::own_mount_for_rootfs_parent`]), one lazy unmount of
/// it drops every rootfs at once, after this container's rootfs was bound to
/// `<runtime_root>/.<id>.rootfs`, which `create` then uses; else each sibling is unmounted
/// (one system call per running container, 4 ms with 300). Any failure to set the namespace
/// up leaves `create` to run in the host's, as before.
fn without_sibling_rootfs_mounts<T>(
    id: &str,
    siblings: Option<&Path>,
    runtime_root: &Path,
    create: impl FnOnce(Option<PathBuf>) -> Result<T>,
) -> Result<T> {
    use nix::mount::{mount, umount2, MntFlags, MsFlags};
    use nix::sched::{setns, unshare, CloneFlags};
    let Some(siblings) = siblings else {
        return create(None);
    };
    let own = siblings.join(id).join("merged");
    let Ok(host) = std::fs::File::open("/proc/self/ns/mnt") else {
        return create(None);
    };
    if unshare(CloneFlags::CLONE_NEWNS).is_err() {
        return create(None);
    }
    let back_to_host = || {
        if let Err(err) = setns(&host, CloneFlags::CLONE_NEWNS) {
            tracing::error!(%err, "cannot return to the host's mount namespace");
        }
    };
    if mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None::<&str>,
    )
    .is_err()
    {
        // Still a peer of the host's mounts: unmounting here would unmount there.
        back_to_host();
        return create(None);
    }
    // The whole store at once: this container's rootfs moves out of it first.
    let moved = siblings.parent().and_then(|store| {
        let at = runtime_root.join(format!(".{id}.rootfs"));
        std::fs::create_dir_all(&at).ok()?;
        let bound = mount(
            Some(&own),
            &at,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        );
        if bound.is_ok() && umount2(store, MntFlags::MNT_DETACH).is_ok() {
            return Some(at);
        }
        // Not a mount of its own (EINVAL): one by one below.
        if bound.is_ok() {
            let _ = umount2(&at, MntFlags::MNT_DETACH);
        }
        let _ = std::fs::remove_dir(&at);
        None
    });
    if moved.is_none() {
        if let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") {
            for mount_point in mountinfo.lines().filter_map(|l| l.split(' ').nth(4)) {
                let path = Path::new(mount_point);
                let sibling = path.file_name().is_some_and(|n| n == "merged")
                    && path.parent().and_then(Path::parent) == Some(siblings);
                if sibling && path != own {
                    let _ = umount2(path, MntFlags::MNT_DETACH);
                }
            }
        }
    }
    let created = create(moved.clone());
    back_to_host();
    if let Some(at) = moved {
        // An empty directory on the host (the mount was in the namespace just left); never a
        // recursive removal, which would walk into a mounted rootfs.
        let _ = std::fs::remove_dir(&at);
    }
    created
}

/// Gives back the memory that creating the container touched, so a long-lived monitor stays
/// small: free heap pages go back to the kernel, and the page-table entries of read-only file
/// mappings (libcontainer's code and data, clap, ...) are dropped. Such pages are clean copies
/// of the file, so dropping them is harmless: the few the poll loop uses fault back in from the
/// page cache. Mappings holding anonymous (copy-on-write) pages, such as RELRO segments with
/// applied relocations, and writable mappings are left alone.
pub(super) fn release_startup_memory() {
    // SAFETY: malloc_trim only returns free memory to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
    // Found first, unmapped last: code that runs after an madvise faults its pages back (and
    // 64 KiB around each), so nothing but the loop may run once the pages are dropped.
    let mut ranges = [(0usize, 0usize); MAX_DROPPED_MAPPINGS];
    let found = clean_file_mappings(&mut ranges);
    for &(start, end) in &ranges[..found] {
        // SAFETY: read-only file pages of this process, none copied-on-write (whole mappings
        // without anonymous pages, or runs of resident file-backed pages): MADV_DONTNEED only
        // unmaps pages that fault back unchanged from the file.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED);
        }
    }
}

/// How many mappings [`release_startup_memory`] drops at most (the monitor has about 20).
const MAX_DROPPED_MAPPINGS: usize = 64;

/// Fills `out` with the ranges of this process's private read-only file mappings that hold no
/// anonymous (copied-on-write) page, from `/proc/self/smaps`; returns how many it found. In a
/// mapping that has some (the relocated part of `.data.rel.ro`), the runs of resident pages
/// that still come from the file are taken, found through `/proc/self/pagemap`.
fn clean_file_mappings(out: &mut [(usize, usize)]) -> usize {
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
        return 0;
    };
    // (start, end, holds anonymous pages) of each read-only file mapping.
    let mut mappings: Vec<(usize, usize, bool)> = Vec::new();
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let Some(first) = fields.next() else { continue };
        if let Some((start, end)) = first.split_once('-') {
            // A mapping header: `start-end perms offset dev inode path`.
            let perms = fields.next().unwrap_or("");
            let path = fields.nth(3).unwrap_or("");
            let range = (
                usize::from_str_radix(start, 16),
                usize::from_str_radix(end, 16),
            );
            if let ((Ok(start), Ok(end)), "r-xp" | "r--p", true) =
                (range, perms, path.starts_with('/'))
            {
                mappings.push((start, end, false));
            }
        } else if first == "Anonymous:" && fields.next() != Some("0") {
            if let Some(last) = mappings.last_mut() {
                last.2 = true;
            }
        }
    }
    drop(smaps);
    let pagemap = std::fs::File::open("/proc/self/pagemap").ok();
    let mut found = 0;
    let mut push = |range: (usize, usize)| {
        if found < out.len() && range.0 < range.1 {
            out[found] = range;
            found += 1;
        }
    };
    for (start, end, mixed) in mappings {
        if !mixed {
            push((start, end));
        } else if let Some(pagemap) = &pagemap {
            for run in file_page_runs(pagemap, start, end) {
                push(run);
            }
        }
    }
    found
}

/// Runs of pages in `[start, end)` that are resident and file-backed (pagemap bits 63 and
/// 61): neither copied-on-write nor swapped out, so dropping them loses nothing.
fn file_page_runs(pagemap: &std::fs::File, start: usize, end: usize) -> Vec<(usize, usize)> {
    use std::os::unix::fs::FileExt;
    // SAFETY: sysconf only reads a system constant.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let Ok(page) = usize::try_from(page) else {
        return Vec::new();
    };
    const PRESENT: u64 = 1 << 63;
    const FILE: u64 = 1 << 61;
    let pages = (end - start) / page;
    let mut raw = vec![0u8; pages * 8];
    if pagemap
        .read_exact_at(&mut raw, (start / page * 8) as u64)
        .is_err()
    {
        return Vec::new();
    }
    let mut runs = Vec::new();
    let mut run_start = None;
    for (i, entry) in raw.chunks_exact(8).enumerate() {
        let bits = u64::from_le_bytes(entry.try_into().unwrap_or([0; 8]));
        let addr = start + i * page;
        match (bits & PRESENT != 0 && bits & FILE != 0, run_start) {
            (true, None) => run_start = Some(addr),
            (false, Some(s)) => {
                runs.push((s, addr));
                run_start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = run_start {
        runs.push((s, end));
    }
    runs
}

fn set_nonblocking(fd: BorrowedFd<'_>) {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    if let Ok(flags) = fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL) {
        let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
        let _ = fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(flags));
    }
}

/// Whether the OOM killer fired in the container's memory cgroup.
fn oom_killed(root: &Path, id: &str) -> bool {
    let Ok(cgroup) = Runtime::new(root).cgroup_path(id) else {
        return false;
    };
    let rel = cgroup.strip_prefix("/").unwrap_or(&cgroup);
    let (file, key) = match crate::resources::cgroup_layout() {
        Ok(crate::resources::CgroupLayout::Unified) => (
            Path::new("/sys/fs/cgroup").join(rel).join("memory.events"),
            "oom_kill",
        ),
        _ => (
            Path::new("/sys/fs/cgroup/memory")
                .join(rel)
                .join("memory.oom_control"),
            "oom_kill",
        ),
    };
    std::fs::read_to_string(file)
        .ok()
        .and_then(|text| {
            text.lines().find_map(|l| {
                let (k, v) = l.split_once(' ')?;
                (k == key).then(|| v.trim().parse::<u64>().ok()).flatten()
            })
        })
        .is_some_and(|n| n > 0)
}

/// Sets a pty's window size (the kernel signals the foreground process group).
fn set_window_size(pty: BorrowedFd<'_>, rows: u16, cols: u16) {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize struct that lives across the call; a bad descriptor
    // only fails the call.
    unsafe {
        libc::ioctl(pty.as_raw_fd(), libc::TIOCSWINSZ, &ws);
    }
}

#[cfg(test)]
mod tests {
    use super::file_page_runs;

    /// A page copied on write (what relocations do to `.data.rel.ro`) is never in a run that
    /// the monitor would drop, and the runs stay inside the mapping.
    #[test]
    fn page_runs_skip_copied_on_write_pages() {
        use std::io::Write;
        // SAFETY: sysconf only reads a system constant.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap();
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(&vec![7u8; 16 * page]).unwrap();
        let len = 16 * page;
        // SAFETY: a fresh private mapping of a file we own, unmapped at the end of the test.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE,
                std::os::fd::AsRawFd::as_raw_fd(&file),
                0,
            )
        };
        assert_ne!(base, libc::MAP_FAILED);
        let start = base as usize;
        for i in 0..16 {
            // SAFETY: inside the mapping; reads fault the file pages in.
            let _ = unsafe { std::ptr::read_volatile((start + i * page) as *const u8) };
        }
        // SAFETY: inside the writable private mapping: this page becomes anonymous.
        unsafe { std::ptr::write_volatile((start + 2 * page) as *mut u8, 1) };
        let pagemap = std::fs::File::open("/proc/self/pagemap").unwrap();
        let runs = file_page_runs(&pagemap, start, start + len);
        // SAFETY: unmapping what was mapped above.
        unsafe { libc::munmap(base, len) };
        assert!(!runs.is_empty());
        let cow = start + 2 * page;
        for (a, b) in &runs {
            assert!(start <= *a && a < b && *b <= start + len, "{runs:?}");
            assert!(!(*a <= cow && cow < *b), "copied page in {runs:?}");
        }
        assert!(runs.iter().any(|(a, _)| *a == start), "{runs:?}");
    }
}
