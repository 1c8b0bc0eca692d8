//! The AWS clients the AWS front is tested with, from the venv `scripts/setup` makes
//! (`.venv`: boto3, the AWS CLI, the AWS Encryption SDK, sops), pointed at a test server.

use std::path::PathBuf;
use std::process::Command;

use serde_json::json;

use super::Server;

/// The region every client here is configured with.
pub const REGION: &str = "eu-west-1";

/// A program of the clients' venv.
pub fn venv_bin(name: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../.venv/bin")
        .join(name);
    assert!(
        path.exists(),
        "{} is missing: run scripts/setup (it installs the AWS clients into .venv)",
        path.display()
    );
    path
}

/// A script of `host/tests/aws/`.
pub fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/aws")
        .join(name)
}

/// An access key of the holder of `token`: (id, secret).
pub async fn access_key(server: &Server, token: &str) -> (String, String) {
    let v = server.ok(token, "create-access-key", json!({})).await;
    (
        v["access_key_id"].as_str().unwrap().into(),
        v["secret_access_key"].as_str().unwrap().into(),
    )
}

/// A command for an AWS client signing with `key` against `server`, and nothing else: no
/// configuration or credentials file, no instance metadata, the server's certificate the only
/// one trusted.
pub fn client(program: &std::path::Path, server: &Server, key: &(String, String)) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", server.data_dir.join("client-home"))
        .env("AWS_ACCESS_KEY_ID", &key.0)
        .env("AWS_SECRET_ACCESS_KEY", &key.1)
        .env("AWS_DEFAULT_REGION", REGION)
        .env("AWS_REGION", REGION)
        .env("AWS_CA_BUNDLE", server.data_dir.join("tls/cert.pem"))
        .env("AWS_ENDPOINT_URL", &server.base)
        .env("AWS_ENDPOINT_URL_KMS", &server.base)
        .env("AWS_ENDPOINT_URL_STS", &server.base)
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("KEYPLANE_ENDPOINT", &server.base);
    cmd
}

/// Run `cmd`; panic with what it printed unless it succeeds; its standard output.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("start the client");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    stdout
}
