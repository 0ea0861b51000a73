"""The server as an operator sees it: data directory, restarts, audit, CLI, no plaintext."""
import os
import socket
import stat
import subprocess
import uuid

import pytest
import requests
from azure.core.exceptions import HttpResponseError
from azure.identity import ClientSecretCredential, DefaultAzureCredential
from azure.keyvault.secrets import SecretClient

from conftest import ATREST, Server


def own_client(srv, vault):
    ca = srv.env["ATREST_CA"]
    credential = ClientSecretCredential(
        "adfs", srv.env["AZURE_CLIENT_ID"], srv.env["AZURE_CLIENT_SECRET"],
        authority=srv.env["AZURE_AUTHORITY_HOST"], connection_verify=ca,
    )
    return SecretClient(srv.vault_url(vault), credential, connection_verify=ca)


def test_data_directory_layout_and_modes(server):
    d = server.data_dir
    for name in ["root.key", "env"]:
        mode = stat.S_IMODE(os.stat(d / name).st_mode)
        assert mode == 0o600, f"{name} has mode {mode:o}"
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
    assert (d / "tls" / "ca.pem").read_text().startswith("-----BEGIN CERTIFICATE-----")
    assert "PRIVATE KEY" not in "".join(p.read_text() for p in (d / "tls").iterdir())
    env = server.env
    for var in ["AZURE_AUTHORITY_HOST", "AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET",
                "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "NODE_EXTRA_CA_CERTS", "ATREST_ENDPOINT"]:
        assert env[var], var


def test_restart_keeps_state_and_one_server_per_directory(workdir):
    srv = Server(workdir / "restart").start()
    srv.cli("keyvault", "create", "-n", "sdk-main", "-l", "westeurope")
    own_client(srv, "sdk-main").set_secret("persisted", "still here")

    second = subprocess.run([str(ATREST), "server", "--data-dir", str(srv.data_dir), "--listen", "127.0.0.1:0"],
                            capture_output=True, text=True, timeout=30)
    assert second.returncode != 0
    assert "already running" in second.stderr

    env_before = srv.env
    assert srv.stop() == 0
    assert "stopped" in srv.log()
    srv.start()
    assert srv.env["AZURE_CLIENT_SECRET"] == env_before["AZURE_CLIENT_SECRET"]
    assert own_client(srv, "sdk-main").get_secret("persisted").value == "still here"
    assert srv.stop() == 0


def test_servers_side_by_side_need_only_their_own_directory_and_port(workdir):
    """NBD listens on a free port unless --nbd-listen names one, so a second instance on the
    same machine does not collide with the first; `vm show` prints where each disk is."""
    first = Server(workdir / "side-a").start()
    second = Server(workdir / "side-b").start()
    try:
        uris = []
        for srv in (first, second):
            srv.cli("disk", "create", "-n", "d1", "--size-gb", "1")
            srv.cli("vm", "create", "-n", "vm1", "--attach-disks", "d1")
            srv.cli("vm", "start", "-n", "vm1")
            vm = srv.cli("vm", "show", "-n", "vm1")
            uris.append(vm["properties"]["storageProfile"]["dataDisks"][0]["nbdUri"])
        ports = {uri.removeprefix("nbd://").split("/")[0].rsplit(":", 1)[1] for uri in uris}
        assert len(ports) == 2 and "10809" not in ports, uris
    finally:
        assert first.stop() == 0
        assert second.stop() == 0


def test_no_plaintext_at_rest_or_in_logs(server):
    canary = f"plaintext-canary-{uuid.uuid4().hex}"
    client = SecretClient(server.vault_url("sdk-main"), DefaultAzureCredential())
    client.set_secret("canary", canary)
    assert client.get_secret("canary").value == canary
    client.backup_secret("canary")
    hits = []
    for root, _, files in os.walk(server.data_dir):
        for f in files:
            path = os.path.join(root, f)
            if canary.encode() in open(path, "rb").read():
                hits.append(path)
    assert hits == []
    log = server.log()
    assert canary not in log
    assert server.env["AZURE_CLIENT_SECRET"] not in log
    assert "request" in log  # the log is really being written


def test_audit_events(server):
    client = SecretClient(server.vault_url("sdk-main"), DefaultAzureCredential())
    version = client.set_secret("audited", "x").properties.version
    correlation = str(uuid.uuid4())
    client.get_secret("audited", headers={"x-ms-client-request-id": correlation})
    with pytest.raises(HttpResponseError):
        client.get_secret("does-not-exist")

    events = server.cli("monitor", "audit", "list", "--operation", "SecretGet", "--limit", "50")
    ok = next(e for e in events if e["correlationId"] == correlation)
    assert ok["resultType"] == "Success" and ok["properties"]["httpStatusCode"] == 200 and ok["resultSignature"] == "OK"
    assert ok["properties"]["id"] == f"{server.vault_url('sdk-main')}/secrets/audited/{version}"
    assert ok["properties"]["requestUri"].startswith(f"{server.vault_url('sdk-main')}/secrets/audited")
    assert ok["identity"]["claim"]["appid"] == server.env["AZURE_CLIENT_ID"]
    assert ok["identity"]["claim"]["oid"]
    assert ok["callerIpAddress"] == "127.0.0.1"
    assert ok["durationMs"] >= 0 and "azsdk-python" in ok["properties"]["clientInfo"]
    missing = next(e for e in events if (e["properties"]["id"] or "").endswith("/secrets/does-not-exist"))
    assert missing["properties"]["httpStatusCode"] == 404 and missing["resultType"] == "Failure" and missing["resultDescription"]

    # Refused requests and token requests are audited too.
    bad = ClientSecretCredential("adfs", "00000000-0000-0000-0000-000000000001", "nope", authority=server.env["AZURE_AUTHORITY_HOST"])
    with pytest.raises(Exception):
        bad.get_token("https://management.azure.com/.default")
    auth = server.cli("monitor", "audit", "list", "--operation", "Authentication", "--limit", "20")
    failed = next(e for e in auth if e["identity"]["claim"]["appid"] == "00000000-0000-0000-0000-000000000001")
    assert failed["properties"]["httpStatusCode"] == 401 and failed["resultType"] == "Failure"
    assert any(e["resultType"] == "Success" and e["identity"]["claim"]["appid"] == server.env["AZURE_CLIENT_ID"] for e in auth)


def test_cli_vault_lifecycle(server):
    vault = server.cli("keyvault", "create", "-n", "cli-vault", "-l", "westus2", "--tags", "team=sec")
    assert vault["properties"]["vaultUri"] == f"https://cli-vault.vault.localhost:{server.port}/"
    assert vault["properties"]["softDeleteRetentionInDays"] == 90
    assert vault["properties"]["enableRbacAuthorization"] is True
    assert vault["tags"] == {"team": "sec"}
    assert any(v["name"] == "cli-vault" for v in server.cli("keyvault", "list"))

    updated = server.cli("keyvault", "update", "-n", "cli-vault", "--enable-purge-protection", "true", "--enabled-for-disk-encryption", "true")
    assert updated["properties"]["enablePurgeProtection"] is True
    assert updated["properties"]["enabledForDiskEncryption"] is True
    for args, text in [
        (["--enable-purge-protection", "false"], "purge protection"),
        (["--retention-days", "30"], "softDeleteRetentionInDays"),
    ]:
        done = server.cli("keyvault", "update", "-n", "cli-vault", *args, check=False)
        assert done.returncode != 0 and "HTTP 400" in done.stderr and text.lower() in done.stderr.lower(), done.stderr
    for args in [["-n", "ab"], ["-n", "1vault"], ["-n", "bad--name"], ["-n", "x" * 25]]:
        done = server.cli("keyvault", "create", *args, check=False)
        assert done.returncode != 0 and "HTTP 400" in done.stderr, args
    done = server.cli("keyvault", "create", "-n", "retention-bad", "--retention-days", "6", check=False)
    assert "HTTP 400" in done.stderr
    assert server.cli("keyvault", "show", "-n", "cli-vault")["properties"]["enablePurgeProtection"] is True

    server.cli("keyvault", "delete", "-n", "cli-vault")
    assert server.cli("keyvault", "show", "-n", "cli-vault", check=False).returncode != 0
    deleted = [v for v in server.cli("keyvault", "list-deleted") if v["name"] == "cli-vault"]
    assert deleted and deleted[0]["properties"]["purgeProtectionEnabled"] is True
    # Purge protection keeps it until its date.
    assert server.cli("keyvault", "purge", "-n", "cli-vault", check=False).returncode != 0
    recovered = server.cli("keyvault", "recover", "-n", "cli-vault")
    assert recovered["properties"]["enablePurgeProtection"] is True


def test_cli_service_principals(server):
    sp = server.cli("ad", "sp", "create-for-rbac", "--name", "cli-app")
    assert set(sp) >= {"appId", "password", "tenant", "displayName"}
    assert sp["tenant"] == server.env["ATREST_TENANT_ID"]
    authority = server.env["AZURE_AUTHORITY_HOST"]
    scope = f"https://vault.localhost:{server.port}/.default"
    assert ClientSecretCredential("adfs", sp["appId"], sp["password"], authority=authority).get_token(scope).token
    assert any(p["appId"] == sp["appId"] for p in server.cli("ad", "sp", "list"))

    reset = server.cli("ad", "sp", "credential", "reset", "--id", sp["appId"])
    assert reset["password"] != sp["password"]
    with pytest.raises(Exception):
        ClientSecretCredential("adfs", sp["appId"], sp["password"], authority=authority).get_token(scope)
    assert ClientSecretCredential("adfs", sp["appId"], reset["password"], authority=authority).get_token(scope).token

    # Only administrators manage principals.
    env = {**os.environ, **server.env, "AZURE_CLIENT_ID": sp["appId"], "AZURE_CLIENT_SECRET": reset["password"]}
    done = subprocess.run([str(ATREST), "ad", "sp", "list"], env=env, capture_output=True, text=True)
    assert done.returncode != 0 and "HTTP 403" in done.stderr

    server.cli("ad", "sp", "delete", "--id", sp["appId"])
    assert not any(p["appId"] == sp["appId"] for p in server.cli("ad", "sp", "list"))
    with pytest.raises(Exception):
        ClientSecretCredential("adfs", sp["appId"], reset["password"], authority=authority).get_token(scope)


def test_cli_output_to_a_closed_pipe(server):
    """`atrest … | head` that stops reading early: no panic, no error, exit 0."""
    env = {**os.environ, **server.env}
    for args in (["ad", "sp", "list"], ["role", "definition", "list", "-o", "table"]):
        proc = subprocess.Popen([str(ATREST), *args], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        proc.stdout.close()  # the reader is gone before anything is written
        err = proc.stderr.read().decode()
        assert proc.wait(timeout=60) == 0, err
        assert "panicked" not in err and err == "", err


def test_readiness_fails_while_the_object_store_is_unreachable(workdir):
    """/readyz answers 503 naming the block store when the object store does not answer;
    /healthz still answers 200, and the server keeps serving."""
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]  # bound, never listening: connections are refused
    saved = dict(os.environ)
    os.environ.update({"AZURE_STORAGE_USE_EMULATOR": "true", "AZURITE_BLOB_STORAGE_URL": f"http://127.0.0.1:{port}"})
    try:
        srv = Server(workdir / "unready", "--blob-store", "az://nowhere").start()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    try:
        base, ca = srv.env["ATREST_ENDPOINT"], srv.env["ATREST_CA"]
        ready = requests.get(f"{base}/readyz", verify=ca, timeout=30)
        assert ready.status_code == 503 and ready.json() == {"status": "unavailable", "failed": "blocks"}
        assert requests.get(f"{base}/healthz", verify=ca, timeout=30).json() == {"status": "ok"}
        assert srv.cli("keyvault", "list") == []
    finally:
        closed.close()
        assert srv.stop() == 0, srv.log()
