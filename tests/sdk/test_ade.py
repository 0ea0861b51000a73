"""Azure Disk Encryption for Linux, with atrest playing the extension's part: LUKS volumes
written inside a machine's disks, their passphrases kept in the vault by the platform
identity, and the BEK VOLUME a started machine reads them from. Checked with the tools a
guest and an auditor have: cryptsetup (luksDump, --dump-volume-key), Python
`cryptography` (AES-XTS), qemu's luks driver, mtools on the BEK VOLUME, and Microsoft's
azure-mgmt-compute and azure-keyvault clients."""
import base64
import json
import re
import subprocess
import uuid

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from conftest import Server

VAULT = "sdk-ade"
OFF_VAULT = "sdk-ade-off"
US_VAULT = "sdk-ade-us"
BACKUP_VAULT = "sdk-ade-bk"
EXT = "AzureDiskEncryptionForLinux"
MiB = 1 << 20
PATTERN = bytes(range(251)) * 8  # 2008 bytes that occur nowhere by chance


@pytest.fixture(scope="module")
def asrv(workdir):
    srv = Server(workdir / "ade").start()
    srv.cli("keyvault", "create", "-n", VAULT, "-l", "westeurope", "--enabled-for-disk-encryption", "true")
    srv.cli("keyvault", "create", "-n", OFF_VAULT, "-l", "westeurope")
    srv.cli("keyvault", "create", "-n", US_VAULT, "-l", "eastus", "--enabled-for-disk-encryption", "true")
    srv.cli("keyvault", "create", "-n", BACKUP_VAULT, "-l", "westeurope", "--enabled-for-disk-encryption", "true")
    yield srv
    if srv.proc.poll() is None:
        assert srv.cli("monitor", "audit", "verify")["verified"] is True
        assert srv.stop() == 0, srv.log()


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def vm_with(srv, os_disk=None, data=()):
    """A deallocated machine with new 1 GiB disks; returns its name and disk names."""
    name = unique("vm")
    args = ["vm", "create", "-n", name]
    if os_disk:
        srv.cli("disk", "create", "-n", os_disk, "-z", "1")
        args += ["--attach-os-disk", os_disk]
    for d in data:
        srv.cli("disk", "create", "-n", d, "-z", "1")
    if data:
        args += ["--attach-disks", *data]
    srv.cli(*args)
    return name


def nbd_uris(vm):
    storage = vm["properties"]["storageProfile"]
    uris = {d["name"]: d["nbdUri"] for d in storage["dataDisks"]}
    if "osDisk" in storage:
        uris[storage["osDisk"]["name"]] = storage["osDisk"]["nbdUri"]
    return uris


def run(*args, **kw):
    done = subprocess.run(list(args), capture_output=True, timeout=120, **kw)
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done.stdout


def write_pattern(uri, offset, tmp_path):
    """Writes PATTERN (padded to 4 KiB) at `offset` through qemu-io, raw over NBD."""
    source = tmp_path / "pattern"
    source.write_bytes(PATTERN.ljust(4096, b"\0"))
    run("qemu-io", "-f", "raw", "-c", f"write -s {source} {offset} 4096", uri)


def download(uri, length, path):
    """The first `length` bytes the disk serves (its plaintext as the server sees it)."""
    run("qemu-img", "convert", "-f", "raw", "-O", "raw", uri, str(path))
    with open(path, "rb") as f:
        return f.read(length)


def xts_decrypt(key, data, offset, sector):
    """dm-crypt's aes-xts-plain64 over whole sectors at `offset` of the data segment:
    the IV counts 512-byte sectors whatever the sector size."""
    out = b""
    for i in range(0, len(data), sector):
        iv = ((offset + i) // 512).to_bytes(16, "little")
        d = Cipher(algorithms.AES(key), modes.XTS(iv)).decryptor()
        out += d.update(data[i:i + sector]) + d.finalize()
    return out


def luks_dump(path):
    return run("cryptsetup", "luksDump", str(path)).decode()


def volume_key(path, keyfile):
    dump = run("cryptsetup", "luksDump", "--dump-volume-key", "--batch-mode", "--key-file", str(keyfile),
               str(path)).decode()
    return bytes.fromhex("".join(dump.split("MK dump:")[1].split()[:64]))


def data_offset(dump):
    m = re.search(r"offset: (\d+) \[bytes\]", dump)
    return int(m.group(1)) if m else int(re.search(r"Payload offset:\s*(\d+)", dump).group(1)) * 512


def sector_size(dump):
    m = re.search(r"sector: (\d+) \[bytes\]", dump)
    return int(m.group(1)) if m else 512


def secret_client(srv, vault=VAULT):
    from azure.keyvault.secrets import SecretClient
    return SecretClient(srv.vault_url(vault), srv.credential(), connection_verify=srv.env["ATREST_CA"])


def key_client(srv, vault=VAULT):
    from azure.keyvault.keys import KeyClient
    return KeyClient(srv.vault_url(vault), srv.credential(), connection_verify=srv.env["ATREST_CA"])


def passphrase_of(srv, disk, vault=VAULT):
    """The passphrase the vault keeps for an ADE disk, through the official clients: the
    secret read, and unwrapped with its key-encryption key when wrapped."""
    from azure.keyvault.keys.crypto import CryptographyClient, KeyWrapAlgorithm
    settings = srv.cli("disk", "show", "-n", disk)["properties"]["encryptionSettingsCollection"]
    entry = settings["encryptionSettings"][0]
    secret_url = entry["diskEncryptionKey"]["secretUrl"]
    name, version = secret_url.split("/")[-2:]
    secret = secret_client(srv, vault).get_secret(name, version)
    raw = base64.b64decode(secret.value)
    if secret.properties.content_type == "Wrapped BEK":
        kek = entry["keyEncryptionKey"]["keyUrl"]
        crypto = CryptographyClient(kek, srv.credential(), connection_verify=srv.env["ATREST_CA"])
        alg = secret.properties.tags["DiskEncryptionKeyEncryptionAlgorithm"]
        raw = crypto.unwrap_key(KeyWrapAlgorithm(alg), raw).key
    else:
        assert secret.properties.content_type == "BEK"
    return raw, secret


def test_ade_all_volumes_with_a_kek_interoperates_with_cryptsetup(asrv, tmp_path):
    from azure.mgmt.compute import ComputeManagementClient
    os_disk, data_disk = unique("os"), unique("data")
    vm = vm_with(asrv, os_disk, [data_disk])
    uris = nbd_uris(asrv.cli("vm", "start", "-n", vm))
    for disk in (os_disk, data_disk):
        write_pattern(uris[disk], 3 * MiB, tmp_path)
    asrv.cli("vm", "stop", "-n", vm)
    assert asrv.cli("vm", "encryption", "show", "-n", vm) is None
    kek = asrv.cli("keyvault", "key", "create", "--vault-name", VAULT, "-n", unique("kek"), "--kty", "RSA",
                   "--size", "2048")["key"]["kid"]
    ext = asrv.cli("vm", "encryption", "enable", "-n", vm, "--disk-encryption-keyvault", VAULT,
                   "--key-encryption-key", kek.split("/")[4], "--volume-type", "ALL")
    assert ext["properties"]["settings"]["KeyEncryptionKeyURL"] == kek
    assert ext["properties"]["provisioningState"] == "Succeeded"

    # What az and the SDK read: the extension's substatus and the disks' settings.
    shown = asrv.cli("vm", "encryption", "show", "-n", vm)
    assert json.loads(shown["substatus"][0]["message"]) == {"os": "Encrypted", "data": "Encrypted"}
    assert {d["name"]: d["statuses"][0]["code"] for d in shown["disks"]} == \
        {os_disk: "EncryptionState/encrypted", data_disk: "EncryptionState/encrypted"}
    compute = asrv.management_client(ComputeManagementClient)
    got = compute.virtual_machine_extensions.get("default", vm, EXT, expand="instanceView")
    assert got.provisioning_state == "Succeeded" and got.type_handler_version == "1.1"
    assert json.loads(got.instance_view.substatuses[0].message)["os"] == "Encrypted"
    disk = compute.disks.get("default", data_disk)
    esc = disk.encryption_settings_collection
    assert esc.enabled and esc.encryption_settings_version == "1.1"
    assert esc.encryption_settings[0].key_encryption_key.key_url == kek
    assert esc.encryption_settings[0].disk_encryption_key.source_vault.id.endswith(f"/vaults/{VAULT}")

    # The secrets: GUID names, Wrapped BEK, ADE's tags; the passphrase is the base64 text
    # of 127 random bytes.
    passphrases = {}
    for disk, file_name in ((os_disk, "LinuxPassPhraseFileName"), (data_disk, "LinuxPassPhraseFileName_1_0")):
        passphrase, secret = passphrase_of(asrv, disk)
        uuid.UUID(secret.name)
        assert secret.properties.content_type == "Wrapped BEK"
        assert secret.properties.tags == {
            "DiskEncryptionKeyFileName": file_name,
            "DiskEncryptionKeyEncryptionAlgorithm": "RSA-OAEP",
            "DiskEncryptionKeyEncryptionKeyURL": kek,
            "MachineName": vm,
        }
        assert len(passphrase) == 172 and len(base64.b64decode(passphrase)) == 127
        passphrases[file_name] = passphrase

    # Started: the BEK VOLUME, read over NBD and with mtools, holds both files.
    started = asrv.cli("vm", "start", "-n", vm)
    bek = started["properties"]["storageProfile"]["bekVolume"]
    assert bek["label"] == "BEK VOLUME"
    image = tmp_path / "bek.img"
    run("qemu-img", "convert", "-f", "raw", "-O", "raw", bek["nbdUri"], str(image))
    assert b"BEK VOLUME" in run("mlabel", "-s", "-i", str(image), "::")
    listing = run("mdir", "-b", "-i", str(image), "::").decode()
    for file_name, passphrase in passphrases.items():
        assert file_name in listing
        assert run("mtype", "-i", str(image), f"::{file_name}") == passphrase
    refused = subprocess.run(["qemu-io", "-f", "raw", "-c", "write 0 512", bek["nbdUri"]],
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0 or "failed" in refused.stdout + refused.stderr, "the BEK VOLUME is read-only"

    # Each volume: cryptsetup reads the header and, with the vault's passphrase, gives the
    # volume key; the data written before encryption (kept in place) decrypts with it, and
    # appears nowhere in the clear.
    uris = nbd_uris(started)
    for disk, file_name in ((os_disk, "LinuxPassPhraseFileName"), (data_disk, "LinuxPassPhraseFileName_1_0")):
        plain = download(uris[disk], 1 << 30, tmp_path / f"{disk}.raw")
        assert PATTERN not in plain
        dump = luks_dump(tmp_path / f"{disk}.raw")
        assert "Version:       \t2" in dump and "aes-xts-plain64" in dump and "argon2id" in dump
        keyfile = tmp_path / f"{disk}.key"
        keyfile.write_bytes(passphrases[file_name])
        key = volume_key(tmp_path / f"{disk}.raw", keyfile)
        start, sector = data_offset(dump), sector_size(dump)
        cipher_text = plain[start + 3 * MiB:start + 3 * MiB + 4096]
        assert xts_decrypt(key, cipher_text, 3 * MiB, sector)[:len(PATTERN)] == PATTERN
    asrv.cli("vm", "stop", "-n", vm)

    # An export shows LUKS ciphertext only.
    vhd = tmp_path / "export.vhd"
    asrv.cli("disk", "download", "-n", data_disk, "--file", str(vhd))
    exported = vhd.read_bytes()
    assert exported[:6] == b"LUKS\xba\xbe" and PATTERN not in exported

    # Linux decrypts data volumes only while the OS volume is not encrypted.
    done = asrv.cli("vm", "encryption", "disable", "-n", vm, check=False)
    assert done.returncode != 0 and "OS volume" in done.stderr, done.stderr


def test_ade_luks1_format_all_opens_in_qemu_and_disables(asrv, tmp_path):
    data_disk = unique("data")
    vm = vm_with(asrv, data=[data_disk])
    uri = nbd_uris(asrv.cli("vm", "start", "-n", vm))[data_disk]
    write_pattern(uri, 40 * MiB, tmp_path)
    asrv.cli("vm", "stop", "-n", vm)
    asrv.cli("vm", "encryption", "enable", "-n", vm, "--disk-encryption-keyvault", VAULT, "--volume-type", "DATA",
             "--encrypt-format-all", "--luks-version", "LUKS1")
    passphrase, secret = passphrase_of(asrv, data_disk)
    assert secret.properties.content_type == "BEK" and "DiskEncryptionKeyEncryptionKeyURL" not in secret.properties.tags
    keyfile = tmp_path / "pass"
    keyfile.write_bytes(passphrase)

    uri = nbd_uris(asrv.cli("vm", "start", "-n", vm))[data_disk]
    plain = download(uri, 64 * MiB, tmp_path / "data.raw")
    assert PATTERN not in plain, "formatting discarded the old data"
    assert "Version:       \t1" in luks_dump(tmp_path / "data.raw")
    # qemu's luks driver opens the volume with the vault's passphrase, over NBD.
    host, port, export = re.match(r"nbd://([^:/]+):(\d+)/(.+)", uri).groups()
    image = (f"driver=luks,key-secret=sec0,file.driver=nbd,file.server.type=inet,file.server.host={host},"
             f"file.server.port={port},file.export={export}")
    secret_arg = f"secret,id=sec0,file={keyfile}"
    out = run("qemu-io", "--object", secret_arg, "--image-opts", image, "-c", "write -P 0xa5 1048576 65536",
              "-c", "read -P 0xa5 1048576 65536").decode()
    assert "Pattern verification failed" not in out, out
    asrv.cli("vm", "stop", "-n", vm)

    shown = asrv.cli("vm", "encryption", "show", "-n", vm)
    assert json.loads(shown["substatus"][0]["message"]) == {"os": "NotEncrypted", "data": "Encrypted"}
    asrv.cli("vm", "encryption", "disable", "-n", vm)
    shown = asrv.cli("vm", "encryption", "show", "-n", vm)
    assert json.loads(shown["substatus"][0]["message"])["data"] == "NotEncrypted"
    assert "encryptionSettingsCollection" not in asrv.cli("disk", "show", "-n", data_disk)["properties"]
    # Decrypted in place: what was written through LUKS is plain at the start of the disk.
    uri = nbd_uris(asrv.cli("vm", "start", "-n", vm))[data_disk]
    out = run("qemu-io", "-f", "raw", "-c", "read -P 0xa5 1048576 65536", uri).decode()
    assert "Pattern verification failed" not in out, out
    asrv.cli("vm", "stop", "-n", vm)
    # Once nothing is encrypted, the extension can go.
    from azure.mgmt.compute import ComputeManagementClient
    compute = asrv.management_client(ComputeManagementClient)
    compute.virtual_machine_extensions.begin_delete("default", vm, EXT).result()
    assert asrv.cli("vm", "encryption", "show", "-n", vm) is None


def refusal(done):
    assert done.returncode != 0, done.stdout
    return done.stderr


def test_ade_rules_are_refused_and_change_nothing(asrv):
    from azure.core.exceptions import HttpResponseError
    from azure.mgmt.compute import ComputeManagementClient
    from azure.mgmt.compute.models import VirtualMachineExtension, VirtualMachineExtensionProperties
    compute = asrv.management_client(ComputeManagementClient)
    data_disk = unique("data")
    vm = vm_with(asrv, data=[data_disk])
    enable = ["vm", "encryption", "enable", "-n", vm, "--volume-type", "DATA", "--force"]

    def unchanged():
        assert "encryptionSettingsCollection" not in asrv.cli("disk", "show", "-n", data_disk)["properties"]

    # The vault: enabled for disk encryption (az checks first; the server anyway), in the
    # machine's region.
    assert "not enabled for disk encryption" in refusal(asrv.cli(
        "vm", "encryption", "enable", "-n", vm, "--volume-type", "DATA", "--disk-encryption-keyvault", OFF_VAULT,
        check=False))
    assert "enabledForDiskEncryption" in refusal(asrv.cli(*enable, "--disk-encryption-keyvault", OFF_VAULT,
                                                         check=False))
    assert "region" in refusal(asrv.cli(*enable, "--disk-encryption-keyvault", US_VAULT, check=False))
    # The key-encryption key: RSA, versioned.
    ec = asrv.cli("keyvault", "key", "create", "--vault-name", VAULT, "-n", unique("ec"), "--kty", "EC")["key"]["kid"]
    assert "RSA" in refusal(asrv.cli(*enable, "--disk-encryption-keyvault", VAULT, "--key-encryption-key", ec,
                                     check=False))
    rsa = asrv.cli("keyvault", "key", "create", "--vault-name", VAULT, "-n", unique("kek"), "--kty", "RSA")["key"]["kid"]
    unversioned = rsa.rsplit("/", 1)[0]
    assert "versioned" in refusal(asrv.cli(*enable, "--disk-encryption-keyvault", VAULT, "--key-encryption-key",
                                           unversioned, check=False))
    assert "KeyEncryptionAlgorithm" in refusal(asrv.cli(
        *enable, "--disk-encryption-keyvault", VAULT, "--key-encryption-key", rsa, "--key-encryption-algorithm",
        "A256KW", check=False))
    # A running machine is not encrypted under its guest.
    asrv.cli("vm", "start", "-n", vm)
    assert "deallocate" in refusal(asrv.cli(*enable, "--disk-encryption-keyvault", VAULT, check=False))
    asrv.cli("vm", "stop", "-n", vm)
    unchanged()

    # Through the SDK: settings ADE does not know, other extensions, protected settings.
    def put(settings, **kw):
        properties = VirtualMachineExtensionProperties(
            publisher="Microsoft.Azure.Security", type=kw.get("type", EXT), type_handler_version="1.1",
            settings=settings, protected_settings=kw.get("protected"))
        ext = VirtualMachineExtension(location="westeurope", properties=properties)
        with pytest.raises(HttpResponseError) as err:
            compute.virtual_machine_extensions.begin_create_or_update("default", vm, EXT, ext).result()
        assert err.value.status_code == 400, err.value
        return err.value.message

    good = {"KeyVaultURL": asrv.vault_url(VAULT), "VolumeType": "Data"}
    assert "EncryptionOperation" in put({**good, "EncryptionOperation": "Scramble"})
    assert "VolumeType" in put({**good, "VolumeType": "Boot", "EncryptionOperation": "EnableEncryption"})
    assert "EncryptionOperation" in put(good)
    assert "CustomScript" in put({**good, "EncryptionOperation": "EnableEncryption"}, type="CustomScript")
    assert "protectedSettings" in put({**good, "EncryptionOperation": "EnableEncryption"},
                                      protected={"AADClientSecret": "x"})
    assert "KeyVaultURL" in put({"VolumeType": "Data", "EncryptionOperation": "EnableEncryption"})
    unchanged()

    # Decryption on Linux: data volumes only (az refuses first; --force reaches the server).
    assert "Only Data disks" in refusal(asrv.cli("vm", "encryption", "disable", "-n", vm, "--volume-type", "OS",
                                                 check=False))
    assert "data volumes" in refusal(asrv.cli("vm", "encryption", "disable", "-n", vm, "--volume-type", "ALL",
                                              "--force", check=False))

    # ADE and a customer-managed key exclude each other, both ways.
    key = asrv.cli("keyvault", "key", "create", "--vault-name", US_VAULT, "-n", unique("cmk"), "--kty", "RSA")
    asrv.cli("keyvault", "update", "-n", US_VAULT, "--enable-purge-protection", "true")
    des = asrv.cli("disk-encryption-set", "create", "-n", unique("des"), "-l", "eastus", "--key-url",
                   key["key"]["kid"], "--source-vault", US_VAULT)
    asrv.cli("role", "assignment", "create", "--assignee", des["identity"]["principalId"], "--role",
             "Key Vault Crypto Service Encryption User", "--scope", asrv.vault_scope(US_VAULT))
    cmk_disk = unique("cmk")
    asrv.cli("disk", "create", "-n", cmk_disk, "-z", "1", "-l", "eastus", "--disk-encryption-set", des["name"])
    cmk_vm = unique("vm")
    asrv.cli("vm", "create", "-n", cmk_vm, "--attach-disks", cmk_disk)
    assert "customer-managed" in refusal(asrv.cli("vm", "encryption", "enable", "-n", cmk_vm, "--volume-type",
                                                  "DATA", "--disk-encryption-keyvault", US_VAULT, check=False))
    asrv.cli("vm", "encryption", "enable", "-n", vm, "--volume-type", "DATA", "--disk-encryption-keyvault", VAULT)
    asrv.cli("vm", "encryption", "disable", "-n", vm)
    west_key = asrv.cli("keyvault", "key", "create", "--vault-name", VAULT, "-n", unique("cmk"), "--kty", "RSA")
    asrv.cli("keyvault", "update", "-n", VAULT, "--enable-purge-protection", "true")
    west_des = asrv.cli("disk-encryption-set", "create", "-n", unique("des"), "--key-url", west_key["key"]["kid"],
                        "--source-vault", VAULT)
    asrv.cli("role", "assignment", "create", "--assignee", west_des["identity"]["principalId"], "--role",
             "Key Vault Crypto Service Encryption User", "--scope", asrv.vault_scope(VAULT))
    assert "Azure Disk Encryption" in refusal(asrv.cli("disk", "update", "-n", data_disk, "--disk-encryption-set",
                                                       west_des["name"], "--encryption-type",
                                                       "EncryptionAtRestWithCustomerKey", check=False))
    assert asrv.cli("disk", "show", "-n", data_disk)["properties"]["encryption"]["type"] == \
        "EncryptionAtRestWithPlatformKey"


def test_revoked_keys_stop_the_start_and_vault_backups_bring_them_back(asrv):
    vault = BACKUP_VAULT
    data_disk = unique("data")
    vm = vm_with(asrv, data=[data_disk])
    kek_name = unique("kek")
    kek = asrv.cli("keyvault", "key", "create", "--vault-name", vault, "-n", kek_name, "--kty", "RSA")["key"]["kid"]
    asrv.cli("vm", "encryption", "enable", "-n", vm, "--disk-encryption-keyvault", vault, "--volume-type", "DATA",
             "--key-encryption-key", kek, "--key-encryption-algorithm", "RSA-OAEP-256")
    _, secret = passphrase_of(asrv, data_disk, vault)
    assert secret.properties.tags["DiskEncryptionKeyEncryptionAlgorithm"] == "RSA-OAEP-256"
    asrv.cli("vm", "start", "-n", vm)
    asrv.cli("vm", "stop", "-n", vm)

    def start_refused():
        done = asrv.cli("vm", "start", "-n", vm, check=False)
        assert done.returncode != 0, done.stdout
        return done.stderr

    def starts():
        started = asrv.cli("vm", "start", "-n", vm)
        assert "bekVolume" in started["properties"]["storageProfile"]
        asrv.cli("vm", "stop", "-n", vm)

    # The key-encryption key disabled: the start fails naming the key.
    asrv.cli("keyvault", "key", "set-attributes", "--vault-name", vault, "-n", kek_name, "--enabled", "false")
    assert kek in start_refused()
    asrv.cli("keyvault", "key", "set-attributes", "--vault-name", vault, "-n", kek_name, "--enabled", "true")
    # The vault no longer enabled for disk encryption: the secret cannot be read.
    asrv.cli("keyvault", "update", "-n", vault, "--enabled-for-disk-encryption", "false")
    refused = start_refused()
    assert secret.id in refused and "enabledForDiskEncryption" in refused
    asrv.cli("keyvault", "update", "-n", vault, "--enabled-for-disk-encryption", "true")
    starts()

    # Deleted, the machine cannot start; recovered, it can.
    secrets, keys = secret_client(asrv, vault), key_client(asrv, vault)
    secrets.begin_delete_secret(secret.name).result()
    assert secret.id in start_refused()
    secrets.begin_recover_deleted_secret(secret.name).result()
    starts()
    # Backed up with the vault's own backup, deleted and purged, restored: it starts again.
    secret_backup = secrets.backup_secret(secret.name)
    key_backup = keys.backup_key(kek_name)
    secrets.begin_delete_secret(secret.name).result()
    secrets.purge_deleted_secret(secret.name)
    keys.begin_delete_key(kek_name).result()
    keys.purge_deleted_key(kek_name)
    assert secret.id in start_refused()
    secrets.restore_secret_backup(secret_backup)
    assert kek in start_refused()
    keys.restore_key_backup(key_backup)
    starts()

    # The secret was stored by the platform identity alone, which also read it and
    # unwrapped it at each start: all in the audit log.
    query = ("AzureDiagnostics | where OperationName in ('SecretSet', 'SecretGet', 'KeyUnwrap') "
             f"and (id_s contains '{secret.name}' or id_s contains '{kek_name}') and ResultSignature == 'OK' "
             "| distinct OperationName, identity_claim_xms_mirid_s")
    done = asrv.cli("monitor", "query", "-o", "json", query, check=False)
    assert done.returncode == 0, done.stderr
    rows = {(r["OperationName"], r["identity_claim_xms_mirid_s"]) for r in json.loads(done.stdout)}
    platform = "/providers/Microsoft.Compute/azureDiskEncryption"
    assert {("SecretSet", platform), ("SecretGet", platform), ("KeyUnwrap", platform)} <= rows, rows
    assert [r for r in rows if r[0] == "SecretSet"] == [("SecretSet", platform)], rows
