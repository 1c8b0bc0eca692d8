//! Key specs beyond AES against the real binary, real SoftHSM2 token and real TLS: HMAC,
//! ECDSA P-256/P-384, Ed25519, RSA (PSS, PKCS#1 v1.5, OAEP), ECDH and finite-field DH
//! (FFDHE_2048/3072). Signatures, public keys and shared secrets are checked outside keyplane
//! with the `openssl` CLI (and, for DH, Python's `cryptography` too).

mod common;

use std::path::Path;
use std::process::Command;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::{assert_error, b64, unb64, Server};
use serde_json::{json, Value};

fn openssl(args: &[&str], dir: &Path) -> std::process::Output {
    Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl")
}

fn openssl_ok(args: &[&str], dir: &Path) -> Vec<u8> {
    let out = openssl(args, dir);
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

async fn create(s: &Server, spec: &str, usage: &str) -> String {
    let v = s
        .ok(
            &s.admin,
            "create-key",
            json!({ "key_spec": spec, "key_usage": usage }),
        )
        .await;
    assert_eq!(v["protection"], "hsm", "{v}");
    assert_eq!(v["key_spec"], spec);
    assert_eq!(v["key_usage"], usage);
    v["key_id"].as_str().unwrap().to_string()
}

/// The public key in all three formats, checked against each other; writes `pub.pem`.
async fn public_key(s: &Server, key: &str, version: Option<u32>, dir: &Path) -> Value {
    let mut body = json!({ "key_id": key });
    if let Some(v) = version {
        body["key_version"] = json!(v);
    }
    let pk = s.ok(&s.admin, "get-public-key", body).await;
    let pem = pk["pem"].as_str().unwrap();
    assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"), "{pk}");
    std::fs::write(dir.join("pub.pem"), pem).unwrap();
    // openssl reads the PEM and its DER is ours.
    let der = openssl_ok(
        &["pkey", "-pubin", "-in", "pub.pem", "-outform", "DER"],
        dir,
    );
    assert_eq!(der, unb64(&pk["der"]));
    // The JWK carries the same key.
    let jwk = &pk["jwk"];
    let d = |f: &str| URL_SAFE_NO_PAD.decode(jwk[f].as_str().unwrap()).unwrap();
    match jwk["kty"].as_str().unwrap() {
        "EC" => {
            let (x, y) = (d("x"), d("y"));
            let mut point = vec![4u8];
            point.extend(&x);
            point.extend(&y);
            assert!(der.ends_with(&point), "JWK point differs from the SPKI");
            let crv = if x.len() == 32 { "P-256" } else { "P-384" };
            assert_eq!(jwk["crv"], crv);
        }
        "OKP" => {
            assert_eq!(jwk["crv"], "Ed25519");
            assert!(der.ends_with(&d("x")));
            assert_eq!(d("x").len(), 32);
        }
        "RSA" => {
            let text = String::from_utf8(openssl_ok(
                &["rsa", "-pubin", "-in", "pub.pem", "-modulus", "-noout"],
                dir,
            ))
            .unwrap();
            let modulus = text.trim().strip_prefix("Modulus=").unwrap().to_lowercase();
            assert_eq!(hex::encode(d("n")), modulus);
            assert_eq!(d("e"), vec![1, 0, 1]);
        }
        other => panic!("unexpected kty {other}"),
    }
    pk
}

fn digest(alg: &str, msg: &[u8]) -> Vec<u8> {
    let d = if alg.ends_with("256") {
        &ring::digest::SHA256
    } else if alg.ends_with("384") {
        &ring::digest::SHA384
    } else {
        &ring::digest::SHA512
    };
    ring::digest::digest(d, msg).as_ref().to_vec()
}

/// Verify `sig` over `msg` (both written to `dir`) with `pub.pem` using the openssl CLI.
fn openssl_verifies(alg: &str, dir: &Path) -> bool {
    let md = if alg.ends_with("256") {
        "-sha256"
    } else if alg.ends_with("384") {
        "-sha384"
    } else {
        "-sha512"
    };
    let out = if alg == "ED25519" {
        openssl(
            &[
                "pkeyutl", "-verify", "-pubin", "-inkey", "pub.pem", "-rawin", "-in", "msg",
                "-sigfile", "sig",
            ],
            dir,
        )
    } else if alg.starts_with("RSASSA_PSS") {
        openssl(
            &[
                "dgst",
                md,
                "-sigopt",
                "rsa_padding_mode:pss",
                "-sigopt",
                "rsa_pss_saltlen:digest",
                "-verify",
                "pub.pem",
                "-signature",
                "sig",
                "msg",
            ],
            dir,
        )
    } else {
        openssl(
            &["dgst", md, "-verify", "pub.pem", "-signature", "sig", "msg"],
            dir,
        )
    };
    out.status.success()
}

async fn sign(s: &Server, key: &str, alg: &str, msg: &[u8], message_type: &str) -> (i64, Vec<u8>) {
    let v = s
        .ok(
            &s.admin,
            "sign",
            json!({ "key_id": key, "message": b64(msg), "message_type": message_type, "signing_algorithm": alg }),
        )
        .await;
    assert_eq!(v["signing_algorithm"], alg);
    (v["key_version"].as_i64().unwrap(), unb64(&v["signature"]))
}

async fn verify(
    s: &Server,
    key: &str,
    alg: &str,
    msg: &[u8],
    sig: &[u8],
    version: Option<u32>,
) -> bool {
    let mut body = json!({ "key_id": key, "message": b64(msg), "signing_algorithm": alg, "signature": b64(sig) });
    if let Some(v) = version {
        body["key_version"] = json!(v);
    }
    let v = s.ok(&s.admin, "verify", body).await;
    v["signature_valid"].as_bool().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn signatures_of_every_spec_verify_in_openssl() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path()).await;
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let cases: &[(&str, &[&str])] = &[
        ("ECC_NIST_P256", &["ECDSA_SHA_256"]),
        ("ECC_NIST_P384", &["ECDSA_SHA_384"]),
        ("ED25519", &["ED25519"]),
        (
            "RSA_2048",
            &[
                "RSASSA_PSS_SHA_256",
                "RSASSA_PSS_SHA_384",
                "RSASSA_PSS_SHA_512",
                "RSASSA_PKCS1_V1_5_SHA_256",
                "RSASSA_PKCS1_V1_5_SHA_384",
                "RSASSA_PKCS1_V1_5_SHA_512",
            ],
        ),
        ("RSA_3072", &["RSASSA_PSS_SHA_384"]),
        ("RSA_4096", &["RSASSA_PKCS1_V1_5_SHA_256"]),
    ];
    let msg = b"the quick brown fox signs over the lazy dog".to_vec();
    std::fs::write(w.join("msg"), &msg).unwrap();
    for (spec, algs) in cases {
        let key = create(&s, spec, "sign-verify").await;
        let pk = public_key(&s, &key, None, w).await;
        let listed: Vec<&str> = pk["signing_algorithms"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        for alg in *algs {
            assert!(listed.contains(alg), "{spec}: {pk}");
            let (version, sig) = sign(&s, &key, alg, &msg, "RAW").await;
            assert_eq!(version, 1);
            std::fs::write(w.join("sig"), &sig).unwrap();
            assert!(openssl_verifies(alg, w), "openssl refused {spec} {alg}");
            assert!(
                verify(&s, &key, alg, &msg, &sig, None).await,
                "{spec} {alg}"
            );
            // Tampered message and tampered signature fail, in keyplane and in openssl.
            let mut bad_msg = msg.clone();
            bad_msg[0] ^= 1;
            assert!(!verify(&s, &key, alg, &bad_msg, &sig, None).await);
            let mut bad_sig = sig.clone();
            let n = bad_sig.len();
            bad_sig[n - 3] ^= 0x40;
            assert!(!verify(&s, &key, alg, &msg, &bad_sig, None).await);
            std::fs::write(w.join("sig"), &bad_sig).unwrap();
            assert!(
                !openssl_verifies(alg, w),
                "openssl accepted a tampered signature"
            );
            if *alg == "ED25519" {
                let r = s
                    .call(
                        Some(&s.admin),
                        "sign",
                        json!({ "key_id": key, "message": b64(&msg), "message_type": "DIGEST", "signing_algorithm": alg }),
                    )
                    .await;
                assert_error(&r, 400, "ValidationError", "RAW");
                continue;
            }
            // A precomputed digest signs the same message.
            let (_, sig) = sign(&s, &key, alg, &digest(alg, &msg), "DIGEST").await;
            std::fs::write(w.join("sig"), &sig).unwrap();
            assert!(
                openssl_verifies(alg, w),
                "openssl refused DIGEST {spec} {alg}"
            );
            assert!(verify(&s, &key, alg, &msg, &sig, None).await);
            let r = s
                .call(
                    Some(&s.admin),
                    "verify",
                    json!({ "key_id": key, "message": b64(&digest(alg, &msg)), "message_type": "DIGEST", "signing_algorithm": alg, "signature": b64(&sig) }),
                )
                .await;
            assert_eq!(r.1["signature_valid"], true, "{}", r.1);
            // A digest of the wrong length is refused.
            let r = s
                .call(
                    Some(&s.admin),
                    "sign",
                    json!({ "key_id": key, "message": b64(&[7u8; 20]), "message_type": "DIGEST", "signing_algorithm": alg }),
                )
                .await;
            assert_error(&r, 400, "ValidationError", "digest");
        }
        // An algorithm of another spec is refused.
        let wrong = if spec.starts_with("RSA") {
            "ECDSA_SHA_256"
        } else {
            "RSASSA_PSS_SHA_256"
        };
        let r = s
            .call(
                Some(&s.admin),
                "sign",
                json!({ "key_id": key, "message": b64(&msg), "signing_algorithm": wrong }),
            )
            .await;
        assert_error(&r, 400, "InvalidKeyUsage", "not available for key_spec");
    }
    let key = create(&s, "ECC_NIST_P256", "sign-verify").await;
    let r = s
        .call(
            Some(&s.admin),
            "sign",
            json!({ "key_id": key, "message": b64(&msg), "signing_algorithm": "ECDSA_SHA_384" }),
        )
        .await;
    assert_error(&r, 400, "InvalidKeyUsage", "ECDSA_SHA_256");
}

#[tokio::test(flavor = "multi_thread")]
async fn hmac_keys_generate_and_verify_macs_in_the_hsm() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path()).await;
    let msg = b"mac me".to_vec();
    for (spec, len) in [
        ("HMAC_SHA_256", 32),
        ("HMAC_SHA_384", 48),
        ("HMAC_SHA_512", 64),
    ] {
        let key = create(&s, spec, "generate-verify-mac").await;
        let v = s
            .ok(
                &s.admin,
                "generate-mac",
                json!({ "key_id": key, "message": b64(&msg), "mac_algorithm": spec }),
            )
            .await;
        let mac = unb64(&v["mac"]);
        assert_eq!(mac.len(), len);
        assert_eq!(v["key_version"], 1);
        let check = |m: Vec<u8>, t: Vec<u8>, version: Option<u32>| {
            let mut body =
                json!({ "key_id": key, "message": b64(&m), "mac_algorithm": spec, "mac": b64(&t) });
            if let Some(v) = version {
                body["key_version"] = json!(v);
            }
            body
        };
        let ok = s
            .ok(
                &s.admin,
                "verify-mac",
                check(msg.clone(), mac.clone(), None),
            )
            .await;
        assert_eq!(ok["mac_valid"], true);
        let mut bad = mac.clone();
        bad[0] ^= 1;
        let no = s
            .ok(&s.admin, "verify-mac", check(msg.clone(), bad, None))
            .await;
        assert_eq!(no["mac_valid"], false);
        let no = s
            .ok(
                &s.admin,
                "verify-mac",
                check(b"other".to_vec(), mac.clone(), None),
            )
            .await;
        assert_eq!(no["mac_valid"], false);
        let short = s
            .ok(
                &s.admin,
                "verify-mac",
                check(msg.clone(), mac[..16].to_vec(), None),
            )
            .await;
        assert_eq!(short["mac_valid"], false);
        // Another hash than the key's is refused.
        let other = if spec == "HMAC_SHA_256" {
            "HMAC_SHA_512"
        } else {
            "HMAC_SHA_256"
        };
        let r = s
            .call(
                Some(&s.admin),
                "generate-mac",
                json!({ "key_id": key, "message": b64(&msg), "mac_algorithm": other }),
            )
            .await;
        assert_error(&r, 400, "InvalidKeyUsage", spec);
        // Rotation: a new key; the old MAC still verifies under version 1.
        s.ok(&s.admin, "rotate-key", json!({ "key_id": key })).await;
        let v2 = s
            .ok(
                &s.admin,
                "generate-mac",
                json!({ "key_id": key, "message": b64(&msg), "mac_algorithm": spec }),
            )
            .await;
        assert_eq!(v2["key_version"], 2);
        assert_ne!(unb64(&v2["mac"]), mac);
        let old = s
            .ok(
                &s.admin,
                "verify-mac",
                check(msg.clone(), mac.clone(), Some(1)),
            )
            .await;
        assert_eq!(old["mac_valid"], true);
        let old = s
            .ok(
                &s.admin,
                "verify-mac",
                check(msg.clone(), mac.clone(), None),
            )
            .await;
        assert_eq!(old["mac_valid"], false);
        // MACs count as signatures of their version.
        let d = s
            .ok(&s.admin, "describe-key", json!({ "key_id": key }))
            .await;
        assert_eq!(d["versions"][0]["signatures"], 1, "{d}");
        assert_eq!(d["versions"][1]["signatures"], 1, "{d}");
        // No other use.
        let r = s
            .call(
                Some(&s.admin),
                "encrypt",
                json!({ "key_id": key, "plaintext": b64(b"x") }),
            )
            .await;
        assert_error(&r, 400, "InvalidKeyUsage", "generate-verify-mac");
        let r = s
            .call(
                Some(&s.admin),
                "sign",
                json!({ "key_id": key, "message": b64(&msg), "signing_algorithm": "ECDSA_SHA_256" }),
            )
            .await;
        assert_error(&r, 400, "InvalidKeyUsage", "generate-verify-mac");
        let r = s
            .call(Some(&s.admin), "get-public-key", json!({ "key_id": key }))
            .await;
        assert_error(&r, 400, "InvalidKeyUsage", "no public key");
    }
    // MAC with an RSA key is refused, naming the key's usage.
    let rsa = create(&s, "RSA_2048", "sign-verify").await;
    let r = s
        .call(
            Some(&s.admin),
            "generate-mac",
            json!({ "key_id": rsa, "message": b64(&msg), "mac_algorithm": "HMAC_SHA_256" }),
        )
        .await;
    assert_error(&r, 400, "InvalidKeyUsage", "sign-verify");
    // HMAC keys are hsm-only.
    let r = s
        .call(
            Some(&s.admin),
            "create-key",
            json!({ "key_spec": "HMAC_SHA_256", "protection": "envelope" }),
        )
        .await;
    assert_error(&r, 400, "ValidationError", "hsm");
}

#[tokio::test(flavor = "multi_thread")]
async fn rsa_oaep_with_the_hash_the_token_supports() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path()).await;
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let hsm = s.ok(&s.admin, "describe-hsm", json!({})).await;
    let alg = hsm["rsa_encryption_algorithm"]
        .as_str()
        .unwrap()
        .to_string();
    // SoftHSM2 accepts only SHA-1 OAEP; the probe must have found that.
    assert_eq!(alg, "RSAES_OAEP_SHA_1", "{hsm}");
    let md = "sha1";
    let key = create(&s, "RSA_2048", "encrypt-decrypt").await;
    let pk = public_key(&s, &key, None, w).await;
    assert_eq!(pk["encryption_algorithms"], json!([alg]));
    assert!(pk.get("signing_algorithms").is_none());

    // Encrypted outside keyplane with openssl, decrypted by keyplane.
    let secret = b"a 32-byte data key, for example!";
    std::fs::write(w.join("pt"), secret).unwrap();
    openssl_ok(
        &[
            "pkeyutl",
            "-encrypt",
            "-pubin",
            "-inkey",
            "pub.pem",
            "-pkeyopt",
            "rsa_padding_mode:oaep",
            "-pkeyopt",
            &format!("rsa_oaep_md:{md}"),
            "-pkeyopt",
            &format!("rsa_mgf1_md:{md}"),
            "-in",
            "pt",
            "-out",
            "ct",
        ],
        w,
    );
    let ct = std::fs::read(w.join("ct")).unwrap();
    assert_eq!(ct.len(), 256);
    let body = |ct: &[u8]| json!({ "key_id": key, "ciphertext_blob": b64(ct), "encryption_algorithm": alg });
    let v = s.ok(&s.admin, "decrypt", body(&ct)).await;
    assert_eq!(unb64(&v["plaintext"]), secret);
    assert_eq!(v["key_version"], 1);

    // Encrypted by keyplane, decrypted by keyplane; the largest plaintext fits, one more not.
    let max = vec![0x5A; 214];
    let e = s
        .ok(
            &s.admin,
            "encrypt",
            json!({ "key_id": key, "plaintext": b64(&max), "encryption_algorithm": alg }),
        )
        .await;
    assert_eq!(e["encryption_algorithm"], alg.as_str());
    let v = s
        .ok(&s.admin, "decrypt", body(&unb64(&e["ciphertext_blob"])))
        .await;
    assert_eq!(unb64(&v["plaintext"]), max);
    let r = s
        .call(
            Some(&s.admin),
            "encrypt",
            json!({ "key_id": key, "plaintext": b64(&[1u8; 215]), "encryption_algorithm": alg }),
        )
        .await;
    assert_error(&r, 400, "ValidationError", "at most 214 bytes");

    // Tampered ciphertext, wrong algorithm, missing algorithm, context: clear 400s.
    let mut bad = ct.clone();
    bad[10] ^= 1;
    let r = s.call(Some(&s.admin), "decrypt", body(&bad)).await;
    assert_error(&r, 400, "InvalidCiphertext", "");
    let r = s
        .call(
            Some(&s.admin),
            "encrypt",
            json!({ "key_id": key, "plaintext": b64(b"x"), "encryption_algorithm": "RSAES_OAEP_SHA_256" }),
        )
        .await;
    assert_error(&r, 400, "ValidationError", "RSAES_OAEP_SHA_1");
    let r = s
        .call(
            Some(&s.admin),
            "encrypt",
            json!({ "key_id": key, "plaintext": b64(b"x") }),
        )
        .await;
    assert_error(
        &r,
        400,
        "InvalidKeyUsage",
        "is incompatible with key spec RSA_",
    );
    let r = s
        .call(
            Some(&s.admin),
            "generate-data-key",
            json!({ "key_id": key }),
        )
        .await;
    assert_error(&r, 400, "InvalidKeyUsage", "AES_256_GCM");
    // Signing with an encryption key, encrypting with signing keys.
    let r = s
        .call(
            Some(&s.admin),
            "sign",
            json!({ "key_id": key, "message": b64(b"m"), "signing_algorithm": "RSASSA_PSS_SHA_256" }),
        )
        .await;
    assert_error(&r, 400, "InvalidKeyUsage", "encrypt-decrypt");
    for spec in ["RSA_2048", "ECC_NIST_P256"] {
        let signer = create(&s, spec, "sign-verify").await;
        let r = s
            .call(
                Some(&s.admin),
                "encrypt",
                json!({ "key_id": signer, "plaintext": b64(b"x"), "encryption_algorithm": alg }),
            )
            .await;
        assert_error(&r, 400, "InvalidKeyUsage", "sign-verify");
    }
    // OAEP with an AES key, signing with an AES key.
    let aes = s.create_key(&s.admin, "hsm").await;
    let r = s
        .call(
            Some(&s.admin),
            "encrypt",
            json!({ "key_id": aes, "plaintext": b64(b"x"), "encryption_algorithm": alg }),
        )
        .await;
    assert_error(&r, 400, "InvalidKeyUsage", "needs an RSA key");
    let r = s
        .call(
            Some(&s.admin),
            "sign",
            json!({ "key_id": aes, "message": b64(b"m"), "signing_algorithm": "ECDSA_SHA_256" }),
        )
        .await;
    assert_error(&r, 400, "InvalidKeyUsage", "encrypt-decrypt");
    // AES keys still encrypt as before.
    let ct = s.encrypt(&s.admin, &aes, b"hello", json!({})).await;
    assert_eq!(s.decrypt(&s.admin, &ct, json!({})).await.0, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn ecdh_matches_openssl_and_refuses_bad_peers() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path()).await;
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    for (spec, curve) in [("ECC_NIST_P256", "P-256"), ("ECC_NIST_P384", "P-384")] {
        let key = create(&s, spec, "key-agreement").await;
        let pk = public_key(&s, &key, None, w).await;
        assert_eq!(pk["key_agreement_algorithms"], json!(["ECDH"]));
        std::fs::rename(w.join("pub.pem"), w.join("kp.pem")).unwrap();
        openssl_ok(
            &[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                &format!("ec_paramgen_curve:{curve}"),
                "-out",
                "peer.pem",
            ],
            w,
        );
        openssl_ok(
            &["pkey", "-in", "peer.pem", "-pubout", "-out", "peer.pub.pem"],
            w,
        );
        let expected = openssl_ok(
            &[
                "pkeyutl", "-derive", "-inkey", "peer.pem", "-peerkey", "kp.pem",
            ],
            w,
        );
        let peer_pem = std::fs::read_to_string(w.join("peer.pub.pem")).unwrap();
        let v = s
            .ok(
                &s.admin,
                "derive-shared-secret",
                json!({ "key_id": key, "peer_public_key": peer_pem }),
            )
            .await;
        assert_eq!(unb64(&v["shared_secret"]), expected);
        // The same peer as base64 DER.
        let der = openssl_ok(
            &["pkey", "-pubin", "-in", "peer.pub.pem", "-outform", "DER"],
            w,
        );
        let v = s
            .ok(
                &s.admin,
                "derive-shared-secret",
                json!({ "key_id": key, "peer_public_key": b64(&der) }),
            )
            .await;
        assert_eq!(unb64(&v["shared_secret"]), expected);
        // A point off the curve, a key of the other curve, garbage: 400.
        let mut off = der.clone();
        let n = off.len();
        off[n - 1] ^= 1;
        let r = s
            .call(
                Some(&s.admin),
                "derive-shared-secret",
                json!({ "key_id": key, "peer_public_key": b64(&off) }),
            )
            .await;
        assert_error(&r, 400, "ValidationError", "on the curve");
        let other = if curve == "P-256" { "P-384" } else { "P-256" };
        openssl_ok(
            &[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                &format!("ec_paramgen_curve:{other}"),
                "-out",
                "other.pem",
            ],
            w,
        );
        let other_pub = openssl_ok(&["pkey", "-in", "other.pem", "-pubout"], w);
        let r = s
            .call(
                Some(&s.admin),
                "derive-shared-secret",
                json!({ "key_id": key, "peer_public_key": String::from_utf8(other_pub).unwrap() }),
            )
            .await;
        assert_error(&r, 400, "ValidationError", curve);
        let r = s
            .call(
                Some(&s.admin),
                "derive-shared-secret",
                json!({ "key_id": key, "peer_public_key": "not a key" }),
            )
            .await;
        assert_error(&r, 400, "ValidationError", "peer_public_key");
        // A key-agreement key does not sign.
        let r = s
            .call(
                Some(&s.admin),
                "sign",
                json!({ "key_id": key, "message": b64(b"m"), "signing_algorithm": "ECDSA_SHA_256" }),
            )
            .await;
        assert_error(&r, 400, "InvalidKeyUsage", "key-agreement");
    }
    // A signing key does not derive.
    let signer = create(&s, "ECC_NIST_P256", "sign-verify").await;
    let r = s
        .call(
            Some(&s.admin),
            "derive-shared-secret",
            json!({ "key_id": signer, "peer_public_key": "x" }),
        )
        .await;
    assert_error(&r, 400, "InvalidKeyUsage", "sign-verify");
}

/// `host/tests/peers/dh.py agree` (Python's `cryptography`) against the PEM public key in
/// file `public`: (Python's public key PEM, the shared secret it computed).
fn python_dh_agree(public: &Path) -> (String, Vec<u8>) {
    let out = common::succeeds(
        Command::new(common::aws::venv_bin("python"))
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/dh.py"))
            .arg("agree")
            .arg(public),
    );
    let v: Value = serde_json::from_slice(&out).unwrap();
    (
        v["public_key"].as_str().unwrap().to_string(),
        unb64(&v["shared_secret"]),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn ffdhe_agrees_with_python_and_openssl_and_refuses_bad_peers() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path()).await;
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let derive = |key: &str, peer: &str, extra: Value| {
        let mut body = json!({ "key_id": key, "peer_public_key": peer });
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        let s = &s;
        async move { s.call(Some(&s.admin), "derive-shared-secret", body).await }
    };
    for (spec, group, len) in [
        ("FFDHE_2048", "ffdhe2048", 256),
        ("FFDHE_3072", "ffdhe3072", 384),
    ] {
        // The only usage, and the default.
        let key = s
            .ok(&s.admin, "create-key", json!({ "key_spec": spec }))
            .await;
        assert_eq!(key["key_usage"], "key-agreement", "{key}");
        let key = key["key_id"].as_str().unwrap().to_string();
        let pk = s
            .ok(&s.admin, "get-public-key", json!({ "key_id": key }))
            .await;
        assert_eq!(pk["key_agreement_algorithms"], json!(["DH"]));
        assert!(pk.get("jwk").is_none(), "{pk}");
        let ours = w.join("keyplane.pem");
        std::fs::write(&ours, pk["pem"].as_str().unwrap()).unwrap();
        // openssl reads the key as a key of the named group, DER for DER.
        let text = String::from_utf8(openssl_ok(
            &["pkey", "-pubin", "-in", "keyplane.pem", "-text", "-noout"],
            w,
        ))
        .unwrap();
        assert!(text.contains(&format!("GROUP: {group}")), "{text}");
        let der = openssl_ok(
            &["pkey", "-pubin", "-in", "keyplane.pem", "-outform", "DER"],
            w,
        );
        assert_eq!(der, unb64(&pk["der"]));

        // Python's cryptography (its key in X9.42 form, with q) and keyplane agree.
        let (python_pub, python_secret) = python_dh_agree(&ours);
        assert_eq!(python_secret.len(), len);
        let (st, v) = derive(&key, &python_pub, json!({})).await;
        assert_eq!(st, 200, "{v}");
        assert_eq!(v["key_agreement_algorithm"], "DH");
        assert_eq!(unb64(&v["shared_secret"]), python_secret, "{spec}");

        // openssl (its key in PKCS #3 form), as base64 DER, with the algorithm named.
        openssl_ok(
            &[
                "genpkey",
                "-algorithm",
                "DH",
                "-pkeyopt",
                &format!("group:{group}"),
                "-out",
                "peer.pem",
            ],
            w,
        );
        let peer_der = openssl_ok(
            &["pkey", "-in", "peer.pem", "-pubout", "-outform", "DER"],
            w,
        );
        let expected = openssl_ok(
            &[
                "pkeyutl",
                "-derive",
                "-inkey",
                "peer.pem",
                "-peerkey",
                "keyplane.pem",
            ],
            w,
        );
        let (st, v) = derive(
            &key,
            &b64(&peer_der),
            json!({ "key_agreement_algorithm": "DH" }),
        )
        .await;
        assert_eq!(st, 200, "{v}");
        let secret = unb64(&v["shared_secret"]);
        // openssl drops leading zero bytes of the secret (TLS 1.2's rule); keyplane keeps the
        // prime's length (RFC 7919, TLS 1.3).
        assert_eq!(secret.len(), len);
        assert_eq!(&secret[len - expected.len()..], &expected[..]);
        assert!(secret[..len - expected.len()].iter().all(|b| *b == 0));

        // Refusals: ECDH named for a DH key, JWK asked for, a peer in the other group, a peer
        // whose public value is 1 or p - 1, an EC peer.
        assert_error(
            &derive(
                &key,
                &python_pub,
                json!({ "key_agreement_algorithm": "ECDH" }),
            )
            .await,
            400,
            "InvalidKeyUsage",
            "its key agreement algorithm is DH",
        );
        assert_error(
            &s.call(
                Some(&s.admin),
                "get-public-key",
                json!({ "key_id": key, "format": "JWK" }),
            )
            .await,
            400,
            "ValidationError",
            "no JWK form",
        );
        let other = if group == "ffdhe2048" {
            "ffdhe3072"
        } else {
            "ffdhe2048"
        };
        openssl_ok(
            &[
                "genpkey",
                "-algorithm",
                "DH",
                "-pkeyopt",
                &format!("group:{other}"),
                "-out",
                "other.pem",
            ],
            w,
        );
        let other_pub = openssl_ok(&["pkey", "-in", "other.pem", "-pubout"], w);
        assert_error(
            &derive(&key, &String::from_utf8(other_pub).unwrap(), json!({})).await,
            400,
            "ValidationError",
            "another group",
        );
        // A public value of 1, then p - 1, in the DER openssl wrote: its key's bit string
        // holds the INTEGER y as the last `len` bytes (y of full length) or fewer; rebuild it.
        for fixed in [vec![1u8], {
            let prime = prime_of(&peer_der, len);
            let mut p1 = prime.clone();
            *p1.last_mut().unwrap() -= 1;
            p1
        }] {
            let forged = with_public_value(&peer_der, &fixed);
            assert_error(
                &derive(&key, &b64(&forged), json!({})).await,
                400,
                "ValidationError",
                "out of range",
            );
        }
        let ec = create(&s, "ECC_NIST_P256", "key-agreement").await;
        let ec_pub = s
            .ok(&s.admin, "get-public-key", json!({ "key_id": ec }))
            .await;
        assert_error(
            &derive(&key, ec_pub["pem"].as_str().unwrap(), json!({})).await,
            400,
            "ValidationError",
            "not a Diffie-Hellman key",
        );
        // A DH key signs nothing and cannot be made exportable.
        assert_error(
            &s.call(
                Some(&s.admin),
                "create-key",
                json!({ "key_spec": spec, "exportable": true }),
            )
            .await,
            400,
            "ValidationError",
            "cannot be exportable",
        );
    }
}

/// The prime (`len` bytes) in the parameters of a DH SubjectPublicKeyInfo `der` as openssl
/// writes it (PKCS #3: `{ prime, base }`).
fn prime_of(der: &[u8], len: usize) -> Vec<u8> {
    use der::Decode;
    let spki = spki::SubjectPublicKeyInfoRef::from_der(der).unwrap();
    let params = der::Encode::to_der(&spki.algorithm.parameters.unwrap()).unwrap();
    let ints = Vec::<der::asn1::UintRef<'_>>::from_der(&params).unwrap();
    let p = ints[0].as_bytes().to_vec();
    assert_eq!(p.len(), len);
    p
}

/// `der` (a DH SubjectPublicKeyInfo) with its public value replaced by `y`.
fn with_public_value(der: &[u8], y: &[u8]) -> Vec<u8> {
    use der::{Decode, Encode};
    let spki = spki::SubjectPublicKeyInfoRef::from_der(der).unwrap();
    let y = der::asn1::UintRef::new(y).unwrap().to_der().unwrap();
    spki::SubjectPublicKeyInfoRef {
        algorithm: spki.algorithm,
        subject_public_key: der::asn1::BitStringRef::from_bytes(&y).unwrap(),
    }
    .to_der()
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_spec_and_usage_combinations_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path()).await;
    for (spec, usage, protection, needle) in [
        (
            "ED25519",
            Some("key-agreement"),
            None,
            "not available for key_spec ED25519",
        ),
        (
            "HMAC_SHA_256",
            Some("sign-verify"),
            None,
            "generate-verify-mac",
        ),
        ("AES_256_GCM", Some("sign-verify"), None, "encrypt-decrypt"),
        (
            "RSA_2048",
            Some("key-agreement"),
            None,
            "sign-verify, encrypt-decrypt",
        ),
        (
            "ECC_NIST_P256",
            Some("encrypt-decrypt"),
            None,
            "key-agreement",
        ),
        ("ECC_NIST_P256", None, Some("envelope"), "hsm"),
        ("RSA_1024", None, None, "key_spec must be one of"),
        (
            "ECC_NIST_P256",
            Some("sign"),
            None,
            "key_usage must be one of",
        ),
    ] {
        let mut body = json!({ "key_spec": spec });
        if let Some(u) = usage {
            body["key_usage"] = json!(u);
        }
        if let Some(p) = protection {
            body["protection"] = json!(p);
        }
        let r = s.call(Some(&s.admin), "create-key", body).await;
        assert_error(&r, 400, "ValidationError", needle);
    }
    // Default usage: the spec's first.
    let v = s
        .ok(&s.admin, "create-key", json!({ "key_spec": "ED25519" }))
        .await;
    assert_eq!(v["key_usage"], "sign-verify");
    assert_eq!(v["protection"], "hsm");
    let hsm = s.ok(&s.admin, "describe-hsm", json!({})).await;
    assert_eq!(hsm["token_label"], "keyplane");
    assert_eq!(hsm["manufacturer"], "SoftHSM project");
    for m in [
        "CKM_ECDSA",
        "CKM_EDDSA",
        "CKM_RSA_PKCS_PSS",
        "CKM_ECDH1_DERIVE",
        "CKM_SHA256_HMAC",
        "CKM_DH_PKCS_KEY_PAIR_GEN",
        "CKM_DH_PKCS_DERIVE",
    ] {
        assert!(
            hsm["mechanisms"].as_array().unwrap().contains(&json!(m)),
            "{hsm}"
        );
    }
    assert_eq!(hsm["key_specs"].as_array().unwrap().len(), 14, "{hsm}");
    // The sessions the node holds: some (the pool keeps those it used), and no more after
    // many more calls (each borrows one and gives it back).
    let open = hsm["open_sessions"].as_u64().unwrap();
    assert!(open >= 1, "{hsm}");
    let key = v["key_id"].as_str().unwrap();
    for _ in 0..50 {
        s.ok(
            &s.admin,
            "sign",
            json!({ "key_id": key, "message": b64(b"m"), "message_type": "RAW", "signing_algorithm": "ED25519" }),
        )
        .await;
    }
    let again = s.ok(&s.admin, "describe-hsm", json!({})).await;
    assert!(
        again["open_sessions"].as_u64().unwrap() <= open.max(8),
        "{again}"
    );
    // A member of another tenant may read it too.
    let (_, other) = s.tenant_with_admin("other").await;
    s.ok(&other, "describe-hsm", json!({})).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rotated_keys_keep_verifying_old_signatures_and_states_are_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path()).await;
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let alg = "ECDSA_SHA_256";
    let key = create(&s, "ECC_NIST_P256", "sign-verify").await;
    let label = format!("kp:{key}:1");
    let labels = common::token_labels(dir.path(), None);
    assert_eq!(
        labels.iter().filter(|l| **l == label).count(),
        2,
        "a private and a public object: {labels:?}"
    );
    let msg = b"signed before rotation";
    std::fs::write(w.join("msg"), msg).unwrap();
    let (v1, old_sig) = sign(&s, &key, alg, msg, "RAW").await;
    assert_eq!(v1, 1);
    let pk1 = public_key(&s, &key, None, w).await;
    s.ok(&s.admin, "rotate-key", json!({ "key_id": key })).await;
    let (v2, new_sig) = sign(&s, &key, alg, msg, "RAW").await;
    assert_eq!(v2, 2);
    // The old signature verifies under version 1, not under the new primary.
    assert!(verify(&s, &key, alg, msg, &old_sig, Some(1)).await);
    assert!(!verify(&s, &key, alg, msg, &old_sig, None).await);
    assert!(verify(&s, &key, alg, msg, &new_sig, None).await);
    let pk2 = public_key(&s, &key, None, w).await;
    assert_eq!(pk2["key_version"], 2);
    assert_ne!(pk1["pem"], pk2["pem"]);
    std::fs::write(w.join("sig"), &new_sig).unwrap();
    assert!(openssl_verifies(alg, w));
    let again = public_key(&s, &key, Some(1), w).await;
    assert_eq!(again["pem"], pk1["pem"]);
    std::fs::write(w.join("sig"), &old_sig).unwrap();
    assert!(openssl_verifies(alg, w));
    let d = s
        .ok(&s.admin, "describe-key", json!({ "key_id": key }))
        .await;
    assert_eq!(d["versions"][0]["signatures"], 1, "{d}");
    assert_eq!(d["versions"][1]["signatures"], 1, "{d}");
    assert!(common::token_labels(dir.path(), None).contains(&format!("kp:{key}:2")));

    // A disabled key refuses to sign (and verify) with a state error.
    s.ok(&s.admin, "disable-key", json!({ "key_id": key }))
        .await;
    let r = s
        .call(
            Some(&s.admin),
            "sign",
            json!({ "key_id": key, "message": b64(msg), "signing_algorithm": alg }),
        )
        .await;
    assert_error(&r, 409, "InvalidState", "disabled");
    let r = s
        .call(
            Some(&s.admin),
            "verify",
            json!({ "key_id": key, "message": b64(msg), "signing_algorithm": alg, "signature": b64(&new_sig) }),
        )
        .await;
    assert_error(&r, 409, "InvalidState", "disabled");
    s.ok(&s.admin, "enable-key", json!({ "key_id": key })).await;
    assert!(verify(&s, &key, alg, msg, &new_sig, None).await);

    // A principal without a grant on the key may not sign with it.
    let member = s
        .ok(
            &s.admin,
            "create-principal",
            json!({ "name": "nogrant", "role": "member" }),
        )
        .await;
    let r = s
        .call(
            member["token"].as_str(),
            "sign",
            json!({ "key_id": key, "message": b64(msg), "signing_algorithm": alg }),
        )
        .await;
    // A caller who may not even describe the key is told it does not exist.
    assert_error(&r, 404, "NotFound", "key not found");
}

#[cfg(all(feature = "test-hooks", debug_assertions))]
#[tokio::test(flavor = "multi_thread")]
async fn destroying_a_key_pair_shreds_both_objects() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path()).await;
    let key = create(&s, "RSA_2048", "sign-verify").await;
    s.ok(&s.admin, "rotate-key", json!({ "key_id": key })).await;
    let mine = |labels: Vec<String>| {
        labels
            .into_iter()
            .filter(|l| l.starts_with(&format!("kp:{key}:")))
            .count()
    };
    assert_eq!(mine(common::token_labels(dir.path(), None)), 4);
    s.destroy_keys(&[&key]).await;
    assert_eq!(mine(common::token_labels(dir.path(), None)), 0);
    let r = s
        .call(
            Some(&s.admin),
            "sign",
            json!({ "key_id": key, "message": b64(b"m"), "signing_algorithm": "RSASSA_PSS_SHA_256" }),
        )
        .await;
    assert_error(&r, 410, "KeyDestroyed", "");
}

/// Objects carrying a `CKA_ID` that the node's HSM session sees: (all of them, session
/// objects among them). `which` names it: `{"key_id", "version"}` or `{"object_id"}`.
#[cfg(all(feature = "test-hooks", debug_assertions))]
async fn hsm_objects_of(s: &Server, which: Value) -> (u64, u64) {
    let v = s.hsm_objects(which).await;
    (
        v["objects"].as_u64().unwrap(),
        v["session_objects"].as_u64().unwrap(),
    )
}

/// [`hsm_objects_of`] version 1 of `key`.
#[cfg(all(feature = "test-hooks", debug_assertions))]
async fn hsm_objects(s: &Server, key: &str) -> (u64, u64) {
    hsm_objects_of(s, json!({ "key_id": key, "version": 1 })).await
}

/// On SoftHSM2 the data plane uses session copies of a version's token objects (SoftHSM2
/// rereads its token's files whenever a token object is used): one copy per object, made at
/// first use and reused after. Crypto-shredding destroys the copies with the token objects:
/// the handles of the copies, recorded as they were made, name no object after it.
#[cfg(all(feature = "test-hooks", debug_assertions))]
#[tokio::test(flavor = "multi_thread")]
async fn data_plane_session_copies_are_shredded_with_their_version() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path()).await;
    let aes = s.create_key(&s.admin, "hsm").await;
    let ec = create(&s, "ECC_NIST_P256", "sign-verify").await;
    assert_eq!(hsm_objects(&s, &aes).await, (1, 0));
    assert_eq!(hsm_objects(&s, &ec).await, (2, 0));

    let ct = s.encrypt(&s.admin, &aes, b"hsm secret", json!({})).await;
    s.encrypt(&s.admin, &aes, b"again", json!({})).await;
    assert_eq!(hsm_objects(&s, &aes).await, (2, 1));
    let (status, v) = s.decrypt(&s.admin, &ct, json!({})).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(unb64(&v["plaintext"]), b"hsm secret");
    assert_eq!(hsm_objects(&s, &aes).await, (2, 1));
    let (_, sig) = sign(&s, &ec, "ECDSA_SHA_256", b"m", "RAW").await;
    assert!(verify(&s, &ec, "ECDSA_SHA_256", b"m", &sig, None).await);
    let (all, copies) = hsm_objects(&s, &ec).await;
    assert!(copies >= 1, "the private key's copy");
    assert_eq!(all, 2 + copies);

    let mut ids = Vec::new();
    for key in [&aes, &ec] {
        let v = s.hsm_objects(json!({ "key_id": key, "version": 1 })).await;
        ids.push(v["object_id"].as_str().unwrap().to_string());
        // every copy made is the one the search finds, and is live
        assert_eq!(v["session_copies_made"], v["session_objects"], "{v}");
        assert_eq!(v["session_copies_made_live"], v["session_objects"], "{v}");
    }
    s.destroy_keys(&[&aes, &ec]).await;
    let logs: Vec<String> = s.log.lock().unwrap().try_iter().collect();
    assert!(
        !logs.iter().any(|l| l.contains("\"level\":\"ERROR\"")),
        "{logs:?}"
    );
    for (key, id) in [&aes, &ec].into_iter().zip(&ids) {
        let v = s.hsm_objects(json!({ "object_id": id })).await;
        assert_eq!(
            (&v["objects"], &v["session_objects"]),
            (&json!(0), &json!(0)),
            "{key}"
        );
        // Every copy the data plane made, recorded as it was made and checked by handle
        // rather than found by a search (the search is what shredding itself relies on):
        // none exists any more.
        assert!(v["session_copies_made"].as_u64().unwrap() >= 1, "{v}");
        assert_eq!(v["session_copies_made_live"], 0, "{key}: {v}");
        assert!(!common::token_labels(dir.path(), None)
            .iter()
            .any(|l| l.starts_with(&format!("kp:{key}:"))));
    }
    assert_error(
        &s.decrypt(&s.admin, &ct, json!({})).await,
        410,
        "KeyDestroyed",
        "",
    );
}
