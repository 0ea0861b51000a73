//! Users and groups: password sign-in names, group membership, and the set of object ids
//! a caller acts as (itself and every group that contains it, directly or through other
//! groups), which role assignments and access policies are matched against.
//!
//! Memberships are kept in memory after the first read; every change goes through this
//! service, which drops that copy, so a removed member loses the group's grants on the
//! next request.

use std::collections::BTreeSet;
use std::sync::Arc;

use atrest_core::principal::{PrincipalKind, PrincipalRecord};
use atrest_crypto::hash_password;
use atrest_store::StoreError;
use thiserror::Error;

use crate::principals::new_principal;
use crate::{Identity, Memberships};

/// A refused directory change.
#[derive(Debug, Error)]
pub enum DirectoryError {
    /// A sign-in name that is not `local@domain`.
    #[error("The userPrincipalName '{0}' is not valid; it must look like 'alias@domain'.")]
    BadUserPrincipalName(String),
    /// A password that breaks Entra ID's complexity rule.
    #[error("The password does not meet complexity requirements: 8-256 characters with at least three of lowercase letters, uppercase letters, digits and symbols.")]
    WeakPassword,
    /// A display name that is empty or too long.
    #[error("The displayName must be 1-256 characters.")]
    BadDisplayName,
    /// The sign-in name is taken.
    #[error("Another object with the same value for property userPrincipalName already exists.")]
    UserExists,
    /// No principal of the expected kind has that id.
    #[error("Resource '{0}' does not exist or one of its queried reference-property objects are not present.")]
    NotFound(String),
    /// Adding the member would make the group contain itself.
    #[error("Adding '{member}' to group '{group}' would create a membership cycle.")]
    Cycle {
        /// The group.
        group: String,
        /// The member.
        member: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn check_display_name(name: &str) -> Result<(), DirectoryError> {
    if name.trim().is_empty() || name.chars().count() > 256 {
        return Err(DirectoryError::BadDisplayName);
    }
    Ok(())
}

fn check_upn(upn: &str) -> Result<(), DirectoryError> {
    let bad = || DirectoryError::BadUserPrincipalName(upn.to_owned());
    let (local, domain) = upn.split_once('@').ok_or_else(bad)?;
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && local
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-'+".contains(&b));
    let domain_ok = domain.contains('.')
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if local_ok && domain_ok && upn.len() <= 113 {
        Ok(())
    } else {
        Err(bad())
    }
}

fn check_password(password: &str) -> Result<(), DirectoryError> {
    let classes = [
        password.chars().any(|c| c.is_lowercase()),
        password.chars().any(|c| c.is_uppercase()),
        password.chars().any(|c| c.is_ascii_digit()),
        password.chars().any(|c| !c.is_alphanumeric()),
    ];
    let length = password.chars().count();
    if (8..=256).contains(&length) && classes.iter().filter(|c| **c).count() >= 3 {
        Ok(())
    } else {
        Err(DirectoryError::WeakPassword)
    }
}

impl Identity {
    /// Creates a user who signs in with `user_principal_name` and `password`; only a slow
    /// salted hash of the password is stored.
    pub fn create_user(
        &self,
        display_name: &str,
        user_principal_name: &str,
        password: &str,
        now: i64,
    ) -> Result<PrincipalRecord, DirectoryError> {
        check_display_name(display_name)?;
        check_upn(user_principal_name)?;
        check_password(password)?;
        let user = PrincipalRecord {
            secret_hash: Some(hash_password(password)),
            user_principal_name: Some(user_principal_name.to_owned()),
            ..new_principal(PrincipalKind::User, display_name, now)
        };
        self.store.write(|tx| {
            if tx.principal_by_upn(user_principal_name)?.is_some() {
                return Err(DirectoryError::UserExists);
            }
            tx.insert_principal(&user)?;
            Ok(())
        })?;
        Ok(user)
    }

    /// Creates a security group.
    pub fn create_group(
        &self,
        display_name: &str,
        now: i64,
    ) -> Result<PrincipalRecord, DirectoryError> {
        check_display_name(display_name)?;
        let group = new_principal(PrincipalKind::Group, display_name, now);
        self.store.write(|tx| tx.insert_principal(&group))?;
        Ok(group)
    }

    /// A principal by object id, or a user by sign-in name.
    pub fn find_principal(&self, id: &str) -> Result<Option<PrincipalRecord>, DirectoryError> {
        Ok(self.store.read(|tx| match tx.principal_by_object_id(id)? {
            Some(p) => Ok(Some(p)),
            None => tx.principal_by_upn(id),
        })?)
    }

    fn group(&self, group_id: &str) -> Result<PrincipalRecord, DirectoryError> {
        self.find_principal(group_id)?
            .filter(|p| p.kind == PrincipalKind::Group)
            .ok_or_else(|| DirectoryError::NotFound(group_id.to_owned()))
    }

    /// The group and the would-be (or current) member, both of which must exist.
    fn group_and_member(
        &self,
        group_id: &str,
        member_id: &str,
    ) -> Result<(PrincipalRecord, PrincipalRecord), DirectoryError> {
        let group = self.group(group_id)?;
        let member = self
            .find_principal(member_id)?
            .ok_or_else(|| DirectoryError::NotFound(member_id.to_owned()))?;
        Ok((group, member))
    }

    /// Adds a principal (any kind, groups included) to a group; false if it already was a
    /// member.
    pub fn add_group_member(
        &self,
        group_id: &str,
        member_id: &str,
    ) -> Result<bool, DirectoryError> {
        let (group, member) = self.group_and_member(group_id, member_id)?;
        if self
            .object_ids_of(&group.object_id)?
            .contains(&member.object_id)
        {
            return Err(DirectoryError::Cycle {
                group: group.object_id,
                member: member.object_id,
            });
        }
        let added = self
            .store
            .write(|tx| tx.add_group_member(&group.object_id, &member.object_id));
        self.memberships.forget();
        Ok(added?)
    }

    /// Removes a member from a group; false if it was not one.
    pub fn remove_group_member(
        &self,
        group_id: &str,
        member_id: &str,
    ) -> Result<bool, DirectoryError> {
        let (group, member) = self.group_and_member(group_id, member_id)?;
        let removed = self
            .store
            .write(|tx| tx.remove_group_member(&group.object_id, &member.object_id));
        self.memberships.forget();
        Ok(removed?)
    }

    /// The direct members of a group.
    pub fn group_members(&self, group_id: &str) -> Result<Vec<PrincipalRecord>, DirectoryError> {
        let group = self.group(group_id)?;
        let ids: Vec<String> = self
            .memberships()?
            .iter()
            .filter(|(g, _)| *g == group.object_id)
            .map(|(_, m)| m.clone())
            .collect();
        Ok(self.store.read(|tx| {
            ids.iter()
                .filter_map(|id| tx.principal_by_object_id(id).transpose())
                .collect::<Result<Vec<_>, _>>()
        })?)
    }

    /// `object_id` and the object ids of every group containing it, directly or through
    /// nested groups.
    pub fn object_ids_of(&self, object_id: &str) -> Result<Vec<String>, DirectoryError> {
        let memberships = self.memberships()?;
        let mut found = BTreeSet::new();
        let mut ids = vec![object_id.to_owned()];
        let mut next = 0;
        while next < ids.len() {
            let member = ids[next].clone();
            next += 1;
            for (group, _) in memberships.iter().filter(|(_, m)| *m == member) {
                if found.insert(group.clone()) {
                    ids.push(group.clone());
                }
            }
        }
        Ok(ids)
    }

    fn memberships(&self) -> Result<Arc<Memberships>, StoreError> {
        self.memberships.get(self.store.generation()?, || {
            self.store.read(|tx| tx.group_memberships())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_in_names_and_passwords_follow_the_rules() {
        for good in ["alice@contoso.com", "a.b-c_d@sub.example.org"] {
            assert!(check_upn(good).is_ok(), "{good}");
        }
        for bad in [
            "alice",
            "@contoso.com",
            "alice@",
            "alice@localhost",
            "al ice@x.com",
            "a@b..com",
        ] {
            assert!(check_upn(bad).is_err(), "{bad}");
        }
        assert!(check_password("Passw0rd").is_ok());
        assert!(check_password("passw0rd!").is_ok());
        for weak in ["Pa0!", "password", "PASSWORD1", "passwordpassword"] {
            assert!(check_password(weak).is_err(), "{weak}");
        }
    }
}
