"""Managed disks with server-side encryption, driven through the CLI and checked with real
qemu-io and qemu-img over NBD: data round trips and survives a restart, nothing plaintext
reaches the data directory, a customer key's revocation stops I/O and its return resumes
it, rotation rewraps without touching a block, PMK to CMK, double encryption, the disk
encryption set's validation, crypto-shredding, NBD's handling of a hostile client, and a
server killed mid-write losing no flushed write. scripts/test runs this module twice: on
the data directory, and with the blocks in Azurite (ATREST_TEST_BLOB_STORE)."""
import hashlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
import uuid

import pytest
import requests

from conftest import Server

VAULT = "sdk-disk"
OTHER_LOCATION_VAULT = "sdk-disk-us"
NO_PURGE_VAULT = "sdk-disk-np"
ROLE = "Key Vault Crypto Service Encryption User"
CHECK = 1  # --key-check-interval, seconds


@pytest.fixture(scope="module")
def dsrv(workdir):
    # Chunks nothing names are deleted at once, so a discard's space comes back in a second.
    srv = Server(workdir / "disks", "--key-check-interval", f"{CHECK}s", "--purge-interval", "1s",
                 "--blob-garbage-grace", "0s").start()
    srv.cli("keyvault", "create", "-n", VAULT, "-l", "westeurope", "--enable-purge-protection", "true")
    srv.cli("keyvault", "create", "-n", OTHER_LOCATION_VAULT, "-l", "eastus", "--enable-purge-protection", "true")
    srv.cli("keyvault", "create", "-n", NO_PURGE_VAULT, "-l", "westeurope")
    yield srv
    if srv.proc.poll() is None:
        assert srv.cli("monitor", "audit", "verify")["verified"] is True
        assert srv.stop() == 0, srv.log()


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def new_key(srv, vault=VAULT, kty="RSA", size="2048"):
    name = unique("cmk")
    args = ["keyvault", "key", "create", "--vault-name", vault, "-n", name, "--kty", kty]
    if kty == "RSA":
        args += ["--size", size]
    return srv.cli(*args)["key"]["kid"], name


def new_des(srv, kid, vault=VAULT, grant=True, encryption="EncryptionAtRestWithCustomerKey", rotate=None):
    name = unique("des")
    args = ["disk-encryption-set", "create", "-n", name, "--key-url", kid, "--source-vault", vault,
            "--encryption-type", encryption]
    if rotate is not None:
        args += ["--enable-auto-key-rotation", rotate]
    des = srv.cli(*args)
    if grant:
        grant_des(srv, des, vault)
    return des


def grant_des(srv, des, vault=VAULT):
    return srv.cli("role", "assignment", "create", "--assignee", des["identity"]["principalId"],
                   "--role", ROLE, "--scope", srv.vault_scope(vault))


def started_vm(srv, *disks):
    name = unique("vm")
    srv.cli("vm", "create", "-n", name, "--attach-disks", *disks)
    vm = srv.cli("vm", "start", "-n", name)
    uris = [d["nbdUri"] for d in vm["properties"]["storageProfile"]["dataDisks"]]
    return name, uris


def qemu_io(uri, *commands):
    args = ["qemu-io", "-f", "raw"]
    for c in commands:
        args += ["-c", c]
    return subprocess.run(args + [uri], capture_output=True, text=True, timeout=60)


def assert_io(uri, *commands):
    done = qemu_io(uri, *commands)
    assert done.returncode == 0 and "failed" not in done.stdout + done.stderr, done.stdout + done.stderr
    return done


def disk_id(srv, disk):
    return srv.cli("disk", "show", "-n", disk)["properties"]["uniqueId"]


def chunks(srv, disk):
    """The disk's stored chunks, name → ciphertext."""
    return srv.stored(f"chunks/{disk_id(srv, disk)}/")


def stored_bytes(srv, disk):
    return b"".join(chunks(srv, disk).values())


def digest(stored):
    h = hashlib.sha256()
    for name, data in sorted(stored.items()):
        h.update(name.encode() + data)
    return h.hexdigest()


def manifest(size, entries, next_gen=1):
    """A block manifest in atrest's stored format: `entries` are (index, origin, gen)."""
    origins = sorted({o for _, o, _ in entries})
    out = b"ATRMFST1" + struct.pack(">QIQ", size, 2**20, next_gen) + struct.pack(">H", len(origins))
    for o in origins:
        out += bytes([len(o)]) + o.encode()
    out += struct.pack(">I", len(entries))
    for index, origin, gen in sorted(entries):
        out += struct.pack(">IHQ", index, origins.index(origin), gen)
    return out + b"ATRMFEND"


def error_of(done):
    assert done.returncode != 0, done.stdout
    return done.stderr


def wait_for(predicate, what, timeout=10 * CHECK + 5):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


# Scattered offsets, some not unit-aligned, each with its own byte.
PATTERNS = [(0, 0x11, "64k"), (4096 * 1000 + 512, 0x22, "12k"), (300 * 2**20 + 7, 0x33, "1000"),
            (2**30 - 8192, 0x44, "8k")]


def write_patterns(uri):
    assert_io(uri, *[f"write -P {p:#x} {off} {n}" for off, p, n in PATTERNS])


def read_patterns(uri):
    assert_io(uri, *[f"read -P {p:#x} {off} {n}" for off, p, n in PATTERNS])


def test_cmk_disk_round_trip_survives_restart_and_leaves_no_plaintext(dsrv):
    kid, _ = new_key(dsrv)
    des = new_des(dsrv, kid)
    disk = unique("d")
    created = dsrv.cli("disk", "create", "-n", disk, "-z", "1", "--disk-encryption-set", des["name"])
    assert created["properties"]["encryption"] == {"type": "EncryptionAtRestWithCustomerKey",
                                                   "diskEncryptionSetId": des["id"]}
    assert created["properties"]["diskState"] == "Unattached"
    vm, (uri,) = started_vm(dsrv, disk)
    assert dsrv.cli("disk", "show", "-n", disk)["properties"]["diskState"] == "Attached"
    write_patterns(uri)
    read_patterns(uri)
    # TRIM and WRITE_ZEROES leave zeros; the rest of the disk reads as zeros.
    assert_io(uri, "discard 0 8k", "write -z 4096000 4k", "read -P 0 0 8k", "read -P 0 4096000 4k",
              "read -P 0x11 8k 56k", "read -P 0 700M 1M")
    # A discard gives the space back (once the chunks it dropped are collected).
    used = dsrv.local_block_usage()
    assert_io(uri, "write -P 0x66 64M 8M")
    assert dsrv.local_block_usage() >= 8 * 2**20
    assert_io(uri, "discard 64M 8M", "read -P 0 64M 8M")
    wait_for(lambda: dsrv.local_block_usage() <= used + 2**20, "the discarded chunks to be collected")
    info = subprocess.run(["qemu-img", "info", "--output=json", uri], capture_output=True, text=True, check=True)
    assert '"virtual-size": 1073741824' in info.stdout

    dsrv.stop()
    dsrv.start()
    uri = dsrv.cli("vm", "show", "-n", vm)["properties"]["storageProfile"]["dataDisks"][0]["nbdUri"]
    assert_io(uri, "read -P 0 0 8k", "read -P 0x11 8k 56k", "read -P 0x33 314572807 1000",
              "read -P 0x44 1073733632 8k")

    # The ciphertext is all that reaches the store: no run of a pattern byte anywhere, in
    # the data directory or the object store.
    data = stored_bytes(dsrv, disk)
    assert len(data) >= 2**20
    for _, byte, _ in PATTERNS:
        assert bytes([byte]) * 64 not in data
    for f in dsrv.data_dir.rglob("*"):
        if f.is_file():
            assert b"\x33" * 64 not in f.read_bytes(), f
    for name, blob in dsrv.stored("").items():
        assert b"\x33" * 64 not in blob, name
    # A 1 GiB disk with a few writes stays sparse.
    wait_for(lambda: dsrv.local_block_usage() < 8 * 2**20, "the store to hold only the few chunks written")


# The second of the two queries Microsoft's customer-managed-key article runs to show which
# caller last used each key, verbatim (trailing spaces included).
LAST_CALLER_PER_KEY = """AzureDiagnostics
| where ResourceProvider =="MICROSOFT.KEYVAULT" and OperationName startswith "Key" and not(OperationName == "KeyGet") 
| join kind=inner (
    AADManagedIdentitySignInLogs
        | distinct AppId, ServicePrincipalName
) 
on $left.identity_claim_appid_g == $right.AppId
| extend callerName=ServicePrincipalName
| union (
AzureDiagnostics
| where ResourceProvider =="MICROSOFT.KEYVAULT" and OperationName startswith "Key" and not(OperationName == "KeyGet") 
| join kind=inner (
    AADNonInteractiveUserSignInLogs
    | distinct ResourceIdentity, ResourceDisplayName
) 
on $left.identity_claim_appid_g == $right.ResourceIdentity
| extend callerName=ResourceDisplayName
)
| where callerName != "Microsoft Azure KeyVault portal extension" and callerName  != "Azure Key Vault" 
| extend targetKeyVaultName = replace_string(tostring(split(id_s,"/")[2]),".vault.azure.net","")
| extend targetKeyName = tostring(split(id_s,"/")[4])
| extend targetKeyVersion = tostring(split(id_s,"/")[5])
| summarize arg_max(lastCallTime=TimeGenerated, OperationName) by callerName, targetKeyVaultName, targetKeyName, targetKeyVersion, ResultSignature, ResultDescription
| order by targetKeyVaultName, targetKeyName, targetKeyVersion, ResultSignature, lastCallTime 
| project targetKeyVaultName, targetKeyName, targetKeyVersion, OperationName, ResultSignature, ResultDescription, lastCallTime, callerName 
"""


def test_key_usage_query_names_the_disk_encryption_set(dsrv):
    kid, _ = new_key(dsrv)
    des = new_des(dsrv, kid)
    disk = unique("d")
    dsrv.cli("disk", "create", "-n", disk, "-z", "1", "--disk-encryption-set", des["name"])
    started_vm(dsrv, disk)
    done = dsrv.cli("monitor", "query", LAST_CALLER_PER_KEY, "-o", "json", check=False)
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    key_name, key_version = kid.split("/")[4], kid.split("/")[5]
    mine = [r for r in rows if r["targetKeyName"] == key_name and r["targetKeyVersion"] == key_version]
    # One row per caller, key version and outcome: the set's identity, by the set's name,
    # whose last successful call was an unwrap (the VM's start and the key checks after it).
    assert [(r["callerName"], r["OperationName"], r["ResultSignature"]) for r in mine] == \
        [(des["name"], "KeyUnwrap", "OK")], rows
    assert mine[0]["lastCallTime"] and mine[0]["targetKeyVaultName"].startswith(VAULT)
    assert list(rows[0]) == ["targetKeyVaultName", "targetKeyName", "targetKeyVersion", "OperationName",
                             "ResultSignature", "ResultDescription", "lastCallTime", "callerName"]


def test_revocation_stops_io_and_access_returning_restores_it(dsrv):
    kid, key = new_key(dsrv)
    des = new_des(dsrv, kid)
    disk = unique("d")
    dsrv.cli("disk", "create", "-n", disk, "-z", "1", "--disk-encryption-set", des["name"])
    vm, (uri,) = started_vm(dsrv, disk)
    assert_io(uri, "write -P 0x5a 1M 64k")

    dsrv.cli("keyvault", "key", "set-attributes", "--vault-name", VAULT, "-n", key, "--enabled", "false")
    wait_for(lambda: qemu_io(uri, "read 1M 4k").returncode != 0, "I/O to fail after the key is disabled")
    access = dsrv.cli("disk", "show", "-n", disk)["properties"]["keyAccess"]
    assert access["status"] == "Unavailable" and "KeyDisabled" in access["message"] and kid in access["message"]
    assert qemu_io(uri, "write -P 0x66 1M 4k").returncode != 0

    # A stopped machine cannot start while the key is unusable, and says which key and why.
    dsrv.cli("vm", "stop", "-n", vm)
    refused = error_of(dsrv.cli("vm", "start", "-n", vm, check=False))
    assert "409" in refused and "KeyVaultKeyUnusable" in refused and kid in refused and "disabled" in refused

    dsrv.cli("keyvault", "key", "set-attributes", "--vault-name", VAULT, "-n", key, "--enabled", "true")
    dsrv.cli("vm", "start", "-n", vm)
    assert_io(uri, "read -P 0x5a 1M 64k")
    assert dsrv.cli("disk", "show", "-n", disk)["properties"]["keyAccess"] == {"status": "Available"}

    # Losing the role works the same way, and I/O resumes by itself when it comes back.
    dsrv.cli("role", "assignment", "delete", "--assignee", des["identity"]["principalId"], "--role", ROLE,
             "--scope", dsrv.vault_scope(VAULT))
    wait_for(lambda: qemu_io(uri, "read 1M 4k").returncode != 0, "I/O to fail after the role is removed")
    assert "Forbidden" in dsrv.cli("disk", "show", "-n", disk)["properties"]["keyAccess"]["message"]
    grant_des(dsrv, des)
    wait_for(lambda: qemu_io(uri, "read -P 0x5a 1M 64k").returncode == 0, "I/O to resume after the role returns")
    assert_io(uri, "write -P 0x77 2M 4k", "read -P 0x77 2M 4k")


def test_rotation_rewraps_without_touching_a_block(dsrv):
    kid, key = new_key(dsrv)
    des = new_des(dsrv, kid, rotate="true")
    disk = unique("d")
    dsrv.cli("disk", "create", "-n", disk, "-z", "1", "--disk-encryption-set", des["name"])
    vm, (uri,) = started_vm(dsrv, disk)
    assert_io(uri, "write -P 0x3c 0 1M")
    dsrv.cli("vm", "stop", "-n", vm)
    before = digest(chunks(dsrv, disk))

    rotated = dsrv.cli("keyvault", "key", "rotate", "--vault-name", VAULT, "-n", key)["key"]["kid"]
    assert rotated != kid
    wait_for(lambda: dsrv.cli("disk-encryption-set", "show", "-n", des["name"])["properties"]["activeKey"]["keyUrl"] == rotated,
             "the set to adopt the new key version")
    shown = dsrv.cli("disk-encryption-set", "show", "-n", des["name"])["properties"]
    assert shown["previousKeys"] == [] and "lastKeyRotationTimestamp" in shown
    assert digest(chunks(dsrv, disk)) == before, "rotation rewrote blocks"
    dsrv.cli("vm", "start", "-n", vm)
    assert_io(uri, "read -P 0x3c 0 1M")

    # The audit log proves it: the set's identity wrapped with the new version and unwrapped.
    rows = dsrv.cli("monitor", "query", "-o", "json",
                    f"AzureDiagnostics | where identity_claim_xms_mirid_s == '{des['id']}' "
                    "| where OperationName in ('KeyWrap', 'KeyUnwrap') and ResultSignature == 'OK' "
                    "| project OperationName, id_s")
    assert any(r["OperationName"] == "KeyWrap" and r["id_s"].endswith(rotated.rsplit("/", 1)[1]) for r in rows), rows
    assert any(r["OperationName"] == "KeyUnwrap" for r in rows)

    # A chosen key: `update --key-url` rewraps every disk of the set to it.
    other, _ = new_key(dsrv)
    updated = dsrv.cli("disk-encryption-set", "update", "-n", des["name"], "--key-url", other)["properties"]
    assert updated["activeKey"]["keyUrl"] == other and updated["previousKeys"] == []
    dsrv.cli("vm", "stop", "-n", vm)
    assert digest(chunks(dsrv, disk)) == before
    dsrv.cli("vm", "start", "-n", vm)
    assert_io(uri, "read -P 0x3c 0 1M")


def test_pmk_to_cmk_rewraps_only_and_is_one_way(dsrv):
    disk = unique("d")
    created = dsrv.cli("disk", "create", "-n", disk, "-z", "2")
    assert created["properties"]["encryption"] == {"type": "EncryptionAtRestWithPlatformKey"}
    vm, (uri,) = started_vm(dsrv, disk)
    assert_io(uri, "write -P 0x9e 1G 64k")
    dsrv.cli("vm", "stop", "-n", vm)
    before = digest(chunks(dsrv, disk))

    kid, _ = new_key(dsrv)
    des = new_des(dsrv, kid)
    moved = dsrv.cli("disk", "update", "-n", disk, "--disk-encryption-set", des["name"])
    assert moved["properties"]["encryption"]["type"] == "EncryptionAtRestWithCustomerKey"
    assert digest(chunks(dsrv, disk)) == before
    dsrv.cli("vm", "start", "-n", vm)
    assert_io(uri, "read -P 0x9e 1G 64k")

    back = error_of(dsrv.cli("disk", "update", "-n", disk, "--encryption-type", "EncryptionAtRestWithPlatformKey", check=False))
    assert "400" in back and "OperationNotAllowed" in back
    assert dsrv.cli("disk", "show", "-n", disk)["properties"]["encryption"]["type"] == "EncryptionAtRestWithCustomerKey"


def test_double_encryption_uses_two_layers(dsrv):
    kid, _ = new_key(dsrv)
    des = new_des(dsrv, kid, encryption="EncryptionAtRestWithPlatformAndCustomerKeys")
    disk = unique("d")
    created = dsrv.cli("disk", "create", "-n", disk, "-z", "1", "--disk-encryption-set", des["name"],
                       "--encryption-type", "EncryptionAtRestWithPlatformAndCustomerKeys")
    assert created["properties"]["encryption"]["type"] == "EncryptionAtRestWithPlatformAndCustomerKeys"
    vm, (uri,) = started_vm(dsrv, disk)
    assert_io(uri, "write -P 0xd0 0 256k", "read -P 0xd0 0 256k")
    assert bytes([0xd0]) * 64 not in stored_bytes(dsrv, disk)
    # Without the customer layer the disk is unreadable, whatever the platform key does.
    dsrv.cli("keyvault", "key", "set-attributes", "--vault-name", VAULT, "-n", kid.split("/")[4], "--enabled", "false")
    wait_for(lambda: qemu_io(uri, "read 0 4k").returncode != 0, "I/O to fail")
    dsrv.cli("keyvault", "key", "set-attributes", "--vault-name", VAULT, "-n", kid.split("/")[4], "--enabled", "true")
    wait_for(lambda: qemu_io(uri, "read -P 0xd0 0 256k").returncode == 0, "I/O to resume")


def test_validation_errors_are_clear_and_change_nothing(dsrv):
    kid, _ = new_key(dsrv)
    sets_before = len(dsrv.cli("disk-encryption-set", "list"))
    disks_before = len(dsrv.cli("disk", "list"))
    ec_kid, _ = new_key(dsrv, kty="EC")
    us_kid, _ = new_key(dsrv, vault=OTHER_LOCATION_VAULT)
    np_kid, _ = new_key(dsrv, vault=NO_PURGE_VAULT)
    disabled_kid, disabled = new_key(dsrv)
    dsrv.cli("keyvault", "key", "set-attributes", "--vault-name", VAULT, "-n", disabled, "--enabled", "false")
    missing = kid.rsplit("/", 1)[0] + "/" + "0" * 32

    def refused(args, status, *needles):
        text = error_of(dsrv.cli(*args, check=False))
        assert f"HTTP {status}" in text, text
        for n in needles:
            assert n in text, text

    des = ["disk-encryption-set", "create", "-n", unique("bad"), "--encryption-type", "EncryptionAtRestWithCustomerKey"]
    refused(des + ["--key-url", missing, "--source-vault", VAULT], 400, "KeyVaultKeyNotFound")
    refused(des + ["--key-url", ec_kid, "--source-vault", VAULT], 400, "RSA key of 2048, 3072 or 4096")
    refused(des + ["--key-url", us_kid, "--source-vault", OTHER_LOCATION_VAULT], 400, "same location")
    refused(des + ["--key-url", np_kid, "--source-vault", NO_PURGE_VAULT], 400, "purge protection")
    refused(des + ["--key-url", disabled_kid, "--source-vault", VAULT], 400, "KeyVaultKeyDisabled")
    refused(des + ["--key-url", kid.rsplit("/", 1)[0], "--source-vault", VAULT], 400, "versioned key")
    refused(des + ["--key-url", kid, "--source-vault", NO_PURGE_VAULT], 400, "does not hold the key")
    refused(["disk-encryption-set", "create", "-n", unique("bad"), "--key-url", kid, "--encryption-type",
             "EncryptionAtRestWithPlatformKey"], 400, "encryptionType")
    assert len(dsrv.cli("disk-encryption-set", "list")) == sets_before

    # The identity must be able to use the key: tried, and refused, before any disk exists.
    ungranted = new_des(dsrv, kid, grant=False)
    refused(["disk", "create", "-n", unique("d"), "-z", "1", "--disk-encryption-set", ungranted["name"]], 400,
            "KeyVaultAccessForbidden", ungranted["name"], kid)
    refused(["disk", "create", "-n", unique("d"), "-z", "1", "-l", "eastus", "--disk-encryption-set",
             ungranted["name"]], 400, "location")
    refused(["disk", "create", "-n", unique("d"), "-z", "1", "--encryption-type", "EncryptionAtRestWithCustomerKey"],
            400, "requires a disk encryption set")
    refused(["disk", "create", "-n", unique("d"), "-z", "1", "--encryption-type", "None"], 400, "InvalidParameter")
    refused(["disk", "create", "-n", unique("d"), "-z", "0"], 400, "diskSizeGB")
    refused(["disk", "create", "-n", "bad.", "-z", "1"], 400, "invalid")
    assert len(dsrv.cli("disk", "list")) == disks_before
    refused(["disk", "show", "-n", "nope"], 404, "ResourceNotFound")
    refused(["vm", "start", "-n", "nope"], 404, "ResourceNotFound")
    refused(["vm", "create", "-n", unique("vm"), "--attach-disks", "nope"], 400, "nope")
    # A set in use cannot go; a disk attached to a machine cannot go.
    granted = new_des(dsrv, kid)
    used = unique("d")
    dsrv.cli("disk", "create", "-n", used, "-z", "1", "--disk-encryption-set", granted["name"])
    refused(["disk-encryption-set", "delete", "-n", granted["name"]], 409, "DiskEncryptionSetInUse")
    vm = unique("vm")
    dsrv.cli("vm", "create", "-n", vm, "--attach-disks", used)
    refused(["disk", "delete", "-n", used], 409, vm)
    refused(["vm", "create", "-n", unique("vm"), "--attach-disks", used], 409, "already attached")
    # Deleting a set deletes its identity.
    dsrv.cli("disk-encryption-set", "delete", "-n", ungranted["name"])
    refused(["disk-encryption-set", "show", "-n", ungranted["name"]], 404)
    assert dsrv.proc.poll() is None


def test_deleting_a_disk_shreds_its_data(dsrv):
    kid, _ = new_key(dsrv)
    des = new_des(dsrv, kid)
    disk = unique("d")
    dsrv.cli("disk", "create", "-n", disk, "-z", "1", "--disk-encryption-set", des["name"])
    vm, (uri,) = started_vm(dsrv, disk)
    assert_io(uri, "write -P 0xe7 0 64k")
    dsrv.cli("vm", "delete", "-n", vm)
    old_id = disk_id(dsrv, disk)
    saved = chunks(dsrv, disk)
    assert saved
    dsrv.cli("disk", "delete", "-n", disk)
    wait_for(lambda: not dsrv.stored(f"chunks/{old_id}/"), "the deleted disk's chunks to be collected")
    assert dsrv.cli("disk", "show", "-n", disk, check=False).returncode != 0
    # Even with every block put back, a disk (same name, same set) whose manifest names
    # them cannot read them: the data key is gone.
    dsrv.cli("disk", "create", "-n", disk, "-z", "1", "--disk-encryption-set", des["name"])
    entries = [(int(n.rsplit("/", 1)[1].split("-")[0], 16), old_id, int(n.rsplit("-", 1)[1], 16)) for n in saved]
    # The manifest first: chunks no manifest names would be collected again.
    dsrv.put_stored(f"manifests/{disk_id(dsrv, disk)}", manifest(2**30, entries))
    for name, data in saved.items():
        dsrv.put_stored(name, data)
    _, (uri,) = started_vm(dsrv, disk)
    assert qemu_io(uri, "read -P 0xe7 0 64k").returncode != 0
    assert qemu_io(uri, "read -P 0 0 64k").returncode != 0


def nbd_connect(uri):
    host, port = uri.removeprefix("nbd://").split("/")[0].split(":")
    s = socket.create_connection((host, int(port)), timeout=10)
    hello = recv_exact(s, 18)
    assert hello[:8] == b"NBDMAGIC" and hello[8:16] == b"IHAVEOPT"
    return s


def recv_exact(s, n):
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def option(s, opt, data=b""):
    s.sendall(b"IHAVEOPT" + struct.pack(">II", opt, len(data)) + data)


def option_reply(s):
    magic, opt, kind, length = struct.unpack(">QIII", recv_exact(s, 20))
    assert magic == 0x3e889045565a9
    return opt, kind, recv_exact(s, length)


def go(s, export):
    name = export.encode()
    option(s, 7, struct.pack(">I", len(name)) + name + struct.pack(">H", 0))
    while True:
        _, kind, data = option_reply(s)
        if kind == 1:
            return
        assert kind == 3, hex(kind)


def request(s, cmd, offset, length, cookie=1, flags=0, payload=b""):
    s.sendall(struct.pack(">IHHQQI", 0x25609513, flags, cmd, cookie, offset, length) + payload)


def simple_reply(s):
    magic, error, cookie = struct.unpack(">IIQ", recv_exact(s, 16))
    assert magic == 0x67446698
    return error, cookie


def test_nbd_survives_hostile_clients(dsrv):
    disk = unique("d")
    dsrv.cli("disk", "create", "-n", disk, "-z", "1")
    _, (uri,) = started_vm(dsrv, disk)
    export = uri.split("/", 3)[3]
    assert_io(uri, "write -P 0x42 0 64k")

    # Bad client flags, bad option magic, an oversized option: the connection ends.
    s = nbd_connect(uri)
    s.sendall(struct.pack(">I", 0xffff))
    assert s.recv(1) == b""
    s = nbd_connect(uri)
    s.sendall(struct.pack(">I", 1) + b"NOTMAGIC" + struct.pack(">II", 7, 0))
    assert s.recv(1) == b""
    s = nbd_connect(uri)
    s.sendall(struct.pack(">I", 1))
    s.sendall(b"IHAVEOPT" + struct.pack(">II", 7, 1 << 30))
    assert option_reply(s)[1] == 0x80000009
    # Unknown options, malformed GO and unknown exports get errors and the haggling goes on.
    s = nbd_connect(uri)
    s.sendall(struct.pack(">I", 3))
    option(s, 99)
    assert option_reply(s)[1] == 0x80000001
    option(s, 7, struct.pack(">I", 1000) + b"x")
    assert option_reply(s)[1] == 0x80000003
    option(s, 7, struct.pack(">I", 4) + b"nope" + struct.pack(">H", 0))
    assert option_reply(s)[1] == 0x80000006
    option(s, 10, struct.pack(">I", 0))
    assert option_reply(s)[1] == 0x80000003, "meta contexts need structured replies"
    option(s, 3)
    listed = []
    while True:
        _, kind, data = option_reply(s)
        if kind == 1:
            break
        listed.append(data[4:].decode())
    assert export in listed
    go(s, export)
    # Out of range, oversized, unknown commands and BLOCK_STATUS without a context: errors,
    # and the connection keeps serving.
    request(s, 0, 2**30 - 512, 4096, cookie=11)
    assert simple_reply(s) == (22, 11)
    request(s, 0, 0, 64 * 2**20, cookie=12)
    assert simple_reply(s) == (75, 12)
    request(s, 1, 2**30, 512, cookie=13, payload=b"\0" * 512)
    assert simple_reply(s) == (28, 13)
    request(s, 42, 0, 0, cookie=14)
    assert simple_reply(s) == (22, 14)
    request(s, 7, 0, 4096, cookie=15)
    assert simple_reply(s) == (22, 15)
    request(s, 0, 0, 4, cookie=16)
    assert simple_reply(s) == (0, 16) and recv_exact(s, 4) == b"\x42" * 4
    # A write cut off mid-payload, then an abrupt close.
    request(s, 1, 0, 65536, cookie=17, payload=b"\x99" * 1000)
    s.close()
    # A bad request magic ends the connection.
    s = nbd_connect(uri)
    s.sendall(struct.pack(">I", 3))
    go(s, export)
    s.sendall(b"\0" * 28)
    assert s.recv(1) == b""
    # Nothing above reached the disk, and the server still serves.
    assert_io(uri, "read -P 0x42 0 64k")
    assert dsrv.proc.poll() is None
    if shutil.which("nbdinfo"):
        info = subprocess.run(["nbdinfo", "--json", uri], capture_output=True, text=True, timeout=30)
        assert info.returncode == 0 and '"export-size": 1073741824' in info.stdout, info.stderr


def test_demo_tells_the_whole_story():
    from conftest import ATREST
    done = subprocess.run([str(ATREST), "demo"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    for n in range(1, 6):
        assert f"== {n}." in out
    assert out.count('"Customer-managed keys keep this sentence unreadable at rest."') == 4
    assert "the sentence appears nowhere in the chunk" in out
    assert "read now fails: NBD error 5" in out and "KeyDisabled" in out
    assert "KeyWrap" in out and "KeyUnwrap" in out and out.rstrip().endswith("through the vault's own API.")


def test_export_serves_the_plaintext_as_a_fixed_vhd(dsrv, tmp_path):
    from azure.core.exceptions import HttpResponseError
    from azure.mgmt.compute import ComputeManagementClient
    from azure.mgmt.compute.models import GrantAccessData
    from azure.storage.blob import BlobClient

    kid, _ = new_key(dsrv)
    des = new_des(dsrv, kid)
    disk = unique("exp")
    dsrv.cli("disk", "create", "-n", disk, "-z", "1", "--disk-encryption-set", des["name"])
    vm, (uri,) = started_vm(dsrv, disk)
    write_patterns(uri)
    written = tmp_path / "written.raw"
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "raw", uri, str(written)], check=True)

    compute = dsrv.management_client(ComputeManagementClient)
    read_access = GrantAccessData(access="Read", duration_in_seconds=3600, file_format="VHD")
    # A disk in a running VM is not exported.
    with pytest.raises(HttpResponseError) as err:
        compute.disks.begin_grant_access("default", disk, read_access).result()
    assert err.value.status_code == 409 and "running" in str(err.value)
    dsrv.cli("vm", "stop", "-n", vm)
    with pytest.raises(HttpResponseError) as err:
        compute.disks.begin_grant_access("default", disk, GrantAccessData(access="Write", duration_in_seconds=60)).result()
    assert err.value.status_code == 409 and "not created for upload" in str(err.value)

    sas = compute.disks.begin_grant_access("default", disk, read_access).result().access_sas
    assert dsrv.cli("disk", "show", "-n", disk)["properties"]["diskState"] == "ActiveSAS"
    assert "OperationNotAllowed" in error_of(dsrv.cli("vm", "start", "-n", vm, check=False))

    # Microsoft's blob client downloads it, by ranges, as it downloads a page blob.
    exported = tmp_path / "exported.vhd"
    blob = BlobClient.from_blob_url(sas, connection_verify=dsrv.env["ATREST_CA"])
    with open(exported, "wb") as f:
        blob.download_blob(max_concurrency=4).readinto(f)
    assert exported.stat().st_size == (1 << 30) + 512
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", "-f", "vpc", str(exported)],
                                     capture_output=True, text=True, check=True).stdout)
    assert info["virtual-size"] == 1 << 30
    # Server-side encryption is transparent: the download is the plaintext, byte for byte.
    subprocess.run(["qemu-img", "compare", "-f", "vpc", "-F", "raw", str(exported), str(written)], check=True)

    # The audit log names each read, never the URL's signature (a bearer credential).
    token = sas.split("sig=", 1)[1].split("&", 1)[0]
    reads = dsrv.cli("monitor", "audit", "list", "--operation", "DiskAccessRead", "--limit", "5")
    assert reads and all("sig=REDACTED" in e["properties"]["requestUri"] for e in reads), reads
    exported_log = dsrv.cli("monitor", "audit", "export", check=False)
    assert exported_log.returncode == 0 and "DiskAccessRead" in exported_log.stdout
    assert token not in exported_log.stdout and token not in dsrv.log()

    # Revoked: the URL stops working, and the disk can run again.
    compute.disks.begin_revoke_access("default", disk).result()
    with pytest.raises(HttpResponseError) as err:
        BlobClient.from_blob_url(sas, connection_verify=dsrv.env["ATREST_CA"]).get_blob_properties()
    assert err.value.status_code == 403
    assert dsrv.cli("disk", "show", "-n", disk)["properties"]["diskState"] == "Reserved"
    # The same through the CLI, as `az disk grant-access|revoke-access`.
    url = dsrv.cli("disk", "grant-access", "-n", disk, "--duration-in-seconds", "60")["accessSas"]
    head = requests.head(url, verify=dsrv.env["ATREST_CA"], timeout=30)
    assert head.status_code == 200 and int(head.headers["Content-Length"]) == (1 << 30) + 512
    tail = requests.get(url, headers={"Range": f"bytes={1 << 30}-"}, verify=dsrv.env["ATREST_CA"], timeout=30)
    assert tail.status_code == 206 and tail.content[:8] == b"conectix" and len(tail.content) == 512
    dsrv.cli("disk", "revoke-access", "-n", disk)
    assert requests.head(url, verify=dsrv.env["ATREST_CA"], timeout=30).status_code == 403
    # networkAccessPolicy DenyAll forbids export.
    from azure.mgmt.compute.models import DiskUpdate
    denied = compute.disks.begin_update("default", disk, DiskUpdate(network_access_policy="DenyAll")).result()
    assert denied.network_access_policy == "DenyAll"
    with pytest.raises(HttpResponseError) as err:
        compute.disks.begin_grant_access("default", disk, read_access).result()
    assert err.value.status_code == 409 and "DenyAll" in str(err.value)
    compute.disks.begin_update("default", disk, DiskUpdate(network_access_policy="AllowAll")).result()
    dsrv.cli("vm", "start", "-n", vm)
    dsrv.cli("vm", "stop", "-n", vm)


def test_upload_encrypts_a_fixed_vhd_on_arrival(dsrv, tmp_path):
    from azure.core.exceptions import HttpResponseError
    from azure.mgmt.compute import ComputeManagementClient
    from azure.mgmt.compute.models import CreationData, Disk, Encryption, GrantAccessData
    from azure.storage.blob import BlobClient

    ca = dsrv.env["ATREST_CA"]
    compute = dsrv.management_client(ComputeManagementClient)
    # A 20 MiB image with a recognizable pattern, as a fixed VHD from qemu-img.
    raw = tmp_path / "source.raw"
    raw.write_bytes(b"".join(bytes([0x33]) * 4096 + i.to_bytes(4, "big") * 1024 for i in range(2560)))
    vhd = tmp_path / "source.vhd"
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "vpc", "-o", "subformat=fixed,force_size",
                    str(raw), str(vhd)], check=True)
    size = vhd.stat().st_size
    assert size == (20 << 20) + 512

    kid, _ = new_key(dsrv)
    des = new_des(dsrv, kid)
    name = unique("up")
    created = compute.disks.begin_create_or_update("default", name, Disk(
        location="westeurope", creation_data=CreationData(create_option="Upload", upload_size_bytes=size),
        encryption=Encryption(type="EncryptionAtRestWithCustomerKey", disk_encryption_set_id=des["id"]),
    )).result()
    assert created.disk_state == "ReadyToUpload" and created.disk_size_bytes == 20 << 20
    # Nothing to read yet, and nothing to attach.
    with pytest.raises(HttpResponseError):
        compute.disks.begin_grant_access("default", name, GrantAccessData(access="Read", duration_in_seconds=60)).result()
    assert "ReadyToUpload" in error_of(dsrv.cli("vm", "create", "-n", unique("vm"), "--attach-disks", name, check=False))

    sas = compute.disks.begin_grant_access("default", name, GrantAccessData(access="Write", duration_in_seconds=3600)).result().access_sas
    assert compute.disks.get("default", name).disk_state == "ActiveUpload"
    blob = BlobClient.from_blob_url(sas, connection_verify=ca)
    # Bad page writes are refused by name and write nothing.
    for headers in ({"x-ms-range": "bytes=1-512", "x-ms-page-write": "update"},
                    {"x-ms-range": "bytes=0-511", "x-ms-page-write": "sideways"},
                    {"x-ms-range": f"bytes=0-{(5 << 20) - 1}", "x-ms-page-write": "update"}):
        refused = requests.put(sas + "&comp=page", data=b"\x00" * 512, headers=headers, verify=ca, timeout=30)
        assert refused.status_code in (400, 413, 416), (headers, refused.status_code)
    # A page write before the footer is complete leaves endGetAccess refusing the upload.
    with open(vhd, "rb") as f:
        for offset in range(0, size - 512, 4 << 20):
            chunk = f.read(min(4 << 20, size - 512 - offset))
            blob.upload_page(chunk, offset=offset, length=len(chunk))
        with pytest.raises(HttpResponseError) as err:
            compute.disks.begin_revoke_access("default", name).result()
        assert err.value.status_code == 400 and "not valid" in str(err.value)
        footer = f.read(512)
    blob.upload_page(footer, offset=size - 512, length=512)
    compute.disks.begin_revoke_access("default", name).result()
    assert compute.disks.get("default", name).disk_state == "Unattached"

    # The uploaded data reads back through a VM, and only ciphertext reached the disk.
    _, (uri,) = started_vm(dsrv, name)
    subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "raw", str(raw), uri], check=True)
    assert bytes([0x33]) * 64 not in stored_bytes(dsrv, name)


def test_entra_id_data_access_needs_the_download_data_action(dsrv):
    from azure.mgmt.compute import ComputeManagementClient
    from azure.mgmt.compute.models import CreationData, Disk, GrantAccessData

    ca = dsrv.env["ATREST_CA"]
    compute = dsrv.management_client(ComputeManagementClient)
    name = unique("aad")
    disk = compute.disks.begin_create_or_update("default", name, Disk(
        location="westeurope", creation_data=CreationData(create_option="Empty"), disk_size_gb=1,
        data_access_auth_mode="AzureActiveDirectory")).result()
    assert disk.data_access_auth_mode == "AzureActiveDirectory"
    url = compute.disks.begin_grant_access("default", name, GrantAccessData(access="Read", duration_in_seconds=600)).result().access_sas

    def head(credential=None):
        headers = {}
        if credential is not None:
            headers["Authorization"] = "Bearer " + credential.get_token("https://disk.azure.com/.default").token
        return requests.head(url, headers=headers, verify=ca, timeout=30).status_code

    # The URL alone is not enough, nor a token whose caller lacks the data action (the
    # administrator is Owner: every action, no data action).
    assert head() == 401
    assert head(dsrv.credential()) == 403
    sp, credential = dsrv.new_principal("disk-reader")
    assert head(credential) == 403
    dsrv.cli("role", "assignment", "create", "--assignee", sp["appId"], "--role", "Data Operator for Managed Disks",
             "--scope", disk.id)
    assert head(credential) == 200
    compute.disks.begin_revoke_access("default", name).result()
    assert head(credential) == 403


def test_cli_upload_and_download_round_trip(dsrv, tmp_path):
    raw = tmp_path / "image.raw"
    raw.write_bytes(b"".join(i.to_bytes(2, "big") * 2048 for i in range(5120)) + bytes(20 << 20))
    vhd = tmp_path / "image.vhd"
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "vpc", "-o", "subformat=fixed,force_size",
                    str(raw), str(vhd)], check=True)
    kid, _ = new_key(dsrv)
    des = new_des(dsrv, kid)
    name = unique("cli-up")
    uploaded = dsrv.cli("disk", "upload", "-n", name, "--file", str(vhd), "--disk-encryption-set", des["name"])
    assert uploaded["properties"]["diskState"] == "Unattached"
    assert uploaded["properties"]["diskSizeBytes"] == raw.stat().st_size
    assert uploaded["properties"]["encryption"]["type"] == "EncryptionAtRestWithCustomerKey"
    back = tmp_path / "back.vhd"
    downloaded = dsrv.cli("disk", "download", "-n", name, "--file", str(back))
    assert downloaded["bytes"] == vhd.stat().st_size == back.stat().st_size
    subprocess.run(["qemu-img", "compare", "-f", "vpc", "-F", "raw", str(back), str(raw)], check=True)
    assert dsrv.cli("disk", "show", "-n", name)["properties"]["diskState"] == "Unattached"
    # A file that is not a fixed VHD is refused before anything is written.
    refused = dsrv.cli("disk", "upload", "-n", unique("cli-bad"), "--file", str(raw), check=False)
    assert refused.returncode != 0


def region(n):
    """Distinct 68 KiB regions (so some cross a chunk boundary): offset and bytes."""
    return n * 69632, bytes([n % 251 + 1]) * 65536


def write_until_killed(uri, proc):
    """Writes regions to the NBD export `uri`, flushing after every fourth, and kills the
    serving `proc` with SIGKILL 1.5 s in; returns the regions a FLUSH covered. Each region
    is rewritten with the same bytes now and then (a new generation of a committed chunk,
    copied, then changed)."""
    s = nbd_connect(uri)
    s.sendall(struct.pack(">I", 1))
    go(s, uri.split("/", 3)[3])
    durable, pending, i = [], [], 0
    threading.Timer(1.5, lambda: os.kill(proc.pid, signal.SIGKILL)).start()
    try:
        while True:
            n = i // 2 if i % 5 == 4 else i
            offset, data = region(n)
            request(s, 1, offset, len(data), cookie=i, payload=data)
            assert simple_reply(s) == (0, i)
            pending.append(n)
            if i % 4 == 3:
                request(s, 3, 0, 0, cookie=i)
                assert simple_reply(s) == (0, i)
                durable += pending
                pending = []
            i += 1
    except (OSError, ConnectionError, struct.error):
        pass
    proc.wait(timeout=10)
    return durable


def region_checks(regions):
    """qemu-io commands that read each region back."""
    return [f"read -P {region(n)[1][0]:#x} {region(n)[0]} 64k" for n in sorted(set(regions))]


def test_a_killed_server_loses_no_flushed_write(dsrv):
    """SIGKILL while a client writes and flushes: every write a FLUSH covered reads back
    after the restart, on whichever block backend the server runs."""
    disk = unique("d")
    dsrv.cli("disk", "create", "-n", disk, "-z", "1")
    vm, (uri,) = started_vm(dsrv, disk)
    durable = write_until_killed(uri, dsrv.proc)
    assert len(durable) > 20, "the server was killed before much was flushed"
    dsrv.start()
    uri = dsrv.cli("vm", "show", "-n", vm)["properties"]["storageProfile"]["dataDisks"][0]["nbdUri"]
    checks = region_checks(durable)
    for at in range(0, len(checks), 200):
        assert_io(uri, *checks[at:at + 200])


def test_qemu_reconnect_delay_rides_over_a_restart_of_the_serving_server(workdir):
    """A client with NBD `reconnect-delay` keeps its disk across a restart of the server
    serving it: the machine is served again at start, on the same NBD address."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        nbd_port = s.getsockname()[1]
    srv = Server(workdir / f"reconnect-{uuid.uuid4().hex[:6]}", "--nbd-listen", f"127.0.0.1:{nbd_port}").start()
    try:
        disk = unique("d")
        srv.cli("disk", "create", "-n", disk, "-z", "1")
        _, (uri,) = started_vm(srv, disk)
        export = uri.split("/", 3)[3]
        opts = f"driver=raw,file.driver=nbd,file.host=127.0.0.1,file.port={nbd_port},file.export={export},file.reconnect-delay=20"
        client = subprocess.Popen(
            ["qemu-io", "--image-opts", opts, "-c", "write -P 0x3c 0 64k", "-c", "flush", "-c", "sleep 4000",
             "-c", "read -P 0x3c 0 64k", "-c", "write -P 0x4d 1M 64k", "-c", "flush"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(1.5)
        assert srv.stop() == 0, srv.log()
        srv.start()
        out, _ = client.communicate(timeout=60)
        assert client.returncode == 0 and "failed" not in out and "error" not in out.lower(), out
        assert_io(uri, "read -P 0x3c 0 64k", "read -P 0x4d 1M 64k")
    finally:
        if srv.proc.poll() is None:
            assert srv.stop() == 0, srv.log()
