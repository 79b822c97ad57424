//! The crate's error type and the one-line rendering used by the command line and the monitor.

use std::path::PathBuf;

/// Everything that can go wrong in `berth-runtime`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No container with this id under the runtime root.
    #[error("container {0} does not exist")]
    NotFound(String),
    /// A container with this id already exists under the runtime root.
    #[error("container {0} already exists")]
    AlreadyExists(String),
    /// The container id is not a valid file name.
    #[error("invalid container id {id:?}: {reason}")]
    InvalidId { id: String, reason: &'static str },
    /// The bundle is unusable (missing rootfs, unreadable or malformed config.json).
    #[error("bundle {bundle}: {reason}")]
    Bundle { bundle: PathBuf, reason: String },
    /// The container exists but is in the wrong state for the operation.
    #[error("container {id} is {status}: cannot {op}")]
    WrongState {
        id: String,
        status: String,
        op: &'static str,
    },
    /// A signal name or number that does not exist.
    #[error("unknown signal {0:?}")]
    UnknownSignal(String),
    /// Invalid run options (user, mounts, limits...).
    #[error("invalid option: {0}")]
    InvalidOption(String),
    /// An error reported by youki's libcontainer.
    #[error("{context}: {message}")]
    Libcontainer { context: String, message: String },
    /// An error from the cgroup manager.
    #[error("cgroup {path}: {message}")]
    Cgroup { path: PathBuf, message: String },
    /// A seccomp profile could not be compiled or loaded.
    #[error("seccomp: {0}")]
    Seccomp(String),
    /// Berth's own init could not set the container up.
    #[error("create container {id}: {message}")]
    Init { id: String, message: String },
    /// The monitor could not be started or reported a failure.
    #[error("monitor: {0}")]
    Monitor(String),
    /// An I/O error with the path (or object) it concerns.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// A system call failed.
    #[error("{context}: {source}")]
    Sys {
        context: String,
        #[source]
        source: nix::Error,
    },
    /// JSON (de)serialisation failed.
    #[error("{context}: {source}")]
    Json {
        context: String,
        #[source]
        source: serde_json::Error,
    },
}

/// Result alias for the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn sys(context: impl Into<String>, source: nix::Error) -> Self {
        Error::Sys {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn json(context: impl Into<String>, source: serde_json::Error) -> Self {
        Error::Json {
            context: context.into(),
            source,
        }
    }

    /// Wraps a libcontainer error, flattening its chain of sources into one line.
    pub(crate) fn libcontainer(
        context: impl Into<String>,
        err: &(dyn std::error::Error + 'static),
    ) -> Self {
        Error::Libcontainer {
            context: context.into(),
            message: one_line(err),
        }
    }
}

/// Renders an error and its sources as one line (`outer: inner: root cause`), skipping
/// repeated messages (thiserror's `transparent` wrappers repeat their inner message).
pub fn one_line(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        let msg = e.to_string().replace('\n', " ");
        if !msg.is_empty() && !parts.iter().any(|p| p.contains(&msg)) {
            parts.push(msg);
        }
        cur = e.source();
    }
    parts.join(": ")
}
