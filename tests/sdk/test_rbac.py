"""Azure RBAC on the data plane: role assignments through the CLI and the ARM API, checked
with the unmodified SDKs and raw HTTP. The authorization matrix is generated from the role
definitions the server publishes, not written case by case."""
import fnmatch
import uuid

import pytest
import requests
from conftest import import_body
from azure.core.exceptions import HttpResponseError
from azure.keyvault.keys import KeyClient
from azure.keyvault.secrets import SecretClient

VAULT = "sdk-main"


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def assign(server, sp, role, scope):
    return server.cli("role", "assignment", "create", "--assignee", sp["appId"], "--role", role, "--scope", scope)


def denied(call):
    with pytest.raises(HttpResponseError) as err:
        call()
    assert err.value.status_code == 403, err.value
    assert "ForbiddenByRbac" in str(err.value)
    return err.value


# What each data-plane operation needs (Azure's resource-provider operations list) and how
# to perform it over raw HTTP against objects the fixture prepares.
OPERATIONS = {
    "SecretGet": ("Microsoft.KeyVault/vaults/secrets/getSecret/action", "GET", "/secrets/{secret}", None),
    "SecretSet": ("Microsoft.KeyVault/vaults/secrets/setSecret/action", "PUT", "/secrets/{secret}", {"value": "v"}),
    "SecretList": ("Microsoft.KeyVault/vaults/secrets/readMetadata/action", "GET", "/secrets", None),
    "SecretUpdate": ("Microsoft.KeyVault/vaults/secrets/update/action", "PATCH", "/secrets/{secret}", {"tags": {"t": "1"}}),
    "SecretBackup": ("Microsoft.KeyVault/vaults/secrets/backup/action", "POST", "/secrets/{secret}/backup", None),
    "KeyGet": ("Microsoft.KeyVault/vaults/keys/read", "GET", "/keys/{key}", None),
    "KeyCreate": ("Microsoft.KeyVault/vaults/keys/create/action", "POST", "/keys/{key}/create", {"kty": "EC", "crv": "P-256"}),
    "KeyUpdate": ("Microsoft.KeyVault/vaults/keys/update/action", "PATCH", "/keys/{key}", {"tags": {"t": "1"}}),
    "KeySign": ("Microsoft.KeyVault/vaults/keys/sign/action", "POST", "/keys/{key}/sign",
                {"alg": "ES256", "value": "n4bQgYhMfWWaL-qgxVrQFaO_TxsrC4Is0V1sFbDwCgg"}),
    "KeyVerify": ("Microsoft.KeyVault/vaults/keys/verify/action", "POST", "/keys/{key}/verify",
                  {"alg": "ES256", "digest": "n4bQgYhMfWWaL-qgxVrQFaO_TxsrC4Is0V1sFbDwCgg", "value": "AA"}),
    "KeyWrap": ("Microsoft.KeyVault/vaults/keys/wrap/action", "POST", "/keys/{rsa}/wrapkey",
                {"alg": "RSA-OAEP-256", "value": "AAAAAAAAAAAAAAAAAAAAAA"}),
    "KeyRotate": ("Microsoft.KeyVault/vaults/keys/rotate/action", "POST", "/keys/{key}/rotate", None),
    "KeyGetRotationPolicy": ("Microsoft.KeyVault/vaults/keyrotationpolicies/read", "GET", "/keys/{key}/rotationpolicy", None),
    "KeyBackup": ("Microsoft.KeyVault/vaults/keys/backup/action", "POST", "/keys/{key}/backup", None),
    "CertificateGet": ("Microsoft.KeyVault/vaults/certificates/read", "GET", "/certificates/{cert}", None),
    "CertificateList": ("Microsoft.KeyVault/vaults/certificates/read", "GET", "/certificates", None),
    "CertificatePolicyGet": ("Microsoft.KeyVault/vaults/certificates/read", "GET", "/certificates/{cert}/policy", None),
    "CertificateCreate": ("Microsoft.KeyVault/vaults/certificates/create/action", "POST", "/certificates/{cert}/create",
                          {"policy": {"issuer": {"name": "Self"}, "key_props": {"kty": "EC", "crv": "P-256"},
                                      "x509_props": {"subject": "CN=matrix"}}}),
    "CertificateImport": ("Microsoft.KeyVault/vaults/certificates/import/action", "POST", "/certificates/{cert}/import",
                          import_body()),
    "CertificateUpdate": ("Microsoft.KeyVault/vaults/certificates/update/action", "PATCH", "/certificates/{cert}",
                          {"tags": {"t": "1"}}),
}


def grants(role, action):
    """What the role's published permissions say about a data action."""
    perms = role["properties"]["permissions"][0]
    match = lambda patterns: any(fnmatch.fnmatchcase(action.lower(), p.lower()) for p in patterns)
    return match(perms["dataActions"]) and not match(perms["notDataActions"])


def test_authorization_matrix_follows_the_role_table(server):
    roles = server.cli("role", "definition", "list")
    assert {r["properties"]["roleName"] for r in roles} >= {
        "Key Vault Administrator", "Key Vault Crypto Officer", "Key Vault Crypto User",
        "Key Vault Crypto Service Encryption User", "Key Vault Crypto Service Release User",
        "Key Vault Secrets Officer", "Key Vault Secrets User", "Key Vault Reader",
        "Key Vault Purge Operator", "Key Vault Data Access Administrator", "Key Vault Certificates Officer",
        "Key Vault Certificate User", "Owner", "Contributor", "Reader"}
    names = {"secret": unique("ms"), "key": unique("mk"), "rsa": unique("mr"), "cert": unique("mc")}
    admin = server.cli  # the bootstrap administrator prepares the objects
    admin("keyvault", "secret", "set", "--vault-name", VAULT, "--name", names["secret"], "--value", "x")
    admin("keyvault", "key", "create", "--vault-name", VAULT, "--name", names["key"], "--kty", "EC", "--curve", "P-256")
    admin("keyvault", "key", "create", "--vault-name", VAULT, "--name", names["rsa"], "--kty", "RSA", "--size", "2048")
    from azure.identity import DefaultAzureCredential
    from azure.keyvault.certificates import CertificateClient, CertificatePolicy
    CertificateClient(server.vault_url(VAULT), DefaultAzureCredential()).begin_create_certificate(
        names["cert"], CertificatePolicy.get_default()).result()
    base = server.vault_url(VAULT)
    mismatches, outcomes = [], {True: 0, False: 0}
    for role in roles:
        sp, credential = server.new_principal("rbac")
        assign(server, sp, role["name"], server.vault_scope(VAULT))
        token = credential.get_token(f"https://vault.localhost:{server.port}/.default").token
        for op, (action, method, path, body) in OPERATIONS.items():
            r = requests.request(method, base + path.format(**names), params={"api-version": "7.5"}, json=body,
                                 headers={"Authorization": f"Bearer {token}"}, verify=server.env["ATREST_CA"])
            allowed = r.status_code != 403
            outcomes[allowed] += 1
            if allowed:
                assert r.status_code < 300, (role["properties"]["roleName"], op, r.text)
            if r.status_code == 403:
                assert r.json()["error"]["innererror"]["code"] == "ForbiddenByRbac"
            if allowed != grants(role, action):
                mismatches.append((role["properties"]["roleName"], op, r.status_code))
    assert mismatches == []
    assert outcomes[True] > 30 and outcomes[False] > 30, outcomes


def test_scopes_and_revocation(server):
    sp, credential = server.new_principal("rbac")
    secrets = SecretClient(server.vault_url(VAULT), credential)
    mine, sibling = unique("scoped"), unique("sibling")
    for name in (mine, sibling):
        server.cli("keyvault", "secret", "set", "--vault-name", VAULT, "--name", name, "--value", "v")
    err = denied(lambda: secrets.get_secret(mine))
    assert "Microsoft.KeyVault/vaults/secrets/getSecret/action" in str(err)

    # A role on one secret grants nothing on its siblings.
    one = assign(server, sp, "Key Vault Secrets User", f"{server.vault_scope(VAULT)}/secrets/{mine}")
    assert secrets.get_secret(mine).value == "v"
    denied(lambda: secrets.get_secret(sibling))
    denied(lambda: secrets.set_secret(mine, "changed"))

    # A role on the resource group reaches every vault in it.
    keys = KeyClient(server.vault_url("sdk-pp"), credential)
    denied(lambda: keys.create_ec_key(unique("k")))
    rg = f"/subscriptions/{server.env['ATREST_SUBSCRIPTION_ID']}/resourceGroups/default"
    assign(server, sp, "Key Vault Crypto Officer", rg)
    keys.create_ec_key(unique("k"))
    KeyClient(server.vault_url("sdk-geo"), credential).create_ec_key(unique("k"))

    # Removing an assignment takes effect on the next request.
    server.cli("role", "assignment", "delete", "--ids", one["id"])
    denied(lambda: secrets.get_secret(mine))
    listed = server.cli("role", "assignment", "list", "--assignee", sp["appId"], "--scope", rg)
    assert [a["properties"]["roleDefinitionName"] for a in listed] == ["Key Vault Crypto Officer"]
    server.cli("role", "assignment", "delete", "--assignee", sp["appId"], "--role", "Key Vault Crypto Officer", "--scope", rg)
    denied(lambda: keys.create_ec_key(unique("k")))

    # Denials are audited with the caller.
    events = server.cli("monitor", "audit", "list", "--operation", "KeyCreate", "--limit", "20")
    assert any(e["properties"]["httpStatusCode"] == 403 and e["identity"]["claim"]["appid"] == sp["appId"] for e in events)


def test_role_assignment_api_refuses_bad_input(server):
    sp, credential = server.new_principal("rbac")
    base = server.env["ATREST_ENDPOINT"]
    ca = server.env["ATREST_CA"]
    admin_token = requests.post(f"{base}/adfs/oauth2/v2.0/token", verify=ca, data={
        "grant_type": "client_credentials", "client_id": server.env["AZURE_CLIENT_ID"],
        "client_secret": server.env["AZURE_CLIENT_SECRET"], "scope": "https://management.azure.com/.default"}).json()["access_token"]
    scope = server.vault_scope(VAULT)
    role_id = "4633458b-17de-408a-b874-0445c86b69e6"

    def put(token, scope, name, body):
        return requests.put(f"{base}{scope}/providers/Microsoft.Authorization/roleAssignments/{name}",
                            params={"api-version": "2022-04-01"}, json=body, verify=ca,
                            headers={"Authorization": f"Bearer {token}"})

    good = {"properties": {"roleDefinitionId": role_id, "principalId": sp["objectId"]}}
    cases = [
        (scope, str(uuid.uuid4()), {"properties": {"roleDefinitionId": "no-such-role", "principalId": sp["objectId"]}}, 400, "RoleDefinitionDoesNotExist"),
        (scope, str(uuid.uuid4()), {"properties": {"roleDefinitionId": role_id, "principalId": str(uuid.uuid4())}}, 400, "PrincipalNotFound"),
        (scope, "not-a-guid", good, 400, "InvalidRoleAssignmentId"),
        (f"{scope}/storage/x", str(uuid.uuid4()), good, 400, "InvalidScope"),
        (scope, str(uuid.uuid4()), {"properties": {"principalId": sp["objectId"]}}, 400, None),
    ]
    for where, name, body, status, code in cases:
        r = put(admin_token, where, name, body)
        assert r.status_code == status, (body, r.text)
        if code:
            assert r.json()["error"]["code"] == code
    assert server.cli("role", "assignment", "list", "--assignee", sp["appId"], "--scope", scope) == []

    created = put(admin_token, scope, str(uuid.uuid4()), good)
    assert created.status_code == 201 and created.json()["properties"]["principalType"] == "ServicePrincipal"
    again = put(admin_token, scope, str(uuid.uuid4()), good)
    assert again.status_code == 409 and again.json()["error"]["code"] == "RoleAssignmentExists"

    # Only a principal allowed Microsoft.Authorization/roleAssignments/write may assign roles.
    own_token = credential.get_token("https://management.azure.com/.default").token
    r = put(own_token, scope, str(uuid.uuid4()), {"properties": {"roleDefinitionId": "00482a5a-887f-4fb3-b363-3b7fe8e74483", "principalId": sp["objectId"]}})
    assert r.status_code == 403 and r.json()["error"]["code"] == "AuthorizationFailed"
    assert len(server.cli("role", "assignment", "list", "--assignee", sp["appId"], "--scope", scope)) == 1


def test_vault_management_needs_control_plane_roles(server):
    sp, credential = server.new_principal("rbac")
    token = credential.get_token("https://management.azure.com/.default").token
    sub = server.env["ATREST_SUBSCRIPTION_ID"]
    rg = f"/subscriptions/{sub}/resourceGroups/default"
    name = unique("mv")[:20]
    url = f"{server.env['ATREST_ENDPOINT']}{rg}/providers/Microsoft.KeyVault/vaults/{name}"

    def call(method, body=None):
        return requests.request(method, url, params={"api-version": "2023-07-01"}, json=body, verify=server.env["ATREST_CA"],
                                headers={"Authorization": f"Bearer {token}"})

    body = {"location": "westeurope", "properties": {"tenantId": server.env["ATREST_TENANT_ID"], "sku": {"family": "A", "name": "standard"}}}
    r = call("PUT", body)
    assert r.status_code == 403 and r.json()["error"]["code"] == "AuthorizationFailed"
    assert "Microsoft.KeyVault/vaults/write" in r.json()["error"]["message"]
    assert server.cli("keyvault", "show", "--name", name, check=False).returncode != 0, "nothing was created"

    # Lists show only the vaults the caller may read.
    def listed():
        r = requests.get(f"{server.env['ATREST_ENDPOINT']}/subscriptions/{sub}/providers/Microsoft.KeyVault/vaults",
                         params={"api-version": "2023-07-01"}, verify=server.env["ATREST_CA"],
                         headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200, r.text
        return {v["name"] for v in r.json()["value"]}

    assert listed() == set()
    assign(server, sp, "Reader", server.vault_scope("sdk-pp"))
    assert listed() == {"sdk-pp"}

    # Reader may look, not change; Contributor may change, on everything in the group.
    assign(server, sp, "Reader", rg)
    assert listed() >= {"sdk-main", "sdk-pp", "sdk-geo"}
    assert call("PUT", body).status_code == 403
    assign(server, sp, "Contributor", rg)
    assert call("PUT", body).status_code in (200, 201)
    assert call("GET").status_code == 200
    assert call("DELETE").status_code == 200
