//! What runs beside the edge and needs no HTTP: the audit writer and trail, detections,
//! the throttle, metrics, the log tables, instance metadata and the scheduler's clock. See
//! ARCHITECTURE.md.
#![forbid(unsafe_code)]

use std::path::PathBuf;

use thiserror::Error;

pub mod audit;
pub mod cluster;

/// Runs one request so that its checks of the shared state's generation share one read
/// made after the request began (the edge wraps every request in it).
pub use atrest_store::within_request;
pub mod detect;
pub mod logs;
pub mod meta;
pub mod metrics;
pub mod scheduler;
pub mod throttle;
pub mod time;
pub mod trail;

/// A fault of the instance's own storage or keys: every variant is a server fault (500),
/// its detail for the log only.
#[derive(Debug, Error)]
pub enum Error {
    /// A database failed.
    #[error(transparent)]
    Store(#[from] atrest_store::StoreError),
    /// The directory could not be read.
    #[error(transparent)]
    Directory(#[from] atrest_identity::DirectoryError),
    /// The root key or a sealed value could not be used.
    #[error(transparent)]
    Crypto(#[from] atrest_crypto::CryptoError),
    /// A file or directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A stored value is not what was written.
    #[error("{0}")]
    Damaged(String),
    /// The data directory's root key is not the one the state database was created with.
    #[error(
        "root.key in the data directory is not the key this state database was created with \
         (every replica needs a copy of the same root.key); nothing was written"
    )]
    WrongRootKey,
}
