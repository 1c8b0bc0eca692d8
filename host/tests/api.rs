//! End-to-end tests of the native API against the real binary, real SoftHSM2 token, real
//! SQLite database and real TLS.

mod common;

use common::{b64, unb64, Server};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread")]
async fn round_trip_for_both_protection_levels() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path()).await;
    for protection in ["envelope", "hsm"] {
        let key = s.create_key(&s.admin, protection).await;
        let d = s
            .ok(&s.admin, "describe-key", json!({ "key_id": key }))
            .await;
        assert_eq!(d["protection"], protection);
        assert_eq!(d["state"], "enabled");
        for pt in [b"x".to_vec(), vec![0xA5; 4096]] {
            let ctx = json!({ "purpose": "test", "tenant": "default" });
            let ct = s.encrypt(&s.admin, &key, &pt, ctx.clone()).await;
            assert!(
                !ct.windows(pt.len().min(16))
                    .any(|w| w == &pt[..pt.len().min(16)])
                    || pt.len() == 1
            );
            let (status, v) = s.decrypt(&s.admin, &ct, ctx).await;
            assert_eq!(status, 200, "{v}");
            assert_eq!(unb64(&v["plaintext"]), pt);
            assert_eq!(v["key_id"], key.as_str());
            assert_eq!(v["key_version"], 1);
        }
        // generate-data-key: the plaintext decrypts from the wrapped copy.
        let ctx = json!({ "object": "bucket/file" });
        let dk = s
            .ok(
                &s.admin,
                "generate-data-key",
                json!({ "key_id": key, "encryption_context": ctx }),
            )
            .await;
        let plain = unb64(&dk["plaintext"]);
        assert_eq!(plain.len(), 32);
        let (status, v) = s
            .decrypt(&s.admin, &unb64(&dk["ciphertext_blob"]), ctx.clone())
            .await;
        assert_eq!(status, 200);
        assert_eq!(unb64(&v["plaintext"]), plain);
        let dk = s
            .ok(
                &s.admin,
                "generate-data-key-without-plaintext",
                json!({ "key_id": key, "key_spec": "AES_128", "encryption_context": ctx }),
            )
            .await;
        assert!(dk.get("plaintext").is_none());
        let (status, v) = s
            .decrypt(&s.admin, &unb64(&dk["ciphertext_blob"]), ctx)
            .await;
        assert_eq!(status, 200);
        assert_eq!(unb64(&v["plaintext"]).len(), 16);
    }
    let r = s
        .ok(
            &s.admin,
            "generate-random",
            json!({ "number_of_bytes": 64 }),
        )
        .await;
    assert_eq!(unb64(&r["random"]).len(), 64);
}

#[tokio::test(flavor = "multi_thread")]
async fn tampering_fails_clearly_and_never_returns_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path()).await;
    let (_, other_admin) = s.tenant_with_admin("other").await;
    let other_key = s.create_key(&other_admin, "envelope").await;
    let other_ct = s
        .encrypt(&other_admin, &other_key, b"theirs", json!({}))
        .await;

    for protection in ["envelope", "hsm"] {
        let key = s.create_key(&s.admin, protection).await;
        let ctx = json!({ "a": "1" });
        let ct = s
            .encrypt(&s.admin, &key, b"secret payload", ctx.clone())
            .await;

        let (status, v) = s.decrypt(&s.admin, &ct, json!({ "a": "2" })).await;
        assert_eq!(
            (status, v["error"]["code"].as_str()),
            (400, Some("InvalidCiphertext")),
            "{v}"
        );
        let (status, v) = s.decrypt(&s.admin, &ct, json!({})).await;
        assert_eq!(status, 400, "{v}");
        let (status, _) = s
            .decrypt(&s.admin, &ct, json!({ "a": "1", "b": "2" }))
            .await;
        assert_eq!(status, 400);

        // Flip every bit position class: header (version byte, algorithm, nonce), body, tag.
        let header_len = 2 + 1 + 1 + 1 + key.len() + 4 + 1 + 12;
        for idx in [
            2,
            3,
            header_len - 13,
            header_len - 1,
            header_len,
            ct.len() - 1,
        ] {
            let mut bad = ct.clone();
            bad[idx] ^= 0x01;
            let (status, v) = s.decrypt(&s.admin, &bad, ctx.clone()).await;
            assert_eq!(status, 400, "flip at {idx}: {v}");
            assert_eq!(v["error"]["code"], "InvalidCiphertext", "flip at {idx}");
            assert!(v.get("plaintext").is_none());
        }
        // A flipped key-version byte names a version that does not exist.
        let mut bad = ct.clone();
        bad[5 + key.len() + 3] ^= 0x02;
        let (status, v) = s.decrypt(&s.admin, &bad, ctx.clone()).await;
        assert_eq!(
            (status, v["error"]["code"].as_str()),
            (400, Some("InvalidCiphertext")),
            "{v}"
        );
        // A flipped key-id byte names a key that does not exist.
        let mut bad = ct.clone();
        bad[6] ^= 0x01;
        let (status, v) = s.decrypt(&s.admin, &bad, ctx.clone()).await;
        assert!(status == 404 || status == 400, "{status} {v}");
        assert!(v.get("plaintext").is_none());

        for n in [0, 1, 5, header_len, header_len + 15, ct.len() - 1] {
            let (status, v) = s.decrypt(&s.admin, &ct[..n], ctx.clone()).await;
            assert_eq!(status, 400, "truncated to {n}: {v}");
            assert_eq!(v["error"]["code"], "InvalidCiphertext");
        }
    }
    // Another tenant's ciphertext: denied as if its key did not exist (its id cannot be
    // probed), and the denial is audited.
    let (status, v) = s.decrypt(&s.admin, &other_ct, json!({})).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (404, Some("NotFound")),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn authentication_and_tenant_isolation() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path()).await;
    let key = s.create_key(&s.admin, "envelope").await;
    let body = json!({ "key_id": key, "plaintext": b64(b"hi") });

    let (status, v) = s.call(None, "encrypt", body.clone()).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (401, Some("Unauthenticated"))
    );
    let (status, _) = s
        .call(Some("kp_not-a-real-token"), "encrypt", body.clone())
        .await;
    assert_eq!(status, 401);
    let mut forged = s.admin.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == 'A' { 'B' } else { 'A' });
    let (status, _) = s.call(Some(&forged), "encrypt", body.clone()).await;
    assert_eq!(status, 401);

    // Tenant A's admin on the default tenant's key: the same answer as for a key that does
    // not exist (so another tenant's key ids cannot be probed), audited as a denial.
    let (a_admin_id, a_admin) = s.tenant_with_admin("tenant-a").await;
    let (status, v) = s.call(Some(&a_admin), "encrypt", body.clone()).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (404, Some("NotFound")),
        "{v}"
    );
    let missing = format!("k-{}", "0".repeat(32));
    let (_, absent) = s
        .call(
            Some(&a_admin),
            "encrypt",
            json!({ "key_id": missing, "plaintext": b64(b"hi") }),
        )
        .await;
    assert_eq!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .replace(&key, "<id>"),
        absent["error"]["message"]
            .as_str()
            .unwrap()
            .replace(&missing, "<id>")
    );
    let (status, _) = s
        .call(Some(&a_admin), "describe-key", json!({ "key_id": key }))
        .await;
    assert_eq!(status, 404);
    let pool = s.sql_any().await;
    let (decision, outcome, policies): (String, String, String) = sqlx::query_as(
        "SELECT decision, outcome, policies FROM audit_log WHERE principal = $1 AND action = 'Encrypt' \
         AND resource = $2 ORDER BY seq DESC LIMIT 1",
    )
    .bind(format!("Keyplane::User::{a_admin_id:?}"))
    .bind(format!("Keyplane::Key::{key:?}"))
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((decision.as_str(), outcome.as_str()), ("deny", "NotFound"));
    assert!(policies.contains("tenant-isolation"), "{policies}");

    // A tenant admin cannot create tenants, nor principals in another tenant (which it is
    // not even told exists).
    let (status, _) = s
        .call(Some(&a_admin), "create-tenant", json!({ "tenant_id": "x" }))
        .await;
    assert_eq!(status, 403);
    let (status, _) = s
        .call(
            Some(&a_admin),
            "create-principal",
            json!({ "tenant_id": "default", "name": "mole" }),
        )
        .await;
    assert_eq!(status, 404);

    // A member without a grant cannot use a key of its own tenant, nor see that it exists;
    // with a grant it can. An admin who may describe a key but not use it is told so.
    let m = s
        .ok(
            &a_admin,
            "create-principal",
            json!({ "name": "app", "kind": "service" }),
        )
        .await;
    let member = m["token"].as_str().unwrap().to_string();
    let member_id = m["principal_id"].as_str().unwrap().to_string();
    let ungranted = s.create_key(&a_admin, "envelope").await;
    let (status, _) = s
        .call(
            Some(&member),
            "encrypt",
            json!({ "key_id": ungranted, "plaintext": b64(b"x") }),
        )
        .await;
    assert_eq!(status, 404);
    let (status, _) = s.call(Some(&member), "create-key", json!({})).await;
    assert_eq!(status, 403, "members do not manage keys");
    let granted = s
        .ok(&a_admin, "create-key", json!({ "grants": [member_id] }))
        .await;
    let granted = granted["key_id"].as_str().unwrap();
    let ct = s.encrypt(&member, granted, b"x", json!({})).await;
    let (status, _) = s.decrypt(&member, &ct, json!({})).await;
    assert_eq!(status, 200);
    // The key's admin was not granted it: managing is not using.
    let (status, _) = s.decrypt(&a_admin, &ct, json!({})).await;
    assert_eq!(status, 403);
    // Grants may only name principals of the same tenant.
    let (status, v) = s
        .call(
            Some(&s.admin),
            "create-key",
            json!({ "grants": [m["principal_id"]] }),
        )
        .await;
    assert_eq!(status, 400, "{v}");

    // list-keys is per tenant and paginated.
    for _ in 0..3 {
        s.create_key(&a_admin, "envelope").await;
    }
    let mut seen = Vec::new();
    let mut next = None::<String>;
    loop {
        let mut req = json!({ "limit": 2 });
        if let Some(t) = &next {
            req["next_token"] = json!(t);
        }
        let page = s.ok(&a_admin, "list-keys", req).await;
        for k in page["keys"].as_array().unwrap() {
            assert_eq!(k["tenant_id"], "tenant-a");
            seen.push(k["key_id"].as_str().unwrap().to_string());
        }
        match page.get("next_token").and_then(|t| t.as_str()) {
            Some(t) => next = Some(t.to_string()),
            None => break,
        }
    }
    let before = seen.len();
    seen.dedup();
    assert_eq!((before, seen.len()), (5, 5));
}

/// An empty plaintext is encrypted and decrypted back, under keys of both protections (as
/// Vault Transit does: its clients send `""` for an empty value); the AWS front keeps AWS's
/// minimum of one byte (`boto3_kms.py`).
#[tokio::test(flavor = "multi_thread")]
async fn an_empty_plaintext_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path()).await;
    for protection in ["envelope", "hsm"] {
        let key = s.create_key(&s.admin, protection).await;
        let ct = s
            .encrypt(&s.admin, &key, b"", json!({ "purpose": "empty" }))
            .await;
        let (status, v) = s
            .decrypt(&s.admin, &ct, json!({ "purpose": "empty" }))
            .await;
        assert_eq!(
            (status, v["plaintext"].as_str()),
            (200, Some("")),
            "{protection}: {v}"
        );
        let (status, v) = s.decrypt(&s.admin, &ct, json!({})).await;
        assert_eq!(status, 400, "the context is still bound: {v}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_typed_4xx() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path()).await;
    let key = s.create_key(&s.admin, "envelope").await;
    let t = Some(s.admin.as_str());
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("encrypt", b"{not json".to_vec(), 400, "MalformedJson"),
        ("encrypt", br#"{"key_id": "#.to_vec(), 400, "MalformedJson"),
        (
            "encrypt",
            json!({ "key_id": key, "plaintext": "%%%not base64" })
                .to_string()
                .into_bytes(),
            400,
            "ValidationError",
        ),
        (
            "encrypt",
            json!({ "key_id": key, "plaintext": b64(&[7u8; 4097]) })
                .to_string()
                .into_bytes(),
            400,
            "ValidationError",
        ),
        (
            "encrypt",
            json!({ "key_id": key }).to_string().into_bytes(),
            400,
            "ValidationError",
        ),
        (
            "encrypt",
            json!({ "key_id": key, "plaintext": b64(b"x"), "surprise": 1 })
                .to_string()
                .into_bytes(),
            400,
            "ValidationError",
        ),
        (
            "encrypt",
            json!({ "key_id": 42, "plaintext": b64(b"x") })
                .to_string()
                .into_bytes(),
            400,
            "ValidationError",
        ),
        (
            "encrypt",
            json!({ "key_id": "k-doesnotexist", "plaintext": b64(b"x") })
                .to_string()
                .into_bytes(),
            404,
            "NotFound",
        ),
        (
            "encrypt",
            json!({ "key_id": "../../etc", "plaintext": b64(b"x") })
                .to_string()
                .into_bytes(),
            400,
            "ValidationError",
        ),
        (
            "decrypt",
            json!({ "ciphertext_blob": b64(b"garbage") })
                .to_string()
                .into_bytes(),
            400,
            "InvalidCiphertext",
        ),
        (
            "create-key",
            json!({ "protection": "paper" }).to_string().into_bytes(),
            400,
            "ValidationError",
        ),
        (
            "create-tenant",
            json!({ "tenant_id": "Bad Name!" }).to_string().into_bytes(),
            400,
            "ValidationError",
        ),
        (
            "create-tenant",
            json!({ "tenant_id": "default" }).to_string().into_bytes(),
            409,
            "AlreadyExists",
        ),
        (
            "list-keys",
            json!({ "limit": 0 }).to_string().into_bytes(),
            400,
            "ValidationError",
        ),
        (
            "list-keys",
            json!({ "next_token": "!!" }).to_string().into_bytes(),
            400,
            "ValidationError",
        ),
        (
            "generate-random",
            json!({ "number_of_bytes": 1_000_000 })
                .to_string()
                .into_bytes(),
            400,
            "ValidationError",
        ),
        (
            "generate-random",
            json!({ "number_of_bytes": -1 }).to_string().into_bytes(),
            400,
            "ValidationError",
        ),
        (
            "generate-data-key",
            json!({ "key_id": key, "key_spec": "AES_256", "number_of_bytes": 3 })
                .to_string()
                .into_bytes(),
            400,
            "ValidationError",
        ),
        ("encrypt", vec![b'{'; 70_000], 413, "PayloadTooLarge"),
        ("no-such-operation", b"{}".to_vec(), 404, "UnknownOperation"),
    ];
    for (op, body, status, code) in cases {
        let (got, v) = s.call_raw(t, op, body).await;
        assert_eq!(
            (got, v["error"]["code"].as_str()),
            (status, Some(code)),
            "{op}: {v}"
        );
        assert!(v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
    }
    // Unauthenticated requests are refused before their body is read, whatever its size.
    let (got, v) = s.call_raw(None, "encrypt", vec![b'{'; 70_000]).await;
    assert_eq!(
        (got, v["error"]["code"].as_str()),
        (401, Some("Unauthenticated"))
    );
    // Wrong method: a JSON 405.
    let r = s
        .client
        .get(format!("{}/v1/encrypt", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 405);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "MethodNotAllowed");
    // 4096 bytes is the largest plaintext accepted.
    s.encrypt(&s.admin, &key, &[1u8; 4096], json!({})).await;
    // Routes that are not operations answer JSON 404s; health endpoints need no token.
    let r = s
        .client
        .get(format!("{}/v2/whatever", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    let r = s
        .client
        .get(format!("{}/healthz", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r: serde_json::Value = s
        .client
        .get(format!("{}/readyz", s.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (r["database"].as_str(), r["hsm"].as_str()),
        (Some("ok"), Some("ok"))
    );
    // Every one of those requests was audited and the chain still verifies.
    let out = s.audit_verify();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[cfg(all(feature = "test-hooks", debug_assertions))]
#[tokio::test(flavor = "multi_thread")]
async fn two_hundred_concurrent_encrypts() {
    let dir = tempfile::tempdir().unwrap();
    let s = std::sync::Arc::new(Server::start(dir.path()).await);
    let keys = [
        s.create_key(&s.admin, "envelope").await,
        s.create_key(&s.admin, "hsm").await,
    ];
    let mut tasks = Vec::new();
    for i in 0..200usize {
        let s = s.clone();
        let key = keys[i % 2].clone();
        tasks.push(tokio::spawn(async move {
            let pt = format!("message {i}").into_bytes();
            let ctx = json!({ "n": i.to_string() });
            let ct = s.encrypt(&s.admin, &key, &pt, ctx.clone()).await;
            (pt, ct, ctx)
        }));
    }
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.expect("encrypt task"));
    }
    let nonces: std::collections::HashSet<Vec<u8>> =
        results.iter().map(|(_, ct, _)| ct.clone()).collect();
    assert_eq!(nonces.len(), 200, "ciphertexts must all differ");
    for (pt, ct, ctx) in results {
        let (status, v) = s.decrypt(&s.admin, &ct, ctx).await;
        assert_eq!(status, 200);
        assert_eq!(unb64(&v["plaintext"]), pt);
    }
    let out = s.audit_verify();
    assert!(out.status.success());
}

/// The test hooks under `/debug/` (test builds only) answer the operator alone: a tenant's
/// admin is refused and a caller without a token is not authenticated, before any hook runs.
#[cfg(all(feature = "test-hooks", debug_assertions))]
#[tokio::test(flavor = "multi_thread")]
async fn test_hooks_answer_the_operator_only() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path()).await;
    let (_, tenant_admin) = s.tenant_with_admin("acme").await;
    let before = s.advance_clock(0).await;
    for (token, status, code) in [
        (Some(tenant_admin.as_str()), 403, "AccessDenied"),
        (None, 401, "Unauthenticated"),
    ] {
        for (hook, body) in [
            ("clock", json!({ "advance_seconds": 86_400 })),
            (
                "pause",
                json!({ "point": "rotate:start", "key_id": "k", "action": "arm" }),
            ),
            ("hsm-objects", json!({ "object_id": "kp:k:1:0" })),
            ("envelope-material", json!({ "key_id": "k" })),
        ] {
            let mut req = s
                .client
                .post(format!("{}/debug/{hook}", s.base))
                .json(&body);
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            let r = req.send().await.unwrap();
            assert_eq!(r.status().as_u16(), status, "{hook}");
            let v: serde_json::Value = r.json().await.unwrap();
            assert_eq!(v["error"]["code"], code, "{hook}: {v}");
        }
    }
    let after = s.advance_clock(0).await;
    assert!(
        after - before < 60,
        "the clock did not move a day: {before} → {after}"
    );
}

/// Every answer reaches an HTTP/2 client intact, whatever its status: curl (HTTP/2 over TLS by
/// default, as Go clients such as sops and the vault CLI) got "Stream error in the HTTP/2
/// framing layer" instead of most unauthenticated answers, because they were sent before
/// the request body was read.
#[tokio::test(flavor = "multi_thread")]
async fn every_answer_reaches_http2_clients_intact() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path()).await;
    let cert = dir.path().join("tls/cert.pem");
    let port = s.base.rsplit(':').next().unwrap().to_string();
    for _ in 0..20 {
        let out = std::process::Command::new("curl")
            .args(["-sS", "--http2", "--cacert"])
            .arg(&cert)
            .args([
                "--resolve",
                &format!("localhost:{port}:127.0.0.1"),
                "-X",
                "POST",
                &format!("{}/v1/list-keys", s.base),
                "-d",
                "{}",
                "-w",
                "\n%{http_code} %{http_version}",
            ])
            .output()
            .expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "curl: {} {text}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (body, status) = text.rsplit_once('\n').unwrap();
        assert_eq!(status, "401 2", "{text}");
        let v: Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"]["code"], "Unauthenticated");
    }

    // The same over reqwest's HTTP/2, for each kind of answer.
    let pem = std::fs::read(&cert).unwrap();
    let h2 = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let key = s.create_key(&s.admin, "envelope").await;
    let big = vec![b'a'; 200 * 1024];
    let cases: Vec<(Option<&str>, &str, Vec<u8>, u16)> = vec![
        (None, "encrypt", b"{}".to_vec(), 401),
        (Some(&s.admin), "no-such-operation", b"{}".to_vec(), 404),
        (Some(&s.admin), "encrypt", b"{not json".to_vec(), 400),
        (Some(&s.admin), "encrypt", big.clone(), 413),
        (None, "encrypt", big, 401),
        (
            Some(&s.admin),
            "encrypt",
            json!({ "key_id": key, "plaintext": b64(b"h2") })
                .to_string()
                .into_bytes(),
            200,
        ),
    ];
    for (token, op, body, expected) in cases {
        let mut req = h2.post(format!("{}/v1/{op}", s.base)).body(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.expect("an HTTP/2 answer");
        assert_eq!(resp.version(), reqwest::Version::HTTP_2);
        assert_eq!(resp.status().as_u16(), expected, "{op}");
        let v: Value = resp.json().await.expect("a whole JSON body");
        assert!(v.is_object(), "{v}");
    }
}

/// A client that writes its whole body before it reads the answer (Python's `http.client`,
/// so `requests` and boto3) reads the `413` of a body over the limit (10 MiB), and the `401`
/// of an unauthenticated one (3 MiB), instead of a connection reset: within what keyplane
/// drains for each, and more than the socket buffers absorb when nobody reads.
#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_writes_its_whole_body_first_reads_the_answer() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path()).await;
    let port = s.base.rsplit(':').next().unwrap().to_string();
    let script = r#"
import http.client, json, ssl, sys
cert, port, token = sys.argv[1], int(sys.argv[2]), sys.argv[3]
ctx = ssl.create_default_context(cafile=cert)
for auth, size in ((token, 10 << 20), (None, 3 << 20)):
    c = http.client.HTTPSConnection("localhost", port, context=ctx, timeout=30)
    headers = {"Content-Type": "application/json"}
    if auth:
        headers["Authorization"] = "Bearer " + auth
    body = b'{"plaintext": "' + b"A" * size + b'"}'
    c.request("POST", "/v1/encrypt", body=body, headers=headers)
    r = c.getresponse()
    print(r.status, json.loads(r.read())["error"]["code"])
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(dir.path().join("tls/cert.pem"))
        .args([&port, &s.admin])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "413 PayloadTooLarge\n401 Unauthenticated\n"
    );
}

/// The bootstrap admin token is printed only to a terminal: a service's standard output goes
/// to a pipe or a log collector, where a token must never land. The file (0600) keeps it.
#[tokio::test(flavor = "multi_thread")]
async fn the_bootstrap_token_never_goes_to_a_pipe() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path()).await;
    let mut printed = s.startup.clone();
    printed.extend(s.log.lock().unwrap().try_iter());
    assert!(
        printed.iter().any(|l| l.contains("admin.token")),
        "{printed:?}"
    );
    assert!(
        !printed.iter().any(|l| l.contains(&s.admin)),
        "the token was printed to a pipe"
    );
    let mode = std::fs::metadata(dir.path().join("admin.token"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    s.ok(&s.admin, "list-keys", json!({})).await;
}
