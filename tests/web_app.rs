//! The web app in a real browser: `tests/browser/suite.py` drives headless Chromium (Debian's
//! chromium and chromium-driver, through Selenium from PyPI) against this build's `moneta`
//! on a three-node cluster — an investor registers (with markup in the name, shown literally),
//! onboards, deposits, sees the chart, buys, gets held advice that a compliance officer
//! approves and accepts it, downloads the export; an admin sees all three nodes. Every page
//! passes axe-core with no serious or critical violation and raises no CSP violation.
//!
//! What it needs is installed when missing (`tests/browser/install`: apt-get as root, PyPI).
//! Screenshots of every page are written to `target/browser/` (CI artefacts, not committed).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The whole suite takes under a minute here; this bounds a hung browser or node.
const LIMIT: Duration = Duration::from_secs(15 * 60);

#[test]
fn the_web_app_works_end_to_end_in_headless_chromium() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let install = Command::new("bash").arg(root.join("tests/browser/install")).output().expect("running bash");
    assert!(
        install.status.success(),
        "tests/browser/install failed (it needs chromium, chromium-driver and Selenium):\n{}",
        String::from_utf8_lossy(&install.stderr)
    );
    let python = String::from_utf8_lossy(&install.stdout).lines().last().unwrap_or_default().trim().to_string();
    assert!(!python.is_empty(), "tests/browser/install did not name its python");

    // target/<profile>/moneta → target/browser
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_moneta"));
    let out = binary.parent().and_then(|p| p.parent()).expect("the target folder").join("browser");
    std::fs::create_dir_all(&out).unwrap();
    let log_path = out.join("suite.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = Command::new(&python)
        .arg("suite.py")
        .arg("--moneta")
        .arg(binary)
        .arg("--out")
        .arg(&out)
        .current_dir(root.join("tests/browser"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("starting the browser suite");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > LIMIT {
            // SIGTERM first: the suite stops its browser and nodes on the way out.
            let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
            std::thread::sleep(Duration::from_secs(10));
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let report = std::fs::read_to_string(&log_path).unwrap_or_default();
    eprintln!("{report}");
    match status {
        Some(s) => assert!(s.success(), "the browser suite failed ({s}); see above and {}", out.display()),
        None => panic!("the browser suite did not finish within {LIMIT:?}"),
    }
    assert!(report.contains("[browser] PASS"), "the suite exited 0 without passing");
    let shots = std::fs::read_dir(&out)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "png"))
        .count();
    assert!(shots >= 15, "only {shots} screenshots in {}", out.display());
}
