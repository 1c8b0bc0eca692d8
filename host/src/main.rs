//! The `keyplane` command line: `serve` and `audit verify`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use keyplane::config::{Config, FlagOverrides};
use keyplane::hsm::{token, Hsm};
use keyplane::{audit, bootstrap, server, store, telemetry};

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
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Walk the hash chain; exit non-zero naming the first bad record.
    Verify {
        #[command(flatten)]
        common: Common,
    },
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
    let policies = bootstrap::policies(&config)?;
    bootstrap::prepare_data_dir(&config.data_dir)?;
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

fn audit_verify(common: Common) -> anyhow::Result<bool> {
    let flags = FlagOverrides {
        data_dir: common.data_dir,
        ..Default::default()
    };
    let config = Config::load(common.config.as_deref(), flags)?;
    runtime()?.block_on(async {
        let db = store::Db::open_read_only(&config.database_url()).await?;
        let report = audit::verify(db.reader()).await?;
        match &report.fault {
            None => {
                println!(
                    "audit chain OK: {} records, head {}",
                    report.records, report.head
                );
                Ok(true)
            }
            Some(fault) => {
                eprintln!(
                    "audit chain BROKEN after {} good records: {fault}",
                    report.records
                );
                Ok(false)
            }
        }
    })
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
        Command::Audit {
            command: AuditCommand::Verify { common },
        } => {
            init_logging();
            audit_verify(common)
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
