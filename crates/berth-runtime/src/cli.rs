//! The runc-compatible command line (`berth runtime ...`), parsed with youki's `liboci-cli`.
//!
//! Every command runs in the fresh, single-threaded `berth` process, so the forking paths of
//! libcontainer (`create`, `run`, `exec`) are sound here. Errors are printed as ONE line on
//! stderr (`berth runtime: <error>`) and, when `--log` is given, appended to that file in
//! runc's text or JSON format so that shims reading the log find them.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};

use clap::{Parser, Subcommand};
use liboci_cli::{CommonCmd, GlobalOpts, StandardCmd};
use nix::sys::signal::{self, SigHandler, Signal};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;

use crate::container::{self, CreateOptions, ExecOptions, Runtime, DEFAULT_ROOT};
use crate::error::{Error, Result};

#[derive(Parser, Debug)]
#[command(name = "berth runtime", no_binary_name = true, version)]
struct Opts {
    #[command(flatten)]
    global: GlobalOpts,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    #[command(flatten)]
    Standard(Box<StandardCmd>),
    #[command(flatten)]
    Common(Box<CommonCmd>),
}

/// Global options that take a value (to find the subcommand among the arguments).
const GLOBAL_WITH_VALUE: &[&str] = &["--root", "-r", "--log", "-l", "--log-format"];

/// runc's `kill ID` means `kill ID SIGTERM`; liboci-cli requires the signal, so add it.
fn default_kill_signal(args: &[OsString]) -> Vec<OsString> {
    let mut out = args.to_vec();
    let mut i = 0;
    while i < args.len() {
        match args[i].to_str() {
            Some(a) if GLOBAL_WITH_VALUE.contains(&a) => i += 2,
            Some(a) if a.starts_with('-') => i += 1,
            Some("kill") => {
                let positional = args[i + 1..]
                    .iter()
                    .filter(|a| !a.to_str().is_some_and(|s| s.starts_with('-')))
                    .count();
                if positional == 1 {
                    out.push(OsString::from("SIGTERM"));
                }
                break;
            }
            _ => break,
        }
    }
    out
}

/// Runs `berth runtime` with the arguments that follow `runtime`; returns the exit code.
pub fn main(args: &[OsString]) -> i32 {
    let args = default_kill_signal(args);
    let opts = match Opts::try_parse_from(&args) {
        Ok(opts) => opts,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    let log = LogTarget {
        path: opts.global.log.clone(),
        json: opts.global.log_format.as_deref() == Some("json"),
    };
    let runtime = Runtime::new(
        opts.global
            .root
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_ROOT)),
    );
    match dispatch(&runtime, opts.cmd) {
        Ok(code) => code,
        Err(e) => {
            log.error(&e);
            1
        }
    }
}

struct LogTarget {
    path: Option<PathBuf>,
    json: bool,
}

impl LogTarget {
    fn error(&self, err: &Error) {
        let msg = crate::error::one_line(err);
        eprintln!("berth runtime: {msg}");
        let Some(path) = &self.path else { return };
        let Ok(mut file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        else {
            return;
        };
        let time = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
        let line = if self.json {
            serde_json::json!({"level": "error", "msg": msg, "time": time}).to_string()
        } else {
            format!("time=\"{time}\" level=error msg={msg:?}")
        };
        let _ = writeln!(file, "{line}");
    }
}

fn dispatch(runtime: &Runtime, cmd: Cmd) -> Result<i32> {
    match cmd {
        Cmd::Standard(cmd) => match *cmd {
            StandardCmd::Create(a) => {
                container::create(
                    runtime,
                    &a.container_id,
                    &a.bundle,
                    CreateOptions {
                        pid_file: a.pid_file,
                        console_socket: a.console_socket,
                        preserve_fds: a.preserve_fds,
                        no_pivot: a.no_pivot,
                        detach: true,
                        ..Default::default()
                    },
                )?;
                Ok(0)
            }
            StandardCmd::Start(a) => runtime.start(&a.container_id).map(|()| 0),
            StandardCmd::State(a) => {
                let state = runtime.state(&a.container_id)?;
                let text = serde_json::to_string_pretty(&state)
                    .map_err(|e| Error::json("encode state", e))?;
                println!("{text}");
                Ok(0)
            }
            StandardCmd::Kill(a) => {
                let sig = parse_signal(&a.signal)?;
                runtime.kill(&a.container_id, sig, a.all).map(|()| 0)
            }
            StandardCmd::Delete(a) => {
                if !runtime.exists(&a.container_id) && a.force {
                    // runc: `delete --force` of a missing container is not an error.
                    crate::container::validate_id(&a.container_id)?;
                    return Ok(0);
                }
                runtime.delete(&a.container_id, a.force).map(|()| 0)
            }
        },
        Cmd::Common(cmd) => match *cmd {
            CommonCmd::Run(a) => run(runtime, a),
            CommonCmd::Exec(a) => exec(runtime, a),
            CommonCmd::Pause(a) => runtime.pause(&a.container_id).map(|()| 0),
            CommonCmd::Resume(a) => runtime.resume(&a.container_id).map(|()| 0),
            CommonCmd::Ps(a) => ps(runtime, &a.container_id, &a.format, &a.ps_options),
            CommonCmd::List(a) => list(runtime, &a.format, a.quiet),
            CommonCmd::Update(a) => update(runtime, a),
            CommonCmd::Features(_) => {
                println!("{}", features_json());
                Ok(0)
            }
            other => Err(Error::InvalidOption(format!(
                "command not supported: {}",
                command_name(&other)
            ))),
        },
    }
}

fn command_name(cmd: &CommonCmd) -> &'static str {
    match cmd {
        CommonCmd::Checkpointt(_) => "checkpoint",
        CommonCmd::Events(_) => "events",
        CommonCmd::Spec(_) => "spec",
        _ => "unknown",
    }
}

fn features_json() -> String {
    serde_json::json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": oci_spec::runtime::VERSION,
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "user", "uts"],
            "cgroup": {"v1": true, "v2": true, "systemd": false},
            "seccomp": {"enabled": true},
        }
    })
    .to_string()
}

/// Parses `KILL`, `SIGKILL`, `kill` or `9`.
pub fn parse_signal(text: &str) -> Result<Signal> {
    let unknown = || Error::UnknownSignal(text.to_owned());
    if let Ok(n) = text.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| unknown());
    }
    let upper = text.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse::<Signal>().map_err(|_| unknown())
}

/// The pid signals are forwarded to while `run`/`exec` waits in the foreground.
static FORWARD_PID: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward_signal(sig: libc::c_int) {
    let pid = FORWARD_PID.load(Ordering::Relaxed);
    if pid > 0 {
        // SAFETY: kill(2) is async-signal-safe; the pid is our own child.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

/// Installs the forwarding handlers. Done before the container exists so that a signal sent
/// as soon as it runs is not lost (or fatal to us); until [`wait_forwarding`] names the pid,
/// signals are dropped.
fn install_forwarding() -> Result<()> {
    for sig in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
        Signal::SIGWINCH,
    ] {
        // SAFETY: the handler only calls kill(2) on an atomic pid: async-signal-safe.
        unsafe { signal::signal(sig, SigHandler::Handler(forward_signal)) }
            .map_err(|e| Error::sys("install signal handler", e))?;
    }
    Ok(())
}

/// Forwards signals to `pid` and waits for it. Returns the exit code the way a shell reports
/// it (128+signal).
fn wait_forwarding(pid: Pid) -> Result<i32> {
    FORWARD_PID.store(pid.as_raw(), Ordering::Relaxed);
    loop {
        match waitpid(pid, None) {
            Ok(status) => {
                if let Some((code, _)) = container::exit_code(status) {
                    return Ok(code);
                }
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(Error::sys(format!("wait for pid {pid}"), e)),
        }
    }
}

fn run(runtime: &Runtime, a: liboci_cli::Run) -> Result<i32> {
    let id = a.container_id.clone();
    if !a.detach {
        install_forwarding()?;
    }
    let pid = container::create(
        runtime,
        &id,
        &a.bundle,
        CreateOptions {
            pid_file: a.pid_file,
            console_socket: a.console_socket,
            preserve_fds: a.preserve_fds,
            no_pivot: a.no_pivot,
            detach: a.detach,
            ..Default::default()
        },
    )?;
    // From here on, signals reach the container (its process runs as soon as start returns).
    FORWARD_PID.store(pid.as_raw(), Ordering::Relaxed);
    if let Err(e) = runtime.start(&id) {
        let _ = runtime.delete(&id, true);
        let _ = waitpid(pid, None);
        return Err(e);
    }
    if a.detach {
        return Ok(0);
    }
    let code = wait_forwarding(pid);
    if !a.keep {
        // A concurrent `pause`/`resume` may be rewriting state.json: retry once.
        if runtime.delete(&id, true).is_err() {
            std::thread::sleep(std::time::Duration::from_millis(20));
            runtime.delete(&id, true)?;
        }
    }
    code
}

fn exec(runtime: &Runtime, a: liboci_cli::Exec) -> Result<i32> {
    let env: HashMap<String, String> = a.env.into_iter().collect();
    let detach = a.detach;
    if !detach {
        install_forwarding()?;
    }
    let pid = container::exec(
        runtime,
        &a.container_id,
        ExecOptions {
            process: a.process,
            args: a.command,
            env,
            cwd: a.cwd,
            user: a.user.map(|(u, _)| u),
            group: a.user.and_then(|(_, g)| g),
            additional_gids: a.additional_gids,
            no_new_privs: a.no_new_privs,
            caps: a.cap,
            console_socket: a.console_socket,
            pid_file: a.pid_file,
            preserve_fds: a.preserve_fds,
            detach,
            ignore_paused: a.ignore_paused,
            ..Default::default()
        },
    )?;
    if detach {
        return Ok(0);
    }
    wait_forwarding(pid)
}

fn ps(runtime: &Runtime, id: &str, format: &str, ps_options: &[String]) -> Result<i32> {
    let pids = runtime.processes(id)?;
    match format {
        "json" => {
            println!("{}", serde_json::to_string(&pids).unwrap_or_default());
            Ok(0)
        }
        "table" => {
            let opts: Vec<&str> = if ps_options.is_empty() {
                vec!["-ef"]
            } else {
                ps_options.iter().map(String::as_str).collect()
            };
            let out = std::process::Command::new("ps")
                .args(&opts)
                .output()
                .map_err(|e| Error::io("run ps", e))?;
            let text = String::from_utf8_lossy(&out.stdout);
            let mut lines = text.lines();
            let Some(header) = lines.next() else {
                return Ok(0);
            };
            let pid_col = header
                .split_whitespace()
                .position(|h| h == "PID")
                .ok_or_else(|| Error::InvalidOption("ps output has no PID column".into()))?;
            println!("{header}");
            for line in lines {
                let pid = line
                    .split_whitespace()
                    .nth(pid_col)
                    .and_then(|p| p.parse::<i32>().ok());
                if pid.is_some_and(|p| pids.contains(&p)) {
                    println!("{line}");
                }
            }
            Ok(0)
        }
        other => Err(Error::InvalidOption(format!("unknown ps format {other:?}"))),
    }
}

fn list(runtime: &Runtime, format: &str, quiet: bool) -> Result<i32> {
    let states = runtime.list()?;
    if quiet {
        for s in &states {
            println!("{}", s.id);
        }
    } else if format == "json" {
        println!(
            "{}",
            serde_json::to_string(&states).map_err(|e| Error::json("encode list", e))?
        );
    } else {
        println!("ID\tPID\tSTATUS\tBUNDLE\tCREATED\tOWNER");
        for s in &states {
            println!(
                "{}\t{}\t{}\t{}\t{}\t{}",
                s.id,
                s.pid,
                s.status,
                s.bundle.display(),
                s.created,
                if s.owner.is_empty() { "root" } else { &s.owner }
            );
        }
    }
    Ok(0)
}

fn update(runtime: &Runtime, a: liboci_cli::Update) -> Result<i32> {
    use oci_spec::runtime::LinuxResources;
    let resources: LinuxResources = match &a.resources {
        Some(path) => read_resources(path)?,
        None => {
            let limits = crate::resources::Limits {
                memory: a.memory.map(|v| v as i64),
                memory_swap: a.memory_swap,
                memory_reservation: a.memory_reservation.map(|v| v as i64),
                cpu_shares: a.cpu_share,
                cpu_quota: a.cpu_quota.map(|v| v as i64),
                cpu_period: a.cpu_period,
                cpuset_cpus: a.cpuset_cpus.clone(),
                cpuset_mems: a.cpuset_mems.clone(),
                pids_limit: a.pids_limit,
                blkio_weight: a.blkio_weight.map(|v| v as u16),
                ..Default::default()
            };
            limits.to_oci()?
        }
    };
    runtime
        .update_resources(&a.container_id, &resources)
        .map(|()| 0)
}

fn read_resources(path: &Path) -> Result<oci_spec::runtime::LinuxResources> {
    let text = if path == Path::new("-") {
        let mut buf = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut buf)
            .map_err(|e| Error::io("read resources from stdin", e))?;
        buf
    } else {
        std::fs::read_to_string(path).map_err(|e| Error::io(path.display().to_string(), e))?
    };
    serde_json::from_str(&text).map_err(|e| Error::json(path.display().to_string(), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kill_defaults_to_sigterm() {
        let os = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(
            default_kill_signal(&os(&["--root", "/r", "kill", "c1"])),
            os(&["--root", "/r", "kill", "c1", "SIGTERM"])
        );
        assert_eq!(
            default_kill_signal(&os(&["kill", "--all", "c1", "KILL"])),
            os(&["kill", "--all", "c1", "KILL"])
        );
        assert_eq!(
            default_kill_signal(&os(&["state", "c1"])),
            os(&["state", "c1"])
        );
    }

    #[test]
    fn signals_parse_by_name_and_number() {
        assert_eq!(parse_signal("KILL").unwrap(), Signal::SIGKILL);
        assert_eq!(parse_signal("sigterm").unwrap(), Signal::SIGTERM);
        assert_eq!(parse_signal("9").unwrap(), Signal::SIGKILL);
        assert!(parse_signal("NOPE").is_err());
        assert!(parse_signal("999").is_err());
    }
}
