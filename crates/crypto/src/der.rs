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
}
