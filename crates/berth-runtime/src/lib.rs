//! Berth's container runtime.
//!
//! Owns everything between an OCI bundle and a running, isolated process: building runtime
//! specs with Docker's defaults, driving youki's `libcontainer` (namespaces, cgroups, pivot_root,
//! capabilities, seccomp), the per-container monitor process, and the runc-compatible command line.

pub mod cli {
    //! The runc-compatible command line (`berth runtime ...`).
    use std::ffi::OsString;

    /// Runs `berth runtime` with the arguments that follow `runtime`; returns the exit code.
    pub fn main(args: &[OsString]) -> i32 {
        let _ = args;
        eprintln!("berth runtime: not implemented yet");
        2
    }
}

pub mod monitor {
    //! The per-container monitor process (`berth monitor ...`, re-executed by the daemon).
    use std::ffi::OsString;

    /// Runs the monitor with the arguments that follow `monitor`; returns the exit code.
    pub fn main(args: &[OsString]) -> i32 {
        let _ = args;
        eprintln!("berth monitor: not implemented yet");
        2
    }
}
