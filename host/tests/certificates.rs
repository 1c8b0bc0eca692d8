//! X.509 from keys in the HSM: `generate-csr` (a PKCS#10 request with the caller's subject
//! and names) and `get-public-key` with `format: CERTIFICATE` (self-signed), for every
//! signing key spec, each signed by the key in the token and checked with the `openssl` CLI
//! (`req -verify`, `verify` of the self-signed certificate, the certified public key equal to
//! the key's); and what is refused: keys that do not sign, disabled keys, bad names.

mod common;

use std::process::Command;

use common::{assert_error, Server};
use serde_json::json;

fn openssl(args: &[&str], input: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("in.pem");
    std::fs::write(&file, input).unwrap();
    let out = Command::new("openssl")
        .args(args)
        .arg("-in")
        .arg(&file)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test]
async fn csrs_and_self_signed_certificates_are_signed_by_the_key_in_the_hsm() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path()).await;
    let admin = s.admin.clone();
    for (spec, algorithm) in [
        ("ECC_NIST_P256", "ecdsa-with-SHA256"),
        ("ECC_NIST_P384", "ecdsa-with-SHA384"),
        ("ED25519", "ED25519"),
        ("RSA_2048", "sha256WithRSAEncryption"),
    ] {
        let key = s.create_key_of(&admin, spec, "sign-verify").await;
        let public = s
            .ok(
                &admin,
                "get-public-key",
                json!({ "key_id": key, "format": "PEM" }),
            )
            .await["pem"]
            .as_str()
            .unwrap()
            .to_string();

        let v = s
            .ok(
                &admin,
                "generate-csr",
                json!({
                    "key_id": key,
                    "subject": { "common_name": "service.example", "organization": "Example Ltd",
                                 "country": "NL" },
                    "dns_names": ["service.example", "*.service.example"],
                    "ip_addresses": ["192.0.2.7", "2001:db8::7"],
                }),
            )
            .await;
        assert_eq!(v["key_version"], 1);
        let csr = v["csr"].as_str().unwrap();
        assert!(
            csr.starts_with("-----BEGIN CERTIFICATE REQUEST-----"),
            "{csr}"
        );
        let (ok, said) = openssl(&["req", "-verify", "-noout", "-text"], csr);
        assert!(ok, "{spec}: {said}");
        assert!(said.contains("verify OK"), "{said}");
        let (_, asn1) = openssl(&["asn1parse"], csr);
        assert!(
            asn1.contains(":countryName")
                && asn1
                    .lines()
                    .any(|l| l.contains("PRINTABLESTRING") && l.trim_end().ends_with(":NL")),
            "{spec}: countryName is a PrintableString: {asn1}"
        );
        for part in [
            "CN = service.example",
            "O = Example Ltd",
            "C = NL",
            "DNS:service.example",
            "DNS:*.service.example",
            "IP Address:192.0.2.7",
            "IP Address:2001:DB8:0:0:0:0:0:7",
            algorithm,
        ] {
            assert!(said.contains(part), "{spec}: {part} not in {said}");
        }
        let (_, csr_public) = openssl(&["req", "-pubkey", "-noout"], csr);
        assert_eq!(
            csr_public.trim(),
            public.trim(),
            "{spec}: the CSR's key is the key's"
        );

        let v = s
            .ok(
                &admin,
                "get-public-key",
                json!({ "key_id": key, "format": "CERTIFICATE" }),
            )
            .await;
        assert!(v.get("pem").is_none(), "{v}");
        let cert = v["certificate"].as_str().unwrap();
        let (ok, said) = openssl(&["x509", "-noout", "-text"], cert);
        assert!(ok, "{said}");
        assert!(said.contains(&format!("Subject: CN = {key}")), "{said}");
        assert!(said.contains(&format!("Issuer: CN = {key}")), "{said}");
        assert!(said.contains(algorithm), "{said}");
        let (_, cert_public) = openssl(&["x509", "-pubkey", "-noout"], cert);
        assert_eq!(cert_public.trim(), public.trim());
        // Self-signed: it verifies against itself.
        let ca = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(ca.path(), cert).unwrap();
        let out = Command::new("openssl")
            .args(["verify", "-CAfile"])
            .arg(ca.path())
            .arg(ca.path())
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && said.contains("OK"),
            "{spec}: {said}"
        );
    }

    // What is refused, and why.
    let aes = s.create_key(&admin, "envelope").await;
    let rsa_enc = s.create_key_of(&admin, "RSA_2048", "encrypt-decrypt").await;
    let subject = json!({ "common_name": "x" });
    assert_error(
        &s.call(
            Some(&admin),
            "generate-csr",
            json!({ "key_id": aes, "subject": subject }),
        )
        .await,
        400,
        "InvalidKeyUsage",
        "",
    );
    assert_error(
        &s.call(
            Some(&admin),
            "get-public-key",
            json!({ "key_id": rsa_enc, "format": "CERTIFICATE" }),
        )
        .await,
        400,
        "InvalidKeyUsage",
        "sign-verify",
    );
    let ec = s
        .create_key_of(&admin, "ECC_NIST_P256", "sign-verify")
        .await;
    for (body, says) in [
        (json!({ "subject": { "common_name": "" } }), "common_name"),
        (
            json!({ "subject": { "common_name": "x", "country": "Netherlands" } }),
            "country",
        ),
        (
            json!({ "subject": subject, "dns_names": ["bad name"] }),
            "not a DNS name",
        ),
        (
            json!({ "subject": subject, "ip_addresses": ["300.1.1.1"] }),
            "not an IP address",
        ),
        (json!({ "subject": {} }), ""),
    ] {
        let mut body = body;
        body["key_id"] = json!(ec);
        let answer = s.call(Some(&admin), "generate-csr", body).await;
        assert_eq!(answer.0, 400, "{answer:?}");
        assert!(answer.1.to_string().contains(says), "{answer:?}");
    }
    s.ok(&admin, "disable-key", json!({ "key_id": ec })).await;
    let answer = s
        .call(
            Some(&admin),
            "generate-csr",
            json!({ "key_id": ec, "subject": subject }),
        )
        .await;
    assert_error(&answer, 409, "InvalidState", "disabled");
}
