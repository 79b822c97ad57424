//! Berth's registry client: the client half of the OCI distribution protocol.
//!
//! Owns pulling images from registries into a [`berth_image::Store`] and pushing them out,
//! registry authentication (anonymous, basic, bearer-token challenges with per-scope token
//! caching, Docker config-file credentials, `docker login` checks), the registry settings
//! Docker has (insecure registries, docker.io mirrors, Hub host mapping), and progress events
//! in Docker's JSON progress shape.
//!
//! | Docker API | call |
//! |---|---|
//! | `POST /images/create?fromImage=` | [`Client::pull`] |
//! | `POST /images/{name}/push` | [`Client::push`] |
//! | `POST /auth` | [`Client::login`] |
//! | `GET /distribution/{name}/json` | [`Client::inspect_distribution`] |
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

pub use auth::{Credentials, DockerConfig};
pub use client::{Client, RegistryConfig};
pub use error::{Error, ErrorKind, Result};
pub use progress::{error_json_line, no_progress, Progress, ProgressDetail, ProgressMessage};
pub use pull::{DistributionInspect, PullOptions, PullResult};
pub use push::{PushOptions, PushResult};
