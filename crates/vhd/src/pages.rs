//! The range of a page-blob write (`PUT …?comp=page` with `x-ms-range: bytes=START-END`),
//! as the storage SDKs and `azcopy` send them to an upload URL.

use std::ops::Range;

use thiserror::Error;

/// A page: page-blob writes start and end on its boundaries.
pub const PAGE: u64 = 512;
/// The most one page write may carry: 4 MiB.
pub const MAX_PAGE_WRITE: u64 = 4 << 20;

/// Why a page range is refused (each 416 `InvalidPageRange` or 400 in the storage API).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PageRangeError {
    /// Not `bytes=START-END` with decimal numbers and `START <= END`.
    #[error("the range '{0}' is not of the form bytes=START-END")]
    Syntax(String),
    /// START or END + 1 is not a multiple of 512.
    #[error("the range {start}-{end} is not aligned to 512-byte pages")]
    Unaligned {
        /// First byte.
        start: u64,
        /// Last byte.
        end: u64,
    },
    /// More than 4 MiB.
    #[error("the range {start}-{end} is longer than the 4 MiB one write may carry")]
    TooLong {
        /// First byte.
        start: u64,
        /// Last byte.
        end: u64,
    },
    /// Past the end of the blob.
    #[error("the range {start}-{end} ends past the blob's {size} bytes")]
    OutOfRange {
        /// First byte.
        start: u64,
        /// Last byte.
        end: u64,
        /// The blob's size.
        size: u64,
    },
}

/// The bytes `header` (`bytes=START-END`, END inclusive) names in a page blob of `size`
/// bytes: page-aligned, at most [`MAX_PAGE_WRITE`], inside the blob.
pub fn parse_page_range(header: &str, size: u64) -> Result<Range<u64>, PageRangeError> {
    let syntax = || PageRangeError::Syntax(header.chars().take(100).collect());
    let (start, end) = header
        .trim()
        .strip_prefix("bytes=")
        .and_then(|r| r.split_once('-'))
        .ok_or_else(syntax)?;
    let number = |s: &str| {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u64>().ok())
            .flatten()
    };
    let (start, end) = (
        number(start).ok_or_else(syntax)?,
        number(end).ok_or_else(syntax)?,
    );
    if start > end {
        return Err(syntax());
    }
    let stop = end.checked_add(1).ok_or_else(syntax)?;
    if start % PAGE != 0 || stop % PAGE != 0 {
        return Err(PageRangeError::Unaligned { start, end });
    }
    if stop - start > MAX_PAGE_WRITE {
        return Err(PageRangeError::TooLong { start, end });
    }
    if stop > size {
        return Err(PageRangeError::OutOfRange { start, end, size });
    }
    Ok(start..stop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_the_sdks_send() {
        assert_eq!(parse_page_range("bytes=0-511", 1 << 20), Ok(0..512));
        assert_eq!(
            parse_page_range("bytes=4194304-8388607", 16 << 20),
            Ok(4 << 20..8 << 20)
        );
    }

    #[test]
    fn bad_ranges_are_refused_by_name() {
        let size = 16 << 20;
        for bad in [
            "",
            "bytes=",
            "bytes=1",
            "bytes=-511",
            "bytes=a-b",
            "bytes=512-0",
            "items=0-511",
            "bytes=+0-511",
        ] {
            assert!(
                matches!(parse_page_range(bad, size), Err(PageRangeError::Syntax(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            parse_page_range("bytes=1-512", size),
            Err(PageRangeError::Unaligned { .. })
        ));
        assert!(matches!(
            parse_page_range("bytes=0-510", size),
            Err(PageRangeError::Unaligned { .. })
        ));
        assert!(matches!(
            parse_page_range("bytes=0-4194815", size),
            Err(PageRangeError::TooLong { .. })
        ));
        assert!(matches!(
            parse_page_range("bytes=16776704-16777727", size),
            Err(PageRangeError::OutOfRange { .. })
        ));
        assert!(matches!(
            parse_page_range("bytes=0-18446744073709551615", size),
            Err(PageRangeError::Syntax(_))
        ));
    }
}
