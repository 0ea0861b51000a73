//! The keys data plane: key material on top of the shared object lifecycle, and the
//! cryptographic operations, each gated by the key's `key_ops` and attributes.
//!
//! A version's public column holds `{"kty", "key_ops", "jwk": {public members}}`; its
//! sealed payload is what the key's provider keeps for it (`KeyHandle::to_stored`: the
//! private material, for software keys), which is opened only inside an operation and
//! never returned. `-HSM` key types go to the HSM provider, the others to the software one.

use std::collections::BTreeMap;
use std::sync::Arc;

use atrest_core::attributes::{Attributes, Recovery};
use atrest_core::names::check_object_name;
use atrest_core::vault::{ObjectKind, VaultRecord};
use atrest_crypto::{
    random_hex, CipherParams, Curve, Encrypted, KeyHandle, KeyProvider, KeySpec, PrivateJwk,
};
use atrest_store::VersionRow;
use serde_json::{json, Map, Value};
use zeroize::Zeroizing;

use crate::objects::{
    attributes, check_tags, edit_tags_and_attributes, live_version, name_for_new_version,
    payload_aad, recovery, refuse_managed_name, AttributesPatch, Page, Stored,
};
use crate::rotation::parse_policy;
use crate::{VaultError, Vaults};

const KIND: ObjectKind = ObjectKind::Key;

/// Parsed key versions kept in memory at most (the cache is emptied when full).
const PARSED_KEYS_CACHED: usize = 1024;

/// Every operation name `key_ops` may list.
pub const KEY_OPS: &[&str] = &[
    "encrypt",
    "decrypt",
    "sign",
    "verify",
    "wrapKey",
    "unwrapKey",
    "import",
    "export",
];

/// One key version as the data plane returns it: public parts only.
#[derive(Debug, Clone)]
pub struct Key {
    /// Name, with the case it was created with.
    pub name: String,
    /// Version id.
    pub version: String,
    /// `kty` (`RSA`, `RSA-HSM`, `EC`, `EC-HSM`, `oct`, `oct-HSM`).
    pub kty: String,
    /// `key_ops`.
    pub key_ops: Vec<String>,
    /// Public JWK members (`n`, `e` or `crv`, `x`, `y`).
    pub public: Map<String, Value>,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Attributes.
    pub attributes: Attributes,
    /// The vault's recovery settings.
    pub recovery: Recovery,
    /// `(deletedDate, scheduledPurgeDate)` of a soft-deleted key.
    pub deleted: Option<(i64, i64)>,
    /// Whether the key belongs to a certificate (`managed`).
    pub managed: bool,
}

impl Key {
    /// The modulus length of an RSA key, in bits.
    pub fn rsa_bits(&self) -> Option<usize> {
        rsa_bits(&self.kty, self.public.get("n")?.as_str()?)
    }
}

/// The modulus length in bits of an RSA key whose JWK `n` is `n`; `None` for other types.
fn rsa_bits(kty: &str, n: &str) -> Option<usize> {
    use base64::Engine;
    if !kty.starts_with("RSA") {
        return None;
    }
    let n = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(n)
        .ok()?;
    let significant = n.iter().skip_while(|b| **b == 0).count();
    Some(significant * 8)
}

/// What kind of key to create.
#[derive(Debug, Clone)]
pub struct CreateKey {
    /// `kty`; a `-HSM` suffix is kept and reported.
    pub kty: String,
    /// `key_size` (RSA: 2048/3072/4096, default 2048; oct: 128/192/256, default 256).
    pub key_size: Option<u32>,
    /// `crv` for EC keys (default P-256).
    pub curve: Option<String>,
    /// `public_exponent`; only 65537 is supported.
    pub public_exponent: Option<u32>,
    /// `key_ops`; the type's defaults when absent.
    pub key_ops: Option<Vec<String>>,
    /// Tags.
    pub tags: Option<BTreeMap<String, String>>,
    /// Attributes.
    pub attributes: AttributesPatch,
}

impl CreateKey {
    /// A key of type `kty` with every option at its default.
    pub fn of_type(kty: &str) -> Self {
        CreateKey {
            kty: kty.to_owned(),
            key_size: None,
            curve: None,
            public_exponent: None,
            key_ops: None,
            tags: None,
            attributes: AttributesPatch::default(),
        }
    }
}

/// `PUT /keys/{name}`: import a private JWK.
pub struct ImportKey {
    /// The JWK, private members included.
    pub jwk: PrivateJwk,
    /// `Hsm`: mark the key as HSM-protected.
    pub hsm: bool,
    /// Tags.
    pub tags: Option<BTreeMap<String, String>>,
    /// Attributes.
    pub attributes: AttributesPatch,
}

impl std::fmt::Debug for ImportKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImportKey")
            .field("hsm", &self.hsm)
            .finish_non_exhaustive()
    }
}

/// `PATCH /keys/{name}/{version}`.
#[derive(Debug, Clone, Default)]
pub struct KeyUpdate {
    /// Replacement `key_ops`.
    pub key_ops: Option<Vec<String>>,
    /// Replacement tags.
    pub tags: Option<BTreeMap<String, String>>,
    /// Attribute changes.
    pub attributes: AttributesPatch,
}

/// A cryptographic operation on a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyOperation {
    /// `encrypt`.
    Encrypt,
    /// `decrypt`.
    Decrypt,
    /// `wrapKey`.
    WrapKey,
    /// `unwrapKey`.
    UnwrapKey,
    /// `sign`.
    Sign,
    /// `verify`.
    Verify,
}

impl KeyOperation {
    /// The `key_ops` entry that permits the operation.
    pub fn name(self) -> &'static str {
        match self {
            KeyOperation::Encrypt => "encrypt",
            KeyOperation::Decrypt => "decrypt",
            KeyOperation::WrapKey => "wrapKey",
            KeyOperation::UnwrapKey => "unwrapKey",
            KeyOperation::Sign => "sign",
            KeyOperation::Verify => "verify",
        }
    }
}

/// The input of a cryptographic operation.
#[derive(Default)]
pub struct OperationInput {
    /// `alg`.
    pub alg: String,
    /// `value`: plaintext, ciphertext, key, digest, or (verify) the signature.
    pub value: Zeroizing<Vec<u8>>,
    /// `digest` (verify).
    pub digest: Option<Vec<u8>>,
    /// `iv`.
    pub iv: Option<Vec<u8>>,
    /// `aad`.
    pub aad: Option<Vec<u8>>,
    /// `tag`.
    pub tag: Option<Vec<u8>>,
}

impl std::fmt::Debug for OperationInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperationInput")
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

/// The output of a cryptographic operation.
pub enum OperationOutput {
    /// Encrypt or wrap: ciphertext with IV and tag where the mode has them.
    Encrypted(Encrypted),
    /// Decrypt or unwrap: the plaintext.
    Plaintext(Zeroizing<Vec<u8>>),
    /// Sign: the signature.
    Signature(Vec<u8>),
    /// Verify: whether the signature is valid.
    Verified(bool),
}

impl std::fmt::Debug for OperationOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            OperationOutput::Encrypted(_) => "Encrypted",
            OperationOutput::Plaintext(_) => "Plaintext(<redacted>)",
            OperationOutput::Signature(_) => "Signature",
            OperationOutput::Verified(_) => "Verified",
        })
    }
}

fn default_ops(base_kty: &str) -> Vec<String> {
    let ops: &[&str] = match base_kty {
        "RSA" => &[
            "encrypt",
            "decrypt",
            "sign",
            "verify",
            "wrapKey",
            "unwrapKey",
        ],
        "EC" => &["sign", "verify"],
        _ => &["encrypt", "decrypt", "wrapKey", "unwrapKey"],
    };
    ops.iter().map(|s| s.to_string()).collect()
}

fn check_ops(ops: &[String]) -> Result<(), VaultError> {
    match ops.iter().find(|op| !KEY_OPS.contains(&op.as_str())) {
        Some(bad) => Err(VaultError::BadParameter(format!(
            "The key operation '{bad}' is invalid; use {}.",
            KEY_OPS.join(", ")
        ))),
        None => Ok(()),
    }
}

/// `RSA-HSM` → (`RSA`, true).
fn split_kty(kty: &str) -> Result<(&str, bool), VaultError> {
    let (base, hsm) = match kty.strip_suffix("-HSM") {
        Some(base) => (base, true),
        None => (kty, false),
    };
    match base {
        "RSA" | "EC" | "oct" => Ok((base, hsm)),
        _ => Err(VaultError::BadParameter(format!(
            "The key type '{kty}' is invalid; use RSA, RSA-HSM, EC, EC-HSM, oct or oct-HSM."
        ))),
    }
}

fn key(vault: &VaultRecord, stored: &Stored) -> Key {
    let Stored { state, row } = stored;
    let text_list = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect()
    };
    Key {
        kty: row.public["kty"].as_str().unwrap_or_default().to_owned(),
        key_ops: text_list(&row.public["key_ops"]),
        public: row.public["jwk"].as_object().cloned().unwrap_or_default(),
        attributes: attributes(row),
        recovery: recovery(vault),
        deleted: state.deleted.zip(state.scheduled_purge),
        name: state.name.clone(),
        version: row.version.clone(),
        tags: row.tags.clone(),
        managed: crate::objects::is_managed(row),
    }
}

impl Vaults {
    /// The provider that holds keys of type `kty`.
    pub(crate) fn key_provider(&self, kty: &str) -> &dyn KeyProvider {
        if kty.ends_with("-HSM") {
            self.hsm_keys.as_ref()
        } else {
            self.software_keys.as_ref()
        }
    }

    /// Stores `material` as a new version of `name`.
    fn add_key_version(
        &self,
        vault: &VaultRecord,
        name: &str,
        material: &dyn KeyHandle,
        (kty, key_ops): (&str, Vec<String>),
        (tags, attrs): (&Option<BTreeMap<String, String>>, &AttributesPatch),
        now: i64,
    ) -> Result<Key, VaultError> {
        let storage = self.storage_key(vault)?;
        let stored = self.write(|tx| {
            let name = name_for_new_version(tx, vault, KIND, name)?;
            refuse_managed_name(tx, vault, KIND, &name, "create")?;
            let version = random_hex(16);
            let row = VersionRow {
                vault_id: vault.vault_id.clone(),
                kind: KIND,
                sealed: storage.seal(
                    &payload_aad(vault, KIND, &name, &version),
                    &material.to_stored(),
                ),
                name,
                version,
                public: json!({ "kty": kty, "key_ops": key_ops, "jwk": material.public_jwk() }),
                tags: tags.clone().unwrap_or_default(),
                enabled: attrs.enabled.unwrap_or(true),
                nbf: attrs.not_before,
                exp: attrs.expires,
                created: now,
                updated: now,
            };
            tx.insert_version(&row)?;
            live_version(tx, vault, KIND, &row.name, Some(&row.version))
        })?;
        Ok(key(vault, &stored))
    }

    /// Creates a key, or a new version of it.
    pub fn create_key(
        &self,
        vault: &VaultRecord,
        name: &str,
        req: &CreateKey,
        now: i64,
    ) -> Result<Key, VaultError> {
        check_object_name(name)?;
        let (base, _) = split_kty(&req.kty)?;
        check_tags(&req.tags)?;
        req.attributes.check_dates()?;
        let ops = req.key_ops.clone().unwrap_or_else(|| default_ops(base));
        check_ops(&ops)?;
        if req.public_exponent.is_some_and(|e| e != 65537) {
            return Err(VaultError::BadParameter(
                "Only the public exponent 65537 is supported.".into(),
            ));
        }
        let spec = match base {
            "RSA" => {
                if req.curve.is_some() {
                    return Err(VaultError::BadParameter(
                        "'crv' applies only to EC keys.".into(),
                    ));
                }
                KeySpec::Rsa(req.key_size.unwrap_or(2048))
            }
            "EC" => {
                if req.key_size.is_some() {
                    return Err(VaultError::BadParameter(
                        "'key_size' does not apply to EC keys; use 'crv'.".into(),
                    ));
                }
                let crv = req.curve.as_deref().unwrap_or("P-256");
                KeySpec::Ec(Curve::parse(crv).ok_or_else(|| {
                    VaultError::BadParameter(format!(
                        "The curve '{crv}' is invalid; use P-256, P-384, P-521 or P-256K."
                    ))
                })?)
            }
            _ => KeySpec::Oct(req.key_size.unwrap_or(256)),
        };
        let material = self.key_provider(&req.kty).generate(spec)?;
        self.add_key_version(
            vault,
            name,
            material.as_ref(),
            (&req.kty, ops),
            (&req.tags, &req.attributes),
            now,
        )
    }

    /// Imports a private JWK as a key, or a new version of it.
    pub fn import_key(
        &self,
        vault: &VaultRecord,
        name: &str,
        req: &ImportKey,
        now: i64,
    ) -> Result<Key, VaultError> {
        check_object_name(name)?;
        check_tags(&req.tags)?;
        req.attributes.check_dates()?;
        let jwk = &req.jwk;
        let kty = jwk.get("kty").and_then(Value::as_str).unwrap_or_default();
        let (base, hsm) = split_kty(kty)?;
        let kty = if req.hsm || hsm {
            format!("{base}-HSM")
        } else {
            base.to_owned()
        };
        let ops = match jwk.get("key_ops") {
            None | Some(Value::Null) => default_ops(base),
            Some(v) => serde_json::from_value::<Vec<String>>(v.clone()).map_err(|_| {
                VaultError::BadParameter("'key_ops' must be a list of operation names.".into())
            })?,
        };
        check_ops(&ops)?;
        let material = self.key_provider(&kty).import(jwk)?;
        self.add_key_version(
            vault,
            name,
            material.as_ref(),
            (&kty, ops),
            (&req.tags, &req.attributes),
            now,
        )
    }

    /// A version's parsed key material. A version's material never changes, so parsed
    /// keys are kept (bounded) and each operation skips unsealing and parsing.
    fn key_material(
        &self,
        vault: &VaultRecord,
        row: &VersionRow,
    ) -> Result<Arc<dyn KeyHandle>, VaultError> {
        let id = (vault.vault_id.clone(), row.version.clone());
        if let Some(m) = self
            .parsed_keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
        {
            return Ok(m.clone());
        }
        let bytes = self.open_payload(&*self.storage_key(vault)?, vault, row)?;
        let kty = row.public["kty"].as_str().unwrap_or_default();
        let material = self.key_provider(kty).load(&bytes)?;
        let mut cache = self.parsed_keys.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= PARSED_KEYS_CACHED {
            cache.clear();
        }
        cache.insert(id, material.clone());
        Ok(material)
    }

    /// Rotates a key: a new version with the type, size or curve, `key_ops` and tags of
    /// the latest one, expiring as the rotation policy's `expiryTime` says. Older versions
    /// stay usable until disabled.
    pub fn rotate_key(&self, vault: &VaultRecord, name: &str, now: i64) -> Result<Key, VaultError> {
        check_object_name(name)?;
        let (latest, policy) = self.store.read(|tx| {
            let latest = live_version(tx, vault, KIND, name, None)?;
            let policy = tx.rotation_policy(&vault.vault_id, &latest.state.name)?;
            Ok::<_, VaultError>((latest, policy))
        })?;
        let expires = match policy {
            Some(p) => parse_policy(&p)?.expiry_for_new_version(now),
            None => None,
        };
        let current = self.key_material(vault, &latest.row)?;
        let spec = current.spec();
        let current = key(vault, &latest);
        let material = self.key_provider(&current.kty).generate(spec)?;
        let tags = Some(current.tags.clone());
        self.add_key_version(
            vault,
            name,
            material.as_ref(),
            (&current.kty, current.key_ops),
            (
                &tags,
                &AttributesPatch {
                    expires,
                    ..Default::default()
                },
            ),
            now,
        )
    }

    /// A key version (the latest when `version` is `None`); public parts only. Metadata
    /// stays readable whatever the attributes say, as in Key Vault.
    pub fn get_key(
        &self,
        vault: &VaultRecord,
        name: &str,
        version: Option<&str>,
    ) -> Result<Key, VaultError> {
        check_object_name(name)?;
        Ok(key(vault, &*self.live_version(vault, KIND, name, version)?))
    }

    /// Whether a key version is an `-HSM` key, and an RSA key's modulus length: what its
    /// operations cost against the vault's limits. Reads the cached row only.
    pub fn key_weight(
        &self,
        vault: &VaultRecord,
        name: &str,
        version: Option<&str>,
    ) -> Result<(bool, Option<usize>), VaultError> {
        check_object_name(name)?;
        let stored = self.live_version(vault, KIND, name, version)?;
        let kty = stored.row.public["kty"].as_str().unwrap_or_default();
        let n = stored.row.public["jwk"]["n"].as_str();
        Ok((kty.ends_with("-HSM"), n.and_then(|n| rsa_bits(kty, n))))
    }

    /// Updates `key_ops`, tags or attributes of a version.
    pub fn update_key(
        &self,
        vault: &VaultRecord,
        name: &str,
        version: Option<&str>,
        update: &KeyUpdate,
        now: i64,
    ) -> Result<Key, VaultError> {
        if let Some(ops) = &update.key_ops {
            check_ops(ops)?;
        }
        let stored = self.update_stored(vault, KIND, (name, version), now, |row| {
            edit_tags_and_attributes(row, &update.tags, &update.attributes)?;
            if let Some(ops) = &update.key_ops {
                row.public["key_ops"] = json!(ops);
            }
            Ok(())
        })?;
        Ok(key(vault, &stored))
    }

    /// Lists keys (latest version of each), by name.
    pub fn list_keys(
        &self,
        vault: &VaultRecord,
        maxresults: Option<usize>,
        skip: Option<&str>,
    ) -> Result<Page<Key>, VaultError> {
        Ok(self
            .list_stored(vault, KIND, false, maxresults, skip)?
            .map(|s| key(vault, &s)))
    }

    /// Lists soft-deleted keys.
    pub fn list_deleted_keys(
        &self,
        vault: &VaultRecord,
        maxresults: Option<usize>,
        skip: Option<&str>,
    ) -> Result<Page<Key>, VaultError> {
        Ok(self
            .list_stored(vault, KIND, true, maxresults, skip)?
            .map(|s| key(vault, &s)))
    }

    /// Lists the versions of a key, oldest first.
    pub fn list_key_versions(
        &self,
        vault: &VaultRecord,
        name: &str,
        maxresults: Option<usize>,
        skip: Option<&str>,
    ) -> Result<Page<Key>, VaultError> {
        Ok(self
            .list_stored_versions(vault, KIND, name, maxresults, skip)?
            .map(|s| key(vault, &s)))
    }

    /// Soft-deletes a key (all versions).
    pub fn delete_key(&self, vault: &VaultRecord, name: &str, now: i64) -> Result<Key, VaultError> {
        Ok(key(vault, &self.delete_stored(vault, KIND, name, now)?))
    }

    /// A soft-deleted key.
    pub fn get_deleted_key(&self, vault: &VaultRecord, name: &str) -> Result<Key, VaultError> {
        Ok(key(vault, &self.get_deleted_stored(vault, KIND, name)?))
    }

    /// Recovers a soft-deleted key with all its versions.
    pub fn recover_key(&self, vault: &VaultRecord, name: &str) -> Result<Key, VaultError> {
        Ok(key(vault, &self.recover_stored(vault, KIND, name)?))
    }

    /// Permanently deletes a soft-deleted key, unless purge protection forbids it yet.
    pub fn purge_key(&self, vault: &VaultRecord, name: &str, now: i64) -> Result<(), VaultError> {
        self.purge_stored(vault, KIND, name, now)
    }

    /// An encrypted, integrity-protected backup of every version of a key.
    pub fn backup_key(&self, vault: &VaultRecord, name: &str) -> Result<Vec<u8>, VaultError> {
        self.backup_stored(vault, KIND, name)
    }

    /// Restores a key backup into `vault`: same subscription and geography, unused name.
    pub fn restore_key(&self, vault: &VaultRecord, blob: &[u8]) -> Result<Key, VaultError> {
        let stored = self.restore_stored(vault, KIND, blob, |public, payload| {
            let kty = public["kty"].as_str().unwrap_or_default();
            self.key_provider(kty).load(payload).is_ok()
        })?;
        Ok(key(vault, &stored))
    }

    /// Runs a cryptographic operation with a key version, after checking `key_ops`,
    /// `enabled`, `nbf` and `exp`. Returns the key (for its `kid`) and the result.
    pub fn key_operation(
        &self,
        vault: &VaultRecord,
        name: &str,
        version: Option<&str>,
        op: KeyOperation,
        input: &OperationInput,
        now: i64,
    ) -> Result<(Key, OperationOutput), VaultError> {
        check_object_name(name)?;
        let stored = self.live_version(vault, KIND, name, version)?;
        let material = self.key_material(vault, &stored.row)?;
        let key = key(vault, &stored);
        if !key.key_ops.iter().any(|o| o == op.name()) {
            return Err(VaultError::OperationNotPermitted(op.name()));
        }
        key.attributes
            .check_usable(now)
            .map_err(|reason| VaultError::Unusable {
                kind: KIND,
                operation: op.name(),
                reason,
            })?;
        let params = CipherParams {
            iv: input.iv.as_deref(),
            aad: input.aad.as_deref(),
            tag: input.tag.as_deref(),
        };
        let output = match op {
            KeyOperation::Encrypt | KeyOperation::WrapKey => {
                OperationOutput::Encrypted(material.encrypt(&input.alg, &input.value, params)?)
            }
            KeyOperation::Decrypt | KeyOperation::UnwrapKey => {
                OperationOutput::Plaintext(material.decrypt(&input.alg, &input.value, params)?)
            }
            KeyOperation::Sign => {
                OperationOutput::Signature(material.sign(&input.alg, &input.value)?)
            }
            KeyOperation::Verify => {
                let digest = input.digest.as_deref().ok_or_else(|| {
                    VaultError::BadParameter("The property 'digest' is required.".into())
                })?;
                OperationOutput::Verified(material.verify(&input.alg, digest, &input.value)?)
            }
        };
        Ok((key, output))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::fixture;
    use atrest_core::attributes::Unusable;

    fn rsa() -> CreateKey {
        CreateKey::of_type("RSA-HSM")
    }

    fn input(alg: &str, value: &[u8]) -> OperationInput {
        OperationInput {
            alg: alg.into(),
            value: Zeroizing::new(value.to_vec()),
            ..Default::default()
        }
    }

    /// The software provider, counting what it is asked to do.
    #[derive(Debug, Default)]
    struct Counting(std::sync::atomic::AtomicUsize);

    impl KeyProvider for Counting {
        fn generate(&self, spec: KeySpec) -> Result<Arc<dyn KeyHandle>, atrest_crypto::KeyError> {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            atrest_crypto::SoftwareKeys.generate(spec)
        }
        fn import(&self, jwk: &Value) -> Result<Arc<dyn KeyHandle>, atrest_crypto::KeyError> {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            atrest_crypto::SoftwareKeys.import(jwk)
        }
        fn import_pkcs8(&self, der: &[u8]) -> Result<Arc<dyn KeyHandle>, atrest_crypto::KeyError> {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            atrest_crypto::SoftwareKeys.import_pkcs8(der)
        }
        fn load(&self, stored: &[u8]) -> Result<Arc<dyn KeyHandle>, atrest_crypto::KeyError> {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            atrest_crypto::SoftwareKeys.load(stored)
        }
    }

    #[test]
    fn hsm_keys_go_to_the_hsm_provider() {
        let f = fixture();
        let hsm = Arc::new(Counting::default());
        let vaults = Vaults::new(f.vaults.store.clone(), f.vaults.root.clone())
            .unwrap()
            .with_hsm_provider(hsm.clone());
        let v = crate::test_support::vault(&vaults, "kv1", "westeurope", false);
        let calls = || hsm.0.load(std::sync::atomic::Ordering::SeqCst);
        let ec = CreateKey::of_type;
        vaults.create_key(&v, "soft", &ec("EC"), 1).unwrap();
        vaults.rotate_key(&v, "soft", 2).unwrap();
        assert_eq!(calls(), 0, "software keys never reach the HSM provider");
        vaults.create_key(&v, "dev", &ec("EC-HSM"), 1).unwrap();
        assert_eq!(calls(), 1);
        let (_, out) = vaults
            .key_operation(
                &v,
                "dev",
                None,
                KeyOperation::Sign,
                &input("ES256", &[1; 32]),
                2,
            )
            .unwrap();
        assert!(matches!(out, OperationOutput::Signature(_)));
        assert_eq!(
            calls(),
            2,
            "the operation loaded the key through its provider"
        );
        vaults.rotate_key(&v, "dev", 3).unwrap();
        assert_eq!(
            calls(),
            3,
            "rotation generates; the current version is already loaded"
        );
    }

    #[test]
    fn wrap_unwrap_gated_by_ops_and_attributes() {
        let f = fixture();
        let v = crate::test_support::vault(&f.vaults, "kv1", "westeurope", false);
        let k = f.vaults.create_key(&v, "kek", &rsa(), 10).unwrap();
        assert_eq!(
            (
                k.kty.as_str(),
                k.public.contains_key("n"),
                k.public.contains_key("d")
            ),
            ("RSA-HSM", true, false)
        );
        let (_, out) = f
            .vaults
            .key_operation(
                &v,
                "kek",
                None,
                KeyOperation::WrapKey,
                &input("RSA-OAEP-256", &[5; 32]),
                11,
            )
            .unwrap();
        let OperationOutput::Encrypted(wrapped) = out else {
            panic!("wrap gives ciphertext")
        };
        let (_, out) = f
            .vaults
            .key_operation(
                &v,
                "kek",
                Some(&k.version),
                KeyOperation::UnwrapKey,
                &input("RSA-OAEP-256", &wrapped.ciphertext),
                12,
            )
            .unwrap();
        assert!(matches!(out, OperationOutput::Plaintext(p) if *p == [5; 32]));

        let only_sign = KeyUpdate {
            key_ops: Some(vec!["sign".into()]),
            ..Default::default()
        };
        f.vaults
            .update_key(&v, "kek", None, &only_sign, 13)
            .unwrap();
        let err = f
            .vaults
            .key_operation(
                &v,
                "kek",
                None,
                KeyOperation::UnwrapKey,
                &input("RSA-OAEP-256", &wrapped.ciphertext),
                14,
            )
            .unwrap_err();
        assert!(matches!(
            err,
            VaultError::OperationNotPermitted("unwrapKey")
        ));
        let disable = KeyUpdate {
            attributes: AttributesPatch {
                enabled: Some(false),
                ..Default::default()
            },
            ..Default::default()
        };
        f.vaults.update_key(&v, "kek", None, &disable, 15).unwrap();
        let err = f
            .vaults
            .key_operation(
                &v,
                "kek",
                None,
                KeyOperation::Sign,
                &input("RS256", &[0; 32]),
                16,
            )
            .unwrap_err();
        assert!(matches!(
            err,
            VaultError::Unusable {
                reason: Unusable::Disabled,
                ..
            }
        ));
        assert!(matches!(
            err,
            VaultError::Unusable {
                kind: ObjectKind::Key,
                ..
            }
        ));

        // A second version keeps the first usable for unwrap, and backup carries both.
        let k2 = f.vaults.create_key(&v, "KEK", &rsa(), 20).unwrap();
        assert_eq!(k2.name, "kek");
        assert_eq!(
            f.vaults
                .list_key_versions(&v, "kek", None, None)
                .unwrap()
                .items
                .len(),
            2
        );
        let blob = f.vaults.backup_key(&v, "kek").unwrap();
        f.vaults.delete_key(&v, "kek", 30).unwrap();
        f.vaults.purge_key(&v, "kek", 31).unwrap();
        let restored = f.vaults.restore_key(&v, &blob).unwrap();
        assert_eq!(restored.version, k2.version);
        let (_, out) = f
            .vaults
            .key_operation(
                &v,
                "kek",
                Some(&k2.version),
                KeyOperation::Encrypt,
                &input("RSA1_5", b"x"),
                32,
            )
            .unwrap();
        assert!(matches!(out, OperationOutput::Encrypted(e) if e.ciphertext.len() == 256));
        assert!(
            f.vaults.restore_secret(&v, &blob).is_err(),
            "a key backup is not a secret backup"
        );
    }

    #[test]
    fn create_rejects_bad_parameters() {
        let f = fixture();
        let v = crate::test_support::vault(&f.vaults, "kv1", "westeurope", false);
        let bad = [
            CreateKey {
                kty: "DSA".into(),
                ..rsa()
            },
            CreateKey {
                key_size: Some(1024),
                ..rsa()
            },
            CreateKey {
                kty: "EC".into(),
                curve: Some("P-999".into()),
                ..rsa()
            },
            CreateKey {
                kty: "EC".into(),
                key_size: Some(256),
                ..rsa()
            },
            CreateKey {
                kty: "oct-HSM".into(),
                key_size: Some(512),
                ..rsa()
            },
            CreateKey {
                key_ops: Some(vec!["launch".into()]),
                ..rsa()
            },
            CreateKey {
                public_exponent: Some(3),
                ..rsa()
            },
        ];
        for req in bad {
            assert!(f.vaults.create_key(&v, "k", &req, 1).is_err(), "{req:?}");
        }
        assert!(f.vaults.list_keys(&v, None, None).unwrap().items.is_empty());
    }
}
