//! How the disk service reaches customer-managed keys: as a managed identity, through
//! this server's own token endpoint and Key Vault data plane. Requests are dispatched in
//! process (no socket, no TLS) but take the same path as any client's: the IMDS-style
//! token request, bearer-token verification, authorization, throttling and one audit
//! event each, under the identity's ids.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use atrest_disk::{KeyAccessError, KeyDescription, KeyFuture, KeyVaultAccess, KeyVersion};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Either, Full};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, USER_AGENT};
use hyper::{Method, Request};
use serde_json::{json, Value};
use zeroize::Zeroizing;

use crate::client::percent_encode;
use crate::data_plane::vault_resource_id;
use crate::server::{handle, unix_now, AppState};

/// The Key Vault api-version the disk service speaks.
const API_VERSION: &str = "7.6";

/// `User-Agent` of the disk service's requests, as they appear in the audit log.
const USER_AGENT_VALUE: &str = concat!("atrest-disk/", env!("CARGO_PKG_VERSION"));

/// Tokens are renewed this long before they expire.
const RENEW_BEFORE: i64 = 300;

/// The in-process vault client. It holds the server state weakly: the state owns the
/// disk service, which owns this.
#[derive(Default)]
pub(crate) struct InProcessVaults {
    state: OnceLock<Weak<AppState>>,
    /// Cached access tokens by identity resource id: (token, expires_on).
    tokens: Mutex<HashMap<String, (Zeroizing<String>, i64)>>,
}

impl std::fmt::Debug for InProcessVaults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcessVaults").finish_non_exhaustive()
    }
}

fn failure(status: u16, code: &str, message: impl Into<String>) -> KeyAccessError {
    KeyAccessError {
        status,
        code: code.to_owned(),
        message: message.into(),
    }
}

/// Key Vault's error body as the caller sees it, the inner code preferred.
fn refusal(status: u16, body: &Value) -> KeyAccessError {
    let error = &body["error"];
    let code = error["innererror"]["code"]
        .as_str()
        .or_else(|| error["code"].as_str())
        .unwrap_or("Unknown");
    let message = error["message"]
        .as_str()
        .or_else(|| body["error_description"].as_str())
        .unwrap_or("the vault refused the request");
    failure(status, code, message)
}

impl InProcessVaults {
    /// Connects the client to the state it dispatches into.
    pub(crate) fn attach(&self, state: &Arc<AppState>) {
        let _ = self.state.set(Arc::downgrade(state));
    }

    fn state(&self) -> Result<Arc<AppState>, KeyAccessError> {
        self.state
            .get()
            .and_then(Weak::upgrade)
            .ok_or_else(|| failure(503, "ServiceUnavailable", "the server is shutting down"))
    }

    /// Sends one request through the server's own request path.
    async fn dispatch(
        state: &Arc<AppState>,
        method: Method,
        host: &str,
        path_and_query: &str,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> Result<(u16, Value), KeyAccessError> {
        let mut builder = Request::builder()
            .method(method)
            .uri(path_and_query)
            .header(HOST, host)
            .header(USER_AGENT, USER_AGENT_VALUE);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let bytes = match body {
            Some(v) => {
                builder = builder.header(CONTENT_TYPE, "application/json");
                Bytes::from(v.to_string())
            }
            None => Bytes::new(),
        };
        let request = builder
            .body(Either::Right(Full::new(bytes)))
            .map_err(|e| failure(400, "BadRequest", e.to_string()))?;
        let peer = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        let response = handle(state.clone(), peer, request).await;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        Ok((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
    }

    /// An access token for the vault audience as `identity`, from the IMDS-style endpoint.
    async fn token(
        &self,
        state: &Arc<AppState>,
        identity: &str,
    ) -> Result<Zeroizing<String>, KeyAccessError> {
        let now = unix_now().0;
        if let Some((token, expires)) = self
            .tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(identity)
        {
            if *expires - RENEW_BEFORE > now {
                return Ok(token.clone());
            }
        }
        let resource = format!("https://vault.localhost:{}", state.settings.port);
        let query = format!(
            "/metadata/identity/oauth2/token?api-version=2018-02-01&resource={}&msi_res_id={}",
            percent_encode(&resource),
            percent_encode(identity)
        );
        let host = format!("localhost:{}", state.settings.port);
        let (status, body) = Self::dispatch(
            state,
            Method::GET,
            &host,
            &query,
            &[("Metadata", "true")],
            None,
        )
        .await?;
        let token = body["access_token"].as_str().filter(|_| status == 200);
        let Some(token) = token else {
            return Err(refusal(status, &body));
        };
        let token = Zeroizing::new(token.to_owned());
        let expires = body["expires_on"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .or_else(|| body["expires_on"].as_i64())
            .unwrap_or(now);
        self.tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(identity.to_owned(), (token.clone(), expires));
        Ok(token)
    }

    /// Calls the data plane at `key_url` (+ `suffix`) as `identity`.
    async fn call(
        &self,
        identity: &str,
        method: Method,
        key_url: &str,
        suffix: &str,
        body: Option<Value>,
    ) -> Result<Value, KeyAccessError> {
        let state = self.state()?;
        let bad_url = || {
            failure(
                400,
                "BadParameter",
                format!("'{key_url}' is not a key URL of this server"),
            )
        };
        let rest = key_url.strip_prefix("https://").ok_or_else(bad_url)?;
        let (host, path) = rest.split_once('/').ok_or_else(bad_url)?;
        let token = self.token(&state, identity).await?;
        let bearer = format!("Bearer {}", token.as_str());
        let target = format!(
            "/{}{suffix}?api-version={API_VERSION}",
            path.trim_end_matches('/')
        );
        let (status, body) = Self::dispatch(
            &state,
            method,
            host,
            &target,
            &[(AUTHORIZATION.as_str(), bearer.as_str())],
            body,
        )
        .await?;
        if status == 200 {
            Ok(body)
        } else {
            if status == 401 {
                self.tokens
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(identity);
            }
            Err(refusal(status, &body))
        }
    }
}

impl KeyVaultAccess for InProcessVaults {
    fn describe(
        &self,
        vault: &str,
        key: &str,
        version: &str,
    ) -> Result<KeyDescription, KeyAccessError> {
        let state = self.state()?;
        let row = state.vaults.data_plane_vault(vault).map_err(|e| {
            failure(
                404,
                "VaultNotFound",
                format!("The key vault '{vault}' was not found: {e}"),
            )
        })?;
        let key = state.vaults.get_key(&row, key, Some(version)).ok();
        let now = unix_now().0;
        Ok(KeyDescription {
            vault_resource_id: vault_resource_id(&row),
            vault_location: row.location.clone(),
            purge_protection: row.purge_protection,
            kty: key.as_ref().map(|k| k.kty.clone()),
            key_size: key.as_ref().and_then(|k| k.rsa_bits()).map(|b| b as u32),
            usable: key
                .as_ref()
                .is_some_and(|k| k.attributes.check_usable(now).is_ok()),
        })
    }

    fn get_key<'a>(&'a self, identity: &'a str, key_url: &'a str) -> KeyFuture<'a, KeyVersion> {
        Box::pin(async move {
            let body = self.call(identity, Method::GET, key_url, "", None).await?;
            let kid = body["key"]["kid"]
                .as_str()
                .ok_or_else(|| failure(500, "InternalError", "the key has no kid"))?;
            Ok(KeyVersion {
                kid: kid.to_owned(),
            })
        })
    }

    fn wrap_key<'a>(
        &'a self,
        identity: &'a str,
        key_url: &'a str,
        dek: &'a [u8],
    ) -> KeyFuture<'a, Vec<u8>> {
        Box::pin(async move {
            let value = Zeroizing::new(B64.encode(dek));
            let body = json!({ "alg": "RSA-OAEP-256", "value": value.as_str() });
            let answer = self
                .call(identity, Method::POST, key_url, "/wrapkey", Some(body))
                .await?;
            answer["value"]
                .as_str()
                .and_then(|v| B64.decode(v).ok())
                .ok_or_else(|| failure(500, "InternalError", "the wrapped key is not base64url"))
        })
    }

    fn unwrap_key<'a>(
        &'a self,
        identity: &'a str,
        key_url: &'a str,
        wrapped: &'a [u8],
    ) -> KeyFuture<'a, Zeroizing<Vec<u8>>> {
        Box::pin(async move {
            let body = json!({ "alg": "RSA-OAEP-256", "value": B64.encode(wrapped) });
            let answer = self
                .call(identity, Method::POST, key_url, "/unwrapkey", Some(body))
                .await?;
            let value = answer["value"]
                .as_str()
                .ok_or_else(|| failure(500, "InternalError", "the unwrapped key is missing"))?;
            B64.decode(value)
                .map(Zeroizing::new)
                .map_err(|_| failure(500, "InternalError", "the unwrapped key is not base64url"))
        })
    }
}
