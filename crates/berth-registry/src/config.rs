//! The `--config` file of `berth registry serve`: JSON, every field optional.
//!
//! ```json
//! {
//!   "readOnly": false,
//!   "auth": {
//!     "htpasswd": "/etc/berth/htpasswd",
//!     "scheme": "bearer",
//!     "realm": "https://registry.example/token",
//!     "service": "berth-registry",
//!     "tokenTtlSecs": 300,
//!     "anonymousPull": false
//!   },
//!   "tls": { "cert": "/etc/berth/cert.pem", "key": "/etc/berth/key.pem" }
//! }
//! ```
//!
//! See [`crate::auth::AuthConfig`] and [`crate::tls::TlsConfig`] for each field.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::auth::AuthConfig;
use crate::tls::TlsConfig;

/// Server settings beyond the command line.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Config {
    /// Refuse every write (PUT, POST, PATCH, DELETE) with 405 UNSUPPORTED.
    #[serde(default)]
    pub read_only: bool,
    /// Require credentials; absent means anyone may pull and push.
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    /// Serve HTTPS instead of HTTP.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("read config {0}: {1}")]
    Read(PathBuf, #[source] std::io::Error),
    #[error("parse config {0}: {1}")]
    Parse(PathBuf, #[source] serde_json::Error),
}

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let data = std::fs::read(path).map_err(|e| ConfigError::Read(path.to_path_buf(), e))?;
        serde_json::from_slice(&data).map_err(|e| ConfigError::Parse(path.to_path_buf(), e))
    }
}
