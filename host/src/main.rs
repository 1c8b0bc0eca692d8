//! The `keyplane` command line: `serve`, the auditor's `audit verify | public-key | export |
//! search` (and the operator's `audit archive`), `policy …` (validate, fmt, test, explain,
//! who-can; see `keyplane::policy_cli`), the operator's `gc` (see `keyplane::ops::gc`) and
//! `hsm transport-key | export-root | import-root`, the key ceremony (see `keyplane::ceremony`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use keyplane::config::{Config, FlagOverrides, MIN_GC_GRACE_SECONDS};
use keyplane::hsm::{token, Hsm};
use keyplane::{audit, bootstrap, ops, server, store, telemetry};

/// mimalloc instead of glibc malloc: a request allocates and frees many small buffers (HTTP,
/// JSON, TLS records, audit records) across two worker threads, and under load glibc's
/// `malloc`/`free` took about 12% of the server's samples (see docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "keyplane", version, about = "keyplane key management service")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct Common {
    /// TOML configuration file.
    #[arg(long, env = "KEYPLANE_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Data directory (database, SoftHSM2 token, TLS material, admin token).
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service.
    Serve {
        #[command(flatten)]
        common: Common,
        /// Listen address, e.g. 127.0.0.1:8443 (port 0 picks a free port).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Serve plain HTTP. Local debugging only.
        #[arg(long)]
        insecure_http: bool,
        /// Directory with schema.cedarschema and *.cedar policies.
        #[arg(long)]
        policies_dir: Option<PathBuf>,
    },
    /// Audit log tools.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Policy tools: validate, format, test, explain, who-can.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Find HSM objects and storage blobs that no key version, import token or tenant
    /// references and that are older than the grace period (material left by a crash between
    /// its creation and the commit); remove them with --apply (each removal audited). Offline: the node
    /// serving the data directory must be stopped (it collects on its own, every
    /// lifecycle.gc_interval_seconds).
    Gc {
        #[command(flatten)]
        common: Common,
        /// Remove what is found (default: a dry run that only lists it).
        #[arg(long, conflicts_with = "dry_run")]
        apply: bool,
        /// List only (the default).
        #[arg(long)]
        dry_run: bool,
        /// Leave alone what is younger than this (default: lifecycle.gc_grace_seconds). Below
        /// 60 s only with --all-nodes-stopped: material of a request still running on another
        /// node sharing the database and HSM would look like garbage.
        #[arg(long)]
        grace_seconds: Option<u64>,
        /// No node uses this database or HSM now (allows any grace period).
        #[arg(long)]
        all_nodes_stopped: bool,
    },
    /// The key ceremony that gives a joining node's token the root key of the nodes it joins
    /// (docs/deployment.md). Offline: the node of the data directory must be stopped.
    Hsm {
        #[command(subcommand)]
        command: HsmCommand,
    },
    /// Print the OpenAPI 3.1 document of the native API (as GET /v1/openapi.json serves it;
    /// docs/openapi.json is this output).
    Openapi,
}

#[derive(Subcommand)]
enum HsmCommand {
    /// On the joining node: make its token (if the data directory has none; no root key) and
    /// an RSA transport key pair in it; print the public key (PEM) and its fingerprint.
    TransportKey {
        #[command(flatten)]
        common: Common,
        /// RSA modulus size: 3072 or 4096.
        #[arg(long, default_value_t = 3072)]
        bits: u64,
        /// Also write the public key (PEM) to this file.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// On an existing node: wrap its root key to a transport public key inside the HSM (needs
    /// the token's SO PIN: KEYPLANE_HSM_SO_PIN or <data-dir>/hsm-so.pin) and write the export.
    ExportRoot {
        #[command(flatten)]
        common: Common,
        /// The joining node's transport public key (PEM).
        #[arg(long)]
        to: PathBuf,
        /// Where to write the export (a new file; it holds no secret).
        #[arg(long)]
        out: PathBuf,
    },
    /// On the joining node: unwrap the exported root key into its token, check it, and
    /// destroy the transport key.
    ImportRoot {
        #[command(flatten)]
        common: Common,
        /// The export written by export-root.
        #[arg(long)]
        from: PathBuf,
    },
    /// Test hook: try to get the root key out with the user PIN alone; print the token's
    /// answers as JSON.
    #[cfg(all(feature = "test-hooks", debug_assertions))]
    #[command(hide = true)]
    ProbeExtraction {
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Validate the policy set as the server does at start; errors name file, line and id.
    Validate {
        /// Policy directory (default: ./policies, else the embedded copy).
        #[arg(long)]
        policies: Option<PathBuf>,
    },
    /// Format the *.cedar files canonically (cedar-policy's formatter).
    Fmt {
        /// Change nothing; exit non-zero listing the files that are not formatted.
        #[arg(long)]
        check: bool,
        /// Policy directory.
        #[arg(long, default_value = "policies")]
        policies: PathBuf,
    },
    /// Run policy test files (TOML); non-zero exit if any case fails.
    Test {
        /// Test files or directories of *.toml files.
        #[arg(default_value = "policies/tests")]
        paths: Vec<PathBuf>,
        /// Policy directory (default: ./policies, else the embedded copy).
        #[arg(long)]
        policies: Option<PathBuf>,
    },
    /// Explain the decision on a request: verdict, determining policies, evaluation errors.
    Explain {
        #[command(flatten)]
        common: Common,
        /// Principal: an id or uid (User::"p-…"); loaded from the database with --data-dir.
        #[arg(long)]
        principal: Option<String>,
        /// Action name, e.g. Encrypt.
        #[arg(long)]
        action: Option<String>,
        /// Resource uid, e.g. Key::"k-…" or Tenant::"acme".
        #[arg(long)]
        resource: Option<String>,
        /// Context as JSON, e.g. '{"encryption_context":{"purpose":"backup"},"mfa":true}'.
        #[arg(long)]
        context: Option<String>,
        /// A request file (JSON, or TOML by extension) in the test-case notation.
        #[arg(long, conflicts_with_all = ["principal", "action", "resource", "context"])]
        request: Option<PathBuf>,
        /// Re-evaluate the request of this audit record against the current policies (needs
        /// --data-dir or --config).
        #[arg(long, conflicts_with_all = ["principal", "action", "resource", "context", "request"])]
        audit_seq: Option<i64>,
        /// Policy directory (default: ./policies, else the embedded copy).
        #[arg(long)]
        policies: Option<PathBuf>,
    },
    /// List the principals in the database allowed an action on a resource.
    WhoCan {
        #[command(flatten)]
        common: Common,
        /// Action name, e.g. Decrypt.
        #[arg(long)]
        action: String,
        /// Resource uid, e.g. Key::"k-…".
        #[arg(long)]
        resource: String,
        /// Encryption context of the request, as a JSON object of strings.
        #[arg(long)]
        encryption_context: Option<String>,
        /// Policy directory (default: ./policies, else the embedded copy).
        #[arg(long)]
        policies: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Walk the hash chain (archived segments, then the database), then check the signed
    /// checkpoints; exit non-zero naming the first problem.
    Verify {
        #[command(flatten)]
        common: Common,
        /// A trusted copy of an audit public key (default: the one in the data dir, which
        /// whoever can rewrite the data dir can replace: a warning says so). Give one per node
        /// of a cluster: each node's HSM signs the checkpoints it makes.
        #[arg(long)]
        public_key: Vec<PathBuf>,
        /// A checkpoint file whose every checkpoint must be in the database, unchanged
        /// (default: the data dir's audit-checkpoints.jsonl). Repeat it: each node's file, and
        /// the copies kept on write-once storage.
        #[arg(long = "checkpoints", value_name = "FILE")]
        checkpoints: Vec<PathBuf>,
        /// Fail when any record is after its chain's last signed checkpoint (check a stopped
        /// system so: every node signs its chains' heads when it stops).
        #[arg(long)]
        require_signed: bool,
    },
    /// Write the sealed segments (records up to a signed checkpoint) not yet archived to
    /// audit.archive_dir, one gzip JSON-lines file each, then delete from the database the
    /// archived records that audit.retention_seconds / retention_records let go. The scheduler
    /// does the same every audit.archive_interval_seconds.
    Archive {
        #[command(flatten)]
        common: Common,
        /// List what would be archived and pruned; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Print the public key that verifies the checkpoints.
    PublicKey {
        #[command(flatten)]
        common: Common,
    },
    /// Records of a time range as JSON lines (schema in docs/auditing.md).
    Export {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        range: TimeRange,
        /// Output format (only `jsonl`).
        #[arg(long, default_value = "jsonl", value_parser = ["jsonl"])]
        format: String,
    },
    /// Records matching every given filter, as JSON lines.
    Search {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        range: TimeRange,
        #[arg(long)]
        principal: Option<String>,
        /// A key id: records whose resource is that key.
        #[arg(long)]
        key: Option<String>,
        #[arg(long)]
        action: Option<String>,
        /// `allow`, `deny`, `system` or `not-evaluated`.
        #[arg(long)]
        decision: Option<String>,
        #[arg(long)]
        limit: Option<i64>,
    },
}

#[derive(Args, Clone)]
struct TimeRange {
    /// RFC 3339, inclusive.
    #[arg(long, value_parser = audit::export::parse_time)]
    since: Option<String>,
    /// RFC 3339, inclusive.
    #[arg(long, value_parser = audit::export::parse_time)]
    until: Option<String>,
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn serve(common: Common, flags: FlagOverrides) -> anyhow::Result<()> {
    let config = Config::load(common.config.as_deref(), flags)?;
    let policies = ops::reload_policies::load_at_start(&config)?;
    bootstrap::prepare_data_dir(&config.data_dir)?;
    let _lock = bootstrap::lock_data_dir(&config.data_dir)?;
    if config.hsm.embedded_softhsm {
        let conf = token::prepare_embedded_softhsm(&config.data_dir)?;
        // Sound: no other thread exists yet (the runtime is built below).
        std::env::set_var("SOFTHSM2_CONF", conf);
    }
    let rt = runtime()?;
    let telemetry = {
        let _inside = rt.enter();
        telemetry::init(&config.telemetry)?
    };
    let result =
        Hsm::open(&config).and_then(|hsm| rt.block_on(server::serve(config, hsm, policies)));
    if let Err(e) = &result {
        tracing::error!(error = %format!("{e:#}"), "keyplane stopped with an error");
    }
    telemetry.shutdown();
    result
}

/// `keyplane gc`: open the data directory as the node would (token, database, plugins), run
/// one collection, print what it found or removed.
fn gc(
    common: Common,
    apply: bool,
    grace_seconds: Option<u64>,
    all_nodes_stopped: bool,
) -> anyhow::Result<bool> {
    let flags = FlagOverrides {
        data_dir: common.data_dir,
        ..Default::default()
    };
    let config = Config::load(common.config.as_deref(), flags)?;
    // The configuration's grace period is at least the minimum (`Config::load` checks it);
    // only the flag may go below it, and only with every node stopped.
    let grace_seconds = grace_seconds.unwrap_or(config.lifecycle.gc_grace_seconds);
    if grace_seconds < MIN_GC_GRACE_SECONDS && !all_nodes_stopped {
        anyhow::bail!(
            "a grace period below {MIN_GC_GRACE_SECONDS} s needs --all-nodes-stopped: a request still running elsewhere has material no row names yet"
        );
    }
    let db_file = config.data_dir.join("keyplane.db");
    if config.database.url.is_none() && !db_file.exists() {
        anyhow::bail!("no keyplane database in {}", config.data_dir.display());
    }
    let _lock = bootstrap::lock_data_dir(&config.data_dir)?;
    let policies = ops::reload_policies::load_at_start(&config)?;
    if config.hsm.embedded_softhsm {
        let conf = token::prepare_embedded_softhsm(&config.data_dir)?;
        // Sound: no other thread exists yet (the runtime is built below).
        std::env::set_var("SOFTHSM2_CONF", conf);
    }
    let grace = std::time::Duration::from_secs(grace_seconds);
    let hsm = Hsm::open(&config)?;
    runtime()?.block_on(async {
        let state = bootstrap::start(config, hsm, policies).await?;
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {pos} objects and blobs examined")
                .expect("static template"),
        );
        struct Bar(indicatif::ProgressBar);
        impl keyplane::ops::gc::Progress for Bar {
            fn item(&self) {
                self.0.inc(1);
            }
        }
        let report = keyplane::ops::gc::collect(
            &state,
            grace,
            apply,
            keyplane::ops::gc::Parts::ALL,
            &Bar(bar.clone()),
        )
        .await;
        bar.finish_and_clear();
        state.audit.close().await;
        // On PostgreSQL this run wrote audit chains of its own, as a node does: sign their
        // heads with the node's audit key, as a node does when it stops.
        state.checkpointer.seal_own_chains(&state.db).await?;
        state.db.close().await;
        let report = report?;
        let verb = if apply { "removed" } else { "would remove" };
        for id in &report.hsm_objects {
            println!("{verb} HSM object {id}");
        }
        for blob in &report.blobs {
            println!("{verb} blob {blob}");
        }
        for sha in &report.components {
            println!("{verb} plugin component {sha}");
        }
        for failed in &report.failed {
            println!("could not remove {failed}");
        }
        println!(
            "{} {} HSM object(s) and {} blob(s); {} younger than {} s kept{}",
            verb,
            report.hsm_objects.len(),
            report.blobs.len(),
            report.young,
            grace.as_secs(),
            if apply {
                ""
            } else {
                " (dry run: run with --apply to remove)"
            }
        );
        Ok(report.failed.is_empty())
    })
}

/// Load the configuration of an offline HSM tool, take the data directory's lock and point
/// the embedded SoftHSM2 at its token (before any thread exists).
fn offline_hsm(common: Common) -> anyhow::Result<(Config, bootstrap::DataDirLock)> {
    let flags = FlagOverrides {
        data_dir: common.data_dir,
        ..Default::default()
    };
    let config = Config::load(common.config.as_deref(), flags)?;
    bootstrap::prepare_data_dir(&config.data_dir)?;
    let lock = bootstrap::lock_data_dir(&config.data_dir)?;
    if config.hsm.embedded_softhsm {
        let conf = token::prepare_embedded_softhsm(&config.data_dir)?;
        // Sound: no other thread exists yet.
        std::env::set_var("SOFTHSM2_CONF", conf);
    }
    Ok((config, lock))
}

fn hsm_ceremony(command: HsmCommand) -> anyhow::Result<bool> {
    use keyplane::ceremony;
    match command {
        HsmCommand::TransportKey { common, bits, out } => {
            let (config, _lock) = offline_hsm(common)?;
            let public = ceremony::transport_key(&config, bits)?;
            let pem = public.pem()?;
            if let Some(out) = out {
                std::fs::write(&out, &pem)?;
            }
            print!("{pem}");
            println!(
                "fingerprint (SHA-256 of the public key): {}",
                public.fingerprint
            );
        }
        HsmCommand::ExportRoot { common, to, out } => {
            let (config, _lock) = offline_hsm(common)?;
            let file = ceremony::export_root(&config, &to, &out)?;
            println!(
                "root key (check value {}) wrapped to transport key {}; written to {}",
                file.root_key_check_value,
                file.transport_key_fingerprint,
                out.display()
            );
        }
        HsmCommand::ImportRoot { common, from } => {
            let (config, _lock) = offline_hsm(common)?;
            let check = ceremony::import_root(&config, &from)?;
            println!("root key (check value {check}) imported; the transport key is destroyed");
        }
        #[cfg(all(feature = "test-hooks", debug_assertions))]
        HsmCommand::ProbeExtraction { common } => {
            let (config, _lock) = offline_hsm(common)?;
            let found = ceremony::probe_extraction(&config)?;
            let map: serde_json::Map<String, serde_json::Value> = found
                .into_iter()
                .map(|(k, v)| (k.to_string(), serde_json::Value::String(v)))
                .collect();
            println!("{}", serde_json::Value::Object(map));
        }
    }
    Ok(true)
}

/// Run an offline audit tool against the data dir's database (read-only).
fn audit_tool<F, Fut>(common: Common, f: F) -> anyhow::Result<bool>
where
    F: FnOnce(store::Db, Config) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let flags = FlagOverrides {
        data_dir: common.data_dir,
        ..Default::default()
    };
    let config = Config::load(common.config.as_deref(), flags)?;
    runtime()?.block_on(async {
        let db = store::Db::open_read_only(&config.database_url()).await?;
        f(db, config).await
    })
}

/// `keyplane audit archive`: archive and prune on the data dir's database, beside a running
/// node or not (two archivers write the same files and record each segment once).
fn audit_archive(common: Common, dry_run: bool) -> anyhow::Result<bool> {
    let flags = FlagOverrides {
        data_dir: common.data_dir,
        ..Default::default()
    };
    let config = Config::load(common.config.as_deref(), flags)?;
    let db_file = config.data_dir.join("keyplane.db");
    if config.database.url.is_none() && !db_file.exists() {
        anyhow::bail!("no keyplane database in {}", config.data_dir.display());
    }
    runtime()?.block_on(async {
        let db = store::Db::open(&config.database_url()).await?;
        let ok = audit::cli::archive(&db, &config, dry_run).await;
        db.close().await;
        ok
    })
}

fn policy(command: PolicyCommand) -> anyhow::Result<bool> {
    use keyplane::policy_cli::{self, cases, explain, format, validate, who_can};
    match command {
        PolicyCommand::Validate { policies } => Ok(validate::run(policies.as_deref())),
        PolicyCommand::Fmt { check, policies } => {
            let changed = format::run(&policies, check)?;
            for f in &changed {
                if check {
                    eprintln!("not formatted: {}", f.display());
                } else {
                    println!("formatted: {}", f.display());
                }
            }
            Ok(!check || changed.is_empty())
        }
        PolicyCommand::Test { paths, policies } => {
            let loaded = policy_cli::load(policies.as_deref())?;
            Ok(cases::run(&loaded, &paths)?)
        }
        PolicyCommand::Explain {
            common,
            principal,
            action,
            resource,
            context,
            request,
            audit_seq,
            policies,
        } => {
            let loaded = policy_cli::load(policies.as_deref())?;
            let args = explain::ExplainArgs {
                principal,
                action,
                resource,
                context,
                request,
                audit_seq,
                data_dir: common.data_dir,
                config: common.config,
            };
            runtime()?.block_on(explain::run(&loaded, args))?;
            Ok(true)
        }
        PolicyCommand::WhoCan {
            common,
            action,
            resource,
            encryption_context,
            policies,
        } => {
            let loaded = policy_cli::load(policies.as_deref())?;
            let ec = match encryption_context {
                Some(j) => serde_json::from_str(&j)?,
                None => Default::default(),
            };
            runtime()?.block_on(async {
                let db = policy_cli::open_db(common.config.as_deref(), common.data_dir).await?;
                let r = policy_cli::resource_from_db(&db, &resource).await?;
                for form in who_can::forms(&action) {
                    let allowed = who_can::evaluate(&loaded, &db, &action, &r, &ec, *form).await?;
                    who_can::print(&action, *form, &r, &allowed);
                }
                Ok(true)
            })
        }
    }
}

/// The offline tools (`audit`, `policy`) print to whatever reads them, often a pipe that
/// stops early (`keyplane audit export | head`). Rust ignores SIGPIPE, so a write to a closed
/// pipe fails and `println!` panics on it; with the signal's default disposition the tool ends
/// quietly, as other Unix tools do. Not for `serve`: its sockets must never raise it, and
/// these tools open none.
fn quiet_on_closed_pipe() {
    // SAFETY: `signal` with a valid signal number and `SIG_DFL` only changes the process's
    // disposition; it runs before any thread of this command exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve {
            common,
            listen,
            insecure_http,
            policies_dir,
        } => {
            let flags = FlagOverrides {
                data_dir: common.data_dir.clone(),
                listen,
                insecure_http: insecure_http.then_some(true),
                policies_dir,
            };
            serve(common, flags).map(|_| true)
        }
        Command::Audit { command } => {
            quiet_on_closed_pipe();
            init_logging();
            match command {
                AuditCommand::Verify {
                    common,
                    public_key,
                    checkpoints,
                    require_signed,
                } => {
                    let options = audit::cli::VerifyOptions {
                        public_keys: public_key,
                        checkpoint_files: checkpoints,
                        require_signed,
                    };
                    audit_tool(common, |db, config| async move {
                        audit::cli::verify(&db, &config, &options).await
                    })
                }
                AuditCommand::PublicKey { common } => audit_tool(common, |_, config| async move {
                    audit::cli::public_key(&config.data_dir)
                }),
                AuditCommand::Archive { common, dry_run } => audit_archive(common, dry_run),
                AuditCommand::Export { common, range, .. } => {
                    let filter = audit::export::Filter {
                        since: range.since,
                        until: range.until,
                        ..Default::default()
                    };
                    audit_tool(common, |db, config| async move {
                        audit::cli::export(&db, &config, &filter).await
                    })
                }
                AuditCommand::Search {
                    common,
                    range,
                    principal,
                    key,
                    action,
                    decision,
                    limit,
                } => {
                    let filter = audit::export::Filter {
                        since: range.since,
                        until: range.until,
                        principal,
                        key,
                        action,
                        decision,
                        limit,
                    };
                    audit_tool(common, |db, config| async move {
                        audit::cli::export(&db, &config, &filter).await
                    })
                }
            }
        }
        Command::Policy { command } => {
            quiet_on_closed_pipe();
            policy(command)
        }
        Command::Gc {
            common,
            apply,
            dry_run: _,
            grace_seconds,
            all_nodes_stopped,
        } => {
            quiet_on_closed_pipe();
            init_logging();
            gc(common, apply, grace_seconds, all_nodes_stopped)
        }
        Command::Hsm { command } => {
            quiet_on_closed_pipe();
            init_logging();
            hsm_ceremony(command)
        }
        Command::Openapi => {
            quiet_on_closed_pipe();
            let document = keyplane::api::openapi_document();
            serde_json::to_string_pretty(&document)
                .map(|text| {
                    println!("{text}");
                    true
                })
                .map_err(Into::into)
        }
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("keyplane: error: {e:#}");
            ExitCode::from(2)
        }
    }
}
