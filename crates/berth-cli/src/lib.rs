//! Berth's docker-compatible command line.
//!
//! Owns argument parsing for the user-facing commands (`ps`, `inspect`, `logs`, ...) and talks
//! to the daemon over the Docker Engine API; `berth daemon` is dispatched from here into
//! `berth-daemon`. This is the binary's edge, so errors are `anyhow` here.
//!
//! Modules: `client` (finding and talking to the daemon), `format` (`--format` templates and
//! tables), `commands` (one function per command).

mod client;
mod commands;
mod format;

use std::ffi::OsString;

use clap::{Parser, Subcommand};

pub use commands::{EventsArgs, InspectArgs, LogsArgs, PruneArgs, PsArgs, RmArgs};

/// A self-sufficient container engine
#[derive(Debug, Parser)]
#[command(name = "berth", version, about, disable_help_subcommand = true)]
struct Cli {
    /// Daemon socket to connect to
    #[arg(short = 'H', long = "host", value_name = "HOST")]
    host: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the Berth daemon
    Daemon(berth_daemon::DaemonArgs),
    /// Show the Berth version information
    Version {
        /// Format output using a custom template
        #[arg(short, long)]
        format: Option<String>,
    },
    /// Display system-wide information
    Info {
        /// Format output using a custom template
        #[arg(short, long)]
        format: Option<String>,
    },
    /// List containers
    Ps(PsArgs),
    /// Return low-level information on Berth objects
    Inspect(InspectArgs),
    /// Remove one or more containers
    Rm(RmArgs),
    /// Rename a container
    Rename {
        /// Container to rename
        container: String,
        /// Its new name
        new_name: String,
    },
    /// Fetch the logs of a container
    Logs(LogsArgs),
    /// Get real time events from the server
    Events(EventsArgs),
    /// Manage containers
    Container {
        #[command(subcommand)]
        command: ContainerCommand,
    },
    /// Manage Berth
    System {
        #[command(subcommand)]
        command: SystemCommand,
    },
}

#[derive(Debug, Subcommand)]
enum ContainerCommand {
    /// List containers
    #[command(visible_aliases = ["list", "ps"])]
    Ls(PsArgs),
    /// Display detailed information on one or more containers
    Inspect(InspectArgs),
    /// Remove one or more containers
    #[command(visible_alias = "remove")]
    Rm(RmArgs),
    /// Rename a container
    Rename {
        /// Container to rename
        container: String,
        /// Its new name
        new_name: String,
    },
    /// Fetch the logs of a container
    Logs(LogsArgs),
    /// Remove all stopped containers
    Prune(PruneArgs),
}

#[derive(Debug, Subcommand)]
enum SystemCommand {
    /// Display system-wide information
    Info {
        /// Format output using a custom template
        #[arg(short, long)]
        format: Option<String>,
    },
    /// Get real time events from the server
    Events(EventsArgs),
    /// Show Berth disk usage
    Df,
}

/// Runs the user-facing command line with the full argument vector (`argv[0]` included) and
/// returns the process exit code.
pub fn main(args: Vec<OsString>) -> i32 {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            return if err.use_stderr() { 125 } else { 0 };
        }
    };
    if let Command::Daemon(args) = &cli.command {
        if cli.host.is_some() {
            eprintln!("berth daemon: use -H after `daemon` to choose where it listens");
            return 125;
        }
        return berth_daemon::run(args);
    }
    restore_sigpipe();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("berth: start async runtime: {err}");
            return 1;
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(code) => code,
        Err(err) => {
            if err.downcast_ref::<client::ApiError>().is_some() {
                eprintln!("{err}");
            } else {
                eprintln!("berth: {err:#}");
            }
            1
        }
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<i32> {
    let mut client = client::Client::new(cli.host.as_deref())?;
    client.negotiate().await?;
    let c = &client;
    use commands as cmd;
    match cli.command {
        Command::Daemon(_) => unreachable!("handled before the runtime starts"),
        Command::Version { format } => cmd::version(c, format.as_deref()).await,
        Command::Info { format }
        | Command::System {
            command: SystemCommand::Info { format },
        } => cmd::info(c, format.as_deref()).await,
        Command::Ps(a)
        | Command::Container {
            command: ContainerCommand::Ls(a),
        } => cmd::ps(c, &a).await,
        Command::Inspect(a)
        | Command::Container {
            command: ContainerCommand::Inspect(a),
        } => cmd::inspect(c, &a).await,
        Command::Rm(a)
        | Command::Container {
            command: ContainerCommand::Rm(a),
        } => cmd::rm(c, &a).await,
        Command::Rename {
            container,
            new_name,
        }
        | Command::Container {
            command:
                ContainerCommand::Rename {
                    container,
                    new_name,
                },
        } => cmd::rename(c, &container, &new_name).await,
        Command::Logs(a)
        | Command::Container {
            command: ContainerCommand::Logs(a),
        } => cmd::logs(c, &a).await,
        Command::Events(a)
        | Command::System {
            command: SystemCommand::Events(a),
        } => cmd::events(c, &a).await,
        Command::Container {
            command: ContainerCommand::Prune(a),
        } => cmd::container_prune(c, &a).await,
        Command::System {
            command: SystemCommand::Df,
        } => cmd::df(c).await,
    }
}

/// Lets `berth ps | head` end quietly: Rust ignores SIGPIPE, which turns a closed pipe into a
/// write error (and a panic in `println!`), whereas a CLI should just die of the signal.
fn restore_sigpipe() {
    // SAFETY: called before any other thread exists in this process (the async runtime is
    // built afterwards); SIG_DFL is a valid disposition for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
