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
    #[error("{context} {}: {source}", path.display())]
    Io {
        context: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("invalid reference format: {reference:?}: {reason}")]
    InvalidReference { reference: String, reason: String },
    #[error("invalid digest {digest:?}: {reason}")]
    InvalidDigest {
        digest: String,
        reason: &'static str,
    },
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    #[error("size mismatch for {what}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        what: String,
        expected: u64,
        actual: u64,
    },
    #[error("no such image: {0}")]
    ImageNotFound(String),
    #[error("no such container rootfs: {0}")]
    ContainerNotFound(String),
    #[error("container rootfs already exists: {0}")]
    ContainerExists(String),
    #[error("blob not found: {0}")]
    BlobNotFound(String),
    #[error("image reference {0:?} is ambiguous")]
    Ambiguous(String),
    #[error("conflict: unable to delete {image} (must be forced) - image is being used by container {container}")]
    ImageInUse { image: String, container: String },
    #[error("conflict: unable to delete {image} (must be forced) - image is referenced in multiple repositories")]
    MultipleRepositories { image: String },
    #[error("unsafe layer entry {path:?}: {reason}")]
    UnsafeEntry { path: String, reason: String },
    #[error("invalid layer: {0}")]
    InvalidLayer(String),
    #[error("invalid archive: {0}")]
    InvalidArchive(String),
    #[error("invalid image manifest or config: {0}")]
    InvalidManifest(String),
    #[error("no manifest in the index matches platform {0}")]
    NoMatchingPlatform(String),
    #[error("invalid change {change:?}: {reason}")]
    InvalidChange { change: String, reason: String },
    #[error("mount of {target} failed: {source}", target = target.display())]
    Mount {
        target: PathBuf,
        #[source]
        source: io::Error,
    },
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
            Error::ImageNotFound(_) | Error::ContainerNotFound(_) | Error::BlobNotFound(_) => {
                ErrorKind::NotFound
            }
            Error::Ambiguous(_)
            | Error::ImageInUse { .. }
            | Error::MultipleRepositories { .. }
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
            | Error::InvalidChange { .. } => ErrorKind::InvalidInput,
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
