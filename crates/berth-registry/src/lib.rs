//! Berth's private registry server (`berth registry serve`).
//!
//! Owns the server side of the OCI distribution protocol: the HTTP API ([`server`]), upload
//! sessions and the filesystem storage of blobs, manifests and tags ([`storage`]), and the
//! offline garbage collector ([`gc`]).
//!
//! ```text
//! berth registry serve [--addr 127.0.0.1:5000] [--root /var/lib/berth-registry] [--config FILE]
//! berth registry gc [--root DIR] [--dry-run] [--delete-untagged]
//! berth registry htpasswd USER < password          (prints an htpasswd line, bcrypt)
//! ```
//!
//! `--config` names a JSON file; see [`config::Config`].

pub mod auth;
pub mod body;
pub mod config;
pub mod digest;
pub mod error;
pub mod gc;
pub mod name;
pub mod server;
pub mod storage;
pub mod tls;

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, Subcommand};

const DEFAULT_ROOT: &str = "/var/lib/berth-registry";

#[derive(Parser)]
#[command(name = "berth registry", about = "Berth's OCI distribution registry")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the OCI distribution API over HTTP.
    Serve {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:5000")]
        addr: SocketAddr,
        /// Storage directory.
        #[arg(long, default_value = DEFAULT_ROOT)]
        root: PathBuf,
        /// JSON configuration file: read-only mode, auth, TLS (see `config::Config`).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Remove blobs no manifest references (run with the server stopped).
    Gc {
        #[arg(long, default_value = DEFAULT_ROOT)]
        root: PathBuf,
        /// Report what would be removed without removing it.
        #[arg(long)]
        dry_run: bool,
        /// Also delete manifests that no tag reaches (directly, through an index, or as a
        /// referrer of a reached manifest).
        #[arg(long)]
        delete_untagged: bool,
    },
    /// Print an htpasswd line for USER with the password read from stdin (bcrypt).
    Htpasswd { user: String },
}

/// Runs `berth registry` with the arguments that follow `registry`; returns the exit code.
pub fn main(args: &[OsString]) -> i32 {
    let argv = std::iter::once(OsString::from("berth registry")).chain(args.iter().cloned());
    let cli = match Cli::try_parse_from(argv) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
    match cli.command {
        Command::Serve { addr, root, config } => match run_serve(addr, root, config) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("berth registry: {e}");
                1
            }
        },
        Command::Htpasswd { user } => {
            let mut password = String::new();
            if let Err(e) = std::io::stdin().read_line(&mut password) {
                eprintln!("berth registry htpasswd: read password: {e}");
                return 1;
            }
            let password = password.trim_end_matches(['\r', '\n']);
            match auth::htpasswd_line(&user, password) {
                Ok(line) => {
                    println!("{line}");
                    0
                }
                Err(e) => {
                    eprintln!("berth registry htpasswd: {e}");
                    1
                }
            }
        }
        Command::Gc {
            root,
            dry_run,
            delete_untagged,
        } => {
            let opts = gc::GcOptions {
                dry_run,
                delete_untagged,
            };
            let result = storage::Store::open(&root).and_then(|s| gc::collect(&s, opts));
            match result {
                Ok(r) => {
                    let verb = if dry_run { "would remove" } else { "removed" };
                    for (repo, d) in &r.untagged {
                        println!("{verb} untagged manifest {repo}@{d}");
                    }
                    for d in &r.swept {
                        println!("{verb} {d}");
                    }
                    println!(
                        "{} blobs marked, {verb} {} blobs ({} bytes)",
                        r.marked,
                        r.swept.len(),
                        r.bytes
                    );
                    0
                }
                Err(e) => {
                    eprintln!("berth registry gc: {e}");
                    1
                }
            }
        }
    }
}

fn run_serve(
    addr: SocketAddr,
    root: PathBuf,
    config: Option<PathBuf>,
) -> Result<(), Box<dyn std::error::Error>> {
    let config = match config {
        Some(path) => config::Config::load(&path)?,
        None => config::Config::default(),
    };
    let store = storage::Store::open(&root)?;
    let tls = config.tls.as_ref().map(tls::acceptor).transpose()?;
    let auth = config
        .auth
        .map(|a| auth::Auth::load(a, tls.is_some()))
        .transpose()?;
    let registry = Arc::new(server::Registry {
        store,
        read_only: config.read_only,
        auth,
    });
    let scheme = if tls.is_some() { "https" } else { "http" };
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("bind {addr}: {e}"))?;
        // Tests and scripts read the bound address (the port may have been 0).
        let local = listener.local_addr()?;
        eprintln!("berth registry listening on {local}");
        tracing::info!("serving {} on {scheme}://{local}", root.display());
        server::serve(listener, registry, tls, shutdown_signal()).await;
        tracing::info!("stopped");
        Ok(())
    })
}

/// Completes on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
