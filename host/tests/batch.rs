//! Batches on the native API (`POST /v1/batch`), against a real server: a column of 1,000
//! values encrypted, read back and moved to another key; every kind of per-item failure next
//! to successes, each answered as the same request sent alone would be; Cedar deciding each
//! item; one audit record per item (request id `<x-request-id>/<index>`) and the chain still
//! verifying; whole batches refused (and audited once); the signing and MAC operations; and
//! the answers intact over HTTP/2.

mod common;

use common::{b64, unb64, Server};
use serde_json::{json, Value};

/// `POST /v1/batch` with `{"operation", "items"}`: status, answer and `x-request-id`.
async fn batch(s: &Server, token: &str, operation: &str, items: &[Value]) -> (u16, Value, String) {
    let body = json!({ "operation": operation, "items": items });
    post_batch(s, &s.client, Some(token), body.to_string().into_bytes()).await
}

/// `POST /v1/batch` with a raw body through `client`.
async fn post_batch(
    s: &Server,
    client: &reqwest::Client,
    token: Option<&str>,
    body: Vec<u8>,
) -> (u16, Value, String) {
    let mut req = client.post(format!("{}/v1/batch", s.base)).body(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.expect("an answer");
    let status = resp.status().as_u16();
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    let text = resp.text().await.unwrap();
    let v = serde_json::from_str(&text).unwrap_or_else(|_| panic!("non-JSON {status}: {text}"));
    (status, v, id)
}

/// The outputs of a batch that must have succeeded whole.
async fn outputs(s: &Server, token: &str, operation: &str, items: &[Value]) -> Vec<Value> {
    let (status, v, _) = batch(s, token, operation, items).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["failed"], 0, "{v}");
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), items.len());
    results.iter().map(|r| r["output"].clone()).collect()
}

/// One audit record, as the tests read it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    request_id: String,
    action: String,
    resource: String,
    decision: String,
    outcome: String,
}

/// The records of request `id` and of its items (`id/<index>`), in chain order.
async fn records(s: &Server, id: &str) -> Vec<Record> {
    let pool = s.sql_any().await;
    let rows: Vec<(String, String, String, String, String)> = sqlx::query_as(
        "SELECT request_id, action, resource, decision, outcome FROM audit_log \
         WHERE request_id = $1 OR request_id LIKE $1 || '/%' ORDER BY seq",
    )
    .bind(id)
    .fetch_all(&pool)
    .await
    .unwrap();
    pool.close().await;
    rows.into_iter()
        .map(|(request_id, action, resource, decision, outcome)| Record {
            request_id,
            action,
            resource,
            decision,
            outcome,
        })
        .collect()
}

/// The record of item `index` of request `id` (exactly one).
fn item<'a>(records: &'a [Record], id: &str, index: usize) -> &'a Record {
    let want = format!("{id}/{index}");
    let found: Vec<&Record> = records.iter().filter(|r| r.request_id == want).collect();
    assert_eq!(found.len(), 1, "records of {want}: {found:?}");
    found[0]
}

fn key_uid(key: &str) -> String {
    format!("Keyplane::Key::{key:?}")
}

/// Row `i` of the column: 4096 bytes (the largest `encrypt` takes), different for each row.
fn row(i: usize) -> Vec<u8> {
    let mut v = format!("row {i:04} ").into_bytes();
    v.resize(4096, b'a' + (i % 26) as u8);
    v
}

/// The "re-encrypt a database column" use: 1,000 values of the largest size encrypted in one
/// batch, decrypted back in one, moved to another key with a rewrap batch, and read from
/// there; then decrypted and encrypted anew (decrypt batch + encrypt batch). Each item has
/// its own allowed, successful audit record, and 1,001 items are refused whole.
#[tokio::test(flavor = "multi_thread")]
async fn a_column_of_a_thousand_values_moves_to_another_key() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path()).await;
    let old = s.create_key(&s.admin, "envelope").await;
    let new = s.create_key(&s.admin, "hsm").await;
    let ctx = json!({ "table": "customers", "column": "ssn" });

    let encrypt: Vec<Value> = (0..1000)
        .map(|i| json!({ "key_id": old, "plaintext": b64(&row(i)), "encryption_context": ctx }))
        .collect();
    let (status, v, id) = batch(&s, &s.admin, "encrypt", &encrypt).await;
    assert_eq!((status, &v["failed"]), (200, &json!(0)), "{}", v["failed"]);
    let ciphertexts: Vec<String> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert_eq!(r["output"]["key_id"], old.as_str());
            r["output"]["ciphertext_blob"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(ciphertexts.len(), 1000);
    let recs = records(&s, &id).await;
    assert_eq!(recs.len(), 1000, "one record per item, none for the batch");
    for i in 0..1000 {
        let r = item(&recs, &id, i);
        assert_eq!(
            (
                r.action.as_str(),
                r.resource.as_str(),
                r.decision.as_str(),
                r.outcome.as_str()
            ),
            ("Encrypt", key_uid(&old).as_str(), "allow", "ok")
        );
    }

    let decrypt: Vec<Value> = ciphertexts
        .iter()
        .map(|ct| json!({ "ciphertext_blob": ct, "encryption_context": ctx }))
        .collect();
    for (i, out) in outputs(&s, &s.admin, "decrypt", &decrypt)
        .await
        .iter()
        .enumerate()
    {
        assert_eq!(unb64(&out["plaintext"]), row(i), "row {i}");
    }

    // Rewrap: to the new key without the plaintext leaving keyplane.
    let rewrap: Vec<Value> = ciphertexts
        .iter()
        .map(|ct| {
            json!({ "ciphertext_blob": ct, "source_encryption_context": ctx,
                    "destination_key_id": new })
        })
        .collect();
    let moved: Vec<String> = outputs(&s, &s.admin, "rewrap", &rewrap)
        .await
        .iter()
        .map(|out| {
            assert_eq!(
                (&out["key_id"], &out["source_key_id"]),
                (&json!(new), &json!(old))
            );
            out["ciphertext_blob"].as_str().unwrap().to_string()
        })
        .collect();
    let from_new: Vec<Value> = moved
        .iter()
        .map(|ct| json!({ "ciphertext_blob": ct, "encryption_context": ctx }))
        .collect();
    for (i, out) in outputs(&s, &s.admin, "decrypt", &from_new)
        .await
        .iter()
        .enumerate()
    {
        assert_eq!(
            (unb64(&out["plaintext"]), &out["key_id"]),
            (row(i), &json!(new))
        );
    }

    // Decrypt + encrypt: the application re-encrypts under a new context as well.
    let plaintexts = outputs(&s, &s.admin, "decrypt", &from_new).await;
    let ctx2 = json!({ "table": "customers", "column": "ssn", "v": "2" });
    let again: Vec<Value> = plaintexts
        .iter()
        .map(|p| json!({ "key_id": new, "plaintext": p["plaintext"], "encryption_context": ctx2 }))
        .collect();
    let reencrypted = outputs(&s, &s.admin, "encrypt", &again).await;
    let back: Vec<Value> = reencrypted
        .iter()
        .map(|o| json!({ "ciphertext_blob": o["ciphertext_blob"], "encryption_context": ctx2 }))
        .collect();
    for (i, out) in outputs(&s, &s.admin, "decrypt", &back)
        .await
        .iter()
        .enumerate()
    {
        assert_eq!(unb64(&out["plaintext"]), row(i), "row {i}");
    }

    // 1,001 items: refused whole, nothing done, one record under the request's own id.
    let too_many: Vec<Value> = (0..1001)
        .map(|i| json!({ "key_id": old, "plaintext": b64(&row(i)[..32]) }))
        .collect();
    let (status, v, id) = batch(&s, &s.admin, "encrypt", &too_many).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (400, Some("ValidationError")),
        "{v}"
    );
    assert!(v.get("results").is_none(), "{v}");
    let recs = records(&s, &id).await;
    assert_eq!(recs.len(), 1, "{recs:?}");
    assert_eq!(
        (
            recs[0].request_id.as_str(),
            recs[0].action.as_str(),
            recs[0].outcome.as_str()
        ),
        (id.as_str(), "Encrypt", "ValidationError")
    );
    s.assert_audit_verifies();
}

/// A tenant `acme` with an admin and a member: (admin token, member id, member token).
async fn acme(s: &Server) -> (String, String, String) {
    let (_, admin) = s.tenant_with_admin("acme").await;
    let p = s
        .ok(
            &admin,
            "create-principal",
            json!({ "tenant_id": "acme", "name": "app" }),
        )
        .await;
    let (id, token) = (p["principal_id"].as_str(), p["token"].as_str());
    (admin, id.unwrap().into(), token.unwrap().into())
}

/// Every kind of item failure in one batch, between successes: each item gets the answer and
/// the audit record it would get alone, Cedar decides each one (the member may use key A,
/// not key B; key C's tag forbids it without the right context), and the successes are done.
#[tokio::test(flavor = "multi_thread")]
async fn each_item_fails_or_succeeds_on_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path()).await;
    let (admin, member_id, member) = acme(&s).await;
    let create = |body: Value| {
        let admin = admin.clone();
        let s = &s;
        async move {
            let k = s.ok(&admin, "create-key", body).await;
            k["key_id"].as_str().unwrap().to_string()
        }
    };
    let key_a = create(json!({ "grants": [member_id], "protection": "envelope" })).await;
    let key_b = create(json!({ "protection": "envelope" })).await;
    let key_c = create(json!({ "grants": [member_id], "tags": { "purpose": "backup" } })).await;
    let disabled = create(json!({ "grants": [member_id] })).await;
    s.ok(&admin, "disable-key", json!({ "key_id": disabled }))
        .await;
    let foreign = s.create_key(&s.admin, "envelope").await;
    let missing = format!("k-{}", "0".repeat(32));

    let enc = |key: &str, pt: &[u8]| json!({ "key_id": key, "plaintext": b64(pt) });
    let items = vec![
        enc(&key_a, b"first"),
        enc(&key_b, b"not granted"),
        enc(&key_a, b"second"),
        enc(&key_c, b"no purpose"),
        json!({ "key_id": key_c, "plaintext": b64(b"backup"),
                "encryption_context": { "purpose": "backup" } }),
        enc(&disabled, b"disabled"),
        enc(&foreign, b"another tenant's"),
        enc(&missing, b"no such key"),
        json!({ "key_id": key_a, "plaintext": "not base64!" }),
        json!({ "key_id": key_a, "plaintext": b64(b"x"), "unknown_field": 1 }),
        json!({ "key_id": key_a }),
        json!([1, 2, 3]),
        enc(&key_a, b"last"),
    ];
    let (status, v, id) = batch(&s, &member, "encrypt", &items).await;
    assert_eq!(status, 200, "{v}");
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), items.len());
    let code = |i: usize| {
        results[i]["error"]["code"]
            .as_str()
            .unwrap_or("ok")
            .to_string()
    };
    let codes: Vec<String> = (0..items.len()).map(code).collect();
    let expected = [
        "ok",
        "NotFound",
        "ok",
        "AccessDenied",
        "ok",
        "InvalidState",
        "NotFound",
        "NotFound",
        "ValidationError",
        "ValidationError",
        "ValidationError",
        "ValidationError",
        "ok",
    ];
    assert_eq!(codes, expected, "{v}");
    assert_eq!(v["failed"], 9);

    // Each failure is answered as the same request alone: same status class, same message.
    for (i, body) in items.iter().enumerate() {
        let (_, alone) = s.call(Some(&member), "encrypt", body.clone()).await;
        if let Some(err) = results[i].get("error") {
            assert_eq!(err, &alone["error"], "item {i}");
            assert_eq!(err.as_object().unwrap().len(), 2, "code and message: {err}");
        } else {
            assert!(alone.get("ciphertext_blob").is_some(), "item {i}: {alone}");
        }
    }

    // The successes were done: they decrypt, in a batch whose own failures (a wrong context,
    // a malformed ciphertext, a tampered one) leave the others alone.
    let ct = |i: usize| results[i]["output"]["ciphertext_blob"].clone();
    let mut tampered = unb64(&ct(2));
    *tampered.last_mut().unwrap() ^= 1;
    let items = vec![
        json!({ "ciphertext_blob": ct(0) }),
        json!({ "ciphertext_blob": ct(4), "encryption_context": { "purpose": "other" } }),
        json!({ "ciphertext_blob": b64(b"KPnot a ciphertext") }),
        json!({ "ciphertext_blob": b64(&tampered) }),
        json!({ "ciphertext_blob": ct(4), "encryption_context": { "purpose": "backup" } }),
        json!({ "ciphertext_blob": ct(12) }),
    ];
    let (status, d, _) = batch(&s, &member, "decrypt", &items).await;
    assert_eq!((status, &d["failed"]), (200, &json!(3)), "{d}");
    let r = d["results"].as_array().unwrap();
    let plain = |i: usize| unb64(&r[i]["output"]["plaintext"]);
    assert_eq!(
        (plain(0), plain(4), plain(5)),
        (b"first".to_vec(), b"backup".to_vec(), b"last".to_vec())
    );
    // A wrong context on key C is refused by Cedar (its tag) before the ciphertext is tried.
    assert_eq!(r[1]["error"]["code"], "AccessDenied", "{d}");
    assert_eq!(r[2]["error"]["code"], "InvalidCiphertext", "{d}");
    assert_eq!(r[3]["error"]["code"], "InvalidCiphertext", "{d}");

    // One record per item, with the action, resource, decision and outcome of each.
    let recs = records(&s, &id).await;
    assert_eq!(recs.len(), expected.len(), "{recs:?}");
    let want = |key: Option<&str>, decision: &str, outcome: &str| {
        (
            key.map_or("-".to_string(), key_uid),
            decision.to_string(),
            outcome.to_string(),
        )
    };
    let wanted = [
        want(Some(&key_a), "allow", "ok"),
        want(Some(&key_b), "deny", "NotFound"),
        want(Some(&key_a), "allow", "ok"),
        want(Some(&key_c), "deny", "AccessDenied"),
        want(Some(&key_c), "allow", "ok"),
        want(Some(&disabled), "allow", "InvalidState"),
        want(Some(&foreign), "deny", "NotFound"),
        want(None, "not-evaluated", "NotFound"),
        want(None, "not-evaluated", "ValidationError"),
        want(None, "not-evaluated", "ValidationError"),
        want(None, "not-evaluated", "ValidationError"),
        want(None, "not-evaluated", "ValidationError"),
        want(Some(&key_a), "allow", "ok"),
    ];
    for (i, w) in wanted.iter().enumerate() {
        let r = item(&recs, &id, i);
        assert_eq!(r.action, "Encrypt", "item {i}");
        assert_eq!(
            &(r.resource.clone(), r.decision.clone(), r.outcome.clone()),
            w,
            "item {i}"
        );
    }
    s.assert_audit_verifies();
}

/// A batch refused as a whole gets the native error with its status, and one audit record:
/// under the operation's action once the operation is known, `unknown:<name>` for an unknown
/// one, `batch` before the body says which.
#[tokio::test(flavor = "multi_thread")]
async fn whole_batches_are_refused_and_audited_once() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path()).await;
    let key = s.create_key(&s.admin, "envelope").await;
    let one = json!([{ "key_id": key, "plaintext": b64(b"x") }]);
    let body = |v: Value| v.to_string().into_bytes();
    let big = vec![b' '; 9 << 20];
    // (token, body, status, code, audited action)
    type Case<'a> = (Option<&'a str>, Vec<u8>, u16, &'a str, &'a str);
    let cases: Vec<Case> = vec![
        (
            None,
            body(json!({ "operation": "encrypt", "items": one })),
            401,
            "Unauthenticated",
            "batch",
        ),
        (
            Some(&s.admin),
            b"{\"operation\": \"encrypt\", \"items\": [".to_vec(),
            400,
            "MalformedJson",
            "batch",
        ),
        (
            Some(&s.admin),
            body(json!({ "items": one })),
            400,
            "ValidationError",
            "batch",
        ),
        (
            Some(&s.admin),
            body(json!({ "operation": "encrypt", "items": one, "x": 1 })),
            400,
            "ValidationError",
            "batch",
        ),
        (Some(&s.admin), big, 413, "PayloadTooLarge", "batch"),
        (
            Some(&s.admin),
            body(json!({ "operation": "no-such-op", "items": one })),
            404,
            "UnknownOperation",
            "unknown:no-such-op",
        ),
        (
            Some(&s.admin),
            body(json!({ "operation": "create-key", "items": [{}] })),
            400,
            "Unsupported",
            "CreateKey",
        ),
        (
            Some(&s.admin),
            body(json!({ "operation": "encrypt", "items": [] })),
            400,
            "ValidationError",
            "Encrypt",
        ),
    ];
    for (token, body, status, code, action) in cases {
        let (got, v, id) = post_batch(&s, &s.client, token, body).await;
        assert_eq!(
            (got, v["error"]["code"].as_str()),
            (status, Some(code)),
            "{action}: {v}"
        );
        let recs = records(&s, &id).await;
        assert_eq!(recs.len(), 1, "{action}: {recs:?}");
        assert_eq!(
            (
                recs[0].request_id.as_str(),
                recs[0].action.as_str(),
                recs[0].outcome.as_str()
            ),
            (id.as_str(), action, code)
        );
    }
    s.assert_audit_verifies();
}

/// Data keys, signatures and MACs in batches: each output checks against the single
/// operation's (a data key's ciphertext opens to its plaintext; signatures and MACs verify in
/// a batch, and a wrong one does not).
#[tokio::test(flavor = "multi_thread")]
async fn data_keys_signatures_and_macs_in_batches() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path()).await;
    let aes = s.create_key(&s.admin, "envelope").await;
    let create = |spec: &str, usage: &str| {
        s.ok(
            &s.admin,
            "create-key",
            json!({ "key_spec": spec, "key_usage": usage }),
        )
    };
    let signer = create("ECC_NIST_P256", "sign-verify").await["key_id"].clone();
    let hmac = create("HMAC_SHA_256", "generate-verify-mac").await["key_id"].clone();
    let messages: Vec<Vec<u8>> = (0..50)
        .map(|i| format!("message {i}").into_bytes())
        .collect();

    let ctx = json!({ "app": "batch" });
    let gdk: Vec<Value> = (0..50)
        .map(
            |i| json!({ "key_id": aes, "number_of_bytes": 16 + i % 17, "encryption_context": ctx }),
        )
        .collect();
    let keys = outputs(&s, &s.admin, "generate-data-key", &gdk).await;
    let opened = outputs(
        &s,
        &s.admin,
        "decrypt",
        &keys
            .iter()
            .map(|k| json!({ "ciphertext_blob": k["ciphertext_blob"], "encryption_context": ctx }))
            .collect::<Vec<_>>(),
    )
    .await;
    for (i, (k, o)) in keys.iter().zip(&opened).enumerate() {
        assert_eq!(unb64(&k["plaintext"]).len(), 16 + i % 17);
        assert_eq!(k["plaintext"], o["plaintext"], "data key {i}");
    }
    let without = outputs(&s, &s.admin, "generate-data-key-without-plaintext", &gdk).await;
    assert!(without
        .iter()
        .all(|k| k.get("plaintext").is_none() && k["ciphertext_blob"].is_string()));

    let sign: Vec<Value> = messages
        .iter()
        .map(|m| json!({ "key_id": signer, "message": b64(m), "signing_algorithm": "ECDSA_SHA_256" }))
        .collect();
    let signatures = outputs(&s, &s.admin, "sign", &sign).await;
    let mut verify: Vec<Value> = sign
        .iter()
        .zip(&signatures)
        .map(|(item, sig)| {
            let mut item = item.clone();
            item["signature"] = sig["signature"].clone();
            item
        })
        .collect();
    verify[7]["message"] = json!(b64(b"not the message signed"));
    let checked = outputs(&s, &s.admin, "verify", &verify).await;
    for (i, c) in checked.iter().enumerate() {
        assert_eq!(c["signature_valid"], i != 7, "signature {i}: {c}");
    }
    // One of the signatures, checked by the single operation too.
    let alone = s.ok(&s.admin, "verify", verify[3].clone()).await;
    assert_eq!(alone["signature_valid"], true);

    let mac: Vec<Value> = messages
        .iter()
        .map(|m| json!({ "key_id": hmac, "message": b64(m), "mac_algorithm": "HMAC_SHA_256" }))
        .collect();
    let macs = outputs(&s, &s.admin, "generate-mac", &mac).await;
    let alone = s.ok(&s.admin, "generate-mac", mac[5].clone()).await;
    assert_eq!(alone["mac"], macs[5]["mac"], "HMAC is deterministic");
    let mut verify: Vec<Value> = mac
        .iter()
        .zip(&macs)
        .map(|(item, m)| {
            let mut item = item.clone();
            item["mac"] = m["mac"].clone();
            item
        })
        .collect();
    verify[11]["mac"] = macs[12]["mac"].clone();
    let checked = outputs(&s, &s.admin, "verify-mac", &verify).await;
    for (i, c) in checked.iter().enumerate() {
        assert_eq!(c["mac_valid"], i != 11, "mac {i}: {c}");
    }
    s.assert_audit_verifies();
}

/// A batch's answer (large, with failures in it) reaches HTTP/2 clients whole: reqwest with
/// HTTP/2 and curl `--http2`, as Go clients and the vault CLI speak it.
#[tokio::test(flavor = "multi_thread")]
async fn batch_answers_reach_http2_clients_intact() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path()).await;
    let key = s.create_key(&s.admin, "envelope").await;
    let items: Vec<Value> = (0..1000)
        .map(|i| match i % 100 {
            99 => json!({ "key_id": key }),
            _ => json!({ "key_id": key, "plaintext": b64(&row(i)[..1024]) }),
        })
        .collect();
    let body = json!({ "operation": "encrypt", "items": items }).to_string();

    let cert = dir.path().join("tls/cert.pem");
    let h2 = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(&cert).unwrap()).unwrap(),
        )
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let check = |v: &Value| {
        let results = v["results"].as_array().unwrap();
        assert_eq!((results.len(), &v["failed"]), (1000, &json!(10)));
        for (i, r) in results.iter().enumerate() {
            match i % 100 {
                99 => assert_eq!(r["error"]["code"], "ValidationError", "{i}"),
                _ => assert_eq!(r["output"]["key_id"], key.as_str(), "{i}"),
            }
        }
    };
    let resp = h2
        .post(format!("{}/v1/batch", s.base))
        .bearer_auth(&s.admin)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(
        (resp.version(), resp.status().as_u16()),
        (reqwest::Version::HTTP_2, 200)
    );
    check(&resp.json().await.unwrap());

    let file = dir.path().join("batch.json");
    std::fs::write(&file, &body).unwrap();
    let port = s.base.rsplit(':').next().unwrap().to_string();
    let out = std::process::Command::new("curl")
        .args(["-sS", "--http2", "--cacert"])
        .arg(&cert)
        .args(["--resolve", &format!("localhost:{port}:127.0.0.1")])
        .args(["-H", &format!("Authorization: Bearer {}", s.admin)])
        .args(["--data-binary", &format!("@{}", file.display())])
        .args(["-w", "\n%{http_code} %{http_version}"])
        .arg(format!("{}/v1/batch", s.base))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (answer, status) = text.rsplit_once('\n').unwrap();
    assert_eq!(status, "200 2");
    check(&serde_json::from_str(answer).unwrap());
}

/// An item's encryption context is refused while it is decoded, as soon as it passes 64
/// entries: a batch body of 8 MiB that is one context of half a million entries raises the
/// node's peak memory by little more than the body (decoded whole before it was refused, it
/// took several times the body). The item fails on its own, with the limit in its message.
#[tokio::test(flavor = "multi_thread")]
async fn an_oversized_encryption_context_is_refused_as_it_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path()).await;
    let key = s.create_key(&s.admin, "envelope").await;
    let entries: Vec<String> = (0..500_000).map(|i| format!("\"k{i}\":\"\"")).collect();
    let body = format!(
        "{{\"operation\":\"encrypt\",\"items\":[{{\"key_id\":\"{key}\",\"plaintext\":\"AA==\",\"encryption_context\":{{{}}}}},{{\"key_id\":\"{key}\",\"plaintext\":\"AA==\"}}]}}",
        entries.join(",")
    );
    assert!(body.len() < 8 << 20, "{}", body.len());
    let before = common::peak_kib(s.pid());
    let (status, v, _) = post_batch(&s, &s.client, Some(&s.admin), body.into_bytes()).await;
    let grown = common::peak_kib(s.pid()).saturating_sub(before);
    assert_eq!(status, 200, "{v}");
    let message = v["results"][0]["error"]["message"].as_str().unwrap();
    assert!(message.contains("more than 64 entries"), "{v}");
    assert!(v["results"][1]["output"].is_object(), "{v}");
    eprintln!("peak memory grew by {grown} KiB");
    assert!(grown < 32 * 1024, "peak memory grew by {grown} KiB");
}
