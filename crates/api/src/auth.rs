//! Bearer-token authentication at the edge.

use atrest_identity::{Caller, TokenError};
use hyper::header::AUTHORIZATION;
use hyper::HeaderMap;

use crate::error::ApiError;
use crate::state::AppState;

/// The token in `Authorization: Bearer …`, if any.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Verifies the request's bearer token for `audiences`; a failure carries the
/// Key Vault challenge so clients know where to get a token.
pub(crate) fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    audiences: &[String],
    now: i64,
) -> Result<Caller, ApiError> {
    let result = match bearer(headers) {
        None => Err(TokenError::Missing),
        Some(token) => state.identity.verify(token, audiences, now),
    };
    result.map_err(|e| ApiError::unauthorized(&e, state.challenge()))
}

/// The refusal of a caller who is not an instance administrator.
pub(crate) fn not_admin(caller: &Caller) -> ApiError {
    ApiError::forbidden(format!(
        "The client '{}' with object id '{}' is not an atrest administrator.",
        caller.app_id, caller.object_id
    ))
}
