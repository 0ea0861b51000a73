//! Creating and managing principals. Credentials are returned once and stored as digests.

use atrest_core::principal::{PrincipalKind, PrincipalRecord};
use atrest_crypto::{random_secret, sha256};

use crate::DirectoryError;

use crate::Identity;

/// A service principal just created or whose credential was reset.
#[derive(Clone)]
pub struct NewServicePrincipal {
    /// The stored principal.
    pub principal: PrincipalRecord,
    /// The client secret; shown once, never stored.
    pub password: String,
}

impl std::fmt::Debug for NewServicePrincipal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewServicePrincipal")
            .field("principal", &self.principal)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// A managed identity just created, with the identity header its host presents.
#[derive(Clone)]
pub struct NewManagedIdentity {
    /// The stored principal.
    pub principal: PrincipalRecord,
    /// The `X-IDENTITY-HEADER` secret for the App-Service-style endpoint.
    pub identity_header: String,
}

impl std::fmt::Debug for NewManagedIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewManagedIdentity")
            .field("principal", &self.principal)
            .field("identity_header", &"<redacted>")
            .finish()
    }
}

/// A new principal of `kind` with fresh ids and no credential, resource or sign-in name.
/// Users and groups have no application of their own: their app id is their object id.
pub(crate) fn new_principal(kind: PrincipalKind, display_name: &str, now: i64) -> PrincipalRecord {
    let object_id = atrest_crypto::random_uuid();
    let app_id = match kind {
        PrincipalKind::User | PrincipalKind::Group => object_id.clone(),
        PrincipalKind::ServicePrincipal | PrincipalKind::ManagedIdentity => {
            atrest_crypto::random_uuid()
        }
    };
    PrincipalRecord {
        object_id,
        app_id,
        display_name: display_name.to_owned(),
        kind,
        secret_hash: None,
        is_admin: false,
        resource_id: None,
        user_principal_name: None,
        created: now,
    }
}

impl Identity {
    /// Creates a service principal with a fresh client secret.
    pub fn create_service_principal(
        &self,
        display_name: &str,
        is_admin: bool,
        now: i64,
    ) -> Result<NewServicePrincipal, DirectoryError> {
        let password = random_secret();
        let principal = PrincipalRecord {
            secret_hash: Some(sha256(password.as_bytes()).to_vec()),
            is_admin,
            ..new_principal(PrincipalKind::ServicePrincipal, display_name, now)
        };
        self.store.write(|tx| tx.insert_principal(&principal))?;
        Ok(NewServicePrincipal {
            principal,
            password,
        })
    }

    /// Issues a new client secret for a service principal, invalidating the old one.
    pub fn reset_credential(
        &self,
        app_id: &str,
    ) -> Result<Option<NewServicePrincipal>, DirectoryError> {
        let password = random_secret();
        self.store.write(|tx| {
            let Some(mut principal) = tx
                .principal_by_app_id(app_id)?
                .filter(|p| p.kind == PrincipalKind::ServicePrincipal)
            else {
                return Ok(None);
            };
            let digest = sha256(password.as_bytes()).to_vec();
            tx.set_principal_secret(&principal.object_id, &digest)?;
            principal.secret_hash = Some(digest);
            Ok(Some(NewServicePrincipal {
                principal,
                password,
            }))
        })
    }

    /// Creates a managed identity named by its ARM resource id.
    pub fn create_managed_identity(
        &self,
        display_name: &str,
        resource_id: &str,
        now: i64,
    ) -> Result<NewManagedIdentity, DirectoryError> {
        let identity_header = random_secret();
        let principal = PrincipalRecord {
            secret_hash: Some(sha256(identity_header.as_bytes()).to_vec()),
            resource_id: Some(resource_id.to_owned()),
            ..new_principal(PrincipalKind::ManagedIdentity, display_name, now)
        };
        self.store.write(|tx| tx.insert_principal(&principal))?;
        Ok(NewManagedIdentity {
            principal,
            identity_header,
        })
    }

    /// All principals of one kind.
    pub fn list_principals(
        &self,
        kind: PrincipalKind,
    ) -> Result<Vec<PrincipalRecord>, DirectoryError> {
        Ok(self.store.read(|tx| tx.list_principals(kind))?)
    }

    /// The principal with this app id.
    pub fn principal_by_app_id(
        &self,
        app_id: &str,
    ) -> Result<Option<PrincipalRecord>, DirectoryError> {
        Ok(self.store.read(|tx| tx.principal_by_app_id(app_id))?)
    }

    /// The managed identity with this ARM resource id.
    pub fn managed_identity(
        &self,
        resource_id: &str,
    ) -> Result<Option<PrincipalRecord>, DirectoryError> {
        Ok(self
            .store
            .read(|tx| tx.principal_by_resource_id(resource_id))?)
    }

    /// Deletes a principal by app id (or object id); false if none matched.
    pub fn delete_principal(&self, id: &str) -> Result<bool, DirectoryError> {
        let deleted = self.store.write(|tx| {
            let found = match tx.principal_by_app_id(id)? {
                Some(p) => Some(p),
                None => tx.principal_by_object_id(id)?,
            };
            match found {
                Some(p) => {
                    tx.delete_role_assignments_of(&p.object_id)?;
                    tx.delete_principal(&p.object_id)
                }
                None => Ok(false),
            }
        });
        self.role_assignments.forget();
        self.memberships.forget();
        Ok(deleted?)
    }

    /// Whether the principal with this object id exists and is an administrator.
    pub fn is_admin(&self, object_id: &str) -> Result<bool, DirectoryError> {
        Ok(self
            .store
            .read(|tx| tx.principal_by_object_id(object_id))?
            .is_some_and(|p| p.is_admin))
    }
}
