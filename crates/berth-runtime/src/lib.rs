//! Berth's container runtime.
//!
//! Owns everything between an OCI bundle and a running, isolated process:
//!
//! * [`spec`]: runtime specs with Docker's defaults from an image config plus run options
//!   (users, capabilities, the default seccomp profile, masked paths, mounts, limits).
//! * [`resources`]: resource limits as plain data, applied at create time or live.
//! * [`container`]: the container lifecycle on top of youki's `libcontainer`, and the
//!   [`Runtime`] handle whose methods are safe to call from a multi-threaded daemon.
//! * [`monitor`]: the per-container monitor process (`berth monitor`) and its library API.
//! * [`cli`]: the runc-compatible command line (`berth runtime`).

pub mod cli;
pub mod container;
pub mod error;
pub mod monitor;
pub mod resources;
pub mod spec;

pub use container::{ContainerState, Runtime};
pub use error::{Error, Result};
pub use resources::Limits;
