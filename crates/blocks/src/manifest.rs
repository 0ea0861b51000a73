//! A disk's manifest: which generation of each 1 MiB chunk holds its data (no entry: the
//! chunk reads as zeros), and the next generation its writer may use. A pure encoder and
//! parser; the stored bytes come from the data directory or an object store, so the parser
//! trusts nothing (it has a fuzz target).
//!
//! ```text
//! "ATRMFST1"  size u64  chunk u32  next_gen u64
//! origins u16, each: len u8, name (ASCII letters, digits, '-')
//! entries u32, each: index u32, origin u16, gen u64   (indices strictly increasing)
//! "ATRMFEND"
//! ```
//! Integers are big-endian. A chunk's origin is the disk that wrote it, so a disk made
//! from another's chunks (a snapshot's, say) names them without copying.

use std::collections::BTreeMap;
use std::sync::Arc;

/// Bytes per encrypted data unit; a unit's number (its offset on the disk / 4096) is its
/// XTS tweak.
pub const UNIT: usize = 4096;

/// Bytes per chunk: a power of two and a multiple of the 4 KiB XTS unit.
pub const CHUNK: u64 = 1 << 20;

const MAGIC: &[u8; 8] = b"ATRMFST1";
const END: &[u8; 8] = b"ATRMFEND";
/// The longest origin name (a disk's unique id is 36).
const MAX_ORIGIN: usize = 64;

/// One stored chunk: the disk that wrote it and the generation it was written under.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ChunkRef {
    /// The disk whose writer created the chunk.
    pub origin: Arc<str>,
    /// Its generation, unique among that disk's chunks of one index.
    pub gen: u64,
}

/// A version of a stored manifest, for a conditional replace (object stores only).
#[derive(Debug, Clone, Default)]
#[cfg_attr(not(feature = "object-store"), allow(dead_code))]
pub(crate) struct Version {
    pub(crate) e_tag: Option<String>,
    pub(crate) version: Option<String>,
}

/// Which chunk holds each part of one disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The disk's size in bytes.
    pub size: u64,
    /// The generation the disk's writer uses next; every chunk it wrote is older.
    pub next_gen: u64,
    /// Chunk index → the chunk holding it.
    pub chunks: BTreeMap<u32, ChunkRef>,
}

/// The name of a chunk in the store: `ORIGIN/INDEX-GEN`, in fixed-width hex.
pub fn chunk_name(origin: &str, index: u32, gen: u64) -> String {
    format!("{origin}/{index:08x}-{gen:016x}")
}

/// The parts of a name [`chunk_name`] made.
pub fn parse_chunk_name(name: &str) -> Option<(&str, u32, u64)> {
    let (origin, rest) = name.rsplit_once('/')?;
    let (index, gen) = rest.split_once('-')?;
    if !valid_origin(origin) || index.len() != 8 || gen.len() != 16 {
        return None;
    }
    Some((
        origin,
        u32::from_str_radix(index, 16).ok()?,
        u64::from_str_radix(gen, 16).ok()?,
    ))
}

/// Whether `name` may name a disk in the store: it becomes part of paths.
pub fn valid_origin(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_ORIGIN
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

impl Manifest {
    /// An empty manifest: every chunk reads as zeros.
    pub fn empty(size: u64) -> Self {
        Manifest {
            size,
            next_gen: 1,
            chunks: BTreeMap::new(),
        }
    }

    /// The number of chunks a disk of `size` bytes spans.
    pub fn chunk_count(size: u64) -> u64 {
        size.div_ceil(CHUNK)
    }

    /// The stored form.
    pub fn encode(&self) -> Vec<u8> {
        let mut origins: Vec<&Arc<str>> = self.chunks.values().map(|c| &c.origin).collect();
        origins.sort();
        origins.dedup();
        let mut out = Vec::with_capacity(64 + self.chunks.len() * 14);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.size.to_be_bytes());
        out.extend_from_slice(&(CHUNK as u32).to_be_bytes());
        out.extend_from_slice(&self.next_gen.to_be_bytes());
        out.extend_from_slice(&(origins.len() as u16).to_be_bytes());
        for origin in &origins {
            out.push(origin.len() as u8);
            out.extend_from_slice(origin.as_bytes());
        }
        out.extend_from_slice(&(self.chunks.len() as u32).to_be_bytes());
        for (index, chunk) in &self.chunks {
            let origin = origins
                .binary_search(&&chunk.origin)
                .expect("every origin is listed");
            out.extend_from_slice(&index.to_be_bytes());
            out.extend_from_slice(&(origin as u16).to_be_bytes());
            out.extend_from_slice(&chunk.gen.to_be_bytes());
        }
        out.extend_from_slice(END);
        out
    }

    /// Parses the stored form, refusing anything [`Self::encode`] would not write.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let mut r = Reader(bytes);
        if r.take(8)? != MAGIC {
            return Err("not a manifest".into());
        }
        let size = r.u64()?;
        if size == 0 || size % UNIT as u64 != 0 {
            return Err(format!("bad disk size {size}"));
        }
        if u64::from(r.u32()?) != CHUNK {
            return Err("a chunk size this build does not use".into());
        }
        let next_gen = r.u64()?;
        let origin_count = r.u16()?;
        let mut origins: Vec<Arc<str>> = Vec::with_capacity(origin_count.into());
        for _ in 0..origin_count {
            let len = r.take(1)?[0] as usize;
            let name = std::str::from_utf8(r.take(len)?).map_err(|_| "bad origin name")?;
            if !valid_origin(name) || origins.last().is_some_and(|o| **o >= *name) {
                return Err(format!("bad origin name {name:?}"));
            }
            origins.push(name.into());
        }
        let count = r.u32()?;
        let max_index = Self::chunk_count(size);
        let mut chunks = BTreeMap::new();
        let mut previous: Option<u32> = None;
        for _ in 0..count {
            let (index, origin, gen) = (r.u32()?, r.u16()?, r.u64()?);
            if u64::from(index) >= max_index || previous.is_some_and(|p| p >= index) {
                return Err(format!("chunk index {index} out of order or range"));
            }
            let origin = origins
                .get(usize::from(origin))
                .ok_or("an origin that is not listed")?;
            if gen == 0 {
                return Err("generation zero".into());
            }
            chunks.insert(
                index,
                ChunkRef {
                    origin: origin.clone(),
                    gen,
                },
            );
            previous = Some(index);
        }
        if origins
            .iter()
            .any(|o| !chunks.values().any(|c: &ChunkRef| c.origin == *o))
        {
            return Err("an origin no chunk names".into());
        }
        if r.take(8)? != END || !r.0.is_empty() {
            return Err("bytes after the last entry".into());
        }
        Ok(Manifest {
            size,
            next_gen,
            chunks,
        })
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("truncated".into());
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_be_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_be_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_be_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        let mut m = Manifest::empty(5 * CHUNK + 4096);
        m.next_gen = 9;
        let (a, b): (Arc<str>, Arc<str>) = ("disk-b".into(), "disk-a".into());
        m.chunks.insert(
            0,
            ChunkRef {
                origin: a.clone(),
                gen: 3,
            },
        );
        m.chunks.insert(2, ChunkRef { origin: b, gen: 1 });
        m.chunks.insert(5, ChunkRef { origin: a, gen: 8 });
        m
    }

    #[test]
    fn manifests_round_trip_and_damage_is_refused() {
        let m = sample();
        let bytes = m.encode();
        assert_eq!(Manifest::decode(&bytes).unwrap(), m);
        for cut in 0..bytes.len() {
            assert!(Manifest::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut extra = bytes.clone();
        extra.push(0);
        assert!(Manifest::decode(&extra).is_err());
        // An index past the disk's end.
        let mut big = m.clone();
        big.chunks.insert(
            6,
            ChunkRef {
                origin: "x".into(),
                gen: 1,
            },
        );
        assert!(Manifest::decode(&big.encode()).is_err());
        // A bad origin name would become a path.
        let mut evil = m;
        evil.chunks.insert(
            1,
            ChunkRef {
                origin: "../x".into(),
                gen: 1,
            },
        );
        assert!(Manifest::decode(&evil.encode()).is_err());
    }

    #[test]
    fn chunk_names_round_trip() {
        let name = chunk_name("4f1c-aa", 17, 0x1_0000_0001);
        assert_eq!(name, "4f1c-aa/00000011-0000000100000001");
        assert_eq!(
            parse_chunk_name(&name),
            Some(("4f1c-aa", 17, 0x1_0000_0001))
        );
        for bad in [
            "x/11-1",
            "../a/00000011-0000000100000001",
            "a/0000001g-0000000100000001",
            "a00000011-0000000100000001",
        ] {
            assert_eq!(parse_chunk_name(bad), None, "{bad}");
        }
    }
}
