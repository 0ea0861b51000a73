//! A vault's certificate contacts and issuers. An issuer's password is sealed with the
//! vault's storage key and never returned. A certificate whose policy names a registered
//! issuer waits, as for issuer `Unknown`, for a merge: the providers' services are not
//! reached from here.

use atrest_core::names::check_object_name;
use atrest_core::vault::{VaultRecord, MAX_CONTENT_TYPE_CHARS};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::objects::Page;
use crate::{VaultError, Vaults};

const CONTACTS_KIND: &str = "certificateContacts";
const ISSUER_KIND: &str = "certificateIssuers";
const MAX_CONTACTS: usize = 32;

/// One certificate contact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contact {
    /// `email`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// `name`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `phone`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
}

/// A certificate issuer as stored (the password sealed).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Issuer {
    /// Name, with the case it was set with.
    pub name: String,
    /// `provider`.
    pub provider: String,
    /// `credentials.account_id`.
    pub account_id: Option<String>,
    /// `credentials.pwd`, sealed (base64); never returned.
    sealed_password: Option<String>,
    /// `org_details`, as given.
    pub org_details: Value,
    /// `attributes.enabled`.
    pub enabled: bool,
    /// Creation time.
    pub created: i64,
    /// Last change.
    pub updated: i64,
}

/// What a set or update gives.
#[derive(Clone, Default)]
pub struct IssuerChange {
    /// `provider`.
    pub provider: Option<String>,
    /// `credentials.account_id`.
    pub account_id: Option<String>,
    /// `credentials.pwd`.
    pub password: Option<zeroize::Zeroizing<String>>,
    /// `org_details`.
    pub org_details: Option<Value>,
    /// `attributes.enabled`.
    pub enabled: Option<bool>,
}

impl std::fmt::Debug for IssuerChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuerChange")
            .field("provider", &self.provider)
            .field("account_id", &self.account_id)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("enabled", &self.enabled)
            .finish_non_exhaustive()
    }
}

fn bad(message: impl Into<String>) -> VaultError {
    VaultError::BadParameter(message.into())
}

fn issuer_aad(vault: &VaultRecord, name: &str) -> Vec<u8> {
    format!(
        "{}/certificate-issuer/{}",
        vault.vault_id,
        name.to_ascii_lowercase()
    )
    .into_bytes()
}

/// Deletes the certificate documents a vault keeps beside its objects (contacts,
/// issuers, issuance operations), when the vault itself is purged.
pub(crate) fn forget_certificate_documents(
    tx: &atrest_store::Tx,
    vault_id: &str,
) -> Result<(), VaultError> {
    for (kind, name) in tx.resource_group_contents(vault_id, "-")? {
        if [
            CONTACTS_KIND,
            ISSUER_KIND,
            crate::certificates::OPERATION_KIND,
        ]
        .contains(&kind.as_str())
        {
            tx.delete_resource(&kind, vault_id, &name)?;
        }
    }
    Ok(())
}

impl Vaults {
    /// Sets the vault's certificate contacts.
    pub fn set_certificate_contacts(
        &self,
        vault: &VaultRecord,
        contacts: &[Contact],
    ) -> Result<Vec<Contact>, VaultError> {
        if contacts.is_empty() || contacts.len() > MAX_CONTACTS {
            return Err(bad(format!("Give 1 to {MAX_CONTACTS} contacts.")));
        }
        for c in contacts {
            let email = c.email.as_deref().unwrap_or_default();
            if !email.contains('@') || email.len() > MAX_CONTENT_TYPE_CHARS {
                return Err(bad(format!(
                    "'{email}' is not an e-mail address: every contact needs one."
                )));
            }
        }
        self.write(|tx| {
            Ok(tx.put_resource(CONTACTS_KIND, &vault.vault_id, "contacts", &contacts)?)
        })?;
        Ok(contacts.to_vec())
    }

    /// The vault's certificate contacts.
    pub fn certificate_contacts(&self, vault: &VaultRecord) -> Result<Vec<Contact>, VaultError> {
        self.store
            .read(|tx| tx.resource::<Vec<Contact>>(CONTACTS_KIND, &vault.vault_id, "contacts"))?
            .ok_or(VaultError::ContactsNotFound)
    }

    /// Deletes the vault's certificate contacts; returns them.
    pub fn delete_certificate_contacts(
        &self,
        vault: &VaultRecord,
    ) -> Result<Vec<Contact>, VaultError> {
        let contacts = self.certificate_contacts(vault)?;
        self.write(|tx| Ok(tx.delete_resource(CONTACTS_KIND, &vault.vault_id, "contacts")?))?;
        Ok(contacts)
    }

    fn stored_issuer(&self, vault: &VaultRecord, name: &str) -> Result<Option<Issuer>, VaultError> {
        check_object_name(name)?;
        Ok(self.store.read(|tx| {
            tx.resource::<Issuer>(ISSUER_KIND, &vault.vault_id, &name.to_ascii_lowercase())
        })?)
    }

    /// A registered issuer.
    pub fn certificate_issuer(
        &self,
        vault: &VaultRecord,
        name: &str,
    ) -> Result<Issuer, VaultError> {
        self.stored_issuer(vault, name)?
            .ok_or_else(|| VaultError::IssuerNotFound(name.to_owned()))
    }

    /// Sets (`replace`) or updates an issuer.
    pub fn set_certificate_issuer(
        &self,
        vault: &VaultRecord,
        name: &str,
        change: &IssuerChange,
        replace: bool,
        now: i64,
    ) -> Result<Issuer, VaultError> {
        let existing = self.stored_issuer(vault, name)?;
        if name.eq_ignore_ascii_case("Self") || name.eq_ignore_ascii_case("Unknown") {
            return Err(bad(format!("'{name}' is a reserved issuer name.")));
        }
        let base = match (&existing, replace) {
            (Some(i), false) => i.clone(),
            (None, false) => return Err(VaultError::IssuerNotFound(name.to_owned())),
            (_, true) => Issuer {
                name: name.to_owned(),
                provider: String::new(),
                account_id: None,
                sealed_password: None,
                org_details: Value::Null,
                enabled: true,
                created: existing.as_ref().map_or(now, |i| i.created),
                updated: now,
            },
        };
        let provider = change.provider.clone().unwrap_or(base.provider.clone());
        if provider.trim().is_empty() {
            return Err(bad(
                "An issuer needs a provider (for example DigiCert or GlobalSign).",
            ));
        }
        let sealed_password = match &change.password {
            Some(pwd) => Some(
                STANDARD.encode(
                    self.storage_key(vault)?
                        .seal(&issuer_aad(vault, name), pwd.as_bytes()),
                ),
            ),
            None => base.sealed_password.clone(),
        };
        let issuer = Issuer {
            provider,
            account_id: change.account_id.clone().or(base.account_id.clone()),
            sealed_password,
            org_details: change
                .org_details
                .clone()
                .unwrap_or(base.org_details.clone()),
            enabled: change.enabled.unwrap_or(base.enabled),
            updated: now,
            ..base
        };
        self.write(|tx| {
            Ok(tx.put_resource(
                ISSUER_KIND,
                &vault.vault_id,
                &name.to_ascii_lowercase(),
                &issuer,
            )?)
        })?;
        Ok(issuer)
    }

    /// Deletes an issuer; returns it.
    pub fn delete_certificate_issuer(
        &self,
        vault: &VaultRecord,
        name: &str,
    ) -> Result<Issuer, VaultError> {
        let issuer = self.certificate_issuer(vault, name)?;
        self.write(|tx| {
            Ok(tx.delete_resource(ISSUER_KIND, &vault.vault_id, &name.to_ascii_lowercase())?)
        })?;
        Ok(issuer)
    }

    /// The vault's issuers, by name (one page: a vault holds few).
    pub fn list_certificate_issuers(
        &self,
        vault: &VaultRecord,
    ) -> Result<Page<Issuer>, VaultError> {
        let mut items: Vec<Issuer> = self
            .store
            .read(|tx| tx.resources(ISSUER_KIND, Some(&vault.vault_id)))?;
        items.sort_by(|a, b| {
            a.name
                .to_ascii_lowercase()
                .cmp(&b.name.to_ascii_lowercase())
        });
        Ok(Page { items, next: None })
    }
}
