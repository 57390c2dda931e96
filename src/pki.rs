//! `gatehouse certs`: a CA and the certificates signed by it, written as files (keys 0600) and
//! optionally as a `kubernetes.io/tls` Secret, with the `caBundle` line printed. Replaces the
//! seeds' cfssl/openssl steps; the CA persists, so a pasted `caBundle` survives restarts.

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use base64::Engine;

use crate::certs::{self, Name, Request, Validity};
use crate::cli::CertsArgs;
use crate::files::{self, FileError, OutFile};

/// Why `gatehouse certs` wrote nothing (or not everything).
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A `--name` is neither a DNS name nor an IP address.
    #[error("--name {0:?}: not a DNS name or an IP address")]
    Name(String),
    /// The CA would expire before the certificates it signs.
    #[error("--days {days} is longer than --ca-days {ca_days}: the certificates would outlive the CA that signs them")]
    Validity {
        /// `--days`.
        days: u32,
        /// `--ca-days`.
        ca_days: u32,
    },
    /// `--secret` or `--namespace` is not a valid Kubernetes name.
    #[error(
        "{flag} {value:?}: not a valid Kubernetes name (lower-case letters, digits, '-' and '.')"
    )]
    ObjectName {
        /// The flag.
        flag: &'static str,
        /// Its value.
        value: String,
    },
    /// `--renew` cannot use the CA in the output directory.
    #[error("--renew: {dir}: {reason}")]
    Renew {
        /// The output directory.
        dir: std::path::PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// rcgen could not build a certificate.
    #[error("cannot generate certificates: {0}")]
    Generate(#[from] rcgen::Error),
    /// Files could not be written.
    #[error(transparent)]
    Files(#[from] FileError),
    /// Standard output is gone.
    #[error("cannot write the report: {0}")]
    Output(#[from] std::io::Error),
}

/// Runs `gatehouse certs`: reports on stdout, errors on stderr.
pub fn main(args: &CertsArgs) -> ExitCode {
    match run(args, &mut std::io::stdout().lock()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gatehouse certs: {e}");
            ExitCode::FAILURE
        }
    }
}

const DAY: Duration = Duration::from_secs(24 * 60 * 60);

/// CA files are a few KiB; anything past this is the wrong file.
const MAX_PEM: u64 = 1 << 20;

/// Issues the certificates, writes them, and reports what was written and the `caBundle`.
pub fn run(args: &CertsArgs, out: &mut dyn Write) -> Result<(), PkiError> {
    // Exhaustive: a new flag is a compile error here until it is wired.
    let CertsArgs {
        out_dir,
        names,
        client,
        key_type,
        days,
        ca_days,
        force,
        renew,
        secret,
        namespace,
    } = args;
    let names = names
        .iter()
        .map(|n| certs::parse_name(n.trim()).ok_or_else(|| PkiError::Name(n.clone())))
        .collect::<Result<Vec<Name>, _>>()?;
    if !renew && days > ca_days {
        return Err(PkiError::Validity {
            days: *days,
            ca_days: *ca_days,
        });
    }
    if let Some(name) = secret {
        check_object_name("--secret", name, 253)?;
        check_object_name("--namespace", namespace, 63)?;
    }
    let request = Request {
        names: &names,
        key_type: *key_type,
        validity: Some(Validity {
            ca: DAY * *ca_days,
            leaf: DAY * *days,
        }),
        client: *client,
    };
    let issued = if *renew {
        let read = |name: &str| -> Result<String, PkiError> {
            let bytes = files::read_limited(&out_dir.join(name), MAX_PEM)?;
            String::from_utf8(bytes).map_err(|_| PkiError::Renew {
                dir: out_dir.clone(),
                reason: format!("{name} is not PEM text"),
            })
        };
        let (ca_cert, ca_key) = (read("ca.crt")?, read("ca.key")?);
        let (serving, client) = certs::renew(&request, &ca_key).map_err(|e| PkiError::Renew {
            dir: out_dir.clone(),
            reason: format!("ca.key: {e}"),
        })?;
        // Through the end of the new certificate's life, as a client would verify it.
        let until = SystemTime::now() + DAY * *days - Duration::from_secs(60);
        verify_chain(&ca_cert, &serving.cert, &names, until).map_err(|reason| PkiError::Renew {
            dir: out_dir.clone(),
            reason,
        })?;
        certs::Issued {
            ca: certs::Pair {
                cert: ca_cert,
                key: ca_key,
            },
            serving,
            client,
        }
    } else {
        certs::issue(&request)?
    };

    let mut files = Vec::new();
    if !renew {
        files.push(OutFile::public("ca.crt", issued.ca.cert.as_str()));
        files.push(OutFile::secret("ca.key", issued.ca.key.as_str()));
    }
    files.push(OutFile::public("tls.crt", issued.serving.cert.as_str()));
    files.push(OutFile::secret("tls.key", issued.serving.key.as_str()));
    if let Some(pair) = &issued.client {
        files.push(OutFile::public("client.crt", pair.cert.as_str()));
        files.push(OutFile::secret("client.key", pair.key.as_str()));
    }
    if let Some(name) = secret {
        files.push(OutFile::secret(
            "secret.yaml",
            tls_secret(name, namespace, &issued),
        ));
    }
    // Renewing replaces the certificates it issues, by definition, and never the CA.
    let written = files::write_all(out_dir, &files, *force || *renew)?;

    for (path, file) in written.iter().zip(&files) {
        let mode = if file.secret { " (mode 0600)" } else { "" };
        writeln!(out, "wrote {}{mode}", path.display())?;
    }
    let names = names
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    write!(
        out,
        "serving certificate for {names}: {}, valid until {} ({days} days); ",
        key_type.label(),
        date_after(DAY * *days),
    )?;
    if *renew {
        writeln!(out, "signed by the existing CA (caBundle unchanged)")?;
    } else {
        writeln!(
            out,
            "CA valid until {} ({ca_days} days)",
            date_after(DAY * *ca_days)
        )?;
    }
    if issued.client.is_some() {
        writeln!(
            out,
            "client certificate: CN={}, clientAuth, for kube-apiserver (gatehouse apiserver-config --client-cert/--client-key)",
            certs::CLIENT_COMMON_NAME
        )?;
    }
    if let Some(name) = secret {
        writeln!(
            out,
            "Secret {namespace}/{name} (kubernetes.io/tls with ca.crt): kubectl apply -f {}",
            out_dir.join("secret.yaml").display()
        )?;
    }
    writeln!(
        out,
        "webhook configuration (clientConfig):\n  caBundle: {}",
        base64::engine::general_purpose::STANDARD.encode(&issued.ca.cert)
    )?;
    Ok(())
}

/// Checks that `cert` chains to `ca` for the first of `names` at `at`: a renewal under a CA
/// this command did not make, or one that expires first, is refused instead of written.
fn verify_chain(ca: &str, cert: &str, names: &[Name], at: SystemTime) -> Result<(), String> {
    use rustls::client::danger::ServerCertVerifier;
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

    let mut roots = rustls::RootCertStore::empty();
    for der in CertificateDer::pem_slice_iter(ca.as_bytes()) {
        let der = der.map_err(|e| format!("ca.crt: {e}"))?;
        roots.add(der).map_err(|e| format!("ca.crt: {e}"))?;
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(roots.into(), provider)
            .build()
            .map_err(|e| format!("ca.crt: {e}"))?;
    let leaf = CertificateDer::from_pem_slice(cert.as_bytes()).map_err(|e| e.to_string())?;
    let name = match names.first() {
        Some(Name::Ip(ip)) => ServerName::IpAddress((*ip).into()),
        // A wildcard covers any one label; check one it covers.
        Some(Name::Dns(dns)) => {
            ServerName::try_from(dns.replacen('*', "renew-check", 1)).map_err(|e| e.to_string())?
        }
        None => return Err("no --name".to_owned()),
    };
    let at_secs = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    // webpki does not check a trust anchor's own validity, clients such as Go's do.
    let roots_der = CertificateDer::pem_slice_iter(ca.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("ca.crt: {e}"))?;
    for der in &roots_der {
        let end = not_after(der).ok_or("ca.crt: cannot read its validity")?;
        if end < at_secs.as_secs() as i64 {
            return Err(
                "the CA in ca.crt expires before the renewed certificate would \
                 (--days); shorten --days, or make a new CA without --renew"
                    .to_owned(),
            );
        }
    }
    let at = UnixTime::since_unix_epoch(at_secs);
    verifier
        .verify_server_cert(&leaf, &[], &name, &[], at)
        .map(|_| ())
        .map_err(|e| {
            format!(
                "the renewed certificate does not verify under ca.crt until it expires ({e}): \
                 ca.crt and ca.key are not a pair made by gatehouse certs, or the CA expires \
                 first (shorten --days, or make a new CA without --renew)"
            )
        })
}

/// A certificate's notAfter (seconds since the epoch), read with yasna, rcgen's DER library.
pub(crate) fn not_after(der: &[u8]) -> Option<i64> {
    use yasna::tags::{TAG_GENERALIZEDTIME, TAG_UTCTIME};
    yasna::parse_der(der, |r| {
        r.read_sequence(|r| {
            let end = r.next().read_sequence(|r| {
                // version [0] EXPLICIT (absent in v1), serialNumber, signature, issuer.
                r.read_optional(|r| r.read_tagged(yasna::Tag::context(0), |r| r.read_der()))?;
                for _ in 0..3 {
                    r.next().read_der()?;
                }
                let end = r.next().read_sequence(|r| {
                    r.next().read_der()?;
                    let time = r.next();
                    match time.lookahead_tag()? {
                        TAG_UTCTIME => time.read_utctime().map(|t| t.datetime().unix_timestamp()),
                        TAG_GENERALIZEDTIME => time
                            .read_generalized_time()
                            .map(|t| t.datetime().unix_timestamp()),
                        _ => Err(yasna::ASN1Error::new(yasna::ASN1ErrorKind::Invalid)),
                    }
                })?;
                // subject, subjectPublicKeyInfo, then optional unique IDs and extensions.
                while r.read_optional(|r| r.read_der())?.is_some() {}
                Ok(end)
            })?;
            r.next().read_der()?;
            r.next().read_der()?;
            Ok(end)
        })
    })
    .ok()
}

/// A DNS-1123 subdomain (`max` 253) or label (`max` 63): also keeps the manifest free of YAML
/// syntax.
fn check_object_name(flag: &'static str, value: &str, max: usize) -> Result<(), PkiError> {
    let ok = !value.is_empty()
        && value.len() <= max
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && value.starts_with(|c: char| c.is_ascii_alphanumeric())
        && value.ends_with(|c: char| c.is_ascii_alphanumeric())
        && (max > 63 || !value.contains('.'));
    if ok {
        Ok(())
    } else {
        Err(PkiError::ObjectName {
            flag,
            value: value.to_owned(),
        })
    }
}

/// The serving pair as a `kubernetes.io/tls` Secret, with `ca.crt` as cert-manager writes it.
fn tls_secret(name: &str, namespace: &str, issued: &certs::Issued) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    format!(
        "# Written by `gatehouse certs`: gatehouse's serving certificate and key, and the CA that\n\
         # signed them (the webhook configurations' caBundle). Holds a private key: keep it out of git.\n\
         apiVersion: v1\n\
         kind: Secret\n\
         metadata:\n  name: {name}\n  namespace: {namespace}\n\
         type: kubernetes.io/tls\n\
         data:\n  tls.crt: {}\n  tls.key: {}\n  ca.crt: {}\n",
        b64(&issued.serving.cert),
        b64(&issued.serving.key),
        b64(&issued.ca.cert),
    )
}

/// The UTC date `after` from now, as YYYY-MM-DD.
fn date_after(after: Duration) -> String {
    let at = SystemTime::now() + after;
    let days = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400);
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(59), (1970, 3, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_454), (2026, 1, 1));
    }

    #[test]
    fn reads_not_after_of_generated_certificates() {
        use rustls_pki_types::pem::PemObject;
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let names = [Name::Dns("x".into())];
        let issued = certs::issue(&Request {
            names: &names,
            key_type: certs::KeyType::EcdsaP256,
            validity: Some(Validity {
                ca: DAY * 10,
                leaf: DAY * 3,
            }),
            client: false,
        })
        .unwrap();
        let der =
            |pem: &str| rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        let ca = not_after(&der(&issued.ca.cert)).unwrap();
        let leaf = not_after(&der(&issued.serving.cert)).unwrap();
        assert!((ca - (now + 10 * 86_400)).abs() < 60, "{ca} vs {now}");
        assert!((leaf - (now + 3 * 86_400)).abs() < 60, "{leaf} vs {now}");
        // Past 2049 X.509 switches to GeneralizedTime.
        let far = certs::issue(&certs::Request {
            names: &[Name::Dns("x".into())],
            key_type: certs::KeyType::EcdsaP256,
            validity: Some(Validity {
                ca: DAY * 36_500,
                leaf: DAY,
            }),
            client: false,
        })
        .unwrap();
        assert!(not_after(&der(&far.ca.cert)).unwrap() > 4_000_000_000);
        assert_eq!(not_after(b"not DER"), None);
    }

    #[test]
    fn object_names() {
        assert!(check_object_name("--secret", "gatehouse-tls", 253).is_ok());
        assert!(check_object_name("--secret", "a.b", 253).is_ok());
        assert!(check_object_name("--namespace", "a.b", 63).is_err());
        for bad in ["", "-a", "a-", "A", "a b", "a:b", "a\nb"] {
            assert!(check_object_name("--secret", bad, 253).is_err(), "{bad:?}");
        }
    }
}
