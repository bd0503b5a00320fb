//! `ServerProcess`: the real `chat-server` binary as a child process, for the tests that must
//! kill an instance outright or send it SIGTERM. Configured only through its environment, as
//! in a container.

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::eventually;

const STARTUP_TIMEOUT: Duration = Duration::from_secs(15);

pub struct ServerProcess {
    child: Child,
    pub base_url: String,
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
        let log = std::fs::File::create(&log_path).expect("creating the server log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_chat-server"));
        command
            .env_clear()
            .env("HOST", "127.0.0.1")
            .env("PORT", port.to_string())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("cloning the log handle"))
            .stderr(log);
        for (name, value) in vars {
            command.env(name, value);
        }
        let child = command.spawn().expect("starting chat-server");
        let server = Self {
            child,
            base_url: format!("http://127.0.0.1:{port}"),
            log_path,
        };
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .expect("HTTP client");
        let url = format!("{}/readyz", server.base_url);
        eventually("the server process to be ready", STARTUP_TIMEOUT, || {
            let request = client.get(&url).send();
            async move {
                match request.await {
                    Ok(response) if response.status() == 200 => Some(()),
                    _ => None,
                }
            }
        })
        .await;
        server
    }

    /// SIGKILL: the instance dies without a chance to clean anything up.
    pub fn kill(&mut self) {
        let _already_gone = self.child.kill();
        self.child.wait().expect("waiting for the killed server");
    }

    /// Sends SIGTERM and waits (up to `limit`) for the process to exit; returns its status
    /// and how long it took.
    pub async fn terminate(&mut self, limit: Duration) -> (ExitStatus, Duration) {
        let started = Instant::now();
        let sent = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .expect("running kill");
        assert!(sent.success(), "kill -TERM failed");
        loop {
            if let Some(status) = self.child.try_wait().expect("polling the server process") {
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
        let _already_gone = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log_path);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("finding a free port")
}
