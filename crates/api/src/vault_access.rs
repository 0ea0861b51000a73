//! How the disk service reaches customer-managed keys: as a managed identity, through the
//! same pipeline as any client's request, in process and typed. The identity signs in
//! (a managed-identity token, audited as its sign-in), each call presents that token, and
//! the vault's guards run as for a request over HTTP: authentication, the vault's budget,
//! its roles or access policies, and one audit event under the identity's ids. No JSON
//! and no HTTP in between; unwrapped keys stay in zeroizing buffers.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use atrest_core::operation::Operation;
use atrest_core::vault::VaultRecord;
use atrest_disk::{
    KeyAccessError, KeyDescription, KeyFuture, KeyVaultAccess, KeyVersion, PlatformSecret,
    VaultDescription,
};
use atrest_identity::IdentitySelector;
use atrest_runtime::time::unix_now;
use atrest_vault::{KeyOperation, OperationInput, OperationOutput, SetSecret};
use hyper::{StatusCode, Uri};
use zeroize::Zeroizing;

use crate::client::percent_encode;
use crate::error::ApiError;
use crate::keyvault::{self, vault_resource_id, KeyRoute, Route};
use crate::pipeline::{Ctx, Exchange};
use crate::state::{AppState, VAULT_HOST_SUFFIX};
use crate::token::issued;

/// The Key Vault api-version the disk service's calls are recorded under.
const API_VERSION: &str = "7.6";

/// `User-Agent` of the disk service's requests, as they appear in the audit log.
const USER_AGENT_VALUE: &str = concat!("atrest-disk/", env!("CARGO_PKG_VERSION"));

/// Tokens are renewed this long before they expire.
const RENEW_BEFORE: i64 = 300;

/// What an in-process call does.
#[derive(Debug, Clone, Copy)]
enum Call {
    CreateKey,
    GetKey,
    BackupKey,
    KeyOperation(KeyOperation),
    GetSecret,
    SetSecret,
}

impl Call {
    fn collection(self) -> &'static str {
        match self {
            Call::CreateKey | Call::GetKey | Call::BackupKey | Call::KeyOperation(_) => "keys",
            Call::GetSecret | Call::SetSecret => "secrets",
        }
    }
}

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

/// The refusal as the caller sees it, the inner code preferred.
fn refusal(e: ApiError) -> KeyAccessError {
    KeyAccessError {
        status: e.status.as_u16(),
        code: e.inner_code().unwrap_or(&e.code).to_owned(),
        message: e.message,
    }
}

/// The calls come from the loopback address, as the managed-identity endpoint requires.
fn local_peer() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
}

/// A key or secret URL of this server:
/// `https://{vault}.vault.localhost:{port}/{keys|secrets}/{name}[/{version}]`.
#[derive(Debug, PartialEq, Eq)]
struct ObjectUrl<'a> {
    /// The vault's host, lower-cased, without port.
    host: String,
    vault: &'a str,
    name: &'a str,
    version: Option<&'a str>,
}

impl<'a> ObjectUrl<'a> {
    /// Parses a URL of `collection` (`keys` or `secrets`).
    fn parse(url: &'a str, uri: &'a Uri, collection: &str) -> Result<Self, KeyAccessError> {
        let what = collection.trim_end_matches('s');
        let bad_url = || {
            failure(
                400,
                "BadParameter",
                format!("'{url}' is not a {what} URL of this server"),
            )
        };
        if uri.scheme_str() != Some("https") || uri.query().is_some() {
            return Err(bad_url());
        }
        let host = uri.host().ok_or_else(bad_url)?;
        let vault = host
            .strip_suffix(VAULT_HOST_SUFFIX)
            .filter(|v| !v.is_empty() && !v.contains('.'))
            .ok_or_else(bad_url)?;
        let segments: Vec<&str> = uri.path().trim_end_matches('/').split('/').collect();
        let (name, version) = match segments.as_slice() {
            ["", c, name] if *c == collection => (*name, None),
            ["", c, name, version] if *c == collection => (*name, Some(*version)),
            _ => return Err(bad_url()),
        };
        Ok(ObjectUrl {
            host: host.to_ascii_lowercase(),
            vault,
            name,
            version,
        })
    }
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

    fn forget_token(&self, identity: &str) {
        self.tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(identity);
    }

    /// An access token for the vault audience as `identity`: the cached one, or a new one
    /// from the managed-identity token service, audited as that identity's sign-in.
    async fn token(
        &self,
        state: &AppState,
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
        let (mut exchange, mut ctx) =
            Exchange::begin(state, Operation::Authentication, local_peer());
        describe(
            &mut exchange,
            state,
            "GET",
            format!(
                "https://localhost:{}/metadata/identity/oauth2/token?api-version=2018-02-01&resource={}&msi_res_id={}",
                state.settings.port,
                percent_encode(&resource),
                percent_encode(identity)
            ),
        );
        let selector = IdentitySelector {
            client_id: None,
            object_id: None,
            resource_id: Some(identity),
        };
        let result = state
            .identity
            .managed_identity_token(None, &selector, &resource, ctx.now);
        let result = issued(&mut ctx, state, result, None);
        let (status, description) = outcome(&result);
        exchange
            .finish(state, ctx, status, description)
            .await
            .map_err(refusal)?;
        let issued = result.map_err(refusal)?;
        let token = Zeroizing::new(issued.access_token);
        self.tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(identity.to_owned(), (token.clone(), issued.expires_on));
        Ok(token)
    }

    /// Makes `call` on the key or secret at `url` as `identity`, through the data plane's
    /// guards, and records it; `run` does the work, given the object's name and version,
    /// once the guards pass.
    async fn guarded<T>(
        &self,
        identity: &str,
        url: &str,
        call: Call,
        run: impl FnOnce(&AppState, &mut Ctx, &VaultRecord, &str, Option<&str>) -> Result<T, ApiError>,
    ) -> Result<T, KeyAccessError> {
        let state = self.state()?;
        let collection = call.collection();
        let uri: Uri = url.parse().map_err(|_| {
            failure(
                400,
                "BadParameter",
                format!(
                    "'{url}' is not a {} URL of this server",
                    collection.trim_end_matches('s')
                ),
            )
        })?;
        let target = ObjectUrl::parse(url, &uri, collection)?;
        let token = self.token(&state, identity).await?;
        let (name, version) = (target.name, target.version);
        let (route, method, suffix) = match call {
            Call::CreateKey => (
                Route::Key(KeyRoute::Create(name)),
                "POST",
                "/create".to_owned(),
            ),
            Call::GetKey => (
                Route::Key(KeyRoute::Get(name, version)),
                "GET",
                String::new(),
            ),
            Call::BackupKey => (
                Route::Key(KeyRoute::Backup(name)),
                "POST",
                "/backup".to_owned(),
            ),
            Call::KeyOperation(op) => (
                Route::Key(KeyRoute::Operation(name, version, op)),
                "POST",
                format!("/{}", op.name().to_ascii_lowercase()),
            ),
            Call::GetSecret => (Route::Get(name, version), "GET", String::new()),
            Call::SetSecret => (Route::Set(name), "PUT", String::new()),
        };
        let (mut exchange, mut ctx) = Exchange::begin(&state, route.operation(), local_peer());
        describe(
            &mut exchange,
            &state,
            method,
            format!(
                "https://{}:{}{}{suffix}?api-version={API_VERSION}",
                target.host,
                state.settings.port,
                uri.path().trim_end_matches('/'),
            ),
        );
        ctx.resource = Some(target.vault.to_owned());
        let result =
            match state
                .identity
                .verify(&token, state.identity.data_plane_audiences(), ctx.now)
            {
                Err(e) => Err(ApiError::unauthorized(&e, state.challenge())),
                Ok(caller) => {
                    let result = keyvault::guard(&state, &mut ctx, &caller, target.vault, &route)
                        .and_then(|vault| run(&state, &mut ctx, &vault, name, version));
                    ctx.caller = Some(caller);
                    result
                }
            };
        let (status, description) = outcome(&result);
        exchange
            .finish(&state, ctx, status, description)
            .await
            .map_err(refusal)?;
        result.map_err(|e| {
            if e.status == StatusCode::UNAUTHORIZED {
                self.forget_token(identity);
            }
            refusal(e)
        })
    }

    /// Wraps or unwraps `value` under the key at `key_url` as `identity`.
    async fn wrapping(
        &self,
        identity: &str,
        key_url: &str,
        op: KeyOperation,
        alg: &str,
        value: &[u8],
    ) -> Result<OperationOutput, KeyAccessError> {
        self.guarded(
            identity,
            key_url,
            Call::KeyOperation(op),
            |state, ctx, vault, name, version| {
                let input = OperationInput {
                    alg: alg.to_owned(),
                    value: Zeroizing::new(value.to_vec()),
                    digest: None,
                    iv: None,
                    aad: None,
                    tag: None,
                };
                let (key, output) = state
                    .vaults
                    .key_operation(vault, name, version, op, &input, ctx.now)?;
                ctx.target_id = Some(format!(
                    "{}/keys/{}/{}",
                    state.vault_base(&vault.name),
                    key.name,
                    key.version
                ));
                Ok(output)
            },
        )
        .await
    }
}

/// The request line of an in-process call, as its audit event records it.
fn describe(exchange: &mut Exchange<'_>, state: &AppState, method: &str, request_uri: String) {
    exchange.method = method.to_owned();
    exchange.request_uri = request_uri;
    exchange.correlation_id = state.request_ids.next();
    exchange.client_info = USER_AGENT_VALUE.to_owned();
}

/// The status and description an outcome is audited with.
fn outcome<T>(result: &Result<T, ApiError>) -> (StatusCode, String) {
    match result {
        Ok(_) => (StatusCode::OK, String::new()),
        Err(e) => (e.status, e.message.clone()),
    }
}

/// A vault as the platform looks it up (no identity involved).
fn platform_view(state: &AppState, vault: &str) -> Result<Arc<VaultRecord>, KeyAccessError> {
    state.vaults.data_plane_vault(vault).map_err(|e| {
        failure(
            404,
            "VaultNotFound",
            format!("The key vault '{vault}' was not found: {e}"),
        )
    })
}

fn unexpected(what: &str) -> KeyAccessError {
    failure(500, "InternalError", format!("the vault answered {what}"))
}

impl KeyVaultAccess for InProcessVaults {
    fn describe_vault(&self, vault: &str) -> Result<VaultDescription, KeyAccessError> {
        let state = self.state()?;
        let row = platform_view(&state, vault)?;
        Ok(VaultDescription {
            resource_id: vault_resource_id(&row),
            location: row.location.clone(),
            enabled_for_disk_encryption: row.disk_encryption,
            uri: state.vault_base(&row.name),
        })
    }

    fn set_secret<'a>(
        &'a self,
        identity: &'a str,
        vault: &'a str,
        name: &'a str,
        secret: &'a PlatformSecret,
    ) -> KeyFuture<'a, String> {
        Box::pin(async move {
            let state = self.state()?;
            let url = format!("{}/secrets/{name}", state.vault_base(vault));
            drop(state);
            self.guarded(
                identity,
                &url,
                Call::SetSecret,
                |state, ctx, vault, name, _| {
                    let request = SetSecret {
                        value: secret.value.clone(),
                        content_type: Some(secret.content_type.clone()),
                        tags: Some(secret.tags.clone()),
                        attributes: Default::default(),
                    };
                    let stored = state.vaults.set_secret(vault, name, &request, ctx.now)?;
                    let id = format!(
                        "{}/secrets/{}/{}",
                        state.vault_base(&vault.name),
                        stored.name,
                        stored.version
                    );
                    ctx.target_id = Some(id.clone());
                    Ok(id)
                },
            )
            .await
        })
    }

    fn create_key<'a>(
        &'a self,
        identity: &'a str,
        vault: &'a str,
        name: &'a str,
        key_size: u32,
    ) -> KeyFuture<'a, KeyVersion> {
        Box::pin(async move {
            let state = self.state()?;
            let url = format!("{}/keys/{name}", state.vault_base(vault));
            drop(state);
            self.guarded(
                identity,
                &url,
                Call::CreateKey,
                |state, ctx, vault, name, _| {
                    let request = atrest_vault::CreateKey {
                        key_size: Some(key_size),
                        ..atrest_vault::CreateKey::of_type("RSA")
                    };
                    let key = state.vaults.create_key(vault, name, &request, ctx.now)?;
                    let kid = format!(
                        "{}/keys/{}/{}",
                        state.vault_base(&vault.name),
                        key.name,
                        key.version
                    );
                    ctx.target_id = Some(kid.clone());
                    Ok(KeyVersion { kid })
                },
            )
            .await
        })
    }

    fn backup_key<'a>(&'a self, identity: &'a str, key_url: &'a str) -> KeyFuture<'a, Vec<u8>> {
        Box::pin(async move {
            self.guarded(
                identity,
                key_url,
                Call::BackupKey,
                |state, _, vault, name, _| Ok(state.vaults.backup_key(vault, name)?),
            )
            .await
        })
    }

    fn get_secret<'a>(
        &'a self,
        identity: &'a str,
        secret_url: &'a str,
    ) -> KeyFuture<'a, PlatformSecret> {
        Box::pin(async move {
            self.guarded(
                identity,
                secret_url,
                Call::GetSecret,
                |state, ctx, vault, name, version| {
                    let secret = state.vaults.get_secret(vault, name, version, ctx.now)?;
                    Ok(PlatformSecret {
                        value: secret.value.clone().unwrap_or_default(),
                        content_type: secret.content_type.clone().unwrap_or_default(),
                        tags: secret.tags.clone(),
                    })
                },
            )
            .await
        })
    }

    fn describe(
        &self,
        vault: &str,
        key: &str,
        version: &str,
    ) -> Result<KeyDescription, KeyAccessError> {
        let state = self.state()?;
        let row = platform_view(&state, vault)?;
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
            certificate: key.as_ref().is_some_and(|k| k.managed),
        })
    }

    fn get_key<'a>(&'a self, identity: &'a str, key_url: &'a str) -> KeyFuture<'a, KeyVersion> {
        Box::pin(async move {
            self.guarded(
                identity,
                key_url,
                Call::GetKey,
                |state, ctx, vault, name, version| {
                    let key = state.vaults.get_key(vault, name, version)?;
                    let kid = format!(
                        "{}/keys/{}/{}",
                        state.vault_base(&vault.name),
                        key.name,
                        key.version
                    );
                    ctx.target_id = Some(kid.clone());
                    Ok(KeyVersion { kid })
                },
            )
            .await
        })
    }

    fn wrap_key<'a>(
        &'a self,
        identity: &'a str,
        key_url: &'a str,
        alg: &'a str,
        dek: &'a [u8],
    ) -> KeyFuture<'a, Vec<u8>> {
        Box::pin(async move {
            match self
                .wrapping(identity, key_url, KeyOperation::WrapKey, alg, dek)
                .await?
            {
                OperationOutput::Encrypted(e) => Ok(e.ciphertext),
                _ => Err(unexpected("a wrap without ciphertext")),
            }
        })
    }

    fn unwrap_key<'a>(
        &'a self,
        identity: &'a str,
        key_url: &'a str,
        alg: &'a str,
        wrapped: &'a [u8],
    ) -> KeyFuture<'a, Zeroizing<Vec<u8>>> {
        Box::pin(async move {
            match self
                .wrapping(identity, key_url, KeyOperation::UnwrapKey, alg, wrapped)
                .await?
            {
                OperationOutput::Plaintext(p) => Ok(p),
                _ => Err(unexpected("an unwrap without plaintext")),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_urls() {
        let parse = |url: &'static str| {
            let uri: &'static Uri = Box::leak(Box::new(url.parse::<Uri>().unwrap()));
            ObjectUrl::parse(url, uri, "keys").map(|k| (k.host, k.vault, k.name, k.version))
        };
        assert_eq!(
            parse("https://KV1.vault.localhost:8443/keys/k1/abc").unwrap(),
            ("kv1.vault.localhost".to_owned(), "KV1", "k1", Some("abc"))
        );
        assert_eq!(
            parse("https://kv1.vault.localhost:8443/keys/k1/").unwrap(),
            ("kv1.vault.localhost".to_owned(), "kv1", "k1", None)
        );
        for bad in [
            "http://kv1.vault.localhost:8443/keys/k1/v",
            "https://kv1.example.com/keys/k1/v",
            "https://a.b.vault.localhost/keys/k1/v",
            "https://kv1.vault.localhost/secrets/s1/v",
            "https://kv1.vault.localhost/keys/k1/v/extra",
            "https://kv1.vault.localhost/keys/k1/v?x=1",
            "https://[::1]:443/keys/k1/v",
        ] {
            assert_eq!(parse(bad).unwrap_err().code, "BadParameter", "{bad}");
        }
    }
}
