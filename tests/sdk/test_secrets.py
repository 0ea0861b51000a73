"""The secrets data plane through the unmodified azure-keyvault-secrets SDK."""
import datetime as dt
import uuid

import pytest
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.identity import DefaultAzureCredential
from azure.keyvault.secrets import SecretClient

API_VERSIONS = [None, "7.4"]  # None: the SDK's default (2026-04-01 for this release)


def unique(prefix="s"):
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture(params=API_VERSIONS, ids=["default", "7.4"])
def client_for(request, server):
    credential = DefaultAzureCredential()

    def make(vault):
        kwargs = {"api_version": request.param} if request.param else {}
        return SecretClient(server.vault_url(vault), credential, **kwargs)

    return make


@pytest.fixture
def client(client_for):
    return client_for("sdk-main")


def test_set_get_update_versions(client):
    name = unique()
    first = client.set_secret(name, "v1", content_type="text/plain", tags={"env": "test"})
    second = client.set_secret(name, "v2")
    assert first.properties.version != second.properties.version
    assert first.id == f"{client.vault_url}/secrets/{name}/{first.properties.version}"

    latest = client.get_secret(name)
    assert latest.value == "v2" and latest.properties.version == second.properties.version
    old = client.get_secret(name, first.properties.version)
    assert old.value == "v1"
    assert old.properties.content_type == "text/plain" and old.properties.tags == {"env": "test"}
    assert old.properties.recovery_level == "CustomizedRecoverable+Purgeable"  # retention 7 < 90
    assert old.properties.recoverable_days == 7

    expires = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) + dt.timedelta(days=30)
    updated = client.update_secret_properties(name, content_type="application/json", tags={"a": "b"}, expires_on=expires)
    assert updated.content_type == "application/json" and updated.tags == {"a": "b"}
    assert updated.expires_on == expires
    assert updated.version == second.properties.version
    # Updating one version leaves the other alone.
    assert client.get_secret(name, first.properties.version).properties.content_type == "text/plain"

    versions = list(client.list_properties_of_secret_versions(name))
    assert {v.version for v in versions} == {first.properties.version, second.properties.version}
    assert all(v.id.endswith(v.version) for v in versions)
    # A name never set lists no versions, as Key Vault answers (Microsoft's secrets sample relies on it).
    assert list(client.list_properties_of_secret_versions(unique("never-set"))) == []


def test_list_pages(client):
    prefix = unique("page")
    names = {f"{prefix}-{i}" for i in range(5)}
    for n in names:
        client.set_secret(n, "x")
    pages = list(client.list_properties_of_secrets(max_page_size=2).by_page())
    listed = [p.name for page in pages for p in page]
    assert names <= set(listed)
    assert len(listed) == len(set(listed)), "paging repeats items"
    assert len(pages) >= 3
    # Listings never carry values.
    assert all(getattr(p, "value", None) is None for page in client.list_properties_of_secrets().by_page() for p in page)


def test_soft_delete_recover_purge(client):
    name = unique()
    client.set_secret(name, "gone soon")
    deleted = client.begin_delete_secret(name).result()
    assert deleted.recovery_id == f"{client.vault_url}/deletedsecrets/{name}"
    assert deleted.deleted_date is not None
    assert deleted.scheduled_purge_date - deleted.deleted_date == dt.timedelta(days=7)

    with pytest.raises(ResourceNotFoundError):
        client.get_secret(name)
    assert client.get_deleted_secret(name).name == name
    assert name in {d.name for d in client.list_deleted_secrets()}

    # A deleted name is reserved.
    with pytest.raises(ResourceExistsError) as err:
        client.set_secret(name, "again")
    assert "ObjectIsDeletedButRecoverable" in str(err.value) or "deleted but recoverable" in str(err.value)

    recovered = client.begin_recover_deleted_secret(name).result()
    assert recovered.name == name
    assert client.get_secret(name).value == "gone soon"

    client.begin_delete_secret(name).result()
    client.purge_deleted_secret(name)
    with pytest.raises(ResourceNotFoundError):
        client.get_deleted_secret(name)
    client.set_secret(name, "name free again")


def test_purge_protection_refuses_purge(client_for):
    client = client_for("sdk-pp")
    name = unique()
    client.set_secret(name, "protected")
    deleted = client.begin_delete_secret(name).result()
    with pytest.raises(HttpResponseError) as err:
        client.purge_deleted_secret(name)
    assert err.value.status_code == 403
    assert client.get_deleted_secret(name).recovery_id == deleted.recovery_id
    assert client.get_deleted_secret(name).properties.recovery_level == "CustomizedRecoverable"


def test_backup_restore(client_for):
    client = client_for("sdk-main")
    name = unique()
    client.set_secret(name, "backed up", tags={"k": "v"})
    blob = client.backup_secret(name)
    assert b"backed up" not in blob

    with pytest.raises(ResourceExistsError):
        client.restore_secret_backup(blob)

    # Same geography (Europe): restores, versions and tags intact.
    same_geo = client_for("sdk-restore")
    restored = same_geo.restore_secret_backup(blob)
    assert restored.name == name and restored.tags == {"k": "v"}
    assert same_geo.get_secret(name).value == "backed up"

    # Another geography is refused, and nothing is created there.
    other_geo = client_for("sdk-geo")
    with pytest.raises(HttpResponseError) as err:
        other_geo.restore_secret_backup(blob)
    assert err.value.status_code == 400
    with pytest.raises(ResourceNotFoundError):
        other_geo.get_secret(name)

    # A tampered blob is refused.
    tampered = bytearray(blob)
    tampered[len(tampered) // 2] ^= 1
    with pytest.raises(HttpResponseError) as err:
        client_for("sdk-restore").restore_secret_backup(bytes(tampered))
    assert err.value.status_code == 400


def forbidden(call):
    with pytest.raises(HttpResponseError) as err:
        call()
    assert err.value.status_code == 403
    return err.value


def test_attributes_enforced(client):
    now = dt.datetime.now(dt.timezone.utc)
    disabled = unique()
    client.set_secret(disabled, "x", enabled=False)
    e = forbidden(lambda: client.get_secret(disabled))
    assert "Operation get is not allowed on a disabled secret" in e.message
    assert e.error.code == "Forbidden"
    client.update_secret_properties(disabled, enabled=True)
    assert client.get_secret(disabled).value == "x"

    expired = unique()
    client.set_secret(expired, "x", expires_on=now - dt.timedelta(hours=1))
    e = forbidden(lambda: client.get_secret(expired))
    assert "expired" in e.message.lower()

    early = unique()
    client.set_secret(early, "x", not_before=now + dt.timedelta(hours=1))
    e = forbidden(lambda: client.get_secret(early))
    assert "not yet valid" in e.message.lower() or "not valid before" in e.message.lower()
    # Metadata stays readable.
    assert any(p.name == early and p.not_before for p in client.list_properties_of_secrets())


@pytest.mark.parametrize(
    "kwargs",
    [
        {"name": "bad_name", "value": "x"},
        {"name": "a" * 128, "value": "x"},
        {"name": None, "value": "x" * (25 * 1024 + 1)},
        {"name": None, "value": "x", "content_type": "c" * 256},
        {"name": None, "value": "x", "tags": {f"t{i}": "v" for i in range(16)}},
    ],
    ids=["bad-name", "long-name", "oversize-value", "long-content-type", "too-many-tags"],
)
def test_limits(client, kwargs):
    kwargs = dict(kwargs)
    name = kwargs.pop("name") or unique()
    value = kwargs.pop("value")
    with pytest.raises(HttpResponseError) as err:
        client.set_secret(name, value, **kwargs)
    assert err.value.status_code == 400
    assert err.value.error.code == "BadParameter"
    if name != "bad_name" and len(name) < 128:
        with pytest.raises(ResourceNotFoundError):
            client.get_secret(name)


def test_limits_at_the_edge_are_accepted(client):
    name = unique()
    value = "x" * (25 * 1024)
    client.set_secret(name, value, content_type="c" * 255, tags={f"t{i}": "v" for i in range(15)})
    assert client.get_secret(name).value == value


def test_every_api_version_shape(server):
    credential = DefaultAzureCredential()
    name = unique()
    SecretClient(server.vault_url("sdk-main"), credential).set_secret(name, "all versions")
    for version in ["7.0", "7.1", "7.2", "7.3", "7.4", "7.5", "7.6", "2025-07-01", "2026-04-01"]:
        c = SecretClient(server.vault_url("sdk-main"), credential, api_version=version)
        assert c.get_secret(name).value == "all versions", version
