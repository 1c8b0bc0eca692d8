//! Bring your own key and key export against the real binary and SoftHSM2 token, with the
//! `openssl` CLI on the other side of every wrapping: it wraps material for import and
//! unwraps exported material, and the unwrapped material opens keyplane ciphertexts offline.

// Without the test hooks the tests that need them are left out, and some helpers with them.
#![cfg_attr(
    not(all(feature = "test-hooks", debug_assertions)),
    allow(dead_code, unused_imports)
)]

mod common;

use std::path::Path;
use std::process::Command;

use common::{assert_error, b64, succeeds, unb64, Server};
use keyplane::crypto::ciphertext::{Algorithm, Ciphertext};
use keyplane::crypto::context::{canonical, EncryptionContext};
use ring::aead::{
    Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM, AES_256_GCM, CHACHA20_POLY1305,
};
use serde_json::{json, Value};

fn openssl(args: &[&str]) -> Vec<u8> {
    succeeds(Command::new("openssl").args(args))
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p.to_string_lossy().into_owned()
}

/// RSA-OAEP (SHA-1) encryption of `data` to a PEM public key, by openssl.
fn oaep_encrypt(dir: &Path, public_pem: &str, data: &[u8]) -> Vec<u8> {
    let pk = write(dir, "wrap-pub.pem", public_pem.as_bytes());
    let input = write(dir, "oaep-in.bin", data);
    openssl(&[
        "pkeyutl",
        "-encrypt",
        "-pubin",
        "-inkey",
        &pk,
        "-pkeyopt",
        "rsa_padding_mode:oaep",
        "-pkeyopt",
        "rsa_oaep_md:sha1",
        "-in",
        &input,
    ])
}

/// `RSA_AES_KEY_WRAP_SHA_1`: OAEP(ephemeral AES key) ‖ AES-KWP(ephemeral, material).
fn rsa_aes_wrap(dir: &Path, public_pem: &str, material: &[u8]) -> Vec<u8> {
    let eph = openssl(&["rand", "32"]);
    let mut out = oaep_encrypt(dir, public_pem, &eph);
    let input = write(dir, "kwp-in.bin", material);
    out.extend(openssl(&[
        "enc",
        "-id-aes256-wrap-pad",
        "-K",
        &hex(&eph),
        "-iv",
        "A65959A6",
        "-in",
        &input,
    ]));
    out
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Open a keyplane ciphertext outside keyplane with its key's raw material, by the algorithm
/// its header names.
#[cfg(all(feature = "test-hooks", debug_assertions))]
fn open_offline(material: &[u8], blob: &[u8], ctx: &EncryptionContext) -> Vec<u8> {
    let ct = Ciphertext::parse(blob).unwrap();
    let mut aad = ct.header();
    aad.extend(canonical(ctx));
    let algorithm = match ct.algorithm {
        Algorithm::Aes256Gcm => &AES_256_GCM,
        Algorithm::Aes128Gcm => &AES_128_GCM,
        Algorithm::ChaCha20Poly1305 => &CHACHA20_POLY1305,
    };
    let key = LessSafeKey::new(UnboundKey::new(algorithm, material).unwrap());
    let mut nonce = [0u8; 12];
    nonce.copy_from_slice(&ct.nonce);
    let mut buf = ct.sealed.clone();
    key.open_in_place(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(aad),
        &mut buf,
    )
    .expect("the exported material opens keyplane's ciphertext")
    .to_vec()
}

async fn params(s: &Server, key: &str, algorithm: &str) -> Value {
    s.ok(
        &s.admin,
        "get-parameters-for-import",
        json!({ "key_id": key, "wrapping_algorithm": algorithm, "wrapping_key_spec": "RSA_2048" }),
    )
    .await
}

/// A new key of origin `external` (waiting for its material), made by the admin with the
/// other `create-key` fields `fields`; its id.
async fn external_key(s: &Server, mut fields: Value) -> String {
    fields["origin"] = json!("external");
    s.create_key_with(&s.admin, fields).await
}

/// A new `hsm` key of origin `external`; its id.
async fn external_hsm_key(s: &Server) -> String {
    external_key(s, json!({ "protection": "hsm" })).await
}

/// A key holds at most 8 import tokens, each an RSA key pair in the HSM for a day: a ninth
/// replaces the oldest, whose wrapping key is destroyed and which is then answered as
/// expired; the newest imports. Before, every call left one more key pair in the token every
/// tenant shares, for a day.
#[tokio::test(flavor = "multi_thread")]
async fn a_key_holds_its_newest_eight_import_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let s = Server::start_quiet(dir.path()).await;
    let key = external_key(&s, json!({})).await;
    let mut issued = Vec::new();
    for _ in 0..10 {
        issued.push(params(&s, &key, "RSAES_OAEP_SHA_1").await);
    }
    let token = |p: &Value| p["import_token"].as_str().unwrap().to_string();
    let labels = common::token_labels(dir.path(), Some("privkey"));
    let held: Vec<bool> = issued
        .iter()
        .map(|p| labels.iter().any(|l| l.contains(&token(p))))
        .collect();
    assert_eq!(held, [vec![false; 2], vec![true; 8]].concat(), "{labels:?}");
    let material = openssl(&["rand", "32"]);
    let wrapped_for = |p: &Value| {
        oaep_encrypt(
            work.path(),
            p["public_key_pem"].as_str().unwrap(),
            &material,
        )
    };
    assert_error(
        &import(
            &s,
            &key,
            &issued[0]["import_token"],
            &wrapped_for(&issued[0]),
            json!({}),
        )
        .await,
        400,
        "ExpiredImportToken",
        "",
    );
    let r = import(
        &s,
        &key,
        &issued[9]["import_token"],
        &wrapped_for(&issued[9]),
        json!({}),
    )
    .await;
    assert_eq!(r.0, 200, "{}", r.1);
    let replaced = s
        .audit_records()
        .iter()
        .filter(|r| r["action"] == "GetParametersForImport")
        .filter_map(|r| r["resource"].as_str().map(str::to_string))
        .find(|r| r.contains("replacing"))
        .unwrap();
    assert!(
        replaced.ends_with(&format!(
            "import-token:{} replacing import-token:{}",
            token(&issued[8]),
            token(&issued[0])
        )),
        "{replaced}"
    );
}

/// Import `material` into `key`, wrapped with `RSAES_OAEP_SHA_1`; it must succeed.
async fn import_sha1(s: &Server, key: &str, work: &Path, material: &[u8]) {
    let p = params(s, key, "RSAES_OAEP_SHA_1").await;
    let pem = p["public_key_pem"].as_str().unwrap().to_string();
    let wrapped = oaep_encrypt(work, &pem, material);
    let r = import(s, key, &p["import_token"], &wrapped, json!({})).await;
    assert_eq!(r.0, 200, "{}", r.1);
}

/// Import `material` into `key` (RSAES_OAEP_SHA_1), valid for an hour by the node's clock;
/// the answer, which must be 200.
async fn import_for_an_hour(s: &Server, key: &str, work: &Path, material: &[u8]) -> Value {
    let now = s.advance_clock(0).await;
    let valid_to = chrono::DateTime::from_timestamp(now + 3600, 0)
        .unwrap()
        .to_rfc3339();
    let p = params(s, key, "RSAES_OAEP_SHA_1").await;
    let pem = p["public_key_pem"].as_str().unwrap().to_string();
    let wrapped = oaep_encrypt(work, &pem, material);
    let r = import(
        s,
        key,
        &p["import_token"],
        &wrapped,
        json!({ "valid_to": valid_to }),
    )
    .await;
    assert_eq!(r.0, 200, "{}", r.1);
    r.1
}

async fn import(
    s: &Server,
    key: &str,
    token: &Value,
    wrapped: &[u8],
    extra: Value,
) -> (u16, Value) {
    let mut body = json!({
        "key_id": key,
        "import_token": token,
        "encrypted_key_material": b64(wrapped),
    });
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    s.call(Some(&s.admin), "import-key-material", body).await
}

/// A key awaiting its material whose deletion is cancelled awaits it again: disabled, it
/// could be enabled with no material, and import would refuse it (a key pending import only).
#[tokio::test(flavor = "multi_thread")]
async fn a_cancelled_deletion_of_a_key_awaiting_import_leaves_it_awaiting_import() {
    let dir = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let s = Server::start_quiet(dir.path()).await;
    let approver = s.second_admin("default").await;
    let key = external_hsm_key(&s).await;
    // Scheduled for deletion, then cancelled: the state it comes back in.
    let cancelled = || async {
        let body = json!({ "key_id": key, "pending_window_days": 7 });
        let (st, v) = s.schedule_deletion(&s.admin, &approver, body).await;
        assert_eq!(st, 200, "{v}");
        let v = s
            .ok(&s.admin, "cancel-key-deletion", json!({ "key_id": key }))
            .await;
        let d = s
            .ok(&s.admin, "describe-key", json!({ "key_id": key }))
            .await;
        assert_eq!(v["state"], d["state"], "{v} {d}");
        v["state"].as_str().unwrap().to_string()
    };
    assert_eq!(cancelled().await, "pending-import");
    let (st, v) = s
        .call(Some(&s.admin), "enable-key", json!({ "key_id": key }))
        .await;
    assert_eq!(st, 409, "{v}");
    import_sha1(&s, &key, work.path(), &[7u8; 32]).await;
    let ct = s.encrypt(&s.admin, &key, b"at last", json!({})).await;
    let (st, v) = s.decrypt(&s.admin, &ct, json!({})).await;
    assert_eq!(st, 200, "{v}");
    // A key with material comes back disabled.
    assert_eq!(cancelled().await, "disabled");
    // One whose revoked version lost its material comes back awaiting it (the version stays
    // compromised).
    s.ok(&s.admin, "enable-key", json!({ "key_id": key })).await;
    s.ok(
        &s.admin,
        "revoke-key-version",
        json!({ "key_id": key, "version": 1, "reason": "leaked" }),
    )
    .await;
    s.ok(
        &s.admin,
        "delete-imported-key-material",
        json!({ "key_id": key }),
    )
    .await;
    assert_eq!(cancelled().await, "pending-import");
}

#[cfg(all(feature = "test-hooks", debug_assertions))]
#[tokio::test(flavor = "multi_thread")]
async fn imported_material_is_the_key_and_every_refusal_is_typed() {
    let dir = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let s = Server::start_quiet(dir.path()).await;
    let ctx: EncryptionContext = [("app".to_string(), "byok".to_string())].into();
    let ctx_json = json!({ "app": "byok" });

    for (protection, algorithm) in [
        ("hsm", "RSAES_OAEP_SHA_1"),
        ("envelope", "RSA_AES_KEY_WRAP_SHA_1"),
    ] {
        let created = s
            .ok(
                &s.admin,
                "create-key",
                json!({ "protection": protection, "origin": "external" }),
            )
            .await;
        let key = created["key_id"].as_str().unwrap().to_string();
        assert_eq!(
            (created["state"].as_str(), created["origin"].as_str()),
            (Some("pending-import"), Some("external"))
        );
        assert_error(
            &s.call(
                Some(&s.admin),
                "encrypt",
                json!({ "key_id": key, "plaintext": b64(b"x") }),
            )
            .await,
            409,
            "InvalidState",
            "pending import",
        );
        assert_error(
            &s.call(Some(&s.admin), "enable-key", json!({ "key_id": key }))
                .await,
            409,
            "InvalidState",
            "import",
        );

        let p = params(&s, &key, algorithm).await;
        let pem = p["public_key_pem"].as_str().unwrap().to_string();
        assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"), "{p}");
        // The PEM and DER forms are the same key, and openssl reads it.
        let der_from_pem = openssl(&[
            "pkey",
            "-pubin",
            "-in",
            &write(work.path(), "p.pem", pem.as_bytes()),
            "-outform",
            "DER",
        ]);
        assert_eq!(der_from_pem, unb64(&p["public_key"]));
        let token = p["import_token"].clone();
        assert!(common::token_labels(dir.path(), Some("privkey"))
            .iter()
            .any(|l| l.contains(token.as_str().unwrap())));

        let material = openssl(&["rand", "32"]);
        let wrap = |m: &[u8]| {
            if algorithm == "RSAES_OAEP_SHA_1" {
                oaep_encrypt(work.path(), &pem, m)
            } else {
                rsa_aes_wrap(work.path(), &pem, m)
            }
        };
        let wrapped = wrap(&material);

        // Tampered material, a wrong-length key, a token of another key: refused; the token
        // survives a failed attempt.
        let mut tampered = wrapped.clone();
        tampered[10] ^= 0x40;
        assert_error(
            &import(&s, &key, &token, &tampered, json!({})).await,
            400,
            "IncorrectKeyMaterial",
            "",
        );
        assert_error(
            &import(&s, &key, &token, &wrap(&material[..16]), json!({})).await,
            400,
            "IncorrectKeyMaterial",
            "",
        );
        let other = external_key(&s, json!({})).await;
        assert_error(
            &import(&s, &other, &token, &wrapped, json!({})).await,
            400,
            "InvalidImportToken",
            "another key",
        );
        assert_error(
            &import(&s, &key, &json!("imp-nope"), &wrapped, json!({})).await,
            400,
            "InvalidImportToken",
            "import_token",
        );
        assert_error(
            &import(
                &s,
                &key,
                &token,
                &wrapped,
                json!({ "valid_to": "2001-01-01T00:00:00Z" }),
            )
            .await,
            400,
            "ValidationError",
            "future",
        );
        // At most a year away, as AWS bounds ValidTo (before, any time was taken).
        let far = (chrono::Utc::now() + chrono::Duration::days(366)).to_rfc3339();
        assert_error(
            &import(&s, &key, &token, &wrapped, json!({ "valid_to": far })).await,
            400,
            "ValidationError",
            "365 days",
        );

        let r = import(&s, &key, &token, &wrapped, json!({})).await;
        assert_eq!(r.0, 200, "{}", r.1);
        assert_eq!(r.1["state"], "enabled");
        // One use: the key has its material, and the token's wrapping key is gone from the
        // token.
        assert_error(
            &import(&s, &key, &token, &wrapped, json!({})).await,
            409,
            "InvalidState",
            "",
        );
        assert!(!common::token_labels(dir.path(), Some("privkey"))
            .iter()
            .any(|l| l.contains(token.as_str().unwrap())));

        // The key encrypts with exactly the imported material: openssl's bytes open it.
        let ct = s
            .encrypt(&s.admin, &key, b"bring your own key", ctx_json.clone())
            .await;
        assert_eq!(open_offline(&material, &ct, &ctx), b"bring your own key");
        let (st, d) = s.decrypt(&s.admin, &ct, ctx_json.clone()).await;
        assert_eq!(
            (st, unb64(&d["plaintext"])),
            (200, b"bring your own key".to_vec())
        );
        // Imported material cannot be renewed by keyplane.
        assert_error(
            &s.call(Some(&s.admin), "rotate-key", json!({ "key_id": key }))
                .await,
            400,
            "Unsupported",
            "imported",
        );
        // A keyplane-made key has no import parameters.
        let native = s.create_key(&s.admin, protection).await;
        assert_error(
            &s.call(
                Some(&s.admin),
                "get-parameters-for-import",
                json!({ "key_id": native, "wrapping_algorithm": algorithm }),
            )
            .await,
            400,
            "Unsupported",
            "external",
        );
    }

    // SHA-256 OAEP is refused with the reason (SoftHSM2 implements SHA-1 only).
    let key = external_key(&s, json!({})).await;
    assert_error(
        &s.call(
            Some(&s.admin),
            "get-parameters-for-import",
            json!({ "key_id": key, "wrapping_algorithm": "RSAES_OAEP_SHA_256" }),
        )
        .await,
        400,
        "Unsupported",
        "SHA-1",
    );

    // An import token expires after 24 hours; the scheduler destroys its wrapping key.
    let p = params(&s, &key, "RSAES_OAEP_SHA_1").await;
    let material = openssl(&["rand", "32"]);
    let wrapped = oaep_encrypt(
        work.path(),
        p["public_key_pem"].as_str().unwrap(),
        &material,
    );
    s.advance_clock(24 * 3600 + 1).await;
    assert_error(
        &import(&s, &key, &p["import_token"], &wrapped, json!({})).await,
        400,
        "ExpiredImportToken",
        "",
    );
    s.ok(&s.admin, "run-scheduler", json!({})).await;
    let token = p["import_token"].as_str().unwrap();
    assert!(!common::token_labels(dir.path(), Some("privkey"))
        .iter()
        .any(|l| l.contains(token)));
    // And says so in the audit log, once.
    let expired = s
        .audit_records()
        .into_iter()
        .filter(|r| r["action"] == "ExpireImportToken")
        .map(|r| r["resource"].as_str().unwrap().to_string())
        .collect::<Vec<_>>();
    assert_eq!(expired, [format!("import-token:{token}")]);

    // Material with an expiry: deleted when it passes; only the same material comes back.
    let now = s.advance_clock(0).await;
    let p = params(&s, &key, "RSAES_OAEP_SHA_1").await;
    let pem = p["public_key_pem"].as_str().unwrap().to_string();
    let valid_to = chrono::DateTime::from_timestamp(now + 3600, 0)
        .unwrap()
        .to_rfc3339();
    let r = import(
        &s,
        &key,
        &p["import_token"],
        &oaep_encrypt(work.path(), &pem, &material),
        json!({ "valid_to": valid_to }),
    )
    .await;
    assert_eq!(r.0, 200, "{}", r.1);
    let ct = s
        .encrypt(&s.admin, &key, b"until it expires", json!({}))
        .await;
    let d = s
        .ok(&s.admin, "describe-key", json!({ "key_id": key }))
        .await;
    assert!(d["material_expires_at"].is_string(), "{d}");
    s.advance_clock(3601).await;
    // Expired, and not yet deleted by the scheduler: no longer used all the same (before, it
    // was until the next pass, and for ever on a node whose scheduler is off).
    assert_error(
        &s.decrypt(&s.admin, &ct, json!({})).await,
        409,
        "InvalidState",
        "imported material expired",
    );
    assert_error(
        &s.call(
            Some(&s.admin),
            "encrypt",
            json!({ "key_id": key, "plaintext": b64(b"after expiry") }),
        )
        .await,
        409,
        "InvalidState",
        "imported material expired",
    );
    let pass = s.ok(&s.admin, "run-scheduler", json!({})).await;
    assert_eq!(pass["expired"], json!([key]), "{pass}");
    assert_error(
        &s.decrypt(&s.admin, &ct, json!({})).await,
        409,
        "InvalidState",
        "pending import",
    );
    // The token used before is spent: it does not work again, even with the same material.
    let spent = oaep_encrypt(work.path(), &pem, &material);
    assert_error(
        &import(&s, &key, &p["import_token"], &spent, json!({})).await,
        400,
        "ExpiredImportToken",
        "",
    );
    let p = params(&s, &key, "RSAES_OAEP_SHA_1").await;
    let pem = p["public_key_pem"].as_str().unwrap().to_string();
    let different = openssl(&["rand", "32"]);
    assert_error(
        &import(
            &s,
            &key,
            &p["import_token"],
            &oaep_encrypt(work.path(), &pem, &different),
            json!({}),
        )
        .await,
        400,
        "IncorrectKeyMaterial",
        "not the material",
    );
    let r = import(
        &s,
        &key,
        &p["import_token"],
        &oaep_encrypt(work.path(), &pem, &material),
        json!({}),
    )
    .await;
    assert_eq!(r.0, 200, "{}", r.1);
    let (st, d) = s.decrypt(&s.admin, &ct, json!({})).await;
    assert_eq!(
        (st, unb64(&d["plaintext"])),
        (200, b"until it expires".to_vec())
    );

    let out = s.audit_verify();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A recipient of exported keys: an RSA-2048 key pair made by openssl in `dir`.
struct Recipient {
    dir: std::path::PathBuf,
    private: String,
    public: String,
    public_der: Vec<u8>,
}

impl Recipient {
    fn new(dir: &Path) -> Self {
        let private = dir.join("recipient.pem").to_string_lossy().into_owned();
        openssl(&[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            &private,
        ]);
        let public = String::from_utf8(openssl(&["pkey", "-in", &private, "-pubout"])).unwrap();
        let public_der = openssl(&["pkey", "-in", &private, "-pubout", "-outform", "DER"]);
        Recipient {
            dir: dir.to_path_buf(),
            private,
            public,
            public_der,
        }
    }

    /// Undo RSA-OAEP (SHA-1) with the private key.
    fn oaep_decrypt(&self, wrapped: &[u8]) -> Vec<u8> {
        let input = write(&self.dir, "exported.bin", wrapped);
        openssl(&[
            "pkeyutl",
            "-decrypt",
            "-inkey",
            &self.private,
            "-pkeyopt",
            "rsa_padding_mode:oaep",
            "-pkeyopt",
            "rsa_oaep_md:sha1",
            "-in",
            &input,
        ])
    }

    /// Undo `RSA_AES_KEY_WRAP_SHA_1`: OAEP for the ephemeral key, then AES-KWP.
    fn rsa_aes_unwrap(&self, wrapped: &[u8]) -> Vec<u8> {
        let (head, tail) = wrapped.split_at(256);
        let eph = self.oaep_decrypt(head);
        let tail_file = write(&self.dir, "tail.bin", tail);
        openssl(&[
            "enc",
            "-d",
            "-id-aes256-wrap-pad",
            "-K",
            &hex(&eph),
            "-iv",
            "A65959A6",
            "-in",
            &tail_file,
        ])
    }
}

/// `AES_128_GCM` and `CHACHA20_POLY1305` keys import and export raw material of their own
/// length (16 and 32 bytes), under either protection level they have.
#[cfg(all(feature = "test-hooks", debug_assertions))]
#[tokio::test(flavor = "multi_thread")]
async fn aes_128_and_chacha20_material_imports_and_exports_at_its_own_length() {
    let dir = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let s = Server::start_quiet(dir.path()).await;
    let w = work.path();
    let recipient = Recipient::new(w);
    let ctx: EncryptionContext = [("app".to_string(), "byok".to_string())].into();
    let ctx_json = json!({ "app": "byok" });
    for (spec, protection, len, algorithm) in [
        ("AES_128_GCM", "hsm", 16, "RSAES_OAEP_SHA_1"),
        ("AES_128_GCM", "envelope", 16, "RSA_AES_KEY_WRAP_SHA_1"),
        ("CHACHA20_POLY1305", "envelope", 32, "RSAES_OAEP_SHA_1"),
    ] {
        let created = s
            .ok(
                &s.admin,
                "create-key",
                json!({ "key_spec": spec, "protection": protection, "origin": "external",
                        "exportable": true }),
            )
            .await;
        let key = created["key_id"].as_str().unwrap().to_string();
        let p = params(&s, &key, algorithm).await;
        let (pem, token) = (p["public_key_pem"].as_str().unwrap(), &p["import_token"]);
        let wrap = |m: &[u8]| {
            if algorithm == "RSAES_OAEP_SHA_1" {
                oaep_encrypt(w, pem, m)
            } else {
                rsa_aes_wrap(w, pem, m)
            }
        };
        // Material of the other length is refused, saying which length the spec takes.
        let other = openssl(&["rand", if len == 16 { "32" } else { "16" }]);
        assert_error(
            &import(&s, &key, token, &wrap(&other), json!({})).await,
            400,
            "IncorrectKeyMaterial",
            "16 for AES_128_GCM",
        );
        let material = openssl(&["rand", &len.to_string()]);
        let r = import(&s, &key, token, &wrap(&material), json!({})).await;
        assert_eq!((r.0, &r.1["state"]), (200, &json!("enabled")), "{}", r.1);
        let ct = s
            .encrypt(&s.admin, &key, b"bring your own key", ctx_json.clone())
            .await;
        assert_eq!(open_offline(&material, &ct, &ctx), b"bring your own key");
        if protection == "envelope" {
            assert_eq!(s.envelope_material(&key).await, material);
        }
        // Exported, the same bytes come back to the recipient.
        let r = s
            .ok(
                &s.admin,
                "export-key",
                json!({ "key_id": key, "wrapping_algorithm": "RSAES_OAEP_SHA_1",
                        "public_key": recipient.public }),
            )
            .await;
        assert_eq!(
            (&r["key_spec"], &r["key_material_format"]),
            (&json!(spec), &json!("RAW"))
        );
        let exported = recipient.oaep_decrypt(&unb64(&r["encrypted_key_material"]));
        assert_eq!(exported, material, "{spec} {protection}");
    }
}

#[cfg(all(feature = "test-hooks", debug_assertions))]
#[tokio::test(flavor = "multi_thread")]
async fn export_hands_out_only_exportable_keys_and_only_wrapped() {
    let dir = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let s = Server::start_quiet(dir.path()).await;
    let w = work.path();
    let r0 = Recipient::new(w);
    let (public, public_der) = (r0.public.clone(), r0.public_der.clone());
    let oaep_decrypt = |wrapped: &[u8]| r0.oaep_decrypt(wrapped);
    let export = |key: &str, algorithm: &str, public_key: &str| {
        let (s, key, algorithm, public_key) = (
            &s,
            key.to_string(),
            algorithm.to_string(),
            public_key.to_string(),
        );
        async move {
            s.call(
                Some(&s.admin),
                "export-key",
                json!({ "key_id": key, "wrapping_algorithm": algorithm, "public_key": public_key }),
            )
            .await
        }
    };

    // Not created exportable: never.
    let plain = s.create_key(&s.admin, "hsm").await;
    assert_error(
        &export(&plain, "RSAES_OAEP_SHA_1", &public).await,
        400,
        "ValidationError",
        "not created exportable",
    );

    // An exportable hsm key, wrapped with RSA-OAEP (PEM recipient key).
    let key = s
        .ok(
            &s.admin,
            "create-key",
            json!({ "protection": "hsm", "exportable": true }),
        )
        .await["key_id"]
        .as_str()
        .unwrap()
        .to_string();
    let ctx: EncryptionContext = EncryptionContext::new();
    let ct = s
        .encrypt(&s.admin, &key, b"leaving with the recipient", json!({}))
        .await;
    let (st, r) = export(&key, "RSAES_OAEP_SHA_1", &public).await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["key_version"], 1);
    let material = oaep_decrypt(&unb64(&r["encrypted_key_material"]));
    assert_eq!(material.len(), 32);
    assert_eq!(
        open_offline(&material, &ct, &ctx),
        b"leaving with the recipient"
    );

    // An exportable envelope key, RSA-OAEP + AES key wrap (DER recipient key), after a
    // rotation: the primary version is exported unless a version is named.
    let env = s
        .ok(
            &s.admin,
            "create-key",
            json!({ "protection": "envelope", "exportable": true }),
        )
        .await["key_id"]
        .as_str()
        .unwrap()
        .to_string();
    let old = s.encrypt(&s.admin, &env, b"version one", json!({})).await;
    s.ok(&s.admin, "rotate-key", json!({ "key_id": env })).await;
    let (st, r) = export(&env, "RSA_AES_KEY_WRAP_SHA_1", &b64(&public_der)).await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["key_version"], 2);
    let wrapped = unb64(&r["encrypted_key_material"]);
    let material = r0.rsa_aes_unwrap(&wrapped);
    assert_eq!(material, s.envelope_material(&env).await);
    let (st, r) = s
        .call(
            Some(&s.admin),
            "export-key",
            json!({ "key_id": env, "key_version": 1, "wrapping_algorithm": "RSAES_OAEP_SHA_1", "public_key": public }),
        )
        .await;
    assert_eq!(st, 200, "{r}");
    let v1 = oaep_decrypt(&unb64(&r["encrypted_key_material"]));
    assert_eq!(open_offline(&v1, &old, &ctx), b"version one");

    // Refusals: a weak or unreadable recipient key, a disabled key, a revoked version, a
    // principal without the permission.
    let weak = w.join("weak.pem").to_string_lossy().into_owned();
    openssl(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:1024",
        "-out",
        &weak,
    ]);
    let weak_pub = String::from_utf8(openssl(&["pkey", "-in", &weak, "-pubout"])).unwrap();
    assert_error(
        &export(&key, "RSAES_OAEP_SHA_1", &weak_pub).await,
        400,
        "ValidationError",
        "2048",
    );
    assert_error(
        &export(&key, "RSAES_OAEP_SHA_1", "not a key").await,
        400,
        "ValidationError",
        "public_key",
    );
    assert_error(
        &export(&key, "AES_KEY_WRAP", &public).await,
        400,
        "ValidationError",
        "wrapping_algorithm",
    );
    s.ok(
        &s.admin,
        "revoke-key-version",
        json!({ "key_id": env, "version": 1, "reason": "test" }),
    )
    .await;
    let (st, _) = s
        .call(
            Some(&s.admin),
            "export-key",
            json!({ "key_id": env, "key_version": 1, "wrapping_algorithm": "RSAES_OAEP_SHA_1", "public_key": public }),
        )
        .await;
    assert_eq!(st, 409);
    s.ok(&s.admin, "disable-key", json!({ "key_id": key }))
        .await;
    assert_error(
        &export(&key, "RSAES_OAEP_SHA_1", &public).await,
        409,
        "InvalidState",
        "disabled",
    );
    s.ok(&s.admin, "enable-key", json!({ "key_id": key })).await;
    let (_, tenant_admin) = s.tenant_with_admin("acme").await;
    let member = s
        .ok(
            &tenant_admin,
            "create-principal",
            json!({ "tenant_id": "acme", "name": "app", "role": "member" }),
        )
        .await;
    let member_token = member["token"].as_str().unwrap();
    let theirs = s
        .ok(
            &tenant_admin,
            "create-key",
            json!({ "exportable": true, "grants": [member["principal_id"]] }),
        )
        .await["key_id"]
        .as_str()
        .unwrap()
        .to_string();
    let (st, _) = s
        .call(
            Some(member_token),
            "export-key",
            json!({ "key_id": theirs, "wrapping_algorithm": "RSAES_OAEP_SHA_1", "public_key": public }),
        )
        .await;
    assert_eq!(st, 403, "a key user is not an exporter");
    let (st, _) = s
        .call(
            Some(&tenant_admin),
            "export-key",
            json!({ "key_id": key, "wrapping_algorithm": "RSAES_OAEP_SHA_1", "public_key": public }),
        )
        .await;
    assert!(matches!(st, 403 | 404), "another tenant's key: {st}");

    let out = s.audit_verify();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn key_pairs_export_as_pkcs8_and_hmac_keys_as_raw_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let s = Server::start_quiet(dir.path()).await;
    let w = work.path();
    let r0 = Recipient::new(w);
    let public = r0.public.clone();
    let oaep_decrypt = |wrapped: &[u8]| r0.oaep_decrypt(wrapped);
    let create = |spec: &str, usage: &str| {
        let (s, spec, usage) = (&s, spec.to_string(), usage.to_string());
        async move {
            s.call(
                Some(&s.admin),
                "create-key",
                json!({ "key_spec": spec, "key_usage": usage, "exportable": true }),
            )
            .await
        }
    };

    for spec in ["ECC_NIST_P256", "ECC_NIST_P384", "RSA_2048"] {
        let (st, k) = create(spec, "sign-verify").await;
        assert_eq!(st, 200, "{k}");
        let key = k["key_id"].as_str().unwrap().to_string();
        // PKCS#8 does not fit in RSA-OAEP alone.
        let (st, v) = s
            .call(
                Some(&s.admin),
                "export-key",
                json!({ "key_id": key, "wrapping_algorithm": "RSAES_OAEP_SHA_1", "public_key": public }),
            )
            .await;
        assert_error(&(st, v), 400, "ValidationError", "PKCS#8");
        let r = s
            .ok(
                &s.admin,
                "export-key",
                json!({ "key_id": key, "wrapping_algorithm": "RSA_AES_KEY_WRAP_SHA_1", "public_key": public }),
            )
            .await;
        assert_eq!(r["key_material_format"], "PKCS8", "{r}");
        let wrapped = unb64(&r["encrypted_key_material"]);
        let pkcs8 = r0.rsa_aes_unwrap(&wrapped);
        // openssl reads the PKCS#8 private key, and its public half is keyplane's public key.
        let p8 = write(w, "key.p8", &pkcs8);
        let derived = openssl(&[
            "pkey", "-inform", "DER", "-in", &p8, "-pubout", "-outform", "DER",
        ]);
        let published = s
            .ok(
                &s.admin,
                "get-public-key",
                json!({ "key_id": key, "format": "DER" }),
            )
            .await;
        assert_eq!(derived, unb64(&published["der"]), "{spec}");
    }

    // An HMAC key leaves as its raw bytes: openssl computes the same MAC with them.
    let (st, k) = create("HMAC_SHA_256", "generate-verify-mac").await;
    assert_eq!(st, 200, "{k}");
    let key = k["key_id"].as_str().unwrap().to_string();
    let r = s
        .ok(
            &s.admin,
            "export-key",
            json!({ "key_id": key, "wrapping_algorithm": "RSAES_OAEP_SHA_1", "public_key": public }),
        )
        .await;
    assert_eq!(r["key_material_format"], "RAW");
    let secret = oaep_decrypt(&unb64(&r["encrypted_key_material"]));
    let mac = s
        .ok(
            &s.admin,
            "generate-mac",
            json!({ "key_id": key, "message": b64(b"authentic"), "mac_algorithm": "HMAC_SHA_256" }),
        )
        .await;
    let msg = write(w, "msg.bin", b"authentic");
    let theirs = openssl(&[
        "dgst",
        "-sha256",
        "-mac",
        "HMAC",
        "-macopt",
        &format!("hexkey:{}", hex(&secret)),
        "-binary",
        &msg,
    ]);
    assert_eq!(unb64(&mac["mac"]), theirs);

    // Ed25519 keys cannot be made exportable (the token cannot wrap them); keys that were not
    // created exportable are refused whatever their spec.
    let (st, v) = create("ED25519", "sign-verify").await;
    assert_error(&(st, v), 400, "ValidationError", "ED25519");
    let fixed = s
        .ok(
            &s.admin,
            "create-key",
            json!({ "key_spec": "ECC_NIST_P256", "key_usage": "sign-verify" }),
        )
        .await;
    let (st, v) = s
        .call(
            Some(&s.admin),
            "export-key",
            json!({ "key_id": fixed["key_id"], "wrapping_algorithm": "RSA_AES_KEY_WRAP_SHA_1", "public_key": public }),
        )
        .await;
    assert_error(&(st, v), 400, "ValidationError", "not created exportable");
}

#[tokio::test(flavor = "multi_thread")]
async fn key_pairs_import_as_pkcs8_and_sign_for_their_owner() {
    let dir = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let s = Server::start_quiet(dir.path()).await;
    let w = work.path();
    let cases = [
        (
            "RSA_2048",
            "RSA",
            "rsa_keygen_bits:2048",
            "RSASSA_PKCS1_V1_5_SHA_256",
        ),
        (
            "ECC_NIST_P256",
            "EC",
            "ec_paramgen_curve:P-256",
            "ECDSA_SHA_256",
        ),
    ];
    for (spec, algorithm, option, signing) in cases {
        let key = external_key(&s, json!({ "key_spec": spec, "key_usage": "sign-verify" })).await;
        // The owner's key pair, made by openssl: PKCS#8 DER private key and PEM public key.
        let pem = w.join(format!("{spec}.pem")).to_string_lossy().into_owned();
        openssl(&[
            "genpkey",
            "-algorithm",
            algorithm,
            "-pkeyopt",
            option,
            "-out",
            &pem,
        ]);
        let pkcs8 = openssl(&[
            "pkcs8", "-topk8", "-nocrypt", "-in", &pem, "-outform", "DER",
        ]);
        let public = String::from_utf8(openssl(&["pkey", "-in", &pem, "-pubout"])).unwrap();
        let p = params(&s, &key, "RSA_AES_KEY_WRAP_SHA_1").await;
        let wrap_pem = p["public_key_pem"].as_str().unwrap().to_string();
        let wrapped = rsa_aes_wrap(w, &wrap_pem, &pkcs8);
        let with_public = json!({ "public_key": public });
        // Private key bytes, wrapped right, that the import refuses as not this key's.
        let refused = async |material: &[u8], fields: Value, why: &str| {
            let wrapped = rsa_aes_wrap(w, &wrap_pem, material);
            let answer = import(&s, &key, &p["import_token"], &wrapped, fields).await;
            assert_error(&answer, 400, "IncorrectKeyMaterial", why);
        };

        // Refusals first (the token stays usable): OAEP alone, a tampered wrapping, and for
        // EC a missing or foreign public key.
        let p_oaep = params(&s, &key, "RSAES_OAEP_SHA_1").await;
        let short = oaep_encrypt(w, p_oaep["public_key_pem"].as_str().unwrap(), &[7u8; 32]);
        assert_error(
            &import(
                &s,
                &key,
                &p_oaep["import_token"],
                &short,
                with_public.clone(),
            )
            .await,
            400,
            "ValidationError",
            "PKCS#8",
        );
        let mut tampered = wrapped.clone();
        let last = tampered.len() - 5;
        tampered[last] ^= 1;
        assert_error(
            &import(&s, &key, &p["import_token"], &tampered, with_public.clone()).await,
            400,
            "IncorrectKeyMaterial",
            "",
        );
        // Wrapped right but no PKCS#8 key: the owner's key in its traditional form (PKCS#1,
        // SEC1), and random bytes. SoftHSM2 answers them CKR_FUNCTION_FAILED, which was taken
        // for the token failing (503 HsmUnavailable, the session closed).
        let traditional = openssl(&["pkey", "-in", &pem, "-traditional", "-outform", "DER"]);
        for material in [traditional, vec![0x5a; 300]] {
            refused(&material, with_public.clone(), "PKCS#8").await;
        }
        if algorithm == "EC" {
            assert_error(
                &import(&s, &key, &p["import_token"], &wrapped, json!({})).await,
                400,
                "ValidationError",
                "public_key",
            );
            let other = w.join("other.pem").to_string_lossy().into_owned();
            openssl(&[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                option,
                "-out",
                &other,
            ]);
            let foreign = String::from_utf8(openssl(&["pkey", "-in", &other, "-pubout"])).unwrap();
            assert_error(
                &import(
                    &s,
                    &key,
                    &p["import_token"],
                    &wrapped,
                    json!({ "public_key": foreign }),
                )
                .await,
                400,
                "IncorrectKeyMaterial",
                "does not belong",
            );
        } else {
            // A key of another size is not this key's spec, nor is one of 2047 bits, though
            // its modulus takes 256 bytes too; nor the owner's modulus and exponent with
            // another key's private values (it would publish the owner's public key and sign
            // with the other key; before, imported).
            let (_, other) = rsa_pkcs8(w, "other.pem", 2048);
            for (material, why) in [
                (rsa_pkcs8(w, "big.pem", 3072).1, "3072"),
                (rsa_pkcs8(w, "short.pem", 2047).1, "2047"),
                (mismatched_rsa(&pkcs8, &other), "does not belong"),
            ] {
                refused(&material, json!({}), why).await;
            }
        }

        let r = import(&s, &key, &p["import_token"], &wrapped, with_public.clone()).await;
        assert_eq!(r.0, 200, "{}", r.1);
        // keyplane publishes the owner's public key and signs with the owner's private key.
        let published = s
            .ok(
                &s.admin,
                "get-public-key",
                json!({ "key_id": key, "format": "PEM" }),
            )
            .await;
        assert_eq!(published["pem"].as_str().unwrap().trim(), public.trim());
        let sig = s
            .ok(
                &s.admin,
                "sign",
                json!({ "key_id": key, "message": b64(b"signed by the owner's key"), "signing_algorithm": signing }),
            )
            .await;
        let msg = write(w, "msg.bin", b"signed by the owner's key");
        let sig_file = write(w, "sig.bin", &unb64(&sig["signature"]));
        let pub_file = write(w, "owner.pub", public.as_bytes());
        openssl(&[
            "dgst",
            "-sha256",
            "-verify",
            &pub_file,
            "-signature",
            &sig_file,
            &msg,
        ]);
    }
    let out = s.audit_verify();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Two imports of a key's expired material race, each with its own import token. Both unwrap
/// the material into new HSM objects before either commits; the second to commit must fail
/// (and its objects be destroyed) rather than put its objects in the version's row in place
/// of the first's, which would then outlive crypto-shredding.
#[cfg(all(feature = "test-hooks", debug_assertions))]
#[tokio::test(flavor = "multi_thread")]
async fn an_import_that_loses_a_race_leaves_one_set_of_objects() {
    let dir = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let s = Server::start_quiet(dir.path()).await;
    let key = external_hsm_key(&s).await;
    let material = openssl(&["rand", "32"]);
    import_for_an_hour(&s, &key, work.path(), &material).await;
    let ct = s.encrypt(&s.admin, &key, b"before expiry", json!({})).await;
    s.advance_clock(3601).await;
    let pass = s.ok(&s.admin, "run-scheduler", json!({})).await;
    assert_eq!(pass["expired"], json!([key]), "{pass}");

    let mut wrapped = Vec::new();
    for _ in 0..2 {
        let p = params(&s, &key, "RSAES_OAEP_SHA_1").await;
        let pem = p["public_key_pem"].as_str().unwrap().to_string();
        wrapped.push((
            p["import_token"].clone(),
            oaep_encrypt(work.path(), &pem, &material),
        ));
    }
    let point = "import:material-made";
    s.pause(point, &key, "arm").await;
    let loser = import(&s, &key, &wrapped[0].0, &wrapped[0].1, json!({}));
    let rest = async {
        assert_eq!(s.pause(point, &key, "wait").await["reached"], true);
        let won = import(&s, &key, &wrapped[1].0, &wrapped[1].1, json!({})).await;
        assert_eq!(won.0, 200, "{}", won.1);
        s.pause(point, &key, "release").await;
    };
    let (lost, ()) = tokio::join!(loser, rest);
    assert_error(&lost, 409, "InvalidState", "another import meanwhile");

    let (status, v) = s.decrypt(&s.admin, &ct, json!({})).await;
    assert_eq!(
        (status, unb64(&v["plaintext"])),
        (200, b"before expiry".to_vec()),
        "{v}"
    );
    let version_1 = format!("kp:{key}:1");
    let labelled = || {
        common::token_objects(dir.path())
            .into_iter()
            .filter(|(label, _)| *label == version_1)
            .count()
    };
    assert_eq!(labelled(), 1, "only the winner's object is left");

    // Crypto-shredding then leaves nothing of the version.
    s.destroy_keys(&[&key]).await;
    assert_eq!(labelled(), 0);
    assert_error(
        &s.decrypt(&s.admin, &ct, json!({})).await,
        410,
        "KeyDestroyed",
        "",
    );
}

/// An import that fails leaves its import token usable: the wrapping key is destroyed only
/// once the import commits. Before, it was destroyed before the commit, so an import whose
/// commit failed (here: the filesystem under the database full) had used up a token the
/// database still held, and the retry was refused.
#[cfg(all(feature = "test-hooks", debug_assertions))]
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_import_leaves_its_token_usable() {
    if common::on_postgres() {
        // The commit is made to fail by filling the filesystem under SQLite's log; the run
        // on SQLite (the suite's first) is the one that checks this.
        eprintln!("a_failed_import_leaves_its_token_usable runs on SQLite only");
        return;
    }
    let fs = common::filesystem::SmallFilesystem::mount(24);
    let work = tempfile::tempdir().unwrap();
    let s = Server::start_quiet(&fs.path().join("data")).await;
    let key = external_hsm_key(&s).await;
    let material = openssl(&["rand", "32"]);
    let p = params(&s, &key, "RSAES_OAEP_SHA_1").await;
    let pem = p["public_key_pem"].as_str().unwrap().to_string();
    let wrapped = oaep_encrypt(work.path(), &pem, &material);

    let point = "import:material-made";
    s.pause(point, &key, "arm").await;
    let failing = import(&s, &key, &p["import_token"], &wrapped, json!({}));
    let fill = async {
        assert_eq!(s.pause(point, &key, "wait").await["reached"], true);
        // The write-ahead log emptied first, so that the commit needs new space.
        let db = format!("sqlite://{}", s.data_dir.join("keyplane.db").display());
        let db = sqlx::SqlitePool::connect(&db).await.unwrap();
        let (busy, _, _): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(TRUNCATE)")
            .fetch_one(&db)
            .await
            .unwrap();
        db.close().await;
        assert_eq!(busy, 0, "the log was emptied");
        let filler = fs.fill();
        s.pause(point, &key, "release").await;
        filler
    };
    let (failed, filler) = tokio::join!(failing, fill);
    assert_eq!(failed.0, 503, "the commit fails: {}", failed.1);
    std::fs::remove_file(filler).unwrap();

    let r = import(&s, &key, &p["import_token"], &wrapped, json!({})).await;
    assert_eq!(r.0, 200, "the token still works: {}", r.1);
    let ct = s
        .encrypt(&s.admin, &key, b"imported at last", json!({}))
        .await;
    let (status, v) = s.decrypt(&s.admin, &ct, json!({})).await;
    assert_eq!(
        (status, unb64(&v["plaintext"])),
        (200, b"imported at last".to_vec()),
        "{v}"
    );
    // Used now: its wrapping key is gone with the token.
    let again = import(&s, &key, &p["import_token"], &wrapped, json!({})).await;
    assert_ne!(again.0, 200, "{}", again.1);
}

/// Imported material that expires and comes back keeps what was decided about its key and
/// version: a revoked (compromised) version stays compromised, and a disabled key comes back
/// disabled. Before, expiry reset every version to pending-import and re-import enabled them
/// all, so a compromised version encrypted again.
#[cfg(all(feature = "test-hooks", debug_assertions))]
#[tokio::test(flavor = "multi_thread")]
async fn expiry_and_reimport_never_revive_a_revoked_version() {
    let dir = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let s = Server::start_quiet(dir.path()).await;
    let material = openssl(&["rand", "32"]);
    let import_expiring = |key: String| {
        let (s, work, material) = (&s, &work, &material);
        async move { import_for_an_hour(s, &key, work.path(), material).await }
    };
    let mut keys = Vec::new();
    for _ in 0..2 {
        keys.push(external_key(&s, json!({})).await);
    }
    let (revoked, disabled) = (keys[0].clone(), keys[1].clone());
    import_expiring(revoked.clone()).await;
    import_expiring(disabled.clone()).await;
    let ct = s.encrypt(&s.admin, &revoked, b"before", json!({})).await;
    s.ok(
        &s.admin,
        "revoke-key-version",
        json!({ "key_id": revoked, "version": 1, "reason": "material leaked" }),
    )
    .await;
    s.ok(&s.admin, "disable-key", json!({ "key_id": disabled }))
        .await;

    s.advance_clock(3601).await;
    let pass = s.ok(&s.admin, "run-scheduler", json!({})).await;
    let mut expired: Vec<String> = serde_json::from_value(pass["expired"].clone()).unwrap();
    expired.sort();
    let mut both = vec![revoked.clone(), disabled.clone()];
    both.sort();
    assert_eq!(expired, both, "{pass}");
    let listed = s
        .ok(&s.admin, "list-key-versions", json!({ "key_id": revoked }))
        .await;
    assert_eq!(listed["versions"][0]["state"], "compromised", "{listed}");

    let back = import_expiring(revoked.clone()).await;
    assert_eq!(back["state"], "enabled");
    let listed = s
        .ok(&s.admin, "list-key-versions", json!({ "key_id": revoked }))
        .await;
    assert_eq!(listed["versions"][0]["state"], "compromised", "{listed}");
    assert_error(
        &s.call(
            Some(&s.admin),
            "encrypt",
            json!({ "key_id": revoked, "plaintext": b64(b"again") }),
        )
        .await,
        409,
        "InvalidState",
        "compromised",
    );
    // Its ciphertexts still open through rewrap into another key, as for any revoked version.
    let elsewhere = s.create_key(&s.admin, "envelope").await;
    let r = s
        .ok(
            &s.admin,
            "rewrap",
            json!({ "ciphertext_blob": b64(&ct), "destination_key_id": elsewhere }),
        )
        .await;
    let (st, v) = s
        .decrypt(&s.admin, &unb64(&r["ciphertext_blob"]), json!({}))
        .await;
    assert_eq!((st, unb64(&v["plaintext"])), (200, b"before".to_vec()));

    let back = import_expiring(disabled.clone()).await;
    assert_eq!(back["state"], "disabled", "{back}");
}

#[cfg(all(feature = "test-hooks", debug_assertions))]
#[tokio::test(flavor = "multi_thread")]
async fn deleting_imported_material_leaves_the_key_waiting_for_the_same_material() {
    let dir = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let s = Server::start_quiet(dir.path()).await;
    let key = external_hsm_key(&s).await;
    let material = openssl(&["rand", "32"]);
    import_sha1(&s, &key, work.path(), &material).await;
    let ct = s.encrypt(&s.admin, &key, b"kept", json!({})).await;
    let object = s
        .ok(&s.admin, "list-key-versions", json!({ "key_id": key }))
        .await;
    assert_eq!(object["versions"][0]["state"], "enabled");
    let before = common::token_labels(dir.path(), Some("privkey")).len();
    let objects_before = common::token_objects(dir.path()).len();

    let gone = s
        .ok(
            &s.admin,
            "delete-imported-key-material",
            json!({ "key_id": key }),
        )
        .await;
    assert_eq!(gone["state"], "pending-import", "{gone}");
    assert_error(
        &s.decrypt(&s.admin, &ct, json!({})).await,
        409,
        "InvalidState",
        "pending import",
    );
    // The material left the token (its version object is destroyed).
    assert!(common::token_objects(dir.path()).len() < objects_before);
    assert_eq!(
        common::token_labels(dir.path(), Some("privkey")).len(),
        before
    );
    let versions = s
        .ok(&s.admin, "list-key-versions", json!({ "key_id": key }))
        .await;
    assert_eq!(
        versions["versions"][0]["state_reason"], "imported material deleted",
        "{versions}"
    );
    // Nothing left to delete now; keys made by keyplane hold no imported material.
    assert_error(
        &s.call(
            Some(&s.admin),
            "delete-imported-key-material",
            json!({ "key_id": key }),
        )
        .await,
        409,
        "InvalidState",
        "pending-import",
    );
    let own = s.create_key(&s.admin, "hsm").await;
    assert_error(
        &s.call(
            Some(&s.admin),
            "delete-imported-key-material",
            json!({ "key_id": own }),
        )
        .await,
        400,
        "Unsupported",
        "made by keyplane",
    );

    // The same material again opens what it sealed.
    let p = params(&s, &key, "RSAES_OAEP_SHA_1").await;
    let pem = p["public_key_pem"].as_str().unwrap().to_string();
    let r = import(
        &s,
        &key,
        &p["import_token"],
        &oaep_encrypt(work.path(), &pem, &material),
        json!({}),
    )
    .await;
    assert_eq!(r.0, 200, "{}", r.1);
    let (status, d) = s.decrypt(&s.admin, &ct, json!({})).await;
    assert_eq!((status, unb64(&d["plaintext"])), (200, b"kept".to_vec()));
    let records = s.tool(&["audit", "export"]);
    let text = String::from_utf8_lossy(&records.stdout);
    assert!(text.contains("BeginDeleteImportedKeyMaterial"));
    s.assert_audit_verifies();
}

/// `host/tests/peers/pkcs12.py` (Python's `cryptography`, from the clients' venv) with `args`;
/// its standard output.
fn pkcs12_py(args: &[&str]) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/pkcs12.py");
    let out = succeeds(
        Command::new(common::aws::venv_bin("python"))
            .arg(script)
            .args(args),
    );
    String::from_utf8(out).unwrap()
}

/// Open `bundle` with Python, sign `message` with its private key there, and check keyplane's
/// key `key` verifies that signature (`signing`); what Python read of the bundle.
async fn open_and_sign(
    s: &Server,
    w: &Path,
    key: &str,
    bundle: &str,
    password: &str,
    message: &[u8],
    signing: &str,
) -> Value {
    let file = write(w, "signed.txt", message);
    let opened: Value =
        serde_json::from_str(&pkcs12_py(&["open", bundle, password, &file])).unwrap();
    let v = s
        .ok(
            &s.admin,
            "verify",
            json!({ "key_id": key, "message": b64(message), "signing_algorithm": signing,
                    "signature": opened["signature"] }),
        )
        .await;
    assert_eq!(v["signature_valid"], true, "{key} {signing}");
    opened
}

#[cfg(all(feature = "test-hooks", debug_assertions))]
#[tokio::test(flavor = "multi_thread")]
async fn key_pairs_export_as_pkcs12_that_openssl_and_python_open() {
    let dir = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let s = Server::start_quiet(dir.path()).await;
    let w = work.path();
    let password = "correct horse battery";
    let export = |body: Value| {
        let s = &s;
        async move { s.call(Some(&s.admin), "export-key", body).await }
    };
    let message = write(w, "message.txt", b"signed by the exported key");

    // Sign-verify keys: a certificate the key signs for itself in the HSM.
    for (spec, signing) in [
        ("ECC_NIST_P256", "ECDSA_SHA_256"),
        ("RSA_2048", "RSASSA_PKCS1_V1_5_SHA_256"),
    ] {
        let key = s
            .create_key_with(
                &s.admin,
                json!({ "key_spec": spec, "key_usage": "sign-verify", "exportable": true }),
            )
            .await;
        let (st, r) =
            export(json!({ "key_id": key, "format": "PKCS12", "password": password })).await;
        assert_eq!(st, 200, "{r}");
        assert_eq!(
            (&r["key_material_format"], &r["key_version"]),
            (&json!("PKCS12"), &json!(1)),
            "{r}"
        );
        assert!(r.get("encrypted_key_material").is_none(), "{r}");
        let bundle = write(w, "export.p12", &unb64(&r["pkcs12"]));

        // openssl: the profile asked for (PBES2 / PBKDF2 / AES-256-CBC, HMAC-SHA-256 MAC).
        let out = Command::new("openssl")
            .args(["pkcs12", "-info", "-noout", "-in", &bundle, "-passin"])
            .arg(format!("pass:{password}"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let info = String::from_utf8_lossy(&out.stderr).into_owned()
            + &String::from_utf8_lossy(&out.stdout);
        for expected in [
            "MAC: sha256, Iteration 600000",
            "Shrouded Keybag: PBES2, PBKDF2, AES-256-CBC, Iteration 600000, PRF hmacWithSHA256",
            "PKCS7 Encrypted data: PBES2, PBKDF2, AES-256-CBC, Iteration 600000, PRF hmacWithSHA256",
        ] {
            assert!(info.contains(expected), "{spec}: {expected} not in\n{info}");
        }
        // The wrong password opens nothing.
        let wrong = Command::new("openssl")
            .args([
                "pkcs12",
                "-info",
                "-noout",
                "-in",
                &bundle,
                "-passin",
                "pass:wrong password",
            ])
            .output()
            .unwrap();
        assert!(!wrong.status.success());

        // Python: the key is keyplane's key (its public half and the certificate's are the
        // published public key), the certificate names the key, and a signature Python makes
        // with the exported key verifies in keyplane.
        let opened = open_and_sign(
            &s,
            w,
            &key,
            &bundle,
            password,
            b"signed by the exported key",
            signing,
        )
        .await;
        let published = s
            .ok(
                &s.admin,
                "get-public-key",
                json!({ "key_id": key, "format": "PEM" }),
            )
            .await;
        assert_eq!(opened["public_key"], published["pem"], "{spec}");
        assert_eq!(opened["certificate_public_key"], published["pem"], "{spec}");
        assert_eq!(opened["certificate_subject"], json!(format!("CN={key}")));
        // The certificate came back beside the bundle, and openssl verifies its
        // self-signature.
        let cert = write(
            w,
            "export.pem",
            r["certificate"].as_str().unwrap().as_bytes(),
        );
        openssl(&["verify", "-CAfile", &cert, &cert]);
    }

    // An encrypt-decrypt key cannot sign a certificate: the caller brings one, of this key.
    let key = s
        .create_key_with(
            &s.admin,
            json!({ "key_spec": "RSA_2048", "key_usage": "encrypt-decrypt", "exportable": true }),
        )
        .await;
    assert_error(
        &export(json!({ "key_id": key, "format": "PKCS12", "password": password })).await,
        400,
        "ValidationError",
        "pass one in certificate",
    );
    let published = s
        .ok(
            &s.admin,
            "get-public-key",
            json!({ "key_id": key, "format": "PEM" }),
        )
        .await;
    let public = write(w, "enc.pub", published["pem"].as_str().unwrap().as_bytes());
    let certificate = pkcs12_py(&["certify", &public]);
    let r = s
        .ok(
            &s.admin,
            "export-key",
            json!({ "key_id": key, "format": "PKCS12", "password": password, "certificate": certificate }),
        )
        .await;
    assert_eq!(r["certificate"], json!(certificate));
    let bundle = write(w, "enc.p12", &unb64(&r["pkcs12"]));
    let opened: Value =
        serde_json::from_str(&pkcs12_py(&["open", &bundle, password, &message])).unwrap();
    assert_eq!(opened["public_key"], published["pem"]);
    assert_eq!(opened["certificate_subject"], json!("CN=certified"));

    // Refusals: a certificate of another key, a symmetric key, a key not created exportable,
    // a short password, fields of the other format.
    let other = s
        .create_key_of(&s.admin, "RSA_2048", "encrypt-decrypt")
        .await;
    let other_pem = s
        .ok(
            &s.admin,
            "get-public-key",
            json!({ "key_id": other, "format": "PEM" }),
        )
        .await["pem"]
        .as_str()
        .unwrap()
        .to_string();
    let foreign = pkcs12_py(&["certify", &write(w, "other.pub", other_pem.as_bytes())]);
    assert_error(
        &export(json!({ "key_id": key, "format": "PKCS12", "password": password, "certificate": foreign })).await,
        400,
        "ValidationError",
        "not of the public key",
    );
    assert_error(
        &export(json!({ "key_id": other, "format": "PKCS12", "password": password, "certificate": foreign })).await,
        400,
        "ValidationError",
        "not created exportable",
    );
    let aes = s
        .create_key_with(&s.admin, json!({ "protection": "hsm", "exportable": true }))
        .await;
    assert_error(
        &export(json!({ "key_id": aes, "format": "PKCS12", "password": password })).await,
        400,
        "ValidationError",
        "PKCS12 is for key pairs",
    );
    assert_error(
        &export(json!({ "key_id": key, "format": "PKCS12", "password": "short" })).await,
        400,
        "ValidationError",
        "8 to 1024 bytes",
    );
    assert_error(
        &export(
            json!({ "key_id": key, "format": "PKCS12", "password": password,
                        "wrapping_algorithm": "RSA_AES_KEY_WRAP_SHA_1" }),
        )
        .await,
        400,
        "ValidationError",
        "wrapping_algorithm does not apply",
    );
    assert_error(
        &export(json!({ "key_id": key, "format": "PFX", "password": password })).await,
        400,
        "ValidationError",
        "format must be",
    );
    // Bundles are slow to make on purpose: a node makes two at once and throttles the rest
    // (429 with Retry-After), and makes them again once those are done.
    let body = json!({ "key_id": key, "format": "PKCS12", "password": password, "certificate": certificate });
    let many = (0..6).map(|_| export(body.clone()));
    let answers = futures::future::join_all(many).await;
    let statuses: Vec<u16> = answers.iter().map(|(st, _)| *st).collect();
    assert!(statuses.contains(&200), "{statuses:?}");
    assert!(
        statuses.iter().all(|st| *st == 200 || *st == 429),
        "{statuses:?}"
    );
    let throttled = answers.iter().find(|(st, _)| *st == 429);
    let (_, v) = throttled.unwrap_or_else(|| panic!("none throttled: {statuses:?}"));
    assert_eq!(v["error"]["code"], "Throttled", "{v}");
    assert_eq!(export(body).await.0, 200);
    // A throttled bundle did nothing: a key given no certificate signs its own, and only the
    // bundles made did (before, each throttled request had signed one first, with no record
    // of its own: the pipeline counts a throttled request in an aggregated record).
    let signer = s
        .create_key_with(
            &s.admin,
            json!({ "key_spec": "ECC_NIST_P256", "key_usage": "sign-verify", "exportable": true }),
        )
        .await;
    let body = json!({ "key_id": signer, "format": "PKCS12", "password": password });
    let answers = futures::future::join_all((0..6).map(|_| export(body.clone()))).await;
    let made = answers.iter().filter(|(st, _)| *st == 200).count();
    assert!(made < 6, "none throttled");
    let versions = s
        .ok(&s.admin, "list-key-versions", json!({ "key_id": signer }))
        .await;
    assert_eq!(
        versions["versions"][0]["signatures"], made as i64,
        "{versions}"
    );

    // The password is nowhere in the audit log.
    let audit = serde_json::to_string(&s.audit_records()).unwrap();
    assert!(!audit.contains(password));
}

/// One deletion of a key's imported material at a time: a second one, begun while the first
/// runs, is refused. (Before, it went on: had it still been shredding when the first had
/// finished and the material was imported again, it would have destroyed the new material.)
#[cfg(all(feature = "test-hooks", debug_assertions))]
#[tokio::test(flavor = "multi_thread")]
async fn one_deletion_of_imported_material_runs_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let s = Server::start_quiet(dir.path()).await;
    let key = external_hsm_key(&s).await;
    let material = openssl(&["rand", "32"]);
    let import_material = || import_sha1(&s, &key, work.path(), &material);
    import_material().await;
    let ct = s.encrypt(&s.admin, &key, b"kept", json!({})).await;

    let delete = || {
        s.call(
            Some(&s.admin),
            "delete-imported-key-material",
            json!({ "key_id": key }),
        )
    };
    let second = async {
        assert_error(
            &delete().await,
            409,
            "InvalidState",
            "being deleted by another request",
        );
    };
    let first = s
        .interleaved("delete-material:begun", &key, delete(), second)
        .await;
    assert_eq!(first.0, 200, "{}", first.1);
    assert_eq!(first.1["state"], "pending-import");

    // The claim was given up: the material comes back, and goes again.
    import_material().await;
    let (status, v) = s.decrypt(&s.admin, &ct, json!({})).await;
    assert_eq!(
        (status, common::unb64(&v["plaintext"])),
        (200, b"kept".to_vec())
    );
    let again = delete().await;
    assert_eq!(again.0, 200, "{}", again.1);
}

/// A deletion of imported material that the HSM interrupts (the token away once the key is
/// expiring) fails as `503` with the material still in the token, and is finished by the
/// scheduler once the token is back, as what it was, a deletion on request: recorded as
/// `DeleteImportedKeyMaterial`, the version's reason "imported material deleted" (it used to
/// be recorded as an expiry of material that had not expired).
#[cfg(all(feature = "test-hooks", debug_assertions))]
#[tokio::test(flavor = "multi_thread")]
async fn an_interrupted_deletion_of_imported_material_is_finished_as_a_deletion() {
    let dir = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let s = Server::start_quiet(dir.path()).await;
    let key = external_hsm_key(&s).await;
    import_sha1(&s, &key, work.path(), &openssl(&["rand", "32"])).await;
    let material_objects = || common::token_objects_of(dir.path(), &key);
    assert_eq!(material_objects(), 1);

    let token = common::token_dir(dir.path());
    let away = dir.path().join("token-away");
    let delete = s.call(
        Some(&s.admin),
        "delete-imported-key-material",
        json!({ "key_id": key }),
    );
    let token_goes = async { std::fs::rename(&token, &away).unwrap() };
    let answer = s
        .interleaved("delete-material:begun", &key, delete, token_goes)
        .await;
    // The token's objects cannot be seen: nothing is taken as destroyed (SoftHSM2 answers
    // every search with nothing then, and the deletion used to succeed, leaving the material
    // in the token once it came back).
    assert_error(&answer, 503, "HsmUnavailable", "");
    std::fs::rename(&away, &token).unwrap();
    assert_eq!(material_objects(), 1);
    let state = || async {
        s.ok(&s.admin, "describe-key", json!({ "key_id": key }))
            .await["state"]
            .clone()
    };
    assert_eq!(state().await, "expiring");

    // The token is back within a second or so: the scheduler finishes the deletion.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while state().await != "pending-import" {
        assert!(std::time::Instant::now() < deadline, "not finished");
        s.ok(&s.admin, "run-scheduler", json!({})).await;
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(material_objects(), 0, "the material is gone from the token");
    let versions = s
        .ok(&s.admin, "list-key-versions", json!({ "key_id": key }))
        .await;
    assert_eq!(
        versions["versions"][0]["state_reason"], "imported material deleted",
        "{versions}"
    );
    let records = s.audit_records();
    // (On PostgreSQL records are in chains, not one order: compared as a set.)
    let of_key: std::collections::BTreeSet<(bool, &str, &str)> = records
        .iter()
        .filter(|r| r["resource"].as_str().is_some_and(|r| r.contains(&key)))
        .filter(|r| {
            r["action"]
                .as_str()
                .is_some_and(|a| a.contains("KeyMaterial"))
        })
        .filter_map(|r| {
            let by_scheduler = r["principal"] == "keyplane:scheduler";
            Some((by_scheduler, r["action"].as_str()?, r["outcome"].as_str()?))
        })
        .collect();
    // A pass run while the token was still coming back failed as the request did.
    let of_key: Vec<_> = of_key
        .into_iter()
        .filter(|r| *r != (true, "DeleteImportedKeyMaterial", "HsmUnavailable"))
        .collect();
    assert_eq!(
        of_key,
        [
            (false, "BeginDeleteImportedKeyMaterial", "ok"),
            (false, "DeleteImportedKeyMaterial", "HsmUnavailable"),
            (false, "ImportKeyMaterial", "ok"),
            (true, "DeleteImportedKeyMaterial", "ok"),
        ],
        "{records:?}"
    );
    s.assert_audit_verifies();
}

#[cfg(all(feature = "test-hooks", debug_assertions))]
#[tokio::test(flavor = "multi_thread")]
async fn pkcs12_bundles_import_as_byok_key_pairs() {
    let dir = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let s = Server::start_quiet(dir.path()).await;
    let w = work.path();
    let password = "correct horse battery";
    let external = |spec: &str| {
        let (s, spec) = (&s, spec.to_string());
        async move { external_key(s, json!({ "key_spec": spec, "key_usage": "sign-verify" })).await }
    };
    let import_p12 = |key: String, token: Value, bundle: Vec<u8>, password: &str| {
        let (s, password) = (&s, password.to_string());
        async move {
            s.call(
                Some(&s.admin),
                "import-key-material",
                json!({ "key_id": key, "import_token": token, "pkcs12": b64(&bundle),
                        "password": password }),
            )
            .await
        }
    };

    // Bundles as Python's cryptography writes them (PBES2, AES-256-CBC, HMAC-SHA-256), of a
    // P-256 and an RSA-3072 key: each becomes the key, which signs for its owner.
    for (spec, option, signing) in [
        ("ECC_NIST_P256", "modern", "ECDSA_SHA_256"),
        ("RSA_3072", "modern", "RSASSA_PKCS1_V1_5_SHA_256"),
    ] {
        let key = external(spec).await;
        let path = w.join(format!("{spec}.p12")).to_string_lossy().into_owned();
        let public = pkcs12_py(&["make", spec, password, &path, option]);
        let bundle = std::fs::read(&path).unwrap();
        let token = params(&s, &key, "RSA_AES_KEY_WRAP_SHA_1").await["import_token"].clone();

        // Refusals leave the token usable: a wrong password, a bundle cut short, a bundle
        // beside encrypted_key_material.
        assert_error(
            &import_p12(key.clone(), token.clone(), bundle.clone(), "wrong password").await,
            400,
            "ValidationError",
            "wrong password",
        );
        assert_error(
            &import_p12(
                key.clone(),
                token.clone(),
                bundle[..bundle.len() / 2].to_vec(),
                password,
            )
            .await,
            400,
            "ValidationError",
            "pkcs12",
        );
        assert_error(
            &s.call(
                Some(&s.admin),
                "import-key-material",
                json!({ "key_id": key, "import_token": token, "pkcs12": b64(&bundle),
                        "password": password, "encrypted_key_material": b64(&bundle) }),
            )
            .await,
            400,
            "ValidationError",
            "not both",
        );

        let (st, r) = import_p12(key.clone(), token.clone(), bundle.clone(), password).await;
        assert_eq!((st, &r["state"]), (200, &json!("enabled")), "{r}");
        let published = s
            .ok(
                &s.admin,
                "get-public-key",
                json!({ "key_id": key, "format": "PEM" }),
            )
            .await;
        assert_eq!(published["pem"], json!(public), "{spec}");
        // keyplane signs with the imported key; Python's signature with the original key
        // verifies in keyplane, and keyplane's verifies in openssl against the owner's
        // public key.
        open_and_sign(
            &s,
            w,
            &key,
            &path,
            password,
            b"bring your own bundle",
            signing,
        )
        .await;
        let msg = write(w, "msg.txt", b"bring your own bundle");
        let sig = s
            .ok(
                &s.admin,
                "sign",
                json!({ "key_id": key, "message": b64(b"bring your own bundle"),
                        "signing_algorithm": signing }),
            )
            .await;
        let sig = write(w, "sig.bin", &unb64(&sig["signature"]));
        let pubf = write(w, "owner.pub", public.as_bytes());
        openssl(&[
            "dgst",
            "-sha256",
            "-verify",
            &pubf,
            "-signature",
            &sig,
            &msg,
        ]);
        // The key has its material: the same bundle again is refused.
        assert_eq!(
            import_p12(key.clone(), token.clone(), bundle.clone(), password)
                .await
                .0,
            409
        );
    }

    // A bundle of another spec, and one asking for more key-derivation work than keyplane
    // does, are refused before anything reaches the token.
    let key = external("RSA_2048").await;
    let token = params(&s, &key, "RSA_AES_KEY_WRAP_SHA_1").await["import_token"].clone();
    let p256 = std::fs::read(w.join("ECC_NIST_P256.p12")).unwrap();
    assert_error(
        &import_p12(key.clone(), token.clone(), p256, password).await,
        400,
        "IncorrectKeyMaterial",
        "holds a ECC_NIST_P256 key",
    );
    // A legacy bundle (3DES and a SHA-1 MAC, as `openssl pkcs12 -legacy` writes) is refused
    // with the way out.
    let legacy = w.join("legacy.p12").to_string_lossy().into_owned();
    pkcs12_py(&["make", "RSA_2048", password, &legacy, "legacy"]);
    assert_error(
        &import_p12(
            key.clone(),
            token.clone(),
            std::fs::read(&legacy).unwrap(),
            password,
        )
        .await,
        400,
        "ValidationError",
        "export it again with PBES2",
    );
    let heavy = w.join("heavy.p12").to_string_lossy().into_owned();
    pkcs12_py(&["make", "RSA_2048", password, &heavy, "rounds=3000000"]);
    assert_error(
        &import_p12(
            key.clone(),
            token.clone(),
            std::fs::read(&heavy).unwrap(),
            password,
        )
        .await,
        400,
        "ValidationError",
        "3000000 key-derivation iterations",
    );
    // Symmetric keys take raw material only.
    let aes = external_hsm_key(&s).await;
    let token = params(&s, &aes, "RSA_AES_KEY_WRAP_SHA_1").await["import_token"].clone();
    assert_error(
        &import_p12(aes, token, std::fs::read(&heavy).unwrap(), password).await,
        400,
        "ValidationError",
        "not a key pair",
    );
    let audit = serde_json::to_string(&s.audit_records()).unwrap();
    assert!(!audit.contains(password));
}

/// A policy can tell the forms of export apart (`context.export_format`): here key material
/// may leave wrapped to a recipient's RSA key but never under a password, and the refusal is
/// audited as a deny naming the policy. The same key, principal and second are decided apart
/// for each form (the decision memo keys on the form too).
#[cfg(all(feature = "test-hooks", debug_assertions))]
#[tokio::test(flavor = "multi_thread")]
async fn a_policy_can_forbid_password_protected_export() {
    let dir = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let policies = common::copy_of_shipped_policies(&work.path().join("policies"));
    std::fs::write(
        policies.join("no-password-export.cedar"),
        r#"@id("no-password-export")
@description("Key material leaves only wrapped to a recipient's RSA key, never under a password.")
forbid (principal, action == Keyplane::Action::"ExportKey", resource)
when { context has export_format && context.export_format == "PKCS12" };
"#,
    )
    .unwrap();
    let s = Server::start_with_policies(dir.path(), &policies).await;
    let recipient = Recipient::new(work.path());
    let key = s
        .create_key_with(
            &s.admin,
            json!({ "key_spec": "ECC_NIST_P256", "key_usage": "sign-verify", "exportable": true }),
        )
        .await;
    for _ in 0..2 {
        let refused = s
            .call(
                Some(&s.admin),
                "export-key",
                json!({ "key_id": key, "format": "PKCS12", "password": "correct horse battery" }),
            )
            .await;
        assert_error(&refused, 403, "AccessDenied", "ExportKey");
        let r = s
            .ok(
                &s.admin,
                "export-key",
                json!({ "key_id": key, "wrapping_algorithm": "RSA_AES_KEY_WRAP_SHA_1",
                        "public_key": recipient.public }),
            )
            .await;
        assert_eq!(r["key_material_format"], "PKCS8", "{r}");
    }
    let exports: Vec<Value> = s
        .audit_records()
        .into_iter()
        .filter(|r| r["action"] == "ExportKey")
        .collect();
    // Audit chains are per writer, so sequence order is not request order: count instead.
    // Each request was answered as it should be above; here every deny names the forbid
    // and every allow the admin's permit, two of each.
    let mut decided: Vec<(String, String)> = exports
        .iter()
        .map(|r| (r["decision"].to_string(), r["policies"].to_string()))
        .collect();
    decided.sort();
    let expected = |d: &str, p: &str| (format!("\"{d}\""), format!("[\"{p}\"]"));
    assert_eq!(
        decided,
        [
            expected("allow", "tenant-admin-exports-keys"),
            expected("allow", "tenant-admin-exports-keys"),
            expected("deny", "no-password-export"),
            expected("deny", "no-password-export"),
        ],
        "{exports:?}"
    );

    // `policy who-can` lists ExportKey once per form: the admin for WRAPPED only.
    let resource = format!("Key::\"{key}\"");
    let out = s.tool(&[
        "policy",
        "who-can",
        "--action",
        "ExportKey",
        "--resource",
        &resource,
        "--policies",
        policies.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (wrapped, pkcs12) = text.split_once("(export_format PKCS12)").unwrap();
    assert!(wrapped.contains("(export_format WRAPPED)"), "{text}");
    assert!(wrapped.contains("\tadmin\t"), "{text}");
    assert!(!pkcs12.contains("\tadmin\t"), "{text}");
}

/// An RSA encryption key pair imports as PKCS#8 too, its halves proven to belong together by
/// a round trip through the token (OAEP), and then decrypts what the owner's public key
/// encrypted; one whose private values are another key's is refused.
#[tokio::test(flavor = "multi_thread")]
async fn rsa_encryption_pairs_import_only_when_their_halves_belong_together() {
    let dir = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let s = Server::start_quiet(dir.path()).await;
    let w = work.path();
    let key = external_key(
        &s,
        json!({ "key_spec": "RSA_2048", "key_usage": "encrypt-decrypt" }),
    )
    .await;
    let (owner_pem, owner) = rsa_pkcs8(w, "owner.pem", 2048);
    let (_, other) = rsa_pkcs8(w, "other.pem", 2048);
    let p = params(&s, &key, "RSA_AES_KEY_WRAP_SHA_1").await;
    let wrap_pem = p["public_key_pem"].as_str().unwrap().to_string();
    assert_error(
        &import(
            &s,
            &key,
            &p["import_token"],
            &rsa_aes_wrap(w, &wrap_pem, &mismatched_rsa(&owner, &other)),
            json!({}),
        )
        .await,
        400,
        "IncorrectKeyMaterial",
        "does not belong",
    );
    let r = import(
        &s,
        &key,
        &p["import_token"],
        &rsa_aes_wrap(w, &wrap_pem, &owner),
        json!({}),
    )
    .await;
    assert_eq!(r.0, 200, "{}", r.1);
    let input = write(w, "secret.bin", b"for the owner's key");
    let sealed = openssl(&[
        "pkeyutl",
        "-encrypt",
        "-inkey",
        &owner_pem,
        "-in",
        &input,
        "-pkeyopt",
        "rsa_padding_mode:oaep",
        "-pkeyopt",
        "rsa_oaep_md:sha1",
        "-pkeyopt",
        "rsa_mgf1_md:sha1",
    ]);
    let v = s
        .ok(
            &s.admin,
            "decrypt",
            json!({ "key_id": key, "ciphertext_blob": b64(&sealed), "encryption_algorithm": "RSAES_OAEP_SHA_1" }),
        )
        .await;
    assert_eq!(unb64(&v["plaintext"]), b"for the owner's key");
}

/// A new RSA key of `bits` made by openssl in `dir`: its PEM file and its PKCS#8 DER.
fn rsa_pkcs8(dir: &Path, name: &str, bits: u32) -> (String, Vec<u8>) {
    let pem = dir.join(name).to_string_lossy().into_owned();
    openssl(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        &format!("rsa_keygen_bits:{bits}"),
        "-out",
        &pem,
    ]);
    let der = openssl(&[
        "pkcs8", "-topk8", "-nocrypt", "-in", &pem, "-outform", "DER",
    ]);
    (pem, der)
}

/// A PKCS#8 RSA key with the modulus and public exponent of `public_of` and every private
/// value of `private_of` (which no RSA library would make: each validates its keys).
fn mismatched_rsa(public_of: &[u8], private_of: &[u8]) -> Vec<u8> {
    use der::{Decode, Encode};
    let a = pkcs8::PrivateKeyInfo::from_der(public_of).unwrap();
    let b = pkcs8::PrivateKeyInfo::from_der(private_of).unwrap();
    let (ka, kb) = (
        pkcs1::RsaPrivateKey::from_der(a.private_key).unwrap(),
        pkcs1::RsaPrivateKey::from_der(b.private_key).unwrap(),
    );
    let forged = pkcs1::RsaPrivateKey {
        modulus: ka.modulus,
        public_exponent: ka.public_exponent,
        ..kb
    }
    .to_der()
    .unwrap();
    pkcs8::PrivateKeyInfo {
        algorithm: a.algorithm,
        private_key: &forged,
        public_key: None,
    }
    .to_der()
    .unwrap()
}

/// The scheduler claims a key's material for its expiry at the time it reaches the key, not
/// at the time its pass began: a pass slowed past the claim's length (here, by a destruction
/// before it) held a claim that had already expired, which a `delete-imported-key-material`
/// could take over and join; that deletion, still shredding after the expiry had finished,
/// destroyed material imported again meanwhile.
#[tokio::test(flavor = "multi_thread")]
async fn an_expiry_late_in_a_pass_holds_its_claim_on_the_material() {
    let dir = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let s = Server::start_quiet(dir.path()).await;
    let imported = external_hsm_key(&s).await;
    import_for_an_hour(&s, &imported, work.path(), &openssl(&["rand", "32"])).await;
    // A key whose deletion window passes with the material's validity: the pass destroys it
    // first, then expires the material.
    let doomed = s.create_key(&s.admin, "hsm").await;
    let approver = s.second_admin("default").await;
    let (status, v) = s
        .schedule_deletion(
            &s.admin,
            &approver,
            json!({ "key_id": doomed, "pending_window_days": 7 }),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    s.advance_clock(8 * 86_400).await;

    s.pause("destroy:shredding", &doomed, "arm").await;
    s.pause("shred:objects-destroyed", &imported, "arm").await;
    let pass = s.call(Some(&s.admin), "run-scheduler", json!({}));
    let rest = async {
        let reached = s.pause("destroy:shredding", &doomed, "wait").await;
        assert_eq!(reached["reached"], true);
        // The pass takes longer than a claim lasts before it reaches the expiry.
        s.advance_clock(700).await;
        s.pause("destroy:shredding", &doomed, "release").await;
        let reached = s.pause("shred:objects-destroyed", &imported, "wait").await;
        assert_eq!(reached["reached"], true);
        let now = s.advance_clock(0).await;
        let claim_until: i64 = sqlx::query_scalar(&format!(
            "SELECT expires_at FROM leases WHERE name = 'material:{imported}'"
        ))
        .fetch_one(&s.sql_any().await)
        .await
        .unwrap();
        assert!(claim_until > now, "claim ended at {claim_until}, now {now}");
        let deletion = s
            .call(
                Some(&s.admin),
                "delete-imported-key-material",
                json!({ "key_id": imported }),
            )
            .await;
        s.pause("shred:objects-destroyed", &imported, "release")
            .await;
        deletion
    };
    let ((status, report), deletion) = tokio::join!(pass, rest);
    assert_error(
        &deletion,
        409,
        "InvalidState",
        "being deleted by another request",
    );
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["destroyed"], json!([doomed]), "{report}");
    assert_eq!(report["expired"], json!([imported]), "{report}");
    let d = s
        .ok(&s.admin, "describe-key", json!({ "key_id": imported }))
        .await;
    assert_eq!(d["state"], "pending-import", "{d}");
}

/// A deletion of imported material whose storage backend is too busy to delete the blob (the
/// tenant's plugin slots taken) is answered as begun and left to the scheduler, and audited:
/// before, it was answered 429 like a refusal that did nothing (and not audited on its own),
/// with the key already expiring, so a client's retry was told the key was in the wrong state.
#[tokio::test(flavor = "multi_thread")]
async fn a_material_deletion_begun_is_never_answered_throttled() {
    let dir = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let s = Server::start_with_env(
        dir.path(),
        &[
            ("RUST_LOG", "warn"),
            ("KEYPLANE_PLUGINS__TENANT_CONCURRENCY", "1"),
            ("KEYPLANE_PLUGINS__TENANT_QUEUE_MS", "0"),
            ("KEYPLANE_PLUGINS__TENANT_FUEL_PER_SECOND", "0"),
            ("KEYPLANE_PLUGINS__FUEL", "1000000000000"),
            ("KEYPLANE_PLUGINS__DEADLINE_MS", "3000"),
        ],
    )
    .await;
    s.kv_backend(&s.admin).await;
    s.ok(
        &s.admin,
        "upload-plugin",
        json!({ "name": "spin", "world": "rotation-schedule",
                "component": b64(&common::wasm("hostile-spin")) }),
    )
    .await;
    let key = external_key(&s, json!({ "protection": "envelope" })).await;
    import_sha1(&s, &key, work.path(), &openssl(&["rand", "32"])).await;

    s.pause("delete-material:begun", &key, "arm").await;
    let deletion = async {
        let answer = s
            .call(
                Some(&s.admin),
                "delete-imported-key-material",
                json!({ "key_id": key }),
            )
            .await;
        // Refused the tenant's slot: the plugin call holding it goes on.
        s.pause("plugin:admitted", "default", "release").await;
        answer
    };
    let rest = async {
        let reached = s.pause("delete-material:begun", &key, "wait").await;
        assert_eq!(reached["reached"], true);
        // Another call of the tenant's takes its one plugin slot, and holds it.
        s.pause("plugin:admitted", "default", "arm").await;
        let spin = s.call(
            Some(&s.admin),
            "preview-rotation",
            json!({ "key_id": key, "plugin": "spin", "config": {}, "now": 0, "key_info": {} }),
        );
        let release = async {
            let held = s.pause("plugin:admitted", "default", "wait").await;
            assert_eq!(held["reached"], true);
            s.pause("delete-material:begun", &key, "release").await;
        };
        tokio::join!(spin, release).0
    };
    let (deletion, spin) = tokio::join!(deletion, rest);
    assert_eq!(spin.0, 504, "{}", spin.1);
    assert_error(&deletion, 409, "InvalidState", "the scheduler finishes it");
    let d = s
        .ok(&s.admin, "describe-key", json!({ "key_id": key }))
        .await;
    assert_eq!(d["state"], "expiring", "{d}");
    let failed = s
        .audit_records()
        .into_iter()
        .filter(|r| r["action"] == "DeleteImportedKeyMaterial" && r["outcome"] == "InvalidState")
        .count();
    assert_eq!(failed, 1);
    // The scheduler finishes it.
    let pass = s.ok(&s.admin, "run-scheduler", json!({})).await;
    assert_eq!(pass["expired"], json!([key]), "{pass}");
}
