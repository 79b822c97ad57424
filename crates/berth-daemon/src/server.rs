//! Serving: binds the configured unix and TCP sockets, accepts HTTP/1.1 connections (with
//! upgrades, for attach and exec), and shuts down cleanly on SIGINT/SIGTERM.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::signal::unix::{signal, SignalKind};

use crate::config::{Config, Host};
use crate::daemon::Daemon;
use crate::error::{Error, Result};

/// A bound listening socket.
enum Listener {
    Unix(UnixListener, PathBuf),
    Tcp(TcpListener, Option<tokio_rustls::TlsAcceptor>),
}

/// Binds every configured host before anything is served, so a bad address fails startup.
async fn bind_all(config: &Config) -> Result<Vec<Listener>> {
    let mut out = Vec::new();
    for host in &config.hosts {
        match host {
            Host::Unix(path) => out.push(Listener::Unix(bind_unix(path)?, path.clone())),
            Host::Tcp(addr) => {
                let acceptor = if config.tls_verify {
                    Some(crate::tls::acceptor(config)?)
                } else if config.insecure_tcp {
                    if config.tls {
                        // --tls without --tlsverify: encrypted, but anyone may connect.
                        Some(crate::tls::acceptor(config)?)
                    } else {
                        None
                    }
                } else {
                    return Err(Error::Config(format!(
                        "refusing to serve tcp://{addr} without --tlsverify (mutual TLS): anyone who can reach it gets root on this host; pass --insecure-tcp to do it anyway"
                    )));
                };
                if acceptor.is_none() {
                    tracing::warn!(%addr, "serving the API on plain TCP without TLS");
                }
                let l = TcpListener::bind(addr)
                    .await
                    .map_err(|e| Error::io(format!("listen on tcp://{addr}"), e))?;
                out.push(Listener::Tcp(l, acceptor));
            }
        }
    }
    Ok(out)
}

/// Binds a unix socket (mode 0660), creating its directory and replacing a stale socket
/// file only when nothing answers on it.
fn bind_unix(path: &Path) -> Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(Error::Config(format!(
                    "another daemon is already listening on {}",
                    path.display()
                )));
            }
            std::fs::remove_file(path)
                .map_err(|e| Error::io(format!("remove stale socket {}", path.display()), e))?;
        }
        Ok(_) => {
            return Err(Error::Config(format!(
                "{} exists and is not a socket; refusing to replace it",
                path.display()
            )))
        }
        Err(_) => {}
    }
    let listener = UnixListener::bind(path)
        .map_err(|e| Error::io(format!("listen on unix://{}", path.display()), e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .map_err(|e| Error::io(format!("chmod {}", path.display()), e))?;
    Ok(listener)
}

/// Milliseconds since [`EPOCH`] of the last connection's start or end.
static LAST_ACTIVITY_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();

fn now_ms() -> u64 {
    let epoch = EPOCH.get_or_init(std::time::Instant::now);
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

fn mark_activity() {
    LAST_ACTIVITY_MS.store(now_ms(), std::sync::atomic::Ordering::Relaxed);
}

/// How long the API must be quiet before the daemon gives back the memory its requests touched.
const IDLE_TRIM_AFTER: std::time::Duration = std::time::Duration::from_secs(30);

/// After each busy spell, once the API has been quiet for [`IDLE_TRIM_AFTER`], gives back free
/// heap pages and the clean code pages the requests touched (they fault back from the page
/// cache on the next request: a few milliseconds once), as the monitors do once started: an
/// idle daemon then holds what it needs to wait (~5 MiB resident instead of ~16), not what its
/// last burst used. Long enough that commands typed in a row never pay the refaults.
fn trim_when_idle() {
    mark_activity();
    tokio::spawn(async {
        let mut trimmed_at = None;
        let quiet_ms = IDLE_TRIM_AFTER.as_millis() as u64;
        loop {
            let last = LAST_ACTIVITY_MS.load(std::sync::atomic::Ordering::Relaxed);
            let quiet_for = now_ms().saturating_sub(last);
            if quiet_for < quiet_ms {
                // Wake when this quiet spell would be long enough (not on a fixed tick, which
                // trimmed anywhere up to a tick later).
                tokio::time::sleep(std::time::Duration::from_millis(quiet_ms - quiet_for)).await;
                continue;
            }
            if trimmed_at != Some(last) {
                trimmed_at = Some(last);
                let _ =
                    tokio::task::spawn_blocking(berth_runtime::monitor::release_clean_memory).await;
            }
            tokio::time::sleep(IDLE_TRIM_AFTER / 3).await;
        }
    });
}

/// Serves one client connection; `socket` is its unix socket, when it is one (hijacked
/// streams use it to pace their first bytes, see [`crate::api::ConnSocket`]).
fn serve_conn<S>(daemon: Arc<Daemon>, stream: S, socket: Option<crate::api::ConnSocket>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    mark_activity();
    tokio::spawn(async move {
        let service = service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            if let Some(socket) = socket {
                req.extensions_mut().insert(socket);
            }
            crate::api::serve(daemon.clone(), req)
        });
        let conn = http1::Builder::new()
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        let ended = conn.await;
        mark_activity();
        if let Err(err) = ended {
            tracing::debug!(%err, "connection ended with an error");
        }
    });
}

/// Runs the daemon until SIGINT or SIGTERM.
pub async fn run(config: Config) -> Result<()> {
    // Listeners first: a refused address or a daemon already on the socket stops this one
    // before it touches the host (bridges, namespaces, containers). Clients that connect
    // meanwhile wait in the backlog until the restore below is done.
    let listeners = bind_all(&config).await?;
    // From here on the socket exists, so a SIGTERM must mean a clean stop even when it comes
    // during the restore: it is handled once the daemon is up.
    let mut term =
        signal(SignalKind::terminate()).map_err(|e| Error::io("install SIGTERM handler", e))?;
    let mut int =
        signal(SignalKind::interrupt()).map_err(|e| Error::io("install SIGINT handler", e))?;
    if config.cgroup_favordynmods {
        use berth_runtime::cgroup_tuning::{favor_dynamic_modifications, Favordynmods};
        match favor_dynamic_modifications() {
            Ok(Favordynmods::Enabled(at)) => {
                tracing::info!(mount = %at.display(), "cgroup favordynmods enabled")
            }
            Ok(Favordynmods::AlreadyEnabled(at)) => {
                tracing::info!(mount = %at.display(), "cgroup favordynmods already enabled")
            }
            // A tuning, not a requirement: containers start either way.
            Err(err) => tracing::warn!(%err, "cannot enable cgroup favordynmods"),
        }
    }
    let daemon = Arc::new(Daemon::open(config.clone())?);
    // Containers' rootfs mounts go below the image store: one mount of its own lets each start
    // drop them all from its private namespace at once (`berth_runtime::monitor`).
    if let Err(err) = berth_runtime::monitor::own_mount_for_rootfs_parent(daemon.images.root()) {
        tracing::warn!(%err, "cannot make the image store a mount of its own");
    }
    daemon.restore().await;
    write_pidfile(&config.pidfile)?;
    trim_when_idle();
    let mut sockets = Vec::new();
    for listener in listeners {
        let daemon = daemon.clone();
        match listener {
            Listener::Unix(l, path) => {
                tracing::info!(path = %path.display(), "API listening on unix socket");
                sockets.push(path);
                tokio::spawn(async move {
                    loop {
                        match l.accept().await {
                            Ok((s, _)) => {
                                let socket = crate::api::ConnSocket::of(&s);
                                serve_conn(daemon.clone(), s, Some(socket))
                            }
                            Err(err) => accept_failed(err).await,
                        }
                    }
                });
            }
            Listener::Tcp(l, acceptor) => {
                if let Ok(addr) = l.local_addr() {
                    tracing::info!(%addr, tls = acceptor.is_some(), "API listening on TCP");
                }
                tokio::spawn(async move {
                    loop {
                        match l.accept().await {
                            Ok((s, peer)) => {
                                let _ = s.set_nodelay(true);
                                match &acceptor {
                                    None => serve_conn(daemon.clone(), s, None),
                                    Some(tls) => {
                                        let (tls, daemon) = (tls.clone(), daemon.clone());
                                        // The handshake runs in its own task so a slow client
                                        // cannot hold up the accept loop.
                                        tokio::spawn(async move {
                                            match tls.accept(s).await {
                                                Ok(stream) => serve_conn(daemon, stream, None),
                                                Err(err) => tracing::info!(
                                                    %peer, %err, "TLS handshake failed"
                                                ),
                                            }
                                        });
                                    }
                                }
                            }
                            Err(err) => accept_failed(err).await,
                        }
                    }
                });
            }
        }
    }
    tracing::info!(
        data_root = %config.data_root.display(),
        containers = daemon.containers.len(),
        "daemon ready"
    );
    daemon.events.publish(crate::events::Event::new(
        "daemon",
        "start",
        &daemon.engine_id,
        [("name".to_string(), daemon.host.hostname.clone())].into(),
    ));
    tokio::spawn(release_memory_periodically());
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("shutting down");
    daemon.network_stop().await;
    for path in sockets {
        let _ = std::fs::remove_file(path);
    }
    let _ = std::fs::remove_file(&config.pidfile);
    Ok(())
}

/// Hands memory freed after bursts of requests back to the kernel, so that an idle daemon
/// stays small: glibc keeps freed heap pages mapped otherwise.
async fn release_memory_periodically() {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(30));
    loop {
        tick.tick().await;
        // SAFETY: malloc_trim only walks the allocator's own free lists; it takes no pointers
        // and is thread-safe.
        unsafe {
            libc::malloc_trim(0);
        }
    }
}

/// Accept errors (EMFILE, ECONNABORTED) are transient: log and back off briefly.
async fn accept_failed(err: std::io::Error) {
    tracing::warn!(%err, "accept failed");
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
}

fn write_pidfile(path: &Path) -> Result<()> {
    if let Ok(old) = std::fs::read_to_string(path) {
        if let Ok(pid) = old.trim().parse::<i64>() {
            if pid != i64::from(std::process::id()) && crate::daemon::pid_alive(pid) {
                return Err(Error::Config(format!(
                    "pid file {} names a running process ({pid}): is another daemon running?",
                    path.display()
                )));
            }
        }
    }
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "berth.pid".into());
    crate::store::write_atomic(dir, &name, std::process::id().to_string().as_bytes())
}
