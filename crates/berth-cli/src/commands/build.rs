//! `berth build`: the docker CLI's legacy-builder client. The context directory is tarred
//! here with `.dockerignore` applied (the Dockerfile and `.dockerignore` are always sent, so
//! the daemon can read them and then drop them if ignored, as Docker does); a Dockerfile
//! outside the context, or from stdin (`-f -`), travels in the tar under a generated name.
//! The daemon's message stream is printed as the docker CLI prints it.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use berth_builder::ignore::Matcher;
use clap::Args;
use http_body_util::BodyExt;
use hyper::Method;

use crate::client::{encode, Client};
use crate::progress::{Outcome, Renderer};

/// `berth build`.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Name and optionally a tag in the "name:tag" format
    #[arg(short, long = "tag")]
    pub tag: Vec<String>,
    /// Name of the Dockerfile (default: "PATH/Dockerfile")
    #[arg(short, long)]
    pub file: Option<String>,
    /// Set build-time variables
    #[arg(long = "build-arg")]
    pub build_arg: Vec<String>,
    /// Set metadata for an image
    #[arg(long)]
    pub label: Vec<String>,
    /// Set the target build stage to build
    #[arg(long)]
    pub target: Option<String>,
    /// Do not use cache when building the image
    #[arg(long)]
    pub no_cache: bool,
    /// Suppress the build output and print image ID on success
    #[arg(short, long)]
    pub quiet: bool,
    /// Always attempt to pull a newer version of the image
    #[arg(long)]
    pub pull: bool,
    /// Set the networking mode for the RUN instructions during build
    #[arg(long)]
    pub network: Option<String>,
    /// Remove intermediate containers after a successful build
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub rm: bool,
    /// Always remove intermediate containers
    #[arg(long)]
    pub force_rm: bool,
    /// Images to consider as cache sources
    #[arg(long)]
    pub cache_from: Vec<String>,
    /// Add a custom host-to-IP mapping (host:ip)
    #[arg(long)]
    pub add_host: Vec<String>,
    /// Set platform if server is multi-platform capable
    #[arg(long)]
    pub platform: Option<String>,
    /// Write the image ID to the file
    #[arg(long)]
    pub iidfile: Option<String>,
    /// Memory limit of RUN steps
    #[arg(short, long)]
    pub memory: Option<String>,
    /// Swap limit equal to memory plus swap: -1 to enable unlimited swap
    #[arg(long)]
    pub memory_swap: Option<String>,
    /// Size of /dev/shm of RUN steps
    #[arg(long)]
    pub shm_size: Option<String>,
    /// CPU shares (relative weight)
    #[arg(short = 'c', long)]
    pub cpu_shares: Option<i64>,
    /// Limit the CPU CFS period
    #[arg(long)]
    pub cpu_period: Option<i64>,
    /// Limit the CPU CFS quota
    #[arg(long)]
    pub cpu_quota: Option<i64>,
    /// CPUs in which to allow execution (0-3, 0,1)
    #[arg(long)]
    pub cpuset_cpus: Option<String>,
    /// PATH | - (URL contexts are not supported)
    pub context: String,
}

/// A name for a Dockerfile that is not in the context, as the docker CLI makes one.
fn generated_dockerfile_name() -> String {
    let mut b = [0u8; 10];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = f.read_exact(&mut b);
    }
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(".dockerfile.{hex}")
}

/// Tars `dir`, leaving out what `ignore` excludes (except `keep`), owners 0:0.
fn tar_context(
    dir: &Path,
    ignore: &Matcher,
    keep: &[String],
    extras: &[(String, Vec<u8>)],
) -> Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(false);
    let mut stack = vec![PathBuf::new()];
    let mut entries = Vec::new();
    while let Some(rel) = stack.pop() {
        let abs = dir.join(&rel);
        let rd = std::fs::read_dir(&abs).with_context(|| format!("read {}", abs.display()))?;
        let mut names: Vec<_> = rd.filter_map(|e| e.ok()).map(|e| e.file_name()).collect();
        names.sort();
        for n in names {
            let r = rel.join(&n);
            let rs = r.to_string_lossy().into_owned();
            let m = std::fs::symlink_metadata(dir.join(&r))
                .with_context(|| format!("stat {}", dir.join(&r).display()))?;
            if extras.iter().any(|(n, _)| *n == rs) {
                continue;
            }
            let excluded = ignore.excludes(&rs) && !keep.contains(&rs);
            if excluded {
                // An exception may re-include something below an excluded directory.
                if m.is_dir() && ignore.has_exclusions() {
                    stack.push(r);
                }
                continue;
            }
            entries.push((r.clone(), m.clone()));
            if m.is_dir() {
                stack.push(r);
            }
        }
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    for (rel, m) in entries {
        let abs = dir.join(&rel);
        let mut h = tar::Header::new_gnu();
        h.set_metadata_in_mode(&m, tar::HeaderMode::Complete);
        h.set_uid(0);
        h.set_gid(0);
        if m.file_type().is_symlink() {
            let target = std::fs::read_link(&abs)?;
            b.append_link(&mut h, &rel, target)?;
        } else if m.is_file() {
            let f = std::fs::File::open(&abs).with_context(|| format!("open {}", abs.display()))?;
            b.append_data(&mut h, &rel, f.take(m.size()))?;
        } else if m.is_dir() {
            b.append_data(&mut h, &rel, std::io::empty())?;
        }
        // Sockets, fifos and devices are not sent, as with docker.
    }
    for (name, data) in extras {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o600);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(chrono::Utc::now().timestamp().max(0) as u64);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, name, data.as_slice())?;
    }
    Ok(b.into_inner()?)
}

fn read_stdin() -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    std::io::stdin().read_to_end(&mut buf)?;
    Ok(buf)
}

/// The context tar and the Dockerfile name to send.
fn context_body(a: &BuildArgs) -> Result<(Vec<u8>, Option<String>)> {
    if a.context == "-" {
        if a.file.as_deref() == Some("-") {
            bail!("invalid argument: can't use stdin for both build context and dockerfile");
        }
        return Ok((read_stdin()?, a.file.clone()));
    }
    if a.context.contains("://") || a.context.starts_with("git@") {
        bail!(
            "unable to prepare context: URL contexts ({}) are not supported",
            a.context
        );
    }
    let dir = Path::new(&a.context);
    if !dir.is_dir() {
        bail!("unable to prepare context: path {:?} not found", a.context);
    }
    let dir = dir.canonicalize()?;
    let ignore = match std::fs::read_to_string(dir.join(".dockerignore")) {
        Ok(t) => Matcher::parse(&t),
        Err(_) => Matcher::default(),
    };
    let mut keep = vec![".dockerignore".to_string()];
    let mut extra: Option<(String, Vec<u8>)> = None;
    let name = match a.file.as_deref() {
        Some("-") => {
            let n = generated_dockerfile_name();
            extra = Some((n.clone(), read_stdin()?));
            n
        }
        Some(f) => {
            let p = Path::new(f);
            let abs = if p.is_absolute() {
                p.to_path_buf()
            } else {
                std::env::current_dir()?.join(p)
            };
            let abs = abs.canonicalize().with_context(|| {
                format!("unable to prepare context: the Dockerfile ({f}) cannot be read")
            })?;
            match abs.strip_prefix(&dir) {
                Ok(rel) => rel.to_string_lossy().into_owned(),
                Err(_) => {
                    let n = generated_dockerfile_name();
                    extra = Some((n.clone(), std::fs::read(&abs)?));
                    n
                }
            }
        }
        None => "Dockerfile".to_string(),
    };
    keep.push(name.clone());
    let mut extras: Vec<(String, Vec<u8>)> = Vec::new();
    if let Some((n, data)) = extra {
        // As the docker CLI: the generated Dockerfile is listed in `.dockerignore` so the
        // daemon drops it from the context once it has read it.
        let mut ignore_text = std::fs::read(dir.join(".dockerignore")).unwrap_or_default();
        ignore_text.extend_from_slice(format!("\n.dockerignore\n{n}\n").as_bytes());
        extras.push((".dockerignore".into(), ignore_text));
        extras.push((n, data));
    }
    let body = tar_context(&dir, &ignore, &keep, &extras)?;
    Ok((body, Some(name)))
}

/// Draws the build's message stream; also returns the error's `errorDetail.code`.
async fn render<W: std::io::Write>(
    r: &mut Renderer<W>,
    resp: hyper::Response<hyper::body::Incoming>,
) -> Result<(Outcome, Option<i32>)> {
    let mut body = resp.into_body();
    let mut buf = Vec::new();
    let mut outcome = Outcome::default();
    let mut code = None;
    let mut line = |raw: &[u8], outcome: &mut Outcome| -> Result<()> {
        if raw.iter().all(u8::is_ascii_whitespace) || outcome.error.is_some() {
            return Ok(());
        }
        let v: serde_json::Value = serde_json::from_slice(raw).context("decode build message")?;
        if let Some(c) = v["errorDetail"]["code"].as_i64() {
            code = i32::try_from(c).ok();
        }
        r.message(&v, outcome)
    };
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.context("read build output")?.into_data() else {
            continue;
        };
        buf.extend_from_slice(&data);
        while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
            let l: Vec<u8> = buf.drain(..=nl).collect();
            line(&l, &mut outcome)?;
        }
    }
    line(&buf, &mut outcome)?;
    Ok((outcome, code))
}

/// `berth build [OPTIONS] PATH | -`.
pub async fn build(c: &Client, a: &BuildArgs) -> Result<i32> {
    let (body, dockerfile) = context_body(a)?;
    if !a.quiet {
        println!(
            "Sending build context to Docker daemon  {}",
            crate::progress::human_size(body.len() as u64)
        );
    }
    let mut q: Vec<String> = Vec::new();
    for t in &a.tag {
        q.push(format!("t={}", encode(t)));
    }
    if let Some(f) = dockerfile {
        q.push(format!("dockerfile={}", encode(&f)));
    }
    let mut args: BTreeMap<String, Option<String>> = BTreeMap::new();
    for b in &a.build_arg {
        match b.split_once('=') {
            Some((k, v)) => args.insert(k.to_string(), Some(v.to_string())),
            // `--build-arg NAME` takes the value from the environment, as docker does.
            None => args.insert(b.clone(), std::env::var(b).ok()),
        };
    }
    if !args.is_empty() {
        q.push(format!(
            "buildargs={}",
            encode(&serde_json::to_string(&args)?)
        ));
    }
    let labels: BTreeMap<&str, &str> = a
        .label
        .iter()
        .map(|l| l.split_once('=').unwrap_or((l.as_str(), "")))
        .collect();
    if !labels.is_empty() {
        q.push(format!(
            "labels={}",
            encode(&serde_json::to_string(&labels)?)
        ));
    }
    if let Some(t) = &a.target {
        q.push(format!("target={}", encode(t)));
    }
    if !a.cache_from.is_empty() {
        q.push(format!(
            "cachefrom={}",
            encode(&serde_json::to_string(&a.cache_from)?)
        ));
    }
    for h in &a.add_host {
        q.push(format!("extrahosts={}", encode(h)));
    }
    if let Some(n) = &a.network {
        q.push(format!("networkmode={}", encode(n)));
    }
    if let Some(p) = &a.platform {
        q.push(format!("platform={}", encode(p)));
    }
    for (flag, on) in [
        ("nocache", a.no_cache),
        ("q", a.quiet),
        ("pull", a.pull),
        ("forcerm", a.force_rm),
    ] {
        if on {
            q.push(format!("{flag}=1"));
        }
    }
    q.push(format!("rm={}", if a.rm { 1 } else { 0 }));
    for (param, value) in [("memory", &a.memory), ("shmsize", &a.shm_size)] {
        if let Some(v) = value {
            q.push(format!("{param}={}", crate::commands::run::parse_bytes(v)?));
        }
    }
    if let Some(v) = &a.memory_swap {
        let n = if v == "-1" {
            -1
        } else {
            crate::commands::run::parse_bytes(v)?
        };
        q.push(format!("memswap={n}"));
    }
    for (param, value) in [
        ("cpushares", a.cpu_shares),
        ("cpuperiod", a.cpu_period),
        ("cpuquota", a.cpu_quota),
    ] {
        if let Some(v) = value {
            q.push(format!("{param}={v}"));
        }
    }
    if let Some(c) = &a.cpuset_cpus {
        q.push(format!("cpusetcpus={}", encode(c)));
    }
    let resp = c
        .request_body(
            Method::POST,
            &format!("/build?{}", q.join("&")),
            body,
            "application/x-tar",
        )
        .await?;
    let (outcome, code) = if a.quiet {
        render(&mut Renderer::new(std::io::sink(), false, 80), resp).await?
    } else {
        render(&mut Renderer::stdout(), resp).await?
    };
    if let Some(e) = outcome.error {
        eprintln!("{e}");
        // As the docker CLI: a failed RUN's exit code becomes ours.
        return Ok(code.filter(|c| *c != 0).unwrap_or(1));
    }
    let id = outcome.aux.iter().find_map(|v| v["ID"].as_str());
    if let Some(path) = &a.iidfile {
        let id = id.context("the daemon reported no image ID")?;
        std::fs::write(path, id).with_context(|| format!("write image ID to {path}"))?;
    }
    if a.quiet {
        match id {
            Some(id) => println!("{id}"),
            None => bail!("the daemon reported no image ID"),
        }
    }
    Ok(0)
}
