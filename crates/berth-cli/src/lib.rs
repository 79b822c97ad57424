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
mod progress;

use std::ffi::OsString;

use clap::{Parser, Subcommand};

pub use commands::{
    CreateArgs, EventsArgs, ExecArgs, ImagesArgs, InspectArgs, LogsArgs, PruneArgs, PsArgs, RmArgs,
    RunArgs, StopArgs,
};

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

/// Each subcommand's arguments are built only when it runs (`defer`): building all of them
/// for every invocation cost about half a millisecond of each CLI start.
#[derive(Debug, Subcommand)]
#[command(defer = true)]
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
    /// Create a new container
    Create(CreateArgs),
    /// Create and run a new container from an image
    Run(RunArgs),
    /// Start one or more stopped containers
    Start {
        /// Containers
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Execute a command in a running container
    Exec(ExecArgs),
    /// Stop one or more running containers
    Stop(StopArgs),
    /// Restart one or more containers
    Restart(StopArgs),
    /// Kill one or more running containers
    Kill {
        /// Signal to send to the container
        #[arg(short, long)]
        signal: Option<String>,
        /// Containers
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Block until one or more containers stop, then print their exit codes
    Wait {
        /// Containers
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Pause all processes within one or more containers
    Pause {
        /// Containers
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Unpause all processes within one or more containers
    Unpause {
        /// Containers
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Display a live stream of container(s) resource usage statistics
    Stats(commands::StatsArgs),
    /// Update configuration of one or more containers
    Update(commands::UpdateArgs),
    /// Copy files/folders between a container and the local filesystem
    Cp(commands::CpArgs),
    /// Export a container's filesystem as a tar archive
    Export {
        /// Write to a file, instead of STDOUT
        #[arg(short, long)]
        output: Option<String>,
        /// Container
        container: String,
    },
    /// Inspect changes to files or directories on a container's filesystem
    Diff {
        /// Container
        container: String,
    },
    /// Create a new image from a container's changes
    Commit(commands::CommitArgs),
    /// Display the running processes of a container
    Top {
        /// Container
        container: String,
        /// ps options
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        ps_args: Vec<String>,
    },
    /// List images
    Images(ImagesArgs),
    /// Build an image from a Dockerfile
    Build(commands::BuildArgs),
    /// Download an image from a registry
    Pull(commands::PullArgs),
    /// Upload an image to a registry
    Push(commands::PushArgs),
    /// Log in to a registry
    Login(commands::LoginArgs),
    /// Log out from a registry
    Logout {
        /// Registry server (Docker Hub when omitted)
        server: Option<String>,
    },
    /// Remove one or more images
    Rmi {
        /// Force removal of the image
        #[arg(short, long)]
        force: bool,
        /// Images
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE
    Tag {
        /// Source image
        source: String,
        /// Target reference
        target: String,
    },
    /// Load an image from a tar archive or STDIN
    Load {
        /// Read from tar archive file, instead of STDIN
        #[arg(short, long)]
        input: Option<String>,
        /// Suppress the load output
        #[arg(short, long)]
        quiet: bool,
    },
    /// Save one or more images to a tar archive (streamed to STDOUT by default)
    Save {
        /// Write to a file, instead of STDOUT
        #[arg(short, long)]
        output: Option<String>,
        /// Images
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Import the contents from a tarball to create a filesystem image
    Import {
        /// Apply Dockerfile instruction to the created image
        #[arg(short, long = "change")]
        change: Vec<String>,
        /// Set commit message for imported image
        #[arg(short, long)]
        message: Option<String>,
        /// Tarball (or - for STDIN)
        file: String,
        /// Repository and tag
        reference: Option<String>,
    },
    /// Show the history of an image
    History {
        /// Don't truncate output
        #[arg(long)]
        no_trunc: bool,
        /// Format output using a custom template
        #[arg(long)]
        format: Option<String>,
        /// Image
        image: String,
    },
    /// Manage images
    Image {
        #[command(subcommand)]
        command: ImageCommand,
    },
    /// Manage containers
    Container {
        #[command(subcommand)]
        command: ContainerCommand,
    },
    /// Manage networks
    Network {
        #[command(subcommand)]
        command: commands::NetworkCommand,
    },
    /// Manage volumes
    Volume {
        #[command(subcommand)]
        command: commands::VolumeCommand,
    },
    /// Manage Berth
    System {
        #[command(subcommand)]
        command: SystemCommand,
    },
}

#[derive(Debug, Subcommand)]
#[command(defer = true)]
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
    /// Create a new container
    Create(CreateArgs),
    /// Create and run a new container from an image
    Run(RunArgs),
    /// Start one or more stopped containers
    Start {
        /// Containers
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Stop one or more running containers
    Stop(StopArgs),
    /// Block until one or more containers stop, then print their exit codes
    Wait {
        /// Containers
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Copy files/folders between a container and the local filesystem
    Cp(commands::CpArgs),
    /// Export a container's filesystem as a tar archive
    Export {
        /// Write to a file, instead of STDOUT
        #[arg(short, long)]
        output: Option<String>,
        /// Container
        container: String,
    },
    /// Inspect changes to files or directories on a container's filesystem
    Diff {
        /// Container
        container: String,
    },
    /// Create a new image from a container's changes
    Commit(commands::CommitArgs),
}

#[derive(Debug, Subcommand)]
#[command(defer = true)]
enum ImageCommand {
    /// List images
    #[command(visible_aliases = ["list"])]
    Ls(ImagesArgs),
    /// Display detailed information on one or more images
    Inspect {
        /// Format output using a custom template
        #[arg(short, long)]
        format: Option<String>,
        /// Images
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Remove one or more images
    #[command(visible_alias = "remove")]
    Rm {
        /// Force removal of the image
        #[arg(short, long)]
        force: bool,
        /// Images
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Remove unused images
    Prune {
        /// Remove all unused images, not just dangling ones
        #[arg(short, long)]
        all: bool,
        /// Do not prompt for confirmation
        #[arg(short, long)]
        force: bool,
    },
    /// Show the history of an image
    History {
        /// Don't truncate output
        #[arg(long)]
        no_trunc: bool,
        /// Format output using a custom template
        #[arg(long)]
        format: Option<String>,
        /// Image
        image: String,
    },
}

#[derive(Debug, Subcommand)]
#[command(defer = true)]
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
    let result = runtime.block_on(dispatch(cli));
    // Do not wait for a blocking stdin read that `run -i` may have left behind.
    runtime.shutdown_background();
    match result {
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
    if let Command::Logout { server } = &cli.command {
        // Only edits the config file: no daemon needed.
        return commands::logout(server.as_deref());
    }
    let client = client::Client::new(cli.host.as_deref())?;
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
        Command::Create(a)
        | Command::Container {
            command: ContainerCommand::Create(a),
        } => cmd::create(c, &a).await,
        Command::Run(a)
        | Command::Container {
            command: ContainerCommand::Run(a),
        } => cmd::run(c, &a).await,
        Command::Start { containers }
        | Command::Container {
            command: ContainerCommand::Start { containers },
        } => cmd::start(c, &containers).await,
        Command::Stop(a)
        | Command::Container {
            command: ContainerCommand::Stop(a),
        } => cmd::stop(c, &a).await,
        Command::Restart(a) => cmd::restart(c, &a).await,
        Command::Exec(a) => cmd::exec(c, &a).await,
        Command::Kill { signal, containers } => cmd::kill(c, signal.as_deref(), &containers).await,
        Command::Wait { containers }
        | Command::Container {
            command: ContainerCommand::Wait { containers },
        } => cmd::wait(c, &containers).await,
        Command::Pause { containers } => cmd::pause(c, &containers, true).await,
        Command::Unpause { containers } => cmd::pause(c, &containers, false).await,
        Command::Cp(a)
        | Command::Container {
            command: ContainerCommand::Cp(a),
        } => cmd::cp(c, &a).await,
        Command::Export { output, container }
        | Command::Container {
            command: ContainerCommand::Export { output, container },
        } => cmd::export(c, output.as_deref(), &container).await,
        Command::Diff { container }
        | Command::Container {
            command: ContainerCommand::Diff { container },
        } => cmd::diff(c, &container).await,
        Command::Commit(a)
        | Command::Container {
            command: ContainerCommand::Commit(a),
        } => cmd::commit(c, &a).await,
        Command::Top { container, ps_args } => cmd::top(c, &container, &ps_args).await,
        Command::Stats(a) => cmd::stats(c, &a).await,
        Command::Update(a) => cmd::update(c, &a).await,
        Command::Images(a)
        | Command::Image {
            command: ImageCommand::Ls(a),
        } => cmd::images(c, &a).await,
        Command::Rmi { force, images }
        | Command::Image {
            command: ImageCommand::Rm { force, images },
        } => cmd::rmi(c, force, &images).await,
        Command::Tag { source, target } => cmd::tag(c, &source, &target).await,
        Command::Build(a) => cmd::build(c, &a).await,
        Command::Pull(a) => cmd::pull(c, &a).await,
        Command::Push(a) => cmd::push(c, &a).await,
        Command::Login(a) => cmd::login(c, &a).await,
        Command::Logout { .. } => unreachable!("handled before connecting"),
        Command::Load { input, quiet: _ } => cmd::load(c, input.as_deref()).await,
        Command::Save { output, images } => cmd::save(c, output.as_deref(), &images).await,
        Command::Import {
            change,
            message,
            file,
            reference,
        } => cmd::import(c, &file, reference.as_deref(), &change, message.as_deref()).await,
        Command::History {
            no_trunc,
            format,
            image,
        }
        | Command::Image {
            command:
                ImageCommand::History {
                    no_trunc,
                    format,
                    image,
                },
        } => cmd::history(c, &image, no_trunc, format.as_deref()).await,
        Command::Image {
            command: ImageCommand::Inspect { format, images },
        } => {
            let args = InspectArgs::for_images(format, images);
            cmd::inspect(c, &args).await
        }
        Command::Image {
            command: ImageCommand::Prune { all, force },
        } => cmd::image_prune(c, all, force).await,
        Command::Network { command } => cmd::network(c, command).await,
        Command::Volume { command } => cmd::volume(c, command).await,
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
