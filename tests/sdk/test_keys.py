"""The keys data plane through the unmodified azure-keyvault-keys SDK: KeyClient and
CryptographyClient, interoperating with Python's `cryptography`."""
import hashlib
import os
import uuid

import pytest
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.identity import DefaultAzureCredential
from azure.keyvault.keys import JsonWebKey, KeyClient, KeyCurveName, KeyType
from azure.keyvault.keys.crypto import CryptographyClient, EncryptionAlgorithm, KeyWrapAlgorithm, SignatureAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

PRIVATE_FIELDS = ("d", "p", "q", "dp", "dq", "qi", "k")


def unique(prefix="k"):
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture(params=[None, "7.4"], ids=["default", "7.4"])
def api_version(request):
    return request.param


@pytest.fixture
def credential(server):
    return DefaultAzureCredential()


@pytest.fixture
def keys(server, credential, api_version):
    kwargs = {"api_version": api_version} if api_version else {}
    return KeyClient(server.vault_url("sdk-main"), credential, **kwargs)


def crypto(key, credential, api_version):
    kwargs = {"api_version": api_version} if api_version else {}
    return CryptographyClient(key, credential, **kwargs)


def test_create_get_list_update(keys):
    name = unique()
    rsa_key = keys.create_rsa_key(name, size=3072, hardware_protected=True, tags={"t": "1"})
    assert rsa_key.key_type == KeyType.rsa_hsm
    assert len(rsa_key.key.n) == 384
    assert all(getattr(rsa_key.key, f, None) is None for f in PRIVATE_FIELDS)
    fetched = keys.get_key(name)
    assert fetched.id == rsa_key.id and fetched.properties.tags == {"t": "1"}
    second = keys.create_rsa_key(name)
    assert {p.version for p in keys.list_properties_of_key_versions(name)} == {rsa_key.properties.version, second.properties.version}
    assert keys.get_key(name, rsa_key.properties.version).key.n == rsa_key.key.n
    assert list(keys.list_properties_of_key_versions(name + "-never-created")) == []
    assert name in {p.name for p in keys.list_properties_of_keys()}

    updated = keys.update_key_properties(name, key_operations=["sign", "verify"], enabled=False, tags={"u": "2"})
    assert updated.key_operations == ["sign", "verify"] and updated.properties.enabled is False

    for curve in [KeyCurveName.p_256, KeyCurveName.p_384, KeyCurveName.p_521, KeyCurveName.p_256_k]:
        k = keys.create_ec_key(unique("ec"), curve=curve)
        assert k.key.crv == curve and k.key.x and k.key.y and k.key.d is None
    for size in [128, 192, 256]:
        k = keys.create_oct_key(unique("oct"), size=size, hardware_protected=True)
        assert k.key_type == KeyType.oct_hsm and k.key.k is None


def test_soft_delete_recover_purge_backup_restore(keys):
    name = unique()
    created = keys.create_rsa_key(name)
    blob = keys.backup_key(name)
    deleted = keys.begin_delete_key(name).result()
    assert deleted.recovery_id.endswith(f"/deletedkeys/{name}") and deleted.scheduled_purge_date
    with pytest.raises(ResourceExistsError):
        keys.create_rsa_key(name)
    assert name in {k.name for k in keys.list_deleted_keys()}
    keys.begin_recover_deleted_key(name).result()
    assert keys.get_key(name).id == created.id
    with pytest.raises(ResourceExistsError):
        keys.restore_key_backup(blob)
    keys.begin_delete_key(name).result()
    keys.purge_deleted_key(name)
    with pytest.raises(ResourceNotFoundError):
        keys.get_deleted_key(name)
    restored = keys.restore_key_backup(blob)
    assert restored.id == created.id and restored.key.n == created.key.n


def test_rsa_operations_interoperate(keys, credential, api_version):
    key = keys.create_rsa_key(unique(), size=2048)
    client = crypto(key, credential, api_version)
    public = rsa.RSAPublicNumbers(int.from_bytes(key.key.e, "big"), int.from_bytes(key.key.n, "big")).public_key()
    data_key = os.urandom(32)

    for alg in [KeyWrapAlgorithm.rsa_oaep_256, KeyWrapAlgorithm.rsa_oaep, KeyWrapAlgorithm.rsa1_5]:
        wrapped = client.wrap_key(alg, data_key)
        assert client.unwrap_key(alg, wrapped.encrypted_key).key == data_key

    # Encrypted locally with the public key, decrypted by the server.
    local = public.encrypt(data_key, padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None))
    assert client.decrypt(EncryptionAlgorithm.rsa_oaep_256, local).plaintext == data_key
    local = public.encrypt(data_key, padding.PKCS1v15())
    assert client.decrypt(EncryptionAlgorithm.rsa1_5, local).plaintext == data_key

    digest = hashlib.sha256(b"message").digest()
    for alg, pad in [(SignatureAlgorithm.rs256, padding.PKCS1v15()),
                     (SignatureAlgorithm.ps256, padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32))]:
        signature = client.sign(alg, digest).signature
        public.verify(signature, digest, pad, utils.Prehashed(hashes.SHA256()))
        assert client.verify(alg, digest, signature).is_valid
        assert not client.verify(alg, hashlib.sha256(b"other").digest(), signature).is_valid
    for alg, h in [(SignatureAlgorithm.rs384, hashlib.sha384), (SignatureAlgorithm.ps512, hashlib.sha512)]:
        d = h(b"m").digest()
        assert client.verify(alg, d, client.sign(alg, d).signature).is_valid


def test_ec_signatures_verify_in_python(keys, credential, api_version):
    for curve, alg, h, pycurve in [
        (KeyCurveName.p_256, SignatureAlgorithm.es256, hashlib.sha256, ec.SECP256R1()),
        (KeyCurveName.p_384, SignatureAlgorithm.es384, hashlib.sha384, ec.SECP384R1()),
        (KeyCurveName.p_521, SignatureAlgorithm.es512, hashlib.sha512, ec.SECP521R1()),
        (KeyCurveName.p_256_k, SignatureAlgorithm.es256_k, hashlib.sha256, ec.SECP256K1()),
    ]:
        key = keys.create_ec_key(unique("ec"), curve=curve)
        client = crypto(key, credential, api_version)
        digest = h(b"message").digest()
        raw = client.sign(alg, digest).signature
        half = len(raw) // 2
        der = utils.encode_dss_signature(int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big"))
        public = ec.EllipticCurvePublicNumbers(int.from_bytes(key.key.x, "big"), int.from_bytes(key.key.y, "big"), pycurve).public_key()
        public.verify(der, digest, ec.ECDSA(utils.Prehashed({32: hashes.SHA256(), 48: hashes.SHA384(), 64: hashes.SHA512()}[len(digest)])))
        assert client.verify(alg, digest, raw).is_valid


def test_oct_operations(keys, credential, api_version):
    for size in [128, 192, 256]:
        key = keys.create_oct_key(unique("oct"), size=size, hardware_protected=True)
        client = crypto(key, credential, api_version)
        kw = getattr(KeyWrapAlgorithm, f"aes_{size}")
        cek = os.urandom(32)
        assert client.unwrap_key(kw, client.wrap_key(kw, cek).encrypted_key).key == cek
        gcm = getattr(EncryptionAlgorithm, f"a{size}_gcm")
        result = client.encrypt(gcm, b"hello gcm", additional_authenticated_data=b"aad")
        assert result.iv and result.tag
        assert client.decrypt(gcm, result.ciphertext, iv=result.iv, authentication_tag=result.tag,
                              additional_authenticated_data=b"aad").plaintext == b"hello gcm"
        cbcpad = getattr(EncryptionAlgorithm, f"a{size}_cbcpad")
        iv = os.urandom(16)
        result = client.encrypt(cbcpad, b"hello cbc", iv=iv)
        assert result.iv == iv
        assert client.decrypt(cbcpad, result.ciphertext, iv=iv).plaintext == b"hello cbc"


def test_import_python_generated_keys(keys, credential, api_version):
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    n = private.private_numbers()
    as_bytes = lambda i: i.to_bytes((i.bit_length() + 7) // 8, "big")
    jwk = JsonWebKey(kty="RSA", n=as_bytes(n.public_numbers.n), e=as_bytes(n.public_numbers.e), d=as_bytes(n.d),
                     p=as_bytes(n.p), q=as_bytes(n.q), dp=as_bytes(n.dmp1), dq=as_bytes(n.dmq1), qi=as_bytes(n.iqmp),
                     key_ops=["wrapKey", "unwrapKey", "sign"])
    imported = keys.import_key(unique("imp"), jwk)
    assert imported.key.n == as_bytes(n.public_numbers.n) and imported.key.d is None
    assert imported.key_operations == ["wrapKey", "unwrapKey", "sign"]
    wrapped = private.public_key().encrypt(b"k" * 32, padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None))
    assert crypto(imported, credential, api_version).unwrap_key(KeyWrapAlgorithm.rsa_oaep, wrapped).key == b"k" * 32

    # Integers written as DER thinks of them, with a leading zero byte (as Microsoft's own key
    # tests write them), are accepted and answered in canonical form.
    padded = lambda i: b"\x00" + as_bytes(i)
    jwk = JsonWebKey(kty="RSA", n=padded(n.public_numbers.n), e=as_bytes(n.public_numbers.e), d=padded(n.d),
                     p=padded(n.p), q=padded(n.q), dp=padded(n.dmp1), dq=padded(n.dmq1), qi=padded(n.iqmp))
    zero_led = keys.import_key(unique("imp"), jwk)
    assert zero_led.key.n == as_bytes(n.public_numbers.n)
    assert crypto(zero_led, credential, api_version).unwrap_key(KeyWrapAlgorithm.rsa_oaep, wrapped).key == b"k" * 32

    ec_private = ec.generate_private_key(ec.SECP256R1())
    numbers = ec_private.private_numbers()
    ec_jwk = JsonWebKey(kty="EC", crv="P-256", d=numbers.private_value.to_bytes(32, "big"),
                        x=numbers.public_numbers.x.to_bytes(32, "big"), y=numbers.public_numbers.y.to_bytes(32, "big"))
    ec_key = keys.import_key(unique("imp"), ec_jwk, hardware_protected=True)
    # EC coordinates with a leading zero byte, or without their leading zeros, name the same key.
    ec_padded = JsonWebKey(kty="EC", crv="P-256", d=b"\x00" + ec_jwk.d, x=b"\x00" + ec_jwk.x, y=b"\x00" + ec_jwk.y)
    assert keys.import_key(unique("imp"), ec_padded).key.x == ec_jwk.x
    assert ec_key.key_type == KeyType.ec_hsm
    digest = hashlib.sha256(b"x").digest()
    raw = crypto(ec_key, credential, api_version).sign(SignatureAlgorithm.es256, digest).signature
    der = utils.encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    ec_private.public_key().verify(der, digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))

    # Malformed private fields are refused, and nothing is created.
    bad = JsonWebKey(kty="RSA", n=as_bytes(n.public_numbers.n), e=as_bytes(n.public_numbers.e), d=b"\x01",
                     p=as_bytes(n.p), q=as_bytes(n.q), dp=as_bytes(n.dmp1), dq=as_bytes(n.dmq1), qi=as_bytes(n.iqmp))
    name = unique("bad")
    with pytest.raises(HttpResponseError) as err:
        keys.import_key(name, bad)
    assert err.value.status_code == 400
    with pytest.raises(HttpResponseError) as err:
        keys.import_key(name, JsonWebKey(kty="EC", crv="P-256", d=b"\x00" * 32, x=b"\x01" * 32, y=b"\x02" * 32))
    assert err.value.status_code == 400
    with pytest.raises(ResourceNotFoundError):
        keys.get_key(name)


def test_operation_errors(keys, credential, api_version):
    key = keys.create_rsa_key(unique(), key_operations=["wrapKey", "unwrapKey", "sign", "verify"])
    client = crypto(key, credential, api_version)

    def refused(call, status):
        with pytest.raises(HttpResponseError) as err:
            call()
        assert err.value.status_code == status, err.value.message
        return err.value

    # Wrong algorithm for the key type.
    refused(lambda: client.wrap_key(KeyWrapAlgorithm.aes_256, os.urandom(32)), 400)
    refused(lambda: client.sign(SignatureAlgorithm.es256, hashlib.sha256(b"m").digest()), 400)
    # Wrong digest length.
    e = refused(lambda: client.sign(SignatureAlgorithm.rs256, b"short"), 400)
    assert "digest" in e.message.lower()
    # Tampered ciphertext.
    wrapped = bytearray(client.wrap_key(KeyWrapAlgorithm.rsa_oaep_256, os.urandom(32)).encrypted_key)
    wrapped[5] ^= 1
    refused(lambda: client.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, bytes(wrapped)), 400)
    # Not in key_ops.
    e = refused(lambda: client.decrypt(EncryptionAlgorithm.rsa_oaep_256, bytes(256)), 403)
    assert "decrypt" in e.message
    # Disabled, then expired.
    keys.update_key_properties(key.name, enabled=False)
    e = refused(lambda: client.sign(SignatureAlgorithm.rs256, hashlib.sha256(b"m").digest()), 403)
    assert "disabled" in e.message
    import datetime as dt
    keys.update_key_properties(key.name, enabled=True, expires_on=dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=1))
    e = refused(lambda: client.sign(SignatureAlgorithm.rs256, hashlib.sha256(b"m").digest()), 403)
    assert "expired" in e.message


def test_random_bytes(keys):
    first = keys.get_random_bytes(32)
    assert len(first) == 32 and first != keys.get_random_bytes(32)
    with pytest.raises(HttpResponseError) as err:
        keys.get_random_bytes(129)  # over the service's limit
    assert err.value.status_code == 400


def test_no_private_key_bytes_at_rest(server, keys):
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    n = private.private_numbers()
    as_bytes = lambda i: i.to_bytes((i.bit_length() + 7) // 8, "big")
    jwk = JsonWebKey(kty="RSA", n=as_bytes(n.public_numbers.n), e=as_bytes(n.public_numbers.e), d=as_bytes(n.d),
                     p=as_bytes(n.p), q=as_bytes(n.q), dp=as_bytes(n.dmp1), dq=as_bytes(n.dmq1), qi=as_bytes(n.iqmp))
    name = unique("rest")
    keys.import_key(name, jwk)
    keys.backup_key(name)
    needles = [as_bytes(n.d)[:32], as_bytes(n.p)[:32], as_bytes(n.q)[:32]]
    for root, _, files in os.walk(server.data_dir):
        for f in files:
            data = open(os.path.join(root, f), "rb").read()
            assert not any(needle in data for needle in needles), f"private key bytes in {f}"


def test_rotate_keeps_old_versions_usable(keys, credential, api_version):
    for make in [lambda n: keys.create_rsa_key(n, size=3072, key_operations=["wrapKey", "unwrapKey"], tags={"app": "db"}),
                 lambda n: keys.create_ec_key(n, curve=KeyCurveName.p_384)]:
        name = unique("rot")
        first = make(name)
        rotated = keys.rotate_key(name)
        assert rotated.properties.version != first.properties.version
        assert rotated.key_type == first.key_type and rotated.key_operations == first.key_operations
        assert rotated.properties.tags == first.properties.tags
        assert (rotated.key.n is None or len(rotated.key.n) == len(first.key.n)) and rotated.key.crv == first.key.crv
        assert keys.get_key(name).properties.version == rotated.properties.version
    # Data wrapped under the old RSA version still unwraps with it.
    name = unique("rot")
    old = keys.create_rsa_key(name)
    wrapped = crypto(old, credential, api_version).wrap_key(KeyWrapAlgorithm.rsa_oaep_256, b"d" * 32)
    keys.rotate_key(name)
    assert crypto(old, credential, api_version).unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped.encrypted_key).key == b"d" * 32
    with pytest.raises(ResourceNotFoundError):
        keys.rotate_key(unique("missing"))


def test_cli_key_commands(server, tmp_path):
    import base64
    name = unique("cli")
    created = server.cli("keyvault", "key", "create", "--vault-name", "sdk-main", "-n", name, "--kty", "RSA", "--size", "2048",
                         "--protection", "hsm", "--ops", "encrypt", "decrypt", "sign", "verify")
    assert created["key"]["kty"] == "RSA-HSM" and "d" not in created["key"]
    plain = base64.b64encode(b"secret data").decode()
    enc = server.cli("keyvault", "key", "encrypt", "--vault-name", "sdk-main", "-n", name, "-a", "RSA-OAEP-256", "--value", plain)
    dec = server.cli("keyvault", "key", "decrypt", "--vault-name", "sdk-main", "-n", name, "-a", "RSA-OAEP-256", "--value", enc["value"])
    assert base64.urlsafe_b64decode(dec["value"] + "==") == b"secret data"
    digest = base64.b64encode(hashlib.sha256(b"m").digest()).decode()
    sig = server.cli("keyvault", "key", "sign", "--vault-name", "sdk-main", "-n", name, "-a", "RS256", "--value", digest)
    ok = server.cli("keyvault", "key", "verify", "--vault-name", "sdk-main", "-n", name, "-a", "RS256", "--value", sig["value"], "--digest", digest)
    assert ok == {"value": True}
    rotated = server.cli("keyvault", "key", "rotate", "--vault-name", "sdk-main", "-n", name)
    assert rotated["key"]["kid"] != created["key"]["kid"]
    policy_file = tmp_path / "policy.json"
    policy_file.write_text('{"lifetimeActions": [{"trigger": {"timeAfterCreate": "P30D"}, "action": {"type": "Rotate"}}]}')
    server.cli("keyvault", "key", "rotation-policy", "update", "--vault-name", "sdk-main", "-n", name, "--value", f"@{policy_file}")
    shown = server.cli("keyvault", "key", "rotation-policy", "show", "--vault-name", "sdk-main", "-n", name)
    assert shown["lifetimeActions"] == [{"trigger": {"timeAfterCreate": "P30D"}, "action": {"type": "Rotate"}}]
    refused = server.cli("keyvault", "key", "rotation-policy", "update", "--vault-name", "sdk-main", "-n", name,
                         "--value", '{"attributes": {"expiryTime": "P1D"}}', check=False)
    assert refused.returncode != 0 and "HTTP 400" in refused.stderr
    assert len(server.cli("keyvault", "key", "list-versions", "--vault-name", "sdk-main", "-n", name)) == 2
    server.cli("keyvault", "key", "set-attributes", "--vault-name", "sdk-main", "-n", name, "--enabled", "false")
    done = server.cli("keyvault", "key", "sign", "--vault-name", "sdk-main", "-n", name, "-a", "RS256", "--value", digest, check=False)
    assert done.returncode != 0 and "HTTP 403" in done.stderr
    blob = tmp_path / "key.blob"
    server.cli("keyvault", "key", "backup", "--vault-name", "sdk-main", "-n", name, "-f", str(blob))
    server.cli("keyvault", "key", "delete", "--vault-name", "sdk-main", "-n", name)
    server.cli("keyvault", "key", "purge", "--vault-name", "sdk-main", "-n", name)
    restored = server.cli("keyvault", "key", "restore", "--vault-name", "sdk-main", "-f", str(blob))
    assert restored["key"]["kid"] == rotated["key"]["kid"]


def test_rotation_policy_get_and_update(keys):
    from azure.keyvault.keys import KeyRotationLifetimeAction, KeyRotationPolicy, KeyRotationPolicyAction
    name = unique("pol")
    keys.create_rsa_key(name)
    default = keys.get_key_rotation_policy(name)
    assert [a.action for a in default.lifetime_actions] == [KeyRotationPolicyAction.notify]
    actions = [KeyRotationLifetimeAction(KeyRotationPolicyAction.rotate, time_after_create="P90D"),
               KeyRotationLifetimeAction(KeyRotationPolicyAction.notify, time_before_expiry="P30D")]
    updated = keys.update_key_rotation_policy(name, KeyRotationPolicy(), lifetime_actions=actions, expires_in="P1Y")
    assert updated.expires_in == "P1Y" and updated.created_on and updated.id.endswith(f"/keys/{name}/rotationpolicy")
    fetched = keys.get_key_rotation_policy(name)
    assert {(a.action, a.time_after_create, a.time_before_expiry) for a in fetched.lifetime_actions} == {
        (KeyRotationPolicyAction.rotate, "P90D", None), (KeyRotationPolicyAction.notify, None, "P30D")}
    # Azure's minimums are enforced and a refused update changes nothing.
    for bad in [dict(lifetime_actions=[KeyRotationLifetimeAction(KeyRotationPolicyAction.rotate, time_after_create="P6D")]),
                dict(lifetime_actions=actions, expires_in="P27D")]:
        with pytest.raises(HttpResponseError) as err:
            keys.update_key_rotation_policy(name, KeyRotationPolicy(), **bad)
        assert err.value.status_code == 400
    assert keys.get_key_rotation_policy(name).expires_in == "P1Y"
    with pytest.raises(ResourceNotFoundError):
        keys.get_key_rotation_policy(unique("missing"))


def test_scheduled_rotation_with_driven_clock(clock_server):
    from datetime import timedelta
    from azure.identity import ClientSecretCredential
    from azure.keyvault.keys import KeyRotationLifetimeAction, KeyRotationPolicy, KeyRotationPolicyAction
    srv, ca = clock_server, clock_server.env["ATREST_CA"]
    credential = ClientSecretCredential("adfs", srv.env["AZURE_CLIENT_ID"], srv.env["AZURE_CLIENT_SECRET"],
                                        authority=srv.env["AZURE_AUTHORITY_HOST"], connection_verify=ca)
    keys = KeyClient(srv.vault_url("sdk-clock"), credential, connection_verify=ca)
    name = unique("auto")
    first = keys.create_rsa_key(name, size=2048)
    wrapped = CryptographyClient(first, credential, connection_verify=ca).wrap_key(KeyWrapAlgorithm.rsa_oaep_256, b"k" * 32)
    keys.update_key_rotation_policy(name, KeyRotationPolicy(), expires_in="P28D", lifetime_actions=[
        KeyRotationLifetimeAction(KeyRotationPolicyAction.rotate, time_after_create="P7D")])

    start = srv.cli("clock", "show")
    day6 = srv.cli("clock", "advance", "--by", "P6D")
    assert day6["actions"] == [] and day6["offsetSeconds"] == start["offsetSeconds"] + 6 * 86400
    assert [p.version for p in keys.list_properties_of_key_versions(name)] == [first.properties.version]

    day7 = srv.cli("clock", "advance", "--by", "P1D")
    latest = keys.get_key(name)
    assert latest.properties.version != first.properties.version
    assert [(a["operationName"], a["properties"]["id"]) for a in day7["actions"]] == [
        ("KeyRotateIfDue", first.id), ("KeyRotate", latest.id)]
    assert all(a["resultType"] == "Success" and a["properties"]["clientInfo"] == "atrest-scheduler" for a in day7["actions"])
    age = latest.properties.created_on - first.properties.created_on
    assert timedelta(days=7) <= age < timedelta(days=7, minutes=5), age
    assert latest.properties.expires_on - latest.properties.created_on == timedelta(days=28)
    assert latest.key_type == first.key_type and len(latest.key.n) == len(first.key.n)
    # Old versions stay usable until disabled.
    old = CryptographyClient(first, credential, connection_verify=ca)
    assert old.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped.encrypted_key).key == b"k" * 32
    audited = srv.cli("monitor", "audit", "list", "--operation", "KeyRotate")
    assert audited[0]["properties"]["id"] == latest.id and audited[0]["identity"]["claim"]["idtyp"] == "Service"

    # The next rotation is due seven days after the new version, not before.
    assert srv.cli("clock", "advance", "--by", "P6D")["actions"] == []
    assert len(list(keys.list_properties_of_key_versions(name))) == 2

    # The clock only moves forward, by a valid ISO 8601 duration.
    offset = srv.cli("clock", "show")["offsetSeconds"]
    for bad in ["7 days", "P0D", "-P1D", ""]:
        done = srv.cli("clock", "advance", f"--by={bad}", check=False)
        assert done.returncode != 0 and "HTTP 400" in done.stderr, (bad, done.stderr)
    assert srv.cli("clock", "show")["offsetSeconds"] == offset
    # A restart does not move the clock back.
    assert srv.stop() == 0
    srv.start()
    assert srv.cli("clock", "show")["offsetSeconds"] == offset
