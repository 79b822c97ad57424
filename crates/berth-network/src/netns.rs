//! Persistent network namespaces as bind-mounted files (what `ip netns add` does), which the
//! daemon creates before the container starts and hands to the runtime as the OCI
//! `linux.namespaces[type=network].path`.

use std::fs::File;
use std::path::Path;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};

use crate::error::{io_err, NetworkError, Result};

/// Creates a new network namespace pinned by a bind mount on `path` (created if missing).
pub fn create(path: &Path) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io_err("create", dir))?;
    }
    if is_netns(path) {
        return Err(NetworkError::Io {
            op: "create netns",
            path: path.to_path_buf(),
            source: std::io::Error::from(std::io::ErrorKind::AlreadyExists),
        });
    }
    File::create(path).map_err(io_err("create", path))?;
    let target = path.to_path_buf();
    let r = std::thread::spawn(move || -> Result<()> {
        // unshare(CLONE_NEWNET) only moves this thread, which exits right after the mount.
        unshare(CloneFlags::CLONE_NEWNET).map_err(|source| NetworkError::Sys {
            op: "unshare(CLONE_NEWNET)",
            source,
        })?;
        let tid = nix::unistd::gettid();
        let src = format!("/proc/self/task/{tid}/ns/net");
        mount(
            Some(src.as_str()),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|source| NetworkError::Sys {
            op: "bind mount netns",
            source,
        })
    })
    .join()
    .unwrap_or(Err(NetworkError::WorkerPanicked("netns")));
    if r.is_err() {
        let _ = std::fs::remove_file(path);
    }
    r
}

/// True if `path` is a mounted namespace file (nsfs), e.g. left by a previous daemon run.
pub fn is_netns(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::NSFS_MAGIC)
}

/// Unmounts and removes a namespace file made by [`create`]; missing files are fine.
pub fn remove(path: &Path) -> Result<()> {
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(source) => {
            return Err(NetworkError::Sys {
                op: "umount netns",
                source,
            })
        }
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_err("remove", path)(e)),
        _ => Ok(()),
    }
}

/// Moves the namespace pinned at `from` (made by [`create`]) to `to`: a second bind mount of
/// the same namespace, then the first one unmounted and removed. Two mount calls, so a
/// namespace made ahead of time takes a container's path without touching the network stack.
pub fn rebind(from: &Path, to: &Path) -> Result<()> {
    if let Some(dir) = to.parent() {
        std::fs::create_dir_all(dir).map_err(io_err("create", dir))?;
    }
    if is_netns(to) {
        return Err(NetworkError::Io {
            op: "rebind netns",
            path: to.to_path_buf(),
            source: std::io::Error::from(std::io::ErrorKind::AlreadyExists),
        });
    }
    File::create(to).map_err(io_err("create", to))?;
    if let Err(source) = mount(Some(from), to, None::<&str>, MsFlags::MS_BIND, None::<&str>) {
        let _ = std::fs::remove_file(to);
        return Err(NetworkError::Sys {
            op: "bind mount netns",
            source,
        });
    }
    remove(from)
}
