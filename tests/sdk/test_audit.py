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


# The stored block form (see crates/store/src/audit_codec.rs), read and written here on
# its own so the test can tamper with single events the way someone with the database would.
NUMBERS, TEXTS = 4, 16  # seq, time, status, duration; operation … target_id
OPERATION, CORRELATION_ID, APP_ID = 0, 7, 9


def read_varint(blob, at):
    value = shift = 0
    while True:
        byte = blob[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, at


def write_varint(value):
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def decode_block(blob):
    """A block's events as [numbers, texts, hash]."""
    assert blob[0] == 1, "block format"
    at, events = 1, []
    numbers, texts = [0] * NUMBERS, [None] * TEXTS
    while at < len(blob):
        numbers = list(numbers)
        for i in range(NUMBERS):
            zigzag, at = read_varint(blob, at)
            numbers[i] += (zigzag >> 1) ^ -(zigzag & 1)
        same = int.from_bytes(blob[at:at + 2], "little")
        at += 2
        texts = list(texts)
        for i in range(TEXTS):
            if not same & (1 << i):
                length, at = read_varint(blob, at)
                texts[i] = None if length == 0 else blob[at:at + length - 1].decode()
                at += max(length - 1, 0)
        events.append([numbers, texts, blob[at:at + 32]])
        at += 32
    return events


def encode_block(events):
    out = bytearray([1])
    previous = None
    for numbers, texts, digest in events:
        for i, n in enumerate(numbers):
            delta = n - (previous[0][i] if previous else 0)
            out += write_varint(((delta << 1) ^ (delta >> 63)) & (2**64 - 1))
        same = sum(1 << i for i in range(TEXTS) if previous and previous[1][i] == texts[i])
        out += same.to_bytes(2, "little")
        for i, text in enumerate(texts):
            if not same & (1 << i):
                out += write_varint(0 if text is None else len(text.encode()) + 1)
                out += b"" if text is None else text.encode()
        out += digest
        previous = (numbers, texts)
    return bytes(out)


class StoredLog:
    """audit.db's blocks, edited in place and put back as they were."""

    def __init__(self, path):
        self.db = sqlite3.connect(path, timeout=10)
        self.saved = {}

    def blocks(self):
        return self.db.execute("SELECT first_seq, events FROM audit_blocks ORDER BY first_seq").fetchall()

    def events(self):
        return [e for _, blob in self.blocks() for e in decode_block(blob)]

    def edit(self, seq, change):
        """Calls `change` with the events of the block holding event `seq` and the index of
        that event, and stores the result as a forger would: index columns to match, and
        no row for an emptied block."""
        for first, blob in self.blocks():
            events = decode_block(blob)
            at = next((i for i, e in enumerate(events) if e[0][0] == seq), None)
            if at is None:
                continue
            self.saved.setdefault(first, blob)
            change(events, at)
            self.db.execute("DELETE FROM audit_blocks WHERE first_seq = ?", (first,))
            if events:
                times = [e[0][1] for e in events]
                self.db.execute(
                    "INSERT INTO audit_blocks (first_seq, last_seq, min_time_ms, max_time_ms, events) VALUES (?, ?, ?, ?, ?)",
                    (events[0][0][0], events[-1][0][0], min(times), max(times), encode_block(events)))
            self.db.commit()
            return
        raise AssertionError(f"event {seq} is not stored")

    def truncate(self, seq):
        """Deletes event `seq` and every later one."""
        for _, blob in self.blocks():
            numbers = [e[0][0] for e in decode_block(blob)]
            if numbers[-1] >= seq:
                self.edit(max(numbers[0], seq), lambda events, at: events.__delitem__(slice(at, None)))

    def restore(self):
        for first, blob in self.saved.items():
            events = decode_block(blob)
            times = [e[0][1] for e in events]
            self.db.execute("DELETE FROM audit_blocks WHERE first_seq = ? OR (first_seq >= ? AND first_seq <= ?)",
                            (first, events[0][0][0], events[-1][0][0]))
            self.db.execute(
                "INSERT INTO audit_blocks (first_seq, last_seq, min_time_ms, max_time_ms, events) VALUES (?, ?, ?, ?, ?)",
                (first, events[-1][0][0], min(times), max(times), blob))
        self.db.commit()
        self.saved = {}


def test_block_codec_of_this_test_reads_what_the_server_stores(tamper_server):
    client = vault_client(tamper_server, "sdk-short")
    client.set_secret("codec", "v")
    exported = {e["seq"]: e for e in export(tamper_server)}
    log = StoredLog(tamper_server.data_dir / "audit.db")
    stored = log.events()
    assert [e[0][0] for e in stored] == sorted(exported), "every exported event, in order"
    for numbers, texts, _ in stored:
        assert texts[OPERATION] == exported[numbers[0]]["operationName"]
    for first, blob in log.blocks():
        assert encode_block(decode_block(blob)) == blob, f"block {first} written back unchanged"


def test_verify_names_the_first_edited_deleted_inserted_or_reordered_event(tamper_server):
    srv = tamper_server
    client = vault_client(srv, "sdk-short")
    for i in range(6):
        client.set_secret(f"s{i}", "v")
    ok = srv.cli("monitor", "audit", "verify")
    assert ok["verified"] is True and ok["events"] >= 6
    log = StoredLog(srv.data_dir / "audit.db")
    sets = [e[0][0] for e in log.events() if e[1][OPERATION] == "SecretSet"]
    a, b = sets[1], sets[3]

    def broken_at():
        done = srv.cli("monitor", "audit", "verify", check=False)
        assert done.returncode != 0, "tampering went unnoticed"
        report = json.loads(done.stdout)
        assert report["verified"] is False
        assert f"event {report['firstBadEvent']['seq']}" in done.stderr
        return report["firstBadEvent"]

    def intact():
        log.restore()
        assert srv.cli("monitor", "audit", "verify")["verified"] is True

    # An edit: the call attributed to someone else.
    log.edit(a, lambda events, at: events[at][1].__setitem__(APP_ID, str(uuid.uuid4())))
    bad = broken_at()
    assert bad["seq"] == a and bad["operationName"] == "SecretSet" and "content" in bad["reason"]
    intact()

    # A deletion.
    log.edit(a, lambda events, at: events.pop(at))
    bad = broken_at()
    assert bad["seq"] == a + 1 and "missing" in bad["reason"]
    intact()

    # A reordering: two events swap places (each keeps its number).
    original_a = next(e for e in log.events() if e[0][0] == a)
    original_b = next(e for e in log.events() if e[0][0] == b)

    def put(seq, source):
        def change(events, at):
            events[at] = [[seq] + source[0][1:], source[1], source[2]]
        log.edit(seq, change)

    put(a, original_b)
    put(b, original_a)
    assert broken_at()["seq"] == a
    intact()

    # An insertion at the end with a copied hash.
    last = log.events()[-1][0][0]

    def forge(events, at):
        numbers, texts, digest = events[at]
        events.append([[last + 1] + numbers[1:], texts, digest])

    log.edit(last, forge)
    assert broken_at()["seq"] == last + 1
    intact()
    log.db.close()


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
    log = StoredLog(srv.data_dir / "audit.db")
    newest = log.events()[-1][0][0]
    log.truncate(newest - 1)
    log.db.close()
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
    log = StoredLog(srv.data_dir / "audit.db")
    try:
        return {e[1][CORRELATION_ID] for e in log.events()}
    finally:
        log.db.close()


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
