"""`atrest monitor query`: the queries an auditor runs in Log Analytics to show that a
customer-managed key is in use, run verbatim over atrest's audit and sign-in logs after a
scripted scenario: a managed identity wraps and unwraps with the key, an application's
unwrap is denied."""
import base64
import json
import uuid

import pytest
import requests
from azure.core.exceptions import HttpResponseError
from azure.identity import ManagedIdentityCredential
from azure.keyvault.keys import KeyClient
from azure.keyvault.keys.crypto import CryptographyClient, KeyWrapAlgorithm

VAULT = "sdk-main"

CMK_USAGE = """AzureDiagnostics
| where ResourceProvider =="MICROSOFT.KEYVAULT"
| extend targetKeyVaultName = replace_string(tostring(split(id_s,"/")[2]),".vault.azure.net","")
| extend targetKeyName = tostring(split(id_s,"/")[4])
| extend targetKeyVersion = tostring(split(id_s,"/")[5])
| summarize count() by targetKeyVaultName, targetKeyName, targetKeyVersion, callerId = identity_claim_appid_g, OperationName, ResultSignature, ResultDescription
| project targetKeyVaultName, targetKeyName, targetKeyVersion, callerId , OperationName, ResultSignature, ResultDescription, CallsNumber = count_
| order by CallsNumber desc"""

LAST_KEY_CALL = """AzureDiagnostics
| where ResourceProvider == "MICROSOFT.KEYVAULT" and OperationName startswith "Key" and OperationName != "KeyGet"
| extend targetKeyVersion = tostring(split(id_s, "/")[5])
| summarize arg_max(TimeGenerated, OperationName, ResultSignature) by callerId = identity_claim_appid_g, targetKeyVersion
| join kind=inner (union AADManagedIdentitySignInLogs, AADServicePrincipalSignInLogs | distinct AppId, ServicePrincipalName) on $left.callerId == $right.AppId
| project ServicePrincipalName, targetKeyVersion, OperationName, ResultSignature, TimeGenerated
| order by ServicePrincipalName asc"""


def query(server, text, *args):
    done = server.cli("monitor", "query", text, "-o", "json", *args, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def scenario(server, monkeypatch_module):
    key_name = f"cmk-{uuid.uuid4().hex[:8]}"
    key = server.cli("keyvault", "key", "create", "--vault-name", VAULT, "--name", key_name, "--kty", "RSA", "--size", "2048")
    version = key["key"]["kid"].rsplit("/", 1)[1]
    mi = server.cli("identity", "create", "--name", f"des-{uuid.uuid4().hex[:8]}")
    server.cli("role", "assignment", "create", "--assignee", mi["appId"], "--role", "Key Vault Crypto Service Encryption User",
               "--scope", f"{server.vault_scope(VAULT)}/keys/{key_name}")
    monkeypatch_module.setenv("IDENTITY_ENDPOINT", f"{server.env['ATREST_ENDPOINT']}/msi/token")
    monkeypatch_module.setenv("IDENTITY_HEADER", mi["identityHeader"])
    des = ManagedIdentityCredential(client_id=mi["appId"])
    public = KeyClient(server.vault_url(VAULT), des).get_key(key_name)
    crypto = CryptographyClient(public, des)
    # The SDK wraps locally with the public key; a disk encryption set asks the vault.
    token = des.get_token(f"https://vault.localhost:{server.port}/.default").token
    r = requests.post(f"{public.id}/wrapkey", params={"api-version": "7.5"}, verify=server.env["ATREST_CA"],
                      json={"alg": "RSA-OAEP-256", "value": base64.urlsafe_b64encode(b"k" * 32).decode().rstrip("=")},
                      headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    wrapped = base64.urlsafe_b64decode(r.json()["value"] + "==")
    for _ in range(2):
        assert crypto.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped).key == b"k" * 32
    app, app_credential = server.new_principal("cmk-app")
    with pytest.raises(HttpResponseError) as err:
        CryptographyClient(public, app_credential).unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped)
    assert err.value.status_code == 403
    return {"key": key_name, "version": version, "mi": mi, "app": app}


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def test_cmk_usage_query_runs_verbatim(server, scenario):
    rows = [r for r in query(server, CMK_USAGE) if r["targetKeyName"] == scenario["key"]]
    host = f"{VAULT}.vault.localhost:{server.port}"
    by_op = {(r["callerId"], r["OperationName"], r["ResultSignature"]): r for r in rows}
    des, app = scenario["mi"]["appId"], scenario["app"]["appId"]
    assert by_op[(des, "KeyUnwrap", "OK")]["CallsNumber"] == 2
    assert by_op[(des, "KeyWrap", "OK")]["CallsNumber"] == 1
    denied = by_op[(app, "KeyUnwrap", "Forbidden")]
    assert denied["CallsNumber"] == 1 and "not authorized" in denied["ResultDescription"]
    assert all(r["targetKeyVaultName"] == host and r["targetKeyVersion"] == scenario["version"]
               for r in rows if r["OperationName"] in ("KeyWrap", "KeyUnwrap"))
    counts = [r["CallsNumber"] for r in query(server, CMK_USAGE)]
    assert counts == sorted(counts, reverse=True)


def test_last_key_call_per_caller_joins_the_sign_in_logs(server, scenario):
    rows = [r for r in query(server, LAST_KEY_CALL) if r["targetKeyVersion"] == scenario["version"]]
    by_name = {r["ServicePrincipalName"]: r for r in rows}
    mi_row = by_name[scenario["mi"]["displayName"]]
    assert (mi_row["OperationName"], mi_row["ResultSignature"]) == ("KeyUnwrap", "OK")
    app_row = by_name[scenario["app"]["displayName"]]
    assert (app_row["OperationName"], app_row["ResultSignature"]) == ("KeyUnwrap", "Forbidden")
    signins = query(server, f'AADManagedIdentitySignInLogs | where AppId == "{scenario["mi"]["appId"]}"')
    assert signins and signins[0]["ResourceDisplayName"] == "Azure Key Vault"
    assert signins[0]["ServicePrincipalName"] == scenario["mi"]["displayName"]


def test_table_output_and_placed_errors(server, scenario):
    done = server.cli("monitor", "query", "AzureDiagnostics | summarize n = count() by OperationName | take 3", check=False)
    assert done.returncode == 0, done.stderr
    header = done.stdout.splitlines()[0].split()
    assert header == ["OperationName", "n"]
    for bad, where in [("AzureDiagnostics\n| wher x", "line 2, column 3"),
                       ("AzureDiagnostics | where Nope == 1", "line 1, column 26"),
                       ("Nowhere", "unknown table 'Nowhere'")]:
        done = server.cli("monitor", "query", bad, check=False)
        assert done.returncode != 0 and where in done.stderr and "BadArgumentError" in done.stderr, done.stderr
