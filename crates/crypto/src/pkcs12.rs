//! Reading PKCS#12 files (RFC 7292) and encrypted PKCS#8 keys as other tools write them:
//! OpenSSL, Windows, Java and older tools alike. Integrity by HMAC (SHA-1 or SHA-2, the key
//! from the PKCS#12 KDF); privacy by the PKCS#12 PBE schemes (RC2 and 3DES, as `-legacy`
//! files use) or PBES2 (PBKDF2 with AES or 3DES); BER with indefinite lengths accepted.
//! Errors never carry the password or key material.

use std::borrow::Cow;
use std::num::NonZeroU32;

use aws_lc_rs::{digest, hmac, pbkdf2};
use des::cipher::generic_array::GenericArray;
use des::cipher::{BlockDecrypt, BlockSizeUser, KeyInit};
use zeroize::Zeroizing;

use crate::der::{self, DerError, Tlv};

/// The most iterations a key derivation may ask for: far above what any tool writes
/// (2,048 to 600,000), low enough that a hostile file cannot pin a core for long.
pub const MAX_ITERATIONS: u64 = 1_000_000;

/// How deep `safeContentsBag`s may nest.
const MAX_BAG_DEPTH: usize = 4;

/// Why a PKCS#12 file or an encrypted key could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Pkcs12Error {
    /// The bytes are not the structure expected.
    #[error("Its {0} is malformed.")]
    Malformed(&'static str),
    /// The MAC does not verify with the password given.
    #[error("The password is wrong, or the content was altered: its MAC does not verify.")]
    Mac,
    /// Decryption gave no valid padding with the password given.
    #[error("The password is wrong, or the content was altered: it does not decrypt.")]
    Decrypt,
    /// An algorithm this reader does not implement.
    #[error("It uses {0}, which is not supported.")]
    Unsupported(String),
    /// A key derivation asks for more work than [`MAX_ITERATIONS`].
    #[error("Its iteration count {0} is above the limit of 1000000.")]
    Iterations(u64),
}

/// What a PKCS#12 file holds: private keys (PKCS#8 `PrivateKeyInfo`) and certificates,
/// in file order.
#[derive(Default)]
pub struct Pkcs12Contents {
    /// The private keys.
    pub keys: Vec<Zeroizing<Vec<u8>>>,
    /// The certificates (DER).
    pub certificates: Vec<Vec<u8>>,
}

impl std::fmt::Debug for Pkcs12Contents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Pkcs12Contents({} keys, {} certificates)",
            self.keys.len(),
            self.certificates.len()
        )
    }
}

/// The password in the forms the schemes take: PKCS#12's BMPString (UTF-16BE with a
/// terminating zero; an empty password is tried both as that and as no bytes, as OpenSSL
/// does) and PBES2's UTF-8.
struct Password {
    bmp: Vec<Zeroizing<Vec<u8>>>,
    utf8: Zeroizing<Vec<u8>>,
}

impl Password {
    fn new(text: &str) -> Password {
        let mut terminated = Zeroizing::new(Vec::with_capacity(text.len() * 2 + 2));
        for unit in text.encode_utf16().chain([0]) {
            terminated.extend_from_slice(&unit.to_be_bytes());
        }
        let mut bmp = vec![terminated];
        if text.is_empty() {
            bmp.push(Zeroizing::new(Vec::new()));
        }
        Password {
            bmp,
            utf8: Zeroizing::new(text.as_bytes().to_vec()),
        }
    }
}

fn malformed(what: &'static str) -> impl Fn(DerError) -> Pkcs12Error {
    move |_| Pkcs12Error::Malformed(what)
}

/// The element at `i` of `parts`, which must have `tag`.
fn field<'a>(
    parts: &[Tlv<'a>],
    i: usize,
    tag: u8,
    what: &'static str,
) -> Result<Tlv<'a>, Pkcs12Error> {
    parts
        .get(i)
        .filter(|t| t.tag == tag)
        .copied()
        .ok_or(Pkcs12Error::Malformed(what))
}

fn oid_of(tlv: &Tlv<'_>, what: &'static str) -> Result<String, Pkcs12Error> {
    if tlv.tag != 0x06 {
        return Err(Pkcs12Error::Malformed(what));
    }
    der::oid_text(tlv.content).map_err(malformed(what))
}

fn iterations(tlv: &Tlv<'_>, what: &'static str) -> Result<NonZeroU32, Pkcs12Error> {
    let n = der::unsigned(tlv).map_err(malformed(what))?;
    if n > MAX_ITERATIONS {
        return Err(Pkcs12Error::Iterations(n));
    }
    u32::try_from(n)
        .ok()
        .and_then(NonZeroU32::new)
        .ok_or(Pkcs12Error::Malformed(what))
}

/// The hash a MAC or the PKCS#12 KDF names.
fn hash_by_oid(oid: &str) -> Result<(&'static digest::Algorithm, hmac::Algorithm), Pkcs12Error> {
    Ok(match oid {
        "1.3.14.3.2.26" => (
            &digest::SHA1_FOR_LEGACY_USE_ONLY,
            hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
        ),
        "2.16.840.1.101.3.4.2.4" => (&digest::SHA224, hmac::HMAC_SHA224),
        "2.16.840.1.101.3.4.2.1" => (&digest::SHA256, hmac::HMAC_SHA256),
        "2.16.840.1.101.3.4.2.2" => (&digest::SHA384, hmac::HMAC_SHA384),
        "2.16.840.1.101.3.4.2.3" => (&digest::SHA512, hmac::HMAC_SHA512),
        other => return Err(Pkcs12Error::Unsupported(format!("the digest {other}"))),
    })
}

/// The PKCS#12 key derivation (RFC 7292, appendix B.2): `id` 1 for a key, 2 for an IV,
/// 3 for a MAC key.
fn pkcs12_kdf(
    alg: &'static digest::Algorithm,
    password: &[u8],
    salt: &[u8],
    id: u8,
    rounds: NonZeroU32,
    n: usize,
) -> Zeroizing<Vec<u8>> {
    let v = alg.block_len();
    let stretch = |s: &[u8]| -> Zeroizing<Vec<u8>> {
        Zeroizing::new(
            s.iter()
                .copied()
                .cycle()
                .take(v * s.len().div_ceil(v))
                .collect(),
        )
    };
    let mut input =
        Zeroizing::new([stretch(salt).as_slice(), stretch(password).as_slice()].concat());
    let diversifier = vec![id; v];
    let mut out = Zeroizing::new(Vec::with_capacity(n + alg.output_len()));
    loop {
        let mut ctx = digest::Context::new(alg);
        ctx.update(&diversifier);
        ctx.update(&input);
        let mut a = ctx.finish();
        for _ in 1..rounds.get() {
            a = digest::digest(alg, a.as_ref());
        }
        out.extend_from_slice(a.as_ref());
        if out.len() >= n {
            out.truncate(n);
            return out;
        }
        // Each v-byte block of the input becomes (block + B + 1) mod 2^(8v), B being A
        // repeated to v bytes.
        let b: Zeroizing<Vec<u8>> =
            Zeroizing::new(a.as_ref().iter().copied().cycle().take(v).collect());
        for block in input.chunks_mut(v) {
            let mut carry = 1u16;
            for k in (0..v).rev() {
                let sum = u16::from(block[k]) + u16::from(b[k]) + carry;
                block[k] = sum as u8;
                carry = sum >> 8;
            }
        }
    }
}

/// CBC decryption with PKCS#7 padding checked.
fn cbc_decrypt<C: BlockDecrypt + BlockSizeUser>(
    cipher: &C,
    iv: &[u8],
    data: &[u8],
) -> Result<Zeroizing<Vec<u8>>, Pkcs12Error> {
    let n = C::block_size();
    if iv.len() != n || data.is_empty() || !data.len().is_multiple_of(n) {
        return Err(Pkcs12Error::Decrypt);
    }
    let mut out = Zeroizing::new(data.to_vec());
    let mut previous = iv;
    for (block, ciphertext) in out.chunks_mut(n).zip(data.chunks(n)) {
        cipher.decrypt_block(GenericArray::from_mut_slice(block));
        for (b, p) in block.iter_mut().zip(previous) {
            *b ^= p;
        }
        previous = ciphertext;
    }
    let pad = usize::from(out[out.len() - 1]);
    if pad == 0
        || pad > n
        || !out[out.len() - pad..]
            .iter()
            .all(|b| usize::from(*b) == pad)
    {
        return Err(Pkcs12Error::Decrypt);
    }
    let len = out.len() - pad;
    out.truncate(len);
    Ok(out)
}

/// A block cipher a scheme names, in CBC mode.
#[derive(Debug, Clone, Copy)]
enum Cipher {
    /// RC2 with this many effective key bits.
    Rc2(usize),
    TripleDes,
    TwoKeyTripleDes,
    Des,
    Aes,
}

impl Cipher {
    fn decrypt(
        self,
        key: &[u8],
        iv: &[u8],
        data: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, Pkcs12Error> {
        let wrong = |_| Pkcs12Error::Malformed("cipher key length");
        match (self, key.len()) {
            (Cipher::Rc2(bits), 1..=128) => {
                cbc_decrypt(&rc2::Rc2::new_with_eff_key_len(key, bits), iv, data)
            }
            (Cipher::TripleDes, _) => cbc_decrypt(
                &des::TdesEde3::new_from_slice(key).map_err(wrong)?,
                iv,
                data,
            ),
            (Cipher::TwoKeyTripleDes, _) => cbc_decrypt(
                &des::TdesEde2::new_from_slice(key).map_err(wrong)?,
                iv,
                data,
            ),
            (Cipher::Des, _) => {
                cbc_decrypt(&des::Des::new_from_slice(key).map_err(wrong)?, iv, data)
            }
            (Cipher::Aes, 16) => {
                cbc_decrypt(&aes::Aes128::new_from_slice(key).map_err(wrong)?, iv, data)
            }
            (Cipher::Aes, 24) => {
                cbc_decrypt(&aes::Aes192::new_from_slice(key).map_err(wrong)?, iv, data)
            }
            (Cipher::Aes, 32) => {
                cbc_decrypt(&aes::Aes256::new_from_slice(key).map_err(wrong)?, iv, data)
            }
            _ => Err(Pkcs12Error::Malformed("cipher key length")),
        }
    }
}

/// Decrypts `data` under the password-based scheme `algorithm` (an AlgorithmIdentifier).
fn decrypt(
    algorithm: &Tlv<'_>,
    data: &[u8],
    password: &Password,
) -> Result<Zeroizing<Vec<u8>>, Pkcs12Error> {
    let what = "encryption algorithm";
    let parts = der::ber_elements(algorithm.content).map_err(malformed(what))?;
    let oid = oid_of(parts.first().ok_or(Pkcs12Error::Malformed(what))?, what)?;
    let legacy = match oid.as_str() {
        "1.2.840.113549.1.12.1.3" => Some((Cipher::TripleDes, 24)),
        "1.2.840.113549.1.12.1.4" => Some((Cipher::TwoKeyTripleDes, 16)),
        "1.2.840.113549.1.12.1.5" => Some((Cipher::Rc2(128), 16)),
        "1.2.840.113549.1.12.1.6" => Some((Cipher::Rc2(40), 5)),
        _ => None,
    };
    if let Some((cipher, key_len)) = legacy {
        let params = field(&parts, 1, 0x30, "PBE parameters")?;
        let params = der::ber_elements(params.content).map_err(malformed(what))?;
        let salt =
            der::ber_octets(&field(&params, 0, 0x04, "PBE salt")?).map_err(malformed(what))?;
        let rounds = iterations(&field(&params, 1, 0x02, "PBE iterations")?, what)?;
        let sha1 = &digest::SHA1_FOR_LEGACY_USE_ONLY;
        let mut last = Pkcs12Error::Decrypt;
        for bmp in &password.bmp {
            let key = pkcs12_kdf(sha1, bmp, &salt, 1, rounds, key_len);
            let iv = pkcs12_kdf(sha1, bmp, &salt, 2, rounds, 8);
            match cipher.decrypt(&key, &iv, data) {
                Ok(plain) => return Ok(plain),
                Err(e) => last = e,
            }
        }
        return Err(last);
    }
    match oid.as_str() {
        "1.2.840.113549.1.5.13" => pbes2(&parts, data, password),
        "1.2.840.113549.1.12.1.1" | "1.2.840.113549.1.12.1.2" => {
            Err(Pkcs12Error::Unsupported("RC4 encryption".into()))
        }
        other => Err(Pkcs12Error::Unsupported(format!(
            "the encryption scheme {other}"
        ))),
    }
}

/// PBES2 (RFC 8018): PBKDF2, then a CBC cipher.
fn pbes2(
    parts: &[Tlv<'_>],
    data: &[u8],
    password: &Password,
) -> Result<Zeroizing<Vec<u8>>, Pkcs12Error> {
    let what = "PBES2 parameters";
    let params = field(parts, 1, 0x30, what)?;
    let params = der::ber_elements(params.content).map_err(malformed(what))?;
    let kdf = der::ber_elements(field(&params, 0, 0x30, what)?.content).map_err(malformed(what))?;
    let scheme =
        der::ber_elements(field(&params, 1, 0x30, what)?.content).map_err(malformed(what))?;
    let kdf_oid = oid_of(kdf.first().ok_or(Pkcs12Error::Malformed(what))?, what)?;
    if kdf_oid != "1.2.840.113549.1.5.12" {
        return Err(Pkcs12Error::Unsupported(format!(
            "the key derivation {kdf_oid}"
        )));
    }
    let kdf = der::ber_elements(field(&kdf, 1, 0x30, what)?.content).map_err(malformed(what))?;
    let salt = der::ber_octets(&field(&kdf, 0, 0x04, "PBKDF2 salt")?).map_err(malformed(what))?;
    let rounds = iterations(&field(&kdf, 1, 0x02, "PBKDF2 iterations")?, what)?;
    let mut rest = &kdf[2..];
    let mut key_len = None;
    if let Some(len) = rest.first().filter(|t| t.tag == 0x02) {
        key_len = Some(der::unsigned(len).map_err(malformed(what))? as usize);
        rest = &rest[1..];
    }
    let prf = match rest.first() {
        None => pbkdf2::PBKDF2_HMAC_SHA1,
        Some(prf) => {
            let prf = der::ber_elements(prf.content).map_err(malformed(what))?;
            match oid_of(prf.first().ok_or(Pkcs12Error::Malformed(what))?, what)?.as_str() {
                "1.2.840.113549.2.7" => pbkdf2::PBKDF2_HMAC_SHA1,
                "1.2.840.113549.2.9" => pbkdf2::PBKDF2_HMAC_SHA256,
                "1.2.840.113549.2.10" => pbkdf2::PBKDF2_HMAC_SHA384,
                "1.2.840.113549.2.11" => pbkdf2::PBKDF2_HMAC_SHA512,
                other => return Err(Pkcs12Error::Unsupported(format!("the PRF {other}"))),
            }
        }
    };
    let (cipher, default_len) =
        match oid_of(scheme.first().ok_or(Pkcs12Error::Malformed(what))?, what)?.as_str() {
            "2.16.840.1.101.3.4.1.2" => (Cipher::Aes, 16),
            "2.16.840.1.101.3.4.1.22" => (Cipher::Aes, 24),
            "2.16.840.1.101.3.4.1.42" => (Cipher::Aes, 32),
            "1.2.840.113549.3.7" => (Cipher::TripleDes, 24),
            "1.3.14.3.2.7" => (Cipher::Des, 8),
            other => return Err(Pkcs12Error::Unsupported(format!("the cipher {other}"))),
        };
    let key_len = key_len.unwrap_or(default_len);
    if key_len != default_len {
        return Err(Pkcs12Error::Malformed("PBKDF2 key length"));
    }
    let iv = der::ber_octets(&field(&scheme, 1, 0x04, "cipher IV")?).map_err(malformed(what))?;
    let mut key = Zeroizing::new(vec![0; key_len]);
    pbkdf2::derive(prf, rounds, &salt, &password.utf8, &mut key);
    cipher.decrypt(&key, &iv, data)
}

/// An `EncryptedPrivateKeyInfo` (PKCS#8) decrypted to its `PrivateKeyInfo`.
pub fn decrypt_private_key(
    encrypted: &[u8],
    password: &str,
) -> Result<Zeroizing<Vec<u8>>, Pkcs12Error> {
    decrypt_key_info(encrypted, &Password::new(password))
}

fn decrypt_key_info(
    encrypted: &[u8],
    password: &Password,
) -> Result<Zeroizing<Vec<u8>>, Pkcs12Error> {
    let what = "encrypted private key";
    let (outer, _) = der::read_ber(encrypted).map_err(malformed(what))?;
    let parts = der::ber_elements(outer.content).map_err(malformed(what))?;
    let algorithm = field(&parts, 0, 0x30, what)?;
    let data = parts
        .get(1)
        .filter(|t| t.tag & 0x1f == 0x04)
        .ok_or(Pkcs12Error::Malformed(what))?;
    let data = der::ber_octets(data).map_err(malformed(what))?;
    decrypt(&algorithm, &data, password)
}

/// The content of a `ContentInfo` of type `data`, or (for `encryptedData`) its
/// decryption.
fn content_octets<'a>(info: &Tlv<'a>, password: &Password) -> Result<Cow<'a, [u8]>, Pkcs12Error> {
    let what = "content info";
    let parts = der::ber_elements(info.content).map_err(malformed(what))?;
    let kind = oid_of(parts.first().ok_or(Pkcs12Error::Malformed(what))?, what)?;
    let wrapped = field(&parts, 1, 0xa0, what)?;
    let inner = der::ber_elements(wrapped.content).map_err(malformed(what))?;
    let inner = inner.first().ok_or(Pkcs12Error::Malformed(what))?;
    match kind.as_str() {
        "1.2.840.113549.1.7.1" => {
            if inner.tag & 0x1f != 0x04 {
                return Err(Pkcs12Error::Malformed(what));
            }
            der::ber_octets(inner).map_err(malformed(what))
        }
        "1.2.840.113549.1.7.6" => {
            let what = "encrypted data";
            if inner.tag != 0x30 {
                return Err(Pkcs12Error::Malformed(what));
            }
            let parts = der::ber_elements(inner.content).map_err(malformed(what))?;
            let info = field(&parts, 1, 0x30, what)?;
            let info = der::ber_elements(info.content).map_err(malformed(what))?;
            let algorithm = field(&info, 1, 0x30, what)?;
            let data = info
                .get(2)
                .filter(|t| t.tag == 0x80 || t.tag == 0xa0)
                .ok_or(Pkcs12Error::Malformed(what))?;
            let data = der::ber_octets(data).map_err(malformed(what))?;
            Ok(Cow::Owned(decrypt(&algorithm, &data, password)?.to_vec()))
        }
        other => Err(Pkcs12Error::Unsupported(format!("content of type {other}"))),
    }
}

/// Collects the keys and certificates of a `SafeContents`.
fn read_bags(
    safe_contents: &[u8],
    password: &Password,
    depth: usize,
    out: &mut Pkcs12Contents,
) -> Result<(), Pkcs12Error> {
    let what = "safe contents";
    let (outer, _) = der::read_ber(safe_contents).map_err(malformed(what))?;
    if outer.tag != 0x30 {
        return Err(Pkcs12Error::Malformed(what));
    }
    for bag in der::ber_elements(outer.content).map_err(malformed(what))? {
        let what = "safe bag";
        let parts = der::ber_elements(bag.content).map_err(malformed(what))?;
        let kind = oid_of(parts.first().ok_or(Pkcs12Error::Malformed(what))?, what)?;
        let value =
            der::ber_elements(field(&parts, 1, 0xa0, what)?.content).map_err(malformed(what))?;
        let value = value.first().ok_or(Pkcs12Error::Malformed(what))?;
        match kind.as_str() {
            "1.2.840.113549.1.12.10.1.1" => out.keys.push(Zeroizing::new(value.raw.to_vec())),
            "1.2.840.113549.1.12.10.1.2" => out.keys.push(decrypt_key_info(value.raw, password)?),
            "1.2.840.113549.1.12.10.1.3" => {
                let what = "certificate bag";
                let cert = der::ber_elements(value.content).map_err(malformed(what))?;
                let cert_type = oid_of(cert.first().ok_or(Pkcs12Error::Malformed(what))?, what)?;
                if cert_type == "1.2.840.113549.1.9.22.1" {
                    let holder = der::ber_elements(field(&cert, 1, 0xa0, what)?.content)
                        .map_err(malformed(what))?;
                    let octets = holder
                        .first()
                        .filter(|t| t.tag & 0x1f == 0x04)
                        .ok_or(Pkcs12Error::Malformed(what))?;
                    out.certificates.push(
                        der::ber_octets(octets)
                            .map_err(malformed(what))?
                            .into_owned(),
                    );
                }
            }
            "1.2.840.113549.1.12.10.1.6" if depth < MAX_BAG_DEPTH => {
                read_bags(value.raw, password, depth + 1, out)?;
            }
            "1.2.840.113549.1.12.10.1.6" => return Err(Pkcs12Error::Malformed(what)),
            // CRLs and secrets are not a certificate's.
            _ => {}
        }
    }
    Ok(())
}

/// Reads a PKCS#12 file: checks its MAC (when it has one) and decrypts what is encrypted.
pub fn read_pkcs12(data: &[u8], password: &str) -> Result<Pkcs12Contents, Pkcs12Error> {
    let what = "PFX";
    let (pfx, _) = der::read_ber(data).map_err(malformed(what))?;
    if pfx.tag != 0x30 {
        return Err(Pkcs12Error::Malformed(what));
    }
    let parts = der::ber_elements(pfx.content).map_err(malformed(what))?;
    let version = der::unsigned(&field(&parts, 0, 0x02, what)?).map_err(malformed(what))?;
    if version != 3 {
        return Err(Pkcs12Error::Unsupported(format!("PFX version {version}")));
    }
    let auth_safe = field(&parts, 1, 0x30, what)?;
    let mut password = Password::new(password);
    let safe = content_octets(&auth_safe, &password)?;
    if let Some(mac_data) = parts.get(2) {
        let bmp = verify_mac(mac_data, &safe, &password)?;
        password.bmp.retain(|b| **b == *bmp);
    }
    let mut out = Pkcs12Contents::default();
    let what = "authenticated safe";
    let (list, _) = der::read_ber(&safe).map_err(malformed(what))?;
    if list.tag != 0x30 {
        return Err(Pkcs12Error::Malformed(what));
    }
    for info in der::ber_elements(list.content).map_err(malformed(what))? {
        let contents = content_octets(&info, &password)?;
        read_bags(&contents, &password, 0, &mut out)?;
    }
    Ok(out)
}

/// Checks the MAC over the authenticated safe; the password form that verifies it.
fn verify_mac(
    mac_data: &Tlv<'_>,
    signed: &[u8],
    password: &Password,
) -> Result<Zeroizing<Vec<u8>>, Pkcs12Error> {
    let what = "MAC data";
    let parts = der::ber_elements(mac_data.content).map_err(malformed(what))?;
    let digest_info =
        der::ber_elements(field(&parts, 0, 0x30, what)?.content).map_err(malformed(what))?;
    let algorithm =
        der::ber_elements(field(&digest_info, 0, 0x30, what)?.content).map_err(malformed(what))?;
    let oid = oid_of(algorithm.first().ok_or(Pkcs12Error::Malformed(what))?, what)?;
    if oid == "1.2.840.113549.1.5.14" {
        return Err(Pkcs12Error::Unsupported("a PBMAC1 MAC".into()));
    }
    let (hash, hmac_alg) = hash_by_oid(&oid)?;
    let expected =
        der::ber_octets(&field(&digest_info, 1, 0x04, what)?).map_err(malformed(what))?;
    let salt = der::ber_octets(&field(&parts, 1, 0x04, what)?).map_err(malformed(what))?;
    let rounds = match parts.get(2) {
        Some(n) => iterations(n, what)?,
        None => NonZeroU32::MIN,
    };
    for bmp in &password.bmp {
        let key = pkcs12_kdf(hash, bmp, &salt, 3, rounds, hash.output_len());
        if hmac::verify(&hmac::Key::new(hmac_alg, &key), signed, &expected).is_ok() {
            return Ok(bmp.clone());
        }
    }
    Err(Pkcs12Error::Mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pkcs12_kdf_matches_a_known_vector() {
        // OpenSSL's test vector: SHA-1, password "smeg", 1 iteration.
        let salt = [0x0a, 0x58, 0xcf, 0x64, 0x53, 0x0d, 0x82, 0x3f];
        let password = Password::new("smeg");
        let key = pkcs12_kdf(
            &digest::SHA1_FOR_LEGACY_USE_ONLY,
            &password.bmp[0],
            &salt,
            1,
            NonZeroU32::MIN,
            24,
        );
        assert_eq!(
            key.as_slice(),
            [
                0x8a, 0xaa, 0xe6, 0x29, 0x7b, 0x6c, 0xb0, 0x46, 0x42, 0xab, 0x5b, 0x07, 0x78, 0x51,
                0x28, 0x4e, 0xb7, 0x12, 0x8f, 0x1a, 0x2a, 0x7f, 0xbc, 0xa3
            ]
        );
    }

    #[test]
    fn refusals_name_the_cause_without_secrets() {
        assert_eq!(
            read_pkcs12(b"not der", "pw").unwrap_err(),
            Pkcs12Error::Malformed("PFX")
        );
        // A PFX of version 2.
        let v2 = der::sequence(&[der::small_integer(2), der::sequence(&[])]);
        assert!(matches!(
            read_pkcs12(&v2, "pw"),
            Err(Pkcs12Error::Unsupported(_))
        ));
        let message = read_pkcs12(b"\x30\x03\x02\x01\x03", "hunter2")
            .unwrap_err()
            .to_string();
        assert!(!message.contains("hunter2"), "{message}");
    }
}
