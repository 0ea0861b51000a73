"""Site Recovery (Azure to Azure) through Microsoft's client
(azure-mgmt-recoveryservicessiterecovery): fabrics for two regions, containers, a
replication policy, a container mapping, replication of a running machine with a
customer-key disk and a platform-key disk, each replica under the target region's keys,
continuous cycles driven by the scheduler's clock, recovery points, test failover,
failover, commit, re-protect and failback; the rules refused; and a server killed while
it replicates."""
import base64
import json
import os
import signal
import time
import uuid

import pytest

from conftest import Server, qemu_io, unique

RG = "default"
MiB = 1 << 20
SOURCE, TARGET = "westeurope", "eastus"


@pytest.fixture(scope="module")
def rsrv(workdir):
    srv = Server(workdir / "asr").start()
    yield srv
    if srv.proc.poll() is None:
        assert srv.cli("monitor", "audit", "verify")["verified"] is True
        assert srv.stop() == 0, srv.log()


def client(srv):
    from azure.mgmt.recoveryservicessiterecovery import SiteRecoveryManagementClient
    return srv.management_client(SiteRecoveryManagementClient)


def new_des(srv, location):
    """A disk encryption set in `location` with its key vault and role."""
    kv = unique("akv")
    srv.cli("keyvault", "create", "-n", kv, "-l", location, "--enable-purge-protection", "true")
    key = unique("cmk")
    kid = srv.cli("keyvault", "key", "create", "--vault-name", kv, "-n", key, "--kty", "RSA")["key"]["kid"]
    des = srv.cli("disk-encryption-set", "create", "-n", unique("des"), "-l", location, "--key-url", kid,
                  "--source-vault", kv)
    srv.cli("role", "assignment", "create", "--assignee", des["identity"]["principalId"], "--role",
            "Key Vault Crypto Service Encryption User", "--scope", srv.vault_scope(kv))
    return des, kv, key


def site(srv):
    """A Recovery Services vault in the target region with both regions' fabrics and
    containers, a 24-hour policy, and the mapping from the source container to the
    target's. Returns (client, vault name, source container, target container, policy)."""
    from azure.mgmt.recoveryservices import RecoveryServicesClient
    from azure.mgmt.recoveryservices.models import IdentityData, Sku, Vault, VaultProperties
    from azure.mgmt.recoveryservicessiterecovery.models import (
        A2AContainerCreationInput, A2AContainerMappingInput, A2APolicyCreationInput, AzureFabricCreationInput,
        CreatePolicyInput, CreatePolicyInputProperties, CreateProtectionContainerInput,
        CreateProtectionContainerInputProperties, CreateProtectionContainerMappingInput,
        CreateProtectionContainerMappingInputProperties, FabricCreationInput, FabricCreationInputProperties)
    vault = unique("rsv")
    srv.management_client(RecoveryServicesClient).vaults.begin_create_or_update(
        RG, vault, Vault(location=TARGET, sku=Sku(name="Standard"), identity=IdentityData(type="SystemAssigned"),
                         properties=VaultProperties(public_network_access="Enabled"))).result()
    asr = client(srv)
    containers = {}
    for fabric, location in [("asr-we", SOURCE), ("asr-us", TARGET)]:
        made = asr.replication_fabrics.begin_create(RG, vault, fabric, FabricCreationInput(
            properties=FabricCreationInputProperties(custom_details=AzureFabricCreationInput(location=location)))).result()
        assert made.properties.custom_details.location == location
        containers[fabric] = asr.replication_protection_containers.begin_create(
            RG, vault, fabric, f"{fabric}-container", CreateProtectionContainerInput(
                properties=CreateProtectionContainerInputProperties(
                    provider_specific_input=[A2AContainerCreationInput()]))).result()
    policy = asr.replication_policies.begin_create(RG, vault, "24-hour-retention", CreatePolicyInput(
        properties=CreatePolicyInputProperties(provider_specific_input=A2APolicyCreationInput(
            recovery_point_history=1440, crash_consistent_frequency_in_minutes=5,
            app_consistent_frequency_in_minutes=60, multi_vm_sync_status="Disable")))).result()
    assert policy.properties.provider_specific_details.recovery_point_history == 1440
    mapping = asr.replication_protection_container_mappings.begin_create(
        RG, vault, "asr-we", containers["asr-we"].name, "we-to-us", CreateProtectionContainerMappingInput(
            properties=CreateProtectionContainerMappingInputProperties(
                target_protection_container_id=containers["asr-us"].id, policy_id=policy.id,
                provider_specific_input=A2AContainerMappingInput()))).result()
    assert mapping.properties.state == "Paired"
    assert mapping.properties.target_protection_container_id == containers["asr-us"].id
    source = asr.replication_protection_containers.get(RG, vault, "asr-we", containers["asr-we"].name)
    assert (source.properties.role, source.properties.pairing_status) == ("Primary", "Paired")
    return asr, vault, containers["asr-we"], containers["asr-us"], policy


def enable(asr, vault, source, target, policy, item, vm_id, disks):
    """Enables replication; `disks`: (disk id, recovery disk encryption set id or None)."""
    from azure.mgmt.recoveryservicessiterecovery.models import (
        A2AEnableProtectionInput, A2AVmManagedDiskInputDetails, EnableProtectionInput,
        EnableProtectionInputProperties)
    sub_rg = vm_id.split("/providers/")[0]
    managed = [A2AVmManagedDiskInputDetails(disk_id=d, primary_staging_azure_storage_account_id="",
                                            recovery_resource_group_id=sub_rg + "-asr",
                                            recovery_disk_encryption_set_id=des)
               for d, des in disks]
    return asr.replication_protected_items.begin_create(
        RG, vault, "asr-we", source.name, item, EnableProtectionInput(properties=EnableProtectionInputProperties(
            policy_id=policy.id, provider_specific_details=A2AEnableProtectionInput(
                fabric_object_id=vm_id, recovery_container_id=target.id,
                recovery_resource_group_id=sub_rg + "-asr", vm_managed_disks=managed)))).result()


def points_of(asr, vault, source, item):
    return list(asr.recovery_points.list_by_replication_protected_items(RG, vault, "asr-we", source.name, item))


def wait_points(asr, vault, source, item, count, timeout=120):
    deadline = time.time() + timeout
    while True:
        points = points_of(asr, vault, source, item)
        if len(points) >= count:
            return points
        assert time.time() < deadline, f"{len(points)} recovery points after {timeout} s"
        time.sleep(0.5)


def failover_input(direction="PrimaryToRecovery", point=None, shut_down=False):
    from azure.mgmt.recoveryservicessiterecovery.models import (
        A2AUnplannedFailoverInput, UnplannedFailoverInput, UnplannedFailoverInputProperties)
    return UnplannedFailoverInput(properties=UnplannedFailoverInputProperties(
        failover_direction=direction, source_site_operations="Required" if shut_down else "NotRequired",
        provider_specific_details=A2AUnplannedFailoverInput(recovery_point_id=point)))


def data_disks(srv, rg, vm):
    return srv.cli("vm", "show", "-g", rg, "-n", vm)["properties"]["storageProfile"]["dataDisks"]


def test_replicate_fail_over_and_fail_back_under_each_regions_keys(rsrv):
    from azure.core.exceptions import HttpResponseError
    from azure.mgmt.recoveryservicessiterecovery.models import (
        A2ATestFailoverInput, TestFailoverCleanupInput, TestFailoverCleanupInputProperties, TestFailoverInput,
        TestFailoverInputProperties)
    asr, vault, source, target, policy = site(rsrv)
    we_des, we_kv, we_key = new_des(rsrv, SOURCE)
    us_des, us_kv, us_key = new_des(rsrv, TARGET)

    # A running machine with a customer-key disk and a platform-key disk.
    cmk_disk, pmk_disk, vm = unique("d"), unique("d"), unique("vm")
    rsrv.cli("disk", "create", "-n", cmk_disk, "-z", "1", "-l", SOURCE, "--disk-encryption-set", we_des["name"])
    rsrv.cli("disk", "create", "-n", pmk_disk, "-z", "1", "-l", SOURCE)
    rsrv.cli("vm", "create", "-n", vm, "--attach-disks", cmk_disk, pmk_disk)
    started = rsrv.cli("vm", "start", "-n", vm)
    vm_id = started["id"]
    uris = [d["nbdUri"] for d in started["properties"]["storageProfile"]["dataDisks"]]
    for uri in uris:
        qemu_io(uri, f"write -P 0x11 0 {MiB}")
    disk_ids = [rsrv.cli("disk", "show", "-n", d)["id"] for d in (cmk_disk, pmk_disk)]

    # The customer-key disk needs a set in the target region: none, or the source's, refused.
    item = unique("item")
    for des, words in [(None, ["disk encryption set", TARGET]), (we_des["id"], ["location"])]:
        with pytest.raises(HttpResponseError) as err:
            enable(asr, vault, source, target, policy, item, vm_id, [(disk_ids[0], des), (disk_ids[1], None)])
        assert err.value.status_code == 400 and all(w in err.value.message for w in words), err.value.message
    assert list(asr.replication_protected_items.list_by_replication_protection_containers(
        RG, vault, "asr-we", source.name)) == []

    replicated = enable(asr, vault, source, target, policy, item, vm_id,
                        [(disk_ids[0], us_des["id"]), (disk_ids[1], None)])
    assert replicated.properties.protection_state == "Protected"
    details = replicated.properties.provider_specific_details
    assert (details.primary_fabric_location, details.recovery_fabric_location) == (SOURCE, TARGET)
    by_name = {d.disk_name: d for d in details.protected_managed_disks}
    assert by_name[cmk_disk].recovery_disk_encryption_set_id == us_des["id"]
    assert by_name[cmk_disk].primary_disk_encryption_set_id.lower() == we_des["id"].lower()
    assert by_name[pmk_disk].recovery_disk_encryption_set_id is None

    # The first cycle ships everything; writes after it arrive with the next one, which the
    # policy's frequency brings (the scheduler's clock moved forward).
    [first] = wait_points(asr, vault, source, item, 1)
    for uri in uris:
        qemu_io(uri, f"write -P 0x22 0 {MiB}", f"write -P 0x33 {4 * MiB} {MiB}")
    rsrv.cli("clock", "advance", "--by", "PT5M")
    points = wait_points(asr, vault, source, item, 2)
    assert points[0].properties.recovery_point_time > first.properties.recovery_point_time
    assert first.properties.provider_specific_details.instance_type == "A2A"
    # Which recovery points hold the target region's key version: one query.
    us_kid = us_des["properties"]["activeKey"]["keyUrl"]
    query = (f'AzureBackupRecoveryPoints | where KeyUrl == "{us_kid}" and Service == "SiteRecovery" '
             '| distinct RecoveryPointId')
    done = rsrv.cli("monitor", "query", "-o", "json", query, check=False)
    assert done.returncode == 0, done.stderr
    held = {r["RecoveryPointId"] for r in json.loads(done.stdout)}
    assert held == {p.name for p in points_of(asr, vault, source, item)} and len(held) >= 2
    got = asr.replication_protected_items.get(RG, vault, "asr-we", source.name, item)
    assert got.properties.replication_health == "Normal"
    assert got.properties.provider_specific_details.rpo_in_seconds is not None
    assert got.properties.provider_specific_details.vm_protection_state == "Protected"

    # Test failover from the first point: a machine in the target region with its data.
    tfo = asr.replication_protected_items.begin_test_failover(
        RG, vault, "asr-we", source.name, item, TestFailoverInput(properties=TestFailoverInputProperties(
            failover_direction="PrimaryToRecovery", network_type="VmNetworkAsInput",
            provider_specific_details=A2ATestFailoverInput(recovery_point_id=first.id)))).result()
    assert tfo.properties.allowed_operations == ["TestFailoverCleanup", "DisableProtection"]
    test_vm = f"{vm}-test"
    shown = rsrv.cli("vm", "show", "-g", f"{RG}-asr", "-n", test_vm)
    assert shown["location"] == TARGET
    for disk in data_disks(rsrv, f"{RG}-asr", test_vm):
        qemu_io(disk["nbdUri"], f"read -P 0x11 0 {MiB}", f"read -P 0 {4 * MiB} {MiB}")
    asr.replication_protected_items.begin_test_failover_cleanup(
        RG, vault, "asr-we", source.name, item, TestFailoverCleanupInput(
            properties=TestFailoverCleanupInputProperties(comments="checked"))).result()
    assert rsrv.cli("vm", "show", "-g", f"{RG}-asr", "-n", test_vm, check=False).returncode != 0

    # Failover to the newest point, the source shut down first.
    with pytest.raises(HttpResponseError) as err:
        asr.replication_protected_items.begin_unplanned_failover(
            RG, vault, "asr-we", source.name, item, failover_input("RecoveryToPrimary")).result()
    assert err.value.status_code == 400 and "failoverDirection" in err.value.message
    done = asr.replication_protected_items.begin_unplanned_failover(
        RG, vault, "asr-we", source.name, item, failover_input(shut_down=True)).result()
    assert (done.properties.protection_state, done.properties.active_location) == (
        "UnplannedFailoverCompleted", "Recovery")
    assert rsrv.cli("vm", "show", "-n", vm)["properties"]["instanceView"]["statuses"][-1]["code"] != "PowerState/running"
    failed_over = data_disks(rsrv, f"{RG}-asr", vm)
    for disk in failed_over:
        qemu_io(disk["nbdUri"], f"read -P 0x22 0 {MiB}", f"read -P 0x33 {4 * MiB} {MiB}")
    cmk_copy = rsrv.cli("disk", "show", "-g", f"{RG}-asr", "-n", f"{cmk_disk}-ASRReplica")
    assert cmk_copy["location"] == TARGET
    assert cmk_copy["properties"]["encryption"]["diskEncryptionSetId"].lower() == us_des["id"].lower()

    # Its data keys are wrapped by the target region's key, not the source's: with the
    # source key disabled it starts; with the target key disabled it does not.
    rsrv.cli("vm", "stop", "-g", f"{RG}-asr", "-n", vm)
    rsrv.cli("keyvault", "key", "set-attributes", "--vault-name", we_kv, "-n", we_key, "--enabled", "false")
    rsrv.cli("vm", "start", "-g", f"{RG}-asr", "-n", vm)
    rsrv.cli("vm", "stop", "-g", f"{RG}-asr", "-n", vm)
    rsrv.cli("keyvault", "key", "set-attributes", "--vault-name", we_kv, "-n", we_key, "--enabled", "true")
    rsrv.cli("keyvault", "key", "set-attributes", "--vault-name", us_kv, "-n", us_key, "--enabled", "false")
    refused = rsrv.cli("vm", "start", "-g", f"{RG}-asr", "-n", vm, check=False)
    assert refused.returncode != 0 and us_key in refused.stderr, refused.stderr
    rsrv.cli("keyvault", "key", "set-attributes", "--vault-name", us_kv, "-n", us_key, "--enabled", "true")
    uris = [d["nbdUri"] for d in rsrv.cli("vm", "start", "-g", f"{RG}-asr", "-n", vm)[
        "properties"]["storageProfile"]["dataDisks"]]

    # Commit drops the recovery points; re-protect replicates back, each disk under the
    # set its original had; the failback reads what the failed-over machine wrote.
    with pytest.raises(HttpResponseError) as err:
        asr.replication_protected_items.begin_reprotect(RG, vault, "asr-we", source.name, item, reprotect_input()).result()
    assert err.value.status_code == 409
    committed = asr.replication_protected_items.begin_failover_commit(RG, vault, "asr-we", source.name, item).result()
    assert committed.properties.allowed_operations == ["ReverseReplicate", "DisableProtection"]
    assert points_of(asr, vault, source, item) == []
    for uri in uris:
        qemu_io(uri, f"write -P 0x44 {8 * MiB} {MiB}")
    back = asr.replication_protected_items.begin_reprotect(RG, vault, "asr-we", source.name, item,
                                                            reprotect_input()).result()
    assert back.properties.protection_state == "Protected" and back.properties.active_location == "Recovery"
    back_disks = {d.disk_name: d for d in back.properties.provider_specific_details.protected_managed_disks}
    assert back_disks[f"{cmk_disk}-ASRReplica"].recovery_disk_encryption_set_id.lower() == we_des["id"].lower()
    wait_points(asr, vault, source, item, 1)
    rsrv.cli("vm", "stop", "-n", vm)
    rsrv.cli("vm", "delete", "-n", vm)
    home = asr.replication_protected_items.begin_unplanned_failover(
        RG, vault, "asr-we", source.name, item, failover_input("RecoveryToPrimary", shut_down=True)).result()
    assert home.properties.active_location == "Primary"
    for disk in data_disks(rsrv, RG, vm):
        qemu_io(disk["nbdUri"], f"read -P 0x22 0 {MiB}", f"read -P 0x44 {8 * MiB} {MiB}")
    home_cmk = rsrv.cli("disk", "show", "-n", f"{cmk_disk}-ASRReplica")
    assert home_cmk["location"] == SOURCE
    assert home_cmk["properties"]["encryption"]["diskEncryptionSetId"].lower() == we_des["id"].lower()

    # Every block the replication stored is ciphertext.
    stored = rsrv.stored("chunks/").values()
    assert stored and not any(bytes([b]) * 4096 in c for c in stored for b in (0x11, 0x22, 0x33, 0x44))

    # The failovers and the cycles are in the audit log: the failovers under the caller,
    # the cycles as the service.
    query = ("AzureActivity | where OperationName in ('ReplicationEnable', 'ReplicationFailover', 'ReplicationCycle') "
             f"and _ResourceId contains '{item}' and ActivityStatusValue == 'Success' "
             "| summarize n = count() by OperationName, Caller")
    done = rsrv.cli("monitor", "query", "-o", "json", query, check=False)
    assert done.returncode == 0, done.stderr
    rows = {(r["OperationName"], r["Caller"]): r["n"] for r in json.loads(done.stdout)}
    [enabler] = [caller for (op, caller) in rows if op == "ReplicationEnable"]
    assert uuid.UUID(enabler) and rows[("ReplicationFailover", enabler)] == 2, rows
    assert sum(n for (op, caller), n in rows.items() if op == "ReplicationCycle" and caller == "atrest-scheduler") >= 3, rows

    # Disabling replication deletes the replicas and points; the machines stay.
    asr.replication_protected_items.begin_delete(RG, vault, "asr-we", source.name, item,
                                                 disable_input()).result()
    with pytest.raises(HttpResponseError) as err:
        asr.replication_protected_items.get(RG, vault, "asr-we", source.name, item)
    assert err.value.status_code == 404
    rsrv.cli("vm", "show", "-n", vm)
    rsrv.cli("vm", "stop", "-n", vm)
    rsrv.cli("vm", "stop", "-g", f"{RG}-asr", "-n", vm)


ADE_VAULT, ADE_TARGET = "sdk-asr-ade", "sdk-asr-ade-asr"


def test_an_ade_machine_replicates_with_its_keys_copied_to_the_target_region(rsrv, tmp_path):
    """The BEK secret copied under its own name into `<vault>-asr` and the KEK recreated
    there (same name, a new key) with the passphrase rewrapped to it, by the vault's
    identity, which needs the permissions to do so; the failed-over machine starts and its
    LUKS volume opens from the target region's keys alone."""
    from azure.core.exceptions import HttpResponseError
    from azure.keyvault.keys.crypto import CryptographyClient, KeyWrapAlgorithm
    from azure.mgmt.recoveryservices import RecoveryServicesClient
    from test_ade import download, passphrase_of, run, secret_client
    rsrv.cli("keyvault", "create", "-n", ADE_VAULT, "-l", SOURCE, "--enabled-for-disk-encryption", "true")
    rsrv.cli("keyvault", "create", "-n", ADE_TARGET, "-l", TARGET, "--enabled-for-disk-encryption", "true")
    kek_name = unique("kek")
    kek = rsrv.cli("keyvault", "key", "create", "--vault-name", ADE_VAULT, "-n", kek_name, "--kty", "RSA",
                   "--size", "3072")["key"]["kid"]
    disk, vm = unique("d"), unique("vm")
    rsrv.cli("disk", "create", "-n", disk, "-z", "1", "-l", SOURCE)
    rsrv.cli("vm", "create", "-n", vm, "--attach-disks", disk)
    rsrv.cli("vm", "encryption", "enable", "-n", vm, "--disk-encryption-keyvault", ADE_VAULT,
             "--key-encryption-key", kek_name, "--volume-type", "DATA")
    vm_id = rsrv.cli("vm", "start", "-n", vm)["id"]

    asr, vault, source, target, policy = site(rsrv)
    principal = rsrv.management_client(RecoveryServicesClient).vaults.get(RG, vault).identity.principal_id
    item = unique("ade")
    with pytest.raises(HttpResponseError) as err:
        enable(asr, vault, source, target, policy, item, vm_id, [])
    assert err.value.status_code == 409 and "unwrapKey" in err.value.message and "create" in err.value.message
    assert list(asr.replication_protected_items.list(RG, vault)) == []
    for role, kv in [("Key Vault Secrets User", ADE_VAULT), ("Key Vault Crypto User", ADE_VAULT),
                     ("Key Vault Secrets Officer", ADE_TARGET), ("Key Vault Crypto Officer", ADE_TARGET)]:
        rsrv.cli("role", "assignment", "create", "--assignee", principal, "--role", role,
                 "--scope", rsrv.vault_scope(kv))

    replicated = enable(asr, vault, source, target, policy, item, vm_id, [])
    assert replicated.properties.provider_specific_details.vm_encryption_type == "OnePassEncrypted"
    [copied] = replicated.properties.provider_specific_details.protected_managed_disks
    source_pass, source_secret = passphrase_of(rsrv, disk, ADE_VAULT)
    assert copied.is_disk_encrypted and copied.is_disk_key_encrypted
    assert copied.secret_identifier.startswith(rsrv.vault_url(ADE_TARGET) + "/secrets/" + source_secret.name + "/")
    assert copied.key_identifier.startswith(rsrv.vault_url(ADE_TARGET) + "/keys/" + kek_name + "/")
    assert copied.dek_key_vault_arm_id == rsrv.vault_scope(ADE_TARGET)
    target_secret = secret_client(rsrv, ADE_TARGET).get_secret(*copied.secret_identifier.split("/")[-2:])
    assert target_secret.properties.content_type == "Wrapped BEK"
    assert target_secret.properties.tags["DiskEncryptionKeyEncryptionKeyURL"] == copied.key_identifier
    assert target_secret.value != source_secret.value
    crypto = CryptographyClient(copied.key_identifier, rsrv.credential(), connection_verify=rsrv.env["ATREST_CA"])
    recreated = crypto.unwrap_key(KeyWrapAlgorithm.rsa_oaep, base64.b64decode(target_secret.value)).key
    assert recreated == source_pass
    target_key = rsrv.cli("keyvault", "key", "show", "--vault-name", ADE_TARGET, "-n", kek_name)
    assert target_key["key"]["kid"] == copied.key_identifier and len(base64.urlsafe_b64decode(
        target_key["key"]["n"] + "==")) * 8 == 3072

    # Failed over, the machine's disk keeps its ADE settings, pointing at the copies; with
    # the source's key-encryption key disabled it starts, and the volume opens with the
    # passphrase of the target region.
    wait_points(asr, vault, source, item, 1)
    asr.replication_protected_items.begin_unplanned_failover(
        RG, vault, "asr-we", source.name, item, failover_input(shut_down=True)).result()
    moved = rsrv.cli("disk", "show", "-g", f"{RG}-asr", "-n", f"{disk}-ASRReplica")
    [settings] = moved["properties"]["encryptionSettingsCollection"]["encryptionSettings"]
    assert settings["diskEncryptionKey"]["secretUrl"] == copied.secret_identifier
    assert settings["keyEncryptionKey"]["keyUrl"] == copied.key_identifier
    rsrv.cli("vm", "stop", "-g", f"{RG}-asr", "-n", vm)
    rsrv.cli("keyvault", "key", "set-attributes", "--vault-name", ADE_VAULT, "-n", kek_name, "--enabled", "false")
    started = rsrv.cli("vm", "start", "-g", f"{RG}-asr", "-n", vm)
    assert started["properties"]["storageProfile"]["bekVolume"]["nbdUri"]
    image = tmp_path / "replica.img"
    download(started["properties"]["storageProfile"]["dataDisks"][0]["nbdUri"], 4096, image)
    keyfile = tmp_path / "passphrase"
    keyfile.write_bytes(recreated)
    run("cryptsetup", "open", "--test-passphrase", "--key-file", str(keyfile), str(image))
    rsrv.cli("keyvault", "key", "set-attributes", "--vault-name", ADE_VAULT, "-n", kek_name, "--enabled", "true")

    # The copies were made by the vault's identity, as the audit log shows.
    query = ("AzureDiagnostics | where OperationName in ('SecretSet', 'KeyCreate') "
             f"and Resource == '{ADE_TARGET.upper()}' and ResultSignature == 'OK' "
             "| distinct OperationName, identity_claim_oid_g")
    done = rsrv.cli("monitor", "query", "-o", "json", query, check=False)
    assert done.returncode == 0, done.stderr
    assert {(r["OperationName"], r["identity_claim_oid_g"]) for r in json.loads(done.stdout)} == {
        ("SecretSet", principal), ("KeyCreate", principal)}
    rsrv.cli("vm", "stop", "-g", f"{RG}-asr", "-n", vm)


def reprotect_input():
    from azure.mgmt.recoveryservicessiterecovery.models import (
        A2AReprotectInput, ReverseReplicationInput, ReverseReplicationInputProperties)
    return ReverseReplicationInput(properties=ReverseReplicationInputProperties(
        failover_direction="RecoveryToPrimary", provider_specific_details=A2AReprotectInput()))


def disable_input():
    from azure.mgmt.recoveryservicessiterecovery.models import (
        DisableProtectionInput, DisableProtectionInputProperties)
    return DisableProtectionInput(properties=DisableProtectionInputProperties(disable_protection_reason="NotSpecified"))


def remove_mapping_input():
    from azure.mgmt.recoveryservicessiterecovery.models import RemoveProtectionContainerMappingInput
    return RemoveProtectionContainerMappingInput()


def test_site_recovery_rules_refused(rsrv):
    from azure.core.exceptions import HttpResponseError
    from azure.mgmt.recoveryservicessiterecovery.models import (
        A2APolicyCreationInput, CreatePolicyInput, CreatePolicyInputProperties,
        CreateProtectionContainerMappingInput, CreateProtectionContainerMappingInputProperties, FabricCreationInput,
        FabricCreationInputProperties, AzureFabricCreationInput)
    asr, vault, source, target, policy = site(rsrv)

    def refused(call, status=400):
        with pytest.raises(HttpResponseError) as err:
            call()
        assert err.value.status_code == status, err.value
        return err.value.message

    def policy_with(**kw):
        return CreatePolicyInput(properties=CreatePolicyInputProperties(provider_specific_input=A2APolicyCreationInput(
            multi_vm_sync_status="Disable", **kw)))

    # Out-of-range policies; a second fabric for one region; a mapping within one region.
    assert "crashConsistentFrequencyInMinutes" in refused(lambda: asr.replication_policies.begin_create(
        RG, vault, "bad", policy_with(crash_consistent_frequency_in_minutes=0)).result())
    assert "recoveryPointHistory" in refused(lambda: asr.replication_policies.begin_create(
        RG, vault, "bad", policy_with(recovery_point_history=50000)).result())
    assert SOURCE in refused(lambda: asr.replication_fabrics.begin_create(RG, vault, "again", FabricCreationInput(
        properties=FabricCreationInputProperties(custom_details=AzureFabricCreationInput(location=SOURCE)))).result(), 409)
    assert "two regions" in refused(lambda: asr.replication_protection_container_mappings.begin_create(
        RG, vault, "asr-we", source.name, "loop", CreateProtectionContainerMappingInput(
            properties=CreateProtectionContainerMappingInputProperties(
                target_protection_container_id=source.id, policy_id=policy.id))).result())

    # A machine in another region than the source fabric; a disk not attached; ADE.
    disk, vm = unique("d"), unique("vm")
    rsrv.cli("disk", "create", "-n", disk, "-z", "1", "-l", TARGET)
    rsrv.cli("vm", "create", "-n", vm, "--attach-disks", disk)
    vm_id = rsrv.cli("vm", "show", "-n", vm)["id"]
    assert "fabric" in refused(lambda: enable(asr, vault, source, target, policy, unique("i"), vm_id, []))
    disk2, vm2 = unique("d"), unique("vm")
    rsrv.cli("disk", "create", "-n", disk2, "-z", "1", "-l", SOURCE)
    rsrv.cli("vm", "create", "-n", vm2, "--attach-disks", disk2)
    vm2_id = rsrv.cli("vm", "show", "-n", vm2)["id"]
    other_id = rsrv.cli("disk", "show", "-n", disk)["id"]
    assert "not attached" in refused(lambda: enable(asr, vault, source, target, policy, unique("i"), vm2_id,
                                                    [(other_id, None)]))
    assert "not found" in refused(lambda: asr.replication_protected_items.get(
        RG, vault, "asr-we", source.name, "nothing"), 404)

    # Failover, commit and re-protect out of turn.
    item = unique("i")
    enable(asr, vault, source, target, policy, item, vm2_id, [])
    wait_points(asr, vault, source, item, 1)
    assert "re-protected" in refused(lambda: asr.replication_protected_items.begin_reprotect(
        RG, vault, "asr-we", source.name, item, reprotect_input()).result(), 409)
    assert "no failover" in refused(lambda: asr.replication_protected_items.begin_failover_commit(
        RG, vault, "asr-we", source.name, item).result(), 409)
    assert "not found" in refused(lambda: asr.replication_protected_items.begin_unplanned_failover(
        RG, vault, "asr-we", source.name, item, failover_input(point="nope")).result(), 404)

    # In use: the mapping, the policy and the vault cannot go while an item replicates.
    assert "replicated items" in refused(lambda: asr.replication_protection_container_mappings.begin_delete(
        RG, vault, "asr-we", source.name, "we-to-us", remove_mapping_input()).result(), 409)
    assert "mapping" in refused(lambda: asr.replication_policies.begin_delete(RG, vault, policy.name).result(), 409)
    from azure.mgmt.recoveryservices import RecoveryServicesClient
    vaults = rsrv.management_client(RecoveryServicesClient)
    assert "replicated item" in refused(lambda: vaults.vaults.begin_delete(RG, vault).result(), 409)

    # Torn down in order, the vault goes too; the server still serves.
    asr.replication_protected_items.begin_delete(RG, vault, "asr-we", source.name, item, disable_input()).result()
    asr.replication_protection_container_mappings.begin_delete(RG, vault, "asr-we", source.name, "we-to-us",
                                                               remove_mapping_input()).result()
    asr.replication_policies.begin_delete(RG, vault, policy.name).result()
    vaults.vaults.begin_delete(RG, vault).result()
    assert rsrv.cli("vm", "show", "-n", vm2)["name"] == vm2


def first_byte(uri, offset=0):
    out = qemu_io(uri, f"read -v {offset} 16")
    return int(out.split(":", 1)[1].split()[0], 16)


def test_a_server_killed_while_replicating_resumes_with_consistent_replicas(workdir):
    """SIGKILL during the first cycle and again during the second (shipping is slowed so
    each takes seconds): after each restart the interrupted cycle finishes, and failovers
    from both points read exactly what the machine held at each cut."""
    srv = Server(workdir / "asr-crash", "--snapshot-copy-bandwidth", str(4 * MiB)).start()
    try:
        asr, vault, source, target, policy = site(srv)
        disks, vm = [unique("d"), unique("d")], unique("vm")
        for d in disks:
            srv.cli("disk", "create", "-n", d, "-z", "1", "-l", SOURCE)
        srv.cli("vm", "create", "-n", vm, "--attach-disks", *disks)
        started = srv.cli("vm", "start", "-n", vm)
        uris = [d["nbdUri"] for d in started["properties"]["storageProfile"]["dataDisks"]]
        for uri in uris:
            qemu_io(uri, f"write -P 0x61 0 {16 * MiB}")
        item = unique("i")
        enable(asr, vault, source, target, policy, item, started["id"], [])

        def kill_and_restart(points_before):
            time.sleep(3)
            # The cycle under way has not finished: the kill interrupts it.
            assert len(points_of(client(srv), vault, source, item)) == points_before
            os.kill(srv.proc.pid, signal.SIGKILL)
            srv.proc.wait()
            srv.start()
            return client(srv)

        asr = kill_and_restart(0)
        [first] = wait_points(asr, vault, source, item, 1)
        uris = [d["nbdUri"] for d in data_disks(srv, RG, vm)]
        for uri in uris:
            qemu_io(uri, f"write -P 0x62 {16 * MiB} {16 * MiB}", f"write -P 0x63 0 {MiB}")
        srv.cli("clock", "advance", "--by", "PT5M")
        asr = kill_and_restart(1)
        points = wait_points(asr, vault, source, item, 2)
        newest = points[0]
        assert newest.name != first.name

        from azure.mgmt.recoveryservicessiterecovery.models import (
            A2ATestFailoverInput, TestFailoverCleanupInput, TestFailoverCleanupInputProperties, TestFailoverInput,
            TestFailoverInputProperties)
        for point, expected in [(first, (0x61, 0x61, 0)), (newest, (0x63, 0x61, 0x62))]:
            asr.replication_protected_items.begin_test_failover(
                RG, vault, "asr-we", source.name, item, TestFailoverInput(properties=TestFailoverInputProperties(
                    failover_direction="PrimaryToRecovery", provider_specific_details=A2ATestFailoverInput(
                        recovery_point_id=point.id)))).result()
            for disk in data_disks(srv, f"{RG}-asr", f"{vm}-test"):
                got = (first_byte(disk["nbdUri"]), first_byte(disk["nbdUri"], 2 * MiB),
                       first_byte(disk["nbdUri"], 20 * MiB))
                assert got == expected, (point.name, got, expected)
            asr.replication_protected_items.begin_test_failover_cleanup(
                RG, vault, "asr-we", source.name, item, TestFailoverCleanupInput(
                    properties=TestFailoverCleanupInputProperties(comments="checked"))).result()
        got = asr.replication_protected_items.get(RG, vault, "asr-we", source.name, item)
        assert got.properties.replication_health == "Normal", got.properties.health_errors
        srv.cli("vm", "stop", "-n", vm)
        assert srv.cli("monitor", "audit", "verify")["verified"] is True
    finally:
        if srv.proc.poll() is None:
            assert srv.stop() == 0, srv.log()


def test_the_cli_replicates_keeps_its_window_and_tests_a_failover(rsrv):
    """`atrest site-recovery` as `az site-recovery` names it: the set-up, a replicated VM
    with its lag, points kept for the policy's window only, and a test failover."""
    sr = lambda *args, **kw: rsrv.cli("site-recovery", *args, **kw)  # noqa: E731
    vault = unique("rsv")
    rsrv.cli("backup", "vault", "create", "-n", vault, "-l", TARGET)
    for fabric, location in [("we", SOURCE), ("us", TARGET)]:
        assert sr("fabric", "create", "-v", vault, "-n", fabric, "-l", location)["location"] == location
        sr("protection-container", "create", "-v", vault, "--fabric-name", fabric, "-n", f"{fabric}-c")
    policy = sr("policy", "create", "-v", vault, "-n", "hourly", "--recovery-point-history", "60",
                "--crash-consistent-frequency", "1")
    assert policy["properties"]["providerSpecificDetails"]["recoveryPointHistory"] == 60
    sr("protection-container", "mapping", "create", "-v", vault, "--fabric-name", "we", "--protection-container",
       "we-c", "-n", "we-us", "--policy-id", "hourly", "--target-container", "us/us-c")
    disk, vm = unique("d"), unique("vm")
    rsrv.cli("disk", "create", "-n", disk, "-z", "1", "-l", SOURCE)
    rsrv.cli("vm", "create", "-n", vm, "--attach-disks", disk)
    uri = rsrv.cli("vm", "start", "-n", vm)["properties"]["storageProfile"]["dataDisks"][0]["nbdUri"]
    qemu_io(uri, f"write -P 0x55 0 {MiB}")
    at = ["-v", vault, "--fabric-name", "we", "--protection-container", "we-c"]
    item = unique("item")
    made = sr("protected-item", "create", *at, "-n", item, "--vm", vm, "--disk", disk)
    assert made["properties"]["providerSpecificDetails"]["recoveryFabricLocation"] == TARGET

    def points(count):
        deadline = time.time() + 60
        while len(found := sr("recovery-point", "list", *at, "--replicated-protected-item-name", item)) < count:
            assert time.time() < deadline, found
            time.sleep(0.5)
        return found

    [first] = points(1)
    shown = sr("protected-item", "show", *at, "-n", item)["properties"]["providerSpecificDetails"]
    assert isinstance(shown["rpoInSeconds"], int) and shown["rpoInSeconds"] >= 0
    rsrv.cli("clock", "advance", "--by", "PT1M")
    assert len(points(2)) == 2
    # Two hours on, the next cycle keeps only what the 60-minute window holds: itself.
    rsrv.cli("clock", "advance", "--by", "PT2H")
    deadline = time.time() + 60
    while True:
        kept = sr("recovery-point", "list", *at, "--replicated-protected-item-name", item)
        if len(kept) == 1 and kept[0]["name"] != first["name"]:
            break
        assert time.time() < deadline, kept
        time.sleep(0.5)
    sr("protected-item", "test-failover", *at, "-n", item, "--recovery-point-id", kept[0]["name"])
    test_disk = data_disks(rsrv, f"{RG}-asr", f"{vm}-test")[0]
    qemu_io(test_disk["nbdUri"], f"read -P 0x55 0 {MiB}")
    sr("protected-item", "test-failover-cleanup", *at, "-n", item)
    refused = sr("protected-item", "failover-commit", *at, "-n", item, check=False)
    assert refused.returncode != 0 and "no failover" in refused.stderr
    sr("protected-item", "delete", *at, "-n", item)
    assert sr("protected-item", "list", *at) == []
    rsrv.cli("vm", "stop", "-n", vm)
