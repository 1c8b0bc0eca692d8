//! The listener against hostile clients (`host/src/connections.rs`): a slowloris client with
//! many connections sending a byte a second does not stop another client being served; a
//! request head sent too slowly, a TLS handshake never finished and an idle connection are
//! each closed within their timeouts. And its TLS (`host/src/tls.rs`): 1.2 and 1.3 only;
//! client certificates from `tls.client_ca` reach Cedar; new certificate material on SIGHUP
//! serves new connections while open ones go on.

mod common;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::raw::{addr, connect_from, tls_from, tls_trusting};
use common::Server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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

/// A request head sent a byte at a time is cut at the header read timeout, over HTTP/1.1 and
/// over HTTP/2 (a header block that keeps coming a byte at a time: hyper has no header
/// timeout for HTTP/2, and before, such a connection stayed open for as long as its bytes
/// came); a connection on which nothing is sent after the handshake is closed at the idle
/// timeout; a good client on the same node is unaffected.
#[tokio::test(flavor = "multi_thread")]
async fn slow_heads_and_idle_connections_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_with_env(
        dir.path(),
        &[
            ("RUST_LOG", "warn"),
            ("KEYPLANE_LIMITS__HEADER_READ_TIMEOUT_SECONDS", "3"),
            ("KEYPLANE_LIMITS__IDLE_TIMEOUT_SECONDS", "2"),
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
    let slow_h2_head = async {
        let mut conn = tls_from(&s, [127, 0, 0, 1], b"h2").await;
        assert_eq!(conn.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        // The client preface, empty SETTINGS, and the 9-byte header of a HEADERS frame of
        // 16 KiB on stream 1 (no END_HEADERS): then its block, a byte every 250 ms.
        let mut start = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        start.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
        start.extend_from_slice(&[0, 0x40, 0, 1, 0, 0, 0, 0, 1]);
        conn.write_all(&start).await.unwrap();
        trickle(
            conn,
            b"a",
            Duration::from_millis(250),
            Duration::from_secs(20),
        )
        .await
    };
    let (slow_head, slow_h2_head, idle) = tokio::join!(slow_head, slow_h2_head, idle);
    println!(
        "slow head cut after {slow_head:?} (HTTP/2: {slow_h2_head:?}); idle connection closed after {idle:?}"
    );
    for cut in [slow_head, slow_h2_head] {
        assert!(
            cut >= Duration::from_millis(2500) && cut < Duration::from_secs(6),
            "{slow_head:?} {slow_h2_head:?}"
        );
    }
    assert!(
        idle >= Duration::from_millis(1500) && idle < Duration::from_secs(5),
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

/// `POST /v1/generate-random` on an open HTTP/1.1 connection, kept alive: the status.
async fn generate_random_on<S>(conn: &mut S, token: &str) -> u16
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let body = r#"{"number_of_bytes": 8}"#;
    let request = format!(
        "POST /v1/generate-random HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = conn.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&answer).to_string();
        if let Some((head, rest)) = text.split_once("\r\n\r\n") {
            let length: usize = head
                .lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                .map(|(_, v)| v.trim().parse().unwrap())
                .unwrap();
            if rest.len() >= length {
                return head.split(' ').nth(1).unwrap().parse().unwrap();
            }
        }
    }
}

/// `openssl s_client` with `args`: whether a handshake completed, and what it printed.
fn s_client(s: &Server, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &addr(s).to_string(),
            "-servername",
            "localhost",
        ])
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let done = out.status.success() && !text.contains("Cipher is (NONE)");
    (done, text)
}

/// TLS 1.3 and 1.2 (with a forward-secret AEAD suite) are served; 1.1, 1.0 and 1.2 suites
/// without forward secrecy or with CBC are refused.
#[tokio::test(flavor = "multi_thread")]
async fn only_tls_1_2_and_1_3_with_modern_suites() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path()).await;
    let (ok, text) = s_client(&s, &["-tls1_3"]);
    assert!(ok && text.contains("TLSv1.3"), "{text}");
    let (ok, text) = s_client(&s, &["-tls1_2"]);
    assert!(ok && text.contains("ECDHE"), "{text}");
    // SECLEVEL=0 makes the client offer what the server must refuse.
    for args in [
        &["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"][..],
        &["-tls1", "-cipher", "DEFAULT@SECLEVEL=0"],
        &[
            "-tls1_2",
            "-cipher",
            "AES128-SHA:AES256-GCM-SHA384:@SECLEVEL=0",
        ],
        &[
            "-tls1_2",
            "-cipher",
            "ECDHE-RSA-AES128-SHA:ECDHE-ECDSA-AES128-SHA:@SECLEVEL=0",
        ],
    ] {
        let (ok, text) = s_client(&s, args);
        assert!(!ok, "{args:?} was served: {text}");
    }
}

/// A CA of client certificates (subject `CN=<name>`).
struct ClientCa {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl ClientCa {
    fn new(name: &str) -> ClientCa {
        use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa};
        let key = rcgen::KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name = DistinguishedName::new();
        ca.distinguished_name
            .push(DnType::CommonName, format!("{name} CA"));
        let cert = ca.self_signed(&key).unwrap();
        ClientCa { cert, key }
    }

    /// A client certificate for `CN=<name>`: (certificate PEM, key PEM).
    fn issue(&self, name: &str) -> (String, String) {
        use rcgen::{CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose};
        let key = rcgen::KeyPair::generate().unwrap();
        let mut client = CertificateParams::new(Vec::<String>::new()).unwrap();
        client.distinguished_name = DistinguishedName::new();
        client.distinguished_name.push(DnType::CommonName, name);
        client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = client.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// A CA, and a client certificate with subject `CN=<name>` that it issued: (CA PEM, client
/// certificate PEM, client key PEM).
fn ca_and_client(name: &str) -> (String, String, String) {
    let ca = ClientCa::new(name);
    let (cert, key) = ca.issue(name);
    (ca.cert.pem(), cert, key)
}

/// A client of `s` presenting `cert` (with its `key`).
fn client_with(s: &Server, cert: &str, key: &str) -> reqwest::Client {
    let server_pem = std::fs::read(s.data_dir.join("tls/cert.pem")).unwrap();
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&server_pem).unwrap())
        .identity(reqwest::Identity::from_pem(format!("{cert}{key}").as_bytes()).unwrap())
        .build()
        .unwrap()
}

/// A node under `dir`/data with the policies in `policies`, trusting the client certificates
/// of the CA in `ca_file` (`tls.client_ca`).
async fn start_trusting(
    dir: &std::path::Path,
    policies: &std::path::Path,
    ca_file: &std::path::Path,
) -> Server {
    Server::start_with(
        &dir.join("data"),
        policies,
        &[
            ("RUST_LOG", "warn"),
            ("KEYPLANE_TLS__CLIENT_CA", ca_file.to_str().unwrap()),
        ],
    )
    .await
}

/// `context.mfa` is a client certificate that names the principal (its common name is the
/// principal's id), not any certificate the CA issued: with one, an admin schedules a key's
/// deletion alone (the deletion guard's MFA); with a certificate that names someone else, the
/// guard wants an approver as it does without a certificate (before, any certificate was
/// MFA for any token, and with certificates required, every request was).
#[tokio::test(flavor = "multi_thread")]
async fn mfa_is_a_client_certificate_naming_the_principal() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ClientCa::new("clients");
    let ca_file = dir.path().join("clients-ca.pem");
    std::fs::write(&ca_file, ca.cert.pem()).unwrap();
    let policies = common::copy_of_shipped_policies(&dir.path().join("policies"));
    let s = start_trusting(dir.path(), &policies, &ca_file).await;
    let me = s
        .ok(&s.admin, "get-caller-identity", serde_json::json!({}))
        .await;
    let admin_id = me["principal_id"].as_str().unwrap();
    let schedule = |client: reqwest::Client, key: String| {
        let (base, admin) = (s.base.clone(), s.admin.clone());
        async move {
            let r = client
                .post(format!("{base}/v1/schedule-key-deletion"))
                .bearer_auth(admin)
                .json(&serde_json::json!({ "key_id": key, "pending_window_days": 7 }))
                .send()
                .await
                .unwrap();
            (
                r.status().as_u16(),
                r.json::<serde_json::Value>().await.unwrap(),
            )
        }
    };

    let (someone, someone_key) = ca.issue("alice");
    let key = s.create_key(&s.admin, "envelope").await;
    let (status, v) = schedule(client_with(&s, &someone, &someone_key), key).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (403, Some("AccessDenied")),
        "{v}"
    );

    let (mine, mine_key) = ca.issue(admin_id);
    let key = s.create_key(&s.admin, "envelope").await;
    let (status, v) = schedule(client_with(&s, &mine, &mine_key), key).await;
    assert_eq!(
        (status, v["state"].as_str()),
        (200, Some("pending-deletion")),
        "{v}"
    );
}

/// With `tls.client_ca`, a policy can ask for a client certificate's subject: no certificate
/// is denied, alice's certificate is allowed over HTTP/2 (reqwest) and HTTP/1.1 (curl), and a
/// certificate from another CA does not complete the handshake.
#[tokio::test(flavor = "multi_thread")]
async fn client_certificates_reach_cedar() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, alice, alice_key) = ca_and_client("alice");
    let (_, mallory, mallory_key) = ca_and_client("mallory");
    let ca_file = dir.path().join("clients-ca.pem");
    std::fs::write(&ca_file, &ca).unwrap();
    let policies = common::copy_of_shipped_policies(&dir.path().join("policies"));
    std::fs::write(
        policies.join("client-certificate.cedar"),
        r#"@id("random-needs-alice")
@description("Random bytes only for a client with alice's certificate")
forbid (principal, action == Keyplane::Action::"GenerateRandom", resource)
unless {
  context.client_certificate &&
  context has client_certificate_subject &&
  context.client_certificate_subject == "CN=alice"
};
"#,
    )
    .unwrap();
    let s = start_trusting(dir.path(), &policies, &ca_file).await;
    let random = serde_json::json!({"number_of_bytes": 8});
    let (status, v) = s
        .call(Some(&s.admin), "generate-random", random.clone())
        .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (403, Some("AccessDenied")),
        "{v}"
    );

    let with = |cert: &str, key: &str| client_with(&s, cert, key);
    let answer = with(&alice, &alice_key)
        .post(format!("{}/v1/generate-random", s.base))
        .bearer_auth(&s.admin)
        .json(&random)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.version(), reqwest::Version::HTTP_2);
    assert_eq!(answer.status(), 200);
    let refused = with(&mallory, &mallory_key)
        .post(format!("{}/v1/generate-random", s.base))
        .bearer_auth(&s.admin)
        .json(&random)
        .send()
        .await;
    assert!(
        refused.is_err(),
        "a certificate from another CA: {refused:?}"
    );

    let cert_file = dir.path().join("alice.pem");
    let key_file = dir.path().join("alice.key");
    std::fs::write(&cert_file, &alice).unwrap();
    std::fs::write(&key_file, &alice_key).unwrap();
    let out = std::process::Command::new("curl")
        .args([
            "-sS",
            "--http1.1",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--cacert",
        ])
        .arg(s.data_dir.join("tls/cert.pem"))
        .arg("--cert")
        .arg(&cert_file)
        .arg("--key")
        .arg(&key_file)
        .args(["-H", &format!("Authorization: Bearer {}", s.admin)])
        .args(["--data-binary", &random.to_string()])
        .arg(format!("{}/v1/generate-random", s.base))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200", "{out:?}");
}

/// New certificate material on SIGHUP: a connection opened before goes on being served, a new
/// one is given the new certificate, and the reload is audited.
#[tokio::test(flavor = "multi_thread")]
async fn sighup_reloads_the_certificate_while_clients_stay_connected() {
    let dir = tempfile::tempdir().unwrap();
    let tls = dir.path().join("tls");
    std::fs::create_dir_all(&tls).unwrap();
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    let first = rcgen::generate_simple_self_signed(names.clone()).unwrap();
    std::fs::write(tls.join("cert.pem"), first.cert.pem()).unwrap();
    std::fs::write(tls.join("key.pem"), first.key_pair.serialize_pem()).unwrap();
    let s = Server::start(dir.path()).await;
    let first_pem = first.cert.pem().into_bytes();

    let mut open = tls_trusting(
        &s,
        [127, 0, 0, 1],
        b"http/1.1",
        std::slice::from_ref(&first_pem),
    )
    .await
    .unwrap();
    assert_eq!(generate_random_on(&mut open, &s.admin).await, 200);

    let second = rcgen::generate_simple_self_signed(names).unwrap();
    for (name, pem) in [
        ("key.pem", second.key_pair.serialize_pem()),
        ("cert.pem", second.cert.pem()),
    ] {
        std::fs::write(tls.join(format!("{name}.new")), pem).unwrap();
        std::fs::rename(tls.join(format!("{name}.new")), tls.join(name)).unwrap();
    }
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &s.pid().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    let second_fingerprint = keyplane::tls::fingerprint(second.cert.der());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let reloaded = s.audit_records().into_iter().any(|r| {
            r["action"] == "ReloadTls"
                && r["outcome"] == "ok"
                && r["resource"] == format!("tls:{second_fingerprint}")
        });
        if reloaded {
            break;
        }
        assert!(Instant::now() < deadline, "no ReloadTls record");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    assert_eq!(
        generate_random_on(&mut open, &s.admin).await,
        200,
        "the connection opened before the reload is still served"
    );
    let new = tls_trusting(
        &s,
        [127, 0, 0, 1],
        b"http/1.1",
        &[first_pem.clone(), second.cert.pem().into_bytes()],
    )
    .await
    .unwrap();
    let presented = new.get_ref().1.peer_certificates().unwrap()[0].clone();
    assert_eq!(
        keyplane::tls::fingerprint(presented.as_ref()),
        second_fingerprint
    );
    assert!(
        tls_trusting(&s, [127, 0, 0, 1], b"http/1.1", &[first_pem])
            .await
            .is_err(),
        "a client trusting only the old certificate no longer connects"
    );
}
