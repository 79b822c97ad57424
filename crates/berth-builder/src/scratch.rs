//! Writable root filesystems of images that build steps make outside containers (COPY/ADD
//! targets, `COPY --from` sources, WORKDIR's directory). Each is recorded by a marker file
//! while it exists, so one left by a daemon that died mid-build is found and removed
//! ([`recover`]) instead of holding its image in use forever.

use std::path::{Path, PathBuf};

use berth_image::Store;

use crate::error::{Error, Result};

/// Where the markers live, under the cache directory.
fn marker_dir(cache_dir: &Path) -> PathBuf {
    cache_dir.join("rootfs")
}

/// A mounted writable root filesystem of an image, removed on drop.
pub(crate) struct ScratchRootfs {
    store: Store,
    /// The store's rootfs ID (random, like a container ID).
    pub id: String,
    /// Where it is mounted.
    pub path: PathBuf,
    marker: PathBuf,
}

impl ScratchRootfs {
    /// Creates and mounts one for `image`, marked under `cache_dir`.
    pub fn create(store: &Store, image: &str, cache_dir: &Path) -> Result<ScratchRootfs> {
        let id = hex::encode(rand::random::<[u8; 32]>());
        let dir = marker_dir(cache_dir);
        std::fs::create_dir_all(&dir).map_err(Error::io("create directory", dir.clone()))?;
        let marker = dir.join(&id);
        std::fs::write(&marker, b"").map_err(Error::io("create", marker.clone()))?;
        let rootfs = match store.create_rootfs(image, &id) {
            Ok(r) => r,
            Err(e) => {
                let _ = std::fs::remove_file(&marker);
                return Err(e.into());
            }
        };
        Ok(ScratchRootfs {
            store: store.clone(),
            id,
            path: rootfs.path,
            marker,
        })
    }
}

impl Drop for ScratchRootfs {
    fn drop(&mut self) {
        match self.store.remove_rootfs(&self.id) {
            Ok(()) | Err(berth_image::Error::ContainerNotFound(_)) => {
                let _ = std::fs::remove_file(&self.marker);
            }
            Err(err) => {
                tracing::warn!(id = %self.id, %err, "cannot remove a build step's root filesystem")
            }
        }
    }
}

/// Removes the root filesystems a previous daemon left behind (it died mid-build); returns
/// how many. Call before any build of this daemon runs.
pub fn recover(store: &Store, cache_dir: &Path) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(marker_dir(cache_dir))
        .into_iter()
        .flatten()
        .flatten()
    {
        let id = e.file_name().to_string_lossy().into_owned();
        if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            continue;
        }
        match store.remove_rootfs(&id) {
            Ok(()) => n += 1,
            // Removed already; only the marker was left.
            Err(berth_image::Error::ContainerNotFound(_)) => {}
            Err(err) => {
                tracing::warn!(%id, %err, "cannot remove a stale build root filesystem");
                continue;
            }
        }
        let _ = std::fs::remove_file(e.path());
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leftovers_are_recovered() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(d.path().join("image")).unwrap();
        let cache_dir = d.path().join("builder");
        let dir = marker_dir(&cache_dir);
        std::fs::create_dir_all(&dir).unwrap();
        // A marker whose rootfs is gone, and a stray file that is not a marker.
        std::fs::write(dir.join("a".repeat(64)), b"").unwrap();
        std::fs::write(dir.join("notes"), b"").unwrap();
        assert_eq!(recover(&store, &cache_dir), 0);
        assert!(!dir.join("a".repeat(64)).exists());
        assert!(dir.join("notes").exists());
    }
}
