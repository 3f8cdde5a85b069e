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

// ---- Scenario runs: advised users of every risk band, market shocks, reports and plots. ----

/// Small enough for a debug build; the scenario's own days.
const SCENARIO_USERS: &str = "60";
const BANDS: [&str; 5] = ["conservative", "moderately_conservative", "balanced", "growth", "aggressive"];

fn scenario_file(name: &str) -> String {
    format!("{}/simulations/scenarios/{name}.toml", env!("CARGO_MANIFEST_DIR"))
}

/// Runs a scenario in its own process, writing the plot to `plot`; returns stdout.
fn run_scenario(name: &str, seed: u64, plot: &std::path::Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_simulate"))
        .args(["--scenario", &scenario_file(name), "--seed", &seed.to_string(), "--users", SCENARIO_USERS])
        .arg("--plot")
        .arg(plot)
        .output()
        .expect("the simulate binary runs");
    let stdout = String::from_utf8(out.stdout).expect("utf-8 stdout");
    assert!(
        out.status.success(),
        "scenario {name}, seed {seed} failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A minimal well-formedness check: every tag closes in order, one `svg` root, nothing after it.
fn assert_well_formed_svg(svg: &str) {
    let body = svg.strip_prefix("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n").expect("an XML declaration");
    assert!(body.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""), "an svg root");
    assert!(svg.ends_with("</svg>\n"));
    let mut stack: Vec<&str> = Vec::new();
    let mut rest = body;
    let mut roots = 0;
    while let Some(open) = rest.find('<') {
        let text = &rest[..open];
        assert!(!text.contains('>'), "stray markup: {text:?}");
        for (i, _) in text.match_indices('&') {
            assert!(
                ["&amp;", "&lt;", "&gt;", "&quot;"].iter().any(|e| text[i..].starts_with(e)),
                "a bare & in {text:?}"
            );
        }
        let close = rest[open..].find('>').expect("an unterminated tag") + open;
        let tag = &rest[open + 1..close];
        assert!(!tag.contains('<'), "a tag inside a tag: {tag:?}");
        if let Some(name) = tag.strip_prefix('/') {
            assert_eq!(stack.pop(), Some(name), "mismatched </{name}>");
        } else {
            let name = tag.split_whitespace().next().expect("a tag name").trim_end_matches('/');
            assert_eq!(tag.matches('"').count() % 2, 0, "unbalanced quotes in <{tag}>");
            if stack.is_empty() {
                roots += 1;
            }
            if !tag.ends_with('/') {
                stack.push(name);
            }
        }
        rest = &rest[close + 1..];
    }
    assert!(stack.is_empty(), "unclosed: {stack:?}");
    assert_eq!(roots, 1, "one root element");
    assert_eq!(rest.trim(), "", "nothing after the root");
}

/// Two processes, same seed: byte-identical report and plot; the plot has one polyline per band
/// (in each of its two panels) and the report names the scenario in its header and replay line.
fn scenario_is_reproducible(name: &str) -> (String, String) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (plot_a, plot_b) = (dir.path().join("a.svg"), dir.path().join("b.svg"));
    let first = run_scenario(name, 11, &plot_a);
    let second = run_scenario(name, 11, &plot_b);
    assert_eq!(first, second, "scenario {name}: same seed, different reports");
    digest(&first);
    let (svg_a, svg_b) = (std::fs::read(&plot_a).expect("plot written"), std::fs::read(&plot_b).expect("plot written"));
    assert!(svg_a == svg_b, "scenario {name}: same seed, different plots");
    let svg = String::from_utf8(svg_a).expect("utf-8 svg");
    assert_well_formed_svg(&svg);
    for band in BANDS {
        for class in ["value", "growth"] {
            let needle = format!("<polyline class=\"{class}\" data-band=\"{band}\"");
            assert_eq!(svg.matches(&needle).count(), 1, "one {class} polyline for {band}");
        }
    }
    assert_eq!(svg.matches("<polyline").count(), 2 * BANDS.len());
    let file = scenario_file(name);
    assert!(first.contains(&format!("scenario: {name} ({file})")), "the scenario is named:\n{first}");
    assert!(
        first.contains(&format!(
            "replay: cargo run --release --bin simulate -- --scenario {file} --seed 11 --users 60 --days "
        )),
        "the replay command names the scenario:\n{first}"
    );
    for band in BANDS {
        let line = band_line(&first, band);
        let members: usize = field(line, "members ").split('→').next().unwrap().parse().unwrap();
        assert_eq!(members, 12, "every band is populated evenly: {line}");
    }
    assert!(first.contains("review queue: max "), "{first}");
    assert!(first.contains(&format!("journal replay: {SCENARIO_USERS} accounts")), "{first}");
    (first, svg)
}

fn band_line<'a>(report: &'a str, band: &str) -> &'a str {
    let prefix = format!("band {band}: ");
    report
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no line for band {band}:\n{report}"))
}

/// The text after `name` up to the next `,` or `;`.
fn field<'a>(line: &'a str, name: &str) -> &'a str {
    let at = line.find(name).unwrap_or_else(|| panic!("no {name:?} in {line}")) + name.len();
    line[at..].split([',', ';']).next().unwrap().trim()
}

fn percent(text: &str) -> f64 {
    text.trim_end_matches('%').parse().unwrap_or_else(|_| panic!("not a percentage: {text:?}"))
}

#[test]
fn calm_week_scenario_is_reproducible() {
    let (report, _) = scenario_is_reproducible("calm_week");
    assert!(report.contains("shocks: none"), "{report}");
}

#[test]
fn flash_spike_scenario_is_reproducible() {
    let (report, _) = scenario_is_reproducible("flash_spike");
    assert!(report.contains("shock: day 1 16:30 for 3 min: +10.00%"), "{report}");
}

#[test]
fn crash_scenario_is_reproducible_and_every_band_holding_equities_loses() {
    let (report, svg) = scenario_is_reproducible("crash");
    assert!(svg.contains("class=\"shock\""), "the crash is shaded");
    let market = report
        .lines()
        .find(|l| l.starts_with("market (equal-weighted instruments): "))
        .expect("a market line");
    assert!(percent(field(market, "during the shocks ")) < -10.0, "{market}");
    assert!(percent(field(market, ": run ")) < 0.0, "{market}");
    // The bands whose model may hold equities (risk score 4 and up: no equity product has a
    // risk class below 4) hold them when the crash starts, and lose.
    let mut holding = 0;
    for band in BANDS {
        let line = band_line(&report, band);
        let exposure = percent(field(line, "equity exposure at the first shock "));
        if ["balanced", "growth", "aggressive"].contains(&band) {
            assert!(exposure > 20.0, "{band} holds equities when the crash starts: {line}");
        }
        if exposure > 0.0 {
            holding += 1;
            assert!(percent(field(line, "shock twr ")) < 0.0, "a band holding equities loses in the crash: {line}");
            assert!(percent(field(line, ", twr ")) < 0.0, "and over the run: {line}");
            assert!(percent(field(line, "max drawdown ")) > 0.0, "{line}");
        }
    }
    assert!(holding >= 3, "{report}");
    let all = report.lines().find(|l| l.starts_with("all advised: ")).expect("an all-advised line");
    assert!(percent(field(all, "shock twr ")) < 0.0, "{all}");
}

#[test]
fn bad_scenario_files_fail_naming_the_file_and_the_field() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let good = "name = \"t\"\ndays = 2\nusers = 10\n";
    let shock = |m: &str| format!("{good}[[shock]]\nday = 1\nstart_minute = 0\nduration_minutes = 10\nmove = {m}\nsymbols = \"all\"\n");
    let cases: Vec<(&str, String, &str)> = vec![
        ("unknown", format!("{good}colour = \"red\"\n"), "colour"),
        ("type", "name = \"t\"\ndays = \"two\"\nusers = 10\n".into(), "days"),
        ("missing", "name = \"t\"\ndays = 2\n".into(), "users"),
        ("syntax", "name = \"t\ndays = 2\n".into(), "(syntax)"),
        ("move", shock("-1.5"), "shock[0].move"),
        ("symbols", shock("0.1").replace("\"all\"", "[\"NOPE\"]"), "shock[0].symbols"),
        ("symbols_word", shock("0.1").replace("\"all\"", "\"some\""), "shock[0].symbols"),
        ("late", shock("0.1").replace("day = 1", "day = 2"), "shock[0].day"),
        ("users", "name = \"t\"\ndays = 2\nusers = 3\n".into(), "users"),
        (
            "behaviour",
            format!("{good}[behaviour]\nreject_per_mille = 1001\n"),
            "behaviour.reject_per_mille",
        ),
    ];
    for (name, text, field) in cases {
        let path = dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, text).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_simulate"))
            .arg("--scenario")
            .arg(&path)
            .output()
            .expect("the simulate binary runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: a usage error: {stderr}");
        let file = path.display().to_string();
        assert!(stderr.contains(&format!("bad scenario file {file}: field `{field}`")), "{name}: {stderr}");
        assert!(!stderr.contains("panicked"), "{name}: {stderr}");
        assert!(out.stdout.is_empty(), "{name}: nothing runs");
    }
    let missing = dir.path().join("missing.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_simulate")).arg("--scenario").arg(&missing).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains(&missing.display().to_string()), "{stderr}");
    // A plot needs a scenario.
    let out = Command::new(env!("CARGO_BIN_EXE_simulate")).args(["--plot", "x.svg"]).output().unwrap();
    assert!(!out.status.success());
}

fn cluster(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_simulate"))
        .arg("--cluster")
        .args(args)
        .output()
        .expect("run the simulate binary")
}

#[test]
fn cluster_runs_replay_from_their_seed_in_separate_processes() {
    let run = |seed: &str| {
        let out = cluster(&["--seed", seed]);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
        stdout
    };
    let (first, second, other) = (run("5"), run("5"), run("6"));
    assert_eq!(first, second, "the same seed gives the same report and digest");
    assert_ne!(digest(&first), digest(&other), "another seed, another run");
    // The seed and the drawn fault settings first, then the report and a replay line.
    let lines: Vec<&str> = first.lines().collect();
    assert_eq!(lines[1], "seed: 5");
    assert!(lines[2].starts_with("nodes "), "{first}");
    assert!(lines[3].starts_with("faults: loss "), "{first}");
    assert!(first.contains("all answered, exactly once, linearizable"), "{first}");
    assert!(first.contains("replay: cargo run --release --bin simulate -- --cluster --seed 5"), "{first}");
}

#[test]
fn the_cluster_liveness_phase_converges() {
    // A short safety phase leaves requests open: with the faults off and every node back, the
    // liveness phase answers them all and brings every replica to the same state.
    let out = cluster(&["--seed", "3", "--ticks", "200"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let ticks = stdout.lines().find(|l| l.starts_with("ticks: ")).expect("a ticks line");
    let liveness: u64 = ticks.split("(liveness ").nth(1).and_then(|r| r.split(')').next()).unwrap().parse().unwrap();
    assert!(liveness > 0, "the liveness phase had work to do: {ticks}");
}

#[test]
fn investors_register_and_are_erased_through_the_real_workflows_and_nothing_of_them_stays_readable() {
    // Production's registration, onboarding (KYC, suitability), erasure request and erasure
    // workflows run over the simulated cluster, crashes and all: every investor (six with
    // clients, one advised) registers from a random node and onboards (document verified and sealed, answers sealed), every third asks
    // to be erased, and the erasure job at each group's leader erases them after the grace
    // period. At the end every replica is checked: each profile opens under the data key its
    // group holds, as registered; of the erased, no data key anywhere, no sealed profile, the
    // email free. (A planted bug that skips the key's destruction is caught: tests/planted_bugs.rs.)
    for seed in ["9", "12"] {
        let out = cluster(&["--seed", seed, "--fault", "crash=0.004"]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
        let line = stdout.lines().find(|l| l.starts_with("workflows: ")).expect("a workflows line");
        assert!(
            line.contains("registered 7 ·") && line.contains("onboarded (KYC, suitability) 7 ·") && line.contains("erased 2 "),
            "seed {seed}: {line}"
        );
        let faults = stdout.lines().find(|l| l.starts_with("faults injected: ")).expect("a faults line");
        assert!(!faults.contains("crashes 0 "), "seed {seed}: the flows ran through crashes: {faults}");
    }
}

/// Operators at work under crashes and partitions: the flags of the busiest sweeps.
const OPERATORS_AT_WORK: [&str; 10] = [
    "--fault",
    "join=0.004",
    "--fault",
    "decommission=0.004",
    "--fault",
    "crash=0.004",
    "--fault",
    "isolate=0.006",
    "--fault",
    "one_way=0.006",
];

#[test]
fn an_erasure_request_retried_while_the_job_drops_its_first_schedule_is_not_lost() {
    // Seed 20185: a request to be erased wrote its schedule and died before the account recorded
    // it; the person asked again (writing a new schedule) while the job, finding the first one
    // due and the account unaware, dropped the schedule — deleting the new one just before the
    // account recorded the request. Nobody would have erased that person. The job now completes
    // an interrupted request instead of dropping it (`workflows::erasure`), and the run ends
    // with the person erased and unreadable everywhere.
    let mut args = vec!["--seed", "20185"];
    args.extend_from_slice(&OPERATORS_AT_WORK);
    let out = cluster(&args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("erased 2 "), "{stdout}");
}

#[test]
fn advice_is_given_and_accepted_through_the_real_workflows_and_a_retry_after_a_crash_places_its_orders() {
    // Seed 5018 with crashes: the advised investor's node went down after their account
    // recorded the acceptance and before the first order; the retry under the same
    // idempotency key was refused as "already accepted" and the orders were never placed. The
    // acceptance now goes under a request id of the key (`workflows::accept_advice`), and the
    // run ends with the advice accepted and its orders filled once, on every replica.
    let out = cluster(&["--seed", "5018", "--fault", "crash=0.008"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let advice = stdout.lines().find(|l| l.starts_with("advice: ")).expect("an advice line");
    assert!(advice.starts_with("advice: issued 1 · accepted 1 · orders filled "), "{advice}");
    assert!(!advice.contains("orders filled 0 "), "{advice}");
}

/// A count from the report's `membership:` line.
fn membership_count(stdout: &str, name: &str) -> u64 {
    let line = stdout.lines().find(|l| l.starts_with("membership: ")).expect("a membership line");
    line.split(" · ")
        .find_map(|part| part.trim_start_matches("membership: ").strip_prefix(name))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name:?} in {line}"))
}

#[test]
fn nodes_join_and_are_decommissioned_and_disks_fail_under_faults_while_the_planner_moves_replicas() {
    // Operators at work during the faults: nodes ask to join (the metadata admits them, their
    // processes start empty and are given replicas by snapshot), members are decommissioned
    // (drained by the planner, removed, their processes exit). Every check still holds, and the
    // liveness phase settles the membership: nothing joining or draining, every group's
    // configuration its placement.
    // Disks fail now and then too: a write error stops its node (the writer fails closed), a
    // read error fails a restart.
    let mut seen = (0, 0, 0, 0);
    let mut disk_errors = 0;
    for seed in ["21", "22", "23"] {
        let out = cluster(&[
            "--seed",
            seed,
            "--fault",
            "join=0.003",
            "--fault",
            "decommission=0.003",
            "--fault",
            "disk_error=0.003",
        ]);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
        assert!(stdout.contains("join 0.003/tick · decommission 0.003/tick · disk error 0.003/tick"), "{stdout}");
        let faults = stdout.lines().find(|l| l.starts_with("faults injected: ")).expect("a faults line");
        disk_errors += faults
            .split("disk errors ")
            .nth(1)
            .and_then(|n| n.split(' ').next())
            .and_then(|n| n.parse::<u64>().ok())
            .expect("disk errors counted");
        seen.0 += membership_count(&stdout, "joins");
        seen.1 += membership_count(&stdout, "removed");
        seen.2 += membership_count(&stdout, "membership steps");
        seen.3 += membership_count(&stdout, "replicas dropped");
    }
    let (joins, removed, steps, dropped) = seen;
    assert!(
        joins > 0 && removed > 0 && steps > 0 && dropped > 0,
        "joins {joins}, removed {removed}, steps {steps}, dropped {dropped}"
    );
    assert!(disk_errors > 0, "no disk error injected");
    // A sweep with the operators busier still: no seed fails.
    let out = cluster(&["--seed", "300", "--sweep", "20", "--fault", "join=0.004", "--fault", "decommission=0.004"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("swept 20 seeds from 300: 0 failed"), "{stdout}");
    // In a pipe (no terminal for a bar) the sweep says how far it got at each tenth.
    let stderr = String::from_utf8_lossy(&out.stderr);
    for done in [2, 10, 18] {
        assert!(stderr.contains(&format!("swept {done}/20 seeds, 0 failed")), "{stderr}");
    }
}

#[test]
fn a_record_damaged_at_rest_is_found_by_its_checksum_and_its_node_replaced() {
    // A damaged record stops its node from starting (never applied); the operators' runbook
    // adds a node when too few would be left and decommissions the damaged one, whose
    // replicas are rebuilt from the others. Every check holds and the liveness phase settles.
    let mut replaced = 0;
    for seed in ["1", "2"] {
        let out = cluster(&["--seed", seed, "--fault", "corrupt=0.003", "--fault", "crash=0.004"]);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
        let faults = stdout.lines().find(|l| l.starts_with("faults injected: ")).expect("a faults line");
        replaced += faults
            .rsplit("nodes replaced ")
            .next()
            .and_then(|n| n.trim_end_matches(')').parse::<u64>().ok())
            .expect("nodes replaced counted");
    }
    assert!(replaced > 0, "no node replaced");
}

#[test]
fn runs_that_once_ended_without_a_leader_or_unsettled_now_converge() {
    // Each of these ended its liveness phase unconverged before the fix named with it:
    // - a replica removed from its group was dropped while a voter of the new configuration
    //   still held the change uncommitted; that voter, campaigning under the old configuration,
    //   needed the dropped replica's vote once a node was lost for good (3039: drop only when
    //   the leader says every voter committed the change, `LedGroup::settled`);
    // - a leader that applied its own removal dropped itself at once, the same wedge (3350: it
    //   steps down and goes by the same rule);
    // - a node removed and added back in one leader term was promoted on an append response its
    //   dropped replica had sent, and never got a replica (10112: added back only in a later
    //   term, `Replica::returning`);
    // - two decommissions, each allowed alone, proposed together left too few nodes (20127: the
    //   metadata refuses the second, `MetaRefusal::TooSmall`);
    // - moves adding a dead node held every place among the moves in flight (20023), and the
    //   operators' runbook waited for a joining node whose disk was unreadable (3151).
    let busy: Vec<&str> = OPERATORS_AT_WORK.iter().copied().chain(["--fault", "corrupt=0.002"]).collect();
    let runs: [(&str, &[&str]); 6] = [
        ("3039", &["--fault", "corrupt=0.003", "--fault", "crash=0.004"]),
        ("3151", &["--fault", "corrupt=0.003", "--fault", "crash=0.004"]),
        ("3350", &["--fault", "corrupt=0.003", "--fault", "crash=0.004"]),
        ("10112", &["--fault", "join=0.003", "--fault", "decommission=0.003"]),
        ("20023", &busy),
        ("20127", &busy),
    ];
    for (seed, faults) in runs {
        let mut args = vec!["--seed", seed];
        args.extend_from_slice(faults);
        let out = cluster(&args);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "seed {seed}: {stdout}{}", String::from_utf8_lossy(&out.stderr));
        assert!(stdout.contains("all answered, exactly once, linearizable"), "seed {seed}: {stdout}");
    }
}

#[test]
fn a_planted_bug_is_found_by_a_seed_sweep_and_the_clean_code_passes_the_same_seeds() {
    // The planted bug: clients retry under new request ids and keys (a forgotten idempotency
    // record). Some seed of the sweep must catch it — a request applied twice — and name it.
    let out = cluster(&["--seed", "1", "--sweep", "20", "--sabotage-retries"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the planted bug went unnoticed over 20 seeds");
    assert!(stderr.contains("SIMULATION FAILED: seed "), "{stderr}");
    assert!(stderr.contains("applied twice or lost") || stderr.contains("not linearizable"), "{stderr}");
    assert!(stderr.contains("--sabotage-retries"), "the replay line reproduces it: {stderr}");
    let clean = cluster(&["--seed", "1", "--sweep", "20"]);
    assert!(
        clean.status.success(),
        "{}{}",
        String::from_utf8_lossy(&clean.stdout),
        String::from_utf8_lossy(&clean.stderr)
    );
    assert!(String::from_utf8_lossy(&clean.stdout).contains("swept 20 seeds from 1: 0 failed"));
}

/// A build without the test-only feature has no planted bugs to switch on.
#[cfg(not(feature = "planted-bugs"))]
#[test]
fn a_build_without_the_feature_refuses_to_plant_a_bug() {
    let out = cluster(&["--seed", "1", "--plant", "ack-before-commit"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("build with --features planted-bugs"));
}

#[test]
fn a_cluster_run_writes_its_trace_and_checks_its_own_determinism() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("trace.jsonl");
    let out = cluster(&[
        "--seed",
        "9",
        "--trace",
        path.to_str().unwrap(),
        "--fault",
        "crash=0.004",
        "--fault",
        "pause=0.01",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        stdout.contains("crash 0.004/tick") && stdout.contains("pause 0.01/tick"),
        "flags set the faults: {stdout}"
    );
    assert!(
        stdout.contains("--fault crash=0.004 --fault pause=0.01"),
        "the replay line keeps them: {stdout}"
    );
    let events: u64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("events: "))
        .expect("an events line")
        .parse()
        .unwrap();
    // Every event is one JSON object per line, as many as the report counts.
    let text = std::fs::read_to_string(&path).unwrap();
    let mut kinds = std::collections::BTreeSet::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v["tick"].is_u64(), "{line}");
        kinds.insert(v["kind"].as_str().unwrap().to_string());
    }
    assert_eq!(text.lines().count() as u64, events);
    for kind in ["crash", "restart", "pause", "role", "send", "apply", "answer"] {
        assert!(kinds.contains(kind), "no {kind} event in the trace: {kinds:?}");
    }
    // --check-determinism runs the same command in two processes and compares their digests.
    let out = cluster(&["--seed", "9", "--check-determinism"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("determinism: two processes, the same report and digest"), "{stdout}");
    // A bad fault setting is a usage error.
    let out = cluster(&["--seed", "9", "--fault", "crash=2"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--fault crash"));
}

/// Flags that do not fit together or are out of range are usage errors (exit 2, a message
/// naming the flag, nothing run), never a silent default, a panic or a failed run.
#[test]
fn flags_that_do_not_fit_are_usage_errors_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let missing_dir = dir.path().join("no-such-dir").join("t.jsonl");
    let plot = dir.path().join("no-such-dir").join("p.svg");
    let calm = scenario_file("calm_week");
    let cases: Vec<(Vec<String>, &str)> = vec![
        // Cluster flags without --cluster: clap's `requires` is skipped once --days conflicts
        // with --cluster, so these ran a market simulation and dropped the flag.
        (
            vec!["--users".into(), "5".into(), "--days".into(), "1".into(), "--nodes".into(), "3".into()],
            "--nodes",
        ),
        (vec!["--days".into(), "1".into(), "--sweep".into(), "2".into()], "--sweep"),
        (vec!["--days".into(), "1".into(), "--trace".into(), "x.jsonl".into()], "--trace"),
        (vec!["--days".into(), "1".into(), "--fault".into(), "crash=0.1".into()], "--fault"),
        (vec!["--scenario".into(), calm.clone(), "--ticks".into(), "10".into()], "--ticks"),
        // Ranges of a market run.
        (vec!["--users".into(), "0".into(), "--days".into(), "1".into()], "--users"),
        (vec!["--users".into(), "18446744073709551615".into(), "--days".into(), "1".into()], "--users"),
        (vec!["--users".into(), "5".into(), "--days".into(), "0".into()], "--days"),
        (vec!["--users".into(), "5".into(), "--days".into(), "4294967295".into()], "--days"),
        // A cluster run's.
        (vec!["--cluster".into(), "--ticks".into(), "0".into()], "--ticks"),
        (vec!["--cluster".into(), "--ticks".into(), "18446744073709551615".into()], "--ticks"),
        (
            vec!["--cluster".into(), "--fault".into(), "crash=0.5".into(), "--fault".into(), "crash=0".into()],
            "--fault crash is given twice",
        ),
        (vec!["--cluster".into(), "--trace".into(), missing_dir.display().to_string()], "--trace"),
        (vec!["--cluster".into(), "--nodes".into(), "0".into(), "--check-determinism".into()], "--nodes"),
        (
            vec![
                "--scenario".into(),
                calm,
                "--users".into(),
                "5".into(),
                "--days".into(),
                "1".into(),
                "--plot".into(),
                plot.display().to_string(),
            ],
            "cannot write the plot",
        ),
    ];
    for (args, named) in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_simulate")).args(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(named), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked") && !stderr.contains("SIMULATION FAILED"), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}: nothing ran: {}", String::from_utf8_lossy(&out.stdout));
    }
    // A trace that cannot be written while the run goes on is the file's error, not a failed
    // run: the report is printed, the exit code is a usage error's.
    if std::path::Path::new("/dev/full").exists() {
        let out = cluster(&["--seed", "3", "--ticks", "200", "--requests", "5", "--trace", "/dev/full"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("its trace could not be written"), "{stderr}");
        assert!(!stderr.contains("SIMULATION FAILED"), "{stderr}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("digest: "));
    }
}

/// The liveness phase's bound grows with the workload: a large valid one is not reported as
/// unconverged for want of time (600 requests a client once failed every seed tried).
#[test]
fn a_large_workload_gets_a_liveness_bound_to_match() {
    let out = cluster(&["--seed", "10", "--requests", "600"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("liveness ≤ 22200 ticks"), "{stdout}");
}

#[test]
fn a_replica_back_from_a_crash_with_its_groups_removal_unapplied_still_finds_a_quorum() {
    // Seed 20070: a leader removed a voter; the removed replica was let go once the leader and
    // the others had reported the change committed; then two voters crashed and came back
    // with the change in their logs but not applied (the round that applied it had not been
    // flushed), so they campaigned under the old configuration, which needed the removed
    // replica's vote; a third voter's disk failed, and the group had no leader for good. A
    // round that applies a configuration change is now flushed before its answers go, and a
    // leader counts itself settled only once it applied the change.
    let out = cluster(&[
        "--seed",
        "20070",
        "--ticks",
        "20000",
        "--fault",
        "join=0.003",
        "--fault",
        "decommission=0.003",
        "--fault",
        "corrupt=0.003",
        "--fault",
        "disk_error=0.002",
        "--fault",
        "crash=0.005",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
}
