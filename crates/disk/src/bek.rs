//! The BEK VOLUME: a small FAT16 image, labelled `BEK VOLUME`, holding one passphrase
//! file per encrypted volume under its long name, as the guest mounts it at
//! `/mnt/azure_bek_disk`. Built in memory (wiped on drop) and served read-only over NBD
//! while the machine runs; never written to the data directory.

use zeroize::Zeroizing;

const SECTOR: usize = 512;
/// 4 MiB: enough clusters (one sector each) to be FAT16, as FAT12 tools need no care.
const SECTORS: usize = 8192;
const RESERVED: usize = 1;
const FATS: usize = 2;
const FAT_SECTORS: usize = 32;
const ROOT_ENTRIES: usize = 512;
const ROOT_SECTORS: usize = ROOT_ENTRIES * 32 / SECTOR;
const FIRST_DATA: usize = RESERVED + FATS * FAT_SECTORS + ROOT_SECTORS;
const ATTR_READ_ONLY: u8 = 0x01;
const ATTR_VOLUME_ID: u8 = 0x08;
const ATTR_ARCHIVE: u8 = 0x20;
const ATTR_LONG_NAME: u8 = 0x0F;
/// 2026-01-01 00:00 in FAT's date format: a fixed stamp, so an image says nothing of
/// when it was made.
const FAT_DATE: u16 = ((2026 - 1980) << 9) | (1 << 5) | 1;

/// Builds the image holding `files` (name, content). Names are long names of at most 255
/// characters; each file takes whole 512-byte clusters.
pub(crate) fn image(label: &str, files: &[(String, &[u8])]) -> Result<Zeroizing<Vec<u8>>, String> {
    let mut out = Zeroizing::new(vec![0u8; SECTORS * SECTOR]);
    boot_sector(&mut out[..SECTOR], label);
    let clusters = SECTORS - FIRST_DATA;
    let mut fat = vec![0u16; FAT_SECTORS * SECTOR / 2];
    fat[0] = 0xFFF8;
    fat[1] = 0xFFFF;
    let mut entries: Vec<[u8; 32]> = vec![short_entry(&padded_label(label), ATTR_VOLUME_ID, 0, 0)];
    let mut next_cluster = 2usize;
    for (i, (name, content)) in files.iter().enumerate() {
        if name.is_empty() || name.chars().count() > 255 {
            return Err(format!("'{name}' cannot be a FAT long name"));
        }
        let needed = content.len().div_ceil(SECTOR).max(1);
        if next_cluster - 2 + needed > clusters {
            return Err("the BEK VOLUME is full".into());
        }
        let first = next_cluster;
        let last = first + needed - 1;
        for (c, entry) in fat.iter_mut().enumerate().take(last + 1).skip(first) {
            *entry = if c < last { (c + 1) as u16 } else { 0xFFFF };
        }
        let at = (FIRST_DATA + first - 2) * SECTOR;
        out[at..at + content.len()].copy_from_slice(content);
        next_cluster += needed;
        let short = short_name(i);
        entries.extend(long_name_entries(name, &short));
        entries.push(short_entry(
            &short,
            ATTR_ARCHIVE | ATTR_READ_ONLY,
            first as u16,
            content.len() as u32,
        ));
    }
    if entries.len() > ROOT_ENTRIES {
        return Err("too many files for the BEK VOLUME's root directory".into());
    }
    for copy in 0..FATS {
        let at = (RESERVED + copy * FAT_SECTORS) * SECTOR;
        for (i, entry) in fat.iter().enumerate() {
            out[at + 2 * i..at + 2 * i + 2].copy_from_slice(&entry.to_le_bytes());
        }
    }
    let root = (RESERVED + FATS * FAT_SECTORS) * SECTOR;
    for (i, entry) in entries.iter().enumerate() {
        out[root + 32 * i..root + 32 * (i + 1)].copy_from_slice(entry);
    }
    Ok(out)
}

fn padded_label(label: &str) -> [u8; 11] {
    let mut name = [b' '; 11];
    for (slot, b) in name.iter_mut().zip(label.bytes()) {
        *slot = b.to_ascii_uppercase();
    }
    name
}

fn boot_sector(out: &mut [u8], label: &str) {
    out[..3].copy_from_slice(&[0xEB, 0x3C, 0x90]);
    out[3..11].copy_from_slice(b"MSWIN4.1");
    out[11..13].copy_from_slice(&(SECTOR as u16).to_le_bytes());
    out[13] = 1; // sectors per cluster
    out[14..16].copy_from_slice(&(RESERVED as u16).to_le_bytes());
    out[16] = FATS as u8;
    out[17..19].copy_from_slice(&(ROOT_ENTRIES as u16).to_le_bytes());
    out[19..21].copy_from_slice(&(SECTORS as u16).to_le_bytes());
    out[21] = 0xF8; // fixed disk
    out[22..24].copy_from_slice(&(FAT_SECTORS as u16).to_le_bytes());
    out[24..26].copy_from_slice(&32u16.to_le_bytes()); // sectors per track
    out[26..28].copy_from_slice(&64u16.to_le_bytes()); // heads
    out[36] = 0x80; // drive number
    out[38] = 0x29; // extended boot signature
    out[39..43].copy_from_slice(&0x4245_4b31u32.to_le_bytes()); // volume id
    out[43..54].copy_from_slice(&padded_label(label));
    out[54..62].copy_from_slice(b"FAT16   ");
    out[510] = 0x55;
    out[511] = 0xAA;
}

/// A unique 8.3 name behind each long name (`BEK00001`).
fn short_name(index: usize) -> [u8; 11] {
    let mut name = [b' '; 11];
    name[..8].copy_from_slice(format!("BEK{:05}", index + 1).as_bytes());
    name
}

fn short_entry(name: &[u8; 11], attr: u8, cluster: u16, size: u32) -> [u8; 32] {
    let mut e = [0u8; 32];
    e[..11].copy_from_slice(name);
    e[11] = attr;
    e[16..18].copy_from_slice(&FAT_DATE.to_le_bytes()); // created
    e[18..20].copy_from_slice(&FAT_DATE.to_le_bytes()); // accessed
    e[24..26].copy_from_slice(&FAT_DATE.to_le_bytes()); // modified
    e[26..28].copy_from_slice(&cluster.to_le_bytes());
    e[28..32].copy_from_slice(&size.to_le_bytes());
    e
}

/// VFAT's checksum of the short name, which each long-name entry carries.
fn checksum(short: &[u8; 11]) -> u8 {
    short.iter().fold(0u8, |sum, &c| {
        ((sum & 1) << 7).wrapping_add(sum >> 1).wrapping_add(c)
    })
}

/// The long-name entries of `name`, in the order they are stored (last part first).
fn long_name_entries(name: &str, short: &[u8; 11]) -> Vec<[u8; 32]> {
    let mut units: Vec<u16> = name.encode_utf16().collect();
    if !units.len().is_multiple_of(13) {
        units.push(0);
        while !units.len().is_multiple_of(13) {
            units.push(0xFFFF);
        }
    }
    let parts = units.len() / 13;
    let sum = checksum(short);
    (0..parts)
        .rev()
        .map(|part| {
            let chars = &units[part * 13..part * 13 + 13];
            let mut e = [0u8; 32];
            e[0] = (part + 1) as u8 | if part + 1 == parts { 0x40 } else { 0 };
            e[11] = ATTR_LONG_NAME;
            e[13] = sum;
            let slots = (1..11)
                .step_by(2)
                .chain((14..26).step_by(2))
                .chain((28..32).step_by(2));
            for (slot, unit) in slots.zip(chars) {
                e[slot..slot + 2].copy_from_slice(&unit.to_le_bytes());
            }
            e
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_image_is_labelled_fat16_with_its_files() {
        let files = [
            ("LinuxPassPhraseFileName".to_owned(), &b"first"[..]),
            ("LinuxPassPhraseFileName_1_0".to_owned(), &[7u8; 600][..]),
        ];
        let img = image("BEK VOLUME", &files).unwrap();
        assert_eq!(img.len(), SECTORS * SECTOR);
        assert_eq!(&img[43..54], b"BEK VOLUME ");
        assert_eq!(&img[510..512], &[0x55, 0xAA]);
        // The second file spans two clusters, chained in both FATs.
        let fat = RESERVED * SECTOR;
        assert_eq!(u16::from_le_bytes([img[fat + 6], img[fat + 7]]), 4);
        let fat2 = (RESERVED + FAT_SECTORS) * SECTOR;
        assert_eq!(img[fat..fat + 16], img[fat2..fat2 + 16]);
        let data = FIRST_DATA * SECTOR;
        assert_eq!(&img[data..data + 5], b"first");
        assert_eq!(img[data + SECTOR..data + SECTOR + 600], [7u8; 600]);
    }

    #[test]
    fn long_names_carry_the_short_names_checksum() {
        let short = short_name(0);
        let entries = long_name_entries("LinuxPassPhraseFileName", &short);
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0][0], 0x42);
        assert_eq!(entries[1][0], 0x01);
        assert!(entries
            .iter()
            .all(|e| e[13] == checksum(&short) && e[11] == ATTR_LONG_NAME));
    }

    #[test]
    fn what_does_not_fit_is_refused() {
        assert!(image("BEK VOLUME", &[(String::new(), &b"x"[..])]).is_err());
        let big = vec![0u8; SECTORS * SECTOR];
        assert!(image("BEK VOLUME", &[("a".to_owned(), &big[..])]).is_err());
    }
}
