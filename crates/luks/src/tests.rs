use super::*;

const FAST_PBKDF2: Kdf = Kdf::Pbkdf2 {
    hash: Hash::Sha256,
    iterations: 1000,
};
const FAST_ARGON2: Kdf = Kdf::Argon2 {
    kind: Argon2Kind::Argon2id,
    time: 1,
    memory_kib: 64,
    lanes: 1,
};

fn options(version: Version, kdf: Kdf, sector_size: u32) -> FormatOptions {
    FormatOptions {
        version,
        kdf,
        sector_size,
    }
}

fn roundtrip(formatted: &Formatted, passphrase: &[u8]) {
    let header = Header::parse(&formatted.area).unwrap();
    assert_eq!(header, formatted.header);
    let key = header.unlock(&formatted.area, passphrase).unwrap();
    let mut ours = DataCipher::new(&header, &formatted.key).unwrap();
    let mut theirs = DataCipher::new(&header, &key).unwrap();
    let plain = vec![0x5au8; 8192];
    let mut data = plain.clone();
    ours.encrypt(4096, &mut data).unwrap();
    assert_ne!(data, plain);
    theirs.decrypt(4096, &mut data).unwrap();
    assert_eq!(data, plain);
    assert_eq!(
        header.unlock(&formatted.area, b"wrong").unwrap_err(),
        LuksError::WrongPassphrase
    );
}

#[test]
fn formatted_volumes_parse_and_unlock() {
    for (version, kdf, sector) in [
        (Version::Luks1, FAST_PBKDF2, 512),
        (Version::Luks2, FAST_PBKDF2, 512),
        (Version::Luks2, FAST_ARGON2, 512),
        (Version::Luks2, FAST_ARGON2, 4096),
    ] {
        let formatted = format(&options(version, kdf, sector), b"correct horse").unwrap();
        assert_eq!(formatted.header.version, version);
        assert_eq!(formatted.header.sector_size, sector);
        assert_eq!(formatted.header.keyslots[0].kdf, kdf);
        assert_eq!(formatted.area.len() as u64, formatted.header.data_offset);
        roundtrip(&formatted, b"correct horse");
    }
}

#[test]
fn layouts_are_cryptsetups() {
    let luks1 = format(&options(Version::Luks1, FAST_PBKDF2, 512), b"p").unwrap();
    assert_eq!(luks1.header.data_offset, 2 << 20);
    assert_eq!(luks1.header.keyslots[0].area_offset, 4096);
    let luks2 = format(&options(Version::Luks2, FAST_PBKDF2, 512), b"p").unwrap();
    assert_eq!(luks2.header.data_offset, HEADER_AREA);
    assert_eq!(luks2.header.metadata_size, 16 << 10);
    assert_eq!(luks2.header.keyslots[0].area_offset, 32 << 10);
    assert_eq!(&luks2.area[16 << 10..(16 << 10) + 4], b"SKUL");
}

#[test]
fn luks1_refuses_what_it_cannot_hold() {
    assert!(matches!(
        format(&options(Version::Luks1, FAST_ARGON2, 512), b"p"),
        Err(LuksError::Unsupported(_))
    ));
    assert!(matches!(
        format(&options(Version::Luks1, FAST_PBKDF2, 4096), b"p"),
        Err(LuksError::Unsupported(_))
    ));
    assert!(matches!(
        format(&options(Version::Luks2, FAST_PBKDF2, 600), b"p"),
        Err(LuksError::Unsupported(_))
    ));
}

#[test]
fn a_damaged_luks2_primary_falls_back_to_the_secondary() {
    let formatted = format(&options(Version::Luks2, FAST_PBKDF2, 512), b"p").unwrap();
    let mut area = formatted.area.clone();
    area[4096 + 10] ^= 1; // inside the primary's JSON
    let header = Header::parse(&area).unwrap();
    assert_eq!(header.uuid, formatted.header.uuid);
    header.unlock(&area, b"p").unwrap();
    area[(16 << 10) + 4096 + 10] ^= 1; // and the secondary's
    assert!(matches!(Header::parse(&area), Err(LuksError::Damaged(m)) if m.contains("checksum")));
    // A primary that is gone entirely: the secondary alone is found at its offset.
    let mut area = formatted.area.clone();
    area[..4096].fill(0);
    assert_eq!(Header::parse(&area).unwrap().uuid, formatted.header.uuid);
}

#[test]
fn the_splitter_round_trips_and_depends_on_every_stripe() {
    let key = [7u8; KEY_LEN];
    for hash in [Hash::Sha1, Hash::Sha256, Hash::Sha512] {
        let mut split = af::split(&key, 40, hash).unwrap();
        assert_eq!(&af::merge(&split, KEY_LEN, 40, hash)[..], &key[..]);
        split[3] ^= 1;
        assert_ne!(&af::merge(&split, KEY_LEN, 40, hash)[..], &key[..]);
    }
}

#[test]
fn sectors_must_be_whole() {
    let formatted = format(&options(Version::Luks2, FAST_PBKDF2, 4096), b"p").unwrap();
    let mut cipher = DataCipher::new(&formatted.header, &formatted.key).unwrap();
    assert!(matches!(
        cipher.encrypt(512, &mut [0u8; 4096]),
        Err(LuksError::Misaligned(_))
    ));
    assert!(matches!(
        cipher.encrypt(0, &mut [0u8; 512]),
        Err(LuksError::Misaligned(_))
    ));
}

#[test]
fn the_4k_iv_counts_512_byte_sectors() {
    let formatted = format(&options(Version::Luks2, FAST_PBKDF2, 4096), b"p").unwrap();
    let mut cipher = DataCipher::new(&formatted.header, &formatted.key).unwrap();
    let mut xts = formatted.key.xts().unwrap();
    let mut a = vec![1u8; 4096];
    let mut b = a.clone();
    cipher.encrypt(8192, &mut a).unwrap();
    xts.encrypt(16, &mut b).unwrap();
    assert_eq!(a, b);
}

#[test]
fn keys_are_not_printed() {
    let formatted = format(&options(Version::Luks2, FAST_PBKDF2, 512), b"p").unwrap();
    assert_eq!(format!("{:?}", formatted.key), "VolumeKey(<redacted>)");
    assert!(!format!("{formatted:?}").contains("p\""));
}

#[test]
fn hostile_kdf_costs_are_refused_before_any_work() {
    let huge = Kdf::Argon2 {
        kind: Argon2Kind::Argon2id,
        time: 4,
        memory_kib: 4 << 20,
        lanes: 4,
    };
    assert!(matches!(huge.check(), Err(LuksError::Unsupported(_))));
    let zero = Kdf::Pbkdf2 {
        hash: Hash::Sha256,
        iterations: 0,
    };
    assert!(matches!(zero.check(), Err(LuksError::Unsupported(_))));
}

/// What the fuzz target checks, deterministically: truncations and single-byte changes of
/// valid headers never panic.
#[test]
fn parsing_never_panics_on_damaged_headers() {
    for version in [Version::Luks1, Version::Luks2] {
        let formatted = format(&options(version, FAST_PBKDF2, 512), b"p").unwrap();
        let area = &formatted.area;
        let limit = if version == Version::Luks1 {
            600
        } else {
            4096 + 900
        };
        for len in (0..limit).step_by(7) {
            let _ = Header::parse(&area[..len]);
        }
        let mut copy = area.clone();
        for at in (0..limit).step_by(3) {
            for bit in [0x01u8, 0x80] {
                copy[at] ^= bit;
                let _ = Header::parse(&copy);
                copy[at] ^= bit;
            }
        }
    }
}
