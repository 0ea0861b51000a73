//! The errors of the vault service.

use atrest_core::access_policy::AccessPolicyError;
use atrest_core::attributes::Unusable;
use atrest_core::names::NameError;
use atrest_core::vault::ObjectKind;
use atrest_core::vault::VaultRuleError;
use thiserror::Error;

/// A refused or failed vault operation. Messages are Key Vault's and never include values.
#[derive(Debug, Error)]
pub enum VaultError {
    /// The vault does not exist (or is soft-deleted).
    #[error("The Vault '{0}' could not be found.")]
    VaultNotFound(String),
    /// A vault of that name already exists elsewhere or is soft-deleted.
    #[error("{0}")]
    VaultConflict(String),
    /// No live object (or version) of that name.
    #[error("A {noun} with (name/id) {name} was not found in this key vault. If you recently deleted this {noun} you may be able to recover it using the correct recovery command. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182", noun = noun(*.kind))]
    NotFound {
        /// Secret or key.
        kind: ObjectKind,
        /// `name` or `name/version`.
        name: String,
    },
    /// No soft-deleted object of that name.
    #[error("Deleted {} not found: {name}", title(*.kind))]
    DeletedNotFound {
        /// Secret or key.
        kind: ObjectKind,
        /// The name.
        name: String,
    },
    /// The name belongs to a soft-deleted object.
    #[error("{} {name} is currently in a deleted but recoverable state, and its name cannot be reused; in this state, the {} can be recovered or purged.", title(*.kind), noun(*.kind))]
    DeletedButRecoverable {
        /// Secret or key.
        kind: ObjectKind,
        /// The name.
        name: String,
    },
    /// A restore found the name already in use.
    #[error("{} {name} already exists in this vault.", title(*.kind))]
    AlreadyExists {
        /// Secret or key.
        kind: ObjectKind,
        /// The name.
        name: String,
    },
    /// The version's attributes forbid the operation now.
    #[error("Operation {operation} is not allowed {}", describe(*.kind, .reason))]
    Unusable {
        /// Secret or key.
        kind: ObjectKind,
        /// Operation name (`get`, `decrypt`, …).
        operation: &'static str,
        /// Why.
        reason: Unusable,
    },
    /// A key or secret that belongs to a certificate was asked to change on its own.
    #[error("Operation \"{operation}\" is not allowed as this object's lifetime is managed by Key Vault.")]
    ManagedByKeyVault {
        /// Key or secret.
        kind: ObjectKind,
        /// The operation refused.
        operation: &'static str,
    },
    /// No certificate contacts are set.
    #[error("Contacts not found")]
    ContactsNotFound,
    /// No issuer of that name.
    #[error("Issuer not found: {0}")]
    IssuerNotFound(String),
    /// No waiting issuance operation.
    #[error("Pending certificate not found: {0}")]
    PendingNotFound(String),
    /// A certificate's name is held by a standalone key or secret.
    #[error("There is already a {} named {name} in this key vault; a certificate's key and secret share its name.", noun(*.kind))]
    NameInUse {
        /// Key or secret.
        kind: ObjectKind,
        /// The name.
        name: String,
    },
    /// The key's `key_ops` do not include the operation.
    #[error("Operation {0} is not permitted on this key.")]
    OperationNotPermitted(&'static str),
    /// A cryptographic request the key refuses: wrong algorithm, bad input, tampered data.
    #[error(transparent)]
    Key(#[from] atrest_crypto::KeyError),
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
    /// An access policy change breaks the rules.
    #[error(transparent)]
    AccessPolicy(#[from] AccessPolicyError),
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

fn noun(kind: ObjectKind) -> &'static str {
    match kind {
        ObjectKind::Secret => "secret",
        ObjectKind::Key => "key",
        ObjectKind::Certificate => "certificate",
    }
}

fn title(kind: ObjectKind) -> &'static str {
    match kind {
        ObjectKind::Secret => "Secret",
        ObjectKind::Key => "Key",
        ObjectKind::Certificate => "Certificate",
    }
}

fn describe(kind: ObjectKind, reason: &Unusable) -> String {
    let noun = noun(kind);
    match reason {
        Unusable::Disabled => format!("on a disabled {noun}."),
        Unusable::NotYetValid => {
            format!("on a {noun} that is not yet valid (before its nbf time).")
        }
        Unusable::Expired => format!("on an expired {noun}."),
    }
}
