//! The symmetric key specs beside `AES_256_GCM` — `AES_128_GCM` (`envelope` or `hsm`) and
//! `CHACHA20_POLY1305` (`envelope` only) — end to end against the real binary and SoftHSM2
//! token: every use of a symmetric key, rewrapping between specs, rotation (on demand and
//! automatic), version and key states, destruction, and the AWS KMS front (boto3). The
//! algorithm is proven outside keyplane: ciphertexts of envelope keys are opened, and
//! ciphertexts keyplane must open are sealed, by RustCrypto's `aes-gcm` and `chacha20poly1305`
//! with the key's material (the `/debug/envelope-material` hook) and the ciphertext format's
//! documented layout; an `hsm` AES-128 version's token object is read with `pkcs11-tool`.

// The material hook and the service clock are test hooks.
#![cfg(all(feature = "test-hooks", debug_assertions))]

mod common;

use std::collections::BTreeMap;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes128Gcm, Aes256Gcm};
use chacha20poly1305::ChaCha20Poly1305;
use common::aws::{access_key, client, run, venv_bin};
use common::{assert_error, b64, token_secret_key_kinds, unb64, Server};
use serde_json::{json, Value};

/// A spec and protection under test, with what its ciphertexts and material must be.
struct Case {
    spec: &'static str,
    /// `None`: the default (envelope for symmetric specs).
    protection: Option<&'static str>,
    /// The ciphertext format's algorithm byte.
    algorithm: u8,
    key_len: usize,
}

const CASES: &[Case] = &[
    Case {
        spec: "AES_128_GCM",
        protection: None,
        algorithm: 2,
        key_len: 16,
    },
    Case {
        spec: "AES_128_GCM",
        protection: Some("hsm"),
        algorithm: 2,
        key_len: 16,
    },
    Case {
        spec: "CHACHA20_POLY1305",
        protection: None,
        algorithm: 3,
        key_len: 32,
    },
];

impl Case {
    fn envelope(&self) -> bool {
        self.protection != Some("hsm")
    }

    fn name(&self) -> String {
        format!("{} {:?}", self.spec, self.protection)
    }

    /// The encryption context of the case's bound ciphertexts.
    fn context(&self) -> Value {
        json!({ "app": "specs", "case": self.name() })
    }

    /// The plaintext of the case's first ciphertexts.
    fn plaintext(&self) -> Vec<u8> {
        format!("secret under {}", self.name()).into_bytes()
    }
}

/// The canonical encryption context as the format documents it: the pair count, then each
/// key and value (in key order) as a u32 big-endian length and the bytes.
fn canonical(ctx: &Value) -> Vec<u8> {
    let pairs: BTreeMap<&str, &str> = ctx
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str().unwrap()))
        .collect();
    let mut out = (pairs.len() as u32).to_be_bytes().to_vec();
    for (k, v) in pairs {
        for s in [k, v] {
            out.extend((s.len() as u32).to_be_bytes());
            out.extend(s.as_bytes());
        }
    }
    out
}

/// Where a ciphertext's header ends, read by the documented layout: `"KP"`, version 1, the
/// algorithm, the key id's length L and the id, the version (4 bytes), the nonce's length N
/// and the nonce; the sealed data and its 16-byte tag follow.
fn header_len(blob: &[u8]) -> usize {
    assert_eq!(&blob[..3], b"KP\x01");
    let nonce_len_at = 5 + blob[4] as usize + 4;
    assert_eq!(blob[nonce_len_at], 12, "96-bit nonces");
    nonce_len_at + 1 + 12
}

/// Run the AEAD the header's algorithm byte names with `material`: `open` a sealed ‖ tag, or
/// seal a plaintext.
fn aead(
    algorithm: u8,
    material: &[u8],
    nonce: &[u8],
    payload: Payload,
    open: bool,
) -> Option<Vec<u8>> {
    macro_rules! run {
        ($cipher:ty) => {{
            let c = <$cipher>::new_from_slice(material).expect("the spec's key length");
            if open {
                c.decrypt(nonce.into(), payload).ok()
            } else {
                c.encrypt(nonce.into(), payload).ok()
            }
        }};
    }
    match algorithm {
        1 => run!(Aes256Gcm),
        2 => run!(Aes128Gcm),
        3 => run!(ChaCha20Poly1305),
        other => panic!("unknown algorithm {other}"),
    }
}

/// Open a keyplane ciphertext outside keyplane: AAD = header ‖ canonical context.
fn open_independently(material: &[u8], blob: &[u8], ctx: &Value) -> Option<Vec<u8>> {
    let (header, sealed) = blob.split_at(header_len(blob));
    let mut aad = header.to_vec();
    aad.extend(canonical(ctx));
    let payload = Payload {
        msg: sealed,
        aad: &aad,
    };
    aead(
        blob[3],
        material,
        &header[header.len() - 12..],
        payload,
        true,
    )
}

/// A ciphertext made outside keyplane, in the format, from one of `key`'s (for its header:
/// same key id, version and algorithm, a new nonce).
fn seal_independently(material: &[u8], like: &[u8], plaintext: &[u8], ctx: &Value) -> Vec<u8> {
    let mut header = like[..header_len(like)].to_vec();
    let n = header.len();
    header[n - 12..].copy_from_slice(b"other nonce!");
    let mut aad = header.clone();
    aad.extend(canonical(ctx));
    let payload = Payload {
        msg: plaintext,
        aad: &aad,
    };
    let sealed = aead(header[3], material, &header[n - 12..], payload, false).unwrap();
    header.extend(sealed);
    header
}

async fn encrypt(s: &Server, key: &str, pt: &[u8], ctx: &Value) -> Vec<u8> {
    s.encrypt(&s.admin, key, pt, ctx.clone()).await
}

async fn decrypts_to(s: &Server, ct: &[u8], ctx: &Value, pt: &[u8]) -> i64 {
    let (st, d) = s.decrypt(&s.admin, ct, ctx.clone()).await;
    assert_eq!((st, unb64(&d["plaintext"])), (200, pt.to_vec()), "{d}");
    d["key_version"].as_i64().unwrap()
}

/// `blob` (made with `ctx`) rewrapped under `key`'s primary version, with the same context.
async fn rewrap_to(s: &Server, blob: &[u8], ctx: &Value, key: &str) -> Vec<u8> {
    let body = json!({ "ciphertext_blob": b64(blob), "source_encryption_context": ctx,
                       "destination_key_id": key });
    unb64(&s.ok(&s.admin, "rewrap", body).await["ciphertext_blob"])
}

/// The token's secret key objects of `key` (by label `kp:<key>:<version>`), with their kind.
fn token_objects_of(s: &Server, key: &str) -> Vec<(String, String)> {
    let prefix = format!("kp:{key}:");
    token_secret_key_kinds(&s.data_dir)
        .into_iter()
        .filter(|(l, _)| l.starts_with(&prefix))
        .collect()
}

/// Create a key of `case`; checks what describe-key and list-keys say of it.
async fn create(s: &Server, case: &Case) -> String {
    let mut body = json!({ "key_spec": case.spec });
    if let Some(p) = case.protection {
        body["protection"] = json!(p);
    }
    let v = s.ok(&s.admin, "create-key", body).await;
    let protection = if case.envelope() { "envelope" } else { "hsm" };
    assert_eq!(
        (&v["key_spec"], &v["key_usage"], &v["protection"]),
        (
            &json!(case.spec),
            &json!("encrypt-decrypt"),
            &json!(protection)
        ),
        "{v}"
    );
    let key = v["key_id"].as_str().unwrap().to_string();
    let d = s
        .ok(&s.admin, "describe-key", json!({ "key_id": key }))
        .await;
    assert_eq!(d["key_spec"], case.spec, "{d}");
    let listed = s.ok(&s.admin, "list-keys", json!({ "limit": 1000 })).await;
    assert!(
        listed["keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["key_id"] == key.as_str() && k["key_spec"] == case.spec),
        "{listed}"
    );
    key
}

/// Everything a symmetric key does, for one case; returns (key, a version-1 ciphertext with
/// no context, a version-1 ciphertext with `ctx`).
async fn exercise(s: &Server, case: &Case, aes256: &str) -> (String, Vec<u8>, Vec<u8>) {
    let key = create(s, case).await;
    let (what, ctx, pt) = (case.name(), case.context(), case.plaintext());

    // With and without an encryption context; the header names the spec's algorithm.
    let plain = encrypt(s, &key, &pt, &json!({})).await;
    assert_eq!(plain[3], case.algorithm, "{what}");
    assert_eq!(decrypts_to(s, &plain, &json!({}), &pt).await, 1);
    let bound = encrypt(s, &key, &pt, &ctx).await;
    assert_eq!(decrypts_to(s, &bound, &ctx, &pt).await, 1);
    for wrong in [json!({}), json!({ "app": "specs", "case": "another" })] {
        assert_error(
            &s.decrypt(&s.admin, &bound, wrong).await,
            400,
            "InvalidCiphertext",
            "",
        );
    }
    // An altered byte of the nonce, the sealed data or the tag is refused.
    for at in [
        header_len(&bound) - 1,
        header_len(&bound) + 1,
        bound.len() - 1,
    ] {
        let mut altered = bound.clone();
        altered[at] ^= 0x01;
        assert_error(
            &s.decrypt(&s.admin, &altered, ctx.clone()).await,
            400,
            "InvalidCiphertext",
            "",
        );
    }
    // A header naming another algorithm than the key's is invalid (never a failure of the
    // server, although a key length may not fit the algorithm it names).
    for other in [1u8, 2, 3].into_iter().filter(|a| *a != case.algorithm) {
        let mut swapped = bound.clone();
        swapped[3] = other;
        assert_error(
            &s.decrypt(&s.admin, &swapped, ctx.clone()).await,
            400,
            "InvalidCiphertext",
            "algorithm",
        );
    }

    // The algorithm, proven outside keyplane.
    if case.envelope() {
        let material = s.envelope_material(&key).await;
        assert_eq!(material.len(), case.key_len, "{what}");
        assert_eq!(
            open_independently(&material, &bound, &ctx),
            Some(pt.clone())
        );
        assert_eq!(
            open_independently(&material, &plain, &json!({})),
            Some(pt.clone())
        );
        assert_eq!(open_independently(&material, &bound, &json!({})), None);
        let theirs = seal_independently(&material, &bound, b"sealed elsewhere", &ctx);
        decrypts_to(s, &theirs, &ctx, b"sealed elsewhere").await;
    } else {
        assert_eq!(
            token_objects_of(s, &key),
            vec![(format!("kp:{key}:1"), "AES length 16".to_string())],
            "{what}"
        );
    }

    // Data keys under it.
    let dk = s
        .ok(
            &s.admin,
            "generate-data-key",
            json!({ "key_id": key, "key_spec": "AES_256", "encryption_context": ctx }),
        )
        .await;
    let (data_key, dk_blob) = (unb64(&dk["plaintext"]), unb64(&dk["ciphertext_blob"]));
    assert_eq!((data_key.len(), dk_blob[3]), (32, case.algorithm));
    decrypts_to(s, &dk_blob, &ctx, &data_key).await;
    if case.envelope() {
        let material = s.envelope_material(&key).await;
        assert_eq!(
            open_independently(&material, &dk_blob, &ctx),
            Some(data_key)
        );
    }
    let dk = s
        .ok(
            &s.admin,
            "generate-data-key-without-plaintext",
            json!({ "key_id": key, "number_of_bytes": 24 }),
        )
        .await;
    assert!(dk.get("plaintext").is_none(), "{dk}");
    let (st, d) = s
        .decrypt(&s.admin, &unb64(&dk["ciphertext_blob"]), json!({}))
        .await;
    assert_eq!((st, unb64(&d["plaintext"]).len()), (200, 24), "{d}");

    // Rewrap from AES_256_GCM to this key and back.
    let from_256 = encrypt(s, aes256, b"crossing specs", &ctx).await;
    assert_eq!(from_256[3], 1);
    let to_this = rewrap_to(s, &from_256, &ctx, &key).await;
    assert_eq!(to_this[3], case.algorithm);
    decrypts_to(s, &to_this, &ctx, b"crossing specs").await;
    if case.envelope() {
        let material = s.envelope_material(&key).await;
        assert_eq!(
            open_independently(&material, &to_this, &ctx),
            Some(b"crossing specs".to_vec())
        );
    }
    let back = rewrap_to(s, &to_this, &ctx, aes256).await;
    assert_eq!(back[3], 1);
    decrypts_to(s, &back, &ctx, b"crossing specs").await;

    // Rotation: new ciphertexts under version 2, old ones still open.
    let r = s.ok(&s.admin, "rotate-key", json!({ "key_id": key })).await;
    assert_eq!(r["primary_version"], 2, "{r}");
    let v2 = encrypt(s, &key, b"after rotation", &ctx).await;
    assert_eq!(decrypts_to(s, &v2, &ctx, b"after rotation").await, 2);
    assert_eq!(decrypts_to(s, &plain, &json!({}), &pt).await, 1);
    assert_eq!(decrypts_to(s, &bound, &ctx, &pt).await, 1);
    if case.envelope() {
        // The primary's material is now version 2's, of the spec's length too.
        let material = s.envelope_material(&key).await;
        assert_eq!(material.len(), case.key_len);
        assert_eq!(
            open_independently(&material, &v2, &ctx),
            Some(b"after rotation".to_vec())
        );
        assert_eq!(open_independently(&material, &bound, &ctx), None);
    } else {
        let mut objects = token_objects_of(s, &key);
        objects.sort();
        let sixteen = |v: u32| (format!("kp:{key}:{v}"), "AES length 16".to_string());
        assert_eq!(objects, vec![sixteen(1), sixteen(2)]);
    }

    // Key and version states hold as for AES-256 keys.
    s.ok(&s.admin, "disable-key", json!({ "key_id": key }))
        .await;
    assert_error(
        &s.decrypt(&s.admin, &v2, ctx.clone()).await,
        409,
        "InvalidState",
        "disabled",
    );
    s.ok(&s.admin, "enable-key", json!({ "key_id": key })).await;
    let min = json!({ "key_id": key, "version": 2 });
    s.ok(&s.admin, "set-min-decryption-version", min).await;
    assert_error(
        &s.decrypt(&s.admin, &plain, json!({})).await,
        409,
        "InvalidState",
        "minimum decryption version",
    );
    let min = json!({ "key_id": key, "version": 1 });
    s.ok(&s.admin, "set-min-decryption-version", min).await;
    let revoke = json!({ "key_id": key, "version": 1, "reason": "spec test" });
    s.ok(&s.admin, "revoke-key-version", revoke).await;
    assert_error(
        &s.decrypt(&s.admin, &plain, json!({})).await,
        409,
        "InvalidState",
        "rewrap",
    );
    let rewrapped = s
        .ok(
            &s.admin,
            "rewrap",
            json!({ "ciphertext_blob": b64(&plain) }),
        )
        .await;
    assert_eq!(rewrapped["key_version"], 2);
    let rewrapped = unb64(&rewrapped["ciphertext_blob"]);
    assert_eq!(rewrapped[3], case.algorithm);
    decrypts_to(s, &rewrapped, &json!({}), &pt).await;
    (key, rewrapped, v2)
}

#[tokio::test(flavor = "multi_thread")]
async fn aes_128_and_chacha20_keys_do_everything_a_symmetric_key_does() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_quiet(dir.path()).await;
    let aes256 = s.create_key(&s.admin, "envelope").await;
    let mut keys = Vec::new();
    for case in CASES {
        keys.push(exercise(&s, case, &aes256).await);
    }

    // Automatic rotation makes versions of the same spec.
    for (key, _, _) in &keys {
        let body = json!({ "key_id": key, "rotation_period_days": 90 });
        s.ok(&s.admin, "enable-key-rotation", body).await;
    }
    s.advance_clock(91 * 86_400).await;
    let pass = s.ok(&s.admin, "run-scheduler", json!({})).await;
    for ((key, under_v2, v2), case) in keys.iter().zip(CASES) {
        assert!(
            pass["rotated"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["key_id"] == key.as_str()),
            "{pass}"
        );
        let v3 = encrypt(&s, key, b"automatic", &json!({})).await;
        assert_eq!(decrypts_to(&s, &v3, &json!({}), b"automatic").await, 3);
        assert_eq!(v3[3], case.algorithm);
        decrypts_to(&s, v2, &case.context(), b"after rotation").await;
        assert_eq!(
            decrypts_to(&s, under_v2, &json!({}), &case.plaintext()).await,
            2
        );
        if case.envelope() {
            let material = s.envelope_material(key).await;
            assert_eq!(material.len(), case.key_len);
            assert_eq!(
                open_independently(&material, &v3, &json!({})),
                Some(b"automatic".to_vec())
            );
        } else {
            assert_eq!(token_objects_of(&s, key).len(), 3);
        }
    }

    // Destroyed: the material is shredded (the hsm key's token objects are gone) and its
    // ciphertexts fail as destroyed.
    let ids: Vec<&str> = keys.iter().map(|(k, _, _)| k.as_str()).collect();
    s.destroy_keys(&ids).await;
    for (key, under_v2, _) in &keys {
        let d = s
            .ok(&s.admin, "describe-key", json!({ "key_id": key }))
            .await;
        assert_eq!(d["state"], "destroyed", "{d}");
        assert_error(
            &s.decrypt(&s.admin, under_v2, json!({})).await,
            410,
            "KeyDestroyed",
            "destroyed",
        );
        assert_eq!(token_objects_of(&s, key), vec![]);
    }
    s.assert_audit_verifies();
}

#[tokio::test(flavor = "multi_thread")]
async fn chacha20_is_envelope_only_and_the_spec_lists_name_the_new_specs() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_quiet(dir.path()).await;
    // SoftHSM2 has no ChaCha20-Poly1305 mechanism: an hsm ChaCha20 key is a clear 400.
    assert_error(
        &s.call(
            Some(&s.admin),
            "create-key",
            json!({ "key_spec": "CHACHA20_POLY1305", "protection": "hsm" }),
        )
        .await,
        400,
        "ValidationError",
        "key_spec CHACHA20_POLY1305 is available with protection \"envelope\" only",
    );
    let v = s
        .ok(
            &s.admin,
            "create-key",
            json!({ "key_spec": "CHACHA20_POLY1305", "protection": "envelope" }),
        )
        .await;
    assert_eq!(v["protection"], "envelope");
    for (body, needle) in [
        (
            json!({ "key_spec": "AES_128_GCM", "key_usage": "sign-verify" }),
            "allowed: encrypt-decrypt",
        ),
        (
            json!({ "key_spec": "CHACHA20_POLY1305", "key_usage": "generate-verify-mac" }),
            "allowed: encrypt-decrypt",
        ),
        (
            json!({ "key_spec": "AES_192_GCM" }),
            "AES_128_GCM, CHACHA20_POLY1305",
        ),
        (
            json!({ "key_spec": "HMAC_SHA_256", "protection": "envelope" }),
            "\"hsm\" only",
        ),
    ] {
        assert_error(
            &s.call(Some(&s.admin), "create-key", body).await,
            400,
            "ValidationError",
            needle,
        );
    }
    let hsm = s.ok(&s.admin, "describe-hsm", json!({})).await;
    for spec in ["AES_256_GCM", "AES_128_GCM", "CHACHA20_POLY1305"] {
        assert!(
            hsm["key_specs"].as_array().unwrap().contains(&json!(spec)),
            "{hsm}"
        );
    }
    // Not a symmetric spec: a signing key makes no keyplane ciphertext.
    let ecc = s
        .ok(
            &s.admin,
            "create-key",
            json!({ "key_spec": "ECC_NIST_P256" }),
        )
        .await;
    assert_error(
        &s.call(
            Some(&s.admin),
            "generate-data-key",
            json!({ "key_id": ecc["key_id"], "key_spec": "AES_256" }),
        )
        .await,
        400,
        "InvalidKeyUsage",
        "",
    );
}

/// boto3, through the AWS KMS front: the new specs look as AWS shows symmetric keys, and
/// AWS clients encrypt, decrypt, re-encrypt and make data keys with them.
#[tokio::test(flavor = "multi_thread")]
async fn aws_clients_see_the_new_specs_as_symmetric_default_keys() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path()).await;
    let body = json!({ "tenant_id": "acme", "account_id": "111122223333" });
    s.ok(&s.admin, "create-tenant", body).await;
    let body = json!({ "tenant_id": "acme", "name": "alice", "role": "admin" });
    let alice = s.ok(&s.admin, "create-principal", body).await["token"]
        .as_str()
        .unwrap()
        .to_string();
    let mut ids = Vec::new();
    for spec in ["AES_256_GCM", "AES_128_GCM", "CHACHA20_POLY1305"] {
        let v = s
            .ok(&alice, "create-key", json!({ "key_spec": spec }))
            .await;
        ids.push(v["key_id"].as_str().unwrap().to_string());
    }
    let script = r#"
import os, boto3
kms = boto3.client("kms")
aes256, keys = os.environ["AES256"], os.environ["KEYS"].split(",")
for key in keys:
    m = kms.describe_key(KeyId=key)["KeyMetadata"]
    assert m["KeySpec"] == "SYMMETRIC_DEFAULT", m
    assert m["CustomerMasterKeySpec"] == "SYMMETRIC_DEFAULT", m
    assert m["EncryptionAlgorithms"] == ["SYMMETRIC_DEFAULT"], m
    assert m["KeyUsage"] == "ENCRYPT_DECRYPT", m
    ctx = {"app": "aws"}
    ct = kms.encrypt(KeyId=key, Plaintext=b"via boto3", EncryptionContext=ctx)["CiphertextBlob"]
    d = kms.decrypt(CiphertextBlob=ct, EncryptionContext=ctx)
    assert d["Plaintext"] == b"via boto3" and d["KeyId"].endswith(key), d
    r = kms.re_encrypt(CiphertextBlob=ct, SourceEncryptionContext=ctx,
                       DestinationKeyId=aes256, DestinationEncryptionContext=ctx)
    assert kms.decrypt(CiphertextBlob=r["CiphertextBlob"], EncryptionContext=ctx)["Plaintext"] == b"via boto3"
    dk = kms.generate_data_key(KeyId=key, KeySpec="AES_128")
    assert kms.decrypt(CiphertextBlob=dk["CiphertextBlob"])["Plaintext"] == dk["Plaintext"]
    print("ok", key, ct[3])
"#;
    let key = access_key(&s, &alice).await;
    let out = run(client(&venv_bin("python"), &s, &key)
        .env("AES256", &ids[0])
        .env("KEYS", ids[1..].join(","))
        .args(["-c", script]));
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        vec![format!("ok {} 2", ids[1]), format!("ok {} 3", ids[2])],
        "{out}"
    );
}
