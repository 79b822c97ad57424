//! Credentials: the Docker config file (`~/.docker/config.json`, `auths` with base64
//! `user:password` in `auth`), the `X-Registry-Auth` shape the daemon receives, and parsing
//! of `WWW-Authenticate` challenges.

use std::collections::HashMap;
use std::path::Path;

use base64::Engine as _;
use serde::Deserialize;

use crate::error::{Error, Result};

/// Credentials for one registry.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Credentials {
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub password: String,
    /// An OAuth2 refresh token (`identitytoken` in the config file); sent to the token
    /// endpoint instead of the password.
    #[serde(default, alias = "identitytoken")]
    pub identity_token: Option<String>,
    /// A bearer token used as is (`registrytoken`).
    #[serde(default, alias = "registrytoken")]
    pub registry_token: Option<String>,
}

impl std::fmt::Debug for Credentials {
    // Never print secrets into logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    pub fn basic(username: impl Into<String>, password: impl Into<String>) -> Self {
        Credentials {
            username: username.into(),
            password: password.into(),
            ..Default::default()
        }
    }

    /// Decode the daemon's `X-Registry-Auth` header (base64url JSON of
    /// `{"username","password","serveraddress","identitytoken","registrytoken"}`).
    pub fn from_registry_auth_header(value: &str) -> Result<Credentials> {
        let bad = |reason: String| Error::Config {
            path: "X-Registry-Auth".into(),
            reason,
        };
        let v = value.trim();
        let raw = base64::engine::general_purpose::URL_SAFE
            .decode(v)
            .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(v))
            .or_else(|_| base64::engine::general_purpose::STANDARD.decode(v))
            .map_err(|e| bad(e.to_string()))?;
        serde_json::from_slice(&raw).map_err(|e| bad(e.to_string()))
    }

    pub(crate) fn basic_header(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.username.is_empty()
            && self.password.is_empty()
            && self.identity_token.is_none()
            && self.registry_token.is_none()
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConfigFile {
    #[serde(default)]
    auths: HashMap<String, AuthEntry>,
    /// `docker-credential-<name>` for every registry.
    #[serde(default)]
    creds_store: Option<String>,
    /// `docker-credential-<name>` per registry.
    #[serde(default)]
    cred_helpers: HashMap<String, String>,
}

#[derive(Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
    #[serde(default)]
    registrytoken: Option<String>,
}

/// The `auths` of a Docker config file, by registry host.
#[derive(Debug, Clone, Default)]
pub struct DockerConfig {
    auths: HashMap<String, Credentials>,
    creds_store: Option<String>,
    cred_helpers: HashMap<String, String>,
}

/// Docker Hub's key in config files.
const HUB_CONFIG_KEY: &str = "https://index.docker.io/v1/";

/// `https://host:5000/v1/` → `host:5000`; Docker Hub's spellings all become `docker.io`.
fn normalise_server(server: &str) -> String {
    let s = server
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = s.split('/').next().unwrap_or(s);
    match host {
        "index.docker.io" | "registry-1.docker.io" | "docker.io" => "docker.io".to_string(),
        h => h.to_string(),
    }
}

impl DockerConfig {
    /// Read `path`; a missing file is an empty config (as the docker CLI treats it).
    pub fn load(path: &Path) -> Result<DockerConfig> {
        let err = |reason: String| Error::Config {
            path: path.display().to_string(),
            reason,
        };
        let data = match std::fs::read(path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(DockerConfig::default())
            }
            Err(e) => return Err(err(e.to_string())),
        };
        Self::parse(&data).map_err(err)
    }

    /// `$DOCKER_CONFIG/config.json`, else `$HOME/.docker/config.json`.
    pub fn load_default() -> Result<DockerConfig> {
        let dir = match std::env::var_os("DOCKER_CONFIG") {
            Some(d) => std::path::PathBuf::from(d),
            None => match std::env::var_os("HOME") {
                Some(h) => std::path::PathBuf::from(h).join(".docker"),
                None => return Ok(DockerConfig::default()),
            },
        };
        Self::load(&dir.join("config.json"))
    }

    fn parse(data: &[u8]) -> std::result::Result<DockerConfig, String> {
        let file: ConfigFile = serde_json::from_slice(data).map_err(|e| e.to_string())?;
        let mut auths = HashMap::new();
        for (server, entry) in file.auths {
            let mut creds = Credentials {
                username: entry.username.unwrap_or_default(),
                password: entry.password.unwrap_or_default(),
                identity_token: entry.identitytoken.filter(|t| !t.is_empty()),
                registry_token: entry.registrytoken.filter(|t| !t.is_empty()),
            };
            if let Some(auth) = entry.auth.filter(|a| !a.is_empty()) {
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(auth.trim())
                    .map_err(|e| format!("auths[{server:?}].auth: {e}"))?;
                let raw = String::from_utf8(raw)
                    .map_err(|_| format!("auths[{server:?}].auth is not utf-8"))?;
                let (u, p) = raw
                    .split_once(':')
                    .ok_or_else(|| format!("auths[{server:?}].auth is not user:password"))?;
                creds.username = u.to_string();
                creds.password = p.to_string();
            }
            let key = if server == HUB_CONFIG_KEY {
                "docker.io".to_string()
            } else {
                normalise_server(&server)
            };
            auths.insert(key, creds);
        }
        Ok(DockerConfig {
            auths,
            creds_store: file.creds_store.filter(|s| !s.is_empty()),
            cred_helpers: file
                .cred_helpers
                .into_iter()
                .map(|(k, v)| (normalise_server(&k), v))
                .collect(),
        })
    }

    /// Credentials for a registry domain as written in references (`docker.io`, `host:5000`).
    pub fn credentials_for(&self, domain: &str) -> Option<&Credentials> {
        self.auths.get(&normalise_server(domain))
    }

    /// Credentials for a registry domain, asking the configured credential helper
    /// (`credHelpers`, else `credsStore`) first, as the docker CLI does, then `auths`.
    /// Runs the helper, so call it off the async threads.
    pub fn lookup(&self, domain: &str) -> Result<Option<Credentials>> {
        let key = normalise_server(domain);
        let helper = self.cred_helpers.get(&key).or(self.creds_store.as_ref());
        if let Some(h) = helper {
            // Docker Hub is stored under its v1 URL by every helper.
            let server = if key == "docker.io" {
                HUB_CONFIG_KEY
            } else {
                key.as_str()
            };
            if let Some(c) = run_helper(h, server)? {
                return Ok(Some(c));
            }
        }
        Ok(self.auths.get(&key).cloned())
    }
}

/// `docker-credential-<helper> get` with the server on stdin; `None` when it has nothing.
fn run_helper(helper: &str, server: &str) -> Result<Option<Credentials>> {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    let program = format!("docker-credential-{helper}");
    let err = |reason: String| Error::Config {
        path: program.clone(),
        reason,
    };
    let mut child = Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| err(format!("run: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(server.as_bytes())
            .map_err(|e| err(format!("write server: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| err(format!("wait: {e}")))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // The helper protocol's "no such entry" answer.
        if stdout.contains("credentials not found") {
            return Ok(None);
        }
        return Err(err(format!("get {server}: {}", stdout.trim())));
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct HelperAnswer {
        #[serde(default)]
        username: String,
        #[serde(default)]
        secret: String,
    }
    let a: HelperAnswer =
        serde_json::from_slice(&out.stdout).map_err(|e| err(format!("answer: {e}")))?;
    // Helpers return `<token>` as the username for identity tokens.
    Ok(Some(if a.username == "<token>" {
        Credentials {
            identity_token: Some(a.secret),
            ..Default::default()
        }
    } else {
        Credentials::basic(a.username, a.secret)
    }))
}

/// The credentials for pulling or pushing `reference`: the `X-Registry-Auth` header when it
/// carries any (the docker CLI sends `e30=`, i.e. `{}`, when it has none), else the config
/// file's credential helper or entry for the reference's registry (see
/// [`DockerConfig::lookup`]; this may run a helper program).
pub fn resolve_credentials(
    reference: &str,
    registry_auth_header: Option<&str>,
    config: &DockerConfig,
) -> Result<Option<Credentials>> {
    if let Some(h) = registry_auth_header.filter(|h| !h.trim().is_empty()) {
        let c = Credentials::from_registry_auth_header(h)?;
        if !c.is_empty() {
            return Ok(Some(c));
        }
    }
    let r = berth_image::Reference::parse(reference)?;
    config.lookup(r.domain())
}

/// One parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Challenge {
    /// Lowercased scheme: `basic` or `bearer`.
    pub scheme: String,
    pub params: HashMap<String, String>,
}

/// Parse `Bearer realm="…",service="…",scope="…"` (RFC 7235 auth-params; quoted strings with
/// backslash escapes; only the first challenge is used, which is what registries send).
pub(crate) fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = match header.split_once(char::is_whitespace) {
        Some((s, r)) => (s, r),
        None => (header, ""),
    };
    if scheme.is_empty() {
        return None;
    }
    let mut params = HashMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() || c == ',' {
                break;
            }
            key.push(c);
            chars.next();
        }
        if key.is_empty() {
            break;
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek() != Some(&'=') {
            // A token68 or a second challenge's scheme: stop at what we have.
            break;
        }
        chars.next();
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        if let Some(n) = chars.next() {
                            value.push(n);
                        }
                    }
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' || c.is_whitespace() {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        params.insert(key.to_ascii_lowercase(), value);
    }
    Some(Challenge {
        scheme: scheme.to_ascii_lowercase(),
        params,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_challenge() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull,push""#,
        )
        .unwrap();
        assert_eq!(c.scheme, "bearer");
        assert_eq!(c.params["realm"], "https://auth.docker.io/token");
        assert_eq!(c.params["service"], "registry.docker.io");
        assert_eq!(c.params["scope"], "repository:library/busybox:pull,push");
        let b = parse_challenge(r#"Basic realm="a \"quoted\" realm""#).unwrap();
        assert_eq!(b.scheme, "basic");
        assert_eq!(b.params["realm"], r#"a "quoted" realm"#);
        assert!(parse_challenge("").is_none());
    }

    #[test]
    fn reads_docker_config() {
        let cfg = DockerConfig::parse(
            br#"{"auths":{
                "https://index.docker.io/v1/":{"auth":"dXNlcjpwYTpzcw=="},
                "127.0.0.1:5000":{"auth":"YTpi"},
                "https://quay.io":{"identitytoken":"tok"}}}"#,
        )
        .unwrap();
        let hub = cfg.credentials_for("docker.io").unwrap();
        assert_eq!(
            (hub.username.as_str(), hub.password.as_str()),
            ("user", "pa:ss")
        );
        assert_eq!(cfg.credentials_for("127.0.0.1:5000").unwrap().password, "b");
        assert_eq!(
            cfg.credentials_for("quay.io")
                .unwrap()
                .identity_token
                .as_deref(),
            Some("tok")
        );
        assert!(cfg.credentials_for("example.com").is_none());
        assert!(DockerConfig::parse(br#"{"auths":{"x":{"auth":"!!"}}}"#).is_err());
    }

    #[test]
    fn resolves_header_then_config() {
        let cfg = DockerConfig::parse(br#"{"auths":{"reg:5000":{"auth":"YTpi"}}}"#).unwrap();
        let empty = base64::engine::general_purpose::URL_SAFE.encode(b"{}");
        let c = resolve_credentials("reg:5000/x/y:1", Some(&empty), &cfg).unwrap();
        assert_eq!(c, Some(Credentials::basic("a", "b")));
        let h =
            base64::engine::general_purpose::URL_SAFE.encode(br#"{"username":"u","password":"p"}"#);
        let c = resolve_credentials("reg:5000/x/y:1", Some(&h), &cfg).unwrap();
        assert_eq!(c, Some(Credentials::basic("u", "p")));
        assert_eq!(resolve_credentials("busybox", None, &cfg).unwrap(), None);
    }

    #[test]
    fn decodes_registry_auth_header() {
        let h = base64::engine::general_purpose::URL_SAFE
            .encode(br#"{"username":"u","password":"p","serveraddress":"h"}"#);
        let c = Credentials::from_registry_auth_header(&h).unwrap();
        assert_eq!(c, Credentials::basic("u", "p"));
    }
}
