//! Feeds arbitrary bytes to the block manifest parser: what an object store (or a data
//! directory) hands back. It may not panic, and whatever parses encodes back to the same
//! bytes.
#![no_main]

use atrest_blocks::manifest::{parse_chunk_name, Manifest};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(manifest) = Manifest::decode(data) {
        assert_eq!(manifest.encode(), data);
    }
    if let Ok(name) = std::str::from_utf8(data) {
        let _ = parse_chunk_name(name);
    }
});
