//! Managed disks with server-side encryption: disk encryption sets, disks and their
//! wrapped data keys, virtual machines ([`service`]), the encrypted blocks at rest
//! ([`blocks`]) and the NBD server ([`nbd`]). See ARCHITECTURE.md.
#![forbid(unsafe_code)]

pub mod blocks;
mod error;
pub mod keys;
pub mod model;
pub mod nbd;
pub mod service;

pub use blocks::{DiskError, EncryptedFile, UNIT};
pub use error::{ComputeError, KeyAccessError};
pub use keys::{KeyDescription, KeyFuture, KeyVaultAccess, KeyVersion};
pub use model::{Disk, DiskEncryptionSet, KeyRef, VirtualMachine, WrappedDek};
pub use service::{Compute, ComputeConfig, DesRequest, DiskRequest, Grant, OpenDisk, VmRequest};
