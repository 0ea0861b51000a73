"""The audit log as an auditor sees it: every request recorded, denied ones included; a
keyed hash chain that `atrest monitor audit verify` checks, naming the first event an edit,
deletion, insertion or reordering broke; export as JSON lines in Azure's AuditEvent shape;
retention that leaves the chain verifiable."""
import json
import sqlite3
import subprocess
import time
import uuid

import pytest
import requests
from azure.core.exceptions import HttpResponseError
from azure.keyvault.secrets import SecretClient

from conftest import ATREST, Server


def vault_client(srv, vault, credential=None):
    """A client of `srv`, which may not be the server whose environment this process has."""
    return SecretClient(srv.vault_url(vault), credential or srv.credential(), connection_verify=srv.env["ATREST_CA"])


@pytest.fixture(scope="module")
def tamper_server(workdir):
    srv = Server(workdir / "tamper").start()
    srv.cli("keyvault", "create", "-n", "sdk-short", "-l", "westeurope")
    yield srv
    assert srv.stop() == 0, srv.log()


def export(srv, *args):
    done = srv.cli("monitor", "audit", "export", *args, check=False)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_every_request_is_recorded_and_exported_in_azure_shape(server):
    client = vault_client(server, "sdk-main")
    ids = {name: str(uuid.uuid4()) for name in ("set", "get", "missing")}
    client.set_secret("exported", "x", headers={"x-ms-client-request-id": ids["set"]})
    client.get_secret("exported", headers={"x-ms-client-request-id": ids["get"]})
    with pytest.raises(HttpResponseError):
        client.get_secret("no-such-secret", headers={"x-ms-client-request-id": ids["missing"]})
    sp = server.cli("ad", "sp", "create-for-rbac", "--name", "audit-denied")
    stranger = vault_client(server, "sdk-main", server.credential(sp["appId"], sp["password"]))
    ids["denied"] = str(uuid.uuid4())
    with pytest.raises(HttpResponseError):
        stranger.get_secret("exported", headers={"x-ms-client-request-id": ids["denied"]})

    exported = export(server)
    seqs = [e["seq"] for e in exported]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "the export is complete and in order"
    by_id = {name: [e for e in exported if e["correlationId"] == cid] for name, cid in ids.items()}
    # A client's first call is answered with the 401 challenge and retried (unless the SDK
    # already knows the vault's challenge): every attempt is recorded.
    assert [e["properties"]["httpStatusCode"] for e in by_id["set"]] in ([401, 200], [200])
    got = {name: events[-1] for name, events in by_id.items()}
    assert {n: (e["operationName"], e["properties"]["httpStatusCode"]) for n, e in got.items()} == {
        "set": ("SecretSet", 200), "get": ("SecretGet", 200), "missing": ("SecretGet", 404), "denied": ("SecretGet", 403)}
    ok = got["get"]
    assert ok["category"] == "AuditEvent" and ok["resultType"] == "Success" and ok["resultSignature"] == "OK"
    assert ok["resourceId"] == server.vault_scope("sdk-main").upper()
    assert ok["operationVersion"] and ok["properties"]["requestUri"].startswith(server.vault_url("sdk-main"))
    assert ok["properties"]["id"].startswith(f"{server.vault_url('sdk-main')}/secrets/exported/")
    assert "azsdk-python-keyvault-secrets" in ok["properties"]["clientInfo"]
    assert ok["identity"]["claim"]["appid"] == server.env["AZURE_CLIENT_ID"]
    assert got["denied"]["identity"]["claim"]["appid"] == sp["appId"]
    assert got["denied"]["resultType"] == "Failure"
    assert "Caller is not authorized" in got["denied"]["resultDescription"]
    assert server.cli("monitor", "audit", "verify")["verified"] is True

    after = got["denied"]["seq"]
    assert all(e["seq"] > after for e in export(server, "--after", str(after)))


def test_verify_names_the_first_edited_deleted_inserted_or_reordered_event(tamper_server):
    srv = tamper_server
    client = vault_client(srv, "sdk-short")
    for i in range(6):
        client.set_secret(f"s{i}", "v")
    ok = srv.cli("monitor", "audit", "verify")
    assert ok["verified"] is True and ok["events"] >= 6
    db = sqlite3.connect(srv.data_dir / "audit.db", timeout=10)
    rows = db.execute("SELECT seq FROM audit_events WHERE operation = 'SecretSet' ORDER BY seq").fetchall()
    a, b = rows[1][0], rows[3][0]
    columns = [c[1] for c in db.execute("PRAGMA table_info(audit_events)")]

    def row(seq):
        return db.execute(f"SELECT {', '.join(columns)} FROM audit_events WHERE seq = ?", (seq,)).fetchone()

    def put(values):
        db.execute(f"INSERT OR REPLACE INTO audit_events ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})", values)
        db.commit()

    def broken_at():
        done = srv.cli("monitor", "audit", "verify", check=False)
        assert done.returncode != 0, "tampering went unnoticed"
        report = json.loads(done.stdout)
        assert report["verified"] is False
        assert f"event {report['firstBadEvent']['seq']}" in done.stderr
        return report["firstBadEvent"]

    original_a, original_b = row(a), row(b)
    # An edit: the call attributed to someone else.
    db.execute("UPDATE audit_events SET app_id = ? WHERE seq = ?", (str(uuid.uuid4()), a))
    db.commit()
    bad = broken_at()
    assert bad["seq"] == a and bad["operationName"] == "SecretSet" and "content" in bad["reason"]
    put(original_a)
    assert srv.cli("monitor", "audit", "verify")["verified"] is True

    # A deletion.
    db.execute("DELETE FROM audit_events WHERE seq = ?", (a,))
    db.commit()
    bad = broken_at()
    assert bad["seq"] == a + 1 and "missing" in bad["reason"]
    put(original_a)

    # A reordering: two events swap places.
    swapped_a = (a,) + original_b[1:]
    swapped_b = (b,) + original_a[1:]
    put(swapped_a)
    put(swapped_b)
    assert broken_at()["seq"] == a
    put(original_a)
    put(original_b)

    # An insertion at the end with a copied hash.
    last = db.execute("SELECT max(seq) FROM audit_events").fetchone()[0]
    forged = (last + 1,) + row(last)[1:]
    put(forged)
    assert broken_at()["seq"] == last + 1
    db.execute("DELETE FROM audit_events WHERE seq = ?", (last + 1,))
    db.commit()
    assert srv.cli("monitor", "audit", "verify")["verified"] is True
    db.close()


def test_retention_deletes_old_events_and_keeps_the_chain(workdir):
    srv = Server(workdir / "retention", "--audit-retention", "3s", "--purge-interval", "1s").start()
    try:
        srv.cli("keyvault", "create", "-n", "sdk-short", "-l", "westeurope")
        vault_client(srv, "sdk-short").set_secret("old", "v")
        first = export(srv)
        assert first[0]["seq"] == 1
        deadline = time.time() + 20
        while time.time() < deadline:
            remaining = export(srv)
            if remaining and remaining[0]["seq"] > first[-1]["seq"]:
                break
            time.sleep(0.5)
        else:
            pytest.fail("old audit events were never deleted")
        kept = srv.cli("monitor", "audit", "verify")
        assert kept["verified"] is True and kept["firstSeq"] > first[-1]["seq"]
        retention = srv.cli("monitor", "audit", "list", "--operation", "AuditRetention")
        assert retention and "Deleted" in retention[0]["resultDescription"]
    finally:
        assert srv.stop() == 0, srv.log()


def test_audit_admin_api_refuses_bad_input(server):
    base = server.env["ATREST_ENDPOINT"]
    ca = server.env["ATREST_CA"]
    token = requests.post(f"{base}/adfs/oauth2/v2.0/token", verify=ca, data={
        "grant_type": "client_credentials", "client_id": server.env["AZURE_CLIENT_ID"],
        "client_secret": server.env["AZURE_CLIENT_SECRET"], "scope": "https://management.azure.com/.default"}).json()["access_token"]
    for query in ({"after": "-1"}, {"after": "x"}, {"limit": "100001"}):
        r = requests.get(f"{base}/atrest/audit/export", params=query, verify=ca, headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "BadRequest", r.text
    sp = server.cli("ad", "sp", "create-for-rbac", "--name", "audit-stranger")
    other = requests.post(f"{base}/adfs/oauth2/v2.0/token", verify=ca, data={
        "grant_type": "client_credentials", "client_id": sp["appId"], "client_secret": sp["password"],
        "scope": "https://management.azure.com/.default"}).json()["access_token"]
    for path in ("verify", "export"):
        r = requests.get(f"{base}/atrest/audit/{path}", verify=ca, headers={"Authorization": f"Bearer {other}"})
        assert r.status_code == 403, r.text


def test_deleting_the_newest_events_is_caught_by_the_checkpoint(workdir):
    srv = Server(workdir / "truncated").start()
    srv.cli("keyvault", "create", "-n", "sdk-short", "-l", "westeurope")
    vault_client(srv, "sdk-short").set_secret("kept", "v")
    assert srv.stop() == 0, srv.log()  # a clean stop records the log's head
    db = sqlite3.connect(srv.data_dir / "audit.db")
    newest = db.execute("SELECT max(seq) FROM audit_events").fetchone()[0]
    db.execute("DELETE FROM audit_events WHERE seq > ?", (newest - 2,))
    db.commit()
    db.close()
    srv.start()
    try:
        done = srv.cli("monitor", "audit", "verify", check=False)
        assert done.returncode != 0, "a shortened log went unnoticed"
        bad = json.loads(done.stdout)["firstBadEvent"]
        assert bad["seq"] == newest and "checkpoint" in bad["reason"], bad
    finally:
        assert srv.stop() == 0, srv.log()


def stored_correlation_ids(srv):
    """What audit.db itself holds, read beside the running server."""
    db = sqlite3.connect(srv.data_dir / "audit.db")
    try:
        return {row[0] for row in db.execute("SELECT correlation_id FROM audit_events")}
    finally:
        db.close()


def test_events_journaled_before_a_crash_are_stored_at_restart(workdir):
    # A long interval: only the journal holds the events when the process dies.
    srv = Server(workdir / "crashed", "--audit-journal-interval", "1h").start()
    srv.cli("keyvault", "create", "-n", "sdk-short", "-l", "westeurope")
    client = vault_client(srv, "sdk-short")
    ids = [str(uuid.uuid4()) for _ in range(3)]
    client.set_secret("journaled", "v", headers={"x-ms-client-request-id": ids[0]})
    for request_id in ids[1:]:
        client.get_secret("journaled", headers={"x-ms-client-request-id": request_id})
    assert not set(ids) & stored_correlation_ids(srv), "answered before being stored"
    srv.proc.kill()
    srv.proc.wait()
    assert any(f.stat().st_size > 0 for f in (srv.data_dir / "audit-journal").iterdir())

    srv.start()
    try:
        assert set(ids) <= stored_correlation_ids(srv), "the journal's events were stored at start"
        listed = [(e["correlationId"], e["properties"]["httpStatusCode"])
                  for e in srv.cli("monitor", "audit", "list", "--limit", "1000") if e["correlationId"] in ids]
        assert len(listed) == len(set(listed)) >= len(ids), f"each stored once: {listed}"
        assert srv.cli("monitor", "audit", "verify")["verified"]
    finally:
        assert srv.stop() == 0, srv.log()
    assert not any(f.stat().st_size > 0 for f in (srv.data_dir / "audit-journal").iterdir())


def test_commit_durability_stores_each_event_before_its_response(workdir):
    srv = Server(workdir / "committed", "--audit-durability", "commit").start()
    try:
        srv.cli("keyvault", "create", "-n", "sdk-short", "-l", "westeurope")
        client = vault_client(srv, "sdk-short")
        request_id = str(uuid.uuid4())
        client.set_secret("committed", "v", headers={"x-ms-client-request-id": request_id})
        assert request_id in stored_correlation_ids(srv)
        assert not any(f.stat().st_size > 0 for f in (srv.data_dir / "audit-journal").iterdir())
    finally:
        assert srv.stop() == 0, srv.log()


def test_durability_flags_refuse_bad_values(workdir):
    for args in (["--audit-durability", "sometimes"], ["--audit-journal-interval", "soon"]):
        done = subprocess.run([str(ATREST), "server", "--data-dir", str(workdir / "flags"), *args],
                              capture_output=True, text=True, timeout=30)
        assert done.returncode != 0 and args[0] in done.stderr, done.stderr
