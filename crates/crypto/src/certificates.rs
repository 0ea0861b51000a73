//! X.509 for Key Vault certificates: self-signed certificates and signing requests made
//! from a policy's subject, names, usages and validity, signed through a [`KeyHandle`]
//! (so the private key never leaves its provider), and the containers a certificate's
//! secret holds: PKCS#12 without a password, or PEM.

use std::net::IpAddr;
use std::sync::Arc;

use aws_lc_rs::digest;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, Ia5String, IsCa,
    KeyPair, KeyUsagePurpose, OtherNameValue, RemoteKeyPair, SanType, SerialNumber,
    SignatureAlgorithm,
};
use zeroize::Zeroizing;

use crate::der;
use crate::keys::provider::{KeyHandle, KeySpec};
use crate::keys::{Curve, KeyError};
use crate::random_bytes;

/// What goes into a certificate (a policy's `x509_props` and validity).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertificateTemplate {
    /// The subject, `CN=…, O=…` as Key Vault takes it (may be empty when names are given).
    pub subject: String,
    /// DNS names.
    pub dns_names: Vec<String>,
    /// E-mail addresses.
    pub emails: Vec<String>,
    /// User principal names (an `otherName` of type UPN).
    pub upns: Vec<String>,
    /// IP addresses.
    pub ip_addresses: Vec<String>,
    /// URIs.
    pub uris: Vec<String>,
    /// Key usages, Key Vault's names (`digitalSignature`, `keyEncipherment`, …).
    pub key_usage: Vec<String>,
    /// Extended key usages, as dotted OIDs.
    pub ekus: Vec<String>,
    /// Start of validity (Unix seconds).
    pub not_before: i64,
    /// End of validity (Unix seconds).
    pub not_after: i64,
}

/// Why a certificate could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertificateError {
    /// The template names something X.509 cannot carry.
    #[error("{0}")]
    BadTemplate(String),
    /// The key cannot sign certificates (an `oct` key, an unsupported curve).
    #[error("{0}")]
    Key(#[from] KeyError),
    /// The encoder failed.
    #[error("the certificate could not be encoded: {0}")]
    Encoding(String),
}

/// The key usages Key Vault names, in X.509 bit order.
pub const KEY_USAGES: [&str; 9] = [
    "digitalSignature",
    "nonRepudiation",
    "keyEncipherment",
    "dataEncipherment",
    "keyAgreement",
    "keyCertSign",
    "cRLSign",
    "encipherOnly",
    "decipherOnly",
];

fn key_usage(name: &str) -> Option<KeyUsagePurpose> {
    use KeyUsagePurpose::*;
    let all = [
        DigitalSignature,
        ContentCommitment,
        KeyEncipherment,
        DataEncipherment,
        KeyAgreement,
        KeyCertSign,
        CrlSign,
        EncipherOnly,
        DecipherOnly,
    ];
    KEY_USAGES
        .iter()
        .position(|n| n.eq_ignore_ascii_case(name))
        .map(|i| all[i])
}

/// Arcs of a dotted OID, if it is one.
pub fn parse_oid(dotted: &str) -> Option<Vec<u64>> {
    let arcs: Vec<u64> = dotted
        .split('.')
        .map(|a| a.parse().ok())
        .collect::<Option<_>>()?;
    (arcs.len() >= 2 && arcs[0] <= 2 && (arcs[0] == 2 || arcs[1] < 40)).then_some(arcs)
}

/// The RDN types a Key Vault subject may use, by their short names.
fn dn_type(short: &str) -> Option<DnType> {
    Some(match short.trim().to_ascii_uppercase().as_str() {
        "CN" => DnType::CommonName,
        "O" => DnType::OrganizationName,
        "OU" => DnType::OrganizationalUnitName,
        "L" => DnType::LocalityName,
        "S" | "ST" => DnType::StateOrProvinceName,
        "C" => DnType::CountryName,
        "E" | "EMAIL" | "EMAILADDRESS" => DnType::CustomDnType(vec![1, 2, 840, 113549, 1, 9, 1]),
        "DC" => DnType::CustomDnType(vec![0, 9, 2342, 19200300, 100, 1, 25]),
        "STREET" => DnType::CustomDnType(vec![2, 5, 4, 9]),
        "POSTALCODE" => DnType::CustomDnType(vec![2, 5, 4, 17]),
        other => DnType::CustomDnType(parse_oid(other.strip_prefix("OID.")?)?),
    })
}

/// A subject as `rcgen` takes it: `CN=a, O=b` (commas inside quotes kept).
fn distinguished_name(subject: &str) -> Result<DistinguishedName, CertificateError> {
    let mut dn = DistinguishedName::new();
    let mut parts = Vec::new();
    let (mut current, mut quoted) = (String::new(), false);
    for c in subject.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' | ';' if !quoted => parts.push(std::mem::take(&mut current)),
            c => current.push(c),
        }
    }
    parts.push(current);
    for part in parts.iter().map(|p| p.trim()).filter(|p| !p.is_empty()) {
        let (kind, value) = part.split_once('=').ok_or_else(|| {
            CertificateError::BadTemplate(format!("The subject part '{part}' is not TYPE=value."))
        })?;
        let kind = dn_type(kind).ok_or_else(|| {
            CertificateError::BadTemplate(format!(
                "The subject attribute '{}' is not supported.",
                kind.trim()
            ))
        })?;
        dn.push(kind, value.trim());
    }
    Ok(dn)
}

fn ia5(what: &str, value: &str) -> Result<Ia5String, CertificateError> {
    Ia5String::try_from(value)
        .map_err(|_| CertificateError::BadTemplate(format!("The {what} '{value}' is not ASCII.")))
}

impl CertificateTemplate {
    fn params(&self) -> Result<CertificateParams, CertificateError> {
        if self.subject.trim().is_empty()
            && self.dns_names.is_empty()
            && self.emails.is_empty()
            && self.upns.is_empty()
            && self.ip_addresses.is_empty()
            && self.uris.is_empty()
        {
            return Err(CertificateError::BadTemplate(
                "A certificate needs a subject or subject alternative names.".into(),
            ));
        }
        let mut params = CertificateParams::default();
        params.distinguished_name = distinguished_name(&self.subject)?;
        let mut names = Vec::new();
        for n in &self.dns_names {
            names.push(SanType::DnsName(ia5("DNS name", n)?));
        }
        for n in &self.emails {
            names.push(SanType::Rfc822Name(ia5("e-mail address", n)?));
        }
        for n in &self.upns {
            names.push(SanType::OtherName((
                vec![1, 3, 6, 1, 4, 1, 311, 20, 2, 3],
                OtherNameValue::Utf8String(n.clone()),
            )));
        }
        for n in &self.ip_addresses {
            let ip: IpAddr = n.parse().map_err(|_| {
                CertificateError::BadTemplate(format!("'{n}' is not an IP address."))
            })?;
            names.push(SanType::IpAddress(ip));
        }
        for n in &self.uris {
            names.push(SanType::URI(ia5("URI", n)?));
        }
        params.subject_alt_names = names;
        params.key_usages = self
            .key_usage
            .iter()
            .map(|u| {
                key_usage(u).ok_or_else(|| {
                    CertificateError::BadTemplate(format!(
                        "'{u}' is not a key usage: use one of {}.",
                        KEY_USAGES.join(", ")
                    ))
                })
            })
            .collect::<Result<_, _>>()?;
        params.extended_key_usages = self
            .ekus
            .iter()
            .map(|e| {
                parse_oid(e)
                    .map(ExtendedKeyUsagePurpose::Other)
                    .ok_or_else(|| {
                        CertificateError::BadTemplate(format!("'{e}' is not an object identifier."))
                    })
            })
            .collect::<Result<_, _>>()?;
        let time = |t: i64| {
            time::OffsetDateTime::from_unix_timestamp(t)
                .map_err(|_| CertificateError::BadTemplate(format!("{t} is not a valid time.")))
        };
        if self.not_after <= self.not_before {
            return Err(CertificateError::BadTemplate(
                "The validity must end after it begins.".into(),
            ));
        }
        params.not_before = time(self.not_before)?;
        params.not_after = time(self.not_after)?;
        // A positive 127-bit serial, as RFC 5280 asks (at most 20 octets, positive).
        let mut serial = random_bytes(16);
        serial[0] &= 0x7f;
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        params.is_ca = IsCa::ExplicitNoCa;
        Ok(params)
    }
}

/// A [`KeyHandle`] as `rcgen` signs with it: the message hashed here, the digest signed
/// by the provider, an ECDSA signature re-encoded as DER.
struct HandleSigner {
    key: Arc<dyn KeyHandle>,
    public: Vec<u8>,
    algorithm: &'static SignatureAlgorithm,
    jws: &'static str,
    hash: &'static digest::Algorithm,
    ec: bool,
}

impl HandleSigner {
    fn new(key: Arc<dyn KeyHandle>) -> Result<Self, CertificateError> {
        let jwk = key.public_jwk();
        let member = |name: &str| -> Result<Vec<u8>, CertificateError> {
            jwk.get(name)
                .and_then(|v| v.as_str())
                .and_then(|s| URL_SAFE_NO_PAD.decode(s).ok())
                .ok_or_else(|| CertificateError::Encoding(format!("the public key lacks '{name}'")))
        };
        match key.spec() {
            KeySpec::Rsa(_) => {
                let public = der::sequence(&[
                    der::unsigned_integer(&member("n")?),
                    der::unsigned_integer(&member("e")?),
                ]);
                Ok(HandleSigner {
                    key,
                    public,
                    algorithm: &rcgen::PKCS_RSA_SHA256,
                    jws: "RS256",
                    hash: &digest::SHA256,
                    ec: false,
                })
            }
            KeySpec::Ec(curve) => {
                let (algorithm, hash): (&'static SignatureAlgorithm, _) = match curve {
                    Curve::P256 => (&rcgen::PKCS_ECDSA_P256_SHA256, &digest::SHA256),
                    Curve::P384 => (&rcgen::PKCS_ECDSA_P384_SHA384, &digest::SHA384),
                    Curve::P521 => (&rcgen::PKCS_ECDSA_P521_SHA512, &digest::SHA512),
                    Curve::P256K => {
                        return Err(CertificateError::BadTemplate(
                            "Certificates are not issued for the curve P-256K: use P-256, P-384 or P-521.".into(),
                        ))
                    }
                };
                let mut public = vec![4];
                public.extend(member("x")?);
                public.extend(member("y")?);
                Ok(HandleSigner {
                    key,
                    public,
                    algorithm,
                    jws: curve.signature_alg(),
                    hash,
                    ec: true,
                })
            }
            KeySpec::Oct(_) => Err(CertificateError::BadTemplate(
                "A certificate's key is RSA or EC.".into(),
            )),
        }
    }
}

impl RemoteKeyPair for HandleSigner {
    fn public_key(&self) -> &[u8] {
        &self.public
    }

    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        let digest = digest::digest(self.hash, msg);
        let signature = self
            .key
            .sign(self.jws, digest.as_ref())
            .map_err(|_| rcgen::Error::RemoteKeyError)?;
        if !self.ec {
            return Ok(signature);
        }
        // JWS gives r || s; X.509 wants SEQUENCE { r INTEGER, s INTEGER }.
        let (r, s) = signature.split_at(signature.len() / 2);
        Ok(der::sequence(&[
            der::unsigned_integer(r),
            der::unsigned_integer(s),
        ]))
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        self.algorithm
    }
}

/// `rcgen`'s key pair for a handle.
fn with_key_pair<T>(
    key: &Arc<dyn KeyHandle>,
    run: impl FnOnce(&KeyPair) -> Result<T, rcgen::Error>,
) -> Result<T, CertificateError> {
    let pair = KeyPair::from_remote(Box::new(HandleSigner::new(key.clone())?))
        .map_err(|e| CertificateError::Encoding(e.to_string()))?;
    run(&pair).map_err(|e| CertificateError::Encoding(e.to_string()))
}

/// A self-signed certificate (DER) for `template`, signed by `key`.
pub fn self_signed_certificate(
    key: &Arc<dyn KeyHandle>,
    template: &CertificateTemplate,
) -> Result<Vec<u8>, CertificateError> {
    let params = template.params()?;
    with_key_pair(key, |pair| Ok(params.self_signed(pair)?.der().to_vec()))
}

/// A PKCS#10 signing request (DER) for `template`, signed by `key`.
pub fn signing_request(
    key: &Arc<dyn KeyHandle>,
    template: &CertificateTemplate,
) -> Result<Vec<u8>, CertificateError> {
    let mut params = template.params()?;
    // A request carries neither a serial number nor a basic-constraints choice.
    params.serial_number = None;
    params.is_ca = IsCa::NoCa;
    with_key_pair(key, |pair| {
        Ok(params.serialize_request(pair)?.der().to_vec())
    })
}

/// What atrest reads from a certificate it is given (a merge, an import).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateInfo {
    /// The `SubjectPublicKeyInfo`, as DER.
    pub public_key: Vec<u8>,
    /// The `subjectPublicKey` bits: a DER `RSAPublicKey` or an EC point.
    pub subject_public_key: Vec<u8>,
    /// `notBefore`, Unix seconds.
    pub not_before: i64,
    /// `notAfter`, Unix seconds.
    pub not_after: i64,
    /// The issuer name, as DER.
    pub issuer: Vec<u8>,
    /// The subject name, as DER.
    pub subject: Vec<u8>,
}

fn malformed(what: &str) -> CertificateError {
    CertificateError::BadTemplate(format!("The {what} is not valid DER."))
}

/// A `UTCTime` or `GeneralizedTime` (UTC, `Z`), as Unix seconds.
fn asn1_time(tlv: &der::Tlv<'_>) -> Option<i64> {
    let text = std::str::from_utf8(tlv.content).ok()?;
    let digits = text.strip_suffix('Z')?;
    let (year, rest) = match (tlv.tag, digits.len()) {
        (0x17, 12) => {
            let yy: i32 = digits[..2].parse().ok()?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, &digits[2..])
        }
        (0x18, 14) => (digits[..4].parse().ok()?, &digits[4..]),
        _ => return None,
    };
    if !rest.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n = |i: usize| rest[i..i + 2].parse::<u8>().ok();
    let month = time::Month::try_from(n(0)?).ok()?;
    let date = time::Date::from_calendar_date(year, month, n(2)?).ok()?;
    let at = date.with_hms(n(4)?, n(6)?, n(8)?).ok()?;
    Some(at.assume_utc().unix_timestamp())
}

/// The `TBSCertificate` fields of a DER certificate, without the optional version:
/// serialNumber, signature, issuer, validity, subject, subjectPublicKeyInfo, then the
/// optional unique ids and `[3]` extensions.
fn tbs_fields(cert: &[u8]) -> Result<Vec<der::Tlv<'_>>, CertificateError> {
    let bad = || malformed("certificate");
    let (outer, rest) = der::expect(cert, 0x30).map_err(|_| bad())?;
    if !rest.is_empty() {
        return Err(bad());
    }
    let parts = der::elements(outer.content).map_err(|_| bad())?;
    let tbs = parts.first().filter(|t| t.tag == 0x30).ok_or_else(bad)?;
    let mut fields = der::elements(tbs.content).map_err(|_| bad())?;
    if fields.first().is_some_and(|f| f.tag == 0xa0) {
        fields.remove(0);
    }
    if fields.len() < 6 || [2, 3, 4, 5].iter().any(|i| fields[*i].tag != 0x30) {
        return Err(bad());
    }
    Ok(fields)
}

/// The public key, names and validity of a DER certificate.
pub fn certificate_info(cert: &[u8]) -> Result<CertificateInfo, CertificateError> {
    let bad = || malformed("certificate");
    let fields = tbs_fields(cert)?;
    let times = der::elements(fields[3].content).map_err(|_| bad())?;
    let (Some(not_before), Some(not_after)) = (
        times.first().and_then(asn1_time),
        times.get(1).and_then(asn1_time),
    ) else {
        return Err(bad());
    };
    let spki = der::elements(fields[5].content).map_err(|_| bad())?;
    let bits = spki
        .get(1)
        .filter(|t| t.tag == 0x03 && t.content.first() == Some(&0))
        .ok_or_else(bad)?;
    Ok(CertificateInfo {
        public_key: fields[5].raw.to_vec(),
        subject_public_key: bits.content[1..].to_vec(),
        not_before,
        not_after,
        issuer: fields[2].raw.to_vec(),
        subject: fields[4].raw.to_vec(),
    })
}

/// The short names of the RDN types a subject is written with, by OID.
const DN_NAMES: [(&str, &str); 10] = [
    ("2.5.4.3", "CN"),
    ("2.5.4.10", "O"),
    ("2.5.4.11", "OU"),
    ("2.5.4.7", "L"),
    ("2.5.4.8", "ST"),
    ("2.5.4.6", "C"),
    ("1.2.840.113549.1.9.1", "E"),
    ("0.9.2342.19200300.100.1.25", "DC"),
    ("2.5.4.9", "STREET"),
    ("2.5.4.17", "POSTALCODE"),
];

/// A directory string's text (UTF8, Printable, IA5, T61 as Latin-1, BMP, Universal).
fn directory_string(tlv: &der::Tlv<'_>) -> Option<String> {
    match tlv.tag {
        0x0c | 0x13 | 0x16 => std::str::from_utf8(tlv.content).ok().map(str::to_owned),
        0x14 => Some(tlv.content.iter().map(|b| char::from(*b)).collect()),
        0x1e => char::decode_utf16(
            tlv.content
                .chunks(2)
                .map(|c| Some(u16::from_be_bytes([c[0], *c.get(1)?])))
                .collect::<Option<Vec<u16>>>()?,
        )
        .collect::<Result<String, _>>()
        .ok(),
        0x1c => tlv
            .content
            .chunks(4)
            .map(|c| {
                let bytes: [u8; 4] = c.try_into().ok()?;
                char::from_u32(u32::from_be_bytes(bytes))
            })
            .collect(),
        _ => None,
    }
}

/// A DER name as a policy's subject: `CN=a, O=b` in encoded order (as `openssl x509
/// -subject` prints it, and as [`CertificateTemplate::subject`] is encoded back); values
/// with separators quoted, unknown types as `OID.1.2.3`.
fn name_text(name: &[u8]) -> Result<String, CertificateError> {
    let bad = || malformed("certificate's subject");
    let (seq, _) = der::expect(name, 0x30).map_err(|_| bad())?;
    let mut parts = Vec::new();
    for rdn in der::elements(seq.content).map_err(|_| bad())? {
        for ava in der::elements(rdn.content).map_err(|_| bad())? {
            let ava = der::elements(ava.content).map_err(|_| bad())?;
            let (Some(kind), Some(value)) = (ava.first().filter(|t| t.tag == 0x06), ava.get(1))
            else {
                return Err(bad());
            };
            let oid = der::oid_text(kind.content).map_err(|_| bad())?;
            let kind = DN_NAMES
                .iter()
                .find(|(o, _)| *o == oid)
                .map_or_else(|| format!("OID.{oid}"), |(_, short)| (*short).to_owned());
            let value = directory_string(value).ok_or_else(bad)?.replace('"', "");
            if value.contains([',', ';', '+']) || value.trim() != value {
                parts.push(format!("{kind}=\"{value}\""));
            } else {
                parts.push(format!("{kind}={value}"));
            }
        }
    }
    Ok(parts.join(", "))
}

/// What a certificate says, as a policy's `x509_props` and validity: the subject, the
/// alternative names, key usages and extended key usages.
pub fn certificate_template(cert: &[u8]) -> Result<CertificateTemplate, CertificateError> {
    let bad = || malformed("certificate's extensions");
    let info = certificate_info(cert)?;
    let fields = tbs_fields(cert)?;
    let mut template = CertificateTemplate {
        subject: name_text(&info.subject)?,
        not_before: info.not_before,
        not_after: info.not_after,
        ..CertificateTemplate::default()
    };
    let Some(extensions) = fields[6..].iter().find(|f| f.tag == 0xa3) else {
        return Ok(template);
    };
    let (list, _) = der::expect(extensions.content, 0x30).map_err(|_| bad())?;
    for extension in der::elements(list.content).map_err(|_| bad())? {
        let parts = der::elements(extension.content).map_err(|_| bad())?;
        let oid = parts
            .first()
            .filter(|t| t.tag == 0x06)
            .and_then(|t| der::oid_text(t.content).ok())
            .ok_or_else(bad)?;
        let value = parts
            .last()
            .filter(|t| t.tag == 0x04)
            .ok_or_else(bad)?
            .content;
        match oid.as_str() {
            "2.5.29.17" => read_alternative_names(value, &mut template).ok_or_else(bad)?,
            "2.5.29.15" => {
                let (bits, _) = der::expect(value, 0x03).map_err(|_| bad())?;
                let flags = bits.content.get(1..).unwrap_or_default();
                template.key_usage = KEY_USAGES
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| flags.get(i / 8).is_some_and(|b| b & (0x80 >> (i % 8)) != 0))
                    .map(|(_, name)| (*name).to_owned())
                    .collect();
            }
            "2.5.29.37" => {
                let (seq, _) = der::expect(value, 0x30).map_err(|_| bad())?;
                template.ekus = der::elements(seq.content)
                    .map_err(|_| bad())?
                    .iter()
                    .map(|t| der::oid_text(t.content).map_err(|_| bad()))
                    .collect::<Result<_, _>>()?;
            }
            _ => {}
        }
    }
    Ok(template)
}

/// Reads `GeneralNames` into the template's DNS names, e-mails, UPNs, IPs and URIs.
fn read_alternative_names(value: &[u8], template: &mut CertificateTemplate) -> Option<()> {
    let (seq, _) = der::expect(value, 0x30).ok()?;
    for name in der::elements(seq.content).ok()? {
        let text = || std::str::from_utf8(name.content).ok().map(str::to_owned);
        match name.tag {
            0x81 => template.emails.push(text()?),
            0x82 => template.dns_names.push(text()?),
            0x86 => template.uris.push(text()?),
            0x87 => {
                let ip = match name.content.len() {
                    4 => IpAddr::from(<[u8; 4]>::try_from(name.content).ok()?),
                    16 => IpAddr::from(<[u8; 16]>::try_from(name.content).ok()?),
                    _ => return None,
                };
                template.ip_addresses.push(ip.to_string());
            }
            0xa0 => {
                let parts = der::elements(name.content).ok()?;
                let oid = der::oid_text(parts.first()?.content).ok()?;
                if oid == "1.3.6.1.4.1.311.20.2.3" {
                    let (inner, _) = der::read(parts.get(1)?.content).ok()?;
                    template.upns.push(directory_string(&inner)?);
                }
            }
            _ => {}
        }
    }
    Some(())
}

/// The `SubjectPublicKeyInfo` (DER) of a PKCS#10 request.
pub fn request_public_key(csr: &[u8]) -> Result<Vec<u8>, CertificateError> {
    let bad = || malformed("certificate signing request");
    let (outer, _) = der::expect(csr, 0x30).map_err(|_| bad())?;
    let parts = der::elements(outer.content).map_err(|_| bad())?;
    let info = parts.first().filter(|t| t.tag == 0x30).ok_or_else(bad)?;
    let fields = der::elements(info.content).map_err(|_| bad())?;
    // version, subject, subjectPKInfo, attributes
    let spki = fields.get(2).filter(|t| t.tag == 0x30).ok_or_else(bad)?;
    Ok(spki.raw.to_vec())
}

const PKCS7_DATA: [u64; 7] = [1, 2, 840, 113549, 1, 7, 1];
const KEY_BAG: [u64; 9] = [1, 2, 840, 113549, 1, 12, 10, 1, 1];
const CERT_BAG: [u64; 9] = [1, 2, 840, 113549, 1, 12, 10, 1, 3];
const X509_CERTIFICATE: [u64; 8] = [1, 2, 840, 113549, 1, 9, 22, 1];
const LOCAL_KEY_ID: [u64; 7] = [1, 2, 840, 113549, 1, 9, 21];

fn data_content(inner: &[u8]) -> Vec<u8> {
    der::sequence(&[
        der::oid(&PKCS7_DATA),
        der::explicit(0, &der::octet_string(inner)),
    ])
}

/// A PKCS#12 file without a password: the private key (PKCS#8, if given) and the chain
/// in order, the leaf (`chain[leaf]`) and the key sharing a `localKeyId`. No MAC: there is
/// no password to derive one from, and readers accept its absence.
pub fn pkcs12(private_key: Option<&[u8]>, chain: &[Vec<u8>], leaf: usize) -> Zeroizing<Vec<u8>> {
    let key_id = match chain.get(leaf) {
        Some(leaf) => digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, leaf)
            .as_ref()
            .to_vec(),
        None => Vec::new(),
    };
    let local_key_id = der::set(&[der::sequence(&[
        der::oid(&LOCAL_KEY_ID),
        der::set(&[der::octet_string(&key_id)]),
    ])]);
    let mut bags = Vec::new();
    for (i, cert) in chain.iter().enumerate() {
        let cert_bag = der::sequence(&[
            der::oid(&X509_CERTIFICATE),
            der::explicit(0, &der::octet_string(cert)),
        ]);
        let mut bag = vec![der::oid(&CERT_BAG), der::explicit(0, &cert_bag)];
        if i == leaf {
            bag.push(local_key_id.clone());
        }
        bags.push(der::sequence(&bag));
    }
    let mut contents = vec![data_content(&der::sequence(&bags))];
    if let Some(key) = private_key {
        let bag = Zeroizing::new(der::sequence(&[
            der::oid(&KEY_BAG),
            der::explicit(0, key),
            local_key_id,
        ]));
        contents.push(data_content(&Zeroizing::new(der::sequence(
            &[bag.to_vec()],
        ))));
    }
    let safe = Zeroizing::new(der::sequence(&contents));
    Zeroizing::new(der::sequence(&[der::small_integer(3), data_content(&safe)]))
}

fn pem_block(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The PEM Key Vault keeps in a certificate's secret: the private key (PKCS#8, if given),
/// then the chain, leaf first.
pub fn pem_bundle(private_key: Option<&[u8]>, chain: &[Vec<u8>]) -> Zeroizing<String> {
    let mut out = Zeroizing::new(String::new());
    if let Some(key) = private_key {
        out.push_str(&pem_block("PRIVATE KEY", key));
    }
    for cert in chain {
        out.push_str(&pem_block("CERTIFICATE", cert));
    }
    out
}

/// A certificate's DER as PEM.
pub fn certificate_pem(der: &[u8]) -> String {
    pem_block("CERTIFICATE", der)
}

/// The two forms a certificate import takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportFormat {
    /// A PKCS#12 (PFX) file.
    Pkcs12,
    /// PEM blocks: certificates and a PKCS#8 private key.
    Pem,
}

impl ImportFormat {
    /// `PKCS#12` or `PEM`, as Key Vault's messages name them.
    pub fn name(self) -> &'static str {
        match self {
            ImportFormat::Pkcs12 => "PKCS#12",
            ImportFormat::Pem => "PEM",
        }
    }
}

/// Why an import's content was refused. Messages are Key Vault's, with the cause; never
/// the password or key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImportError {
    /// The PKCS#12 file cannot be read (malformed, wrong password, unsupported scheme).
    #[error("The specified PKCS#12 X.509 certificate content can not be read. Please check if certificate is in valid PKCS#12 format. {0}")]
    Pkcs12(String),
    /// The PEM content is not what an import takes.
    #[error("The specified PEM X.509 certificate content is in an unexpected format. Please check if certificate is in valid PEM format. {0}")]
    Pem(String),
    /// No private key came with the certificate.
    #[error("Private key is not specified in the specified X.509 {} certificate content. Please specify private key in the X.509 {} certificate content.", .0.name(), .0.name())]
    NoPrivateKey(ImportFormat),
    /// No certificate carries the private key's public key.
    #[error("The private key does not match any certificate in the content: the leaf certificate must carry its public key.")]
    KeyMismatch,
    /// The private key is of a kind Key Vault does not hold.
    #[error("{0}")]
    Key(#[from] KeyError),
}

/// A certificate to import: its private key and chain.
pub struct ImportedCertificate {
    /// What the content was.
    pub format: ImportFormat,
    /// The private key, as PKCS#8.
    pub private_key: Zeroizing<Vec<u8>>,
    /// The chain: the leaf, then each issuer in turn, then the rest in content order; or,
    /// when the order was asked to be kept, as the content has it.
    pub chain: Vec<Vec<u8>>,
    /// Where the leaf (the certificate of the private key) is in `chain`.
    pub leaf: usize,
}

impl std::fmt::Debug for ImportedCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ImportedCertificate({:?}, {} certificates, key <redacted>)",
            self.format,
            self.chain.len()
        )
    }
}

/// Reads the content of a certificate import: a PKCS#12 file (its password, or an empty
/// one), or PEM text holding certificates and one PKCS#8 private key (`PRIVATE KEY`, or
/// `ENCRYPTED PRIVATE KEY` with the password).
pub fn read_import(
    content: &[u8],
    password: &str,
    keep_order: bool,
) -> Result<ImportedCertificate, ImportError> {
    // PEM may follow other text (`openssl pkcs12` prints bag attributes first); a PFX
    // is a DER SEQUENCE.
    let is_pem = content.first() != Some(&0x30) && content.windows(10).any(|w| w == b"-----BEGIN");
    let (format, fail): (ImportFormat, fn(String) -> ImportError) = if is_pem {
        (ImportFormat::Pem, ImportError::Pem)
    } else {
        (ImportFormat::Pkcs12, ImportError::Pkcs12)
    };
    let (mut keys, certificates) = if is_pem {
        read_pem(content, password)?
    } else {
        let read = crate::pkcs12::read_pkcs12(content, password)
            .map_err(|e| ImportError::Pkcs12(e.to_string()))?;
        (read.keys, read.certificates)
    };
    if keys.len() > 1 {
        return Err(fail("It holds more than one private key.".into()));
    }
    let private_key = keys.pop().ok_or(ImportError::NoPrivateKey(format))?;
    let public = crate::keys::KeyMaterial::from_pkcs8(&private_key)?.subject_public_key();
    let infos = certificates
        .iter()
        .map(|c| certificate_info(c))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| fail("A certificate in it is not valid DER.".into()))?;
    if infos.is_empty() {
        return Err(fail("It holds no certificate.".into()));
    }
    let leaf = infos
        .iter()
        .position(|i| i.subject_public_key == public)
        .ok_or(ImportError::KeyMismatch)?;
    if keep_order {
        return Ok(ImportedCertificate {
            format,
            private_key,
            chain: certificates,
            leaf,
        });
    }
    let mut order = vec![leaf];
    loop {
        let last = &infos[order[order.len() - 1]];
        let issuer = (last.subject != last.issuer)
            .then(|| {
                (0..infos.len()).find(|i| !order.contains(i) && infos[*i].subject == last.issuer)
            })
            .flatten();
        match issuer {
            Some(i) => order.push(i),
            None => break,
        }
    }
    let rest: Vec<usize> = (0..infos.len()).filter(|i| !order.contains(i)).collect();
    order.extend(rest);
    Ok(ImportedCertificate {
        format,
        private_key,
        chain: order.iter().map(|i| certificates[*i].clone()).collect(),
        leaf: 0,
    })
}

type KeysAndCertificates = (Vec<Zeroizing<Vec<u8>>>, Vec<Vec<u8>>);

/// The private keys and certificates of PEM text. Text around the blocks (such as the
/// bag attributes `openssl pkcs12` prints) is ignored.
fn read_pem(content: &[u8], password: &str) -> Result<KeysAndCertificates, ImportError> {
    let text = std::str::from_utf8(content)
        .map_err(|_| ImportError::Pem("It is not UTF-8 text.".into()))?;
    let mut keys = Vec::new();
    let mut certificates = Vec::new();
    let mut lines = text.lines().map(str::trim);
    while let Some(line) = lines.next() {
        let Some(label) = line
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
        else {
            continue;
        };
        let end = format!("-----END {label}-----");
        let mut body = Zeroizing::new(String::new());
        let mut closed = false;
        let mut headers = false;
        for line in lines.by_ref() {
            if line == end {
                closed = true;
                break;
            }
            if line.contains(':') {
                headers = true;
            } else {
                body.push_str(line);
            }
        }
        if !closed {
            return Err(ImportError::Pem(format!(
                "The {label} block is not closed."
            )));
        }
        let der = Zeroizing::new(
            STANDARD
                .decode(body.as_bytes())
                .map_err(|_| ImportError::Pem(format!("The {label} block is not base64.")))?,
        );
        match label {
            "CERTIFICATE" | "X509 CERTIFICATE" => certificates.push(der.to_vec()),
            "PRIVATE KEY" => keys.push(der),
            "ENCRYPTED PRIVATE KEY" => keys.push(
                crate::pkcs12::decrypt_private_key(&der, password)
                    .map_err(|e| ImportError::Pem(e.to_string()))?,
            ),
            "RSA PRIVATE KEY" | "EC PRIVATE KEY" | "DSA PRIVATE KEY" => {
                let encrypted = if headers {
                    " (encrypted the legacy way)"
                } else {
                    ""
                };
                return Err(ImportError::Pem(format!(
                    "Its private key is a {label}{encrypted}, not PKCS#8: convert it with `openssl pkcs8 -topk8 -nocrypt`."
                )));
            }
            _ => {}
        }
    }
    if keys.is_empty() && certificates.is_empty() {
        return Err(ImportError::Pem("It holds no PEM block.".into()));
    }
    Ok((keys, certificates))
}
