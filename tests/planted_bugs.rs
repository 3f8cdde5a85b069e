//! The simulator proves it can fail: four classic mistakes, planted in the production code
//! the simulation runs (`src/planted.rs`, compiled in only with the test-only feature
//! `planted-bugs`), must each be found by a seed sweep within 200 seeds — and the same seeds
//! pass with no bug planted. A failing seed replays to the same failure in another process.
//!
//! Run with `cargo test --features planted-bugs --test planted_bugs` (what `.ci/run` does after
//! the rest of the suite).

use std::process::{Command, Output};

/// The most seeds a sweep may need to find a planted bug (the bound).
const SEEDS: u64 = 200;

fn simulate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_simulate"))
        .arg("--cluster")
        .args(args)
        .output()
        .expect("run the simulate binary")
}

/// The first failing seed and its failure line, from a sweep's stderr.
fn first_failure(stderr: &str) -> (u64, String) {
    let line = stderr
        .lines()
        .find(|l| l.starts_with("SIMULATION FAILED: seed "))
        .unwrap_or_else(|| panic!("no failure reported:\n{stderr}"));
    let seed = line["SIMULATION FAILED: seed ".len()..].split(',').next().unwrap().parse().unwrap();
    (seed, line.to_string())
}

#[test]
fn each_planted_bug_is_found_within_200_seeds_and_the_clean_code_passes_the_same_seeds() {
    let mut furthest = 1;
    for (bug, symptom) in [
        ("ack-before-commit", "reported applied but absent"),
        ("read-without-lease", "not linearizable"),
        ("forget-idempotency-on-restart", "differ from another replica"),
        ("erasure-keeps-data-key", "erased, yet its data key is there"),
    ] {
        let out = simulate(&["--seed", "1", "--sweep", &SEEDS.to_string(), "--stop-on-failure", "--plant", bug]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{bug}: went unnoticed over {SEEDS} seeds\n{stderr}");
        let (seed, failure) = first_failure(&stderr);
        assert!(seed <= SEEDS, "{bug}: found at seed {seed}");
        assert!(failure.contains(symptom), "{bug}: caught as {failure:?}, expected {symptom:?}");
        let replay = stderr.lines().find(|l| l.starts_with("replay: ")).expect("a replay line");
        assert!(
            replay.contains(&format!("--plant {bug}")) && replay.contains("--features planted-bugs"),
            "{replay}"
        );
        // The replay line's seed fails again, the same way, in another process.
        let again = simulate(&["--seed", &seed.to_string(), "--plant", bug]);
        assert!(!again.status.success());
        let again_err = String::from_utf8_lossy(&again.stderr);
        assert_eq!(first_failure(&again_err).1, failure, "{bug}: seed {seed} replays");
        // A single run's failure ends with the last events about the entity (or group) it concerns.
        let context = again_err
            .split("the last events about it:")
            .nth(1)
            .unwrap_or_else(|| panic!("{bug}: no context\n{again_err}"));
        assert!(context.lines().any(|l| l.trim_start().starts_with("{\"tick\":")), "{bug}: {again_err}");
        eprintln!("{bug}: found at seed {seed}: {failure}");
        furthest = furthest.max(seed);
    }
    // The same seeds with nothing planted: all pass.
    let clean = simulate(&["--seed", "1", "--sweep", &furthest.to_string()]);
    let stdout = String::from_utf8_lossy(&clean.stdout);
    assert!(clean.status.success(), "{stdout}{}", String::from_utf8_lossy(&clean.stderr));
    assert!(stdout.contains(&format!("swept {furthest} seeds from 1: 0 failed")), "{stdout}");
}

#[test]
fn an_unknown_bug_is_a_usage_error() {
    let out = simulate(&["--seed", "1", "--plant", "off-by-one"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown bug"));
}
