//! Registry commands: `pull`, `push`, `login`, `logout`.
//!
//! Credentials live where the docker CLI keeps them (`$DOCKER_CONFIG/config.json`, else
//! `~/.docker/config.json`, `auths` with base64 `user:password`), so berth and docker share
//! logins. Pull and push send them to the daemon in `X-Registry-Auth`, as the docker CLI
//! does; the daemon never reads the user's config itself.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use berth_image::Reference;
use clap::Args;
use hyper::Method;
use serde_json::{json, Value};

use crate::client::{encode, Client};
use crate::progress::Renderer;

/// Docker Hub's key in config files and its `serveraddress`.
const HUB_SERVER: &str = "https://index.docker.io/v1/";

/// `berth push`.
#[derive(Debug, Args)]
pub struct PushArgs {
    /// Push all tags of an image to the repository
    #[arg(short = 'a', long)]
    pub all_tags: bool,
    /// Suppress verbose output
    #[arg(short, long)]
    pub quiet: bool,
    /// NAME[:TAG]
    pub name: String,
}

/// `berth pull`.
#[derive(Debug, Args)]
pub struct PullArgs {
    /// Set platform if server is multi-platform capable
    #[arg(long)]
    pub platform: Option<String>,
    /// Suppress verbose output
    #[arg(short, long)]
    pub quiet: bool,
    /// NAME[:TAG|@DIGEST]
    pub image: String,
}

/// `berth login`.
#[derive(Debug, Args)]
pub struct LoginArgs {
    /// Username
    #[arg(short, long)]
    pub username: Option<String>,
    /// Password
    #[arg(short, long)]
    pub password: Option<String>,
    /// Take the password from stdin
    #[arg(long)]
    pub password_stdin: bool,
    /// Registry server (Docker Hub when omitted)
    pub server: Option<String>,
}

/// `berth pull NAME[:TAG|@DIGEST]`.
pub async fn pull(c: &Client, a: &PullArgs) -> Result<i32> {
    let r = Reference::parse(&a.image)?;
    if r.tag().is_none() && r.digest().is_none() && !a.quiet {
        println!("Using default tag: latest");
    }
    let r = match (r.tag(), r.digest()) {
        (None, None) => r.with_tag("latest")?,
        _ => r,
    };
    let tag = match (r.digest(), r.tag()) {
        (Some(d), _) => d.to_string(),
        (None, t) => t.unwrap_or("latest").to_string(),
    };
    let mut path = format!(
        "/images/create?fromImage={}&tag={}",
        encode(&r.name()),
        encode(&tag)
    );
    if let Some(p) = &a.platform {
        path.push_str(&format!("&platform={}", encode(p)));
    }
    let auth = registry_auth_header(r.domain()).await?;
    let resp = c
        .request_with_headers(Method::POST, &path, &[("X-Registry-Auth", &auth)])
        .await?;
    let outcome = render_or_drain(resp, a.quiet).await?;
    if let Some(e) = outcome.error {
        eprintln!("Error response from daemon: {e}");
        return Ok(1);
    }
    println!("{r}");
    Ok(0)
}

/// `berth push [-a] [-q] NAME[:TAG]`.
pub async fn push(c: &Client, a: &PushArgs) -> Result<i32> {
    let r = Reference::parse(&a.name)?;
    if r.digest().is_some() {
        bail!("cannot push a digest reference");
    }
    let tag = match (a.all_tags, r.tag()) {
        (true, Some(_)) => bail!("tag can't be used with --all-tags/-a"),
        (true, None) => String::new(),
        (false, Some(t)) => t.to_string(),
        (false, None) => {
            if !a.quiet {
                println!("Using default tag: latest");
            }
            "latest".to_string()
        }
    };
    let path = format!("/images/{}/push?tag={}", r.familiar_name(), encode(&tag));
    let auth = registry_auth_header(r.domain()).await?;
    let resp = c
        .request_with_headers(Method::POST, &path, &[("X-Registry-Auth", &auth)])
        .await?;
    let outcome = render_or_drain(resp, a.quiet).await?;
    if let Some(e) = outcome.error {
        eprintln!("{e}");
        return Ok(1);
    }
    if a.quiet {
        match r.tag() {
            Some(_) => println!("{}", r.familiar()),
            None if a.all_tags => println!("{}", r.familiar_name()),
            None => println!("{}:latest", r.familiar_name()),
        }
    }
    Ok(0)
}

/// Draws the stream, or with `quiet` only reads it for its outcome.
async fn render_or_drain(
    resp: hyper::Response<hyper::body::Incoming>,
    quiet: bool,
) -> Result<crate::progress::Outcome> {
    if quiet {
        Renderer::new(std::io::sink(), false, 80).render(resp).await
    } else {
        Renderer::stdout().render(resp).await
    }
}

/// The `X-Registry-Auth` value for a registry domain: base64url JSON of the stored
/// credentials, or `{}` when there are none.
async fn registry_auth_header(domain: &str) -> Result<String> {
    let domain = domain.to_string();
    // A credential helper may run: off the async thread.
    let creds = tokio::task::spawn_blocking(move || {
        berth_distribution::DockerConfig::load_default()?.lookup(&domain)
    })
    .await
    .context("credential lookup task")??;
    let v = match creds {
        Some(c) => {
            let mut v = json!({"username": c.username, "password": c.password});
            if let Some(t) = c.identity_token {
                v["identitytoken"] = t.into();
            }
            if let Some(t) = c.registry_token {
                v["registrytoken"] = t.into();
            }
            v
        }
        None => json!({}),
    };
    Ok(base64::engine::general_purpose::URL_SAFE.encode(v.to_string()))
}

/// The directory of the docker CLI's config: `$DOCKER_CONFIG`, else `~/.docker`.
fn config_dir() -> Result<PathBuf> {
    if let Some(d) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d));
    }
    let home = std::env::var_os("HOME").context("neither DOCKER_CONFIG nor HOME is set")?;
    Ok(PathBuf::from(home).join(".docker"))
}

/// The key of a server in `auths`: Docker Hub's v1 URL, else the bare `host[:port]`.
fn server_key(server: &str) -> String {
    let s = server
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = s.split('/').next().unwrap_or(s);
    match host {
        "" | "docker.io" | "index.docker.io" | "registry-1.docker.io" => HUB_SERVER.to_string(),
        h => h.to_string(),
    }
}

/// The config file as JSON (an empty object when missing), keeping every field the docker CLI
/// or others wrote.
fn read_config(path: &Path) -> Result<Value> {
    match std::fs::read(path) {
        Ok(data) if data.iter().all(u8::is_ascii_whitespace) => Ok(json!({})),
        Ok(data) => {
            let v: Value = serde_json::from_slice(&data)
                .with_context(|| format!("parse {}", path.display()))?;
            if !v.is_object() {
                bail!("{}: not a JSON object", path.display());
            }
            Ok(v)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(json!({})),
        Err(e) => Err(e).with_context(|| format!("read {}", path.display())),
    }
}

/// Replaces the config file atomically: a 0600 temporary file in the same directory, synced,
/// then renamed over it, so a crash never leaves half a file and secrets are never readable
/// by others, even for a moment.
fn write_config(path: &Path, v: &Value) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let dir = path.parent().context("config path has no directory")?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("create {}", dir.display()))?;
    let tmp = dir.join(format!(".config.json.{}.tmp", std::process::id()));
    let result = (|| -> Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("create {}", tmp.display()))?;
        let mut data = serde_json::to_vec_pretty(v)?;
        data.push(b'\n');
        f.write_all(&data)
            .and_then(|()| f.sync_all())
            .with_context(|| format!("write {}", tmp.display()))?;
        std::fs::rename(&tmp, path)
            .with_context(|| format!("rename {} to {}", tmp.display(), path.display()))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Reads a line from the terminal, with echo off for passwords.
fn prompt(label: &str, secret: bool) -> Result<String> {
    use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
    let stdin = std::io::stdin();
    eprint!("{label}");
    std::io::stderr().flush()?;
    let saved = if secret {
        let saved = tcgetattr(&stdin).context("read terminal settings")?;
        let mut quiet = saved.clone();
        quiet.local_flags.remove(LocalFlags::ECHO);
        tcsetattr(&stdin, SetArg::TCSANOW, &quiet).context("turn off echo")?;
        Some(saved)
    } else {
        None
    };
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    if let Some(saved) = saved {
        let _ = tcsetattr(&stdin, SetArg::TCSANOW, &saved);
        eprintln!();
    }
    read.context("read from the terminal")?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

/// `berth login [-u USER] [-p PASS | --password-stdin] [SERVER]`.
pub async fn login(c: &Client, a: &LoginArgs) -> Result<i32> {
    let server = a.server.clone().unwrap_or_else(|| HUB_SERVER.to_string());
    let key = server_key(&server);
    let path = config_dir()?.join("config.json");
    let interactive = std::io::stdin().is_terminal();

    if a.password.is_some() && a.password_stdin {
        bail!("--password and --password-stdin are mutually exclusive");
    }
    let mut password = a.password.clone();
    if a.password.is_some() {
        eprintln!("WARNING! Using --password via the CLI is insecure. Use --password-stdin.");
    }
    if a.password_stdin {
        if a.username.is_none() {
            bail!("Must provide --username with --password-stdin");
        }
        let mut p = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut p)
            .context("read password from stdin")?;
        password = Some(p.trim_end_matches(['\r', '\n']).to_string());
    }

    // No credentials given: the stored ones, if they still work, as the docker CLI does.
    if a.username.is_none() && password.is_none() {
        let config = read_config(&path)?;
        if let Some((user, pass)) = stored_basic(&config, &key) {
            println!("Authenticating with existing credentials...");
            if check_login(c, &user, &pass, &server).await.is_ok() {
                println!("Login Succeeded");
                return Ok(0);
            }
        }
    }

    let username = match &a.username {
        Some(u) => u.clone(),
        None if interactive => prompt("Username: ", false)?,
        None => bail!("Cannot perform an interactive login from a non TTY device"),
    };
    if username.is_empty() {
        bail!("Username cannot be empty");
    }
    let password = match password {
        Some(p) => p,
        None if interactive => prompt("Password: ", true)?,
        None => bail!("Cannot perform an interactive login from a non TTY device"),
    };
    if password.is_empty() {
        bail!("Password Required");
    }

    let token = check_login(c, &username, &password, &server).await?;
    let mut config = read_config(&path)?;
    let entry = match token.filter(|t| !t.is_empty()) {
        // A registry that hands out refresh tokens: keep the token, not the password.
        Some(t) => json!({
            "auth": base64::engine::general_purpose::STANDARD.encode(format!("{username}:")),
            "identitytoken": t,
        }),
        None => json!({
            "auth": base64::engine::general_purpose::STANDARD
                .encode(format!("{username}:{password}")),
        }),
    };
    if !config["auths"].is_object() {
        config["auths"] = json!({});
    }
    config["auths"][key.as_str()] = entry;
    write_config(&path, &config)?;
    eprintln!(
        "WARNING! Your password will be stored unencrypted in {}.",
        path.display()
    );
    println!("Login Succeeded");
    Ok(0)
}

/// `POST /auth`; the daemon checks the credentials against the registry. Returns the
/// identity token the registry issued, if any.
async fn check_login(
    c: &Client,
    username: &str,
    password: &str,
    server: &str,
) -> Result<Option<String>> {
    let body = json!({"username": username, "password": password, "serveraddress": server});
    let resp = c
        .request(Method::POST, "/auth", Some(body.to_string().into_bytes()))
        .await?;
    let bytes = http_body_util::BodyExt::collect(resp.into_body())
        .await?
        .to_bytes();
    let v: Value = serde_json::from_slice(&bytes).context("decode /auth response")?;
    Ok(v["IdentityToken"].as_str().map(str::to_string))
}

/// `user:password` stored for `key` in `auths`.
fn stored_basic(config: &Value, key: &str) -> Option<(String, String)> {
    let auth = config["auths"][key]["auth"].as_str()?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .ok()?;
    let raw = String::from_utf8(raw).ok()?;
    let (u, p) = raw.split_once(':')?;
    (!u.is_empty() && !p.is_empty()).then(|| (u.to_string(), p.to_string()))
}

/// `berth logout [SERVER]`: forget the stored credentials. Needs no daemon.
pub fn logout(server: Option<&str>) -> Result<i32> {
    let server = server.unwrap_or(HUB_SERVER);
    let key = server_key(server);
    let path = config_dir()?.join("config.json");
    let mut config = read_config(&path)?;
    let mut removed = false;
    if let Some(auths) = config.get_mut("auths").and_then(Value::as_object_mut) {
        // Entries the docker CLI wrote with a scheme (`http://host:5000`) count too.
        auths.retain(|k, _| {
            let keep = server_key(k) != key;
            removed |= !keep;
            keep
        });
    }
    if !removed {
        println!("Not logged in to {server}");
        return Ok(0);
    }
    println!("Removing login credentials for {server}");
    write_config(&path, &config)?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_keys() {
        assert_eq!(server_key(""), HUB_SERVER);
        assert_eq!(server_key("docker.io"), HUB_SERVER);
        assert_eq!(server_key(HUB_SERVER), HUB_SERVER);
        assert_eq!(server_key("http://127.0.0.1:5000"), "127.0.0.1:5000");
        assert_eq!(server_key("reg.example/v2/"), "reg.example");
    }

    #[test]
    fn config_round_trip_keeps_other_fields_and_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("config.json");
        assert_eq!(read_config(&path).unwrap(), json!({}));
        let mut v = json!({"psFormat": "table {{.ID}}", "auths": {}});
        v["auths"]["127.0.0.1:5000"] = json!({"auth": "YTpi"});
        write_config(&path, &v).unwrap();
        let back = read_config(&path).unwrap();
        assert_eq!(back, v);
        assert_eq!(
            stored_basic(&back, "127.0.0.1:5000"),
            Some(("a".to_string(), "b".to_string()))
        );
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // No temporary file left behind.
        assert_eq!(
            std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
            1
        );
    }
}
