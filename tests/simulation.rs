//! The deterministic simulation must be reproducible across processes: the same seed prints the
//! same digest (and the same report), a different seed a different one, and a broken invariant
//! exits non-zero naming the seed.

use std::process::{Command, Output};

const SIZE: [&str; 4] = ["--users", "50", "--days", "1"];

fn simulate(seed: u64, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_simulate"))
        .args(["--seed", &seed.to_string()])
        .args(SIZE)
        .args(extra)
        .output()
        .expect("the simulate binary runs")
}

/// Runs a passing simulation and returns its stdout.
fn passing(seed: u64) -> String {
    let out = simulate(seed, &[]);
    let stdout = String::from_utf8(out.stdout).expect("utf-8 stdout");
    assert!(out.status.success(), "seed {seed} failed: {}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    stdout
}

fn digest(stdout: &str) -> &str {
    let last = stdout.lines().last().expect("some output");
    let hex = last.strip_prefix("digest: ").unwrap_or_else(|| panic!("last line is not the digest: {last:?}"));
    assert!(
        hex.len() == 64 && hex.bytes().all(|c| c.is_ascii_hexdigit()),
        "not a SHA-256 hex digest: {hex:?}"
    );
    hex
}

#[test]
fn same_seed_same_digest_in_separate_processes() {
    let first = passing(7);
    let second = passing(7);
    assert_eq!(digest(&first), digest(&second));
    // No wall-clock time or other nondeterminism leaks into the report either.
    assert_eq!(first, second);
    assert!(first.lines().any(|l| l == "seed: 7"), "the seed is printed:\n{first}");
    assert!(
        first.contains("cargo run --release --bin simulate -- --seed 7 --users 50 --days 1"),
        "the replay command is printed:\n{first}"
    );
    assert!(first.contains("journal replay: 50 portfolios"), "{first}");
}

#[test]
fn different_seed_different_digest() {
    let a = passing(7);
    let b = passing(8);
    assert_ne!(digest(&a), digest(&b));
    assert!(b.lines().any(|l| l == "seed: 8"));
}

#[test]
fn a_broken_invariant_fails_naming_the_seed() {
    let out = simulate(7, &["--sabotage-journal"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a corrupted journal must fail the replay check");
    assert!(stderr.contains("SIMULATION FAILED: seed 7, step "), "{stderr}");
    assert!(stderr.contains("--seed 7 --users 50 --days 1"), "{stderr}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("digest:"), "no digest for a failed run");
}
