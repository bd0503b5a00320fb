//! `BrowserScenario`: one scenario of `tests/browser/scenarios.mjs` (playwright-core driving
//! Debian's headless Chromium) as a child process. The test owns the servers; the script
//! asks it, one line at a time, to act on them (stop or start an instance) and says when it
//! passed.
//!
//! Node and a std thread (not tokio's process support) keep tokio's feature set the same for
//! the tests and the binary, so switching between `cargo build` and `cargo test` rebuilds
//! nothing. Chromium and playwright-core are installed by `scripts/test`; when they are
//! missing the test fails and says so, it never skips.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

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
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::UnboundedReceiver<String>,
    deadline: Instant,
}

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// The Chromium binary: `$CHROMIUM`, or Debian's.
fn chromium() -> PathBuf {
    std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

/// Panics with what to do when Chromium, node or playwright-core is missing.
fn check_installed() {
    let chromium = chromium();
    assert!(
        chromium.exists(),
        "{} is missing: run scripts/test, which installs Debian's chromium package",
        chromium.display()
    );
    let playwright = browser_dir().join("node_modules/playwright-core/package.json");
    assert!(
        playwright.exists(),
        "{} is missing: run scripts/test, which runs `npm ci` in tests/browser",
        playwright.display()
    );
}

impl BrowserScenario {
    /// Starts `node scenarios.mjs <name>` with `vars` in its environment.
    pub fn start(name: &str, vars: &[(&str, String)]) -> Self {
        check_installed();
        let mut command = Command::new("node");
        command
            .arg(browser_dir().join("scenarios.mjs"))
            .arg(name)
            .current_dir(browser_dir())
            .env("CHROMIUM", chromium())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            // The script's progress and failures go to the test's own output.
            .stderr(Stdio::inherit());
        for (var, value) in vars {
            command.env(var, value);
        }
        let mut child = command
            .spawn()
            .expect("running node (is it installed?) for the browser scenario");
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let (sender, lines) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            name: name.to_owned(),
            child,
            stdin,
            lines,
            deadline: Instant::now() + SCENARIO_TIMEOUT,
        }
    }

    /// The script's next request, or [`Step::Passed`]; panics when it fails or runs late.
    pub async fn next(&mut self) -> Step {
        loop {
            let left = self.deadline.saturating_duration_since(Instant::now());
            let line = match tokio::time::timeout(left, self.lines.recv()).await {
                Ok(line) => line,
                Err(_) => panic!(
                    "browser scenario {} did not finish within {SCENARIO_TIMEOUT:?}",
                    self.name
                ),
            };
            match line {
                Some(line) if line.starts_with("control:") => {
                    return Step::Control(line["control:".len()..].to_owned());
                }
                Some(line) if line == format!("passed:{}", self.name) => {
                    let status = self.wait_exit().await;
                    assert!(
                        status.success(),
                        "the scenario said it passed, then exited {status}"
                    );
                    return Step::Passed;
                }
                Some(line) => eprintln!("[browser stdout] {line}"),
                None => {
                    let status = self.wait_exit().await;
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
        writeln!(self.stdin, "done:{what}")
            .and_then(|()| self.stdin.flush())
            .expect("writing to the browser scenario");
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

    /// Polls for the exit status; stdout is closed by now, so exit is imminent.
    async fn wait_exit(&mut self) -> std::process::ExitStatus {
        loop {
            if let Some(status) = self.child.try_wait().expect("polling node") {
                return status;
            }
            assert!(
                Instant::now() < self.deadline,
                "browser scenario {} did not exit",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for BrowserScenario {
    fn drop(&mut self) {
        // SIGKILL: Chromium, talking to node over a pipe, exits when the pipe closes.
        let _already_gone = self.child.kill();
        let _ = self.child.wait();
    }
}
