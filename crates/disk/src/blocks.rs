//! A managed disk's blocks at rest: one sparse file, encrypted with AES-256-XTS in 4 KiB
//! data units whose unit number is the tweak.
//!
//! Never-written ranges are holes in the file: they cost no space and read as zeros. A unit
//! whose stored bytes are all zero is such a hole (a real ciphertext is all zeros with
//! probability 2^-32768), so zero-filling a whole unit stores zeros instead of ciphertext.
//! Writes that do not cover whole units read, decrypt, merge and re-encrypt the units they
//! touch. [`EncryptedFile::flush`] makes every completed write durable.
//!
//! A disk may have more than one data key (double encryption): each unit is encrypted
//! with every layer in turn, innermost first. When its keys are withdrawn
//! ([`EncryptedFile::revoke`]) they are dropped, which wipes them, and every access fails
//! until [`EncryptedFile::restore`] brings them back.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use atrest_xts::{XtsError, XtsKey};
use rustix::fs::{fallocate, seek, FallocateFlags, SeekFrom};
use rustix::io::Errno;
use thiserror::Error;

/// Bytes per encrypted data unit.
pub const UNIT: usize = 4096;

/// A refused or failed disk access.
#[derive(Debug, Error)]
pub enum DiskError {
    /// The range runs past the end of the disk.
    #[error("the range {offset}+{len} runs past the end of the {size}-byte disk")]
    OutOfRange {
        /// Start of the request.
        offset: u64,
        /// Its length.
        len: u64,
        /// The disk's size.
        size: u64,
    },
    /// A size that is not a whole number of units.
    #[error("a disk size must be a positive multiple of {UNIT} bytes, not {0}")]
    BadSize(u64),
    /// The file could not be read or written.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// The cipher refused a unit.
    #[error(transparent)]
    Cipher(#[from] XtsError),
    /// The disk's keys have been withdrawn.
    #[error("the disk's encryption key is not available")]
    KeyUnavailable,
}

/// One disk's encrypted block file.
pub struct EncryptedFile {
    file: File,
    size: u64,
    /// The data keys, innermost layer first; `None` while withdrawn.
    layers: Mutex<Option<Vec<XtsKey>>>,
}

impl std::fmt::Debug for EncryptedFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncryptedFile")
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl EncryptedFile {
    /// Opens (creating if needed, mode 0600) the block file of a `size`-byte disk whose
    /// data keys are `layers`, innermost first.
    pub fn open(path: &Path, size: u64, layers: Vec<XtsKey>) -> Result<Self, DiskError> {
        if size == 0 || !size.is_multiple_of(UNIT as u64) {
            return Err(DiskError::BadSize(size));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)?;
        if file.metadata()?.len() < size {
            // Extending creates a hole: no blocks are allocated.
            file.set_len(size)?;
        }
        Ok(EncryptedFile {
            file,
            size,
            layers: Mutex::new(Some(layers)),
        })
    }

    fn layers(&self) -> MutexGuard<'_, Option<Vec<XtsKey>>> {
        self.layers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Drops (and so wipes) the data keys; every access fails until [`Self::restore`].
    pub fn revoke(&self) {
        *self.layers() = None;
    }

    /// Brings the data keys back after [`Self::revoke`].
    pub fn restore(&self, layers: Vec<XtsKey>) {
        *self.layers() = Some(layers);
    }

    /// Whether the data keys are present.
    pub fn is_available(&self) -> bool {
        self.layers().is_some()
    }

    /// The disk's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    fn check(&self, offset: u64, len: usize) -> Result<(), DiskError> {
        match offset.checked_add(len as u64) {
            Some(end) if end <= self.size => Ok(()),
            _ => Err(DiskError::OutOfRange {
                offset,
                len: len as u64,
                size: self.size,
            }),
        }
    }

    /// Decrypts whole units in place; `data` starts at unit `first`. All-zero units are
    /// holes and stay zero.
    fn decrypt_units(&self, first: u64, data: &mut [u8]) -> Result<(), DiskError> {
        let mut layers = self.layers();
        let keys = layers.as_mut().ok_or(DiskError::KeyUnavailable)?;
        for (unit, block) in (first..).zip(data.chunks_exact_mut(UNIT)) {
            if block.iter().any(|b| *b != 0) {
                for key in keys.iter_mut().rev() {
                    key.decrypt(unit, block)?;
                }
            }
        }
        Ok(())
    }

    /// Encrypts whole units of plaintext in place; `data` starts at unit `first`. All-zero
    /// units stay zero, so they read back as holes.
    fn encrypt_units(&self, first: u64, data: &mut [u8]) -> Result<(), DiskError> {
        let mut layers = self.layers();
        let keys = layers.as_mut().ok_or(DiskError::KeyUnavailable)?;
        for (unit, block) in (first..).zip(data.chunks_exact_mut(UNIT)) {
            if block.iter().any(|b| *b != 0) {
                for key in keys.iter_mut() {
                    key.encrypt(unit, block)?;
                }
            }
        }
        Ok(())
    }

    /// Reads and decrypts the whole units starting at unit `first` into `data`.
    fn read_units(&self, first: u64, data: &mut [u8]) -> Result<(), DiskError> {
        self.file.read_exact_at(data, first * UNIT as u64)?;
        self.decrypt_units(first, data)
    }

    /// The units `offset`, `len` touches: the first one and how many bytes they span.
    fn span(offset: u64, len: usize) -> (u64, usize) {
        let first = offset / UNIT as u64;
        let end = (offset + len as u64).div_ceil(UNIT as u64);
        (first, ((end - first) as usize) * UNIT)
    }

    /// Splits `offset`, `len` into runs of units that hold data (`false`) or read as zeros
    /// (`true`), as `(length, zero)` pairs, from the stored bytes alone (no key needed).
    pub fn extents(&self, offset: u64, len: u64) -> Result<Vec<(u64, bool)>, DiskError> {
        const CHUNK: usize = 1 << 20;
        self.check(offset, len as usize)?;
        let end = offset + len;
        let mut runs: Vec<(u64, bool)> = Vec::new();
        let mut chunk = vec![0u8; CHUNK];
        let mut pos = offset;
        while pos < end {
            let start = pos - pos % UNIT as u64;
            let n = ((end - start).div_ceil(UNIT as u64) * UNIT as u64).min(CHUNK as u64) as usize;
            self.file.read_exact_at(&mut chunk[..n], start)?;
            for (unit_start, block) in (start..).step_by(UNIT).zip(chunk[..n].chunks_exact(UNIT)) {
                let piece = (unit_start + UNIT as u64).min(end) - unit_start.max(pos);
                let zero = block.iter().all(|b| *b == 0);
                match runs.last_mut() {
                    Some((run, z)) if *z == zero => *run += piece,
                    _ => runs.push((piece, zero)),
                }
            }
            pos = start + n as u64;
        }
        Ok(runs)
    }

    /// Splits `offset..offset + len` into runs that were never written (holes in the
    /// block file, which read as zeros: `true`) or may hold data (`false`), as
    /// `(length, hole)` pairs, from the file system's allocation map (`SEEK_DATA`,
    /// `SEEK_HOLE`) without reading a byte. A file system without holes reports data.
    pub fn allocation(&self, offset: u64, len: u64) -> Result<Vec<(u64, bool)>, DiskError> {
        self.check(offset, len as usize)?;
        let end = offset + len;
        let mut runs = Vec::new();
        let mut pos = offset;
        while pos < end {
            let data = match seek(&self.file, SeekFrom::Data(pos)) {
                Ok(data) => data.min(end),
                // No data from `pos` to the end of the file.
                Err(Errno::NXIO) => end,
                Err(e) => return Err(io::Error::from(e).into()),
            };
            if data > pos {
                runs.push((data - pos, true));
                pos = data;
            }
            if pos < end {
                let hole = seek(&self.file, SeekFrom::Hole(pos))
                    .map_err(io::Error::from)?
                    .min(end);
                runs.push((hole - pos, false));
                pos = hole;
            }
        }
        Ok(runs)
    }

    /// Fills `buf` with the plaintext at `offset`: one read of the units it touches.
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        self.check(offset, buf.len())?;
        if buf.is_empty() {
            return Ok(());
        }
        let (first, span) = Self::span(offset, buf.len());
        if span == buf.len() {
            return self.read_units(first, buf);
        }
        let mut units = vec![0u8; span];
        self.read_units(first, &mut units)?;
        let at = (offset - first * UNIT as u64) as usize;
        buf.copy_from_slice(&units[at..at + buf.len()]);
        Ok(())
    }

    /// Writes `data` at `offset`: the units it touches are assembled (reading those it
    /// covers only partly), encrypted, and stored with one write.
    pub fn write(&self, offset: u64, data: &[u8]) -> Result<(), DiskError> {
        self.check(offset, data.len())?;
        if data.is_empty() {
            return Ok(());
        }
        let (first, span) = Self::span(offset, data.len());
        let at = (offset - first * UNIT as u64) as usize;
        let mut units = vec![0u8; span];
        if at != 0 {
            self.read_units(first, &mut units[..UNIT])?;
        }
        if !(at + data.len()).is_multiple_of(UNIT) && (span > UNIT || at == 0) {
            let last = first + (span / UNIT) as u64 - 1;
            self.read_units(last, &mut units[span - UNIT..])?;
        }
        units[at..at + data.len()].copy_from_slice(data);
        self.encrypt_units(first, &mut units)?;
        self.file.write_all_at(&units, first * UNIT as u64)?;
        Ok(())
    }

    /// [`Self::write`] that may encrypt `data` in place (when it covers whole units) and
    /// so saves a copy; `data` holds ciphertext or plaintext afterwards.
    pub fn write_in_place(&self, offset: u64, data: &mut [u8]) -> Result<(), DiskError> {
        if !offset.is_multiple_of(UNIT as u64) || !data.len().is_multiple_of(UNIT) {
            return self.write(offset, data);
        }
        self.check(offset, data.len())?;
        self.encrypt_units(offset / UNIT as u64, data)?;
        self.file.write_all_at(data, offset)?;
        Ok(())
    }

    /// Zeroes `len` bytes at `offset`. The whole units in the range become holes again
    /// (their space is released); partial units at its edges are rewritten.
    pub fn write_zeroes(&self, offset: u64, len: u64) -> Result<(), DiskError> {
        self.check(offset, len as usize)?;
        if !self.is_available() {
            return Err(DiskError::KeyUnavailable);
        }
        let unit = UNIT as u64;
        let end = offset + len;
        let (whole_start, whole_end) = (offset.div_ceil(unit) * unit, end / unit * unit);
        if whole_start >= whole_end {
            return self.fill_zeroes(offset, len);
        }
        self.fill_zeroes(offset, whole_start - offset)?;
        let punched = fallocate(
            &self.file,
            FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
            whole_start,
            whole_end - whole_start,
        );
        if punched.is_err() {
            // A file system without hole punching: store zeros, which read the same.
            self.fill_zeroes(whole_start, whole_end - whole_start)?;
        }
        self.fill_zeroes(whole_end, end - whole_end)
    }

    /// Zeroes `len` bytes at `offset` by writing zeros (space stays allocated), a bounded
    /// piece at a time.
    pub fn fill_zeroes(&self, offset: u64, len: u64) -> Result<(), DiskError> {
        const PIECE: u64 = 8 << 20;
        self.check(offset, len as usize)?;
        let zeros = vec![0u8; PIECE.min(len) as usize];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(PIECE);
            self.write(offset + done, &zeros[..n as usize])?;
            done += n;
        }
        Ok(())
    }

    /// Makes every completed write durable.
    pub fn flush(&self) -> Result<(), DiskError> {
        self.file.sync_data()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn key() -> XtsKey {
        key_from(5)
    }

    fn key_from(seed: usize) -> XtsKey {
        let bytes: [u8; atrest_xts::KEY_LEN] = std::array::from_fn(|i| (i * 13 + seed) as u8);
        XtsKey::new(&bytes.into()).unwrap()
    }

    /// A block file's path in a temporary directory, removed when the latter drops.
    fn temp() -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.blocks");
        (dir, path)
    }

    /// A small deterministic generator, so failures reproduce.
    fn next(seed: &mut u64) -> u64 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        *seed
    }

    #[test]
    fn random_writes_match_a_plain_model_and_survive_reopening() {
        let (_dir, path) = temp();
        let size = 64 * UNIT as u64;
        let disk = EncryptedFile::open(&path, size, vec![key()]).unwrap();
        let mut model = vec![0u8; size as usize];
        let mut seed = 0x9e3779b97f4a7c15;
        for round in 0..300 {
            let offset = next(&mut seed) % size;
            let len = (next(&mut seed) % (3 * UNIT as u64)).min(size - offset) as usize;
            if round % 7 == 0 {
                disk.write_zeroes(offset, len as u64).unwrap();
                model[offset as usize..offset as usize + len].fill(0);
            } else {
                let data: Vec<u8> = (0..len).map(|_| next(&mut seed) as u8 | 1).collect();
                disk.write(offset, &data).unwrap();
                model[offset as usize..offset as usize + len].copy_from_slice(&data);
            }
            let probe = next(&mut seed) % size;
            let plen = (next(&mut seed) % 9000).min(size - probe) as usize;
            let mut got = vec![0xeeu8; plen];
            disk.read(probe, &mut got).unwrap();
            assert_eq!(
                got,
                model[probe as usize..probe as usize + plen],
                "round {round}"
            );
        }
        disk.flush().unwrap();
        drop(disk);
        let again = EncryptedFile::open(&path, size, vec![key()]).unwrap();
        let mut all = vec![0u8; size as usize];
        again.read(0, &mut all).unwrap();
        assert_eq!(all, model);
        let raw = std::fs::read(&path).unwrap();
        let written_unit = model
            .chunks(UNIT)
            .position(|c| c.iter().any(|b| *b != 0))
            .unwrap();
        let at = written_unit * UNIT;
        assert_ne!(
            raw[at..at + UNIT],
            model[at..at + UNIT],
            "no plaintext at rest"
        );
    }

    #[test]
    fn holes_cost_nothing_and_read_as_zeros() {
        let (_dir, path) = temp();
        let size = 1 << 30;
        let disk = EncryptedFile::open(&path, size, vec![key()]).unwrap();
        disk.write(512 * 1024 * 1024, b"hello").unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.len(), size);
        assert!(
            meta.blocks() * 512 < 1 << 20,
            "a 1 GiB disk with one write uses {} bytes",
            meta.blocks() * 512
        );
        let mut buf = vec![1u8; 8192];
        disk.read(0, &mut buf).unwrap();
        assert!(buf.iter().all(|b| *b == 0));
        let mut hello = [0u8; 5];
        disk.read(512 * 1024 * 1024, &mut hello).unwrap();
        assert_eq!(&hello, b"hello");
    }

    #[test]
    fn out_of_range_and_bad_sizes_are_refused() {
        let (_dir, path) = temp();
        assert!(matches!(
            EncryptedFile::open(&path, 1000, vec![key()]),
            Err(DiskError::BadSize(1000))
        ));
        let disk = EncryptedFile::open(&path, UNIT as u64, vec![key()]).unwrap();
        let mut buf = [0u8; 2];
        assert!(matches!(
            disk.read(UNIT as u64 - 1, &mut buf),
            Err(DiskError::OutOfRange { .. })
        ));
        assert!(matches!(
            disk.write(u64::MAX, &buf),
            Err(DiskError::OutOfRange { .. })
        ));
        assert!(matches!(
            disk.write_zeroes(0, UNIT as u64 + 1),
            Err(DiskError::OutOfRange { .. })
        ));
    }

    #[test]
    fn layers_nest_and_withdrawn_keys_refuse_every_access() {
        let (_dir, path) = temp();
        let size = 4 * UNIT as u64;
        let data = vec![0x5au8; UNIT];
        let double = EncryptedFile::open(&path, size, vec![key_from(1), key_from(2)]).unwrap();
        double.write(0, &data).unwrap();
        let stored = std::fs::read(&path).unwrap()[..UNIT].to_vec();
        let mut once = data.clone();
        key_from(1).encrypt(0, &mut once).unwrap();
        assert_ne!(stored, once, "the outer layer is applied");
        let mut peeled = stored.clone();
        key_from(2).decrypt(0, &mut peeled).unwrap();
        assert_eq!(peeled, once, "inner layer first, outer last");

        double.revoke();
        assert!(!double.is_available());
        let mut buf = vec![0u8; 10];
        assert!(matches!(
            double.read(0, &mut buf),
            Err(DiskError::KeyUnavailable)
        ));
        assert!(matches!(
            double.write(UNIT as u64, &buf),
            Err(DiskError::KeyUnavailable)
        ));
        assert!(matches!(
            double.write_zeroes(0, 10),
            Err(DiskError::KeyUnavailable)
        ));
        assert_eq!(
            std::fs::read(&path).unwrap()[..UNIT],
            stored[..],
            "nothing changed"
        );
        double.restore(vec![key_from(1), key_from(2)]);
        let mut back = vec![0u8; UNIT];
        double.read(0, &mut back).unwrap();
        assert_eq!(back, data);
    }

    #[test]
    fn writing_in_place_stores_what_writing_stores() {
        let ((_dir_a, a), (_dir_b, b)) = (temp(), temp());
        let size = 8 * UNIT as u64;
        let (da, db) = (
            EncryptedFile::open(&a, size, vec![key()]).unwrap(),
            EncryptedFile::open(&b, size, vec![key()]).unwrap(),
        );
        for (offset, len) in [
            (0, 2 * UNIT),
            (3 * UNIT as u64, UNIT),
            (UNIT as u64 + 9, 100),
        ] {
            let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8 + 1).collect();
            da.write(offset, &data).unwrap();
            db.write_in_place(offset, &mut data.clone()).unwrap();
        }
        assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        let mut back = vec![0u8; 2 * UNIT];
        db.read(0, &mut back).unwrap();
        assert_eq!(back[..3], [1, 2, 3]);
    }

    #[test]
    fn zeroing_whole_units_releases_their_space() {
        let (_dir, path) = temp();
        let mib = 1u64 << 20;
        let disk = EncryptedFile::open(&path, 4 * mib, vec![key()]).unwrap();
        disk.write(0, &vec![7u8; 2 * mib as usize]).unwrap();
        disk.flush().unwrap();
        let used = || std::fs::metadata(&path).unwrap().blocks() * 512;
        assert!(used() >= 2 * mib);
        disk.write_zeroes(100, 2 * mib - 200).unwrap();
        assert!(
            used() < 2 * UNIT as u64 + 65536,
            "{} bytes still used",
            used()
        );
        let mut all = vec![1u8; 2 * mib as usize];
        disk.read(0, &mut all).unwrap();
        assert!(all[..100].iter().all(|b| *b == 7));
        assert!(all[100..2 * mib as usize - 100].iter().all(|b| *b == 0));
        assert!(all[2 * mib as usize - 100..].iter().all(|b| *b == 7));
        disk.fill_zeroes(mib, UNIT as u64).unwrap();
        assert_eq!(disk.extents(0, 2 * mib).unwrap()[0], (UNIT as u64, false));
    }

    #[test]
    fn allocation_reports_never_written_ranges_as_holes() {
        const MIB: u64 = 1 << 20;
        let (_dir, path) = temp();
        let disk = EncryptedFile::open(&path, 8 * MIB, vec![key()]).unwrap();
        assert_eq!(disk.allocation(0, 8 * MIB).unwrap(), vec![(8 * MIB, true)]);
        disk.write(2 * MIB, &vec![7u8; MIB as usize]).unwrap();
        assert_eq!(
            disk.allocation(0, 8 * MIB).unwrap(),
            vec![(2 * MIB, true), (MIB, false), (5 * MIB, true)]
        );
        assert_eq!(disk.allocation(2 * MIB + 5, 10).unwrap(), vec![(10, false)]);
        // Zeroing gives the space back, so the range is a hole again.
        disk.write_zeroes(2 * MIB, MIB).unwrap();
        assert_eq!(disk.allocation(0, 8 * MIB).unwrap(), vec![(8 * MIB, true)]);
        assert!(
            disk.allocation(8 * MIB - 1, 2).is_err(),
            "bounds are checked"
        );
    }

    #[test]
    fn extents_follow_what_was_written() {
        let (_dir, path) = temp();
        let disk = EncryptedFile::open(&path, 8 * UNIT as u64, vec![key()]).unwrap();
        disk.write(2 * UNIT as u64 + 7, b"x").unwrap();
        disk.write(3 * UNIT as u64, &[1u8; UNIT]).unwrap();
        let unit = UNIT as u64;
        assert_eq!(
            disk.extents(0, 8 * unit).unwrap(),
            vec![(2 * unit, true), (2 * unit, false), (4 * unit, true)]
        );
        assert_eq!(disk.extents(unit + 100, 200).unwrap(), vec![(200, true)]);
        disk.revoke();
        assert_eq!(disk.extents(2 * unit, 10).unwrap(), vec![(10, false)]);

        // Spans longer than one read of the scan.
        let (_dir, path) = temp();
        let mib = 1u64 << 20;
        let long = EncryptedFile::open(&path, 4 * mib, vec![key()]).unwrap();
        long.write(2 * mib + 5, b"y").unwrap();
        assert_eq!(
            long.extents(0, 4 * mib).unwrap(),
            vec![(2 * mib, true), (unit, false), (2 * mib - unit, true)]
        );
        assert_eq!(
            long.extents(mib + 3, 2 * mib).unwrap(),
            vec![(mib - 3, true), (unit, false), (mib + 3 - unit, true)]
        );
        assert!(disk.extents(0, 9 * unit).is_err());
    }
}
