//! The directory (service principals, managed identities, users, groups), role
//! assignments, and the token service: ES256 tokens issued and verified as the Microsoft
//! identity platform does. Knows nothing of HTTP. See ARCHITECTURE.md.
#![forbid(unsafe_code)]

mod directory;
mod principals;
mod roles;
mod snapshot;
mod tokens;

pub use directory::DirectoryError;
pub use principals::{NewManagedIdentity, NewServicePrincipal};
pub use roles::{RoleAssignment, RoleError};
pub use tokens::{
    Caller, IdentitySelector, IssuedToken, OAuthError, TokenError, UserSignIn, AZURE_CLI_CLIENT_ID,
};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use atrest_crypto::TokenSigner;
use atrest_store::Store;

use crate::snapshot::Snapshot;

/// Every group membership, as (group object id, member object id) pairs.
type Memberships = Vec<(String, String)>;

/// Token lifetime, as Entra ID issues for client credentials.
pub const TOKEN_LIFETIME_SECS: i64 = 3599;

/// Verified tokens remembered at most (the cache is emptied when full).
const VERIFIED_TOKENS_CACHED: usize = 8192;

/// The token service of one atrest instance.
#[derive(Debug)]
pub struct Identity {
    store: Arc<Store>,
    signer: TokenSigner,
    tenant: String,
    authority: String,
    issuer: String,
    data_plane_audiences: Vec<String>,
    management_audiences: Vec<String>,
    graph_audiences: Vec<String>,
    disk_audiences: Vec<String>,
    token_lifetime: i64,
    verified: Mutex<HashMap<[u8; 32], Arc<serde_json::Value>>>,
    /// Role assignments as last read.
    role_assignments: Snapshot<Vec<RoleAssignment>>,
    /// Group memberships as last read.
    memberships: Snapshot<Memberships>,
}

impl Identity {
    /// A token service for `tenant` whose authority host is `authority`
    /// (`https://localhost:8443`), issuing tokens for the vault resource `vault_resource`
    /// (`https://vault.localhost:8443`) and the management API.
    pub fn new(
        store: Arc<Store>,
        signer: TokenSigner,
        tenant: String,
        authority: String,
        vault_resource: String,
    ) -> Self {
        let host_only = vault_resource
            .rsplit_once(':')
            .map(|(h, _)| h.to_owned())
            .filter(|h| h.starts_with("https://"));
        let mut data_plane_audiences = vec![vault_resource, "https://vault.azure.net".to_owned()];
        data_plane_audiences.extend(host_only);
        Identity {
            store,
            signer,
            issuer: format!("{authority}/{tenant}/v2.0"),
            // This instance's Microsoft Graph is served at the authority itself.
            graph_audiences: vec![authority.clone()],
            disk_audiences: vec!["https://disk.azure.com".to_owned()],
            tenant,
            authority,
            data_plane_audiences,
            management_audiences: vec![
                "https://management.azure.com".to_owned(),
                "https://management.core.windows.net".to_owned(),
            ],
            token_lifetime: TOKEN_LIFETIME_SECS,
            verified: Mutex::new(HashMap::new()),
            role_assignments: Snapshot::default(),
            memberships: Snapshot::default(),
        }
    }

    /// Sets the lifetime of issued tokens (seconds).
    pub fn with_token_lifetime(mut self, seconds: i64) -> Self {
        self.token_lifetime = seconds;
        self
    }

    /// The tenant id.
    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// `https://HOST:PORT`, the authority host clients are configured with.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// The `iss` claim of every token this service issues.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The JSON Web Key Set clients use to check token signatures.
    pub fn jwks(&self) -> serde_json::Value {
        serde_json::json!({ "keys": [self.signer.public_jwk()] })
    }

    /// Audiences accepted by the vault data plane.
    pub fn data_plane_audiences(&self) -> &[String] {
        &self.data_plane_audiences
    }

    /// Audiences accepted by the management API.
    pub fn management_audiences(&self) -> &[String] {
        &self.management_audiences
    }

    /// Audiences accepted by disk access URLs of disks whose `dataAccessAuthMode` is
    /// `AzureActiveDirectory`.
    pub fn disk_audiences(&self) -> &[String] {
        &self.disk_audiences
    }

    /// Audiences accepted by the directory's Microsoft Graph endpoints.
    pub fn graph_audiences(&self) -> &[String] {
        &self.graph_audiences
    }
}
