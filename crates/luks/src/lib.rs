//! LUKS1 and LUKS2 volumes as cryptsetup writes and reads them: the binary headers (both
//! copies of a LUKS2 header, with their checksums), the JSON metadata, key slots under
//! PBKDF2 or Argon2, the anti-forensic splitter and the `aes-xts-plain64` data cipher in
//! 512- to 4096-byte sectors. See ARCHITECTURE.md.
//!
//! The crate reads and writes bytes, never devices: [`Header::parse`] takes the first bytes
//! of a volume, [`format`] returns the bytes of a new header area, and [`DataCipher`]
//! encrypts and decrypts sectors of the data segment in place.
#![forbid(unsafe_code)]

mod af;
mod kdf;
mod luks1;
mod luks2;

use aws_lc_rs::digest;
use thiserror::Error;
use zeroize::Zeroizing;

pub use kdf::{Argon2Kind, Kdf};

/// The unit LUKS counts offsets, key-slot areas and IVs in.
pub const SECTOR: u64 = 512;
/// Bytes of a volume key: `aes-xts-plain64` with two AES-256 keys, cryptsetup's default.
pub const KEY_LEN: usize = atrest_xts::KEY_LEN;
/// Stripes of the anti-forensic splitter, as cryptsetup writes them.
pub const STRIPES: u32 = 4000;
/// The only cipher specification read or written.
pub const CIPHER: &str = "aes-xts-plain64";
/// Bytes a caller reads from the start of a volume for [`Header::parse`] and
/// [`Header::unlock`]: the largest header area either version has by default (LUKS2's).
pub const HEADER_AREA: u64 = luks2::DATA_OFFSET;

/// Why a volume could not be read, opened or formatted. Messages name the field at fault,
/// never key material.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LuksError {
    /// The bytes do not start with a LUKS magic (nor hold a LUKS2 secondary header).
    #[error("not a LUKS volume")]
    NotLuks,
    /// A header is present but inconsistent: a bad checksum, an offset outside the area,
    /// a malformed JSON field.
    #[error("the LUKS header is damaged: {0}")]
    Damaged(String),
    /// A well-formed header asks for something this implementation does not do.
    #[error("unsupported LUKS volume: {0}")]
    Unsupported(String),
    /// The caller gave fewer bytes than the header needs.
    #[error("the LUKS header area is truncated: {0} bytes are needed")]
    Truncated(u64),
    /// No active key slot opens with the passphrase.
    #[error("no key slot opens with this passphrase")]
    WrongPassphrase,
    /// Sector arithmetic refused: an offset or length that is not whole sectors.
    #[error("{0}")]
    Misaligned(String),
    /// The cipher or a key derivation failed inside the library.
    #[error("the LUKS cipher failed: {0}")]
    Cipher(&'static str),
}

/// The two on-disk formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// LUKS1: one 592-byte header, eight key slots, PBKDF2 only.
    Luks1,
    /// LUKS2: two binary headers with JSON metadata, Argon2 or PBKDF2.
    Luks2,
}

impl Version {
    /// cryptsetup's name of the format (`--type`).
    pub fn name(self) -> &'static str {
        match self {
            Version::Luks1 => "luks1",
            Version::Luks2 => "luks2",
        }
    }
}

/// The hashes LUKS names for PBKDF2, the splitter and LUKS2 header checksums.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hash {
    /// SHA-1, LUKS1's historical default.
    Sha1,
    /// SHA-256, cryptsetup's default.
    Sha256,
    /// SHA-512.
    Sha512,
}

impl Hash {
    /// Reads a LUKS hash name.
    pub fn parse(name: &str) -> Result<Hash, LuksError> {
        match name.to_ascii_lowercase().as_str() {
            "sha1" => Ok(Hash::Sha1),
            "sha256" => Ok(Hash::Sha256),
            "sha512" => Ok(Hash::Sha512),
            other => Err(LuksError::Unsupported(format!("hash {other:?}"))),
        }
    }

    /// The name LUKS writes.
    pub fn name(self) -> &'static str {
        match self {
            Hash::Sha1 => "sha1",
            Hash::Sha256 => "sha256",
            Hash::Sha512 => "sha512",
        }
    }

    fn algorithm(self) -> &'static digest::Algorithm {
        match self {
            Hash::Sha1 => &digest::SHA1_FOR_LEGACY_USE_ONLY,
            Hash::Sha256 => &digest::SHA256,
            Hash::Sha512 => &digest::SHA512,
        }
    }

    fn len(self) -> usize {
        self.algorithm().output_len()
    }
}

/// A volume key, wiped on drop and never printed.
pub struct VolumeKey(Zeroizing<[u8; KEY_LEN]>);

impl std::fmt::Debug for VolumeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VolumeKey(<redacted>)")
    }
}

impl VolumeKey {
    fn generate() -> Result<VolumeKey, LuksError> {
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        random(&mut key[..])?;
        Ok(VolumeKey(key))
    }

    fn from_slice(bytes: &[u8]) -> VolumeKey {
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        key.copy_from_slice(bytes);
        VolumeKey(key)
    }

    fn xts(&self) -> Result<atrest_xts::XtsKey, LuksError> {
        atrest_xts::XtsKey::new(&self.0)
            .map_err(|_| LuksError::Cipher("a volume key with equal halves"))
    }
}

/// One active key slot: how a passphrase becomes the key of its area, and where the split
/// volume key lies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySlot {
    /// The slot's number (0–7 in LUKS1, the JSON key in LUKS2).
    pub index: u32,
    /// The passphrase's key derivation.
    pub kdf: Kdf,
    /// The KDF's salt.
    pub salt: Vec<u8>,
    /// Byte offset of the key material from the start of the volume.
    pub area_offset: u64,
    /// Bytes of the area (at least the split key, whole sectors).
    pub area_size: u64,
    /// Stripes of the anti-forensic split.
    pub stripes: u32,
    /// The splitter's diffusion hash.
    pub af_hash: Hash,
}

/// What checks a candidate volume key: PBKDF2 of the key with a salt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyDigest {
    /// The PBKDF2 hash.
    pub hash: Hash,
    /// PBKDF2 iterations.
    pub iterations: u32,
    /// The digest's salt.
    pub salt: Vec<u8>,
    /// The expected PBKDF2 output (20 bytes in LUKS1, the hash's length in LUKS2).
    pub value: Vec<u8>,
    /// The key slots whose keys it checks (every slot, in LUKS1).
    pub keyslots: Vec<u32>,
}

/// A parsed LUKS header, either version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// LUKS1 or LUKS2.
    pub version: Version,
    /// The volume's UUID, as cryptsetup prints it.
    pub uuid: String,
    /// Byte offset of the data segment.
    pub data_offset: u64,
    /// Bytes of the data segment, when the header fixes it (`None`: to the end of the device).
    pub data_size: Option<u64>,
    /// The encryption unit of the data segment: 512 to 4096 bytes.
    pub sector_size: u32,
    /// Added to every data sector's IV (LUKS2 `iv_tweak`).
    pub iv_tweak: u64,
    /// Active key slots, in order.
    pub keyslots: Vec<KeySlot>,
    /// The volume-key digest.
    pub digest: KeyDigest,
    /// Bytes of one LUKS2 binary header plus its JSON area (0 for LUKS1).
    pub metadata_size: u64,
}

impl Header {
    /// Reads the header at the start of `volume` (at least its first [`HEADER_AREA`] bytes,
    /// or the whole volume if smaller). A damaged LUKS2 primary header is replaced by the
    /// secondary, as cryptsetup does.
    pub fn parse(volume: &[u8]) -> Result<Header, LuksError> {
        if volume.len() < 8 {
            return Err(LuksError::NotLuks);
        }
        let version = u16::from_be_bytes([volume[6], volume[7]]);
        if volume[..6] == luks1::MAGIC && version == 1 {
            return luks1::parse(volume);
        }
        luks2::parse(volume)
    }

    /// Opens a key slot with `passphrase`, returning the volume key its digest confirms.
    /// `volume` is the same bytes given to [`Header::parse`].
    pub fn unlock(&self, volume: &[u8], passphrase: &[u8]) -> Result<VolumeKey, LuksError> {
        for slot in &self.keyslots {
            if !self.digest.keyslots.contains(&slot.index) {
                continue;
            }
            let end = slot.area_offset + slot.area_size;
            if end > volume.len() as u64 {
                return Err(LuksError::Truncated(end));
            }
            let material = &volume[slot.area_offset as usize..end as usize];
            let candidate = open_slot(slot, material, passphrase)?;
            if self.digest.matches(&candidate)? {
                return Ok(candidate);
            }
        }
        Err(LuksError::WrongPassphrase)
    }
}

impl KeyDigest {
    fn compute(&self, key: &VolumeKey) -> Result<Vec<u8>, LuksError> {
        let mut out = vec![0u8; self.value.len()];
        kdf::pbkdf2(self.hash, self.iterations, &self.salt, &key.0[..], &mut out)?;
        Ok(out)
    }

    fn matches(&self, key: &VolumeKey) -> Result<bool, LuksError> {
        let computed = self.compute(key)?;
        Ok(aws_lc_rs::constant_time::verify_slices_are_equal(&computed, &self.value).is_ok())
    }
}

/// How [`format`] lays out a new volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatOptions {
    /// LUKS1 or LUKS2.
    pub version: Version,
    /// The key slot's KDF (PBKDF2 only, for LUKS1).
    pub kdf: Kdf,
    /// The data segment's sector size: 512 (LUKS1) or 512, 1024, 2048, 4096 (LUKS2).
    pub sector_size: u32,
}

/// A new header area and the volume key it protects.
#[derive(Debug)]
pub struct Formatted {
    /// The header as parsed back.
    pub header: Header,
    /// The bytes from the start of the volume to the data segment: headers, the key slot
    /// area, zeros elsewhere.
    pub area: Vec<u8>,
    /// The new volume key.
    pub key: VolumeKey,
}

/// PBKDF2 iterations of the volume-key digest (cryptsetup benchmarks for 125 ms and
/// never goes under 1,000).
const DIGEST_ITERATIONS: u32 = 100_000;

/// Lays out a new volume with one key slot (slot 0) opened by `passphrase`, as
/// `cryptsetup luksFormat` does: LUKS1 with its payload at 2 MiB, LUKS2 with 16 KiB
/// metadata copies and its data segment at 16 MiB.
pub fn format(options: &FormatOptions, passphrase: &[u8]) -> Result<Formatted, LuksError> {
    options.kdf.check()?;
    let key = VolumeKey::generate()?;
    let mut slot_salt = vec![0u8; 32];
    random(&mut slot_salt)?;
    let mut digest_salt = vec![0u8; 32];
    random(&mut digest_salt)?;
    let split_len = KEY_LEN as u64 * STRIPES as u64;
    let slot = KeySlot {
        index: 0,
        kdf: options.kdf,
        salt: slot_salt,
        area_offset: 0,
        area_size: split_len.div_ceil(4096) * 4096,
        stripes: STRIPES,
        af_hash: Hash::Sha256,
    };
    let mut digest = KeyDigest {
        hash: Hash::Sha256,
        iterations: DIGEST_ITERATIONS,
        salt: digest_salt,
        value: Vec::new(),
        keyslots: vec![0],
    };
    let mut header = match options.version {
        Version::Luks1 => {
            if !matches!(options.kdf, Kdf::Pbkdf2 { .. }) {
                return Err(LuksError::Unsupported(
                    "LUKS1 key slots use PBKDF2 only".into(),
                ));
            }
            if options.sector_size != SECTOR as u32 {
                return Err(LuksError::Unsupported(
                    "LUKS1 has 512-byte sectors only".into(),
                ));
            }
            digest.value = vec![0u8; luks1::DIGEST_LEN];
            luks1::layout(slot, digest)
        }
        Version::Luks2 => {
            check_sector_size(options.sector_size)?;
            digest.value = vec![0u8; Hash::Sha256.len()];
            luks2::layout(slot, digest, options.sector_size)
        }
    };
    header.uuid = new_uuid()?;
    header.digest.value = header.digest.compute(&key)?;
    let mut area = vec![0u8; header.data_offset as usize];
    let slot = &header.keyslots[0];
    let material = seal_slot(slot, &key, passphrase)?;
    let start = slot.area_offset as usize;
    area[start..start + material.len()].copy_from_slice(&material);
    match header.version {
        Version::Luks1 => luks1::encode(&header, &mut area),
        Version::Luks2 => luks2::encode(&header, &mut area)?,
    }
    Ok(Formatted {
        header: Header::parse(&area)?,
        area,
        key,
    })
}

/// The `aes-xts-plain64` cipher of a volume's data segment. Offsets are relative to the
/// data segment; the IV of a sector is its offset in 512-byte units plus `iv_tweak`,
/// whatever the sector size (dm-crypt without `iv_large_sectors`, as cryptsetup opens
/// LUKS2).
pub struct DataCipher {
    key: atrest_xts::XtsKey,
    sector_size: u64,
    iv_tweak: u64,
}

impl std::fmt::Debug for DataCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataCipher")
            .field("sector_size", &self.sector_size)
            .finish_non_exhaustive()
    }
}

impl DataCipher {
    /// The data cipher of `header`'s volume under `key`.
    pub fn new(header: &Header, key: &VolumeKey) -> Result<DataCipher, LuksError> {
        Ok(DataCipher {
            key: key.xts()?,
            sector_size: header.sector_size as u64,
            iv_tweak: header.iv_tweak,
        })
    }

    /// The encryption unit in bytes.
    pub fn sector_size(&self) -> u64 {
        self.sector_size
    }

    /// Encrypts whole sectors starting `offset` bytes into the data segment, in place.
    pub fn encrypt(&mut self, offset: u64, data: &mut [u8]) -> Result<(), LuksError> {
        self.apply(true, offset, data)
    }

    /// Decrypts whole sectors starting `offset` bytes into the data segment, in place.
    pub fn decrypt(&mut self, offset: u64, data: &mut [u8]) -> Result<(), LuksError> {
        self.apply(false, offset, data)
    }

    fn apply(&mut self, encrypt: bool, offset: u64, data: &mut [u8]) -> Result<(), LuksError> {
        let size = self.sector_size;
        if !offset.is_multiple_of(size) || !(data.len() as u64).is_multiple_of(size) {
            return Err(LuksError::Misaligned(format!(
                "LUKS data is encrypted in whole {size}-byte sectors; offset {offset} length {} is not",
                data.len()
            )));
        }
        for (i, sector) in data.chunks_mut(size as usize).enumerate() {
            let iv = (offset + i as u64 * size) / SECTOR + self.iv_tweak;
            let result = if encrypt {
                self.key.encrypt(iv, sector)
            } else {
                self.key.decrypt(iv, sector)
            };
            result.map_err(|_| LuksError::Cipher("AES-XTS"))?;
        }
        Ok(())
    }
}

fn check_sector_size(size: u32) -> Result<(), LuksError> {
    match size {
        512 | 1024 | 2048 | 4096 => Ok(()),
        other => Err(LuksError::Unsupported(format!("sector size {other}"))),
    }
}

/// Decrypts a key slot's area with the passphrase's derived key and merges the stripes.
fn open_slot(slot: &KeySlot, material: &[u8], passphrase: &[u8]) -> Result<VolumeKey, LuksError> {
    let area_key = VolumeKey(derive_area_key(slot, passphrase)?);
    let split_len = KEY_LEN * slot.stripes as usize;
    let mut split =
        Zeroizing::new(material[..split_len.div_ceil(SECTOR as usize) * SECTOR as usize].to_vec());
    let mut xts = area_key.xts()?;
    for (i, sector) in split.chunks_mut(SECTOR as usize).enumerate() {
        xts.decrypt(i as u64, sector)
            .map_err(|_| LuksError::Cipher("AES-XTS"))?;
    }
    let key = af::merge(&split[..split_len], KEY_LEN, slot.stripes, slot.af_hash);
    Ok(VolumeKey::from_slice(&key))
}

/// The encrypted, split key material of a slot: whole sectors.
fn seal_slot(
    slot: &KeySlot,
    key: &VolumeKey,
    passphrase: &[u8],
) -> Result<Zeroizing<Vec<u8>>, LuksError> {
    let area_key = VolumeKey(derive_area_key(slot, passphrase)?);
    let mut split = af::split(&key.0[..], slot.stripes, slot.af_hash)?;
    let padded = split.len().div_ceil(SECTOR as usize) * SECTOR as usize;
    split.resize(padded, 0);
    let mut xts = area_key.xts()?;
    for (i, sector) in split.chunks_mut(SECTOR as usize).enumerate() {
        xts.encrypt(i as u64, sector)
            .map_err(|_| LuksError::Cipher("AES-XTS"))?;
    }
    Ok(split)
}

fn derive_area_key(
    slot: &KeySlot,
    passphrase: &[u8],
) -> Result<Zeroizing<[u8; KEY_LEN]>, LuksError> {
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    slot.kdf.derive(passphrase, &slot.salt, &mut key[..])?;
    Ok(key)
}

fn random(out: &mut [u8]) -> Result<(), LuksError> {
    aws_lc_rs::rand::fill(out).map_err(|_| LuksError::Cipher("the random generator"))
}

fn new_uuid() -> Result<String, LuksError> {
    let mut b = [0u8; 16];
    random(&mut b)?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    ))
}

/// A NUL-padded ASCII field of a binary header.
fn text_field(bytes: &[u8], field: &str) -> Result<String, LuksError> {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    std::str::from_utf8(&bytes[..end])
        .map(str::to_owned)
        .map_err(|_| LuksError::Damaged(format!("{field} is not text")))
}

fn put_text(out: &mut [u8], text: &str) {
    out[..text.len()].copy_from_slice(text.as_bytes());
}

fn be32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(bytes[at..at + 4].try_into().expect("four bytes"))
}

fn be64(bytes: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(bytes[at..at + 8].try_into().expect("eight bytes"))
}

#[cfg(test)]
mod tests;
