//! TLS for the listener: the configured certificate and key, or a self-signed certificate for
//! localhost generated into `<data-dir>/tls/` on first start. rustls with the ring provider.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

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
    write_secret_file(&key_tmp, certified.key_pair.serialize_pem().as_bytes())?;
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
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut std::io::BufReader::new(
        std::fs::File::open(&cert_path)?,
    ))
    .collect::<Result<_, _>>()?;
    let leaf = certs
        .first()
        .ok_or_else(|| anyhow::anyhow!("{} holds no certificate", cert_path.display()))?;
    let fingerprint = fingerprint(leaf.as_ref());
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut std::io::BufReader::new(
        std::fs::File::open(&key_path)?,
    ))?
    .ok_or_else(|| anyhow::anyhow!("{} holds no private key", key_path.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server_config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    server_config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsMaterial {
        server_config: Arc::new(server_config),
        fingerprint,
        cert_path,
    })
}
