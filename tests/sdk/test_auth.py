"""Token service and the data plane's token checks, with azure-identity and raw HTTP."""
import base64
import json
import time
import uuid

import pytest
import requests
from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError
from azure.identity import ClientSecretCredential, DefaultAzureCredential, ManagedIdentityCredential
from azure.keyvault.secrets import SecretClient


class StaticCredential:
    """Hands out one fixed token, whatever is asked."""

    def __init__(self, token):
        self.token = token

    def get_token(self, *scopes, **kwargs):
        return AccessToken(self.token, int(time.time()) + 3600)

    def get_token_info(self, *scopes, options=None):
        from azure.core.credentials import AccessTokenInfo
        return AccessTokenInfo(self.token, int(time.time()) + 3600)


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims(token):
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def vault_scope(server):
    return f"https://vault.localhost:{server.port}/.default"


def test_discovery_documents(server):
    ca = server.env["ATREST_CA"]
    base = server.env["ATREST_ENDPOINT"]
    tenant = server.env["ATREST_TENANT_ID"]
    for path in [f"/{tenant}/v2.0/.well-known/openid-configuration", "/adfs/.well-known/openid-configuration"]:
        doc = requests.get(base + path, verify=ca).json()
        assert doc["issuer"] == f"{base}/{tenant}/v2.0"
        assert doc["token_endpoint"].startswith(base) and doc["token_endpoint"].endswith("/oauth2/v2.0/token")
        keys = requests.get(doc["jwks_uri"], verify=ca).json()["keys"]
        assert keys and keys[0]["kty"] == "EC" and "d" not in keys[0]


def test_token_claims(server):
    token = DefaultAzureCredential().get_token(vault_scope(server)).token
    c = claims(token)
    assert c["aud"] == f"https://vault.localhost:{server.port}"
    assert c["iss"] == f"{server.env['ATREST_ENDPOINT']}/{server.env['ATREST_TENANT_ID']}/v2.0"
    assert c["appid"] == server.env["AZURE_CLIENT_ID"]
    assert c["exp"] > c["nbf"] >= c["iat"] - 1


@pytest.mark.parametrize(
    "form,status,error",
    [
        ({"grant_type": "client_credentials", "client_id": "CLIENT", "client_secret": "wrong", "scope": "SCOPE"}, 401, "invalid_client"),
        ({"grant_type": "authorization_code", "client_id": "CLIENT", "client_secret": "SECRET", "scope": "SCOPE"}, 400, "unsupported_grant_type"),
        ({"grant_type": "password", "client_id": "CLIENT", "client_secret": "SECRET", "scope": "SCOPE"}, 400, "invalid_request"),
        ({"grant_type": "client_credentials", "client_id": "CLIENT", "client_secret": "SECRET", "scope": "https://elsewhere.example/.default"}, 400, "invalid_resource"),
        ({"grant_type": "client_credentials", "client_id": "CLIENT", "scope": "SCOPE"}, 400, "invalid_request"),
    ],
    ids=["bad-secret", "bad-grant", "password-without-username", "unknown-resource", "missing-secret"],
)
def test_token_endpoint_errors(server, form, status, error):
    subst = {"CLIENT": server.env["AZURE_CLIENT_ID"], "SECRET": server.env["AZURE_CLIENT_SECRET"], "SCOPE": vault_scope(server)}
    form = {k: subst.get(v, v) for k, v in form.items()}
    r = requests.post(f"{server.env['ATREST_ENDPOINT']}/adfs/oauth2/v2.0/token", data=form, verify=server.env["ATREST_CA"])
    assert r.status_code == status
    body = r.json()
    assert body["error"] == error
    assert body["error_description"] and body["error_codes"]
    assert server.env["AZURE_CLIENT_SECRET"] not in r.text


def test_bad_credentials_raise_in_sdk(server):
    credential = ClientSecretCredential("adfs", server.env["AZURE_CLIENT_ID"], "not-the-secret", authority=server.env["AZURE_AUTHORITY_HOST"])
    with pytest.raises(ClientAuthenticationError):
        SecretClient(server.vault_url("sdk-main"), credential).get_secret("anything")


def test_no_token_gets_the_challenge_before_the_body_is_read(server):
    url = f"{server.vault_url('sdk-main')}/secrets/challenged?api-version=7.4"
    r = requests.put(url, data=b"{not json", headers={"content-type": "application/json"}, verify=server.env["ATREST_CA"])
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"] == (
        f'Bearer authorization="{server.env["ATREST_ENDPOINT"]}/{server.env["ATREST_TENANT_ID"]}", '
        f'resource="https://vault.localhost:{server.port}"'
    )
    assert r.json()["error"]["code"] == "Unauthorized"


def rejected(server, token, vault="sdk-main"):
    client = SecretClient(server.vault_url(vault), StaticCredential(token))
    with pytest.raises(ClientAuthenticationError) as err:
        client.get_secret("whatever")
    assert err.value.status_code == 401
    return err.value


def test_forged_signature(server):
    token = DefaultAzureCredential().get_token(vault_scope(server)).token
    header, payload, signature = token.split(".")
    c = claims(token)
    c["oid"] = str(uuid.uuid4())
    forged = ".".join([header, b64url(json.dumps(c).encode()), signature])
    e = rejected(server, forged)
    assert "signature" in e.message.lower()
    # A token that is not a JWT at all.
    rejected(server, "not-a-token")


def test_wrong_audience(server):
    management = DefaultAzureCredential().get_token("https://management.azure.com/.default").token
    e = rejected(server, management)
    assert "audience" in e.message.lower()


def test_expired_token(short_server):
    ca = short_server.env["ATREST_CA"]
    credential = ClientSecretCredential(
        "adfs", short_server.env["AZURE_CLIENT_ID"], short_server.env["AZURE_CLIENT_SECRET"],
        authority=short_server.env["AZURE_AUTHORITY_HOST"], connection_verify=ca,
    )
    token = credential.get_token(vault_scope(short_server)).token
    client = SecretClient(short_server.vault_url("sdk-short"), StaticCredential(token), connection_verify=ca)
    client.set_secret("fresh", "works while the token is valid")
    time.sleep(3)
    with pytest.raises(ClientAuthenticationError) as err:
        client.get_secret("fresh")
    assert "expired" in err.value.message.lower()


def test_managed_identity_app_service_and_imds(server, monkeypatch):
    mi = server.cli("identity", "create", "-n", f"mi-{uuid.uuid4().hex[:8]}")
    assert mi["resourceId"].endswith(f"/userAssignedIdentities/{mi['displayName']}")
    base = server.env["ATREST_ENDPOINT"]

    monkeypatch.setenv("IDENTITY_ENDPOINT", f"{base}/msi/token")
    monkeypatch.setenv("IDENTITY_HEADER", mi["identityHeader"])
    credential = ManagedIdentityCredential(client_id=mi["appId"])
    token = credential.get_token(vault_scope(server)).token
    c = claims(token)
    assert c["idtyp"] == "ManagedIdentity" and c["xms_mirid"] == mi["resourceId"] and c["appid"] == mi["appId"]
    # Denied until a role grants it, then allowed on the next request.
    client = SecretClient(server.vault_url("sdk-main"), credential)
    with pytest.raises(HttpResponseError) as denied:
        client.set_secret("from-managed-identity", "ok")
    assert denied.value.status_code == 403 and "ForbiddenByRbac" in str(denied.value)
    server.cli("role", "assignment", "create", "--assignee", mi["appId"], "--role", "Key Vault Secrets Officer",
               "--scope", server.vault_scope("sdk-main"))
    client.set_secret("from-managed-identity", "ok")

    # A wrong identity header gets no token.
    r = requests.get(f"{base}/msi/token", params={"resource": f"https://vault.localhost:{server.port}", "api-version": "2019-08-01"},
                     headers={"X-IDENTITY-HEADER": "wrong"}, verify=server.env["ATREST_CA"])
    assert r.status_code == 400 and r.json()["error"]

    # IMDS style: Metadata header required.
    url = f"{base}/metadata/identity/oauth2/token"
    params = {"resource": f"https://vault.localhost:{server.port}", "client_id": mi["appId"], "api-version": "2018-02-01"}
    r = requests.get(url, params=params, verify=server.env["ATREST_CA"])
    assert r.status_code == 400
    r = requests.get(url, params=params, headers={"Metadata": "true"}, verify=server.env["ATREST_CA"])
    assert r.status_code == 200
    body = r.json()
    assert body["token_type"] == "Bearer" and int(body["expires_on"]) > time.time()
    assert claims(body["access_token"])["oid"] == mi["objectId"]
