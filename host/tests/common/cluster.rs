//! Several keyplane nodes on one PostgreSQL database: a throwaway cluster of PostgreSQL's own
//! ([`pgtest::Cluster`], so a test may stop or kill it), and nodes that each have their own
//! data directory and SoftHSM2 token, holding the same root key placed there by the key
//! ceremony (`keyplane hsm transport-key | export-root | import-root`), as an operator would
//! join nodes (see docs/deployment.md).

use std::path::{Path, PathBuf};
use std::process::Output;

use super::{keyplane, Server};

/// Nodes that take part in the ceremony make (and import) their root key exportable.
pub const EXPORTABLE: (&str, &str) = ("KEYPLANE_HSM__ROOT_KEY_EXPORTABLE", "true");

pub struct Cluster {
    /// PostgreSQL (declared before the temporary directory: dropped first).
    pub pg: pgtest::Cluster,
    pub url: String,
    pub nodes: Vec<Server>,
    pub dirs: Vec<PathBuf>,
    /// The environment every node runs with.
    pub env: Vec<(String, String)>,
    /// What one node runs with besides (by node index).
    node_env: Vec<Vec<(String, String)>>,
    /// The policy directory every node reads (`--policies-dir`).
    policies: PathBuf,
    _tmp: tempfile::TempDir,
}

fn ok(out: Output) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    text
}

impl Cluster {
    /// `n` nodes with `extra` environment (e.g. the scheduler off), all serving.
    pub async fn start(n: usize, extra: &[(&str, &str)]) -> Cluster {
        Self::start_each(n, extra, &[]).await
    }

    /// [`Cluster::start`], node `i` also with `per_node[i]` (if given).
    pub async fn start_each(
        n: usize,
        extra: &[(&str, &str)],
        per_node: &[&[(&str, &str)]],
    ) -> Cluster {
        Self::start_reading(n, extra, per_node, false).await
    }

    /// [`Cluster::start`] with every node reading its policies from a copy of the shipped
    /// set, which the test may change (at [`Cluster::policies`]).
    pub async fn start_with_own_policies(n: usize, extra: &[(&str, &str)]) -> Cluster {
        Self::start_reading(n, extra, &[], true).await
    }

    /// The policy directory every node reads.
    pub fn policies(&self) -> &Path {
        &self.policies
    }

    async fn start_reading(
        n: usize,
        extra: &[(&str, &str)],
        per_node: &[&[(&str, &str)]],
        own_policies: bool,
    ) -> Cluster {
        let pg = pgtest::Cluster::start().expect("a throwaway PostgreSQL cluster");
        let url = pg.create_database("keyplane").unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let policies = if own_policies {
            super::copy_of_shipped_policies(&tmp.path().join("policies"))
        } else {
            super::policies_dir()
        };
        let dirs: Vec<PathBuf> = (1..=n).map(|i| tmp.path().join(format!("n{i}"))).collect();
        // One archive directory for every node, as docs/deployment.md asks: whichever node
        // holds the archive lease writes the next segment, and every node's verify reads them.
        let archive = tmp.path().join("audit-archive");
        let mut env: Vec<(String, String)> = vec![
            ("RUST_LOG".into(), "warn".into()),
            ("KEYPLANE_DATABASE__URL".into(), url.clone()),
            (EXPORTABLE.0.into(), EXPORTABLE.1.into()),
            (
                "KEYPLANE_AUDIT__ARCHIVE_DIR".into(),
                archive.to_string_lossy().into_owned(),
            ),
        ];
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let mut cluster = Cluster {
            pg,
            url,
            nodes: Vec::new(),
            dirs,
            env,
            node_env: per_node
                .iter()
                .map(|e| {
                    e.iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect()
                })
                .collect(),
            policies,
            _tmp: tmp,
        };
        // The first node makes the root key and the default tenant, then stops: its token is
        // the ceremony's source, and two processes must not use one token.
        let mut first = cluster.start_node(0).await;
        first.stop();
        let work = cluster._tmp.path().join("ceremony");
        std::fs::create_dir_all(&work).unwrap();
        for i in 1..n {
            cluster.join(i, &work);
        }
        for i in 0..n {
            let node = cluster.start_node(i).await;
            cluster.nodes.push(node);
        }
        cluster
    }

    fn env_refs(&self) -> Vec<(&str, &str)> {
        self.env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    fn node_env_refs(&self, i: usize) -> Vec<(&str, &str)> {
        let mut env = self.env_refs();
        if let Some(own) = self.node_env.get(i) {
            env.extend(own.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        }
        env
    }

    /// Start node `i` (0-based) on its data dir.
    /// Start node `i` (0-based) on its data dir; its `admin` is the bootstrap admin's token
    /// (written by node 0, which bootstrapped the database).
    pub async fn start_node(&self, i: usize) -> Server {
        let mut node =
            Server::start_with(&self.dirs[i], &self.policies, &self.node_env_refs(i)).await;
        node.admin = std::fs::read_to_string(self.dirs[0].join("admin.token"))
            .expect("node 0's admin token")
            .trim()
            .to_string();
        node
    }

    /// `keyplane hsm <args> --data-dir <dir>`, offline, with the cluster's environment.
    fn hsm(&self, dir: &Path, args: &[&str]) -> String {
        ok(keyplane(dir)
            .arg("hsm")
            .args(args)
            .arg("--data-dir")
            .arg(dir)
            .envs(self.env_refs())
            .env_remove("KEYPLANE_HSM_PIN")
            .env_remove("KEYPLANE_HSM_SO_PIN")
            .output()
            .unwrap())
    }

    /// The ceremony for node `i`: its token and transport key, node 0's root key wrapped to
    /// it (node 0 stopped), imported into its token.
    fn join(&self, i: usize, work: &Path) {
        let dir = &self.dirs[i];
        std::fs::create_dir_all(dir).unwrap();
        let pem = work.join(format!("transport-{i}.pem"));
        let export = work.join(format!("root-{i}.json"));
        self.hsm(dir, &["transport-key", "--out", pem.to_str().unwrap()]);
        self.hsm(
            &self.dirs[0],
            &[
                "export-root",
                "--to",
                pem.to_str().unwrap(),
                "--out",
                export.to_str().unwrap(),
            ],
        );
        self.hsm(dir, &["import-root", "--from", export.to_str().unwrap()]);
    }

    /// The audit public keys every node published (each node signs checkpoints with its own).
    pub fn audit_public_keys(&self) -> Vec<PathBuf> {
        self.dirs
            .iter()
            .map(|d| d.join("audit-signing-key.pem"))
            .collect()
    }

    /// `keyplane audit verify` on node `i`'s data dir, trusting every node's audit key.
    pub fn audit_verify(&self, i: usize) -> Output {
        let mut cmd = keyplane(&self.dirs[i]);
        cmd.envs(self.env_refs())
            .args(["audit", "verify", "--data-dir"])
            .arg(&self.dirs[i]);
        for key in self.audit_public_keys() {
            cmd.arg("--public-key").arg(key);
        }
        cmd.output().unwrap()
    }
}
