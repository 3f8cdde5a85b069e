//! Command-line interface: `moneta serve`, `moneta audit verify`.

use crate::config::Config;
use crate::storage::{Store, StoreError};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "moneta", version, about = "Moneta: an intelligent investing platform node")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run a node (gateway, entity actors, audit journal, market feed).
    Serve {
        /// A TOML file merged over the embedded default configuration.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Audit journal tools.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Verify the whole hash chain offline (the node must be stopped) and name the first bad entry.
    Verify {
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Serve { config } => serve(config),
        Command::Audit {
            command: AuditCommand::Verify { config },
        } => audit_verify(config),
    }
}

fn load_config(path: Option<PathBuf>) -> Result<Config, ExitCode> {
    Config::load(path.as_deref()).map_err(|e| {
        eprintln!("{e}");
        ExitCode::from(2)
    })
}

fn serve(path: Option<PathBuf>) -> ExitCode {
    let config = match load_config(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if let Err(e) = crate::telemetry::init_logging(config.log.format, &config.log.level) {
        eprintln!("configuration error: {e}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let node = match crate::node::start(config).await {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(error = %e, "node failed to start");
                eprintln!("moneta: {e}");
                return ExitCode::FAILURE;
            }
        };
        crate::node::shutdown_signal().await;
        tracing::info!("shutdown requested");
        match node.shutdown().await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("moneta: shutdown failed: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

fn audit_verify(path: Option<PathBuf>) -> ExitCode {
    let config = match load_config(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let store = match Store::open(&config.node.data_dir) {
        Ok(s) => s,
        Err(e @ StoreError::Locked(_)) => {
            eprintln!("moneta: {e}; while a node runs, use GET /v1/admin/audit/verify");
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("moneta: {e}");
            return ExitCode::from(2);
        }
    };
    let report = store.verify_audit();
    if report.ok {
        println!("audit chain OK: {} entries, head {}", report.entries, report.head_hash);
        ExitCode::SUCCESS
    } else {
        println!(
            "audit chain BROKEN at entry {}: {} ({} entries verified before it)",
            report.first_bad_entry.unwrap_or(0),
            report.problem.as_deref().unwrap_or("unknown problem"),
            report.entries
        );
        ExitCode::FAILURE
    }
}
