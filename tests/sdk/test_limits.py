"""Service limits and metrics: a vault over its per-window budget answers 429 with
Retry-After, the unmodified SDK's retry policy (and the CLI's) rides it out, and the refusals show in
`/metrics` and the audit log. Larger RSA keys cost more of the key budget."""
import re
import subprocess
import time
from pathlib import Path

import pytest
import requests
from azure.keyvault.keys import KeyClient
from azure.keyvault.keys.crypto import CryptographyClient, SignatureAlgorithm
from azure.keyvault.secrets import SecretClient

from conftest import ATREST, ROOT, Server

VAULT = "sdk-short"


@pytest.fixture(scope="module")
def limited(workdir):
    srv = Server(workdir / "limited", "--throttle-limits", "secrets=8,keys=16", "--throttle-window", "2s").start()
    srv.cli("keyvault", "create", "-n", VAULT, "-l", "westeurope")
    yield srv
    assert srv.stop() == 0, srv.log()


def clients(srv):
    ca = srv.env["ATREST_CA"]
    credential = srv.credential()
    return (SecretClient(srv.vault_url(VAULT), credential, connection_verify=ca),
            KeyClient(srv.vault_url(VAULT), credential, connection_verify=ca), credential)


def metrics(srv):
    r = requests.get(f"{srv.env['ATREST_ENDPOINT']}/metrics", verify=srv.env["ATREST_CA"])
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    values = {}
    for line in r.text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


def test_the_sdk_retries_through_throttling(limited):
    secrets, _, _ = clients(limited)
    started = time.time()
    for i in range(24):
        secrets.set_secret(f"s{i}", "v")
    assert [secrets.get_secret(f"s{i}").value for i in range(3)] == ["v"] * 3
    # 27 calls at 8 per 2-second window need at least four windows.
    assert time.time() - started >= 6

    m = metrics(limited)
    throttled = m.get(f'ServiceApiResult{{vault="{VAULT}",operation="SecretSet",status="429"}}', 0)
    ok = m[f'ServiceApiResult{{vault="{VAULT}",operation="SecretSet",status="200"}}']
    assert ok == 24 and throttled >= 2, m
    assert m[f'ServiceApiHit{{vault="{VAULT}",operation="SecretSet"}}'] >= ok + throttled
    assert m[f'ServiceApiLatency_count{{vault="{VAULT}",operation="SecretSet"}}'] == m[f'ServiceApiHit{{vault="{VAULT}",operation="SecretSet"}}']
    assert m[f'Availability{{vault="{VAULT}"}}'] == 100.0
    assert 0 <= m[f'SaturationShoebox{{vault="{VAULT}"}}'] <= 100

    events = limited.cli("monitor", "audit", "list", "--operation", "SecretSet", "--limit", "200")
    refused = [e for e in events if e["properties"]["httpStatusCode"] == 429]
    assert len(refused) == throttled
    assert "limit of 8 secrets transactions per 2 seconds" in refused[0]["resultDescription"]


def test_the_cli_waits_out_throttling_as_az_does(limited):
    _, _, credential = clients(limited)
    token = credential.get_token(f"https://vault.localhost:{limited.port}/.default").token
    url = f"{limited.vault_url(VAULT)}/secrets/burn"
    key = f'ServiceApiResult{{vault="{VAULT}",operation="SecretSet",status="429"}}'
    # Spend the window's budget until a refusal says at least a second of it is left.
    for _ in range(40):
        r = requests.put(url, params={"api-version": "7.5"}, json={"value": "v"}, verify=limited.env["ATREST_CA"],
                         headers={"Authorization": f"Bearer {token}"})
        if r.status_code == 429 and r.headers["Retry-After"] == "2":
            break
    else:
        pytest.fail("the secrets budget was never spent")
    refused_before = metrics(limited).get(key, 0)
    limited.cli("keyvault", "secret", "set", "--vault-name", VAULT, "-n", "cli", "--value", "v")
    # The CLI was refused in that window, waited as Retry-After said, and sent again.
    assert metrics(limited)[key] > refused_before
    assert limited.cli("keyvault", "secret", "show", "--vault-name", VAULT, "-n", "cli")["value"] == "v"


def test_429_carries_retry_after_and_the_azure_error(limited):
    _, _, credential = clients(limited)
    token = credential.get_token(f"https://vault.localhost:{limited.port}/.default").token
    url = f"{limited.vault_url(VAULT)}/secrets/s0"
    answers = [requests.get(url, params={"api-version": "7.5"}, verify=limited.env["ATREST_CA"],
                            headers={"Authorization": f"Bearer {token}"}) for _ in range(12)]
    refused = [r for r in answers if r.status_code == 429]
    assert refused, [r.status_code for r in answers]
    assert 1 <= int(refused[0].headers["Retry-After"]) <= 2
    assert refused[0].json()["error"]["code"] == "Throttled"
    assert all(r.status_code in (200, 429) for r in answers)
    time.sleep(2.1)
    assert requests.get(url, params={"api-version": "7.5"}, verify=limited.env["ATREST_CA"],
                        headers={"Authorization": f"Bearer {token}"}).status_code == 200


def test_large_rsa_keys_cost_more(limited):
    _, keys, credential = clients(limited)
    big = keys.create_rsa_key("big", size=4096)
    small = keys.create_ec_key("small")
    time.sleep(2.1)
    token = credential.get_token(f"https://vault.localhost:{limited.port}/.default").token
    digest = "n4bQgYhMfWWaL-qgxVrQFaO_TxsrC4Is0V1sFbDwCgg"

    def sign(key, alg):
        return requests.post(f"{limited.vault_url(VAULT)}/keys/{key.name}/sign", params={"api-version": "7.5"},
                             json={"alg": alg, "value": digest}, verify=limited.env["ATREST_CA"],
                             headers={"Authorization": f"Bearer {token}"}).status_code

    # A budget of 16: two RSA-4096 operations (8 each), or sixteen EC ones.
    assert [sign(big, "RS256") for _ in range(3)] == [200, 200, 429]
    time.sleep(2.1)
    assert [sign(small, "ES256") for _ in range(17)] == [200] * 16 + [429]
    # The SDK's own retries get a 4096-bit signature through a full budget.
    signed = CryptographyClient(big, credential, connection_verify=limited.env["ATREST_CA"]).sign(
        SignatureAlgorithm.rs256, b"\x00" * 32)
    assert signed.signature


def test_alert_rules_use_the_served_metrics(limited):
    rules = (ROOT / "deploy" / "prometheus" / "atrest-alerts.yml").read_text()
    served = {name.split("{")[0] for name in metrics(limited)}
    used = set(re.findall(r"expr: .*?\b([A-Z][A-Za-z]+)\b", rules))
    assert "SaturationShoebox" in used and used <= served, (used, served)
    assert re.search(r"expr: SaturationShoebox > 75", rules)


def test_bad_limits_are_refused_at_start(tmp_path):
    for bad in ("certs=5", "secrets=0", "secrets"):
        done = subprocess.run([str(ATREST), "server", "--data-dir", str(tmp_path / "d"), "--listen", "127.0.0.1:0",
                               "--throttle-limits", bad], capture_output=True, text=True, timeout=30)
        assert done.returncode != 0 and "invalid throttling limit" in done.stderr, done.stderr
