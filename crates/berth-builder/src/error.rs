//! The builder's one error type.

use std::path::PathBuf;

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a build (or one of its pieces) failed. Messages follow dockerd's classic builder where
/// clients match on them.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Dockerfile cannot be parsed.
    #[error("dockerfile parse error line {line}: {message}")]
    Parse {
        /// 1-based line of the instruction.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// An instruction is well-formed but cannot be carried out as written.
    #[error("{0}")]
    Instruction(String),
    /// A `--change` line holds an instruction that only a build may run (dockerd's text).
    #[error("{0} is not a valid change command")]
    NotAChange(String),
    /// A variable reference is malformed (`${`, `${VAR:?message}`).
    #[error("{0}")]
    Substitution(String),
    /// A RUN step exited non-zero (dockerd's text; `code` goes to `errorDetail.code`).
    #[error("The command '{command}' returned a non-zero code: {code}")]
    NonZero {
        /// The command as Docker shows it (`/bin/sh -c exit 1`).
        command: String,
        /// The exit code.
        code: i64,
    },
    /// The build context is invalid.
    #[error("{0}")]
    Context(String),
    /// A COPY/ADD source or the Dockerfile is missing from the context.
    #[error("{0}")]
    NotFound(String),
    /// The engine side (containers, pulls) failed.
    #[error("{0}")]
    Backend(String),
    /// The image store failed.
    #[error(transparent)]
    Image(#[from] berth_image::Error),
    /// A filesystem operation failed.
    #[error("{context} {}: {source}", path.display())]
    Io {
        /// What was being done.
        context: &'static str,
        /// On what.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The build was cancelled (the client went away).
    #[error("build cancelled")]
    Cancelled,
}

impl Error {
    /// An [`Error::Io`] maker for `map_err`.
    pub(crate) fn io(
        context: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io {
            context,
            path,
            source,
        }
    }

    /// The `errorDetail.code` dockerd sends with this error, if any.
    pub fn code(&self) -> Option<i64> {
        match self {
            Error::NonZero { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether the client sent something wrong (a 400 rather than a 500 before streaming).
    pub fn is_user_error(&self) -> bool {
        matches!(
            self,
            Error::Parse { .. }
                | Error::Instruction(_)
                | Error::NotAChange(_)
                | Error::Substitution(_)
                | Error::Context(_)
                | Error::NotFound(_)
        )
    }
}
