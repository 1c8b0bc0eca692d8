//! The Vault Transit front, proven with clients nobody here wrote: hvac (every endpoint and
//! each exception it names), sops `--hc-vault-transit` and the OpenBao CLI `bao` (both Go's
//! Vault client: HTTP/2, PUT), from the venv `scripts/setup` makes; keys shared with the native
//! API and the AWS front; the wire details Vault clients rely on (envelope, content type, LIST, statuses) over
//! HTTP/1.1 and HTTP/2. Each request is checked by Cedar and audited with its front.
#![cfg(all(feature = "test-hooks", debug_assertions))]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use common::aws::{access_key, client, run, venv_bin};
use common::Server;
use serde_json::{json, Value};

const ACCOUNT: &str = "111122223333";

/// A node with a tenant `acme`: its admin's token, a member's (no grants), a second admin's
/// (approves deletions).
struct Acme {
    server: Server,
    admin: String,
    member: String,
    approver: String,
}

async fn acme(dir: &Path) -> Acme {
    let server = Server::start(dir).await;
    let tokens = server
        .tenant_with(
            "acme",
            ACCOUNT,
            &[("alice", "admin"), ("bob", "member"), ("adam", "admin")],
        )
        .await;
    Acme {
        admin: tokens[0].clone(),
        member: tokens[1].clone(),
        approver: tokens[2].clone(),
        server,
    }
}

fn cert(server: &Server) -> PathBuf {
    server.data_dir.join("tls/cert.pem")
}

/// A command for a Vault client holding `token` against `server`, and nothing else: the
/// server's certificate the only one trusted, no proxies, no configuration.
fn vault_client(program: &Path, server: &Server, token: &str) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", server.data_dir.join("client-home"))
        .env("VAULT_ADDR", &server.base)
        .env("VAULT_TOKEN", token)
        .env("VAULT_CACERT", cert(server))
        .env("SSL_CERT_FILE", cert(server));
    cmd
}

/// A Transit request: (status, Content-Type, JSON answer).
async fn transit(
    s: &Server,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, String, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = s.client.request(method, format!("{}/v1/{path}", s.base));
    if let Some(t) = token {
        req = req.header("X-Vault-Token", t);
    }
    if let Some(b) = body {
        req = req.body(b.to_string());
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let ctype = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let text = resp.text().await.unwrap();
    if status == 204 && text.is_empty() {
        return (status, ctype, Value::Null);
    }
    let v = serde_json::from_str(&text)
        .unwrap_or_else(|_| panic!("non-JSON answer {status} to {path}: {text:?}"));
    (status, ctype, v)
}

/// A request and the status it must get: (method, path, token, body, status).
type Case<'a> = (&'a str, &'a str, Option<&'a str>, Option<Value>, u16);

/// The keyplane ciphertext inside a `vault:v<N>:` value.
fn blob_of(transit_ciphertext: &str) -> String {
    let rest = transit_ciphertext.strip_prefix("vault:v").unwrap();
    rest.split_once(':').unwrap().1.to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn hvac_runs_every_transit_endpoint_and_meets_every_error() {
    let dir = tempfile::tempdir().unwrap();
    let a = acme(dir.path()).await;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/transit/hvac_transit.py");
    let out = run(vault_client(&venv_bin("python"), &a.server, &a.admin)
        .arg(script)
        .env("MEMBER_TOKEN", &a.member)
        .env("APPROVER_TOKEN", &a.approver));
    assert!(out.contains("all hvac checks passed"), "{out}");

    // Cedar decided each Transit request and the log recorded it, naming the front.
    let records = a.server.audit_records();
    let vt: Vec<&Value> = records
        .iter()
        .filter(|r| r["front"] == "vault-transit")
        .collect();
    for action in [
        "CreateKey",
        "DescribeKey",
        "Encrypt",
        "Decrypt",
        "RotateKey",
        "Rewrap",
        "GenerateDataKey",
        "Sign",
        "Verify",
        "GenerateMac",
        "VerifyMac",
        "GenerateRandom",
        "Hash",
        "ScheduleKeyDeletion",
        "DeleteAlias",
        "GetCallerIdentity",
    ] {
        assert!(
            vt.iter()
                .any(|r| r["action"] == action && r["decision"] == "allow" && r["outcome"] == "ok"),
            "no allowed {action} through the Transit front"
        );
    }
    assert!(
        vt.iter()
            .any(|r| r["action"] == "Encrypt" && r["decision"] == "deny"),
        "the member's denied encrypt is recorded"
    );
    assert!(
        vt.iter()
            .any(|r| r["action"] == "ScheduleKeyDeletion" && r["decision"] == "deny"),
        "the unapproved deletion is recorded as denied"
    );
    assert!(
        vt.iter().any(|r| r["outcome"] == "Unauthenticated"),
        "the invalid token is recorded"
    );
    // Requests the front refuses before any operation (a body that does not decode, a
    // setting keyplane does not have) are recorded too, under the endpoint's action.
    assert!(
        vt.iter().any(|r| r["action"] == "Encrypt"
            && r["decision"] == "not-evaluated"
            && r["outcome"] == "ValidationError"),
        "the non-base64 plaintext is recorded"
    );
    assert!(
        vt.iter()
            .any(|r| r["action"] == "RotateKey" && r["outcome"] == "Unsupported"),
        "the refused trim is recorded"
    );
    a.server.assert_audit_verifies();
}

/// The OpenBao CLI (`bao`: Go's Vault client, as the `vault` CLI is, so HTTP/2 and PUT) runs the
/// Transit workflow of Vault's documentation unchanged: `write -f` (a body of `null`) creates
/// and rotates a key, then `read`, `list`, `encrypt` and `decrypt`; settings given as the CLI
/// gives them (strings) are read as Vault reads them.
#[tokio::test(flavor = "multi_thread")]
async fn the_bao_cli_runs_the_transit_workflow() {
    let dir = tempfile::tempdir().unwrap();
    let a = acme(dir.path()).await;
    let s = &a.server;
    let bao = venv_bin("bao");
    let cli = |args: &[&str]| {
        let mut cmd = vault_client(&bao, s, &a.admin);
        cmd.env("BAO_ADDR", &s.base)
            .env("BAO_TOKEN", &a.admin)
            .env("BAO_CACERT", cert(s))
            .args(args);
        run(&mut cmd)
    };
    let json = |args: &[&str]| -> Value { serde_json::from_str(&cli(args)).unwrap() };
    // `status` (sys/seal-status, no token) answers an unsealed server of a version clients
    // can read (Terraform's provider parses it as semver).
    let status = json(&["status", "-format=json"]);
    assert_eq!(status["sealed"], false, "{status}");
    assert_eq!(status["initialized"], true, "{status}");
    assert!(
        status["version"].as_str().unwrap().contains("+keyplane."),
        "{status}"
    );
    // A setup script's first steps: the engine is enabled (already, as the one mount keyplane
    // has) and listed.
    cli(&["secrets", "enable", "transit"]);
    let mounts = json(&["secrets", "list", "-format=json"]);
    assert_eq!(mounts["transit/"]["type"], "transit", "{mounts}");
    cli(&["write", "-f", "transit/keys/cli"]);
    cli(&["write", "-f", "transit/keys/cli/rotate"]);
    let key = json(&["read", "-format=json", "transit/keys/cli"]);
    assert_eq!(key["data"]["latest_version"], 2, "{key}");
    assert_eq!(key["data"]["type"], "aes256-gcm96", "{key}");
    let names = json(&["list", "-format=json", "transit/keys"]);
    assert!(names.as_array().unwrap().contains(&json!("cli")), "{names}");
    let plaintext = STANDARD.encode("written by the bao CLI");
    let enc = json(&[
        "write",
        "-format=json",
        "transit/encrypt/cli",
        &format!("plaintext={plaintext}"),
    ]);
    let ciphertext = enc["data"]["ciphertext"].as_str().unwrap();
    assert!(ciphertext.starts_with("vault:v2:"), "{enc}");
    let dec = json(&[
        "write",
        "-format=json",
        "transit/decrypt/cli",
        &format!("ciphertext={ciphertext}"),
    ]);
    assert_eq!(dec["data"]["plaintext"], plaintext, "{dec}");

    // The CLI sends every key=value as a string; Vault reads booleans and integers from
    // strings, and so does the front.
    cli(&[
        "write",
        "transit/keys/signer",
        "type=ecdsa-p256",
        "exportable=true",
    ]);
    let signer = json(&["read", "-format=json", "transit/keys/signer"]);
    assert_eq!(signer["data"]["exportable"], true, "{signer}");
    cli(&[
        "write",
        "transit/keys/cli/config",
        "deletion_allowed=true",
        "min_decryption_version=2",
    ]);
    let key = json(&["read", "-format=json", "transit/keys/cli"]);
    assert_eq!(key["data"]["deletion_allowed"], true, "{key}");
    assert_eq!(key["data"]["min_decryption_version"], 2, "{key}");
    let data_key = json(&[
        "write",
        "-format=json",
        "transit/datakey/plaintext/cli",
        "bits=512",
    ]);
    let bytes = STANDARD
        .decode(data_key["data"]["plaintext"].as_str().unwrap())
        .unwrap();
    assert_eq!(bytes.len(), 64, "{data_key}");

    // A signing key reads as Vault shows it: ed25519 public keys as base64 of their 32 bytes;
    // a version below the minimum decryption version is not in `keys`, as Vault moves it to
    // its archive (it was listed, without its public key).
    cli(&["write", "transit/keys/ed", "type=ed25519"]);
    cli(&["write", "-f", "transit/keys/ed/rotate"]);
    cli(&[
        "write",
        "transit/keys/ed/config",
        "min_decryption_version=2",
    ]);
    let ed = json(&["read", "-format=json", "transit/keys/ed"]);
    let keys = &ed["data"]["keys"];
    assert_eq!(
        keys.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["2"],
        "{ed}"
    );
    let raw = STANDARD
        .decode(keys["2"]["public_key"].as_str().unwrap())
        .unwrap();
    let native = s
        .ok(
            &a.admin,
            "get-public-key",
            json!({ "key_id": ed["data"]["keyplane"]["key_id"], "format": "JWK" }),
        )
        .await;
    let x = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(native["jwk"]["x"].as_str().unwrap())
        .unwrap();
    assert_eq!((raw.len(), &raw), (32, &x), "{ed}");
}

/// An empty `context` is no context, as Vault reads it: the key an encryption creates for it
/// is not derived, and encrypts without one after. A failed encryption is audited once (the
/// pipeline records it; the front does not record it again).
#[tokio::test(flavor = "multi_thread")]
async fn an_empty_context_makes_a_plain_key_and_a_failure_is_audited_once() {
    let dir = tempfile::tempdir().unwrap();
    let a = acme(dir.path()).await;
    let s = &a.server;
    let path = "transit/encrypt/empty-context";
    let plaintext = STANDARD.encode("no context");
    for body in [
        json!({ "plaintext": plaintext, "context": "" }),
        json!({ "plaintext": plaintext }),
    ] {
        let (status, _, v) = transit(s, "POST", path, Some(&a.admin), Some(body)).await;
        assert_eq!(status, 200, "{v}");
    }
    let (_, _, key) = transit(s, "GET", "transit/keys/empty-context", Some(&a.admin), None).await;
    assert_eq!(key["data"]["derived"], false, "{key}");

    let (status, _, v) = transit(
        s,
        "POST",
        path,
        Some(&a.admin),
        Some(json!({ "plaintext": plaintext, "key_version": 7 })),
    )
    .await;
    assert_eq!(status, 400, "{v}");
    let refused = s
        .audit_records()
        .into_iter()
        .filter(|r| r["action"] == "Encrypt" && r["outcome"] == "Unsupported")
        .count();
    assert_eq!(refused, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn sops_and_every_front_share_transit_keys() {
    let dir = tempfile::tempdir().unwrap();
    let a = acme(dir.path()).await;
    let s = &a.server;

    // sops (Go's Vault client: HTTP/2, PUT) encrypts and decrypts a YAML file.
    let (status, _, _) = transit(
        s,
        "POST",
        "transit/keys/sops",
        Some(&a.admin),
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 200);
    let plain = dir.path().join("secrets.yaml");
    let original = "db:\n    user: app\n    password: hunter2\n";
    std::fs::write(&plain, original).unwrap();
    let sops = venv_bin("sops");
    let uri = format!("{}/v1/transit/keys/sops", s.base);
    let encrypted = run(vault_client(&sops, s, &a.admin)
        .args([
            "--disable-version-check",
            "encrypt",
            "--hc-vault-transit",
            &uri,
        ])
        .arg(&plain));
    assert!(!encrypted.contains("hunter2"), "{encrypted}");
    assert!(encrypted.contains("vault:v1:"), "{encrypted}");
    let sealed = dir.path().join("secrets.enc.yaml");
    std::fs::write(&sealed, &encrypted).unwrap();
    let decrypted = run(vault_client(&sops, s, &a.admin)
        .args(["--disable-version-check", "decrypt"])
        .arg(&sealed));
    assert_eq!(decrypted, original);

    // A Transit ciphertext is keyplane's: the native API decrypts it, with the context as
    // the encryption context entry vault:context.
    let ctx = STANDARD.encode("tenant-7");
    let (status, _, enc) = transit(
        s,
        "PUT",
        "transit/encrypt/sops",
        Some(&a.admin),
        Some(json!({ "plaintext": STANDARD.encode("cross-front"), "context": ctx })),
    )
    .await;
    assert_eq!(status, 200, "{enc}");
    let blob = blob_of(enc["data"]["ciphertext"].as_str().unwrap());
    let (status, v) = s
        .call(
            Some(&a.admin),
            "decrypt",
            json!({ "ciphertext_blob": blob, "encryption_context": { "vault:context": ctx } }),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(common::unb64(&v["plaintext"]), b"cross-front");
    let (status, v) = s
        .call(
            Some(&a.admin),
            "decrypt",
            json!({ "ciphertext_blob": blob }),
        )
        .await;
    assert_ne!(status, 200, "the context is bound: {v}");

    // A key made natively, with an alias, is a Transit key by the alias's name.
    let native = s
        .ok(
            &a.admin,
            "create-key",
            json!({ "alias": "alias/native-made" }),
        )
        .await;
    let native_id = native["key_id"].as_str().unwrap();
    let (status, _, read) =
        transit(s, "GET", "transit/keys/native-made", Some(&a.admin), None).await;
    assert_eq!(status, 200, "{read}");
    assert_eq!(read["data"]["type"], "aes256-gcm96");
    assert_eq!(read["data"]["keyplane"]["key_id"], native_id);
    let (status, _, enc) = transit(
        s,
        "POST",
        "transit/encrypt/native-made",
        Some(&a.admin),
        Some(json!({ "plaintext": STANDARD.encode("made natively") })),
    )
    .await;
    assert_eq!(status, 200, "{enc}");
    let ct = enc["data"]["ciphertext"].as_str().unwrap().to_string();
    let (status, v) = s
        .call(
            Some(&a.admin),
            "decrypt",
            json!({ "ciphertext_blob": blob_of(&ct) }),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(common::unb64(&v["plaintext"]), b"made natively");

    // A key made through the AWS front (boto3) is one too.
    let key = access_key(s, &a.admin).await;
    let out = run(client(&venv_bin("python"), s, &key).args([
        "-c",
        "import boto3\n\
         kms = boto3.client('kms')\n\
         k = kms.create_key(Description='from boto3')['KeyMetadata']['KeyId']\n\
         kms.create_alias(AliasName='alias/aws-made', TargetKeyId=k)\n\
         print(k)\n",
    ]));
    let aws_id = out.trim();
    let (status, _, enc) = transit(
        s,
        "POST",
        "transit/encrypt/aws-made",
        Some(&a.admin),
        Some(json!({ "plaintext": STANDARD.encode("made by boto3") })),
    )
    .await;
    assert_eq!(status, 200, "{enc}");
    let ct = enc["data"]["ciphertext"].as_str().unwrap();
    assert!(ct.starts_with("vault:v1:"), "{ct}");
    let (status, _, dec) = transit(
        s,
        "POST",
        "transit/decrypt/aws-made",
        Some(&a.admin),
        Some(json!({ "ciphertext": ct })),
    )
    .await;
    assert_eq!(status, 200, "{dec}");
    assert_eq!(common::unb64(&dec["data"]["plaintext"]), b"made by boto3");
    let (_, _, read) = transit(s, "GET", "transit/keys/aws-made", Some(&a.admin), None).await;
    assert_eq!(read["data"]["keyplane"]["key_id"], aws_id, "{read}");

    // Every Transit request was decided and recorded, naming the front; sops' too.
    let records = s.audit_records();
    let vt = |action: &str| {
        records
            .iter()
            .any(|r| r["front"] == "vault-transit" && r["action"] == action && r["outcome"] == "ok")
    };
    for action in ["CreateKey", "Encrypt", "Decrypt", "DescribeKey"] {
        assert!(vt(action), "no {action} through the Transit front");
    }
    assert!(records
        .iter()
        .any(|r| r["front"] == "aws-kms" && r["action"] == "CreateAlias"));
    s.assert_audit_verifies();
}

/// curl's answer to a Transit request over `version` (`--http1.1` or `--http2`): (status,
/// HTTP version, Content-Type, body).
fn curl(s: &Server, version: &str, args: &[&str]) -> (String, String, String, Value) {
    let port = s.base.rsplit(':').next().unwrap().to_string();
    let out = Command::new("curl")
        .args(["-sS", version, "--cacert"])
        .arg(cert(s))
        .args(["--resolve", &format!("localhost:{port}:127.0.0.1")])
        .args(args)
        .args(["-w", "\n%{http_code} %{http_version} %{content_type}"])
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "curl: {} {text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (body, meta) = text.rsplit_once('\n').unwrap();
    let mut meta = meta.splitn(3, ' ');
    let status = meta.next().unwrap().to_string();
    let version = meta.next().unwrap().to_string();
    let ctype = meta.next().unwrap_or_default().to_string();
    let v = serde_json::from_str(body).unwrap_or_else(|_| panic!("non-JSON body: {text}"));
    (status, version, ctype, v)
}

#[tokio::test(flavor = "multi_thread")]
async fn transit_answers_as_vault_does_over_http1_and_http2() {
    let dir = tempfile::tempdir().unwrap();
    let a = acme(dir.path()).await;
    let s = &a.server;
    let t = Some(a.admin.as_str());

    // No keys yet: LIST answers 404 with no errors named, as Vault does.
    let (status, ctype, v) = transit(s, "LIST", "transit/keys", t, None).await;
    assert_eq!((status, ctype.as_str()), (404, "application/json"), "{v}");
    assert_eq!(v["errors"], json!([]), "{v}");

    // PUT works as POST; the envelope has every member.
    let (status, ctype, v) = transit(s, "PUT", "transit/keys/wire", t, Some(json!({}))).await;
    assert_eq!((status, ctype.as_str()), (200, "application/json"), "{v}");
    for k in [
        "request_id",
        "lease_id",
        "renewable",
        "lease_duration",
        "data",
        "wrap_info",
        "warnings",
        "auth",
    ] {
        assert!(v.get(k).is_some(), "{k} missing: {v}");
    }
    assert!(!v["request_id"].as_str().unwrap().is_empty(), "{v}");
    assert_eq!(v["data"]["name"], "wire");
    let (status, _, _) = transit(s, "POST", "transit/keys/wire2", t, Some(json!({}))).await;
    assert_eq!(status, 200);

    // A batch_input far past the limit is refused whole (400), after decoding one item past
    // the limit only; a partial_failure_response_code that cannot carry a body is refused
    // before any item runs.
    let many: Vec<Value> = (0..20_000).map(|_| json!({})).collect();
    let (status, _, v) = transit(
        s,
        "POST",
        "transit/encrypt/wire",
        t,
        Some(json!({ "batch_input": many })),
    )
    .await;
    assert_eq!(status, 400, "{v}");
    assert!(
        v["errors"][0].as_str().unwrap().contains("1 to 1000"),
        "{v}"
    );
    for code in [101, 204, 600] {
        let (status, _, v) = transit(
            s,
            "POST",
            "transit/encrypt/wire",
            t,
            Some(json!({ "batch_input": [{ "plaintext": "AA==" }], "partial_failure_response_code": code })),
        )
        .await;
        assert_eq!(status, 400, "{code}: {v}");
        assert!(
            v["errors"][0]
                .as_str()
                .unwrap()
                .contains("partial_failure_response_code"),
            "{v}"
        );
    }
    // Items that name a version the key does not have are each that item's error (Vault:
    // "invalid version"), not the missing-key answer for the whole request.
    let (status, _, v) = transit(
        s,
        "POST",
        "transit/keys/wire-mac",
        t,
        Some(json!({ "type": "hmac" })),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let (status, _, v) = transit(
        s,
        "POST",
        "transit/verify/wire-mac",
        t,
        Some(json!({ "batch_input": [
            { "input": "AA==", "hmac": "vault:v9:AAAA", "reference": "a" },
            { "input": "AA==", "hmac": "vault:v7:AAAA", "reference": "b" },
        ] })),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let items = v["data"]["batch_results"]
        .as_array()
        .expect("per-item answers");
    assert_eq!(items.len(), 2, "{v}");
    for (item, reference) in items.iter().zip(["a", "b"]) {
        assert_eq!(item["reference"], reference, "{v}");
        assert_eq!(item["valid"], false, "{v}");
        assert!(item["error"].as_str().unwrap().contains("version"), "{v}");
    }
    // LIST and GET ?list=true both list; hvac's Client.list sends list=True (Vault reads the
    // value as Go's ParseBool does).
    for (method, path) in [
        ("LIST", "transit/keys"),
        ("GET", "transit/keys?list=true"),
        ("GET", "transit/keys?list=True"),
    ] {
        let (status, ctype, v) = transit(s, method, path, t, None).await;
        assert_eq!((status, ctype.as_str()), (200, "application/json"), "{v}");
        let mut keys: Vec<&str> = v["data"]["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k.as_str().unwrap())
            .collect();
        keys.sort();
        assert_eq!(keys, ["wire", "wire-mac", "wire2"], "{method} {path}");
    }
    // A GET without list=true is a read, not a list: `keys/` is only listed, so Vault
    // answers 405 "unsupported operation".
    let (status, _, v) = transit(s, "GET", "transit/keys", t, None).await;
    assert_eq!(status, 405, "{v}");

    // Errors: {"errors": [...]} with Vault's statuses, application/json.
    let cases: [Case; 9] = [
        (
            "POST",
            "transit/encrypt/wire",
            None,
            Some(json!({ "plaintext": "aGk=" })),
            403,
        ),
        (
            "POST",
            "transit/encrypt/wire",
            Some("bogus"),
            Some(json!({ "plaintext": "aGk=" })),
            403,
        ),
        (
            "POST",
            "transit/encrypt/wire",
            t,
            Some(json!({ "plaintext": "!!" })),
            400,
        ),
        ("GET", "transit/keys/absent", t, None, 404),
        (
            "POST",
            "transit/no-such-endpoint/wire",
            t,
            Some(json!({})),
            404,
        ),
        (
            "POST",
            "transit/export/encryption-key/wire",
            t,
            Some(json!({})),
            404,
        ),
        // A path served under another method: 405 "unsupported operation", as Vault.
        ("GET", "transit/encrypt/wire", t, None, 405),
        ("DELETE", "transit/keys/wire/rotate", t, None, 405),
        ("PATCH", "transit/keys/wire", t, Some(json!({})), 405),
    ];
    for (method, path, token, body, want) in cases {
        let (status, ctype, v) = transit(s, method, path, token, body).await;
        assert_eq!(status, want, "{method} {path}: {v}");
        assert_eq!(ctype, "application/json", "{method} {path}");
        let errors = v["errors"].as_array().unwrap_or_else(|| panic!("{v}"));
        assert!(errors.iter().all(Value::is_string), "{method} {path}: {v}");
    }

    // sys/health needs no token; lookup-self names the caller.
    let (status, ctype, v) = transit(s, "GET", "sys/health", None, None).await;
    assert_eq!((status, ctype.as_str()), (200, "application/json"), "{v}");
    assert_eq!(v["sealed"], false);
    assert_eq!(v["initialized"], true);
    let (status, _, v) = transit(s, "GET", "auth/token/lookup-self", t, None).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"]["meta"]["tenant"], "acme");
    assert_eq!(v["data"]["meta"]["role"], "admin");
    assert_eq!(v["data"]["display_name"], "token-alice");
    let (status, _, v) = transit(s, "GET", "auth/token/lookup-self", None, None).await;
    assert_eq!(status, 403, "{v}");
    // sys/health answers the codes asked for (Vault's Go client asks 299 for every state);
    // sys/init says initialized.
    let (status, _, v) = transit(
        s,
        "GET",
        "sys/health?activecode=299&standbyok=true",
        None,
        None,
    )
    .await;
    assert_eq!(status, 299, "{v}");
    assert_eq!(v["sealed"], false);
    let (status, _, v) = transit(s, "GET", "sys/health?sealedcode=x", None, None).await;
    assert_eq!(status, 400, "{v}");
    let (status, _, v) = transit(s, "GET", "sys/init", None, None).await;
    assert_eq!((status, &v), (200, &json!({ "initialized": true })));

    // The one Transit mount, as setup scripts and Terraform's vault_mount meet it: listed and
    // read; enabling it again is done (204); anything else, or disabling it, refused with why.
    let (status, _, v) = transit(s, "GET", "sys/mounts", t, None).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"]["transit/"]["type"], "transit", "{v}");
    let (status, _, v) = transit(s, "GET", "sys/mounts/transit", t, None).await;
    assert_eq!(
        (status, &v["data"]["type"]),
        (200, &json!("transit")),
        "{v}"
    );
    let enable = Some(json!({ "type": "transit" }));
    let (status, _, v) = transit(s, "POST", "sys/mounts/transit", t, enable.clone()).await;
    assert_eq!(status, 204, "{v}");
    for (method, path, body, needle) in [
        (
            "POST",
            "sys/mounts/other",
            enable.clone(),
            "one secrets engine",
        ),
        (
            "POST",
            "sys/mounts/transit",
            Some(json!({ "type": "kv" })),
            "already in use",
        ),
        ("DELETE", "sys/mounts/transit", None, "cannot be disabled"),
        ("GET", "sys/mounts/other", None, "one Transit mount"),
    ] {
        let (status, ctype, v) = transit(s, method, path, t, body).await;
        assert_eq!(
            (status, ctype.as_str()),
            (400, "application/json"),
            "{method} {path}: {v}"
        );
        assert!(
            v["errors"][0].as_str().unwrap().contains(needle),
            "{method} {path}: {v}"
        );
    }
    let (status, _, v) = transit(s, "DELETE", "sys/mounts/nothing-here", t, None).await;
    assert_eq!(status, 204, "{v}");
    let (status, _, v) = transit(s, "GET", "sys/mounts", None, None).await;
    assert_eq!(status, 403, "a token is needed: {v}");

    // Intact over HTTP/1.1 and HTTP/2 (Go clients), for answers and errors alike.
    let token = format!("X-Vault-Token: {}", a.admin);
    let encrypt = format!("{}/v1/transit/encrypt/wire", s.base);
    for (version, want) in [("--http1.1", "1.1"), ("--http2", "2")] {
        let (status, got, ctype, v) = curl(
            s,
            version,
            &[
                "-X",
                "PUT",
                "-H",
                &token,
                &encrypt,
                "-d",
                r#"{"plaintext":"aGVsbG8="}"#,
            ],
        );
        assert_eq!((status.as_str(), got.as_str()), ("200", want), "{v}");
        assert_eq!(ctype, "application/json");
        let ct = v["data"]["ciphertext"].as_str().unwrap().to_string();
        let (status, _, _, v) = curl(
            s,
            version,
            &[
                "-X",
                "POST",
                "-H",
                &token,
                &format!("{}/v1/transit/decrypt/wire", s.base),
                "-d",
                &json!({ "ciphertext": ct }).to_string(),
            ],
        );
        assert_eq!(status, "200", "{v}");
        assert_eq!(v["data"]["plaintext"], "aGVsbG8=");
        let (status, got, ctype, v) = curl(
            s,
            version,
            &[
                "-X",
                "LIST",
                "-H",
                &token,
                &format!("{}/v1/transit/keys", s.base),
            ],
        );
        assert_eq!((status.as_str(), got.as_str()), ("200", want), "{v}");
        assert_eq!(ctype, "application/json");
        assert_eq!(v["data"]["keys"].as_array().unwrap().len(), 3);
        // Refused before the body is read: still answered whole.
        let (status, got, ctype, v) = curl(
            s,
            version,
            &["-X", "POST", &encrypt, "-d", r#"{"plaintext":"aGk="}"#],
        );
        assert_eq!((status.as_str(), got.as_str()), ("403", want), "{v}");
        assert_eq!(ctype, "application/json");
        assert!(v["errors"].is_array(), "{v}");
        let (status, _, _, v) = curl(s, version, &[&format!("{}/v1/sys/health", s.base)]);
        assert_eq!(status, "200");
        assert_eq!(v["sealed"], false);
    }
    // A Vault name with a '.' (keyplane's aliases take it) encrypts and reads back.
    let (status, _, v) = transit(
        s,
        "POST",
        "transit/encrypt/app.prod",
        t,
        Some(json!({ "plaintext": "aGk=" })),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let (status, _, v) = transit(s, "GET", "transit/keys/app.prod", t, None).await;
    assert_eq!(
        (status, &v["data"]["name"]),
        (200, &json!("app.prod")),
        "{v}"
    );
}

/// `auto_rotate_period` at create is part of the create: refused by Cedar (EnableKeyRotation
/// on the new key), it leaves no key and no name behind; allowed, the key is made with its
/// schedule.
#[tokio::test(flavor = "multi_thread")]
async fn a_refused_rotation_schedule_leaves_no_key_behind() {
    let dir = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let policies = common::copy_of_shipped_policies(&work.path().join("policies"));
    std::fs::write(
        policies.join("no-scheduled-rotation.cedar"),
        r#"@id("no-scheduled-rotation")
@description("Keys of this tenant rotate by hand only.")
forbid (principal, action == Keyplane::Action::"EnableKeyRotation", resource);
"#,
    )
    .unwrap();
    let s = Server::start_with_policies(dir.path(), &policies).await;
    let admin = s
        .tenant_with("acme", ACCOUNT, &[("alice", "admin")])
        .await
        .remove(0);
    let path = "transit/keys/scheduled";
    let (status, _, v) = transit(
        &s,
        "POST",
        path,
        Some(&admin),
        Some(json!({ "auto_rotate_period": "720h" })),
    )
    .await;
    assert_eq!(status, 403, "{v}");
    let (status, _, v) = transit(&s, "GET", path, Some(&admin), None).await;
    assert_eq!(status, 404, "no key is left under the name: {v}");
    let keys = s.ok(&admin, "list-keys", json!({})).await;
    assert_eq!(keys["keys"], json!([]), "no key is left at all: {keys}");
    let refused: Vec<Value> = s
        .audit_records()
        .into_iter()
        .filter(|r| r["action"] == "CreateKey" && r["decision"] == "deny")
        .collect();
    assert_eq!(refused.len(), 1, "the refusal is audited: {refused:?}");

    // Without the schedule the same name is made; with shipped policies the schedule too.
    let (status, _, v) = transit(&s, "POST", path, Some(&admin), Some(json!({}))).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"]["auto_rotate_period"], 0, "{v}");
    let dir2 = tempfile::tempdir().unwrap();
    let a = acme(dir2.path()).await;
    let (status, _, v) = transit(
        &a.server,
        "POST",
        path,
        Some(&a.admin),
        Some(json!({ "auto_rotate_period": "720h" })),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"]["auto_rotate_period"], 30 * 86_400, "{v}");
}

/// `keys/<name>/config` as Vault's: every setting is checked before any is written (a bad
/// period leaves `deletion_allowed` as it was), and writing the same period again (as
/// Terraform does with every apply) leaves the next rotation where it was.
#[tokio::test(flavor = "multi_thread")]
async fn config_checks_everything_first_and_rewrites_nothing_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let a = acme(dir.path()).await;
    let s = &a.server;
    let t = Some(a.admin.as_str());
    let (status, _, v) = transit(s, "POST", "transit/keys/cfg", t, Some(json!({}))).await;
    assert_eq!(status, 200, "{v}");
    let key_id = v["data"]["keyplane"]["key_id"]
        .as_str()
        .unwrap()
        .to_string();

    let bad = json!({ "deletion_allowed": true, "auto_rotate_period": "1h" });
    let (status, _, v) = transit(s, "POST", "transit/keys/cfg/config", t, Some(bad)).await;
    assert_eq!(status, 400, "{v}");
    let (_, _, v) = transit(s, "GET", "transit/keys/cfg", t, None).await;
    assert_eq!(v["data"]["deletion_allowed"], false, "nothing written: {v}");
    // A well-formed period the key cannot take (it is disabled): nothing written either.
    s.ok(&a.admin, "disable-key", json!({ "key_id": key_id }))
        .await;
    let refused = json!({ "deletion_allowed": true, "auto_rotate_period": "720h" });
    let (status, _, v) = transit(s, "POST", "transit/keys/cfg/config", t, Some(refused)).await;
    assert_eq!(status, 400, "{v}");
    s.ok(&a.admin, "enable-key", json!({ "key_id": key_id }))
        .await;
    let (_, _, v) = transit(s, "GET", "transit/keys/cfg", t, None).await;
    assert_eq!(v["data"]["deletion_allowed"], false, "nothing written: {v}");
    assert_eq!(v["data"]["auto_rotate_period"], 0, "{v}");

    let period = json!({ "auto_rotate_period": "720h" });
    let next = || async {
        s.ok(
            &a.admin,
            "get-key-rotation-status",
            json!({ "key_id": key_id }),
        )
        .await["next_rotation_at"]
            .clone()
    };
    let (status, _, v) = transit(
        s,
        "POST",
        "transit/keys/cfg/config",
        t,
        Some(period.clone()),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let first = next().await;
    assert!(first.is_string(), "{first}");
    s.advance_clock(86_400).await;
    let (status, _, v) = transit(s, "POST", "transit/keys/cfg/config", t, Some(period)).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(next().await, first, "the same period again moves nothing");
}

/// Reading a key takes what reading it needs, and a write that took effect is never answered
/// as refused. A caller who may create or rotate a key but not read it got 403 after the
/// write (a client retries a rotation it was told was refused): now the key as it may read
/// it, else 204 as Vault before 1.12. A caller who may not read public keys reads the rest,
/// with one refusal a read (not one a version). A key's users, who may describe it, could
/// not read it through Transit (its versions were not theirs to list).
#[tokio::test(flavor = "multi_thread")]
async fn a_key_read_takes_no_more_than_reading_and_a_write_that_took_effect_is_not_refused() {
    let dir = tempfile::tempdir().unwrap();
    let policies = common::copy_of_shipped_policies(&dir.path().join("policies"));
    std::fs::write(
        policies.join("unread.cedar"),
        r#"@id("no-public-keys-of-p256")
@description("test: nobody reads the public keys of P-256 keys")
forbid (principal, action == Keyplane::Action::"GetPublicKey", resource)
when { resource.spec == "ECC_NIST_P256" };
@id("no-reading-p384")
@description("test: nobody reads the versions or public keys of P-384 keys")
forbid (principal, action in [Keyplane::Action::"GetPublicKey", Keyplane::Action::"ListKeyVersions"], resource)
when { resource.spec == "ECC_NIST_P384" };
@id("no-describing-rsa-3072")
@description("test: nobody describes RSA-3072 keys (and so is told there are none)")
forbid (principal, action == Keyplane::Action::"DescribeKey", resource)
when { resource.spec == "RSA_3072" };
"#,
    )
    .unwrap();
    let server = Server::start_with_policies(&dir.path().join("node"), &policies).await;
    let tokens = server
        .tenant_with("acme", ACCOUNT, &[("alice", "admin"), ("bob", "member")])
        .await;
    let (s, admin, member) = (&server, Some(tokens[0].as_str()), &tokens[1]);
    let create = |name: &'static str, kind: &'static str| async move {
        let body = Some(json!({ "type": kind }));
        transit(s, "POST", &format!("transit/keys/{name}"), admin, body).await
    };

    let (status, _, v) = create("p256", "ecdsa-p256").await;
    assert_eq!(status, 200, "{v}");
    let (status, _, v) = transit(s, "POST", "transit/keys/p256/rotate", admin, None).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"]["latest_version"], 2, "{v}");
    assert_eq!(v["data"]["keys"]["2"]["public_key"], "", "{v}");
    assert!(v["warnings"].to_string().contains("public key"), "{v}");
    let refusals = s
        .audit_records()
        .into_iter()
        .filter(|r| r["action"] == "GetPublicKey" && r["decision"] == "deny")
        .count();
    assert_eq!(refusals, 2, "one refusal a read, not one a version");

    let (status, _, v) = create("p384", "ecdsa-p384").await;
    assert_eq!(status, 204, "{v}");
    let (status, _, v) = transit(s, "POST", "transit/keys/p384/rotate", admin, None).await;
    assert_eq!(status, 204, "{v}");
    let d = s
        .ok(
            &tokens[0],
            "describe-key",
            json!({ "key_id": "alias/p384" }),
        )
        .await;
    assert_eq!(d["primary_version"], 2, "rotated once: {d}");
    let (status, _, v) = create("rsa", "rsa-3072").await;
    assert_eq!(status, 204, "{v}");
    let (status, _, v) = transit(s, "POST", "transit/keys/rsa/rotate", admin, None).await;
    assert_eq!(status, 204, "{v}");

    // A key user reads the key it is granted, public keys and all.
    let bob = s.principal_id(member).await;
    let key = s
        .ok(
            &tokens[0],
            "create-key",
            json!({ "key_spec": "RSA_2048", "key_usage": "sign-verify", "grants": [bob] }),
        )
        .await["key_id"]
        .as_str()
        .unwrap()
        .to_string();
    s.ok(
        &tokens[0],
        "create-alias",
        json!({ "alias_name": "alias/granted", "target_key_id": key }),
    )
    .await;
    let (status, _, v) = transit(s, "GET", "transit/keys/granted", Some(member), None).await;
    assert_eq!(status, 200, "{v}");
    assert!(
        v["data"]["keys"]["1"]["public_key"]
            .as_str()
            .unwrap()
            .starts_with("-----BEGIN PUBLIC KEY-----"),
        "{v}"
    );
}

/// What a Transit client asks that keyplane cannot give is refused, never silently given
/// otherwise: a wrapped answer (X-Vault-Wrap-TTL) came back in the clear, to the caller who
/// asked not to see it; an encrypt asking for a convergent key made a randomized one; a bad
/// partial_failure_response_code was refused after the key was created. And a batch needs
/// no more than the single request: a caller with a grant to encrypt under a key it may
/// not describe encrypts a batch under it (the probe for Transit's upsert was refused).
#[tokio::test(flavor = "multi_thread")]
async fn what_keyplane_cannot_give_is_refused_and_a_batch_needs_what_a_single_request_does() {
    let dir = tempfile::tempdir().unwrap();
    let a = acme(dir.path()).await;
    let s = &a.server;
    let admin = Some(a.admin.as_str());
    let (status, _, v) = transit(s, "POST", "transit/keys/k", admin, Some(json!({}))).await;
    assert_eq!(status, 200, "{v}");

    let wrapped = s
        .client
        .post(format!("{}/v1/transit/datakey/plaintext/k", s.base))
        .header("X-Vault-Token", &a.admin)
        .header("X-Vault-Wrap-TTL", "60s")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(wrapped.status().as_u16(), 400);
    let text = wrapped.text().await.unwrap();
    assert!(text.contains("X-Vault-Wrap-TTL"), "{text}");
    assert!(!text.contains("plaintext"), "{text}");

    let convergent =
        json!({ "plaintext": "aGk=", "context": "Y3R4", "convergent_encryption": true });
    let (status, _, v) = transit(s, "POST", "transit/encrypt/conv", admin, Some(convergent)).await;
    assert_eq!(status, 400, "{v}");
    let bad_code =
        json!({ "batch_input": [{ "plaintext": "aGk=" }], "partial_failure_response_code": 0 });
    let (status, _, v) = transit(s, "POST", "transit/encrypt/coded", admin, Some(bad_code)).await;
    assert_eq!(status, 400, "{v}");
    for name in ["conv", "coded"] {
        let (status, _, v) = transit(s, "GET", &format!("transit/keys/{name}"), admin, None).await;
        assert_eq!(status, 404, "no key {name} was made: {v}");
    }

    let key_id = s
        .ok(&a.admin, "describe-key", json!({ "key_id": "alias/k" }))
        .await["key_id"]
        .as_str()
        .unwrap()
        .to_string();
    let bob = s.principal_id(&a.member).await;
    s.ok(
        &a.admin,
        "create-grant",
        json!({ "key_id": key_id, "grantee_principal": bob, "operations": ["Encrypt"] }),
    )
    .await;
    let member = Some(a.member.as_str());
    let one = json!({ "plaintext": "aGk=" });
    let (status, _, v) = transit(s, "POST", "transit/encrypt/k", member, Some(one)).await;
    assert_eq!(status, 200, "{v}");
    let batch = json!({ "batch_input": [{ "plaintext": "aGk=" }, { "plaintext": "aG8=" }] });
    let (status, _, v) = transit(s, "POST", "transit/encrypt/k", member, Some(batch)).await;
    assert_eq!(status, 200, "{v}");
    let results = v["data"]["batch_results"].as_array().unwrap();
    assert_eq!(results.len(), 2, "{v}");
    assert!(
        results.iter().all(|r| r["ciphertext"]
            .as_str()
            .is_some_and(|c| c.starts_with("vault:v1:"))),
        "{v}"
    );
    // A `type` that cannot encrypt is ignored for a key that exists, though this caller may
    // not see that it does (it was refused up front, for the upsert it would need).
    let typed = json!({ "batch_input": [{ "plaintext": "aGk=" }], "type": "ed25519" });
    let (status, _, v) = transit(s, "POST", "transit/encrypt/k", member, Some(typed)).await;
    assert_eq!(status, 200, "{v}");
    // Under a name with no key, the same caller gets "not found", as before.
    let batch = json!({ "batch_input": [{ "plaintext": "aGk=" }] });
    let (status, _, v) = transit(s, "POST", "transit/encrypt/none", member, Some(batch)).await;
    assert_eq!(status, 400, "{v}");
}

/// `keys/<name>/config` is one keyplane operation (`configure-key`): each setting it changes
/// is decided by its own Cedar action too, and a refusal of any leaves every other unwritten
/// (it used to be one operation per setting, and a refused last one left the first written).
#[tokio::test(flavor = "multi_thread")]
async fn config_is_all_or_nothing_under_cedar() {
    let dir = tempfile::tempdir().unwrap();
    let policies = common::copy_of_shipped_policies(&dir.path().join("policies"));
    std::fs::write(
        policies.join("keep-protection.cedar"),
        r#"@id("deletion-protection-stays-on")
@description("Nobody changes deletion protection.")
forbid (principal, action == Keyplane::Action::"SetDeletionProtection", resource);
"#,
    )
    .unwrap();
    let server = Server::start_with_policies(&dir.path().join("node"), &policies).await;
    let admin = server
        .tenant_with("acme", ACCOUNT, &[("alice", "admin")])
        .await[0]
        .clone();
    let s = &server;
    let t = Some(admin.as_str());
    let (status, _, v) = transit(s, "POST", "transit/keys/cfg", t, Some(json!({}))).await;
    assert_eq!(status, 200, "{v}");
    let (status, _, v) = transit(s, "POST", "transit/keys/cfg/rotate", t, None).await;
    assert_eq!(status, 200, "{v}");

    let both = json!({ "min_decryption_version": 2, "auto_rotate_period": "720h", "deletion_allowed": true });
    let (status, _, v) = transit(s, "POST", "transit/keys/cfg/config", t, Some(both)).await;
    assert_eq!(status, 403, "{v}");
    let (_, _, v) = transit(s, "GET", "transit/keys/cfg", t, None).await;
    assert_eq!(
        v["data"]["min_decryption_version"], 1,
        "nothing written: {v}"
    );
    assert_eq!(v["data"]["auto_rotate_period"], 0, "nothing written: {v}");
    assert_eq!(v["data"]["deletion_allowed"], false, "{v}");
    let denied: Vec<Value> = s
        .audit_records()
        .into_iter()
        .filter(|r| r["action"] == "ConfigureKey")
        .collect();
    assert_eq!(denied.len(), 1, "{denied:?}");
    assert_eq!(denied[0]["decision"], "deny", "{denied:?}");
    assert_eq!(denied[0]["front"], "vault-transit", "{denied:?}");
    assert!(
        denied[0]["policies"]
            .as_array()
            .is_some_and(|p| p.iter().any(|p| p == "deletion-protection-stays-on")),
        "{denied:?}"
    );
    // The refused setting has a record of its own action; the others none (nothing written).
    let of = |action: &str| -> Vec<(String, String)> {
        s.audit_records()
            .into_iter()
            .filter(|r| r["action"] == action)
            .map(|r| {
                (
                    r["decision"].as_str().unwrap().to_string(),
                    r["request_id"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let request = denied[0]["request_id"].as_str().unwrap().to_string();
    assert_eq!(of("SetDeletionProtection"), [("deny".to_string(), request)]);
    assert!(of("EnableKeyRotation").is_empty());
    assert!(of("SetMinDecryptionVersion").is_empty());

    // Without the refused setting, the rest goes through together; a setting equal to the
    // key's (deletion_allowed false) is neither decided nor written.
    let rest = json!({ "min_decryption_version": 2, "auto_rotate_period": "720h", "deletion_allowed": false });
    let (status, _, v) = transit(s, "POST", "transit/keys/cfg/config", t, Some(rest)).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"]["min_decryption_version"], 2, "{v}");
    assert_eq!(v["data"]["auto_rotate_period"], 30 * 86_400, "{v}");
    // Each setting changed is recorded under its own action too, with the request's id.
    for action in ["EnableKeyRotation", "SetMinDecryptionVersion"] {
        let records = of(action);
        assert_eq!(records.len(), 1, "{action}: {records:?}");
        assert_eq!(records[0].0, "allow", "{action}");
    }
    assert_eq!(
        of("SetDeletionProtection").len(),
        1,
        "unchanged: not decided again"
    );
    // The native operation says what it changed.
    let key_id = v["data"]["keyplane"]["key_id"]
        .as_str()
        .unwrap()
        .to_string();
    let out = s
        .ok(
            &admin,
            "configure-key",
            json!({ "key_id": key_id, "rotation_period_days": 0, "min_decryption_version": 2 }),
        )
        .await;
    assert_eq!(out["changed"], json!(["DisableKeyRotation"]), "{out}");
    assert!(out.get("rotation_period_days").is_none(), "{out}");
    assert_eq!(out["min_decryption_version"], 2, "{out}");
    s.assert_audit_verifies();
}

/// A body at the batch limit (8 MiB) that is one unknown field holding four million numbers
/// costs the node no more than the body itself: unknown fields are skipped unread. (Decoded
/// with `#[serde(flatten)]`, each such field was kept in memory whole, about 32 bytes a
/// number: over 128 MiB a request.) Checked by the node's peak resident memory, on every
/// endpoint that batches and on a duration and a salt length that could hold any JSON.
#[tokio::test(flavor = "multi_thread")]
async fn unknown_fields_and_odd_values_cost_no_memory() {
    let dir = tempfile::tempdir().unwrap();
    let a = acme(dir.path()).await;
    let s = &a.server;
    let t = Some(a.admin.as_str());
    let (status, _, v) = transit(s, "POST", "transit/keys/mem", t, Some(json!({}))).await;
    assert_eq!(status, 200, "{v}");
    let numbers = "0,".repeat(4_000_000);
    let before = common::peak_kib(s.pid());
    for (path, field) in [
        ("transit/decrypt/mem", "x"),
        ("transit/encrypt/mem", "x"),
        ("transit/rewrap/mem", "x"),
        ("transit/sign/mem", "x"),
        ("transit/hmac/mem", "x"),
        ("transit/verify/mem", "salt_length"),
        ("transit/encrypt/mem", "key_version"),
    ] {
        let body = format!("{{\"{field}\":[{numbers}0]}}");
        let r = s
            .client
            .post(format!("{}/v1/{path}", s.base))
            .header("X-Vault-Token", &a.admin)
            .body(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        assert!((400..500).contains(&status), "{path} {field}: {status}");
    }
    let grown = common::peak_kib(s.pid()).saturating_sub(before);
    assert!(grown < 64 * 1024, "peak memory grew by {grown} KiB");
}

/// `bao login <token>` (as `vault login`) looks the token up (`auth/token/lookup-self`) and
/// stores the `id` it is answered in its token helper (`~/.vault-token`), which later
/// commands use. The front answered `id: ""`: the login stored nothing usable and every later
/// command was unauthenticated. The caller's own token is answered now, to it alone: the node's
/// log (every level of keyplane's own), the audit log and the data directory never hold it.
#[tokio::test(flavor = "multi_thread")]
async fn bao_login_stores_the_token_and_later_commands_use_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with_env(dir.path(), &[("RUST_LOG", "keyplane=trace")]).await;
    let tokens = server
        .tenant_with("acme", ACCOUNT, &[("alice", "admin"), ("bob", "member")])
        .await;
    let (s, admin, member) = (&server, &tokens[0], &tokens[1]);
    let (status, _, v) = transit(s, "POST", "transit/keys/logged", Some(admin), None).await;
    assert_eq!(status, 200, "{v}");

    // The answer holds the token it was asked with, however it was presented.
    let (status, _, v) = transit(s, "GET", "auth/token/lookup-self", Some(admin), None).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"]["id"], admin.as_str(), "{v}");
    let r = s
        .client
        .post(format!("{}/v1/auth/token/lookup-self", s.base))
        .header("Authorization", format!("Bearer {member}"))
        .send()
        .await
        .unwrap();
    // No cache may keep it (the token travels in X-Vault-Token, which a shared cache does not
    // take for an authenticated request, so a GET's answer could be served to another).
    assert_eq!(r.headers()["cache-control"], "no-store");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["data"]["id"], member.as_str(), "{v}");
    let (status, _, v) = transit(s, "GET", "auth/token/lookup-self", Some("kp_wrong"), None).await;
    assert_eq!(status, 403, "{v}");
    assert!(!v.to_string().contains("kp_wrong"), "{v}");

    // A home of its own (not the node's data directory), and no token in the environment:
    // what the later command uses is what the login stored.
    let home = tempfile::tempdir().unwrap();
    let bao = |args: &[&str]| {
        let mut cmd = Command::new(venv_bin("bao"));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", home.path())
            .env("BAO_ADDR", &s.base)
            .env("BAO_CACERT", cert(s))
            .args(args);
        cmd
    };
    let before = bao(&["read", "-format=json", "transit/keys/logged"])
        .output()
        .unwrap();
    assert!(!before.status.success(), "no token yet: {before:?}");
    run(&mut bao(&["login", "-no-print", admin]));
    let stored = std::fs::read_to_string(home.path().join(".vault-token")).unwrap();
    assert_eq!(stored.trim(), admin.as_str());
    let key: Value = serde_json::from_str(&run(&mut bao(&[
        "read",
        "-format=json",
        "transit/keys/logged",
    ])))
    .unwrap();
    assert_eq!(key["data"]["name"], "logged", "{key}");
    let looked_up: Value =
        serde_json::from_str(&run(&mut bao(&["token", "lookup", "-format=json"]))).unwrap();
    assert_eq!(looked_up["data"]["meta"]["role"], "admin", "{looked_up}");

    // Answered, and nowhere else.
    let lines: Vec<String> = s.log.lock().unwrap().try_iter().collect();
    assert!(lines.len() > 1, "the node logged: {lines:?}");
    for token in [admin, member] {
        assert!(
            !lines.iter().any(|l| l.contains(token.as_str())),
            "a token was logged"
        );
        let records = s.audit_records();
        assert!(
            !records
                .iter()
                .any(|r| r.to_string().contains(token.as_str())),
            "a token is in the audit log"
        );
        common::assert_absent_under(&s.data_dir, "a bearer token", token.as_bytes());
    }
    s.assert_audit_verifies();
}

/// Runs one section of `tests/transit/hvac_compat.py` (hvac) against a node with a tenant
/// admin's token; panics with what it printed unless every check of the section passed.
async fn hvac_compat(section: &str) {
    let dir = tempfile::tempdir().unwrap();
    let a = acme(dir.path()).await;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/transit/hvac_compat.py");
    let out = run(vault_client(&venv_bin("python"), &a.server, &a.admin)
        .arg(script)
        .arg(section));
    assert!(
        out.contains(&format!("all {section} checks passed")),
        "{out}"
    );
    a.server.assert_audit_verifies();
}

/// An encrypt under a name with no key creates one (Transit's upsert) only of a type that
/// encrypts, as Vault's `path_encrypt.go`: a signing or HMAC key was made and the encryption
/// then refused, leaving a key under the name.
#[tokio::test(flavor = "multi_thread")]
async fn an_encrypt_creates_only_a_key_that_encrypts() {
    hvac_compat("upsert").await;
}

/// What Vault's `path_sign_verify.go` accepts and keyplane's `sign` can do: `salt_length`
/// as a number or in any case, ignored where there is no PSS salt; empty algorithms as the
/// default; an HMAC verify reading `hash_algorithm` first.
#[tokio::test(flavor = "multi_thread")]
async fn signing_takes_what_vault_takes() {
    hvac_compat("signing").await;
}

/// `hash` takes the 1 MiB `ops::hash` allows: its body was held to the 64 KiB of other
/// endpoints, so inputs from about 48 KiB got 413.
#[tokio::test(flavor = "multi_thread")]
async fn hash_takes_what_its_operation_allows() {
    hvac_compat("hash").await;
}

/// A key read has the fields Vault's `formatKeyPolicy` writes for the key: `certificate_chain`
/// in each version of a signing key, no `keys` for an HMAC key, `convergent_encryption` only
/// for a derived key.
#[tokio::test(flavor = "multi_thread")]
async fn a_key_read_has_vaults_fields() {
    hvac_compat("key-read").await;
}

/// A delete that may schedule the key's deletion but not free its name is refused with
/// nothing done: before, the deletion was scheduled first and the refusal of the name's
/// removal answered after it, so the caller was told 403 of a key already on its way to
/// crypto-shredding.
#[tokio::test(flavor = "multi_thread")]
async fn a_delete_refused_its_name_schedules_no_deletion() {
    let dir = tempfile::tempdir().unwrap();
    let policies = common::copy_of_shipped_policies(&dir.path().join("policies"));
    std::fs::write(
        policies.join("names-stay.cedar"),
        r#"@id("names-stay")
@description("Nobody removes an alias.")
forbid (principal, action == Keyplane::Action::"DeleteAlias", resource);
"#,
    )
    .unwrap();
    let server = Server::start_with_policies(&dir.path().join("node"), &policies).await;
    let tokens = server
        .tenant_with("acme", ACCOUNT, &[("alice", "admin"), ("adam", "admin")])
        .await;
    let (s, t) = (&server, Some(tokens[0].as_str()));
    let (status, _, v) = transit(s, "POST", "transit/keys/doomed", t, Some(json!({}))).await;
    assert_eq!(status, 200, "{v}");
    let allowed = json!({ "deletion_allowed": true });
    let (status, _, v) = transit(s, "POST", "transit/keys/doomed/config", t, Some(allowed)).await;
    assert_eq!(status, 200, "{v}");
    let key = s
        .ok(
            &tokens[0],
            "describe-key",
            json!({ "key_id": "alias/doomed" }),
        )
        .await;
    let key_id = key["key_id"].as_str().unwrap().to_string();
    // The shipped deletion guard wants a second admin's approval: given, so that only the
    // name's removal is refused.
    let requester = s.principal_id(&tokens[0]).await;
    s.ok(
        &tokens[1],
        "approve-key-deletion",
        json!({ "key_id": key_id, "requester": requester }),
    )
    .await;
    let (status, _, v) = transit(s, "DELETE", "transit/keys/doomed", t, None).await;
    assert_eq!(status, 403, "{v}");
    let key = s
        .ok(&tokens[0], "describe-key", json!({ "key_id": key_id }))
        .await;
    assert_eq!(key["state"], "enabled", "{key}");
    let (status, _, v) = transit(
        s,
        "POST",
        "transit/encrypt/doomed",
        t,
        Some(json!({ "plaintext": "aGk=" })),
    )
    .await;
    assert_eq!(status, 200, "{v}");
}
