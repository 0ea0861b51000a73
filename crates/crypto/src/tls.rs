//! The self-signed CA and server certificate generated on first start.
//!
//! The CA's private key is used once, to sign the server certificate, and then dropped:
//! nothing on disk can mint further certificates that clients trusting `ca.pem` accept.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use zeroize::Zeroizing;

use crate::CryptoError;

/// A CA certificate and a server certificate with its private key, all PEM.
pub struct TlsIdentity {
    /// The CA certificate clients trust.
    pub ca_pem: String,
    /// The server certificate chain (leaf, then CA).
    pub chain_pem: String,
    /// The server's private key (PKCS#8 PEM); seal it before writing it anywhere.
    pub key_pem: Zeroizing<String>,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsIdentity").finish_non_exhaustive()
    }
}

/// Generates a CA and a server certificate for `dns_names` and `ips`, valid ten years.
pub fn generate_tls_identity(
    dns_names: &[&str],
    ips: &[std::net::IpAddr],
) -> Result<TlsIdentity, CryptoError> {
    let lib = |_| CryptoError::Library("certificate generation");
    let ca_key = KeyPair::generate().map_err(lib)?;
    let mut ca = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "atrest local CA");
    dn.push(DnType::OrganizationName, "atrest");
    ca.distinguished_name = dn;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let (not_before, not_after) = validity();
    ca.not_before = not_before;
    ca.not_after = not_after;
    let ca_cert = ca.self_signed(&ca_key).map_err(lib)?;

    let leaf_key = KeyPair::generate().map_err(lib)?;
    let mut leaf = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        dns_names.first().copied().unwrap_or("localhost"),
    );
    leaf.distinguished_name = dn;
    leaf.subject_alt_names = dns_names
        .iter()
        .map(|n| rcgen::Ia5String::try_from(*n).map(SanType::DnsName))
        .chain(ips.iter().map(|ip| Ok(SanType::IpAddress(*ip))))
        .collect::<Result<_, _>>()
        .map_err(lib)?;
    leaf.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.not_before = not_before;
    leaf.not_after = not_after;
    let leaf_cert = leaf.signed_by(&leaf_key, &ca_cert, &ca_key).map_err(lib)?;

    Ok(TlsIdentity {
        ca_pem: ca_cert.pem(),
        chain_pem: format!("{}{}", leaf_cert.pem(), ca_cert.pem()),
        key_pem: Zeroizing::new(leaf_key.serialize_pem()),
    })
}

/// From January 1st of the current year to ten years later.
fn validity() -> (time::OffsetDateTime, time::OffsetDateTime) {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let year = 1970 + (secs / 31_556_952) as i32;
    (
        rcgen::date_time_ymd(year, 1, 1),
        rcgen::date_time_ymd(year + 10, 1, 1),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_has_chain_and_key() {
        let id = generate_tls_identity(
            &["localhost", "*.vault.localhost"],
            &["127.0.0.1".parse().unwrap()],
        )
        .unwrap();
        assert_eq!(id.chain_pem.matches("BEGIN CERTIFICATE").count(), 2);
        assert!(id.chain_pem.ends_with(&id.ca_pem));
        assert!(id.key_pem.contains("PRIVATE KEY"));
        assert!(!format!("{id:?}").contains("PRIVATE"));
    }
}
