//! `RedisServer`: a throw-away `redis-server` on a free loopback port, with no persistence, so a
//! restart comes back empty. It is killed on drop; `stop` and `start_again` (same port) let
//! fault tests take Redis away and bring it back under a running app. `start_replica_of` starts
//! one that replicates another (and comes back as its replica after `start_again`).

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a fresh `redis-server` may take to answer PING.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between two PING attempts while waiting for startup (a poll interval, not a wait).
const POLL_INTERVAL: Duration = Duration::from_millis(5);
/// Fresh ports to try when the one picked was taken between picking it and Redis binding it.
const PORT_ATTEMPTS: usize = 5;

pub struct RedisServer {
    port: u16,
    child: Option<Child>,
    /// Where a persistent server keeps its append-only file; `None`: nothing is kept.
    data_dir: Option<std::path::PathBuf>,
    /// Set by [`RedisServer::require_password`].
    password: Option<String>,
    /// The master's port, for a replica.
    replica_of: Option<u16>,
}

impl RedisServer {
    /// Starts `redis-server` on a free port and returns once it answers PING.
    pub fn start() -> Self {
        Self::start_with(None, None)
    }

    /// Starts a replica of `master` (no persistence) and returns once it answers PING; it
    /// may still be syncing (see [`RedisServer::replica_online`]).
    pub fn start_replica_of(master: &RedisServer) -> Self {
        Self::start_with(None, Some(master.port))
    }

    /// Whether this master has a replica whose sync is done (`INFO replication` says
    /// `state=online`).
    pub fn replica_online(&self) -> bool {
        self.command(&["INFO", "replication"])
            .lines()
            .any(|line| line.starts_with("slave") && line.contains("state=online"))
    }

    /// Like [`RedisServer::start`], but every write is fsynced to an append-only file, so a
    /// restart (`stop`, `start_again`) keeps everything Redis acknowledged.
    pub fn start_persistent() -> Self {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "chat-server-redis-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("creating the Redis data directory");
        Self::start_with(Some(dir), None)
    }

    fn start_with(data_dir: Option<std::path::PathBuf>, replica_of: Option<u16>) -> Self {
        let mut last_error = String::new();
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port();
            match launch(port, data_dir.as_deref(), replica_of) {
                Ok(child) => {
                    return Self {
                        port,
                        child: Some(child),
                        data_dir,
                        password: None,
                        replica_of,
                    };
                }
                // Most likely the port was taken in between: try another one.
                Err(err) => last_error = err,
            }
        }
        panic!("could not start redis-server after {PORT_ATTEMPTS} attempts: {last_error}");
    }

    /// `redis://127.0.0.1:<port>/`, for `REDIS_URL`.
    pub fn url(&self) -> String {
        match &self.password {
            Some(password) => format!("redis://:{password}@127.0.0.1:{}/", self.port),
            None => format!("redis://127.0.0.1:{}/", self.port),
        }
    }

    /// From now on clients must authenticate with `password` (the URL carries it).
    pub fn require_password(&mut self, password: &str) {
        self.command(&["CONFIG", "SET", "requirepass", password]);
        self.password = Some(password.to_owned());
    }

    /// Kills the server and waits until it is gone: the port refuses connections afterwards.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // An error here means it had already exited, which is what we want.
            let _already_gone = child.kill();
            child.wait().expect("waiting for redis-server to exit");
        }
    }

    /// Starts a new, empty server on the same port after [`RedisServer::stop`].
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "start_again while Redis still runs");
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            match launch(self.port, self.data_dir.as_deref(), self.replica_of) {
                Ok(child) => {
                    self.child = Some(child);
                    return;
                }
                Err(err) if Instant::now() >= deadline => {
                    panic!(
                        "could not restart redis-server on port {}: {err}",
                        self.port
                    )
                }
                // The old socket may linger for a moment; poll until the port is ours again.
                Err(_) => std::thread::sleep(POLL_INTERVAL),
            }
        }
    }

    /// Runs one command on a connection of its own (used to pause clients in fault tests).
    pub fn command(&self, args: &[&str]) -> String {
        self.query(args)
    }

    /// Runs one command whose reply is a list of strings.
    pub fn command_list(&self, args: &[&str]) -> Vec<String> {
        self.query(args)
    }

    fn query<T: redis::FromRedisValue>(&self, args: &[&str]) -> T {
        let mut connection = connect(self.port, self.password.as_deref())
            .expect("connecting to the test redis-server");
        let mut command = redis::cmd(args[0]);
        for arg in &args[1..] {
            command.arg(*arg);
        }
        command
            .query(&mut connection)
            .unwrap_or_else(|err| panic!("redis command {args:?} failed: {err}"))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        if let Some(dir) = &self.data_dir {
            // Best effort: a leftover directory in the temp dir harms nothing.
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A loopback port nobody listens on right now (bound and released; never 6379, the port a
/// developer's own Redis may use, since the OS hands out ephemeral ports only).
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
    let port = listener.local_addr().expect("local address").port();
    assert_ne!(port, 6379, "the OS picked 6379; refusing to touch it");
    port
}

/// Starts `redis-server` on `port` (a replica of `replica_of`'s, if given) and polls PING over
/// a real connection until it answers.
fn launch(
    port: u16,
    data_dir: Option<&std::path::Path>,
    replica_of: Option<u16>,
) -> Result<Child, String> {
    let mut command = Command::new("redis-server");
    command
        .args(["--port", &port.to_string()])
        .args(["--bind", "127.0.0.1"])
        .args(["--save", ""]);
    if let Some(master) = replica_of {
        command.args(["--replicaof", "127.0.0.1", &master.to_string()]);
    }
    match data_dir {
        Some(dir) => command
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .arg("--dir")
            .arg(dir),
        None => command
            .args(["--appendonly", "no"])
            .arg("--dir")
            .arg(std::env::temp_dir()),
    };
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|err| format!("cannot run redis-server (is it installed?): {err}"))?;
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().map_err(|err| err.to_string())? {
            return Err(format!("redis-server on port {port} exited: {status}"));
        }
        // The server's own process id, not only a PONG: another test's server may hold the
        // port (ours then exits, having failed to bind it, but maybe not yet).
        let answer = connect(port, None).and_then(|mut connection| {
            redis::cmd("INFO")
                .arg("server")
                .query::<String>(&mut connection)
        });
        if let Ok(info) = answer {
            if info_process_id(&info) == Some(child.id()) {
                return Ok(child);
            }
            let _ours_failed = child.kill();
            let _reaped = child.wait();
            return Err(format!("port {port} is another process's redis-server"));
        }
        if Instant::now() >= deadline {
            let _already_gone = child.kill();
            let _reaped = child.wait();
            return Err(format!(
                "redis-server on port {port} did not answer PING within {STARTUP_TIMEOUT:?}"
            ));
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// `process_id` from `INFO server`.
pub(super) fn info_process_id(info: &str) -> Option<u32> {
    info.lines()
        .find_map(|line| line.strip_prefix("process_id:"))
        .and_then(|id| id.trim().parse().ok())
}

fn connect(port: u16, password: Option<&str>) -> redis::RedisResult<redis::Connection> {
    let url = match password {
        Some(password) => format!("redis://:{password}@127.0.0.1:{port}/"),
        None => format!("redis://127.0.0.1:{port}/"),
    };
    let client = redis::Client::open(url)?;
    let connection = client.get_connection_with_timeout(Duration::from_millis(500))?;
    connection.set_read_timeout(Some(Duration::from_secs(2)))?;
    connection.set_write_timeout(Some(Duration::from_secs(2)))?;
    Ok(connection)
}
