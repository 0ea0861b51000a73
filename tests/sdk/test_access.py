"""Access policies (vaults with RBAC authorization off), users who sign in with a password,
and groups, checked with the unmodified SDKs and raw HTTP. The access-policy matrix grants
each of Azure's key and secret permissions alone and checks every operation against the
permission Key Vault documents for it."""
import uuid

import pytest
import requests
from conftest import import_body
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError
from azure.identity import UsernamePasswordCredential
from azure.keyvault.secrets import SecretClient

# Password sign-in (ROPC) is deprecated for lack of MFA; atrest's users use it on purpose.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

AP_VAULT = "sdk-ap"
AZURE_CLI = "04b07795-8ddb-461a-bbee-02f9e1bf7b46"

KEY_PERMISSIONS = ["all", "encrypt", "decrypt", "wrapKey", "unwrapKey", "sign", "verify", "get", "list", "create",
                   "update", "import", "delete", "backup", "restore", "recover", "purge", "release", "rotate",
                   "getrotationpolicy", "setrotationpolicy"]
SECRET_PERMISSIONS = ["all", "get", "list", "set", "delete", "backup", "restore", "recover", "purge"]
CERTIFICATE_PERMISSIONS = ["all", "get", "list", "create", "update", "delete", "import", "managecontacts"]

DIGEST = "n4bQgYhMfWWaL-qgxVrQFaO_TxsrC4Is0V1sFbDwCgg"
# Each operation, the permission Key Vault's REST reference says it requires, and how to
# perform it over raw HTTP against objects the test prepares.
OPERATIONS = {
    "SecretGet": ("secrets", "get", "GET", "/secrets/{secret}", None),
    "SecretSet": ("secrets", "set", "PUT", "/secrets/{secret}", {"value": "v"}),
    "SecretUpdate": ("secrets", "set", "PATCH", "/secrets/{secret}", {"tags": {"t": "1"}}),
    "SecretList": ("secrets", "list", "GET", "/secrets", None),
    "SecretListVersions": ("secrets", "list", "GET", "/secrets/{secret}/versions", None),
    "SecretBackup": ("secrets", "backup", "POST", "/secrets/{secret}/backup", None),
    "KeyGet": ("keys", "get", "GET", "/keys/{key}", None),
    "KeyList": ("keys", "list", "GET", "/keys", None),
    "KeyCreate": ("keys", "create", "POST", "/keys/{key}/create", {"kty": "EC", "crv": "P-256"}),
    "KeyUpdate": ("keys", "update", "PATCH", "/keys/{key}", {"tags": {"t": "1"}}),
    "KeySign": ("keys", "sign", "POST", "/keys/{key}/sign", {"alg": "ES256", "value": DIGEST}),
    "KeyVerify": ("keys", "verify", "POST", "/keys/{key}/verify", {"alg": "ES256", "digest": DIGEST, "value": "AA"}),
    "KeyEncrypt": ("keys", "encrypt", "POST", "/keys/{rsa}/encrypt", {"alg": "RSA-OAEP-256", "value": "AAAA"}),
    "KeyWrap": ("keys", "wrapKey", "POST", "/keys/{rsa}/wrapkey", {"alg": "RSA-OAEP-256", "value": "AAAAAAAAAAAAAAAAAAAAAA"}),
    "KeyRotate": ("keys", "rotate", "POST", "/keys/{key}/rotate", None),
    "KeyGetRotationPolicy": ("keys", "getrotationpolicy", "GET", "/keys/{key}/rotationpolicy", None),
    "KeySetRotationPolicy": ("keys", "setrotationpolicy", "PUT", "/keys/{key}/rotationpolicy",
                             {"lifetimeActions": [{"trigger": {"timeBeforeExpiry": "P30D"}, "action": {"type": "Notify"}}]}),
    "KeyBackup": ("keys", "backup", "POST", "/keys/{key}/backup", None),
    "CertificateGet": ("certificates", "get", "GET", "/certificates/{cert}", None),
    "CertificateList": ("certificates", "list", "GET", "/certificates", None),
    "CertificateCreate": ("certificates", "create", "POST", "/certificates/{cert}/create",
                          {"policy": {"issuer": {"name": "Self"}, "key_props": {"kty": "EC", "crv": "P-256"},
                                      "x509_props": {"subject": "CN=matrix"}}}),
    "CertificateImport": ("certificates", "import", "POST", "/certificates/{cert}/import", import_body()),
    "CertificateUpdate": ("certificates", "update", "PATCH", "/certificates/{cert}", {"tags": {"t": "1"}}),
    "CertificatePolicyUpdate": ("certificates", "update", "PATCH", "/certificates/{cert}/policy",
                                {"x509_props": {"validity_months": 6}}),
}


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def ap_vault(server):
    vault = server.cli("keyvault", "create", "-n", AP_VAULT, "-l", "westeurope", "--enable-rbac-authorization", "false")
    assert vault["properties"]["enableRbacAuthorization"] is False
    [mine] = vault["properties"]["accessPolicies"]
    assert mine["permissions"]["secrets"] == ["all"], "the creator gets every permission, as az gives it"
    return vault


def set_policy(server, spn, **permissions):
    args = []
    for cls, names in permissions.items():
        args += [f"--{cls}-permissions", *names]
    return server.cli("keyvault", "set-policy", "-n", AP_VAULT, "--spn", spn, *args)


def policy_denied(call, what):
    with pytest.raises(HttpResponseError) as err:
        call()
    assert err.value.status_code == 403, err.value
    assert "ForbiddenByPolicy" in str(err.value)
    assert f"does not have {what} permission on key vault '{AP_VAULT}" in str(err.value)


def test_access_policy_matrix(server, ap_vault):
    names = {"secret": unique("ps"), "key": unique("pk"), "rsa": unique("pr"), "cert": unique("pc")}
    server.cli("keyvault", "secret", "set", "--vault-name", AP_VAULT, "--name", names["secret"], "--value", "x")
    server.cli("keyvault", "key", "create", "--vault-name", AP_VAULT, "--name", names["key"], "--kty", "EC", "--curve", "P-256")
    server.cli("keyvault", "key", "create", "--vault-name", AP_VAULT, "--name", names["rsa"], "--kty", "RSA", "--size", "2048")
    from azure.identity import DefaultAzureCredential
    from azure.keyvault.certificates import CertificateClient, CertificatePolicy
    CertificateClient(server.vault_url(AP_VAULT), DefaultAzureCredential()).begin_create_certificate(
        names["cert"], CertificatePolicy.get_default()).result()
    base = server.vault_url(AP_VAULT)
    grants = ([("keys", p) for p in KEY_PERMISSIONS] + [("secrets", p) for p in SECRET_PERMISSIONS]
              + [("certificates", p) for p in CERTIFICATE_PERMISSIONS])
    mismatches, outcomes = [], {True: 0, False: 0}
    for cls, permission in grants:
        sp, credential = server.new_principal("ap")
        vault = set_policy(server, sp["appId"], **{cls.rstrip("s"): [permission]})
        entry = [e for e in vault["properties"]["accessPolicies"] if e["objectId"] == sp["objectId"]]
        assert entry[0]["permissions"][cls] == [permission]
        token = credential.get_token(f"https://vault.localhost:{server.port}/.default").token
        for op, (need_cls, need, method, path, body) in OPERATIONS.items():
            r = requests.request(method, base + path.format(**names), params={"api-version": "7.5"}, json=body,
                                 headers={"Authorization": f"Bearer {token}"}, verify=server.env["ATREST_CA"])
            allowed = r.status_code != 403
            outcomes[allowed] += 1
            if allowed:
                assert r.status_code < 300, (cls, permission, op, r.text)
            else:
                error = r.json()["error"]
                assert error["code"] == "Forbidden" and error["innererror"]["code"] == "ForbiddenByPolicy"
                assert f"does not have {need_cls} {need} permission" in error["message"]
            if allowed != (cls == need_cls and permission in (need, "all")):
                mismatches.append((cls, permission, op, r.status_code))
    assert mismatches == []
    assert outcomes[True] > 30 and outcomes[False] > 300, outcomes


def test_policy_edits_take_effect_on_the_next_request(server, ap_vault):
    sp, credential = server.new_principal("ap")
    secrets = SecretClient(server.vault_url(AP_VAULT), credential)
    name = unique("edit")
    server.cli("keyvault", "secret", "set", "--vault-name", AP_VAULT, "--name", name, "--value", "v")
    policy_denied(lambda: secrets.get_secret(name), "secrets get")
    set_policy(server, sp["appId"], secret=["get", "list"])
    assert secrets.get_secret(name).value == "v"
    assert name in [s.name for s in secrets.list_properties_of_secrets()]
    policy_denied(lambda: secrets.set_secret(name, "w"), "secrets set")
    set_policy(server, sp["appId"], secret=["list"])
    policy_denied(lambda: secrets.get_secret(name), "secrets get")
    vault = server.cli("keyvault", "delete-policy", "-n", AP_VAULT, "--spn", sp["appId"])
    assert sp["objectId"] not in [e["objectId"] for e in vault["properties"]["accessPolicies"]]
    policy_denied(lambda: list(secrets.list_properties_of_secrets()), "secrets list")
    # A role assignment means nothing on a vault that uses access policies.
    server.cli("role", "assignment", "create", "--assignee", sp["appId"], "--role", "Key Vault Administrator",
               "--scope", server.vault_scope(AP_VAULT))
    policy_denied(lambda: secrets.get_secret(name), "secrets get")
    events = server.cli("monitor", "audit", "list", "--operation", "SecretGet", "--limit", "50")
    assert any(e["properties"]["httpStatusCode"] == 403 and e["identity"]["claim"]["appid"] == sp["appId"] for e in events)


def test_access_policy_api_refuses_bad_input(server, ap_vault):
    base = server.env["ATREST_ENDPOINT"]
    ca = server.env["ATREST_CA"]
    token = requests.post(f"{base}/adfs/oauth2/v2.0/token", verify=ca, data={
        "grant_type": "client_credentials", "client_id": server.env["AZURE_CLIENT_ID"],
        "client_secret": server.env["AZURE_CLIENT_SECRET"], "scope": "https://management.azure.com/.default"}).json()["access_token"]
    vault_url = base + server.vault_scope(AP_VAULT)
    tenant = server.env["ATREST_TENANT_ID"]

    def put(kind, entries, bearer=token):
        return requests.put(f"{vault_url}/accessPolicies/{kind}", params={"api-version": "2023-07-01"}, verify=ca,
                            json={"properties": {"accessPolicies": entries}}, headers={"Authorization": f"Bearer {bearer}"})

    def entry(oid=None, tenant_id=tenant, **perms):
        return {"tenantId": tenant_id, "objectId": oid or str(uuid.uuid4()), "permissions": perms}

    before = server.cli("keyvault", "show", "-n", AP_VAULT)["properties"]["accessPolicies"]
    cases = [
        ("add", [entry(keys=["getsecret"])], "keys permission 'getsecret' is not valid"),
        ("add", [entry(secrets=["get", "fly"])], "secrets permission 'fly' is not valid"),
        ("add", [entry(oid="alice")], "objectId 'alice'"),
        ("add", [entry(tenant_id=str(uuid.uuid4()), keys=["get"])], "must be the tenant of the vault"),
        ("merge", [entry(keys=["get"])], "operation kind 'merge' is invalid"),
        ("add", [entry(keys=["get"]) for _ in range(1025)], "exceeds the maximum of 1024"),
        ("add", [{"objectId": str(uuid.uuid4())}], None),
    ]
    for kind, entries, message in cases:
        r = put(kind, entries)
        assert r.status_code == 400, (kind, r.text)
        if message:
            assert message in r.json()["error"]["message"], r.text
    r = requests.put(f"{vault_url}/accessPolicies/add", params={"api-version": "2023-07-01"}, verify=ca,
                     data="{not json", headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    assert r.status_code == 400
    assert server.cli("keyvault", "show", "-n", AP_VAULT)["properties"]["accessPolicies"] == before

    # Case is normalized to Azure's spelling; 1024 entries in all are accepted.
    oid = str(uuid.uuid4())
    r = put("add", [entry(oid=oid, keys=["WRAPKEY", "Get"])])
    assert r.status_code == 200, r.text
    added = [e for e in r.json()["properties"]["accessPolicies"] if e["objectId"] == oid]
    assert added[0]["permissions"]["keys"] == ["wrapKey", "get"]
    room = 1024 - len(r.json()["properties"]["accessPolicies"])
    assert put("add", [entry(keys=["get"]) for _ in range(room)]).status_code == 200
    assert put("add", [entry(keys=["get"])]).status_code == 400
    kept = {e["objectId"] for e in before} | {oid}
    filler = [e for e in server.cli("keyvault", "show", "-n", AP_VAULT)["properties"]["accessPolicies"]
              if e["objectId"] not in kept]
    assert put("remove", [{"tenantId": tenant, "objectId": e["objectId"]} for e in filler] + [entry(oid=oid)]).status_code == 200
    assert server.cli("keyvault", "show", "-n", AP_VAULT)["properties"]["accessPolicies"] == before

    # Editing policies is a control-plane write.
    sp, credential = server.new_principal("ap")
    own = credential.get_token("https://management.azure.com/.default").token
    r = put("add", [entry(oid=sp["objectId"], secrets=["all"])], bearer=own)
    assert r.status_code == 403 and r.json()["error"]["code"] == "AuthorizationFailed"
    assert "Microsoft.KeyVault/vaults/accessPolicies/write" in r.json()["error"]["message"]


def user_credential(server, upn, password):
    return UsernamePasswordCredential(AZURE_CLI, upn, password, tenant_id="adfs",
                                      authority=server.env["AZURE_AUTHORITY_HOST"])


def test_users_and_groups(server, ap_vault):
    upn = f"{unique('alice')}@contoso.com"
    password = "Corr3ct-horse-battery"
    user = server.cli("ad", "user", "create", "--display-name", "Alice", "--user-principal-name", upn,
                      "--password", password)
    assert user["type"] == "User" and user["userPrincipalName"] == upn and "password" not in user
    assert password not in server.log()
    group = server.cli("ad", "group", "create", "--display-name", unique("readers"))
    outer = server.cli("ad", "group", "create", "--display-name", unique("everyone"))
    server.cli("ad", "group", "member", "add", "--group", outer["objectId"], "--member-id", group["objectId"])

    name = unique("grp")
    server.cli("keyvault", "secret", "set", "--vault-name", AP_VAULT, "--name", name, "--value", "ap")
    server.cli("keyvault", "secret", "set", "--vault-name", "sdk-main", "--name", name, "--value", "rbac")
    on_policy = SecretClient(server.vault_url(AP_VAULT), user_credential(server, upn, password))
    on_rbac = SecretClient(server.vault_url("sdk-main"), user_credential(server, upn, password))

    # Grants to the outer group reach the user through the inner one.
    server.cli("keyvault", "set-policy", "-n", AP_VAULT, "--object-id", outer["objectId"], "--secret-permissions", "get")
    server.cli("role", "assignment", "create", "--assignee", outer["objectId"], "--role", "Key Vault Secrets User",
               "--scope", f"{server.vault_scope('sdk-main')}/secrets/{name}")
    policy_denied(lambda: on_policy.get_secret(name), "secrets get")
    with pytest.raises(HttpResponseError) as err:
        on_rbac.get_secret(name)
    assert err.value.status_code == 403
    server.cli("ad", "group", "member", "add", "--group", group["displayName"], "--member-id", user["objectId"])
    assert [m["objectId"] for m in server.cli("ad", "group", "member", "list", "--group", group["objectId"])] == [user["objectId"]]
    assert on_policy.get_secret(name).value == "ap"
    assert on_rbac.get_secret(name).value == "rbac"
    assignments = server.cli("role", "assignment", "list", "--assignee", outer["objectId"],
                             "--scope", f"{server.vault_scope('sdk-main')}/secrets/{name}")
    assert assignments[0]["properties"]["principalType"] == "Group"

    # The audit names the user's object id and the client it signed in through.
    events = server.cli("monitor", "audit", "list", "--operation", "SecretGet", "--limit", "20")
    mine = [e for e in events if e["identity"]["claim"]["oid"] == user["objectId"]]
    assert mine and all(e["identity"]["claim"]["appid"] == AZURE_CLI for e in mine)
    assert {e["identity"]["claim"]["idtyp"] for e in mine} == {"user"}

    # Leaving the group takes effect on the next request.
    server.cli("ad", "group", "member", "remove", "--group", group["objectId"], "--member-id", user["objectId"])
    policy_denied(lambda: on_policy.get_secret(name), "secrets get")
    with pytest.raises(HttpResponseError) as err:
        on_rbac.get_secret(name)
    assert err.value.status_code == 403 and "ForbiddenByRbac" in str(err.value)

    # A wrong password gets no token.
    with pytest.raises(ClientAuthenticationError) as err:
        user_credential(server, upn, "Wr0ng-password!").get_token(f"https://vault.localhost:{server.port}/.default")
    assert "AADSTS50126" in str(err.value)


def test_directory_api_refuses_bad_input(server):
    upn = f"{unique('bob')}@contoso.com"
    cases = [
        (["ad", "user", "create", "--display-name", "Bob", "--user-principal-name", upn, "--password", "short"], "complexity"),
        (["ad", "user", "create", "--display-name", "Bob", "--user-principal-name", "bob", "--password", "Str0ng-enough"], "not valid"),
        (["ad", "user", "create", "--display-name", " ", "--user-principal-name", upn, "--password", "Str0ng-enough"], "displayName"),
    ]
    for args, message in cases:
        done = server.cli(*args, check=False)
        assert done.returncode != 0 and message in done.stderr, done.stderr
    assert upn not in [u["userPrincipalName"] for u in server.cli("ad", "user", "list")]
    server.cli("ad", "user", "create", "--display-name", "Bob", "--user-principal-name", upn, "--password", "Str0ng-enough")
    done = server.cli("ad", "user", "create", "--display-name", "Bob", "--user-principal-name", upn.upper(),
                      "--password", "Str0ng-enough", check=False)
    assert done.returncode != 0 and "already exists" in done.stderr

    a = server.cli("ad", "group", "create", "--display-name", unique("a"))
    b = server.cli("ad", "group", "create", "--display-name", unique("b"))
    server.cli("ad", "group", "member", "add", "--group", a["objectId"], "--member-id", b["objectId"])
    done = server.cli("ad", "group", "member", "add", "--group", b["objectId"], "--member-id", a["objectId"], check=False)
    assert done.returncode != 0 and "cycle" in done.stderr
    done = server.cli("ad", "group", "member", "add", "--group", a["objectId"], "--member-id", str(uuid.uuid4()), check=False)
    assert done.returncode != 0 and "does not exist" in done.stderr
    assert [m["objectId"] for m in server.cli("ad", "group", "member", "list", "--group", a["objectId"])] == [b["objectId"]]

    server.cli("ad", "user", "delete", "--id", upn)
    assert upn not in [u["userPrincipalName"] for u in server.cli("ad", "user", "list")]
    server.cli("ad", "group", "delete", "--group", b["objectId"])
    assert server.cli("ad", "group", "member", "list", "--group", a["objectId"]) == []
