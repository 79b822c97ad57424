//! Berth's own container init: how [`crate::container`]'s `create` starts the common container
//! without libcontainer's init.
//!
//! libcontainer spends ~7 ms of a ~20 ms `run --rm` in its intermediate and init processes
//! (measured with ftrace): its v1 cgroup manager reads the mount table and `/proc/self/cgroup`
//! once per controller, and `pathrs` re-validates its `/proc` handle before each of ~120
//! accesses. This module does the same work directly, in one process: the monitor creates the
//! cgroup and `clone3`s the init straight into new namespaces (it is pid 1 at once, no
//! intermediate), and the init builds the root filesystem, switches credentials, waits for
//! `start` and executes the workload.
//!
//! What it writes is libcontainer's: `state.json` and `youki_config.json` in the container's
//! state directory, the cgroup at libcgroups' paths, the `notify.sock` that
//! `Runtime::start` (libcontainer's `start`) connects to. So `start`, `exec`, `kill`, `pause`,
//! `update`, `stats` and `delete` work unchanged on containers made here.
//!
//! It covers what Docker's specs use on a cgroup v1 host; [`unsupported`] names anything else
//! (user or time namespaces, joined pid or mount namespaces, hooks, cgroup v2, block-I/O or
//! hugepage limits, AppArmor/SELinux labels, id-mapped mounts, ...), and `create` then hands
//! the spec to libcontainer, as before.

mod cgroups;
mod process;
mod rootfs;

use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

use libcontainer::config::YoukiConfig;
use libcontainer::container::{Container, ContainerStatus};
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxNamespaceType, Spec};

use crate::container::CreateOptions;
use crate::error::{Error, Result};
use crate::seccomp_filter::PrecompiledSeccomp;
use crate::Runtime;

/// libcontainer's name for the socket its `start` connects to.
const NOTIFY_SOCKET: &str = "notify.sock";

/// Why `spec` needs libcontainer's init, or `None` when this module covers it.
pub(crate) fn unsupported(spec: &Spec, opts: &CreateOptions) -> Option<&'static str> {
    if opts.no_pivot {
        return Some("--no-pivot");
    }
    if spec.hooks().is_some() {
        return Some("hooks");
    }
    let Some(linux) = spec.linux().as_ref() else {
        return Some("no linux section");
    };
    let Some(cgroups_path) = linux.cgroups_path() else {
        return Some("no cgroups path");
    };
    if !cgroups_path.is_absolute() || cgroups_path.as_os_str().as_bytes().contains(&b':') {
        return Some("a relative or systemd cgroups path");
    }
    if !cgroup_v1_host() {
        return Some("cgroup v2");
    }
    let namespaces = linux.namespaces().as_deref().unwrap_or_default();
    if !namespaces
        .iter()
        .any(|n| n.typ() == LinuxNamespaceType::Mount && n.path().is_none())
    {
        return Some("no new mount namespace");
    }
    for n in namespaces {
        match n.typ() {
            LinuxNamespaceType::User | LinuxNamespaceType::Time => {
                return Some("user or time namespace")
            }
            LinuxNamespaceType::Pid | LinuxNamespaceType::Mount if n.path().is_some() => {
                return Some("a joined pid or mount namespace")
            }
            _ => {}
        }
    }
    if linux.uid_mappings().as_ref().is_some_and(|m| !m.is_empty())
        || linux.gid_mappings().as_ref().is_some_and(|m| !m.is_empty())
    {
        return Some("id mappings");
    }
    if linux.seccomp().is_some() {
        return Some("a seccomp profile that was not precompiled");
    }
    if let Some(r) = linux.resources() {
        if let Err(what) = cgroups::supported(r) {
            return Some(what);
        }
    }
    if !matches!(
        linux.rootfs_propagation().as_deref(),
        None | Some("" | "private" | "rprivate" | "slave" | "rslave")
    ) {
        return Some("shared or unbindable root propagation");
    }
    if linux.mount_label().is_some()
        || linux.intel_rdt().is_some()
        || linux.memory_policy().is_some()
        || linux.personality().is_some()
        || linux.time_offsets().is_some()
        || linux.net_devices().is_some()
    {
        return Some("a Linux feature libcontainer handles");
    }
    let mounts = spec.mounts().as_deref().unwrap_or_default();
    if !mounts
        .iter()
        .any(|m| m.destination() == Path::new("/dev") && m.typ().as_deref() == Some("tmpfs"))
    {
        return Some("no tmpfs on /dev");
    }
    if mounts
        .iter()
        .any(|m| rootfs::unsupported_option(m.options().as_deref().unwrap_or_default()).is_some())
    {
        return Some("a mount option libcontainer handles");
    }
    let Some(process) = spec.process().as_ref() else {
        return Some("no process");
    };
    if process
        .apparmor_profile()
        .as_ref()
        .is_some_and(|p| !p.is_empty())
        || process
            .selinux_label()
            .as_ref()
            .is_some_and(|l| !l.is_empty())
        || process.io_priority().is_some()
        || process.scheduler().is_some()
        || process.exec_cpu_affinity().is_some()
    {
        return Some("a process attribute libcontainer handles");
    }
    if process.terminal() == Some(true) && opts.console_socket.is_none() {
        return Some("a terminal without a console socket");
    }
    if process.args().as_ref().is_none_or(|a| a.is_empty()) {
        return Some("no command");
    }
    None
}

/// Whether `/sys/fs/cgroup` holds v1 hierarchies (a tmpfs of them) rather than cgroup2.
fn cgroup_v1_host() -> bool {
    // SAFETY: statfs fills the zeroed struct; the path is a static C string.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let rc = unsafe { libc::statfs(c"/sys/fs/cgroup".as_ptr(), &mut st) };
    rc == 0 && st.f_type == libc::TMPFS_MAGIC
}

/// What [`create`] needs besides the options.
pub(crate) struct Launch<'a> {
    pub id: &'a str,
    /// The bundle recorded in the state (`exec` reads its config.json).
    pub bundle: &'a Path,
    /// The spec to run: cgroups path set, seccomp profile replaced by `seccomp`.
    pub spec: &'a Spec,
    /// The root filesystem's absolute path.
    pub rootfs: &'a Path,
    pub seccomp: Option<&'a PrecompiledSeccomp>,
}

/// Creates the container (a spec [`unsupported`] accepted): its init waits for `start` on
/// `notify.sock`. Returns the init's pid, a child of the caller. FORKS: call only from a
/// single-threaded process.
pub(crate) fn create(runtime: &Runtime, launch: &Launch<'_>, opts: CreateOptions) -> Result<Pid> {
    let id = launch.id;
    let dir = runtime.container_dir(id);
    std::fs::create_dir_all(runtime.root())
        .map_err(|e| Error::io(format!("create {}", runtime.root().display()), e))?;
    match std::fs::create_dir(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(Error::AlreadyExists(id.to_owned()))
        }
        Err(e) => return Err(Error::io(format!("create {}", dir.display()), e)),
    }
    let created = create_in(&dir, launch, opts);
    if created.is_err() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    created
}

fn create_in(dir: &Path, launch: &Launch<'_>, opts: CreateOptions) -> Result<Pid> {
    let init_err = |message: String| Error::Init {
        id: launch.id.to_owned(),
        message,
    };
    let spec = launch.spec;
    let linux = spec.linux().as_ref().expect("checked by unsupported");
    let cgroups_path = linux
        .cgroups_path()
        .as_deref()
        .expect("checked by unsupported");
    let mountinfo =
        read_proc("/proc/self/mountinfo").map_err(|e| Error::io("read /proc/self/mountinfo", e))?;
    let hierarchies = cgroups::hierarchies(&mountinfo);
    let cgroup = cgroups::Cgroup::create(&hierarchies, cgroups_path, linux.resources().as_ref())
        .map_err(|e| Error::Cgroup {
            path: cgroups_path.to_owned(),
            message: e.to_string(),
        })?;
    let result = spawn(dir, launch, opts, &hierarchies, &cgroup).map_err(init_err);
    match result {
        Ok(pid) => Ok(pid),
        Err(e) => {
            cgroup.remove();
            Err(e)
        }
    }
}

/// Reads a `/proc` file (size 0 to stat) with a buffer that fits it at once, not in a dozen
/// growing reads.
fn read_proc(path: &str) -> std::io::Result<String> {
    let mut text = String::with_capacity(64 * 1024);
    std::fs::File::open(path)?.read_to_string(&mut text)?;
    Ok(text)
}

/// A pipe whose ends are close-on-exec.
fn pipe() -> std::result::Result<(OwnedFd, OwnedFd), String> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))
}

fn spawn(
    dir: &Path,
    launch: &Launch<'_>,
    mut opts: CreateOptions,
    hierarchies: &[cgroups::Hierarchy],
    cgroup: &cgroups::Cgroup,
) -> std::result::Result<Pid, String> {
    let spec = launch.spec;
    let linux = spec.linux().as_ref().expect("checked by unsupported");
    let dir_fd = std::fs::File::open(dir).map_err(|e| format!("open {}: {e}", dir.display()))?;
    // Through the directory's descriptor: a socket path is limited to 107 bytes.
    let notify = UnixListener::bind(format!(
        "/proc/self/fd/{}/{NOTIFY_SOCKET}",
        dir_fd.as_raw_fd()
    ))
    .map_err(|e| format!("bind {}/{NOTIFY_SOCKET}: {e}", dir.display()))?;
    let console = match &opts.console_socket {
        Some(path) => Some(
            UnixStream::connect(path)
                .map_err(|e| format!("connect console socket {}: {e}", path.display()))?,
        ),
        None => None,
    };

    let mut flags: u64 = 0;
    let mut join = Vec::new();
    let mut cgroup_ns = false;
    let mut uts_ns = false;
    for ns in linux.namespaces().as_deref().unwrap_or_default() {
        let flag = match ns.typ() {
            LinuxNamespaceType::Mount => libc::CLONE_NEWNS,
            LinuxNamespaceType::Pid => libc::CLONE_NEWPID,
            LinuxNamespaceType::Uts => libc::CLONE_NEWUTS,
            LinuxNamespaceType::Ipc => libc::CLONE_NEWIPC,
            LinuxNamespaceType::Network => libc::CLONE_NEWNET,
            LinuxNamespaceType::Cgroup => libc::CLONE_NEWCGROUP,
            LinuxNamespaceType::User | LinuxNamespaceType::Time => {
                return Err("unsupported namespace".into())
            }
        };
        match ns.path() {
            Some(path) => {
                let fd: OwnedFd = std::fs::File::open(path)
                    .map_err(|e| format!("open namespace {}: {e}", path.display()))?
                    .into();
                join.push((fd, flag));
            }
            // The cgroup namespace comes after the cgroup placement, so it is rooted there.
            None if flag == libc::CLONE_NEWCGROUP => cgroup_ns = true,
            None => {
                uts_ns |= flag == libc::CLONE_NEWUTS;
                flags |= flag as u64;
            }
        }
    }

    let child = process::Child::prepare(spec, &mut opts)?;
    let (sync_read, sync_write) = pipe()?;
    let (ready_read, ready_write) = pipe()?;
    let ctx = InitContext {
        spec,
        rootfs: launch.rootfs,
        join,
        cgroup_ns,
        uts_ns,
        hierarchies,
        sync_read,
        ready_write: Some(ready_write),
        notify,
        console,
        child,
        preserve_fds: opts.preserve_fds,
        seccomp: launch.seccomp,
    };

    let mut args: libc::clone_args = // SAFETY: clone_args is plain data; zero is "unset".
        unsafe { std::mem::zeroed() };
    args.flags = flags;
    args.exit_signal = libc::SIGCHLD as u64;
    // SAFETY: clone3 without CLONE_VM or a stack is fork with namespace flags. The caller is
    // single-threaded (documented on `create`), so the child owns a consistent copy of the
    // heap and locks; it never returns from `run_init`.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &mut args as *mut libc::clone_args,
            std::mem::size_of::<libc::clone_args>(),
        )
    };
    if pid < 0 {
        return Err(format!("clone3: {}", std::io::Error::last_os_error()));
    }
    if pid == 0 {
        run_init(ctx);
    }
    let pid = Pid::from_raw(pid as i32);
    // The init has its own copies; the ends left here are the parent's two.
    drop(ctx);
    let reap = || {
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(pid, None);
    };
    if let Err(e) = cgroup.add(pid.as_raw()) {
        reap();
        return Err(format!("join cgroup: {e}"));
    }
    let mut sync_write = std::fs::File::from(sync_write);
    if let Err(e) = sync_write.write_all(b"c") {
        reap();
        return Err(format!("release the init: {e}"));
    }
    drop(sync_write);
    let mut report = Vec::new();
    let _ = std::fs::File::from(ready_read).read_to_end(&mut report);
    if report.first() != Some(&b'R') {
        reap();
        let message = String::from_utf8_lossy(report.get(1..).unwrap_or_default()).into_owned();
        return Err(if message.is_empty() {
            "the container's init exited while being set up".into()
        } else {
            message
        });
    }
    if let Err(e) = record_state(dir, launch, pid, opts.pid_file.as_deref()) {
        reap();
        return Err(e);
    }
    Ok(pid)
}

/// Records the container as libcontainer does, so the rest of the lifecycle finds it.
fn record_state(
    dir: &Path,
    launch: &Launch<'_>,
    pid: Pid,
    pid_file: Option<&Path>,
) -> std::result::Result<(), String> {
    let config = YoukiConfig::from_spec(launch.spec, launch.id)
        .map_err(|e| format!("runtime config: {e}"))?;
    config
        .save(dir)
        .map_err(|e| format!("save runtime config: {e}"))?;
    let mut container = Container::new(
        launch.id,
        ContainerStatus::Created,
        Some(pid.as_raw()),
        launch.bundle,
        dir,
    )
    .map_err(|e| format!("container state: {e}"))?;
    container.set_systemd(false);
    container.set_creator(nix::unistd::geteuid().as_raw());
    container
        .save()
        .map_err(|e| format!("save container state: {e}"))?;
    if let Some(path) = pid_file {
        std::fs::write(path, pid.as_raw().to_string())
            .map_err(|e| format!("write pid file {}: {e}", path.display()))?;
    }
    Ok(())
}

/// Everything the init needs, prepared before the clone.
struct InitContext<'a> {
    spec: &'a Spec,
    rootfs: &'a Path,
    /// Namespaces to join, with their clone flag.
    join: Vec<(OwnedFd, libc::c_int)>,
    /// A new cgroup namespace, made once the init is in its cgroup.
    cgroup_ns: bool,
    /// A new uts namespace (the hostname is set only then).
    uts_ns: bool,
    hierarchies: &'a [cgroups::Hierarchy],
    /// One byte arrives once the init is in its cgroup.
    sync_read: OwnedFd,
    /// `R` once ready for `start`, or `E` and the error.
    ready_write: Option<OwnedFd>,
    notify: UnixListener,
    console: Option<UnixStream>,
    child: process::Child,
    preserve_fds: i32,
    seccomp: Option<&'a PrecompiledSeccomp>,
}

/// The init: never returns. A set-up failure is reported on the ready pipe (exit 1); what
/// fails after `start` (the workload cannot be executed) goes to its stderr.
fn run_init(mut ctx: InitContext<'_>) -> ! {
    let mut ready = ctx.ready_write.take().map(std::fs::File::from);
    let outcome =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| init_steps(ctx, &mut ready)));
    let message = match outcome {
        Ok(Err(message)) => message,
        Ok(Ok(never)) => match never {},
        Err(_) => "the container's init panicked".to_owned(),
    };
    match ready.as_mut() {
        Some(ready) => {
            let _ = ready.write_all(format!("E{message}").as_bytes());
        }
        None => eprintln!("berth: {message}"),
    }
    // SAFETY: _exit ends this process without running the monitor's exit handlers.
    unsafe { libc::_exit(1) }
}

fn init_steps(
    ctx: InitContext<'_>,
    ready: &mut Option<std::fs::File>,
) -> std::result::Result<std::convert::Infallible, String> {
    use rootfs::*;
    let InitContext {
        spec,
        rootfs,
        join,
        cgroup_ns,
        uts_ns,
        hierarchies,
        sync_read,
        ready_write: _,
        notify,
        console,
        child,
        preserve_fds,
        seccomp,
    } = ctx;
    let linux = spec.linux().as_ref().expect("checked by unsupported");
    for (fd, flag) in &join {
        // SAFETY: setns on a namespace file descriptor we opened.
        if unsafe { libc::setns(fd.as_raw_fd(), *flag) } < 0 {
            return Err(format!(
                "join namespace: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    drop(join);
    let mut byte = [0u8; 1];
    if std::fs::File::from(sync_read).read(&mut byte).ok() != Some(1) {
        // The monitor is gone: nothing to report to.
        // SAFETY: _exit ends this process only.
        unsafe { libc::_exit(1) }
    }
    if cgroup_ns {
        // SAFETY: unshare with a namespace flag affects this process only.
        if unsafe { libc::unshare(libc::CLONE_NEWCGROUP) } < 0 {
            return Err(format!(
                "cgroup namespace: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    // SAFETY: setsid makes this process a session leader; it is not a group leader.
    unsafe { libc::setsid() };
    // SAFETY: umask only sets this process's mask; devices get their exact modes.
    unsafe { libc::umask(0) };

    let propagation = match linux.rootfs_propagation().as_deref() {
        Some("private") => libc::MS_PRIVATE,
        Some("rprivate") => libc::MS_PRIVATE | libc::MS_REC,
        Some("slave") => libc::MS_SLAVE,
        _ => libc::MS_SLAVE | libc::MS_REC,
    };
    mount(
        None,
        c"/",
        None,
        propagation,
        None,
        &"set the mount propagation of /",
    )?;
    let root_c = CString::new(rootfs.as_os_str().as_bytes()).map_err(|_| "NUL in rootfs")?;
    mount(
        Some(&root_c),
        &root_c,
        None,
        libc::MS_BIND | libc::MS_REC,
        None,
        &format_args!("bind {} on itself", rootfs.display()),
    )?;
    let root: OwnedFd = std::fs::File::open(rootfs)
        .map_err(|e| format!("open {}: {e}", rootfs.display()))?
        .into();
    let mount_ctx = MountContext {
        hierarchies,
        cgroup_ns,
    };
    for m in spec.mounts().as_deref().unwrap_or_default() {
        mount_one(root.as_fd(), m, &mount_ctx)?;
    }
    populate_dev(root.as_fd(), linux.devices().as_deref().unwrap_or_default())?;
    match console {
        Some(socket) => process::attach_terminal(root.as_fd(), &socket, spec)?,
        None => child.attach_stdio()?,
    }
    pivot(root.as_fd())?;
    drop(root);
    for (key, value) in linux.sysctl().iter().flatten() {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        std::fs::write(&path, value).map_err(|e| format!("sysctl {key}={value}: {e}"))?;
    }
    if spec.root().as_ref().and_then(|r| r.readonly()) == Some(true) {
        readonly_root()?;
    }
    for path in linux.readonly_paths().iter().flatten() {
        make_readonly(Path::new(path))?;
    }
    for path in linux.masked_paths().iter().flatten() {
        mask(Path::new(path))?;
    }
    if uts_ns {
        if let Some(name) = spec.hostname() {
            nix::unistd::sethostname(name).map_err(|e| format!("set hostname: {e}"))?;
        }
        if let Some(name) = spec.domainname().as_deref().filter(|d| !d.is_empty()) {
            let c = CString::new(name).map_err(|_| "NUL in domainname")?;
            // SAFETY: setdomainname reads `len` bytes of a live string.
            if unsafe { libc::setdomainname(c.as_ptr(), name.len()) } < 0 {
                return Err(format!(
                    "set domainname: {}",
                    std::io::Error::last_os_error()
                ));
            }
        }
    }
    let exec = child.finish_credentials(spec, preserve_fds)?;
    if let Some(mut pipe) = ready.take() {
        pipe.write_all(b"R")
            .map_err(|e| format!("report ready: {e}"))?;
    }
    // `start` connects, writes and closes (libcontainer's protocol).
    if let Ok((mut stream, _)) = notify.accept() {
        let mut message = Vec::new();
        let _ = stream.read_to_end(&mut message);
    }
    drop(notify);
    exec.run(seccomp)
}
