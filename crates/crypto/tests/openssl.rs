//! Certificates, signing requests and PKCS#12 files made here, read by OpenSSL's own
//! tools (`openssl x509`, `req`, `verify`, `pkcs12`): what a platform team would check
//! them with.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use atrest_crypto::certificates::{
    certificate_pem, pem_bundle, pkcs12, self_signed_certificate, signing_request,
    CertificateTemplate,
};
use atrest_crypto::{Curve, KeyHandle, KeyProvider, KeySpec, SoftwareKeys};

fn openssl(args: &[&str]) -> String {
    let done = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl runs");
    assert!(
        done.status.success(),
        "openssl {args:?}: {}{}",
        String::from_utf8_lossy(&done.stdout),
        String::from_utf8_lossy(&done.stderr)
    );
    String::from_utf8_lossy(&done.stdout).into_owned()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path.to_string_lossy().into_owned()
}

fn template() -> CertificateTemplate {
    let now = 1_790_000_000;
    CertificateTemplate {
        subject: "CN=app.contoso.test, O=\"Contoso, Ltd\", OU=Ops, C=NL".into(),
        dns_names: vec!["app.contoso.test".into(), "www.contoso.test".into()],
        emails: vec!["ops@contoso.test".into()],
        upns: vec!["svc@contoso.test".into()],
        ip_addresses: vec!["10.0.0.7".into(), "2001:db8::1".into()],
        uris: vec!["https://contoso.test/app".into()],
        key_usage: vec!["digitalSignature".into(), "keyEncipherment".into()],
        ekus: vec!["1.3.6.1.5.5.7.3.1".into(), "1.3.6.1.5.5.7.3.2".into()],
        not_before: now,
        not_after: now + 365 * 86_400,
    }
}

fn keys() -> Vec<Arc<dyn KeyHandle>> {
    [
        KeySpec::Rsa(2048),
        KeySpec::Ec(Curve::P256),
        KeySpec::Ec(Curve::P384),
        KeySpec::Ec(Curve::P521),
    ]
    .into_iter()
    .map(|spec| SoftwareKeys.generate(spec).unwrap())
    .collect()
}

#[test]
fn openssl_reads_and_verifies_what_is_issued() {
    let dir = tempfile::tempdir().unwrap();
    for key in keys() {
        let der = self_signed_certificate(&key, &template()).unwrap();
        let pem = write(dir.path(), "cert.pem", certificate_pem(&der).as_bytes());
        let text = openssl(&["x509", "-in", &pem, "-noout", "-text"]);
        for expected in [
            "CN = app.contoso.test",
            "O = \"Contoso, Ltd\"",
            "DNS:app.contoso.test, DNS:www.contoso.test",
            "email:ops@contoso.test",
            "othername: UPN::svc@contoso.test",
            "IP Address:10.0.0.7",
            "IP Address:2001:DB8:0:0:0:0:0:1",
            "URI:https://contoso.test/app",
            "Digital Signature, Key Encipherment",
            "TLS Web Server Authentication, TLS Web Client Authentication",
            "Not After : Sep",
        ] {
            assert!(text.contains(expected), "{expected} missing from\n{text}");
        }
        // The signature checks out against the certificate's own key.
        let verified = openssl(&[
            "verify",
            "-check_ss_sig",
            "-partial_chain",
            "-CAfile",
            &pem,
            &pem,
        ]);
        assert!(verified.contains("OK"), "{verified}");

        let csr = signing_request(&key, &template()).unwrap();
        let csr_path = write(dir.path(), "req.der", &csr);
        let req = openssl(&[
            "req", "-inform", "DER", "-in", &csr_path, "-noout", "-verify", "-text",
        ]);
        assert!(req.contains("CN = app.contoso.test"), "{req}");
    }
}

#[test]
fn pkcs12_and_pem_bundles_open_with_openssl_and_hold_the_key() {
    let dir = tempfile::tempdir().unwrap();
    for key in keys() {
        let der = self_signed_certificate(&key, &template()).unwrap();
        let pkcs8 = key.export_pkcs8().unwrap();
        let pfx = write(
            dir.path(),
            "c.pfx",
            &pkcs12(Some(&pkcs8), std::slice::from_ref(&der), 0),
        );
        let out = openssl(&["pkcs12", "-in", &pfx, "-passin", "pass:", "-nodes"]);
        assert!(
            out.contains("-----BEGIN PRIVATE KEY-----")
                && out.contains("-----BEGIN CERTIFICATE-----")
        );
        // The key in the file is the certificate's: the public halves match.
        let key_pem = write(dir.path(), "k.pem", out.as_bytes());
        let from_key = openssl(&["pkey", "-in", &key_pem, "-pubout"]);
        let from_cert = openssl(&["x509", "-in", &key_pem, "-noout", "-pubkey"]);
        assert_eq!(from_key, from_cert);

        let bundle = write(
            dir.path(),
            "b.pem",
            pem_bundle(Some(&pkcs8), std::slice::from_ref(&der)).as_bytes(),
        );
        assert_eq!(openssl(&["pkey", "-in", &bundle, "-pubout"]), from_cert);

        // Without the key (a non-exportable certificate), the file holds the certificate only.
        let public = write(dir.path(), "p.pfx", &pkcs12(None, &[der], 0));
        let out = openssl(&["pkcs12", "-in", &public, "-passin", "pass:", "-nodes"]);
        assert!(!out.contains("PRIVATE KEY") && out.contains("BEGIN CERTIFICATE"));
    }
}

#[test]
fn templates_that_x509_cannot_carry_are_refused() {
    let key = SoftwareKeys.generate(KeySpec::Rsa(2048)).unwrap();
    let nameless = CertificateTemplate {
        subject: String::new(),
        dns_names: vec![],
        emails: vec![],
        upns: vec![],
        ip_addresses: vec![],
        uris: vec![],
        ..template()
    };
    let cases = [
        nameless,
        CertificateTemplate {
            key_usage: vec!["signEverything".into()],
            ..template()
        },
        CertificateTemplate {
            ekus: vec!["not.an.oid".into()],
            ..template()
        },
        CertificateTemplate {
            ip_addresses: vec!["10.0.0".into()],
            ..template()
        },
        CertificateTemplate {
            subject: "XX=nope".into(),
            ..template()
        },
        CertificateTemplate {
            not_after: 0,
            ..template()
        },
    ];
    for (i, t) in cases.into_iter().enumerate() {
        assert!(self_signed_certificate(&key, &t).is_err(), "case {i}");
    }
    let secp256k1 = SoftwareKeys.generate(KeySpec::Ec(Curve::P256K)).unwrap();
    assert!(self_signed_certificate(&secp256k1, &template()).is_err());
    let oct = SoftwareKeys.generate(KeySpec::Oct(256)).unwrap();
    assert!(self_signed_certificate(&oct, &template()).is_err());
}

#[test]
fn issued_certificates_and_requests_read_back() {
    use atrest_crypto::certificates::{certificate_info, request_public_key};
    for key in keys() {
        let t = template();
        let der = self_signed_certificate(&key, &t).unwrap();
        let info = certificate_info(&der).unwrap();
        assert_eq!(
            (info.not_before, info.not_after),
            (t.not_before, t.not_after)
        );
        let csr = signing_request(&key, &t).unwrap();
        assert_eq!(request_public_key(&csr).unwrap(), info.public_key);
        let other = SoftwareKeys.generate(key.spec()).unwrap();
        let theirs = signing_request(&other, &t).unwrap();
        assert_ne!(request_public_key(&theirs).unwrap(), info.public_key);
        // Truncated or extended input is refused, never misread.
        for cut in [0, 1, der.len() / 2, der.len() - 1] {
            assert!(certificate_info(&der[..cut]).is_err(), "{cut}");
        }
        let mut longer = der.clone();
        longer.push(0);
        assert!(certificate_info(&longer).is_err());
    }
}
