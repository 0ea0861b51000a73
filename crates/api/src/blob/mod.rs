//! Disk access URLs (`beginGetAccess`), served as Azure Blob serves a page blob, authorized
//! by the URL's signature alone, until the grant expires or is revoked. Read access: the
//! disk's plaintext followed by a computed fixed-VHD footer, with `GET` and `HEAD`, whole
//! or by `Range`/`x-ms-range` (`BlobClient.from_blob_url(…).download_blob()`). Write
//! access (an upload): page writes, `PUT ?comp=page` with `x-ms-range` and
//! `x-ms-page-write: update|clear` (`BlobClient.upload_page`), encrypted on arrival.

use std::sync::Arc;

use atrest_blocks::Change;
use atrest_core::operation::Operation;
use atrest_disk::Grant;
use atrest_vhd::{parse_page_range, FOOTER_LEN, MAX_PAGE_WRITE};
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{
    HeaderValue, ACCEPT_RANGES, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG, RANGE,
};
use hyper::http::request::Parts;
use hyper::{Method, Response, StatusCode};

use crate::arm::compute::ACCESS_ACCOUNT;
use crate::auth::authenticate;
use crate::body::read_body_up_to;
use crate::error::ApiError;
use crate::http::{form_pairs, param, Body, Resp};
use crate::pipeline::Ctx;
use crate::state::AppState;

/// The most one `GET` serves: downloads ask for ranges (the SDKs take 4 to 32 MiB each).
const MAX_RESPONSE: u64 = 256 << 20;

/// A request for a disk access URL: `/{ACCESS_ACCOUNT}/{resource group}/{disk}.vhd`.
#[derive(Debug)]
pub(crate) struct Route<'a> {
    resource_group: &'a str,
    file: &'a str,
    verb: Verb,
}

/// What a request does with the URL's blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verb {
    Get,
    Head,
    PutPages,
}

impl<'a> Route<'a> {
    /// The route of `method` and the path `segments`, if one.
    pub(crate) fn parse(method: &Method, segments: &[&'a str]) -> Option<Self> {
        match segments {
            [account, resource_group, file] if *account == ACCESS_ACCOUNT => {
                let verb = match *method {
                    Method::GET => Verb::Get,
                    Method::HEAD => Verb::Head,
                    Method::PUT => Verb::PutPages,
                    _ => return None,
                };
                Some(Route {
                    resource_group,
                    file,
                    verb,
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

/// The inclusive byte range a `Range` or `x-ms-range` header asks of `total` bytes.
fn requested_range(value: &str, total: u64) -> Result<(u64, u64), ApiError> {
    let invalid = || {
        ApiError::new(
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

/// Takes one page write (`PUT ?comp=page`) of an upload.
async fn put_pages(
    grant: Arc<Grant>,
    query: &[(String, String)],
    headers: &hyper::HeaderMap,
    total: u64,
    body: Body,
) -> Result<Resp, ApiError> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let bad =
        |code: &'static str, message: String| ApiError::new(StatusCode::BAD_REQUEST, code, message);
    if param(query, "comp") != Some("page") {
        return Err(bad(
            "InvalidQueryParameterValue",
            "An upload takes page writes: PUT ?comp=page.".into(),
        ));
    }
    let range = header("x-ms-range")
        .or_else(|| header(RANGE.as_str()))
        .ok_or_else(|| {
            bad(
                "MissingRequiredHeader",
                "A page write needs x-ms-range.".into(),
            )
        })?;
    let range = parse_page_range(range, total).map_err(|e| {
        ApiError::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "InvalidPageRange",
            e.to_string(),
        )
    })?;
    let clear = match header("x-ms-page-write") {
        Some(w) if w.eq_ignore_ascii_case("update") => false,
        Some(w) if w.eq_ignore_ascii_case("clear") => true,
        _ => {
            return Err(bad(
                "InvalidHeaderValue",
                "x-ms-page-write must be 'update' or 'clear'.".into(),
            ))
        }
    };
    let data = read_body_up_to(body, MAX_PAGE_WRITE as usize).await?;
    let len = range.end - range.start;
    if !clear && data.len() as u64 != len {
        return Err(bad(
            "InvalidHeaderValue",
            format!("The body is {} bytes; the range names {len}.", data.len()),
        ));
    }
    let start = range.start;
    tokio::task::spawn_blocking(move || {
        grant.write_pages(start, len, (!clear).then_some(&data[..]))
    })
    .await
    .map_err(|e| ApiError::internal(&e))?
    .map_err(|e| ApiError::internal(&e))?;
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::CREATED;
    let headers = resp.headers_mut();
    headers.insert("x-ms-blob-sequence-number", HeaderValue::from_static("0"));
    headers.insert(
        "x-ms-request-server-encrypted",
        HeaderValue::from_static("true"),
    );
    headers.insert("x-ms-version", HeaderValue::from_static("2021-08-06"));
    headers.insert(ETAG, HeaderValue::from_static("\"0x1\""));
    Ok(resp)
}

/// The grant behind `x-ms-previous-snapshot-url`: another snapshot's access URL.
fn previous_grant(state: &AppState, url: &str, now: i64) -> Result<Arc<Grant>, ApiError> {
    let query = url.split_once('?').map_or("", |(_, q)| q);
    param(&form_pairs(query), "sig")
        .and_then(|token| state.compute.granted(token, now))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "InvalidHeaderValue",
                "x-ms-previous-snapshot-url is not a live access URL of a snapshot.",
            )
        })
}

/// `GET ?comp=pagelist`: the ranges holding data, or, with a previous snapshot, the
/// ranges changed (`PageRange`) and cleared (`ClearRange`) since it, as Azure's page
/// range diff answers a managed disk's incremental snapshots. The footer is one page of
/// data; it never changes.
async fn page_list(
    grant: Arc<Grant>,
    previous: Option<Arc<Grant>>,
    total: u64,
) -> Result<Resp, ApiError> {
    let size = grant.size();
    let whole = previous.is_none();
    let ranges = tokio::task::spawn_blocking(move || match &previous {
        None => grant.data_ranges().map_err(|e| ApiError::internal(&e)),
        Some(older) => match grant.changes_since(older) {
            Some(changes) => changes.map_err(|e| ApiError::internal(&e)),
            None => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "InvalidHeaderValue",
                "x-ms-previous-snapshot-url must name an incremental snapshot of the same disk as this one.",
            )),
        },
    })
    .await
    .map_err(|e| ApiError::internal(&e))??;
    let mut xml = String::from(r#"<?xml version="1.0" encoding="utf-8"?><PageList>"#);
    for Change {
        first,
        last,
        cleared,
    } in ranges
    {
        let tag = if cleared { "ClearRange" } else { "PageRange" };
        xml.push_str(&format!(
            "<{tag}><Start>{first}</Start><End>{last}</End></{tag}>"
        ));
    }
    if whole {
        xml.push_str(&format!(
            "<PageRange><Start>{size}</Start><End>{}</End></PageRange>",
            total - 1
        ));
    }
    xml.push_str("</PageList>");
    let mut resp = Response::new(Full::new(Bytes::from(xml)));
    let headers = resp.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/xml"));
    headers.insert("x-ms-version", HeaderValue::from_static("2021-08-06"));
    headers.insert(
        "x-ms-blob-content-length",
        HeaderValue::from_str(&total.to_string()).expect("digits"),
    );
    headers.insert(ETAG, HeaderValue::from_static("\"0x1\""));
    Ok(resp)
}

/// Serves one request for a disk access URL.
pub(crate) async fn handle(
    state: &AppState,
    ctx: &mut Ctx,
    route: Route<'_>,
    parts: &Parts,
    body: Body,
) -> Result<Resp, ApiError> {
    let query = form_pairs(parts.uri.query().unwrap_or(""));
    let grant: Arc<Grant> = param(&query, "sig")
        .and_then(|token| state.compute.granted(token, ctx.now))
        .filter(|g| {
            g.resource_group.eq_ignore_ascii_case(route.resource_group)
                && route.file.eq_ignore_ascii_case(&format!("{}.vhd", g.name))
        })
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::FORBIDDEN,
                "AuthenticationFailed",
                "Server failed to authenticate the request: the access URL is unknown, revoked or expired.",
            )
        })?;
    ctx.resource = Some(grant.disk_id.clone());
    let total = grant.size() + FOOTER_LEN as u64;
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
    if grant.needs_token {
        // dataAccessAuthMode AzureActiveDirectory: the URL alone is not enough.
        let caller = authenticate(
            state,
            &parts.headers,
            state.identity.disk_audiences(),
            ctx.now,
        )?;
        let action = match (grant.snapshot, grant.write) {
            (false, true) => "Microsoft.Compute/disks/upload/action",
            (false, false) => "Microsoft.Compute/disks/download/action",
            (true, _) => "Microsoft.Compute/snapshots/download/action",
        };
        let object_ids = state.identity.object_ids_of(&caller.object_id)?;
        let allowed = state
            .identity
            .allows_data_action(&object_ids, &grant.disk_id, action)?;
        ctx.caller = Some(caller);
        if !allowed {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "AuthorizationPermissionMismatch",
                format!("The caller does not hold data action '{action}' on this disk."),
            ));
        }
    }
    if grant.write != (route.verb == Verb::PutPages) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "AuthorizationPermissionMismatch",
            "This access URL does not permit this operation: read access serves GET and HEAD, write access takes page writes.",
        ));
    }
    if route.verb == Verb::PutPages {
        return put_pages(grant, &query, &parts.headers, total, body).await;
    }
    if param(&query, "comp") == Some("pagelist") && route.verb == Verb::Get {
        let previous = header("x-ms-previous-snapshot-url")
            .map(|url| previous_grant(state, url, ctx.now))
            .transpose()?;
        return page_list(grant, previous, total).await;
    }
    let head = route.verb == Verb::Head;
    let range = match header("x-ms-range").or_else(|| header(RANGE.as_str())) {
        Some(value) => Some(requested_range(value, total)?),
        None => None,
    };
    let (first, last) = range.unwrap_or((0, total - 1));
    let length = last - first + 1;
    let body = if head {
        Vec::new()
    } else {
        if length > MAX_RESPONSE {
            return Err(ApiError::new(
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
    let status = if range.is_some() && !head {
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
    if head || range.is_none() {
        headers.insert(
            CONTENT_LENGTH,
            value(if head { total } else { length }.to_string()),
        );
    }
    if range.is_some() && !head {
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
