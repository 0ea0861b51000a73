//! ARM's `Microsoft.Resources` provider: the resource groups every other resource lives
//! in. Knows nothing of HTTP. See ARCHITECTURE.md.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::sync::Arc;

use atrest_core::names::check_resource_group_name;
use atrest_core::vault::{normalize_location, VaultRuleError};
use atrest_store::{Store, StoreError};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// How resource groups are stored among the other resources.
const KIND: &str = "resourceGroups";

/// One resource group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceGroup {
    /// Its name, as first written.
    pub name: String,
    /// Where its metadata lives (normalized).
    pub location: String,
    /// ARM tags.
    pub tags: BTreeMap<String, String>,
    /// Creation time, seconds since the epoch.
    pub created: i64,
}

/// Why a resource-group request was refused.
#[derive(Debug, Error)]
pub enum ResourceGroupError {
    /// The name breaks ARM's rules (400 `InvalidResourceGroupName`).
    #[error("Resource group name '{0}' is invalid. It can include alphanumeric, underscore, parentheses, hyphen, period (except at end), and Unicode characters that match the allowed characters, and be 1 to 90 characters long.")]
    BadName(String),
    /// The location is not a location (400 `LocationRequired` or `InvalidLocation`).
    #[error(transparent)]
    BadLocation(#[from] VaultRuleError),
    /// A group's location cannot change (409 `InvalidResourceGroupLocation`).
    #[error("Invalid resource group location '{asked}'. The Resource group already exists in location '{current}'.")]
    LocationChange {
        /// The location asked for.
        asked: String,
        /// The group's location.
        current: String,
    },
    /// No such group (404 `ResourceGroupNotFound`).
    #[error("Resource group '{0}' could not be found.")]
    NotFound(String),
    /// The group still holds resources (409 `ResourceGroupNotEmpty`).
    #[error("Resource group '{group}' still holds {}; delete them first.", .holds.join(", "))]
    NotEmpty {
        /// The group.
        group: String,
        /// What it holds, as `kind/name`.
        holds: Vec<String>,
    },
    /// The store failed (500).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The resource groups of the instance's subscription.
#[derive(Debug, Clone)]
pub struct ResourceGroups {
    store: Arc<Store>,
}

impl ResourceGroups {
    /// The groups kept in `store`.
    pub fn new(store: Arc<Store>) -> Self {
        ResourceGroups { store }
    }

    /// Creates group `name` in `location`, or updates its tags; true when it was created.
    /// A group's location never changes.
    pub fn put(
        &self,
        name: &str,
        location: &str,
        tags: BTreeMap<String, String>,
        now: i64,
    ) -> Result<(ResourceGroup, bool), ResourceGroupError> {
        check_resource_group_name(name)
            .map_err(|_| ResourceGroupError::BadName(name.to_owned()))?;
        let location = normalize_location(location)?;
        self.store.write(|tx| {
            let existing: Option<ResourceGroup> = tx.resource(KIND, "", name)?;
            let created = existing.is_none();
            let group = match existing {
                Some(current) if current.location != location => {
                    return Err(ResourceGroupError::LocationChange {
                        asked: location,
                        current: current.location,
                    })
                }
                Some(current) => ResourceGroup { tags, ..current },
                None => ResourceGroup {
                    name: name.to_owned(),
                    location,
                    tags,
                    created: now,
                },
            };
            tx.put_resource(KIND, "", name, &group)?;
            Ok((group, created))
        })
    }

    /// Group `name`, created in `location` if it does not exist yet.
    pub fn ensure(
        &self,
        name: &str,
        location: &str,
        now: i64,
    ) -> Result<ResourceGroup, ResourceGroupError> {
        match self.get(name) {
            Err(ResourceGroupError::NotFound(_)) => {
                Ok(self.put(name, location, BTreeMap::new(), now)?.0)
            }
            found => found,
        }
    }

    /// Group `name`.
    pub fn get(&self, name: &str) -> Result<ResourceGroup, ResourceGroupError> {
        self.store
            .read(|tx| tx.resource(KIND, "", name))?
            .ok_or_else(|| ResourceGroupError::NotFound(name.to_owned()))
    }

    /// Every group, by name.
    pub fn list(&self) -> Result<Vec<ResourceGroup>, ResourceGroupError> {
        Ok(self.store.read(|tx| tx.resources(KIND, Some("")))?)
    }

    /// Deletes group `name` if it holds nothing; false if there was no such group.
    pub fn delete(&self, name: &str) -> Result<bool, ResourceGroupError> {
        self.store.write(|tx| {
            if tx.resource::<ResourceGroup>(KIND, "", name)?.is_none() {
                return Ok(false);
            }
            let holds = tx.resource_group_contents(name, KIND)?;
            if !holds.is_empty() {
                return Err(ResourceGroupError::NotEmpty {
                    group: name.to_owned(),
                    holds: holds.into_iter().map(|(k, n)| format!("{k}/{n}")).collect(),
                });
            }
            Ok(tx.delete_resource(KIND, "", name)?)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn groups() -> (ResourceGroups, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open_file(&dir.path().join("state.db")).unwrap());
        (ResourceGroups::new(store), dir)
    }

    #[test]
    fn create_update_list_and_delete() {
        let (rgs, _dir) = groups();
        let (rg, created) = rgs
            .put("Team-A", "West Europe", BTreeMap::new(), 10)
            .unwrap();
        assert!(created);
        assert_eq!(rg.location, "westeurope");
        let tags = BTreeMap::from([("env".to_owned(), "test".to_owned())]);
        let (rg, created) = rgs.put("team-a", "westeurope", tags.clone(), 20).unwrap();
        assert!(!created, "names compare case-insensitively");
        assert_eq!(
            (rg.name.as_str(), rg.tags, rg.created),
            ("Team-A", tags, 10)
        );
        assert!(matches!(
            rgs.put("team-a", "eastus", BTreeMap::new(), 30),
            Err(ResourceGroupError::LocationChange { .. })
        ));
        assert_eq!(rgs.list().unwrap().len(), 1);
        assert!(rgs.delete("TEAM-A").unwrap());
        assert!(!rgs.delete("team-a").unwrap());
        assert!(matches!(
            rgs.get("team-a"),
            Err(ResourceGroupError::NotFound(_))
        ));
    }

    #[test]
    fn bad_names_and_locations_change_nothing() {
        let (rgs, _dir) = groups();
        for bad in ["", "ends.", "has space", "a/b", &"x".repeat(91)] {
            assert!(
                matches!(
                    rgs.put(bad, "westeurope", BTreeMap::new(), 1),
                    Err(ResourceGroupError::BadName(_))
                ),
                "{bad:?}"
            );
        }
        assert!(matches!(
            rgs.put("ok", "not a place!", BTreeMap::new(), 1),
            Err(ResourceGroupError::BadLocation(_))
        ));
        assert!(rgs.list().unwrap().is_empty());
    }

    #[test]
    fn a_group_holding_resources_is_not_deleted() {
        let (rgs, _dir) = groups();
        rgs.put("full", "westeurope", BTreeMap::new(), 1).unwrap();
        rgs.store
            .write(|tx| tx.put_resource("disks", "full", "d1", &serde_json::json!({})))
            .unwrap();
        match rgs.delete("full") {
            Err(ResourceGroupError::NotEmpty { holds, .. }) => assert_eq!(holds, ["disks/d1"]),
            other => panic!("{other:?}"),
        }
        assert!(rgs.get("full").is_ok());
    }
}
