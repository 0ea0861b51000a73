//! Principals: service principals, managed identities, users and groups.

/// What kind of identity a principal is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrincipalKind {
    /// An application with a client secret.
    ServicePrincipal,
    /// A managed identity; its secret is the hosting environment's identity header.
    ManagedIdentity,
    /// A user who signs in with a password (a salted, slow hash is stored).
    User,
    /// A group; roles and access policies granted to it reach its members.
    Group,
}

impl PrincipalKind {
    /// The name stored, and shown as Azure's `principalType`.
    pub fn as_str(self) -> &'static str {
        match self {
            PrincipalKind::ServicePrincipal => "ServicePrincipal",
            PrincipalKind::ManagedIdentity => "ManagedIdentity",
            PrincipalKind::User => "User",
            PrincipalKind::Group => "Group",
        }
    }

    /// The kind stored as `s`; anything unknown is a service principal.
    pub fn parse(s: &str) -> Self {
        match s {
            "ManagedIdentity" => PrincipalKind::ManagedIdentity,
            "User" => PrincipalKind::User,
            "Group" => PrincipalKind::Group,
            _ => PrincipalKind::ServicePrincipal,
        }
    }
}

/// A stored principal. `secret_hash` is a digest of the credential, never the credential.
/// Users and groups have no application of their own: their `app_id` is their object id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrincipalRecord {
    /// Object id (`oid` claim).
    pub object_id: String,
    /// Application (client) id (`appid` claim); the object id for users and groups.
    pub app_id: String,
    /// Display name.
    pub display_name: String,
    /// Service principal or managed identity.
    pub kind: PrincipalKind,
    /// Digest of the current credential: SHA-256 of a generated secret, or a salted
    /// password hash for users.
    pub secret_hash: Option<Vec<u8>>,
    /// May manage principals and read the audit log.
    pub is_admin: bool,
    /// ARM resource id of a managed identity.
    pub resource_id: Option<String>,
    /// Sign-in name of a user (`alice@contoso.com`).
    pub user_principal_name: Option<String>,
    /// Creation time.
    pub created: i64,
}
