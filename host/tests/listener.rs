//! The listener against hostile clients (`host/src/connections.rs`): a slowloris client with
//! many connections sending a byte a second does not stop another client being served; a
//! request head sent too slowly, a TLS handshake never finished and an idle connection are
//! each closed within their timeouts.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// The node's address (it listens on 127.0.0.1).
fn addr(s: &Server) -> SocketAddr {
    let port = s.base.rsplit(':').next().unwrap().parse().unwrap();
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A TCP connection to the node from `from` (any address of 127.0.0.0/8 is this host's).
async fn connect_from(s: &Server, from: [u8; 4]) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((from, 0))).unwrap();
    socket.connect(addr(s)).await.unwrap()
}

/// A TLS connection to the node from `from`, the handshake done (ALPN `alpn`).
async fn tls_from(
    s: &Server,
    from: [u8; 4],
    alpn: &[u8],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let pem = std::fs::read(s.data_dir.join("tls/cert.pem")).unwrap();
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = tokio_rustls::rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = tokio_rustls::rustls::pki_types::ServerName::try_from("localhost").unwrap();
    connector
        .connect(name, connect_from(s, from).await)
        .await
        .unwrap()
}

/// Send `bytes` one at a time, `every` apart, until the node closes the connection (or
/// `give_up`): how long it kept it open.
async fn trickle<S>(stream: S, bytes: &'static [u8], every: Duration, give_up: Duration) -> Duration
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let start = Instant::now();
    let (mut rd, mut wr) = tokio::io::split(stream);
    let reader = async move {
        let mut buf = [0u8; 1024];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    let writer = async move {
        for b in bytes.iter().cycle() {
            if wr.write_all(&[*b]).await.is_err() || wr.flush().await.is_err() {
                // The node closed; the reader sees it too.
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(every).await;
        }
    };
    let _ = tokio::time::timeout(give_up, async {
        tokio::select! {
            _ = reader => {},
            _ = writer => {},
        }
    })
    .await;
    start.elapsed()
}

/// 150 connections from one address, each sending a TLS record a byte a second, to a node
/// that holds 64 at most, while another address makes 40 requests, each on a new connection:
/// all 40 are served promptly;
/// the slow connections past the per-source limit are closed on arrival, the rest when their
/// handshake times out.
#[tokio::test(flavor = "multi_thread")]
async fn a_slowloris_client_does_not_stop_others_being_served() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_with_env(
        dir.path(),
        &[
            ("RUST_LOG", "warn"),
            // Without the per-source limit the slow connections would hold all 64.
            ("KEYPLANE_LIMITS__MAX_CONNECTIONS", "64"),
            ("KEYPLANE_LIMITS__MAX_CONNECTIONS_PER_SOURCE", "32"),
            ("KEYPLANE_LIMITS__HANDSHAKE_TIMEOUT_SECONDS", "3"),
        ],
    )
    .await;
    let s = Arc::new(s);
    // The start of a TLS ClientHello, a byte a second.
    const HELLO: &[u8] = &[
        0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
    ];
    let mut slow = Vec::new();
    for _ in 0..150 {
        let conn = connect_from(&s, [127, 0, 0, 1]).await;
        slow.push(tokio::spawn(trickle(
            conn,
            HELLO,
            Duration::from_secs(1),
            Duration::from_secs(20),
        )));
    }

    let pem = std::fs::read(s.data_dir.join("tls/cert.pem")).unwrap();
    let other = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .local_address(IpAddr::from([127, 0, 0, 2]))
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut slowest = Duration::ZERO;
    for _ in 0..40 {
        let start = Instant::now();
        let answer = other
            .post(format!("{}/v1/generate-random", s.base))
            .bearer_auth(&s.admin)
            .json(&serde_json::json!({"number_of_bytes": 8}))
            .send()
            .await
            .expect("served while the slow connections are open");
        assert_eq!(answer.status(), 200);
        slowest = slowest.max(start.elapsed());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        slowest < Duration::from_secs(2),
        "the slowest request took {slowest:?}"
    );

    let mut open_for: Vec<Duration> = Vec::new();
    for t in slow {
        open_for.push(t.await.unwrap());
    }
    open_for.sort();
    let at_once = open_for
        .iter()
        .filter(|d| **d < Duration::from_millis(1500))
        .count();
    let timed_out = open_for
        .iter()
        .filter(|d| **d >= Duration::from_millis(2500) && **d < Duration::from_secs(8))
        .count();
    println!(
        "slow connections: {at_once} closed on arrival, {timed_out} at the handshake timeout; slowest request of the other client {slowest:?}"
    );
    assert_eq!(at_once, 150 - 32, "{open_for:?}");
    assert_eq!(timed_out, 32, "{open_for:?}");
}

/// A request head sent a byte at a time is cut at the header read timeout; a connection on
/// which nothing is sent after the handshake is closed at the idle timeout; a good client on
/// the same node is unaffected.
#[tokio::test(flavor = "multi_thread")]
async fn slow_heads_and_idle_connections_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_with_env(
        dir.path(),
        &[
            ("RUST_LOG", "warn"),
            ("KEYPLANE_LIMITS__HEADER_READ_TIMEOUT_SECONDS", "2"),
            ("KEYPLANE_LIMITS__IDLE_TIMEOUT_SECONDS", "3"),
        ],
    )
    .await;
    let head = b"POST /v1/generate-random HTTP/1.1\r\nHost: localhost\r\nX-Padding: ";
    let slow_head = trickle(
        tls_from(&s, [127, 0, 0, 1], b"http/1.1").await,
        head,
        Duration::from_millis(250),
        Duration::from_secs(20),
    );
    let idle = async {
        let start = Instant::now();
        let mut conn = tls_from(&s, [127, 0, 0, 1], b"h2").await;
        let mut buf = [0u8; 64];
        let closed = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                match conn.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "an idle connection stayed open");
        start.elapsed()
    };
    let (slow_head, idle) = tokio::join!(slow_head, idle);
    println!("slow head cut after {slow_head:?}; idle connection closed after {idle:?}");
    assert!(
        slow_head >= Duration::from_millis(1500) && slow_head < Duration::from_secs(5),
        "{slow_head:?}"
    );
    assert!(
        idle >= Duration::from_millis(2500) && idle < Duration::from_secs(6),
        "{idle:?}"
    );
    let (status, _) = s
        .call(
            Some(&s.admin),
            "generate-random",
            serde_json::json!({"number_of_bytes": 8}),
        )
        .await;
    assert_eq!(status, 200);
}
