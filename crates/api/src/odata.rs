//! OData `$filter` as the list operations here take it (ARM's and Microsoft Graph's).

use crate::error::ApiError;

/// An OData `$filter` of `field eq 'value'` clauses joined by `and`, the only kind ARM's
/// list operations here take, checked against the `fields` the operation knows. Anything
/// else is refused rather than ignored, so a filter never silently widens a listing.
pub(crate) fn eq_filter(
    filter: Option<&str>,
    fields: &[&'static str],
) -> Result<Vec<(&'static str, String)>, ApiError> {
    let Some(filter) = filter.filter(|f| !f.trim().is_empty()) else {
        return Ok(Vec::new());
    };
    let bad = || {
        let wanted: Vec<String> = fields.iter().map(|f| format!("{f} eq '…'")).collect();
        ApiError::bad_request(
            "InvalidFilterInQueryString",
            format!(
                "The $filter '{filter}' is not supported here; use {}.",
                wanted.join(" and ")
            ),
        )
    };
    filter
        .split(" and ")
        .map(|clause| {
            let (field, value) = clause.trim().split_once(" eq ").ok_or_else(bad)?;
            let field = fields
                .iter()
                .find(|f| f.eq_ignore_ascii_case(field.trim()))
                .ok_or_else(bad)?;
            let value = value
                .trim()
                .strip_prefix('\'')
                .and_then(|v| v.strip_suffix('\''))
                .filter(|v| !v.contains('\''))
                .ok_or_else(bad)?;
            Ok((*field, value.to_owned()))
        })
        .collect()
}

/// The value a parsed [`eq_filter`] gives `field`, if any.
pub(crate) fn filter_value<'a>(
    filter: &'a [(&'static str, String)],
    field: &str,
) -> Option<&'a str> {
    filter
        .iter()
        .find(|(f, _)| *f == field)
        .map(|(_, v)| v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eq_filters() {
        let fields = ["resourceType", "name"];
        assert!(eq_filter(None, &fields).unwrap().is_empty());
        let f = eq_filter(
            Some("resourceType eq 'Microsoft.KeyVault/vaults' and Name eq 'kv1'"),
            &fields,
        )
        .unwrap();
        assert_eq!(
            filter_value(&f, "resourceType"),
            Some("Microsoft.KeyVault/vaults")
        );
        assert_eq!(filter_value(&f, "name"), Some("kv1"));
        for bad in [
            "location eq 'x'",
            "name ne 'x'",
            "name eq x",
            "resourceType eq 'a' or name eq 'b'",
        ] {
            assert_eq!(
                eq_filter(Some(bad), &fields).unwrap_err().code,
                "InvalidFilterInQueryString",
                "{bad}"
            );
        }
    }
}
