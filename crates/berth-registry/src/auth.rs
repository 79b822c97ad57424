//! Authentication: htpasswd users (bcrypt hashes only) checked over HTTP Basic, or bearer
//! tokens handed out by the registry's own token endpoint (`GET /token`, which itself takes
//! Basic credentials), as Docker clients expect from `WWW-Authenticate: Bearer realm=...`.
//!
//! There are no per-repository ACLs: an authenticated user may pull and push everywhere, and
//! `anonymousPull` lets anyone read. Tokens are opaque random strings kept in memory, so a
//! restart invalidates them (clients simply fetch a new one).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use hyper::header::{HeaderMap, AUTHORIZATION, HOST};
use serde::Deserialize;

use crate::digest::Algorithm;
use crate::error::{ApiError, Code};

/// The `auth` section of the configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthConfig {
    /// htpasswd file with `user:$2y$...` bcrypt lines (`htpasswd -B`).
    pub htpasswd: PathBuf,
    /// `basic` (default) or `bearer`.
    #[serde(default)]
    pub scheme: Scheme,
    /// Basic: the realm name. Bearer: the token endpoint URL; by default
    /// `<scheme>://<Host header>/token` of this server.
    #[serde(default)]
    pub realm: Option<String>,
    /// The `service` of bearer challenges.
    #[serde(default = "default_service")]
    pub service: String,
    /// Lifetime of bearer tokens in seconds.
    #[serde(default = "default_ttl")]
    pub token_ttl_secs: u64,
    /// Let unauthenticated clients pull (GET and HEAD).
    #[serde(default)]
    pub anonymous_pull: bool,
}

fn default_service() -> String {
    "berth-registry".to_string()
}

fn default_ttl() -> u64 {
    300
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    #[default]
    Basic,
    Bearer,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("read htpasswd {0}: {1}")]
    Read(PathBuf, #[source] std::io::Error),
    #[error("htpasswd {0} line {1}: only bcrypt entries (user:$2y$...) are supported")]
    Unsupported(PathBuf, usize),
}

/// The access a request needs.
pub struct Access<'a> {
    /// Repository, or `None` for the catalog and the base endpoint.
    pub repository: Option<&'a str>,
    pub write: bool,
}

/// Checks credentials and issues tokens.
pub struct Auth {
    config: AuthConfig,
    users: HashMap<String, String>,
    tls: bool,
    /// Token -> (user, expiry).
    tokens: Mutex<HashMap<String, (String, Instant)>>,
    /// sha256 of verified `user:password` pairs: bcrypt is slow by design, so each pair
    /// is verified once per process, not once per request.
    verified: Mutex<HashMap<String, String>>,
}

impl Auth {
    pub fn load(config: AuthConfig, tls: bool) -> Result<Self, AuthError> {
        let users = read_htpasswd(&config.htpasswd)?;
        Ok(Auth {
            config,
            users,
            tls,
            tokens: Mutex::new(HashMap::new()),
            verified: Mutex::new(HashMap::new()),
        })
    }

    /// Lets the request through, or answers 401 with the right challenge.
    pub fn check(&self, headers: &HeaderMap, access: &Access<'_>) -> Result<(), ApiError> {
        if self.config.anonymous_pull && !access.write {
            return Ok(());
        }
        let header = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok());
        let ok = match (self.config.scheme, header) {
            (Scheme::Basic, Some(h)) => self.basic_user(h).is_some(),
            (Scheme::Bearer, Some(h)) => h
                .strip_prefix("Bearer ")
                .is_some_and(|t| self.token_valid(t.trim())),
            (_, None) => false,
        };
        if ok {
            Ok(())
        } else {
            Err(self.challenge(headers, access))
        }
    }

    fn challenge(&self, headers: &HeaderMap, access: &Access<'_>) -> ApiError {
        let value = match self.config.scheme {
            Scheme::Basic => {
                let realm = self.config.realm.as_deref().unwrap_or("berth-registry");
                format!("Basic realm=\"{realm}\"")
            }
            Scheme::Bearer => {
                let realm = self.token_url(headers);
                let mut v = format!(
                    "Bearer realm=\"{realm}\",service=\"{}\"",
                    self.config.service
                );
                if let Some(repo) = access.repository {
                    let actions = if access.write { "pull,push" } else { "pull" };
                    v.push_str(&format!(",scope=\"repository:{repo}:{actions}\""));
                }
                v
            }
        };
        ApiError::new(Code::Unauthorized, "authentication required")
            .with_header("WWW-Authenticate", value)
    }

    fn token_url(&self, headers: &HeaderMap) -> String {
        if let Some(realm) = &self.config.realm {
            return realm.clone();
        }
        let host = headers
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("localhost");
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{host}/token")
    }

    /// Answers `GET /token`: Basic credentials in, `{"token": ...}` out.
    pub fn issue_token(&self, headers: &HeaderMap) -> Result<Vec<u8>, ApiError> {
        let user = headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|h| self.basic_user(h))
            .ok_or_else(|| {
                let realm = self.config.realm.as_deref().unwrap_or("berth-registry");
                ApiError::new(Code::Unauthorized, "token requests need valid credentials")
                    .with_header("WWW-Authenticate", format!("Basic realm=\"{realm}\""))
            })?;
        let token = hex::encode(rand::random::<[u8; 32]>());
        let ttl = Duration::from_secs(self.config.token_ttl_secs);
        let now = Instant::now();
        if let Ok(mut tokens) = self.tokens.lock() {
            tokens.retain(|_, (_, exp)| *exp > now);
            tokens.insert(token.clone(), (user, now + ttl));
        }
        let body = serde_json::json!({
            "token": token,
            "access_token": token,
            "expires_in": ttl.as_secs(),
            "issued_at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        });
        Ok(body.to_string().into_bytes())
    }

    fn token_valid(&self, token: &str) -> bool {
        let now = Instant::now();
        self.tokens
            .lock()
            .map(|t| t.get(token).is_some_and(|(_, exp)| *exp > now))
            .unwrap_or(false)
    }

    /// The user named by valid `Basic` credentials.
    fn basic_user(&self, header: &str) -> Option<String> {
        let b64 = header.strip_prefix("Basic ")?.trim();
        let decoded = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
        let pair = String::from_utf8(decoded).ok()?;
        let (user, password) = pair.split_once(':')?;
        let key = Algorithm::Sha256.digest(pair.as_bytes()).to_string();
        if let Ok(v) = self.verified.lock() {
            if v.get(&key).is_some_and(|u| u == user) {
                return Some(user.to_string());
            }
        }
        let hash = self.users.get(user)?;
        if !bcrypt::verify(password, hash).unwrap_or(false) {
            return None;
        }
        if let Ok(mut v) = self.verified.lock() {
            v.insert(key, user.to_string());
        }
        Some(user.to_string())
    }
}

/// An htpasswd line (`user:$2b$...`) for `user` and `password`, as `htpasswd -nbB` prints.
pub fn htpasswd_line(user: &str, password: &str) -> Result<String, bcrypt::BcryptError> {
    Ok(format!(
        "{user}:{}",
        bcrypt::hash(password, bcrypt::DEFAULT_COST)?
    ))
}

fn read_htpasswd(path: &Path) -> Result<HashMap<String, String>, AuthError> {
    let text = std::fs::read_to_string(path).map_err(|e| AuthError::Read(path.to_path_buf(), e))?;
    let mut users = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.split_once(':') {
            Some((user, hash)) if hash.starts_with("$2") => {
                users.insert(user.to_string(), hash.to_string());
            }
            _ => return Err(AuthError::Unsupported(path.to_path_buf(), i + 1)),
        }
    }
    Ok(users)
}
