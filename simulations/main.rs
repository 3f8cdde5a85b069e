//! The deterministic simulation of the domain core (DESIGN.md §2).
//!
//! One seed drives everything: a seeded GBM market, N users depositing, withdrawing, buying and
//! selling (with re-sent requests, reused keys and requests that must be refused), all on a
//! simulated clock, through the very `decide`/`apply` state machines production runs. After every
//! decision the answer is compared with an independent oracle, after every step the invariants of
//! every touched entity are checked, at the end of each day the books of all portfolios are
//! reconciled with what the clients moved, and at the end every journal is replayed and compared
//! with the live state. The last line is a digest of the final state: the same seed must print
//! the same digest in any process.
//!
//! With `--scenario FILE` (see `scenario.rs` and `simulations/scenarios/`) the market gets the
//! scenario's shocks on top of the GBM, and the users are advised users of every risk band who
//! take advice through their accounts (`advisory/`); the report adds per-band performance,
//! advice counts and the review-queue load (`report.rs`), and `--plot FILE.svg` writes the
//! value of every band over time (`plot.rs`).
//!
//! `cargo run --release --bin simulate -- --seed 42 --users 1000 --days 5`
//! `cargo run --release --bin simulate -- --scenario simulations/scenarios/crash.toml --seed 42 --plot crash.svg`

#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

mod advisory;
mod cluster;
mod oracle;
mod plot;
mod report;
mod scenario;
mod sim;
mod trace;
mod workload;

use clap::Parser;
use moneta::domain::time::Timestamp;
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::process::ExitCode;

/// Users and days without a scenario.
const DEFAULT_USERS: usize = 1000;
const DEFAULT_DAYS: u32 = 5;
/// The most users of a market run without a scenario (a scenario's own bound is the same).
const MARKET_USERS_MAX: usize = 1_000_000;
/// The longest safety phase of a cluster run (about three hours of simulated time).
const CLUSTER_TICKS_MAX: u64 = 1_000_000;

#[derive(Parser, Debug)]
#[command(name = "simulate", about = "Deterministic simulation of the Moneta domain core")]
struct Cli {
    /// The seed of every random stream in the run.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Number of simulated users (one portfolio each) [default: 1000, with --scenario the
    /// scenario's advised users, with --cluster 6].
    #[arg(long)]
    users: Option<usize>,
    /// Number of simulated trading days (390 one-minute steps each) [default: 5, or the scenario's].
    #[arg(long)]
    days: Option<u32>,
    /// A scenario file (TOML, e.g. simulations/scenarios/crash.toml): advised users of every risk
    /// band and market shocks.
    #[arg(long)]
    scenario: Option<PathBuf>,
    /// Write an SVG plot of the portfolio value per risk band over time (needs --scenario).
    #[arg(long, requires = "scenario")]
    plot: Option<PathBuf>,
    /// Test hook: corrupt one journal entry before the final replay check, which must then fail.
    #[arg(long, hide = true)]
    sabotage_journal: bool,
    /// Simulate the cluster instead: N virtual nodes running the real raft driver and entities
    /// under network, crash and partition faults drawn from the seed, then a liveness phase.
    #[arg(long, conflicts_with_all = ["scenario", "days", "plot"])]
    cluster: bool,
    /// With --cluster: the number of nodes [default: 3–5, drawn from the seed].
    #[arg(long, requires = "cluster")]
    nodes: Option<u64>,
    /// With --cluster: ticks of the safety phase [default: 3000].
    #[arg(long, requires = "cluster")]
    ticks: Option<u64>,
    /// With --cluster: requests each client sends over the run [default: 60].
    #[arg(long, requires = "cluster")]
    requests: Option<usize>,
    /// With --cluster: run this many seeds from --seed on; report every failing seed.
    #[arg(long, requires = "cluster")]
    sweep: Option<u64>,
    /// With --sweep: stop at the first failing seed.
    #[arg(long, requires = "sweep")]
    stop_on_failure: bool,
    /// Test hook (a planted bug): cluster clients retry under new request ids and keys.
    #[arg(long, hide = true, requires = "cluster")]
    sabotage_retries: bool,
    /// Test hook (a build with `--features planted-bugs` only): plants one classic mistake in
    /// the production code the simulation runs — ack-before-commit, read-without-lease or
    /// forget-idempotency-on-restart.
    #[arg(long, hide = true, requires = "cluster")]
    plant: Option<String>,
    /// With --cluster: set one fault's probability instead of drawing it from the seed, e.g.
    /// `--fault crash=0.004 --fault loss=0` (names: loss, duplicate, latency_max_ms, crash,
    /// restart, isolate, one_way, heal, clog, pause, compact, join, decommission, disk_error,
    /// corrupt).
    #[arg(long = "fault", value_name = "NAME=P", requires = "cluster")]
    faults: Vec<String>,
    /// With --cluster: write every event of the run to FILE as JSON lines.
    #[arg(long, value_name = "FILE", requires = "cluster", conflicts_with = "sweep")]
    trace: Option<PathBuf>,
    /// Run the same command twice in two more processes and compare their digests.
    #[arg(long, conflicts_with_all = ["sweep", "trace", "plot"])]
    check_determinism: bool,
}

/// The wall clock, for the speed line on stderr only: it never enters a run (stdout and the
/// digest stay a function of the seed).
#[allow(clippy::disallowed_methods, clippy::disallowed_types)]
fn wall_clock() -> std::time::Instant {
    std::time::Instant::now()
}

/// `--check-determinism`: the same arguments (without the flag) in two child processes, run
/// at once; their reports must be identical, digest included.
fn check_determinism() -> ExitCode {
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("simulate: --check-determinism: cannot find this program: {e}");
            return ExitCode::from(2);
        }
    };
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--check-determinism").collect();
    let spawn = || {
        std::process::Command::new(&exe)
            .args(&args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
    };
    let (a, b) = match (spawn(), spawn()) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("simulate: --check-determinism: cannot start a run: {e}");
            return ExitCode::from(2);
        }
    };
    let (a, b) = match (a.wait_with_output(), b.wait_with_output()) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("simulate: --check-determinism: a run could not be read: {e}");
            return ExitCode::from(2);
        }
    };
    let digest = |o: &std::process::Output| {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("digest: ").map(str::to_string))
    };
    let (da, db) = (digest(&a), digest(&b));
    print!("{}", String::from_utf8_lossy(&a.stdout));
    eprint!("{}", String::from_utf8_lossy(&a.stderr));
    match (da, db) {
        (Some(x), Some(y)) if x == y && a.stdout == b.stdout => {
            println!("determinism: two processes, the same report and digest {x}");
            ExitCode::SUCCESS
        }
        (Some(x), Some(y)) => {
            println!("determinism: FAILED — two processes, digests {x} and {y}");
            ExitCode::FAILURE
        }
        // A usage error (exit 2) in both is this command's usage error.
        _ if a.status.code() == Some(2) && b.status.code() == Some(2) => ExitCode::from(2),
        _ if a.status.code() == b.status.code() && a.stderr == b.stderr && !a.status.success() => {
            let how = a.status.code().map_or_else(|| "killed by a signal".to_string(), |c| format!("exit {c}"));
            println!("determinism: both processes failed the same way ({how})");
            ExitCode::FAILURE
        }
        _ => {
            println!("determinism: FAILED — the two processes ended differently");
            ExitCode::FAILURE
        }
    }
}

/// The flags' combinations and ranges clap cannot state: a flag of the cluster simulation
/// without `--cluster` (clap skips its `requires` once `--days` or `--scenario` conflicts
/// with `--cluster`), a range, a fault named twice.
fn check_usage(cli: &Cli) -> Result<(), String> {
    if !cli.cluster {
        let cluster_only = [
            ("--nodes", cli.nodes.is_some()),
            ("--ticks", cli.ticks.is_some()),
            ("--requests", cli.requests.is_some()),
            ("--sweep", cli.sweep.is_some()),
            ("--stop-on-failure", cli.stop_on_failure),
            ("--fault", !cli.faults.is_empty()),
            ("--trace", cli.trace.is_some()),
            ("--sabotage-retries", cli.sabotage_retries),
            ("--plant", cli.plant.is_some()),
        ];
        if let Some((flag, _)) = cluster_only.iter().find(|(_, given)| *given) {
            return Err(format!("{flag} is a flag of the cluster simulation: it needs --cluster"));
        }
        if cli.scenario.is_none() {
            if let Some(u) = cli.users.filter(|u| !(1..=MARKET_USERS_MAX).contains(u)) {
                return Err(format!("--users must be 1–{MARKET_USERS_MAX}, got {u}"));
            }
            if let Some(d) = cli.days.filter(|d| !(1..=scenario::DAYS_MAX).contains(d)) {
                return Err(format!("--days must be 1–{}, got {d}", scenario::DAYS_MAX));
            }
        }
        return Ok(());
    }
    if let Some(t) = cli.ticks.filter(|t| !(1..=CLUSTER_TICKS_MAX).contains(t)) {
        return Err(format!("--ticks must be 1–{CLUSTER_TICKS_MAX}, got {t}"));
    }
    let mut named = std::collections::BTreeSet::new();
    for spec in &cli.faults {
        let name = spec.split_once('=').map_or(spec.as_str(), |(n, _)| n);
        if !named.insert(name) {
            return Err(format!("--fault {name} is given twice"));
        }
    }
    Ok(())
}

/// Switches on the planted bug `--plant` names; an unknown name, or a build without the
/// feature, is a usage error.
fn plant(cli: &Cli) -> Result<(), String> {
    let Some(name) = &cli.plant else { return Ok(()) };
    let Some(bug) = moneta::planted::Bug::parse(name) else {
        let known: Vec<_> = moneta::planted::Bug::ALL.iter().map(|b| b.name()).collect();
        return Err(format!("--plant: unknown bug {name:?} (one of {})", known.join(", ")));
    };
    #[cfg(feature = "planted-bugs")]
    {
        moneta::planted::plant(Some(bug));
        Ok(())
    }
    #[cfg(not(feature = "planted-bugs"))]
    {
        Err(format!(
            "--plant {}: this build has no planted bugs (build with --features planted-bugs)",
            bug.name()
        ))
    }
}

fn cluster_settings(cli: &Cli, seed: u64) -> Result<cluster::Settings, String> {
    let mut s = cluster::Settings::from_seed(seed);
    for spec in &cli.faults {
        s.faults.set(spec)?;
    }
    if let Some(n) = cli.nodes {
        s.nodes = n;
    }
    // A damaged record is repaired from the other replicas, and its node replaced: with fewer
    // than three nodes there is nothing to repair it from, so it is not drawn (and not asked).
    if s.nodes < 3 && s.faults.corrupt > 0.0 {
        if cli.faults.iter().any(|f| f.starts_with("corrupt=")) {
            return Err(format!(
                "--fault corrupt needs at least 3 nodes (a damaged record is repaired from the other replicas), got {}",
                s.nodes
            ));
        }
        s.faults.corrupt = 0.0;
    }
    if let Some(u) = cli.users {
        s.users = u;
    }
    if let Some(t) = cli.ticks {
        s.ticks = t;
    }
    if let Some(r) = cli.requests {
        s.ops_per_client = r;
    }
    s.scale_liveness();
    s.sabotage_retries = cli.sabotage_retries;
    Ok(s)
}

fn cluster_replay(cli: &Cli, seed: u64) -> String {
    let mut line = format!("cargo run --release --bin simulate -- --cluster --seed {seed}");
    if let Some(n) = cli.nodes {
        line += &format!(" --nodes {n}");
    }
    if let Some(u) = cli.users {
        line += &format!(" --users {u}");
    }
    if let Some(t) = cli.ticks {
        line += &format!(" --ticks {t}");
    }
    if let Some(r) = cli.requests {
        line += &format!(" --requests {r}");
    }
    if cli.sabotage_retries {
        line += " --sabotage-retries";
    }
    for spec in &cli.faults {
        line += &format!(" --fault {spec}");
    }
    if let Some(bug) = &cli.plant {
        line = line.replacen("--bin simulate", "--features planted-bugs --bin simulate", 1);
        line += &format!(" --plant {bug}");
    }
    line
}

/// `simulate --cluster`: one seed (a report and a digest), or a sweep of seeds.
fn run_cluster(cli: &Cli) -> ExitCode {
    if let Some(n) = cli.nodes.filter(|n| !(1..=9).contains(n)) {
        eprintln!("simulate: --nodes must be 1–9, got {n}");
        return ExitCode::from(2);
    }
    if let Some(u) = cli.users.filter(|u| !(1..=100_000).contains(u)) {
        eprintln!("simulate: --users must be 1–100000 with --cluster, got {u}");
        return ExitCode::from(2);
    }
    if let Some(r) = cli.requests.filter(|r| !(1..=10_000).contains(r)) {
        eprintln!("simulate: --requests must be 1–10000, got {r}");
        return ExitCode::from(2);
    }
    if let Err(e) = plant(cli) {
        eprintln!("simulate: {e}");
        return ExitCode::from(2);
    }
    if let Err(e) = cluster_settings(cli, cli.seed) {
        eprintln!("simulate: {e}");
        return ExitCode::from(2);
    }
    let seeds = cli.sweep.unwrap_or(1);
    if seeds == 0 {
        eprintln!("simulate: --sweep must be at least 1");
        return ExitCode::from(2);
    }
    let Some(last) = cli.seed.checked_add(seeds - 1) else {
        eprintln!("simulate: --seed {} --sweep {seeds} runs past the largest seed, {}", cli.seed, u64::MAX);
        return ExitCode::from(2);
    };
    let mut failed = Vec::new();
    let sweep = cli.sweep.is_some().then(|| SweepProgress::new(seeds));
    for seed in cli.seed..=last {
        if let Some(p) = &sweep {
            p.seed_done(seed - cli.seed, failed.len());
        }
        let settings = cluster_settings(cli, seed).expect("checked above");
        let ticks = settings.ticks;
        let described = settings.describe();
        let mut sim = cluster::ClusterSim::new(settings);
        // The trace file is made before anything is printed: a bad path is a usage error.
        if let Some(path) = &cli.trace {
            sim = match sim.with_trace(path) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("simulate: {e}");
                    return ExitCode::from(2);
                }
            };
        }
        if cli.sweep.is_none() {
            println!("moneta cluster simulation");
            println!("seed: {seed}");
            println!("{described}");
        }
        // A progress bar on a terminal only (never in a pipe or a log).
        if cli.sweep.is_none() && std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            sim = sim.with_progress(indicatif::ProgressBar::new(ticks));
        }
        let started = wall_clock();
        // A panic in the code under test is a failure of its seed, named with its replay line;
        // a sweep goes on to the next seed.
        let run = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || sim.run())) {
            Ok(run) => run,
            Err(payload) => {
                let why = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic".into());
                eprintln!("SIMULATION FAILED: seed {seed}: panic: {why}");
                eprintln!("replay: {}", cluster_replay(cli, seed));
                failed.push(seed);
                if cli.stop_on_failure {
                    println!("stopped at the first failing seed, {seed}");
                    return ExitCode::FAILURE;
                }
                continue;
            }
        };
        match run {
            Ok(r) if cli.sweep.is_none() => {
                let wall = started.elapsed().as_secs_f64();
                let simulated = (r.ticks * moneta::cluster::raft::sim::TICK_MS) as f64 / 1000.0;
                println!("ticks: {} (liveness {}) · simulated {simulated:.1} s", r.ticks, r.liveness_ticks);
                println!("events: {}", r.events);
                eprintln!(
                    "wall time {wall:.2} s · {:.0}× real time · {:.0} events/s",
                    simulated / wall.max(1e-9),
                    r.events as f64 / wall.max(1e-9)
                );
                println!(
                    "faults injected: crashes {} · restarts {} · isolations {} · one-way cuts {} · clogged links {} · pauses {} · compactions {} · disk errors {} · records damaged {} (nodes replaced {})",
                    r.crashes,
                    r.restarts,
                    r.isolations,
                    r.one_way_cuts,
                    r.clogs,
                    r.pauses,
                    r.compactions,
                    r.disk_errors,
                    r.corruptions,
                    r.replaced
                );
                println!(
                    "raft: elections {} · snapshots sent {} · messages refused {}",
                    r.elections, r.snapshots, r.refused
                );
                println!(
                    "membership: joins {} · decommissions {} · removed {} · placements {} · membership steps {} · replicas dropped {} · metadata commands refused {}",
                    r.joins, r.decommissions, r.removed, r.placements, r.conf_steps, r.dropped, r.meta_refused
                );
                println!(
                    "clients: requests {} · orders filled {} · retries {} · answers lost and sent again {} · all answered, exactly once, linearizable",
                    r.requests, r.fills, r.retries, r.resent
                );
                println!(
                    "workflows: registered {} · onboarded (KYC, suitability) {} · erasures asked {} · erased {} (each unreadable everywhere after) · end-of-day statements {} · calls and effects sent again {}",
                    r.registered, r.onboarded, r.erasures_requested, r.erasures, r.statements, r.flow_retries
                );
                println!(
                    "advice: issued {} · accepted {} · orders filled {} · broker confirmations {}",
                    r.advised, r.advice_accepted, r.advice_orders, r.confirmations
                );
                println!("replay: {}", cluster_replay(cli, seed));
                println!("digest: {}", r.digest);
                if let Some(e) = &r.trace_error {
                    eprintln!("simulate: the run passed, but its trace could not be written: {e}");
                    return ExitCode::from(2);
                }
            }
            Ok(_) => {}
            Err(f) => {
                eprintln!("SIMULATION FAILED: seed {seed}, tick {}: {}", f.tick, f.message);
                eprintln!("replay: {}", cluster_replay(cli, seed));
                if cli.sweep.is_none() && !f.context.is_empty() {
                    eprintln!("the last events about it:");
                    for line in &f.context {
                        eprintln!("  {line}");
                    }
                }
                failed.push(seed);
                if cli.stop_on_failure {
                    println!("stopped at the first failing seed, {seed}");
                    return ExitCode::FAILURE;
                }
            }
        }
    }
    if let Some(p) = sweep {
        p.finish();
        println!("swept {seeds} seeds from {}: {} failed {:?}", cli.seed, failed.len(), failed);
    }
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// How far a sweep has got: a bar on a terminal; in a pipe or a log, a line on stderr at each
/// tenth of the seeds (a failing seed prints its own lines as it fails).
struct SweepProgress {
    seeds: u64,
    bar: Option<indicatif::ProgressBar>,
}

impl SweepProgress {
    fn new(seeds: u64) -> SweepProgress {
        let bar = std::io::IsTerminal::is_terminal(&std::io::stderr()).then(|| {
            let bar = indicatif::ProgressBar::new(seeds);
            bar.set_style(
                indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} seeds · {msg} · {elapsed} (eta {eta})")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar
        });
        SweepProgress { seeds, bar }
    }

    /// Called before each seed runs, with how many are done and how many of those failed.
    fn seed_done(&self, done: u64, failed: usize) {
        match &self.bar {
            Some(bar) => {
                bar.set_position(done);
                bar.set_message(format!("{failed} failed"));
            }
            None => {
                let step = (self.seeds / 10).max(1);
                if done > 0 && done.is_multiple_of(step) {
                    eprintln!("swept {done}/{} seeds, {failed} failed", self.seeds);
                }
            }
        }
    }

    fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}

/// A word as a POSIX shell reads it back: as it is when it holds only safe characters, else
/// in single quotes (the replay line is pasted into a shell).
fn shell_word(word: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c);
    if !word.is_empty() && word.chars().all(safe) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

fn replay_command(cli: &Cli, users: usize, days: u32) -> String {
    let mut line = match &cli.scenario {
        None => format!("cargo run --release --bin simulate -- --seed {} --users {users} --days {days}", cli.seed),
        Some(path) => format!(
            "cargo run --release --bin simulate -- --scenario {} --seed {} --users {users} --days {days}",
            shell_word(&path.display().to_string()),
            cli.seed
        ),
    };
    if cli.sabotage_journal {
        line += " --sabotage-journal";
    }
    line
}

/// Reads the scenario and applies the overrides; a bad file or override is a usage error that
/// names the file and the field.
fn load_scenario(cli: &Cli) -> Result<Option<scenario::Scenario>, String> {
    let Some(path) = &cli.scenario else { return Ok(None) };
    let symbols = sim::listed_symbols()?;
    let mut sc = scenario::Scenario::load(path, &symbols).map_err(|e| e.to_string())?;
    if let Some(users) = cli.users {
        scenario::check_users(users).map_err(|why| format!("--users {why}"))?;
        sc.users = users;
    }
    if let Some(days) = cli.days {
        if !(1..=scenario::DAYS_MAX).contains(&days) {
            return Err(format!("--days must be 1–{} with a scenario, got {days}", scenario::DAYS_MAX));
        }
        if let Some(i) = sc.shocks.iter().position(|s| s.end_step() > i64::from(days) * sim::STEPS_PER_DAY) {
            return Err(format!(
                "--days {days} ends before shock[{i}] of scenario file {} does (it starts on day {})",
                path.display(),
                sc.shocks[i].day
            ));
        }
        sc.days = days;
    }
    Ok(Some(sc))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = check_usage(&cli) {
        eprintln!("simulate: {e}");
        return ExitCode::from(2);
    }
    if cli.check_determinism {
        return check_determinism();
    }
    if cli.cluster {
        return run_cluster(&cli);
    }
    let scenario = match load_scenario(&cli) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("simulate: {e}");
            return ExitCode::from(2);
        }
    };
    // The plot's file is made before the run: a path that cannot be written is a usage error,
    // not a run's end.
    if let Some(path) = &cli.plot {
        if let Err(e) = std::fs::File::create(path) {
            eprintln!("simulate: cannot write the plot to {}: {e}", path.display());
            return ExitCode::from(2);
        }
    }
    let users = scenario.as_ref().map_or(cli.users.unwrap_or(DEFAULT_USERS), |s| s.users);
    let days = scenario.as_ref().map_or(cli.days.unwrap_or(DEFAULT_DAYS), |s| s.days);
    let replay = replay_command(&cli, users, days);

    // Domain invariants are assertions: name the seed and the step when one fires.
    let seed = cli.seed;
    let default_hook = std::panic::take_hook();
    let hook_replay = replay.clone();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        let (step, at) = sim::POSITION.with(|p| p.get());
        eprintln!("SIMULATION FAILED: seed {seed}, step {step} ({}): invariant panic: {info}", Timestamp(at));
        eprintln!("replay: {hook_replay}");
    }));

    println!("moneta deterministic simulation");
    println!("seed: {}", cli.seed);
    match &scenario {
        None => println!(
            "streams: market={} workload={} ids={} (ChaCha20, one key from the seed)",
            sim::STREAM_MARKET,
            sim::STREAM_WORKLOAD,
            sim::STREAM_IDS
        ),
        Some(sc) => {
            let path = cli.scenario.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
            println!("scenario: {} ({path}): {}", sc.name, sc.description);
            println!(
                "streams: market={} workload={} ids={} advice={} review={} (ChaCha20, one key from the seed)",
                sim::STREAM_MARKET,
                sim::STREAM_WORKLOAD,
                sim::STREAM_IDS,
                sim::STREAM_ADVICE,
                sim::STREAM_REVIEW
            );
        }
    }
    let args = sim::Args {
        seed: cli.seed,
        users,
        days: i64::from(days),
        sabotage_journal: cli.sabotage_journal,
        scenario,
    };
    let mut simulation = match sim::Sim::new(args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("SIMULATION FAILED: seed {}: cannot set up: {e}", cli.seed);
            return ExitCode::FAILURE;
        }
    };
    if let Err(f) = simulation.run() {
        eprintln!("SIMULATION FAILED: seed {}, step {} ({}): {}", cli.seed, f.step, f.at, f.message);
        eprintln!("replay: {replay}");
        return ExitCode::FAILURE;
    }
    print!("{}", simulation.summary());
    if let Some(adv) = &simulation.advisory {
        print!("{}", simulation.scenario_report());
        // The plot is made on every scenario run and its hash printed, so equal reports mean
        // equal plots; --plot only decides whether it is written.
        let svg = plot::svg(adv, cli.seed, i64::from(days));
        println!("plot: {} bytes, sha256 {}", svg.len(), hex::encode(Sha256::digest(svg.as_bytes())));
        if let Some(path) = &cli.plot {
            if let Err(e) = std::fs::write(path, svg.as_bytes()) {
                eprintln!("simulate: cannot write the plot to {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        }
    }
    println!("replay: {replay}");
    println!("digest: {}", simulation.digest());
    ExitCode::SUCCESS
}
