//! Command-line interface: `moneta serve`, `moneta audit verify`, `moneta staff add`,
//! `moneta keys rotate-jwt`.

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
    /// Staff accounts (never self-registered). Works while the node is stopped.
    Staff {
        #[command(subcommand)]
        command: StaffCommand,
    },
    /// Encrypted backups: `create` (node running or stopped) and `restore` (into an empty folder).
    Backup {
        #[command(subcommand)]
        command: BackupCommand,
    },
    /// Anonymised analytics for the warehouse (consenting investors only).
    Analytics {
        #[command(subcommand)]
        command: AnalyticsCommand,
    },
    /// The end-of-day close: a statement for every portfolio (asks a running node, or runs on a
    /// stopped one's data folder).
    Eod {
        #[command(subcommand)]
        command: EodCommand,
    },
    /// Compare the broker's confirmations with the booked orders now; raise every new
    /// discrepancy as a security event.
    Reconcile {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Key management. Run while the node is stopped.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// The cluster: a new secret, its status, decommissioning a node.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
}

#[derive(Subcommand)]
pub enum ClusterCommand {
    /// Write a new private-network secret (32 random bytes as hex, mode 0600) to FILE; give
    /// every node of the cluster the same file as `[cluster] secret_file`.
    NewSecret {
        #[arg(long)]
        out: PathBuf,
    },
    /// The cluster as the running node sees it: members, groups, leaders, replicas.
    Status {
        #[arg(long)]
        config: Option<PathBuf>,
        /// Print the JSON document of GET /v1/cluster.
        #[arg(long)]
        json: bool,
    },
    /// Move every replica and leadership off NODE_ID, then remove it from the cluster (the
    /// node exits once it holds nothing). Asked of the running node of this config.
    Decommission {
        node_id: String,
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
pub enum StaffCommand {
    /// Create a staff account; the password is read from standard input (one line).
    Add {
        #[arg(long)]
        email: String,
        /// support, compliance or admin.
        #[arg(long)]
        role: String,
        /// The staff member's name (defaults to the email's local part).
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
pub enum BackupCommand {
    /// Write a consistent, encrypted backup to FILE (asks a running node over its control socket).
    Create {
        #[arg(long)]
        out: PathBuf,
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Restore FILE into the configured data folder (which must be empty), replay the erasure
    /// list, and verify the audit chain.
    Restore {
        #[arg(long)]
        from: PathBuf,
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
pub enum AnalyticsCommand {
    /// Write investors.csv and orders.csv into DIR (asks a running node over its control socket).
    Export {
        #[arg(long)]
        out: PathBuf,
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
pub enum EodCommand {
    /// Close a day now (default: the latest day whose `[statements] close_time` has passed).
    Run {
        /// YYYY-MM-DD
        #[arg(long)]
        date: Option<String>,
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Retire the JWT signing key (it keeps verifying and stays in the JWKS) and make a new one.
    RotateJwt {
        #[arg(long)]
        config: Option<PathBuf>,
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
        Command::Cluster {
            command: ClusterCommand::Status { config, json },
        } => cluster_status(config, json),
        Command::Cluster {
            command: ClusterCommand::Decommission { node_id, config },
        } => cluster_decommission(config, node_id),
        Command::Cluster {
            command: ClusterCommand::NewSecret { out },
        } => match crate::cluster::secret::create(&out) {
            Ok(()) => {
                println!(
                    "cluster secret written to {} (mode 0600); give every node this file as [cluster] secret_file",
                    out.display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("moneta: {e}");
                ExitCode::from(2)
            }
        },
        Command::Serve { config } => serve(config),
        Command::Audit {
            command: AuditCommand::Verify { config },
        } => audit_verify(config),
        Command::Staff {
            command: StaffCommand::Add { email, role, name, config },
        } => staff_add(config, &email, &role, name),
        Command::Keys {
            command: KeysCommand::RotateJwt { config },
        } => rotate_jwt(config),
        Command::Backup {
            command: BackupCommand::Create { out, config },
        } => backup_create(config, out),
        Command::Analytics {
            command: AnalyticsCommand::Export { out, config },
        } => analytics_export(config, out),
        Command::Eod {
            command: EodCommand::Run { date, config },
        } => eod_run(config, date),
        Command::Reconcile { config } => reconcile(config),
        Command::Backup {
            command: BackupCommand::Restore { from, config },
        } => backup_restore(config, from),
    }
}

fn fail(msg: impl std::fmt::Display, code: u8) -> ExitCode {
    eprintln!("moneta: {msg}");
    ExitCode::from(code)
}

fn staff_add(path: Option<PathBuf>, email: &str, role: &str, name: Option<String>) -> ExitCode {
    use crate::domain::account::{normalise_email, Profile, Role};
    let config = match load_config(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let role = match Role::parse(role) {
        Some(r) if r.is_staff() => r,
        _ => return fail("--role must be support, compliance or admin", 2),
    };
    let Some(email) = normalise_email(email) else {
        return fail("--email is not a valid address", 2);
    };
    let mut password = String::new();
    if std::io::stdin().read_line(&mut password).is_err() {
        return fail("could not read the password from standard input", 2);
    }
    let password = password.trim_end_matches(['\n', '\r']).to_string();
    if let Some((_, why)) = crate::domain::account::password_problem(&password) {
        return fail(format!("password refused: {why}"), 2);
    }
    let full_name = name.unwrap_or_else(|| email.split('@').next().unwrap_or_default().to_string());
    if !crate::domain::account::is_plain_name(&full_name) {
        return fail("--name must be 1–200 characters, without control or bidirectional-override characters", 2);
    }
    // A running node creates it (through its cluster); a stopped one's folder is opened here,
    // keeping the lock that proved no node runs on it.
    let store = match Store::open_with_groups(&config.node.data_dir, Some(config.cluster.groups)) {
        Ok(store) => store,
        Err(StoreError::Locked(_)) => {
            let request = crate::control::Request::StaffAdd {
                email,
                role: role.as_str().to_string(),
                full_name: full_name.trim().to_string(),
                password,
            };
            return match crate::control::call(&config.node.data_dir, &request) {
                Ok(crate::control::Response {
                    ok: true, digest: Some(uid), ..
                }) => {
                    println!("created {} account {uid}", role.as_str());
                    ExitCode::SUCCESS
                }
                Ok(r) => fail(r.error.unwrap_or_else(|| "the node refused".into()), 1),
                Err(e) => fail(format!("the running node did not answer: {e}"), 1),
            };
        }
        Err(e) => return fail(e, 2),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => return fail(format!("cannot start the runtime: {e}"), 1),
    };
    runtime.block_on(async move {
        let state = match crate::node::open_state_on(&config, store, false).await {
            Ok(s) => s,
            Err(e) => return fail(e, 1),
        };
        let hash = match state.auth.hash_password(password).await {
            Ok(h) => h,
            Err(_) => return fail("password hashing failed", 1),
        };
        let profile = Profile {
            email,
            full_name: full_name.trim().to_string(),
            date_of_birth: None,
            country: None,
        };
        let result = crate::workflows::registration::create_account(
            &state,
            profile,
            hash,
            vec![role],
            &crate::actors::RequestMeta::system("cli-staff-add").request_id,
        )
        .await;
        let drained = state
            .router
            .drain()
            .await
            .and_then(|_| state.router.journal().flush_and_mark().map_err(|e| e.to_string()));
        match (result, drained) {
            (Ok(uid), Ok(())) => {
                println!("created {} account {uid}", role.as_str());
                ExitCode::SUCCESS
            }
            (Err(crate::workflows::registration::RegistrationError::EmailTaken), _) => fail("an account with this email already exists", 1),
            (Err(e), _) => fail(format!("could not create the account: {e}"), 1),
            (_, Err(e)) => fail(format!("could not flush: {e}"), 1),
        }
    })
}

fn rotate_jwt(path: Option<PathBuf>) -> ExitCode {
    let config = match load_config(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    // Holding the store's lock proves no node is using these keys right now.
    let _store = match Store::open(&config.node.data_dir) {
        Ok(s) => s,
        Err(e) => return fail(format!("{e}; stop the node before rotating keys"), 2),
    };
    let now = crate::actors::wall_clock_now().millis() / 1000;
    match crate::gateway::auth::rotate_signing_key(&config.security.secrets_path(&config.node.data_dir), now) {
        Ok(kid) => {
            println!("new signing key {kid}; the previous key stays in the JWKS and keeps verifying");
            ExitCode::SUCCESS
        }
        Err(e) => fail(e, 1),
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
        tokio::select! {
            _ = crate::node::shutdown_signal() => tracing::info!("shutdown requested"),
            _ = node.left_cluster() => {
                tracing::warn!("this node was removed from the cluster: it stops serving and exits");
            }
        }
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
    if let Err(code) = existing_data_folder(&config) {
        return code;
    }
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
    for g in &report.groups {
        println!("group {:>4}: {} entries, head {}", g.group, g.entries, g.head_hash);
    }
    if report.ok {
        println!(
            "audit chain OK: {} entries in {} group chains, head {}",
            report.entries,
            report.groups.len(),
            report.head_hash
        );
        ExitCode::SUCCESS
    } else {
        println!(
            "audit chain BROKEN at entry {} of group {}: {} ({} entries verified before it)",
            report.first_bad_entry.unwrap_or(0),
            report.bad_group.unwrap_or(0),
            report.problem.as_deref().unwrap_or("unknown problem"),
            report.entries
        );
        ExitCode::FAILURE
    }
}

fn absolute(p: PathBuf) -> PathBuf {
    if p.is_absolute() {
        p
    } else {
        std::env::current_dir().map(|d| d.join(&p)).unwrap_or(p)
    }
}

/// Has the node carry out `request`: over its control socket when it is running, else by
/// opening the data folder here. Returns the counts it answers.
/// An offline command reads a node's data folder: one that does not exist (a mistyped
/// `[node] data_dir`) is refused rather than created empty and reported on as if it were the
/// node's.
fn existing_data_folder(config: &Config) -> Result<(), ExitCode> {
    let db = config.node.data_dir.join("db");
    if db.is_dir() {
        Ok(())
    } else {
        Err(fail(
            format!(
                "no node data in {} (key `node.data_dir`): check the configuration, or start the node once",
                config.node.data_dir.display()
            ),
            2,
        ))
    }
}

fn ask_node(config: &crate::config::Config, request: crate::control::Request) -> Result<(usize, usize, usize), ExitCode> {
    existing_data_folder(config)?;
    match Store::open_with_groups(&config.node.data_dir, Some(config.cluster.groups)) {
        Ok(store) => {
            // A stopped member of a cluster of several cannot act alone: its groups need a
            // majority of their replicas, which a tool on one folder does not have (end of day
            // waited for ever).
            match crate::cluster::peer::stored_membership(&store) {
                Ok(Some(m)) if m.members.len() > 1 => {
                    return Err(fail(
                        format!(
                            "the data folder {} belongs to a cluster of {} nodes and its node is stopped: run this against a running node of the cluster (start this one, or use another node's data folder and config)",
                            config.node.data_dir.display(),
                            m.members.len()
                        ),
                        1,
                    ))
                }
                Ok(_) => {}
                Err(e) => return Err(fail(e, 1)),
            }
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .map_err(|e| fail(format!("cannot start the runtime: {e}"), 1))?;
            let result = runtime.block_on(async {
                let state = crate::node::open_state_on(config, store, false).await?;
                let response = crate::control::handle(&state, request).await?;
                state.router.drain().await?;
                state.router.journal().flush_and_mark().map_err(|e| e.to_string())?;
                Ok::<_, String>(response.counts.unwrap_or_default())
            });
            result.map_err(|e| fail(e, 1))
        }
        Err(StoreError::Locked(_)) => match crate::control::call(&config.node.data_dir, &request) {
            Ok(crate::control::Response { ok: true, counts: Some(c), .. }) => Ok(c),
            Ok(r) => Err(fail(format!("the node refused: {}", r.error.unwrap_or_default()), 1)),
            Err(e) => Err(fail(e, 1)),
        },
        Err(e) => Err(fail(e, 2)),
    }
}

fn analytics_export(path: Option<PathBuf>, out: PathBuf) -> ExitCode {
    let config = match load_config(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let out = absolute(out);
    let counts = match ask_node(&config, crate::control::Request::AnalyticsExport { out: out.clone() }) {
        Ok(c) => c,
        Err(code) => return code,
    };
    println!("analytics export written to {}", out.display());
    println!(
        "investors {} (without analytics consent, left out: {}), orders {}",
        counts.0, counts.1, counts.2
    );
    ExitCode::SUCCESS
}

fn eod_run(path: Option<PathBuf>, date: Option<String>) -> ExitCode {
    let config = match load_config(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if let Some(d) = &date {
        if crate::domain::time::Date::parse(d).is_none() {
            return fail(format!("--date {d}: expected YYYY-MM-DD"), 2);
        }
    }
    match ask_node(&config, crate::control::Request::EndOfDay { date }) {
        Ok((statements, skipped, failed)) => {
            println!("statements written: {statements}; portfolios already closed or with nothing to state: {skipped}; failed: {failed}");
            if failed > 0 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(code) => code,
    }
}

fn reconcile(path: Option<PathBuf>) -> ExitCode {
    let config = match load_config(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match ask_node(&config, crate::control::Request::Reconcile) {
        Ok((orders, discrepancies, alerted)) => {
            println!("orders compared: {orders}; discrepancies: {discrepancies} (new alerts: {alerted})");
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

mod backup;
mod cluster;
use backup::{backup_create, backup_restore};
use cluster::{cluster_decommission, cluster_status};
