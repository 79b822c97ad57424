//! The HTTP side: registry host mapping, plain-HTTP policy for insecure registries, docker.io
//! mirrors, and the authentication dance (anonymous → challenge → basic or bearer token, with
//! tokens cached per registry and scope).
//!
//! Built on reqwest (rustls, no openssl) rather than `oci-client`: the pull path needs raw
//! byte streams it can resume with `Range` and feed into `berth_image::Store::put_layer`, byte
//! counts for Docker-shaped progress, mirrors and Docker's insecure-registry rules, none of
//! which `oci-client` exposes without buffering or re-implementing around it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, WWW_AUTHENTICATE};
use reqwest::{RequestBuilder, Response, StatusCode};
use serde::Deserialize;

use crate::auth::{parse_challenge, Challenge, Credentials};
use crate::error::{http, Error, Result};

/// Where Docker Hub's API lives.
pub const DOCKER_HUB_REGISTRY: &str = "registry-1.docker.io";
/// Redirects followed per request (blob GETs are commonly redirected to object storage).
pub const MAX_REDIRECTS: usize = 5;
/// How long an HTTPS probe of an insecure registry may take before plain HTTP is tried.
pub const HTTPS_PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Registry settings, the daemon.json `insecure-registries` / `registry-mirrors` equivalents.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// Hosts (`host[:port]`) or CIDRs (`10.0.0.0/8`) that may be reached over plain HTTP or
    /// HTTPS with an unverified certificate. 127.0.0.0/8 and ::1 are always insecure, as in
    /// Docker.
    pub insecure_registries: Vec<String>,
    /// Mirrors for docker.io pulls (`https://mirror.example`), tried in order before Hub.
    pub mirrors: Vec<String>,
    /// Layers downloaded at once per pull.
    pub max_concurrent_downloads: usize,
    /// Layers uploaded at once per push.
    pub max_concurrent_uploads: usize,
    /// Request timeout for everything but blob bodies (which may take long).
    pub connect_timeout: Duration,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            insecure_registries: Vec::new(),
            mirrors: Vec::new(),
            max_concurrent_downloads: 3,
            max_concurrent_uploads: 5,
            connect_timeout: Duration::from_secs(30),
        }
    }
}

/// How to reach one registry: base URL (`https://host:port`) and the challenge seen there.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    pub base: String,
    /// The `Host` part as written in references (`docker.io`, `localhost:5000`).
    pub domain: String,
    challenge: Option<Challenge>,
}

#[derive(Deserialize)]
struct TokenResponse {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// A registry client shared by all pulls and pushes of a daemon (it caches endpoints and
/// tokens). Cheap to share behind an `Arc`.
pub struct Client {
    pub(crate) config: RegistryConfig,
    secure: reqwest::Client,
    insecure: reqwest::Client,
    endpoints: Mutex<HashMap<String, Endpoint>>,
    tokens: Mutex<HashMap<(String, String), (String, Instant)>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn build_http(config: &RegistryConfig, accept_invalid: bool) -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::limited(MAX_REDIRECTS))
        .connect_timeout(config.connect_timeout)
        .danger_accept_invalid_certs(accept_invalid)
        .build()
        .map_err(http("client setup"))
}

impl Client {
    pub fn new(config: RegistryConfig) -> Result<Client> {
        Ok(Client {
            secure: build_http(&config, false)?,
            insecure: build_http(&config, true)?,
            config,
            endpoints: Mutex::new(HashMap::new()),
            tokens: Mutex::new(HashMap::new()),
        })
    }

    /// Whether `host[:port]` may be used without verified TLS.
    pub fn is_insecure(&self, domain: &str) -> bool {
        let host = host_part(domain);
        if host == "localhost" {
            return true;
        }
        if let Ok(ip) = host.parse::<IpAddr>() {
            if ip.is_loopback() {
                return true;
            }
            if self
                .config
                .insecure_registries
                .iter()
                .any(|c| cidr_contains(c, ip))
            {
                return true;
            }
        }
        self.config
            .insecure_registries
            .iter()
            .any(|r| r == domain || r == host)
    }

    fn http_for(&self, domain: &str) -> &reqwest::Client {
        if self.is_insecure(domain) {
            &self.insecure
        } else {
            &self.secure
        }
    }

    /// The hosts to try for `domain`: mirrors first for docker.io.
    pub(crate) fn pull_domains(&self, domain: &str) -> Vec<String> {
        let mut out = Vec::new();
        if domain == berth_image::reference::DEFAULT_DOMAIN {
            for m in &self.config.mirrors {
                out.push(m.trim_end_matches('/').to_string());
            }
        }
        out.push(domain.to_string());
        out
    }

    /// Resolve (and cache) how to talk to a registry: ping `/v2/` over HTTPS, falling back to
    /// plain HTTP for insecure registries, and remember the auth challenge.
    pub(crate) async fn endpoint(&self, domain: &str) -> Result<Endpoint> {
        if let Some(e) = self.lock_endpoints().get(domain) {
            return Ok(e.clone());
        }
        let (explicit_scheme, host) = match domain.split_once("://") {
            Some((s, h)) => (Some(s), h),
            None => (None, domain),
        };
        let host = if host == berth_image::reference::DEFAULT_DOMAIN {
            DOCKER_HUB_REGISTRY
        } else {
            host
        };
        let schemes: &[&str] = match explicit_scheme {
            Some("http") => &["http"],
            Some(_) => &["https"],
            None if self.is_insecure(host) => &["https", "http"],
            None => &["https"],
        };
        let mut last = None;
        for (i, scheme) in schemes.iter().enumerate() {
            let base = format!("{scheme}://{host}");
            let url = format!("{base}/v2/");
            let mut req = self.http_for(host).get(&url);
            if i + 1 < schemes.len() {
                // A plain-HTTP server may never answer a TLS hello: do not wait long before
                // falling back.
                req = req.timeout(HTTPS_PROBE_TIMEOUT);
            }
            match req.send().await {
                Ok(resp) => {
                    let challenge = if resp.status() == StatusCode::UNAUTHORIZED {
                        resp.headers()
                            .get(WWW_AUTHENTICATE)
                            .and_then(|v| v.to_str().ok())
                            .and_then(parse_challenge)
                    } else {
                        None
                    };
                    let ep = Endpoint {
                        base,
                        domain: host.to_string(),
                        challenge,
                    };
                    self.lock_endpoints().insert(domain.to_string(), ep.clone());
                    return Ok(ep);
                }
                Err(e) => last = Some(Error::Http { url, source: e }),
            }
        }
        Err(last.unwrap_or_else(|| Error::Invalid {
            what: domain.to_string(),
            reason: "no scheme to try".into(),
        }))
    }

    fn lock_endpoints(&self) -> std::sync::MutexGuard<'_, HashMap<String, Endpoint>> {
        self.endpoints.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_tokens(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<(String, String), (String, Instant)>> {
        self.tokens.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Send a request built by `build` (called again for the authenticated retry, so bodies
    /// must be re-creatable), answering one auth challenge. `scope` is the bearer scope
    /// (`repository:a/b:pull`).
    pub(crate) async fn send(
        &self,
        ep: &Endpoint,
        creds: Option<&Credentials>,
        scope: &str,
        build: impl Fn(&reqwest::Client) -> RequestBuilder,
    ) -> Result<Response> {
        let http = self.http_for(&ep.domain);
        let mut auth = self.cached_auth(ep, creds, scope);
        let mut challenge_answered = false;
        loop {
            let mut req = build(http);
            if let Some(a) = &auth {
                req = req.header(AUTHORIZATION, a.clone());
            }
            let req = req.build().map_err(crate::error::http(&ep.base))?;
            let url = req.url().to_string();
            let resp = http.execute(req).await.map_err(|e| Error::Http {
                url: url.clone(),
                source: e,
            })?;
            if resp.status() != StatusCode::UNAUTHORIZED || challenge_answered {
                if resp.status() == StatusCode::UNAUTHORIZED {
                    return Err(Error::Unauthorized(url));
                }
                return Ok(resp);
            }
            challenge_answered = true;
            let challenge = resp
                .headers()
                .get(WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_challenge)
                .or_else(|| ep.challenge.clone())
                .ok_or_else(|| Error::Unauthorized(url.clone()))?;
            auth = Some(self.answer(ep, creds, scope, &challenge, &url).await?);
        }
    }

    /// An Authorization value usable without a round trip: a cached token for the scope, or
    /// basic credentials for a registry known to want them.
    fn cached_auth(
        &self,
        ep: &Endpoint,
        creds: Option<&Credentials>,
        scope: &str,
    ) -> Option<HeaderValue> {
        if let Some((tok, exp)) = self.lock_tokens().get(&token_key(ep, scope, creds)) {
            if *exp > Instant::now() {
                return HeaderValue::from_str(&format!("Bearer {tok}")).ok();
            }
        }
        match (&ep.challenge, creds) {
            (Some(c), Some(cr)) if c.scheme == "basic" && !cr.is_empty() => {
                HeaderValue::from_str(&cr.basic_header()).ok()
            }
            _ => None,
        }
    }

    async fn answer(
        &self,
        ep: &Endpoint,
        creds: Option<&Credentials>,
        scope: &str,
        challenge: &Challenge,
        url: &str,
    ) -> Result<HeaderValue> {
        let creds = creds.filter(|c| !c.is_empty());
        let value = match challenge.scheme.as_str() {
            "basic" => match creds {
                Some(c) => c.basic_header(),
                None => return Err(Error::Unauthorized(url.to_string())),
            },
            "bearer" => {
                if let Some(t) = creds.and_then(|c| c.registry_token.as_ref()) {
                    format!("Bearer {t}")
                } else {
                    let tok = self.fetch_token(ep, creds, scope, challenge).await?;
                    format!("Bearer {tok}")
                }
            }
            _ => {
                return Err(Error::Challenge {
                    url: url.to_string(),
                    challenge: challenge.scheme.clone(),
                })
            }
        };
        HeaderValue::from_str(&value).map_err(|e| Error::Invalid {
            what: "authorization header".into(),
            reason: e.to_string(),
        })
    }

    /// The token endpoint (docker/distribution token spec): GET realm?service=&scope= with
    /// basic credentials if any; identity tokens are posted as an OAuth2 refresh grant.
    async fn fetch_token(
        &self,
        ep: &Endpoint,
        creds: Option<&Credentials>,
        scope: &str,
        challenge: &Challenge,
    ) -> Result<String> {
        let realm = challenge
            .params
            .get("realm")
            .ok_or_else(|| Error::Challenge {
                url: ep.base.clone(),
                challenge: "bearer challenge without realm".into(),
            })?;
        let service = challenge.params.get("service").cloned().unwrap_or_default();
        let realm_host = reqwest::Url::parse(realm)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .unwrap_or_default();
        let http = self.http_for(&realm_host);
        let req = if let Some(rt) = creds.and_then(|c| c.identity_token.as_ref()) {
            http.post(realm).form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", rt.as_str()),
                ("service", service.as_str()),
                ("scope", scope),
                ("client_id", "berth"),
            ])
        } else {
            // Several scopes (a mount needs pull on the source too) go as repeated params.
            let mut q: Vec<(&str, &str)> = vec![("service", service.as_str())];
            for s in scope.split(' ').filter(|s| !s.is_empty()) {
                q.push(("scope", s));
            }
            let mut r = http.get(realm).query(&q);
            if let Some(c) = creds {
                r = r.header(AUTHORIZATION, c.basic_header());
            }
            r
        };
        let resp = req.send().await.map_err(crate::error::http(realm))?;
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(Error::Unauthorized(realm.clone()));
        }
        if !status.is_success() {
            return Err(status_error("token request", resp).await);
        }
        let body = read_bounded(resp, 1 << 20, realm).await?;
        let t: TokenResponse = serde_json::from_slice(&body).map_err(|e| Error::Invalid {
            what: format!("token response from {realm}"),
            reason: e.to_string(),
        })?;
        let token = t
            .token
            .or(t.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Error::Invalid {
                what: format!("token response from {realm}"),
                reason: "no token".into(),
            })?;
        // Spec minimum lifetime is 60 s; keep a margin so a token never expires mid-request.
        let ttl = t.expires_in.unwrap_or(60).max(60) - 10;
        self.lock_tokens().insert(
            token_key(ep, scope, creds),
            (token.clone(), Instant::now() + Duration::from_secs(ttl)),
        );
        Ok(token)
    }

    /// `docker login`: check credentials against `GET /v2/` (and the token endpoint if the
    /// registry uses bearer tokens). Returns Docker's status text.
    pub async fn login(&self, server: &str, creds: &Credentials) -> Result<String> {
        let domain = normalise_login_server(server);
        let ep = self.endpoint(&domain).await?;
        let url = format!("{}/v2/", ep.base);
        let refused = |url: &str| Error::LoginFailed {
            url: url.to_string(),
        };
        let resp = match self.send(&ep, Some(creds), "", |h| h.get(&url)).await {
            // Refused at `/v2/` or at the token endpoint: either way the credentials are bad.
            Err(Error::Unauthorized(_)) => return Err(refused(&url)),
            other => other?,
        };
        if resp.status() == StatusCode::UNAUTHORIZED {
            return Err(refused(&url));
        }
        if !resp.status().is_success() {
            return Err(status_error("login", resp).await);
        }
        Ok("Login Succeeded".to_string())
    }
}

/// The token cache key: registry, scope, and whose credentials earned the token, so one
/// client's token never serves another's request (nor a login with a wrong password).
fn token_key(ep: &Endpoint, scope: &str, creds: Option<&Credentials>) -> (String, String) {
    use sha2::Digest as _;
    let who = creds.filter(|c| !c.is_empty()).map(|c| {
        let mut h = sha2::Sha256::new();
        for part in [
            c.username.as_str(),
            c.password.as_str(),
            c.identity_token.as_deref().unwrap_or(""),
            c.registry_token.as_deref().unwrap_or(""),
        ] {
            h.update(part.len().to_le_bytes());
            h.update(part.as_bytes());
        }
        hex::encode(h.finalize())
    });
    (
        ep.base.clone(),
        format!("{scope}\n{}", who.unwrap_or_default()),
    )
}

/// `https://index.docker.io/v1/` and friends → `docker.io`; `https://h:5000` → `h:5000`.
pub(crate) fn normalise_login_server(server: &str) -> String {
    let s = server
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = s.split('/').next().unwrap_or(s);
    match host {
        "" | "index.docker.io" | "registry-1.docker.io" => "docker.io".to_string(),
        h => h.to_string(),
    }
}

fn host_part(domain: &str) -> &str {
    if let Some(rest) = domain.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match domain.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => domain,
    }
}

fn cidr_contains(cidr: &str, ip: IpAddr) -> bool {
    let Some((net, bits)) = cidr.split_once('/') else {
        return false;
    };
    let (Ok(net), Ok(bits)) = (net.parse::<IpAddr>(), bits.parse::<u32>()) else {
        return false;
    };
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(i)) if bits <= 32 => {
            let mask = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - bits)
            };
            u32::from(n) & mask == u32::from(i) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(i)) if bits <= 128 => {
            let mask = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - bits)
            };
            u128::from(n) & mask == u128::from(i) & mask
        }
        _ => false,
    }
}

/// Read a whole (small) body, refusing more than `limit` bytes.
pub(crate) async fn read_bounded(mut resp: Response, limit: u64, what: &str) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(http(what))? {
        if out.len() as u64 + chunk.len() as u64 > limit {
            return Err(Error::BlobSize {
                digest: what.to_string(),
                reason: format!("body is longer than {limit} bytes"),
            });
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// Turn an unexpected response into an error carrying the registry's error text.
pub(crate) async fn status_error(what: &str, resp: Response) -> Error {
    let status = resp.status().as_u16();
    let body = read_bounded(resp, 4096, what)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    Error::Status {
        what: what.to_string(),
        status,
        body,
    }
}

pub(crate) fn header_str<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insecure_rules() {
        let c = Client::new(RegistryConfig {
            insecure_registries: vec!["reg.local:5000".into(), "10.1.0.0/16".into()],
            ..Default::default()
        })
        .unwrap();
        assert!(c.is_insecure("127.0.0.1:5000"));
        assert!(c.is_insecure("127.4.5.6"));
        assert!(c.is_insecure("localhost:5000"));
        assert!(c.is_insecure("[::1]:5000"));
        assert!(c.is_insecure("reg.local:5000"));
        assert!(c.is_insecure("10.1.200.3:443"));
        assert!(!c.is_insecure("10.2.0.1"));
        assert!(!c.is_insecure("docker.io"));
        assert!(!c.is_insecure("reg.local:5001"));
    }

    #[test]
    fn tokens_are_cached_per_credentials() {
        let ep = Endpoint {
            base: "http://r".into(),
            domain: "r".into(),
            challenge: None,
        };
        let scope = "repository:a:pull";
        let alice = Credentials::basic("alice", "right");
        let wrong = Credentials::basic("alice", "wrong");
        assert_ne!(
            token_key(&ep, scope, Some(&alice)),
            token_key(&ep, scope, Some(&wrong))
        );
        assert_ne!(
            token_key(&ep, scope, Some(&alice)),
            token_key(&ep, scope, None)
        );
        assert_eq!(
            token_key(&ep, scope, None),
            token_key(&ep, scope, Some(&Credentials::default()))
        );
    }

    #[test]
    fn login_server_names() {
        assert_eq!(
            normalise_login_server("https://index.docker.io/v1/"),
            "docker.io"
        );
        assert_eq!(normalise_login_server(""), "docker.io");
        assert_eq!(
            normalise_login_server("http://127.0.0.1:5000"),
            "127.0.0.1:5000"
        );
    }
}
