//! Managed disks with server-side encryption: disk encryption sets, disks and their data
//! keys, virtual machines ([`service`]), the encrypted blocks at rest ([`blocks`]), and the
//! NBD server that exports a running machine's disks ([`nbd`]).
//!
//! Every disk has one random AES-256-XTS data key per encryption layer, stored only
//! wrapped: by the platform key (sealed by the instance root key), by a customer-managed
//! key reached through the vault's API as the disk encryption set's identity, or both.
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
pub use service::{Compute, ComputeConfig, DesRequest, DiskRequest, OpenDisk, VmRequest};
