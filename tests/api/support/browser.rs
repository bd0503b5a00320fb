//! `BrowserScenario`: one scenario of `tests/browser/scenarios.mjs` (playwright-core driving
//! Debian's headless Chromium), run as a [`NodeProcess`]. The test owns the servers; the
//! script asks it, one line at a time, to act on them (stop or start an instance) and says
//! when it passed. Chromium and playwright-core are installed by `scripts/test`; when they
//! are missing the test fails and says so, it never skips.

use std::path::PathBuf;
use std::time::Duration;

use super::node::{NodeProcess, require_module};

/// A scenario that has not passed by then has failed (its own limit is a little shorter).
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(120);

/// What the script asks for or reports.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// `control:<what>`: do `what`, then call [`BrowserScenario::done`].
    Control(String),
    /// `passed:<scenario>`: the scenario passed and the script exited 0.
    Passed,
}

pub struct BrowserScenario {
    name: String,
    node: NodeProcess,
}

/// The Chromium binary: `$CHROMIUM`, or Debian's.
fn chromium() -> PathBuf {
    std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

/// Panics with what to do when Chromium or playwright-core is missing.
fn check_installed() {
    let chromium = chromium();
    assert!(
        chromium.exists(),
        "{} is missing: run scripts/test, which installs Debian's chromium package",
        chromium.display()
    );
    require_module("playwright-core");
}

impl BrowserScenario {
    /// Starts `node scenarios.mjs <name>` with `vars` in its environment.
    pub fn start(name: &str, vars: &[(&str, String)]) -> Self {
        check_installed();
        // The caller's variables come last, so they win.
        let mut all = vec![("CHROMIUM", chromium().display().to_string())];
        all.extend_from_slice(vars);
        let node = NodeProcess::start(
            &format!("browser scenario {name}"),
            "scenarios.mjs",
            &[name.to_owned()],
            &all,
            SCENARIO_TIMEOUT,
        );
        Self {
            name: name.to_owned(),
            node,
        }
    }

    /// The script's next request, or [`Step::Passed`]; panics when it fails or runs late.
    pub async fn next(&mut self) -> Step {
        loop {
            match self.node.next_line(SCENARIO_TIMEOUT).await {
                Some(line) if line.starts_with("control:") => {
                    return Step::Control(line["control:".len()..].to_owned());
                }
                Some(line) if line == format!("passed:{}", self.name) => {
                    let status = self.node.wait_exit().await;
                    assert!(
                        status.success(),
                        "the scenario said it passed, then exited {status}"
                    );
                    return Step::Passed;
                }
                Some(line) => eprintln!("[browser stdout] {line}"),
                None => {
                    let status = self.node.wait_exit().await;
                    panic!(
                        "browser scenario {} failed ({status}); its output is above",
                        self.name
                    );
                }
            }
        }
    }

    /// Tells the script its request `what` was carried out.
    pub fn done(&mut self, what: &str) {
        self.node.send_line(&format!("done:{what}"));
    }

    /// Runs a scenario that asks for nothing, to the end.
    pub async fn run(name: &str, vars: &[(&str, String)]) {
        let mut scenario = Self::start(name, vars);
        match scenario.next().await {
            Step::Passed => {}
            Step::Control(what) => {
                panic!("scenario {name} asked for {what:?}, which this test does not do")
            }
        }
    }
}
