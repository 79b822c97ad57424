//! The per-container monitor process (`berth monitor ...`, re-executed by the daemon).
use std::ffi::OsString;

/// Runs the monitor with the arguments that follow `monitor`; returns the exit code.
pub fn main(args: &[OsString]) -> i32 {
    let _ = args;
    eprintln!("berth monitor: not implemented yet");
    2
}
