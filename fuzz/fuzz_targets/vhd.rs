//! Feeds arbitrary bytes to the parsers of what an upload sends: the fixed-VHD footer and
//! the `x-ms-range` of a page write. Neither may panic, and whatever parses must be
//! consistent with its input.
#![no_main]

use atrest_vhd::{parse_page_range, Footer, MAX_PAGE_WRITE, PAGE};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(footer) = Footer::parse(data) {
        // A footer that parses says what it was given: encoding it again yields the same
        // sizes and identity.
        assert_eq!(footer.current_size % 512, 0);
        let again = Footer::parse(&footer.encode()).expect("an encoded footer parses");
        assert_eq!(
            (again.current_size, again.unique_id),
            (footer.current_size, footer.unique_id)
        );
    }
    if let Some((size, header)) = data.split_first_chunk::<8>() {
        let size = u64::from_le_bytes(*size);
        if let Ok(range) = parse_page_range(&String::from_utf8_lossy(header), size) {
            assert!(range.start % PAGE == 0 && range.end % PAGE == 0);
            assert!(range.start < range.end && range.end - range.start <= MAX_PAGE_WRITE);
            assert!(range.end <= size);
        }
    }
});
