//! The native API's OpenAPI contract: the document a node serves at `GET /v1/openapi.json` is
//! the one in `docs/openapi.json` (so a change to an operation's types shows in review), and
//! schemathesis (from the venv `scripts/setup` makes) fuzzes a live node through it, with a
//! valid token and with none: no 5xx, no answer the document does not describe, no crash.
//! `scripts/schemathesis --max-examples N` runs it longer.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::aws::venv_bin;
use common::Server;
use serde_json::Value;

fn checked_in() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.json");
    let text = std::fs::read_to_string(&path).expect("docs/openapi.json");
    serde_json::from_str(&text).expect("docs/openapi.json is JSON")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_served_document_is_the_checked_in_one_and_describes_every_operation() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path()).await;
    // No credential: it is the public contract.
    let resp = s
        .client
        .get(format!("{}/v1/openapi.json", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let served: Value = resp.json().await.unwrap();
    assert_eq!(
        served,
        checked_in(),
        "docs/openapi.json is not what the node serves: run `keyplane openapi > docs/openapi.json`"
    );
    assert_eq!(served["openapi"], "3.1.0");
    // Every path is an operation the node has: a body that is not an object (a string) is
    // refused by its decoding (400), not as an unknown operation (404).
    let (_, admin) = s.tenant_with_admin("documented").await;
    let paths = served["paths"].as_object().unwrap();
    assert_eq!(
        paths.len(),
        keyplane::ops::ACTIONS.len() + 1,
        "every operation and batch"
    );
    for (path, item) in paths {
        let op = path.strip_prefix("/v1/").unwrap();
        let (status, v) = s.call_raw(Some(&admin), op, b"\"x\"".to_vec()).await;
        assert_eq!(status, 400, "{op}: {v}");
        assert!(item["post"]["requestBody"]["content"]["application/json"]["schema"].is_object());
    }
    let (status, v) = s
        .call_raw(Some(&admin), "no-such-operation", b"[]".to_vec())
        .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (404, Some("UnknownOperation"))
    );
}

/// Run schemathesis against `s` (with `token`, or none); panics with its report unless every
/// check passes.
fn schemathesis(s: &Server, token: Option<&str>, max_examples: &str) -> String {
    let mut cmd = Command::new(venv_bin("schemathesis"));
    cmd.current_dir(&s.data_dir)
        .env("SCHEMATHESIS_HOOKS", "")
        .env("NO_COLOR", "1")
        .args(["run", &format!("{}/v1/openapi.json", s.base)])
        .args(["--url", &s.base])
        .arg("--tls-verify")
        .arg(s.data_dir.join("tls/cert.pem"))
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
            "--phases",
            "examples,coverage,fuzzing",
            "--max-examples",
            max_examples,
            "--seed",
            "1",
            "--workers",
            "2",
            "--generation-database",
            "none",
            "--no-color",
            "--suppress-health-check",
            "all",
        ]);
    if let Some(t) = token {
        cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    let out = cmd.output().expect("run schemathesis");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "schemathesis found failures ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread")]
async fn schemathesis_finds_no_server_error_and_no_answer_outside_the_document() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path()).await;
    let (_, admin) = s.tenant_with_admin("fuzzed").await;
    let examples = std::env::var("KEYPLANE_SCHEMATHESIS_EXAMPLES").unwrap_or_else(|_| "5".into());
    for (who, token) in [("a tenant admin", Some(admin.as_str())), ("no one", None)] {
        let report = schemathesis(&s, token, &examples);
        let summary: Vec<&str> = report
            .lines()
            .filter(|l| {
                l.contains("passed") || l.contains("test cases") || l.contains("Operations")
            })
            .collect();
        println!("schemathesis as {who}: {}", summary.join(" | "));
    }
    s.assert_audit_verifies();
}
