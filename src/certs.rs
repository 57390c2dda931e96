//! Certificates, the one place that makes them (rcgen): the throwaway pair `serve` generates when
//! none is configured, and the CA, serving and client certificates `gatehouse certs` writes.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, SignatureAlgorithm,
};
use sha2::{Digest, Sha256};

/// A CA and a serving certificate signed by it, as PEM.
#[derive(Clone, Debug)]
pub struct GeneratedPki {
    /// The CA certificate: what clients trust.
    pub ca_pem: String,
    /// The serving certificate.
    pub cert_pem: String,
    /// The serving key (PKCS#8).
    pub key_pem: String,
}

/// How long the pair `serve` generates lives: a development certificate, regenerated at every
/// start, has no reason to outlive a week (rcgen's default runs to the year 4096).
pub const GENERATED_VALIDITY: Validity = Validity {
    ca: Duration::from_secs(7 * 24 * 3600),
    leaf: Duration::from_secs(7 * 24 * 3600),
};

/// Generates a CA and a serving certificate for `names` (DNS names or IP addresses), as `serve`
/// does at start when no certificate is configured.
pub fn generate(names: &[&str]) -> Result<GeneratedPki, rcgen::Error> {
    // Names come from code here, not operators: anything that is not an IP goes in as DNS.
    let names: Vec<Name> = names
        .iter()
        .map(|n| parse_name(n).unwrap_or_else(|| Name::Dns((*n).to_owned())))
        .collect();
    let issued = issue(&Request {
        names: &names,
        key_type: KeyType::EcdsaP256,
        validity: Some(GENERATED_VALIDITY),
        client: false,
    })?;
    Ok(GeneratedPki {
        ca_pem: issued.ca.cert,
        cert_pem: issued.serving.cert,
        key_pem: issued.serving.key,
    })
}

/// The key algorithm of generated keys.
///
/// ECDSA P-256 is accepted by every kube-apiserver and client; RSA 2048 is for PKIs that
/// require it (generated with RustCrypto's `rsa`: ring signs with RSA but cannot generate keys).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum KeyType {
    /// ECDSA on P-256 with SHA-256.
    #[default]
    EcdsaP256,
    /// ECDSA on P-384 with SHA-384.
    EcdsaP384,
    /// RSA 2048 with PKCS#1 v1.5 and SHA-256.
    Rsa2048,
}

impl KeyType {
    fn algorithm(self) -> &'static SignatureAlgorithm {
        match self {
            Self::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            Self::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            Self::Rsa2048 => &rcgen::PKCS_RSA_SHA256,
        }
    }

    /// A new key of this type.
    fn generate(self) -> Result<KeyPair, rcgen::Error> {
        match self {
            Self::EcdsaP256 | Self::EcdsaP384 => KeyPair::generate_for(self.algorithm()),
            Self::Rsa2048 => {
                use rsa::pkcs8::EncodePrivateKey;
                let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048)
                    .map_err(|_| rcgen::Error::KeyGenerationUnavailable)?;
                let der = key
                    .to_pkcs8_der()
                    .map_err(|_| rcgen::Error::KeyGenerationUnavailable)?;
                let der = rustls_pki_types::PrivatePkcs8KeyDer::from(der.as_bytes().to_vec());
                KeyPair::from_pkcs8_der_and_sign_algo(&der, self.algorithm())
            }
        }
    }

    /// How operators name it.
    pub fn label(self) -> &'static str {
        match self {
            Self::EcdsaP256 => "ECDSA P-256",
            Self::EcdsaP384 => "ECDSA P-384",
            Self::Rsa2048 => "RSA 2048",
        }
    }
}

/// A subject alternative name of a serving certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Name {
    /// A DNS name (lower case; `*.` allowed as the first label).
    Dns(String),
    /// An IP address.
    Ip(IpAddr),
}

impl std::fmt::Display for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Dns(name) => f.write_str(name),
            Self::Ip(ip) => ip.fmt(f),
        }
    }
}

/// Reads a name as an IP address or a DNS name; `None` when it is neither.
pub fn parse_name(name: &str) -> Option<Name> {
    if let Ok(ip) = name.parse::<IpAddr>() {
        return Some(Name::Ip(ip));
    }
    let name = name.to_ascii_lowercase();
    let rest = name.strip_prefix("*.").unwrap_or(&name);
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    (name.len() <= 253 && rest.split('.').all(label_ok)).then_some(Name::Dns(name))
}

/// How long certificates live, counted from now.
#[derive(Clone, Copy, Debug)]
pub struct Validity {
    /// The CA.
    pub ca: Duration,
    /// The serving and client certificates.
    pub leaf: Duration,
}

/// What to issue.
#[derive(Clone, Debug)]
pub struct Request<'a> {
    /// The serving certificate's names; the first is also its common name.
    pub names: &'a [Name],
    /// Key algorithm for every key.
    pub key_type: KeyType,
    /// `None`: rcgen's default (the throwaway pair `serve` generates).
    pub validity: Option<Validity>,
    /// Also a client certificate for kube-apiserver (CN `kube-apiserver`, clientAuth).
    pub client: bool,
}

/// A certificate and its private key, as PEM.
#[derive(Clone, Debug)]
pub struct Pair {
    /// The certificate.
    pub cert: String,
    /// The private key (PKCS#8).
    pub key: String,
}

/// Issued certificates.
#[derive(Clone, Debug)]
pub struct Issued {
    /// The CA (self-signed); its certificate is the `caBundle`.
    pub ca: Pair,
    /// The serving certificate, signed by the CA.
    pub serving: Pair,
    /// The apiserver's client certificate, signed by the CA, when asked for.
    pub client: Option<Pair>,
}

/// Certificates start this long before now: a node whose clock runs a little behind the machine
/// that generated them must not see them as not yet valid (cfssl backdates by the same).
const BACKDATE: Duration = Duration::from_secs(5 * 60);

/// The client certificate's common name: what kube-apiserver is called in mTLS allow lists.
pub const CLIENT_COMMON_NAME: &str = "kube-apiserver";

/// Sets the validity window: from a little before now until `lifetime` from now.
fn window(params: &mut CertificateParams, now: SystemTime, lifetime: Duration) {
    params.not_before = now.checked_sub(BACKDATE).unwrap_or(now).into();
    params.not_after = now.checked_add(lifetime).unwrap_or(now).into();
}

/// The CA's parameters, all derived from its key, so [`renew`] rebuilds the same issuer (name
/// and key identifier) from `ca.key` alone.
fn ca_params(ca_key: &KeyPair) -> Result<CertificateParams, rcgen::Error> {
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    // Path length 0: this CA signs leaf certificates only, never another CA.
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    // A name of its own per CA: two gatehouse CAs in one trust bundle (a rotation) or in one
    // error message stay told apart, and a path builder never tries the wrong one.
    let id = Sha256::digest(ca_key.public_key_raw());
    ca.distinguished_name.push(
        DnType::CommonName,
        format!(
            "gatehouse CA {:02x}{:02x}{:02x}{:02x}",
            id[0], id[1], id[2], id[3]
        ),
    );
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok(ca)
}

/// Issues a CA, a serving certificate and optionally a client certificate.
pub fn issue(request: &Request<'_>) -> Result<Issued, rcgen::Error> {
    let ca_key = request.key_type.generate()?;
    let mut ca = ca_params(&ca_key)?;
    if let Some(v) = request.validity {
        window(&mut ca, SystemTime::now(), v.ca);
    }
    let pair = Pair {
        cert: ca.self_signed(&ca_key)?.pem(),
        key: ca_key.serialize_pem(),
    };
    let (serving, client) = leaves(request, &Issuer::new(ca, ca_key))?;
    Ok(Issued {
        ca: pair,
        serving,
        client,
    })
}

/// Issues new serving (and client) certificates under an existing gatehouse CA, given its key
/// (PEM): the CA certificate, and so the `caBundle`, stay as they are.
pub fn renew(
    request: &Request<'_>,
    ca_key_pem: &str,
) -> Result<(Pair, Option<Pair>), rcgen::Error> {
    let ca_key = KeyPair::from_pem(ca_key_pem)?;
    let issuer = Issuer::new(ca_params(&ca_key)?, ca_key);
    leaves(request, &issuer)
}

/// The serving certificate and, when asked for, the client certificate, signed by `issuer`.
fn leaves(
    request: &Request<'_>,
    issuer: &Issuer<'_, KeyPair>,
) -> Result<(Pair, Option<Pair>), rcgen::Error> {
    let now = SystemTime::now();

    let key = request.key_type.generate()?;
    let mut leaf = CertificateParams::new(Vec::<String>::new())?;
    // Clients match the SANs; the common name is only a label (at most 64 characters).
    let common_name = request
        .names
        .first()
        .map(ToString::to_string)
        .filter(|n| n.len() <= 64)
        .unwrap_or_else(|| "gatehouse".to_owned());
    leaf.distinguished_name
        .push(DnType::CommonName, common_name);
    leaf.subject_alt_names = request
        .names
        .iter()
        .map(|n| match n {
            Name::Ip(ip) => Ok(SanType::IpAddress(*ip)),
            Name::Dns(dns) => Ok(SanType::DnsName(dns.as_str().try_into()?)),
        })
        .collect::<Result<_, rcgen::Error>>()?;
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.use_authority_key_identifier_extension = true;
    if let Some(v) = request.validity {
        window(&mut leaf, now, v.leaf);
    }
    let serving = Pair {
        cert: leaf.signed_by(&key, issuer)?.pem(),
        key: key.serialize_pem(),
    };

    let client = if request.client {
        let key = request.key_type.generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, CLIENT_COMMON_NAME);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        if let Some(v) = request.validity {
            window(&mut params, now, v.leaf);
        }
        Some(Pair {
            cert: params.signed_by(&key, issuer)?.pem(),
            key: key.serialize_pem(),
        })
    } else {
        None
    };
    Ok((serving, client))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generated_pair_lives_days_not_centuries() {
        use rustls_pki_types::pem::PemObject;
        let pki = generate(&["localhost"]).unwrap();
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        for pem in [&pki.ca_pem, &pki.cert_pem] {
            let der = rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
            let not_after = crate::pki::not_after(der.as_ref()).unwrap();
            let days = (not_after - now) / 86_400;
            assert!((6..=7).contains(&days), "valid for {days} days");
        }
    }

    #[test]
    fn names_are_ips_or_dns_names() {
        assert_eq!(
            parse_name("10.0.0.1"),
            Some(Name::Ip("10.0.0.1".parse().unwrap()))
        );
        assert_eq!(parse_name("::1"), Some(Name::Ip("::1".parse().unwrap())));
        assert_eq!(
            parse_name("Gatehouse.gatehouse.SVC"),
            Some(Name::Dns("gatehouse.gatehouse.svc".into()))
        );
        assert_eq!(
            parse_name("*.example.com"),
            Some(Name::Dns("*.example.com".into()))
        );
        for bad in [
            "",
            "a..b",
            "-a.b",
            "a b",
            "a.*.b",
            "https://x",
            "x_y",
            &"a".repeat(64),
        ] {
            assert_eq!(parse_name(bad), None, "{bad:?}");
        }
    }
}
