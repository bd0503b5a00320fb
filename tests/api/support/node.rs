//! `NodeProcess`: a script of `tests/browser/` (the tests' Node setup, installed by
//! `scripts/test` with `npm ci`) run by node as a child process that the test talks to one
//! line at a time: lines to its stdin, its stdout's lines back through a channel. The
//! browser scenarios and the socket.io client driver both run this way.
//!
//! Node and a std thread (not tokio's process support) keep tokio's feature set the same for
//! the tests and the binary, so switching between `cargo build` and `cargo test` rebuilds
//! nothing. A missing node module fails the test and says what to run; it never skips.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

pub struct NodeProcess {
    label: String,
    child: Child,
    /// `None` once closed, which tells a script that reads its stdin to the end to finish.
    stdin: Option<ChildStdin>,
    lines: mpsc::UnboundedReceiver<String>,
    /// Past this, every wait on the process fails: it has run too long.
    deadline: Instant,
}

/// `tests/browser`, where the scripts and their `node_modules` are.
pub fn node_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// Panics with what to do when the node module `module` is not installed.
pub fn require_module(module: &str) {
    let manifest = node_dir()
        .join("node_modules")
        .join(module)
        .join("package.json");
    assert!(
        manifest.exists(),
        "{} is missing: run scripts/test, which runs `npm ci` in tests/browser",
        manifest.display()
    );
}

impl NodeProcess {
    /// Starts `node <script> <args…>` in `tests/browser` with `vars` in its environment; it
    /// must be done within `limit`. `label` names it in failures.
    pub fn start(
        label: &str,
        script: &str,
        args: &[String],
        vars: &[(&str, String)],
        limit: Duration,
    ) -> Self {
        let mut command = Command::new("node");
        command
            .arg(node_dir().join(script))
            .args(args)
            .current_dir(node_dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            // The script's progress and failures go to the test's own output.
            .stderr(Stdio::inherit());
        for (var, value) in vars {
            command.env(var, value);
        }
        let mut child = command
            .spawn()
            .unwrap_or_else(|err| panic!("running node (is it installed?) for {label}: {err}"));
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
            label: label.to_owned(),
            child,
            stdin: Some(stdin),
            lines,
            deadline: Instant::now() + limit,
        }
    }

    /// The next line the script printed, waiting at most `within` (and never past the
    /// process's limit); `None` when its stdout closed. Panics when time runs out.
    pub async fn next_line(&mut self, within: Duration) -> Option<String> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(within.min(left), self.lines.recv()).await {
            Ok(line) => line,
            Err(_) if within < left => {
                panic!("{}: nothing printed within {within:?}", self.label)
            }
            Err(_) => panic!("{} ran past its time limit", self.label),
        }
    }

    /// Writes one line to the script's stdin.
    pub fn send_line(&mut self, line: &str) {
        let stdin = self
            .stdin
            .as_mut()
            .unwrap_or_else(|| panic!("{}: stdin was already closed", self.label));
        writeln!(stdin, "{line}")
            .and_then(|()| stdin.flush())
            .unwrap_or_else(|err| panic!("writing to {}: {err}", self.label));
    }

    /// Closes the script's stdin (end of input).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Polls for the exit status, up to the process's limit; call once stdout is closed or
    /// stdin ended, when exit is imminent.
    pub async fn wait_exit(&mut self) -> ExitStatus {
        loop {
            if let Some(status) = self.child.try_wait().expect("polling node") {
                return status;
            }
            assert!(
                Instant::now() < self.deadline,
                "{} did not exit",
                self.label
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        // SIGKILL: whatever the script started (Chromium, over a pipe) ends with it.
        let _already_gone = self.child.kill();
        let _ = self.child.wait();
    }
}
