//! Name rules for vaults and vault objects, as Azure enforces them.

use thiserror::Error;

/// A name that breaks Azure's naming rules.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NameError {
    /// Vault names: 3–24 characters, letters, digits and hyphens, starting with a letter,
    /// ending with a letter or digit, without consecutive hyphens.
    #[error("The vault name '{0}' is invalid. A vault name must be 3-24 characters long, begin with a letter, end with a letter or digit, contain only alphanumeric characters and dashes, and not contain consecutive dashes.")]
    Vault(String),
    /// Object (secret, key) names: 1–127 characters, letters, digits and hyphens.
    #[error("The request URI contains an invalid name: {0}. Object names must be 1-127 characters long and contain only 0-9, a-z, A-Z and -.")]
    Object(String),
    /// Resource group names: 1–90 characters of letters, digits, `-`, `_`, `.`, `(`, `)`,
    /// not ending with a period.
    #[error("Resource group '{0}' has an invalid name. It must be 1-90 characters of letters, digits, '-', '_', '.', '(' and ')', and not end with '.'.")]
    ResourceGroup(String),
    /// Replica names: 1–63 characters of letters, digits, `-`, `_` and `.`.
    #[error("The replica name '{0}' is invalid. It must be 1-63 characters of letters, digits, '-', '_' and '.'.")]
    Replica(String),
}

/// Checks a key vault name.
pub fn check_vault_name(name: &str) -> Result<(), NameError> {
    let bytes = name.as_bytes();
    let ok = (3..=24).contains(&bytes.len())
        && bytes[0].is_ascii_alphabetic()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
        && !name.contains("--");
    if ok {
        Ok(())
    } else {
        Err(NameError::Vault(name.to_owned()))
    }
}

/// Checks a secret or key name.
pub fn check_object_name(name: &str) -> Result<(), NameError> {
    let ok = (1..=127).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(NameError::Object(name.to_owned()))
    }
}

/// Checks an atrest replica's name (`--replica-name`, `vm start --host`).
pub fn check_replica_name(name: &str) -> Result<(), NameError> {
    let ok = (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    match ok {
        true => Ok(()),
        false => Err(NameError::Replica(name.to_owned())),
    }
}

/// Checks a resource group name.
pub fn check_resource_group_name(name: &str) -> Result<(), NameError> {
    let ok = (1..=90).contains(&name.len())
        && !name.ends_with('.')
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | '(' | ')'));
    if ok {
        Ok(())
    } else {
        Err(NameError::ResourceGroup(name.to_owned()))
    }
}

/// Object versions are 32 lowercase hex digits, as Key Vault issues them.
pub fn is_object_version(version: &str) -> bool {
    version.len() == 32
        && version
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Whether `s` is a GUID in the 8-4-4-4-12 hexadecimal layout.
pub fn is_guid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vault_names() {
        for good in ["abc", "a-b-c", "Vault1", "a23456789012345678901234"] {
            assert_eq!(check_vault_name(good), Ok(()), "{good}");
        }
        for bad in [
            "ab",
            "1abc",
            "abc-",
            "a--b",
            "a_b",
            "a2345678901234567890123456",
            "",
        ] {
            assert!(check_vault_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn object_names() {
        assert!(check_object_name("my-secret-01").is_ok());
        assert!(check_object_name(&"a".repeat(127)).is_ok());
        for bad in ["", "a_b", "a.b", "a b", "ä"] {
            assert!(check_object_name(bad).is_err(), "{bad}");
        }
        assert!(check_object_name(&"a".repeat(128)).is_err());
    }

    #[test]
    fn resource_groups() {
        assert!(check_resource_group_name("rg_1.(x)").is_ok());
        assert!(check_resource_group_name("rg.").is_err());
        assert!(check_resource_group_name("a/b").is_err());
    }

    #[test]
    fn versions() {
        assert!(is_object_version("0123456789abcdef0123456789abcdef"));
        assert!(!is_object_version("0123456789ABCDEF0123456789abcdef"));
        assert!(!is_object_version("abc"));
    }
}
