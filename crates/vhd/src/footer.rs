//! The 512-byte footer of a fixed VHD (Microsoft's Virtual Hard Disk Image Format
//! Specification, "Hard Disk Footer Format").

use thiserror::Error;

/// Length of the footer, which follows the data of a fixed VHD.
pub const FOOTER_LEN: usize = 512;

/// `conectix`.
const COOKIE: &[u8; 8] = b"conectix";
/// Features: the reserved bit, always set.
const FEATURES: u32 = 2;
/// File format version 1.0.
const FORMAT_VERSION: u32 = 0x0001_0000;
/// The data offset of a fixed disk: none.
const FIXED_DATA_OFFSET: u64 = u64::MAX;
/// Disk type 2: fixed.
const FIXED: u32 = 2;
/// Creator application `win `: readers (qemu's `vpc` driver among them) take the disk's
/// size from `current_size`, not from the CHS geometry, which can only approximate it.
const CREATOR_APP: &[u8; 4] = b"win ";
/// Creator version 10.0.
const CREATOR_VERSION: u32 = 0x000a_0000;
/// Creator host OS `Wi2k`.
const CREATOR_HOST: &[u8; 4] = b"Wi2k";
/// Seconds from the Unix epoch to the VHD epoch, 2000-01-01T00:00:00Z.
const VHD_EPOCH: i64 = 946_684_800;

/// Why a footer is not that of a fixed VHD this server takes.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FooterError {
    /// Not 512 bytes.
    #[error("a VHD footer is 512 bytes; this one is {0}")]
    Length(usize),
    /// The cookie is not `conectix`.
    #[error("the VHD footer's cookie is not 'conectix'")]
    Cookie,
    /// The checksum does not match the footer's bytes.
    #[error("the VHD footer's checksum is {stored:#010x}; its bytes sum to {computed:#010x}")]
    Checksum {
        /// As stored.
        stored: u32,
        /// As computed.
        computed: u32,
    },
    /// The disk is not a fixed VHD (dynamic and differencing disks are not taken).
    #[error("the VHD is of disk type {0}; only fixed VHDs (type 2) are accepted")]
    NotFixed(u32),
    /// The size is not a whole number of 512-byte sectors.
    #[error("the VHD's current size {0} is not a multiple of 512")]
    Size(u64),
}

/// A fixed VHD footer: what a reader needs to take the disk at its size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Footer {
    /// The disk's size in bytes (`Current Size`).
    pub current_size: u64,
    /// `Original Size`, as written when the disk was created.
    pub original_size: u64,
    /// `Time Stamp`, seconds since the Unix epoch.
    pub created: i64,
    /// `Unique Id`.
    pub unique_id: [u8; 16],
    /// Cylinders, heads, sectors per track.
    pub geometry: (u16, u8, u8),
}

impl Footer {
    /// The footer of a fixed disk of `size` bytes (a multiple of 512), created at `created`
    /// (Unix seconds), identified by `unique_id`.
    pub fn fixed(size: u64, created: i64, unique_id: [u8; 16]) -> Self {
        Footer {
            current_size: size,
            original_size: size,
            created,
            unique_id,
            geometry: geometry(size),
        }
    }

    /// The 512 bytes of this footer, checksum included.
    pub fn encode(&self) -> [u8; FOOTER_LEN] {
        let mut f = [0u8; FOOTER_LEN];
        f[0..8].copy_from_slice(COOKIE);
        f[8..12].copy_from_slice(&FEATURES.to_be_bytes());
        f[12..16].copy_from_slice(&FORMAT_VERSION.to_be_bytes());
        f[16..24].copy_from_slice(&FIXED_DATA_OFFSET.to_be_bytes());
        let stamp = (self.created - VHD_EPOCH).clamp(0, i64::from(u32::MAX)) as u32;
        f[24..28].copy_from_slice(&stamp.to_be_bytes());
        f[28..32].copy_from_slice(CREATOR_APP);
        f[32..36].copy_from_slice(&CREATOR_VERSION.to_be_bytes());
        f[36..40].copy_from_slice(CREATOR_HOST);
        f[40..48].copy_from_slice(&self.original_size.to_be_bytes());
        f[48..56].copy_from_slice(&self.current_size.to_be_bytes());
        let (cylinders, heads, sectors) = self.geometry;
        f[56..58].copy_from_slice(&cylinders.to_be_bytes());
        f[58] = heads;
        f[59] = sectors;
        f[60..64].copy_from_slice(&FIXED.to_be_bytes());
        f[68..84].copy_from_slice(&self.unique_id);
        let sum = checksum(&f);
        f[64..68].copy_from_slice(&sum.to_be_bytes());
        f
    }

    /// Parses and checks the footer of a fixed VHD: cookie, checksum, disk type, size.
    pub fn parse(bytes: &[u8]) -> Result<Self, FooterError> {
        let f: &[u8; FOOTER_LEN] = bytes
            .try_into()
            .map_err(|_| FooterError::Length(bytes.len()))?;
        if &f[0..8] != COOKIE {
            return Err(FooterError::Cookie);
        }
        let u32_at = |i: usize| u32::from_be_bytes([f[i], f[i + 1], f[i + 2], f[i + 3]]);
        let u64_at = |i: usize| (u64::from(u32_at(i)) << 32) | u64::from(u32_at(i + 4));
        let stored = u32_at(64);
        let computed = checksum(f);
        if stored != computed {
            return Err(FooterError::Checksum { stored, computed });
        }
        let disk_type = u32_at(60);
        if disk_type != FIXED {
            return Err(FooterError::NotFixed(disk_type));
        }
        let current_size = u64_at(48);
        if current_size % 512 != 0 {
            return Err(FooterError::Size(current_size));
        }
        let mut unique_id = [0u8; 16];
        unique_id.copy_from_slice(&f[68..84]);
        Ok(Footer {
            current_size,
            original_size: u64_at(40),
            created: VHD_EPOCH + i64::from(u32_at(24)),
            unique_id,
            geometry: (u16::from_be_bytes([f[56], f[57]]), f[58], f[59]),
        })
    }
}

/// The one's complement of the sum of the footer's bytes, its checksum field read as zero.
fn checksum(f: &[u8; FOOTER_LEN]) -> u32 {
    let sum = f
        .iter()
        .enumerate()
        .filter(|(i, _)| !(64..68).contains(i))
        .fold(0u32, |sum, (_, b)| sum.wrapping_add(u32::from(*b)));
    !sum
}

/// The CHS geometry the VHD specification assigns a disk of `size` bytes (its appendix
/// "CHS Calculation"); capped at 65535 × 16 × 255 sectors.
fn geometry(size: u64) -> (u16, u8, u8) {
    let total = (size / 512).min(65_535 * 16 * 255);
    let (sectors, heads, cylinders_times_heads) = if total >= 65_535 * 16 * 63 {
        (255, 16, total / 255)
    } else {
        let mut sectors = 17;
        let mut cth = total / sectors;
        let mut heads = cth.div_ceil(1024).max(4);
        if cth >= heads * 1024 || heads > 16 {
            sectors = 31;
            heads = 16;
            cth = total / sectors;
        }
        if cth >= heads * 1024 {
            sectors = 63;
            heads = 16;
            cth = total / sectors;
        }
        (sectors, heads, cth)
    };
    (
        (cylinders_times_heads / heads) as u16,
        heads as u8,
        sectors as u8,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn footers_round_trip() {
        for size in [512, 1 << 20, (1 << 30) + 512, 127 << 30, 4 << 40] {
            let footer = Footer::fixed(size, 1_800_000_000, [7; 16]);
            let bytes = footer.encode();
            assert_eq!(&bytes[0..8], b"conectix");
            assert_eq!(Footer::parse(&bytes).unwrap(), footer, "{size}");
        }
    }

    #[test]
    fn geometry_follows_the_specification() {
        // 1 GiB: 2097152 sectors → 17 × 16 per cylinder would overflow 1024 heads×cyl, so
        // 63 sectors, 16 heads, 2080 cylinders.
        assert_eq!(geometry(1 << 30), (2080, 16, 63));
        assert_eq!(geometry(10 << 20), (301, 4, 17));
        assert_eq!(geometry(u64::MAX), (65_535, 16, 255));
    }

    #[test]
    fn every_single_byte_change_is_refused_or_consistent() {
        // What the fuzz target checks, as a deterministic sweep: no panic, and a footer
        // that still parses (a change the checksum cannot see) says what its bytes say.
        let good = Footer::fixed(3 << 20, 1_800_000_000, [5; 16]).encode();
        for i in 0..FOOTER_LEN {
            for value in [0u8, 1, 0x7f, 0x80, 0xff] {
                let mut f = good;
                f[i] = value;
                if let Ok(footer) = Footer::parse(&f) {
                    assert_eq!(footer.current_size % 512, 0);
                    assert_eq!(
                        Footer::parse(&footer.encode()).unwrap().current_size,
                        footer.current_size
                    );
                }
            }
        }
    }

    #[test]
    fn bad_footers_are_refused_by_name() {
        let good = Footer::fixed(1 << 20, 1_800_000_000, [1; 16]).encode();
        assert_eq!(Footer::parse(&good[..511]), Err(FooterError::Length(511)));
        let mut bad = good;
        bad[0] = b'C';
        assert_eq!(Footer::parse(&bad), Err(FooterError::Cookie));
        let mut bad = good;
        bad[100] ^= 1;
        assert!(matches!(
            Footer::parse(&bad),
            Err(FooterError::Checksum { .. })
        ));
        let mut dynamic = Footer::fixed(1 << 20, 0, [1; 16]).encode();
        dynamic[63] = 3;
        let sum = checksum(&dynamic);
        dynamic[64..68].copy_from_slice(&sum.to_be_bytes());
        assert_eq!(Footer::parse(&dynamic), Err(FooterError::NotFixed(3)));
    }
}
