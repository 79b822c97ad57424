//! Berth's docker-compatible command line.
//!
//! Owns argument parsing for the user-facing commands (`run`, `ps`, `images`, ...) and talks to
//! the daemon over the Docker Engine API; `berth daemon` is dispatched from here into
//! `berth-daemon`. This is the binary's edge, so errors are `anyhow` here.

use std::ffi::OsString;

/// Runs the user-facing command line with the full argument vector (`argv[0]` included) and
/// returns the process exit code.
pub fn main(args: Vec<OsString>) -> i32 {
    let _ = args;
    eprintln!("berth: no command yet");
    2
}
