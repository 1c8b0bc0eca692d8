//! The AWS KMS and STS fronts, proven with clients nobody here wrote: boto3 (every action and
//! each error AWS clients name), the AWS CLI, the AWS Encryption SDK and sops, all from the
//! venv `scripts/setup` makes. Each request is checked by Cedar and recorded in the audit log
//! as a native one is, naming its front.

mod common;

use common::aws::{access_key, client, run, script, venv_bin, REGION};
use common::Server;
use serde_json::{json, Value};

const ACCOUNT: &str = "111122223333";

/// A node with a tenant `acme` of account [`ACCOUNT`]: its admin's (token, access key), a
/// member's access key, and a second admin's token (approves deletions).
struct Acme {
    server: Server,
    admin: String,
    admin_key: (String, String),
    member: String,
    member_key: (String, String),
    approver: String,
}

async fn acme(dir: &std::path::Path) -> Acme {
    let server = Server::start(dir).await;
    let tokens = server
        .tenant_with(
            "acme",
            ACCOUNT,
            &[("alice", "admin"), ("bob", "member"), ("adam", "admin")],
        )
        .await;
    let admin_key = access_key(&server, &tokens[0]).await;
    let member_key = access_key(&server, &tokens[1]).await;
    Acme {
        admin: tokens[0].clone(),
        member: tokens[1].clone(),
        approver: tokens[2].clone(),
        admin_key,
        member_key,
        server,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn boto3_runs_every_action_and_meets_every_error() {
    let dir = tempfile::tempdir().unwrap();
    let a = acme(dir.path()).await;
    let python = venv_bin("python");
    let out = run(client(&python, &a.server, &a.admin_key)
        .arg(script("boto3_kms.py"))
        .env("ACCOUNT", ACCOUNT)
        .env(
            "MEMBER_KEY",
            format!("{}:{}", a.member_key.0, a.member_key.1),
        )
        .env("APPROVER_TOKEN", &a.approver));
    assert!(out.contains("all boto3 checks passed"), "{out}");

    // Cedar decided each AWS request and the log recorded it, naming the front.
    let records = a.server.audit_records();
    let aws: Vec<&Value> = records.iter().filter(|r| r["front"] == "aws-kms").collect();
    for action in [
        "CreateKey",
        "Encrypt",
        "Decrypt",
        "ScheduleKeyDeletion",
        "Sign",
    ] {
        assert!(
            aws.iter()
                .any(|r| r["action"] == action && r["decision"] == "allow" && r["outcome"] == "ok"),
            "no allowed {action} through the AWS front"
        );
    }
    assert!(
        aws.iter()
            .any(|r| r["action"] == "CreateKey" && r["decision"] == "deny"),
        "the member's denied CreateKey is recorded"
    );
    assert!(
        aws.iter()
            .any(|r| r["action"] == "ListKeys" && r["outcome"] == "Unauthenticated"),
        "a refused signature is recorded"
    );
    assert!(
        aws.iter()
            .any(|r| r["action"] == "Encrypt" && r["outcome"] == "dry-run"),
        "a dry run is recorded as one"
    );
    assert!(records
        .iter()
        .any(|r| r["front"] == "aws-sts" && r["action"] == "GetCallerIdentity"));
    assert!(records.iter().any(|r| r["front"] == "native"));
    // Each signed request's records name the access key that signed it (covered by the hash:
    // the log still verifies); a refused signature's and a bearer token's, none.
    let signed_with = |r: &&Value| r["access_key_id"].as_str().map(str::to_string);
    let member = a.server.principal_id(&a.member).await;
    let mut checked = 0;
    for r in aws.iter().filter(|r| r["decision"] != "not-evaluated") {
        let by_member = r["principal"].as_str().unwrap().contains(&member);
        let key = if by_member {
            &a.member_key.0
        } else {
            &a.admin_key.0
        };
        assert_eq!(signed_with(r).as_ref(), Some(key), "{r}");
        checked += 1;
    }
    assert!(checked > 20, "{checked}");
    assert!(records
        .iter()
        .filter(|r| r["front"] == "aws-sts" && r["outcome"] == "ok")
        .all(|r| [&a.admin_key.0, &a.member_key.0].contains(&&signed_with(&r).unwrap())));
    assert!(aws
        .iter()
        .filter(|r| r["outcome"] == "Unauthenticated")
        .all(|r| r["access_key_id"].is_null()));
    assert!(records
        .iter()
        .filter(|r| r["front"] == "native")
        .all(|r| r["access_key_id"].is_null()));
    a.server.assert_audit_verifies();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_aws_cli_gets_its_identity_and_encrypts_and_decrypts_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let a = acme(dir.path()).await;
    let cli = venv_bin("aws");
    let aws = |args: &[&str]| {
        let mut cmd = client(&cli, &a.server, &a.admin_key);
        cmd.args(["--endpoint-url", &a.server.base, "--output", "json"])
            .args(args);
        let out = run(&mut cmd);
        serde_json::from_str::<Value>(&out).unwrap_or(Value::String(out))
    };
    let me = aws(&["sts", "get-caller-identity"]);
    assert_eq!(me["Account"], ACCOUNT, "{me}");
    assert_eq!(me["Arn"], format!("arn:aws:iam::{ACCOUNT}:user/alice"));

    let key = aws(&["kms", "create-key", "--description", "from the CLI"]);
    let arn = key["KeyMetadata"]["Arn"].as_str().unwrap().to_string();
    assert!(arn.starts_with(&format!("arn:aws:kms:{REGION}:{ACCOUNT}:key/")));

    let plain = dir.path().join("plain.bin");
    let secret: Vec<u8> = (0..=255).collect();
    std::fs::write(&plain, &secret).unwrap();
    let enc = aws(&[
        "kms",
        "encrypt",
        "--key-id",
        &arn,
        "--plaintext",
        &format!("fileb://{}", plain.display()),
    ]);
    assert_eq!(enc["KeyId"], arn);
    let blob = common::unb64(&enc["CiphertextBlob"]);
    let sealed = dir.path().join("sealed.bin");
    std::fs::write(&sealed, &blob).unwrap();
    let dec = aws(&[
        "kms",
        "decrypt",
        "--ciphertext-blob",
        &format!("fileb://{}", sealed.display()),
    ]);
    assert_eq!(common::unb64(&dec["Plaintext"]), secret);
    assert_eq!(dec["KeyId"], arn);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_aws_encryption_sdk_encrypts_and_decrypts_a_message_through_keyplane() {
    let dir = tempfile::tempdir().unwrap();
    let a = acme(dir.path()).await;
    let key = a
        .server
        .ok(&a.admin, "create-key", json!({ "description": "esdk" }))
        .await;
    let arn = format!(
        "arn:aws:kms:{REGION}:{ACCOUNT}:key/{}",
        key["key_id"].as_str().unwrap()
    );
    let out = run(client(&venv_bin("python"), &a.server, &a.admin_key)
        .arg(script("encryption_sdk.py"))
        .env("KEY_ARN", &arn));
    assert!(out.contains("esdk ok"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sops_encrypts_and_decrypts_a_yaml_file_with_a_keyplane_key() {
    let dir = tempfile::tempdir().unwrap();
    let a = acme(dir.path()).await;
    let key = a
        .server
        .ok(&a.admin, "create-key", json!({ "description": "sops" }))
        .await;
    let arn = format!(
        "arn:aws:kms:{REGION}:{ACCOUNT}:key/{}",
        key["key_id"].as_str().unwrap()
    );
    let plain = dir.path().join("secrets.yaml");
    std::fs::write(&plain, "db:\n    user: app\n    password: hunter2\n").unwrap();
    let sops = venv_bin("sops");
    let encrypted = run(client(&sops, &a.server, &a.admin_key)
        .args(["--disable-version-check", "encrypt", "--kms", &arn])
        .arg(&plain));
    assert!(!encrypted.contains("hunter2"), "{encrypted}");
    assert!(encrypted.contains(&arn), "{encrypted}");
    let sealed = dir.path().join("secrets.enc.yaml");
    std::fs::write(&sealed, &encrypted).unwrap();
    let decrypted = run(client(&sops, &a.server, &a.admin_key)
        .args(["--disable-version-check", "decrypt"])
        .arg(&sealed));
    assert!(decrypted.contains("password: hunter2"), "{decrypted}");
    // sops (Go) speaks HTTP/2: its requests were answered and recorded.
    let records = a.server.audit_records();
    assert!(records
        .iter()
        .any(|r| r["front"] == "aws-kms" && r["action"] == "Decrypt" && r["outcome"] == "ok"));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_access_key_is_shown_once_stored_sealed_and_stops_working_when_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let a = acme(dir.path()).await;
    let secret = &a.admin_key.1;
    // Listed without its secret; the database holds it only sealed.
    let listed = a.server.ok(&a.admin, "list-access-keys", json!({})).await;
    assert_eq!(listed["access_keys"][0]["access_key_id"], a.admin_key.0);
    assert!(!listed.to_string().contains(secret.as_str()));
    common::assert_absent_under(
        &a.server.data_dir,
        "the access key's secret",
        secret.as_bytes(),
    );

    let python = venv_bin("python");
    let list_keys = "import boto3; boto3.client('kms').list_keys(); print('signed ok')";
    let out = run(client(&python, &a.server, &a.admin_key).args(["-c", list_keys]));
    assert!(out.contains("signed ok"));

    // At most two per principal, as AWS IAM.
    access_key(&a.server, &a.admin).await;
    let (status, v) = a
        .server
        .call(Some(&a.admin), "create-access-key", json!({}))
        .await;
    assert_eq!(status, 409, "{v}");
    // Even when asked for at once (on PostgreSQL each creation counted the keys without the
    // others' and inserted: a principal ended with more).
    let have = a
        .server
        .ok(&a.approver, "list-access-keys", json!({}))
        .await["access_keys"]
        .as_array()
        .unwrap()
        .len();
    let at_once = futures_util::future::join_all((0..8).map(|_| {
        a.server
            .call(Some(&a.approver), "create-access-key", json!({}))
    }))
    .await;
    let made = at_once.iter().filter(|(st, _)| *st == 200).count();
    assert!(
        at_once.iter().all(|(st, _)| *st == 200 || *st == 409),
        "{at_once:?}"
    );
    let listed = a
        .server
        .ok(&a.approver, "list-access-keys", json!({}))
        .await;
    assert_eq!(
        listed["access_keys"].as_array().unwrap().len(),
        2,
        "{listed}"
    );
    assert_eq!(have + made, 2);

    // A member manages its own keys only; an admin, those of its tenant's principals.
    let alice = listed["access_keys"][0]["principal_id"].clone();
    let bob = a.server.principal_id(&a.member).await;
    let mine = a.server.ok(&a.member, "list-access-keys", json!({})).await;
    assert_eq!(mine["access_keys"][0]["access_key_id"], a.member_key.0);
    let (status, v) = a
        .server
        .call(
            Some(&a.member),
            "list-access-keys",
            json!({ "principal_id": alice }),
        )
        .await;
    assert_eq!(status, 403, "{v}");
    a.server
        .ok(
            &a.approver,
            "list-access-keys",
            json!({ "principal_id": bob }),
        )
        .await;

    a.server
        .ok(
            &a.admin,
            "delete-access-key",
            json!({ "access_key_id": a.admin_key.0 }),
        )
        .await;
    let out = client(&python, &a.server, &a.admin_key)
        .args(["-c", list_keys])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("UnrecognizedClientException"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn aws_answers_reach_http2_and_http1_clients_intact() {
    let dir = tempfile::tempdir().unwrap();
    let a = acme(dir.path()).await;
    // botocore speaks HTTP/1.1; sops (above) and this signed curl speak HTTP/2.
    let python = venv_bin("python");
    let sign = r#"
import sys, botocore.session, botocore.auth, botocore.awsrequest
s = botocore.session.get_session()
req = botocore.awsrequest.AWSRequest(method="POST", url=sys.argv[1], data=sys.argv[2],
    headers={"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": "TrentService.GenerateRandom"})
botocore.auth.SigV4Auth(s.get_credentials(), "kms", "eu-west-1").add_auth(req)
for k, v in req.headers.items():
    print(f"{k}: {v}")
"#;
    let body = r#"{"NumberOfBytes": 1024}"#;
    let headers = run(client(&python, &a.server, &a.admin_key).args([
        "-c",
        sign,
        &format!("{}/", a.server.base),
        body,
    ]));
    for http in ["--http2", "--http1.1"] {
        let mut curl = std::process::Command::new("curl");
        curl.args(["-sS", http, "--cacert"])
            .arg(a.server.data_dir.join("tls/cert.pem"))
            .args([
                "-X",
                "POST",
                "--data-binary",
                body,
                "-w",
                "\n%{http_version}",
            ]);
        for h in headers.lines() {
            curl.args(["-H", h]);
        }
        curl.arg(format!("{}/", a.server.base));
        let out = run(&mut curl);
        let (json_text, version) = out.rsplit_once('\n').unwrap();
        let v: Value = serde_json::from_str(json_text).unwrap_or_else(|_| panic!("{out}"));
        assert_eq!(common::unb64(&v["Plaintext"]).len(), 1024, "{http}");
        assert_eq!(version, if http == "--http2" { "2" } else { "1.1" });
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn refusals_before_an_action_are_named_as_aws_names_them_and_audited() {
    let dir = tempfile::tempdir().unwrap();
    let a = acme(dir.path()).await;
    let post = |headers: Vec<(&'static str, String)>, body: &'static str| {
        let mut req = a.server.client.post(format!("{}/", a.server.base));
        for (k, v) in headers {
            req = req.header(k, v);
        }
        async move {
            let resp = req.body(body).send().await.unwrap();
            let status = resp.status().as_u16();
            let ct = resp
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default();
            (status, ct, resp.text().await.unwrap())
        }
    };
    let kms = |auth: Option<&str>| {
        let mut h = vec![
            ("x-amz-target", "TrentService.ListKeys".to_string()),
            ("content-type", "application/x-amz-json-1.1".to_string()),
        ];
        if let Some(v) = auth {
            h.push(("authorization", v.to_string()));
        }
        h
    };
    for (auth, name) in [
        (None, "MissingAuthenticationTokenException"),
        (
            Some("AWS4-HMAC-SHA256 garbage"),
            "IncompleteSignatureException",
        ),
        (Some("Bearer kp_not_aws"), "IncompleteSignatureException"),
    ] {
        let (status, ct, body) = post(kms(auth), "{}").await;
        let v: Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("{body}"));
        assert_eq!((status, v["__type"].as_str()), (400, Some(name)), "{body}");
        assert_eq!(ct, "application/x-amz-json-1.1");
    }
    // STS answers in its own protocol: XML, its own codes.
    let (status, ct, body) = post(
        vec![(
            "content-type",
            "application/x-www-form-urlencoded".to_string(),
        )],
        "Action=GetCallerIdentity&Version=2011-06-15",
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(ct, "text/xml");
    assert!(
        body.contains("<Code>MissingAuthenticationToken</Code>"),
        "{body}"
    );
    let refused: Vec<Value> = a
        .server
        .audit_records()
        .into_iter()
        .filter(|r| r["outcome"] == "Unauthenticated")
        .collect();
    assert_eq!(refused.len(), 4, "{refused:?}");
    assert!(refused
        .iter()
        .all(|r| r["principal"] == "-" && r["front"].as_str().unwrap().starts_with("aws-")));
}

/// A destroyed key is, to AWS clients, a deleted one, which AWS forgets: every action naming
/// it answers `NotFoundException`, reads included, and `ListKeys` leaves it out (Terraform
/// reads a key after deleting it and takes exactly that as gone); its grants are gone with
/// it. keyplane keeps its record for the audit trail. Before, only `DescribeKey` and
/// `ListKeys` forgot it: its policy, rotation status, tags, grants and aliases still read.
#[cfg(all(feature = "test-hooks", debug_assertions))]
#[tokio::test(flavor = "multi_thread")]
async fn a_destroyed_key_is_gone_to_aws_clients() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_quiet(dir.path()).await;
    let gone = s.create_key(&s.admin, "envelope").await;
    let kept = s.create_key(&s.admin, "envelope").await;
    s.ok(
        &s.admin,
        "create-principal",
        json!({ "tenant_id": "default", "name": "retirer", "role": "member" }),
    )
    .await;
    s.ok(
        &s.admin,
        "create-grant",
        json!({ "key_id": gone, "grantee_principal": "retirer", "operations": ["Decrypt"],
                "retiring_principal": "retirer" }),
    )
    .await;
    s.destroy_keys(&[&gone]).await;
    let retirable = s
        .ok(
            &s.admin,
            "list-retirable-grants",
            json!({ "retiring_principal": "retirer" }),
        )
        .await;
    assert_eq!(retirable["grants"], json!([]), "{retirable}");
    let key = access_key(&s, &s.admin).await;
    let check = r#"
import sys, boto3, botocore.exceptions
kms = boto3.client("kms")
gone = sys.argv[1]
reads = [
    ("DescribeKey", lambda: kms.describe_key(KeyId=gone)),
    ("GetKeyPolicy", lambda: kms.get_key_policy(KeyId=gone, PolicyName="default")),
    ("ListKeyPolicies", lambda: kms.list_key_policies(KeyId=gone)),
    ("GetKeyRotationStatus", lambda: kms.get_key_rotation_status(KeyId=gone)),
    ("ListKeyRotations", lambda: kms.list_key_rotations(KeyId=gone)),
    ("ListResourceTags", lambda: kms.list_resource_tags(KeyId=gone)),
    ("ListGrants", lambda: kms.list_grants(KeyId=gone)),
    ("ListAliases", lambda: kms.list_aliases(KeyId=gone)),
]
for name, call in reads:
    try:
        call()
        print(name, "answered")
    except botocore.exceptions.ClientError as e:
        print(name, e.response["Error"]["Code"])
blob = kms.encrypt(KeyId=sys.argv[2], Plaintext=b"kept")["CiphertextBlob"]
try:
    kms.re_encrypt(CiphertextBlob=blob, DestinationKeyId=gone)
    print("ReEncrypt to it answered")
except botocore.exceptions.ClientError as e:
    print("ReEncrypt to it", e.response["Error"]["Code"])
try:
    kms.re_encrypt(CiphertextBlob=blob, DestinationKeyId=gone, DryRun=True)
    print("DryRun ReEncrypt to it answered")
except botocore.exceptions.ClientError as e:
    print("DryRun ReEncrypt to it", e.response["Error"]["Code"])
ids = [k["KeyId"] for page in kms.get_paginator("list_keys").paginate(Limit=1) for k in page["Keys"]]
print(gone in ids, sys.argv[2] in ids)
"#;
    let out = run(client(&venv_bin("python"), &s, &key).args(["-c", check, &gone, &kept]));
    let mut want: Vec<String> = [
        "DescribeKey",
        "GetKeyPolicy",
        "ListKeyPolicies",
        "GetKeyRotationStatus",
        "ListKeyRotations",
        "ListResourceTags",
        "ListGrants",
        "ListAliases",
    ]
    .iter()
    .map(|a| format!("{a} NotFoundException"))
    .collect();
    want.push("ReEncrypt to it NotFoundException".into());
    // A dry run's check of the destination, too (it answered DryRunOperationException).
    want.push("DryRun ReEncrypt to it NotFoundException".into());
    want.push("False True".into());
    assert_eq!(out.trim(), want.join("\n"));
}
