//! Disk blocks at rest: AES-256-XTS ciphertext in 1 MiB chunks, each written once under a
//! new generation, a manifest per disk, and a local write-back cache. See the
//! `atrest-blocks` entry of ARCHITECTURE.md.
#![forbid(unsafe_code)]

mod error;
mod files;
pub mod manifest;
#[cfg(feature = "object-store")]
mod object;
mod store;
#[cfg(test)]
mod tests;
mod volume;

pub use error::BlockError;
pub use manifest::{ChunkRef, Manifest, CHUNK, UNIT};
pub use store::{BlockStore, Collected};
pub use volume::{freeze_together, Change, Volume};
