//! Container filesystem commands: `cp`, `export`, `diff`, `commit`.
//!
//! `cp` follows the docker CLI: the daemon archives and extracts (`/containers/{id}/archive`),
//! and the client decides where the archive's top-level entry lands (into an existing
//! directory, or renamed to a destination that does not exist yet) and reads or writes the
//! local side. Local archives are built and unpacked with `berth-image`'s
//! [`berth_image::ContainerFs`] rooted at the local directory, so an archive from a container
//! cannot write outside the destination directory either.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine;
use berth_image::{ContainerFs, ExtractOptions};
use bytes::Bytes;
use clap::{ArgAction, Args};
use http_body_util::BodyExt;
use hyper::{Method, StatusCode};
use serde_json::Value;
use tokio::sync::mpsc;

use super::human_size;
use crate::client::{encode, ApiError, Client};

/// `berth cp` flags.
#[derive(Debug, Args)]
pub struct CpArgs {
    /// Archive mode (copy all uid/gid information)
    #[arg(short, long)]
    archive: bool,
    /// Always follow symbol link in SRC_PATH
    #[arg(short = 'L', long)]
    follow_link: bool,
    /// Suppress progress output during copy
    #[arg(short, long)]
    quiet: bool,
    /// CONTAINER:SRC_PATH or SRC_PATH|-
    src: String,
    /// DEST_PATH|- or CONTAINER:DEST_PATH
    dst: String,
}

/// `berth commit` flags.
#[derive(Debug, Args)]
pub struct CommitArgs {
    /// Author (e.g., "John Hannibal Smith <hannibal@a-team.com>")
    #[arg(short, long)]
    author: Option<String>,
    /// Apply Dockerfile instruction to the created image
    #[arg(short, long = "change")]
    change: Vec<String>,
    /// Commit message
    #[arg(short, long)]
    message: Option<String>,
    /// Pause container during commit
    #[arg(short, long, default_value_t = true, num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set)]
    pause: bool,
    /// Container
    container: String,
    /// Repository and tag
    reference: Option<String>,
}

/// A path's stat as the daemon reports it in `X-Docker-Container-Path-Stat`.
#[derive(Debug, Default)]
struct PathStat {
    mode: u64,
    link_target: String,
}

const GO_MODE_DIR: u64 = 1 << 31;
const GO_MODE_SYMLINK: u64 = 1 << 27;

impl PathStat {
    fn is_dir(&self) -> bool {
        self.mode & GO_MODE_DIR != 0
    }

    fn is_symlink(&self) -> bool {
        self.mode & GO_MODE_SYMLINK != 0
    }
}

fn decode_stat(header: Option<&hyper::header::HeaderValue>) -> PathStat {
    let json = header
        .and_then(|h| h.to_str().ok())
        .and_then(|h| base64::engine::general_purpose::STANDARD.decode(h).ok())
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .unwrap_or_default();
    PathStat {
        mode: json["mode"].as_u64().unwrap_or(0),
        link_target: json["linkTarget"].as_str().unwrap_or("").to_string(),
    }
}

/// `HEAD /containers/{id}/archive`; `Ok(None)` when the path does not exist.
async fn stat_path(c: &Client, container: &str, path: &str) -> Result<Option<PathStat>> {
    let url = format!(
        "/containers/{}/archive?path={}",
        encode(container),
        encode(path)
    );
    match c.request(Method::HEAD, &url, None).await {
        Ok(resp) => Ok(Some(decode_stat(
            resp.headers().get("X-Docker-Container-Path-Stat"),
        ))),
        Err(err) => match err.downcast_ref::<ApiError>() {
            Some(e) if e.status == StatusCode::NOT_FOUND => Ok(None),
            _ => Err(err),
        },
    }
}

/// Docker's split of a `cp` argument: `CONTAINER:PATH`, or a local path (absolute, or whose
/// part before the colon starts with a dot, or without a colon).
fn split_cp_arg(arg: &str) -> (Option<&str>, &str) {
    if arg.starts_with('/') {
        return (None, arg);
    }
    match arg.split_once(':') {
        Some((c, p)) if !c.starts_with('.') => (Some(c), p),
        _ => (None, arg),
    }
}

/// The last element of a path as `filepath.Base` gives it (`.` for `dir/.`).
fn base_name(path: &str) -> String {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        return "/".into();
    }
    trimmed.rsplit('/').next().unwrap_or(trimmed).to_string()
}

/// The directory holding a path's last element (`filepath.Dir` of the cleaned path).
fn dir_name(path: &str) -> String {
    let trimmed = path.trim_end_matches('/');
    match trimmed.rfind('/') {
        Some(0) => "/".into(),
        Some(i) => trimmed[..i].to_string(),
        None => ".".into(),
    }
}

/// A path ending in `/` or `/.` asserts that it is a directory.
fn asserts_dir(path: &str) -> bool {
    path.ends_with('/') || path.ends_with("/.") || path == "."
}

/// `berth cp` / `berth container cp`.
pub async fn cp(c: &Client, a: &CpArgs) -> Result<i32> {
    let (src_ctr, src_path) = split_cp_arg(&a.src);
    let (dst_ctr, dst_path) = split_cp_arg(&a.dst);
    if src_path.is_empty() || dst_path.is_empty() {
        bail!("filepath can not be empty");
    }
    match (src_ctr, dst_ctr) {
        (Some(_), Some(_)) => bail!("copying between containers is not supported"),
        (None, None) => bail!("must specify at least one container source"),
        (Some(ctr), None) => copy_from_container(c, a, ctr, src_path, dst_path).await,
        (None, Some(ctr)) => copy_to_container(c, a, ctr, src_path, dst_path).await,
    }
}

/// Prints docker's closing line on a terminal.
fn report(a: &CpArgs, bytes: u64, to: &str) {
    if !a.quiet && std::io::stderr().is_terminal() {
        eprintln!("Successfully copied {} to {to}", human_size(bytes as f64));
    }
}

async fn copy_from_container(
    c: &Client,
    a: &CpArgs,
    ctr: &str,
    src: &str,
    dst: &str,
) -> Result<i32> {
    let mut src_path = src.to_string();
    let mut rebase: Option<String> = None;
    if a.follow_link {
        if let Ok(Some(st)) = stat_path(c, ctr, src).await {
            if st.is_symlink() && !st.link_target.is_empty() {
                src_path = st.link_target.clone();
                rebase = Some(base_name(src));
            }
        }
    }
    let url = format!(
        "/containers/{}/archive?path={}",
        encode(ctr),
        encode(&src_path)
    );
    let resp = c.request(Method::GET, &url, None).await?;
    let stat = decode_stat(resp.headers().get("X-Docker-Container-Path-Stat"));
    let mut body = resp.into_body();

    if dst == "-" {
        let mut out = std::io::stdout().lock();
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame?.into_data() {
                out.write_all(&data)?;
            }
        }
        out.flush()?;
        return Ok(0);
    }

    let shown = if dst.starts_with('/') {
        dst.to_string()
    } else {
        format!(
            "{}/{dst}",
            std::env::current_dir()
                .context("find the current directory")?
                .display()
        )
    };
    // Where the archive's top-level entry (named after the source) goes.
    let top = base_name(&src_path);
    let (dest_dir, rename) = match std::fs::metadata(dst) {
        Ok(m) if m.is_dir() => (PathBuf::from(dst), rebase.map(|r| (top, r))),
        Ok(_) => {
            if stat.is_dir() {
                bail!("cannot copy directory");
            }
            (PathBuf::from(dir_name(dst)), Some((top, base_name(dst))))
        }
        Err(_) => {
            if asserts_dir(dst) && !stat.is_dir() {
                report(a, 0, &shown);
                bail!("no such directory");
            }
            let parent = dir_name(dst);
            if !Path::new(&parent).is_dir() {
                bail!(
                    "invalid output path: directory {:?} does not exist",
                    dir_name(&absolute(dst))
                );
            }
            (PathBuf::from(parent), Some((top, base_name(dst))))
        }
    };

    let (tx, rx) = mpsc::channel::<Bytes>(16);
    let opts = ExtractOptions {
        allow_overwrite_dir_non_dir: false,
        // Files land owned by whoever runs the copy, as with the docker CLI.
        owner: Some((
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
        )),
        rename_top: rename.filter(|(from, to)| from != to),
    };
    let extract = tokio::task::spawn_blocking(move || -> Result<()> {
        let fs = ContainerFs::open(&dest_dir)?;
        fs.extract(".", berth_daemon::archive::ChannelReader::new(rx), &opts)?;
        Ok(())
    });
    let mut copied = 0u64;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            copied += data.len() as u64;
            if tx.send(data).await.is_err() {
                break;
            }
        }
    }
    drop(tx);
    extract
        .await
        .map_err(|e| anyhow!("extraction task: {e}"))??;
    report(a, copied, &shown);
    Ok(0)
}

async fn copy_to_container(c: &Client, a: &CpArgs, ctr: &str, src: &str, dst: &str) -> Result<i32> {
    let mut dst_path = dst.to_string();
    let mut dst_stat = stat_path(c, ctr, dst).await?;
    // A symlinked destination is followed (its target, evaluated in the container).
    if let Some(st) = &dst_stat {
        if st.is_symlink() && !st.link_target.is_empty() {
            dst_path = st.link_target.clone();
            dst_stat = stat_path(c, ctr, &dst_path).await?;
        }
    }
    let shown = format!("{ctr}:{dst}");

    let (put_path, archive) = if src == "-" {
        match &dst_stat {
            Some(st) if st.is_dir() => {}
            _ => bail!("destination \"{ctr}:{dst}\" must be a directory"),
        }
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .context("read the archive from stdin")?;
        (dst_path.clone(), buf)
    } else {
        let meta = if a.follow_link {
            std::fs::metadata(src)
        } else {
            std::fs::symlink_metadata(src)
        }
        .map_err(|e| {
            anyhow!(
                "lstat {}: {}",
                absolute(src),
                e.to_string()
                    .split(" (os error")
                    .next()
                    .unwrap_or_default()
                    .to_lowercase()
            )
        })?;
        let src_is_dir = meta.is_dir();
        let (put_path, name) = match &dst_stat {
            Some(st) if st.is_dir() => (dst_path.clone(), None),
            Some(_) => {
                if src_is_dir {
                    bail!("cannot copy directory");
                }
                (dir_name(&dst_path), Some(base_name(&dst_path)))
            }
            None => {
                if asserts_dir(&dst_path) && !src_is_dir {
                    bail!("no such directory");
                }
                (dir_name(&dst_path), Some(base_name(&dst_path)))
            }
        };
        let src_abs = absolute(src);
        let (archive_path, name) = if a.follow_link {
            let real = std::fs::canonicalize(src).with_context(|| format!("resolve {src}"))?;
            let keep = if src.ends_with("/.") {
                ".".to_string()
            } else {
                base_name(src)
            };
            (real.display().to_string(), Some(name.unwrap_or(keep)))
        } else {
            (src_abs, name)
        };
        let archive = tokio::task::spawn_blocking(move || -> Result<Vec<u8>> {
            let host = ContainerFs::open(Path::new("/"))?;
            Ok(host.archive_named(&archive_path, name.as_deref(), Vec::new())?)
        })
        .await
        .map_err(|e| anyhow!("archive task: {e}"))??;
        (put_path, archive)
    };

    let size = archive.len() as u64;
    let mut q = format!("path={}&noOverwriteDirNonDir=true", encode(&put_path));
    if a.archive {
        q.push_str("&copyUIDGID=true");
    }
    c.request_body(
        Method::PUT,
        &format!("/containers/{}/archive?{q}", encode(ctr)),
        archive,
        "application/x-tar",
    )
    .await?;
    report(a, size, &shown);
    Ok(0)
}

/// A local path made absolute against the current directory, kept as written otherwise (a
/// trailing `/.` matters to `cp`).
fn absolute(p: &str) -> String {
    if p.starts_with('/') {
        return p.to_string();
    }
    match std::env::current_dir() {
        Ok(cwd) => format!("{}/{p}", cwd.display()),
        Err(_) => p.to_string(),
    }
}

/// `berth export [-o FILE] CONTAINER`.
pub async fn export(c: &Client, output: Option<&str>, container: &str) -> Result<i32> {
    if output.is_none() && std::io::stdout().is_terminal() {
        bail!("cowardly refusing to save to a terminal. Use the -o flag or redirect");
    }
    let resp = c
        .request(
            Method::GET,
            &format!("/containers/{}/export", encode(container)),
            None,
        )
        .await?;
    let mut out: Box<dyn Write> = match output {
        Some(p) => Box::new(std::fs::File::create(p).with_context(|| format!("create {p}"))?),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut body = resp.into_body();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            out.write_all(&data)?;
        }
    }
    out.flush()?;
    Ok(0)
}

/// `berth diff CONTAINER`: `A`, `C` and `D` lines, as the docker CLI prints them.
pub async fn diff(c: &Client, container: &str) -> Result<i32> {
    let changes: Vec<Value> = c
        .get_json(&format!("/containers/{}/changes", encode(container)))
        .await?;
    let mut out = std::io::stdout().lock();
    for ch in changes {
        let kind = match ch["Kind"].as_i64() {
            Some(0) => "C",
            Some(1) => "A",
            Some(2) => "D",
            _ => "?",
        };
        writeln!(out, "{kind} {}", ch["Path"].as_str().unwrap_or(""))?;
    }
    Ok(0)
}

/// `berth commit [-a -c -m -p] CONTAINER [REPOSITORY[:TAG]]`: prints the new image's ID.
pub async fn commit(c: &Client, a: &CommitArgs) -> Result<i32> {
    let mut q = vec![format!("container={}", encode(&a.container))];
    if let Some(r) = &a.reference {
        let (repo, tag) = match r.rsplit_once(':') {
            Some((repo, t)) if !t.contains('/') => (repo, t),
            _ => (r.as_str(), ""),
        };
        q.push(format!("repo={}", encode(repo)));
        if !tag.is_empty() {
            q.push(format!("tag={}", encode(tag)));
        }
    }
    if let Some(m) = &a.message {
        q.push(format!("comment={}", encode(m)));
    }
    if let Some(au) = &a.author {
        q.push(format!("author={}", encode(au)));
    }
    for ch in &a.change {
        q.push(format!("changes={}", encode(ch)));
    }
    q.push(format!("pause={}", a.pause));
    let resp = c
        .request(Method::POST, &format!("/commit?{}", q.join("&")), None)
        .await?;
    let bytes = resp.into_body().collect().await?.to_bytes();
    let v: Value = serde_json::from_slice(&bytes).context("decode the commit response")?;
    println!("{}", v["Id"].as_str().unwrap_or(""));
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cp_arguments() {
        assert_eq!(split_cp_arg("c1:/etc"), (Some("c1"), "/etc"));
        assert_eq!(split_cp_arg("/a:b"), (None, "/a:b"));
        assert_eq!(split_cp_arg("./a:b"), (None, "./a:b"));
        assert_eq!(split_cp_arg("file"), (None, "file"));
        assert_eq!(split_cp_arg("-"), (None, "-"));
        assert_eq!(base_name("/etc/"), "etc");
        assert_eq!(base_name("/etc/."), ".");
        assert_eq!(base_name("/"), "/");
        assert_eq!(dir_name("/etc/passwd"), "/etc");
        assert_eq!(dir_name("/etc"), "/");
        assert_eq!(dir_name("x"), ".");
        assert!(asserts_dir("d/") && asserts_dir("d/.") && !asserts_dir("d"));
    }
}
