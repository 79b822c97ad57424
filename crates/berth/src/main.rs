//! The `berth` binary: one executable for the CLI, the daemon, the OCI runtime and the
//! per-container monitor. It only dispatches; behaviour lives in the library crates.
//!
//! `runtime` and `monitor` are dispatched before anything else runs, because youki's
//! `libcontainer` forks with a raw `clone3` and must be called from a single-threaded process:
//! no async runtime, no helper threads may exist at that point.

use std::ffi::OsString;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    let code = match args.get(1).and_then(|arg| arg.to_str()) {
        Some("runtime") => berth_runtime::cli::main(&args[2..]),
        Some("monitor") => berth_runtime::monitor::main(&args[2..]),
        Some("registry") => berth_registry::main(&args[2..]),
        _ => berth_cli::main(args),
    };
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
