//! Docker Engine API version negotiation: the `/v1.N` path prefix and its bounds.

use crate::error::{Error, Result};

/// The newest API version served (and advertised in `API-Version`).
pub const MAX: ApiVersion = ApiVersion(1, 47);
/// The oldest API version accepted.
pub const MIN: ApiVersion = ApiVersion(1, 24);

/// An API version `major.minor`, ordered numerically (1.9 < 1.10).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ApiVersion(pub u32, pub u32);

impl std::fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.0, self.1)
    }
}

impl ApiVersion {
    /// Parses `1.47`; `None` when it is not two dot-separated numbers.
    pub fn parse(s: &str) -> Option<Self> {
        let (major, minor) = s.split_once('.')?;
        Some(ApiVersion(major.parse().ok()?, minor.parse().ok()?))
    }
}

/// Splits a request path into the requested API version (the server's maximum when the path
/// is unversioned) and the path without the prefix.
///
/// A prefix that does not look like a version is left in place, so it matches no route and
/// becomes a 404 as with dockerd.
pub fn split_path(path: &str) -> Result<(ApiVersion, &str)> {
    let Some(rest) = path.strip_prefix("/v") else {
        return Ok((MAX, path));
    };
    let (ver, tail) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if ver.is_empty() || !ver.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Ok((MAX, path));
    }
    let Some(v) = ApiVersion::parse(ver) else {
        return Err(Error::InvalidParameter(format!(
            "invalid API version: {ver}"
        )));
    };
    if v > MAX {
        return Err(Error::VersionTooNew(ver.to_string(), MAX.to_string()));
    }
    if v < MIN {
        return Err(Error::VersionTooOld(ver.to_string(), MIN.to_string()));
    }
    Ok((v, tail))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        assert_eq!(split_path("/_ping").unwrap(), (MAX, "/_ping"));
        assert_eq!(
            split_path("/v1.41/containers/json").unwrap(),
            (ApiVersion(1, 41), "/containers/json")
        );
        let err = split_path("/v1.99/info").unwrap_err();
        assert_eq!(
            err.to_string(),
            "client version 1.99 is too new. Maximum supported API version is 1.47"
        );
        assert!(matches!(
            split_path("/v1.12/info"),
            Err(Error::VersionTooOld(..))
        ));
        assert_eq!(split_path("/volumes").unwrap(), (MAX, "/volumes"));
        assert!(ApiVersion(1, 9) < ApiVersion(1, 10));
    }
}
