//! `ServerProcess`: the real `chat-server` binary as a child process, for the tests that must
//! kill an instance outright, send it SIGTERM, or restart it on the same port (as a platform
//! restarts an instance under the same address). Configured only through its environment, as
//! in a container.

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::eventually;

const STARTUP_TIMEOUT: Duration = Duration::from_secs(15);

pub struct ServerProcess {
    child: Option<Child>,
    pub base_url: String,
    port: u16,
    /// The configuration it was started with, for `start_again`.
    vars: Vec<(String, String)>,
    /// Everything the process wrote to stdout and stderr.
    pub log_path: PathBuf,
}

impl ServerProcess {
    /// Starts the binary on a free loopback port with `vars` as its whole configuration and
    /// returns once `/readyz` answers 200.
    pub async fn start(vars: &[(&str, &str)]) -> Self {
        let port = free_port();
        let log_path = std::env::temp_dir().join(format!(
            "chat-server-test-{}-{port}.log",
            std::process::id()
        ));
        let mut server = Self {
            child: None,
            base_url: format!("http://127.0.0.1:{port}"),
            port,
            vars: vars
                .iter()
                .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
                .collect(),
            log_path,
        };
        server.spawn(false);
        server.wait_ready().await;
        server
    }

    /// Starts the binary again on the same port, after [`ServerProcess::kill`] or
    /// [`ServerProcess::terminate`], and returns once it is ready. Its log is appended to.
    pub async fn start_again(&mut self) {
        assert!(
            self.child.is_none(),
            "start_again while the server still runs"
        );
        self.spawn(true);
        self.wait_ready().await;
    }

    fn spawn(&mut self, append_log: bool) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(append_log)
            .truncate(!append_log)
            .open(&self.log_path)
            .expect("opening the server log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_chat-server"));
        command
            .env_clear()
            .env("HOST", "127.0.0.1")
            .env("PORT", self.port.to_string())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("cloning the log handle"))
            .stderr(log);
        for (name, value) in &self.vars {
            command.env(name, value);
        }
        self.child = Some(command.spawn().expect("starting chat-server"));
    }

    async fn wait_ready(&mut self) {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .expect("HTTP client");
        let url = format!("{}/readyz", self.base_url);
        let child = self.child.as_mut().expect("the server was started");
        eventually("the server process to be ready", STARTUP_TIMEOUT, || {
            // A process that exited (say, the port was not free yet) will never be ready.
            if let Ok(Some(status)) = child.try_wait() {
                panic!("chat-server exited before it was ready: {status}");
            }
            let request = client.get(&url).send();
            async move {
                match request.await {
                    Ok(response) if response.status() == 200 => Some(()),
                    _ => None,
                }
            }
        })
        .await;
    }

    /// The running process's id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("pid of a running server").id()
    }

    /// SIGKILL: the instance dies without a chance to clean anything up.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _already_gone = child.kill();
            child.wait().expect("waiting for the killed server");
        }
    }

    /// Sends SIGTERM and waits (up to `limit`) for the process to exit; returns its status
    /// and how long it took.
    pub async fn terminate(&mut self, limit: Duration) -> (ExitStatus, Duration) {
        let started = Instant::now();
        let pid = self.pid();
        let sent = Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .expect("running kill");
        assert!(sent.success(), "kill -TERM failed");
        loop {
            let child = self.child.as_mut().expect("the server is running");
            if let Some(status) = child.try_wait().expect("polling the server process") {
                self.child = None;
                return (status, started.elapsed());
            }
            assert!(
                started.elapsed() < limit,
                "the server did not exit within {limit:?} of SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Everything the process logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _already_gone = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(&self.log_path);
    }
}

/// Runs a child to completion with a time limit (polling its exit); returns its output.
pub fn run_with_limit(mut command: Command, limit: Duration) -> (std::process::ExitStatus, String) {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting the command");
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("polling the command") {
            let output = child.wait_with_output().expect("reading the output");
            let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&output.stderr));
            return (status, text);
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let output = child.wait_with_output().expect("reading the output");
            panic!(
                "command did not finish within {limit:?}; output: {}",
                String::from_utf8_lossy(&output.stdout)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A loopback port free at the time of asking.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("finding a free port")
}
