//! The NBD server that exports a running machine's disks: fixed newstyle handshake with
//! `OPT_EXPORT_NAME`, `OPT_GO`, `OPT_INFO`, `OPT_LIST`, `OPT_ABORT`,
//! `OPT_STRUCTURED_REPLY` and `OPT_{LIST,SET}_META_CONTEXT` (`base:allocation`); commands
//! `READ`, `WRITE` (with FUA), `FLUSH`, `TRIM`, `WRITE_ZEROES`, `BLOCK_STATUS` and `DISC`.
//!
//! The wire format and its pure parsers live in `atrest-nbd`, which the fuzz target and
//! `atrest demo` share. A malformed handshake or request ends the
//! connection or gets a protocol error; it never reaches a disk. Requests on one
//! connection run concurrently and their replies may come back in any order, as the
//! protocol allows.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, Semaphore};
use tokio::task::JoinSet;

use atrest_nbd::{
    be_u32, be_u64, chunk_header, encode_option_reply, parse_export_query, parse_meta_query,
    parse_request, simple_header, Command, ProtocolError, Request, BASE_ALLOCATION, CHUNK_HEADER,
    CMD_FLAG_FUA, CMD_FLAG_NO_HOLE, CMD_FLAG_REQ_ONE, EINVAL, EIO, ENOSPC, EOVERFLOW, EPERM,
    ESHUTDOWN, FLAG_FIXED_NEWSTYLE, FLAG_NO_ZEROES, IHAVEOPT, INFO_BLOCK_SIZE, INFO_EXPORT,
    INFO_NAME, NBDMAGIC, OPT_ABORT, OPT_EXPORT_NAME, OPT_GO, OPT_INFO, OPT_LIST,
    OPT_LIST_META_CONTEXT, OPT_SET_META_CONTEXT, OPT_STRUCTURED_REPLY, REPLY_TYPE_BLOCK_STATUS,
    REPLY_TYPE_ERROR, REPLY_TYPE_OFFSET_DATA, REPLY_TYPE_OFFSET_HOLE, REP_ACK, REP_ERR_INVALID,
    REP_ERR_TOO_BIG, REP_ERR_UNKNOWN, REP_ERR_UNSUP, REP_INFO, REP_META_CONTEXT, REP_SERVER,
    SIMPLE_HEADER, STATE_HOLE, STATE_ZERO, TFLAG_CAN_MULTI_CONN, TFLAG_HAS_FLAGS, TFLAG_READ_ONLY,
    TFLAG_SEND_FLUSH, TFLAG_SEND_FUA, TFLAG_SEND_TRIM, TFLAG_SEND_WRITE_ZEROES,
};

use crate::service::{BekExport, Export};
use atrest_blocks::{BlockError, Volume};

/// The client flags this server understands: fixed newstyle and no zeroes.
const CLIENT_FLAGS_KNOWN: u32 = (FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES) as u32;
/// What every export offers.
const TRANSMISSION_FLAGS: u16 = TFLAG_HAS_FLAGS
    | TFLAG_SEND_FLUSH
    | TFLAG_SEND_FUA
    | TFLAG_SEND_TRIM
    | TFLAG_SEND_WRITE_ZEROES
    | TFLAG_CAN_MULTI_CONN;
/// The id this server gives the `base:allocation` context.
const BASE_ALLOCATION_ID: u32 = 1;

/// Largest option payload accepted during the handshake.
const MAX_OPTION: u32 = 64 * 1024;
/// Largest READ or WRITE, advertised as the maximum block size.
pub const MAX_REQUEST: u32 = 32 * 1024 * 1024;
/// Preferred request size and alignment advertised to clients.
const PREFERRED_BLOCK: u32 = atrest_blocks::UNIT as u32;
/// Longest span one BLOCK_STATUS reply describes.
const MAX_STATUS_SPAN: u64 = 1 << 30;
/// Requests of one connection in flight at once.
const IN_FLIGHT: usize = 16;
/// How long a client may take over the handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the server finds the exports it serves.
pub trait Exports: Send + Sync + 'static {
    /// What is exported as `name`.
    fn export(&self, name: &str) -> Option<Export>;
    /// Every export name.
    fn export_names(&self) -> Vec<String>;
}

impl Exports for crate::service::Compute {
    fn export(&self, name: &str) -> Option<Export> {
        crate::service::Compute::nbd_export(self, name)
    }

    fn export_names(&self) -> Vec<String> {
        crate::service::Compute::export_names(self)
    }
}

/// Serves NBD on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    exports: Arc<dyn Exports>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "NBD accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => return,
        };
        let _ = stream.set_nodelay(true);
        let exports = exports.clone();
        tokio::spawn(async move {
            if let Err(e) = connection(stream, exports).await {
                tracing::debug!(%peer, error = %e, "NBD connection ended");
            }
        });
    }
}

/// Why a connection ended early.
#[derive(Debug)]
enum End {
    Io(std::io::Error),
    Protocol(ProtocolError),
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::Io(e) => write!(f, "{e}"),
            End::Protocol(p) => write!(f, "protocol violation: {}", p.0),
        }
    }
}

impl From<std::io::Error> for End {
    fn from(e: std::io::Error) -> Self {
        End::Io(e)
    }
}

impl From<ProtocolError> for End {
    fn from(e: ProtocolError) -> Self {
        End::Protocol(e)
    }
}

impl Export {
    fn size(&self) -> u64 {
        match self {
            Export::Disk(disk) => disk.file.size(),
            Export::Bek(bek) => bek.size(),
        }
    }

    fn flags(&self) -> u16 {
        match self {
            Export::Disk(_) => TRANSMISSION_FLAGS,
            Export::Bek(_) => TRANSMISSION_FLAGS | TFLAG_READ_ONLY,
        }
    }
}

/// What the handshake settled, and the connection's spare buffers.
struct Session {
    export: Export,
    structured: bool,
    allocation_context: bool,
    buffers: Buffers,
}

impl Session {
    /// The session on `disk` exported as `name`; `base:allocation` is on if the last
    /// `SET_META_CONTEXT` selected it for that export.
    fn new(export: Export, structured: bool, meta: &Option<(String, bool)>, name: &str) -> Self {
        Session {
            export,
            structured,
            allocation_context: meta.as_ref().is_some_and(|(n, on)| *on && n == name),
            buffers: Buffers::default(),
        }
    }
}

/// Request and reply buffers kept for reuse: a fresh megabyte for every request would
/// cost a page fault per page.
#[derive(Default)]
struct Buffers(std::sync::Mutex<Vec<Vec<u8>>>);

impl Buffers {
    /// A buffer of `len` bytes (zeros, or a reused buffer's old bytes).
    fn take(&self, len: usize) -> Vec<u8> {
        let mut buf = self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop()
            .unwrap_or_default();
        buf.resize(len, 0);
        buf
    }

    /// Keeps `buf` for reuse, unless enough are kept or it is large (a connection keeps
    /// at most `IN_FLIGHT` × 4 MiB).
    fn give(&self, buf: Vec<u8>) {
        let mut spare = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if spare.len() < IN_FLIGHT && buf.capacity() <= 4 << 20 {
            spare.push(buf);
        }
    }
}

async fn option_reply(
    w: &mut (impl AsyncWriteExt + Unpin),
    option: u32,
    reply: u32,
    data: &[u8],
) -> std::io::Result<()> {
    w.write_all(&encode_option_reply(option, reply, data)).await
}

fn info_export(export: &Export) -> Vec<u8> {
    let mut d = INFO_EXPORT.to_be_bytes().to_vec();
    d.extend_from_slice(&export.size().to_be_bytes());
    d.extend_from_slice(&export.flags().to_be_bytes());
    d
}

fn info_block_size() -> Vec<u8> {
    let mut d = INFO_BLOCK_SIZE.to_be_bytes().to_vec();
    d.extend_from_slice(&1u32.to_be_bytes());
    d.extend_from_slice(&PREFERRED_BLOCK.to_be_bytes());
    d.extend_from_slice(&MAX_REQUEST.to_be_bytes());
    d
}

/// Runs the option haggling; `None` when the client aborted or went away.
async fn handshake(stream: &mut TcpStream, exports: &dyn Exports) -> Result<Option<Session>, End> {
    let mut hello = NBDMAGIC.to_be_bytes().to_vec();
    hello.extend_from_slice(&IHAVEOPT.to_be_bytes());
    hello.extend_from_slice(&(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).to_be_bytes());
    stream.write_all(&hello).await?;
    let client_flags = stream.read_u32().await?;
    if client_flags & !CLIENT_FLAGS_KNOWN != 0 || client_flags & 1 == 0 {
        return Err(ProtocolError("unsupported client flags").into());
    }
    let no_zeroes = client_flags & u32::from(FLAG_NO_ZEROES) != 0;
    let mut structured = false;
    let mut meta: Option<(String, bool)> = None;
    loop {
        let mut head = [0u8; 16];
        stream.read_exact(&mut head).await?;
        if be_u64(&head[..8]) != IHAVEOPT {
            return Err(ProtocolError("bad option magic").into());
        }
        let option = be_u32(&head[8..12]);
        let len = be_u32(&head[12..16]);
        if len > MAX_OPTION {
            option_reply(stream, option, REP_ERR_TOO_BIG, b"option too large").await?;
            return Err(ProtocolError("option too large").into());
        }
        let mut data = vec![0u8; len as usize];
        stream.read_exact(&mut data).await?;
        match option {
            OPT_EXPORT_NAME => {
                let name = String::from_utf8_lossy(&data).into_owned();
                let Some(export) = exports.export(&name) else {
                    // This option cannot be refused politely: the protocol says to close.
                    return Err(ProtocolError("unknown export").into());
                };
                let mut reply = export.size().to_be_bytes().to_vec();
                reply.extend_from_slice(&export.flags().to_be_bytes());
                if !no_zeroes {
                    reply.extend_from_slice(&[0u8; 124]);
                }
                stream.write_all(&reply).await?;
                return Ok(Some(Session::new(export, structured, &meta, &name)));
            }
            OPT_ABORT => {
                let _ = option_reply(stream, option, REP_ACK, &[]).await;
                return Ok(None);
            }
            OPT_LIST => {
                if !data.is_empty() {
                    option_reply(stream, option, REP_ERR_INVALID, b"LIST takes no data").await?;
                    continue;
                }
                for name in exports.export_names() {
                    let mut d = (name.len() as u32).to_be_bytes().to_vec();
                    d.extend_from_slice(name.as_bytes());
                    option_reply(stream, option, REP_SERVER, &d).await?;
                }
                option_reply(stream, option, REP_ACK, &[]).await?;
            }
            OPT_INFO | OPT_GO => {
                let (name, requests) = match parse_export_query(&data) {
                    Ok(q) => q,
                    Err(e) => {
                        option_reply(stream, option, REP_ERR_INVALID, e.0.as_bytes()).await?;
                        continue;
                    }
                };
                let Some(export) = exports.export(&name) else {
                    let msg = format!("no export named '{name}'");
                    option_reply(stream, option, REP_ERR_UNKNOWN, msg.as_bytes()).await?;
                    continue;
                };
                option_reply(stream, option, REP_INFO, &info_export(&export)).await?;
                option_reply(stream, option, REP_INFO, &info_block_size()).await?;
                if requests.contains(&INFO_NAME) {
                    let mut d = INFO_NAME.to_be_bytes().to_vec();
                    d.extend_from_slice(name.as_bytes());
                    option_reply(stream, option, REP_INFO, &d).await?;
                }
                option_reply(stream, option, REP_ACK, &[]).await?;
                if option == OPT_GO {
                    return Ok(Some(Session::new(export, structured, &meta, &name)));
                }
            }
            OPT_STRUCTURED_REPLY => {
                if !data.is_empty() {
                    option_reply(
                        stream,
                        option,
                        REP_ERR_INVALID,
                        b"STRUCTURED_REPLY takes no data",
                    )
                    .await?;
                } else {
                    structured = true;
                    option_reply(stream, option, REP_ACK, &[]).await?;
                }
            }
            OPT_LIST_META_CONTEXT | OPT_SET_META_CONTEXT => {
                if !structured {
                    option_reply(
                        stream,
                        option,
                        REP_ERR_INVALID,
                        b"negotiate structured replies first",
                    )
                    .await?;
                    continue;
                }
                let (name, queries) = match parse_meta_query(&data) {
                    Ok(q) => q,
                    Err(e) => {
                        option_reply(stream, option, REP_ERR_INVALID, e.0.as_bytes()).await?;
                        continue;
                    }
                };
                if exports.export(&name).is_none() {
                    let msg = format!("no export named '{name}'");
                    option_reply(stream, option, REP_ERR_UNKNOWN, msg.as_bytes()).await?;
                    continue;
                }
                let listing = option == OPT_LIST_META_CONTEXT;
                let matched = queries
                    .iter()
                    .any(|q| q == BASE_ALLOCATION || (listing && (q == "base:" || q.is_empty())))
                    || (listing && queries.is_empty());
                if matched {
                    let mut d = BASE_ALLOCATION_ID.to_be_bytes().to_vec();
                    d.extend_from_slice(BASE_ALLOCATION.as_bytes());
                    option_reply(stream, option, REP_META_CONTEXT, &d).await?;
                }
                if !listing {
                    meta = Some((name, matched));
                }
                option_reply(stream, option, REP_ACK, &[]).await?;
            }
            _ => {
                option_reply(stream, option, REP_ERR_UNSUP, b"option not supported").await?;
            }
        }
    }
}

async fn connection(mut stream: TcpStream, exports: Arc<dyn Exports>) -> Result<(), End> {
    let session =
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(&mut stream, exports.as_ref()))
            .await
        {
            Ok(result) => result?,
            Err(_) => return Err(ProtocolError("handshake timed out").into()),
        };
    let Some(session) = session else {
        return Ok(());
    };
    let session = Arc::new(session);
    let (read, write) = stream.into_split();
    let mut read = BufReader::with_capacity(256 * 1024, read);
    let writer = Arc::new(Mutex::new(write));
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut tasks = JoinSet::new();
    let outcome = loop {
        let mut header = [0u8; 28];
        if let Err(e) = read.read_exact(&mut header).await {
            break if e.kind() == std::io::ErrorKind::UnexpectedEof {
                Ok(())
            } else {
                Err(e.into())
            };
        }
        let request = match parse_request(&header) {
            Ok(r) => r,
            Err(e) => break Err(e.into()),
        };
        if request.command == Command::Disconnect {
            break Ok(());
        }
        let payload = if request.command == Command::Write {
            if request.length > MAX_REQUEST {
                // The payload cannot be skipped safely at any size; end the connection.
                break Err(ProtocolError("write larger than the maximum block size").into());
            }
            let mut data = session.buffers.take(request.length as usize);
            if let Err(e) = read.read_exact(&mut data).await {
                break Err(e.into());
            }
            data
        } else {
            Vec::new()
        };
        let permit = slots
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let session = session.clone();
        let writer = writer.clone();
        tasks.spawn(async move {
            let reply = execute(&session, request, payload).await;
            let sent = writer.lock().await.write_all(&reply).await;
            session.buffers.give(reply);
            drop(permit);
            sent
        });
        while let Some(done) = tasks.try_join_next() {
            if let Ok(Err(e)) = done {
                return Err(e.into());
            }
        }
    };
    while tasks.join_next().await.is_some() {}
    if let (Ok(()), Export::Disk(disk)) = (&outcome, &session.export) {
        // A soft disconnect: what was written is flushed before the socket closes.
        let disk = disk.clone();
        let _ = tokio::task::spawn_blocking(move || disk.file.flush()).await;
    }
    let _ = writer.lock().await.shutdown().await;
    outcome
}

fn simple_reply(cookie: u64, error: u32) -> Vec<u8> {
    simple_header(cookie, error).to_vec()
}

fn chunk(cookie: u64, kind: u16, payload: &[&[u8]]) -> Vec<u8> {
    let len: usize = payload.iter().map(|p| p.len()).sum();
    let mut msg = Vec::with_capacity(CHUNK_HEADER + len);
    msg.extend_from_slice(&chunk_header(cookie, kind, len, true));
    for p in payload {
        msg.extend_from_slice(p);
    }
    msg
}

/// A structured read reply of `runs` (as [`Volume::allocation`] splits the range at
/// `offset`): each never-written run is one `OFFSET_HOLE` chunk, sent without its zeros,
/// and each other run one `OFFSET_DATA` chunk.
fn read_with_holes(
    file: &Volume,
    cookie: u64,
    offset: u64,
    runs: &[(u64, bool)],
) -> Result<Vec<u8>, BlockError> {
    let data: u64 = runs
        .iter()
        .filter(|(_, hole)| !hole)
        .map(|(len, _)| len)
        .sum();
    let mut reply = Vec::with_capacity(runs.len() * (CHUNK_HEADER + 12) + data as usize);
    let mut pos = offset;
    for (i, &(len, hole)) in runs.iter().enumerate() {
        let done = i + 1 == runs.len();
        if hole {
            reply.extend_from_slice(&chunk_header(cookie, REPLY_TYPE_OFFSET_HOLE, 12, done));
            reply.extend_from_slice(&pos.to_be_bytes());
            reply.extend_from_slice(&(len as u32).to_be_bytes());
        } else {
            let len = len as usize;
            reply.extend_from_slice(&chunk_header(cookie, REPLY_TYPE_OFFSET_DATA, 8 + len, done));
            reply.extend_from_slice(&pos.to_be_bytes());
            let start = reply.len();
            reply.resize(start + len, 0);
            file.read(pos, &mut reply[start..])?;
        }
        pos += len;
    }
    Ok(reply)
}

/// An error reply, structured (with a message) when the session allows.
fn error_reply(session: &Session, cookie: u64, error: u32, message: &str) -> Vec<u8> {
    if session.structured {
        let message = &message.as_bytes()[..message.len().min(4096)];
        chunk(
            cookie,
            REPLY_TYPE_ERROR,
            &[
                &error.to_be_bytes(),
                &(message.len() as u16).to_be_bytes(),
                message,
            ],
        )
    } else {
        simple_reply(cookie, error)
    }
}

/// The errno a disk failure is reported as.
fn errno(e: &BlockError) -> u32 {
    match e {
        BlockError::OutOfRange { .. } => EINVAL,
        _ => EIO,
    }
}

/// Answers a request on a read-only image (a BEK VOLUME): reads, flushes (nothing to do)
/// and block status (all data); anything that writes is refused with `EPERM`.
fn read_only(session: &Session, bek: &BekExport, request: Request) -> Vec<u8> {
    let cookie = request.cookie;
    if bek.is_closed() {
        return error_reply(
            session,
            cookie,
            ESHUTDOWN,
            "the virtual machine was stopped",
        );
    }
    let (offset, length) = (request.offset, u64::from(request.length));
    let in_range = offset
        .checked_add(length)
        .is_some_and(|end| end <= bek.size());
    match request.command {
        Command::Write | Command::Trim | Command::WriteZeroes => {
            error_reply(session, cookie, EPERM, "the BEK VOLUME is read-only")
        }
        Command::Flush => simple_reply(cookie, 0),
        Command::Read | Command::BlockStatus if !in_range => error_reply(
            session,
            cookie,
            EINVAL,
            "the request runs past the end of the disk",
        ),
        Command::Read => {
            let mut reply = vec![0u8; SIMPLE_HEADER + length as usize];
            bek.read(offset, &mut reply[SIMPLE_HEADER..]);
            if session.structured {
                let mut chunk =
                    chunk_header(cookie, REPLY_TYPE_OFFSET_DATA, 8 + length as usize, true)
                        .to_vec();
                chunk.extend_from_slice(&offset.to_be_bytes());
                chunk.extend_from_slice(&reply[SIMPLE_HEADER..]);
                return chunk;
            }
            reply[..SIMPLE_HEADER].copy_from_slice(&simple_header(cookie, 0));
            reply
        }
        Command::BlockStatus if session.allocation_context && length > 0 => {
            let mut payload = BASE_ALLOCATION_ID.to_be_bytes().to_vec();
            payload.extend_from_slice(&(length.min(MAX_STATUS_SPAN) as u32).to_be_bytes());
            payload.extend_from_slice(&0u32.to_be_bytes());
            chunk(cookie, REPLY_TYPE_BLOCK_STATUS, &[&payload])
        }
        _ => error_reply(session, cookie, EINVAL, "unsupported command"),
    }
}

/// Runs one request against the disk and builds its reply.
async fn execute(session: &Arc<Session>, request: Request, payload: Vec<u8>) -> Vec<u8> {
    let disk = match &session.export {
        Export::Disk(disk) => disk.clone(),
        Export::Bek(bek) => return read_only(session, bek, request),
    };
    let cookie = request.cookie;
    let size = disk.file.size();
    let in_range = request
        .offset
        .checked_add(u64::from(request.length))
        .is_some_and(|end| end <= size);
    let fua = request.flags & CMD_FLAG_FUA != 0;
    if disk.is_closed() {
        return error_reply(
            session,
            cookie,
            ESHUTDOWN,
            "the virtual machine was stopped",
        );
    }
    match request.command {
        Command::Read
        | Command::Write
        | Command::Trim
        | Command::WriteZeroes
        | Command::BlockStatus
            if !in_range =>
        {
            let code = if request.command == Command::Write {
                ENOSPC
            } else {
                EINVAL
            };
            return error_reply(
                session,
                cookie,
                code,
                "the request runs past the end of the disk",
            );
        }
        Command::Read if request.length > MAX_REQUEST => {
            return error_reply(
                session,
                cookie,
                EOVERFLOW,
                "the read is larger than the maximum block size",
            );
        }
        Command::BlockStatus if !session.allocation_context => {
            return error_reply(
                session,
                cookie,
                EINVAL,
                "no metadata context was negotiated",
            );
        }
        Command::BlockStatus if request.length == 0 => {
            return error_reply(session, cookie, EINVAL, "BLOCK_STATUS needs a length");
        }
        Command::Other(_) | Command::Disconnect => {
            return error_reply(session, cookie, EINVAL, "unsupported command");
        }
        _ => {}
    }
    let s = session.clone();
    let result = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, BlockError> {
        let file = &disk.file;
        let (offset, length) = (request.offset, request.length);
        match request.command {
            Command::Read if s.structured => {
                let runs = file.allocation(offset, u64::from(length))?;
                if runs.iter().any(|(_, hole)| *hole) {
                    return read_with_holes(file, cookie, offset, &runs);
                }
                // The data is read straight into the reply, behind its header.
                let header = CHUNK_HEADER + 8;
                let mut reply = s.buffers.take(header + length as usize);
                file.read(offset, &mut reply[header..])?;
                reply[..CHUNK_HEADER].copy_from_slice(&chunk_header(
                    cookie,
                    REPLY_TYPE_OFFSET_DATA,
                    8 + length as usize,
                    true,
                ));
                reply[CHUNK_HEADER..header].copy_from_slice(&offset.to_be_bytes());
                Ok(reply)
            }
            Command::Read => {
                let mut reply = s.buffers.take(SIMPLE_HEADER + length as usize);
                file.read(offset, &mut reply[SIMPLE_HEADER..])?;
                reply[..SIMPLE_HEADER].copy_from_slice(&simple_header(cookie, 0));
                Ok(reply)
            }
            Command::Write => {
                let mut payload = payload;
                file.write_in_place(offset, &mut payload)?;
                s.buffers.give(payload);
                if fua {
                    file.flush()?;
                }
                Ok(simple_reply(cookie, 0))
            }
            Command::Trim | Command::WriteZeroes => {
                if request.command == Command::WriteZeroes && request.flags & CMD_FLAG_NO_HOLE != 0
                {
                    file.fill_zeroes(offset, u64::from(length))?;
                } else {
                    file.write_zeroes(offset, u64::from(length))?;
                }
                if fua {
                    file.flush()?;
                }
                Ok(simple_reply(cookie, 0))
            }
            Command::Flush => {
                file.flush()?;
                Ok(simple_reply(cookie, 0))
            }
            Command::BlockStatus => {
                let span = u64::from(length).min(MAX_STATUS_SPAN);
                let mut runs = file.extents(offset, span)?;
                if request.flags & CMD_FLAG_REQ_ONE != 0 {
                    runs.truncate(1);
                }
                let mut payload = BASE_ALLOCATION_ID.to_be_bytes().to_vec();
                for (len, zero) in runs {
                    payload.extend_from_slice(&(len as u32).to_be_bytes());
                    let flags = if zero { STATE_HOLE | STATE_ZERO } else { 0 };
                    payload.extend_from_slice(&flags.to_be_bytes());
                }
                Ok(chunk(cookie, REPLY_TYPE_BLOCK_STATUS, &[&payload]))
            }
            Command::Disconnect | Command::Other(_) => unreachable!("refused above"),
        }
    })
    .await;
    match result {
        Ok(Ok(reply)) => reply,
        Ok(Err(e)) => error_reply(session, cookie, errno(&e), &e.to_string()),
        Err(_) => error_reply(session, cookie, EIO, "the request failed"),
    }
}
