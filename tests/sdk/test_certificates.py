"""Key Vault certificates through the unmodified azure-keyvault-certificates SDK: issuance by
`Self` from a policy, the certificate's lifecycle, and its managed key and secret read and
used through the keys and secrets SDKs, checked with Python `cryptography` and `openssl`."""
import base64
import subprocess

import pytest
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.keyvault.certificates import (
    CertificateClient, CertificateContentType, CertificatePolicy, KeyCurveName, KeyType, KeyUsageType,
    WellKnownIssuerNames)
from azure.keyvault.keys.crypto import CryptographyClient, SignatureAlgorithm
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.serialization import pkcs12

from conftest import unique

VAULT = "sdk-main"


def web_policy(**kw):
    return CertificatePolicy(
        issuer_name=WellKnownIssuerNames.self, subject="CN=app.contoso.test, O=Contoso",
        san_dns_names=["app.contoso.test", "www.contoso.test"], san_emails=["ops@contoso.test"],
        san_user_principal_names=["svc@contoso.test"], san_uris=["https://contoso.test/app"],
        key_usage=[KeyUsageType.digital_signature, KeyUsageType.key_encipherment],
        enhanced_key_usage=["1.3.6.1.5.5.7.3.1"], validity_in_months=24, **kw)


def test_a_self_signed_certificate_lives_as_key_vault_keeps_it(cert_clients, tmp_path):
    certs, keys, secrets, credential = cert_clients
    name = unique("c")
    created = certs.begin_create_certificate(name, web_policy(), tags={"app": "web"}).result()
    assert created.name == name and created.properties.tags == {"app": "web"}
    assert created.key_id == f"{certs.vault_url}/keys/{name}/{created.properties.version}"
    assert created.secret_id == f"{certs.vault_url}/secrets/{name}/{created.properties.version}"
    assert created.policy.subject == "CN=app.contoso.test, O=Contoso"
    assert created.policy.san_dns_names == ["app.contoso.test", "www.contoso.test"]
    assert created.policy.validity_in_months == 24 and created.policy.content_type == "application/x-pkcs12"

    # The DER certificate carries the policy: openssl and cryptography agree.
    cert = x509.load_der_x509_certificate(created.cer)
    assert cert.subject.rfc4514_string() == "O=Contoso,CN=app.contoso.test"
    assert created.properties.x509_thumbprint == cert.fingerprint(hashes.SHA1())
    der = tmp_path / "c.cer"
    der.write_bytes(created.cer)
    text = subprocess.run(["openssl", "x509", "-inform", "DER", "-in", str(der), "-noout", "-text"],
                          capture_output=True, text=True, check=True).stdout
    for expected in ["DNS:app.contoso.test, DNS:www.contoso.test", "email:ops@contoso.test",
                     "othername: UPN::svc@contoso.test", "URI:https://contoso.test/app",
                     "Digital Signature, Key Encipherment", "TLS Web Server Authentication"]:
        assert expected in text, text
    days = (cert.not_valid_after_utc - cert.not_valid_before_utc).days
    assert 715 <= days <= 735, days
    assert created.properties.expires_on == cert.not_valid_after_utc

    # The operation is done; its CSR is the key's.
    op = certs.get_certificate_operation(name)
    assert op.status == "completed" and op.issuer_name == "Self"
    csr = x509.load_der_x509_csr(op.csr)
    assert csr.is_signature_valid and csr.public_key().public_numbers() == cert.public_key().public_numbers()

    # The key signs through the keys API, verifiable with the certificate's public key.
    key = keys.get_key(name)
    assert key.properties.managed is True and key.id == created.key_id
    signed = CryptographyClient(key, credential).sign(SignatureAlgorithm.rs256, hashes_sha256(b"hello"))
    cert.public_key().verify(signed.signature, b"hello", padding.PKCS1v15(), hashes.SHA256())

    # The secret is the PKCS#12 with the key, no password.
    secret = secrets.get_secret(name)
    assert secret.properties.managed is True and secret.properties.content_type == "application/x-pkcs12"
    assert secret.properties.key_id == created.key_id
    private, leaf, _ = pkcs12.load_key_and_certificates(base64.b64decode(secret.value), None)
    assert leaf.fingerprint(hashes.SHA256()) == cert.fingerprint(hashes.SHA256())
    assert private.public_key().public_numbers() == cert.public_key().public_numbers()

    # The key and secret change only with the certificate.
    for call in [lambda: secrets.set_secret(name, "x"), lambda: secrets.update_secret_properties(name, enabled=False),
                 lambda: secrets.begin_delete_secret(name).result(), lambda: keys.begin_delete_key(name).result(),
                 lambda: keys.create_rsa_key(name), lambda: keys.update_key_properties(name, enabled=False)]:
        with pytest.raises(HttpResponseError) as err:
            call()
        assert err.value.status_code == 403 and "managed by Key Vault" in err.value.message, err.value

    # Versions, listing, updates and the policy.
    second = certs.begin_create_certificate(name, CertificatePolicy.get_default()).result()
    assert second.properties.version != created.properties.version
    assert (x509.load_der_x509_certificate(second.cer).public_key().public_numbers()
            != cert.public_key().public_numbers())
    assert x509.load_der_x509_certificate(second.cer).subject.rfc4514_string() == "CN=DefaultPolicy"
    versions = {v.version for v in certs.list_properties_of_certificate_versions(name)}
    assert versions == {created.properties.version, second.properties.version}
    assert name in {c.name for c in certs.list_properties_of_certificates()}
    old = certs.get_certificate_version(name, created.properties.version)
    assert old.cer == created.cer
    updated = certs.update_certificate_properties(name, enabled=False, tags={"app": "api"})
    assert updated.properties.enabled is False and updated.properties.tags == {"app": "api"}
    assert keys.get_key(name).properties.enabled is False  # the key follows its certificate
    policy = certs.update_certificate_policy(name, CertificatePolicy(validity_in_months=6, san_dns_names=["x.test"]))
    assert policy.validity_in_months == 6 and policy.subject == "CN=DefaultPolicy" and policy.san_dns_names == ["x.test"]
    assert certs.get_certificate_policy(name).validity_in_months == 6

    # Soft delete takes the key and secret along; recover brings them back; purge ends all.
    deleted = certs.begin_delete_certificate(name).result()
    assert deleted.recovery_id.endswith(f"/deletedcertificates/{name}") and deleted.deleted_on
    assert certs.get_deleted_certificate(name).name == name
    assert name in {c.name for c in certs.list_deleted_certificates()}
    with pytest.raises(ResourceNotFoundError):
        keys.get_key(name)
    with pytest.raises(ResourceNotFoundError):
        secrets.get_secret(name)
    certs.begin_recover_deleted_certificate(name).result()
    assert keys.get_key(name).properties.managed is True
    certs.begin_delete_certificate(name).result()
    certs.purge_deleted_certificate(name)
    with pytest.raises(ResourceNotFoundError) as err:
        certs.get_certificate(name)
    assert "not found" in err.value.message
    with pytest.raises(ResourceNotFoundError):
        keys.get_deleted_key(name)


def hashes_sha256(data):
    digest = hashes.Hash(hashes.SHA256())
    digest.update(data)
    return digest.finalize()


def test_an_ec_certificate_in_pem_with_a_non_exportable_key(cert_clients):
    certs, keys, secrets, credential = cert_clients
    name = unique("ec")
    policy = CertificatePolicy(issuer_name="Self", subject="CN=ec.contoso.test", key_type=KeyType.ec,
                               key_curve_name=KeyCurveName.p_384, content_type=CertificateContentType.pem,
                               validity_in_months=3)
    created = certs.begin_create_certificate(name, policy).result()
    cert = x509.load_der_x509_certificate(created.cer)
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey) and cert.public_key().curve.name == "secp384r1"
    secret = secrets.get_secret(name)
    assert secret.properties.content_type == "application/x-pem-file"
    pem_key = serialization.load_pem_private_key(secret.value.encode(), None)
    assert pem_key.public_key().public_numbers() == cert.public_key().public_numbers()
    signed = CryptographyClient(keys.get_key(name), credential).sign(SignatureAlgorithm.es384, sha384(b"data"))
    r, s = int.from_bytes(signed.signature[:48], "big"), int.from_bytes(signed.signature[48:], "big")
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
    cert.public_key().verify(encode_dss_signature(r, s), b"data", ec.ECDSA(hashes.SHA384()))

    name = unique("ne")
    # (The SDK sends key_props only when a member besides exportable=False is set.)
    policy = CertificatePolicy(issuer_name="Self", subject="CN=locked", exportable=False, key_type=KeyType.rsa)
    locked = certs.begin_create_certificate(name, policy).result()
    secret = secrets.get_secret(name)
    private, leaf, others = pkcs12.load_key_and_certificates(base64.b64decode(secret.value), None)
    assert private is None and leaf is None  # no key to pair the certificate with
    assert [c.public_bytes(serialization.Encoding.DER) for c in others] == [locked.cer]


def sha384(data):
    digest = hashes.Hash(hashes.SHA384())
    digest.update(data)
    return digest.finalize()


def test_bad_certificate_input_changes_nothing(cert_clients):
    certs, keys, secrets, _ = cert_clients
    before = {c.name for c in certs.list_properties_of_certificates()}
    name = unique("bad")
    for policy, words in [
        (CertificatePolicy(issuer_name="Self", subject="CN=x", key_type=KeyType.ec, key_curve_name="P-256K"), "curve"),
        (CertificatePolicy(issuer_name="Self", subject="CN=x", key_type=KeyType.rsa, key_size=1024), "key size"),
        (CertificatePolicy(issuer_name="Self", subject="CN=x", content_type="text/plain"), "content type"),
        (CertificatePolicy(issuer_name="Self", subject="CN=x", validity_in_months=0), "validity_months"),
        (CertificatePolicy(issuer_name="Self", subject="XX=nope"), "subject"),
        (CertificatePolicy(issuer_name="Self", subject="CN=x", enhanced_key_usage=["not-an-oid"]), "object identifier"),
    ]:
        with pytest.raises(HttpResponseError) as err:
            certs.begin_create_certificate(name, policy).result()
        assert err.value.status_code == 400 and words in err.value.message, err.value.message
    with pytest.raises(ResourceNotFoundError):
        certs.get_certificate(name)
    with pytest.raises(ResourceNotFoundError):
        keys.get_key(name)
    # A name a standalone secret holds is refused.
    secrets.set_secret(name, "plain")
    with pytest.raises(ResourceExistsError):
        certs.begin_create_certificate(name, CertificatePolicy.get_default()).result()
    assert secrets.get_secret(name).value == "plain"
    assert {c.name for c in certs.list_properties_of_certificates()} == before


def test_the_cli_creates_downloads_and_retires_a_certificate(server, tmp_path):
    """`atrest keyvault certificate` as az names it, with az's default policy."""
    kv = lambda *args, **kw: server.cli("keyvault", "certificate", *args, **kw)  # noqa: E731
    policy = tmp_path / "policy.json"
    default = kv("get-default-policy")
    assert default["x509CertificateProperties"]["subject"] == "CN=CLIGetDefaultPolicy"
    default["x509CertificateProperties"]["subjectAlternativeNames"] = {"dnsNames": ["cli.contoso.test"]}
    policy.write_text(__import__("json").dumps(default))
    name = unique("cli")
    made = kv("create", "--vault-name", VAULT, "-n", name, "-p", f"@{policy}", "--tags", "team=ops")
    assert made["policy"]["x509_props"]["validity_months"] == 12 and made["tags"] == {"team": "ops"}
    assert made["policy"]["key_props"]["reuse_key"] is True
    # reuse_key: a new version keeps the key; the SDK test's default policy makes a new one.
    again = kv("create", "--vault-name", VAULT, "-n", name, "-p", f"@{policy}")
    public = [x509.load_der_x509_certificate(base64.b64decode(c["cer"])).public_key().public_numbers()
              for c in (made, again)]
    assert again["id"] != made["id"] and public[0] == public[1]
    assert kv("pending", "show", "--vault-name", VAULT, "-n", name)["status"] == "completed"
    for encoding, flag in [("PEM", []), ("DER", ["-inform", "DER"])]:
        out = tmp_path / f"c.{encoding}"
        kv("download", "--vault-name", VAULT, "-n", name, "-f", str(out), "-e", encoding)
        text = subprocess.run(["openssl", "x509", "-in", str(out), *flag, "-noout", "-subject", "-ext", "subjectAltName"],
                              capture_output=True, text=True, check=True).stdout
        assert "CN = CLIGetDefaultPolicy" in text and "DNS:cli.contoso.test" in text, text
    assert name in {c["id"].rsplit("/", 1)[1] for c in kv("list", "--vault-name", VAULT)}
    disabled = kv("set-attributes", "--vault-name", VAULT, "-n", name, "--enabled", "false")
    assert disabled["attributes"]["enabled"] is False
    refused = kv("create", "--vault-name", VAULT, "-n", unique("cli"), "-p", '{"issuer": {"name": "Self"}}', check=False)
    assert refused.returncode != 0 and "subject" in refused.stderr
    kv("delete", "--vault-name", VAULT, "-n", name)
    assert name in {c["id"].rsplit("/", 1)[1] for c in kv("list-deleted", "--vault-name", VAULT)}
    kv("purge", "--vault-name", VAULT, "-n", name)
    assert kv("show", "--vault-name", VAULT, "-n", name, check=False).returncode != 0


def test_an_unknown_issuer_waits_for_a_merge_of_what_a_ca_signed(cert_clients):
    """Issuer Unknown: the operation stays inProgress with a CSR; a CA made here signs it;
    the merge completes the certificate, whose secret holds the key and the chain. A leaf
    for another key is refused; cancelling and deleting a request end it."""
    import datetime as dt
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID
    certs, keys, secrets, _ = cert_clients
    name = unique("merge")
    policy = CertificatePolicy(issuer_name=WellKnownIssuerNames.unknown, subject="CN=merged.contoso.test",
                               san_dns_names=["merged.contoso.test"])
    op = certs.begin_create_certificate(name, policy).result()
    assert op.status == "inProgress" and op.issuer_name == "Unknown" and "Merge" in op.status_details
    assert certs.get_certificate_operation(name).status == "inProgress"
    assert certs.get_certificate_policy(name).issuer_name == "Unknown"
    with pytest.raises(ResourceNotFoundError):
        certs.get_certificate(name)
    assert name not in {c.name for c in certs.list_properties_of_certificates()}
    assert name in {c.name for c in certs.list_properties_of_certificates(include_pending=True)}
    csr = x509.load_der_x509_csr(op.csr)
    assert csr.is_signature_valid and csr.subject.rfc4514_string() == "CN=merged.contoso.test"

    # A CA made in the test signs the request.
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = dt.datetime.now(dt.timezone.utc)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
          .not_valid_after(now + dt.timedelta(days=3650))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))

    def signed(public_key, days=90):
        return (x509.CertificateBuilder().subject_name(csr.subject).issuer_name(ca_name).public_key(public_key)
                .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
                .not_valid_after(now + dt.timedelta(days=days))
                .sign(ca_key, hashes.SHA256()))

    der = lambda c: c.public_bytes(serialization.Encoding.DER)  # noqa: E731
    stranger = signed(rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key())
    with pytest.raises(HttpResponseError) as err:
        certs.merge_certificate(name, [der(stranger), der(ca)])
    assert err.value.status_code == 400 and "doesn't match" in err.value.message
    with pytest.raises(HttpResponseError) as err:
        certs.merge_certificate(name, [b"not a certificate"])
    assert err.value.status_code == 400
    assert certs.get_certificate_operation(name).status == "inProgress"

    leaf = signed(csr.public_key())
    merged = certs.merge_certificate(name, [der(leaf), der(ca)], tags={"ca": "test"})
    assert merged.cer == der(leaf) and merged.properties.tags == {"ca": "test"}
    assert merged.properties.expires_on == leaf.not_valid_after_utc
    assert certs.get_certificate_operation(name).status == "completed"
    private, got_leaf, chain = pkcs12.load_key_and_certificates(base64.b64decode(secrets.get_secret(name).value), None)
    assert der(got_leaf) == der(leaf) and [der(c) for c in chain] == [der(ca)]
    assert private.public_key().public_numbers() == leaf.public_key().public_numbers()
    assert keys.get_key(name).properties.managed is True
    with pytest.raises(ResourceNotFoundError):
        certs.merge_certificate(name, [der(leaf)])  # nothing waits any more

    # A request cancelled, then one deleted.
    other = unique("cancel")
    certs.begin_create_certificate(other, policy).result()
    cancelled = certs.cancel_certificate_operation(other)
    assert cancelled.cancellation_requested is True and cancelled.status == "cancelled"
    deleted = certs.delete_certificate_operation(other)
    assert deleted.name == other
    with pytest.raises(ResourceNotFoundError) as err:
        certs.get_certificate_operation(other)
    assert "not found" in err.value.message


def test_backup_and_restore_bring_back_the_certificate_its_key_and_secret(cert_clients):
    certs, keys, secrets, credential = cert_clients
    name = unique("bk")
    first = certs.begin_create_certificate(name, CertificatePolicy.get_default()).result()
    second = certs.begin_create_certificate(name, CertificatePolicy.get_default()).result()
    blob = certs.backup_certificate(name)
    secret_before = secrets.get_secret(name).value
    with pytest.raises(ResourceExistsError):
        certs.restore_certificate_backup(blob)  # the name is in use
    certs.begin_delete_certificate(name).result()
    certs.purge_deleted_certificate(name)
    with pytest.raises(ResourceNotFoundError):
        keys.get_key(name)
    restored = certs.restore_certificate_backup(blob)
    assert restored.properties.version == second.properties.version and restored.cer == second.cer
    assert {v.version for v in certs.list_properties_of_certificate_versions(name)} == {
        first.properties.version, second.properties.version}
    assert secrets.get_secret(name).value == secret_before
    assert keys.get_key(name).properties.managed is True
    assert certs.get_certificate_policy(name).subject == "CN=DefaultPolicy"
    # A tampered blob is refused; nothing changes.
    with pytest.raises(HttpResponseError) as err:
        certs.restore_certificate_backup(blob[:-5] + b"xxxxx")
    assert err.value.status_code == 400


def test_contacts_and_issuers(cert_clients):
    from azure.keyvault.certificates import AdministratorContact, CertificateContact
    certs = cert_clients[0]
    contacts = [CertificateContact(email="ops@contoso.test", name="Ops", phone="555-0100"),
                CertificateContact(email="sec@contoso.test")]
    assert [c.email for c in certs.set_contacts(contacts)] == ["ops@contoso.test", "sec@contoso.test"]
    got = certs.get_contacts()
    assert [(c.email, c.name, c.phone) for c in got] == [("ops@contoso.test", "Ops", "555-0100"),
                                                         ("sec@contoso.test", None, None)]
    with pytest.raises(HttpResponseError) as err:
        certs.set_contacts([CertificateContact(name="no e-mail")])
    assert err.value.status_code == 400
    assert len(certs.delete_contacts()) == 2
    with pytest.raises(ResourceNotFoundError) as err:
        certs.get_contacts()
    assert "not found" in err.value.message.lower()

    issuer = unique("ca")
    made = certs.create_issuer(issuer, "DigiCert", account_id="acct-1", password="s3cret", organization_id="org-1",
                               admin_contacts=[AdministratorContact(first_name="Ada", last_name="Lovelace",
                                                                    email="ada@contoso.test", phone="1")])
    assert made.provider == "DigiCert" and made.account_id == "acct-1" and made.password is None
    assert certs.get_issuer(issuer).admin_contacts[0].email == "ada@contoso.test"
    updated = certs.update_issuer(issuer, provider="GlobalSign")
    assert updated.provider == "GlobalSign" and updated.account_id == "acct-1"
    assert issuer in {i.name for i in certs.list_properties_of_issuers()}

    # A certificate of a registered issuer waits for its merge; an unregistered one is refused.
    name = unique("ca-cert")
    certs.begin_create_certificate(name, CertificatePolicy(issuer_name=issuer, subject="CN=issued"))
    op = certs.get_certificate_operation(name)
    assert op.status == "inProgress" and op.issuer_name == issuer and "GlobalSign" in op.status_details
    certs.delete_certificate_operation(name)
    with pytest.raises(HttpResponseError) as err:
        certs.begin_create_certificate(unique("x"), CertificatePolicy(issuer_name="nobody", subject="CN=x")).result()
    assert err.value.status_code == 400 and "not registered" in err.value.message
    assert certs.delete_issuer(issuer).name == issuer
    with pytest.raises(ResourceNotFoundError) as err:
        certs.get_issuer(issuer)
    assert "not found" in err.value.message.lower()


def test_lifetime_actions_renew_and_announce_on_the_schedulers_clock(workdir):
    """AutoRenew issues a new version when its trigger comes (days before expiry);
    EmailContacts records a CertificateNearExpiry event naming the contacts, once."""
    from azure.keyvault.certificates import CertificateContact, CertificatePolicyAction, LifetimeAction
    from conftest import Server
    srv = Server(workdir / "cert-clock").start()
    try:
        vault = "sdk-cert-clock"
        srv.cli("keyvault", "create", "-n", vault, "-l", "westeurope")
        certs = CertificateClient(srv.vault_url(vault), srv.credential(), connection_verify=srv.env["ATREST_CA"])
        certs.set_contacts([CertificateContact(email="pki@contoso.test")])
        renewing = certs.begin_create_certificate("renewing", CertificatePolicy(
            issuer_name="Self", subject="CN=renewing", validity_in_months=12,
            lifetime_actions=[LifetimeAction(action=CertificatePolicyAction.auto_renew, days_before_expiry=30)])).result()
        certs.begin_create_certificate("announced", CertificatePolicy(
            issuer_name="Self", subject="CN=announced", validity_in_months=12,
            lifetime_actions=[LifetimeAction(action=CertificatePolicyAction.email_contacts, lifetime_percentage=50)]))
        assert srv.cli("clock", "advance", "--by", "P100D")["actions"] == []
        ops = [a["operationName"] for a in srv.cli("clock", "advance", "--by", "P100D")["actions"]]
        assert ops == ["CertificateNearExpiry"], ops
        actions = srv.cli("clock", "advance", "--by", "P140D")["actions"]
        assert [a["operationName"] for a in actions] == ["CertificateAutoRenew"], actions
        versions = [v.version for v in certs.list_properties_of_certificate_versions("renewing")]
        assert len(versions) == 2 and renewing.properties.version in versions
        renewed = certs.get_certificate("renewing")
        assert renewed.properties.version != renewing.properties.version
        assert renewed.policy.lifetime_actions[0].days_before_expiry == 30
        # Once per version: the next pass does nothing again.
        assert srv.cli("clock", "advance", "--by", "P1D")["actions"] == []
        [event] = srv.cli("monitor", "audit", "list", "--operation", "CertificateNearExpiry")
        assert "pki@contoso.test" in event["resultDescription"], event
    finally:
        assert srv.stop() == 0, srv.log()


def test_the_cli_backs_up_merges_and_keeps_contacts_and_issuers(server, tmp_path):
    """`certificate backup|restore`, `pending merge` of a PEM chain, `contact add|list|delete`
    and `issuer create|show|update|list|delete`, as az names them."""
    import datetime as dt
    import json
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID
    kv = lambda *args, **kw: server.cli("keyvault", "certificate", *args, **kw)  # noqa: E731
    name = unique("cli-bk")
    made = kv("create", "--vault-name", VAULT, "-n", name, "-p", json.dumps(
        {"issuer": {"name": "Self"}, "x509_props": {"subject": "CN=cli-backup"}}))
    blob = tmp_path / "cert.blob"
    kv("backup", "--vault-name", VAULT, "-n", name, "-f", str(blob))
    kv("delete", "--vault-name", VAULT, "-n", name)
    kv("purge", "--vault-name", VAULT, "-n", name)
    assert kv("restore", "--vault-name", VAULT, "-f", str(blob))["id"] == made["id"]

    # A request for issuer Unknown, signed by a CA made here, merged from a PEM chain.
    waiting = unique("cli-merge")
    op = kv("create", "--vault-name", VAULT, "-n", waiting, "-p", json.dumps(
        {"issuer": {"name": "Unknown"}, "x509_props": {"subject": "CN=cli-merge"}}))
    assert op["status"] == "inProgress"
    csr = x509.load_der_x509_csr(base64.b64decode(op["csr"]))
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "CLI CA")])
    now = dt.datetime.now(dt.timezone.utc)

    def cert(subject, key, days):
        return (x509.CertificateBuilder().subject_name(subject).issuer_name(ca_name).public_key(key)
                .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
                .not_valid_after(now + dt.timedelta(days=days)).sign(ca_key, hashes.SHA256()))

    chain = [cert(csr.subject, csr.public_key(), 30), cert(ca_name, ca_key.public_key(), 365)]
    pem = tmp_path / "chain.pem"
    pem.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain))
    merged = kv("pending", "merge", "--vault-name", VAULT, "-n", waiting, "-f", str(pem))
    assert base64.b64decode(merged["cer"]) == chain[0].public_bytes(serialization.Encoding.DER)

    # Contacts and issuers.
    kv("contact", "add", "--vault-name", VAULT, "--email", "a@contoso.test", "--name", "A")
    kv("contact", "add", "--vault-name", VAULT, "--email", "b@contoso.test")
    assert [c["email"] for c in kv("contact", "list", "--vault-name", VAULT)] == ["a@contoso.test", "b@contoso.test"]
    kv("contact", "delete", "--vault-name", VAULT, "--email", "a@contoso.test")
    assert [c["email"] for c in kv("contact", "list", "--vault-name", VAULT)] == ["b@contoso.test"]
    kv("contact", "delete", "--vault-name", VAULT, "--email", "b@contoso.test")
    assert kv("contact", "list", "--vault-name", VAULT) == []
    issuer = unique("cli-ca")
    made = kv("issuer", "create", "--vault-name", VAULT, "--issuer-name", issuer, "--provider-name", "DigiCert",
              "--account-id", "acct", "--password", "pw")
    assert made["provider"] == "DigiCert" and "pwd" not in json.dumps(made)
    kv("issuer", "update", "--vault-name", VAULT, "--issuer-name", issuer, "--provider-name", "GlobalSign")
    shown = kv("issuer", "show", "--vault-name", VAULT, "--issuer-name", issuer)
    assert shown["provider"] == "GlobalSign" and shown["credentials"]["account_id"] == "acct"
    assert issuer in {i["id"].rsplit("/", 1)[1] for i in kv("issuer", "list", "--vault-name", VAULT)}
    kv("issuer", "delete", "--vault-name", VAULT, "--issuer-name", issuer)
    assert kv("issuer", "show", "--vault-name", VAULT, "--issuer-name", issuer, check=False).returncode != 0
