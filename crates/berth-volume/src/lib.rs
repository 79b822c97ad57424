//! Berth's volumes.
//!
//! Owns named volumes and mount specifications:
//!
//! - [`store`]: the [`VolumeStore`] of the `local` driver: one directory per volume under
//!   `<data-root>/volumes/<name>/` holding `_data` (the content) and `opts.json` (driver,
//!   options, labels, creation time, written crash-safely), name validation, anonymous
//!   volumes, list filters, removal and pruning.
//! - [`local`]: the `local` driver's `type`/`device`/`o` options: a volume created with them
//!   is mounted on `_data` when its first user starts and unmounted when its last user stops;
//!   users are persisted so a daemon restart does not leak mounts.
//! - [`spec`]: parsing of `-v src:dst[:opts]` and `--mount k=v,...` into Docker's API `Mount`
//!   shape, and the daemon-side validation of `Mount`s with dockerd's error messages. Shared
//!   by the daemon and the CLI.
//! - [`copyup`]: populating a new, empty volume with the image's content at the mount path,
//!   preserving ownership, modes, timestamps and extended attributes, and resolving paths
//!   inside the image root without ever following a symlink out of it.
//!
//! Which containers use which volume is the daemon's knowledge: it passes the in-use set to
//! [`VolumeStore::list`], [`VolumeStore::remove`] and [`VolumeStore::prune`].

pub mod copyup;
mod error;
pub mod local;
pub mod spec;
pub mod store;

pub use error::{Error, ErrorKind, Result};
pub use store::{CreateOptions, ListFilters, Volume, VolumeStore, ANONYMOUS_LABEL};
