//! TLS for the listener: the configured certificate and key, or a self-signed certificate for
//! localhost generated into `<data-dir>/tls/` on first start. rustls with the ring provider:
//! TLS 1.2 and 1.3 only, with rustls's suites (AEAD ciphers and forward-secret key exchange
//! only; nothing older is offered).
//!
//! With `tls.client_ca`, clients may (or, with `tls.require_client_certificate`, must) present
//! a certificate issued by one of those CAs; [`ClientCertificates`] hands its subject and
//! fingerprint to every request of the connection, for Cedar. [`load`] is called again on
//! SIGHUP: the new material serves new connections, and open ones keep theirs.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use axum_server::accept::Accept;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

use crate::authz::ClientCertificate;
use crate::config::Config;
use crate::hsm::token::write_secret_file;

/// A loaded server configuration and the SHA-256 fingerprint of the leaf certificate.
pub struct TlsMaterial {
    pub server_config: Arc<ServerConfig>,
    pub fingerprint: String,
    pub cert_path: PathBuf,
}

fn generate_self_signed(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    let certified = rcgen::generate_simple_self_signed(names)?;
    // Key first, certificate last, each through a temporary file: `cert.pem` exists only
    // when both are complete, and a crash part-way is repaired by the next start.
    let key_tmp = dir.join("key.pem.new");
    let _ = std::fs::remove_file(&key_tmp);
    let key_pem = zeroize::Zeroizing::new(certified.key_pair.serialize_pem());
    write_secret_file(&key_tmp, key_pem.as_bytes())?;
    std::fs::rename(&key_tmp, dir.join("key.pem"))?;
    let cert_tmp = dir.join("cert.pem.new");
    std::fs::write(&cert_tmp, certified.cert.pem())?;
    std::fs::rename(&cert_tmp, dir.join("cert.pem"))?;
    Ok(())
}

/// SHA-256 of a DER certificate as colon-separated upper-case hex.
pub fn fingerprint(der: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, der);
    d.as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Load (or create) the TLS material.
pub fn load(config: &Config) -> anyhow::Result<TlsMaterial> {
    let (cert_path, key_path) = match (&config.tls.cert, &config.tls.key) {
        (Some(c), Some(k)) => (c.clone(), k.clone()),
        (None, None) => {
            let dir = config.data_dir.join("tls");
            if !dir.join("cert.pem").exists() {
                generate_self_signed(&dir)?;
            }
            (dir.join("cert.pem"), dir.join("key.pem"))
        }
        _ => anyhow::bail!("tls.cert and tls.key must be given together"),
    };
    let certs = read_certificates(&cert_path)?;
    let leaf = certs
        .first()
        .ok_or_else(|| anyhow::anyhow!("{} holds no certificate", cert_path.display()))?;
    let fingerprint = fingerprint(leaf.as_ref());
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut std::io::BufReader::new(
        std::fs::File::open(&key_path)?,
    ))?
    .ok_or_else(|| anyhow::anyhow!("{} holds no private key", key_path.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match &config.tls.client_ca {
        // An operator who asked for client certificates must not get a listener that takes
        // none because the CAs were left out.
        None if config.tls.require_client_certificate => anyhow::bail!(
            "tls.require_client_certificate needs tls.client_ca (the CAs that issue them)"
        ),
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in read_certificates(ca)? {
                roots.add(cert)?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if config.tls.require_client_certificate {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            builder.with_client_cert_verifier(verifier.build()?)
        }
    };
    let mut server_config = builder.with_single_cert(certs, key)?;
    server_config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsMaterial {
        server_config: Arc::new(server_config),
        fingerprint,
        cert_path,
    })
}

/// The certificates of a PEM file (at least one).
fn read_certificates(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs: Vec<CertificateDer<'static>> =
        rustls_pemfile::certs(&mut std::io::BufReader::new(std::fs::File::open(path)?))
            .collect::<Result<_, _>>()?;
    anyhow::ensure!(!certs.is_empty(), "{} holds no certificate", path.display());
    Ok(certs)
}

/// The subject and fingerprint of a (verified) client certificate. `None` if its DER does
/// not parse as X.509 (rustls verified it, so it does).
pub fn client_certificate(der: &[u8]) -> Option<ClientCertificate> {
    use x509_cert::der::Decode;
    let cert = x509_cert::Certificate::from_der(der).ok()?;
    Some(ClientCertificate {
        subject: cert.tbs_certificate.subject.to_string(),
        fingerprint: fingerprint(der),
        common_name: common_name(&cert.tbs_certificate.subject),
    })
}

/// The first common name (`CN`, OID 2.5.4.3) of `name`, if it is a UTF8String or a
/// PrintableString (as CAs write them).
fn common_name(name: &x509_cert::name::Name) -> Option<String> {
    use x509_cert::der::asn1::{ObjectIdentifier, PrintableStringRef, Utf8StringRef};
    const CN: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.3");
    let value = &name
        .0
        .iter()
        .flat_map(|rdn| rdn.0.iter())
        .find(|atv| atv.oid == CN)?
        .value;
    Utf8StringRef::try_from(value)
        .map(|s| s.as_str().to_string())
        .or_else(|_| PrintableStringRef::try_from(value).map(|s| s.as_str().to_string()))
        .ok()
}

/// An acceptor around the TLS one: every request of a connection carries the client's
/// certificate, if it presented one, as an extension (`Option<Arc<ClientCertificate>>`; the
/// gate puts it in the request's facts).
#[derive(Clone)]
pub struct ClientCertificates<A>(pub A);

/// What a connection's requests carry: the client certificate of its handshake.
#[derive(Clone)]
pub struct Presented(pub Option<Arc<ClientCertificate>>);

impl<A, I, S, T> Accept<I, S> for ClientCertificates<A>
where
    A: Accept<I, S, Stream = tokio_rustls::server::TlsStream<T>>,
    A::Future: Send + 'static,
{
    type Stream = tokio_rustls::server::TlsStream<T>;
    type Service = axum::middleware::AddExtension<A::Service, Presented>;
    type Future =
        Pin<Box<dyn Future<Output = io::Result<(Self::Stream, Self::Service)>> + Send + 'static>>;

    fn accept(&self, stream: I, service: S) -> Self::Future {
        let handshake = self.0.accept(stream, service);
        Box::pin(async move {
            let (stream, service) = handshake.await?;
            let presented = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(|leaf| client_certificate(leaf.as_ref()))
                .map(Arc::new);
            let service =
                tower_layer::Layer::layer(&axum::Extension(Presented(presented)), service);
            Ok((stream, service))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requiring_client_certificates_without_their_cas_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config {
            data_dir: dir.path().to_path_buf(),
            ..Config::default()
        };
        assert!(load(&config).is_ok());
        config.tls.require_client_certificate = true;
        let err = load(&config).err().expect("refused").to_string();
        assert!(err.contains("tls.client_ca"), "{err}");
    }
}
