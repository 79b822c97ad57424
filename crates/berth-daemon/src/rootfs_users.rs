//! Who holds a container's root filesystem mounted.
//!
//! A running container owns its rootfs mount (and its volumes' mounts) from its start until
//! its exit is recorded. Besides, `docker cp` and `docker export` of a stopped container mount
//! them on demand, as dockerd does, and a start may begin while such a copy is still reading.
//! Each of these takes a [`RootfsHold`]; the mounts are released when the last hold goes and
//! the container is not running, so a copy never loses its files to a concurrent exit, a start
//! never loses its rootfs to a copy that ends, and a stopped container does not keep mounts
//! after the copy that needed them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::daemon::Daemon;
use crate::error::Result;

/// Holds per container, behind the lock every mount and release decision takes.
#[derive(Default)]
pub(crate) struct RootfsUsers(Mutex<HashMap<String, usize>>);

/// Keeps container `id`'s rootfs (and the volumes mounted with it) from being released.
pub(crate) struct RootfsHold {
    daemon: Arc<Daemon>,
    id: String,
    handle: tokio::runtime::Handle,
}

impl Daemon {
    /// Takes a hold on container `id`'s mounts. It is given back when dropped, from a thread
    /// of `handle`'s blocking pool: the holder's thread may be in a private mount namespace,
    /// where an unmount would not reach the host's mounts.
    pub(crate) fn hold_rootfs(
        self: &Arc<Self>,
        id: &str,
        handle: tokio::runtime::Handle,
    ) -> RootfsHold {
        *crate::events::lock(&self.rootfs_users.0)
            .entry(id.to_owned())
            .or_default() += 1;
        RootfsHold {
            daemon: Arc::clone(self),
            id: id.to_owned(),
            handle,
        }
    }

    /// Mounts container `id`'s rootfs unless it is mounted (under the users' lock, so that two
    /// holders never stack two mounts). Call it with a hold taken.
    pub(crate) fn mount_held_rootfs(&self, id: &str) -> Result<berth_image::Rootfs> {
        let _users = crate::events::lock(&self.rootfs_users.0);
        Ok(self.images.mount_rootfs(id)?)
    }

    /// A run of container `id` ended: its mounts are released unless someone holds them (the
    /// last hold then releases them).
    pub(crate) fn release_rootfs_if_unused(&self, id: &str) {
        let users = crate::events::lock(&self.rootfs_users.0);
        if users.get(id).copied().unwrap_or(0) == 0 {
            self.release_rootfs(id);
        }
        drop(users);
    }

    /// Unmounts the rootfs and gives back the volumes (with the users' lock held).
    fn release_rootfs(&self, id: &str) {
        if let Err(err) = self.images.unmount_rootfs(id) {
            tracing::warn!(%id, %err, "cannot unmount rootfs");
        }
        self.release_mounts(id);
    }
}

impl Drop for RootfsHold {
    fn drop(&mut self) {
        {
            let mut users = crate::events::lock(&self.daemon.rootfs_users.0);
            let n = users.entry(self.id.clone()).or_default();
            *n = n.saturating_sub(1);
            if *n > 0 {
                return;
            }
            users.remove(&self.id);
        }
        let d = Arc::clone(&self.daemon);
        let id = std::mem::take(&mut self.id);
        drop(self.handle.spawn_blocking(move || {
            // Decided again under the lock: a start or another copy may have come meanwhile.
            let users = crate::events::lock(&d.rootfs_users.0);
            let running = d.containers.get(&id).is_ok_and(|r| r.state.running);
            if !running && !users.contains_key(&id) {
                d.release_rootfs(&id);
            }
            drop(users);
        }));
    }
}
