//! Reading request bodies: a size limit and JSON with Azure-style errors.

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::StatusCode;
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::http::{Body, MAX_BODY};

/// Reads the whole body, refusing bodies over [`MAX_BODY`].
pub(crate) async fn read_body(body: Body) -> Result<Bytes, ApiError> {
    read_body_up_to(body, MAX_BODY).await
}

/// How much of an oversized body is read and dropped before the refusal is sent, so that
/// a client still writing it reads the answer instead of a broken connection.
const DRAIN_LIMIT: usize = 16 << 20;

/// Reads the whole body, refusing bodies over `limit` bytes.
pub(crate) async fn read_body_up_to(mut body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let unreadable =
        || ApiError::bad_request("BadParameter", "The request body could not be read.");
    let mut buf = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(|_| unreadable())?.into_data() else {
            continue;
        };
        if buf.len() + data.len() > limit {
            let mut seen = buf.len() + data.len();
            while seen <= DRAIN_LIMIT {
                match body.frame().await {
                    Some(Ok(frame)) => seen += frame.data_ref().map_or(0, Bytes::len),
                    _ => break,
                }
            }
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestEntityTooLarge",
                format!("The request body is larger than {limit} bytes."),
            ));
        }
        buf.extend_from_slice(&data);
    }
    Ok(Bytes::from(buf))
}

/// Parses a JSON body into `T`, with an Azure-style error naming the fault.
pub(crate) fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.is_empty() {
        return Err(ApiError::bad_request(
            "BadParameter",
            "The request body is empty; a JSON object is required.",
        ));
    }
    serde_json::from_slice(body).map_err(|e| {
        let kind = if e.is_data() {
            "has a wrong type or value"
        } else {
            "is not valid JSON"
        };
        ApiError::bad_request("BadParameter", format!("The request body {kind}: {e}."))
    })
}
