//! LUKS1: a 592-byte big-endian header, eight key slots, PBKDF2 (LUKS1 On-Disk Format
//! Specification 1.2.3).

use crate::{
    be32, put_text, text_field, Hash, Header, Kdf, KeyDigest, KeySlot, LuksError, Version, CIPHER,
    KEY_LEN, SECTOR,
};

pub(crate) const MAGIC: [u8; 6] = *b"LUKS\xba\xbe";
/// Bytes of the master-key digest.
pub(crate) const DIGEST_LEN: usize = 20;
const HEADER_LEN: usize = 592;
const SLOTS: usize = 8;
const SLOT_LEN: usize = 48;
const SLOT_ENABLED: u32 = 0x00AC_71F3;
const SLOT_DISABLED: u32 = 0x0000_DEAD;
/// cryptsetup's layout for a 64-byte key: the first slot at 4 KiB, slots aligned to
/// 4 KiB, the payload at 2 MiB.
const FIRST_SLOT: u64 = 4096;
const PAYLOAD_OFFSET: u64 = 2 * 1024 * 1024;

mod at {
    pub(super) const CIPHER_NAME: usize = 8;
    pub(super) const CIPHER_MODE: usize = 40;
    pub(super) const HASH: usize = 72;
    pub(super) const PAYLOAD: usize = 104;
    pub(super) const KEY_BYTES: usize = 108;
    pub(super) const DIGEST: usize = 112;
    pub(super) const DIGEST_SALT: usize = 132;
    pub(super) const DIGEST_ITER: usize = 164;
    pub(super) const UUID: usize = 168;
    pub(super) const SLOTS: usize = 208;
}

pub(crate) fn parse(bytes: &[u8]) -> Result<Header, LuksError> {
    if bytes.len() < HEADER_LEN {
        return Err(LuksError::Truncated(HEADER_LEN as u64));
    }
    let cipher = text_field(&bytes[at::CIPHER_NAME..at::CIPHER_MODE], "cipher-name")?;
    let mode = text_field(&bytes[at::CIPHER_MODE..at::HASH], "cipher-mode")?;
    if format!("{cipher}-{mode}") != CIPHER {
        return Err(LuksError::Unsupported(format!("cipher {cipher}-{mode}")));
    }
    let hash = Hash::parse(&text_field(&bytes[at::HASH..at::PAYLOAD], "hash-spec")?)?;
    let key_bytes = be32(bytes, at::KEY_BYTES);
    if key_bytes as usize != KEY_LEN {
        return Err(LuksError::Unsupported(format!(
            "a {}-bit key",
            key_bytes as u64 * 8
        )));
    }
    let data_offset = be32(bytes, at::PAYLOAD) as u64 * SECTOR;
    let iterations = be32(bytes, at::DIGEST_ITER);
    if iterations == 0 {
        return Err(LuksError::Damaged("mk-digest-iter is 0".into()));
    }
    let digest = KeyDigest {
        hash,
        iterations,
        salt: bytes[at::DIGEST_SALT..at::DIGEST_ITER].to_vec(),
        value: bytes[at::DIGEST..at::DIGEST_SALT].to_vec(),
        keyslots: (0..SLOTS as u32).collect(),
    };
    let mut keyslots = Vec::new();
    for index in 0..SLOTS {
        let s = at::SLOTS + index * SLOT_LEN;
        match be32(bytes, s) {
            SLOT_DISABLED => continue,
            SLOT_ENABLED => {}
            other => {
                return Err(LuksError::Damaged(format!(
                    "key slot {index} has state {other:#x}"
                )))
            }
        }
        let stripes = be32(bytes, s + 44);
        if stripes == 0 {
            return Err(LuksError::Damaged(format!(
                "key slot {index} has 0 stripes"
            )));
        }
        let area_offset = be32(bytes, s + 40) as u64 * SECTOR;
        let area_size = (KEY_LEN as u64 * stripes as u64).div_ceil(SECTOR) * SECTOR;
        if area_offset < HEADER_LEN as u64 || area_offset + area_size > data_offset {
            return Err(LuksError::Damaged(format!(
                "key slot {index} lies outside the header area"
            )));
        }
        let kdf = Kdf::Pbkdf2 {
            hash,
            iterations: be32(bytes, s + 4),
        };
        kdf.check()?;
        keyslots.push(KeySlot {
            index: index as u32,
            kdf,
            salt: bytes[s + 8..s + 40].to_vec(),
            area_offset,
            area_size,
            stripes,
            af_hash: hash,
        });
    }
    Ok(Header {
        version: Version::Luks1,
        uuid: text_field(&bytes[at::UUID..at::SLOTS], "uuid")?,
        data_offset,
        data_size: None,
        sector_size: SECTOR as u32,
        iv_tweak: 0,
        keyslots,
        digest,
        metadata_size: 0,
    })
}

/// The header [`crate::format`] fills in: slot 0 at 4 KiB, the payload at 2 MiB.
pub(crate) fn layout(mut slot: KeySlot, digest: KeyDigest) -> Header {
    slot.area_offset = FIRST_SLOT;
    if let Kdf::Pbkdf2 { hash, .. } = slot.kdf {
        slot.af_hash = hash;
    }
    let digest = KeyDigest {
        hash: slot.af_hash,
        ..digest
    };
    Header {
        version: Version::Luks1,
        uuid: String::new(),
        data_offset: PAYLOAD_OFFSET,
        data_size: None,
        sector_size: SECTOR as u32,
        iv_tweak: 0,
        keyslots: vec![slot],
        digest,
        metadata_size: 0,
    }
}

pub(crate) fn encode(header: &Header, area: &mut [u8]) {
    let out = &mut area[..HEADER_LEN];
    out.fill(0);
    out[..6].copy_from_slice(&MAGIC);
    out[6..8].copy_from_slice(&1u16.to_be_bytes());
    put_text(&mut out[at::CIPHER_NAME..], "aes");
    put_text(&mut out[at::CIPHER_MODE..], "xts-plain64");
    put_text(&mut out[at::HASH..], header.digest.hash.name());
    out[at::PAYLOAD..at::PAYLOAD + 4]
        .copy_from_slice(&((header.data_offset / SECTOR) as u32).to_be_bytes());
    out[at::KEY_BYTES..at::KEY_BYTES + 4].copy_from_slice(&(KEY_LEN as u32).to_be_bytes());
    out[at::DIGEST..at::DIGEST_SALT].copy_from_slice(&header.digest.value);
    out[at::DIGEST_SALT..at::DIGEST_ITER].copy_from_slice(&header.digest.salt);
    out[at::DIGEST_ITER..at::DIGEST_ITER + 4]
        .copy_from_slice(&header.digest.iterations.to_be_bytes());
    put_text(&mut out[at::UUID..], &header.uuid);
    let area_stride = header.keyslots[0].area_size;
    for index in 0..SLOTS {
        let s = at::SLOTS + index * SLOT_LEN;
        // Inactive slots keep the offsets cryptsetup gives them, so a later luksAddKey
        // finds its area where it expects.
        let offset = FIRST_SLOT + index as u64 * area_stride;
        out[s + 40..s + 44].copy_from_slice(&((offset / SECTOR) as u32).to_be_bytes());
        out[s + 44..s + 48].copy_from_slice(&crate::STRIPES.to_be_bytes());
        out[s..s + 4].copy_from_slice(&SLOT_DISABLED.to_be_bytes());
        if let Some(slot) = header
            .keyslots
            .iter()
            .find(|slot| slot.index as usize == index)
        {
            out[s..s + 4].copy_from_slice(&SLOT_ENABLED.to_be_bytes());
            let Kdf::Pbkdf2 { iterations, .. } = slot.kdf else {
                unreachable!("LUKS1 slots are PBKDF2")
            };
            out[s + 4..s + 8].copy_from_slice(&iterations.to_be_bytes());
            out[s + 8..s + 40].copy_from_slice(&slot.salt);
        }
    }
}
