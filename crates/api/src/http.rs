//! Small HTTP helpers: bodies, JSON, query strings.

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};

/// Every response body is a complete buffer.
pub(crate) type Resp = Response<Full<Bytes>>;

/// A request body: from the wire, or whole, for requests the server makes of itself (the
/// disk service reaching a vault as a managed identity).
pub(crate) type Body = Either<Incoming, Full<Bytes>>;

/// Largest request body accepted (a 25 KiB secret as JSON fits many times over).
pub(crate) const MAX_BODY: usize = 1 << 20;

/// A JSON response.
pub(crate) fn json(status: StatusCode, value: &serde_json::Value) -> Resp {
    let mut resp = Response::new(Full::new(Bytes::from(value.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    resp
}

/// ARM's status for a PUT: 201 when it created the resource, 200 when it updated one.
pub(crate) fn created_status(created: bool) -> StatusCode {
    if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    }
}

/// ARM's status for a DELETE: 200 when something was deleted, 204 when nothing existed.
pub(crate) fn deleted_status(deleted: bool) -> StatusCode {
    if deleted {
        StatusCode::OK
    } else {
        StatusCode::NO_CONTENT
    }
}

/// An empty response.
pub(crate) fn empty(status: StatusCode) -> Resp {
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = status;
    resp
}

/// Decodes `application/x-www-form-urlencoded` or a query string into pairs.
pub(crate) fn form_pairs(text: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(text.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// The first value of `name` in a list of pairs.
pub(crate) fn param<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// One path segment with its `%XX` escapes decoded (`+` stays `+` in a path).
pub(crate) fn path_segment(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// Case-insensitive path segment comparison, as ARM treats resource paths.
pub(crate) fn seg(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        let p = form_pairs("a=1&scope=https%3A%2F%2Fvault.localhost%3A8443%2F.default&b=x+y&c");
        assert_eq!(
            param(&p, "scope"),
            Some("https://vault.localhost:8443/.default")
        );
        assert_eq!(param(&p, "b"), Some("x y"));
        assert_eq!(param(&p, "c"), Some(""));
        assert_eq!(param(&p, "d"), None);
        assert_eq!(form_pairs("x=%zz%4")[0].1, "%zz%4");
    }
}
