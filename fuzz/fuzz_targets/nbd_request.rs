//! Feeds arbitrary bytes to the NBD wire parsers: the transmission request header and the
//! option payloads of `OPT_GO`/`OPT_INFO` and `OPT_{LIST,SET}_META_CONTEXT`. None may
//! panic, and whatever parses must be consistent with its input.
#![no_main]

use atrest_nbd::{parse_export_query, parse_meta_query, parse_request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(header) = data.get(..28) {
        let header: &[u8; 28] = header.try_into().expect("28 bytes");
        if let Ok(request) = parse_request(header) {
            assert_eq!(
                u64::from_be_bytes(header[16..24].try_into().unwrap()),
                request.offset
            );
        }
    }
    if let Ok((name, requests)) = parse_export_query(data) {
        assert_eq!(data.len(), 4 + name.len() + 2 + 2 * requests.len());
    }
    if let Ok((name, queries)) = parse_meta_query(data) {
        let strings: usize = queries.iter().map(|q| 4 + q.len()).sum();
        assert_eq!(data.len(), 4 + name.len() + 4 + strings);
    }
});
