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
        secret,
        namespace,
    } = args;
    let names = names
        .iter()
        .map(|n| certs::parse_name(n.trim()).ok_or_else(|| PkiError::Name(n.clone())))
        .collect::<Result<Vec<Name>, _>>()?;
    if days > ca_days {
        return Err(PkiError::Validity {
            days: *days,
            ca_days: *ca_days,
        });
    }
    if let Some(name) = secret {
        check_object_name("--secret", name, 253)?;
        check_object_name("--namespace", namespace, 63)?;
    }
    let issued = certs::issue(&Request {
        names: &names,
        key_type: *key_type,
        validity: Some(Validity {
            ca: DAY * *ca_days,
            leaf: DAY * *days,
        }),
        client: *client,
    })?;

    let mut files = vec![
        OutFile::public("ca.crt", issued.ca.cert.as_str()),
        OutFile::secret("ca.key", issued.ca.key.as_str()),
        OutFile::public("tls.crt", issued.serving.cert.as_str()),
        OutFile::secret("tls.key", issued.serving.key.as_str()),
    ];
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
    let written = files::write_all(out_dir, &files, *force)?;

    for (path, file) in written.iter().zip(&files) {
        let mode = if file.secret { " (mode 0600)" } else { "" };
        writeln!(out, "wrote {}{mode}", path.display())?;
    }
    let names = names
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    writeln!(
        out,
        "serving certificate for {names}: {}, valid until {} ({days} days); CA valid until {} ({ca_days} days)",
        key_type.label(),
        date_after(DAY * *days),
        date_after(DAY * *ca_days),
    )?;
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
    fn object_names() {
        assert!(check_object_name("--secret", "gatehouse-tls", 253).is_ok());
        assert!(check_object_name("--secret", "a.b", 253).is_ok());
        assert!(check_object_name("--namespace", "a.b", 63).is_err());
        for bad in ["", "-a", "a-", "A", "a b", "a:b", "a\nb"] {
            assert!(check_object_name("--secret", bad, 253).is_err(), "{bad:?}");
        }
    }
}
