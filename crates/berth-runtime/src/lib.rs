//! Berth's container runtime.
//!
//! Owns everything between an OCI bundle and a running, isolated process:
//!
//! * [`spec`]: runtime specs with Docker's defaults from an image config plus run options
//!   (users, capabilities, the default seccomp profile, masked paths, mounts, limits).
//! * [`resources`]: resource limits as plain data, applied at create time or live.
//! * [`container`]: the container lifecycle on top of youki's `libcontainer`, and the
//!   [`Runtime`] handle whose methods are safe to call from a multi-threaded daemon.
//! * `init`: Berth's own container init, which `create` uses for the specs it covers
//!   (Docker's, on a cgroup v1 host) instead of libcontainer's, for speed.
//! * [`monitor`]: the per-container monitor process (`berth monitor`) and its library API
//!   ([`monitor::spawn_monitor`], [`monitor::read_exit`]).
//! * [`cli`]: the runc-compatible command line (`berth runtime`).
//! * [`cgroup_tuning`]: the host-wide `favordynmods` cgroup mode, set when the administrator asks.
//!
//! # Threads and forks
//!
//! libcontainer forks with a raw `clone3`, which is only sound in a single-threaded process.
//! Creating containers and exec'ing into them therefore happens only in `berth runtime` and
//! `berth monitor` processes; the daemon starts containers with [`monitor::spawn_monitor`]
//! and uses [`Runtime`] (state files, signals, freezer, cgroup writes) in-process.
//!
//! # Tests
//!
//! Unit tests cover the spec builder, the seccomp profile, user resolution, limits, the
//! json-file log and the attach framing (`cargo test -p berth-runtime`). Integration tests in
//! `crates/berth/tests/runtime*.rs` run real containers through the `berth` binary as root
//! (`cargo test -p berth --test runtime --test runtime_monitor --test runtime_cgroup_v2`).
//! On this cgroup-v1 host, cgroup v2 is exercised in a private mount namespace for the
//! lifecycle (creation, freeze, process list, kill, removal) but not for resource limits,
//! whose controllers are all bound to v1.

mod cgroup_fs;
pub mod cgroup_tuning;
pub mod cli;
pub mod container;
pub mod error;
mod executor;
mod init;
pub mod monitor;
pub mod resources;
mod seccomp_filter;
pub mod spec;

pub use container::{ContainerState, Runtime};
pub use error::{Error, Result};
pub use resources::Limits;
