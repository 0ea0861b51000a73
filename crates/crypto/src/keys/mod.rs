//! Key Vault keys: generation, JWK import, the public JWK, and every private operation
//! (decrypt, unwrap, sign) together with its public counterpart, all inside this crate.
//!
//! Algorithms and their names follow the Key Vault REST API (`RSA-OAEP-256`, `A256KW`,
//! `ES256K`, …). Signing takes a digest, as Key Vault does, through AWS-LC's
//! `sign_digest`/`verify_digest`. A192KW, which AWS-LC lacks, comes from the `aes-kw`
//! crate.

pub(crate) mod provider;

use aws_lc_rs::cipher::{
    DecryptingKey, DecryptionContext, EncryptingKey, EncryptionContext, PaddedBlockDecryptingKey,
    PaddedBlockEncryptingKey, UnboundCipherKey, AES_128, AES_192, AES_256,
};
use aws_lc_rs::digest::{self, Digest};
use aws_lc_rs::encoding::{AsBigEndian, AsDer, EcPublicKeyUncompressedBin};
use aws_lc_rs::iv::FixedLength;
use aws_lc_rs::key_wrap::{AesKek, KeyWrap, AES_128 as KW_AES_128, AES_256 as KW_AES_256};
use aws_lc_rs::rsa::{
    KeyPairComponents, KeySize, OaepPrivateDecryptingKey, OaepPublicEncryptingKey,
    Pkcs1PrivateDecryptingKey, Pkcs1PublicEncryptingKey, PrivateDecryptingKey, PublicEncryptingKey,
    PublicKeyComponents, OAEP_SHA1_MGF1SHA1, OAEP_SHA256_MGF1SHA256,
};
use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use serde_json::{Map, Value};
use thiserror::Error;
use zeroize::Zeroizing;

use self::provider::{KeyHandle, KeySpec};
use crate::random_bytes;

/// Why a key operation was refused. Messages name the fault, never key material.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum KeyError {
    /// The algorithm does not apply to this key type or size.
    #[error("The algorithm '{alg}' is not supported by a key of type {kty}.")]
    UnsupportedAlgorithm {
        /// The requested algorithm.
        alg: String,
        /// The key's type and size.
        kty: String,
    },
    /// The digest length does not match the signature algorithm.
    #[error("The digest for '{alg}' must be {expected} bytes long; it is {found}.")]
    DigestLength {
        /// The algorithm.
        alg: String,
        /// Required length.
        expected: usize,
        /// Given length.
        found: usize,
    },
    /// Input of the wrong size or shape (IV, tag, plaintext length).
    #[error("{0}")]
    BadInput(String),
    /// Decryption or unwrap failed: wrong key, tampered data or bad padding.
    #[error("The ciphertext could not be decrypted with this key.")]
    DecryptionFailed,
    /// An imported JWK is incomplete, malformed or inconsistent.
    #[error("The key to import is invalid: {0}")]
    InvalidJwk(String),
    /// A requested key type, size or curve is not supported.
    #[error("{0}")]
    UnsupportedKey(String),
    /// AWS-LC reported an internal failure.
    #[error("the cryptographic library failed: {0}")]
    Library(&'static str),
}

/// A JWK that may carry private members. Its strings are wiped when it is dropped.
pub struct PrivateJwk(Value);

impl PrivateJwk {
    /// Takes ownership of a parsed JWK object (wiped on drop from now on).
    pub fn from_value(value: Value) -> Result<Self, KeyError> {
        // Not an object: the value is still wiped, by `drop`.
        let jwk = PrivateJwk(value);
        if jwk.0.is_object() {
            Ok(jwk)
        } else {
            Err(KeyError::InvalidJwk(
                "the key must be a JSON Web Key object.".into(),
            ))
        }
    }
}

impl std::ops::Deref for PrivateJwk {
    type Target = Value;
    fn deref(&self) -> &Value {
        &self.0
    }
}

impl std::fmt::Debug for PrivateJwk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PrivateJwk(<redacted>)")
    }
}

fn scrub(v: &mut Value) {
    match v {
        Value::String(s) => zeroize::Zeroize::zeroize(s),
        Value::Array(items) => items.iter_mut().for_each(scrub),
        Value::Object(map) => map.values_mut().for_each(scrub),
        _ => {}
    }
}

impl Drop for PrivateJwk {
    fn drop(&mut self) {
        scrub(&mut self.0);
    }
}

/// Elliptic curves of Key Vault EC keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Curve {
    /// NIST P-256.
    P256,
    /// NIST P-384.
    P384,
    /// NIST P-521.
    P521,
    /// secp256k1.
    P256K,
}

impl Curve {
    /// Parses Key Vault's curve name (`P-256`, `P-384`, `P-521`, `P-256K`).
    pub fn parse(name: &str) -> Option<Curve> {
        Some(match name {
            "P-256" => Curve::P256,
            "P-384" => Curve::P384,
            "P-521" => Curve::P521,
            "P-256K" | "SECP256K1" => Curve::P256K,
            _ => return None,
        })
    }

    /// Key Vault's curve name.
    pub fn name(self) -> &'static str {
        match self {
            Curve::P256 => "P-256",
            Curve::P384 => "P-384",
            Curve::P521 => "P-521",
            Curve::P256K => "P-256K",
        }
    }

    /// The signature algorithm of this curve (`ES256`, …).
    pub fn signature_alg(self) -> &'static str {
        match self {
            Curve::P256 => "ES256",
            Curve::P384 => "ES384",
            Curve::P521 => "ES512",
            Curve::P256K => "ES256K",
        }
    }

    fn signing(self) -> &'static signature::EcdsaSigningAlgorithm {
        match self {
            Curve::P256 => &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            Curve::P384 => &signature::ECDSA_P384_SHA384_FIXED_SIGNING,
            Curve::P521 => &signature::ECDSA_P521_SHA512_FIXED_SIGNING,
            Curve::P256K => &signature::ECDSA_P256K1_SHA256_FIXED_SIGNING,
        }
    }

    fn verifying(self) -> &'static signature::EcdsaVerificationAlgorithm {
        match self {
            Curve::P256 => &signature::ECDSA_P256_SHA256_FIXED,
            Curve::P384 => &signature::ECDSA_P384_SHA384_FIXED,
            Curve::P521 => &signature::ECDSA_P521_SHA512_FIXED,
            Curve::P256K => &signature::ECDSA_P256K1_SHA256_FIXED,
        }
    }

    fn digest(self) -> &'static digest::Algorithm {
        match self {
            Curve::P256 | Curve::P256K => &digest::SHA256,
            Curve::P384 => &digest::SHA384,
            Curve::P521 => &digest::SHA512,
        }
    }

    /// Bytes in one coordinate.
    fn coordinate_len(self) -> usize {
        match self {
            Curve::P256 | Curve::P256K => 32,
            Curve::P384 => 48,
            Curve::P521 => 66,
        }
    }

    fn tag(self) -> u8 {
        match self {
            Curve::P256 => 1,
            Curve::P384 => 2,
            Curve::P521 => 3,
            Curve::P256K => 4,
        }
    }

    fn from_tag(tag: u8) -> Option<Curve> {
        [Curve::P256, Curve::P384, Curve::P521, Curve::P256K]
            .into_iter()
            .find(|c| c.tag() == tag)
    }
}

/// The result of an encryption: ciphertext, and for AES modes the IV and GCM tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encrypted {
    /// Ciphertext (or wrapped key).
    pub ciphertext: Vec<u8>,
    /// IV used (AES-GCM, AES-CBC).
    pub iv: Option<Vec<u8>>,
    /// Authentication tag (AES-GCM).
    pub tag: Option<Vec<u8>>,
}

/// Inputs of an encrypt or decrypt call beyond the data itself.
#[derive(Debug, Clone, Copy, Default)]
pub struct CipherParams<'a> {
    /// IV (AES-CBC; AES-GCM on decrypt).
    pub iv: Option<&'a [u8]>,
    /// Additional authenticated data (AES-GCM).
    pub aad: Option<&'a [u8]>,
    /// Authentication tag (AES-GCM decrypt).
    pub tag: Option<&'a [u8]>,
}

enum Material {
    Rsa {
        signing: RsaKeyPair,
        decrypting: PrivateDecryptingKey,
        pkcs8: Zeroizing<Vec<u8>>,
    },
    Ec {
        curve: Curve,
        pair: EcdsaKeyPair,
        pkcs8: Zeroizing<Vec<u8>>,
    },
    Oct(Zeroizing<Vec<u8>>),
}

/// A Key Vault key's private material. It never leaves this type except sealed (via
/// [`KeyMaterial::to_bytes`], which the caller must seal at once).
pub(crate) struct KeyMaterial(Material);

impl std::fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyMaterial({})", self.describe())
    }
}

const LIB: fn(aws_lc_rs::error::Unspecified) -> KeyError = |_| KeyError::Library("key operation");

fn rsa_key_size(bits: u32) -> Result<KeySize, KeyError> {
    match bits {
        2048 => Ok(KeySize::Rsa2048),
        3072 => Ok(KeySize::Rsa3072),
        4096 => Ok(KeySize::Rsa4096),
        _ => Err(KeyError::UnsupportedKey(format!(
            "RSA keys must be 2048, 3072 or 4096 bits; {bits} was requested."
        ))),
    }
}

fn b64(value: &Value, field: &str) -> Result<Option<Zeroizing<Vec<u8>>>, KeyError> {
    match value.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => B64
            .decode(s.trim_end_matches('='))
            .map(|v| Some(Zeroizing::new(v)))
            .map_err(|_| KeyError::InvalidJwk(format!("'{field}' is not base64url."))),
        Some(_) => Err(KeyError::InvalidJwk(format!(
            "'{field}' must be a base64url string."
        ))),
    }
}

fn required(value: &Value, field: &str) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    b64(value, field)?
        .ok_or_else(|| KeyError::InvalidJwk(format!("the field '{field}' is required.")))
}

/// A big-endian unsigned integer without its leading zero bytes: JWKs written by tools that
/// think in DER integers carry one, and Key Vault accepts them.
fn minimal(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[first..]
}

/// Left-pads a big-endian integer to `len` bytes.
fn pad(bytes: &[u8], len: usize) -> Result<Vec<u8>, KeyError> {
    let bytes = minimal(bytes);
    if bytes.len() > len {
        return Err(KeyError::InvalidJwk(
            "a coordinate is longer than the curve allows.".into(),
        ));
    }
    let mut out = vec![0; len - bytes.len()];
    out.extend_from_slice(bytes);
    Ok(out)
}

impl KeyMaterial {
    /// A new RSA key of 2048, 3072 or 4096 bits.
    pub(crate) fn generate_rsa(bits: u32) -> Result<Self, KeyError> {
        let pair = RsaKeyPair::generate(rsa_key_size(bits)?).map_err(LIB)?;
        let der = pair.as_der().map_err(LIB)?;
        Self::rsa_from_pkcs8(der.as_ref())
    }

    /// A new EC key on `curve`.
    pub(crate) fn generate_ec(curve: Curve) -> Result<Self, KeyError> {
        let pair = EcdsaKeyPair::generate(curve.signing()).map_err(LIB)?;
        let der = pair.to_pkcs8v1().map_err(LIB)?;
        Self::ec_from_pkcs8(curve, der.as_ref())
    }

    /// A new AES key of 128, 192 or 256 bits.
    pub(crate) fn generate_oct(bits: u32) -> Result<Self, KeyError> {
        match bits {
            128 | 192 | 256 => Ok(KeyMaterial(Material::Oct(Zeroizing::new(random_bytes(
                bits as usize / 8,
            ))))),
            _ => Err(KeyError::UnsupportedKey(format!(
                "oct keys must be 128, 192 or 256 bits; {bits} was requested."
            ))),
        }
    }

    fn rsa_from_pkcs8(der: &[u8]) -> Result<Self, KeyError> {
        let bad = |_| KeyError::InvalidJwk("the RSA key is not valid.".into());
        let signing = RsaKeyPair::from_pkcs8(der).map_err(bad)?;
        rsa_key_size(signing.public_modulus_len() as u32 * 8)?;
        let decrypting = PrivateDecryptingKey::from_pkcs8(der).map_err(bad)?;
        Ok(KeyMaterial(Material::Rsa {
            signing,
            decrypting,
            pkcs8: Zeroizing::new(der.to_vec()),
        }))
    }

    fn ec_from_pkcs8(curve: Curve, der: &[u8]) -> Result<Self, KeyError> {
        let pair = EcdsaKeyPair::from_pkcs8(curve.signing(), der)
            .map_err(|_| KeyError::InvalidJwk("the EC key is not valid.".into()))?;
        Ok(KeyMaterial(Material::Ec {
            curve,
            pair,
            pkcs8: Zeroizing::new(der.to_vec()),
        }))
    }

    /// Loads an RSA or EC `PrivateKeyInfo` (PKCS#8) as other tools write it, kept in the
    /// normal form AWS-LC writes (attributes and optional members dropped).
    pub(crate) fn from_pkcs8(der: &[u8]) -> Result<Self, KeyError> {
        let bad = || KeyError::InvalidJwk("the private key is not a PKCS#8 RSA or EC key.".into());
        let (info, _) = crate::der::expect(der, 0x30).map_err(|_| bad())?;
        let parts = crate::der::elements(info.content).map_err(|_| bad())?;
        let algorithm = parts.get(1).filter(|t| t.tag == 0x30).ok_or_else(bad)?;
        let algorithm = crate::der::elements(algorithm.content).map_err(|_| bad())?;
        let oid = |i: usize| {
            algorithm
                .get(i)
                .filter(|t| t.tag == 0x06)
                .and_then(|t| crate::der::oid_text(t.content).ok())
        };
        match oid(0).as_deref() {
            Some("1.2.840.113549.1.1.1") => {
                let pair = RsaKeyPair::from_pkcs8(der).map_err(|_| bad())?;
                let normal = pair.as_der().map_err(LIB)?;
                Self::rsa_from_pkcs8(normal.as_ref())
            }
            Some("1.2.840.10045.2.1") => {
                let curve = match oid(1).as_deref() {
                    Some("1.2.840.10045.3.1.7") => Curve::P256,
                    Some("1.3.132.0.34") => Curve::P384,
                    Some("1.3.132.0.35") => Curve::P521,
                    Some("1.3.132.0.10") => Curve::P256K,
                    _ => {
                        return Err(KeyError::UnsupportedKey(
                            "The EC key is on a curve Key Vault does not support: use P-256, P-384 or P-521.".into(),
                        ))
                    }
                };
                let pair = EcdsaKeyPair::from_pkcs8(curve.signing(), der).map_err(|_| bad())?;
                let normal = pair.to_pkcs8v1().map_err(LIB)?;
                Self::ec_from_pkcs8(curve, normal.as_ref())
            }
            _ => Err(KeyError::UnsupportedKey(
                "The private key is neither RSA nor EC.".into(),
            )),
        }
    }

    /// The public key as a certificate's `subjectPublicKey` carries it: the DER
    /// `RSAPublicKey`, or the uncompressed EC point. Empty for oct keys.
    pub(crate) fn subject_public_key(&self) -> Vec<u8> {
        match &self.0 {
            Material::Rsa { signing, .. } => signing.public_key().as_ref().to_vec(),
            Material::Ec { pair, .. } => pair.public_key().as_ref().to_vec(),
            Material::Oct(_) => Vec::new(),
        }
    }

    /// Imports a private JWK (`RSA` with CRT parameters, `EC` with `d`, or `oct` with `k`;
    /// `-HSM` suffixes accepted).
    pub(crate) fn from_jwk(jwk: &Value) -> Result<Self, KeyError> {
        let kty = jwk
            .get("kty")
            .and_then(Value::as_str)
            .ok_or_else(|| KeyError::InvalidJwk("the field 'kty' is required.".into()))?;
        match kty.trim_end_matches("-HSM") {
            "RSA" => {
                let [n, e, d, p, q, dp, dq, qi] =
                    ["n", "e", "d", "p", "q", "dp", "dq", "qi"].map(|field| required(jwk, field));
                let (n, e, d, p, q, dp, dq, qi) = (n?, e?, d?, p?, q?, dp?, dq?, qi?);
                let components = KeyPairComponents {
                    public_key: PublicKeyComponents {
                        n: minimal(&n),
                        e: minimal(&e),
                    },
                    d: minimal(&d),
                    p: minimal(&p),
                    q: minimal(&q),
                    dP: minimal(&dp),
                    dQ: minimal(&dq),
                    qInv: minimal(&qi),
                };
                let pair = RsaKeyPair::from_components(&components).map_err(|_| {
                    KeyError::InvalidJwk("the RSA parameters do not form a valid key.".into())
                })?;
                let der = pair.as_der().map_err(LIB)?;
                Self::rsa_from_pkcs8(der.as_ref())
            }
            "EC" => {
                let crv = jwk.get("crv").and_then(Value::as_str).unwrap_or_default();
                let curve = Curve::parse(crv).ok_or_else(|| {
                    KeyError::InvalidJwk(format!("the curve '{crv}' is not supported."))
                })?;
                let len = curve.coordinate_len();
                let d = Zeroizing::new(pad(&required(jwk, "d")?, len)?);
                let mut point = vec![4u8];
                point.extend(pad(&required(jwk, "x")?, len)?);
                point.extend(pad(&required(jwk, "y")?, len)?);
                let pair =
                    EcdsaKeyPair::from_private_key_and_public_key(curve.signing(), &d, &point)
                        .map_err(|_| {
                            KeyError::InvalidJwk(
                                "the EC parameters do not form a valid key.".into(),
                            )
                        })?;
                let der = pair.to_pkcs8v1().map_err(LIB)?;
                Self::ec_from_pkcs8(curve, der.as_ref())
            }
            "oct" => {
                let k = required(jwk, "k")?;
                match k.len() {
                    16 | 24 | 32 => Ok(KeyMaterial(Material::Oct(k))),
                    n => Err(KeyError::InvalidJwk(format!(
                        "an oct key must be 128, 192 or 256 bits; it is {} bits.",
                        n * 8
                    ))),
                }
            }
            other => Err(KeyError::InvalidJwk(format!(
                "the key type '{other}' is not supported."
            ))),
        }
    }

    /// Serialized private material (tag byte, then PKCS#8 or raw key). Seal it at once.
    pub(crate) fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let (tag, body): (u8, &[u8]) = match &self.0 {
            Material::Rsa { pkcs8, .. } => (0x10, pkcs8),
            Material::Ec { curve, pkcs8, .. } => (0x20 | curve.tag(), pkcs8),
            Material::Oct(k) => (0x30, k),
        };
        let mut out = Zeroizing::new(Vec::with_capacity(body.len() + 1));
        out.push(tag);
        out.extend_from_slice(body);
        out
    }

    /// Reverses [`KeyMaterial::to_bytes`].
    pub(crate) fn from_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        let (&tag, body) = bytes
            .split_first()
            .ok_or(KeyError::Library("empty key material"))?;
        match tag {
            0x10 => Self::rsa_from_pkcs8(body),
            0x30 => Ok(KeyMaterial(Material::Oct(Zeroizing::new(body.to_vec())))),
            t if t & 0xf0 == 0x20 => Self::ec_from_pkcs8(
                Curve::from_tag(t & 0x0f).ok_or(KeyError::Library("unknown curve tag"))?,
                body,
            ),
            _ => Err(KeyError::Library("unknown key material tag")),
        }
    }

    /// `RSA`, `EC` or `oct`.
    pub(crate) fn kty(&self) -> &'static str {
        match &self.0 {
            Material::Rsa { .. } => "RSA",
            Material::Ec { .. } => "EC",
            Material::Oct(_) => "oct",
        }
    }

    /// Key size in bits (RSA modulus, AES key); `None` for EC.
    pub(crate) fn size_bits(&self) -> Option<u32> {
        match &self.0 {
            Material::Rsa { signing, .. } => Some(signing.public_modulus_len() as u32 * 8),
            Material::Ec { .. } => None,
            Material::Oct(k) => Some(k.len() as u32 * 8),
        }
    }

    fn describe(&self) -> String {
        match (&self.0, self.size_bits()) {
            (Material::Ec { curve, .. }, _) => format!("EC {}", curve.name()),
            (_, Some(bits)) => format!("{} {bits}", self.kty()),
            _ => self.kty().to_owned(),
        }
    }

    /// The public JWK members: `n`/`e` for RSA, `crv`/`x`/`y` for EC, nothing for oct.
    pub(crate) fn public_jwk(&self) -> Map<String, Value> {
        let mut jwk = Map::new();
        match &self.0 {
            Material::Rsa { signing, .. } => {
                let public = signing.public_key();
                jwk.insert(
                    "n".into(),
                    B64.encode(public.modulus().big_endian_without_leading_zero())
                        .into(),
                );
                jwk.insert(
                    "e".into(),
                    B64.encode(public.exponent().big_endian_without_leading_zero())
                        .into(),
                );
            }
            Material::Ec { curve, pair, .. } => {
                let point: EcPublicKeyUncompressedBin = pair
                    .public_key()
                    .as_be_bytes()
                    .expect("an EC public key encodes");
                let point = point.as_ref();
                let len = curve.coordinate_len();
                jwk.insert("crv".into(), curve.name().into());
                jwk.insert("x".into(), B64.encode(&point[1..1 + len]).into());
                jwk.insert("y".into(), B64.encode(&point[1 + len..]).into());
            }
            Material::Oct(_) => {}
        }
        jwk
    }

    fn unsupported(&self, alg: &str) -> KeyError {
        KeyError::UnsupportedAlgorithm {
            alg: alg.to_owned(),
            kty: self.describe(),
        }
    }

    fn rsa_public(&self) -> Option<PublicEncryptingKey> {
        match &self.0 {
            Material::Rsa { decrypting, .. } => Some(decrypting.public_key()),
            _ => None,
        }
    }
}

impl KeyHandle for KeyMaterial {
    fn spec(&self) -> KeySpec {
        match (&self.0, self.size_bits()) {
            (Material::Ec { curve, .. }, _) => KeySpec::Ec(*curve),
            (Material::Rsa { .. }, bits) => KeySpec::Rsa(bits.unwrap_or(2048)),
            (Material::Oct(_), bits) => KeySpec::Oct(bits.unwrap_or(256)),
        }
    }

    fn public_jwk(&self) -> Map<String, Value> {
        KeyMaterial::public_jwk(self)
    }

    fn to_stored(&self) -> Zeroizing<Vec<u8>> {
        self.to_bytes()
    }

    fn export_pkcs8(&self) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        match &self.0 {
            Material::Rsa { pkcs8, .. } | Material::Ec { pkcs8, .. } => Ok(pkcs8.clone()),
            Material::Oct(_) => Err(KeyError::UnsupportedKey(
                "A symmetric key has no PKCS#8 form.".into(),
            )),
        }
    }

    /// Encrypts (`encrypt` and `wrapKey` both land here). RSA: `RSA-OAEP`, `RSA-OAEP-256`,
    /// `RSA1_5`; oct: `A*GCM`, `A*CBC`, `A*CBCPAD`, `A*KW`.
    fn encrypt(
        &self,
        alg: &str,
        plaintext: &[u8],
        params: CipherParams<'_>,
    ) -> Result<Encrypted, KeyError> {
        let plain = |ciphertext| {
            Ok(Encrypted {
                ciphertext,
                iv: None,
                tag: None,
            })
        };
        match (&self.0, alg) {
            (Material::Rsa { .. }, "RSA-OAEP" | "RSA-OAEP-256") => {
                let key =
                    OaepPublicEncryptingKey::new(self.rsa_public().expect("RSA")).map_err(LIB)?;
                let oaep = if alg == "RSA-OAEP" {
                    &OAEP_SHA1_MGF1SHA1
                } else {
                    &OAEP_SHA256_MGF1SHA256
                };
                if plaintext.len() > key.max_plaintext_size(oaep) {
                    return Err(KeyError::BadInput(format!(
                        "The plaintext is too long for {alg} with this key; at most {} bytes.",
                        key.max_plaintext_size(oaep)
                    )));
                }
                let mut out = vec![0; key.ciphertext_size()];
                let n = key
                    .encrypt(oaep, plaintext, &mut out, None)
                    .map_err(LIB)?
                    .len();
                out.truncate(n);
                plain(out)
            }
            (Material::Rsa { .. }, "RSA1_5") => {
                let key =
                    Pkcs1PublicEncryptingKey::new(self.rsa_public().expect("RSA")).map_err(LIB)?;
                if plaintext.len() > key.max_plaintext_size() {
                    return Err(KeyError::BadInput(format!(
                        "The plaintext is too long for RSA1_5 with this key; at most {} bytes.",
                        key.max_plaintext_size()
                    )));
                }
                let mut out = vec![0; key.ciphertext_size()];
                let n = key.encrypt(plaintext, &mut out).map_err(LIB)?.len();
                out.truncate(n);
                plain(out)
            }
            (Material::Oct(k), _) => match aes_mode(alg, k.len()) {
                Some(AesMode::Kw) => plain(aes_kw_wrap(k, plaintext)?),
                Some(AesMode::Gcm) => aes_gcm_seal(k, plaintext, params),
                Some(AesMode::Cbc { pad }) => aes_cbc_encrypt(k, pad, plaintext, params.iv),
                None => Err(self.unsupported(alg)),
            },
            _ => Err(self.unsupported(alg)),
        }
    }

    /// Decrypts (`decrypt` and `unwrapKey`).
    fn decrypt(
        &self,
        alg: &str,
        ciphertext: &[u8],
        params: CipherParams<'_>,
    ) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        match (&self.0, alg) {
            (Material::Rsa { decrypting, .. }, "RSA-OAEP" | "RSA-OAEP-256") => {
                let oaep = if alg == "RSA-OAEP" {
                    &OAEP_SHA1_MGF1SHA1
                } else {
                    &OAEP_SHA256_MGF1SHA256
                };
                let key = OaepPrivateDecryptingKey::new(decrypting.clone()).map_err(LIB)?;
                let mut out = Zeroizing::new(vec![0; key.min_output_size()]);
                let n = key
                    .decrypt(oaep, ciphertext, &mut out, None)
                    .map_err(|_| KeyError::DecryptionFailed)?
                    .len();
                out.truncate(n);
                Ok(out)
            }
            (Material::Rsa { decrypting, .. }, "RSA1_5") => {
                let key = Pkcs1PrivateDecryptingKey::new(decrypting.clone()).map_err(LIB)?;
                let mut out = Zeroizing::new(vec![0; key.min_output_size()]);
                let n = key
                    .decrypt(ciphertext, &mut out)
                    .map_err(|_| KeyError::DecryptionFailed)?
                    .len();
                out.truncate(n);
                Ok(out)
            }
            (Material::Oct(k), _) => match aes_mode(alg, k.len()) {
                Some(AesMode::Kw) => aes_kw_unwrap(k, ciphertext),
                Some(AesMode::Gcm) => aes_gcm_open(k, ciphertext, params),
                Some(AesMode::Cbc { pad }) => aes_cbc_decrypt(k, pad, ciphertext, params.iv),
                None => Err(self.unsupported(alg)),
            },
            _ => Err(self.unsupported(alg)),
        }
    }

    /// Signs a digest. RSA: `RS256/384/512`, `PS256/384/512`; EC: the curve's `ES*`.
    fn sign(&self, alg: &str, digest: &[u8]) -> Result<Vec<u8>, KeyError> {
        match &self.0 {
            Material::Rsa { signing, .. } => {
                let (padding, _, hash) = rsa_signature(alg).ok_or_else(|| self.unsupported(alg))?;
                let digest = import_digest(alg, digest, hash)?;
                let mut out = vec![0; signing.public_modulus_len()];
                signing
                    .sign_digest(padding, &digest, &mut out)
                    .map_err(LIB)?;
                Ok(out)
            }
            Material::Ec { curve, pair, .. } => {
                if alg != curve.signature_alg() {
                    return Err(self.unsupported(alg));
                }
                let digest = import_digest(alg, digest, curve.digest())?;
                Ok(pair.sign_digest(&digest).map_err(LIB)?.as_ref().to_vec())
            }
            Material::Oct(_) => Err(self.unsupported(alg)),
        }
    }

    /// Verifies a signature over a digest.
    fn verify(&self, alg: &str, digest: &[u8], signature: &[u8]) -> Result<bool, KeyError> {
        match &self.0 {
            Material::Rsa { signing, .. } => {
                let (_, verifying, hash) =
                    rsa_signature(alg).ok_or_else(|| self.unsupported(alg))?;
                let digest = import_digest(alg, digest, hash)?;
                let public = signing.public_key().as_der().map_err(LIB)?;
                let key = signature::UnparsedPublicKey::new(verifying, public.as_ref());
                Ok(key.verify_digest(&digest, signature).is_ok())
            }
            Material::Ec { curve, pair, .. } => {
                if alg != curve.signature_alg() {
                    return Err(self.unsupported(alg));
                }
                let digest = import_digest(alg, digest, curve.digest())?;
                let key = signature::UnparsedPublicKey::new(
                    curve.verifying(),
                    pair.public_key().as_ref(),
                );
                Ok(key.verify_digest(&digest, signature).is_ok())
            }
            Material::Oct(_) => Err(self.unsupported(alg)),
        }
    }
}

type RsaSignatureAlgs = (
    &'static dyn signature::RsaEncoding,
    &'static signature::RsaParameters,
    &'static digest::Algorithm,
);

fn rsa_signature(alg: &str) -> Option<RsaSignatureAlgs> {
    Some(match alg {
        "RS256" => (
            &signature::RSA_PKCS1_SHA256,
            &signature::RSA_PKCS1_2048_8192_SHA256,
            &digest::SHA256,
        ),
        "RS384" => (
            &signature::RSA_PKCS1_SHA384,
            &signature::RSA_PKCS1_2048_8192_SHA384,
            &digest::SHA384,
        ),
        "RS512" => (
            &signature::RSA_PKCS1_SHA512,
            &signature::RSA_PKCS1_2048_8192_SHA512,
            &digest::SHA512,
        ),
        "PS256" => (
            &signature::RSA_PSS_SHA256,
            &signature::RSA_PSS_2048_8192_SHA256,
            &digest::SHA256,
        ),
        "PS384" => (
            &signature::RSA_PSS_SHA384,
            &signature::RSA_PSS_2048_8192_SHA384,
            &digest::SHA384,
        ),
        "PS512" => (
            &signature::RSA_PSS_SHA512,
            &signature::RSA_PSS_2048_8192_SHA512,
            &digest::SHA512,
        ),
        _ => return None,
    })
}

fn import_digest(
    alg: &str,
    digest: &[u8],
    hash: &'static digest::Algorithm,
) -> Result<Digest, KeyError> {
    Digest::import_less_safe(digest, hash).map_err(|_| KeyError::DigestLength {
        alg: alg.to_owned(),
        expected: hash.output_len(),
        found: digest.len(),
    })
}

enum AesMode {
    Kw,
    Gcm,
    Cbc { pad: bool },
}

/// The AES mode of `alg` if its key size matches the key's.
fn aes_mode(alg: &str, key_len: usize) -> Option<AesMode> {
    let (bits, mode) = alg
        .strip_prefix('A')?
        .split_at(3.min(alg.len().saturating_sub(1)));
    if bits.parse::<usize>().ok()? != key_len * 8 {
        return None;
    }
    match mode {
        "KW" => Some(AesMode::Kw),
        "GCM" => Some(AesMode::Gcm),
        "CBC" => Some(AesMode::Cbc { pad: false }),
        "CBCPAD" => Some(AesMode::Cbc { pad: true }),
        _ => None,
    }
}

fn aes_kw_wrap(key: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, KeyError> {
    if plaintext.len() < 16 || !plaintext.len().is_multiple_of(8) {
        return Err(KeyError::BadInput(
            "Key wrap needs a key of at least 16 bytes, a multiple of 8.".into(),
        ));
    }
    match key.len() {
        24 => {
            let kek = aes_kw::KekAes192::from(<[u8; 24]>::try_from(key).expect("24 bytes"));
            kek.wrap_vec(plaintext)
                .map_err(|_| KeyError::Library("A192KW"))
        }
        _ => {
            let kek = AesKek::new(
                if key.len() == 16 {
                    &KW_AES_128
                } else {
                    &KW_AES_256
                },
                key,
            )
            .map_err(LIB)?;
            let mut out = vec![0; plaintext.len() + 8];
            let n = kek.wrap(plaintext, &mut out).map_err(LIB)?.len();
            out.truncate(n);
            Ok(out)
        }
    }
}

fn aes_kw_unwrap(key: &[u8], wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    if wrapped.len() < 24 || !wrapped.len().is_multiple_of(8) {
        return Err(KeyError::DecryptionFailed);
    }
    match key.len() {
        24 => {
            let kek = aes_kw::KekAes192::from(<[u8; 24]>::try_from(key).expect("24 bytes"));
            kek.unwrap_vec(wrapped)
                .map(Zeroizing::new)
                .map_err(|_| KeyError::DecryptionFailed)
        }
        _ => {
            let kek = AesKek::new(
                if key.len() == 16 {
                    &KW_AES_128
                } else {
                    &KW_AES_256
                },
                key,
            )
            .map_err(LIB)?;
            let mut out = Zeroizing::new(vec![0; wrapped.len()]);
            let n = kek
                .unwrap(wrapped, &mut out)
                .map_err(|_| KeyError::DecryptionFailed)?
                .len();
            out.truncate(n);
            Ok(out)
        }
    }
}

fn gcm_algorithm(key_len: usize) -> &'static aws_lc_rs::aead::Algorithm {
    match key_len {
        16 => &aws_lc_rs::aead::AES_128_GCM,
        24 => &aws_lc_rs::aead::AES_192_GCM,
        _ => &aws_lc_rs::aead::AES_256_GCM,
    }
}

const GCM_TAG_LEN: usize = 16;

fn aes_gcm_seal(
    key: &[u8],
    plaintext: &[u8],
    params: CipherParams<'_>,
) -> Result<Encrypted, KeyError> {
    use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey};
    if params.iv.is_some() {
        return Err(KeyError::BadInput(
            "The service chooses the IV for AES-GCM encryption; do not send one.".into(),
        ));
    }
    let key = LessSafeKey::new(UnboundKey::new(gcm_algorithm(key.len()), key).map_err(LIB)?);
    let iv = random_bytes(12);
    let mut data = plaintext.to_vec();
    let nonce = Nonce::try_assume_unique_for_key(&iv).map_err(LIB)?;
    let tag = key
        .seal_in_place_separate_tag(nonce, Aad::from(params.aad.unwrap_or_default()), &mut data)
        .map_err(LIB)?;
    Ok(Encrypted {
        ciphertext: data,
        iv: Some(iv),
        tag: Some(tag.as_ref().to_vec()),
    })
}

fn aes_gcm_open(
    key: &[u8],
    ciphertext: &[u8],
    params: CipherParams<'_>,
) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey};
    let iv = params
        .iv
        .ok_or_else(|| KeyError::BadInput("AES-GCM decryption needs the 'iv'.".into()))?;
    let tag = params
        .tag
        .ok_or_else(|| KeyError::BadInput("AES-GCM decryption needs the 'tag'.".into()))?;
    if tag.len() != GCM_TAG_LEN {
        return Err(KeyError::BadInput(format!(
            "The AES-GCM tag must be {GCM_TAG_LEN} bytes."
        )));
    }
    let key = LessSafeKey::new(UnboundKey::new(gcm_algorithm(key.len()), key).map_err(LIB)?);
    let nonce = Nonce::try_assume_unique_for_key(iv)
        .map_err(|_| KeyError::BadInput("The AES-GCM IV must be 12 bytes.".into()))?;
    let mut data = Zeroizing::new([ciphertext, tag].concat());
    let n = key
        .open_in_place(nonce, Aad::from(params.aad.unwrap_or_default()), &mut data)
        .map_err(|_| KeyError::DecryptionFailed)?
        .len();
    data.truncate(n);
    Ok(data)
}

fn cbc_cipher(key: &[u8]) -> Result<UnboundCipherKey, KeyError> {
    let alg = match key.len() {
        16 => &AES_128,
        24 => &AES_192,
        _ => &AES_256,
    };
    UnboundCipherKey::new(alg, key).map_err(LIB)
}

fn cbc_iv(iv: Option<&[u8]>) -> Result<[u8; 16], KeyError> {
    match iv {
        Some(iv) => <[u8; 16]>::try_from(iv)
            .map_err(|_| KeyError::BadInput("The AES-CBC IV must be 16 bytes.".into())),
        None => Ok(<[u8; 16]>::try_from(random_bytes(16).as_slice()).expect("16 bytes")),
    }
}

fn aes_cbc_encrypt(
    key: &[u8],
    pad: bool,
    plaintext: &[u8],
    iv: Option<&[u8]>,
) -> Result<Encrypted, KeyError> {
    let iv = cbc_iv(iv)?;
    let context = EncryptionContext::Iv128(FixedLength::from(iv));
    let mut data = plaintext.to_vec();
    if pad {
        let key = PaddedBlockEncryptingKey::cbc_pkcs7(cbc_cipher(key)?).map_err(LIB)?;
        key.less_safe_encrypt(&mut data, context).map_err(LIB)?;
    } else {
        if data.is_empty() || !data.len().is_multiple_of(16) {
            return Err(KeyError::BadInput("Without padding, AES-CBC plaintext must be a non-empty multiple of 16 bytes; use A*CBCPAD.".into()));
        }
        let key = EncryptingKey::cbc(cbc_cipher(key)?).map_err(LIB)?;
        key.less_safe_encrypt(&mut data, context).map_err(LIB)?;
    }
    Ok(Encrypted {
        ciphertext: data,
        iv: Some(iv.to_vec()),
        tag: None,
    })
}

fn aes_cbc_decrypt(
    key: &[u8],
    pad: bool,
    ciphertext: &[u8],
    iv: Option<&[u8]>,
) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    let iv = iv.ok_or_else(|| KeyError::BadInput("AES-CBC decryption needs the 'iv'.".into()))?;
    let context = DecryptionContext::Iv128(FixedLength::from(cbc_iv(Some(iv))?));
    if ciphertext.is_empty() || !ciphertext.len().is_multiple_of(16) {
        return Err(KeyError::DecryptionFailed);
    }
    let mut data = Zeroizing::new(ciphertext.to_vec());
    let n = if pad {
        let key = PaddedBlockDecryptingKey::cbc_pkcs7(cbc_cipher(key)?).map_err(LIB)?;
        key.decrypt(&mut data, context)
            .map_err(|_| KeyError::DecryptionFailed)?
            .len()
    } else {
        let key = DecryptingKey::cbc(cbc_cipher(key)?).map_err(LIB)?;
        key.decrypt(&mut data, context)
            .map_err(|_| KeyError::DecryptionFailed)?
            .len()
    };
    data.truncate(n);
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sha(alg: &'static digest::Algorithm, data: &[u8]) -> Vec<u8> {
        digest::digest(alg, data).as_ref().to_vec()
    }

    #[test]
    fn rsa_round_trips_and_signatures() {
        let key = KeyMaterial::generate_rsa(2048).unwrap();
        assert_eq!((key.kty(), key.size_bits()), ("RSA", Some(2048)));
        let restored = KeyMaterial::from_bytes(&key.to_bytes()).unwrap();
        for alg in ["RSA-OAEP", "RSA-OAEP-256", "RSA1_5"] {
            let c = key
                .encrypt(
                    alg,
                    b"a data key, 32 bytes long......",
                    CipherParams::default(),
                )
                .unwrap();
            assert_eq!(c.ciphertext.len(), 256);
            assert_eq!(
                &*restored
                    .decrypt(alg, &c.ciphertext, CipherParams::default())
                    .unwrap(),
                b"a data key, 32 bytes long......"
            );
            let mut bad = c.ciphertext.clone();
            bad[10] ^= 1;
            assert_eq!(
                key.decrypt(alg, &bad, CipherParams::default()).unwrap_err(),
                KeyError::DecryptionFailed
            );
        }
        for (alg, hash) in [
            ("RS256", &digest::SHA256),
            ("PS384", &digest::SHA384),
            ("RS512", &digest::SHA512),
            ("PS256", &digest::SHA256),
        ] {
            let d = sha(hash, b"message");
            let sig = key.sign(alg, &d).unwrap();
            assert!(restored.verify(alg, &d, &sig).unwrap());
            assert!(!key.verify(alg, &sha(hash, b"other"), &sig).unwrap());
        }
        assert!(matches!(
            key.sign("RS256", &[0; 20]),
            Err(KeyError::DigestLength {
                expected: 32,
                found: 20,
                ..
            })
        ));
        assert!(matches!(
            key.sign("ES256", &[0; 32]),
            Err(KeyError::UnsupportedAlgorithm { .. })
        ));
        assert!(matches!(
            key.encrypt("A256KW", &[0; 32], CipherParams::default()),
            Err(KeyError::UnsupportedAlgorithm { .. })
        ));
        assert!(KeyMaterial::generate_rsa(1024).is_err());
    }

    #[test]
    fn rsa_import_from_components_matches_public_jwk() {
        let key = KeyMaterial::generate_rsa(2048).unwrap();
        let public = key.public_jwk();
        // Importing only public parts is refused with a clear reason.
        let err = KeyMaterial::from_jwk(&json!({"kty": "RSA", "n": public["n"], "e": public["e"]}))
            .unwrap_err();
        assert_eq!(
            err,
            KeyError::InvalidJwk("the field 'd' is required.".into())
        );
        let err = KeyMaterial::from_jwk(&json!({"kty": "RSA", "n": public["n"], "e": public["e"], "d": "!!", "p": "AA", "q": "AA", "dp": "AA", "dq": "AA", "qi": "AA"})).unwrap_err();
        assert!(matches!(err, KeyError::InvalidJwk(_)));
    }

    #[test]
    fn ec_curves_sign_and_import() {
        for (curve, hash) in [
            (Curve::P256, &digest::SHA256),
            (Curve::P384, &digest::SHA384),
            (Curve::P521, &digest::SHA512),
            (Curve::P256K, &digest::SHA256),
        ] {
            let key = KeyMaterial::generate_ec(curve).unwrap();
            let d = sha(hash, b"message");
            let sig = key.sign(curve.signature_alg(), &d).unwrap();
            assert_eq!(sig.len(), 2 * curve.coordinate_len());
            let restored = KeyMaterial::from_bytes(&key.to_bytes()).unwrap();
            assert!(restored.verify(curve.signature_alg(), &d, &sig).unwrap());
            let jwk = key.public_jwk();
            assert_eq!(jwk["crv"], curve.name());
            let wrong = if curve == Curve::P256 {
                "ES384"
            } else {
                "ES256"
            };
            assert!(matches!(
                key.sign(wrong, &d),
                Err(KeyError::UnsupportedAlgorithm { .. })
            ));
        }
    }

    #[test]
    fn oct_modes() {
        for bits in [128u32, 192, 256] {
            let key = KeyMaterial::generate_oct(bits).unwrap();
            let kw = format!("A{bits}KW");
            let wrapped = key.encrypt(&kw, &[7; 32], CipherParams::default()).unwrap();
            assert_eq!(wrapped.ciphertext.len(), 40);
            assert_eq!(
                &*key
                    .decrypt(&kw, &wrapped.ciphertext, CipherParams::default())
                    .unwrap(),
                &[7; 32]
            );
            let mut bad = wrapped.ciphertext.clone();
            bad[0] ^= 1;
            assert_eq!(
                key.decrypt(&kw, &bad, CipherParams::default()).unwrap_err(),
                KeyError::DecryptionFailed
            );

            let gcm = format!("A{bits}GCM");
            let c = key
                .encrypt(
                    &gcm,
                    b"hello",
                    CipherParams {
                        aad: Some(b"aad"),
                        ..Default::default()
                    },
                )
                .unwrap();
            let p = CipherParams {
                iv: c.iv.as_deref(),
                aad: Some(b"aad"),
                tag: c.tag.as_deref(),
            };
            assert_eq!(&*key.decrypt(&gcm, &c.ciphertext, p).unwrap(), b"hello");
            let p = CipherParams {
                aad: Some(b"AAD"),
                ..p
            };
            assert_eq!(
                key.decrypt(&gcm, &c.ciphertext, p).unwrap_err(),
                KeyError::DecryptionFailed
            );

            let cbcpad = format!("A{bits}CBCPAD");
            let c = key
                .encrypt(&cbcpad, b"hello", CipherParams::default())
                .unwrap();
            assert_eq!(c.ciphertext.len(), 16);
            let p = CipherParams {
                iv: c.iv.as_deref(),
                ..Default::default()
            };
            assert_eq!(&*key.decrypt(&cbcpad, &c.ciphertext, p).unwrap(), b"hello");
            let cbc = format!("A{bits}CBC");
            assert!(matches!(
                key.encrypt(&cbc, b"hello", CipherParams::default()),
                Err(KeyError::BadInput(_))
            ));
            let c = key
                .encrypt(
                    &cbc,
                    &[1; 32],
                    CipherParams {
                        iv: Some(&[9; 16]),
                        ..Default::default()
                    },
                )
                .unwrap();
            assert_eq!(c.iv.as_deref(), Some(&[9u8; 16][..]));
            assert_eq!(
                &*key
                    .decrypt(
                        &cbc,
                        &c.ciphertext,
                        CipherParams {
                            iv: Some(&[9; 16]),
                            ..Default::default()
                        }
                    )
                    .unwrap(),
                &[1; 32]
            );
            // The algorithm's size must match the key's.
            let other = if bits == 256 { "A128KW" } else { "A256KW" };
            assert!(matches!(
                key.encrypt(other, &[0; 32], CipherParams::default()),
                Err(KeyError::UnsupportedAlgorithm { .. })
            ));
            let imported = KeyMaterial::from_jwk(&json!({"kty": "oct-HSM", "k": B64.encode(&*match &key.0 { Material::Oct(k) => k.clone(), _ => unreachable!() })})).unwrap();
            assert_eq!(
                &*imported
                    .decrypt(&kw, &wrapped.ciphertext, CipherParams::default())
                    .unwrap(),
                &[7; 32]
            );
        }
    }

    #[test]
    fn a192kw_matches_rfc3394() {
        // RFC 3394 section 4.3: 128 bits of key data with a 192-bit KEK.
        let kek: Vec<u8> = (0u8..24).collect();
        let data = hex("00112233445566778899AABBCCDDEEFF");
        let expected = hex("96778B25AE6CA435F92B5B97C050AED2468AB8A17AD84E5D");
        assert_eq!(aes_kw_wrap(&kek, &data).unwrap(), expected);
        assert_eq!(&*aes_kw_unwrap(&kek, &expected).unwrap(), &data[..]);
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn debug_redacts() {
        let key = KeyMaterial::generate_oct(256).unwrap();
        assert_eq!(format!("{key:?}"), "KeyMaterial(oct 256)");
    }
}
