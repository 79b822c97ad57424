//! `docker cp` on the daemon side: which filesystem a container's paths live in, and the
//! policy around [`berth_image::ContainerFs`] (read-only checks, `copyUIDGID` owners, errors
//! in dockerd's words).
//!
//! A running container's filesystem is its init's root, `/proc/<pid>/root`: the volumes, bind
//! mounts and tmpfs mounts inside it are those the container sees. A stopped or created
//! container has no mount namespace, so, as dockerd, Berth builds a view of it: on a thread of
//! its own that enters a private mount namespace, the rootfs is mounted (by the image store,
//! as for `export`), the container's volumes and binds are bind-mounted onto it and its tmpfs
//! paths get a private tmpfs. The namespace, and every mount in it, dies with the thread.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_image::ContainerFs;
use berth_runtime::spec::{MountKind, MountSpec};
use nix::mount::MsFlags;
use tokio::sync::oneshot;

use crate::daemon::Daemon;
use crate::error::{Error, Result};
use crate::store::ContainerRecord;

/// Largest `/etc/passwd` or `/etc/group` read to find the container user's IDs.
const MAX_ID_FILE: u64 = 4 << 20;

impl Daemon {
    /// Runs `f` against container `r`'s filesystem on a thread of its own and returns at once;
    /// `f` reports back through whatever channel it captured. A failure to build the view is
    /// handed to `f` as its argument's `Err`.
    pub(crate) fn spawn_in_container_fs<F>(self: &Arc<Self>, r: ContainerRecord, f: F)
    where
        F: FnOnce(Result<&ContainerFs>) + Send + 'static,
    {
        let d = Arc::clone(self);
        let handle = tokio::runtime::Handle::current();
        let spawned = std::thread::Builder::new()
            .name("berth-cp".into())
            .spawn(move || match d.container_view(&r, handle) {
                Ok(view) => f(Ok(&view.fs)),
                Err(err) => f(Err(err)),
            });
        if let Err(err) = spawned {
            tracing::error!(%err, "cannot spawn a container filesystem thread");
        }
    }

    /// As [`Daemon::spawn_in_container_fs`], awaiting `f`'s result.
    pub(crate) async fn with_container_fs<T, F>(
        self: &Arc<Self>,
        r: ContainerRecord,
        f: F,
    ) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&ContainerFs) -> Result<T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        self.spawn_in_container_fs(r, move |fs| {
            let _ = tx.send(fs.and_then(f));
        });
        rx.await
            .map_err(|_| Error::Internal("container filesystem thread ended early".into()))?
    }

    /// The filesystem view of `r` for the calling thread (which, for a stopped container,
    /// enters a private mount namespace: call it only on a thread of its own).
    fn container_view(
        self: &Arc<Self>,
        r: &ContainerRecord,
        handle: tokio::runtime::Handle,
    ) -> Result<View> {
        let mut state = r.state.clone();
        // A few tries: the container may exit or restart (a new pid) while we open its root.
        for _ in 0..3 {
            if !(state.running && state.pid > 0) {
                break;
            }
            let root = PathBuf::from(format!("/proc/{}/root", state.pid));
            let fs = ContainerFs::open(&root);
            // The pid could have been reused between reading the record and opening its root.
            let now = self.containers.get(&r.id)?.state;
            if now.running && now.pid == state.pid {
                return Ok(View {
                    fs: fs?,
                    _hold: None,
                });
            }
            state = now;
        }
        // Held before mounting: a run that ends meanwhile leaves the mounts to the hold.
        let hold = self.hold_rootfs(&r.id, handle);
        let rootfs = self.mount_held_rootfs(&r.id)?;
        // Volumes are mounted (when their driver mounts at all) in the host's namespace,
        // before this thread leaves it, and released from the host's namespace too.
        let mounts = self.container_mounts(r, &rootfs.path)?;
        if !mounts.is_empty() {
            private_mount_namespace()?;
            mount_all(&rootfs.path, &mounts)?;
        }
        // Opened after the mounts: an fd opened before would not see them.
        let fs = ContainerFs::open(&rootfs.path)?;
        Ok(View {
            fs,
            _hold: Some(hold),
        })
    }

    /// `PUT` is refused where the container could not write either: a read-only volume, or
    /// a read-only rootfs outside any volume (dockerd's `checkWritablePath`).
    pub(crate) fn check_writable(&self, r: &ContainerRecord, resolved: &str) -> Result<()> {
        let inside = |dest: &str| Path::new(resolved).strip_prefix(Path::new(dest)).is_ok();
        let mut points = self.volumes.mount_points(&r.id);
        // The deepest mount covering the path decides.
        points.sort_by_key(|p| std::cmp::Reverse(Path::new(&p.destination).components().count()));
        if let Some(p) = points.iter().find(|p| inside(&p.destination)) {
            return if p.rw {
                Ok(())
            } else {
                Err(Error::InvalidParameter(
                    "mounted volume is marked read-only".into(),
                ))
            };
        }
        if r.host_config.readonly_rootfs == Some(true) {
            return Err(Error::InvalidParameter(
                "container rootfs is marked read-only".into(),
            ));
        }
        Ok(())
    }
}

/// A container filesystem view; dropping it releases the volumes mounted for it.
struct View {
    fs: ContainerFs,
    /// For a stopped container: keeps its rootfs and volumes mounted while the view is used.
    _hold: Option<crate::rootfs_users::RootfsHold>,
}

/// Moves the calling thread into a mount namespace of its own whose mounts do not propagate
/// back to the host's.
fn private_mount_namespace() -> Result<()> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
        .map_err(|e| Error::io("enter a private mount namespace", e.into()))?;
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None::<&str>,
    )
    .map_err(|e| Error::io("make the private mount namespace a slave", e.into()))
}

/// Mounts `mounts` (parents first) onto the rootfs at `root`, each target resolved inside it.
fn mount_all(root: &Path, mounts: &[MountSpec]) -> Result<()> {
    let fs = ContainerFs::open(root)?;
    for m in mounts {
        let target = m.target.to_string_lossy();
        let is_dir = m.kind != MountKind::Bind || m.source.is_dir();
        let fd = fs.mount_target(&target, is_dir)?;
        // The fd's magic link names exactly the inode resolved inside the root.
        let at = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
        let ctx = |what: &str| format!("{what} {} on {target}", m.source.display());
        match m.kind {
            MountKind::Bind => {
                nix::mount::mount(
                    Some(&m.source),
                    &at,
                    None::<&str>,
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None::<&str>,
                )
                .map_err(|e| Error::io(ctx("bind-mount"), e.into()))?;
                if m.read_only {
                    nix::mount::mount(
                        None::<&str>,
                        &at,
                        None::<&str>,
                        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                        None::<&str>,
                    )
                    .map_err(|e| Error::io(ctx("remount read-only"), e.into()))?;
                }
            }
            MountKind::Tmpfs => {
                // Each view gets a private, empty tmpfs, as in dockerd.
                nix::mount::mount(
                    Some("tmpfs"),
                    &at,
                    Some("tmpfs"),
                    MsFlags::empty(),
                    None::<&str>,
                )
                .map_err(|e| Error::io(ctx("mount tmpfs"), e.into()))?;
            }
        }
    }
    Ok(())
}

/// The uid and gid `copyUIDGID` gives extracted files: the container's `User`, looked up in
/// its own `/etc/passwd` and `/etc/group` when given by name.
pub(crate) fn container_user_ids(fs: &ContainerFs, user: &str) -> Result<(u32, u32)> {
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let read = |path: &str| {
        fs.read_file(path, MAX_ID_FILE)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    };
    let passwd = read("/etc/passwd");
    // An empty user or group is root's, as in `docker run --user ":33"`.
    let (uid, primary_gid) = if u.is_empty() {
        (0, 0)
    } else if let Ok(n) = u.parse::<u32>() {
        let gid = passwd
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.len() > 3 && f[2] == u)
            .and_then(|f| f[3].parse().ok())
            .unwrap_or(0);
        (n, gid)
    } else {
        passwd
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.len() > 3 && f[0] == u)
            .and_then(|f| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
            .ok_or_else(|| {
                Error::InvalidParameter(format!(
                    "unable to find user {u}: no matching entries in passwd file"
                ))
            })?
    };
    let gid = match g {
        None | Some("") => primary_gid,
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => read("/etc/group")
                .lines()
                .map(|l| l.split(':').collect::<Vec<_>>())
                .find(|f| f.len() > 2 && f[0] == g)
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(|| {
                    Error::InvalidParameter(format!(
                        "unable to find group {g}: no matching entries in group file"
                    ))
                })?,
        },
    };
    Ok((uid, gid))
}

/// A blocking `Read` over byte chunks sent from async code (a request or response body being
/// streamed into a blocking tar extraction); end of stream when the sender is dropped.
pub struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<bytes::Bytes>,
    cur: bytes::Bytes,
}

impl ChannelReader {
    /// Reads what arrives on `rx`.
    pub fn new(rx: tokio::sync::mpsc::Receiver<bytes::Bytes>) -> Self {
        Self {
            rx,
            cur: bytes::Bytes::new(),
        }
    }
}

impl std::io::Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use bytes::Buf;
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(b) => self.cur = b,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        self.cur.advance(n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_users_resolve_in_the_container() {
        let root = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(root.path().join("etc")).expect("mkdir");
        std::fs::write(
            root.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n",
        )
        .expect("write");
        std::fs::write(root.path().join("etc/group"), "root:x:0:\ngrp:x:2000:\n").expect("write");
        let fs = ContainerFs::open(root.path()).expect("open");
        let ids = |u: &str| container_user_ids(&fs, u);
        assert_eq!(ids("app").expect("app"), (1000, 1001));
        assert_eq!(ids("app:grp").expect("app:grp"), (1000, 2000));
        assert_eq!(ids("1000").expect("1000"), (1000, 1001));
        assert_eq!(ids("5:6").expect("5:6"), (5, 6));
        assert_eq!(ids(":33").expect(":33"), (0, 33));
        assert!(ids("nobody").is_err());
        assert!(ids("app:nogroup").is_err());
    }
}
