//! Audit events as bytes, in two forms:
//!
//! - **Canonical**: every field, length-prefixed, so no two different events encode alike.
//!   The chain's MAC covers it and the journal holds it.
//! - **Block**: how the audit log stores a run of consecutive events in one row. Each
//!   event is written as its numbers, as differences from the event before it in the
//!   block, the texts that differ from that event's, and its chain hash. The events of a
//!   caller repeat most texts (caller, tenant, address, vault, client), so a block is a
//!   fraction of the canonical size, and the log writes and syncs little per event.
//!
//! Both forms are read back through [`Fields`], the one list of an event's fields in
//! canonical order.

use atrest_core::audit::{AuditEvent, AuditEventRef};

/// Leads the canonical bytes of every event.
const CANONICAL_TAG: &[u8] = b"atrest-audit-v1";

/// Leads every block: the block form's version.
const BLOCK_FORMAT: u8 = 1;

const NUMBERS: usize = 4;
const TEXTS: usize = 16;

/// An event's fields in canonical order: the numbers (sequence number, time, status,
/// duration) and the texts (the required ones first, then the optional ones).
#[derive(Default)]
struct Fields<'a> {
    numbers: [i64; NUMBERS],
    texts: [Option<&'a str>; TEXTS],
}

impl<'a> Fields<'a> {
    fn of(e: &AuditEventRef<'a>, seq: i64) -> Self {
        Fields {
            numbers: [seq, e.time_ms, i64::from(e.status), e.duration_ms],
            texts: [
                Some(e.operation),
                Some(e.result_signature),
                Some(e.result_type),
                Some(e.result_description),
                Some(e.caller_ip),
                Some(e.http_method),
                Some(e.request_uri),
                Some(e.correlation_id),
                Some(e.client_info),
                e.app_id,
                e.object_id,
                e.tenant_id,
                e.identity_type,
                e.mi_resource_id,
                e.resource,
                e.target_id,
            ],
        }
    }

    /// The event these fields describe; `None` if a required text is missing or the
    /// status is not an HTTP status.
    fn to_ref(&self) -> Option<AuditEventRef<'a>> {
        let [seq, time_ms, status, duration_ms] = self.numbers;
        let [operation, result_signature, result_type, result_description, caller_ip, http_method, request_uri, correlation_id, client_info, app_id, object_id, tenant_id, identity_type, mi_resource_id, resource, target_id] =
            self.texts;
        Some(AuditEventRef {
            seq,
            time_ms,
            status: u16::try_from(status).ok()?,
            duration_ms,
            operation: operation?,
            result_signature: result_signature?,
            result_type: result_type?,
            result_description: result_description?,
            caller_ip: caller_ip?,
            http_method: http_method?,
            request_uri: request_uri?,
            correlation_id: correlation_id?,
            client_info: client_info?,
            app_id,
            object_id,
            tenant_id,
            identity_type,
            mi_resource_id,
            resource,
            target_id,
        })
    }
}

/// Reads the pieces of a byte string front to back; every read fails past the end.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }

    fn fixed<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    fn varint(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let [byte] = self.fixed::<1>()?;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }

    fn text(&mut self, len: usize) -> Option<&'a str> {
        std::str::from_utf8(self.take(len)?).ok()
    }
}

/// Appends the canonical bytes of `e`, numbered `seq`, to `out`.
pub(crate) fn encode(e: &AuditEventRef<'_>, seq: i64, out: &mut Vec<u8>) {
    let fields = Fields::of(e, seq);
    out.extend_from_slice(CANONICAL_TAG);
    for n in fields.numbers {
        out.extend_from_slice(&n.to_be_bytes());
    }
    for text in fields.texts {
        match text {
            None => out.extend_from_slice(&u32::MAX.to_be_bytes()),
            Some(s) => {
                out.extend_from_slice(&(s.len() as u32).to_be_bytes());
                out.extend_from_slice(s.as_bytes());
            }
        }
    }
}

/// The event whose canonical bytes are exactly `bytes`; `None` for anything else.
pub(crate) fn decode(bytes: &[u8]) -> Option<AuditEventRef<'_>> {
    let mut r = Reader(bytes);
    if r.take(CANONICAL_TAG.len())? != CANONICAL_TAG {
        return None;
    }
    let mut fields = Fields::default();
    for n in &mut fields.numbers {
        *n = i64::from_be_bytes(r.fixed()?);
    }
    for text in &mut fields.texts {
        let len = u32::from_be_bytes(r.fixed()?);
        if len != u32::MAX {
            *text = Some(r.text(len as usize)?);
        }
    }
    r.0.is_empty().then_some(())?;
    fields.to_ref()
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Writes a block: consecutive events with their chain hashes.
///
/// Layout: the format byte, then per event its numbers as zigzag varints of the
/// difference from the previous event's (from zero for the first), a 16-bit little-endian
/// mask of the texts equal to the previous event's, each other text as a varint of its
/// length plus one (zero for none) and its bytes, and the 32-byte hash.
pub(crate) struct BlockWriter<'a> {
    out: Vec<u8>,
    previous: Option<Fields<'a>>,
}

impl<'a> BlockWriter<'a> {
    pub(crate) fn with_capacity(events: usize) -> Self {
        let mut out = Vec::with_capacity(1 + 96 * events);
        out.push(BLOCK_FORMAT);
        BlockWriter {
            out,
            previous: None,
        }
    }

    /// Adds `e`, numbered `seq`, whose chain hash is `hash`.
    pub(crate) fn push(&mut self, e: &AuditEventRef<'a>, seq: i64, hash: &[u8; 32]) {
        let fields = Fields::of(e, seq);
        let previous = self.previous.as_ref();
        for (i, n) in fields.numbers.iter().enumerate() {
            let delta = n.wrapping_sub(previous.map_or(0, |p| p.numbers[i]));
            put_varint(&mut self.out, ((delta << 1) ^ (delta >> 63)) as u64);
        }
        let mut same = 0u16;
        for (i, text) in fields.texts.iter().enumerate() {
            if previous.is_some_and(|p| p.texts[i] == *text) {
                same |= 1 << i;
            }
        }
        self.out.extend_from_slice(&same.to_le_bytes());
        for (i, text) in fields.texts.iter().enumerate() {
            if same & (1 << i) == 0 {
                put_varint(&mut self.out, text.map_or(0, |s| s.len() as u64 + 1));
                self.out
                    .extend_from_slice(text.unwrap_or_default().as_bytes());
            }
        }
        self.out.extend_from_slice(hash);
        self.previous = Some(fields);
    }

    pub(crate) fn finish(self) -> Vec<u8> {
        self.out
    }
}

/// What a block holds: its events (numbered) with their stored hashes, in order, as far as
/// they could be read.
#[derive(Debug, Default)]
pub(crate) struct Block {
    pub(crate) events: Vec<(AuditEvent, [u8; 32])>,
    /// False when the block is damaged after `events` (or in its format byte).
    pub(crate) whole: bool,
}

/// Reads the next event of a block and its hash; `previous` holds the fields of the
/// event before it and is updated to this one's.
fn read_entry<'a>(r: &mut Reader<'a>, previous: &mut Fields<'a>) -> Option<(AuditEvent, [u8; 32])> {
    for n in &mut previous.numbers {
        let zigzag = r.varint()?;
        let delta = (zigzag >> 1) as i64 ^ -((zigzag & 1) as i64);
        *n = n.wrapping_add(delta);
    }
    let same = u16::from_le_bytes(r.fixed()?);
    for (i, text) in previous.texts.iter_mut().enumerate() {
        if same & (1 << i) == 0 {
            *text = match r.varint()? {
                0 => None,
                len => Some(r.text(usize::try_from(len - 1).ok()?)?),
            };
        }
    }
    let hash = r.fixed()?;
    Some((previous.to_ref()?.to_event(), hash))
}

/// Reads a block written by [`BlockWriter`].
pub(crate) fn decode_block(bytes: &[u8]) -> Block {
    let mut r = Reader(bytes);
    let mut block = Block::default();
    if r.fixed::<1>() != Some([BLOCK_FORMAT]) {
        return block;
    }
    let mut previous = Fields::default();
    while !r.0.is_empty() {
        match read_entry(&mut r, &mut previous) {
            Some(event) => block.events.push(event),
            None => return block,
        }
    }
    block.whole = true;
    block
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: i64) -> AuditEvent {
        AuditEvent {
            time_ms: 1_700_000_000_000 + 7 * n,
            operation: if n % 3 == 0 { "SecretSet" } else { "SecretGet" }.into(),
            result_signature: "OK".into(),
            result_type: "Success".into(),
            status: if n == 2 { 403 } else { 200 },
            duration_ms: n % 4,
            caller_ip: "127.0.0.1".into(),
            app_id: Some("9a3f0c1e-1111-4c2b-8d4e-0123456789ab".into()),
            tenant_id: Some("72f988bf-86f1-41af-91ab-2d7cd011db47".into()),
            identity_type: (n != 1).then(|| "app".into()),
            resource: Some("vault1".into()),
            target_id: Some(format!(
                "https://vault1.vault.localhost:8443/secrets/s{}",
                n / 10
            )),
            http_method: "GET".into(),
            request_uri: format!("https://vault1.vault.localhost:8443/secrets/s{}", n / 10),
            correlation_id: format!("{n:08}-0000-4000-8000-000000000000"),
            client_info: "azsdk-python-keyvault-secrets/4.9.0 Python/3.11.7".into(),
            ..AuditEvent::default()
        }
    }

    #[test]
    fn canonical_bytes_decode_to_the_same_event() {
        for n in 0..4 {
            let mut body = Vec::new();
            encode(&event(n).view(), 0, &mut body);
            assert_eq!(decode(&body), Some(event(n).view()));
            assert_eq!(decode(&body[..body.len() - 1]), None);
            body.push(0);
            assert_eq!(decode(&body), None);
        }
    }

    fn block_of(events: &[AuditEvent], first_seq: i64) -> Vec<u8> {
        let mut block = BlockWriter::with_capacity(events.len());
        for (i, e) in events.iter().enumerate() {
            block.push(&e.view(), first_seq + i as i64, &[i as u8; 32]);
        }
        block.finish()
    }

    #[test]
    fn a_block_reads_back_as_written_and_is_a_fraction_of_the_canonical_size() {
        let events: Vec<AuditEvent> = (0..100).map(event).collect();
        let bytes = block_of(&events, 41);
        let block = decode_block(&bytes);
        assert!(block.whole);
        assert_eq!(block.events.len(), 100);
        for (i, (e, hash)) in block.events.iter().enumerate() {
            let expected = AuditEvent {
                seq: 41 + i as i64,
                ..events[i].clone()
            };
            assert_eq!(*e, expected);
            assert_eq!(*hash, [i as u8; 32]);
        }
        let canonical: usize = events
            .iter()
            .map(|e| {
                let mut out = Vec::new();
                encode(&e.view(), 0, &mut out);
                out.len()
            })
            .sum();
        assert!(
            bytes.len() * 3 < canonical,
            "block {} bytes vs canonical {canonical}",
            bytes.len()
        );
    }

    #[test]
    fn a_damaged_block_reads_back_up_to_the_damage() {
        let events: Vec<AuditEvent> = (0..5).map(event).collect();
        let bytes = block_of(&events, 1);
        let cut = decode_block(&bytes[..bytes.len() - 1]);
        assert!(!cut.whole);
        assert_eq!(cut.events.len(), 4);
        let mut wrong_format = bytes.clone();
        wrong_format[0] = 9;
        let none = decode_block(&wrong_format);
        assert!(!none.whole && none.events.is_empty());
        assert!(
            decode_block(&[BLOCK_FORMAT]).whole,
            "an empty block is whole"
        );
    }
}
