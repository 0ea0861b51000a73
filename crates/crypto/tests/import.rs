//! Certificate imports as other tools write them: PKCS#12 files from `openssl pkcs12
//! -export` in every encryption it offers (PBES2 with AES, the legacy RC2 and 3DES schemes,
//! none), with and without a MAC or a password, and PEM bundles with PKCS#8 keys, plain
//! or encrypted.

use std::path::Path;
use std::process::Command;

use atrest_crypto::certificates::{
    certificate_info, certificate_template, read_import, self_signed_certificate,
    CertificateTemplate, ImportError, ImportFormat,
};
use atrest_crypto::{KeyProvider, KeySpec, SoftwareKeys};

fn openssl(dir: &Path, args: &[&str]) -> Vec<u8> {
    let done = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl runs");
    assert!(
        done.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&done.stderr)
    );
    done.stdout
}

fn read(dir: &Path, name: &str) -> Vec<u8> {
    std::fs::read(dir.join(name)).unwrap()
}

/// The DER of a PEM certificate file.
fn der(dir: &Path, name: &str) -> Vec<u8> {
    openssl(dir, &["x509", "-in", name, "-outform", "DER"])
}

/// A CA and a leaf it signed, for a key made with `newkey` (`rsa:2048`, `ec`…): files
/// `ca.pem`, `leaf.pem`, and the leaf's key as `leaf.key` (PKCS#8).
fn make_chain(dir: &Path, newkey: &[&str]) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "30",
            "-subj",
            "/C=NL/O=Test CA/CN=Import Test Root",
        ],
    );
    let mut args = vec![
        "req", "-new", "-nodes", "-keyout", "leaf.key", "-out", "leaf.csr",
    ];
    args.extend_from_slice(newkey);
    args.extend_from_slice(&["-subj", "/C=NL/O=Contoso/CN=import.contoso.test"]);
    openssl(dir, &args);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:import.contoso.test,DNS:www.contoso.test,IP:10.1.2.3,email:ops@contoso.test,URI:https://contoso.test/\n\
         keyUsage=critical,digitalSignature,keyEncipherment\n\
         extendedKeyUsage=serverAuth,1.3.6.1.4.1.311.10.3.12\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "20",
            "-extfile",
            "ext.cnf",
            "-out",
            "leaf.pem",
        ],
    );
}

/// `openssl pkcs12 -export` of the leaf, its key and the CA, with `extra` arguments.
fn export(dir: &Path, password: &str, extra: &[&str]) -> Vec<u8> {
    let pass = format!("pass:{password}");
    let mut args = vec![
        "pkcs12",
        "-export",
        "-in",
        "leaf.pem",
        "-inkey",
        "leaf.key",
        "-certfile",
        "ca.pem",
        "-passout",
        &pass,
        "-out",
        "out.pfx",
    ];
    args.extend_from_slice(extra);
    openssl(dir, &args);
    read(dir, "out.pfx")
}

const SCHEMES: [&[&str]; 8] = [
    // OpenSSL 3's default: PBES2 (PBKDF2-SHA256, AES-256-CBC), HMAC-SHA256.
    &[],
    // What OpenSSL 1.x and older tools wrote: RC2-40 certificates, 3DES key, HMAC-SHA1.
    &["-legacy"],
    &[
        "-certpbe",
        "PBE-SHA1-3DES",
        "-keypbe",
        "PBE-SHA1-3DES",
        "-macalg",
        "sha1",
    ],
    &[
        "-certpbe",
        "PBE-SHA1-2DES",
        "-keypbe",
        "PBE-SHA1-RC2-128",
        "-provider",
        "legacy",
        "-provider",
        "default",
    ],
    &[
        "-certpbe",
        "AES-128-CBC",
        "-keypbe",
        "AES-192-CBC",
        "-macalg",
        "sha512",
        "-iter",
        "5000",
    ],
    &[
        "-certpbe",
        "DES-EDE3-CBC",
        "-keypbe",
        "AES-256-CBC",
        "-macalg",
        "sha384",
    ],
    &["-certpbe", "NONE", "-keypbe", "NONE"],
    &["-certpbe", "NONE", "-keypbe", "NONE", "-nomac"],
];

#[test]
fn pkcs12_files_in_every_scheme_openssl_writes_import() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    for newkey in [
        &["-newkey", "rsa:2048"][..],
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384"],
    ] {
        make_chain(dir, newkey);
        let (leaf, ca) = (der(dir, "leaf.pem"), der(dir, "ca.pem"));
        let key = SoftwareKeys
            .import_pkcs8(&openssl(
                dir,
                &[
                    "pkcs8", "-topk8", "-nocrypt", "-in", "leaf.key", "-outform", "DER",
                ],
            ))
            .unwrap();
        for password in ["s3cret pässword", ""] {
            for scheme in SCHEMES {
                let pfx = export(dir, password, scheme);
                let what = format!("{newkey:?} {scheme:?} password {password:?}");
                let imported = read_import(&pfx, password, false).expect(&what);
                assert_eq!(imported.format, ImportFormat::Pkcs12);
                assert_eq!(imported.chain, [leaf.clone(), ca.clone()], "{what}");
                assert_eq!(imported.leaf, 0);
                let loaded = SoftwareKeys.import_pkcs8(&imported.private_key).unwrap();
                assert_eq!(loaded.public_jwk(), key.public_jwk(), "{what}");
                assert!(!format!("{imported:?}").contains(password) || password.is_empty());

                if !scheme.contains(&"-nomac") {
                    let wrong = read_import(&pfx, "not the password", false).unwrap_err();
                    assert!(
                        matches!(&wrong, ImportError::Pkcs12(m) if m.contains("MAC does not verify")),
                        "{what}: {wrong}"
                    );
                    assert!(!wrong.to_string().contains(password) || password.is_empty());
                }
            }
        }
    }
}

#[test]
fn chains_are_ordered_leaf_first_unless_kept() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    make_chain(dir, &["-newkey", "rsa:2048"]);
    let (leaf, ca) = (der(dir, "leaf.pem"), der(dir, "ca.pem"));
    // The CA first in the file.
    let mut bundle = read(dir, "ca.pem");
    bundle.extend(read(dir, "leaf.pem"));
    std::fs::write(dir.join("both.pem"), &bundle).unwrap();
    let pfx = {
        openssl(
            dir,
            &[
                "pkcs12",
                "-export",
                "-in",
                "both.pem",
                "-inkey",
                "leaf.key",
                "-passout",
                "pass:pw",
                "-out",
                "mixed.pfx",
            ],
        );
        read(dir, "mixed.pfx")
    };
    let sorted = read_import(&pfx, "pw", false).unwrap();
    assert_eq!(
        (sorted.chain.clone(), sorted.leaf),
        (vec![leaf.clone(), ca.clone()], 0)
    );
    let kept = read_import(&pfx, "pw", true).unwrap();
    let leaf_at = kept.chain.iter().position(|c| *c == leaf).unwrap();
    assert_eq!(kept.leaf, leaf_at);
    assert_eq!(kept.chain.len(), 2);
}

#[test]
fn pem_imports_take_pkcs8_keys_plain_or_encrypted() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    make_chain(
        dir,
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
    );
    let (leaf, ca) = (der(dir, "leaf.pem"), der(dir, "ca.pem"));
    let plain = openssl(dir, &["pkcs8", "-topk8", "-nocrypt", "-in", "leaf.key"]);
    let encrypted = openssl(
        dir,
        &[
            "pkcs8",
            "-topk8",
            "-v2",
            "aes-256-cbc",
            "-passout",
            "pass:pem pw",
            "-in",
            "leaf.key",
        ],
    );
    let legacy = openssl(
        dir,
        &[
            "pkcs8",
            "-topk8",
            "-v1",
            "PBE-SHA1-3DES",
            "-passout",
            "pass:pem pw",
            "-in",
            "leaf.key",
        ],
    );
    let traditional = openssl(dir, &["ec", "-in", "leaf.key"]);
    let certs = [read(dir, "leaf.pem"), read(dir, "ca.pem")].concat();
    let bundle = |key: &[u8], first: bool| {
        let text = b"Bag Attributes\n    friendlyName: leaf\n".to_vec();
        if first {
            [text, key.to_vec(), certs.clone()].concat()
        } else {
            [text, certs.clone(), key.to_vec()].concat()
        }
    };

    for (key, password) in [(&plain, ""), (&encrypted, "pem pw"), (&legacy, "pem pw")] {
        for first in [true, false] {
            let imported = read_import(&bundle(key, first), password, false).unwrap();
            assert_eq!(imported.format, ImportFormat::Pem);
            assert_eq!(imported.chain, [leaf.clone(), ca.clone()]);
            let spec = SoftwareKeys
                .import_pkcs8(&imported.private_key)
                .unwrap()
                .spec();
            assert_eq!(spec, KeySpec::Ec(atrest_crypto::Curve::P256));
        }
    }
    let wrong = read_import(&bundle(&encrypted, true), "other", false).unwrap_err();
    assert!(
        matches!(wrong, ImportError::Pem(ref m) if m.contains("does not decrypt")),
        "{wrong}"
    );

    let refused = read_import(&bundle(&traditional, true), "", false).unwrap_err();
    assert!(refused.to_string().contains("not PKCS#8"), "{refused}");
    let no_key = read_import(&certs, "", false).unwrap_err();
    assert_eq!(no_key, ImportError::NoPrivateKey(ImportFormat::Pem));
    assert!(no_key
        .to_string()
        .starts_with("Private key is not specified"));

    // A key that belongs to no certificate given.
    let other = openssl(
        dir,
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ],
    );
    let mismatch = read_import(&[other, certs.clone()].concat(), "", false).unwrap_err();
    assert_eq!(mismatch, ImportError::KeyMismatch);

    let unclosed = read_import(b"-----BEGIN CERTIFICATE-----\nMII\n", "", false).unwrap_err();
    assert!(matches!(unclosed, ImportError::Pem(_)));
}

#[test]
fn damaged_pkcs12_files_are_refused_at_every_length() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    make_chain(dir, &["-newkey", "rsa:2048"]);
    for scheme in [&[][..], &["-legacy"]] {
        let pfx = export(dir, "pw", scheme);
        for cut in (0..pfx.len()).step_by(7) {
            assert!(read_import(&pfx[..cut], "pw", false).is_err(), "{cut}");
        }
        for at in (0..pfx.len()).step_by(13) {
            let mut flipped = pfx.clone();
            flipped[at] ^= 0x40;
            // A flip may land where nothing is checked (an unused attribute); none panics,
            // and none gives a different key or chain.
            if let Ok(imported) = read_import(&flipped, "pw", false) {
                let original = read_import(&pfx, "pw", false).unwrap();
                assert_eq!(imported.chain, original.chain, "{at}");
                assert_eq!(*imported.private_key, *original.private_key, "{at}");
            }
        }
    }
}

#[test]
fn templates_read_back_from_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    make_chain(dir, &["-newkey", "rsa:2048"]);
    let leaf = der(dir, "leaf.pem");
    let template = certificate_template(&leaf).unwrap();
    let info = certificate_info(&leaf).unwrap();
    assert_eq!(
        template,
        CertificateTemplate {
            subject: "C=NL, O=Contoso, CN=import.contoso.test".into(),
            dns_names: vec!["import.contoso.test".into(), "www.contoso.test".into()],
            emails: vec!["ops@contoso.test".into()],
            upns: vec![],
            ip_addresses: vec!["10.1.2.3".into()],
            uris: vec!["https://contoso.test/".into()],
            key_usage: vec!["digitalSignature".into(), "keyEncipherment".into()],
            ekus: vec!["1.3.6.1.5.5.7.3.1".into(), "1.3.6.1.4.1.311.10.3.12".into()],
            not_before: info.not_before,
            not_after: info.not_after,
        }
    );
    assert_eq!(info.not_after - info.not_before, 20 * 86_400);

    // What a template makes, a template reads back (the subject's quoting included).
    let now = 1_790_000_000;
    let made = CertificateTemplate {
        subject: "CN=app.contoso.test, O=\"Contoso, Ltd\", OU=Ops, OID.2.5.4.5=42".into(),
        upns: vec!["svc@contoso.test".into()],
        ip_addresses: vec!["2001:db8::1".into()],
        key_usage: vec![
            "digitalSignature".into(),
            "cRLSign".into(),
            "decipherOnly".into(),
        ],
        ekus: vec!["1.3.6.1.5.5.7.3.2".into()],
        not_before: now,
        not_after: now + 86_400,
        ..CertificateTemplate::default()
    };
    let key = SoftwareKeys.generate(KeySpec::Rsa(2048)).unwrap();
    let cert = self_signed_certificate(&key, &made).unwrap();
    assert_eq!(certificate_template(&cert).unwrap(), made);
}
