//! Thin safe wrappers over the `*at` system calls used to build snapshots without ever
//! following a path outside the snapshot root.
//!
//! Paths given to [`open_in_root`] are resolved by the kernel with `openat2(2)` and
//! `RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS`: `..` and absolute symlinks are clamped to the root,
//! so no component can escape it. Everything else operates on one final name relative to a
//! directory fd obtained that way, and never follows a final symlink.

use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

fn cstr(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))
}

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `struct open_how` of openat2(2) (libc's is non-exhaustive).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// Open `path` relative to the directory `root`, resolving every component inside `root`.
pub(crate) fn open_in_root(root: &OwnedFd, path: &Path, flags: libc::c_int) -> io::Result<OwnedFd> {
    let c = cstr(if path.as_os_str().is_empty() {
        OsStr::new(".")
    } else {
        path.as_os_str()
    })?;
    let how = OpenHow {
        flags: (flags | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS,
    };
    let mut attempts = 0;
    loop {
        // SAFETY: `c` is a valid NUL-terminated string, `how` a valid open_how whose size we
        // pass; the kernel does not keep either pointer after the call.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                root.as_raw_fd(),
                c.as_ptr(),
                &how as *const OpenHow,
                std::mem::size_of::<OpenHow>(),
            )
        };
        if fd >= 0 {
            // SAFETY: the syscall returned a fresh fd that nothing else owns.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) });
        }
        let err = io::Error::last_os_error();
        // With RESOLVE_IN_ROOT the kernel answers EAGAIN when a rename or a mount anywhere on
        // the host raced with a `..` step, since it then cannot prove the walk stayed inside;
        // openat2(2) asks the caller to retry. A host starting containers mounts all the time.
        if err.raw_os_error() == Some(libc::EAGAIN) && attempts < OPENAT2_RETRIES {
            attempts += 1;
            continue;
        }
        return Err(err);
    }
}

/// How often [`open_in_root`] retries a walk the kernel could not prove safe (EAGAIN).
const OPENAT2_RETRIES: u32 = 128;

/// Open a directory by absolute or cwd-relative path as an `O_PATH` fd.
pub(crate) fn open_dir_path(path: &Path) -> io::Result<OwnedFd> {
    let c = cstr(path.as_os_str())?;
    // SAFETY: valid C string; returns a new fd or -1.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh fd owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// chmod of `name` in `dir` without following a symlink there: through an `O_PATH` fd's
/// magic link, since fchmod on an `O_PATH` fd is not allowed (device nodes and fifos must not
/// be opened for real).
pub(crate) fn chmod_nofollow(dir: &OwnedFd, name: &OsStr, mode: u32) -> io::Result<()> {
    let fd = openat(dir, name, libc::O_PATH, 0)?;
    let link = format!("/proc/self/fd/{}", fd.as_raw_fd());
    std::fs::set_permissions(link, std::os::unix::fs::PermissionsExt::from_mode(mode))
}

/// `openat(dir, name, flags, mode)` on a single name, never following a final symlink.
pub(crate) fn openat(
    dir: &OwnedFd,
    name: &OsStr,
    flags: libc::c_int,
    mode: u32,
) -> io::Result<OwnedFd> {
    let c = cstr(name)?;
    // SAFETY: valid dirfd and C string; returns a new fd or -1.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            c.as_ptr(),
            flags | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            mode as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh fd owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub(crate) fn lstatat(dir: &OwnedFd, name: &OsStr) -> io::Result<libc::stat> {
    let c = cstr(name)?;
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: valid dirfd, C string and a writable stat buffer.
    check(unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            c.as_ptr(),
            st.as_mut_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    // SAFETY: fstatat succeeded, so the buffer is initialised.
    Ok(unsafe { st.assume_init() })
}

pub(crate) fn mkdirat(dir: &OwnedFd, name: &OsStr, mode: u32) -> io::Result<()> {
    let c = cstr(name)?;
    // SAFETY: valid dirfd and C string.
    check(unsafe { libc::mkdirat(dir.as_raw_fd(), c.as_ptr(), mode as libc::mode_t) })
}

pub(crate) fn mknodat(
    dir: &OwnedFd,
    name: &OsStr,
    mode: u32,
    major: u32,
    minor: u32,
) -> io::Result<()> {
    let c = cstr(name)?;
    let dev = libc::makedev(major, minor);
    // SAFETY: valid dirfd and C string.
    check(unsafe { libc::mknodat(dir.as_raw_fd(), c.as_ptr(), mode as libc::mode_t, dev) })
}

pub(crate) fn symlinkat(target: &OsStr, dir: &OwnedFd, name: &OsStr) -> io::Result<()> {
    let t = cstr(target)?;
    let c = cstr(name)?;
    // SAFETY: valid C strings and dirfd.
    check(unsafe { libc::symlinkat(t.as_ptr(), dir.as_raw_fd(), c.as_ptr()) })
}

/// Hard link `old_dir/old_name` to `new_dir/new_name` without following a final symlink.
pub(crate) fn linkat(
    old_dir: &OwnedFd,
    old_name: &OsStr,
    new_dir: &OwnedFd,
    new_name: &OsStr,
) -> io::Result<()> {
    let o = cstr(old_name)?;
    let n = cstr(new_name)?;
    // SAFETY: valid dirfds and C strings; flags 0 means a final symlink is linked, not followed.
    check(unsafe {
        libc::linkat(
            old_dir.as_raw_fd(),
            o.as_ptr(),
            new_dir.as_raw_fd(),
            n.as_ptr(),
            0,
        )
    })
}

pub(crate) fn unlinkat(dir: &OwnedFd, name: &OsStr, remove_dir: bool) -> io::Result<()> {
    let c = cstr(name)?;
    let flags = if remove_dir { libc::AT_REMOVEDIR } else { 0 };
    // SAFETY: valid dirfd and C string.
    check(unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), flags) })
}

/// Remove `dir/name` and, if it is a directory, everything below it, without following any
/// symlink (each level is opened with `O_NOFOLLOW` relative to its parent).
pub(crate) fn remove_tree_at(dir: &OwnedFd, name: &OsStr) -> io::Result<()> {
    let st = lstatat(dir, name)?;
    if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
        return unlinkat(dir, name, false);
    }
    let sub = openat(dir, name, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
    // Listing through the fd's /proc link reads exactly the directory we opened.
    let listing = format!("/proc/self/fd/{}", sub.as_raw_fd());
    for entry in std::fs::read_dir(listing)? {
        remove_tree_at(&sub, &entry?.file_name())?;
    }
    unlinkat(dir, name, true)
}

pub(crate) fn lchownat(dir: &OwnedFd, name: &OsStr, uid: u32, gid: u32) -> io::Result<()> {
    let c = cstr(name)?;
    // SAFETY: valid dirfd and C string; AT_SYMLINK_NOFOLLOW changes the link itself.
    check(unsafe {
        libc::fchownat(
            dir.as_raw_fd(),
            c.as_ptr(),
            uid,
            gid,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
}

pub(crate) fn fchown(fd: &OwnedFd, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: valid fd.
    check(unsafe { libc::fchown(fd.as_raw_fd(), uid, gid) })
}

pub(crate) fn fchmod(fd: &OwnedFd, mode: u32) -> io::Result<()> {
    // SAFETY: valid fd.
    check(unsafe { libc::fchmod(fd.as_raw_fd(), mode as libc::mode_t) })
}

/// Set access and modification time of `dir/name` (not following a final symlink).
pub(crate) fn lutimesat(dir: &OwnedFd, name: &OsStr, secs: i64) -> io::Result<()> {
    let c = cstr(name)?;
    let ts = libc::timespec {
        tv_sec: secs as libc::time_t,
        tv_nsec: 0,
    };
    let times = [ts, ts];
    // SAFETY: valid dirfd, C string and a two-element timespec array.
    check(unsafe {
        libc::utimensat(
            dir.as_raw_fd(),
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
}

pub(crate) fn futimes(fd: &OwnedFd, secs: i64) -> io::Result<()> {
    let ts = libc::timespec {
        tv_sec: secs as libc::time_t,
        tv_nsec: 0,
    };
    let times = [ts, ts];
    // SAFETY: valid fd and a two-element timespec array.
    check(unsafe { libc::futimens(fd.as_raw_fd(), times.as_ptr()) })
}

pub(crate) fn fsetxattr(fd: &OwnedFd, name: &str, value: &[u8]) -> io::Result<()> {
    let n = cstr(OsStr::new(name))?;
    // SAFETY: valid fd, C string and value buffer of the given length.
    check(unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    })
}

/// Read an xattr of a path without following a final symlink; `None` if absent.
pub(crate) fn lgetxattr(path: &Path, name: &str) -> io::Result<Option<Vec<u8>>> {
    let p = cstr(path.as_os_str())?;
    let n = cstr(OsStr::new(name))?;
    let mut buf = vec![0u8; 256];
    loop {
        // SAFETY: valid C strings and a writable buffer of the given length.
        let r =
            unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if r >= 0 {
            buf.truncate(r as usize);
            return Ok(Some(buf));
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ENODATA) | Some(libc::ENOTSUP) => return Ok(None),
            Some(libc::ERANGE) if buf.len() < 1 << 16 => buf.resize(buf.len() * 4, 0),
            _ => return Err(e),
        }
    }
}

/// List xattr names of a path (not following a final symlink).
pub(crate) fn llistxattr(path: &Path) -> io::Result<Vec<String>> {
    let p = cstr(path.as_os_str())?;
    let mut buf = vec![0u8; 1024];
    loop {
        // SAFETY: valid C string and a writable buffer of the given length.
        let r = unsafe { libc::llistxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if r >= 0 {
            buf.truncate(r as usize);
            break;
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ENOTSUP) => return Ok(Vec::new()),
            Some(libc::ERANGE) if buf.len() < 1 << 20 => buf.resize(buf.len() * 4, 0),
            _ => return Err(e),
        }
    }
    Ok(buf
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .filter_map(|s| std::str::from_utf8(s).ok().map(str::to_string))
        .collect())
}

pub(crate) fn lsetxattr(path: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    let p = cstr(path.as_os_str())?;
    let n = cstr(OsStr::new(name))?;
    // SAFETY: valid C strings and value buffer of the given length.
    check(unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    })
}

/// Flush the filesystem holding `fd` (before a snapshot rename makes it visible).
pub(crate) fn syncfs(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: valid fd.
    check(unsafe { libc::syncfs(fd.as_raw_fd()) })
}

/// Overlay mount through the new mount API (`fsopen`/`fsconfig`/`fsmount`/`move_mount`),
/// which passes each lower layer separately (`lowerdir+`) and so has no page-size limit on
/// the number of layers.
pub(crate) fn mount_overlay_fsconfig(
    lowers: &[&Path],
    upper: &Path,
    work: &Path,
    target: &Path,
) -> io::Result<()> {
    const FSOPEN_CLOEXEC: libc::c_uint = 1;
    const FSCONFIG_SET_STRING: libc::c_uint = 1;
    const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
    const FSMOUNT_CLOEXEC: libc::c_uint = 1;
    const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;

    let fstype = c"overlay";
    // SAFETY: valid C string; returns a new fd or -1.
    let fsfd = unsafe { libc::syscall(libc::SYS_fsopen, fstype.as_ptr(), FSOPEN_CLOEXEC) };
    if fsfd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh fd owned by nobody else.
    let fsfd = unsafe { OwnedFd::from_raw_fd(fsfd as RawFd) };
    let set = |key: &CStr, value: &Path| -> io::Result<()> {
        let v = cstr(value.as_os_str())?;
        // SAFETY: valid fs context fd and C strings.
        let r = unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                fsfd.as_raw_fd(),
                FSCONFIG_SET_STRING,
                key.as_ptr(),
                v.as_ptr(),
                0,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    };
    for l in lowers {
        set(c"lowerdir+", l)?;
    }
    set(c"upperdir", upper)?;
    set(c"workdir", work)?;
    // SAFETY: valid fs context fd; null key/value for the create command.
    let r = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fsfd.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_void>(),
            0,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: valid fs context fd; returns a new mount fd or -1.
    let mfd = unsafe { libc::syscall(libc::SYS_fsmount, fsfd.as_raw_fd(), FSMOUNT_CLOEXEC, 0) };
    if mfd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh fd owned by nobody else.
    let mfd = unsafe { OwnedFd::from_raw_fd(mfd as RawFd) };
    let t = cstr(target.as_os_str())?;
    // SAFETY: valid mount fd, empty path with F_EMPTY_PATH, and a valid target C string.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mfd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `fstat` of any fd, `O_PATH` ones included (`fstatat(fd, "", AT_EMPTY_PATH)`).
pub(crate) fn fstat(fd: &OwnedFd) -> io::Result<libc::stat> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: valid fd, empty C string with AT_EMPTY_PATH, and a writable stat buffer.
    check(unsafe {
        libc::fstatat(
            fd.as_raw_fd(),
            c"".as_ptr(),
            st.as_mut_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    // SAFETY: fstatat succeeded, so the buffer is initialised.
    Ok(unsafe { st.assume_init() })
}

/// The target of the symlink `dir/name`.
pub(crate) fn readlinkat(dir: &OwnedFd, name: &OsStr) -> io::Result<std::ffi::OsString> {
    use std::os::unix::ffi::OsStringExt;
    let c = cstr(name)?;
    let mut buf = vec![0u8; 256];
    loop {
        // SAFETY: valid dirfd, C string and a writable buffer of the given length.
        let n = unsafe {
            libc::readlinkat(
                dir.as_raw_fd(),
                c.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        if n < buf.len() {
            buf.truncate(n);
            return Ok(std::ffi::OsString::from_vec(buf));
        }
        if buf.len() >= libc::PATH_MAX as usize * 2 {
            return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
        }
        buf.resize(buf.len() * 2, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::mount::{mount, umount2, MntFlags, MsFlags};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    /// Mounts elsewhere on the host make the kernel answer EAGAIN to a `..` walk now and then;
    /// the walk must still succeed (seen in CI while other tests started containers).
    #[test]
    fn walks_through_dotdot_while_the_host_mounts() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("root/a")).unwrap();
        std::fs::write(dir.path().join("root/b"), "b").unwrap();
        let target = dir.path().join("mnt");
        std::fs::create_dir(&target).unwrap();
        let root = open_dir_path(&dir.path().join("root")).unwrap();

        let stop = Arc::new(AtomicBool::new(false));
        let mounter = {
            let (stop, target) = (stop.clone(), target.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    mount(
                        Some("tmpfs"),
                        &target,
                        Some("tmpfs"),
                        MsFlags::empty(),
                        None::<&str>,
                    )
                    .unwrap();
                    umount2(&target, MntFlags::MNT_DETACH).unwrap();
                }
            })
        };
        let result = (0..20_000)
            .try_for_each(|_| open_in_root(&root, Path::new("a/../b"), libc::O_RDONLY).map(drop));
        stop.store(true, Ordering::Relaxed);
        mounter.join().unwrap();
        result.unwrap();
    }
}
