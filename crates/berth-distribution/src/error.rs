//! The one error type of the registry client, with [`Error::kind`] for the daemon's
//! status-code mapping.

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Coarse classification for the API edge (Docker answers pulls of unknown images with 404,
/// bad credentials with 401, malformed names with 400, everything else with 500).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    NotFound,
    Unauthorized,
    InvalidInput,
    Internal,
}

/// Errors of pulls, pushes and logins.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The image store refused or failed (bad digest, unsafe layer, I/O).
    #[error(transparent)]
    Store(#[from] berth_image::Error),
    /// The HTTP exchange failed (connection, TLS, redirect limit).
    #[error("request to {url} failed: {source}")]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// The registry answered with an unexpected status.
    #[error("{what}: registry answered {status}: {body}")]
    Status {
        what: String,
        status: u16,
        body: String,
    },
    /// The manifest or tag does not exist in the repository.
    #[error("manifest for {0} not found: manifest unknown")]
    ManifestNotFound(String),
    /// The registry refused the credentials (or asked for some and none were given).
    #[error("unauthorized: authentication required for {0}")]
    Unauthorized(String),
    /// `docker login` credentials refused, worded as dockerd words it.
    #[error("login attempt to {url} failed with status: 401 Unauthorized")]
    LoginFailed { url: String },
    /// A `WWW-Authenticate` challenge this client cannot answer.
    #[error("unsupported authentication challenge from {url}: {challenge:?}")]
    Challenge { url: String, challenge: String },
    /// A registry document that is malformed or inconsistent (sizes, counts, media types).
    #[error("invalid content from registry for {what}: {reason}")]
    Invalid { what: String, reason: String },
    /// A body that was longer or shorter than its descriptor said.
    #[error("blob {digest}: {reason}")]
    BlobSize { digest: String, reason: String },
    /// The downloaded bytes did not hash to the digest asked for.
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    /// No manifest in an index for the requested platform.
    #[error("no matching manifest for {platform} in the manifest list entries of {reference}")]
    NoMatchingPlatform { reference: String, platform: String },
    /// A docker config file that cannot be read or parsed.
    #[error("docker config {path}: {reason}")]
    Config { path: String, reason: String },
    /// Reading a local file (a blob being pushed) failed.
    #[error("{context} {}: {source}", path.display())]
    Io {
        context: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A blocking store task panicked or was cancelled.
    #[error("store task for {0} did not finish: {1}")]
    Task(String, String),
}

impl Error {
    /// Classify the error for status-code mapping.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::ManifestNotFound(_) => ErrorKind::NotFound,
            Error::Unauthorized(_) | Error::LoginFailed { .. } => ErrorKind::Unauthorized,
            Error::Store(e) => match e.kind() {
                berth_image::ErrorKind::NotFound => ErrorKind::NotFound,
                berth_image::ErrorKind::InvalidInput => ErrorKind::InvalidInput,
                _ => ErrorKind::Internal,
            },
            Error::NoMatchingPlatform { .. } => ErrorKind::NotFound,
            _ => ErrorKind::Internal,
        }
    }
}

pub(crate) fn http(url: &str) -> impl FnOnce(reqwest::Error) -> Error + '_ {
    move |source| Error::Http {
        url: url.to_string(),
        source,
    }
}
