//! Berth's Dockerfile builder, the classic builder's behaviour (`DOCKER_BUILDKIT=0`).
//!
//! Owns everything about a build that does not need the engine: the Dockerfile parser
//! ([`dockerfile`]), the word lexer and variable substitution ([`shell`]), `.dockerignore`
//! matching ([`ignore`]), the build context unpacked from a tar stream ([`context`]),
//! COPY/ADD ([`copy`]), the config-only instructions (`instructions`), the on-disk step cache
//! ([`cache`]), the images each step makes ([`image`]) and the executor that walks the
//! stages ([`build`](mod@build)). What needs the engine (pulling a base image, running a RUN step in a
//! container) is asked of a [`build::BuildBackend`], which the daemon implements.
//!
//! The same parser and instruction code apply `docker commit --change` and `docker import
//! --change` to a config ([`changes`]), so a change means what the instruction means in a
//! Dockerfile. [`duration`] reads Go durations (HEALTHCHECK flags, the CLI's `--since`).
//!
//! A build flows: context unpacked → Dockerfile read and parsed → meta ARGs → per stage:
//! FROM (a previous stage, scratch, or an image, pulled when missing) and ONBUILD triggers,
//! then each instruction: substitute, look the step up in the cache (parent image + what the
//! step does + for COPY/ADD a digest of the sources), else run it and record the new image →
//! tag the last stage's image.

pub mod build;
pub mod cache;
pub mod changes;
pub mod context;
pub mod copy;
pub mod dockerfile;
pub mod duration;
mod error;
pub mod ignore;
pub mod image;
mod instructions;
mod scratch;
pub mod shell;

pub use build::{build, BuildBackend, BuildOptions, Emit, RunSpec};
pub use cache::Cache;
pub use changes::{apply_changes, CHANGE_INSTRUCTIONS};
pub use context::Context;
pub use duration::go_duration;
pub use error::{Error, Result};
pub use scratch::recover;
