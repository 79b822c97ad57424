//! The init's process side: its stdio or terminal, limits, credentials and capabilities, and
//! the workload's `execve` (with the precompiled seccomp filter loaded just before).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use oci_spec::runtime::{LinuxCapabilities, PosixRlimitType, Spec};

use super::rootfs::{self, StepResult};
use crate::container::CreateOptions;
use crate::seccomp_filter::PrecompiledSeccomp;

fn os_err(what: impl std::fmt::Display) -> String {
    format!("{what}: {}", io::Error::last_os_error())
}

/// The init's stdio and the workload's command line, prepared before the clone.
pub(super) struct Child {
    stdio: [Option<OwnedFd>; 3],
    args: Vec<CString>,
    env: Vec<CString>,
}

impl Child {
    pub(super) fn prepare(spec: &Spec, opts: &mut CreateOptions) -> Result<Self, String> {
        let process = spec.process().as_ref().ok_or("the spec has no process")?;
        let cstring = |s: &str| CString::new(s).map_err(|_| format!("NUL byte in {s:?}"));
        let args = process
            .args()
            .iter()
            .flatten()
            .map(|a| cstring(a))
            .collect::<Result<Vec<_>, _>>()?;
        let env = process
            .env()
            .iter()
            .flatten()
            .map(|e| cstring(e))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            stdio: [opts.stdin.take(), opts.stdout.take(), opts.stderr.take()],
            args,
            env,
        })
    }

    /// Makes the given descriptors the init's stdin, stdout and stderr (the monitor's own
    /// stay where none is given).
    pub(super) fn attach_stdio(&self) -> StepResult {
        for (target, fd) in self.stdio.iter().enumerate() {
            if let Some(fd) = fd {
                dup2(fd.as_raw_fd(), target as i32)?;
            }
        }
        Ok(())
    }

    /// Limits, credentials and capabilities; what is left for [`Exec::run`] after `start`.
    pub(super) fn finish_credentials(self, spec: &Spec, preserve_fds: i32) -> Result<Exec, String> {
        let process = spec.process().as_ref().ok_or("the spec has no process")?;
        if let Some(adj) = process.oom_score_adj() {
            std::fs::write("/proc/self/oom_score_adj", adj.to_string())
                .map_err(|e| format!("set oom_score_adj {adj}: {e}"))?;
        }
        for limit in process.rlimits().iter().flatten() {
            let rlim = libc::rlimit {
                rlim_cur: limit.soft(),
                rlim_max: limit.hard(),
            };
            // SAFETY: setrlimit reads one rlimit that lives across the call.
            if unsafe { libc::setrlimit(rlimit_resource(limit.typ()), &rlim) } < 0 {
                return Err(os_err(format_args!("set {:?}", limit.typ())));
            }
        }
        if process.no_new_privileges() == Some(true) {
            // SAFETY: prctl(PR_SET_NO_NEW_PRIVS) changes only this process.
            if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } < 0 {
                return Err(os_err("set no_new_privs"));
            }
        }
        // Before the user changes: root may enter a directory the user cannot.
        let cwd = process.cwd();
        nix::unistd::chdir(cwd)
            .map_err(|e| format!("chdir to the working directory {}: {e}", cwd.display()))?;

        let user = process.user();
        let caps = process.capabilities().as_ref();
        if let Some(caps) = caps {
            drop_bounding(caps)?;
            // SAFETY: PR_SET_KEEPCAPS changes only this process.
            unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) };
        }
        let groups: Vec<libc::gid_t> = user.additional_gids().iter().flatten().copied().collect();
        // SAFETY: setgroups reads `groups.len()` gids from a live vector.
        if unsafe { libc::setgroups(groups.len(), groups.as_ptr()) } < 0 {
            return Err(os_err("set supplementary groups"));
        }
        // SAFETY: plain credential system calls on this process.
        if unsafe { libc::setresgid(user.gid(), user.gid(), user.gid()) } < 0 {
            return Err(os_err(format_args!("set group {}", user.gid())));
        }
        // SAFETY: as above.
        if unsafe { libc::setresuid(user.uid(), user.uid(), user.uid()) } < 0 {
            return Err(os_err(format_args!("set user {}", user.uid())));
        }
        if let Some(caps) = caps {
            // SAFETY: PR_SET_KEEPCAPS changes only this process.
            unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0) };
            set_capabilities(caps)?;
        }
        // SAFETY: umask only sets this process's mask.
        unsafe { libc::umask(user.umask().unwrap_or(0o022) as libc::mode_t) };

        // Nothing of the monitor's may reach the workload: every descriptor past stdio and
        // the preserved ones closes on exec (the exec watch pipe's EOF tells the monitor the
        // workload runs).
        let first = 3 + u32::try_from(preserve_fds).unwrap_or(0);
        // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets flags on descriptors.
        if unsafe { libc::close_range(first, u32::MAX, libc::CLOSE_RANGE_CLOEXEC as i32) } < 0 {
            return Err(os_err("mark descriptors close-on-exec"));
        }

        let mut env = self.env;
        if !env.iter().any(|e| e.as_bytes().starts_with(b"HOME=")) {
            if let Some(home) = home_of(user.uid()) {
                env.push(CString::new(format!("HOME={home}")).map_err(|_| "NUL in HOME")?);
            }
        }
        let path_var = env
            .iter()
            .find_map(|e| e.to_str().ok()?.strip_prefix("PATH="))
            .unwrap_or(crate::spec::DEFAULT_PATH)
            .to_owned();
        let name = self
            .args
            .first()
            .ok_or("no command")?
            .to_string_lossy()
            .into_owned();
        let path = executable(&name, &path_var)?;
        Ok(Exec {
            path: CString::new(path.as_os_str().as_bytes()).map_err(|_| "NUL in a path")?,
            args: self.args,
            env,
        })
    }
}

/// The workload's `execve`, prepared before `start`.
pub(super) struct Exec {
    path: CString,
    args: Vec<CString>,
    env: Vec<CString>,
}

impl Exec {
    /// Loads the seccomp filter and executes the workload; on failure writes why to stderr
    /// and exits 127 (not found) or 126 (cannot run), as a shell does.
    pub(super) fn run(self, seccomp: Option<&PrecompiledSeccomp>) -> ! {
        if let Some(filter) = seccomp {
            if let Err(e) = filter.load() {
                eprintln!("berth: load seccomp filter: {e}");
                // SAFETY: _exit ends this process only.
                unsafe { libc::_exit(126) }
            }
        }
        let mut argv: Vec<*const libc::c_char> = self.args.iter().map(|a| a.as_ptr()).collect();
        argv.push(std::ptr::null());
        let mut envp: Vec<*const libc::c_char> = self.env.iter().map(|e| e.as_ptr()).collect();
        envp.push(std::ptr::null());
        // SAFETY: `path`, every argument and environment string are NUL-terminated and alive;
        // both arrays end with a null pointer.
        unsafe { libc::execve(self.path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
        let err = io::Error::last_os_error();
        eprintln!("berth: exec {}: {err}", self.path.to_string_lossy());
        let code = if err.raw_os_error() == Some(libc::ENOENT) {
            127
        } else {
            126
        };
        // SAFETY: _exit ends this process only.
        unsafe { libc::_exit(code) }
    }
}

/// Finds the command as libcontainer's executor does (and with its messages, which the
/// daemon maps to exit codes 127 and 126): a name with a slash as is, else the first match
/// in `PATH`; it must be a file with an execute bit.
fn executable(name: &str, path_var: &str) -> Result<PathBuf, String> {
    use std::os::unix::fs::PermissionsExt;
    let found = if name.contains('/') {
        Path::new(name).exists().then(|| PathBuf::from(name))
    } else {
        path_var
            .split(':')
            .map(|dir| Path::new(dir).join(name))
            .find(|p| p.exists())
    };
    let path = found.ok_or_else(|| format!("executable '{name}' not found in $PATH"))?;
    let md = std::fs::metadata(&path)
        .map_err(|e| format!("failed to check permissions for executable '{name}': {e}"))?;
    if !md.is_file() || md.permissions().mode() & 0o111 == 0 {
        return Err(format!(
            "executable '{name}' at path {} does not have correct permissions",
            path.display()
        ));
    }
    Ok(path)
}

/// The home directory of `uid` in the container's `/etc/passwd`.
fn home_of(uid: u32) -> Option<String> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        (f.len() >= 6 && f[2].parse() == Ok(uid)).then(|| f[5].to_owned())
    })
}

fn rlimit_resource(typ: PosixRlimitType) -> libc::__rlimit_resource_t {
    use PosixRlimitType::*;
    match typ {
        RlimitCpu => libc::RLIMIT_CPU,
        RlimitFsize => libc::RLIMIT_FSIZE,
        RlimitData => libc::RLIMIT_DATA,
        RlimitStack => libc::RLIMIT_STACK,
        RlimitCore => libc::RLIMIT_CORE,
        RlimitRss => libc::RLIMIT_RSS,
        RlimitNproc => libc::RLIMIT_NPROC,
        RlimitNofile => libc::RLIMIT_NOFILE,
        RlimitMemlock => libc::RLIMIT_MEMLOCK,
        RlimitAs => libc::RLIMIT_AS,
        RlimitLocks => libc::RLIMIT_LOCKS,
        RlimitSigpending => libc::RLIMIT_SIGPENDING,
        RlimitMsgqueue => libc::RLIMIT_MSGQUEUE,
        RlimitNice => libc::RLIMIT_NICE,
        RlimitRtprio => libc::RLIMIT_RTPRIO,
        RlimitRttime => libc::RLIMIT_RTTIME,
    }
}

/// Capability numbers of an OCI set.
fn mask(
    set: Option<&std::collections::HashSet<oci_spec::runtime::Capability>>,
) -> Result<u64, String> {
    let mut mask = 0u64;
    for cap in set.into_iter().flatten() {
        let name = format!("CAP_{cap}");
        let index = caps::Capability::from_str(&name)
            .map_err(|_| format!("unknown capability {name}"))?
            .index();
        mask |= 1 << index;
    }
    Ok(mask)
}

fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

/// Drops from the bounding set every capability the spec's does not list.
fn drop_bounding(caps: &LinuxCapabilities) -> StepResult {
    let keep = mask(caps.bounding().as_ref())?;
    for cap in 0..=last_cap() {
        if keep & (1 << cap) == 0 {
            // SAFETY: PR_CAPBSET_DROP changes only this process's bounding set.
            if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) } < 0 {
                return Err(os_err(format_args!("drop capability {cap}")));
            }
        }
    }
    Ok(())
}

/// Sets the effective, permitted and inheritable sets in one `capset`, then raises the
/// ambient ones.
fn set_capabilities(caps: &LinuxCapabilities) -> StepResult {
    let effective = mask(caps.effective().as_ref())?;
    let permitted = mask(caps.permitted().as_ref())?;
    let inheritable = mask(caps.inheritable().as_ref())?;
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    let header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let data = [0, 32].map(|shift| Data {
        effective: (effective >> shift) as u32,
        permitted: (permitted >> shift) as u32,
        inheritable: (inheritable >> shift) as u32,
    });
    // SAFETY: capset reads a version-3 header and two data words that live across the call.
    if unsafe { libc::syscall(libc::SYS_capset, &header as *const Header, data.as_ptr()) } < 0 {
        return Err(os_err("set capabilities"));
    }
    // The kernel raises an ambient capability only when it is permitted and inheritable;
    // like runc, the others are skipped (runc's own `runc spec` lists ambient capabilities
    // that are not inheritable).
    let ambient = mask(caps.ambient().as_ref())? & permitted & inheritable;
    for cap in 0..64u64 {
        if ambient & (1 << cap) != 0 {
            // SAFETY: PR_CAP_AMBIENT_RAISE changes only this process's ambient set.
            let rc = unsafe {
                libc::prctl(
                    libc::PR_CAP_AMBIENT,
                    libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
                    cap as libc::c_ulong,
                    0,
                    0,
                )
            };
            if rc < 0 {
                return Err(os_err(format_args!("raise ambient capability {cap}")));
            }
        }
    }
    Ok(())
}

fn dup2(from: i32, to: i32) -> StepResult {
    if from == to {
        return Ok(());
    }
    // SAFETY: dup2 between two descriptor numbers; `from` is open.
    if unsafe { libc::dup2(from, to) } < 0 {
        return Err(os_err(format_args!("dup2 {from} {to}")));
    }
    Ok(())
}

/// A terminal for the init, as runc makes it: a pty of the container's own devpts, the
/// slave as its stdio, controlling terminal and `/dev/console`; the master goes to the
/// monitor over the console socket.
pub(super) fn attach_terminal(
    root: BorrowedFd<'_>,
    socket: &UnixStream,
    spec: &Spec,
) -> StepResult {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let master = rootfs::open_in_root(
        root,
        Path::new("/dev/pts/ptmx"),
        libc::O_RDWR | libc::O_NOCTTY,
    )
    .map_err(|e| format!("open /dev/pts/ptmx: {e}"))?;
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads one int that lives across the call; `master` is a pty master.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) } < 0 {
        return Err(os_err("unlock the pty"));
    }
    // SAFETY: TIOCGPTPEER opens the slave of this master; it returns a new descriptor.
    let slave = unsafe {
        libc::ioctl(
            master.as_raw_fd(),
            libc::TIOCGPTPEER,
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    if slave < 0 {
        return Err(os_err("open the pty slave"));
    }
    // SAFETY: the ioctl returned a descriptor nobody else owns.
    let slave = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(slave) };
    let console = rootfs::mount_target(root, Path::new("/dev/console"), true)?;
    rootfs::mount(
        Some(&rootfs::fd_path(&slave)),
        &rootfs::fd_path(&console),
        None,
        libc::MS_BIND,
        None,
        &"bind the pty on /dev/console",
    )?;
    if let Some(size) = spec.process().as_ref().and_then(|p| p.console_size()) {
        let ws = libc::winsize {
            ws_row: u16::try_from(size.height()).unwrap_or(u16::MAX),
            ws_col: u16::try_from(size.width()).unwrap_or(u16::MAX),
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads one winsize that lives across the call.
        unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    }
    let fds = [master.as_raw_fd()];
    let name = b"/dev/ptmx";
    sendmsg::<()>(
        socket.as_raw_fd(),
        &[io::IoSlice::new(name)],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .map_err(|e| format!("send the pty to the monitor: {e}"))?;
    drop(master);
    for target in 0..3 {
        dup2(slave.as_raw_fd(), target)?;
    }
    // SAFETY: TIOCSCTTY on our stdin, a terminal; this process leads its session.
    if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } < 0 {
        return Err(os_err("make the pty the controlling terminal"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_found_as_libcontainer_finds_them() {
        assert_eq!(
            executable("sh", "/nonexistent:/bin").unwrap(),
            Path::new("/bin/sh")
        );
        let missing = executable("no-such-command", "/bin").unwrap_err();
        assert!(missing.contains("not found"), "{missing}");
        let plain = tempfile::NamedTempFile::new().unwrap();
        let not_exec = executable(plain.path().to_str().unwrap(), "/bin").unwrap_err();
        assert!(!not_exec.contains("not found"), "{not_exec}");
        assert!(executable("/bin", "").is_err());
    }

    #[test]
    fn capability_names_map_to_their_numbers() {
        use oci_spec::runtime::Capability;
        let set = [Capability::Chown, Capability::SysAdmin]
            .into_iter()
            .collect();
        assert_eq!(mask(Some(&set)).unwrap(), (1 << 0) | (1 << 21));
    }
}
