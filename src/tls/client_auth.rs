//! mTLS: client certificates must chain to `tls.client_ca` and, when `tls.client_names` is set,
//! carry one of those names as CN or DNS SAN.
//!
//! A wrong name is refused inside the handshake (alert `access_denied`), like a missing
//! certificate or another CA's: a refused client never gets an HTTP connection, so no route
//! (health included) answers it, and the refusal is decided in one place rather than in every
//! handler. The apiserver logs the alert against the webhook call.

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};

/// Wraps the chain verifier with a check of the certificate's names.
#[derive(Debug)]
pub struct NamedClients {
    inner: Arc<dyn ClientCertVerifier>,
    names: Vec<String>,
}

impl NamedClients {
    /// Accepts certificates `inner` accepts whose CN or a DNS SAN is one of `names`.
    pub fn new(inner: Arc<dyn ClientCertVerifier>, names: Vec<String>) -> Self {
        Self { inner, names }
    }
}

impl ClientCertVerifier for NamedClients {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // The chain first: names of an unverified certificate mean nothing.
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let names = cert_names(end_entity.as_ref()).unwrap_or_default();
        if names
            .iter()
            .any(|n| self.names.iter().any(|want| want == n))
        {
            Ok(verified)
        } else {
            tracing::info!(
                presented = ?names,
                "client certificate refused: none of its names is in tls.client_names"
            );
            Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Most names read from one certificate: a bound on what a client can make us hold.
const MAX_NAMES: usize = 64;

/// The subject's common names and the DNS names of the subjectAltName extension, read with
/// yasna (rcgen's DER library). `None` when the DER is not a certificate.
pub fn cert_names(der: &[u8]) -> Option<Vec<String>> {
    use yasna::models::ObjectIdentifier;
    let cn_oid = ObjectIdentifier::from_slice(&[2, 5, 4, 3]);
    let san_oid = ObjectIdentifier::from_slice(&[2, 5, 29, 17]);
    let mut names = Vec::new();
    let mut san_der = None;
    yasna::parse_der(der, |r| {
        r.read_sequence(|r| {
            r.next().read_sequence(|r| {
                // version [0] EXPLICIT (absent in v1), serialNumber, signature, issuer, validity.
                r.read_optional(|r| r.read_tagged(yasna::Tag::context(0), |r| r.read_der()))?;
                for _ in 0..4 {
                    r.next().read_der()?;
                }
                // subject: SEQUENCE OF SET OF AttributeTypeAndValue.
                r.next().read_sequence_of(|r| {
                    r.read_set_of(|r| {
                        r.read_sequence(|r| {
                            let oid = r.next().read_oid()?;
                            let value = r.next();
                            if oid == cn_oid {
                                if let Some(s) = read_string(value)? {
                                    if names.len() < MAX_NAMES {
                                        names.push(s);
                                    }
                                }
                            } else {
                                value.read_der()?;
                            }
                            Ok(())
                        })
                    })
                })?;
                r.next().read_der()?; // subjectPublicKeyInfo
                                      // issuerUniqueID [1], subjectUniqueID [2], extensions [3].
                while let Some(der) = r.read_optional(|r| r.read_tagged_der())? {
                    if der.tag() == yasna::Tag::context(3) {
                        san_der = find_extension(der.value(), &san_oid)?;
                    }
                }
                Ok(())
            })?;
            r.next().read_der()?;
            r.next().read_der()?;
            Ok(())
        })
    })
    .ok()?;
    if let Some(san) = san_der {
        yasna::parse_der(&san, |r| {
            r.read_sequence_of(|r| {
                // dNSName [2] IMPLICIT IA5String; other GeneralNames are skipped.
                if r.lookahead_tag()? == yasna::Tag::context(2) {
                    let name =
                        r.read_tagged_implicit(yasna::Tag::context(2), |r| r.read_ia5_string())?;
                    if names.len() < MAX_NAMES {
                        names.push(name);
                    }
                } else {
                    r.read_der()?;
                }
                Ok(())
            })
        })
        .ok()?;
    }
    Some(names)
}

/// The value of the extension `oid` in the `[3]` wrapper's contents (`Extensions`).
fn find_extension(
    wrapped: &[u8],
    oid: &yasna::models::ObjectIdentifier,
) -> yasna::ASN1Result<Option<Vec<u8>>> {
    let mut found = None;
    yasna::parse_der(wrapped, |r| {
        r.read_sequence_of(|r| {
            r.read_sequence(|r| {
                let id = r.next().read_oid()?;
                r.read_optional(|r| r.read_bool())?;
                let value = r.next().read_bytes()?;
                if &id == oid {
                    found = Some(value);
                }
                Ok(())
            })
        })
    })?;
    Ok(found)
}

/// A directory string as text; `None` for the kinds no one uses for a name.
fn read_string(r: yasna::BERReader<'_, '_>) -> yasna::ASN1Result<Option<String>> {
    use yasna::tags::{TAG_IA5STRING, TAG_PRINTABLESTRING, TAG_UTF8STRING};
    Ok(match r.lookahead_tag()? {
        TAG_UTF8STRING => Some(r.read_utf8string()?),
        TAG_PRINTABLESTRING => Some(r.read_printable_string()?),
        TAG_IA5STRING => Some(r.read_ia5_string()?),
        _ => {
            r.read_der()?;
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::{self, KeyType, Name, Request};

    fn der(pem: &str) -> Vec<u8> {
        use rustls_pki_types::pem::PemObject;
        CertificateDer::from_pem_slice(pem.as_bytes())
            .map(|c| c.as_ref().to_vec())
            .unwrap_or_default()
    }

    #[test]
    fn names_are_the_common_name_and_dns_sans() {
        let issued = certs::issue(&Request {
            names: &[
                Name::Dns("gatehouse.example".into()),
                Name::Ip("10.0.0.1".parse().unwrap()),
                Name::Dns("other.example".into()),
            ],
            key_type: KeyType::EcdsaP256,
            validity: None,
            client: true,
        })
        .unwrap();
        assert_eq!(
            cert_names(&der(&issued.serving.cert)).unwrap(),
            ["gatehouse.example", "gatehouse.example", "other.example"]
        );
        let client = issued.client.unwrap();
        assert_eq!(
            cert_names(&der(&client.cert)).unwrap(),
            [certs::CLIENT_COMMON_NAME]
        );
        assert_eq!(cert_names(b"\x30\x03\x02\x01\x01"), None);
    }
}
