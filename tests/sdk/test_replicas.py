"""Replicas: several `atrest server` processes on one PostgreSQL database, each with its own
data directory holding a copy of the same root.key. Run by scripts/test on its throw-away
PostgreSQL (ATREST_TEST_STATE_SERVER); skipped on the embedded default."""
import signal
import subprocess
import threading
import time
import uuid

import pytest
import requests
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.keyvault.secrets import SecretClient

from conftest import ATREST, BLOB_STORE, STATE_SERVER, Server

pytestmark = pytest.mark.skipif(not STATE_SERVER, reason="needs a PostgreSQL server (scripts/test starts one)")

LEASE = "3s"


def psql(url, sql):
    return subprocess.run(["psql", url, "-Atc", sql], check=True, capture_output=True, text=True).stdout.strip()


def replica(dir, leader_dir=None, *args):
    """A replica in `dir`; with `leader_dir`, sharing that replica's database and root key."""
    dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    return Server(dir, "--lease-duration", LEASE, *args, replica_of=leader_dir).start()


@pytest.fixture()
def cluster(workdir):
    """Two replicas, A (started first) and B, on one fresh database (and, when the suite
    runs with one, one object store for the disks' blocks)."""
    base = workdir / f"cluster-{uuid.uuid4().hex[:8]}"
    a = replica(base / "a", None, "--replica-name", "rep-a")
    b = replica(base / "b", base / "a", "--replica-name", "rep-b")
    yield a, b
    for srv in (a, b):
        if srv.proc.poll() is None:
            srv.proc.kill()
            srv.proc.wait()


def secrets(srv, vault, credential=None):
    """A SecretClient on `srv`'s data plane (the replicas share one CA)."""
    return SecretClient(srv.vault_url(vault), credential or srv.credential(), connection_verify=srv.env["ATREST_CA"])


def wait_for_leader(srv, timeout=15):
    """Waits until `srv` leads the cluster."""
    deadline = time.time() + timeout
    while metric(srv, "ClusterLeader") != 1:
        assert time.time() < deadline, f"{srv.data_dir.name} did not take over within {timeout} s"
        time.sleep(0.1)


def metric(srv, name):
    text = requests.get(f"https://localhost:{srv.port}/metrics", verify=srv.env["ATREST_CA"], timeout=30).text
    line = next(l for l in text.splitlines() if l.startswith(name + "{"))
    return float(line.rsplit(" ", 1)[1])


def test_a_write_on_one_replica_is_read_on_the_other_at_once(cluster):
    a, b = cluster
    a.cli("keyvault", "create", "-n", "rep-ryw", "-l", "westeurope", "--retention-days", "7")
    on_a, on_b = secrets(a, "rep-ryw"), secrets(b, "rep-ryw")
    assert a.env["ATREST_CA"] != b.env["ATREST_CA"]
    assert open(a.env["ATREST_CA"]).read() == open(b.env["ATREST_CA"]).read(), "one CA for the cluster"
    on_b.set_secret("warm", "cache")  # B has the vault cached from here on
    for i in range(5):
        on_a.set_secret("s", f"value-{i}")
        assert on_b.get_secret("s").value == f"value-{i}"
    on_a.begin_delete_secret("s").wait()
    with pytest.raises(ResourceNotFoundError):
        on_b.get_secret("s")
    # A vault deleted and purged through A is gone on B at once, cache and all.
    a.cli("keyvault", "delete", "-n", "rep-ryw")
    a.cli("keyvault", "purge", "-n", "rep-ryw")
    with pytest.raises((ResourceNotFoundError, HttpResponseError)):
        on_b.get_secret("warm")


def test_a_role_removed_on_one_replica_stops_granting_on_the_other(cluster):
    a, b = cluster
    a.cli("keyvault", "create", "-n", "rep-rbac", "-l", "westeurope")
    sp, _ = a.new_principal("rep")
    scope = a.vault_scope("rep-rbac")
    a.cli("role", "assignment", "create", "--assignee", sp["appId"], "--role", "Key Vault Secrets Officer", "--scope", scope)
    # The principal signs in at B (replicas behind one load balancer share one authority).
    on_b = secrets(b, "rep-rbac", b.credential(sp["appId"], sp["password"]))
    on_b.set_secret("granted", "yes")  # B has the role assignments cached from here on
    a.cli("role", "assignment", "delete", "--assignee", sp["appId"], "--role", "Key Vault Secrets Officer", "--scope", scope)
    with pytest.raises(HttpResponseError) as denied:
        on_b.get_secret("granted")
    assert denied.value.status_code == 403


def test_one_audit_chain_across_replicas(cluster):
    a, b = cluster
    a.cli("keyvault", "create", "-n", "rep-audit", "-l", "westeurope")
    for srv in (a, b, a, b):
        secrets(srv, "rep-audit").set_secret("s", srv.data_dir.name)
    # Each replica's writer stores within its interval; then either verifies the whole chain.
    time.sleep(1)
    for srv in (a, b):
        verified = srv.cli("monitor", "audit", "verify")
        assert verified["verified"] is True, verified
    events = b.cli("monitor", "audit", "list", "--operation", "SecretSet", "--limit", "20")
    stored = [e for e in events if e["resultType"] == "Success"]
    assert len(stored) == 4, events


def test_the_leader_is_replaced_when_it_is_killed(cluster):
    a, b = cluster
    assert metric(a, "ClusterLeader") == 1 and metric(b, "ClusterLeader") == 0
    epoch = metric(a, "ClusterLeaderEpoch")
    a.proc.send_signal(signal.SIGKILL)
    a.proc.wait()
    wait_for_leader(b)
    assert metric(b, "ClusterLeaderEpoch") == epoch + 1
    # The new leader runs the cluster's jobs: its purge pass records the audit checkpoint.
    b.cli("keyvault", "create", "-n", "rep-lead", "-l", "westeurope")
    assert b.cli("monitor", "audit", "verify")["verified"] is True


def test_a_clean_stop_hands_leadership_over_at_once(cluster):
    a, b = cluster
    assert a.stop() == 0
    wait_for_leader(b, timeout=2.5)  # a fifth of the lease is B's retry period; well under the lease


def refused(dir, state, expected):
    """Starts a server that must refuse to start; returns its output."""
    dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    done = subprocess.run([str(ATREST), "server", "--data-dir", str(dir), "--listen", "127.0.0.1:0", "--state", state],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0, done.stderr
    assert expected in done.stderr, done.stderr
    assert "hunter2" not in done.stderr
    return done.stderr


# Everything a replica stores at start, as one digest (leases, renewed all the time, aside).
STORED = " || ".join(
    f"(SELECT coalesce(md5(string_agg(t::text, ',' ORDER BY t::text)), '') FROM {table} t)"
    for table in ["meta", "principals", "vaults", "role_assignments", "resources", "platform_keys",
                  "atrest_schema", "atrest_generation", "audit_journals"])


def test_bad_configuration_is_refused_at_start_and_writes_nothing(cluster, workdir):
    a, _ = cluster
    url = a.state_url()
    before = psql(url, f"SELECT {STORED}")
    # A replica whose root key is not the database's.
    refused(workdir / f"stranger-{uuid.uuid4().hex[:8]}", url, "root.key")
    assert psql(url, f"SELECT {STORED}") == before, "the refused replica wrote"
    # The database is unreachable, or refuses the password.
    host, port = STATE_SERVER.split("@", 1)[1].split("/", 1)[0].rsplit(":", 1)
    closed = socket_free_port()
    refused(workdir / "unreachable", f"postgres://atrest:hunter2@127.0.0.1:{closed}/x", "PostgreSQL")
    user = url.split("//", 1)[1].split(":", 1)[0]
    refused(workdir / "wrong-password", f"postgres://{user}:hunter2@{host}:{port}/{url.rsplit('/', 1)[1]}",
            "password authentication failed")
    refused(workdir / "bad-url", "mysql://localhost/x", "not postgres")
    # A schema newer than this binary knows.
    psql(url, "UPDATE atrest_schema SET version = version + 100 WHERE component = 'state'")
    try:
        refused(workdir / f"newer-{uuid.uuid4().hex[:8]}", url, "newer than this atrest supports")
    finally:
        psql(url, "UPDATE atrest_schema SET version = version - 100 WHERE component = 'state'")


def socket_free_port():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def qemu_io(uri, *commands):
    args = ["qemu-io", "-f", "raw"]
    for c in commands:
        args += ["-c", c]
    done = subprocess.run(args + [uri], capture_output=True, text=True, timeout=60)
    return done.returncode == 0 and "failed" not in done.stdout + done.stderr, done.stdout + done.stderr


def served(srv, vm):
    """`vm` as `srv` shows it: the replica serving it and its disk's NBD URI."""
    shown = srv.cli("vm", "show", "-n", vm)["properties"]
    return shown["instanceView"].get("assignedHost"), shown["storageProfile"]["dataDisks"][0].get("nbdUri")


def served_by(srv, vm, replica, timeout=15):
    """Waits until `replica` serves `vm`; returns the disk's NBD URI there."""
    deadline = time.time() + timeout
    while (shown := served(srv, vm))[0] != replica or not shown[1]:
        assert time.time() < deadline, f"{replica} does not serve {vm}: {shown}"
        time.sleep(0.2)
    return shown[1]


@pytest.mark.skipif(not BLOB_STORE, reason="replicas share disks through an object store")
def test_one_replica_serves_a_disk_moves_it_and_another_takes_it_over_when_it_dies(cluster):
    a, b = cluster
    disk, vm = f"rep-d-{uuid.uuid4().hex[:6]}", f"rep-vm-{uuid.uuid4().hex[:6]}"
    a.cli("disk", "create", "-n", disk, "-z", "1")
    a.cli("vm", "create", "-n", vm, "--attach-disks", disk)
    a.cli("vm", "start", "-n", vm)
    uri_a = served_by(b, vm, "rep-a", timeout=0)
    ok, out = qemu_io(uri_a, "write -P 0x5a 0 1M")
    assert ok, out
    # A start through B leaves the running machine where it is.
    b.cli("vm", "start", "-n", vm)
    assert served(b, vm) == ("rep-a", uri_a)
    # Moved to B: A closes the disk (flushed), B takes its lease and serves what A wrote.
    a.cli("vm", "start", "-n", vm, "--host", "rep-b")
    uri_b = served_by(a, vm, "rep-b")
    assert uri_b != uri_a
    assert qemu_io(uri_a, "read 0 4k")[0] is False, "A still serves a disk B holds"
    ok, out = qemu_io(uri_b, "read -P 0x5a 0 1M", "write -P 0x6b 512M 64k")
    assert ok, out
    # Back to A, then A dies: the machine is started on B, which takes the disk once A's
    # lease runs out and serves it from its last flushed state.
    b.cli("vm", "start", "-n", vm, "--host", "rep-a")
    uri_a = served_by(b, vm, "rep-a")
    ok, out = qemu_io(uri_a, "read -P 0x6b 512M 64k", "write -P 0x7c 4M 4k")
    assert ok, out
    a.proc.send_signal(signal.SIGKILL)
    a.proc.wait()
    b.cli("vm", "start", "-n", vm, "--host", "rep-b")
    uri_b = served_by(b, vm, "rep-b")
    ok, out = qemu_io(uri_b, "read -P 0x5a 0 1M", "read -P 0x6b 512M 64k", "read -P 0x7c 4M 4k")
    assert ok, out
    # Stopped through B, the disk's lease is free again: a start on B serves it at once.
    b.cli("vm", "stop", "-n", vm)
    assert served(b, vm)[1] is None
    b.cli("vm", "start", "-n", vm)
    assert served(b, vm)[0] == "rep-b"


@pytest.mark.skipif(not BLOB_STORE, reason="replicas share disks through an object store")
def test_a_replica_killed_under_load_loses_no_acknowledged_write_and_no_flushed_block(cluster):
    """SIGKILL of A while secrets are set through both replicas and a disk A serves is
    written and flushed: B returns every acknowledged secret at once, and serves the disk,
    once A's lease runs out, with every block a FLUSH covered."""
    from test_disks import region_checks, write_until_killed

    a, b = cluster
    a.cli("keyvault", "create", "-n", "rep-crash", "-l", "westeurope")
    disk, vm = f"rep-d-{uuid.uuid4().hex[:6]}", f"rep-vm-{uuid.uuid4().hex[:6]}"
    a.cli("disk", "create", "-n", disk, "-z", "1")
    a.cli("vm", "create", "-n", vm, "--attach-disks", disk)
    a.cli("vm", "start", "-n", vm)
    uri = served_by(b, vm, "rep-a", timeout=0)

    acknowledged = {}

    def set_secrets(srv, prefix):
        client = secrets(srv, "rep-crash")
        i = 0
        try:
            while True:
                name, value = f"{prefix}{i}", uuid.uuid4().hex
                client.set_secret(name, value)
                acknowledged[name] = value
                i += 1
        except Exception:  # the replica died mid-request
            pass

    writers = [threading.Thread(target=set_secrets, args=(srv, srv.data_dir.name), daemon=True) for srv in (a, b)]
    for w in writers:
        w.start()
    durable = write_until_killed(uri, a.proc)
    time.sleep(0.5)
    b_writer_alive = writers[1].is_alive()
    assert len(durable) > 8, "A was killed before much was flushed"
    on_b = secrets(b, "rep-crash")
    for name, value in list(acknowledged.items()):
        assert on_b.get_secret(name).value == value, name
    assert b_writer_alive, "B stopped serving when A died"
    b.cli("vm", "start", "-n", vm, "--host", "rep-b")
    uri = served_by(b, vm, "rep-b")
    checks = region_checks(durable)
    for at in range(0, len(checks), 200):
        ok, out = qemu_io(uri, *checks[at:at + 200])
        assert ok, out
    # A restarts as a replica of the same cluster, with the same answers.
    a.start()
    assert secrets(a, "rep-crash").get_secret(next(iter(acknowledged))).value == next(iter(acknowledged.values()))


def test_detections_cover_every_replica_and_alert_once(cluster):
    """A purge through B (not the leader) is alerted once, by the leader A; after A dies,
    B leads and alerts the next purge, and none twice."""
    a, b = cluster
    a.cli("keyvault", "create", "-n", "rep-detect", "-l", "westeurope", "--retention-days", "7")
    on_b = secrets(b, "rep-detect")

    def purge(name):
        on_b.set_secret(name, "v")
        on_b.begin_delete_secret(name).wait()
        on_b.purge_deleted_secret(name)

    def purge_alerts(srv, count):
        deadline = time.time() + 10
        while True:
            found = [x for x in srv.cli("monitor", "alert", "list") if x["rule"] == "PurgeOfKeyOrSecret"]
            if len(found) >= count or time.time() > deadline:
                return found
            time.sleep(0.2)

    purge("first")
    [first] = purge_alerts(b, 1)
    assert "first" in first["resource"]
    a.proc.send_signal(signal.SIGKILL)
    a.proc.wait()
    wait_for_leader(b)
    purge("second")
    found = purge_alerts(b, 2)
    time.sleep(1)  # a duplicate would come within a poll
    found = purge_alerts(b, 3)
    assert sorted(x["resource"].rstrip("/").rsplit("/", 1)[-1] for x in found) == ["first", "second"], found
