//! AES-256-XTS (IEEE 1619) for disk data units, over AWS-LC's EVP interface: the only
//! crate with `unsafe` code, each block stating what it relies on; the safe surface is
//! [`XtsKey`]. See ARCHITECTURE.md.
// The FFI calls into AWS-LC; each unsafe block states what it relies on.
#![allow(unsafe_code)]

use std::ptr;

use aws_lc_sys as ffi;
use thiserror::Error;
use zeroize::Zeroizing;

/// Bytes of an AES-256-XTS key: two AES-256 keys.
pub const KEY_LEN: usize = 64;
/// The AES block size; a data unit is a multiple of it.
pub const BLOCK: usize = 16;

/// Why a key or a data unit was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum XtsError {
    /// The two halves of the key are equal, which IEEE 1619 forbids.
    #[error("the two halves of an XTS key must differ")]
    WeakKey,
    /// A data unit that is empty or not a whole number of AES blocks.
    #[error("an XTS data unit must be a non-empty multiple of 16 bytes, not {0}")]
    BadLength(usize),
    /// AWS-LC refused the operation.
    #[error("AWS-LC refused the XTS operation")]
    Library,
}

/// `EVP_EncryptInit_ex` and `EVP_DecryptInit_ex` share this signature.
type InitFn = unsafe extern "C" fn(
    *mut ffi::EVP_CIPHER_CTX,
    *const ffi::EVP_CIPHER,
    *mut ffi::ENGINE,
    *const u8,
    *const u8,
) -> std::os::raw::c_int;

/// `EVP_EncryptUpdate` and `EVP_DecryptUpdate` share this signature.
type UpdateFn = unsafe extern "C" fn(
    *mut ffi::EVP_CIPHER_CTX,
    *mut u8,
    *mut std::os::raw::c_int,
    *const u8,
    std::os::raw::c_int,
) -> std::os::raw::c_int;

/// The EVP entry points of one direction.
fn entry_points(encrypt: bool) -> (InitFn, UpdateFn) {
    if encrypt {
        (ffi::EVP_EncryptInit_ex, ffi::EVP_EncryptUpdate)
    } else {
        (ffi::EVP_DecryptInit_ex, ffi::EVP_DecryptUpdate)
    }
}

/// One direction's cipher context, keyed once; the tweak is set per data unit.
struct Context(*mut ffi::EVP_CIPHER_CTX);

// SAFETY: the context is owned exclusively by this value and only used through `&mut`.
unsafe impl Send for Context {}

impl Drop for Context {
    fn drop(&mut self) {
        // SAFETY: `self.0` came from EVP_CIPHER_CTX_new and is freed exactly once;
        // EVP_CIPHER_CTX_free cleanses the key schedule.
        unsafe { ffi::EVP_CIPHER_CTX_free(self.0) }
    }
}

impl Context {
    fn new(key: &[u8; KEY_LEN], encrypt: bool) -> Result<Self, XtsError> {
        // SAFETY: EVP_CIPHER_CTX_new has no preconditions; null means allocation failure.
        let ctx = unsafe { ffi::EVP_CIPHER_CTX_new() };
        if ctx.is_null() {
            return Err(XtsError::Library);
        }
        let context = Context(ctx);
        let (init, _) = entry_points(encrypt);
        // SAFETY: `ctx` is a live context; EVP_aes_256_xts returns a static cipher; `key`
        // points to KEY_LEN readable bytes, the cipher's key length; a null IV is allowed
        // at key setup.
        let ok = unsafe {
            init(
                ctx,
                ffi::EVP_aes_256_xts(),
                ptr::null_mut(),
                key.as_ptr(),
                ptr::null(),
            )
        };
        if ok != 1 {
            return Err(XtsError::Library);
        }
        Ok(context)
    }

    fn apply(&mut self, encrypt: bool, unit: u64, data: &mut [u8]) -> Result<(), XtsError> {
        if data.is_empty() || !data.len().is_multiple_of(BLOCK) || data.len() > i32::MAX as usize {
            return Err(XtsError::BadLength(data.len()));
        }
        let mut tweak = [0u8; BLOCK];
        tweak[..8].copy_from_slice(&unit.to_le_bytes());
        let mut written = 0;
        let (init, update) = entry_points(encrypt);
        let len = data.len() as i32;
        // SAFETY: the context was keyed in `new`; a null cipher and key keep them and set
        // only the 16-byte tweak. `data` is valid for reads and writes of its length, and
        // AWS-LC's XTS permits in-place operation (input and output are the same buffer).
        // XTS output length equals input length, which `written` confirms.
        let ok = unsafe {
            init(
                self.0,
                ptr::null(),
                ptr::null_mut(),
                ptr::null(),
                tweak.as_ptr(),
            ) == 1
                && update(self.0, data.as_mut_ptr(), &mut written, data.as_ptr(), len) == 1
        };
        if !ok || written as usize != data.len() {
            return Err(XtsError::Library);
        }
        Ok(())
    }
}

/// An AES-256-XTS key ready to encrypt and decrypt data units in place. Key bytes live
/// only inside AWS-LC's contexts, which are cleansed on drop.
pub struct XtsKey {
    encrypt: Context,
    decrypt: Context,
}

impl std::fmt::Debug for XtsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("XtsKey(<redacted>)")
    }
}

impl XtsKey {
    /// Keys both directions with `key` (key1 ‖ key2); refuses equal halves.
    pub fn new(key: &Zeroizing<[u8; KEY_LEN]>) -> Result<Self, XtsError> {
        if key[..32] == key[32..] {
            return Err(XtsError::WeakKey);
        }
        Ok(XtsKey {
            encrypt: Context::new(key, true)?,
            decrypt: Context::new(key, false)?,
        })
    }

    /// Encrypts data unit number `unit` in place.
    pub fn encrypt(&mut self, unit: u64, data: &mut [u8]) -> Result<(), XtsError> {
        self.encrypt.apply(true, unit, data)
    }

    /// Decrypts data unit number `unit` in place.
    pub fn decrypt(&mut self, unit: u64, data: &mut [u8]) -> Result<(), XtsError> {
        self.decrypt.apply(false, unit, data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn key(s: &str) -> Zeroizing<[u8; KEY_LEN]> {
        Zeroizing::new(hex(s).try_into().unwrap())
    }

    /// IEEE 1619-2007 Annex B, vector 10: XTS-AES-256, data unit 0xff, 512 bytes.
    #[test]
    fn ieee_1619_vector_10() {
        let mut k = key(concat!(
            "2718281828459045235360287471352662497757247093699959574966967627",
            "3141592653589793238462643383279502884197169399375105820974944592"
        ));
        let mut xts = XtsKey::new(&k).unwrap();
        k.iter_mut().for_each(|b| *b = 0);
        let plain: Vec<u8> = (0..512).map(|i| i as u8).collect();
        let expected = hex(concat!(
            "1c3b3a102f770386e4836c99e370cf9bea00803f5e482357a4ae12d414a3e63b5d31e276f8fe4a8d66b317f9ac683f44",
            "680a86ac35adfc3345befecb4bb188fd5776926c49a3095eb108fd1098baec70aaa66999a72a82f27d848b21d4a741b0",
            "c5cd4d5fff9dac89aeba122961d03a757123e9870f8acf1000020887891429ca2a3e7a7d7df7b10355165c8b9a6d0a7d",
            "e8b062c4500dc4cd120c0f7418dae3d0b5781c34803fa75421c790dfe1de1834f280d7667b327f6c8cd7557e12ac3a0f",
            "93ec05c52e0493ef31a12d3d9260f79a289d6a379bc70c50841473d1a8cc81ec583e9645e07b8d9670655ba5bbcfecc6",
            "dc3966380ad8fecb17b6ba02469a020a84e18e8f84252070c13e9f1f289be54fbc481457778f616015e1327a02b140f1",
            "505eb309326d68378f8374595c849d84f4c333ec4423885143cb47bd71c5edae9be69a2ffeceb1bec9de244fbe15992b",
            "11b77c040f12bd8f6a975a44a0f90c29a9abc3d4d893927284c58754cce294529f8614dcd2aba991925fedc4ae74ffac",
            "6e333b93eb4aff0479da9a410e4450e0dd7ae4c6e2910900575da401fc07059f645e8b7e9bfdef33943054ff84011493",
            "c27b3429eaedb4ed5376441a77ed43851ad77f16f541dfd269d50d6a5f14fb0aab1cbb4c1550be97f7ab4066193c4caa",
            "773dad38014bd2092fa755c824bb5e54c4f36ffda9fcea70b9c6e693e148c151"
        ));
        let mut data = plain.clone();
        xts.encrypt(0xff, &mut data).unwrap();
        assert_eq!(data, expected, "the key outlives the caller's copy");
        xts.decrypt(0xff, &mut data).unwrap();
        assert_eq!(data, plain);
    }

    #[test]
    fn tweaks_separate_units_and_bad_input_is_refused() {
        let k: Zeroizing<[u8; KEY_LEN]> = Zeroizing::new(std::array::from_fn(|i| i as u8));
        let mut xts = XtsKey::new(&k).unwrap();
        let (mut a, mut b) = ([7u8; 4096], [7u8; 4096]);
        xts.encrypt(1, &mut a).unwrap();
        xts.encrypt(2, &mut b).unwrap();
        assert_ne!(a, b, "the same plaintext in two units encrypts differently");
        assert_ne!(a[..16], a[16..32], "blocks within a unit differ");
        xts.decrypt(1, &mut a).unwrap();
        assert_eq!(a, [7u8; 4096]);
        for len in [0, 15, 17, 4095] {
            assert_eq!(
                xts.encrypt(0, &mut vec![0; len]),
                Err(XtsError::BadLength(len))
            );
        }
        let same = Zeroizing::new([9u8; KEY_LEN]);
        assert_eq!(XtsKey::new(&same).unwrap_err(), XtsError::WeakKey);
        assert_eq!(format!("{xts:?}"), "XtsKey(<redacted>)");
    }
}
