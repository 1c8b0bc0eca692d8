//! Data key pairs (`generate-data-key-pair`, `generate-data-key-pair-without-plaintext`,
//! AWS `GenerateDataKeyPair*`) against the real binary, SoftHSM2 token and TLS. Every spec's
//! private key is checked outside keyplane: the `openssl` CLI parses and validates it, derives
//! the same public key, and signs what the public key verifies; the `rsa`, `p256` and `p384`
//! crates parse it too; EC keys agree with keyplane's own ECDH. The encrypted private key is an
//! ordinary ciphertext `decrypt` opens. Refusals are audited; nothing of a pair is left in the
//! token; boto3 gets the same through the AWS front.

mod common;

use std::path::Path;
use std::process::Command;

use common::aws::{access_key, client, run, script, venv_bin};
use common::{assert_error, b64, unb64, Server};
use serde_json::{json, Value};

const SPECS: &[&str] = &[
    "RSA_2048",
    "RSA_3072",
    "RSA_4096",
    "ECC_NIST_P256",
    "ECC_NIST_P384",
];

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

/// Check a data key pair of `spec` outside keyplane: `private` must be a PKCS#8 private key of
/// the spec whose public key is `public` (a DER SubjectPublicKeyInfo), valid for openssl and
/// for the RustCrypto crates, and what it signs `public` verifies.
fn check_pair(spec: &str, private: &[u8], public: &[u8], dir: &Path) {
    use der::Decode;
    let info = pkcs8::PrivateKeyInfo::from_der(private).expect("PKCS#8 PrivateKeyInfo");
    let rsa = spec.starts_with("RSA_");
    let algorithm = if rsa {
        "1.2.840.113549.1.1.1"
    } else {
        "1.2.840.10045.2.1"
    };
    assert_eq!(info.algorithm.oid.to_string(), algorithm, "{spec}");

    std::fs::write(dir.join("priv.der"), private).unwrap();
    std::fs::write(dir.join("pub.der"), public).unwrap();
    std::fs::write(
        dir.join("msg"),
        format!("signed with a {spec} data key pair"),
    )
    .unwrap();
    let checked = openssl_ok(
        &[
            "pkey", "-inform", "DER", "-in", "priv.der", "-check", "-noout",
        ],
        dir,
    );
    assert!(
        String::from_utf8_lossy(&checked).contains("Key is valid"),
        "{spec}: {}",
        String::from_utf8_lossy(&checked)
    );
    let derived = openssl_ok(
        &[
            "pkey", "-inform", "DER", "-in", "priv.der", "-pubout", "-outform", "DER",
        ],
        dir,
    );
    assert_eq!(derived, public, "{spec}: the private key's public key");
    let text = String::from_utf8(openssl_ok(
        &[
            "pkey", "-pubin", "-inform", "DER", "-in", "pub.der", "-text", "-noout",
        ],
        dir,
    ))
    .unwrap();
    let expected = match spec {
        "RSA_2048" => "(2048 bit)",
        "RSA_3072" => "(3072 bit)",
        "RSA_4096" => "(4096 bit)",
        "ECC_NIST_P256" => "prime256v1",
        _ => "secp384r1",
    };
    assert!(text.contains(expected), "{spec}: {text}");

    let digest = if spec == "ECC_NIST_P384" {
        "-sha384"
    } else {
        "-sha256"
    };
    openssl_ok(
        &[
            "dgst", digest, "-sign", "priv.der", "-keyform", "DER", "-out", "sig", "msg",
        ],
        dir,
    );
    let verify = |message: &str| {
        openssl(
            &[
                "dgst",
                digest,
                "-verify",
                "pub.der",
                "-keyform",
                "DER",
                "-signature",
                "sig",
                message,
            ],
            dir,
        )
    };
    let out = verify("msg");
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("Verified OK"),
        "{spec}: {out:?}"
    );
    std::fs::write(dir.join("other"), "another message").unwrap();
    assert!(!verify("other").status.success(), "{spec}");

    // The RustCrypto crates parse and validate it, with the same public key.
    use p256::pkcs8::{DecodePrivateKey, DecodePublicKey};
    match spec {
        "ECC_NIST_P256" => {
            let sk = p256::SecretKey::from_pkcs8_der(private).unwrap();
            assert_eq!(
                sk.public_key(),
                p256::PublicKey::from_public_key_der(public).unwrap()
            );
        }
        "ECC_NIST_P384" => {
            let sk = p384::SecretKey::from_pkcs8_der(private).unwrap();
            assert_eq!(
                sk.public_key(),
                p384::PublicKey::from_public_key_der(public).unwrap()
            );
        }
        _ => {
            use rsa::traits::PublicKeyParts;
            let sk = rsa::RsaPrivateKey::from_pkcs8_der(private).unwrap();
            sk.validate().unwrap();
            let pk = rsa::RsaPublicKey::from_public_key_der(public).unwrap();
            assert_eq!(sk.to_public_key(), pk);
            let bits: usize = spec[4..].parse().unwrap();
            assert_eq!(pk.n().bits(), bits);
        }
    }
}

/// ECDH of a data key pair's private key with a keyplane key-agreement key of the same
/// curve, computed on the host, equals keyplane's `derive-shared-secret` with the data key
/// pair's public key as the peer: the HSM and the PKCS#8 hold the same key.
async fn agrees_with_keyplane_ecdh(s: &Server, spec: &str, private: &[u8], public: &[u8]) {
    use p256::elliptic_curve::point::AffineCoordinates;
    use p256::pkcs8::{DecodePrivateKey, DecodePublicKey};
    let created = s
        .ok(
            &s.admin,
            "create-key",
            json!({ "key_spec": spec, "key_usage": "key-agreement" }),
        )
        .await;
    let agreement = created["key_id"].as_str().unwrap();
    let theirs = s
        .ok(
            &s.admin,
            "get-public-key",
            json!({ "key_id": agreement, "format": "DER" }),
        )
        .await;
    let theirs = unb64(&theirs["der"]);
    let ours: Vec<u8> = match spec {
        "ECC_NIST_P256" => {
            let sk = p256::SecretKey::from_pkcs8_der(private).unwrap();
            let pk = p256::PublicKey::from_public_key_der(&theirs).unwrap();
            (pk.to_projective() * *sk.to_nonzero_scalar())
                .to_affine()
                .x()
                .to_vec()
        }
        _ => {
            let sk = p384::SecretKey::from_pkcs8_der(private).unwrap();
            let pk = p384::PublicKey::from_public_key_der(&theirs).unwrap();
            (pk.to_projective() * *sk.to_nonzero_scalar())
                .to_affine()
                .x()
                .to_vec()
        }
    };
    let derived = s
        .ok(
            &s.admin,
            "derive-shared-secret",
            json!({
                "key_id": agreement,
                "peer_public_key": b64(public),
                "key_agreement_algorithm": "ECDH",
            }),
        )
        .await;
    assert_eq!(unb64(&derived["shared_secret"]), ours, "{spec}");
}

/// Every spec, both operations, under an `hsm` and an `envelope` key: the pair works outside
/// keyplane, its encrypted private key opens with `decrypt` (with its encryption context
/// only), and the without-plaintext answer has no plaintext.
#[tokio::test(flavor = "multi_thread")]
async fn every_spec_makes_a_pair_that_works_outside_keyplane() {
    let dir = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path()).await;
    let keys = [
        s.create_key(&s.admin, "hsm").await,
        s.create_key(&s.admin, "envelope").await,
    ];
    for (i, spec) in SPECS.iter().enumerate() {
        let key = &keys[i % 2];
        let ctx = json!({ "purpose": "data-key-pair", "spec": spec });
        let body = json!({ "key_id": key, "key_pair_spec": spec, "encryption_context": ctx });
        let v = s.ok(&s.admin, "generate-data-key-pair", body.clone()).await;
        assert_eq!(v["key_id"], key.as_str(), "{v}");
        assert_eq!(v["key_version"], 1);
        assert_eq!(v["key_pair_spec"], *spec);
        let private = unb64(&v["private_key_plaintext"]);
        let public = unb64(&v["public_key"]);
        check_pair(spec, &private, &public, work.path());
        if spec.starts_with("ECC_") {
            agrees_with_keyplane_ecdh(&s, spec, &private, &public).await;
        }

        let blob = unb64(&v["private_key_ciphertext_blob"]);
        let (status, opened) = s.decrypt(&s.admin, &blob, ctx.clone()).await;
        assert_eq!(status, 200, "{opened}");
        assert_eq!(unb64(&opened["plaintext"]), private, "{spec}");
        assert_eq!(opened["key_id"], key.as_str());
        let other = s
            .decrypt(&s.admin, &blob, json!({ "purpose": "other" }))
            .await;
        assert_error(&other, 400, "InvalidCiphertext", "");

        let v = s
            .ok(&s.admin, "generate-data-key-pair-without-plaintext", body)
            .await;
        assert!(v.get("private_key_plaintext").is_none(), "{v}");
        assert_eq!(v["key_pair_spec"], *spec);
        assert_eq!(v["key_id"], key.as_str());
        let second_public = unb64(&v["public_key"]);
        assert_ne!(second_public, public, "each request makes a new pair");
        let blob = unb64(&v["private_key_ciphertext_blob"]);
        let (status, opened) = s.decrypt(&s.admin, &blob, ctx).await;
        assert_eq!(status, 200, "{opened}");
        check_pair(
            spec,
            &unb64(&opened["plaintext"]),
            &second_public,
            work.path(),
        );
    }
}

/// A key that is not an enabled AES encrypt-decrypt key, a spec keyplane does not make, a
/// caller without a grant: each refused, saying why, and audited.
#[tokio::test(flavor = "multi_thread")]
async fn refusals_are_clear_and_audited() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path()).await;
    let generate = |key: &str, spec: &str| json!({ "key_id": key, "key_pair_spec": spec, "encryption_context": { "a": "b" } });
    for (spec, usage) in [
        ("RSA_2048", "encrypt-decrypt"),
        ("ECC_NIST_P256", "sign-verify"),
        ("HMAC_SHA_256", "generate-verify-mac"),
    ] {
        let v = s
            .ok(
                &s.admin,
                "create-key",
                json!({ "key_spec": spec, "key_usage": usage }),
            )
            .await;
        let key = v["key_id"].as_str().unwrap();
        for op in [
            "generate-data-key-pair",
            "generate-data-key-pair-without-plaintext",
        ] {
            let answer = s
                .call(Some(&s.admin), op, generate(key, "ECC_NIST_P256"))
                .await;
            assert_error(&answer, 400, "InvalidKeyUsage", "symmetric encryption");
        }
    }

    let key = s.create_key(&s.admin, "hsm").await;
    s.ok(&s.admin, "disable-key", json!({ "key_id": key }))
        .await;
    let answer = s
        .call(
            Some(&s.admin),
            "generate-data-key-pair",
            generate(&key, "RSA_2048"),
        )
        .await;
    assert_error(&answer, 409, "InvalidState", "disabled");
    s.ok(&s.admin, "enable-key", json!({ "key_id": key })).await;

    for spec in ["ED25519", "ECC_NIST_P521", "AES_256_GCM", "rsa_2048"] {
        let answer = s
            .call(
                Some(&s.admin),
                "generate-data-key-pair",
                generate(&key, spec),
            )
            .await;
        assert_error(
            &answer,
            400,
            "ValidationError",
            "key_pair_spec must be one of",
        );
    }
    let (status, v) = s
        .call(
            Some(&s.admin),
            "generate-data-key-pair",
            json!({ "key_id": key }),
        )
        .await;
    assert_eq!(status, 400, "{v}");

    // A principal of the tenant without a grant on the key does not even see it.
    let member = s
        .ok(
            &s.admin,
            "create-principal",
            json!({ "tenant_id": "default", "name": "member", "role": "member" }),
        )
        .await;
    let member = member["token"].as_str().unwrap();
    let answer = s
        .call(
            Some(member),
            "generate-data-key-pair",
            generate(&key, "ECC_NIST_P256"),
        )
        .await;
    assert_error(&answer, 404, "NotFound", "");

    let v = s
        .ok(
            &s.admin,
            "generate-data-key-pair",
            generate(&key, "ECC_NIST_P256"),
        )
        .await;
    assert_eq!(v["key_pair_spec"], "ECC_NIST_P256");

    let records = s.audit_records();
    let of = |action: &str| -> Vec<&Value> {
        records.iter().filter(|r| r["action"] == action).collect()
    };
    let pairs = of("GenerateDataKeyPair");
    for (decision, outcome) in [
        ("allow", "ok"),
        ("allow", "InvalidKeyUsage"),
        ("allow", "InvalidState"),
        ("deny", "NotFound"),
        ("not-evaluated", "ValidationError"),
    ] {
        assert!(
            pairs
                .iter()
                .any(|r| r["decision"] == decision && r["outcome"] == outcome),
            "no GenerateDataKeyPair record {decision}/{outcome}: {pairs:#?}"
        );
    }
    assert!(pairs
        .iter()
        .any(|r| r["outcome"] == "ok" && r["resource"].as_str().unwrap().contains(&key)));
    assert!(of("GenerateDataKeyPairWithoutPlaintext")
        .iter()
        .any(|r| r["outcome"] == "InvalidKeyUsage" && r["front"] == "native"));
    s.assert_audit_verifies();
}

/// Every object of the token, as another process lists it (`pkcs11-tool`): token objects
/// only (a process cannot see another's session objects).
#[cfg(all(feature = "test-hooks", debug_assertions))]
fn token_listing(data: &Path) -> String {
    let pin = std::fs::read_to_string(data.join("hsm.pin")).unwrap();
    let out = Command::new("pkcs11-tool")
        .env("SOFTHSM2_CONF", data.join("softhsm/softhsm2.conf"))
        .args([
            "--module",
            "/usr/lib/softhsm/libsofthsm2.so",
            "--token-label",
            "keyplane",
            "--login",
            "--pin",
        ])
        .arg(pin.trim())
        .arg("--list-objects")
        .output()
        .expect("pkcs11-tool (opensc)");
    assert!(
        out.status.success(),
        "pkcs11-tool: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The objects keyplane's HSM session sees with the `CKA_ID` data key pairs carry while
/// they are read out: (all, session objects).
#[cfg(all(feature = "test-hooks", debug_assertions))]
async fn pair_objects(s: &Server) -> (u64, u64) {
    let v = s
        .hsm_objects(json!({ "object_id": "kp-data-key-pair" }))
        .await;
    (
        v["objects"].as_u64().unwrap(),
        v["session_objects"].as_u64().unwrap(),
    )
}

/// Nothing of a pair stays in the token: after pairs of every spec, and a pair made but
/// refused when sealing (the key's primary version is compromised), the node's own HSM
/// session finds none of their objects, and the token's objects are the ones it had before.
#[cfg(all(feature = "test-hooks", debug_assertions))]
#[tokio::test(flavor = "multi_thread")]
async fn no_key_material_is_left_in_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path()).await;
    let key = s.create_key(&s.admin, "hsm").await;
    let doomed = s.create_key(&s.admin, "envelope").await;
    let before = token_listing(dir.path());
    assert!(before.contains("Private Key Object") || before.contains("Secret Key Object"));
    assert_eq!(pair_objects(&s).await, (0, 0));

    for spec in SPECS {
        for op in [
            "generate-data-key-pair",
            "generate-data-key-pair-without-plaintext",
        ] {
            s.ok(
                &s.admin,
                op,
                json!({ "key_id": key, "key_pair_spec": spec }),
            )
            .await;
        }
    }
    // Made, then refused: the primary version cannot seal.
    s.ok(
        &s.admin,
        "revoke-key-version",
        json!({ "key_id": doomed, "version": 1, "reason": "test" }),
    )
    .await;
    let answer = s
        .call(
            Some(&s.admin),
            "generate-data-key-pair",
            json!({ "key_id": doomed, "key_pair_spec": "RSA_2048" }),
        )
        .await;
    assert_error(&answer, 409, "InvalidState", "compromised");

    assert_eq!(pair_objects(&s).await, (0, 0));
    let after = token_listing(dir.path());
    assert_eq!(before, after, "the token's objects changed");
    assert!(!after.contains("kp-data-key-pair"));
}

const ACCOUNT: &str = "111122223333";

/// A node with a tenant `acme` of account [`ACCOUNT`]: its admin's (token, access key) and a
/// member's access key (as in `aws_kms.rs`).
struct Acme {
    server: Server,
    admin_key: (String, String),
    member_key: (String, String),
}

async fn acme(dir: &Path) -> Acme {
    let server = Server::start(dir).await;
    server
        .ok(
            &server.admin,
            "create-tenant",
            json!({ "tenant_id": "acme", "account_id": ACCOUNT }),
        )
        .await;
    let mut tokens = Vec::new();
    for (name, role) in [("alice", "admin"), ("bob", "member")] {
        let p = server
            .ok(
                &server.admin,
                "create-principal",
                json!({ "tenant_id": "acme", "name": name, "role": role }),
            )
            .await;
        tokens.push(p["token"].as_str().unwrap().to_string());
    }
    let admin_key = access_key(&server, &tokens[0]).await;
    let member_key = access_key(&server, &tokens[1]).await;
    Acme {
        admin_key,
        member_key,
        server,
    }
}

/// boto3 through the AWS front: every spec (checked with `cryptography`), the encrypted
/// private key through `Decrypt`, and each error AWS names, from a real trigger.
#[tokio::test(flavor = "multi_thread")]
async fn boto3_generates_data_key_pairs_and_meets_their_errors() {
    let dir = tempfile::tempdir().unwrap();
    let a = acme(dir.path()).await;
    let python = venv_bin("python");
    let out = run(client(&python, &a.server, &a.admin_key)
        .arg(script("boto3_data_key_pairs.py"))
        .env("ACCOUNT", ACCOUNT)
        .env(
            "MEMBER_KEY",
            format!("{}:{}", a.member_key.0, a.member_key.1),
        ));
    assert!(
        out.contains("all boto3 data key pair checks passed"),
        "{out}"
    );

    let records = a.server.audit_records();
    let aws: Vec<&Value> = records.iter().filter(|r| r["front"] == "aws-kms").collect();
    for action in ["GenerateDataKeyPair", "GenerateDataKeyPairWithoutPlaintext"] {
        assert!(
            aws.iter()
                .any(|r| r["action"] == action && r["decision"] == "allow" && r["outcome"] == "ok"),
            "no allowed {action} through the AWS front"
        );
    }
    for outcome in ["dry-run", "InvalidKeyUsage", "InvalidState"] {
        assert!(
            aws.iter()
                .any(|r| r["action"] == "GenerateDataKeyPair" && r["outcome"] == outcome),
            "no GenerateDataKeyPair with outcome {outcome} through the AWS front"
        );
    }
    assert!(aws
        .iter()
        .any(|r| r["action"] == "GenerateDataKeyPair" && r["decision"] == "deny"));
    a.server.assert_audit_verifies();
}
