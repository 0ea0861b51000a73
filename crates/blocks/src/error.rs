use std::io;

use atrest_xts::XtsError;
use thiserror::Error;

use crate::manifest::UNIT;

/// A refused or failed access to a disk's blocks.
#[derive(Debug, Error)]
pub enum BlockError {
    /// The range runs past the end of the disk.
    #[error("the range {offset}+{len} runs past the end of the {size}-byte disk")]
    OutOfRange {
        /// Start of the request.
        offset: u64,
        /// Its length.
        len: u64,
        /// The disk's size.
        size: u64,
    },
    /// A size that is not a whole number of units.
    #[error("a disk size must be a positive multiple of {UNIT} bytes, not {0}")]
    BadSize(u64),
    /// A local file could not be read or written.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// The cipher refused a unit.
    #[error(transparent)]
    Cipher(#[from] XtsError),
    /// The disk's keys have been withdrawn.
    #[error("the disk's encryption key is not available")]
    KeyUnavailable,
    /// A stored manifest that does not parse.
    #[error("the block manifest of disk '{disk}' is damaged: {reason}")]
    Manifest {
        /// The disk.
        disk: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Another writer got there first: a chunk generation or a manifest version this
    /// writer was about to create already exists. Nothing was overwritten.
    #[error("another writer changed the blocks of disk '{0}'; this one stops")]
    Conflict(String),
    /// A chunk a manifest names is not in the store.
    #[error("chunk {0} is missing from the block store")]
    Missing(String),
    /// The object store failed.
    #[error("the block store failed: {0}")]
    Backend(String),
    /// The `--blob-store` URL is not one this build understands.
    #[error("unsupported block store URL '{url}': {reason}")]
    BadUrl {
        /// The URL given.
        url: String,
        /// Why it was refused.
        reason: String,
    },
}
