//! LUKS2: two binary headers, each followed by JSON metadata, each with a checksum over
//! both (LUKS2 On-Disk Format Specification 1.1.x).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{json, Map, Value};

use crate::kdf::Argon2Kind;
use crate::{
    be64, check_sector_size, put_text, random, text_field, Hash, Header, Kdf, KeyDigest, KeySlot,
    LuksError, Version, CIPHER, KEY_LEN, SECTOR,
};

const PRIMARY_MAGIC: [u8; 6] = *b"LUKS\xba\xbe";
const SECONDARY_MAGIC: [u8; 6] = *b"SKUL\xba\xbe";
const BINARY_LEN: usize = 4096;
/// The sizes a binary header plus its JSON area may have; the secondary copy starts at
/// the primary's size.
const METADATA_SIZES: [u64; 9] = [
    16 << 10,
    32 << 10,
    64 << 10,
    128 << 10,
    256 << 10,
    512 << 10,
    1 << 20,
    2 << 20,
    4 << 20,
];
/// cryptsetup's defaults: 16 KiB of metadata per copy, key slots after both copies, the
/// data segment at 16 MiB.
const METADATA_SIZE: u64 = 16 << 10;
pub(crate) const DATA_OFFSET: u64 = 16 << 20;

mod at {
    pub(super) const VERSION: usize = 6;
    pub(super) const HDR_SIZE: usize = 8;
    pub(super) const SEQID: usize = 16;
    pub(super) const CSUM_ALG: usize = 72;
    pub(super) const SALT: usize = 104;
    pub(super) const UUID: usize = 168;
    pub(super) const SUBSYSTEM: usize = 208;
    pub(super) const HDR_OFFSET: usize = 256;
    pub(super) const CSUM: usize = 448;
    pub(super) const CSUM_END: usize = 512;
}

/// One verified copy: its sequence number, UUID and metadata.
struct Copy {
    seqid: u64,
    size: u64,
    uuid: String,
    json: Value,
}

pub(crate) fn parse(bytes: &[u8]) -> Result<Header, LuksError> {
    let primary = has_magic(bytes, 0, &PRIMARY_MAGIC).then(|| read_copy(bytes, 0, &PRIMARY_MAGIC));
    let secondary_at: Vec<u64> = match &primary {
        Some(Ok(copy)) => vec![copy.size],
        _ => METADATA_SIZES.to_vec(),
    };
    let mut secondary = None;
    for offset in secondary_at {
        if has_magic(bytes, offset, &SECONDARY_MAGIC) {
            secondary = Some(read_copy(bytes, offset, &SECONDARY_MAGIC));
            break;
        }
    }
    let chosen = match (primary, secondary) {
        (None, None) => return Err(LuksError::NotLuks),
        (Some(Ok(a)), Some(Ok(b))) => {
            if b.seqid > a.seqid {
                b
            } else {
                a
            }
        }
        (Some(Ok(a)), _) => a,
        (_, Some(Ok(b))) => b,
        (Some(Err(e)), _) | (None, Some(Err(e))) => return Err(e),
    };
    interpret(chosen)
}

fn has_magic(bytes: &[u8], offset: u64, magic: &[u8; 6]) -> bool {
    let at = offset as usize;
    bytes.len() >= at + 8
        && bytes[at..at + 6] == *magic
        && u16::from_be_bytes([bytes[at + at::VERSION], bytes[at + at::VERSION + 1]]) == 2
}

fn read_copy(bytes: &[u8], offset: u64, magic: &[u8; 6]) -> Result<Copy, LuksError> {
    let at = offset as usize;
    if bytes.len() < at + BINARY_LEN {
        return Err(LuksError::Truncated((at + BINARY_LEN) as u64));
    }
    let binary = &bytes[at..at + BINARY_LEN];
    debug_assert_eq!(binary[..6], *magic);
    let size = be64(binary, at::HDR_SIZE);
    if !METADATA_SIZES.contains(&size) {
        return Err(LuksError::Damaged(format!("header size {size}")));
    }
    if be64(binary, at::HDR_OFFSET) != offset {
        return Err(LuksError::Damaged(format!(
            "the header at {offset} says it is elsewhere"
        )));
    }
    let end = at + size as usize;
    if bytes.len() < end {
        return Err(LuksError::Truncated(end as u64));
    }
    let hash = Hash::parse(&text_field(
        &binary[at::CSUM_ALG..at::SALT],
        "checksum_alg",
    )?)?;
    let mut copy = bytes[at..end].to_vec();
    copy[at::CSUM..at::CSUM_END].fill(0);
    let computed = aws_lc_rs::digest::digest(hash.algorithm(), &copy);
    if computed.as_ref() != &binary[at::CSUM..at::CSUM + hash.len()] {
        return Err(LuksError::Damaged(format!(
            "the header at {offset} fails its checksum"
        )));
    }
    let area = &bytes[at + BINARY_LEN..end];
    let json_end = area.iter().position(|&b| b == 0).unwrap_or(area.len());
    let json: Value = serde_json::from_slice(&area[..json_end])
        .map_err(|e| LuksError::Damaged(format!("the JSON metadata: {e}")))?;
    Ok(Copy {
        seqid: be64(binary, at::SEQID),
        size,
        uuid: text_field(&binary[at::UUID..at::SUBSYSTEM], "uuid")?,
        json,
    })
}

fn field<'a>(v: &'a Value, path: &str, key: &str) -> Result<&'a Value, LuksError> {
    v.get(key)
        .ok_or_else(|| LuksError::Damaged(format!("{path}.{key} is missing")))
}

fn object<'a>(v: &'a Value, path: &str, key: &str) -> Result<&'a Map<String, Value>, LuksError> {
    field(v, path, key)?
        .as_object()
        .ok_or_else(|| LuksError::Damaged(format!("{path}.{key} is not an object")))
}

fn text<'a>(v: &'a Value, path: &str, key: &str) -> Result<&'a str, LuksError> {
    field(v, path, key)?
        .as_str()
        .ok_or_else(|| LuksError::Damaged(format!("{path}.{key} is not a string")))
}

/// LUKS2 writes 64-bit numbers as decimal strings.
fn big(v: &Value, path: &str, key: &str) -> Result<u64, LuksError> {
    text(v, path, key)?
        .parse()
        .map_err(|_| LuksError::Damaged(format!("{path}.{key} is not a decimal number")))
}

fn small(v: &Value, path: &str, key: &str) -> Result<u32, LuksError> {
    field(v, path, key)?
        .as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| LuksError::Damaged(format!("{path}.{key} is not a 32-bit number")))
}

fn base64(v: &Value, path: &str, key: &str) -> Result<Vec<u8>, LuksError> {
    B64.decode(text(v, path, key)?)
        .map_err(|_| LuksError::Damaged(format!("{path}.{key} is not base64")))
}

fn index(key: &str, path: &str) -> Result<u32, LuksError> {
    key.parse()
        .map_err(|_| LuksError::Damaged(format!("{path} has a non-numeric key {key:?}")))
}

fn interpret(copy: Copy) -> Result<Header, LuksError> {
    let root = &copy.json;
    if let Some(mandatory) = root
        .pointer("/config/requirements/mandatory")
        .and_then(Value::as_array)
    {
        if !mandatory.is_empty() {
            return Err(LuksError::Unsupported(format!(
                "requirements {mandatory:?} (a reencryption in progress?)"
            )));
        }
    }
    let segments = object(root, "", "segments")?;
    if segments.len() != 1 {
        return Err(LuksError::Unsupported(format!(
            "{} data segments",
            segments.len()
        )));
    }
    let (segment_key, segment) = segments.iter().next().expect("one segment");
    let path = format!("segments.{segment_key}");
    if text(segment, &path, "type")? != "crypt" {
        return Err(LuksError::Unsupported(format!(
            "{path} of type {:?}",
            segment["type"]
        )));
    }
    let encryption = text(segment, &path, "encryption")?;
    if encryption != CIPHER {
        return Err(LuksError::Unsupported(format!("cipher {encryption}")));
    }
    if segment.get("integrity").is_some() {
        return Err(LuksError::Unsupported(
            "authenticated encryption (dm-integrity)".into(),
        ));
    }
    let sector_size = small(segment, &path, "sector_size")?;
    check_sector_size(sector_size)?;
    let data_offset = big(segment, &path, "offset")?;
    if data_offset < 2 * copy.size || !data_offset.is_multiple_of(SECTOR) {
        return Err(LuksError::Damaged(format!("{path}.offset {data_offset}")));
    }
    let data_size = match text(segment, &path, "size")? {
        "dynamic" => None,
        _ => Some(big(segment, &path, "size")?),
    };
    let iv_tweak = big(segment, &path, "iv_tweak")?;

    let digest = object(root, "", "digests")?
        .iter()
        .find(|(_, d)| {
            d.get("segments")
                .and_then(Value::as_array)
                .is_some_and(|s| s.iter().any(|s| s.as_str() == Some(segment_key)))
        })
        .ok_or_else(|| LuksError::Damaged(format!("no digest covers segment {segment_key}")))?;
    let digest = read_digest(digest.0, digest.1)?;

    let mut keyslots = Vec::new();
    for (key, slot) in object(root, "", "keyslots")? {
        keyslots.push(read_keyslot(key, slot, copy.size, data_offset)?);
    }
    keyslots.sort_by_key(|slot| slot.index);
    Ok(Header {
        version: Version::Luks2,
        uuid: copy.uuid,
        data_offset,
        data_size,
        sector_size,
        iv_tweak,
        keyslots,
        digest,
        metadata_size: copy.size,
    })
}

fn read_digest(key: &str, d: &Value) -> Result<KeyDigest, LuksError> {
    let path = format!("digests.{key}");
    let kind = text(d, &path, "type")?;
    if kind != "pbkdf2" {
        return Err(LuksError::Unsupported(format!("digest type {kind}")));
    }
    let keyslots = field(d, &path, "keyslots")?
        .as_array()
        .ok_or_else(|| LuksError::Damaged(format!("{path}.keyslots is not an array")))?
        .iter()
        .map(|k| {
            k.as_str()
                .ok_or_else(|| LuksError::Damaged(format!("{path}.keyslots")))
                .and_then(|k| index(k, &path))
        })
        .collect::<Result<Vec<u32>, LuksError>>()?;
    let hash = Hash::parse(text(d, &path, "hash")?)?;
    let iterations = small(d, &path, "iterations")?;
    Kdf::Pbkdf2 { hash, iterations }.check()?;
    let value = base64(d, &path, "digest")?;
    if value.is_empty() || value.len() > 64 {
        return Err(LuksError::Damaged(format!(
            "{path}.digest has {} bytes",
            value.len()
        )));
    }
    Ok(KeyDigest {
        hash,
        iterations,
        salt: base64(d, &path, "salt")?,
        value,
        keyslots,
    })
}

fn read_keyslot(
    key: &str,
    slot: &Value,
    metadata_size: u64,
    data_offset: u64,
) -> Result<KeySlot, LuksError> {
    let path = format!("keyslots.{key}");
    let index = index(key, "keyslots")?;
    let kind = text(slot, &path, "type")?;
    if kind != "luks2" {
        return Err(LuksError::Unsupported(format!("{path} of type {kind}")));
    }
    if small(slot, &path, "key_size")? as usize != KEY_LEN {
        return Err(LuksError::Unsupported(format!(
            "{path}: a key other than {} bits",
            KEY_LEN * 8
        )));
    }
    let area = field(slot, &path, "area")?;
    let area_path = format!("{path}.area");
    if text(area, &area_path, "type")? != "raw" || text(area, &area_path, "encryption")? != CIPHER {
        return Err(LuksError::Unsupported(format!(
            "{area_path}: only raw {CIPHER} areas"
        )));
    }
    if small(area, &area_path, "key_size")? as usize != KEY_LEN {
        return Err(LuksError::Unsupported(format!(
            "{area_path}: a key other than {} bits",
            KEY_LEN * 8
        )));
    }
    let af = field(slot, &path, "af")?;
    let af_path = format!("{path}.af");
    if text(af, &af_path, "type")? != "luks1" {
        return Err(LuksError::Unsupported(format!(
            "{af_path}: only the luks1 splitter"
        )));
    }
    let stripes = small(af, &af_path, "stripes")?;
    if stripes == 0 || stripes > crate::STRIPES {
        return Err(LuksError::Damaged(format!("{af_path}.stripes {stripes}")));
    }
    let area_offset = big(area, &area_path, "offset")?;
    let area_size = big(area, &area_path, "size")?;
    let needed = (KEY_LEN as u64 * stripes as u64).div_ceil(SECTOR) * SECTOR;
    if area_size < needed
        || area_offset < 2 * metadata_size
        || area_offset
            .checked_add(area_size)
            .is_none_or(|end| end > data_offset)
    {
        return Err(LuksError::Damaged(format!(
            "{area_path} lies outside the key slot area"
        )));
    }
    let kdf_value = field(slot, &path, "kdf")?;
    let kdf_path = format!("{path}.kdf");
    let kdf = match text(kdf_value, &kdf_path, "type")? {
        "pbkdf2" => Kdf::Pbkdf2 {
            hash: Hash::parse(text(kdf_value, &kdf_path, "hash")?)?,
            iterations: small(kdf_value, &kdf_path, "iterations")?,
        },
        name @ ("argon2i" | "argon2id") => Kdf::Argon2 {
            kind: if name == "argon2i" {
                Argon2Kind::Argon2i
            } else {
                Argon2Kind::Argon2id
            },
            time: small(kdf_value, &kdf_path, "time")?,
            memory_kib: small(kdf_value, &kdf_path, "memory")?,
            lanes: small(kdf_value, &kdf_path, "cpus")?,
        },
        other => {
            return Err(LuksError::Unsupported(format!(
                "{kdf_path} of type {other}"
            )))
        }
    };
    kdf.check()?;
    Ok(KeySlot {
        index,
        kdf,
        salt: base64(kdf_value, &kdf_path, "salt")?,
        area_offset,
        area_size,
        stripes,
        af_hash: Hash::parse(text(af, &af_path, "hash")?)?,
    })
}

/// The header [`crate::format`] fills in: slot 0 after both metadata copies.
pub(crate) fn layout(mut slot: KeySlot, digest: KeyDigest, sector_size: u32) -> Header {
    slot.area_offset = 2 * METADATA_SIZE;
    Header {
        version: Version::Luks2,
        uuid: String::new(),
        data_offset: DATA_OFFSET,
        data_size: None,
        sector_size,
        iv_tweak: 0,
        keyslots: vec![slot],
        digest,
        metadata_size: METADATA_SIZE,
    }
}

fn kdf_json(kdf: &Kdf, salt: &[u8]) -> Value {
    match *kdf {
        Kdf::Pbkdf2 { hash, iterations } => {
            json!({"type": "pbkdf2", "hash": hash.name(), "iterations": iterations, "salt": B64.encode(salt)})
        }
        Kdf::Argon2 {
            time,
            memory_kib,
            lanes,
            ..
        } => json!({
            "type": kdf.name(), "time": time, "memory": memory_kib, "cpus": lanes, "salt": B64.encode(salt),
        }),
    }
}

fn metadata(header: &Header) -> Value {
    let mut keyslots = Map::new();
    for slot in &header.keyslots {
        keyslots.insert(
            slot.index.to_string(),
            json!({
                "type": "luks2",
                "key_size": KEY_LEN,
                "af": {"type": "luks1", "stripes": slot.stripes, "hash": slot.af_hash.name()},
                "area": {
                    "type": "raw",
                    "offset": slot.area_offset.to_string(),
                    "size": slot.area_size.to_string(),
                    "encryption": CIPHER,
                    "key_size": KEY_LEN,
                },
                "kdf": kdf_json(&slot.kdf, &slot.salt),
            }),
        );
    }
    let digest = &header.digest;
    let slots: Vec<String> = digest.keyslots.iter().map(u32::to_string).collect();
    json!({
        "keyslots": keyslots,
        "tokens": {},
        "segments": {"0": {
            "type": "crypt",
            "offset": header.data_offset.to_string(),
            "size": "dynamic",
            "iv_tweak": header.iv_tweak.to_string(),
            "encryption": CIPHER,
            "sector_size": header.sector_size,
        }},
        "digests": {"0": {
            "type": "pbkdf2",
            "keyslots": slots,
            "segments": ["0"],
            "hash": digest.hash.name(),
            "iterations": digest.iterations,
            "salt": B64.encode(&digest.salt),
            "digest": B64.encode(&digest.value),
        }},
        "config": {
            "json_size": (header.metadata_size - BINARY_LEN as u64).to_string(),
            "keyslots_size": (header.data_offset - 2 * header.metadata_size).to_string(),
        },
    })
}

/// Writes both copies (sequence number 1) into the header area.
pub(crate) fn encode(header: &Header, area: &mut [u8]) -> Result<(), LuksError> {
    let json = serde_json::to_vec(&metadata(header)).expect("JSON values serialize");
    let size = header.metadata_size as usize;
    if json.len() >= size - BINARY_LEN {
        return Err(LuksError::Unsupported(
            "metadata larger than its area".into(),
        ));
    }
    for (offset, magic) in [(0usize, PRIMARY_MAGIC), (size, SECONDARY_MAGIC)] {
        let copy = &mut area[offset..offset + size];
        copy.fill(0);
        copy[..6].copy_from_slice(&magic);
        copy[at::VERSION..at::VERSION + 2].copy_from_slice(&2u16.to_be_bytes());
        copy[at::HDR_SIZE..at::HDR_SIZE + 8].copy_from_slice(&(size as u64).to_be_bytes());
        copy[at::SEQID..at::SEQID + 8].copy_from_slice(&1u64.to_be_bytes());
        put_text(&mut copy[at::CSUM_ALG..at::SALT], Hash::Sha256.name());
        random(&mut copy[at::SALT..at::UUID])?;
        put_text(&mut copy[at::UUID..at::SUBSYSTEM], &header.uuid);
        copy[at::HDR_OFFSET..at::HDR_OFFSET + 8].copy_from_slice(&(offset as u64).to_be_bytes());
        copy[BINARY_LEN..BINARY_LEN + json.len()].copy_from_slice(&json);
        let checksum = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, copy);
        copy[at::CSUM..at::CSUM + 32].copy_from_slice(checksum.as_ref());
    }
    Ok(())
}
