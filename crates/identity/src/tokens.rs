//! Token issue (client credentials, user password, managed identity) and verification.

use atrest_core::principal::{PrincipalKind, PrincipalRecord};
use atrest_crypto::{sha256_matches, verify_password};
use atrest_store::StoreError;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use serde_json::{json, Value};
use thiserror::Error;

use std::sync::Arc;

use crate::{Identity, VERIFIED_TOKENS_CACHED};

/// An access token and its lifetime.
#[derive(Clone)]
pub struct IssuedToken {
    /// The compact JWT.
    pub access_token: String,
    /// Audience the token is for.
    pub resource: String,
    /// Client id of the principal.
    pub client_id: String,
    /// Issue time.
    pub not_before: i64,
    /// Expiry time.
    pub expires_on: i64,
    /// For a user who asked for `openid`: the OpenID Connect ID token and `client_info`
    /// (base64url `{"uid","utid"}`) that MSAL builds its account from.
    pub user_sign_in: Option<UserSignIn>,
}

/// The OpenID Connect part of a user's token response.
#[derive(Clone)]
pub struct UserSignIn {
    /// The signed ID token.
    pub id_token: String,
    /// base64url JSON naming the user and tenant.
    pub client_info: String,
}

impl std::fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedToken")
            .field("resource", &self.resource)
            .field("expires_on", &self.expires_on)
            .finish_non_exhaustive()
    }
}

/// A token request the token service refuses, in OAuth2 terms.
#[derive(Debug, Error)]
pub enum OAuthError {
    /// A required parameter is missing or malformed.
    #[error("AADSTS900144: {0}")]
    InvalidRequest(String),
    /// Only `client_credentials` and `password` are supported.
    #[error("AADSTS70003: The app requested an unsupported grant type '{0}'.")]
    UnsupportedGrantType(String),
    /// Unknown client or wrong secret (the two are not distinguished).
    #[error("AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{0}'.")]
    InvalidClient(String),
    /// Unknown user or wrong password (the two are not distinguished).
    #[error("AADSTS50126: Error validating credentials due to invalid username or password.")]
    InvalidGrant,
    /// The public client named by `client_id` is not known here.
    #[error("AADSTS700016: Application with identifier '{0}' was not found in the directory.")]
    UnknownClient(String),
    /// The requested resource is not served by this instance.
    #[error("AADSTS500011: The resource principal named {0} was not found in the tenant. This can happen if the resource is not served by this atrest instance.")]
    InvalidResource(String),
    /// The managed identity named by the request does not exist or the header is wrong.
    #[error("Identity not found")]
    IdentityNotFound,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The authenticated caller of a request, from a verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// `appid`.
    pub app_id: String,
    /// `oid`.
    pub object_id: String,
    /// `tid`.
    pub tenant_id: String,
    /// `idtyp`: `app`, `ManagedIdentity` or `user`.
    pub identity_type: String,
    /// `xms_mirid`, for managed identities.
    pub mi_resource_id: Option<String>,
}

/// Why a bearer token was refused. Messages follow Key Vault's `AKV100xx` texts.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TokenError {
    /// No `Authorization: Bearer` header.
    #[error("AKV10000: Request is missing a Bearer or PoP token.")]
    Missing,
    /// Not a JWT.
    #[error("AKV10001: Invalid token. The token is malformed.")]
    Malformed,
    /// Signature invalid or signing key unknown.
    #[error("AKV10032: Invalid token. The signature of the token could not be validated.")]
    BadSignature,
    /// Issued by another authority or tenant.
    #[error("AKV10032: Invalid issuer. Expected {expected}, found {found}.")]
    WrongIssuer {
        /// The issuer this server expects.
        expected: String,
        /// The token's issuer.
        found: String,
    },
    /// For another resource.
    #[error("AKV10022: Invalid audience. Expected {expected}, found: {found}.")]
    WrongAudience {
        /// The audiences this endpoint accepts.
        expected: String,
        /// The token's audience.
        found: String,
    },
    /// Past `exp`.
    #[error("AKV10013: Invalid token. The token expired at {0}.")]
    Expired(i64),
    /// Before `nbf`.
    #[error("AKV10013: Invalid token. The token is not valid before {0}.")]
    NotYetValid(i64),
}

/// How a managed-identity token request names the identity.
#[derive(Debug, Clone, Default)]
pub struct IdentitySelector<'a> {
    /// `client_id` query parameter.
    pub client_id: Option<&'a str>,
    /// `object_id` / `principal_id` query parameter.
    pub object_id: Option<&'a str>,
    /// `msi_res_id` / `mi_res_id` query parameter.
    pub resource_id: Option<&'a str>,
}

/// The client id of the Azure CLI, the public client users sign in through by default.
pub const AZURE_CLI_CLIENT_ID: &str = "04b07795-8ddb-461a-bbee-02f9e1bf7b46";

impl Identity {
    /// The OAuth2 token endpoint: the `client_credentials` grant (`client_id`,
    /// `client_secret`) and the resource-owner `password` grant (`client_id`, `username`,
    /// `password`), each with `scope` (v2, `RESOURCE/.default`) or `resource` (v1).
    pub fn token_grant(
        &self,
        form: &[(String, String)],
        now: i64,
    ) -> Result<IssuedToken, OAuthError> {
        let param = |name: &str| {
            form.iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let grant = param("grant_type").ok_or_else(|| missing("grant_type"))?;
        let client_id = param("client_id").ok_or_else(|| missing("client_id"))?;
        let resource = match (param("scope"), param("resource")) {
            (Some(scope), _) => scope
                .split(' ')
                .find_map(|s| s.strip_suffix("/.default"))
                .ok_or_else(|| OAuthError::InvalidRequest(format!("The provided value '{scope}' for the input parameter 'scope' is not valid. The scope must end with /.default for the client credentials flow.")))?,
            (None, Some(resource)) => resource,
            (None, None) => return Err(missing("scope")),
        };
        match grant {
            "client_credentials" => {
                let secret = param("client_secret").ok_or_else(|| missing("client_secret"))?;
                let principal = self.authenticate_client(client_id, secret)?;
                self.issue(&principal, &principal.app_id, resource, now)
            }
            "password" => {
                let username = param("username").ok_or_else(|| missing("username"))?;
                let password = param("password").ok_or_else(|| missing("password"))?;
                match param("client_secret") {
                    Some(secret) => {
                        self.authenticate_client(client_id, secret)?;
                    }
                    None if client_id.eq_ignore_ascii_case(AZURE_CLI_CLIENT_ID) => {}
                    None => {
                        self.store
                            .read(|tx| tx.principal_by_app_id(client_id))?
                            .filter(|p| p.kind == PrincipalKind::ServicePrincipal)
                            .ok_or_else(|| OAuthError::UnknownClient(client_id.to_owned()))?;
                    }
                }
                let user = self
                    .store
                    .read(|tx| tx.principal_by_upn(username))?
                    .filter(|p| p.kind == PrincipalKind::User)
                    .filter(|p| {
                        p.secret_hash
                            .as_deref()
                            .is_some_and(|h| verify_password(password, h))
                    })
                    .ok_or(OAuthError::InvalidGrant)?;
                let app_id = client_id.to_ascii_lowercase();
                let mut token = self.issue(&user, &app_id, resource, now)?;
                let scopes = param("scope").unwrap_or_default();
                if scopes.split(' ').any(|s| s == "openid") {
                    token.user_sign_in = Some(self.user_sign_in(&user, &app_id, now));
                }
                Ok(token)
            }
            other => Err(OAuthError::UnsupportedGrantType(other.to_owned())),
        }
    }

    /// The service principal whose client id and secret these are.
    fn authenticate_client(
        &self,
        client_id: &str,
        secret: &str,
    ) -> Result<PrincipalRecord, OAuthError> {
        self.store
            .read(|tx| tx.principal_by_app_id(client_id))?
            .filter(|p| p.kind == PrincipalKind::ServicePrincipal)
            .filter(|p| {
                p.secret_hash
                    .as_deref()
                    .is_some_and(|h| sha256_matches(secret.as_bytes(), h))
            })
            .ok_or_else(|| OAuthError::InvalidClient(client_id.to_owned()))
    }

    /// Managed-identity token. `identity_header` is the App-Service-style secret when the
    /// request came through that endpoint; IMDS-style requests name the identity instead.
    pub fn managed_identity_token(
        &self,
        identity_header: Option<&str>,
        selector: &IdentitySelector<'_>,
        resource: &str,
        now: i64,
    ) -> Result<IssuedToken, OAuthError> {
        let named = self
            .store
            .read(|tx| -> Result<Option<PrincipalRecord>, StoreError> {
                Ok(
                    match (selector.client_id, selector.object_id, selector.resource_id) {
                        (Some(id), _, _) => tx.principal_by_app_id(id)?,
                        (None, Some(id), _) => tx.principal_by_object_id(id)?,
                        (None, None, Some(id)) => tx.principal_by_resource_id(id)?,
                        (None, None, None) => None,
                    },
                )
            })?;
        let principal = match (identity_header, named) {
            (Some(header), named) => {
                let candidates = match named {
                    Some(p) => vec![p],
                    None => self
                        .store
                        .read(|tx| tx.list_principals(PrincipalKind::ManagedIdentity))?,
                };
                candidates.into_iter().find(|p| {
                    p.secret_hash
                        .as_deref()
                        .is_some_and(|h| sha256_matches(header.as_bytes(), h))
                })
            }
            (None, named) => named,
        };
        let principal = principal
            .filter(|p| p.kind == PrincipalKind::ManagedIdentity)
            .ok_or(OAuthError::IdentityNotFound)?;
        self.issue(&principal, &principal.app_id, resource, now)
    }

    /// A token for `principal` acting through the application `app_id`.
    fn issue(
        &self,
        principal: &PrincipalRecord,
        app_id: &str,
        resource: &str,
        now: i64,
    ) -> Result<IssuedToken, OAuthError> {
        let audience = resource.trim_end_matches('/');
        if !self
            .data_plane_audiences
            .iter()
            .chain(&self.management_audiences)
            .chain(&self.graph_audiences)
            .chain(&self.disk_audiences)
            .any(|a| a == audience)
        {
            return Err(OAuthError::InvalidResource(resource.to_owned()));
        }
        let identity_type = match principal.kind {
            PrincipalKind::ManagedIdentity => "ManagedIdentity",
            PrincipalKind::User => "user",
            PrincipalKind::ServicePrincipal | PrincipalKind::Group => "app",
        };
        let mut claims = json!({
            "aud": audience,
            "iss": self.issuer(),
            "iat": now,
            "nbf": now,
            "exp": now + self.token_lifetime,
            "appid": app_id,
            "azp": app_id,
            "oid": principal.object_id,
            "sub": principal.object_id,
            "tid": self.tenant,
            "idtyp": identity_type,
            "uti": atrest_crypto::random_uuid(),
            "ver": "2.0",
        });
        if let Some(rid) = principal
            .resource_id
            .as_deref()
            .filter(|_| principal.kind == PrincipalKind::ManagedIdentity)
        {
            claims["xms_mirid"] = Value::from(rid);
        }
        if let Some(upn) = &principal.user_principal_name {
            claims["upn"] = Value::from(upn.as_str());
            claims["unique_name"] = Value::from(upn.as_str());
            claims["name"] = Value::from(principal.display_name.as_str());
            claims["scp"] = Value::from("user_impersonation");
        }
        Ok(IssuedToken {
            access_token: self.signer.sign(&claims),
            resource: resource.to_owned(),
            client_id: app_id.to_owned(),
            not_before: now,
            expires_on: now + self.token_lifetime,
            user_sign_in: None,
        })
    }

    /// The ID token and `client_info` of a user's sign-in through client `app_id`.
    fn user_sign_in(&self, user: &PrincipalRecord, app_id: &str, now: i64) -> UserSignIn {
        let claims = json!({
            "aud": app_id,
            "iss": self.issuer(),
            "iat": now,
            "nbf": now,
            "exp": now + self.token_lifetime,
            "sub": user.object_id,
            "oid": user.object_id,
            "tid": self.tenant,
            "name": user.display_name,
            "preferred_username": user.user_principal_name,
            "ver": "2.0",
        });
        let client_info = json!({ "uid": user.object_id, "utid": self.tenant }).to_string();
        UserSignIn {
            id_token: self.signer.sign(&claims),
            client_info: B64.encode(client_info),
        }
    }

    /// Verifies a bearer token for one of `audiences` at time `now`. Issuer and verifier are
    /// the same process, so there is no clock-skew allowance.
    pub fn verify(
        &self,
        token: &str,
        audiences: &[String],
        now: i64,
    ) -> Result<Caller, TokenError> {
        let claims = self.signature_checked_claims(token)?;
        let text = |name: &str| claims.get(name).and_then(Value::as_str).map(str::to_owned);
        let issuer = text("iss").unwrap_or_default();
        if issuer != self.issuer {
            return Err(TokenError::WrongIssuer {
                expected: self.issuer.clone(),
                found: issuer,
            });
        }
        let aud = text("aud").unwrap_or_default();
        if !audiences.iter().any(|a| *a == aud.trim_end_matches('/')) {
            return Err(TokenError::WrongAudience {
                expected: audiences.join(", "),
                found: aud,
            });
        }
        let (Some(exp), Some(nbf)) = (claims["exp"].as_i64(), claims["nbf"].as_i64()) else {
            return Err(TokenError::Malformed);
        };
        if now >= exp {
            return Err(TokenError::Expired(exp));
        }
        if now < nbf {
            return Err(TokenError::NotYetValid(nbf));
        }
        match (text("appid"), text("oid"), text("tid"), text("idtyp")) {
            (Some(app_id), Some(object_id), Some(tenant_id), Some(identity_type)) => Ok(Caller {
                app_id,
                object_id,
                tenant_id,
                identity_type,
                mi_resource_id: text("xms_mirid"),
            }),
            _ => Err(TokenError::Malformed),
        }
    }
}

impl Identity {
    /// The claims of `token` once its signature is verified. Verified tokens are
    /// remembered by digest: a repeat presentation costs a hash instead of an ECDSA
    /// verification, and any altered token hashes differently and is verified afresh.
    fn signature_checked_claims(&self, token: &str) -> Result<Arc<Value>, TokenError> {
        let digest = atrest_crypto::sha256(token.as_bytes());
        let mut cache = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(claims) = cache.get(&digest) {
            return Ok(claims.clone());
        }
        drop(cache);
        let claims = Arc::new(self.signer.verify(token).map_err(|e| match e {
            atrest_crypto::JwtError::Malformed => TokenError::Malformed,
            _ => TokenError::BadSignature,
        })?);
        cache = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= VERIFIED_TOKENS_CACHED {
            cache.clear();
        }
        cache.insert(digest, claims.clone());
        Ok(claims)
    }
}

fn missing(name: &str) -> OAuthError {
    OAuthError::InvalidRequest(format!("The input parameter '{name}' is required."))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TOKEN_LIFETIME_SECS;

    fn service(lifetime: i64) -> (Identity, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(atrest_store::Store::open_file(&dir.path().join("state.db")).unwrap());
        let mut id = Identity::new(
            store,
            atrest_crypto::TokenSigner::generate().unwrap(),
            "t1".into(),
            "https://localhost:1".into(),
            "https://vault.localhost:1".into(),
        );
        id.token_lifetime = lifetime;
        (id, dir)
    }

    fn form(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn client_credentials_roundtrip_and_failures() {
        let (id, _dir) = service(TOKEN_LIFETIME_SECS);
        let sp = id.create_service_principal("app", false, 1000).unwrap();
        let app = sp.principal.app_id.clone();
        let good = form(&[
            ("grant_type", "client_credentials"),
            ("client_id", &app),
            ("client_secret", &sp.password),
            ("scope", "https://vault.localhost:1/.default"),
        ]);
        let token = id.token_grant(&good, 1000).unwrap();
        let caller = id
            .verify(&token.access_token, id.data_plane_audiences(), 1001)
            .unwrap();
        assert_eq!(caller.app_id, app);
        assert_eq!(caller.identity_type, "app");

        let mut bad = good.clone();
        bad[2].1.push('x');
        assert!(matches!(
            id.token_grant(&bad, 1000),
            Err(OAuthError::InvalidClient(_))
        ));
        let mut bad = good.clone();
        bad[3].1 = "https://elsewhere.example/.default".into();
        assert!(matches!(
            id.token_grant(&bad, 1000),
            Err(OAuthError::InvalidResource(_))
        ));
        let mut bad = good.clone();
        bad[0].1 = "implicit".into();
        assert!(matches!(
            id.token_grant(&bad, 1000),
            Err(OAuthError::UnsupportedGrantType(_))
        ));
        assert!(matches!(
            id.token_grant(&good[..3], 1000),
            Err(OAuthError::InvalidRequest(_))
        ));

        // A reset invalidates the old secret.
        let reset = id.reset_credential(&app).unwrap().unwrap();
        assert!(matches!(
            id.token_grant(&good, 1000),
            Err(OAuthError::InvalidClient(_))
        ));
        let mut renewed = good.clone();
        renewed[2].1 = reset.password.clone();
        assert!(id.token_grant(&renewed, 1000).is_ok());
    }

    #[test]
    fn password_grant_for_users_and_groups() {
        let (id, _dir) = service(TOKEN_LIFETIME_SECS);
        let user = id
            .create_user("Alice", "alice@contoso.com", "Sup3r-secret", 1000)
            .unwrap();
        assert!(matches!(
            id.create_user("Alice 2", "ALICE@contoso.com", "Sup3r-secret", 1000),
            Err(crate::DirectoryError::UserExists)
        ));
        let grant = |client: &str, username: &str, password: &str| {
            id.token_grant(
                &form(&[
                    ("grant_type", "password"),
                    ("client_id", client),
                    ("username", username),
                    ("password", password),
                    (
                        "scope",
                        "https://vault.localhost:1/.default offline_access openid",
                    ),
                ]),
                1000,
            )
        };
        let token = grant(AZURE_CLI_CLIENT_ID, "Alice@Contoso.com", "Sup3r-secret").unwrap();
        let caller = id
            .verify(&token.access_token, id.data_plane_audiences(), 1001)
            .unwrap();
        assert_eq!(caller.object_id, user.object_id);
        assert_eq!(caller.app_id, AZURE_CLI_CLIENT_ID);
        assert_eq!(caller.identity_type, "user");
        assert!(matches!(
            grant(AZURE_CLI_CLIENT_ID, "alice@contoso.com", "Sup3r-secreT"),
            Err(OAuthError::InvalidGrant)
        ));
        assert!(matches!(
            grant(AZURE_CLI_CLIENT_ID, "bob@contoso.com", "Sup3r-secret"),
            Err(OAuthError::InvalidGrant)
        ));
        assert!(matches!(
            grant(
                "11111111-1111-4111-a111-111111111111",
                "alice@contoso.com",
                "Sup3r-secret"
            ),
            Err(OAuthError::UnknownClient(_))
        ));

        // Groups, nested: the user acts as itself and both groups.
        let inner = id.create_group("inner", 1000).unwrap();
        let outer = id.create_group("outer", 1000).unwrap();
        assert!(id
            .add_group_member(&inner.object_id, "alice@contoso.com")
            .unwrap());
        assert!(!id
            .add_group_member(&inner.object_id, &user.object_id)
            .unwrap());
        id.add_group_member(&outer.object_id, &inner.object_id)
            .unwrap();
        let ids = id.object_ids_of(&user.object_id).unwrap();
        assert_eq!(
            ids,
            [
                user.object_id.clone(),
                inner.object_id.clone(),
                outer.object_id.clone()
            ]
        );
        assert!(matches!(
            id.add_group_member(&inner.object_id, &outer.object_id),
            Err(crate::DirectoryError::Cycle { .. })
        ));
        assert!(matches!(
            id.add_group_member(&user.object_id, &inner.object_id),
            Err(crate::DirectoryError::NotFound(_))
        ));
        assert!(id
            .remove_group_member(&inner.object_id, &user.object_id)
            .unwrap());
        let alone = std::slice::from_ref(&user.object_id);
        assert_eq!(id.object_ids_of(&user.object_id).unwrap(), alone);
        id.add_group_member(&inner.object_id, &user.object_id)
            .unwrap();
        assert!(id.delete_principal(&inner.object_id).unwrap());
        assert_eq!(
            id.object_ids_of(&user.object_id).unwrap(),
            alone,
            "deleting a group ends its memberships"
        );
    }

    #[test]
    fn verification_rules() {
        let (id, _dir) = service(100);
        let sp = id.create_service_principal("app", false, 0).unwrap();
        let scope = |s: &str| {
            form(&[
                ("grant_type", "client_credentials"),
                ("client_id", &sp.principal.app_id),
                ("client_secret", &sp.password),
                ("scope", s),
            ])
        };
        let vault = id
            .token_grant(&scope("https://vault.localhost:1/.default"), 1000)
            .unwrap()
            .access_token;
        let mgmt = id
            .token_grant(&scope("https://management.azure.com/.default"), 1000)
            .unwrap()
            .access_token;
        let aud = id.data_plane_audiences().to_vec();
        assert!(id.verify(&vault, &aud, 1000).is_ok());
        assert!(matches!(
            id.verify(&mgmt, &aud, 1000),
            Err(TokenError::WrongAudience { .. })
        ));
        assert_eq!(
            id.verify(&vault, &aud, 1100),
            Err(TokenError::Expired(1100))
        );
        assert_eq!(
            id.verify(&vault, &aud, 999),
            Err(TokenError::NotYetValid(1000))
        );
        assert_eq!(id.verify("x.y", &aud, 1000), Err(TokenError::Malformed));

        let (other, _dir2) = service(100);
        let sp2 = other.create_service_principal("app", false, 0).unwrap();
        let foreign = other
            .token_grant(
                &form(&[
                    ("grant_type", "client_credentials"),
                    ("client_id", &sp2.principal.app_id),
                    ("client_secret", &sp2.password),
                    ("scope", "https://vault.localhost:1/.default"),
                ]),
                1000,
            )
            .unwrap()
            .access_token;
        assert_eq!(
            id.verify(&foreign, &aud, 1000),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn managed_identity_tokens() {
        let (id, _dir) = service(100);
        let mi = id.create_managed_identity("mi1", "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/mi1", 0).unwrap();
        let resource = "https://vault.localhost:1";
        let by_header = id
            .managed_identity_token(
                Some(&mi.identity_header),
                &IdentitySelector::default(),
                resource,
                10,
            )
            .unwrap();
        let caller = id
            .verify(&by_header.access_token, id.data_plane_audiences(), 10)
            .unwrap();
        assert_eq!(caller.identity_type, "ManagedIdentity");
        assert_eq!(
            caller.mi_resource_id.as_deref(),
            mi.principal.resource_id.as_deref()
        );
        assert!(matches!(
            id.managed_identity_token(Some("wrong"), &IdentitySelector::default(), resource, 10),
            Err(OAuthError::IdentityNotFound)
        ));
        let sel = IdentitySelector {
            client_id: Some(&mi.principal.app_id),
            ..Default::default()
        };
        assert!(id.managed_identity_token(None, &sel, resource, 10).is_ok());
        assert!(matches!(
            id.managed_identity_token(None, &IdentitySelector::default(), resource, 10),
            Err(OAuthError::IdentityNotFound)
        ));
        // A service principal cannot be obtained through the managed-identity endpoint.
        let sp = id.create_service_principal("app", false, 0).unwrap();
        let sel = IdentitySelector {
            client_id: Some(&sp.principal.app_id),
            ..Default::default()
        };
        assert!(matches!(
            id.managed_identity_token(None, &sel, resource, 10),
            Err(OAuthError::IdentityNotFound)
        ));
    }
}
