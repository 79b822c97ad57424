//! The crate's error type and its coarse classification for status codes.

use std::io;
use std::path::PathBuf;

/// Result alias for the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Coarse classification used by callers to pick a status code (404, 409, 400, 500).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The volume (or driver) does not exist.
    NotFound,
    /// The request conflicts with the current state (volume in use).
    Conflict,
    /// The input was invalid (name, option, mount specification).
    InvalidInput,
    /// Anything else: I/O failures, mount failures, a corrupted store.
    Internal,
}

/// Errors of the volume store and the mount specification parsers.
///
/// Messages that Docker clients show verbatim keep dockerd's wording.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No volume has this name.
    #[error("get {0}: no such volume")]
    NoSuchVolume(String),
    /// A volume name outside `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
    #[error("create {0}: \"{0}\" includes invalid characters for a local volume name, only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed. If you intended to pass a host directory, use absolute path")]
    InvalidName(String),
    /// A driver other than `local`.
    #[error("error looking up volume plugin {0}: plugin \"{0}\" not found")]
    UnknownDriver(String),
    /// A driver option the local driver does not know, or a bad value.
    #[error("create {name}: {reason}")]
    InvalidOption {
        /// The volume.
        name: String,
        /// What is wrong with the options.
        reason: String,
    },
    /// Removal of a volume that containers use.
    #[error("remove {name}: volume is in use - [{}]", .containers.join(", "))]
    InUse {
        /// The volume.
        name: String,
        /// IDs of the containers using it.
        containers: Vec<String>,
    },
    /// A `-v`, `--mount` or API `Mount` that cannot be used; the message is dockerd's.
    #[error("{0}")]
    InvalidSpec(String),
    /// A filesystem operation failed.
    #[error("{context} {}: {source}", path.display())]
    Io {
        /// What was being done.
        context: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Mounting or unmounting a volume's device failed.
    #[error("mount volume {name}: {reason}")]
    Mount {
        /// The volume.
        name: String,
        /// The failing call and its errno.
        reason: String,
    },
    /// A volume's `opts.json` cannot be read or written.
    #[error("{context} {}: {source}", path.display())]
    Json {
        /// What was being done.
        context: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },
}

impl Error {
    /// Wraps an I/O error with what was being done and the path.
    pub(crate) fn io(context: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            context,
            path: path.into(),
            source,
        }
    }

    /// The kind of failure, for status codes.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::NoSuchVolume(_) | Error::UnknownDriver(_) => ErrorKind::NotFound,
            Error::InUse { .. } => ErrorKind::Conflict,
            Error::InvalidName(_) | Error::InvalidOption { .. } | Error::InvalidSpec(_) => {
                ErrorKind::InvalidInput
            }
            Error::Io { .. } | Error::Mount { .. } | Error::Json { .. } => ErrorKind::Internal,
        }
    }
}
