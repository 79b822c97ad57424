//! Berth's image store.
//!
//! Owns images on disk: an OCI-layout content store whose blobs are digest-verified and written
//! atomically, image references normalised as Docker normalises them, layer snapshots keyed by
//! chain ID and mounted copy-on-write as container root filesystems, and the image operations
//! (load, save, import, export, commit, tag, remove, history, prune, garbage collection).
//!
//! Everything goes through [`Store`], opened on a directory (the daemon passes
//! `<data-root>/image`). All calls are synchronous and safe to make from several threads or
//! processes at once (the daemon runs them under `spawn_blocking`):
//!
//! | Docker operation | call | result shape |
//! |---|---|---|
//! | `docker images` | [`Store::list`] | [`ImageSummary`] |
//! | `docker image inspect` | [`Store::inspect`] | [`ImageInspect`] |
//! | `docker history` | [`Store::history`] | [`HistoryItem`] |
//! | `docker tag` / `rmi` | [`Store::tag`] / [`Store::remove`], [`Store::remove_with`] | [`DeleteItem`] list |
//! | `docker load` / `save` | [`Store::load`] / [`Store::save`] | [`LoadedImage`] |
//! | `docker import` | [`Store::import`] | image ID |
//! | `docker commit` / `diff` / `export` | [`Store::commit`] / [`Store::diff`] / [`Store::export`] | image ID / [`Change`] list / tar |
//! | `docker image prune` | [`Store::prune`] | [`PruneReport`] |
//! | `docker system df` | [`Store::disk_usage`] | [`DiskUsage`] |
//! | `docker cp` | [`ContainerFs::stat`], [`ContainerFs::archive`], [`ContainerFs::extract`] | [`PathStat`], tar |
//! | container rootfs | [`Store::create_rootfs`], [`Store::mount_rootfs`], [`Store::unmount_rootfs`], [`Store::remove_rootfs`] | [`Rootfs`] |
//! | registry client | [`Store::put_blob`], [`Store::put_layer`], [`Store::put_manifest`], [`Store::put_manifest_for`], [`Store::manifest_digest`], [`Store::open_blob`] | digests, image ID, [`BlobReader`] |
//! | maintenance | [`Store::gc`], [`Store::fsck`] | [`GcReport`], [`FsckReport`] |
//!
//! Errors are one [`Error`] enum; [`Error::kind`] maps it to not-found / conflict / invalid
//! input / internal for the API edge.
//!
//! Decisions worth knowing:
//! - Device nodes in layers are created (as Docker does when it runs as root); the store root is
//!   mode 0700 so neither they nor setuid binaries in snapshots are reachable by unprivileged
//!   host users. `trusted.*` xattrs from layers are dropped so a layer cannot plant overlayfs
//!   control attributes.
//! - Snapshots are always stored in overlayfs form (whiteouts as 0/0 character devices, opaque
//!   directories as `trusted.overlay.opaque=y`); the copy driver applies them by deleting.
//! - Loaded configs and manifests are kept byte for byte, so image IDs and digests survive a
//!   load/save round trip with other tools.

pub mod archive;
mod commit;
mod content;
pub mod copy;
mod db;
pub mod digest;
mod error;
pub mod ops;
pub mod reference;
pub mod rootfs;
pub mod spec;
mod store;
mod sys;
mod unpack;

pub use archive::{ArchiveFormat, LoadedImage};
pub use commit::{Change, ChangeKind, CommitOptions, ImportOptions};
pub use content::BlobReader;
pub use copy::{ContainerFs, ExtractOptions, PathStat};
pub use digest::Digest;
pub use error::{Error, ErrorKind, Result};
pub use ops::{
    DeleteItem, DiskUsage, FsckReport, GcReport, HistoryItem, ImageInspect, ImageSummary,
    PruneReport,
};
pub use reference::Reference;
pub use rootfs::{ContainerMeta, Rootfs};
pub use store::{Driver, Store, StoreOptions};
pub use unpack::{LayerDigests, MAX_SPECIAL_HEADER};

#[cfg(test)]
mod tests {
    /// The daemon shares one `Store` across tokio's blocking threads.
    #[test]
    fn store_is_send_and_sync() {
        fn check<T: Send + Sync + Clone>() {}
        check::<crate::Store>();
        check::<crate::Rootfs>();
    }
}
