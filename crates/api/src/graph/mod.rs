//! A minimal Microsoft Graph over atrest's own directory, served at the authority
//! (`https://localhost:PORT/v1.0/…`, the `microsoftGraphResourceId` of
//! `/metadata/endpoints`): what `az role assignment` asks of it to resolve `--assignee` and
//! to name the principals of listed assignments. Administrators only.

use atrest_core::operation::Operation;
use atrest_core::principal::{PrincipalKind, PrincipalRecord};
use hyper::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::body::{parse_json, read_body};
use crate::error::ApiError;
use crate::http::{json, param, Body, Resp};
use crate::odata::{eq_filter, filter_value};
use crate::state::AppState;

/// A route of the Graph endpoints.
#[derive(Debug)]
pub(crate) enum Route<'a> {
    /// `POST /v1.0/directoryObjects/getByIds`.
    GetByIds,
    /// `GET /v1.0/servicePrincipals`.
    ServicePrincipals,
    /// `GET /v1.0/users`.
    Users,
    /// `GET /v1.0/{servicePrincipals|users|groups}/{id}`.
    Object(PrincipalKind, &'a str),
}

impl<'a> Route<'a> {
    /// The route of `method` and the path `segments` after `v1.0`, if one.
    pub(crate) fn parse(method: &Method, segments: &[&'a str]) -> Option<Self> {
        let get = method == Method::GET;
        let kind = |collection: &str| match collection {
            "servicePrincipals" => Some(PrincipalKind::ServicePrincipal),
            "users" => Some(PrincipalKind::User),
            "groups" => Some(PrincipalKind::Group),
            _ => None,
        };
        Some(match segments {
            ["directoryObjects", "getByIds"] if method == Method::POST => Route::GetByIds,
            ["servicePrincipals"] if get => Route::ServicePrincipals,
            ["users"] if get => Route::Users,
            [collection, id] if get => Route::Object(kind(collection)?, id),
            _ => return None,
        })
    }

    /// The audited operation.
    pub(crate) fn operation(&self) -> Operation {
        match self {
            Route::GetByIds => Operation::GraphDirectoryObjectsGetByIds,
            Route::ServicePrincipals => Operation::GraphServicePrincipalList,
            Route::Users => Operation::GraphUserList,
            Route::Object(..) => Operation::GraphObjectGet,
        }
    }
}

#[derive(Deserialize)]
struct GetByIdsDto {
    ids: Vec<String>,
    #[serde(default)]
    types: Vec<String>,
}

/// Graph's name of a principal's type (`@odata.type` without its namespace).
fn graph_type(kind: PrincipalKind) -> &'static str {
    match kind {
        PrincipalKind::ServicePrincipal | PrincipalKind::ManagedIdentity => "servicePrincipal",
        PrincipalKind::User => "user",
        PrincipalKind::Group => "group",
    }
}

/// A principal as Graph shows it.
fn object_json(p: &PrincipalRecord) -> Value {
    let odata_type = format!("#microsoft.graph.{}", graph_type(p.kind));
    match p.kind {
        PrincipalKind::ServicePrincipal | PrincipalKind::ManagedIdentity => {
            let managed = p.kind == PrincipalKind::ManagedIdentity;
            let mut names = vec![p.app_id.clone()];
            names.extend(p.resource_id.clone());
            json!({
                "@odata.type": odata_type,
                "id": p.object_id,
                "appId": p.app_id,
                "displayName": p.display_name,
                "servicePrincipalNames": names,
                "servicePrincipalType": if managed { "ManagedIdentity" } else { "Application" },
                "alternativeNames": p.resource_id.iter().collect::<Vec<_>>(),
            })
        }
        PrincipalKind::User => json!({
            "@odata.type": odata_type,
            "id": p.object_id,
            "displayName": p.display_name,
            "userPrincipalName": p.user_principal_name,
        }),
        PrincipalKind::Group => json!({
            "@odata.type": odata_type,
            "id": p.object_id,
            "displayName": p.display_name,
            "securityEnabled": true,
            "mailEnabled": false,
        }),
    }
}

/// A Graph collection.
fn collection(state: &AppState, what: &str, items: Vec<Value>) -> Resp {
    json(
        StatusCode::OK,
        &json!({
            "@odata.context": format!("{}/v1.0/$metadata#{what}", state.identity.authority()),
            "value": items,
        }),
    )
}

/// The name `servicePrincipalNames/any(c:c eq 'NAME')` asks for, if that is the filter.
fn any_service_principal_name(filter: &str) -> Option<&str> {
    filter
        .trim()
        .strip_prefix("servicePrincipalNames/any(c:c eq '")?
        .strip_suffix("')")
        .filter(|name| !name.contains('\''))
}

/// Serves one Graph request of an authenticated administrator.
pub(crate) async fn handle(
    state: &AppState,
    route: Route<'_>,
    query: &[(String, String)],
    body: Body,
) -> Result<Resp, ApiError> {
    let identity = &state.identity;
    match route {
        Route::GetByIds => {
            let dto: GetByIdsDto = parse_json(&read_body(body).await?)?;
            let mut items = Vec::new();
            for id in &dto.ids {
                if let Some(p) = identity.find_principal(id)? {
                    let wanted = dto.types.is_empty()
                        || dto
                            .types
                            .iter()
                            .any(|t| t.eq_ignore_ascii_case(graph_type(p.kind)));
                    if wanted {
                        items.push(object_json(&p));
                    }
                }
            }
            Ok(collection(state, "directoryObjects", items))
        }
        Route::ServicePrincipals => {
            let filter = param(query, "$filter").unwrap_or("");
            let matches: Box<dyn Fn(&PrincipalRecord) -> bool> =
                match any_service_principal_name(filter) {
                    Some(name) => {
                        let name = name.to_owned();
                        Box::new(move |p| {
                            p.app_id.eq_ignore_ascii_case(&name)
                                || p.resource_id
                                    .as_deref()
                                    .is_some_and(|r| r.eq_ignore_ascii_case(&name))
                        })
                    }
                    None => {
                        let f = eq_filter(Some(filter), &["appId", "displayName"])?;
                        let (app_id, name) = (
                            filter_value(&f, "appId").map(str::to_owned),
                            filter_value(&f, "displayName").map(str::to_owned),
                        );
                        Box::new(move |p| {
                            app_id
                                .as_deref()
                                .is_none_or(|a| a.eq_ignore_ascii_case(&p.app_id))
                                && name.as_deref().is_none_or(|n| n == p.display_name)
                        })
                    }
                };
            let mut items = Vec::new();
            for kind in [
                PrincipalKind::ServicePrincipal,
                PrincipalKind::ManagedIdentity,
            ] {
                for p in identity.list_principals(kind)? {
                    if matches(&p) {
                        items.push(object_json(&p));
                    }
                }
            }
            Ok(collection(state, "servicePrincipals", items))
        }
        Route::Users => {
            let f = eq_filter(
                param(query, "$filter"),
                &["userPrincipalName", "displayName"],
            )?;
            let items = identity
                .list_principals(PrincipalKind::User)?
                .iter()
                .filter(|p| {
                    filter_value(&f, "userPrincipalName").is_none_or(|u| {
                        p.user_principal_name
                            .as_deref()
                            .is_some_and(|upn| upn.eq_ignore_ascii_case(u))
                    }) && filter_value(&f, "displayName").is_none_or(|n| n == p.display_name)
                })
                .map(object_json)
                .collect();
            Ok(collection(state, "users", items))
        }
        Route::Object(kind, id) => {
            let found = identity
                .find_principal(id)?
                .filter(|p| graph_type(p.kind) == graph_type(kind));
            match found {
                Some(p) => Ok(json(StatusCode::OK, &object_json(&p))),
                None => Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    "Request_ResourceNotFound",
                    format!("Resource '{id}' does not exist or one of its queried reference-property objects are not present."),
                )),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_principal_name_filters() {
        assert_eq!(
            any_service_principal_name("servicePrincipalNames/any(c:c eq 'abc')"),
            Some("abc")
        );
        assert_eq!(
            any_service_principal_name("servicePrincipalNames/any(c:c eq 'a'b')"),
            None
        );
        assert_eq!(any_service_principal_name("displayName eq 'abc'"), None);
    }
}
