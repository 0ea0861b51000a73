"""Snapshots (Microsoft.Compute/snapshots) through azure-mgmt-compute, the blob client and
the CLI: a snapshot is isolated from later writes, incremental snapshots of one disk list
what changed between them (Azure's page range diff), disks are made from snapshots and
disks, and every encryption rule is refused by name. scripts/test also runs this module
with the blocks in Azurite."""
import subprocess
import time

import pytest
import requests

from conftest import Server
from test_disks import assert_io, error_of, new_des, new_key, qemu_io, started_vm, unique

RG = "default"


@pytest.fixture(scope="module")
def ssrv(workdir):
    # Copies to another region move 16 MiB a second, so a test sees them in progress.
    # Eight incremental snapshots per disk per hour, where Azure allows seven in 5 minutes.
    srv = Server(workdir / "snapshots", "--key-check-interval", "1s", "--purge-interval", "1s",
                 "--blob-garbage-grace", "0s", "--snapshot-copy-bandwidth", str(16 << 20),
                 "--incremental-snapshot-limits", "8,1h,500").start()
    srv.cli("keyvault", "create", "-n", "sdk-disk", "-l", "westeurope", "--enable-purge-protection", "true")
    yield srv
    if srv.proc.poll() is None:
        assert srv.cli("monitor", "audit", "verify")["verified"] is True
        assert srv.stop() == 0, srv.log()


def compute(srv):
    from azure.mgmt.compute import ComputeManagementClient
    return srv.management_client(ComputeManagementClient)


def snapshot_of(srv, source_id, name=None, incremental=True, **extra):
    from azure.mgmt.compute.models import CreationData, Snapshot
    name = name or unique("snap")
    body = Snapshot(location=extra.pop("location", "westeurope"), incremental=incremental,
                    creation_data=CreationData(create_option="Copy", source_resource_id=source_id), **extra)
    return compute(srv).snapshots.begin_create_or_update(RG, name, body).result()


def read_access(srv, snapshot):
    from azure.mgmt.compute.models import GrantAccessData
    return compute(srv).snapshots.begin_grant_access(
        RG, snapshot, GrantAccessData(access="Read", duration_in_seconds=600)).result().access_sas


def blob(srv, sas):
    from azure.storage.blob import BlobClient
    return BlobClient.from_blob_url(sas, connection_verify=srv.env["ATREST_CA"])


def test_snapshots_are_isolated_and_list_their_changes(ssrv):
    disk_name = unique("d")
    disk = ssrv.cli("disk", "create", "-n", disk_name, "-z", "1")
    vm, (uri,) = started_vm(ssrv, disk_name)
    assert_io(uri, "write -P 0xa1 0 64k", "write -P 0xa2 2M 8k", "write -P 0xa3 5M 4k")
    # Taken while the VM runs: what the VM wrote and flushed is in it.
    first = snapshot_of(ssrv, disk["id"])
    assert first.incremental is True and first.completion_percent == 100
    assert first.incremental_snapshot_family_id == disk["properties"]["uniqueId"]
    assert first.creation_data.source_resource_id == disk["id"]
    assert first.creation_data.source_unique_id == disk["properties"]["uniqueId"]
    assert first.disk_size_bytes == 1 << 30 and first.disk_size_gb == 1
    assert first.encryption.type == "EncryptionAtRestWithPlatformKey"
    # Later writes: one changed range, one cleared, one new.
    assert_io(uri, "write -P 0xb1 16k 8k", "write -z 2M 8k", "write -P 0xb2 700M 4k")
    second = snapshot_of(ssrv, disk["id"])
    assert second.incremental_snapshot_family_id == first.incremental_snapshot_family_id

    sas1, sas2 = read_access(ssrv, first.name), read_access(ssrv, second.name)
    assert ssrv.cli("snapshot", "show", "-n", first.name)["properties"]["diskState"] == "ActiveSAS"
    # The first snapshot never saw the later writes.
    head = blob(ssrv, sas1).download_blob(offset=0, length=64 * 1024).readall()
    assert head == b"\xa1" * 65536
    assert blob(ssrv, sas1).download_blob(offset=2 << 20, length=8192).readall() == b"\xa2" * 8192
    assert blob(ssrv, sas2).download_blob(offset=16 * 1024, length=8192).readall() == b"\xb1" * 8192

    # Azure's page range diff of two snapshots of one family: what changed, what was cleared.
    changed, cleared = blob(ssrv, sas2).get_page_range_diff_for_managed_disk(sas1)
    assert changed == [{"start": 16384, "end": 24575}, {"start": 700 << 20, "end": (700 << 20) + 4095}]
    assert cleared == [{"start": 2 << 20, "end": (2 << 20) + 8191}]
    # Without a previous snapshot: the ranges holding data, and the footer.
    ranges = [(r.start, r.end, r.cleared) for r in blob(ssrv, sas1).list_page_ranges()]
    assert ranges == [(0, 65535, False), (2 << 20, (2 << 20) + 8191, False),
                      (5 << 20, (5 << 20) + 4095, False), (1 << 30, (1 << 30) + 511, False)]

    # A full snapshot is of another family: no diff against it.
    full = snapshot_of(ssrv, disk["id"], incremental=False)
    assert full.incremental is False and full.incremental_snapshot_family_id is None
    from azure.core.exceptions import HttpResponseError
    with pytest.raises(HttpResponseError) as err:
        blob(ssrv, read_access(ssrv, full.name)).get_page_range_diff_for_managed_disk(sas1)
    assert err.value.status_code == 400 and "same disk" in str(err.value)

    # A disk made from the first snapshot reads what the snapshot holds.
    from azure.mgmt.compute.models import CreationData, Disk
    compute(ssrv).snapshots.begin_revoke_access(RG, first.name).result()
    copy = compute(ssrv).disks.begin_create_or_update(RG, unique("from-snap"), Disk(
        location="westeurope", disk_size_gb=2,
        creation_data=CreationData(create_option="Copy", source_resource_id=first.id))).result()
    assert copy.creation_data.create_option == "Copy" and copy.disk_size_gb == 2
    _, (copy_uri,) = started_vm(ssrv, copy.name)
    assert_io(copy_uri, "read -P 0xa1 0 64k", "read -P 0xa2 2M 8k", "read -P 0 700M 4k")
    # Writes to the copy change neither the snapshot nor the disk.
    assert_io(copy_uri, "write -P 0xcc 0 64k")
    assert_io(uri, "read -P 0xa1 0 16k", "read -P 0xb1 16k 8k")
    assert blob(ssrv, read_access(ssrv, first.name)).download_blob(offset=0, length=4096).readall() == b"\xa1" * 4096

    # A snapshot outlives its disk: the chunks it names stay.
    ssrv.cli("vm", "delete", "-n", vm)
    ssrv.cli("disk", "delete", "-n", disk_name)
    assert blob(ssrv, sas2).download_blob(offset=700 << 20, length=4096).readall() == b"\xb2" * 4096


def test_snapshots_keep_their_keys_and_the_rules_are_refused_by_name(ssrv):
    from azure.core.exceptions import HttpResponseError
    from azure.mgmt.compute.models import CreationData, Disk, Encryption, Snapshot
    kid, _ = new_key(ssrv)
    des = new_des(ssrv, kid)
    other = new_des(ssrv, new_key(ssrv)[0])
    disk_name = unique("cmk")
    disk = ssrv.cli("disk", "create", "-n", disk_name, "-z", "1", "--disk-encryption-set", des["name"])
    vm, (uri,) = started_vm(ssrv, disk_name)
    assert_io(uri, "write -P 0x5e 0 1M")
    ssrv.cli("vm", "stop", "-n", vm)

    snap = snapshot_of(ssrv, disk["id"])
    assert snap.encryption.type == "EncryptionAtRestWithCustomerKey"
    assert snap.encryption.disk_encryption_set_id.lower() == des["id"].lower()
    listed = ssrv.cli("snapshot", "list")
    assert any(s["name"] == snap.name for s in listed)

    def refused(call, status, *words):
        with pytest.raises(HttpResponseError) as err:
            call()
        assert err.value.status_code == status, str(err.value)
        for w in words:
            assert w in str(err.value), str(err.value)

    before = len(ssrv.cli("snapshot", "list"))
    refused(lambda: snapshot_of(ssrv, disk["id"], encryption=Encryption(disk_encryption_set_id=other["id"])),
            400, "encryption.diskEncryptionSetId", "incremental")
    refused(lambda: snapshot_of(ssrv, disk["id"], encryption=Encryption(type="EncryptionAtRestWithPlatformKey")),
            400, "encryption.type")
    refused(lambda: snapshot_of(ssrv, disk["id"], location="eastus"), 400, "location")
    refused(lambda: snapshot_of(ssrv, disk["id"] + "-missing"), 400, "sourceResourceId")
    refused(lambda: compute(ssrv).snapshots.begin_create_or_update(RG, unique("snap"), Snapshot(
        location="westeurope", creation_data=CreationData(create_option="Empty"))).result(), 400, "createOption")
    refused(lambda: snapshot_of(ssrv, disk["id"], name=snap.name, incremental=False), 400, "incremental")
    refused(lambda: compute(ssrv).disks.begin_create_or_update(RG, unique("d"), Disk(
        location="westeurope", creation_data=CreationData(create_option="Copy", source_resource_id=snap.id),
        encryption=Encryption(type="EncryptionAtRestWithPlatformKey"))).result(), 400, "encryption.type")
    assert len(ssrv.cli("snapshot", "list")) == before, "nothing was created"

    # The disk cannot move to another set while its incremental snapshots use this one.
    done = ssrv.cli("disk", "update", "-n", disk_name, "--disk-encryption-set", other["name"], check=False)
    assert "409" in error_of(done) and snap.name in done.stderr and "encryption.diskEncryptionSetId" in done.stderr
    # A full snapshot may move to another set: its data key is rewrapped, not re-encrypted.
    moved = snapshot_of(ssrv, disk["id"], incremental=False, encryption=Encryption(disk_encryption_set_id=other["id"]))
    assert moved.encryption.disk_encryption_set_id.lower() == other["id"].lower()
    made = compute(ssrv).disks.begin_create_or_update(RG, unique("d"), Disk(
        location="westeurope", creation_data=CreationData(create_option="Copy", source_resource_id=moved.id))).result()
    assert made.encryption.disk_encryption_set_id.lower() == other["id"].lower()
    _, (made_uri,) = started_vm(ssrv, made.name)
    assert_io(made_uri, "read -P 0x5e 0 1M")

    # The disk's key disabled: its snapshot cannot be exported either.
    ssrv.cli("keyvault", "key", "set-attributes", "--vault-name", "sdk-disk", "-n", kid.split("/")[4], "--enabled", "false")
    refused(lambda: read_access(ssrv, snap.name), 409, "KeyVaultKeyUnusable", "disabled")
    ssrv.cli("keyvault", "key", "set-attributes", "--vault-name", "sdk-disk", "-n", kid.split("/")[4], "--enabled", "true")
    assert blob(ssrv, read_access(ssrv, snap.name)).download_blob(offset=0, length=4096).readall() == b"\x5e" * 4096


def test_incremental_snapshot_limits_and_the_cli(ssrv):
    disk_name = unique("d")
    disk = ssrv.cli("disk", "create", "-n", disk_name, "-z", "1")
    names = []
    for _ in range(8):
        shown = ssrv.cli("snapshot", "create", "-n", unique("s"), "--source", disk_name, "--incremental", "true")
        assert shown["properties"]["incremental"] is True
        assert shown["properties"]["creationData"]["sourceResourceId"] == disk["id"]
        names.append(shown["name"])
    done = ssrv.cli("snapshot", "create", "-n", unique("s"), "--source", disk_name, "--incremental", "true", check=False)
    assert "409" in error_of(done) and "8 incremental snapshots" in done.stderr and "3600 seconds" in done.stderr
    # Full snapshots are not limited so.
    full = ssrv.cli("snapshot", "create", "-n", unique("s"), "--source", disk_name)
    assert full["properties"]["incremental"] is False
    # az's other verbs.
    assert ssrv.cli("snapshot", "show", "-n", names[0])["name"] == names[0]
    updated = ssrv.cli("snapshot", "update", "-n", names[0], "--network-access-policy", "DenyAll")
    assert updated["properties"]["networkAccessPolicy"] == "DenyAll"
    assert "DenyAll" in error_of(ssrv.cli("snapshot", "grant-access", "-n", names[0], check=False))
    url = ssrv.cli("snapshot", "grant-access", "-n", names[1], "--duration-in-seconds", "60")["accessSas"]
    assert requests.head(url, verify=ssrv.env["ATREST_CA"], timeout=30).status_code == 200
    ssrv.cli("snapshot", "revoke-access", "-n", names[1])
    assert requests.head(url, verify=ssrv.env["ATREST_CA"], timeout=30).status_code == 403
    copy = ssrv.cli("disk", "create", "-n", unique("d"), "--source", names[1])
    assert copy["properties"]["creationData"]["createOption"] == "Copy"
    for name in names:
        ssrv.cli("snapshot", "delete", "-n", name)
    assert not any(s["name"] in names for s in ssrv.cli("snapshot", "list"))
    assert ssrv.cli("snapshot", "show", "-n", names[0], check=False).returncode != 0


def wait_copied(srv, name, timeout=60):
    """Polls a CopyStart copy until it ends; returns the last state and every percentage seen."""
    seen = []
    deadline = time.time() + timeout
    while time.time() < deadline:
        shown = compute(srv).snapshots.get(RG, name)
        seen.append(shown.completion_percent)
        if shown.completion_percent == 100 or shown.copy_completion_error:
            return shown, seen
        time.sleep(0.1)
    raise AssertionError(f"copy {name} did not end: {seen[-5:]}")


def test_copy_start_copies_an_incremental_snapshot_to_another_region(ssrv):
    from azure.core.exceptions import HttpResponseError
    from azure.mgmt.compute.models import CreationData, Encryption, Snapshot
    disk_name = unique("d")
    disk = ssrv.cli("disk", "create", "-n", disk_name, "-z", "1")
    vm, (uri,) = started_vm(ssrv, disk_name)
    assert_io(uri, "write -P 0x7e 0 32M", "write -P 0x7f 900M 4k")
    source = snapshot_of(ssrv, disk["id"])

    def copy_start(name, source_id, **extra):
        body = Snapshot(location=extra.pop("location", "eastus"), incremental=True,
                        creation_data=CreationData(create_option="CopyStart", source_resource_id=source_id), **extra)
        return compute(ssrv).snapshots.begin_create_or_update(RG, name, body).result()

    started = copy_start(unique("copy"), source.id)
    assert started.location == "eastus" and started.creation_data.create_option == "CopyStart"
    assert started.completion_percent < 100
    # Its data is not complete yet: no export.
    with pytest.raises(HttpResponseError) as err:
        read_access(ssrv, started.name)
    assert err.value.status_code == 409 and "still being copied" in str(err.value)
    done, seen = wait_copied(ssrv, started.name)
    assert done.copy_completion_error is None and done.completion_percent == 100
    assert any(0 < p < 100 for p in seen), seen
    # Under the target region's own key: a new family, the data the same.
    assert done.encryption.type == "EncryptionAtRestWithPlatformKey"
    assert done.incremental_snapshot_family_id == done.unique_id != source.incremental_snapshot_family_id
    sas = read_access(ssrv, done.name)
    assert blob(ssrv, sas).download_blob(offset=0, length=1 << 20).readall() == b"\x7e" * (1 << 20)
    assert blob(ssrv, sas).download_blob(offset=900 << 20, length=4096).readall() == b"\x7f" * 4096
    assert blob(ssrv, sas).download_blob(offset=64 << 20, length=4096).readall() == bytes(4096)

    # A customer-key snapshot needs a disk encryption set in the target region.
    kid, _ = new_key(ssrv)
    des = new_des(ssrv, kid)
    cmk_disk = ssrv.cli("disk", "create", "-n", unique("cmk"), "-z", "1", "--disk-encryption-set", des["name"])
    cmk_snap = snapshot_of(ssrv, cmk_disk["id"])
    for extra, words in [({}, ["encryption.diskEncryptionSetId", "eastus"]),
                         ({"encryption": Encryption(disk_encryption_set_id=des["id"])}, ["location"]),
                         ({"encryption": Encryption(type="EncryptionAtRestWithPlatformKey")}, ["customer-managed key"])]:
        with pytest.raises(HttpResponseError) as err:
            copy_start(unique("copy"), cmk_snap.id, **extra)
        assert err.value.status_code == 400 and all(w in str(err.value) for w in words), str(err.value)
    ssrv.cli("keyvault", "create", "-n", "sdk-disk-us", "-l", "eastus", "--enable-purge-protection", "true")
    us_kid = ssrv.cli("keyvault", "key", "create", "--vault-name", "sdk-disk-us", "-n", unique("cmk"),
                      "--kty", "RSA", "--size", "2048")["key"]["kid"]
    us_des = ssrv.cli("disk-encryption-set", "create", "-n", unique("des"), "-l", "eastus", "--key-url", us_kid,
                      "--source-vault", "sdk-disk-us")
    ssrv.cli("role", "assignment", "create", "--assignee", us_des["identity"]["principalId"],
             "--role", "Key Vault Crypto Service Encryption User", "--scope", ssrv.vault_scope("sdk-disk-us"))
    moved, _ = wait_copied(ssrv, copy_start(unique("copy"), cmk_snap.id,
                                            encryption=Encryption(disk_encryption_set_id=us_des["id"])).name)
    assert moved.completion_percent == 100
    assert moved.encryption.disk_encryption_set_id.lower() == us_des["id"].lower()
    # A CopyStart of anything but an incremental snapshot is refused.
    with pytest.raises(HttpResponseError) as err:
        copy_start(unique("copy"), disk["id"])
    assert err.value.status_code == 400 and "incremental snapshot" in str(err.value)

    # The source deleted while the copy runs: the copy stops, saying why.
    assert_io(uri, "write -P 0x11 100M 96M")
    big = snapshot_of(ssrv, disk["id"])
    doomed = ssrv.cli("snapshot", "create", "-n", unique("copy"), "--source", big.id, "--copy-start", "true",
                      "-l", "eastus")
    assert doomed["properties"]["completionPercent"] < 100
    ssrv.cli("snapshot", "delete", "-n", big.name)
    stopped, _ = wait_copied(ssrv, doomed["name"])
    assert stopped.copy_completion_error.error_code == "CopySourceNotFound", stopped.copy_completion_error
    assert stopped.completion_percent < 100
    ssrv.cli("vm", "delete", "-n", vm)


def test_images_hold_copies_that_disks_are_made_from(ssrv):
    from azure.core.exceptions import HttpResponseError
    from azure.mgmt.compute.models import (CreationData, Disk, Image, ImageDataDisk, ImageDiskReference,
                                           ImageOSDisk, ImageStorageProfile, SubResource)
    os_name = unique("os")
    os_disk = ssrv.cli("disk", "create", "-n", os_name, "-z", "1")
    kid, _ = new_key(ssrv)
    des = new_des(ssrv, kid)
    data_name = unique("data")
    data_disk = ssrv.cli("disk", "create", "-n", data_name, "-z", "1", "--disk-encryption-set", des["name"])
    vm, (os_uri, data_uri) = started_vm(ssrv, os_name, data_name)
    assert_io(os_uri, "write -P 0x05 0 1M")
    assert_io(data_uri, "write -P 0xda 4M 64k")
    data_snap = snapshot_of(ssrv, data_disk["id"])
    # An image of a running VM is refused; of its disks, it is taken after a flush.
    images = compute(ssrv).images
    with pytest.raises(HttpResponseError) as err:
        images.begin_create_or_update(RG, unique("img"), Image(
            location="westeurope", source_virtual_machine=SubResource(
                id=ssrv.cli("vm", "show", "-n", vm)["id"]))).result()
    assert err.value.status_code == 409 and "running" in str(err.value)

    name = unique("img")
    image = images.begin_create_or_update(RG, name, Image(
        location="westeurope", hyper_v_generation="V2", storage_profile=ImageStorageProfile(
            os_disk=ImageOSDisk(os_type="Linux", os_state="Generalized", managed_disk=SubResource(id=os_disk["id"])),
            data_disks=[ImageDataDisk(lun=0, snapshot=SubResource(id=data_snap.id))]))).result()
    assert image.provisioning_state == "Succeeded" and image.hyper_v_generation == "V2"
    assert image.storage_profile.os_disk.managed_disk.id == os_disk["id"]
    assert image.storage_profile.os_disk.os_type == "Linux"
    assert image.storage_profile.data_disks[0].snapshot.id == data_snap.id
    assert image.storage_profile.data_disks[0].disk_encryption_set.id.lower() == des["id"].lower()
    assert any(i.name == name for i in images.list_by_resource_group(RG))
    # Later writes to the disks do not reach the image.
    assert_io(os_uri, "write -P 0x66 0 4k")
    ssrv.cli("vm", "stop", "-n", vm)

    def from_image(lun=None):
        return compute(ssrv).disks.begin_create_or_update(RG, unique("fi"), Disk(
            location="westeurope", creation_data=CreationData(
                create_option="FromImage", image_reference=ImageDiskReference(id=image.id, lun=lun)))).result()

    made_os, made_data = from_image(), from_image(0)
    assert made_os.creation_data.create_option == "FromImage"
    assert made_os.creation_data.image_reference.id == image.id
    assert made_data.creation_data.image_reference.lun == 0
    assert made_data.encryption.disk_encryption_set_id.lower() == des["id"].lower()
    _, (a, b) = started_vm(ssrv, made_os.name, made_data.name)
    assert_io(a, "read -P 0x05 0 1M")
    assert_io(b, "read -P 0xda 4M 64k")

    def refused(call, status, *words):
        with pytest.raises(HttpResponseError) as err:
            call()
        assert err.value.status_code == status and all(w in str(err.value) for w in words), str(err.value)

    refused(lambda: from_image(7), 400, "lun 7")
    refused(lambda: images.begin_create_or_update(RG, unique("img"), Image(
        location="westeurope", storage_profile=ImageStorageProfile(os_disk=ImageOSDisk(
            os_type="Linux", os_state="Generalized", blob_uri="https://x.blob/vhd")))).result(), 400, "blobUri")
    refused(lambda: images.begin_create_or_update(RG, unique("img"), Image(
        location="westeurope", storage_profile=ImageStorageProfile(os_disk=ImageOSDisk(
            os_type="Plan9", os_state="Generalized", managed_disk=SubResource(id=os_disk["id"]))))).result(),
            400, "osType")
    refused(lambda: images.begin_create_or_update(RG, unique("img"), Image(
        location="eastus", storage_profile=ImageStorageProfile(os_disk=ImageOSDisk(
            os_type="Linux", os_state="Generalized", managed_disk=SubResource(id=os_disk["id"]))))).result(),
            400, "location")
    refused(lambda: images.begin_create_or_update(RG, name, Image(
        location="westeurope", storage_profile=ImageStorageProfile(os_disk=ImageOSDisk(
            os_type="Linux", os_state="Generalized", managed_disk=SubResource(id=data_disk["id"]))))).result(),
            400, "storageProfile")
    assert ssrv.cli("image", "show", "-n", name)["properties"]["storageProfile"]["osDisk"]["managedDisk"]["id"] == os_disk["id"]

    # The CLI: an image of a stopped VM, a disk from its data disk; deleting the image
    # leaves the disks made from it.
    by_vm = ssrv.cli("image", "create", "-n", unique("img"), "--source", vm)
    assert [d["lun"] for d in by_vm["properties"]["storageProfile"]["dataDisks"]] == [0, 1]
    copy = ssrv.cli("disk", "create", "-n", unique("d"), "--image-reference", by_vm["name"],
                    "--image-reference-lun", "1")
    assert copy["properties"]["creationData"]["imageReference"]["lun"] == 1
    ssrv.cli("image", "delete", "-n", by_vm["name"])
    images.begin_delete(RG, name).result()
    assert not any(i["name"] in (name, by_vm["name"]) for i in ssrv.cli("image", "list"))
    _, (c,) = started_vm(ssrv, copy["name"])
    assert_io(c, "read -P 0xda 4M 64k")
