//! `create`, `run`, `start`, `stop`, `restart`, `kill`, `wait`, `pause`, `unpause`, `top`.

use std::io::Write;

use anyhow::{bail, Context, Result};
use http_body_util::BodyExt;
use hyper::Method;
use serde_json::{json, Map, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::client::{encode, Client};
use crate::format::tabulate;

/// Flags shared by `create` and `run`.
#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// Assign a name to the container
    #[arg(long)]
    name: Option<String>,
    /// Set environment variables
    #[arg(short, long = "env")]
    env: Vec<String>,
    /// Set meta data on a container
    #[arg(short, long = "label")]
    label: Vec<String>,
    /// Allocate a pseudo-TTY
    #[arg(short, long)]
    tty: bool,
    /// Keep STDIN open even if not attached
    #[arg(short, long)]
    interactive: bool,
    /// Overwrite the default ENTRYPOINT of the image
    #[arg(long)]
    entrypoint: Option<String>,
    /// Working directory inside the container
    #[arg(short, long)]
    workdir: Option<String>,
    /// Username or UID (format: <name|uid>[:<group|gid>])
    #[arg(short, long)]
    user: Option<String>,
    /// Container host name
    #[arg(long)]
    hostname: Option<String>,
    /// Automatically remove the container when it exits
    #[arg(long)]
    rm: bool,
    /// Bind mount a volume (/host:/container[:ro])
    #[arg(short, long = "volume")]
    volume: Vec<String>,
    /// Mount a tmpfs directory (/path[:options])
    #[arg(long)]
    tmpfs: Vec<String>,
    /// Attach a filesystem mount to the container (type=bind|volume|tmpfs,src=,dst=,...)
    #[arg(long)]
    mount: Vec<String>,
    /// Mount volumes from the specified container(s) (name[:ro|rw])
    #[arg(long)]
    volumes_from: Vec<String>,
    /// Connect a container to a network (host, none, bridge)
    #[arg(long)]
    network: Option<String>,
    /// Publish a container's port(s) to the host
    #[arg(short, long = "publish")]
    publish: Vec<String>,
    /// Publish all exposed ports to random ports
    #[arg(short = 'P', long)]
    publish_all: bool,
    /// IPv4 address (e.g., 172.30.100.104)
    #[arg(long)]
    ip: Option<String>,
    /// IPv6 address (e.g., 2001:db8::33)
    #[arg(long)]
    ip6: Option<String>,
    /// Add network-scoped alias for the container
    #[arg(long)]
    network_alias: Vec<String>,
    /// Give extended privileges to this container
    #[arg(long)]
    privileged: bool,
    /// Add Linux capabilities
    #[arg(long)]
    cap_add: Vec<String>,
    /// Drop Linux capabilities
    #[arg(long)]
    cap_drop: Vec<String>,
    /// Security options
    #[arg(long)]
    security_opt: Vec<String>,
    /// Memory limit (e.g. 512m)
    #[arg(short, long)]
    memory: Option<String>,
    /// Number of CPUs
    #[arg(long)]
    cpus: Option<f64>,
    /// Tune container pids limit
    #[arg(long)]
    pids_limit: Option<i64>,
    /// Mount the container's root filesystem as read only
    #[arg(long)]
    read_only: bool,
    /// Cgroup namespace to use (host|private); the daemon's default when unset
    #[arg(long, value_parser = ["host", "private"])]
    cgroupns: Option<String>,
    /// Signal to stop the container
    #[arg(long)]
    stop_signal: Option<String>,
    /// Timeout (in seconds) to stop a container
    #[arg(long)]
    stop_timeout: Option<i64>,
    /// Restart policy to apply when a container exits
    #[arg(long)]
    restart: Option<String>,
    /// Image
    image: String,
    /// Command and arguments
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

/// `berth run` flags.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Run container in background and print container ID
    #[arg(short, long)]
    detach: bool,
    /// Override the key sequence for detaching a container
    #[arg(long = "detach-keys", default_value = "")]
    detach_keys: String,
    #[command(flatten)]
    create: CreateArgs,
}

/// Parses `512m`, `1g`, `100k`, `1024` into bytes.
pub(crate) fn parse_bytes(s: &str) -> Result<i64> {
    let t = s.trim().to_ascii_lowercase();
    let t = t.trim_end_matches('b');
    let (num, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1i64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        _ => (t, 1),
    };
    let n: f64 = num
        .parse()
        .with_context(|| format!("invalid size: {s:?}"))?;
    // Sizes typed on a command line are far below i64::MAX bytes.
    Ok((n * mult as f64) as i64)
}

fn create_body(a: &CreateArgs) -> Result<Value> {
    let mut labels = Map::new();
    for l in &a.label {
        let (k, v) = l.split_once('=').unwrap_or((l, ""));
        labels.insert(k.to_string(), json!(v));
    }
    let mut tmpfs = Map::new();
    for t in &a.tmpfs {
        let (path, opts) = t.split_once(':').unwrap_or((t, ""));
        tmpfs.insert(path.to_string(), json!(opts));
    }
    let restart = match a.restart.as_deref() {
        None => json!({"Name": "no"}),
        Some(r) => {
            let (name, count) = r.split_once(':').unwrap_or((r, "0"));
            json!({"Name": name, "MaximumRetryCount": count.parse::<i64>().unwrap_or(0)})
        }
    };
    let mut host = json!({
        "Binds": a.volume,
        "Tmpfs": tmpfs,
        "NetworkMode": a.network.clone().unwrap_or_else(|| "default".into()),
        "Privileged": a.privileged,
        "CapAdd": a.cap_add,
        "CapDrop": a.cap_drop,
        "SecurityOpt": a.security_opt,
        "ReadonlyRootfs": a.read_only,
        "AutoRemove": a.rm,
        "RestartPolicy": restart,
    });
    if let Some(m) = &a.memory {
        host["Memory"] = json!(parse_bytes(m)?);
    }
    if let Some(c) = a.cpus {
        // Whole nano-CPUs; fractions below one nano-CPU are meaningless.
        host["NanoCpus"] = json!((c * 1e9) as i64);
    }
    if let Some(p) = a.pids_limit {
        host["PidsLimit"] = json!(p);
    }
    if let Some(mode) = &a.cgroupns {
        host["CgroupnsMode"] = json!(mode);
    }
    host["Mounts"] = json!(super::volume::mounts_json(&a.mount)?);
    host["VolumesFrom"] = json!(a.volumes_from);
    if a.tty {
        // The pty starts at the client's size: the first prompt never sees 0×0.
        if let Some((rows, cols)) = terminal_size() {
            host["ConsoleSize"] = json!([rows, cols]);
        }
    }
    let mut body = json!({
        "Image": a.image,
        "Env": a.env,
        "Labels": labels,
        "Tty": a.tty,
        "OpenStdin": a.interactive,
        "StdinOnce": a.interactive,
        "AttachStdin": a.interactive,
        "AttachStdout": true,
        "AttachStderr": true,
        "HostConfig": host,
    });
    if !a.command.is_empty() {
        body["Cmd"] = json!(a.command);
    }
    if let Some(e) = &a.entrypoint {
        body["Entrypoint"] = if e.is_empty() { json!([]) } else { json!([e]) };
    }
    for (key, v) in [
        ("WorkingDir", &a.workdir),
        ("User", &a.user),
        ("Hostname", &a.hostname),
        ("StopSignal", &a.stop_signal),
    ] {
        if let Some(v) = v {
            body[key] = json!(v);
        }
    }
    if let Some(t) = a.stop_timeout {
        body["StopTimeout"] = json!(t);
    }
    super::network::apply_run_flags(
        &mut body,
        &super::network::RunNetworkFlags {
            network: a.network.as_deref().unwrap_or("default"),
            publish: &a.publish,
            publish_all: a.publish_all,
            ip: a.ip.as_deref(),
            ip6: a.ip6.as_deref(),
            aliases: &a.network_alias,
        },
    )?;
    Ok(body)
}

async fn create_container(c: &Client, a: &CreateArgs) -> Result<String> {
    let body = create_body(a)?;
    let path = match &a.name {
        Some(n) => format!("/containers/create?name={}", encode(n)),
        None => "/containers/create".to_string(),
    };
    let resp = c
        .request(Method::POST, &path, Some(serde_json::to_vec(&body)?))
        .await?;
    let bytes = resp.into_body().collect().await?.to_bytes();
    let v: Value = serde_json::from_slice(&bytes)?;
    for w in v["Warnings"].as_array().into_iter().flatten() {
        eprintln!("WARNING: {}", w.as_str().unwrap_or(""));
    }
    Ok(v["Id"]
        .as_str()
        .context("create response has no Id")?
        .to_string())
}

/// `berth create`.
pub async fn create(c: &Client, a: &CreateArgs) -> Result<i32> {
    println!("{}", create_container(c, a).await?);
    Ok(0)
}

/// `berth run`: create, attach (unless detached), register the wait, start, relay stdio,
/// and exit with the container's status.
pub async fn run(c: &Client, a: &RunArgs) -> Result<i32> {
    let id = create_container(c, &a.create).await?;
    if a.detach {
        c.request(Method::POST, &format!("/containers/{id}/start"), None)
            .await?;
        println!("{id}");
        return Ok(0);
    }
    let tty = a.create.tty;
    let stdin = a.create.interactive;
    let detach_keys = berth_daemon::detach::parse(&a.detach_keys).map_err(anyhow::Error::msg)?;
    let attach_path = format!(
        "/containers/{id}/attach?stream=1&stdout=1&stderr=1&stdin={}&detachKeys={}",
        u8::from(stdin),
        crate::client::encode(&a.detach_keys)
    );
    let condition = if a.create.rm { "removed" } else { "next-exit" };
    let wait_path = format!("/containers/{id}/wait?condition={condition}");
    // Both are in place before the start, on their own connections: no need to wait for one
    // before asking for the other.
    let (attach, wait) = tokio::try_join!(
        c.hijack(&attach_path),
        c.request(Method::POST, &wait_path, None)
    )?;
    if let Err(err) = c
        .request(Method::POST, &format!("/containers/{id}/start"), None)
        .await
    {
        eprintln!("{err}");
        return Ok(if err.to_string().contains("not found") {
            127
        } else {
            125
        });
    }
    let raw = if tty && stdin {
        crate::commands::run::RawTerminal::enter()
    } else {
        None
    };
    if tty {
        track_terminal_size(c, &format!("/containers/{id}/resize"));
    }
    let (mut reader, mut writer) = tokio::io::split(attach);
    let (detached_tx, mut detached_rx) = tokio::sync::oneshot::channel::<()>();
    if stdin {
        // The daemon watches for the detach sequence and ends the session, leaving the
        // container running; the client watches too, to know that it detached rather than
        // saw the container exit. Input goes through unchanged (the daemon filters it).
        let mut filter = tty.then(|| berth_daemon::detach::EscapeFilter::new(detach_keys));
        tokio::spawn(async move {
            let mut input = tokio::io::stdin();
            let mut buf = vec![0u8; 16 << 10];
            let mut ignored = Vec::new();
            loop {
                let n = match input.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                if writer.write_all(&buf[..n]).await.is_err() {
                    return;
                }
                if filter
                    .as_mut()
                    .is_some_and(|f| f.filter(&buf[..n], &mut ignored))
                {
                    let _ = detached_tx.send(());
                    // The writer is kept open: the daemon ends the session.
                    std::future::pending::<()>().await;
                    return;
                }
                ignored.clear();
            }
            let _ = writer.shutdown().await;
        });
    }
    let relayed = relay_output(&mut reader, tty).await;
    if detached_rx.try_recv().is_ok() {
        drop(raw);
        return Ok(0);
    }
    relayed?;
    drop(raw);
    let bytes = wait.into_body().collect().await?.to_bytes();
    let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if let Some(msg) = v["Error"]["Message"].as_str() {
        bail!("{msg}");
    }
    Ok(i32::try_from(v["StatusCode"].as_i64().unwrap_or(0)).unwrap_or(1))
}

/// Copies an attach stream to stdout/stderr, demultiplexing unless it is a TTY stream.
async fn relay_output<R: tokio::io::AsyncRead + Unpin>(r: &mut R, tty: bool) -> Result<()> {
    let mut stdout = std::io::stdout();
    let mut stderr = std::io::stderr();
    let mut buf = vec![0u8; 32 << 10];
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let n = r.read(&mut buf).await.context("read attach stream")?;
        if n == 0 {
            return Ok(());
        }
        if tty {
            stdout.write_all(&buf[..n])?;
            stdout.flush()?;
            continue;
        }
        pending.extend_from_slice(&buf[..n]);
        while pending.len() >= 8 {
            let len = u32::from_be_bytes([pending[4], pending[5], pending[6], pending[7]]) as usize;
            if pending.len() < 8 + len {
                break;
            }
            let out: &mut dyn Write = if pending[0] == 2 {
                &mut stderr
            } else {
                &mut stdout
            };
            out.write_all(&pending[8..8 + len])?;
            out.flush()?;
            pending.drain(..8 + len);
        }
    }
}

/// Sends the terminal's size to `path` (`…/resize`) now and on every SIGWINCH, as the docker
/// CLI does, until the process exits.
pub(crate) fn track_terminal_size(c: &Client, path: &str) {
    let send = |c: Client, path: String| async move {
        if let Some((rows, cols)) = terminal_size() {
            let _ = c
                .request(Method::POST, &format!("{path}?h={rows}&w={cols}"), None)
                .await;
        }
    };
    let c = c.clone();
    let path = path.to_owned();
    // Listening before the first request: SIGWINCH is ignored by default, so one that came
    // while the initial size was still being sent used to be lost.
    let winch = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change());
    tokio::spawn(async move {
        send(c.clone(), path.clone()).await;
        let Ok(mut winch) = winch else {
            return;
        };
        while winch.recv().await.is_some() {
            send(c.clone(), path.clone()).await;
        }
    });
}

/// The size of the terminal on stdout (or stdin), as (rows, columns).
fn terminal_size() -> Option<(u16, u16)> {
    let mut size = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    for fd in [libc::STDOUT_FILENO, libc::STDIN_FILENO] {
        // SAFETY: TIOCGWINSZ writes one winsize into the struct we own; a non-terminal fd
        // fails with ENOTTY and writes nothing.
        let rc = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut size) };
        if rc == 0 && size.ws_row > 0 && size.ws_col > 0 {
            return Some((size.ws_row, size.ws_col));
        }
    }
    None
}

/// The terminal in raw mode for an interactive TTY session; restored on drop.
pub struct RawTerminal(nix::sys::termios::Termios);

impl RawTerminal {
    fn enter() -> Option<Self> {
        use nix::sys::termios;
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(&stdin).ok()?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(&stdin, termios::SetArg::TCSANOW, &raw).ok()?;
        Some(RawTerminal(saved))
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        let _ = nix::sys::termios::tcsetattr(
            std::io::stdin(),
            nix::sys::termios::SetArg::TCSANOW,
            &self.0,
        );
    }
}

/// `berth exec` flags.
#[derive(Debug, clap::Args)]
pub struct ExecArgs {
    /// Detached mode: run command in the background
    #[arg(short, long)]
    detach: bool,
    /// Set environment variables
    #[arg(short, long = "env")]
    env: Vec<String>,
    /// Keep STDIN open even if not attached
    #[arg(short, long)]
    interactive: bool,
    /// Give extended privileges to the command
    #[arg(long)]
    privileged: bool,
    /// Allocate a pseudo-TTY
    #[arg(short, long)]
    tty: bool,
    /// Username or UID (format: "<name|uid>[:<group|gid>]")
    #[arg(short, long)]
    user: Option<String>,
    /// Working directory inside the container
    #[arg(short, long)]
    workdir: Option<String>,
    /// Container
    container: String,
    /// Command and arguments
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    command: Vec<String>,
}

/// `berth exec`: create an exec instance, start it attached (or detached), exit with its code.
pub async fn exec(c: &Client, a: &ExecArgs) -> Result<i32> {
    let mut body = json!({
        "AttachStdin": a.interactive && !a.detach,
        "AttachStdout": !a.detach,
        "AttachStderr": !a.detach,
        "Tty": a.tty,
        "Env": a.env,
        "Cmd": a.command,
        "Privileged": a.privileged,
    });
    if let Some(u) = &a.user {
        body["User"] = json!(u);
    }
    if let Some(w) = &a.workdir {
        body["WorkingDir"] = json!(w);
    }
    if let Some((rows, cols)) = terminal_size().filter(|_| a.tty) {
        body["ConsoleSize"] = json!([rows, cols]);
    }
    let resp = c
        .request(
            Method::POST,
            &format!("/containers/{}/exec", encode(&a.container)),
            Some(serde_json::to_vec(&body)?),
        )
        .await?;
    let bytes = resp.into_body().collect().await?.to_bytes();
    let v: Value = serde_json::from_slice(&bytes)?;
    let id = v["Id"]
        .as_str()
        .context("exec create response has no Id")?
        .to_string();
    let start = serde_json::to_vec(&json!({"Detach": a.detach, "Tty": a.tty}))?;
    if a.detach {
        c.request(Method::POST, &format!("/exec/{id}/start"), Some(start))
            .await?;
        return Ok(0);
    }
    let io = c.hijack_with(&format!("/exec/{id}/start"), start).await?;
    if a.tty {
        track_terminal_size(c, &format!("/exec/{id}/resize"));
    }
    let raw = if a.tty && a.interactive {
        RawTerminal::enter()
    } else {
        None
    };
    let (mut reader, mut writer) = tokio::io::split(io);
    if a.interactive {
        tokio::spawn(async move {
            let mut input = tokio::io::stdin();
            let mut buf = vec![0u8; 16 << 10];
            loop {
                match input.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if writer.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                }
            }
            let _ = writer.shutdown().await;
        });
    }
    relay_output(&mut reader, a.tty).await?;
    drop(raw);
    let v: Value = c.get_json(&format!("/exec/{id}/json")).await?;
    Ok(i32::try_from(v["ExitCode"].as_i64().unwrap_or(0)).unwrap_or(1))
}

/// How the docker CLI sends one request per container named on its command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fanout {
    /// One after the other (`start`, `restart`).
    Serial,
    /// At most 50 at a time (`stop`, `kill`, `pause`, `unpause`, `rm`): `rm -f $(ps -aq)`
    /// waits for the slowest container, not for the sum of them.
    Parallel,
}

/// Sends `method path_of(name)` for each container and prints, in the order given, each name
/// that succeeded or the error; the exit code is 1 if any failed.
pub(crate) async fn each_container(
    c: &Client,
    names: &[String],
    fanout: Fanout,
    method: Method,
    path_of: impl Fn(&str) -> String,
) -> Result<i32> {
    use futures_util::stream::{self, StreamExt};
    let width = match fanout {
        Fanout::Serial => 1,
        Fanout::Parallel => 50,
    };
    let mut results = stream::iter(names)
        .map(|name| {
            let (method, path) = (method.clone(), path_of(name));
            async move { (name, c.request(method, &path, None).await) }
        })
        .buffered(width);
    let mut code = 0;
    while let Some((name, result)) = results.next().await {
        match result {
            Ok(_) => println!("{name}"),
            Err(err) => {
                eprintln!("{err}");
                code = 1;
            }
        }
    }
    Ok(code)
}

/// Runs `POST /containers/{name}/{action}{query}` for each container.
async fn each(
    c: &Client,
    names: &[String],
    fanout: Fanout,
    action: &str,
    query: &str,
) -> Result<i32> {
    each_container(c, names, fanout, Method::POST, |n| {
        format!("/containers/{}/{action}{query}", encode(n))
    })
    .await
}

/// `berth start`.
pub async fn start(c: &Client, names: &[String]) -> Result<i32> {
    each(c, names, Fanout::Serial, "start", "").await
}

/// `berth stop` / `berth restart` flags.
#[derive(Debug, clap::Args)]
pub struct StopArgs {
    /// Signal to send to the container
    #[arg(short, long)]
    signal: Option<String>,
    /// Seconds to wait before killing the container
    #[arg(short, long)]
    time: Option<i64>,
    /// Containers
    #[arg(required = true)]
    containers: Vec<String>,
}

fn stop_query(a: &StopArgs) -> String {
    let mut q = Vec::new();
    if let Some(t) = a.time {
        q.push(format!("t={t}"));
    }
    if let Some(s) = &a.signal {
        q.push(format!("signal={}", encode(s)));
    }
    if q.is_empty() {
        String::new()
    } else {
        format!("?{}", q.join("&"))
    }
}

/// `berth stop`.
pub async fn stop(c: &Client, a: &StopArgs) -> Result<i32> {
    each(c, &a.containers, Fanout::Parallel, "stop", &stop_query(a)).await
}

/// `berth restart`.
pub async fn restart(c: &Client, a: &StopArgs) -> Result<i32> {
    each(c, &a.containers, Fanout::Serial, "restart", &stop_query(a)).await
}

/// `berth kill`.
pub async fn kill(c: &Client, signal: Option<&str>, names: &[String]) -> Result<i32> {
    let q = signal.map_or(String::new(), |s| format!("?signal={}", encode(s)));
    each(c, names, Fanout::Parallel, "kill", &q).await
}

/// `berth pause` / `unpause`.
pub async fn pause(c: &Client, names: &[String], pause: bool) -> Result<i32> {
    let action = if pause { "pause" } else { "unpause" };
    each(c, names, Fanout::Parallel, action, "").await
}

/// `berth wait`: prints each container's exit code.
pub async fn wait(c: &Client, names: &[String]) -> Result<i32> {
    let mut code = 0;
    for n in names {
        let path = format!("/containers/{}/wait", encode(n));
        let result = async {
            let resp = c.request(Method::POST, &path, None).await?;
            let bytes = resp.into_body().collect().await?.to_bytes();
            let v: Value = serde_json::from_slice(&bytes)?;
            anyhow::Ok(v["StatusCode"].as_i64().unwrap_or(-1))
        }
        .await;
        match result {
            Ok(status) => println!("{status}"),
            Err(err) => {
                eprintln!("{err}");
                code = 1;
            }
        }
    }
    Ok(code)
}

/// `berth top`.
pub async fn top(c: &Client, name: &str, ps_args: &[String]) -> Result<i32> {
    let mut path = format!("/containers/{}/top", encode(name));
    if !ps_args.is_empty() {
        path.push_str(&format!("?ps_args={}", encode(&ps_args.join(" "))));
    }
    let v: Value = c.get_json(&path).await?;
    let mut lines = Vec::new();
    let join = |row: &Value| {
        row.as_array()
            .map(|r| {
                r.iter()
                    .map(|f| f.as_str().unwrap_or("").to_string())
                    .collect::<Vec<_>>()
                    .join("\t")
            })
            .unwrap_or_default()
    };
    lines.push(join(&v["Titles"]));
    for p in v["Processes"].as_array().into_iter().flatten() {
        lines.push(join(p));
    }
    print!("{}", tabulate(&lines));
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("512m").unwrap(), 512 << 20);
        assert_eq!(parse_bytes("1g").unwrap(), 1 << 30);
        assert_eq!(parse_bytes("100").unwrap(), 100);
        assert_eq!(parse_bytes("1.5k").unwrap(), 1536);
        assert!(parse_bytes("lots").is_err());
    }
}
