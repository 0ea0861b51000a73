//! Passphrase key derivation: PBKDF2 (AWS-LC) and Argon2 (the RustCrypto `argon2` crate),
//! with the bounds cryptsetup itself enforces, so a hostile header cannot make an unlock
//! take unbounded memory or time.

use std::num::NonZeroU32;

use crate::{Hash, LuksError};

/// Argon2 variants LUKS2 names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Argon2Kind {
    /// `argon2i`.
    Argon2i,
    /// `argon2id`, cryptsetup's LUKS2 default.
    Argon2id,
}

/// A key slot's key derivation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kdf {
    /// PBKDF2-HMAC with `hash`.
    Pbkdf2 {
        /// The HMAC hash.
        hash: Hash,
        /// Iterations.
        iterations: u32,
    },
    /// Argon2i or Argon2id (version 1.3).
    Argon2 {
        /// The variant.
        kind: Argon2Kind,
        /// Passes (`time`).
        time: u32,
        /// Memory in KiB (`memory`).
        memory_kib: u32,
        /// Lanes (`cpus`).
        lanes: u32,
    },
}

/// cryptsetup's ceiling on Argon2 memory (4 GiB) is lowered to 1 GiB, its default
/// maximum, because an unlock here runs in a server.
const MAX_ARGON2_MEMORY_KIB: u32 = 1024 * 1024;
/// cryptsetup's bounds on Argon2 passes and lanes.
const MAX_ARGON2_TIME: u32 = 1024;
const MAX_ARGON2_LANES: u32 = 4;
/// More PBKDF2 iterations than any benchmark of cryptsetup chooses on real hardware.
const MAX_PBKDF2_ITERATIONS: u32 = 100_000_000;

impl Kdf {
    /// Refuses parameters outside the bounds above.
    pub fn check(&self) -> Result<(), LuksError> {
        match *self {
            Kdf::Pbkdf2 { iterations, .. } => {
                if iterations == 0 || iterations > MAX_PBKDF2_ITERATIONS {
                    return Err(LuksError::Unsupported(format!(
                        "PBKDF2 with {iterations} iterations"
                    )));
                }
            }
            Kdf::Argon2 {
                time,
                memory_kib,
                lanes,
                ..
            } => {
                if time == 0 || time > MAX_ARGON2_TIME {
                    return Err(LuksError::Unsupported(format!("Argon2 with time {time}")));
                }
                if lanes == 0 || lanes > MAX_ARGON2_LANES {
                    return Err(LuksError::Unsupported(format!("Argon2 with {lanes} lanes")));
                }
                if memory_kib < 8 * lanes || memory_kib > MAX_ARGON2_MEMORY_KIB {
                    return Err(LuksError::Unsupported(format!(
                        "Argon2 with {memory_kib} KiB of memory"
                    )));
                }
            }
        }
        Ok(())
    }

    /// The KDF's name in LUKS2 metadata.
    pub fn name(&self) -> &'static str {
        match self {
            Kdf::Pbkdf2 { .. } => "pbkdf2",
            Kdf::Argon2 {
                kind: Argon2Kind::Argon2i,
                ..
            } => "argon2i",
            Kdf::Argon2 {
                kind: Argon2Kind::Argon2id,
                ..
            } => "argon2id",
        }
    }

    pub(crate) fn derive(
        &self,
        passphrase: &[u8],
        salt: &[u8],
        out: &mut [u8],
    ) -> Result<(), LuksError> {
        self.check()?;
        match *self {
            Kdf::Pbkdf2 { hash, iterations } => pbkdf2(hash, iterations, salt, passphrase, out),
            Kdf::Argon2 {
                kind,
                time,
                memory_kib,
                lanes,
            } => {
                let params = argon2::Params::new(memory_kib, time, lanes, Some(out.len()))
                    .map_err(|_| LuksError::Unsupported("Argon2 parameters".into()))?;
                let algorithm = match kind {
                    Argon2Kind::Argon2i => argon2::Algorithm::Argon2i,
                    Argon2Kind::Argon2id => argon2::Algorithm::Argon2id,
                };
                argon2::Argon2::new(algorithm, argon2::Version::V0x13, params)
                    .hash_password_into(passphrase, salt, out)
                    .map_err(|_| {
                        LuksError::Unsupported("an Argon2 salt or passphrase of this length".into())
                    })
            }
        }
    }
}

pub(crate) fn pbkdf2(
    hash: Hash,
    iterations: u32,
    salt: &[u8],
    secret: &[u8],
    out: &mut [u8],
) -> Result<(), LuksError> {
    let iterations = NonZeroU32::new(iterations)
        .ok_or_else(|| LuksError::Damaged("PBKDF2 with 0 iterations".into()))?;
    let algorithm = match hash {
        Hash::Sha1 => aws_lc_rs::pbkdf2::PBKDF2_HMAC_SHA1,
        Hash::Sha256 => aws_lc_rs::pbkdf2::PBKDF2_HMAC_SHA256,
        Hash::Sha512 => aws_lc_rs::pbkdf2::PBKDF2_HMAC_SHA512,
    };
    aws_lc_rs::pbkdf2::derive(algorithm, iterations, salt, secret, out);
    Ok(())
}
