//! The errors of the vault service.

use atrest_core::attributes::Unusable;
use atrest_core::names::NameError;
use atrest_core::vault::VaultRuleError;
use thiserror::Error;

/// A refused or failed vault operation. Messages are Key Vault's and never include values.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum VaultError {
    /// The vault does not exist (or is soft-deleted).
    #[error("The Vault '{0}' could not be found.")]
    VaultNotFound(String),
    /// A vault of that name already exists elsewhere or is soft-deleted.
    #[error("{0}")]
    VaultConflict(String),
    /// No live object (or version) of that name.
    #[error("A secret with (name/id) {0} was not found in this key vault. If you recently deleted this secret you may be able to recover it using the correct recovery command. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182")]
    SecretNotFound(String),
    /// No soft-deleted object of that name.
    #[error("Deleted Secret not found: {0}")]
    DeletedSecretNotFound(String),
    /// The name belongs to a soft-deleted object.
    #[error("Secret {0} is currently in a deleted but recoverable state, and its name cannot be reused; in this state, the secret can be recovered or purged.")]
    DeletedButRecoverable(String),
    /// A restore found the name already in use.
    #[error("Secret {0} already exists in this vault.")]
    AlreadyExists(String),
    /// The version's attributes forbid the operation now.
    #[error("Operation {operation} is not allowed {}", describe(.reason))]
    Unusable {
        /// Operation name (`get`).
        operation: &'static str,
        /// Why.
        reason: Unusable,
    },
    /// Purge refused under purge protection.
    #[error("Operation \"purge\" is not allowed because purge protection is enabled for this vault. Key Vault service will automatically purge it after the retention period has passed.")]
    PurgeProtected,
    /// The vault's purge protection refuses purging the vault itself.
    #[error("Vault '{0}' has purge protection enabled and cannot be purged before its scheduled purge date.")]
    VaultPurgeProtected(String),
    /// A request parameter is invalid.
    #[error("{0}")]
    BadParameter(String),
    /// A name breaks the rules.
    #[error(transparent)]
    Name(#[from] NameError),
    /// A vault property breaks the rules.
    #[error(transparent)]
    Rule(#[from] VaultRuleError),
    /// A backup blob could not be opened or belongs elsewhere.
    #[error("{0}")]
    BadBackup(String),
    /// Storage failed.
    #[error("internal error: {0}")]
    Store(#[from] atrest_store::StoreError),
    /// Key unwrapping or decryption failed.
    #[error("internal error: {0}")]
    Crypto(#[from] atrest_crypto::CryptoError),
}

fn describe(reason: &Unusable) -> &'static str {
    match reason {
        Unusable::Disabled => "on a disabled secret.",
        Unusable::NotYetValid => "on a secret that is not yet valid (before its nbf time).",
        Unusable::Expired => "on an expired secret.",
    }
}

impl VaultError {
    /// The Azure inner error code, where Key Vault sends one.
    pub fn inner_code(&self) -> Option<&'static str> {
        match self {
            VaultError::Unusable {
                reason: Unusable::Disabled,
                ..
            } => Some("SecretDisabled"),
            VaultError::Unusable {
                reason: Unusable::NotYetValid,
                ..
            } => Some("SecretNotYetValid"),
            VaultError::Unusable {
                reason: Unusable::Expired,
                ..
            } => Some("SecretExpired"),
            VaultError::DeletedButRecoverable(_) => Some("ObjectIsDeletedButRecoverable"),
            VaultError::PurgeProtected => Some("PurgeProtectionEnabled"),
            _ => None,
        }
    }
}
