//! Feeds arbitrary bytes to the readers of certificates and signing requests a client
//! sends (a merge's `x5c`, an import). Neither may panic; what parses is self-consistent.
#![no_main]

use atrest_crypto::certificates::{certificate_info, request_public_key};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(info) = certificate_info(data) {
        assert!(!info.public_key.is_empty() && info.public_key.len() < data.len());
        assert_eq!(info.public_key[0], 0x30);
    }
    if let Ok(spki) = request_public_key(data) {
        assert!(spki.len() < data.len() && spki[0] == 0x30);
    }
});
