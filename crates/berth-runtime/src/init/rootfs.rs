//! The container's filesystem view, built by its init in its new mount namespace: the spec's
//! mounts, device nodes, `/dev` links, `pivot_root`, the read-only root, masked and read-only
//! paths.
//!
//! Every path inside the root filesystem is resolved by the kernel with `openat2`'s
//! `RESOLVE_IN_ROOT`, so a symlink in a hostile image (`/etc -> /host/etc`, `../../..`) can
//! only lead somewhere inside the root; mounts then target the resolved file through
//! `/proc/self/fd/N`, never the path again (runc does the same).

use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use oci_spec::runtime::{LinuxDevice, LinuxDeviceType, Mount};

use super::cgroups::Hierarchy;

/// A step's failure, with what was being done.
pub(super) type StepResult<T = ()> = Result<T, String>;

fn os_err(what: impl std::fmt::Display) -> String {
    format!("{what}: {}", io::Error::last_os_error())
}

fn cpath(path: &Path) -> StepResult<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| format!("path {} contains a NUL byte", path.display()))
}

/// The flags and data of a spec mount's options.
#[derive(Debug, Default, PartialEq)]
pub(super) struct MountOptions {
    pub flags: libc::c_ulong,
    /// Propagation changes, applied one by one after the mount.
    pub propagation: Vec<libc::c_ulong>,
    /// Options the filesystem parses itself (`mode=755`, `size=64m`, ...).
    pub data: String,
    pub bind: bool,
}

/// Parses OCI mount options as runc does; unknown ones go to the filesystem.
pub(super) fn parse_options(options: &[String]) -> MountOptions {
    let mut o = MountOptions::default();
    let mut data = Vec::new();
    for opt in options {
        let (set, clear): (libc::c_ulong, libc::c_ulong) = match opt.as_str() {
            "ro" => (libc::MS_RDONLY, 0),
            "rw" => (0, libc::MS_RDONLY),
            "nosuid" => (libc::MS_NOSUID, 0),
            "suid" => (0, libc::MS_NOSUID),
            "nodev" => (libc::MS_NODEV, 0),
            "dev" => (0, libc::MS_NODEV),
            "noexec" => (libc::MS_NOEXEC, 0),
            "exec" => (0, libc::MS_NOEXEC),
            "sync" => (libc::MS_SYNCHRONOUS, 0),
            "async" => (0, libc::MS_SYNCHRONOUS),
            "dirsync" => (libc::MS_DIRSYNC, 0),
            "mand" => (libc::MS_MANDLOCK, 0),
            "nomand" => (0, libc::MS_MANDLOCK),
            "noatime" => (libc::MS_NOATIME, 0),
            "atime" => (0, libc::MS_NOATIME),
            "nodiratime" => (libc::MS_NODIRATIME, 0),
            "diratime" => (0, libc::MS_NODIRATIME),
            "relatime" => (libc::MS_RELATIME, 0),
            "norelatime" => (0, libc::MS_RELATIME),
            "strictatime" => (libc::MS_STRICTATIME, 0),
            "nostrictatime" => (0, libc::MS_STRICTATIME),
            "nosymfollow" => (libc::MS_NOSYMFOLLOW, 0),
            "symfollow" => (0, libc::MS_NOSYMFOLLOW),
            "bind" => {
                o.bind = true;
                (libc::MS_BIND, 0)
            }
            "rbind" => {
                o.bind = true;
                (libc::MS_BIND | libc::MS_REC, 0)
            }
            "private" => {
                o.propagation.push(libc::MS_PRIVATE);
                (0, 0)
            }
            "rprivate" => {
                o.propagation.push(libc::MS_PRIVATE | libc::MS_REC);
                (0, 0)
            }
            "shared" => {
                o.propagation.push(libc::MS_SHARED);
                (0, 0)
            }
            "rshared" => {
                o.propagation.push(libc::MS_SHARED | libc::MS_REC);
                (0, 0)
            }
            "slave" => {
                o.propagation.push(libc::MS_SLAVE);
                (0, 0)
            }
            "rslave" => {
                o.propagation.push(libc::MS_SLAVE | libc::MS_REC);
                (0, 0)
            }
            "unbindable" => {
                o.propagation.push(libc::MS_UNBINDABLE);
                (0, 0)
            }
            "runbindable" => {
                o.propagation.push(libc::MS_UNBINDABLE | libc::MS_REC);
                (0, 0)
            }
            _ => {
                data.push(opt.as_str());
                (0, 0)
            }
        };
        o.flags = (o.flags | set) & !clear;
    }
    o.data = data.join(",");
    o
}

/// Options the init does not handle itself (the spec then goes to libcontainer): copy-up,
/// id-mapped mounts and the recursive attributes set with mount_setattr.
pub(super) fn unsupported_option(options: &[String]) -> Option<&str> {
    const RECURSIVE: [&str; 18] = [
        "rro",
        "rrw",
        "rnosuid",
        "rsuid",
        "rnodev",
        "rdev",
        "rnoexec",
        "rexec",
        "rnodiratime",
        "rdiratime",
        "rrelatime",
        "rnorelatime",
        "rnoatime",
        "ratime",
        "rstrictatime",
        "rnostrictatime",
        "rnosymfollow",
        "rsymfollow",
    ];
    options.iter().map(String::as_str).find(|o| {
        matches!(*o, "tmpcopyup" | "idmap" | "ridmap" | "copy-symlink") || RECURSIVE.contains(o)
    })
}

/// An `O_PATH` descriptor of `path` inside the root, resolved by the kernel as if the root
/// were `/`.
pub(super) fn open_in_root(
    root: BorrowedFd<'_>,
    path: &Path,
    flags: libc::c_int,
) -> io::Result<OwnedFd> {
    let relative = path.strip_prefix("/").unwrap_or(path);
    let relative = if relative.as_os_str().is_empty() {
        Path::new(".")
    } else {
        relative
    };
    let c = CString::new(relative.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: open_how is plain data; zero is "no flags".
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: `c` and `how` outlive the call; openat2 reads them and returns a new descriptor
    // or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root.as_raw_fd(),
            c.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: openat2 just returned this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// The normal components of an absolute path inside the root; `..` is refused.
fn components(path: &Path) -> StepResult<Vec<&OsStr>> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(Ok(n)),
            Component::ParentDir => Some(Err(format!(
                "path {} inside the container contains \"..\"",
                path.display()
            ))),
            _ => None,
        })
        .collect()
}

/// Opens (`O_PATH`) directory `path` inside the root, creating what is missing (mode 0755).
/// A dangling symlink on the way is followed inside the root and its target created, as a
/// `mkdir -p` in a chroot would.
pub(super) fn mkdir_all(root: BorrowedFd<'_>, path: &Path) -> StepResult<OwnedFd> {
    let mut path = path.to_path_buf();
    // Each dangling link restarts the walk on its target; a cycle ends here.
    for _ in 0..40 {
        match mkdir_walk(root, &path)? {
            Walk::Done(fd) => return Ok(fd),
            Walk::Restart(next) => path = next,
        }
    }
    Err(format!("too many symlinks below {}", path.display()))
}

enum Walk {
    Done(OwnedFd),
    Restart(PathBuf),
}

fn mkdir_walk(root: BorrowedFd<'_>, path: &Path) -> StepResult<Walk> {
    let parts = components(path)?;
    let mut dir = open_in_root(root, Path::new("/"), libc::O_PATH | libc::O_DIRECTORY)
        .map_err(|e| format!("open the root filesystem: {e}"))?;
    let mut at = PathBuf::from("/");
    for (i, part) in parts.iter().enumerate() {
        let parent = at.clone();
        at.push(part);
        match open_in_root(root, &at, libc::O_PATH | libc::O_DIRECTORY) {
            Ok(fd) => dir = fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                let name = CString::new(part.as_bytes()).map_err(|_| "NUL in a path".to_owned())?;
                // SAFETY: `dir` is an open directory descriptor and `name` a single
                // component; mkdirat creates it below that directory only.
                let rc = unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), 0o755) };
                if rc < 0 {
                    if io::Error::last_os_error().raw_os_error() != Some(libc::EEXIST) {
                        return Err(os_err(format_args!("create directory {}", at.display())));
                    }
                    // Something is there but does not resolve: a dangling symlink.
                    let link = nix::fcntl::readlinkat(Some(dir.as_raw_fd()), name.as_c_str())
                        .map_err(|e| format!("open directory {}: {e}", at.display()))?;
                    let mut next = parent.join(link);
                    next.extend(&parts[i + 1..]);
                    return Ok(Walk::Restart(lexical_clean(&next)));
                }
                dir = open_in_root(root, &at, libc::O_PATH | libc::O_DIRECTORY)
                    .map_err(|e| format!("open directory {}: {e}", at.display()))?;
            }
            Err(e) => return Err(format!("open directory {}: {e}", at.display())),
        }
    }
    Ok(Walk::Done(dir))
}

/// `path` with `.` and `..` resolved lexically, never above `/` (as the kernel resolves
/// `..` at the root of a `RESOLVE_IN_ROOT` walk).
fn lexical_clean(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

/// Opens (`O_PATH`) `path` inside the root as a mount target: a directory, or a file when
/// `file` is set; what is missing is created.
pub(super) fn mount_target(root: BorrowedFd<'_>, path: &Path, file: bool) -> StepResult<OwnedFd> {
    if !file {
        return mkdir_all(root, path);
    }
    match open_in_root(root, path, libc::O_PATH) {
        Ok(fd) => return Ok(fd),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
        Err(e) => return Err(format!("open {}: {e}", path.display())),
    }
    let parent = path.parent().unwrap_or(Path::new("/"));
    let dir = mkdir_all(root, parent)?;
    let name = path
        .file_name()
        .ok_or_else(|| format!("mount destination {} has no name", path.display()))?;
    let name = CString::new(name.as_bytes()).map_err(|_| "NUL in a path".to_owned())?;
    // An O_PATH descriptor cannot be used with openat's O_CREAT: reopen the directory.
    let dir = reopen(&dir, libc::O_RDONLY | libc::O_DIRECTORY)?;
    // SAFETY: `dir` is an open directory and `name` one component; O_NOFOLLOW makes a
    // symlink planted there fail instead of being followed.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::O_CREAT | libc::O_WRONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            0o644,
        )
    };
    if fd < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::ELOOP) {
        return Err(os_err(format_args!("create {}", path.display())));
    }
    if fd >= 0 {
        // SAFETY: openat returned a descriptor nobody else owns; closing it is all we do.
        drop(unsafe { OwnedFd::from_raw_fd(fd) });
    }
    open_in_root(root, path, libc::O_PATH).map_err(|e| format!("open {}: {e}", path.display()))
}

/// Reopens an `O_PATH` descriptor with real access flags (through its magic link).
fn reopen(fd: &OwnedFd, flags: libc::c_int) -> StepResult<OwnedFd> {
    let link = fd_path(fd);
    // SAFETY: `link` is a NUL-terminated path that lives across the call.
    let new = unsafe { libc::open(link.as_ptr(), flags | libc::O_CLOEXEC) };
    if new < 0 {
        return Err(os_err("reopen a directory"));
    }
    // SAFETY: open returned a descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// `/proc/self/fd/N`: the path through which the kernel reaches exactly the file `fd` is.
pub(super) fn fd_path(fd: &impl AsRawFd) -> CString {
    CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).expect("no NUL in a number")
}

/// mount(2) with error context.
pub(super) fn mount(
    source: Option<&CStr>,
    target: &CStr,
    fstype: Option<&CStr>,
    flags: libc::c_ulong,
    data: Option<&CStr>,
    what: &dyn std::fmt::Display,
) -> StepResult {
    let ptr = |c: Option<&CStr>| c.map_or(std::ptr::null(), CStr::as_ptr);
    // SAFETY: every pointer is null or a NUL-terminated string alive across the call.
    let rc = unsafe {
        libc::mount(
            ptr(source),
            target.as_ptr(),
            ptr(fstype),
            flags,
            ptr(data).cast(),
        )
    };
    if rc < 0 {
        return Err(os_err(what));
    }
    Ok(())
}

/// Flags of the mount at `target` that a bind remount must repeat (the kernel refuses to
/// clear a locked one, and a remount sets exactly what it is given).
fn kept_flags(target: &CStr) -> libc::c_ulong {
    // SAFETY: statvfs fills the zeroed struct it is given; `target` is a valid C string.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::statvfs(target.as_ptr(), &mut st) } < 0 {
        return 0;
    }
    let mut flags = 0;
    for (st_flag, ms_flag) in [
        (libc::ST_NOSUID, libc::MS_NOSUID),
        (libc::ST_NODEV, libc::MS_NODEV),
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        (libc::ST_RELATIME, libc::MS_RELATIME),
        (libc::ST_RDONLY, libc::MS_RDONLY),
    ] {
        if st.f_flag & st_flag != 0 {
            flags |= ms_flag;
        }
    }
    flags
}

/// Where the pieces the spec's mounts need come from, read before the init starts.
pub(super) struct MountContext<'a> {
    /// The host's cgroup v1 hierarchies (for the `cgroup` mount).
    pub hierarchies: &'a [Hierarchy],
    /// The container has its own cgroup namespace.
    pub cgroup_ns: bool,
}

/// Mounts one spec mount below the root.
pub(super) fn mount_one(root: BorrowedFd<'_>, m: &Mount, ctx: &MountContext<'_>) -> StepResult {
    let dest = m.destination();
    if !dest.is_absolute() {
        return Err(format!(
            "mount destination {} is not absolute",
            dest.display()
        ));
    }
    let options = parse_options(m.options().as_deref().unwrap_or_default());
    let typ = m
        .typ()
        .as_deref()
        .unwrap_or(if options.bind { "bind" } else { "" });
    if typ == "cgroup" {
        return mount_cgroup_v1(root, dest, &options, ctx);
    }
    let what = |step: &str| format!("{step} {} on {}", typ, dest.display());
    if options.bind || typ == "bind" {
        let source = m
            .source()
            .as_deref()
            .ok_or_else(|| format!("bind mount on {} has no source", dest.display()))?;
        let file = std::fs::metadata(source)
            .map(|md| !md.is_dir())
            .map_err(|e| format!("bind source {}: {e}", source.display()))?;
        let below = mount_target(root, dest, file)?;
        let src = cpath(source)?;
        let rec = options.flags & libc::MS_REC;
        mount(
            Some(&src),
            &fd_path(&below),
            None,
            libc::MS_BIND | rec,
            None,
            &format_args!("bind {} on {}", source.display(), dest.display()),
        )?;
        // What is at `dest` now is the new mount, not the file `target` names.
        let top = mounted(root, dest)?;
        let target = fd_path(&top);
        let extra = options.flags & !(libc::MS_BIND | libc::MS_REC);
        if extra != 0 {
            let flags = extra | kept_flags(&target);
            mount(
                None,
                &target,
                None,
                flags | libc::MS_BIND | libc::MS_REMOUNT | rec,
                None,
                &what("remount"),
            )?;
        }
        return propagate(&target, &options.propagation, &what("set propagation of"));
    }
    let below = mount_target(root, dest, false)?;
    let source = cpath(m.source().as_deref().unwrap_or(Path::new(typ)))?;
    let fstype = CString::new(typ).map_err(|_| "NUL in a mount type".to_owned())?;
    let data = CString::new(options.data.as_str()).map_err(|_| "NUL in mount data".to_owned())?;
    mount(
        Some(&source),
        &fd_path(&below),
        Some(&fstype),
        options.flags,
        (!options.data.is_empty()).then_some(data.as_c_str()),
        &what("mount"),
    )?;
    if options.propagation.is_empty() {
        return Ok(());
    }
    let top = mounted(root, dest)?;
    let target = fd_path(&top);
    propagate(&target, &options.propagation, &what("set propagation of"))
}

/// The mount just made on `dest` (a descriptor opened before it names what is below).
fn mounted(root: BorrowedFd<'_>, dest: &Path) -> StepResult<OwnedFd> {
    open_in_root(root, dest, libc::O_PATH).map_err(|e| format!("open {}: {e}", dest.display()))
}

fn propagate(target: &CStr, changes: &[libc::c_ulong], what: &dyn std::fmt::Display) -> StepResult {
    for &flags in changes {
        mount(None, target, None, flags, None, what)?;
    }
    Ok(())
}

/// `/sys/fs/cgroup` on cgroup v1, as runc and libcontainer make it: a tmpfs holding one
/// mount per host hierarchy — the container's own cgroup bound from the host (host cgroup
/// namespace) or the hierarchy mounted afresh (private one) — and links for co-mounted
/// controllers (`cpu -> cpu,cpuacct`). Read-only when the spec asks, tmpfs included.
fn mount_cgroup_v1(
    root: BorrowedFd<'_>,
    dest: &Path,
    options: &MountOptions,
    ctx: &MountContext<'_>,
) -> StepResult {
    let below = mount_target(root, dest, false)?;
    let base = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    mount(
        Some(c"tmpfs"),
        &fd_path(&below),
        Some(c"tmpfs"),
        base,
        Some(c"mode=755"),
        &format_args!("mount tmpfs on {}", dest.display()),
    )?;
    let tmpfs = mounted(root, dest)?;
    let tmpfs_target = fd_path(&tmpfs);
    let own = if ctx.cgroup_ns {
        Vec::new()
    } else {
        std::fs::read_to_string("/proc/self/cgroup")
            .map_err(|e| format!("read /proc/self/cgroup: {e}"))?
            .lines()
            .filter_map(|l| {
                let mut f = l.splitn(3, ':');
                let _ = f.next()?;
                Some((f.next()?.to_owned(), f.next()?.to_owned()))
            })
            .collect::<Vec<_>>()
    };
    for h in ctx.hierarchies {
        if !h.mount_point.starts_with("/sys/fs/cgroup") {
            continue;
        }
        let Some(name) = h.mount_point.file_name() else {
            continue;
        };
        let sub = dest.join(name);
        let below = mount_target(root, &sub, false)?;
        let what = format_args!(
            "mount cgroup {} on {}",
            name.to_string_lossy(),
            sub.display()
        );
        if ctx.cgroup_ns {
            let data = CString::new(h.controllers.join(",")).map_err(|_| "NUL".to_owned())?;
            mount(
                Some(c"cgroup"),
                &fd_path(&below),
                Some(c"cgroup"),
                base | (options.flags & libc::MS_RDONLY),
                Some(&data),
                &what,
            )?;
        } else {
            let key = h.controllers.join(",");
            let Some((_, path)) = own.iter().find(|(k, _)| *k == key) else {
                continue;
            };
            let source = h.mount_point.join(path.trim_start_matches('/'));
            mount(
                Some(&cpath(&source)?),
                &fd_path(&below),
                None,
                libc::MS_BIND | libc::MS_REC,
                None,
                &format_args!("bind {} on {}", source.display(), sub.display()),
            )?;
            let top = mounted(root, &sub)?;
            let sub_target = fd_path(&top);
            let flags = base | (options.flags & libc::MS_RDONLY);
            mount(
                None,
                &sub_target,
                None,
                flags | libc::MS_BIND | libc::MS_REMOUNT,
                None,
                &what,
            )?;
        }
        let name = name.to_string_lossy();
        if name.contains(',') {
            // The tmpfs now on `dest`, not the directory below it that `target` is.
            let dir = open_in_root(root, dest, libc::O_RDONLY | libc::O_DIRECTORY)
                .map_err(|e| format!("open {}: {e}", dest.display()))?;
            for comount in name.split(',') {
                symlink_at(&dir, name.as_ref(), comount)?;
            }
        }
    }
    if options.flags & libc::MS_RDONLY != 0 {
        mount(
            None,
            &tmpfs_target,
            None,
            base | libc::MS_RDONLY | libc::MS_REMOUNT,
            Some(c"mode=755"),
            &format_args!("remount {} read-only", dest.display()),
        )?;
    }
    Ok(())
}

fn symlink_at(dir: &OwnedFd, target: &str, name: &str) -> StepResult {
    let t = CString::new(target).map_err(|_| "NUL".to_owned())?;
    let n = CString::new(name).map_err(|_| "NUL".to_owned())?;
    // SAFETY: both strings live across the call; `dir` is an open directory.
    let rc = unsafe { libc::symlinkat(t.as_ptr(), dir.as_raw_fd(), n.as_ptr()) };
    if rc < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EEXIST) {
        return Err(os_err(format_args!("link {name} -> {target}")));
    }
    Ok(())
}

/// The nodes every container gets in `/dev`, as runc's and libcontainer's defaults.
const DEFAULT_DEVICES: [(&str, u32, u32); 6] = [
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("tty", 5, 0),
    ("urandom", 1, 9),
    ("random", 1, 8),
];

/// Creates the default device nodes, the spec's and the standard `/dev` links (runc's set).
pub(super) fn populate_dev(root: BorrowedFd<'_>, devices: &[LinuxDevice]) -> StepResult {
    let dev = mkdir_all(root, Path::new("/dev"))?;
    let dev = reopen(&dev, libc::O_RDONLY | libc::O_DIRECTORY)?;
    for (name, major, minor) in DEFAULT_DEVICES {
        mknod_at(&dev, name, libc::S_IFCHR, 0o666, major, minor, None, None)?;
    }
    for d in devices {
        let path = d.path();
        let kind = match d.typ() {
            LinuxDeviceType::C | LinuxDeviceType::U => libc::S_IFCHR,
            LinuxDeviceType::B => libc::S_IFBLK,
            LinuxDeviceType::P => libc::S_IFIFO,
            LinuxDeviceType::A => continue,
        };
        let parent = path.parent().unwrap_or(Path::new("/dev"));
        let dir = reopen(
            &mkdir_all(root, parent)?,
            libc::O_RDONLY | libc::O_DIRECTORY,
        )?;
        let name = path
            .file_name()
            .ok_or_else(|| format!("device {} has no name", path.display()))?
            .to_string_lossy();
        let major = u32::try_from(d.major()).map_err(|_| "negative device major".to_owned())?;
        let minor = u32::try_from(d.minor()).map_err(|_| "negative device minor".to_owned())?;
        mknod_at(
            &dir,
            &name,
            kind,
            d.file_mode().unwrap_or(0o666),
            major,
            minor,
            d.uid(),
            d.gid(),
        )?;
    }
    for (name, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        symlink_at(&dev, target, name)?;
    }
    // The pty multiplexer is the container's own devpts instance's.
    // SAFETY: `dev` is an open directory; unlinkat only removes its entry "ptmx".
    unsafe { libc::unlinkat(dev.as_raw_fd(), c"ptmx".as_ptr(), 0) };
    symlink_at(&dev, "pts/ptmx", "ptmx")
}

#[allow(clippy::too_many_arguments)]
fn mknod_at(
    dir: &OwnedFd,
    name: &str,
    kind: libc::mode_t,
    perm: u32,
    major: u32,
    minor: u32,
    uid: Option<u32>,
    gid: Option<u32>,
) -> StepResult {
    let n = CString::new(name).map_err(|_| "NUL in a device name".to_owned())?;
    // SAFETY: `dir` is an open directory and `n` a single component alive across the call.
    let rc = unsafe {
        libc::mknodat(
            dir.as_raw_fd(),
            n.as_ptr(),
            kind | (perm & 0o7777),
            libc::makedev(major, minor),
        )
    };
    if rc < 0 {
        if io::Error::last_os_error().raw_os_error() == Some(libc::EEXIST) {
            return Ok(());
        }
        return Err(os_err(format_args!("create device /dev/{name}")));
    }
    if uid.is_some() || gid.is_some() {
        // SAFETY: as above; AT_SYMLINK_NOFOLLOW changes the node just made, not a link.
        let rc = unsafe {
            libc::fchownat(
                dir.as_raw_fd(),
                n.as_ptr(),
                uid.unwrap_or(u32::MAX),
                gid.unwrap_or(u32::MAX),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        if rc < 0 {
            return Err(os_err(format_args!("chown device {name}")));
        }
    }
    Ok(())
}

/// Makes the root the process's `/`: `pivot_root(".", ".")` and a lazy unmount of the old
/// root stacked below it, so no host path stays reachable (runc's way, without a put-old
/// directory in the image).
pub(super) fn pivot(root: BorrowedFd<'_>) -> StepResult {
    // SAFETY: fchdir on an open directory descriptor.
    if unsafe { libc::fchdir(root.as_raw_fd()) } < 0 {
        return Err(os_err("enter the root filesystem"));
    }
    // SAFETY: pivot_root with two static C strings.
    if unsafe { libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) } < 0 {
        return Err(os_err("pivot_root"));
    }
    // The old root must not propagate the unmount to the host.
    mount(
        None,
        c".",
        None,
        libc::MS_SLAVE | libc::MS_REC,
        None,
        &"make the old root a slave",
    )?;
    // SAFETY: umount2 of the current directory's top mount, a static C string.
    if unsafe { libc::umount2(c".".as_ptr(), libc::MNT_DETACH) } < 0 {
        return Err(os_err("detach the old root"));
    }
    // SAFETY: chdir to a static C string.
    if unsafe { libc::chdir(c"/".as_ptr()) } < 0 {
        return Err(os_err("chdir /"));
    }
    Ok(())
}

/// Remounts `/` read-only (after `pivot`).
pub(super) fn readonly_root() -> StepResult {
    let flags = kept_flags(c"/") | libc::MS_RDONLY;
    mount(
        None,
        c"/",
        None,
        flags | libc::MS_BIND | libc::MS_REMOUNT,
        None,
        &"remount the root filesystem read-only",
    )
}

/// Hides `path` (after `pivot`): `/dev/null` over a file, an empty read-only tmpfs over a
/// directory. A missing path is skipped, as in runc.
pub(super) fn mask(path: &Path) -> StepResult {
    let c = cpath(path)?;
    let md = match std::fs::symlink_metadata(path) {
        Ok(md) => md,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("mask {}: {e}", path.display())),
    };
    let what = format_args!("mask {}", path.display());
    if md.is_dir() {
        mount(
            Some(c"tmpfs"),
            &c,
            Some(c"tmpfs"),
            libc::MS_RDONLY,
            None,
            &what,
        )
    } else {
        mount(Some(c"/dev/null"), &c, None, libc::MS_BIND, None, &what)
    }
}

/// Makes `path` read-only (after `pivot`); a missing path is skipped.
pub(super) fn make_readonly(path: &Path) -> StepResult {
    let c = cpath(path)?;
    if std::fs::symlink_metadata(path).is_err() {
        return Ok(());
    }
    let what = format_args!("make {} read-only", path.display());
    mount(
        Some(&c),
        &c,
        None,
        libc::MS_BIND | libc::MS_REC,
        None,
        &what,
    )?;
    let flags = kept_flags(&c) | libc::MS_RDONLY;
    mount(
        None,
        &c,
        None,
        flags | libc::MS_BIND | libc::MS_REMOUNT | libc::MS_REC,
        None,
        &what,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn options_split_into_flags_propagation_and_data() {
        let o = parse_options(
            &[
                "nosuid", "noexec", "rbind", "rprivate", "ro", "mode=755", "size=64m",
            ]
            .map(str::to_owned),
        );
        assert_eq!(
            o,
            MountOptions {
                flags: libc::MS_NOSUID
                    | libc::MS_NOEXEC
                    | libc::MS_BIND
                    | libc::MS_REC
                    | libc::MS_RDONLY,
                propagation: vec![libc::MS_PRIVATE | libc::MS_REC],
                data: "mode=755,size=64m".into(),
                bind: true,
            }
        );
        assert_eq!(parse_options(&["ro".into(), "rw".into()]).flags, 0);
    }

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("escape")).unwrap();
        std::os::unix::fs::symlink("../../../..", root.path().join("up")).unwrap();
        let fd: OwnedFd = std::fs::File::open(root.path()).unwrap().into();
        // Both links stay inside: the created directories are below the root.
        mkdir_all(fd.as_fd(), Path::new("/escape/etc")).unwrap();
        mount_target(fd.as_fd(), Path::new("/up/hosts"), true).unwrap();
        assert!(std::fs::read_dir(outside.path()).unwrap().next().is_none());
        assert!(root
            .path()
            .join(outside.path().strip_prefix("/").unwrap())
            .join("etc")
            .is_dir());
        assert!(root.path().join("hosts").is_file());
        assert!(mkdir_all(fd.as_fd(), Path::new("/a/../b")).is_err());
    }
}
