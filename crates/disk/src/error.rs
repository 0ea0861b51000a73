//! Why a compute operation was refused or failed.

use atrest_core::compute::ComputeRuleError;
use thiserror::Error;

/// A refused or failed compute operation. Each variant's documentation names its class
/// (and Azure's code where a rule picks one); the HTTP edge picks codes and statuses.
/// Messages never contain key material.
#[derive(Debug, Error)]
pub enum ComputeError {
    /// A parameter breaks a rule (`InvalidParameter`, 400).
    #[error(transparent)]
    Rule(#[from] ComputeRuleError),
    /// A parameter is wrong in a way the rules of another resource decide (400).
    #[error("{message}")]
    Invalid {
        /// Azure's error code.
        code: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The resource does not exist (`ResourceNotFound`, 404).
    #[error("The Resource 'Microsoft.Compute/{kind}/{name}' under resource group '{resource_group}' was not found.")]
    NotFound {
        /// `disks`, `diskEncryptionSets` or `virtualMachines`.
        kind: &'static str,
        /// Its resource group.
        resource_group: String,
        /// Its name.
        name: String,
    },
    /// The resource's state forbids the operation (409).
    #[error("{message}")]
    Conflict {
        /// Azure's error code.
        code: &'static str,
        /// What is in the way.
        message: String,
    },
    /// Another replica holds the disk's lease, so it alone may serve the disk
    /// (`OperationNotAllowed`, 409).
    #[error("Disk '{disk}' is served by replica '{replica}'; stop its virtual machine there, start the machine there, or start it here with --host once that replica's lease on the disk runs out.")]
    ServedElsewhere {
        /// The disk.
        disk: String,
        /// The replica holding its lease.
        replica: String,
    },
    /// The disk encryption set's identity cannot use its key (`KeyVaultAccessForbidden`, 400).
    #[error("Unable to access key vault resource '{key_url}' to enable encryption at rest. Please grant get, wrap and unwrap key permissions to disk encryption set '{des}'. The vault answered: {cause}")]
    KeyVaultAccessForbidden {
        /// The key.
        key_url: String,
        /// The disk encryption set.
        des: String,
        /// What the vault said.
        cause: KeyAccessError,
    },
    /// A disk's key cannot be used now: disabled, deleted, expired or access withdrawn
    /// (`KeyVaultKeyUnusable`, 409).
    #[error("The key '{key_url}' protecting disk '{disk}' cannot be used: {cause}")]
    KeyUnusable {
        /// The disk.
        disk: String,
        /// The key.
        key_url: String,
        /// What the vault said.
        cause: KeyAccessError,
    },
    /// An Azure Disk Encryption setting breaks a rule (`InvalidParameter`, 400).
    #[error(transparent)]
    Ade(#[from] atrest_core::ade::AdeRuleError),
    /// A disk's Azure Disk Encryption secret cannot be read now: deleted, disabled or
    /// access withdrawn (`KeyVaultSecretUnusable`, 409).
    #[error("The disk encryption secret '{secret_url}' of disk '{disk}' cannot be read: {cause}")]
    SecretUnusable {
        /// The disk.
        disk: String,
        /// The secret version.
        secret_url: String,
        /// What the vault said.
        cause: KeyAccessError,
    },
    /// The state database failed.
    #[error(transparent)]
    Store(#[from] atrest_store::StoreError),
    /// The directory failed to create or delete a set's identity.
    #[error(transparent)]
    Directory(#[from] atrest_identity::DirectoryError),
    /// A disk's blocks could not be read or written.
    #[error(transparent)]
    Disk(#[from] atrest_blocks::BlockError),
    /// An invariant did not hold (500).
    #[error("internal error: {0}")]
    Internal(String),
}

impl ComputeError {
    pub(crate) fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        ComputeError::Invalid {
            code,
            message: message.into(),
        }
    }

    pub(crate) fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        ComputeError::Conflict {
            code,
            message: message.into(),
        }
    }
}

/// A vault's answer to a refused key operation, as the caller saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyAccessError {
    /// HTTP status.
    pub status: u16,
    /// The most specific Key Vault error code (`KeyDisabled`, `ForbiddenByRbac`, …).
    pub code: String,
    /// Key Vault's message.
    pub message: String,
}

impl std::fmt::Display for KeyAccessError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}
