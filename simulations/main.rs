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
//! `cargo run --release --bin simulate -- --seed 42 --users 1000 --days 5`

#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

mod oracle;
mod sim;
mod workload;

use clap::Parser;
use moneta::domain::time::Timestamp;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(name = "simulate", about = "Deterministic simulation of the Moneta domain core")]
struct Cli {
    /// The seed of every random stream in the run.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Number of simulated users (one portfolio each).
    #[arg(long, default_value_t = 1000)]
    users: usize,
    /// Number of simulated trading days (390 one-minute steps each).
    #[arg(long, default_value_t = 5)]
    days: u32,
    /// Test hook: corrupt one journal entry before the final replay check, which must then fail.
    #[arg(long, hide = true)]
    sabotage_journal: bool,
}

fn replay_command(cli: &Cli) -> String {
    format!(
        "cargo run --release --bin simulate -- --seed {} --users {} --days {}",
        cli.seed, cli.users, cli.days
    )
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let replay = replay_command(&cli);

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
    println!(
        "streams: market={} workload={} ids={} (ChaCha20, one key from the seed)",
        sim::STREAM_MARKET,
        sim::STREAM_WORKLOAD,
        sim::STREAM_IDS
    );
    let args = sim::Args {
        seed: cli.seed,
        users: cli.users,
        days: i64::from(cli.days),
        sabotage_journal: cli.sabotage_journal,
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
    println!("replay: {replay}");
    println!("digest: {}", simulation.digest());
    ExitCode::SUCCESS
}
