"""Azure Backup for VMs through Microsoft's clients (azure-mgmt-recoveryservices and
azure-mgmt-recoveryservicesbackup): a Recovery Services vault with its identity and
DefaultPolicy, a custom policy, protection, on-demand backups of a running machine (one
crash-consistent cut across its disks), recovery points, restores of disks and of a new
machine that read back exactly the chosen point, jobs, and the rules refused."""
import subprocess
import time

import pytest

from conftest import Server, qemu_io, unique

RG = "default"
PATTERN_A = 0x5A
PATTERN_B = 0xA5
MiB = 1 << 20


@pytest.fixture(scope="module")
def bsrv(workdir):
    srv = Server(workdir / "backup").start()
    yield srv
    if srv.proc.poll() is None:
        assert srv.cli("monitor", "audit", "verify")["verified"] is True
        assert srv.stop() == 0, srv.log()


def clients(srv):
    from azure.mgmt.recoveryservices import RecoveryServicesClient
    from azure.mgmt.recoveryservicesbackup import RecoveryServicesBackupClient
    return srv.management_client(RecoveryServicesClient), srv.management_client(RecoveryServicesBackupClient)


def new_vault(srv, location="westeurope"):
    from azure.mgmt.recoveryservices.models import IdentityData, Sku, Vault, VaultProperties
    vaults, _ = clients(srv)
    name = unique("rsv")
    vault = vaults.vaults.begin_create_or_update(
        RG, name, Vault(location=location, sku=Sku(name="Standard"), identity=IdentityData(type="SystemAssigned"),
                        properties=VaultProperties(public_network_access="Enabled"))).result()
    return vault


def names(vm):
    return f"IaasVMContainer;iaasvmcontainerv2;{RG};{vm}", f"VM;iaasvmcontainerv2;{RG};{vm}"


def test_backup_and_restore_a_running_vm(bsrv):
    from azure.core.exceptions import HttpResponseError
    from azure.mgmt.recoveryservicesbackup.models import (
        AzureIaaSComputeVMProtectedItem, AzureIaaSVMProtectionPolicy, BackupRequestResource, DailyRetentionSchedule,
        IaasVMBackupRequest, IaasVMRestoreRequest, LongTermRetentionPolicy, ProtectedItemResource,
        ProtectionPolicyResource, RestoreRequestResource, RetentionDuration, SimpleSchedulePolicy)
    _, backup = clients(bsrv)
    vault = new_vault(bsrv)
    assert vault.identity.principal_id and vault.properties.provisioning_state == "Succeeded"
    default = backup.protection_policies.get(vault.name, RG, "DefaultPolicy")
    assert default.properties.backup_management_type == "AzureIaasVM"

    # A custom daily policy keeping points for 14 days.
    policy = ProtectionPolicyResource(properties=AzureIaaSVMProtectionPolicy(
        schedule_policy=SimpleSchedulePolicy(schedule_run_frequency="Daily",
                                             schedule_run_times=["2026-01-01T03:00:00Z"]),
        retention_policy=LongTermRetentionPolicy(daily_schedule=DailyRetentionSchedule(
            retention_times=["2026-01-01T03:00:00Z"], retention_duration=RetentionDuration(count=14, duration_type="Days"))),
        time_zone="UTC"))
    custom = backup.protection_policies.create_or_update(vault.name, RG, "daily14", policy)
    assert custom.properties.retention_policy.daily_schedule.retention_duration.count == 14

    # A running machine with two data disks, a pattern on each.
    disks = [unique("d"), unique("d")]
    for d in disks:
        bsrv.cli("disk", "create", "-n", d, "-z", "1")
    vm = unique("vm")
    bsrv.cli("vm", "create", "-n", vm, "--attach-disks", *disks)
    started = bsrv.cli("vm", "start", "-n", vm)
    uris = [d["nbdUri"] for d in started["properties"]["storageProfile"]["dataDisks"]]
    for uri in uris:
        qemu_io(uri, f"write -P {PATTERN_A} 0 {MiB}")

    container, item = names(vm)
    vm_id = started["id"]
    protected = backup.protected_items.begin_create_or_update(
        vault.name, RG, "Azure", container, item,
        ProtectedItemResource(properties=AzureIaaSComputeVMProtectedItem(source_resource_id=vm_id,
                                                                          policy_id=custom.id))).result()
    got = backup.protected_items.get(vault.name, RG, "Azure", container, item)
    # The models deserialize the item as the base ProtectedItem; its JSON says the rest.
    assert got.properties["protectionState"] == "Protected" and got.properties.policy_id == custom.id

    # Backup now, while it runs; then more writes, and a second backup.
    request = BackupRequestResource(properties=IaasVMBackupRequest())
    backup.backups.trigger(vault.name, RG, "Azure", container, item, request)
    [older] = list(backup.recovery_points.list(vault.name, RG, "Azure", container, item))
    for uri in uris:
        qemu_io(uri, f"write -P {PATTERN_B} 0 {MiB}")
    backup.backups.trigger(vault.name, RG, "Azure", container, item, request)
    points = list(backup.recovery_points.list(vault.name, RG, "Azure", container, item))
    assert len(points) == 2 and older.name in {p.name for p in points}
    assert older.properties.recovery_point_type == "CrashConsistent"
    jobs = [j for j in backup.backup_jobs.list(vault.name, RG) if j.properties.operation == "Backup"]
    assert len(jobs) == 2 and all(j.properties.status == "Completed" for j in jobs)
    assert protected is not None

    # Restored to another region: refused by name.
    def restore(**kw):
        props = IaasVMRestoreRequest(recovery_point_id=older.name, source_resource_id=vm_id,
                                     region=kw.get("region", "westeurope"),
                                     recovery_type=kw.get("recovery_type", "RestoreDisks"),
                                     target_resource_group_id=f"/subscriptions/{bsrv.env['ATREST_SUBSCRIPTION_ID']}/resourceGroups/{RG}",
                                     target_virtual_machine_id=kw.get("target_vm"),
                                     original_storage_account_option=False, create_new_cloud_service=False)
        return backup.restores.begin_trigger(vault.name, RG, "Azure", container, item, older.name,
                                             RestoreRequestResource(properties=props)).result()

    with pytest.raises(HttpResponseError) as err:
        restore(region="eastus")
    assert err.value.status_code == 400 and "region" in err.value.message
    with pytest.raises(HttpResponseError) as err:
        restore(recovery_type="ItemLevelRestore")
    assert err.value.status_code == 400

    # The disks restored from the older point read back its pattern, not the newer one.
    restore()
    job = next(j for j in backup.backup_jobs.list(vault.name, RG) if j.properties.operation == "Restore")
    assert job.properties.status == "Completed"
    restored_ids = job.properties.extended_info.property_bag["outputs"].split(",")
    assert len(restored_ids) == 2
    check_vm = unique("vm")
    bsrv.cli("vm", "create", "-n", check_vm, "--attach-disks", *[i.rsplit("/", 1)[1] for i in restored_ids])
    check = bsrv.cli("vm", "start", "-n", check_vm)
    for disk in check["properties"]["storageProfile"]["dataDisks"]:
        qemu_io(disk["nbdUri"], f"read -P {PATTERN_A} 0 {MiB}")
    bsrv.cli("vm", "stop", "-n", check_vm)

    # A new machine, from the same point.
    target = unique("vm")
    restore(recovery_type="AlternateLocation", target_vm=target)
    made = bsrv.cli("vm", "start", "-n", target)
    for disk in made["properties"]["storageProfile"]["dataDisks"]:
        qemu_io(disk["nbdUri"], f"read -P {PATTERN_A} 0 {MiB}")
    bsrv.cli("vm", "stop", "-n", target)

    # The vault's copies are ciphertext, like every block: the patterns are nowhere.
    stored = [f.read_bytes() for f in (bsrv.data_dir / "disks" / "chunks").rglob("*") if f.is_file()]
    assert stored and not any(bytes([PATTERN_A]) * 4096 in c or bytes([PATTERN_B]) * 4096 in c for c in stored)

    # A vault protecting something cannot go; stopping protection deletes the points.
    from azure.mgmt.recoveryservices import RecoveryServicesClient
    vaults = bsrv.management_client(RecoveryServicesClient)
    with pytest.raises(HttpResponseError) as err:
        vaults.vaults.begin_delete(RG, vault.name).result()
    assert err.value.status_code == 409
    with pytest.raises(HttpResponseError) as err:
        backup.protection_policies.begin_delete(vault.name, RG, "daily14").result()
    assert err.value.status_code == 409
    backup.protected_items.delete(vault.name, RG, "Azure", container, item)
    with pytest.raises(HttpResponseError) as err:
        backup.protected_items.get(vault.name, RG, "Azure", container, item)
    assert err.value.status_code == 404
    vaults.vaults.begin_delete(RG, vault.name).result()
    with pytest.raises(HttpResponseError) as err:
        vaults.vaults.get(RG, vault.name)
    assert err.value.status_code == 404
    bsrv.cli("vm", "stop", "-n", vm)


def test_backup_rules_refused(bsrv):
    from azure.core.exceptions import HttpResponseError
    from azure.mgmt.recoveryservicesbackup.models import (
        AzureIaaSComputeVMProtectedItem, AzureIaaSVMProtectionPolicy, ProtectedItemResource,
        ProtectionPolicyResource, SimpleSchedulePolicy)
    _, backup = clients(bsrv)
    vault = new_vault(bsrv)
    disk, vm = unique("d"), unique("vm")
    bsrv.cli("disk", "create", "-n", disk, "-z", "1")
    bsrv.cli("vm", "create", "-n", vm, "--attach-disks", disk)
    vm_id = bsrv.cli("vm", "show", "-n", vm)["id"]
    container, item = names(vm)
    default_id = backup.protection_policies.get(vault.name, RG, "DefaultPolicy").id

    def refused(call, status=400):
        with pytest.raises(HttpResponseError) as err:
            call()
        assert err.value.status_code == status, err.value
        return err.value.message

    # Item names that do not match the machine; an unknown policy; a weekly schedule.
    other = names(unique("vm"))
    assert "does not name" in refused(lambda: backup.protected_items.begin_create_or_update(
        vault.name, RG, "Azure", other[0], other[1],
        ProtectedItemResource(properties=AzureIaaSComputeVMProtectedItem(source_resource_id=vm_id,
                                                                          policy_id=default_id))).result())
    assert "not found" in refused(lambda: backup.protected_items.begin_create_or_update(
        vault.name, RG, "Azure", container, item,
        ProtectedItemResource(properties=AzureIaaSComputeVMProtectedItem(
            source_resource_id=vm_id, policy_id=default_id + "x"))).result(), 404)
    weekly = ProtectionPolicyResource(properties=AzureIaaSVMProtectionPolicy(
        schedule_policy=SimpleSchedulePolicy(schedule_run_frequency="Weekly",
                                             schedule_run_times=["2026-01-01T03:00:00Z"])))
    assert "Daily" in refused(lambda: backup.protection_policies.create_or_update(vault.name, RG, "weekly", weekly))
    # A machine in another region than the vault.
    us_vault = new_vault(bsrv, "eastus")
    us_default = backup.protection_policies.get(us_vault.name, RG, "DefaultPolicy").id
    assert "region" in refused(lambda: backup.protected_items.begin_create_or_update(
        us_vault.name, RG, "Azure", container, item,
        ProtectedItemResource(properties=AzureIaaSComputeVMProtectedItem(source_resource_id=vm_id,
                                                                          policy_id=us_default))).result())
    # Nothing was protected, and the server still serves.
    assert list(backup.backup_protected_items.list(vault.name, RG)) == []
    assert list(backup.backup_protected_items.list(us_vault.name, RG)) == []


def test_a_customer_key_point_restores_only_while_the_key_is_usable(bsrv):
    from azure.core.exceptions import HttpResponseError
    from azure.mgmt.recoveryservicesbackup.models import (
        AzureIaaSComputeVMProtectedItem, BackupRequestResource, IaasVMBackupRequest, IaasVMRestoreRequest,
        ProtectedItemResource, RestoreRequestResource)
    _, backup = clients(bsrv)
    kv = unique("bkv")
    bsrv.cli("keyvault", "create", "-n", kv, "-l", "westeurope", "--enable-purge-protection", "true")
    key_name = unique("cmk")
    kid = bsrv.cli("keyvault", "key", "create", "--vault-name", kv, "-n", key_name, "--kty", "RSA")["key"]["kid"]
    des = bsrv.cli("disk-encryption-set", "create", "-n", unique("des"), "--key-url", kid, "--source-vault", kv)
    bsrv.cli("role", "assignment", "create", "--assignee", des["identity"]["principalId"], "--role",
             "Key Vault Crypto Service Encryption User", "--scope", bsrv.vault_scope(kv))
    disk, vm = unique("d"), unique("vm")
    bsrv.cli("disk", "create", "-n", disk, "-z", "1", "--disk-encryption-set", des["name"])
    bsrv.cli("vm", "create", "-n", vm, "--attach-disks", disk)
    uri = bsrv.cli("vm", "start", "-n", vm)["properties"]["storageProfile"]["dataDisks"][0]["nbdUri"]
    qemu_io(uri, f"write -P {PATTERN_A} 0 {MiB}")
    vault = new_vault(bsrv)
    default_id = backup.protection_policies.get(vault.name, RG, "DefaultPolicy").id
    container, item = names(vm)
    vm_id = bsrv.cli("vm", "show", "-n", vm)["id"]
    backup.protected_items.begin_create_or_update(
        vault.name, RG, "Azure", container, item,
        ProtectedItemResource(properties=AzureIaaSComputeVMProtectedItem(source_resource_id=vm_id,
                                                                          policy_id=default_id))).result()
    backup.backups.trigger(vault.name, RG, "Azure", container, item,
                           BackupRequestResource(properties=IaasVMBackupRequest()))
    bsrv.cli("vm", "stop", "-n", vm)
    [point] = list(backup.recovery_points.list(vault.name, RG, "Azure", container, item))

    def restore():
        props = IaasVMRestoreRequest(recovery_point_id=point.name, recovery_type="RestoreDisks", region="westeurope",
                                     original_storage_account_option=False, create_new_cloud_service=False)
        return backup.restores.begin_trigger(vault.name, RG, "Azure", container, item, point.name,
                                             RestoreRequestResource(properties=props)).result()

    # The point keeps the data key wrapped by the customer key: disabled, nothing restores.
    bsrv.cli("keyvault", "key", "set-attributes", "--vault-name", kv, "-n", key_name, "--enabled", "false")
    with pytest.raises(HttpResponseError) as err:
        restore()
    assert err.value.status_code == 409 and key_name in err.value.message
    failed = [j for j in backup.backup_jobs.list(vault.name, RG) if j.properties.operation == "Restore"]
    assert [j.properties.status for j in failed] == ["Failed"]
    bsrv.cli("keyvault", "key", "set-attributes", "--vault-name", kv, "-n", key_name, "--enabled", "true")
    restore()
    job = next(j for j in backup.backup_jobs.list(vault.name, RG)
               if j.properties.operation == "Restore" and j.properties.status == "Completed")
    [restored] = job.properties.extended_info.property_bag["outputs"].split(",")
    shown = bsrv.cli("disk", "show", "-n", restored.rsplit("/", 1)[1])
    assert shown["properties"]["encryption"]["diskEncryptionSetId"].endswith(des["name"])

    # More written and backed up; the machine and its disk deleted; a new machine from the
    # first point, under another customer key, reads back exactly that point's data.
    uri = bsrv.cli("vm", "start", "-n", vm)["properties"]["storageProfile"]["dataDisks"][0]["nbdUri"]
    qemu_io(uri, f"write -P {PATTERN_B} 0 {MiB}")
    backup.backups.trigger(vault.name, RG, "Azure", container, item,
                           BackupRequestResource(properties=IaasVMBackupRequest()))
    bsrv.cli("vm", "delete", "-n", vm)
    bsrv.cli("disk", "delete", "-n", disk)
    other = bsrv.cli("keyvault", "key", "create", "--vault-name", kv, "-n", unique("cmk"), "--kty", "RSA")["key"]["kid"]
    des2 = bsrv.cli("disk-encryption-set", "create", "-n", unique("des"), "--key-url", other, "--source-vault", kv)
    bsrv.cli("role", "assignment", "create", "--assignee", des2["identity"]["principalId"], "--role",
             "Key Vault Crypto Service Encryption User", "--scope", bsrv.vault_scope(kv))
    target = unique("vm")
    props = IaasVMRestoreRequest(recovery_point_id=point.name, recovery_type="AlternateLocation", region="westeurope",
                                 target_virtual_machine_id=target, disk_encryption_set_id=des2["id"],
                                 original_storage_account_option=False, create_new_cloud_service=False)
    backup.restores.begin_trigger(vault.name, RG, "Azure", container, item, point.name,
                                  RestoreRequestResource(properties=props)).result()
    # Which recovery points hold this key version: one query.
    import json
    query = f'AzureBackupRecoveryPoints | where KeyUrl == "{kid}" | distinct RecoveryPointId'
    done = bsrv.cli("monitor", "query", "-o", "json", query, check=False)
    assert done.returncode == 0, done.stderr
    held = {r["RecoveryPointId"] for r in json.loads(done.stdout)}
    assert held == {p.name for p in backup.recovery_points.list(vault.name, RG, "Azure", container, item)}
    assert len(held) == 2
    made = bsrv.cli("vm", "start", "-n", target)
    restored_disk = made["properties"]["storageProfile"]["dataDisks"][0]
    assert bsrv.cli("disk", "show", "-n", restored_disk["name"])["properties"]["encryption"][
        "diskEncryptionSetId"].endswith(des2["name"])
    qemu_io(restored_disk["nbdUri"], f"read -P {PATTERN_A} 0 {MiB}")
    bsrv.cli("vm", "stop", "-n", target)


def test_the_cli_mirrors_az_backup(bsrv):
    vault = unique("rsv")
    bsrv.cli("backup", "vault", "create", "-n", vault, "-l", "westeurope")
    assert bsrv.cli("backup", "vault", "show", "-n", vault)["identity"]["type"] == "SystemAssigned"
    assert {p["name"] for p in bsrv.cli("backup", "policy", "list", "-v", vault)} == {"DefaultPolicy"}
    policy = bsrv.cli("backup", "policy", "set", "-v", vault, "-n", "nightly", "--time", "01:30",
                      "--retention-days", "10")
    assert policy["properties"]["schedulePolicy"]["scheduleRunTimes"] == ["2026-01-01T01:30:00Z"]
    disk, vm = unique("d"), unique("vm")
    bsrv.cli("disk", "create", "-n", disk, "-z", "1")
    bsrv.cli("vm", "create", "-n", vm, "--attach-disks", disk)
    uri = bsrv.cli("vm", "start", "-n", vm)["properties"]["storageProfile"]["dataDisks"][0]["nbdUri"]
    qemu_io(uri, f"write -P {PATTERN_A} 0 {MiB}")
    item = bsrv.cli("backup", "protection", "enable-for-vm", "-v", vault, "--vm", vm, "-p", "nightly")
    assert item["properties"]["policyName"] == "nightly"
    job = bsrv.cli("backup", "protection", "backup-now", "-v", vault, "-c", vm, "-i", vm,
                   "--retain-until", "31-12-2099")
    assert job["properties"]["status"] == "Completed" and job["properties"]["operation"] == "Backup"
    [point] = bsrv.cli("backup", "recoverypoint", "list", "-v", vault, "-c", vm, "-i", vm)
    assert point["properties"]["expiryTime"].startswith("2099-12-31")
    done = bsrv.cli("backup", "protection", "backup-now", "-v", vault, "-c", vm, "-i", vm, "--retain-until",
                    "2099-12-31", check=False)
    assert done.returncode != 0 and "DD-MM-YYYY" in done.stderr
    restored = bsrv.cli("backup", "restore", "restore-disks", "-v", vault, "-c", vm, "-i", vm, "-r", point["name"])
    assert restored["properties"]["status"] == "Completed"
    [disk_id] = restored["properties"]["extendedInfo"]["propertyBag"]["outputs"].split(",")
    assert bsrv.cli("disk", "show", "-n", disk_id.rsplit("/", 1)[1])["properties"]["creationData"]["createOption"] == "Restore"
    operations = [j["properties"]["operation"] for j in bsrv.cli("backup", "job", "list", "-v", vault)]
    assert sorted(operations) == ["Backup", "ConfigureBackup", "Restore"]
    done = bsrv.cli("backup", "vault", "delete", "-n", vault, check=False)
    assert done.returncode != 0 and "protected item" in done.stderr
    bsrv.cli("backup", "protection", "disable", "-v", vault, "-c", vm, "-i", vm)
    bsrv.cli("backup", "vault", "delete", "-n", vault)
    bsrv.cli("vm", "stop", "-n", vm)


def test_policies_back_up_on_schedule_and_points_expire(bsrv):
    vault = unique("rsv")
    bsrv.cli("backup", "vault", "create", "-n", vault, "-l", "westeurope")
    bsrv.cli("backup", "policy", "set", "-v", vault, "-n", "week", "--time", "03:00", "--retention-days", "7")
    disk, vm = unique("d"), unique("vm")
    bsrv.cli("disk", "create", "-n", disk, "-z", "1")
    bsrv.cli("vm", "create", "-n", vm, "--attach-disks", disk)
    bsrv.cli("backup", "protection", "enable-for-vm", "-v", vault, "--vm", vm, "-p", "week")
    assert bsrv.cli("backup", "recoverypoint", "list", "-v", vault, "-c", vm, "-i", vm) == []

    # A day later the daily run time has passed: the schedule backs the machine up once.
    ran = bsrv.cli("clock", "advance", "--by", "P1D")["actions"]
    assert any(e["operationName"] == "BackupTrigger" and e["resource"].endswith(vault) for e in ran), ran
    [first] = bsrv.cli("backup", "recoverypoint", "list", "-v", vault, "-c", vm, "-i", vm)
    again = bsrv.cli("clock", "advance", "--by", "PT1M")["actions"]
    assert not any(e["operationName"] == "BackupTrigger" and e["resource"].endswith(vault) for e in again)
    jobs = bsrv.cli("backup", "job", "list", "-v", vault)
    assert [j["properties"]["operation"] for j in jobs].count("Backup") == 1

    # Past its seven days the point is deleted, and newer ones stay.
    ran = bsrv.cli("clock", "advance", "--by", "P8D")["actions"]
    assert any(e["operationName"] == "BackupRecoveryPointExpire" and first["name"] in e["properties"]["id"]
               for e in ran), ran
    names = [p["name"] for p in bsrv.cli("backup", "recoverypoint", "list", "-v", vault, "-c", vm, "-i", vm)]
    assert first["name"] not in names and len(names) == 1


def test_an_ade_backup_keeps_the_secret_and_a_kek_backup_taken_by_the_vault_identity(bsrv):
    import base64
    from azure.keyvault.keys import KeyClient
    from azure.keyvault.secrets import SecretClient
    kv = "sdk-bk-ade"
    bsrv.cli("keyvault", "create", "-n", kv, "-l", "westeurope", "--enabled-for-disk-encryption", "true",
             "--enable-rbac-authorization", "false")
    kek_name = unique("kek")
    kek = bsrv.cli("keyvault", "key", "create", "--vault-name", kv, "-n", kek_name, "--kty", "RSA")["key"]["kid"]
    disk, vm = unique("d"), unique("vm")
    bsrv.cli("disk", "create", "-n", disk, "-z", "1")
    bsrv.cli("vm", "create", "-n", vm, "--attach-disks", disk)
    bsrv.cli("vm", "encryption", "enable", "-n", vm, "--disk-encryption-keyvault", kv, "--volume-type", "DATA",
             "--key-encryption-key", kek, "--encrypt-format-all")
    vault = unique("rsv")
    identity = bsrv.cli("backup", "vault", "create", "-n", vault, "-l", "westeurope")["identity"]["principalId"]
    bsrv.cli("backup", "protection", "enable-for-vm", "-v", vault, "--vm", vm, "-p", "DefaultPolicy")

    # Without the documented permissions the backup fails, naming them; nothing is kept.
    job = bsrv.cli("backup", "protection", "backup-now", "-v", vault, "-c", vm, "-i", vm)
    assert job["properties"]["status"] == "Failed"
    message = job["properties"]["errorDetails"][0]["errorString"]
    assert "backup, get and list" in message and "secret permissions get and list" in message, message
    assert bsrv.cli("backup", "recoverypoint", "list", "-v", vault, "-c", vm, "-i", vm) == []

    bsrv.cli("keyvault", "set-policy", "--name", kv, "--object-id", identity, "--key-permissions", "backup", "get",
             "list", "--secret-permissions", "get", "list")
    job = bsrv.cli("backup", "protection", "backup-now", "-v", vault, "-c", vm, "-i", vm)
    assert job["properties"]["status"] == "Completed", job
    [point] = bsrv.cli("backup", "recoverypoint", "list", "-v", vault, "-c", vm, "-i", vm)
    assert point["properties"]["isSourceVMEncrypted"] is True
    kas = point["properties"]["keyAndSecret"]
    secret_url = bsrv.cli("disk", "show", "-n", disk)["properties"]["encryptionSettingsCollection"][
        "encryptionSettings"][0]["diskEncryptionKey"]["secretUrl"]
    assert kas["bekDetails"]["secretUrl"] == secret_url and kas["encryptionMechanism"] == "SinglePass"
    assert kas["bekDetails"]["contentType"] == "Wrapped BEK" and kas["kekDetails"]["keyUrl"] == kek
    name, version = secret_url.split("/")[-2:]
    secrets = SecretClient(bsrv.vault_url(kv), bsrv.credential(), connection_verify=bsrv.env["ATREST_CA"])
    assert kas["bekDetails"]["secretData"] == secrets.get_secret(name, version).value
    # The secret's value is nowhere in the state in the clear.
    raw = b"".join(f.read_bytes() for f in bsrv.data_dir.glob("*.db*"))
    assert kas["bekDetails"]["secretData"].encode() not in raw

    # The machine, its disk, the BEK secret and the KEK all deleted, the secret and the key
    # purged: the keys come back from the recovery point, then the machine, which starts.
    bsrv.cli("vm", "delete", "-n", vm)
    bsrv.cli("disk", "delete", "-n", disk)
    secrets.begin_delete_secret(name).result()
    secrets.purge_deleted_secret(name)
    keys = KeyClient(bsrv.vault_url(kv), bsrv.credential(), connection_verify=bsrv.env["ATREST_CA"])
    keys.begin_delete_key(kek_name).result()
    keys.purge_deleted_key(kek_name)
    [back] = bsrv.cli("backup", "restore", "restore-keys", "-v", vault, "-c", vm, "-i", vm, "-r", point["name"])
    assert back["kekUrl"] == kek and back["secretUrl"].startswith(bsrv.vault_url(kv) + f"/secrets/{name}/")
    assert keys.get_key(kek_name).id == kek, "the KEK's versions come back with it"
    target = unique("vm")
    job = bsrv.cli("backup", "restore", "restore-disks", "-v", vault, "-c", vm, "-i", vm, "-r", point["name"],
                   "--target-vm-name", target, "--secret-url", back["secretUrl"], "--kek-url", back["kekUrl"])
    assert job["properties"]["status"] == "Completed", job
    started = bsrv.cli("vm", "start", "-n", target)
    assert "bekVolume" in started["properties"]["storageProfile"]
    # The restored volume opens with the restored passphrase (unwrapped with the restored KEK).
    from azure.keyvault.keys.crypto import CryptographyClient, KeyWrapAlgorithm
    restored_secret = secrets.get_secret(name)
    passphrase = CryptographyClient(kek, bsrv.credential(), connection_verify=bsrv.env["ATREST_CA"]).unwrap_key(
        KeyWrapAlgorithm.rsa_oaep, base64.b64decode(restored_secret.value)).key
    uri = started["properties"]["storageProfile"]["dataDisks"][0]["nbdUri"]
    header = bsrv.data_dir / "restored-header"
    subprocess.run(["qemu-img", "dd", "-f", "raw", "-O", "raw", "bs=1M", "count=17", f"if={uri}", f"of={header}"],
                   check=True, capture_output=True, timeout=60)
    keyfile = bsrv.data_dir / "restored-passphrase"
    keyfile.write_bytes(passphrase)
    subprocess.run(["cryptsetup", "open", "--test-passphrase", "--key-file", str(keyfile), str(header)],
                   check=True, capture_output=True, timeout=60)
    keyfile.unlink()
    bsrv.cli("vm", "stop", "-n", target)


def test_a_kek_that_belongs_to_a_certificate_fails_the_backup_naming_it(bsrv):
    """Azure Backup protects ADE machines whose key-encryption keys are standalone keys:
    with a certificate's key as the KEK, the backup job fails and names the certificate."""
    kv = unique("bkc")
    bsrv.cli("keyvault", "create", "-n", kv, "-l", "westeurope", "--enabled-for-disk-encryption", "true",
             "--enable-rbac-authorization", "false")
    cert = unique("kekcert")
    bsrv.cli("keyvault", "certificate", "create", "--vault-name", kv, "-n", cert,
             "-p", '{"issuer": {"name": "Self"}, "x509_props": {"subject": "CN=kek"}}')
    kek = bsrv.cli("keyvault", "key", "show", "--vault-name", kv, "-n", cert)
    assert kek["managed"] is True
    disk, vm = unique("d"), unique("vm")
    bsrv.cli("disk", "create", "-n", disk, "-z", "1")
    bsrv.cli("vm", "create", "-n", vm, "--attach-disks", disk)
    bsrv.cli("vm", "encryption", "enable", "-n", vm, "--disk-encryption-keyvault", kv, "--volume-type", "DATA",
             "--key-encryption-key", kek["key"]["kid"], "--encrypt-format-all")
    vault = unique("rsv")
    identity = bsrv.cli("backup", "vault", "create", "-n", vault, "-l", "westeurope")["identity"]["principalId"]
    bsrv.cli("keyvault", "set-policy", "--name", kv, "--object-id", identity, "--key-permissions", "backup", "get",
             "list", "--secret-permissions", "get", "list")
    bsrv.cli("backup", "protection", "enable-for-vm", "-v", vault, "--vm", vm, "-p", "DefaultPolicy")
    job = bsrv.cli("backup", "protection", "backup-now", "-v", vault, "-c", vm, "-i", vm)
    assert job["properties"]["status"] == "Failed"
    error = job["properties"]["errorDetails"][0]
    assert error["errorCode"] == "UserErrorKekBelongsToCertificate" and "certificate" in error["errorString"], error
    assert bsrv.cli("backup", "recoverypoint", "list", "-v", vault, "-c", vm, "-i", vm) == []


def test_a_server_killed_during_backups_keeps_consistent_points(workdir):
    """SIGKILL while backups of a running machine run back to back and a writer changes
    its disks in order (the first disk, then the second): after a restart, every point the
    vault lists restores disks that show the second disk's write only with the first's, and
    the next backup completes. The first disk has a customer key: once the points and the
    disks are gone, its disk encryption set can be deleted, so no copy the kill left behind
    survives the next scheduler pass."""
    import os
    import signal
    import threading
    from azure.mgmt.recoveryservicesbackup.models import (
        AzureIaaSComputeVMProtectedItem, BackupRequestResource, IaasVMBackupRequest, IaasVMRestoreRequest,
        ProtectedItemResource, RestoreRequestResource)
    srv = Server(workdir / "backup-crash").start()
    kv = unique("ckv")
    srv.cli("keyvault", "create", "-n", kv, "-l", "westeurope", "--enable-purge-protection", "true")
    kid = srv.cli("keyvault", "key", "create", "--vault-name", kv, "-n", "cmk", "--kty", "RSA")["key"]["kid"]
    des = srv.cli("disk-encryption-set", "create", "-n", unique("des"), "--key-url", kid, "--source-vault", kv)
    srv.cli("role", "assignment", "create", "--assignee", des["identity"]["principalId"], "--role",
            "Key Vault Crypto Service Encryption User", "--scope", srv.vault_scope(kv))
    disks = [unique("d"), unique("d")]
    srv.cli("disk", "create", "-n", disks[0], "-z", "1", "--disk-encryption-set", des["name"])
    srv.cli("disk", "create", "-n", disks[1], "-z", "1")
    vm = unique("vm")
    srv.cli("vm", "create", "-n", vm, "--attach-disks", *disks)
    uris = [d["nbdUri"] for d in srv.cli("vm", "start", "-n", vm)["properties"]["storageProfile"]["dataDisks"]]
    _, backup = clients(srv)
    vault = new_vault(srv)
    default_id = backup.protection_policies.get(vault.name, RG, "DefaultPolicy").id
    container, item = names(vm)
    vm_id = srv.cli("vm", "show", "-n", vm)["id"]
    backup.protected_items.begin_create_or_update(
        vault.name, RG, "Azure", container, item,
        ProtectedItemResource(properties=AzureIaaSComputeVMProtectedItem(source_resource_id=vm_id,
                                                                          policy_id=default_id))).result()

    for uri in uris:  # round 0: the byte before round 1's
        qemu_io(uri, f"write -P 250 0 {MiB}")
    stop = threading.Event()

    def writer():
        # Round n writes byte n over the first MiB of the first disk, then of the second.
        n = 0
        while not stop.is_set():
            n = n % 250 + 1
            for uri in uris:
                done = subprocess.run(["qemu-io", "-f", "raw", "-c", f"write -P {n} 0 {MiB}", uri],
                                      capture_output=True, timeout=30)
                if done.returncode != 0:
                    return

    def backups():
        while not stop.is_set():
            try:
                backup.backups.trigger(vault.name, RG, "Azure", container, item,
                                       BackupRequestResource(properties=IaasVMBackupRequest()))
            except Exception:  # the server is gone
                return

    threads = [threading.Thread(target=writer), threading.Thread(target=backups)]
    for t in threads:
        t.start()
    time.sleep(2.5)
    os.kill(srv.proc.pid, signal.SIGKILL)
    srv.proc.wait()
    stop.set()
    for t in threads:
        t.join(timeout=60)
    srv.start()
    _, backup = clients(srv)

    points = list(backup.recovery_points.list(vault.name, RG, "Azure", container, item))
    assert len(points) >= 2, "backups ran before the kill"
    targets = []
    for point in points[:6]:
        target = unique("vm")
        targets.append(target)
        props = IaasVMRestoreRequest(recovery_point_id=point.name, recovery_type="AlternateLocation",
                                     region="westeurope", target_virtual_machine_id=target,
                                     original_storage_account_option=False, create_new_cloud_service=False)
        backup.restores.begin_trigger(vault.name, RG, "Azure", container, item, point.name,
                                      RestoreRequestResource(properties=props)).result()
        restored = srv.cli("vm", "start", "-n", target)["properties"]["storageProfile"]["dataDisks"]
        first, second = [first_byte(d["nbdUri"]) for d in restored]
        srv.cli("vm", "stop", "-n", target)
        # The second disk is at most one round behind or level with the first, never ahead.
        assert second == first or second == (first - 2) % 250 + 1, (point.name, first, second)
    job = srv.cli("backup", "protection", "backup-now", "-v", vault.name, "-c", vm, "-i", vm)
    assert job["properties"]["status"] == "Completed"
    assert all(j["properties"]["status"] in ("Completed", "Failed") for j in srv.cli("backup", "job", "list", "-v", vault.name))

    # Everything that used the set goes; a scheduler pass sweeps any copy no point names.
    srv.cli("backup", "protection", "disable", "-v", vault.name, "-c", vm, "-i", vm, "--delete-backup-data", "true")
    for machine in [vm, *targets]:
        shown = srv.cli("vm", "show", "-n", machine)["properties"]["storageProfile"]["dataDisks"]
        srv.cli("vm", "stop", "-n", machine)
        srv.cli("vm", "delete", "-n", machine)
        for disk in shown:
            srv.cli("disk", "delete", "-n", disk["name"])
    srv.cli("clock", "advance", "--by", "PT1M")
    srv.cli("disk-encryption-set", "delete", "-n", des["name"])
    assert srv.cli("monitor", "audit", "verify")["verified"] is True
    assert srv.stop() == 0, srv.log()


def first_byte(uri):
    """The first byte of a disk served over NBD (qemu-io's hex dump of offset 0)."""
    out = qemu_io(uri, "read -v 0 16")
    return int(out.split(":", 1)[1].split()[0], 16)
