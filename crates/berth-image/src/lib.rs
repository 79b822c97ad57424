//! Berth's image store.
//!
//! Owns images on disk: an OCI-layout content store whose blobs are digest-verified and written
//! atomically, image references normalised as Docker normalises them, layer snapshots keyed by
//! chain ID and mounted copy-on-write as container root filesystems, and the image operations
//! (load, save, import, export, commit, tag, remove, history, prune, garbage collection).

pub mod archive;
pub mod changes;
mod commit;
mod content;
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
