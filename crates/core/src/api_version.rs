//! Which `api-version` query values the data plane accepts.
//!
//! Key Vault's data plane speaks `7.0`–`7.6` (optionally `-preview` or `-preview.N`) and dated
//! versions from `2025-07-01` on, all of the same wire shape.

use thiserror::Error;

/// The `api-version` parameter is missing or names a version this server does not speak.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ApiVersionError {
    /// No `api-version` query parameter.
    #[error("The 'api-version' query parameter is missing.")]
    Missing,
    /// A value that is not a supported version.
    #[error("The specified version ({0}) is not recognized. Consider using the latest supported version (2026-04-01).")]
    Unsupported(String),
}

/// Oldest dated api-version of the 7.x wire shape.
const FIRST_DATED: (u32, u32, u32) = (2025, 7, 1);

/// Validates an `api-version` value.
pub fn check(value: Option<&str>) -> Result<(), ApiVersionError> {
    let value = value.ok_or(ApiVersionError::Missing)?;
    let unsupported = || ApiVersionError::Unsupported(value.to_owned());
    let base = strip_preview(value).ok_or_else(unsupported)?;
    if let Some(minor) = base.strip_prefix("7.") {
        return match minor.parse::<u32>() {
            Ok(0..=6) if !minor.starts_with('+') => Ok(()),
            _ => Err(unsupported()),
        };
    }
    let parts: Vec<&str> = base.split('-').collect();
    let date = match parts.as_slice() {
        [y, m, d] if y.len() == 4 && m.len() == 2 && d.len() == 2 => {
            let num = |s: &str| {
                s.bytes()
                    .all(|b| b.is_ascii_digit())
                    .then(|| s.parse::<u32>().ok())
                    .flatten()
            };
            (num(y), num(m), num(d))
        }
        _ => return Err(unsupported()),
    };
    match date {
        (Some(y), Some(m @ 1..=12), Some(d @ 1..=31)) if (y, m, d) >= FIRST_DATED => Ok(()),
        _ => Err(unsupported()),
    }
}

/// Removes a `-preview` or `-preview.N` suffix; `None` when the suffix is malformed.
fn strip_preview(value: &str) -> Option<&str> {
    match value.split_once("-preview") {
        None => Some(value),
        Some((base, "")) => Some(base),
        Some((base, rest)) => {
            let n = rest.strip_prefix('.')?;
            (!n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())).then_some(base)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted() {
        for v in [
            "7.0",
            "7.4",
            "7.6",
            "7.5-preview.1",
            "2025-07-01",
            "2026-04-01",
            "2027-01-15-preview",
        ] {
            assert_eq!(check(Some(v)), Ok(()), "{v}");
        }
    }

    #[test]
    fn rejected() {
        assert_eq!(check(None), Err(ApiVersionError::Missing));
        for v in [
            "",
            "7",
            "7.7",
            "8.0",
            "6.0",
            "7.x",
            "latest",
            "2016-10-01",
            "2025-13-01",
            "2025-7-01",
            "7.4-preview.",
            "7.4-previewx",
            "7.+1",
        ] {
            assert!(
                matches!(check(Some(v)), Err(ApiVersionError::Unsupported(_))),
                "{v}"
            );
        }
    }
}
