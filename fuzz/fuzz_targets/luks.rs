//! Feeds arbitrary bytes to the LUKS1 and LUKS2 header parsers, as a guest's disk can hold
//! anything. Neither may panic, and whatever parses must lie inside what it was given.
#![no_main]

use atrest_luks::{Header, Kdf, SECTOR};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(header) = Header::parse(data) {
        assert_eq!(header.data_offset % SECTOR, 0);
        assert!(header.data_offset >= 2 * header.metadata_size);
        for slot in &header.keyslots {
            // A key slot's material lies before the data segment, and a slot that names
            // bytes past the input is refused by unlock as truncated, not read.
            assert!(slot.area_offset + slot.area_size <= header.data_offset);
            assert!(slot.kdf.check().is_ok());
        }
        // Unlocking runs the key derivations, so only where they are cheap.
        let cheap = |kdf: &Kdf| match *kdf {
            Kdf::Pbkdf2 { iterations, .. } => iterations <= 1000,
            Kdf::Argon2 {
                time, memory_kib, ..
            } => time <= 2 && memory_kib <= 256,
        };
        if header.digest.iterations <= 1000 && header.keyslots.iter().all(|slot| cheap(&slot.kdf)) {
            let _ = header.unlock(data, b"passphrase");
        }
    }
});
