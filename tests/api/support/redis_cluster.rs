//! `RedisCluster`: a throw-away Redis Cluster of 3 masters and 3 replicas (`redis-server
//! --cluster-enabled yes`, joined by `redis-cli --cluster create --cluster-replicas 1`) on free
//! loopback ports, without persistence. Every node is killed on drop. Starting one takes a
//! few seconds, so a test starts one and runs several checks on it (on distinct rooms), and
//! the conformance tests' `cluster` variants share one per test run ([`SharedCluster`]).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

use super::redis_server::info_process_id;
use std::time::{Duration, Instant};

/// How long the nodes may take to answer PING, and the cluster to say `cluster_state:ok`.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause between two polls while waiting (a poll interval, not a wait).
const POLL_INTERVAL: Duration = Duration::from_millis(20);
const NODES: usize = 6;
/// Fresh starts (new ports) after one did not come up: a port picked may be taken by another
/// test's connection before its node binds it.
const START_ATTEMPTS: usize = 3;
/// How long a master may be unreachable before its replica is promoted: short, for the
/// failover test.
const NODE_TIMEOUT_MS: &str = "1000";
/// Redis's CLUSTER_MF_TIMEOUT (5 s), and a second for the replica to say how it ended.
const MANUAL_FAILOVER_TIMEOUT: Duration = Duration::from_secs(6);

pub struct RedisCluster {
    nodes: Vec<Node>,
    dir: PathBuf,
}

struct Node {
    port: u16,
    child: Option<Child>,
}

impl RedisCluster {
    /// Starts six nodes, joins them into a cluster and returns once every node says
    /// `cluster_state:ok` and knows all six.
    pub fn start() -> Self {
        let mut failures = Vec::new();
        for _ in 0..START_ATTEMPTS {
            match Self::try_start() {
                Ok(cluster) => return cluster,
                // The partial cluster was dropped (its nodes killed): try on fresh ports.
                Err(err) => failures.push(err),
            }
        }
        panic!("no Redis Cluster after {START_ATTEMPTS} attempts: {failures:?}");
    }

    fn try_start() -> Result<Self, String> {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "chat-server-redis-cluster-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).map_err(|err| format!("creating {dir:?}: {err}"))?;
        let mut cluster = Self {
            nodes: Vec::new(),
            dir,
        };
        let ports = free_ports(NODES * 2);
        for pair in ports.chunks(2) {
            let child = launch(pair[0], pair[1], &cluster.dir);
            cluster.nodes.push(Node {
                port: pair[0],
                child: Some(child),
            });
        }
        for node in &mut cluster.nodes {
            node.wait_answers()?;
        }
        let addresses: Vec<String> = cluster
            .nodes
            .iter()
            .map(|node| format!("127.0.0.1:{}", node.port))
            .collect();
        let output = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .map_err(|err| format!("running redis-cli --cluster create: {err}"))?;
        if !output.status.success() {
            return Err(format!(
                "redis-cli --cluster create failed: {}",
                String::from_utf8_lossy(&output.stdout)
            ));
        }
        for node in &cluster.nodes {
            wait_until(&format!("node {} sees the cluster ok", node.port), || {
                Ok(
                    query::<String>(node.port, &["CLUSTER", "INFO"]).is_ok_and(|info| {
                        info.contains("cluster_state:ok") && info.contains("cluster_known_nodes:6")
                    }),
                )
            })?;
        }
        wait_until("three masters, each with a replica", || {
            Ok(cluster.masters().len() == 3 && cluster.replicas().len() == 3)
        })?;
        // A replica says its role at once but holds its master's data only once its first
        // full sync is done: until then a failover would promote an empty node.
        wait_until("every replica in sync with its master", || {
            Ok(cluster
                .replicas()
                .into_iter()
                .all(|port| cluster.replica_synced(port)))
        })?;
        Ok(cluster)
    }

    /// `REDIS_URL` for the app: every node, comma-separated (seeds).
    pub fn url(&self) -> String {
        self.nodes
            .iter()
            .map(|node| format!("redis://127.0.0.1:{}/", node.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The environment an app needs to run on this cluster.
    pub fn app_vars(&self) -> Vec<(String, String)> {
        vec![
            ("REDIS_URL".to_owned(), self.url()),
            ("REDIS_CLUSTER".to_owned(), "true".to_owned()),
        ]
    }

    /// Ports of the running nodes whose `ROLE` is master.
    pub fn masters(&self) -> Vec<u16> {
        self.with_role("master")
    }

    /// Ports of the running nodes whose `ROLE` is a replica.
    pub fn replicas(&self) -> Vec<u16> {
        self.with_role("slave")
    }

    fn with_role(&self, role: &str) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|node| node.child.is_some())
            .filter(|node| {
                query::<redis::Value>(node.port, &["ROLE"]).is_ok_and(|value| match value {
                    redis::Value::Array(items) => items.first().is_some_and(|first| {
                        redis::from_redis_value_ref::<String>(first).is_ok_and(|r| r == role)
                    }),
                    _ => false,
                })
            })
            .map(|node| node.port)
            .collect()
    }

    /// Whether the replica at `port` has finished its sync with its master and is connected to
    /// it (`master_link_status:up`, set once the master's snapshot is loaded).
    pub fn replica_synced(&self, port: u16) -> bool {
        query::<String>(port, &["INFO", "replication"]).is_ok_and(|info| {
            info.lines().any(|line| line.trim() == "role:slave")
                && info
                    .lines()
                    .any(|line| line.trim() == "master_link_status:up")
        })
    }

    /// Waits until the replica of the master at `port` has acknowledged every write the master
    /// has made (its acknowledged offset is the master's).
    pub fn wait_replica_caught_up(&self, master: u16) {
        wait_until(&format!("master {master}'s replica catches up"), || {
            let info: String =
                query(master, &["INFO", "replication"]).map_err(|err| err.to_string())?;
            let field = |name: &str| {
                info.lines()
                    .find_map(|line| line.strip_prefix(name))
                    .map(|value| value.trim().to_owned())
            };
            let offset = field("master_repl_offset:").ok_or("no replication offset")?;
            Ok(field("slave0:")
                .is_some_and(|replica| replica.contains(&format!("offset={offset},"))))
        })
        .unwrap_or_else(|err| panic!("{err}"));
    }

    /// Stops the node at `port` (`SIGSTOP`): it neither answers nor receives its master's
    /// writes until [`Self::thaw`], as a replica cut off from its master would.
    pub fn freeze(&self, port: u16) {
        self.signal(port, "-STOP");
    }

    /// Lets a node stopped by [`Self::freeze`] run again (`SIGCONT`).
    pub fn thaw(&self, port: u16) {
        self.signal(port, "-CONT");
    }

    fn signal(&self, port: u16, signal: &str) {
        let pid = self
            .nodes
            .iter()
            .find(|node| node.port == port)
            .and_then(Node::pid)
            .expect("a running node of this cluster");
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .expect("running kill");
        assert!(status.success(), "kill {signal} {pid} failed");
    }

    /// Runs one command on the node at `port`; panics if it fails.
    pub fn command<T: redis::FromRedisValue>(&self, port: u16, args: &[&str]) -> T {
        query(port, args).unwrap_or_else(|err| panic!("{args:?} on node {port} failed: {err}"))
    }

    /// Runs one command on the replica at `port` as a read of its own data (`READONLY` first,
    /// on the same connection, or the replica would redirect to its master); panics if it fails.
    pub fn replica_command<T: redis::FromRedisValue>(&self, port: u16, args: &[&str]) -> T {
        self.replica_query(port, args)
            .unwrap_or_else(|err| panic!("{args:?} on replica {port} failed: {err}"))
    }

    /// [`RedisCluster::replica_command`], failing instead of panicking (a replica that does
    /// not know yet that its master took a slot redirects with MOVED).
    pub fn replica_query<T: redis::FromRedisValue>(
        &self,
        port: u16,
        args: &[&str],
    ) -> redis::RedisResult<T> {
        query_after(port, &["READONLY"], args)
    }

    /// Moves hash slot `slot`, keys and all, from the master at `from` to the master at `to`,
    /// as a resharding does: `IMPORTING` / `MIGRATING`, `MIGRATE` of its keys, then `SETSLOT
    /// NODE` on the destination, the source and the other masters. Clients that knew the old
    /// owner are answered MOVED by it from then on.
    pub fn move_slot(&self, slot: u16, from: u16, to: u16) {
        let slot = slot.to_string();
        let from_id: String = self.command(from, &["CLUSTER", "MYID"]);
        let to_id: String = self.command(to, &["CLUSTER", "MYID"]);
        let () = self.command(to, &["CLUSTER", "SETSLOT", &slot, "IMPORTING", &from_id]);
        let () = self.command(from, &["CLUSTER", "SETSLOT", &slot, "MIGRATING", &to_id]);
        let to_port = to.to_string();
        loop {
            let keys: Vec<String> = self.command(from, &["CLUSTER", "GETKEYSINSLOT", &slot, "100"]);
            if keys.is_empty() {
                break;
            }
            let mut migrate = vec!["MIGRATE", "127.0.0.1", &to_port, "", "0", "5000", "KEYS"];
            migrate.extend(keys.iter().map(String::as_str));
            let () = self.command(from, &migrate);
        }
        let mut masters = self.masters();
        masters.sort_by_key(|port| (*port != to, *port != from));
        for master in masters {
            let () = self.command(master, &["CLUSTER", "SETSLOT", &slot, "NODE", &to_id]);
        }
    }

    /// Kills the node at `port` (as a crash would: no goodbye to the cluster), and keeps its
    /// port: another test's fresh, empty `redis-server` must not start there, where clients
    /// still looking for the dead node would run their scripts on it. Connections to the port
    /// are refused from now on (accepted and closed at once) for the rest of the test process.
    pub fn kill(&mut self, port: u16) {
        let node = self.node_mut(port);
        node.stop();
        let listener = TcpListener::bind(("127.0.0.1", port))
            .unwrap_or_else(|err| panic!("keeping the dead node's port {port}: {err}"));
        std::thread::spawn(move || {
            for connection in listener.incoming() {
                drop(connection);
            }
        });
    }

    /// Waits until the cluster has promoted replicas for every killed master: three masters
    /// answer and one of them says `cluster_state:ok`.
    pub fn wait_for_failover(&self) {
        wait_until("a replica promoted and the cluster ok", || {
            let masters = self.masters();
            Ok(masters.len() == 3
                && masters.iter().all(|port| {
                    query::<String>(*port, &["CLUSTER", "INFO"])
                        .is_ok_and(|info| info.contains("cluster_state:ok"))
                }))
        })
        .unwrap_or_else(|err| panic!("{err}"));
    }

    /// The id of the node at `port`.
    pub fn node_id(&self, port: u16) -> String {
        self.command(port, &["CLUSTER", "MYID"])
    }

    /// The slot of `key`.
    pub fn key_slot(&self, key: &str) -> u16 {
        let port = self
            .nodes
            .iter()
            .find(|node| node.child.is_some())
            .expect("a node")
            .port;
        self.command(port, &["CLUSTER", "KEYSLOT", key])
    }

    /// The port of the running replica of the master at `port`.
    pub fn replica_of(&self, master: u16) -> u16 {
        let needle = format!("master_port:{master}\r\n");
        self.replicas()
            .into_iter()
            .find(|port| {
                query::<String>(*port, &["INFO", "replication"])
                    .is_ok_and(|info| info.contains(&needle))
            })
            .unwrap_or_else(|| panic!("no replica of master {master}"))
    }

    /// The first half of moving `slot` from master `from` to master `to`, as `redis-cli
    /// --cluster reshard` does it: the slot importing on `to` and migrating on `from`, whose
    /// commands on keys already moved are answered ASK from now on.
    pub fn begin_slot_move(&self, slot: u16, from: u16, to: u16) {
        let slot = slot.to_string();
        let _: String = self.command(
            to,
            &[
                "CLUSTER",
                "SETSLOT",
                &slot,
                "IMPORTING",
                &self.node_id(from),
            ],
        );
        let _: String = self.command(
            from,
            &["CLUSTER", "SETSLOT", &slot, "MIGRATING", &self.node_id(to)],
        );
    }

    /// The keys of `slot` moved from `from` to `to` (`MIGRATE`): commands on them are
    /// answered ASK by `from` and served by `to` after `ASKING`.
    pub fn migrate_slot_keys(&self, slot: u16, from: u16, to: u16) {
        let slot = slot.to_string();
        loop {
            let keys: Vec<String> = self.command(from, &["CLUSTER", "GETKEYSINSLOT", &slot, "100"]);
            if keys.is_empty() {
                return;
            }
            let to = to.to_string();
            let mut args = vec!["MIGRATE", "127.0.0.1", &to, "", "0", "5000", "KEYS"];
            args.extend(keys.iter().map(String::as_str));
            let _: String = self.command(from, &args);
        }
    }

    /// The last half of the move: `slot` given to `to` on `to`, on `from` and on the other
    /// masters (`from` then answers MOVED for it); returns once every running node says `to`
    /// owns it.
    pub fn finish_slot_move(&self, slot: u16, from: u16, to: u16) {
        let owner = self.node_id(to);
        let slot_arg = slot.to_string();
        let others = self
            .masters()
            .into_iter()
            .filter(|port| ![from, to].contains(port));
        for port in [to, from].into_iter().chain(others) {
            let _: String = self.command(port, &["CLUSTER", "SETSLOT", &slot_arg, "NODE", &owner]);
        }
        wait_until(
            &format!("every node to see slot {slot} on node {to}"),
            || {
                Ok(self
                    .nodes
                    .iter()
                    .filter(|node| node.child.is_some())
                    .all(|node| {
                        query::<String>(node.port, &["CLUSTER", "NODES"])
                            .is_ok_and(|nodes| slot_owner(&nodes, slot).as_deref() == Some(&*owner))
                    }))
            },
        )
        .unwrap_or_else(|err| panic!("{err}"));
    }

    /// A manual failover (`CLUSTER FAILOVER`, no data lost): the replica at `replica` is
    /// promoted and its master becomes its replica; returns once both say so and every
    /// running node says `cluster_state:ok`.
    pub fn promote(&self, replica: u16) {
        let master: String = self.command(replica, &["INFO", "replication"]);
        let master = master
            .lines()
            .find_map(|line| line.strip_prefix("master_port:"))
            .and_then(|port| port.trim().parse::<u16>().ok())
            .unwrap_or_else(|| panic!("node {replica} is not a replica"));
        let _: String = self.command(replica, &["CLUSTER", "FAILOVER"]);
        let mut asked = Instant::now();
        wait_until(&format!("node {replica} promoted over {master}"), || {
            let masters = self.masters();
            // A manual failover that does not finish within Redis's CLUSTER_MF_TIMEOUT (5 s:
            // the master's pause and the offset handshake, slow on a loaded machine) is
            // dropped without a word, and the replica stays one: ask again, as an operator
            // would. Asking resets a failover in flight, so only once the last one is over.
            if !masters.contains(&replica) && asked.elapsed() > MANUAL_FAILOVER_TIMEOUT {
                let _still_a_replica: redis::RedisResult<String> =
                    query(replica, &["CLUSTER", "FAILOVER"]);
                asked = Instant::now();
            }
            Ok(masters.contains(&replica)
                && self.replicas().contains(&master)
                && self
                    .nodes
                    .iter()
                    .filter(|node| node.child.is_some())
                    .all(|node| {
                        query::<String>(node.port, &["CLUSTER", "INFO"])
                            .is_ok_and(|info| info.contains("cluster_state:ok"))
                    }))
        })
        .unwrap_or_else(|err| panic!("{err}"));
    }

    /// Kills the node at `port` (as a crash would) and starts a fresh, empty one on the same
    /// ports and directory, which rejoins the cluster from its `nodes-<port>.conf`; returns
    /// once it answers. Meant for a replica: a master restarted empty before its replica
    /// took over would come back owning its slots with none of their keys.
    pub fn restart(&mut self, port: u16) {
        let bus_port: Vec<String> = self.command(port, &["CONFIG", "GET", "cluster-port"]);
        let bus_port: u16 = bus_port
            .get(1)
            .and_then(|value| value.parse().ok())
            .unwrap_or_else(|| panic!("no cluster-port on node {port}: {bus_port:?}"));
        let dir = self.dir.clone();
        let node = self.node_mut(port);
        node.stop();
        node.child = Some(launch(port, bus_port, &dir));
        node.wait_answers().unwrap_or_else(|err| panic!("{err}"));
    }

    fn node_mut(&mut self, port: u16) -> &mut Node {
        self.nodes
            .iter_mut()
            .find(|node| node.port == port)
            .expect("a node of this cluster")
    }

    /// Whether the node at `port` answers a command now (within the query's timeouts).
    pub fn answers(&self, port: u16) -> bool {
        query::<String>(port, &["PING"]).is_ok()
    }

    /// Waits until the node at `port` is a replica whose link to its master is up (its
    /// initial sync done) and it sees the cluster ok with all six nodes.
    pub fn wait_for_replica_in_sync(&self, port: u16) {
        wait_until(&format!("node {port} a replica in sync"), || {
            Ok(self.replica_synced(port)
                && query::<String>(port, &["CLUSTER", "INFO"]).is_ok_and(|info| {
                    info.contains("cluster_state:ok") && info.contains("cluster_known_nodes:6")
                }))
        })
        .unwrap_or_else(|err| panic!("{err}"));
    }
}

/// The id of the node owning `slot` in `CLUSTER NODES` output (`<id> <addr> ... <slots>`,
/// slots from the ninth field: `n`, `a-b`, or a `[n->-id]` migration mark, skipped).
fn slot_owner(nodes: &str, slot: u16) -> Option<String> {
    nodes.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        let owns = fields.iter().skip(8).any(|range| {
            let (low, high) = range.split_once('-').unwrap_or((range, range));
            matches!(
                (low.parse::<u16>(), high.parse::<u16>()),
                (Ok(low), Ok(high)) if (low..=high).contains(&slot)
            )
        });
        owns.then(|| fields[0].to_owned())
    })
}

/// The cluster every conformance test's `cluster` variant of one test run shares (each on
/// rooms of its own). Under nextest every test is a process of its own, a child of the runner:
/// the first one starts the cluster (under a lock file, named after the run), the others
/// find its URL, and a watchdog stops the nodes once the runner is gone. Under `cargo test`,
/// the test process is the run.
pub struct SharedCluster {
    url: String,
}

impl SharedCluster {
    pub fn get() -> &'static Self {
        static SHARED: OnceLock<SharedCluster> = OnceLock::new();
        SHARED.get_or_init(Self::attach)
    }

    /// `REDIS_URL` for the app: the seeds.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn attach() -> Self {
        let (run, watched) = match std::env::var("NEXTEST_RUN_ID") {
            Ok(run) => (run, std::os::unix::process::parent_id()),
            Err(_) => (std::process::id().to_string(), std::process::id()),
        };
        let dir = std::env::temp_dir().join(format!("chat-server-shared-cluster-{run}"));
        std::fs::create_dir_all(&dir).expect("creating the shared cluster's directory");
        let lock = std::fs::File::create(dir.join("lock")).expect("creating the lock file");
        // Held until this returns: one process starts the cluster, the others wait for it.
        lock.lock().expect("locking the shared cluster");
        let url_file = dir.join("url");
        if let Ok(url) = std::fs::read_to_string(&url_file) {
            return Self { url };
        }
        let cluster = RedisCluster::start();
        let pids: Vec<String> = cluster
            .nodes
            .iter()
            .filter_map(|node| node.child.as_ref().map(|child| child.id().to_string()))
            .collect();
        // Polls once a second for the end of the run, then stops the nodes and cleans up.
        #[expect(
            clippy::zombie_processes,
            reason = "the watchdog must outlive this process, whose exit hands it to init"
        )]
        let _watchdog = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "while kill -0 {watched} 2>/dev/null; do sleep 1; done; kill {}; rm -rf '{}' '{}'",
                pids.join(" "),
                cluster.dir.display(),
                dir.display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting the shared cluster's watchdog");
        let url = cluster.url();
        std::fs::write(&url_file, &url).expect("writing the shared cluster's URL");
        // The watchdog stops it: dropping it here would kill the nodes other tests use.
        std::mem::forget(cluster);
        Self { url }
    }
}

impl Node {
    /// Waits until the node answers as itself: its own process id, since another test's
    /// server may hold the port (ours then exits, having failed to bind it, but maybe not yet).
    fn wait_answers(&mut self) -> Result<(), String> {
        let port = self.port;
        wait_until(&format!("node {port} answers"), || {
            if self.exited() {
                return Err(format!("node {port} exited"));
            }
            match query::<String>(port, &["INFO", "server"]) {
                Ok(info) if info_process_id(&info) == self.pid() => Ok(true),
                Ok(_) => Err(format!("port {port} is another process's redis-server")),
                Err(_) => Ok(false),
            }
        })
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_none_or(|child| !matches!(child.try_wait(), Ok(None)))
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // An error here means it had already exited, which is what we want.
            let _already_gone = child.kill();
            let _reaped = child.wait();
        }
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.stop();
        }
        // Best effort: a leftover directory in the temp dir harms nothing.
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `count` distinct loopback ports nobody listens on right now; never 6379 (nor its bus port).
fn free_ports(count: usize) -> Vec<u16> {
    // Held together so the OS hands out distinct ones.
    let listeners: Vec<TcpListener> = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0"))
        .collect();
    let ports: Vec<u16> = listeners
        .iter()
        .map(|listener| listener.local_addr().expect("local address").port())
        .collect();
    assert!(
        ports.iter().all(|port| *port != 6379 && *port != 16379),
        "the OS picked a port of the shared Redis; refusing to touch it"
    );
    ports
}

fn launch(port: u16, bus_port: u16, dir: &std::path::Path) -> Child {
    Command::new("redis-server")
        .args(["--port", &port.to_string()])
        .args(["--cluster-port", &bus_port.to_string()])
        .args(["--bind", "127.0.0.1"])
        .args(["--cluster-enabled", "yes"])
        .args(["--cluster-config-file", &format!("nodes-{port}.conf")])
        .args(["--cluster-node-timeout", NODE_TIMEOUT_MS])
        .args(["--save", "", "--appendonly", "no"])
        // A replica's first sync starts at once rather than after 5 s (the default delay,
        // which waits for more replicas to share one snapshot; each master has one).
        .args(["--repl-diskless-sync-delay", "0"])
        .arg("--dir")
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("cannot run redis-server (is it installed?)")
}

/// Polls `ready` until it holds; an error when it fails or after [`STARTUP_TIMEOUT`].
fn wait_until(what: &str, mut ready: impl FnMut() -> Result<bool, String>) -> Result<(), String> {
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    while !ready()? {
        if Instant::now() >= deadline {
            return Err(format!("timed out waiting until {what}"));
        }
        std::thread::sleep(POLL_INTERVAL);
    }
    Ok(())
}

fn query<T: redis::FromRedisValue>(port: u16, args: &[&str]) -> redis::RedisResult<T> {
    query_after(port, &[], args)
}

/// Runs `first` (unless empty) then `args` on one connection to the node at `port`.
fn query_after<T: redis::FromRedisValue>(
    port: u16,
    first: &[&str],
    args: &[&str],
) -> redis::RedisResult<T> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/"))?;
    let mut connection = client.get_connection_with_timeout(Duration::from_millis(500))?;
    connection.set_read_timeout(Some(Duration::from_secs(2)))?;
    connection.set_write_timeout(Some(Duration::from_secs(2)))?;
    let command = |args: &[&str]| {
        let mut command = redis::cmd(args[0]);
        for arg in &args[1..] {
            command.arg(*arg);
        }
        command
    };
    if !first.is_empty() {
        command(first).exec(&mut connection)?;
    }
    command(args).query(&mut connection)
}
