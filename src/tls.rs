//! The rustls client configuration shared by every part of the gateway
//! that speaks TLS: the MQTT and InfluxDB sinks, and the NUT source
//! (STARTTLS to upsd). It lives here, beside neither, so a source never
//! imports from a sink (the data path runs one way). Reads the files each
//! time it is called (so a technician can fix them without a restart);
//! never opens a connection.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub(crate) enum TlsError {
    /// A CA, certificate or key file could not be read or holds nothing
    /// usable: the caller reports it (naming its own key) and tries again
    /// at its next connection (the technician may be copying it in).
    #[error("{path}: {why}")]
    File { path: String, why: String },
    /// A CA, certificate or key file is not a regular file of a sane size,
    /// or a key is reached through a link (the host's one file reader):
    /// as for `File`.
    #[error("{0}")]
    Read(#[from] crate::host::file::FileError),
    /// No `ca_file` was given and the system store has no CA: as for
    /// `File`; the caller adds which key to set ([`TlsError::hint`]).
    #[error("no system CA certificates found")]
    NoSystemRoots,
    /// rustls refused the configuration (its protocol versions, or the
    /// client certificate and key do not match): as for `File`.
    #[error("{0}")]
    Config(String),
}

impl TlsError {
    /// The message, with the key to set when the system store had no CA
    /// (`ca_key`, e.g. `mqtt.ca_file`).
    pub(crate) fn hint(&self, ca_key: &str) -> String {
        match self {
            TlsError::NoSystemRoots => format!("{self}; set {ca_key}"),
            other => other.to_string(),
        }
    }
}

/// rustls with the ring provider; roots from `ca_file` or the system store;
/// a client certificate when both `cert_file` and `key_file` are given.
pub(crate) fn tls_config(
    ca_file: Option<&Path>,
    cert_file: Option<&Path>,
    key_file: Option<&Path>,
) -> Result<rustls::ClientConfig, TlsError> {
    let file = |p: &Path, why: String| TlsError::File {
        path: p.display().to_string(),
        why,
    };
    use crate::host::file::{read, FileKind};
    // rustls' own PEM reader (rustls-pki-types), not the unmaintained
    // rustls-pemfile.
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(ca) => {
            let pem = read(ca, FileKind::Certificate)?;
            let mut n = 0;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| file(ca, e.to_string()))?;
                roots.add(cert).map_err(|e| file(ca, e.to_string()))?;
                n += 1;
            }
            if n == 0 {
                return Err(file(ca, "no PEM certificate in it".into()));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err(TlsError::NoSystemRoots);
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots);
    match (cert_file, key_file) {
        (Some(cert), Some(key)) => {
            let pem = read(cert, FileKind::Certificate)?;
            let chain: Vec<_> = CertificateDer::pem_slice_iter(&pem)
                .collect::<Result<_, _>>()
                .map_err(|e| file(cert, e.to_string()))?;
            let pem = read(key, FileKind::Secret)?;
            let key_der = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
                rustls::pki_types::pem::Error::NoItemsFound => {
                    file(key, "no private key in it".into())
                }
                e => file(key, e.to_string()),
            })?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| TlsError::Config(format!("client certificate: {e}")))
        }
        _ => Ok(builder.with_no_client_auth()),
    }
}

/// A peer on this machine: traffic to it never leaves the box.
pub(crate) fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_ca_file_is_a_clear_error() {
        let e = tls_config(Some(Path::new("/nonexistent/ca.pem")), None, None).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
    }

    #[test]
    fn ca_file_without_certificates_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ca.pem");
        std::fs::write(&p, "not a certificate").unwrap();
        let e = tls_config(Some(&p), None, None).unwrap_err();
        assert!(e.to_string().contains("no PEM certificate"), "{e}");
    }

    #[test]
    fn the_hint_names_the_key_only_without_system_roots() {
        assert_eq!(
            TlsError::NoSystemRoots.hint("mqtt.ca_file"),
            "no system CA certificates found; set mqtt.ca_file"
        );
        let e = TlsError::File {
            path: "/x".into(),
            why: "gone".into(),
        };
        assert_eq!(e.hint("mqtt.ca_file"), "/x: gone");
    }

    #[test]
    fn loopback_hosts() {
        for (h, want) in [
            ("localhost", true),
            ("127.0.0.1", true),
            ("127.1.2.3", true),
            ("::1", true),
            ("192.168.1.5", false),
            ("ups.example", false),
            ("localhost.example", false),
        ] {
            assert_eq!(is_loopback(h), want, "{h}");
        }
    }
}
