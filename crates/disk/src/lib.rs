//! Managed disks with server-side encryption: disk encryption sets, disks and their
//! wrapped data keys, virtual machines ([`service`]) and the NBD server ([`nbd`]); the
//! blocks at rest are `atrest-blocks`'. See ARCHITECTURE.md.
#![forbid(unsafe_code)]

mod error;
pub mod keys;
pub mod model;
pub mod nbd;
pub mod service;

pub use error::{ComputeError, KeyAccessError};
pub use keys::{KeyDescription, KeyFuture, KeyVaultAccess, KeyVersion};
pub use model::{Disk, DiskEncryptionSet, Image, ImageDisk, KeyRef, VirtualMachine, WrappedDek};
pub use service::{
    Compute, ComputeConfig, DesRequest, DiskRequest, Grant, ImageDiskRequest, ImageRequest,
    OpenDisk, SnapshotLimits, SnapshotRequest, Unreachable, VmRequest,
};
