//! Raw connections to a node, for tests that must control the bytes a client sends (slow or
//! stalled clients), which an HTTP client library would not let them.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpSocket, TcpStream};

use super::Server;

/// The node's address (it listens on 127.0.0.1).
pub fn addr(s: &Server) -> SocketAddr {
    let port = s.base.rsplit(':').next().unwrap().parse().unwrap();
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A TCP connection to the node from `from` (any address of 127.0.0.0/8 is this host's).
pub async fn connect_from(s: &Server, from: [u8; 4]) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((from, 0))).unwrap();
    socket.connect(addr(s)).await.unwrap()
}

/// A TLS connection to the node from `from`, the handshake done (ALPN `alpn`), trusting the
/// node's own certificate.
pub async fn tls_from(
    s: &Server,
    from: [u8; 4],
    alpn: &[u8],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let pem = std::fs::read(s.data_dir.join("tls/cert.pem")).unwrap();
    tls_trusting(s, from, alpn, &[pem]).await.unwrap()
}

/// A TLS connection to the node from `from` trusting the certificates in `roots` (PEM).
pub async fn tls_trusting(
    s: &Server,
    from: [u8; 4],
    alpn: &[u8],
    roots: &[Vec<u8>],
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let mut store = tokio_rustls::rustls::RootCertStore::empty();
    for pem in roots {
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            store.add(cert.unwrap()).unwrap();
        }
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = tokio_rustls::rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(store)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = tokio_rustls::rustls::pki_types::ServerName::try_from("localhost").unwrap();
    connector.connect(name, connect_from(s, from).await).await
}
