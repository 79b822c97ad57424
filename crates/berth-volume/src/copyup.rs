//! Populating a new volume from the image: when a container mounts an empty volume over a
//! directory that has content in its root filesystem, that content is copied into the volume
//! first (Docker's "copy-up"; `nocopy` turns it off).
//!
//! The mount path is resolved inside the root as a chroot would ([`resolve_in_root`]), so an
//! image whose `/data` is a symlink to `/etc` copies its own `/etc`, never the host's. The
//! copy itself never follows symlinks: links are recreated as links. Ownership, permission
//! bits, timestamps and extended attributes (file capabilities included) are preserved, and
//! hard links inside the tree stay hard links.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use nix::sys::stat::{utimensat, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;

use crate::error::{Error, Result};

/// Symlinks followed while resolving one path before giving up (Linux's own limit).
const MAX_SYMLINKS: usize = 40;

/// Resolves `path` (absolute, as seen inside the container) to a host path under `root`,
/// following symlinks as if `root` were `/`: absolute link targets restart at `root` and `..`
/// never climbs above it. Components that do not exist are appended as they are.
pub fn resolve_in_root(root: &Path, path: &Path) -> Result<PathBuf> {
    let mut resolved = PathBuf::new(); // relative to root
    let mut pending: Vec<std::ffi::OsString> = path
        .components()
        .rev()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    let mut followed = 0;
    while let Some(name) = pending.pop() {
        if name == ".." {
            resolved.pop();
            continue;
        }
        let candidate = resolved.join(&name);
        let host = root.join(&candidate);
        match fs::symlink_metadata(&host) {
            Ok(meta) if meta.file_type().is_symlink() => {
                followed += 1;
                if followed > MAX_SYMLINKS {
                    return Err(Error::io(
                        "resolve",
                        &host,
                        std::io::Error::from_raw_os_error(libc::ELOOP),
                    ));
                }
                let target = fs::read_link(&host).map_err(|e| Error::io("readlink", &host, e))?;
                if target.is_absolute() {
                    resolved = PathBuf::new();
                }
                for c in target.components().rev() {
                    match c {
                        Component::Normal(n) => pending.push(n.to_os_string()),
                        Component::ParentDir => pending.push("..".into()),
                        _ => {}
                    }
                }
            }
            _ => resolved = candidate,
        }
    }
    Ok(root.join(resolved))
}

/// True when `dir` has no entries (a missing directory counts as empty).
pub fn is_empty_dir(dir: &Path) -> bool {
    fs::read_dir(dir).map_or(true, |mut d| d.next().is_none())
}

/// Copies the directory `src` (already resolved inside its root) into the empty directory
/// `dst`, and gives `dst` the ownership and mode of `src`. Nothing happens when `src` is not
/// a directory or `dst` is not empty.
pub fn copy_up(src: &Path, dst: &Path) -> Result<()> {
    let Ok(meta) = fs::symlink_metadata(src) else {
        return Ok(());
    };
    if !meta.is_dir() || !is_empty_dir(dst) {
        return Ok(());
    }
    let mut links = HashMap::new();
    copy_dir_contents(src, dst, &mut links)?;
    copy_attributes(src, dst, &meta)
}

fn copy_dir_contents(
    src: &Path,
    dst: &Path,
    links: &mut HashMap<(u64, u64), PathBuf>,
) -> Result<()> {
    let entries = fs::read_dir(src).map_err(|e| Error::io("read", src, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("read", src, e))?;
        let from = entry.path();
        let to = dst.join(entry.file_name());
        let meta = fs::symlink_metadata(&from).map_err(|e| Error::io("stat", &from, e))?;
        let ft = meta.file_type();
        if !ft.is_dir() && meta.nlink() > 1 {
            if let Some(first) = links.get(&(meta.dev(), meta.ino())) {
                fs::hard_link(first, &to).map_err(|e| Error::io("link", &to, e))?;
                continue;
            }
            links.insert((meta.dev(), meta.ino()), to.clone());
        }
        if ft.is_dir() {
            fs::create_dir(&to).map_err(|e| Error::io("create", &to, e))?;
            copy_dir_contents(&from, &to, links)?;
        } else if ft.is_symlink() {
            let target = fs::read_link(&from).map_err(|e| Error::io("readlink", &from, e))?;
            std::os::unix::fs::symlink(&target, &to).map_err(|e| Error::io("symlink", &to, e))?;
        } else if ft.is_file() {
            fs::copy(&from, &to).map_err(|e| Error::io("copy", &to, e))?;
        } else {
            let kind = if ft.is_block_device() {
                SFlag::S_IFBLK
            } else if ft.is_char_device() {
                SFlag::S_IFCHR
            } else if ft.is_fifo() {
                SFlag::S_IFIFO
            } else {
                SFlag::S_IFSOCK
            };
            nix::sys::stat::mknod(
                &to,
                kind,
                Mode::from_bits_truncate(meta.mode()),
                meta.rdev(),
            )
            .map_err(|e| Error::io("mknod", &to, e.into()))?;
        }
        copy_attributes(&from, &to, &meta)?;
    }
    Ok(())
}

/// Ownership, extended attributes, mode (after chown, which clears set-id bits) and times.
fn copy_attributes(from: &Path, to: &Path, meta: &fs::Metadata) -> Result<()> {
    std::os::unix::fs::lchown(to, Some(meta.uid()), Some(meta.gid()))
        .map_err(|e| Error::io("chown", to, e))?;
    copy_xattrs(from, to)?;
    if !meta.file_type().is_symlink() {
        fs::set_permissions(to, fs::Permissions::from_mode(meta.mode() & 0o7777))
            .map_err(|e| Error::io("chmod", to, e))?;
    }
    let atime = TimeSpec::new(meta.atime(), meta.atime_nsec());
    let mtime = TimeSpec::new(meta.mtime(), meta.mtime_nsec());
    utimensat(None, to, &atime, &mtime, UtimensatFlags::NoFollowSymlink)
        .map_err(|e| Error::io("set times of", to, e.into()))
}

fn copy_xattrs(from: &Path, to: &Path) -> Result<()> {
    // `xattr::list`/`get`/`set` act on the link itself, never its target.
    let names = match xattr::list(from) {
        Ok(n) => n,
        // Filesystems without xattr support have nothing to copy.
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(()),
        Err(e) => return Err(Error::io("list xattrs of", from, e)),
    };
    for name in names {
        let name: &OsStr = &name;
        let Some(value) = xattr::get(from, name).map_err(|e| Error::io("get xattr of", from, e))?
        else {
            continue;
        };
        if let Err(e) = xattr::set(to, name, &value) {
            // Overlay's own `trusted.overlay.*` attributes cannot be set on another
            // filesystem; anything else failing is an error.
            if name.to_string_lossy().starts_with("trusted.overlay.") {
                continue;
            }
            return Err(Error::io("set xattr of", to, e));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn resolution_stays_in_root() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        fs::create_dir_all(r.join("real/dir")).unwrap();
        symlink("/etc", r.join("abs")).unwrap();
        symlink("../../../../real", r.join("rel")).unwrap();
        symlink("loop", r.join("loop")).unwrap();
        assert_eq!(
            resolve_in_root(r, Path::new("/abs")).unwrap(),
            r.join("etc")
        );
        assert_eq!(
            resolve_in_root(r, Path::new("/rel/dir")).unwrap(),
            r.join("real/dir")
        );
        assert_eq!(
            resolve_in_root(r, Path::new("/../../x")).unwrap(),
            r.join("x")
        );
        assert!(resolve_in_root(r, Path::new("/loop")).is_err());
    }

    #[test]
    fn copy_preserves_metadata_and_links() {
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        let s = src.path();
        fs::create_dir(s.join("sub")).unwrap();
        fs::write(s.join("sub/file"), b"hello").unwrap();
        // chown clears set-id bits, so ownership first.
        std::os::unix::fs::lchown(s.join("sub/file"), Some(1234), Some(5678)).unwrap();
        fs::set_permissions(s.join("sub/file"), fs::Permissions::from_mode(0o4751)).unwrap();
        fs::hard_link(s.join("sub/file"), s.join("hard")).unwrap();
        symlink("/etc/passwd", s.join("link")).unwrap();
        xattr::set(s.join("sub/file"), "user.berth", b"v").ok();
        fs::set_permissions(s, fs::Permissions::from_mode(0o1777)).unwrap();

        copy_up(s, dst.path()).unwrap();
        let d = dst.path();
        assert_eq!(fs::read(d.join("sub/file")).unwrap(), b"hello");
        let m = fs::metadata(d.join("sub/file")).unwrap();
        assert_eq!(m.mode() & 0o7777, 0o4751);
        assert_eq!((m.uid(), m.gid()), (1234, 5678));
        assert_eq!(m.ino(), fs::metadata(d.join("hard")).unwrap().ino());
        assert_eq!(
            fs::read_link(d.join("link")).unwrap(),
            PathBuf::from("/etc/passwd")
        );
        if xattr::get(s.join("sub/file"), "user.berth")
            .ok()
            .flatten()
            .is_some()
        {
            assert_eq!(
                xattr::get(d.join("sub/file"), "user.berth").unwrap(),
                Some(b"v".to_vec())
            );
        }
        assert_eq!(fs::metadata(d).unwrap().mode() & 0o7777, 0o1777);
        // A volume with content is never overwritten.
        fs::write(s.join("new"), b"x").unwrap();
        copy_up(s, d).unwrap();
        assert!(!d.join("new").exists());
    }
}
