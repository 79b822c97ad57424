//! Berth's daemon.
//!
//! Owns the Docker Engine REST API: HTTP serving on unix and TCP sockets, API version
//! negotiation, the mapping of library errors onto Docker's status codes, the daemon's
//! crash-safe container records, and the event stream. Behaviour lives in the runtime and image
//! crates; this crate translates between them and the wire.
