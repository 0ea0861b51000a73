"""The real Azure CLI (`azure-cli` from PyPI, in `.venv-az`) driving atrest as a platform
engineer would: register the cloud with endpoint discovery, sign in as a service principal,
then resource groups, vaults, secrets, keys, role assignments, a disk encryption set and
disks, each through the `az` command a user types."""
import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest

from conftest import Server

AZ = Path(__file__).resolve().parents[2] / ".venv-az" / "bin" / "az"
GROUP = "az-rg"
VAULT = "az-kv"
OTHER_VAULT = "az-kv2"
LOCATION = "westeurope"


class AzError(Exception):
    """`az` exited non-zero; the message is its stderr."""


@pytest.fixture(scope="module")
def az(workdir):
    srv = Server(workdir / "az").start()
    config = workdir / "az-config"
    env = {**os.environ, "AZURE_CONFIG_DIR": str(config), "REQUESTS_CA_BUNDLE": srv.env["ATREST_CA"],
           "AZURE_CORE_COLLECT_TELEMETRY": "false", "AZURE_CORE_ONLY_SHOW_ERRORS": "true"}

    def run(*args, check=True):
        done = subprocess.run([str(AZ), *args, "-o", "json"], env=env, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            if check:
                raise AzError(done.stderr)
            return done
        return json.loads(done.stdout) if done.stdout.strip() else None

    run("config", "set", "core.instance_discovery=false")
    # Endpoint discovery: everything but the name comes from /metadata/endpoints.
    run("cloud", "register", "--name", "atrest", "--endpoint-resource-manager", srv.env["ATREST_ENDPOINT"] + "/")
    run("cloud", "set", "--name", "atrest")
    run("login", "--service-principal", "-u", srv.env["AZURE_CLIENT_ID"], "-p", srv.env["AZURE_CLIENT_SECRET"],
        "--tenant", srv.env["ATREST_TENANT_ID"])
    run.server = srv
    yield run
    assert srv.stop() == 0, srv.log()


def test_cloud_and_account(az):
    cloud = az("cloud", "show", "--name", "atrest")
    port = az.server.port
    assert cloud["suffixes"]["keyvaultDns"] == f".vault.localhost:{port}"
    assert cloud["endpoints"]["activeDirectory"] == az.server.env["ATREST_ENDPOINT"]
    account = az("account", "show")
    assert account["id"] == az.server.env["ATREST_SUBSCRIPTION_ID"]
    assert account["tenantId"] == az.server.env["ATREST_TENANT_ID"]
    assert account["user"]["type"] == "servicePrincipal"


def test_resource_groups(az):
    created = az("group", "create", "--name", GROUP, "--location", LOCATION, "--tags", "team=platform")
    assert created["properties"]["provisioningState"] == "Succeeded" and created["tags"] == {"team": "platform"}
    assert az("group", "show", "--name", GROUP)["location"] == LOCATION
    assert az("group", "exists", "--name", GROUP) is True
    assert az("group", "exists", "--name", "no-such-group") is False
    assert {g["name"] for g in az("group", "list")} >= {"default", GROUP}
    # Bad input: ARM's codes, and nothing created.
    assert "InvalidResourceGroupName" in az("group", "create", "--name", "bad name!", "-l", LOCATION, check=False).stderr
    assert "ResourceGroupNotFound" in az("group", "show", "--name", "missing", check=False).stderr
    assert "ResourceGroupNotFound" in az("keyvault", "create", "-n", "az-orphan", "-g", "missing", "-l", LOCATION,
                                         check=False).stderr
    throwaway = f"az-empty-{uuid.uuid4().hex[:6]}"
    az("group", "create", "--name", throwaway, "--location", LOCATION)
    az("group", "delete", "--name", throwaway, "--yes")
    assert az("group", "exists", "--name", throwaway) is False


def test_vault_lifecycle(az):
    az("group", "create", "--name", GROUP, "--location", LOCATION)
    vault = az("keyvault", "create", "-n", VAULT, "-g", GROUP, "-l", LOCATION, "--enable-purge-protection", "true")
    assert vault["properties"]["vaultUri"] == f"https://{VAULT}.vault.localhost:{az.server.port}/"
    # Found without its group, through GET …/resources?$filter=.
    assert az("keyvault", "show", "-n", VAULT)["id"] == vault["id"]
    refused = az("keyvault", "update", "-n", VAULT, "--enable-purge-protection", "false", check=False)
    assert refused.returncode != 0 and "cannot be set to false" in refused.stderr
    az("keyvault", "create", "-n", OTHER_VAULT, "-g", GROUP, "-l", LOCATION)
    az("keyvault", "delete", "-n", OTHER_VAULT)
    assert OTHER_VAULT in {v["name"] for v in az("keyvault", "list-deleted")}
    assert az("keyvault", "recover", "-n", OTHER_VAULT)["name"] == OTHER_VAULT
    # Deleting a group deletes what it holds; its vaults stay recoverable.
    doomed = f"az-doomed-{uuid.uuid4().hex[:6]}"
    az("group", "create", "--name", doomed, "--location", LOCATION)
    az("keyvault", "create", "-n", "az-doomed-kv", "-g", doomed, "-l", LOCATION)
    az("disk", "create", "-n", "az-doomed-disk", "-g", doomed, "-l", LOCATION, "--size-gb", "1")
    az("group", "delete", "--name", doomed, "--yes")
    assert az("group", "exists", "--name", doomed) is False
    assert "az-doomed-kv" in {v["name"] for v in az("keyvault", "list-deleted")}
    assert "ResourceNotFound" in az("disk", "show", "-n", "az-doomed-disk", "-g", doomed, check=False).stderr


def test_secrets(az):
    assert az("keyvault", "secret", "set", "--vault-name", VAULT, "-n", "db-pass", "--value", "s3cret")["value"] == "s3cret"
    assert az("keyvault", "secret", "show", "--vault-name", VAULT, "-n", "db-pass")["value"] == "s3cret"
    assert [s["name"] for s in az("keyvault", "secret", "list", "--vault-name", VAULT)] == ["db-pass"]
    az("keyvault", "secret", "delete", "--vault-name", VAULT, "-n", "db-pass")
    assert az("keyvault", "secret", "recover", "--vault-name", VAULT, "-n", "db-pass")["name"] == "db-pass"


def test_keys(az):
    key = az("keyvault", "key", "create", "--vault-name", VAULT, "-n", "k1", "--kty", "RSA", "--size", "2048")
    assert key["key"]["kty"] == "RSA"
    encrypted = az("keyvault", "key", "encrypt", "--vault-name", VAULT, "-n", "k1", "--algorithm", "RSA-OAEP-256",
                   "--value", "aGVsbG8=", "--data-type", "base64")
    decrypted = az("keyvault", "key", "decrypt", "--vault-name", VAULT, "-n", "k1", "--algorithm", "RSA-OAEP-256",
                   "--value", encrypted["result"], "--data-type", "base64")
    assert decrypted["result"] == "aGVsbG8="
    rotated = az("keyvault", "key", "rotate", "--vault-name", VAULT, "-n", "k1")
    assert rotated["key"]["kid"] != key["key"]["kid"]
    policy = {"lifetimeActions": [{"trigger": {"timeAfterCreate": "P90D"}, "action": {"type": "Rotate"}}],
              "attributes": {"expiryTime": "P2Y"}}
    az("keyvault", "key", "rotation-policy", "update", "--vault-name", VAULT, "-n", "k1", "--value", json.dumps(policy))
    shown = az("keyvault", "key", "rotation-policy", "show", "--vault-name", VAULT, "-n", "k1")
    assert shown["expiresIn"] == "P2Y" and shown["lifetimeActions"][0]["timeAfterCreate"] == "P90D"


def test_role_assignments_resolve_assignees_through_graph(az):
    vault_id = az("keyvault", "show", "-n", VAULT)["id"]
    sp = az.server.cli("ad", "sp", "create-for-rbac", "--name", f"az-{uuid.uuid4().hex[:8]}")
    created = az("role", "assignment", "create", "--assignee", sp["appId"], "--role", "Key Vault Secrets User",
                 "--scope", vault_id)
    assert created["principalType"] == "ServicePrincipal"
    listed = az("role", "assignment", "list", "--assignee", sp["appId"], "--all")
    assert [a["roleDefinitionName"] for a in listed] == ["Key Vault Secrets User"]
    assert listed[0]["principalName"] == sp["appId"]
    az("role", "assignment", "delete", "--assignee", sp["appId"], "--role", "Key Vault Secrets User", "--scope", vault_id)
    assert az("role", "assignment", "list", "--assignee", sp["appId"], "--all") == []
    # A user, by user principal name.
    upn = f"az-{uuid.uuid4().hex[:6]}@contoso.com"
    user = az.server.cli("ad", "user", "create", "--display-name", "Az User", "--user-principal-name", upn,
                         "--password", "Str0ng-enough-pass")
    created = az("role", "assignment", "create", "--assignee", upn, "--role", "Key Vault Reader", "--scope", vault_id)
    assert created["principalType"] == "User" and created["principalId"] == user["objectId"]
    listed = az("role", "assignment", "list", "--assignee", upn, "--all")
    assert [(a["roleDefinitionName"], a["principalName"]) for a in listed] == [("Key Vault Reader", upn)]


def test_disk_encryption_set_and_disks(az):
    vault_id = az("keyvault", "show", "-n", VAULT)["id"]
    kid = az("keyvault", "key", "create", "--vault-name", VAULT, "-n", "des-key", "--kty", "RSA")["key"]["kid"]
    des = az("disk-encryption-set", "create", "-n", "az-des", "-g", GROUP, "-l", LOCATION, "--key-url", kid,
             "--source-vault", vault_id)
    assert des["identity"]["type"] == "SystemAssigned" and des["activeKey"]["keyUrl"] == kid
    assert az("disk-encryption-set", "show", "-n", "az-des", "-g", GROUP)["id"] == des["id"]
    az("role", "assignment", "create", "--assignee-object-id", des["identity"]["principalId"],
       "--assignee-principal-type", "ServicePrincipal", "--role", "Key Vault Crypto Service Encryption User",
       "--scope", vault_id)
    cmk = az("disk", "create", "-n", "az-cmk", "-g", GROUP, "-l", LOCATION, "--size-gb", "1",
             "--disk-encryption-set", "az-des")
    assert cmk["encryption"] == {"diskEncryptionSetId": des["id"], "type": "EncryptionAtRestWithCustomerKey"}
    pmk = az("disk", "create", "-n", "az-pmk", "-g", GROUP, "-l", LOCATION, "--size-gb", "1")
    assert pmk["encryption"]["type"] == "EncryptionAtRestWithPlatformKey"
    moved = az("disk", "update", "-n", "az-pmk", "-g", GROUP, "--disk-encryption-set", "az-des",
               "--encryption-type", "EncryptionAtRestWithCustomerKey")
    assert moved["encryption"]["type"] == "EncryptionAtRestWithCustomerKey"
    assert az("disk", "show", "-n", "az-cmk", "-g", GROUP)["diskSizeGB"] == 1


def test_certificates(az, tmp_path):
    policy = az("keyvault", "certificate", "get-default-policy")
    assert policy["issuerParameters"]["name"] == "Self"
    policy["x509CertificateProperties"]["subject"] = "CN=web.contoso.com"
    policy["x509CertificateProperties"]["subjectAlternativeNames"] = {"dnsNames": ["web.contoso.com"]}
    (tmp_path / "policy.json").write_text(json.dumps(policy))
    created = az("keyvault", "certificate", "create", "--vault-name", VAULT, "-n", "web",
                 "-p", f"@{tmp_path / 'policy.json'}")
    assert created["status"] == "completed"
    shown = az("keyvault", "certificate", "show", "--vault-name", VAULT, "-n", "web")
    assert shown["policy"]["x509CertificateProperties"]["subject"] == "CN=web.contoso.com"
    assert shown["kid"].endswith(shown["id"].split("/certificates/")[1])
    # Both encodings of the download are the same certificate, as openssl reads it.
    az("keyvault", "certificate", "download", "--vault-name", VAULT, "-n", "web", "-f", str(tmp_path / "web.pem"))
    az("keyvault", "certificate", "download", "--vault-name", VAULT, "-n", "web", "-f", str(tmp_path / "web.der"),
       "-e", "DER")
    text = subprocess.run(["openssl", "x509", "-in", str(tmp_path / "web.pem"), "-noout", "-subject", "-ext",
                           "subjectAltName"], capture_output=True, text=True, check=True).stdout
    assert "CN = web.contoso.com" in text and "DNS:web.contoso.com" in text
    der = subprocess.run(["openssl", "x509", "-in", str(tmp_path / "web.pem"), "-outform", "DER"],
                         capture_output=True, check=True).stdout
    assert der == (tmp_path / "web.der").read_bytes()
    # The private key reaches the secret as the policy's content type.
    secret = az("keyvault", "secret", "show", "--vault-name", VAULT, "-n", "web")
    assert secret["contentType"] == "application/x-pkcs12" and secret["managed"] is True

    # Import of a password-protected PKCS#12 in the legacy encryption older tools write.
    key, cert, pfx = (tmp_path / n for n in ("imp.key", "imp.crt", "imp.pfx"))
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-subj", "/CN=imported.contoso.com", "-days", "30"], capture_output=True, check=True)
    subprocess.run(["openssl", "pkcs12", "-export", "-legacy", "-inkey", str(key), "-in", str(cert), "-out", str(pfx),
                    "-passout", "pass:az-pass"], capture_output=True, check=True)
    imported = az("keyvault", "certificate", "import", "--vault-name", VAULT, "-n", "imported", "-f", str(pfx),
                  "--password", "az-pass")
    assert imported["policy"]["x509CertificateProperties"]["subject"] == "CN=imported.contoso.com"
    refused = az("keyvault", "certificate", "import", "--vault-name", VAULT, "-n", "wrong", "-f", str(pfx),
                 "--password", "not-it", check=False)
    assert refused.returncode != 0 and "BadParameter" in refused.stderr
    assert "wrong" not in {c["name"] for c in az("keyvault", "certificate", "list", "--vault-name", VAULT)}

    # Issuer Unknown: create answers at once with the pending operation and its CSR.
    policy["issuerParameters"]["name"] = "Unknown"
    (tmp_path / "unknown.json").write_text(json.dumps(policy))
    pending = az("keyvault", "certificate", "create", "--vault-name", VAULT, "-n", "external",
                 "-p", f"@{tmp_path / 'unknown.json'}")
    assert pending["status"] == "inProgress" and pending["csr"]
    assert az("keyvault", "certificate", "pending", "show", "--vault-name", VAULT, "-n", "external")["csr"] == pending["csr"]
    names = {c["name"] for c in az("keyvault", "certificate", "list", "--vault-name", VAULT, "--include-pending")}
    assert {"web", "imported", "external"} <= names

    az("keyvault", "certificate", "delete", "--vault-name", VAULT, "-n", "imported")
    assert "imported" in {c["name"] for c in az("keyvault", "certificate", "list-deleted", "--vault-name", VAULT)}
    assert az("keyvault", "certificate", "recover", "--vault-name", VAULT, "-n", "imported")["name"] == "imported"
