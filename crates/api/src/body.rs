//! Reading request bodies: a size limit and JSON with Azure-style errors.

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::StatusCode;
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::http::{Body, MAX_BODY};

/// Reads the whole body, refusing bodies over [`MAX_BODY`].
pub(crate) async fn read_body(body: Body) -> Result<Bytes, ApiError> {
    read_body_up_to(body, MAX_BODY).await
}

/// Reads the whole body, refusing bodies over `limit` bytes.
pub(crate) async fn read_body_up_to(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            format!("The request body is larger than {limit} bytes."),
        )),
        Err(_) => Err(ApiError::bad_request(
            "BadParameter",
            "The request body could not be read.",
        )),
    }
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
