//! The one error type of the image store.
//!
//! Every variant carries enough context (path, digest, reference) to be read on its own; the
//! daemon maps them onto HTTP statuses with [`Error::kind`].

use std::io;
use std::path::PathBuf;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Coarse classification used by callers to pick a status code (404, 409, 400, 500).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The image, reference, container or blob does not exist.
    NotFound,
    /// The request conflicts with the current state (image in use, ambiguous prefix).
    Conflict,
    /// The input was invalid (bad reference, malformed archive, unsafe layer).
    InvalidInput,
    /// Anything else: I/O failures, corrupted store.
    Internal,
}

/// Errors returned by the image store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A filesystem operation failed.
    #[error("{context} {}: {source}", path.display())]
    Io {
        context: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A name that is not a valid Docker reference.
    #[error("invalid reference format: {reference:?}: {reason}")]
    InvalidReference { reference: String, reason: String },
    /// A string that is not a `sha256:<64 hex>` digest.
    #[error("invalid digest {digest:?}: {reason}")]
    InvalidDigest {
        digest: String,
        reason: &'static str,
    },
    /// Content did not hash to the digest it was expected to have.
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    /// Content did not have the size it was expected to have.
    #[error("size mismatch for {what}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        what: String,
        expected: u64,
        actual: u64,
    },
    /// No image by that reference, ID or ID prefix.
    #[error("no such image: {0}")]
    ImageNotFound(String),
    /// No container rootfs with that ID.
    #[error("no such container rootfs: {0}")]
    ContainerNotFound(String),
    /// A container rootfs with that ID already exists.
    #[error("container rootfs already exists: {0}")]
    ContainerExists(String),
    /// A blob the operation needs is not in the content store.
    #[error("blob not found: {0}")]
    BlobNotFound(String),
    /// An ID prefix matching several images.
    #[error("image reference {0:?} is ambiguous")]
    Ambiguous(String),
    /// Deleting an image other images name as their parent (dockerd's wording).
    #[error(
        "conflict: unable to delete {image} (cannot be forced) - image has dependent child images"
    )]
    HasChildren { image: String },
    /// Removal (not forced) of the last tag of an image a container uses. Short IDs, in
    /// dockerd's wording.
    #[error("conflict: unable to remove repository reference {reference:?} (must force) - container {container} is using its referenced image {image}")]
    ReferenceInUse {
        reference: String,
        container: String,
        image: String,
    },
    /// Removal by ID (not forced) of an image a stopped container uses.
    #[error("conflict: unable to delete {image} (must be forced) - image is being used by stopped container {container}")]
    ImageInUse { image: String, container: String },
    /// Removal by ID of an image a running container uses; `force` does not override it.
    #[error("conflict: unable to delete {image} (cannot be forced) - image is being used by running container {container}")]
    ImageInUseRunning { image: String, container: String },
    /// Removal by ID of an image tagged in several repositories, not forced.
    #[error("conflict: unable to delete {image} (must be forced) - image is referenced in multiple repositories")]
    MultipleRepositories { image: String },
    /// A layer entry that would write outside its snapshot.
    #[error("unsafe layer entry {path:?}: {reason}")]
    UnsafeEntry { path: String, reason: String },
    /// A layer stream that is not a valid (compressed) tar.
    #[error("invalid layer: {0}")]
    InvalidLayer(String),
    /// An image archive that is neither docker-archive nor OCI layout.
    #[error("invalid archive: {0}")]
    InvalidArchive(String),
    /// A manifest or config that is malformed or inconsistent.
    #[error("invalid image manifest or config: {0}")]
    InvalidManifest(String),
    /// An index without a manifest for this host's platform.
    #[error("no manifest in the index matches platform {0}")]
    NoMatchingPlatform(String),
    /// Mounting a container rootfs failed.
    #[error("mount of {target} failed: {source}", target = target.display())]
    Mount {
        target: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A path that does not exist inside a container's filesystem (`docker cp`).
    #[error("no such file or directory in the container: {0}")]
    PathNotFound(String),
    /// `docker cp` into something that is not a directory (dockerd's wording).
    #[error("extraction point is not a directory")]
    NotADirectory(String),
    /// An archive entry that would replace a directory with a non-directory or the reverse
    /// while the caller asked not to (`noOverwriteDirNonDir`).
    #[error("cannot overwrite {existing} {path:?} with {new}")]
    Overwrite {
        path: String,
        existing: &'static str,
        new: &'static str,
    },
    /// A JSON document could not be read or written.
    #[error("json for {what}: {source}")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },
}

impl Error {
    /// Classify the error for status-code mapping.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::ImageNotFound(_)
            | Error::ContainerNotFound(_)
            | Error::BlobNotFound(_)
            | Error::PathNotFound(_) => ErrorKind::NotFound,
            Error::Ambiguous(_)
            | Error::ReferenceInUse { .. }
            | Error::ImageInUse { .. }
            | Error::ImageInUseRunning { .. }
            | Error::MultipleRepositories { .. }
            | Error::HasChildren { .. }
            | Error::ContainerExists(_) => ErrorKind::Conflict,
            Error::InvalidReference { .. }
            | Error::InvalidDigest { .. }
            | Error::DigestMismatch { .. }
            | Error::SizeMismatch { .. }
            | Error::UnsafeEntry { .. }
            | Error::InvalidLayer(_)
            | Error::InvalidArchive(_)
            | Error::InvalidManifest(_)
            | Error::NoMatchingPlatform(_)
            | Error::NotADirectory(_)
            | Error::Overwrite { .. } => ErrorKind::InvalidInput,
            Error::Io { .. } | Error::Mount { .. } | Error::Json { .. } => ErrorKind::Internal,
        }
    }
}

/// Attach a context string and path to an `io::Error`.
pub(crate) trait IoContext<T> {
    fn ctx(self, context: &'static str, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::result::Result<T, io::Error> {
    fn ctx(self, context: &'static str, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|source| Error::Io {
            context,
            path: path.into(),
            source,
        })
    }
}

pub(crate) fn json_err(what: impl Into<String>) -> impl FnOnce(serde_json::Error) -> Error {
    let what = what.into();
    move |source| Error::Json { what, source }
}
