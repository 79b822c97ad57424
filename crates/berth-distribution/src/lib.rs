//! Berth's registry client: the client half of the OCI distribution protocol.
//!
//! Owns pulling images from registries into a [`berth_image::Store`] and pushing them out,
//! registry authentication (anonymous, basic, bearer-token challenges with per-scope token
//! caching, Docker config-file credentials and credential helpers, `docker login` checks),
//! the registry settings Docker has (insecure registries, docker.io mirrors, Hub host
//! mapping), and progress events in Docker's JSON progress shape.
//!
//! | Docker API | call |
//! |---|---|
//! | `POST /images/create?fromImage=` | [`Client::pull`] |
//! | `POST /images/{name}/push` | [`Client::push`] |
//! | `POST /auth` | [`Client::login`] |
//! | `GET /distribution/{name}/json` | [`Client::inspect_distribution`] |
//!
//! # Wiring into the daemon
//!
//! Build one [`Client`] at start-up from daemon.json (`insecure-registries`,
//! `registry-mirrors`, `max-concurrent-downloads`/`uploads` map onto [`RegistryConfig`]) and
//! share it in an `Arc`. Per request:
//!
//! - credentials: [`resolve_credentials`]`(reference, X-Registry-Auth header, &DockerConfig)`
//!   (the header wins; otherwise `DockerConfig::load_default()` of the daemon's user, whose
//!   `credsStore`/`credHelpers` programs it may run: call it under `spawn_blocking`);
//! - `POST /images/create?fromImage=NAME&tag=TAG&platform=P`: reference `NAME:TAG` (or
//!   `NAME@TAG` when TAG is a digest); call [`Client::pull`] with a [`Progress`] closure that
//!   sends [`ProgressMessage::to_json_line`] into the chunked `application/json` response; on
//!   error write [`error_json_line`] (Docker keeps the 200 status once streaming started);
//! - `POST /images/{name}/push?tag=T`: [`Client::push`] the same way;
//! - `POST /auth` (`{"username","password","serveraddress"}`): [`Client::login`], answer
//!   `{"Status": <returned text>, "IdentityToken": ""}`; map [`ErrorKind::Unauthorized`] to 401;
//! - `GET /distribution/{name}/json`: [`Client::inspect_distribution`], serialise as is.
//!
//! [`Error::kind`] gives the status for errors before streaming started (404 for unknown
//! manifests, 401, 400 for bad names, 500 otherwise).
//!
//! Every call is async (tokio); store work runs on the blocking pool. Hostile registries are
//! bounded: manifests and configs by [`pull::MAX_MANIFEST_SIZE`], blobs by their descriptor
//! size, redirects by [`client::MAX_REDIRECTS`], resumes by [`pull::MAX_RESUMES`]; every blob is
//! digest-checked by the store before it becomes visible.

pub mod auth;
pub mod client;
mod error;
pub mod progress;
pub mod pull;
pub mod push;

pub use auth::{resolve_credentials, Credentials, DockerConfig};
pub use client::{Client, RegistryConfig};
pub use error::{Error, ErrorKind, Result};
pub use progress::{error_json_line, no_progress, Progress, ProgressDetail, ProgressMessage};
pub use pull::{DistributionInspect, PullOptions, PullResult};
pub use push::{PushOptions, PushResult};
