"""Built-in detections over the audit stream: each rule raises an alert (listed by the CLI,
counted in /metrics, posted to the webhook) when its pattern happens, and only then."""
import http.server
import json
import subprocess
import threading
import time

import pytest
import requests
from azure.core.exceptions import HttpResponseError
from azure.keyvault.keys import KeyClient
from azure.keyvault.keys.crypto import CryptographyClient, SignatureAlgorithm
from azure.keyvault.secrets import SecretClient

from conftest import ATREST, Server

VAULT = "sdk-short"


class Hook(http.server.BaseHTTPRequestHandler):
    received = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["content-length"]))
        Hook.received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def watched(workdir):
    hook = http.server.HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    srv = Server(workdir / "watched", "--alert-webhook", f"http://127.0.0.1:{hook.server_port}/alerts").start()
    srv.cli("keyvault", "create", "-n", VAULT, "-l", "westeurope")
    yield srv
    assert srv.stop() == 0, srv.log()
    hook.shutdown()


def clients(srv, credential):
    ca = srv.env["ATREST_CA"]
    return (SecretClient(srv.vault_url(VAULT), credential, connection_verify=ca),
            KeyClient(srv.vault_url(VAULT), credential, connection_verify=ca))


def alerts_for(srv, rule, at_least=1):
    deadline = time.time() + 10
    while time.time() < deadline:
        found = [a for a in srv.cli("monitor", "alert", "list") if a["rule"] == rule]
        if len(found) >= at_least:
            return found
        time.sleep(0.2)
    return []


def test_each_rule_fires_on_its_pattern(watched):
    admin_sp, admin = watched.new_principal("det-admin")
    watched.cli("role", "assignment", "create", "--assignee", admin_sp["appId"], "--role", "Key Vault Administrator",
                "--scope", watched.vault_scope(VAULT))
    secrets, keys = clients(watched, admin)
    access = alerts_for(watched, "AccessChange")
    assert access and access[0]["severity"] == "Medium"

    secrets.set_secret("doomed", "v")
    secrets.begin_delete_secret("doomed").wait()
    assert alerts_for(watched, "PurgeOfKeyOrSecret") == [], "deleting is not purging"
    secrets.purge_deleted_secret("doomed")
    [purge] = alerts_for(watched, "PurgeOfKeyOrSecret")
    assert purge["severity"] == "High" and "doomed" in purge["resource"] and purge["caller"] == admin_sp["appId"]

    secrets.set_secret("read-me", "v")
    for _ in range(49):
        secrets.get_secret("read-me")
    time.sleep(0.5)
    assert not [a for a in watched.cli("monitor", "alert", "list") if a["rule"] == "MassSecretRead"]
    secrets.get_secret("read-me")
    [mass] = alerts_for(watched, "MassSecretRead")
    assert mass["caller"] == admin_sp["appId"]

    stranger_sp, stranger = watched.new_principal("det-stranger")
    denied, _ = clients(watched, stranger)
    for _ in range(10):
        with pytest.raises(HttpResponseError):
            denied.get_secret("read-me")
    [burst] = alerts_for(watched, "ForbiddenBurst")
    assert burst["caller"] == stranger_sp["appId"]

    key = keys.create_ec_key("watched-key")
    user_sp, user = watched.new_principal("det-user")
    watched.cli("role", "assignment", "create", "--assignee", user_sp["appId"], "--role", "Key Vault Crypto User",
                "--scope", f"{watched.vault_scope(VAULT)}/keys/watched-key")
    crypto = CryptographyClient(key.id, user, connection_verify=watched.env["ATREST_CA"])
    for _ in range(3):
        crypto.sign(SignatureAlgorithm.es256, b"\x01" * 32)
    time.sleep(0.5)
    first_use = [a for a in alerts_for(watched, "NewCallerOnKey") if a["caller"] == user_sp["appId"]]
    assert len(first_use) == 1 and "/keys/watched-key/" in first_use[0]["resource"]

    metrics = requests.get(f"{watched.env['ATREST_ENDPOINT']}/metrics", verify=watched.env["ATREST_CA"]).text
    for rule in ("AccessChange", "PurgeOfKeyOrSecret", "MassSecretRead", "ForbiddenBurst", "NewCallerOnKey"):
        assert f'Alerts{{rule="{rule}"}}' in metrics, rule
    deadline = time.time() + 5
    while time.time() < deadline and "NewCallerOnKey" not in {a["rule"] for a in Hook.received}:
        time.sleep(0.2)
    posted = {a["rule"] for a in Hook.received}
    assert posted >= {"AccessChange", "PurgeOfKeyOrSecret", "MassSecretRead", "ForbiddenBurst", "NewCallerOnKey"}, posted
    assert all(a["id"] > 0 and a["time"] and a["description"] for a in Hook.received)


def test_bad_webhook_and_alert_queries_are_refused(watched, tmp_path):
    run = subprocess.run([str(ATREST), "server", "--data-dir", str(tmp_path / "x"), "--listen", "127.0.0.1:0",
                          "--alert-webhook", "ftp://example"], capture_output=True, text=True, timeout=30)
    assert run.returncode != 0 and "alert webhook" in run.stderr, run.stderr
    bad = watched.cli("monitor", "alert", "list", "--limit", "0", check=False)
    assert bad.returncode != 0 and "limit" in bad.stderr
