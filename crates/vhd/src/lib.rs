//! The byte formats of a disk that leaves atrest or arrives at it: the footer of a fixed
//! VHD ([`Footer`], 512 bytes after the data) and the ranges of page-blob writes
//! ([`parse_page_range`], `x-ms-range: bytes=START-END`). Pure functions, no I/O; every
//! parser is fuzzed (`fuzz/`). See ARCHITECTURE.md.
#![forbid(unsafe_code)]

mod footer;
mod pages;

pub use footer::{Footer, FooterError, FOOTER_LEN};
pub use pages::{parse_page_range, PageRangeError, MAX_PAGE_WRITE, PAGE};
