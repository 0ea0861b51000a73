//! How the CLI reaches a server: endpoint and credentials from the environment (as
//! written to `DIR/env`), tokens from the token service, Azure errors turned into messages.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context};
use atrest_api::client::{Client, Method};
use serde_json::Value;
use tokio::sync::Mutex;
use zeroize::Zeroizing;

/// Management API version the CLI speaks.
const ARM_API_VERSION: &str = "2023-07-01";
/// Key Vault data-plane version the CLI speaks.
const DATA_API_VERSION: &str = "7.6";
/// Resource of management tokens.
const MANAGEMENT_RESOURCE: &str = "https://management.azure.com";

/// How many 429 answers in a row a request waits out (as the Azure SDKs' retry policy
/// does) before the refusal is the answer.
const THROTTLE_RETRIES: u32 = 5;
/// The longest wait one `Retry-After` may ask of the CLI.
const MAX_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(30);

/// The wait a throttled answer asks for: its `Retry-After` seconds, else one second.
fn retry_after(resp: &atrest_api::client::Response) -> std::time::Duration {
    let seconds = resp
        .headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(1);
    std::time::Duration::from_secs(seconds).min(MAX_RETRY_AFTER)
}

/// An authenticated connection to one instance.
pub(crate) struct Connection {
    client: Client,
    endpoint: String,
    tenant: String,
    /// The client id the CLI signs in with.
    pub client_id: String,
    client_secret: Zeroizing<String>,
    port: u16,
    /// Subscription of every resource.
    pub subscription: String,
    /// Resource group used when none is given.
    pub resource_group: String,
    tokens: Mutex<HashMap<String, Zeroizing<String>>>,
}

/// The variables of `DIR/env`.
fn read_env_file(path: &Path) -> anyhow::Result<HashMap<String, String>> {
    let text = Zeroizing::new(
        std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}; is the server running?", path.display()))?,
    );
    Ok(atrest_api::instance::parse_env(&text))
}

/// Connects to the server of `--data-dir` (its `DIR/env`) when it is not the one whose
/// environment is sourced; else to the one the environment names.
pub(crate) fn connect(data_dir: Option<&Path>) -> anyhow::Result<Connection> {
    let sourced = std::env::var_os("ATREST_DATA_DIR").map(std::path::PathBuf::from);
    match data_dir {
        // Another server's directory than the sourced one: its own `DIR/env` alone. The
        // sourced one (or none named): the environment, whose variables may override it.
        Some(dir) if sourced.as_deref() != Some(dir) => connect_to(dir),
        _ => {
            let file = match (std::env::var_os("ATREST_ENDPOINT"), data_dir) {
                (None, Some(dir)) => read_env_file(&dir.join("env"))?,
                _ => HashMap::new(),
            };
            from_vars(|name| std::env::var(name).ok().or_else(|| file.get(name).cloned()))
        }
    }
}

/// Connects to the server of `data_dir` using its `DIR/env` alone.
pub(crate) fn connect_to(data_dir: &Path) -> anyhow::Result<Connection> {
    let file = read_env_file(&data_dir.join("env"))?;
    from_vars(|name| file.get(name).cloned())
}

fn from_vars(lookup: impl Fn(&str) -> Option<String>) -> anyhow::Result<Connection> {
    let var = |name: &str| -> anyhow::Result<String> {
        lookup(name).with_context(|| {
            format!("{name} is not set; run `source DIR/env` or pass --data-dir DIR")
        })
    };
    let endpoint = var("ATREST_ENDPOINT")?.trim_end_matches('/').to_owned();
    let ca_path = var("ATREST_CA")?;
    let ca = std::fs::read_to_string(&ca_path)
        .with_context(|| format!("cannot read the CA certificate {ca_path}"))?;
    let port = atrest_api::client::port_of(&endpoint)
        .with_context(|| format!("ATREST_ENDPOINT '{endpoint}' is not an https:// URL"))?;
    Ok(Connection {
        client: Client::new(&ca)?,
        tenant: var("AZURE_TENANT_ID")?,
        client_id: var("AZURE_CLIENT_ID")?,
        client_secret: Zeroizing::new(var("AZURE_CLIENT_SECRET")?),
        subscription: var("ATREST_SUBSCRIPTION_ID")?,
        resource_group: var("ATREST_RESOURCE_GROUP").unwrap_or_else(|_| "default".into()),
        endpoint,
        port,
        tokens: Mutex::new(HashMap::new()),
    })
}

pub(crate) use atrest_api::client::percent_encode as enc;

/// The message of an Azure or OAuth error body.
fn error_message(status: u16, body: &Value) -> String {
    let azure = body
        .pointer("/error/code")
        .and_then(Value::as_str)
        .map(|code| {
            let message = body
                .pointer("/error/message")
                .and_then(Value::as_str)
                .unwrap_or("");
            match body
                .pointer("/error/innererror/code")
                .and_then(Value::as_str)
            {
                Some(inner) => format!("({code}/{inner}) {message}"),
                None => format!("({code}) {message}"),
            }
        });
    let oauth = || {
        body.get("error").and_then(Value::as_str).map(|code| {
            format!(
                "({code}) {}",
                body.get("error_description")
                    .and_then(Value::as_str)
                    .unwrap_or("")
            )
        })
    };
    let text = azure
        .or_else(oauth)
        .unwrap_or_else(|| "no error details".into());
    format!("HTTP {status}: {text}")
}

impl Connection {
    /// An access token for `resource`, cached for the life of the process.
    async fn token(&self, resource: &str) -> anyhow::Result<Zeroizing<String>> {
        let mut tokens = self.tokens.lock().await;
        if let Some(t) = tokens.get(resource) {
            return Ok(t.clone());
        }
        let form = Zeroizing::new(format!(
            "grant_type=client_credentials&client_id={}&client_secret={}&scope={}",
            enc(&self.client_id),
            enc(&self.client_secret),
            enc(&format!("{resource}/.default"))
        ));
        let url = format!("{}/{}/oauth2/v2.0/token", self.endpoint, self.tenant);
        let resp = self
            .client
            .send(
                Method::POST,
                &url,
                &[("content-type", "application/x-www-form-urlencoded")],
                form.as_bytes().to_vec(),
            )
            .await?;
        let body = resp.json();
        if resp.status != 200 {
            bail!("cannot get a token: {}", error_message(resp.status, &body));
        }
        let token = Zeroizing::new(
            body.get("access_token")
                .and_then(Value::as_str)
                .context("token response without access_token")?
                .to_owned(),
        );
        tokens.insert(resource.to_owned(), token.clone());
        Ok(token)
    }

    async fn call(
        &self,
        resource: &str,
        method: Method,
        url: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        Ok(self.respond(resource, method, url, body).await?.json())
    }

    /// One authenticated request; refused statuses become errors with Azure's message.
    async fn respond(
        &self,
        resource: &str,
        method: Method,
        url: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<atrest_api::client::Response> {
        let token = self.token(resource).await?;
        let auth = Zeroizing::new(format!("Bearer {}", token.as_str()));
        let mut headers = vec![("authorization", auth.as_str())];
        let payload = match body {
            Some(b) => {
                headers.push(("content-type", "application/json"));
                b.to_string().into_bytes()
            }
            None => Vec::new(),
        };
        let mut throttled = 0;
        let resp = loop {
            let resp = self
                .client
                .send(method.clone(), url, &headers, payload.clone())
                .await?;
            if resp.status != 429 || throttled == THROTTLE_RETRIES {
                break resp;
            }
            throttled += 1;
            tokio::time::sleep(retry_after(&resp)).await;
        };
        if resp.status >= 400 {
            bail!("{}", error_message(resp.status, &resp.json()));
        }
        Ok(resp)
    }

    /// A management request; `path` starts with `/` and has no query string.
    /// One request to a disk access URL (signed by its own query string, no token).
    pub(crate) async fn access_url(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> anyhow::Result<atrest_api::client::Response> {
        let resp = self.client.send(method, url, headers, body).await?;
        if resp.status >= 300 {
            bail!("{}", error_message(resp.status, &resp.json()));
        }
        Ok(resp)
    }

    pub(crate) async fn management(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        Ok(self.management_response(method, path, body).await?.json())
    }

    /// A management request, answered whole (headers included).
    pub(crate) async fn management_response(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<atrest_api::client::Response> {
        let join = if path.contains('?') { '&' } else { '?' };
        let url = format!("{}{path}{join}api-version={ARM_API_VERSION}", self.endpoint);
        self.respond(MANAGEMENT_RESOURCE, method, &url, body).await
    }

    /// An administration request under `/atrest`; `path_and_query` starts with `/`.
    pub(crate) async fn admin(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let url = format!("{}/atrest{path_and_query}", self.endpoint);
        self.call(MANAGEMENT_RESOURCE, method, &url, body).await
    }

    /// A data-plane request to `vault`; `path` starts with `/`, `query` is extra parameters.
    pub(crate) async fn data_plane(
        &self,
        vault: &str,
        method: Method,
        path: &str,
        query: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let url = format!(
            "https://{vault}.vault.localhost:{}{path}?api-version={DATA_API_VERSION}{query}",
            self.port
        );
        let resource = format!("https://vault.localhost:{}", self.port);
        self.call(&resource, method, &url, body).await
    }

    /// Follows `nextLink`s of a data-plane listing, collecting every item.
    pub(crate) async fn data_plane_all(
        &self,
        vault: &str,
        path: &str,
    ) -> anyhow::Result<Vec<Value>> {
        let resource = format!("https://vault.localhost:{}", self.port);
        let mut page = self.data_plane(vault, Method::GET, path, "", None).await?;
        let mut items = Vec::new();
        loop {
            if let Some(Value::Array(values)) = page.get_mut("value").map(Value::take) {
                items.extend(values);
            }
            match page.get("nextLink").and_then(Value::as_str) {
                Some(next) => page = self.call(&resource, Method::GET, next, None).await?,
                None => return Ok(items),
            }
        }
    }
}
