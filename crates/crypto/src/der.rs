//! A small DER writer for the structures atrest emits itself (PKCS#1 public keys, ECDSA
//! signatures, PKCS#12 containers), each function returning one complete TLV, and a
//! reader for the few structures it takes from outside (certificates, signing requests):
//! definite lengths only, every length checked against what remains.

/// A TLV with `tag` around `content`.
pub(crate) fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

/// `SEQUENCE { parts }`.
pub(crate) fn sequence(parts: &[Vec<u8>]) -> Vec<u8> {
    tlv(0x30, &parts.concat())
}

/// `SET { parts }`, in the given order (callers give one element or sorted ones).
pub(crate) fn set(parts: &[Vec<u8>]) -> Vec<u8> {
    tlv(0x31, &parts.concat())
}

/// A non-negative `INTEGER` from big-endian magnitude bytes.
pub(crate) fn unsigned_integer(magnitude: &[u8]) -> Vec<u8> {
    let trimmed: &[u8] = match magnitude.iter().position(|b| *b != 0) {
        Some(i) => &magnitude[i..],
        None => &[0],
    };
    let mut content = Vec::with_capacity(trimmed.len() + 1);
    if trimmed[0] & 0x80 != 0 {
        content.push(0);
    }
    content.extend_from_slice(trimmed);
    tlv(0x02, &content)
}

/// A small `INTEGER`.
pub(crate) fn small_integer(value: u32) -> Vec<u8> {
    unsigned_integer(&value.to_be_bytes())
}

/// `OCTET STRING`.
pub(crate) fn octet_string(bytes: &[u8]) -> Vec<u8> {
    tlv(0x04, bytes)
}

/// `OBJECT IDENTIFIER` from its arcs.
pub(crate) fn oid(arcs: &[u64]) -> Vec<u8> {
    let mut content = Vec::new();
    let mut push = |mut arc: u64| {
        let mut bytes = vec![(arc & 0x7f) as u8];
        arc >>= 7;
        while arc > 0 {
            bytes.push(0x80 | (arc & 0x7f) as u8);
            arc >>= 7;
        }
        bytes.reverse();
        content.extend(bytes);
    };
    push(arcs[0] * 40 + arcs[1]);
    for arc in &arcs[2..] {
        push(*arc);
    }
    tlv(0x06, &content)
}

/// `[n] EXPLICIT` around one TLV.
pub(crate) fn explicit(n: u8, inner: &[u8]) -> Vec<u8> {
    tlv(0xa0 | n, inner)
}

/// One TLV read from outside bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tlv<'a> {
    /// The tag byte (single-byte tags only).
    pub tag: u8,
    /// The content octets.
    pub content: &'a [u8],
    /// The whole TLV, header included.
    pub raw: &'a [u8],
}

/// Why bytes are not the DER expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DerError;

/// The TLV at the start of `input`, and what follows it.
pub(crate) fn read(input: &[u8]) -> Result<(Tlv<'_>, &[u8]), DerError> {
    let (&tag, rest) = input.split_first().ok_or(DerError)?;
    if tag & 0x1f == 0x1f {
        return Err(DerError); // multi-byte tags never occur in what is read here
    }
    let (&first, rest) = rest.split_first().ok_or(DerError)?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return Err(DerError);
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return Err(DerError);
    }
    let header = input.len() - rest.len();
    Ok((
        Tlv {
            tag,
            content: &rest[..len],
            raw: &input[..header + len],
        },
        &rest[len..],
    ))
}

/// The TLV at the start of `input`, which must have `tag`, and what follows.
pub(crate) fn expect(input: &[u8], tag: u8) -> Result<(Tlv<'_>, &[u8]), DerError> {
    let (tlv, rest) = read(input)?;
    if tlv.tag == tag {
        Ok((tlv, rest))
    } else {
        Err(DerError)
    }
}

/// The elements of a constructed TLV's content, in order.
pub(crate) fn elements(mut content: &[u8]) -> Result<Vec<Tlv<'_>>, DerError> {
    let mut out = Vec::new();
    while !content.is_empty() {
        let (tlv, rest) = read(content)?;
        out.push(tlv);
        content = rest;
    }
    Ok(out)
}

/// How deep BER nesting is followed: PKCS#12 files nest about ten levels.
const MAX_BER_DEPTH: usize = 24;

/// The element at the start of `input` in BER as PKCS#12 writers produce it: definite
/// lengths, or indefinite ones (a constructed element closed by two zero octets). For an
/// indefinite element `content` holds its inner elements without the closing octets.
pub(crate) fn read_ber(input: &[u8]) -> Result<(Tlv<'_>, &[u8]), DerError> {
    read_ber_at(input, MAX_BER_DEPTH)
}

fn read_ber_at(input: &[u8], depth: usize) -> Result<(Tlv<'_>, &[u8]), DerError> {
    if depth == 0 {
        return Err(DerError);
    }
    match input {
        [tag, 0x80, ..] if tag & 0x20 != 0 && tag & 0x1f != 0x1f => {
            let mut at = 2;
            loop {
                let tail = &input[at..];
                if tail.starts_with(&[0, 0]) {
                    let tlv = Tlv {
                        tag: *tag,
                        content: &input[2..at],
                        raw: &input[..at + 2],
                    };
                    return Ok((tlv, &input[at + 2..]));
                }
                let (inner, _) = read_ber_at(tail, depth - 1)?;
                at += inner.raw.len();
            }
        }
        _ => read(input),
    }
}

/// The elements of a BER constructed element's content, in order.
pub(crate) fn ber_elements(content: &[u8]) -> Result<Vec<Tlv<'_>>, DerError> {
    ber_elements_at(content, MAX_BER_DEPTH)
}

fn ber_elements_at(mut content: &[u8], depth: usize) -> Result<Vec<Tlv<'_>>, DerError> {
    let mut out = Vec::new();
    while !content.is_empty() {
        let (tlv, rest) = read_ber_at(content, depth)?;
        out.push(tlv);
        content = rest;
    }
    Ok(out)
}

/// The octets of a BER string: a primitive's content, or a constructed string's
/// segments joined.
pub(crate) fn ber_octets<'a>(tlv: &Tlv<'a>) -> Result<std::borrow::Cow<'a, [u8]>, DerError> {
    ber_octets_at(tlv, MAX_BER_DEPTH)
}

fn ber_octets_at<'a>(tlv: &Tlv<'a>, depth: usize) -> Result<std::borrow::Cow<'a, [u8]>, DerError> {
    if tlv.tag & 0x20 == 0 {
        return Ok(std::borrow::Cow::Borrowed(tlv.content));
    }
    if depth == 0 {
        return Err(DerError);
    }
    let mut joined = Vec::new();
    for part in ber_elements(tlv.content)? {
        if part.tag & 0x1f != 0x04 {
            return Err(DerError);
        }
        joined.extend_from_slice(&ber_octets_at(&part, depth - 1)?);
    }
    Ok(std::borrow::Cow::Owned(joined))
}

/// An OBJECT IDENTIFIER's content as dotted text (`1.2.840.113549.1.7.1`).
pub(crate) fn oid_text(content: &[u8]) -> Result<String, DerError> {
    let mut arcs: Vec<u64> = Vec::new();
    let mut value: u64 = 0;
    for (i, b) in content.iter().enumerate() {
        if value > u64::MAX >> 7 || (value == 0 && *b == 0x80) {
            return Err(DerError);
        }
        value = (value << 7) | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            if arcs.is_empty() {
                let first = (value / 40).min(2);
                arcs.push(first);
                arcs.push(value - first * 40);
            } else {
                arcs.push(value);
            }
            value = 0;
        } else if i + 1 == content.len() {
            return Err(DerError);
        }
    }
    if arcs.is_empty() {
        return Err(DerError);
    }
    Ok(arcs
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join("."))
}

/// A non-negative INTEGER that fits in a `u64`.
pub(crate) fn unsigned(tlv: &Tlv<'_>) -> Result<u64, DerError> {
    let digits = match tlv.content {
        [] => return Err(DerError),
        [first, ..] if first & 0x80 != 0 => return Err(DerError),
        [0, rest @ ..] => rest,
        all => all,
    };
    if tlv.tag != 0x02 || digits.len() > 8 {
        return Err(DerError);
    }
    Ok(digits.iter().fold(0, |acc, b| (acc << 8) | u64::from(*b)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_match_known_der() {
        assert_eq!(
            oid(&[1, 2, 840, 113549, 1, 7, 1]),
            [6, 9, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 1, 7, 1]
        );
        assert_eq!(unsigned_integer(&[0, 0, 0x80]), [2, 2, 0, 0x80]);
        assert_eq!(unsigned_integer(&[0, 0]), [2, 1, 0]);
        assert_eq!(small_integer(3), [2, 1, 3]);
        let long = tlv(4, &[7; 300]);
        assert_eq!(&long[..4], &[4, 0x82, 1, 44]);
        assert_eq!(long.len(), 304);
    }

    #[test]
    fn the_reader_reads_what_the_writer_writes_and_refuses_short_input() {
        let seq = sequence(&[small_integer(3), octet_string(&[1; 200])]);
        let (tlv, rest) = read(&seq).unwrap();
        assert!(rest.is_empty() && tlv.tag == 0x30 && tlv.raw == seq.as_slice());
        let parts = elements(tlv.content).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[1].content, &[1; 200][..]);
        for cut in 0..seq.len() {
            assert!(read(&seq[..cut]).is_err() || cut == seq.len(), "{cut}");
        }
        assert_eq!(read(&[0x1f, 0]), Err(DerError));
        assert_eq!(read(&[0x30, 0x85, 0, 0, 0, 0, 1]), Err(DerError));
        assert_eq!(expect(&seq, 0x31).map(|_| ()), Err(DerError));
    }

    #[test]
    fn ber_reads_indefinite_lengths_and_joins_constructed_strings() {
        // SEQUENCE (indefinite) { OCTET STRING (constructed, indefinite) { "ab", "c" }, INTEGER 5 }
        let ber = [
            0x30, 0x80, 0x24, 0x80, 0x04, 2, b'a', b'b', 0x04, 1, b'c', 0, 0, 0x02, 1, 5, 0, 0,
            0xff,
        ];
        let (outer, rest) = read_ber(&ber).unwrap();
        assert_eq!(rest, &[0xff]);
        let parts = ber_elements(outer.content).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(ber_octets(&parts[0]).unwrap().as_ref(), b"abc");
        assert_eq!(unsigned(&parts[1]), Ok(5));
        // An unclosed indefinite element, and nesting past the limit, are refused.
        assert!(read_ber(&ber[..ber.len() - 3]).is_err());
        let deep: Vec<u8> = std::iter::repeat_n([0x30, 0x80], 40).flatten().collect();
        assert!(read_ber(&deep).is_err());
    }

    #[test]
    fn oids_and_integers_read_back() {
        let encoded = oid(&[1, 2, 840, 113549, 1, 12, 10, 1, 3]);
        assert_eq!(
            oid_text(&encoded[2..]).unwrap(),
            "1.2.840.113549.1.12.10.1.3"
        );
        assert_eq!(oid_text(&oid(&[2, 999, 3])[2..]).unwrap(), "2.999.3");
        assert!(oid_text(&[0x86]).is_err());
        assert!(oid_text(&[]).is_err());
        let encoded = unsigned_integer(&[0x00, 0x80, 0x00]);
        let (int, _) = read(&encoded).unwrap();
        assert_eq!(unsigned(&int), Ok(0x8000));
        assert!(unsigned(&Tlv {
            tag: 2,
            content: &[0x80],
            raw: &[]
        })
        .is_err());
    }
}
