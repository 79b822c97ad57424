//! The daemon's error type and its one mapping onto Docker's HTTP status codes.
//!
//! Every handler returns [`Error`]; [`Error::status`] is the only place that decides which
//! status a failure becomes on the wire. Messages that Docker clients match on (`No such
//! container: x`, the name-conflict text, version errors) are reproduced verbatim, which is why
//! some of them start with a capital letter.

use hyper::StatusCode;

/// Result alias for the daemon.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while serving a request or running the daemon.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No container matches the given ID, ID prefix or name.
    #[error("No such container: {0}")]
    NoSuchContainer(String),
    /// No image matches the given reference or ID.
    #[error("No such image: {0}")]
    NoSuchImage(String),
    /// Some other object (an exec instance, ...) does not exist; the message is Docker's.
    #[error("{0}")]
    NotFound(String),
    /// An ID prefix matched more than one container.
    #[error("multiple IDs found with provided prefix: {0}")]
    AmbiguousPrefix(String),
    /// The request conflicts with the current state (name in use, container running, ...).
    #[error("{0}")]
    Conflict(String),
    /// A parameter, query value or body field is invalid.
    #[error("{0}")]
    InvalidParameter(String),
    /// The request body is not valid JSON for the expected shape.
    #[error("invalid JSON: {0}")]
    InvalidJson(String),
    /// The request body exceeds the daemon's limit.
    #[error("request body too large: limit is {0} bytes")]
    BodyTooLarge(usize),
    /// The client asked for an API version newer than the daemon serves.
    #[error("client version {0} is too new. Maximum supported API version is {1}")]
    VersionTooNew(String, String),
    /// The client asked for an API version older than the daemon serves.
    #[error(
        "client version {0} is too old. Minimum supported API version is {1}, please upgrade your client to a newer version"
    )]
    VersionTooOld(String, String),
    /// No route matches the method and path.
    #[error("page not found")]
    RouteNotFound,
    /// The daemon does not implement this operation yet (its backend is not wired in).
    #[error("{0} is not implemented by this daemon")]
    NotImplemented(&'static str),
    /// The daemon's configuration is invalid.
    #[error("invalid daemon configuration: {0}")]
    Config(String),
    /// A filesystem or socket operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What the daemon was doing, with the path involved.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A record on disk could not be (de)serialised.
    #[error("{context}: {source}")]
    Json {
        /// What the daemon was doing, with the path involved.
        context: String,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },
    /// The runtime (or a container's monitor) failed; the message is the runtime's.
    #[error("{0}")]
    Runtime(String),
    /// The image store failed.
    #[error(transparent)]
    Image(berth_image::Error),
    /// A handler panicked; the panic was contained to its request.
    #[error("internal error: {0}")]
    Internal(String),
    /// The operation is not allowed in the object's state (Docker's 403 cases).
    #[error("{0}")]
    Forbidden(String),
    /// A swarm operation on a node that is in no swarm (Berth never is).
    #[error("This node is not part of a swarm")]
    NotInSwarm,
    /// Container networking failed.
    #[error(transparent)]
    Network(berth_network::NetworkError),
    /// A registry exchange (push, login, distribution inspect) failed before streaming began.
    #[error(transparent)]
    Registry(berth_distribution::Error),
}

impl Error {
    /// Wraps an I/O error with context.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// Wraps a JSON error with context.
    pub fn json(context: impl Into<String>, source: serde_json::Error) -> Self {
        Error::Json {
            context: context.into(),
            source,
        }
    }

    /// The HTTP status Docker returns for this kind of failure.
    pub fn status(&self) -> StatusCode {
        match self {
            Error::NoSuchContainer(_)
            | Error::NoSuchImage(_)
            | Error::NotFound(_)
            | Error::RouteNotFound => StatusCode::NOT_FOUND,
            Error::Conflict(_) => StatusCode::CONFLICT,
            Error::AmbiguousPrefix(_)
            | Error::InvalidParameter(_)
            | Error::InvalidJson(_)
            | Error::VersionTooNew(..)
            | Error::VersionTooOld(..) => StatusCode::BAD_REQUEST,
            Error::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Error::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            Error::Image(e) => match e.kind() {
                berth_image::ErrorKind::NotFound => StatusCode::NOT_FOUND,
                berth_image::ErrorKind::Conflict => StatusCode::CONFLICT,
                berth_image::ErrorKind::InvalidInput => StatusCode::BAD_REQUEST,
                berth_image::ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            },
            Error::Forbidden(_) => StatusCode::FORBIDDEN,
            Error::NotInSwarm => StatusCode::SERVICE_UNAVAILABLE,
            Error::Network(e) => network_status(e),
            Error::Registry(e) => match e.kind() {
                berth_distribution::ErrorKind::NotFound => StatusCode::NOT_FOUND,
                berth_distribution::ErrorKind::Unauthorized => StatusCode::UNAUTHORIZED,
                berth_distribution::ErrorKind::InvalidInput => StatusCode::BAD_REQUEST,
                berth_distribution::ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            },
            Error::Runtime(_)
            | Error::Config(_)
            | Error::Io { .. }
            | Error::Json { .. }
            | Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<berth_image::Error> for Error {
    fn from(e: berth_image::Error) -> Self {
        match e {
            // Docker clients print this one verbatim; keep dockerd's wording.
            berth_image::Error::ImageNotFound(name) => Error::NoSuchImage(name),
            other => Error::Image(other),
        }
    }
}

/// Docker's status for each kind of networking failure.
fn network_status(e: &berth_network::NetworkError) -> StatusCode {
    use berth_network::NetworkError as N;
    match e {
        N::NetworkNotFound(_) => StatusCode::NOT_FOUND,
        N::NetworkExists(_) => StatusCode::CONFLICT,
        N::InvalidCidr(_)
        | N::InvalidAddress(_)
        | N::InvalidPortSpec { .. }
        | N::InvalidName(_)
        | N::Ipv6Disabled(_)
        | N::OutsideSubnet { .. } => StatusCode::BAD_REQUEST,
        N::SubnetOverlap { .. }
        | N::ActiveEndpoints { .. }
        | N::AlreadyConnected { .. }
        | N::NotConnected { .. }
        | N::Predefined(_)
        | N::AddressInUse { .. } => StatusCode::FORBIDDEN,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}
