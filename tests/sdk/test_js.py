"""The Azure SDK for JavaScript (@azure/identity, @azure/keyvault-secrets and
@azure/keyvault-keys, pinned in tests/js/package.json) against atrest with
DefaultAzureCredential and NODE_EXTRA_CA_CERTS: the flows of Microsoft's Key Vault samples."""
import os
import subprocess
from pathlib import Path

JS = Path(__file__).resolve().parents[1] / "js"
FLOWS = ["secretsHelloWorld", "listSecrets", "backupAndRestoreSecret", "softDeleteRecoverAndPurge",
         "keysHelloWorld", "keyRotation", "cryptography"]


def test_javascript_sdk_flows(server):
    server.cli("keyvault", "create", "-n", "js-kv", "-l", "westeurope", "--retention-days", "7")
    # The environment `source DIR/env` gives: AZURE_* for DefaultAzureCredential, and the CA.
    env = {**os.environ, **server.env, "KEY_VAULT_URI": server.vault_url("js-kv")}
    assert env["NODE_EXTRA_CA_CERTS"] == server.env["ATREST_CA"]
    done = subprocess.run(["node", "flows.mjs"], cwd=JS, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.split() == [word for flow in FLOWS for word in ("ok", flow)]
