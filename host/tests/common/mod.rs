//! Test harness: starts the real `keyplane` binary on an ephemeral port with a temporary data
//! directory (its own SoftHSM2 token, SQLite database and self-signed certificate) and talks
//! HTTPS to it, trusting only the generated certificate.
#![allow(dead_code)]

pub mod aws;
pub mod cluster;
pub mod filesystem;
pub mod raw;
pub mod secrets;
pub mod tpm;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Value};

pub const BIN: &str = env!("CARGO_BIN_EXE_keyplane");

pub fn policies_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies")
}

/// A copy of the shipped policy set (its files, not its tests) in `to`, to change in a test.
pub fn copy_of_shipped_policies(to: &Path) -> PathBuf {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(policies_dir()).unwrap() {
        let p = entry.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
        }
    }
    to.to_path_buf()
}

/// Whether this run's nodes keep their rows in PostgreSQL (`KEYPLANE_TEST_DATABASE=postgres`,
/// see `scripts/test`) rather than SQLite in their data dirs.
pub fn on_postgres() -> bool {
    std::env::var("KEYPLANE_TEST_DATABASE").as_deref() == Ok("postgres")
}

/// The database URL of a node on `data_dir` when the tests run against PostgreSQL
/// (`KEYPLANE_TEST_DATABASE=postgres`, with `KEYPLANE_TEST_POSTGRES` the URL of the test run's
/// throwaway cluster, see `scripts/test`): each data dir gets a database of its own there,
/// named after the directory and created on first use, so a restarted node finds its rows.
/// `None`: SQLite in the data dir.
pub fn database_url(data_dir: &Path) -> Option<String> {
    if !on_postgres() {
        return None;
    }
    let admin = std::env::var("KEYPLANE_TEST_POSTGRES")
        .expect("KEYPLANE_TEST_DATABASE=postgres needs KEYPLANE_TEST_POSTGRES (a cluster URL)");
    let digest = ring::digest::digest(&ring::digest::SHA256, data_dir.to_string_lossy().as_bytes());
    let name = format!("kp_{}", &hex::encode(digest)[..24]);
    let exists = Command::new("psql")
        .args([&admin, "-tAc"])
        .arg(format!(
            "SELECT 1 FROM pg_database WHERE datname = '{name}'"
        ))
        .output()
        .expect("psql");
    assert!(exists.status.success(), "psql: {exists:?}");
    if String::from_utf8_lossy(&exists.stdout).trim() != "1" {
        let created = Command::new("psql")
            .args([&admin, "-qc"])
            .arg(format!("CREATE DATABASE {name}"))
            .output()
            .expect("psql");
        assert!(created.status.success(), "create database: {created:?}");
    }
    Some(postgres_url_of(&admin, &name))
}

/// `admin` (a PostgreSQL URL) naming database `name` instead.
pub fn postgres_url_of(admin: &str, name: &str) -> String {
    let (base, query) = admin.split_once('?').unwrap_or((admin, ""));
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let path = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    let mut url = format!("{}/{name}", &base[..path]);
    if !query.is_empty() {
        url = format!("{url}?{query}");
    }
    url
}

/// The `keyplane` binary for a command on `data_dir` (its database too, see [`database_url`]).
pub fn keyplane(data_dir: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    if let Some(url) = database_url(data_dir) {
        cmd.env("KEYPLANE_DATABASE__URL", url);
    }
    cmd
}

pub fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

pub fn unb64(v: &Value) -> Vec<u8> {
    STANDARD
        .decode(v.as_str().expect("base64 string"))
        .expect("valid base64")
}

/// A running keyplane.
pub struct Server {
    child: Option<Child>,
    pub data_dir: PathBuf,
    pub base: String,
    pub client: reqwest::Client,
    pub admin: String,
    pub log: std::sync::Mutex<mpsc::Receiver<String>>,
    /// What the process printed before it listened.
    pub startup: Vec<String>,
    /// The environment it was started with (offline tools on its data dir get it too).
    pub env: Vec<(String, String)>,
    /// Where its output and data directory are kept for the secrets scan ([`secrets`]).
    artifacts: Option<PathBuf>,
}

impl Server {
    /// Start on `data_dir` (created empty on first use).
    pub async fn start(data_dir: &Path) -> Server {
        Self::start_with_env(data_dir, &[("RUST_LOG", "warn")]).await
    }

    /// Start with extra environment variables.
    pub async fn start_with_env(data_dir: &Path, env: &[(&str, &str)]) -> Server {
        Self::start_with(data_dir, &policies_dir(), env).await
    }

    /// Start with the policy set in `policies`.
    pub async fn start_with_policies(data_dir: &Path, policies: &Path) -> Server {
        Self::start_with(data_dir, policies, &[("RUST_LOG", "warn")]).await
    }

    /// Start with a policy directory and extra environment variables.
    pub async fn start_with(data_dir: &Path, policies: &Path, env: &[(&str, &str)]) -> Server {
        let mut cmd = keyplane(data_dir);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .arg("--policies-dir")
            .arg(policies)
            .env_remove("KEYPLANE_HSM_PIN")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start keyplane");
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let tx2 = tx.clone();
        let artifacts = secrets::node_dir();
        let log = |name: &str| {
            artifacts.as_ref().and_then(|d| {
                std::fs::File::create(d.join(name))
                    .ok()
                    .map(std::io::LineWriter::new)
            })
        };
        let (mut out_log, mut err_log) = (log("stdout.log"), log("stderr.log"));
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("\"level\":\"ERROR\"") || line.contains("\"level\":\"WARN\"") {
                    eprintln!("[keyplane] {line}");
                }
                if let Some(f) = out_log.as_mut() {
                    let _ = writeln!(f, "{line}");
                }
                let _ = tx.send(line);
            }
        });
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[keyplane] {line}");
                if let Some(f) = err_log.as_mut() {
                    let _ = writeln!(f, "{line}");
                }
                let _ = tx2.send(format!("stderr: {line}"));
            }
        });
        let mut addr = None;
        let mut startup = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while addr.is_none() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(a) = line.strip_prefix("keyplane: listening on https://") {
                        addr = Some(a.to_string());
                    }
                    startup.push(line);
                }
                Err(_) => panic!("keyplane did not start within 60 s: {startup:#?}"),
            }
        }
        let port = addr.unwrap().rsplit(':').next().unwrap().to_string();
        let cert = std::fs::read(data_dir.join("tls/cert.pem")).expect("generated certificate");
        let client = reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&cert).unwrap())
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        // Only the node that bootstrapped the database has one (others joined it).
        let admin = std::fs::read_to_string(data_dir.join("admin.token")).unwrap_or_default();
        Server {
            child: Some(child),
            data_dir: data_dir.to_path_buf(),
            base: format!("https://localhost:{port}"),
            client,
            admin: admin.trim().to_string(),
            log: std::sync::Mutex::new(rx),
            startup,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            artifacts,
        }
    }

    /// `POST /v1/<op>` with a JSON body; returns status and JSON answer.
    pub async fn call(&self, token: Option<&str>, op: &str, body: Value) -> (u16, Value) {
        self.call_raw(token, op, body.to_string().into_bytes())
            .await
    }

    /// `POST /v1/<op>` with raw bytes as the body.
    pub async fn call_raw(&self, token: Option<&str>, op: &str, body: Vec<u8>) -> (u16, Value) {
        let mut req = self
            .client
            .post(format!("{}/v1/{op}", self.base))
            .body(body.clone());
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let v = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("non-JSON answer {status}: {text}"));
        secrets::record_exchange(&body, &v);
        (status, v)
    }

    /// `POST /v1/<op>` with extra request headers.
    pub async fn call_with_headers(
        &self,
        token: Option<&str>,
        op: &str,
        body: Value,
        headers: &[(&str, &str)],
    ) -> (u16, Value) {
        let mut req = self
            .client
            .post(format!("{}/v1/{op}", self.base))
            .body(body.to_string());
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let v = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("non-JSON answer {status}: {text}"));
        secrets::record_exchange(body.to_string().as_bytes(), &v);
        (status, v)
    }

    /// A further admin of `tenant` (created by the operator); returns its token. Guard
    /// policies accept it as a second approver (`approve-key-deletion`).
    pub async fn second_admin(&self, tenant: &str) -> String {
        let name = format!("approver-{}", uuid_like());
        let p = self
            .ok(
                &self.admin,
                "create-principal",
                json!({ "tenant_id": tenant, "name": name, "role": "admin" }),
            )
            .await;
        p["token"].as_str().unwrap().to_string()
    }

    /// Upload the `kv` storage plugin (as `kv`) for the admin holding `token`, and make it its
    /// tenant's storage backend.
    pub async fn kv_backend(&self, token: &str) {
        let component = b64(&wasm("storage-kv"));
        self.ok(
            token,
            "upload-plugin",
            json!({ "name": "kv", "world": "storage-backend", "component": component }),
        )
        .await;
        self.ok(token, "set-storage-backend", json!({ "plugin": "kv" }))
            .await;
    }

    /// The principal id of the holder of `token`.
    pub async fn principal_id(&self, token: &str) -> String {
        let v = self.ok(token, "get-caller-identity", json!({})).await;
        v["principal_id"].as_str().unwrap().to_string()
    }

    /// `schedule-key-deletion` by the holder of `token`, approved first by the holder of
    /// `approver` with `approve-key-deletion` (the shipped deletion guard requires MFA or an
    /// approval). A refused approval is returned as the answer.
    pub async fn schedule_deletion(
        &self,
        token: &str,
        approver: &str,
        body: Value,
    ) -> (u16, Value) {
        let (status, who) = self
            .call(Some(token), "get-caller-identity", json!({}))
            .await;
        if status != 200 {
            return (status, who);
        }
        let approval = self
            .call(
                Some(approver),
                "approve-key-deletion",
                json!({ "key_id": body["key_id"], "requester": who["principal_id"] }),
            )
            .await;
        if approval.0 != 200 {
            return approval;
        }
        self.call(Some(token), "schedule-key-deletion", body).await
    }

    /// Call and require 200.
    pub async fn ok(&self, token: &str, op: &str, body: Value) -> Value {
        let (s, v) = self.call(Some(token), op, body).await;
        assert_eq!(s, 200, "{op} failed: {v}");
        v
    }

    /// Create a key of `spec` with `usage` (its default protection); returns its id.
    pub async fn create_key_of(&self, token: &str, spec: &str, usage: &str) -> String {
        let v = self
            .ok(
                token,
                "create-key",
                json!({ "key_spec": spec, "key_usage": usage }),
            )
            .await;
        v["key_id"].as_str().unwrap().to_string()
    }

    /// A key made by `create-key` with request `body`; its id.
    pub async fn create_key_with(&self, token: &str, body: Value) -> String {
        let v = self.ok(token, "create-key", body).await;
        v["key_id"].as_str().unwrap().to_string()
    }

    pub async fn create_key(&self, token: &str, protection: &str) -> String {
        let v = self
            .ok(token, "create-key", json!({ "protection": protection }))
            .await;
        v["key_id"].as_str().unwrap().to_string()
    }

    pub async fn encrypt(&self, token: &str, key: &str, pt: &[u8], ctx: Value) -> Vec<u8> {
        let v = self
            .ok(
                token,
                "encrypt",
                json!({ "key_id": key, "plaintext": b64(pt), "encryption_context": ctx }),
            )
            .await;
        unb64(&v["ciphertext_blob"])
    }

    pub async fn decrypt(&self, token: &str, ct: &[u8], ctx: Value) -> (u16, Value) {
        self.call(
            Some(token),
            "decrypt",
            json!({ "ciphertext_blob": b64(ct), "encryption_context": ctx }),
        )
        .await
    }

    /// A new tenant `tenant` of AWS account `account` with the `principals` (name, role);
    /// returns their tokens in order.
    pub async fn tenant_with(
        &self,
        tenant: &str,
        account: &str,
        principals: &[(&str, &str)],
    ) -> Vec<String> {
        self.ok(
            &self.admin,
            "create-tenant",
            json!({ "tenant_id": tenant, "account_id": account }),
        )
        .await;
        let mut tokens = Vec::new();
        for (name, role) in principals {
            let p = self
                .ok(
                    &self.admin,
                    "create-principal",
                    json!({ "tenant_id": tenant, "name": name, "role": role }),
                )
                .await;
            tokens.push(p["token"].as_str().unwrap().to_string());
        }
        tokens
    }

    /// Audit records as `keyplane audit export` writes them.
    pub fn audit_records(&self) -> Vec<Value> {
        let out = self.tool(&["audit", "export"]);
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// A new tenant with an admin; returns the admin's token.
    pub async fn tenant_with_admin(&self, tenant: &str) -> (String, String) {
        self.ok(&self.admin, "create-tenant", json!({ "tenant_id": tenant }))
            .await;
        let p = self
            .ok(
                &self.admin,
                "create-principal",
                json!({ "tenant_id": tenant, "name": "admin", "role": "admin" }),
            )
            .await;
        (
            p["principal_id"].as_str().unwrap().into(),
            p["token"].as_str().unwrap().into(),
        )
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// `POST /v1/<op>` on a task of its own, so the caller can kill the server meanwhile:
    /// `None` if no answer came (the connection died).
    pub fn spawn_call(
        &self,
        token: &str,
        op: &str,
        body: Value,
    ) -> tokio::task::JoinHandle<Option<(u16, Value)>> {
        let req = self
            .client
            .post(format!("{}/v1/{op}", self.base))
            .bearer_auth(token)
            .body(body.to_string());
        tokio::spawn(async move {
            let resp = req.send().await.ok()?;
            let status = resp.status().as_u16();
            Some((status, resp.json().await.ok()?))
        })
    }

    /// SIGKILL (a crash) and wait for the process to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            loop {
                match child.try_wait() {
                    Ok(Some(status)) => {
                        assert!(status.success(), "keyplane exited with {status}");
                        break;
                    }
                    _ if std::time::Instant::now() > deadline => {
                        let _ = child.kill();
                        panic!("keyplane did not stop within 20 s");
                    }
                    _ => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        }
    }

    /// Run `keyplane <args> --data-dir <this data dir>` (an offline tool).
    pub fn tool(&self, args: &[&str]) -> std::process::Output {
        keyplane(&self.data_dir)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .args(args)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    }

    /// Run `keyplane audit verify` on this data dir.
    pub fn audit_verify(&self) -> std::process::Output {
        keyplane(&self.data_dir)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .args(["audit", "verify", "--data-dir"])
            .arg(&self.data_dir)
            .output()
            .unwrap()
    }

    /// `keyplane audit verify` on this data dir must pass.
    pub fn assert_audit_verifies(&self) {
        let out = self.audit_verify();
        assert!(
            out.status.success(),
            "audit verify: {} {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Read-only SQL against the node's database (SQLite only: see [`Server::sql_any`]).
    pub async fn sql(&self) -> sqlx::SqlitePool {
        let url = format!(
            "sqlite://{}?mode=ro",
            self.data_dir.join("keyplane.db").display()
        );
        sqlx::SqlitePool::connect(&url).await.unwrap()
    }

    /// SQL against the node's database on either backend (queries in the SQL both accept,
    /// `$1` placeholders); read-only on SQLite.
    pub async fn sql_any(&self) -> sqlx::AnyPool {
        self.any_pool("ro").await
    }

    /// [`Server::sql_any`] that may write (to set what a test cannot reach by requests, as
    /// a version's usage counts).
    pub async fn sql_any_writable(&self) -> sqlx::AnyPool {
        self.any_pool("rw").await
    }

    async fn any_pool(&self, sqlite_mode: &str) -> sqlx::AnyPool {
        sqlx::any::install_default_drivers();
        let url = database_url(&self.data_dir).unwrap_or_else(|| {
            format!(
                "sqlite://{}?mode={sqlite_mode}",
                self.data_dir.join("keyplane.db").display()
            )
        });
        sqlx::AnyPool::connect(&url).await.unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(dir) = &self.artifacts {
            secrets::keep(&self.data_dir, dir);
        }
    }
}

impl Server {
    /// The unwrapped material of an envelope key's primary version, through the debug-only
    /// hook (operator token).
    pub async fn envelope_material(&self, key_id: &str) -> Vec<u8> {
        let r = self
            .client
            .post(format!("{}/debug/envelope-material", self.base))
            .bearer_auth(&self.admin)
            .json(&json!({ "key_id": key_id }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let material = unb64(&r.json::<Value>().await.unwrap()["material"]);
        // The key length of the key's spec: 32 bytes, 16 for AES_128_GCM.
        assert!(matches!(material.len(), 16 | 32), "{}", material.len());
        material
    }

    /// What the debug-only `/debug/hsm-objects` hook answers for `which` (`{"key_id",
    /// "version"}` or `{"object_id"}`): the objects this node's HSM session sees.
    pub async fn hsm_objects(&self, which: Value) -> Value {
        let r = self
            .client
            .post(format!("{}/debug/hsm-objects", self.base))
            .bearer_auth(&self.admin)
            .json(&which)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        r.json().await.unwrap()
    }
}

/// A short unique suffix for names.
pub fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{t:x}{}", N.fetch_add(1, Ordering::Relaxed))
}

/// Every file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                files.push(p);
            }
        }
    }
    files
}

/// Panic if `needle` (named `what`) occurs in any file under `dir`.
pub fn assert_absent_under(dir: &Path, what: &str, needle: &[u8]) {
    for p in files_under(dir) {
        let bytes = std::fs::read(&p).unwrap();
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle),
            "{what} found in {}",
            p.display()
        );
    }
}

/// Assert an error answer: its status, its code and (if not empty) a part of its message.
pub fn assert_error(answer: &(u16, Value), status: u16, code: &str, message_part: &str) {
    let (st, v) = answer;
    assert_eq!(
        (*st, v["error"]["code"].as_str()),
        (status, Some(code)),
        "{v}"
    );
    let message = v["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(message_part), "{v}");
}

/// The directory of the node's SoftHSM2 token (moved away and back, SoftHSM2 sees the token
/// removed and returned).
pub fn token_dir(data: &Path) -> PathBuf {
    std::fs::read_dir(data.join("softhsm/tokens"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.is_dir())
        .expect("the token's directory")
}

/// Labels of the node's token objects through `pkcs11-tool --list-objects`: every class, or
/// those of `class` (`privkey`, `pubkey`, `secrkey`, `data`).
pub fn token_labels(data: &Path, class: Option<&str>) -> Vec<String> {
    let mut args = vec!["--list-objects"];
    if let Some(class) = class {
        args.extend(["--type", class]);
    }
    pkcs11_tool(data, None, &args)
        .lines()
        .filter_map(|l| {
            l.trim()
                .strip_prefix("label:")
                .map(|l| l.trim().to_string())
        })
        .collect()
}

/// Peak resident memory of a process, in KiB (`VmHWM`).
pub fn peak_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// How many of the node's token objects belong to key `key_id` (labelled `kp:<key>:<version>`).
pub fn token_objects_of(data: &Path, key_id: &str) -> usize {
    let prefix = format!("kp:{key_id}:");
    token_labels(data, None)
        .iter()
        .filter(|l| l.starts_with(&prefix))
        .count()
}

/// Parse `pkcs11-tool --list-objects` output into (label, access line) pairs.
pub fn token_objects(data: &Path) -> Vec<(String, String)> {
    listed_secret_keys(data)
        .into_iter()
        .filter_map(|o| Some((o.label?, o.access?)))
        .collect()
}

/// (label, kind) of every secret key object in the token, the kind as `pkcs11-tool` reads it
/// from the object's attributes (e.g. `AES length 16`: `CKK_AES`, `CKA_VALUE_LEN` 16).
pub fn token_secret_key_kinds(data: &Path) -> Vec<(String, String)> {
    listed_secret_keys(data)
        .into_iter()
        .filter_map(|o| Some((o.label?, o.kind)))
        .collect()
}

/// One secret key object as `pkcs11-tool --list-objects` shows it.
struct ListedObject {
    /// What follows `Secret Key Object;`.
    kind: String,
    label: Option<String>,
    access: Option<String>,
}

/// The token's secret key objects, in the order `pkcs11-tool` lists them.
fn listed_secret_keys(data: &Path) -> Vec<ListedObject> {
    let mut objects: Vec<ListedObject> = Vec::new();
    for line in list_secret_keys(data).lines() {
        let line = line.trim();
        if let Some(kind) = line.strip_prefix("Secret Key Object;") {
            objects.push(ListedObject {
                kind: kind.trim().to_string(),
                label: None,
                access: None,
            });
        } else if let Some(o) = objects.last_mut() {
            if let Some(l) = line.strip_prefix("label:") {
                o.label = Some(l.trim().to_string());
            } else if let Some(a) = line.strip_prefix("Access:") {
                o.access = Some(a.trim().to_string());
            }
        }
    }
    objects
}

/// What `pkcs11-tool --list-objects --type secrkey` prints for the node's token.
fn list_secret_keys(data: &Path) -> String {
    pkcs11_tool(data, None, &["--list-objects", "--type", "secrkey"])
}

/// The standard output of `cmd`, which must succeed (its standard error in the panic).
pub fn succeeds(cmd: &mut std::process::Command) -> Vec<u8> {
    let out = cmd.output().expect("command");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// `pkcs11-tool` with `args` on the token of the node whose data directory is `data` (its
/// embedded SoftHSM2 token, or the TPM `tpm`), logged in as its user; its standard output.
pub fn pkcs11_tool(data: &Path, tpm: Option<&tpm::SoftTpm>, args: &[&str]) -> String {
    let pin = std::fs::read_to_string(data.join("hsm.pin")).unwrap();
    let mut cmd = std::process::Command::new("pkcs11-tool");
    match tpm {
        Some(tpm) => {
            cmd.envs(tpm.env_with(&[])).args(["--module", tpm::MODULE]);
        }
        None => {
            cmd.env("SOFTHSM2_CONF", data.join("softhsm/softhsm2.conf"))
                .args(["--module", "/usr/lib/softhsm/libsofthsm2.so"]);
        }
    }
    let out = cmd
        .args(["--token-label", "keyplane", "--login", "--pin", pin.trim()])
        .args(args)
        .output()
        .expect("pkcs11-tool (opensc)");
    assert!(
        out.status.success(),
        "pkcs11-tool {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A plugin component built from `plugins/` (by `scripts/test` / `scripts/build-plugins`).
pub fn wasm(name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../plugins/target/wasm32-wasip2/release")
        .join(format!("{}.wasm", name.replace('-', "_")));
    std::fs::read(&p).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; build the plugins first: scripts/build-plugins",
            p.display()
        )
    })
}

impl Server {
    /// Start with the background scheduler off: passes run only through `run-scheduler`.
    pub async fn start_quiet(dir: &Path) -> Server {
        Self::start_with_env(
            dir,
            &[
                ("RUST_LOG", "warn"),
                ("KEYPLANE_LIFECYCLE__SCHEDULER_INTERVAL_SECONDS", "0"),
            ],
        )
        .await
    }

    /// Move the service clock forward (`test-hooks` builds); returns the service's "now".
    pub async fn advance_clock(&self, seconds: i64) -> i64 {
        let r = self
            .client
            .post(format!("{}/debug/clock", self.base))
            .bearer_auth(&self.admin)
            .json(&json!({ "advance_seconds": seconds }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        r.json::<Value>().await.unwrap()["now"].as_i64().unwrap()
    }

    /// Schedule the deletion of `keys` (the shortest window, approved by a second admin), pass
    /// the window (`test-hooks` builds) and run the scheduler, which destroys them.
    pub async fn destroy_keys(&self, keys: &[&str]) {
        self.destroy_keys_of(&self.admin, "default", keys).await
    }

    /// [`Server::destroy_keys`] for keys of `tenant`, whose admin holds `admin`.
    pub async fn destroy_keys_of(&self, admin: &str, tenant: &str, keys: &[&str]) {
        let approver = self.second_admin(tenant).await;
        for key in keys {
            let (status, v) = self
                .schedule_deletion(
                    admin,
                    &approver,
                    json!({ "key_id": key, "pending_window_days": 7 }),
                )
                .await;
            assert_eq!(status, 200, "{v}");
        }
        self.advance_clock(8 * 86400).await;
        self.ok(&self.admin, "run-scheduler", json!({})).await;
    }

    /// One `/debug/pause` call (`keyplane::pause`, `test-hooks` builds) for `point` of `key`:
    /// `action` is `arm`, `wait` or `release`; returns the answer.
    pub async fn pause(&self, point: &str, key: &str, action: &str) -> Value {
        let r = self
            .client
            .post(format!("{}/debug/pause", self.base))
            .bearer_auth(&self.admin)
            .json(&json!({ "point": point, "key_id": key, "action": action }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        r.json().await.unwrap()
    }
}

#[cfg(all(feature = "test-hooks", debug_assertions))]
impl Server {
    /// Run `request` until it pauses at `point` for `key`, then `meanwhile`, then let it go
    /// on; the request's answer. (`request` is a future not yet polled: it starts here.)
    pub async fn interleaved<T>(
        &self,
        point: &str,
        key: &str,
        request: impl std::future::Future<Output = T>,
        meanwhile: impl std::future::Future<Output = ()>,
    ) -> T {
        self.pause(point, key, "arm").await;
        let rest = async {
            let reached = self.pause(point, key, "wait").await;
            assert_eq!(
                reached["reached"], true,
                "{point} was not reached for {key}"
            );
            meanwhile.await;
            self.pause(point, key, "release").await;
        };
        let (answer, ()) = tokio::join!(request, rest);
        answer
    }
}

/// Another process holding the write lock of the SQLite database `db` (`BEGIN IMMEDIATE`)
/// until this is dropped.
pub struct DatabaseLock(std::process::Child);

impl DatabaseLock {
    pub fn take(db: &Path) -> DatabaseLock {
        use std::io::BufRead;
        let mut locker = std::process::Command::new("python3")
            .args([
                "-c",
                "import sqlite3, sys\n\
                 c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)\n\
                 c.execute('BEGIN IMMEDIATE')\n\
                 print('locked', flush=True)\n\
                 sys.stdin.read()\n\
                 c.execute('ROLLBACK')\n",
            ])
            .arg(db)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(locker.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "locked");
        DatabaseLock(locker)
    }
}

impl Drop for DatabaseLock {
    fn drop(&mut self) {
        drop(self.0.stdin.take());
        let _ = self.0.wait();
    }
}

/// Run SQL with the `sqlite3` CLI on a database file (to tamper with it as an attacker would).
pub fn sqlite(db: &Path, sql: &str) {
    let out = Command::new("sqlite3")
        .arg(db)
        .arg(sql)
        .output()
        .expect("sqlite3 CLI");
    assert!(
        out.status.success(),
        "sqlite3: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Assert that `name` is the blob name of one creation attempt of a version:
/// `<version_prefix>/<32 hex digits>` (e.g. `tenants/t/keys/<key>/1/<uuid>`).
pub fn assert_attempt_name(name: &str, version_prefix: &str) {
    let attempt = name
        .strip_prefix(version_prefix)
        .and_then(|rest| rest.strip_prefix('/'))
        .unwrap_or_else(|| panic!("{name} is not a blob of {version_prefix}"));
    assert!(
        attempt.len() == 32 && attempt.bytes().all(|b| b.is_ascii_hexdigit()),
        "{name}"
    );
}

/// Initialise the embedded SoftHSM2 token of `data` (configured by `conf`) by hand, as an
/// operator or an older release would: user PIN 2222 (written to `hsm.pin`), SO PIN 1111;
/// then make its root key with `pkcs11-tool`, logged in, with `root_key_args` (key type,
/// label, id, usages).
pub fn hand_made_token(data: &Path, conf: &Path, root_key_args: &[&str]) {
    let run = |cmd: &str, args: &[&str]| {
        let out = std::process::Command::new(cmd)
            .env("SOFTHSM2_CONF", conf)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{cmd}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(
        "softhsm2-util",
        &[
            "--init-token",
            "--free",
            "--label",
            "keyplane",
            "--so-pin",
            "1111",
            "--pin",
            "2222",
        ],
    );
    std::fs::write(data.join("hsm.pin"), "2222").unwrap();
    let login = [
        "--module",
        "/usr/lib/softhsm/libsofthsm2.so",
        "--token-label",
        "keyplane",
        "--login",
        "--pin",
        "2222",
    ];
    let args: Vec<&str> = login.iter().chain(root_key_args).copied().collect();
    run("pkcs11-tool", &args);
}
