"""Certificate import through the unmodified azure-keyvault-certificates SDK: PKCS#12 files
as OpenSSL writes them today (PBES2, AES) and as older tools did (`-legacy`: RC2-40 and
3DES with a SHA-1 MAC), as Python `cryptography` writes them (3DES, AES, no password), and
PEM with a PKCS#8 key, plain or encrypted. The imported certificate's key works through the
keys API, its secret opens with `cryptography`, and bad input changes nothing."""
import base64
import json
import subprocess

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.identity import DefaultAzureCredential
from azure.keyvault.certificates import CertificateContentType, CertificatePolicy, KeyType
from azure.keyvault.keys.crypto import CryptographyClient, SignatureAlgorithm
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.serialization import pkcs12

from conftest import unique

VAULT = "sdk-main"


def openssl(cwd, *args):
    return subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, check=True).stdout


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """A CA and an RSA leaf it signed (with names, usages and a 400-day validity), made
    with openssl: files ca.pem, leaf.pem, leaf.key (PKCS#8)."""
    d = tmp_path_factory.mktemp("chain")
    openssl(d, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
            "-days", "30", "-subj", "/C=NL/O=Import CA/CN=Import Root")
    openssl(d, "req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", "leaf.key", "-out", "leaf.csr",
            "-subj", "/O=Contoso/CN=imported.contoso.test")
    (d / "ext.cnf").write_text("subjectAltName=DNS:imported.contoso.test,DNS:api.contoso.test,IP:10.0.0.9\n"
                               "keyUsage=critical,digitalSignature,keyEncipherment\n"
                               "extendedKeyUsage=serverAuth,clientAuth\n")
    openssl(d, "x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "400", "-extfile", "ext.cnf", "-out", "leaf.pem")
    return d


def der_of(d, name):
    return x509.load_pem_x509_certificate((d / name).read_bytes()).public_bytes(serialization.Encoding.DER)


def openssl_pfx(d, password, *scheme):
    openssl(d, "pkcs12", "-export", "-in", "leaf.pem", "-inkey", "leaf.key", "-certfile", "ca.pem",
            "-passout", f"pass:{password}", "-out", "out.pfx", *scheme)
    return (d / "out.pfx").read_bytes()


def cryptography_pfx(d, password, algorithm):
    key = serialization.load_pem_private_key((d / "leaf.key").read_bytes(), None)
    leaf = x509.load_pem_x509_certificate((d / "leaf.pem").read_bytes())
    ca = x509.load_pem_x509_certificate((d / "ca.pem").read_bytes())
    if password is None:
        encryption = serialization.NoEncryption()
    else:
        encryption = (serialization.PrivateFormat.PKCS12.encryption_builder().kdf_rounds(2048)
                      .key_cert_algorithm(algorithm).hmac_hash(hashes.SHA1()).build(password.encode()))
    return pkcs12.serialize_key_and_certificates(b"leaf", key, leaf, [ca], encryption)


def assert_imported(cert_clients, name, imported, chain, content_type, issuer="Unknown"):
    """The certificate is the leaf; its policy is the certificate's; its key signs what the
    certificate's public key verifies; its secret holds the key and the chain."""
    certs, keys, secrets, credential = cert_clients
    leaf_der, ca_der = der_of(chain, "leaf.pem"), der_of(chain, "ca.pem")
    assert imported.cer == leaf_der
    policy = imported.policy
    assert policy.issuer_name == issuer and policy.content_type == content_type
    assert policy.subject == "O=Contoso, CN=imported.contoso.test"
    assert policy.san_dns_names == ["imported.contoso.test", "api.contoso.test"]
    assert policy.san_ip_addresses == ["10.0.0.9"]
    assert policy.key_type == "RSA" and policy.key_size == 2048 and policy.exportable is True
    assert sorted(policy.key_usage) == ["digitalSignature", "keyEncipherment"]
    assert policy.enhanced_key_usage == ["1.3.6.1.5.5.7.3.1", "1.3.6.1.5.5.7.3.2"]
    assert policy.validity_in_months == 13
    cert = x509.load_der_x509_certificate(leaf_der)
    assert imported.properties.expires_on == cert.not_valid_after_utc
    assert imported.properties.not_before == cert.not_valid_before_utc

    key = keys.get_key(name)
    assert key.properties.managed is True and key.id == imported.key_id
    digest = hashes.Hash(hashes.SHA256())
    digest.update(b"imported")
    signed = CryptographyClient(key, credential).sign(SignatureAlgorithm.ps256, digest.finalize())
    cert.public_key().verify(signed.signature, b"imported",
                             padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.DIGEST_LENGTH),
                             hashes.SHA256())

    secret = secrets.get_secret(name, imported.properties.version)
    assert secret.properties.managed is True and secret.properties.content_type == content_type
    if content_type == CertificateContentType.pkcs12:
        private, leaf, others = pkcs12.load_key_and_certificates(base64.b64decode(secret.value), None)
        assert leaf.public_bytes(serialization.Encoding.DER) == leaf_der
        assert [c.public_bytes(serialization.Encoding.DER) for c in others] == [ca_der]
    else:
        private = serialization.load_pem_private_key(secret.value.encode(), None)
        pems = x509.load_pem_x509_certificates(secret.value.encode())
        assert [c.public_bytes(serialization.Encoding.DER) for c in pems] == [leaf_der, ca_der]
    assert private.public_key().public_numbers() == cert.public_key().public_numbers()


def test_pkcs12_files_from_old_and_new_tools_import(cert_clients, chain):
    certs, _, _, _ = cert_clients
    from cryptography.hazmat.primitives.serialization import pkcs12 as p12
    files = [
        ("openssl-legacy", openssl_pfx(chain, "Legacy pw", "-legacy"), "Legacy pw"),
        ("openssl-3des", openssl_pfx(chain, "pw", "-certpbe", "PBE-SHA1-3DES", "-keypbe", "PBE-SHA1-3DES",
                                     "-macalg", "sha1"), "pw"),
        ("openssl-aes", openssl_pfx(chain, "pässwörd"), "pässwörd"),
        ("openssl-empty", openssl_pfx(chain, ""), None),
        ("py-3des", cryptography_pfx(chain, "pw", p12.PBES.PBESv1SHA1And3KeyTripleDESCBC), "pw"),
        ("py-aes", cryptography_pfx(chain, "pw", p12.PBES.PBESv2SHA256AndAES256CBC), "pw"),
        ("py-none", cryptography_pfx(chain, None, None), None),
    ]
    for label, pfx, password in files:
        name = unique(label)
        imported = certs.import_certificate(name, pfx, password=password, tags={"from": label})
        assert imported.properties.tags == {"from": label}
        assert_imported(cert_clients, name, imported, chain, CertificateContentType.pkcs12)

    # A second import is a new version; disabled and with its own policy settings.
    name = unique("versions")
    first = certs.import_certificate(name, files[0][1], password=files[0][2])
    policy = CertificatePolicy(exportable=False, key_type=KeyType.rsa, lifetime_actions=[])
    second = certs.import_certificate(name, files[2][1], password=files[2][2], enabled=False, policy=policy)
    assert second.properties.version != first.properties.version and second.properties.enabled is False
    assert second.policy.exportable is False and second.policy.subject == first.policy.subject
    versions = {v.version for v in certs.list_properties_of_certificate_versions(name)}
    assert versions == {first.properties.version, second.properties.version}
    _, _, secrets, _ = cert_clients
    with pytest.raises(HttpResponseError) as err:
        secrets.get_secret(name)
    assert err.value.status_code == 403  # the secret is disabled with its certificate
    certs.update_certificate_properties(name, enabled=True)
    private, leaf, others = pkcs12.load_key_and_certificates(
        base64.b64decode(secrets.get_secret(name).value), None)
    assert private is None  # not exportable: the secret holds the certificates only


def test_pem_imports_with_a_pkcs8_key(cert_clients, chain):
    certs, _, _, _ = cert_clients
    plain = openssl(chain, "pkcs8", "-topk8", "-nocrypt", "-in", "leaf.key")
    encrypted = openssl(chain, "pkcs8", "-topk8", "-v2", "aes-256-cbc", "-passout", "pass:pem pw", "-in", "leaf.key")
    pems = (chain / "leaf.pem").read_bytes() + (chain / "ca.pem").read_bytes()
    pem_policy = CertificatePolicy(issuer_name="Self", content_type=CertificateContentType.pem)
    for key, password in [(plain, None), (encrypted, "pem pw")]:
        name = unique("pem")
        imported = certs.import_certificate(name, key + pems, password=password, policy=pem_policy)
        assert_imported(cert_clients, name, imported, chain, CertificateContentType.pem, issuer="Self")

    # Without a policy the content type follows the content; the chain order may be kept.
    name = unique("pem")
    imported = certs.import_certificate(name, (chain / "ca.pem").read_bytes() + plain + (chain / "leaf.pem").read_bytes(),
                                        preserve_order=True)
    assert imported.policy.content_type == CertificateContentType.pem
    _, _, secrets, _ = cert_clients
    kept = x509.load_pem_x509_certificates(secrets.get_secret(name).value.encode())
    assert [c.public_bytes(serialization.Encoding.DER) for c in kept] == [der_of(chain, "ca.pem"),
                                                                          der_of(chain, "leaf.pem")]
    assert imported.cer == der_of(chain, "leaf.pem")


def test_bad_imports_get_key_vaults_errors_and_change_nothing(cert_clients, chain):
    certs, keys, secrets, _ = cert_clients
    pfx = openssl_pfx(chain, "right", "-legacy")
    traditional = openssl(chain, "rsa", "-traditional", "-in", "leaf.key")
    pems = (chain / "leaf.pem").read_bytes()
    other_key = openssl(chain, "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048")
    before = {c.name for c in certs.list_properties_of_certificates()}
    name = unique("badimport")
    cases = [
        (b"\x30\x82\x01\x00" + b"\x00" * 64, None, None, "PKCS#12 X.509 certificate content can not be read"),
        (pfx[: len(pfx) // 2], "right", None, "PKCS#12 X.509 certificate content can not be read"),
        (pfx, "wrong", None, "MAC does not verify"),
        (pems, None, None, "Private key is not specified"),
        (traditional + pems, None, None, "not PKCS#8"),
        (other_key + pems, None, None, "does not match"),
        (pfx, "right", CertificatePolicy(key_type=KeyType.ec, issuer_name="Self"), "do not match the certificate's key"),
    ]
    for content, password, policy, words in cases:
        with pytest.raises(HttpResponseError) as err:
            certs.import_certificate(name, content, password=password, policy=policy)
        assert err.value.status_code == 400 and words in err.value.message, (words, err.value.message)
        assert err.value.error.code == "BadParameter"
        assert "right" not in err.value.message
    for call in [lambda: certs.get_certificate(name), lambda: keys.get_key(name), lambda: secrets.get_secret(name)]:
        with pytest.raises(ResourceNotFoundError):
            call()
    assert {c.name for c in certs.list_properties_of_certificates()} == before
    # The server still serves imports.
    assert certs.import_certificate(name, pfx, password="right").cer == der_of(chain, "leaf.pem")


def test_raw_import_bodies_and_the_cli(server, chain, tmp_path):
    """The REST body as other cert_clients send it (PEM text in `value`), refusals of a body
    without `value`, and `atrest keyvault certificate import`."""
    import requests
    credential = DefaultAzureCredential()
    token = credential.get_token(f"https://vault.localhost:{server.port}/.default").token
    url = server.vault_url(VAULT)
    plain = openssl(chain, "pkcs8", "-topk8", "-nocrypt", "-in", "leaf.key").decode()
    name = unique("raw")
    post = lambda body: requests.post(f"{url}/certificates/{name}/import?api-version=7.5", json=body,  # noqa: E731
                                      headers={"Authorization": f"Bearer {token}"}, verify=server.env["ATREST_CA"])
    missing = post({"pwd": "x"})
    assert missing.status_code == 400 and missing.json()["error"]["code"] == "BadParameter"
    garbled = post({"value": "%%% not base64 %%%"})
    assert garbled.status_code == 400 and "base64" in garbled.json()["error"]["message"]
    text = post({"value": plain + (chain / "leaf.pem").read_text(),
                 "policy": {"secret_props": {"contentType": "application/x-pem-file"}}})
    assert text.status_code == 200, text.text
    body = text.json()
    assert body["id"].startswith(f"{url}/certificates/{name}/") and body["policy"]["issuer"]["name"] == "Unknown"
    assert base64.b64decode(body["cer"]) == der_of(chain, "leaf.pem")

    pfx = tmp_path / "c.pfx"
    pfx.write_bytes(openssl_pfx(chain, "cli pw", "-legacy"))
    kv = lambda *args, **kw: server.cli("keyvault", "certificate", *args, **kw)  # noqa: E731
    name = unique("cli")
    done = kv("import", "--vault-name", VAULT, "-n", name, "-f", str(pfx), "--password", "cli pw",
              "--tags", "team=pki", "-p", json.dumps({"keyProperties": {"exportable": False}}))
    assert done["tags"] == {"team": "pki"} and done["policy"]["key_props"]["exportable"] is False
    assert base64.b64decode(done["cer"]) == der_of(chain, "leaf.pem")
    refused = kv("import", "--vault-name", VAULT, "-n", unique("cli"), "-f", str(pfx), "--password", "nope",
                 check=False)
    assert refused.returncode != 0 and "MAC does not verify" in refused.stderr
