"""Microsoft's management clients (azure-mgmt-keyvault, azure-mgmt-authorization,
azure-mgmt-compute) against atrest's ARM API, as a platform team's provisioning code drives
them: a vault, a disk encryption set with its system identity granted a role on the vault,
a customer-key disk and a platform-key disk, each `begin_create_or_update(...).result()`
returning the resource."""
import uuid

import pytest
from azure.core.exceptions import HttpResponseError
from azure.mgmt.authorization import AuthorizationManagementClient
from azure.mgmt.authorization.models import RoleAssignmentCreateParameters
from azure.mgmt.compute import ComputeManagementClient
from azure.mgmt.compute.models import (CreationData, Disk, DiskEncryptionSet, Encryption,
                                       EncryptionSetIdentity, KeyForDiskEncryptionSet, SourceVault)
from azure.mgmt.keyvault import KeyVaultManagementClient
from azure.mgmt.keyvault.models import Sku, VaultCreateOrUpdateParameters, VaultProperties

LOCATION = "westeurope"
GROUP = "default"
ROLE = "Key Vault Crypto Service Encryption User"


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def clients(server):
    return {
        "keyvault": server.management_client(KeyVaultManagementClient),
        "authorization": server.management_client(AuthorizationManagementClient),
        "compute": server.management_client(ComputeManagementClient),
    }


def test_vault_set_role_and_disks_through_the_management_clients(server, clients):
    kv, auth, compute = clients["keyvault"], clients["authorization"], clients["compute"]
    vault_name = unique("mgmt")
    vault = kv.vaults.begin_create_or_update(GROUP, vault_name, VaultCreateOrUpdateParameters(
        location=LOCATION,
        properties=VaultProperties(tenant_id=server.env["ATREST_TENANT_ID"], sku=Sku(family="A", name="standard"),
                                   enable_rbac_authorization=True, enable_purge_protection=True,
                                   soft_delete_retention_in_days=7),
    )).result()
    assert vault.name == vault_name and vault.properties.enable_purge_protection is True
    assert vault.properties.provisioning_state == "Succeeded"
    assert kv.vaults.get(GROUP, vault_name).id == vault.id

    key = server.cli("keyvault", "key", "create", "--vault-name", vault_name, "--name", "des-key",
                     "--kty", "RSA", "--size", "2048")
    key_url = key["key"]["kid"]

    des = compute.disk_encryption_sets.begin_create_or_update(GROUP, unique("des"), DiskEncryptionSet(
        location=LOCATION,
        identity=EncryptionSetIdentity(type="SystemAssigned"),
        encryption_type="EncryptionAtRestWithCustomerKey",
        active_key=KeyForDiskEncryptionSet(key_url=key_url, source_vault=SourceVault(id=vault.id)),
    )).result()
    assert des.active_key.key_url == key_url
    assert des.identity.type == "SystemAssigned" and des.identity.principal_id

    role = next(d for d in auth.role_definitions.list(vault.id) if d.role_name == ROLE)
    assignment = auth.role_assignments.create(vault.id, str(uuid.uuid4()), RoleAssignmentCreateParameters(
        role_definition_id=role.id, principal_id=des.identity.principal_id, principal_type="ServicePrincipal"))
    assert assignment.principal_id == des.identity.principal_id and assignment.scope.lower() == vault.id.lower()

    cmk = compute.disks.begin_create_or_update(GROUP, unique("cmk"), Disk(
        location=LOCATION, creation_data=CreationData(create_option="Empty"), disk_size_gb=1,
        encryption=Encryption(type="EncryptionAtRestWithCustomerKey", disk_encryption_set_id=des.id),
    )).result()
    assert cmk.encryption.type == "EncryptionAtRestWithCustomerKey"
    assert cmk.encryption.disk_encryption_set_id.lower() == des.id.lower()
    assert cmk.disk_size_gb == 1 and cmk.provisioning_state == "Succeeded"

    pmk = compute.disks.begin_create_or_update(GROUP, unique("pmk"), Disk(
        location=LOCATION, creation_data=CreationData(create_option="Empty"), disk_size_gb=1,
    )).result()
    assert pmk.encryption.type == "EncryptionAtRestWithPlatformKey"

    # Updating through the same call answers 200 with the resource, and changes what was asked.
    grown = compute.disks.begin_create_or_update(GROUP, pmk.name, Disk(
        location=LOCATION, creation_data=CreationData(create_option="Empty"), disk_size_gb=2,
    )).result()
    assert grown.disk_size_gb == 2
    assert {d.name for d in compute.disks.list_by_resource_group(GROUP)} >= {cmk.name, pmk.name}

    compute.disks.begin_delete(GROUP, pmk.name).result()
    with pytest.raises(HttpResponseError) as err:
        compute.disks.get(GROUP, pmk.name)
    assert err.value.status_code == 404


def test_custom_roles_decide_who_may_export_a_disk(server, clients):
    from azure.mgmt.authorization.models import Permission, RoleDefinition
    from azure.mgmt.compute.models import GrantAccessData

    auth, compute = clients["authorization"], clients["compute"]
    sub_scope = f"/subscriptions/{server.env['ATREST_SUBSCRIPTION_ID']}"
    disk = compute.disks.begin_create_or_update(GROUP, unique("guarded"), Disk(
        location=LOCATION, creation_data=CreationData(create_option="Empty"), disk_size_gb=1)).result()

    def custom_role(name, actions, not_actions=()):
        return auth.role_definitions.create_or_update(sub_scope, str(uuid.uuid4()), RoleDefinition(
            role_name=name, description="test", assignable_scopes=[sub_scope],
            permissions=[Permission(actions=list(actions), not_actions=list(not_actions))]))

    reader = custom_role(unique("Disk Reader"), ["Microsoft.Compute/disks/read"])
    no_export = custom_role(unique("Disk Operator"), ["Microsoft.Compute/disks/*"],
                            ["Microsoft.Compute/disks/beginGetAccess/action"])
    exporter = custom_role(unique("Disk Exporter"), ["Microsoft.Compute/disks/read",
                                                     "Microsoft.Compute/disks/beginGetAccess/action",
                                                     "Microsoft.Compute/disks/endGetAccess/action"])
    assert reader.role_type == "CustomRole" and reader.permissions[0].actions == ["Microsoft.Compute/disks/read"]
    listed = {r.role_name for r in auth.role_definitions.list(sub_scope, filter="type eq 'CustomRole'")}
    assert {reader.role_name, no_export.role_name, exporter.role_name} <= listed

    read_access = GrantAccessData(access="Read", duration_in_seconds=60)
    for role, may_export in ((reader, False), (no_export, False), (exporter, True)):
        sp, credential = server.new_principal("custom-role")
        auth.role_assignments.create(disk.id, str(uuid.uuid4()), RoleAssignmentCreateParameters(
            role_definition_id=role.id, principal_id=sp["objectId"], principal_type="ServicePrincipal"))
        theirs = server.management_client(ComputeManagementClient, credential)
        assert theirs.disks.get(GROUP, disk.name).id == disk.id
        if may_export:
            assert theirs.disks.begin_grant_access(GROUP, disk.name, read_access).result().access_sas
            theirs.disks.begin_revoke_access(GROUP, disk.name).result()
        else:
            with pytest.raises(HttpResponseError) as err:
                theirs.disks.begin_grant_access(GROUP, disk.name, read_access).result()
            assert err.value.status_code == 403 and "beginGetAccess" in str(err.value)

    # The rules of custom roles, each refused by name.
    with pytest.raises(HttpResponseError) as err:
        custom_role(reader.role_name, ["Microsoft.Compute/disks/read"])
    assert err.value.status_code == 409
    with pytest.raises(HttpResponseError) as err:
        auth.role_definitions.delete(sub_scope, reader.name)
    assert err.value.status_code == 409
    with pytest.raises(HttpResponseError) as err:
        custom_role(unique("Nothing"), [])
    assert err.value.status_code == 400
