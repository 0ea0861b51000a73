//! A minimal NBD client: fixed newstyle, `OPT_GO`, simple replies, one request at a time.
//! Enough to show a disk's contents (`atrest demo`), not a block device.

use std::fmt;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::{
    be_u32, encode_option, encode_request, encode_string, Command, Request, FLAG_FIXED_NEWSTYLE,
    FLAG_NO_ZEROES, NBDMAGIC, OPT_GO, REP_ACK, REP_INFO, SIMPLE_HEADER,
};

/// Why a client call failed.
#[derive(Debug)]
pub enum ClientError {
    /// The connection failed.
    Io(std::io::Error),
    /// The server broke the protocol.
    Protocol(&'static str),
    /// The server refused the export during the handshake, with its message.
    Refused(String),
    /// The server answered the request with this error number.
    Server(u32),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Io(e) => write!(f, "{e}"),
            ClientError::Protocol(what) => write!(f, "NBD protocol violation: {what}"),
            ClientError::Refused(message) => write!(f, "the server refused the export: {message}"),
            ClientError::Server(n) => {
                let name = match *n {
                    crate::EIO => "EIO (input/output error)",
                    crate::EINVAL => "EINVAL (invalid argument)",
                    crate::ENOSPC => "ENOSPC (no space left)",
                    crate::EOVERFLOW => "EOVERFLOW (value too large)",
                    crate::ESHUTDOWN => "ESHUTDOWN",
                    _ => "error",
                };
                write!(f, "NBD error {n}, {name}")
            }
        }
    }
}

impl std::error::Error for ClientError {}

impl From<std::io::Error> for ClientError {
    fn from(e: std::io::Error) -> Self {
        ClientError::Io(e)
    }
}

/// A connection to one export.
#[derive(Debug)]
pub struct Client {
    stream: TcpStream,
    cookie: u64,
}

impl Client {
    /// Connects to `addr` and selects `export` with `OPT_GO`.
    pub async fn connect(addr: SocketAddr, export: &str) -> Result<Self, ClientError> {
        let mut stream = TcpStream::connect(addr).await?;
        let mut hello = [0u8; 18];
        stream.read_exact(&mut hello).await?;
        if hello[..8] != NBDMAGIC.to_be_bytes() {
            return Err(ClientError::Protocol("not an NBD server"));
        }
        let flags = u32::from(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES);
        let mut go = encode_string(export);
        go.extend_from_slice(&0u16.to_be_bytes());
        let mut msg = flags.to_be_bytes().to_vec();
        msg.extend_from_slice(&encode_option(OPT_GO, &go));
        stream.write_all(&msg).await?;
        loop {
            let mut head = [0u8; 20];
            stream.read_exact(&mut head).await?;
            let reply = be_u32(&head[12..16]);
            let mut data = vec![0u8; be_u32(&head[16..20]) as usize];
            stream.read_exact(&mut data).await?;
            match reply {
                REP_ACK => return Ok(Client { stream, cookie: 0 }),
                REP_INFO => continue,
                _ => {
                    return Err(ClientError::Refused(
                        String::from_utf8_lossy(&data).into_owned(),
                    ))
                }
            }
        }
    }

    /// Sends one request and reads its simple reply with `reply_len` bytes of data.
    async fn call(
        &mut self,
        command: Command,
        offset: u64,
        length: u32,
        payload: &[u8],
        reply_len: usize,
    ) -> Result<Vec<u8>, ClientError> {
        self.cookie += 1;
        let request = Request {
            flags: 0,
            command,
            cookie: self.cookie,
            offset,
            length,
        };
        let mut msg = encode_request(&request).to_vec();
        msg.extend_from_slice(payload);
        self.stream.write_all(&msg).await?;
        let mut head = [0u8; SIMPLE_HEADER];
        self.stream.read_exact(&mut head).await?;
        if be_u32(&head[..4]) != crate::SIMPLE_REPLY_MAGIC {
            return Err(ClientError::Protocol("not a simple reply"));
        }
        match be_u32(&head[4..8]) {
            0 => {
                let mut data = vec![0u8; reply_len];
                self.stream.read_exact(&mut data).await?;
                Ok(data)
            }
            error => Err(ClientError::Server(error)),
        }
    }

    /// Reads `len` bytes at `offset`.
    pub async fn read(&mut self, offset: u64, len: u32) -> Result<Vec<u8>, ClientError> {
        self.call(Command::Read, offset, len, &[], len as usize)
            .await
    }

    /// Writes `data` at `offset`.
    pub async fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), ClientError> {
        self.call(Command::Write, offset, data.len() as u32, data, 0)
            .await
            .map(drop)
    }

    /// Makes what was written durable.
    pub async fn flush(&mut self) -> Result<(), ClientError> {
        self.call(Command::Flush, 0, 0, &[], 0).await.map(drop)
    }
}
