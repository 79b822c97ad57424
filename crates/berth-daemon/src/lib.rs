//! Berth's daemon.
//!
//! Owns the Docker Engine REST API: HTTP serving on unix and TCP sockets, API version
//! negotiation, the mapping of library errors onto Docker's status codes, the daemon's
//! crash-safe container records, and the event stream. Behaviour lives in the runtime and image
//! crates; this crate translates between them and the wire.
//!
//! Modules, from the wire inwards: [`server`] (sockets), `api` (routes and JSON shapes),
//! [`apiversion`] (negotiation), [`error`] (the one status mapping), [`daemon`] (container
//! operations on records), [`lifecycle`] (start/stop/kill/wait/restart policies over
//! `berth-runtime`'s monitor), [`network`] (container networking over `berth-network`),
//! [`mounts`] (binds, volumes and tmpfs of a container), [`volumes`] (volumes over
//! `berth-volume` and who uses them), [`exec`] (exec instances), [`archive`] (`docker cp`'s
//! container filesystem views),
//! [`health`] (health checks), [`stats`] (`docker stats` documents), [`update`]
//! (`docker update`), [`links`] (legacy `--link` environment and removal), [`detach`] (detach
//! keys of interactive sessions), [`store`] (crash-safe container
//! records), [`events`] (broadcast + replay ring), [`logs`] (json-file reading and stream
//! framing), [`filters`], [`time`], [`names`], [`host`], [`config`] (flags and daemon.json).
//! Images are `berth-image`'s [`berth_image::Store`], used directly.

#![recursion_limit = "256"]

mod api;
pub mod apiversion;
pub mod archive;
pub mod build;
pub mod config;
pub mod daemon;
pub mod detach;
pub mod error;
pub mod events;
pub mod exec;
pub mod filters;
pub mod health;
pub mod host;
pub mod lifecycle;
pub mod links;
pub mod logdriver;
pub mod logs;
pub mod mounts;
pub mod names;
pub mod network;
mod rootfs_users;
pub mod server;
pub mod stats;
pub mod store;
pub mod time;
pub mod tls;
pub mod update;
pub mod volumes;

pub use config::{Config, DaemonArgs};
pub use error::{Error, Result};

/// Runs `berth daemon` with parsed flags until SIGINT/SIGTERM; returns the exit code.
///
/// The tokio runtime is created here, after the binary has dispatched, with two workers: the
/// daemon mostly waits on sockets, and a small runtime keeps its idle footprint low.
pub fn run(args: &DaemonArgs) -> i32 {
    let config = match Config::load(args) {
        Ok(c) => c,
        Err(err) => {
            eprintln!("berth daemon: {err}");
            return 1;
        }
    };
    init_tracing(&config.log_level);
    // One malloc arena: the daemon's threads mostly wait, and per-thread arenas would each
    // keep their own freed memory resident.
    // SAFETY: mallopt only adjusts allocator parameters; it is called before any other thread
    // exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(8)
        .thread_name("berthd")
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("berth daemon: start async runtime: {err}");
            return 1;
        }
    };
    match runtime.block_on(server::run(config)) {
        Ok(()) => 0,
        Err(err) => {
            tracing::error!(%err, "daemon failed");
            eprintln!("berth daemon: {err}");
            1
        }
    }
}

fn init_tracing(level: &str) {
    let level = if level == "fatal" { "error" } else { level };
    let filter = tracing_subscriber::EnvFilter::try_from_env("BERTH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}
