//! Key Vault's service limits: how many transactions one vault serves per window, by
//! operation class, as Azure's service-limits table states them per 10 seconds.
//!
//! Cryptographic operations with larger RSA keys cost more of the key budget, as the table
//! lists lower limits for them: RSA 3072 counts 4, RSA 4096 counts 8 (2,000 → 500 → 250 for
//! software keys; 1,000 → 250 → 125 for HSM keys).

use thiserror::Error;

/// The budget an operation draws on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OperationClass {
    /// Secrets, vault transactions and everything not listed below.
    Secrets,
    /// Creating, importing or rotating a key.
    KeyCreate,
    /// Every other key operation on a software key.
    Keys,
    /// Every other key operation on an HSM key.
    HsmKeys,
}

impl OperationClass {
    /// Every class.
    pub const ALL: [OperationClass; 4] = [
        OperationClass::Secrets,
        OperationClass::KeyCreate,
        OperationClass::Keys,
        OperationClass::HsmKeys,
    ];

    /// The name used in configuration, errors and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            OperationClass::Secrets => "secrets",
            OperationClass::KeyCreate => "key-create",
            OperationClass::Keys => "keys",
            OperationClass::HsmKeys => "hsm-keys",
        }
    }
}

/// What one operation costs of its class's budget: RSA 3072 counts 4 and RSA 4096 counts 8
/// for cryptographic operations, everything else 1.
pub fn cost(class: OperationClass, rsa_bits: Option<usize>) -> u32 {
    match (class, rsa_bits) {
        (OperationClass::Keys | OperationClass::HsmKeys, Some(bits)) if bits >= 4096 => 8,
        (OperationClass::Keys | OperationClass::HsmKeys, Some(bits)) if bits >= 3072 => 4,
        _ => 1,
    }
}

/// Per-vault budgets for one window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceLimits {
    /// Window length in seconds (Azure: 10).
    pub window_secs: u64,
    /// Secrets and vault transactions per window.
    pub secrets: u32,
    /// Key creations per window.
    pub key_create: u32,
    /// Other software-key transactions per window (RSA 2048 / EC weight).
    pub keys: u32,
    /// Other HSM-key transactions per window.
    pub hsm_keys: u32,
}

impl Default for ServiceLimits {
    /// Azure Key Vault's published limits (standard tier, software and HSM keys).
    fn default() -> Self {
        ServiceLimits {
            window_secs: 10,
            secrets: 4000,
            key_create: 10,
            keys: 2000,
            hsm_keys: 1000,
        }
    }
}

/// A malformed limits setting.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid throttling limit '{0}': use CLASS=N with CLASS one of secrets, key-create, keys, hsm-keys and N a positive integer")]
pub struct LimitsError(pub String);

impl ServiceLimits {
    /// The budget of a class.
    pub fn limit(&self, class: OperationClass) -> u32 {
        match class {
            OperationClass::Secrets => self.secrets,
            OperationClass::KeyCreate => self.key_create,
            OperationClass::Keys => self.keys,
            OperationClass::HsmKeys => self.hsm_keys,
        }
    }

    /// These limits with `secrets=20,keys=40,…` applied.
    pub fn with_overrides(mut self, spec: &str) -> Result<Self, LimitsError> {
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let bad = || LimitsError(item.to_owned());
            let (name, value) = item.split_once('=').ok_or_else(bad)?;
            let value: u32 = value
                .trim()
                .parse()
                .ok()
                .filter(|v| *v > 0)
                .ok_or_else(bad)?;
            let class = OperationClass::ALL
                .into_iter()
                .find(|c| c.as_str() == name.trim())
                .ok_or_else(bad)?;
            match class {
                OperationClass::Secrets => self.secrets = value,
                OperationClass::KeyCreate => self.key_create = value,
                OperationClass::Keys => self.keys = value,
                OperationClass::HsmKeys => self.hsm_keys = value,
            }
        }
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_weights_and_overrides() {
        let limits = ServiceLimits::default();
        // The published per-size limits follow from the weights.
        for (bits, published) in [(2048, 2000), (3072, 500), (4096, 250)] {
            assert_eq!(
                limits.keys / cost(OperationClass::Keys, Some(bits)),
                published
            );
        }
        assert_eq!(
            limits.hsm_keys / cost(OperationClass::HsmKeys, Some(4096)),
            125
        );
        assert_eq!(cost(OperationClass::Secrets, Some(4096)), 1);
        let low = limits.clone().with_overrides("secrets=20, keys=7").unwrap();
        assert_eq!((low.secrets, low.keys, low.key_create), (20, 7, 10));
        for bad in ["secrets", "secrets=0", "certs=5", "keys=-1"] {
            assert!(limits.clone().with_overrides(bad).is_err(), "{bad}");
        }
    }
}
