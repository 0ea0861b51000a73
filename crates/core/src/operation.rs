//! Every operation atrest audits, and what each one needs: the RBAC data action, the
//! access-policy permission and the throttling budget.
//!
//! The audit log's `operationName` is the variant's name. Adding an operation is one
//! variant here plus one route at the edge; the exhaustive matches below make the compiler
//! ask for the rest.

use crate::access_policy::PermissionClass;
use crate::limits::OperationClass;

/// The surface an operation belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// The Key Vault data plane (`NAME.vault.localhost`).
    KeyVault,
    /// The ARM-shaped management API (`/subscriptions/…`).
    Management,
    /// The token service, discovery and the unauthenticated monitoring endpoints.
    Token,
    /// `/atrest` administration.
    Administration,
    /// Work the scheduler does on its own.
    Scheduled,
    /// A request that no route matched.
    Unrouted,
}

macro_rules! operations {
    ($($(#[doc = $doc:literal])* $variant:ident => $surface:ident,)*) => {
        /// One audited operation. Its name is Key Vault's (or, for atrest's own
        /// operations, atrest's) `operationName`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Operation {
            $($(#[doc = $doc])* $variant,)*
        }

        impl Operation {
            /// Every operation, in declaration order.
            pub const ALL: &'static [Operation] = &[$(Operation::$variant,)*];

            /// The audit log's `operationName`.
            pub fn name(self) -> &'static str {
                match self {
                    $(Operation::$variant => stringify!($variant),)*
                }
            }

            /// The operation whose audit name is `name`, if one.
            pub fn from_name(name: &str) -> Option<Operation> {
                match name {
                    $(stringify!($variant) => Some(Operation::$variant),)*
                    _ => None,
                }
            }

            /// The surface the operation belongs to.
            pub fn surface(self) -> Surface {
                match self {
                    $(Operation::$variant => Surface::$surface,)*
                }
            }
        }
    };
}

operations! {
    /// `PUT /secrets/{name}`.
    SecretSet => KeyVault,
    /// `GET /secrets/{name}[/{version}]`.
    SecretGet => KeyVault,
    /// `PATCH /secrets/{name}[/{version}]`.
    SecretUpdate => KeyVault,
    /// `DELETE /secrets/{name}`.
    SecretDelete => KeyVault,
    /// `GET /secrets`.
    SecretList => KeyVault,
    /// `GET /secrets/{name}/versions`.
    SecretListVersions => KeyVault,
    /// `POST /secrets/{name}/backup`.
    SecretBackup => KeyVault,
    /// `POST /secrets/restore`.
    SecretRestore => KeyVault,
    /// `GET /deletedsecrets`.
    SecretListDeleted => KeyVault,
    /// `GET /deletedsecrets/{name}`.
    SecretGetDeleted => KeyVault,
    /// `DELETE /deletedsecrets/{name}`.
    SecretPurge => KeyVault,
    /// `POST /deletedsecrets/{name}/recover`.
    SecretRecover => KeyVault,
    /// `POST /keys/{name}/create`.
    KeyCreate => KeyVault,
    /// `PUT /keys/{name}`.
    KeyImport => KeyVault,
    /// `GET /keys/{name}[/{version}]`.
    KeyGet => KeyVault,
    /// `PATCH /keys/{name}[/{version}]`.
    KeyUpdate => KeyVault,
    /// `DELETE /keys/{name}`.
    KeyDelete => KeyVault,
    /// `GET /keys`.
    KeyList => KeyVault,
    /// `GET /keys/{name}/versions`.
    KeyListVersions => KeyVault,
    /// `POST /keys/{name}/backup`.
    KeyBackup => KeyVault,
    /// `POST /keys/restore`.
    KeyRestore => KeyVault,
    /// `GET /deletedkeys`.
    KeyListDeleted => KeyVault,
    /// `GET /deletedkeys/{name}`.
    KeyGetDeleted => KeyVault,
    /// `DELETE /deletedkeys/{name}`.
    KeyPurge => KeyVault,
    /// `POST /deletedkeys/{name}/recover`.
    KeyRecover => KeyVault,
    /// `POST /keys/{name}[/{version}]/encrypt`.
    KeyEncrypt => KeyVault,
    /// `POST /keys/{name}[/{version}]/decrypt`.
    KeyDecrypt => KeyVault,
    /// `POST /keys/{name}[/{version}]/wrapkey`.
    KeyWrap => KeyVault,
    /// `POST /keys/{name}[/{version}]/unwrapkey`.
    KeyUnwrap => KeyVault,
    /// `POST /keys/{name}[/{version}]/sign`.
    KeySign => KeyVault,
    /// `POST /keys/{name}[/{version}]/verify`.
    KeyVerify => KeyVault,
    /// `POST /rng`.
    RngGet => KeyVault,
    /// `POST /certificates/{name}/create`.
    CertificateCreate => KeyVault,
    /// `POST /certificates/{name}/import`.
    CertificateImport => KeyVault,
    /// `GET /certificates/{name}[/{version}]`.
    CertificateGet => KeyVault,
    /// `PATCH /certificates/{name}[/{version}]`.
    CertificateUpdate => KeyVault,
    /// `DELETE /certificates/{name}`.
    CertificateDelete => KeyVault,
    /// `GET /certificates`.
    CertificateList => KeyVault,
    /// `GET /certificates/{name}/versions`.
    CertificateListVersions => KeyVault,
    /// `GET /deletedcertificates`.
    CertificateListDeleted => KeyVault,
    /// `GET /deletedcertificates/{name}`.
    CertificateGetDeleted => KeyVault,
    /// `POST /deletedcertificates/{name}/recover`.
    CertificateRecover => KeyVault,
    /// `DELETE /deletedcertificates/{name}`.
    CertificatePurge => KeyVault,
    /// `GET /certificates/{name}/policy`.
    CertificatePolicyGet => KeyVault,
    /// `PATCH /certificates/{name}/policy`.
    CertificatePolicyUpdate => KeyVault,
    /// `GET /certificates/{name}/pending`.
    CertificatePendingGet => KeyVault,
    /// `PUT /certificates/contacts`.
    CertificateContactsSet => KeyVault,
    /// `GET /certificates/contacts`.
    CertificateContactsGet => KeyVault,
    /// `DELETE /certificates/contacts`.
    CertificateContactsDelete => KeyVault,
    /// `PUT /certificates/issuers/{name}`.
    CertificateIssuerSet => KeyVault,
    /// `PATCH /certificates/issuers/{name}`.
    CertificateIssuerUpdate => KeyVault,
    /// `GET /certificates/issuers/{name}`.
    CertificateIssuerGet => KeyVault,
    /// `DELETE /certificates/issuers/{name}`.
    CertificateIssuerDelete => KeyVault,
    /// `GET /certificates/issuers`.
    CertificateIssuersList => KeyVault,
    /// `POST /certificates/{name}/backup`.
    CertificateBackup => KeyVault,
    /// `POST /certificates/restore`.
    CertificateRestore => KeyVault,
    /// `POST /certificates/{name}/pending/merge`.
    CertificatePendingMerge => KeyVault,
    /// `PATCH /certificates/{name}/pending` (cancel).
    CertificatePendingUpdate => KeyVault,
    /// `DELETE /certificates/{name}/pending`.
    CertificatePendingDelete => KeyVault,
    /// `POST /keys/{name}/rotate`, and the new version a rotation policy makes.
    KeyRotate => KeyVault,
    /// `GET /keys/{name}/rotationpolicy`.
    KeyGetRotationPolicy => KeyVault,
    /// `PUT /keys/{name}/rotationpolicy`.
    KeyUpdateRotationPolicy => KeyVault,
    /// A rotation policy's Rotate action, recorded on the version it replaces.
    KeyRotateIfDue => Scheduled,
    /// A rotation policy's Notify action.
    KeyNearExpiry => Scheduled,
    /// A certificate's `AutoRenew` lifetime action issued a new version (the scheduler).
    CertificateAutoRenew => Scheduled,
    /// A certificate's `EmailContacts` lifetime action: its latest version nears expiry.
    CertificateNearExpiry => Scheduled,
    /// Audit retention deleted old events.
    AuditRetention => Scheduled,
    /// OpenID discovery.
    OpenIdConfiguration => Token,
    /// The token-signing keys.
    Jwks => Token,
    /// Home realm discovery for a user name.
    UserRealmDiscovery => Token,
    /// A token request, of any grant or managed-identity endpoint.
    Authentication => Token,
    /// `GET /metrics`.
    Metrics => Token,
    /// `GET /healthz`: the process serves.
    HealthLive => Token,
    /// `GET /readyz`: the process serves and reaches its state and block stores.
    HealthReady => Token,
    /// Create a vault, or replace one.
    VaultPut => Management,
    /// Update a vault's properties.
    VaultPatch => Management,
    /// Read a vault.
    VaultGet => Management,
    /// Delete a vault (soft delete).
    VaultDelete => Management,
    /// Add, replace or remove access policy entries.
    VaultAccessPolicyUpdate => Management,
    /// List vaults in a subscription or resource group.
    VaultList => Management,
    /// List soft-deleted vaults.
    DeletedVaultList => Management,
    /// Read a soft-deleted vault.
    DeletedVaultGet => Management,
    /// Purge a soft-deleted vault.
    DeletedVaultPurge => Management,
    /// Create or update a disk encryption set.
    DiskEncryptionSetWrite => Management,
    /// Delete a disk encryption set.
    DiskEncryptionSetDelete => Management,
    /// Read a disk encryption set.
    DiskEncryptionSetRead => Management,
    /// List disk encryption sets.
    DiskEncryptionSetList => Management,
    /// Create or update a disk.
    DiskWrite => Management,
    /// Delete a disk.
    DiskDelete => Management,
    /// Read a disk.
    DiskRead => Management,
    /// List disks.
    DiskList => Management,
    /// Create or update a virtual machine.
    VirtualMachineWrite => Management,
    /// Delete a virtual machine.
    VirtualMachineDelete => Management,
    /// Start a virtual machine.
    VirtualMachineStart => Management,
    /// Power off or deallocate a virtual machine.
    VirtualMachineStop => Management,
    /// Read a virtual machine or its instance view.
    VirtualMachineRead => Management,
    /// List virtual machines.
    VirtualMachineList => Management,
    /// Create or update a virtual machine extension (Azure Disk Encryption's enable and
    /// disable).
    VirtualMachineExtensionWrite => Management,
    /// Delete a virtual machine extension.
    VirtualMachineExtensionDelete => Management,
    /// Read or list virtual machine extensions.
    VirtualMachineExtensionRead => Management,
    /// Create or update a Recovery Services vault.
    RecoveryVaultWrite => Management,
    /// Delete a Recovery Services vault.
    RecoveryVaultDelete => Management,
    /// Read or list Recovery Services vaults.
    RecoveryVaultRead => Management,
    /// Create or update a backup policy.
    BackupPolicyWrite => Management,
    /// Delete a backup policy.
    BackupPolicyDelete => Management,
    /// Read or list backup policies.
    BackupPolicyRead => Management,
    /// Protect a virtual machine (or change its policy).
    BackupProtectionWrite => Management,
    /// Stop protection and delete the backup data.
    BackupProtectionDelete => Management,
    /// Read or list protected items.
    BackupProtectionRead => Management,
    /// Back up a protected item now.
    BackupTrigger => Management,
    /// Read or list recovery points.
    BackupRecoveryPointRead => Management,
    /// Restore from a recovery point.
    BackupRestore => Management,
    /// Read or list backup jobs.
    BackupJobRead => Management,
    /// Delete a recovery point past its expiry (the schedule).
    BackupRecoveryPointExpire => Management,
    /// Create or update a replication fabric, protection container, replication policy or container mapping.
    SiteRecoveryWrite => Management,
    /// Delete a replication fabric, protection container, replication policy or container mapping.
    SiteRecoveryDelete => Management,
    /// Read or list replication fabrics, containers, policies and mappings.
    SiteRecoveryRead => Management,
    /// Enable replication of a virtual machine to another region.
    ReplicationEnable => Management,
    /// Disable replication (its replicas and recovery points are deleted).
    ReplicationDisable => Management,
    /// Read or list replicated items and their recovery points.
    ReplicationRead => Management,
    /// Test failover: a machine in the recovery region beside the replication.
    ReplicationTestFailover => Management,
    /// End a test failover.
    ReplicationTestFailoverCleanup => Management,
    /// Fail a replicated machine over to the recovery region.
    ReplicationFailover => Management,
    /// Commit a failover.
    ReplicationFailoverCommit => Management,
    /// Re-protect: replicate a failed-over machine back.
    ReplicationReprotect => Management,
    /// Ship a replicated machine's changes and keep a recovery point (the schedule).
    ReplicationCycle => Management,
    /// List role definitions.
    RoleDefinitionList => Management,
    /// Read a role definition.
    RoleDefinitionGet => Management,
    /// Create a role assignment.
    RoleAssignmentWrite => Management,
    /// List role assignments at a scope.
    RoleAssignmentList => Management,
    /// Read a role assignment.
    RoleAssignmentGet => Management,
    /// Delete a role assignment.
    RoleAssignmentDelete => Management,
    /// `GET /metadata/endpoints`: the cloud's endpoints, for `az cloud register`.
    CloudMetadata => Token,
    /// `GET /subscriptions`.
    SubscriptionList => Management,
    /// `GET /subscriptions/{s}`.
    SubscriptionGet => Management,
    /// `GET /tenants`.
    TenantList => Management,
    /// Create or update a resource group.
    ResourceGroupWrite => Management,
    /// Read a resource group (`GET` or `HEAD`).
    ResourceGroupRead => Management,
    /// Delete a resource group and what it holds.
    ResourceGroupDelete => Management,
    /// `GET /subscriptions/{s}/resourcegroups`.
    ResourceGroupList => Management,
    /// `GET /subscriptions/{s}[/resourceGroups/{rg}]/resources`, with `$filter`.
    ResourceList => Management,
    /// `GET …/providers/Microsoft.KeyVault/deletedManagedHSMs`: always empty.
    DeletedManagedHsmList => Management,
    /// Create or update a custom role definition.
    RoleDefinitionWrite => Management,
    /// Delete a custom role definition.
    RoleDefinitionDelete => Management,
    /// `POST …/disks/{d}/beginGetAccess`: a time-limited URL to the disk's data.
    DiskBeginGetAccess => Management,
    /// `POST …/disks/{d}/endGetAccess`: revoke the disk's access URL.
    DiskEndGetAccess => Management,
    /// A read of a disk through its access URL (authorized by the URL's signature).
    DiskAccessRead => Token,
    /// Create or update a snapshot.
    SnapshotWrite => Management,
    /// Delete a snapshot.
    SnapshotDelete => Management,
    /// Read a snapshot.
    SnapshotRead => Management,
    /// List snapshots.
    SnapshotList => Management,
    /// `POST …/snapshots/{s}/beginGetAccess`: a time-limited URL to the snapshot's data.
    SnapshotBeginGetAccess => Management,
    /// `POST …/snapshots/{s}/endGetAccess`: revoke the snapshot's access URL.
    SnapshotEndGetAccess => Management,
    /// Create or update an image.
    ImageWrite => Management,
    /// Delete an image.
    ImageDelete => Management,
    /// Read an image.
    ImageRead => Management,
    /// List images.
    ImageList => Management,
    /// Microsoft Graph `POST /v1.0/directoryObjects/getByIds`.
    GraphDirectoryObjectsGetByIds => Administration,
    /// Microsoft Graph `GET /v1.0/servicePrincipals`, with `$filter`.
    GraphServicePrincipalList => Administration,
    /// Microsoft Graph `GET /v1.0/users`, with `$filter`.
    GraphUserList => Administration,
    /// Microsoft Graph `GET /v1.0/{servicePrincipals|users|groups}/{id}`.
    GraphObjectGet => Administration,
    /// Create a service principal.
    ServicePrincipalCreate => Administration,
    /// List service principals.
    ServicePrincipalList => Administration,
    /// Delete a service principal.
    ServicePrincipalDelete => Administration,
    /// Issue a new secret for a service principal.
    ServicePrincipalCredentialReset => Administration,
    /// Create a user-assigned managed identity.
    ManagedIdentityCreate => Administration,
    /// List managed identities.
    ManagedIdentityList => Administration,
    /// Delete a managed identity.
    ManagedIdentityDelete => Administration,
    /// Create a user.
    UserCreate => Administration,
    /// List users.
    UserList => Administration,
    /// Delete a user.
    UserDelete => Administration,
    /// Create a group.
    GroupCreate => Administration,
    /// List groups.
    GroupList => Administration,
    /// Delete a group.
    GroupDelete => Administration,
    /// List a group's members.
    GroupMemberList => Administration,
    /// Add a member to a group.
    GroupMemberAdd => Administration,
    /// Remove a member from a group.
    GroupMemberRemove => Administration,
    /// Run a KQL query over the logs.
    LogQuery => Administration,
    /// List detection alerts.
    AlertList => Administration,
    /// Verify the audit chain.
    AuditVerify => Administration,
    /// Export audit events after a sequence number.
    AuditExport => Administration,
    /// List recent audit events.
    AuditList => Administration,
    /// Read the scheduler's clock.
    SchedulerClockGet => Administration,
    /// Move the scheduler's clock forward.
    SchedulerClockAdvance => Administration,
    /// A request that no route matched.
    Unknown => Unrouted,
}

impl Operation {
    /// Whether the operation uses a key's private or secret part on a caller's behalf
    /// (encrypt, decrypt, wrap, unwrap, sign, verify).
    pub fn is_key_use(self) -> bool {
        use Operation::*;
        matches!(
            self,
            KeyEncrypt | KeyDecrypt | KeyWrap | KeyUnwrap | KeySign | KeyVerify
        )
    }

    /// The RBAC data action a Key Vault data-plane operation needs; `None` for every
    /// other operation.
    pub fn data_action(self) -> Option<&'static str> {
        use Operation::*;
        Some(match self {
            SecretGet => "Microsoft.KeyVault/vaults/secrets/getSecret/action",
            SecretSet => "Microsoft.KeyVault/vaults/secrets/setSecret/action",
            SecretUpdate => "Microsoft.KeyVault/vaults/secrets/update/action",
            SecretList | SecretListVersions | SecretListDeleted | SecretGetDeleted => {
                "Microsoft.KeyVault/vaults/secrets/readMetadata/action"
            }
            SecretDelete => "Microsoft.KeyVault/vaults/secrets/delete",
            SecretRecover => "Microsoft.KeyVault/vaults/secrets/recover/action",
            SecretPurge => "Microsoft.KeyVault/vaults/secrets/purge/action",
            SecretBackup => "Microsoft.KeyVault/vaults/secrets/backup/action",
            SecretRestore => "Microsoft.KeyVault/vaults/secrets/restore/action",
            KeyGet | KeyList | KeyListVersions | KeyListDeleted | KeyGetDeleted | RngGet => {
                "Microsoft.KeyVault/vaults/keys/read"
            }
            KeyCreate => "Microsoft.KeyVault/vaults/keys/create/action",
            KeyImport => "Microsoft.KeyVault/vaults/keys/import/action",
            KeyUpdate => "Microsoft.KeyVault/vaults/keys/update/action",
            KeyDelete => "Microsoft.KeyVault/vaults/keys/delete",
            KeyRecover => "Microsoft.KeyVault/vaults/keys/recover/action",
            KeyPurge => "Microsoft.KeyVault/vaults/keys/purge/action",
            KeyBackup => "Microsoft.KeyVault/vaults/keys/backup/action",
            KeyRestore => "Microsoft.KeyVault/vaults/keys/restore/action",
            KeyRotate => "Microsoft.KeyVault/vaults/keys/rotate/action",
            KeyGetRotationPolicy => "Microsoft.KeyVault/vaults/keyrotationpolicies/read",
            KeyUpdateRotationPolicy => "Microsoft.KeyVault/vaults/keyrotationpolicies/write",
            KeyEncrypt => "Microsoft.KeyVault/vaults/keys/encrypt/action",
            KeyDecrypt => "Microsoft.KeyVault/vaults/keys/decrypt/action",
            KeyWrap => "Microsoft.KeyVault/vaults/keys/wrap/action",
            KeyUnwrap => "Microsoft.KeyVault/vaults/keys/unwrap/action",
            KeySign => "Microsoft.KeyVault/vaults/keys/sign/action",
            KeyVerify => "Microsoft.KeyVault/vaults/keys/verify/action",
            CertificateCreate => "Microsoft.KeyVault/vaults/certificates/create/action",
            CertificateImport => "Microsoft.KeyVault/vaults/certificates/import/action",
            CertificateGet => "Microsoft.KeyVault/vaults/certificates/read",
            CertificateUpdate => "Microsoft.KeyVault/vaults/certificates/update/action",
            CertificateDelete => "Microsoft.KeyVault/vaults/certificates/delete",
            CertificateList => "Microsoft.KeyVault/vaults/certificates/read",
            CertificateListVersions => "Microsoft.KeyVault/vaults/certificates/read",
            CertificateListDeleted => "Microsoft.KeyVault/vaults/certificates/read",
            CertificateGetDeleted => "Microsoft.KeyVault/vaults/certificates/read",
            CertificateRecover => "Microsoft.KeyVault/vaults/certificates/recover/action",
            CertificatePurge => "Microsoft.KeyVault/vaults/certificates/purge/action",
            CertificatePolicyGet => "Microsoft.KeyVault/vaults/certificates/read",
            CertificatePolicyUpdate => "Microsoft.KeyVault/vaults/certificates/update/action",
            CertificatePendingGet => "Microsoft.KeyVault/vaults/certificates/read",
            CertificateContactsSet => "Microsoft.KeyVault/vaults/certificatecontacts/write",
            CertificateContactsGet => "Microsoft.KeyVault/vaults/certificates/read",
            CertificateContactsDelete => "Microsoft.KeyVault/vaults/certificatecontacts/write",
            CertificateIssuerSet => "Microsoft.KeyVault/vaults/certificatecas/write",
            CertificateIssuerUpdate => "Microsoft.KeyVault/vaults/certificatecas/write",
            CertificateIssuerGet => "Microsoft.KeyVault/vaults/certificatecas/read",
            CertificateIssuerDelete => "Microsoft.KeyVault/vaults/certificatecas/delete",
            CertificateIssuersList => "Microsoft.KeyVault/vaults/certificatecas/read",
            CertificateBackup => "Microsoft.KeyVault/vaults/certificates/backup/action",
            CertificateRestore => "Microsoft.KeyVault/vaults/certificates/restore/action",
            CertificatePendingMerge => "Microsoft.KeyVault/vaults/certificates/create/action",
            CertificatePendingUpdate => "Microsoft.KeyVault/vaults/certificates/update/action",
            CertificatePendingDelete => "Microsoft.KeyVault/vaults/certificates/delete",
            KeyRotateIfDue
            | KeyNearExpiry
            | CertificateAutoRenew
            | CertificateNearExpiry
            | OpenIdConfiguration
            | Jwks
            | UserRealmDiscovery
            | Authentication
            | Metrics
            | HealthLive
            | HealthReady
            | VaultPut
            | VaultPatch
            | VaultGet
            | VaultDelete
            | VaultAccessPolicyUpdate
            | VaultList
            | DeletedVaultList
            | DeletedVaultGet
            | DeletedVaultPurge
            | DiskEncryptionSetWrite
            | DiskEncryptionSetDelete
            | DiskEncryptionSetRead
            | DiskEncryptionSetList
            | DiskWrite
            | DiskDelete
            | DiskRead
            | DiskList
            | VirtualMachineWrite
            | VirtualMachineDelete
            | VirtualMachineStart
            | VirtualMachineStop
            | VirtualMachineRead
            | VirtualMachineList
            | VirtualMachineExtensionWrite
            | VirtualMachineExtensionDelete
            | VirtualMachineExtensionRead
            | RecoveryVaultWrite
            | RecoveryVaultDelete
            | RecoveryVaultRead
            | BackupPolicyWrite
            | BackupPolicyDelete
            | BackupPolicyRead
            | BackupProtectionWrite
            | BackupProtectionDelete
            | BackupProtectionRead
            | BackupTrigger
            | BackupRecoveryPointRead
            | BackupRestore
            | BackupJobRead
            | BackupRecoveryPointExpire
            | SiteRecoveryWrite
            | SiteRecoveryDelete
            | SiteRecoveryRead
            | ReplicationEnable
            | ReplicationDisable
            | ReplicationRead
            | ReplicationTestFailover
            | ReplicationTestFailoverCleanup
            | ReplicationFailover
            | ReplicationFailoverCommit
            | ReplicationReprotect
            | ReplicationCycle
            | RoleDefinitionList
            | RoleDefinitionGet
            | RoleAssignmentWrite
            | RoleAssignmentList
            | RoleAssignmentGet
            | RoleAssignmentDelete
            | CloudMetadata
            | SubscriptionList
            | SubscriptionGet
            | TenantList
            | ResourceGroupWrite
            | ResourceGroupRead
            | ResourceGroupDelete
            | ResourceGroupList
            | ResourceList
            | DeletedManagedHsmList
            | RoleDefinitionWrite
            | RoleDefinitionDelete
            | DiskBeginGetAccess
            | DiskEndGetAccess
            | SnapshotWrite
            | SnapshotDelete
            | SnapshotRead
            | SnapshotList
            | SnapshotBeginGetAccess
            | SnapshotEndGetAccess
            | ImageWrite
            | ImageDelete
            | ImageRead
            | ImageList
            | DiskAccessRead
            | GraphDirectoryObjectsGetByIds
            | GraphServicePrincipalList
            | GraphUserList
            | GraphObjectGet
            | ServicePrincipalCreate
            | ServicePrincipalList
            | ServicePrincipalDelete
            | ServicePrincipalCredentialReset
            | ManagedIdentityCreate
            | ManagedIdentityList
            | ManagedIdentityDelete
            | UserCreate
            | UserList
            | UserDelete
            | GroupCreate
            | GroupList
            | GroupDelete
            | GroupMemberList
            | GroupMemberAdd
            | GroupMemberRemove
            | LogQuery
            | AlertList
            | AuditVerify
            | AuditExport
            | AuditList
            | AuditRetention
            | SchedulerClockGet
            | SchedulerClockAdvance
            | Unknown => return None,
        })
    }

    /// The access-policy permission a Key Vault data-plane operation needs; `None` for
    /// every other operation.
    pub fn permission(self) -> Option<(PermissionClass, &'static str)> {
        use Operation::*;
        use PermissionClass::{Certificates, Keys, Secrets};
        Some(match self {
            SecretGet | SecretGetDeleted => (Secrets, "get"),
            SecretSet | SecretUpdate => (Secrets, "set"),
            SecretList | SecretListVersions | SecretListDeleted => (Secrets, "list"),
            SecretDelete => (Secrets, "delete"),
            SecretRecover => (Secrets, "recover"),
            SecretPurge => (Secrets, "purge"),
            SecretBackup => (Secrets, "backup"),
            SecretRestore => (Secrets, "restore"),
            KeyGet | KeyGetDeleted | RngGet => (Keys, "get"),
            KeyList | KeyListVersions | KeyListDeleted => (Keys, "list"),
            KeyCreate => (Keys, "create"),
            KeyImport => (Keys, "import"),
            KeyUpdate => (Keys, "update"),
            KeyDelete => (Keys, "delete"),
            KeyRecover => (Keys, "recover"),
            KeyPurge => (Keys, "purge"),
            KeyBackup => (Keys, "backup"),
            KeyRestore => (Keys, "restore"),
            KeyRotate => (Keys, "rotate"),
            KeyGetRotationPolicy => (Keys, "getrotationpolicy"),
            KeyUpdateRotationPolicy => (Keys, "setrotationpolicy"),
            KeyEncrypt => (Keys, "encrypt"),
            CertificateCreate => (Certificates, "create"),
            CertificateImport => (Certificates, "import"),
            CertificateGet => (Certificates, "get"),
            CertificateUpdate => (Certificates, "update"),
            CertificateDelete => (Certificates, "delete"),
            CertificateList => (Certificates, "list"),
            CertificateListVersions => (Certificates, "list"),
            CertificateListDeleted => (Certificates, "list"),
            CertificateGetDeleted => (Certificates, "get"),
            CertificateRecover => (Certificates, "recover"),
            CertificatePurge => (Certificates, "purge"),
            CertificatePolicyGet => (Certificates, "get"),
            CertificatePolicyUpdate => (Certificates, "update"),
            CertificatePendingGet => (Certificates, "get"),
            CertificateContactsSet => (Certificates, "managecontacts"),
            CertificateContactsGet => (Certificates, "managecontacts"),
            CertificateContactsDelete => (Certificates, "managecontacts"),
            CertificateIssuerSet => (Certificates, "setissuers"),
            CertificateIssuerUpdate => (Certificates, "setissuers"),
            CertificateIssuerGet => (Certificates, "getissuers"),
            CertificateIssuerDelete => (Certificates, "deleteissuers"),
            CertificateIssuersList => (Certificates, "listissuers"),
            CertificateBackup => (Certificates, "backup"),
            CertificateRestore => (Certificates, "restore"),
            CertificatePendingMerge => (Certificates, "create"),
            CertificatePendingUpdate => (Certificates, "update"),
            CertificatePendingDelete => (Certificates, "delete"),
            KeyDecrypt => (Keys, "decrypt"),
            KeyWrap => (Keys, "wrapKey"),
            KeyUnwrap => (Keys, "unwrapKey"),
            KeySign => (Keys, "sign"),
            KeyVerify => (Keys, "verify"),
            KeyRotateIfDue
            | KeyNearExpiry
            | CertificateAutoRenew
            | CertificateNearExpiry
            | OpenIdConfiguration
            | Jwks
            | UserRealmDiscovery
            | Authentication
            | Metrics
            | HealthLive
            | HealthReady
            | VaultPut
            | VaultPatch
            | VaultGet
            | VaultDelete
            | VaultAccessPolicyUpdate
            | VaultList
            | DeletedVaultList
            | DeletedVaultGet
            | DeletedVaultPurge
            | DiskEncryptionSetWrite
            | DiskEncryptionSetDelete
            | DiskEncryptionSetRead
            | DiskEncryptionSetList
            | DiskWrite
            | DiskDelete
            | DiskRead
            | DiskList
            | VirtualMachineWrite
            | VirtualMachineDelete
            | VirtualMachineStart
            | VirtualMachineStop
            | VirtualMachineRead
            | VirtualMachineList
            | VirtualMachineExtensionWrite
            | VirtualMachineExtensionDelete
            | VirtualMachineExtensionRead
            | RecoveryVaultWrite
            | RecoveryVaultDelete
            | RecoveryVaultRead
            | BackupPolicyWrite
            | BackupPolicyDelete
            | BackupPolicyRead
            | BackupProtectionWrite
            | BackupProtectionDelete
            | BackupProtectionRead
            | BackupTrigger
            | BackupRecoveryPointRead
            | BackupRestore
            | BackupJobRead
            | BackupRecoveryPointExpire
            | SiteRecoveryWrite
            | SiteRecoveryDelete
            | SiteRecoveryRead
            | ReplicationEnable
            | ReplicationDisable
            | ReplicationRead
            | ReplicationTestFailover
            | ReplicationTestFailoverCleanup
            | ReplicationFailover
            | ReplicationFailoverCommit
            | ReplicationReprotect
            | ReplicationCycle
            | RoleDefinitionList
            | RoleDefinitionGet
            | RoleAssignmentWrite
            | RoleAssignmentList
            | RoleAssignmentGet
            | RoleAssignmentDelete
            | CloudMetadata
            | SubscriptionList
            | SubscriptionGet
            | TenantList
            | ResourceGroupWrite
            | ResourceGroupRead
            | ResourceGroupDelete
            | ResourceGroupList
            | ResourceList
            | DeletedManagedHsmList
            | RoleDefinitionWrite
            | RoleDefinitionDelete
            | DiskBeginGetAccess
            | DiskEndGetAccess
            | SnapshotWrite
            | SnapshotDelete
            | SnapshotRead
            | SnapshotList
            | SnapshotBeginGetAccess
            | SnapshotEndGetAccess
            | ImageWrite
            | ImageDelete
            | ImageRead
            | ImageList
            | DiskAccessRead
            | GraphDirectoryObjectsGetByIds
            | GraphServicePrincipalList
            | GraphUserList
            | GraphObjectGet
            | ServicePrincipalCreate
            | ServicePrincipalList
            | ServicePrincipalDelete
            | ServicePrincipalCredentialReset
            | ManagedIdentityCreate
            | ManagedIdentityList
            | ManagedIdentityDelete
            | UserCreate
            | UserList
            | UserDelete
            | GroupCreate
            | GroupList
            | GroupDelete
            | GroupMemberList
            | GroupMemberAdd
            | GroupMemberRemove
            | LogQuery
            | AlertList
            | AuditVerify
            | AuditExport
            | AuditList
            | AuditRetention
            | SchedulerClockGet
            | SchedulerClockAdvance
            | Unknown => return None,
        })
    }

    /// The vault budget a data-plane operation draws on; `hsm` says whether the key it
    /// acts on is an HSM key. Operations outside the data plane are not throttled by
    /// vault and count as `Secrets`.
    pub fn class(self, hsm: bool) -> OperationClass {
        use Operation::*;
        let keys = if hsm {
            OperationClass::HsmKeys
        } else {
            OperationClass::Keys
        };
        match self {
            KeyCreate | KeyImport | KeyRotate => OperationClass::KeyCreate,
            KeyGet
            | KeyUpdate
            | KeyDelete
            | KeyList
            | KeyListVersions
            | KeyBackup
            | KeyRestore
            | KeyListDeleted
            | KeyGetDeleted
            | KeyPurge
            | KeyRecover
            | KeyEncrypt
            | KeyDecrypt
            | KeyWrap
            | KeyUnwrap
            | KeySign
            | KeyVerify
            | RngGet
            | KeyGetRotationPolicy
            | KeyUpdateRotationPolicy
            | KeyRotateIfDue
            | KeyNearExpiry => keys,
            CertificateAutoRenew | CertificateNearExpiry => OperationClass::Secrets,
            SecretSet
            | SecretGet
            | CertificateCreate
            | CertificateImport
            | CertificateGet
            | CertificateUpdate
            | CertificateDelete
            | CertificateList
            | CertificateListVersions
            | CertificateListDeleted
            | CertificateGetDeleted
            | CertificateRecover
            | CertificatePurge
            | CertificatePolicyGet
            | CertificatePolicyUpdate
            | CertificatePendingGet
            | CertificateContactsSet
            | CertificateContactsGet
            | CertificateContactsDelete
            | CertificateIssuerSet
            | CertificateIssuerUpdate
            | CertificateIssuerGet
            | CertificateIssuerDelete
            | CertificateIssuersList
            | CertificateBackup
            | CertificateRestore
            | CertificatePendingMerge
            | CertificatePendingUpdate
            | CertificatePendingDelete
            | SecretUpdate
            | SecretDelete
            | SecretList
            | SecretListVersions
            | SecretBackup
            | SecretRestore
            | SecretListDeleted
            | SecretGetDeleted
            | SecretPurge
            | SecretRecover
            | OpenIdConfiguration
            | Jwks
            | UserRealmDiscovery
            | Authentication
            | Metrics
            | HealthLive
            | HealthReady
            | VaultPut
            | VaultPatch
            | VaultGet
            | VaultDelete
            | VaultAccessPolicyUpdate
            | VaultList
            | DeletedVaultList
            | DeletedVaultGet
            | DeletedVaultPurge
            | DiskEncryptionSetWrite
            | DiskEncryptionSetDelete
            | DiskEncryptionSetRead
            | DiskEncryptionSetList
            | DiskWrite
            | DiskDelete
            | DiskRead
            | DiskList
            | VirtualMachineWrite
            | VirtualMachineDelete
            | VirtualMachineStart
            | VirtualMachineStop
            | VirtualMachineRead
            | VirtualMachineList
            | VirtualMachineExtensionWrite
            | VirtualMachineExtensionDelete
            | VirtualMachineExtensionRead
            | RecoveryVaultWrite
            | RecoveryVaultDelete
            | RecoveryVaultRead
            | BackupPolicyWrite
            | BackupPolicyDelete
            | BackupPolicyRead
            | BackupProtectionWrite
            | BackupProtectionDelete
            | BackupProtectionRead
            | BackupTrigger
            | BackupRecoveryPointRead
            | BackupRestore
            | BackupJobRead
            | BackupRecoveryPointExpire
            | SiteRecoveryWrite
            | SiteRecoveryDelete
            | SiteRecoveryRead
            | ReplicationEnable
            | ReplicationDisable
            | ReplicationRead
            | ReplicationTestFailover
            | ReplicationTestFailoverCleanup
            | ReplicationFailover
            | ReplicationFailoverCommit
            | ReplicationReprotect
            | ReplicationCycle
            | RoleDefinitionList
            | RoleDefinitionGet
            | RoleAssignmentWrite
            | RoleAssignmentList
            | RoleAssignmentGet
            | RoleAssignmentDelete
            | CloudMetadata
            | SubscriptionList
            | SubscriptionGet
            | TenantList
            | ResourceGroupWrite
            | ResourceGroupRead
            | ResourceGroupDelete
            | ResourceGroupList
            | ResourceList
            | DeletedManagedHsmList
            | RoleDefinitionWrite
            | RoleDefinitionDelete
            | DiskBeginGetAccess
            | DiskEndGetAccess
            | SnapshotWrite
            | SnapshotDelete
            | SnapshotRead
            | SnapshotList
            | SnapshotBeginGetAccess
            | SnapshotEndGetAccess
            | ImageWrite
            | ImageDelete
            | ImageRead
            | ImageList
            | DiskAccessRead
            | GraphDirectoryObjectsGetByIds
            | GraphServicePrincipalList
            | GraphUserList
            | GraphObjectGet
            | ServicePrincipalCreate
            | ServicePrincipalList
            | ServicePrincipalDelete
            | ServicePrincipalCredentialReset
            | ManagedIdentityCreate
            | ManagedIdentityList
            | ManagedIdentityDelete
            | UserCreate
            | UserList
            | UserDelete
            | GroupCreate
            | GroupList
            | GroupDelete
            | GroupMemberList
            | GroupMemberAdd
            | GroupMemberRemove
            | LogQuery
            | AlertList
            | AuditVerify
            | AuditExport
            | AuditList
            | AuditRetention
            | SchedulerClockGet
            | SchedulerClockAdvance
            | Unknown => OperationClass::Secrets,
        }
    }
}

impl std::fmt::Display for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rbac::find_role;

    #[test]
    fn every_operation_is_consistent() {
        let mut names: Vec<&str> = Operation::ALL.iter().map(|op| op.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Operation::ALL.len(), "names are unique");
        for &op in Operation::ALL {
            assert_eq!(Operation::from_name(op.name()), Some(op));
            let data_plane = op.surface() == Surface::KeyVault;
            // A data-plane operation is authorized both ways; nothing else is by vault.
            assert_eq!(op.data_action().is_some(), data_plane, "{op}");
            assert_eq!(op.permission().is_some(), data_plane, "{op}");
            if let Some((class, permission)) = op.permission() {
                assert_eq!(class.canonical(permission), Some(permission), "{op}");
            }
            if let Some(action) = op.data_action() {
                assert!(
                    find_role("Key Vault Administrator")
                        .unwrap()
                        .allows_data_action(action),
                    "{op}: {action} is a Key Vault data action"
                );
            }
            let key_budget = matches!(
                op.class(false),
                OperationClass::Keys | OperationClass::KeyCreate
            );
            assert_eq!(
                key_budget,
                op.name().starts_with("Key") || op == Operation::RngGet
            );
            assert_eq!(
                op.class(true) == OperationClass::HsmKeys,
                op.class(false) == OperationClass::Keys,
                "{op}: only key operations have an HSM budget"
            );
        }
        assert_eq!(Operation::from_name("Launch"), None);
    }

    #[test]
    fn known_mappings() {
        use Operation::*;
        assert_eq!(SecretGet.class(false), OperationClass::Secrets);
        assert_eq!(KeyRotate.class(true), OperationClass::KeyCreate);
        assert_eq!(KeyUnwrap.class(false), OperationClass::Keys);
        assert_eq!(KeySign.class(true), OperationClass::HsmKeys);
        assert_eq!(
            KeyUnwrap.permission(),
            Some((PermissionClass::Keys, "unwrapKey"))
        );
        assert_eq!(
            RngGet.data_action(),
            Some("Microsoft.KeyVault/vaults/keys/read")
        );
        assert_eq!(VaultGet.permission(), None);
        assert_eq!(Unknown.name(), "Unknown");
        assert_eq!(KeyWrap.to_string(), "KeyWrap");
    }
}
