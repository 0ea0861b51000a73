//! Feeds arbitrary bytes to a certificate import's readers: PKCS#12 (BER, MACs, the
//! password-based schemes) and PEM with plain or encrypted PKCS#8 keys. Nothing may panic;
//! what imports is self-consistent: its leaf carries the private key's public key.
#![no_main]

use atrest_crypto::certificates::{certificate_info, read_import};
use atrest_crypto::{KeyProvider, SoftwareKeys};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the password, so encrypted inputs can be reached both ways.
    let Some((choice, content)) = data.split_first() else {
        return;
    };
    let password = if choice & 1 == 0 { "" } else { "pw" };
    if let Ok(imported) = read_import(content, password, choice & 2 != 0) {
        let leaf = certificate_info(&imported.chain[imported.leaf]).expect("the leaf parses");
        let key = SoftwareKeys
            .import_pkcs8(&imported.private_key)
            .expect("the key loads");
        assert!(!leaf.subject_public_key.is_empty());
        assert!(!key.public_jwk().is_empty());
    }
});
