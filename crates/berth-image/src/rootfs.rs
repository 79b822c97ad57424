//! Container root filesystems: an overlayfs mount of the image's snapshots (lowest layer last
//! in the lower list) with a per-container upper and work dir, or, where overlayfs is not
//! available, a plain copy of the layers with whiteouts applied by deleting.
//!
//! Between the image and the container's writable layer sits a per-container init layer
//! (`containers/<id>/init`), as in Docker: it holds the mountpoints the runtime and the daemon
//! mount over (`/proc`, `/sys`, `/dev/pts`, `/etc/hosts`, …), so creating them never writes to
//! the writable layer and they are neither reported by `docker diff` nor committed.
//!
//! Lower layers are passed one by one with the new mount API (`lowerdir+`), which has no
//! page-size limit; if that API is missing the classic `lowerdir=a:b:…` option string is used
//! while it fits in a page.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::{json_err, Error, IoContext, Result};
use crate::store::{now_rfc3339, Driver, Store};
use crate::sys;
use crate::unpack::OVERLAY_OPAQUE_XATTR;

/// The per-container record (`containers/<id>/meta.json`); it is also what marks the image as
/// in use.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerMeta {
    pub image_id: Digest,
    /// Chain IDs of the image's layers, bottom first.
    pub chain_ids: Vec<Digest>,
    pub driver: Driver,
    pub created: String,
}

/// A container's root filesystem.
#[derive(Debug, Clone)]
pub struct Rootfs {
    store: Store,
    /// The container ID.
    pub id: String,
    /// Where the root filesystem is (mounted for overlay).
    pub path: PathBuf,
    pub driver: Driver,
}

impl Rootfs {
    /// Unmount (overlay) — the upper dir is kept.
    pub fn unmount(&self) -> Result<()> {
        self.store.unmount_rootfs(&self.id)
    }

    /// Unmount and delete the container's upper dir and record.
    pub fn remove(self) -> Result<()> {
        self.store.remove_rootfs(&self.id)
    }
}

fn valid_container_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
        && !id.starts_with('.')
}

/// Deletes a removed container's tree (under `tmp/`), detaching its rootfs mount first:
/// `remove_dir_all` would otherwise walk into the mounted overlay. Nothing is deleted when the
/// mount cannot be detached.
pub(crate) fn delete_removed_tree(tree: &Path) -> io::Result<()> {
    let merged = tree.join("merged");
    if is_mountpoint(&merged) {
        match nix::mount::umount2(&merged, nix::mount::MntFlags::MNT_DETACH) {
            // Detached meanwhile by gc or another reaper.
            Ok(()) | Err(nix::errno::Errno::EINVAL) => {}
            Err(e) => return Err(e.into()),
        }
    }
    fs::remove_dir_all(tree)
}

pub(crate) fn is_mountpoint(path: &Path) -> bool {
    let (Ok(a), Ok(b)) = (
        fs::metadata(path),
        path.parent()
            .map(fs::metadata)
            .unwrap_or_else(|| Err(io::ErrorKind::NotFound.into())),
    ) else {
        return false;
    };
    a.dev() != b.dev()
}

impl Store {
    fn container_dir(&self, id: &str) -> Result<PathBuf> {
        if !valid_container_id(id) {
            return Err(Error::ContainerNotFound(id.to_string()));
        }
        Ok(self.containers_dir().join(id))
    }

    pub(crate) fn container_meta(&self, id: &str) -> Result<ContainerMeta> {
        let p = self.container_dir(id)?.join("meta.json");
        match fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b).map_err(json_err(p.display().to_string())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(Error::ContainerNotFound(id.to_string()))
            }
            Err(e) => Err(e).ctx("read", p),
        }
    }

    /// Create and mount the root filesystem of container `container_id` from `image`
    /// (reference, ID or ID prefix). The image is in use until [`Store::remove_rootfs`].
    pub fn create_rootfs(&self, image: &str, container_id: &str) -> Result<Rootfs> {
        self.create_container_layers(image, container_id, true, true)
    }

    /// As [`Store::create_rootfs`], leaving the rootfs unmounted when that costs nothing:
    /// `docker create` makes the layers and `start` mounts them ([`Store::mount_rootfs`]).
    /// Until an overlay mount has worked in this process the layers are mounted (and
    /// unmounted) once anyway, since that mount is what chooses between overlayfs and copies.
    pub fn prepare_rootfs(&self, image: &str, container_id: &str) -> Result<()> {
        self.prepare_rootfs_with(image, container_id, true)
    }

    /// As [`Store::prepare_rootfs`]; unless `durable`, the container's record (`meta.json`)
    /// is not flushed to disk: for a container that is removed when it ends (`--rm`), whose
    /// whole existence a power loss may undo. A record a power loss left missing, empty or
    /// zero-filled marks a leftover: [`Store::container_layer_ids`] lists it, gc removes it.
    pub fn prepare_rootfs_with(
        &self,
        image: &str,
        container_id: &str,
        durable: bool,
    ) -> Result<()> {
        let probed = self.inner.options.driver.is_some()
            || self
                .inner
                .overlay_works
                .load(std::sync::atomic::Ordering::Relaxed);
        let rootfs = self.create_container_layers(image, container_id, !probed, durable)?;
        if !probed {
            rootfs.unmount()?;
        }
        Ok(())
    }

    fn create_container_layers(
        &self,
        image: &str,
        container_id: &str,
        mount: bool,
        durable: bool,
    ) -> Result<Rootfs> {
        let _l = self.lock_shared()?;
        let img = self.get(image)?;
        let dir = self.container_dir(container_id)?;
        let chains = img.chain_ids();
        self.ensure_snapshots(&img.manifest, &img.config.rootfs.diff_ids, &chains, None)?;
        match fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(Error::ContainerExists(container_id.to_string()))
            }
            Err(e) => return Err(e).ctx("create directory", dir),
        }
        let result = (|| {
            for d in ["upper", "work", "merged", "lower"] {
                fs::create_dir(dir.join(d)).ctx("create directory", dir.join(d))?;
            }
            let image_layers: Vec<PathBuf> = chains
                .iter()
                .rev()
                .map(|c| self.snapshot_dir(c).join("fs"))
                .collect();
            setup_init_layer(&dir.join(INIT_DIR), &image_layers)?;
            fs::set_permissions(dir.join("merged"), fs::Permissions::from_mode(0o755))
                .ctx("chmod", dir.join("merged"))?;
            let mut driver = self.inner.options.driver.unwrap_or(Driver::Overlay);
            if driver == Driver::Overlay && mount {
                match self.mount_overlay(&dir, &chains) {
                    Ok(()) => self
                        .inner
                        .overlay_works
                        .store(true, std::sync::atomic::Ordering::Relaxed),
                    Err(e) if self.inner.options.driver.is_none() && overlay_unsupported(&e) => {
                        tracing::warn!(error = %e, "overlayfs unavailable, copying layers instead");
                        driver = Driver::Copy;
                    }
                    Err(e) => return Err(e),
                }
            }
            if driver == Driver::Copy {
                for chain in &chains {
                    apply_layer_copy(&self.snapshot_dir(chain).join("fs"), &dir.join("merged"))?;
                }
                apply_layer_copy(&dir.join(INIT_DIR), &dir.join("merged"))?;
            }
            let meta = ContainerMeta {
                image_id: img.id.clone(),
                chain_ids: chains.clone(),
                driver,
                created: now_rfc3339(),
            };
            let bytes = serde_json::to_vec_pretty(&meta).map_err(json_err("container meta"))?;
            if durable {
                crate::content::atomic_write(&dir.join("meta.json"), &bytes)?;
            } else {
                crate::content::replace_unsynced(&dir.join("meta.json"), &bytes)?;
            }
            Ok(driver)
        })();
        match result {
            Ok(driver) => Ok(Rootfs {
                store: self.clone(),
                id: container_id.to_string(),
                path: dir.join("merged"),
                driver,
            }),
            Err(e) => {
                let _ = nix::mount::umount2(&dir.join("merged"), nix::mount::MntFlags::MNT_DETACH);
                let _ = fs::remove_dir_all(&dir);
                Err(e)
            }
        }
    }

    /// The read-only layers of a container, topmost first: its init layer (absent for
    /// containers created before it existed), then the image's snapshots.
    pub(crate) fn container_lowers(&self, dir: &Path, chains: &[Digest]) -> Vec<PathBuf> {
        let init = dir.join(INIT_DIR);
        init.is_dir()
            .then_some(init)
            .into_iter()
            .chain(chains.iter().rev().map(|c| self.snapshot_dir(c).join("fs")))
            .collect()
    }

    fn mount_overlay(&self, dir: &Path, chains: &[Digest]) -> Result<()> {
        let mut lowers = self.container_lowers(dir, chains);
        if lowers.is_empty() {
            // overlayfs needs at least one lower layer.
            lowers.push(dir.join("lower"));
        }
        let refs: Vec<&Path> = lowers.iter().map(PathBuf::as_path).collect();
        let (upper, work, merged) = (dir.join("upper"), dir.join("work"), dir.join("merged"));
        match sys::mount_overlay_fsconfig(&refs, &upper, &work, &merged) {
            Ok(()) => Ok(()),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS) | Some(libc::EINVAL)) => {
                // Old kernel without the new mount API or without `lowerdir+`.
                tracing::debug!(error = %e, "fsconfig overlay mount failed, trying mount(2)");
                let lowerdir: Vec<String> =
                    lowers.iter().map(|p| p.display().to_string()).collect();
                let data = format!(
                    "lowerdir={},upperdir={},workdir={}",
                    lowerdir.join(":"),
                    upper.display(),
                    work.display()
                );
                if data.len() >= 4096 {
                    return Err(Error::Mount {
                        target: merged,
                        source: io::Error::new(
                            io::ErrorKind::InvalidInput,
                            "too many layers for the mount option page",
                        ),
                    });
                }
                nix::mount::mount(
                    Some("overlay"),
                    &merged,
                    Some("overlay"),
                    nix::mount::MsFlags::empty(),
                    Some(data.as_str()),
                )
                .map_err(|e| Error::Mount {
                    target: merged.clone(),
                    source: e.into(),
                })
            }
            Err(e) => Err(Error::Mount {
                target: merged,
                source: e,
            }),
        }
    }

    /// Mount an existing container's rootfs again (e.g. after a daemon restart). Idempotent.
    pub fn mount_rootfs(&self, container_id: &str) -> Result<Rootfs> {
        let meta = self.container_meta(container_id)?;
        let dir = self.container_dir(container_id)?;
        let merged = dir.join("merged");
        if meta.driver == Driver::Overlay && !is_mountpoint(&merged) {
            self.mount_overlay(&dir, &meta.chain_ids)?;
        }
        Ok(Rootfs {
            store: self.clone(),
            id: container_id.to_string(),
            path: merged,
            driver: meta.driver,
        })
    }

    /// Unmount a container's rootfs (no-op when not mounted or for the copy driver).
    pub fn unmount_rootfs(&self, container_id: &str) -> Result<()> {
        let merged = self.container_dir(container_id)?.join("merged");
        if is_mountpoint(&merged) {
            nix::mount::umount2(&merged, nix::mount::MntFlags::MNT_DETACH).map_err(|e| {
                Error::Mount {
                    target: merged.clone(),
                    source: e.into(),
                }
            })?;
        }
        Ok(())
    }

    /// Unmount and delete a container's rootfs; the image is no longer in use by it.
    ///
    /// The container is gone from the store when this returns; its rootfs is unmounted and its
    /// files deleted by a background thread, after the tree (mount included) was moved into
    /// `tmp/` (which gc empties the same way, should the process end first): deleting a few
    /// dozen entries and the unmount's RCU grace period took ~2 ms off every `run --rm`, and
    /// a big writable layer much more.
    pub fn remove_rootfs(&self, container_id: &str) -> Result<()> {
        let _l = self.lock_shared()?;
        let dir = self.container_dir(container_id)?;
        if !dir.exists() {
            return Err(Error::ContainerNotFound(container_id.to_string()));
        }
        // Drop the record first: a crash half-way leaves a directory gc removes, never a record
        // pointing at half a directory.
        let _ = fs::remove_file(dir.join("meta.json"));
        let doomed = self.tmp().join(format!("removed-{container_id}"));
        match fs::rename(&dir, &doomed) {
            Ok(()) => {
                self.remove_tree_later(doomed);
                Ok(())
            }
            Err(_) => {
                self.unmount_rootfs(container_id)?;
                fs::remove_dir_all(&dir).ctx("remove", dir)
            }
        }
    }

    /// Deletes `tree` on the store's reaper thread (started on first use).
    fn remove_tree_later(&self, tree: PathBuf) {
        let sender = self.inner.reaper.get_or_init(|| {
            let (tx, rx) = std::sync::mpsc::channel::<PathBuf>();
            let spawned = std::thread::Builder::new()
                .name("berth-reaper".into())
                .spawn(move || {
                    for tree in rx {
                        if let Err(e) = delete_removed_tree(&tree) {
                            if e.kind() != io::ErrorKind::NotFound {
                                tracing::warn!(path = %tree.display(), error = %e, "cannot remove");
                            }
                        }
                    }
                });
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "cannot start the reaper thread; removing inline");
            }
            std::sync::Mutex::new(tx)
        });
        let sent = sender
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .send(tree);
        // No reaper thread: delete here.
        if let Err(std::sync::mpsc::SendError(tree)) = sent {
            let _ = delete_removed_tree(&tree);
        }
    }

    /// IDs of every container directory in this store, whether or not its record is
    /// readable (one cut short by a crash or a power loss is listed too), for a caller that
    /// knows which containers exist and removes the others with [`Store::remove_rootfs`].
    pub fn container_layer_ids(&self) -> Result<Vec<String>> {
        let dir = self.containers_dir();
        let mut ids = Vec::new();
        for e in fs::read_dir(&dir).ctx("list", &dir)? {
            let e = e.ctx("list", &dir)?;
            if let Some(id) = e.file_name().to_str() {
                if valid_container_id(id) && e.path().is_dir() {
                    ids.push(id.to_string());
                }
            }
        }
        Ok(ids)
    }

    /// IDs of containers with a rootfs in this store, with the image each uses.
    pub fn containers(&self) -> Result<Vec<(String, Digest)>> {
        Ok(self
            .container_images()?
            .into_iter()
            .map(|(k, m)| (k, m.image_id))
            .collect())
    }
}

/// The per-container init layer's directory name under `containers/<id>/`.
pub(crate) const INIT_DIR: &str = "init";

enum InitEntry {
    Dir,
    File,
    Symlink(&'static str),
}

/// What the init layer provides (Docker's list): mountpoints for the runtime's `/proc`, `/sys`,
/// `/dev/pts`, `/dev/shm` and console, the daemon's bind-mounted `/etc` files, the
/// `/.dockerenv` marker, and `/etc/mtab` pointing at the kernel's mount table.
const INIT_ENTRIES: &[(&str, InitEntry)] = &[
    ("dev/pts", InitEntry::Dir),
    ("dev/shm", InitEntry::Dir),
    ("proc", InitEntry::Dir),
    ("sys", InitEntry::Dir),
    (".dockerenv", InitEntry::File),
    ("etc/resolv.conf", InitEntry::File),
    ("etc/hosts", InitEntry::File),
    ("etc/hostname", InitEntry::File),
    ("dev/console", InitEntry::File),
    ("etc/mtab", InitEntry::Symlink("/proc/mounts")),
];

/// What the image shows at `rel` through its overlay-form layers (`layers` topmost first):
/// whiteouts hide, a non-directory stops the merge below it, opaque directories end it.
fn image_entry(layers: &[PathBuf], rel: &Path) -> Option<fs::Metadata> {
    if rel.as_os_str().is_empty() {
        return layers.first().and_then(|l| fs::symlink_metadata(l).ok());
    }
    let mut visible: Vec<&PathBuf> = layers.iter().collect();
    let mut cur = PathBuf::new();
    let mut found = None;
    for comp in rel.components() {
        cur.push(comp);
        found = None;
        let mut below = Vec::new();
        for l in visible {
            let p = l.join(&cur);
            let Ok(m) = fs::symlink_metadata(&p) else {
                continue;
            };
            if is_whiteout(&m) {
                break;
            }
            let is_dir = m.is_dir();
            match &found {
                None => found = Some(m),
                // Only directories merge with what is below them.
                Some(top) if top.is_dir() && is_dir => {}
                Some(_) => break,
            }
            if !is_dir {
                break;
            }
            below.push(l);
            if sys::lgetxattr(&p, OVERLAY_OPAQUE_XATTR)
                .ok()
                .flatten()
                .is_some_and(|v| v == b"y")
            {
                break;
            }
        }
        visible = below;
        found.as_ref()?;
    }
    found
}

/// Create `path` in the init layer as a directory with `like`'s owner and mode (its times are
/// copied once the layer is complete), so the merged view of a directory the image has is
/// unchanged (overlayfs shows the topmost layer's attributes); a directory the image lacks
/// is `0755` root-owned.
fn init_dir(path: &Path, like: Option<&fs::Metadata>) -> Result<()> {
    fs::create_dir(path).ctx("create directory", path)?;
    match like {
        Some(m) => {
            std::os::unix::fs::lchown(path, Some(m.uid()), Some(m.gid())).ctx("chown", path)?;
            fs::set_permissions(path, fs::Permissions::from_mode(m.mode() & 0o7777))
                .ctx("chmod", path)
        }
        None => {
            std::os::unix::fs::lchown(path, Some(0), Some(0)).ctx("chown", path)?;
            fs::set_permissions(path, fs::Permissions::from_mode(0o755)).ctx("chmod", path)
        }
    }
}

/// Build a container's init layer in `init` over the image `layers` (topmost first), as
/// Docker's does: a file or symlink in the image at a stub's path is replaced (the stub is
/// mounted over anyway), an existing directory is kept, missing parents are created.
pub(crate) fn setup_init_layer(init: &Path, layers: &[PathBuf]) -> Result<()> {
    // Directories standing for the image's, whose times are set after their children exist.
    let mut copied: Vec<(PathBuf, fs::Metadata)> = Vec::new();
    let root = image_entry(layers, Path::new(""));
    init_dir(init, root.as_ref())?;
    copied.extend(root.map(|m| (init.to_path_buf(), m)));
    for (path, kind) in INIT_ENTRIES {
        let rel = Path::new(path);
        let in_image = image_entry(layers, rel);
        if in_image.as_ref().is_some_and(|m| m.is_dir()) {
            continue;
        }
        let mut cur = PathBuf::new();
        for comp in rel.parent().into_iter().flat_map(Path::components) {
            cur.push(comp);
            if fs::symlink_metadata(init.join(&cur)).is_ok() {
                continue;
            }
            // A non-directory parent in the image is replaced by a directory, as Docker's
            // unlink-then-mkdir does.
            let like = image_entry(layers, &cur).filter(|m| m.is_dir());
            init_dir(&init.join(&cur), like.as_ref())?;
            copied.extend(like.map(|m| (init.join(&cur), m)));
        }
        let target = init.join(rel);
        match kind {
            InitEntry::Dir => init_dir(&target, None)?,
            InitEntry::File => {
                fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o755)
                    .open(&target)
                    .ctx("create", &target)?;
                fs::set_permissions(&target, fs::Permissions::from_mode(0o755))
                    .ctx("chmod", &target)?;
            }
            InitEntry::Symlink(to) => {
                std::os::unix::fs::symlink(to, &target).ctx("create symlink", &target)?
            }
        }
    }
    for (path, m) in copied {
        set_times_ns(&path, m.mtime(), m.mtime_nsec())?;
    }
    Ok(())
}

fn overlay_unsupported(e: &Error) -> bool {
    match e {
        Error::Mount { source, .. } => {
            matches!(
                source.raw_os_error(),
                Some(libc::ENODEV)
                    | Some(libc::EINVAL)
                    | Some(libc::EOPNOTSUPP)
                    | Some(libc::ENOSYS)
            )
        }
        _ => false,
    }
}

fn is_whiteout(m: &fs::Metadata) -> bool {
    use std::os::unix::fs::FileTypeExt;
    m.file_type().is_char_device() && m.rdev() == 0
}

fn remove_any(p: &Path) -> Result<()> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(p).ctx("remove", p),
        Ok(_) => fs::remove_file(p).ctx("remove", p),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).ctx("stat", p),
    }
}

/// Copy one overlay-form snapshot on top of `dest`, applying its whiteouts by deleting.
/// Parents are always made real directories before their children are written, so a symlink
/// from a lower layer is never followed.
pub(crate) fn apply_layer_copy(src: &Path, dest: &Path) -> Result<()> {
    let mut links: HashMap<(u64, u64), PathBuf> = HashMap::new();
    copy_dir_contents(src, dest, &mut links)?;
    copy_meta(src, dest, &fs::symlink_metadata(src).ctx("stat", src)?)
}

fn copy_dir_contents(
    src: &Path,
    dest: &Path,
    links: &mut HashMap<(u64, u64), PathBuf>,
) -> Result<()> {
    let mut entries: Vec<_> = fs::read_dir(src)
        .ctx("list", src)?
        .collect::<io::Result<_>>()
        .ctx("list", src)?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let s = e.path();
        let d = dest.join(e.file_name());
        let m = fs::symlink_metadata(&s).ctx("stat", &s)?;
        let ft = m.file_type();
        if is_whiteout(&m) {
            remove_any(&d)?;
            continue;
        }
        if ft.is_dir() {
            let existing = fs::symlink_metadata(&d).ok();
            let opaque = sys::lgetxattr(&s, OVERLAY_OPAQUE_XATTR)
                .ctx("read xattr", &s)?
                .is_some_and(|v| v == b"y");
            if existing.as_ref().is_some_and(|x| !x.is_dir()) || (opaque && existing.is_some()) {
                remove_any(&d)?;
            }
            if fs::symlink_metadata(&d).is_err() {
                fs::create_dir(&d).ctx("create directory", &d)?;
            }
            copy_dir_contents(&s, &d, links)?;
            copy_meta(&s, &d, &m)?;
            continue;
        }
        remove_any(&d)?;
        if ft.is_file() && m.nlink() > 1 {
            if let Some(first) = links.get(&(m.dev(), m.ino())) {
                fs::hard_link(first, &d).ctx("hard link", &d)?;
                continue;
            }
            links.insert((m.dev(), m.ino()), d.clone());
        }
        if ft.is_symlink() {
            let t = fs::read_link(&s).ctx("read link", &s)?;
            std::os::unix::fs::symlink(&t, &d).ctx("create symlink", &d)?;
        } else if ft.is_file() {
            fs::copy(&s, &d).ctx("copy", &d)?;
        } else {
            let c = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(d.as_os_str()))
                .map_err(|_| Error::InvalidLayer(format!("path with NUL: {}", d.display())))?;
            // SAFETY: valid C string; mode and rdev come from lstat of the source node.
            let r = unsafe {
                libc::mknod(
                    c.as_ptr(),
                    m.mode() as libc::mode_t,
                    m.rdev() as libc::dev_t,
                )
            };
            if r < 0 {
                return Err(io::Error::last_os_error()).ctx("create node", &d);
            }
        }
        copy_meta(&s, &d, &m)?;
    }
    Ok(())
}

fn copy_meta(src: &Path, dest: &Path, m: &fs::Metadata) -> Result<()> {
    std::os::unix::fs::lchown(dest, Some(m.uid()), Some(m.gid())).ctx("chown", dest)?;
    if !m.file_type().is_symlink() {
        fs::set_permissions(dest, fs::Permissions::from_mode(m.mode() & 0o7777))
            .ctx("chmod", dest)?;
    }
    for name in sys::llistxattr(src).ctx("list xattrs", src)? {
        if name.starts_with("trusted.") {
            continue;
        }
        if let Some(v) = sys::lgetxattr(src, &name).ctx("read xattr", src)? {
            sys::lsetxattr(dest, &name, &v).ctx("set xattr", dest)?;
        }
    }
    let t = filetime_of(m);
    set_times(dest, t)
}

fn filetime_of(m: &fs::Metadata) -> i64 {
    m.mtime()
}

fn set_times(p: &Path, secs: i64) -> Result<()> {
    set_times_ns(p, secs, 0)
}

fn set_times_ns(p: &Path, secs: i64, nsecs: i64) -> Result<()> {
    let c = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(p.as_os_str()))
        .map_err(|_| Error::InvalidLayer(format!("path with NUL: {}", p.display())))?;
    let ts = libc::timespec {
        tv_sec: secs as libc::time_t,
        tv_nsec: nsecs as libc::c_long,
    };
    let times = [ts, ts];
    // SAFETY: valid C string and a two-element timespec array.
    let r = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error()).ctx("set times", p);
    }
    Ok(())
}
