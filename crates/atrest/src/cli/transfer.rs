//! `atrest disk download|upload`: a disk's data as a fixed VHD file, through the disk's
//! access URL (`beginGetAccess`), with progress on stderr when it is a terminal.

use std::io::{IsTerminal, Read, Seek, SeekFrom, Write};
use std::path::Path;

use anyhow::{bail, Context};
use atrest_api::client::Method;
use serde_json::{json, Value};

use super::connection::Connection;

/// Bytes one download request asks for.
const DOWNLOAD_CHUNK: u64 = 16 << 20;
/// Bytes one page write carries: the page-blob limit.
const UPLOAD_CHUNK: u64 = 4 << 20;
/// The VHD footer after the data.
const FOOTER: u64 = 512;

/// Progress on stderr, redrawn in place, only when stderr is a terminal.
struct Progress {
    what: &'static str,
    total: u64,
    shown: bool,
}

impl Progress {
    fn new(what: &'static str, total: u64) -> Self {
        Progress {
            what,
            total,
            shown: std::io::stderr().is_terminal(),
        }
    }

    fn update(&self, done: u64) {
        if self.shown {
            let percent = done * 100 / self.total.max(1);
            let bar = "#".repeat((percent / 4) as usize);
            eprint!(
                "\r{} [{bar:<25}] {percent:>3}% {}/{} MiB",
                self.what,
                done >> 20,
                self.total >> 20
            );
        }
    }

    fn finish(&self) {
        if self.shown {
            eprintln!();
        }
    }
}

/// The access URL of `disk` for `access` (`Read` or `Write`), granted for an hour.
async fn grant(conn: &Connection, disk_path: &str, access: &str) -> anyhow::Result<String> {
    let body = json!({ "access": access, "durationInSeconds": 3600, "fileFormat": "VHD" });
    let granted = conn
        .management(
            Method::POST,
            &format!("{disk_path}/beginGetAccess"),
            Some(&body),
        )
        .await?;
    granted["accessSAS"]
        .as_str()
        .map(str::to_owned)
        .context("beginGetAccess returned no accessSAS")
}

async fn revoke(conn: &Connection, disk_path: &str) -> anyhow::Result<Value> {
    conn.management(Method::POST, &format!("{disk_path}/endGetAccess"), None)
        .await
}

/// Downloads disk `disk_path` into `file` as a fixed VHD; ends the access afterwards.
pub(super) async fn download(
    conn: &Connection,
    disk_path: &str,
    file: &Path,
) -> anyhow::Result<Value> {
    let url = grant(conn, disk_path, "Read").await?;
    let outcome = download_from(conn, &url, file).await;
    let revoked = revoke(conn, disk_path).await;
    let bytes = outcome?;
    revoked?;
    Ok(json!({ "file": file.display().to_string(), "bytes": bytes }))
}

async fn download_from(conn: &Connection, url: &str, file: &Path) -> anyhow::Result<u64> {
    let head = conn.access_url(Method::HEAD, url, &[], Vec::new()).await?;
    let total: u64 = head
        .headers
        .get("content-length")
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .context("the access URL gave no Content-Length")?;
    let mut out =
        std::fs::File::create(file).with_context(|| format!("cannot create {}", file.display()))?;
    let progress = Progress::new("download", total);
    let mut done = 0;
    while done < total {
        let last = (done + DOWNLOAD_CHUNK).min(total) - 1;
        let range = format!("bytes={done}-{last}");
        let resp = conn
            .access_url(
                Method::GET,
                url,
                &[("x-ms-range", range.as_str())],
                Vec::new(),
            )
            .await?;
        if resp.body.len() as u64 != last - done + 1 {
            bail!(
                "the access URL answered {} bytes for {range}",
                resp.body.len()
            );
        }
        out.write_all(&resp.body)?;
        done = last + 1;
        progress.update(done);
    }
    out.sync_all()?;
    progress.finish();
    Ok(total)
}

/// Uploads the fixed VHD `file` into disk `disk_path`, which was created for an upload
/// of the file's size; ends the upload, which checks the footer.
pub(super) async fn upload(
    conn: &Connection,
    disk_path: &str,
    file: &Path,
) -> anyhow::Result<Value> {
    let url = grant(conn, disk_path, "Write").await?;
    let mut input =
        std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
    let total = input.seek(SeekFrom::End(0))?;
    if total < FOOTER || !(total - FOOTER).is_multiple_of(1 << 20) {
        bail!(
            "{} is not a fixed VHD of whole MiB ({total} bytes)",
            file.display()
        );
    }
    input.seek(SeekFrom::Start(0))?;
    let page_url = format!("{url}&comp=page");
    let progress = Progress::new("upload", total);
    let mut done = 0;
    let mut chunk = vec![0u8; UPLOAD_CHUNK as usize];
    while done < total {
        // The footer goes in a write of its own, after the data.
        let len = if done < total - FOOTER {
            UPLOAD_CHUNK.min(total - FOOTER - done)
        } else {
            FOOTER
        };
        let buf = &mut chunk[..len as usize];
        input.read_exact(buf)?;
        // Never-written pages stay holes: all-zero ranges need no transfer.
        if buf.iter().any(|b| *b != 0) || done == total - FOOTER {
            let range = format!("bytes={done}-{}", done + len - 1);
            conn.access_url(
                Method::PUT,
                &page_url,
                &[
                    ("x-ms-range", range.as_str()),
                    ("x-ms-page-write", "update"),
                ],
                buf.to_vec(),
            )
            .await?;
        }
        done += len;
        progress.update(done);
    }
    progress.finish();
    revoke(conn, disk_path).await?;
    Ok(json!({ "file": file.display().to_string(), "bytes": total }))
}
