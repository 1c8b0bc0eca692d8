//! Tenant isolation, as a matrix. Three tenants, each with an admin, a member and a service
//! principal, keys of every spec the HSM offers (with an alias each), a Transit key, a
//! plugin, a grant, an import token, ciphertexts and access keys. Then every operation of
//! every front (native, AWS KMS, Vault Transit), by every principal, against every other
//! tenant's keys, aliases, plugins, grants, import tokens, ciphertexts, access keys,
//! principals and the tenant itself.
//!
//! Each attempt is sent twice: naming the other tenant's object, and naming nothing (the same
//! reference with one character changed, so it names no object anywhere). Both must be
//! refused with the same answer (status and body, the reference aside), so another tenant's
//! objects cannot even be probed; and an attempt whose reference reaches the other tenant's
//! object (an id, an ARN, a ciphertext, a grant, an access key) must be audited as a deny.
//! Names that live in the caller's own namespace (alias, plugin and Transit key names) cannot
//! reach another tenant at all: they must answer as nothing does. Afterwards every listing,
//! by every principal and front, names nothing of another tenant, and every victim's objects
//! are as they were.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4 as aws_v4;
use common::{b64, Server};
use futures::StreamExt;
use serde_json::{json, Value};

const REGION: &str = "eu-west-1";

/// A principal of a tenant: the holder of a bearer token and an access key.
struct Who {
    /// `admin`, `member` or `service` (a member of kind service).
    name: &'static str,
    id: String,
    token: String,
    access: (String, String),
}

struct Key {
    id: String,
    spec: String,
    usage: String,
}

/// A tenant and everything of it the other tenants attack.
struct Tenant {
    id: String,
    account: String,
    principals: Vec<Who>,
    keys: Vec<Key>,
    /// An alias name per key (`alias/<tenant>-<n>`).
    aliases: Vec<String>,
    /// A key made through Transit, by its Transit name.
    transit_name: String,
    transit_ciphertext: String,
    plugin: String,
    /// (key, grant id) of a grant on one of its keys.
    grant: (String, String),
    /// (external key, import token).
    import: (String, String),
    /// A keyplane ciphertext under its symmetric key (key id, bytes).
    ciphertext: (String, Vec<u8>),
    /// A signature and a MAC by its keys: (key id, message, signature or mac).
    signature: (String, Vec<u8>),
    mac: (String, Vec<u8>),
    /// Public keys of its own keys (DER base64 of a P-256 agreement key, PEM of an RSA key),
    /// for the requests its principals send.
    p256_public: String,
    rsa_public: String,
}

impl Tenant {
    fn key_of(&self, spec: &str, usage: &str) -> &Key {
        self.keys
            .iter()
            .find(|k| k.spec == spec && k.usage == usage)
            .unwrap_or_else(|| panic!("{} has no {spec} {usage} key", self.id))
    }

    fn admin(&self) -> &Who {
        &self.principals[0]
    }

    fn key_arn(&self, key: &str) -> String {
        format!("arn:aws:kms:{REGION}:{}:key/{key}", self.account)
    }

    fn alias_arn(&self, alias: &str) -> String {
        format!("arn:aws:kms:{REGION}:{}:{alias}", self.account)
    }
}

/// The usages every spec is created with (its first usage is the default).
fn usages_of(spec: &str) -> &'static [&'static str] {
    match spec {
        s if s.starts_with("HMAC") => &["generate-verify-mac"],
        s if s.starts_with("RSA") => &["encrypt-decrypt", "sign-verify"],
        "ECC_NIST_P256" | "ECC_NIST_P384" => &["sign-verify", "key-agreement"],
        s if s.starts_with("FFDHE") => &["key-agreement"],
        s if s.starts_with("ECC") || s.starts_with("ED25519") => &["sign-verify"],
        _ => &["encrypt-decrypt"],
    }
}

async fn tenant(s: &Server, n: usize, specs: &[String]) -> Tenant {
    let id = format!("iso-{n}-t");
    let account = format!("{:012}", 100_000_000_000u64 + n as u64);
    s.ok(
        &s.admin,
        "create-tenant",
        json!({ "tenant_id": id, "account_id": account }),
    )
    .await;
    let mut principals = Vec::new();
    for (name, role, kind) in [
        ("admin", "admin", "user"),
        ("member", "member", "user"),
        ("service", "member", "service"),
    ] {
        let p = s
            .ok(
                &s.admin,
                "create-principal",
                json!({ "tenant_id": id, "name": name, "role": role, "kind": kind }),
            )
            .await;
        principals.push((
            name,
            p["principal_id"].as_str().unwrap().to_string(),
            p["token"].as_str().unwrap().to_string(),
        ));
    }
    let admin = principals[0].2.clone();
    let mut who = Vec::new();
    for (name, pid, token) in principals {
        let v = s
            .ok(&admin, "create-access-key", json!({ "principal_id": pid }))
            .await;
        let access = (
            v["access_key_id"].as_str().unwrap().to_string(),
            v["secret_access_key"].as_str().unwrap().to_string(),
        );
        who.push(Who {
            name,
            id: pid,
            token,
            access,
        });
    }

    let mut keys = Vec::new();
    let mut aliases = Vec::new();
    for spec in specs {
        for usage in usages_of(spec) {
            let v = s
                .ok(
                    &admin,
                    "create-key",
                    json!({ "key_spec": spec, "key_usage": usage, "exportable": spec.starts_with("RSA") }),
                )
                .await;
            let key = v["key_id"].as_str().unwrap().to_string();
            let alias = format!("alias/{id}-{}-q", keys.len());
            s.ok(
                &admin,
                "create-alias",
                json!({ "alias_name": alias, "target_key_id": key }),
            )
            .await;
            aliases.push(alias);
            keys.push(Key {
                id: key,
                spec: spec.clone(),
                usage: usage.to_string(),
            });
        }
    }
    let external = s
        .ok(&admin, "create-key", json!({ "origin": "external" }))
        .await["key_id"]
        .as_str()
        .unwrap()
        .to_string();
    keys.push(Key {
        id: external.clone(),
        spec: "AES_256_GCM".into(),
        usage: "EXTERNAL".into(),
    });
    let import = s
        .ok(
            &admin,
            "get-parameters-for-import",
            json!({ "key_id": external, "wrapping_algorithm": "RSAES_OAEP_SHA_1", "wrapping_key_spec": "RSA_2048" }),
        )
        .await["import_token"]
        .as_str()
        .unwrap()
        .to_string();

    let plugin = format!("kv-{id}-p");
    s.ok(
        &admin,
        "upload-plugin",
        json!({ "name": plugin, "world": "storage-backend", "component": b64(&common::wasm("storage-kv")) }),
    )
    .await;

    let transit_name = format!("{id}-transit");
    let (st, v) = transit(s, &admin, "POST", &format!("keys/{transit_name}"), None).await;
    assert!(st < 300, "create the Transit key: {st} {v}");
    let (st, v) = transit(
        s,
        &admin,
        "POST",
        &format!("encrypt/{transit_name}"),
        Some(json!({ "plaintext": b64(b"transit secret") })),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let transit_ciphertext = v["data"]["ciphertext"].as_str().unwrap().to_string();

    let t = Tenant {
        id: id.clone(),
        account,
        principals: who,
        keys,
        aliases,
        transit_name,
        transit_ciphertext,
        plugin,
        grant: (String::new(), String::new()),
        import: (external, import),
        ciphertext: (String::new(), Vec::new()),
        signature: (String::new(), Vec::new()),
        mac: (String::new(), Vec::new()),
        p256_public: String::new(),
        rsa_public: String::new(),
    };
    let sym = t.key_of("AES_256_GCM", "encrypt-decrypt").id.clone();
    let ct = s.encrypt(&admin, &sym, b"tenant secret", json!({})).await;
    let grant = s
        .ok(
            &admin,
            "create-grant",
            json!({ "key_id": sym, "grantee_principal": t.principals[2].id, "operations": ["Encrypt", "Decrypt"] }),
        )
        .await["grant_id"]
        .as_str()
        .unwrap()
        .to_string();
    let ecc = t.key_of("ECC_NIST_P256", "sign-verify").id.clone();
    let sig = s
        .ok(
            &admin,
            "sign",
            json!({ "key_id": ecc, "message": b64(b"m"), "message_type": "RAW", "signing_algorithm": "ECDSA_SHA_256" }),
        )
        .await;
    let hmac = t.key_of("HMAC_SHA_256", "generate-verify-mac").id.clone();
    let mac = s
        .ok(
            &admin,
            "generate-mac",
            json!({ "key_id": hmac, "message": b64(b"m"), "mac_algorithm": "HMAC_SHA_256" }),
        )
        .await;
    let agree = t.key_of("ECC_NIST_P256", "key-agreement").id.clone();
    let p256 = s
        .ok(
            &admin,
            "get-public-key",
            json!({ "key_id": agree, "format": "DER" }),
        )
        .await["der"]
        .as_str()
        .unwrap()
        .to_string();
    let rsa = t.key_of("RSA_2048", "encrypt-decrypt").id.clone();
    let rsa_pem = s
        .ok(
            &admin,
            "get-public-key",
            json!({ "key_id": rsa, "format": "PEM" }),
        )
        .await["pem"]
        .as_str()
        .unwrap()
        .to_string();
    Tenant {
        p256_public: p256,
        rsa_public: rsa_pem,
        grant: (sym.clone(), grant),
        ciphertext: (sym, ct),
        signature: (ecc, common::unb64(&sig["signature"])),
        mac: (hmac, common::unb64(&mac["mac"])),
        ..t
    }
}

/// One request of some front.
#[derive(Clone, Debug)]
enum Req {
    Native(&'static str, Value),
    Aws(&'static str, Value),
    Transit(&'static str, String, Option<Value>),
}

/// How an attempt must be recorded in the audit log.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Audit {
    /// It reached the other tenant's object: a deny.
    Deny,
    /// It named something of the caller's own namespace only: any refusal.
    Refused,
}

/// One cell of the matrix: what is attacked, how, and the request naming `reference` (or,
/// for the comparison, naming nothing).
struct Attempt {
    front: &'static str,
    label: String,
    kind: &'static str,
    audit: Audit,
    reference: String,
    make: Box<dyn Fn(&str) -> Req + Send + Sync>,
}

/// The same reference with its last alphanumeric character changed: the same shape, naming
/// nothing.
fn nothing(reference: &str) -> String {
    let mut chars: Vec<char> = reference.chars().collect();
    let i = chars
        .iter()
        .rposition(|c| c.is_ascii_alphanumeric())
        .expect("an alphanumeric reference");
    chars[i] = match chars[i] {
        '9' => '0',
        'f' => 'a',
        'z' => 'a',
        'Z' => 'A',
        c @ ('0'..='8' | 'a'..='e' | 'g'..='y' | 'A'..='Y') => (c as u8 + 1) as char,
        c => c,
    };
    chars.into_iter().collect()
}

/// `ct` with the key id it names replaced by `id` (same length).
fn naming(ct: &[u8], key: &str, id: &str) -> Vec<u8> {
    assert_eq!(key.len(), id.len());
    let at = ct
        .windows(key.len())
        .position(|w| w == key.as_bytes())
        .expect("the ciphertext names its key");
    let mut out = ct.to_vec();
    out[at..at + key.len()].copy_from_slice(id.as_bytes());
    out
}

/// What the attacker `a` (of tenant `own`) tries against tenant `v`.
fn attempts(own: &Tenant, v: &Tenant) -> Vec<Attempt> {
    let mut out = Vec::new();
    let mut add = |front,
                   label: &str,
                   kind,
                   audit,
                   reference: &str,
                   make: Box<dyn Fn(&str) -> Req + Send + Sync>| {
        out.push(Attempt {
            front,
            label: label.to_string(),
            kind,
            audit,
            reference: reference.to_string(),
            make,
        })
    };
    let own_sym = own.key_of("AES_256_GCM", "encrypt-decrypt").id.clone();
    let own_ext = own.import.0.clone();
    let m = b64(b"m");

    // Every native operation that names a key, on every key of the other tenant (by id), and
    // on one by alias name (the caller's own namespace: an alias of that name is not there).
    let native_key_ops: Vec<(&'static str, Value)> = vec![
        ("describe-key", json!({})),
        ("encrypt", json!({ "plaintext": m })),
        (
            "decrypt",
            json!({ "ciphertext_blob": b64(&own.ciphertext.1) }),
        ),
        ("generate-data-key", json!({ "key_spec": "AES_256" })),
        (
            "generate-data-key-without-plaintext",
            json!({ "key_spec": "AES_256" }),
        ),
        (
            "generate-data-key-pair",
            json!({ "key_pair_spec": "ECC_NIST_P256" }),
        ),
        (
            "generate-data-key-pair-without-plaintext",
            json!({ "key_pair_spec": "ECC_NIST_P256" }),
        ),
        (
            "sign",
            json!({ "message": m, "message_type": "RAW", "signing_algorithm": "ECDSA_SHA_256" }),
        ),
        (
            "verify",
            json!({ "message": m, "message_type": "RAW", "signing_algorithm": "ECDSA_SHA_256", "signature": b64(&own.signature.1) }),
        ),
        (
            "generate-mac",
            json!({ "message": m, "mac_algorithm": "HMAC_SHA_256" }),
        ),
        (
            "verify-mac",
            json!({ "message": m, "mac_algorithm": "HMAC_SHA_256", "mac": b64(&own.mac.1) }),
        ),
        ("get-public-key", json!({})),
        ("get-public-key", json!({ "format": "CERTIFICATE" })),
        (
            "generate-csr",
            json!({ "subject": { "common_name": "attacker" }, "dns_names": ["a.example"] }),
        ),
        (
            "derive-shared-secret",
            json!({ "peer_public_key": own.p256_public, "key_agreement_algorithm": "ECDH" }),
        ),
        (
            "set-rotation-schedule",
            json!({ "plugin": own.plugin, "config": {} }),
        ),
        ("preview-rotation", json!({})),
        ("rotate-key", json!({})),
        ("list-key-versions", json!({})),
        ("enable-key", json!({})),
        ("disable-key", json!({})),
        ("enable-key-version", json!({ "version": 1 })),
        ("disable-key-version", json!({ "version": 1 })),
        (
            "revoke-key-version",
            json!({ "version": 1, "reason": "compromised" }),
        ),
        ("set-min-decryption-version", json!({ "version": 1 })),
        (
            "approve-key-deletion",
            json!({ "requester": own.admin().id }),
        ),
        ("schedule-key-deletion", json!({ "pending_window_days": 7 })),
        ("cancel-key-deletion", json!({})),
        ("set-deletion-protection", json!({ "enabled": false })),
        (
            "configure-key",
            json!({ "deletion_protection": true, "min_decryption_version": 1 }),
        ),
        ("list-aliases", json!({})),
        (
            "get-parameters-for-import",
            json!({ "wrapping_algorithm": "RSAES_OAEP_SHA_1", "wrapping_key_spec": "RSA_2048" }),
        ),
        (
            "import-key-material",
            json!({ "import_token": own.import.1, "encrypted_key_material": m }),
        ),
        (
            "export-key",
            json!({ "wrapping_algorithm": "RSAES_OAEP_SHA_1", "public_key": own.rsa_public }),
        ),
        ("delete-imported-key-material", json!({})),
        (
            "update-key-description",
            json!({ "description": "mine now" }),
        ),
        ("tag-key", json!({ "tags": { "owner": "attacker" } })),
        ("untag-key", json!({ "tag_keys": ["owner"] })),
        ("list-key-tags", json!({})),
        ("enable-key-rotation", json!({})),
        ("disable-key-rotation", json!({})),
        ("get-key-rotation-status", json!({})),
        ("get-key-policy", json!({})),
        (
            "put-key-policy",
            json!({ "policy": "{\"Version\": \"2012-10-17\"}" }),
        ),
        ("list-key-policies", json!({})),
        (
            "create-grant",
            json!({ "grantee_principal": own.admin().id, "operations": ["Encrypt"] }),
        ),
        ("list-grants", json!({})),
    ];
    let with = |body: &Value, field: &str, value: &str| {
        let mut b = body.clone();
        b[field] = json!(value);
        b
    };
    for (op, body) in &native_key_ops {
        for key in &v.keys {
            let (op, body) = (*op, body.clone());
            add(
                "native",
                op,
                "key",
                Audit::Deny,
                &key.id,
                Box::new(move |r| Req::Native(op, with(&body, "key_id", r))),
            );
        }
        let (op, body) = (*op, body.clone());
        add(
            "native",
            op,
            "alias name",
            Audit::Refused,
            &v.aliases[0],
            Box::new(move |r| Req::Native(op, with(&body, "key_id", r))),
        );
    }
    // Keys named in other fields.
    let (vk, vct) = (v.ciphertext.0.clone(), v.ciphertext.1.clone());
    {
        let (vk2, vct2) = (vk.clone(), vct.clone());
        add(
            "native",
            "decrypt",
            "ciphertext",
            Audit::Deny,
            &vk,
            Box::new(move |r| {
                Req::Native(
                    "decrypt",
                    json!({ "ciphertext_blob": b64(&naming(&vct2, &vk2, r)) }),
                )
            }),
        );
        let (vk2, vct2, dest) = (vk.clone(), vct.clone(), own_sym.clone());
        add(
            "native",
            "rewrap",
            "ciphertext",
            Audit::Deny,
            &vk,
            Box::new(move |r| {
                Req::Native(
                    "rewrap",
                    json!({ "ciphertext_blob": b64(&naming(&vct2, &vk2, r)), "source_encryption_context": {}, "destination_key_id": dest }),
                )
            }),
        );
        let own_ct = own.ciphertext.1.clone();
        add(
            "native",
            "rewrap",
            "destination key",
            Audit::Deny,
            &vk,
            Box::new(move |r| {
                Req::Native(
                    "rewrap",
                    json!({ "ciphertext_blob": b64(&own_ct), "source_encryption_context": {}, "destination_key_id": r }),
                )
            }),
        );
        let alias = format!("alias/{}-taken", own.id);
        add(
            "native",
            "create-alias",
            "key",
            Audit::Deny,
            &vk,
            Box::new(move |r| {
                Req::Native(
                    "create-alias",
                    json!({ "alias_name": alias, "target_key_id": r }),
                )
            }),
        );
        let alias = own.aliases[0].clone();
        add(
            "native",
            "update-alias",
            "key",
            Audit::Deny,
            &vk,
            Box::new(move |r| {
                Req::Native(
                    "update-alias",
                    json!({ "alias_name": alias, "target_key_id": r }),
                )
            }),
        );
        let sym = own_sym.clone();
        add(
            "native",
            "update-alias",
            "alias name",
            Audit::Refused,
            &v.aliases[0],
            Box::new(move |r| {
                Req::Native(
                    "update-alias",
                    json!({ "alias_name": r, "target_key_id": sym }),
                )
            }),
        );
        add(
            "native",
            "delete-alias",
            "alias name",
            Audit::Refused,
            &v.aliases[0],
            Box::new(|r| Req::Native("delete-alias", json!({ "alias_name": r }))),
        );
    }
    // Grants, import tokens, access keys, principals, plugins, the tenant.
    let (gk, gid) = v.grant.clone();
    {
        let gid2 = gid.clone();
        add(
            "native",
            "revoke-grant",
            "key",
            Audit::Deny,
            &gk,
            Box::new(move |r| {
                Req::Native("revoke-grant", json!({ "key_id": r, "grant_id": gid2 }))
            }),
        );
        let gk2 = gk.clone();
        add(
            "native",
            "revoke-grant",
            "grant",
            Audit::Refused,
            &gid,
            Box::new(move |r| Req::Native("revoke-grant", json!({ "key_id": gk2, "grant_id": r }))),
        );
        add(
            "native",
            "retire-grant",
            "grant",
            Audit::Deny,
            &gid,
            Box::new(|r| Req::Native("retire-grant", json!({ "grant_id": r }))),
        );
        add(
            "native",
            "retire-grant",
            "grant token",
            Audit::Deny,
            &gid,
            Box::new(|r| Req::Native("retire-grant", json!({ "grant_token": r }))),
        );
        // With a key named too: the caller's own key, or an alias it does not have. The key
        // is compared only once the grant's key was authorized, so neither tells whether the
        // grant exists (before, an unknown alias answered "alias not found" only for a grant
        // that existed, and the mismatch was audited as not evaluated).
        let sym = own_sym.clone();
        add(
            "native",
            "retire-grant",
            "grant with the caller's key",
            Audit::Deny,
            &gid,
            Box::new(move |r| Req::Native("retire-grant", json!({ "grant_id": r, "key_id": sym }))),
        );
        add(
            "native",
            "retire-grant",
            "grant with an unknown alias",
            Audit::Deny,
            &gid,
            Box::new(|r| {
                Req::Native(
                    "retire-grant",
                    json!({ "grant_id": r, "key_id": "alias/none" }),
                )
            }),
        );
        let gid2 = gid.clone();
        add(
            "native",
            "list-grants",
            "key",
            Audit::Deny,
            &gk,
            Box::new(move |r| Req::Native("list-grants", json!({ "key_id": r, "grant_id": gid2 }))),
        );
    }
    let ext = own_ext.clone();
    add(
        "native",
        "import-key-material",
        "import token",
        Audit::Refused,
        &v.import.1,
        Box::new(move |r| {
            Req::Native(
                "import-key-material",
                json!({ "key_id": ext, "import_token": r, "encrypted_key_material": b64(&[7u8; 32]) }),
            )
        }),
    );
    for p in &v.principals {
        add(
            "native",
            "delete-access-key",
            "access key",
            Audit::Deny,
            &p.access.0,
            Box::new(|r| Req::Native("delete-access-key", json!({ "access_key_id": r }))),
        );
        add(
            "native",
            "list-access-keys",
            "principal",
            Audit::Deny,
            &p.id,
            Box::new(|r| Req::Native("list-access-keys", json!({ "principal_id": r }))),
        );
        add(
            "native",
            "create-access-key",
            "principal",
            Audit::Deny,
            &p.id,
            Box::new(|r| Req::Native("create-access-key", json!({ "principal_id": r }))),
        );
        add(
            "native",
            "list-retirable-grants",
            "principal",
            Audit::Refused,
            &p.id,
            Box::new(|r| Req::Native("list-retirable-grants", json!({ "retiring_principal": r }))),
        );
        let sym = own_sym.clone();
        add(
            "native",
            "create-grant",
            "grantee",
            Audit::Refused,
            &p.id,
            Box::new(move |r| {
                Req::Native(
                    "create-grant",
                    json!({ "key_id": sym, "grantee_principal": r, "operations": ["Encrypt"] }),
                )
            }),
        );
        let sym = own_sym.clone();
        add(
            "native",
            "approve-key-deletion",
            "requester",
            Audit::Refused,
            &p.id,
            Box::new(move |r| {
                Req::Native(
                    "approve-key-deletion",
                    json!({ "key_id": sym, "requester": r }),
                )
            }),
        );
    }
    add(
        "native",
        "create-principal",
        "tenant",
        Audit::Deny,
        &v.id,
        Box::new(|r| {
            Req::Native(
                "create-principal",
                json!({ "tenant_id": r, "name": "intruder", "role": "admin" }),
            )
        }),
    );
    for op in ["describe-plugin", "delete-plugin"] {
        add(
            "native",
            op,
            "plugin name",
            Audit::Refused,
            &v.plugin,
            Box::new(move |r| Req::Native(op, json!({ "name": r }))),
        );
    }
    add(
        "native",
        "set-storage-backend",
        "plugin name",
        Audit::Refused,
        &v.plugin,
        Box::new(|r| Req::Native("set-storage-backend", json!({ "plugin": r, "config": {} }))),
    );
    let sym = own_sym.clone();
    add(
        "native",
        "set-rotation-schedule",
        "plugin name",
        Audit::Refused,
        &v.plugin,
        Box::new(move |r| {
            Req::Native(
                "set-rotation-schedule",
                json!({ "key_id": sym, "plugin": r, "config": {} }),
            )
        }),
    );

    // The AWS KMS front: every action that names a key, by key ARN and alias ARN of the other
    // tenant's account and by bare key id (then Cedar decides, as natively).
    let aws_key_actions: Vec<(&'static str, Value)> = vec![
        ("DescribeKey", json!({})),
        ("EnableKey", json!({})),
        ("DisableKey", json!({})),
        ("ScheduleKeyDeletion", json!({ "PendingWindowInDays": 7 })),
        ("CancelKeyDeletion", json!({})),
        ("Encrypt", json!({ "Plaintext": m })),
        (
            "Decrypt",
            json!({ "CiphertextBlob": b64(&own.ciphertext.1) }),
        ),
        ("GenerateDataKey", json!({ "KeySpec": "AES_256" })),
        (
            "GenerateDataKeyWithoutPlaintext",
            json!({ "KeySpec": "AES_256" }),
        ),
        (
            "GenerateDataKeyPair",
            json!({ "KeyPairSpec": "ECC_NIST_P256" }),
        ),
        (
            "GenerateDataKeyPairWithoutPlaintext",
            json!({ "KeyPairSpec": "ECC_NIST_P256" }),
        ),
        (
            "Sign",
            json!({ "Message": m, "MessageType": "RAW", "SigningAlgorithm": "ECDSA_SHA_256" }),
        ),
        (
            "Verify",
            json!({ "Message": m, "MessageType": "RAW", "SigningAlgorithm": "ECDSA_SHA_256", "Signature": b64(&own.signature.1) }),
        ),
        (
            "GenerateMac",
            json!({ "Message": m, "MacAlgorithm": "HMAC_SHA_256" }),
        ),
        (
            "VerifyMac",
            json!({ "Message": m, "MacAlgorithm": "HMAC_SHA_256", "Mac": b64(&own.mac.1) }),
        ),
        ("GetPublicKey", json!({})),
        (
            "DeriveSharedSecret",
            json!({ "PublicKey": own.p256_public, "KeyAgreementAlgorithm": "ECDH" }),
        ),
        ("RotateKeyOnDemand", json!({})),
        ("ListKeyRotations", json!({})),
        (
            "GetParametersForImport",
            json!({ "WrappingAlgorithm": "RSAES_OAEP_SHA_1", "WrappingKeySpec": "RSA_2048" }),
        ),
        (
            "ImportKeyMaterial",
            json!({ "ImportToken": b64(own.import.1.as_bytes()), "EncryptedKeyMaterial": m, "ExpirationModel": "KEY_MATERIAL_DOES_NOT_EXPIRE" }),
        ),
        ("DeleteImportedKeyMaterial", json!({})),
        ("UpdateKeyDescription", json!({ "Description": "mine now" })),
        (
            "TagResource",
            json!({ "Tags": [{ "TagKey": "owner", "TagValue": "attacker" }] }),
        ),
        ("UntagResource", json!({ "TagKeys": ["owner"] })),
        ("ListResourceTags", json!({})),
        ("EnableKeyRotation", json!({})),
        ("DisableKeyRotation", json!({})),
        ("GetKeyRotationStatus", json!({})),
        ("GetKeyPolicy", json!({ "PolicyName": "default" })),
        (
            "PutKeyPolicy",
            json!({ "PolicyName": "default", "Policy": "{}" }),
        ),
        ("ListKeyPolicies", json!({})),
        (
            "CreateGrant",
            json!({ "GranteePrincipal": format!("arn:aws:iam::{}:user/admin", own.account), "Operations": ["Encrypt"] }),
        ),
        ("ListGrants", json!({})),
        ("ListAliases", json!({})),
    ];
    for (target, body) in &aws_key_actions {
        for key in &v.keys {
            let (target, body) = (*target, body.clone());
            let arn = v.key_arn(&key.id);
            add(
                "aws-kms",
                target,
                "key ARN",
                Audit::Deny,
                &arn,
                Box::new(move |r| Req::Aws(target, with(&body, "KeyId", r))),
            );
        }
        let target: &'static str = target;
        let b = body.clone();
        let key = v.keys[0].id.clone();
        add(
            "aws-kms",
            target,
            "key",
            Audit::Deny,
            &key,
            Box::new(move |r| Req::Aws(target, with(&b, "KeyId", r))),
        );
        let b = body.clone();
        let arn = v.alias_arn(&v.aliases[0]);
        add(
            "aws-kms",
            target,
            "alias ARN",
            Audit::Deny,
            &arn,
            Box::new(move |r| Req::Aws(target, with(&b, "KeyId", r))),
        );
        let b = body.clone();
        add(
            "aws-kms",
            target,
            "alias name",
            Audit::Refused,
            &v.aliases[0],
            Box::new(move |r| Req::Aws(target, with(&b, "KeyId", r))),
        );
    }
    {
        let (vk2, vct2) = (vk.clone(), vct.clone());
        add(
            "aws-kms",
            "Decrypt",
            "ciphertext",
            Audit::Deny,
            &vk,
            Box::new(move |r| {
                Req::Aws(
                    "Decrypt",
                    json!({ "CiphertextBlob": b64(&naming(&vct2, &vk2, r)) }),
                )
            }),
        );
        let (vk2, vct2, dest) = (vk.clone(), vct.clone(), own_sym.clone());
        add(
            "aws-kms",
            "ReEncrypt",
            "ciphertext",
            Audit::Deny,
            &vk,
            Box::new(move |r| {
                Req::Aws(
                    "ReEncrypt",
                    json!({ "CiphertextBlob": b64(&naming(&vct2, &vk2, r)), "DestinationKeyId": dest }),
                )
            }),
        );
        let own_ct = own.ciphertext.1.clone();
        let arn = v.key_arn(&vk);
        add(
            "aws-kms",
            "ReEncrypt",
            "destination key ARN",
            Audit::Deny,
            &arn,
            Box::new(move |r| {
                Req::Aws(
                    "ReEncrypt",
                    json!({ "CiphertextBlob": b64(&own_ct), "DestinationKeyId": r }),
                )
            }),
        );
        let alias = format!("alias/{}-taken-aws", own.id);
        add(
            "aws-kms",
            "CreateAlias",
            "key ARN",
            Audit::Deny,
            &arn,
            Box::new(move |r| {
                Req::Aws(
                    "CreateAlias",
                    json!({ "AliasName": alias, "TargetKeyId": r }),
                )
            }),
        );
        let alias = own.aliases[0].clone();
        add(
            "aws-kms",
            "UpdateAlias",
            "key ARN",
            Audit::Deny,
            &arn,
            Box::new(move |r| {
                Req::Aws(
                    "UpdateAlias",
                    json!({ "AliasName": alias, "TargetKeyId": r }),
                )
            }),
        );
        add(
            "aws-kms",
            "DeleteAlias",
            "alias ARN",
            Audit::Deny,
            &v.alias_arn(&v.aliases[0]),
            Box::new(|r| Req::Aws("DeleteAlias", json!({ "AliasName": r }))),
        );
        let gid2 = gid.clone();
        add(
            "aws-kms",
            "RevokeGrant",
            "key ARN",
            Audit::Deny,
            &v.key_arn(&gk),
            Box::new(move |r| Req::Aws("RevokeGrant", json!({ "KeyId": r, "GrantId": gid2 }))),
        );
        add(
            "aws-kms",
            "RetireGrant",
            "grant token",
            Audit::Deny,
            &gid,
            Box::new(|r| Req::Aws("RetireGrant", json!({ "GrantToken": r }))),
        );
        let sym = own_sym.clone();
        add(
            "aws-kms",
            "RetireGrant",
            "grant id with the caller's key",
            Audit::Deny,
            &gid,
            Box::new(move |r| Req::Aws("RetireGrant", json!({ "KeyId": sym, "GrantId": r }))),
        );
        let sym = own_sym.clone();
        add(
            "aws-kms",
            "CreateGrant",
            "grantee ARN",
            Audit::Refused,
            &format!("arn:aws:iam::{}:user/admin", v.account),
            Box::new(move |r| {
                Req::Aws(
                    "CreateGrant",
                    json!({ "KeyId": sym, "GranteePrincipal": r, "Operations": ["Encrypt"] }),
                )
            }),
        );
        add(
            "aws-kms",
            "ListRetirableGrants",
            "principal ARN",
            Audit::Refused,
            &format!("arn:aws:iam::{}:user/admin", v.account),
            Box::new(|r| Req::Aws("ListRetirableGrants", json!({ "RetiringPrincipal": r }))),
        );
    }

    // Vault Transit: names live in the caller's tenant, so the other tenant's names (its
    // Transit key's and its aliases') name nothing here; its ciphertexts name its keys.
    let name = v.transit_name.clone();
    let ct = v.transit_ciphertext.clone();
    let transit_endpoints: Vec<(&'static str, &'static str, Option<Value>)> = vec![
        ("GET", "keys/{}", None),
        (
            "POST",
            "keys/{}/config",
            Some(json!({ "deletion_allowed": true })),
        ),
        ("POST", "keys/{}/rotate", Some(json!({}))),
        ("DELETE", "keys/{}", None),
        ("POST", "decrypt/{}", Some(json!({ "ciphertext": ct }))),
        ("POST", "rewrap/{}", Some(json!({ "ciphertext": ct }))),
        ("POST", "datakey/plaintext/{}", Some(json!({}))),
        ("POST", "datakey/wrapped/{}", Some(json!({}))),
        ("POST", "sign/{}", Some(json!({ "input": m }))),
        (
            "POST",
            "verify/{}",
            Some(json!({ "input": m, "signature": "vault:v1:AAAA" })),
        ),
        ("POST", "hmac/{}", Some(json!({ "input": m }))),
    ];
    for (method, path, body) in &transit_endpoints {
        for (kind, n) in [
            ("Transit name", name.clone()),
            (
                "alias name",
                v.aliases[0].trim_start_matches("alias/").to_string(),
            ),
        ] {
            let (method, path, body) = (*method, *path, body.clone());
            add(
                "vault-transit",
                &format!("{method} {}", path.replace("/{}", "")),
                kind,
                Audit::Refused,
                &n,
                Box::new(move |r| Req::Transit(method, path.replace("{}", r), body.clone())),
            );
        }
    }
    {
        let (vk2, vct2) = (vk.clone(), vct.clone());
        let alias = own.aliases[0].trim_start_matches("alias/").to_string();
        add(
            "vault-transit",
            "POST decrypt",
            "ciphertext",
            Audit::Deny,
            &vk,
            Box::new(move |r| {
                Req::Transit(
                    "POST",
                    format!("decrypt/{alias}"),
                    Some(
                        json!({ "ciphertext": format!("vault:v1:{}", b64(&naming(&vct2, &vk2, r))) }),
                    ),
                )
            }),
        );
    }
    out
}

/// A Transit request by the holder of `token`: status and JSON answer.
async fn transit(
    s: &Server,
    token: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let (st, v, _) = transit_raw(s, token, method, path, body).await;
    (st, serde_json::from_str(&v).unwrap_or(Value::Null))
}

async fn transit_raw(
    s: &Server,
    token: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, String, String) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = s
        .client
        .request(method, format!("{}/v1/transit/{path}", s.base))
        .header("X-Vault-Token", token);
    if let Some(b) = body {
        req = req.body(b.to_string());
    }
    answer(req).await
}

/// Send; (status, body, request id).
async fn answer(req: reqwest::RequestBuilder) -> (u16, String, String) {
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let id = resp
        .headers()
        .get("x-request-id")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, resp.text().await.unwrap(), id)
}

/// A SigV4-signed AWS KMS request.
async fn aws(
    s: &Server,
    key: &(String, String),
    target: &str,
    body: &Value,
) -> (u16, String, String) {
    let body = body.to_string();
    let url = format!("{}/", s.base);
    let target = format!("TrentService.{target}");
    let host = s.base.trim_start_matches("https://").to_string();
    let headers = [
        ("content-type", "application/x-amz-json-1.1"),
        ("x-amz-target", target.as_str()),
        ("host", host.as_str()),
    ];
    let identity = Credentials::new(&key.0, &key.1, None, None, "isolation").into();
    let params = aws_v4::SigningParams::builder()
        .identity(&identity)
        .region(REGION)
        .name("kms")
        .time(SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .unwrap()
        .into();
    let signable = SignableRequest::new(
        "POST",
        &url,
        headers.iter().copied(),
        SignableBody::Bytes(body.as_bytes()),
    )
    .unwrap();
    let (instructions, _) = sign(signable, &params).unwrap().into_parts();
    let mut req = s.client.post(&url).body(body.clone());
    for (k, v) in headers.iter().filter(|(k, _)| *k != "host") {
        req = req.header(*k, *v);
    }
    for (k, v) in instructions.headers() {
        req = req.header(k, v);
    }
    answer(req).await
}

async fn send(s: &Server, who: &Who, req: &Req) -> (u16, String, String) {
    match req {
        Req::Native(op, body) => {
            answer(
                s.client
                    .post(format!("{}/v1/{op}", s.base))
                    .bearer_auth(&who.token)
                    .body(body.to_string()),
            )
            .await
        }
        Req::Aws(target, body) => aws(s, &who.access, target, body).await,
        Req::Transit(method, path, body) => {
            transit_raw(s, &who.token, method, path, body.clone()).await
        }
    }
}

/// An answer with the reference (either form) replaced and request ids dropped.
fn normalized(body: &str, reference: &str, twin: &str) -> String {
    fn strip(v: &mut Value) {
        match v {
            Value::Object(m) => {
                m.remove("request_id");
                m.values_mut().for_each(strip);
            }
            Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let text = body.replace(reference, "<ref>").replace(twin, "<ref>");
    match serde_json::from_str::<Value>(&text) {
        Ok(mut v) => {
            strip(&mut v);
            v.to_string()
        }
        Err(_) => text,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn no_principal_of_any_front_reaches_another_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(Server::start(dir.path()).await);
    let specs: Vec<String> = s.ok(&s.admin, "describe-hsm", json!({})).await["key_specs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let mut tenants = Vec::new();
    for n in 0..3 {
        tenants.push(tenant(&s, n, &specs).await);
    }
    let tenants = Arc::new(tenants);
    let before: Vec<Vec<Value>> = {
        let mut all = Vec::new();
        for t in tenants.iter() {
            all.push(snapshot(&s, t).await);
        }
        all
    };

    // Every attempt of every principal against every other tenant.
    let mut cells = Vec::new();
    for (a, own) in tenants.iter().enumerate() {
        for (v, victim) in tenants.iter().enumerate() {
            if a == v {
                continue;
            }
            let list = Arc::new(attempts(own, victim));
            for p in 0..own.principals.len() {
                for i in 0..list.len() {
                    cells.push((a, p, list.clone(), i));
                }
            }
        }
    }
    let total = cells.len();
    let started = std::time::Instant::now();
    let results: Vec<_> = futures::stream::iter(cells)
        .map(|(a, p, list, i)| {
            let (s, tenants) = (s.clone(), tenants.clone());
            async move {
                let who = &tenants[a].principals[p];
                let at = &list[i];
                let twin_ref = nothing(&at.reference);
                let theirs = send(&s, who, &(at.make)(&at.reference)).await;
                let nothings = send(&s, who, &(at.make)(&twin_ref)).await;
                (a, p, list.clone(), i, theirs, nothings, twin_ref)
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let elapsed = started.elapsed();

    let mut failures = Vec::new();
    let mut deny_ids = Vec::new();
    let mut by_front: BTreeMap<&str, usize> = BTreeMap::new();
    let mut by_kind: BTreeMap<&str, usize> = BTreeMap::new();
    let mut by_role: BTreeMap<&str, usize> = BTreeMap::new();
    for (a, p, list, i, theirs, nothings, twin) in &results {
        let at = &list[*i];
        let who = &tenants[*a].principals[*p];
        *by_front.entry(at.front).or_default() += 1;
        *by_kind.entry(at.kind).or_default() += 1;
        *by_role.entry(who.name).or_default() += 1;
        let cell = format!(
            "{} {} by {}'s {} on {} {}",
            at.front, at.label, tenants[*a].id, who.name, at.kind, at.reference
        );
        if theirs.0 < 400 {
            failures.push((
                format!("{} {} on {}: accepted", at.front, at.label, at.kind),
                format!("{cell}: accepted ({}): {}", theirs.0, theirs.1),
            ));
            continue;
        }
        let (mine, none) = (
            normalized(&theirs.1, &at.reference, twin),
            normalized(&nothings.1, &at.reference, twin),
        );
        if theirs.0 != nothings.0 || mine != none {
            failures.push((
                format!(
                    "{} {} on {}: answered otherwise",
                    at.front, at.label, at.kind
                ),
                format!(
                    "{cell}: answered {} {mine}, but for nothing {} {none}",
                    theirs.0, nothings.0
                ),
            ));
        }
        if at.audit == Audit::Deny {
            let group = format!("{} {} on {}", at.front, at.label, at.kind);
            deny_ids.push((theirs.2.clone(), group, cell));
        }
    }

    // Audited: every attempt that reached another tenant's object is a deny.
    let pool = s.sql_any().await;
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT request_id, decision || ' ' || outcome || ' ' || resource FROM audit_log",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let decisions: HashMap<String, String> = rows.into_iter().collect();
    for (id, group, cell) in &deny_ids {
        match decisions.get(id) {
            Some(d) if d.starts_with("deny ") => {}
            other => failures.push((
                format!("{group}: audited as {other:?}"),
                format!("{cell}: audited as {other:?}, not as a deny"),
            )),
        }
    }

    // Listings by every principal and front name nothing of another tenant.
    let mut listings = 0;
    for (a, own) in tenants.iter().enumerate() {
        let foreign: Vec<&str> = tenants
            .iter()
            .enumerate()
            .filter(|(v, _)| *v != a)
            .flat_map(|(_, t)| {
                t.keys
                    .iter()
                    .map(|k| k.id.as_str())
                    .chain(t.aliases.iter().map(String::as_str))
                    .chain([
                        t.plugin.as_str(),
                        t.grant.1.as_str(),
                        t.transit_name.as_str(),
                        t.id.as_str(),
                        t.account.as_str(),
                    ])
                    .chain(
                        t.principals
                            .iter()
                            .flat_map(|p| [p.id.as_str(), p.access.0.as_str()]),
                    )
            })
            .collect();
        for who in &own.principals {
            for req in [
                Req::Native("list-keys", json!({})),
                Req::Native("list-aliases", json!({})),
                Req::Native("list-plugins", json!({})),
                Req::Native("list-access-keys", json!({})),
                Req::Native("list-retirable-grants", json!({})),
                Req::Native("get-caller-identity", json!({})),
                Req::Aws("ListKeys", json!({})),
                Req::Aws("ListAliases", json!({})),
                Req::Aws(
                    "ListRetirableGrants",
                    json!({ "RetiringPrincipal": format!("arn:aws:iam::{}:user/admin", own.account) }),
                ),
                Req::Transit("LIST", "keys".into(), None),
            ] {
                let (status, body, _) = send(&s, who, &req).await;
                listings += 1;
                for f in &foreign {
                    if body.contains(f) {
                        failures.push((
                            format!("listing {req:?}"),
                            format!("{req:?} by {}'s {} ({status}) names {f}", own.id, who.name),
                        ));
                    }
                }
            }
        }
    }

    // Nothing of any tenant changed (its own principals' use of its keys aside).
    for (t, was) in tenants.iter().zip(&before) {
        let now = snapshot(&s, t).await;
        for (a, b) in was.iter().zip(&now) {
            if a != b {
                failures.push((
                    "objects changed".into(),
                    format!("{}'s objects changed: {a} became {b}", t.id),
                ));
            }
        }
    }

    println!(
        "tenant isolation matrix: {} tenants × {} principals, {} keys per tenant ({} specs); {total} cross-tenant attempts \
         (each also sent naming nothing: {} requests in {:.1} s), {} of them audited as denies, {listings} listings",
        tenants.len(),
        tenants[0].principals.len(),
        tenants[0].keys.len(),
        specs.len(),
        total * 2,
        elapsed.as_secs_f64(),
        deny_ids.len(),
    );
    println!("  by front: {by_front:?}");
    println!("  by principal: {by_role:?}");
    println!("  by what was named: {by_kind:?}");
    println!(
        "  result: {} refused as nothing is, {} failures",
        total - failures.len().min(total),
        failures.len()
    );
    // One example of each kind of failure.
    let mut kinds: BTreeMap<&str, (usize, &str)> = BTreeMap::new();
    for (group, f) in &failures {
        kinds.entry(group).or_insert((0, f)).0 += 1;
    }
    assert!(
        failures.is_empty(),
        "{} of {total} cells failed, {} kinds:\n{}",
        failures.len(),
        kinds.len(),
        kinds
            .iter()
            .map(|(k, (n, f))| format!("{n} × {k}\n    e.g. {f}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    s.assert_audit_verifies();
}

/// What the tenant's admin sees of its objects (compared before and after the attacks).
async fn snapshot(s: &Server, t: &Tenant) -> Vec<Value> {
    let admin = &t.admin().token;
    let mut out = Vec::new();
    for k in &t.keys {
        for op in ["describe-key", "list-key-versions"] {
            let mut d = s.ok(admin, op, json!({ "key_id": k.id })).await;
            uncounted(&mut d);
            out.push(d);
        }
        out.push(
            s.ok(admin, "list-key-tags", json!({ "key_id": k.id }))
                .await,
        );
    }
    for op in ["list-aliases", "list-plugins", "list-access-keys"] {
        out.push(s.ok(admin, op, json!({})).await);
    }
    out.push(
        s.ok(admin, "list-grants", json!({ "key_id": t.grant.0 }))
            .await,
    );
    let (st, v) = transit(s, admin, "GET", &format!("keys/{}", t.transit_name), None).await;
    assert_eq!(st, 200);
    out.push(v["data"].clone());
    out
}

/// Without the usage counters of its versions (the tenant's own attempts use its keys).
fn uncounted(v: &mut Value) {
    for version in v["versions"].as_array_mut().into_iter().flatten() {
        if let Some(m) = version.as_object_mut() {
            for counter in ["encryptions", "decryptions", "signatures"] {
                m.remove(counter);
            }
        }
    }
}
