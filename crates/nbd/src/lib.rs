//! The NBD wire protocol (fixed newstyle, structured replies) that the server in
//! `atrest-disk`, `atrest demo` and the fuzz target share: constants under the protocol
//! document's names, pure parsers, encoders and a minimal [`client::Client`]. See
//! ARCHITECTURE.md.
#![forbid(unsafe_code)]

pub mod client;

/// The server's greeting, `"NBDMAGIC"`.
pub const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
/// `"IHAVEOPT"`: the newstyle greeting and the magic of every option.
pub const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
/// The magic of an option reply.
pub const OPTION_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
/// The magic of a transmission request.
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
/// The magic of a simple reply.
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
/// The magic of a structured reply chunk.
pub const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;

/// Handshake flag `NBD_FLAG_FIXED_NEWSTYLE` (and the client's `NBD_FLAG_C_FIXED_NEWSTYLE`).
pub const FLAG_FIXED_NEWSTYLE: u16 = 1;
/// Handshake flag `NBD_FLAG_NO_ZEROES` (and the client's `NBD_FLAG_C_NO_ZEROES`).
pub const FLAG_NO_ZEROES: u16 = 2;

/// `NBD_OPT_EXPORT_NAME`.
pub const OPT_EXPORT_NAME: u32 = 1;
/// `NBD_OPT_ABORT`.
pub const OPT_ABORT: u32 = 2;
/// `NBD_OPT_LIST`.
pub const OPT_LIST: u32 = 3;
/// `NBD_OPT_INFO`.
pub const OPT_INFO: u32 = 6;
/// `NBD_OPT_GO`.
pub const OPT_GO: u32 = 7;
/// `NBD_OPT_STRUCTURED_REPLY`.
pub const OPT_STRUCTURED_REPLY: u32 = 8;
/// `NBD_OPT_LIST_META_CONTEXT`.
pub const OPT_LIST_META_CONTEXT: u32 = 9;
/// `NBD_OPT_SET_META_CONTEXT`.
pub const OPT_SET_META_CONTEXT: u32 = 10;

/// `NBD_REP_ACK`.
pub const REP_ACK: u32 = 1;
/// `NBD_REP_SERVER`.
pub const REP_SERVER: u32 = 2;
/// `NBD_REP_INFO`.
pub const REP_INFO: u32 = 3;
/// `NBD_REP_META_CONTEXT`.
pub const REP_META_CONTEXT: u32 = 4;
/// `NBD_REP_ERR_UNSUP`.
pub const REP_ERR_UNSUP: u32 = 0x8000_0001;
/// `NBD_REP_ERR_INVALID`.
pub const REP_ERR_INVALID: u32 = 0x8000_0003;
/// `NBD_REP_ERR_UNKNOWN`.
pub const REP_ERR_UNKNOWN: u32 = 0x8000_0006;
/// `NBD_REP_ERR_TOO_BIG`.
pub const REP_ERR_TOO_BIG: u32 = 0x8000_0009;

/// `NBD_INFO_EXPORT`.
pub const INFO_EXPORT: u16 = 0;
/// `NBD_INFO_NAME`.
pub const INFO_NAME: u16 = 1;
/// `NBD_INFO_BLOCK_SIZE`.
pub const INFO_BLOCK_SIZE: u16 = 3;

/// Transmission flag `NBD_FLAG_HAS_FLAGS`.
pub const TFLAG_HAS_FLAGS: u16 = 1 << 0;
/// Transmission flag `NBD_FLAG_READ_ONLY`.
pub const TFLAG_READ_ONLY: u16 = 1 << 1;
/// Transmission flag `NBD_FLAG_SEND_FLUSH`.
pub const TFLAG_SEND_FLUSH: u16 = 1 << 2;
/// Transmission flag `NBD_FLAG_SEND_FUA`.
pub const TFLAG_SEND_FUA: u16 = 1 << 3;
/// Transmission flag `NBD_FLAG_SEND_TRIM`.
pub const TFLAG_SEND_TRIM: u16 = 1 << 5;
/// Transmission flag `NBD_FLAG_SEND_WRITE_ZEROES`.
pub const TFLAG_SEND_WRITE_ZEROES: u16 = 1 << 6;
/// Transmission flag `NBD_FLAG_CAN_MULTI_CONN`.
pub const TFLAG_CAN_MULTI_CONN: u16 = 1 << 8;

/// `NBD_CMD_FLAG_FUA`.
pub const CMD_FLAG_FUA: u16 = 1 << 0;
/// `NBD_CMD_FLAG_NO_HOLE`: zeroes must stay allocated.
pub const CMD_FLAG_NO_HOLE: u16 = 1 << 1;
/// `NBD_CMD_FLAG_REQ_ONE`.
pub const CMD_FLAG_REQ_ONE: u16 = 1 << 3;

/// `NBD_REPLY_FLAG_DONE`.
pub const REPLY_FLAG_DONE: u16 = 1;
/// `NBD_REPLY_TYPE_OFFSET_DATA`.
pub const REPLY_TYPE_OFFSET_DATA: u16 = 1;
/// `NBD_REPLY_TYPE_OFFSET_HOLE`: a range of a read that reads as zeros, sent without them.
pub const REPLY_TYPE_OFFSET_HOLE: u16 = 2;
/// `NBD_REPLY_TYPE_BLOCK_STATUS`.
pub const REPLY_TYPE_BLOCK_STATUS: u16 = 5;
/// `NBD_REPLY_TYPE_ERROR`.
pub const REPLY_TYPE_ERROR: u16 = (1 << 15) + 1;

/// `base:allocation` state `NBD_STATE_HOLE`.
pub const STATE_HOLE: u32 = 1;
/// `base:allocation` state `NBD_STATE_ZERO`.
pub const STATE_ZERO: u32 = 2;

/// `NBD_EPERM`.
pub const EPERM: u32 = 1;
/// `NBD_EIO`.
pub const EIO: u32 = 5;
/// `NBD_EINVAL`.
pub const EINVAL: u32 = 22;
/// `NBD_ENOSPC`.
pub const ENOSPC: u32 = 28;
/// `NBD_EOVERFLOW`.
pub const EOVERFLOW: u32 = 75;
/// `NBD_ESHUTDOWN`.
pub const ESHUTDOWN: u32 = 108;

/// The metadata context of allocation state.
pub const BASE_ALLOCATION: &str = "base:allocation";

/// The length of a transmission request header.
pub const REQUEST_HEADER: usize = 28;

/// A transmission-phase command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// `NBD_CMD_READ`.
    Read,
    /// `NBD_CMD_WRITE`.
    Write,
    /// `NBD_CMD_DISC`.
    Disconnect,
    /// `NBD_CMD_FLUSH`.
    Flush,
    /// `NBD_CMD_TRIM`.
    Trim,
    /// `NBD_CMD_WRITE_ZEROES`.
    WriteZeroes,
    /// `NBD_CMD_BLOCK_STATUS`.
    BlockStatus,
    /// Anything else, by number.
    Other(u16),
}

/// A transmission-phase request header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// Command flags.
    pub flags: u16,
    /// The command.
    pub command: Command,
    /// The client's cookie, echoed in the reply.
    pub cookie: u64,
    /// Offset in bytes.
    pub offset: u64,
    /// Length in bytes.
    pub length: u32,
}

/// A protocol violation that ends the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError(pub &'static str);

/// A big-endian `u16` from the first two bytes of `b`.
pub fn be_u16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

/// A big-endian `u32` from the first four bytes of `b`.
pub fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// A big-endian `u64` from the first eight bytes of `b`.
pub fn be_u64(b: &[u8]) -> u64 {
    u64::from_be_bytes(b[..8].try_into().expect("eight bytes"))
}

/// Parses the 28-byte request header.
pub fn parse_request(header: &[u8; 28]) -> Result<Request, ProtocolError> {
    if be_u32(&header[0..4]) != REQUEST_MAGIC {
        return Err(ProtocolError("bad request magic"));
    }
    let command = match be_u16(&header[6..8]) {
        0 => Command::Read,
        1 => Command::Write,
        2 => Command::Disconnect,
        3 => Command::Flush,
        4 => Command::Trim,
        6 => Command::WriteZeroes,
        7 => Command::BlockStatus,
        n => Command::Other(n),
    };
    Ok(Request {
        flags: be_u16(&header[4..6]),
        command,
        cookie: be_u64(&header[8..16]),
        offset: be_u64(&header[16..24]),
        length: be_u32(&header[24..28]),
    })
}

/// A length-prefixed string at the start of `data`, and what follows it.
fn take_string(data: &[u8]) -> Result<(String, &[u8]), ProtocolError> {
    if data.len() < 4 {
        return Err(ProtocolError("truncated string length"));
    }
    let len = be_u32(&data[..4]) as usize;
    let rest = &data[4..];
    if len > rest.len() || len > 4096 {
        return Err(ProtocolError("string longer than its option"));
    }
    let text =
        std::str::from_utf8(&rest[..len]).map_err(|_| ProtocolError("string is not UTF-8"))?;
    Ok((text.to_owned(), &rest[len..]))
}

/// Parses the payload of `OPT_INFO`/`OPT_GO`: the export name and the information
/// types requested.
pub fn parse_export_query(data: &[u8]) -> Result<(String, Vec<u16>), ProtocolError> {
    let (name, rest) = take_string(data)?;
    if rest.len() < 2 {
        return Err(ProtocolError("truncated information request count"));
    }
    let count = be_u16(&rest[..2]) as usize;
    let rest = &rest[2..];
    if rest.len() != count * 2 {
        return Err(ProtocolError(
            "information request count does not match the option length",
        ));
    }
    Ok((name, rest.chunks(2).map(be_u16).collect()))
}

/// Parses the payload of `OPT_{LIST,SET}_META_CONTEXT`: the export name and the queries.
pub fn parse_meta_query(data: &[u8]) -> Result<(String, Vec<String>), ProtocolError> {
    let (name, rest) = take_string(data)?;
    if rest.len() < 4 {
        return Err(ProtocolError("truncated query count"));
    }
    let count = be_u32(&rest[..4]);
    let mut rest = &rest[4..];
    let mut queries = Vec::new();
    for _ in 0..count {
        let (query, after) = take_string(rest)?;
        queries.push(query);
        rest = after;
    }
    if !rest.is_empty() {
        return Err(ProtocolError("bytes after the last query"));
    }
    Ok((name, queries))
}

/// The 28-byte header of a transmission request.
pub fn encode_request(request: &Request) -> [u8; REQUEST_HEADER] {
    let command = match request.command {
        Command::Read => 0,
        Command::Write => 1,
        Command::Disconnect => 2,
        Command::Flush => 3,
        Command::Trim => 4,
        Command::WriteZeroes => 6,
        Command::BlockStatus => 7,
        Command::Other(n) => n,
    };
    let mut h = [0u8; REQUEST_HEADER];
    h[0..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
    h[4..6].copy_from_slice(&request.flags.to_be_bytes());
    h[6..8].copy_from_slice(&command.to_be_bytes());
    h[8..16].copy_from_slice(&request.cookie.to_be_bytes());
    h[16..24].copy_from_slice(&request.offset.to_be_bytes());
    h[24..28].copy_from_slice(&request.length.to_be_bytes());
    h
}

/// A length-prefixed (`u32`) string, as options carry names.
pub fn encode_string(s: &str) -> Vec<u8> {
    let mut d = (s.len() as u32).to_be_bytes().to_vec();
    d.extend_from_slice(s.as_bytes());
    d
}

/// An option (`IHAVEOPT`, option number, length, data), as a client sends it.
pub fn encode_option(option: u32, data: &[u8]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(16 + data.len());
    msg.extend_from_slice(&IHAVEOPT.to_be_bytes());
    msg.extend_from_slice(&option.to_be_bytes());
    msg.extend_from_slice(&(data.len() as u32).to_be_bytes());
    msg.extend_from_slice(data);
    msg
}

/// An option reply (magic, option, reply type, length, data), as a server sends it.
pub fn encode_option_reply(option: u32, reply: u32, data: &[u8]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(20 + data.len());
    msg.extend_from_slice(&OPTION_REPLY_MAGIC.to_be_bytes());
    msg.extend_from_slice(&option.to_be_bytes());
    msg.extend_from_slice(&reply.to_be_bytes());
    msg.extend_from_slice(&(data.len() as u32).to_be_bytes());
    msg.extend_from_slice(data);
    msg
}

/// Length of a simple reply header.
pub const SIMPLE_HEADER: usize = 16;
/// Length of a structured reply chunk header.
pub const CHUNK_HEADER: usize = 20;

/// The header of a simple reply to request `cookie` (error 0 for success).
pub fn simple_header(cookie: u64, error: u32) -> [u8; SIMPLE_HEADER] {
    let mut h = [0u8; SIMPLE_HEADER];
    h[..4].copy_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
    h[4..8].copy_from_slice(&error.to_be_bytes());
    h[8..].copy_from_slice(&cookie.to_be_bytes());
    h
}

/// The header of a structured reply chunk of type `kind` carrying `len` bytes, for request
/// `cookie`; `done` marks the reply's last chunk.
pub fn chunk_header(cookie: u64, kind: u16, len: usize, done: bool) -> [u8; CHUNK_HEADER] {
    let flags = if done { REPLY_FLAG_DONE } else { 0 };
    let mut h = [0u8; CHUNK_HEADER];
    h[..4].copy_from_slice(&STRUCTURED_REPLY_MAGIC.to_be_bytes());
    h[4..6].copy_from_slice(&flags.to_be_bytes());
    h[6..8].copy_from_slice(&kind.to_be_bytes());
    h[8..16].copy_from_slice(&cookie.to_be_bytes());
    h[16..].copy_from_slice(&(len as u32).to_be_bytes());
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(magic: u32, flags: u16, kind: u16, cookie: u64, offset: u64, len: u32) -> [u8; 28] {
        let mut h = [0u8; 28];
        h[0..4].copy_from_slice(&magic.to_be_bytes());
        h[4..6].copy_from_slice(&flags.to_be_bytes());
        h[6..8].copy_from_slice(&kind.to_be_bytes());
        h[8..16].copy_from_slice(&cookie.to_be_bytes());
        h[16..24].copy_from_slice(&offset.to_be_bytes());
        h[24..28].copy_from_slice(&len.to_be_bytes());
        h
    }

    #[test]
    fn requests_parse() {
        let r = parse_request(&header(REQUEST_MAGIC, CMD_FLAG_FUA, 1, 7, 4096, 512)).unwrap();
        assert_eq!(
            r,
            Request {
                flags: CMD_FLAG_FUA,
                command: Command::Write,
                cookie: 7,
                offset: 4096,
                length: 512
            }
        );
        assert_eq!(
            parse_request(&header(REQUEST_MAGIC, 0, 9, 1, 0, 0))
                .unwrap()
                .command,
            Command::Other(9)
        );
        assert!(parse_request(&header(0x1234_5678, 0, 0, 1, 0, 0)).is_err());
    }

    fn string(s: &str) -> Vec<u8> {
        encode_string(s)
    }

    #[test]
    fn requests_round_trip() {
        for command in [
            Command::Read,
            Command::Write,
            Command::Disconnect,
            Command::Flush,
            Command::Trim,
            Command::WriteZeroes,
            Command::BlockStatus,
            Command::Other(9),
        ] {
            let request = Request {
                flags: CMD_FLAG_FUA,
                command,
                cookie: 42,
                offset: 1 << 40,
                length: 4096,
            };
            assert_eq!(parse_request(&encode_request(&request)), Ok(request));
        }
    }

    #[test]
    fn export_queries_parse_and_refuse_bad_lengths() {
        let mut d = string("default/d1");
        d.extend_from_slice(&2u16.to_be_bytes());
        d.extend_from_slice(&INFO_NAME.to_be_bytes());
        d.extend_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
        assert_eq!(
            parse_export_query(&d).unwrap(),
            ("default/d1".into(), vec![INFO_NAME, INFO_BLOCK_SIZE])
        );
        assert!(parse_export_query(&d[..d.len() - 1]).is_err());
        assert!(parse_export_query(&[0, 0, 0, 9, b'a']).is_err());
        assert!(parse_export_query(&[]).is_err());
        let mut huge = 0xffff_ffffu32.to_be_bytes().to_vec();
        huge.extend_from_slice(&[0; 8]);
        assert!(parse_export_query(&huge).is_err());
    }

    #[test]
    fn meta_queries_parse() {
        let mut d = string("e");
        d.extend_from_slice(&2u32.to_be_bytes());
        d.extend_from_slice(&string(BASE_ALLOCATION));
        d.extend_from_slice(&string("qemu:dirty-bitmap:x"));
        assert_eq!(
            parse_meta_query(&d).unwrap(),
            (
                "e".into(),
                vec![BASE_ALLOCATION.into(), "qemu:dirty-bitmap:x".into()]
            )
        );
        let mut extra = d.clone();
        extra.push(0);
        assert!(parse_meta_query(&extra).is_err());
        let mut lying = string("e");
        lying.extend_from_slice(&1000u32.to_be_bytes());
        assert!(parse_meta_query(&lying).is_err());
    }

    /// The fuzz target's invariants (`fuzz/fuzz_targets/nbd_request.rs`) over a
    /// deterministic sweep of random and mutated inputs, so every test run exercises them.
    #[test]
    fn parsers_never_panic_and_agree_with_their_input() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut valid = string("default/d1");
        valid.extend_from_slice(&1u32.to_be_bytes());
        valid.extend_from_slice(&string(BASE_ALLOCATION));
        for round in 0..20_000 {
            let mut data: Vec<u8> = if round % 2 == 0 {
                (0..next() % 64).map(|_| next() as u8).collect()
            } else {
                valid.clone()
            };
            if !data.is_empty() {
                let at = (next() as usize) % data.len();
                data[at] = next() as u8;
            }
            if let Some(header) = data.get(..28) {
                let _ = parse_request(header.try_into().unwrap());
            }
            if let Ok((name, requests)) = parse_export_query(&data) {
                assert_eq!(data.len(), 4 + name.len() + 2 + 2 * requests.len());
            }
            if let Ok((name, queries)) = parse_meta_query(&data) {
                let strings: usize = queries.iter().map(|q| 4 + q.len()).sum();
                assert_eq!(data.len(), 4 + name.len() + 4 + strings);
            }
        }
    }
}
