//! The anti-forensic splitter (LUKS1 specification, section 2.4): a key is stored as
//! `stripes` blocks, all but the last random, so that destroying any part of the area
//! destroys the key.

use zeroize::Zeroizing;

use crate::{random, Hash, LuksError};

/// Hashes `block` in place, digest-sized piece by piece, each prefixed by its big-endian
/// index; the last piece takes the digest's first bytes.
fn diffuse(hash: Hash, block: &mut [u8]) {
    let size = hash.len();
    let mut input = Zeroizing::new(Vec::with_capacity(4 + size));
    for (i, piece) in block.chunks_mut(size).enumerate() {
        input.clear();
        input.extend_from_slice(&(i as u32).to_be_bytes());
        input.extend_from_slice(piece);
        let digest = aws_lc_rs::digest::digest(hash.algorithm(), &input);
        piece.copy_from_slice(&digest.as_ref()[..piece.len()]);
    }
}

fn xor_into(acc: &mut [u8], other: &[u8]) {
    for (a, b) in acc.iter_mut().zip(other) {
        *a ^= b;
    }
}

/// Splits `key` into `stripes` blocks.
pub(crate) fn split(key: &[u8], stripes: u32, hash: Hash) -> Result<Zeroizing<Vec<u8>>, LuksError> {
    let n = key.len();
    let stripes = stripes as usize;
    let mut out = Zeroizing::new(vec![0u8; n * stripes]);
    random(&mut out[..n * (stripes - 1)])?;
    let mut d = Zeroizing::new(vec![0u8; n]);
    for stripe in out[..n * (stripes - 1)].chunks(n) {
        xor_into(&mut d, stripe);
        diffuse(hash, &mut d);
    }
    xor_into(&mut d, key);
    out[n * (stripes - 1)..].copy_from_slice(&d);
    Ok(out)
}

/// Recovers a `key_len`-byte key from `stripes` blocks.
pub(crate) fn merge(
    material: &[u8],
    key_len: usize,
    stripes: u32,
    hash: Hash,
) -> Zeroizing<Vec<u8>> {
    let stripes = stripes as usize;
    let mut d = Zeroizing::new(vec![0u8; key_len]);
    for stripe in material[..key_len * (stripes - 1)].chunks(key_len) {
        xor_into(&mut d, stripe);
        diffuse(hash, &mut d);
    }
    xor_into(
        &mut d,
        &material[key_len * (stripes - 1)..key_len * stripes],
    );
    d
}
