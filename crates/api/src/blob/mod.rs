//! Disk access URLs (`beginGetAccess`), served as Azure Blob serves a page blob: a disk's
//! plaintext followed by a computed fixed-VHD footer, with `GET` and `HEAD`, whole or by
//! `Range`/`x-ms-range`, authorized by the URL's signature alone (the storage SDKs'
//! `BlobClient.from_blob_url` downloads it), until the grant expires or is revoked.

use std::sync::Arc;

use atrest_core::operation::Operation;
use atrest_disk::Grant;
use atrest_vhd::FOOTER_LEN;
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{
    HeaderValue, ACCEPT_RANGES, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG, RANGE,
};
use hyper::http::request::Parts;
use hyper::{Method, Response, StatusCode};

use crate::arm::compute::ACCESS_ACCOUNT;
use crate::error::ApiError;
use crate::http::{form_pairs, param, Resp};
use crate::pipeline::Ctx;
use crate::state::AppState;

/// The most one `GET` serves: downloads ask for ranges (the SDKs take 4 to 32 MiB each).
const MAX_RESPONSE: u64 = 256 << 20;

/// A request for a disk access URL: `/{ACCESS_ACCOUNT}/{resource group}/{disk}.vhd`.
#[derive(Debug)]
pub(crate) struct Route<'a> {
    resource_group: &'a str,
    file: &'a str,
    head: bool,
}

impl<'a> Route<'a> {
    /// The route of `method` and the path `segments`, if one.
    pub(crate) fn parse(method: &Method, segments: &[&'a str]) -> Option<Self> {
        match segments {
            [account, resource_group, file] if *account == ACCESS_ACCOUNT => {
                let head = match *method {
                    Method::GET => false,
                    Method::HEAD => true,
                    _ => return None,
                };
                Some(Route {
                    resource_group,
                    file,
                    head,
                })
            }
            _ => None,
        }
    }

    /// The audited operation.
    pub(crate) fn operation(&self) -> Operation {
        Operation::DiskAccessRead
    }
}

/// A storage-style error: the code in `x-ms-error-code`, where the storage SDKs read it.
fn storage_error(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(status, code, message)
}

/// The inclusive byte range a `Range` or `x-ms-range` header asks of `total` bytes.
fn requested_range(value: &str, total: u64) -> Result<(u64, u64), ApiError> {
    let invalid = || {
        storage_error(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "InvalidRange",
            format!("The range specified is invalid for the current size of the resource ({total} bytes)."),
        )
    };
    let (first, last) = value
        .trim()
        .strip_prefix("bytes=")
        .and_then(|r| r.split_once('-'))
        .ok_or_else(invalid)?;
    let first: u64 = first.parse().map_err(|_| invalid())?;
    let last = match last {
        "" => total.saturating_sub(1),
        l => l
            .parse::<u64>()
            .map_err(|_| invalid())?
            .min(total.saturating_sub(1)),
    };
    if first >= total || first > last {
        return Err(invalid());
    }
    Ok((first, last))
}

/// Bytes `first..=last` of the disk served as a fixed VHD: plaintext, then the footer.
fn read(grant: &Grant, first: u64, last: u64) -> Result<Vec<u8>, ApiError> {
    let size = grant.size();
    let mut out = vec![0u8; (last - first + 1) as usize];
    let data_end = (last + 1).min(size);
    if first < data_end {
        grant
            .read(first, &mut out[..(data_end - first) as usize])
            .map_err(|e| ApiError::internal(&e))?;
    }
    for pos in first.max(size)..=last {
        out[(pos - first) as usize] = grant.footer[(pos - size) as usize];
    }
    Ok(out)
}

/// Serves one request for a disk access URL.
pub(crate) async fn handle(
    state: &AppState,
    ctx: &mut Ctx,
    route: Route<'_>,
    parts: &Parts,
) -> Result<Resp, ApiError> {
    let query = form_pairs(parts.uri.query().unwrap_or(""));
    let grant: Arc<Grant> = param(&query, "sig")
        .and_then(|token| state.compute.granted(token, ctx.now))
        .filter(|g| {
            g.resource_group.eq_ignore_ascii_case(route.resource_group)
                && route.file.eq_ignore_ascii_case(&format!("{}.vhd", g.name))
        })
        .ok_or_else(|| {
            storage_error(
                StatusCode::FORBIDDEN,
                "AuthenticationFailed",
                "Server failed to authenticate the request: the access URL is unknown, revoked or expired.",
            )
        })?;
    ctx.resource = Some(format!(
        "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Compute/disks/{}",
        state.settings.subscription, grant.resource_group, grant.name
    ));
    let total = grant.size() + FOOTER_LEN as u64;
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
    let range = match header("x-ms-range").or_else(|| header(RANGE.as_str())) {
        Some(value) => Some(requested_range(value, total)?),
        None => None,
    };
    let (first, last) = range.unwrap_or((0, total - 1));
    let length = last - first + 1;
    let body = if route.head {
        Vec::new()
    } else {
        if length > MAX_RESPONSE {
            return Err(storage_error(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "InvalidRange",
                format!("Ask for at most {MAX_RESPONSE} bytes per request, with a Range header."),
            ));
        }
        let grant = grant.clone();
        tokio::task::spawn_blocking(move || read(&grant, first, last))
            .await
            .map_err(|e| ApiError::internal(&e))??
    };
    let status = if range.is_some() && !route.head {
        StatusCode::PARTIAL_CONTENT
    } else {
        StatusCode::OK
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    let value = |v: String| HeaderValue::from_str(&v).unwrap_or(HeaderValue::from_static(""));
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    headers.insert("x-ms-blob-type", HeaderValue::from_static("PageBlob"));
    headers.insert("x-ms-version", HeaderValue::from_static("2021-08-06"));
    headers.insert(ETAG, value(format!("\"{:x}\"", grant.expires)));
    if route.head || range.is_none() {
        headers.insert(
            CONTENT_LENGTH,
            value(if route.head { total } else { length }.to_string()),
        );
    }
    if range.is_some() && !route.head {
        headers.insert(
            CONTENT_RANGE,
            value(format!("bytes {first}-{last}/{total}")),
        );
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(requested_range("bytes=0-511", 1024).unwrap(), (0, 511));
        assert_eq!(requested_range("bytes=512-", 1024).unwrap(), (512, 1023));
        assert_eq!(
            requested_range("bytes=1000-5000", 1024).unwrap(),
            (1000, 1023)
        );
        for bad in ["bytes=1024-", "bytes=5-4", "bytes=a-b", "0-5", "bytes=-5"] {
            assert_eq!(
                requested_range(bad, 1024).unwrap_err().code,
                "InvalidRange",
                "{bad}"
            );
        }
    }
}
