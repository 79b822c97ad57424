//! Berth's private registry server (`berth registry serve`).
//!
//! Owns the server side of the OCI distribution protocol: the HTTP API, upload sessions, and
//! the filesystem storage of blobs, manifests and tags.

use std::ffi::OsString;

/// Runs `berth registry` with the arguments that follow `registry`; returns the exit code.
pub fn main(args: &[OsString]) -> i32 {
    let _ = args;
    eprintln!("berth registry: not implemented yet");
    2
}
