//! Managed disks with server-side encryption: disk encryption sets, disks and their
//! wrapped data keys, virtual machines ([`service`]) and the NBD server ([`nbd`]); the
//! blocks at rest are `atrest-blocks`'. See ARCHITECTURE.md.
#![forbid(unsafe_code)]

mod bek;
mod error;
pub mod keys;
pub mod model;
pub mod nbd;
pub mod service;

pub use error::{ComputeError, KeyAccessError};
pub use keys::{
    KeyDescription, KeyFuture, KeyVaultAccess, KeyVersion, PlatformSecret, VaultDescription,
};
pub use model::{
    AdeVolume, Disk, DiskEncryptionSet, Image, ImageDisk, KeyRef, VirtualMachine, VmExtension,
    WrappedDek,
};
pub use service::{
    BekExport, Compute, ComputeConfig, DesRequest, DiskRequest, EncryptionStatus, Export,
    ExtensionRequest, Grant, ImageDiskRequest, ImageRequest, OpenDisk, RecoveryDisk, ReplicaPair,
    ReplicaTarget, SnapshotLimits, SnapshotRequest, Unreachable, VmRequest,
};
